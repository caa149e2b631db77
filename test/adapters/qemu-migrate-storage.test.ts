/**
 * Goal: the QEMU driver moves a running VM together with its local qcow2 disk (no shared
 * storage): the target creates an empty image of the exact virtual size and exports it over NBD,
 * the source mirrors the disk to it (blockdev-mirror) until the mirror is ready, the memory
 * migration runs, and at the switch-over the source, paused, completes the mirror before the
 * device state goes. Nothing the guest wrote is lost, and the bytes sent are measured.
 *
 * Method: the test guest (test/guest) runs its disk checker on the first 64 MiB of a 128 MiB
 * qcow2 disk: it rewrites 4 KiB blocks at random places throughout (512 KiB/s, O_DIRECT) and reads
 * the whole region back every few seconds, comparing every block with what it last wrote there. The
 * other 64 MiB hold random data written before boot, which the guest never touches. So:
 *   - the guest's own passes on the target, after the switch, check every block it wrote
 *     before, during and after the copy (and that the blocks it never wrote read as zeros);
 *   - after both QEMUs stop, the untouched half of the two images is compared byte for byte
 *     (qemu-img convert to raw), and for an idle disk the whole images (qemu-img compare).
 * Cases: a disk under writes moves with its VM; a cancelled migration with storage leaves the
 * VM running on the source and removes the target image it created; the target refuses, before
 * creating anything, a disk larger than its free space (less what other incoming copies hold), a
 * disk whose base image it lacks, and the source names a disk file that does not exist; a VM
 * whose disk is an overlay on a base image the target also holds sends only its own blocks
 * (measured on the NBD connection).
 * Run: npx tap test/adapters/qemu-migrate-storage.test.ts  (about a minute under TCG)
 */
import t from 'tap'
import { execFileSync } from 'node:child_process'
import crypto from 'node:crypto'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { QemuDriver } from '../../agent/adapters/qemu-driver.js'
import type { MigrationParams, MigrationProgress } from '../../agent/ports/migrating-driver.js'
import { silentLogger } from '../../agent/lib/logger.js'
import type { VmSpec } from '../../agent/ports/hypervisor-driver.js'
import { SerialMonitor } from '../../bench/lib/serial-monitor.js'
import { buildTestGuest, guestKernel } from '../guest/guest.js'

const MiB = 1024 * 1024
const DISK = 128 * MiB
const REGION = 64 * MiB

function missingTool (): string | null {
  for (const [cmd, pkg] of [['qemu-system-x86_64', 'qemu-system-x86'], ['qemu-img', 'qemu-utils'], ['ss', 'iproute2']] as const) {
    try { execFileSync(cmd, ['--version'], { stdio: 'ignore' }) } catch (err) { return `${cmd} cannot run (${(err as Error).message}); install the Debian package ${pkg}` }
  }
  return null
}

const sleep = async (ms: number): Promise<void> => await new Promise(resolve => setTimeout(resolve, ms))

/** A qcow2 image of DISK bytes: zeros in the guest's region, random data above it. */
function makeImage (file: string): Buffer {
  const raw = `${file}.raw`
  const upper = crypto.randomBytes(DISK - REGION)
  fs.mkdirSync(path.dirname(file), { recursive: true })
  fs.writeFileSync(raw, Buffer.alloc(0))
  fs.truncateSync(raw, DISK)
  const fd = fs.openSync(raw, 'r+')
  fs.writeSync(fd, upper, 0, upper.length, REGION)
  fs.closeSync(fd)
  execFileSync('qemu-img', ['convert', '-q', '-f', 'raw', '-O', 'qcow2', raw, file])
  fs.rmSync(raw)
  return upper
}

/** The bytes [from, to) of a disk image, read through qemu-img (raw). */
function imageRange (file: string, from: number, to: number): Buffer {
  const raw = `${file}.cmp.raw`
  execFileSync('qemu-img', ['convert', '-q', '-O', 'raw', file, raw])
  const fd = fs.openSync(raw, 'r')
  const buf = Buffer.alloc(to - from)
  fs.readSync(fd, buf, 0, buf.length, from)
  fs.closeSync(fd)
  fs.rmSync(raw)
  return buf
}

function virtualSize (file: string): number {
  return (JSON.parse(execFileSync('qemu-img', ['info', '--output=json', '-U', file], { encoding: 'utf8' })) as { 'virtual-size': number })['virtual-size']
}

const missing = missingTool()
if (missing !== null) {
  t.fail(`cannot run the QEMU storage migration tests: ${missing}`)
} else {
  let guestDir = ''
  try {
    guestDir = buildTestGuest()
  } catch (err) {
    t.fail(`the test guest does not build: ${(err as Error).message}`)
  }
  if (guestDir !== '') await run(guestDir)
}

async function run (guestDir: string): Promise<void> {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'starling-qemu-stor-'))
  const src = new QemuDriver({ runDir: path.join(tmp, 'src'), accel: 'auto', dieWithAgent: true, killOnClose: true }, { logger: silentLogger() })
  const dst = new QemuDriver({ runDir: path.join(tmp, 'dst'), imageDir: path.join(tmp, 'dst-images'), accel: 'auto', dieWithAgent: true, killOnClose: true }, { logger: silentLogger() })
  const mons: SerialMonitor[] = []
  t.teardown(async () => {
    for (const m of mons) m.close()
    await src.close()
    await dst.close()
    fs.rmSync(tmp, { recursive: true, force: true })
  })
  t.comment(`accelerator: ${src.accel} (${src.accelReason})`)

  const spec = (id: string, file: string, diskKiBps: number): VmSpec => ({
    id,
    vcpus: 1,
    memMiB: 256,
    extra: {
      kernel: guestKernel(guestDir),
      initrd: path.join(guestDir, 'initramfs.cpio'),
      append: `console=ttyS0 quiet loglevel=3 panic=-1 dirtier_ws=16 dirtier_rate=1 dirtier_disk=${REGION / MiB} dirtier_disk_rate=${diskKiBps}`,
      disks: [{ file, format: 'qcow2' }]
    }
  })
  const monitor = (d: QemuDriver, id: string): SerialMonitor => {
    const m = new SerialMonitor(d.serialPath(id))
    mons.push(m)
    return m
  }
  const boot = async (s: VmSpec): Promise<SerialMonitor> => {
    await src.start(s)
    const m = monitor(src, s.id)
    await m.until('a first disk pass', () => m.diskPasses.length >= 1, 90_000)
    return m
  }
  const waitDone = async (d: QemuDriver, id: string, timeoutMs: number): Promise<MigrationProgress> => {
    const end = performance.now() + timeoutMs
    for (;;) {
      const p = await d.progress(id)
      if (p.status === 'completed' || p.status === 'failed' || p.status === 'cancelled') return p
      if (performance.now() > end) throw new Error(`migration of ${id} not finished after ${timeoutMs} ms: ${JSON.stringify(p)}`)
      await sleep(50)
    }
  }
  const waitMirrorReady = async (id: string, timeoutMs: number): Promise<MigrationProgress> => {
    const end = performance.now() + timeoutMs
    for (;;) {
      const p = await src.progress(id)
      if (p.disk?.error != null) throw new Error(`mirror failed: ${p.disk.error}`)
      if (p.disk?.ready === true) return p
      if (performance.now() > end) throw new Error(`mirror of ${id} not ready after ${timeoutMs} ms: ${JSON.stringify(p.disk)}`)
      await sleep(50)
    }
  }
  // Under TCG a pre-copy of more than one pass can lose a guest write (see convergence.ts: at
  // most 3 dirty syncs there): a downtime limit this generous lets QEMU stop after the first
  // pass. The memory side is not what this test is about.
  const precopy: MigrationParams = { mode: 'precopy', maxBandwidthBytes: 256 * MiB, downtimeLimitMs: src.accel === 'tcg' ? 10_000 : 300, autoConverge: false, xbzrle: false, multifd: 0, storage: true, ...(src.accel === 'tcg' ? { maxDirtySyncs: 3 } : {}) }

  await t.test('a VM whose local disk is written throughout moves with it', async tt => {
    const file = path.join(tmp, 'src-images', 'busy', 'disk.qcow2')
    const upper = makeImage(file)
    const srcMon = await boot(spec('busy', file, 512))
    const d = await src.describe('busy')
    const disks = (d?.spec.extra?.disks ?? []) as Array<{ sizeBytes?: number }>
    tt.equal(disks[0]?.sizeBytes, DISK, 'the source reports the disk\'s virtual size')

    const { uri, nbd } = await dst.prepareIncoming(d!.spec, '127.0.0.1:0', { storage: true })
    tt.match(nbd, /^nbd:127\.0\.0\.1:\d+$/, 'the target exports its disk over NBD')
    const dstFile = dst.targetImagePath('busy', file)
    tt.not(dstFile, file, 'the target image has its own path')
    tt.equal(virtualSize(dstFile), DISK, 'the target image has the exact virtual size')

    await src.mirrorDisks('busy', nbd!)
    const writesAtMirror = srcMon.diskPasses.at(-1)?.writes ?? 0
    const ready = await waitMirrorReady('busy', 60_000)
    tt.ok(ready.disk!.doneBytes >= DISK - REGION, `mirror ready after copying ${(ready.disk!.doneBytes / MiB).toFixed(1)} MiB`)
    await srcMon.until('a disk pass with writes during the mirror', () => (srcMon.diskPasses.at(-1)?.writes ?? 0) > writesAtMirror, 20_000)

    await src.migrate('busy', uri, precopy)
    const p = await waitDone(src, 'busy', 60_000)
    tt.equal(p.status, 'completed', `migration completed ${p.errorDesc ?? ''}`)
    const sent = p.disk?.sentBytes ?? 0
    tt.comment(`disk: ${(sent / MiB).toFixed(1)} MiB sent on the NBD connection (measured by the kernel's tcp_info); memory ${(p.transferredBytes / MiB).toFixed(1)} MiB in ${p.dirtySyncCount} dirty syncs; downtime ${String(p.downtimeMs)} ms`)
    if (src.accel === 'tcg') tt.ok(p.dirtySyncCount <= 3, `at most 3 dirty syncs under TCG (${p.dirtySyncCount})`)
    tt.ok(sent >= DISK - REGION, 'at least the random half of the disk crossed the link (measured)')
    tt.ok(sent < DISK * 1.5, 'not much more than the disk crossed the link')

    const dstMon = monitor(dst, 'busy')
    const lastSrcWrites = srcMon.diskPasses.at(-1)?.writes ?? 0
    try {
      await dstMon.until('two disk passes on the target', () => dstMon.diskPasses.length >= 2, 30_000)
    } catch (err) {
      tt.comment(`target console: ${dstMon.tail(20)}`)
      throw err
    }
    tt.same(dstMon.broken, [], 'no bad block, page or crash on the target')
    tt.same(srcMon.broken, [], 'none on the source')
    tt.equal(dstMon.starts, 0, 'the guest did not reboot on the target')
    tt.ok(dstMon.diskPasses.at(-1)!.writes > lastSrcWrites, 'the guest kept writing its disk on the target')
    tt.equal((await dst.list()).find(v => v.id === 'busy')?.state, 'running', 'target runs the VM')

    await src.stop('busy')
    await dst.stop('busy')
    tt.ok(imageRange(dstFile, REGION, DISK).equals(upper), 'the half of the disk the guest never wrote is byte-identical on the target')
    tt.ok(imageRange(file, REGION, DISK).equals(upper), 'and on the source')
  })

  await t.test('idle disk: the images are identical; a cancelled copy removes the target image', async tt => {
    const file = path.join(tmp, 'src-images', 'idle', 'disk.qcow2')
    makeImage(file)
    const srcMon = await boot(spec('idle', file, 0))
    const d = await src.describe('idle')

    // First a copy that is cancelled: the VM stays, the target image goes.
    let r = await dst.prepareIncoming(d!.spec, '127.0.0.1:0', { storage: true })
    const dstFile = dst.targetImagePath('idle', file)
    tt.ok(fs.existsSync(dstFile), 'target image created')
    await src.mirrorDisks('idle', r.nbd!)
    await waitMirrorReady('idle', 60_000)
    await src.cancel('idle')
    tt.equal((await src.progress('idle')).disk, undefined, 'no mirror left on the source')
    const beats = srcMon.beats.length
    await srcMon.until('heartbeats after the cancel', () => srcMon.beats.length >= beats + 20, 10_000)
    await dst.killIfNotRunning('idle')
    tt.notOk(fs.existsSync(dstFile), 'the abandoned target image is removed with the incoming copy')

    // Then the move.
    r = await dst.prepareIncoming(d!.spec, '127.0.0.1:0', { storage: true })
    await src.mirrorDisks('idle', r.nbd!)
    await waitMirrorReady('idle', 60_000)
    await src.migrate('idle', r.uri, precopy)
    const p = await waitDone(src, 'idle', 60_000)
    tt.equal(p.status, 'completed', `migration completed ${p.errorDesc ?? ''}`)
    const dstMon = monitor(dst, 'idle')
    await dstMon.until('a disk pass on the target', () => dstMon.diskPasses.length >= 1, 30_000)
    tt.same(dstMon.broken, [], 'no bad block on the target')
    await src.stop('idle')
    await dst.stop('idle')
    const cmp = execFileSync('qemu-img', ['compare', '-q', file, dstFile], { encoding: 'utf8' })
    tt.equal(cmp, '', 'qemu-img compare: the source and target images are identical')
  })

  await t.test('refusals before any copy: free space, missing base image, missing disk file', async tt => {
    const base = { id: 'refuse', vcpus: 1, memMiB: 64 }
    const file = path.join(tmp, 'src-images', 'refuse', 'disk.qcow2')
    const huge = { ...base, extra: { disks: [{ file, format: 'qcow2', sizeBytes: 2 ** 50 }] } }
    await tt.rejects(dst.prepareIncoming(huge, '127.0.0.1:0', { storage: true }), /not enough free space at the target for its disks: \d+ MiB needed/, 'a disk larger than the free space is refused')
    tt.notOk(fs.existsSync(dst.targetImagePath('refuse', file)), 'no image was created')
    tt.equal(dst.pid('refuse'), undefined, 'no incoming QEMU was started')
    const noBase = { ...base, extra: { disks: [{ file, format: 'qcow2', sizeBytes: 64 * MiB, backing: path.join(tmp, 'no-such-base.qcow2') }] } }
    await tt.rejects(dst.prepareIncoming(noBase, '127.0.0.1:0', { storage: true }), /backing file .*no-such-base\.qcow2 of disk .* is missing at the target/, 'a disk whose base image the target lacks is refused')
    tt.notOk(fs.existsSync(dst.targetImagePath('refuse', file)), 'no image was created')
    tt.match(src.storageProblem({ ...base, extra: { disks: [{ file: path.join(tmp, 'gone.qcow2'), format: 'qcow2' }] } }) ?? '', /gone\.qcow2 does not exist on the source/, 'the source names a disk file that does not exist')
    // Free space is reserved while an incoming copy may still grow: one that fits now but not
    // beside another's reservation is refused.
    const dir = path.join(tmp, 'dst-images')
    fs.mkdirSync(dir, { recursive: true })
    const st = fs.statfsSync(dir)
    const free = Number(st.bavail) * Number(st.bsize)
    const big = (id: string): VmSpec => ({ id, vcpus: 1, memMiB: 64, extra: { kernel: guestKernel(guestDir), initrd: path.join(guestDir, 'initramfs.cpio'), append: 'console=ttyS0 quiet', disks: [{ file: path.join(tmp, 'src-images', id, 'disk.qcow2'), format: 'qcow2', sizeBytes: Math.floor(free * 0.6 / 65536) * 65536 }] } })
    await dst.prepareIncoming(big('res1'), '127.0.0.1:0', { storage: true })
    await tt.rejects(dst.prepareIncoming(big('res2'), '127.0.0.1:0', { storage: true }), /reserved by other incoming copies/, 'a second copy that fits only without the first one\'s reservation is refused')
    await dst.killIfNotRunning('res1')
    tt.notOk(fs.existsSync(dst.targetImagePath('res1', path.join(tmp, 'src-images', 'res1', 'disk.qcow2'))), 'the first copy\'s image went with it')
    await dst.prepareIncoming(big('res2'), '127.0.0.1:0', { storage: true })
    tt.pass('with the reservation gone, the second copy is admitted')
    await dst.killIfNotRunning('res2')
  })

  await t.test('a VM on a base image the target holds sends only its own blocks', async tt => {
    // The base: random data above the guest's region; the VM's disk is an empty overlay on it.
    const baseFile = path.join(tmp, 'base', 'base.qcow2')
    const upper = makeImage(baseFile)
    const file = path.join(tmp, 'src-images', 'overlay', 'disk.qcow2')
    fs.mkdirSync(path.dirname(file), { recursive: true })
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', baseFile, '-F', 'qcow2', file])
    const srcMon = await boot(spec('overlay', file, 256))
    const d = await src.describe('overlay')
    const disk = ((d?.spec.extra?.disks ?? []) as Array<{ backing?: string }>)[0]
    tt.equal(disk?.backing, baseFile, 'the source reports the base image')
    const { uri, nbd } = await dst.prepareIncoming(d!.spec, '127.0.0.1:0', { storage: true })
    await src.mirrorDisks('overlay', nbd!)
    await waitMirrorReady('overlay', 60_000)
    await src.migrate('overlay', uri, precopy)
    const p = await waitDone(src, 'overlay', 60_000)
    tt.equal(p.status, 'completed', `migration completed ${p.errorDesc ?? ''}`)
    const sent = p.disk?.sentBytes ?? 0
    const dstMon = monitor(dst, 'overlay')
    await dstMon.until('two disk passes on the target', () => dstMon.diskPasses.length >= 2, 30_000)
    tt.same(dstMon.broken, [], 'no bad block on the target (reads through its own base)')
    await src.stop('overlay')
    await dst.stop('overlay')
    // The overlay's own data: what its top layer holds (qcow2 allocates 64 KiB clusters, so each
    // 4 KiB the guest wrote costs a cluster), read from the source image frozen at the switch.
    const map = JSON.parse(execFileSync('qemu-img', ['map', '--output=json', '-U', file], { encoding: 'utf8' })) as Array<{ length: number, depth: number, data: boolean }>
    const own = map.filter(e => e.depth === 0 && e.data).reduce((a, e) => a + e.length, 0)
    tt.comment(`disk: ${(sent / MiB).toFixed(2)} MiB sent for a ${DISK / MiB} MiB disk on a base holding ${(DISK - REGION) / MiB} MiB of data; the overlay's own data: ${(own / MiB).toFixed(2)} MiB`)
    tt.ok(own > 0, 'the guest wrote its own blocks')
    tt.ok(sent <= own * 1.2 + 2 * MiB, 'the bytes sent are the overlay\'s own data, not the base (measured)')
    tt.ok(sent < (DISK - REGION) / 2, 'far less than the base\'s data crossed the link')
    const dstFile = dst.targetImagePath('overlay', file)
    const info = JSON.parse(execFileSync('qemu-img', ['info', '--output=json', '-U', dstFile], { encoding: 'utf8' })) as { 'backing-filename'?: string }
    tt.equal(info['backing-filename'], baseFile, 'the target image is an overlay on the same base')
    tt.ok(imageRange(dstFile, REGION, DISK).equals(upper), 'the base\'s data reads the same through the target image')
  })
}
