/**
 * Goal: the libvirt driver admits incoming disk copies against the target's free space minus what
 * the copies it admitted before may still write: two copies asked for at once, where only one
 * fits, are not both admitted; the refusal names the reserved space; the space comes back when
 * the admitted copy goes (its incoming domain is gone), and a copy that fits beside another is
 * admitted.
 *
 * Method: one libvirtd daemon (test/libvirt/daemons.ts; prepareIncoming asks it whether the VM is
 * already there) and a driver whose imageDir is a 100 MiB tmpfs. Incoming specs carry 64 MiB
 * qcow2 disks (virtual size; the empty images take a few hundred KiB): two prepareIncoming with
 * storage at once, then killIfNotRunning of the admitted one (no domain: the copy went), then the
 * refused one again, then a 24 MiB disk beside it and a 32 MiB one that no longer fits. No guest
 * runs. When libvirt cannot run here the file fails with the reason; it never skips.
 * Run: npx tap test/adapters/libvirt-storage-admission.test.ts  (a few seconds)
 */
import t from 'tap'
import { execFileSync } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import { LibvirtDriver } from '../../agent/adapters/libvirt-driver.js'
import type { VmSpec } from '../../agent/ports/hypervisor-driver.js'
import { silentLogger } from '../../agent/lib/logger.js'
import { libvirtUnavailable, startLibvirtDaemons, type LibvirtBed, TCG_PAD_EMULATOR } from '../libvirt/daemons.js'

const MiB = 1048576
const why = libvirtUnavailable()
if (why !== null) {
  t.fail(`cannot run the libvirt admission test: ${why}`)
} else {
  await t.test('incoming disk copies reserve the space they may take', async tt => {
    let bed: LibvirtBed | null = null
    let mounted = ''
    tt.teardown(async () => {
      if (mounted !== '') { try { execFileSync('umount', [mounted]) } catch {} }
      await bed?.stop()
    })
    try { bed = await startLibvirtDaemons(['a']) } catch (err) { tt.fail(`libvirt daemon does not start: ${(err as Error).message}`) }
    if (bed !== null) {
      const A = bed.daemons[0]!
      const imageDir = path.join(A.dir, 'images')
      fs.mkdirSync(imageDir, { recursive: true })
      execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=100m', 'tmpfs', imageDir])
      mounted = imageDir
      const drv = new LibvirtDriver({ uri: A.uri, imageDir, domainType: 'qemu', emulator: TCG_PAD_EMULATOR, callTimeoutMs: 30_000 }, { logger: silentLogger() })
      const spec = (id: string, mib: number): VmSpec => ({ id, vcpus: 1, memMiB: 64, extra: { disks: [{ file: `/srv/src/${id}.qcow2`, format: 'qcow2', sizeBytes: mib * MiB }] } })
      const prepare = async (s: VmSpec): Promise<{ uri: string, nbd?: string }> => await drv.prepareIncoming(s, '127.0.0.1:0', { storage: true })

      const both = await Promise.allSettled([prepare(spec('v1', 64)), prepare(spec('v2', 64))])
      const admitted = both.flatMap((r, i) => r.status === 'fulfilled' ? [`v${i + 1}`] : [])
      const refused = both.flatMap(r => r.status === 'rejected' ? [(r.reason as Error).message] : [])
      tt.equal(admitted.length, 1, `one of two 64 MiB copies asked for at once is admitted on 100 MiB (${admitted.join(', ')})`)
      tt.equal(refused.length, 1, 'the other is refused')
      tt.match(refused[0] ?? '', /not enough free space at the target for its disks: 64 MiB needed in .*, \d+ MiB free of which 64 MiB are reserved by other incoming copies/, `with the reason: ${refused[0] ?? ''}`)
      const first = admitted[0] ?? 'v1'
      const second = first === 'v1' ? 'v2' : 'v1'
      tt.ok(fs.existsSync(path.join(imageDir, first, `${first}.qcow2`)), 'the admitted copy has its image')
      tt.notOk(fs.existsSync(path.join(imageDir, second)), 'the refused one created nothing')

      await tt.rejects(drv.killIfNotRunning(first), { code: 'VM_NOT_FOUND' }, 'the admitted copy went (no incoming domain)')
      await prepare(spec(second, 64))
      tt.pass('its space is free again: the other copy is admitted')
      await prepare(spec('v3', 24))
      tt.pass('a 24 MiB copy fits beside the 64 MiB one')
      await tt.rejects(prepare(spec('v4', 32)), { code: 'DRIVER_FAILED', message: /of which 88 MiB are reserved by other incoming copies/ }, 'a 32 MiB one no longer does')
    }
  })
}
