/**
 * Replication vs migration for stateless VMs on a trace day (policies/replication.ts says the
 * model). The same decentralised loop runs twice over the same day, seed and stateless set:
 * once with replication off (every stressed host migrates, stateless or not), once with it on
 * (a stressed host may start a replica of a stateless VM instead of moving it). Each host plans
 * with the agent's planner (policies/plan.ts planHost) from its view (peers one step old, itself
 * fresh), chooseRelief turns its plan into reliefs, and the target admits each one against its
 * authoritative state: CPU up to the policy's placement.cpuCapFraction, one core, RAM of every
 * copy it holds (copies migrating in and replicas included), and the hard rules counting every
 * copy of every VM. `violations` re-derives capacity and rules from the simulator's own state
 * after every step (must stay 0).
 *
 * Simulation choices, beyond the policy's model: a replica is a VM of its own in the engine,
 * with the original's trace; each copy requests its share of the trace (1 for the original
 * until the replica has booted, then 1/2 each) plus, for the replica, the overhead (at least
 * 1 MIPS, so that CloudSim's idle-VM rule Q1 does not drop a booting replica); boot CPU is not
 * counted; the original and its replica are never migrated while the replica lives (they are
 * reported as migrating, which the planner skips), so a host holding one is not emptied by
 * consolidation until the replica is retired; a replica whose original was dropped (Q1) goes
 * with it. Stateless VMs are a seeded random fraction of the day's VMs (PlanetLab says nothing
 * about state). Energy, SLATAH, PDM and the rest are the engine's own accounting.
 */
import { Prng, seededPrng } from '../../core/index.js'
import { detectOverload } from '../../../policies/overload.js'
import { isUnderloaded } from '../../../policies/underload.js'
import { nextStreak } from '../../../policies/antithrash.js'
import { planHost, hostSample, type PolicyConfig } from '../../../policies/plan.js'
import { defaultPolicyConfig, validatePolicyConfig } from '../../../policies/config.js'
import { chooseRelief, defaultReplicationParams, shouldRetire, type ReplicationParams } from '../../../policies/replication.js'
import { NO_RULES, type ClusterView, type HostView, type RuleSet, type VmView } from '../../../policies/types.js'
import { CloudsimController } from './cloudsim.js'
import { TraceSim, type Metrics, type SimHost, type SimVm } from './engine.js'
import type { SimModel } from './model.js'
import type { TraceDay } from './traces.js'

export interface ReplicationRunOptions {
  seed: number
  /** Share of the day's VMs marked stateless (seeded choice). @default 0.5 */
  statelessFraction: number
  replication: ReplicationParams
  policy: PolicyConfig
  /** Hard and soft rules over the VMs (ids are the engine's VM indexes as strings). @default none */
  rules: RuleSet
  /** VM history samples in reports. @default 12 */
  reportHistory: number
}

export interface ReplicationMetrics extends Metrics {
  statelessVms: number
  replicasStarted: number
  replicasRetired: number
  /** Most replicas alive at once. */
  replicasPeak: number
  /** Replicas refused by their target's admission (capacity or rules). */
  replicasRefused: number
  /** Capacity or hard-rule breaches found by the independent check after each step (must be 0). */
  violations: number
  /** Overload moves planned for stateless VMs (the candidates for a replica). */
  statelessOverloadMoves: number
}

export function defaultReplicationRunOptions (): ReplicationRunOptions {
  return { seed: 1, statelessFraction: 0.5, replication: defaultReplicationParams(), policy: defaultPolicyConfig(), rules: NO_RULES, reportHistory: 12 }
}

/** The engine with shares: a replicated VM's copies each serve part of its trace. */
export class ReplicaSim extends TraceSim {
  /** Share of its trace a copy serves (absent: 1). */
  readonly share = new Map<number, number>()
  /** Extra MIPS a replica asks for. */
  readonly overhead = new Map<number, number>()
  /** Original id -> replica id, and back. */
  readonly replicaOf = new Map<number, number>()
  readonly originalOf = new Map<number, number>()

  override requested (vm: SimVm): number {
    const base = super.requested(vm)
    const sh = this.share.get(vm.id)
    return sh === undefined ? base : base * sh + (this.overhead.get(vm.id) ?? 0)
  }

  /** Start a replica of `orig` on `target` now; it serves half from `now + bootSec`. */
  startReplica (orig: SimVm, target: SimHost, overheadMips: number, bootSec: number): SimVm {
    const r: SimVm = {
      ...orig, id: this.vms.length, name: `${orig.name}~replica`, hist: orig.hist.slice(), inMigration: false, host: -1, alive: true,
      beingInstantiated: false, eT: -1, eAlloc: 0, eReq: 0, eMig: false, lastMovedT: this.now, reqT: NaN, reqV: 0
    }
    this.vms.push(r)
    this.share.set(r.id, 0)
    this.overhead.set(r.id, Math.max(1, overheadMips))
    this.replicaOf.set(orig.id, r.id)
    this.originalOf.set(r.id, orig.id)
    this.vmCreate(target, r)
    this.updateHost(target, this.now, false)
    this.schedule(this.now + bootSec, () => {
      if (!r.alive || r.host < 0 || !orig.alive) return
      this.share.set(orig.id, 0.5)
      this.share.set(r.id, 0.5)
    })
    return r
  }

  /** Stop a replica now; its original serves the whole trace again. */
  retireReplica (r: SimVm): void {
    const orig = this.originalOf.get(r.id)
    const h = this.hosts[r.host]
    if (h !== undefined) { this.vmDestroy(h, r); this.updateHost(h, this.now, false) }
    r.alive = false
    if (orig !== undefined) {
      this.share.delete(orig)
      this.replicaOf.delete(orig)
      const oh = this.hosts[(this.vms[orig] as SimVm).host]
      if (oh !== undefined) this.updateHost(oh, this.now, false)
    }
    this.originalOf.delete(r.id)
  }
}

/** Every host a VM (by engine id) has a live copy on. */
function copiesOf (sim: ReplicaSim, id: number): number[] {
  const vm = sim.vms[id] as SimVm
  const out = vm.alive && vm.host >= 0 ? [vm.host] : []
  const r = sim.replicaOf.get(id)
  if (r !== undefined) { const rv = sim.vms[r] as SimVm; if (rv.alive && rv.host >= 0) out.push(rv.host) }
  return out
}

/** Whether a copy of VM `id` (engine id of the original) on `host` breaks a hard rule, counting every copy. */
export function breaksHardRule (sim: ReplicaSim, rules: RuleSet, id: number, host: number): boolean {
  const key = String(id)
  for (const r of rules.vmHost) {
    if (!r.hard || r.vm !== key) continue
    const listed = r.hosts.includes(String(host))
    if ((r.kind === 'affinity' && !listed) || (r.kind === 'anti-affinity' && listed)) return true
  }
  for (const r of rules.vmVm) {
    if (!r.hard || !r.vms.includes(key)) continue
    for (const o of r.vms) {
      if (o === key) continue
      const there = copiesOf(sim, Number(o)).includes(host)
      if (r.kind === 'anti-affinity' && there) return true
    }
  }
  return false
}

function report (sim: ReplicaSim, h: SimHost, histLen: number): HostView {
  const vms: VmView[] = []
  const hist = new Array<number>(histLen).fill(0)
  for (const id of h.vms) {
    const v = sim.vms[id] as SimVm
    const sh = sim.share.get(id) ?? 1
    for (let i = 0; i < Math.min(histLen, v.hist.length); i++) hist[histLen - 1 - i] = (hist[histLen - 1 - i] as number) + (v.hist[i] as number) * sh * v.mips / h.totalMips
    if (h.migIn.includes(id)) continue
    const pinned = sim.replicaOf.has(id) || sim.originalOf.has(id)
    vms.push({
      id: String(id), host: String(h.id), cpuMips: v.mips, cpuDemandMips: sim.requested(v), memMiB: v.ram,
      history: v.hist.slice(0, histLen).reverse().map(u => u * sh), migrating: v.inMigration || pinned
    })
  }
  let start = 0
  while (start < hist.length && hist[start] === 0) start++
  let inMem = 0
  for (const id of h.migIn) inMem += (sim.vms[id] as SimVm).ram
  return {
    id: String(h.id), cpuMips: h.totalMips, coreMips: h.peMips, memMiB: h.ram, netMbps: h.bw / 1000, powerCurveW: h.power, sleepW: 0,
    vms, reservedMips: 0, reservedMemMiB: inMem, history: hist.slice(start), active: vms.length > 0
  }
}

/** One day, one arm. `replication.mode` 'off' is the migration baseline. */
export function runReplicationArm (model: SimModel, trace: TraceDay, o: Partial<ReplicationRunOptions> = {}): ReplicationMetrics {
  const opt: ReplicationRunOptions = { ...defaultReplicationRunOptions(), ...o }
  const cfg = validatePolicyConfig(opt.policy)
  const rp = opt.replication
  const cap = cfg.placement.cpuCapFraction ?? 1
  const sim = new ReplicaSim(model, trace)
  new CloudsimController(sim, { detector: 'thr', param: 0.8, selection: { kind: 'mmt' } }).initialPlace()
  const pick = new Prng(opt.seed * 7919 + 17)
  const stateless = new Set<string>()
  for (const v of sim.vms) if (pick.next() < opt.statelessFraction) stateless.add(String(v.id))
  const prng = new Prng(opt.seed)
  const n = sim.hosts.length
  const over = new Int32Array(n)
  const under = new Int32Array(n)
  const lastMoved = new Map<string, number>()
  let past: HostView[] | null = null
  let tick = 0
  const m = { replicasStarted: 0, replicasRetired: 0, replicasPeak: 0, replicasRefused: 0, violations: 0, statelessOverloadMoves: 0 }
  const metrics = sim.run((s0, _t) => {
    const s = s0 as ReplicaSim
    tick++
    // retire replicas whose original is gone, or whose home can take the whole demand back
    let fresh = s.hosts.map(h => report(s, h, opt.reportHistory))
    const freshView: ClusterView = { hosts: fresh, rules: opt.rules, tick }
    let retired = false
    for (const [orig, rid] of [...s.replicaOf]) {
      const ov = s.vms[orig] as SimVm; const rv = s.vms[rid] as SimVm
      let go = !ov.alive || ov.host < 0
      if (!go && (s.share.get(orig) ?? 1) < 1) {
        const home = fresh[ov.host] as HostView
        const view = home.vms.find(x => x.id === String(orig))
        go = view !== undefined && shouldRetire(freshView, home.id, view, cfg, rp)
      }
      if (go) { s.retireReplica(rv); m.replicasRetired++; retired = true }
    }
    if (retired) fresh = s.hosts.map(h => report(s, h, opt.reportHistory))
    const seen = past ?? fresh
    past = fresh
    const deciders: number[] = []
    for (let i = 0; i < n; i++) {
      const me = fresh[i] as HostView
      if (me.vms.length === 0) { over[i] = 0; under[i] = 0; continue }
      const smp = hostSample(me, cfg.intervalSec)
      const o1 = detectOverload(smp, cfg.overload).overloaded
      over[i] = nextStreak(over[i] as number, o1)
      under[i] = nextStreak(under[i] as number, !o1 && isUnderloaded(smp.util, me.history, cfg.underload))
      if ((over[i] as number) > 0 || (under[i] as number) > 0) deciders.push(i)
    }
    prng.shuffle(deciders)
    const demand = fresh.map(h => h.vms.reduce((a, v) => a + v.cpuDemandMips, 0))
    const ram = s.hosts.map(h => s.ramHeld(h))
    const receiving = new Uint8Array(n)
    const evacuating = new Uint8Array(n)
    const moves: Array<[number, number]> = []
    const replicas: Array<[number, number]> = []
    const copies = new Map<string, string[]>()
    for (const [orig] of s.replicaOf) copies.set(String(orig), copiesOf(s, orig).map(String))
    const placedThisStep: Array<{ vm: number, tgt: number }> = []
    for (const i of deciders) {
      if (receiving[i] === 1 && (over[i] as number) === 0) continue
      const hosts = seen.slice(); hosts[i] = fresh[i] as HostView
      const view: ClusterView = { hosts, rules: opt.rules, tick }
      const plan = planHost(view, String(i), cfg, { overStreak: over[i] as number, underStreak: under[i] as number, lastMoved, random: seededPrng })
      if (plan.length === 0) continue
      for (const mv of plan) if (mv.reason === 'overload' && stateless.has(mv.vm)) m.statelessOverloadMoves++
      const reliefs = chooseRelief(view, String(i), plan, vm => stateless.has(vm), cfg, rp, copies)
      const consolidation = plan[0]?.reason === 'underload'
      const granted: Array<{ vm: number, tgt: number, d: number, mem: number, replica: boolean }> = []
      for (const r of reliefs) {
        const replica = r.kind === 'replicate'
        const vm = s.vms[Number(replica ? r.vm : r.move.vm)] as SimVm
        const tgt = Number(replica ? r.to : r.move.to)
        const h = s.hosts[tgt] as SimHost
        const full = s.requested(vm)
        const d = replica ? full / 2 + Math.max(1, rp.overheadFraction * vm.mips) : full
        const ok = evacuating[tgt] !== 1 && d <= h.peMips && (demand[tgt] as number) + d <= h.totalMips * cap + 1e-9 &&
          (ram[tgt] as number) + vm.ram <= h.ram && !breaksHardRule(s, opt.rules, vm.id, tgt) &&
          // copies granted this step (this plan's, and other hosts' plans before it) are not on their target yet
          !placedThisStep.concat(granted).some(g => g.tgt === tgt && opt.rules.vmVm.some(rule => rule.hard && rule.kind === 'anti-affinity' && rule.vms.includes(String(g.vm)) && rule.vms.includes(String(vm.id))))
        if (!ok) { if (replica) m.replicasRefused++; if (consolidation) break; else continue }
        demand[tgt] = (demand[tgt] as number) + d
        ram[tgt] = (ram[tgt] as number) + vm.ram
        granted.push({ vm: vm.id, tgt, d: replica ? full / 2 : full, mem: vm.ram, replica })
      }
      if (consolidation && granted.length !== reliefs.length) {
        for (const g of granted) { demand[g.tgt] = (demand[g.tgt] as number) - (g.replica ? g.d + Math.max(1, rp.overheadFraction * (s.vms[g.vm] as SimVm).mips) : g.d); ram[g.tgt] = (ram[g.tgt] as number) - g.mem }
        continue
      }
      for (const g of granted) {
        placedThisStep.push(g)
        receiving[g.tgt] = 1
        demand[i] = (demand[i] as number) - g.d
        lastMoved.set(String(g.vm), tick)
        if (g.replica) { replicas.push([g.vm, g.tgt]); copies.set(String(g.vm), [String(i), String(g.tgt)]) } else moves.push([g.vm, g.tgt])
      }
      if (consolidation) evacuating[i] = 1
    }
    for (const [vm, tgt] of replicas) {
      s.startReplica(s.vms[vm] as SimVm, s.hosts[tgt] as SimHost, rp.overheadFraction * (s.vms[vm] as SimVm).mips, rp.bootSec)
      m.replicasStarted++
    }
    m.replicasPeak = Math.max(m.replicasPeak, s.replicaOf.size)
    m.violations += independentCheck(s, moves, replicas, cap, opt.rules)
    return moves
  })
  return { ...metrics, statelessVms: stateless.size, ...m }
}

/**
 * From the simulator's state, not the admission's bookkeeping: every host's RAM (all copies it
 * holds, replicas and copies migrating in included, plus this step's incoming migrations) within
 * its RAM; every target of this step within cpuCapFraction of its CPU; no copy of a VM on a host
 * its hard rules forbid, counting every copy. Returns the number of breaches.
 */
function independentCheck (sim: ReplicaSim, moves: ReadonlyArray<readonly [number, number]>, replicas: ReadonlyArray<readonly [number, number]>, cap: number, rules: RuleSet): number {
  let bad = 0
  const inRam = new Map<number, number>()
  const targets = new Set<number>()
  for (const [id, tgt] of moves) { inRam.set(tgt, (inRam.get(tgt) ?? 0) + (sim.vms[id] as SimVm).ram); targets.add(tgt) }
  for (const [, tgt] of replicas) targets.add(tgt)
  const leaving = new Set(moves.map(([vm]) => vm))
  for (const h of sim.hosts) if (sim.ramHeld(h) + (inRam.get(h.id) ?? 0) > h.ram) bad++
  for (const tgt of targets) {
    const h = sim.hosts[tgt] as SimHost
    let d = 0
    for (const id of h.vms) if (!leaving.has(id) && !h.migIn.includes(id)) d += sim.requested(sim.vms[id] as SimVm)
    for (const [id, t] of moves) if (t === tgt) d += sim.requested(sim.vms[id] as SimVm)
    // a booting replica asks for its overhead now and half its VM's demand once booted
    for (const [id, t] of replicas) if (t === tgt) d += sim.requested(sim.vms[id] as SimVm) / 2
    if (d > h.totalMips * cap + 1e-6) bad++
  }
  if (rules.vmVm.length + rules.vmHost.length > 0) {
    for (const v of sim.vms) {
      if (!v.alive || v.host < 0 || sim.originalOf.has(v.id)) continue
      for (const host of copiesOf(sim, v.id)) {
        for (const r of rules.vmHost) {
          if (!r.hard || r.vm !== String(v.id)) continue
          const listed = r.hosts.includes(String(host))
          if ((r.kind === 'affinity' && !listed) || (r.kind === 'anti-affinity' && listed)) bad++
        }
      }
    }
    for (const r of rules.vmVm) {
      if (!r.hard || r.kind !== 'anti-affinity') continue
      const seen = new Set<number>()
      for (const id of r.vms) {
        const hs = new Set(copiesOf(sim, Number(id)))
        for (const host of hs) { if (seen.has(host)) bad++ }
        for (const host of hs) seen.add(host)
      }
    }
  }
  return bad
}
