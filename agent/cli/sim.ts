/**
 * `starling sim`: replay PlanetLab-format traces through the data-centre model with either
 * CloudSim's centralised policies or the agents' decentralised decisions.
 *
 *   starling sim [--traces DIR] [--day 20110303|all]... [--policy LR-MMT-1.2,...] [--mode central|decentral|both]
 *                [--json] [--report DIR] [--compare] [--order FILE] [--hosts N] [--interval S] [--limit S]
 *                [--link-share F] [--keep-idle-vms] [--seed N] [--loss P] [--view-age N]
 *
 * --compare adds CloudSim's reference numbers (reference_runs.csv, sorted-name variant) and
 * checks the decentralised runs against the bar: ESV <= 0.7 x the day's best CloudSim ESV,
 * SLAV <= LR-MMT-1.2's, migrations <= 25 % of LR-MMT-1.2's.
 */
import { parseArgs } from 'node:util'
import { findPlanetlabDir, listDays, loadDay } from '../sim/trace/traces.js'
import { defaultModel } from '../sim/trace/model.js'
import { loadReference, runOne, type Mode, type RunResult } from '../sim/trace/run.js'
import { table, writeReport } from '../sim/trace/report.js'
import { PolicyConfigError } from '../../policies/config.js'

const USAGE = 'usage: starling sim [--traces DIR] [--day YYYYMMDD|all] [--policy NAME[,NAME]] [--mode central|decentral|both] [--json] [--report DIR] [--compare] [--order FILE] [--hosts N] [--interval S] [--limit S] [--link-share F] [--keep-idle-vms] [--seed N] [--loss P] [--view-age N]'

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
        seed: { type: 'string' }, loss: { type: 'string' }, 'view-age': { type: 'string' }, help: { type: 'boolean', default: false }
      }
    }).values
  } catch (err) {
    process.stderr.write(`${(err as Error).message}\n${USAGE}\n`)
    return 2
  }
  if (a.help === true) { process.stdout.write(USAGE + '\n'); return 0 }
  const dir = a.traces ?? findPlanetlabDir()
  if (dir == null) { process.stderr.write('cannot find shared/traces/planetlab from the current directory; pass --traces DIR\n'); return 2 }
  const modes: Mode[] = a.mode === 'both' ? ['central', 'decentral'] : a.mode === 'central' || a.mode === 'decentral' ? [a.mode] : []
  if (modes.length === 0) { process.stderr.write(`--mode must be central, decentral or both (got ${a.mode})\n`); return 2 }
  const days = (a.day ?? ['20110303']).flatMap(d => d === 'all' ? listDays(dir) : d.split(','))
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
  const dec = { seed: a.seed !== undefined ? Number(a.seed) : 1, ...(a.loss !== undefined ? { lossP: Number(a.loss) } : {}), ...(a['view-age'] !== undefined ? { viewAgeSteps: Number(a['view-age']) } : {}) }
  const rows: RunResult[] = []
  try {
    for (const day of days) {
      const trace = loadDay(dir, day, a.order)
      for (const mode of modes) {
        const list = mode === 'decentral' ? ['AGENT'] : policies
        for (const policy of list) rows.push(runOne(trace, { policy, mode, model, decentral: dec }))
      }
    }
  } catch (err) {
    if (err instanceof PolicyConfigError || (err as Error).name === 'TraceError') { process.stderr.write(`${(err as Error).message}\n`); return 2 }
    throw err
  }
  const out: Record<string, unknown> = { traces: dir, runs: rows.map(r => ({ ...r, timeline: undefined })) }
  let text = table(rows)
  if (a.compare === true) {
    const cmp = compare(dir, rows, days)
    out.bar = cmp.json
    text += '\n\n' + cmp.text
  }
  if (a.json === true) process.stdout.write(JSON.stringify(out, null, 2) + '\n')
  else process.stdout.write(text + '\n')
  if (a.report !== undefined) {
    const files = writeReport(a.report, rows)
    if (a.json !== true) process.stdout.write(`report: ${files.join(', ')}\n`)
  }
  return 0
}

function compare (dir: string, rows: RunResult[], days: string[]): { text: string, json: unknown[] } {
  const ref = loadReference(dir).filter(r => r.variant === 'v303-sorted')
  const lines: string[] = ['bar (decentralised vs CloudSim 3.0.3, sorted order): ESV <= 0.7 x best, SLAV <= LR-MMT-1.2, migrations <= 25 % of LR-MMT-1.2',
    'day        best-policy    bestESV   ours ESV  ratio   LR SLAV   ours SLAV  LR migr  ours migr  ratio   pass']
  const json: unknown[] = []
  const ratios: number[][] = []
  for (const day of days) {
    const ours = rows.find(r => r.day === day && r.mode === 'decentral')
    const dayRef = ref.filter(r => r.day === day && r.esv > 0)
    const lr = dayRef.find(r => r.policy === 'LR-MMT-1.2')
    if (ours === undefined || lr === undefined || dayRef.length === 0) continue
    const best = dayRef.reduce((b, r) => r.esv < b.esv ? r : b)
    const m = ours.metrics
    const pass = m.esv <= 0.7 * best.esv && m.slav <= lr.slav && m.migrations <= 0.25 * lr.migrations
    ratios.push([m.esv / best.esv, m.slav / lr.slav, m.migrations / lr.migrations, m.energyKWh / lr.energyKWh])
    json.push({ day, bestPolicy: best.policy, bestEsv: best.esv, esv: m.esv, lrSlav: lr.slav, slav: m.slav, lrMigrations: lr.migrations, migrations: m.migrations, pass })
    lines.push(`${day}  ${best.policy.padEnd(12)} ${best.esv.toExponential(2)}  ${m.esv.toExponential(2)}  ${(m.esv / best.esv).toFixed(3)}  ${lr.slav.toExponential(2)}  ${m.slav.toExponential(2)}  ${String(lr.migrations).padStart(7)}  ${String(m.migrations).padStart(9)}  ${(m.migrations / lr.migrations).toFixed(3)}  ${pass ? 'yes' : 'NO'}`)
  }
  if (ratios.length > 0) {
    const mean = (k: number): number => ratios.reduce((s, r) => s + (r[k] as number), 0) / ratios.length
    lines.push(`mean ratios: ESV/best ${mean(0).toFixed(3)}, SLAV/LR ${mean(1).toFixed(3)}, migrations/LR ${mean(2).toFixed(3)}, energy/LR ${mean(3).toFixed(3)}`)
  }
  return { text: lines.join('\n'), json }
}
