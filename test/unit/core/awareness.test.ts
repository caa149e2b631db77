// Lifeguard local health (memberlist awareness.go) and the probe outcome rule that drives it.
import t from 'tap'
import { Awareness, probeAwarenessDelta } from '../../../agent/core/membership/awareness.js'

t.test('score is clamped to [0, max - 1] and scales timeouts by score + 1', t => {
  const a = new Awareness(8)
  const rows: Array<[number, number, number]> = [
    // delta, score after, scale(5)
    [-1, 0, 5], [1, 1, 10], [3, 4, 25], [10, 7, 40], [-2, 5, 30], [-100, 0, 5]
  ]
  for (const [d, score, scaled] of rows) {
    t.equal(a.applyDelta(d), score, `delta ${d}`)
    t.equal(a.scale(5), scaled)
  }
  t.end()
})

t.test('probe outcome deltas', t => {
  const rows: Array<[boolean, number, number, number]> = [
    // acked, expectedNacks, nacks, delta
    [true, 0, 0, -1], [true, 3, 0, -1], [false, 0, 0, 1], [false, 3, 3, 0], [false, 3, 1, 2], [false, 5, 0, 5]
  ]
  for (const [acked, exp, n, want] of rows) t.equal(probeAwarenessDelta(acked, exp, n), want, `acked=${acked} exp=${exp} nacks=${n}`)
  t.end()
})
