/**
 * HA configuration and the inventory of protected VMs. Every interval is in ticks. The one
 * formula that matters for safety is `requiredFenceDelayTicks` (see index.ts for the argument):
 * `validateHaConfig` refuses a fenceDelayTicks below it, so a misconfigured cluster fails at
 * start-up instead of splitting its brain.
 */
import { ConfigError } from '../config.js'
import type { HostId, VmId } from '../types.js'

export interface HaConfig {
  /** Ticks between two HA heartbeats to each member. Each carries the echo that renews the sender's lease. */
  beatIntervalTicks: number
  /**
   * A member counts towards this host's majority only while it has echoed a heartbeat this host
   * sent at most leaseTicks ago (a round trip, so a one-way cut is seen by both ends).
   * Must be >= 2 * beatIntervalTicks + 2 (a beat, its echo, one tick of delay each way).
   */
  leaseTicks: number
  /** Ticks without a majority before the fence stops or pauses the local HA VMs (rides out blips). */
  fenceAfterTicks: number
  /** Ticks without a majority after which the watchdog is no longer pinged unless every HA VM here is fenced. > fenceAfterTicks. */
  fenceTicks: number
  /** Watchdog timeout, ticks: a host whose agent stops pinging is reset this long after the last ping. */
  watchdogTicks: number
  /** A claim that has not collected a majority of grants within this many ticks is abandoned (and its VM never started under it). */
  claimTimeoutTicks: number
  /** Retransmit claim requests and releases this often while they are pending. */
  claimRetryTicks: number
  /** Base backoff after an abandoned claim; a seeded jitter of up to as much again is added. */
  claimBackoffTicks: number
  /** The owner of a running HA VM repeats 'held' this often, so members that missed grants learn it. */
  heldRefreshTicks: number
  /**
   * A member grants the takeover of a VM whose owner it holds dead only when it has heard nothing
   * from that owner for this many ticks. Must be >= requiredFenceDelayTicks(config).
   */
  fenceDelayTicks: number
  /** Bound on the rate difference of two hosts' clocks, parts per million (both directions are added). */
  clockDriftPpm: number
  /** Default failed start attempts before a VM is left alone (status 'failed'). */
  maxAttempts: number
  /** Claims this host runs at once (restarts in flight). */
  maxClaimsInFlight: number
}

/**
 * Production profile, tick 100 ms: beats every 0.5 s, lease 1.5 s, fence 2.5 s (stop after 1 s
 * without a majority), watchdog 8 s (softdog is loaded with soft_margin=8; a hardware watchdog
 * must time out within 8 s), claims 1.5 s. The fence delay is the smallest the timing argument
 * allows for these (requiredFenceDelayTicks: 153 ticks, 15.3 s): a dead host's VMs restart about
 * 15 s after its last frame, against about 2 min for Proxmox HA. Every host must use the same
 * timing (the mesh hello refuses a host whose ha.timing differs).
 */
export function defaultHaConfig (): HaConfig {
  const c: HaConfig = {
    beatIntervalTicks: 5,
    leaseTicks: 15,
    fenceAfterTicks: 10,
    fenceTicks: 25,
    watchdogTicks: 80,
    claimTimeoutTicks: 15,
    claimRetryTicks: 3,
    claimBackoffTicks: 10,
    heldRefreshTicks: 30,
    fenceDelayTicks: 0,
    clockDriftPpm: 1000,
    maxAttempts: 3,
    maxClaimsInFlight: 4
  }
  c.fenceDelayTicks = requiredFenceDelayTicks(c)
  return c
}

/**
 * Short timers for real agents on one machine (the demo, the QEMU HA tests), 100 ms ticks, with
 * the minimum safe fence delay: (lease 10 + fence 15 + watchdog 40 + 2 x claim 10 + 2) x 1.002,
 * rounded up, 88 ticks (8.8 s). The 4 s watchdog is long enough that a loaded machine's pauses
 * do not reset a healthy agent.
 */
export function localHaConfig (): HaConfig {
  const c: HaConfig = {
    beatIntervalTicks: 2,
    leaseTicks: 10,
    fenceAfterTicks: 8,
    fenceTicks: 15,
    watchdogTicks: 40,
    claimTimeoutTicks: 10,
    claimRetryTicks: 3,
    claimBackoffTicks: 5,
    heldRefreshTicks: 20,
    fenceDelayTicks: 0,
    clockDriftPpm: 1000,
    maxAttempts: 3,
    maxClaimsInFlight: 4
  }
  c.fenceDelayTicks = requiredFenceDelayTicks(c)
  return c
}

/** Short timers for the simulator (one tick of delay per hop, exact clocks). */
export function simHaConfig (): HaConfig {
  return {
    beatIntervalTicks: 1,
    leaseTicks: 6,
    fenceAfterTicks: 2,
    fenceTicks: 6,
    watchdogTicks: 10,
    claimTimeoutTicks: 8,
    claimRetryTicks: 2,
    claimBackoffTicks: 3,
    heldRefreshTicks: 10,
    fenceDelayTicks: 40,
    clockDriftPpm: 0,
    maxAttempts: 3,
    maxClaimsInFlight: 4
  }
}

/**
 * The smallest safe fence delay: lease + fence + watchdog + 2 claim timeouts + 2 ticks of
 * rounding, stretched by the worst clock-rate difference (2 x drift). index.ts explains each term.
 */
export function requiredFenceDelayTicks (c: Pick<HaConfig, 'leaseTicks' | 'fenceTicks' | 'watchdogTicks' | 'claimTimeoutTicks' | 'clockDriftPpm'>): number {
  const base = c.leaseTicks + c.fenceTicks + c.watchdogTicks + 2 * c.claimTimeoutTicks + 2
  return Math.ceil(base * (1 + 2 * c.clockDriftPpm / 1e6))
}

const positive: Array<keyof HaConfig> = [
  'beatIntervalTicks', 'leaseTicks', 'fenceTicks', 'watchdogTicks', 'claimTimeoutTicks', 'claimRetryTicks',
  'claimBackoffTicks', 'heldRefreshTicks', 'fenceDelayTicks', 'maxAttempts', 'maxClaimsInFlight'
]

export function validateHaConfig (c: HaConfig): HaConfig {
  for (const k of positive) {
    const v = c[k]
    if (!Number.isInteger(v) || v < 1) throw new ConfigError(`ha.${k} must be a positive integer (got ${String(v)})`, `ha.${k}`)
  }
  if (!Number.isInteger(c.fenceAfterTicks) || c.fenceAfterTicks < 0) throw new ConfigError('ha.fenceAfterTicks must be a non-negative integer', 'ha.fenceAfterTicks')
  if (!(c.clockDriftPpm >= 0 && c.clockDriftPpm < 100_000)) throw new ConfigError('ha.clockDriftPpm must be in [0, 100000)', 'ha.clockDriftPpm')
  if (c.leaseTicks < 2 * c.beatIntervalTicks + 2) throw new ConfigError('ha.leaseTicks must be >= 2 * beatIntervalTicks + 2 (a beat and its echo)', 'ha.leaseTicks')
  if (c.fenceAfterTicks >= c.fenceTicks) throw new ConfigError('ha.fenceAfterTicks must be < ha.fenceTicks (the stop needs time before the watchdog is withheld)', 'ha.fenceAfterTicks')
  if (c.claimRetryTicks >= c.claimTimeoutTicks) throw new ConfigError('ha.claimRetryTicks must be < ha.claimTimeoutTicks', 'ha.claimRetryTicks')
  const need = requiredFenceDelayTicks(c)
  if (c.fenceDelayTicks < need) {
    throw new ConfigError(`ha.fenceDelayTicks must be >= ${need} (lease + fence + watchdog + 2 x claimTimeout + 2, x (1 + 2 x drift)); got ${c.fenceDelayTicks}`, 'ha.fenceDelayTicks')
  }
  return c
}

/** Where a restarted VM boots from. */
export type HaSource =
  /** Its disks are on shared storage (Ceph, NFS, iSCSI): start the same definition elsewhere. */
  | { kind: 'shared', definition: string }
  /** Boot a fresh copy from an image (stateless VMs). */
  | { kind: 'image', image: string }

/** One protected VM, as the operator configured it (`starling ha add`); agreed like the rules. */
export interface HaVmSpec {
  id: VmId
  /** Host that runs it when the cluster starts (its claim of epoch 0). */
  home: HostId
  /** Higher restarts first. @default 0 */
  priority?: number
  /** Within one priority, lower restarts first; ties by id. @default 0 */
  order?: number
  cpuMips: number
  memMiB: number
  source: HaSource
  /** What the fence does to it: stop (destroy) or pause (resume if the host regains its majority before a takeover). @default 'stop' */
  fencePolicy?: 'stop' | 'pause'
  /** Failed start attempts before it is left alone. @default config.maxAttempts */
  maxAttempts?: number
  /**
   * The cluster configuration version that protected it (absent or 0: the files, at start-up).
   * Its claims' epochs start at haEpochBase(since) (index.ts: re-protection).
   */
  since?: number
}

/** Claims of one protection occupy epochs [since x SPAN, (since + 1) x SPAN): a later protection's claims rank above every earlier one's. */
export const HA_EPOCH_SPAN = 2 ** 32
/** since x SPAN stays a safe integer (and a uint64 on the wire) below this. */
export const HA_SINCE_MAX = 2 ** 20

/** The epoch of a protection's first claim (its home's). */
export function haEpochBase (since: number | undefined): number { return (since ?? 0) * HA_EPOCH_SPAN }

/** One configured member. A tie-breaker counts for the majority but never runs VMs (QDevice-like). */
export interface HaMemberSpec {
  id: HostId
  cpuMips: number
  memMiB: number
  /** Speed of one core (a VM cannot ask for more). @default cpuMips */
  coreMips?: number
  tieBreaker?: boolean
}

export function validateHaInventory (members: HaMemberSpec[], vms: HaVmSpec[]): void {
  const ids = new Set<HostId>()
  for (const m of members) {
    if (ids.has(m.id)) throw new ConfigError(`ha: member ${m.id} listed twice`)
    ids.add(m.id)
  }
  const voters = members.filter(m => m.tieBreaker !== true).length
  if (voters === 2 && members.length === 2) throw new ConfigError('ha: a two-host cluster needs a tie-breaker member (a third agent without VMs)')
  const vmIds = new Set<VmId>()
  for (const v of vms) {
    if (vmIds.has(v.id)) throw new ConfigError(`ha: vm ${v.id} listed twice`)
    vmIds.add(v.id)
    const home = members.find(m => m.id === v.home)
    if (home === undefined) throw new ConfigError(`ha: vm ${v.id} home ${v.home} is not a member`)
    if (home.tieBreaker === true) throw new ConfigError(`ha: vm ${v.id} home ${v.home} is a tie-breaker`)
    if (!(v.cpuMips >= 0 && v.memMiB >= 0)) throw new ConfigError(`ha: vm ${v.id} needs non-negative cpuMips and memMiB`)
    if (v.since !== undefined && !(Number.isSafeInteger(v.since) && v.since >= 0 && v.since < HA_SINCE_MAX)) throw new ConfigError(`ha: vm ${v.id} since must be a configuration version below ${HA_SINCE_MAX}`)
  }
}
