/**
 * Goal: a libvirt move with storage that fails part way leaves no image behind at the target, and
 * a retry of the same move succeeds; the VM then comes back to the host it left (its old image
 * there was set aside at the commit, so the path is free), with its disk intact end to end.
 *
 * Method: two libvirtd daemons (test/libvirt/daemons.ts) and two agents on loopback, as in
 * migration-libvirt-storage.test.ts, each with its own driver.libvirt.imageDir; g1's 64 MiB qcow2
 * disk lies where host1 keeps its images (`<imageDir>/g1/g1.qcow2`, the path a return creates),
 * with a pattern at 40-48 MiB, and the guest's disk checker rewrites and verifies 4 KiB blocks of
 * the first 16 MiB throughout. host2's image directory is a 72 MiB tmpfs (mounted before the daemons
 * start: each has a private copy of the mount table): the 64 MiB disk is
 * admitted, and as soon as host2 has created the (empty) target image the test fills the tmpfs
 * but for 4 MiB, so the copy fails part way (ENOSPC at the target; the disk holds about 24 MiB).
 * Then: the move is reported aborted, g1 runs on host1 with its disk checker intact, host2 has
 * deleted the image it created (the tmpfs holds only the filler). The filler goes and the same
 * command moves g1 to host2 (the same image path: before the cleanup it was refused as "already
 * exists"). host1's image is then `g1.qcow2.departed`. Then `starling migrate g1 --to host1`: the
 * heartbeat goes on at host1, two full disk passes there, g1 runs from `<imageDir>/g1/g1.qcow2`,
 * host1 removed its `.departed` copy and host2 set its own aside. Finally, g1 stopped, the pattern
 * and a never-written range read back from host1's image and 16-64 MiB of it hash as host2's
 * departed copy. The bytes libvirt copied (disk_processed) are reported per move, measured.
 * When libvirt or the guest cannot run here the file fails with the reason; it never skips.
 * Run: npm run build && npx tap test/integration/migration-libvirt-storage-return.test.ts
 */
import tap, { type Test } from 'tap'
import { execFile, execFileSync } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { LibvirtDriver } from '../../agent/adapters/libvirt-driver.js'
import { silentLogger } from '../../agent/lib/logger.js'
import { libvirtUnavailable, startLibvirtDaemons, type LibvirtBed, type LibvirtDaemon, TCG_PAD_EMULATOR } from '../libvirt/daemons.js'
import { aliveCount, compiledCli, LocalCluster } from './cluster-harness.js'
import { buildTestGuest, guestKernel } from '../guest/guest.js'
import { SerialMonitor } from '../../bench/lib/serial-monitor.js'
import { until as waitUntil } from '../lib/wait.js'

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
  tap.test('a failed move with storage cleans up, and the VM comes back', { skip: 'opt-in: STARLING_LONG_TESTS=1 runs it (3.5-4 min of TCG guest moves with storage; see the comment above)' }, () => {})
} else if (why !== null) {
  tap.fail(`cannot run the libvirt storage return test: ${why}`)
} else {
  let guestDir = ''
  try {
    execFileSync('qemu-img', ['--version'], { stdio: 'ignore' })
    guestDir = buildTestGuest()
  } catch (err) {
    tap.fail(`qemu-img (qemu-utils) or the test guest is missing: ${(err as Error).message}`)
  }
  if (guestDir !== '') await tap.test('a failed copy leaves nothing behind, a retry succeeds, and the VM comes back', async t => { await run(t, guestDir) })
}

interface Rec { id: string, vm: string, role: string, state: string, reason: string, storage?: boolean, progress: { totalTimeMs: number, downtimeMs: number | null, dirtySyncCount?: number, disk?: { sentBytes: number, totalBytes: number } } | null }

async function run (t: Test, guestDir: string): Promise<void> {
  const cli = compiledCli()
  // host2's image directory: a 72 MiB tmpfs, mounted before the daemons start (each runs in a mount
  // namespace of its own, a private copy: a mount made later would be invisible to libvirtd).
  const dir2 = fs.mkdtempSync(path.join(os.tmpdir(), 'lvret-images2-'))
  execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=72m', 'tmpfs', dir2])
  t.teardown(() => {
    try { execFileSync('umount', [dir2]) } catch {}
    fs.rmSync(dir2, { recursive: true, force: true })
  })
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
  logDump = () => c.hosts.map(h => `--- ${h.name}\n` + (fs.existsSync(h.logFile) ? fs.readFileSync(h.logFile, 'utf8').split('\n').filter(l => !l.includes('member-state') && !l.includes('peer connected') && !l.includes('cluster report')).slice(-25).join('\n') : '')).join('\n').slice(-12000)
  const daemonOf = new Map([['host1', A], ['host2', B]])
  const imageDirOf = new Map([['host1', path.join(A.dir, 'images')], ['host2', dir2]])
  for (const h of c.hosts) {
    const d = daemonOf.get(h.name)!
    fs.mkdirSync(imageDirOf.get(h.name)!, { recursive: true })
    const cfg = JSON.parse(fs.readFileSync(h.configFile, 'utf8')) as Record<string, any>
    cfg.driver = { kind: 'libvirt', libvirt: { uri: d.uri, peerUri: d.uri, migrationListen: '127.0.0.1', domainType: 'auto', emulator: TCG_PAD_EMULATOR, serialDir: d.serialDir, imageDir: imageDirOf.get(h.name) } }
    cfg.sampler = { kind: 'driver', intervalMs: 500, capacity: { cpuCores: 16, cpuMipsPerCore: 1000, memMiB: 8192, netMbps: 10000 } }
    // A long lease: under load libvirt takes seconds to start the job, and this case is about the disk.
    cfg.migration = { autoBalance: false, maxBandwidthBytes: 128 * MiB, bandwidthBytesPerS: 128 * MiB, leaseTicks: 300, prepareTimeoutTicks: 300, intentTimeoutTicks: 50, resendTicks: 10 }
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
  const config1 = c.host('host1').configFile

  // g1's disk, where host1 keeps its images: the path a return to host1 creates again.
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
  t.comment(`g1 created on ${A.uri} as a ${creator.domainType} domain (${creator.domainTypeReason})`)
  const on1 = new SerialMonitor(path.join(A.serialDir, 'g1.log'))
  mons.push(on1)

  c.startAll()
  await until('two agents alive in both views', async () => {
    for (const h of c.hosts) { const s = await c.status(h.name); if (s === null || aliveCount(s) !== 2) return false }
    return true
  }, 60_000)
  await on1.until('heartbeats and a disk pass on host1', () => on1.beats.length > 20 && on1.diskPasses.length >= 1, 90_000)
  await until("host1's report lists g1", async () => {
    const s = await c.status('host1')
    return s?.members.find(m => m.name === 'host1')?.report?.vms.some(v => v.id === 'g1') === true
  }, 30_000)
  t.pass('g1 runs on host1 with its disk checker, both agents are up')

  // --- 1. A copy that fails part way: host2's image directory fills up under it.
  const filler = path.join(dir2, 'filler')
  let filled = ''
  const fill = (async () => {
    const end = performance.now() + 120_000
    while (!fs.existsSync(img2) && performance.now() < end) await new Promise(resolve => setTimeout(resolve, 5))
    if (!fs.existsSync(img2)) return
    const st = fs.statfsSync(dir2)
    const free = Number(st.bavail) * Number(st.bsize)
    const fillBytes = free - 4 * MiB
    execFileSync('fallocate', ['-l', String(fillBytes), filler])
    filled = `${(fillBytes / MiB).toFixed(1)} MiB of ${(free / MiB).toFixed(1)} MiB free filled ${fs.existsSync(img2) ? 'once the target image existed' : 'too late'}`
  })()
  const failed = await starling(['migrate', 'g1', '--to', 'host2', '--config', config1])
  await fill
  t.comment(filled)
  t.comment(logDump())
  t.not(failed.code, 0, `the move whose copy runs out of space fails: ${failed.out.trim().split('\n').at(-1) ?? ''}`)
  const rec1 = (await migrations('host1')).find(m => m.vm === 'g1' && m.role === 'source')
  t.equal(rec1?.state, 'aborted', `host1 records it aborted (${rec1?.reason ?? ''})`)
  t.equal(await virsh(A, ['domstate', 'g1']), 'running', 'g1 still runs on host1')
  await until('host2 deletes the image it created', () => !fs.existsSync(path.join(dir2, 'g1')), 30_000)
  t.same(fs.readdirSync(dir2), ['filler'], "host2's image directory holds nothing of g1 (the filler only)")
  await until('host2 records it aborted', async () => (await migrations('host2')).some(m => m.vm === 'g1' && m.role === 'target' && m.state === 'aborted'), 20_000)
  const beats = on1.beats.length
  await on1.until('heartbeats and a disk pass go on on host1', () => on1.beats.length > beats + 20 && on1.diskPasses.some(p => p.atMs > performance.now() - 30_000), 30_000)
  t.same(on1.broken, [], 'the guest on host1 is intact')

  // --- 2. The retry, on the same image path at host2.
  fs.rmSync(filler)
  const on2 = new SerialMonitor(path.join(B.serialDir, 'g1.log'))
  mons.push(on2)
  let t0 = performance.now()
  const there = await starling(['migrate', 'g1', '--to', 'host2', '--config', config1])
  const wall2 = performance.now() - t0
  t.equal(there.code, 0, `the retry moves g1 to host2: ${there.out.trim()}`)
  if (there.code !== 0) t.comment(logDump())
  const syncs = async (name: string): Promise<string> => JSON.stringify((await migrations(name)).filter(m => m.vm === 'g1').map(m => [m.id, m.role, m.state, m.progress?.dirtySyncCount, m.progress?.downtimeMs]))
  t.comment(`records after the retry: ${await syncs('host1')}`)
  await on2.until('heartbeats on host2', () => on2.beats.length >= 5, 30_000)
  const last1 = on1.lastBeat()!
  const first2 = on2.beats[0]!
  t.ok(first2.seq > last1.seq && first2.seq <= last1.seq + 3, `the heartbeat continues on host2 (host1 last ${last1.seq}, host2 first ${first2.seq})`)
  t.match(await virsh(B, ['domblklist', 'g1']), img2, "host2's domain runs from host2's image")
  await until('the move to host2 committed on both agents, and host1 set its image aside', async () =>
    fs.existsSync(img1 + '.departed') &&
    (await migrations('host2')).some(m => m.vm === 'g1' && m.role === 'target' && m.state === 'committed'), 30_000)
  t.notOk(fs.existsSync(img1), "host1's image path is free")
  const t1 = performance.now()
  await on2.until('a full disk pass on host2', () => on2.diskPasses.some(p => p.atMs > t1), 60_000)
  const rec2 = (await migrations('host1')).find(m => m.vm === 'g1' && m.role === 'source' && m.state === 'committed')

  // --- 3. Back to host1.
  fs.writeFileSync(path.join(A.serialDir, 'g1.log'), '') // host1's old console: the monitor below reads the return's alone
  const back1 = new SerialMonitor(path.join(A.serialDir, 'g1.log'))
  mons.push(back1)
  t0 = performance.now()
  const back = await starling(['migrate', 'g1', '--to', 'host1', '--config', c.host('host2').configFile])
  const wall3 = performance.now() - t0
  t.equal(back.code, 0, `g1 moves back to host1: ${back.out.trim()}`)
  if (back.code !== 0) t.comment(logDump())
  t.comment(`records after the return: ${await syncs('host2')}`)
  await back1.until('heartbeats on host1 again', () => back1.beats.length >= 5, 30_000)
  const last2 = on2.lastBeat()!
  const first1 = back1.beats[0]!
  t.ok(first1.seq > last2.seq && first1.seq <= last2.seq + 3, `the heartbeat continues on host1 (host2 last ${last2.seq}, host1 first ${first1.seq})`)
  t.equal(back1.starts, 0, 'the guest did not restart on host1')
  const t2 = performance.now()
  await back1.until('two full disk passes on host1', () => back1.diskPasses.filter(p => p.atMs > t2).length >= 2, 60_000)
  t.same([...on1.broken, ...on2.broken, ...back1.broken], [], 'no bad block, page or crash on either host: every block holds what the guest last wrote')
  t.match(await virsh(A, ['domblklist', 'g1']), img1, "host1's domain runs from the image at its old path")
  t.equal(await virsh(B, ['domstate', 'g1']), null, "host2's libvirtd has no g1 any more")
  await until('the return committed on both agents; host2 set its image aside, host1 removed its older copy', async () =>
    fs.existsSync(img2 + '.departed') && !fs.existsSync(img2) && !fs.existsSync(img1 + '.departed') &&
    (await migrations('host2')).some(m => m.vm === 'g1' && m.role === 'source' && m.state === 'committed') &&
    (await migrations('host1')).some(m => m.vm === 'g1' && m.role === 'target' && m.state === 'committed'), 30_000)
  t.pass("host2 keeps g1.qcow2.departed, host1's older departed copy is gone")
  const rec3 = (await migrations('host2')).find(m => m.vm === 'g1' && m.role === 'source' && m.state === 'committed')
  t.equal(rec3?.storage, true, 'the return is a move with storage')
  const disk = (r: Rec | undefined): string => `${((r?.progress?.disk?.sentBytes ?? 0) / MiB).toFixed(1)} of ${((r?.progress?.disk?.totalBytes ?? 0) / MiB).toFixed(1)} MiB`
  t.comment(`there (retry): CLI ${wall2.toFixed(0)} ms, libvirt ${String(rec2?.progress?.totalTimeMs)} ms, downtime ${String(rec2?.progress?.downtimeMs)} ms, disk ${disk(rec2)}; heartbeat gap ${(first2.atMs - last1.atMs).toFixed(0)} ms`)
  t.comment(`back: CLI ${wall3.toFixed(0)} ms, libvirt ${String(rec3?.progress?.totalTimeMs)} ms, downtime ${String(rec3?.progress?.downtimeMs)} ms, disk ${disk(rec3)}; heartbeat gap ${(first1.atMs - last2.atMs).toFixed(0)} ms`)
  t.ok((rec3?.progress?.disk?.sentBytes ?? 0) > 0, 'the disk bytes of the return are measured (libvirt copies the disk whole)')

  // --- The disk end to end: the untouched ranges came back as they were.
  await virsh(A, ['destroy', 'g1'])
  const read = execFileSync('qemu-io', ['-f', 'qcow2', '-c', 'read -P 0xa5 40M 8M', '-c', 'read -P 0 56M 8M', img1], { encoding: 'utf8' })
  t.notMatch(read, /Pattern verification failed|error/i, "the pattern and the zero range read back from host1's image after two moves")
  const digest = (image: string): string => {
    const out = path.join(A.dir, `region-${path.basename(path.dirname(path.dirname(image)))}-${path.basename(image)}.raw`)
    execFileSync('qemu-img', ['dd', '-f', 'qcow2', '-O', 'raw', 'bs=1M', 'skip=16', 'count=48', `if=${image}`, `of=${out}`])
    const sum = execFileSync('sha256sum', [out], { encoding: 'utf8' }).split(' ')[0] ?? ''
    fs.rmSync(out, { force: true })
    return sum
  }
  const sum2 = digest(img2 + '.departed')
  t.equal(digest(img1), sum2, `16-64 MiB of host1's image hash as host2's departed copy (sha256 ${sum2.slice(0, 12)}…)`)
}
