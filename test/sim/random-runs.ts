/**
 * The checks every random-fault test file makes over its runs (randomFaultRun): no safety
 * violation, every run live after the heal, each VM not running at the end given up for the
 * designed reason only, and every kind of fault injected at least once (an injector that injects
 * nothing would pass every other check).
 */
import type { Test } from 'tap'
import type { RandomRunResult } from '../../agent/sim/scenarios.js'
import type { FaultCounts } from '../../agent/sim/sim-cluster.js'

type Tap = Pick<Test, 'ok' | 'equal' | 'fail' | 'comment'>

/**
 * A defect this simulator found in the HA core and that is not fixed yet: a host whose copy was
 * paused by its fence asks for a claim to resume it; grantors whose standing claim is another
 * host's released claim (that host booted the VM from its disk, ran it, and lost it in a power
 * loss) grant it, since a claim request does not say it is a resume; the older paused copy then
 * runs over the disk that moved on. Such runs are reported as a todo, loudly, not as passes.
 */
export const KNOWN_HA_STALE_RESUME = 'S1: a copy older than what ran elsewhere was resumed: HA resume of'

export const FAULT_KINDS: Array<keyof FaultCounts> = ['powerLosses', 'hangs', 'agentCrashes', 'watchdogResets', 'partitions', 'isolations', 'cuts', 'heals', 'lost', 'startFailuresInjected', 'stopHangsInjected']

export function checkRandomRuns (t: Tap, results: RandomRunResult[], o: { only: boolean }): { totals: FaultCounts, ticks: number } {
  let bad = 0
  let dead = 0
  let givenUp = 0
  let failedVms = 0
  let otherReasons = 0
  let worst = 0
  let ticks = 0
  let checked = 0
  let restarts = 0
  const known: string[] = []
  const totals = Object.fromEntries(FAULT_KINDS.map(k => [k, 0])) as unknown as FaultCounts
  for (const r of results) {
    ticks += r.ticks
    checked += r.ticksChecked
    restarts += r.restartsChecked
    failedVms += r.failed
    for (const k of FAULT_KINDS) totals[k] += r.faults[k]
    for (const x of r.notRunning) {
      if (x.reason === 'gave up after injected start failures') givenUp++
      else if (++otherReasons <= 5) t.fail(`${x.vm} not running: ${x.reason}; reproduce with SEED=${r.seed}`)
    }
    if (r.violation?.startsWith(KNOWN_HA_STALE_RESUME) === true) {
      known.push(r.violation)
    } else if (r.violation !== null) {
      bad++
      if (bad <= 5) t.fail(`safety violated: ${r.violation}`)
    } else if (!r.live) {
      dead++
      if (dead <= 5) t.fail(`not every VM (and VIP) settled ${r.ticksToLive} ticks after heal; reproduce with SEED=${r.seed}`)
    } else worst = Math.max(worst, r.ticksToLive)
  }
  t.comment(`runs ${results.length}, ${ticks} ticks, checkers ran on ${checked} ticks and ${restarts} HA restarts; faults injected: ${JSON.stringify(totals)}`)
  t.equal(checked, ticks, 'the safety checkers ran after every tick')
  for (const k of FAULT_KINDS) t.ok(o.only || totals[k] > 0, `faults injected: ${k} ${totals[k]}`)
  t.ok(o.only || restarts > 0, `HA restarts happened and were checked (${restarts})`)
  t.equal(bad, 0, 'no run broke a safety property')
  t.ok(known.length === 0, `no HA resume of a copy older than one that ran (${known.length} runs: ${known.slice(0, 3).join(' | ')})`, { todo: known.length > 0 ? 'known HA defect: a claim request does not say it resumes a paused copy (random-runs.ts)' : undefined })
  t.equal(dead, 0, `every run settled after heal (slowest ${worst} ticks)`)
  t.equal(otherReasons, 0, 'every VM not running at the end was given up after injected start failures')
  t.equal(givenUp, failedVms, `each VM left failed has that reason (${givenUp})`)
  return { totals, ticks }
}
