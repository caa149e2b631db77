/**
 * Goal: the libvirt driver deletes the images it created for an incoming move with storage that
 * aborted, exactly those and across a restart of the agent, and never an image a domain here uses
 * or one whose guest ran here; a retry of the move is then admitted (no "already exists"). A
 * source sets the images a move left behind aside (`<image>.departed`) once the target runs the
 * VM, so that the path is free for a return, and a return that runs here removes that older copy.
 *
 * Method: one libvirtd daemon (test/libvirt/daemons.ts), a driver with a stateDir and an imageDir.
 * prepareIncoming with storage for migration m1 creates v1's image and journals it; a second
 * driver on the same stateDir (the agent restarted) is asked to drop the images of another
 * migration (nothing happens), then of m1 (the image goes, the journal entry too), and a new
 * prepare of v1 is admitted. An image a defined domain uses is kept. v3's incoming image is
 * booted by a domain (BIOS only, no OS: cheap under TCG): the journal lets it go, nothing is
 * dropped, and the `.departed` copy beside it goes. A source journal (as migrate() writes it) is
 * retired: the image is renamed, twice is harmless, and one a domain uses stays in place.
 * When libvirt cannot run here the file fails with the reason; it never skips.
 * Run: npx tap test/adapters/libvirt-image-journal.test.ts  (about 10 s)
 */
import t from 'tap'
import { execFileSync } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import { LibvirtDriver } from '../../agent/adapters/libvirt-driver.js'
import type { VmSpec } from '../../agent/ports/hypervisor-driver.js'
import { silentLogger } from '../../agent/lib/logger.js'
import { libvirtUnavailable, startLibvirtDaemons, type LibvirtBed, TCG_PAD_EMULATOR } from '../libvirt/daemons.js'
import { until } from '../lib/wait.js'

const MiB = 1048576
const why = libvirtUnavailable()
if (why !== null) {
  t.fail(`cannot run the libvirt image journal test: ${why}`)
} else {
  await t.test('images of aborted incoming moves go, and only those; departed images are set aside', async tt => {
    let bed: LibvirtBed | null = null
    let drv: LibvirtDriver | null = null
    tt.teardown(async () => {
      for (const id of ['v3', 'other']) {
        try { execFileSync('virsh', ['-c', bed?.daemons[0]?.uri ?? '', 'destroy', id], { stdio: 'ignore' }) } catch {}
        try { execFileSync('virsh', ['-c', bed?.daemons[0]?.uri ?? '', 'undefine', id], { stdio: 'ignore' }) } catch {}
      }
      await bed?.stop()
    })
    try { bed = await startLibvirtDaemons(['a']) } catch (err) { tt.fail(`libvirt daemon does not start: ${(err as Error).message}`); return }
    const A = bed.daemons[0]!
    const imageDir = path.join(A.dir, 'images')
    const stateDir = path.join(A.dir, 'state')
    const driver = (): LibvirtDriver => new LibvirtDriver({ uri: A.uri, imageDir, stateDir, domainType: 'qemu', emulator: TCG_PAD_EMULATOR, callTimeoutMs: 30_000 }, { logger: silentLogger() })
    const spec = (id: string): VmSpec => ({ id, vcpus: 1, memMiB: 64, extra: { disks: [{ file: `/srv/src/${id}.qcow2`, format: 'qcow2', sizeBytes: 64 * MiB }] } })
    const image = (id: string): string => path.join(imageDir, id, `${id}.qcow2`)
    const journal = (kind: string, id: string): string => path.join(stateDir, `${kind}-images`, `${id}.json`)
    drv = driver()

    // --- An incoming move that aborts: its image goes, after a restart too, and a retry is admitted.
    await drv.prepareIncoming(spec('v1'), '127.0.0.1:0', { storage: true, migration: 'm1' })
    tt.ok(fs.existsSync(image('v1')), 'prepare created the image')
    tt.same(JSON.parse(fs.readFileSync(journal('incoming', 'v1'), 'utf8')), { migration: 'm1', images: [image('v1')] }, 'and journaled it under its migration')
    await tt.rejects(drv.prepareIncoming(spec('v1'), '127.0.0.1:0', { storage: true, migration: 'm2' }), /already exists/, 'while it is there, another prepare is refused')
    tt.same(JSON.parse(fs.readFileSync(journal('incoming', 'v1'), 'utf8')).migration, 'm1', 'the refused prepare left the journal as it was')

    drv = driver() // the agent restarted
    tt.same(await drv.dropIncomingImages('v1', 'm9'), [], 'the images of another migration are not touched')
    tt.ok(fs.existsSync(image('v1')), 'the image is still there')
    tt.same(await drv.dropIncomingImages('v1', 'm1'), [image('v1')], 'after the restart, m1 aborted: its image is deleted')
    tt.notOk(fs.existsSync(image('v1')), 'the image is gone')
    tt.notOk(fs.existsSync(path.join(imageDir, 'v1')), 'with its directory')
    tt.notOk(fs.existsSync(journal('incoming', 'v1')), 'and the journal entry')
    tt.same(await drv.dropIncomingImages('v1', 'm1'), [], 'dropping again does nothing')
    await drv.prepareIncoming(spec('v1'), '127.0.0.1:0', { storage: true, migration: 'm3' })
    tt.ok(fs.existsSync(image('v1')), 'a retry is admitted and creates the image afresh')
    await drv.dropIncomingImages('v1', 'm3')

    // --- Never an image a domain here uses.
    await drv.prepareIncoming(spec('v2'), '127.0.0.1:0', { storage: true, migration: 'm4' })
    const xml = `<domain type='qemu'><name>other</name><memory unit='MiB'>64</memory><vcpu>1</vcpu><os><type arch='x86_64'>hvm</type></os>` +
      `<devices><disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='${image('v2')}'/><target dev='vda' bus='virtio'/></disk></devices></domain>`
    const xmlFile = path.join(A.dir, 'other.xml')
    fs.writeFileSync(xmlFile, xml)
    execFileSync('virsh', ['-c', A.uri, 'define', xmlFile], { stdio: 'ignore' })
    tt.same(await drv.dropIncomingImages('v2', 'm4'), [], 'an image a defined domain uses is not deleted')
    tt.ok(fs.existsSync(image('v2')), 'it is still there')
    execFileSync('virsh', ['-c', A.uri, 'undefine', 'other'], { stdio: 'ignore' })
    tt.same(await drv.dropIncomingImages('v2', 'm4'), [image('v2')], 'once no domain uses it, it goes')

    // --- A guest that runs here from its incoming image owns it; the older departed copy goes.
    await drv.prepareIncoming(spec('v3'), '127.0.0.1:0', { storage: true, migration: 'm5' })
    fs.writeFileSync(image('v3') + '.departed', 'an older copy')
    await drv.start({ id: 'v3', vcpus: 1, memMiB: 64, extra: { disks: [{ file: image('v3'), format: 'qcow2' }], balloon: false } })
    tt.ok((await drv.list()).some(v => v.id === 'v3' && v.state === 'running'), 'v3 runs here from the image created for it')
    await until('the journal lets go of v3', () => !fs.existsSync(journal('incoming', 'v3')), 10_000)
    await until('the departed copy beside it goes', () => !fs.existsSync(image('v3') + '.departed'), 10_000)
    tt.pass('the journal no longer holds v3\'s image, and its older departed copy is removed')
    tt.same(await drv.dropIncomingImages('v3', 'm5'), [], 'a late drop of m5 deletes nothing')
    tt.ok(fs.existsSync(image('v3')), 'the running guest keeps its disk')

    // --- Source: the images a committed move left are set aside, once, and only when unused.
    const left = path.join(A.dir, 'local', 'v4.qcow2')
    fs.mkdirSync(path.dirname(left), { recursive: true })
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', left, String(MiB)])
    fs.mkdirSync(path.dirname(journal('outgoing', 'v4')), { recursive: true })
    fs.writeFileSync(journal('outgoing', 'v4'), JSON.stringify({ migration: null, images: [left] }))
    drv = driver()
    tt.same(await drv.retireDepartedDisks('v4'), [left + '.departed'], 'the image v4 left is set aside')
    tt.notOk(fs.existsSync(left), 'its path is free for a return')
    tt.ok(fs.existsSync(left + '.departed'), 'the retained copy is there')
    tt.notOk(fs.existsSync(journal('outgoing', 'v4')), 'the journal entry is settled')
    tt.same(await drv.retireDepartedDisks('v4'), [], 'a second call does nothing')
    fs.writeFileSync(journal('outgoing', 'v3'), JSON.stringify({ migration: null, images: [image('v3')] }))
    drv = driver()
    await tt.rejects(drv.retireDepartedDisks('v3'), { code: 'VM_RUNNING' }, 'a VM that runs here keeps its images in place')
    tt.ok(fs.existsSync(image('v3')), 'v3\'s image is untouched')
  })
}
