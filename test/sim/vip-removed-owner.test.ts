/**
 * A VIP whose owner is removed from the cluster (`starling members remove`, agreed live) moves to
 * a remaining member, and never has two carriers: the removed host holds no majority any more
 * (agent/core/vip: its lease is not renewed by the members, who refuse it), so it drops the
 * address before a member adds it, and the members take it over as from a host cut off.
 * Method: SimCluster (the real AgentCore on five hosts, the replicated cluster configuration),
 * SafetyCheckers after every tick; seeds 1-10 vary delays and who owns the VIP.
 */
import t from 'tap'
import { localTestVipConfig, type VipSpec } from '../../agent/core/vip/vip-config.js'
import { SafetyCheckers } from '../../agent/sim/checkers.js'
import { SimCluster } from '../../agent/sim/sim-cluster.js'

t.test('the owner of a VIP is removed from the cluster: a member takes the VIP over, one carrier at a time', async t => {
  for (let seed = 1; seed <= 10; seed++) {
    const ids = [...new SimCluster({ seed, hosts: 5, hexIds: true }).ids]
    const spec: VipSpec = { id: 'g', address: '192.0.2.20/24', iface: 'eth0', binding: { kind: 'group', hosts: ids } }
    const sim = new SimCluster({
      seed, hosts: 5, sampleIntervalTicks: 0, network: { delayTicksMin: 1, delayTicksMax: 1 + (seed % 3) },
      clusterConfig: {}, vips: { specs: [spec], config: localTestVipConfig() }
    })
    const checkers = new SafetyCheckers(sim)
    const owners = (): string[] => sim.ids.filter(h => sim.core(h)?.vips()?.vips[0]?.role === 'owner')
    t.ok(sim.runUntil(() => owners().length === 1, 300, 1), `an owner at start (seed ${seed})`)
    sim.run(30)
    const old = owners()[0]!
    const from = ids.find(h => h !== old)!
    const req = sim.configChange(from, d => ({ ...d, members: d.members.filter(m => m.publicKey !== old) }), 'remove the VIP owner')
    t.not(req, null)
    let most = 0
    let dropped = -1
    let taken = -1
    const t0 = sim.now
    for (let i = 0; i < 400 && taken < 0; i++) {
      sim.tick()
      const carriers = [...sim.carriers.get('g')!]
      most = Math.max(most, carriers.length)
      if (dropped < 0 && !carriers.includes(old)) dropped = sim.now - t0
      const next = owners().filter(h => h !== old)
      if (next.length === 1 && carriers.includes(next[0]!)) taken = sim.now - t0
    }
    t.equal(sim.core(from)!.configOutcome(req!)?.status, 'committed', `the removal is agreed (seed ${seed})`)
    t.equal(most, 1, `never two carriers (seed ${seed})`)
    t.ok(dropped >= 0, `the removed owner dropped the address after ${dropped} ticks (seed ${seed})`)
    t.ok(taken > dropped, `a member owns and carries it ${taken} ticks after the change (seed ${seed})`)
    sim.run(50)
    t.same([...sim.carriers.get('g')!].filter(h => h === old), [], `the removed host does not take it back (seed ${seed})`)
    t.ok(checkers.ticksChecked > 0, `S1-S5 checked after each of ${checkers.ticksChecked} ticks (seed ${seed})`)
  }
})
