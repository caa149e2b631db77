/**
 * Goal: live migration negotiated by real agent processes over the mesh, with the QEMU driver
 * (TCG) and the test guest: the guest's heartbeat goes on at the target with its memory intact
 * and the source QEMU gone; a refused migration leaves the VM on the source; kill -9 of the
 * source agent, then of the target agent, at each step of the protocol resolves to exactly one
 * running copy after restart; a target that loses power after the switch-over never gets the
 * source to resume its older copy.
 *
 * Method: three agents on loopback (writeLocalCluster, configurations rewritten for driver.kind
 * 'qemu'); host1 boots guest g1 (256 MiB). `starling migrate` moves it. The agents' QEMU
 * processes are detached and survive their agent. Kill points use the STARLING_TEST_EXIT_AT hook
 * (the agent SIGKILLs itself right after journaling the named role:state, before acting on it);
 * the agent is then restarted without it and the test waits until no migration is in flight and
 * counts the running copies over QMP. host3 is drained, so it refuses every incoming VM.
 * Every wait has a deadline (each step also has one of its own), so that a failure fails fast with
 * what was awaited and the agents' log tails; STARLING_TEST_KEEP=1 keeps the agents' logs.
 * Run: npm run build && npx tap test/integration/migration-qemu.test.ts  (about 3-4 minutes)
 */
import tap, { type Test } from 'tap'
import { execFile, execFileSync, spawn, type ChildProcess } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { compiledCli, LocalCluster, aliveCount } from './cluster-harness.js'
import { buildTestGuest, guestKernel } from '../guest/guest.js'
import { sleep, until as waitUntil } from '../lib/wait.js'

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..')

interface Hb { seq: number, atMs: number }
/** Heartbeats and integrity lines of a serial log, timestamped as they appear. */
class Tail {
  hbs: Hb[] = []
  integrityOk = 0
  fails: string[] = []
  rebooted = false
  private pos = 0
  private part = ''
  private readonly timer: NodeJS.Timeout
  constructor (readonly file: string) { this.timer = setInterval(() => this.poll(), 3) }
  poll (): void {
    let fd: number
    try { fd = fs.openSync(this.file, 'r') } catch { return }
    try {
      const buf = Buffer.alloc(1 << 16)
      for (;;) {
        const n = fs.readSync(fd, buf, 0, buf.length, this.pos)
        if (n <= 0) break
        this.pos += n
        const at = performance.now()
        const lines = (this.part + buf.toString('latin1', 0, n)).split('\n')
        this.part = lines.pop() ?? ''
        for (const raw of lines) {
          const l = raw.replace(/\r$/, '')
          const m = /^hb (\d+) /.exec(l)
          if (m !== null) this.hbs.push({ seq: Number(m[1]), atMs: at })
          else if (l.startsWith('integrity ok')) this.integrityOk++
          else if (l.includes('INTEGRITY FAIL')) this.fails.push(l)
          else if (l.startsWith('dirtier start')) this.rebooted = true
        }
      }
    } finally { fs.closeSync(fd) }
  }
  close (): void { clearInterval(this.timer) }
}

let logDump = (): string => ''

const until = async (what: string, pred: () => boolean | Promise<boolean>, timeoutMs: number): Promise<number> =>
  await waitUntil(what, pred, timeoutMs, { detail: () => logDump() })

let guestDir = ''
try {
  execFileSync('qemu-system-x86_64', ['--version'], { stdio: 'ignore' })
  guestDir = buildTestGuest()
} catch (err) {
  tap.fail(`QEMU or the test guest is missing: ${(err as Error).message}`)
}
if (guestDir !== '') await tap.test('migration through the agents', run)

async function run (t: Test): Promise<void> {
  const cli = compiledCli()
  const cluster = await LocalCluster.create(3, { core: { reportIntervalTicks: 10, reportPullIntervalTicks: 10, pushPullIntervalTicks: 50 } })
  const procs = new Map<string, ChildProcess>()
  logDump = () => cluster.hosts.map(h => `--- ${h.name}\n` + (fs.existsSync(h.logFile) ? fs.readFileSync(h.logFile, 'utf8').split('\n').filter(l => !l.includes('member-state') && !l.includes('peer connected')).slice(-15).join('\n') : '')).join('\n').slice(-8000)
  const tails: Tail[] = []
  const runDir = (h: string): string => path.join(cluster.host(h).stateDir, 'vms')
  for (const h of cluster.hosts) {
    const cfg = JSON.parse(fs.readFileSync(h.configFile, 'utf8')) as Record<string, any>
    cfg.driver = {
      kind: 'qemu',
      vms: [],
      qemu: {
        runDir: runDir(h.name),
        accel: 'tcg',
        migrationListen: '127.0.0.1',
        vms: h.name === 'host1'
          ? [{ id: 'g1', vcpus: 1, memMiB: 256, kernel: guestKernel(guestDir), initrd: path.join(guestDir, 'initramfs.cpio'), append: 'console=ttyS0 quiet loglevel=3 panic=-1 dirtier_ws=32 dirtier_rate=0' }]
          : []
      }
    }
    cfg.sampler = { kind: 'driver', intervalMs: 500, capacity: { cpuCores: 16, cpuMipsPerCore: 1000, memMiB: 8192, netMbps: 10000 } }
    cfg.migration = { autoBalance: false, maxBandwidthBytes: 128 * 1048576, bandwidthBytesPerS: 128 * 1048576, leaseTicks: 60, prepareTimeoutTicks: 150, intentTimeoutTicks: 50, resendTicks: 10 }
    fs.writeFileSync(h.configFile, JSON.stringify(cfg, null, 2))
  }
  const start = (name: string, exitAt?: string): ChildProcess => {
    const h = cluster.host(name)
    const fd = fs.openSync(h.logFile, 'a')
    const env = { ...process.env }
    delete env.STARLING_TEST_EXIT_AT
    if (exitAt !== undefined) env.STARLING_TEST_EXIT_AT = exitAt
    const p = spawn(process.execPath, [cli, 'agent', '--config', h.configFile], { stdio: ['ignore', fd, fd], env })
    fs.closeSync(fd)
    procs.set(name, p)
    return p
  }
  /** `starling ARGS`, killed after 120 s (a CLI that never returns must not hold the test up). */
  const starling = async (args: string[]): Promise<{ code: number, out: string }> => await new Promise(resolve => {
    execFile(process.execPath, [cli, ...args], { encoding: 'utf8', timeout: 120_000, killSignal: 'SIGKILL' }, (err, stdout, stderr) => {
      const killed = err !== null && (err as { killed?: boolean }).killed === true
      const code = err === null ? 0 : typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : 1
      resolve({ code, out: `${stdout}${stderr}${killed ? `\n(starling ${args[0] ?? ''} killed after 120 s without an answer)` : ''}` })
    })
  })
  /** True once `p` has exited (by its own hand or a signal; exitCode alone misses a SIGKILL). */
  const gone = (p: ChildProcess): boolean => p.exitCode !== null || p.signalCode !== null
  /** Kills `name`'s agent (if it runs) and waits for its exit, at most 10 s. */
  const kill9 = async (name: string): Promise<void> => {
    const p = procs.get(name)
    if (p === undefined || gone(p)) return
    const exit = new Promise<void>(resolve => p.once('exit', () => resolve()))
    p.kill('SIGKILL')
    if (!await Promise.race([exit.then(() => true), sleep(10_000).then(() => false)])) throw new Error(`${name}'s agent (pid ${String(p.pid)}) did not exit within 10 s of SIGKILL`)
  }
  /** Resolves true when `p` exits; listens at once (the hook may fire before anything else is awaited). */
  const exitOf = (p: ChildProcess): Promise<boolean> => gone(p) ? Promise.resolve(true) : new Promise<boolean>(resolve => p.once('exit', () => resolve(true)))
  /**
   * QEMU copies of g1: host -> 'running' when its guest prints heartbeats (the serial log grows
   * over 600 ms), else 'stopped'. QMP takes one client at a time (the agent's), so the test
   * judges by the process and the guest's own output.
   */
  const copies = async (): Promise<Map<string, string>> => {
    const sizes = new Map<string, number>()
    const alive = (h: string): boolean => {
      try { process.kill(Number(fs.readFileSync(path.join(runDir(h), 'g1', 'qemu.pid'), 'utf8').trim()), 0); return true } catch { return false }
    }
    const size = (h: string): number => { try { return fs.statSync(path.join(runDir(h), 'g1', 'serial.log')).size } catch { return 0 } }
    for (const h of cluster.hosts) if (alive(h.name)) sizes.set(h.name, size(h.name))
    await sleep(600)
    const out = new Map<string, string>()
    for (const [h, n] of sizes) if (alive(h)) out.set(h, size(h) > n ? 'running' : 'stopped')
    return out
  }
  const running = async (): Promise<string[]> => [...(await copies())].filter(([, s]) => s === 'running').map(([h]) => h)
  type MigRec = { id: string, state: string, vm: string, role: string, reason: string, durationTicks: number, progress: { totalTimeMs: number, downtimeMs: number | null } | null }
  /** The agent's migration records; null when its API does not answer (not up yet, or dead). */
  const migrationsOrNull = async (name: string): Promise<MigRec[] | null> => {
    try {
      const r = await fetch(`http://${cluster.host(name).apiListen}/v1/migrations`, { signal: AbortSignal.timeout(2000) })
      if (!r.ok) return null
      return ((await r.json()) as { migrations: MigRec[] }).migrations
    } catch { return null }
  }
  const migrations = async (name: string): Promise<MigRec[]> => await migrationsOrNull(name) ?? []
  /**
   * Asks for the migration until the agent with the exit hook dies. Right after a restart the
   * source may refuse or abort it (its view of the target still filling in); that is not what
   * these tests are about, so the refusal is printed and the request repeated, up to 3 times;
   * up to 6 when the source cancelled at the sync cap (a TCG guest under load dirtying memory
   * faster than the copy: 3 such cancels in a row were seen at load 20).
   */
  const migrateUntilExit = async (tt: Test, from: string, to: string, exited: Promise<boolean>): Promise<boolean> => {
    let capCancels = 0
    for (let attempt = 1; attempt <= 3 + Math.min(capCancels, 3); attempt++) {
      // The record this request makes is the one not there before it (the list is not in time order).
      const before = new Set((await migrations(from)).map(m => m.id))
      const r = await starling(['migrate', 'g1', '--to', to, '--no-wait', '--config', cluster.host(from).configFile])
      if (await Promise.race([exited, sleep(15_000).then(() => false)])) return true
      const last = (await migrations(from)).find(m => m.vm === 'g1' && !before.has(m.id))
      tt.comment(`attempt ${attempt}: no exit yet; migrate said ${JSON.stringify(r.out.trim())}; its record on ${from}: ${JSON.stringify(last === undefined ? null : { id: last.id, role: last.role, state: last.state, reason: last.reason })}`)
      if (last !== undefined && last.state !== 'aborted') break // in flight: waiting longer is all we can do
      if (last !== undefined && /cancelled before the switch-over/.test(last.reason)) capCancels++
    }
    return await Promise.race([exited, sleep(15_000).then(() => false)])
  }
  /**
   * Both agents up and answering, no migration in flight on either, one running copy. An agent
   * whose API does not answer yet has not restored its records: it is not settled (else its
   * unfinished record would resolve in a later step, and fire that step's hook at start-up).
   */
  const settled = async (): Promise<boolean> => {
    for (const h of ['host1', 'host2']) {
      const p = procs.get(h)
      if (p === undefined || gone(p)) return false
      const ms = await migrationsOrNull(h)
      if (ms === null || ms.some(m => m.state !== 'committed' && m.state !== 'aborted')) return false
    }
    const c = await copies()
    return c.size === 1 && [...c.values()][0] === 'running'
  }

  t.teardown(async () => {
    for (const tl of tails) tl.close()
    for (const p of procs.values()) if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL')
    for (const h of cluster.hosts) {
      for (const vm of fs.existsSync(runDir(h.name)) ? fs.readdirSync(runDir(h.name)) : []) {
        try { process.kill(Number(fs.readFileSync(path.join(runDir(h.name), vm, 'qemu.pid'), 'utf8').trim()), 'SIGKILL') } catch { /* gone */ }
      }
    }
    await sleep(300)
    await cluster.stop()
  })

  for (const h of cluster.hosts) start(h.name)
  await until('three agents alive in every view', async () => {
    for (const h of cluster.hosts) { const s = await cluster.status(h.name); if (s === null || aliveCount(s) !== 3) return false }
    return true
  }, 60_000)
  const srcTail = new Tail(path.join(runDir('host1'), 'g1', 'serial.log'))
  tails.push(srcTail)
  await until('guest heartbeats and an integrity pass on host1', () => srcTail.hbs.length > 20 && srcTail.integrityOk >= 1, 90_000)
  // host3 drains (it has nothing) and so refuses every incoming VM from now on.
  t.equal((await starling(['drain', 'host3', '--config', cluster.host('host1').configFile])).code, 0, 'drain host3 requested')
  await sleep(1500)

  // A step's own deadline: the waits inside it are bounded, this is the backstop behind them.
  const step = { timeout: 300_000 }
  await t.test('a migration refused by the target leaves the VM running on the source', step, async tt => {
    const r = await starling(['migrate', 'g1', '--to', 'host3', '--config', cluster.host('host1').configFile])
    tt.equal(r.code, 1, `aborted: ${r.out.trim()}`)
    tt.match(r.out, /refused|draining/)
    tt.same(await running(), ['host1'], 'still running on host1 only')
    const n = srcTail.hbs.length
    await sleep(500)
    tt.ok(srcTail.hbs.length > n, 'heartbeat goes on at the source')
  })

  await t.test('migrate through the CLI: heartbeat goes on at the target, memory intact, source QEMU gone', step, async tt => {
    const t0 = performance.now()
    let r = await starling(['migrate', 'g1', '--to', 'host2', '--config', cluster.host('host1').configFile])
    // Under load a TCG guest may dirty its memory faster than the copy: the source then cancels
    // before the switch-over (the sync cap) and the VM runs on at the source. That is the
    // product's choice, not this case's subject: said, and asked again (twice at most).
    for (let again = 1; again <= 2 && r.code !== 0 && /cancelled before the switch-over/.test(r.out); again++) {
      tt.comment(`attempt ${again} cancelled by the sync cap (${r.out.trim()}); asking again`)
      r = await starling(['migrate', 'g1', '--to', 'host2', '--config', cluster.host('host1').configFile])
    }
    const wallMs = performance.now() - t0
    tt.equal(r.code, 0, r.out.trim())
    const dstTail = new Tail(path.join(runDir('host2'), 'g1', 'serial.log'))
    tails.push(dstTail)
    try {
      await until('heartbeats on host2', () => dstTail.hbs.length >= 5, 20_000)
    } catch (err) {
      const f = dstTail.file
      tt.comment(`target serial ${f}: ${fs.existsSync(f) ? fs.readFileSync(f, 'latin1').slice(0, 600) : 'missing'}; dir: ${fs.existsSync(path.dirname(f)) ? fs.readdirSync(path.dirname(f)).join(',') : 'missing'}; qemu.log: ${fs.existsSync(path.join(path.dirname(f), 'qemu.log')) ? fs.readFileSync(path.join(path.dirname(f), 'qemu.log'), 'utf8').slice(0, 500) : ''}`)
      throw err
    }
    const last = srcTail.hbs[srcTail.hbs.length - 1]!
    const first = dstTail.hbs[0]!
    tt.ok(first.seq > last.seq && first.seq <= last.seq + 3, `heartbeat continues (source last ${last.seq}, target first ${first.seq})`)
    tt.notOk(dstTail.rebooted, 'no reboot on the target')
    const passes = dstTail.integrityOk
    await until('an integrity pass on host2', () => dstTail.integrityOk > passes, 30_000)
    tt.same(dstTail.fails, [], 'no corrupted page')
    await until('one copy, on host2', async () => { const c = await copies(); return c.size === 1 && c.get('host2') === 'running' }, 20_000)
    const rec = (await migrations('host1')).find(m => m.vm === 'g1' && m.state === 'committed')
    tt.comment(`CLI wall time ${wallMs.toFixed(0)} ms; QEMU total ${String(rec?.progress?.totalTimeMs)} ms, QEMU downtime ${String(rec?.progress?.downtimeMs)} ms; heartbeat gap ${(first.atMs - last.atMs).toFixed(0)} ms`)
    const out = await starling(['migrations', '--api', cluster.host('host1').apiListen])
    tt.match(out.out, /committed/, 'starling migrations lists it')
  })

  const steps: Array<[string, string]> = [
    ['source', 'proposed'], ['source', 'reserved'], ['source', 'copying'], ['source', 'switching'], ['source', 'committed'],
    ['target', 'preparing'], ['target', 'copying'], ['target', 'switching'], ['target', 'committed']
  ]
  for (const [role, state] of steps) {
    await t.test(`kill -9 of the ${role} agent at ${state}: one running copy after restart`, step, async tt => {
      const from = (await running())[0]
      tt.ok(from === 'host1' || from === 'host2', `VM on ${String(from)}`)
      const to = from === 'host1' ? 'host2' : 'host1'
      if (from === undefined) return
      const victim = role === 'source' ? from : to
      await kill9(victim)
      const p = start(victim, `${role}:${state}`)
      // Listen for the exit now: the hook may fire before the CLI call below returns, or even at
      // start-up, on a record of an earlier migration that the restart moves to this state.
      const exited = exitOf(p)
      await until(`${victim} back in the views (or its exit at ${role}:${state} at start-up)`, async () => {
        if (gone(p)) return true
        const s = await cluster.status(from === victim ? to : from); const s2 = await cluster.status(victim)
        return s !== null && s2 !== null && aliveCount(s) === 3 && aliveCount(s2) === 3
      }, 60_000)
      let died = gone(p)
      if (died) tt.comment(`${victim} reached ${role}:${state} at start-up, on a record it had restored`)
      else {
        await sleep(800)
        died = await migrateUntilExit(tt, from, to, exited)
      }
      tt.ok(died, `${victim} killed itself at ${role}:${state}`)
      if (!died) await kill9(victim)
      start(victim)
      try {
        await until('no migration in flight and one running copy', settled, 60_000)
      } catch (err) {
        tt.comment(JSON.stringify({ copies: [...await copies()], h1: await migrations('host1'), h2: await migrations('host2') }))
        throw err
      }
      const now = await running()
      tt.equal(now.length, 1, `exactly one running copy, on ${now.join(',')}`)
    })
  }

  // Last, as it loses the VM: the target host "loses power" right after the switch-over (its agent
  // exits at target:switching and the test kills its QEMU, which ran the guest). The target cannot
  // prove that the guest never ran there, so the source must not resume its older paused copy
  // (R3 in migration-machine.ts); the VM is left for HA or an operator.
  await t.test('power loss of the target after the switch-over: the source never resumes its older copy', { timeout: 600_000 }, async tt => {
    // The target may commit without journaling switching (it sees its guest running first); the
    // hook then never fires: that attempt is undone (the hooked agent killed and restarted, the
    // VM settled) and the case set up again.
    let from: string | undefined
    let to = ''
    let died = false
    for (let attempt = 1; attempt <= 3 && !died; attempt++) {
      from = (await running())[0]
      tt.ok(from === 'host1' || from === 'host2', `VM on ${String(from)}`)
      if (from === undefined) return
      to = from === 'host1' ? 'host2' : 'host1'
      await kill9(to)
      const p = start(to, 'target:switching')
      const exited = exitOf(p)
      await until(`${to} back in the views (or its exit at target:switching at start-up)`, async () => { if (gone(p)) return true; const s1 = await cluster.status(from!); const s2 = await cluster.status(to); return s1 !== null && s2 !== null && aliveCount(s1) === 3 && aliveCount(s2) === 3 }, 60_000)
      died = gone(p)
      if (died) { tt.comment(`${to} reached target:switching at start-up, on a record it had restored`); break }
      await sleep(800)
      died = await migrateUntilExit(tt, from, to, exited)
      if (died) break
      tt.comment(`attempt ${attempt}: the hook at target:switching did not fire; undoing the attempt`)
      await kill9(to)
      start(to)
      await until('no migration in flight and one running copy', settled, 60_000)
    }
    tt.ok(died, `${to} killed itself at target:switching`)
    if (!died) return
    const pidFile = path.join(runDir(to), 'g1', 'qemu.pid')
    try { process.kill(Number(fs.readFileSync(pidFile, 'utf8').trim()), 'SIGKILL') } catch (err) { tt.fail(`no target QEMU to cut: ${(err as Error).message}`) }
    start(to)
    await until('no migration in flight on either end', async () => {
      for (const h of [from!, to]) {
        const ms = await migrations(h)
        if (ms.length === 0 || ms.some(m => m.state !== 'committed' && m.state !== 'aborted')) return false
      }
      return true
    }, 60_000)
    await sleep(1500) // a wrong resume would show as a growing serial log
    const c = await copies()
    tt.same([...c], [[from, 'stopped']], 'only the source copy exists, and it stays paused')
    const src = (await migrations(from!)).find(m => m.vm === 'g1')
    if (src?.state === 'committed') {
      // The target journaled switching and committed in one step (its guest already ran) and
      // its commit reached the source before the power went: the source's copy is history, and
      // it was not resumed (checked above).
      tt.comment('the target had committed before it lost power: the source committed too and did not resume its copy')
    } else {
      tt.equal(src?.state, 'aborted', 'the source record is aborted')
      tt.match(src?.reason ?? '', /not resumed/, 'because its copy is older than what may have run on the target')
      tt.match(fs.readFileSync(cluster.host(from!).logFile, 'utf8'), /NEEDS AN OPERATOR/, 'and the source says so in its log')
    }
  })
}
