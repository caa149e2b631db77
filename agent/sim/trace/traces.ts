/**
 * Loading PlanetLab-format traces: one file per VM, one integer percentage per line, one line
 * per interval. Files are taken in sorted-name order (JavaScript's default sort compares UTF-16
 * code units, like Java's String.compareTo), or in the order of a listing file (one
 * "index<TAB>name" or "name" per line) to reproduce another machine's directory order.
 */
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs'
import { dirname, join, resolve } from 'node:path'

export class TraceError extends Error {
  readonly code = 'TRACE_INVALID'
  constructor (message: string) { super(message); this.name = 'TraceError' }
}

export interface TraceDay {
  day: string
  names: string[]
  /** utilisation fractions per VM, length samples + 1 (the last sample is repeated, as CloudSim does). */
  util: Float64Array[]
  samples: number
}

/** Find `shared/traces/planetlab` by walking up from `start` (checks `X/shared/...` and `X/../shared/...`). */
export function findPlanetlabDir (start: string = process.cwd()): string | null {
  let dir = resolve(start)
  for (;;) {
    for (const c of [join(dir, 'shared', 'traces', 'planetlab'), join(dir, '..', 'shared', 'traces', 'planetlab')]) {
      if (existsSync(c) && statSync(c).isDirectory()) return resolve(c)
    }
    const up = dirname(dir)
    if (up === dir) return null
    dir = up
  }
}

/** Day folders (YYYYMMDD) under a traces directory, sorted. */
export function listDays (tracesDir: string): string[] {
  return readdirSync(tracesDir).filter(d => /^\d{8}$/.test(d) && statSync(join(tracesDir, d)).isDirectory()).sort()
}

export function loadDay (tracesDir: string, day: string, orderFile?: string): TraceDay {
  const dir = join(tracesDir, day)
  if (!existsSync(dir)) throw new TraceError(`trace day folder not found: ${dir}`)
  let names: string[]
  if (orderFile !== undefined) {
    names = readFileSync(orderFile, 'utf8').split('\n').filter(l => l.length > 0).map(l => {
      const tab = l.indexOf('\t')
      return tab >= 0 && /^\d+$/.test(l.slice(0, tab)) ? l.slice(tab + 1) : l
    })
  } else {
    names = readdirSync(dir).filter(n => !n.startsWith('.')).sort()
  }
  if (names.length === 0) throw new TraceError(`no trace files in ${dir}`)
  const util: Float64Array[] = []
  let samples = -1
  for (const n of names) {
    const lines = readFileSync(join(dir, n), 'utf8').split('\n')
    if (lines[lines.length - 1] === '') lines.pop()
    if (samples < 0) samples = lines.length
    if (lines.length !== samples) throw new TraceError(`${join(dir, n)} has ${lines.length} samples, expected ${samples}`)
    const a = new Float64Array(samples + 1)
    for (let i = 0; i < samples; i++) {
      const v = Number.parseInt(lines[i] as string, 10)
      if (!Number.isFinite(v)) throw new TraceError(`${join(dir, n)} line ${i + 1} is not an integer`)
      a[i] = v / 100
    }
    a[samples] = a[samples - 1] as number
    util.push(a)
  }
  return { day, names, util, samples }
}
