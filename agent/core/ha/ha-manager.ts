/**
 * HaManager: one host's part in high availability, deterministic (ticks, seeded Prng, effects
 * out). It is at once an acceptor (grants claims on protected VMs, restart.ts), a claimant
 * (restarts the VMs assigned to it), and the fence of its own VMs (fencing.ts, quorum.ts).
 * index.ts has the design note and the timing argument. The order of claims, the grant rule,
 * retry and back-off are the shared claim module's (../claims/); priorities, priors, the fence
 * gate and the handover of a live migration are HA's, here.
 */
import { assert } from '../assert.js'
import { backoffTicks, claimDue, freeFor, grantVerdict, retryDue, wonClaim } from '../claims/index.js'
import type { CoreEvent } from '../events.js'
import type { Prng } from '../prng.js'
import type { HostId, MemberState, VmId } from '../types.js'
import { NO_RULES, type RuleSet } from '../../../policies/types.js'
import { hardAllows } from '../../../policies/rules.js'
import { type HaConfig, type HaMemberSpec, type HaVmSpec, HA_EPOCH_SPAN, haEpochBase, validateHaConfig, validateHaInventory } from './ha-config.js'
import { FenceClock, watchdogAllows } from './fencing.js'
import { LeaseTable, evaluateQuorum, majority, type QuorumView } from './quorum.js'
import { type HaClaim, assignRestarts, compareHaClaims, haClaimOrder, haClaimText, sameHaClaim, type RestartHost } from './restart.js'
import {
  HA_CONFIRMS_KEY, HA_FENCES_KEY, HA_MAINT_KEY, HA_MODES_KEY, haVmKey,
  type HaCommand, type HaConfirmDown, type HaCounters, type HaEffect, type HaFenceReport, type HaInput, type HaMaintenance, type HaMessage, type HaMode,
  type HaRestored, type HaRole, type HaStatus, type HaVmDurable
} from './ha-types.js'

export interface HaManagerInit {
  self: HostId
  /** Every configured member (self and tie-breakers included): majorities count these. */
  members: HaMemberSpec[]
  vms: HaVmSpec[]
  rules?: RuleSet
  config: HaConfig
  prng: Prng
  restored?: HaRestored
  /** Protected VMs the driver finds running on this host at start-up. */
  running?: VmId[]
  /** This agent's life: strictly greater at every start (the membership incarnation does). */
  life: number
  /**
   * Memory a member admits beyond its ha.hosts memory: what its guests could give back now, within
   * the overcommit ratio (migration.memOvercommitRatio), from its latest load report. @default none
   */
  memOverMiB?: (host: HostId) => number
  /** Where the VMs that HA does not protect run (VM-VM rules may name them). @default none known */
  vmPlacement?: () => ReadonlyMap<VmId, HostId>
  /** Does the driver run this VM here now (its latest sample; undefined: no sample yet, `running` stands)? Asked when a VM is protected live (setVms). @default no */
  runningHere?: (vm: VmId) => boolean | undefined
  /**
   * The cluster configuration version a member acts on, as this host last heard (self: its own).
   * An unprotected VM's copy keeps its fence until a majority acts on the version that
   * unprotected it (setVms). @default every member is up to date
   */
  versionOf?: (host: HostId) => number
  /**
   * Do two configuration versions name the same members (every version between them too)? A
   * paused copy is resumed only within its claim's membership (onRequest). A version this host
   * does not hold never matches another. @default only a version matches itself
   */
  sameMembers?: (a: number, b: number) => boolean
}

interface Vm {
  spec: HaVmSpec
  /** The epoch of this protection's first claim (haEpochBase(spec.since)): its claims are [base, base + HA_EPOCH_SPAN). */
  base: number
  /**
   * This member heard the home of the protection's first claim speak of this protection (any HA
   * frame about the VM with a claim of its generation), or the protection came from the files
   * (every host fenced it from its start). Until then the home is never taken over (index.ts,
   * live protection): it may not have applied the version yet, and does not fence the VM. Durable.
   */
  homeHeard: boolean
  /** Unprotected at this configuration version: kept only to fence the copy here until a majority acts on it (null: protected). */
  retiring: number | null
  // Acceptor (durable)
  standing: HaClaim | null
  released: boolean
  /**
   * Claims below the standing one that may still run (durable): claims this member granted a
   * higher claim over (takeovers), and claims whose owner said it runs them ('held') or that a
   * refuser reported standing, when a higher claim that was never known to reach a majority
   * hides them. The standing record alone forgets them: the release of an abandoned claim, or a
   * higher claim granted while a partition hid the lower one, makes the VM look free while the
   * owner of the lower claim still runs it. Each one keeps the VM from being free here until its
   * host has been silent for the fence delay, releases it, or a majority-granted higher claim
   * supersedes it.
   */
  priors: HaClaim[]
  lastPriorQuery: number
  // This host's part
  own: HaClaim | null
  /**
   * The highest epoch of any claim naming this host (its own claims, and handover claims granted
   * to it as a migration's target), durable. A new claim of ours goes above it: `own` is dropped
   * when a handover aborts or a higher claim wins, while an acceptor may still stand on that
   * claim unreleased, and a new claim reusing its epoch would be the same claim there and a
   * released one elsewhere (two majorities for one VM).
   */
  ownEpochMax: number
  role: HaRole
  roleSince: number
  grants: Set<HostId>
  lastSend: number
  backoffUntil: number
  lastHeld: number
  resume: boolean
  /** The claim our paused copy runs under, while we ask to resume it. */
  pausedClaim: HaClaim | null
  /**
   * The cluster configuration version this host acted on when `own` was decided (granted to us,
   * or our home's first claim), durable; null when not known (a record from an older build). A
   * paused copy is resumed only while the members are still those of that version (no
   * membership change since; rules-only versions do not count: onRequest explains why).
   */
  ownVersion: number | null
  /** ownVersion of the paused copy, while we ask to resume it. */
  pausedVersion: number | null
  /** Our own claim reached a majority (its release then supersedes lower claims). */
  ownGranted: boolean
  heldSeen: number
  lastQuery: number
  /** Tick since which this host has seen the VM free and unclaimed (Infinity: not now). */
  orphanSince: number
  stopMode: 'stop' | 'pause' | 'destroy'
  stopReason: 'fence' | 'conflict' | 'superseded'
  /** Stop commands sent since the role became 'stopping' (the first included): the retry back-off doubles with each. */
  stopTries: number
  dirty: boolean
  /**
   * Source of a live migration: the claim asked for the target (durable), the members that
   * granted it (the target's own grant among them), when the last requests went out.
   */
  handover: HaClaim | null
  handoverGrants: Set<HostId>
  /** Target of a live migration: the source it comes from (durable); role 'incoming' meanwhile. */
  incomingFrom: HostId | null
  /**
   * The highest claim this host knows a majority granted (its own once granted; others' from
   * their 'held' and granted releases), with the failed starts its owner last reported under it:
   * where the count of failed starts in a row comes from. The standing claim may be one no
   * majority granted (an abandoned claim of ours) and carry an older count, from before the VM
   * last ran. Not durable: a restarted agent counts from its standing claim until it hears one.
   */
  lastGranted: HaClaim | null
}

/**
 * Ticks to wait before sending a stop again after `tries` sends: claimRetryTicks, doubled with
 * each further try, at most 8 x claimRetryTicks (a hung call is retried for as long as it hangs).
 */
export function stopRetryTicks (c: Pick<HaConfig, 'claimRetryTicks'>, tries: number): number {
  return c.claimRetryTicks * 2 ** Math.min(3, Math.max(0, tries - 1))
}

function zero (): HaCounters {
  return { claims: 0, claimsAbandoned: 0, restarts: 0, startFailures: 0, fences: 0, conflicts: 0, grants: 0, refusals: 0 }
}

export class HaManager {
  readonly self: HostId
  private readonly config: HaConfig
  private ids: HostId[]
  private readonly specs = new Map<HostId, HaMemberSpec>()
  private quorumSize: number
  /** This host was removed from the cluster's members (setMembers). */
  private removed = false
  /** Members removed by an agreed configuration (setMembers). */
  private readonly former = new Set<HostId>()
  private rules: RuleSet
  private readonly vmPlacement: () => ReadonlyMap<VmId, HostId>
  private readonly prng: Prng
  private readonly vms = new Map<VmId, Vm>()
  /** Unprotected VMs whose copy here is still fenced (setVms). */
  private readonly retired = new Map<VmId, Vm>()
  private readonly runningHere: (vm: VmId) => boolean | undefined
  /** Records restored at start-up for VMs not (yet) protected then: a later setVms takes them up. */
  private readonly restoredLater = new Map<VmId, HaVmDurable>()
  private readonly runningAtStart: Set<VmId>
  private readonly versionOf: (host: HostId) => number
  private readonly sameMembers: (a: number, b: number) => boolean
  private readonly hasVersions: boolean
  private readonly states = new Map<HostId, MemberState>()
  private readonly leases: LeaseTable
  private readonly fence: FenceClock
  private readonly modes = new Map<HostId, HaMode>()
  private readonly maint = new Map<HostId, HaMaintenance>()
  private modesDirty = false
  private maintDirty = false
  /** Does this host hold a watchdog that resets it? Off until the runtime says so (haLocalFence). */
  private localFence = false
  /** What each member reported of its own fence in the latest life heard from it (its beats). */
  private readonly fences = new Map<HostId, HaFenceReport>()
  private readonly confirms = new Map<HostId, HaConfirmDown>()
  private fencesDirty = false
  private confirmsDirty = false
  private now = 0
  private q: QuorumView
  private out: HaEffect[] = []
  private restartsDone = 0
  private readonly life: number
  /** The first tick of this agent life at which each member was heard (any frame). */
  private readonly firstHeard = new Map<HostId, number>()
  /** The first tick of this agent life at which this host saw a majority (null: not yet). */
  private firstQuorate: number | null = null
  /** This agent life has caught up with the claims that stand (catchingUp); latched. */
  private caughtUp = false
  readonly counters: HaCounters = zero()

  private readonly memOver: (host: HostId) => number

  constructor (init: HaManagerInit) {
    this.config = validateHaConfig(init.config)
    validateHaInventory(init.members, init.vms)
    assert(init.members.some(m => m.id === init.self), `ha: self ${init.self} is not a configured member`)
    this.self = init.self
    this.ids = init.members.map(m => m.id)
    for (const m of init.members) this.specs.set(m.id, m)
    this.quorumSize = majority(this.ids.length)
    this.rules = init.rules ?? NO_RULES
    this.vmPlacement = init.vmPlacement ?? (() => new Map())
    this.prng = init.prng
    this.life = init.life
    this.memOver = init.memOverMiB ?? (() => 0)
    this.leases = new LeaseTable(0, this.ids, init.life)
    this.fence = new FenceClock(0, this.config.fenceAfterTicks, this.config.fenceTicks)
    const r = init.restored
    for (const id of this.ids) this.modes.set(id, r?.modes[id] ?? { version: 0, armed: true })
    for (const m of r?.maintenance ?? []) this.maint.set(m.host, { ...m })
    for (const [h, f] of Object.entries(r?.fences ?? {})) if (this.specs.has(h)) this.fences.set(h, { ...f })
    for (const c of r?.confirms ?? []) if (this.specs.has(c.host)) this.confirms.set(c.host, { ...c })
    this.runningHere = init.runningHere ?? (() => false)
    this.versionOf = init.versionOf ?? (() => Number.MAX_SAFE_INTEGER)
    this.hasVersions = init.versionOf !== undefined
    this.sameMembers = init.sameMembers ?? ((a, b) => a === b)
    const running = new Set(init.running ?? [])
    this.runningAtStart = running
    for (const spec of init.vms) {
      const d: HaVmDurable | undefined = r?.vms[spec.id]
      // A record of an earlier protection of the same VM (another `since`) is not this one's.
      this.addVm(spec, d !== undefined && (d.since ?? 0) === (spec.since ?? 0) && d.retiring === undefined ? d : undefined, running.has(spec.id), false)
    }
    // Unprotected copies that were still fenced here when the agent stopped (setVms): fenced on.
    for (const [id, d] of Object.entries(r?.vms ?? {})) {
      if (this.vms.has(id)) continue
      if (d.retiring === undefined) { this.restoredLater.set(id, d); continue }
      if (!running.has(id)) { this.out.push({ type: 'persist', op: { type: 'del', key: haVmKey(id) } }); continue }
      const v = this.newVm({ id, home: this.self, cpuMips: 0, memMiB: 0, source: { kind: 'shared', definition: id }, ...(d.since !== undefined ? { since: d.since } : {}) }, d)
      v.retiring = d.retiring
      this.setRole(v, 'running', `unprotected at version ${d.retiring}, still fenced until a majority acts on it`)
      this.retired.set(id, v)
    }
    this.q = this.quorum()
  }

  private newVm (spec: HaVmSpec, d: HaVmDurable | undefined): Vm {
    const base = haEpochBase(spec.since)
    const initial: HaClaim = { epoch: base, host: spec.home, attempts: 0 }
    return {
      spec,
      base,
      homeHeard: d !== undefined ? d.homeHeard !== false : base === 0 || spec.home === this.self,
      retiring: null,
      standing: d !== undefined ? d.standing : initial,
      released: d?.released ?? false,
      priors: (d?.priors ?? []).map(c => ({ ...c })),
      lastPriorQuery: -Infinity,
      own: d !== undefined ? d.own : (spec.home === this.self ? initial : null),
      ownEpochMax: Math.max(d?.ownEpochMax ?? 0, d?.own?.host === this.self ? d.own.epoch : 0, d?.standing?.host === this.self ? d.standing.epoch : 0, d?.handover?.host === this.self ? d.handover.epoch : 0),
      role: 'idle',
      roleSince: this.now,
      grants: new Set(),
      lastSend: -Infinity,
      backoffUntil: 0,
      lastHeld: -Infinity,
      resume: false,
      pausedClaim: null,
      // The first claim stands from the protection's version (the files' for a VM the files protect).
      ownVersion: d !== undefined ? d.ownVersion ?? null : (spec.home === this.self ? (this.hasVersions ? Math.max(1, spec.since ?? 0) : 1) : null),
      pausedVersion: null,
      ownGranted: d !== undefined ? d.ownGranted === true : true,
      heldSeen: this.now,
      lastQuery: -Infinity,
      orphanSince: Infinity,
      stopMode: 'stop',
      stopReason: 'fence',
      stopTries: 0,
      dirty: false,
      handover: d?.handover !== undefined ? { ...d.handover } : null,
      handoverGrants: new Set(),
      incomingFrom: d?.incomingFrom ?? null,
      lastGranted: d !== undefined ? null : initial
    }
  }

  /**
   * A protected VM, at start-up (`live` false) or protected by an agreed version (setVms). With no
   * record it starts as the configuration starts: its first claim stands at its home.
   */
  private addVm (spec: HaVmSpec, d: HaVmDurable | undefined, running: boolean, live: boolean): void {
    const v = this.newVm(spec, d)
    v.dirty = live
    this.vms.set(spec.id, v)
    if (v.incomingFrom !== null) {
      // A migration was bringing the VM here: fenced like a running copy until the migration
      // machine, which resolves its record at start-up, says committed or aborted.
      this.setRole(v, 'incoming', `receiving from ${v.incomingFrom.slice(0, 8)} at start-up`)
    } else if (running && v.own !== null && v.priors.some(p => sameHaClaim(p, v.own))) {
      // Our copy, handed over or being handed over: a handover claim stands above ours with our
      // consent, and ours stays a prior until we release it.
      this.setRole(v, 'running', 'found running at start-up (claim below a handover)')
    } else if (running) {
      // Running here: ours if we hold a claim no one has told us is superseded; else a stray copy
      // (protected live with another home: stopped, so that it never runs beside the home's).
      if (v.own !== null && !(v.standing !== null && compareHaClaims(v.standing, v.own) > 0)) this.setRole(v, 'running', live ? 'protected live, running here (its home)' : 'found running at start-up')
      else this.stop(v, 'destroy', 'conflict')
    } else if (v.own !== null && v.ownGranted && !(v.released && sameHaClaim(v.own, v.standing))) {
      // We held a granted claim but the driver lists no copy: a start may still be in flight
      // from our previous life. Destroy first (the driver orders it after that start), then
      // release; releasing at once would let the majority restart it beside a late copy.
      this.stop(v, 'destroy', 'superseded')
    }
  }

  /**
   * The protected VMs changed (an agreed configuration version `version`; index.ts, live
   * protection). Null when applied, else why not (nothing changed then).
   * - A new VM starts as at start-up: its first claim (epoch haEpochBase(since)) at its home. The
   *   home adopts its running copy, or destroys and releases (the majority restarts it); another
   *   host that runs it stops it (conflict).
   * - A VM no longer listed is forgotten (its claims in flight dropped, its record deleted); a copy
   *   here keeps running, unprotected, but keeps its fence until a majority of the members acts
   *   on `version` (from then on no majority can grant a claim of that protection).
   * - A VM listed with other settings (priority, order, attempts, fence policy, size) takes them.
   */
  setVms (specs: HaVmSpec[], version: number): string | null {
    const why = this.vmsProblem(specs, version)
    if (why !== null) {
      this.event('ha-vms', `protected VMs of configuration version ${version} not applied: ${why}`)
      return why
    }
    const next = new Map(specs.map(x => [x.id, x]))
    for (const [id, v] of [...this.vms]) {
      const n = next.get(id)
      if (n !== undefined && (n.since ?? 0) === (v.spec.since ?? 0)) continue
      this.unprotect(v, version)
    }
    for (const spec of specs) {
      const had = this.vms.get(spec.id)
      if (had !== undefined) { had.spec = spec; continue }
      // A copy still fenced from an earlier protection: the new one adopts it if it runs (at its
      // home) or stops it (elsewhere); a start or stop in flight is destroyed first (then released).
      const old = this.retired.get(spec.id)
      if (old !== undefined) this.retired.delete(spec.id)
      const busy = old !== undefined && (old.role === 'starting' || old.role === 'stopping' || old.role === 'incoming')
      // A record restored at start-up for this protection (a VM protected in a version applied after the start).
      const kept = this.restoredLater.get(spec.id)
      this.restoredLater.delete(spec.id)
      const d = old === undefined && kept !== undefined && (kept.since ?? 0) === (spec.since ?? 0) ? kept : undefined
      this.addVm(spec, d, old !== undefined ? old.role === 'running' : this.runningHere(spec.id) ?? this.runningAtStart.has(spec.id), d === undefined)
      const v = this.vms.get(spec.id)!
      if (busy && v.role !== 'stopping') this.stop(v, 'destroy', spec.home === this.self ? 'superseded' : 'conflict')
      this.event('ha-vms', `vm ${spec.id} protected at configuration version ${version} (home ${spec.home.slice(0, 8)}, first claim ${haClaimText({ epoch: haEpochBase(spec.since), host: spec.home, attempts: 0 })}): ${this.vms.get(spec.id)!.role} here`)
    }
    return null
  }

  /**
   * Why an inventory cannot be applied: a VM listed twice, bad figures, or a VM protected by this
   * very version whose home is not a member or is a tie-breaker. (A VM protected earlier keeps its
   * place when its home is removed later: its claim is taken over as any removed member's.)
   */
  private vmsProblem (specs: HaVmSpec[], version: number): string | null {
    const seen = new Set<VmId>()
    for (const v of specs) {
      if (seen.has(v.id)) return `ha: vm ${v.id} listed twice`
      seen.add(v.id)
      if (!(v.cpuMips >= 0 && v.memMiB >= 0)) return `ha: vm ${v.id} needs non-negative cpuMips and memMiB`
      if (v.since !== undefined && !(Number.isSafeInteger(v.since) && v.since >= 0 && haEpochBase(v.since) < Number.MAX_SAFE_INTEGER / 2)) return `ha: vm ${v.id} since is out of range`
      // The home is checked in the version that protects the VM (the files' VMs by each file's check).
      if ((v.since ?? 0) !== version) continue
      const home = this.specs.get(v.home)
      if (home === undefined) return `ha: vm ${v.id} home ${v.home.slice(0, 12)} is not a member`
      if (home.tieBreaker === true) return `ha: vm ${v.id} home ${v.home.slice(0, 12)} is a tie-breaker`
    }
    return null
  }

  private unprotect (v: Vm, version: number): void {
    const id = v.spec.id
    this.vms.delete(id)
    const fenced = v.role === 'running' || v.role === 'starting' || v.role === 'stopping' || v.role === 'incoming'
    if (!fenced) {
      this.out.push({ type: 'persist', op: { type: 'del', key: haVmKey(id) } })
      this.event('ha-vms', `vm ${id} unprotected at configuration version ${version}${v.role === 'paused' ? ' (its paused copy here stays paused)' : ''}`)
      return
    }
    v.retiring = version
    v.handover = null
    v.handoverGrants = new Set()
    v.incomingFrom = null
    v.dirty = true
    this.retired.set(id, v)
    this.event('ha-vms', `vm ${id} unprotected at configuration version ${version}: its copy here (${v.role}) stays fenced until a majority acts on that version`)
  }

  /** A majority of the members act on configuration version `version` or a later one. */
  private majorityAt (version: number): boolean {
    let n = 0
    for (const id of this.ids) if ((id === this.self ? Number.MAX_SAFE_INTEGER : this.versionOf(id)) >= version) n++
    return n >= this.quorumSize
  }

  private tickRetired (v: Vm, fencing: boolean): void {
    if (fencing && (v.role === 'running' || v.role === 'starting')) { this.counters.fences++; this.stop(v, 'stop', 'fence') } else if (fencing && v.role === 'incoming') { this.counters.fences++; this.stop(v, 'destroy', 'fence') }
    if (v.role === 'stopping' && this.now - v.lastSend >= stopRetryTicks(this.config, v.stopTries)) {
      v.lastSend = this.now
      v.stopTries++
      this.out.push({ type: 'driver', command: { kind: 'haStop', vm: v.spec.id, epoch: v.own?.epoch ?? -1, mode: v.stopMode, reason: v.stopReason } })
    }
    const done = v.role === 'idle' || v.role === 'paused' || (v.role !== 'stopping' && v.role !== 'starting' && this.majorityAt(v.retiring!))
    if (!done) return
    this.retired.delete(v.spec.id)
    this.out.push({ type: 'persist', op: { type: 'del', key: haVmKey(v.spec.id) } })
    this.event('ha-vms', `vm ${v.spec.id}: no longer fenced here (${v.role}; a majority acts on configuration version ${v.retiring!} or later)`)
  }

  private onRetiredResult (v: Vm, cmd: HaCommand, ok: boolean): void {
    if (cmd.kind === 'haStart') {
      if (v.role === 'starting' && v.own !== null && v.own.epoch === cmd.epoch) this.setRole(v, ok ? 'running' : 'idle', ok ? 'started (unprotected meanwhile)' : 'start failed')
      return
    }
    if (v.role !== 'stopping' || cmd.mode !== v.stopMode) return
    if (!ok) { v.lastSend = this.now; return }
    this.out.push({ type: 'vip', hint: 'vmMovedAway', vm: v.spec.id })
    this.setRole(v, cmd.mode === 'pause' ? 'paused' : 'idle', `fenced (${cmd.mode}) while unprotected`)
  }

  /** Generation of a claim: the protection it belongs to (index.ts, re-protection). */
  private sameGeneration (v: Vm, c: HaClaim): boolean { return Math.floor(c.epoch / HA_EPOCH_SPAN) === v.base / HA_EPOCH_SPAN }

  /**
   * The cluster's members changed (an agreed configuration version; one member added or removed
   * at a time, agent/core/cluster-config/config-log.ts). Majorities count the new list from now
   * on; grants and reports of a removed member are dropped (a claim needs a majority of the new
   * list), and a new member counts as just heard (its silence is measured from now, which only
   * delays a takeover).
   */
  setMembers (members: HaMemberSpec[]): void {
    if (!members.some(m => m.id === this.self)) {
      // Not a member (removed, or not added yet): no majority (it fences what it runs, as in a
      // partition) until a version names it again; its list stays as it was meanwhile.
      if (!this.removed) this.event('ha-members', 'this host is no longer a member: it holds no majority and fences its HA VMs')
      this.removed = true
      this.q = this.quorum()
      return
    }
    if (this.removed) this.event('ha-members', 'this host is a member again')
    this.removed = false
    const next = new Set(members.map(m => m.id))
    for (const id of this.ids) {
      if (next.has(id)) continue
      // A removed member is treated as a host cut off from the others: it no longer counts in a
      // majority nor grants, and what it ran is taken over as from any silent host (dead, silent
      // past the fence delay, fenced, armed), so its state, fence report, mode and silence stay tracked.
      this.specs.delete(id)
      this.former.add(id)
      this.maint.delete(id)
      for (const v of this.vms.values()) { v.grants.delete(id); v.handoverGrants.delete(id) }
    }
    for (const m of members) {
      this.former.delete(m.id)
      if (!this.specs.has(m.id)) {
        this.leases.onFrame(m.id, this.now)
        if (!this.modes.has(m.id)) this.modes.set(m.id, { version: 0, armed: true })
      }
      this.specs.set(m.id, m)
    }
    this.ids = members.map(m => m.id)
    this.quorumSize = majority(this.ids.length)
    this.fencesDirty = this.confirmsDirty = this.modesDirty = this.maintDirty = true
    this.q = this.quorum()
    this.event('ha-members', `HA counts ${this.ids.length} members now (a majority is ${this.quorumSize})`)
  }

  /**
   * The agreed placement rules changed (cluster-config). Restarts are assigned and claimed under
   * the new rules from now on; a VM that runs already is not moved by HA (the migration machine
   * and the scheduler act on rules for running VMs).
   */
  setRules (rules: RuleSet): void { this.rules = rules }

  /** A member or a former member (removed, but what it ran may still need taking over). */
  private known (id: HostId): boolean { return this.specs.has(id) || this.former.has(id) }

  // ---------------------------------------------------------------------------------------------
  // Driving

  step (input: HaInput): void {
    this.q = this.quorum()
    switch (input.type) {
      case 'members':
        for (const m of input.members) if (this.known(m.id) && m.id !== this.self) this.states.set(m.id, m.state)
        break
      case 'haLocalFence':
        if (input.fenced !== this.localFence) {
          this.localFence = input.fenced
          this.event('ha-fence', input.fenced ? 'this host holds a watchdog that resets it: its HA VMs are protected' : 'this host has NO fence: its HA VMs are not protected and it restarts none')
        }
        break
      case 'haOperatorConfirmDown': {
        if (!this.specs.has(input.host) || input.host === this.self) break
        // The life the operator saw down: the latest this host knows, from the host's HA beats or
        // from the membership view (an agent may never have heard the beats of a host that ran:
        // a missing connection; a confirmation of life 0 would then cover no life the others
        // know, and they would refuse every restart). Both are at most the host's current life,
        // and a later life starts above every incarnation of this one, so it is never covered.
        const life = Math.max(this.lifeOf(input.host), input.knownLife ?? 0)
        this.adoptConfirm({ host: input.host, life })
        break
      }
      case 'heard': if (this.known(input.from)) { this.leases.onFrame(input.from, this.now); this.noteHeard(input.from) } break
      case 'haMessage': this.onMessage(input.from, input.message); break
      case 'haDriverResult': this.onDriverResult(input.command, input.ok); break
      case 'elapsed':
        // The clock moves by the time that passed, in one step: leases age, the fence's grace
        // runs out, claims time out, silences lengthen, as they would have tick by tick. The
        // timing argument (index.ts) measures durations in real time; a clock that fell behind
        // after a stall would let a host that lost its majority during the stall count itself
        // quorate, or in its grace, and keep pinging its watchdog (step 1) for longer than F.
        // (No tick() runs for these ticks: beats, retries and fence actions happen at the next one.)
        if (Number.isSafeInteger(input.ticks) && input.ticks > 0) {
          this.now += input.ticks
          this.event('ha-clock', `${input.ticks} ticks passed uncounted (a stall): HA's clock moved forward by them`)
        }
        break
      case 'haOperatorMode': this.setMode({ version: this.maxModeVersion() + 1, armed: input.armed }); break
      case 'haOperatorMaintenance': {
        const prev = this.maint.get(input.host)
        if (this.specs.has(input.host)) this.adoptMaintenance({ host: input.host, version: (prev?.version ?? 0) + 1, on: input.on })
        break
      }
    }
    this.q = this.quorum()
  }

  tick (): void {
    this.now++
    const c = this.config
    this.q = this.quorum()
    this.fence.observe(this.now, this.q.quorate)
    if (this.q.quorate && this.firstQuorate === null) this.firstQuorate = this.now
    if (this.now % c.beatIntervalTicks === 0) this.beat()
    const fencing = !this.fencingOff() && this.fence.mustFence(this.now)
    for (const v of this.vms.values()) this.tickVm(v, fencing)
    for (const v of [...this.retired.values()]) this.tickRetired(v, fencing)
    if (!fencing) this.claimRestarts()
  }

  /** Effects since the last call: persist first (grants and claims are durable before they are sent). */
  takeEffects (): HaEffect[] {
    this.startWon()
    const persist: HaEffect[] = []
    for (const v of [...this.vms.values(), ...this.retired.values()]) {
      if (!v.dirty) continue
      v.dirty = false
      const d: HaVmDurable = { standing: v.standing === null ? null : { ...v.standing }, released: v.released, own: v.own === null ? null : { ...v.own }, ownGranted: v.ownGranted, priors: v.priors.map(c => ({ ...c })), ownEpochMax: v.ownEpochMax }
      if (v.handover !== null) d.handover = { ...v.handover }
      if (v.incomingFrom !== null) d.incomingFrom = v.incomingFrom
      if (v.spec.since !== undefined && v.spec.since > 0) d.since = v.spec.since
      if (!v.homeHeard) d.homeHeard = false
      if (v.retiring !== null) d.retiring = v.retiring
      if (v.ownVersion !== null) d.ownVersion = v.ownVersion
      persist.push({ type: 'persist', op: { type: 'put', key: haVmKey(v.spec.id), value: d } })
    }
    if (this.modesDirty) {
      this.modesDirty = false
      persist.push({ type: 'persist', op: { type: 'put', key: HA_MODES_KEY, value: Object.fromEntries([...this.modes].map(([k, m]) => [k, { ...m }])) } })
    }
    if (this.maintDirty) {
      this.maintDirty = false
      persist.push({ type: 'persist', op: { type: 'put', key: HA_MAINT_KEY, value: [...this.maint.values()].map(m => ({ ...m })) } })
    }
    if (this.fencesDirty) {
      this.fencesDirty = false
      persist.push({ type: 'persist', op: { type: 'put', key: HA_FENCES_KEY, value: Object.fromEntries([...this.fences].map(([k, f]) => [k, { ...f }])) } })
    }
    if (this.confirmsDirty) {
      this.confirmsDirty = false
      persist.push({ type: 'persist', op: { type: 'put', key: HA_CONFIRMS_KEY, value: [...this.confirms.values()].map(c => ({ ...c })) } })
    }
    const all = [...persist, ...this.out]
    this.out = []
    return all
  }

  /** May the runtime ping the watchdog now? (fencing.ts has the contract.) */
  watchdogOk (): boolean {
    let allFenced = true
    for (const v of [...this.vms.values(), ...this.retired.values()]) if (v.role === 'running' || v.role === 'starting' || v.role === 'stopping' || v.role === 'incoming') allFenced = false
    return watchdogAllows({ fencingOff: this.fencingOff(), quorate: this.q.quorate, inGrace: this.fence.inGrace(this.now), allFenced })
  }

  get quorate (): boolean { return this.q.quorate }
  get tickNow (): number { return this.now }
  roleOf (vm: VmId): HaRole | undefined { return this.vms.get(vm)?.role }
  ownClaim (vm: VmId): HaClaim | null { const v = this.vms.get(vm); return v?.own == null ? null : { ...v.own } }

  status (): HaStatus {
    const fencingOff = this.fencingOff()
    const pending: VmId[] = []
    for (const v of this.vms.values()) if (this.isOrphan(v)) pending.push(v.spec.id)
    return {
      self: this.self,
      tick: this.now,
      quorum: { size: this.q.size, needed: this.q.needed, present: [...this.q.present], quorate: this.q.quorate, lastQuorateTick: Number.isFinite(this.fence.lastQuorateTick) ? this.fence.lastQuorateTick : null },
      fence: { fencing: !fencingOff && this.fence.mustFence(this.now), deadlineTick: this.fence.deadline(this.now), watchdogOk: this.watchdogOk() },
      mode: { ...this.myMode(), fencingOff },
      maintenance: [...this.maint.values()].filter(m => m.on).map(m => m.host),
      fencedHosts: this.ids.filter(h => this.takeoverOk(h)),
      selfFenced: this.localFence,
      unfenced: this.ids.filter(h => h !== this.self && this.specs.get(h)!.tieBreaker !== true && !this.fenceReported(h)),
      awaitingConfirmation: this.ids.filter(h => h !== this.self && this.silentDead(h) && !this.fenceReported(h) && !this.confirmedDown(h)),
      confirmedDown: [...this.confirms.values()].filter(c => this.confirmedDown(c.host)).map(c => ({ ...c })),
      pending,
      restartsDone: this.restartsDone,
      vms: [...this.vms.values()].map(v => ({
        vm: v.spec.id,
        role: v.role,
        standing: v.standing === null ? null : { ...v.standing },
        released: v.released,
        owner: this.ownerOf(v),
        attempts: this.attempts(v),
        failed: this.attempts(v) >= this.maxAttempts(v)
      })),
      counters: { ...this.counters }
    }
  }


  // ---------------------------------------------------------------------------------------------
  // Live migration of a protected VM: the claim is handed over (index.ts, handover argument).

  /**
   * Source: ask a majority to grant `target` a claim above ours, with our consent. Null when
   * asked (or already asking for that target), else why not. The migration must not let the VM
   * run on the target before handoverGranted() is true; it ends with handoverEnd().
   */
  handoverStart (vm: VmId, target: HostId): string | null {
    const v = this.vms.get(vm)
    if (v === undefined) return null // not protected: nothing to hand over
    if (v.handover !== null) return v.handover.host === target ? null : `VM ${vm} is already handed over to ${v.handover.host.slice(0, 8)}`
    const m = this.specs.get(target)
    if (m === undefined || m.tieBreaker === true || target === this.self) return `${target.slice(0, 8)} is not an HA member that can run VMs`
    if (v.role !== 'running' || v.own === null || !v.ownGranted) return `VM ${vm} does not run here under a granted HA claim (${v.role})`
    if (!this.q.quorate || !this.myMode().armed || this.fence.mustFence(this.now)) return 'HA: this host is not quorate and armed'
    const top = v.standing === null || compareHaClaims(v.standing, v.own) < 0 ? v.own : v.standing
    v.handover = { epoch: top.epoch + 1, host: target, attempts: 0 }
    v.handoverGrants = new Set()
    v.dirty = true
    this.event('ha-handover', `vm ${vm}: asking a majority to grant ${haClaimText(v.handover)} to the migration target`)
    this.onHandoverRequest(v, this.self, v.handover)
    this.sendHandover(v)
    return null
  }

  /**
   * Source: the migration's target lost the VM after it may have run there (a power loss after the
   * switch-over), so our paused copy is older than the VM's last state and must never run again.
   * It is destroyed and our claim released, as after a fence: the majority restarts the VM from
   * its disk (crash-consistent) instead of resuming stale memory over a disk that moved on.
   */
  staleCopy (vm: VmId): void {
    const v = this.vms.get(vm)
    if (v === undefined || v.role !== 'running') return
    this.event('ha-stale', `vm ${vm}: the migration target lost the VM after the switch-over; destroying the older paused copy here so that it is restarted from its disk`)
    this.stop(v, 'destroy', 'superseded')
  }

  /** Source: a majority (the target among it) granted the handover claim, and we still see a majority. */
  handoverGranted (vm: VmId): boolean {
    const v = this.vms.get(vm)
    if (v === undefined) return true
    return v.handover !== null && v.role === 'running' && v.handoverGrants.has(v.handover.host) && wonClaim(v.handoverGrants.size, this.ids.length, this.q.quorate)
  }

  /**
   * Target: a migration of `vm` from `source` is about to prepare an incoming copy here. From
   * now on this host fences it like a running copy. Null when accepted, else why not.
   */
  incomingStart (vm: VmId, source: HostId): string | null {
    const v = this.vms.get(vm)
    if (v === undefined) return null
    if (v.incomingFrom === source && v.role === 'incoming') return null
    if (v.role !== 'idle') return `HA: VM ${vm} is ${v.role} here`
    if (!this.q.quorate || !this.myMode().armed || this.fence.mustFence(this.now)) return 'HA: this host is not quorate and armed'
    v.incomingFrom = source
    v.dirty = true
    this.setRole(v, 'incoming', `receiving by migration from ${source.slice(0, 8)}`)
    return null
  }

  /**
   * Either end: the migration committed (the VM runs on the target, the source's copy is paused
   * for good) or aborted (it runs on the source; the target's copy never ran, or is gone).
   */
  handoverEnd (vm: VmId, outcome: 'committed' | 'aborted'): void {
    const v = this.vms.get(vm)
    if (v === undefined) return
    if (v.handover !== null) {
      // Source.
      v.handover = null
      v.handoverGrants = new Set()
      v.dirty = true
      if (outcome === 'committed' && v.role === 'running' && v.own !== null) {
        this.setRole(v, 'idle', 'handed over (migration committed)')
        this.out.push({ type: 'vip', hint: 'vmMovedAway', vm })
        this.releaseOwn(v, v.own)
      }
      return
    }
    if (v.incomingFrom === null && v.role !== 'incoming') return
    // Target.
    v.incomingFrom = null
    v.dirty = true
    if (v.role !== 'incoming') return // fenced meanwhile (stopping): its result releases our claim
    const own = v.own
    if (outcome === 'committed') {
      if (own === null || v.standing === null || !sameHaClaim(own, v.standing)) {
        // No handover claim here (cannot happen when the source waited for our grant): the
        // copy must not run unclaimed.
        this.stop(v, 'destroy', 'conflict')
        return
      }
      v.ownGranted = true
      v.released = false
      this.dropPriors(v, p => compareHaClaims(p, own) < 0)
      this.setRole(v, 'running', `migration committed under ${haClaimText(own)}`)
      this.out.push({ type: 'vip', hint: 'vmPlaced', vm })
      this.sendHeld(v)
      return
    }
    this.setRole(v, 'idle', 'migration aborted')
    // Our handover claim is released as never granted: it supersedes nothing (the source runs on).
    if (own !== null && v.standing !== null && sameHaClaim(own, v.standing)) { v.ownGranted = false; this.releaseOwn(v, own) } else if (own !== null) { v.own = null }
  }

  /**
   * Acceptor: `from` asks, as the VM's owner, a claim for its migration target c.host. Granted
   * when `from` holds the VM here (its standing claim or a prior), every other claim that may
   * run is takeover-able, and c is above the standing one. The owner's claim is kept as a prior
   * (it runs on until it releases it): a takeover then needs both hosts to be takeover-able.
   */
  private onHandoverRequest (v: Vm, from: HostId, c: HaClaim): void {
    const s = v.standing
    if (!this.sameGeneration(v, c)) return
    const me = from === this.self
    const reply = (g: boolean): void => {
      if (!g) { if (!me) this.refuse(v, from, c); return }
      this.counters.grants++
      if (me) v.handoverGrants.add(this.self); else this.send([from], { type: 'haGrant', vm: v.spec.id, claim: { ...c } })
    }
    // The grant rule (../claims/grant.ts), with the handover's terms for "free". The same claim
    // again is granted again only while `from` still holds the VM here.
    switch (grantVerdict({ order: haClaimOrder.versus(c, s), released: v.released, able: this.q.quorate && this.myMode().armed, free: this.handoverFree(v, from, c) })) {
      case 'regrant': reply(v.priors.some(p => p.host === from)); return
      case 'spent': case 'refuse': case 'blocked': reply(false); return
      case 'unable': return
      case 'grant': break
    }
    this.keepTakenOver(v, c.host)
    v.standing = { ...c }
    v.released = false
    v.heldSeen = this.now
    // A handover claim's majority is counted by the source, at a version this host does not know:
    // a copy it hands us is never resumed after a pause (ownVersion unknown), only booted again.
    if (c.host === this.self) { v.own = { ...c }; v.ownGranted = false; v.ownEpochMax = Math.max(v.ownEpochMax, c.epoch); v.ownVersion = null }
    v.dirty = true
    reply(true)
  }

  /**
   * A handover claim c that `from` asks for may be granted here: c's host can run VMs; the target
   * grants only what it expects (its incoming copy is fenced from now on); both ends are present
   * here (alive, lease fresh: this member heard each within leaseTicks); `from` holds the VM here
   * (its standing claim or a prior), and every other claim that may run is takeover-able.
   */
  private handoverFree (v: Vm, from: HostId, c: HaClaim): boolean {
    const spec = this.specs.get(c.host)
    if (spec === undefined || spec.tieBreaker === true) return false
    if (c.host === this.self && (v.role !== 'incoming' || v.incomingFrom !== from)) return false
    if ((c.host !== this.self && !this.q.present.includes(c.host)) || (from !== this.self && !this.q.present.includes(from))) return false
    const s = v.standing
    const holds = (s !== null && s.host === from && !v.released) || v.priors.some(p => p.host === from)
    return holds && this.isFree(v, from)
  }

  private sendHandover (v: Vm): void {
    assert(v.handover !== null, 'ha: handover request without a claim')
    v.lastSend = this.now
    const to = this.others().filter(h => !v.handoverGrants.has(h))
    if (to.length > 0) this.send(to, { type: 'haClaim', vm: v.spec.id, claim: { ...v.handover }, phase: 'handover' })
  }

  // ---------------------------------------------------------------------------------------------
  // Messages

  private onMessage (from: HostId, m: HaMessage): void {
    if (this.former.has(from)) { this.leases.onFrame(from, this.now); this.noteHeard(from); return } // heard, not listened to
    if (!this.specs.has(from) || from === this.self) return
    this.noteHeard(from)
    if (m.type === 'haBeat') {
      this.leases.onBeat(from, this.now, m.life, m.sent, m.echo)
      // The latest life's report wins; a delayed beat of an earlier life changes nothing.
      const f = this.fences.get(from)
      if (f === undefined || m.life > f.life || (m.life === f.life && f.fenced !== m.fenced)) { this.fences.set(from, { life: m.life, fenced: m.fenced }); this.fencesDirty = true }
      for (const c of m.confirmed) if (this.specs.has(c.host) && c.host !== this.self) this.adoptConfirm(c)
      this.noteMode(from, m.mode)
      if (m.mode.version > this.myMode().version || (m.mode.version === this.myMode().version && !m.mode.armed && this.myMode().armed)) this.setMode(m.mode)
      for (const x of m.maintenance) if (this.specs.has(x.host)) this.adoptMaintenance(x)
      return
    }
    this.leases.onFrame(from, this.now)
    const v = this.vms.get(m.vm)
    if (v === undefined) return
    // The home speaks of this protection (it applied the version that protected the VM), or a
    // member that knows it says so (the evidence travels: a member added after the home was cut
    // off never hears it).
    const told = m.type === 'haClaim' && m.homeSettled === true && m.phase !== 'handover'
    if (!v.homeHeard && (from === v.spec.home || told) && this.sameGeneration(v, m.claim)) {
      v.homeHeard = true
      v.dirty = true
      if (from !== v.spec.home) this.event('ha-vms', `vm ${v.spec.id}: ${from.slice(0, 8)} knows its home ${v.spec.home.slice(0, 8)} applied the protection`)
    }
    switch (m.type) {
      case 'haClaim':
        if (m.phase === 'handover') { if (m.claim.host !== from) this.onHandoverRequest(v, from, m.claim); return }
        if (m.claim.host !== from) return
        if (m.phase === 'request') this.onRequest(v, from, m.claim, m.resumes !== undefined && m.resumes.host === from ? m.resumes : null)
        else this.onHeld(v, m.claim)
        break
      case 'haGrant': this.onGrant(v, from, m.claim); break
      case 'haRefuse': this.onRefuse(v, m.claim, m.standing, m.released); break
      case 'haRelease': if (m.claim.host === from) this.onRelease(v, m.claim, m.granted); break
      case 'haQuery': this.onQuery(v, from, m.claim); break
    }
  }

  /**
   * A request for claim c; `resumes`: the claim the claimant's paused copy runs under, when c is
   * to resume that copy rather than boot the VM from its disk.
   *
   * A resume is granted only while no claim above the paused copy's stands here (staleResume),
   * and only when this member acts on a version with the same members as the claimant's, which
   * are those its paused copy's claim was decided by (the claimant gives the resume up otherwise).
   * Versions are grouped by membership: m(v) counts the hosts added or removed up to version v
   * (ConfigLog.membershipOf; a change adds or removes one: config-log.ts, point 1); a rules-only
   * version keeps m, and m never falls. Versions with equal m have the same members (and so has
   * every version between them), and versions whose m differ by one have members that differ by
   * one host.
   * Why no resume runs memory older than the disk (S1, "no stale copy resumed"): the copy paused
   * under P, whose majority was counted at version p (becomeStarting; the home's first claim
   * stands from its protection's version; a handover claim, counted by its source, records no
   * version and is never resumed). A copy that ran after that pause ran under a claim C whose
   * majority G_C was counted at some version c. The resume R is won by a claimant acting on a
   * version r with m(r) = m(p) (startWon gives it up otherwise) with a majority G_R of those
   * members, each acting on a version with that same m.
   * - m(c) >= m(p) + 2: then c >= r + 2, and R cannot be won once version c exists (the claimant,
   *   acting on r, counts no majority: config-log.ts, point 4, through the quorum's `countable`),
   *   so R was won before C, and C's copy ran after R's: S1's other half (never two copies at
   *   once, the timing argument in index.ts) has R's copy stopped first, and C ran on the disk it
   *   left.
   * - m(c) <= m(p) - 2: then c <= p - 2. If C was won after P, version p existed then and C's
   *   claimant, acting on c, could count no majority (point 4); if C was won before P, its copy
   *   ran before P's or beside it, which S1's other half excludes.
   * - m(c) within one of m(p): the members of c and of r differ by at most one host, so their
   *   majorities share a member (point 1): G_R and G_C share a member g, and G_C meets P's
   *   majority too, so C > P (standing claims only rise). Without this rule a resume could be
   *   granted by members that never heard of C, two membership changes apart
   *   (test/sim/cluster-config).
   * In that last case, with g in both: if g granted C before
   * R was asked, its standing is then >= C > P (it only rises) and g refuses R. If g granted R
   * first, C was granted over R later, so R was free: released (the resume was given up, and its
   * paused copy destroyed, never resumed) or its host silent past the fence delay, in which case
   * the timing argument (index.ts) has R's copy stopped before C's starts: C ran after the
   * resume, on the disk the resumed copy left. A claim above P that never reached a majority
   * refuses the resume too (an acceptor cannot tell): the paused copy is then destroyed and the
   * VM restarted from its disk, crash-consistent, which costs the guest's memory, never safety.
   * A version a host does not hold (ahead of it, or before the history it keeps) matches no
   * other, which only refuses resumes.
   */
  private onRequest (v: Vm, from: HostId, c: HaClaim, resumes: HaClaim | null = null): void {
    const s = v.standing
    // Another protection's claim (index.ts, re-protection): an earlier one's is refused (its
    // claimant learns that a higher claim stands), a later one's waits until this host applies it.
    if (!this.sameGeneration(v, c)) { if (c.epoch < v.base) this.refuse(v, from, c); return }
    if (resumes !== null && (this.staleResume(v, c, resumes) || !this.sameMembers(this.versionForResume(from), this.myVersion()))) { this.refuse(v, from, c); return }
    // The grant rule (../claims/grant.ts). Only a member that sees a majority (S4) and is armed
    // grants a new claim; a claim that has used up its start attempts is never free.
    switch (grantVerdict({ order: haClaimOrder.versus(c, s), released: v.released, able: this.q.quorate && this.myMode().armed, free: c.attempts < this.maxAttempts(v) && this.isFree(v, c.host) })) {
      case 'regrant': if (s !== null) this.send([from], { type: 'haGrant', vm: v.spec.id, claim: { ...s } }); return
      case 'spent': case 'refuse': case 'blocked': this.refuse(v, from, c); return
      case 'unable': return
      case 'grant': break
    }
    this.keepTakenOver(v, c.host)
    v.standing = { ...c }
    v.released = false
    v.heldSeen = this.now
    v.dirty = true
    this.counters.grants++
    // The count of failed starts in a row comes from the highest claim a majority granted: the
    // claimant may not have heard of a later one that started the VM (its count is then too
    // high, and it would give the VM up early). The grant says the lower count we know of;
    // the claimant takes the lowest of its grants' (onGrant). Only liveness depends on it.
    const g = v.lastGranted
    const attempts = g !== null && compareHaClaims(g, c) < 0 ? Math.min(c.attempts, g.attempts) : c.attempts
    this.send([from], { type: 'haGrant', vm: v.spec.id, claim: { ...c, attempts } })
  }

  /** A resume of the copy paused under `paused`, asked with claim c, over a claim above `paused` here (onRequest). */
  private staleResume (v: Vm, c: HaClaim, paused: HaClaim): boolean {
    const s = v.standing
    return s !== null && !sameHaClaim(c, s) && compareHaClaims(s, paused) > 0
  }

  /**
   * The configuration version `host` acts on for a resume (onRequest), 1 for the files: version 0
   * (no agreed configuration, or a peer not heard on a stream yet) and the genesis (1) both act
   * on the configuration files. Without versions (init.versionOf absent) every host acts on 1.
   */
  private versionForResume (host: HostId): number { return this.hasVersions ? Math.max(1, this.versionOf(host)) : 1 }
  private myVersion (): number { return this.versionForResume(this.self) }

  /** Claiming to resume a paused copy whose claim was decided among other members than ours now. */
  private resumeOutdated (v: Vm): boolean { return v.resume && !this.sameMembersAsNow(v.pausedVersion) }

  /** Are the members of configuration version `version` (null: not known) those this host acts on now? */
  private sameMembersAsNow (version: number | null): boolean { return version !== null && this.sameMembers(version, this.myVersion()) }

  private abandonOutdated (v: Vm): void {
    this.abandon(v, `resume given up: the cluster's members changed since our copy was paused (version ${v.pausedVersion ?? 'unknown'}, now ${this.myVersion()})`)
  }

  private refuse (v: Vm, to: HostId, c: HaClaim): void {
    this.counters.refusals++
    this.send([to], { type: 'haRefuse', vm: v.spec.id, claim: { ...c }, standing: v.standing === null ? null : { ...v.standing }, released: v.released })
  }

  private onGrant (v: Vm, from: HostId, c: HaClaim): void {
    if (v.handover !== null && sameHaClaim(v.handover, c)) { v.handoverGrants.add(from); return }
    if (v.role !== 'claiming' || v.own === null || !sameHaClaim(c, v.own)) return
    if (c.attempts < v.own.attempts) {
      // A grantor knows of a later claim that started the VM than we did (onRequest).
      v.own = { ...v.own, attempts: c.attempts }
      if (sameHaClaim(v.own, v.standing)) v.standing = { ...v.own }
      v.dirty = true
    }
    v.grants.add(from)
    // S4: the start is decided when the effects are taken (startWon), on the quorum of that moment.
  }

  private onRefuse (v: Vm, c: HaClaim, standing: HaClaim | null, released: boolean): void {
    if (v.role !== 'claiming' || !sameHaClaim(c, v.own)) return
    // Our standing record is our own claim (we found the VM free): a higher one may replace it.
    if (standing !== null && (v.standing === null || compareHaClaims(standing, v.standing) > 0)) {
      v.standing = { ...standing }
      v.released = released
      v.dirty = true
    }
    // A lower claim that the refuser holds standing (not released) may still run, although our
    // own records, built on claims above it that no majority granted, say the VM is free.
    if (standing !== null && !released && compareHaClaims(standing, c) < 0) this.notePrior(v, standing)
    if (standing !== null && compareHaClaims(standing, c) > 0) this.abandon(v, `refused: ${haClaimText(standing)} stands`)
    // A resume refused over a claim above our paused copy's: that claim may have booted the VM
    // from its disk, so the paused copy is older than the disk; abandon destroys it, never resumes.
    else if (v.resume && v.pausedClaim !== null && standing !== null && compareHaClaims(standing, v.pausedClaim) > 0) this.abandon(v, `resume refused: ${haClaimText(standing)} stands above our paused copy's ${haClaimText(v.pausedClaim)}`)
  }

  private onHeld (v: Vm, c: HaClaim): void {
    this.noteGranted(v, c)
    // A held claim was granted by a majority: it supersedes the lower claims we keep.
    this.dropPriors(v, p => compareHaClaims(p, c) < 0)
    // Its owner runs it: below a standing claim that may never have reached a majority (an
    // abandoned claim, released or not), it is kept as a claim that may still run.
    if (v.standing !== null && compareHaClaims(c, v.standing) < 0 && c.host !== v.standing.host) this.notePrior(v, c)
    // A held claim was granted by a majority: adopting it as standing is safe.
    if (v.standing === null || compareHaClaims(c, v.standing) >= 0) v.heldSeen = this.now
    if (v.standing === null || compareHaClaims(c, v.standing) > 0) {
      v.standing = { ...c }
      v.released = false
      v.dirty = true
    } else if (sameHaClaim(c, v.standing) && v.standing.attempts !== c.attempts) {
      v.standing = { ...c }
      v.dirty = true
    }
    this.supersededBy(v, c)
  }

  /**
   * Only the standing claim is freed by its release. The release of a higher claim that this
   * member never granted (an abandoned claim) must not erase the standing one: its owner may
   * still run the VM. (The same rule as for VIP claims.)
   */
  private onRelease (v: Vm, c: HaClaim, granted: boolean): void {
    if (granted) this.noteGranted(v, c)
    // Its owner no longer runs it; a released claim that a majority granted supersedes lower ones.
    this.dropPriors(v, p => sameHaClaim(p, c) || (granted && compareHaClaims(p, c) < 0))
    // A released claim that a majority had granted supersedes every lower one: when it was
    // granted, the lower claims were free at a member of every majority.
    if (v.standing === null || sameHaClaim(c, v.standing) || (granted && compareHaClaims(c, v.standing) > 0)) {
      v.standing = { ...c }
      v.released = true
      v.dirty = true
    }
  }

  /** A member asks about our claim: assert what we run, or release what we do not. */
  private onQuery (v: Vm, from: HostId, c: HaClaim): void {
    if (c.host !== this.self) return
    // A claim naming us exists out there (a handover granted to us that never reached us): ours
    // must never reuse its epoch, or this answer's release would also release our new claim.
    if (c.epoch > v.ownEpochMax) { v.ownEpochMax = c.epoch; v.dirty = true }
    const own = v.own
    if (own !== null && (v.role === 'running' || v.role === 'starting') && compareHaClaims(own, c) >= 0) {
      if (v.role === 'running') this.send([from], { type: 'haClaim', vm: v.spec.id, claim: { ...own }, phase: 'held', ...this.settledFlag(v) })
      return
    }
    // An incoming copy (a migration's target) holds its handover claim until the migration ends.
    if (v.role === 'stopping' || v.role === 'paused' || v.role === 'claiming' || v.role === 'incoming') return
    // We do not run it under c (nor under anything above it): c may be freed.
    const granted = own !== null && sameHaClaim(own, c) && v.ownGranted
    this.send([from], { type: 'haRelease', vm: v.spec.id, claim: { ...c }, granted })
  }

  /** A higher claim exists: whatever we hold of this VM under a lower one must go. */
  private supersededBy (v: Vm, c: HaClaim): void {
    if (v.own === null || compareHaClaims(c, v.own) <= 0) return
    // The target of our handover holds it: the migration committed there (the target asserts it
    // only then); the migration machine stops our paused copy and ends the handover.
    if (v.handover !== null && sameHaClaim(v.handover, c)) return
    switch (v.role) {
      case 'claiming': this.abandon(v, `superseded by ${haClaimText(c)}`); break
      case 'running': case 'starting':
        // Two copies: the timing assumption was broken. Keep the higher claim's copy.
        this.counters.conflicts++
        this.event('ha-conflict', `vm ${v.spec.id}: ${haClaimText(c)} is held above ours ${haClaimText(v.own)}: destroying our copy`)
        this.stop(v, 'destroy', 'conflict')
        break
      case 'paused': this.stop(v, 'destroy', 'superseded'); break
      case 'idle': v.own = null; v.dirty = true; break
      case 'stopping': break
    }
  }

  // ---------------------------------------------------------------------------------------------
  // Driver results

  private onDriverResult (cmd: HaCommand, ok: boolean): void {
    const r = this.retired.get(cmd.vm)
    if (r !== undefined) { this.onRetiredResult(r, cmd, ok); return }
    const v = this.vms.get(cmd.vm)
    if (v === undefined) return
    if (cmd.kind === 'haStart') {
      if (v.role !== 'starting' || v.own === null || v.own.epoch !== cmd.epoch) return
      if (ok) {
        v.own = { ...v.own, attempts: 0 }
        this.noteGranted(v, v.own)
        if (v.standing === null || compareHaClaims(v.own, v.standing) >= 0) { v.standing = { ...v.own }; v.released = false }
        const own = v.own
        this.dropPriors(v, p => compareHaClaims(p, own) < 0)
        v.dirty = true
        if (v.own.epoch > v.base && cmd.mode === 'boot') { this.counters.restarts++; this.restartsDone++ }
        this.setRole(v, 'running', `started under ${haClaimText(v.own)} (${cmd.mode})`)
        this.out.push({ type: 'vip', hint: 'vmPlaced', vm: v.spec.id })
        this.sendHeld(v)
      } else {
        this.counters.startFailures++
        const failed = { ...v.own, attempts: v.own.attempts + 1 }
        this.event('ha-start-failed', `vm ${v.spec.id}: start under ${haClaimText(v.own)} failed (attempt ${failed.attempts}/${this.maxAttempts(v)})`)
        this.releaseOwn(v, failed)
        this.setRole(v, 'idle', 'start failed')
        v.backoffUntil = this.now + backoffTicks(this.config, this.prng)
      }
      return
    }
    if (v.role !== 'stopping' || cmd.mode !== v.stopMode) return
    if (!ok) { v.lastSend = this.now; return } // retried in tickVm; the watchdog bounds it
    this.out.push({ type: 'vip', hint: 'vmMovedAway', vm: v.spec.id })
    if (cmd.mode === 'pause') { this.setRole(v, 'paused', 'fenced (paused)'); return }
    this.setRole(v, 'idle', cmd.reason === 'fence' ? 'fenced (stopped)' : `destroyed (${cmd.reason})`)
    if (v.incomingFrom !== null) {
      // The incoming copy of a migration was destroyed: the migration machine must not let the
      // source resume a copy older than what may have run here (ha-bridge tells it).
      v.incomingFrom = null
      v.dirty = true
      this.out.push({ type: 'handover', vm: v.spec.id, what: 'incomingFenced' })
    }
    // A copy we stopped under our own standing claim (or, handing over, under the claim below
    // the target's) is released so the majority need not wait.
    if (v.own !== null && (v.standing === null || compareHaClaims(v.own, v.standing) >= 0 || v.priors.some(p => sameHaClaim(p, v.own)))) this.releaseOwn(v, v.own)
    else { v.own = null; v.dirty = true }
  }

  // ---------------------------------------------------------------------------------------------
  // Time

  private beat (): void {
    const mode = this.myMode()
    const maintenance = [...this.maint.values()].map(m => ({ ...m }))
    const confirmed = [...this.confirms.values()].filter(c => this.confirmedDown(c.host)).map(c => ({ ...c }))
    for (const id of this.ids) {
      if (id === this.self) continue
      this.send([id], { type: 'haBeat', life: this.life, sent: this.now, echo: this.leases.echoFor(id), mode: { ...mode }, maintenance, fenced: this.localFence, confirmed })
    }
  }

  private tickVm (v: Vm, fencing: boolean): void {
    const c = this.config
    if (fencing) {
      if (v.role === 'claiming') this.abandon(v, 'lost the majority')
      if (v.role === 'running' || v.role === 'starting') {
        this.counters.fences++
        // A copy being handed over is stopped, never paused: after a switch-over its memory is
        // older than the target's, and resuming it later would run stale state.
        this.stop(v, v.spec.fencePolicy === 'pause' && v.role === 'running' && v.handover === null ? 'pause' : 'stop', 'fence')
      } else if (v.role === 'incoming') {
        this.counters.fences++
        this.stop(v, 'destroy', 'fence')
      }
    }
    this.queryStanding(v)
    switch (v.role) {
      case 'claiming': {
        const due = claimDue(c, this.now, v.roleSince, v.lastSend)
        if (this.resumeOutdated(v)) this.abandonOutdated(v)
        else if (due === 'give-up') this.abandon(v, 'no majority of grants in time')
        else if (wonClaim(v.grants.size, this.ids.length, this.q.quorate)) break // started by startWon
        else if (due === 'resend') this.sendRequest(v)
        break
      }
      case 'running':
        if (this.now - v.lastHeld >= c.heldRefreshTicks) this.sendHeld(v)
        break
      case 'stopping':
        // A stop that failed or never answered (a hung hypervisor call) is sent again, with a
        // back-off that doubles up to stopRetryMaxTicks, whether or not we hold a claim (an
        // incoming copy fenced before its handover claim reached us holds none): while the copy
        // may run, no member may take the VM over from this live host, so giving up would leave
        // the VM refused to every other claimant for good. The watchdog bounds a stop that must
        // fence (it is withheld while stopping without a majority).
        if (this.now - v.lastSend >= stopRetryTicks(c, v.stopTries)) {
          v.lastSend = this.now
          v.stopTries++
          // Reported once it is overdue (a claim's time-out), not on every slow first retry.
          if (this.now - v.roleSince >= c.claimTimeoutTicks) this.event('ha-stop-stuck', `vm ${v.spec.id}: ${v.stopMode} (${v.stopReason}) not done after ${this.now - v.roleSince} ticks; sending it again (try ${v.stopTries})`)
          this.out.push({ type: 'driver', command: { kind: 'haStop', vm: v.spec.id, epoch: v.own?.epoch ?? -1, mode: v.stopMode, reason: v.stopReason } })
        }
        break
      case 'paused':
        // Back in the majority: ask to resume (a claim above our own; refused if taken over).
        if (this.q.quorate && this.myMode().armed && this.now >= v.backoffUntil) this.becomeClaiming(v, true)
        break
      case 'idle':
        // We hold a standing claim but run nothing (fenced, reset, start-up): say so.
        if (v.own !== null && this.q.quorate && sameHaClaim(v.own, v.standing) && !v.released) this.releaseOwn(v, v.own)
        else if (v.own !== null && v.released && this.q.quorate && this.now - v.lastSend >= c.heldRefreshTicks) this.releaseOwn(v, v.own)
        break
      case 'starting': case 'incoming':
        break
    }
    if (v.handover !== null && v.role === 'running' && !this.handoverGranted(v.spec.id) && retryDue(c, this.now, v.lastSend)) this.sendHandover(v)
  }

  /**
   * A standing claim of a present member that has not been asserted for a while is asked about
   * (as VIP standing queries): its owner answers 'held' or releases it. This repairs records
   * that missed a release or a takeover, which would otherwise keep a VM from being claimed.
   */
  private queryStanding (v: Vm): void {
    this.queryPriors(v)
    const s = v.standing
    const c = this.config
    if (s === null || v.released || s.host === this.self || !this.q.quorate || !this.q.present.includes(s.host)) return
    if (this.now - v.heldSeen <= 2 * c.heldRefreshTicks + c.claimTimeoutTicks) return
    if (this.now - v.lastQuery < c.claimTimeoutTicks) return
    v.lastQuery = this.now
    this.send([s.host], { type: 'haQuery', vm: v.spec.id, claim: { ...s } })
  }

  /**
   * Claims kept as possibly running are asked about too (their owner answers 'held' or releases),
   * so a lost release does not keep the VM from being restarted.
   */
  private queryPriors (v: Vm): void {
    if (v.priors.length === 0 || !this.q.quorate || this.now - v.lastPriorQuery < this.config.claimTimeoutTicks) return
    let sent = false
    for (const p of v.priors) {
      if (p.host === this.self || !this.q.present.includes(p.host)) continue
      this.send([p.host], { type: 'haQuery', vm: v.spec.id, claim: { ...p } })
      sent = true
    }
    if (sent) v.lastPriorQuery = this.now
  }

  /** Claim the orphans that the shared assignment gives to this host. */
  private claimRestarts (): void {
    if (!this.q.quorate || !this.myMode().armed || this.isMaint(this.self) || this.specs.get(this.self)!.tieBreaker === true || !this.localFence) return
    if (this.catchingUp()) return
    const orphans: HaVmSpec[] = []
    for (const v of this.vms.values()) {
      if (this.isOrphan(v)) { orphans.push(v.spec); if (v.orphanSince === Infinity) v.orphanSince = this.now } else v.orphanSince = Infinity
    }
    if (orphans.length === 0) return
    const orphanSet = new Set(orphans.map(o => o.id))
    const placement = new Map<VmId, HostId>(this.vmPlacement())
    const used = new Map<HostId, { cpu: number, mem: number }>()
    for (const v of this.vms.values()) {
      const s = v.standing
      if (s === null) continue
      if (orphanSet.has(v.spec.id)) continue
      if (v.released) continue
      placement.set(v.spec.id, s.host)
      const u = used.get(s.host) ?? { cpu: 0, mem: 0 }
      u.cpu += v.spec.cpuMips
      u.mem += v.spec.memMiB
      used.set(s.host, u)
    }
    const hosts: RestartHost[] = []
    for (const id of this.ids) {
      const m = this.specs.get(id)!
      // Every member leaves out the hosts with no fence, so the shared assignment stays shared.
      if (m.tieBreaker === true || this.isMaint(id) || !this.q.present.includes(id) || !this.fenceReported(id)) continue
      const mode = this.modes.get(id)
      if (id !== this.self && (mode === undefined || !mode.armed)) continue
      const u = used.get(id) ?? { cpu: 0, mem: 0 }
      hosts.push({ id, cpuMips: m.cpuMips, coreMips: m.coreMips ?? m.cpuMips, memMiB: m.memMiB, memOverMiB: this.memOver(id), usedMips: u.cpu, usedMemMiB: u.mem })
    }
    const assigned = assignRestarts({ orphans, hosts, rules: this.rules, placement })
    let inFlight = 0
    for (const v of this.vms.values()) if (v.role === 'claiming' || v.role === 'starting') inFlight++
    for (const [vm, host] of assigned) {
      const v = this.vms.get(vm)!
      // Views that differ can leave a VM assigned to a host that does not see it free; after a
      // while any eligible host tries (the majority grants at most one).
      const stuck = this.now - v.orphanSince >= 3 * this.config.claimTimeoutTicks
      if ((host !== this.self && !stuck) || inFlight >= this.config.maxClaimsInFlight) continue
      // A hard rule holds for a stuck VM's claim too (any eligible host may try it then).
      if (v.role !== 'idle' || this.now < v.backoffUntil || !this.fitsHere(v) || !hardAllows(this.rules, placement, vm, this.self)) continue
      this.becomeClaiming(v, false)
      // The next claims of this step are judged with this VM here (two VMs kept apart, both stuck,
      // are not both claimed by one host).
      if (v.role !== 'idle') placement.set(vm, this.self)
      inFlight++
    }
  }

  // ---------------------------------------------------------------------------------------------
  // Transitions

  private becomeClaiming (v: Vm, resume: boolean): void {
    const s = v.standing
    const claim: HaClaim = { epoch: Math.max(s?.epoch ?? 0, v.own?.epoch ?? 0, v.ownEpochMax) + 1, host: this.self, attempts: this.attempts(v) }
    if (resume) {
      // Resume only if nothing stands above our paused copy's claim, among the members it was decided by.
      if (v.own === null || (s !== null && compareHaClaims(s, v.own) > 0)) { this.stop(v, 'destroy', 'superseded'); return }
      if (!this.sameMembersAsNow(v.ownVersion)) {
        this.event('ha-resume', `vm ${v.spec.id}: paused copy not resumed: the cluster's members changed since it ran (version ${v.ownVersion ?? 'unknown'}, now ${this.myVersion()}); destroyed, to be restarted from its disk`)
        this.stop(v, 'destroy', 'superseded')
        return
      }
    }
    // Our own acceptor record: the claim we take over (if it is not released) may still run.
    if (!resume && v.standing !== null && !v.released && v.standing.host !== this.self) this.keepTakenOver(v, this.self)
    else if (resume && !this.priorsFree(v, this.self)) return
    this.counters.claims++
    v.pausedClaim = resume ? v.own : null
    v.pausedVersion = resume ? v.ownVersion : null
    v.own = claim
    v.ownVersion = null
    v.ownEpochMax = claim.epoch
    v.ownGranted = false
    v.resume = resume
    v.standing = { ...claim }
    v.released = false
    v.grants = new Set([this.self])
    v.dirty = true
    this.setRole(v, 'claiming', `claim ${haClaimText(claim)}${resume ? ' (resume)' : ''}`)
    if (v.grants.size >= this.quorumSize) return // started by startWon
    this.sendRequest(v)
  }

  /**
   * S4: a claim granted by a majority is acted on only while this host itself sees a majority
   * (the grants may predate a cut). Decided here, when the effects are taken, rather than when
   * the last grant or the tick came: an input later in the same turn (a member now suspect, a
   * lease gone stale) may have taken the majority away, and the start command would then leave
   * this host without one. A claim not started stays claiming (and is given up at its timeout).
   */
  private startWon (): void {
    for (const v of this.vms.values()) {
      if (v.role !== 'claiming' || !wonClaim(v.grants.size, this.ids.length, this.q.quorate)) continue
      if (this.resumeOutdated(v)) this.abandonOutdated(v)
      else this.becomeStarting(v)
    }
  }

  private becomeStarting (v: Vm): void {
    assert(v.own !== null, 'ha: starting without a claim')
    v.ownGranted = true
    v.dirty = true
    v.pausedClaim = null
    v.pausedVersion = null
    v.ownVersion = this.myVersion()
    this.noteGranted(v, v.own)
    this.setRole(v, 'starting', `claim ${haClaimText(v.own)} granted by ${v.grants.size}/${this.ids.length}`)
    this.out.push({ type: 'driver', command: { kind: 'haStart', vm: v.spec.id, epoch: v.own.epoch, source: v.spec.source, mode: v.resume ? 'resume' : 'boot' } })
  }

  private abandon (v: Vm, why: string): void {
    assert(v.role === 'claiming' && v.own !== null, 'ha: abandoning without a claim')
    this.counters.claimsAbandoned++
    const own = v.own
    const paused = v.resume ? v.pausedClaim : null
    this.releaseOwn(v, own)
    v.backoffUntil = this.now + backoffTicks(this.config, this.prng)
    this.setRole(v, 'idle', why)
    // A paused copy whose resume failed is destroyed (then its claim is released): someone may
    // restart the VM from storage now.
    if (paused !== null) { v.own = paused; v.ownVersion = v.pausedVersion; v.pausedVersion = null; v.ownGranted = true; v.resume = false; this.stop(v, 'destroy', 'superseded') }
  }

  private stop (v: Vm, mode: 'stop' | 'pause' | 'destroy', reason: 'fence' | 'conflict' | 'superseded'): void {
    // Our copy stops: a handover we asked for ends with it (the migration cannot switch over a
    // stopped source; its later verdict must not touch a copy started under a newer claim).
    if (v.handover !== null) { v.handover = null; v.handoverGrants = new Set(); v.dirty = true }
    v.stopMode = mode
    v.stopReason = reason
    v.stopTries = 1
    v.lastSend = this.now
    this.setRole(v, 'stopping', `${mode} (${reason})`)
    this.out.push({ type: 'driver', command: { kind: 'haStop', vm: v.spec.id, epoch: v.own?.epoch ?? -1, mode, reason } })
  }

  private releaseOwn (v: Vm, c: HaClaim): void {
    v.lastSend = this.now
    this.onRelease(v, c, v.ownGranted)
    v.own = { ...c }
    v.dirty = true
    this.send(this.others(), { type: 'haRelease', vm: v.spec.id, claim: { ...c }, granted: v.ownGranted })
  }

  private setRole (v: Vm, role: HaRole, why: string): void {
    const from = v.role
    v.role = role
    v.roleSince = this.now
    if (from !== role) this.event('ha-role', `vm ${v.spec.id} became ${role} (from ${from}): ${why}`)
  }

  // ---------------------------------------------------------------------------------------------
  // Predicates and helpers

  private quorum (): QuorumView {
    if (this.removed) return { size: this.ids.length, needed: this.quorumSize, present: [this.self], quorate: false }
    return evaluateQuorum({
      self: this.self,
      members: this.ids,
      state: id => this.states.get(id),
      fresh: id => this.leases.fresh(id, this.now, this.config.leaseTicks)
    })
  }

  /** Failed starts of the VM in a row, as this host knows them (see Vm.lastGranted). */
  private attempts (v: Vm): number {
    return v.lastGranted?.attempts ?? v.standing?.attempts ?? 0
  }

  /** A majority granted `c`: the highest such claim carries the count of failed starts. */
  private noteGranted (v: Vm, c: HaClaim): void {
    const g = v.lastGranted
    if (g === null || compareHaClaims(c, g) > 0 || (sameHaClaim(c, g) && c.attempts !== g.attempts)) v.lastGranted = { ...c }
  }

  /**
   * A restarted agent first listens, and claims nothing until it has caught up: the claims that
   * now stand (granted while it was away) reach it by their owners' 'held' frames (every
   * heldRefreshTicks to every member) and the refusals and answers to its queries. Claiming
   * before that, from the records of its last life, picks an epoch that may equal a standing
   * claim's and rank above it (a claim refused as blocked, then abandoned and released: its own
   * record then stands above the held claim, and showed no owner). Caught up: this life has seen
   * a majority for 2 x heldRefreshTicks + claimTimeoutTicks, and has heard every member it sees
   * present for more than heldRefreshTicks (so their 'held' frames had time to arrive; a member
   * whose connection came up late counts from then). Latched for the rest of the life.
   */
  private catchingUp (): boolean {
    if (this.caughtUp) return false
    const c = this.config
    if (this.firstQuorate === null || this.now - this.firstQuorate < 2 * c.heldRefreshTicks + c.claimTimeoutTicks) return true
    for (const id of this.q.present) {
      if (id !== this.self && this.now - (this.firstHeard.get(id) ?? this.now) <= c.heldRefreshTicks) return true
    }
    this.caughtUp = true
    return false
  }

  private noteHeard (from: HostId): void {
    if (!this.firstHeard.has(from)) this.firstHeard.set(from, this.now)
  }

  /**
   * The host that runs the VM, or may, by this host's records: the standing claim's unless it was
   * released; else the highest claim kept as possibly running (a prior: e.g. the held claim of
   * the host that restarted the VM while we were away, below a claim of ours that was refused
   * and released). Null when no claim may run.
   */
  private ownerOf (v: Vm): HostId | null {
    if (v.standing !== null && !v.released) return v.standing.host
    let top: HaClaim | null = null
    for (const p of v.priors) if (top === null || compareHaClaims(p, top) > 0) top = p
    return top?.host ?? null
  }

  /** Free to restart now, by this host's records, and not given up on. */
  private isOrphan (v: Vm): boolean {
    if (v.role !== 'idle') return false
    if (this.attempts(v) >= this.maxAttempts(v)) return false
    const s = v.standing
    return (s === null || v.released || (s.host !== this.self && this.takeoverOk(s.host) && this.homeSettled(v, s))) && this.priorsFree(v, this.self)
  }

  /**
   * The first claim of a protection made live is taken over only once its home spoke of it here,
   * or an operator confirmed the home down (index.ts, live protection).
   */
  private homeSettled (v: Vm, s: HaClaim): boolean {
    return v.homeHeard || s.epoch !== v.base || s.host !== v.spec.home || this.confirmedDown(s.host)
  }

  /** Would this member grant `claimant` a claim on the VM now (apart from the order of claims)? */
  private isFree (v: Vm, claimant: HostId): boolean {
    const s = v.standing
    if (s !== null && !v.released && s.host !== claimant && !this.homeSettled(v, s)) return false
    return freeFor(v.standing, v.released, claimant, this.mayTakeOver) && this.priorsFree(v, claimant)
  }

  /** Every claim kept as possibly running is the claimant's own or its host may be taken over. */
  private priorsFree (v: Vm, claimant: HostId): boolean {
    return v.priors.every(p => freeFor(p, false, claimant, this.mayTakeOver))
  }

  private readonly mayTakeOver = (host: HostId): boolean => this.takeoverOk(host)

  /** A claim is granted over the standing one: if that was not released, keep it (it may still run). */
  private keepTakenOver (v: Vm, claimant: HostId): void {
    const s = v.standing
    if (s !== null && !v.released && s.host !== claimant) this.notePrior(v, s)
  }

  private notePrior (v: Vm, c: HaClaim): void {
    if (v.priors.some(p => sameHaClaim(p, c))) return
    // A host runs a VM under one claim at most: its higher claim replaces its lower one.
    if (v.priors.some(p => p.host === c.host && compareHaClaims(p, c) > 0)) return
    v.priors = v.priors.filter(p => p.host !== c.host)
    v.priors.push({ ...c })
    v.dirty = true
  }

  private dropPriors (v: Vm, gone: (p: HaClaim) => boolean): void {
    const keep = v.priors.filter(p => !gone(p))
    if (keep.length !== v.priors.length) { v.priors = keep; v.dirty = true }
  }

  /**
   * The owner may be taken over: dead here, silent past the fence delay, known to fence, not in
   * maintenance. A host that LEFT is not taken over: its agent stopped on purpose (an upgrade, a
   * restart) and its VMs keep running without it (the unit's KillMode=process), with no agent to
   * fence them; restarting them elsewhere would run them twice (S1). They are failed over only if
   * the host comes back and then fails, or by an operator.
   */
  private takeoverOk (host: HostId): boolean {
    if (!this.silentDead(host)) return false
    if (!this.fenceReported(host) && !this.confirmedDown(host)) return false
    if (this.isMaint(host)) return false
    const theirs = this.modes.get(host)
    const mine = this.myMode()
    return theirs !== undefined && theirs.armed && mine.armed && theirs.version === mine.version
  }

  /** Dead here and silent past the fence delay (the timing part of takeoverOk). */
  private silentDead (host: HostId): boolean {
    if (host === this.self) return false
    if (this.states.get(host) !== 'dead') return false
    return this.now - this.leases.heardAt(host) >= this.config.fenceDelayTicks
  }

  /**
   * The fence gate: `host` said, in the latest life this host heard from it, that it holds a
   * watchdog that resets it. The timing argument (index.ts) assumes that watchdog; without it a
   * hung agent's VMs run on, and a takeover would run them twice.
   */
  private fenceReported (host: HostId): boolean {
    if (host === this.self) return this.localFence
    return this.fences.get(host)?.fenced === true
  }

  /** An operator confirmed `host` down in the latest life this host knows of it. */
  private confirmedDown (host: HostId): boolean {
    const c = this.confirms.get(host)
    return c !== undefined && c.life >= this.lifeOf(host)
  }

  /** The latest life of `host` heard in its beats (0: none heard). */
  private lifeOf (host: HostId): number { return this.fences.get(host)?.life ?? 0 }

  private adoptConfirm (c: HaConfirmDown): void {
    const prev = this.confirms.get(c.host)
    if (prev !== undefined && prev.life >= c.life) return
    this.confirms.set(c.host, { ...c })
    this.confirmsDirty = true
    this.event('ha-confirm-down', `host ${c.host.slice(0, 8)} confirmed down by an operator (life ${c.life}): its HA VMs may be restarted without a fence`)
  }

  private fitsHere (v: Vm): boolean {
    const me = this.specs.get(this.self)!
    let cpu = v.spec.cpuMips
    let mem = v.spec.memMiB
    for (const o of this.vms.values()) {
      if (o === v || o.role === 'idle') continue
      cpu += o.spec.cpuMips
      mem += o.spec.memMiB
    }
    return cpu <= me.cpuMips + 1e-9 && mem <= me.memMiB + this.memOver(this.self) && v.spec.cpuMips <= (me.coreMips ?? me.cpuMips) + 1e-9
  }

  private isMaint (host: HostId): boolean { return this.maint.get(host)?.on === true }

  private maxAttempts (v: Vm): number { return v.spec.maxAttempts ?? this.config.maxAttempts }

  private myMode (): HaMode { return this.modes.get(this.self)! }

  private maxModeVersion (): number {
    let m = 0
    for (const x of this.modes.values()) m = Math.max(m, x.version)
    return m
  }

  private setMode (m: HaMode): void {
    this.modes.set(this.self, { ...m })
    this.modesDirty = true
    this.event('ha-mode', `ha ${m.armed ? 'armed' : 'disarmed'} (version ${m.version})`)
  }

  private noteMode (from: HostId, m: HaMode): void {
    const prev = this.modes.get(from)
    if (prev !== undefined && prev.version === m.version && prev.armed === m.armed) return
    if (prev !== undefined && m.version < prev.version) return
    this.modes.set(from, { ...m })
    this.modesDirty = true
  }

  /**
   * Fencing is off only when this host is disarmed and knows that a majority is disarmed at the
   * same version: from then on no claim can collect a majority of grants (restart.ts), so there
   * is nothing to fence against. A re-arm (higher version) turns fencing on again at once, and
   * no member grants the takeover of a host until that host has reported the new armed version.
   */
  private fencingOff (): boolean {
    const mine = this.myMode()
    if (mine.armed) return false
    let n = 0
    for (const id of this.ids) {
      const m = this.modes.get(id)
      if (m !== undefined && !m.armed && m.version === mine.version) n++
    }
    return n >= this.quorumSize
  }

  private adoptMaintenance (m: HaMaintenance): void {
    const prev = this.maint.get(m.host)
    if (prev !== undefined && (prev.version > m.version || (prev.version === m.version && (prev.on || !m.on)))) return
    this.maint.set(m.host, { ...m })
    this.maintDirty = true
    this.event('ha-maintenance', `host ${m.host.slice(0, 8)} maintenance ${m.on ? 'on' : 'off'} (version ${m.version})`)
  }

  private sendRequest (v: Vm): void {
    assert(v.own !== null, 'ha: request without a claim')
    v.lastSend = this.now
    const to = this.others().filter(h => !v.grants.has(h))
    if (to.length > 0) this.send(to, { type: 'haClaim', vm: v.spec.id, claim: { ...v.own }, phase: 'request', ...(v.resume && v.pausedClaim !== null ? { resumes: { ...v.pausedClaim } } : {}), ...this.settledFlag(v) })
  }

  /**
   * homeSettled for this VM's claims, when this member heard the home (itself or from a member)
   * and the protection was made live (the files' need none). An operator's confirmation is not
   * passed on this way: it is spread by the beats, and holds only for the home's life it names.
   */
  private settledFlag (v: Vm): { homeSettled?: true } {
    return v.base !== 0 && v.homeHeard ? { homeSettled: true } : {}
  }

  private sendHeld (v: Vm): void {
    assert(v.own !== null, 'ha: held without a claim')
    v.lastHeld = this.now
    this.send(this.others(), { type: 'haClaim', vm: v.spec.id, claim: { ...v.own }, phase: 'held', ...this.settledFlag(v) })
  }

  private send (to: HostId[], message: HaMessage): void { if (to.length > 0) this.out.push({ type: 'send', to, message }) }

  private others (): HostId[] { return this.ids.filter(h => h !== this.self) }

  private event (kind: string, text: string): void {
    const ev: CoreEvent = { kind, host: this.self, text }
    this.out.push({ type: 'event', event: ev })
  }
}
