/**
 * The copy a disk leaves behind is reused on its return only while it is intact: real qcow2
 * images and a real (throwaway, read-only) QEMU reading their bitmaps. A seal that counted a
 * write, a size or backing file that differs, a raw image, an image without a seal: each is
 * refused with its reason. The NBD address carries what the target holds per disk.
 */
import t from 'tap'
import { execFileSync } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { spawn } from 'node:child_process'
import { intactCopyToken, joinHave, newToken, nodeBitmaps, prepareDeparture, probeImage, seal, sealName, splitHave, trackName } from '../../agent/adapters/qemu-disk-delta.js'
import { QmpClient } from '../../agent/adapters/qmp-client.js'

const MiB = 1024 * 1024

t.test('the NBD address carries the tokens per disk, and nothing else gets through', async t => {
  const have = new Map([[0, newToken(1_700_000_000_000)], [2, newToken(1_700_000_000_001)]])
  const s = joinHave('nbd:[::1]:10809', have)
  const back = splitHave(s)
  t.equal(back.addr, 'nbd:[::1]:10809')
  t.same([...back.have], [...have])
  t.same(splitHave('nbd:127.0.0.1:1').have.size, 0, 'an address without tokens')
  t.same([...splitHave('nbd:h:1;have=0:../../etc,1:x y,x:abc').have], [], 'malformed tokens are ignored')
  t.equal(joinHave('nbd:h:1', new Map()), 'nbd:h:1')
  t.ok(newToken(2) > newToken(1), 'tokens sort by time')
})

let qemuOk = true
try {
  execFileSync('qemu-system-x86_64', ['--version'], { stdio: 'ignore' })
  execFileSync('qemu-img', ['--version'], { stdio: 'ignore' })
  execFileSync('qemu-io', ['--version'], { stdio: 'ignore' })
} catch (err) {
  qemuOk = false
  t.fail(`qemu-system-x86_64, qemu-img or qemu-io (qemu-utils) is missing: ${(err as Error).message}`)
}

if (qemuOk) {
  t.test('a sealed image is intact until something writes to it', async t => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'stl-delta-'))
    t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
    const img = path.join(dir, 'disk.qcow2')
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', img, String(64 * MiB)])
    execFileSync('qemu-io', ['-f', 'qcow2', '-c', 'write -q -P 0x11 0 8M', img])
    const bin = 'qemu-system-x86_64'

    let f = await probeImage(bin, img)
    t.equal(f.format, 'qcow2')
    t.equal(f.virtualSize, 64 * MiB)
    t.match(intactCopyToken(f, { sizeBytes: 64 * MiB }), { token: null, reason: /no departure seal/ }, 'no seal: not a copy left by a migration')

    const token = newToken(Date.now())
    execFileSync('qemu-img', ['bitmap', '--add', img, sealName(token)])
    f = await probeImage(bin, img)
    t.same(intactCopyToken(f, { sizeBytes: 64 * MiB }), { token, reason: 'intact since it was left' }, 'sealed and untouched: intact')
    t.match(intactCopyToken(f, { sizeBytes: 32 * MiB }), { token: null, reason: /size/ }, 'another size: refused')
    t.match(intactCopyToken(f, { sizeBytes: 64 * MiB, backing: '/base.qcow2' }), { token: null, reason: /backing file/ }, 'another backing file: refused')

    execFileSync('qemu-io', ['-f', 'qcow2', '-c', 'write -q -P 0x22 1M 64k', img])
    f = await probeImage(bin, img)
    const r = intactCopyToken(f, { sizeBytes: 64 * MiB })
    t.equal(r.token, null, 'one write after the seal: no longer intact')
    t.match(r.reason, /counted 65536 bytes written/, `the reason says so: ${r.reason}`)

    const raw = path.join(dir, 'disk.raw')
    execFileSync('qemu-img', ['create', '-q', '-f', 'raw', raw, String(MiB)])
    await t.rejects(probeImage(bin, raw), /cannot read/, 'a raw image cannot be probed as qcow2 (and keeps no bitmap)')
    await t.rejects(probeImage(bin, path.join(dir, 'none.qcow2')), /cannot read/, 'a missing image: a clear error')
  })
}

if (qemuOk) {
  t.test('a disk that cannot keep a bitmap (qcow2 v2) is left out of the departure, the others are not', async t => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'stl-delta-'))
    const v2 = path.join(dir, 'old.qcow2')
    const v3 = path.join(dir, 'new.qcow2')
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', 'compat=0.10', v2, String(16 * MiB)])
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', v3, String(16 * MiB)])
    const sock = path.join(dir, 'qmp.sock')
    const bd = (node: string, file: string): string => JSON.stringify({ driver: 'qcow2', 'node-name': node, file: { driver: 'file', filename: file } })
    const p = spawn('qemu-system-x86_64', ['-machine', 'none', '-nodefaults', '-display', 'none', '-S', '-blockdev', bd('disk0', v2), '-blockdev', bd('disk1', v3), '-qmp', `unix:${sock},server=on,wait=off`], { stdio: 'ignore' })
    t.teardown(() => { p.kill('SIGKILL'); fs.rmSync(dir, { recursive: true, force: true }) })
    const qmp = await QmpClient.connect(sock, { connectTimeoutMs: 15_000, commandTimeoutMs: 10_000 })
    t.teardown(() => qmp.close())
    const token = newToken(Date.now())
    const dep = await prepareDeparture(qmp, ['disk0', 'disk1'], token, {})
    t.same(dep.nodes, ['disk1'], 'only the v3 image took the departure bitmap')
    t.match(dep.skipped.join(), /disk0/, `the v2 image is skipped with QEMU's reason: ${dep.skipped.join()}`)
    t.same(dep.mapping, [{ 'node-name': 'disk1', alias: 'disk1', bitmaps: [{ name: trackName(token), alias: trackName(token) }] }], 'the mapping carries only that bitmap')
    const failed = await seal(qmp, ['disk0', 'disk1'], token, {})
    t.equal(failed.length, 1, 'sealing is best effort: the v2 image fails, nothing throws')
    t.ok((await nodeBitmaps(qmp, 'disk1', {})).some(b => b.name === sealName(token) && b.persistent), 'the v3 image is sealed')
  })
}
