// Consolidation by the binding resource: where an emptying host's VMs go.
// - memory binds: of two hosts with room, the VM goes to the one with less idle power per MiB
//   (a G4 host, 86 W for 4 GiB, rather than a G5 host, 93.7 W), though the G5 adds less dynamic power;
// - a VM goes only to hosts whose cores can give it its nominal size (a 2500-MIPS VM idling at
//   300 MIPS does not go to 1860-MIPS cores); one nominally at most 10 % larger than the cores (a
//   2000-MIPS VM on 1860-MIPS cores) does when its recent peak stayed within 75 % of a core, and
//   not when it came nearer, nor without a history;
// - sources that see the same view spread over equally good targets instead of all asking one;
// - of the underloaded hosts, those whose VMs are small (in memory) empty themselves first;
// - and as many of them as the view's load does not need, if that is more than the quantile lets.
import t from 'tap'
import { seededPrng } from '../../agent/core/prng.js'
import { planHost, surplusShare, type PolicyConfig } from '../../policies/plan.js'
import { defaultPolicyConfig } from '../../policies/config.js'
import { NO_RULES, type ClusterView, type HostView, type VmView } from '../../policies/types.js'

const G5 = [93.7, 97, 101, 105, 110, 116, 121, 125, 129, 133, 135]
const G4 = [86, 89.4, 92.6, 96, 99.5, 102, 106, 108, 112, 114, 117]

function vm (id: string, host: string, demand: number, mem: number, size = 1000): VmView {
  return { id, host, cpuMips: size, cpuDemandMips: demand, memMiB: mem, history: [], migrating: false }
}
function g5 (id: string, vms: VmView[]): HostView {
  return { id, cpuMips: 5320, coreMips: 2660, memMiB: 4096, netMbps: 1000, powerCurveW: G5, vms, reservedMips: 0, reservedMemMiB: 0, history: [], active: vms.length > 0 }
}
function g4 (id: string, vms: VmView[]): HostView {
  return { ...g5(id, vms), cpuMips: 3720, coreMips: 1860, powerCurveW: G4 }
}
const cfg: PolicyConfig = { ...defaultPolicyConfig(), guards: { holdDecisions: 1, cooldownDecisions: 0, minGain: 5 } }
const held = { overStreak: 0, underStreak: 1, lastMoved: new Map<string, number>(), random: seededPrng }

t.test('memory binds: the VM goes where its share of idle power is lowest', t => {
  const src = g5('src', [vm('a', 'src', 100, 1740)])
  // both targets are busier by CPU than the source and have room for 1740 MiB
  const t4 = g4('t4', [vm('x', 't4', 400, 1740)])
  const t5 = g5('t5', [vm('y', 't5', 600, 1740)])
  // two hosts cheaper to empty than either target: neither is among the view's cheaper half, so
  // neither would empty itself next (which costs a target TRANSIENT_W, more than the G4's advantage)
  const idle = [g5('e1', [vm('e1', 'e1', 10, 613)]), g5('e2', [vm('e2', 'e2', 10, 613)])]
  const view: ClusterView = { hosts: [src, t5, t4, ...idle], rules: NO_RULES, tick: 1 }
  const plan = planHost(view, 'src', cfg, held)
  t.same(plan.map(m => [m.vm, m.to, m.reason]), [['a', 't4', 'underload']], 'to the G4 host (86 W per 4 GiB, not 93.7)')
  t.end()
})

t.test('a VM goes only to cores that can give it its nominal size', t => {
  const src = g5('src', [vm('big', 'src', 300, 870, 2500)])
  const t4 = g4('t4', [vm('x', 't4', 800, 1740)])
  const only4: ClusterView = { hosts: [src, t4], rules: NO_RULES, tick: 1 }
  t.same(planHost(only4, 'src', cfg, held), [], 'no move: 2500 MIPS nominal > one 1860-MIPS core, though it asks for 300 now')
  const t5 = g5('t5', [vm('y', 't5', 1500, 1740)])
  const both: ClusterView = { hosts: [src, t4, t5], rules: NO_RULES, tick: 1 }
  t.same(planHost(both, 'src', cfg, held).map(m => m.to), ['t5'], 'to the G5 host, whose cores can')
  t.end()
})

t.test('a VM a little larger than the cores goes there only if its recent peak stayed well below them', t => {
  const withHist = (h: number[]): VmView => ({ ...vm('xl', 'src', 300, 1740, 2000), history: h })
  const plan = (v: VmView): string[] => {
    const src = g5('src', [v])
    const t4 = g4('t4', [vm('x', 't4', 800, 1740)])
    return planHost({ hosts: [src, t4], rules: NO_RULES, tick: 1 }, 'src', cfg, held).map(m => m.to)
  }
  t.same(plan(withHist([0.1, 0.3, 0.6, 0.2])), ['t4'], 'peak 0.6 x 2000 = 1200 MIPS <= 0.75 x 1860: to the G4 host')
  t.same(plan(withHist([0.1, 0.3, 0.8, 0.2])), [], 'peak 0.8 x 2000 = 1600 MIPS > 0.75 x 1860: stays')
  t.same(plan(withHist([])), [], 'no history: judged by its nominal 2000 MIPS > 1860, stays')
  t.same(plan({ ...withHist([0.1]), cpuDemandMips: 1500 }), [], 'asking 1500 MIPS now (more than its history shows): stays')
  t.end()
})

t.test('sources with the same view spread over equally good targets', t => {
  const targets = Array.from({ length: 6 }, (_, i) => g4(`t${i}`, [vm(`x${i}`, `t${i}`, 500, 1740)]))
  const sources = Array.from({ length: 6 }, (_, i) => g5(`s${i}`, [vm(`v${i}`, `s${i}`, 50, 1740)]))
  const view: ClusterView = { hosts: [...sources, ...targets], rules: NO_RULES, tick: 1 }
  const chosen = sources.map(s => planHost(view, s.id, cfg, held)[0]?.to)
  t.ok(chosen.every(x => x !== undefined && x.startsWith('t')), `every source found a target (${chosen.join(' ')})`)
  t.ok(new Set(chosen).size >= 3, `${new Set(chosen).size} distinct targets for 6 sources (not all the same one)`)
  t.same(sources.map(s => planHost(view, s.id, cfg, held)[0]?.to), chosen, 'and the choice is deterministic')
  t.end()
})

t.test('with a quantile, only the less loaded hosts of the view empty themselves', t => {
  const q: PolicyConfig = { ...cfg, underload: { kind: 'threshold', threshold: 0.4, quantile: 0.5 } }
  // four active hosts at 2, 5, 10 and 30 % CPU; all but the last are under 40 %. Their VMs fill
  // 51 % of their memory (2048 MiB each for the first three), so the view needs more than half
  // of them and the quantile decides (surplusShare 0.49)
  const small = (h: HostView): HostView => ({ ...h, memMiB: 2048 })
  const hs = [small(g5('a', [vm('va', 'a', 106, 870)])), small(g5('b', [vm('vb', 'b', 266, 870)])), small(g5('c', [vm('vc', 'c', 532, 870)])), g5('d', [vm('vd', 'd', 1596, 2610)])]
  const view: ClusterView = { hosts: hs, rules: NO_RULES, tick: 1 }
  t.ok(planHost(view, 'a', q, held).length === 1, 'the host at 2 % (lower half) empties itself')
  t.same(planHost(view, 'c', q, held), [], 'the host at 10 % (upper half) does not')
  t.ok(planHost(view, 'c', { ...cfg, underload: { kind: 'threshold', threshold: 0.4 } }, held).length === 1, 'without the quantile it does')
  t.end()
})

t.test('with a quantile, the hosts the view does not need empty themselves (surplusShare)', t => {
  const q: PolicyConfig = { ...cfg, underload: { kind: 'threshold', threshold: 0.4, quantile: 0.5 } }
  // the same four hosts at 2, 5, 10 and 30 % CPU with 870 MiB each in 4096 MiB: their memory would
  // fit on one host, so the three cheapest to empty do, not only the cheaper half
  const hs = [g5('a', [vm('va', 'a', 106, 870)]), g5('b', [vm('vb', 'b', 266, 870)]), g5('c', [vm('vc', 'c', 532, 870)]), g5('d', [vm('vd', 'd', 1596, 870)])]
  const view: ClusterView = { hosts: hs, rules: NO_RULES, tick: 1 }
  t.equal(Math.round(surplusShare(view, q) * 1000) / 1000, 0.788, 'the view needs 21 % of its hosts\' memory')
  t.same(planHost(view, 'c', q, held).map(m => [m.vm, m.to]), [['vc', 'd']], 'the host at 10 % empties itself')
  t.same(planHost(view, 'd', q, held), [], 'the most expensive host stays')
  t.end()
})

t.test('with a quantile, hosts of small VMs empty themselves before hosts of large ones', t => {
  // evacuation cost = demand x memory^2 over the VMs: 'large' (100 MIPS, 1740 MiB: 3.0e8) costs more
  // than 'small' (300 MIPS, 613 MiB: 1.1e8), though by demand x memory alone it costs less (174000
  // against 183900). Of the four hosts the two cheapest empty themselves (quantile 0.5).
  const q: PolicyConfig = { ...cfg, underload: { kind: 'threshold', threshold: 0.4, quantile: 0.5 } }
  // The view needs more than half its hosts (their VMs fill 62 % of their memory, 'busy' holding
  // a large VM and the others 2048 MiB each), so the quantile decides (surplusShare).
  const half = (h: HostView): HostView => ({ ...h, memMiB: 2048 })
  const view: ClusterView = {
    hosts: [half(g5('idle', [vm('i', 'idle', 10, 613)])), half(g5('large', [vm('l', 'large', 100, 1740)])), half(g5('small', [vm('s', 'small', 300, 613)])),
      g5('busy', [vm('b', 'busy', 2000, 3400)])],
    rules: NO_RULES,
    tick: 1
  }
  t.same(planHost(view, 'small', q, held).map(m => [m.vm, m.to]), [['s', 'busy']], 'the host of a small VM empties itself')
  t.same(planHost(view, 'large', q, held), [], 'the host of a large VM, asking less CPU, stays')
  t.end()
})

t.test('a host whose memory is nearly full does not empty itself (underload.memFull)', t => {
  // the source runs at 6 % CPU but its 2 x 1740 + 613 MiB fill 4093 of 4096 MiB: as packed as memory allows
  const full = g5('full', [vm('f1', 'full', 100, 1740), vm('f2', 'full', 100, 1740), vm('f3', 'full', 100, 613)])
  const roomy = g5('roomy', [vm('r1', 'roomy', 100, 870)])
  const targets = [g5('t1', [vm('x1', 't1', 2000, 613)]), g5('t2', [vm('x2', 't2', 2000, 613)]), g5('t3', [vm('x3', 't3', 2000, 613)])]
  const view: ClusterView = { hosts: [full, roomy, ...targets], rules: NO_RULES, tick: 1 }
  const noQ: PolicyConfig = { ...cfg, underload: { kind: 'threshold', threshold: 0.4, memFull: 0.9 } }
  t.equal(cfg.underload.kind === 'threshold' ? cfg.underload.memFull : undefined, 0.9, 'the default leaves hosts above 90 % of their memory alone')
  t.same(planHost(view, 'full', noQ, held), [], 'the full host stays as it is')
  t.equal(planHost(view, 'roomy', noQ, held).length, 1, 'a host with memory to spare empties itself')
  t.equal(planHost(view, 'full', { ...cfg, underload: { kind: 'threshold', threshold: 0.4 } }, held).length, 3, 'without memFull the full host would empty itself')
  t.end()
})

t.test('a VM goes where it stays, not to a host that would empty itself next', t => {
  // src (2 % CPU) empties itself. Of its two targets, both busier, 'fading' (30 % CPU) scores a little
  // better than 'stays' (45 %); with underload under 40 % 'fading' would empty itself next (it is
  // underloaded and among the view's cheaper hosts to empty), and a VM sent there would be copied twice.
  const view: ClusterView = {
    hosts: [g5('src', [vm('a', 'src', 100, 870)]), g5('fading', [vm('f', 'fading', 1596, 870)]), g5('stays', [vm('s', 'stays', 2394, 870)])],
    rules: NO_RULES,
    tick: 1
  }
  const under = (threshold: number): PolicyConfig => ({ ...cfg, underload: { kind: 'threshold', threshold, quantile: 0.5, memFull: 0.9 } })
  t.same(planHost(view, 'src', under(0.25), held).map(m => m.to), ['fading'], 'under 25 %: fading stays on too, and is the better fit')
  t.same(planHost(view, 'src', under(0.4), held).map(m => m.to), ['stays'], 'under 40 %: fading would empty itself next, the VM goes where it stays')
  t.same(planHost(view, 'fading', under(0.4), held).map(m => m.to), ['stays'], 'and fading itself does empty itself, to stays')
  t.end()
})

t.test('a consolidation places no more VMs on one target than the target admits at once', t => {
  // src's three small VMs all fit on either busier host, and one of them is the better target for
  // each. The consolidation is reserved as a whole, and a target admits maxIncomingPerTarget moves
  // at once (the agent's migration.inMax): a plan with three for one target is refused every time.
  const src = g4('src', [vm('a', 'src', 100, 300), vm('b', 'src', 90, 300), vm('c', 'src', 80, 300)])
  const view: ClusterView = {
    hosts: [src, g5('t1', [vm('x', 't1', 2000, 1000)]), g5('t2', [vm('y', 't2', 1800, 1000)])],
    rules: NO_RULES,
    tick: 1
  }
  const free = planHost(view, 'src', cfg, held)
  const per = (plan: ReturnType<typeof planHost>): number => Math.max(...['t1', 't2'].map(h => plan.filter(m => m.to === h).length))
  t.equal(free.length, 3, 'without a cap, the whole host empties')
  t.equal(per(free), 3, 'and all three VMs go to one target (what the cap is for)')
  const capped = planHost(view, 'src', { ...cfg, maxIncomingPerTarget: 2 }, held)
  t.equal(capped.length, 3, 'with a cap of 2 the whole host still empties')
  t.equal(per(capped), 2, 'with at most 2 VMs on one target')
  const alone: ClusterView = { ...view, hosts: view.hosts.slice(0, 2) }
  t.same(planHost(alone, 'src', { ...cfg, maxIncomingPerTarget: 2 }, held), [], 'with a single target, no consolidation that could not be admitted')
  t.end()
})
