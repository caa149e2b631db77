/**
 * The watchdog device adapter. A real /dev/watchdog (hardware or softdog) is used when this
 * machine has one; otherwise the adapter is tested against stand-ins (a FIFO read by the test,
 * a regular file) and the test says so loudly. Also a real agent process protecting a VM with
 * `ha.watchdog` pointing at a FIFO: it pets while its ticks advance, stops when it is hung
 * (SIGSTOP), resumes, and writes the magic 'V' on SIGTERM; with the device absent or unsafe, the
 * agent runs but refuses to protect its VMs, and says why.
 */
import t from 'tap'
import { execFileSync, spawnSync } from 'node:child_process'
import { constants, existsSync, mkdirSync, openSync, readFileSync, readSync, closeSync, writeFileSync } from 'node:fs'
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { openWatchdogDevice, progressGate, sysfsTimeoutSec } from '../../agent/adapters/watchdog-device.js'
import { jsonLogger } from '../../agent/lib/logger.js'
import { startAgent, writeLocalCluster } from '../../agent/cli/demo.js'
import { compiledCli } from '../integration/cluster-harness.js'
import { poll, sleep } from '../lib/wait.js'

/** One protected VM (the sim driver's vm-1-1, running on host1): the watchdog is opened only where HA protects something. */
const HA_VMS = [{ id: 'vm-1-1', home: 'host1', kernel: '/boot/none' }]
async function haStatus (api: string): Promise<Record<string, any> | null> {
  const r = await fetch(`http://${api}/v1/ha`, { signal: AbortSignal.timeout(2000) }).catch(() => null)
  return r === null || !r.ok ? null : await r.json() as Record<string, any>
}
const logger = jsonLogger({ level: 'error', write: () => {} })

/** Why this machine has no usable watchdog device (null: it has one). */
function realDeviceMissing (): string | null {
  if (existsSync('/dev/watchdog')) return null
  const why: string[] = ['/dev/watchdog does not exist']
  try {
    const cfg = execFileSync('sh', ['-c', 'zcat /proc/config.gz 2>/dev/null | grep -E "^(# )?CONFIG_SOFT_WATCHDOG[ =]"'], { encoding: 'utf8' }).trim()
    if (cfg !== '') why.push(`kernel: ${cfg}`)
  } catch {}
  const mp = spawnSync('modprobe', ['softdog'], { encoding: 'utf8' })
  if (mp.error !== undefined) why.push(`modprobe softdog: ${(mp.error as NodeJS.ErrnoException).code ?? mp.error.message}`)
  else if (mp.status !== 0) why.push(`modprobe softdog failed: ${mp.stderr.trim()}`)
  else if (existsSync('/dev/watchdog')) return null
  return why.join('; ')
}

const missing = realDeviceMissing()
if (missing !== null) {
  const line = '!'.repeat(100)
  t.comment(line)
  t.comment(`REAL WATCHDOG DEVICE NOT TESTED ON THIS MACHINE: ${missing}.`)
  t.comment('The adapter is tested below against a FIFO and a regular file standing in for /dev/watchdog; the kernel side')
  t.comment('(timer start on open, reset on timeout, magic-close disarm) is NOT exercised here.')
  t.comment(line)
  process.stderr.write(`\n${line}\nREAL WATCHDOG DEVICE NOT TESTED: ${missing}\n${line}\n`)
} else {
  t.test('real /dev/watchdog: open, pet, magic close', async t => {
    const sec = sysfsTimeoutSec('/dev/watchdog')
    t.ok(sec !== undefined && sec > 0, `sysfs reports the timeout (${String(sec)} s)`)
    const r = openWatchdogDevice({ device: '/dev/watchdog', maxTimeoutMs: 3_600_000, tickMs: 100, petIntervalMs: 200 }, { logger, healthy: () => true, mayDisarm: () => true })
    if (!r.ok) { t.fail(`cannot open the real device: ${r.reason}`); return }
    t.ok(r.watchdog.pet(), 'petted')
    t.ok(r.watchdog.close(true), 'magic close written: the timer is disarmed (a reset here would end the test run)')
  })
}

/** A FIFO the test reads without blocking (the test holds the read end, so the adapter's open succeeds). */
function fifo (dir: string): { path: string, read: () => string, close: () => void } {
  const p = path.join(dir, `wd-${Math.random().toString(36).slice(2)}`)
  execFileSync('mkfifo', [p])
  const fd = openSync(p, constants.O_RDONLY | constants.O_NONBLOCK)
  const buf = Buffer.alloc(65536)
  return {
    path: p,
    read: () => {
      let s = ''
      for (;;) {
        let n = 0
        try { n = readSync(fd, buf, 0, buf.length, null) } catch (err) { if ((err as NodeJS.ErrnoException).code === 'EAGAIN') break; throw err }
        if (n === 0) break
        s += buf.subarray(0, n).toString('latin1')
      }
      return s
    },
    close: () => { closeSync(fd) }
  }
}

t.test('stand-in FIFO: pets only while ticks advance; magic close only when HA allows it', async t => {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'starling-wd-'))
  t.teardown(async () => { await rm(dir, { recursive: true, force: true }) })
  let ticks = 0
  let haOk = true
  const dev = fifo(dir)
  t.teardown(() => { dev.close() })
  const r = openWatchdogDevice({ device: dev.path, maxTimeoutMs: 10_000, timeoutSec: 2, tickMs: 10, petIntervalMs: 50 },
    { logger, healthy: progressGate(() => ticks, () => haOk), mayDisarm: () => haOk })
  if (!r.ok) { t.fail(r.reason); return }
  const wd = r.watchdog
  t.equal(wd.stats().timeoutMs, 2000)
  const ticker = setInterval(() => { ticks++ }, 10)
  wd.start()
  await sleep(400)
  const a = dev.read()
  t.ok(a.length >= 4, `pets while ticks advance (${a.length} in 400 ms at 50 ms)`)
  t.notOk(a.includes('V'), 'no magic character while petting')
  clearInterval(ticker) // the loop is hung: no tick progress
  await sleep(60); dev.read()
  await sleep(400)
  t.equal(dev.read(), '', 'no pet while ticks stand still')
  const ticker2 = setInterval(() => { ticks++ }, 10)
  await sleep(300)
  t.ok(dev.read().length >= 2, 'pets again once ticks advance')
  haOk = false // cut off past the fence grace: HA withholds the watchdog
  await sleep(60); dev.read()
  await sleep(300)
  t.equal(dev.read(), '', 'no pet while HA withholds the watchdog')
  t.notOk(wd.close(true), 'clean stop while HA withholds: no magic close (the timer must fire)')
  clearInterval(ticker2)
  t.notOk(dev.read().includes('V'))
  t.notOk(wd.pet(), 'closed: no more pets')

  const dev2 = fifo(dir)
  t.teardown(() => { dev2.close() })
  const r2 = openWatchdogDevice({ device: dev2.path, maxTimeoutMs: 10_000, timeoutSec: 2, tickMs: 10 }, { logger, healthy: () => true, mayDisarm: () => true })
  if (!r2.ok) { t.fail(r2.reason); return }
  t.ok(r2.watchdog.pet())
  t.notOk(r2.watchdog.close(false), 'an unclean close never disarms')
  t.equal(dev2.read(), '.')
  const dev3 = fifo(dir)
  t.teardown(() => { dev3.close() })
  const r3 = openWatchdogDevice({ device: dev3.path, maxTimeoutMs: 10_000, timeoutSec: 2, tickMs: 10 }, { logger, healthy: () => true, mayDisarm: () => true })
  if (!r3.ok) { t.fail(r3.reason); return }
  t.ok(r3.watchdog.pet())
  t.ok(r3.watchdog.close(true), 'clean stop while HA allows: disarmed')
  t.equal(dev3.read(), '.V', 'the last byte written is the magic V')
})

t.test('stand-in file: the device timeout is checked against the HA bound', async t => {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'starling-wd-'))
  t.teardown(async () => { await rm(dir, { recursive: true, force: true }) })
  const file = path.join(dir, 'watchdog0')
  writeFileSync(file, '')
  const c = { logger, healthy: () => true, mayDisarm: () => true }
  const absent = openWatchdogDevice({ device: path.join(dir, 'nope'), maxTimeoutMs: 10_000, tickMs: 100, timeoutSec: 5 }, c)
  t.match(absent, { ok: false, fatal: false, reason: /not there/ }, 'absent: fall back (not fatal)')
  const unknown = openWatchdogDevice({ device: file, maxTimeoutMs: 10_000, tickMs: 100, sysfsDir: dir }, c)
  t.match(unknown, { ok: false, fatal: true, reason: /timeoutSec/ }, 'unknown timeout: refused')
  const tooLong = openWatchdogDevice({ device: file, maxTimeoutMs: 10_000, tickMs: 100, timeoutSec: 11, sysfsDir: dir }, c)
  t.match(tooLong, { ok: false, fatal: true, reason: /longer than ha.timing.watchdogTicks/ }, 'timeout above watchdogTicks x tickMs: refused')
  // a sysfs that reports the timeout wins over the configured one
  const sys = path.join(dir, 'sys'); mkdirSync(path.join(sys, 'watchdog0'), { recursive: true })
  writeFileSync(path.join(sys, 'watchdog0', 'timeout'), '30\n')
  t.equal(sysfsTimeoutSec(file, sys), 30)
  const sysTooLong = openWatchdogDevice({ device: file, maxTimeoutMs: 10_000, tickMs: 100, timeoutSec: 5, sysfsDir: sys }, c)
  t.match(sysTooLong, { ok: false, fatal: true, reason: /30 s/ }, 'sysfs says 30 s: refused even though the configuration says 5')
  writeFileSync(path.join(sys, 'watchdog0', 'timeout'), '8\n')
  const ok = openWatchdogDevice({ device: file, maxTimeoutMs: 10_000, tickMs: 100, sysfsDir: sys }, c)
  if (!ok.ok) { t.fail(ok.reason); return }
  t.equal(ok.watchdog.stats().timeoutMs, 8000)
  t.equal(ok.watchdog.stats().petIntervalMs, 1000, 'pets every min(timeout / 4, 1 s)')
  t.ok(ok.watchdog.pet())
  t.ok(ok.watchdog.close(true))
  t.equal(readFileSync(file, 'latin1'), '.V')
})

t.test('real agent process with ha.watchdog on a FIFO stand-in: hung agent stops petting, SIGTERM writes V', async t => {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'starling-wd-agent-'))
  t.teardown(async () => { await rm(dir, { recursive: true, force: true }) })
  const [h] = await writeLocalCluster(dir, 1, { vmsPerHost: 1 })
  if (h === undefined) { t.fail('no host'); return }
  const dev = fifo(dir)
  t.teardown(() => { dev.close() })
  const cfg = JSON.parse(await readFile(h.configFile, 'utf8')) as Record<string, unknown>
  cfg.ha = { vms: HA_VMS, watchdog: { device: dev.path, timeoutSec: 2 } }
  await writeFile(h.configFile, JSON.stringify(cfg))
  const p = startAgent(h, compiledCli())
  t.teardown(() => { if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL') })
  let seen = ''
  for (let i = 0; i < 150 && seen.length < 3; i++) { await sleep(100); seen += dev.read() }
  t.ok(seen.length >= 3, `the agent pets the device (${seen.length} pets)`)
  const st = await haStatus(h.apiListen)
  t.equal(st?.selfFenced, true, 'the core knows this host holds a fence')
  t.equal(st?.watchdog?.device, dev.path, 'and shows which device')
  t.notOk(seen.includes('V'))
  p.kill('SIGSTOP')
  await sleep(100); dev.read()
  await sleep(1500)
  t.equal(dev.read(), '', 'a hung (SIGSTOPped) agent pets nothing: a real device would reset the host after its timeout')
  p.kill('SIGCONT')
  let again = ''
  for (let i = 0; i < 30 && again.length < 2; i++) { await sleep(100); again += dev.read() }
  t.ok(again.length >= 2, 'pets again after SIGCONT')
  const exited = new Promise<number | null>(resolve => p.once('exit', code => resolve(code)))
  p.kill('SIGTERM')
  const code = await exited
  t.equal(code, 0, 'clean exit')
  const tail = dev.read()
  t.equal(tail.slice(-1), 'V', 'magic close written on the clean stop')
  const log = await readFile(h.logFile, 'utf8')
  t.match(log, /watchdog device armed/)
  t.match(log, /disarmed \(magic close\)/)
})

t.test('real agent process: an absent device leaves the host unfenced: it runs, protects nothing, and says so', async t => {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'starling-wd-agent-'))
  t.teardown(async () => { await rm(dir, { recursive: true, force: true }) })
  const [h] = await writeLocalCluster(dir, 1, { vmsPerHost: 1 })
  if (h === undefined) { t.fail('no host'); return }
  const cfg = JSON.parse(await readFile(h.configFile, 'utf8')) as Record<string, unknown>
  cfg.ha = { vms: HA_VMS, watchdog: { device: path.join(dir, 'no-such-watchdog'), timeoutSec: 2, loadSoftdog: false } }
  await writeFile(h.configFile, JSON.stringify(cfg))
  const p = startAgent(h, compiledCli())
  t.teardown(() => { if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL') })
  let log = ''
  for (let i = 0; i < 150 && !/agent started/.test(log); i++) { await sleep(100); log = await readFile(h.logFile, 'utf8').catch(() => '') }
  const refusal = log.split('\n').find(l => l.includes('HA REFUSED ON THIS HOST'))
  t.ok(refusal !== undefined, 'the refusal is logged')
  t.equal(refusal === undefined ? null : (JSON.parse(refusal) as { level: string }).level, 'error', 'at error level')
  t.match(refusal ?? '', /no-such-watchdog is missing and ha\.watchdog\.loadSoftdog is false/, 'with the reason')
  t.match(log, /agent started/, 'and the agent runs')
  const st = await haStatus(h.apiListen)
  t.equal(st?.selfFenced, false, 'the core holds this host unfenced')
  t.match(st?.watchdog?.problem ?? '', /missing/, '/v1/ha says why')
  const shown = spawnSync(process.execPath, [compiledCli(), 'ha', 'status', '--api', h.apiListen], { encoding: 'utf8' })
  t.match(shown.stdout, /watchdog\s+NONE: this host's HA VMs are NOT protected/, '`starling ha status` says this host protects nothing')
  const exited = new Promise<number | null>(resolve => p.once('exit', code => resolve(code)))
  p.kill('SIGTERM')
  t.equal(await exited, 0)
})

t.test('real agent process: a device whose timeout exceeds the HA bound is never opened; the host stays unfenced', async t => {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'starling-wd-agent-'))
  t.teardown(async () => { await rm(dir, { recursive: true, force: true }) })
  const [h] = await writeLocalCluster(dir, 1, { vmsPerHost: 1 })
  if (h === undefined) { t.fail('no host'); return }
  const file = path.join(dir, 'fake-watchdog')
  writeFileSync(file, '')
  const cfg = JSON.parse(await readFile(h.configFile, 'utf8')) as Record<string, unknown>
  cfg.ha = { vms: HA_VMS, watchdog: { device: file, timeoutSec: 60 } }
  await writeFile(h.configFile, JSON.stringify(cfg))
  const p = startAgent(h, compiledCli())
  t.teardown(() => { if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL') })
  let log = ''
  for (let i = 0; i < 150 && !/agent started/.test(log); i++) { await sleep(100); log = await readFile(h.logFile, 'utf8').catch(() => '') }
  t.match(log, /HA REFUSED ON THIS HOST.*60 s, longer than ha\.timing\.watchdogTicks/, 'the refusal names the timeout and the bound')
  await sleep(500)
  t.equal(readFileSync(file, 'utf8'), '', 'the device was never written to (never opened: opening starts the timer)')
  t.equal((await haStatus(h.apiListen))?.selfFenced, false, 'unfenced')
  const exited = new Promise<number | null>(resolve => p.once('exit', code => resolve(code)))
  p.kill('SIGTERM')
  t.equal(await exited, 0)
})

t.test('the tests\' emulated device (agent/sim/fifo-watchdog.ts) has the kernel\'s semantics with the real adapter', async t => {
  const { FifoWatchdog } = await import('../../agent/sim/fifo-watchdog.js')
  const dir = await mkdtemp(path.join(os.tmpdir(), 'starling-wd-emu-'))
  t.teardown(async () => { await rm(dir, { recursive: true, force: true }) })
  let resets = 0
  const emu = new FifoWatchdog(path.join(dir, 'wd'), 1000, () => { resets++ })
  emu.start()
  t.teardown(() => { emu.stop() })
  let ticks = 0
  let allow = true
  const open = (): ReturnType<typeof openWatchdogDevice> => openWatchdogDevice({ device: emu.path, maxTimeoutMs: 2000, timeoutSec: 1, tickMs: 10, petIntervalMs: 100 },
    { logger, healthy: () => { ticks++; return allow }, mayDisarm: () => allow })
  const r1 = open()
  if (!r1.ok) { t.fail(`open failed: ${r1.reason}`); return }
  r1.watchdog.start()
  await sleep(600)
  t.ok(emu.isArmed && emu.pets >= 3, `armed and petted (${emu.pets} pets)`)
  t.equal(r1.watchdog.close(true), true, 'a clean stop while HA allows it disarms')
  await sleep(1500)
  t.equal(resets, 0, 'no reset after a magic close')
  const r2 = open()
  if (!r2.ok) { t.fail(`reopen failed: ${r2.reason}`); return }
  r2.watchdog.start()
  await sleep(400)
  allow = false // the core withholds the watchdog: no more pets
  const after = await poll(() => resets > 0, 5000, 20)
  t.equal(resets, 1, `the withheld watchdog "resets the host" (${after ?? 'not within 5000'} ms after pets stopped, timeout 1000 ms)`)
  allow = true
  r2.watchdog.close(false)
  const r3 = open()
  if (!r3.ok) { t.fail(`third open failed: ${r3.reason}`); return }
  r3.watchdog.start()
  await sleep(300)
  r3.watchdog.close(false) // a crash: closed without the magic character
  const t1 = Date.now()
  while (resets === 1 && Date.now() - t1 < 5000) await sleep(20)
  t.equal(resets, 2, 'a close without the magic character leaves the timer running: reset')
})
