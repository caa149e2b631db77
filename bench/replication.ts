/**
 * Replication vs migration for stateless VMs (policies/replication.ts, agent/sim/trace/replication.ts)
 * on PlanetLab days: the same decentralised agents, day, seeds and stateless set, three arms:
 * migrate (replication off: the baseline), replicate when cheaper (mode 'cost'), replicate
 * whenever it relieves the host and fits (mode 'prefer', Golondrina's choice). Prints one JSON
 * object: per arm the medians over the seeds of energy, SLAV and ESV (CloudSim's and the paper's
 * SLATAH), migrations, replicas, and the ratios to the migration arm of the same seed.
 *
 *   node dist/bench/replication.js [--day 20110303] [--seeds 1-3] [--stateless 0.5] [--hosts 800] [--scale 1]
 *
 * --scale multiplies every VM's trace utilisation (capped at 1): the PlanetLab days are lightly
 * loaded, so almost every migration is a consolidation and stress (where replication applies)
 * is rare; --scale 3 is a stressed variant of the same day.
 */
import { parseArgs } from 'node:util'
import { findPlanetlabDir, loadDay } from '../agent/sim/trace/traces.js'
import { defaultModel } from '../agent/sim/trace/model.js'
import { runReplicationArm, type ReplicationMetrics } from '../agent/sim/trace/replication.js'
import { defaultReplicationParams, type ReplicationParams } from '../policies/replication.js'
import { parseSeeds } from '../agent/cli/sim.js'

const { values: a } = parseArgs({
  options: { day: { type: 'string', default: '20110303' }, seeds: { type: 'string', default: '1-3' }, stateless: { type: 'string', default: '0.5' }, hosts: { type: 'string' }, scale: { type: 'string', default: '1' }, traces: { type: 'string' } }
})
const dir = a.traces ?? findPlanetlabDir()
if (dir === null) { process.stderr.write('cannot find data/planetlab in the repository; pass --traces DIR\n'); process.exit(2) }
const seeds = parseSeeds(a.seeds) ?? [1]
const model = defaultModel()
if (a.hosts !== undefined) model.hosts = Number(a.hosts)
const day = loadDay(dir, a.day)
const scale = Number(a.scale)
const trace = scale === 1 ? day : { ...day, util: day.util.map(u => u.map(x => Math.min(1, x * scale))) }
const statelessFraction = Number(a.stateless)
const arms: Array<[string, ReplicationParams['mode']]> = [['migrate', 'off'], ['replicateIfCheaper', 'cost'], ['replicatePreferred', 'prefer']]
const keys = ['energyKWh', 'slav', 'esv', 'slavPaper', 'esvPaper', 'slatah', 'slatahPaper', 'pdm', 'overallSla', 'migrations', 'replicasStarted', 'replicasRetired', 'replicasPeak', 'replicasRefused', 'violations', 'statelessOverloadMoves', 'ramOverHostSteps'] as const
const median = (xs: number[]): number => { const s = xs.slice().sort((x, y) => x - y); const k = s.length >> 1; return s.length % 2 === 1 ? s[k] as number : ((s[k - 1] as number) + (s[k] as number)) / 2 }
const runs: Record<string, ReplicationMetrics[]> = {}
const wall: Record<string, number[]> = {}
for (const seed of seeds) {
  for (const [name, mode] of arms) {
    const t0 = performance.now()
    const m = runReplicationArm(model, trace, { seed, statelessFraction, replication: { ...defaultReplicationParams(), mode } })
    ;(runs[name] ??= []).push(m)
    ;(wall[name] ??= []).push(performance.now() - t0)
  }
}
const out: Record<string, unknown> = {
  day: a.day, scale, hosts: model.hosts, vms: trace.util.length, seeds, statelessFraction, statelessVms: runs.migrate?.[0]?.statelessVms,
  model: { ...defaultReplicationParams(), mode: undefined, note: 'a replica halves the original\'s demand (requests split evenly), costs the VM\'s full RAM on its target and overheadFraction x nominal MIPS; boots in bootSec from its image (no memory copy, no degradation); a migration copies RAM over half the link with 10 % degradation (CloudSim)' },
  arms: {}
}
for (const [name] of arms) {
  const rs = runs[name] ?? []
  const med: Record<string, number> = {}
  for (const k of keys) med[k] = median(rs.map(r => r[k] as number))
  const ratio: Record<string, number> = {}
  for (const k of ['energyKWh', 'slav', 'esv', 'slavPaper', 'esvPaper', 'migrations'] as const) {
    ratio[k] = median(rs.map((r, i) => { const b = (runs.migrate?.[i] as ReplicationMetrics)[k]; return b > 0 ? r[k] / b : NaN }))
  }
  ;(out.arms as Record<string, unknown>)[name] = { median: med, ratioToMigrate: ratio, wallMsMedian: median(wall[name] ?? []) }
}
process.stdout.write(JSON.stringify(out, null, 2) + '\n')
