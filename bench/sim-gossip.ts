/**
 * Validation of the decentralised mode's gossip age model against the agents' real report
 * dissemination (agent/sim/trace/core-gossip.ts): the same day, hosts, VMs and seeds run with
 * views from the age model ('model') and from one AgentCore per host over the simulated network
 * ('core', snapshot content, so that the two differ only in staleness and missing peers), and,
 * with ARMS including it, the agent's own view ('agent'). Prints one JSON object: per arm the
 * median wall time, the metrics per seed, the distribution of report ages the deciders saw
 * (fraction of (viewer, peer) pairs per age in steps, and missing), and core/model ratios.
 *
 * Environment: DAY (20110303), HOSTS (800), VMS (all; the first VMS VMs of the day), SEEDS (1),
 * TICKS (core ticks per step, 12), LINK_LOSS (0.1: the age model's default lossP), ARMS
 * (model,core), LIMIT_S (seconds of the day, 86400).
 */
import { findPlanetlabDir, loadDay } from '../agent/sim/trace/traces.js'
import { defaultModel } from '../agent/sim/trace/model.js'
import { TraceSim } from '../agent/sim/trace/engine.js'
import { AGE_SLOTS, runDecentralised, type DecentralOptions, type DecentralStats } from '../agent/sim/trace/decentral.js'
import { parseSeeds } from '../agent/cli/sim.js'

const dir = process.env.TRACES ?? findPlanetlabDir()
if (dir == null) throw new Error('PlanetLab traces not found: expected data/planetlab in the repository (or set TRACES=DIR)')
const day = process.env.DAY ?? '20110303'
const full = loadDay(dir, day)
const vms = process.env.VMS !== undefined ? Number(process.env.VMS) : full.util.length
const trace = { ...full, names: full.names.slice(0, vms), util: full.util.slice(0, vms) }
const model = defaultModel()
model.hosts = Number(process.env.HOSTS ?? 800)
model.limitSec = Number(process.env.LIMIT_S ?? model.limitSec)
const seeds = parseSeeds(process.env.SEEDS ?? '1') ?? [1]
const ticks = Number(process.env.TICKS ?? 12)
const linkLoss = Number(process.env.LINK_LOSS ?? 0.1)
const arms = (process.env.ARMS ?? 'model,core').split(',')

function armOptions (arm: string, seed: number): Partial<DecentralOptions> {
  const core = { coreGossip: { ticksPerStep: ticks, network: { delayTicksMin: 1, delayTicksMax: 1, loss: linkLoss } } }
  switch (arm) {
    case 'model': return { seed }
    case 'core': return { seed, gossip: 'core', coreView: 'snapshot', ...core }
    case 'agent': return { seed, gossip: 'core', coreView: 'agent', ...core }
    default: throw new Error(`unknown arm ${arm} (model, core, agent)`)
  }
}

const median = (xs: number[]): number => { const s = xs.slice().sort((a, b) => a - b); const m = s.length >> 1; return s.length % 2 === 1 ? s[m] as number : ((s[m - 1] as number) + (s[m] as number)) / 2 }

const out: Record<string, unknown> = { day, hosts: model.hosts, vms, limitS: model.limitSec, seeds, ticksPerStep: ticks, linkLoss, node: process.version }
const summary: Record<string, { wallS: number, energyKWh: number, slav: number, migrations: number, meanAge: number, missing: number }> = {}
for (const arm of arms) {
  const runs = []
  for (const seed of seeds) {
    const stats: DecentralStats = { proposed: 0, refused: {} }
    const t0 = performance.now()
    const m = runDecentralised(new TraceSim(model, trace), 'AGENT', armOptions(arm, seed), stats)
    const wallS = (performance.now() - t0) / 1000
    const ages = stats.viewAges ?? new Array<number>(AGE_SLOTS).fill(0)
    const total = ages.reduce((a, b) => a + b, 0)
    const frac = ages.map(x => total > 0 ? Number((x / total).toFixed(5)) : 0)
    let meanAge = 0; let seen = 0
    for (let a = 0; a < AGE_SLOTS - 1; a++) { meanAge += a * (ages[a] as number); seen += ages[a] as number }
    runs.push({
      seed, wallS: Number(wallS.toFixed(2)),
      metrics: { energyKWh: m.energyKWh, slav: m.slav, slavPaper: m.slavPaper, esv: m.esv, migrations: m.migrations, overallSla: m.overallSla, admissionViolations: m.admissionViolations },
      proposed: stats.proposed, refused: stats.refused, views: stats.views ?? 0,
      ageFractions: { byAgeSteps: frac.slice(0, AGE_SLOTS - 1), missing: frac[AGE_SLOTS - 1] },
      meanAgeSteps: seen > 0 ? Number((meanAge / seen).toFixed(4)) : null,
      ...(stats.network !== undefined ? { network: stats.network } : {})
    })
    process.stderr.write(`${arm} seed ${seed}: ${wallS.toFixed(1)} s, ${m.energyKWh.toFixed(1)} kWh, ${m.migrations} migrations\n`)
  }
  out[arm] = runs
  summary[arm] = {
    wallS: median(runs.map(r => r.wallS)),
    energyKWh: median(runs.map(r => r.metrics.energyKWh)),
    slav: median(runs.map(r => r.metrics.slav)),
    migrations: median(runs.map(r => r.metrics.migrations)),
    meanAge: median(runs.map(r => r.meanAgeSteps ?? 0)),
    missing: median(runs.map(r => r.ageFractions.missing ?? 0))
  }
}
out.medians = summary
const base = summary.model
if (base !== undefined) {
  const ratios: Record<string, unknown> = {}
  for (const arm of arms) {
    const s = summary[arm]
    if (arm === 'model' || s === undefined) continue
    ratios[`${arm}/model`] = { wall: s.wallS / base.wallS, energy: s.energyKWh / base.energyKWh, slav: base.slav > 0 ? s.slav / base.slav : null, migrations: base.migrations > 0 ? s.migrations / base.migrations : null }
  }
  out.ratios = ratios
}
console.log(JSON.stringify(out))
