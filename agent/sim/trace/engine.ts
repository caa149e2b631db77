/**
 * The physical side of the trace simulator: hosts, VMs, a time-shared CPU scheduler with
 * over-subscription, live migrations, energy and SLA accounting. It follows the behaviour of
 * CloudSim 3.0.3's power package as described in data/planetlab (README.md and
 * REFERENCE.md), re-implemented from that description; the quirks that change the numbers are
 * kept on purpose and named where they happen:
 *
 * - Q1 a VM whose requested MIPS is exactly 0 at an update is removed for good (`dropIdleVms`);
 * - Q2 a migrating VM sits in the target's VM list at 10 % of its demand (the target's
 *   "requested" counts it fully, so the target shows an SLA shortfall while it copies);
 * - Q3 a source remembers a VM that left as "migrating out"; if the VM migrates back while
 *   remembered, the target gives it 90 % instead of 10 %;
 * - Q4 energy is integrated between every pair of events (steps and migration ends) as a
 *   trapezoid, and a host whose utilisation was 0 at the start of a segment counts 0 W;
 * - Q5 when over-subscribed, every allocation is scaled by one factor and rounded down;
 * - Q6 RAM is checked only when a VM is first created (initial placement): the centralised
 *   CloudSim-faithful mode migrates without a RAM check, so a host can end up holding more VM
 *   RAM than it has. `ramOverHostSteps` counts it; the decentralised agents never do it.
 *
 * Q2 makes CloudSim's SLATAH count every migration target as violating for the whole copy, so
 * `Metrics` carries that SLATAH (fidelity) and the paper's definition (`slatahPaper`) side by
 * side, plus the service delivered (total shortfall, VM-time short by more than 10 %).
 *
 * Who decides migrations is pluggable (`Controller`): the CloudSim-faithful centralised
 * optimiser (cloudsim.ts) or the decentralised agents (decentral.ts).
 */
import { migrationTimeSec, specPower, type SimModel } from './model.js'
import type { TraceDay } from './traces.js'

/**
 * CPU scheduler of one host (time-shared, over-subscribable, one PE per VM). Entries are kept
 * in small parallel arrays: a host runs a handful of VMs.
 */
export class CpuScheduler {
  private ids: number[] = []
  private reqs: number[] = []
  private allocs: number[] = []
  avail: number
  readonly migIn = new Set<number>()
  readonly migOut = new Set<number>()
  /** Sum of allocations (MIPS). */
  allocSum = 0
  /**
   * `srcShare`: share of its demand a VM gets on the source while it migrates out;
   * `tgtShare`: share of its demand the target reserves while the VM copies in
   * (model.migrationSourceShare / migrationTargetShare; CloudSim: 0.9 and 0.1).
   */
  constructor (readonly totalMips: number, readonly peMips: number, readonly srcShare = 0.9, readonly tgtShare = 0.1) { this.avail = totalMips }

  /** Allocate for a VM (knowing whether it is migrating): the entry point hosts use. */
  allocVm (vm: number, requested: number, inMigration: boolean): void {
    if (inMigration) {
      if (!this.migIn.has(vm) && !this.migOut.has(vm)) this.migOut.add(vm)
    } else if (this.migOut.size > 0) {
      this.migOut.delete(vm)
    }
    this.allocRaw(vm, requested)
  }

  private factorIn (vm: number): boolean { return this.migIn.size > 0 && this.migIn.has(vm) }
  private factorOut (vm: number): boolean { return this.migOut.size > 0 && this.migOut.has(vm) }

  private allocRaw (vm: number, requested: number): void {
    const capped = requested > this.peMips ? this.peMips : requested
    let k = this.ids.indexOf(vm)
    if (k < 0) { k = this.ids.length; this.ids.push(vm); this.reqs.push(requested); this.allocs.push(0) } else this.reqs[k] = requested
    let need = capped
    const isIn = this.factorIn(vm)
    if (isIn) need *= this.tgtShare
    if (this.avail >= need) {
      let a = capped
      if (this.factorOut(vm)) a *= this.srcShare
      else if (isIn) a *= this.tgtShare
      this.allocSum += a - (this.allocs[k] as number)
      this.allocs[k] = a
      this.avail -= need
    } else {
      this.redistribute()
    }
  }

  private redistribute (): void {
    let total = 0
    const n = this.ids.length
    for (let i = 0; i < n; i++) {
      const r = this.reqs[i] as number
      let c = r > this.peMips ? this.peMips : r
      if (this.factorIn(this.ids[i] as number)) c *= this.tgtShare
      total += c
    }
    const f = this.totalMips / total
    let sum = 0
    for (let i = 0; i < n; i++) {
      const vm = this.ids[i] as number
      const r = this.reqs[i] as number
      let m = r > this.peMips ? this.peMips : r
      if (this.factorOut(vm)) { m *= f; m *= this.srcShare } else if (this.factorIn(vm)) { m *= this.tgtShare; m *= f } else m *= f
      const a = Math.floor(m)
      this.allocs[i] = a
      sum += a
    }
    this.allocSum = sum
    this.avail = 0
  }

  dealloc (vm: number): void {
    const k = this.ids.indexOf(vm)
    const ids = this.ids; const reqs = this.reqs
    if (k >= 0) { ids.splice(k, 1); reqs.splice(k, 1) }
    this.deallocAll()
    for (let i = 0; i < ids.length; i++) this.allocRaw(ids[i] as number, reqs[i] as number)
  }

  /** Recompute every allocation from the requests (what a create-then-destroy leaves behind). */
  rebuild (): void {
    const ids = this.ids; const reqs = this.reqs
    this.deallocAll()
    for (let i = 0; i < ids.length; i++) this.allocRaw(ids[i] as number, reqs[i] as number)
  }

  deallocAll (): void {
    this.ids = []; this.reqs = []; this.allocs = []; this.avail = this.totalMips; this.allocSum = 0
  }

  allocated (vm: number): number {
    const k = this.ids.indexOf(vm)
    return k < 0 ? 0 : this.allocs[k] as number
  }
}

export interface SimVm {
  id: number
  name: string
  type: number
  mips: number
  ram: number
  bw: number
  util: Float64Array
  /** Utilisation history, newest first. */
  hist: number[]
  lastHistT: number
  inMigration: boolean
  /** Host that owns it (CloudSim's VM table / getHost); -1 when gone. */
  host: number
  alive: boolean
  beingInstantiated: boolean
  // SLA accounting: last state entry
  eT: number; eAlloc: number; eReq: number; eMig: boolean
  lastMovedT: number
  reqT: number
  reqV: number
}

export interface SimHost {
  id: number
  type: number
  totalMips: number
  peMips: number
  bw: number
  ram: number
  power: readonly number[]
  sched: CpuScheduler
  vms: number[]
  migIn: number[]
  utilMips: number
  prevUtilMips: number
  ramUsed: number
  bwUsed: number
  /** Bumped whenever the VM list or the VMs' histories change (lets callers cache). */
  ver: number
  // SLATAH accounting: last state entry (eDemand: demand as the paper's SLATAH counts it)
  eT: number; eAlloc: number; eReq: number; eActive: boolean; eDemand: number
}

export interface StepSample {
  t: number
  activeHosts: number
  energyKWh: number
  migrations: number
  /** Cumulative SLATAH, CloudSim's definition. */
  slaShortfall: number
  /** Cumulative SLATAH, the paper's definition (see Metrics.slatahPaper). */
  slaPaper: number
  /** Hosts whose VMs' RAM (incl. copies migrating in) exceeds the host's RAM at this step. */
  ramOverHosts: number
  /** Idle power of the hosts active at this step (the sum of their power at 0 % CPU), W. */
  idleW: number
}

export interface Metrics {
  energyKWh: number
  migrations: number
  /**
   * SLATAH as CloudSim 3.0.3 computes it: share of active-host time with allocated MIPS <
   * "requested" MIPS, where a VM copying in counts in the target's requested MIPS in full but
   * gets only the target share (10 %) allocated, so every migration target counts as violating
   * for the whole copy (kept: the reference numbers need it).
   */
  slatah: number
  pdm: number
  /** CloudSim's SLAV = slatah x pdm. */
  slav: number
  /** energyKWh x slav. */
  esv: number
  /**
   * SLATAH as the paper defines it ("time during which active hosts experienced 100 % CPU
   * utilisation"): share of active-host time (same active hosts and segments as `slatah`)
   * during which the host's CPU demand reaches its capacity, demand being the sum over the
   * VMs it runs (including VMs migrating out, which still run there) of min(requested, core
   * MIPS), plus migrationTargetShare x min(requested, core MIPS) for each VM copying in (the
   * CPU the copy really reserves, not the full request).
   */
  slatahPaper: number
  /** slatahPaper x pdm. */
  slavPaper: number
  /** energyKWh x slavPaper. */
  esvPaper: number
  /** Total shortfall: unserved MIPS / requested MIPS over all VMs and time (CloudSim's "overall SLA violation"). */
  overallSla: number
  /** Share of VM-time (VMs requesting > 0 MIPS) during which a VM got less than 90 % of its request. */
  vmTimeShortfallOver10: number
  /** Host-steps at which a host's VMs (incl. copies in) need more RAM than the host has. */
  ramOverHostSteps: number
  /** Largest RAM use / host RAM seen at any step. */
  maxRamFraction: number
  vmsDropped: number
  powerClamps: number
  /** Decentralised mode only: admitted moves that broke a target's RAM or CPU admission limit (must be 0). */
  admissionViolations?: number
}

/** What decides migrations at each step. Returns (vm, target host) pairs in order. */
export type Controller = (sim: TraceSim, t: number) => Array<[number, number]>

export class TraceSim {
  readonly hosts: SimHost[] = []
  readonly vms: SimVm[] = []
  now = 0
  lastProcess = 0
  energyWs = 0
  migrations = 0
  powerClamps = 0
  vmsDropped = 0
  private events: Array<{ t: number, vm: number, target: number, fn?: () => void }> = []
  // SLA accumulators
  private slaTotalTime = 0
  private slaViolTime = 0
  private vmAlloc = 0
  private vmReq = 0
  private vmUnderMig = 0
  private slaPaperViolTime = 0
  private vmTime = 0
  private vmTimeBad = 0
  private ramOverHostSteps = 0
  private maxRamFraction = 0
  readonly timeline: StepSample[] = []
  private migrationsThisStep = 0

  constructor (readonly model: SimModel, readonly trace: TraceDay) {
    for (let i = 0; i < model.hosts; i++) {
      const ty = model.hostTypes[i % model.hostTypes.length]
      if (ty === undefined) throw new Error('model has no host types')
      const total = ty.pes * ty.peMips
      this.hosts.push({
        id: i, type: i % model.hostTypes.length, totalMips: total, peMips: ty.peMips, bw: ty.bw, ram: ty.ramMiB, power: ty.powerW,
        sched: new CpuScheduler(total, ty.peMips, model.migrationSourceShare, model.migrationTargetShare), vms: [], migIn: [], utilMips: 0, prevUtilMips: 0, ramUsed: 0, bwUsed: 0, ver: 0,
        eT: -1, eAlloc: 0, eReq: 0, eActive: true, eDemand: 0
      })
    }
    const n = trace.util.length
    const block = Math.ceil(n / model.vmTypes.length)
    for (let i = 0; i < n; i++) {
      const ty = Math.floor(i / block)
      const vt = model.vmTypes[ty]
      if (vt === undefined) throw new Error('bad VM type index')
      this.vms.push({
        id: i, name: trace.names[i] ?? String(i), type: ty, mips: vt.mips, ram: vt.ramMiB, bw: vt.bw, util: trace.util[i] as Float64Array,
        hist: [], lastHistT: 0, inMigration: false, host: -1, alive: true, beingInstantiated: true,
        eT: -1, eAlloc: 0, eReq: 0, eMig: false, lastMovedT: -Infinity, reqT: NaN, reqV: 0
      })
    }
  }

  /** Trace utilisation at time t, interpolated linearly between samples. */
  utilAt (vm: SimVm, t: number): number {
    const iv = this.model.intervalSec
    if (t % iv === 0) return vm.util[Math.trunc(t / iv)] as number
    const t1 = Math.floor(t / iv)
    const t2 = Math.ceil(t / iv)
    const u1 = vm.util[t1] ?? (vm.util[vm.util.length - 1] as number)
    const u2 = vm.util[t2] ?? (vm.util[vm.util.length - 1] as number)
    const delta = (u2 - u1) / ((t2 - t1) * iv)
    return u1 + delta * (t - t1 * iv)
  }

  /** Requested MIPS of a VM now (nominal while being created). */
  requested (vm: SimVm): number {
    if (vm.beingInstantiated) return vm.mips
    // before the workloads are submitted (initial placement) created VMs ask for nothing
    if (!this.submitted) return 0
    if (vm.reqT !== this.now) { vm.reqT = this.now; vm.reqV = this.utilAt(vm, this.now) * vm.mips }
    return vm.reqV
  }

  /** False during initial placement, before the traces start driving the VMs. */
  submitted = false

  migrationTime (vm: SimVm, target: SimHost): number {
    return migrationTimeSec(vm.ram, target.bw, this.model.migrationLinkShare)
  }

  // ---- host operations (CloudSim Host semantics) ----

  vmCreate (h: SimHost, vm: SimVm): void {
    h.sched.allocVm(vm.id, this.requested(vm), vm.inMigration)
    h.vms.push(vm.id)
    h.ver++
    vm.host = h.id
  }

  vmDestroy (h: SimHost, vm: SimVm): void {
    h.sched.dealloc(vm.id)
    const i = h.vms.indexOf(vm.id)
    if (i >= 0) h.vms.splice(i, 1)
    h.ver++
    vm.host = -1
  }

  /** Recompute a host's allocations and utilisation at the current time (and record state). */
  updateHost (h: SimHost, t: number, stepTime: boolean): void {
    h.ver++
    if (stepTime) {
      for (const id of h.vms) {
        const vm = this.vms[id] as SimVm
        if (t > vm.lastHistT) {
          const u = this.utilAt(vm, t)
          vm.hist.unshift(u)
          if (vm.hist.length > this.model.historyLength) vm.hist.length = this.model.historyLength
          vm.lastHistT = t
        }
      }
    }
    h.prevUtilMips = h.utilMips
    let util = 0
    let reqTot = 0
    let demand = 0
    const tgtShare = this.model.migrationTargetShare
    h.sched.deallocAll()
    for (const id of h.vms) {
      const vm = this.vms[id] as SimVm
      h.sched.allocVm(id, this.requested(vm), vm.inMigration)
    }
    for (const id of h.vms) {
      const vm = this.vms[id] as SimVm
      const r = this.requested(vm)
      let a = h.sched.allocated(id)
      const capped = r > h.peMips ? h.peMips : r
      if (!h.migIn.includes(id)) {
        this.vmEntry(vm, t, a, r, vm.inMigration)
        if (vm.inMigration) a /= this.model.migrationSourceShare
        demand += capped
      } else {
        demand += capped * tgtShare
      }
      util += a
      reqTot += r
    }
    h.utilMips = util
    this.hostEntry(h, t, util, reqTot, util > 0, demand)
  }

  private vmEntry (vm: SimVm, t: number, alloc: number, req: number, mig: boolean): void {
    if (vm.eT >= 0 && vm.eT !== t) {
      const dt = t - vm.eT
      this.vmAlloc += vm.eAlloc * dt
      this.vmReq += vm.eReq * dt
      if (vm.eAlloc < vm.eReq && vm.eMig) this.vmUnderMig += (vm.eReq - vm.eAlloc) * dt
      if (vm.eReq > 0) {
        this.vmTime += dt
        if (vm.eReq - vm.eAlloc > 0.1 * vm.eReq + 1e-9) this.vmTimeBad += dt
      }
    }
    vm.eT = t; vm.eAlloc = alloc; vm.eReq = req; vm.eMig = mig
  }

  private hostEntry (h: SimHost, t: number, alloc: number, req: number, active: boolean, demand: number): void {
    if (h.eT >= 0 && h.eT !== t && h.eActive) {
      const dt = t - h.eT
      this.slaTotalTime += dt
      if (h.eAlloc < h.eReq) this.slaViolTime += dt
      if (h.eDemand >= h.totalMips - 1e-9) this.slaPaperViolTime += dt
    }
    h.eT = t; h.eAlloc = alloc; h.eReq = req; h.eActive = active; h.eDemand = demand
  }

  hostUtil (h: SimHost): number {
    const u = h.utilMips / h.totalMips
    return u > 1 && u < 1.01 ? 1 : u
  }

  private hostPrevUtil (h: SimHost): number {
    const u = h.prevUtilMips / h.totalMips
    return u > 1 && u < 1.01 ? 1 : u
  }

  power (h: SimHost, u: number): number {
    if (u > 1) { this.powerClamps++; u = 1 }
    if (u < 0) u = 0
    return specPower(h.power, u)
  }

  /** Full data-centre update at time t: hosts, energy since the last update, idle-VM removal. */
  fullUpdate (t: number): void {
    this.now = t
    const stepTime = Math.abs(((t - this.model.phaseSec) % this.model.intervalSec)) === 0
    for (const h of this.hosts) this.updateHost(h, t, stepTime)
    const dt = t - this.lastProcess
    if (dt > 0) {
      let e = 0
      for (const h of this.hosts) {
        const pu = this.hostPrevUtil(h)
        if (pu === 0) continue
        const a = this.power(h, pu)
        const b = this.power(h, this.hostUtil(h))
        e += (a + (b - a) / 2) * dt
      }
      this.energyWs += e
    }
    if (this.model.dropIdleVms) {
      for (const h of this.hosts) {
        const done: number[] = []
        for (const id of h.vms) {
          const vm = this.vms[id] as SimVm
          if (!vm.inMigration && this.requested(vm) === 0) done.push(id)
        }
        for (const id of done) {
          const vm = this.vms[id] as SimVm
          const owner = this.hosts[vm.host]
          if (owner !== undefined) this.vmDestroy(owner, vm)
          vm.alive = false
          this.vmsDropped++
        }
      }
    }
    this.lastProcess = t
  }

  /** Start a migration now (the target reserves its share at once). */
  startMigration (vmId: number, targetId: number): void {
    const vm = this.vms[vmId] as SimVm
    const target = this.hosts[targetId] as SimHost
    const t = this.now
    vm.inMigration = true
    if (!target.migIn.includes(vmId)) {
      target.sched.migIn.add(vmId)
      target.sched.allocVm(vmId, this.requested(vm), true)
      target.migIn.push(vmId)
      target.vms.push(vmId)
      target.ver++
      this.updateHost(target, t, false)
      const src = this.hosts[vm.host]
      if (src !== undefined) this.updateHost(src, t, false)
    }
    this.migrations++
    this.migrationsThisStep++
    vm.lastMovedT = t
    this.events.push({ t: t + this.migrationTime(vm, target), vm: vmId, target: targetId })
  }

  /** Run `fn` at time `t` (> now), between steps, with the hosts updated before and after (as a migration end). */
  schedule (t: number, fn: () => void): void {
    this.events.push({ t, vm: -1, target: -1, fn })
  }

  /**
   * Called after a migration ended (the VM runs on its target), between steps: a controller that
   * stages copies (the decentralised mode's whole evacuations) starts the next ones from here.
   */
  onMigrationEnd: ((vm: number, target: number) => void) | null = null

  private finishMigration (vmId: number, targetId: number): void {
    const vm = this.vms[vmId] as SimVm
    const target = this.hosts[targetId] as SimHost
    const src = this.hosts[vm.host]
    if (src !== undefined) this.vmDestroy(src, vm)
    // remove the incoming copy from the target, then create it there for real
    target.sched.dealloc(vmId)
    target.migIn.splice(target.migIn.indexOf(vmId), 1)
    const i = target.vms.indexOf(vmId)
    if (i >= 0) target.vms.splice(i, 1)
    target.ver++
    target.sched.migIn.delete(vmId)
    vm.inMigration = false
    this.vmCreate(target, vm)
  }

  /** Process migration ends up to (and excluding) time `until`. */
  private drainEvents (until: number): void {
    this.events.sort((a, b) => a.t - b.t)
    while (this.events.length > 0 && (this.events[0] as { t: number }).t < until) {
      const ev = this.events.shift() as { t: number, vm: number, target: number, fn?: () => void }
      if (ev.t > this.lastProcess) this.fullUpdate(ev.t)
      this.now = ev.t
      if (ev.fn !== undefined) ev.fn()
      else {
        this.finishMigration(ev.vm, ev.target)
        if (this.onMigrationEnd !== null) {
          const n = this.events.length
          this.onMigrationEnd(ev.vm, ev.target)
          // migrations it started: each in its place in time order (after those due at the same time)
          for (const e of this.events.splice(n)) {
            let k = 0
            while (k < this.events.length && (this.events[k] as { t: number }).t <= e.t) k++
            this.events.splice(k, 0, e)
          }
        }
      }
      const next = this.events[0]
      if (next === undefined || next.t > ev.t) this.fullUpdate(ev.t)
    }
  }

  /** Initial placement: a function choosing a host for each new VM (null = not created). */
  place (choose: (vm: SimVm) => SimHost | null): void {
    this.now = 0
    for (const vm of this.vms) {
      const h = choose(vm)
      if (h === null) { vm.alive = false; continue }
      this.vmCreate(h, vm)
      h.ramUsed += vm.ram
      h.bwUsed += vm.bw
      vm.beingInstantiated = false
    }
    this.submitted = true
  }

  /** Run the whole trace with a controller deciding migrations at every step. */
  run (controller: Controller | null): Metrics {
    const iv = this.model.intervalSec
    let t = this.model.phaseSec
    let first = true
    while (true) {
      // CloudSim skips the step at which the cloudlets are submitted
      if (!first) {
        if (t > this.model.limitSec) break
        this.drainEvents(t)
        this.migrationsThisStep = 0
        this.fullUpdate(t)
        if (controller !== null) {
          for (const [vm, target] of controller(this, t)) this.startMigration(vm, target)
        }
        this.sample(t)
      }
      first = false
      const next = t + iv
      if (next > this.model.limitSec) {
        this.drainEvents(this.model.limitSec + 1e-9)
        break
      }
      t = next
    }
    return this.metrics()
  }

  /** RAM held on a host: its VMs, including copies migrating in (the source still holds those too). */
  ramHeld (h: SimHost): number {
    let ram = 0
    for (const id of h.vms) ram += (this.vms[id] as SimVm).ram
    return ram
  }

  private sample (t: number): void {
    let active = 0
    let ramOver = 0
    let idleW = 0
    for (const h of this.hosts) {
      if (h.utilMips > 0) { active++; idleW += h.power[0] ?? 0 }
      const f = this.ramHeld(h) / h.ram
      if (f > 1) ramOver++
      if (f > this.maxRamFraction) this.maxRamFraction = f
    }
    this.ramOverHostSteps += ramOver
    const tt = this.slaTotalTime
    this.timeline.push({
      t, activeHosts: active, energyKWh: this.energyWs / 3.6e6, migrations: this.migrationsThisStep,
      slaShortfall: tt > 0 ? this.slaViolTime / tt : 0, slaPaper: tt > 0 ? this.slaPaperViolTime / tt : 0, ramOverHosts: ramOver, idleW
    })
  }

  metrics (): Metrics {
    const energyKWh = this.energyWs / 3.6e6
    const slatah = this.slaTotalTime > 0 ? this.slaViolTime / this.slaTotalTime : 0
    const pdm = this.vmReq > 0 ? this.vmUnderMig / this.vmReq : 0
    const slav = slatah * pdm
    const slatahPaper = this.slaTotalTime > 0 ? this.slaPaperViolTime / this.slaTotalTime : 0
    const slavPaper = slatahPaper * pdm
    return {
      energyKWh, migrations: this.migrations, slatah, pdm, slav, esv: energyKWh * slav,
      slatahPaper, slavPaper, esvPaper: energyKWh * slavPaper,
      overallSla: this.vmReq > 0 ? (this.vmReq - this.vmAlloc) / this.vmReq : 0,
      vmTimeShortfallOver10: this.vmTime > 0 ? this.vmTimeBad / this.vmTime : 0,
      ramOverHostSteps: this.ramOverHostSteps, maxRamFraction: this.maxRamFraction,
      vmsDropped: this.vmsDropped, powerClamps: this.powerClamps
    }
  }
}
