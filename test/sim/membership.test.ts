// Goal: the membership protocol keeps a correct, shared view of a 200-host cluster under message
// loss, crashes, restarts and partitions. Method: SimCluster with the production config
// (tick 100 ms) on a seeded lossy network; the checkers run after every tick (incarnations never
// decrease, no host holds itself dead, no live host is declared dead by a majority while the
// network has no partition); convergence is then asserted within tick budgets. SEED picks the run.
// SimCluster also checks, every tick of every core, that the core acts no earlier than the tick
// its nextDueTick() announced (what the agent's loop sleeps until); a miss throws DeadlineError.
import t from 'tap'
import { defaultCoreConfig } from '../../agent/core/config.js'
import { Checkers, loadsConverged, membershipConverged } from '../../agent/sim/checkers.js'
import { SimCluster } from '../../agent/sim/sim-cluster.js'

const seed = Number(process.env.SEED ?? 20261122)
t.comment(`seed=${seed} (reproduce with SEED=${seed})`)

function cluster (loss: number, s = seed): { sim: SimCluster, checkers: Checkers } {
  const sim = new SimCluster({ seed: s, hosts: 200, config: defaultCoreConfig(), network: { loss, reorder: 0.01, duplicate: 0.01 } })
  return { sim, checkers: new Checkers(sim) }
}

t.test('crashed hosts are declared dead by every live host within 20 s; no false death at 5% loss', t => {
  const { sim, checkers } = cluster(0.05)
  sim.run(300)
  t.ok(sim.runUntil(() => loadsConverged(sim, 2), 200, 10), 'views hold every live host\'s load report (at most two intervals behind)')
  const victims = [sim.ids[50]!, sim.ids[120]!, sim.ids[199]!]
  for (const v of victims) sim.crash(v)
  const start = sim.now
  t.ok(sim.runUntil(() => membershipConverged(sim), 200, 5), `all live hosts hold the crashed ones dead after ${(sim.now - start) / 10} s`)
  sim.run(900)
  t.equal(checkers.falseDeaths, 0, `no live host declared dead (${checkers.falseDeathLog.join('; ')})`)
  t.ok(membershipConverged(sim), 'views still agree')
  t.ok(sim.runUntil(() => loadsConverged(sim, 2), 200, 10), 'loads still agree')
  t.ok(sim.deadlineChecks >= 197 * 1200, `every core's announced next due tick was checked every tick (${sim.deadlineChecks} checks, none early)`)
  t.end()
})

t.test('a partitioned minority is declared dead by the majority and rejoins after heal', t => {
  const { sim, checkers } = cluster(0.02, seed + 1)
  sim.run(100)
  const minority = sim.ids.slice(160)
  const majority = sim.ids.slice(0, 160)
  const incBefore = new Map(minority.map(id => [id, sim.core(id)!.incarnation]))
  checkers.noFalseDeath = false // deaths are the point; stale declarations may leak just after heal
  sim.network.partition([majority, minority])
  const majorityHoldsMinorityDead = (): boolean => majority.every(v => minority.every(m => sim.core(v)!.member(m)?.state === 'dead'))
  t.ok(sim.runUntil(majorityHoldsMinorityDead, 600, 10), `majority declared the minority dead after ${(sim.now - 100) / 10} s`)
  sim.network.heal()
  const healed = sim.now
  t.ok(sim.runUntil(() => membershipConverged(sim), 1200, 10), `views converge ${(sim.now - healed) / 10} s after heal`)
  t.ok(minority.every(id => sim.core(id)!.incarnation > incBefore.get(id)!), 'every minority host refuted with a higher incarnation')
  checkers.falseDeaths = 0
  checkers.noFalseDeath = true
  sim.run(300)
  t.equal(checkers.falseDeaths, 0, 'no false death after heal')
  t.ok(sim.runUntil(() => loadsConverged(sim, 2), 300, 10), 'loads converge after heal')
  t.end()
})

t.test('a restarted host rejoins above every incarnation it used', t => {
  const { sim, checkers } = cluster(0.05, seed + 2)
  sim.run(100)
  const h = sim.ids[77]!
  sim.crash(h)
  t.ok(sim.runUntil(() => membershipConverged(sim), 300, 5), 'declared dead')
  const before = checkers.maxIncarnation(h)
  sim.restart(h)
  t.ok(sim.core(h)!.incarnation > before, 'restart raised the incarnation')
  t.ok(sim.runUntil(() => membershipConverged(sim), 600, 10), `rejoined and views converge (${sim.now} ticks)`)
  t.end()
})
