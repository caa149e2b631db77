/**
 * Goal: the KSM writer writes only what changed, hands the rate to the kernel's advisor when asked
 * (and says clearly when the kernel has none), puts the settings it found back, and reads ksmd's
 * CPU time. Method: a copy of /sys/kernel/mm/ksm and /proc in a temporary directory (the real
 * files are exercised by test/adapters/qemu-ksm.test.ts).
 */
import t from 'tap'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { KsmSysfs } from '../../agent/adapters/ksm-sysfs.js'
import { KsmController } from '../../agent/runtime/ksm-controller.js'
import { defaultKsmParams } from '../../policies/ksm.js'
import { memoryLogger } from '../../agent/lib/logger.js'

function tree (advisor: boolean): { root: string, read: (f: string) => string, write: (f: string, v: string) => void } {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'starling-ksm-'))
  const dir = path.join(root, 'sys/kernel/mm/ksm')
  fs.mkdirSync(dir, { recursive: true })
  const files: Record<string, string> = { run: '0', pages_to_scan: '100', sleep_millisecs: '20', pages_shared: '0', pages_sharing: '0' }
  if (advisor) Object.assign(files, { advisor_mode: '[none] scan-time', advisor_max_cpu: '70', advisor_min_pages_to_scan: '500', advisor_max_pages_to_scan: '30000', advisor_target_scan_time: '200' })
  for (const [f, v] of Object.entries(files)) fs.writeFileSync(path.join(dir, f), v + '\n')
  fs.mkdirSync(path.join(root, 'proc/77'), { recursive: true })
  fs.writeFileSync(path.join(root, 'proc/77/comm'), 'ksmd\n')
  // utime 250 ticks, stime 50 ticks (fields 14 and 15).
  fs.writeFileSync(path.join(root, 'proc/77/stat'), '77 (ksmd) S 2 0 0 0 -1 2129984 0 0 0 0 250 50 0 0 25 5 1 0 61 0 0')
  return {
    root,
    read: f => fs.readFileSync(path.join(dir, f), 'utf8').trim(),
    write: (f, v) => { fs.writeFileSync(path.join(dir, f), v) }
  }
}

t.test('writes what changed, restores what it found', async t => {
  const k = tree(false)
  t.teardown(() => fs.rmSync(k.root, { recursive: true, force: true }))
  const s = new KsmSysfs({ root: k.root })
  t.equal(await s.available(), true)
  t.equal(await s.hasAdvisor(), false)
  await s.apply({ run: 1, pagesToScan: 364, sleepMs: 10 })
  t.same([k.read('run'), k.read('pages_to_scan'), k.read('sleep_millisecs')], ['1', '364', '10'], 'written')
  k.write('pages_to_scan', '999')
  await s.apply({ run: 1, pagesToScan: 364, sleepMs: 10 })
  t.equal(k.read('pages_to_scan'), '999', 'an unchanged value is not written again')
  await s.apply({ run: 1, pagesToScan: 314, sleepMs: 10 })
  t.equal(k.read('pages_to_scan'), '314', 'a changed one is')
  await t.rejects(s.apply({ run: 1, advisor: { maxCpuPercent: 20, minPages: 64, maxPages: 1250, targetScanS: 200 } }), { code: 'DRIVER_FAILED', message: /no KSM advisor/ }, 'no advisor: a clear error')
  t.same(await s.restore(), [], 'restored')
  t.same([k.read('run'), k.read('pages_to_scan'), k.read('sleep_millisecs')], ['0', '100', '20'], 'the settings found before the first write')
  t.equal(await s.ksmdCpuSeconds(), 3, 'ksmd: (250 + 50) ticks of 10 ms')
})

t.test('the advisor gets the bounds and the budget', async t => {
  const k = tree(true)
  t.teardown(() => fs.rmSync(k.root, { recursive: true, force: true }))
  const s = new KsmSysfs({ root: k.root })
  t.equal(await s.hasAdvisor(), true)
  await s.apply({ run: 1, advisor: { maxCpuPercent: 15, minPages: 64, maxPages: 1250, targetScanS: 100 } })
  t.same(['advisor_mode', 'advisor_max_cpu', 'advisor_min_pages_to_scan', 'advisor_max_pages_to_scan', 'advisor_target_scan_time', 'run'].map(k.read), ['scan-time', '15', '64', '1250', '100', '1'])
  await s.restore()
  t.equal(k.read('advisor_mode'), 'none', 'the advisor\'s mode back (the mode in force, not the list)')
  t.equal(k.read('advisor_max_cpu'), '70')
})

t.test('the controller starts from the kernel\'s state and counts a failed write', async t => {
  const k = tree(false)
  t.teardown(() => fs.rmSync(k.root, { recursive: true, force: true }))
  const log = memoryLogger()
  const c = new KsmController(defaultKsmParams(), { sysfs: new KsmSysfs({ root: k.root }), logger: log })
  const facts = { run: 1, pagesShared: 0, pagesSharing: 0, zeroPages: 0, savedMiB: 0, fullScans: 0, netSavedMiB: null, pagesToScan: 500, sleepMs: 20, advisor: null, ksmdCpuS: null }
  // 25 % free, between the thresholds: an operator's running KSM keeps running, at its rate less the decay.
  const d = await c.step({ totalMiB: 1000, usedMiB: 750, committedMiB: 0 }, facts, null)
  t.equal(d.run, true, 'held on')
  t.equal(d.pagesToScan, 450)
  t.equal(c.counters.starts, 0, 'not counted as a start: it ran already')
  fs.rmSync(path.join(k.root, 'sys'), { recursive: true })
  const e = await c.step({ totalMiB: 1000, usedMiB: 900, committedMiB: 0 }, facts, null)
  t.equal(e.applied, false, 'a write that fails is reported')
  t.equal(c.counters.applyErrors, 1, 'and counted')
  t.equal(log.find('KSM settings could not be written', 'warn').length, 1, 'and logged')
})
