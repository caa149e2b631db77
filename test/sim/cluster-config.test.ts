/**
 * The replicated cluster configuration under faults, with HA armed (agent/sim/scenarios.ts,
 * configFaultRun): members added and removed one at a time from random members while hosts crash,
 * lose power and hang, and the network partitions, cuts, loses and heals. After every tick: no VM
 * runs twice (S1), no two hosts hold majorities with no member in common (S6), no two hosts act on
 * different configurations of one version (S7). After the quiet phase every host holds the same
 * version and every protected VM runs once.
 */
import t from 'tap'
import { configFaultRun, simMigrationConfig } from '../../agent/sim/scenarios.js'
import { SimCluster } from '../../agent/sim/sim-cluster.js'
import { SimHypervisor } from '../../agent/sim/sim-hypervisor.js'
import { InvariantError, SafetyCheckers } from '../../agent/sim/checkers.js'
import { simHaConfig, type HaVmSpec } from '../../agent/core/index.js'
import type { ClusterDoc } from '../../agent/core/cluster-config/cluster-doc.js'

t.test('membership changes under faults: never two majorities, one configuration per version, HA VMs run once', async t => {
  const seeds = Number(process.env.SEEDS ?? 30)
  const first = Number(process.env.SEED ?? 1)
  let versions = 0
  let pairs = 0
  let grewTo5 = 0
  let shrankTo3 = 0
  for (let seed = first; seed < first + seeds; seed++) {
    const r = configFaultRun(seed)
    if (r.violation !== null) { t.fail(r.violation); continue }
    if (!r.live) t.fail(`seed ${seed}: not settled after the quiet phase: ${r.problems.join('; ')}`)
    versions += r.versions
    pairs += r.majorityPairsChecked
    const five = r.sizes.indexOf(5)
    if (five >= 0) grewTo5++
    if (five >= 0 && r.sizes.slice(five).includes(3)) shrankTo3++
  }
  t.ok(versions >= seeds * 5, `${versions} versions decided over ${seeds} seeds`)
  t.ok(grewTo5 >= seeds / 3, `${grewTo5} runs grew to 5 members`)
  t.ok(shrankTo3 >= seeds / 5, `${shrankTo3} runs grew to 5 and shrank back to 3`)
  t.ok(pairs > seeds * 100, `majorities compared at ${pairs} ticks`)
})

t.test('with rules-only versions between the membership changes: the same safety, and paused copies still resumed', async t => {
  // A paused copy may be resumed across versions that changed only the rules (ha-manager.ts,
  // onRequest: resumes are matched by membership, not by version).
  const seeds = Number(process.env.SEEDS ?? 30)
  const first = Number(process.env.SEED ?? 1)
  let resumes = 0
  let versions = 0
  for (let seed = first; seed < first + seeds; seed++) {
    const r = configFaultRun(seed, { rulesChanges: true })
    if (r.violation !== null) { t.fail(`seed ${seed} (rules changes): ${r.violation}`); continue }
    if (!r.live) t.fail(`seed ${seed} (rules changes): not settled after the quiet phase: ${r.problems.join('; ')}`)
    resumes += r.resumes
    versions += r.versions
  }
  t.ok(versions >= seeds * 10, `${versions} versions decided over ${seeds} seeds`)
  t.ok(resumes >= seeds, `${resumes} paused copies resumed`)
})

t.test('a paused copy is not resumed across membership changes by members that never heard of the copy that ran since', async t => {
  // Found by 300-seed runs: a host removed from the cluster pauses its copy (pause policy); a
  // majority of the three members left boots the VM elsewhere; that host is cut off and pauses
  // in turn; two members are added, the first host among them, and a majority of the five, none
  // of which had granted the boot, granted the first host's resume of its older copy. A resume is
  // now granted only at the version the paused copy's claim was decided under (ha-manager.ts,
  // onRequest). Seed 21, with the bounded view of the default configuration (a full mesh met the
  // same case at another seed).
  const r = configFaultRun(21)
  t.equal(r.violation, null, 'seed 21: no violation')
  t.ok(r.live, `seed 21: settled (${r.problems.join('; ')})`)
})

/**
 * Four hosts, the first three members, one HA VM 'p' (fence policy `fencePolicy`) running on the
 * first; S1-S7 checked after every tick; every event kept as "tick host kind text".
 */
function fourHosts (seed: number, fencePolicy: 'stop' | 'pause'): { sim: SimCluster, hv: SimHypervisor, ids: [string, string, string, string], events: string[] } {
  const hv = new SimHypervisor({ seed, copyTicks: 6 })
  const probe = new SimCluster({ seed, hosts: 4, clusterConfig: {} }) // the ids a seed gives
  const ids = probe.ids as [string, string, string, string]
  const vm: HaVmSpec = { id: 'p', home: ids[0], cpuMips: 1000, memMiB: 1024, source: { kind: 'shared', definition: 'p.xml' }, fencePolicy }
  const sim = new SimCluster({
    seed,
    hosts: 4,
    hypervisor: hv,
    capacity: { cpuCores: 8, cpuMipsPerCore: 1000, memMiB: 16384, netMbps: 10000 },
    sampleIntervalTicks: 2,
    migration: simMigrationConfig(),
    network: { delayTicksMin: 1, delayTicksMax: 1, loss: 0 },
    ha: { vms: [vm], config: simHaConfig() },
    clusterConfig: { members: ids.slice(0, 3) }
  })
  hv.addVm(ids[0], 'p', 1024)
  new SafetyCheckers(sim, { capMemMiB: 16384 }) // eslint-disable-line no-new
  const events: string[] = []
  sim.onEvent((h, ev, tick) => { events.push(`${tick} ${h.slice(0, 8)} ${ev.kind} ${ev.text}`) })
  return { sim, hv, ids, events }
}

/**
 * Three members, one pause-policy VM on the first. The first is cut off and pauses its copy;
 * while it is away the other two decide version 2, and the cut heals before the fence delay (no
 * takeover). `change` makes version 2 from version 1's document.
 */
function pausedAcrossVersion (seed: number, change: (sim: SimCluster, d: ClusterDoc) => ClusterDoc): { sim: SimCluster, hv: SimHypervisor, a: string, events: string[], violation: string | null } {
  const { sim, hv, ids: [a, b, c], events } = fourHosts(seed, 'pause')
  const role = (): string | undefined => sim.core(a)?.haStatus()?.vms.find(x => x.vm === 'p')?.role
  const version = (h: string): number => sim.core(h)?.clusterConfig()?.latest.version ?? 0
  let violation: string | null = null
  try {
    sim.run(40)
    sim.isolate(a)
    if (!sim.runUntil(() => role() === 'paused', 30, 1)) violation = 'the copy was not paused'
    else if (sim.configChange(b, d => change(sim, d), 'version 2') === null) violation = 'no change proposed'
    else if (!sim.runUntil(() => version(b) === 2 && version(c) === 2, 20, 1)) violation = 'version 2 not decided'
    else {
      sim.heal()
      sim.runUntil(() => version(a) === 2 && role() !== 'paused' && (hv.running().get('p') ?? []).length === 1, 200, 1)
      sim.run(20)
    }
  } catch (err) {
    if (!(err instanceof InvariantError)) throw err
    violation = err.message
  }
  return { sim, hv, a, events, violation }
}

t.test('a paused copy is resumed across a version that changed only the rules', async t => {
  for (const seed of [1, 2, 3]) {
    const r = pausedAcrossVersion(seed, (_sim, d) => ({ ...d, automation: d.automation === 'full' ? 'partial' : 'full' }))
    t.equal(r.violation, null, `seed ${seed}: no violation`)
    t.same(r.hv.running().get('p'), [r.a], `seed ${seed}: p runs on its home only`)
    t.ok(r.events.some(e => e.includes('vm p became running') && e.includes('(resume)')), `seed ${seed}: its paused copy was resumed`)
    t.notOk(r.events.some(e => e.includes('members changed')), `seed ${seed}: not given up`)
  }
})

t.test('a paused copy is not resumed across a version that added a member: destroyed, booted from its disk', async t => {
  for (const seed of [1, 2, 3]) {
    const r = pausedAcrossVersion(seed, (sim, d) => ({ ...d, members: [...d.members, sim.docMember(sim.ids[3]!)] }))
    t.equal(r.violation, null, `seed ${seed}: no violation`)
    t.equal(r.hv.running().get('p')?.length, 1, `seed ${seed}: p runs once`)
    t.notOk(r.events.some(e => e.includes('vm p became running') && e.includes('(resume)')), `seed ${seed}: no resume`)
    t.ok(r.events.some(e => e.includes('members changed')), `seed ${seed}: the resume was given up for the membership change`)
  }
})

t.test('a version whose document does not parse still moves HA\'s majorities to its members', async t => {
  // The log decides versions by their member lists whatever the document says (the core does not
  // parse it; a faulty proposer could send one that does not parse). HA must count the same
  // members as the log's quorums, or the resume argument's "members of version v" would not be
  // HA's. Four hosts, three members; a version adds the fourth with a document that is not JSON.
  const { sim, ids: [a, b, c, d], events } = fourHosts(5, 'stop')
  sim.run(30)
  t.equal(sim.core(b)?.haStatus()?.quorum.size, 3, 'HA counts the three members')
  const entry = sim.core(b)!.nextConfig({ members: [a, b, c, d], doc: 'not a document', note: 'add d, bad document' })
  t.ok(entry !== null, 'a next version is made')
  sim.step(b, { type: 'operatorConfig', req: 'bad-doc', entry: entry! })
  t.ok(sim.runUntil(() => [a, b, c].every(h => sim.core(h)?.clusterConfig()?.latest.version === 2), 60, 1), 'version 2 decided by the members')
  t.ok(events.some(e => e.includes('config-invalid') && e.includes('version 2 is not valid')), 'its document is reported not valid')
  for (const h of [a, b, c]) t.equal(sim.core(h)?.haStatus()?.quorum.size, 4, `${h.slice(0, 8)}: HA counts the four members of version 2`)
})
