/**
 * `starling sim`: replay PlanetLab-format traces through the data-centre model with either
 * CloudSim's centralised policies or the agents' decentralised decisions.
 *
 *   starling sim [--traces DIR] [--day 20110303|all]... [--policy LR-MMT-1.2,...] [--mode central|decentral|both]
 *                [--json] [--report DIR] [--compare] [--order FILE] [--hosts N] [--interval S] [--limit S]
 *                [--link-share F] [--keep-idle-vms] [--seed N|A-B|A,B,...] [--loss P] [--view-age N]
 *                [--gossip model|core] [--gossip-view snapshot|agent] [--gossip-ticks K] [--link-loss P] [--link-dup P]
 *
 * --gossip core builds the decentralised views from the agents' own cores gossiping over the
 * simulated network (K core ticks per step, links losing and duplicating frames with the given
 * probabilities) instead of the age model (--loss, --view-age); see agent/sim/trace/decentral.ts.
 *
 * --seed takes one seed, a range (1-5) or a list; the decentralised agents run once per seed.
 *
 * --memory runs the memory capacity experiment instead (agent/sim/trace/memory.ts): how many VMs
 * --hosts hosts (default 100) carry at the same service level with no overcommit, with ballooning
 * and with ballooning and page sharing, over --ratios (memory overcommit ratios, default
 * 1,1.1,1.2,1.3,1.4,1.5,1.75,2); --shared F sets the share of a VM's memory KSM merges with a VM of
 * its type (default 0.15); --tolerance T accepts T more VM-time short of memory than the
 * no-overcommit run (default 0: the same service level).
 *
 * --compare checks every decentralised run against the bar, both ways:
 * - CloudSim's definition: CloudSim's reference numbers (reference_runs.csv, sorted-name
 *   variant), SLAV = CloudSim's SLATAH x PDM: ESV <= 0.7 x the day's best CloudSim ESV,
 *   SLAV <= LR-MMT-1.2's;
 * - the paper's definition (SLATAH = time at 100 % by demand, see engine.ts Metrics): the same
 *   two tests against the centralised runs of this simulator (which reproduce CloudSim), which
 *   --compare adds for THR/IQR/MAD/LR-MMT when they were not asked for;
 * - for both: migrations <= 25 % of LR-MMT-1.2's, total shortfall <= LR-MMT-1.2's, and the
 *   energy ratio to LR-MMT-1.2;
 * - the fair reference, CloudSim 3.0.3 with host RAM enforced (reference_runs.csv variant
 *   v303-sorted-ram, REFERENCE.md section 7): energy and migrations <= its LR-MMT-1.2's, ESV <= its
 *   best policy's (DVFS, which never migrates, left out), and energy <= 1.15 x the day's
 *   RAM-respecting lower bound (agent/sim/trace/bound.ts).
 *
 * Every run's energy is also shown over that lower bound (column E/LB of the table, and
 * `lowerBounds` in the JSON).
 */
import { parseArgs } from 'node:util'
import { findPlanetlabDir, listDays, loadDay } from '../sim/trace/traces.js'
import { defaultModel } from '../sim/trace/model.js'
import { loadReference, runOne, type Mode, type RunResult } from '../sim/trace/run.js'
import { table, writeReport } from '../sim/trace/report.js'
import { energyLowerBound, type EnergyBound } from '../sim/trace/bound.js'
import { ConfigError } from '../../policies/config.js'
import { defaultMemorySimParams, memoryCapacity, type MemoryCapacityReport, type MemoryRunResult } from '../sim/trace/memory.js'

const CLOUDSIM_POLICIES = ['THR-MMT-0.8', 'IQR-MMT-1.5', 'MAD-MMT-2.5', 'LR-MMT-1.2']

/** "3", "1-5" or "1,2,7" -> seeds; null if malformed. */
export function parseSeeds (v: string): number[] | null {
  const out: number[] = []
  for (const part of v.split(',')) {
    const m = /^\s*(\d+)\s*(?:-\s*(\d+))?\s*$/.exec(part)
    if (m === null) return null
    const a = Number(m[1]); const b = m[2] !== undefined ? Number(m[2]) : a
    if (b < a || b - a > 1000) return null
    for (let x = a; x <= b; x++) out.push(x)
  }
  return out
}

/** `starling sim --memory`: the memory capacity experiment, one report per day. */
function memoryCli (dir: string, days: string[], a: { hosts?: string, ratios?: string, shared?: string, tolerance?: string, json?: boolean, order?: string }): number {
  const p = defaultMemorySimParams()
  if (a.hosts !== undefined) {
    const h = Number(a.hosts)
    if (!Number.isInteger(h) || h < 1) { process.stderr.write(`--hosts must be a positive integer (got ${a.hosts})\n`); return 2 }
    p.hosts = h
  }
  if (a.shared !== undefined) {
    const s = Number(a.shared)
    if (!Number.isFinite(s) || s < 0 || s >= 1) { process.stderr.write(`--shared must be a fraction in [0, 1) (got ${a.shared})\n`); return 2 }
    p.sharedFraction = s
  }
  const ratios = (a.ratios ?? '1,1.1,1.2,1.3,1.4,1.5,1.75,2').split(',').map(Number)
  if (ratios.some(r => !Number.isFinite(r) || r < 1 || r > 4)) { process.stderr.write(`--ratios must be numbers between 1 and 4 (got ${a.ratios ?? ''})\n`); return 2 }
  const tolerance = a.tolerance === undefined ? 0 : Number(a.tolerance)
  if (!Number.isFinite(tolerance) || tolerance < 0 || tolerance >= 1) { process.stderr.write(`--tolerance must be a fraction in [0, 1) (got ${a.tolerance ?? ''})\n`); return 2 }
  const reports: MemoryCapacityReport[] = []
  try {
    for (const day of days) reports.push(memoryCapacity(loadDay(dir, day, a.order), defaultModel(), p, ratios, tolerance))
  } catch (err) {
    if ((err as Error).name === 'TraceError') { process.stderr.write(`${(err as Error).message}\n`); return 2 }
    throw err
  }
  if (a.json === true) { process.stdout.write(JSON.stringify({ traces: dir, reports }, null, 2) + '\n'); return 0 }
  const pct = (x: number): string => `${(100 * x).toFixed(3)}%`
  const lines: string[] = []
  for (const r of reports) {
    lines.push(`day ${r.day}: ${r.hosts} hosts, ${r.vmsInTrace} VMs in the trace; service level: VM-time short of memory <= ${pct(r.serviceLevel.maxShortVmTimeShare)}`)
    lines.push(`  assumptions: guest demand = memory x (${r.assumptions.baseFraction} + ${r.assumptions.activeFraction} x CPU), KSM merges ${r.assumptions.sharedFraction} of a VM with one of its type`)
    lines.push('  scenario                         VMs   short%   migr  stuck  mem-use  ksm-MiB  ballooned-MiB')
    const row = (x: MemoryRunResult, mark: string): string => `  ${(x.scenario.name + mark).padEnd(31)} ${String(x.vmsPlaced).padStart(4)}  ${pct(x.shortVmTimeShare).padStart(7)}  ${String(x.migrations).padStart(5)}  ${String(x.stuckMoves).padStart(5)}  ${x.meanHostMemUse.toFixed(3).padStart(7)}  ${x.meanKsmSavedMiB.toFixed(0).padStart(7)}  ${x.meanBalloonedMiB.toFixed(0).padStart(13)}`
    lines.push(row(r.baseline, ''))
    for (const x of r.ballooning.runs) lines.push(row(x, x === r.ballooning.best ? ' *' : ''))
    for (const x of r.ballooningAndSharing.runs) lines.push(row(x, x === r.ballooningAndSharing.best ? ' *' : ''))
    lines.push(`  at the same service level (*): ${r.moreVmsWithBallooning >= 0 ? '+' : ''}${r.moreVmsWithBallooning} VMs with ballooning (${pct(r.moreVmsWithBallooning / Math.max(1, r.baseline.vmsPlaced))}), ${r.moreVmsWithBallooningAndSharing >= 0 ? '+' : ''}${r.moreVmsWithBallooningAndSharing} with ballooning and sharing (${pct(r.moreVmsWithBallooningAndSharing / Math.max(1, r.baseline.vmsPlaced))})`)
  }
  process.stdout.write(lines.join('\n') + '\n')
  return 0
}

const USAGE = 'usage: starling sim [--traces DIR] [--day YYYYMMDD|all] [--policy NAME[,NAME]] [--mode central|decentral|both] [--json] [--report DIR] [--compare] [--order FILE] [--hosts N] [--interval S] [--limit S] [--link-share F] [--keep-idle-vms] [--seed N|A-B|A,B] [--loss P] [--view-age N] [--gossip model|core] [--gossip-view snapshot|agent] [--gossip-ticks K] [--link-loss P] [--link-dup P] [--out-max N] | starling sim --memory [--day D] [--hosts N] [--ratios R,R] [--shared F] [--tolerance T] [--json]'

export async function runSimCli (argv: string[]): Promise<number> {
  let a
  try {
    a = parseArgs({
      args: argv,
      options: {
        traces: { type: 'string' }, day: { type: 'string', multiple: true }, policy: { type: 'string', multiple: true },
        mode: { type: 'string', default: 'central' }, json: { type: 'boolean', default: false }, report: { type: 'string' },
        compare: { type: 'boolean', default: false }, order: { type: 'string' }, hosts: { type: 'string' }, interval: { type: 'string' },
        limit: { type: 'string' }, 'link-share': { type: 'string' }, 'keep-idle-vms': { type: 'boolean', default: false },
        seed: { type: 'string' }, loss: { type: 'string' }, 'view-age': { type: 'string' },
        gossip: { type: 'string', default: 'model' }, 'gossip-view': { type: 'string', default: 'snapshot' }, 'gossip-ticks': { type: 'string' },
        'link-loss': { type: 'string' }, 'link-dup': { type: 'string' }, 'out-max': { type: 'string' }, help: { type: 'boolean', default: false },
        memory: { type: 'boolean', default: false }, ratios: { type: 'string' }, shared: { type: 'string' }, tolerance: { type: 'string' }
      }
    }).values
  } catch (err) {
    process.stderr.write(`${(err as Error).message}\n${USAGE}\n`)
    return 2
  }
  if (a.help === true) { process.stdout.write(USAGE + '\n'); return 0 }
  const dir = a.traces ?? findPlanetlabDir()
  if (dir == null) { process.stderr.write('cannot find data/planetlab in the repository; pass --traces DIR\n'); return 2 }
  const modes: Mode[] = a.mode === 'both' ? ['central', 'decentral'] : a.mode === 'central' || a.mode === 'decentral' ? [a.mode] : []
  if (modes.length === 0) { process.stderr.write(`--mode must be central, decentral or both (got ${a.mode})\n`); return 2 }
  const days = (a.day ?? ['20110303']).flatMap(d => d === 'all' ? listDays(dir) : d.split(','))
  if (a.memory === true) return memoryCli(dir, days, a)
  const policies = (a.policy ?? ['DVFS', 'THR-MMT-0.8', 'IQR-MMT-1.5', 'MAD-MMT-2.5', 'LR-MMT-1.2']).flatMap(p => p.split(','))
  const model = defaultModel()
  const num = (name: string, v: string | undefined, set: (x: number) => void): boolean => {
    if (v === undefined) return true
    const x = Number(v)
    if (!Number.isFinite(x) || x <= 0) { process.stderr.write(`--${name} must be a positive number (got ${v})\n`); return false }
    set(x); return true
  }
  if (!num('hosts', a.hosts, x => { model.hosts = Math.floor(x) }) || !num('interval', a.interval, x => { model.intervalSec = x }) ||
    !num('limit', a.limit, x => { model.limitSec = x }) || !num('link-share', a['link-share'], x => { model.migrationLinkShare = x })) return 2
  if (a['keep-idle-vms'] === true) model.dropIdleVms = false
  const seeds = parseSeeds(a.seed ?? '1')
  if (seeds === null || seeds.length === 0) { process.stderr.write(`--seed must be N, A-B or a comma list (got ${a.seed ?? ''})\n`); return 2 }
  const dec = { ...(a.loss !== undefined ? { lossP: Number(a.loss) } : {}), ...(a['view-age'] !== undefined ? { viewAgeSteps: Number(a['view-age']) } : {}) }
  // The agents' outgoing slots (migration.outMax): the default is the agent's own.
  if (a['out-max'] !== undefined) {
    const x = Number(a['out-max'])
    if (!Number.isInteger(x) || x < 1) { process.stderr.write(`--out-max must be an integer >= 1 (got ${a['out-max']})\n`); return 2 }
    Object.assign(dec, { outMax: x })
  }
  if (a.gossip !== 'model' && a.gossip !== 'core') { process.stderr.write(`--gossip must be model or core (got ${a.gossip})\n`); return 2 }
  if (a['gossip-view'] !== 'snapshot' && a['gossip-view'] !== 'agent') { process.stderr.write(`--gossip-view must be snapshot or agent (got ${a['gossip-view']})\n`); return 2 }
  const prob = (name: string, v: string | undefined): number | null | undefined => {
    if (v === undefined) return undefined
    const x = Number(v)
    if (!Number.isFinite(x) || x < 0 || x >= 1) { process.stderr.write(`--${name} must be a probability in [0, 1) (got ${v})\n`); return null }
    return x
  }
  const linkLoss = prob('link-loss', a['link-loss'])
  const linkDup = prob('link-dup', a['link-dup'])
  if (linkLoss === null || linkDup === null) return 2
  let ticks: number | undefined
  if (a['gossip-ticks'] !== undefined) {
    ticks = Number(a['gossip-ticks'])
    if (!Number.isInteger(ticks) || ticks < 2) { process.stderr.write(`--gossip-ticks must be an integer >= 2 (got ${a['gossip-ticks']})\n`); return 2 }
  }
  if (a.gossip === 'core') {
    Object.assign(dec, {
      gossip: 'core',
      coreView: a['gossip-view'],
      coreGossip: {
        ...(ticks !== undefined ? { ticksPerStep: ticks } : {}),
        network: { delayTicksMin: 1, delayTicksMax: 1, loss: linkLoss ?? 0, duplicate: linkDup ?? 0 }
      }
    })
  }
  const rows: RunResult[] = []
  const bounds = new Map<string, EnergyBound>()
  try {
    for (const day of days) {
      const trace = loadDay(dir, day, a.order)
      bounds.set(day, energyLowerBound(model, trace))
      const central = modes.includes('central') ? policies.slice() : []
      // the paper-definition bar needs the CloudSim policies run here (the CSV has CloudSim's SLATAH only)
      if (a.compare === true && modes.includes('decentral')) for (const p of CLOUDSIM_POLICIES) if (!central.includes(p)) central.push(p)
      for (const policy of central) rows.push(runOne(trace, { policy, mode: 'central', model }))
      if (modes.includes('decentral')) for (const seed of seeds) rows.push(runOne(trace, { policy: 'AGENT', mode: 'decentral', model, decentral: { ...dec, seed } }))
    }
  } catch (err) {
    if (err instanceof ConfigError || (err as Error).name === 'TraceError') { process.stderr.write(`${(err as Error).message}\n`); return 2 }
    throw err
  }
  const lb = new Map([...bounds].map(([d, b]) => [d, b.energyKWh]))
  const out: Record<string, unknown> = {
    traces: dir,
    runs: rows.map(r => ({ ...r, timeline: undefined, ...(lb.has(r.day) && r.metrics.ramOverHostSteps === 0 ? { energyOverLowerBound: r.metrics.energyKWh / (lb.get(r.day) as number) } : {}) })),
    lowerBounds: [...bounds.values()].map(b => ({ day: b.day, energyKWh: b.energyKWh, idleKWh: b.idleKWh, wattsPerMips: b.wattsPerMips, meanHostsNeeded: b.hostsNeeded.reduce((x, y) => x + y, 0) / Math.max(1, b.hostsNeeded.length) }))
  }
  let text = table(rows, lb) + '\n\nlower bound on energy (RAM respected, agent/sim/trace/bound.ts): ' +
    [...bounds.values()].map(b => `${b.day} ${b.energyKWh.toFixed(2)} kWh`).join(', ')
  if (a.compare === true) {
    const cmp = compare(dir, rows, days)
    const ram = compareRam(dir, rows, days, lb)
    out.bar = cmp.json
    out.barRam = ram.json
    text += '\n\n' + cmp.text + '\n\n' + ram.text
  }
  if (a.json === true) process.stdout.write(JSON.stringify(out, null, 2) + '\n')
  else process.stdout.write(text + '\n')
  if (a.report !== undefined) {
    const files = writeReport(a.report, rows)
    if (a.json !== true) process.stdout.write(`report: ${files.join(', ')}\n`)
  }
  return 0
}

interface BarLine {
  day: string
  seed: number | undefined
  energyVsLr: number
  migrationsVsLr: number
  shortfall: number
  lrShortfall: number
  bestShortfall: number
  bestShortfallPolicy: string
  cloudsim: { bestPolicy: string, bestEsv: number, esv: number, esvVsBest: number, lrSlav: number, slav: number, esvPass: boolean, slavPass: boolean }
  paper: { bestPolicy: string, bestEsv: number, esv: number, esvVsBest: number, lrSlav: number, slav: number, esvPass: boolean, slavPass: boolean }
  migrationsPass: boolean
  shortfallPass: boolean
}

function compare (dir: string, rows: RunResult[], days: string[]): { text: string, json: BarLine[] } {
  const ref = loadReference(dir).filter(r => r.variant === 'v303-sorted')
  const lines: string[] = [
    'bar: decentralised agents vs CloudSim 3.0.3 (sorted order); ESV <= 0.7 x best, SLAV <= LR-MMT-1.2, migrations <= 25 % of LR-MMT-1.2, total shortfall <= LR-MMT-1.2',
    '  cs-*: CloudSim\'s SLATAH (reference CSV); p-*: the paper\'s SLATAH (time at 100 % by demand; CloudSim policies run here)',
    'day       seed  E/LR   migr/LR  short%  LR%    best%        | cs-ESV/best  cs-SLAV/LR | p-best        p-ESV/best  p-SLAV/LR | migr short cs-ESV cs-SLAV p-ESV p-SLAV']
  const json: BarLine[] = []
  const yes = (b: boolean): string => b ? 'yes' : 'NO'
  for (const day of days) {
    const dayRef = ref.filter(r => r.day === day && r.esv > 0)
    const lrRef = dayRef.find(r => r.policy === 'LR-MMT-1.2')
    const central = rows.filter(r => r.day === day && r.mode === 'central' && CLOUDSIM_POLICIES.includes(r.policy))
    const lrRun = central.find(r => r.policy === 'LR-MMT-1.2')
    if (lrRef === undefined || lrRun === undefined || dayRef.length === 0) continue
    const bestRef = dayRef.reduce((b, r) => r.esv < b.esv ? r : b)
    const bestP = central.reduce((b, r) => r.metrics.esvPaper < b.metrics.esvPaper ? r : b)
    const bestS = central.reduce((b, r) => r.metrics.overallSla < b.metrics.overallSla ? r : b)
    for (const ours of rows.filter(r => r.day === day && r.mode === 'decentral')) {
      const m = ours.metrics
      const lr = lrRun.metrics
      const b: BarLine = {
        day, seed: ours.seed, energyVsLr: m.energyKWh / lrRef.energyKWh, migrationsVsLr: m.migrations / lrRef.migrations,
        shortfall: m.overallSla, lrShortfall: lr.overallSla, bestShortfall: bestS.metrics.overallSla, bestShortfallPolicy: bestS.policy,
        cloudsim: { bestPolicy: bestRef.policy, bestEsv: bestRef.esv, esv: m.esv, esvVsBest: m.esv / bestRef.esv, lrSlav: lrRef.slav, slav: m.slav, esvPass: m.esv <= 0.7 * bestRef.esv, slavPass: m.slav <= lrRef.slav },
        paper: { bestPolicy: bestP.policy, bestEsv: bestP.metrics.esvPaper, esv: m.esvPaper, esvVsBest: m.esvPaper / bestP.metrics.esvPaper, lrSlav: lr.slavPaper, slav: m.slavPaper, esvPass: m.esvPaper <= 0.7 * bestP.metrics.esvPaper, slavPass: m.slavPaper <= lr.slavPaper },
        migrationsPass: m.migrations <= 0.25 * lrRef.migrations,
        shortfallPass: m.overallSla <= lr.overallSla
      }
      json.push(b)
      lines.push(`${day}  ${String(ours.seed ?? '-').padStart(4)}  ${b.energyVsLr.toFixed(3)}  ${b.migrationsVsLr.toFixed(3)}    ${(100 * b.shortfall).toFixed(3)}  ${(100 * b.lrShortfall).toFixed(3)}  ${(100 * b.bestShortfall).toFixed(3)}       | ${b.cloudsim.esvVsBest.toFixed(3).padStart(11)}  ${(b.cloudsim.slav / b.cloudsim.lrSlav).toFixed(3).padStart(10)} | ${b.paper.bestPolicy.padEnd(12)}  ${b.paper.esvVsBest.toFixed(3).padStart(10)}  ${(b.paper.slav / b.paper.lrSlav).toFixed(3).padStart(9)} | ${yes(b.migrationsPass).padEnd(4)} ${yes(b.shortfallPass).padEnd(5)} ${yes(b.cloudsim.esvPass).padEnd(6)} ${yes(b.cloudsim.slavPass).padEnd(7)} ${yes(b.paper.esvPass).padEnd(5)} ${yes(b.paper.slavPass)}`)
    }
  }
  if (json.length > 0) {
    const range = (f: (b: BarLine) => number): string => {
      const xs = json.map(f)
      return `${Math.min(...xs).toFixed(3)}-${Math.max(...xs).toFixed(3)}`
    }
    const count = (f: (b: BarLine) => boolean): string => `${json.filter(f).length}/${json.length}`
    lines.push(`ranges over ${json.length} runs: energy/LR ${range(b => b.energyVsLr)}, migrations/LR ${range(b => b.migrationsVsLr)}, shortfall/LR ${range(b => b.shortfall / b.lrShortfall)}, ` +
      `cs-ESV/best ${range(b => b.cloudsim.esvVsBest)}, cs-SLAV/LR ${range(b => b.cloudsim.slav / b.cloudsim.lrSlav)}, p-ESV/best ${range(b => b.paper.esvVsBest)}, p-SLAV/LR ${range(b => b.paper.slav / b.paper.lrSlav)}`)
    lines.push(`passes: migrations ${count(b => b.migrationsPass)}, shortfall ${count(b => b.shortfallPass)}, ESV<=0.7xbest CloudSim-def ${count(b => b.cloudsim.esvPass)} paper-def ${count(b => b.paper.esvPass)}, ` +
      `SLAV<=LR CloudSim-def ${count(b => b.cloudsim.slavPass)} paper-def ${count(b => b.paper.slavPass)}`)
  }
  return { text: lines.join('\n'), json }
}

interface RamBarLine {
  day: string
  seed: number | undefined
  energyKWh: number
  lrEnergyKWh: number
  energyVsLr: number
  migrations: number
  lrMigrations: number
  migrationsVsLr: number
  esv: number
  bestPolicy: string
  bestEsv: number
  esvVsBest: number
  slatah: number
  lrSlatah: number
  pdm: number
  lrPdm: number
  lowerBoundKWh: number
  energyVsBound: number
  energyPass: boolean
  migrationsPass: boolean
  esvPass: boolean
  boundPass: boolean
}

/** The targets against CloudSim with host RAM enforced (variant v303-sorted-ram). */
export function compareRam (dir: string, rows: RunResult[], days: string[], lowerBound: ReadonlyMap<string, number>): { text: string, json: RamBarLine[] } {
  const ref = loadReference(dir).filter(r => r.variant === 'v303-sorted-ram')
  const lines: string[] = [
    'bar (RAM enforced): decentralised agents vs CloudSim 3.0.3 with host RAM enforced (v303-sorted-ram); energy and migrations <= its LR-MMT-1.2, ESV <= its best policy, energy <= 1.15 x lower bound',
    'day       seed  E/LR    migr/LR  ESV/best  best          SLATAH/LR  PDM/LR  E/LB   | energy migr ESV  E<=1.15LB']
  const json: RamBarLine[] = []
  const yes = (b: boolean): string => b ? 'yes' : 'NO'
  for (const day of days) {
    const dayRef = ref.filter(r => r.day === day && r.esv > 0)
    const lr = dayRef.find(r => r.policy === 'LR-MMT-1.2')
    const b = lowerBound.get(day)
    if (lr === undefined || b === undefined) continue
    const best = dayRef.reduce((x, r) => r.esv < x.esv ? r : x)
    for (const ours of rows.filter(r => r.day === day && r.mode === 'decentral')) {
      const m = ours.metrics
      const l: RamBarLine = {
        day, seed: ours.seed, energyKWh: m.energyKWh, lrEnergyKWh: lr.energyKWh, energyVsLr: m.energyKWh / lr.energyKWh,
        migrations: m.migrations, lrMigrations: lr.migrations, migrationsVsLr: m.migrations / lr.migrations,
        esv: m.esv, bestPolicy: best.policy, bestEsv: best.esv, esvVsBest: m.esv / best.esv,
        slatah: m.slatah, lrSlatah: lr.slatah, pdm: m.pdm, lrPdm: lr.pdm,
        lowerBoundKWh: b, energyVsBound: m.energyKWh / b,
        energyPass: m.energyKWh <= lr.energyKWh, migrationsPass: m.migrations <= lr.migrations, esvPass: m.esv <= best.esv, boundPass: m.energyKWh <= 1.15 * b
      }
      json.push(l)
      lines.push(`${day}  ${String(ours.seed ?? '-').padStart(4)}  ${l.energyVsLr.toFixed(3)}  ${l.migrationsVsLr.toFixed(3).padStart(7)}  ${l.esvVsBest.toFixed(3).padStart(8)}  ${l.bestPolicy.padEnd(12)}  ${(m.slatah / lr.slatah).toFixed(3).padStart(9)}  ${(m.pdm / lr.pdm).toFixed(3).padStart(6)}  ${l.energyVsBound.toFixed(3)}  | ${yes(l.energyPass).padEnd(6)} ${yes(l.migrationsPass).padEnd(4)} ${yes(l.esvPass).padEnd(4)} ${yes(l.boundPass)}`)
    }
  }
  if (json.length > 0) {
    const range = (f: (x: RamBarLine) => number): string => {
      const xs = json.map(f)
      return `${Math.min(...xs).toFixed(3)}-${Math.max(...xs).toFixed(3)}`
    }
    const count = (f: (x: RamBarLine) => boolean): string => `${json.filter(f).length}/${json.length}`
    lines.push(`ranges over ${json.length} runs: energy/LR ${range(x => x.energyVsLr)}, migrations/LR ${range(x => x.migrationsVsLr)}, ESV/best ${range(x => x.esvVsBest)}, energy/lower bound ${range(x => x.energyVsBound)}`)
    lines.push(`passes: energy ${count(x => x.energyPass)}, migrations ${count(x => x.migrationsPass)}, ESV ${count(x => x.esvPass)}, energy <= 1.15 x bound ${count(x => x.boundPass)}`)
  }
  return { text: lines.join('\n'), json }
}
