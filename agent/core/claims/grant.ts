/**
 * The grant rule: when an acceptor grants a claim. Pure; the VIP and HA modules each feed it
 * their own terms (which hosts may be taken over, what else must be free) and act on its verdict.
 */
import type { HostId } from '../types.js'

/** Size of a majority of n configured members: a claim needs that many grants. */
export function majority (n: number): number { return Math.floor(n / 2) + 1 }

/**
 * Is a claim that may still run (the standing claim, or one an acceptor keeps below it) out of
 * `claimant`'s way? Yes when there is none, when its holder released it, when it is the
 * claimant's own, or when its host may be taken over (`mayTakeOver`: dead long enough, and
 * whatever else the module requires of a takeover).
 */
export function freeFor (claim: { host: HostId } | null, released: boolean, claimant: HostId, mayTakeOver: (host: HostId) => boolean): boolean {
  return claim === null || released || claim.host === claimant || mayTakeOver(claim.host)
}

export interface GrantCase {
  /** compare(request, standing claim): 1 when nothing stands (ClaimOrder.versus). */
  order: -1 | 0 | 1
  /** The standing claim was released by its holder (meaningless when nothing stands). */
  released: boolean
  /** This acceptor grants anything at all now (HA: it sees a majority and is armed; VIP: always). */
  able: boolean
  /** Nothing this acceptor knows of stands in the claimant's way (freeFor, plus the module's own terms). */
  free: boolean
}

/**
 * What an acceptor does with a claim request:
 *   'regrant'  the request is the standing claim, not released: its grant was lost, send it again
 *              (whether or not the acceptor is able: it promised nothing new);
 *   'spent'    the request is the standing claim, released since: never granted again;
 *   'refuse'   the request is below the standing claim;
 *   'unable'   above it, but this acceptor grants nothing now: no answer;
 *   'grant'    above it and free: record it as the standing claim (durably, before the grant is sent);
 *   'blocked'  above it, but something stands in the way.
 * Two claims can both be granted by a majority only if some acceptor granted the lower one and
 * later found it free (majorities intersect): that is the argument both modules make for S1 / S5.
 */
export type GrantVerdict = 'regrant' | 'spent' | 'refuse' | 'unable' | 'grant' | 'blocked'

export function grantVerdict (c: GrantCase): GrantVerdict {
  if (c.order === 0) return c.released ? 'spent' : 'regrant'
  if (c.order < 0) return 'refuse'
  if (!c.able) return 'unable'
  return c.free ? 'grant' : 'blocked'
}

/** A claimant acts on its claim only with a majority of grants while it sees a majority itself (S4). */
export function wonClaim (grants: number, members: number, quorate: boolean): boolean {
  return grants >= majority(members) && quorate
}
