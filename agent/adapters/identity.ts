/**
 * The agent's Noise identity: an Ed25519 key pair whose public key is the host id on the mesh.
 *
 * The key pair is kept in one JSON file in the state directory, readable by its owner only
 * (mode 0600, directory 0700), written atomically (temporary file, fsync, rename) so that a crash
 * never leaves half a key. Losing the file means a new identity: the cluster configuration must
 * then list the new public key.
 */
import { randomBytes } from 'node:crypto'
import { chmod, mkdir, readFile, stat } from 'node:fs/promises'
import path from 'node:path'
import HyperDHT from 'hyperdht'
import { StarlingError, type StarlingErrorOptions } from '../lib/errors.js'
import { writeFileAtomically as writeAtomically } from '../lib/atomic-file.js'

export interface KeyPair {
  /** 32 bytes; its lowercase hex is the host id. */
  publicKey: Buffer
  /** 64 bytes (libsodium layout: seed then public key). */
  secretKey: Buffer
}

/** The identity file exists but cannot be used (unreadable, not ours, corrupt). Start-up must stop. */
export class IdentityError extends StarlingError {
  static override readonly name = 'IdentityError'
  override readonly code = 'IDENTITY_INVALID' as const
  readonly file: string
  constructor (file: string, message: string, options: StarlingErrorOptions = {}) {
    super(`identity file ${file}: ${message}`, options)
    this.name = 'IdentityError'
    this.file = file
  }
}

interface IdentityFile { version: 1, publicKey: string, secretKey: string }

/** A fresh key pair from 32 random bytes (or from `seed`, for reproducible tests). */
export function createKeyPair (seed?: Uint8Array): KeyPair {
  const kp = HyperDHT.keyPair(seed === undefined ? randomBytes(32) : Buffer.from(seed))
  return { publicKey: Buffer.from(kp.publicKey), secretKey: Buffer.from(kp.secretKey) }
}

/** The host id of a key pair: the lowercase hex of its public key. */
export function hostIdOf (kp: { publicKey: Uint8Array }): string {
  return Buffer.from(kp.publicKey).toString('hex')
}

function parseIdentity (file: string, text: string): KeyPair {
  let doc: Partial<IdentityFile>
  try {
    doc = JSON.parse(text) as Partial<IdentityFile>
  } catch (err) {
    throw new IdentityError(file, 'not valid JSON', { cause: err })
  }
  if (typeof doc.secretKey !== 'string' || !/^[0-9a-f]{128}$/.test(doc.secretKey)) {
    throw new IdentityError(file, 'secretKey must be 128 lowercase hex digits')
  }
  const secretKey = Buffer.from(doc.secretKey, 'hex')
  // Re-derive from the seed: a file whose halves do not match is corrupt, not a key to trust.
  const derived = createKeyPair(secretKey.subarray(0, 32))
  if (!derived.secretKey.equals(secretKey)) throw new IdentityError(file, 'secretKey is inconsistent (corrupt file?)')
  if (doc.publicKey !== undefined && doc.publicKey !== hostIdOf(derived)) {
    throw new IdentityError(file, 'publicKey does not match secretKey')
  }
  return derived
}

/**
 * Loads the key pair stored in `file`, or creates one and stores it (mode 0600; the directory is
 * created with mode 0700 when missing). A file with looser permissions is tightened to 0600.
 * Rejects with IdentityError when the file exists but is unusable: never silently replaces an
 * identity.
 */
export async function loadOrCreateKeyPair (file: string): Promise<KeyPair> {
  let text: string | null = null
  try {
    text = await readFile(file, 'utf8')
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw new IdentityError(file, 'cannot be read', { cause: err })
  }
  if (text !== null) {
    const kp = parseIdentity(file, text)
    const st = await stat(file)
    if ((st.mode & 0o077) !== 0) await chmod(file, 0o600)
    return kp
  }
  await mkdir(path.dirname(file), { recursive: true, mode: 0o700 })
  const kp = createKeyPair()
  const doc: IdentityFile = { version: 1, publicKey: hostIdOf(kp), secretKey: kp.secretKey.toString('hex') }
  try {
    await writeAtomically(file, JSON.stringify(doc, null, 2) + '\n')
  } catch (err) {
    throw new IdentityError(file, 'cannot be written', { cause: err })
  }
  // Two processes racing on a fresh directory: whoever renamed last wins; both must use that one.
  return parseIdentity(file, await readFile(file, 'utf8'))
}
