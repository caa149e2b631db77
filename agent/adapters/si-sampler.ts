/**
 * The HostSampler port on systeminformation.
 *
 * - CPU: the busy share of all logical CPUs since the previous sample (user, nice, system, irq,
 *   softirq and steal over those plus idle and iowait). The very first call has no previous
 *   reading, so it makes a window of 250 ms (systeminformation's own: about 0.5 s): the first
 *   sample is slow, later ones are immediate.
 * - Memory used: `active` (what processes use, without page cache and buffers), not `used`.
 * - Network: rx + tx bytes of the chosen interfaces, as a delta against the previous sample over
 *   the time between them (the `now` component). The first sample has no previous one and reports
 *   0. A counter that goes backwards (interface re-created, counter reset) counts as 0 for that
 *   interface and that interval.
 * - Capacity: logical cores; cpuMipsPerCore from the base clock in MHz (1 MHz = 1 MIPS, the
 *   convention of the CloudSim host models behind the PlanetLab experiments) unless configured;
 *   total memory; sum of the chosen interfaces' link speeds, or a configured default when the
 *   kernel does not know it (virtual NICs report -1). Re-read every `capacityRefreshMs`.
 *
 * - On Linux the three figures taken at every sample (CPU, memory, network counters) are read from
 *   the kernel's files directly (`procSystemInfo`: /proc/stat, /proc/meminfo,
 *   /sys/class/net/IFACE/statistics), with the same definitions as systeminformation's. On Linux,
 *   systeminformation starts child processes for them (`cat /proc/stat | grep cpu`, a `cat` per
 *   counter and interface): 7 per sample with one interface (bench:sampler), every second, on
 *   every hypervisor.
 *   systeminformation still describes the host (cores, clock, link speeds, the default route).
 *
 * sample() never throws: any failure is a rejected promise with a SamplerError (or AbortError when
 * its signal fires), whose cause is the underlying error. The runtime decides what to do.
 */
import { readFileSync } from 'node:fs'
import { readFile } from 'node:fs/promises'
import path from 'node:path'
import si from 'systeminformation'
import type { Logger } from '../ports/logger.js'
import type { HostLoad, HostSampler } from '../ports/host-sampler.js'
import type { HostCapacity } from '../core/index.js'
import { AbortError, SamplerError } from '../lib/errors.js'

/** The part of systeminformation the sampler uses (tests substitute a fake). */
export interface SystemInfoApi {
  currentLoad (): Promise<{ currentLoad: number }>
  mem (): Promise<{ total: number, active: number }>
  cpu (): Promise<{ cores: number, speed: number }>
  networkStats (ifaces?: string): Promise<Array<{ iface: string, rx_bytes: number, tx_bytes: number }>>
  networkInterfaces (): Promise<Array<{ iface: string, speed: number | null, internal: boolean }> | { iface: string, speed: number | null, internal: boolean }>
  networkInterfaceDefault (): Promise<string>
}

export interface SiSamplerInit {
  /**
   * Interfaces whose traffic counts as the host's network load. On a hypervisor, guest traffic
   * crosses the physical NIC, a bridge and a tap device: counting them all would count it three
   * times, so by default only the interface of the default route is used. List the uplinks
   * (bond members or the bond itself) when that is wrong.
   * @default [the default-route interface]
   */
  interfaces?: string[]
  /**
   * Link speed assumed when the kernel reports none (virtual NICs, some drivers), Mbit/s.
   * @default 1000
   */
  linkMbpsDefault?: number
  /**
   * CPU capacity per core in MIPS-like units. Set it to compare hosts whose clock speed does not
   * say how fast they are (different generations).
   * @default the base clock in MHz, or 1000 when the clock is unknown
   */
  cpuMipsPerCore?: number
  /**
   * How often capacity (cores, clock, memory, link speed) is read again, ms of `now`.
   * @default 300000
   */
  capacityRefreshMs?: number
  /**
   * A sample that takes longer than this is rejected with SamplerError (the first one needs about
   * 0.5 s).
   * @default 5000
   */
  sampleTimeoutMs?: number
}

export interface SiSamplerComponents {
  logger: Logger
  /** Monotonic clock, ms. @default performance.now */
  now?: () => number
  /** @default the real systeminformation module */
  systemInfo?: SystemInfoApi
  /**
   * Where the kernel's files are read when `systemInfo` is not given (tests point it elsewhere).
   * @default /proc and /sys/class/net
   */
  procRoots?: ProcRoots
}

const MIB = 1024 * 1024

interface Counters { atMs: number, bytes: Map<string, number> }

class SiSampler implements HostSampler {
  private readonly log: Logger
  private readonly now: () => number
  private readonly si: SystemInfoApi
  private readonly linkMbpsDefault: number
  private readonly capacityRefreshMs: number
  private readonly sampleTimeoutMs: number
  private capacity: { value: HostCapacity, atMs: number } | null = null
  private interfaces: string[] | null
  private previous: Counters | null = null
  /** One sample at a time: a caller that asks while one runs shares its result. */
  private inflight: Promise<HostLoad> | null = null

  constructor (private readonly init: SiSamplerInit, components: SiSamplerComponents) {
    this.log = components.logger.forComponent('agent:sampler')
    this.now = components.now ?? (() => performance.now())
    this.si = components.systemInfo ?? defaultSystemInfo(this.log, components.procRoots ?? {})
    this.linkMbpsDefault = init.linkMbpsDefault ?? 1000
    this.capacityRefreshMs = init.capacityRefreshMs ?? 300_000
    this.sampleTimeoutMs = init.sampleTimeoutMs ?? 5000
    this.interfaces = init.interfaces ?? null
  }

  async sample (signal?: AbortSignal): Promise<HostLoad> {
    if (signal?.aborted === true) throw new AbortError('host sample aborted', { cause: signal.reason })
    if (this.inflight === null) {
      const p: Promise<HostLoad> = this.take().finally(() => { if (this.inflight === p) this.inflight = null })
      this.inflight = p
    }
    const current = this.inflight
    return await withDeadline(current, this.sampleTimeoutMs, signal, () => {
      // A sample that overran its deadline is abandoned (systeminformation calls cannot be
      // cancelled): the next call starts a fresh one instead of waiting on a hung read.
      if (this.inflight !== current) return
      this.inflight = null
      this.log.warn('host sample abandoned after its deadline', { sampleTimeoutMs: this.sampleTimeoutMs })
    })
  }

  private async take (): Promise<HostLoad> {
    try {
      const ifaces = await this.chosenInterfaces()
      const [load, mem, stats] = await Promise.all([this.si.currentLoad(), this.si.mem(), ifaces.length === 0 ? Promise.resolve([]) : this.si.networkStats(ifaces.join(','))])
      const atMs = this.now()
      const capacity = await this.capacityAt(atMs, ifaces)
      const cpuUtil = clamp01(load.currentLoad / 100)
      if (!Number.isFinite(cpuUtil)) throw new Error(`currentLoad is not a number: ${String(load.currentLoad)}`)
      const bytes = new Map<string, number>()
      for (const s of stats) {
        if (ifaces.includes(s.iface)) bytes.set(s.iface, (s.rx_bytes ?? 0) + (s.tx_bytes ?? 0))
      }
      const netMbps = this.netMbps({ atMs, bytes })
      return { cpuUtil, memUsedMiB: Math.round(mem.active / MIB), netMbps, capacity }
    } catch (err) {
      throw new SamplerError(`host sample failed: ${err instanceof Error ? err.message : String(err)}`, { cause: err })
    }
  }

  private netMbps (current: Counters): number {
    const prev = this.previous
    this.previous = current
    if (prev === null) return 0
    const seconds = (current.atMs - prev.atMs) / 1000
    if (seconds <= 0) return 0
    let deltaBytes = 0
    for (const [iface, bytes] of current.bytes) {
      const before = prev.bytes.get(iface)
      if (before !== undefined && bytes >= before) deltaBytes += bytes - before
    }
    return (deltaBytes * 8) / 1e6 / seconds
  }

  private async chosenInterfaces (): Promise<string[]> {
    if (this.interfaces !== null) return this.interfaces
    const iface = await this.si.networkInterfaceDefault()
    // No default route (an isolated test host): no network load rather than a failure.
    this.interfaces = iface === '' ? [] : [iface]
    this.log.info('network load measured on the default-route interface', { interfaces: this.interfaces })
    return this.interfaces
  }

  private async capacityAt (atMs: number, ifaces: string[]): Promise<HostCapacity> {
    if (this.capacity !== null && atMs - this.capacity.atMs < this.capacityRefreshMs) return this.capacity.value
    const [cpu, mem, nics] = await Promise.all([this.si.cpu(), this.si.mem(), this.si.networkInterfaces()])
    const list = Array.isArray(nics) ? nics : [nics]
    let netMbps = 0
    for (const iface of ifaces) {
      const speed = list.find(n => n.iface === iface)?.speed
      netMbps += typeof speed === 'number' && speed > 0 ? speed : this.linkMbpsDefault
    }
    const speedMHz = Math.round(cpu.speed * 1000)
    const value: HostCapacity = {
      cpuCores: Math.max(1, cpu.cores),
      cpuMipsPerCore: this.init.cpuMipsPerCore ?? (speedMHz > 0 ? speedMHz : 1000),
      memMiB: Math.round(mem.total / MIB),
      netMbps: ifaces.length === 0 ? this.linkMbpsDefault : netMbps
    }
    const changed = this.capacity === null || JSON.stringify(this.capacity.value) !== JSON.stringify(value)
    this.capacity = { value, atMs }
    if (changed) this.log.info('host capacity', { ...value })
    return value
  }
}

function clamp01 (x: number): number {
  return x < 0 ? 0 : x > 1 ? 1 : x
}

/** `p`, or a SamplerError after `ms`, or an AbortError when `signal` fires; whichever comes first. */
async function withDeadline<T> (p: Promise<T>, ms: number, signal: AbortSignal | undefined, onTimeout: () => void): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  let onAbort: (() => void) | undefined
  const guards = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(() => {
      onTimeout()
      reject(new SamplerError(`host sample took longer than ${ms} ms`))
    }, ms)
    if (signal !== undefined) {
      onAbort = () => reject(new AbortError('host sample aborted', { cause: signal.reason }))
      signal.addEventListener('abort', onAbort, { once: true })
    }
  })
  try {
    return await Promise.race([p, guards])
  } finally {
    clearTimeout(timer)
    if (onAbort !== undefined) signal?.removeEventListener('abort', onAbort)
  }
}

/** Where procSystemInfo reads; tests point it at files of their own. */
export interface ProcRoots {
  /** @default '/proc' */
  proc?: string
  /** @default '/sys/class/net' */
  sysClassNet?: string
  /** Window of the very first CPU reading, which has no previous one, ms. @default 250 */
  firstWindowMs?: number
}

interface CpuTimes { busy: number, total: number }

/** The aggregate `cpu` line of /proc/stat: busy and total jiffies (idle and iowait are not busy). */
export function parseProcStat (text: string): CpuTimes {
  const line = text.split('\n').find(l => l.startsWith('cpu '))
  if (line === undefined) throw new Error('no aggregate cpu line in /proc/stat')
  const f = line.trim().split(/\s+/).slice(1).map(Number)
  if (f.length < 4 || f.some(x => !Number.isFinite(x) || x < 0)) throw new Error(`malformed cpu line in /proc/stat: ${line.slice(0, 120)}`)
  // user nice system idle iowait irq softirq steal (guest time is already inside user and nice).
  const [user = 0, nice = 0, system = 0, idle = 0, iowait = 0, irq = 0, softirq = 0, steal = 0] = f
  const busy = user + nice + system + irq + softirq + steal
  return { busy, total: busy + idle + iowait }
}

/** /proc/meminfo: total, and active as systeminformation defines it (total - MemAvailable), bytes. */
export function parseMeminfo (text: string): { total: number, active: number } {
  const kib = (key: string): number | undefined => {
    const m = new RegExp(`^${key}:\\s+(\\d+)\\s*kB`, 'm').exec(text)
    return m === null ? undefined : Number(m[1]) * 1024
  }
  const total = kib('MemTotal')
  if (total === undefined || total <= 0) throw new Error('no MemTotal in /proc/meminfo')
  let available = kib('MemAvailable')
  if (available === undefined) {
    // Kernels before 3.14: what systeminformation falls back to.
    const free = kib('MemFree')
    if (free === undefined) throw new Error('neither MemAvailable nor MemFree in /proc/meminfo')
    available = free + (kib('Buffers') ?? 0) + (kib('Cached') ?? 0) + (kib('Slab') ?? 0)
  }
  return { total, active: Math.max(0, total - available) }
}

/**
 * The per-sample part of SystemInfoApi read from the kernel's files, without child processes;
 * the host's description (cpu, interfaces, default route) stays with systeminformation.
 * currentLoad is the busy share of all CPUs since the previous call, as systeminformation's.
 */
export function procSystemInfo (roots: ProcRoots = {}, base: SystemInfoApi = si as unknown as SystemInfoApi): SystemInfoApi {
  const proc = roots.proc ?? '/proc'
  const net = roots.sysClassNet ?? '/sys/class/net'
  const firstWindowMs = roots.firstWindowMs ?? 250
  let previous: CpuTimes | null = null
  // /proc/stat and /proc/meminfo are read synchronously: the kernel builds them from its own
  // counters (tens of microseconds here), while each asynchronous read is four trips through
  // libuv's thread pool (0.2 against 1.3 ms of CPU for the four files, median of 100 reads on a
  // 2-core machine). The network counters stay asynchronous: the driver computes them, and a
  // driver that hangs must leave the deadline able to abandon the sample, not block the loop.
  const readCpu = (): CpuTimes => parseProcStat(readFileSync(path.join(proc, 'stat'), 'utf8'))
  const counter = async (iface: string, name: string): Promise<number> => {
    const text = await readFile(path.join(net, iface, 'statistics', name), 'utf8')
    const v = Number(text.trim())
    if (!Number.isFinite(v) || v < 0 || text.trim() === '') throw new Error(`malformed ${name} of ${iface}: ${JSON.stringify(text.slice(0, 40))}`)
    return v
  }
  return {
    async currentLoad () {
      let before = previous
      if (before === null) {
        before = readCpu()
        await new Promise(resolve => setTimeout(resolve, firstWindowMs))
      }
      const now = readCpu()
      previous = now
      const dTotal = now.total - before.total
      const dBusy = now.busy - before.busy
      return { currentLoad: dTotal > 0 && dBusy >= 0 ? (100 * dBusy) / dTotal : 0 }
    },
    async mem () { return parseMeminfo(readFileSync(path.join(proc, 'meminfo'), 'utf8')) },
    async networkStats (ifaces?: string) {
      const names = (ifaces ?? '').split(',').map(x => x.trim()).filter(x => x !== '')
      return await Promise.all(names.map(async iface => {
        const [rx, tx] = await Promise.all([counter(iface, 'rx_bytes'), counter(iface, 'tx_bytes')])
        return { iface, rx_bytes: rx, tx_bytes: tx }
      }))
    },
    cpu: async () => await base.cpu(),
    networkInterfaces: async () => await base.networkInterfaces(),
    networkInterfaceDefault: async () => await base.networkInterfaceDefault()
  }
}

/** procSystemInfo where the kernel's files are there (Linux), systeminformation alone elsewhere. */
function defaultSystemInfo (log: Logger, roots: ProcRoots): SystemInfoApi {
  try {
    parseProcStat(readFileSync(path.join(roots.proc ?? '/proc', 'stat'), 'utf8'))
    return procSystemInfo(roots)
  } catch (err) {
    log.info('no readable /proc/stat: every sample goes through systeminformation', { err: err instanceof Error ? err.message : String(err) })
    return si as unknown as SystemInfoApi
  }
}

/** Factory (STYLE §1.4): `siSampler({})({ logger })`. Only /proc/stat is read (to choose the reader) before the first sample(). */
export function siSampler (init: SiSamplerInit = {}): (components: SiSamplerComponents) => HostSampler {
  return components => new SiSampler(init, components)
}
