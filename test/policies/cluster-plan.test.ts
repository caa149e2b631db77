// The cluster plan (policies/cluster-plan.ts): every host's own decision, in host order over one
// working view. Checked: the same plan for any order of hosts and VMs and twice for the same view;
// predicted loads that match the view with the steps applied; capacity and hard rules kept over the
// whole plan; no VM moved twice; dependencies named; consolidation only towards busier hosts.
import t from 'tap'
import { clusterPlan } from '../../policies/cluster-plan.js'
import { planFits } from '../../policies/plan.js'
import { NO_RULES, hostDemandMips, type ClusterView, type HostView, type RuleSet } from '../../policies/types.js'
import { cfg, host, vm } from './fixtures.js'

const view = (hosts: HostView[], rules: RuleSet = NO_RULES): ClusterView => ({ hosts, rules, tick: 7 })

/** a and b overloaded, c and d roomy, e nearly idle (consolidation candidate) and small. */
function cluster (): HostView[] {
  return [
    host('a', [vm('a1', 'a', 1200, 900), vm('a2', 'a', 1200, 1000), vm('a3', 'a', 1200, 1100), vm('a4', 'a', 1200, 1200)]),
    host('b', [vm('b1', 'b', 1500, 2000), vm('b2', 'b', 1500, 500), vm('b3', 'b', 1500, 700)]),
    host('c', [vm('c1', 'c', 2000)]),
    host('d', [vm('d1', 'd', 1800)]),
    // e's memory takes none of a's or b's VMs: it can only give its own away.
    host('e', [vm('e1', 'e', 300, 600)], { memMiB: 1000 })
  ]
}

t.test('one plan for the view, whatever the order of hosts and VMs, and the same twice', t => {
  const p1 = clusterPlan(view(cluster()), cfg())
  const shuffled = cluster().reverse().map(h => ({ ...h, vms: h.vms.slice().reverse() }))
  const p2 = clusterPlan(view(shuffled), cfg())
  t.same(p2, p1, 'host and VM order do not matter')
  t.same(clusterPlan(view(cluster()), cfg()), p1, 'an unchanged view gives the same plan')
  t.ok(p1.steps.length >= 3, `a plan with steps (${p1.steps.map(s => `${s.vm} ${s.from}->${s.to} ${s.reason.kind}`).join('; ')})`)
  t.end()
})

t.test('the plan relieves both overloaded hosts, keeps capacity, moves no VM twice, and empties e', t => {
  const c = cfg()
  const p = clusterPlan(view(cluster()), c)
  const vms = p.steps.map(s => s.vm)
  t.equal(new Set(vms).size, vms.length, 'no VM moves twice')
  t.ok(planFits(view(cluster()), p.steps.map(s => ({ vm: s.vm, from: s.from, to: s.to, reason: s.reason.kind === 'underload' ? 'underload' as const : 'overload' as const }))), 'capacity holds over the whole plan, step by step')
  t.ok(p.final.a!.cpu <= 0.8 && p.final.b!.cpu <= 0.8, `a and b end under the threshold (${p.final.a!.cpu.toFixed(2)}, ${p.final.b!.cpu.toFixed(2)})`)
  for (const s of p.steps) t.ok(s.target.after.cpu <= 0.85 + 1e-9, `step ${s.step}: target ${s.to} stays under the cap (${s.target.after.cpu.toFixed(2)})`)
  t.same(p.emptied, ['e'], 'the idle host is emptied onto busier ones')
  const e = p.steps.find(s => s.from === 'e')
  t.ok(e !== undefined && e.reason.kind === 'underload' && e.target.before.cpu > e.source.before.cpu, 'consolidation goes to a busier host')
  const over = p.steps.filter(s => s.reason.kind === 'overload')
  t.ok(over.every(s => s.rating === 5), 'relieving a host over its threshold now is rated 5')
  t.ok(p.steps.every(s => s.cost.bytes > 0 && s.cost.seconds > 0), 'every step has a cost')
  t.end()
})

t.test('predicted loads are the view with the steps applied', t => {
  const hosts = cluster()
  const p = clusterPlan(view(hosts), cfg())
  const demand = new Map(hosts.map(h => [h.id, hostDemandMips(h)]))
  const vmDemand = new Map(hosts.flatMap(h => h.vms.map(v => [v.id, v.cpuDemandMips] as const)))
  for (const s of p.steps) {
    t.equal(Number(s.source.before.cpu.toFixed(6)), Number(((demand.get(s.from) ?? 0) / 5320).toFixed(6)), `step ${s.step}: source before`)
    demand.set(s.from, (demand.get(s.from) ?? 0) - (vmDemand.get(s.vm) ?? 0))
    demand.set(s.to, (demand.get(s.to) ?? 0) + (vmDemand.get(s.vm) ?? 0))
    t.equal(Number(s.target.after.cpu.toFixed(6)), Number(((demand.get(s.to) ?? 0) / 5320).toFixed(6)), `step ${s.step}: target after`)
  }
  for (const h of hosts) t.equal(Number(p.final[h.id]!.cpu.toFixed(6)), Number(((demand.get(h.id) ?? 0) / 5320).toFixed(6)), `${h.id}: final load`)
  t.end()
})

t.test('a step that needs room another step makes names it', t => {
  // b is full; a is overloaded; b's own VM must leave first (b is overloaded too) before ... the
  // plan orders host a's steps first (host order), so only b's later steps can depend on a's.
  const hosts = [
    host('a', [vm('a1', 'a', 2400, 4000), vm('a2', 'a', 2400, 1000)]),
    host('b', [vm('b1', 'b', 300, 7000)], { memMiB: 8192 }),
    host('c', [vm('c1', 'c', 1000, 1000)])
  ]
  const p = clusterPlan(view(hosts), cfg())
  t.ok(p.steps.some(s => s.after.length > 0), 'the plan has a step that waits for another')
  for (const s of p.steps) {
    for (const d of s.after) {
      const dep = p.steps[d - 1]!
      t.ok(dep.step < s.step && (dep.from === s.to || dep.vm === s.vm), `step ${s.step} after ${d}: it frees ${s.to}`)
    }
  }
  t.pass(`steps: ${p.steps.map(s => `${s.step}:${s.vm} ${s.from}->${s.to} after [${s.after.join(',')}]`).join('; ')}`)
  t.end()
})

t.test('hard rules hold over the whole plan', t => {
  const rules: RuleSet = { vmVm: [{ kind: 'anti-affinity', vms: ['a1', 'c1'], hard: true }, { kind: 'anti-affinity', vms: ['a2', 'd1'], hard: true }], vmHost: [] }
  const p = clusterPlan(view(cluster(), rules), cfg())
  const where = new Map(cluster().flatMap(h => h.vms.map(v => [v.id, h.id] as const)))
  for (const s of p.steps) where.set(s.vm, s.to)
  t.not(where.get('a1'), where.get('c1'), 'a1 and c1 apart')
  t.not(where.get('a2'), where.get('d1'), 'a2 and d1 apart')
  t.end()
})

t.test('a calm cluster has an empty plan; maxSteps bounds it', t => {
  const calm = [host('a', [vm('a1', 'a', 2500)]), host('b', [vm('b1', 'b', 2500)])]
  t.same(clusterPlan(view(calm), cfg()).steps, [])
  t.equal(clusterPlan(view(cluster()), cfg(), { maxSteps: 1 }).steps.length, 1)
  t.end()
})

t.test('a host short of memory moves out what covers the shortfall, not everything', t => {
  // a is calm on CPU but 1500 MiB short of memory with nothing left to reclaim inside it.
  const hosts = [
    host('a', [vm('a1', 'a', 500, 1000), vm('a2', 'a', 500, 2000), vm('a3', 'a', 500, 1500), vm('a4', 'a', 500, 1200)], { memShortMiB: 1500 }),
    host('b', [vm('b1', 'b', 2500)]),
    host('c', [vm('c1', 'c', 2500)])
  ]
  const p = clusterPlan(view(hosts), cfg())
  const fromA = p.steps.filter(s => s.from === 'a')
  t.equal(fromA.length, 1, `one VM covers 1500 MiB (${fromA.map(s => `${s.vm} ${s.reason.kind}`).join(', ')})`)
  t.equal(fromA[0]?.vm, 'a3', 'the smallest VM that covers the shortfall')
  t.equal(fromA[0]?.reason.kind, 'memory', 'shown as memory relief, not as a CPU overload')
  t.match(fromA[0]?.reason.text ?? '', /memory: 1500 MiB short/)
  t.equal(fromA[0]?.rating, 5)
  t.end()
})
