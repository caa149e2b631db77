// Goal: the peer-to-peer migration protocol keeps S1 (exactly one running copy), S2 (no hard
// rule broken, even by concurrent placements) and S3 (no host over capacity counting
// reservations) under random message delays, loss, hypervisor failures and hangs, and kill -9
// of either end at any step; leases free the capacity a dead source held.
// Method: SimCluster with simulated hypervisors (agent/sim/sim-hypervisor.ts) and the migration
// checkers after every tick; each case runs over many seeds derived from SEED, printed on failure
// as "reproduce with SEED=<n>".
import t from 'tap'
import { localTestCoreConfig } from '../../agent/core/config.js'
import { defaultMigrationConfig } from '../../agent/core/migration/migration-config.js'
import type { MigrationConfig } from '../../agent/core/migration/migration-state.js'
import { Prng } from '../../agent/core/prng.js'
import { SafetyCheckers } from '../../agent/sim/checkers.js'
import { SimCluster } from '../../agent/sim/sim-cluster.js'
import { SimHypervisor, type SimHypervisorOptions } from '../../agent/sim/sim-hypervisor.js'
import type { RuleSet } from '../../policies/types.js'

const baseSeed = Number(process.env.SEED ?? 20261123)
const runs = Number(process.env.RUNS ?? 40)
t.comment(`seed=${baseSeed} (reproduce with SEED=${baseSeed})`)

const MEM = 4096

function migCfg (rules: RuleSet = { vmVm: [], vmHost: [] }): MigrationConfig {
  return { ...defaultMigrationConfig(), autoBalance: false, leaseTicks: 30, intentTimeoutTicks: 20, prepareTimeoutTicks: 40, pollTicks: 2, resendTicks: 5, decisionTicks: 5, retainTicks: 5000, rules }
}

function world (seed: number, hosts: number, hv: Omit<SimHypervisorOptions, 'seed'> = {}, rules?: RuleSet, net = { delayTicksMin: 1, delayTicksMax: 3 }) {
  const hyper = new SimHypervisor({ seed: seed * 31 + 7, ...hv })
  const sim = new SimCluster({
    seed, hosts, hypervisor: hyper, migration: migCfg(rules), sampleIntervalTicks: 2,
    capacity: { cpuCores: 8, cpuMipsPerCore: 1000, memMiB: MEM, netMbps: 10000 },
    config: { ...localTestCoreConfig(), reportIntervalTicks: 5, reportStaleGraceTicks: 5, reportPullIntervalTicks: 5 },
    network: net
  })
  const checkers = new SafetyCheckers(sim, { rules: rules ?? { vmVm: [], vmHost: [] }, capMemMiB: MEM })
  return { sim, hyper, checkers }
}

function where (hyper: SimHypervisor, vm: string): string[] { return hyper.running().get(vm) ?? [] }

t.test('a migration moves the VM and leaves one running copy', t => {
  const { sim, hyper, checkers } = world(baseSeed, 3)
  const [h0, h1] = sim.ids as [string, string]
  hyper.addVm(h0, 'vm1', 1024)
  sim.run(20)
  sim.core(h0)!.step({ type: 'operatorMigrate', vm: 'vm1', to: h1 })
  t.ok(sim.runUntil(() => checkers.settled() && where(hyper, 'vm1')[0] === h1, 200, 1), 'vm1 runs on h1 only')
  const src = sim.core(h0)!.migrations()[0]
  const dst = sim.core(h1)!.migrations()[0]
  t.equal(src?.state, 'committed', 'source record committed')
  t.equal(dst?.state, 'committed', 'target record committed')
  t.end()
})

t.test('a slow query of the VM on the source (a dirty-rate measurement on a loaded host) does not use up the wait for the target', t => {
  // Each hypervisor command answers after 25 ticks: longer than the wait for the target's grant
  // (intentTimeoutTicks 20), shorter than the budget of driver work (prepareTimeoutTicks 40).
  const { sim, hyper, checkers } = world(baseSeed + 11, 2, { latencyTicks: 25 })
  const [h0, h1] = sim.ids as [string, string]
  hyper.addVm(h0, 'vm1', 1024)
  sim.run(20)
  sim.core(h0)!.step({ type: 'operatorMigrate', vm: 'vm1', to: h1 })
  t.ok(sim.runUntil(() => checkers.settled() && sim.core(h0)!.migrations()[0]?.state !== 'proposed', 1000, 1), 'settled')
  const src = sim.core(h0)!.migrations()[0]
  t.equal(src?.state, 'committed', `the migration went through (${src?.state ?? 'none'}: ${src?.reason ?? ''})`)
  t.same(where(hyper, 'vm1'), [h1], 'vm1 runs on h1 only')
  t.end()
})

t.test('a refused or failed migration leaves the VM running on the source', t => {
  const { sim, hyper, checkers } = world(baseSeed + 1, 2, { failRate: 1 })
  const [h0, h1] = sim.ids as [string, string]
  hyper.addVm(h0, 'vm1', 1024)
  sim.run(20)
  sim.core(h0)!.step({ type: 'operatorMigrate', vm: 'vm1', to: h1 })
  t.ok(sim.runUntil(() => checkers.settled(), 300, 1), 'settled')
  t.same(where(hyper, 'vm1'), [h0], 'still on the source')
  t.equal(sim.core(h0)!.migrations()[0]?.state, 'aborted')
  // Over capacity: a VM larger than what h1 has left is refused at admission.
  hyper.addVm(h1, 'big', MEM - 512)
  hyper.addVm(h0, 'vm2', 1024)
  sim.run(10)
  sim.core(h0)!.step({ type: 'operatorMigrate', vm: 'vm2', to: h1 })
  sim.run(30)
  const rec = sim.core(h0)!.migrations().find(r => r.vm === 'vm2')
  t.equal(rec?.state, 'aborted', 'refused')
  t.match(rec?.reason, /memory/, `reason: ${rec?.reason ?? ''}`)
  t.same(where(hyper, 'vm2'), [h0])
  t.end()
})

t.test('concurrent anti-affine placements onto one target never both succeed', t => {
  let both = 0; let one = 0
  for (let i = 0; i < runs; i++) {
    const seed = baseSeed + 100 + i
    const rules: RuleSet = { vmVm: [{ kind: 'anti-affinity', vms: ['a', 'b'], hard: true }], vmHost: [] }
    const { sim, hyper, checkers } = world(seed, 3, {}, rules, { delayTicksMin: 1, delayTicksMax: 4 })
    const [h0, h1, h2] = sim.ids as [string, string, string]
    hyper.addVm(h0, 'a', 512)
    hyper.addVm(h1, 'b', 512)
    sim.run(20)
    const p = new Prng(seed)
    const skew = p.int(3)
    sim.core(h0)!.step({ type: 'operatorMigrate', vm: 'a', to: h2 })
    sim.run(skew)
    sim.core(h1)!.step({ type: 'operatorMigrate', vm: 'b', to: h2 })
    try {
      if (!sim.runUntil(() => checkers.settled(), 400, 1)) { t.fail(`not settled; reproduce with SEED=${seed}`); continue }
    } catch (err) { t.fail(String(err)); continue }
    const onTarget = ['a', 'b'].filter(v => where(hyper, v)[0] === h2).length
    if (onTarget === 2) { both++; t.fail(`both on the target; reproduce with SEED=${seed}`) }
    if (onTarget === 1) one++
  }
  t.equal(both, 0, 'never both')
  t.equal(one, runs, `exactly one of the two lands every time (${one}/${runs})`)
  t.end()
})

t.test('kill -9 of the source or the target at a random step resolves to one running copy', t => {
  const outcomes = { committed: 0, aborted: 0 }
  for (let i = 0; i < runs; i++) {
    const seed = baseSeed + 1000 + i
    const p = new Prng(seed)
    const { sim, hyper, checkers } = world(seed, 3, { failRate: p.next() < 0.3 ? 0.3 : 0, hangRate: p.next() < 0.3 ? 0.1 : 0, hangTicks: 10, copyTicks: 4 + p.int(8) }, undefined, { delayTicksMin: 1, delayTicksMax: 3 })
    const [h0, h1] = sim.ids as [string, string]
    hyper.addVm(h0, 'vm1', 1024)
    sim.run(20)
    sim.core(h0)!.step({ type: 'operatorMigrate', vm: 'vm1', to: h1 })
    const victims = p.next() < 0.5 ? [h0] : p.next() < 0.5 ? [h1] : [h0, h1]
    try {
      sim.run(1 + p.int(25))
      for (const v of victims) sim.crash(v)
      sim.run(p.int(60))
      for (const v of victims) sim.restart(v)
      if (!sim.runUntil(() => checkers.settled(), 1500, 1)) {
        t.fail(`not settled (victims ${victims.join(',')}): ${JSON.stringify([...hyper.hosts].map(([h, m]) => [h, [...m.values()].map(v => `${v.id}:${v.state}:${v.out?.status ?? ''}`)]))} ${JSON.stringify(sim.liveIds.map(id => sim.core(id)!.migrations().map(r => `${r.role}:${r.state}:${r.reason}`)))}; reproduce with SEED=${seed}`)
        continue
      }
    } catch (err) { t.fail(String(err)); continue }
    const w = where(hyper, 'vm1')
    t.equal(w.length, 1, `one copy (seed ${seed})`)
    if (w[0] === h1) outcomes.committed++; else outcomes.aborted++
  }
  t.comment(`outcomes: ${JSON.stringify(outcomes)}`)
  t.end()
})

/** No migration in flight on any host, and every host up (a lost VM may run nowhere). */
function quiet (sim: SimCluster): boolean {
  return sim.crashed.size === 0 && sim.liveIds.every(id => sim.core(id)!.migrations().every(r => r.state === 'committed' || r.state === 'aborted'))
}

t.test('a target that loses power after the switch-over: the source never resumes its older copy', t => {
  const { sim, hyper } = world(baseSeed + 7, 3, { copyTicks: 6 }) // its checkers run after every tick
  const [h0, h1] = sim.ids as [string, string]
  hyper.addVm(h0, 'vm1', 1024)
  sim.run(20)
  sim.core(h0)!.step({ type: 'operatorMigrate', vm: 'vm1', to: h1 })
  // The target's copy starts running when the copy completes; cut the power before the target's
  // agent has seen it run (and so before it could commit).
  t.ok(sim.runUntil(() => where(hyper, 'vm1')[0] === h1, 200, 1), 'the guest runs on the target')
  t.equal(sim.core(h1)!.migrations()[0]?.state, 'copying', 'the target has not committed yet')
  sim.crash(h1)
  hyper.powerLoss(h1)
  sim.run(30)
  sim.restart(h1)
  t.ok(sim.runUntil(() => quiet(sim), 1500, 1), 'both ends settled')
  t.same(hyper.staleResumes, [], 'the older copy was never resumed')
  t.same(where(hyper, 'vm1'), [], 'the VM runs nowhere: its newest state was lost with the target')
  const src = sim.core(h0)!.migrations()[0]
  t.equal(src?.state, 'aborted', 'source record aborted')
  t.equal(src?.mayHaveRun, true, 'and marked: its paused copy is older than what ran')
  t.equal(hyper.vmsOf(h0).get('vm1')?.state, 'paused', 'the older copy stays paused for an operator')
  t.end()
})

t.test('power loss of the target at a random step: never two copies, never a stale resume', t => {
  const outcomes = { committed: 0, abortedRunsOnSource: 0, lostWithTarget: 0 }
  for (let i = 0; i < runs; i++) {
    const seed = baseSeed + 3000 + i
    const p = new Prng(seed)
    const { sim, hyper } = world(seed, 3, { failRate: p.next() < 0.3 ? 0.3 : 0, hangRate: p.next() < 0.3 ? 0.1 : 0, hangTicks: 10, copyTicks: 4 + p.int(8) })
    const [h0, h1] = sim.ids as [string, string]
    hyper.addVm(h0, 'vm1', 1024)
    sim.run(20)
    sim.core(h0)!.step({ type: 'operatorMigrate', vm: 'vm1', to: h1 })
    try {
      sim.run(1 + p.int(25))
      sim.crash(h1)
      hyper.powerLoss(h1)
      sim.run(p.int(60))
      sim.restart(h1)
      if (!sim.runUntil(() => quiet(sim), 1500, 1)) { t.fail(`not settled; reproduce with SEED=${seed}`); continue }
    } catch (err) { t.fail(String(err)); continue }
    const w = where(hyper, 'vm1')
    t.ok(w.length <= 1, `at most one copy runs (seed ${seed})`)
    if (w[0] === h1) outcomes.committed++
    else if (w[0] === h0) outcomes.abortedRunsOnSource++
    else {
      outcomes.lostWithTarget++
      t.ok(hyper.lostToPowerLoss.has('vm1'), `a VM that runs nowhere had its newest copy on the target (seed ${seed})`)
    }
  }
  t.comment(`outcomes: ${JSON.stringify(outcomes)}`)
  t.ok(outcomes.abortedRunsOnSource > 0 && outcomes.lostWithTarget > 0, 'the runs cover both a loss before the copy completed and one after')
  t.end()
})

t.test('a dead source\'s reservation expires and frees the target\'s capacity', t => {
  const { sim, hyper } = world(baseSeed + 5, 3)
  const [h0, h1, h2] = sim.ids as [string, string, string]
  hyper.addVm(h0, 'x', 2500)
  hyper.addVm(h2, 'y', 2500)
  sim.run(20)
  sim.core(h0)!.step({ type: 'operatorMigrate', vm: 'x', to: h1 })
  // Crash the source as soon as the target holds the reservation.
  t.ok(sim.runUntil(() => (sim.core(h1)!.migrations()[0]?.state ?? '') !== '', 50, 1), 'target reserved')
  sim.crash(h0)
  sim.core(h2)!.step({ type: 'operatorMigrate', vm: 'y', to: h1 })
  sim.run(15)
  const refused = sim.core(h2)!.migrations().find(r => r.vm === 'y')
  t.equal(refused?.state, 'aborted', `refused while the reservation holds: ${refused?.reason ?? ''}`)
  t.ok(sim.runUntil(() => sim.core(h1)!.migrations().every(r => r.state === 'aborted'), 100, 1), 'the lease expired: reservation aborted')
  sim.run(10)
  sim.core(h2)!.step({ type: 'operatorMigrate', vm: 'y', to: h1 })
  t.ok(sim.runUntil(() => where(hyper, 'y')[0] === h1, 200, 1), 'the freed capacity admits another VM')
  t.end()
})

t.test('drain spreads the host\'s VMs over the cluster', t => {
  const { sim, hyper, checkers } = world(baseSeed + 6, 4)
  const [h0] = sim.ids as [string]
  for (let i = 0; i < 6; i++) hyper.addVm(h0, `d${i}`, 512)
  sim.run(20)
  sim.core(h0)!.step({ type: 'operatorDrain', host: h0 })
  t.ok(sim.runUntil(() => checkers.settled() && hyper.vmsOf(h0).size === 0, 800, 1), 'host emptied')
  const counts = sim.ids.slice(1).map(h => hyper.vmsOf(h).size)
  t.ok(counts.every(c => c >= 1), `spread: ${counts.join(',')}`)
  t.end()
})

t.test('a VM measured above its vCPUs (emulator and I/O threads) still migrates, reserving its vCPUs\' worth', t => {
  const { sim, hyper, checkers } = world(baseSeed + 77, 2)
  const [h0, h1] = sim.ids as [string, string]
  // 1 vCPU on an 8-core host, measured at half the host: the QEMU process, not the guest's demand.
  hyper.addVm(h0, 'hot', 1024, 0.5)
  sim.run(20)
  sim.core(h0)!.step({ type: 'operatorMigrate', vm: 'hot', to: h1 })
  t.ok(sim.runUntil(() => checkers.settled() && where(hyper, 'hot')[0] === h1, 300, 1), 'hot runs on h1 only')
  const rec = sim.core(h0)!.migrations()[0]
  t.equal(rec?.state, 'committed', `committed (${rec?.reason ?? ''})`)
  t.equal(rec?.cpuDemandMips, 1000, 'the reservation counts one core (1000 MIPS), not the 4000 measured')
  t.end()
})
