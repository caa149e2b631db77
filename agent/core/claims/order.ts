/**
 * The order of claims. A claim names its host and a rank: the Lamport time of a VIP claim, the
 * epoch of an HA claim. Claims are totally ordered by rank, then by host id, so two hosts never
 * make equal claims and every acceptor ranks any two claims the same way.
 */
import type { HostId } from '../types.js'

export interface ClaimOrder<C extends { host: HostId }> {
  /** -1, 0 or 1: by rank, then by host id. 0 only for the same claim. */
  compare: (a: C, b: C) => -1 | 0 | 1
  /**
   * `a` is the claim `b` (same rank, same host; other fields, such as an HA claim's attempts, are
   * not part of its name). `b` may be null, "no claim", which is never the same as a claim. The
   * first argument is a claim: asking whether no claim is the same as no claim is not allowed,
   * because at every call site it would be a question about nothing (the VIP and HA copies of
   * this predicate answered it differently).
   */
  same: (a: C, b: C | null) => boolean
  /** Where a request stands against the standing claim: compare(request, standing), 1 when nothing stands. */
  versus: (request: C, standing: C | null) => -1 | 0 | 1
}

/** The order of claims whose rank is `rank(c)` (an integer). */
export function claimOrder<C extends { host: HostId }> (rank: (c: C) => number): ClaimOrder<C> {
  const compare = (a: C, b: C): -1 | 0 | 1 => {
    const ra = rank(a)
    const rb = rank(b)
    if (ra !== rb) return ra < rb ? -1 : 1
    if (a.host === b.host) return 0
    return a.host < b.host ? -1 : 1
  }
  return {
    compare,
    same: (a, b) => b !== null && rank(a) === rank(b) && a.host === b.host,
    versus: (request, standing) => standing === null ? 1 : compare(request, standing)
  }
}
