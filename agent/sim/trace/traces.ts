/**
 * Loading PlanetLab-format traces: one file per VM, one integer percentage per line, one line
 * per interval. A day is a folder `DIR/YYYYMMDD/` or an archive `DIR/YYYYMMDD.tar.gz` (ustar,
 * gzip; entries `YYYYMMDD/<file>`), read in memory. Files are taken in sorted-name order
 * (JavaScript's default sort compares UTF-16 code units, like Java's String.compareTo), or in the
 * order of a listing file (one "index<TAB>name" or "name" per line) to reproduce another
 * machine's directory order.
 */
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs'
import { join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { gunzipSync } from 'node:zlib'

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

/**
 * The copy kept in this repository, `data/planetlab` at its root, located from this module
 * (agent/sim/trace/ when run from source, dist/agent/sim/trace/ when compiled); null if absent.
 */
export function findPlanetlabDir (): string | null {
  const here = fileURLToPath(new URL('.', import.meta.url))
  for (const up of ['../../..', '../../../..']) {
    const c = resolve(here, up, 'data', 'planetlab')
    if (existsSync(join(c, 'README.md')) && listDays(c).length > 0) return c
  }
  return null
}

const DAY = /^\d{8}$/
const ARCHIVE = /^(\d{8})\.tar\.gz$/

/** Days (YYYYMMDD) under a traces directory, as folders or .tar.gz archives, sorted. */
export function listDays (tracesDir: string): string[] {
  const days = new Set<string>()
  for (const d of readdirSync(tracesDir)) {
    const p = join(tracesDir, d)
    if (DAY.test(d) && statSync(p).isDirectory()) days.add(d)
    const m = ARCHIVE.exec(d)
    if (m !== null && statSync(p).isFile()) days.add(m[1] as string)
  }
  return [...days].sort()
}

/**
 * The regular files of a gzipped ustar archive under `prefix/`, by name (without the prefix).
 * Only what `tar --format=ustar` writes is accepted; anything else (pax or GNU long-name
 * headers, links, files outside the prefix) is a TraceError rather than a silent misreading.
 */
export function readTarGz (file: string, prefix: string): Map<string, Buffer> {
  const tar = gunzipSync(readFileSync(file))
  const out = new Map<string, Buffer>()
  const str = (at: number, len: number): string => {
    const b = tar.subarray(at, at + len)
    const nul = b.indexOf(0)
    return b.subarray(0, nul < 0 ? len : nul).toString('utf8')
  }
  let off = 0
  while (off + 512 <= tar.length) {
    if (tar.subarray(off, off + 512).every(x => x === 0)) break // end-of-archive block
    const magic = str(off + 257, 6)
    if (magic !== 'ustar') throw new TraceError(`${file}: not a ustar archive (header at byte ${off})`)
    const pre = str(off + 345, 155)
    const name = (pre.length > 0 ? pre + '/' : '') + str(off + 0, 100)
    const size = Number.parseInt(str(off + 124, 12).trim() || '0', 8)
    const type = String.fromCharCode(tar[off + 156] as number)
    if (!Number.isSafeInteger(size) || off + 512 + size > tar.length) throw new TraceError(`${file}: bad size for ${name}`)
    const body = tar.subarray(off + 512, off + 512 + size)
    off += 512 + Math.ceil(size / 512) * 512
    if (type === '5') continue // directory
    if (type !== '0' && type !== '\0') throw new TraceError(`${file}: entry ${name} has type '${type}', expected a regular file`)
    if (!name.startsWith(prefix + '/') || name.length === prefix.length + 1) throw new TraceError(`${file}: entry ${name} is not under ${prefix}/`)
    out.set(name.slice(prefix.length + 1), body)
  }
  return out
}

export function loadDay (tracesDir: string, day: string, orderFile?: string): TraceDay {
  const dir = join(tracesDir, day)
  const archive = join(tracesDir, `${day}.tar.gz`)
  let files: Map<string, Buffer> | null = null
  let where = dir
  if (!existsSync(dir)) {
    if (!existsSync(archive)) throw new TraceError(`trace day not found: neither ${dir}/ nor ${archive}`)
    files = readTarGz(archive, day)
    where = archive
  }
  const read = (n: string): string => {
    if (files === null) return readFileSync(join(dir, n), 'utf8')
    const b = files.get(n)
    if (b === undefined) throw new TraceError(`${where} has no file ${n}`)
    return b.toString('utf8')
  }
  let names: string[]
  if (orderFile !== undefined) {
    names = readFileSync(orderFile, 'utf8').split('\n').filter(l => l.length > 0).map(l => {
      const tab = l.indexOf('\t')
      return tab >= 0 && /^\d+$/.test(l.slice(0, tab)) ? l.slice(tab + 1) : l
    })
  } else {
    names = (files === null ? readdirSync(dir) : [...files.keys()]).filter(n => !n.startsWith('.')).sort()
  }
  if (names.length === 0) throw new TraceError(`no trace files in ${where}`)
  const util: Float64Array[] = []
  let samples = -1
  for (const n of names) {
    const lines = read(n).split('\n')
    if (lines[lines.length - 1] === '') lines.pop()
    if (samples < 0) samples = lines.length
    if (lines.length !== samples) throw new TraceError(`${join(where, n)} has ${lines.length} samples, expected ${samples}`)
    const a = new Float64Array(samples + 1)
    for (let i = 0; i < samples; i++) {
      const v = Number.parseInt(lines[i] as string, 10)
      if (!Number.isFinite(v)) throw new TraceError(`${join(where, n)} line ${i + 1} is not an integer`)
      a[i] = v / 100
    }
    a[samples] = a[samples - 1] as number
    util.push(a)
  }
  return { day, names, util, samples }
}
