/**
 * The frozen cluster view the policies decide over. The agent core builds it from its gossiped
 * membership and load reports; the trace simulator builds it from its model. Policies never
 * mutate it (callers may `Object.freeze` it) and return plain decisions.
 *
 * CPU is measured in MIPS-like units (HostCapacity.cpuMipsPerCore x cores), so heterogeneous
 * hosts compare. Utilisation fractions are demand / capacity and may exceed 1 (over-subscribed).
 */
/** Opaque host identity (the agent's hex Noise public key; in the simulators any string). */
export type HostId = string
export type VmId = string

/**
 * A deterministic source of random numbers, which the caller passes in (policies own no
 * generator): the same seed gives the same sequence.
 */
export interface RandomSource {
  /** Uniform integer in [0, n). */
  int: (n: number) => number
}
/** Makes a random source from a seed. */
export type SeededRandom = (seed: number) => RandomSource

export interface VmView {
  id: VmId
  /** Host that runs it now. */
  host: HostId
  /** Nominal CPU size (what it may ask for at most), MIPS. */
  cpuMips: number
  /** Current CPU demand, MIPS. */
  cpuDemandMips: number
  /** Memory size, MiB. It sets the migration time. */
  memMiB: number
  /** Recent CPU demand as a fraction of cpuMips, oldest first (may be empty). */
  history: readonly number[]
  /** Whether it is migrating now (never selected again while it is). */
  migrating: boolean
  /** Virtual CPUs: its demand may spread over this many of a host's cores. @default 1 */
  vcpus?: number
}

export interface HostView {
  id: HostId
  /** Total CPU, MIPS. */
  cpuMips: number
  /** Speed of one core, MIPS: a single-vCPU VM cannot ask for more than this. */
  coreMips: number
  memMiB: number
  /** Network speed, Mbit/s: sets migration time. */
  netMbps: number
  /** Power in W at 0 %, 10 %, ..., 100 % CPU (11 points). Empty = unknown (power-blind). */
  powerCurveW: readonly number[]
  /** Power drawn when switched off / asleep, W. @default 0 */
  sleepW?: number
  vms: readonly VmView[]
  /** CPU and memory already promised to incoming VMs (reservations), counted as used. */
  reservedMips: number
  reservedMemMiB: number
  /** Host utilisation history (demand / cpuMips), oldest first. */
  history: readonly number[]
  /** False if the host is asleep or powered down (no VMs, zero load). */
  active: boolean
  /**
   * Memory the host is short of: over its memory target with nothing its guests could give back
   * (its balloon loop's unmet memory), MiB. > 0 makes the host stressed, as an overloaded CPU does,
   * and no target for others. @default 0
   */
  memShortMiB?: number
  /**
   * Memory the host admits beyond `memMiB`: what its guests could give back now (its balloon
   * loop's reclaimable memory), within the configured overcommit ratio (memOvercommitMiB). VMs'
   * configured memory may add up to memMiB + this. @default 0
   */
  memOverMiB?: number
  /**
   * Its CPU is contended but its CPU allocation serves the VMs that must be served (QoS classes):
   * a CPU overload it reports is handled inside it, so it is not stressed by its CPU. @default false
   */
  cpuResolved?: boolean
}

export interface ClusterView {
  hosts: readonly HostView[]
  rules: RuleSet
  /** Logical time in ticks (used by the anti-thrash guards). */
  tick: number
}

export type RuleKind = 'affinity' | 'anti-affinity'

/** VM-VM rule: affinity = keep together on one host; anti-affinity = never two on one host. */
export interface VmVmRule { kind: RuleKind, vms: readonly VmId[], hard: boolean, weight?: number }
/** VM-host rule: affinity = only on these hosts; anti-affinity = never on these hosts. */
export interface VmHostRule { kind: RuleKind, vm: VmId, hosts: readonly HostId[], hard: boolean, weight?: number }

export interface RuleSet { vmVm: readonly VmVmRule[], vmHost: readonly VmHostRule[] }

export const NO_RULES: RuleSet = Object.freeze({ vmVm: [], vmHost: [] })

/** One move a policy proposes. */
/** reason: overload (CPU or memory), underload (consolidation), balance, or rule (a hard rule broken where the VM runs). */
export interface Move { vm: VmId, from: HostId, to: HostId, reason: 'overload' | 'underload' | 'balance' | 'rule' }

/** Demand of a host (MIPS), including reservations. */
export function hostDemandMips (h: HostView): number {
  let s = h.reservedMips
  for (const v of h.vms) s += v.cpuDemandMips
  return s
}

export function hostMemUsedMiB (h: HostView): number {
  let s = h.reservedMemMiB
  for (const v of h.vms) s += v.memMiB
  return s
}

/**
 * Overcommit a host admits, MiB: beyond its memory only what its guests could give back now, and
 * never beyond memory x (ratio - 1). Ratio 1 (or less) admits none.
 */
export function memOvercommitMiB (memMiB: number, reclaimableMiB: number, ratio: number): number {
  return Math.max(0, Math.min(Math.max(0, reclaimableMiB), memMiB * (Math.max(1, ratio) - 1)))
}

/** Memory a host admits: its own, plus the overcommit it may take (HostView.memOverMiB). */
export function hostMemAdmitMiB (h: Pick<HostView, 'memMiB' | 'memOverMiB'>): number {
  return h.memMiB + Math.max(0, h.memOverMiB ?? 0)
}

export function hostUtil (h: HostView): number { return h.cpuMips > 0 ? hostDemandMips(h) / h.cpuMips : 0 }

/** Migration time of `vm` to/from a host with link `netMbps`, using half the link (as CloudSim). */
export function migrationSeconds (memMiB: number, netMbps: number, linkShare = 0.5): number {
  const mbPerSec = netMbps * linkShare / 8
  return mbPerSec > 0 ? memMiB / mbPerSec : Infinity
}
