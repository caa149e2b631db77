/**
 * The VIP port on iproute2 and iputils arping.
 *
 * - add/remove: `ip addr add|del A/P dev IFACE`. "Address already assigned" on add and "Address
 *   not found" on del count as success (idempotent).
 * - announce: gratuitous ARP with `arping -U` (an ARP request whose sender and target are the
 *   VIP, broadcast: what keepalived sends) or `arping -A` (an ARP reply; some switches and hosts
 *   honour only one kind). Either updates an existing neighbour entry on Linux; a host that has
 *   no entry for the VIP creates one only with arp_accept=1 (it resolves on its first packet
 *   anyway). Linux ignores a second change of the same entry within `locktime` (1 s): that is
 *   why bursts repeat and why the second burst comes seconds later.
 * - hasAddress: `ip -j addr show dev IFACE`.
 *
 * Why arping and not a raw-socket package from npm: sending an Ethernet frame needs an AF_PACKET
 * socket, which Node does not expose; the npm packages that do (pcap or libpcap bindings) are
 * native addons that must compile on every hypervisor and would need CAP_NET_RAW in the agent
 * itself. Debian ships arping with a file capability (cap_net_raw), so the agent runs it
 * without raw-socket rights of its own, and iputils-arping is one small package next to iproute2,
 * which the agent needs anyway. The price is a process per burst (a few ms to start here).
 *
 * iputils arping takes whole seconds for -i and waits one interval after its last packet before
 * it exits. A burst at whole-second spacing is one process; a faster burst (Pacemaker's 200 ms,
 * or keepalived's back-to-back packets) starts one `arping -c 1` per packet on a timer, at most
 * `burstProcessesMax` alive at once. The first packet leaves when the process has started and
 * opened its socket; arping says so only when it exits, so `onFirstSent` fires `firstPacketMs`
 * after the spawn (15-35 ms measured here), or at the exit if that comes first.
 *
 * Every child gets the call's AbortSignal and deadline; on either it is killed (SIGKILL) and the
 * call rejects with VIP_ABORTED or VIP_TIMEOUT. Nothing here throws synchronously.
 * `netns` runs everything inside a network namespace (tests): `ip -n NS ...` and
 * `ip netns exec NS arping ...`.
 */
import { spawn } from 'node:child_process'
import type { Logger } from '../ports/logger.js'
import {
  VipError, type AnnounceOptions, type AnnounceResult, type VipAdapter, type VipAddress, type VipCallOptions, type VipErrorCode
} from '../ports/vip-adapter.js'

export interface ArpVipInit {
  /**
   * Network namespace to act in (tests and the test bed). @default undefined (the agent's own)
   */
  netns?: string
  /** The iproute2 command. @default 'ip' */
  ipCommand?: string
  /** The iputils arping command. @default 'arping' */
  arpingCommand?: string
  /** 'request' sends `arping -U`, 'reply' sends `arping -A`. @default 'request' */
  arpMode?: 'request' | 'reply'
  /** Default deadline of add, remove and hasAddress, ms. @default 2000 */
  timeoutMs?: number
  /**
   * Extra deadline of an announcement beyond the burst's own length, ms. @default 3000
   */
  announceSlackMs?: number
  /** Time after an arping spawn at which its packet is taken to be sent, ms. @default 50 */
  firstPacketMs?: number
  /** Most arping processes alive at once in one burst; the limit delays, never drops. @default 8 */
  burstProcessesMax?: number
}

export interface ArpVipComponents {
  logger: Logger
}

interface RunResult { code: number | null, stdout: string, stderr: string }

const IPV4 = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/
const IFACE = /^[A-Za-z0-9_.:@-]{1,15}$/
const OUTPUT_MAX = 64 * 1024

function validAddress (v: VipAddress): string | null {
  const m = IPV4.exec(v.address)
  if (m === null || m.slice(1, 5).some(o => Number(o) > 255)) return `invalid IPv4 address "${v.address}"`
  if (!Number.isInteger(v.prefixLength) || v.prefixLength < 1 || v.prefixLength > 32) return `invalid prefix length ${v.prefixLength}`
  if (!IFACE.test(v.iface)) return `invalid interface name "${v.iface}"`
  return null
}

/** Maps a tool's failure to a code, from its exit and stderr (the only thing the tools give). */
function classify (stderr: string): VipErrorCode {
  if (/Cannot open network namespace/i.test(stderr)) return 'VIP_NETNS_NOT_FOUND'
  if (/Cannot find device|Device .* not available|No such device|unknown iface|does not exist/i.test(stderr)) return 'VIP_IFACE_NOT_FOUND'
  if (/Operation not permitted|Permission denied|must be root|CAP_NET/i.test(stderr)) return 'VIP_PERMISSION_DENIED'
  if (/bind: Cannot assign requested address/i.test(stderr)) return 'VIP_ADDRESS_NOT_HERE'
  return 'VIP_COMMAND_FAILED'
}

function sleep (ms: number, signal: AbortSignal): Promise<void> {
  return new Promise(resolve => {
    if (signal.aborted || ms <= 0) { resolve(); return }
    const t = setTimeout(done, ms)
    function done (): void { clearTimeout(t); signal.removeEventListener('abort', done); resolve() }
    signal.addEventListener('abort', done, { once: true })
  })
}

export class ArpVip implements VipAdapter {
  private readonly log: Logger
  private readonly netns: string | undefined
  private readonly ip: string
  private readonly arping: string
  private readonly arpFlag: '-U' | '-A'
  private readonly timeoutMs: number
  private readonly announceSlackMs: number
  private readonly firstPacketMs: number
  private readonly burstProcessesMax: number
  private stopper = new AbortController()

  constructor (init: ArpVipInit, components: ArpVipComponents) {
    this.log = components.logger.forComponent('agent:vip')
    this.netns = init.netns
    this.ip = init.ipCommand ?? 'ip'
    this.arping = init.arpingCommand ?? 'arping'
    this.arpFlag = (init.arpMode ?? 'request') === 'reply' ? '-A' : '-U'
    this.timeoutMs = init.timeoutMs ?? 2000
    this.announceSlackMs = init.announceSlackMs ?? 3000
    this.firstPacketMs = init.firstPacketMs ?? 50
    this.burstProcessesMax = Math.max(1, init.burstProcessesMax ?? 8)
  }

  /** Idempotent; a stopped adapter can be started again. */
  start (): void {
    if (this.stopper.signal.aborted) this.stopper = new AbortController()
  }

  /** Aborts every call in flight (their children are killed). Idempotent. */
  stop (): void {
    this.stopper.abort()
  }

  async add (vip: VipAddress, options: VipCallOptions = {}): Promise<void> {
    this.check(vip)
    const r = await this.run(this.ipArgs(['addr', 'add', `${vip.address}/${vip.prefixLength}`, 'dev', vip.iface]), options, this.timeoutMs)
    if (r.code === 0 || /File exists|already assigned/i.test(r.stderr)) return
    throw this.failure('add', vip, r)
  }

  async remove (vip: VipAddress, options: VipCallOptions = {}): Promise<void> {
    this.check(vip)
    const r = await this.run(this.ipArgs(['addr', 'del', `${vip.address}/${vip.prefixLength}`, 'dev', vip.iface]), options, this.timeoutMs)
    if (r.code === 0 || /Cannot assign requested address|Address not found/i.test(r.stderr)) return
    throw this.failure('remove', vip, r)
  }

  async hasAddress (vip: VipAddress, options: VipCallOptions = {}): Promise<boolean> {
    this.check(vip)
    const r = await this.run(this.ipArgs(['-j', '-4', 'addr', 'show', 'dev', vip.iface]), options, this.timeoutMs)
    if (r.code !== 0) throw this.failure('hasAddress', vip, r)
    let parsed: unknown
    try { parsed = JSON.parse(r.stdout) } catch (err) {
      throw new VipError('VIP_COMMAND_FAILED', `ip -j addr show dev ${vip.iface}: output is not JSON`, { cause: err })
    }
    if (!Array.isArray(parsed)) return false
    return parsed.some((link: { addr_info?: Array<{ family?: string, local?: string }> }) =>
      (link.addr_info ?? []).some(a => a.family === 'inet' && a.local === vip.address))
  }

  async announce (vip: VipAddress, options: AnnounceOptions): Promise<AnnounceResult> {
    this.check(vip)
    const { count, intervalMs } = options
    if (!Number.isInteger(count) || count < 1 || count > 100) throw new VipError('VIP_INVALID_ARGUMENT', `announce count must be 1..100 (got ${count})`)
    if (!Number.isFinite(intervalMs) || intervalMs < 0 || intervalMs > 60_000) throw new VipError('VIP_INVALID_ARGUMENT', `announce intervalMs must be 0..60000 (got ${intervalMs})`)
    const started = Date.now()
    const burstMs = (count - 1) * intervalMs + 1000 // arping lingers one second after its last packet
    const deadlineMs = options.timeoutMs ?? burstMs + this.announceSlackMs
    let first = options.onFirstSent
    const fireFirst = (): void => { const f = first; first = undefined; f?.() }

    if (intervalMs >= 1000 && intervalMs % 1000 === 0) {
      // One process for the whole burst.
      const timer = setTimeout(fireFirst, this.firstPacketMs)
      try {
        const r = await this.run(this.arpingArgs(['-c', String(count), '-i', String(intervalMs / 1000), '-I', vip.iface, vip.address]), options, deadlineMs)
        if (r.code !== 0) throw this.failure('announce', vip, r)
        fireFirst()
        return { sent: this.sentCount(r.stdout, count), elapsedMs: Date.now() - started }
      } finally { clearTimeout(timer) }
    }

    // One `arping -c 1` per packet, spaced by intervalMs, with a bounded number alive at once.
    const deadline = AbortSignal.timeout(deadlineMs)
    const signal = AbortSignal.any([deadline, this.stopper.signal, ...(options.signal !== undefined ? [options.signal] : [])])
    const running = new Set<Promise<RunResult>>()
    const results: RunResult[] = []
    let failure: VipError | null = null
    for (let i = 0; i < count && failure === null; i++) {
      if (i > 0) await sleep(intervalMs, signal)
      if (signal.aborted) break
      while (running.size >= this.burstProcessesMax) await Promise.race(running)
      const p = this.run(this.arpingArgs(['-c', '1', '-I', vip.iface, vip.address]), { signal, timeoutMs: deadlineMs }, deadlineMs)
      if (i === 0) {
        const timer = setTimeout(fireFirst, this.firstPacketMs)
        void p.finally(() => { clearTimeout(timer); fireFirst() }).catch(() => {})
      }
      const tracked = p.then(r => { results.push(r); if (r.code !== 0 && failure === null) failure = this.failure('announce', vip, r); return r }, (err: unknown) => {
        if (failure === null) failure = err instanceof VipError ? err : new VipError('VIP_COMMAND_FAILED', 'arping failed', { cause: err })
        return { code: null, stdout: '', stderr: '' }
      }).finally(() => { running.delete(tracked) })
      running.add(tracked)
    }
    await Promise.all(running)
    if (failure !== null) throw failure
    if (signal.aborted) throw this.abortError(deadline, options.signal, `announce ${vip.address}`)
    return { sent: results.reduce((n, r) => n + this.sentCount(r.stdout, 1), 0), elapsedMs: Date.now() - started }
  }

  // -------------------------------------------------------------------------------------------

  private check (vip: VipAddress): void {
    const bad = validAddress(vip)
    if (bad !== null) throw new VipError('VIP_INVALID_ARGUMENT', bad)
  }

  private ipArgs (args: string[]): string[] {
    return this.netns === undefined ? [this.ip, ...args] : [this.ip, '-n', this.netns, ...args]
  }

  private arpingArgs (args: string[]): string[] {
    const a = [this.arping, this.arpFlag, ...args]
    return this.netns === undefined ? a : [this.ip, 'netns', 'exec', this.netns, ...a]
  }

  private sentCount (stdout: string, fallback: number): number {
    const m = /Sent (\d+) probe/.exec(stdout)
    return m === null ? fallback : Number(m[1])
  }

  private failure (op: string, vip: VipAddress, r: RunResult): VipError {
    const stderr = r.stderr.trim().split('\n').slice(-3).join(' | ')
    const code = classify(r.stderr)
    return new VipError(code, `${op} ${vip.address}/${vip.prefixLength} on ${vip.iface}${this.netns !== undefined ? ` (netns ${this.netns})` : ''} failed (exit ${String(r.code)}): ${stderr || 'no message'}`)
  }

  private abortError (deadline: AbortSignal, caller: AbortSignal | undefined, what: string): VipError {
    if (caller?.aborted === true || (this.stopper.signal.aborted && !deadline.aborted)) return new VipError('VIP_ABORTED', `${what} aborted`)
    return new VipError('VIP_TIMEOUT', `${what} timed out`)
  }

  /** Runs a command with a deadline; resolves with its exit and output, rejects only with VipError. */
  private run (argv: string[], options: VipCallOptions, defaultTimeoutMs: number): Promise<RunResult> {
    const [cmd, ...args] = argv
    const line = argv.join(' ')
    if (cmd === undefined) return Promise.reject(new VipError('VIP_INVALID_ARGUMENT', 'empty command'))
    const deadline = AbortSignal.timeout(options.timeoutMs ?? defaultTimeoutMs)
    const signal = AbortSignal.any([deadline, this.stopper.signal, ...(options.signal !== undefined ? [options.signal] : [])])
    if (signal.aborted) return Promise.reject(this.abortError(deadline, options.signal, line))
    return new Promise((resolve, reject) => {
      let stdout = ''
      let stderr = ''
      let settled = false
      const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] })
      const onAbort = (): void => { child.kill('SIGKILL') }
      signal.addEventListener('abort', onAbort, { once: true })
      const finish = (f: () => void): void => {
        if (settled) return
        settled = true
        signal.removeEventListener('abort', onAbort)
        f()
      }
      child.stdout.on('data', (d: Buffer) => { if (stdout.length < OUTPUT_MAX) stdout += d.toString() })
      child.stderr.on('data', (d: Buffer) => { if (stderr.length < OUTPUT_MAX) stderr += d.toString() })
      child.once('error', (err: NodeJS.ErrnoException) => finish(() => {
        const code: VipErrorCode = err.code === 'ENOENT' ? 'VIP_TOOL_MISSING' : err.code === 'EACCES' || err.code === 'EPERM' ? 'VIP_PERMISSION_DENIED' : 'VIP_COMMAND_FAILED'
        reject(new VipError(code, `${cmd}: ${err.message}`, { cause: err, command: line }))
      }))
      child.once('close', (code) => finish(() => {
        if (signal.aborted) { reject(this.abortError(deadline, options.signal, line)); return }
        this.log.debug(`${line} -> ${String(code)}`, code === 0 ? undefined : { stderr: stderr.trim() })
        resolve({ code, stdout, stderr })
      }))
    })
  }
}

/** Factory (STYLE §1.4): `arpVip(init)(components)`. */
export function arpVip (init: ArpVipInit = {}): (components: ArpVipComponents) => ArpVip {
  return (components) => new ArpVip(init, components)
}
