/**
 * Push-pull anti-entropy (memberlist pushPull + mergeState) and joining: every push-pull interval
 * (grown as memberlist's pushPullScale above a threshold) exchange whole member tables with one
 * random peer; a remote Dead is merged as a Suspect, so a wrongly declared host can still refute.
 * Seeds that are not known alive get a small push-pull (our own record only) at start and every
 * joinRetryTicks (JOINED_RETRY_MULT times that, one seed at a time, once joined): their full reply
 * is our join. A frame from a host we hold dead at an incarnation
 * not above ours is answered with its death notice, so it refutes and rejoins after a partition.
 */
import type { MemberRecord, PushPull } from '../messages.js'
import type { CoreState } from '../state.js'
import type { HostId } from '../types.js'
import type { ReportGossip } from '../load/report-dissemination.js'
import { applyAlive, applyLeft, applySuspect, selfRecord } from './gossip-merge.js'

/**
 * Once this host has joined (another member is alive here), seeds not known alive are tried at
 * this multiple of joinRetryTicks, one at a time. Until then the join is what matters and goes at
 * full pace. After it, a seed missing here has either not started (it joins us itself when it
 * does: it tries its own seeds), is dead (the attempt is wasted), or is on the other side of a
 * split that formed two clusters, which these attempts still heal, 30 s apart at the defaults.
 * At full pace, every host of a cluster started at once dialled three missing seeds every 5 s
 * until all were alive everywhere (60 agents on 2 cores: 400 joins and their full replies per
 * 10 s, most of them to members already on their way in).
 */
export const JOINED_RETRY_MULT = 6

export interface Seed { id: HostId, name: string, addr: string }

/** memberlist pushPullScale: interval * (ceil(log2(n) - log2(threshold)) + 1) above the threshold. */
export function pushPullIntervalFor (intervalTicks: number, threshold: number, n: number): number {
  if (n <= threshold) return intervalTicks
  const mult = Math.ceil(Math.log2(n) - Math.log2(threshold)) + 1
  return intervalTicks * mult
}

export class AntiEntropy {
  private nextPushPullTick: number
  private nextJoinTick = 0
  /** Seeds in the order joins try them (shuffled once), and where the next attempt starts. */
  private readonly joinOrder: Seed[]
  private joinNext = 0
  private readonly lastNotice = new Map<HostId, number>()
  /** seedNotAlive()'s answer and the member table's stateVersion it was computed at. */
  private seedMissing = false
  private seedsChecked = -1

  constructor (private readonly s: CoreState, private readonly seeds: Seed[], private readonly reports: ReportGossip) {
    const c = s.config
    this.nextPushPullTick = s.prng.int(pushPullIntervalFor(c.pushPullIntervalTicks, c.pushPullScaleThreshold, s.n)) + 1
    this.joinOrder = s.prng.shuffle(seeds.filter(x => x.id !== s.self))
  }

  tick (): void {
    const s = this.s
    if (s.leaving) return
    if (s.now >= this.nextJoinTick) {
      const joined = s.members.counts.alive > 1
      this.nextJoinTick = s.now + s.config.joinRetryTicks * (joined ? JOINED_RETRY_MULT : 1)
      this.joinSeeds(joined ? 1 : s.config.joinFanout)
    }
    if (s.now >= this.nextPushPullTick) {
      const c = s.config
      this.nextPushPullTick = s.now + pushPullIntervalFor(c.pushPullIntervalTicks, c.pushPullScaleThreshold, s.n)
      const peer = s.view.random(s.prng, 1)[0]
      if (peer !== undefined) this.sendFull(peer, false)
    }
  }

  /** The earliest tick at which tick() may send: a join retry while a seed is not alive, or the next push-pull. */
  nextDue (): number {
    const s = this.s
    if (s.leaving) return Infinity
    return this.seedNotAlive() ? Math.min(this.nextPushPullTick, this.nextJoinTick) : this.nextPushPullTick
  }

  /** Is some seed other than self not known alive? Recomputed only when a member's state changed. */
  private seedNotAlive (): boolean {
    const s = this.s
    const v = s.members.stateVersion
    if (this.seedsChecked !== v) {
      this.seedsChecked = v
      this.seedMissing = this.seeds.some(seed => seed.id !== s.self && s.members.get(seed.id)?.state !== 'alive')
    }
    return this.seedMissing
  }

  /** A small push-pull to the next `fanout` seeds (in the shuffled order) not known alive. */
  private joinSeeds (fanout: number): void {
    const s = this.s
    const order = this.joinOrder
    let sent = 0
    for (let i = 0; i < order.length && sent < fanout; i++) {
      const seed = order[this.joinNext]!
      this.joinNext = (this.joinNext + 1) % order.length
      const m = s.members.get(seed.id)
      if (m !== undefined && m.state === 'alive') continue
      sent++
      s.counters.joins++
      s.send(seed.id, { type: 'pushPull', reply: false, members: [selfRecord(s)], reports: this.ownReport() })
    }
  }

  /** The transport connected to a peer: exchange tables if we do not hold it alive. */
  onPeerConnected (peer: HostId): void {
    const m = this.s.members.get(peer)
    if (m === undefined || m.state !== 'alive') this.sendFull(peer, false)
  }

  private ownReport (): PushPull['reports'] {
    const r = this.s.selfMember.report
    return r === null ? [] : [r]
  }

  /**
   * Our table to `peer`: whole in a request; in a reply to a request whose table we merged
   * (`theirs`), without the records it already holds as we do (same incarnation, state, name and
   * address). The request carried the requester's whole table, so the records left out are
   * exactly those it has: it still ends with both tables merged, and a reply between members that
   * agree (most periodic push-pulls) carries little more than our own record.
   */
  private sendFull (peer: HostId, reply: boolean, theirs: ReadonlyMap<HostId, MemberRecord> | null = null): void {
    const s = this.s
    const members: MemberRecord[] = []
    for (const m of s.members.byId.values()) {
      if (m.id === s.self) { members.push(selfRecord(s)); continue }
      const t = theirs?.get(m.id)
      if (t !== undefined && t.incarnation === m.incarnation && t.state === m.state && t.name === m.name && t.addr === m.addr) {
        s.counters.pushPullRecordsSkipped++
        continue
      }
      members.push({ id: m.id, name: m.name, addr: m.addr, incarnation: m.incarnation, state: m.state })
    }
    s.counters.pushPulls++
    s.send(peer, { type: 'pushPull', reply, members, reports: this.ownReport() }, [], false)
  }

  /** Merge a table (unless its sender is held dead: it must refute first) and answer a request. */
  onPushPull (from: HostId, b: PushPull, senderHeldDead: boolean): void {
    if (!senderHeldDead) {
      for (const r of b.members) this.merge(from, r)
      for (const r of b.reports) this.reports.accept(r, null)
    }
    if (b.reply) return
    // A table we did not merge (its sender must refute first) gets ours whole.
    this.sendFull(from, true, senderHeldDead ? null : new Map(b.members.map(r => [r.id, r])))
  }

  private merge (from: HostId, r: MemberRecord): void {
    switch (r.state) {
      case 'alive': applyAlive(this.s, r); break
      case 'suspect': case 'dead': {
        const known = this.s.members.get(r.id)
        if (known === undefined) applyAlive(this.s, { ...r, state: 'alive' })
        else applySuspect(this.s, r.id, r.incarnation, from)
        break
      }
      case 'left': {
        const known = this.s.members.get(r.id)
        if (known !== undefined) applyLeft(this.s, r.id, r.incarnation)
        break
      }
    }
  }

  /**
   * Every frame's sender and incarnation: a higher incarnation than known proves the sender alive;
   * a sender we hold dead at an incarnation not below its own gets its death notice (rate-limited).
   * Returns true when the sender is still held dead or left: its claims (piggybacked gossip, its
   * table) are stale partition news and are not merged until it refutes.
   */
  witness (from: HostId, incarnation: number): boolean {
    const s = this.s
    const m = s.members.get(from)
    if (m === undefined || from === s.self) return false
    if (incarnation > m.incarnation && m.state !== 'left') {
      applyAlive(s, { id: m.id, name: m.name, addr: m.addr, incarnation, state: 'alive' })
      return false
    }
    if (m.state !== 'dead' && m.state !== 'left') return false
    const last = this.lastNotice.get(from)
    if (last !== undefined && s.now - last < s.config.deathNoticeIntervalTicks) return true
    this.lastNotice.set(from, s.now)
    s.counters.deathNotices++
    const notice = m.state === 'dead'
      ? { type: 'dead' as const, node: from, incarnation: m.incarnation, from: s.self }
      : { type: 'left' as const, node: from, incarnation: m.incarnation }
    s.send(from, { type: 'gossip' }, [notice], false)
    return true
  }
}
