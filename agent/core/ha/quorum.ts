/**
 * Quorum from the local view. The member list is configuration that the members agree on (like
 * the rules), so "a majority" is floor(n / 2) + 1 of the configured members, tie-breakers
 * included, whatever the membership view currently knows. Departed members still count in n:
 * shrinking n on a failure would let both sides of a partition call themselves a majority.
 *
 * A member is present, for this host, when both hold:
 *  - the membership view says 'alive'. A suspect member counts as absent, as VIP fencing does:
 *    suspicion means a probe went unanswered, so the path may already be cut, and fencing must
 *    err towards stopping early (a spurious fence costs a restart; a late one costs a split brain).
 *  - its lease is fresh: it has echoed a heartbeat that this host sent at most leaseTicks ago. The
 *    view alone is not enough: with a one-way cut (we hear them, they do not hear us) gossip can
 *    keep them 'alive' here while they declare us dead. An echo proves a round trip, and the
 *    timing argument in index.ts needs exactly that: "a majority heard a frame we sent recently".
 * Self is always present.
 */
import { majority } from '../claims/index.js'
import type { HostId, MemberState } from '../types.js'

/** Size of a majority of n configured members (the claim module's, ../claims/grant.ts). */
export { majority }

/** Per-member lease bookkeeping, in this host's ticks. */
export class LeaseTable {
  /** Highest tick of ours that each member has echoed (our send time, so delays only shorten it). */
  private readonly echoed = new Map<HostId, number>()
  /** Tick we last received any HA frame from each member (grantors measure silence with it). */
  private readonly heard = new Map<HostId, number>()
  /** Highest send tick of theirs we have seen, per member, with the life it came from: echoed back. */
  private readonly theirs = new Map<HostId, { life: number, sent: number }>()

  /**
   * life: this agent's incarnation (it grows with every start). Ticks restart at 0 with each
   * life, so an echo is only believed if it names the current life: an echo of a beat sent by
   * a previous life would otherwise look fresh (or from the future).
   */
  constructor (startTick: number, members: readonly HostId[], readonly life: number) {
    // A (re)started agent does not know when it last heard anyone: it assumes "just now", which
    // only makes it wait longer before granting a takeover.
    for (const m of members) this.heard.set(m, startTick)
  }

  onFrame (from: HostId, now: number): void { this.heard.set(from, now) }

  onBeat (from: HostId, now: number, life: number, sent: number, echo: { life: number, sent: number } | null): void {
    this.heard.set(from, now)
    const t = this.theirs.get(from)
    if (t === undefined || life > t.life || (life === t.life && sent > t.sent)) this.theirs.set(from, { life, sent })
    if (echo !== null && echo.life === this.life && echo.sent <= now && echo.sent > (this.echoed.get(from) ?? -Infinity)) this.echoed.set(from, echo.sent)
  }

  echoFor (member: HostId): { life: number, sent: number } | null { const t = this.theirs.get(member); return t === undefined ? null : { ...t } }
  heardAt (member: HostId): number { return this.heard.get(member) ?? -Infinity }
  fresh (member: HostId, now: number, leaseTicks: number): boolean {
    return now - (this.echoed.get(member) ?? -Infinity) <= leaseTicks
  }
}

export interface QuorumInput {
  self: HostId
  /** Every configured member, self and tie-breakers included. */
  members: readonly HostId[]
  /** Membership view: state of each member as this host sees it (missing = not known alive). */
  state: (id: HostId) => MemberState | undefined
  /** Lease check: has the member echoed a recent beat of ours? */
  fresh: (id: HostId) => boolean
}

export interface QuorumView {
  size: number
  needed: number
  present: HostId[]
  quorate: boolean
}

/** Pure: who is present and whether they form a majority of the configured members. */
export function evaluateQuorum (q: QuorumInput): QuorumView {
  const present: HostId[] = []
  for (const m of q.members) {
    if (m === q.self || (q.state(m) === 'alive' && q.fresh(m))) present.push(m)
  }
  const needed = majority(q.members.length)
  return { size: q.members.length, needed, present, quorate: present.length >= needed }
}
