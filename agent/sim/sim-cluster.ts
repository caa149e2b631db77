/**
 * N AgentCores on a virtual clock over a SimNetwork: the one simulator. Each host runs the real
 * core with whatever the options enable (membership and load reports always; migration with a
 * simulated hypervisor; HA, VIPs and replicas), and the simulator plays the runtime around it:
 *
 * Each tick: hypervisor results due (driverResult, haDriverResult, replicaDriverResult), frames
 * due (receive), address effects due (vipApplied), synthetic or hypervisor samples, then tick
 * every running core, then drain ready(): persist into the host's store first (values kept as
 * the JSON a LevelDB would hold, so nothing the core mutates later changes what is stored), then
 * hand sends to the network, then driver commands to the hypervisor, HA and replica commands to
 * the host's command lane, address effects to the host's VIP lanes, events to the listeners
 * (checkers, benchmarks); advance(). Then the watchdogs, then the after-tick hooks (checkers).
 *
 * Faults, each counted in `faults`:
 * - crash(id): kill -9 of the agent. Its VMs stay (they are not the agent's process); results it
 *   had not received are lost; its addresses stay until the unit's stop hook removes them
 *   (systemd's ExecStopPost, `starling vips --release-local`), one tick later. restart(id) builds a new core from its store,
 *   as the composition root does (agent/main.ts): the protected VMs running here are handed to
 *   HA, leftover non-running copies of protected VMs are destroyed, configured addresses are
 *   removed from the interface, the watchdog is held again (haLocalFence).
 *   agentCrash(id, after) is a crash with the restart scheduled.
 * - powerLoss(id, rebootAfter?): the machine stops: every copy on it is gone, its addresses and
 *   pending commands with it; the agent starts again from its store after rebootAfter ticks.
 * - hang(id, ticks): the agent stops (frames to it are dropped, results and address effects wait),
 *   its VMs run on; when the hang ends the core catches up every tick it missed before anything
 *   else. With HA a hang longer than the watchdog resets the host (a power loss and a reboot).
 * - the network's loss, partitions, isolation, one-way cuts and heals (SimNetwork).
 * - injected HA start failures and stop commands that never complete (startFailure, stopHang).
 *
 * HA commands are carried out as agent/runtime/driver-commands.ts haDriverExecutor does (boot:
 * a running copy here counts as started, a leftover is destroyed first; stop and destroy kill;
 * pause pauses), after 1..3 ticks (stops 1..stopTicksMax), one host's commands in order.
 * Address effects are carried out as agent/runtime/vip-applier.ts does, one at a time per VIP in
 * order, each 1..2 ticks.
 */
import {
  AgentCore, HA_KEY_PREFIX, haRestoredFrom, isReplicaRecord, KEY_DRAINING, KEY_INCARNATION,
  KEY_MEMBER_PREFIX, KEY_MIGRATION_PREFIX, KEY_REPLICA_PREFIX, KEY_REPORT_SEQ_CEILING,
  localTestCoreConfig, localTestVipConfig, Prng, restoreCoreState, restoreVipState, simHaConfig,
  VIP_KEY_PREFIX, type AgentCoreOptions, type CoreConfig, type CoreEvent, type Envelope,
  type HaCommand, type HaConfig, type HaMemberSpec, type HaVmSpec, type HostCapacity, type HostId,
  type HostSample, type Input, type MemberRecord, type MigrationConfig, type PersistedCoreState, type Ready,
  type ReplicaCommand, type ReplicaCoreOptions, type VipAddressEffect, type VipConfig,
  type VipSpec, type VmId, type AcceptorState, type ClusterDoc, type ClusterDocHaVm, type ClusterDocMember, type ConfigEntry,
  canonicalDocJson, entryHash, KEY_CONFIG_ACCEPTOR, KEY_CONFIG_ENTRY_PREFIX
} from '../core/index.js'
import { createHash } from 'node:crypto'
import type { SimHypervisor } from './sim-hypervisor.js'
import { SimNetwork } from './sim-network.js'
import type { SimNetworkOptions } from './sim-network.js'
import { SyntheticLoad } from './synthetic-load.js'

export interface SimHaOptions {
  /** Protected VMs (homes by host id). */
  vms: HaVmSpec[]
  /** HA members. @default every host, with the hosts' capacity */
  members?: HaMemberSpec[]
  /** @default simHaConfig() */
  config?: HaConfig
  /** Probability that an HA start fails. @default 0 */
  startFailure?: number
  /** Probability that an HA stop or pause never completes (until the host is reset). @default 0 */
  stopHang?: number
  /** Ticks an HA stop takes, 1..this. @default 3 */
  stopTicksMax?: number
}

export interface SimVipOptions {
  specs: VipSpec[]
  /** @default localTestVipConfig() */
  config?: VipConfig
}

export interface SimClusterOptions {
  seed: number
  hosts: number
  /** @default localTestCoreConfig() */
  config?: CoreConfig
  network?: Omit<SimNetworkOptions, 'seed'>
  /** Hosts used as seeds (the first ones). @default 3 */
  seedCount?: number
  /** Start every core already knowing every host alive (skips the join storm). @default true */
  prejoined?: boolean
  /** Ids as 64 hex digits, like Noise public keys (realistic byte counts). @default false */
  hexIds?: boolean
  /** Ticks between synthetic samples per host; 0 disables them. @default 10 */
  sampleIntervalTicks?: number
  /** VMs per host in the synthetic load. @default 4 */
  vmsPerHost?: number
  /** Simulated hypervisors: samples list their VMs and the cores' driver commands act on them. */
  hypervisor?: SimHypervisor
  /** Capacity the hosts report when a hypervisor is given. */
  capacity?: HostCapacity
  /** Migration tunables of every core. */
  migration?: MigrationConfig
  /** High availability on every host (needs a hypervisor). Every host holds a watchdog. */
  ha?: SimHaOptions
  /** Virtual IPs on every host. */
  vips?: SimVipOptions
  /** Replicas of stateless VMs on every host (needs a hypervisor). */
  replicas?: Omit<ReplicaCoreOptions, 'restored'>
  /**
   * Check every tick that a core acts no earlier than the tick nextDueTick() announced (what the
   * runtime sleeps until). Costs a scan of the members per core per tick. @default hosts <= 256
   */
  checkDeadlines?: boolean
  /**
   * The replicated cluster configuration on every host (agent/core/cluster-config): version 1
   * names `members` (default every host); configChange() proposes the next versions. Ids become
   * 64 hex digits (a member is named by its key).
   */
  clusterConfig?: { members?: HostId[] }
}

/** A core acted at a tick before the one its nextDueTick() announced: a sleeping runtime would have acted late. */
export class DeadlineError extends Error {
  static override name = 'DeadlineError'
  readonly code = 'DEADLINE_MISSED'
  constructor (message: string) { super(message); this.name = 'DeadlineError' }
}

/** The configuration log's hash in the simulator: SHA-256, as in the agent. */
export const simHash = (text: string): string => createHash('sha256').update(text).digest('hex')

export type EventListener = (viewer: HostId, ev: CoreEvent, tick: number) => void
/** A host's Ready, seen before it is carried out (checkers look at HA starts as they are issued). */
export type ReadyListener = (host: HostId, rd: Ready) => void

/** Faults injected so far, by kind (tests assert each kind happened). */
export interface FaultCounts {
  agentCrashes: number
  powerLosses: number
  hangs: number
  watchdogResets: number
  partitions: number
  isolations: number
  cuts: number
  heals: number
  /** Frames dropped by injected loss (SimNetwork). */
  lost: number
  startFailuresInjected: number
  stopHangsInjected: number
  /** Address effects that failed (the VIP adapter's errors). */
  vipFailuresInjected: number
}

interface LaneOp { at: number, life: number, ha?: HaCommand, replica?: ReplicaCommand, ok: boolean, hangs: boolean }
interface VipOp { at: number, life: number, effect: VipAddressEffect }

/** The runtime around one host's core: its store, its lanes, whether it runs. */
interface HostRt {
  store: Map<string, unknown>
  /** Agent lives: bumped at every crash, so results meant for an earlier life are dropped. */
  life: number
  /** Powered off (rebooting); the core is gone. */
  down: boolean
  /** Tick at which a crashed agent or a powered-off host starts again (Infinity: only restart()). */
  upAt: number
  hungUntil: number
  /** Ticks the core missed while hung (caught up when the hang ends). */
  missed: number
  lastPing: number
  lane: LaneOp[]
  laneAt: number
  /** Results of HA and replica commands waiting for the agent. */
  results: LaneOp[]
  vipOps: VipOp[]
  vipAt: Map<string, number>
  vipResults: Array<{ vip: string, op: 'add' | 'remove' | 'announce', ok: boolean }>
  /** Tick at which the unit's stop hook removes the addresses a killed agent left (null: none pending). */
  stopHookAt: number | null
}

export class SimCluster {
  readonly ids: HostId[]
  readonly network: SimNetwork
  readonly config: CoreConfig
  readonly seed: number
  now = 0
  private readonly cores = new Map<HostId, AgentCore>()
  private readonly rt = new Map<HostId, HostRt>()
  private readonly loads = new Map<HostId, SyntheticLoad>()
  private readonly crashedSet = new Set<HostId>()
  private readonly listeners: EventListener[] = []
  private readonly readyListeners: ReadyListener[] = []
  private readonly afterTick: Array<() => void> = []
  private readonly crashHooks: Array<(id: HostId) => void> = []
  private readonly sampleEvery: number
  private readonly seeds: Array<{ id: HostId, name: string, addr: string }>
  private readonly prng: Prng
  /** Faults' own random stream (start failures, stop hangs, command and address latencies). */
  private readonly fprng: Prng
  private restarts = 0
  private readonly checkDeadlines: boolean
  /** Ticks at which the deadline check ran (so a test can see that it did). */
  deadlineChecks = 0
  readonly hv: SimHypervisor | undefined
  private readonly migration: MigrationConfig | undefined
  private readonly capacity: HostCapacity
  readonly ha: (Required<Pick<SimHaOptions, 'vms' | 'members' | 'config'>> & { stopTicksMax: number }) | undefined
  readonly vipSpecs: VipSpec[]
  private readonly vipConfig: VipConfig
  private readonly replicaOpts: Omit<ReplicaCoreOptions, 'restored'> | undefined
  private readonly protectedVms: Set<VmId>
  private readonly drainEachStep: boolean
  private readonly memOf = new Map<VmId, number>()
  /** Probability that an HA start fails (tests turn it off for the quiet phase). */
  startFailure: number
  /** Probability that an HA stop or pause never completes. */
  stopHang: number
  /** Probability that an address effect fails (never a removal for a fence or at start-up). */
  vipFailure = 0
  private readonly addressListeners: Array<(host: HostId, effect: VipAddressEffect, ok: boolean) => void> = []
  /** Ticks from a power loss (or a watchdog reset) to the agent running again. */
  rebootTicks = 15
  readonly faults: FaultCounts = { agentCrashes: 0, powerLosses: 0, hangs: 0, watchdogResets: 0, partitions: 0, isolations: 0, cuts: 0, heals: 0, lost: 0, startFailuresInjected: 0, stopHangsInjected: 0, vipFailuresInjected: 0 }
  /** Hosts whose interface carries each VIP's address. */
  readonly carriers = new Map<string, Set<HostId>>()
  /** Successful HA starts of epoch > 0 (restarts after a failure). */
  haRestarts = 0
  /**
   * Failed HA starts of each VM since it last started, by cause: injected (startFailure) or other
   * (a resume whose paused copy is gone).
   */
  readonly startFailures = new Map<VmId, { injected: number, other: number }>()

  /** Version 1 of the replicated configuration (undefined: the cores keep none). */
  private readonly genesis: ConfigEntry | undefined

  constructor (o: SimClusterOptions) {
    this.seed = o.seed
    this.prng = new Prng(o.seed)
    this.config = o.config ?? localTestCoreConfig()
    this.network = new SimNetwork({ seed: this.prng.nextU32(), ...o.network })
    this.fprng = new Prng(this.prng.nextU32())
    this.sampleEvery = o.sampleIntervalTicks ?? 10
    this.hv = o.hypervisor
    this.migration = o.migration
    this.capacity = o.capacity ?? { cpuCores: 8, cpuMipsPerCore: 1000, memMiB: 4096, netMbps: 10000 }
    this.checkDeadlines = o.checkDeadlines ?? o.hosts <= 256
    this.ids = []
    for (let i = 0; i < o.hosts; i++) this.ids.push(o.hexIds === true || o.clusterConfig !== undefined ? this.hexId() : `h${String(i).padStart(4, '0')}`)
    if (o.clusterConfig !== undefined) {
      const members = o.clusterConfig.members ?? this.ids
      const doc: ClusterDoc = { members: members.map(id => this.docMember(id)), rules: o.migration?.rules ?? { vmVm: [], vmHost: [] }, automation: o.migration?.automation ?? 'full' }
      // The protected VMs start in the agreed document, as the agents' files put them there.
      if (o.ha !== undefined) doc.ha = { vms: o.ha.vms.map(v => this.docHaVm(v)) }
      const e = { version: 1, base: '', members: [...members], doc: canonicalDocJson(doc), note: 'genesis' }
      this.genesis = { ...e, hash: entryHash(simHash, e) }
    }
    if ((o.ha !== undefined || o.replicas !== undefined) && o.hypervisor === undefined) throw new Error('SimCluster: HA and replicas need a hypervisor')
    this.ha = o.ha === undefined
      ? undefined
      : {
          vms: o.ha.vms,
          members: o.ha.members ?? this.ids.map(id => ({ id, cpuMips: this.capacity.cpuCores * this.capacity.cpuMipsPerCore, memMiB: this.capacity.memMiB })),
          config: o.ha.config ?? simHaConfig(),
          stopTicksMax: o.ha.stopTicksMax ?? 3
        }
    this.startFailure = o.ha?.startFailure ?? 0
    this.stopHang = o.ha?.stopHang ?? 0
    this.protectedVms = new Set(o.ha?.vms.map(v => v.id) ?? [])
    for (const v of o.ha?.vms ?? []) this.memOf.set(v.id, v.memMiB)
    for (const v of o.replicas?.stateless ?? []) this.memOf.set(v.vm, v.memMiB)
    this.vipSpecs = o.vips?.specs ?? []
    this.vipConfig = o.vips?.config ?? localTestVipConfig()
    for (const s of this.vipSpecs) this.carriers.set(s.id, new Set())
    this.replicaOpts = o.replicas
    this.drainEachStep = this.ha !== undefined || this.vipSpecs.length > 0
    this.seeds = this.ids.slice(0, o.seedCount ?? 3).map(id => ({ id, name: id, addr: `${id}:49737` }))
    const prejoined = o.prejoined ?? true
    const members: MemberRecord[] = this.ids.map(id => ({ id, name: id, addr: `${id}:49737`, incarnation: 1, state: 'alive' }))
    this.ids.forEach((id, i) => {
      this.rt.set(id, { store: new Map(), life: 0, down: false, upAt: Infinity, hungUntil: 0, missed: 0, lastPing: 0, lane: [], laneAt: 0, results: [], vipOps: [], vipAt: new Map(), vipResults: [], stopHookAt: null })
      this.loads.set(id, new SyntheticLoad(o.seed * 7919 + i, o.vmsPerHost ?? 4))
    })
    // The cores are built once the caller has placed its VMs (HA hands the running ones over):
    // on the first tick, or at once when there is no HA.
    this.prejoinedMembers = prejoined ? members : undefined
    if (this.ha === undefined) this.startAll()
  }

  private readonly prejoinedMembers: MemberRecord[] | undefined
  private started = false

  private startAll (): void {
    if (this.started) return
    this.started = true
    for (const id of this.ids) {
      const restored: PersistedCoreState | undefined = this.prejoinedMembers !== undefined ? { incarnation: 0, reportSeqCeiling: 0, members: this.prejoinedMembers } : undefined
      this.cores.set(id, this.newCore(id, restored))
      this.afterStart(id)
    }
  }

  private hexId (): string {
    let s = ''
    for (let i = 0; i < 8; i++) s += this.prng.nextU32().toString(16).padStart(8, '0')
    return s
  }

  private newCore (id: HostId, restored: PersistedCoreState | undefined): AgentCore {
    const st = this.rt.get(id)!.store
    const opts: AgentCoreOptions = {
      self: id, name: id, addr: `${id}:49737`, config: this.config, seed: this.prng.nextU32(), seeds: this.seeds,
      ...(this.migration !== undefined ? { migration: this.migration } : {}),
      ...(restored !== undefined ? { restored } : {})
    }
    if (this.ha !== undefined) {
      const hv = this.hv!
      // Every running VM: the manager looks only at those it protects (some protected live, in the agreed document).
      const running = [...hv.vmsOf(id).values()].filter(v => v.state === 'running').map(v => v.id)
      const haRestored = haRestoredFrom([...st].filter(([k]) => k.startsWith(HA_KEY_PREFIX)))
      opts.ha = { members: this.ha.members, vms: this.ha.vms, config: this.ha.config, running, ...(haRestored !== undefined ? { restored: haRestored } : {}) }
    }
    if (this.vipSpecs.length > 0) {
      opts.vips = { specs: this.vipSpecs, members: this.ids, config: this.vipConfig, restored: restoreVipState([...st].filter(([k]) => k.startsWith(VIP_KEY_PREFIX))) }
    }
    if (this.genesis !== undefined) {
      const entries = [...st].filter(([k]) => k.startsWith(KEY_CONFIG_ENTRY_PREFIX)).map(([, v]) => v as ConfigEntry)
      const acceptor = (st.get(KEY_CONFIG_ACCEPTOR) ?? null) as AcceptorState | null
      opts.clusterConfig = { genesis: this.genesis, restored: entries.length === 0 ? null : { entries, acceptor }, hash: simHash }
    }
    if (this.replicaOpts !== undefined) {
      const restoredReplicas = [...st].filter(([k, v]) => k.startsWith(KEY_REPLICA_PREFIX) && isReplicaRecord(v)).map(([, v]) => v as ReplicaCoreOptions['restored'][number])
      opts.replicas = { ...this.replicaOpts, restored: restoredReplicas }
    }
    return new AgentCore(opts)
  }

  /** What the composition root does once the core exists: the watchdog is held. */
  private afterStart (id: HostId): void {
    const r = this.rt.get(id)!
    r.lastPing = this.now
    r.hungUntil = 0
    r.missed = 0
    if (this.ha !== undefined) this.stepIn(id, { type: 'haLocalFence', fenced: true })
  }

  core (id: HostId): AgentCore | undefined { return this.crashedSet.has(id) ? undefined : this.cores.get(id) }
  isCrashed (id: HostId): boolean { return this.crashedSet.has(id) }
  /** Powered off (the machine, not only the agent). */
  isDown (id: HostId): boolean { return this.rt.get(id)!.down }
  /** The agent runs and is not hung. */
  isRunning (id: HostId): boolean { return this.cores.has(id) && !this.crashedSet.has(id) && this.now >= this.rt.get(id)!.hungUntil }
  get crashed (): ReadonlySet<HostId> { return this.crashedSet }
  get liveIds (): HostId[] { return this.ids.filter(id => !this.crashedSet.has(id)) }
  store (id: HostId): ReadonlyMap<string, unknown> { return this.rt.get(id)!.store }
  /** Is `vm` an HA-protected VM? */
  protects (vm: VmId): boolean { return this.protectedVms.has(vm) }
  /** Address effects of `host` for `vip` not yet carried out: is a remove among them? */
  /** A killed agent's addresses wait for the unit's stop hook. */
  stopHookPending (host: HostId): boolean { return this.rt.get(host)!.stopHookAt !== null }
  removing (host: HostId, vip: string): boolean {
    const r = this.rt.get(host)!
    return r.stopHookAt !== null || r.vipOps.some(o => o.effect.vip === vip && o.effect.type === 'remove')
  }

  onEvent (l: EventListener): void { this.listeners.push(l) }
  onReady (l: ReadyListener): void { this.readyListeners.push(l) }
  onAfterTick (f: () => void): void { this.afterTick.push(f) }
  /** Called as each address effect is carried out, before the interface changes. */
  onAddress (l: (host: HostId, effect: VipAddressEffect, ok: boolean) => void): void { this.addressListeners.push(l) }
  /** Called just before a host crashes (its core is still readable). */
  onCrash (f: (id: HostId) => void): void { this.crashHooks.push(f) }

  tick (): void {
    this.startAll()
    this.now++
    const now = this.now
    // Agents that come back (after an agent crash or a reboot).
    for (const id of this.ids) {
      const r = this.rt.get(id)!
      if (this.crashedSet.has(id) && now >= r.upAt) { r.down = false; r.upAt = Infinity; this.restart(id) }
    }
    if (this.hv !== undefined) {
      this.hv.tick(now)
      const later: typeof this.hv.pending = []
      for (const p of this.hv.due(now)) {
        if (this.crashedSet.has(p.host)) continue
        if (now < this.rt.get(p.host)!.hungUntil) { later.push(p); continue }
        this.stepIn(p.host, { type: 'driverResult', command: p.command, result: p.result })
      }
      for (const p of later) { p.dueTick = now + 1; this.hv.pending.push(p) }
      this.runLanes()
    }
    for (const f of this.network.take(now)) {
      if (this.crashedSet.has(f.to) || now < this.rt.get(f.to)!.hungUntil) continue
      if (this.genesis !== undefined && !this.admits(f.from, f.to, f.envelope)) { this.firewalled++; continue }
      this.stepIn(f.to, { type: 'receive', from: f.from, envelope: f.envelope })
    }
    if (this.vipSpecs.length > 0) {
      for (const id of this.ids) {
        const r = this.rt.get(id)!
        if (r.stopHookAt !== null && now >= r.stopHookAt) { r.stopHookAt = null; for (const c of this.carriers.values()) c.delete(id) }
      }
      this.runVipLanes()
    }
    const sample = this.sampleEvery > 0
    for (let i = 0; i < this.ids.length; i++) {
      const id = this.ids[i]!
      if (this.crashedSet.has(id)) continue
      const r = this.rt.get(id)!
      if (now < r.hungUntil) { r.missed++; continue }
      const core = this.cores.get(id)!
      // Results that waited for the agent (a hang), in order.
      for (const x of r.results.splice(0)) this.stepResult(id, x)
      for (const x of r.vipResults.splice(0)) this.stepIn(id, x.ok ? { type: 'vipApplied', vip: x.vip, op: x.op, ok: true } : { type: 'vipApplied', vip: x.vip, op: x.op, ok: false, code: 'SIM_VIP_FAILED' })
      // A stalled loop catches up the ticks it missed before anything else.
      for (; r.missed > 0; r.missed--) { core.tick(); this.drain(id) }
      if (sample && (now + i) % this.sampleEvery === 0) this.stepIn(id, { type: 'hostSample', sample: this.sampleOf(id) })
      if (this.checkDeadlines) this.tickChecked(id, core)
      else core.tick()
    }
    for (const id of this.ids) if (this.isRunning(id)) this.drain(id)
    if (this.ha !== undefined) this.watchdogs()
    for (const f of this.afterTick) f()
  }

  private tickChecked (id: HostId, core: AgentCore): void {
    const due = core.nextDueTick()
    const before = core.pendingEffects()
    core.tick()
    this.deadlineChecks++
    if (core.pendingEffects() > before && core.now < due) {
      throw new DeadlineError(`host ${id} acted at its tick ${core.now}, before the tick ${due} its nextDueTick() announced, at tick ${this.now}; reproduce with SEED=${this.seed}`)
    }
  }

  private sampleOf (id: HostId): HostSample {
    if (this.hv === undefined) return this.loads.get(id)!.sample(this.now)
    const vms = this.hv.list(id)
    return { cpuUtil: vms.reduce((a, v) => a + v.cpuUtil, 0), memUsedMiB: vms.reduce((a, v) => a + v.memUsedMiB, 0), netMbps: 0, capacity: this.capacity, vms }
  }

  private drain (id: HostId): void {
    const core = this.cores.get(id)!
    const rd = core.ready()
    if (rd === null) return
    for (const l of this.readyListeners) l(id, rd)
    const r = this.rt.get(id)!
    const store = r.store
    for (const op of rd.persist) {
      // Stored as a LevelDB holds it: the JSON of the value at the time of the write.
      if (op.type === 'put') store.set(op.key, JSON.parse(JSON.stringify(op.value)))
      else store.delete(op.key)
    }
    for (const o of rd.send) this.network.send(this.now, id, o.to, o.envelope)
    if (this.hv !== undefined) {
      for (const c of rd.driver) this.hv.apply(id, c)
      for (const c of rd.ha) this.enqueueLane(id, r, { ha: c })
      for (const c of rd.replica) this.enqueueLane(id, r, { replica: c })
    }
    for (const e of rd.vip) {
      // One VIP's effects one at a time, in order (the VIP applier's lanes).
      const at = Math.max(this.now + 1 + this.fprng.int(2), r.vipAt.get(e.vip) ?? 0)
      r.vipAt.set(e.vip, at)
      r.vipOps.push({ at, life: r.life, effect: e })
    }
    if (this.listeners.length > 0) for (const ev of rd.events) for (const l of this.listeners) l(id, ev, this.now)
    core.advance(rd)
  }

  private enqueueLane (id: HostId, r: HostRt, c: { ha?: HaCommand, replica?: ReplicaCommand }): void {
    const stop = c.ha?.kind === 'haStop'
    const start = c.ha?.kind === 'haStart'
    const hangs = stop && this.stopHang > 0 && this.fprng.chance(this.stopHang)
    const ok = !(start && this.startFailure > 0 && this.fprng.chance(this.startFailure))
    if (hangs) this.faults.stopHangsInjected++
    if (!ok) this.faults.startFailuresInjected++
    const at = Math.max(this.now + 1 + this.fprng.int(stop ? this.ha!.stopTicksMax : 3), r.laneAt)
    r.laneAt = at
    r.lane.push({ at, life: r.life, ...c, ok, hangs })
    void id
  }

  /** HA and replica commands due now, carried out on the hypervisor; results wait for the agent. */
  private runLanes (): void {
    for (const id of this.ids) {
      const r = this.rt.get(id)!
      if (r.lane.length === 0 || r.down) continue
      const due = r.lane.filter(o => o.at <= this.now)
      if (due.length === 0) continue
      r.lane = r.lane.filter(o => o.at > this.now)
      for (const op of due) this.carryOut(id, r, op)
    }
  }

  private carryOut (id: HostId, r: HostRt, op: LaneOp): void {
    const hv = this.hv!
    if (op.hangs) return // never completes; the watchdog resets the host if it must
    const c = op.ha
    if (c !== undefined) {
      if (c.kind === 'haStart') {
        const injected = !op.ok
        if (c.mode === 'resume') {
          if (op.ok && !hv.resumePaused(id, c.vm)) op.ok = false
        } else if (op.ok) {
          hv.boot(id, c.vm, this.memOf.get(c.vm) ?? 1024)
          if (c.epoch > 0) this.haRestarts++
        }
        const streak = this.startFailures.get(c.vm) ?? { injected: 0, other: 0 }
        if (op.ok) this.startFailures.delete(c.vm)
        else {
          if (injected) streak.injected++; else streak.other++
          this.startFailures.set(c.vm, streak)
        }
      } else if (c.mode === 'pause') hv.pause(id, c.vm)
      else hv.destroy(id, c.vm)
    }
    const p = op.replica
    if (p !== undefined) {
      if (p.kind === 'replicaStart') hv.boot(id, p.id, this.memOf.get(p.vm) ?? 512)
      else hv.destroy(id, p.id)
    }
    if (op.life === r.life) r.results.push(op)
  }

  private stepResult (id: HostId, x: LaneOp): void {
    if (x.ha !== undefined) this.stepIn(id, x.ok ? { type: 'haDriverResult', command: x.ha, ok: true } : { type: 'haDriverResult', command: x.ha, ok: false, code: 'SIM_START_FAILED' })
    if (x.replica !== undefined) this.stepIn(id, { type: 'replicaDriverResult', command: x.replica, ok: true })
  }

  /**
   * One input to a host's core. With HA or VIPs its effects are carried out at once (the
   * checkers see each HA start in the state it was decided in); else they wait for the tick's
   * drain, as the runtime batches a turn's inputs.
   */
  private stepIn (id: HostId, input: Input): void {
    const core = this.cores.get(id)
    if (core === undefined) return
    core.step(input)
    if (this.drainEachStep) this.drain(id)
  }

  /** Frames the transports' member check dropped (a member of neither side's configuration). */
  firewalled = 0

  /**
   * The transports' member check (agent/adapters/hyperswarm-transport.ts): a frame passes when
   * each end is a member in the other's latest configuration. Configuration frames always pass:
   * a removed member hears the versions that removed it, and a new one fetches the history.
   */
  private admits (from: HostId, to: HostId, e: Envelope): boolean {
    if (e.body.type === 'cfg') return true
    const allowed = (h: HostId, other: HostId): boolean => {
      const st = this.cores.get(h)?.clusterConfig()
      return st == null || st.latest.members.includes(other)
    }
    return allowed(to, from) && allowed(from, to)
  }

  /** A protected VM's entry in the configuration document (home by member name). */
  docHaVm (v: HaVmSpec): ClusterDocHaVm {
    return {
      id: v.id, home: this.docMember(v.home).name, priority: v.priority ?? 0, order: v.order ?? 0, fencePolicy: v.fencePolicy ?? 'stop',
      vcpus: Math.max(1, Math.ceil(v.cpuMips / 1000)), memMiB: v.memMiB, cpuMips: v.cpuMips,
      ...(v.source.kind === 'image' ? { image: v.source.image } : { kernel: v.source.definition }),
      ...(v.maxAttempts !== undefined ? { maxAttempts: v.maxAttempts } : {}),
      ...(v.since !== undefined ? { since: v.since } : {})
    }
  }

  /** A host's entry in the configuration document (its id is its key). */
  docMember (id: HostId): ClusterDocMember { return { name: `n${id.slice(0, 8)}`, publicKey: id, address: `10.0.${this.ids.indexOf(id) >> 8}.${this.ids.indexOf(id) & 255}:49737` } }

  /**
   * An operator's change of the cluster configuration at `from`: the next version is `f` of its
   * latest document. Returns the request id (core.configOutcome(req) tells what became of it), or
   * null when the host is not running or keeps no configuration.
   */
  configChange (from: HostId, f: (d: ClusterDoc) => ClusterDoc, note: string): string | null {
    const core = this.core(from)
    const st = core?.clusterConfig()
    if (core === undefined || !this.isRunning(from) || st == null || st.doc === null) return null
    const doc = f(st.doc)
    // A VM protected live counts as protected for the checkers from now on (HA may stop it).
    for (const v of doc.ha?.vms ?? []) this.protectedVms.add(v.id)
    const entry = core.nextConfig({ members: doc.members.map(m => m.publicKey), doc: canonicalDocJson(doc), note })
    if (entry === null) return null
    const req = `r${this.now}-${from.slice(0, 6)}`
    this.step(from, { type: 'operatorConfig', req, entry })
    return req
  }

  /** Give a host's core an input from outside (an operator's request), its effects carried out at once. */
  step (id: HostId, input: Input): void {
    if (!this.isRunning(id)) return
    this.cores.get(id)!.step(input)
    this.drain(id)
  }

  /** Address effects due now, one at a time per VIP in order; a hung agent's wait. */
  private runVipLanes (): void {
    for (const id of this.ids) {
      const r = this.rt.get(id)!
      if (r.vipOps.length === 0) continue
      if (this.crashedSet.has(id)) { r.vipOps = []; continue } // the applier died with the agent
      if (this.now < r.hungUntil) continue
      const later: VipOp[] = []
      for (const op of r.vipOps) {
        if (op.at > this.now || later.some(o => o.effect.vip === op.effect.vip)) { later.push(op); continue }
        if (op.life !== r.life) continue
        const e = op.effect
        const c = this.carriers.get(e.vip)!
        // Injected failures of add, announce and of the removals the core can retry safely (a
        // host that cannot remove its address while it fences breaks S5 whatever the protocol does).
        const canFail = e.type !== 'remove' || (e.reason !== 'fence' && e.reason !== 'startup')
        const ok = !(canFail && this.vipFailure > 0 && this.fprng.chance(this.vipFailure))
        if (!ok) this.faults.vipFailuresInjected++
        for (const l of this.addressListeners) l(id, e, ok)
        if (ok && e.type === 'add-and-announce') c.add(id)
        if (ok && e.type === 'remove') c.delete(id)
        r.vipResults.push({ vip: e.vip, op: e.type === 'add-and-announce' ? 'add' : e.type, ok })
      }
      r.vipOps = later
    }
  }

  /** A host whose agent has not pinged its watchdog for watchdogTicks is reset. */
  private watchdogs (): void {
    const limit = this.ha!.config.watchdogTicks
    for (const id of this.ids) {
      const r = this.rt.get(id)!
      if (r.down) continue
      if (this.isRunning(id) && this.cores.get(id)!.haWatchdogOk()) r.lastPing = this.now
      else if (this.now - r.lastPing > limit) {
        this.faults.watchdogResets++
        this.powerOff(id, this.rebootTicks)
      }
    }
  }

  run (ticks: number): void { for (let i = 0; i < ticks; i++) this.tick() }

  /** Run until pred() holds (checked every `every` ticks) or maxTicks pass; true if it held. */
  runUntil (pred: () => boolean, maxTicks: number, every = 5): boolean {
    for (let i = 0; i < maxTicks; i++) {
      this.tick()
      if (i % every === 0 && pred()) return true
    }
    return pred()
  }

  /** kill -9 of the agent: the core disappears with whatever it had not persisted; its VMs and addresses stay. */
  crash (id: HostId): void {
    if (this.crashedSet.has(id)) return
    for (const f of this.crashHooks) f(id)
    this.crashedSet.add(id)
    this.hv?.dropResults(id)
    const r = this.rt.get(id)!
    r.life++
    r.results = []
    r.vipResults = []
    r.vipOps = []
    r.hungUntil = 0
    r.missed = 0
    // systemd's ExecStopPost (starling vips --release-local) removes the addresses it left.
    if (this.vipSpecs.length > 0) r.stopHookAt = this.now + 1
  }

  /** kill -9 of the agent, started again `after` ticks later (systemd's restart). */
  agentCrash (id: HostId, after: number): void {
    if (this.crashedSet.has(id)) return
    this.faults.agentCrashes++
    this.crash(id)
    this.rt.get(id)!.upAt = this.now + Math.max(1, after)
  }

  /** The machine loses power: its copies, addresses and pending commands are gone; it boots again after `rebootAfter` ticks. */
  powerLoss (id: HostId, rebootAfter = this.rebootTicks): void {
    if (this.rt.get(id)!.down) return
    this.faults.powerLosses++
    this.powerOff(id, rebootAfter)
  }

  private powerOff (id: HostId, rebootAfter: number): void {
    this.crash(id)
    const r = this.rt.get(id)!
    r.down = true
    r.upAt = this.now + Math.max(1, rebootAfter)
    r.lane = []
    r.laneAt = 0
    r.vipAt.clear()
    this.hv?.powerLoss(id)
    for (const c of this.carriers.values()) c.delete(id)
  }

  /** The agent stops for `ticks` (a stall, a stopped process); its VMs run on. */
  hang (id: HostId, ticks: number): void {
    if (!this.isRunning(id)) return
    this.faults.hangs++
    this.rt.get(id)!.hungUntil = this.now + ticks
  }

  partition (groups: HostId[][]): void { this.faults.partitions++; this.network.partition(groups) }
  isolate (id: HostId): void { this.faults.isolations++; this.network.isolate(id) }
  cut (a: HostId, b: HostId): void { this.faults.cuts++; this.network.cut(a, b) }
  heal (): void { this.faults.heals++; this.network.heal() }

  /** Start the host's agent again from its store (as agent/main.ts does). */
  restart (id: HostId): void {
    const r = this.rt.get(id)!
    const st = r.store
    const members: Array<[string, unknown]> = []
    const migrations: Array<[string, unknown]> = []
    for (const [k, v] of st) {
      if (k.startsWith(KEY_MEMBER_PREFIX)) members.push([k, v])
      if (k.startsWith(KEY_MIGRATION_PREFIX)) migrations.push([k, v])
    }
    const restored = restoreCoreState(st.get(KEY_INCARNATION), st.get(KEY_REPORT_SEQ_CEILING), members, migrations, st.get(KEY_DRAINING))
    // Commands the previous life handed to the hypervisor complete before the new agent lists
    // the VMs (else it would find running a copy that a pause in flight then pauses).
    if (!r.down && r.lane.length > 0) {
      const mine = r.lane.filter(o => !o.hangs)
      r.lane = r.lane.filter(o => o.hangs)
      for (const op of mine) this.carryOut(id, r, op)
    }
    if (this.ha !== undefined) {
      // A paused (or incoming) leftover of a protected VM is destroyed: a fresh agent does not
      // know under which claim it was paused.
      for (const v of [...this.hv!.vmsOf(id).values()]) if (this.protectedVms.has(v.id) && v.state !== 'running') this.hv!.destroy(id, v.id)
    }
    // Every configured address is removed from the interface before any claim.
    for (const c of this.carriers.values()) c.delete(id)
    r.stopHookAt = null
    this.restarts++
    this.cores.set(id, this.newCore(id, restored))
    this.crashedSet.delete(id)
    this.afterStart(id)
  }

  /** Deliver a hand-made frame to a host at the next tick (tests). */
  inject (from: HostId, to: HostId, envelope: Envelope): void { this.network.send(this.now, from, to, envelope) }
}
