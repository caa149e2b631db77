/**
 * Lifeguard local health (memberlist awareness.go): a score in [0, max - 1] that rises when this
 * host misses its own deadlines (failed probes without the nacks that would prove the peers
 * working, refuting a suspicion of itself) and falls on every successful probe. Probe intervals
 * and timeouts are multiplied by score + 1, so a starved host slows down rather than accuse others.
 *
 * Beside the score, the round trips this host measures: when its members' direct acks take
 * longer than the probe timeout allows, the multiplier is at least what covers them (ProbeRtt),
 * within the same cap. The score only sees a deadline missed; on a machine where every member is
 * slow (a cluster started at once on few cores) the acks keep coming, seconds late, and without
 * this each late ack was a failed probe, five indirect probes and a suspicion, work that made
 * every member slower still. A dead member sends no ack, so it
 * cannot lengthen the timeouts; on an idle cluster the acks come within a tick or two and the
 * multiplier stays 1.
 */
export class Awareness {
  private score = 0
  /** The multiplier the measured round trips ask for (>= 1; ProbeRtt.multiplier). */
  private slowness = 1
  constructor (readonly max: number) {}

  /** Set the round trips' multiplier (ProbeRtt.multiplier). */
  setSlowness (m: number): void { this.slowness = m >= 1 ? m : 1 }

  /** The multiplier in force: score + 1, or the round trips' if larger, at most max. */
  get multiplier (): number { return Math.min(this.max, Math.max(this.score + 1, this.slowness)) }

  /** Add delta (may be negative), clamped to [0, max - 1]. Returns the new score. */
  applyDelta (delta: number): number {
    this.score = Math.min(this.max - 1, Math.max(0, this.score + delta))
    return this.score
  }

  get healthScore (): number { return this.score }

  /** Scale a number of ticks by the current health (whole ticks, rounded up). */
  scale (ticks: number): number { return Math.ceil(ticks * this.multiplier) }
}

/** Awareness change after a probe (memberlist probeNode): -1 on success; on failure, +1 per
 *  missing nack when nacks were expected, else +1. */
export function probeAwarenessDelta (acked: boolean, expectedNacks: number, nacks: number): number {
  if (acked) return -1
  if (expectedNacks > 0) return Math.max(0, expectedNacks - nacks)
  return 1
}

/**
 * The round trips of direct acks measured over the last `windowTicks`, and the probe multiplier
 * they ask for: (their median + 1 tick) / probeTimeoutTicks, never below 1. A probe's timeout is
 * then above the typical round trip of late, and its deadline (three timeouts at the defaults)
 * three times above it. The median, not the longest: one slow ack (a burst of work at a peer) must
 * not slow the detection of a real failure for the next windowTicks; sixty agents on two cores
 * with the longest detected a kill -9 a second later than without it. A window, not TCP's
 * smoothed average: while the multiplier is high probes are rare, and an average fed by rare
 * samples took a minute to come down after the slowness had ended; the window forgets a slow spell
 * windowTicks after its last slow ack, however few probes there were.
 */
export class ProbeRtt {
  /** [tick, round trip in ticks], oldest first. */
  private readonly samples: Array<[number, number]> = []
  constructor (private readonly timeoutTicks: number, private readonly windowTicks: number) {}

  sample (now: number, ticks: number): void {
    this.samples.push([now, Math.max(0, ticks)])
    this.prune(now)
  }

  private prune (now: number): void {
    let n = 0
    while (n < this.samples.length && now - this.samples[n]![0] >= this.windowTicks) n++
    if (n > 0) this.samples.splice(0, n)
  }

  /** The median round trip in the window (the lower one of an even count), ticks; null when none. */
  typical (now: number): number | null {
    this.prune(now)
    if (this.samples.length === 0) return null
    const sorted = this.samples.map(([, r]) => r).sort((x, y) => x - y)
    return sorted[(sorted.length - 1) >> 1]!
  }

  multiplier (now: number): number {
    const m = this.typical(now)
    return m === null || this.timeoutTicks <= 0 ? 1 : Math.max(1, (m + 1) / this.timeoutTicks)
  }
}
