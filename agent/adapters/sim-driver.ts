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
 *              between samples as CloudSim's PlanetLab model does, looped at the end
 *
 * A pattern's value is the VM's CPU use as a fraction of its own vcpus. The driver reports
 * `cpuUtil` as a fraction of the host (value · vcpus / hostCpuCores), as VmSummary requires.
 * Memory used follows CPU a little: memMiB · memMean · (0.85 + 0.15 · cpu).
 *
 * Faults can be injected per operation (setFault) for tests of the runtime's error paths.
 */
import { readFileSync } from 'node:fs'
import { availableParallelism } from 'node:os'
import { isAbsolute, resolve } from 'node:path'
import type { VmId, VmSummary } from '../core/types.js'
import type { Logger } from '../ports/logger.js'
import type { HypervisorDriver, VmSpec } from '../ports/hypervisor-driver.js'
import { DriverError, TraceFileError, type DriverErrorCode } from '../lib/errors.js'

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
}

export interface SimDriverComponents {
  logger: Logger
  /** Wall or virtual clock, ms. Read once per list/start/stop call. @default Date.now */
  now?: () => number
}

export type SimDriverOp = 'list' | 'start' | 'stop'

/** An injected failure: the next `times` calls of that operation reject with `code`. */
export interface SimFault {
  code: DriverErrorCode
  /** @default Infinity */
  times?: number
}

export interface SimDriver extends HypervisorDriver {
  readonly kind: 'sim'
  /** The VMs at `nowMs`, computed from the caller's time alone (synchronous, for the simulator). */
  listAt (nowMs: number): VmSummary[]
  /** Make an operation fail (or stop failing, with null). */
  setFault (op: SimDriverOp, fault: SimFault | null): void
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
    spec = { kind: 'trace', samples: loadTrace(file), intervalMs: opts.traceIntervalMs ?? 300_000, offsetMs: 0 }
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
export function loadTrace (file: string): number[] {
  let text: string
  try {
    text = readFileSync(file, 'utf8')
  } catch (err) {
    throw new TraceFileError(file, 'cannot be read', { cause: err })
  }
  const samples: number[] = []
  const lines = text.split('\n')
  for (let i = 0; i < lines.length; i++) {
    const line = (lines[i] as string).trim()
    if (line === '') continue
    const v = Number(line)
    if (!Number.isFinite(v) || v < 0 || v > 100) throw new TraceFileError(file, `line ${i + 1}: "${line.slice(0, 40)}" is not a percentage in [0, 100]`)
    samples.push(v)
  }
  if (samples.length === 0) throw new TraceFileError(file, 'has no samples')
  return samples
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

interface SimVm {
  config: SimVmConfig
  id: VmId
  vcpus: number
  memMiB: number
  memMean: number
  cpu: PatternFn
  /** Clock reading at start; null until the first clock reading (configured VMs). */
  startedAtMs: number | null
  running: boolean
}

class SimDriverImpl implements SimDriver {
  readonly kind = 'sim' as const
  private readonly log: Logger
  private readonly now: () => number
  private readonly seed: number
  private readonly hostCpuCores: number
  private readonly vms = new Map<VmId, SimVm>()
  private readonly faults = new Map<SimDriverOp, { code: DriverErrorCode, left: number }>()
  private closed = false

  constructor (private readonly init: SimDriverInit, components: SimDriverComponents) {
    this.log = components.logger.forComponent('agent:driver')
    this.now = components.now ?? Date.now
    this.seed = (init.seed ?? 1) >>> 0
    this.hostCpuCores = init.hostCpuCores ?? availableParallelism()
    if (!(this.hostCpuCores >= 1)) throw new DriverError('DRIVER_FAILED', `hostCpuCores must be >= 1 (got ${this.hostCpuCores})`)
    for (const vm of init.vms ?? []) {
      if (this.vms.has(vm.id)) throw new DriverError('DRIVER_FAILED', `vm ${vm.id} is configured twice`)
      this.vms.set(vm.id, this.makeVm(vm, null))
    }
  }

  private makeVm (vm: SimVmConfig, startedAtMs: number | null): SimVm {
    if (!(Number.isInteger(vm.vcpus) && vm.vcpus >= 1)) throw new DriverError('DRIVER_FAILED', `vm ${vm.id}: vcpus must be a positive integer (got ${vm.vcpus})`)
    checkPositive(vm.id, 'memMiB', vm.memMiB)
    const memMean = vm.memMean ?? 0.6
    checkFraction(vm.id, 'memMean', memMean)
    const spec = resolvePattern(vm, {
      ...(this.init.traceDir !== undefined ? { traceDir: this.init.traceDir } : {}),
      ...(this.init.traceIntervalMs !== undefined ? { traceIntervalMs: this.init.traceIntervalMs } : {})
    })
    return {
      config: vm,
      id: vm.id, vcpus: vm.vcpus, memMiB: vm.memMiB, memMean,
      cpu: compilePattern(spec, (this.seed ^ hashString(vm.id)) >>> 0),
      startedAtMs, running: true
    }
  }

  listAt (nowMs: number): VmSummary[] {
    const out: VmSummary[] = []
    for (const vm of this.vms.values()) {
      if (vm.startedAtMs === null) vm.startedAtMs = nowMs
      if (!vm.running) {
        out.push({ id: vm.id, vcpus: vm.vcpus, memMiB: vm.memMiB, cpuUtil: 0, memUsedMiB: 0, state: 'stopped' })
        continue
      }
      const load = vm.cpu(nowMs - vm.startedAtMs)
      out.push({
        id: vm.id,
        vcpus: vm.vcpus,
        memMiB: vm.memMiB,
        cpuUtil: Math.min(1, (load * vm.vcpus) / this.hostCpuCores),
        memUsedMiB: Math.round(vm.memMiB * vm.memMean * (0.85 + 0.15 * load)),
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

  async list (signal?: AbortSignal): Promise<VmSummary[]> {
    this.enter('list', signal)
    return this.listAt(this.now())
  }

  async start (spec: VmSpec, signal?: AbortSignal): Promise<void> {
    this.enter('start', signal)
    const nowMs = this.now()
    const existing = this.vms.get(spec.id)
    if (existing?.running === true) throw new DriverError('DRIVER_FAILED', `vm ${spec.id} is already running`)
    const extra = spec.extra ?? {}
    // A VM restarted here keeps the pattern it was configured with unless the spec names one.
    const vm = this.makeVm({
      ...existing?.config,
      id: spec.id,
      vcpus: spec.vcpus,
      memMiB: spec.memMiB,
      ...(typeof extra['pattern'] === 'string' || isPatternSpec(extra['pattern']) ? { pattern: extra['pattern'] as string | PatternSpec } : {}),
      ...(typeof extra['cpuMean'] === 'number' ? { cpuMean: extra['cpuMean'] } : {}),
      ...(typeof extra['memMean'] === 'number' ? { memMean: extra['memMean'] } : {})
    }, nowMs)
    this.vms.set(spec.id, vm)
    this.log.info(`vm ${spec.id} became running (from ${existing === undefined ? 'undefined' : 'stopped'})`, { vm: spec.id, vcpus: spec.vcpus, memMiB: spec.memMiB })
  }

  async stop (id: VmId, signal?: AbortSignal): Promise<void> {
    this.enter('stop', signal)
    const vm = this.vms.get(id)
    if (vm === undefined) throw new DriverError('VM_NOT_FOUND', `vm ${id} is not on this host`)
    if (!vm.running) return
    vm.running = false
    this.log.info(`vm ${id} became stopped (from running)`, { vm: id })
  }

  setFault (op: SimDriverOp, fault: SimFault | null): void {
    if (fault === null) this.faults.delete(op)
    else this.faults.set(op, { code: fault.code, left: fault.times ?? Infinity })
  }

  async close (): Promise<void> {
    this.closed = true
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
