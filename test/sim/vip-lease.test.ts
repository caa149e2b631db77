/**
 * Goal: the VIP owner's lease (agent/core/vip/vip-ownership.ts, "Leases") in the cases that once
 * gave two owners: an owner that the majority's SWIM declares dead while it still holds the VIP.
 *  - isolated: the owner hears nobody and nobody hears it; its own SWIM suspects its peers one
 *    probe at a time, so it may still count a majority alive when the others declare it dead;
 *  - one-way cut: nobody hears the owner, but it hears everybody (gossip keeps them alive in its
 *    view, so it never fences on membership alone);
 *  - the three seeds of the planned-move-vs-partition race (races.test.ts) that had two owners.
 * In each: never two owners and never two carriers of the address (the old owner removes it
 * before the new one adds it), and a new owner within a bound: SWIM's detection plus the claim,
 * since a renewal is older than the lease by the time the death is declared.
 * Method: SimCluster (the real AgentCore on five hosts), SafetyCheckers after every tick.
 */
import t from 'tap'
import { Prng } from '../../agent/core/prng.js'
import { localTestVipConfig, type PlannedMoveMode, type VipSpec } from '../../agent/core/vip/vip-config.js'
import { InvariantError, SafetyCheckers } from '../../agent/sim/checkers.js'
import { SimCluster } from '../../agent/sim/sim-cluster.js'

const ids = ['h0000', 'h0001', 'h0002', 'h0003', 'h0004']

function world (seed: number, mode: PlannedMoveMode = 'make-before-break', loss = 0) {
  const spec: VipSpec = { id: 'g', address: '192.0.2.20/24', iface: 'eth0', binding: { kind: 'group', hosts: ids } }
  const sim = new SimCluster({
    seed, hosts: 5, sampleIntervalTicks: 0,
    network: { delayTicksMin: 1, delayTicksMax: 3, loss },
    vips: { specs: [spec], config: { ...localTestVipConfig(), plannedMove: mode } }
  })
  const checkers = new SafetyCheckers(sim)
  const owners = (): string[] => sim.ids.filter(h => sim.core(h)?.vips()?.vips[0]?.role === 'owner')
  return { sim, checkers, owners }
}

for (const fault of ['isolated', 'one-way cut'] as const) {
  t.test(`an owner ${fault} from the majority drops the VIP before a new owner adds it`, async t => {
    const takeovers: number[] = []
    for (let seed = 1; seed <= 20; seed++) {
      const { sim, owners } = world(seed)
      try {
        t.ok(sim.runUntil(() => owners().length === 1, 300, 1), `an owner at start (seed ${seed})`)
        sim.run(40 + new Prng(seed).int(20)) // renewals going on
        const old = owners()[0]!
        const t0 = sim.now
        if (fault === 'isolated') sim.isolate(old)
        else for (const x of ids) if (x !== old) sim.cut(old, x)
        let most = 0
        let droppedAt = -1
        let ownedAt = -1
        for (let i = 0; i < 300 && ownedAt < 0; i++) {
          sim.tick()
          const carriers = [...sim.carriers.get('g')!]
          most = Math.max(most, carriers.length)
          if (droppedAt < 0 && !carriers.includes(old)) droppedAt = sim.now - t0
          const next = owners().filter(h => h !== old)
          if (next.length === 1 && carriers.includes(next[0]!)) ownedAt = sim.now - t0
        }
        t.equal(most, 1, `never two carriers (seed ${seed})`)
        // Its last renewal that a majority echoed was sent at most renewTicks (plus a delay) before the cut.
        const { leaseTicks, renewTicks } = localTestVipConfig()
        t.ok(droppedAt >= 0 && droppedAt <= leaseTicks + renewTicks + 3, `the old owner dropped the address ${droppedAt} ticks after the cut, when the lease of its last renewal ran out (seed ${seed})`)
        t.ok(ownedAt > droppedAt, `a new owner ${ownedAt} ticks after the cut, after the old one dropped (seed ${seed})`)
        takeovers.push(ownedAt)
        // After the heal: one owner that all agree on, carrying the address alone.
        sim.heal()
        const settled = sim.runUntil(() => {
          const o = owners()
          const carriers = [...sim.carriers.get('g')!]
          const seen = new Set(sim.ids.map(h => sim.core(h)?.vips()?.vips[0]?.owner ?? 'none'))
          return o.length === 1 && carriers.length === 1 && carriers[0] === o[0] && seen.size === 1
        }, 300, 1)
        t.ok(settled, `one owner after the heal (seed ${seed})`)
      } catch (err) {
        if (!(err instanceof InvariantError)) throw err
        t.fail(`${err.message} (seed ${seed})`)
      }
    }
    takeovers.sort((a, b) => a - b)
    t.comment(`takeover after the ${fault}: median ${takeovers[takeovers.length >> 1]!} ticks, max ${takeovers[takeovers.length - 1]!} (lease ${localTestVipConfig().leaseTicks} ticks)`)
    // SWIM's death declaration (suspicion timeout) dominates: the lease adds nothing past it.
    t.ok(takeovers.every(x => x > 0 && x <= 80), 'every takeover within 80 ticks')
  })
}

t.test('the race seeds that had two owners (a planned move racing a partition): one owner at every tick', async t => {
  for (const mode of ['make-before-break', 'break-before-make'] as const) {
    for (const seed of [20271207, 20271211, 20271212]) {
      // The procedure of races.test.ts, for these seeds.
      const { sim, checkers, owners } = world(seed, mode, new Prng(seed).chance(0.5) ? 0.05 : 0)
      const p = new Prng(seed ^ 0x85ebca6b)
      try {
        t.ok(sim.runUntil(() => owners().length === 1, 200, 1), 'an owner at start')
        sim.run(30)
        const owner = owners()[0]!
        const others = sim.ids.filter(h => h !== owner)
        const to = others[p.int(others.length)]!
        sim.step(owner, { type: 'operatorVipMove', vip: 'g', to })
        sim.run(p.int(12))
        const rest = p.shuffle(sim.ids.filter(h => h !== owner && h !== to))
        const k = p.int(rest.length + 1)
        sim.partition([[owner, ...rest.slice(0, k)], [to, ...rest.slice(k)]])
        sim.run(20 + p.int(60))
        sim.heal()
        const settled = sim.runUntil(() => {
          const o = owners()
          const carriers = [...sim.carriers.get('g')!]
          return o.length === 1 && carriers.length === 1 && carriers[0] === o[0]
        }, 800, 1)
        t.ok(settled, `${mode} seed ${seed}: settled on one owner`)
        t.equal(checkers.ticksChecked, sim.now, `${mode} seed ${seed}: checked every tick`)
      } catch (err) {
        if (!(err instanceof InvariantError)) throw err
        t.fail(`${mode} seed ${seed}: ${err.message}`)
      }
    }
  }
})
