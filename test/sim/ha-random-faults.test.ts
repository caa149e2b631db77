// Goal: the real AgentCore on every host (membership, migration, HA, VIPs, replicas) keeps S1
// (no VM on two hosts, none lost), S3 and S4 (restarts only by a majority, only after the old copy
// is fenced) under random power losses, agent hangs and crashes, symmetric, three-way and one-way
// partitions, isolation, loss and heals, checked after every tick (SafetyCheckers); and every
// protected VM runs again within a bound once the network heals (liveness). Method: seeded
// randomFaultRun runs on the one simulator (agent/sim/scenarios.ts); each failure prints its seed.
// RUNS and SEED pick the runs.
import t from 'tap'
import { randomFaultRun } from '../../agent/sim/scenarios.js'
import { checkRandomRuns } from './random-runs.js'

const base = Number(process.env.SEED ?? 20261201)
const runs = Number(process.env.RUNS ?? 400)
const only = process.env.SEED !== undefined && process.env.RUNS === undefined

t.test(`random faults: S1-S4 after every tick, liveness after heal (${only ? 1 : runs} runs)`, t => {
  const seeds = only ? [base] : Array.from({ length: runs }, (_, i) => base + i)
  checkRandomRuns(t, seeds.map(seed => randomFaultRun(seed)), { only })
  t.end()
})

t.test('deterministic: the same seed gives the same run, event for event', t => {
  for (const seed of [base, base + 1]) {
    const runOnce = (): { lines: string[], result: unknown } => {
      const lines: string[] = []
      const result = randomFaultRun(seed, { migrations: 0.12, vips: true, replicas: 0.02, trace: l => { lines.push(l) } })
      return { lines, result }
    }
    const a = runOnce()
    const b = runOnce()
    t.ok(a.lines.length > 100, `seed ${seed}: the run has a trace (${a.lines.length} lines)`)
    t.same(b.lines, a.lines, `seed ${seed}: the same faults and the same events in the same order`)
    t.same(b.result, a.result, `seed ${seed}: the same outcome`)
  }
  t.end()
})
