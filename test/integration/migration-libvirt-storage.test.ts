/**
 * Goal: a libvirt VM whose disk is local (not on shared storage) moves with its disk through the
 * agents' journaled protocol (real agent processes, the normal reservation and migration): the
 * guest's heartbeat goes on at the target, the disk there holds what the guest wrote, both agents
 * record the migration committed, and the source keeps its image (the consistent copy as of the
 * switch-over, no longer used by any domain). A target without the space is refused before any
 * copy, the VM untouched.
 *
 * Method: two libvirtd daemons (test/libvirt/daemons.ts) and two agents on loopback
 * (writeLocalCluster, configurations rewritten for driver.kind 'libvirt' as in
 * migration-libvirt.test.ts), host2 with its own driver.libvirt.imageDir. g1 is created on host1's
 * daemon before the agents start, with a 64 MiB qcow2 disk of which 40-48 MiB hold a pattern
 * written beforehand (qemu-io); the guest's disk checker (test/guest/dirtier.c) rewrites 4 KiB
 * blocks of the first 16 MiB at random throughout and verifies every block of them on each pass.
 * First host2's image directory is a 16 MiB tmpfs: `starling migrate g1 --to host2` must fail
 * naming the free space, with g1 running on host1 and nothing left in that directory. Then the
 * tmpfs goes and the same command moves g1 (the disk is local, so the agents choose the move with
 * storage themselves). After it: the heartbeat continues on host2, two full disk passes there
 * (every block holds what the guest last wrote), g1 runs from host2's image, both records are
 * committed with storage, host1's image is set aside as `g1.qcow2.departed` (README, "Disks move
 * with their VMs"; its path free for a return) and used by no domain, and after host2's domain is
 * stopped the pattern and a never-written range read back from host2's image and 16-64 MiB of
 * both images hash the same.
 * When libvirt or the guest cannot run here the file fails with the reason; it never skips.
 * Run: npm run build && npx tap test/integration/migration-libvirt-storage.test.ts  (about 100 s under a load of 17)
 */
import tap, { type Test } from 'tap'
import { execFile, execFileSync } from 'node:child_process'
import fs from 'node:fs'
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

const why = libvirtUnavailable()
if (why !== null) {
  tap.fail(`cannot run the libvirt storage migration test: ${why}`)
} else {
  let guestDir = ''
  try {
    execFileSync('qemu-img', ['--version'], { stdio: 'ignore' })
    guestDir = buildTestGuest()
  } catch (err) {
    tap.fail(`qemu-img (qemu-utils) or the test guest is missing: ${(err as Error).message}`)
  }
  if (guestDir !== '') await tap.test('a libvirt VM with a local disk moves with it through the agents', async t => { await run(t, guestDir) })
}

interface Rec { id: string, vm: string, role: string, state: string, reason: string, storage?: boolean, progress: { totalTimeMs: number, downtimeMs: number | null, dirtySyncCount?: number, disk?: { sentBytes: number, totalBytes: number } } | null }

async function run (t: Test, guestDir: string): Promise<void> {
  const cli = compiledCli()
  let bed: LibvirtBed
  try { bed = await startLibvirtDaemons(['a', 'b']) } catch (err) { t.fail(`libvirt daemons do not start: ${(err as Error).message}`); return }
  const [A, B] = bed.daemons as [LibvirtDaemon, LibvirtDaemon]
  const mons: SerialMonitor[] = []
  let cluster: LocalCluster | null = null
  let mounted = ''
  t.teardown(async () => {
    for (const m of mons) m.close()
    await cluster?.stop()
    if (mounted !== '') { try { execFileSync('umount', [mounted]) } catch {} }
    await bed.stop()
  })
  cluster = await LocalCluster.create(2, { core: { reportIntervalTicks: 10, reportPullIntervalTicks: 10, pushPullIntervalTicks: 50 } })
  const c = cluster
  logDump = () => c.hosts.map(h => `--- ${h.name}\n` + (fs.existsSync(h.logFile) ? fs.readFileSync(h.logFile, 'utf8').split('\n').filter(l => !l.includes('member-state') && !l.includes('peer connected')).slice(-15).join('\n') : '')).join('\n').slice(-8000)
  const daemonOf = new Map([['host1', A], ['host2', B]])
  const imageDir = path.join(B.dir, 'images')
  fs.mkdirSync(imageDir, { recursive: true })
  for (const h of c.hosts) {
    const d = daemonOf.get(h.name)!
    const cfg = JSON.parse(fs.readFileSync(h.configFile, 'utf8')) as Record<string, any>
    cfg.driver = { kind: 'libvirt', libvirt: { uri: d.uri, peerUri: d.uri, migrationListen: '127.0.0.1', domainType: 'auto', emulator: TCG_PAD_EMULATOR, serialDir: d.serialDir, imageDir: path.join(d.dir, 'images') } }
    cfg.sampler = { kind: 'driver', intervalMs: 500, capacity: { cpuCores: 16, cpuMipsPerCore: 1000, memMiB: 8192, netMbps: 10000 } }
    // The default lease (100 ticks): this case is about the disk, not a lease cut short under load.
    cfg.migration = { autoBalance: false, maxBandwidthBytes: 128 * MiB, bandwidthBytesPerS: 128 * MiB, leaseTicks: 100, prepareTimeoutTicks: 150, intentTimeoutTicks: 50, resendTicks: 10 }
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

  // g1's disk: local to host1, 64 MiB; 40-48 MiB hold a pattern the guest never touches.
  const srcImage = path.join(A.dir, 'local', 'g1.qcow2')
  fs.mkdirSync(path.dirname(srcImage), { recursive: true })
  execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', srcImage, String(64 * MiB)])
  execFileSync('qemu-io', ['-f', 'qcow2', '-c', 'write -q -P 0xa5 40M 8M', srcImage])
  const creator = new LibvirtDriver({ uri: A.uri, serialDir: A.serialDir, domainType: 'auto', emulator: TCG_PAD_EMULATOR, callTimeoutMs: 30_000 }, { logger: silentLogger() })
  await creator.start({
    id: 'g1',
    vcpus: 1,
    memMiB: 256,
    extra: {
      kernel: guestKernel(guestDir),
      initrd: path.join(guestDir, 'initramfs.cpio'),
      append: 'console=ttyS0 quiet loglevel=3 panic=-1 dirtier_ws=16 dirtier_rate=0 dirtier_disk=16 dirtier_disk_rate=64',
      disks: [{ file: srcImage, format: 'qcow2' }]
    }
  })
  t.comment(`g1 created on ${A.uri} as a ${creator.domainType} domain (${creator.domainTypeReason})`)
  const src = new SerialMonitor(path.join(A.serialDir, 'g1.log'))
  mons.push(src)

  c.startAll()
  await until('two agents alive in both views', async () => {
    for (const h of c.hosts) { const s = await c.status(h.name); if (s === null || aliveCount(s) !== 2) return false }
    return true
  }, 60_000)
  await src.until('heartbeats and a disk pass on host1', () => src.beats.length > 20 && src.diskPasses.length >= 1, 90_000)
  t.pass('g1 runs on host1 with its disk checker, both agents are up')
  await until("host1's report lists g1", async () => {
    const s = await c.status('host1')
    return s?.members.find(m => m.name === 'host1')?.report?.vms.some(v => v.id === 'g1') === true
  }, 30_000)

  // --- Refused before any copy: host2's image directory cannot hold the disk.
  execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=16m', 'tmpfs', imageDir])
  mounted = imageDir
  const refused = await starling(['migrate', 'g1', '--to', 'host2', '--config', c.host('host1').configFile])
  t.not(refused.code, 0, 'the move to a target without the space fails')
  t.match(refused.out, /not enough free space at the target/, `with the reason: ${refused.out.trim().split('\n').at(-1) ?? ''}`)
  t.equal(await virsh(A, ['domstate', 'g1']), 'running', 'g1 still runs on host1')
  t.equal(await virsh(B, ['domstate', 'g1']), null, "host2's libvirtd has no g1")
  t.same(fs.readdirSync(imageDir), [], "nothing was created in host2's image directory")
  const beatsBefore = src.beats.length
  await src.until('heartbeats go on on host1', () => src.beats.length > beatsBefore + 20, 10_000)
  execFileSync('umount', [imageDir])
  mounted = ''

  // --- The move: the disk is local, so the agents move it with the VM.
  const dst = new SerialMonitor(path.join(B.serialDir, 'g1.log'))
  mons.push(dst)
  const t0 = performance.now()
  const r = await starling(['migrate', 'g1', '--to', 'host2', '--config', c.host('host1').configFile])
  const wallMs = performance.now() - t0
  t.equal(r.code, 0, `starling migrate: ${r.out.trim()}`)
  if (r.code !== 0) t.comment(logDump())
  // A guest that breaks on host2 is reported with its console (the kernel's trace), not just the first lines.
  const consoleTail = (m: SerialMonitor): string => m.lines.filter(l => !l.text.startsWith('hb ')).slice(-40).map(l => l.text).join('\n')
  t.teardown(() => { if (dst.broken.length > 0) console.error(`host2 console:\n${consoleTail(dst)}`) })
  await dst.until('heartbeats on host2', () => dst.beats.length >= 5, 30_000)
  const last = src.lastBeat()!
  const first = dst.beats[0]!
  t.ok(first.seq > last.seq && first.seq <= last.seq + 3, `the heartbeat continues on host2 (host1 last ${last.seq}, host2 first ${first.seq})`)
  t.equal(dst.starts, 0, 'the guest did not restart on host2')
  const t1 = performance.now()
  await dst.until('two full disk passes on host2', () => dst.diskPasses.filter(p => p.atMs > t1).length >= 2, 60_000)
  t.same(dst.broken, [], 'no bad block, page or crash on host2: every block holds what the guest last wrote')
  t.same(src.broken, [], 'none on host1 either')

  const dstImage = path.join(imageDir, 'g1', 'g1.qcow2')
  t.match(await virsh(B, ['domblklist', 'g1']), dstImage, "host2's domain runs from host2's image")
  t.equal(await virsh(A, ['domstate', 'g1']), null, "host1's libvirtd has no g1 any more")
  await until('the migration committed on both agents', async () =>
    (await migrations('host1')).some(m => m.vm === 'g1' && m.role === 'source' && m.state === 'committed') &&
    (await migrations('host2')).some(m => m.vm === 'g1' && m.role === 'target' && m.state === 'committed'), 20_000)
  // The copy's mode was planned from the guest's disk writes as libvirt counts them: 16 writes of
  // 4 KiB a second, 1 MiB/s of 64 KiB mirror regions, far within half the 128 MiB/s link.
  const planned = /disk copy (background|write-blocking): the guest dirties ([\d.]+) MiB\/s/.exec(fs.readFileSync(c.host('host1').logFile, 'utf8'))
  t.ok(planned?.[1] === 'background' && Number(planned[2]) > 0.2, `the disk copy planned from measured writes: ${planned?.[0] ?? 'no plan in host1\'s log'}`)
  const rec = (await migrations('host1')).find(m => m.vm === 'g1' && m.state === 'committed')
  t.equal(rec?.storage, true, 'host1 and host2 record it committed, as a move with storage')
  await until("host1 sets its image aside", () => fs.existsSync(srcImage + '.departed'), 20_000)
  t.notOk(fs.existsSync(srcImage), "host1's image path is free (the VM may come back)")
  t.pass("host1 keeps its image as g1.qcow2.departed (the disk as of the switch-over; no domain uses it)")
  // The operator sees the kept copy where the moves are listed, also after host1's agent restarts.
  const keptListed = async (): Promise<string> => {
    const out = await starling(['migrations', '--api', c.host('host1').apiListen])
    return out.code === 0 && out.out.includes('Disk copies kept here') && out.out.includes(`${srcImage}.departed`) ? out.out : ''
  }
  const listed = await keptListed()
  t.ok(listed !== '', `starling migrations on host1 lists the kept copy:\n${listed.split('\n').filter(l => l.includes('.departed')).join('\n')}`)
  const kept = ((await (await fetch(`http://${c.host('host1').apiListen}/v1/migrations`)).json()) as { keptDisks?: Array<{ vm: string, file: string, allocatedBytes: number }> }).keptDisks ?? []
  t.ok(kept.length === 1 && kept[0]?.vm === 'g1' && kept[0].file === `${srcImage}.departed` && kept[0].allocatedBytes > 8 * MiB, `GET /v1/migrations keptDisks: ${JSON.stringify(kept)}`)
  c.kill9('host1')
  c.start('host1')
  await until('host1 answers again', async () => (await c.status('host1')) !== null, 60_000)
  t.ok(await keptListed() !== '', 'and still after a kill -9 and restart of host1\'s agent (journaled)')
  t.comment(`CLI wall time ${wallMs.toFixed(0)} ms; libvirt total ${String(rec?.progress?.totalTimeMs)} ms, downtime ${String(rec?.progress?.downtimeMs)} ms, ${String(rec?.progress?.dirtySyncCount)} syncs; disk ${((rec?.progress?.disk?.sentBytes ?? 0) / MiB).toFixed(1)} of ${((rec?.progress?.disk?.totalBytes ?? 0) / MiB).toFixed(1)} MiB; heartbeat gap ${(first.atMs - last.atMs).toFixed(0)} ms`)

  // The range the guest never wrote came across as it was, and an unwritten one reads zero.
  await virsh(B, ['destroy', 'g1'])
  const read = execFileSync('qemu-io', ['-f', 'qcow2', '-c', 'read -P 0xa5 40M 8M', '-c', 'read -P 0 56M 8M', dstImage], { encoding: 'utf8' })
  t.notMatch(read, /Pattern verification failed|error/i, "the pattern and the zero range read back from host2's image")
  // Beyond the checker's 16 MiB (which it kept writing on host2), both images hold the same bytes.
  const digest = (image: string): string => {
    const out = path.join(B.dir, `region-${path.basename(path.dirname(image))}-${path.basename(image)}.raw`)
    execFileSync('qemu-img', ['dd', '-f', 'qcow2', '-O', 'raw', 'bs=1M', 'skip=16', 'count=48', `if=${image}`, `of=${out}`])
    const sum = execFileSync('sha256sum', [out], { encoding: 'utf8' }).split(' ')[0] ?? ''
    fs.rmSync(out, { force: true })
    return sum
  }
  const srcSum = digest(srcImage + '.departed')
  t.equal(digest(dstImage), srcSum, `16-64 MiB of both images hash the same (sha256 ${srcSum.slice(0, 12)}…)`)
}
