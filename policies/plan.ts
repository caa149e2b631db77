/**
 * One host's decision, made from its own (possibly stale) view of the cluster: the function the
 * agent core calls every decision tick, and the one every simulated host calls in the
 * decentralised mode of `starling sim`.
 *
 * 1. Overload relief: if the host's detector has held for `guards.holdDecisions`, select VMs until
 *    the detector clears, then place each (largest first) on the best-ranked target that stays
 *    healthy after the move.
 * 2. Consolidation: if the host is underloaded (and the condition held), try to move *all* its
 *    VMs to busier active hosts; all or nothing, and only if the watts saved exceed the watts
 *    added by at least `guards.minGain`. Moving only towards busier hosts stops two idle hosts
 *    from trading VMs back and forth.
 *
 * The planner never exceeds a target's capacity or breaks a hard rule in its own plan; the
 * target's reservation step (admission against its authoritative state) guards against
 * concurrent plans of other hosts.
 */
import { horizonSteps } from './forecast.js'
import { detectOverload, type OverloadParams } from './overload.js'
import { exceedsCores, fits, powerAt, type PlacementParams } from './placement.js'
import { hardAllows, softPenalty } from './rules.js'
import { hashStr, selectVm, type SelectionParams } from './selection.js'

/**
 * Spread of the pabfd score, W, by a hash of (source, target): sources whose views rank the same
 * targets alike pick different ones among those within about this much of the best, instead of
 * all asking the same target in the same decision (which refuses all but one). Measured on
 * 20110303 and 20110306 (seeds 1-2): without it, 1.02-1.05x the energy of CloudSim with RAM
 * enforced; with 1 W (or 4 W), 0.95-0.97x. With the memory fit (MEM_FIT) every source prefers
 * the fullest targets, so more of them ask the same ones: on 20110303 and 20110322 (seed 1)
 * 10 W gave 0.1-1.9 % less energy than 4 W (3-7 % more migrations); 20 W no less energy than
 * 10 W and 1-6 % more migrations. With the memory-weighted evacuation cost and TRANSIENT_W 8 (see
 * there), 20 W: fewer consolidations withdrawn for a target that another source filled first.
 */
const SPREAD_W = 20
/**
 * Best fit by memory, the resource that binds on hosts of this kind: an active target pays this
 * share of its idle power times the fraction of its memory the move would leave free, so VMs go
 * where they fill a host up rather than where they leave a gap no VM fits. Measured on 20110303
 * and 20110322 (seed 1, with SPREAD_W 10) against CloudSim with RAM enforced (LR-MMT-1.2 for
 * energy and migrations, its best policy for ESV): without it 0.97-1.01x the energy, 0.92-0.96x
 * the migrations, 0.99-1.30x the ESV; with 0.1, 0.95-0.98x, 0.81-0.86x and 0.70-1.18x. 0.2 gave
 * 0.75-0.78x the migrations for up to 2 % more energy (on 20110303).
 */
const MEM_FIT = 0.1
/**
 * What a consolidation target pays, W, when it would empty itself next by the same tests as the
 * source (underloaded, among the view's cheaper hosts to empty, memory not full, nothing moving):
 * the VMs it takes would be copied a second time when it does. Measured with `starling sim --day
 * all --mode decentral --compare --seed 1-3` against CloudSim 3.0.3 with host RAM enforced, tuned
 * on 20110322 (the one day whose ESV was above the best policy's, 1.13-1.20x; 117 VMs were copied
 * twice in its first three hours) and checked on the other four days and on 20110322's seeds 4-6:
 * with 3, ESV 0.40-0.99x the best policy's on all 15 runs (0.46-1.20x, 12 of 15 at or below it,
 * without), migrations 0.69-0.77x LR-MMT-1.2's (0.77-0.81x), energy 0.94-0.98x (0.94-0.97x), and
 * energy within 1.15x of the lower bound on 6 runs instead of 7; 20110322 seeds 4-6 0.89-0.93x
 * the best ESV (1.20-1.23x without). 2 left 20110322 at 0.95-0.99x; 5 and 8 cut its ESV to
 * 0.81-0.89x and 0.82-0.86x for 1.5-2 % more energy and 5 and 2 runs within the bound.
 *
 * 8 W together with SPREAD_W 20 and the memory-weighted evacuation cost (evacuationCost), against
 * 3 W, 10 W and the cost by demand x memory, same command and reference (tuned on 20110309 and
 * 20110322, seed 1; checked on the other days and seeds 2-3): energy within 1.15x of the lower
 * bound on 11 of 15 runs (6 of 15; 1.135-1.157x against 1.138-1.167x), energy 0.937-0.979x
 * LR-MMT-1.2's (0.944-0.975x), migrations 0.694-0.797x (0.688-0.769x), ESV 0.427-0.999x the best
 * policy's (0.403-0.986x; 20110322 seed 1 is at 0.999x). The spread and the cost alone (TRANSIENT_W
 * 3) left 20110322 seed 1 at 1.10x the best ESV; 5 W at 1.01x; 10 W (20110306 and 20110309 seeds
 * 2-3, 20110322 seeds 1-2) no less energy and 1.02x on 20110322 seed 1.
 */
const TRANSIENT_W = 8
import { isUnderloaded, type UnderloadParams } from './underload.js'
import { conditionHeld, vmCooledDown, type GuardParams } from './antithrash.js'
import { hostMemAdmitMiB, hostMemUsedMiB, hostUtil, migrationSeconds, type ClusterView, type HostId, type HostView, type Move, type RuleSet, type SeededRandom, type VmId, type VmView, type VmVmRule } from './types.js'

export interface PolicyConfig {
  overload: OverloadParams
  underload: UnderloadParams
  selection: SelectionParams
  placement: PlacementParams
  guards: GuardParams
  /** Seconds per decision tick (sets the forecast horizon from migration times). */
  intervalSec: number
  /** Upper bound on moves one host proposes per tick. @default 8 */
  maxMovesPerDecision: number
  /**
   * The most VMs one consolidation places on one target. A consolidation is reserved as a whole,
   * and a target admits at most its migration.inMax moves at once (the agent sets this from it):
   * a plan with more for one target would be refused every time. Unset: no cap (the simulator's
   * per-step admission counts its own limit).
   */
  maxIncomingPerTarget?: number
}

/** Per-host state the caller keeps between ticks (the agent core owns it). */
export interface HostDecisionState {
  /** Consecutive ticks the host has been overloaded / underloaded, including this one. */
  overStreak: number
  underStreak: number
  /** Tick of each VM's last move. */
  lastMoved: ReadonlyMap<VmId, number>
  /** Random source for the random selection (kind 'rs'); the agent core passes its Prng. */
  random: SeededRandom
  /**
   * Targets that refused a move of this host so recently that its view cannot show why yet
   * (policies/decider.ts): no move of this decision goes to them. @default none
   */
  avoid?: ReadonlySet<HostId>
}

/** Working load of a host during planning: what the plan has added or removed. */
interface Work { demand: number, mem: number, hist: number[], vms: VmView[] }

export function hostSample (h: HostView, intervalSec: number, vms: readonly VmView[] = h.vms, util?: number, history?: readonly number[]) {
  let maxMem = 0
  for (const v of vms) if (v.memMiB > maxMem) maxMem = v.memMiB
  return {
    util: util ?? (h.cpuMips > 0 ? (h.reservedMips + vms.reduce((s, v) => s + v.cpuDemandMips, 0)) / h.cpuMips : 0),
    history: history ?? h.history,
    horizonSteps: horizonSteps(migrationSeconds(maxMem, h.netMbps), intervalSec)
  }
}

export function planHost (view: ClusterView, self: HostId, cfg: PolicyConfig, st: HostDecisionState): Move[] {
  const me = view.hosts.find(h => h.id === self)
  if (me === undefined || me.vms.length === 0) return []
  const work = new Map<HostId, Work>()
  const placement = new Map<VmId, HostId>()
  if (view.rules.vmVm.length + view.rules.vmHost.length > 0) {
    for (const h of view.hosts) for (const v of h.vms) placement.set(v.id, h.id)
  }
  // A VM here that breaks a hard rule (one agreed after it was placed) moves first, held or not.
  const repairs = repairRules(view, me, cfg, work, placement)
  if (repairs.length > 0) return repairs
  const verdict = detectOverload(hostSample(me, cfg.intervalSec), cfg.overload)
  if (verdict.overloaded && me.cpuResolved !== true) {
    if (!conditionHeld(st.overStreak, cfg.guards)) return []
    return relieve(view, me, cfg, st, work, placement)
  }
  if ((me.memShortMiB ?? 0) > 0) {
    if (!conditionHeld(st.overStreak, cfg.guards)) return []
    return relieveMemory(view, me, cfg, st, work, placement)
  }
  const util = hostSample(me, cfg.intervalSec).util
  if (isUnderloaded(util, me.history, cfg.underload) && conditionHeld(st.underStreak, cfg.guards)) {
    return consolidate(view, me, cfg, st, work, placement)
  }
  return []
}

/** Does a hard rule name one of this host's VMs? (Cheap: no view needed.) */
export function hardRulesName (rules: RuleSet, me: HostView): boolean {
  if (rules.vmVm.length + rules.vmHost.length === 0) return false
  const here = new Set(me.vms.map(v => v.id))
  return rules.vmHost.some(r => r.hard && here.has(r.vm)) || rules.vmVm.some(r => r.hard && r.vms.some(v => here.has(v)))
}

/**
 * Repairs of hard rules broken on this host (a rule agreed after its VMs were placed): each VM
 * here that breaks one moves to the best target the rules allow, as many as a decision moves.
 * Of VMs kept apart (anti-affinity) that share this host, the first by id stays and the others
 * leave (taken from the last id down, so that one leaving lets the next stay). Of VMs kept
 * together (affinity) on several hosts, those on the host of the group's first VM by id stay and
 * the others come to it, so that two hosts never swap them. A VM on its way already is left.
 */
export function repairRules (view: ClusterView, me: HostView, cfg: PolicyConfig, work: Map<HostId, Work> = new Map(), placement?: Map<VmId, HostId>): Move[] {
  if (!hardRulesName(view.rules, me)) return []
  const where = new Map<VmId, HostId>(placement ?? [])
  if (where.size === 0) for (const h of view.hosts) for (const v of h.vms) where.set(v.id, h.id)
  // VMs on their way out of this host no longer keep the others here from staying.
  for (const v of me.vms) if (v.migrating === true && where.get(v.id) === me.id) where.delete(v.id)
  // The hard affinity groups of a VM, and where each gathers: the host of its first placed VM by id.
  const groupsOf = (vm: VmId): VmVmRule[] => view.rules.vmVm.filter(r => r.hard && r.kind === 'affinity' && r.vms.includes(vm))
  const anchorOf = (r: VmVmRule): HostId | undefined => { const first = r.vms.filter(x => where.has(x)).sort()[0]; return first === undefined ? undefined : where.get(first) }
  const anchored = (vm: VmId): boolean => groupsOf(vm).some(r => anchorOf(r) === me.id)
  // A VM kept together with others has its targets judged with its group gathered on the group's
  // host (its first VM's host). Judged as placed, a VM off that host is allowed there only once all
  // the others are, so a group with two or more VMs off it (three split over hosts) never moved.
  const gathered = (vm: VmId): Map<VmId, HostId> => {
    const p = new Map(where)
    for (const r of groupsOf(vm)) {
      const at = anchorOf(r)
      if (at !== undefined) for (const x of r.vms) if (x !== vm && where.has(x)) p.set(x, at)
    }
    return p
  }
  const moves: Move[] = []
  const mine = [...me.vms].sort((a, b) => a.id < b.id ? 1 : a.id > b.id ? -1 : 0)
  for (const v of mine) {
    if (moves.length >= cfg.maxMovesPerDecision) break
    if (v.migrating === true || hardAllows(view.rules, where, v.id, me.id)) continue
    const hostRule = view.rules.vmHost.some(r => r.hard && r.vm === v.id && (r.kind === 'affinity') !== r.hosts.includes(me.id))
    if (!hostRule && anchored(v.id)) continue
    // The group's first VM on a host its VM-host rule forbids goes where the rules allow as placed.
    const t = bestTarget(view, me, v, cfg, work, gathered(v.id), null) ?? (hostRule ? bestTarget(view, me, v, cfg, work, where, null) : null)
    if (t === null) continue
    apply(workOf(work, me), me, v, -1)
    apply(workOf(work, t), t, v, 1)
    where.set(v.id, t.id)
    moves.push({ vm: v.id, from: me.id, to: t.id, reason: 'rule' })
  }
  return moves
}

function workOf (work: Map<HostId, Work>, h: HostView): Work {
  let w = work.get(h.id)
  if (w === undefined) {
    let d = h.reservedMips; let m = h.reservedMemMiB
    for (const v of h.vms) { d += v.cpuDemandMips; m += v.memMiB }
    w = { demand: d, mem: m, hist: h.history.slice(), vms: h.vms.slice() }
    work.set(h.id, w)
  }
  return w
}

/** Add (sign 1) or remove (sign -1) a VM's load from a working host. */
function apply (w: Work, h: HostView, v: VmView, sign: 1 | -1): void {
  w.demand += sign * v.cpuDemandMips
  w.mem += sign * v.memMiB
  const k = v.cpuMips / h.cpuMips
  const n = Math.min(w.hist.length, v.history.length)
  for (let i = 1; i <= n; i++) {
    const hi = w.hist.length - i
    w.hist[hi] = Math.max(0, (w.hist[hi] as number) + sign * (v.history[v.history.length - i] as number) * k)
  }
  if (sign === 1) w.vms.push(v)
  else w.vms = w.vms.filter(x => x.id !== v.id)
}

function relieve (view: ClusterView, me: HostView, cfg: PolicyConfig, st: HostDecisionState,
  work: Map<HostId, Work>, placement: Map<VmId, HostId>): Move[] {
  const mine = workOf(work, me)
  const chosen: VmView[] = []
  while (chosen.length < cfg.maxMovesPerDecision) {
    const movable = mine.vms.filter(v => vmCooledDown(st.lastMoved.get(v.id), view.tick, cfg.guards))
    const v = selectVm(me, movable, cfg.selection, st.random)
    if (v === null) break
    chosen.push(v)
    apply(mine, me, v, -1)
    const s = hostSample(me, cfg.intervalSec, mine.vms, mine.demand / me.cpuMips, mine.hist)
    if (!detectOverload(s, cfg.overload).overloaded) break
  }
  chosen.sort((a, b) => b.cpuDemandMips - a.cpuDemandMips)
  const moves: Move[] = []
  for (const v of chosen) {
    const t = bestTarget(view, me, v, cfg, work, placement, null, undefined, st.avoid)
    if (t === null) continue
    apply(workOf(work, t), t, v, 1)
    placement.set(v.id, t.id)
    moves.push({ vm: v.id, from: me.id, to: t.id, reason: 'overload' })
  }
  return moves
}

/**
 * A host short of memory (over its target, nothing left to reclaim inside it) moves out the
 * fewest VMs that cover the shortfall: the smallest VM whose memory covers what is still short,
 * else the largest, and again; each to the best target that stays healthy. The VMs already
 * leaving it count as covering their memory: the shortfall was measured with them still here, and
 * a second VM sent for it while the first copies would be one too many.
 */
function relieveMemory (view: ClusterView, me: HostView, cfg: PolicyConfig, st: HostDecisionState,
  work: Map<HostId, Work>, placement: Map<VmId, HostId>): Move[] {
  const mine = workOf(work, me)
  let short = me.memShortMiB ?? 0
  for (const v of mine.vms) if (v.migrating) short -= v.memMiB
  const moves: Move[] = []
  while (short > 0 && moves.length < cfg.maxMovesPerDecision) {
    const movable = mine.vms.filter(v => !v.migrating && vmCooledDown(st.lastMoved.get(v.id), view.tick, cfg.guards))
      .sort((a, b) => a.memMiB - b.memMiB || (a.id < b.id ? -1 : 1))
    if (movable.length === 0) break
    const pick = movable.find(v => v.memMiB >= short) ?? movable[movable.length - 1] as VmView
    apply(mine, me, pick, -1)
    const t = bestTarget(view, me, pick, cfg, work, placement, null, undefined, st.avoid)
    if (t === null) continue
    apply(workOf(work, t), t, pick, 1)
    placement.set(pick.id, t.id)
    moves.push({ vm: pick.id, from: me.id, to: t.id, reason: 'overload' })
    short -= pick.memMiB
  }
  return moves
}

function consolidate (view: ClusterView, me: HostView, cfg: PolicyConfig, st: HostDecisionState,
  work: Map<HostId, Work>, placement: Map<VmId, HostId>): Move[] {
  const mine = workOf(work, me)
  if (mine.vms.some(v => v.migrating || !vmCooledDown(st.lastMoved.get(v.id), view.tick, cfg.guards))) return []
  if (mine.vms.length > cfg.maxMovesPerDecision) return []
  const myUtil = mine.demand / me.cpuMips
  // A host whose memory is (nearly) full is packed as well as memory allows: its VMs would need
  // as much memory elsewhere, so emptying it mostly moves gaps around (underload.memFull).
  const memFull = cfg.underload.kind === 'threshold' ? cfg.underload.memFull : undefined
  if (memFull !== undefined && mine.mem > memFull * hostMemAdmitMiB(me)) return []
  const q = cfg.underload.kind === 'threshold' && cfg.underload.quantile !== undefined ? Math.max(cfg.underload.quantile, surplusShare(view, cfg)) : undefined
  let costLimit = Infinity
  if (q !== undefined && q < 1) {
    // only the hosts of the view that are cheapest to empty do so: the degradation a copy causes
    // grows with the VM's demand and with its copy time (its memory), so a host's cost is the sum
    // of demand x memory over its VMs, memory counted twice (evacuationCost). (Ranked by CPU load alone, as CloudSim empties the least
    // loaded host first, hosts whose VMs ask little but are large were emptied as readily: the
    // ESV was 14 % higher on 20110303 and 1 % on 20110306, seed 1, the energy 1 % lower and equal.)
    // When the view holds more active hosts than its load needs by more than that share (after a
    // burst of placements: 760 of 800 hosts on at the first decision of 20110306 for about 250
    // hosts' worth of memory), that surplus share of them does (surplusShare).
    const us = view.hosts.filter(h => h.vms.length > 0).map(h => evacuationCost(h.vms)).sort((a, b) => a - b)
    costLimit = us[Math.floor(q * (us.length - 1))] ?? Infinity
    if (evacuationCost(mine.vms) > costLimit) return []
  }
  // Targets that would empty themselves next, by the same tests as this host (TRANSIENT_W).
  const transient = new Map<HostId, boolean>()
  const wouldEmpty = (h: HostView): boolean => {
    let x = transient.get(h.id)
    if (x === undefined) {
      x = h.vms.length > 0 && !h.vms.some(v => v.migrating === true) &&
        !(memFull !== undefined && hostMemUsedMiB(h) > memFull * hostMemAdmitMiB(h)) &&
        evacuationCost(h.vms) <= costLimit &&
        isUnderloaded(hostUtil(h), h.history, cfg.underload)
      transient.set(h.id, x)
    }
    return x
  }
  const vms = mine.vms.slice().sort((a, b) => b.cpuDemandMips - a.cpuDemandMips)
  const moves: Move[] = []
  let added = 0
  // Targets that already take as many of this plan's VMs as they admit at once, and those that
  // refused this host a moment ago.
  const cap = cfg.maxIncomingPerTarget
  const full = new Set<HostId>(st.avoid ?? [])
  for (const v of vms) {
    const t = bestTarget(view, me, v, cfg, work, placement, myUtil, wouldEmpty, full)
    if (t === null) return []
    if (cap !== undefined && moves.filter(m => m.to === t.id).length + 1 >= cap) full.add(t.id)
    const w = workOf(work, t)
    added += powerAt(t.powerCurveW, (w.demand + v.cpuDemandMips) / t.cpuMips) - powerAt(t.powerCurveW, w.demand / t.cpuMips)
    apply(w, t, v, 1)
    placement.set(v.id, t.id)
    moves.push({ vm: v.id, from: me.id, to: t.id, reason: 'underload' })
  }
  const saved = powerAt(me.powerCurveW, myUtil) - (me.sleepW ?? 0)
  if (saved - added < cfg.guards.minGain) return []
  return moves
}

/**
 * Best target for `v`: feasible by capacity and hard rules, healthy after the move under the
 * overload detector, ranked by the placement policy. With `busierThan` set (consolidation)
 * only active hosts busier than that utilisation qualify.
 */
function bestTarget (view: ClusterView, me: HostView, v: VmView, cfg: PolicyConfig,
  work: Map<HostId, Work>, placement: Map<VmId, HostId>, busierThan: number | null, wouldEmpty?: (h: HostView) => boolean, full?: ReadonlySet<HostId>): HostView | null {
  const p = cfg.placement
  const cap = p.cpuCapFraction ?? 1
  const cands: Array<{ h: HostView, score: number }> = []
  for (const h of view.hosts) {
    if (h.id === me.id || full?.has(h.id) === true) continue
    if ((h.memShortMiB ?? 0) > 0) continue
    const w = work.get(h.id)
    const demand = w?.demand ?? (h.reservedMips + sumDemand(h))
    const nVms = w?.vms.length ?? h.vms.length
    const active = nVms > 0 || h.reservedMips > 0
    if (busierThan !== null && (!active || demand / h.cpuMips <= busierThan)) continue
    if (!active && p.allowInactive === false) continue
    // its nominal size must fit the target's cores, not only its demand now: a VM that can ask
    // for more than a core gives is throttled there as soon as it does (measured: such VMs on
    // slower cores made 3/4 of the host time short of CPU outside migrations); coreNeed allows
    // one nominally a little larger than the cores when it has stayed well below them
    if (exceedsCores(h, v, coreNeed(v, h))) continue
    if (demand + v.cpuDemandMips > h.cpuMips * cap + 1e-9) continue
    const mem = w?.mem ?? (h.reservedMemMiB + h.vms.reduce((s, x) => s + x.memMiB, 0))
    if (mem + v.memMiB > hostMemAdmitMiB(h)) continue
    if (view.rules.vmVm.length + view.rules.vmHost.length > 0 && !hardAllows(view.rules, placement, v.id, h.id)) continue
    const u0 = demand / h.cpuMips
    const u1 = (demand + v.cpuDemandMips) / h.cpuMips
    let score: number
    if (p.kind === 'pabfd') {
      const before = active ? powerAt(h.powerCurveW, u0) : (p.countWake === false ? powerAt(h.powerCurveW, 0) : (h.sleepW ?? 0))
      score = powerAt(h.powerCurveW, u1) - before
      // An active host's idle power, shared by its VMs by the resource they bind (memory here):
      // hosts that carry a VM's memory at a lower idle power win, so the hosts left on are
      // those with the least idle power per unit of the binding resource
      if (active) score += powerAt(h.powerCurveW, 0) * Math.max(v.memMiB / Math.max(1, hostMemAdmitMiB(h)), v.cpuDemandMips / (h.cpuMips * cap))
      score += SPREAD_W * (hashStr(me.id + '>' + h.id) / 4294967296)
      if (active) score += MEM_FIT * powerAt(h.powerCurveW, 0) * (hostMemAdmitMiB(h) - mem - v.memMiB) / Math.max(1, hostMemAdmitMiB(h))
      if (wouldEmpty !== undefined && wouldEmpty(h)) score += TRANSIENT_W
    } else if (p.kind === 'leastLoaded') {
      score = u1
    } else {
      score = u1 * u1 - u0 * u0
    }
    if (view.rules.vmVm.length + view.rules.vmHost.length > 0) score += 1e6 * softPenalty(view.rules, placement, v.id, h.id)
    cands.push({ h, score })
  }
  cands.sort((a, b) => a.score - b.score)
  const det = p.overload === undefined ? cfg.overload : p.overload
  for (const c of cands) {
    if (det === null) return c.h
    const w = workOf(work, c.h)
    if (w.vms.length === 0) return c.h
    const trial: Work = { demand: w.demand, mem: w.mem, hist: w.hist.slice(), vms: w.vms.slice() }
    apply(trial, c.h, v, 1)
    if (!detectOverload(hostSample(c.h, cfg.intervalSec, trial.vms, trial.demand / c.h.cpuMips, trial.hist), det).overloaded) return c.h
  }
  return null
}

/**
 * A VM nominally at most CORE_NOMINAL_SLACK times a target's cores (per vCPU) may go there when
 * its peak demand over its history (and now) stayed within CORE_PEAK_FILL of them: it is
 * throttled there only if it rises above that peak by a third. Here the 2000-MIPS VMs may go to
 * the 1860-MIPS hosts, whose idle power is 86 W against 93.7 W, and the hosts left on are more
 * often the cheaper ones.
 */
const CORE_NOMINAL_SLACK = 1.1
const CORE_PEAK_FILL = 0.75

/** The MIPS `v` must find on `h`'s cores (over its vCPUs): its nominal size, or its recent peak with headroom (see CORE_PEAK_FILL). */
function coreNeed (v: VmView, h: HostView): number {
  const nominal = Math.max(v.cpuMips, v.cpuDemandMips)
  if (v.history.length === 0 || v.cpuMips > CORE_NOMINAL_SLACK * h.coreMips * Math.max(1, v.vcpus ?? 1)) return nominal
  let peak = v.cpuDemandMips / Math.max(1, v.cpuMips)
  for (const x of v.history) if (x > peak) peak = x
  return Math.min(nominal, Math.max(v.cpuDemandMips, peak * v.cpuMips / CORE_PEAK_FILL))
}

/**
 * The share of the view's active hosts that its load does not need, by the resource that binds:
 * 1 - (memory of their VMs and reservations / their admissible memory), or the same by CPU demand
 * against cpuCapFraction of their CPU if that is fuller. Packing is never perfect, so it is an
 * upper bound on the hosts that could sleep; consolidate() lets at least this share of the hosts
 * (the cheapest to empty) empty themselves, whatever underload.quantile says: with the quantile
 * alone the first decisions after a burst of placements emptied only half the hosts each round,
 * and their targets, holding VMs that just arrived, waited out the cool-down before the next
 * round, so the cluster took 3 hours to come down from 760 hosts on to about 170 (20110306). Measured
 * with the refusal memory (policies/decider.ts), `starling sim --day all --mode decentral --compare
 * --seed 1-3`, tuned on 20110306 and 20110309, checked on the other three days: see config.ts.
 */
export function surplusShare (view: ClusterView, cfg: PolicyConfig): number {
  let mem = 0; let memCap = 0; let cpu = 0; let cpuCap = 0
  const capFrac = cfg.placement.cpuCapFraction ?? 1
  for (const h of view.hosts) {
    if (h.vms.length === 0 && h.reservedMemMiB === 0 && h.reservedMips === 0) continue
    memCap += hostMemAdmitMiB(h)
    cpuCap += h.cpuMips * capFrac
    mem += h.reservedMemMiB
    cpu += h.reservedMips
    for (const v of h.vms) { mem += v.memMiB; cpu += v.cpuDemandMips }
  }
  if (memCap <= 0 || cpuCap <= 0) return 0
  return Math.max(0, 1 - Math.max(mem / memCap, cpu / cpuCap))
}

/**
 * What emptying a host costs: demand (MIPS) x memory (MiB) squared, summed over its VMs. Demand x
 * memory is the degradation a copy causes (the demand it slows, for the copy time); memory counts
 * once more because a large VM is also what finds no room: its copy holds its target longer and
 * more targets refuse it, so hosts of small VMs go first. Measured with SPREAD_W 20 and TRANSIENT_W
 * 8 (the numbers at TRANSIENT_W); on the five days, seed 1, with SPREAD_W 10 and TRANSIENT_W 3 it
 * gave 0-0.9 % less energy than demand x memory but ESV 1.02x the best policy's on 20110322.
 */
function evacuationCost (vms: readonly VmView[]): number {
  let c = 0
  for (const v of vms) c += v.cpuDemandMips * v.memMiB * v.memMiB
  return c
}

function sumDemand (h: HostView): number {
  let s = 0
  for (const v of h.vms) s += v.cpuDemandMips
  return s
}

/** Capacity check over a whole plan (for tests and the reservation step). */
export function planFits (view: ClusterView, moves: readonly Move[]): boolean {
  const byId = new Map(view.hosts.map(h => [h.id, h]))
  const vmById = new Map<VmId, VmView>()
  for (const h of view.hosts) for (const v of h.vms) vmById.set(v.id, v)
  const demand = new Map<HostId, number>()
  const mem = new Map<HostId, number>()
  for (const h of view.hosts) {
    demand.set(h.id, h.reservedMips + sumDemand(h))
    mem.set(h.id, h.reservedMemMiB + h.vms.reduce((s, x) => s + x.memMiB, 0))
  }
  for (const m of moves) {
    const v = vmById.get(m.vm); const t = byId.get(m.to)
    if (v === undefined || t === undefined) return false
    if (!fits({ ...t, vms: [], reservedMips: demand.get(t.id) ?? 0, reservedMemMiB: mem.get(t.id) ?? 0 }, v)) return false
    demand.set(t.id, (demand.get(t.id) ?? 0) + v.cpuDemandMips)
    demand.set(m.from, (demand.get(m.from) ?? 0) - v.cpuDemandMips)
    mem.set(t.id, (mem.get(t.id) ?? 0) + v.memMiB)
    mem.set(m.from, (mem.get(m.from) ?? 0) - v.memMiB)
  }
  return true
}
