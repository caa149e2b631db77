/**
 * sd_notify through the systemd-notify binary (agent/adapters/systemd-notify.ts).
 *
 * Goal: what systemd would receive on $NOTIFY_SOCKET is exactly READY=1 / STATUS= / WATCHDOG=1 /
 * STOPPING=1, the watchdog pings at half of WATCHDOG_USEC and stops pinging when the runtime is
 * unhealthy, and nothing happens (and nothing fails) without NOTIFY_SOCKET.
 * Method: a real AF_UNIX SOCK_DGRAM receiver, a small python3 program in a child process (Node
 * cannot open one), bound in a temporary directory; it prints each datagram with the sender pid
 * from SCM_CREDENTIALS and closes any passed fd (which is how systemd answers BARRIER=1).
 */
import t, { type Test } from 'tap'
import { spawn, spawnSync } from 'node:child_process'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { systemdNotifier, watchdogFromEnv } from '../../agent/adapters/systemd-notify.js'
import { memoryLogger } from '../../agent/lib/logger.js'
import { sleep } from '../lib/wait.js'

const RECEIVER = `
import socket, sys, os, json, array, struct
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
s.bind(sys.argv[1])
print(json.dumps({"listening": True}), flush=True)
while True:
    msg, anc, flags, addr = s.recvmsg(4096, socket.CMSG_SPACE(64) + socket.CMSG_SPACE(12))
    fds, pid = [], None
    for level, typ, data in anc:
        if level == socket.SOL_SOCKET and typ == socket.SCM_RIGHTS:
            a = array.array('i'); a.frombytes(data[:len(data) - len(data) % 4]); fds += list(a)
        elif level == socket.SOL_SOCKET and typ == socket.SCM_CREDENTIALS:
            pid = struct.unpack('iII', data[:12])[0]
    for fd in fds:
        os.close(fd)
    print(json.dumps({"msg": msg.decode(), "fds": len(fds), "pid": pid}), flush=True)
`

interface Datagram { msg: string, fds: number, pid: number | null }

const python = spawnSync('python3', ['-c', 'import socket; socket.AF_UNIX'], { stdio: 'ignore' }).status === 0
const binary = spawnSync('systemd-notify', ['--version'], { stdio: 'ignore' }).status === 0

async function receiver (t: Test): Promise<{ socket: string, datagrams: Datagram[], messages: () => string[], waitFor: (pred: (d: Datagram[]) => boolean, ms?: number) => Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), 'starling-notify-'))
  const socket = join(dir, 'notify.sock')
  const child = spawn('python3', ['-c', RECEIVER, socket], { stdio: ['ignore', 'pipe', 'inherit'] })
  const exited = new Promise<void>(resolve => child.once('exit', () => resolve()))
  t.teardown(async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM')
    await exited
    await rm(dir, { recursive: true, force: true })
  })
  const datagrams: Datagram[] = []
  const lines = createInterface({ input: child.stdout })
  await new Promise<void>((resolve, reject) => {
    lines.on('line', line => {
      const o = JSON.parse(line) as Datagram & { listening?: boolean }
      if (o.listening === true) resolve()
      else datagrams.push(o)
    })
    child.once('exit', code => reject(new Error(`receiver exited with ${code}`)))
  })
  const messages = (): string[] => datagrams.map(d => d.msg).filter(m => m !== 'BARRIER=1')
  const waitFor = async (pred: (d: Datagram[]) => boolean, ms = 3000): Promise<void> => {
    const deadline = Date.now() + ms
    while (!pred(datagrams)) {
      if (Date.now() > deadline) throw new Error(`timed out; got ${JSON.stringify(datagrams)}`)
      await sleep(10)
    }
  }
  return { socket, datagrams, messages, waitFor }
}

t.test('watchdogFromEnv follows sd_watchdog_enabled', async t => {
  t.equal(watchdogFromEnv({}, 10), undefined, 'no WATCHDOG_USEC: no watchdog')
  t.equal(watchdogFromEnv({ WATCHDOG_USEC: '30000000' }, 10), 30_000_000)
  t.equal(watchdogFromEnv({ WATCHDOG_USEC: '30000000', WATCHDOG_PID: '10' }, 10), 30_000_000, 'meant for us')
  t.equal(watchdogFromEnv({ WATCHDOG_USEC: '30000000', WATCHDOG_PID: '11' }, 10), undefined, 'meant for another process')
  t.equal(watchdogFromEnv({ WATCHDOG_USEC: 'x' }, 10), undefined)
  t.equal(watchdogFromEnv({ WATCHDOG_USEC: '0' }, 10), undefined)
})

t.test('without NOTIFY_SOCKET every call is a no-op', async t => {
  const saved = process.env['NOTIFY_SOCKET']
  delete process.env['NOTIFY_SOCKET']
  t.teardown(() => { if (saved !== undefined) process.env['NOTIFY_SOCKET'] = saved })
  const n = systemdNotifier({ binary: '/nonexistent/systemd-notify', watchdogUsec: 1000 })({ logger: memoryLogger() })
  t.equal(n.enabled, false)
  t.equal(n.watchdogIntervalMs, null, 'no watchdog without a socket')
  await n.ready('up')
  await n.status('x')
  await n.watchdog()
  await n.stopping()
  await n.close()
  t.same(n.stats(), { sent: 0, failed: 0, watchdogSkipped: 0 }, 'the binary was never run')
})

t.test('a failing sender is logged, never thrown', async t => {
  const log = memoryLogger()
  const n = systemdNotifier({ notifySocket: '/nonexistent/notify.sock', binary: '/nonexistent/systemd-notify' })({ logger: log })
  await n.ready('up')
  await n.close()
  t.same(n.stats(), { sent: 0, failed: 1, watchdogSkipped: 0 })
  t.match(log.find('sd_notify failed', 'warn'), [{ component: 'agent:systemd', fields: { what: 'READY=1', err: { code: 'ENOENT' } } }])
})

t.test('real datagram socket: READY, STATUS, STOPPING as systemd receives them', { skip: !(python && binary) && 'python3 or systemd-notify missing: cannot run a real receiver' }, async t => {
  const rx = await receiver(t)
  const log = memoryLogger()
  const n = systemdNotifier({ notifySocket: rx.socket })({ logger: log })
  t.equal(n.enabled, true)
  t.equal(n.watchdogIntervalMs, null, 'no WATCHDOG_USEC given: no watchdog')
  await n.ready('cluster c1: 3 members configured')
  await n.status('2 of 3 members alive\nsecond line')
  await n.stopping('leaving the cluster')
  await n.close()
  // The receiver closes each barrier's fd (which releases the sender) before it prints the
  // barrier's line: wait for the lines too, or the last one may still be in the pipe.
  const barriers = (): number => rx.datagrams.filter(d => d.msg === 'BARRIER=1' && d.fds === 1).length
  await rx.waitFor(() => rx.messages().length >= 3 && barriers() >= 3).catch(() => {})
  t.same(rx.messages(), [
    'READY=1\nSTATUS=cluster c1: 3 members configured',
    'STATUS=2 of 3 members alive second line',
    'STOPPING=1\nSTATUS=leaving the cluster'
  ], 'exact datagrams, in call order, status kept to one line')
  t.equal(barriers(), 3, 'each followed by a BARRIER=1 with its fd: the sender waited for the receiver')
  // The datagram's credentials carry our pid only when the sender may claim it (root with
  // CAP_SYS_ADMIN); otherwise they carry systemd-notify's own pid, and systemd accepts it only
  // with NotifyAccess=all. Record which case this run saw.
  const pids = new Set(rx.datagrams.filter(d => d.msg !== 'BARRIER=1').map(d => d.pid))
  t.comment(`sender pid as seen by the receiver: ${[...pids].join(',')} (agent pid ${process.pid})`)
  t.same(n.stats(), { sent: 3, failed: 0, watchdogSkipped: 0 })
  t.equal(log.find('told systemd we are ready').length, 1)
})

t.test('real datagram socket: watchdog pings at half of WATCHDOG_USEC, only while healthy', { skip: !(python && binary) && 'python3 or systemd-notify missing: cannot run a real receiver' }, async t => {
  const rx = await receiver(t)
  let healthy = true
  const log = memoryLogger()
  const n = systemdNotifier({ notifySocket: rx.socket, watchdogUsec: 400_000 })({ logger: log, healthy: () => healthy })
  t.equal(n.watchdogIntervalMs, 200, '400 ms watchdog: ping every 200 ms')
  n.start()
  n.start()
  const t0 = Date.now()
  await rx.waitFor(d => d.filter(x => x.msg === 'WATCHDOG=1').length >= 3)
  const took = Date.now() - t0
  t.ok(took >= 550 && took < 2500, `three pings after ${took} ms (started by start(), before READY=1)`)
  await n.ready()
  t.equal(rx.messages().filter(m => m === 'READY=1').length, 1, 'READY=1 sent once, after the watchdog had started')
  healthy = false
  const before = rx.messages().filter(m => m === 'WATCHDOG=1').length
  await sleep(700)
  const after = rx.messages().filter(m => m === 'WATCHDOG=1').length
  t.ok(after - before <= 1, 'no pings while unhealthy (one may have been under way)')
  t.ok(n.stats().watchdogSkipped >= 2, 'skips counted')
  t.ok(log.find('watchdog ping skipped', 'warn').length >= 2, 'and logged')
  await n.close()
  healthy = true
  const closedAt = rx.messages().length
  await sleep(500)
  t.equal(rx.messages().length, closedAt, 'no pings after close()')
})
