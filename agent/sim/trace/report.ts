/**
 * Output of `starling sim`: a terminal table, JSON, and an HTML-free report folder of SVG plots
 * (active hosts over time, cumulative energy, SLA violation time share, migrations per hour).
 */
import { mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import type { RunResult } from './run.js'

/**
 * `lowerBoundKWh`: the day's RAM-respecting energy lower bound (bound.ts) by day; with it the
 * table shows each run's energy over the bound ("E/LB"), for the runs that respect host RAM
 * (a run that ever put more VM RAM on a host than it has shows "-": the bound is not for it).
 */
export function table (rows: RunResult[], lowerBoundKWh?: ReadonlyMap<string, number>): string {
  // CloudSim's SLATAH/SLAV/ESV first (fidelity), then the paper's definition (suffix -p), then
  // the service actually delivered: total shortfall and the share of VM-time short by > 10 %.
  const head = ['day', 'mode', 'policy', 'seed', 'energy kWh', 'migrations', 'SLATAH %', 'PDM %', 'SLAV x1e-5', 'ESV x1e-3',
    'SLATAH-p %', 'SLAV-p x1e-5', 'ESV-p x1e-3', 'shortfall %', 'VM-t>10% %', 'RAM-over', ...(lowerBoundKWh !== undefined ? ['E/LB'] : []), 'wall s']
  const body = rows.map(r => {
    const m = r.metrics
    return [r.day, r.mode, r.policy, r.seed === undefined ? '-' : String(r.seed), m.energyKWh.toFixed(2), String(m.migrations),
      (100 * m.slatah).toFixed(2), (100 * m.pdm).toFixed(4), (1e5 * m.slav).toFixed(3), (1e3 * m.esv).toFixed(3),
      (100 * m.slatahPaper).toFixed(3), (1e5 * m.slavPaper).toFixed(4), (1e3 * m.esvPaper).toFixed(4),
      (100 * m.overallSla).toFixed(3), (100 * m.vmTimeShortfallOver10).toFixed(3), String(m.ramOverHostSteps),
      ...(lowerBoundKWh !== undefined ? [overBound(r, lowerBoundKWh)] : []), (r.wallMs / 1000).toFixed(1)]
  })
  const w = head.map((h, i) => Math.max(h.length, ...body.map(b => (b[i] ?? '').length)))
  const line = (c: string[]): string => c.map((x, i) => x.padStart(w[i] ?? 0)).join('  ')
  return [line(head), ...body.map(line)].join('\n')
}

function overBound (r: RunResult, lb: ReadonlyMap<string, number>): string {
  const b = lb.get(r.day)
  if (b === undefined || !(b > 0) || r.metrics.ramOverHostSteps > 0) return '-'
  return (r.metrics.energyKWh / b).toFixed(3)
}

type Series = { name: string, points: Array<[number, number]> }

function svgChart (title: string, yLabel: string, series: Series[]): string {
  const W = 720; const H = 360; const L = 60; const B = 40; const T = 30; const R = 160
  const xs = series.flatMap(s => s.points.map(p => p[0]))
  const ys = series.flatMap(s => s.points.map(p => p[1]))
  const x0 = Math.min(...xs, 0); const x1 = Math.max(...xs, 1)
  const y1 = Math.max(...ys, 1e-12) * 1.05
  const sx = (x: number): number => L + (x - x0) / (x1 - x0) * (W - L - R)
  const sy = (y: number): number => H - B - y / y1 * (H - B - T)
  const colors = ['#1f77b4', '#d62728', '#2ca02c', '#ff7f0e', '#9467bd', '#8c564b', '#e377c2', '#7f7f7f']
  const paths = series.map((s, i) => `<path fill="none" stroke="${colors[i % colors.length] ?? '#000'}" stroke-width="1.5" d="${s.points.map((p, k) => `${k === 0 ? 'M' : 'L'}${sx(p[0]).toFixed(1)},${sy(p[1]).toFixed(1)}`).join('')}"/>` +
    `<text x="${W - R + 10}" y="${T + 16 * i + 10}" font-size="11" fill="${colors[i % colors.length] ?? '#000'}">${esc(s.name)}</text>`).join('\n')
  const ticks = [0, 0.25, 0.5, 0.75, 1].map(f => `<text x="${L - 6}" y="${sy(f * y1) + 4}" font-size="10" text-anchor="end">${fmt(f * y1)}</text><line x1="${L}" x2="${W - R}" y1="${sy(f * y1)}" y2="${sy(f * y1)}" stroke="#eee"/>`).join('')
  const xt = [0, 6, 12, 18, 24].map(hh => `<text x="${sx(hh)}" y="${H - B + 16}" font-size="10" text-anchor="middle">${hh} h</text>`).join('')
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" font-family="sans-serif">
<text x="${L}" y="18" font-size="14">${esc(title)}</text>${ticks}${xt}
<line x1="${L}" y1="${H - B}" x2="${W - R}" y2="${H - B}" stroke="#333"/><line x1="${L}" y1="${T}" x2="${L}" y2="${H - B}" stroke="#333"/>
<text x="14" y="${(H - B + T) / 2}" font-size="11" transform="rotate(-90 14 ${(H - B + T) / 2})" text-anchor="middle">${esc(yLabel)}</text>
${paths}
</svg>
`
}

function fmt (v: number): string { return Math.abs(v) >= 100 ? v.toFixed(0) : Math.abs(v) >= 1 ? v.toFixed(1) : v.toPrecision(2) }
function esc (s: string): string { return s.replace(/[&<>"]/g, c => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' })[c] ?? c) }

/** Write the SVG plots and a JSON summary into `dir`. Returns the files written. */
export function writeReport (dir: string, rows: RunResult[]): string[] {
  mkdirSync(dir, { recursive: true })
  const name = (r: RunResult): string => `${r.day} ${r.mode} ${r.policy}${r.seed === undefined ? '' : ` seed ${r.seed}`}`
  const h = (t: number): number => t / 3600
  const files: Array<[string, string]> = [
    ['active-hosts.svg', svgChart('Active hosts', 'hosts', rows.map(r => ({ name: name(r), points: r.timeline.map(s => [h(s.t), s.activeHosts] as [number, number]) })))],
    ['energy.svg', svgChart('Cumulative energy', 'kWh', rows.map(r => ({ name: name(r), points: r.timeline.map(s => [h(s.t), s.energyKWh] as [number, number]) })))],
    ['sla-violation.svg', svgChart('SLATAH, CloudSim definition (cumulative share)', 'share', rows.map(r => ({ name: name(r), points: r.timeline.map(s => [h(s.t), s.slaShortfall] as [number, number]) })))],
    ['sla-violation-paper.svg', svgChart('SLATAH, paper definition: hosts at 100 % by demand (cumulative share)', 'share', rows.map(r => ({ name: name(r), points: r.timeline.map(s => [h(s.t), s.slaPaper] as [number, number]) })))],
    ['ram-over-hosts.svg', svgChart('Hosts holding more VM RAM than they have', 'hosts', rows.map(r => ({ name: name(r), points: r.timeline.map(s => [h(s.t), s.ramOverHosts] as [number, number]) })))],
    ['migrations-per-hour.svg', svgChart('Migrations per hour', 'migrations / h', rows.map(r => {
      const per = new Map<number, number>()
      for (const s of r.timeline) { const k = Math.floor(h(s.t)); per.set(k, (per.get(k) ?? 0) + s.migrations) }
      return { name: name(r), points: [...per].sort((a, b) => a[0] - b[0]).map(([k, v]) => [k + 0.5, v] as [number, number]) }
    }))],
    ['summary.json', JSON.stringify(rows.map(r => ({ ...r, timeline: undefined })), null, 2)]
  ]
  for (const [f, body] of files) writeFileSync(join(dir, f), body)
  return files.map(([f]) => join(dir, f))
}
