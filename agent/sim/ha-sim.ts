/**
 * A simulation harness for the HA core alone: N HaManagers on a virtual clock, a small network
 * of its own (seeded delay and loss, partitions, isolation, one-way cuts), simulated hypervisors
 * whose state is the ground truth of "running", and simulated watchdogs. Membership views are
 * modelled, not run: host A holds B alive while it has heard from B within suspectAfterTicks,
 * suspect until deadAfterTicks, dead after (the timings of SWIM, not its protocol). Every HA
 * decision is made by agent/core/ha from each host's own view.
 *
 * Faults: crash (power loss: the VMs stop at once, the host reboots later with its store and no
 * VMs), hang (the agent stops, its VMs keep running; the watchdog resets the host if the hang
 * outlasts it; a hang that ends sooner catches up its ticks first, as the runtime must),
 * agent crash (the process dies and is restarted; VMs keep running; the watchdog keeps
 * counting), stop commands that hang (the watchdog's case again), start failures.
 *
 * Checks after every tick: S1 (no VM runs on two hypervisors) and S4 (a restart is started only
 * by a quorate host, after a majority granted it, and only once no other hypervisor runs the VM
 * any longer: the old copy was fenced before the takeover).
 *
 * Live migrations of protected VMs (migrate()): a model of the migration machine's rules around
 * the real HA handover (HaManager.incomingStart / handoverStart / handoverGranted / handoverEnd):
 * the target registers its incoming copy, the source waits for the handover grant (or aborts
 * after handoverTimeoutTicks), the hypervisor switches over some ticks after the copy starts
 * (the source's copy pauses, the target's runs) if both copies are still there, the target
 * commits when its copy runs, the source stops its paused copy on the target's commit and
 * resumes it on the target's abort (R1/R2), unless the target's copy vanished after the
 * switch-over (a power loss): then the target's abort says the guest may have run there and the
 * source hands its stale copy to HA (HaManager.staleCopy) instead of resuming it (R3). Verdicts
 * travel over the simulated network (an unreachable peer is waited for); agent restarts resolve
 * from the journal and the hypervisor as the machine does. Also counted: resumes of a source
 * copy after the target's copy ran (stale state; R3 exists to keep this at 0).
 */
import {
  HaManager, haRestoredFrom, localTestVipConfig, Prng, restoreVipState, simHaConfig,
  VIP_KEY_PREFIX, VipOwnership, type HaCommand, type HaConfig, type HaMemberSpec, type HaMessage,
  type HaRestored, type HaVmSpec, type HostId, type VipEffect, type VipMessage, type VipSpec,
  type VmId
} from '../core/index.js'

export interface HaSimOptions {
  seed: number
  hosts: number
  /** Add a tie-breaker member (no VMs). @default false */
  tieBreaker?: boolean
  vmsPerHost?: number
  config?: HaConfig
  /** @default 1 */ delayMax?: number
  /** @default 0 */ loss?: number
  /** Probability a start fails. @default 0 */
  startFailure?: number
  /** Probability a stop/pause hangs forever (until the host is reset). @default 0 */
  stopHang?: number
  /** Ticks a stop takes, 1..this. @default 3 */
  stopTicksMax?: number
  /** @default 3 */ suspectAfterTicks?: number
  /** @default 10 */ deadAfterTicks?: number
  /** Ticks from a reset or crash to the agent running again. @default 15 */
  rebootTicks?: number
  /**
   * Give every VM a virtual IP that follows it (the real VIP ownership module on every host, fed
   * as the agent's VIP bridge feeds it: member views, VMs seen running or gone, HA's hints), and
   * check S5 after every tick. @default false
   */
  vips?: boolean
}

interface Agent {
  mgr: HaManager | null
  store: Map<string, unknown>
  /** Host powered off / rebooting. */
  down: boolean
  hungUntil: number
  /** Tick the agent process comes back after an agent crash or a reboot. */
  upAt: number
  life: number
  lastTick: number
  results: Array<{ command: HaCommand, ok: boolean }>
  /** VIP ownership of this agent life (with vips). */
  vip: VipOwnership | null
  /** VMs the VIP module was told run here. */
  placed: Set<VmId>
  vipResults: Array<{ vip: string, op: 'add' | 'remove' | 'announce', ok: boolean }>
}

interface VipOp { at: number, host: HostId, life: number, effect: Extract<VipEffect, { type: 'add-and-announce' | 'announce' | 'remove' }> }

interface DriverOp { at: number, host: HostId, life: number, command: HaCommand, ok: boolean, hangs: boolean, injected: boolean }
type HvState = 'running' | 'paused' | 'incoming'
/** A live migration of a protected VM (the journal of both ends, as the migration machine keeps it). */
interface SimMigration {
  vm: VmId
  src: HostId
  dst: HostId
  state: 'handover' | 'copying' | 'switched' | 'done'
  startedAt: number
  switchAt: number
  srcLife: number
  dstLife: number
  /** Target's verdict once known to it, and whether the source has learnt it. */
  verdict: 'committed' | 'aborted' | null
  /** The target's abort says its copy vanished after the switch-over (R3): the source must not resume. */
  mayHaveRun: boolean
  ranOnTarget: boolean
  srcEnded: boolean
  dstEnded: boolean
  /** The target's copy was destroyed by an HA fence after it may have run (answer: committed, lost). */
  fencedAfterSwitch: boolean
}
interface Frame { at: number, from: HostId, to: HostId, message: HaMessage | null, vip?: VipMessage }

export interface HaViolation { tick: number, kind: 'S1' | 'S4' | 'S5', text: string }

export class HaSim {
  readonly ids: HostId[]
  readonly vms: HaVmSpec[]
  readonly members: HaMemberSpec[]
  readonly config: HaConfig
  readonly prng: Prng
  now = 0
  readonly violations: HaViolation[] = []
  readonly stats = { restarts: 0, fences: 0, resets: 0, crashes: 0, hangs: 0, agentCrashes: 0, partitions: 0, cuts: 0, frames: 0, lost: 0, migrations: 0, migrationsCommitted: 0, migrationsAborted: 0, handoverTimeouts: 0, staleResumes: 0, staleCopies: 0, isolations: 0, startFailuresInjected: 0, stopHangsInjected: 0 }
  readonly migs: SimMigration[] = []
  /** One VIP per VM (with vips), and the hosts whose interface carries each address. */
  readonly vipSpecs: VipSpec[] = []
  readonly carriers = new Map<string, Set<HostId>>()
  private vipOps: VipOp[] = []
  private readonly lastVipOpAt = new Map<string, number>()
  /** Longest time two hosts carried one address at once (a make-before-break handoff), ticks. */
  maxVipOverlap = 0
  private readonly overlapSince = new Map<string, number>()
  /** Ticks the source waits for the handover grant before it aborts. */
  handoverTimeoutTicks: number
  loss: number
  startFailure: number
  stopHang: number
  private readonly o: Required<Omit<HaSimOptions, 'config' | 'tieBreaker' | 'seed' | 'hosts' | 'loss' | 'startFailure' | 'stopHang' | 'vips'>>
  private readonly agents = new Map<HostId, Agent>()
  readonly hv = new Map<HostId, Map<VmId, HvState>>()
  private readonly lastPing = new Map<HostId, number>()
  private readonly heard = new Map<string, number>()
  private frames: Frame[] = []
  private ops: DriverOp[] = []
  private readonly lastOpAt = new Map<HostId, number>()
  private groupOf: Map<HostId, number> | null = null
  private readonly cuts = new Set<string>()
  private readonly isolated = new Set<HostId>()
  /** Debugging: every event, send and driver command, as text. */
  trace: ((line: string) => void) | null = null
  /**
   * Failed starts of each VM since it last started, by cause: injected (the startFailure
   * probability) or other (a resume whose paused copy is gone).
   */
  readonly startFailures = new Map<VmId, { injected: number, other: number }>()

  constructor (opts: HaSimOptions) {
    this.prng = new Prng(opts.seed)
    this.config = opts.config ?? simHaConfig()
    this.loss = opts.loss ?? 0
    this.startFailure = opts.startFailure ?? 0
    this.stopHang = opts.stopHang ?? 0
    this.handoverTimeoutTicks = 3 * this.config.claimTimeoutTicks
    this.o = {
      vmsPerHost: opts.vmsPerHost ?? 3,
      delayMax: opts.delayMax ?? 1,
      stopTicksMax: opts.stopTicksMax ?? 3,
      suspectAfterTicks: opts.suspectAfterTicks ?? 3,
      deadAfterTicks: opts.deadAfterTicks ?? 10,
      rebootTicks: opts.rebootTicks ?? 15
    }
    this.ids = []
    for (let i = 0; i < opts.hosts; i++) this.ids.push(`h${i}`)
    this.members = this.ids.map(id => ({ id, cpuMips: 8000, memMiB: 16384 }))
    if (opts.tieBreaker === true) { this.ids.push('qdev'); this.members.push({ id: 'qdev', cpuMips: 0, memMiB: 0, tieBreaker: true }) }
    this.vms = []
    for (let i = 0; i < opts.hosts; i++) {
      for (let k = 0; k < this.o.vmsPerHost; k++) {
        const id = `vm${i}-${k}`
        this.vms.push({ id, home: `h${i}`, priority: k % 3, cpuMips: 1000, memMiB: 2048, source: { kind: 'shared', definition: `${id}.xml` }, fencePolicy: k % 2 === 0 ? 'stop' : 'pause' })
      }
    }
    if (opts.vips === true) {
      this.vms.forEach((v, i) => {
        this.vipSpecs.push({ id: `ip-${v.id}`, address: `192.0.2.${10 + i}/24`, iface: 'eth0', binding: { kind: 'vm', vm: v.id } })
        this.carriers.set(`ip-${v.id}`, new Set())
      })
    }
    for (const id of this.ids) {
      this.hv.set(id, new Map(this.vms.filter(v => v.home === id).map(v => [v.id, 'running' as HvState])))
      const a: Agent = { mgr: null, store: new Map(), down: false, hungUntil: 0, upAt: 0, life: 0, lastTick: 0, results: [], vip: null, placed: new Set(), vipResults: [] }
      this.agents.set(id, a)
      this.startAgent(id)
      this.lastPing.set(id, 0)
    }
  }

  manager (id: HostId): HaManager | null { const a = this.agents.get(id)!; return a.down || this.now < a.hungUntil ? null : a.mgr }
  isDown (id: HostId): boolean { return this.agents.get(id)!.down }

  // ---------------------------------------------------------------------------------------------
  // Faults

  crash (id: HostId): void {
    const a = this.agents.get(id)!
    if (a.down) return
    this.stats.crashes++
    this.powerOff(id, this.now + 1 + this.prng.int(this.o.rebootTicks))
  }

  hang (id: HostId, ticks: number): void {
    const a = this.agents.get(id)!
    if (a.down || a.mgr === null) return
    this.stats.hangs++
    a.hungUntil = Math.max(a.hungUntil, this.now + ticks)
  }

  agentCrash (id: HostId, restartAfter: number): void {
    const a = this.agents.get(id)!
    if (a.down || a.mgr === null) return
    this.stats.agentCrashes++
    a.mgr = null
    a.vip = null
    a.vipResults = []
    a.life++
    a.results = []
    a.upAt = this.now + restartAfter
  }

  partition (groups: HostId[][]): void {
    this.stats.partitions++
    this.groupOf = new Map()
    groups.forEach((g, i) => { for (const id of g) this.groupOf!.set(id, i) })
  }

  isolate (id: HostId): void { this.stats.isolations++; this.isolated.add(id) }
  /** Drop frames from a to b only. */
  cut (a: HostId, b: HostId): void { this.stats.cuts++; this.cuts.add(`${a}>${b}`) }

  heal (): void { this.groupOf = null; this.cuts.clear(); this.isolated.clear() }

  operator (id: HostId, input: { type: 'haOperatorMode', armed: boolean } | { type: 'haOperatorMaintenance', host: HostId, on: boolean }): void {
    const m = this.manager(id)
    if (m === null) return
    m.step(input)
    this.drain(id)
  }

  // ---------------------------------------------------------------------------------------------
  // The clock

  tick (): void {
    this.now++
    // Hypervisor operations due now, then their results.
    const due = this.ops.filter(o => o.at <= this.now)
    this.ops = this.ops.filter(o => o.at > this.now)
    for (const op of due) this.applyOp(op)
    // Frames due now.
    const frames = this.frames.filter(f => f.at <= this.now)
    this.frames = this.frames.filter(f => f.at > this.now)
    for (const f of frames) {
      const a = this.agents.get(f.to)!
      if (!this.running(a)) continue
      this.heard.set(`${f.to}<${f.from}`, this.now)
      if (f.message !== null) a.mgr!.step({ type: 'haMessage', from: f.from, message: f.message })
      if (f.vip !== undefined) a.vip?.step({ type: 'vipMessage', from: f.from, message: f.vip })
      this.drain(f.to)
    }
    // Agents: reboot, resume, tick.
    for (const id of this.ids) {
      const a = this.agents.get(id)!
      if (a.down && this.now >= a.upAt) { a.down = false; this.lastPing.set(id, this.now); this.startAgent(id) }
      if (!a.down && a.mgr === null && this.now >= a.upAt) this.startAgent(id)
      if (!this.running(a)) continue
      const mgr = a.mgr!
      for (const r of a.results) mgr.step({ type: 'haDriverResult', command: r.command, ok: r.ok })
      a.results = []
      for (const r of a.vipResults) a.vip?.step({ type: 'vipApplied', vip: r.vip, op: r.op, ok: r.ok })
      a.vipResults = []
      this.drain(id)
      // A stalled loop catches up its ticks before anything else (and before pinging).
      while (a.lastTick < this.now) {
        const view = this.viewOf(id)
        mgr.step({ type: 'members', members: view })
        mgr.tick()
        if (a.vip !== null) {
          a.vip.step({ type: 'members', members: view })
          this.sampleVms(id, a)
          a.vip.tick()
        }
        a.lastTick++
        this.drain(id)
      }
      if (mgr.watchdogOk()) this.lastPing.set(id, this.now)
    }
    this.stepMigrations()
    // Watchdogs.
    for (const id of this.ids) {
      const a = this.agents.get(id)!
      if (a.down) continue
      if (this.now - this.lastPing.get(id)! > this.config.watchdogTicks) {
        this.stats.resets++
        this.powerOff(id, this.now + this.o.rebootTicks)
      }
    }
    this.applyVipOps()
    this.checkS1()
    if (this.vipSpecs.length > 0) this.checkS5()
  }

  run (ticks: number): void { for (let i = 0; i < ticks; i++) this.tick() }

  runUntil (pred: () => boolean, maxTicks: number): boolean {
    for (let i = 0; i < maxTicks; i++) { this.tick(); if (pred()) return true }
    return pred()
  }

  /** Every VM that a majority does not consider failed runs on exactly one hypervisor. */
  allRunning (): boolean {
    for (const v of this.vms) {
      if (this.failed(v.id)) continue
      if (this.copies(v.id) !== 1) return false
    }
    return true
  }

  /** VMs given up after maxAttempts failed starts, in the eyes of some live agent. */
  failed (vm: VmId): boolean {
    for (const id of this.ids) {
      const m = this.manager(id)
      const s = m?.status().vms.find(x => x.vm === vm)
      if (s?.failed === true) return true
    }
    return false
  }

  /**
   * Why a VM does not run exactly once now, or null when it does. 'gave up after injected start
   * failures': some agent holds it failed (maxAttempts failed starts in a row, by design left to
   * the operator) and every failed start since it last ran was one the simulator injected, at
   * least as many as the attempts allowed. 'gave up after other start failures': held failed with
   * a failure the simulator did not inject among them. 'unexplained': neither running once nor
   * given up (a liveness bug).
   */
  notRunningReason (vm: VmId): NotRunningReason | null {
    if (!this.failed(vm)) return this.copies(vm) === 1 ? null : 'unexplained'
    const spec = this.vms.find(v => v.id === vm)!
    const f = this.startFailures.get(vm) ?? { injected: 0, other: 0 }
    return f.other === 0 && f.injected >= (spec.maxAttempts ?? this.config.maxAttempts) ? 'gave up after injected start failures' : 'gave up after other start failures'
  }

  copies (vm: VmId): number {
    let n = 0
    for (const m of this.hv.values()) if (m.get(vm) === 'running') n++
    return n
  }


  // ---------------------------------------------------------------------------------------------
  // Live migrations of protected VMs

  /** Starts a live migration of `vm` from the host that runs it to `dst`; false when not started. */
  migrate (vm: VmId, dst: HostId): boolean {
    const src = this.ids.find(h => this.hv.get(h)!.get(vm) === 'running')
    if (src === undefined || src === dst || this.migs.some(m => m.vm === vm && m.state !== 'done')) return false
    if (this.members.find(m => m.id === dst)?.tieBreaker === true || this.hv.get(dst)!.has(vm)) return false
    const sm = this.manager(src)
    const dm = this.manager(dst)
    // The intent and the reservation travel between the two agents.
    if (sm === null || dm === null || !this.reachable(src, dst) || !this.reachable(dst, src)) return false
    if (sm.roleOf(vm) !== 'running') return false
    // Target: admits, registers its incoming copy with HA (fenced from now on), prepares it.
    if (dm.incomingStart(vm, src) !== null) { this.drain(dst); return false }
    this.drain(dst)
    this.hv.get(dst)!.set(vm, 'incoming')
    const m: SimMigration = {
      vm, src, dst, state: 'handover', startedAt: this.now, switchAt: 0, srcLife: this.agents.get(src)!.life, dstLife: this.agents.get(dst)!.life,
      verdict: null, mayHaveRun: false, ranOnTarget: false, srcEnded: false, dstEnded: false, fencedAfterSwitch: false
    }
    this.migs.push(m)
    this.stats.migrations++
    this.trace?.(`${this.now} MIGRATE ${vm} ${src}->${dst}`)
    // Source: on IncomingReady, asks for the handover claim before it may start the copy.
    const why = sm.handoverStart(vm, dst)
    this.drain(src)
    if (why !== null) this.failBeforeSwitch(m, `handover refused: ${why}`)
    return true
  }

  /** In flight (not done). */
  migrating (): number { return this.migs.filter(m => m.state !== 'done').length }

  private reachable (a: HostId, b: HostId): boolean {
    if (this.isolated.has(a) || this.isolated.has(b)) return false
    if (this.groupOf !== null && (this.groupOf.get(a) ?? -1) !== (this.groupOf.get(b) ?? -1)) return false
    if (this.cuts.has(`${a}>${b}`)) return false
    return !(this.loss > 0 && this.prng.chance(this.loss))
  }

  /** Before the switch-over: the target's copy never ran; both ends abort (each when it learns). */
  private failBeforeSwitch (m: SimMigration, why: string): void {
    this.trace?.(`${this.now} MIGRATION ${m.vm} ${m.src}->${m.dst} fails: ${why}`)
    if (this.hv.get(m.dst)!.get(m.vm) === 'incoming') this.hv.get(m.dst)!.delete(m.vm)
    m.verdict = 'aborted'
    m.state = 'switched' // resolution below: both ends learn "aborted"
    m.switchAt = -1
  }

  private endOn (h: HostId, m: SimMigration, outcome: 'committed' | 'aborted'): boolean {
    const mgr = this.manager(h)
    if (mgr === null) return false
    mgr.handoverEnd(m.vm, outcome)
    this.drain(h)
    return true
  }

  private stepMigrations (): void {
    for (const m of this.migs) {
      if (m.state === 'done') continue
      const src = this.agents.get(m.src)!
      const dst = this.agents.get(m.dst)!
      const shv = this.hv.get(m.src)!
      const dhv = this.hv.get(m.dst)!
      if (m.state === 'handover') {
        // A restarted end resolves a migration that had not started copying by aborting it.
        if (src.life !== m.srcLife || dst.life !== m.dstLife) { this.failBeforeSwitch(m, 'an end restarted'); continue }
        const sm = this.manager(m.src)
        if (sm !== null && sm.handoverGranted(m.vm) && shv.get(m.vm) === 'running' && dhv.get(m.vm) === 'incoming') {
          m.state = 'copying'
          m.switchAt = this.now + 1 + this.prng.int(8)
          continue
        }
        if (this.now - m.startedAt >= this.handoverTimeoutTicks) { this.stats.handoverTimeouts++; this.failBeforeSwitch(m, 'no handover grant in time'); continue }
        continue
      }
      if (m.state === 'copying') {
        if (this.now < m.switchAt) continue
        // The hypervisor decides: both copies there -> switch-over; else the migration fails and
        // the source's copy (if any) runs on.
        if (shv.get(m.vm) === 'running' && dhv.get(m.vm) === 'incoming') {
          shv.set(m.vm, 'paused')
          dhv.set(m.vm, 'running')
          m.ranOnTarget = true
          m.state = 'switched'
          this.trace?.(`${this.now} SWITCH ${m.vm} ${m.src}->${m.dst}`)
        } else this.failBeforeSwitch(m, 'a copy vanished during the transfer')
        continue
      }
      // switched: the target decides (commit when its copy runs; abort when its copy never ran).
      if (m.verdict === null) {
        const dm = this.manager(m.dst)
        if (dm !== null) {
          if (dhv.get(m.vm) === 'running') m.verdict = 'committed'
          else if (m.fencedAfterSwitch) m.verdict = 'committed' // lost after it ran: never resume the source
          else { m.verdict = 'aborted'; m.mayHaveRun = true } // a power loss: the copy that ran is gone (R3)
        }
      }
      if (m.verdict === null) continue
      if (!m.dstEnded) {
        m.dstEnded = this.endOn(m.dst, m, m.verdict)
        if (m.dstEnded && m.verdict === 'committed') this.vipMigrationCommitted(m.dst, m)
      }
      if (!m.srcEnded && (m.switchAt === -1 || this.reachable(m.dst, m.src))) {
        const sm = this.manager(m.src)
        if (sm !== null) {
          const stale = m.verdict === 'aborted' && m.mayHaveRun
          if (m.verdict === 'committed') { if (shv.get(m.vm) === 'paused') shv.delete(m.vm) } else if (shv.get(m.vm) === 'paused' && !stale) {
            shv.set(m.vm, 'running')
            if (m.ranOnTarget) this.stats.staleResumes++
          }
          m.srcEnded = this.endOn(m.src, m, m.verdict)
          if (m.srcEnded && m.verdict === 'committed') this.vipMigrationCommitted(m.src, m)
          if (stale && m.srcEnded) { this.stats.staleCopies++; sm.staleCopy(m.vm); this.drain(m.src) }
        }
      }
      if (m.srcEnded && m.dstEnded) {
        m.state = 'done'
        if (m.verdict === 'committed') this.stats.migrationsCommitted++; else this.stats.migrationsAborted++
        this.trace?.(`${this.now} MIGRATION ${m.vm} ${m.src}->${m.dst} ${m.verdict}`)
      }
    }
  }

  // ---------------------------------------------------------------------------------------------
  // Internals

  private running (a: Agent): boolean { return !a.down && a.mgr !== null && this.now >= a.hungUntil }

  private powerOff (id: HostId, upAt: number): void {
    const a = this.agents.get(id)!
    a.down = true
    a.mgr = null
    a.life++
    a.results = []
    a.hungUntil = 0
    a.upAt = upAt
    this.hv.get(id)!.clear()
    this.ops = this.ops.filter(o => o.host !== id) // the hypervisor's pending work dies with it
    a.vip = null
    a.vipResults = []
    for (const c of this.carriers.values()) c.delete(id) // its interfaces go down with it
    this.vipOps = this.vipOps.filter(o => o.host !== id)
  }

  private startAgent (id: HostId): void {
    const a = this.agents.get(id)!
    // Commands the previous agent life handed to the hypervisor complete before the new agent
    // lists the VMs (else it would find running a copy that a pause in flight then pauses).
    const mine = this.ops.filter(o => o.host === id && !o.hangs)
    this.ops = this.ops.filter(o => !(o.host === id && !o.hangs))
    for (const op of mine) this.applyOp(op)
    const restored = this.restore(a.store)
    const running = [...this.hv.get(id)!].filter(([, s]) => s === 'running').map(([vm]) => vm)
    // Paused copies are not known to a fresh agent: the runtime destroys them at start-up, except
    // the source copy of a migration in flight, which the migration machine resolves.
    for (const [vm, s] of [...this.hv.get(id)!]) if (s === 'paused' && !this.migs.some(m => m.vm === vm && m.src === id && m.state === 'switched' && m.switchAt !== -1)) this.hv.get(id)!.delete(vm)
    a.mgr = new HaManager({ self: id, members: this.members, vms: this.vms, config: this.config, prng: this.prng.fork(this.ids.indexOf(id) + 100 * a.life), running, life: a.life, ...(restored !== undefined ? { restored } : {}) })
    // Every simulated host has a watchdog that resets it (a hang is modelled as the reset it causes).
    a.mgr.step({ type: 'haLocalFence', fenced: true })
    if (this.vipSpecs.length > 0) {
      // The runtime removes every configured address at start-up, then the module decides.
      for (const c of this.carriers.values()) c.delete(id)
      a.vip = new VipOwnership({
        self: id,
        members: this.ids,
        vips: this.vipSpecs,
        config: localTestVipConfig(),
        prng: this.prng.fork(this.ids.indexOf(id) + 100 * a.life + 50_000),
        restored: restoreVipState([...a.store].filter(([k]) => k.startsWith(VIP_KEY_PREFIX)))
      })
      a.placed = new Set()
      a.vipResults = []
    }
    a.lastTick = this.now
    a.hungUntil = 0
    this.drain(id)
  }

  /** What the agent's host sample tells its VIP bridge: VMs running here are placed, gone ones moved away. */
  private sampleVms (id: HostId, a: Agent): void {
    const vip = a.vip
    if (vip === null) return
    const here = new Set<VmId>()
    for (const [vm, st] of this.hv.get(id)!) {
      here.add(vm)
      if (st === 'running' && !a.placed.has(vm)) { a.placed.add(vm); vip.step({ type: 'vmPlaced', vm }) }
    }
    for (const vm of [...a.placed]) if (!here.has(vm)) { a.placed.delete(vm); vip.step({ type: 'vmMovedAway', vm, to: null }) }
  }

  /** A migration committed at this end (the VIP bridge's syncMigrations). */
  private vipMigrationCommitted (id: HostId, m: SimMigration): void {
    const a = this.agents.get(id)!
    if (a.vip === null) return
    if (id === m.src) { a.placed.delete(m.vm); a.vip.step({ type: 'vmMovedAway', vm: m.vm, to: m.dst }) } else { a.placed.add(m.vm); a.vip.step({ type: 'vmPlaced', vm: m.vm }) }
    this.drain(id)
  }

  /** Address effects carried out by each host's runtime, in order; a hung agent's wait. */
  private applyVipOps (): void {
    const later: VipOp[] = [] // in their original order: one VIP's effects never overtake each other
    for (const op of this.vipOps) {
      if (op.at > this.now) { later.push(op); continue }
      const a = this.agents.get(op.host)!
      if (a.down || op.life !== a.life) continue
      if (this.now < a.hungUntil || later.some(o => o.host === op.host && o.effect.vip === op.effect.vip)) { later.push(op); continue }
      const e = op.effect
      const c = this.carriers.get(e.vip)!
      if (e.type === 'add-and-announce') { c.add(op.host); a.vipResults.push({ vip: e.vip, op: 'add', ok: true }) }
      else if (e.type === 'remove') { c.delete(op.host); a.vipResults.push({ vip: e.vip, op: 'remove', ok: true }) }
      else a.vipResults.push({ vip: e.vip, op: 'announce', ok: true })
    }
    this.vipOps = later
  }

  /**
   * S5: at most one host believes it owns a VIP, and besides it only a host handing the address
   * off (make-before-break) or removing it carries it; maxVipOverlap says for how long at most.
   */
  private checkS5 (): void {
    for (const spec of this.vipSpecs) {
      const owners: HostId[] = []
      for (const id of this.ids) {
        const a = this.agents.get(id)!
        if (!a.down && a.vip?.roleOf(spec.id) === 'owner') owners.push(id)
      }
      if (owners.length > 1) this.violation('S5', `${spec.id}: ${owners.join(' and ')} both own it`)
      const carriers = [...this.carriers.get(spec.id)!]
      // Besides the owner, a carrier must be handing the address off or removing it (its remove
      // in flight): an address that no module accounts for answers ARP beside the owner.
      const removing = (h: HostId): boolean => this.vipOps.some(o => o.host === h && o.effect.vip === spec.id && o.effect.type === 'remove')
      const stray = carriers.filter(h => { const r = this.agents.get(h)!.vip?.roleOf(spec.id); return r !== 'owner' && r !== 'handingOff' && !removing(h) })
      if (stray.length > 0 && carriers.length > 1) this.violation('S5', `${spec.id}: carried by ${carriers.join(' and ')}; ${stray.join(', ')} neither owns it, hands it off nor removes it (roles ${stray.map(h => this.agents.get(h)!.vip?.roleOf(spec.id) ?? 'no agent').join(', ')})`)
      if (carriers.length > 1) {
        const since = this.overlapSince.get(spec.id) ?? this.now
        this.overlapSince.set(spec.id, since)
        this.maxVipOverlap = Math.max(this.maxVipOverlap, this.now - since + 1)
      } else this.overlapSince.delete(spec.id)
    }
  }

  /** Once quiet: every VIP is carried by exactly the host that runs its VM, and that host owns it. */
  vipsSettled (): boolean {
    for (const spec of this.vipSpecs) {
      const vm = spec.binding.kind === 'vm' ? spec.binding.vm : ''
      const runs = this.ids.filter(h => this.hv.get(h)!.get(vm) === 'running')
      const carriers = [...this.carriers.get(spec.id)!]
      if (runs.length !== 1 || carriers.length !== 1 || carriers[0] !== runs[0]) {
        if (runs.length === 0 && carriers.length === 0) continue // a VM given up: no address
        return false
      }
      if (this.agents.get(runs[0]!)!.vip?.roleOf(spec.id) !== 'owner') return false
    }
    return true
  }

  private restore (store: Map<string, unknown>): HaRestored | undefined {
    return haRestoredFrom(store)
  }

  private viewOf (id: HostId): Array<{ id: HostId, state: 'alive' | 'suspect' | 'dead' }> {
    const out: Array<{ id: HostId, state: 'alive' | 'suspect' | 'dead' }> = []
    for (const m of this.ids) {
      if (m === id) continue
      const h = this.heard.get(`${id}<${m}`) ?? 0
      const age = this.now - h
      out.push({ id: m, state: age >= this.o.deadAfterTicks ? 'dead' : age >= this.o.suspectAfterTicks ? 'suspect' : 'alive' })
    }
    return out
  }

  private drain (id: HostId): void {
    const a = this.agents.get(id)!
    const mgr = a.mgr!
    for (const e of mgr.takeEffects()) {
      switch (e.type) {
        case 'persist': if (e.op.type === 'put') a.store.set(e.op.key, e.op.value); else a.store.delete(e.op.key); break
        case 'send': for (const to of e.to) this.send(id, to, e.message); break
        case 'driver': this.issue(id, a, mgr, e.command); break
        case 'event': this.trace?.(`${this.now} ${id} ${e.event.text}`); break
        case 'vip':
          if (a.vip !== null) {
            if (e.hint === 'vmPlaced') { if (!a.placed.has(e.vm)) { a.placed.add(e.vm); a.vip.step({ type: 'vmPlaced', vm: e.vm }) } } else if (a.placed.delete(e.vm)) a.vip.step({ type: 'vmMovedAway', vm: e.vm, to: null })
          }
          break
        case 'handover':
          for (const m of this.migs) if (m.vm === e.vm && m.dst === id && m.state === 'switched' && m.switchAt !== -1 && m.verdict === null) m.fencedAfterSwitch = true
          break
      }
    }  this.drainVip(id, a)
  }

  private drainVip (id: HostId, a: Agent): void {
    if (a.vip === null) return
    for (const e of a.vip.takeEffects()) {
      switch (e.type) {
        case 'persist': if (e.op.type === 'put') a.store.set(e.op.key, e.op.value); else a.store.delete(e.op.key); break
        case 'send': for (const to of e.to) this.send(id, to, null, e.message); break
        case 'event': this.trace?.(`${this.now} ${id} ${e.event.text}`); break
        default: {
          // The runtime applies one VIP's address effects one at a time, in order.
          const key = `${id}/${e.vip}`
          const at = Math.max(this.now + 1 + this.prng.int(2), this.lastVipOpAt.get(key) ?? 0)
          this.lastVipOpAt.set(key, at)
          this.vipOps.push({ at, host: id, life: a.life, effect: e })
          break
        }
      }
    }
  }

  private send (from: HostId, to: HostId, message: HaMessage | null, vip?: VipMessage): void {
    this.stats.frames++
    if (this.trace !== null && message?.type !== 'haBeat') this.trace(`${this.now} ${from}->${to} ${JSON.stringify(message ?? vip)}`)
    if (this.isolated.has(from) || this.isolated.has(to)) return
    if (this.groupOf !== null && (this.groupOf.get(from) ?? -1) !== (this.groupOf.get(to) ?? -1)) return
    if (this.cuts.has(`${from}>${to}`)) return
    if (this.loss > 0 && this.prng.chance(this.loss)) { this.stats.lost++; return }
    this.frames.push({ at: this.now + 1 + this.prng.int(this.o.delayMax), from, to, message, ...(vip !== undefined ? { vip } : {}) })
  }

  private issue (id: HostId, a: Agent, mgr: HaManager, c: HaCommand): void {
    this.trace?.(`${this.now} ${id} driver ${JSON.stringify(c)}`)
    if (c.kind === 'haStart' && c.mode === 'boot' && c.epoch > 0) {
      // S4: the claimant sees a majority, and no other hypervisor still runs the VM.
      if (!mgr.quorate) this.violation('S4', `${id} starts ${c.vm} (epoch ${c.epoch}) without a majority`)
      for (const [h, m] of this.hv) {
        if (h !== id && m.get(c.vm) === 'running') this.violation('S4', `${id} starts ${c.vm} (epoch ${c.epoch}) while ${h} still runs it`)
      }
    }
    const hangs = c.kind === 'haStop' && this.stopHang > 0 && this.prng.chance(this.stopHang)
    const ok = c.kind === 'haStart' ? !(this.startFailure > 0 && this.prng.chance(this.startFailure)) : true
    if (hangs) this.stats.stopHangsInjected++
    if (!ok) this.stats.startFailuresInjected++
    // The driver carries out one host's commands in order (the runtime must too).
    const at = Math.max(this.now + 1 + this.prng.int(c.kind === 'haStop' ? this.o.stopTicksMax : 3), this.lastOpAt.get(id) ?? 0)
    this.lastOpAt.set(id, at)
    this.ops.push({ at, host: id, life: a.life, command: c, ok, hangs, injected: !ok })
  }

  private applyOp (op: DriverOp): void {
    const a = this.agents.get(op.host)!
    if (a.down) return
    const hv = this.hv.get(op.host)!
    const c = op.command
    if (op.hangs) return // never completes; the watchdog will reset the host
    if (c.kind === 'haStart') {
      if (c.mode === 'resume' && hv.get(c.vm) !== 'paused') op.ok = false
      const streak = this.startFailures.get(c.vm) ?? { injected: 0, other: 0 }
      if (op.ok) this.startFailures.delete(c.vm)
      else { if (op.injected) streak.injected++; else streak.other++; this.startFailures.set(c.vm, streak) }
      if (op.ok) {
        if (c.mode === 'boot') this.stats.restarts += c.epoch > 0 ? 1 : 0
        hv.set(c.vm, 'running')
      }
    } else if (c.mode === 'pause') {
      if (hv.get(c.vm) === 'running') hv.set(c.vm, 'paused')
      if (c.reason === 'fence') this.stats.fences++
    } else {
      hv.delete(c.vm)
      if (c.reason === 'fence') this.stats.fences++
    }
    if (op.life === a.life) a.results.push({ command: c, ok: op.ok })
  }

  private checkS1 (): void {
    for (const v of this.vms) {
      const n = this.copies(v.id)
      if (n > 1) this.violation('S1', `${v.id} runs on ${n} hosts: ${[...this.hv].filter(([, m]) => m.get(v.id) === 'running').map(([h]) => h).join(',')}`)
    }
  }

  private violation (kind: 'S1' | 'S4' | 'S5', text: string): void {
    if (this.violations.length < 20) this.violations.push({ tick: this.now, kind, text })
  }
}

/** Why a VM does not run at the end of a run (HaSim.notRunningReason). */
export type NotRunningReason = 'gave up after injected start failures' | 'gave up after other start failures' | 'unexplained'

export interface RunResult {
  violations: string[]
  live: boolean
  ticksToLive: number
  stats: HaSim['stats']
  /** VMs given up (maxAttempts failed starts) in the eyes of some agent at the end. */
  failed: number
  /** HA VMs in the run. */
  vms: number
  /** Every VM given up or not running exactly once at the end, with the reason. */
  notRunning: Array<{ vm: VmId, reason: NotRunningReason }>
  maxVipOverlap: number
}

/** One seeded run: random faults for a few hundred ticks, then heal and wait for every VM to run. */
export function haRandomRun (seed: number, trace?: (line: string) => void, opts: { migrations?: number, vips?: boolean } = {}): RunResult {
  const p = new Prng(seed)
  const hosts = 2 + p.int(4) // 2..5
  const tie = hosts === 2 || (hosts % 2 === 0 && p.chance(0.5))
  const sim = new HaSim({
    seed,
    hosts,
    tieBreaker: tie,
    vmsPerHost: 1 + p.int(3),
    delayMax: 1 + p.int(2),
    loss: p.chance(0.5) ? p.next() * 0.1 : 0,
    startFailure: p.chance(0.3) ? 0.1 : 0,
    stopHang: p.chance(0.2) ? 0.1 : 0,
    vips: opts.vips === true
  })
  if (trace !== undefined) sim.trace = trace
  const ids = sim.ids
  const log = (s: string): void => trace?.(`${sim.now} FAULT ${s}`)
  const safetyTicks = 250 + p.int(150)
  // Live migrations of protected VMs (operator moves, drains): probability per tick of a start.
  const migP = opts.migrations ?? 0
  const mp = new Prng(seed * 7 + 3) // its own stream: the fault schedule stays that of the seed
  for (let tick = 0; tick < safetyTicks; tick++) {
    if (migP > 0 && mp.chance(migP)) {
      const vm = sim.vms[mp.int(sim.vms.length)]!.id
      const dst = ids[mp.int(ids.length)]!
      sim.migrate(vm, dst)
    }
    if (p.chance(0.06)) {
      const h = ids[p.int(ids.length)]!
      switch (p.int(9)) {
        case 0: log(`crash ${h}`); sim.crash(h); break
        case 1: { const d = 2 + p.int(20); log(`hang ${h} ${d}`); sim.hang(h, d); break }
        case 2: { const d = 1 + p.int(12); log(`agent crash ${h} ${d}`); sim.agentCrash(h, d); break }
        case 3: {
          const shuffled = p.shuffle([...ids])
          const cut = 1 + p.int(ids.length - 1)
          log(`partition ${shuffled.slice(0, cut).join(',')} | ${shuffled.slice(cut).join(',')}`); sim.partition([shuffled.slice(0, cut), shuffled.slice(cut)])
          break
        }
        case 4: log(`isolate ${h}`); sim.isolate(h); break
        case 5: { const o = ids[p.int(ids.length)]!; if (o !== h) { log(`cut ${h}>${o}`); sim.cut(h, o) }; break }
        case 6: sim.loss = p.next() * 0.3; log(`loss ${sim.loss}`); break
        case 7: log('heal'); sim.heal(); sim.loss = 0; break
        case 8: { // three-way split: no side may have a majority
          const s = p.shuffle([...ids])
          const a = Math.max(1, Math.floor(s.length / 3))
          log(`split3 ${s.join(',')}`); sim.partition([s.slice(0, a), s.slice(a, 2 * a), s.slice(2 * a)])
          break
        }
      }
    }
    sim.tick()
  }
  log('final heal')
  // Liveness: a healed, loss-free network; hangs end; crashed hosts reboot by themselves.
  sim.heal()
  sim.loss = 0
  sim.startFailure = 0
  sim.stopHang = 0
  const healedAt = sim.now
  const bound = 400
  // Live: every VM runs exactly once for 30 consecutive ticks, within the bound.
  let streak = 0
  let settledAt = -1
  for (let i = 0; i < bound && streak < 30; i++) {
    sim.tick()
    if (sim.allRunning() && sim.vipsSettled()) { if (streak++ === 0) settledAt = sim.now } else streak = 0
  }
  const live = streak >= 30
  const ticksToLive = live ? settledAt - healedAt : bound
  if (!live && trace !== undefined) {
    for (const v of sim.vms) if (sim.copies(v.id) !== 1 && !sim.failed(v.id)) trace(`NOT RUNNING ${v.id}: ${sim.ids.map(h => `${h}:${sim.manager(h)?.roleOf(v.id) ?? 'down'}/${JSON.stringify(sim.manager(h)?.status().vms.find(x => x.vm === v.id)?.standing)}${sim.manager(h)?.status().vms.find(x => x.vm === v.id)?.released === true ? 'R' : ''}`).join(' ')}`)
    for (const h of sim.ids) { const st = sim.manager(h)?.status(); trace(`${h} q=${JSON.stringify(st?.quorum)} mode=${JSON.stringify(st?.mode)} fence=${JSON.stringify(st?.fence)}`) }
    for (const spec of sim.vipSpecs) trace(`VIP ${spec.id}: carried by ${[...sim.carriers.get(spec.id)!].join(',') || 'nobody'}`)
  }
  const failed = sim.vms.filter(v => sim.failed(v.id)).length
  const notRunning: RunResult['notRunning'] = []
  for (const v of sim.vms) { const reason = sim.notRunningReason(v.id); if (reason !== null) notRunning.push({ vm: v.id, reason }) }
  return { violations: sim.violations.map(v => `${v.kind} @${v.tick}: ${v.text}`), live, ticksToLive, stats: sim.stats, failed, vms: sim.vms.length, notRunning, maxVipOverlap: sim.maxVipOverlap }
}

