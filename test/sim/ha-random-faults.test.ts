// Goal: the HA core keeps S1 (no VM on two hosts) and S4 (restarts only by a majority, only after
// the old copy is fenced) under random crashes, agent hangs and crashes, symmetric and one-way
// partitions, loss and heals, checked after every tick; and every protected VM runs again
// within a bound once a majority is connected (liveness). Method: many short seeded HaSim
// runs; each failure prints its seed. RUNS and SEED pick the runs.
import t from 'tap'
import { haRandomRun as randomRun } from '../../agent/sim/ha-sim.js'

const base = Number(process.env.SEED ?? 20261201)
const runs = Number(process.env.RUNS ?? 2000)
const only = process.env.SEED !== undefined && process.env.RUNS === undefined

t.test(`random faults: S1 and S4 after every tick, liveness after heal (${only ? 1 : runs} runs)`, t => {
  const seeds = only ? [base] : Array.from({ length: runs }, (_, i) => base + i)
  let bad = 0
  let dead = 0
  // VMs not running at the end: each must have a reason, and the only one expected is the
  // designed give-up after maxAttempts failed starts, all injected by the simulator.
  let givenUp = 0
  let failedVms = 0
  let otherReasons = 0
  let worst = 0
  const totals = { restarts: 0, fences: 0, resets: 0, crashes: 0, hangs: 0, agentCrashes: 0, partitions: 0, isolations: 0, cuts: 0, lost: 0, startFailuresInjected: 0, stopHangsInjected: 0, failed: 0 }
  for (const seed of seeds) {
    const r = randomRun(seed)
    failedVms += r.failed
    for (const x of r.notRunning) {
      if (x.reason === 'gave up after injected start failures') givenUp++
      else if (++otherReasons <= 5) t.fail(`${x.vm} not running: ${x.reason} — reproduce with SEED=${seed}`)
    }
    for (const k of Object.keys(totals) as Array<keyof typeof totals>) totals[k] += k === 'failed' ? r.failed : r.stats[k]
    if (r.violations.length > 0) {
      bad++
      if (bad <= 5) t.fail(`safety violated: ${r.violations.slice(0, 3).join(' | ')} — reproduce with SEED=${seed}`)
    }
    if (!r.live) {
      dead++
      if (dead <= 5) t.fail(`not every VM runs ${r.ticksToLive} ticks after heal — reproduce with SEED=${seed}`)
    } else worst = Math.max(worst, r.ticksToLive)
  }
  t.comment(`faults injected: ${JSON.stringify(totals)}`)
  // An injector that injects nothing would pass every check: each kind of fault must have
  // happened (lost: frames dropped by injected loss; failed: VMs given up after injected start
  // failures). A single SEED may lack some kinds.
  for (const k of ['crashes', 'hangs', 'agentCrashes', 'partitions', 'isolations', 'cuts', 'lost', 'startFailuresInjected', 'stopHangsInjected', 'failed'] as const) {
    t.ok(only || totals[k] > 0, `faults injected: ${k} ${totals[k]}`)
  }
  t.equal(bad, 0, 'no run broke S1 or S4')
  t.equal(dead, 0, `every run recovered after heal (slowest ${worst} ticks)`)
  t.equal(otherReasons, 0, 'every VM not running at the end was given up after injected start failures')
  t.equal(givenUp, failedVms, `each VM left failed has that reason (${givenUp})`)
  t.end()
})
