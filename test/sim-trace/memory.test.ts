/**
 * Goal: the simulator's memory model (agent/sim/trace/memory.ts) runs the agents' balloon and KSM
 * policies and their overcommit admission over a PlanetLab day: ballooning carries more VMs than
 * no overcommit, sharing more again, never beyond the overcommit ratio; ratio 1 admits nothing
 * beyond memory; with nothing to share KSM changes nothing; a cluster whose guests outgrow their
 * hosts shows memory short VM-time that relief moves reduce; the run is deterministic.
 */
import t from 'tap'
import { findPlanetlabDir, loadDay } from '../../agent/sim/trace/traces.js'
import { defaultModel } from '../../agent/sim/trace/model.js'
import { defaultMemorySimParams, memoryCapacity, runMemoryScenario } from '../../agent/sim/trace/memory.js'

const dir = findPlanetlabDir()
if (dir === null) throw new Error('data/planetlab not found: the trace tests need it')
const trace = loadDay(dir, '20110303')
const model = defaultModel()
const p = { ...defaultMemorySimParams(), hosts: 30 }

t.test('ballooning and sharing carry more VMs at the same service level, within the ratio', async t => {
  const r = memoryCapacity(trace, model, p, [1, 1.25, 1.5], 0.001)
  t.comment(`baseline ${r.baseline.vmsPlaced} VMs; ballooning ${r.ballooning.best.vmsPlaced} (${r.ballooning.best.scenario.name}); with KSM ${r.ballooningAndSharing.best.vmsPlaced} (${r.ballooningAndSharing.best.scenario.name})`)
  t.equal(r.baseline.maxCommittedRatio <= 1, true, `no overcommit: committed within memory (${r.baseline.maxCommittedRatio.toFixed(3)})`)
  t.equal(r.baseline.meanBalloonedMiB, 0, 'and no balloon moves')
  t.ok(r.moreVmsWithBallooning > 0, `ballooning carries more VMs (+${r.moreVmsWithBallooning})`)
  t.ok(r.moreVmsWithBallooningAndSharing >= r.moreVmsWithBallooning, `sharing at least as many again (+${r.moreVmsWithBallooningAndSharing})`)
  for (const x of [...r.ballooning.runs, ...r.ballooningAndSharing.runs]) {
    t.ok(x.maxCommittedRatio <= x.scenario.ratio + 1e-9, `${x.scenario.name}: committed never beyond the ratio (${x.maxCommittedRatio.toFixed(3)})`)
  }
  const one = r.ballooning.runs.find(x => x.scenario.ratio === 1)
  t.equal(one?.vmsPlaced, r.baseline.vmsPlaced, 'ratio 1: reclaimable memory alone admits nothing beyond memory')
  t.ok(r.ballooning.best.shortVmTimeShare <= r.serviceLevel.maxShortVmTimeShare, 'the best run holds the service level')
  const strict = memoryCapacity(trace, model, p, [1, 1.25, 1.5])
  t.equal(strict.serviceLevel.maxShortVmTimeShare, strict.baseline.shortVmTimeShare, 'tolerance 0: the baseline\'s own service level')
  for (const best of [strict.ballooning.best, strict.ballooningAndSharing.best]) t.ok(best.shortVmTimeShare <= strict.baseline.shortVmTimeShare, `${best.scenario.name}: no more VM-time short of memory than without overcommit`)
})

t.test('nothing to share: KSM changes nothing', async t => {
  const sc = { name: 'x', balloon: true, ksm: true, ratio: 1.5 }
  const a = runMemoryScenario(trace, model, sc, { ...p, sharedFraction: 0 })
  const b = runMemoryScenario(trace, model, { ...sc, ksm: false }, p)
  t.equal(a.vmsPlaced, b.vmsPlaced)
  t.equal(a.meanKsmSavedMiB, 0)
})

t.test('guests that outgrow their hosts: memory short VM-time, reduced by relief moves', async t => {
  // 16 VMs idle for the first half of the day, then busy: admitted on what idle guests could give
  // back (ratio 2), they need all of their memory later. 10 hosts: the first ones are packed, the
  // others stay empty for relief.
  const samples = 24
  const util = Array.from({ length: 16 }, () => Float64Array.from({ length: samples + 1 }, (_, k) => k < samples / 2 ? 0 : 1))
  const day = { day: 'synthetic', names: util.map((_, i) => `vm${i}`), util, samples }
  const hungry = { ...p, hosts: 10, baseFraction: 0.2, activeFraction: 0.8 }
  const sc = { name: 'hungry', balloon: true, ksm: false, ratio: 2 }
  const moved = runMemoryScenario(day, model, sc, hungry)
  const stuck = runMemoryScenario(day, model, sc, { ...hungry, maxMovesPerHost: 0 })
  t.comment(`${moved.vmsPlaced} VMs placed; short VM-time: ${(100 * stuck.shortVmTimeShare).toFixed(2)} % without moves, ${(100 * moved.shortVmTimeShare).toFixed(2)} % with ${moved.migrations} moves`)
  t.ok(stuck.maxCommittedRatio > 1, `overcommitted at placement (${stuck.maxCommittedRatio.toFixed(2)})`)
  t.ok(stuck.shortVmTimeShare > 0, 'without moves, hosts run short of memory once their guests are busy')
  t.ok(moved.migrations > 0 && moved.shortVmTimeShare < stuck.shortVmTimeShare, 'relief moves reduce it')
  t.equal(stuck.migrations, 0)
})

t.test('deterministic', async t => {
  const sc = { name: 'd', balloon: true, ksm: true, ratio: 1.3 }
  t.same(runMemoryScenario(trace, model, sc, p), runMemoryScenario(trace, model, sc, p))
})
