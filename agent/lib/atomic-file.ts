/**
 * Writes a small file so that a crash leaves either the old content or the new one, never half
 * of it: a temporary file beside it (created exclusively, mode `mode`), fsync, rename over the
 * file, fsync of the directory.
 */
import { randomBytes } from 'node:crypto'
import { open, rename, unlink } from 'node:fs/promises'
import path from 'node:path'

export async function writeFileAtomically (file: string, text: string, mode = 0o600): Promise<void> {
  const tmp = `${file}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`
  const fh = await open(tmp, 'wx', mode)
  try {
    await fh.writeFile(text, 'utf8')
    await fh.sync()
  } catch (err) {
    await fh.close().catch(() => {})
    await unlink(tmp).catch(() => {})
    throw err
  }
  await fh.close()
  try {
    await rename(tmp, file)
  } catch (err) {
    await unlink(tmp).catch(() => {})
    throw err
  }
  // Make the rename durable too.
  const dir = await open(path.dirname(file), 'r')
  try { await dir.sync() } catch { /* not supported on every file system */ } finally { await dir.close() }
}
