/**
 * The replica protocol of one host, both roles (replica-types.ts). Deterministic: ticks, inputs
 * and effects only.
 *
 * Origin (the host that runs the VM):
 *   start     checks the VM (configured stateless, runs here, not migrating, no replica yet) and
 *             the host (alive member, not us); journals `requested`; sends `request`, again every
 *             resendTicks until answered. No answer within requestTimeoutTicks: it retires (the
 *             host may have started it), so a request never leaves a copy nobody accounts for.
 *   started   -> `running`: the VIP's connections are split to the replica (Ready.split).
 *   refused   -> record dropped.
 *   retire    when the VM no longer runs here, when the balancing says the host can carry the
 *             whole demand again (policies/replication.ts shouldRetire), or by the operator:
 *             the split stops FIRST (new connections stay here), then `retire` is sent until
 *             `retired` comes back.
 *   A host declared dead or gone takes its replica with it: the record is dropped (a host not
 *   known yet, as after a restart, is waited for).
 * Host (the host that runs the replica):
 *   request   admitted against this host's own state exactly as a migration's intent
 *             (reservation.ts admit(): capacity with every live reservation, the hard rules with
 *             the replica counted as its VM, draining); journals `starting` and boots it; the
 *             driver's answer sends `started` or `refused`. A repeated request is answered from
 *             the record.
 *   retire    stops it; `retired` when gone. Also on its own when the origin is declared dead or
 *             gone (the original will run elsewhere, or not at all), and when this host drains.
 *   confirm   every confirmTicks it repeats `started` for a running replica; an origin that holds
 *             no record of it (it gave this host up as dead during a partition and dropped the
 *             record) answers `retire`, so no replica outlives its record after a heal.
 * After a restart each side carries on from its journal: commands in flight are issued again
 * (start and stop are idempotent in the executor), and the origin resends what is unanswered.
 */
import type { CoreState } from '../state.js'
import type { HostId, VmId } from '../types.js'
import type { MigrationMachine } from '../migration/migration-machine.js'
import { admit, vmDemandMips } from '../migration/reservation.js'
import { replicaDemandMips, type ReplicationParams } from '../../../policies/replication.js'
import { replicaId, replicaKey, type ReplicaCommand, type ReplicaMessage, type ReplicaRecord, type SplitEffect } from './replica-types.js'

export interface ReplicaCoreOptions {
  /** VMs that may be replicated (stateless, with a boot definition every host shares). */
  stateless: ReadonlyArray<{ vm: VmId, vcpus: number, memMiB: number }>
  params: ReplicationParams
  /** Journal entries found at start-up (both roles). */
  restored: readonly ReplicaRecord[]
  /** Resend an unanswered request or retire every this many ticks. @default 10 */
  resendTicks?: number
  /** Give up a request unanswered this long (then retire it). @default 300 */
  requestTimeoutTicks?: number
  /** The host repeats `started` for a running replica this often, so an origin that forgot it (it gave the host up as dead during a partition) has it stopped. @default 50 */
  confirmTicks?: number
}

export class ReplicaManager {
  /** Origin records by VM, host records by replica id. */
  readonly out = new Map<VmId, ReplicaRecord>()
  readonly in = new Map<VmId, ReplicaRecord>()
  private readonly stateless: Map<VmId, { vcpus: number, memMiB: number }>
  private readonly resendTicks: number
  private readonly requestTimeoutTicks: number
  private readonly confirmTicks: number
  private readonly lastSent = new Map<string, number>()
  private readonly split = new Map<VmId, string>()
  counts = { started: 0, refused: 0, retired: 0, lost: 0 }

  constructor (private readonly s: CoreState, private readonly m: MigrationMachine, readonly opts: ReplicaCoreOptions) {
    this.stateless = new Map(opts.stateless.map(v => [v.vm, { vcpus: v.vcpus, memMiB: v.memMiB }]))
    this.resendTicks = opts.resendTicks ?? 10
    this.requestTimeoutTicks = opts.requestTimeoutTicks ?? 300
    this.confirmTicks = opts.confirmTicks ?? 50
    for (const r of opts.restored) {
      if (r.role === 'origin') this.out.set(r.vm, { ...r })
      else this.in.set(r.id, { ...r })
    }
    // A host record whose command may not have run: issue it again.
    for (const r of this.in.values()) {
      if (r.state === 'starting') this.command({ kind: 'replicaStart', id: r.id, vm: r.vm })
      else if (r.state === 'retiring') this.command({ kind: 'replicaStop', id: r.id, vm: r.vm })
    }
    m.replicaHooks = {
      // Until the host's sample shows it, a hosted replica is held as a reservation under its VM's id.
      reservations: () => [...this.in.values()].filter(r => !this.m.localVms.some(v => v.id === r.id)).map(r => ({ vm: r.vm, memMiB: r.memMiB, cpuDemandMips: r.cpuDemandMips })),
      alias: id => this.in.get(id)?.vm ?? id
    }
    this.flushSplit()
  }

  replicable (vm: VmId): boolean { return this.stateless.has(vm) }

  /** A replica hosted here (never migrated or drained like a VM: it is stopped instead). */
  hosted (id: VmId): boolean { return this.in.has(id) }

  /** VM -> hosts of its copies (original first), for the planner's `copies`. */
  copies (): Map<VmId, HostId[]> {
    const c = new Map<VmId, HostId[]>()
    for (const r of this.out.values()) c.set(r.vm, [this.s.self, r.host])
    return c
  }

  records (): ReplicaRecord[] {
    return [...this.out.values(), ...this.in.values()].map(r => ({ ...r }))
  }

  /** Origin: start a replica of `vm` on `to`. Returns the record, or why not. */
  start (vm: VmId, to: HostId, reason: string): ReplicaRecord | { error: string } {
    const s = this.s
    const def = this.stateless.get(vm)
    if (def === undefined) return { error: `VM ${vm} is not configured for replication (replication.vms)` }
    const v = this.m.localVms.find(x => x.id === vm)
    if (v === undefined) return { error: `VM ${vm} does not run here` }
    if (this.m.isMoving(vm)) return { error: `VM ${vm} is migrating` }
    if (this.out.has(vm)) return { error: `VM ${vm} has a replica already (on ${this.out.get(vm)!.host})` }
    if (to === s.self) return { error: 'a replica cannot run beside its VM' }
    const mb = s.members.get(to)
    if (mb === undefined || mb.state !== 'alive') return { error: `host ${to} is not an alive member` }
    const cap = this.m.capacity
    const mipsPerCore = cap?.cpuMipsPerCore ?? 0
    const cpuMips = v.vcpus * mipsPerCore
    // What the VM asks of a host, at most its vCPUs' worth: a QEMU process also burns CPU in its
    // emulator and I/O threads (much of it under TCG), which a copy elsewhere does not inherit.
    const demand = cap === null ? 0 : vmDemandMips(v, cap)
    const r: ReplicaRecord = {
      id: replicaId(vm), vm, role: 'origin', origin: s.self, host: to, state: 'requested',
      cpuDemandMips: replicaDemandMips({ id: vm, host: s.self, cpuMips, cpuDemandMips: demand, memMiB: v.memMiB, history: [], migrating: false }, this.opts.params),
      memMiB: def.memMiB, vcpus: def.vcpus, createdTick: s.now, updatedTick: s.now, reason
    }
    this.out.set(vm, r)
    this.save(r)
    this.sendReq(r)
    s.emit({ kind: 'replica', host: to, text: `replica ${r.id}: requested on ${this.name(to)} (${reason})` })
    return { ...r }
  }

  /** Origin: retire the replica of `vm` (split off first). */
  retire (vm: VmId, reason: string): boolean {
    const r = this.out.get(vm)
    if (r === undefined) return false
    if (r.state === 'retiring') return true
    this.set(r, 'retiring', reason)
    this.flushSplit()
    this.sendOp(r.host, r, 'retire', reason)
    this.s.emit({ kind: 'replica', host: r.host, text: `replica ${r.id}: retiring (${reason})` })
    return true
  }

  onMessage (from: HostId, b: ReplicaMessage): void {
    if (b.op === 'request' || b.op === 'retire') this.onHostSide(from, b)
    else this.onOriginSide(from, b)
  }

  private onOriginSide (from: HostId, b: ReplicaMessage): void {
    const r = this.out.get(b.vm)
    if (r === undefined || r.host !== from || r.id !== b.id) {
      // Unknown to us: whatever runs there is not accounted for here, so have it stopped.
      if (b.op === 'started') this.sendOp(from, { id: b.id, vm: b.vm }, 'retire', 'no such replica at its origin')
      return
    }
    if (b.op === 'started') {
      if (r.state !== 'requested') return
      this.counts.started++
      this.set(r, 'running', r.reason)
      this.s.emit({ kind: 'replica', host: from, text: `replica ${r.id}: running on ${this.name(from)}; new connections to ${r.vm}'s VIPs are split` })
      this.flushSplit()
    } else if (b.op === 'refused') {
      if (r.state !== 'requested') return
      this.counts.refused++
      this.drop(r, `refused: ${b.reason}`)
    } else if (b.op === 'retired') {
      this.counts.retired++
      this.drop(r, 'retired')
    }
  }

  private onHostSide (from: HostId, b: ReplicaMessage): void {
    const s = this.s
    const known = this.in.get(b.id)
    if (b.op === 'retire') {
      if (known === undefined) { this.sendOp(from, b, 'retired', ''); return }
      if (known.origin !== from) return
      if (known.state !== 'retiring') {
        this.set(known, 'retiring', b.reason)
        this.command({ kind: 'replicaStop', id: known.id, vm: known.vm })
      }
      return
    }
    if (known !== undefined) {
      if (known.origin !== from) { this.sendOp(from, b, 'refused', `${b.id} already runs here for another origin`); return }
      if (known.state === 'running') this.sendOp(from, b, 'started', '')
      else if (known.state === 'retiring') this.sendOp(from, b, 'refused', 'being stopped here')
      return
    }
    if (!this.stateless.has(b.vm) || b.id !== replicaId(b.vm)) { this.sendOp(from, b, 'refused', `VM ${b.vm} is not configured for replication here`); return }
    const a = this.m.admissionInput()
    const verdict = admit({ ...a, incomingCount: 0, clusterInFlight: 0 }, { vm: b.vm, memMiB: b.memMiB, cpuDemandMips: b.cpuDemandMips, vcpus: b.vcpus })
    if (!verdict.ok) {
      this.sendOp(from, b, 'refused', verdict.reason)
      s.emit({ kind: 'replica', host: from, text: `replica ${b.id}: refused (${verdict.reason})` })
      return
    }
    const r: ReplicaRecord = {
      id: b.id, vm: b.vm, role: 'host', origin: from, host: s.self, state: 'starting',
      cpuDemandMips: b.cpuDemandMips, memMiB: b.memMiB, vcpus: b.vcpus, createdTick: s.now, updatedTick: s.now, reason: 'requested'
    }
    this.in.set(r.id, r)
    this.save(r)
    this.command({ kind: 'replicaStart', id: r.id, vm: r.vm })
    s.emit({ kind: 'replica', host: from, text: `replica ${r.id}: admitted for ${this.name(from)}, starting` })
  }

  onDriverResult (c: ReplicaCommand, ok: boolean, code: string | undefined): void {
    const r = this.in.get(c.id)
    if (r === undefined) return
    if (c.kind === 'replicaStart') {
      if (r.state !== 'starting') return
      if (ok) {
        this.set(r, 'running', r.reason)
        this.sendOp(r.origin, r, 'started', '')
        this.s.emit({ kind: 'replica', host: r.origin, text: `replica ${r.id}: running here` })
      } else {
        this.in.delete(r.id)
        this.s.pending.persist.push({ type: 'del', key: replicaKey(r) })
        this.sendOp(r.origin, r, 'refused', `start failed: ${code ?? 'unknown'}`)
        this.s.emit({ kind: 'replica', host: r.origin, text: `replica ${r.id}: start failed (${code ?? 'unknown'})` })
      }
    } else {
      if (r.state !== 'retiring') return
      if (!ok) {
        // Not known to be gone: keep the record and try again later (tick()).
        this.s.emit({ kind: 'replica', host: r.origin, text: `replica ${r.id}: stop failed (${code ?? 'unknown'}), will retry` })
        this.lastSent.set(`stop:${r.id}`, this.s.now)
        return
      }
      this.in.delete(r.id)
      this.s.pending.persist.push({ type: 'del', key: replicaKey(r) })
      if (this.s.members.get(r.origin)?.state === 'alive') this.sendOp(r.origin, r, 'retired', '')
      this.s.emit({ kind: 'replica', host: r.origin, text: `replica ${r.id}: stopped (${r.reason})` })
    }
  }

  /** Every tick: resends, timeouts, dead peers, VMs gone, drains. */
  tick (): void {
    const s = this.s
    for (const r of [...this.out.values()]) {
      const st = s.members.get(r.host)?.state
      if (st === 'dead' || st === 'left') {
        this.counts.lost++
        this.drop(r, `its host ${this.name(r.host)} is ${st}`)
        continue
      }
      // Not known yet (a restarted agent whose member list is still filling in): wait for it.
      if (st === undefined) continue
      if (r.state !== 'retiring' && !this.m.localVms.some(v => v.id === r.vm) && this.m.capacity !== null) {
        this.retire(r.vm, 'the VM no longer runs here')
        continue
      }
      if (r.state === 'requested' && s.now - r.createdTick >= this.requestTimeoutTicks) { this.retire(r.vm, 'no answer to the request'); continue }
      const key = `out:${r.vm}`
      if (r.state !== 'running' && s.now - (this.lastSent.get(key) ?? -Infinity) >= this.resendTicks) {
        if (r.state === 'requested') this.sendReq(r)
        else this.sendOp(r.host, r, 'retire', r.reason)
      }
    }
    for (const r of [...this.in.values()]) {
      if (r.state === 'retiring') {
        const key = `stop:${r.id}`
        const last = this.lastSent.get(key)
        if (last !== undefined && s.now - last >= this.resendTicks) { this.lastSent.delete(key); this.command({ kind: 'replicaStop', id: r.id, vm: r.vm }) }
        continue
      }
      if (r.state !== 'running') continue
      const st = s.members.get(r.origin)?.state
      if (st === 'dead' || st === 'left') this.stopHosted(r, `its origin ${this.name(r.origin)} is ${st}`)
      else if (this.m.draining) this.stopHosted(r, 'this host is draining')
      else if (st === 'alive' && s.now - (this.lastSent.get(`in:${r.id}`) ?? r.updatedTick) >= this.confirmTicks) {
        this.lastSent.set(`in:${r.id}`, s.now)
        this.sendOp(r.origin, r, 'started', '')
      }
    }
  }

  /** The earliest tick at which tick() may act (now + 1 while anything is unsettled). */
  nextDue (): number {
    for (const r of this.out.values()) if (r.state !== 'running') return this.s.now + 1
    for (const r of this.in.values()) if (r.state !== 'running') return this.s.now + 1
    // Running records watch member states and the VM's presence (which change only on inputs),
    // and the host confirms each running replica every confirmTicks.
    let due = this.out.size > 0 ? this.s.now + this.resendTicks : Infinity
    for (const r of this.in.values()) due = Math.min(due, (this.lastSent.get(`in:${r.id}`) ?? r.updatedTick) + this.confirmTicks)
    return Math.max(due, this.s.now + 1)
  }

  private stopHosted (r: ReplicaRecord, why: string): void {
    this.set(r, 'retiring', why)
    this.command({ kind: 'replicaStop', id: r.id, vm: r.vm })
    this.s.emit({ kind: 'replica', host: r.origin, text: `replica ${r.id}: stopping (${why})` })
  }

  private set (r: ReplicaRecord, state: ReplicaRecord['state'], reason: string): void {
    r.state = state
    r.reason = reason
    r.updatedTick = this.s.now
    this.save(r)
  }

  private drop (r: ReplicaRecord, why: string): void {
    this.out.delete(r.vm)
    this.lastSent.delete(`out:${r.vm}`)
    this.s.pending.persist.push({ type: 'del', key: replicaKey(r) })
    this.s.emit({ kind: 'replica', host: r.host, text: `replica ${r.id}: ended (${why})` })
    this.flushSplit()
  }

  private save (r: ReplicaRecord): void { this.s.persist(replicaKey(r), { ...r }) }

  private command (c: ReplicaCommand): void { this.s.pending.replica.push(c) }

  private sendReq (r: ReplicaRecord): void {
    this.lastSent.set(`out:${r.vm}`, this.s.now)
    this.s.send(r.host, { type: 'replica', op: 'request', id: r.id, vm: r.vm, cpuDemandMips: r.cpuDemandMips, memMiB: r.memMiB, vcpus: r.vcpus, reason: r.reason }, [], false)
  }

  private sendOp (to: HostId, r: { id: VmId, vm: VmId }, op: ReplicaMessage['op'], reason: string): void {
    if (op === 'retire') this.lastSent.set(`out:${r.vm}`, this.s.now)
    this.s.send(to, { type: 'replica', op, id: r.id, vm: r.vm, cpuDemandMips: 0, memMiB: 0, vcpus: 0, reason }, [], false)
  }

  /** Emit Ready.split for every VM whose set of running replica hosts changed. */
  private flushSplit (): void {
    const want = new Map<VmId, HostId[]>()
    for (const r of this.out.values()) if (r.state === 'running') want.set(r.vm, [r.host])
    const effects: SplitEffect[] = []
    for (const [vm, hosts] of want) {
      const k = hosts.join(',')
      if (this.split.get(vm) !== k) { this.split.set(vm, k); effects.push({ vm, hosts }) }
    }
    for (const vm of [...this.split.keys()]) {
      if (!want.has(vm)) { this.split.delete(vm); effects.push({ vm, hosts: [] }) }
    }
    this.s.pending.split.push(...effects)
  }

  private name (id: HostId): string { return this.s.members.get(id)?.name ?? id.slice(0, 8) }
}
