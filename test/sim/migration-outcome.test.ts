/**
 * Goal: a migration source left in switching by a cut learns the outcome after the heal, even
 * when the target has since migrated the VM onwards (its record of the first migration is then
 * superseded) and restarted. The target committed while its answers to the source were lost;
 * once the cut heals, the source asks again and must hear "committed": it then stops its paused
 * copy and the VM's VIP leaves it. Before the fix the restarted target had forgotten the
 * superseded record, answered "unknown", and the source stayed in switching for good with the
 * VIP (the simulator's sourceStuckSwitching, seeds 777099 and 777167 of the random runs).
 * Never two running copies meanwhile (S1, checked after every tick).
 * Method: SimCluster (the real AgentCore on three hosts, no HA), a VM with a VIP, a one-way cut
 * from target to source during the switch-over, a second migration onwards, an agent crash of
 * the first target.
 */
import t from 'tap'
import { InvariantError, SafetyCheckers } from '../../agent/sim/checkers.js'
import { simMigrationConfig } from '../../agent/sim/scenarios.js'
import { SimCluster } from '../../agent/sim/sim-cluster.js'
import { SimHypervisor } from '../../agent/sim/sim-hypervisor.js'

const MEM = 16384

t.test('a source in switching hears the commit after the heal, from a target that superseded the record and restarted', async t => {
  const [src, dst, next] = ['h0000', 'h0001', 'h0002']
  for (const seed of [1, 2, 3, 4, 5]) {
    const hv = new SimHypervisor({ seed: seed * 31 + 7, copyTicks: 6 })
    const sim = new SimCluster({
      seed, hosts: 3, hypervisor: hv, sampleIntervalTicks: 2, migration: simMigrationConfig(),
      capacity: { cpuCores: 8, cpuMipsPerCore: 1000, memMiB: MEM, netMbps: 10000 },
      network: { delayTicksMin: 1, delayTicksMax: 2 },
      vips: { specs: [{ id: 'ip-web', address: '192.0.2.10/24', iface: 'eth0', binding: { kind: 'vm', vm: 'web' } }] }
    })
    hv.addVm(src, 'web', 1024)
    const checkers = new SafetyCheckers(sim, { capMemMiB: MEM })
    const record = (h: string, role: 'source' | 'target', from = src): { state: string } | undefined =>
      sim.core(h)?.migrations().find(r => r.vm === 'web' && r.role === role && r.source === from)
    try {
      t.ok(sim.runUntil(() => [...sim.carriers.get('ip-web')!].join() === src, 100, 1), `seed ${seed}: the VIP is with the VM on ${src}`)
      sim.step(src, { type: 'operatorMigrate', vm: 'web', to: dst })
      t.ok(sim.runUntil(() => record(src, 'source')?.state === 'switching', 100, 1), `seed ${seed}: the source reaches switching`)
      sim.cut(dst, src) // the target's answers are lost from here on
      t.ok(sim.runUntil(() => record(dst, 'target')?.state === 'committed', 100, 1), `seed ${seed}: the target commits`)
      sim.run(10)
      t.equal(record(src, 'source')?.state, 'switching', `seed ${seed}: the source did not hear it`)
      // The target migrates the VM onwards (a newer record of the VM there), then restarts.
      t.ok(sim.runUntil(() => hv.running().get('web')?.[0] === dst && sim.core(dst)?.migrations().every(r => r.state === 'committed' || r.state === 'aborted') === true, 60, 1), `seed ${seed}: the VM runs on ${dst}`)
      sim.step(dst, { type: 'operatorMigrate', vm: 'web', to: next })
      t.ok(sim.runUntil(() => record(dst, 'source', dst)?.state === 'committed', 150, 1), `seed ${seed}: the VM moved on to ${next}`)
      sim.agentCrash(dst, 3)
      sim.run(10)
      t.ok(sim.isRunning(dst), `seed ${seed}: the target's agent is back`)
      t.equal(record(src, 'source')?.state, 'switching', `seed ${seed}: the source still waits`)
      sim.heal()
      const healedAt = sim.now
      const settled = sim.runUntil(() => record(src, 'source')?.state === 'committed' &&
        (hv.running().get('web') ?? []).join() === next && [...sim.carriers.get('ip-web')!].join() === next, 200, 1)
      t.ok(settled, `seed ${seed}: ${sim.now - healedAt} ticks after the heal the source committed, the VM runs once on ${next} and its VIP is there alone`)
      t.equal(checkers.ticksChecked, sim.now, `seed ${seed}: S1-S5 checked after every tick`)
    } catch (err) {
      if (!(err instanceof InvariantError)) throw err
      t.fail(`seed ${seed}: ${err.message}`)
    }
  }
})
