/**
 * Benchmark of `starling sim`: one day (20110303, 800 hosts, 1052 VMs), the four CloudSim
 * policies in centralised mode and the decentralised agents. Prints one JSON object with wall
 * times, the ratio to CloudSim's measured wall time (reference_runs.csv, sorted variant) and the
 * metrics.
 */
import { findPlanetlabDir, loadDay } from '../agent/sim/trace/traces.js'
import { loadReference, runOne } from '../agent/sim/trace/run.js'

const dir = process.env.TRACES ?? findPlanetlabDir()
if (dir == null) throw new Error('PlanetLab traces not found: expected data/planetlab in the repository (or set TRACES=DIR)')
const day = process.env.DAY ?? '20110303'
const ref = loadReference(dir).filter(r => r.variant === 'v303-sorted' && r.day === day)
const trace = loadDay(dir, day)
const runs = []
for (const policy of ['THR-MMT-0.8', 'IQR-MMT-1.5', 'MAD-MMT-2.5', 'LR-MMT-1.2']) {
  const r = runOne(trace, { policy, mode: 'central' })
  const cloudsim = ref.find(x => x.policy === policy)
  runs.push({ policy, mode: 'central', wallS: r.wallMs / 1000, cloudsimWallS: cloudsim?.wallS, speedupVsCloudsim: cloudsim !== undefined ? cloudsim.wallS / (r.wallMs / 1000) : null, metrics: r.metrics })
}
const d = runOne(trace, { policy: 'AGENT', mode: 'decentral' })
runs.push({ policy: 'AGENT', mode: 'decentral', wallS: d.wallMs / 1000, metrics: d.metrics })
console.log(JSON.stringify({ day, hosts: 800, vms: trace.util.length, node: process.version, runs }))
