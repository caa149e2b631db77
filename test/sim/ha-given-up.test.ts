/**
 * Goal: a protected VM is given up (status failed, left to the operator) only after maxAttempts
 * failed starts in a row, never because a host counted failures from before the VM last ran; and
 * every VM that does not run at the end of a simulated run has a reason (notRunningReason in
 * agent/sim/scenarios.ts). Method: seeded randomFaultRun runs on the one simulator with HA
 * starts failing often (30 %), so that VMs are given up; each given-up VM must have had at
 * least maxAttempts injected failures since it last started, and no other cause. RUNS and SEED
 * pick the runs.
 */
import t from 'tap'
import { randomFaultRun } from '../../agent/sim/scenarios.js'
import { checkRandomRuns } from './random-runs.js'

const base = Number(process.env.SEED ?? 7_000_000)
const runs = Number(process.env.RUNS ?? 60)
const only = process.env.SEED !== undefined && process.env.RUNS === undefined

t.test(`VMs are given up only after maxAttempts injected start failures in a row (${only ? 1 : runs} runs)`, t => {
  const seeds = only ? [base] : Array.from({ length: runs }, (_, i) => base + i)
  const results = seeds.map(seed => randomFaultRun(seed, { vips: true, startFailure: 0.3 }))
  checkRandomRuns(t, results, { only })
  const givenUp = results.filter(r => r.knownDefect === null).reduce((a, r) => a + r.failed, 0)
  t.ok(only || givenUp > 0, `VMs were given up (${givenUp}), each after injected start failures only`)
  t.end()
})
