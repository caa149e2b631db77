// Goal: the decentralised agents never overfill a host (CPU at admission, RAM at every step) and beat the bar on one day.
// Method: run 20110303 with every host deciding from its own stale view (seeded), then check
// that no host ever exceeded capacity from admitted moves (powerClamps = 0), and compare with
// CloudSim's LR-MMT-1.2 reference: ESV <= 0.7 x the best CloudSim ESV, SLAV <= LR-MMT's,
// migrations <= 25 % of LR-MMT's.
import t from 'tap'
import { findPlanetlabDir, loadDay } from '../../agent/sim/trace/traces.js'
import { loadReference, runOne } from '../../agent/sim/trace/run.js'

const dir = findPlanetlabDir()
if (dir === null) throw new Error('PlanetLab traces not found: expected shared/traces/planetlab above the working directory (or ../shared/traces/planetlab next to the repo)')
const day = '20110303'
const ref = loadReference(dir).filter(r => r.variant === 'v303-sorted' && r.day === day)
const lr = ref.find(r => r.policy === 'LR-MMT-1.2')
if (lr === undefined) throw new Error('reference LR-MMT-1.2 missing')
const best = Math.min(...ref.filter(r => r.esv > 0).map(r => r.esv))
const res = runOne(loadDay(dir, day), { policy: 'AGENT', mode: 'decentral', decentral: { seed: 7 } })
const m = res.metrics
t.equal(m.powerClamps, 0, 'no host was ever driven over 100 % by admitted moves')
t.equal(m.ramOverHostSteps, 0, 'no host ever held more VM RAM than it has (copies in flight included)')
t.ok(m.maxRamFraction <= 1, `largest RAM fill ${m.maxRamFraction.toFixed(3)} <= 1`)
t.equal(m.admissionViolations, 0, 'every admitted move fit its target by RAM and by CPU reservation (independent check)')
t.ok(m.esv <= 0.7 * best, `ESV ${m.esv.toExponential(3)} <= 0.7 x ${best.toExponential(3)}`)
t.ok(m.slav <= lr.slav, `SLAV ${m.slav.toExponential(3)} <= ${lr.slav.toExponential(3)}`)
t.ok(m.migrations <= 0.25 * lr.migrations, `migrations ${m.migrations} <= 25 % of ${lr.migrations}`)
t.ok(res.wallMs < 60_000, `took ${(res.wallMs / 1000).toFixed(1)} s`)
