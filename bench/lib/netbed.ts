/**
 * Two emulated hypervisor hosts for migration measurements: a source and a destination network
 * namespace on one bridge (the namespace test bed of test/netns/testbed.ts), the link shaped with
 * a tc token bucket (tbf) on both hosts' eth0, and a QEMU launcher per host that runs QEMU inside that
 * host's namespace (a small wrapper script given to the QEMU driver as its binary:
 * `exec ip netns exec <ns> qemu-system-x86_64 "$@"`; exec keeps the pid, so the driver's
 * process handling, die-with-agent included, is unchanged).
 *
 * Also: a TCP goodput probe across the link, tc's byte counter of a host's egress, which
 * counts every byte put on the link (headers included), and per-connection counters
 * (countTcpTo: iptables rules on one TCP port, read on both ends) that tell one stream's bytes
 * from the rest.
 */
import { execFile } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import { createTestbed, netnsUnavailable, type Testbed, type TestNode } from '../../test/netns/testbed.js'

/**
 * One direction of the TCP connections to a port (client to server), counted by iptables rules
 * without a target (they only count): in the receiver's INPUT chain, what came over the link,
 * and in the sender's OUTPUT chain, what the sender handed to its shaper (more than arrived when
 * the shaper dropped packets and TCP sent them again).
 *
 * iptables counts IP packets as the stack sees them: a TSO/GSO packet of up to 64 KiB is one
 * packet with one IP and TCP header. Every TCP packet here carries 52 bytes of headers (IPv4 20,
 * TCP 20, timestamps option 12), so the TCP payload is the IP bytes less 52 per packet (checked
 * against a node socket that sent exactly 50,000,000 bytes through the shaped link: 8 bytes off,
 * the handshake's longer options). The wire (what tc counts) splits the payload into segments of
 * at most one MSS (MTU - 52) and adds 66 bytes to each (Ethernet 14 + 52): wireBytes is that
 * estimate, close for a bulk stream of full segments (that test: 52,279,005 estimated, tc
 * 52,279,720 with the handshake and the pure ACKs).
 */
export interface TcpCount {
  /** TCP payload that arrived at the receiver, bytes (retransmissions that arrived twice count twice). */
  payloadBytes: number
  /** IP bytes that arrived (payload and one header per packet as the stack saw it). */
  ipBytes: number
  /** Packets that arrived, as iptables saw them (a GRO/GSO aggregate counts once). */
  packets: number
  /** Estimated bytes on the wire for that payload: full-MSS segments with Ethernet, IP and TCP headers. */
  wireBytes: number
  /** TCP payload the sender handed to its egress (retransmissions and shaper drops included). */
  sentPayloadBytes: number
}

export interface TcpCounter {
  readonly port: number
  read (): Promise<TcpCount>
  remove (): Promise<void>
}

export interface MigrationLink {
  readonly bed: Testbed
  readonly source: TestNode
  readonly destination: TestNode
  /** Shaped rate, bits/s. */
  readonly rateBitsPerS: number
  /** Path of an executable that runs QEMU inside `node`'s namespace with the given arguments. */
  qemuLauncher (node: TestNode): string
  /** Bytes sent by `node`'s eth0 so far (tc qdisc counter). */
  txBytes (node: TestNode): Promise<number>
  /** Starts counting the TCP bytes `from` sends to `to`'s `port` (see TcpCount). */
  countTcpTo (from: TestNode, to: TestNode, port: number): Promise<TcpCounter>
  /** Measures TCP goodput from source to destination for about `ms`, bytes/s. */
  probeGoodput (ms?: number): Promise<number>
  destroy (): Promise<void>
}

export { netnsUnavailable }

function sh (argv: string[], timeoutMs = 15_000): Promise<string> {
  const [cmd, ...args] = argv
  return new Promise((resolve, reject) => {
    execFile(cmd ?? 'false', args, { timeout: timeoutMs, killSignal: 'SIGKILL' }, (err, stdout, stderr) => {
      if (err !== null) reject(new Error(`${argv.join(' ')}: ${String(stderr).trim() || err.message}`))
      else resolve(String(stdout))
    })
  })
}

/** Receiver: accepts one connection, prints the bytes received at each 100 ms tick. */
const RECEIVER = `
const net = require('node:net')
const srv = net.createServer(s => {
  let n = 0
  s.on('data', d => { n += d.length })
  const t = setInterval(() => process.stdout.write(performance.now().toFixed(1) + ' ' + n + '\\n'), 100)
  s.on('close', () => { clearInterval(t); srv.close() })
  s.on('error', () => {})
})
srv.listen(Number(process.argv[2]), process.argv[1], () => process.stdout.write('listening\\n'))
`
/** Sender: writes as fast as the socket takes it for argv[3] ms. */
const SENDER = `
const net = require('node:net')
const buf = Buffer.alloc(1 << 20, 7)
const s = net.connect(Number(process.argv[2]), process.argv[1], () => {
  const end = Date.now() + Number(process.argv[3])
  const pump = () => { while (Date.now() < end) { if (!s.write(buf)) { s.once('drain', pump); return } } s.end() }
  pump()
})
s.on('error', e => { console.error(String(e)); process.exit(1) })
`

/** Headers of a TCP/IPv4 packet with the timestamps option, and the Ethernet header. */
const TCP_IP_HEADER = 52
const ETH_HEADER = 14

/** Packets and bytes of the rule counting TCP to `port` in `chain` (`iptables -L -v -x` rows). */
async function ruleCount (netns: string, chain: string, port: number): Promise<{ packets: number, bytes: number }> {
  const out = await sh(['ip', 'netns', 'exec', netns, 'iptables', '-w', '-L', chain, '-v', '-n', '-x'])
  for (const line of out.split('\n')) {
    if (!new RegExp(`\\bdpt:${port}\\b`).test(line) || !line.includes('starling-bench')) continue
    const [packets, bytes] = line.trim().split(/\s+/)
    return { packets: Number(packets), bytes: Number(bytes) }
  }
  throw new Error(`no counting rule for port ${port} in ${netns} ${chain}`)
}

async function interfaceMtu (netns: string): Promise<number> {
  const rows = JSON.parse(await sh(['ip', '-n', netns, '-j', 'link', 'show', 'eth0'])) as Array<{ mtu?: number }>
  return Number(rows[0]?.mtu ?? 1500)
}

export interface MigrationLinkInit {
  /** Link rate, Mbit/s. */
  rateMbit: number
  /** Longest a packet may wait in the shaper's queue, ms (tbf `latency`; sets the queue size). */
  queueMs: number
  /** First three octets of the test subnet. @default '10.231.42' */
  subnet?: string
  /** Directory for the QEMU launcher scripts. */
  tmpDir: string
}

export async function createMigrationLink (opts: MigrationLinkInit): Promise<MigrationLink> {
  const bed = await createTestbed({ hosts: 2, clients: 0, subnet: opts.subnet ?? '10.231.42' })
  try {
    const [source, destination] = bed.hosts
    if (source === undefined || destination === undefined) throw new Error('test bed without two hosts')
    for (const h of bed.hosts) {
      // A token bucket on each host's egress: the link's rate, a 256 KiB burst (about 2 ms at
      // 1 Gbit/s, above a 64 KiB GSO packet so that none is split) and a queue of queueMs.
      await bed.run(h.netns, ['tc', 'qdisc', 'replace', 'dev', 'eth0', 'root', 'tbf', 'rate', `${opts.rateMbit}mbit`, 'burst', '256kb', 'latency', `${opts.queueMs}ms`])
    }
    const launchers = new Map<string, string>()
    for (const h of bed.hosts) {
      const file = path.join(opts.tmpDir, `qemu-in-${h.name}.sh`)
      fs.writeFileSync(file, `#!/bin/sh\nexec ip netns exec ${h.netns} qemu-system-x86_64 "$@"\n`, { mode: 0o755 })
      launchers.set(h.name, file)
    }
    const link: MigrationLink = {
      bed,
      source,
      destination,
      rateBitsPerS: opts.rateMbit * 1e6,
      qemuLauncher (node) {
        const f = launchers.get(node.name)
        if (f === undefined) throw new Error(`no launcher for ${node.name}`)
        return f
      },
      async txBytes (node) {
        const out = await sh(['ip', 'netns', 'exec', node.netns, 'tc', '-s', '-j', 'qdisc', 'show', 'dev', 'eth0'])
        const rows = JSON.parse(out) as Array<{ root?: boolean, bytes?: number }>
        const root = rows.find(r => r.root === true) ?? rows[0]
        return Number(root?.bytes ?? NaN)
      },
      async countTcpTo (from, to, port) {
        const rule = (netns: string, op: '-A' | '-D', chain: string): string[] => ['ip', 'netns', 'exec', netns, 'iptables', '-w', op, chain, '-p', 'tcp', '--dport', String(port), '-m', 'comment', '--comment', 'starling-bench']
        const mss = (await interfaceMtu(from.netns)) - TCP_IP_HEADER
        await sh(rule(to.netns, '-A', 'INPUT'))
        try { await sh(rule(from.netns, '-A', 'OUTPUT')) } catch (err) { await sh(rule(to.netns, '-D', 'INPUT')).catch(() => {}); throw err }
        let removed = false
        return {
          port,
          async read () {
            const rx = await ruleCount(to.netns, 'INPUT', port)
            const tx = await ruleCount(from.netns, 'OUTPUT', port)
            const payload = Math.max(0, rx.bytes - TCP_IP_HEADER * rx.packets)
            return {
              payloadBytes: payload,
              ipBytes: rx.bytes,
              packets: rx.packets,
              wireBytes: payload + Math.ceil(payload / mss) * (TCP_IP_HEADER + ETH_HEADER),
              sentPayloadBytes: Math.max(0, tx.bytes - TCP_IP_HEADER * tx.packets)
            }
          },
          async remove () {
            if (removed) return
            removed = true
            await sh(rule(to.netns, '-D', 'INPUT')).catch(() => {})
            await sh(rule(from.netns, '-D', 'OUTPUT')).catch(() => {})
          }
        }
      },
      async probeGoodput (ms = 1500) {
        const port = 47000 + Math.floor(Math.random() * 1000)
        const rx = bed.spawnIn(destination.netns, ['node', '-e', RECEIVER, destination.ip, String(port)])
        const samples: Array<{ t: number, n: number }> = []
        let buf = ''
        const listening = new Promise<void>((resolve, reject) => {
          const timer = setTimeout(() => reject(new Error('goodput receiver did not start')), 10_000)
          rx.stdout?.on('data', (d: Buffer) => {
            buf += d.toString()
            let i: number
            while ((i = buf.indexOf('\n')) >= 0) {
              const line = buf.slice(0, i)
              buf = buf.slice(i + 1)
              if (line === 'listening') { clearTimeout(timer); resolve(); continue }
              const [t, n] = line.split(' ')
              samples.push({ t: Number(t), n: Number(n) })
            }
          })
        })
        const closed = new Promise<void>(resolve => rx.once('exit', () => resolve()))
        await listening
        await sh(['ip', 'netns', 'exec', source.netns, 'node', '-e', SENDER, destination.ip, String(port), String(ms)], ms + 15_000)
        await Promise.race([closed, new Promise(resolve => setTimeout(resolve, 3000))])
        rx.kill('SIGKILL')
        // Skip the first 300 ms (slow start) and use the steady part.
        const first = samples.find(s => s.n > 0)
        if (first === undefined) throw new Error('goodput probe received nothing')
        const a = samples.find(s => s.t >= first.t + 300)
        const b = samples.filter(s => s.t <= first.t + ms - 100).pop()
        if (a === undefined || b === undefined || b.t <= a.t) throw new Error('goodput probe too short')
        return (b.n - a.n) / ((b.t - a.t) / 1000)
      },
      async destroy () { await bed.destroy() }
    }
    return link
  } catch (err) {
    await bed.destroy()
    throw err
  }
}
