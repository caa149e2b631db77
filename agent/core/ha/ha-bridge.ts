/**
 * HaBridge: runs one HaManager (ha-manager.ts) inside the agent core, as VipBridge runs VIP
 * ownership. It feeds the manager what the core learns (member states on every change, every
 * frame as `heard`, the HA frames, driver results, operator inputs, ticks) and turns the
 * manager's effects into the core's Ready: persist ops into the persist batch (a grant is durable
 * before it is sent), one direct frame per recipient (never relayed), haStart/haStop into
 * Ready.ha (the runtime carries them out after the sends, in order, and reports back with
 * haDriverResult), VM placement hints to the VIP bridge, events into the log.
 *
 * Same rules as the rest of the core: synchronous, no clock, no IO; the manager's own Prng fork.
 */
import type { CoreState } from '../state.js'
import type { HostId, VmId } from '../types.js'
import type { Prng } from '../prng.js'
import type { HaBody } from '../messages.js'
import { memOvercommitMiB, type RuleSet } from '../../../policies/types.js'
import type { HaConfig, HaMemberSpec, HaVmSpec } from './ha-config.js'
import type { HaCommand, HaRestored, HaStatus } from './ha-types.js'
import { HaManager } from './ha-manager.js'

/** What the core needs to run HA: the inventory with host ids, the tunables (ticks), the restored state. */
export interface HaCoreOptions {
  /** Every configured member (self and tie-breakers included): majorities count these. */
  members: HaMemberSpec[]
  vms: HaVmSpec[]
  config: HaConfig
  rules?: RuleSet
  /** What the store held under 'ha/' (absent on a first start). */
  restored?: HaRestored
  /** Protected VMs the driver found running on this host at start-up. */
  running?: VmId[]
  /**
   * The mode a new cluster starts in. false: a member that has never heard of a mode change
   * disarms (the register's version 1); run-time changes (`starling ha arm`) win over it.
   * @default true
   */
  armed?: boolean
}

/** Inputs of the core that concern HA only. */
export type HaCoreInput =
  /** The runtime carried out (or failed) an haStart/haStop. */
  | { type: 'haDriverResult', command: HaCommand, ok: boolean, code?: string }
  /** Operator: disarm (network maintenance) or re-arm the whole cluster. */
  | { type: 'haOperatorMode', armed: boolean }
  /** Operator: put a host (name, id or id prefix) in maintenance, or take it out. */
  | { type: 'haOperatorMaintenance', host: string, on: boolean }
  /** Operator: a host (name, id or id prefix) with no fence is down for good; its HA VMs may restart elsewhere. */
  | { type: 'haOperatorConfirmDown', host: string }
  /** The runtime: this host holds (or lost) a watchdog that resets it. */
  | { type: 'haLocalFence', fenced: boolean }

const HA_BODIES = new Set(['haBeat', 'haClaim', 'haGrant', 'haRefuse', 'haRelease', 'haQuery'])

export function isHaBody (b: { type: string }): b is HaBody { return HA_BODIES.has(b.type) }

/** Receives the manager's VM placement hints (the VIP bridge). */
export interface HaVipHints { onHaHint: (hint: 'vmPlaced' | 'vmMovedAway', vm: VmId) => void }

export class HaBridge {
  private readonly mgr: HaManager
  private memberIds: HostId[]
  /** Removed members: their state is still followed (what they ran is taken over when they are silent). */
  private readonly formerIds = new Set<HostId>()
  private readonly specs: Map<HostId, HaMemberSpec>
  private protectedVms: Set<VmId>
  /** The VMs the driver ran here at the latest sample (null: none yet). */
  private sampled: Set<VmId> | null = null
  private lastMembers = ''

  /**
   * `memOvercommitRatio` (migration.memOvercommitRatio): a restart target admits its guests'
   * reclaimable memory beyond its ha.hosts memory, within the ratio, as a migration target does.
   */
  constructor (private readonly s: CoreState, opts: HaCoreOptions, prng: Prng, private readonly vip: HaVipHints | null, memOvercommitRatio = 1) {
    this.memberIds = opts.members.map(m => m.id)
    this.specs = new Map(opts.members.map(m => [m.id, m]))
    this.protectedVms = new Set(opts.vms.map(v => v.id))
    this.mgr = new HaManager({
      self: s.self,
      members: opts.members,
      vms: opts.vms,
      config: opts.config,
      prng,
      life: s.incarnation,
      ...(memOvercommitRatio > 1
        ? {
            memOverMiB: (host: HostId) => {
              const rep = s.members.byId.get(host)?.report?.memory
              const spec = opts.members.find(m => m.id === host)
              return rep === undefined || spec === undefined ? 0 : memOvercommitMiB(spec.memMiB, rep.reclaimableMiB, memOvercommitRatio)
            }
          }
        : {}),
      ...(opts.rules !== undefined ? { rules: opts.rules } : {}),
      // Where the VMs HA does not protect run (the members' latest reports), for VM-VM rules.
      vmPlacement: () => {
        const out = new Map<VmId, HostId>()
        for (const mb of s.members.byId.values()) {
          if (mb.state !== 'alive' && mb.id !== s.self) continue
          for (const v of mb.report?.vms ?? []) if (!this.protectedVms.has(v.id)) out.set(v.id, mb.id)
        }
        return out
      },
      runningHere: vm => this.sampled === null ? undefined : this.sampled.has(vm),
      // Members' versions from their frames (CoreState.peerCfg; 0 when not heard), ours our own.
      versionOf: host => host === s.self ? s.cfgVersion : s.peerCfg.get(host) ?? 0,
      sameMembers: (a, b) => s.sameMembers(a, b),
      ...(opts.restored !== undefined ? { restored: opts.restored } : {}),
      ...(opts.running !== undefined ? { running: opts.running } : {})
    })
    const mode = opts.restored?.modes[s.self]
    if (opts.armed === false && (mode === undefined || mode.version === 0)) this.mgr.step({ type: 'haOperatorMode', armed: false })
  }

  /**
   * The agreed member list (cluster-config): a member without an ha.hosts entry here is given no
   * capacity limit, as members without one are at start-up (agent/runtime/ha-setup.ts).
   */
  setMembers (ids: readonly HostId[]): void {
    if (ids.length === this.memberIds.length && ids.every(id => this.memberIds.includes(id))) return
    const specs = ids.map(id => this.specs.get(id) ?? { id, cpuMips: 1e9, memMiB: 1e9 })
    for (const m of specs) this.specs.set(m.id, m)
    for (const id of this.memberIds) if (!ids.includes(id)) this.formerIds.add(id)
    for (const id of ids) this.formerIds.delete(id)
    this.memberIds = [...ids]
    this.lastMembers = ''
    this.mgr.setMembers(specs)
  }

  /**
   * The agreed protected VMs (cluster-config, version `version`): HaManager.setVms. Null when
   * applied, else why not (the previous inventory stays).
   */
  setVms (vms: HaVmSpec[], version: number): string | null {
    const why = this.mgr.setVms(vms, version)
    if (why === null) this.protectedVms = new Set(vms.map(v => v.id))
    return why
  }

  /** The VMs this host's driver runs now (each host sample). */
  onSample (vms: ReadonlyArray<{ id: VmId, state: string }>): void { this.sampled = new Set(vms.filter(v => v.state === 'running' || v.state === 'migrating').map(v => v.id)) }

  /** The agreed placement rules (cluster-config), host ids resolved: restarts honour them from now on. */
  setRules (rules: RuleSet): void { this.mgr.setRules(rules) }

  /** An HA frame from `from` (the authenticated sender). */
  onMessage (from: HostId, b: HaBody): void { this.syncMembers(); this.mgr.step({ type: 'haMessage', from, message: b }) }

  /** Any other frame from a member: grantors measure silence over all traffic. */
  heard (from: HostId): void { this.syncMembers(); this.mgr.step({ type: 'heard', from }) }

  onInput (input: HaCoreInput): void {
    if (input.type === 'haOperatorMaintenance') {
      const host = this.resolveHost(input.host)
      if (host === null) { this.s.emit({ kind: 'ha-maintenance', host: this.s.self, text: `ha maintenance of ${input.host}: no such member` }); return }
      this.mgr.step({ type: 'haOperatorMaintenance', host, on: input.on })
      return
    }
    if (input.type === 'haOperatorConfirmDown') {
      const host = this.resolveHost(input.host)
      if (host === null) { this.s.emit({ kind: 'ha-confirm-down', host: this.s.self, text: `ha confirm-down of ${input.host}: no such member` }); return }
      this.mgr.step({ type: 'haOperatorConfirmDown', host, knownLife: this.s.members.get(host)?.incarnation ?? 0 })
      return
    }
    this.mgr.step(input)
  }

  /**
   * The manager sees the membership view of this very tick before it acts (the prober and the
   * suspicion timers of the core's tick run first): a view one tick old could let a claimant act
   * on a majority it no longer sees (S4), as a grant arriving with the frame that made a member
   * suspect could.
   */
  tick (): void { this.syncMembers(); this.mgr.tick() }

  /** Ticks of wall-clock time the runtime skipped after a stall (HaManager, 'elapsed'). */
  elapsed (ticks: number): void { this.mgr.step({ type: 'elapsed', ticks }) }

  /** Is `vm` a protected VM? */
  protects (vm: VmId): boolean { return this.protectedVms.has(vm) }

  /** May the runtime ping the watchdog now? */
  watchdogOk (): boolean { return this.mgr.watchdogOk() }

  /** Live migration of a protected VM: the claim's handover (HaManager; index.ts has the argument). */
  incomingStart (vm: VmId, source: HostId): string | null { return this.mgr.incomingStart(vm, source) }
  handoverStart (vm: VmId, target: HostId): string | null { return this.mgr.handoverStart(vm, target) }
  handoverGranted (vm: VmId): boolean { return this.mgr.handoverGranted(vm) }
  handoverEnd (vm: VmId, outcome: 'committed' | 'aborted'): void { this.mgr.handoverEnd(vm, outcome) }
  staleCopy (vm: VmId): void { this.mgr.staleCopy(vm) }
  /** Told when HA destroys the incoming copy of a migration with a fence (the migration machine). */
  onIncomingFenced: (vm: VmId) => void = () => {}

  status (): HaStatus { return this.mgr.status() }

  /** Brings member states in, then moves the manager's effects into the Ready (persist first). */
  flush (): void {
    this.syncMembers()
    const s = this.s
    for (const e of this.mgr.takeEffects()) {
      switch (e.type) {
        case 'persist': s.pending.persist.push(e.op); break
        case 'send': for (const to of e.to) s.send(to, e.message, [], false); break
        case 'driver': s.pending.ha.push(e.command); break
        case 'vip': this.vip?.onHaHint(e.hint, e.vm); break
        case 'handover': this.onIncomingFenced(e.vm); break
        case 'event': s.emit(e.event); break
      }
    }
  }

  private syncMembers (): void {
    const list = this.s.quorumStatesOf(this.formerIds.size === 0 ? this.memberIds : [...this.memberIds, ...this.formerIds])
    const key = list.map(m => `${m.id}:${m.state}`).join(',')
    if (key === this.lastMembers) return
    this.lastMembers = key
    this.mgr.step({ type: 'members', members: list })
  }

  /** A configured member by id, id prefix (8+ hex) or name. */
  private resolveHost (h: string): HostId | null { return this.s.members.resolve(h, this.memberIds) }

}
