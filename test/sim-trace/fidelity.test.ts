// Goal: the centralised mode reproduces CloudSim 3.0.3 (variant B: files in sorted-name order)
// on 20110303. Method: run THR-MMT-0.8, IQR-MMT-1.5, MAD-MMT-2.5 and LR-MMT-1.2 plus the DVFS
// baseline and compare with reference_runs.csv: energy and migrations within 5 %, SLAV within 10 %.
import t from 'tap'
import { findPlanetlabDir, loadDay } from '../../agent/sim/trace/traces.js'
import { loadReference, runOne } from '../../agent/sim/trace/run.js'

const dir = findPlanetlabDir()
if (dir === null) throw new Error('PlanetLab traces not found: expected data/planetlab in the repository')
const ref = loadReference(dir)
const trace = loadDay(dir, '20110303')

for (const policy of ['DVFS', 'THR-MMT-0.8', 'IQR-MMT-1.5', 'MAD-MMT-2.5', 'LR-MMT-1.2']) {
  t.test(policy, t => {
    const r = ref.find(x => x.variant === 'v303-sorted' && x.day === '20110303' && x.policy === policy)
    if (r === undefined) throw new Error(`reference row missing for ${policy}`)
    const got = runOne(trace, { policy, mode: 'central' }).metrics
    const rel = (a: number, b: number): number => b === 0 ? Math.abs(a) : Math.abs(a - b) / b
    t.ok(rel(got.energyKWh, r.energyKWh) <= 0.05, `energy ${got.energyKWh.toFixed(2)} vs ${r.energyKWh}`)
    t.ok(rel(got.migrations, r.migrations) <= 0.05, `migrations ${got.migrations} vs ${r.migrations}`)
    t.ok(rel(got.slav, r.slav) <= 0.10, `SLAV ${got.slav.toExponential(4)} vs ${r.slav.toExponential(4)}`)
    t.end()
  })
}
