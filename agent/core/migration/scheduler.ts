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
import { seededPrng } from '../prng.js'
import { HostDecider } from '../../../policies/decider.js'
import { defaultPowerCurveW, exceedsCores, fits, rankTargets } from '../../../policies/placement.js'
import { hardAllows } from '../../../policies/rules.js'
import { hostDemandMips, hostMemUsedMiB, memOvercommitMiB, type ClusterView, type HostView, type VmView } from '../../../policies/types.js'
import type { MigrationMachine } from './migration-machine.js'
import type { MigrationRecord, StorageWanted } from './migration-state.js'
import type { ReplicaManager } from '../replica/replica-manager.js'
import { chooseRelief, shouldRetire } from '../../../policies/replication.js'
import { clusterPlan, type ClusterPlan } from '../../../policies/cluster-plan.js'
import type { PolicyConfig } from '../../../policies/plan.js'
import { reservedWhole } from './evacuation.js'

const HISTORY_MAX = 60
/** Drain steps a target that refused a VM is left out of that VM's choices. */
const REFUSAL_MEMORY_STEPS = 10

/** A source's record aborted because the target refused the reservation (migration-machine.ts, reservationRefused). */
function refusedByTarget (r: MigrationRecord): boolean { return r.reason.startsWith('target refused') }

/** Where one VM of a draining host stands (`starling drain` prints these). */
export interface DrainVmOutcome {
  vm: VmId
  /**
   * moving: a migration of it is in flight; retrying: its last drain migration aborted (the
   * reason says why) and it is tried again; waiting: a target exists, the move starts at a later
   * drain step (outgoing limit); no target: no host can take it (the reason names each host's).
   */
  state: 'moving' | 'retrying' | 'waiting' | 'no target'
  /** Target's name, when there is one. */
  target: string | null
  reason: string
}

/** A drain as this host sees it: its own (exact), or one it asked another host for (from gossip). */
export interface DrainReport {
  host: HostId
  name: string
  /** True when this is this host's own drain (outcomes from its own records). */
  own: boolean
  /** VMs the drained host still runs, as its latest report (or, for its own drain, its sample) says. */
  vms: DrainVmOutcome[]
  /** Drain migrations that committed (own drain only). */
  moved: number
}

export class Scheduler {
  private nextDecision: number
  private nextBalance: number
  private readonly decider: HostDecider
  /** Migration records already reported to the decider (arrivals, ended proposals). */
  private readonly noted = new Set<string>()
  private readonly history = new Map<HostId, { seq: number, utils: number[] }>()
  /**
   * This host's own memory shortfall is not acted on in its reports up to this seq: a VM just left,
   * and the balloon loop's picture in the next report or two still counts it (it runs a sample
   * behind), which would send a second VM after the first.
   */
  private memShortQuietSeq = 0
  /** This host's VMs: utilisation of their own vCPUs at each recorded report (the policies' VmView.history). */
  private readonly vmHistory = new Map<VmId, number[]>()

  constructor (private readonly s: CoreState, private readonly m: MigrationMachine, private readonly replicas: ReplicaManager | null = null) {
    this.nextDecision = m.cfg.decisionTicks
    this.nextBalance = m.cfg.balanceTicks
    this.decider = new HostDecider(this.policy(), seededPrng)
  }

  /**
   * The policy as this host's migrations run it: a consolidation places no more VMs on one target
   * than a target admits at once (migration.inMax), since it is reserved as a whole.
   */
  private policy (): PolicyConfig {
    return { ...this.m.cfg.policy, maxIncomingPerTarget: this.m.cfg.inMax }
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
        // a target that refused the reservation is not asked again at once (policies/decider.ts)
        if (refusedByTarget(r)) this.decider.refused(r.target)
        this.noted.add(r.id)
      } else if (r.state === 'committed') {
        this.noted.add(r.id)
        this.memShortQuietSeq = (this.s.members.byId.get(this.s.self)?.report?.seq ?? 0) + 2
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
        vcpus: v.vcpus,
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
        active: true,
        ...(rep.memory !== undefined && rep.memory.unmetMiB > 0 && !(mb.id === s.self && rep.seq <= this.memShortQuietSeq) ? { memShortMiB: rep.memory.unmetMiB } : {}),
        // The overcommit its target admission would take (reservation.ts): the same figure here,
        // so that the decider proposes only moves the target can admit.
        ...(rep.memory !== undefined && this.m.cfg.memOvercommitRatio > 1 ? { memOverMiB: memOvercommitMiB(cap.memMiB, rep.memory.reclaimableMiB, this.m.cfg.memOvercommitRatio) } : {}),
        ...(rep.cpuResolved === true ? { cpuResolved: true } : {})
      })
    }
    return { hosts, rules: this.m.rules(), tick: this.decider.decisionCount }
  }

  /**
   * The cluster's plan from this view (policies/cluster-plan.ts): what the hosts would do now.
   * The VMs' own histories, which only their host keeps, are replaced by their demand now over
   * the host's history (a VM taken off a host takes its share of the history along). Agents draw
   * the same plan from the same reports while no migration is in flight; they may differ while
   * one is (each counts its own reservations and its own moving VMs) and by the phase at which
   * each recorded the hosts' histories.
   */
  plan (): ClusterPlan {
    const v = this.view()
    const shared: ClusterView = {
      ...v,
      hosts: v.hosts.map(h => ({ ...h, vms: h.vms.map(x => ({ ...x, history: h.history.map(() => x.cpuMips > 0 ? x.cpuDemandMips / x.cpuMips : 0) })) }))
    }
    return clusterPlan(shared, this.policy())
  }

  private vmMem (vm: VmId): number {
    return this.m.localVms.find(v => v.id === vm)?.memMiB ?? 0
  }

  private stressStep (): void {
    if (this.m.cfg.automation === 'manual') return
    const view = this.view()
    const me = view.hosts.find(h => h.id === this.s.self)
    if (me === undefined) return
    const decided = this.decider.decide({
      self: me,
      view: () => view,
      receiving: this.m.liveIn().length > 0,
      outSlots: this.m.cfg.outMax - this.m.liveOut().length,
      moving: vm => this.m.isMoving(vm) || this.replicas?.hosted(vm) === true,
      rules: view.rules
    })
    // partial: consolidation is only recommended (a broken hard rule is repaired, as placement
    // is automatic); the decider gets the VMs' clocks back.
    const moves = this.m.cfg.automation === 'partial' ? decided.filter(mv => mv.reason === 'overload' || mv.reason === 'rule') : decided
    for (const mv of decided) if (!moves.includes(mv)) this.decider.cancelled(mv.vm)
    const rp = this.replicas
    const reliefs = rp === null
      ? moves.map(move => ({ kind: 'migrate' as const, move }))
      : chooseRelief(view, this.s.self, moves, vm => rp.replicable(vm), this.m.cfg.policy, rp.opts.params, rp.copies())
    // A consolidation of several moves is reserved as a whole (evacuation.ts): its copies start
    // (outMax at a time), or none and the decider gets the VMs' clocks back (noteRecords).
    const migrations = reliefs.flatMap(rl => rl.kind === 'migrate' ? [rl.move] : [])
    if (reservedWhole(migrations) && migrations.length === reliefs.length) {
      const recs = this.m.startGroup(migrations.map(mv => ({ vm: mv.vm, to: mv.to })), 'underload')
      for (const r of recs) if (r.state === 'aborted') { this.decider.cancelled(r.vm); this.noted.add(r.id) }
      return
    }
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

  /** Hosts this agent asked to drain on an operator's behalf (their outcome is reported from gossip). */
  private readonly drainsAsked = new Set<HostId>()

  noteDrainAsked (host: HostId): void { this.drainsAsked.add(host) }

  /** The drains this host runs or asked for, per VM (DrainReport). */
  drainReports (): DrainReport[] {
    const s = this.s
    const out: DrainReport[] = []
    const nameOf = (id: HostId): string => s.members.get(id)?.name ?? id.slice(0, 8)
    if (this.m.draining) {
      const vms: DrainVmOutcome[] = []
      for (const v of this.m.localVms) {
        if (this.replicas?.hosted(v.id) === true) continue
        const live = this.m.liveOut().find(r => r.vm === v.id)
        if (live !== undefined) {
          const p = live.progress
          const pct = p !== null && p.transferredBytes + p.remainingBytes > 0 ? ` ${Math.round(100 * p.transferredBytes / (p.transferredBytes + p.remainingBytes))} %` : ''
          vms.push({ vm: v.id, state: 'moving', target: nameOf(live.target), reason: `migration ${live.id} ${live.state}${pct}` })
          continue
        }
        const latest = [...this.m.recs.values()].filter(r => r.vm === v.id && r.role === 'source').sort((a, b) => b.updatedTick - a.updatedTick)[0]
        if (latest?.state === 'committed') {
          // Moved; the paused copy here is being stopped and leaves the next sample.
          vms.push({ vm: v.id, state: 'moving', target: nameOf(latest.target), reason: `migration ${latest.id} committed` })
          continue
        }
        const recent = [...this.m.recs.values()].filter(r => r.vm === v.id && r.role === 'source' && r.state === 'aborted' && r.cause === 'drain').sort((a, b) => b.updatedTick - a.updatedTick)[0]
        const retrying = recent !== undefined && s.now - recent.updatedTick < this.m.cfg.decisionTicks * 3
        const to = this.bestTarget(v.id)
        if (to === null) {
          vms.push({ vm: v.id, state: 'no target', target: null, reason: this.whyNoTarget(v.id, s.self) })
        } else if (retrying) {
          vms.push({ vm: v.id, state: 'retrying', target: nameOf(recent.target), reason: recent.reason })
        } else {
          const full = this.m.liveOut().length >= this.m.cfg.outMax
          vms.push({ vm: v.id, state: 'waiting', target: nameOf(to), reason: full ? `outgoing limit ${this.m.cfg.outMax} reached` : 'starts at the next drain step' })
        }
      }
      const moved = [...this.m.recs.values()].filter(r => r.role === 'source' && r.cause === 'drain' && r.state === 'committed').length
      out.push({ host: s.self, name: s.name, own: true, vms, moved })
    }
    for (const id of this.drainsAsked) {
      const mb = s.members.get(id)
      if (mb === undefined || id === s.self) continue
      const vms: DrainVmOutcome[] = []
      for (const v of mb.report?.vms ?? []) {
        if (v.state === 'migrating') { vms.push({ vm: v.id, state: 'moving', target: null, reason: `${mb.name} reports it migrating` }); continue }
        const to = this.bestTargetFor(v.id, id)
        vms.push(to === null
          ? { vm: v.id, state: 'no target', target: null, reason: this.whyNoTarget(v.id, id) }
          : { vm: v.id, state: 'waiting', target: nameOf(to), reason: `${nameOf(to)} can take it as ${s.name} sees the cluster; ${mb.name} moves it at its next drain step` })
      }
      out.push({ host: id, name: mb.name, own: false, vms, moved: 0 })
    }
    return out
  }

  /** Best target for a VM that `host` runs (another host's, for a drain this host asked for). */
  private bestTargetFor (vm: VmId, host: HostId): HostId | null {
    if (host === this.s.self) return this.bestTarget(vm)
    const view = this.view()
    const v = view.hosts.find(h => h.id === host)?.vms.find(x => x.id === vm)
    if (v === undefined) return null
    const placement = new Map<VmId, HostId>()
    for (const h of view.hosts) for (const x of h.vms) placement.set(x.id, h.id)
    const ranked = rankTargets(view.hosts.filter(h => h.id !== host), { ...v, migrating: false }, view.rules, placement, { ...this.m.cfg.policy.placement, kind: 'leastLoaded' })
    return ranked[0]?.host.id ?? null
  }

  /** Why no host takes `vm` of `host`: each candidate with the first check it fails. */
  whyNoTarget (vm: VmId, host: HostId): string {
    const view = this.view()
    const v = view.hosts.find(h => h.id === host)?.vms.find(x => x.id === vm) ?? (host === this.s.self ? this.fallbackVm(vm) : undefined)
    if (v === undefined) return `no load report of ${vm} yet`
    const others = view.hosts.filter(h => h.id !== host)
    const down = [...this.s.members.byId.values()].filter(m => m.id !== host && m.state !== 'alive' && m.state !== 'left').map(m => `${m.name} is ${m.state}`)
    if (others.length === 0) return ['no other alive host with a load report', ...down].join('; ')
    const placement = new Map<VmId, HostId>()
    for (const h of view.hosts) for (const x of h.vms) placement.set(x.id, h.id)
    const cap = this.m.cfg.policy.placement.cpuCapFraction ?? 1
    const refused = host === this.s.self ? this.refusedBy(vm) : new Map<HostId, string>()
    const why = others.map(h => {
      const name = this.s.members.get(h.id)?.name ?? h.id.slice(0, 8)
      const no = refused.get(h.id)
      if (no !== undefined) return `${name}: ${no}`
      if (!fits(h, v, cap)) {
        if (exceedsCores(h, v)) return `${name}: needs ${Math.round(v.cpuDemandMips)} MIPS, more than its ${v.vcpus ?? 1} vCPU(s) get from ${h.coreMips}-MIPS cores`
        const freeMem = h.memMiB - hostMemUsedMiB(h)
        if (freeMem < v.memMiB) return `${name}: memory (${Math.round(freeMem)} MiB free, needs ${v.memMiB})`
        return `${name}: CPU (${Math.round(h.cpuMips * cap - hostDemandMips(h))} MIPS free, needs ${Math.round(v.cpuDemandMips)})`
      }
      if (!hardAllows(view.rules, placement, vm, h.id)) return `${name}: a hard placement rule forbids it`
      return `${name}: it would be overloaded (load forecast over the threshold)`
    })
    return [...why, ...down].join('; ')
  }

  private drainStep (): void {
    const s = this.s
    for (const v of this.m.localVms) {
      if (this.m.liveOut().length >= this.m.cfg.outMax) return
      if (this.m.isMoving(v.id) || this.replicas?.hosted(v.id) === true) continue
      // After an abort the VM waits a few steps, unless the target refused it: the next target
      // is tried at once (refusing targets are avoided for a while, see refusedBy).
      const recent = [...this.m.recs.values()].find(r => r.vm === v.id && r.role === 'source' && r.state === 'aborted' && s.now - r.updatedTick < this.m.cfg.decisionTicks * 3 && !refusedByTarget(r))
      if (recent !== undefined) continue
      const to = this.bestTarget(v.id)
      if (to === null) continue
      this.m.start(v.id, to, 'drain')
    }
  }

  /**
   * Targets that refused `vm` recently (a draining host, no room by its own count, a rule), with
   * their reason: the drain avoids them for REFUSAL_MEMORY_STEPS drain steps.
   */
  refusedBy (vm: VmId): Map<HostId, string> {
    const out = new Map<HostId, string>()
    for (const r of this.m.recs.values()) {
      if (r.vm !== vm || r.role !== 'source' || r.state !== 'aborted' || !refusedByTarget(r)) continue
      if (this.s.now - r.updatedTick < this.m.cfg.decisionTicks * REFUSAL_MEMORY_STEPS) out.set(r.target, r.reason)
    }
    return out
  }

  /** Best-ranked target for one of this host's VMs, counting this host's live reservations (targets that just refused it left out). */
  bestTarget (vm: VmId): HostId | null {
    const refused = this.refusedBy(vm)
    const view = this.view()
    const me = view.hosts.find(h => h.id === this.s.self)
    const v = me?.vms.find(x => x.id === vm) ?? this.fallbackVm(vm)
    if (v === undefined) return null
    const placement = new Map<VmId, HostId>()
    for (const h of view.hosts) for (const x of h.vms) placement.set(x.id, h.id)
    for (const r of this.m.liveOut()) placement.set(r.vm, r.target)
    const hosts = view.hosts.filter(h => h.id !== this.s.self && !refused.has(h.id))
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
  operatorMove (vm: VmId, to: string | undefined, storage: StorageWanted = 'auto'): MigrationRecord | { forwardTo: HostId } | { error: string } {
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
    return this.m.start(vm, target, 'operator', storage)
  }

  resolveHost (nameOrId: string): HostId | null {
    for (const mb of this.s.members.byId.values()) if (mb.name === nameOrId || mb.id === nameOrId) return mb.id
    return null
  }
}
