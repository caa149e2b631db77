/**
 * VipBridge: runs VIP ownership (vip-ownership.ts) inside the agent core. It feeds the module
 * what the core learns (VIP frames, member states, VMs placed here or moved away, migration
 * commits, operator moves, ticks) and turns the module's effects into the core's Ready: persist
 * ops into the persist batch (so a grant is durable before it is sent), one direct frame per
 * recipient (no gossip relaying: a receiver rejects a message whose sender is not the claim's
 * host), events into the log, and address effects into Ready.vip, which the runtime applies
 * after the driver commands, one at a time per VIP, in order, reporting back with vipApplied.
 *
 * Same rules as the rest of the core: synchronous, no clock, no IO; the module's own Prng fork.
 */
import type { CoreState } from '../state.js'
import type { HostId, VmId, VmSummary } from '../types.js'
import type { MigrationRecord } from '../migration/migration-state.js'
import type { Prng } from '../prng.js'
import type { VipConfig, VipSpec } from './vip-config.js'
import type { VipBody } from '../messages.js'
import type { VipId } from './vip-messages.js'
import { VipOwnership } from './vip-ownership.js'
import type { VipEffect, VipRestored, VipStatus } from './vip-types.js'

/** What the core needs to run VIPs: the definitions, every configured member id, the tunables. */
export interface VipCoreOptions {
  specs: VipSpec[]
  /** Every configured member's host id, self included: majorities count these. */
  members: HostId[]
  config: VipConfig
  /** What the store held under 'vip/' (restoreVipState). */
  restored?: VipRestored
}

/** An address change for the runtime (defined with the other VIP shapes). */
export type { VipAddressEffect } from './vip-types.js'

/** Inputs of the core that concern VIPs only. */
export type VipCoreInput =
  /** The runtime carried out an address effect (add: at the first ARP sent; announce: at the end of the burst; remove: when done). */
  | { type: 'vipApplied', vip: VipId, op: 'add' | 'remove' | 'announce', ok: boolean, code?: string }
  /** The operator asked to move a group VIP to a host (name or id); forwarded to the owner. */
  | { type: 'operatorVipMove', vip: VipId, to: string }

/** What `starling vips` and the metrics read. */
export interface VipStatusReport {
  self: HostId
  /** The module's ticks now (to turn lastAnnounceTick into a wall time with tickMs). */
  ticks: number
  vips: VipStatus[]
}

export function isVipBody (b: { type: string }): b is VipBody {
  return b.type === 'vipClaim' || b.type === 'vipGrant' || b.type === 'vipRelease' || b.type === 'vipStanding' || b.type === 'vipMoveRequested'
}

export class VipBridge {
  private readonly own: VipOwnership
  private members: HostId[]
  /** VMs seen running here (samples and migration commits). */
  private readonly placed = new Set<VmId>()
  /** Migration records already accounted for (committed). */
  private readonly settled = new Set<string>()
  private lastMembers = ''

  constructor (
    private readonly s: CoreState,
    opts: VipCoreOptions,
    prng: Prng,
    private readonly migrations: () => Iterable<MigrationRecord>
  ) {
    this.members = [...opts.members]
    this.own = new VipOwnership({
      self: s.self,
      members: this.members,
      vips: opts.specs,
      config: opts.config,
      prng,
      ...(opts.restored !== undefined ? { restored: opts.restored } : {})
    })
    // Commits from before a restart were acted on then (or the start-up removal covers them).
    for (const r of migrations()) if (r.state === 'committed') this.settled.add(r.id)
  }

  /** A VIP frame from `from` (the authenticated sender). */
  onMessage (from: HostId, b: VipBody): void {
    if (b.type === 'vipMoveRequested') {
      const v = this.own.status().find(x => x.vip === b.vip)
      if (v === undefined || v.role !== 'owner') {
        this.s.emit({ kind: 'vip-move-rejected', host: from, text: `vip ${b.vip} move forwarded by ${from.slice(0, 8)} ignored: this host is not its owner` })
        return
      }
      this.own.step({ type: 'operatorMove', vip: b.vip, to: b.to })
      return
    }
    this.own.step({ type: 'vipMessage', from, message: b })
  }

  onInput (input: VipCoreInput): void {
    if (input.type === 'vipApplied') {
      this.own.step({ type: 'vipApplied', vip: input.vip, op: input.op, ok: input.ok, ...(input.code !== undefined ? { code: input.code } : {}) })
      return
    }
    this.operatorMove(input.vip, input.to)
  }

  /** The latest sample's VMs: a VM seen running here is placed (boot, HA restart); one gone is moved away. */
  onSample (vms: readonly VmSummary[]): void {
    const here = new Set<VmId>()
    for (const vm of vms) {
      if (vm.state === 'running') {
        here.add(vm.id)
        if (!this.placed.has(vm.id)) { this.placed.add(vm.id); this.own.step({ type: 'vmPlaced', vm: vm.id }) }
      } else if (vm.state === 'migrating' || vm.state === 'paused') {
        here.add(vm.id) // still here until the migration commits or it stops
      }
    }
    for (const vm of [...this.placed]) {
      if (here.has(vm)) continue
      this.placed.delete(vm)
      this.own.step({ type: 'vmMovedAway', vm, to: null })
    }
  }

  /** HA started a protected VM here (vmPlaced) or stopped it (vmMovedAway): the VIPs that follow it follow. */
  onHaHint (hint: 'vmPlaced' | 'vmMovedAway', vm: VmId): void {
    if (hint === 'vmPlaced') {
      if (this.placed.has(vm)) return
      this.placed.add(vm)
      this.own.step({ type: 'vmPlaced', vm })
    } else if (this.placed.delete(vm)) {
      this.own.step({ type: 'vmMovedAway', vm, to: null })
    }
  }

  tick (): void { this.own.tick() }

  leave (): void { this.own.step({ type: 'leave' }) }

  /** Brings member states and migration commits in, then moves the module's effects into the Ready. */
  flush (): void {
    this.syncMembers()
    this.syncMigrations()
    const s = this.s
    for (const e of this.own.takeEffects()) {
      switch (e.type) {
        case 'persist': s.pending.persist.push(e.op); break
        case 'send': for (const to of e.to) s.send(to, e.message); break
        case 'event': s.emit(e.event); break
        default: s.pending.vip.push(e); break
      }
    }
  }

  status (): VipStatusReport {
    return { self: this.s.self, ticks: this.own.ticks(), vips: this.own.status() }
  }

  private operatorMove (vip: VipId, to: string): void {
    const s = this.s
    const target = this.resolveHost(to)
    const v = this.own.status().find(x => x.vip === vip)
    if (v === undefined || target === null) {
      s.emit({ kind: 'vip-move-rejected', host: s.self, text: `vip ${vip} move to ${to}: ${v === undefined ? 'no such VIP' : 'no such member'}` })
      return
    }
    if (v.role === 'owner' || v.owner === null || v.owner === s.self) {
      this.own.step({ type: 'operatorMove', vip, to: target })
      return
    }
    s.send(v.owner, { type: 'vipMoveRequested', vip, to: target })
    s.emit({ kind: 'vip-move-forwarded', host: v.owner, text: `vip ${vip} move to ${to}: forwarded to its owner ${v.owner.slice(0, 8)}` })
  }

  /** The agreed member list (cluster-config). */
  setMembers (ids: readonly HostId[]): void {
    if (ids.length === this.members.length && ids.every(id => this.members.includes(id))) return
    this.members = [...ids]
    this.lastMembers = ''
    this.own.setMembers(ids)
  }

  /** A configured member by id, id prefix (8+ hex) or name. */
  private resolveHost (h: string): HostId | null { return this.s.members.resolve(h, this.members) }

  private syncMembers (): void {
    const list = this.s.quorumStatesOf(this.members)
    const key = list.map(m => `${m.id}:${m.state}`).join(',')
    if (key === this.lastMembers) return
    this.lastMembers = key
    this.own.step({ type: 'members', members: list })
  }

  private syncMigrations (): void {
    for (const r of this.migrations()) {
      if (r.state !== 'committed' || this.settled.has(r.id)) continue
      this.settled.add(r.id)
      if (r.role === 'source') {
        this.placed.delete(r.vm)
        this.own.step({ type: 'vmMovedAway', vm: r.vm, to: r.target })
      } else {
        this.placed.add(r.vm)
        this.own.step({ type: 'vmPlaced', vm: r.vm })
      }
    }
  }
}
