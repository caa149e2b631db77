/**
 * Goal: the agent drives the kernel's page sharing on real guests. With free memory under the
 * start threshold KSM is turned on and the saving grows with two guests holding identical pages;
 * the saving the agent reports is the kernel's (/sys/kernel/mm/ksm); ksmd's CPU share is measured
 * and reported; once the host has plenty of memory again KSM is turned off; the host's own KSM
 * settings are back at the end.
 *
 * Method: two test guests (QEMU, TCG here; QEMU marks guest RAM mergeable by default) each
 * allocating the same 96 MiB of identical pages on command (test/guest/dirtier.c: grow N same), the
 * real host memory reader and KSM writer (/sys/kernel/mm/ksm, root only), and the balloon loop
 * (balloons left alone) stepping the KSM loop once a second as the agent's sampler does. The host
 * is given a memory budget (memory.hostMemMiB 600) so that two guests of 256 MiB leave it under its
 * free-memory threshold on this machine's large RAM; stopping one leaves it plenty.
 */
import t, { type Test } from 'tap'
import { execFileSync } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { QemuDriver } from '../../agent/adapters/qemu-driver.js'
import { hostMemory } from '../../agent/adapters/host-memory.js'
import { KsmSysfs } from '../../agent/adapters/ksm-sysfs.js'
import { BalloonController, hostMemoryReport, type MemoryStatus } from '../../agent/runtime/balloon-controller.js'
import { KsmController } from '../../agent/runtime/ksm-controller.js'
import { validateMemorySection } from '../../agent/runtime/memory-setup.js'
import { memoryLogger } from '../../agent/lib/logger.js'
import type { VmSpec } from '../../agent/ports/hypervisor-driver.js'
import { renderMemory } from '../../agent/cli/memory.js'
import { renderMemoryMetrics } from '../../agent/api/memory.js'
import { buildTestGuest, guestKernel } from '../guest/guest.js'
import { CommandPort } from '../guest/command-port.js'

const KSM = '/sys/kernel/mm/ksm'
const SAME_MIB = 96
const sleep = (ms: number): Promise<void> => new Promise(resolve => setTimeout(resolve, ms))
const readKsm = (f: string): number => Number(fs.readFileSync(path.join(KSM, f), 'utf8').trim())
const SETTINGS = ['run', 'pages_to_scan', 'sleep_millisecs', 'advisor_mode', 'advisor_max_cpu', 'advisor_min_pages_to_scan', 'advisor_max_pages_to_scan', 'advisor_target_scan_time']
const settingsNow = (): Record<string, string> => Object.fromEntries(SETTINGS.filter(f => fs.existsSync(path.join(KSM, f))).map(f => [f, fs.readFileSync(path.join(KSM, f), 'utf8').trim()]))

function cannotRun (): string | null {
  try { execFileSync('qemu-system-x86_64', ['--version'], { stdio: 'ignore' }) } catch { return 'qemu-system-x86_64 not found' }
  if (!fs.existsSync(path.join(KSM, 'run'))) return 'this kernel has no KSM (/sys/kernel/mm/ksm)'
  if (process.getuid?.() !== 0) return 'driving KSM needs root (/sys/kernel/mm/ksm is written)'
  return null
}

function consoleLines (file: string): string[] {
  try { return fs.readFileSync(file, 'utf8').split('\n').map(l => l.trim()).filter(l => l !== '' && !l.startsWith('hb ')) } catch { return [] }
}

async function waitFor (what: string, cond: () => boolean, timeoutMs: number): Promise<void> {
  const end = performance.now() + timeoutMs
  while (!cond()) {
    if (performance.now() > end) throw new Error(`timed out waiting for ${what}`)
    await sleep(200)
  }
}

async function run (t: Test, guestDir: string): Promise<void> {
  const original = settingsNow()
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'starling-ksm-'))
  const log = memoryLogger()
  const driver = new QemuDriver({ runDir: path.join(tmp, 'vms'), accel: 'auto', dieWithAgent: true, killOnClose: true }, { logger: log })
  const ports: CommandPort[] = []
  const sysfs = new KsmSysfs()
  t.teardown(async () => {
    for (const p of ports) p.close()
    await driver.close()
    await sysfs.restore()
    // Whatever happened above, the host's settings go back.
    for (const [f, v] of Object.entries(original)) { try { fs.writeFileSync(path.join(KSM, f), v) } catch { /* reported by the test below when it matters */ } }
    fs.rmSync(tmp, { recursive: true, force: true })
  })
  t.comment(`accelerator: ${driver.accel} (${driver.accelReason}); host KSM before: ${JSON.stringify(original)}`)
  const MEM = 256
  const spec = (id: string): VmSpec => ({
    id,
    vcpus: 1,
    memMiB: MEM,
    extra: {
      kernel: guestKernel(guestDir),
      initrd: path.join(guestDir, 'initramfs.cpio'),
      append: 'console=ttyS0 quiet loglevel=3 panic=-1 dirtier_ws=16 dirtier_rate=0',
      args: ['-chardev', `socket,id=cmd,path=${path.join(tmp, `${id}.cmd`)},server=on,wait=off`, '-device', 'isa-serial,chardev=cmd']
    }
  })
  // Budget 600 MiB: two guests of 256 leave 88 MiB free, under 20 % (120 MiB); one leaves 344,
  // over 30 % (180 MiB), and 256 + 180 committed fits: not needed.
  const mem = validateMemorySection({
    balloon: false,
    hostMemMiB: 600,
    ksm: true,
    ksmPolicy: { maxPagesToScan: 4000, boostPages: 2000, sleepMs: 20, maxCpuPercent: 60 }
  }, [])
  const ksm = new KsmController(mem.ksmPolicy, { sysfs, logger: log })
  const ctl = new BalloonController(mem, { driver, host: hostMemory({ ksmdCpuSeconds: async () => await sysfs.ksmdCpuSeconds() }), logger: log, ksm })

  for (const id of ['twin1', 'twin2']) await driver.start(spec(id))
  for (const id of ['twin1', 'twin2']) await waitFor(`${id} ready`, () => consoleLines(driver.serialPath(id)).includes('dirtier commands on ttyS1'), 90_000)
  for (const id of ['twin1', 'twin2']) {
    const p = new CommandPort(path.join(tmp, `${id}.cmd`)); ports.push(p)
    await p.send(`grow ${SAME_MIB} same`)
    await waitFor(`${id} holding ${SAME_MIB} MiB`, () => consoleLines(driver.serialPath(id)).includes(`hog held=${SAME_MIB}`), 30_000)
  }

  const statuses: MemoryStatus[] = []
  let stepping = true
  const loop = (async () => {
    while (stepping) {
      const s = await ctl.step(await driver.list())
      if (s !== null) statuses.push(s)
      await sleep(1000)
    }
  })()
  const last = (): MemoryStatus | undefined => statuses[statuses.length - 1]
  t.teardown(async () => { stepping = false; await loop })
  // The twins' own merged pages (/proc/PID/ksm_merging_pages): the machine-wide counters also hold
  // other processes' pages, and stale ones that ksmd drops once it runs again.
  const twinMergedMiB = (): number => ['twin1', 'twin2'].reduce((sum, id) => {
    const pid = driver.pid(id)
    if (pid === undefined) return sum
    try { return sum + Number(fs.readFileSync(`/proc/${pid}/ksm_merging_pages`, 'utf8').trim()) * 4096 / 1048576 } catch { return sum }
  }, 0)
  t.equal(twinMergedMiB(), 0, 'the twins share nothing before KSM runs')

  await t.test('under its free-memory threshold the host turns KSM on, and identical guests share pages', async t => {
    await waitFor('KSM on', () => readKsm('run') === 1, 10_000)
    const s0 = last() as MemoryStatus
    t.equal(s0.host.ksm?.managed, true, 'the agent drives KSM')
    t.equal(s0.host.ksm?.reason, 'lowFree', `the reason: free memory is short (${s0.host.totalMiB - s0.host.usedMiB} of ${s0.host.totalMiB} MiB)`)
    t.equal(ksm.counters.starts, 1, 'started once')
    const t0 = performance.now()
    let nextNote = 0
    // Both twins' identical pages: up to 2 x 96 MiB merged; one guest's worth is plenty.
    await waitFor('the twins\' pages to merge', () => {
      if (performance.now() > nextNote) {
        nextNote = performance.now() + 10_000
        const k = last()?.host.ksm
        t.comment(`${((performance.now() - t0) / 1000).toFixed(0)} s: twins merged ${twinMergedMiB().toFixed(0)} MiB; host pages_sharing ${k?.pagesSharing} shared ${k?.pagesShared}, full scans ${k?.fullScans}, rate ${k?.pagesToScan}/${k?.sleepMs} ms, ksmd ${((k?.cpuShare ?? 0) * 100).toFixed(0)} %`)
      }
      return twinMergedMiB() >= SAME_MIB
    }, 120_000)
    // The twins can merge faster than a loop step: judge the first step that read them merged.
    const mergedAt = performance.now()
    await waitFor('a loop step after the merge', () => (last()?.atMs ?? 0) > Date.now() - (performance.now() - mergedAt) && (last()?.host.ksm?.pagesSharing ?? 0) > 0, 30_000)
    const s = last() as MemoryStatus
    const k = s.host.ksm
    t.comment(`after ${((performance.now() - t0) / 1000).toFixed(1)} s: twins merged ${twinMergedMiB().toFixed(0)} MiB; host saved ${k?.savedMiB.toFixed(0)} MiB, net ${k?.netSavedMiB?.toFixed(0)} MiB, pages_sharing ${k?.pagesSharing}, pages_shared ${k?.pagesShared}, rate ${k?.pagesToScan}/${k?.sleepMs} ms, ksmd ${k?.cpuShare === null || k?.cpuShare === undefined ? '-' : (k.cpuShare * 100).toFixed(0)} % of a core; load ${os.loadavg().map(x => x.toFixed(2)).join(' ')}`)
    t.ok(k !== null && k !== undefined && k.pagesSharing > 0, 'pages are shared')
    // The agent's figure against the kernel's, read right after a step (ksmd keeps merging between).
    // ksmd goes on merging while the step reads: the kernel's figure is read just before and just
    // after the step, and the agent's must lie between the two.
    const kernelMiB = (): number => (readKsm('pages_sharing') + (fs.existsSync(path.join(KSM, 'ksm_zero_pages')) ? readKsm('ksm_zero_pages') : 0)) * 4096 / 1048576
    const before = kernelMiB()
    const statusNow = await ctl.step(await driver.list())
    const after = kernelMiB()
    const reported = statusNow?.host.ksm?.savedMiB ?? -1
    const lo = Math.min(before, after)
    const hi = Math.max(before, after)
    t.ok(reported >= lo - 1 && reported <= hi + 1, `the saving reported (${reported.toFixed(1)} MiB) is the kernel's pages_sharing, read at ${before.toFixed(1)} MiB before the step and ${after.toFixed(1)} MiB after it`)
    const shares = statuses.map(x => x.host.ksm?.cpuShare).filter((x): x is number => typeof x === 'number')
    t.ok(shares.length >= 2, `ksmd's CPU share measured (${shares.map(x => (x * 100).toFixed(0) + '%').join(' ')})`)
    const sorted = [...shares].sort((a, b) => a - b)
    const median = sorted[Math.floor(sorted.length / 2)] as number
    t.ok(median <= 0.6 + 0.15, `ksmd's median CPU share ${(median * 100).toFixed(0)} % holds to its budget of 60 %`)
    const rep = hostMemoryReport(s.host, s.ballooning)
    t.equal(rep.ksmSavedMiB, Math.round(k?.savedMiB ?? -1), 'the gossiped report carries the saving')
    t.ok(rep.ksmCpu >= 0 && rep.ksmCpu <= 1, `and ksmd's CPU share (${rep.ksmCpu.toFixed(3)})`)
    const payload = { self: { id: 'x', name: 'hv-test' }, nowMs: Date.now(), status: s, counters: { ...ctl.counters }, ksmCounters: { ...ksm.counters } }
    t.match(renderMemory(payload), /KSM +running, driven by the agent \(lowFree.*\); saves \d+ MiB/, 'starling memory shows it')
    t.match(renderMemoryMetrics(payload), /agent_memory_ksm_pages_sharing [1-9]/, 'the metrics too')
    t.match(renderMemoryMetrics(payload), /agent_memory_ksm_starts_total 1/, 'and the loop\'s counters')
  })

  await t.test('with plenty of memory again KSM is turned off', async t => {
    await driver.stop('twin2')
    await waitFor('KSM off', () => readKsm('run') === 0, 15_000)
    const s = last() as MemoryStatus
    t.equal(s.host.ksm?.reason, 'notNeeded', `the reason: not needed (${s.host.totalMiB - s.host.usedMiB} of ${s.host.totalMiB} MiB free)`)
    t.equal(ksm.counters.stops, 1, 'stopped once')
    t.equal(ksm.counters.applyErrors, 0, 'every write went through')
  })

  stepping = false
  await loop
  await t.test('the host\'s KSM settings are back', async t => {
    await ksm.restore()
    t.same(settingsNow(), original, 'run, scan rate and advisor as before the test')
  })
}

const why = cannotRun()
if (why !== null) {
  t.fail(`cannot run the KSM test: ${why}`)
} else {
  let guestDir = ''
  try { guestDir = buildTestGuest() } catch (err) { t.fail(`the test guest does not build: ${(err as Error).message}`) }
  if (guestDir !== '') await t.test('page sharing on real guests', async t => { await run(t, guestDir) })
}
