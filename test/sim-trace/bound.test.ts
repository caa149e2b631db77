// Goal: the RAM-respecting energy lower bound (agent/sim/trace/bound.ts) is a bound: no run that
// respects host RAM spends less, on any March day; and it is not vacuous: the CloudSim-faithful
// centralised run, which ignores host RAM, goes below it.
// Method: the bound per day against DVFS (first fit, RAM respected) run here on every day, the
// RAM-enforced CloudSim runs of the reference CSV (v303-sorted-ram, every policy and day), and one
// decentralised run (20110303, seed 1); the packing and slope parts on small hand-made cases.
import t from 'tap'
import { findPlanetlabDir, listDays, loadDay } from '../../agent/sim/trace/traces.js'
import { loadReference, runOne } from '../../agent/sim/trace/run.js'
import { energyLowerBound, minChordSlope, ramHostsNeeded } from '../../agent/sim/trace/bound.js'
import { defaultModel, G4, G5 } from '../../agent/sim/trace/model.js'

const dir = findPlanetlabDir()
if (dir === null) throw new Error('PlanetLab traces not found: expected data/planetlab in the repository')
const days = listDays(dir)

t.test('packing and power parts', t => {
  t.equal(ramHostsNeeded([1740, 1740, 613], 4096), 1, 'two large VMs and a micro fill one 4 GiB host')
  t.equal(ramHostsNeeded([1740, 1740, 1740], 4096), 2, 'three 1740 MiB VMs need two hosts (at most two per host)')
  t.equal(ramHostsNeeded([2100, 2100], 4096), 2, 'two VMs over half a host need a host each')
  t.equal(ramHostsNeeded([870, 870, 870, 870, 613], 4096), 1, 'four medium and a micro fit one host')
  t.equal(ramHostsNeeded([870, 870, 870, 870, 870], 4096), 2, 'five medium VMs (4350 MiB) need two hosts')
  const m = defaultModel()
  t.ok(Math.abs(minChordSlope(m) - (G5.powerW[1] as number - (G5.powerW[0] as number)) / (0.1 * 2 * G5.peMips)) < 1e-12,
    'the flattest chord from idle is the G5 first 10 % (3.3 W per 532 MIPS)')
  t.ok(minChordSlope({ ...m, hostTypes: [G4] }) > minChordSlope(m), 'G4 alone has a steeper flattest chord')
  t.end()
})

const ref = loadReference(dir).filter(r => r.variant === 'v303-sorted-ram')
const bounds = new Map(days.map(d => [d, energyLowerBound(defaultModel(), loadDay(dir, d))]))

t.test('no RAM-respecting run spends less', t => {
  t.ok(ref.length >= 5 * days.length, `${ref.length} RAM-enforced reference runs`)
  for (const day of days) {
    const b = bounds.get(day)
    if (b === undefined) throw new Error(`no bound for ${day}`)
    t.ok(b.energyKWh > 0 && b.idleKWh < b.energyKWh, `${day}: bound ${b.energyKWh.toFixed(1)} kWh, idle part ${b.idleKWh.toFixed(1)}`)
    for (const r of ref.filter(x => x.day === day)) {
      t.ok(b.energyKWh <= r.energyKWh, `${day} ${r.policy} (CloudSim, RAM enforced): ${r.energyKWh.toFixed(2)} >= bound ${b.energyKWh.toFixed(2)}`)
    }
    const dvfs = runOne(loadDay(dir, day), { policy: 'DVFS', mode: 'central' })
    t.equal(dvfs.metrics.ramOverHostSteps, 0, `${day} DVFS respects RAM`)
    t.ok(b.energyKWh <= dvfs.metrics.energyKWh, `${day} DVFS here: ${dvfs.metrics.energyKWh.toFixed(2)} >= bound ${b.energyKWh.toFixed(2)}`)
  }
  t.end()
})

t.test('decentralised agents, and the RAM-blind CloudSim run below it', t => {
  const day = '20110303'
  const b = bounds.get(day)
  if (b === undefined) throw new Error(`no bound for ${day}`)
  const trace = loadDay(dir, day)
  const ours = runOne(trace, { policy: 'AGENT', mode: 'decentral', decentral: { seed: 1 } })
  t.equal(ours.metrics.ramOverHostSteps, 0, 'the agents respect RAM')
  t.ok(b.energyKWh <= ours.metrics.energyKWh, `agents ${ours.metrics.energyKWh.toFixed(2)} >= bound ${b.energyKWh.toFixed(2)}`)
  const lr = runOne(trace, { policy: 'LR-MMT-1.2', mode: 'central' })
  t.ok(lr.metrics.ramOverHostSteps > 0 && lr.metrics.energyKWh < b.energyKWh,
    `CloudSim-faithful LR-MMT-1.2 overfills RAM (${lr.metrics.ramOverHostSteps} host-steps) and spends ${lr.metrics.energyKWh.toFixed(2)} < bound: the bound binds`)
  t.end()
})
