/**
 * Goal: S1-S5 together under random faults, with live migrations, HA, a virtual IP following
 * every VM and replicas of the stateless VMs, all in the real AgentCore on every host (the one
 * simulator: agent/sim/sim-cluster.ts). After every tick: no VM on two hypervisors and none lost
 * (S1), no host over its memory (S3), a restart only by a quorate host after the old copy stopped
 * (S4), at most one host owns a VIP and besides it only a host handing the address off or
 * removing it carries it (S5). After the final heal every VM runs once and its VIP is carried by
 * exactly the host that runs it, which owns it. RUNS and SEED pick the runs; a failure prints its
 * seed.
 */
import t from 'tap'
import { localTestVipConfig } from '../../agent/core/vip/vip-config.js'
import { randomFaultRun } from '../../agent/sim/scenarios.js'
import { checkRandomRuns } from './random-runs.js'

const base = Number(process.env.SEED ?? 777000)
const runs = Number(process.env.RUNS ?? 250)
const only = process.env.SEED !== undefined && process.env.RUNS === undefined

t.test(`random faults, migrations, replicas and a VIP per VM (${only ? 1 : runs} runs)`, t => {
  const seeds = only ? [base] : Array.from({ length: runs }, (_, i) => base + i)
  const results = seeds.map(seed => randomFaultRun(seed, { migrations: 0.12, vips: true, replicas: 0.02 }))
  checkRandomRuns(t, results, { only })
  const committed = results.reduce((a, r) => a + r.migrationsCommitted, 0)
  const replicas = results.reduce((a, r) => a + r.replicasStarted, 0)
  const overlap = Math.max(...results.map(r => r.maxVipOverlap))
  t.ok(only || committed > seeds.length, `VMs were migrated, moving their VIPs (${committed} committed)`)
  t.ok(only || replicas > 0, `replicas were started (${replicas})`)
  t.ok(overlap <= localTestVipConfig().handoffTimeoutTicks + 6, `a make-before-break overlap is bounded (${overlap} ticks)`)
  t.end()
})
