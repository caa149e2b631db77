// Goal: no evacuation starts that cannot finish. A consolidation (every VM of an underloaded
// host to other hosts) is reserved as a whole in the decentralised simulator: if one target
// refuses one of its moves, the reservations the others granted are released and none starts.
// A consolidation larger than the source's free outgoing slots (the agents' outMax, 2) is reserved
// whole and copied outMax at a time, as the agents' migration machine does (staged copies).
// Method: the first three hours of 20110303 (most consolidations happen then), seed 1, with and
// without whole reservations: with them no consolidation is left partial, some are withdrawn,
// some have more moves than slots (staged), and no host ever has more than outMax copies under
// way; without them (the control) some are left partial, so the count can fail.
import t from 'tap'
import { findPlanetlabDir, loadDay } from '../../agent/sim/trace/traces.js'
import { defaultModel } from '../../agent/sim/trace/model.js'
import { TraceSim } from '../../agent/sim/trace/engine.js'
import { runDecentralised, type DecentralStats } from '../../agent/sim/trace/decentral.js'

const dir = findPlanetlabDir()
if (dir === null) throw new Error('PlanetLab traces not found: expected data/planetlab in the repository')
const trace = loadDay(dir, '20110303')

function run (wholeEvacuations: boolean): { stats: DecentralStats, migrations: number, ramOver: number, violations: number } {
  const model = { ...defaultModel(), limitSec: 3 * 3600 }
  const sim = new TraceSim(model, trace)
  const stats: DecentralStats = { proposed: 0, refused: {} }
  const m = runDecentralised(sim, 'AGENT', { seed: 1, wholeEvacuations }, stats)
  return { stats, migrations: m.migrations, ramOver: m.ramOverHostSteps, violations: m.admissionViolations ?? -1 }
}

t.test('whole evacuations: none left partial', t => {
  const r = run(true)
  t.ok((r.stats.evacuations ?? 0) > 100, `${r.stats.evacuations ?? 0} consolidations started, every move admitted`)
  t.equal(r.stats.partialEvacuations ?? 0, 0, 'no consolidation started with some of its moves refused')
  t.ok((r.stats.withdrawnEvacuations ?? 0) > 0, `${r.stats.withdrawnEvacuations ?? 0} withdrawn whole when a target refused`)
  t.equal(r.ramOver, 0, 'no host over its RAM')
  t.equal(r.violations, 0, 'every admitted move fit its target')
  t.ok((r.stats.stagedEvacuations ?? 0) > 0, `${r.stats.stagedEvacuations ?? 0} consolidations had more moves than free slots and were copied in stages`)
  t.ok((r.stats.maxCopiesOut ?? 0) >= 1 && (r.stats.maxCopiesOut ?? 0) <= 2, `at most outMax (2) copies out of one host at once (most seen: ${r.stats.maxCopiesOut ?? 0})`)
  t.comment(`${r.stats.cutShortEvacuations ?? 0} cut short part way (a VM that ended before its turn)`)
  t.end()
})

t.test('control: admitted move by move, some are left partial', t => {
  const r = run(false)
  t.ok((r.stats.partialEvacuations ?? 0) > 0, `${r.stats.partialEvacuations ?? 0} consolidations left partial without whole reservations`)
  t.end()
})
