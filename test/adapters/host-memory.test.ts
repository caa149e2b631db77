/**
 * Goal: the host memory facts are what the kernel says. Method: a copy of /proc and /sys files
 * under a temp root with known values (KSM's saving is pages_sharing plus zero pages, never
 * pages_shared); then this machine's own files, read beside the adapter.
 */
import t from 'tap'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { hostMemory, parseMeminfo, parsePressure } from '../../agent/adapters/host-memory.js'

t.test('reads meminfo, PSI and KSM from a known tree', async t => {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'starling-hostmem-'))
  t.teardown(() => fs.rmSync(root, { recursive: true, force: true }))
  fs.mkdirSync(path.join(root, 'proc/pressure'), { recursive: true })
  fs.mkdirSync(path.join(root, 'sys/kernel/mm/ksm'), { recursive: true })
  fs.writeFileSync(path.join(root, 'proc/meminfo'), 'MemTotal:       16384000 kB\nMemFree:         1000000 kB\nMemAvailable:    8192000 kB\nBuffers: 1 kB\n')
  fs.writeFileSync(path.join(root, 'proc/pressure/memory'), 'some avg10=1.50 avg60=0.20 avg300=0.00 total=123\nfull avg10=0.25 avg60=0.00 avg300=0.00 total=45\n')
  const ksm = { run: 1, pages_shared: 100, pages_sharing: 2560, ksm_zero_pages: 256, full_scans: 7, general_profit: 10485760, pages_to_scan: 300, sleep_millisecs: 20, advisor_mode: 'none [scan-time]' }
  for (const [k, v] of Object.entries(ksm)) fs.writeFileSync(path.join(root, 'sys/kernel/mm/ksm', k), `${v}\n`)
  const f = await hostMemory({ root, ksmdCpuSeconds: async () => 12.5 }).read()
  t.equal(f.totalMiB, 16000)
  t.equal(f.availableMiB, 8000)
  t.equal(f.pressureSome10, 1.5)
  t.equal(f.pressureFull10, 0.25)
  t.same(f.ksm, { run: 1, pagesShared: 100, pagesSharing: 2560, zeroPages: 256, savedMiB: 11, fullScans: 7, netSavedMiB: 10, pagesToScan: 300, sleepMs: 20, advisor: 'scan-time', ksmdCpuS: 12.5 }, 'saving = (2560 + 256) pages of 4 KiB = 11 MiB; net = general_profit; the advisor mode in brackets; ksmd\'s CPU')
  fs.rmSync(path.join(root, 'sys'), { recursive: true })
  fs.rmSync(path.join(root, 'proc/pressure'), { recursive: true })
  const bare = await hostMemory({ root }).read()
  t.equal(bare.ksm, null, 'no KSM: null, not an error')
  t.equal(bare.pressureSome10, null, 'no PSI: null')
  fs.rmSync(path.join(root, 'proc/meminfo'))
  await t.rejects(hostMemory({ root }).read(), { code: 'DRIVER_FAILED', message: /cannot read \/proc\/meminfo/ }, 'no meminfo: a clear error')
})

t.test('this machine', async t => {
  const f = await hostMemory().read()
  const mi = parseMeminfo(fs.readFileSync('/proc/meminfo', 'utf8'))
  t.equal(f.totalMiB, (mi.get('MemTotal') as number) / 1024, 'MemTotal')
  t.ok(f.availableMiB > 0 && f.availableMiB <= f.totalMiB, `MemAvailable ${f.availableMiB.toFixed(0)} MiB`)
  if (fs.existsSync('/proc/pressure/memory')) t.same(parsePressure(fs.readFileSync('/proc/pressure/memory', 'utf8')).some10 !== null, true, 'PSI read')
  if (fs.existsSync('/sys/kernel/mm/ksm/pages_sharing')) {
    const sharing = Number(fs.readFileSync('/sys/kernel/mm/ksm/pages_sharing', 'utf8'))
    t.ok(f.ksm !== null && Math.abs(f.ksm.pagesSharing - sharing) <= Math.max(16, sharing * 0.05), `pages_sharing ${f.ksm?.pagesSharing} ~ ${sharing}`)
  } else {
    t.equal(f.ksm, null, 'no KSM here')
  }
})
