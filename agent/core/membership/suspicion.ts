/**
 * Confirmation-shortened suspicion (Lifeguard, memberlist suspicion.go): a suspect is declared dead
 * after a timeout that starts at `max` and shrinks on a log scale towards `min` as independent
 * members confirm the suspicion. min = mult * max(1, log10(n)) * probeInterval; max = maxMult * min.
 * Pure functions of counts and ticks, plus a small record per suspect.
 */
import type { HostId } from '../types.js'

/** Minimum suspicion timeout in ticks for a cluster of n members. */
export function suspicionMinTicks (mult: number, n: number, probeIntervalTicks: number): number {
  const scale = Math.max(1, Math.log10(Math.max(1, n)))
  return Math.max(1, Math.round(mult * scale * probeIntervalTicks))
}

/**
 * Timeout in ticks after `confirmations` independent confirmations, when `expected` (k) shrink it
 * to min: max - (max - min) * log(c + 1) / log(k + 1), never below min.
 */
export function suspicionTimeoutTicks (confirmations: number, expected: number, minTicks: number, maxTicks: number): number {
  if (expected < 1) return minTicks
  const frac = Math.log(confirmations + 1) / Math.log(expected + 1)
  const raw = Math.floor(maxTicks - frac * (maxTicks - minTicks))
  return Math.max(minTicks, raw)
}

/** One running suspicion: who confirmed it and when it fires. */
export class Suspicion {
  private readonly confirmedBy = new Set<HostId>()
  private confirmations = 0
  deadlineTick: number

  constructor (
    readonly node: HostId,
    readonly incarnation: number,
    readonly startTick: number,
    readonly expected: number,
    readonly minTicks: number,
    readonly maxTicks: number,
    from: HostId
  ) {
    this.confirmedBy.add(from)
    this.deadlineTick = startTick + suspicionTimeoutTicks(0, expected, minTicks, maxTicks)
  }

  /** Count a new confirmer; true if it was new (and then the deadline may move earlier). */
  confirm (from: HostId): boolean {
    if (this.confirmations >= this.expected || this.confirmedBy.has(from)) return false
    this.confirmedBy.add(from)
    this.confirmations++
    this.deadlineTick = this.startTick + suspicionTimeoutTicks(this.confirmations, this.expected, this.minTicks, this.maxTicks)
    return true
  }

  get confirmationCount (): number { return this.confirmations }
}
