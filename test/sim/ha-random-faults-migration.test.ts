// Goal: protected VMs can be live-migrated safely. The HA claim is handed over (HaManager's
// handover: the target's claim granted by a majority with the source's consent, before the
// switch-over) while crashes, agent hangs and crashes, partitions, one-way cuts and loss happen:
// S1 (no VM runs on two hypervisors) and S4 (a restart only by a quorate host with a majority's
// grant, after the old copy stopped) are checked after every tick, and every VM runs again
// within a bound after heal. Method: many seeded HaSim runs with migrations started at random
// (about one every 8 ticks); each failure prints its seed. RUNS and SEED pick the runs.
import t from 'tap'
import { haRandomRun } from '../../agent/sim/ha-sim.js'

const base = Number(process.env.SEED ?? 20270110)
const runs = Number(process.env.RUNS ?? 1500)
const only = process.env.SEED !== undefined && process.env.RUNS === undefined

t.test(`random faults with live migrations of protected VMs (${only ? 1 : runs} runs)`, t => {
  const seeds = only ? [base] : Array.from({ length: runs }, (_, i) => base + i)
  let bad = 0
  let dead = 0
  // VMs not running at the end: each must have a reason, and the only one expected is the
  // designed give-up after maxAttempts failed starts, all injected by the simulator.
  let givenUp = 0
  let failedVms = 0
  let otherReasons = 0
  let worst = 0
  const totals = { migrations: 0, migrationsCommitted: 0, migrationsAborted: 0, handoverTimeouts: 0, staleResumes: 0, staleCopies: 0, restarts: 0, fences: 0, resets: 0, crashes: 0, hangs: 0, agentCrashes: 0, partitions: 0, isolations: 0, cuts: 0, lost: 0, startFailuresInjected: 0, stopHangsInjected: 0, failed: 0 }
  for (const seed of seeds) {
    const r = haRandomRun(seed, undefined, { migrations: 0.12 })
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
  t.comment(`runs ${seeds.length}; ${JSON.stringify(totals)}`)
  // An injector that injects nothing would pass every check: each kind of fault must have
  // happened (lost: frames dropped by injected loss; failed: VMs given up after injected start
  // failures). A single SEED may lack some kinds.
  for (const k of ['crashes', 'hangs', 'agentCrashes', 'partitions', 'isolations', 'cuts', 'lost', 'startFailuresInjected', 'stopHangsInjected', 'failed'] as const) {
    t.ok(only || totals[k] > 0, `faults injected: ${k} ${totals[k]}`)
  }
  t.ok(totals.migrationsCommitted > seeds.length, `protected VMs were migrated (${totals.migrationsCommitted} committed)`)
  t.equal(bad, 0, 'no run broke S1 or S4')
  t.equal(totals.staleResumes, 0, `no source resumed a copy older than what ran on its target (${totals.staleCopies} stale copies handed to HA after a target's power loss)`)
  t.equal(dead, 0, `every run recovered after heal (slowest ${worst} ticks)`)
  t.equal(otherReasons, 0, 'every VM not running at the end was given up after injected start failures')
  t.equal(givenUp, failedVms, `each VM left failed has that reason (${givenUp})`)
  t.end()
})
