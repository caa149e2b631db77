/**
 * Goal: a restarted agent's re-attach to the QEMUs of its previous run is bounded, and a QEMU
 * that does not answer in time is never taken for gone: it stays pending (its state unknown:
 * describe() rejects with DRIVER_UNREACHABLE instead of saying "absent", no second copy of it can
 * start, a fence still kills it by pid) and is attached in the background once it answers.
 *
 * Method: a run directory as a previous run leaves it (spec.json, qemu.pid, qmp.sock), first with
 * a scripted QMP server on the socket (one that accepts and never greets, one that greets and never
 * answers query-status) and a child process standing for QEMU's pid; then a real QEMU (TCG,
 * firmware only) stopped with SIGSTOP, as one whose main loop does not run, and resumed later.
 */
import t, { type Test } from 'tap'
import { execFileSync, spawn, type ChildProcess } from 'node:child_process'
import fs from 'node:fs'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'
import { QemuDriver } from '../../agent/adapters/qemu-driver.js'
import { silentLogger } from '../../agent/lib/logger.js'
import { until } from '../lib/wait.js'

const GREETING = JSON.stringify({ QMP: { version: { qemu: { major: 7, minor: 2, micro: 22 }, package: '' }, capabilities: [] } })

type Mode = 'silent' | 'greet-only' | 'answer'

/** A run directory holding VM `id` as a previous run left it; its QMP socket answers as `mode.now` says. */
async function leftover (t: Test, id: string): Promise<{ runDir: string, pid: number, mode: { now: Mode }, child: ChildProcess }> {
  const runDir = fs.mkdtempSync(path.join(os.tmpdir(), 'starling-reattach-'))
  const dir = path.join(runDir, id)
  fs.mkdirSync(dir)
  // A live process of ours stands for QEMU's pid (the driver checks it with kill(pid, 0)).
  const child = spawn(process.execPath, ['-e', 'setInterval(() => {}, 1000)'], { stdio: 'ignore' })
  await new Promise<void>((resolve, reject) => { child.once('spawn', resolve); child.once('error', reject) })
  const pid = child.pid!
  fs.writeFileSync(path.join(dir, 'spec.json'), JSON.stringify({ id, vcpus: 1, memMiB: 64 }))
  fs.writeFileSync(path.join(dir, 'qemu.pid'), String(pid))
  const mode: { now: Mode } = { now: 'silent' }
  const socks = new Set<net.Socket>()
  const server = net.createServer(sock => {
    socks.add(sock)
    sock.on('close', () => socks.delete(sock))
    sock.on('error', () => {})
    if (mode.now === 'silent') return // accepted, never a byte: QEMU whose main loop does not run
    sock.write(GREETING + '\r\n')
    let buf = ''
    sock.on('data', d => {
      buf += d.toString()
      let nl: number
      while ((nl = buf.indexOf('\n')) >= 0) {
        const cmd = JSON.parse(buf.slice(0, nl)) as { execute: string, id: string }
        buf = buf.slice(nl + 1)
        if (cmd.execute === 'qmp_capabilities') sock.write(JSON.stringify({ return: {}, id: cmd.id }) + '\r\n')
        else if (mode.now === 'answer' && cmd.execute === 'query-status') sock.write(JSON.stringify({ return: { status: 'running', running: true }, id: cmd.id }) + '\r\n')
        else if (mode.now === 'answer' && cmd.execute === 'query-migrate') sock.write(JSON.stringify({ return: {}, id: cmd.id }) + '\r\n')
      }
    })
  })
  await new Promise<void>(resolve => server.listen(path.join(dir, 'qmp.sock'), resolve))
  t.teardown(() => {
    for (const s of socks) s.destroy()
    server.close()
    child.kill('SIGKILL')
    fs.rmSync(runDir, { recursive: true, force: true })
  })
  return { runDir, pid, mode, child }
}

for (const first of ['silent', 'greet-only'] as const) {
  t.test(`a QEMU that ${first === 'silent' ? 'accepts and never greets' : 'greets and never answers query-status'}: bounded, pending, then attached when it answers`, async t => {
    const { runDir, pid, mode } = await leftover(t, 'g1')
    mode.now = first
    const d = new QemuDriver({ runDir, accel: 'tcg', reattachTimeoutMs: 400, reattachRetryMs: 100 }, { logger: silentLogger() })
    t.teardown(() => d.close())
    const t0 = performance.now()
    const attached = await d.reattach()
    const ms = performance.now() - t0
    t.same(attached, [], 'not attached')
    t.ok(ms < 2000, `re-attach gave up within its bound (${ms.toFixed(0)} ms for a 400 ms bound)`)
    t.same(d.pendingIds(), ['g1'], 'the VM stays known, as pending')
    t.equal(d.pid('g1'), pid, 'by its pid')
    // Its state is unknown: never reported absent (the migration machine would act on "absent").
    t.match(await d.describe('g1').catch((e: unknown) => e), { name: 'DriverError', code: 'DRIVER_UNREACHABLE', message: /state is unknown/ })
    t.match(await d.killIfNotRunning('g1').catch((e: unknown) => e), { code: 'DRIVER_UNREACHABLE' }, 'not killed as "not running" on a guess')
    t.match(await d.resume('g1').catch((e: unknown) => e), { code: 'DRIVER_UNREACHABLE' })
    // No second copy of it here: neither a start nor an incoming copy.
    t.match(await d.start({ id: 'g1', vcpus: 1, memMiB: 64 }).catch((e: unknown) => e), { code: 'DRIVER_FAILED', message: /already running.*not attached yet/ })
    t.match(await d.prepareIncoming({ id: 'g1', vcpus: 1, memMiB: 64 }, '127.0.0.1:0').catch((e: unknown) => e), { code: 'DRIVER_FAILED', message: /already running/ })
    t.same(await d.list(), [], 'not listed while its state is unknown')
    t.ok(fs.existsSync(path.join(runDir, 'g1', 'spec.json')), 'its directory is untouched')

    mode.now = 'answer'
    await until('the pending VM attached in the background', () => d.pendingIds().length === 0, 5000)
    t.match(await d.describe('g1'), { runStatus: 'running' }, 'attached: its state is known again')
    t.match(await d.list(), [{ id: 'g1', state: 'running' }])
  })
}

t.test('a pending VM is fenced by its pid; a pending QEMU that exits is dropped', async t => {
  const a = await leftover(t, 'g1')
  const d = new QemuDriver({ runDir: a.runDir, accel: 'tcg', reattachTimeoutMs: 300, reattachRetryMs: 100 }, { logger: silentLogger() })
  t.teardown(() => d.close())
  await d.reattach()
  t.same(d.pendingIds(), ['g1'])
  const exited = new Promise<string | null>(resolve => a.child.once('exit', (_c, sig) => resolve(sig)))
  await d.kill('g1')
  t.equal(await exited, 'SIGKILL', 'kill() reaches a pending QEMU')
  t.same(d.pendingIds(), [])
  t.equal(d.pid('g1'), undefined)

  const b = await leftover(t, 'g2')
  const d2 = new QemuDriver({ runDir: b.runDir, accel: 'tcg', reattachTimeoutMs: 300, reattachRetryMs: 100 }, { logger: silentLogger() })
  t.teardown(() => d2.close())
  await d2.reattach()
  t.same(d2.pendingIds(), ['g2'])
  b.child.kill('SIGKILL')
  await until('a pending VM whose process exited is dropped', () => d2.pendingIds().length === 0, 5000)
  t.equal(await d2.describe('g2'), null, 'then it is absent, for certain')
})

let qemuMissing: string | null = null
try { execFileSync('qemu-system-x86_64', ['--version'], { stdio: 'ignore' }) } catch (err) {
  qemuMissing = `qemu-system-x86_64 cannot run (${(err as Error).message}); install qemu-system-x86`
}

t.test('a real QEMU stopped with SIGSTOP: the re-attach is bounded, the VM pending, attached once it runs again', async t => {
  if (qemuMissing !== null) { t.fail(qemuMissing); return }
  const runDir = fs.mkdtempSync(path.join(os.tmpdir(), 'starling-reattach-real-'))
  // The previous run: it starts the VM and goes away, leaving its QEMU running.
  const before = new QemuDriver({ runDir, accel: 'tcg', dieWithAgent: true }, { logger: silentLogger() })
  await before.start({ id: 'fw', vcpus: 1, memMiB: 64 })
  const pid = before.pid('fw')!
  await before.close()
  process.kill(pid, 'SIGSTOP')
  const d = new QemuDriver({ runDir, accel: 'tcg', reattachTimeoutMs: 1000, reattachRetryMs: 200 }, { logger: silentLogger() })
  // One teardown, in this order: the driver's exit watch runs on unref'd timers, so the QEMU is
  // killed and awaited here (on ref'd ones) before the driver lets go of it.
  t.teardown(async () => {
    try { process.kill(pid, 'SIGCONT'); process.kill(pid, 'SIGKILL') } catch { /* gone */ }
    await until('the QEMU gone', () => { try { process.kill(pid, 0); return false } catch { return true } }, 10_000)
    await d.close()
    fs.rmSync(runDir, { recursive: true, force: true })
  })
  const t0 = performance.now()
  const attached = await d.reattach()
  const ms = performance.now() - t0
  t.same(attached, [])
  t.ok(ms < 3000, `re-attach to a stopped QEMU gave up within its bound (${ms.toFixed(0)} ms for 1000 ms)`)
  t.same(d.pendingIds(), ['fw'])
  t.match(await d.describe('fw').catch((e: unknown) => e), { code: 'DRIVER_UNREACHABLE' }, 'state unknown, not absent')
  t.match(await d.start({ id: 'fw', vcpus: 1, memMiB: 64 }).catch((e: unknown) => e), { code: 'DRIVER_FAILED', message: /already running/ }, 'no second copy')
  process.kill(pid, 'SIGCONT')
  await until('the QEMU attached once it runs again', () => d.pendingIds().length === 0, 15_000)
  t.match(await d.describe('fw'), { runStatus: 'running' })
  t.equal(d.pid('fw'), pid, 'the same process')
})
