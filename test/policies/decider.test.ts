// Table tests for the per-host decision state machine (policies/decider.ts) that the agent's
// scheduler and the trace simulator's decentralised hosts both run, and for the target-side
// admission they both call (agent/core/migration/reservation.ts admit()): the CPU cap fraction,
// a VM's demand within its cores, a host emptying itself, memory of copies still coming in.
import t from 'tap'
import { HostDecider } from '../../policies/decider.js'
import { seededPrng } from '../../agent/core/prng.js'
import { NO_RULES, type ClusterView, type HostView } from '../../policies/types.js'
import { admit, type AdmissionInput } from '../../agent/core/migration/reservation.js'
import { cfg, host, vm } from './fixtures.js'

const view = (hosts: HostView[]): ClusterView => ({ hosts, rules: NO_RULES, tick: 0 })
const step = (d: HostDecider, hosts: HostView[], self = 'a', o: { receiving?: boolean, outSlots?: number, moving?: (vm: string) => boolean } = {}) => {
  let built = 0
  const moves = d.decide({ self: hosts.find(h => h.id === self) as HostView, view: () => { built++; return view(hosts) }, receiving: o.receiving ?? false, outSlots: o.outSlots ?? 4, ...(o.moving !== undefined ? { moving: o.moving } : {}) })
  return { moves, built }
}

// a: 4800 of 5320 MIPS (0.90 > 0.8); moving one 1200-MIPS VM clears it.
const hot = (): HostView => host('a', [vm('x', 'a', 1200, 900), vm('y', 'a', 1200, 1000), vm('z', 'a', 1200, 1100), vm('w', 'a', 1200, 1200)])
const roomy = (): HostView => host('b', [vm('q', 'b', 2000)])
const full = (): HostView => host('b', [vm('q', 'b', 4300)])

t.test('a calm host builds no view and keeps no streak', t => {
  const d = new HostDecider(cfg(), seededPrng)
  const r = step(d, [host('a', [vm('x', 'a', 2500)]), roomy()])
  t.same(r.moves, [])
  t.equal(r.built, 0, 'the gossiped view is not built')
  t.equal(d.overStreak, 0)
  t.equal(d.underStreak, 0)
  t.equal(d.decisionCount, 1)
  t.end()
})

t.test('overload relief waits for holdDecisions decisions with a plan, then moves', t => {
  const d = new HostDecider(cfg(), seededPrng)
  const r1 = step(d, [hot(), roomy()])
  t.same(r1.moves, [], 'first decision: the plan has held once')
  t.equal(d.overStreak, 1)
  const r2 = step(d, [hot(), roomy()])
  t.same(r2.moves, [{ vm: 'x', from: 'a', to: 'b', reason: 'overload' }], 'second decision: smallest memory first (MMT) to the only target')
  t.end()
})

t.test('the streak counts decisions that found a plan, not the condition alone', t => {
  const d = new HostDecider(cfg(), seededPrng)
  step(d, [hot(), full()])
  t.equal(d.overStreak, 0, 'overloaded, but no target fits: no streak')
  step(d, [hot(), full()])
  const r = step(d, [hot(), roomy()])
  t.same(r.moves, [], 'a target appears: the plan has held once only')
  t.equal(d.overStreak, 1)
  t.equal(step(d, [hot(), roomy()]).moves.length, 1, 'held twice: moves')
  t.end()
})

t.test('cool-down: proposed VMs rest, a cancelled proposal gets its clock back, arrivals rest', t => {
  const d = new HostDecider(cfg(), seededPrng)
  step(d, [hot(), roomy()])
  t.equal(step(d, [hot(), roomy()]).moves[0]?.vm, 'x')
  t.equal(step(d, [hot(), roomy()]).moves[0]?.vm, 'y', 'x was just proposed: the next one is chosen')
  d.cancelled('y')
  t.equal(step(d, [hot(), roomy()]).moves[0]?.vm, 'y', 'y was refused: it may be proposed again at once')
  const d2 = new HostDecider(cfg(), seededPrng)
  d2.arrived('x')
  step(d2, [hot(), roomy()])
  t.equal(step(d2, [hot(), roomy()]).moves[0]?.vm, 'y', 'x just arrived here: it is not sent on')
  const d3 = new HostDecider(cfg(), seededPrng)
  step(d3, [hot(), roomy()])
  const late = step(d3, [hot(), roomy()], 'a', { moving: v => v === 'x' })
  t.equal(late.moves[0]?.vm, undefined, 'the planned VM is moving already: nothing else is invented')
  t.end()
})

t.test('a target that refused is not asked at the next decision, and is again after it', t => {
  const d = new HostDecider(cfg(), seededPrng)
  const hosts = (): HostView[] => [hot(), roomy(), host('c', [vm('r', 'c', 2000)])]
  step(d, hosts())
  const first = step(d, hosts()).moves[0]
  t.equal(first?.vm, 'x')
  const other = first?.to === 'b' ? 'c' : 'b'
  d.cancelled('x')
  d.refused(first?.to as string)
  t.same(step(d, hosts()).moves.map(m => [m.vm, m.to]), [['x', other]], 'the next decision asks the other target')
  d.cancelled('x')
  t.same(step(d, hosts()).moves.map(m => [m.vm, m.to]), [['x', first?.to]], 'the one after asks the refusing target again')
  t.end()
})

t.test('consolidation: held, not while VMs come in, whole once a slot is free (its copies are staged)', t => {
  // a: 600 of 5320 (0.11 < 0.2); b: 3000 of 5320, room for both
  const idle = (): HostView => host('a', [vm('x', 'a', 300, 900), vm('y', 'a', 300, 900)])
  const busy = (): HostView => host('b', [vm('q', 'b', 3000)])
  const d = new HostDecider(cfg(), seededPrng)
  t.same(step(d, [idle(), busy()]).moves, [])
  t.equal(d.underStreak, 1)
  t.same(step(d, [idle(), busy()], 'a', { receiving: true }).moves, [], 'VMs are on their way here: it does not empty itself')
  t.equal(d.underStreak, 2, 'the streak still counts')
  t.same(step(d, [idle(), busy()], 'a', { outSlots: 0 }).moves, [], 'no slot free: a consolidation is not started')
  t.equal(d.underStreak, 3, 'the streak still counts')
  const m = step(d, [idle(), busy()], 'a', { outSlots: 1 }).moves
  t.same(m.map(x => x.vm).sort(), ['x', 'y'], 'the whole consolidation with one slot free: reserved as one group, copied one at a time')
  t.ok(m.every(x => x.reason === 'underload' && x.to === 'b'), 'both to b')
  t.end()
})

t.test('deterministic: two deciders fed the same inputs decide the same', t => {
  const a = new HostDecider(cfg(), seededPrng); const b = new HostDecider(cfg(), seededPrng)
  const seq = [[hot(), roomy()], [hot(), full()], [hot(), roomy()], [hot(), roomy()], [hot(), roomy()]]
  for (const hs of seq) t.same(step(a, hs).moves, step(b, hs).moves)
  t.end()
})

const target = (o: Partial<AdmissionInput> = {}): AdmissionInput => ({
  self: 't',
  capacity: { cpuCores: 2, cpuMipsPerCore: 2660, memMiB: 4096, netMbps: 1000 },
  residents: [{ id: 'r', vcpus: 1, memMiB: 1000, cpuUtil: 0.5, memUsedMiB: 1000, state: 'running' }],
  reservations: [],
  outgoing: [],
  incomingCount: 0,
  inMax: 2,
  clusterInFlight: 0,
  clusterMax: 8,
  draining: false,
  rules: NO_RULES,
  rulesAgreed: true,
  ...o
})

t.test('admission: CPU cap fraction, cores, emptying, copies coming in', t => {
  // residents: 2660 of 5320 MIPS
  t.ok(admit(target(), { vm: 'c', memMiB: 500, cpuDemandMips: 2000 }).ok, 'without a cap: 4660 <= 5320')
  const capped = admit(target({ cpuCapFraction: 0.85 }), { vm: 'c', memMiB: 500, cpuDemandMips: 2000 })
  t.notOk(capped.ok, '4660 > 0.85 x 5320 = 4522')
  t.match(capped, { reason: /cpu/ })
  t.ok(admit(target({ cpuCapFraction: 0.85 }), { vm: 'c', memMiB: 500, cpuDemandMips: 1800 }).ok, '4460 <= 4522')
  t.notOk(admit(target(), { vm: 'c', memMiB: 500, cpuDemandMips: 2700, vcpus: 1 }).ok, 'one vCPU demanding 2700 MIPS does not fit a 2660-MIPS core')
  t.ok(admit(target(), { vm: 'c', memMiB: 500, cpuDemandMips: 2500, vcpus: 1 }).ok, 'within one 2660-MIPS core')
  t.match(admit(target({ evacuating: true }), { vm: 'c', memMiB: 10, cpuDemandMips: 10 }), { ok: false, reason: /emptying/ })
  const coming = target({ reservations: [{ vm: 'm', memMiB: 3000, cpuDemandMips: 0 }], incomingCount: 1 })
  t.match(admit(coming, { vm: 'c', memMiB: 500, cpuDemandMips: 10 }), { ok: false, reason: /memory/ }, 'a copy still coming in holds its memory: 1000 + 3000 + 500 > 4096')
  t.end()
})

t.test('admission: memory overcommit counts reclaimable memory, never beyond the ratio', t => {
  // residents 1000 MiB of 4096; a 3500 MiB candidate makes 4500: 404 over capacity
  const big = { vm: 'c', memMiB: 3500, cpuDemandMips: 10 }
  t.match(admit(target(), big), { ok: false, reason: /memory: 4500 MiB > 4096 MiB$/ }, 'no overcommit by default')
  t.match(admit(target({ memReclaimableMiB: 2000 }), big), { ok: false }, 'reclaimable memory alone does not overcommit (ratio 1)')
  t.ok(admit(target({ memReclaimableMiB: 500, memOvercommitRatio: 1.5 }), big).ok, '4500 <= 4096 + 500 reclaimable (ratio allows 2048)')
  t.match(admit(target({ memReclaimableMiB: 300, memOvercommitRatio: 1.5 }), big), { ok: false, reason: /4500 MiB > 4096 MiB \+ 300 MiB reclaimable \(overcommit ratio 1.5\)/ }, 'not more than what the guests could give')
  t.match(admit(target({ memReclaimableMiB: 5000, memOvercommitRatio: 1.05 }), big), { ok: false, reason: /\+ 205 MiB reclaimable/ }, 'never beyond the ratio (5 % of 4096 = 205)')
  t.end()
})

t.test('a host short of memory is stressed: it moves the fewest VMs that cover the shortfall, never to a host short itself', t => {
  // a: CPU calm (3000 of 5320 MIPS), but 1500 MiB short of memory; b is short too; c has room.
  const short = (): HostView => host('a', [vm('s', 'a', 1000, 1000), vm('m', 'a', 1000, 2000), vm('l', 'a', 1000, 3000)], { memShortMiB: 1500 })
  const b = (): HostView => host('b', [vm('q', 'b', 500, 1000)], { memShortMiB: 10 })
  const c = (): HostView => host('c', [vm('r', 'c', 500, 1000)])
  const d = new HostDecider(cfg(), seededPrng)
  t.same(step(d, [short(), b(), c()]).moves, [], 'the hold time applies: one decision with a plan')
  t.equal(d.overStreak, 1, 'stressed like an overloaded CPU')
  t.same(step(d, [short(), b(), c()]).moves, [{ vm: 'm', from: 'a', to: 'c', reason: 'overload' }], 'the smallest VM that covers 1500 MiB (m, 2000), to c (b is short itself)')
  const d2 = new HostDecider(cfg({ guards: { holdDecisions: 1, cooldownDecisions: 0, minGain: 0 } }), seededPrng)
  t.same(step(d2, [{ ...short(), memShortMiB: 4500 }, c()]).moves.map(m => m.vm), ['l', 'm'], 'no single VM covers 4500: the largest first, then the smallest that covers the rest')
  t.same(step(new HostDecider(cfg(), seededPrng), [{ ...short(), memShortMiB: 0 }, c()]).moves, [], 'not short: calm')
  // The shortfall is measured with the VMs that are leaving still on the host: they cover it.
  const leaving = (): HostView => ({ ...short(), vms: short().vms.map(v => v.id === 'm' ? { ...v, migrating: true } : v) })
  t.same(step(d2, [leaving(), c()]).moves, [], 'm (2000 MiB) is already leaving for a 1500 MiB shortfall: nothing more')
  t.same(step(d2, [{ ...leaving(), memShortMiB: 2500 }, c()]).moves.map(m => m.vm), ['s'], 'for 2500 MiB, what m does not cover (500): the smallest VM that covers it (s, 1000 MiB)')
  t.end()
})

t.test('a CPU overload that the host\'s CPU allocation resolves is not stress; one it cannot resolve is', t => {
  const d = new HostDecider(cfg({ guards: { holdDecisions: 1, cooldownDecisions: 0, minGain: 0 } }), seededPrng)
  t.same(step(d, [{ ...hot(), cpuResolved: true }, roomy()]).moves, [], 'resolved inside the host: no migration')
  t.equal(d.overStreak, 0, 'and no stress streak')
  t.equal(step(d, [{ ...hot(), cpuResolved: false }, roomy()]).moves.length, 1, 'not resolved: relieved by a migration as before')
  t.end()
})

t.test('consolidation: a VM of the plan that cannot go now (moving already, or a replica hosted here) holds the whole consolidation back', t => {
  const idle = (): HostView => host('a', [vm('x', 'a', 300, 900), vm('y', 'a', 300, 900)])
  const busy = (): HostView => host('b', [vm('q', 'b', 3000)])
  const d = new HostDecider(cfg(), seededPrng)
  for (let i = 0; i < 5; i++) step(d, [idle(), busy()], 'a', { moving: vm => vm === 'y' })
  t.same(step(d, [idle(), busy()], 'a', { moving: vm => vm === 'y' }).moves, [], 'x alone would leave the host half emptied')
  t.ok(d.underStreak > 0, 'the streak still counts')
  t.same(step(d, [idle(), busy()]).moves.map(x => x.vm).sort(), ['x', 'y'], 'whole once y may go')
  t.end()
})
