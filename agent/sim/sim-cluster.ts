/**
 * N AgentCores on a virtual clock over a SimNetwork. Each tick: deliver the frames due (step
 * receive), feed synthetic host samples, tick every live core, then drain ready(): persist into
 * the host's in-memory store first, then hand sends to the network, then pass events to the
 * listeners (checkers, benchmarks); advance(). crash(id) drops a core and its in-flight frames;
 * restart(id) builds a new core from what its store holds.
 */
import {
  AgentCore, KEY_DRAINING, KEY_INCARNATION, KEY_MEMBER_PREFIX, KEY_MIGRATION_PREFIX,
  KEY_REPORT_SEQ_CEILING, localTestCoreConfig, Prng, restoreCoreState, type CoreConfig,
  type CoreEvent, type Envelope, type HostCapacity, type HostId, type HostSample, type MemberRecord,
  type MigrationConfig, type PersistedCoreState
} from '../core/index.js'
import type { SimHypervisor } from './sim-hypervisor.js'
import { SimNetwork } from './sim-network.js'
import type { SimNetworkOptions } from './sim-network.js'
import { SyntheticLoad } from './synthetic-load.js'

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
  /**
   * Check every tick that a core acts no earlier than the tick nextDueTick() announced (what the
   * runtime sleeps until). Costs a scan of the members per core per tick. @default hosts <= 256
   */
  checkDeadlines?: boolean
}

/** A core acted at a tick before the one its nextDueTick() announced: a sleeping runtime would have acted late. */
export class DeadlineError extends Error {
  static override name = 'DeadlineError'
  readonly code = 'DEADLINE_MISSED'
  constructor (message: string) { super(message); this.name = 'DeadlineError' }
}

export type EventListener = (viewer: HostId, ev: CoreEvent, tick: number) => void

export class SimCluster {
  readonly ids: HostId[]
  readonly network: SimNetwork
  readonly config: CoreConfig
  readonly seed: number
  now = 0
  private readonly cores = new Map<HostId, AgentCore>()
  private readonly stores = new Map<HostId, Map<string, unknown>>()
  private readonly loads = new Map<HostId, SyntheticLoad>()
  private readonly crashedSet = new Set<HostId>()
  private readonly listeners: EventListener[] = []
  private readonly afterTick: Array<() => void> = []
  private readonly crashHooks: Array<(id: HostId) => void> = []
  private readonly sampleEvery: number
  private readonly seeds: Array<{ id: HostId, name: string, addr: string }>
  private readonly prng: Prng
  private restarts = 0
  private readonly checkDeadlines: boolean
  /** Ticks at which the deadline check ran (so a test can see that it did). */
  deadlineChecks = 0
  readonly hv: SimHypervisor | undefined
  private readonly migration: MigrationConfig | undefined
  private readonly capacity: HostCapacity

  constructor (o: SimClusterOptions) {
    this.seed = o.seed
    this.prng = new Prng(o.seed)
    this.config = o.config ?? localTestCoreConfig()
    this.network = new SimNetwork({ seed: this.prng.nextU32(), ...o.network })
    this.sampleEvery = o.sampleIntervalTicks ?? 10
    this.hv = o.hypervisor
    this.migration = o.migration
    this.capacity = o.capacity ?? { cpuCores: 8, cpuMipsPerCore: 1000, memMiB: 4096, netMbps: 10000 }
    this.checkDeadlines = o.checkDeadlines ?? o.hosts <= 256
    this.ids = []
    for (let i = 0; i < o.hosts; i++) this.ids.push(o.hexIds === true ? this.hexId() : `h${String(i).padStart(4, '0')}`)
    this.seeds = this.ids.slice(0, o.seedCount ?? 3).map(id => ({ id, name: id, addr: `${id}:49737` }))
    const prejoined = o.prejoined ?? true
    const members: MemberRecord[] = this.ids.map(id => ({ id, name: id, addr: `${id}:49737`, incarnation: 1, state: 'alive' }))
    this.ids.forEach((id, i) => {
      this.stores.set(id, new Map())
      this.loads.set(id, new SyntheticLoad(o.seed * 7919 + i, o.vmsPerHost ?? 4))
      const restored: PersistedCoreState | undefined = prejoined ? { incarnation: 0, reportSeqCeiling: 0, members } : undefined
      this.cores.set(id, this.newCore(id, restored))
    })
  }

  private hexId (): string {
    let s = ''
    for (let i = 0; i < 8; i++) s += this.prng.nextU32().toString(16).padStart(8, '0')
    return s
  }

  private newCore (id: HostId, restored: PersistedCoreState | undefined): AgentCore {
    const opts = { self: id, name: id, addr: `${id}:49737`, config: this.config, seed: this.prng.nextU32(), seeds: this.seeds, ...(this.migration !== undefined ? { migration: this.migration } : {}) }
    return new AgentCore(restored === undefined ? opts : { ...opts, restored })
  }

  core (id: HostId): AgentCore | undefined { return this.crashedSet.has(id) ? undefined : this.cores.get(id) }
  isCrashed (id: HostId): boolean { return this.crashedSet.has(id) }
  get crashed (): ReadonlySet<HostId> { return this.crashedSet }
  get liveIds (): HostId[] { return this.ids.filter(id => !this.crashedSet.has(id)) }
  store (id: HostId): ReadonlyMap<string, unknown> { return this.stores.get(id)! }

  onEvent (l: EventListener): void { this.listeners.push(l) }
  onAfterTick (f: () => void): void { this.afterTick.push(f) }
  /** Called just before a host crashes (its core is still readable). */
  onCrash (f: (id: HostId) => void): void { this.crashHooks.push(f) }

  tick (): void {
    this.now++
    if (this.hv !== undefined) {
      this.hv.tick(this.now)
      for (const p of this.hv.due(this.now)) {
        if (this.crashedSet.has(p.host)) continue
        this.cores.get(p.host)?.step({ type: 'driverResult', command: p.command, result: p.result })
      }
    }
    for (const f of this.network.take(this.now)) {
      if (this.crashedSet.has(f.to)) continue
      this.cores.get(f.to)?.step({ type: 'receive', from: f.from, envelope: f.envelope })
    }
    const sample = this.sampleEvery > 0
    for (let i = 0; i < this.ids.length; i++) {
      const id = this.ids[i]!
      if (this.crashedSet.has(id)) continue
      const core = this.cores.get(id)!
      if (sample && (this.now + i) % this.sampleEvery === 0) core.step({ type: 'hostSample', sample: this.sampleOf(id) })
      if (this.checkDeadlines) this.tickChecked(id, core)
      else core.tick()
    }
    for (const id of this.ids) if (!this.crashedSet.has(id)) this.drain(id)
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
    const store = this.stores.get(id)!
    for (const op of rd.persist) {
      if (op.type === 'put') store.set(op.key, op.value)
      else store.delete(op.key)
    }
    for (const o of rd.send) this.network.send(this.now, id, o.to, o.envelope)
    if (this.hv !== undefined) for (const c of rd.driver) this.hv.apply(id, c)
    if (this.listeners.length > 0) for (const ev of rd.events) for (const l of this.listeners) l(id, ev, this.now)
    core.advance(rd)
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

  /** kill -9: the core disappears with whatever it had not persisted. */
  crash (id: HostId): void {
    if (this.crashedSet.has(id)) return
    for (const f of this.crashHooks) f(id)
    this.crashedSet.add(id)
    this.hv?.dropResults(id)
  }

  /** Start the host again from its store. */
  restart (id: HostId): void {
    const st = this.stores.get(id)!
    const members: Array<[string, unknown]> = []
    const migrations: Array<[string, unknown]> = []
    for (const [k, v] of st) {
      if (k.startsWith(KEY_MEMBER_PREFIX)) members.push([k, v])
      if (k.startsWith(KEY_MIGRATION_PREFIX)) migrations.push([k, v])
    }
    const restored = restoreCoreState(st.get(KEY_INCARNATION), st.get(KEY_REPORT_SEQ_CEILING), members, migrations, st.get(KEY_DRAINING))
    this.restarts++
    this.cores.set(id, this.newCore(id, restored))
    this.crashedSet.delete(id)
  }

  /** Deliver a hand-made frame to a host at the next tick (tests). */
  inject (from: HostId, to: HostId, envelope: Envelope): void { this.network.send(this.now, from, to, envelope) }
}
