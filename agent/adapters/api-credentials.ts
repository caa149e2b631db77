/**
 * What the control API's two listeners need from the host: the bearer token that allows changes
 * over TCP (node.apiTokenFile) and the group the control socket is given (node.apiSocketGroup).
 */
import { readFileSync, statSync } from 'node:fs'
import { ConfigError } from '../core/index.js'

/**
 * The token in `file` (first line, trimmed), or null when the file does not exist (TCP stays
 * read-only). A token that other users can read is no secret: refused, as ssh refuses a key file
 * that others can read. A token shorter than 16 characters is refused too.
 */
export function readApiToken (file: string): string | null {
  let st
  try { st = statSync(file) } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null
    throw new ConfigError(`config: node.apiTokenFile ${file}: ${(err as Error).message}`, 'node.apiTokenFile')
  }
  if ((st.mode & 0o007) !== 0) throw new ConfigError(`config: node.apiTokenFile ${file} is readable or writable by other users (mode ${(st.mode & 0o777).toString(8)}): chmod 0640 and give it to root:starling`, 'node.apiTokenFile')
  let text: string
  try { text = readFileSync(file, 'utf8') } catch (err) { throw new ConfigError(`config: node.apiTokenFile ${file}: ${(err as Error).message}`, 'node.apiTokenFile') }
  const token = (text.split('\n')[0] ?? '').trim()
  if (token.length < 16) throw new ConfigError(`config: node.apiTokenFile ${file} must hold a token of at least 16 characters (e.g. \`openssl rand -hex 32\`)`, 'node.apiTokenFile')
  return token
}

/** gid of a group given by name (looked up in /etc/group) or number. */
export function resolveGroup (group: string, groupFile = '/etc/group'): number {
  if (/^\d+$/.test(group)) return Number(group)
  let text = ''
  try { text = readFileSync(groupFile, 'utf8') } catch { /* no group file: not found below */ }
  for (const line of text.split('\n')) {
    const [name, , gid] = line.split(':')
    if (name === group && gid !== undefined && /^\d+$/.test(gid)) return Number(gid)
  }
  throw new ConfigError(`config: node.apiSocketGroup: no group "${group}" on this host`, 'node.apiSocketGroup')
}
