/**
 * Centralised mode: CloudSim 3.0.3's dynamic consolidation, run globally at every step, as
 * the reference describes it (README.md "Overload detection", "VM selection", "Placement
 * (PABFD)", "Underload"). Detection uses the same policy functions as the agents
 * (policies/overload.ts) fed with CloudSim's host history; selection is MMT (or another policy
 * from policies/selection.ts); placement is power-aware best fit decreasing.
 *
 * CloudSim details kept for fidelity:
 * - detectors compare the *requested* MIPS (uncapped) with the threshold; the host history is
 *   the sum of the VMs' last 30 utilisations x VM MIPS / host MIPS, newest first, with trailing
 *   zeros trimmed; IQR/MAD need 12 samples, LR 10, else THR 0.7;
 * - LR and LRR are plain least squares over 10 samples in 3.0.3 (the loess weights are never
 *   applied), so LRR = LR unless `robustLrr` is set;
 * - PABFD's power increase is measured against the host's power at its last *measured*
 *   utilisation (an asleep host costs only its dynamic power), and hosts whose allocated MIPS
 *   are 0 skip the "overloaded after allocation" test;
 * - the underload pass picks the lowest non-zero utilisation host, tries to move all its VMs
 *   (switched-off hosts are not targets) and drops the plan if any VM does not fit;
 * - after planning, the allocation is restored and the migrations start in plan order.
 */
import { detectOverload, type OverloadParams } from '../../../policies/overload.js'
import { selectVm, type SelectionParams } from '../../../policies/selection.js'
import type { VmView, HostView } from '../../../policies/types.js'
import type { Controller, SimHost, SimVm, TraceSim } from './engine.js'
import { seededPrng } from '../../core/index.js'

export interface CloudsimPolicy {
  detector: 'thr' | 'iqr' | 'mad' | 'lr' | 'lrr'
  param: number
  selection: SelectionParams
  /** Apply the robust (bisquare) pass for LRR, as the paper intends; CloudSim 3.0.3 does not. @default false */
  robustLrr?: boolean
  /** Fallback static threshold while history is short. @default 0.7 */
  fallback?: number
}

export function overloadParams (p: CloudsimPolicy): OverloadParams {
  const fb = p.fallback ?? 0.7
  switch (p.detector) {
    case 'thr': return { kind: 'thr', threshold: p.param }
    case 'iqr': return { kind: 'iqr', safety: p.param, minSamples: 12, fallback: fb, quartiles: 'index' }
    case 'mad': return { kind: 'mad', safety: p.param, minSamples: 12, fallback: fb }
    case 'lr': return { kind: 'lr', safety: p.param, window: 10, fallback: fb }
    case 'lrr': return p.robustLrr === true ? { kind: 'lrr', safety: p.param, window: 10, fallback: fb } : { kind: 'lr', safety: p.param, window: 10, fallback: fb }
  }
}

/** Host utilisation history as CloudSim builds it: newest first, trailing zeros trimmed. */
export function hostHistoryNewestFirst (sim: TraceSim, h: SimHost, extra: SimVm | null = null): number[] {
  const len = sim.model.historyLength
  const acc = new Array<number>(len).fill(0)
  const add = (vm: SimVm): void => {
    for (let i = 0; i < vm.hist.length; i++) acc[i] = (acc[i] as number) + (vm.hist[i] as number) * vm.mips / h.totalMips
  }
  for (const id of h.vms) add(sim.vms[id] as SimVm)
  if (extra !== null) add(extra)
  let n = len
  while (n > 0 && acc[n - 1] === 0) n--
  acc.length = n
  return acc
}

export class CloudsimController {
  readonly params: OverloadParams
  private readonly sel: SelectionParams
  constructor (readonly sim: TraceSim, readonly policy: CloudsimPolicy) {
    this.params = overloadParams(policy)
    this.sel = policy.selection
  }

  /** Is the host overloaded in its current (planning) state, optionally with `extra` added? */
  overloaded (h: SimHost, extra: SimVm | null = null): boolean {
    const sim = this.sim
    let req = 0
    let maxRam = -Infinity
    for (const id of h.vms) { const v = sim.vms[id] as SimVm; req += sim.requested(v); if (v.ram > maxRam) maxRam = v.ram }
    if (extra !== null) { req += sim.requested(extra); if (extra.ram > maxRam) maxRam = extra.ram }
    const util = req / h.totalMips
    if (this.params.kind === 'thr') return util > this.params.threshold
    const hist = this.historyOldestFirst(h, extra)
    const migSec = maxRam / (h.bw / (8000 / sim.model.migrationLinkShare))
    const horizon = Math.ceil(migSec / sim.model.intervalSec)
    return detectOverload({ util, history: hist, horizonSteps: horizon }, this.params).overloaded
  }

  private histCache = new Map<number, { ver: number, acc: number[] }>()

  /** CloudSim's host history (oldest first for the detectors), cached per host version. */
  private historyOldestFirst (h: SimHost, extra: SimVm | null): number[] {
    let c = this.histCache.get(h.id)
    if (c === undefined || c.ver !== h.ver) {
      const len = this.sim.model.historyLength
      const acc = new Array<number>(len).fill(0)
      for (const id of h.vms) {
        const vm = this.sim.vms[id] as SimVm
        for (let i = 0; i < vm.hist.length; i++) acc[i] = (acc[i] as number) + (vm.hist[i] as number) * vm.mips / h.totalMips
      }
      c = { ver: h.ver, acc }
      this.histCache.set(h.id, c)
    }
    const acc = extra === null ? c.acc : c.acc.slice()
    if (extra !== null) for (let i = 0; i < extra.hist.length; i++) acc[i] = (acc[i] as number) + (extra.hist[i] as number) * extra.mips / h.totalMips
    let n = acc.length
    while (n > 0 && acc[n - 1] === 0) n--
    const out = new Array<number>(n)
    for (let i = 0; i < n; i++) out[i] = acc[n - 1 - i] as number
    return out
  }

  private allocSum (h: SimHost): number {
    // every allocation of the scheduler belongs to a VM in the host's list
    return h.sched.allocSum
  }

  /** PABFD target for `vm` among hosts not excluded; null if none. */
  findHost (vm: SimVm, excluded: Uint8Array): SimHost | null {
    const sim = this.sim
    const r = sim.requested(vm)
    const hosts = sim.hosts
    const n = hosts.length
    const d = this.scratchD.length === n ? this.scratchD : (this.scratchD = new Float64Array(n))
    const used = this.scratchU.length === n ? this.scratchU : (this.scratchU = new Float64Array(n))
    let best = -1
    for (let i = 0; i < n; i++) {
      const h = hosts[i] as SimHost
      d[i] = NaN
      if (excluded[i] === 1) continue
      if (h.peMips < r || h.sched.avail < r) continue
      if (vm.beingInstantiated && (h.ram - h.ramUsed < vm.ram || h.bw - h.bwUsed < vm.bw)) continue
      const u = this.allocSum(h)
      used[i] = u
      d[i] = sim.power(h, (u + r) / h.totalMips) - (this.powNow[i] as number)
      if (best < 0 || (d[i] as number) < (d[best] as number)) best = i
    }
    if (best < 0) return null
    // the first host (in id order) with the least power increase that is not overloaded
    // after the move; checking in ascending order gives the same answer as CloudSim's scan
    if (used[best] === 0 || !this.overloadedAfter(hosts[best] as SimHost, vm)) return hosts[best] as SimHost
    const order: number[] = []
    for (let i = 0; i < n; i++) if (!Number.isNaN(d[i] as number) && i !== best) order.push(i)
    order.sort((a, b) => (d[a] as number) - (d[b] as number) || a - b)
    for (const i of order) {
      const h = hosts[i] as SimHost
      if (used[i] === 0 || !this.overloadedAfter(h, vm)) return h
    }
    return null
  }

  /** Power of each host at its last measured utilisation (fixed while planning). */
  private powNow = new Float64Array(0)
  private scratchD = new Float64Array(0)
  private scratchU = new Float64Array(0)

  private overloadedAfter (h: SimHost, vm: SimVm): boolean {
    // CloudSim creates the VM on the host, asks the detector and destroys it again. The net
    // effects are: a stale "migrating out" mark for this VM on that host is cleared (engine Q3)
    // and the host's free MIPS are recomputed from scratch; both are reproduced here.
    const over = this.overloaded(h, vm)
    h.sched.migOut.delete(vm.id)
    h.sched.rebuild()
    return over
  }

  private pick (h: SimHost, vms: SimVm[]): SimVm | null {
    if (this.sel.kind === 'mmt') {
      let best: SimVm | null = null
      for (const v of vms) if (!v.inMigration && (best === null || v.ram < best.ram)) best = v
      return best
    }
    const sim = this.sim
    const hv: HostView = { id: String(h.id), cpuMips: h.totalMips, coreMips: h.peMips, memMiB: h.ram, netMbps: h.bw / 1000, powerCurveW: h.power, vms: [], reservedMips: 0, reservedMemMiB: 0, history: [], active: true }
    const views: VmView[] = vms.map(v => ({ id: String(v.id), host: String(h.id), cpuMips: v.mips, cpuDemandMips: sim.requested(v), memMiB: v.ram, history: v.hist.slice().reverse(), migrating: v.inMigration }))
    const s = selectVm(hv, views, { ...this.sel, seed: (this.sel.seed ?? 0) ^ Math.round(sim.now) }, seededPrng)
    return s === null ? null : sim.vms[Number(s.id)] as SimVm
  }

  /** One optimisation round (CloudSim's optimizeAllocation). */
  plan (): Array<[number, number]> {
    const sim = this.sim
    const n = sim.hosts.length
    this.powNow = Float64Array.from(sim.hosts, h => sim.power(h, sim.hostUtil(h)))
    const over: SimHost[] = sim.hosts.filter(h => this.overloaded(h))
    const saved = sim.hosts.map(h => h.vms.filter(id => !h.migIn.includes(id)))
    // selection
    const toMigrate: SimVm[] = []
    for (const h of over) {
      for (;;) {
        const vm = this.pick(h, h.vms.map(id => sim.vms[id] as SimVm))
        if (vm === null) break
        toMigrate.push(vm)
        sim.vmDestroy(h, vm)
        if (!this.overloaded(h)) break
      }
    }
    const excludedOver = new Uint8Array(n)
    for (const h of over) excludedOver[h.id] = 1
    const plan: Array<[number, number]> = []
    const byLoad = (a: SimVm, b: SimVm): number => sim.utilAt(b, sim.now) * b.mips - sim.utilAt(a, sim.now) * a.mips
    for (const vm of toMigrate.slice().sort(byLoad)) {
      const h = this.findHost(vm, excludedOver)
      if (h !== null) { sim.vmCreate(h, vm); plan.push([vm.id, h.id]) }
    }
    // underload
    const switchedOff = new Uint8Array(n)
    for (const h of sim.hosts) if (sim.hostUtil(h) === 0) switchedOff[h.id] = 1
    const exUnder = new Uint8Array(n)
    const exPlace = new Uint8Array(n)
    let exUnderCount = 0
    for (let i = 0; i < n; i++) {
      if (excludedOver[i] === 1 || switchedOff[i] === 1) { exUnder[i] = 1; exPlace[i] = 1; exUnderCount++ }
    }
    // utilisations do not change while planning: walk the hosts in (utilisation, id) order
    const byUtil = sim.hosts.filter(h => { const u = sim.hostUtil(h); return u > 0 && u < 1 }).sort((a, b) => sim.hostUtil(a) - sim.hostUtil(b) || a.id - b.id)
    let cursor = 0
    while (exUnderCount < n) {
      let under: SimHost | null = null
      while (cursor < byUtil.length && exUnder[(byUtil[cursor] as SimHost).id] === 1) cursor++
      for (let k = cursor; k < byUtil.length; k++) {
        const h = byUtil[k] as SimHost
        if (exUnder[h.id] === 1) continue
        if (!this.allMigratingOutOrAnyIn(h)) { under = h; break }
      }
      if (under === null) break
      exUnder[under.id] = 1; exUnderCount++
      exPlace[under.id] = 1
      const vms = under.vms.map(id => sim.vms[id] as SimVm).filter(v => !v.inMigration)
      if (vms.length === 0) continue
      vms.sort(byLoad)
      const sub: Array<[SimVm, SimHost]> = []
      let ok = true
      for (const vm of vms) {
        const h = this.findHost(vm, exPlace)
        if (h === null) { ok = false; break }
        sim.vmCreate(h, vm)
        sub.push([vm, h])
      }
      if (!ok) {
        for (const [vm, h] of sub) { sim.vmDestroy(h, vm); vm.host = under.id }
        continue
      }
      for (const [vm, h] of sub) {
        plan.push([vm.id, h.id])
        if (exUnder[h.id] !== 1) { exUnder[h.id] = 1; exUnderCount++ }
      }
    }
    // restore the allocation as it was before planning
    for (const h of sim.hosts) {
      h.sched.deallocAll()
      h.vms = []
      for (const id of h.migIn) { h.vms.push(id); h.sched.migIn.add(id); h.sched.allocVm(id, sim.requested(sim.vms[id] as SimVm), true) }
    }
    sim.hosts.forEach((h, i) => { for (const id of saved[i] as number[]) sim.vmCreate(h, sim.vms[id] as SimVm) })
    return plan
  }

  private allMigratingOutOrAnyIn (h: SimHost): boolean {
    for (const id of h.vms) {
      const v = this.sim.vms[id] as SimVm
      if (!v.inMigration) return false
      if (h.migIn.includes(id)) return true
    }
    return true
  }

  /** Initial placement: PABFD over nominal sizes, as CloudSim's migration policies do at creation. */
  initialPlace (): void {
    const none = new Uint8Array(this.sim.hosts.length)
    const sim = this.sim
    this.powNow = Float64Array.from(sim.hosts, h => sim.power(h, sim.hostUtil(h)))
    this.sim.place(vm => this.findHost(vm, none))
  }
}

/** DVFS / NPA placement: the first host (in id order) where the VM fits. */
export function firstFitPlace (sim: TraceSim): void {
  sim.place(vm => sim.hosts.find(h => h.peMips >= vm.mips && h.sched.avail >= vm.mips &&
    h.ram - h.ramUsed >= vm.ram && h.bw - h.bwUsed >= vm.bw) ?? null)
}

export function cloudsimController (c: CloudsimController): Controller {
  return () => c.plan()
}
