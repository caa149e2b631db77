/**
 * A hard rule agreed while VMs already break it is repaired by the agents themselves: with the
 * rule "a and b never together" agreed while both run on one host, one of them moves away; with
 * "a and b together" agreed while they run on two hosts, one of them joins the other. Exactly
 * one migration each time (the hosts never swap the VMs), the rule holds after it, and nothing
 * moves again over the next 300 ticks (no ping-pong). Automation 'partial': consolidation is only
 * recommended, a broken hard rule is repaired as placement is.
 * Method: the real AgentCore on three simulated hosts (SimCluster, SimHypervisor, the replicated
 * cluster configuration), the rule changed from the host that runs neither VM; seeds 1-20.
 */
import t from 'tap'
import { SimCluster } from '../../agent/sim/sim-cluster.js'
import { SimHypervisor } from '../../agent/sim/sim-hypervisor.js'
import { simMigrationConfig } from '../../agent/sim/scenarios.js'
import { brokenHardRules } from '../../policies/rules.js'
import type { RuleSet } from '../../policies/types.js'

function run (seed: number, together: boolean, rules: RuleSet): { moves: number, broken: string[], late: number } {
  const ids = [...new SimCluster({ seed, hosts: 3, hexIds: true }).ids]
  const [A, B, X] = ids as [string, string, string]
  const hv = new SimHypervisor({ seed: seed * 11 + 5, copyTicks: 5 })
  hv.addVm(A, 'a', 1024)
  hv.addVm(together ? A : B, 'b', 1024)
  const sim = new SimCluster({
    seed, hosts: 3, hypervisor: hv, sampleIntervalTicks: 2,
    migration: { ...simMigrationConfig(), autoBalance: true, automation: 'partial', balanceTicks: 10 },
    capacity: { cpuCores: 8, cpuMipsPerCore: 1000, memMiB: 16384, netMbps: 10000 },
    network: { delayTicksMin: 1, delayTicksMax: 1 + (seed % 3) },
    clusterConfig: {}
  })
  sim.run(30)
  sim.configChange(X, d => ({ ...d, rules }), 'a rule the placement breaks')
  const committed = (): number => ids.reduce((n, h) => n + (sim.core(h)?.migrations().filter(r => r.role === 'source' && r.state === 'committed').length ?? 0), 0)
  sim.runUntil(() => committed() > 0, 300, 1)
  const placement = new Map<string, string>()
  sim.run(60)
  for (const [vm, hs] of hv.running()) placement.set(vm, hs[0]!)
  const moves = committed()
  sim.run(300)
  return { moves, broken: brokenHardRules(rules, placement), late: committed() - moves }
}

const cases: Array<[string, boolean, 'affinity' | 'anti-affinity']> = [
  ['anti-affinity agreed while a and b share a host: one of them leaves, once', true, 'anti-affinity'],
  ['affinity agreed while a and b run on two hosts: one joins the other, never a swap', false, 'affinity']
]
for (const [name, together, kind] of cases) {
  t.test(name, async t => {
    const rules: RuleSet = { vmVm: [{ kind, vms: ['a', 'b'], hard: true }], vmHost: [] }
    for (let seed = 1; seed <= 20; seed++) {
      const r = run(seed, together, rules)
      t.equal(r.moves, 1, `seed ${seed}: one migration`)
      t.same(r.broken, [], `seed ${seed}: the rule holds`)
      t.equal(r.late, 0, `seed ${seed}: nothing moves afterwards`)
    }
  })
}
