import t from 'tap'
import { chooseRelief, defaultReplicationParams, reliefCosts, replicaDemandMips, shouldRetire, type ReplicationParams } from '../../policies/replication.js'
import { defaultPolicyConfig } from '../../policies/config.js'
import type { PolicyConfig } from '../../policies/plan.js'
import { NO_RULES, type ClusterView, type HostView, type Move, type RuleSet, type VmView } from '../../policies/types.js'

/** A static-threshold policy so that the tables read directly (overloaded iff util > 0.8). */
function cfg (): PolicyConfig {
  return { ...defaultPolicyConfig(), overload: { kind: 'thr', threshold: 0.8 }, placement: { kind: 'leastLoaded', cpuCapFraction: 0.85 } }
}
function vm (id: string, host: string, demand: number, mem = 1024, cpu = 1000): VmView {
  return { id, host, cpuMips: cpu, cpuDemandMips: demand, memMiB: mem, history: [], migrating: false }
}
function host (id: string, vms: VmView[], o: Partial<HostView> = {}): HostView {
  return { id, cpuMips: 4000, coreMips: 1000, memMiB: 8192, netMbps: 1000, powerCurveW: [], vms, reservedMips: 0, reservedMemMiB: 0, history: [], active: vms.length > 0, ...o }
}
function view (hosts: HostView[], rules: RuleSet = NO_RULES): ClusterView { return { hosts, rules, tick: 10 } }

// a: 3400 MIPS of 4000 (0.85 > 0.8). Moving `s` (800) clears it; so does replicating it (400 stays: 3000 / 4000 = 0.75).
const base = (): HostView[] => [
  host('a', [vm('s', 'a', 800, 4096), vm('x', 'a', 900), vm('y', 'a', 850), vm('z', 'a', 850)]),
  host('b', [vm('w', 'b', 500)]),
  host('c', [vm('q', 'c', 1500)])
]
const move: Move = { vm: 's', from: 'a', to: 'b', reason: 'overload' }
const all = (): boolean => true
const prefer: ReplicationParams = { ...defaultReplicationParams(), mode: 'prefer' }

t.test('costs: migration from the memory copy, replication from the overhead and the boot', async t => {
  const [a, b] = base() as [HostView, HostView]
  const s = a.vms[0] as VmView
  const p = defaultReplicationParams()
  const c = reliefCosts(s, a, b, p, 0.85)
  const copySec = 4096 / (1000 * 0.5 / 8)
  const excess = 3400 - 4000 * 0.85
  t.equal(excess, 0)
  t.equal(c.migrate, 0.1 * 800 * copySec)
  t.equal(c.replicate, 0.02 * 1000 * 300 + excess * Math.max(0, 30 - copySec))
  t.equal(replicaDemandMips(s, p), 400 + 20)
})

t.test('table: when a stateless VM is replicated instead of migrated', async t => {
  const p = defaultReplicationParams()
  // [name, hosts, moves, stateless?, params, rules, expected kinds, expected replica target]
  const cases: Array<[string, HostView[], Move[], (v: string) => boolean, ReplicationParams, RuleSet, string[], string | null]> = [
    ['mode off: always migrate', base(), [move], all, { ...p, mode: 'off' }, NO_RULES, ['migrate'], null],
    ['not stateless: migrate', base(), [move], () => false, prefer, NO_RULES, ['migrate'], null],
    ['prefer: replicate on the least loaded host that fits', base(), [move], all, prefer, NO_RULES, ['replicate'], 'b'],
    // 4 GiB over half a 1 Gbit/s link: 65.5 s of copy at 10 % of 800 MIPS = 5243 < 6000 overhead
    ['cost: overhead over a decision dearer than the copy: migrate', base(), [move], all, p, NO_RULES, ['migrate'], null],
    // a 1-minute horizon makes the replica cheaper (1200 < 5243)
    ['cost: cheaper replica: replicate', base(), [move], all, { ...p, horizonSec: 60 }, NO_RULES, ['replicate'], 'b'],
    // half of s does not clear a: 3400 - 400 = 3000... with 200 more on a it is 3200 = 0.8, not over; with 300 more it is over
    ['half relief not enough: migrate', [host('a', [vm('s', 'a', 800, 4096), vm('x', 'a', 1000), vm('y', 'a', 1000), vm('z', 'a', 1000)]), ...base().slice(1)], [move], all, prefer, NO_RULES, ['migrate'], null],
    ['no RAM for a whole copy anywhere: migrate', [base()[0] as HostView, host('b', [vm('w', 'b', 500, 6000)]), host('c', [vm('q', 'c', 1500, 6000)])], [move], all, prefer, NO_RULES, ['migrate'], null],
    ['CPU cap: b full, c has room: replicate on c', [base()[0] as HostView, host('b', [vm('w', 'b', 3000)]), host('c', [vm('q', 'c', 1500)])], [move], all, prefer, NO_RULES, ['replicate'], 'c'],
    ['hard VM-host anti-affinity keeps the copy off b', base(), [move], all, prefer, { vmVm: [], vmHost: [{ kind: 'anti-affinity', vm: 's', hosts: ['b'], hard: true }] }, ['replicate'], 'c'],
    ['hard anti-affinity with w keeps the copy off b', base(), [move], all, prefer, { vmVm: [{ kind: 'anti-affinity', vms: ['s', 'w'], hard: true }], vmHost: [] }, ['replicate'], 'c'],
    ['hard VM-host affinity to a only: no copy anywhere', base(), [move], all, prefer, { vmVm: [], vmHost: [{ kind: 'affinity', vm: 's', hosts: ['a'], hard: true }] }, ['migrate'], null],
    ['hard VM-VM affinity: never replicated', base(), [move], all, prefer, { vmVm: [{ kind: 'affinity', vms: ['s', 'x'], hard: true }], vmHost: [] }, ['migrate'], null],
    ['consolidation plans are left alone', base(), [{ ...move, reason: 'underload' }], all, prefer, NO_RULES, ['migrate'], null]
  ]
  for (const [name, hosts, moves, stateless, params, rules, kinds, to] of cases) {
    const r = chooseRelief(view(hosts, rules), 'a', moves, stateless, cfg(), params)
    t.same(r.map(x => x.kind), kinds, name)
    const rep = r.find(x => x.kind === 'replicate')
    t.equal(rep?.kind === 'replicate' ? rep.to : null, to, `${name}: target`)
  }
})

t.test('a VM that already has a copy is not replicated again, and no copy lands where one is', async t => {
  const r = chooseRelief(view(base()), 'a', [move], all, cfg(), prefer, new Map([['s', ['a', 'c']]]))
  t.same(r.map(x => x.kind), ['migrate'])
  // a copy elsewhere (not counted as one of s's own copies) does not block
  const r2 = chooseRelief(view(base()), 'a', [move], all, cfg(), prefer, new Map([['x', ['a', 'b']]]))
  t.same(r2.map(x => x.kind), ['replicate'])
})

t.test('two replicas of one plan count each other on their targets', async t => {
  // a is far over; both s1 and s2 must go; b can take one copy only (CPU cap 0.85 x 2000 = 1700)
  const hosts = [
    host('a', [vm('s1', 'a', 900), vm('s2', 'a', 900), vm('x', 'a', 1000), vm('y', 'a', 1000)]),
    host('b', [vm('w', 'b', 1200)], { cpuMips: 2000 }),
    host('c', [vm('q', 'c', 2500)])
  ]
  const moves: Move[] = [{ vm: 's1', from: 'a', to: 'b', reason: 'overload' }, { vm: 's2', from: 'a', to: 'c', reason: 'overload' }]
  const r = chooseRelief(view(hosts), 'a', moves, all, cfg(), prefer)
  const targets = r.filter(x => x.kind === 'replicate').map(x => x.kind === 'replicate' ? x.to : '')
  t.equal(new Set(targets).size, targets.length, 'never two copies planned onto one host when it cannot hold both')
  // b: 1200 + 470 = 1670 <= 1700, a second 470 would not fit
  t.ok(targets.filter(x => x === 'b').length <= 1)
})

t.test('retire: when the home host can take the whole demand back', async t => {
  const p = defaultReplicationParams()
  // the original reports its half (400); home a at 400 + other + 400 back: other 2000 -> 0.7 <= 0.7 retire, 2100 -> 0.725 keep
  const s = vm('s', 'a', 400)
  const cases: Array<[string, number, boolean]> = [['room', 2000, true], ['no room', 2100, false]]
  for (const [name, other, want] of cases) {
    const a = host('a', [s, vm('x', 'a', other)])
    t.equal(shouldRetire(view([a]), 'a', s, cfg(), p), want, name)
  }
  t.equal(shouldRetire(view([]), 'gone', s, cfg(), p), true, 'home gone: retire')
})
