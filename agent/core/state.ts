/**
 * The core's shared state and its outbox. Every module reads and changes the core through this
 * object; every effect goes through it, so the order rule holds in one place: persist ops and
 * sends of one Ready are handed out together and the runtime applies persist first.
 */
import type { CoreConfig } from './config.js'
import type { CoreEvent, Ready } from './effects.js'
import { emptyReady } from './effects.js'
import { PROTOCOL_CUR, PROTOCOL_MAX, PROTOCOL_MIN } from './messages.js'
import type { Body, Gossip } from './messages.js'
import type { Prng } from './prng.js'
import type { HostId, MemberState } from './types.js'
import { Awareness } from './membership/awareness.js'
import { BroadcastQueue, retransmitLimit } from './membership/broadcast-queue.js'
import { MemberTable } from './membership/member-state.js'
import { ActiveView } from './membership/active-view.js'
import type { Member } from './membership/member-state.js'
import type { Suspicion } from './membership/suspicion.js'
import { envelopeBytes, gossipBytes } from './wire-size.js'

/** Monotonic counters exposed by status(); the runtime exports them as metrics. */
export interface CoreCounters {
  framesReceived: number
  /** Frames the edge rejected (frameRejected input) or the core dropped (protocol range, misdirected). */
  framesRejected: number
  framesSent: number
  /** Estimated bytes of frames sent. */
  bytesSent: number
  probes: number
  /** Out-of-turn probes after the transport lost a connection (a hint, not an accusation). */
  hintProbes: number
  /** Out-of-turn probes of a member another member suspects (Prober.confirmProbe). */
  confirmProbes: number
  probesAcked: number
  /** Direct acks that came after their probe's deadline (still measured as round trips). */
  acksLate: number
  indirectProbes: number
  nacksReceived: number
  suspicions: number
  confirmations: number
  deathsDeclared: number
  refutations: number
  /** Broadcasts dropped because the queue was full (mirrors the queue's own count). */
  queueDrops: number
  /** Reports pushed beyond one frame and dropped. */
  reportDrops: number
  reportsMade: number
  reportsAccepted: number
  reportPulls: number
  pushPulls: number
  /** Records left out of push-pull replies: the requester's table already held them as ours did. */
  pushPullRecordsSkipped: number
  joins: number
  deathNotices: number
}

export function zeroCounters (): CoreCounters {
  return {
    framesReceived: 0, framesRejected: 0, framesSent: 0, bytesSent: 0, probes: 0, hintProbes: 0, confirmProbes: 0, probesAcked: 0, acksLate: 0,
    indirectProbes: 0, nacksReceived: 0, suspicions: 0, confirmations: 0, deathsDeclared: 0,
    refutations: 0, queueDrops: 0, reportDrops: 0, reportsMade: 0, reportsAccepted: 0, reportPulls: 0,
    pushPulls: 0, pushPullRecordsSkipped: 0, joins: 0, deathNotices: 0
  }
}

export class CoreState {
  now = 0
  incarnation: number
  lamport = 0
  leaving = false
  readonly members: MemberTable
  readonly queue: BroadcastQueue
  readonly awareness: Awareness
  /** The bounded set of peers routine traffic goes to (membership/active-view.ts). */
  readonly view: ActiveView
  /**
   * Members the transport reports a connection to (peerConnected / peerDisconnected inputs), and
   * whether it reports them at all (the simulator does not: then every member counts as connected).
   */
  readonly connected = new Set<HostId>()
  tracksConnections = false
  readonly suspicions = new Map<HostId, Suspicion>()
  readonly counters = zeroCounters()
  /** Members changed since the last snapshot flush. */
  readonly dirty = new Set<HostId>()
  pending: Ready = emptyReady()
  /** Hash of the rule set in force here, gossiped in load reports ('' = none configured). */
  rulesHash = ''
  /** Version of the replicated cluster configuration this host acts on (0: none kept). */
  cfgVersion = 0
  /** The configuration version each member's last stream frame carried (0: an older build). */
  readonly peerCfg = new Map<HostId, number>()
  /** Do two configuration versions name the same members (cluster-config/config-log.ts, membershipOf)? Without a kept configuration only a version matches itself. */
  sameMembers: (a: number, b: number) => boolean = (a, b) => a === b
  /**
   * Gossip that rides on a small frame to a member of the active view (the load-report push:
   * load/report-dissemination.ts), so that it needs no frame of its own; null: none.
   */
  rider: ((to: HostId) => Gossip[]) | null = null

  constructor (
    readonly self: HostId,
    readonly name: string,
    readonly addr: string,
    readonly config: CoreConfig,
    readonly prng: Prng,
    incarnation: number
  ) {
    this.incarnation = incarnation
    this.members = new MemberTable(self, ev => this.pending.events.push(ev), m => this.dirty.add(m.id))
    this.queue = new BroadcastQueue(config.broadcastQueueMax)
    this.awareness = new Awareness(config.awarenessMax)
    this.view = new ActiveView(self, config.activeViewSize, this.members)
    this.members.onReachable = (id, hash, reachable) => { if (reachable) this.view.added(id, hash); else this.view.removed(id) }
  }

  get selfMember (): Member { return this.members.get(this.self)! }

  /**
   * May a quorum of this host count `id`? Not when it acts on a newer cluster configuration than
   * ours: a host never counts a member that is ahead of it, which keeps every quorum in use on
   * two adjacent versions (the argument is in cluster-config/config-log.ts). A peer of an older
   * build (0) counts while we still act on the configuration files (version 1).
   */
  /** Members' states for a quorum: an alive member that is not countable reads as suspect (absent). */
  quorumStatesOf (ids: readonly HostId[]): Array<{ id: HostId, state: MemberState }> {
    return this.members.statesOf(ids).map(m => m.state === 'alive' && !this.countable(m.id) ? { id: m.id, state: 'suspect' as const } : m)
  }

  countable (id: HostId): boolean {
    if (id === this.self || this.cfgVersion === 0) return true
    const v = this.peerCfg.get(id) ?? 0
    return v === 0 ? this.cfgVersion <= 1 : v <= this.cfgVersion
  }

  /** n for the formulas: live members, self included, at least 1. */
  get n (): number { return Math.max(1, this.members.liveCount) }

  emit (ev: CoreEvent): void { this.pending.events.push(ev) }

  persist (key: string, value: unknown): void { this.pending.persist.push({ type: 'put', key, value }) }

  /** Queue a membership broadcast, keyed by the member it is about (newer invalidates older). */
  broadcast (node: HostId, g: Gossip): void {
    this.queue.enqueue(node, g, gossipBytes(g))
    this.counters.queueDrops = this.queue.drops
  }

  retransmitLimit (): number { return retransmitLimit(this.config.retransmitMult, this.n) }

  /**
   * Send a frame, piggybacking queued membership broadcasts after `extra`; a small frame (one of
   * RIDES) to a view member also carries what the rider hands it (load reports waiting to be
   * pushed), within the room a frame keeps for them.
   */
  send (to: HostId, body: Body, extra: Gossip[] = [], piggyback = true): void {
    this.lamport++
    if (piggyback && extra.length === 0 && this.rider !== null && rides(body) && this.view.has(to)) extra = this.rider(to)
    const gossip = piggyback && this.queue.size > 0
      ? extra.concat(this.queue.take(this.config.gossipBytesMax, this.retransmitLimit()))
      : extra
    const envelope = {
      protocolMin: PROTOCOL_MIN,
      protocolMax: PROTOCOL_MAX,
      protocolCur: PROTOCOL_CUR,
      from: this.self,
      incarnation: this.incarnation,
      lamport: this.lamport,
      body,
      gossip,
      ...(this.cfgVersion > 0 ? { cfgVersion: this.cfgVersion } : {})
    }
    this.counters.framesSent++
    this.counters.bytesSent += envelopeBytes(envelope)
    this.pending.send.push({ to, envelope })
  }
}

/** Bodies small enough to carry pushed load reports: probes, gossip rounds, configuration announcements. */
function rides (b: Body): boolean {
  switch (b.type) {
    case 'ping': case 'ack': case 'nack': case 'pingReq': case 'gossip': return true
    case 'cfg': return b.op === 'have'
    default: return false
  }
}
