/**
 * Replication vs migration in the trace simulator on a PlanetLab day (a slice: 300 VMs, 100
 * hosts, 6 hours, utilisation x 3 so that hosts get stressed; the real day is in bench/replication.ts):
 * the comparison runs, replicas start and retire, and neither arm ever breaks a host's capacity
 * or a hard rule (anti-affinity pairs and VM-host exclusions over the stateless VMs, counting
 * every copy), as the simulator's independent check after every step says.
 */
import t from 'tap'
import { findPlanetlabDir, loadDay } from '../../agent/sim/trace/traces.js'
import { defaultModel } from '../../agent/sim/trace/model.js'
import { runReplicationArm } from '../../agent/sim/trace/replication.js'
import { CloudsimController } from '../../agent/sim/trace/cloudsim.js'
import { TraceSim } from '../../agent/sim/trace/engine.js'
import { defaultReplicationParams } from '../../policies/replication.js'
import type { RuleSet, VmHostRule, VmVmRule } from '../../policies/types.js'

const dir = findPlanetlabDir()
if (dir === null) {
  t.fail('cannot find data/planetlab in the repository: the replication comparison cannot run')
} else {
  const day = loadDay(dir, '20110303')
  const trace = { ...day, util: day.util.slice(0, 300).map(u => u.map(x => Math.min(1, x * 3))), names: day.names.slice(0, 300) }
  const model = { ...defaultModel(), hosts: 100, limitSec: 6 * 3600 }

  // hard rules that the initial placement satisfies: anti-affinity between VMs on different
  // hosts, and each VM kept off the three hosts after its own
  const probe = new TraceSim(model, trace)
  new CloudsimController(probe, { detector: 'thr', param: 0.8, selection: { kind: 'mmt' } }).initialPlace()
  const vmVm: VmVmRule[] = []
  const vmHost: VmHostRule[] = []
  for (let i = 0; i + 1 < probe.vms.length; i += 2) {
    const a = probe.vms[i]; const b = probe.vms[i + 1]
    if (a === undefined || b === undefined || a.host < 0 || b.host < 0 || a.host === b.host) continue
    vmVm.push({ kind: 'anti-affinity', vms: [String(a.id), String(b.id)], hard: true })
    vmHost.push({ kind: 'anti-affinity', vm: String(a.id), hosts: [1, 2, 3].map(k => String((a.host + k) % model.hosts)), hard: true })
  }
  const rules: RuleSet = { vmVm, vmHost }

  t.test('replication vs migration on a stressed PlanetLab slice, with hard rules', async t => {
    t.ok(vmVm.length > 50, `${vmVm.length} anti-affinity pairs, ${vmHost.length} VM-host exclusions`)
    const base = runReplicationArm(model, trace, { seed: 1, statelessFraction: 1, rules, replication: { ...defaultReplicationParams(), mode: 'off' } })
    const rep = runReplicationArm(model, trace, { seed: 1, statelessFraction: 1, rules, replication: { ...defaultReplicationParams(), mode: 'prefer' } })
    t.comment(JSON.stringify({ migrate: pick(base), replicate: pick(rep) }))
    t.equal(base.replicasStarted, 0, 'the migration arm starts no replica')
    t.ok(base.migrations > 0, 'the migration arm migrates')
    t.ok(rep.statelessOverloadMoves > 0, 'stress happened: overload moves of stateless VMs were planned')
    t.ok(rep.replicasStarted > 0, `replicas started (${rep.replicasStarted}), ${rep.replicasRetired} retired, ${rep.replicasRefused} refused by their target`)
    t.ok(rep.replicasRetired <= rep.replicasStarted)
    t.equal(base.violations, 0, 'migration arm: no capacity or hard-rule breach')
    t.equal(rep.violations, 0, 'replication arm: no capacity or hard-rule breach, counting every copy')
    t.equal(rep.ramOverHostSteps, 0, 'no host ever holds more VM RAM than it has')
    for (const m of [base, rep]) t.ok(Number.isFinite(m.energyKWh) && m.energyKWh > 0 && Number.isFinite(m.slav) && Number.isFinite(m.esv))
  })
}

function pick (m: ReturnType<typeof runReplicationArm>): Record<string, number> {
  return { energyKWh: m.energyKWh, slav: m.slav, esv: m.esv, slavPaper: m.slavPaper, migrations: m.migrations, replicas: m.replicasStarted, retired: m.replicasRetired, refused: m.replicasRefused, violations: m.violations }
}
