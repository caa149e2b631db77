/**
 * Goal: kill -9 of an agent at a step of a libvirt move with storage ends with exactly one running
 * copy of the VM, a consistent disk behind it, and the disk images where they belong: the target
 * agent dying right after it created the images (journaled copying, before the source heard of
 * them) leaves no image behind once it is back and a retry moves the VM; the source agent dying
 * right after the commit (before it stopped its copy) sets the VM's old image aside once back.
 *
 * Method: two libvirtd daemons and two agents on loopback as in
 * migration-libvirt-storage-return.test.ts (g1 with a 64 MiB local qcow2 disk and the guest's
 * disk checker). Each crash uses the agents' exit hook (STARLING_TEST_EXIT_AT="role:state": the
 * agent SIGKILLs itself once that state is journaled), as migration-libvirt.test.ts does for
 * memory-only moves; the agent is then started again without it. Case 1: host2 restarted with
 * target:copying, `starling migrate g1 --to host2`: host2 dies, the move aborts, g1 runs on host1
 * only and its checker is intact; once host2 is back, its image directory holds nothing of g1
 * (the restarted target cannot see an incoming copy and first keeps the images, as the guest
 * might have run there; the source, aborted with the guest running, says so, and they go); then
 * the same command moves g1 to host2. Case 2: host2 restarted with source:committed,
 * `starling migrate g1 --to host1`: host2 dies after the commit; g1 runs on host1 only, heartbeat
 * and checker on; once host2 is back, its image is `g1.qcow2.departed` and used by no domain.
 * When libvirt or the guest cannot run here the file fails with the reason; it never skips.
 * Run: npm run build && npx tap test/integration/migration-libvirt-storage-crash.test.ts
 */
import tap, { type Test } from 'tap'
import { execFile, execFileSync, spawn, type ChildProcess } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import { LibvirtDriver } from '../../agent/adapters/libvirt-driver.js'
import { agentSpawnArgs } from '../../agent/cli/agent-node-args.js'
import { silentLogger } from '../../agent/lib/logger.js'
import { libvirtUnavailable, startLibvirtDaemons, type LibvirtBed, type LibvirtDaemon, TCG_PAD_EMULATOR } from '../libvirt/daemons.js'
import { aliveCount, compiledCli, LocalCluster } from './cluster-harness.js'
import { buildTestGuest, guestKernel } from '../guest/guest.js'
import { SerialMonitor } from '../../bench/lib/serial-monitor.js'
import { sleep, until as waitUntil } from '../lib/wait.js'

const MiB = 1048576
let logDump = (): string => ''
const until = async (what: string, pred: () => boolean | Promise<boolean>, timeoutMs: number): Promise<number> =>
  await waitUntil(what, pred, timeoutMs, { detail: () => logDump() })

const virsh = async (d: LibvirtDaemon, args: string[]): Promise<string | null> => await new Promise(resolve => {
  execFile('virsh', ['-c', d.uri, ...args], { encoding: 'utf8', timeout: 10_000, env: { ...process.env, LC_ALL: 'C' } },
    (err, out) => resolve(err === null ? out.trim() : null))
})

// Opt-in, loudly skipped otherwise: its two TCG guest moves with storage take 3.5-4 min, which the
// suite's 30-minute budget cannot hold beside the other libvirt files. (The guest crashes once seen
// after such moves were QEMU < 9.0 losing guest writes in TCG migrations: the domains now run
// TCG_PAD_EMULATOR, test/libvirt/qemu-tcg-pad.)
// migration-libvirt-storage.test.ts, run by default, moves g1 with its disk once.
const LONG = process.env.STARLING_LONG_TESTS === '1'
const why = LONG ? libvirtUnavailable() : null
if (!LONG) {
  tap.test('kill -9 of an agent in a move with storage', { skip: 'opt-in: STARLING_LONG_TESTS=1 runs it (3.5-4 min of TCG guest moves with storage; see the comment above)' }, () => {})
} else if (why !== null) {
  tap.fail(`cannot run the libvirt storage crash test: ${why}`)
} else {
  let guestDir = ''
  try {
    execFileSync('qemu-img', ['--version'], { stdio: 'ignore' })
    guestDir = buildTestGuest()
  } catch (err) {
    tap.fail(`qemu-img (qemu-utils) or the test guest is missing: ${(err as Error).message}`)
  }
  if (guestDir !== '') await tap.test('kill -9 of an agent in a move with storage: one running copy, the images where they belong', async t => { await run(t, guestDir) })
}

interface Rec { id: string, vm: string, role: string, state: string, reason: string, storage?: boolean, progress: { totalTimeMs: number, downtimeMs: number | null, dirtySyncCount?: number, disk?: { sentBytes: number, totalBytes: number } } | null }

async function run (t: Test, guestDir: string): Promise<void> {
  const cli = compiledCli()
  let bed: LibvirtBed
  try { bed = await startLibvirtDaemons(['a', 'b']) } catch (err) { t.fail(`libvirt daemons do not start: ${(err as Error).message}`); return }
  const [A, B] = bed.daemons as [LibvirtDaemon, LibvirtDaemon]
  const mons: SerialMonitor[] = []
  let cluster: LocalCluster | null = null
  const consoleTail = (m: SerialMonitor): string => m.lines.filter(l => !l.text.startsWith('hb ')).slice(-40).map(l => l.text).join('\n')
  t.teardown(async () => {
    for (const m of mons) { if (m.broken.length > 0) console.error(`console with a problem:\n${consoleTail(m)}\n${logDump()}`); m.close() }
    await cluster?.stop()
    await bed.stop()
  })
  cluster = await LocalCluster.create(2, { core: { reportIntervalTicks: 10, reportPullIntervalTicks: 10, pushPullIntervalTicks: 50 } })
  const c = cluster
  logDump = () => c.hosts.map(h => `--- ${h.name}\n` + (fs.existsSync(h.logFile) ? fs.readFileSync(h.logFile, 'utf8').split('\n').filter(l => !l.includes('member-state') && !l.includes('peer connected') && !l.includes('cluster report')).slice(-30).join('\n') : '')).join('\n').slice(-14000)
  const daemonOf = new Map([['host1', A], ['host2', B]])
  const imageDirOf = new Map([['host1', path.join(A.dir, 'images')], ['host2', path.join(B.dir, 'images')]])
  for (const h of c.hosts) {
    const d = daemonOf.get(h.name)!
    fs.mkdirSync(imageDirOf.get(h.name)!, { recursive: true })
    const cfg = JSON.parse(fs.readFileSync(h.configFile, 'utf8')) as Record<string, any>
    cfg.driver = { kind: 'libvirt', libvirt: { uri: d.uri, peerUri: d.uri, migrationListen: '127.0.0.1', domainType: 'auto', emulator: TCG_PAD_EMULATOR, serialDir: d.serialDir, imageDir: imageDirOf.get(h.name) } }
    cfg.sampler = { kind: 'driver', intervalMs: 500, capacity: { cpuCores: 16, cpuMipsPerCore: 1000, memMiB: 8192, netMbps: 10000 } }
    cfg.migration = { autoBalance: false, maxBandwidthBytes: 128 * MiB, bandwidthBytesPerS: 128 * MiB, leaseTicks: 300, prepareTimeoutTicks: 150, intentTimeoutTicks: 50, resendTicks: 10 }
    fs.writeFileSync(h.configFile, JSON.stringify(cfg, null, 2))
  }
  const starling = async (args: string[]): Promise<{ code: number, out: string }> => await new Promise(resolve => {
    execFile(process.execPath, [cli, ...args], { encoding: 'utf8', timeout: 150_000 }, (err, stdout, stderr) => {
      const code = err === null ? 0 : typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : 1
      resolve({ code, out: `${stdout}${stderr}` })
    })
  })
  const migrations = async (name: string): Promise<Rec[]> => {
    const r = await fetch(`http://${c.host(name).apiListen}/v1/migrations`, { signal: AbortSignal.timeout(2000) }).catch(() => null)
    if (r === null || !r.ok) return []
    return ((await r.json()) as { migrations: Rec[] }).migrations
  }
  /** Starts (or restarts) an agent, with the exit hook when `exitAt` is given. */
  const start = (name: string, exitAt?: string): ChildProcess => {
    const h = c.host(name)
    const fd = fs.openSync(h.logFile, 'a')
    const env = { ...process.env }
    delete env.STARLING_TEST_EXIT_AT
    if (exitAt !== undefined) env.STARLING_TEST_EXIT_AT = exitAt
    const p = spawn(process.execPath, agentSpawnArgs(cli, ['agent', '--config', h.configFile]), { stdio: ['ignore', fd, fd], env })
    fs.closeSync(fd)
    c.procs.set(name, p)
    return p
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
  const copies = async (): Promise<Record<string, string>> => {
    const out: Record<string, string> = {}
    for (const [h, d] of daemonOf) { const st = await virsh(d, ['domstate', 'g1']); if (st !== null) out[h] = st }
    return out
  }
  /** Restarts `name` with the exit hook at `at`, asks for the move until the hook fires, restarts it without. */
  const crash = async (tt: Test, name: string, at: string, from: string, to: string): Promise<void> => {
    await killed(name)
    const p = start(name, at)
    const exited = new Promise<boolean>(resolve => p.once('exit', () => resolve(true)))
    await until(`${name} back in both views`, bothViews, 60_000)
    await sleep(800)
    let died = false
    for (let attempt = 1; attempt <= 3 && !died; attempt++) {
      const r = await starling(['migrate', 'g1', '--to', to, '--no-wait', '--config', c.host(from).configFile])
      died = await Promise.race([exited, sleep(30_000).then(() => false)])
      if (!died) tt.comment(`attempt ${attempt}: no exit yet (${r.out.trim()})`)
    }
    tt.ok(died, `${name} killed itself at ${at}`)
    if (!died) await killed(name)
    start(name)
    await until(`${name} back in both views`, bothViews, 60_000)
  }
  const settled = async (): Promise<boolean> => {
    for (const h of ['host1', 'host2']) {
      const ms = await migrations(h)
      if (!ms.every(m => m.state === 'committed' || m.state === 'aborted')) return false
    }
    return true
  }
  const config1 = c.host('host1').configFile

  const img1 = path.join(imageDirOf.get('host1')!, 'g1', 'g1.qcow2')
  const img2 = path.join(imageDirOf.get('host2')!, 'g1', 'g1.qcow2')
  fs.mkdirSync(path.dirname(img1), { recursive: true })
  execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', img1, String(64 * MiB)])
  execFileSync('qemu-io', ['-f', 'qcow2', '-c', 'write -q -P 0xa5 40M 8M', img1])
  const creator = new LibvirtDriver({ uri: A.uri, serialDir: A.serialDir, domainType: 'auto', emulator: TCG_PAD_EMULATOR, callTimeoutMs: 30_000 }, { logger: silentLogger() })
  await creator.start({
    id: 'g1',
    vcpus: 1,
    memMiB: 256,
    extra: {
      kernel: guestKernel(guestDir),
      initrd: path.join(guestDir, 'initramfs.cpio'),
      append: 'console=ttyS0 quiet loglevel=3 panic=-1 dirtier_ws=16 dirtier_rate=0 dirtier_disk=16 dirtier_disk_rate=64',
      disks: [{ file: img1, format: 'qcow2' }]
    }
  })
  const on1 = new SerialMonitor(path.join(A.serialDir, 'g1.log'))
  mons.push(on1)
  c.startAll()
  await until('two agents alive in both views', bothViews, 60_000)
  await on1.until('heartbeats and a disk pass on host1', () => on1.beats.length > 20 && on1.diskPasses.length >= 1, 90_000)
  await until("host1's report lists g1", async () => {
    const s = await c.status('host1')
    return s?.members.find(m => m.name === 'host1')?.report?.vms.some(v => v.id === 'g1') === true
  }, 30_000)
  t.pass('g1 runs on host1 with its disk checker, both agents are up')

  // --- 1. The target dies right after it created the images.
  await t.test('kill -9 of the target agent at target:copying', async tt => {
    const t0 = performance.now()
    await crash(tt, 'host2', 'target:copying', 'host1', 'host2')
    await until('no migration in flight', settled, 60_000)
    tt.same(await copies(), { host1: 'running' }, 'one copy of g1, running on host1')
    await until("host2's image directory holds nothing of g1", () => !fs.existsSync(path.join(imageDirOf.get('host2')!, 'g1')), 60_000)
    tt.pass('the images host2 created are gone')
    const recs = (await migrations('host2')).filter(m => m.vm === 'g1').map(m => `${m.id} ${m.role} ${m.state} (${m.reason})`)
    tt.comment(`${((performance.now() - t0) / 1000).toFixed(1)} s; host2's records: ${recs.join('; ')}`)
    const beats = on1.beats.length
    await on1.until('heartbeats and a disk pass go on on host1', () => on1.beats.length > beats + 20 && on1.diskPasses.some(p => p.atMs > performance.now() - 30_000), 30_000)
    tt.same(on1.broken, [], 'the guest on host1 is intact')
    const on2 = new SerialMonitor(path.join(B.serialDir, 'g1.log'))
    mons.push(on2)
    const r = await starling(['migrate', 'g1', '--to', 'host2', '--config', config1])
    tt.equal(r.code, 0, `then the move succeeds: ${r.out.trim()}`)
    if (r.code !== 0) tt.comment(logDump())
    await on2.until('heartbeats and a disk pass on host2', () => on2.beats.length >= 5 && on2.diskPasses.length >= 1, 60_000)
    tt.same(on2.broken, [], 'the guest on host2 is intact')
    tt.match(await virsh(B, ['domblklist', 'g1']), img2, "host2's domain runs from host2's image")
    await until("host1 sets its image aside", () => fs.existsSync(img1 + '.departed') && !fs.existsSync(img1), 30_000)
  })

  // --- 2. The source dies right after the commit, before it stopped its copy.
  await t.test('kill -9 of the source agent at source:committed', async tt => {
    fs.writeFileSync(path.join(A.serialDir, 'g1.log'), '')
    const back1 = new SerialMonitor(path.join(A.serialDir, 'g1.log'))
    mons.push(back1)
    await crash(tt, 'host2', 'source:committed', 'host2', 'host1')
    await until('no migration in flight', settled, 60_000)
    tt.same(await copies(), { host1: 'running' }, 'one copy of g1, running on host1')
    await back1.until('heartbeats and two disk passes on host1', () => back1.beats.length >= 5 && back1.diskPasses.length >= 2, 90_000)
    tt.same(back1.broken, [], 'the guest on host1 is intact')
    tt.equal(back1.starts, 0, 'and did not restart')
    tt.match(await virsh(A, ['domblklist', 'g1']), img1, "host1's domain runs from the image at its old path")
    await until("host2 sets its image aside after its restart", () => fs.existsSync(img2 + '.departed') && !fs.existsSync(img2), 30_000)
    tt.pass('host2 keeps g1.qcow2.departed, used by no domain')
    await until("host1 removes its older departed copy", () => !fs.existsSync(img1 + '.departed'), 30_000)
    tt.pass("host1's older departed copy is gone")
    const rec = (await migrations('host2')).find(m => m.vm === 'g1' && m.role === 'source' && m.state === 'committed')
    tt.ok(rec !== undefined, `host2 records the move committed (${rec?.id ?? 'none'})`)
  })

  // --- The disk end to end: the untouched ranges came back as they were.
  await virsh(A, ['destroy', 'g1'])
  const read = execFileSync('qemu-io', ['-f', 'qcow2', '-c', 'read -P 0xa5 40M 8M', '-c', 'read -P 0 56M 8M', img1], { encoding: 'utf8' })
  t.notMatch(read, /Pattern verification failed|error/i, "the pattern and the zero range read back from host1's image")
}
