/**
 * Every invariant the simulator checks, in one place. Safety (DESIGN.md S1-S5) after every tick:
 * SafetyCheckers. Membership after every tick: Checkers (I1-I3). Convergence predicates for
 * runUntil: membershipConverged, loadsConverged.
 *
 * Membership invariants checked after every tick, in O(changes) or O(hosts) work, never O(hosts^2):
 * - I1 incarnations never decrease, across restarts too (a restart comes back strictly higher);
 * - I2 a host never holds itself as suspect or dead;
 * - I3 (while `noFalseDeath` is on: no partition, isolation or cut) a live, non-crashed host is
 *   never declared dead by a majority of the live hosts; every declaration about a live host is
 *   counted as a false death either way.
 * Views converge (hosts and loads) is a predicate for runUntil, not a per-tick check: it is O(n^2).
 * A failure throws with "reproduce with SEED=<n>".
 */
import type { CoreEvent, HostId, VmId } from '../core/index.js'
import type { RuleSet } from '../../policies/types.js'
import type { SimCluster } from './sim-cluster.js'

export class InvariantError extends Error {
  static override name = 'InvariantError'
  readonly code = 'INVARIANT_BROKEN'
  constructor (message: string) { super(message); this.name = 'InvariantError' }
}

export class Checkers {
  /** Check I3 (turn off while a partition is meant to cause deaths). */
  noFalseDeath = true
  /** Declarations of death (by any viewer) about hosts that were not crashed. */
  falseDeaths = 0
  readonly falseDeathLog: string[] = []
  private readonly maxInc = new Map<HostId, number>()
  private readonly deadViews = new Map<HostId, number>()
  private readonly touched = new Set<HostId>()

  constructor (private readonly sim: SimCluster) {
    sim.onEvent((viewer, ev, tick) => this.onEvent(viewer, ev, tick))
    sim.onAfterTick(() => this.afterTick())
    sim.onCrash(id => this.forget(id))
  }

  private fail (msg: string): never {
    throw new InvariantError(`${msg} at tick ${this.sim.now}; reproduce with SEED=${this.sim.seed}`)
  }

  private onEvent (viewer: HostId, ev: CoreEvent, tick: number): void {
    const t = ev.transition
    if (t === undefined) return
    if (ev.host === viewer && (t.to === 'suspect' || t.to === 'dead')) this.fail(`I2: host ${viewer} holds itself ${t.to}`)
    if (t.to === 'dead') {
      this.deadViews.set(ev.host, (this.deadViews.get(ev.host) ?? 0) + 1)
      this.touched.add(ev.host)
      if (!this.sim.isCrashed(ev.host) && !this.sim.network.faulty) {
        this.falseDeaths++
        if (this.falseDeathLog.length < 20) this.falseDeathLog.push(`tick ${tick}: ${viewer} declared ${ev.host} dead (inc ${t.incarnation})`)
      }
    } else if (t.from === 'dead') {
      this.deadViews.set(ev.host, (this.deadViews.get(ev.host) ?? 1) - 1)
    }
  }

  /** A viewer crashed: its views no longer count. */
  private forget (viewer: HostId): void {
    const core = this.sim.core(viewer)
    if (core === undefined) return
    for (const m of core.view()) if (m.state === 'dead') this.deadViews.set(m.id, (this.deadViews.get(m.id) ?? 1) - 1)
  }

  private afterTick (): void {
    for (const id of this.sim.ids) {
      const core = this.sim.core(id)
      if (core === undefined) continue
      const inc = core.incarnation
      const prev = this.maxInc.get(id) ?? 0
      if (inc < prev) this.fail(`I1: host ${id} incarnation went from ${prev} to ${inc}`)
      if (inc > prev) this.maxInc.set(id, inc)
    }
    if (this.touched.size === 0) return
    if (this.noFalseDeath && !this.sim.network.faulty) {
      const live = this.sim.ids.length - this.sim.crashed.size
      for (const h of this.touched) {
        if (this.sim.isCrashed(h)) continue
        const n = this.deadViews.get(h) ?? 0
        if (n > live / 2) this.fail(`I3: live host ${h} declared dead by ${n} of ${live} live hosts`)
      }
    }
    this.touched.clear()
  }

  /** Highest incarnation ever seen for a host (a restart must come back above it). */
  maxIncarnation (id: HostId): number { return this.maxInc.get(id) ?? 0 }
}

/**
 * Every live host holds every other live host alive at its current incarnation and every crashed
 * host dead (or left); O(n^2), for runUntil.
 */
export function membershipConverged (sim: SimCluster): boolean {
  const live = sim.liveIds
  const incs = new Map<HostId, number>()
  for (const id of live) incs.set(id, sim.core(id)!.incarnation)
  for (const v of live) {
    const core = sim.core(v)!
    for (const h of sim.ids) {
      const m = core.member(h)
      if (sim.isCrashed(h)) { if (m !== undefined && m.state !== 'dead' && m.state !== 'left') return false; continue }
      if (m === undefined || m.state !== 'alive' || m.incarnation !== incs.get(h)) return false
    }
  }
  return true
}

/**
 * Every live host holds, for every live host, a report at most `lagSeq` behind the origin's own
 * latest, and never a different report under the same seq. O(n^2).
 */
export function loadsConverged (sim: SimCluster, lagSeq = 2): boolean {
  const live = sim.liveIds
  const own = new Map<HostId, number>()
  for (const id of live) own.set(id, sim.core(id)!.member(id)?.report?.seq ?? 0)
  for (const v of live) {
    const core = sim.core(v)!
    for (const h of live) {
      const r = core.member(h)?.report
      const o = own.get(h)!
      if (o === 0) continue
      if (r == null || r.seq < o - lagSeq) return false
    }
  }
  return true
}

/**
 * The safety promises (DESIGN.md), over the simulated hypervisors, the hosts' journals, the
 * cores' HA and VIP state and the interfaces' addresses, after every tick (and S4 as each HA
 * start is issued):
 * - S1: no VM's guest runs on two hosts; no copy older than one that ran is ever resumed; a VM
 *   whose guest runs nowhere is in a migration some host (crashed or not) has journaled and not
 *   finished, or its newest copy died in a power loss, or it is HA-protected (HA restarts it:
 *   the scenario checks after the heal that it runs again). Replicas (stateless copies) are not
 *   VMs of their own here.
 * - S2: no hard rule is broken by where the guests run, nor by the copies present (an incoming
 *   or paused copy counts on its host for anti-affinity);
 * - S3: no host holds more memory than its capacity, counting every copy present (running,
 *   paused, incoming) and every live reservation that has no copy yet;
 * - S4: an HA restart (a boot under a claim of epoch > 0) is issued only by a host that holds a
 *   majority, and only when no other hypervisor still runs the VM (the old copy was fenced);
 * - S5: at most one host believes it owns a VIP, and besides the owner only a host handing the
 *   address off (make-before-break) or removing it (a failed removal being retried included)
 *   carries the address (with singleCarrier, for
 *   break-before-make moves: no second carrier at all); a new owner's second burst never goes
 *   out while a host it can reach still carries the address.
 * A failure throws InvariantError with "reproduce with SEED=<n>".
 */
export interface SafetyOptions {
  /** Hard rules to hold (S2). @default none */
  rules?: RuleSet
  /** Memory of each host, MiB (S3). @default no check */
  capMemMiB?: number
  /**
   * Break-before-make VIP moves: never two hosts carrying an address (a killed agent's address
   * waiting for the unit's stop hook aside). @default false
   */
  singleCarrier?: boolean
}

export class SafetyCheckers {
  /** Ticks checked (a test can see the checks ran). */
  ticksChecked = 0
  /** HA restarts checked for S4 as they were issued. */
  restartsChecked = 0
  /** Longest time two hosts carried one address at once (make-before-break), ticks. */
  maxVipOverlap = 0
  private readonly overlapSince = new Map<string, number>()
  private readonly rules: RuleSet
  private readonly capMemMiB: number
  private readonly singleCarrier: boolean

  constructor (private readonly sim: SimCluster, o: SafetyOptions = {}) {
    this.rules = o.rules ?? { vmVm: [], vmHost: [] }
    this.capMemMiB = o.capMemMiB ?? Infinity
    this.singleCarrier = o.singleCarrier ?? false
    // S5: a new owner's second burst never goes out while another host it can reach still carries the address.
    sim.onAddress((host, e, ok) => {
      if (!ok || e.type !== 'announce' || e.reason !== 'second-burst') return
      for (const h of sim.carriers.get(e.vip) ?? []) {
        if (h !== host && sim.network.reachable(host, h) && sim.network.reachable(h, host)) this.fail(`S5: ${host} sent its second burst for ${e.vip} while ${h} still carries it`)
      }
    })
    sim.onAfterTick(() => this.check())
    sim.onReady((host, rd) => {
      for (const c of rd.ha) if (c.kind === 'haStart' && c.mode === 'boot' && c.epoch > 0) this.checkRestart(host, c.vm, c.epoch)
    })
  }

  private fail (msg: string): never {
    throw new InvariantError(`${msg} at tick ${this.sim.now}; reproduce with SEED=${this.sim.seed}`)
  }

  private journaled (vm: string): boolean {
    for (const id of this.sim.ids) {
      for (const [k, v] of this.sim.store(id)) {
        if (!k.startsWith('mig/rec/')) continue
        const r = v as { vm: string, state: string }
        if (r.vm === vm && r.state !== 'committed' && r.state !== 'aborted') return true
      }
    }
    return false
  }

  private checkRestart (host: HostId, vm: VmId, epoch: number): void {
    this.restartsChecked++
    const st = this.sim.core(host)?.haStatus()
    if (st?.quorum.quorate !== true) this.fail(`S4: ${host} restarts ${vm} (epoch ${epoch}) without a majority`)
    const where = this.sim.hv?.running().get(vm) ?? []
    const others = where.filter(h => h !== host)
    if (others.length > 0) this.fail(`S4: ${host} restarts ${vm} (epoch ${epoch}) while ${others.join(', ')} still runs it`)
  }

  check (): void {
    this.ticksChecked++
    this.checkVms()
    if (this.sim.vipSpecs.length > 0) this.checkVips()
    this.checkConfig()
    if (this.sim.ha !== undefined) this.checkMajorities()
  }

  /** Versions of the cluster configuration seen so far, by version: the hash every host must hold. */
  private readonly versions = new Map<number, string>()
  /** Ticks at which at least two hosts saw themselves quorate (S6 compared their majorities). */
  majorityPairsChecked = 0

  /** S7: every host acts on a configuration version that every other holder of that version holds too. */
  private checkConfig (): void {
    for (const id of this.sim.ids) {
      const st = this.sim.core(id)?.clusterConfig()
      if (st == null) continue
      const seen = this.versions.get(st.latest.version)
      if (seen === undefined) this.versions.set(st.latest.version, st.latest.hash)
      else if (seen !== st.latest.hash) this.fail(`S7: ${id.slice(0, 8)} acts on another configuration version ${st.latest.version} (${st.latest.note})`)
    }
  }

  /** S6: no two hosts count majorities that share no member (two sides, each with a majority). */
  private checkMajorities (): void {
    const views: Array<{ id: HostId, present: Set<HostId> }> = []
    for (const id of this.sim.ids) {
      if (!this.sim.isRunning(id)) continue
      const q = this.sim.core(id)?.haStatus()?.quorum
      if (q?.quorate === true) views.push({ id, present: new Set(q.present) })
    }
    if (views.length > 1) this.majorityPairsChecked++
    for (let i = 0; i < views.length; i++) {
      for (let j = i + 1; j < views.length; j++) {
        const a = views[i]!
        const b = views[j]!
        if (![...a.present].some(h => b.present.has(h))) {
          this.fail(`S6: ${a.id.slice(0, 8)} and ${b.id.slice(0, 8)} each hold a majority with no member in common (${[...a.present].map(h => h.slice(0, 8)).join(',')} / ${[...b.present].map(h => h.slice(0, 8)).join(',')})`)
        }
      }
    }
  }

  private checkVms (): void {
    const hv = this.sim.hv
    if (hv === undefined) return
    const running = hv.running()
    for (const vm of hv.allVms()) {
      if (vm.endsWith(REPLICA_SUFFIX)) continue
      const where = running.get(vm) ?? []
      if (where.length > 1) this.fail(`S1: VM ${vm} runs on ${where.join(' and ')}`)
      if (where.length === 0 && !this.sim.protects(vm) && !hv.lostToPowerLoss.has(vm) && !this.journaled(vm)) this.fail(`S1: VM ${vm} runs nowhere and no migration is recorded`)
    }
    if (hv.staleResumes.length > 0) this.fail(`S1: a copy older than what ran elsewhere was resumed: ${hv.staleResumes.join('; ')}`)
    for (const [h, vms] of hv.hosts) {
      for (const r of this.rules.vmVm) {
        if (!r.hard || r.kind !== 'anti-affinity') continue
        const here = r.vms.filter(v => vms.has(v))
        if (here.length > 1) this.fail(`S2: anti-affine ${here.join(',')} together on ${h}`)
      }
      for (const r of this.rules.vmHost) {
        if (!r.hard || !vms.has(r.vm) || vms.get(r.vm)?.state !== 'running') continue
        const listed = r.hosts.includes(h)
        if ((r.kind === 'affinity' && !listed) || (r.kind === 'anti-affinity' && listed)) this.fail(`S2: ${r.vm} on ${h} breaks a VM-host rule`)
      }
      if (this.capMemMiB === Infinity) continue
      let mem = 0
      for (const v of vms.values()) mem += v.spec.memMiB
      const core = this.sim.core(h)
      if (core !== undefined) {
        for (const r of core.migrations()) {
          if (r.role === 'target' && r.state !== 'committed' && r.state !== 'aborted' && !vms.has(r.vm)) mem += r.spec?.memMiB ?? 0
        }
      }
      if (mem > this.capMemMiB) this.fail(`S3: host ${h} holds ${mem} MiB > ${this.capMemMiB} MiB`)
    }
  }

  private checkVips (): void {
    const sim = this.sim
    const roles = new Map<HostId, Map<string, string>>()
    const removingHere = new Set<string>()
    for (const id of sim.ids) {
      const r = sim.core(id)?.vips()
      if (r == null) continue
      roles.set(id, new Map(r.vips.map(v => [v.vip, v.role])))
      // A removal that failed is retried: the module still accounts for the address.
      for (const v of r.vips) if (v.addressHere === 'removing') removingHere.add(`${id}/${v.vip}`)
    }
    for (const spec of sim.vipSpecs) {
      const owners = sim.ids.filter(h => roles.get(h)?.get(spec.id) === 'owner')
      if (owners.length > 1) this.fail(`S5: ${spec.id}: ${owners.join(' and ')} both own it`)
      const carriers = [...sim.carriers.get(spec.id)!]
      if (this.singleCarrier && carriers.filter(h => !sim.stopHookPending(h)).length > 1) this.fail(`S5: ${spec.id} carried by ${carriers.join(' and ')} (break-before-make)`)
      if (carriers.length > 1) {
        const stray = carriers.filter(h => {
          const role = roles.get(h)?.get(spec.id)
          return role !== 'owner' && role !== 'handingOff' && !removingHere.has(`${h}/${spec.id}`) && !sim.removing(h, spec.id)
        })
        if (stray.length > 0) this.fail(`S5: ${spec.id}: carried by ${carriers.join(' and ')}; ${stray.join(', ')} neither owns it, hands it off nor removes it (roles ${stray.map(h => roles.get(h)?.get(spec.id) ?? 'no agent').join(', ')})`)
        const since = this.overlapSince.get(spec.id) ?? sim.now
        this.overlapSince.set(spec.id, since)
        this.maxVipOverlap = Math.max(this.maxVipOverlap, sim.now - since + 1)
      } else this.overlapSince.delete(spec.id)
    }
  }

  /** Every VM runs on exactly one host, no live host has a migration in flight, no agent is down. */
  settled (): boolean {
    const hv = this.sim.hv
    if (hv === undefined) return true
    const running = hv.running()
    for (const vm of hv.allVms()) if (!vm.endsWith(REPLICA_SUFFIX) && (running.get(vm) ?? []).length !== 1) return false
    for (const id of this.sim.liveIds) if (this.sim.core(id)!.migrations().some(r => r.state !== 'committed' && r.state !== 'aborted')) return false
    return this.sim.crashed.size === 0
  }
}

/** Replicas are named after their VM with this suffix (agent/core/replica). */
const REPLICA_SUFFIX = '-replica'
