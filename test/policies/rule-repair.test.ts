// Repairs of hard rules broken where VMs already run (a rule agreed after they were placed):
// which VM moves, where, and that two hosts never swap VMs over one affinity rule; the decider
// moves them first, with no hold, and only when a hard rule names one of its VMs.
import t from 'tap'
import { seededPrng } from '../../agent/core/prng.js'
import { defaultPolicyConfig } from '../../policies/config.js'
import { HostDecider } from '../../policies/decider.js'
import { planHost, repairRules } from '../../policies/plan.js'
import { brokenHardRules } from '../../policies/rules.js'
import { NO_RULES, type ClusterView, type HostView, type RuleSet, type VmView } from '../../policies/types.js'

const G5 = [93.7, 97, 101, 105, 110, 116, 121, 125, 129, 133, 135]
function vm (id: string, host: string, demand = 500, mem = 512): VmView {
  return { id, host, cpuMips: 2500, cpuDemandMips: demand, memMiB: mem, history: [], migrating: false }
}
function host (id: string, vms: VmView[], o: Partial<HostView> = {}): HostView {
  // A middling load: neither overloaded nor a consolidation candidate on its own.
  return { id, cpuMips: 5320, coreMips: 2660, memMiB: 8192, netMbps: 1000, powerCurveW: G5, vms, reservedMips: 0, reservedMemMiB: 0, history: [0.5, 0.5, 0.5], active: vms.length > 0, ...o }
}
const cfg = defaultPolicyConfig()
const view = (hosts: HostView[], rules: RuleSet): ClusterView => ({ hosts, rules, tick: 10 })
const placed = (v: ClusterView, moves: Array<{ vm: string, to: string }>): Map<string, string> => {
  const p = new Map<string, string>()
  for (const h of v.hosts) for (const x of h.vms) p.set(x.id, h.id)
  for (const m of moves) p.set(m.vm, m.to)
  return p
}

t.test('anti-affinity on one host: the first VM by id stays, the others leave to hosts the rule allows', t => {
  const rules: RuleSet = { vmVm: [{ kind: 'anti-affinity', vms: ['a', 'b', 'c'], hard: true }], vmHost: [] }
  const v = view([host('h1', [vm('a', 'h1'), vm('b', 'h1'), vm('c', 'h1'), vm('x', 'h1')]), host('h2', [vm('y', 'h2')]), host('h3', [vm('z', 'h3')])], rules)
  const moves = repairRules(v, v.hosts[0]!, cfg)
  t.same(moves.map(m => m.vm).sort(), ['b', 'c'], 'b and c leave, a and x stay')
  t.ok(moves.every(m => m.reason === 'rule' && m.from === 'h1'))
  t.not(moves[0]!.to, moves[1]!.to, 'not both to one host')
  t.same(brokenHardRules(rules, placed(v, moves)), [], 'the rule holds after the moves')
  t.same(repairRules(v, v.hosts[1]!, cfg), [], 'a host that breaks nothing moves nothing')
  t.end()
})

t.test('VM-host rules: a VM on a host the rule excludes moves to an allowed one', t => {
  const rules: RuleSet = { vmVm: [], vmHost: [{ kind: 'affinity', vm: 'a', hosts: ['h3'], hard: true }, { kind: 'anti-affinity', vm: 'b', hosts: ['h1'], hard: true }] }
  const v = view([host('h1', [vm('a', 'h1'), vm('b', 'h1')]), host('h2', [vm('y', 'h2')]), host('h3', [vm('z', 'h3')])], rules)
  const moves = repairRules(v, v.hosts[0]!, cfg)
  t.same(moves.map(m => m.vm).sort(), ['a', 'b'], 'both move')
  t.equal(moves.find(m => m.vm === 'a')?.to, 'h3', 'a goes to the one host it may run on')
  t.not(moves.find(m => m.vm === 'b')?.to, 'h1', 'b leaves h1')
  t.same(brokenHardRules(rules, placed(v, moves)), [])
  t.end()
})

t.test('affinity across hosts: the others come to the host of the group\'s first VM, never a swap', t => {
  const rules: RuleSet = { vmVm: [{ kind: 'affinity', vms: ['b', 'a'], hard: true }], vmHost: [] }
  const v = view([host('h1', [vm('b', 'h1')]), host('h2', [vm('a', 'h2')]), host('h3', [vm('z', 'h3')])], rules)
  t.same(repairRules(v, v.hosts[1]!, cfg), [], 'a (the first by id) stays on h2')
  const m1 = repairRules(v, v.hosts[0]!, cfg)
  t.same(m1.map(m => `${m.vm}->${m.to}`), ['b->h2'], 'b comes to a')
  t.end()
})

t.test('no target the rules allow, or the VM already moving: nothing', t => {
  const rules: RuleSet = { vmVm: [], vmHost: [{ kind: 'affinity', vm: 'a', hosts: ['h9'], hard: true }] }
  const v = view([host('h1', [vm('a', 'h1')]), host('h2', [])], rules)
  t.same(repairRules(v, v.hosts[0]!, cfg), [], 'the only allowed host is not in the view')
  const r2: RuleSet = { vmVm: [{ kind: 'anti-affinity', vms: ['a', 'b'], hard: true }], vmHost: [] }
  const v2 = view([host('h1', [vm('a', 'h1'), { ...vm('b', 'h1'), migrating: true }]), host('h2', [vm('y', 'h2')])], r2)
  t.same(repairRules(v2, v2.hosts[0]!, cfg), [], 'b is on its way already; a stays')
  const soft: RuleSet = { vmVm: [{ kind: 'anti-affinity', vms: ['a', 'b'], hard: false }], vmHost: [] }
  const v3 = view([host('h1', [vm('a', 'h1'), vm('b', 'h1')]), host('h2', [])], soft)
  t.same(repairRules(v3, v3.hosts[0]!, cfg), [], 'a soft rule is not repaired by moves')
  t.end()
})

t.test('the decider repairs first, with no hold, and only when a hard rule names one of its VMs', t => {
  const rules: RuleSet = { vmVm: [{ kind: 'anti-affinity', vms: ['a', 'b'], hard: true }], vmHost: [] }
  // Both hosts about half busy: neither overloaded nor emptying itself.
  const hosts = [host('h1', [vm('a', 'h1', 1400), vm('b', 'h1', 1400)]), host('h2', [vm('y', 'h2', 2800)])]
  const d = new HostDecider(cfg, seededPrng)
  let built = 0
  const moves = d.decide({ self: hosts[0]!, view: () => { built++; return view(hosts, rules) }, receiving: false, outSlots: 2, rules })
  t.same(moves.map(m => `${m.vm}:${m.reason}`), ['b:rule'], 'b moves at the first decision (no hold)')
  t.equal(built, 1)
  const d2 = new HostDecider(cfg, seededPrng)
  built = 0
  t.same(d2.decide({ self: hosts[1]!, view: () => { built++; return view(hosts, rules) }, receiving: false, outSlots: 2, rules }), [])
  t.equal(built, 0, 'a host whose VMs no hard rule names does not even build the view')
  t.same(new HostDecider(cfg, seededPrng).decide({ self: hosts[0]!, view: () => view(hosts, NO_RULES), receiving: false, outSlots: 2, rules: NO_RULES }), [], 'no rules, no repair')
  t.same(planHost(view(hosts, rules), 'h1', cfg, { overStreak: 0, underStreak: 0, lastMoved: new Map(), random: seededPrng }).map(m => m.reason), ['rule'], 'planHost (and so the cluster plan) puts the repair first')
  t.end()
})

t.test('affinity of three VMs split over hosts: each VM off the first VM\'s host comes to it, one by one', t => {
  const rules: RuleSet = { vmVm: [{ kind: 'affinity', vms: ['a', 'b', 'c'], hard: true }], vmHost: [] }
  // a on h1; b and c together on h2: neither b nor c is allowed on h1 while the other is on h2,
  // yet the rule holds only once both are there.
  const v = view([host('h1', [vm('a', 'h1')]), host('h2', [vm('b', 'h2'), vm('c', 'h2')]), host('h3', [vm('z', 'h3')])], rules)
  t.same(repairRules(v, v.hosts[0]!, cfg), [], 'a (the first by id) stays on h1')
  const m2 = repairRules(v, v.hosts[1]!, cfg)
  t.same(m2.map(m => `${m.vm}->${m.to}`).sort(), ['b->h1', 'c->h1'], 'b and c come to a')
  t.same(brokenHardRules(rules, placed(v, m2)), [], 'the rule holds after the moves')
  // One at a time (a decision that moves one VM): the other follows at the next decision.
  const one = repairRules(v, v.hosts[1]!, { ...cfg, maxMovesPerDecision: 1 })
  t.equal(one.length, 1)
  t.equal(one[0]!.to, 'h1')
  // Each on its own host: the two others come to a.
  const v3 = view([host('h1', [vm('a', 'h1')]), host('h2', [vm('b', 'h2')]), host('h3', [vm('c', 'h3')])], rules)
  t.same(repairRules(v3, v3.hosts[1]!, cfg).map(m => `${m.vm}->${m.to}`), ['b->h1'])
  t.same(repairRules(v3, v3.hosts[2]!, cfg).map(m => `${m.vm}->${m.to}`), ['c->h1'])
  // The first VM's host forbidden to b by a VM-host rule: b has nowhere to go, nothing moves.
  const r4: RuleSet = { vmVm: rules.vmVm, vmHost: [{ kind: 'anti-affinity', vm: 'b', hosts: ['h1'], hard: true }] }
  t.same(repairRules(view([...v3.hosts], r4), v3.hosts[1]!, cfg), [], 'no host the rules allow for b')
  // The first VM itself on a host its VM-host rule forbids: it goes to the others.
  const r5: RuleSet = { vmVm: [{ kind: 'affinity', vms: ['a', 'b'], hard: true }], vmHost: [{ kind: 'anti-affinity', vm: 'a', hosts: ['h1'], hard: true }] }
  const v5 = view([host('h1', [vm('a', 'h1')]), host('h2', [vm('b', 'h2')]), host('h3', [vm('z', 'h3')])], r5)
  t.same(repairRules(v5, v5.hosts[0]!, cfg).map(m => `${m.vm}->${m.to}`), ['a->h2'], 'a leaves the host it may not run on, to b')
  t.end()
})
