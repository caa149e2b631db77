/**
 * One host's decision state machine: the object the agent core's scheduler
 * (agent/core/migration/scheduler.ts) holds for its host, and the one every simulated host
 * holds in the decentralised mode of `starling sim` (agent/sim/trace/decentral.ts). Both call
 * `decide()` once per decision and tell it what happened to the moves; nothing else decides.
 *
 * Per decision:
 * 1. This host's own fresh sample: neither overloaded nor underloaded, the streaks end and
 *    nothing happens (most hosts, most decisions: the gossiped view is not even built).
 * 2. Otherwise the view goes to policies/plan.ts planHost (with the per-VM cool-down). `over`
 *    counts consecutive decisions that found an overload relief plan, `under` those that found
 *    a consolidation plan: the hold time (guards.holdDecisions) asks that a *feasible* move has
 *    been there for that many decisions, not only the condition. Measured on the five PlanetLab
 *    days (seeds 1 and 2), counting the condition alone made 11-13 % more migrations with
 *    4-22 % more SLAV and the same energy: a move that appears for one decision (a target that
 *    looked free in a stale view) is often gone, or wrong, at the next.
 * 3. The plan is carried out once its streak has held, none for a VM already moving: overload
 *    relief at most `outSlots` moves; a consolidation whole (it is reserved as one group and its
 *    copies run `outSlots` at a time, agent/core/migration/evacuation.ts), once at least one slot
 *    is free. A host with VMs on their way in (`receiving`) does not empty itself (it would send
 *    them on again).
 *
 * Cool-down (guards.cooldownDecisions, counted in this host's decisions): a VM's clock starts at
 * the decision that proposes it (source side) or when this host admits it (`arrived`, target
 * side: a VM that just came in is not sent on at once). A proposal that ends without the VM
 * moving (refused by the target, aborted) gives the VM its previous clock back (`cancelled`).
 *
 * Deterministic: no clock, no randomness; the same calls in the same order give the same moves.
 */
import { conditionHeld } from './antithrash.js'
import { detectOverload } from './overload.js'
import { hardRulesName, hostSample, planHost, repairRules, type PolicyConfig } from './plan.js'
import { isUnderloaded } from './underload.js'
import type { ClusterView, HostId, HostView, Move, RuleSet, SeededRandom, VmId } from './types.js'

export interface DecideInput {
  /** This host as it is now (its own sample, never stale). */
  self: HostView
  /** The gossiped view of the cluster, this host included; asked for only when there is something to decide. */
  view: () => ClusterView
  /** VMs are on their way to this host (it holds incoming reservations). */
  receiving: boolean
  /** How many more copies this host may start now (a consolidation needs one; its other copies wait for slots). */
  outSlots: number
  /** Is this VM already moving (from or to this host)? */
  moving?: (vm: VmId) => boolean
  /**
   * The agreed rules, when the caller has them at hand: a VM here that breaks a hard one is moved
   * first, with no hold (plan.ts repairRules); the view is built only when a hard rule names a VM here.
   */
  rules?: RuleSet
}

const HELD = Number.MAX_SAFE_INTEGER

/**
 * Decisions after a target refused one of this host's moves during which no move goes to it
 * (`refused`): the view that showed room there is older than the refusal, and the next one most
 * likely too (reports one decision old), so the same plan would be refused again. In the
 * simulator's ramp-down after the first placement 70 % of the consolidations were refused for
 * memory by targets that other sources had just filled, most of them again at the next decision.
 */
const REFUSAL_MEMORY_DECISIONS = 1

export class HostDecider {
  private decisions = 0
  private over = 0
  private under = 0
  private readonly lastMoved = new Map<VmId, number>()
  /** Targets that refused a move of this host, with the decision that proposed it. */
  private readonly refusedBy = new Map<HostId, number>()
  /** Clock a VM had before its current proposal (undefined: never moved). */
  private readonly before = new Map<VmId, number | undefined>()

  /** `random`: the random source for the random selection (the caller's seeded generator). */
  constructor (readonly cfg: PolicyConfig, private readonly random: SeededRandom) {}

  /** Decisions made so far (the tick the cool-down counts in). */
  get decisionCount (): number { return this.decisions }
  get overStreak (): number { return this.over }
  get underStreak (): number { return this.under }

  decide (inp: DecideInput): Move[] {
    const cfg = this.cfg
    const me = inp.self
    this.decisions++
    this.prune()
    if (inp.rules !== undefined && hardRulesName(inp.rules, me)) {
      const fixes = repairRules(inp.view(), me, cfg)
      const out = this.take(fixes, inp)
      if (out.length > 0) { this.over = 0; this.under = 0; return out }
    }
    const smp = hostSample(me, cfg.intervalSec)
    // A host short of memory that its balloons cannot cover is stressed as an overloaded CPU is.
    // A CPU overload that the host's CPU allocation resolves (its important VMs served) is not stress.
    const cpuStressed = detectOverload(smp, cfg.overload).overloaded && me.cpuResolved !== true
    const overloaded = me.vms.length > 0 && (cpuStressed || (me.memShortMiB ?? 0) > 0)
    const underloaded = me.vms.length > 0 && !overloaded && isUnderloaded(smp.util, me.history, cfg.underload)
    if (!overloaded && !underloaded) { this.over = 0; this.under = 0; return [] }
    // With the streaks taken as held, planHost returns what this host would do: its reason is
    // the streak that runs on; the same plan is carried out once that streak has held.
    const avoid = new Set<HostId>()
    for (const [h, d] of this.refusedBy) {
      if (this.decisions - d <= REFUSAL_MEMORY_DECISIONS) avoid.add(h)
      else this.refusedBy.delete(h)
    }
    const plan = planHost({ ...inp.view(), tick: this.decisions }, me.id, cfg, { overStreak: HELD, underStreak: HELD, lastMoved: this.lastMoved, random: this.random, avoid })
    const reason = plan[0]?.reason
    this.over = reason === 'overload' ? this.over + 1 : 0
    this.under = reason === 'underload' ? this.under + 1 : 0
    if (reason === undefined || !conditionHeld(reason === 'overload' ? this.over : this.under, cfg.guards)) return []
    if (reason === 'underload' && inp.receiving) return []
    // A consolidation is carried out whole or not at all, its copies staged over the outgoing
    // slots: it starts once one is free (the streak runs on until then).
    if (reason === 'underload' && inp.outSlots < 1) return []
    // Nor one with a VM that cannot go now (moving already, or a replica hosted here): the others
    // alone would leave the host half emptied.
    if (reason === 'underload' && plan.some(mv => inp.moving?.(mv.vm) === true)) return []
    return this.take(plan, inp, reason === 'underload' ? plan.length : inp.outSlots)
  }

  /** The moves carried out now (at most `most`, none for a VM already moving), their VMs' clocks started. */
  private take (plan: readonly Move[], inp: DecideInput, most = inp.outSlots): Move[] {
    const out: Move[] = []
    for (const mv of plan) {
      if (out.length >= most) break
      if (inp.moving?.(mv.vm) === true) continue
      out.push(mv)
      this.before.set(mv.vm, this.lastMoved.get(mv.vm))
      this.lastMoved.set(mv.vm, this.decisions)
    }
    return out
  }

  /** `target` refused (did not admit) a move this host proposed at its last decision. */
  refused (target: HostId): void {
    this.refusedBy.set(target, this.decisions)
  }

  /** This host admitted `vm` (it is coming here): its cool-down starts now. */
  arrived (vm: VmId): void {
    this.before.delete(vm)
    this.lastMoved.set(vm, this.decisions)
  }

  /** A proposal for `vm` ended without the VM moving: it gets its previous clock back. */
  cancelled (vm: VmId): void {
    if (!this.before.has(vm)) return
    const prev = this.before.get(vm)
    this.before.delete(vm)
    if (prev === undefined) this.lastMoved.delete(vm)
    else this.lastMoved.set(vm, prev)
  }

  /** Clocks that no longer hold anything back are dropped (bounded memory). */
  private prune (): void {
    const cd = this.cfg.guards.cooldownDecisions
    if (this.lastMoved.size < 64) return
    for (const [vm, t] of this.lastMoved) {
      if (this.decisions - t > cd + 1) { this.lastMoved.delete(vm); this.before.delete(vm) }
    }
  }
}
