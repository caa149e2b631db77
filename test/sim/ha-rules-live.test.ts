/**
 * HA restarts honour the placement rules, the ones agreed live included: a hard VM-host affinity
 * rule that an operator adds by host name (`starling rules add vm-host affinity p hostX --hard`)
 * sends the restart of a failed host's protected VM to that host only, and a hard anti-affinity
 * rule with a VM HA does not protect keeps the restart off that VM's host. Before, the restart
 * assignment kept the rules it was built with (none in the agent) and compared host names with
 * host ids.
 * Method: the real AgentCore on four simulated hosts (HA, replicated cluster configuration, one
 * protected VM p homed on the first host), a rule change from the last host, then the home host
 * crashes; seeds 1-12 vary the network's delays and so who decides first.
 */
import t from 'tap'
import { SimCluster } from '../../agent/sim/sim-cluster.js'
import { SimHypervisor } from '../../agent/sim/sim-hypervisor.js'
import { simMigrationConfig } from '../../agent/sim/scenarios.js'


t.test('a hard VM-host rule agreed live, by host name, decides where HA restarts the VM', async t => {
  let wrong = 0
  for (let seed = 1; seed <= 12; seed++) {
    const hv = new SimHypervisor({ seed: seed * 7 + 3, copyTicks: 4 })
    const ids: string[] = []
    const probe = new SimCluster({ seed, hosts: 4, hexIds: true })
    ids.push(...probe.ids)
    const sim = new SimCluster({
      seed, hosts: 4, hypervisor: hv, sampleIntervalTicks: 2, migration: { ...simMigrationConfig(), autoBalance: false },
      capacity: { cpuCores: 8, cpuMipsPerCore: 1000, memMiB: 16384, netMbps: 10000 },
      network: { delayTicksMin: 1, delayTicksMax: 1 + (seed % 3) },
      clusterConfig: {},
      ha: { vms: [{ id: 'p', home: ids[0]!, cpuMips: 500, memMiB: 1024, source: { kind: 'image', image: 'p.img' } }] }
    })
    t.same(sim.ids, ids, 'the same ids')
    const [H, , , X] = ids as [string, string, string, string]
    hv.addVm(H, 'p', 1024)
    sim.run(40)
    t.same(hv.running().get('p'), [H], `seed ${seed}: p runs on its home`)
    // The target differs with the seed so that a restart ignoring the rule would miss it.
    const target = ids[1 + (seed % 3)]!
    const req = sim.configChange(X, d => ({ ...d, rules: { vmVm: [], vmHost: [{ kind: 'affinity', vm: 'p', hosts: [sim.docMember(H).name, sim.docMember(target).name], hard: true }] } }), 'p on its home or the target')
    t.not(req, null)
    sim.run(30)
    t.equal(sim.core(X)!.configOutcome(req!)?.status, 'committed', `seed ${seed}: the rule is agreed`)
    sim.crash(H)
    sim.run(400)
    const where = hv.running().get('p') ?? []
    if (where.length !== 1 || where[0] !== target) { wrong++; t.fail(`seed ${seed}: p restarted on ${where.join(',') || 'no host'}, the rule allows only ${target.slice(0, 8)}`) }
  }
  t.equal(wrong, 0, 'every restart went to the one host the rule allows')
})

t.test('a hard anti-affinity rule with an unprotected VM keeps the restart off its host', async t => {
  let wrong = 0
  for (let seed = 1; seed <= 12; seed++) {
    const probe = new SimCluster({ seed, hosts: 4, hexIds: true })
    const ids = [...probe.ids]
    const hv = new SimHypervisor({ seed: seed * 7 + 3, copyTicks: 4 })
    const [H, A, B, X] = ids as [string, string, string, string]
    // Unprotected VMs on every other host but one: only that one is free of them.
    const free = [A, B, X][seed % 3]!
    for (const h of [A, B, X]) if (h !== free) hv.addVm(h, `x-${h.slice(0, 4)}`, 512)
    hv.addVm(H, 'p', 1024)
    const sim = new SimCluster({
      seed, hosts: 4, hypervisor: hv, sampleIntervalTicks: 2, migration: { ...simMigrationConfig(), autoBalance: false },
      capacity: { cpuCores: 8, cpuMipsPerCore: 1000, memMiB: 16384, netMbps: 10000 },
      network: { delayTicksMin: 1, delayTicksMax: 1 + (seed % 3) },
      clusterConfig: {},
      ha: { vms: [{ id: 'p', home: H, cpuMips: 500, memMiB: 1024, source: { kind: 'image', image: 'p.img' } }] }
    })
    sim.run(40)
    const others = [A, B, X].filter(h => h !== free).map(h => `x-${h.slice(0, 4)}`)
    const req = sim.configChange(X, d => ({ ...d, rules: { vmVm: [{ kind: 'anti-affinity', vms: ['p', ...others], hard: true }], vmHost: [] } }), 'p apart from the x VMs')
    sim.run(30)
    t.equal(sim.core(X)!.configOutcome(req!)?.status, 'committed', `seed ${seed}: the rule is agreed`)
    sim.crash(H)
    sim.run(400)
    const where = hv.running().get('p') ?? []
    if (where.length !== 1 || where[0] !== free) { wrong++; t.fail(`seed ${seed}: p restarted on ${where.join(',') || 'no host'}, only ${free.slice(0, 8)} runs none of the x VMs`) }
  }
  t.equal(wrong, 0, 'every restart avoided the hosts of the VMs it must stay apart from')
})
