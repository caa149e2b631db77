/**
 * The runtime loop: wall time becomes ticks, edge events become queued inputs, and the core's
 * effects are applied in order — persist (one atomic batch, awaited) before any send.
 *
 * External events never call the core directly: they are queued and fed on the loop, so the core
 * sees one input at a time and the work per turn is bounded (inputsPerTurnMax).
 *
 * The loop does not wake every tick. After each turn it asks the core for the next tick at which
 * anything is due (AgentCore.nextDueTick) and sleeps until then, or until an input arrives. On
 * waking it first hands the core every tick the wall clock has passed, in order, then the inputs:
 * the core sees the same sequence as with a wake-up per tick, so it stays deterministic, and an
 * idle agent wakes a few times a second instead of ten (bench/mesh.md).
 *
 * One exception: probe answers (SWIM acks and nacks) already queued go to the core before the
 * ticks. They arrived while the loop was late (a busy host, a GC pause); replayed first, the ticks
 * would run the probes' deadlines before the answers were looked at, and this host's own slowness
 * would make it suspect members that had answered in time (Lifeguard's point). An answer only
 * settles a probe; everything else keeps its order.
 */
import type { ReplicaExecutor } from './replica-setup.js'
import type { AgentCore, CoreEvent, Envelope, HostId, HostSample, Input, Ready, SplitEffect } from '../core/index.js'
import type { Transport } from '../ports/transport.js'
import type { Store } from '../ports/store.js'
import type { Logger } from '../ports/logger.js'
import type { DriverExecutor, HaDriverExecutor } from './driver-commands.js'
import type { VipEffectSink } from './vip-applier.js'

export interface RuntimeInit {
  /** Wall milliseconds per core tick. */
  tickMs: number
  /** Wall milliseconds between host samples. */
  sampleIntervalMs: number
  /** Inputs fed to the core per loop turn; the rest waits for the next turn. @default 2000 */
  inputsPerTurnMax?: number
  /** Queued inputs beyond this are dropped and counted (a flood from a peer). @default 20000 */
  inputQueueMax?: number
  /** Ticks replayed at most after a stall past the planned wake-up (a GC pause, a slow disk); older ones are skipped. @default 10 */
  ticksCatchUpMax?: number
  /** Longest sleep between two turns when nothing is due, in ticks (a backstop). @default 50 */
  sleepTicksMax?: number
  /**
   * Send SWIM probe frames (ping, ack, nack, ping-req) as datagrams when the transport can and
   * they fit (Transport.sendDatagram): no retransmission and no acknowledgement packet. @default false
   */
  probeDatagrams?: boolean
}

export interface WireCodec {
  /** Throws when the wire cannot carry `env` (a field past its limit): the runtime drops that frame. */
  encode: (env: Envelope) => Uint8Array
  /** Never throws; rejects a frame whose sender is not `from` (the authenticated connection key). */
  decode: (frame: Uint8Array, from: HostId) => { ok: true, envelope: Envelope } | { ok: false, reason: string }
}

export interface RuntimeComponents {
  core: AgentCore
  transport: Transport
  store: Store
  codec: WireCodec
  /** Takes one sample of the host and its VMs. May be slow; failures are logged and counted. */
  sample: (signal: AbortSignal) => Promise<HostSample>
  logger: Logger
  /** Carries out driver commands (never throws); without it every command fails as unsupported. */
  driver?: DriverExecutor
  /** Carries out VIP address effects (Ready.vip) and reports them back; required when VIPs are configured. */
  vip?: VipEffectSink
  /** Carries out HA commands (Ready.ha; never throws); without it every one fails as unsupported. */
  ha?: HaDriverExecutor
  /** Carries out replica commands (Ready.replica; never throws); without it every one fails as unsupported. */
  replica?: ReplicaExecutor
  /** Applies connection splits (Ready.split), in order; without it splits are logged and dropped. */
  split?: (effects: SplitEffect[]) => void
  /** Sees every core event after it is logged (the agent applies configuration versions with it). */
  onEvent?: (ev: CoreEvent) => void
  /**
   * Test hook: exit at once (as kill -9 would) right after persisting a migration record of this
   * role and state, before its sends and driver commands ("source:copying").
   */
  exitAtStep?: string
}

export interface RuntimeStatus {
  ticks: number
  ticksSkipped: number
  /** Probe answers handed to the core before the ticks of their turn (they arrived while the loop was late). */
  probeAnswersFirst: number
  /** Times the loop woke up for a due tick (not for an input). */
  tickWakeups: number
  inputsDropped: number
  framesRejected: number
  framesSent: number
  framesSendFailed: number
  bytesSent: number
  bytesReceived: number
  samplesFailed: number
  persistBatches: number
  lastTurnMs: number
}

export class Runtime {
  private readonly queue: Input[] = []
  private readonly ac = new AbortController()
  private wakeTimer: NodeJS.Timeout | null = null
  /** When the armed wakeTimer fires (performance.now() time), ms. */
  private wakeAt = NaN
  private sampleTimer: NodeJS.Timeout | null = null
  private running = false
  private turning = false
  /** Wall time (performance.now()) of tick 0; moves forward by the ticks skipped after a stall. */
  private clockStart = 0
  /** Ticks handed to the core so far. */
  private ticksRun = 0
  /** The tick the loop last planned to wake at: ticks up to it are a sleep, not a stall. */
  private plannedWakeTick = 0
  private sampling = false
  private stopped: Promise<void> | null = null
  private readonly log: Logger
  readonly stats: RuntimeStatus = {
    ticks: 0, ticksSkipped: 0, probeAnswersFirst: 0, tickWakeups: 0, inputsDropped: 0, framesRejected: 0, framesSent: 0, framesSendFailed: 0,
    bytesSent: 0, bytesReceived: 0, samplesFailed: 0, persistBatches: 0, lastTurnMs: 0
  }

  private readonly inputsPerTurnMax: number
  private readonly inputQueueMax: number
  private readonly ticksCatchUpMax: number
  private readonly sleepTicksMax: number
  /** The active view's version last handed to the transport (setActivePeers). */
  private viewVersion = -1
  /** Driver commands run one at a time, in the order the core issued them, off the loop. */
  private driverChain: Promise<void> = Promise.resolve()

  constructor (private readonly init: RuntimeInit, private readonly c: RuntimeComponents) {
    this.log = c.logger.forComponent('agent:runtime')
    this.inputsPerTurnMax = init.inputsPerTurnMax ?? 2000
    this.inputQueueMax = init.inputQueueMax ?? 20000
    this.ticksCatchUpMax = init.ticksCatchUpMax ?? 10
    this.sleepTicksMax = init.sleepTicksMax ?? 50
  }

  /** Queue an input for the core. Never throws; drops and counts beyond the queue bound. */
  enqueue (input: Input): void {
    if (this.queue.length >= this.inputQueueMax) {
      this.stats.inputsDropped++
      if (this.stats.inputsDropped % 1000 === 1) this.log.warn('input queue full, dropping', { dropped: this.stats.inputsDropped })
      return
    }
    this.queue.push(input)
    this.kick()
  }

  async start (): Promise<void> {
    if (this.running) return
    this.running = true
    await this.c.transport.start({
      onFrame: (from, frame) => this.onFrame(from, frame),
      onPeerConnected: peer => this.enqueue({ type: 'peerConnected', peer }),
      onPeerDisconnected: peer => this.enqueue({ type: 'peerDisconnected', peer }),
      onRejected: (remote, reason) => {
        this.stats.framesRejected++
        this.enqueue({ type: 'frameRejected', from: remote, reason })
      }
    })
    this.clockStart = performance.now()
    this.scheduleWake()
    this.sampleTimer = setInterval(() => { void this.takeSample() }, this.init.sampleIntervalMs)
    void this.takeSample()
  }

  private onFrame (from: HostId, frame: Uint8Array): void {
    this.stats.bytesReceived += frame.byteLength
    const r = this.c.codec.decode(frame, from)
    if (!r.ok) {
      this.stats.framesRejected++
      this.enqueue({ type: 'frameRejected', from, reason: r.reason })
      return
    }
    this.enqueue({ type: 'receive', from, envelope: r.envelope })
  }

  private async takeSample (): Promise<void> {
    if (this.sampling || !this.running) return
    this.sampling = true
    try {
      const sample = await this.c.sample(this.ac.signal)
      if (this.running) this.enqueue({ type: 'hostSample', sample })
    } catch (err) {
      this.stats.samplesFailed++
      if (this.running) this.log.warn('host sample failed', { err })
    } finally {
      this.sampling = false
    }
  }

  private kick (): void {
    if (this.turning || !this.running) return
    this.turning = true
    setImmediate(() => { void this.turn() })
  }

  /** Ticks the wall clock has passed that the core has not had yet. */
  private ticksBehind (): number {
    return Math.floor((performance.now() - this.clockStart) / this.init.tickMs) - this.ticksRun
  }

  /** Sleep until the core's next due tick (at most sleepTicksMax ahead); an input wakes us sooner. */
  private scheduleWake (): void {
    if (!this.running) {
      if (this.wakeTimer !== null) clearTimeout(this.wakeTimer)
      this.wakeTimer = null
      return
    }
    const core = this.c.core
    const ahead = Math.max(1, Math.min(core.nextDueTick() - core.now, this.sleepTicksMax))
    this.plannedWakeTick = this.ticksRun + ahead
    const at = this.clockStart + this.plannedWakeTick * this.init.tickMs
    // Most turns (a frame in, its answer out) leave the next due tick where it was: keep the armed
    // timer rather than re-creating it.
    if (this.wakeTimer !== null && at === this.wakeAt) return
    if (this.wakeTimer !== null) clearTimeout(this.wakeTimer)
    this.wakeAt = at
    this.wakeTimer = setTimeout(() => { this.wakeTimer = null; this.stats.tickWakeups++; this.kick() }, Math.max(0, Math.ceil(at - performance.now())))
  }

  /** One loop turn: the ticks the clock has passed, then inputs, then effects. Re-arms itself while work remains. */
  private async turn (): Promise<void> {
    const t0 = performance.now()
    try {
      if (this.queue.length > 0) this.stepProbeAnswers()
      let behind = this.ticksBehind()
      // A stall (a GC pause, a slow disk, a stopped process) is time past the planned wake-up.
      const allowed = Math.max(0, this.plannedWakeTick - this.ticksRun) + this.ticksCatchUpMax
      if (behind > allowed) {
        const skip = behind - allowed
        this.stats.ticksSkipped += skip
        this.clockStart += skip * this.init.tickMs
        behind = allowed
        // The core's tick count now lags the wall clock by `skip`: it learns how much time
        // passed in one input (HA's timers measure real time), before the replayed ticks.
        this.c.core.step({ type: 'ticksSkipped', ticks: skip })
      }
      for (; behind > 0; behind--) { this.ticksRun++; this.stats.ticks++; this.c.core.tick() }
      const n = Math.min(this.queue.length, this.inputsPerTurnMax)
      for (const input of this.queue.splice(0, n)) this.c.core.step(input)
      let rd = this.c.core.ready()
      while (rd !== null) {
        await this.apply(rd)
        this.c.core.advance(rd)
        rd = this.c.core.ready()
      }
      this.syncActiveView()
    } catch (err) {
      // A thrown error here is a programmer error (a failed assertion in the core, or a store
      // that cannot persist): crash on purpose, systemd restarts us and we recover from the store.
      this.log.error('runtime loop failed; exiting for a clean restart', { err })
      process.exitCode = 70
      setImmediate(() => { throw err })
      return
    } finally {
      this.stats.lastTurnMs = performance.now() - t0
      this.turning = false
    }
    if (!this.running) return
    if (this.queue.length > 0 || this.ticksBehind() > 0) this.kick()
    else this.scheduleWake()
  }

  /** Steps the queued acks and nacks (see the head comment), leaving the other inputs queued in order. */
  private stepProbeAnswers (): void {
    let kept = 0
    for (let i = 0; i < this.queue.length; i++) {
      const input = this.queue[i]!
      const t = input.type === 'receive' ? input.envelope.body.type : null
      if (t === 'ack' || t === 'nack') {
        this.c.core.step(input)
        this.stats.probeAnswersFirst++
      } else {
        this.queue[kept++] = input
      }
    }
    this.queue.length = kept
  }

  /** Hands the core's active view to the transport when it changed (the core decides, the transport connects). */
  private syncActiveView (): void {
    const t = this.c.transport
    if (t.setActivePeers === undefined) return
    const v = this.c.core.activeViewVersion()
    if (v === this.viewVersion) return
    this.viewVersion = v
    t.setActivePeers(this.c.core.activeView().peers)
  }

  /** Persist before send: a claim that is gossiped is never forgotten by a crash. */
  private async apply (rd: Ready): Promise<void> {
    if (rd.persist.length > 0) {
      await this.c.store.batch(rd.persist)
      this.stats.persistBatches++
      if (this.c.exitAtStep !== undefined) this.maybeExit(rd)
    }
    for (const out of rd.send) {
      let frame: Uint8Array
      try {
        frame = this.c.codec.encode(out.envelope)
      } catch (err) {
        // A message the wire cannot carry (a field past its limit) is dropped, not fatal: its
        // peer sees no answer and the protocol's timeouts resolve it; a crash would repeat at
        // every restart.
        this.stats.framesSendFailed++
        this.log.error(`cannot send ${out.envelope.body.type}: ${err instanceof Error ? err.message : String(err)}`, { to: out.to.slice(0, 8) })
        continue
      }
      const t = out.envelope.body.type
      const dgram = this.init.probeDatagrams === true && (t === 'ping' || t === 'ack' || t === 'nack' || t === 'pingReq') &&
        this.c.transport.sendDatagram?.(out.to, frame) === true
      if (dgram) {
        this.stats.framesSent++
        this.stats.bytesSent += frame.byteLength
      } else if (this.c.transport.send(out.to, frame)) {
        this.stats.framesSent++
        this.stats.bytesSent += frame.byteLength
      } else {
        this.stats.framesSendFailed++
      }
    }
    for (const ev of rd.events) {
      if (ev.kind === 'config-removed' || ev.kind === 'config-diverged' || ev.kind === 'config-invalid') this.log.error(ev.text, { kind: ev.kind, host: ev.host.slice(0, 8) })
      else this.log.info(ev.text, { kind: ev.kind, host: ev.host.slice(0, 8) })
      if (this.c.onEvent !== undefined) {
        try { this.c.onEvent(ev) } catch (err) { this.log.error('event handler failed', { kind: ev.kind, err }) }
      }
    }
    for (const cmd of rd.driver) this.driverChain = this.driverChain.then(async () => { await this.runDriver(cmd) })
    for (const cmd of rd.ha) this.driverChain = this.driverChain.then(async () => { await this.runHa(cmd) })
    for (const cmd of rd.replica) this.driverChain = this.driverChain.then(async () => { await this.runReplica(cmd) })
    if (rd.split.length > 0) {
      if (this.c.split !== undefined) this.c.split(rd.split)
      else this.log.warn('connection split asked for, but this agent has no splitter', { split: rd.split })
    }
    if (rd.vip.length > 0) this.c.vip?.apply(rd.vip, input => { if (this.running) this.enqueue(input) })
  }

  private async runDriver (cmd: Ready['driver'][number]): Promise<void> {
    const exec = this.c.driver
    const result = exec === undefined
      ? { ok: false as const, kind: cmd.kind, code: 'DRIVER_FAILED', message: 'no driver executor' }
      : await exec(cmd, this.ac.signal)
    if (!result.ok) this.log.warn(`driver ${cmd.kind} for ${cmd.vm} failed (${result.code})`, { mig: cmd.mig, message: result.message })
    if (this.running) this.enqueue({ type: 'driverResult', command: cmd, result })
  }

  private async runHa (cmd: Ready['ha'][number]): Promise<void> {
    const exec = this.c.ha
    const r = exec === undefined ? { ok: false as const, code: 'DRIVER_FAILED', message: 'no HA executor' } : await exec(cmd, this.ac.signal)
    if (r.ok) this.log.info(`ha ${cmd.kind === 'haStart' ? `start (${cmd.mode})` : `${cmd.mode} (${cmd.reason})`} of ${cmd.vm} done`, { epoch: cmd.epoch })
    else this.log.warn(`ha ${cmd.kind} ${cmd.mode} of ${cmd.vm} failed (${r.code})`, { epoch: cmd.epoch, message: r.message })
    if (this.running) this.enqueue(r.ok ? { type: 'haDriverResult', command: cmd, ok: true } : { type: 'haDriverResult', command: cmd, ok: false, code: r.code })
  }

  private async runReplica (cmd: Ready['replica'][number]): Promise<void> {
    const exec = this.c.replica
    const r = exec === undefined ? { ok: false as const, code: 'DRIVER_FAILED', message: 'no replica executor' } : await exec(cmd, this.ac.signal)
    if (r.ok) this.log.info(`replica ${cmd.kind === 'replicaStart' ? 'start' : 'stop'} of ${cmd.id} done`)
    else this.log.warn(`replica ${cmd.kind === 'replicaStart' ? 'start' : 'stop'} of ${cmd.id} failed (${r.code})`, { message: r.message })
    if (this.running) this.enqueue(r.ok ? { type: 'replicaDriverResult', command: cmd, ok: true } : { type: 'replicaDriverResult', command: cmd, ok: false, code: r.code })
  }

  private maybeExit (rd: Ready): void {
    for (const op of rd.persist) {
      if (op.type !== 'put' || !op.key.startsWith('mig/rec/')) continue
      const r = op.value as { role?: string, state?: string }
      if (`${r.role ?? ''}:${r.state ?? ''}` === this.c.exitAtStep) {
        this.log.warn(`test hook: exiting at ${this.c.exitAtStep}`)
        process.kill(process.pid, 'SIGKILL')
      }
    }
  }

  /** Stop timers, let the core say goodbye (leave), flush it, close the transport. Idempotent. */
  async stop (opts: { leave?: boolean, graceMs?: number } = {}): Promise<void> {
    if (this.stopped !== null) return await this.stopped
    this.stopped = (async () => {
      if (this.wakeTimer !== null) clearTimeout(this.wakeTimer)
      this.wakeTimer = null
      if (this.sampleTimer !== null) clearInterval(this.sampleTimer)
      this.ac.abort()
      while (this.turning) await new Promise(resolve => setTimeout(resolve, 5))
      if (opts.leave === true && this.running) {
        // Hold the loop while the leave is applied: a frame arriving meanwhile (its apply awaits
        // the store) would start a turn that takes a Ready of its own and advances out of order.
        this.turning = true
        try {
          this.c.core.step({ type: 'leave' })
          let rd = this.c.core.ready()
          while (rd !== null) { await this.apply(rd); this.c.core.advance(rd); rd = this.c.core.ready() }
          await this.c.vip?.idle() // addresses removed; their releases go out in the grace period
          await new Promise(resolve => setTimeout(resolve, opts.graceMs ?? 200))
        } catch (err) {
          this.log.warn('leave failed', { err })
        }
      }
      this.running = false
      this.turning = false
      if (this.wakeTimer !== null) clearTimeout(this.wakeTimer) // a turn that ended meanwhile re-armed it
      this.wakeTimer = null
      await this.c.transport.stop()
    })()
    return await this.stopped
  }
}
