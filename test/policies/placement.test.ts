// Table tests for selection, target ranking, rules, guards and configuration validation, and a
// property test: across thousands of random cluster views, planned placements never exceed a
// host's capacity and never break a hard rule.
import t from 'tap'
import { Prng, seededPrng } from '../../agent/core/prng.js'
import { selectVm } from '../../policies/selection.js'
import { exceedsCores, fits, powerAt, rankTargets } from '../../policies/placement.js'
import { brokenHardRules, hardAllows, softPenalty } from '../../policies/rules.js'
import { conditionHeld, gainEnough, nextStreak, vmCooledDown } from '../../policies/antithrash.js'
import { defaultPolicyConfig, parsePolicyName, ConfigError, validatePolicyConfig } from '../../policies/config.js'
import { planHost, type PolicyConfig } from '../../policies/plan.js'
import { NO_RULES, type ClusterView, type HostView, type RuleSet, type VmView } from '../../policies/types.js'

const G5 = [93.7, 97, 101, 105, 110, 116, 121, 125, 129, 133, 135]
const G4 = [86, 89.4, 92.6, 96, 99.5, 102, 106, 108, 112, 114, 117]

function vm (id: string, host: string, demand: number, mem = 1000, size = 2500, history: number[] = []): VmView {
  return { id, host, cpuMips: size, cpuDemandMips: demand, memMiB: mem, history, migrating: false }
}
function host (id: string, vms: VmView[], o: Partial<HostView> = {}): HostView {
  return { id, cpuMips: 5320, coreMips: 2660, memMiB: 4096, netMbps: 1000, powerCurveW: G5, vms, reservedMips: 0, reservedMemMiB: 0, history: [], active: vms.length > 0, ...o }
}

t.test('selection', t => {
  const h = host('h', [vm('a', 'h', 1000, 1740), vm('b', 'h', 2000, 613), vm('c', 'h', 500, 613), vm('d', 'h', 100, 870)])
  t.equal(selectVm(h, h.vms, { kind: 'mmt' }, seededPrng)?.id, 'b', 'mmt: smallest memory, first on ties')
  t.equal(selectVm(h, h.vms, { kind: 'hl' }, seededPrng)?.id, 'b', 'highest load')
  t.equal(selectVm(h, h.vms, { kind: 'vsr' }, seededPrng)?.id, 'b', 'vsr: hot and small')
  const r1 = selectVm(h, h.vms, { kind: 'rs', seed: 7 }, seededPrng)?.id
  t.equal(selectVm(h, h.vms, { kind: 'rs', seed: 7 }, seededPrng)?.id, r1, 'rs is deterministic for a seed')
  t.equal(selectVm(h, [], { kind: 'mmt' }, seededPrng), null)
  t.equal(selectVm(h, [{ ...vm('m', 'h', 1), migrating: true }], { kind: 'mmt' }, seededPrng), null, 'never a migrating VM')
  // mc: c is the sum of a and b, so it is best explained by the others
  const a = [1, 3, 2, 5, 4, 6, 2, 7, 3, 8].map(x => x / 10)
  const b = [2, 1, 4, 3, 6, 2, 5, 1, 6, 2].map(x => x / 10)
  const noise = [5, 1, 9, 2, 8, 3, 7, 1, 6, 4].map(x => x / 10)
  const c = a.map((x, i) => x + (b[i] as number))
  const mc = host('m', [vm('a', 'm', 1, 900, 2500, a), vm('n', 'm', 1, 900, 2500, noise), vm('b', 'm', 1, 900, 2500, b), vm('c', 'm', 1, 900, 2500, c)])
  t.not(selectVm(mc, mc.vms, { kind: 'mc' }, seededPrng)?.id, 'n', 'mc does not pick the uncorrelated VM')
  t.end()
})

t.test('power and ranking', t => {
  t.equal(powerAt(G5, 0), 93.7)
  t.equal(powerAt(G5, 1), 135)
  t.ok(Math.abs(powerAt(G4, 0.55) - 104) < 1e-9, 'linear between 50 % and 60 %')
  const v = vm('x', 'src', 1000)
  const hosts = [
    host('src', [v]),
    host('busy', [vm('y', 'busy', 3500)]),
    host('idle', []),
    host('g4', [vm('z', 'g4', 1500)], { cpuMips: 3720, coreMips: 1860, powerCurveW: G4 }),
    host('full', [vm('w', 'full', 5000)])
  ]
  const place = new Map([['x', 'src'], ['y', 'busy'], ['z', 'g4'], ['w', 'full']])
  const order = (k: 'pabfd' | 'leastLoaded' | 'balance', extra = {}): string[] => rankTargets(hosts, v, NO_RULES, place, { kind: k, ...extra }).map(r => r.host.id)
  t.same(order('pabfd', { countWake: true }), ['busy', 'g4', 'idle'], 'pabfd: least added watts; waking costs idle power; never the source or a full host')
  t.same(order('pabfd', { countWake: false }), ['idle', 'busy', 'g4'], 'power-blind (CloudSim) variant: an asleep host looks cheapest')
  t.same(order('leastLoaded'), ['idle', 'g4', 'busy'])
  t.equal(order('balance')[0], 'idle', 'balance prefers the emptiest')
  t.notOk(order('pabfd').includes('full'), 'capacity is a hard limit')
  const big = vm('big', 'src', 2000)
  t.notOk(rankTargets(hosts, big, NO_RULES, place, { kind: 'pabfd' }).some(r => r.host.id === 'g4'), 'a VM asking more than one core cannot go to a slower-core host')
  t.end()
})

t.test('rules', t => {
  const rules: RuleSet = {
    vmVm: [{ kind: 'anti-affinity', vms: ['a', 'b'], hard: true }, { kind: 'affinity', vms: ['c', 'd'], hard: false, weight: 2 }],
    vmHost: [{ kind: 'affinity', vm: 'e', hosts: ['h1', 'h2'], hard: true }, { kind: 'anti-affinity', vm: 'f', hosts: ['h3'], hard: false }]
  }
  const place = new Map([['a', 'h1'], ['b', 'h2'], ['c', 'h1'], ['d', 'h2']])
  const rows: Array<[string, boolean, boolean]> = [
    ['anti-affinity blocks b next to a', hardAllows(rules, place, 'b', 'h1'), false],
    ['anti-affinity allows elsewhere', hardAllows(rules, place, 'b', 'h3'), true],
    ['vm-host affinity blocks other hosts', hardAllows(rules, place, 'e', 'h3'), false],
    ['vm-host affinity allows listed', hardAllows(rules, place, 'e', 'h2'), true],
    ['soft rules never block', hardAllows(rules, place, 'f', 'h3'), true]
  ]
  for (const [name, got, want] of rows) t.equal(got, want, name)
  t.equal(softPenalty(rules, place, 'c', 'h3'), 2, 'soft affinity split costs its weight')
  t.equal(softPenalty(rules, place, 'c', 'h2'), 0)
  t.equal(softPenalty(rules, place, 'f', 'h3'), 1)
  t.same(brokenHardRules(rules, new Map([['a', 'h1'], ['b', 'h1']])).length, 1)
  t.end()
})

t.test('guards', t => {
  const g = { holdDecisions: 3, cooldownDecisions: 5, minGain: 10 }
  t.equal(conditionHeld(2, g), false)
  t.equal(conditionHeld(3, g), true)
  t.equal(nextStreak(4, false), 0)
  t.equal(nextStreak(4, true), 5)
  t.equal(vmCooledDown(undefined, 3, g), true)
  t.equal(vmCooledDown(10, 14, g), false)
  t.equal(vmCooledDown(10, 15, g), true)
  t.equal(gainEnough(9.9, g), false)
  t.end()
})

t.test('config validation', t => {
  t.doesNotThrow(() => validatePolicyConfig(defaultPolicyConfig()))
  const bad: Array<[string, (c: PolicyConfig) => void, RegExp]> = [
    ['k > n', c => { c.overload = { kind: 'kOfN', threshold: 0.9, k: 4, n: 3, forecast: { kind: 'last' } } }, /overload.k must be an integer in 1..n/],
    ['balance + consolidation', c => { c.placement = { kind: 'balance' } }, /placement balance spreads load while underload threshold consolidates/],
    ['underload over overload', c => { c.overload = { kind: 'thr', threshold: 0.5 }; c.underload = { kind: 'threshold', threshold: 0.6 } }, /underload.threshold \(0.6\) must be < overload.threshold \(0.5\)/],
    ['rs without seed', c => { c.selection = { kind: 'rs' } }, /rs needs a seed/],
    ['lr window', c => { c.overload = { kind: 'lr', safety: 1.2, window: 2 } }, /overload.window must be an integer >= 3/],
    ['holdDecisions 0', c => { c.guards = { ...c.guards, holdDecisions: 0 } }, /guards.holdDecisions/],
    ['ar window too short', c => { c.overload = { kind: 'kOfN', threshold: 0.9, k: 1, n: 1, forecast: { kind: 'ar', order: 3, window: 5 } } }, /needs window >= 8/]
  ]
  for (const [name, mut, re] of bad) {
    const c = defaultPolicyConfig(); mut(c)
    t.throws(() => validatePolicyConfig(c), re, name)
  }
  t.same(parsePolicyName('LR-MMT-1.2').overload, { kind: 'lr', safety: 1.2 })
  t.same(parsePolicyName('thr-mmt-0.8').overload, { kind: 'thr', threshold: 0.8 })
  t.throws(() => parsePolicyName('XYZ-MMT-1'), ConfigError)
  t.end()
})

t.test('property: plans never exceed capacity or break a hard rule', t => {
  const seed = Number(process.env.SEED ?? 12345)
  t.comment(`seed=${seed}`)
  const prng = new Prng(seed)
  const cfgs: PolicyConfig[] = [
    { ...defaultPolicyConfig() },
    { ...defaultPolicyConfig(), overload: { kind: 'thr', threshold: 0.8 }, underload: { kind: 'threshold', threshold: 0.4 } },
    { ...defaultPolicyConfig(), overload: { kind: 'lr', safety: 1.2 }, underload: { kind: 'none' }, placement: { kind: 'balance' }, selection: { kind: 'rs', seed: 3 } },
    { ...defaultPolicyConfig(), overload: { kind: 'mad', safety: 2.5 }, underload: { kind: 'none' }, placement: { kind: 'leastLoaded' }, selection: { kind: 'vsr' } }
  ]
  let plans = 0; let moves = 0
  for (let iter = 0; iter < 3000; iter++) {
    const nh = 2 + prng.int(12)
    const hosts: HostView[] = []
    const place = new Map<string, string>()
    let vid = 0
    for (let i = 0; i < nh; i++) {
      const g5 = prng.chance(0.5)
      const cpu = g5 ? 5320 : 3720
      const vms: VmView[] = []
      const nv = prng.int(6)
      let used = 0; let mem = 0
      for (let j = 0; j < nv; j++) {
        const size = [2500, 2000, 1000, 500][prng.int(4)] as number
        const d = Math.min(size * prng.next(), g5 ? 2660 : 1860)
        const m = [870, 1740, 613][prng.int(3)] as number
        if (used + d > cpu || mem + m > 4096) break
        used += d; mem += m
        const hist = Array.from({ length: 12 }, () => prng.next())
        const v = vm(`v${vid++}`, `h${i}`, d, m, size, hist)
        vms.push(v); place.set(v.id, `h${i}`)
      }
      hosts.push(host(`h${i}`, vms, {
        cpuMips: cpu, coreMips: g5 ? 2660 : 1860, powerCurveW: g5 ? G5 : G4,
        reservedMips: prng.chance(0.2) ? Math.min(cpu - used, 500 * prng.next()) : 0,
        history: Array.from({ length: 12 }, () => Math.min(1.2, used / cpu + 0.2 * (prng.next() - 0.5)))
      }))
    }
    const ids = [...place.keys()]
    const rules: RuleSet = { vmVm: [], vmHost: [] }
    if (ids.length >= 2 && prng.chance(0.7)) {
      const a = ids[prng.int(ids.length)] as string; const b = ids[prng.int(ids.length)] as string
      if (a !== b && place.get(a) !== place.get(b)) (rules.vmVm as unknown[]).push({ kind: 'anti-affinity', vms: [a, b], hard: true })
    }
    if (ids.length >= 1 && prng.chance(0.5)) {
      const a = ids[prng.int(ids.length)] as string
      const hs = hosts.filter(() => prng.chance(0.5)).map(h => h.id)
      if (!hs.includes(place.get(a) as string)) hs.push(place.get(a) as string)
      ;(rules.vmHost as unknown[]).push({ kind: 'affinity', vm: a, hosts: hs, hard: true })
    }
    const view: ClusterView = Object.freeze({ hosts, rules, tick: iter })
    const cfg = cfgs[iter % cfgs.length] as PolicyConfig
    const self = hosts[prng.int(nh)] as HostView
    // conditions have held long enough for the guards: the property is about capacity and rules
    const held = cfg.guards.holdDecisions
    const plan = planHost(view, self.id, cfg, { overStreak: held, underStreak: held, lastMoved: new Map(), random: seededPrng })
    plans++; moves += plan.length
    // replay against capacities
    const demand = new Map(hosts.map(h => [h.id, h.reservedMips + h.vms.reduce((s, v) => s + v.cpuDemandMips, 0)]))
    const memUse = new Map(hosts.map(h => [h.id, h.vms.reduce((s, v) => s + v.memMiB, 0)]))
    const after = new Map(place)
    for (const m of plan) {
      const v = hosts.flatMap(h => h.vms).find(x => x.id === m.vm) as VmView
      const to = hosts.find(h => h.id === m.to) as HostView
      demand.set(m.to, (demand.get(m.to) as number) + v.cpuDemandMips)
      memUse.set(m.to, (memUse.get(m.to) as number) + v.memMiB)
      demand.set(m.from, (demand.get(m.from) as number) - v.cpuDemandMips)
      memUse.set(m.from, (memUse.get(m.from) as number) - v.memMiB)
      after.set(m.vm, m.to)
      if (v.cpuDemandMips > to.coreMips) { t.fail(`seed=${seed} iter=${iter}: VM larger than a core of ${to.id}`); return t.end() }
    }
    for (const h of hosts) {
      if ((demand.get(h.id) as number) > h.cpuMips + 1e-6 && plan.some(m => m.to === h.id)) { t.fail(`seed=${seed} iter=${iter}: ${h.id} CPU over capacity`); return t.end() }
      if ((memUse.get(h.id) as number) > h.memMiB && plan.some(m => m.to === h.id)) { t.fail(`seed=${seed} iter=${iter}: ${h.id} memory over capacity`); return t.end() }
    }
    const broken = brokenHardRules(rules, after)
    if (broken.length > 0) { t.fail(`seed=${seed} iter=${iter}: ${broken.join('; ')}`); return t.end() }
  }
  t.ok(moves > 100, `the property exercised real plans (${plans} plans, ${moves} moves)`)
  t.end()
})

t.test('a multi-vCPU VM spreads its demand over its vCPUs: it may ask for more than one core', t => {
  // Each host has 8 cores of 1000 MIPS. A 3-vCPU VM at 95 % asks for 2850 MIPS: three cores.
  const big = { ...vm('big', 'a', 2850, 2048, 3000), vcpus: 3 }
  const single = vm('one', 'a', 1500, 1024, 1000)
  const target = host('b', [vm('x', 'b', 1000)], { cpuMips: 8000, coreMips: 1000, memMiB: 65536 })
  t.ok(fits(target, big), 'a 3-vCPU VM needing 2850 MIPS fits on 1000-MIPS cores')
  t.notOk(exceedsCores(target, big), 'within its three cores')
  t.ok(exceedsCores(target, { ...big, cpuDemandMips: 3100 }), 'but not 3100 MIPS: more than three cores give')
  t.notOk(fits(target, single), 'a single-vCPU VM cannot ask for more than one core (1500 > 1000)')
  const src = host('a', [big, vm('c', 'a', 2850, 1024, 3000), vm('d', 'a', 2850, 1024, 3000)], { cpuMips: 8000, coreMips: 1000, memMiB: 32768, history: [0.9, 0.95, 1, 1, 1, 1, 1] })
  const view: ClusterView = { hosts: [src, target], rules: NO_RULES, tick: 10 }
  const moves = planHost(view, 'a', defaultPolicyConfig(), { overStreak: 5, underStreak: 0, lastMoved: new Map(), random: seededPrng })
  t.ok(moves.length >= 1 && moves.every(m => m.to === 'b' && m.reason === 'overload'), `an overloaded host of 3-vCPU VMs is relieved (${JSON.stringify(moves)})`)
  t.end()
})
