/**
 * The embedded default hypervisor driver: simulated VMs whose load follows a pattern.
 *
 * Patterns are pure functions of (spec, seed, milliseconds since the VM started): nothing in the
 * pattern math reads a clock or Math.random. The driver asks its `now` component for the time
 * when list() is called (tests and the simulator pass their own), and `listAt(nowMs)` takes it
 * from the caller outright.
 *
 *   constant   cpuMean all the time
 *   sine       cpuMean + amplitude·sin(2π·t/period + phase); the phase is drawn from the seed
 *   walk       a bounded random walk around cpuMean, one step every stepMs
 *   spiky      cpuMean most of the time, with seeded bursts to `peak` lasting spikeSteps steps
 *   trace      a CPU trace file, one sample per line in percent of the VM's own capacity (the
 *              PlanetLab/CoMon format: 288 lines, one per 5 minutes), interpolated linearly
 *              between samples as CloudSim's PlanetLab model does, looped at the end; a line
 *              `# interval-ms N` sets the file's own sample period (a scripted load, such as the
 *              demo's surge), other lines starting with # are comments
 *
 * A pattern's value is the VM's CPU use as a fraction of its own vcpus. The driver reports
 * `cpuUtil` as a fraction of the host (value · vcpus / hostCpuCores), as VmSummary requires.
 * Memory used follows CPU a little: memMiB · memMean · (0.85 + 0.15 · cpu).
 *
 * Live migration (the MigratingDriver calls the migration machine drives, as the QEMU driver
 * does). The VM's definition (vcpus, memory, the resolved load pattern, cpuMean, memMean, dirty
 * rate) goes in the spec that describe() returns, which the protocol carries to the target in
 * its intent; prepareIncoming() opens an incoming copy that listens on a TCP port, as QEMU's
 * `-incoming` does. migrate() connects to it and runs the pre-copy model of
 * sim-migration-model.ts on timers (passes at the link speed, the guest dirtying memory as its
 * load says, a stop-and-copy once the rest fits the downtime limit); no page contents cross the
 * link, only small JSON lines. At the switch-over the source pauses and sends the VM's running
 * state (its definition, its pattern's seed and its age, so that the load continues where it
 * was); the target starts the guest and acknowledges. A connection that breaks before the state
 * was sent fails the migration: the guest runs on the source and the target's incoming copy
 * goes away. After the state was sent the source stays paused whatever happens (the migration
 * machine then asks the target whether its copy runs, R1/R2 of migration-machine.ts).
 * Run states are QEMU's names ('running', 'inmigrate', 'finish-migrate', 'postmigrate',
 * 'paused', 'shutdown') and migration states QEMU's query-migrate states.
 *
 * Faults can be injected per operation (setFault) and on the migration link (setLinkFault) for
 * tests of the runtime's error paths; `faults` at construction sets them in an agent process.
 *
 * Agent restarts (`stateFile`). A real hypervisor's guests outlive the agent (QEMU processes,
 * libvirt domains); simulated ones live in the agent's process. With a state file the driver
 * writes its VM set (definition, seed, start time, run state) whenever it changes, and a driver
 * that finds the file at construction takes the VMs from it instead of the configured ones: an
 * agent that is restarted finds its guests where it left them, with their load where it was.
 * Without the file, `startConfigured` says whether the configured VMs start (the first boot) or
 * none (a host that was reset: its guests died with it, as QEMU's do; the cluster may have
 * restarted or moved them meanwhile). Removing the file while the agent is down models that reset.
 */
import { readFileSync, renameSync, writeFileSync } from 'node:fs'
import net from 'node:net'
import { availableParallelism } from 'node:os'
import { isAbsolute, resolve } from 'node:path'
import type { VmId, VmSummary } from '../core/index.js'
import type { Logger } from '../ports/logger.js'
import type { VmSpec } from '../ports/hypervisor-driver.js'
import { DriverError, TraceFileError, type DriverErrorCode } from '../lib/errors.js'
import type { IncomingOptions, MigratingDriver, MigrationParams, MigrationProgress, MigrationStatus } from '../ports/migrating-driver.js'
import {
  DEFAULT_DIRTY_MIBPS, canStop, dirtiedDuring, dirtyRateBytesPerS, precopyBandwidth, sendMs
} from './sim-migration-model.js'

/** A load pattern with every parameter spelled out. Levels are fractions of the VM's vcpus. */
export type PatternSpec =
  | { kind: 'constant', level: number }
  | { kind: 'sine', mean: number, amplitude: number, periodMs: number, /** radians; drawn from the seed when absent */ phase?: number }
  | { kind: 'walk', start: number, stepMax: number, stepMs: number, min: number, max: number }
  | { kind: 'spiky', base: number, peak: number, /** chance a burst starts in a step */ chance: number, spikeSteps: number, stepMs: number }
  | { kind: 'trace', /** percent values, one per interval */ samples: number[], intervalMs: number, /** where in the trace t=0 falls */ offsetMs: number }

/** The shorthand names of the configuration file. */
export type PatternName = 'constant' | 'sine' | 'walk' | 'spiky' | `trace:${string}`

/** One simulated VM, as configured (agent/config.ts SimVmConfig fits this shape). */
export interface SimVmConfig {
  id: VmId
  vcpus: number
  memMiB: number
  /**
   * Shorthand name (with defaults derived from cpuMean) or a full PatternSpec.
   * @default 'sine'
   */
  pattern?: PatternName | string | PatternSpec
  /** Mean CPU use as a fraction of the VM's vcpus, [0, 1], for the shorthand names. @default 0.3 */
  cpuMean?: number
  /** Mean share of memMiB in use. @default 0.6 */
  memMean?: number
  /** MiB/s a fully busy vCPU of this VM dirties (sim-migration-model.ts). @default 16 */
  dirtyMiBps?: number
}

export interface SimDriverInit {
  /** VMs running from the start (each starts at the first time the driver reads its clock). @default [] */
  vms?: SimVmConfig[]
  /** Seed of every random choice (phases, walks, bursts). The same seed gives the same loads. @default 1 */
  seed?: number
  /**
   * Cores of the simulated host, for turning a VM's load into a share of the host.
   * @default the cores of this machine
   */
  hostCpuCores?: number
  /** Relative trace file names resolve against this directory. @default process.cwd() */
  traceDir?: string
  /** Sample period of trace files, ms (PlanetLab: 5 minutes). Lower it to replay a day faster. @default 300000 */
  traceIntervalMs?: number
  /**
   * Speed of the migration link, Mbit/s (sim-migration-model.ts): the pre-copy passes run at it
   * (or at the migration's bandwidth cap when lower), the stop-and-copy at it.
   * @default 1000
   */
  linkMbps?: number
  /** Faults set from the start (an agent process takes them from its environment in tests). */
  faults?: { ops?: Partial<Record<SimDriverOp, SimFault>>, link?: SimLinkFault }
  /** Where the VM set is kept across agent restarts (see the file's comment). @default none */
  stateFile?: string
  /** With no state file found: start the configured VMs (true: a first boot) or none (a host reset). @default true */
  startConfigured?: boolean
}

/** One VM in the state file. */
interface PersistedSimVm { config: SimVmConfig, seed: number, startedAtMs: number | null, runStatus: 'running' | 'paused' | 'shutdown' | 'postmigrate', patternName?: string }

export interface SimDriverComponents {
  logger: Logger
  /** Wall or virtual clock, ms. Read once per list/start/stop call. @default Date.now */
  now?: () => number
}

export type SimDriverOp =
  | 'list' | 'start' | 'stop' | 'describe' | 'resume' | 'pause' | 'killIfNotRunning'
  | 'prepareIncoming' | 'migrate' | 'progress' | 'cancel' | 'startPostcopy' | 'setDowntimeLimit' | 'balloon'

export const SIM_DRIVER_OPS: readonly SimDriverOp[] = [
  'list', 'start', 'stop', 'describe', 'resume', 'pause', 'killIfNotRunning',
  'prepareIncoming', 'migrate', 'progress', 'cancel', 'startPostcopy', 'setDowntimeLimit', 'balloon'
]

/** An injected failure: the next `times` calls of that operation reject with `code`. */
export interface SimFault {
  code: DriverErrorCode
  /** @default Infinity */
  times?: number
}

/**
 * An injected break of the migration link: the next `times` outgoing migrations lose their
 * connection once `atFraction` of the first pass was sent (before the switch-over), as when the
 * network between the hosts fails mid-copy.
 */
export interface SimLinkFault {
  /** Share of the first pass sent when the link breaks, [0, 1). @default 0.5 */
  atFraction?: number
  /** @default 1 */
  times?: number
}

/** The migration calls are the MigratingDriver port's, as the QEMU and libvirt drivers have them. */
export interface SimDriver extends MigratingDriver {
  readonly kind: 'sim'
  readonly accel: 'kvm'
  /** The VMs at `nowMs`, computed from the caller's time alone (synchronous, for the simulator). */
  listAt (nowMs: number): VmSummary[]
  /** Make an operation fail (or stop failing, with null). */
  setFault (op: SimDriverOp, fault: SimFault | null): void
  /** Break the link of the next outgoing migrations (or stop, with null). */
  setLinkFault (fault: SimLinkFault | null): void
  describe (id: VmId, signal?: AbortSignal): Promise<{ runStatus: string, migration: string, spec: VmSpec } | null>
  resume (id: VmId, signal?: AbortSignal): Promise<void>
  pause (id: VmId, signal?: AbortSignal): Promise<void>
  killIfNotRunning (id: VmId, signal?: AbortSignal): Promise<void>
  /** The model's dirty rate of VM `id` now, bytes/s (what a QEMU measurement would report). */
  measureDirtyRate (id: VmId, opts?: unknown, signal?: AbortSignal): Promise<number>
  /** The memory VM `id` uses now, bytes (what a first pass sends); null when unknown. */
  residentGuestBytes (id: VmId): number | null
}

/** Defaults of the shorthand names. */
const SINE_PERIOD_MS = 10 * 60_000
const STEP_MS = 10_000

/**
 * Turn a config pattern into a PatternSpec. Throws TraceFileError for an unreadable or malformed
 * trace and DriverError(DRIVER_FAILED) for an unknown name or a parameter out of range.
 */
export function resolvePattern (vm: Pick<SimVmConfig, 'id' | 'pattern' | 'cpuMean'>, opts: { traceDir?: string, traceIntervalMs?: number } = {}): PatternSpec {
  const p = vm.pattern ?? 'sine'
  const mean = vm.cpuMean ?? 0.3
  checkFraction(vm.id, 'cpuMean', mean)
  let spec: PatternSpec
  if (typeof p !== 'string') {
    spec = p
  } else if (p === 'constant') {
    spec = { kind: 'constant', level: mean }
  } else if (p === 'sine') {
    // As wide a swing as fits in [0, 1] around the mean, at most ±0.3.
    spec = { kind: 'sine', mean, amplitude: Math.min(0.3, mean, 1 - mean), periodMs: SINE_PERIOD_MS }
  } else if (p === 'walk') {
    spec = { kind: 'walk', start: mean, stepMax: 0.05, stepMs: STEP_MS, min: 0, max: 1 }
  } else if (p === 'spiky') {
    spec = { kind: 'spiky', base: mean, peak: Math.max(mean, 0.95), chance: 0.03, spikeSteps: 3, stepMs: STEP_MS }
  } else if (p.startsWith('trace:')) {
    const name = p.slice('trace:'.length)
    const file = isAbsolute(name) ? name : resolve(opts.traceDir ?? process.cwd(), name)
    const tr = loadTraceFile(file)
    spec = { kind: 'trace', samples: tr.samples, intervalMs: tr.intervalMs ?? opts.traceIntervalMs ?? 300_000, offsetMs: 0 }
  } else {
    throw new DriverError('DRIVER_FAILED', `vm ${vm.id}: unknown load pattern "${p}" (constant, sine, walk, spiky or trace:<file>)`)
  }
  checkSpec(vm.id, spec)
  return spec
}

function checkFraction (id: string, what: string, x: number): void {
  if (!(Number.isFinite(x) && x >= 0 && x <= 1)) throw new DriverError('DRIVER_FAILED', `vm ${id}: ${what} must be in [0, 1] (got ${x})`)
}

function checkPositive (id: string, what: string, x: number): void {
  if (!(Number.isFinite(x) && x > 0)) throw new DriverError('DRIVER_FAILED', `vm ${id}: ${what} must be > 0 (got ${x})`)
}

function checkSpec (id: string, s: PatternSpec): void {
  switch (s.kind) {
    case 'constant': checkFraction(id, 'level', s.level); break
    case 'sine': checkFraction(id, 'mean', s.mean); checkFraction(id, 'amplitude', s.amplitude); checkPositive(id, 'periodMs', s.periodMs); break
    case 'walk':
      checkFraction(id, 'start', s.start); checkFraction(id, 'stepMax', s.stepMax); checkPositive(id, 'stepMs', s.stepMs)
      checkFraction(id, 'min', s.min); checkFraction(id, 'max', s.max)
      if (s.min > s.max) throw new DriverError('DRIVER_FAILED', `vm ${id}: walk min must be <= max`)
      break
    case 'spiky':
      checkFraction(id, 'base', s.base); checkFraction(id, 'peak', s.peak); checkFraction(id, 'chance', s.chance)
      checkPositive(id, 'spikeSteps', s.spikeSteps); checkPositive(id, 'stepMs', s.stepMs)
      break
    case 'trace':
      if (s.samples.length === 0) throw new DriverError('DRIVER_FAILED', `vm ${id}: trace has no samples`)
      checkPositive(id, 'intervalMs', s.intervalMs)
      break
  }
}

/** Read a trace: one number per line, percent in [0, 100]; blank lines are ignored. */
export function loadTrace (file: string): number[] { return loadTraceFile(file).samples }

/** A trace and the sample period its `# interval-ms N` line names, if any. */
export function loadTraceFile (file: string): { samples: number[], intervalMs?: number } {
  let text: string
  try {
    text = readFileSync(file, 'utf8')
  } catch (err) {
    throw new TraceFileError(file, 'cannot be read', { cause: err })
  }
  const samples: number[] = []
  let intervalMs: number | undefined
  const lines = text.split('\n')
  for (let i = 0; i < lines.length; i++) {
    const line = (lines[i] as string).trim()
    if (line === '') continue
    if (line.startsWith('#')) {
      const m = /^#\s*interval-ms\s+(\S+)$/.exec(line)
      if (m !== null) {
        const ms = Number(m[1])
        if (!(Number.isFinite(ms) && ms > 0)) throw new TraceFileError(file, `line ${i + 1}: interval-ms must be a positive number of milliseconds`)
        intervalMs = ms
      }
      continue
    }
    const v = Number(line)
    if (!Number.isFinite(v) || v < 0 || v > 100) throw new TraceFileError(file, `line ${i + 1}: "${line.slice(0, 40)}" is not a percentage in [0, 100]`)
    samples.push(v)
  }
  if (samples.length === 0) throw new TraceFileError(file, 'has no samples')
  return intervalMs === undefined ? { samples } : { samples, intervalMs }
}

/** 32-bit hash of (seed, i): stateless noise, so a pattern's value depends on t alone. */
function mix (seed: number, i: number): number {
  let h = (seed ^ Math.imul(i | 0, 0x9e3779b1) ^ Math.imul(Math.floor(i / 4294967296), 0x85ebca6b)) >>> 0
  h = Math.imul(h ^ (h >>> 16), 0x7feb352d)
  h = Math.imul(h ^ (h >>> 15), 0x846ca68b)
  return (h ^ (h >>> 16)) >>> 0
}

function unit (seed: number, i: number): number { return mix(seed, i) / 4294967296 }

/** FNV-1a of a string, for per-VM seeds. */
function hashString (s: string): number {
  let h = 0x811c9dc5
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193)
  return h >>> 0
}

function clamp01 (x: number): number { return x < 0 ? 0 : x > 1 ? 1 : x }

/** A pattern as a function of milliseconds since the VM started (t < 0 counts as 0). */
export type PatternFn = (tMs: number) => number

/** Compile a spec with a seed. Deterministic: same spec, seed and t give the same value. */
export function compilePattern (spec: PatternSpec, seed: number): PatternFn {
  switch (spec.kind) {
    case 'constant': return () => spec.level
    case 'sine': {
      const phase = spec.phase ?? unit(seed, -1) * 2 * Math.PI
      return t => clamp01(spec.mean + spec.amplitude * Math.sin((2 * Math.PI * Math.max(0, t)) / spec.periodMs + phase))
    }
    case 'walk': {
      // Incremental: steps are taken from the last step computed; a query before it recomputes
      // from the start (still a pure function of t, only slower).
      let step = 0
      let value = clamp(spec.start, spec.min, spec.max)
      return t => {
        const k = Math.floor(Math.max(0, t) / spec.stepMs)
        if (k < step) { step = 0; value = clamp(spec.start, spec.min, spec.max) }
        for (; step < k; step++) value = clamp(value + (unit(seed, step) * 2 - 1) * spec.stepMax, spec.min, spec.max)
        return value
      }
    }
    case 'spiky':
      return t => {
        const k = Math.floor(Math.max(0, t) / spec.stepMs)
        for (let j = Math.max(0, k - spec.spikeSteps + 1); j <= k; j++) if (unit(seed, j) < spec.chance) return spec.peak
        return spec.base
      }
    case 'trace': {
      const n = spec.samples.length
      return t => {
        const pos = (Math.max(0, t) + spec.offsetMs) / spec.intervalMs
        const i = Math.floor(pos)
        const a = spec.samples[i % n] as number
        const b = spec.samples[(i + 1) % n] as number
        return clamp01((a + (b - a) * (pos - i)) / 100)
      }
    }
  }
}

function clamp (x: number, lo: number, hi: number): number { return x < lo ? lo : x > hi ? hi : x }

/** QEMU's names of a VM's run states, as describe() reports them. */
type RunStatus = 'running' | 'paused' | 'shutdown' | 'inmigrate' | 'finish-migrate' | 'postmigrate'

/** What crosses the migration link at the switch-over: the definition and where the load stands. */
interface SimVmState {
  config: SimVmConfig
  /** The pattern's seed (each host seeds its own VMs differently: the seed must travel). */
  seed: number
  /** Milliseconds since the VM started, at the switch-over. */
  ageMs: number
  /**
   * The pattern's name (a trace file) when the VM was configured by name: config.pattern travels
   * resolved, and the name is what the next move's spec carries when the samples are too long for
   * the wire (specOf).
   */
  patternName?: string
}

/** Frames of the migration link, one JSON object per line. */
type LinkFrame =
  | { t: 'hello', vm: VmId }
  | { t: 'ready' }
  | { t: 'state', state: SimVmState }
  | { t: 'ack' }
  | { t: 'cancel' }
  | { t: 'error', message: string }

/** A phase of an outgoing migration: a pre-copy pass, the stop-and-copy, or the post-copy flush. */
interface Phase { kind: 'pass' | 'stop' | 'postcopy', bytes: number, startAt: number, ms: number }

interface OutMigration {
  status: MigrationStatus
  startedAt: number
  endedAt: number | null
  sock: net.Socket
  linkBps: number
  bandwidthBps: number
  downtimeLimitMs: number
  /** The pause as measured (from pausing here to the target's acknowledgement), ms. */
  downtimeMs: number | null
  pausedAt: number | null
  /** Completed pre-copy passes (QEMU's dirty-sync-count). */
  passes: number
  /** Bytes of the finished phases. */
  sentBytes: number
  residentBytes: number
  dirtyRate: number
  phase: Phase | null
  timer: NodeJS.Timeout | null
  stateSent: boolean
  acked: boolean
  flushed: boolean
  /** Link fault: the connection breaks once this many bytes were sent. */
  breakAtBytes: number | null
  errorDesc: string | null
}

interface InMigration {
  status: MigrationStatus
  server: net.Server
  sock: net.Socket | null
}

interface SimVm {
  config: SimVmConfig
  id: VmId
  vcpus: number
  memMiB: number
  memMean: number
  dirtyMiBps: number
  /** The resolved pattern (what travels) and its seed. */
  pattern: PatternSpec
  seed: number
  cpu: PatternFn
  /** Clock reading at start; null until the first clock reading (configured VMs). */
  startedAtMs: number | null
  runStatus: RunStatus
  balloonMiB: number
  out: OutMigration | null
  inc: InMigration | null
}

/** Largest extra JSON the wire carries (wire-codec LONG_STRING_BYTES), with room for the rest of the spec. */
const EXTRA_JSON_MAX = 7000

/** Splits "host:port" (IPv6 in brackets), or a tcp: URI. */
function hostPort (addr: string): { host: string, port: number } | null {
  const m = /^(?:tcp:)?\[?([^\]]*?)\]?:(\d{1,5})$/.exec(addr)
  if (m === null || m[1] === undefined || m[2] === undefined || m[1] === '') return null
  const port = Number(m[2])
  return port <= 65535 ? { host: m[1], port } : null
}

/** Reads newline-delimited JSON frames from a socket. */
function onFrames (sock: net.Socket, fn: (f: LinkFrame) => void): void {
  let buf = ''
  sock.setEncoding('utf8')
  sock.on('data', (chunk: string) => {
    buf += chunk
    if (buf.length > 1 << 20) { sock.destroy(new Error('migration link: frame too long')); return }
    let i: number
    while ((i = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, i)
      buf = buf.slice(i + 1)
      let f: LinkFrame
      try { f = JSON.parse(line) as LinkFrame } catch { sock.destroy(new Error('migration link: bad frame')); return }
      fn(f)
    }
  })
}

function sendFrame (sock: net.Socket, f: LinkFrame): void {
  if (!sock.destroyed && sock.writable) sock.write(JSON.stringify(f) + '\n')
}

/** setTimeout for a model duration (ms, possibly fractional or huge). */
function after (ms: number, fn: () => void): NodeJS.Timeout {
  const t = setTimeout(fn, Math.max(0, Math.min(2 ** 31 - 1, Math.round(ms))))
  t.unref()
  return t
}

class SimDriverImpl implements SimDriver {
  readonly kind = 'sim' as const
  readonly accel = 'kvm' as const
  private readonly log: Logger
  private readonly now: () => number
  private readonly seed: number
  private readonly hostCpuCores: number
  private readonly linkBps: number
  private readonly vms = new Map<VmId, SimVm>()
  private readonly faults = new Map<SimDriverOp, { code: DriverErrorCode, left: number }>()
  private linkFault: { atFraction: number, left: number } | null = null
  private closed = false

  constructor (private readonly init: SimDriverInit, components: SimDriverComponents) {
    this.log = components.logger.forComponent('agent:driver')
    this.now = components.now ?? Date.now
    this.seed = (init.seed ?? 1) >>> 0
    this.hostCpuCores = init.hostCpuCores ?? availableParallelism()
    if (!(this.hostCpuCores >= 1)) throw new DriverError('DRIVER_FAILED', `hostCpuCores must be >= 1 (got ${this.hostCpuCores})`)
    const mbps = init.linkMbps ?? 1000
    if (!(Number.isFinite(mbps) && mbps > 0)) throw new DriverError('DRIVER_FAILED', `linkMbps must be > 0 (got ${mbps})`)
    this.linkBps = (mbps * 1e6) / 8
    for (const vm of init.vms ?? []) {
      if (this.vms.has(vm.id)) throw new DriverError('DRIVER_FAILED', `vm ${vm.id} is configured twice`)
      this.vms.set(vm.id, this.makeVm(vm, null))
    }
    const kept = this.readStateFile()
    if (kept !== null) {
      this.vms.clear()
      for (const p of kept) {
        const vm = this.makeVm(p.config, p.startedAtMs, p.seed)
        if (typeof p.patternName === 'string') vm.config = { ...vm.config, pattern: p.patternName }
        vm.runStatus = p.runStatus
        this.vms.set(vm.id, vm)
      }
      this.log.info(`sim driver: ${kept.length} VM(s) kept from before the restart (${kept.map(p => `${p.config.id} ${p.runStatus}`).join(', ') || 'none'})`, { stateFile: init.stateFile })
    } else if (init.startConfigured === false) {
      if (this.vms.size > 0) this.log.info(`sim driver: not the first boot and no VMs kept (the host was reset): the configured VMs (${[...this.vms.keys()].join(', ')}) are not started`)
      this.vms.clear()
    }
    this.persist()
    for (const [op, f] of Object.entries(init.faults?.ops ?? {})) {
      if (!(SIM_DRIVER_OPS as readonly string[]).includes(op)) throw new DriverError('DRIVER_FAILED', `fault on unknown operation "${op}" (${SIM_DRIVER_OPS.join(', ')})`)
      if (f !== undefined) this.setFault(op as SimDriverOp, f)
    }
    if (init.faults?.link !== undefined) this.setLinkFault(init.faults.link)
  }

  private makeVm (vm: SimVmConfig, startedAtMs: number | null, seed?: number): SimVm {
    if (!(Number.isInteger(vm.vcpus) && vm.vcpus >= 1)) throw new DriverError('DRIVER_FAILED', `vm ${vm.id}: vcpus must be a positive integer (got ${vm.vcpus})`)
    checkPositive(vm.id, 'memMiB', vm.memMiB)
    const memMean = vm.memMean ?? 0.6
    checkFraction(vm.id, 'memMean', memMean)
    const dirtyMiBps = vm.dirtyMiBps ?? DEFAULT_DIRTY_MIBPS
    if (!(Number.isFinite(dirtyMiBps) && dirtyMiBps >= 0)) throw new DriverError('DRIVER_FAILED', `vm ${vm.id}: dirtyMiBps must be >= 0 (got ${dirtyMiBps})`)
    const spec = resolvePattern(vm, {
      ...(this.init.traceDir !== undefined ? { traceDir: this.init.traceDir } : {}),
      ...(this.init.traceIntervalMs !== undefined ? { traceIntervalMs: this.init.traceIntervalMs } : {})
    })
    const s = seed ?? (this.seed ^ hashString(vm.id)) >>> 0
    return {
      config: vm,
      id: vm.id, vcpus: vm.vcpus, memMiB: vm.memMiB, memMean, dirtyMiBps,
      pattern: spec, seed: s,
      cpu: compilePattern(spec, s),
      startedAtMs, runStatus: 'running', balloonMiB: vm.memMiB, out: null, inc: null
    }
  }

  /** The VM's load (fraction of its vcpus) at `nowMs`; its clock starts at the first reading. */
  private loadAt (vm: SimVm, nowMs: number): number {
    if (vm.startedAtMs === null) vm.startedAtMs = nowMs
    return vm.cpu(nowMs - vm.startedAtMs)
  }

  private memUsedMiB (vm: SimVm, load: number): number {
    return Math.min(vm.balloonMiB, Math.round(vm.memMiB * vm.memMean * (0.85 + 0.15 * load)))
  }

  private readStateFile (): PersistedSimVm[] | null {
    const f = this.init.stateFile
    if (f === undefined) return null
    let text: string
    try { text = readFileSync(f, 'utf8') } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null
      throw new DriverError('DRIVER_FAILED', `sim driver state file ${f} cannot be read`, { cause: err })
    }
    try {
      const v = JSON.parse(text) as { vms?: unknown }
      if (!Array.isArray(v.vms)) throw new Error('no vms array')
      return v.vms as PersistedSimVm[]
    } catch (err) {
      throw new DriverError('DRIVER_FAILED', `sim driver state file ${f} is not valid (remove it to start the configured VMs)`, { cause: err })
    }
  }

  private persisted = ''

  /** Writes the VM set to the state file when it changed (incoming copies are not guests yet). */
  private persist (): void {
    const f = this.init.stateFile
    if (f === undefined || this.closed) return
    const vms: PersistedSimVm[] = []
    for (const vm of this.vms.values()) {
      if (vm.runStatus === 'inmigrate') continue
      const runStatus = vm.runStatus === 'finish-migrate' ? 'paused' : vm.runStatus
      vms.push({ config: { ...vm.config, pattern: vm.pattern, memMean: vm.memMean, dirtyMiBps: vm.dirtyMiBps }, seed: vm.seed, startedAtMs: vm.startedAtMs, runStatus, ...(typeof vm.config.pattern === 'string' ? { patternName: vm.config.pattern } : {}) })
    }
    const text = JSON.stringify({ vms })
    if (text === this.persisted) return
    try {
      writeFileSync(`${f}.tmp`, text)
      renameSync(`${f}.tmp`, f)
      this.persisted = text
    } catch (err) {
      this.log.warn('sim driver: cannot write its state file', { stateFile: f, err })
    }
  }

  listAt (nowMs: number): VmSummary[] {
    const out: VmSummary[] = []
    for (const vm of this.vms.values()) {
      if (vm.startedAtMs === null && vm.runStatus === 'running') vm.startedAtMs = nowMs
      if (vm.runStatus !== 'running') {
        const state = vm.runStatus === 'shutdown' ? 'stopped' : vm.runStatus === 'paused' ? 'paused' : 'migrating'
        out.push({ id: vm.id, vcpus: vm.vcpus, memMiB: vm.memMiB, cpuUtil: 0, memUsedMiB: state === 'stopped' ? 0 : this.memUsedMiB(vm, 0), state })
        continue
      }
      const load = this.loadAt(vm, nowMs)
      out.push({
        id: vm.id,
        vcpus: vm.vcpus,
        memMiB: vm.memMiB,
        cpuUtil: Math.min(1, (load * vm.vcpus) / this.hostCpuCores),
        memUsedMiB: this.memUsedMiB(vm, load),
        state: 'running'
      })
    }
    return out.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0))
  }

  /** Common guard of every call: closed, aborted, injected fault. */
  private enter (op: SimDriverOp, signal: AbortSignal | undefined): void {
    if (this.closed) throw new DriverError('DRIVER_UNREACHABLE', `sim driver is closed (${op})`)
    if (signal?.aborted === true) throw new DriverError('DRIVER_TIMEOUT', `${op} aborted`, { cause: signal.reason })
    const fault = this.faults.get(op)
    if (fault !== undefined) {
      if (--fault.left <= 0) this.faults.delete(op)
      throw new DriverError(fault.code, `${op} failed (injected fault ${fault.code})`)
    }
  }

  private get (id: VmId): SimVm {
    const vm = this.vms.get(id)
    if (vm === undefined) throw new DriverError('VM_NOT_FOUND', `vm ${id} is not on this host`)
    return vm
  }

  async list (signal?: AbortSignal): Promise<VmSummary[]> {
    this.enter('list', signal)
    const out = this.listAt(this.now())
    this.persist()
    return out
  }

  async start (spec: VmSpec, signal?: AbortSignal): Promise<void> {
    this.enter('start', signal)
    const nowMs = this.now()
    const existing = this.vms.get(spec.id)
    if (existing !== undefined && existing.runStatus !== 'shutdown') throw new DriverError('DRIVER_FAILED', `vm ${spec.id} is already ${existing.runStatus === 'running' ? 'running' : `here (${existing.runStatus})`}`)
    // A VM restarted here keeps the pattern it was configured with unless the spec names one.
    const vm = this.makeVm({ ...existing?.config, ...this.definitionOf(spec) }, nowMs)
    this.vms.set(spec.id, vm)
    this.persist()
    this.log.info(`vm ${spec.id} became running (from ${existing === undefined ? 'undefined' : 'stopped'})`, { vm: spec.id, vcpus: spec.vcpus, memMiB: spec.memMiB })
  }

  /** A VM definition from a spec: vcpus and memory, and what `extra` says of the load. */
  private definitionOf (spec: VmSpec): SimVmConfig {
    const extra = spec.extra ?? {}
    return {
      id: spec.id,
      vcpus: spec.vcpus,
      memMiB: spec.memMiB,
      ...(typeof extra['pattern'] === 'string' || isPatternSpec(extra['pattern']) ? { pattern: extra['pattern'] as string | PatternSpec } : {}),
      ...(typeof extra['cpuMean'] === 'number' ? { cpuMean: extra['cpuMean'] } : {}),
      ...(typeof extra['memMean'] === 'number' ? { memMean: extra['memMean'] } : {}),
      ...(typeof extra['dirtyMiBps'] === 'number' ? { dirtyMiBps: extra['dirtyMiBps'] } : {})
    }
  }

  async stop (id: VmId, signal?: AbortSignal): Promise<void> {
    this.enter('stop', signal)
    const vm = this.get(id)
    if (vm.runStatus === 'shutdown') return
    this.endMigrations(vm)
    const from = vm.runStatus
    vm.runStatus = 'shutdown'
    this.persist()
    this.log.info(`vm ${id} became stopped (from ${from})`, { vm: id })
  }

  // -------------------------------------------------------------------------------------------
  // What recovery and HA ask.

  async describe (id: VmId, signal?: AbortSignal): Promise<{ runStatus: string, migration: string, spec: VmSpec } | null> {
    this.enter('describe', signal)
    const vm = this.vms.get(id)
    if (vm === undefined) return null
    return { runStatus: vm.runStatus, migration: vm.out?.status ?? vm.inc?.status ?? 'none', spec: this.specOf(vm) }
  }

  /**
   * The spec the migration protocol carries to the target: vcpus, memory and the definition of
   * the load, with the pattern resolved (a trace travels as its samples, so that the target
   * needs no copy of the file; a trace too long for the wire travels by name).
   */
  private specOf (vm: SimVm): VmSpec {
    const extra: Record<string, unknown> = { pattern: vm.pattern, memMean: vm.memMean, dirtyMiBps: vm.dirtyMiBps }
    if (vm.config.cpuMean !== undefined) extra.cpuMean = vm.config.cpuMean
    if (JSON.stringify(extra).length > EXTRA_JSON_MAX && vm.config.pattern !== undefined) extra.pattern = vm.config.pattern
    return { id: vm.id, vcpus: vm.vcpus, memMiB: vm.memMiB, extra }
  }

  async resume (id: VmId, signal?: AbortSignal): Promise<void> {
    this.enter('resume', signal)
    const vm = this.get(id)
    if (vm.runStatus === 'running') return
    if (vm.runStatus === 'inmigrate' || vm.runStatus === 'shutdown') throw new DriverError('DRIVER_FAILED', `vm ${id}: cannot resume a VM that is ${vm.runStatus}`)
    const from = vm.runStatus
    vm.runStatus = 'running'
    this.log.info(`vm ${id} resumed (from ${from})`, { vm: id })
  }

  async pause (id: VmId, signal?: AbortSignal): Promise<void> {
    this.enter('pause', signal)
    const vm = this.get(id)
    if (vm.runStatus !== 'running') throw new DriverError('DRIVER_FAILED', `vm ${id}: cannot pause a VM that is ${vm.runStatus}`)
    vm.runStatus = 'paused'
    this.log.info(`vm ${id} paused`, { vm: id })
  }

  /** Removes VM `id` unless its guest runs here (an incoming copy, or a paused source); VM_RUNNING otherwise. */
  async killIfNotRunning (id: VmId, signal?: AbortSignal): Promise<void> {
    this.enter('killIfNotRunning', signal)
    const vm = this.get(id)
    if (vm.runStatus === 'running' || vm.out?.status === 'postcopy-active') throw new DriverError('VM_RUNNING', `vm ${id}: the guest is ${vm.runStatus} (${vm.out?.status ?? 'none'}); not killing it`)
    this.endMigrations(vm)
    this.vms.delete(id)
    this.persist()
    this.log.info(`vm ${id} removed (was ${vm.runStatus})`, { vm: id })
  }

  // -------------------------------------------------------------------------------------------
  // Target side.

  async prepareIncoming (spec: VmSpec, listenAddr: string, _opts: IncomingOptions = {}, signal?: AbortSignal): Promise<{ uri: string }> {
    this.enter('prepareIncoming', signal)
    const hp = hostPort(listenAddr)
    if (hp === null) throw new DriverError('DRIVER_FAILED', `vm ${spec.id}: listen address "${listenAddr}" is not host:port`)
    const existing = this.vms.get(spec.id)
    if (existing !== undefined && existing.runStatus !== 'shutdown') throw new DriverError('DRIVER_FAILED', `vm ${spec.id} is already here (${existing.runStatus})`)
    const vm = this.makeVm(this.definitionOf(spec), null)
    vm.runStatus = 'inmigrate'
    const server = net.createServer()
    const inc: InMigration = { status: 'setup', server, sock: null }
    vm.inc = inc
    server.on('connection', sock => this.onIncoming(vm, inc, sock))
    try {
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject)
        server.listen(hp.port, hp.host, () => { server.off('error', reject); resolve() })
      })
    } catch (err) {
      server.close()
      throw new DriverError('DRIVER_FAILED', `vm ${spec.id}: cannot listen on ${listenAddr}`, { cause: err })
    }
    server.unref()
    this.vms.set(spec.id, vm)
    const a = server.address()
    const port = typeof a === 'object' && a !== null ? a.port : hp.port
    const host = hp.host.includes(':') ? `[${hp.host}]` : hp.host
    this.log.info(`vm ${spec.id} waiting for an incoming migration on ${host}:${port}`, { vm: spec.id })
    return { uri: `tcp:${host}:${port}` }
  }

  private onIncoming (vm: SimVm, inc: InMigration, sock: net.Socket): void {
    if (inc.sock !== null || this.vms.get(vm.id) !== vm || vm.runStatus !== 'inmigrate') { sock.destroy(); return }
    inc.sock = sock
    inc.server.close()
    sock.on('error', () => {})
    onFrames(sock, f => {
      if (f.t === 'hello') {
        if (f.vm !== vm.id) { sendFrame(sock, { t: 'error', message: `this incoming copy is ${vm.id}, not ${f.vm}` }); sock.destroy(); return }
        inc.status = 'active'
        sendFrame(sock, { t: 'ready' })
      } else if (f.t === 'state' && inc.status === 'active') {
        let arrived: SimVm
        try {
          arrived = this.makeVm(f.state.config, this.now() - f.state.ageMs, f.state.seed)
        } catch (err) {
          sendFrame(sock, { t: 'error', message: err instanceof Error ? err.message : String(err) })
          sock.destroy()
          return
        }
        // The guest runs here from now on, with its load where it was on the source.
        const name = f.state.patternName
        vm.config = typeof name === 'string' ? { ...arrived.config, pattern: name } : arrived.config
        vm.pattern = arrived.pattern; vm.seed = arrived.seed; vm.cpu = arrived.cpu
        vm.memMean = arrived.memMean; vm.dirtyMiBps = arrived.dirtyMiBps; vm.startedAtMs = arrived.startedAtMs
        vm.runStatus = 'running'
        inc.status = 'completed'
        this.persist()
        sendFrame(sock, { t: 'ack' })
        this.log.info(`vm ${vm.id} became running (incoming migration completed)`, { vm: vm.id })
      } else if (f.t === 'cancel') {
        sock.destroy()
      }
    })
    sock.on('close', () => {
      if (inc.status === 'completed') return
      // As QEMU's incoming side: a stream that ends before the switch-over fails the incoming
      // migration; the copy never ran and stays until killIfNotRunning removes it.
      inc.status = 'failed'
      this.log.info(`vm ${vm.id}: incoming migration failed (the link closed before the switch-over)`, { vm: vm.id })
    })
  }

  // -------------------------------------------------------------------------------------------
  // Source side.

  async migrate (id: VmId, uri: string, params: MigrationParams, signal?: AbortSignal): Promise<void> {
    this.enter('migrate', signal)
    const vm = this.get(id)
    if (vm.runStatus !== 'running') throw new DriverError('DRIVER_FAILED', `vm ${id}: cannot migrate a VM that is ${vm.runStatus}`)
    if (vm.out !== null && (vm.out.status === 'active' || vm.out.status === 'setup' || vm.out.status === 'postcopy-active')) throw new DriverError('DRIVER_FAILED', `vm ${id}: a migration is already ${vm.out.status}`)
    const hp = hostPort(uri)
    if (hp === null || !uri.startsWith('tcp:')) throw new DriverError('DRIVER_FAILED', `vm ${id}: migration URI must be tcp:host:port, got "${uri}"`)
    const now = this.now()
    const load = this.loadAt(vm, now)
    const sock = net.connect({ host: hp.host, port: hp.port })
    const m: OutMigration = {
      status: 'setup', startedAt: now, endedAt: null, sock,
      linkBps: this.linkBps, bandwidthBps: precopyBandwidth(this.linkBps, params.maxBandwidthBytes),
      downtimeLimitMs: Math.max(1, params.downtimeLimitMs), downtimeMs: null, pausedAt: null,
      passes: 0, sentBytes: 0, residentBytes: this.memUsedMiB(vm, load) * 1048576,
      dirtyRate: dirtyRateBytesPerS(vm.dirtyMiBps, vm.vcpus, load),
      phase: null, timer: null, stateSent: false, acked: false, flushed: false, breakAtBytes: null, errorDesc: null
    }
    if (this.linkFault !== null) {
      m.breakAtBytes = this.linkFault.atFraction * m.residentBytes
      if (--this.linkFault.left <= 0) this.linkFault = null
    }
    vm.out = m
    sock.on('error', err => { m.errorDesc ??= err.message })
    try {
      await new Promise<void>((resolve, reject) => {
        const fail = (why: string): void => { reject(new Error(why)) }
        sock.once('close', () => fail(m.errorDesc ?? 'the target closed the link'))
        onFrames(sock, f => {
          if (f.t === 'ready' && m.status === 'setup') { resolve(); return }
          if (f.t === 'error') { m.errorDesc = `target: ${f.message}`; sock.destroy(); return }
          if (f.t === 'ack' && m.stateSent) { m.acked = true; this.maybeComplete(vm, m) }
        })
        sock.once('connect', () => sendFrame(sock, { t: 'hello', vm: id }))
      })
    } catch (err) {
      this.failOut(vm, m, err instanceof Error ? err.message : String(err))
      throw new DriverError('DRIVER_FAILED', `vm ${id}: migrate to ${uri}: ${m.errorDesc ?? 'failed'}`, { cause: err })
    }
    sock.removeAllListeners('close')
    sock.on('close', () => this.onLinkClosed(vm, m))
    m.status = 'active'
    this.log.info(`vm ${id} migration started to ${uri} (${params.mode}; link ${Math.round(this.linkBps * 8 / 1e6)} Mbit/s)`, { vm: id, params })
    this.startPass(vm, m, m.residentBytes)
    if (params.mode === 'postcopy') this.switchToPostcopy(vm, m)
  }

  private startPass (vm: SimVm, m: OutMigration, bytes: number): void {
    const now = this.now()
    const ms = sendMs(bytes, m.bandwidthBps)
    m.phase = { kind: 'pass', bytes, startAt: now, ms }
    const brk = m.breakAtBytes
    if (brk !== null && brk >= m.sentBytes && brk < m.sentBytes + bytes) {
      m.timer = after(sendMs(brk - m.sentBytes, m.bandwidthBps), () => {
        m.errorDesc = 'the migration link broke (injected fault)'
        m.sock.destroy()
      })
      return
    }
    m.timer = after(ms, () => this.endPass(vm, m))
  }

  private endPass (vm: SimVm, m: OutMigration): void {
    const p = m.phase
    if (p === null || m.status !== 'active') return
    m.timer = null
    m.sentBytes += p.bytes
    m.passes++
    // The guest dirtied memory while the pass ran, at the rate its load gives now.
    m.dirtyRate = vm.runStatus === 'running' ? dirtyRateBytesPerS(vm.dirtyMiBps, vm.vcpus, this.loadAt(vm, this.now())) : 0
    const pending = dirtiedDuring(p.ms, m.dirtyRate, m.residentBytes)
    if (canStop(pending, m.linkBps, m.downtimeLimitMs)) this.stopAndCopy(vm, m, pending)
    else this.startPass(vm, m, pending)
  }

  /** Pauses the guest and sends the rest at the link speed, then its state. */
  private stopAndCopy (vm: SimVm, m: OutMigration, pending: number): void {
    const now = this.now()
    vm.runStatus = 'finish-migrate'
    m.pausedAt = now
    this.sendRest(m, 'stop', pending, now, () => {
      vm.runStatus = 'postmigrate'
      this.sendState(vm, m)
    })
  }

  /** Sends the last `pending` bytes at the link speed (after the pause, or in post-copy), then `done`. */
  private sendRest (m: OutMigration, kind: 'stop' | 'postcopy', pending: number, now: number, done: () => void): void {
    const ms = sendMs(pending, m.linkBps)
    m.phase = { kind, bytes: pending, startAt: now, ms }
    m.timer = after(ms, () => {
      m.timer = null
      m.sentBytes += pending
      m.phase = null
      m.flushed = true
      done()
    })
  }

  private sendState (vm: SimVm, m: OutMigration): void {
    const now = this.now()
    const ageMs = vm.startedAtMs === null ? 0 : now - vm.startedAtMs
    m.stateSent = true
    const name = typeof vm.config.pattern === 'string' ? { patternName: vm.config.pattern } : {}
    sendFrame(m.sock, { t: 'state', state: { config: { ...vm.config, pattern: vm.pattern, memMean: vm.memMean, dirtyMiBps: vm.dirtyMiBps }, seed: vm.seed, ageMs, ...name } })
  }

  private maybeComplete (vm: SimVm, m: OutMigration): void {
    if (!m.stateSent || !m.acked || !m.flushed || m.status === 'completed') return
    const now = this.now()
    this.settlePhase(m)
    m.status = 'completed'
    m.endedAt = now
    if (m.pausedAt !== null) m.downtimeMs = Math.max(0, now - m.pausedAt)
    m.sock.end()
    this.log.info(`vm ${vm.id} migration completed in ${now - m.startedAt} ms (${m.passes} passes, ${Math.round(m.sentBytes / 1048576)} MiB, downtime ${m.downtimeMs ?? 0} ms)`, { vm: vm.id })
  }

  /**
   * The link closed: before the state was sent the migration failed; after it, the target may
   * run the guest, so this copy stays paused (it runs again only when the migration machine says
   * so, R1/R2) and the migration completes when its modelled time is up.
   */
  private onLinkClosed (vm: SimVm, m: OutMigration): void {
    if (m.status === 'completed' || m.status === 'cancelled' || m.status === 'failed') return
    if (!m.stateSent) { this.failOut(vm, m, m.errorDesc ?? 'the target closed the link'); return }
    m.acked = true
    this.maybeComplete(vm, m)
  }

  /** Counts what the current phase sent until now and ends it. */
  private settlePhase (m: OutMigration): void {
    if (m.timer !== null) clearTimeout(m.timer)
    m.timer = null
    const p = m.phase
    if (p !== null) m.sentBytes += p.ms > 0 ? Math.min(p.bytes, (p.bytes * (this.now() - p.startAt)) / p.ms) : p.bytes
    m.phase = null
  }

  private failOut (vm: SimVm, m: OutMigration, why: string): void {
    this.settlePhase(m)
    m.status = 'failed'
    m.errorDesc = why
    m.endedAt = this.now()
    m.sock.destroy()
    if (vm.runStatus === 'finish-migrate') vm.runStatus = 'running'
    this.log.warn(`vm ${vm.id} migration failed: ${why}; the guest runs here`, { vm: vm.id })
  }

  /** Post-copy: the guest moves to the target now; what the passes had not sent follows at the link speed. */
  private switchToPostcopy (vm: SimVm, m: OutMigration): void {
    const now = this.now()
    const p = m.phase
    if (m.timer !== null) clearTimeout(m.timer)
    m.timer = null
    let pending = 0
    if (p !== null && p.kind === 'pass') {
      const sent = p.ms > 0 ? Math.min(p.bytes, (p.bytes * (now - p.startAt)) / p.ms) : p.bytes
      m.sentBytes += sent
      pending = Math.min(m.residentBytes, p.bytes - sent + dirtiedDuring(now - p.startAt, m.dirtyRate, m.residentBytes))
    }
    vm.runStatus = 'postmigrate'
    m.pausedAt = now
    m.status = 'postcopy-active'
    this.sendState(vm, m)
    this.sendRest(m, 'postcopy', pending, now, () => { this.maybeComplete(vm, m) })
    this.log.info(`vm ${vm.id} migration switched to post-copy (${Math.round(pending / 1048576)} MiB left)`, { vm: vm.id })
  }

  async startPostcopy (id: VmId, signal?: AbortSignal): Promise<void> {
    this.enter('startPostcopy', signal)
    const vm = this.get(id)
    const m = vm.out
    if (m === null || (m.status !== 'active' && m.status !== 'postcopy-active')) throw new DriverError('DRIVER_FAILED', `vm ${id}: no migration to switch to post-copy (${m?.status ?? 'none'})`)
    if (m.status === 'postcopy-active' || m.stateSent || m.phase?.kind === 'stop') return // already switching over
    this.switchToPostcopy(vm, m)
  }

  async progress (id: VmId, signal?: AbortSignal): Promise<MigrationProgress> {
    this.enter('progress', signal)
    const vm = this.get(id)
    const now = this.now()
    const m = vm.out
    const base: MigrationProgress = {
      status: 'none', totalTimeMs: 0, downtimeMs: null, expectedDowntimeMs: null, transferredBytes: 0, remainingBytes: 0,
      totalBytes: vm.memMiB * 1048576, dirtySyncCount: 0, dirtyPagesRate: 0, pageSizeBytes: 4096, mbps: 0,
      postcopyRequests: 0, cpuThrottlePercent: 0, errorDesc: null
    }
    if (m === null) return vm.inc === null ? base : { ...base, status: vm.inc.status }
    const p = m.phase
    const inPhase = p === null ? 0 : p.ms > 0 ? Math.min(p.bytes, (p.bytes * (now - p.startAt)) / p.ms) : p.bytes
    const remaining = p === null ? 0 : p.bytes - inPhase
    const rate = p === null ? 0 : p.kind === 'pass' ? m.bandwidthBps : m.linkBps
    return {
      ...base,
      status: m.status,
      totalTimeMs: (m.endedAt ?? now) - m.startedAt,
      downtimeMs: m.status === 'completed' ? m.downtimeMs ?? 0 : null,
      expectedDowntimeMs: m.status === 'active' ? sendMs(remaining, m.linkBps) : null,
      transferredBytes: Math.round(m.sentBytes + inPhase),
      remainingBytes: Math.round(remaining),
      dirtySyncCount: m.passes,
      dirtyPagesRate: m.dirtyRate / 4096,
      mbps: m.status === 'completed' || m.status === 'failed' || m.status === 'cancelled' ? 0 : (rate * 8) / 1e6,
      errorDesc: m.errorDesc
    }
  }

  async cancel (id: VmId, signal?: AbortSignal): Promise<void> {
    this.enter('cancel', signal)
    const vm = this.get(id)
    const m = vm.out
    if (m === null) return
    if (m.status === 'postcopy-active') throw new DriverError('DRIVER_FAILED', `vm ${id}: cannot cancel a migration in post-copy; the target holds the newest state`)
    if (m.status !== 'active' && m.status !== 'setup') return
    if (m.stateSent) return // the state is on its way: the switch-over wins the race, as a cancel during QEMU's last phase
    this.settlePhase(m)
    m.status = 'cancelled'
    m.endedAt = this.now()
    sendFrame(m.sock, { t: 'cancel' })
    m.sock.end()
    if (vm.runStatus === 'finish-migrate') vm.runStatus = 'running'
    this.log.info(`vm ${id} migration cancelled`, { vm: id })
  }

  async setDowntimeLimit (id: VmId, ms: number, signal?: AbortSignal): Promise<void> {
    this.enter('setDowntimeLimit', signal)
    const m = this.get(id).out
    if (m !== null) m.downtimeLimitMs = Math.max(1, ms)
  }

  async balloon (id: VmId, mib: number, signal?: AbortSignal): Promise<void> {
    this.enter('balloon', signal)
    const vm = this.get(id)
    if (!(mib > 0) || mib > vm.memMiB) throw new DriverError('DRIVER_FAILED', `vm ${id}: balloon target ${mib} MiB outside (0, ${vm.memMiB}]`)
    vm.balloonMiB = mib
  }

  async measureDirtyRate (id: VmId, _opts?: unknown, signal?: AbortSignal): Promise<number> {
    this.enter('describe', signal)
    const vm = this.get(id)
    return vm.runStatus === 'running' ? dirtyRateBytesPerS(vm.dirtyMiBps, vm.vcpus, this.loadAt(vm, this.now())) : 0
  }

  residentGuestBytes (id: VmId): number | null {
    const vm = this.vms.get(id)
    if (vm === undefined) return null
    return this.memUsedMiB(vm, vm.runStatus === 'running' ? this.loadAt(vm, this.now()) : 0) * 1048576
  }

  /** Closes the links and listeners of a VM's migrations. */
  private endMigrations (vm: SimVm): void {
    const m = vm.out
    if (m !== null) {
      if (m.timer !== null) clearTimeout(m.timer)
      m.timer = null
      if (m.status === 'active' || m.status === 'setup') { m.status = 'cancelled'; m.endedAt = this.now() }
      m.sock.destroy()
    }
    const inc = vm.inc
    if (inc !== null) {
      inc.server.close()
      inc.sock?.destroy()
    }
  }

  setFault (op: SimDriverOp, fault: SimFault | null): void {
    if (fault === null) this.faults.delete(op)
    else this.faults.set(op, { code: fault.code, left: fault.times ?? Infinity })
  }

  setLinkFault (fault: SimLinkFault | null): void {
    if (fault === null) { this.linkFault = null; return }
    const atFraction = fault.atFraction ?? 0.5
    if (!(atFraction >= 0 && atFraction < 1)) throw new DriverError('DRIVER_FAILED', `link fault atFraction must be in [0, 1) (got ${atFraction})`)
    this.linkFault = { atFraction, left: fault.times ?? 1 }
  }

  async close (): Promise<void> {
    this.closed = true
    for (const vm of this.vms.values()) this.endMigrations(vm)
  }
}

function isPatternSpec (v: unknown): v is PatternSpec {
  return typeof v === 'object' && v !== null && typeof (v as { kind?: unknown }).kind === 'string'
}

/**
 * Factory (STYLE §1.4): `simDriver({ vms, seed })({ logger })`. Trace files are read here,
 * synchronously: a bad configuration fails at start-up (TraceFileError, DriverError), never later.
 */
export function simDriver (init: SimDriverInit = {}): (components: SimDriverComponents) => SimDriver {
  return components => new SimDriverImpl(init, components)
}
