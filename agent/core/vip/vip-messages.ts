/**
 * Virtual-IP protocol messages (S5: a virtual IP has at most one owner that answers ARP for it).
 *
 * Ownership of a VIP is a sequence of claims. A claim is named by (lamport, host) and claims are
 * totally ordered by that pair: a higher Lamport time wins, the host id breaks ties. A claim
 * becomes ownership only when a majority of the configured members has granted it (see
 * vip-ownership.ts for why Lamport order alone cannot make "my claim won" a fact a host can know).
 *
 * Names say what a message asserts (STYLE §1.6), never what the receiver should do:
 *  - VipClaim   "host H claims VIP V with claim C" (phase 'request'), or "H holds V by C" ('held').
 *  - VipGrant   "member M accepts claim C as V's owner": M will grant no other claim on V while C
 *               stands (until C is released or its host is declared dead by M). It echoes the
 *               claim's renewal time (the lease) and says how long ago M last renewed another
 *               host's claim on V that it does not know released (how long a taker must wait).
 *  - VipRelease "the holder of claim C gives V up", optionally in favour of a named successor.
 *  - VipStanding "member M still counts claim C as standing" (sent to C's host when that stops M
 *               from granting or making a claim): repairs a lost release or 'held' on demand.
 *
 * These are plain data; the wire codec maps them to and from proto/mesh/v1/vip.proto (to be
 * written with the envelope work). Every field is required on the wire; `to` is the empty string
 * there when null here.
 */
import { claimOrder } from '../claims/index.js'
import type { HostId } from '../types.js'

/** Configured name of a virtual IP, unique in the cluster (e.g. "web"). */
export type VipId = string

/** The name of one claim: who claimed, at which Lamport time. */
export interface ClaimRef {
  host: HostId
  lamport: number
}

/**
 * A host claims a VIP.
 * 'request': the host asks members to grant the claim; it does not hold the address yet.
 * 'held': the claim was granted by a majority; the host holds the address. Repeated on a
 * refresh period and when a partition heals, so that members who missed it learn the owner.
 */
export interface VipClaim {
  type: 'vipClaim'
  vip: VipId
  claim: ClaimRef
  phase: 'request' | 'held'
  /** The sender's tick when it sent this frame: a member that grants (or still grants) the claim echoes it (the owner's lease). */
  renew: number
}

/** A member grants a claim (answer to a 'request', sent to the claimant only). */
export interface VipGrant {
  type: 'vipGrant'
  vip: VipId
  claim: ClaimRef
  /** The granting member. */
  from: HostId
  /** The `renew` of the claim frame this answers (0 when none): the claimant's lease counts from it. */
  renew: number
  /**
   * Ticks since this member last granted or renewed a claim of another host on this VIP that it
   * does not know released (0 = just now, the safe value; a restarted member counts from its
   * start). The claimant takes the VIP over only once such an owner's lease must have run out.
   */
  quiet: number
}

/**
 * The holder of `claim` gives the VIP up. `to` names the successor of a planned move (the host
 * the VM moved to, or the operator's target); null when the VIP is simply free.
 * A claimant that gives up an ungranted claim sends it too, so members that granted it are freed.
 */
export interface VipRelease {
  type: 'vipRelease'
  vip: VipId
  claim: ClaimRef
  to: HostId | null
}

/**
 * Member `from` counts `standing` as the VIP's current claim and has refused a claim (or not made
 * one) because of it. Sent to the standing claim's host only. Its host answers with 'held' if it
 * holds the VIP by that claim, with a VipRelease if it has given that claim up (the original
 * release was lost), and not at all while the claim is still in play.
 */
export interface VipStanding {
  type: 'vipStanding'
  vip: VipId
  standing: ClaimRef
  from: HostId
}

export type VipMessage = VipClaim | VipGrant | VipRelease | VipStanding

/** VIP claims ordered by Lamport time, then host id (../claims/order.ts). */
export const vipClaimOrder = claimOrder<ClaimRef>(c => c.lamport)
/** Total order on claims: -1 when a < b, 0 for the same claim, 1 when a > b. */
export const compareClaims = vipClaimOrder.compare
/** `a` is the claim `b`; false when `b` is null (no claim). */
export const sameClaim = vipClaimOrder.same

/** Short text for logs: "h1@42". */
export function claimText (c: ClaimRef | null): string {
  return c === null ? 'none' : `${c.host.slice(0, 8)}@${c.lamport}`
}

/**
 * An operator asked, through some host's API, to move group VIP `vip` to host `to`: "the sender
 * forwards this move to the VIP's owner". Not a VipMessage: it carries no claim, and only the
 * owner acts on it (VipInput operatorMove); any other receiver ignores it.
 */
export interface VipMoveRequested {
  type: 'vipMoveRequested'
  vip: VipId
  to: HostId
}
