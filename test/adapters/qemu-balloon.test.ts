/**
 * Goal: the balloon loop on real guests. An idle guest gives memory back when the host is over its
 * target; a guest that grows gets memory again before its allocator is OOM-killed; a guest whose
 * statistics stop is never shrunk; a VM without a balloon device is reported and left alone while
 * the others are ballooned.
 *
 * Method: two test guests (QEMU, TCG here) with a second serial port on which they take commands
 * (test/guest/dirtier.c: grow/shrink MiB, balloon-off), a third QEMU without a balloon device,
 * the real QEMU driver (query-balloon, guest-stats over QMP, balloon), the real host memory reader,
 * and the BalloonController stepping once a second as the agent's sampler does. The host is given
 * a memory budget (memory.hostMemMiB) so that it is "over its target" on this machine's large RAM:
 * its use is the sum of the guests' balloons.
 */
import t, { type Test } from 'tap'
import { execFileSync } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { QemuDriver } from '../../agent/adapters/qemu-driver.js'
import { hostMemory } from '../../agent/adapters/host-memory.js'
import { BalloonController, type MemoryStatus } from '../../agent/runtime/balloon-controller.js'
import { defaultMemorySection, validateMemorySection } from '../../agent/runtime/memory-setup.js'
import { memoryLogger } from '../../agent/lib/logger.js'
import type { VmSpec } from '../../agent/ports/hypervisor-driver.js'
import { buildTestGuest, guestKernel } from '../guest/guest.js'
import { httpApi } from '../../agent/adapters/http-api.js'
import type { MemoryPayload } from '../../agent/api/memory.js'
import type { StatusPayload } from '../../agent/api/payloads.js'
import { renderMemoryLine, renderStatusTree } from '../../agent/cli/render.js'
import { compiledCli } from '../integration/cluster-harness.js'
import { CommandPort } from '../guest/command-port.js'

const sleep = (ms: number): Promise<void> => new Promise(resolve => setTimeout(resolve, ms))

function haveQemu (): string | null {
  try { execFileSync('qemu-system-x86_64', ['--version'], { stdio: 'ignore' }) } catch { return 'qemu-system-x86_64 not found' }
  return null
}

function consoleLines (file: string): string[] {
  try { return fs.readFileSync(file, 'utf8').split('\n').map(l => l.trim()).filter(l => l !== '' && !l.startsWith('hb ') && !l.startsWith('integrity ok')) } catch { return [] }
}

async function waitFor (what: string, cond: () => boolean, timeoutMs: number): Promise<void> {
  const end = performance.now() + timeoutMs
  while (!cond()) {
    if (performance.now() > end) throw new Error(`timed out waiting for ${what}`)
    await sleep(100)
  }
}

async function run (t: Test, guestDir: string): Promise<void> {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'starling-balloon-'))
  const log = memoryLogger()
  const driver = new QemuDriver({ runDir: path.join(tmp, 'vms'), accel: 'auto', dieWithAgent: true, killOnClose: true }, { logger: log })
  const ports: CommandPort[] = []
  t.teardown(async () => {
    for (const p of ports) p.close()
    await driver.close()
    fs.rmSync(tmp, { recursive: true, force: true })
  })
  t.comment(`accelerator: ${driver.accel} (${driver.accelReason})`)
  const MEM = 384
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
  // Budget: 700 MiB of which 80 % (560) is the target; two guests of 384 start 208 over it. The
  // configuration does not say that nodev has no balloon device: the agent finds out at run time.
  const mem = validateMemorySection({
    balloon: true, hostMemMiB: 700, statsPollSec: 1, policy: { statsStaleAfterS: 4 }, vms: { nodev: { shares: 1000 } }
  }, [])
  t.equal(mem.policy.targetPercent, defaultMemorySection().policy.targetPercent, 'the default target (80 %)')
  const ctl = new BalloonController(mem, { driver, host: hostMemory(), logger: log })

  for (const id of ['idle', 'grower']) await driver.start(spec(id))
  // A VM with no balloon device (and no guest: its firmware finds nothing to boot and waits).
  await driver.start({ id: 'nodev', vcpus: 1, memMiB: 64, extra: { balloon: false } })
  for (const id of ['idle', 'grower']) {
    await waitFor(`${id} ready`, () => consoleLines(driver.serialPath(id)).includes('dirtier commands on ttyS1'), 60_000)
  }
  const port = (id: string): CommandPort => { const p = new CommandPort(path.join(tmp, `${id}.cmd`)); ports.push(p); return p }
  const idle = port('idle'); const grower = port('grower')
  // The grower holds some memory from the start, so that the idle guest is the one with the most
  // free memory (the policy's first donor) without a tie to break.
  await grower.send('grow 64')
  await waitFor('the grower holding 64 MiB', () => consoleLines(driver.serialPath('grower')).includes('hog held=64'), 20_000)

  // The agent's loop: one step a second.
  const statuses: MemoryStatus[] = []
  let stepping = true
  const loop = (async () => {
    while (stepping) {
      const s = await ctl.step(await driver.list())
      if (s !== null) statuses.push(s)
      await sleep(1000)
    }
  })()
  const vmOf = (s: MemoryStatus | undefined, id: string) => s?.vms.find(v => v.id === id)
  const last = (): MemoryStatus | undefined => statuses[statuses.length - 1]

  await t.test('an idle guest gives memory back until the host is at its target', async t => {
    const t0 = performance.now()
    await waitFor('the host back at its target', () => {
      const s = last()
      return s !== undefined && s.host.usedMiB <= s.host.targetMiB + s.host.totalMiB * 0.02 && vmOf(s, 'idle')?.actualMiB !== MEM
    }, 40_000)
    const s = last() as MemoryStatus
    t.comment(`after ${((performance.now() - t0) / 1000).toFixed(1)} s: used ${s.host.usedMiB.toFixed(0)} of target ${s.host.targetMiB} MiB; idle ${vmOf(s, 'idle')?.actualMiB} MiB, grower ${vmOf(s, 'grower')?.actualMiB} MiB`)
    t.ok((vmOf(s, 'idle')?.actualMiB ?? MEM) < MEM - 64, 'the idle guest gave memory')
    t.ok(ctl.counters.reclaimedMiB >= 140, `reclaimed ${ctl.counters.reclaimedMiB} MiB`)
    const idleRow = vmOf(s, 'idle')
    t.ok(idleRow !== undefined && idleRow.guestFreeMiB !== null && idleRow.guestFreeMiB >= 64, `the idle guest keeps its free floor (${idleRow?.guestFreeMiB?.toFixed(0)} MiB free)`)
    t.ok(idleRow !== undefined && idleRow.statsAgeS !== null && idleRow.statsAgeS < 4, `its statistics are fresh (${idleRow?.statsAgeS?.toFixed(1)} s)`)
    const nodev = vmOf(s, 'nodev')
    t.equal(nodev?.balloon, false, 'the VM without a balloon device is reported as such')
    t.equal(log.find('vm nodev: memory.vms.nodev asks to balloon it, but it has no balloon device', 'error').length, 1, 'and the log names the field once')
    t.notOk(ctl.history.some(h => h.id === 'nodev'), 'and it is never ballooned')
    t.ok(s.host.ksm === null || s.host.ksm.savedMiB >= 0, 'KSM facts read')
  })

  await t.test('the operator sees it: GET /v1/memory, `starling memory`, status and metrics', async t => {
    const self = { id: 'f'.repeat(64), name: 'hv-test' }
    const payload = (): MemoryPayload => ({ self, nowMs: Date.now(), status: ctl.status(), counters: { ...ctl.counters } })
    const st = ctl.status()
    const status: StatusPayload = {
      cluster: 'lab', self, members: [], core: {}, runtime: {},
      memory: st === null ? null : { atMs: st.atMs, ballooning: st.ballooning, host: st.host, counters: { ...ctl.counters } }
    }
    const api = httpApi({ host: '127.0.0.1', port: 0, socketPath: null })({ logger: log, status: () => status, memory: payload })
    await api.start()
    t.teardown(async () => { await api.stop() })
    const base = `http://127.0.0.1:${api.port()}`
    const m = await (await fetch(`${base}/v1/memory`)).json() as MemoryPayload
    const idleRow = m.status?.vms.find(v => v.id === 'idle')
    t.ok(idleRow !== undefined && idleRow.actualMiB !== null && idleRow.actualMiB < MEM, `GET /v1/memory: idle's balloon ${idleRow?.actualMiB} MiB`)
    t.equal(m.status?.host.committedMiB, 2 * MEM + 64, 'committed = the sum of the VMs\' memory')
    t.ok(Math.abs((m.status?.host.balloonedMiB ?? 0) - m.status!.vms.reduce((s, v) => s + (v.actualMiB === null ? 0 : v.maxMiB - v.actualMiB), 0)) < 0.01, 'ballooned = the sum of max - balloon')
    const metrics = await (await fetch(`${base}/metrics`)).text()
    t.match(metrics, new RegExp(`agent_memory_vm_balloon_mib\\{vm="idle"\\} ${idleRow?.actualMiB}`), 'per-VM balloon metric')
    t.match(metrics, /agent_memory_host_committed_mib 832/, 'host committed metric')
    t.match(metrics, /agent_memory_host_pressure_some_avg10_percent [0-9.]+/, 'pressure metric')
    t.match(metrics, /agent_memory_balloon_shrinks [1-9]/, 'balloon counters')
    t.match(metrics, /agent_memory_vm_stale\{vm="idle"\} 0/, 'fresh statistics')
    t.match(renderMemoryLine(status)[0] ?? '', /^memory of hv-test: \d+ MiB used of 700 MiB \(target 560 MiB\), committed 832 MiB, ballooned \d+ MiB/, 'starling status line')
    t.match(renderStatusTree(status), /memory of hv-test/, 'in the status tree')
    // The command itself (compiled), against this API.
    // (asynchronously: the API answers from this process)
    const { execFile } = await import('node:child_process')
    const { promisify } = await import('node:util')
    const cli = async (...args: string[]): Promise<string> => (await promisify(execFile)(process.execPath, [compiledCli(), ...args], { encoding: 'utf8' })).stdout
    const text = await cli('memory', '--api', `127.0.0.1:${api.port()}`)
    t.match(text, /committed +832 MiB/, 'starling memory: committed')
    t.match(text, /\nidle +384 MiB +96 MiB +\d+ MiB/, 'starling memory: idle row (max, min, balloon)')
    t.match(text, /nodev .* no balloon device/, 'starling memory: the VM without a balloon device')
    const json = JSON.parse(await cli('memory', '--json', '--api', `127.0.0.1:${api.port()}`)) as MemoryPayload
    t.equal(json.status?.vms.length, 3, 'starling memory --json')
  })

  await t.test('a guest that grows gets memory back before it runs out', async t => {
    const before = vmOf(last(), 'grower')?.actualMiB ?? MEM
    const start = statuses.length
    for (let held = 64; held < 214; held += 25) {
      await grower.send('grow 25')
      await sleep(1000)
    }
    await waitFor('the grower to report 214 MiB held', () => consoleLines(driver.serialPath('grower')).includes('hog held=214'), 30_000)
    await sleep(2000)
    const lines = consoleLines(driver.serialPath('grower'))
    t.notOk(lines.some(l => l.startsWith('hog killed')), `no allocation was OOM-killed (${lines.filter(l => l.startsWith('hog')).join('; ')})`)
    const after = vmOf(last(), 'grower')?.actualMiB ?? 0
    // 214 MiB held plus its kernel and program (about 100 MiB under this guest's balloon) need 300.
    t.ok(after > before && after >= 300, `the grower's balloon gave it memory: ${before} -> ${after} MiB`)
    t.ok(ctl.history.some(h => h.id === 'grower' && h.reason === 'pressure'), 'it grew because of pressure')
    const pressured = statuses.slice(start).filter(s => s.vms.some(v => v.id === 'grower' && v.guestFreeMiB !== null && v.guestFreeMiB < 32))
    t.ok(pressured.length <= 1, `its free memory stayed above 32 MiB at (nearly) every sample (${pressured.length} below)`)
    // Back down: it frees what it took, which its statistics show at the next samples.
    const freeBefore = vmOf(last(), 'grower')?.guestFreeMiB ?? 0
    await grower.send('shrink 150')
    await waitFor('the freed memory in the guest statistics', () => (vmOf(last(), 'grower')?.guestFreeMiB ?? 0) > freeBefore + 100, 30_000)
    t.pass(`after freeing: ${vmOf(last(), 'grower')?.guestFreeMiB?.toFixed(0)} MiB free in the grower`)
  })

  await t.test('a guest whose statistics stop is never shrunk', async t => {
    await idle.send('balloon-off')
    await waitFor('the balloon driver unloaded', () => consoleLines(driver.serialPath('idle')).some(l => l.startsWith('balloon-off rc=0')), 20_000)
    const offAt = Date.now()
    await waitFor('the idle guest marked stale', () => vmOf(last(), 'idle')?.stale === true, 20_000)
    // Its balloon deflated when the driver left: the host is over its target again, and the
    // idle guest looks like the obvious donor. Watch several steps.
    await sleep(6000)
    const s = last() as MemoryStatus
    t.ok(s.host.usedMiB > s.host.targetMiB, `the host is over its target (${s.host.usedMiB.toFixed(0)} > ${s.host.targetMiB})`)
    const shrinks = ctl.history.filter(h => h.id === 'idle' && h.atMs >= offAt && h.targetMiB < h.fromMiB)
    t.same(shrinks, [], 'no shrink of the stale guest')
    t.equal(ctl.counters.staleShrinks, 0, 'none refused either: the policy never asked')
    t.equal(vmOf(s, 'idle')?.held, 'stale', 'the policy says why it holds it')
  })

  stepping = false
  await loop

  await t.test('a VM in a migration is left alone; a guest short of memory takes pages back from its balloon', async t => {
    // The agent's loop is stopped: nothing gives the grower memory back but its own balloon driver.
    const actual = async (): Promise<number> => (await driver.memoryFacts('grower', 1)).actualMiB ?? MEM
    await driver.balloon('grower', 200)
    const end = performance.now() + 30_000
    while (await actual() > 202 && performance.now() < end) await sleep(200)
    t.ok(await actual() <= 202, `the grower's balloon at ${await actual()} MiB (asked 200)`)
    // A step with the grower moving: short of memory as it is, its balloon is not touched.
    // Steps with the grower moving (three, a second apart): short of memory as it is, its balloon
    // is not touched; then steps without the move give it memory (the freeze was what held it).
    const n = ctl.history.length
    let s: MemoryStatus | null = null
    for (let i = 0; i < 3; i++) { s = await ctl.step(await driver.list(), undefined, new Set(['grower'])); await sleep(1000) }
    t.equal(vmOf(s ?? undefined, 'grower')?.held, 'migrating', 'the moving VM is held, and says why')
    t.same(ctl.history.slice(n).filter(h => h.id === 'grower'), [], 'its balloon is not changed while it moves')
    for (let i = 0; i < 10 && !ctl.history.slice(n).some(h => h.id === 'grower'); i++) { await ctl.step(await driver.list()); await sleep(1000) }
    t.ok(ctl.history.slice(n).some(h => h.id === 'grower' && h.targetMiB > h.fromMiB), 'steps without the move give it memory')
    await driver.balloon('grower', 200)
    while (await actual() > 202 && performance.now() < end + 30_000) await sleep(200)
    // Then the grower takes 150 MiB more than its balloon leaves room for, with nobody to deflate it.
    const seen = consoleLines(driver.serialPath('grower'))
    const heldBefore = seen.filter(l => l.startsWith('hog held=')).pop() ?? 'hog held=0'
    const target = Number(heldBefore.slice('hog held='.length)) + 150
    await grower.send('grow 150')
    const since = (): string[] => consoleLines(driver.serialPath('grower')).slice(seen.length)
    await waitFor(`the grower to hold ${target} MiB or lose its hog`, () => since().some(l => l === `hog held=${target}` || l.startsWith('hog killed')), 60_000)
    const lines = since()
    t.notOk(lines.some(l => l.startsWith('hog killed') || l.includes('Kernel panic')), `no process killed for memory: the guest deflated its balloon (deflate-on-oom) (${lines.filter(l => l.startsWith('hog')).slice(-2).join('; ')})`)
    t.ok(await actual() > 250, `the balloon gave way: ${await actual()} MiB after the growth (was 200)`)
  })
  t.comment(`counters: ${JSON.stringify(ctl.counters)}`)
}

const missing = haveQemu()
if (missing !== null) {
  t.fail(`cannot run the balloon tests: ${missing}`)
} else {
  let guestDir = ''
  try { guestDir = buildTestGuest() } catch (err) { t.fail(`the test guest does not build: ${(err as Error).message}`) }
  if (guestDir !== '') await t.test('ballooning real guests', async t => { await run(t, guestDir) })
}
