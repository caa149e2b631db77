/**
 * A hard anti-affinity rule agreed while two placements race towards the same host: VM a moves
 * from host A to X and VM b from host B to X, in the same tick as an operator on X adds the rule
 * "a and b never together". Whatever the interleaving (network delays 1-3 ticks, seeds 1-60), the
 * two never end up together on X: X's admission sees the first reservation once it knows the rule,
 * and a placement it admitted under the old rules is refused (its incoming copy killed before the
 * guest runs there) as soon as the rule is agreed; the older of the two placements stands.
 */
import t from 'tap'
import { SimCluster } from '../../agent/sim/sim-cluster.js'
import { SimHypervisor } from '../../agent/sim/sim-hypervisor.js'
import { simMigrationConfig } from '../../agent/sim/scenarios.js'

t.test('a rule agreed during two racing placements holds for both', async t => {
  let together = 0
  let refusedByRule = 0
  let bothMoved = 0
  let ruleFirst = 0
  for (let seed = 1; seed <= 60; seed++) {
    const hv = new SimHypervisor({ seed: seed * 13 + 1, copyTicks: 6 })
    const sim = new SimCluster({
      seed, hosts: 3, hypervisor: hv, sampleIntervalTicks: 2, migration: simMigrationConfig(),
      capacity: { cpuCores: 8, cpuMipsPerCore: 1000, memMiB: 16384, netMbps: 10000 },
      network: { delayTicksMin: 1, delayTicksMax: 1 + (seed % 3) },
      clusterConfig: {}
    })
    const [A, B, X] = sim.ids as [string, string, string]
    hv.addVm(A, 'a', 1024)
    hv.addVm(B, 'b', 1024)
    sim.run(20)
    const req = sim.configChange(X, d => ({ ...d, rules: { vmVm: [{ kind: 'anti-affinity', vms: ['a', 'b'], hard: true }], vmHost: [] } }), 'a and b apart')
    t.not(req, null)
    // The two moves start in the same tick as the change, or a tick or two after it.
    const lag = seed % 3
    sim.run(lag)
    sim.step(A, { type: 'operatorMigrate', vm: 'a', to: X })
    sim.step(B, { type: 'operatorMigrate', vm: 'b', to: X })
    sim.run(200)
    const onX = [...(hv.hosts.get(X)?.keys() ?? [])]
    if (onX.includes('a') && onX.includes('b')) { together++; t.fail(`seed ${seed}: a and b run together on X`) }
    const reasons = sim.core(X)!.migrations().map(r => r.reason)
    if (reasons.some(r => /hard rule/.test(r))) refusedByRule++
    if (onX.includes('a') || onX.includes('b')) bothMoved++
    if (sim.core(X)!.configOutcome(req!)?.status === 'committed') ruleFirst++
    t.equal(sim.core(A)!.clusterConfig()!.latest.version, 2, `seed ${seed}: the rule is agreed everywhere`)
  }
  t.equal(together, 0, 'a and b never ran together on X')
  t.ok(refusedByRule >= 30, `one of the two placements was refused by the rule in ${refusedByRule} of 60 races`)
  t.ok(bothMoved >= 30, `one of the two still moved to X in ${bothMoved} of 60 races`)
  t.equal(ruleFirst, 60, 'the rule change committed every time')
})
