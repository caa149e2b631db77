/**
 * The checks every random-fault test file makes over its runs (randomFaultRun): no safety
 * violation, every run live after the heal, each VM not running at the end given up for the
 * designed reason only, and every kind of fault injected at least once (an injector that injects
 * nothing would pass every other check).
 */
import type { Test } from 'tap'
import { KNOWN_DEFECTS, type KnownDefect, type RandomRunResult } from '../../agent/sim/scenarios.js'
import type { FaultCounts } from '../../agent/sim/sim-cluster.js'

type Tap = Pick<Test, 'ok' | 'equal' | 'fail' | 'comment'>

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
  const known = new Map<KnownDefect, number[]>()
  const totals = Object.fromEntries(FAULT_KINDS.map(k => [k, 0])) as unknown as FaultCounts
  for (const r of results) {
    ticks += r.ticks
    checked += r.ticksChecked
    restarts += r.restartsChecked
    for (const k of FAULT_KINDS) totals[k] += r.faults[k]
    if (r.knownDefect !== null) { known.set(r.knownDefect, [...(known.get(r.knownDefect) ?? []), r.seed]); continue }
    failedVms += r.failed
    for (const x of r.notRunning) {
      if (x.reason === 'gave up after injected start failures') givenUp++
      else if (++otherReasons <= 5) t.fail(`${x.vm} not running: ${x.reason}; reproduce with SEED=${r.seed}`)
    }
    if (r.violation !== null) {
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
  for (const k of Object.keys(KNOWN_DEFECTS) as KnownDefect[]) {
    const seeds = known.get(k) ?? []
    // A known defect, not fixed yet: reported loudly as a todo with its seeds, never as a pass.
    if (seeds.length > 0) t.fail(`${seeds.length} runs hit a known defect: ${KNOWN_DEFECTS[k]}; reproduce with SEED=${seeds.slice(0, 5).join(', SEED=')}`, { todo: `known defect ${k}, found by the one simulator` })
  }
  t.equal(dead, 0, `every run settled after heal (slowest ${worst} ticks)`)
  t.equal(otherReasons, 0, 'every VM not running at the end was given up after injected start failures')
  t.equal(givenUp, failedVms, `each VM left failed has that reason (${givenUp})`)
  return { totals, ticks }
}
