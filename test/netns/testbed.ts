/**
 * A reusable network test bed of Linux network namespaces: n "host" namespaces and m "client"
 * namespaces, each with one veth (eth0) plugged into a bridge (forward_delay 0) that lives in a
 * namespace of its own. Nothing is created in the caller's namespace, so test traffic stays
 * strictly between these namespaces: no route, link or address of the machine is touched.
 *
 * Addresses: a /24 test subnet (default 10.231.17.0/24); hosts get .1.., clients .101..,
 * virtual IPs are picked from .200.. (vip(i)). MACs are fixed and readable: hosts
 * 02:53:54:00:00:NN, clients 02:53:54:00:01:NN.
 *
 * Every namespace name starts with a unique prefix (stv-<pid>-<random> by default). destroy()
 * kills every process the bed started and deletes every namespace (which takes the veths and the
 * bridge with them); it also runs, synchronously, from a process 'exit' handler and on SIGINT,
 * SIGTERM and SIGHUP, so a failing or interrupted test leaves nothing behind. Beds left by a
 * process that died by SIGKILL are swept by the next createTestbed (their pid is in the name).
 *
 * Needs root (CAP_SYS_ADMIN for namespaces, CAP_NET_ADMIN/RAW), iproute2, iputils-ping,
 * iputils-arping and tcpdump: netnsUnavailable() says what is missing, so that a test can FAIL
 * with the reason instead of skipping.
 */
import { execFile, execFileSync, spawn, type ChildProcess } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { sleep } from '../lib/wait.js'

export interface TestbedInit {
  /** Host namespaces (h1..hn). */
  hosts: number
  /** Client namespaces (c1..cm). @default 1 */
  clients?: number
  /** Prefix of every namespace name; must be unique on the machine. @default stv-<pid>-<random> */
  prefix?: string
  /** First three octets of the /24 test subnet (10.x or 192.168.x). @default '10.231.17' */
  subnet?: string
  /** sysctl settings (net.ipv4...) applied in every client namespace, e.g. { 'net.ipv4.conf.all.arp_accept': '1' }. */
  clientSysctls?: Record<string, string>
}

export interface TestNode {
  /** Short name: h1.., c1.. */
  name: string
  /** Network namespace name. */
  netns: string
  /** Address on eth0. */
  ip: string
  mac: string
  iface: 'eth0'
  /** The veth end on the bridge, in the bridge namespace. */
  port: string
}

export interface ExecResult { code: number | null, stdout: string, stderr: string }

export interface ShapeOptions {
  delayMs?: number
  jitterMs?: number
  lossPct?: number
  rateMbit?: number
}

/** An echo reply or request seen on the client's eth0. */
export interface IcmpRecord {
  /** Kernel timestamp, ms since the epoch (fractional). */
  t: number
  seq: number
  /** Replies: the responder's MAC. Requests: the MAC the client sent to (its neighbour entry). */
  mac: string
  kind: 'request' | 'reply'
}

export interface Pinger {
  readonly client: TestNode
  readonly target: string
  readonly intervalMs: number
  readonly replies: IcmpRecord[]
  readonly requests: IcmpRecord[]
  /**
   * Largest time between consecutive replies that fall in [fromMs, toMs] (the reply just before
   * fromMs counts as the start). Includes the pinger's own scheduling jitter.
   */
  maxGapMs (fromMs: number, toMs: number): number
  /**
   * The service interruption the client saw among the requests sent in [fromMs, toMs]: for each
   * run of requests that got no reply, the time from the first of them to the next reply; the
   * largest such time, and how many requests went unanswered. 0 when every request was answered.
   */
  outage (fromMs: number, toMs: number): { outageMs: number, lost: number }
  /** First reply at or after tMs (optionally from one MAC). */
  firstReplyAfter (tMs: number, mac?: string): IcmpRecord | undefined
  lastReply (): IcmpRecord | undefined
  /** Resolves once a reply (from `mac`, if given) arrives after `afterMs`; rejects after timeoutMs. */
  waitReply (afterMs: number, timeoutMs: number, mac?: string): Promise<IcmpRecord>
  stop (): Promise<void>
}

/** An ARP packet seen on the bridge. */
export interface ArpRecord {
  t: number
  srcMac: string
  op: 'request' | 'reply'
  /** Request: "who-has X"; reply: "X is-at". */
  targetIp: string
  /** Request: "tell Y"; for a gratuitous ARP, Y = X. Reply: X. */
  senderIp: string
  /** Gratuitous: a request whose sender and target are the same address, or an unsolicited reply broadcast. */
  gratuitous: boolean
}

export interface Capture {
  readonly records: ArpRecord[]
  /** Gratuitous ARPs for `ip` from `mac` at or after `fromMs`. */
  gratuitous (ip: string, mac: string, fromMs?: number): ArpRecord[]
  stop (): Promise<void>
}

export interface Testbed {
  readonly prefix: string
  readonly subnet: string
  readonly prefixLength: 24
  /** Namespace holding the bridge. */
  readonly bridgeNetns: string
  readonly bridge: 'br0'
  readonly hosts: TestNode[]
  readonly clients: TestNode[]
  /** The i-th free address for virtual IPs (.200 + i). */
  vip (i?: number): string
  /** Runs a command inside a namespace (`ip netns exec`). Never throws for a non-zero exit. */
  exec (netns: string, argv: string[], opts?: { timeoutMs?: number }): Promise<ExecResult>
  /** Like exec, but rejects with the stderr on a non-zero exit. */
  run (netns: string, argv: string[], opts?: { timeoutMs?: number }): Promise<string>
  /** Starts a long-running command inside a namespace; it is killed by destroy(). */
  spawnIn (netns: string, argv: string[]): ChildProcess
  /** Pings `target` from a client every intervalMs; records replies with the responder's MAC. */
  startPinger (client: TestNode, target: string, intervalMs: number): Promise<Pinger>
  /** tcpdump of ARP on the bridge. */
  startArpCapture (): Promise<Capture>
  /** The client's neighbour entry for `ip`. */
  neighbour (client: TestNode, ip: string): Promise<{ mac: string | null, state: string | null }>
  /** Unplugs a node from the bridge (its bridge port goes down: a cable cut). */
  linkDown (node: TestNode): Promise<void>
  linkUp (node: TestNode): Promise<void>
  /**
   * Shapes the node's eth0 (egress): a rate alone uses tbf; delay, jitter or loss need netem
   * (sch_netem), which some kernels lack: then this rejects and says so.
   */
  shape (node: TestNode, opts: ShapeOptions): Promise<void>
  unshape (node: TestNode): Promise<void>
  destroy (): Promise<void>
}

const BASE = 'stv'
const live = new Set<TestbedImpl>()
let handlersInstalled = false

function installExitHandlers (): void {
  if (handlersInstalled) return
  handlersInstalled = true
  process.on('exit', () => { for (const b of live) b.destroySync() })
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    const handler = (): void => {
      for (const b of live) b.destroySync()
      process.removeListener(sig, handler)
      process.kill(process.pid, sig)
    }
    process.on(sig, handler)
  }
}

function execAsync (argv: string[], timeoutMs = 10_000): Promise<ExecResult> {
  const [cmd, ...args] = argv
  return new Promise(resolve => {
    if (cmd === undefined) { resolve({ code: -1, stdout: '', stderr: 'empty command' }); return }
    execFile(cmd, args, { timeout: timeoutMs, killSignal: 'SIGKILL', maxBuffer: 16 * 1024 * 1024 }, (err, stdout, stderr) => {
      const code = err === null ? 0 : typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : null
      resolve({ code, stdout: String(stdout), stderr: String(stderr) || (err !== null && code === null ? err.message : '') })
    })
  })
}

async function must (argv: string[], timeoutMs?: number): Promise<string> {
  const r = await execAsync(argv, timeoutMs)
  if (r.code !== 0) throw new Error(`${argv.join(' ')} failed (exit ${String(r.code)}): ${r.stderr.trim()}`)
  return r.stdout
}

/**
 * Why network-namespace tests cannot run here, or null if they can. Tests FAIL with this reason;
 * they never skip silently.
 */
export async function netnsUnavailable (): Promise<string | null> {
  if (process.platform !== 'linux') return `network namespace tests need Linux (this is ${process.platform})`
  if (typeof process.getuid === 'function' && process.getuid() !== 0) return 'network namespace tests need root (CAP_SYS_ADMIN, CAP_NET_ADMIN, CAP_NET_RAW): run them as root'
  for (const [tool, pkg] of [['ip', 'iproute2'], ['tc', 'iproute2'], ['arping', 'iputils-arping'], ['ping', 'iputils-ping'], ['tcpdump', 'tcpdump']] as const) {
    const r = await execAsync(['sh', '-c', `command -v ${tool}`])
    if (r.code !== 0) return `${tool} is missing: install ${pkg} (test/setup.sh does)`
  }
  const probe = `${BASE}-probe-${process.pid}-${randomBytes(3).toString('hex')}`
  const r = await execAsync(['ip', 'netns', 'add', probe])
  if (r.code !== 0) return `cannot create a network namespace: ${r.stderr.trim()}`
  await execAsync(['ip', 'netns', 'del', probe])
  return null
}

function pidAlive (pid: number): boolean {
  try { process.kill(pid, 0); return true } catch (err) { return (err as NodeJS.ErrnoException).code === 'EPERM' }
}

/** Deletes namespaces of beds whose creating process is gone (it died by SIGKILL). */
export async function sweepStaleTestbeds (): Promise<string[]> {
  const out = await execAsync(['ip', 'netns', 'list'])
  const swept: string[] = []
  for (const line of out.stdout.split('\n')) {
    const name = line.split(' ')[0] ?? ''
    const m = new RegExp(`^${BASE}-(?:probe-)?(\\d+)-`).exec(name)
    if (m === null) continue
    if (pidAlive(Number(m[1]))) continue
    await execAsync(['ip', 'netns', 'del', name])
    swept.push(name)
  }
  return swept
}

function mac (kind: 0 | 1, i: number): string {
  return `02:53:54:00:0${kind}:${i.toString(16).padStart(2, '0')}`
}

class TestbedImpl implements Testbed {
  readonly prefixLength = 24 as const
  readonly bridge = 'br0' as const
  readonly bridgeNetns: string
  readonly hosts: TestNode[] = []
  readonly clients: TestNode[] = []
  private readonly children = new Set<ChildProcess>()
  private readonly namespaces: string[] = []
  private destroyed = false

  constructor (readonly prefix: string, readonly subnet: string) {
    this.bridgeNetns = `${prefix}-sw`
  }

  vip (i = 0): string { return `${this.subnet}.${200 + i}` }

  async setup (init: TestbedInit): Promise<void> {
    const sw = this.bridgeNetns
    await this.addNetns(sw)
    await must(['ip', '-n', sw, 'link', 'set', 'lo', 'up'])
    await must(['ip', '-n', sw, 'link', 'add', 'br0', 'type', 'bridge', 'forward_delay', '0', 'stp_state', '0'])
    await must(['ip', '-n', sw, 'link', 'set', 'br0', 'up'])
    for (let i = 1; i <= init.hosts; i++) this.hosts.push(await this.addNode(`h${i}`, `${this.subnet}.${i}`, mac(0, i)))
    for (let i = 1; i <= (init.clients ?? 1); i++) {
      const c = await this.addNode(`c${i}`, `${this.subnet}.${100 + i}`, mac(1, i))
      for (const [k, v] of Object.entries(init.clientSysctls ?? {})) await must(['ip', 'netns', 'exec', c.netns, 'sysctl', '-q', '-w', `${k}=${v}`])
      this.clients.push(c)
    }
  }

  private async addNetns (name: string): Promise<void> {
    // Record it before creating it, so a half-made bed is still removed.
    this.namespaces.push(name)
    await must(['ip', 'netns', 'add', name])
  }

  private async addNode (name: string, ip: string, addr: string): Promise<TestNode> {
    const netns = `${this.prefix}-${name}`
    const port = `v${name}`
    await this.addNetns(netns)
    const sw = this.bridgeNetns
    await must(['ip', '-n', sw, 'link', 'add', port, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', netns])
    await must(['ip', '-n', sw, 'link', 'set', port, 'master', 'br0', 'up'])
    await must(['ip', '-n', netns, 'link', 'set', 'lo', 'up'])
    await must(['ip', '-n', netns, 'link', 'set', 'eth0', 'address', addr, 'up'])
    await must(['ip', '-n', netns, 'addr', 'add', `${ip}/24`, 'dev', 'eth0'])
    return { name, netns, ip, mac: addr, iface: 'eth0', port }
  }

  exec (netns: string, argv: string[], opts: { timeoutMs?: number } = {}): Promise<ExecResult> {
    return execAsync(['ip', 'netns', 'exec', netns, ...argv], opts.timeoutMs)
  }

  async run (netns: string, argv: string[], opts: { timeoutMs?: number } = {}): Promise<string> {
    return await must(['ip', 'netns', 'exec', netns, ...argv], opts.timeoutMs)
  }

  spawnIn (netns: string, argv: string[]): ChildProcess {
    if (this.destroyed) throw new Error('test bed destroyed')
    const child = spawn('ip', ['netns', 'exec', netns, ...argv], { stdio: ['ignore', 'pipe', 'pipe'] })
    this.children.add(child)
    child.once('exit', () => this.children.delete(child))
    child.once('error', () => this.children.delete(child))
    return child
  }

  /** Starts tcpdump and waits until it is listening. */
  private async tcpdump (netns: string, iface: string, filter: string[], onLine: (line: string) => void): Promise<ChildProcess> {
    const child = this.spawnIn(netns, ['tcpdump', '-i', iface, '-e', '-n', '-tt', '-l', '--immediate-mode', '-s', '128', ...filter])
    let buf = ''
    child.stdout?.on('data', (d: Buffer) => {
      buf += d.toString()
      let nl: number
      while ((nl = buf.indexOf('\n')) >= 0) { onLine(buf.slice(0, nl)); buf = buf.slice(nl + 1) }
    })
    await new Promise<void>((resolve, reject) => {
      let err = ''
      const timer = setTimeout(() => reject(new Error(`tcpdump in ${netns} did not start: ${err}`)), 10_000)
      child.stderr?.on('data', (d: Buffer) => {
        err += d.toString()
        if (err.includes('listening on')) { clearTimeout(timer); resolve() }
      })
      child.once('exit', code => { clearTimeout(timer); reject(new Error(`tcpdump in ${netns} exited (${String(code)}): ${err}`)) })
    })
    return child
  }

  async startPinger (client: TestNode, target: string, intervalMs: number): Promise<Pinger> {
    const replies: IcmpRecord[] = []
    const requests: IcmpRecord[] = []
    const waiters = new Set<(r: IcmpRecord) => void>()
    // 1795311779.815380 02:53:54:00:00:01 > 02:53:54:00:01:01, ethertype IPv4 (0x0800), length 98: 10.231.17.200 > 10.231.17.101: ICMP echo reply, id 7, seq 5, length 64
    const re = /^(\d+\.\d+) ([0-9a-f:]{17}) > ([0-9a-f:]{17}), .*?: (\S+) > (\S+): ICMP echo (request|reply), id \d+, seq (\d+)/
    const cap = await this.tcpdump(client.netns, 'eth0', ['icmp', 'and', 'host', target], line => {
      const m = re.exec(line)
      if (m === null) return
      const kind = m[6] as 'request' | 'reply'
      const rec: IcmpRecord = { t: Number(m[1]) * 1000, seq: Number(m[7]), mac: kind === 'reply' ? m[2] as string : m[3] as string, kind }
      // Sequence numbers are 16 bits: unwrap them so that long runs stay matched.
      const list = kind === 'reply' ? replies : requests
      const prev = list.at(-1)
      if (prev !== undefined) {
        let seq = rec.seq
        while (seq < prev.seq - 32768) seq += 65536
        rec.seq = seq
      }
      if (kind === 'reply') { replies.push(rec); for (const w of waiters) w(rec) } else requests.push(rec)
    })
    const ping = this.spawnIn(client.netns, ['ping', '-n', '-q', '-i', (intervalMs / 1000).toFixed(3), '-W', '1', target])
    ping.stdout?.resume()
    const stopOne = async (p: ChildProcess): Promise<void> => {
      if (p.exitCode !== null || p.signalCode !== null) return
      const done = new Promise<void>(resolve => p.once('exit', () => resolve()))
      p.kill('SIGINT')
      const t = setTimeout(() => p.kill('SIGKILL'), 2000)
      await done
      clearTimeout(t)
    }
    const pinger: Pinger = {
      client,
      target,
      intervalMs,
      replies,
      requests,
      maxGapMs (fromMs, toMs) {
        let prev: number | undefined
        let max = 0
        for (const r of replies) {
          if (r.t < fromMs) { prev = r.t; continue }
          if (r.t > toMs) break
          if (prev !== undefined) max = Math.max(max, r.t - prev)
          prev = r.t
        }
        if (prev !== undefined && prev < toMs) max = Math.max(max, toMs - prev)
        return max
      },
      outage (fromMs, toMs) {
        const answered = new Set(replies.map(r => r.seq))
        let outageMs = 0
        let lost = 0
        let runStart: number | null = null
        for (const q of requests) {
          if (q.t < fromMs || q.t > toMs) continue
          if (answered.has(q.seq)) { runStart = null; continue }
          lost++
          if (runStart !== null) continue
          runStart = q.t
          const next = replies.find(r => r.t > q.t)
          outageMs = Math.max(outageMs, (next?.t ?? toMs) - q.t)
        }
        return { outageMs, lost }
      },
      firstReplyAfter (tMs, m) { return replies.find(r => r.t >= tMs && (m === undefined || r.mac === m)) },
      lastReply () { return replies.at(-1) },
      async waitReply (afterMs, timeoutMs, m) {
        const found = replies.find(r => r.t > afterMs && (m === undefined || r.mac === m))
        if (found !== undefined) return found
        return await new Promise<IcmpRecord>((resolve, reject) => {
          const timer = setTimeout(() => { waiters.delete(w); reject(new Error(`no echo reply from ${target}${m !== undefined ? ` via ${m}` : ''} within ${timeoutMs} ms`)) }, timeoutMs)
          const w = (r: IcmpRecord): void => {
            if (r.t > afterMs && (m === undefined || r.mac === m)) { clearTimeout(timer); waiters.delete(w); resolve(r) }
          }
          waiters.add(w)
        })
      },
      async stop () {
        await stopOne(ping)
        await sleep(50) // let tcpdump print the last replies
        await stopOne(cap)
      }
    }
    return pinger
  }

  async startArpCapture (): Promise<Capture> {
    const records: ArpRecord[] = []
    // 1795311779.815380 02:53:54:00:00:01 > ff:ff:ff:ff:ff:ff, ethertype ARP (0x0806), length 42: Request who-has 10.231.17.200 (ff:ff:ff:ff:ff:ff) tell 10.231.17.200, length 28
    // 1795311779.815380 02:53:54:00:00:01 > ff:ff:ff:ff:ff:ff, ethertype ARP (0x0806), length 42: Reply 10.231.17.200 is-at 02:53:54:00:00:01, length 28
    const req = /^(\d+\.\d+) ([0-9a-f:]{17}) > ([0-9a-f:]{17}), .*?: Request who-has (\S+)(?: \([^)]*\))? tell (\S+),/
    const rep = /^(\d+\.\d+) ([0-9a-f:]{17}) > ([0-9a-f:]{17}), .*?: Reply (\S+) is-at ([0-9a-f:]{17}),/
    const child = await this.tcpdump(this.bridgeNetns, 'br0', ['arp'], line => {
      let m = req.exec(line)
      if (m !== null) {
        records.push({ t: Number(m[1]) * 1000, srcMac: m[2] as string, op: 'request', targetIp: m[4] as string, senderIp: m[5] as string, gratuitous: m[4] === m[5] })
        return
      }
      m = rep.exec(line)
      if (m !== null) {
        records.push({ t: Number(m[1]) * 1000, srcMac: m[2] as string, op: 'reply', targetIp: m[4] as string, senderIp: m[4] as string, gratuitous: m[3] === 'ff:ff:ff:ff:ff:ff' })
      }
    })
    return {
      records,
      gratuitous (ip, m, fromMs = 0) { return records.filter(r => r.gratuitous && r.targetIp === ip && r.srcMac === m && r.t >= fromMs) },
      async stop () {
        if (child.exitCode !== null || child.signalCode !== null) return
        await sleep(50)
        const done = new Promise<void>(resolve => child.once('exit', () => resolve()))
        child.kill('SIGINT')
        const t = setTimeout(() => child.kill('SIGKILL'), 2000)
        await done
        clearTimeout(t)
      }
    }
  }

  async neighbour (client: TestNode, ip: string): Promise<{ mac: string | null, state: string | null }> {
    const out = await must(['ip', '-n', client.netns, '-j', 'neigh', 'show', 'to', ip, 'dev', 'eth0'])
    const rows = JSON.parse(out === '' ? '[]' : out) as Array<{ lladdr?: string, state?: string[] }>
    const row = rows[0]
    return { mac: row?.lladdr ?? null, state: row?.state?.join(',') ?? null }
  }

  async linkDown (node: TestNode): Promise<void> { await must(['ip', '-n', this.bridgeNetns, 'link', 'set', node.port, 'down']) }
  async linkUp (node: TestNode): Promise<void> { await must(['ip', '-n', this.bridgeNetns, 'link', 'set', node.port, 'up']) }

  async shape (node: TestNode, o: ShapeOptions): Promise<void> {
    const base = ['tc', 'qdisc', 'replace', 'dev', 'eth0', 'root']
    if (o.delayMs === undefined && o.jitterMs === undefined && o.lossPct === undefined) {
      if (o.rateMbit === undefined) return
      // Token bucket: one full-size frame of burst, at most 200 ms of queue.
      await this.run(node.netns, [...base, 'tbf', 'rate', `${o.rateMbit}mbit`, 'burst', '1600', 'latency', '200ms'])
      return
    }
    const args = [...base, 'netem']
    if (o.delayMs !== undefined || o.jitterMs !== undefined) args.push('delay', `${o.delayMs ?? 0}ms`, ...(o.jitterMs !== undefined ? [`${o.jitterMs}ms`] : []))
    if (o.lossPct !== undefined) args.push('loss', `${o.lossPct}%`)
    if (o.rateMbit !== undefined) args.push('rate', `${o.rateMbit}mbit`)
    const r = await this.exec(node.netns, args)
    if (r.code === 0) return
    if (/qdisc kind is unknown/i.test(r.stderr)) throw new Error('tc netem is not available in this kernel (sch_netem): delay, jitter and loss cannot be emulated here; rate alone works (tbf)')
    throw new Error(`${args.join(' ')} failed: ${r.stderr.trim()}`)
  }

  async unshape (node: TestNode): Promise<void> {
    await this.exec(node.netns, ['tc', 'qdisc', 'del', 'dev', 'eth0', 'root'])
  }

  async destroy (): Promise<void> {
    if (this.destroyed) return
    this.destroyed = true
    await Promise.all([...this.children].map(async c => {
      if (c.exitCode !== null || c.signalCode !== null) return
      const done = new Promise<void>(resolve => c.once('exit', () => resolve()))
      c.kill('SIGKILL')
      await Promise.race([done, new Promise(resolve => setTimeout(resolve, 2000))])
    }))
    this.children.clear()
    for (const ns of [...this.namespaces].reverse()) await execAsync(['ip', 'netns', 'del', ns])
    this.namespaces.length = 0
    live.delete(this)
  }

  /** Synchronous teardown for exit handlers. */
  destroySync (): void {
    if (this.destroyed) return
    this.destroyed = true
    for (const c of this.children) { try { c.kill('SIGKILL') } catch {} }
    this.children.clear()
    for (const ns of [...this.namespaces].reverse()) {
      try { execFileSync('ip', ['netns', 'del', ns], { stdio: 'ignore', timeout: 5000 }) } catch {}
    }
    this.namespaces.length = 0
    live.delete(this)
  }
}

/** Creates a bed; on any failure it removes what it made and rethrows. */
export async function createTestbed (init: TestbedInit): Promise<Testbed> {
  const subnet = init.subnet ?? '10.231.17'
  if (!/^(10\.\d{1,3}\.\d{1,3}|192\.168\.\d{1,3})$/.test(subnet)) throw new Error(`subnet must be 10.x.y or 192.168.x (got ${subnet})`)
  if (init.hosts < 1 || init.hosts > 99 || (init.clients ?? 1) > 99) throw new Error('1..99 hosts and up to 99 clients')
  const prefix = init.prefix ?? `${BASE}-${process.pid}-${randomBytes(2).toString('hex')}`
  if (!/^[A-Za-z0-9-]{1,40}$/.test(prefix)) throw new Error(`prefix must be 1-40 letters, digits or dashes (got ${prefix})`)
  await sweepStaleTestbeds()
  const existing = (await execAsync(['ip', 'netns', 'list'])).stdout.split('\n').filter(l => l.startsWith(`${prefix}-`))
  if (existing.length > 0) throw new Error(`namespaces with prefix ${prefix} exist already: ${existing.join(', ')}`)
  installExitHandlers()
  const bed = new TestbedImpl(prefix, subnet)
  live.add(bed)
  try {
    await bed.setup(init)
  } catch (err) {
    await bed.destroy()
    throw err
  }
  return bed
}

/** Namespaces whose name starts with `prefix` (for tests that check the cleanup). */
export async function namespacesWithPrefix (prefix: string): Promise<string[]> {
  const out = await execAsync(['ip', 'netns', 'list'])
  return out.stdout.split('\n').map(l => l.split(' ')[0] ?? '').filter(n => n.startsWith(`${prefix}-`))
}
