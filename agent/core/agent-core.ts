/**
 * AgentCore: the deterministic membership and load-view core (raft RawNode shape). step() takes
 * inputs, tick() is the only notion of time, ready() hands out effects, advance() confirms them.
 * Rule: persist before send — a Ready's persist batch holds every claim (incarnation, report seq)
 * its sends make, and the runtime applies persist first.
 */
import { assert } from './assert.js'
import { validateCoreConfig } from './config.js'
import type { CoreConfig } from './config.js'
import type { Ready } from './effects.js'
import { emptyReady, isEmptyReady } from './effects.js'
import type { Input } from './inputs.js'
import { PROTOCOL_MAX, PROTOCOL_MIN } from './messages.js'
import type { Envelope, Gossip } from './messages.js'
import { Prng } from './prng.js'
import type { HostId, MemberState, MemberView, VmId } from './types.js'
import { applyAlive, applyDead, applyLeft, applySuspect, expireSuspicions, nextSuspicionDue, selfRecord } from './membership/gossip-merge.js'
import { Prober } from './membership/probe.js'
import { AntiEntropy } from './membership/push-pull.js'
import type { Seed } from './membership/push-pull.js'
import { ReportGossip } from './load/report-dissemination.js'
import { KEY_INCARNATION, KEY_MEMBER_PREFIX } from './persisted.js'
import type { PersistedCoreState } from './persisted.js'
import { CoreState } from './state.js'
import type { CoreCounters } from './state.js'
import { MigrationMachine } from './migration/migration-machine.js'
import { Scheduler, type DrainReport } from './migration/scheduler.js'
import { defaultMigrationConfig, validateMigrationConfig } from './migration/migration-config.js'
import type { MigrationConfig, MigrationRecord } from './migration/migration-state.js'
import { TERMINAL_STATES } from './migration/migration-state.js'
import { rulesHash } from './migration/reservation.js'
import type { HostSample } from './types.js'
import { VipBridge, isVipBody } from './vip/vip-bridge.js'
import type { VipCoreOptions, VipStatusReport } from './vip/vip-bridge.js'
import { HaBridge, isHaBody } from './ha/ha-bridge.js'
import type { HaCoreOptions } from './ha/ha-bridge.js'
import type { HaStatus } from './ha/ha-types.js'
import type { ClusterView } from '../../policies/types.js'
import type { ClusterPlan } from '../../policies/cluster-plan.js'
import { ReplicaManager, type ReplicaCoreOptions } from './replica/replica-manager.js'
import type { ReplicaRecord } from './replica/replica-types.js'
import { ConfigLog, defaultConfigLogOptions } from './cluster-config/config-log.js'
import type { ConfigEntry, ConfigLogOptions, ConfigOutcome, HashFn, RestoredConfigLog } from './cluster-config/config-log.js'
import { haSpecsOf, parseClusterDoc, resolveRuleHosts, type ClusterDoc } from './cluster-config/cluster-doc.js'

export type { PersistedCoreState } from './persisted.js'
export type { CoreCounters } from './state.js'

export interface AgentCoreOptions {
  self: HostId
  name: string
  addr: string
  config: CoreConfig
  seed: number
  seeds: Seed[]
  restored?: PersistedCoreState
  /** Migration limits, timeouts, rules and policy. @default defaultMigrationConfig() */
  migration?: MigrationConfig
  /** Virtual IPs (agent/core/vip): none when absent. */
  vips?: VipCoreOptions
  /** High availability (agent/core/ha): none when absent. */
  ha?: HaCoreOptions
  /** Replicas of stateless VMs (agent/core/replica): none when absent. */
  replicas?: ReplicaCoreOptions
  /**
   * The replicated cluster configuration (cluster-config/config-log.ts): members, rules and
   * automation agreed by a majority and changed live. Absent: the configuration files rule, as
   * before (the simulator's plain runs).
   */
  clusterConfig?: ClusterConfigCoreOptions
}

export interface ClusterConfigCoreOptions {
  /** Version 1, made from this host's configuration file. */
  genesis: ConfigEntry
  /** What the store holds (cfg/entry/*, cfg/acceptor), null on a first start. */
  restored: RestoredConfigLog | null
  /** A pure hash function (SHA-256 in the agent). */
  hash: HashFn
  log?: Partial<ConfigLogOptions>
}

/** The cluster configuration as this host holds it (`starling config show`). */
export interface ClusterConfigStatus {
  latest: ConfigEntry
  /** The latest document, parsed (null when it does not parse: never acted on). */
  doc: ClusterDoc | null
  removed: boolean
  inFlight: ReturnType<ConfigLog['inFlight']>
  counters: ConfigLog['counters']
}

/** Snapshot for the runtime's metrics and the CLI. */
export interface CoreStatus {
  self: HostId
  incarnation: number
  /** Ticks since this core started. */
  ticks: number
  lamport: number
  leaving: boolean
  /** Lifeguard local health score (0 = healthy). */
  healthScore: number
  /** What probe intervals and timeouts are multiplied by: healthScore + 1, or the measured round trips' need if larger (awareness.ts). */
  probeMultiplier: number
  /** The median round trip of direct acks in the last 20 probe intervals, ticks (null when none). */
  probeRttTicks: number | null
  members: Record<MemberState, number>
  /** Items in the membership broadcast queue. */
  queueDepth: number
  suspicionsRunning: number
  counters: CoreCounters
  migrations: MigrationMachine['counts'] & { live: number, draining: boolean, rulesHash: string, rulesAgreed: boolean }
  /** Drains this host runs or asked another host for, VM by VM (`starling drain` waits on these). */
  drains: DrainReport[]
}

export class AgentCore {
  private readonly s: CoreState
  private readonly prober: Prober
  private readonly reports: ReportGossip
  private readonly antiEntropy: AntiEntropy
  private handedOut: Ready | null = null
  private nextGossipTick = 1
  private nextSnapshotTick: number
  private readonly mig: MigrationMachine
  private readonly scheduler: Scheduler
  private readonly vip: VipBridge | null
  private readonly ha: HaBridge | null
  private readonly replicas: ReplicaManager | null
  private readonly cfgLog: ConfigLog | null = null
  private cfgDoc: ClusterDoc | null = null
  /** Every member name this host has known (files, agreed versions) and its key: a protected VM's home may have been removed since. */
  private readonly memberKeys = new Map<string, HostId>()
  /** The latest outcome of each operator change, by request id (the most recent 64). */
  private readonly cfgOutcomes = new Map<string, ConfigOutcome>()

  constructor (opts: AgentCoreOptions) {
    const config = validateCoreConfig(opts.config)
    const restored = opts.restored
    const incarnation = (restored?.incarnation ?? 0) + 1
    const s = new CoreState(opts.self, opts.name, opts.addr, config, new Prng(opts.seed), incarnation)
    this.s = s
    s.persist(KEY_INCARNATION, incarnation)
    s.members.becomeAlive(s.self, s.name, s.addr, incarnation, 0)
    s.members.logging = false
    for (const r of restored?.members ?? []) this.restoreMember(r)
    s.members.logging = true
    s.dirty.clear()
    this.reports = new ReportGossip(s, restored?.reportSeqCeiling ?? 0)
    s.rider = to => this.reports.ride(to)
    this.prober = new Prober(s)
    this.antiEntropy = new AntiEntropy(s, opts.seeds, this.reports)
    this.nextSnapshotTick = config.memberSnapshotIntervalTicks
    const fileCfg = validateMigrationConfig(opts.migration ?? defaultMigrationConfig())
    // Rules name hosts; the decision code compares host ids (the members known at start-up).
    const migCfg = { ...fileCfg, rules: resolveRuleHosts(fileCfg.rules, [{ name: opts.name, publicKey: opts.self }, ...opts.seeds.map(x => ({ name: x.name, publicKey: x.id }))]) }
    // The members compare the rules as written (a name one member could not resolve is still the same rule).
    if (fileCfg.rules.vmVm.length + fileCfg.rules.vmHost.length > 0) s.rulesHash = rulesHash(fileCfg.rules)
    this.mig = new MigrationMachine(s, migCfg, restored?.migrations ?? [], restored?.draining === true)
    this.replicas = opts.replicas === undefined || opts.replicas.params.mode === 'off' && opts.replicas.restored.length === 0 && opts.replicas.stateless.length === 0
      ? null
      : new ReplicaManager(s, this.mig, opts.replicas)
    this.scheduler = new Scheduler(s, this.mig, this.replicas)
    if (opts.clusterConfig !== undefined) {
      const cc = opts.clusterConfig
      this.cfgLog = new ConfigLog(s.self, cc.genesis, cc.restored, cc.hash, {
        send: (to, m) => { s.send(to, m) },
        persist: (k, v) => { s.persist(k, v) },
        event: (kind, text) => { s.emit({ kind, host: s.self, text }) },
        committed: e => { this.applyClusterConfig(e) },
        ...(s.config.activeViewSize > 0 ? { announcePeers: () => s.view.peers() } : {})
      }, { ...defaultConfigLogOptions(), ...cc.log })
      const log = this.cfgLog
      s.sameMembers = (a, b) => a === b || log.sameMembers(a, b)
    }
    // The protected VMs are the agreed configuration's (the files' until it keeps some).
    const agreedDoc = this.cfgLog === null ? null : parseClusterDoc(this.cfgLog.latest().doc)
    for (const x of [{ name: opts.name, id: opts.self }, ...opts.seeds]) this.memberKeys.set(x.name, x.id)
    for (const e of this.cfgLog?.history() ?? []) {
      const d = parseClusterDoc(e.doc)
      if (typeof d !== 'string') for (const m of d.members) this.memberKeys.set(m.name, m.publicKey)
    }
    const agreedVms = agreedDoc === null || typeof agreedDoc === 'string' ? null : haSpecsOf(agreedDoc, this.memberKeys)
    // A VM whose home joined after this host's file was written comes with the first applyClusterConfig (setVms), once HA counts that member.
    const haOpts = opts.ha === undefined ? undefined : { ...opts.ha, ...(agreedVms !== null ? { vms: agreedVms.filter(v => opts.ha!.members.some(m => m.id === v.home && m.tieBreaker !== true)) } : {}) }
    this.vip = opts.vips === undefined || opts.vips.specs.length === 0 ? null : new VipBridge(s, opts.vips, s.prng.fork(7), () => this.mig.recs.values())
    this.ha = haOpts === undefined ? null : new HaBridge(s, { rules: migCfg.rules, ...haOpts }, s.prng.fork(11), this.vip, migCfg.memOvercommitRatio)
    if (this.ha !== null) {
      // A protected VM's claim moves with its migration: the handover (agent/core/ha/index.ts).
      const ha = this.ha
      this.mig.ha = {
        protects: vm => ha.protects(vm),
        incomingStart: (vm, from) => ha.incomingStart(vm, from),
        handoverStart: (vm, to) => ha.handoverStart(vm, to),
        handoverGranted: vm => ha.handoverGranted(vm),
        handoverEnd: (vm, outcome) => ha.handoverEnd(vm, outcome),
        staleCopy: vm => ha.staleCopy(vm),
        timeoutTicks: 3 * (opts.ha?.config.claimTimeoutTicks ?? 0)
      }
      ha.onIncomingFenced = vm => this.mig.onIncomingFenced(vm)
    }
    if (this.cfgLog !== null) this.applyClusterConfig(this.cfgLog.latest())
    s.broadcast(s.self, { type: 'alive', member: selfRecord(s) })
  }

  /** A version of the cluster configuration is decided: act on it (rules and automation at once). */
  private applyClusterConfig (e: ConfigEntry): void {
    const s = this.s
    s.cfgVersion = e.version
    if (!e.members.includes(s.self)) {
      s.emit({ kind: 'config-removed', host: s.self, text: `this host was removed from the cluster at configuration version ${e.version} (${e.note}): the members refuse it and it takes no part any more; to bring it back, add it again from a member (starling members add)` })
    }
    // Majorities move with the agreed member list (one member per version: config-log.ts), the
    // version's document valid or not: the log's quorums already count these members, and HA's
    // argument (ha-manager.ts, onRequest) counts by them.
    this.ha?.setMembers(e.members)
    this.vip?.setMembers(e.members)
    const doc = parseClusterDoc(e.doc)
    if (typeof doc === 'string') {
      this.cfgDoc = null
      s.emit({ kind: 'config-invalid', host: s.self, text: `cluster configuration version ${e.version} is not valid (${doc}); the previous rules stay in force` })
      return
    }
    this.cfgDoc = doc
    const rulesBefore = this.mig.cfg.rules
    const rules = resolveRuleHosts(doc.rules, doc.members)
    this.mig.cfg = { ...this.mig.cfg, rules, automation: doc.automation }
    if (rulesHash(rulesBefore) !== rulesHash(rules)) this.mig.recheckIncoming(`a hard rule agreed at configuration version ${e.version} forbids it here`)
    // HA restarts honour the same rules as placements and migrations.
    this.ha?.setRules(rules)
    // The protected VMs, live (agent/core/ha/index.ts, live protection).
    for (const m of doc.members) this.memberKeys.set(m.name, m.publicKey)
    const haVms = haSpecsOf(doc, this.memberKeys)
    if (haVms !== null) this.ha?.setVms(haVms, e.version)
    s.rulesHash = doc.rules.vmVm.length + doc.rules.vmHost.length > 0 ? rulesHash(doc.rules) : ''
  }

  /** The cluster configuration this host holds, or null when it keeps none. */
  clusterConfig (): ClusterConfigStatus | null {
    const l = this.cfgLog
    if (l === null) return null
    return { latest: l.latest(), doc: this.cfgDoc, removed: l.removed(), inFlight: l.inFlight(), counters: { ...l.counters } }
  }

  /** Every version this host holds, oldest first. */
  clusterConfigHistory (): readonly ConfigEntry[] { return this.cfgLog?.history() ?? [] }

  /** An entry for the next version with this content, to hand back in an operatorConfig input. */
  nextConfig (content: { members: HostId[], doc: string, note: string }): ConfigEntry | null {
    return this.cfgLog?.makeNext(content) ?? null
  }

  /** The latest outcome of an operator's change (committed, conflict, pending, refused), if any yet. */
  configOutcome (req: string): ConfigOutcome | undefined { return this.cfgOutcomes.get(req) }

  private drainConfigOutcomes (): void {
    const l = this.cfgLog
    if (l === null || l.outcomes.length === 0) return
    for (const o of l.outcomes.splice(0)) {
      this.cfgOutcomes.delete(o.req)
      this.cfgOutcomes.set(o.req, o)
      if (this.cfgOutcomes.size > 64) this.cfgOutcomes.delete(this.cfgOutcomes.keys().next().value!)
    }
  }

  private restoreMember (r: PersistedCoreState['members'][number]): void {
    const s = this.s
    if (r.id === s.self) return
    const m = s.members.becomeAlive(r.id, r.name, r.addr, r.incarnation, 0)
    if (r.state === 'dead') s.members.becomeDead(m, r.incarnation, 0)
    else if (r.state === 'left') s.members.becomeLeft(m, r.incarnation, 0)
  }

  step (input: Input): void {
    const s = this.s
    switch (input.type) {
      case 'receive': this.receive(input.from, input.envelope); break
      case 'hostSample': this.reports.onSample(this.onSample(input.sample)); this.vip?.onSample(input.sample.vms); this.ha?.onSample(input.sample.vms); break
      case 'driverResult': this.mig.onDriverResult(input.command, input.result); break
      case 'operatorMigrate': this.operatorMigrate(input.vm, input.to, input.withStorage === true); break
      case 'operatorDrain': this.operatorDrain(input.host); break
      case 'operatorConfig':
        if (this.cfgLog === null) this.cfgOutcomes.set(input.req, { req: input.req, status: 'refused', version: 0, detail: 'this agent keeps no replicated configuration' })
        else this.cfgLog.propose(input.req, input.entry, s.now)
        break
      case 'peerConnected':
        s.tracksConnections = true
        s.connected.add(input.peer)
        if (!s.leaving) this.antiEntropy.onPeerConnected(input.peer)
        break
      case 'peerDisconnected':
        s.connected.delete(input.peer)
        // Only a neighbour's connection is expected to stay open: others close when idle.
        if (s.view.has(input.peer)) this.prober.probeNow(input.peer)
        break
      case 'frameRejected': s.counters.framesRejected++; break
      case 'leave': this.leave(); this.vip?.leave(); break
      case 'ticksSkipped': this.ha?.elapsed(input.ticks); break
      case 'vipApplied': case 'operatorVipMove': this.vip?.onInput(input); break
      case 'haDriverResult': case 'haOperatorMode': case 'haOperatorMaintenance': case 'haOperatorConfirmDown': case 'haLocalFence': this.ha?.onInput(input); break
      case 'replicaDriverResult': this.replicas?.onDriverResult(input.command, input.ok, input.code); break
      case 'operatorReplicate': this.operatorReplicate(input.vm, input.to, input.retire); break
    }
    this.ha?.flush() // before the VIP bridge: it passes placement hints to it
    this.vip?.flush()
    this.drainConfigOutcomes()
  }

  tick (): void {
    const s = this.s
    s.now++
    this.prober.tick()
    expireSuspicions(s)
    this.reports.tick()
    this.antiEntropy.tick()
    this.mig.tick()
    this.replicas?.tick()
    this.scheduler.tick()
    if (this.ha !== null) { this.ha.tick(); this.ha.flush() }
    if (this.vip !== null) { this.vip.tick(); this.vip.flush() }
    if (this.cfgLog !== null) { this.cfgLog.tick(s.now); this.drainConfigOutcomes() }
    if (s.now >= this.nextGossipTick) {
      this.nextGossipTick = s.now + s.config.gossipIntervalTicks
      this.gossipRound()
    }
    if (s.now >= this.nextSnapshotTick) {
      this.nextSnapshotTick = s.now + s.config.memberSnapshotIntervalTicks
      this.flushSnapshot()
    }
  }

  /**
   * The earliest tick after now at which tick() may do anything: produce an effect or change
   * what status() shows. Ticks before it are no-ops apart from counting, so a runtime may sleep
   * until then (it still calls tick() for every tick, in order, before the next input: the core
   * stays a pure function of its inputs). Exact for membership, reports, gossip, migration and
   * scheduling; HA and VIPs, whose timers guard safety, ask for every tick. Recompute after every
   * step() and tick().
   */
  nextDueTick (): number {
    const s = this.s
    if (this.ha !== null || this.vip !== null) return s.now + 1
    let due = Math.min(
      this.prober.nextDue(), nextSuspicionDue(s), this.reports.nextDue(), this.antiEntropy.nextDue(),
      this.mig.nextDue(), this.scheduler.nextDue(), this.replicas?.nextDue() ?? Infinity, this.cfgLog?.nextDue() ?? Infinity
    )
    if (s.queue.size > 0) due = Math.min(due, this.nextGossipTick)
    else due = Math.min(due, this.roundAtOrAfter(this.reports.pushDueAt()))
    if (s.dirty.size > 0) due = Math.min(due, this.nextSnapshotTick)
    return Math.max(due, s.now + 1)
  }

  /** Effects produced and not yet handed out by ready() (for the simulator's deadline check). */
  /** The first gossip round at or after tick t (rounds run every gossipIntervalTicks from nextGossipTick). */
  private roundAtOrAfter (t: number): number {
    if (t === Infinity) return Infinity
    if (t <= this.nextGossipTick) return this.nextGossipTick
    const k = this.s.config.gossipIntervalTicks
    return this.nextGossipTick + Math.ceil((t - this.nextGossipTick) / k) * k
  }

  pendingEffects (): number {
    const p = this.s.pending
    return p.persist.length + p.send.length + p.events.length + p.driver.length + p.vip.length + p.ha.length + p.replica.length + p.split.length
  }

  /** The current tick (the number of tick() calls so far). */
  get now (): number { return this.s.now }

  /** The effects to carry out, in order (persist, then send), or null when there are none. */
  ready (): Ready | null {
    if (this.handedOut !== null) return this.handedOut
    if (isEmptyReady(this.s.pending)) return null
    this.handedOut = this.s.pending
    this.s.pending = emptyReady()
    return this.handedOut
  }

  /** The runtime carried out `rd` (the last Ready handed out). */
  advance (rd: Ready): void {
    assert(rd === this.handedOut, 'advance() called with a Ready that was not handed out')
    this.handedOut = null
  }

  status (): CoreStatus {
    const s = this.s
    return {
      self: s.self,
      incarnation: s.incarnation,
      ticks: s.now,
      lamport: s.lamport,
      leaving: s.leaving,
      healthScore: s.awareness.healthScore,
      probeMultiplier: s.awareness.multiplier,
      probeRttTicks: this.prober.rtt.typical(s.now),
      members: { ...s.members.counts },
      queueDepth: s.queue.size,
      suspicionsRunning: s.suspicions.size,
      counters: { ...s.counters },
      migrations: { ...this.mig.counts, live: this.mig.live().length, draining: this.mig.draining, rulesHash: s.rulesHash, rulesAgreed: this.mig.rulesAgreed() },
      drains: this.scheduler.drainReports()
    }
  }

  /** Virtual IPs as this host sees them (null when none are configured). */
  vips (): VipStatusReport | null { return this.vip?.status() ?? null }

  /** High availability as this host sees it (null when not configured). */
  haStatus (): HaStatus | null { return this.ha?.status() ?? null }

  /** May the runtime ping the watchdog? False only while HA says this host must fence (fencing.ts). */
  haWatchdogOk (): boolean { return this.ha?.watchdogOk() ?? true }

  /** Replicas this host runs or hosts (null when replication is not configured). */
  replicaRecords (): ReplicaRecord[] | null { return this.replicas?.records() ?? null }

  /** The VMs in a migration this host takes part in and that has not ended (either end). */
  migratingVms (): Set<VmId> {
    const out = new Set<VmId>()
    for (const r of this.mig.recs.values()) if (!TERMINAL_STATES.has(r.state)) out.add(r.vm)
    return out
  }

  /** Migrations this host takes part in (in flight and recent), newest first. Copies. */
  migrations (): MigrationRecord[] {
    return [...this.mig.recs.values()].map(r => ({ ...r })).sort((a, b) => b.createdTick - a.createdTick)
  }

  /** The latest sample's VMs, with those in flight marked 'migrating' (what the report carries). */
  private onSample (sample: HostSample): HostSample {
    this.mig.localVms = sample.vms
    this.mig.capacity = sample.capacity
    this.mig.memory = sample.memory
    const moving = new Set(this.mig.live().map(r => r.vm))
    if (moving.size === 0) return sample
    return { ...sample, vms: sample.vms.map(v => moving.has(v.id) ? { ...v, state: 'migrating' } : v) }
  }

  private operatorMigrate (vm: string, to: string | undefined, withStorage: boolean): void {
    const s = this.s
    const r = this.scheduler.operatorMove(vm, to, withStorage ? 'yes' : 'auto')
    if ('forwardTo' in r) {
      s.send(r.forwardTo, { type: 'moveRequested', vm, to: to ?? '', drain: false, ...(withStorage ? { withStorage: true } : {}) }, [], false)
      s.emit({ kind: 'migration-request', host: r.forwardTo, text: `migrate ${vm}: forwarded to the host that runs it` })
    } else if ('error' in r) {
      s.emit({ kind: 'migration-request', host: s.self, text: `migrate ${vm}: refused: ${r.error}` })
    }
  }

  private operatorReplicate (vm: string, to: string | undefined, retire: boolean): void {
    const s = this.s
    const fail = (why: string): void => { s.emit({ kind: 'replica', host: s.self, text: `replicate ${vm}: refused: ${why}` }) }
    if (this.replicas === null) { fail('replication is not configured (replication.vms)'); return }
    if (retire) { if (!this.replicas.retire(vm, 'operator')) fail('no replica of it starts or runs from here'); return }
    const r = this.scheduler.operatorReplicate(vm, to)
    if ('error' in r) fail(r.error)
  }

  private operatorDrain (host: string): void {
    const s = this.s
    const id = this.scheduler.resolveHost(host)
    if (id === null) { s.emit({ kind: 'drain', host: s.self, text: `drain ${host}: no such member` }); return }
    if (id === s.self) { this.mig.setDraining(true); return }
    s.send(id, { type: 'moveRequested', vm: '', to: '', drain: true }, [], false)
    this.scheduler.noteDrainAsked(id)
  }

  /**
   * The active view (membership/active-view.ts): the members this host wants a connection to;
   * the transport keeps those open and connects to any other member only while frames go to it.
   * Sorted by id; its version changes whenever it does.
   */
  activeView (): { version: number, peers: HostId[] } {
    const v = this.s.view
    return { version: v.currentVersion(), peers: v.peers() }
  }

  /** The active view's version alone (cheap: the runtime asks after every turn). */
  activeViewVersion (): number { return this.s.view.currentVersion() }

  /** This host's current incarnation (cheap; status() copies counters). */
  get incarnation (): number { return this.s.incarnation }

  /** The cluster view: every known member with its state, incarnation and latest report. */
  view (): MemberView[] {
    const out: MemberView[] = []
    for (const m of this.s.members.byId.values()) {
      out.push({ id: m.id, name: m.name, addr: m.addr, state: m.state, incarnation: m.incarnation, report: m.report })
    }
    return out
  }

  /** What the cluster's hosts would do now, step by step (policies/cluster-plan.ts; `starling plan`). */
  plan (): ClusterPlan { return this.scheduler.plan() }

  /** The frozen cluster view this host's policies decide over (the scheduler's; simulators read it). */
  clusterView (): ClusterView { return this.scheduler.view() }

  /** One member's row without building the whole view (cheap for simulators and checkers). */
  member (id: HostId): MemberView | undefined {
    const m = this.s.members.get(id)
    if (m === undefined) return undefined
    return { id: m.id, name: m.name, addr: m.addr, state: m.state, incarnation: m.incarnation, report: m.report }
  }

  private receive (from: HostId, e: Envelope): void {
    const s = this.s
    if (e.protocolMax < PROTOCOL_MIN || e.protocolMin > PROTOCOL_MAX || e.from !== from) {
      s.counters.framesRejected++
      return
    }
    s.counters.framesReceived++
    s.lamport = Math.max(s.lamport, e.lamport)
    const heldDead = this.antiEntropy.witness(from, e.incarnation)
    // A report among a frame's gossip was pushed (on a gossip round or riding on a probe, an ack or
    // an announcement) and is forwarded once; pulled reports come in a pushPull body instead.
    const pushed = e.body.type !== 'pushPull'
    // Configuration frames do not count: a removed member still hears the versions that removed
    // it (and may answer), but renews nothing; its silence is measured from its other traffic.
    if (this.ha !== null && !isHaBody(e.body) && e.body.type !== 'cfg') this.ha.heard(from)
    // A sender held dead is not believed about others until it refutes, but what it says about
    // us is always heard: a Suspect or Dead about ourselves only makes us refute (raise our
    // incarnation), which is safe, and without it two sides that each hold the other dead after
    // a partition or a long local stall would never merge (each ignores the other's death notice).
    for (const g of e.gossip) if (!heldDead || aboutSelf(g, s.self)) this.applyGossip(g, pushed ? from : null)
    if (s.leaving) return
    const b = e.body
    // Probes may travel as datagrams and overtake the stream: only stream frames say which
    // configuration a member acts on (a commit always reaches a peer before its newer frames).
    if (this.cfgLog !== null && b.type !== 'ping' && b.type !== 'ack' && b.type !== 'nack' && b.type !== 'pingReq') {
      s.peerCfg.set(from, e.cfgVersion ?? 0)
      if (b.type !== 'cfg' && e.cfgVersion !== undefined) this.cfgLog.heard(from, e.cfgVersion, s.now)
    }
    switch (b.type) {
      case 'ping': if (!this.prober.onPing(from, b)) s.counters.framesRejected++; break
      case 'ack': this.prober.onAck(from, b); break
      case 'nack': this.prober.onNack(b); break
      case 'pingReq': this.prober.onPingReq(from, b); break
      case 'pushPull': this.antiEntropy.onPushPull(from, b, heldDead); break
      case 'reportPull': this.reports.onPull(from, b.want); break
      case 'gossip': break
      case 'cfg': this.cfgLog?.step(from, b, s.now); break
      case 'moveRequested':
        if (b.drain) this.mig.setDraining(true)
        else this.operatorMigrate(b.vm, b.to === '' ? undefined : b.to, b.withStorage === true)
        break
      default:
        if (isVipBody(b)) this.vip?.onMessage(from, b)
        else if (isHaBody(b)) this.ha?.onMessage(from, b)
        else if (b.type === 'replica') this.replicas?.onMessage(from, b)
        else this.mig.onMessage(from, b)
        break
    }
  }

  /** pushedBy: the member a pushed report came from (null: not a push). */
  private applyGossip (g: Gossip, pushedBy: HostId | null): void {
    const s = this.s
    switch (g.type) {
      case 'alive': applyAlive(s, g.member); break
      case 'suspect':
        // Heard from another member: check for ourselves, so a real failure gathers its
        // confirmations within a probe's deadline (Prober.confirmProbe).
        if (applySuspect(s, g.node, g.incarnation, g.from) && g.from !== s.self) this.prober.confirmProbe(g.node)
        break
      case 'dead': applyDead(s, g.node, g.incarnation, g.from); break
      case 'left': applyLeft(s, g.node, g.incarnation); break
      case 'report': this.reports.accept(g.report, pushedBy); break
    }
  }

  /**
   * Membership broadcasts to gossipNodes random peers of the active view (these frames also carry
   * the reports waiting to be pushed: CoreState.rider); reports due (they waited
   * reportPushWaitTicks for frames going out anyway) and still short of reportFanout peers go to
   * more random view peers in frames of their own.
   */
  private gossipRound (): void {
    const s = this.s
    const due = this.reports.pushDueAt() <= s.now
    if (s.queue.size === 0 && !due) return
    const fanout = due ? Math.max(s.config.gossipNodes, s.config.reportFanout) : s.config.gossipNodes
    const peers = s.view.random(s.prng, fanout)
    for (let i = 0; i < peers.length; i++) {
      const p = peers[i]!
      if (i < s.config.gossipNodes && s.queue.size > 0) s.send(p, { type: 'gossip' })
      else if (due && this.reports.dueFor(p)) s.send(p, { type: 'gossip' }, this.reports.ride(p), false)
    }
    if (due) this.reports.endRound()
  }

  private flushSnapshot (): void {
    const s = this.s
    for (const id of s.dirty) {
      const m = s.members.get(id)
      if (m === undefined || id === s.self) continue
      s.persist(KEY_MEMBER_PREFIX + id, { id, name: m.name, addr: m.addr, incarnation: m.incarnation, state: m.state })
    }
    s.dirty.clear()
  }

  /** Graceful leave: broadcast Left and send it at once to a few peers; stop probing. */
  private leave (): void {
    const s = this.s
    if (s.leaving) return
    s.leaving = true
    s.persist(KEY_INCARNATION, s.incarnation)
    s.members.becomeLeft(s.selfMember, s.incarnation, s.now)
    const g: Gossip = { type: 'left', node: s.self, incarnation: s.incarnation }
    s.broadcast(s.self, g)
    for (const p of s.view.random(s.prng, 2 * s.config.gossipNodes)) s.send(p, { type: 'gossip' }, [g], false)
  }
}

/** Gossip that speaks about this host itself (a suspicion, a death, or a newer Alive of ours). */
function aboutSelf (g: Gossip, self: HostId): boolean {
  switch (g.type) {
    case 'suspect': case 'dead': case 'left': return g.node === self
    case 'alive': return g.member.id === self
    default: return false
  }
}
