/**
 * SWIM failure detection with Lifeguard (memberlist probeNode): every probe interval (scaled by
 * local health) pick the next member of a shuffled round-robin order of the active view
 * (active-view.ts: every member is probed by its own neighbours, so each member is still probed
 * about once per interval whatever the cluster's size) and ping it; without an ack after the
 * probe timeout ask k random peers of the view to ping it for us (PingReq; they connect to the
 * target on demand when it is not their neighbour); a relay that gets no ack
 * in time answers with a Nack; a probe still unanswered at its deadline makes the target suspect.
 * Probes may overlap. A probe of a suspect carries the suspicion so the member can refute at once.
 */
import type { Ack, Gossip, Nack, Ping, PingReq } from '../messages.js'
import type { CoreState } from '../state.js'
import type { HostId } from '../types.js'
import { ProbeRtt, probeAwarenessDelta } from './awareness.js'
import { applySuspect } from './gossip-merge.js'

interface Probe {
  seq: number
  target: HostId
  timeoutTick: number
  deadlineTick: number
  indirectSent: boolean
  expectedNacks: number
  nacks: number
  /** Tick the ping was sent (the round trip of a direct ack). */
  sentTick: number
}

/** The round trips that set the probe multiplier are those of the last this many probe intervals (unscaled: 10 s at the defaults). */
const RTT_WINDOW_PROBES = 20

/** Unanswered probes remembered for a late ack's round trip (the most recent ones). */
const EXPIRED_KEPT = 64

interface Relay { requester: HostId, requesterSeq: number, target: HostId, nackTick: number, expireTick: number, nacked: boolean }

export class Prober {
  private order: HostId[] = []
  private next = 0
  private seq = 0
  private nextProbeTick: number
  private readonly probes = new Map<number, Probe>()
  private readonly relays = new Map<number, Relay>()
  /** View members passed over for having no connection yet, and since when (connectGraceTicks). */
  private readonly waitingSince = new Map<HostId, number>()
  /** Round trips of direct acks, which set the awareness's slowness (awareness.ts). */
  readonly rtt: ProbeRtt
  /** Probes that ended unanswered, kept for a while (EXPIRED_KEPT): an ack after the deadline is still a round trip. */
  private readonly expired = new Map<number, Probe>()

  constructor (private readonly s: CoreState) {
    this.nextProbeTick = s.prng.int(s.config.probeIntervalTicks) + 1
    this.rtt = new ProbeRtt(s.config.probeTimeoutTicks, RTT_WINDOW_PROBES * s.config.probeIntervalTicks)
  }

  get inFlight (): number { return this.probes.size }

  tick (): void {
    const s = this.s
    if (s.now >= this.nextProbeTick && !s.leaving) {
      s.awareness.setSlowness(this.rtt.multiplier(s.now))
      this.nextProbeTick = s.now + s.awareness.scale(s.config.probeIntervalTicks)
      this.startProbe()
    }
    if (this.probes.size > 0) for (const p of [...this.probes.values()]) this.checkProbe(p)
    if (this.relays.size > 0) for (const [seq, r] of [...this.relays]) this.checkRelay(seq, r)
  }

  /**
   * The earliest tick at which tick() may act: the next probe round, an unanswered probe's
   * timeout or deadline, a relay's nack or expiry. Acks arrive as inputs, after which the caller
   * asks again.
   */
  nextDue (): number {
    let due = this.s.leaving || this.s.members.reachableCount === 0 ? Infinity : this.nextProbeTick
    for (const p of this.probes.values()) due = Math.min(due, p.indirectSent ? p.deadlineTick : p.timeoutTick)
    for (const r of this.relays.values()) due = Math.min(due, r.nacked ? r.expireTick : r.nackTick)
    return due
  }

  private pickTarget (): HostId | undefined {
    const s = this.s
    for (let tries = 0; tries < 2; tries++) {
      while (this.next < this.order.length) {
        const id = this.order[this.next++]!
        const m = s.members.get(id)
        if (m === undefined || (m.state !== 'alive' && m.state !== 'suspect') || !s.view.has(id)) continue
        if (this.awaitingConnection(id)) continue
        return id
      }
      this.order = s.prng.shuffle(s.view.peers())
      this.next = 0
    }
    return undefined
  }

  /**
   * A view member the transport has not connected yet (it just entered the view) is passed over
   * in this round, for at most connectGraceTicks: its first ping would wait for the connection and
   * time out into a needless suspicion. After the grace it is probed connected or not, so a member
   * that never connects is still suspected.
   */
  private awaitingConnection (id: HostId): boolean {
    const s = this.s
    if (!s.tracksConnections || s.connected.has(id)) { this.waitingSince.delete(id); return false }
    const since = this.waitingSince.get(id)
    if (since === undefined) {
      if (this.waitingSince.size > 4 * Math.max(8, s.config.activeViewSize)) this.waitingSince.clear()
      this.waitingSince.set(id, s.now)
      return s.config.connectGraceTicks > 0
    }
    if (s.now - since < s.config.connectGraceTicks) return true
    this.waitingSince.delete(id)
    return false
  }

  /**
   * Probe `target` now, out of turn: the transport lost its connection to it. This is only a
   * hint: the probe follows the normal rules (direct, then indirect), so a flapping connection
   * can at most cause one extra probe, never a suspicion of a host that still answers.
   */
  probeNow (target: HostId): void {
    const s = this.s
    const m = s.members.get(target)
    if (s.leaving || target === s.self || m === undefined || (m.state !== 'alive' && m.state !== 'suspect')) return
    for (const p of this.probes.values()) if (p.target === target) return
    s.counters.hintProbes++
    this.startProbe(target)
  }

  /**
   * A suspicion of `target` started here on another member's word: probe it now, out of turn,
   * so that a member that really failed is confirmed by independent probes within one probe
   * deadline, and its suspicion shrinks to the minimum timeout (Lifeguard's confirmations would
   * otherwise wait for the members' round-robin turns, up to n probe intervals). A failed probe
   * confirms the suspicion like any other (applySuspect from this host); a probe that is answered
   * confirms nothing, and carries the suspicion to the member (buddy system) so it refutes at once.
   * Not every member checks: each does with probability min(1, 2k / (n - 2)) (k =
   * suspicionConfirmations), about 2k checks in all, enough for k confirmations when frames are
   * lost, and no burst of n pings at a failed host in a large cluster.
   */
  confirmProbe (target: HostId): void {
    const s = this.s
    const k = s.config.suspicionConfirmations
    if (k < 1 || s.n - 2 < k) return
    if (s.prng.next() >= Math.min(1, (2 * k) / (s.n - 2))) return
    const m = s.members.get(target)
    if (s.leaving || target === s.self || m === undefined || m.state !== 'suspect') return
    for (const p of this.probes.values()) if (p.target === target) return
    s.counters.confirmProbes++
    this.startProbe(target)
  }

  private startProbe (chosen?: HostId): void {
    const s = this.s
    const target = chosen ?? this.pickTarget()
    if (target === undefined) return
    const seq = this.nextSeq()
    this.probes.set(seq, {
      seq,
      target,
      timeoutTick: s.now + s.awareness.scale(s.config.probeTimeoutTicks),
      deadlineTick: s.now + s.awareness.scale(s.config.probeDeadlineTicks),
      indirectSent: false,
      expectedNacks: 0,
      nacks: 0,
      sentTick: s.now
    })
    s.counters.probes++
    s.send(target, { type: 'ping', seq, target }, this.suspicionOf(target))
  }

  /** Lifeguard buddy system: tell a suspect member that it is suspected. */
  private suspicionOf (target: HostId): Gossip[] {
    const m = this.s.members.get(target)
    if (m === undefined || m.state !== 'suspect') return []
    return [{ type: 'suspect', node: target, incarnation: m.incarnation, from: this.s.self }]
  }

  private checkProbe (p: Probe): void {
    const s = this.s
    if (!p.indirectSent && s.now >= p.timeoutTick) {
      p.indirectSent = true
      const relays = s.view.random(s.prng, s.config.indirectChecks, p.target)
      p.expectedNacks = relays.length
      for (const r of relays) {
        s.counters.indirectProbes++
        s.send(r, { type: 'pingReq', seq: p.seq, target: p.target })
      }
    }
    if (s.now < p.deadlineTick) return
    this.probes.delete(p.seq)
    if (this.expired.size >= EXPIRED_KEPT) this.expired.delete(this.expired.keys().next().value!)
    this.expired.set(p.seq, p)
    s.awareness.applyDelta(probeAwarenessDelta(false, p.expectedNacks, p.nacks))
    const m = s.members.get(p.target)
    if (m === undefined || (m.state !== 'alive' && m.state !== 'suspect')) return
    applySuspect(s, p.target, m.incarnation, s.self)
  }

  private checkRelay (seq: number, r: Relay): void {
    const s = this.s
    if (!r.nacked && s.now >= r.nackTick) {
      r.nacked = true
      s.send(r.requester, { type: 'nack', seq: r.requesterSeq, target: r.target })
    }
    if (s.now >= r.expireTick) this.relays.delete(seq)
  }

  private nextSeq (): number {
    this.seq = (this.seq + 1) >>> 0
    if (this.seq === 0) this.seq = 1
    return this.seq
  }

  onPing (from: HostId, b: Ping): boolean {
    if (b.target !== this.s.self || this.s.leaving) return false
    this.s.send(from, { type: 'ack', seq: b.seq, target: this.s.self })
    return true
  }

  onPingReq (from: HostId, b: PingReq): void {
    const s = this.s
    if (b.target === s.self) { s.send(from, { type: 'ack', seq: b.seq, target: s.self }); return }
    const seq = this.nextSeq()
    this.relays.set(seq, {
      requester: from,
      requesterSeq: b.seq,
      target: b.target,
      nackTick: s.now + s.config.nackTimeoutTicks,
      expireTick: s.now + s.config.probeDeadlineTicks,
      nacked: false
    })
    s.send(b.target, { type: 'ping', seq, target: b.target }, this.suspicionOf(b.target))
  }

  /** An ack from `from`: the target itself (a direct ack, whose round trip is measured) or a relay. */
  onAck (from: HostId, b: Ack): void {
    const s = this.s
    const relay = this.relays.get(b.seq)
    if (relay !== undefined && relay.target === b.target) {
      this.relays.delete(b.seq)
      s.send(relay.requester, { type: 'ack', seq: relay.requesterSeq, target: relay.target })
      return
    }
    const p = this.probes.get(b.seq)
    if (p === undefined || p.target !== b.target) {
      const late = this.expired.get(b.seq)
      if (late !== undefined && late.target === b.target && from === b.target) {
        this.expired.delete(b.seq)
        s.counters.acksLate++
        this.measured(s.now - late.sentTick)
      }
      return
    }
    if (from === b.target) this.measured(s.now - p.sentTick)
    this.probes.delete(b.seq)
    s.counters.probesAcked++
    s.awareness.applyDelta(probeAwarenessDelta(true, p.expectedNacks, p.nacks))
  }

  private measured (ticks: number): void {
    this.rtt.sample(this.s.now, ticks)
    this.s.awareness.setSlowness(this.rtt.multiplier(this.s.now))
  }

  onNack (b: Nack): void {
    const p = this.probes.get(b.seq)
    if (p === undefined || p.target !== b.target) return
    p.nacks++
    this.s.counters.nacksReceived++
  }
}
