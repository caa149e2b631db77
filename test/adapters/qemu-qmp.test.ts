/**
 * Goal: the QMP client negotiates, matches replies to commands by id, delivers events, times out,
 * and survives garbage and a peer that hangs up. Method: a fake QMP server on a unix socket in a
 * temp dir that scripts QEMU's side of the conversation; then the same client against a real QEMU
 * (no guest, -S) for the greeting, a command, an error and an event.
 */
import t, { type Test } from 'tap'
import { execFileSync, spawn } from 'node:child_process'
import fs from 'node:fs'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'
import { QmpClient, QmpError } from '../../agent/adapters/qmp-client.js'
import { QemuDriver, parseProcStatCpuTicks, probeAccel } from '../../agent/adapters/qemu-driver.js'
import { silentLogger } from '../../agent/lib/logger.js'
import { sleep } from '../lib/wait.js'

const GREETING = JSON.stringify({ QMP: { version: { qemu: { major: 7, minor: 2, micro: 22 }, package: '' }, capabilities: [] } })

interface FakeConn { sock: net.Socket, received: Array<Record<string, unknown>> }

/** A scripted QMP server: `onCommand` answers each command (or not). */
async function fakeServer (t: Test, onCommand: (cmd: Record<string, unknown>, c: FakeConn) => void): Promise<{ path: string, conns: FakeConn[] }> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'starling-qmp-'))
  const sockPath = path.join(dir, 'qmp.sock')
  const conns: FakeConn[] = []
  const server = net.createServer(sock => {
    const c: FakeConn = { sock, received: [] }
    conns.push(c)
    sock.write(GREETING + '\r\n')
    let buf = ''
    sock.on('data', d => {
      buf += d.toString()
      let nl: number
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl)
        buf = buf.slice(nl + 1)
        const cmd = JSON.parse(line) as Record<string, unknown>
        c.received.push(cmd)
        if (cmd.execute === 'qmp_capabilities') sock.write(JSON.stringify({ return: {}, id: cmd.id }) + '\r\n')
        else onCommand(cmd, c)
      }
    })
    sock.on('error', () => {})
  })
  await new Promise<void>(resolve => server.listen(sockPath, resolve))
  t.teardown(() => {
    for (const c of conns) c.sock.destroy()
    server.close()
    fs.rmSync(dir, { recursive: true, force: true })
  })
  return { path: sockPath, conns }
}

t.test('negotiates and correlates replies by id, out of order', async t => {
  const pending: Array<{ id: unknown, sock: net.Socket, name: unknown }> = []
  const srv = await fakeServer(t, (cmd, c) => {
    pending.push({ id: cmd.id, sock: c.sock, name: cmd.execute })
    if (pending.length === 2) {
      // answer the second first, with an event and blank lines in between
      const [a, b] = pending
      b!.sock.write(JSON.stringify({ return: { who: b!.name }, id: b!.id }) + '\r\n\r\n')
      a!.sock.write(JSON.stringify({ event: 'STOP', data: {}, timestamp: { seconds: 1, microseconds: 500 } }) + '\n')
      a!.sock.write(JSON.stringify({ return: { who: a!.name }, id: a!.id }) + '\n')
    }
  })
  const q = await QmpClient.connect(srv.path)
  t.teardown(() => q.close())
  t.equal(q.version, '7.2.22')
  t.equal(srv.conns[0]?.received[0]?.execute, 'qmp_capabilities', 'negotiates first')
  const events: string[] = []
  q.onEvent(e => events.push(`${e.event}@${e.timestampMs}`))
  const [x, y] = await Promise.all([q.execute('first'), q.execute('second', { a: 1 })])
  t.same(x, { who: 'first' })
  t.same(y, { who: 'second' })
  t.same(events, ['STOP@1000.5'])
  t.same(srv.conns[0]?.received[2]?.arguments, { a: 1 }, 'arguments passed')
})

t.test('QEMU errors become typed errors', async t => {
  const srv = await fakeServer(t, (cmd, c) => {
    c.sock.write(JSON.stringify({ error: { class: 'DeviceNotActive', desc: 'No balloon device has been activated' }, id: cmd.id }) + '\n')
  })
  const q = await QmpClient.connect(srv.path)
  t.teardown(() => q.close())
  const err = await q.execute('balloon', { value: 1 }).catch((e: unknown) => e)
  t.ok(err instanceof QmpError)
  t.match(err, { name: 'QmpError', code: 'QMP_COMMAND_FAILED', qmpClass: 'DeviceNotActive', command: 'balloon', message: /No balloon device/ })
})

t.test('garbage is counted and dropped, never thrown', async t => {
  const srv = await fakeServer(t, (cmd, c) => {
    c.sock.write('not json at all\n{"half": \n[1,2,3]\n"str"\n{"return": 5, "id": "nobody"}\n{"weird": true}\n' + 'x'.repeat(5000) + '\n')
    c.sock.write(JSON.stringify({ return: 'fine', id: cmd.id }) + '\n')
  })
  const q = await QmpClient.connect(srv.path, { maxLineBytes: 1024 })
  t.teardown(() => q.close())
  t.equal(await q.execute('x'), 'fine')
  t.equal(q.garbageCount, 6, 'six garbage lines (the stray reply is not garbage)')
  t.notOk(q.closed)
})

t.test('timeouts and aborts reject with QMP_TIMEOUT; a late reply is dropped', async t => {
  const held: Array<() => void> = []
  const srv = await fakeServer(t, (cmd, c) => { held.push(() => c.sock.write(JSON.stringify({ return: 1, id: cmd.id }) + '\n')) })
  const q = await QmpClient.connect(srv.path)
  t.teardown(() => q.close())
  const e1 = await q.execute('slow', undefined, { timeoutMs: 50 }).catch((e: unknown) => e)
  t.match(e1, { code: 'QMP_TIMEOUT', message: /timed out after 50 ms/ })
  const ac = new AbortController()
  const p = q.execute('aborted', undefined, { signal: ac.signal })
  ac.abort()
  t.match(await p.catch((e: unknown) => e), { code: 'QMP_TIMEOUT', message: /was aborted/ })
  for (const h of held) h()
  const ev = await q.waitForEvent('NEVER', { timeoutMs: 30 }).catch((e: unknown) => e)
  t.match(ev, { code: 'QMP_TIMEOUT' })
  t.equal(q.garbageCount, 0, 'late replies are not garbage')
})

t.test('the peer hanging up rejects pending and later calls with QMP_CLOSED', async t => {
  const srv = await fakeServer(t, (_cmd, c) => { setTimeout(() => c.sock.destroy(), 10) })
  const q = await QmpClient.connect(srv.path)
  const closed = new Promise<QmpError>(resolve => q.onClose(resolve))
  const waiting = q.waitForEvent('SHUTDOWN', { timeoutMs: 5000 }).catch((e: unknown) => e)
  t.match(await q.execute('x').catch((e: unknown) => e), { code: 'QMP_CLOSED' })
  t.match(await waiting, { code: 'QMP_CLOSED' })
  t.match(await closed, { code: 'QMP_CLOSED' })
  t.ok(q.closed)
  t.match(await q.execute('y').catch((e: unknown) => e), { code: 'QMP_CLOSED' })
})

t.test('connect fails with QMP_CONNECT_FAILED on a missing socket or a non-QMP peer', async t => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'starling-qmp-'))
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  const e1 = await QmpClient.connect(path.join(dir, 'none.sock'), { connectTimeoutMs: 100 }).catch((e: unknown) => e)
  t.match(e1, { code: 'QMP_CONNECT_FAILED' })
  const sockPath = path.join(dir, 'http.sock')
  const server = net.createServer(s => { s.end('HTTP/1.1 400 Bad Request\r\n\r\n') })
  await new Promise<void>(resolve => server.listen(sockPath, resolve))
  t.teardown(() => { server.close() })
  const e2 = await QmpClient.connect(sockPath, { connectTimeoutMs: 500 }).catch((e: unknown) => e)
  t.match(e2, { code: 'QMP_CONNECT_FAILED' })
})

t.test('driver helpers', async t => {
  t.equal(parseProcStatCpuTicks('1234 (qemu-system-x86 (x)) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 3 0 100 0 0'), 300, 'utime + stime, comm with spaces and parens')
  t.equal(parseProcStatCpuTicks('garbage'), null)
  const p = probeAccel()
  t.match(p, { accel: /^(kvm|tcg)$/, reason: /./ })
  if (fs.existsSync('/sys/module/kvm_pvm')) t.equal(p.accel, 'tcg', 'PVM /dev/kvm is not used for Linux guests')
})

t.test('driver errors: unknown VM, missing binary, bad spec', async t => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'starling-qemu-drv-'))
  const d = new QemuDriver({ runDir: dir, accel: 'tcg', qemuBinary: path.join(dir, 'no-such-qemu'), killOnClose: true }, { logger: silentLogger() })
  t.teardown(async () => { await d.close(); fs.rmSync(dir, { recursive: true, force: true }) })
  t.same(await d.list(), [])
  t.match(await d.stop('x').catch((e: unknown) => e), { name: 'DriverError', code: 'VM_NOT_FOUND' })
  t.match(await d.progress('x').catch((e: unknown) => e), { code: 'VM_NOT_FOUND' })
  t.match(await d.start({ id: 'a', vcpus: 1, memMiB: 64 }).catch((e: unknown) => e), { code: 'DRIVER_UNREACHABLE' })
  t.match(await d.start({ id: 'bad id', vcpus: 1, memMiB: 64 }).catch((e: unknown) => e), { code: 'DRIVER_FAILED' })
  t.match(await d.start({ id: 'b', vcpus: 1, memMiB: 64, extra: { kernel: 5 } }).catch((e: unknown) => e), { code: 'DRIVER_FAILED', message: /extra.kernel/ })
  t.match(await d.prepareIncoming({ id: 'c', vcpus: 1, memMiB: 64 }, 'nonsense').catch((e: unknown) => e), { code: 'DRIVER_FAILED', message: /host:port/ })
})

let qemuMissing: string | null = null
try { execFileSync('qemu-system-x86_64', ['--version'], { stdio: 'ignore' }) } catch (err) {
  qemuMissing = `qemu-system-x86_64 cannot run (${(err as Error).message}); install qemu-system-x86`
}

t.test('against a real QEMU: greeting, commands, errors, events; driver lifecycle and stats', async t => {
  if (qemuMissing !== null) { t.fail(qemuMissing); return }
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'starling-qmp-real-'))
  const sockPath = path.join(dir, 'qmp.sock')
  const proc = spawn('qemu-system-x86_64', ['-accel', 'tcg', '-m', '64', '-nodefaults', '-display', 'none', '-S', '-qmp', `unix:${sockPath},server=on,wait=off`], { stdio: 'ignore' })
  const exited = new Promise<void>(resolve => proc.once('exit', () => resolve()))
  t.teardown(async () => { proc.kill('SIGKILL'); await exited; fs.rmSync(dir, { recursive: true, force: true }) })
  const q = await QmpClient.connect(sockPath)
  t.match(q.version, /^\d+\.\d+\.\d+$/)
  t.match(await q.execute('query-status'), { status: 'prelaunch', running: false })
  t.match(await q.execute('no-such-command').catch((e: unknown) => e), { code: 'QMP_COMMAND_FAILED', qmpClass: 'CommandNotFound' })
  const resumed = q.waitForEvent('RESUME', { timeoutMs: 5000 })
  await q.execute('cont')
  t.equal((await resumed).event, 'RESUME')
  const gone = new Promise<QmpError>(resolve => q.onClose(resolve))
  await q.execute('quit').catch(() => {})
  t.match(await gone, { code: 'QMP_CLOSED' })
  await exited

  // The driver's own lifecycle on a guest without a kernel (firmware only): list, stats, balloon, stop.
  const d = new QemuDriver({ runDir: path.join(dir, 'run'), accel: 'tcg', dieWithAgent: true, killOnClose: true }, { logger: silentLogger() })
  t.teardown(() => d.close())
  await d.start({ id: 'fw', vcpus: 1, memMiB: 64 })
  t.match(await d.start({ id: 'fw', vcpus: 1, memMiB: 64 }).catch((e: unknown) => e), { code: 'DRIVER_FAILED', message: /already running/ })
  await sleep(300)
  const [vm] = await d.list()
  t.match(vm, { id: 'fw', vcpus: 1, memMiB: 64, memUsedMiB: 64, state: 'running' })
  t.ok(vm !== undefined && vm.cpuUtil >= 0 && vm.cpuUtil <= 1, `cpuUtil is a fraction (${vm?.cpuUtil})`)
  await d.balloon('fw', 32)
  t.equal((await d.list())[0]?.memUsedMiB, 32, 'memory follows the balloon target')
  t.match(await d.balloon('fw', 128).catch((e: unknown) => e), { code: 'DRIVER_FAILED' })
  t.match(await d.progress('fw'), { status: 'none' })
  const pid = d.pid('fw')
  await d.stop('fw')
  t.equal(d.pid('fw'), undefined)
  t.throws(() => process.kill(pid!, 0), 'QEMU process is gone')
  t.same(await d.list(), [])

  // A QEMU that dies under the driver: the error says how it ended, not only 'not answering'.
  await d.start({ id: 'crash', vcpus: 1, memMiB: 64 })
  // Polled at once (QMP closes before the exit is seen) and after the exit.
  process.kill(d.pid('crash')!, 'SIGSEGV')
  const early = await d.progress('crash').catch((e: unknown) => e)
  t.match(early, { message: /QEMU exited.*signal SIGSEGV/ }, `right after the crash: ${(early as Error).message}`)
  await d.exited('crash')
  const late = await d.progress('crash').catch((e: unknown) => e)
  t.match(late, { code: 'VM_NOT_FOUND', message: /its QEMU exited: signal SIGSEGV/ }, `after the exit: ${(late as Error).message}`)
  await d.stop('crash').catch(() => {})
})
