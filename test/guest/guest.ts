/**
 * The test guest for every test and benchmark that boots one: builds it once (test/guest/build.sh
 * caches by the script's content) and returns the directory with `vmlinuz` and `initramfs.cpio`.
 * Throws with build.sh's reason when it cannot be built (no QEMU, not root on a fresh machine...).
 */
import { execFileSync } from 'node:child_process'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

const here = path.dirname(fileURLToPath(import.meta.url))

export function buildTestGuest (): string {
  execFileSync('qemu-system-x86_64', ['--version'], { stdio: 'ignore' })
  const out = execFileSync('bash', [path.join(here, 'build.sh')], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] })
  return out.trim().split('\n').pop() ?? ''
}
