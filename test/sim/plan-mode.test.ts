// Goal: plan mode through the agents' real cores (SimCluster, simulated hypervisors, the safety
// checkers after every tick):
// - manual: an overloaded host moves nothing on its own; every agent draws the same plan;
// - the plan applied step by step (operator moves through the normal protocol) reaches the loads
//   it predicted, within 10 %, and no step moves a VM back;
// - partial: an overload is relieved on its own, a consolidation is only recommended.
import t from 'tap'
import { localTestCoreConfig } from '../../agent/core/config.js'
import { defaultMigrationConfig } from '../../agent/core/migration/migration-config.js'
import type { AutomationLevel } from '../../agent/core/migration/migration-state.js'
import { SafetyCheckers } from '../../agent/sim/checkers.js'
import { SimCluster } from '../../agent/sim/sim-cluster.js'
import { SimHypervisor } from '../../agent/sim/sim-hypervisor.js'

const seed = Number(process.env.SEED ?? 20261205)
t.comment(`reproduce with SEED=${seed}`)
const MEM = 8192
const BALANCE = 20

function world (s: number, automation: AutomationLevel) {
  const hyper = new SimHypervisor({ seed: s * 31 + 7 })
  const migration = { ...defaultMigrationConfig(), automation, leaseTicks: 30, intentTimeoutTicks: 20, prepareTimeoutTicks: 40, pollTicks: 2, resendTicks: 5, decisionTicks: 5, balanceTicks: BALANCE, retainTicks: 5000 }
  const sim = new SimCluster({
    seed: s, hosts: 3, hypervisor: hyper, migration, sampleIntervalTicks: 2,
    capacity: { cpuCores: 8, cpuMipsPerCore: 1000, memMiB: MEM, netMbps: 10000 },
    config: { ...localTestCoreConfig(), reportIntervalTicks: 5, reportStaleGraceTicks: 5, reportPullIntervalTicks: 5 },
    network: { delayTicksMin: 1, delayTicksMax: 3 }
  })
  return { hyper, sim, checkers: new SafetyCheckers(sim, { capMemMiB: MEM }) }
}

const sources = (sim: SimCluster): number => sim.ids.flatMap(h => sim.core(h)?.migrations().filter(r => r.role === 'source') ?? []).length
const util = (hyper: SimHypervisor, h: string): number => hyper.list(h).reduce((a, v) => a + v.cpuUtil, 0)

t.test('manual: nothing moves on its own; every agent draws the same plan; applied, it reaches its prediction', t => {
  const { hyper, sim, checkers } = world(seed, 'manual')
  const [h0, h1, h2] = sim.ids as [string, string, string]
  for (let i = 0; i < 8; i++) hyper.addVm(h0, `busy${i}`, 512, 0.12)
  for (const [h, n] of [[h1, 'a'], [h2, 'b']] as const) for (let i = 0; i < 4; i++) hyper.addVm(h, `${n}${i}`, 512, 0.1125)
  sim.run(15 * BALANCE)
  t.equal(sources(sim), 0, `no migration in ${15 * BALANCE} ticks although h0 is at ${util(hyper, h0).toFixed(2)}`)
  const plans = sim.ids.map(h => sim.core(h)!.plan())
  const brief = (p: typeof plans[number]): string => p.steps.map(s => `${s.vm}:${s.from.slice(0, 4)}->${s.to.slice(0, 4)}`).join(' ')
  t.ok(plans[0]!.steps.length >= 1, `the plan relieves h0: ${brief(plans[0]!)}`)
  t.ok(plans.every(p => p.steps.every(s => s.from !== h0 || s.reason.kind === 'overload')), 'its moves off h0 are for overload')
  t.same(plans.map(brief), plans.map(() => brief(plans[0]!)), 'the three agents draw the same steps')
  t.same(plans.map(p => p.final), plans.map(() => plans[0]!.final), 'and predict the same loads')

  // Apply the plan from h1's agent, step by step, as `starling plan apply` does.
  const plan = plans[1]!
  for (const s of plan.steps) {
    const from = [...hyper.running().entries()].find(([vm]) => vm === s.vm)?.[1][0]
    t.equal(from, s.from, `step ${s.step}: ${s.vm} is where the plan found it`)
    sim.step(h1, { type: 'operatorMigrate', vm: s.vm, to: s.to })
    t.ok(sim.runUntil(() => hyper.running().get(s.vm)?.[0] === s.to && checkers.settled(), 20 * BALANCE, 1), `step ${s.step}: ${s.vm} runs on its target`)
  }
  for (const h of sim.ids) {
    const predicted = plan.final[h]!.cpu
    const actual = util(hyper, h)
    t.ok(Math.abs(actual - predicted) <= 0.1 * Math.max(predicted, 0.1), `${h.slice(0, 6)}: ${actual.toFixed(3)} against ${predicted.toFixed(3)} predicted (within 10 %)`)
  }
  // No step undid another, and nothing moved on its own meanwhile.
  const moved = sim.ids.flatMap(h => sim.core(h)!.migrations().filter(r => r.role === 'source' && r.state === 'committed').map(r => r.vm))
  t.equal(new Set(moved).size, moved.length, `no VM moved twice (${moved.join(', ')})`)
  t.equal(moved.length, plan.steps.length, 'exactly the plan\'s moves')
  sim.run(10 * BALANCE)
  t.equal(sources(sim), plan.steps.length, 'still nothing on its own afterwards')
  t.same(sim.core(h0)!.plan().steps.filter(s => s.reason.kind === 'overload'), [], 'the plan drawn now has no overload left')
  const copies = [...hyper.running().values()].filter(hs => hs.length !== 1)
  t.equal(copies.length, 0, 'every VM runs exactly once')
  t.end()
})

t.test('partial: an overload is relieved on its own; a consolidation is only recommended', t => {
  const { hyper, sim, checkers } = world(seed + 1, 'partial')
  const [h0, h1, h2] = sim.ids as [string, string, string]
  for (let i = 0; i < 8; i++) hyper.addVm(h0, `busy${i}`, 512, 0.12)
  for (const [h, n] of [[h1, 'a'], [h2, 'b']] as const) for (let i = 0; i < 4; i++) hyper.addVm(h, `${n}${i}`, 512, 0.1125)
  t.ok(sim.runUntil(() => checkers.settled() && util(hyper, h0) <= 0.9 && sources(sim) > 0, 40 * BALANCE, 1), `h0 relieved on its own (${util(hyper, h0).toFixed(2)})`)
  const recs = sim.ids.flatMap(h => sim.core(h)!.migrations().filter(r => r.role === 'source'))
  t.ok(recs.every(r => r.cause === 'overload'), `only overload moves: ${recs.map(r => `${r.vm} ${r.cause}`).join(', ')}`)

  const q = world(seed + 2, 'partial')
  const [g0, g1, g2] = q.sim.ids as [string, string, string]
  for (const [h, u] of [[g0, 0.03], [g1, 0.1], [g2, 0.12]] as const) for (let i = 0; i < 2; i++) q.hyper.addVm(h, `${h.slice(0, 6)}-${i}`, 512, u)
  q.sim.run(20 * BALANCE)
  t.equal(sources(q.sim), 0, 'quiet hosts: no consolidation on its own')
  const p = q.sim.core(g1)!.plan()
  t.ok(p.steps.length >= 1 && p.steps.every(s => s.reason.kind === 'underload') && p.emptied.length >= 1, `the plan recommends it: ${p.steps.map(s => `${s.vm} ${s.reason.kind}`).join(', ')}; empties ${p.emptied.length} host(s)`)
  t.end()
})
