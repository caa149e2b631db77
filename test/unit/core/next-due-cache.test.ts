// nextDueTick() runs after every turn of the agent's loop (every frame received, every wake-up).
// What it derives from the whole member table (the oldest report among alive members, whether a
// seed is not alive) is cached and recomputed only when a member's state changes or the member
// holding the oldest report gets a newer one, so an idle turn does not walk every member. The
// cache must give what a fresh computation gives: compared at every tick of every core of a
// simulated cluster with crashes, restarts and a partition.
import t from 'tap'
import { AgentCore } from '../../../agent/core/agent-core.js'
import { defaultCoreConfig } from '../../../agent/core/config.js'
import { SimCluster } from '../../../agent/sim/sim-cluster.js'

interface Internals {
  s: { members: { byId: Map<string, unknown>, get: (id: string) => unknown } }
  reports: { oldest: unknown }
  antiEntropy: { seedsChecked: number }
}
const inner = (c: AgentCore): Internals => c as unknown as Internals

t.test('an idle turn\'s nextDueTick() does not walk the member table', t => {
  const sim = new SimCluster({ seed: 3, hosts: 40, config: { ...defaultCoreConfig(), activeViewSize: 6 }, seedCount: 40 })
  sim.run(300)
  const core = sim.core(sim.ids[0]!)!
  const x = inner(core)
  let walks = 0
  let lookups = 0
  const byId = x.s.members.byId
  const values = byId.values.bind(byId)
  byId.values = () => { walks++; return values() }
  const get = x.s.members.get.bind(x.s.members)
  x.s.members.get = (id: string) => { lookups++; return get(id) }
  const first = core.nextDueTick()
  const w0 = walks
  const l0 = lookups
  let same = 0
  for (let i = 0; i < 100; i++) if (core.nextDueTick() === first) same++
  t.equal(same, 100, 'the same answer every time')
  t.equal(walks - w0, 0, `no walk over the ${byId.size} members after the first call (${walks - w0})`)
  t.equal(lookups - l0, 0, `no lookup of every seed after the first call (${lookups - l0})`)
  t.end()
})

t.test('the cached next due tick is the one a fresh computation gives, at every tick, through crashes, restarts and a partition', t => {
  const sim = new SimCluster({ seed: 11, hosts: 30, config: { ...defaultCoreConfig(), activeViewSize: 6 }, seedCount: 30, network: { loss: 0.02 } })
  let compared = 0
  let differ = 0
  const check = (): void => {
    for (const id of sim.ids) {
      const core = sim.core(id)
      if (core === undefined) continue
      const cached = core.nextDueTick()
      inner(core).reports.oldest = null
      inner(core).antiEntropy.seedsChecked = -1
      const fresh = core.nextDueTick()
      compared++
      if (cached !== fresh && differ++ < 5) t.fail(`host ${id.slice(0, 8)} at tick ${sim.now}: cached ${cached}, fresh ${fresh}`)
    }
  }
  const run = (n: number): void => { for (let i = 0; i < n; i++) { sim.tick(); check() } }
  run(300)
  sim.crash(sim.ids[5]!)
  sim.crash(sim.ids[17]!)
  run(300)
  sim.restart(sim.ids[5]!)
  run(200)
  sim.partition([sim.ids.slice(0, 10), sim.ids.slice(10)])
  run(300)
  sim.heal()
  run(300)
  t.equal(differ, 0, `${compared} comparisons, none differ`)
  t.end()
})
