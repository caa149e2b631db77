/**
 * Retry, time-out and back-off of a claim, in ticks. A claimant resends its request to the
 * members that have not granted it every claimRetryTicks, gives the claim up after
 * claimTimeoutTicks without a majority (releasing it, so its grantors are freed), and waits a
 * seeded back-off before it claims again, so that two losers of a race do not collide again.
 */
import type { Prng } from '../prng.js'

/** The timing every claimant runs on (VipConfig and HaConfig both carry these fields). */
export interface ClaimTiming {
  /** Ticks between two sends of a pending request (or of a release waiting for an answer). */
  claimRetryTicks: number
  /** Ticks a claim may wait for a majority of grants before it is given up. > claimRetryTicks. */
  claimTimeoutTicks: number
  /** Base back-off after a claim given up (or a failed start or add): base + a seeded 0..base. */
  claimBackoffTicks: number
}

/** A claim made at `since`, last sent at `lastSend`, at tick `now`: give it up, send it again, or wait. */
export function claimDue (t: ClaimTiming, now: number, since: number, lastSend: number): 'give-up' | 'resend' | 'wait' {
  if (now - since >= t.claimTimeoutTicks) return 'give-up'
  return retryDue(t, now, lastSend) ? 'resend' : 'wait'
}

/** A pending frame last sent at `lastSend` is due again. */
export function retryDue (t: ClaimTiming, now: number, lastSend: number): boolean {
  return now - lastSend >= t.claimRetryTicks
}

/** Ticks to wait before claiming again: claimBackoffTicks plus a seeded 0..claimBackoffTicks (one draw). */
export function backoffTicks (t: ClaimTiming, prng: Prng): number {
  return t.claimBackoffTicks + prng.int(t.claimBackoffTicks + 1)
}
