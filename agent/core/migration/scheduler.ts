/**
 * Which VMs move where, decided by each host for its own VMs from its gossiped view (DESIGN:
 * Target election; L1, L2). The same policies/ functions as the simulator:
 *
 * - Stress: every decision, the host's view goes to policies/plan.ts planHost, whose detector
 *   (k of the last n samples over a threshold, and the forecast over it too), hold time,
 *   minimum gain and per-VM cool-down (counted in decisions) choose the moves; each move becomes
 *   a migration whose target still admits or refuses it against its own state.
 * - Drain: the host refuses incoming VMs and moves its own, each to the best-ranked target
 *   (policies/placement.ts rankTargets), ranking again after each reservation with the
 *   reservations this host already placed counted on their targets, so the VMs spread instead of
 *   piling onto one target.
 * - Operator moves: to a named host, or to the best-ranked one.
 * Nothing moves unless a majority of members gossip the same rules hash (the agreement mechanism
 * for the rule set, for now: the set comes from configuration and must be the same everywhere).
 */
import type { CoreState } from '../state.js'
import type { HostId, VmId } from '../types.js'
import { planHost, type HostDecisionState } from '../../../policies/plan.js'
import { rankTargets } from '../../../policies/placement.js'
import type { ClusterView, HostView, VmView } from '../../../policies/types.js'
import type { MigrationMachine } from './migration-machine.js'
import type { MigrationRecord } from './migration-state.js'

const HISTORY_MAX = 60

export class Scheduler {
  private nextDecision: number
  private decisions = 0
  private overStreak = 0
  private underStreak = 0
  private readonly lastMoved = new Map<VmId, number>()
  private readonly history = new Map<HostId, { seq: number, utils: number[] }>()

  constructor (private readonly s: CoreState, private readonly m: MigrationMachine) {
    this.nextDecision = m.cfg.decisionTicks
  }

  tick (): void {
    const s = this.s
    if (s.now < this.nextDecision) return
    this.nextDecision = s.now + this.m.cfg.decisionTicks
    this.decisions++
    this.recordHistory()
    for (const r of this.m.recs.values()) if (r.role === 'source' && r.state === 'committed') this.lastMoved.set(r.vm, this.decisions)
    if (s.leaving) return
    if (this.m.draining) { this.drainStep(); return }
    if (this.m.cfg.autoBalance) this.stressStep()
  }

  private recordHistory (): void {
    for (const mb of this.s.members.byId.values()) {
      const r = mb.report
      if (r === null) continue
      const h = this.history.get(mb.id) ?? { seq: 0, utils: [] }
      if (r.seq !== h.seq) {
        h.seq = r.seq
        h.utils.push(r.cpuUtil)
        if (h.utils.length > HISTORY_MAX) h.utils.shift()
      }
      this.history.set(mb.id, h)
    }
  }

  /** The frozen view the policies decide over: alive members with a report, reservations counted. */
  view (): ClusterView {
    const s = this.s
    const hosts: HostView[] = []
    const extra = new Map<HostId, { mips: number, mem: number }>()
    for (const r of this.m.liveOut()) {
      const e = extra.get(r.target) ?? { mips: 0, mem: 0 }
      e.mips += r.cpuDemandMips
      e.mem += r.spec?.memMiB ?? this.vmMem(r.vm)
      extra.set(r.target, e)
    }
    for (const mb of s.members.byId.values()) {
      if (mb.state !== 'alive' || mb.report === null) continue
      const rep = mb.report
      const cap = rep.capacity
      const cpuMips = cap.cpuCores * cap.cpuMipsPerCore
      const moving = new Set(this.m.live().map(r => r.vm))
      const vms: VmView[] = rep.vms.filter(v => mb.id === s.self || v.state !== 'migrating').map(v => ({
        id: v.id,
        host: mb.id,
        cpuMips: v.vcpus * cap.cpuMipsPerCore,
        cpuDemandMips: v.cpuUtil * cpuMips,
        memMiB: v.memMiB,
        history: [],
        migrating: v.state === 'migrating' || (mb.id === s.self && moving.has(v.id))
      }))
      const e = extra.get(mb.id)
      hosts.push({
        id: mb.id,
        cpuMips,
        coreMips: cap.cpuMipsPerCore,
        memMiB: cap.memMiB,
        netMbps: cap.netMbps,
        powerCurveW: [],
        vms,
        reservedMips: e?.mips ?? 0,
        reservedMemMiB: e?.mem ?? 0,
        history: this.history.get(mb.id)?.utils ?? [rep.cpuUtil],
        active: true
      })
    }
    return { hosts, rules: this.m.rules(), tick: this.decisions }
  }

  private vmMem (vm: VmId): number {
    return this.m.localVms.find(v => v.id === vm)?.memMiB ?? 0
  }

  private stressStep (): void {
    const view = this.view()
    const me = view.hosts.find(h => h.id === this.s.self)
    if (me === undefined) return
    const cfg = this.m.cfg.policy
    const st: HostDecisionState = { overStreak: 0, underStreak: 0, lastMoved: this.lastMoved }
    // Streaks: the detector's own verdict on the current view, counted per decision.
    const moves0 = planHost(view, this.s.self, cfg, { ...st, overStreak: Number.MAX_SAFE_INTEGER, underStreak: Number.MAX_SAFE_INTEGER })
    const over = moves0.some(mv => mv.reason === 'overload')
    const under = moves0.some(mv => mv.reason === 'underload')
    this.overStreak = over ? this.overStreak + 1 : 0
    this.underStreak = under ? this.underStreak + 1 : 0
    if (!over && !under) return
    const moves = planHost(view, this.s.self, cfg, { overStreak: this.overStreak, underStreak: this.underStreak, lastMoved: this.lastMoved })
    for (const mv of moves) {
      if (this.m.liveOut().length >= this.m.cfg.outMax) break
      if (this.m.isMoving(mv.vm)) continue
      this.m.start(mv.vm, mv.to, mv.reason)
      this.lastMoved.set(mv.vm, this.decisions)
    }
  }

  private drainStep (): void {
    const s = this.s
    for (const v of this.m.localVms) {
      if (this.m.liveOut().length >= this.m.cfg.outMax) return
      if (this.m.isMoving(v.id)) continue
      const recent = [...this.m.recs.values()].find(r => r.vm === v.id && r.role === 'source' && r.state === 'aborted' && s.now - r.updatedTick < this.m.cfg.decisionTicks * 3)
      if (recent !== undefined) continue
      const to = this.bestTarget(v.id)
      if (to === null) continue
      this.m.start(v.id, to, 'drain')
    }
  }

  /** Best-ranked target for one of this host's VMs, counting this host's live reservations. */
  bestTarget (vm: VmId): HostId | null {
    const view = this.view()
    const me = view.hosts.find(h => h.id === this.s.self)
    const v = me?.vms.find(x => x.id === vm) ?? this.fallbackVm(vm)
    if (v === undefined) return null
    const placement = new Map<VmId, HostId>()
    for (const h of view.hosts) for (const x of h.vms) placement.set(x.id, h.id)
    for (const r of this.m.liveOut()) placement.set(r.vm, r.target)
    const hosts = view.hosts.filter(h => h.id !== this.s.self)
    const ranked = rankTargets(hosts, { ...v, migrating: false }, view.rules, placement, { ...this.m.cfg.policy.placement, kind: 'leastLoaded' })
    return ranked[0]?.host.id ?? null
  }

  private fallbackVm (vm: VmId): VmView | undefined {
    const v = this.m.localVms.find(x => x.id === vm)
    const cap = this.m.capacity
    if (v === undefined || cap === null) return undefined
    const mips = cap.cpuCores * cap.cpuMipsPerCore
    return { id: v.id, host: this.s.self, cpuMips: v.vcpus * cap.cpuMipsPerCore, cpuDemandMips: v.cpuUtil * mips, memMiB: v.memMiB, history: [], migrating: false }
  }

  /** Operator: move `vm` (here) to `to` (a member's name or id), or where the cluster chooses. */
  operatorMove (vm: VmId, to: string | undefined): MigrationRecord | { forwardTo: HostId } | { error: string } {
    const s = this.s
    if (!this.m.localVms.some(v => v.id === vm)) {
      for (const mb of s.members.byId.values()) {
        if (mb.id !== s.self && mb.state === 'alive' && mb.report?.vms.some(v => v.id === vm && v.state !== 'migrating') === true) return { forwardTo: mb.id }
      }
      return { error: `no alive host reports VM ${vm}` }
    }
    let target: HostId | null
    if (to === undefined || to === '') {
      target = this.bestTarget(vm)
      if (target === null) return { error: `no feasible target for VM ${vm}` }
    } else {
      target = this.resolveHost(to)
      if (target === null) return { error: `no member named ${to}` }
    }
    return this.m.start(vm, target, 'operator')
  }

  resolveHost (nameOrId: string): HostId | null {
    for (const mb of this.s.members.byId.values()) if (mb.name === nameOrId || mb.id === nameOrId) return mb.id
    return null
  }
}
