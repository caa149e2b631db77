// Goal: protected VMs can be live-migrated safely while HA runs: the real migration machine and
// the real HA handover (the target's claim granted by a majority with the source's consent,
// before the switch-over) in the real AgentCore on every host, while power losses, agent hangs
// and crashes, partitions, one-way cuts and loss happen. S1-S4 are checked after every tick
// (SafetyCheckers: no VM on two hypervisors, none lost, no stale copy resumed, no host over its
// memory, restarts only by a quorate host once the old copy stopped), and every VM runs again
// within a bound after heal. Method: seeded randomFaultRun runs with operator migrations of
// random VMs (protected and not) to random hosts, about one every 8 ticks; each failure prints
// its seed. RUNS and SEED pick the runs.
import t from 'tap'
import { randomFaultRun } from '../../agent/sim/scenarios.js'
import { checkRandomRuns } from './random-runs.js'

const base = Number(process.env.SEED ?? 20270110)
const runs = Number(process.env.RUNS ?? 400)
const only = process.env.SEED !== undefined && process.env.RUNS === undefined

t.test(`random faults with live migrations of protected VMs (${only ? 1 : runs} runs)`, t => {
  const seeds = only ? [base] : Array.from({ length: runs }, (_, i) => base + i)
  const results = seeds.map(seed => randomFaultRun(seed, { migrations: 0.12 }))
  checkRandomRuns(t, results, { only })
  const asked = results.reduce((a, r) => a + r.migrationsAsked, 0)
  const committed = results.reduce((a, r) => a + r.migrationsCommitted, 0)
  t.ok(only || committed > seeds.length, `VMs were migrated (${committed} committed of ${asked} asked)`)
  t.end()
})
