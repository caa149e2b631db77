/**
 * Goal: live migration negotiated by real agent processes over the mesh, with driver.kind
 * 'libvirt' and two real libvirtd daemons: after `starling migrate g1 --to host2` the guest's
 * heartbeat goes on at host2 with its memory intact, both agents record the migration as
 * committed, and exactly one copy of the domain exists (running, on host2's libvirtd).
 *
 * Method: two libvirtd daemons on this machine (test/libvirt/daemons.ts), two agents on loopback
 * (writeLocalCluster, configurations rewritten for driver.kind 'libvirt', each with its own
 * daemon's URI as `uri` and as the `peerUri` the other daemon migrates to, and its own serial
 * directory). libvirtd keeps the VMs, so the test creates guest g1 (the test guest, 256 MiB) on
 * host1's daemon before the agents start; the agent only lists it. The guest's console is a file
 * that libvirt writes; the migration moves it into host2's serial directory, where the test reads
 * the heartbeats. When libvirt cannot run here the file fails with the reason; it never skips.
 *
 * Then crash recovery, as migration-qemu.test.ts does it for the QEMU driver: for each step of the
 * protocol one agent is restarted with STARLING_TEST_EXIT_AT="role:state" (it SIGKILLs itself
 * right after journaling that state, before acting on it), a migration of g1 to the other host is
 * asked for, the agent is restarted without the hook, and once neither agent has a migration in
 * flight exactly one copy of g1 must exist across the two daemons, running (virsh domstate; a
 * paused copy does not count), with the guest's heartbeat going on from where it was (no reboot)
 * in the console file of the host that runs it. libvirtd keeps the domains (and the source
 * libvirtd runs a p2p migration itself), so they outlive an agent's death.
 * Run: npm run build && npx tap test/integration/migration-libvirt.test.ts  (about 2.5-3 minutes:
 * 45 s for the migration through the CLI, the rest for the kill steps)
 */
import tap, { type Test } from 'tap'
import { execFile, spawn, type ChildProcess } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { CAP_DOWNTIME_MS, LibvirtDriver, parseJobInfo, type JobInfo } from '../../agent/adapters/libvirt-driver.js'
import { agentSpawnArgs } from '../../agent/cli/agent-node-args.js'
import { silentLogger } from '../../agent/lib/logger.js'
import { libvirtUnavailable, startLibvirtDaemons, type LibvirtBed, type LibvirtDaemon, TCG_PAD_EMULATOR } from '../libvirt/daemons.js'
import { aliveCount, compiledCli, LocalCluster } from './cluster-harness.js'
import { buildTestGuest, guestKernel } from '../guest/guest.js'
import { sleep, until as waitUntil } from '../lib/wait.js'

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..')

/** Heartbeats ("hb N ...") and integrity reports of a serial log, timestamped as they appear. */
class SerialLog {
  seqs: Array<{ seq: number, atMs: number }> = []
  passes = 0
  failures: string[] = []
  restarted = false
  pos = 0
  private partial = ''
  private readonly timer = setInterval(() => this.read(), 3)
  constructor (readonly file: string) {}
  read (): void {
    let text: Buffer
    try { text = fs.readFileSync(this.file) } catch { return }
    if (text.length <= this.pos) return
    const at = performance.now()
    const lines = (this.partial + text.toString('latin1', this.pos)).split('\n')
    this.pos = text.length
    this.partial = lines.pop() ?? ''
    for (const raw of lines) {
      const l = raw.trim()
      const hb = /^hb (\d+) /.exec(l)
      if (hb !== null) this.seqs.push({ seq: Number(hb[1]), atMs: at })
      else if (l.startsWith('integrity ok')) this.passes++
      else if (l.includes('INTEGRITY FAIL')) this.failures.push(l)
      else if (l.startsWith('dirtier start')) this.restarted = true
    }
  }
  close (): void { clearInterval(this.timer) }
}

let logDump = (): string => ''

const until = async (what: string, pred: () => boolean | Promise<boolean>, timeoutMs: number): Promise<number> =>
  await waitUntil(what, pred, timeoutMs, { detail: () => logDump() })

/** The state of domain g1 in a daemon ('running', 'paused', 'shut off'), or null when it has none. */
async function domstate (d: LibvirtDaemon, dom: string): Promise<string | null> {
  return await new Promise(resolve => {
    execFile('virsh', ['-c', d.uri, 'domstate', dom], { encoding: 'utf8', timeout: 10_000, env: { ...process.env, LC_ALL: 'C' } },
      (err, out) => resolve(err === null ? out.trim() : null))
  })
}

/**
 * What the two daemons and console files say after a hand-over, for a failure message: g1's state
 * (with its reason) in each daemon, each console file's size against what the reader has consumed
 * and its last lines, and the tail of the target's QEMU log.
 */
async function handOverDetail (A: LibvirtDaemon, B: LibvirtDaemon, src: SerialLog, dst: SerialLog): Promise<string> {
  const state = async (d: LibvirtDaemon): Promise<string> => await new Promise(resolve => {
    execFile('virsh', ['-c', d.uri, 'domstate', '--reason', 'g1'], { encoding: 'utf8', timeout: 10_000, env: { ...process.env, LC_ALL: 'C' } },
      (err, out, errOut) => resolve(err === null ? out.trim() : `none (${errOut.trim()})`))
  })
  const file = (l: SerialLog): string => {
    let text = ''
    try { text = fs.readFileSync(l.file, 'latin1') } catch (err) { return `${l.file}: ${(err as Error).message}` }
    return `${l.file}: ${text.length} bytes, read up to ${l.pos}, ${l.seqs.length} heartbeats read; last lines: ${JSON.stringify(text.split('\n').slice(-6).join('\n'))}`
  }
  const job = await new Promise<string>(resolve => {
    execFile('virsh', ['-c', B.uri, 'domjobinfo', '--completed', '--keep-completed', '--rawstats', 'g1'], { encoding: 'utf8', timeout: 10_000, env: { ...process.env, LC_ALL: 'C' } },
      (err, out) => { const f = err === null ? parseJobInfo(out).fields : {}; resolve(`dirty syncs ${String(f.memory_iteration)}, total ${String(f.time_elapsed)} ms, downtime ${String(f.downtime)} ms`) })
  })
  let qemuLog = ''
  try { qemuLog = fs.readFileSync(B.qemuLog('g1'), 'utf8').slice(-1500) } catch { qemuLog = '(none)' }
  return `g1 on host1's libvirtd: ${await state(A)}; on host2's: ${await state(B)}; completed job on host2: ${job}\n${file(src)}\n${file(dst)}\nhost2 QEMU log tail:\n${qemuLog}`
}

/** The number of the last heartbeat in a console file, or -1 when it has none. */
function lastHeartbeat (file: string): number {
  let text: string
  try { text = fs.readFileSync(file, 'latin1') } catch { return -1 }
  let last = -1
  for (const m of text.matchAll(/(?:^|\n)\s*hb (\d+) /g)) last = Number(m[1])
  return last
}

const why = libvirtUnavailable()
if (why !== null) {
  tap.fail(`cannot run the libvirt migration test: ${why}`)
} else {
  let guestDir = ''
  try {
    guestDir = buildTestGuest()
  } catch (err) {
    tap.fail(`the test guest does not build: ${(err as Error).message}`)
  }
  if (guestDir !== '') await tap.test('migration through the agents with the libvirt driver', async t => { await run(t, guestDir) })
}

async function run (t: Test, guestDir: string): Promise<void> {
  const cli = compiledCli()
  let bed: LibvirtBed
  try {
    bed = await startLibvirtDaemons(['a', 'b'])
  } catch (err) {
    t.fail(`libvirt daemons do not start: ${(err as Error).message}`)
    return
  }
  const [A, B] = bed.daemons as [LibvirtDaemon, LibvirtDaemon]
  const logs: SerialLog[] = []
  let cluster: LocalCluster | null = null
  t.teardown(async () => {
    for (const l of logs) l.close()
    await cluster?.stop()
    await bed.stop()
  })
  cluster = await LocalCluster.create(2, { core: { reportIntervalTicks: 10, reportPullIntervalTicks: 10, pushPullIntervalTicks: 50 } })
  const c = cluster
  logDump = () => c.hosts.map(h => `--- ${h.name}\n` + (fs.existsSync(h.logFile) ? fs.readFileSync(h.logFile, 'utf8').split('\n').filter(l => !l.includes('member-state') && !l.includes('peer connected')).slice(-15).join('\n') : '')).join('\n').slice(-8000)
  const daemonOf = new Map([['host1', A], ['host2', B]])
  for (const h of c.hosts) {
    const d = daemonOf.get(h.name)!
    const cfg = JSON.parse(fs.readFileSync(h.configFile, 'utf8')) as Record<string, any>
    cfg.driver = { kind: 'libvirt', libvirt: { uri: d.uri, peerUri: d.uri, migrationListen: '127.0.0.1', domainType: 'auto', emulator: TCG_PAD_EMULATOR, serialDir: d.serialDir } }
    cfg.sampler = { kind: 'driver', intervalMs: 500, capacity: { cpuCores: 16, cpuMipsPerCore: 1000, memMiB: 8192, netMbps: 10000 } }
    cfg.migration = { autoBalance: false, maxBandwidthBytes: 128 * 1048576, bandwidthBytesPerS: 128 * 1048576, leaseTicks: 60, prepareTimeoutTicks: 150, intentTimeoutTicks: 50, resendTicks: 10 }
    fs.writeFileSync(h.configFile, JSON.stringify(cfg, null, 2))
  }
  const starling = async (args: string[]): Promise<{ code: number, out: string }> => await new Promise(resolve => {
    execFile(process.execPath, [cli, ...args], { encoding: 'utf8', timeout: 150_000 }, (err, stdout, stderr) => {
      const code = err === null ? 0 : typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : 1
      resolve({ code, out: `${stdout}${stderr}` })
    })
  })
  type Rec = { id: string, vm: string, role: string, state: string, reason: string, progress: { totalTimeMs: number, downtimeMs: number | null } | null }
  /** An agent's migration records, or null when its API does not answer. */
  const answer = async (name: string): Promise<Rec[] | null> => {
    const r = await fetch(`http://${c.host(name).apiListen}/v1/migrations`, { signal: AbortSignal.timeout(2000) }).catch(() => null)
    if (r === null || !r.ok) return null
    return ((await r.json()) as { migrations: Rec[] }).migrations
  }
  const migrations = async (name: string): Promise<Rec[]> => (await answer(name)) ?? []

  // libvirtd keeps the VMs: g1 exists on host1's daemon before any agent runs.
  const creator = new LibvirtDriver({ uri: A.uri, serialDir: A.serialDir, domainType: 'auto', emulator: TCG_PAD_EMULATOR, callTimeoutMs: 30_000 }, { logger: silentLogger() })
  await creator.start({
    id: 'g1',
    vcpus: 1,
    memMiB: 256,
    extra: { kernel: guestKernel(guestDir), initrd: path.join(guestDir, 'initramfs.cpio'), append: 'console=ttyS0 quiet loglevel=3 panic=-1 dirtier_ws=128 dirtier_rate=0' }
  })
  t.comment(`g1 created on ${A.uri} as a ${creator.domainType} domain (${creator.domainTypeReason})`)
  const src = new SerialLog(path.join(A.serialDir, 'g1.log'))
  logs.push(src)

  c.startAll()
  await until('two agents alive in both views', async () => {
    for (const h of c.hosts) { const s = await c.status(h.name); if (s === null || aliveCount(s) !== 2) return false }
    return true
  }, 60_000)
  await until('guest heartbeats and an integrity pass on host1', () => src.seqs.length > 20 && src.passes >= 1, 90_000)
  t.pass('the guest runs on host1, both agents are up')
  await sleep(1500) // a few samples: host1 reports g1

  // Read host2's console file from the start: the heartbeat gap is timed as lines appear.
  const dst = new SerialLog(path.join(B.serialDir, 'g1.log'))
  logs.push(dst)
  const t0 = performance.now()
  const r = await starling(['migrate', 'g1', '--to', 'host2', '--config', c.host('host1').configFile])
  const wallMs = performance.now() - t0
  t.equal(r.code, 0, `starling migrate: ${r.out.trim()}`)
  await waitUntil('heartbeats on host2', () => dst.seqs.length >= 5, 30_000, { detail: async () => await handOverDetail(A, B, src, dst) + '\n' + logDump() })
  const last = src.seqs[src.seqs.length - 1]!
  const first = dst.seqs[0]!
  t.ok(first.seq > last.seq && first.seq <= last.seq + 3, `the heartbeat continues on host2 (host1 last ${last.seq}, host2 first ${first.seq})`)
  t.notOk(dst.restarted, 'the guest did not restart on host2')
  const passes = dst.passes
  await until('an integrity pass on host2', () => dst.passes > passes, 30_000)
  t.same(dst.failures, [], 'no corrupted page on host2')
  t.same(src.failures, [], 'no corrupted page on host1')
  const n = dst.seqs.length
  await sleep(1000)
  t.ok(dst.seqs.length > n + 20, 'the heartbeat goes on on host2')

  await until('one copy of g1, running on host2', async () => (await domstate(B, 'g1')) === 'running' && (await domstate(A, 'g1')) === null, 20_000)
  t.equal(await domstate(B, 'g1'), 'running', "host2's libvirtd runs g1")
  t.equal(await domstate(A, 'g1'), null, "host1's libvirtd has no g1 any more")
  await until('the migration committed on both agents', async () =>
    (await migrations('host1')).some(m => m.vm === 'g1' && m.role === 'source' && m.state === 'committed') &&
    (await migrations('host2')).some(m => m.vm === 'g1' && m.role === 'target' && m.state === 'committed'), 20_000)
  t.pass('host1 (source) and host2 (target) both record it committed')
  const rec = (await migrations('host1')).find(m => m.vm === 'g1' && m.state === 'committed')
  const gap = first.atMs - last.atMs
  const downtime = rec?.progress?.downtimeMs ?? null
  t.comment(`CLI wall time ${wallMs.toFixed(0)} ms; libvirt total ${String(rec?.progress?.totalTimeMs)} ms, downtime ${String(downtime)} ms; heartbeat gap ${gap.toFixed(0)} ms`)
  // The pause: usually well under a second. On a starved machine the copy may reach the dirty-sync
  // cap, where the driver raises the downtime limit to CAP_DOWNTIME_MS so that QEMU completes (a
  // clean-clone run on a loaded machine: libvirt's downtime 6594 ms, the guest's gap 6621 ms);
  // QEMU overshoots its limit when its bandwidth estimate, taken before the stop, is too high.
  // So: the guest's pause is libvirt's own downtime, and that stays within the cap's limit plus 2 s.
  if (downtime !== null) t.ok(Math.abs(gap - downtime) <= 1000, `the guest's pause (${gap.toFixed(0)} ms) is libvirt's downtime (${downtime} ms)`)
  else t.comment('libvirt reported no downtime (a post-copy move keeps none): the pause is checked against the bound only')
  t.ok(gap < CAP_DOWNTIME_MS + 2000, `the guest paused ${gap.toFixed(0)} ms at the hand-over (< ${(CAP_DOWNTIME_MS + 2000) / 1000} s: the driver's limit at the dirty-sync cap and QEMU's overshoot)`)
  await until("g1 in host2's report, as host1 sees it", async () => {
    const s = await c.status('host1')
    const vmsOf = (name: string): string[] => s?.members.find(m => m.name === name)?.report?.vms.map(v => v.id) ?? []
    return vmsOf('host2').includes('g1') && !vmsOf('host1').includes('g1')
  }, 30_000)
  t.pass("the cluster view places g1 on host2 (host2's samples list libvirt's domain)")
  const out = await starling(['migrations', '--api', c.host('host1').apiListen])
  t.match(out.out, /committed/, 'starling migrations lists it')

  // --- Crash recovery: kill -9 of one agent at each step of the protocol.
  /** Starts (or restarts) an agent, with the exit hook when `exitAt` is given. */
  const start = (name: string, exitAt?: string): ChildProcess => {
    const h = c.host(name)
    const fd = fs.openSync(h.logFile, 'a')
    const env = { ...process.env }
    delete env.STARLING_TEST_EXIT_AT
    if (exitAt !== undefined) env.STARLING_TEST_EXIT_AT = exitAt
    const p = spawn(process.execPath, agentSpawnArgs(cli, ['agent', '--config', h.configFile]), { stdio: ['ignore', fd, fd], env })
    fs.closeSync(fd)
    c.procs.set(name, p) // cluster.stop() ends it
    return p
  }
  const up = (name: string): boolean => { const p = c.procs.get(name); return p !== undefined && p.exitCode === null && p.signalCode === null }
  /** g1 in each daemon: host -> 'running', 'paused', 'shut off'... (hosts whose daemon has no g1 are left out). */
  const copies = async (): Promise<Map<string, string>> => {
    const out = new Map<string, string>()
    for (const [h, d] of daemonOf) { const st = await domstate(d, 'g1'); if (st !== null) out.set(h, st) }
    return out
  }
  const running = async (): Promise<string[]> => [...(await copies())].filter(([, st]) => st === 'running').map(([h]) => h)
  const terminal = (m: Rec): boolean => m.state === 'committed' || m.state === 'aborted'
  /** What each agent's migrations list and each daemon's g1 say, for a failure message. */
  const report = async (): Promise<string> => {
    const recs = async (h: string): Promise<unknown> => !up(h)
      ? 'agent not running'
      : (await answer(h))?.map(m => `${m.id} ${m.role} ${m.state}${m.reason !== '' ? ` (${m.reason})` : ''}`) ?? 'API does not answer'
    return JSON.stringify({ host1: await recs('host1'), host2: await recs('host2'), domains: Object.fromEntries(await copies()) }, null, 1)
  }
  /**
   * Asks for the migration until the agent with the exit hook dies. Right after a restart the
   * source may refuse or abort it (its view of the target still filling in): the answer is
   * printed and the request repeated, up to 3 times, as migration-qemu.test.ts does.
   */
  const migrateUntilExit = async (tt: Test, from: string, to: string, exited: Promise<boolean>): Promise<boolean> => {
    for (let attempt = 1; attempt <= 3; attempt++) {
      const r = await starling(['migrate', 'g1', '--to', to, '--no-wait', '--config', c.host(from).configFile])
      if (await Promise.race([exited, sleep(15_000).then(() => false)])) return true
      const last = (await migrations(from)).find(m => m.vm === 'g1')
      tt.comment(`attempt ${attempt}: no exit yet; migrate said ${JSON.stringify(r.out.trim())}; newest record on ${from}: ${JSON.stringify(last === undefined ? null : { id: last.id, role: last.role, state: last.state, reason: last.reason })}`)
      if (last !== undefined && last.state !== 'aborted') break // in flight: waiting longer is all we can do
    }
    return await Promise.race([exited, sleep(15_000).then(() => false)])
  }
  /**
   * Both agents answer, neither has a migration in flight, the source lists the step's migration
   * (journaled before any kill point; `seen` holds the ids from before the step), and g1 has one
   * copy, running. An agent whose API is not up yet has not restored its journal: it does not
   * count as having nothing in flight.
   */
  const settled = async (source: string, seen: Set<string>): Promise<boolean> => {
    for (const h of ['host1', 'host2']) {
      const ms = up(h) ? await answer(h) : null
      if (ms === null || !ms.every(terminal)) return false
      if (h === source && !ms.some(m => m.role === 'source' && !seen.has(m.id))) return false
    }
    const now = await copies()
    return now.size === 1 && [...now.values()][0] === 'running'
  }

  const killed = async (name: string): Promise<void> => {
    const old = c.procs.get(name)
    if (old === undefined || old.exitCode !== null || old.signalCode !== null) return
    const gone = new Promise<void>(resolve => old.once('exit', () => resolve()))
    old.kill('SIGKILL')
    await gone
  }
  const bothViews = async (): Promise<boolean> => {
    for (const h of ['host1', 'host2']) { const s = await c.status(h); if (s === null || aliveCount(s) !== 2) return false }
    return true
  }

  /**
   * One crash: g1 is asked to move to the other host and the `role` agent dies, either through the
   * exit hook at `at` ('role:state') or, with at = 'mid-copy', by kill -9 from the test once the
   * source reports the copy under way (libvirtd is then migrating: the source's `virsh migrate`
   * outlives its agent and the restarted agent has no record of that process). The agent is
   * restarted without the hook; then exactly one running copy, and the heartbeat goes on.
   */
  const crashStep = async (tt: Test, role: 'source' | 'target', at: string): Promise<void> => {
    const t0 = performance.now()
    const where = await running()
    const from = where[0]
    if (where.length !== 1 || from === undefined) {
      tt.fail(`g1 must run on exactly one host before the step, runs on [${where.join(',')}]: ${await report()}`)
      return
    }
    const to = from === 'host1' ? 'host2' : 'host1'
    const hbBefore = lastHeartbeat(path.join(daemonOf.get(from)!.serialDir, 'g1.log'))
    const victim = role === 'source' ? from : to
    const seen = new Set([...await migrations('host1'), ...await migrations('host2')].map(m => m.id))
    let lift: (() => Promise<void>) | null = null
    if (at === 'mid-copy') {
      // Slow the copy down to 1 MiB/s, so that the restarted agent finds libvirtd still copying
      // (at full speed it ends before the agent is back). Only once QEMU's transfer has begun:
      // libvirt sets the migration's own bandwidth when it starts it. Zero pages cost almost
      // nothing on the wire, so a milder cap would hardly slow it; and when the cap lands after
      // the guest's written pages went (a loaded machine: the cap came 2.1 s in, at 47 of 257
      // MiB), the rest is zero pages and the copy completes anyway. So g1 writes a 128 MiB working
      // set (with 32 MiB, a quiet machine's clean-clone run sent all of it before the cap, 6 times
      // in a row): half of its memory is data, which at 1 MiB/s takes long enough. An attempt that
      // still ends too soon does not test what it says: g1 is moved back and the case is tried
      // again (6 times at most).
      const src = daemonOf.get(from)!
      const virsh = async (args: string[]): Promise<string | null> => await new Promise(resolve => {
        execFile('virsh', ['-c', src.uri, ...args], { encoding: 'utf8', timeout: 5000, env: { ...process.env, LC_ALL: 'C' } }, (err, o) => resolve(err === null ? o : null))
      })
      for (let attempt = 1; ; attempt++) {
        const r = await starling(['migrate', 'g1', '--to', to, '--no-wait', '--config', c.host(from).configFile])
        try {
          await until('the source copying', async () => (await migrations(from)).some(m => !seen.has(m.id) && m.role === 'source' && m.state === 'copying'), 20_000)
        } catch (err) {
          tt.fail(`no copy under way (migrate said ${JSON.stringify(r.out.trim())}): ${(err as Error).message}\n${await report()}`)
          return
        }
        let job: JobInfo | null = null
        let slowed = true
        try {
          await until('the copy under way in libvirt, then slowed', async () => {
            const o = await virsh(['domjobinfo', '--rawstats', 'g1'])
            job = o === null ? null : parseJobInfo(o)
            if (job === null || Number(job.fields.memory_total ?? 0) === 0) return false
            return (await virsh(['migrate-setspeed', 'g1', '1'])) !== null
          }, 10_000)
        } catch (err) {
          // A quick copy (a quiet machine) can end before libvirt's job was seen: the same case
          // as a cap that came too late, tried again below; anything else is a failure.
          if ((await copies()).get(to) !== 'running') {
            tt.fail(`cannot slow the copy: ${(err as Error).message}\n${await report()}`)
            return
          }
          slowed = false
        }
        const f = (job as JobInfo | null)?.fields ?? {}
        if (slowed) tt.comment(`attempt ${attempt}: copy slowed to 1 MiB/s after ${String(f.time_elapsed)} ms, ${(Number(f.memory_processed ?? 0) / 1048576).toFixed(0)} of ${(Number(f.memory_total ?? 0) / 1048576).toFixed(0)} MiB processed`)
        if (slowed) await sleep(1000)
        const after = slowed ? await virsh(['domjobinfo', '--rawstats', 'g1']) : null
        const still = after !== null && parseJobInfo(after) !== null && Number(parseJobInfo(after)?.fields.memory_total ?? 0) > 0 && (await copies()).get(from) === 'running'
        if (still) {
          lift = async () => { await virsh(['migrate-setspeed', 'g1', '100000']) }
          await killed(victim)
          tt.comment(`${victim} killed ${((performance.now() - t0) / 1000).toFixed(1)} s into the step; g1 then: ${JSON.stringify(Object.fromEntries(await copies()))}`)
          break
        }
        tt.comment(`attempt ${attempt}: the copy completed before the cap held (g1: ${JSON.stringify(Object.fromEntries(await copies()))}); moving g1 back`)
        if (attempt === 6) { tt.fail(`the copy completed before it could be slowed, ${attempt} times: the case could not be set up\n${await report()}`); return }
        try {
          await until('the migration to end', async () => await settled(from, seen), 60_000)
          const back = await starling(['migrate', 'g1', '--to', from, '--config', c.host(to).configFile])
          await until(`g1 back on ${from}`, async () => { const on = await running(); return on.length === 1 && on[0] === from }, 60_000)
          tt.comment(`g1 moved back to ${from} (${back.out.trim()})`)
        } catch (err) {
          tt.fail(`could not move g1 back to ${from}: ${(err as Error).message}\n${await report()}`)
          return
        }
        for (const m of [...await migrations('host1'), ...await migrations('host2')]) seen.add(m.id)
      }
    } else {
      await killed(victim)
      const p = start(victim, at)
      // Listen for the exit now: the hook may fire before the CLI call below returns.
      const exited = new Promise<boolean>(resolve => p.once('exit', () => resolve(true)))
      await until(`${victim} back in both views`, bothViews, 30_000)
      await sleep(800)
      const died = await migrateUntilExit(tt, from, to, exited)
      tt.ok(died, `${victim} killed itself at ${at}`)
      if (!died) tt.comment(await report())
    }
    start(victim)
    if (lift !== null) {
      // Once the restarted agent is back and has found libvirtd copying, the copy may go at full
      // speed again: at 1 MiB/s the 128 MiB working set would keep it going for minutes.
      await until(`${victim} back in both views`, bothViews, 30_000).catch(() => {})
      await lift()
    }
    try {
      await until('no migration in flight and one running copy of g1', async () => await settled(from, seen), 60_000)
    } catch (err) {
      tt.comment(`not settled after 60 s: ${await report()}`)
      tt.fail((err as Error).message)
      return
    }
    const now = await copies()
    const on = await running()
    tt.equal(on.length, 1, `exactly one running copy, on ${on.join(',')}`)
    tt.equal(now.size, 1, `no other copy of g1 in either daemon (${JSON.stringify(Object.fromEntries(now))})`)
    const host = on[0]!
    const file = path.join(daemonOf.get(host)!.serialDir, 'g1.log')
    const hb1 = lastHeartbeat(file)
    await sleep(1000)
    const hb2 = lastHeartbeat(file)
    tt.ok(hb2 > hb1 && hb1 > hbBefore, `the heartbeat goes on on ${host} without a reboot (${hbBefore} on ${from} before the step; ${hb1}, then ${hb2} a second later)`)
    if (at === 'mid-copy') {
      // Slowed down, the copy is under way at the restart. Usually the migration then aborts and
      // g1 stays on the source. Under TCG the dirty-sync cap can make libvirt complete the copy
      // in the window (the driver raises the downtime limit before the last round allowed, and
      // the cancel that the abort asks for comes after the completion): then the record says
      // committed and g1 runs, unbroken, on the target. Either way one copy runs (above), and the
      // record agrees with where it runs.
      const rec = (await migrations(from)).find(m => !seen.has(m.id) && m.role === 'source')
      const outcome = rec?.state === 'committed' ? to : from
      tt.ok(rec?.state === 'aborted' || rec?.state === 'committed', `the copy was under way at the restart: the migration ${rec?.state ?? 'has no record'} (${rec?.reason ?? ''})`)
      tt.equal(host, outcome, `g1 runs on ${outcome}, where the source's record says it is`)
    }
    const step = async (h: string): Promise<string> => (await migrations(h)).filter(m => !seen.has(m.id)).map(m => `${m.id} ${m.role} ${m.state}${m.reason !== '' ? ` (${m.reason})` : ''}`).join(', ') || 'none'
    tt.comment(`${((performance.now() - t0) / 1000).toFixed(1)} s; g1 on ${host}; this step's records: ${from} ${await step(from)}; ${to} ${await step(to)}`)
    if (!tt.passing()) tt.comment(await report())
    await until('both agents in both views', bothViews, 30_000) // the next step starts from a whole cluster
  }

  // Every step the QEMU test covers. target:reserved is journaled in the same batch as
  // target:preparing (the hook fires on the first), so it is the same crash.
  const steps: Array<['source' | 'target', string]> = [
    ['source', 'proposed'], ['source', 'reserved'], ['source', 'copying'], ['source', 'switching'], ['source', 'committed'],
    ['target', 'preparing'], ['target', 'copying'], ['target', 'switching'], ['target', 'committed']
  ]
  for (const [role, state] of steps) {
    await t.test(`kill -9 of the ${role} agent at ${state}: one running copy after restart, heartbeat goes on`, async tt => { await crashStep(tt, role, `${role}:${state}`) })
  }
  // The hook never fires while libvirtd migrates (copying is journaled before virsh runs): these
  // two kill the agent in the middle of a copy slowed down to outlast the restart. The restarted
  // source finds libvirt's job and cancels it (libvirt then keeps no record of the job: the
  // source's progress reads 'none', which the migration machine resolves by a query; before that
  // it polled for ever and both records stayed 'copying'). The restarted target finds its incoming
  // domain under libvirt's job and leaves it to libvirt (a destroy could land after libvirtd's
  // Finish started the guest here: a clean-clone run lost g1 that way); its first list() of the
  // domains used to wait for the incoming migration's job and stop the start-up: domstats
  // --nowait. g1 ends on one host, the source or the target.
  for (const role of ['source', 'target'] as const) {
    await t.test(`kill -9 of the ${role} agent while libvirtd copies: one running copy after restart, heartbeat goes on`, async tt => { await crashStep(tt, role, 'mid-copy') })
  }
}
