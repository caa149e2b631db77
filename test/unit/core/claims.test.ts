/**
 * The shared claim module (agent/core/claims): the order of claims, the grant rule as a table,
 * freedom, the claimant's win, retry / time-out / back-off.
 */
import t from 'tap'
import { Prng } from '../../../agent/core/prng.js'
import {
  backoffTicks, claimDue, claimOrder, freeFor, grantVerdict, majority, retryDue, wonClaim,
  type ClaimTiming, type GrantCase, type GrantVerdict
} from '../../../agent/core/claims/index.js'

interface Lc { lamport: number, host: string }
interface Ep { epoch: number, host: string, attempts: number }
const byLamport = claimOrder<Lc>(c => c.lamport)
const byEpoch = claimOrder<Ep>(c => c.epoch)

t.test('order: rank first, host id breaks ties, -1 / 0 / 1 only', async t => {
  const table: Array<[number, string, number, string, number]> = [
    [1, 'a', 2, 'a', -1], [2, 'a', 1, 'z', 1], [3, 'a', 3, 'b', -1], [3, 'b', 3, 'a', 1], [7, 'x', 7, 'x', 0],
    [10, 'a', 9, 'b', 1], [0, 'b', 100, 'a', -1]
  ]
  for (const [ra, ha, rb, hb, want] of table) {
    t.equal(byLamport.compare({ lamport: ra, host: ha }, { lamport: rb, host: hb }), want, `(${ra},${ha}) vs (${rb},${hb})`)
    t.equal(byEpoch.compare({ epoch: ra, host: ha, attempts: 5 }, { epoch: rb, host: hb, attempts: 0 }), want, `epoch (${ra},${ha}) vs (${rb},${hb})`)
  }
})

t.test('same: a claim is named by rank and host; no claim is never the same', async t => {
  t.ok(byLamport.same({ lamport: 3, host: 'a' }, { lamport: 3, host: 'a' }))
  t.notOk(byLamport.same({ lamport: 3, host: 'a' }, { lamport: 3, host: 'b' }))
  t.notOk(byLamport.same({ lamport: 3, host: 'a' }, { lamport: 4, host: 'a' }))
  t.notOk(byLamport.same({ lamport: 3, host: 'a' }, null), 'a claim is not the same as none')
  t.ok(byEpoch.same({ epoch: 2, host: 'a', attempts: 0 }, { epoch: 2, host: 'a', attempts: 3 }), 'attempts are not part of the name')
  t.notOk(byEpoch.same({ epoch: 0, host: 'a', attempts: 0 }, null))
})

t.test('versus: against the standing claim, 1 when none stands', async t => {
  t.equal(byLamport.versus({ lamport: 1, host: 'a' }, null), 1)
  t.equal(byLamport.versus({ lamport: 1, host: 'a' }, { lamport: 1, host: 'a' }), 0)
  t.equal(byLamport.versus({ lamport: 1, host: 'a' }, { lamport: 2, host: 'a' }), -1)
  t.equal(byLamport.versus({ lamport: 2, host: 'a' }, { lamport: 1, host: 'z' }), 1)
})

t.test('grant rule: every case, as a table', async t => {
  // order, released, able, free -> verdict. All 24 combinations, written out.
  const table: Array<[GrantCase['order'], boolean, boolean, boolean, GrantVerdict]> = [
    [1, false, false, false, 'unable'], [1, false, false, true, 'unable'],
    [1, false, true, false, 'blocked'], [1, false, true, true, 'grant'],
    [1, true, false, false, 'unable'], [1, true, false, true, 'unable'],
    [1, true, true, false, 'blocked'], [1, true, true, true, 'grant'],
    [0, false, false, false, 'regrant'], [0, false, false, true, 'regrant'],
    [0, false, true, false, 'regrant'], [0, false, true, true, 'regrant'],
    [0, true, false, false, 'spent'], [0, true, false, true, 'spent'],
    [0, true, true, false, 'spent'], [0, true, true, true, 'spent'],
    [-1, false, false, false, 'refuse'], [-1, false, false, true, 'refuse'],
    [-1, false, true, false, 'refuse'], [-1, false, true, true, 'refuse'],
    [-1, true, false, false, 'refuse'], [-1, true, false, true, 'refuse'],
    [-1, true, true, false, 'refuse'], [-1, true, true, true, 'refuse']
  ]
  t.equal(new Set(table.map(([o, r, a, f]) => `${o}${r}${a}${f}`)).size, 24, 'the table covers every case once')
  for (const [order, released, able, free, want] of table) {
    t.equal(grantVerdict({ order, released, able, free }), want, `order ${order} released ${released} able ${able} free ${free}`)
  }
})

t.test('freeFor: none, released, own, or its host may be taken over', async t => {
  const dead = (h: string): boolean => h === 'd'
  const table: Array<[{ host: string } | null, boolean, string, boolean]> = [
    [null, false, 'a', true],
    [{ host: 'b' }, true, 'a', true],
    [{ host: 'a' }, false, 'a', true],
    [{ host: 'd' }, false, 'a', true],
    [{ host: 'b' }, false, 'a', false],
    [{ host: 'b' }, false, 'd', false]
  ]
  for (const [claim, released, claimant, want] of table) {
    t.equal(freeFor(claim, released, claimant, dead), want, `${claim?.host ?? 'none'} released ${released} for ${claimant}`)
  }
})

t.test('majority and the claimant\'s win', async t => {
  t.same([1, 2, 3, 4, 5, 6, 7].map(majority), [1, 2, 2, 3, 3, 4, 4])
  t.ok(wonClaim(2, 3, true))
  t.notOk(wonClaim(2, 3, false), 'grants that predate a cut do not count while this host sees no majority')
  t.notOk(wonClaim(1, 3, true))
  t.notOk(wonClaim(2, 4, true))
  t.ok(wonClaim(3, 4, true))
})

t.test('retry, time-out and back-off', async t => {
  const timing: ClaimTiming = { claimRetryTicks: 3, claimTimeoutTicks: 10, claimBackoffTicks: 4 }
  const table: Array<[number, number, number, ReturnType<typeof claimDue>]> = [
    [5, 5, 5, 'wait'], [7, 5, 5, 'wait'], [8, 5, 5, 'resend'], [9, 5, 8, 'wait'],
    [14, 5, 13, 'wait'], [15, 5, 14, 'give-up'], [15, 5, 5, 'give-up'], [30, 5, -Infinity, 'give-up'],
    [0, 0, -Infinity, 'resend']
  ]
  for (const [now, since, lastSend, want] of table) t.equal(claimDue(timing, now, since, lastSend), want, `now ${now} since ${since} sent ${lastSend}`)
  t.ok(retryDue(timing, 3, 0))
  t.notOk(retryDue(timing, 2, 0))
  const seen = new Set<number>()
  const a = new Prng(7)
  for (let i = 0; i < 500; i++) seen.add(backoffTicks(timing, a))
  t.same([...seen].sort((x, y) => x - y), [4, 5, 6, 7, 8], 'base plus 0..base, every value of the jitter occurs, nothing else')
  // One draw from the seeded stream per back-off, so simulations replay the same.
  const p = new Prng(42)
  const q = new Prng(42)
  backoffTicks(timing, p)
  q.int(5)
  t.equal(p.nextU32(), q.nextU32(), 'a back-off consumes exactly one draw')
})
