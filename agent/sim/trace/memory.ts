/**
 * Memory capacity of a trace-driven cluster: how many VMs a fixed set of hosts carries, and at
 * what service level, with no overcommit, with ballooning under an overcommit ratio, and with
 * ballooning and page sharing. The hosts run the agents' own memory policies, unchanged: the
 * balloon policy (policies/balloon.ts) and the KSM policy (policies/ksm.ts), and admit VMs by the
 * agents' overcommit rule (memOvercommitMiB: beyond its memory only what its guests could give
 * back now, never beyond memory x (ratio - 1)).
 *
 * The traces carry CPU only (PlanetLab). A guest's memory demand is modelled from them, with the
 * assumptions in MemorySimParams (every one printed with the results):
 *
 * - demand(t) = ram x (baseFraction + activeFraction x cpu(t)): a guest's working set grows with
 *   its activity; it never exceeds its configured memory;
 * - a guest holds all of its balloon in host memory (page cache fills what it does not use), so a
 *   host's resident memory is the sum of its balloons less what KSM shares;
 * - KSM, while its policy runs it, shares `sharedFraction` of the memory of every VM of a type
 *   (same image) beyond the first on a host: (n - 1) x sharedFraction x their mean balloon.
 *
 * One run: VMs are placed in trace order on the first host that admits them at the first sample
 * (CPU: demand within placement.cpuCapFraction of the host; memory: the admission rule), until a VM
 * fits nowhere. Then every sample: each host's balloon policy runs to its fixed point (the agents
 * step every second, the traces every 300 s), KSM's policy decides, and a host whose resident
 * memory exceeds its memory, or whose policy reports memory it cannot reclaim, moves out the
 * smallest VM that covers its shortfall to the first host that admits it and stays under its own
 * memory target with it (as the agents' reservation protocol and decider do; at most
 * `maxMovesPerHost` a sample; a move completes within the sample: a VM of a few GiB copies in
 * seconds, a sample is 300 s). The service level is the share
 * of VM-time spent on a host short of physical memory (its guests swap).
 */
import { decideBalloon, defaultBalloonParams, type BalloonParams, type BalloonVm } from '../../../policies/balloon.js'
import { decideKsm, defaultKsmParams, type KsmControl, type KsmParams } from '../../../policies/ksm.js'
import { memOvercommitMiB } from '../../../policies/types.js'
import type { SimModel } from './model.js'
import type { TraceDay } from './traces.js'

export interface MemorySimParams {
  /** Hosts of the cluster (host i has model type i mod types). @default 100 */
  hosts: number
  /** A guest's demand at zero CPU, share of its memory (assumption). @default 0.35 */
  baseFraction: number
  /** ...plus this share times its CPU utilisation (assumption). @default 0.4 */
  activeFraction: number
  /** Share of a VM's memory KSM merges with another VM of its type on the same host (assumption; VMware reports > 30 % for near-identical VMs, < 5 % for diverse ones). @default 0.15 */
  sharedFraction: number
  /** A host admits VMs up to this share of its CPU (demand at the first sample). @default 0.85 */
  cpuCapFraction: number
  /** Relief moves a host may start per sample. @default 2 */
  maxMovesPerHost: number
  /** Rounds of the balloon policy per sample (its fixed point; the agents step every second). @default 30 */
  policyRounds: number
  balloon: BalloonParams
  ksm: KsmParams
}

export function defaultMemorySimParams (): MemorySimParams {
  return {
    hosts: 100,
    baseFraction: 0.35,
    activeFraction: 0.4,
    sharedFraction: 0.15,
    cpuCapFraction: 0.85,
    maxMovesPerHost: 2,
    policyRounds: 30,
    balloon: defaultBalloonParams(),
    ksm: defaultKsmParams()
  }
}

export interface MemoryScenario {
  name: string
  /** Drive the balloons (else every guest keeps its configured memory). */
  balloon: boolean
  /** Drive KSM. */
  ksm: boolean
  /** migration.memOvercommitRatio. */
  ratio: number
}

export interface MemoryRunResult {
  scenario: MemoryScenario
  vmsPlaced: number
  /** Share of VM-time on a host short of physical memory. */
  shortVmTimeShare: number
  /** Host-samples short of physical memory. */
  shortHostSamples: number
  /** Relief moves started (memory). */
  migrations: number
  /** Moves that found no host to admit them. */
  stuckMoves: number
  /** Mean of the hosts' resident memory over their memory (the hosts that carry VMs). */
  meanHostMemUse: number
  /** Mean memory KSM shared over the cluster, MiB. */
  meanKsmSavedMiB: number
  /** Mean memory the balloons held back over the cluster, MiB. */
  meanBalloonedMiB: number
  /** Highest committed memory (sum of the VMs' configured memory) over a host's memory, at any sample. */
  maxCommittedRatio: number
}

interface SimVm { id: string, idx: number, type: number, ram: number, mips: number, actual: number, target: number | null }
interface SimHost { id: number, ram: number, mips: number, vms: SimVm[], ksm: KsmControl | null, reclaimable: number, unmet: number, saved: number }

function vmTypeOf (i: number, n: number, types: number): number {
  return Math.min(types - 1, Math.floor(i / Math.ceil(n / types)))
}

function demand (trace: TraceDay, vm: SimVm, step: number, p: MemorySimParams): number {
  const u = Math.min(1, Math.max(0, trace.util[vm.idx]?.[step] ?? 0))
  return vm.ram * Math.min(1, p.baseFraction + p.activeFraction * u)
}

function ksmSaved (h: SimHost, p: MemorySimParams): number {
  if (h.ksm === null || !h.ksm.run) return 0
  const groups = new Map<number, { n: number, sum: number }>()
  for (const v of h.vms) { const g = groups.get(v.type) ?? { n: 0, sum: 0 }; g.n++; g.sum += v.actual; groups.set(v.type, g) }
  let saved = 0
  for (const g of groups.values()) if (g.n >= 2) saved += (g.n - 1) * p.sharedFraction * (g.sum / g.n)
  return saved
}

/** One step of a host's memory loop at `step`: balloons to their fixed point, then KSM. */
function hostStep (h: SimHost, trace: TraceDay, step: number, sc: MemoryScenario, p: MemorySimParams, minMiB: (v: SimVm) => number): void {
  const used = (): number => h.vms.reduce((s, v) => s + v.actual, 0) - h.saved
  if (sc.balloon) {
    for (let r = 0; r < p.policyRounds; r++) {
      const vms: BalloonVm[] = h.vms.map(v => ({
        id: v.id, maxMiB: v.ram, minMiB: minMiB(v), shares: 1000, actualMiB: v.actual, targetMiB: null,
        guestFreeMiB: v.actual - demand(trace, v, step, p), statsAgeS: 0, swapping: false
      }))
      const d = decideBalloon({ totalMiB: h.ram, usedMiB: used() }, vms, p.balloon)
      h.reclaimable = d.reclaimableMiB
      h.unmet = d.unmetMiB
      if (d.changes.length === 0) break
      // The guest gets what the balloon asks at once (reclaim runs at 128 MiB/s; a sample is 300 s).
      for (const c of d.changes) { const v = h.vms.find(x => x.id === c.id); if (v !== undefined) v.actual = c.targetMiB }
    }
  } else {
    for (const v of h.vms) v.actual = v.ram
    h.reclaimable = 0
    h.unmet = 0
  }
  if (sc.ksm) {
    const committed = h.vms.reduce((s, v) => s + v.ram, 0)
    const d = decideKsm({ totalMiB: h.ram, usedMiB: h.vms.reduce((s, v) => s + v.actual, 0), committedMiB: committed, cpuShare: null }, h.ksm, p.ksm)
    h.ksm = { run: d.run, pagesToScan: d.pagesToScan, sleepMs: d.sleepMs }
    h.saved = ksmSaved(h, p)
  } else {
    h.saved = 0
  }
}

function admits (h: SimHost, vm: SimVm, cpuNow: number, sc: MemoryScenario, p: MemorySimParams): boolean {
  if (cpuNow + vm.mips > h.mips * p.cpuCapFraction) return false
  const committed = h.vms.reduce((s, v) => s + v.ram, 0)
  const over = sc.balloon ? memOvercommitMiB(h.ram, h.reclaimable, sc.ratio) : 0
  return committed + vm.ram <= h.ram + over
}

/** One scenario over one trace day. Deterministic. */
export function runMemoryScenario (trace: TraceDay, model: SimModel, sc: MemoryScenario, p: MemorySimParams): MemoryRunResult {
  const n = trace.util.length
  const hosts: SimHost[] = Array.from({ length: p.hosts }, (_, i) => {
    const t = model.hostTypes[i % model.hostTypes.length]
    if (t === undefined) throw new Error('the model has no host types')
    return { id: i, ram: t.ramMiB, mips: t.pes * t.peMips, vms: [], ksm: null, reclaimable: 0, unmet: 0, saved: 0 }
  })
  const minMiB = (v: SimVm): number => Math.round(v.ram * 0.25)
  const cpuAt = (h: SimHost, step: number): number => h.vms.reduce((s, v) => s + v.mips * Math.min(1, trace.util[v.idx]?.[step] ?? 0), 0)
  // Placement at the first sample, first fit in trace order, until a VM fits nowhere.
  let placed = 0
  for (let i = 0; i < n; i++) {
    const t = model.vmTypes[vmTypeOf(i, n, model.vmTypes.length)]
    if (t === undefined) throw new Error('the model has no VM types')
    const vm: SimVm = { id: `vm${i}`, idx: i, type: vmTypeOf(i, n, model.vmTypes.length), ram: t.ramMiB, mips: t.mips, actual: t.ramMiB, target: null }
    const u0 = Math.min(1, trace.util[i]?.[0] ?? 0)
    const h = hosts.find(x => admits(x, { ...vm, mips: vm.mips * u0 }, cpuAt(x, 0), sc, p))
    if (h === undefined) break
    h.vms.push(vm)
    hostStep(h, trace, 0, sc, p, minMiB)
    placed++
  }
  let shortVm = 0; let vmTime = 0; let shortHosts = 0; let migrations = 0; let stuck = 0
  let useSum = 0; let useN = 0; let savedSum = 0; let balloonedSum = 0
  let maxCommitted = 0
  const noteCommitted = (): void => { for (const h of hosts) maxCommitted = Math.max(maxCommitted, h.vms.reduce((s, v) => s + v.ram, 0) / h.ram) }
  noteCommitted()
  const steps = trace.samples
  for (let step = 0; step < steps; step++) {
    for (const h of hosts) hostStep(h, trace, step, sc, p, minMiB)
    // Relief: a host short of physical memory, or with memory its guests cannot give, moves VMs out.
    for (const h of hosts) {
      for (let m = 0; m < p.maxMovesPerHost; m++) {
        const resident = h.vms.reduce((s, v) => s + v.actual, 0) - h.saved
        const short = Math.max(resident - h.ram, sc.balloon ? h.unmet : 0)
        if (short <= 0 || h.vms.length <= 1) break
        const byRam = [...h.vms].sort((a, b) => a.ram - b.ram || a.idx - b.idx)
        const pick = byRam.find(v => v.ram >= short) ?? byRam[byRam.length - 1] as SimVm
        // A target admits it (the reservation's rule) and is not pushed over its own memory target
        // by it (as the decider never moves a VM to a host it would overload).
        const room = (x: SimHost): boolean => !sc.balloon || x.vms.reduce((s, v) => s + v.actual, 0) - x.saved + pick.actual <= x.ram * p.balloon.targetPercent / 100
        const target = hosts.find(x => x !== h && x.unmet <= 0 && room(x) && admits(x, { ...pick, mips: pick.mips * Math.min(1, trace.util[pick.idx]?.[step] ?? 0) }, cpuAt(x, step), sc, p))
        if (target === undefined) { stuck++; break }
        h.vms.splice(h.vms.indexOf(pick), 1)
        pick.actual = pick.ram
        target.vms.push(pick)
        migrations++
        hostStep(h, trace, step, sc, p, minMiB)
        hostStep(target, trace, step, sc, p, minMiB)
      }
    }
    for (const h of hosts) {
      if (h.vms.length === 0) continue
      const resident = h.vms.reduce((s, v) => s + v.actual, 0) - h.saved
      vmTime += h.vms.length
      if (resident > h.ram + 1e-6) { shortVm += h.vms.length; shortHosts++ }
      useSum += resident / h.ram; useN++
      maxCommitted = Math.max(maxCommitted, h.vms.reduce((s, v) => s + v.ram, 0) / h.ram)
      savedSum += h.saved
      balloonedSum += h.vms.reduce((s, v) => s + v.ram - v.actual, 0)
    }
  }
  return {
    scenario: sc,
    vmsPlaced: placed,
    shortVmTimeShare: vmTime > 0 ? shortVm / vmTime : 0,
    shortHostSamples: shortHosts,
    migrations,
    stuckMoves: stuck,
    meanHostMemUse: useN > 0 ? useSum / useN : 0,
    meanKsmSavedMiB: steps > 0 ? savedSum / steps : 0,
    meanBalloonedMiB: steps > 0 ? balloonedSum / steps : 0,
    maxCommittedRatio: maxCommitted
  }
}

export interface MemoryCapacityReport {
  day: string
  hosts: number
  vmsInTrace: number
  assumptions: Omit<MemorySimParams, 'balloon' | 'ksm'>
  /** The service level to hold: the no-overcommit run's share of VM-time short of memory (plus tolerance). */
  serviceLevel: { maxShortVmTimeShare: number, tolerance: number }
  baseline: MemoryRunResult
  /** Per configuration: every ratio tried, and the highest one that holds the service level. */
  ballooning: { runs: MemoryRunResult[], best: MemoryRunResult }
  ballooningAndSharing: { runs: MemoryRunResult[], best: MemoryRunResult }
  /** VMs carried at the same service level, over the baseline's. */
  moreVmsWithBallooning: number
  moreVmsWithBallooningAndSharing: number
}

/**
 * The experiment: the baseline (no overcommit), then ballooning and ballooning with sharing at
 * each ratio of `ratios`; for each, the run that carries the most VMs while its share of VM-time
 * short of memory stays within the baseline's plus `tolerance` (0: the same service level).
 */
export function memoryCapacity (trace: TraceDay, model: SimModel, p: MemorySimParams, ratios: readonly number[] = [1, 1.1, 1.2, 1.3, 1.4, 1.5, 1.75, 2], tolerance = 0): MemoryCapacityReport {
  const baseline = runMemoryScenario(trace, model, { name: 'no overcommit', balloon: false, ksm: false, ratio: 1 }, p)
  const limit = baseline.shortVmTimeShare + tolerance
  const sweep = (ksm: boolean): { runs: MemoryRunResult[], best: MemoryRunResult } => {
    const runs = ratios.map(r => runMemoryScenario(trace, model, { name: `${ksm ? 'ballooning + KSM' : 'ballooning'}, ratio ${r}`, balloon: true, ksm, ratio: r }, p))
    const ok = runs.filter(r => r.shortVmTimeShare <= limit)
    const best = ok.reduce<MemoryRunResult | null>((b, r) => b === null || r.vmsPlaced > b.vmsPlaced ? r : b, null) ?? baseline
    return { runs, best }
  }
  const ballooning = sweep(false)
  const both = sweep(true)
  const { balloon: _b, ksm: _k, ...assumptions } = p
  return {
    day: trace.day,
    hosts: p.hosts,
    vmsInTrace: trace.util.length,
    assumptions,
    serviceLevel: { maxShortVmTimeShare: limit, tolerance },
    baseline,
    ballooning,
    ballooningAndSharing: both,
    moreVmsWithBallooning: ballooning.best.vmsPlaced - baseline.vmsPlaced,
    moreVmsWithBallooningAndSharing: both.best.vmsPlaced - baseline.vmsPlaced
  }
}
