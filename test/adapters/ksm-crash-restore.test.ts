/**
 * Goal: the host's KSM settings survive the agent. Before its first change to /sys/kernel/mm/ksm
 * the writer saves the operator's values in the state directory (atomically); a clean stop puts
 * them back and removes the file; a run killed with SIGKILL leaves the file, and the next start
 * puts them back from it (and a run that finds the file never takes the crashed run's values for
 * the originals). A state file it cannot use changes nothing and is named.
 *
 * Method: a copy of /sys/kernel/mm/ksm in a temporary directory for the cases, then the real
 * /sys/kernel/mm/ksm (root) with a real process that changes run, pages_to_scan and
 * sleep_millisecs and is killed with kill -9, and the agent (compiled, one local host) started
 * over what such a run left; skipped, saying why, where that file is not writable.
 */
import t, { type Test } from 'tap'
import { spawn } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { KsmSysfs } from '../../agent/adapters/ksm-sysfs.js'
import { LocalCluster } from '../integration/cluster-harness.js'

const here = path.dirname(fileURLToPath(import.meta.url))
const KSM = '/sys/kernel/mm/ksm'
const FILES = ['run', 'pages_to_scan', 'sleep_millisecs'] as const

function tree (t: Test): { root: string, state: string, read: () => string[] } {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'starling-ksm-crash-'))
  t.teardown(() => fs.rmSync(root, { recursive: true, force: true }))
  const dir = path.join(root, 'sys/kernel/mm/ksm')
  fs.mkdirSync(dir, { recursive: true })
  for (const [f, v] of Object.entries({ run: '0', pages_to_scan: '100', sleep_millisecs: '20' })) fs.writeFileSync(path.join(dir, f), v + '\n')
  fs.mkdirSync(path.join(root, 'state'))
  return { root, state: path.join(root, 'state/ksm-settings.json'), read: () => FILES.map(f => fs.readFileSync(path.join(dir, f), 'utf8').trim()) }
}

t.test('saved before the first change, removed by a clean stop', async t => {
  const k = tree(t)
  const s = new KsmSysfs({ root: k.root, stateFile: k.state })
  t.same(await s.recover(), { restored: false, settings: {}, failed: [] }, 'nothing to recover on a first start')
  await s.apply({ run: 1, pagesToScan: 1000, sleepMs: 10 })
  t.same(k.read(), ['1', '1000', '10'])
  const saved = JSON.parse(fs.readFileSync(k.state, 'utf8'))
  t.same([saved.settings.run, saved.settings.pages_to_scan, saved.settings.sleep_millisecs], ['0', '100', '20'], 'the operator\'s values are on disk')
  t.same(fs.readdirSync(path.dirname(k.state)), ['ksm-settings.json'], 'no temporary file left beside it')
  t.same(await s.restore(), [])
  t.same(k.read(), ['0', '100', '20'], 'clean stop: back')
  t.equal(fs.existsSync(k.state), false, 'and the file is gone')
})

t.test('after a crash: the next run restores from the file, and never takes the crashed run\'s values for the originals', async t => {
  const k = tree(t)
  const crashed = new KsmSysfs({ root: k.root, stateFile: k.state })
  await crashed.apply({ run: 1, pagesToScan: 1000, sleepMs: 10 })
  // (no restore: the process died)
  const next = new KsmSysfs({ root: k.root, stateFile: k.state })
  await next.apply({ run: 1, pagesToScan: 2000, sleepMs: 5 })
  t.same(k.read(), ['1', '2000', '5'])
  await next.restore()
  t.same(k.read(), ['0', '100', '20'], 'the operator\'s values, not the crashed run\'s 1/1000/10')
  await new KsmSysfs({ root: k.root, stateFile: k.state }).apply({ run: 1, pagesToScan: 1000, sleepMs: 10 })
  // (and that one died too)
  const start = new KsmSysfs({ root: k.root, stateFile: k.state })
  const r = await start.recover()
  t.same(r, { restored: true, settings: { run: '0', pages_to_scan: '100', sleep_millisecs: '20' }, failed: [] }, 'recover() at start')
  t.same(k.read(), ['0', '100', '20'])
  t.equal(fs.existsSync(k.state), false)
})

t.test('a state file it cannot use: nothing changes, and the file is named', async t => {
  const k = tree(t)
  fs.writeFileSync(k.state, '{"version":1,"settings":{"run":"1; rm -rf /"}}')
  const s = new KsmSysfs({ root: k.root, stateFile: k.state })
  const r = await s.recover()
  t.equal(r.restored, false)
  t.match(r.failed.join(), k.state, `named: ${r.failed.join()}`)
  await t.rejects(s.apply({ run: 1, pagesToScan: 1000, sleepMs: 10 }), { code: 'DRIVER_FAILED', message: /ksm-settings\.json/ })
  t.same(k.read(), ['0', '100', '20'], 'KSM untouched')
  fs.rmSync(k.state)
  fs.rmSync(path.dirname(k.state), { recursive: true })
  await t.rejects(s.apply({ run: 1, pagesToScan: 1000, sleepMs: 10 }), { code: 'DRIVER_FAILED', message: /cannot save the host's settings .*nothing changed/ }, 'no state directory: refused before any change')
  t.same(k.read(), ['0', '100', '20'], 'KSM untouched')
})

function realSysfsUnusable (): string | null {
  if (!fs.existsSync(path.join(KSM, 'run'))) return 'this kernel has no KSM (/sys/kernel/mm/ksm)'
  if (process.getuid?.() !== 0) return 'changing /sys/kernel/mm/ksm needs root'
  try { fs.accessSync(path.join(KSM, 'pages_to_scan'), fs.constants.W_OK) } catch (err) { return `/sys/kernel/mm/ksm is not writable here: ${(err as Error).message}` }
  return null
}

const why = realSysfsUnusable()
t.test('the real /sys/kernel/mm/ksm, a process killed with kill -9, and the next start', { skip: why === null ? false : `SKIPPED: ${why}` }, async t => {
  const read = (): string[] => FILES.map(f => fs.readFileSync(path.join(KSM, f), 'utf8').trim())
  const before = read()
  // Whatever happens below, the host gets its settings back.
  t.teardown(() => { for (const [i, f] of FILES.entries()) { try { fs.writeFileSync(path.join(KSM, f), before[i] as string) } catch { /* reported by the asserts */ } } })
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'starling-ksm-kill-'))
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  const state = path.join(dir, 'ksm-settings.json')
  // Values the host surely does not have: a slow scan (little ksmd work while it runs).
  const want = { run: before[0] === '1' ? 0 : 1, pagesToScan: Number(before[1]) === 37 ? 38 : 37, sleepMs: Number(before[2]) === 1999 ? 1998 : 1999 } as const
  const child = path.join(dir, 'agent-like.ts')
  fs.writeFileSync(path.join(dir, 'package.json'), '{"type":"module"}\n')
  fs.writeFileSync(child, [
    `import { KsmSysfs } from ${JSON.stringify(path.resolve(here, '../../agent/adapters/ksm-sysfs.ts'))}`,
    `const s = new KsmSysfs({ stateFile: ${JSON.stringify(state)} })`,
    `await s.apply({ run: ${want.run}, pagesToScan: ${want.pagesToScan}, sleepMs: ${want.sleepMs} })`,
    'process.stdout.write("applied\\n")',
    'setInterval(() => {}, 1000)'
  ].join('\n'))
  const p = spawn(process.execPath, [...process.execArgv, child], { stdio: ['ignore', 'pipe', 'inherit'] })
  const exited = new Promise<NodeJS.Signals | null>(resolve => p.on('exit', (_c, sig) => resolve(sig)))
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('the child did not apply its KSM settings within 60 s')), 60_000)
    p.stdout.on('data', (b: Buffer) => { if (b.toString().includes('applied')) { clearTimeout(timer); resolve() } })
    p.on('exit', code => { clearTimeout(timer); reject(new Error(`the child exited (${String(code)}) before applying`)) })
  })
  t.same(read(), [String(want.run), String(want.pagesToScan), String(want.sleepMs)], 'the process changed the host\'s KSM')
  process.kill(p.pid as number, 'SIGKILL')
  t.equal(await exited, 'SIGKILL', 'killed with kill -9: no clean stop ran')
  t.same(read(), [String(want.run), String(want.pagesToScan), String(want.sleepMs)], 'its settings outlive it in the kernel...')
  const saved = JSON.parse(fs.readFileSync(state, 'utf8'))
  t.same(FILES.map(f => saved.settings[f]), before, '...and the host\'s own values in the state file')
  const r = await new KsmSysfs({ stateFile: state }).recover()
  t.equal(r.restored, true, 'the next start finds them')
  t.same(r.failed, [], 'and writes every one back')
  t.same(read(), before, `back as they were (${FILES.map((f, i) => `${f}=${before[i]}`).join(', ')})`)
  t.equal(fs.existsSync(state), false, 'the state file is gone')
})

t.test('the agent itself: started after a crash, it puts the host\'s KSM settings back first', { skip: why === null ? false : `SKIPPED: ${why}` }, async t => {
  const read = (): string[] => FILES.map(f => fs.readFileSync(path.join(KSM, f), 'utf8').trim())
  const before = read()
  t.teardown(() => { for (const [i, f] of FILES.entries()) { try { fs.writeFileSync(path.join(KSM, f), before[i] as string) } catch { /* reported by the asserts */ } } })
  const cluster = await LocalCluster.create(1, { seed: 13 })
  t.teardown(async () => await cluster.stop())
  const h = cluster.hosts[0]!
  // What a run killed while it drove KSM leaves: its own values in the kernel, the host's in the file.
  const state = path.join(h.stateDir, 'ksm-settings.json')
  fs.mkdirSync(h.stateDir, { recursive: true })
  fs.writeFileSync(state, JSON.stringify({ version: 1, settings: { run: before[0], pages_to_scan: before[1], sleep_millisecs: before[2] } }))
  const crashed = [before[0] === '1' ? '0' : '1', Number(before[1]) === 41 ? '42' : '41', Number(before[2]) === 1777 ? '1776' : '1777']
  for (const [i, f] of FILES.entries()) fs.writeFileSync(path.join(KSM, f), crashed[i] as string)
  t.same(read(), crashed)
  cluster.start(h.name)
  const t0 = performance.now()
  while (fs.existsSync(state) && performance.now() - t0 < 60_000) await new Promise(resolve => setTimeout(resolve, 100))
  t.equal(fs.existsSync(state), false, `the agent used the file (${((performance.now() - t0) / 1000).toFixed(1)} s after its start)`)
  t.same(read(), before, 'and the host has its settings back')
  const log = fs.readFileSync(h.logFile, 'utf8')
  t.match(log, /did not stop cleanly: the host's settings are back/, 'the operator is told')
})
