/**
 * Which VMs move where, decided by each host for its own VMs from its gossiped view (DESIGN:
 * Target election; L1, L2). The same policies/ functions as the simulator:
 *
 * - Stress: every decision goes to this host's policies/decider.ts HostDecider, the same state
 *   machine every host of the trace simulator's decentralised mode runs (streaks of decisions
 *   that found a relief or consolidation plan, hold time, minimum gain, per-VM cool-down
 *   counted in decisions, the planner policies/plan.ts planHost); each move becomes a migration whose target still admits
 *   or refuses it against its own state (reservation.ts admit(), also the simulator's). The
 *   decider hears which VMs arrived here (their cool-down starts) and which proposals ended
 *   without the VM moving (they get their old clock back).
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
import { HostDecider } from '../../../policies/decider.js'
import { defaultPowerCurveW, rankTargets } from '../../../policies/placement.js'
import type { ClusterView, HostView, VmView } from '../../../policies/types.js'
import type { MigrationMachine } from './migration-machine.js'
import type { MigrationRecord } from './migration-state.js'
import type { ReplicaManager } from '../replica/replica-manager.js'
import { chooseRelief, shouldRetire } from '../../../policies/replication.js'

const HISTORY_MAX = 60

export class Scheduler {
  private nextDecision: number
  private nextBalance: number
  private readonly decider: HostDecider
  /** Migration records already reported to the decider (arrivals, ended proposals). */
  private readonly noted = new Set<string>()
  private readonly history = new Map<HostId, { seq: number, utils: number[] }>()
  /** This host's VMs: utilisation of their own vCPUs at each recorded report (the policies' VmView.history). */
  private readonly vmHistory = new Map<VmId, number[]>()

  constructor (private readonly s: CoreState, private readonly m: MigrationMachine, private readonly replicas: ReplicaManager | null = null) {
    this.nextDecision = m.cfg.decisionTicks
    this.nextBalance = m.cfg.balanceTicks
    this.decider = new HostDecider(m.cfg.policy)
  }

  /** The earliest tick at which tick() may act: the next balancing decision or drain step. */
  nextDue (): number { return Math.min(this.nextBalance, this.nextDecision) }

  tick (): void {
    const s = this.s
    // Balancing decisions every balanceTicks (the policy's interval: its guards and detector
    // count these); drain steps every decisionTicks (a drain should not wait for the policy).
    const balance = s.now >= this.nextBalance
    const step = s.now >= this.nextDecision
    if (!balance && !step) return
    if (step) this.nextDecision = s.now + this.m.cfg.decisionTicks
    if (balance) {
      this.nextBalance = s.now + this.m.cfg.balanceTicks
      this.recordHistory()
    }
    this.noteRecords()
    if (s.leaving) return
    if (this.m.draining) { if (step) this.drainStep(); return }
    if (balance && this.m.cfg.autoBalance) this.stressStep()
    if (balance && this.m.cfg.autoBalance) this.retireStep()
  }

  /** Tell the decider which VMs this host admitted and which of its proposals ended with the VM still here. */
  private noteRecords (): void {
    for (const id of this.noted) if (!this.m.recs.has(id)) this.noted.delete(id)
    for (const r of this.m.recs.values()) {
      if (this.noted.has(r.id)) continue
      if (r.role === 'target') {
        if (r.state !== 'aborted') this.decider.arrived(r.vm)
        this.noted.add(r.id)
      } else if (r.state === 'aborted') {
        this.decider.cancelled(r.vm)
        this.noted.add(r.id)
      } else if (r.state === 'committed') {
        this.noted.add(r.id)
      }
    }
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
        if (mb.id === this.s.self) {
          const cores = Math.max(1, r.capacity.cpuCores)
          for (const v of r.vms) {
            const hv = this.vmHistory.get(v.id) ?? []
            hv.push(Math.min(1, v.cpuUtil * cores / Math.max(1, v.vcpus)))
            if (hv.length > HISTORY_MAX) hv.shift()
            this.vmHistory.set(v.id, hv)
          }
          for (const id of [...this.vmHistory.keys()]) if (!r.vms.some(v => v.id === id)) this.vmHistory.delete(id)
        }
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
    const moving = new Set(this.m.live().map(r => r.vm))
    for (const mb of s.members.byId.values()) {
      if (mb.state !== 'alive' || mb.report === null) continue
      const rep = mb.report
      const cap = rep.capacity
      const cpuMips = cap.cpuCores * cap.cpuMipsPerCore
      const vms: VmView[] = rep.vms.filter(v => mb.id === s.self || v.state !== 'migrating').map(v => ({
        id: v.id,
        host: mb.id,
        cpuMips: v.vcpus * cap.cpuMipsPerCore,
        cpuDemandMips: v.cpuUtil * cpuMips,
        memMiB: v.memMiB,
        history: mb.id === s.self ? (this.vmHistory.get(v.id) ?? []) : [],
        migrating: v.state === 'migrating' || (mb.id === s.self && moving.has(v.id))
      }))
      const e = extra.get(mb.id)
      hosts.push({
        id: mb.id,
        cpuMips,
        coreMips: cap.cpuMipsPerCore,
        memMiB: cap.memMiB,
        netMbps: cap.netMbps,
        // Hosts do not report a power curve yet: the same typical curve for all, scaled by cores.
        powerCurveW: defaultPowerCurveW(cap.cpuCores),
        vms,
        reservedMips: e?.mips ?? 0,
        reservedMemMiB: e?.mem ?? 0,
        history: this.history.get(mb.id)?.utils ?? [rep.cpuUtil],
        active: true
      })
    }
    return { hosts, rules: this.m.rules(), tick: this.decider.decisionCount }
  }

  private vmMem (vm: VmId): number {
    return this.m.localVms.find(v => v.id === vm)?.memMiB ?? 0
  }

  private stressStep (): void {
    const view = this.view()
    const me = view.hosts.find(h => h.id === this.s.self)
    if (me === undefined) return
    const moves = this.decider.decide({
      self: me,
      view: () => view,
      receiving: this.m.liveIn().length > 0,
      outSlots: this.m.cfg.outMax - this.m.liveOut().length,
      moving: vm => this.m.isMoving(vm) || this.replicas?.hosted(vm) === true
    })
    const rp = this.replicas
    const reliefs = rp === null
      ? moves.map(move => ({ kind: 'migrate' as const, move }))
      : chooseRelief(view, this.s.self, moves, vm => rp.replicable(vm), this.m.cfg.policy, rp.opts.params, rp.copies())
    for (const rl of reliefs) {
      if (rl.kind === 'replicate') {
        // The VM stays here: the decider gets its clock back, the replica takes half its requests.
        this.decider.cancelled(rl.vm)
        rp?.start(rl.vm, rl.to, `overload: replica costs ${Math.round(rl.costReplicate)} MIPS-s against ${Math.round(rl.costMigrate)} to migrate`)
        continue
      }
      const mv = rl.move
      const r = this.m.start(mv.vm, mv.to, mv.reason)
      if (r.state === 'aborted') { this.decider.cancelled(mv.vm); this.noted.add(r.id) }
    }
  }

  /** Retire the replicas of VMs whose host can carry their whole demand again (policies/replication.ts). */
  private retireStep (): void {
    const rp = this.replicas
    if (rp === null) return
    const running = [...rp.out.values()].filter(r => r.state === 'running' && r.reason !== 'operator')
    if (running.length === 0) return
    const view = this.view()
    const me = view.hosts.find(h => h.id === this.s.self)
    if (me === undefined) return
    for (const r of running) {
      const v = me.vms.find(x => x.id === r.vm)
      if (v === undefined) continue
      if (shouldRetire(view, this.s.self, v, this.m.cfg.policy, rp.opts.params)) rp.retire(r.vm, 'this host can carry the whole demand again')
    }
  }

  /** Operator: start a replica of `vm` (here) on `to`, or on the best target for a replica. */
  operatorReplicate (vm: VmId, to: string | undefined): { ok: true } | { error: string } {
    const rp = this.replicas
    if (rp === null) return { error: 'replication is not configured' }
    if (!this.m.localVms.some(v => v.id === vm)) {
      for (const mb of this.s.members.byId.values()) {
        if (mb.id !== this.s.self && mb.state === 'alive' && mb.report?.vms.some(v => v.id === vm) === true) return { error: `VM ${vm} runs on ${mb.name}: ask that host's agent` }
      }
      return { error: `no alive host reports VM ${vm}` }
    }
    let target: HostId | null
    if (to === undefined || to === '') {
      const view = this.view()
      const placement = new Map<VmId, HostId>()
      for (const h of view.hosts) for (const x of h.vms) placement.set(rp.hosted(x.id) ? vm : x.id, h.id)
      const v = view.hosts.find(h => h.id === this.s.self)?.vms.find(x => x.id === vm) ?? this.fallbackVm(vm)
      if (v === undefined) return { error: `no sample of VM ${vm} yet` }
      const hosts = view.hosts.filter(h => h.id !== this.s.self)
      const ranked = rankTargets(hosts, { ...v, migrating: false }, view.rules, placement, { ...this.m.cfg.policy.placement, kind: 'leastLoaded' })
      target = ranked[0]?.host.id ?? null
      if (target === null) return { error: `no feasible host for a replica of ${vm}` }
    } else {
      target = this.resolveHost(to)
      if (target === null) return { error: `no member named ${to}` }
    }
    const r = rp.start(vm, target, 'operator')
    return 'error' in r ? r : { ok: true }
  }

  private drainStep (): void {
    const s = this.s
    for (const v of this.m.localVms) {
      if (this.m.liveOut().length >= this.m.cfg.outMax) return
      if (this.m.isMoving(v.id) || this.replicas?.hosted(v.id) === true) continue
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
