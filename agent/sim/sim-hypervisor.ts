/**
 * Simulated hypervisors of a SimCluster, one per host, sharing one world so that a migration
 * moves a VM between them with QEMU's semantics (the ones the migration machine relies on):
 *
 * - migrate: the source's migration becomes 'active' and lasts `copyTicks`; then 'completed':
 *   the source copy is paused (postmigrate) and the target's incoming copy runs.
 * - cancel, or a failure injected with `failRate`: 'cancelled'/'failed'; the source copy runs,
 *   the target's incoming copy exits.
 * - killing the target's incoming copy during the copy fails the source's migration.
 * - post-copy: the target runs at once; the source can no longer cancel.
 * - results come back after `latencyTicks`, or after `hangTicks` with probability `hangRate`.
 * - powerLoss(host): every copy on the host is gone (a pre-copy to it fails, the source runs on;
 *   a post-copy to it leaves the source paused, as QEMU's postcopy-paused).
 * VMs outlive agent crashes (they are processes of their own), as with QEMU.
 *
 * Each copy carries the generation of the VM's state it holds: a target's copy that starts
 * running is one generation newer than its source. Resuming a copy older than the newest that
 * ever ran (stale memory over a disk that moved on) is recorded in `staleResumes`.
 */
import {
  Prng, type DriverCommand, type DriverResult, type HostId, type VmId, type VmPresence,
  type VmSpecWire, type VmSummary
} from '../core/index.js'

export interface SimHypervisorOptions {
  seed: number
  /** Ticks a copy takes. @default 8 */
  copyTicks?: number
  /** Ticks before a command's result is reported. @default 1 */
  latencyTicks?: number
  /** Chance that a migration fails at some tick of its copy. @default 0 */
  failRate?: number
  /** Chance that a command's result is delayed by hangTicks. @default 0 */
  hangRate?: number
  /** @default 30 */
  hangTicks?: number
}

interface SimVm {
  id: VmId
  spec: VmSpecWire
  cpuUtil: number
  state: 'running' | 'paused' | 'incoming'
  /** Generation of the VM's state this copy holds (see the module comment). */
  gen: number
  /** Outgoing migration, on the source copy. */
  out: { to: HostId, status: string, startTick: number, postcopy: boolean, failAt: number } | null
}

export interface PendingResult { host: HostId, dueTick: number, command: DriverCommand, result: DriverResult }

export class SimHypervisor {
  readonly hosts = new Map<HostId, Map<VmId, SimVm>>()
  private readonly prng: Prng
  private readonly copyTicks: number
  private readonly latency: number
  pending: PendingResult[] = []
  now = 0
  /** Newest generation of each VM that ever ran. */
  private readonly newestRan = new Map<VmId, number>()
  /** Resumes of a copy older than the newest that ran: each is a VM run from stale state. */
  readonly staleResumes: string[] = []
  /** VMs whose newest copy was destroyed by a power loss (lost, as physics says). */
  readonly lostToPowerLoss = new Set<VmId>()

  constructor (private readonly o: SimHypervisorOptions) {
    this.prng = new Prng(o.seed)
    this.copyTicks = o.copyTicks ?? 8
    this.latency = o.latencyTicks ?? 1
  }

  vmsOf (host: HostId): Map<VmId, SimVm> {
    let m = this.hosts.get(host)
    if (m === undefined) { m = new Map(); this.hosts.set(host, m) }
    return m
  }

  addVm (host: HostId, id: VmId, memMiB: number, cpuUtil = 0.05): void {
    this.vmsOf(host).set(id, { id, spec: { vcpus: 1, memMiB, extraJson: '{}' }, cpuUtil, state: 'running', out: null, gen: 0 })
    this.newestRan.set(id, 0)
  }

  /** What the host's sampler sees. */
  list (host: HostId): VmSummary[] {
    return [...this.vmsOf(host).values()].map(v => ({
      id: v.id, vcpus: v.spec.vcpus, memMiB: v.spec.memMiB, cpuUtil: v.state === 'running' ? v.cpuUtil : 0,
      memUsedMiB: v.spec.memMiB / 2, state: v.state === 'running' ? 'running' : v.state === 'paused' ? 'paused' : 'migrating'
    }))
  }

  /** Hosts where each VM's guest runs (for the S1 checker). */
  running (): Map<VmId, HostId[]> {
    const out = new Map<VmId, HostId[]>()
    for (const [h, vms] of this.hosts) for (const v of vms.values()) if (v.state === 'running') out.set(v.id, [...(out.get(v.id) ?? []), h])
    return out
  }

  /** Every VM that exists anywhere (running, paused or incoming). */
  allVms (): Set<VmId> {
    const s = new Set<VmId>()
    for (const vms of this.hosts.values()) for (const v of vms.keys()) s.add(v)
    return s
  }

  /** Advance migrations by one tick. */
  tick (now: number): void {
    this.now = now
    for (const [h, vms] of this.hosts) {
      for (const v of vms.values()) {
        const m = v.out
        if (m === null || m.status !== 'active' && m.status !== 'postcopy-active') continue
        const dst = this.vmsOf(m.to).get(v.id)
        if (dst === undefined && m.postcopy) { m.status = 'postcopy-paused'; continue } // the guest's state is split: it stays paused here
        if (dst === undefined || (dst.state !== 'incoming' && !m.postcopy)) { m.status = 'failed'; v.state = 'running'; continue }
        if (!m.postcopy && now >= m.failAt) {
          m.status = 'failed'; v.state = 'running'; this.vmsOf(m.to).delete(v.id); continue
        }
        if (now - m.startTick >= this.copyTicks) {
          m.status = 'completed'
          v.state = 'paused'
          if (dst.state === 'incoming') this.startCopy(dst, v)
        }
      }
      void h
    }
  }

  /** The target's copy starts running: it holds the state one generation after its source's. */
  private startCopy (dst: SimVm, src: SimVm): void {
    dst.state = 'running'
    dst.cpuUtil = src.cpuUtil // the guest's load moves with it
    dst.gen = src.gen + 1
    this.newestRan.set(dst.id, Math.max(this.newestRan.get(dst.id) ?? 0, dst.gen))
    this.lostToPowerLoss.delete(dst.id)
  }

  /** The host loses power: every copy on it is gone, and results for its agent with them. */
  powerLoss (host: HostId): void {
    for (const v of this.vmsOf(host).values()) {
      if (v.state === 'running' && v.gen >= (this.newestRan.get(v.id) ?? 0)) this.lostToPowerLoss.add(v.id)
    }
    this.vmsOf(host).clear()
    this.dropResults(host)
  }

  // -----------------------------------------------------------------------------------------
  // What HA and replica commands do (haDriverExecutor, replicaExecutor in agent/runtime): the
  // simulator carries them out with these, one host's commands in order.

  /**
   * Boot `vm` on `host` from its disk (an HA restart, a replica): a copy that runs here already
   * counts as started; a paused or incoming leftover here is destroyed first. The booted copy
   * holds state newer than any copy that ran before (the disk moved on): resuming an older paused
   * copy elsewhere afterwards is a stale resume.
   */
  boot (host: HostId, vm: VmId, memMiB: number, cpuUtil = 0.05): void {
    const vms = this.vmsOf(host)
    if (vms.get(vm)?.state === 'running') return
    vms.delete(vm)
    const gen = (this.newestRan.get(vm) ?? -1) + 1
    vms.set(vm, { id: vm, spec: { vcpus: 1, memMiB, extraJson: '{}' }, cpuUtil, state: 'running', out: null, gen })
    this.newestRan.set(vm, gen)
    this.lostToPowerLoss.delete(vm)
  }

  /** Continue the paused copy of `vm` on `host`; false when there is none. A stale copy's resume is recorded. */
  resumePaused (host: HostId, vm: VmId): boolean {
    const v = this.vmsOf(host).get(vm)
    if (v === undefined || v.state !== 'paused') return false
    if (v.gen < (this.newestRan.get(vm) ?? 0)) this.staleResumes.push(`HA resume of ${vm} on ${host} (generation ${v.gen}, newer ${this.newestRan.get(vm) ?? 0} ran) at tick ${this.now}`)
    v.state = 'running'
    if (v.out !== null) v.out.status = 'none'
    return true
  }

  /** Pause the running copy of `vm` on `host` (absent or not running: nothing to do). */
  pause (host: HostId, vm: VmId): void {
    const v = this.vmsOf(host).get(vm)
    if (v?.state === 'running') v.state = 'paused'
  }

  /** Kill whatever copy of `vm` is on `host` (a fence, a conflict, a start-up clean-up). */
  destroy (host: HostId, vm: VmId): void { this.vmsOf(host).delete(vm) }

  /** Carry out one command of `host`; its result is queued for later delivery. */
  apply (host: HostId, c: DriverCommand): void {
    const result = this.run(host, c)
    const hang = (this.o.hangRate ?? 0) > 0 && this.prng.next() < (this.o.hangRate ?? 0)
    this.pending.push({ host, dueTick: this.now + this.latency + (hang ? (this.o.hangTicks ?? 30) : 0), command: c, result })
  }

  /** Results due at `now`, removed from the queue. */
  due (now: number): PendingResult[] {
    const out = this.pending.filter(p => p.dueTick <= now)
    this.pending = this.pending.filter(p => p.dueTick > now)
    return out
  }

  /** The agent of `host` crashed: results it had not received are lost. */
  dropResults (host: HostId): void { this.pending = this.pending.filter(p => p.host !== host) }

  private presence (v: SimVm | undefined): VmPresence {
    if (v === undefined) return 'absent'
    return v.state
  }

  private run (host: HostId, c: DriverCommand): DriverResult {
    const vms = this.vmsOf(host)
    const v = vms.get(c.vm)
    const fail = (code: string, message: string): DriverResult => ({ ok: false, kind: c.kind, code, message })
    switch (c.kind) {
      case 'query':
        return { ok: true, kind: 'query', query: { presence: this.presence(v), migration: v?.out?.status ?? 'none', spec: v === undefined ? null : v.spec, dirtyRateBytesPerS: 0, accel: 'kvm' } }
      case 'prepareIncoming':
        if (v !== undefined) return fail('DRIVER_FAILED', 'already present')
        vms.set(c.vm, { id: c.vm, spec: c.spec, cpuUtil: 0.05, state: 'incoming', out: null, gen: -1 })
        return { ok: true, kind: 'prepareIncoming', uri: `sim:${host}` }
      case 'migrate': {
        if (v === undefined || v.state !== 'running') return fail('VM_NOT_FOUND', 'not running here')
        const to = c.uri.slice(4)
        const failRate = this.o.failRate ?? 0
        const failAt = failRate > 0 && this.prng.next() < failRate ? this.now + 1 + this.prng.int(this.copyTicks) : Infinity
        const post = c.params.mode === 'postcopy'
        v.out = { to, status: 'active', startTick: this.now, postcopy: post, failAt }
        if (post) {
          const dst = this.vmsOf(to).get(c.vm)
          if (dst !== undefined && dst.state === 'incoming') { this.startCopy(dst, v); v.state = 'paused'; v.out.status = 'postcopy-active' }
        }
        return { ok: true, kind: 'migrate' }
      }
      case 'progress': {
        if (v?.out == null) return fail('VM_NOT_FOUND', 'no migration')
        const done = Math.min(1, (this.now - v.out.startTick) / this.copyTicks)
        const total = v.spec.memMiB * 1048576
        return { ok: true, kind: 'progress', progress: { status: v.out.status, totalTimeMs: (this.now - v.out.startTick) * 100, transferredBytes: total * done, remainingBytes: total * (1 - done), dirtySyncCount: done >= 1 ? 3 : 1, downtimeMs: v.out.status === 'completed' ? 5 : null } }
      }
      case 'setDowntime': return { ok: true, kind: 'setDowntime' }
      case 'startPostcopy': return { ok: true, kind: 'startPostcopy' }
      case 'mirror': return fail('DRIVER_FAILED', 'the simulated hypervisor has no disks to mirror')
      case 'cancel':
        if (v?.out == null) return fail('VM_NOT_FOUND', 'no migration')
        if (v.out.status === 'active') {
          v.out.status = 'cancelled'
          v.state = 'running'
          this.vmsOf(v.out.to).delete(c.vm)
          return { ok: true, kind: 'cancel' }
        }
        return fail('DRIVER_FAILED', `cannot cancel in ${v.out.status}`)
      case 'stopSource':
        if (v === undefined) return fail('VM_NOT_FOUND', 'gone')
        if (v.state === 'running') return fail('VM_RUNNING', 'refusing to stop a running guest')
        vms.delete(c.vm)
        return { ok: true, kind: 'stopSource' }
      case 'resume':
        if (v === undefined) return fail('VM_NOT_FOUND', 'gone')
        if (v.gen < (this.newestRan.get(v.id) ?? 0)) this.staleResumes.push(`${v.id} on ${host} (generation ${v.gen}, newer ${this.newestRan.get(v.id) ?? 0} ran) at tick ${this.now}`)
        v.state = 'running'
        if (v.out !== null) v.out.status = 'none'
        return { ok: true, kind: 'resume' }
      case 'dropImages': return { ok: true, kind: 'dropImages' }
      case 'killIncoming':
        if (v === undefined) return fail('VM_NOT_FOUND', 'gone')
        if (v.state !== 'incoming') return fail('VM_RUNNING', 'the guest has run here')
        vms.delete(c.vm)
        return { ok: true, kind: 'killIncoming' }
    }
  }
}
