/**
 * The test guest for every test and benchmark that boots one: builds it once (test/guest/build.sh
 * caches by the script's content) and returns the directory with `vmlinuz` and `initramfs.cpio`.
 * Throws with build.sh's reason when it cannot be built (no QEMU, not root on a fresh machine...).
 */
import { execFileSync } from 'node:child_process'
import { existsSync } from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

const here = path.dirname(fileURLToPath(import.meta.url))

/** build.sh next to this file, or (compiled under dist/) in the repository's test/guest. */
function buildScript (): string {
  for (let dir = here; ; dir = path.dirname(dir)) {
    for (const p of [path.join(dir, 'build.sh'), path.join(dir, 'test', 'guest', 'build.sh')]) if (existsSync(p)) return p
    if (path.dirname(dir) === dir) throw new Error(`test/guest/build.sh not found above ${here}`)
  }
}

export function buildTestGuest (): string {
  execFileSync('qemu-system-x86_64', ['--version'], { stdio: 'ignore' })
  const out = execFileSync('bash', [buildScript()], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] })
  return out.trim().split('\n').pop() ?? ''
}

/**
 * The kernel to boot from a guest directory: the uncompressed PVH-bootable vmlinux when the
 * build could unpack one (QEMU enters it directly: a TCG boot takes about half the time), the
 * bzImage otherwise.
 */
export function guestKernel (guestDir: string): string {
  const pvh = path.join(guestDir, 'vmlinux')
  return existsSync(pvh) ? pvh : path.join(guestDir, 'vmlinuz')
}
