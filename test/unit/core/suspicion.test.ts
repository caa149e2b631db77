// Suspicion timeout and its confirmation shortening, as pure functions of counts and ticks
// (memberlist suspicion.go): min = mult * max(1, log10(n)) * interval, max = maxMult * min,
// timeout shrinks from max to min with log(c + 1) / log(k + 1).
import t from 'tap'
import { Suspicion, suspicionMinTicks, suspicionTimeoutTicks } from '../../../agent/core/membership/suspicion.js'

t.test('min timeout scales with log10(n), never below one interval multiple', t => {
  const rows: Array<[number, number, number, number]> = [
    // mult, n, interval, expected
    [4, 1, 10, 40],
    [4, 5, 10, 40],
    [4, 10, 10, 40],
    [4, 100, 10, 80],
    [4, 1000, 10, 120],
    [3, 1000, 5, 45],
    [3, 0, 5, 15]
  ]
  for (const [mult, n, interval, want] of rows) t.equal(suspicionMinTicks(mult, n, interval), want, `mult=${mult} n=${n}`)
  t.end()
})

t.test('timeout shrinks from max to min as confirmations arrive', t => {
  const rows: Array<[number, number, number, number, number]> = [
    // confirmations, k, min, max, expected
    [0, 3, 45, 270, 270],
    [1, 3, 45, 270, 157],
    [2, 3, 45, 270, 91],
    [3, 3, 45, 270, 45],
    [9, 3, 45, 270, 45],
    [0, 0, 45, 270, 45],
    [0, 1, 10, 60, 60],
    [1, 1, 10, 60, 10]
  ]
  for (const [c, k, min, max, want] of rows) t.equal(suspicionTimeoutTicks(c, k, min, max), want, `c=${c} k=${k}`)
  t.end()
})

t.test('Suspicion counts each confirmer once and moves its deadline earlier', t => {
  const s = new Suspicion('n', 3, 100, 3, 45, 270, 'a')
  t.equal(s.deadlineTick, 370)
  t.notOk(s.confirm('a'), 'the first suspecter is not a confirmation')
  t.ok(s.confirm('b'))
  t.notOk(s.confirm('b'), 'a repeat does not count')
  t.equal(s.deadlineTick, 257)
  t.ok(s.confirm('c'))
  t.ok(s.confirm('d'))
  t.equal(s.deadlineTick, 145)
  t.notOk(s.confirm('e'), 'no confirmation beyond k')
  t.equal(s.confirmationCount, 3)
  t.end()
})
