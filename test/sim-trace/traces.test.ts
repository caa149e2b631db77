// The PlanetLab days kept in the repository (data/planetlab/<day>.tar.gz): the loader finds them
// from its own location, from source and compiled; each day holds the VM count of the data's
// README and 288 samples per VM; an archive reads exactly as the folder GNU tar unpacks from it
// (names, order and every sample, also in a reference listing order); a folder and an archive
// side by side are one day; a broken archive is a TraceError.
import t from 'tap'
import { execFileSync, spawnSync } from 'node:child_process'
import { existsSync, mkdtempSync, rmSync, writeFileSync, mkdirSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { gzipSync } from 'node:zlib'
import { findPlanetlabDir, listDays, loadDay, readTarGz, TraceError } from '../../agent/sim/trace/traces.js'

const root = resolve(fileURLToPath(new URL('.', import.meta.url)), '..', '..')
const data = join(root, 'data', 'planetlab')
const VMS: Record<string, number> = { 20110303: 1052, 20110306: 898, 20110309: 1061, 20110322: 1516, 20110325: 1078 }

t.test('the in-repo copy is found and holds the five March days', t => {
  t.equal(findPlanetlabDir(), data, 'findPlanetlabDir() is data/planetlab of this checkout')
  t.same(listDays(data), Object.keys(VMS), 'five days, from the archives')
  for (const f of ['README.md', 'REFERENCE.md', 'reference_runs.csv']) t.ok(existsSync(join(data, f)), `${f} is kept`)
  let total = 0
  for (const [day, n] of Object.entries(VMS)) {
    const d = loadDay(data, day)
    t.equal(d.util.length, n, `${day}: ${n} VMs`)
    t.equal(d.samples, 288, `${day}: 288 samples`)
    const max = Math.max(...d.util.map(u => Math.max(...u)))
    t.ok(max <= 0.99 && max > 0.5, `${day}: values within 0..99 % (max ${max})`)
    total += d.util.length
  }
  t.equal(total, 5605, '5605 VMs over the five days, as the README says')
  t.end()
})

t.test('an archive reads as the folder tar unpacks from it', t => {
  const tmp = mkdtempSync(join(tmpdir(), 'starling-traces-'))
  t.teardown(() => rmSync(tmp, { recursive: true, force: true }))
  const day = '20110306'
  const r = spawnSync('tar', ['-xzf', join(data, `${day}.tar.gz`), '-C', tmp])
  if (r.error !== undefined || r.status !== 0) { t.fail(`GNU tar is needed to unpack the archive: ${r.error?.message ?? r.stderr.toString()}`); t.end(); return }
  const fromArchive = loadDay(data, day)
  const fromFolder = loadDay(tmp, day)
  t.equal(fromArchive.names.length, VMS[day])
  t.same(fromArchive.names, fromFolder.names, 'same names in the same order')
  t.ok(fromArchive.names.some(n => n.includes(' ')), 'names with a space survive')
  t.ok(fromArchive.util.every((u, i) => u.length === 289 && u.every((x, j) => x === fromFolder.util[i]?.[j])), 'every sample equal')
  const order = join(data, 'reference-orders', `${day}.cloudsim-listing-order.tsv`)
  const ordered = loadDay(data, day, order)
  t.same([...ordered.names].sort(), fromArchive.names, 'the reference listing names every file once')
  t.notSame(ordered.names, fromArchive.names, 'in another order than sorted')
  t.same(ordered.names, loadDay(tmp, day, order).names, 'the same listing order from the folder')
  // a folder and an archive of the same day: one day, the folder wins
  execFileSync('cp', [join(data, `${day}.tar.gz`), tmp])
  t.same(listDays(tmp), [day])
  rmSync(join(tmp, day, fromArchive.names[0] as string))
  t.equal(loadDay(tmp, day).names.length, (VMS[day] as number) - 1, 'the folder is read, not the archive beside it')
  t.end()
})

t.test('broken archives are TraceErrors', t => {
  const tmp = mkdtempSync(join(tmpdir(), 'starling-traces-'))
  t.teardown(() => rmSync(tmp, { recursive: true, force: true }))
  writeFileSync(join(tmp, '20990101.tar.gz'), gzipSync(Buffer.alloc(1024, 'x')))
  t.throws(() => loadDay(tmp, '20990101'), TraceError, 'not a tar')
  t.throws(() => loadDay(tmp, '20990102'), TraceError, 'missing day')
  // a ustar archive whose entries are under another day
  mkdirSync(join(tmp, 'src', '20990103'), { recursive: true })
  writeFileSync(join(tmp, 'src', '20990103', 'vm_a'), '1\n2\n')
  execFileSync('tar', ['--format=ustar', '-czf', join(tmp, '20990104.tar.gz'), '-C', join(tmp, 'src'), '20990103'])
  t.throws(() => loadDay(tmp, '20990104'), TraceError, 'entries outside the day prefix')
  t.same([...readTarGz(join(tmp, '20990104.tar.gz'), '20990103').entries()].map(([k, v]) => [k, v.toString()]), [['vm_a', '1\n2\n']], 'a small archive reads back')
  t.end()
})

t.test('the compiled command runs a day with nothing but the repository', t => {
  const cli = join(root, 'dist', 'agent', 'cli', 'starling.js')
  if (!existsSync(cli)) { t.fail('dist/ missing: run `npx tsc -p tsconfig.build.json` first'); t.end(); return }
  const r = spawnSync(process.execPath, [cli, 'sim', '--day', '20110306', '--policy', 'DVFS', '--json'], { cwd: tmpdir(), encoding: 'utf8' })
  t.equal(r.status, 0, `exit 0 (stderr: ${r.stderr})`)
  const out = JSON.parse(r.stdout) as { traces: string, runs: Array<{ vms: number, policy: string }> }
  t.equal(out.traces, data, 'from data/planetlab, found from dist/')
  t.equal(out.runs[0]?.vms, VMS['20110306'])
  t.end()
})
