/**
 * Lifeguard local health (memberlist awareness.go): a score in [0, max - 1] that rises when this
 * host misses its own deadlines (failed probes without the nacks that would prove the peers
 * working, refuting a suspicion of itself) and falls on every successful probe. Probe intervals
 * and timeouts are multiplied by score + 1, so a starved host slows down rather than accuse others.
 */
export class Awareness {
  private score = 0
  constructor (readonly max: number) {}

  /** Add delta (may be negative), clamped to [0, max - 1]. Returns the new score. */
  applyDelta (delta: number): number {
    this.score = Math.min(this.max - 1, Math.max(0, this.score + delta))
    return this.score
  }

  get healthScore (): number { return this.score }

  /** Scale a number of ticks by the current health. */
  scale (ticks: number): number { return ticks * (this.score + 1) }
}

/** Awareness change after a probe (memberlist probeNode): -1 on success; on failure, +1 per
 *  missing nack when nacks were expected, else +1. */
export function probeAwarenessDelta (acked: boolean, expectedNacks: number, nacks: number): number {
  if (acked) return -1
  if (expectedNacks > 0) return Math.max(0, expectedNacks - nacks)
  return 1
}
