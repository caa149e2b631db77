// Memory overcommit as a cluster decision: a target admits VMs beyond its memory only by what its
// guests could give back now (the reclaimable memory in its load report), never beyond
// memory x (ratio - 1), in every place that picks a target: the decider's migration plan, the
// replica target and the HA restart assignment, as the target-side admission (reservation.ts,
// test/policies/decider.test.ts) does.
import t from 'tap'
import { HostDecider } from '../../policies/decider.js'
import { seededPrng } from '../../agent/core/prng.js'
import { NO_RULES, hostMemAdmitMiB, memOvercommitMiB, type ClusterView, type HostView } from '../../policies/types.js'
import { fits } from '../../policies/placement.js'
import { defaultReplicationParams, replicaTarget } from '../../policies/replication.js'
import { assignRestarts, type HaVmSpec } from '../../agent/core/ha/index.js'
import { cfg, host, vm } from './fixtures.js'

const view = (hosts: HostView[]): ClusterView => ({ hosts, rules: NO_RULES, tick: 0 })

t.test('the overcommit a host admits: reclaimable memory, within the ratio', t => {
  t.equal(memOvercommitMiB(8192, 3000, 1), 0, 'ratio 1: none')
  t.equal(memOvercommitMiB(8192, 3000, 1.25), 2048, 'never beyond memory x (ratio - 1)')
  t.equal(memOvercommitMiB(8192, 1000, 1.25), 1000, 'never beyond what the guests could give')
  t.equal(memOvercommitMiB(8192, -5, 2), 0, 'nothing reclaimable: none')
  t.equal(hostMemAdmitMiB({ memMiB: 8192 }), 8192, 'no overcommit by default')
  t.equal(hostMemAdmitMiB({ memMiB: 8192, memOverMiB: 1000 }), 9192)
  t.end()
})

t.test('placement: a target fits a VM beyond its memory only by its admitted overcommit', t => {
  const full = host('b', [vm('q', 'b', 500, 7500)])
  const big = vm('n', 'a', 500, 1200)
  t.notOk(fits(full, big), '7500 + 1200 > 8192')
  t.ok(fits({ ...full, memOverMiB: 600 }, big), '8700 <= 8192 + 600')
  t.notOk(fits({ ...full, memOverMiB: 400 }, big), '8700 > 8192 + 400')
  t.end()
})

t.test('the decider moves a VM to a target only within the target\'s admitted overcommit', t => {
  // a: 4800 of 5320 MIPS, over the 0.8 threshold; b has CPU room but its memory is taken.
  const hot = (): HostView => host('a', [vm('x', 'a', 1200, 900), vm('y', 'a', 1200, 1000), vm('z', 'a', 1200, 1100), vm('w', 'a', 1200, 1200)])
  const memFull = (over: number): HostView => host('b', [vm('q', 'b', 500, 7800)], over > 0 ? { memOverMiB: over } : {})
  const decide = (over: number): string[] => {
    const d = new HostDecider(cfg({ guards: { holdDecisions: 1, cooldownDecisions: 0, minGain: 0 } }), seededPrng)
    const hosts = [hot(), memFull(over)]
    return d.decide({ self: hosts[0] as HostView, view: () => view(hosts), receiving: false, outSlots: 4 }).map(m => `${m.vm}->${m.to}`)
  }
  t.same(decide(0), [], 'no overcommit: no target has the memory')
  t.same(decide(1200), ['x->b'], 'b admits 1200 MiB of its guests\' reclaimable memory: x (900 MiB) goes')
  t.same(decide(500), [], '500 MiB is not enough for any of them')
  t.end()
})

t.test('a replica target counts the admitted overcommit', t => {
  const src = host('a', [vm('web', 'a', 2500, 1000)])
  const full = host('b', [vm('q', 'b', 500, 7600)])
  const pick = (b: HostView): string | null => replicaTarget(view([src, b]), src.vms[0] as never, cfg(), defaultReplicationParams(), new Map(), new Map(), new Map())?.id ?? null
  t.equal(pick(full), null, '7600 + 1000 > 8192')
  t.equal(pick({ ...full, memOverMiB: 500 }), 'b', '8600 <= 8192 + 500')
  t.end()
})

t.test('an HA restart counts the target\'s admitted overcommit', t => {
  const spec = (id: string): HaVmSpec => ({ id, home: 'x', priority: 0, cpuMips: 500, memMiB: 2048, source: { kind: 'shared', definition: id } })
  const h = (id: string, over?: number) => ({ id, cpuMips: 4000, coreMips: 4000, memMiB: 4096, usedMips: 0, usedMemMiB: 3072, ...(over !== undefined ? { memOverMiB: over } : {}) })
  const assign = (over?: number): string | null => assignRestarts({ orphans: [spec('db')], hosts: [h('h1', over)], rules: NO_RULES, placement: new Map() }).get('db') ?? null
  t.equal(assign(), null, '3072 + 2048 > 4096: it waits')
  t.equal(assign(1024), 'h1', '5120 <= 4096 + 1024 reclaimable under the ratio')
  t.equal(assign(1000), null, 'not a MiB more than admitted')
  t.end()
})
