/**
 * Dynamic CPU allocation inside one host: how the CPU is split between the VMs when they want
 * more than the host has. Pure: the caller measures each VM's use and applies the result as
 * cgroup weights and quotas (cgroups v2 cpu.weight/cpu.max, v1 cpu.shares/cpu.cfs_quota_us).
 *
 * Each VM has a QoS class (high, normal, low) and a weight within its class, and an optional cap
 * in cores. Its demand is what it ran plus what it waited on a run queue at the last sample (the
 * kernel's schedstat: time runnable is time it wanted a CPU), up to its vCPUs and cap. Where the
 * wait is unknown, a VM that used (nearly) all it was allotted may want more, so its demand is
 * probed upwards (`probeFactor`).
 * The capacity is served class by class, highest first, and inside a class by weighted max-min
 * fairness (water-filling): the important VMs keep their demand, the batch VMs absorb the
 * shortfall. The allotments become CFS weights in two bands (contendedWeights): the VMs served in
 * full far above those that absorb the shortfall, each band in proportion to the allotments (CFS
 * gives each busy VM its weight's share, and what a VM leaves unused goes to the others, so
 * nothing is wasted when demand falls).
 *
 * `resolved` says whether the split serves every VM of the classes that must be served
 * (`guaranteedClass` and above): if so, the host's contention is handled inside it and it is not
 * stressed; if not, the host is stressed as before and the balancing may move a VM away.
 */
import { ConfigError } from './config-error.js'

export type QosClass = 'high' | 'normal' | 'low'
const CLASS_ORDER: readonly QosClass[] = ['high', 'normal', 'low']

export interface CpuAllocParams {
  /** A VM whose use reached this share of its allotment may want more. @default 0.9 */
  saturatedFraction: number
  /** ...then its demand is taken as its use times this, up to its vCPUs. @default 1.5 */
  probeFactor: number
  /** Allotments are raised by this share for the weights, so that a demand that grows a little is still served. @default 0.1 */
  headroomFraction: number
  /** The classes whose demand must be served for the host to count as coping: this one and those above. @default 'high' */
  guaranteedClass: QosClass
}

export function defaultCpuAllocParams (): CpuAllocParams {
  return { saturatedFraction: 0.9, probeFactor: 1.5, headroomFraction: 0.1, guaranteedClass: 'high' }
}

export function validateCpuAllocParams (p: CpuAllocParams): CpuAllocParams {
  if (!(p.saturatedFraction > 0 && p.saturatedFraction <= 1)) throw new ConfigError(`saturatedFraction must be in (0, 1] (got ${String(p.saturatedFraction)})`, 'saturatedFraction')
  if (!(p.probeFactor >= 1 && p.probeFactor <= 10)) throw new ConfigError(`probeFactor must be between 1 and 10 (got ${String(p.probeFactor)})`, 'probeFactor')
  if (!(p.headroomFraction >= 0 && p.headroomFraction <= 1)) throw new ConfigError(`headroomFraction must be between 0 and 1 (got ${String(p.headroomFraction)})`, 'headroomFraction')
  if (!CLASS_ORDER.includes(p.guaranteedClass)) throw new ConfigError(`guaranteedClass must be high, normal or low (got ${JSON.stringify(p.guaranteedClass)})`, 'guaranteedClass')
  return p
}

export interface CpuVm {
  id: string
  qos: QosClass
  /** Weight inside its class. > 0. */
  weight: number
  vcpus: number
  /** Most it may use, cores; null = no cap. */
  capCores: number | null
  /** CPU it used over the last interval, cores. */
  usedCores: number
  /** Time its threads waited runnable for a CPU over the last interval, cores; null = unknown. */
  waitCores?: number | null
  /** What it was allotted at the last step, cores; null at first. */
  allottedCores: number | null
}

export interface CpuAllotment {
  id: string
  /** Its demand as estimated, cores. */
  demandCores: number
  /** What the split gives it under full contention, cores. */
  allottedCores: number
  /** CFS weight in cgroups v2 units [1, 10000] (v1 cpu.shares = weight x 1024 / 100). */
  weight: number
  /** Quota in cores (cpu.max / cfs_quota_us), null = none. */
  quotaCores: number | null
}

export interface CpuAllocation {
  vms: CpuAllotment[]
  /** Demand exceeds the capacity. */
  contended: boolean
  /** Every VM of the guaranteed classes gets its demand. */
  resolved: boolean
  /** Demand of the guaranteed classes not served, cores. */
  unservedCores: number
}

/** Weighted max-min fair split of `cap` among demands (water-filling). */
function waterFill (items: ReadonlyArray<{ id: string, demand: number, weight: number }>, cap: number): Map<string, number> {
  const out = new Map<string, number>()
  let left = cap
  let open = items.filter(i => i.demand > 0)
  for (const i of items) out.set(i.id, 0)
  while (open.length > 0 && left > 1e-9) {
    const wsum = open.reduce((s, i) => s + i.weight, 0)
    // The most every open VM can get this round, per unit of weight.
    const level = left / wsum
    const done = open.filter(i => i.demand - (out.get(i.id) as number) <= level * i.weight + 1e-12)
    if (done.length === 0) {
      for (const i of open) out.set(i.id, (out.get(i.id) as number) + level * i.weight)
      left = 0
      break
    }
    for (const i of done) {
      const add = i.demand - (out.get(i.id) as number)
      out.set(i.id, i.demand)
      left -= add
    }
    open = open.filter(i => !done.includes(i))
  }
  return out
}

/** Weights of the VMs served in full lie in [SERVED_MIN_WEIGHT, 10000]... */
export const SERVED_MIN_WEIGHT = 1000
/** ...those that absorb the shortfall in [1, ABSORBER_MAX_WEIGHT]: a served VM outweighs any absorber 50 to 1. */
export const ABSORBER_MAX_WEIGHT = 20

/**
 * The CFS weights of a contended host. Weights proportional to the allotments would serve each
 * VM its allotment only while every VM is runnable all the time; a VM whose demand comes in bursts
 * (it sleeps, wakes, wants a CPU at once: most real services) gets only its weight's share of the
 * CPU during each burst, so a bursty high-class VM weighted 80:20 against a busy batch VM got
 * about 95 % of its demand, less the busier the host. So the VMs are weighted in two bands: those
 * served in full (allotment = demand, demand > 0) in the upper band, in proportion to their
 * allotment with headroom; those that absorb the shortfall (allotment < demand) in the lower band,
 * in proportion to their allotment among themselves. CFS being work-conserving, the absorbers
 * still get everything the served VMs leave, which is their allotment. When nobody is served in
 * full, nobody needs protecting: the weights are proportional to the allotments as they are.
 */
function contendedWeights (vms: readonly CpuVm[], demand: ReadonlyMap<string, number>, allotted: ReadonlyMap<string, number>, shareBase: number, p: CpuAllocParams): Map<string, number> {
  const out = new Map<string, number>()
  const clamp = (w: number, lo: number, hi: number): number => Math.round(Math.min(hi, Math.max(lo, w)))
  const proportional = (a: number): number => 1000 * a * (1 + p.headroomFraction) / shareBase
  const short = (id: string): boolean => (demand.get(id) as number) > (allotted.get(id) as number) + 1e-6
  const served = vms.filter(v => !short(v.id) && (demand.get(v.id) as number) > 1e-9)
  const absorbers = vms.filter(v => short(v.id))
  if (served.length === 0) {
    for (const v of vms) out.set(v.id, clamp(proportional(allotted.get(v.id) as number), 1, 10000))
    return out
  }
  const topAbsorbed = Math.max(0, ...absorbers.map(v => allotted.get(v.id) as number))
  for (const v of vms) {
    const a = allotted.get(v.id) as number
    if (short(v.id)) out.set(v.id, clamp(topAbsorbed <= 1e-9 ? 1 : ABSORBER_MAX_WEIGHT * a / topAbsorbed, 1, ABSORBER_MAX_WEIGHT))
    // Served in full (or idle: it wants nothing now, and gets the upper band's floor when it wakes).
    else out.set(v.id, clamp(10 * proportional(a), SERVED_MIN_WEIGHT, 10000))
  }
  return out
}

/** One allocation step over this host's VMs; `capacityCores` is what the VMs may use in all. */
export function allocateCpu (capacityCores: number, vms: readonly CpuVm[], p: CpuAllocParams): CpuAllocation {
  const sorted = [...vms].sort((a, b) => a.id < b.id ? -1 : a.id > b.id ? 1 : 0)
  const demand = new Map<string, number>()
  for (const v of sorted) {
    const ceiling = Math.min(v.vcpus, v.capCores ?? Infinity)
    const saturated = v.allottedCores !== null && v.usedCores >= v.allottedCores * p.saturatedFraction
    const d = v.waitCores != null ? v.usedCores + v.waitCores : saturated ? v.usedCores * p.probeFactor : v.usedCores
    demand.set(v.id, Math.max(0, Math.min(ceiling, d)))
  }
  const total = [...demand.values()].reduce((s, d) => s + d, 0)
  const contended = total > capacityCores + 1e-9
  const allotted = new Map<string, number>()
  let left = capacityCores
  for (const cls of CLASS_ORDER) {
    const members = sorted.filter(v => v.qos === cls)
    const split = waterFill(members.map(v => ({ id: v.id, demand: demand.get(v.id) as number, weight: Math.max(1e-6, v.weight) })), Math.max(0, left))
    for (const [id, a] of split) { allotted.set(id, a); left -= a }
  }
  const guaranteedUpTo = CLASS_ORDER.indexOf(p.guaranteedClass)
  let unserved = 0
  for (const v of sorted) {
    if (CLASS_ORDER.indexOf(v.qos) <= guaranteedUpTo) unserved += Math.max(0, (demand.get(v.id) as number) - (allotted.get(v.id) as number))
  }
  const shareBase = Math.max(capacityCores, 1e-6)
  const weights = contended ? contendedWeights(sorted, demand, allotted, shareBase, p) : new Map(sorted.map(v => [v.id, 100]))
  const out: CpuAllotment[] = sorted.map(v => ({ id: v.id, demandCores: demand.get(v.id) as number, allottedCores: allotted.get(v.id) as number, weight: weights.get(v.id) as number, quotaCores: v.capCores }))
  // Resolved means the allocation serves a guaranteed class: with none of them here, a contended
  // host has nobody the allocation protects, and its overload is relieved by moves as before.
  const guaranteed = sorted.some(v => CLASS_ORDER.indexOf(v.qos) <= guaranteedUpTo)
  return { vms: out, contended, resolved: unserved <= 1e-6 && (guaranteed || !contended), unservedCores: unserved }
}
