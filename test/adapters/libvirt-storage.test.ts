/**
 * Goal: the libvirt driver moves a VM whose disk is local (not on shared storage) with the disk:
 * the target creates an empty image of the exact size, libvirt copies the disk inside the live
 * migration, the guest goes on at the target running from the target's image, and that image
 * holds exactly what the source's held. A disk that is an overlay on a base image both hosts hold
 * sends only its own layer (--copy-storage-inc; a disk without a base goes whole with
 * --copy-storage-all, as migration-libvirt-storage.test.ts does through the agents). The refusals
 * (no size, a base image missing at the target, an image already there) come before any copy.
 *
 * Method: two libvirtd daemons (test/libvirt/daemons.ts), each driver with its own imageDir. The
 * test guest boots with a 64 MiB qcow2 overlay on A, on a base holding 16 MiB of a pattern, the
 * overlay 3 MiB of another (qemu-io); the driver's describe() reports the disk with its virtual
 * size and base, prepareIncoming(storage) on B creates the overlay on the same base,
 * mirrorDisks() arms the copy and migrate(storage) runs it (pre-copy, with the TCG sync cap under
 * TCG). Then: the disk bytes libvirt copied (the overlay's, not the base's), heartbeats at B, B's
 * domain on B's image, and after B's domain is stopped, `qemu-img compare` of the two images and
 * both patterns read back through B's.
 * Second case, a write-blocking copy: a guest whose disk checker (test/guest/dirtier.c) writes 4 KiB
 * blocks at random over 16 MiB of a whole (no base) disk, 1 MiB/s. measureDiskWrites() reads that
 * rate from libvirt's block statistics (the convergence plan's input); mirrorDisks() asked for a
 * write-blocking copy makes migrate() pass --copy-storage-synchronous-writes, which libvirtd must
 * turn into QEMU's blockdev-mirror with copy-mode write-blocking (read from libvirtd's log of what
 * it sent the monitor); the move completes, progress() reports the mode, and the guest's checker
 * verifies every block on B (what the guest last wrote, written through to B during the copy).
 * When libvirt cannot run here the file fails with the reason; it never skips.
 * Run: npx tap test/adapters/libvirt-storage.test.ts  (about 1-2 minutes)
 */
import t, { type Test } from 'tap'
import { execFileSync } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import { LibvirtDriver, parseMigrationTarget } from '../../agent/adapters/libvirt-driver.js'
import type { MigrationParams, MigrationProgress } from '../../agent/ports/migrating-driver.js'
import { silentLogger } from '../../agent/lib/logger.js'
import { libvirtUnavailable, startLibvirtDaemons, type LibvirtBed, TCG_PAD_EMULATOR } from '../libvirt/daemons.js'
import { buildTestGuest, guestKernel } from '../guest/guest.js'
import { sleep, until } from '../lib/wait.js'
import { SerialMonitor } from '../../bench/lib/serial-monitor.js'

const heartbeats = (file: string): number[] => {
  try { return [...fs.readFileSync(file, 'latin1').matchAll(/(?:^|\n)\s*hb (\d+) /g)].map(m => Number(m[1])) } catch { return [] }
}

const why = libvirtUnavailable()
if (why !== null) {
  t.fail(`cannot run the libvirt storage migration test: ${why}`)
} else {
  let guestDir = ''
  try { guestDir = buildTestGuest() } catch (err) { t.fail(`the test guest does not build: ${(err as Error).message}`) }
  if (guestDir !== '') await t.test('a VM with a local qcow2 disk moves with its disk', async tt => { await run(tt, guestDir) })
  if (guestDir !== '') await t.test('a disk under steady writes moves with synchronous writes', async tt => { await runSyncWrites(tt, guestDir) })
}

async function run (t: Test, guestDir: string): Promise<void> {
  let bed: LibvirtBed
  try { bed = await startLibvirtDaemons(['a', 'b']) } catch (err) { t.fail(`libvirt daemons do not start: ${(err as Error).message}`); return }
  const [A, B] = bed.daemons as [typeof bed.daemons[0], typeof bed.daemons[0]]
  const mk = (d: typeof A): LibvirtDriver => new LibvirtDriver({ uri: d.uri, peerUri: d.uri, serialDir: d.serialDir, imageDir: path.join(d.dir, 'images'), domainType: 'auto', emulator: TCG_PAD_EMULATOR, callTimeoutMs: 30_000 }, { logger: silentLogger() })
  const a = mk(A)
  const b = mk(B)
  t.teardown(async () => { await bed.stop() })
  const id = 'st1'
  // The disk is an overlay on a base image both hosts hold at the same path (the two daemons
  // share this machine's file system): 16 MiB of data in the base, 3 MiB in the overlay.
  const base = path.join(A.dir, 'base', 'base.qcow2')
  fs.mkdirSync(path.dirname(base), { recursive: true })
  execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', base, '64M'])
  execFileSync('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0xa5 40M 16M', base])
  const srcImage = path.join(A.dir, 'local', `${id}.qcow2`)
  fs.mkdirSync(path.dirname(srcImage), { recursive: true })
  execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', base, '-F', 'qcow2', srcImage, '64M'])
  execFileSync('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x5a 1M 3M', srcImage])
  await a.start({ id, vcpus: 1, memMiB: 256, extra: { kernel: guestKernel(guestDir), initrd: path.join(guestDir, 'initramfs.cpio'), append: 'console=ttyS0 quiet loglevel=3 panic=-1 dirtier_ws=16 dirtier_rate=0', disks: [{ file: srcImage, format: 'qcow2' }] } })
  const srcLog = path.join(A.serialDir, `${id}.log`)
  await until('heartbeats on A', () => heartbeats(srcLog).length > 20, 90_000)

  const d = await a.describe(id)
  t.match(d?.spec.extra, { disks: [{ file: srcImage, format: 'qcow2', sizeBytes: 64 * 1048576, backing: base, backingFormat: 'qcow2' }] }, 'describe() reports the disk with its virtual size and its base image')
  const spec = d!.spec
  t.equal(a.diskLocality(spec), 'local', 'a disk outside sharedStorage is local')
  t.equal(new LibvirtDriver({ uri: A.uri, sharedStorage: [path.dirname(srcImage)], domainType: 'qemu' }, { logger: silentLogger() }).diskLocality(spec), 'shared', 'under sharedStorage it stays put')
  t.equal(a.storageProblem(spec), null, 'no problem with an existing disk')
  t.match(a.storageProblem({ ...spec, extra: { disks: [{ file: '/nonexistent/x.qcow2', format: 'qcow2', sizeBytes: 1 }] } }), /does not exist on the source/, 'a missing disk is refused on the source')
  const allocated = await a.diskAllocatedBytes(id)
  t.ok(allocated !== null && allocated >= 3 * 1048576 && allocated < 16 * 1048576, `the overlay's allocation reported for the copy's estimate (${String(allocated)} bytes)`)
  await t.rejects(b.prepareIncoming({ ...spec, extra: { disks: [{ file: srcImage, format: 'qcow2' }] } }, '127.0.0.1:0', { storage: true }), { code: 'DRIVER_FAILED', message: /sizeBytes/ }, 'no size: refused before anything is created')
  await t.rejects(b.prepareIncoming({ ...spec, extra: { disks: [{ file: srcImage, format: 'qcow2', sizeBytes: 64 * 1048576, backing: '/nonexistent/base.qcow2', backingFormat: 'qcow2' }] } }, '127.0.0.1:0', { storage: true }),
    { code: 'DRIVER_FAILED', message: /backing file \/nonexistent\/base\.qcow2 of disk .* is missing at the target/ }, 'a base image missing at the target: refused before anything is created')
  t.notOk(fs.existsSync(path.join(B.dir, 'images', id)), 'nothing created by the refusals')

  const prep = await b.prepareIncoming(spec, '127.0.0.1:0', { storage: true })
  const target = parseMigrationTarget(prep.uri)
  const dstImage = path.join(B.dir, 'images', id, `${id}.qcow2`)
  t.same(target?.disks, [{ from: srcImage, to: dstImage }], 'the target names where it created the image')
  t.equal(target?.shallow, true, 'and that only the overlay is to be copied')
  t.ok(prep.nbd !== undefined, 'prepareIncoming with storage answers for the disk copy')
  const dstInfo = JSON.parse(execFileSync('qemu-img', ['info', '-U', '--output=json', dstImage], { encoding: 'utf8' })) as Record<string, unknown>
  t.equal(dstInfo['virtual-size'], 64 * 1048576, 'the target image has the exact virtual size')
  t.equal(dstInfo['backing-filename'], base, 'and is an overlay on the same base image')
  await t.rejects(b.prepareIncoming(spec, '127.0.0.1:0', { storage: true }), { code: 'DRIVER_FAILED', message: /already exists/ }, 'an image already there is never overwritten')

  await a.mirrorDisks(id, prep.nbd ?? '')
  t.match(await a.progress(id), { disk: { ready: true } }, 'the disk phase reads ready: libvirt copies the disks within the migration')
  const tcg = a.domainType === 'qemu'
  const params: MigrationParams = { mode: 'postcopy', maxBandwidthBytes: 0, downtimeLimitMs: tcg ? 100 : 300, autoConverge: false, xbzrle: false, multifd: 0, storage: true, ...(tcg ? { maxDirtySyncs: 3 } : {}) }
  const lastOnA = (): number => heartbeats(srcLog).at(-1) ?? -1
  await a.migrate(id, prep.uri, params)
  let p: MigrationProgress = await a.progress(id)
  const end = performance.now() + 180_000
  while (!['completed', 'failed', 'cancelled'].includes(p.status) && performance.now() < end) { await sleep(200); p = await a.progress(id) }
  t.equal(p.status, 'completed', `migration with storage completed (${p.errorDesc ?? ''})`)
  t.ok(p.disk !== undefined && p.disk.doneBytes >= 3 * 1048576 && p.disk.doneBytes < 16 * 1048576, `only the overlay's layer was copied (--copy-storage-inc): ${((p.disk?.doneBytes ?? 0) / 1048576).toFixed(1)} MiB of ${((p.disk?.totalBytes ?? 0) / 1048576).toFixed(1)} MiB; the base holds 16 MiB`)
  if (tcg) t.ok(p.dirtySyncCount <= 3, `kept to the sync cap (${p.dirtySyncCount})`)
  const before = lastOnA()
  const dstLog = path.join(B.serialDir, `${id}.log`)
  await until('heartbeats on B', () => heartbeats(dstLog).length >= 5, 30_000)
  const first = heartbeats(dstLog)[0] ?? -1
  t.ok(first > before && first <= before + 3, `the heartbeat continues on B (A last ${before}, B first ${first})`)
  t.match(execFileSync('virsh', ['-c', B.uri, 'domblklist', id], { encoding: 'utf8' }), dstImage, "B's domain runs from B's image")
  t.comment(`total ${p.totalTimeMs} ms, downtime ${String(p.downtimeMs)} ms, ${p.dirtySyncCount} syncs, disk ${(p.disk?.doneBytes ?? 0) / 1048576} MiB`)
  await a.stop(id)
  await b.stop(id)
  execFileSync('qemu-img', ['compare', '-q', '-f', 'qcow2', '-F', 'qcow2', srcImage, dstImage])
  t.pass('qemu-img compare: the target image holds what the source image held')
  const read = execFileSync('qemu-io', ['-f', 'qcow2', '-c', 'read -P 0x5a 1M 3M', '-c', 'read -P 0xa5 40M 16M', '-c', 'read -P 0 8M 1M', dstImage], { encoding: 'utf8' })
  t.notMatch(read, /Pattern verification failed/, "the overlay's pattern, the base's and a zero range read back through the target image")
}

async function runSyncWrites (t: Test, guestDir: string): Promise<void> {
  let bed: LibvirtBed
  try { bed = await startLibvirtDaemons(['a', 'b'], { monitorLog: true }) } catch (err) { t.fail(`libvirt daemons do not start: ${(err as Error).message}`); return }
  const [A, B] = bed.daemons as [typeof bed.daemons[0], typeof bed.daemons[0]]
  const mk = (d: typeof A): LibvirtDriver => new LibvirtDriver({ uri: d.uri, peerUri: d.uri, serialDir: d.serialDir, imageDir: path.join(d.dir, 'images'), domainType: 'auto', emulator: TCG_PAD_EMULATOR, callTimeoutMs: 30_000 }, { logger: silentLogger() })
  const a = mk(A)
  const b = mk(B)
  const mons: SerialMonitor[] = []
  t.teardown(async () => { for (const m of mons) m.close(); await bed.stop() })
  const id = 'sw1'
  const srcImage = path.join(A.dir, 'local', `${id}.qcow2`)
  fs.mkdirSync(path.dirname(srcImage), { recursive: true })
  execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', srcImage, '32M'])
  await a.start({ id, vcpus: 1, memMiB: 256, extra: { kernel: guestKernel(guestDir), initrd: path.join(guestDir, 'initramfs.cpio'), append: 'console=ttyS0 quiet loglevel=3 panic=-1 dirtier_ws=16 dirtier_rate=0 dirtier_disk=16 dirtier_disk_rate=1024', disks: [{ file: srcImage, format: 'qcow2' }] } })
  const src = new SerialMonitor(path.join(A.serialDir, `${id}.log`))
  mons.push(src)
  await src.until('heartbeats and a disk pass on A', () => src.beats.length > 20 && src.diskPasses.length >= 1, 120_000)

  const w = await a.measureDiskWrites(id, 2000)
  t.ok(w.bytesPerS > 0.25 * 1048576 && w.bytesPerS < 4 * 1048576, `measureDiskWrites: ${(w.bytesPerS / 1048576).toFixed(2)} MiB/s from libvirt's block statistics (the guest writes 1 MiB/s)`)
  t.ok(w.writeSizeBytes >= 4096 && w.writeSizeBytes < 16384, `mean write size ${Math.round(w.writeSizeBytes)} bytes (the guest writes 4 KiB blocks)`)

  const d = await a.describe(id)
  const prep = await b.prepareIncoming(d!.spec, '127.0.0.1:0', { storage: true })
  await a.mirrorDisks(id, prep.nbd ?? '', { copyMode: 'write-blocking' })
  const tcg = a.domainType === 'qemu'
  const params: MigrationParams = { mode: 'precopy', maxBandwidthBytes: 0, downtimeLimitMs: tcg ? 100 : 300, autoConverge: false, xbzrle: false, multifd: 0, storage: true, ...(tcg ? { maxDirtySyncs: 3 } : {}) }
  const dst = new SerialMonitor(path.join(B.serialDir, `${id}.log`))
  mons.push(dst)
  await a.migrate(id, prep.uri, params)
  let p: MigrationProgress = await a.progress(id)
  const end = performance.now() + 180_000
  while (!['completed', 'failed', 'cancelled'].includes(p.status) && performance.now() < end) { await sleep(200); p = await a.progress(id) }
  t.equal(p.status, 'completed', `migration with storage completed (${p.errorDesc ?? ''})`)
  t.equal(p.disk?.copyMode, 'write-blocking', 'progress() reports the write-blocking copy')
  const monitorLog = fs.readFileSync(A.logFile, 'utf8')
  const mirror = monitorLog.split('\n').find(l => /"execute":\s*"(blockdev|drive)-mirror"/.test(l)) ?? ''
  t.match(mirror, /"copy-mode":\s*"write-blocking"/, `libvirtd told QEMU to mirror with copy-mode write-blocking (${mirror.length > 0 ? 'the mirror command seen' : 'no mirror command in its log'})`)
  await dst.until('heartbeats on B', () => dst.beats.length >= 5, 30_000)
  const last = src.lastBeat()!
  const first = dst.beats[0]!
  t.ok(first.seq > last.seq && first.seq <= last.seq + 3, `the heartbeat continues on B (A last ${last.seq}, B first ${first.seq})`)
  const t1 = performance.now()
  await dst.until('two full disk passes on B', () => dst.diskPasses.filter(x => x.atMs > t1).length >= 2, 90_000)
  t.same(dst.broken, [], 'no bad block or crash on B: every block holds what the guest last wrote')
  t.same(src.broken, [], 'none on A either')
  t.comment(`total ${p.totalTimeMs} ms, downtime ${String(p.downtimeMs)} ms, ${p.dirtySyncCount} syncs, disk ${((p.disk?.doneBytes ?? 0) / 1048576).toFixed(1)} MiB`)
  await b.stop(id)
}
