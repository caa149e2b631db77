/**
 * The Noise identity file of the Hyperswarm mesh (agent/adapters/identity.ts): created once with
 * owner-only permissions, loaded unchanged afterwards, never silently replaced when damaged.
 * Method: a temporary state directory per case.
 */
import t from 'tap'
import { mkdtemp, readFile, rm, stat, writeFile, chmod } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { createKeyPair, hostIdOf, IdentityError, loadOrCreateKeyPair } from '../../agent/adapters/identity.js'

async function tmpDir (t: { teardown: (f: () => Promise<void>) => void }): Promise<string> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'starling-identity-'))
  t.teardown(() => rm(dir, { recursive: true, force: true }))
  return dir
}

t.test('created with mode 0600 in a 0700 directory, then loaded unchanged', async t => {
  const dir = await tmpDir(t)
  const file = path.join(dir, 'state', 'identity.json')
  const kp = await loadOrCreateKeyPair(file)
  t.equal(kp.publicKey.byteLength, 32)
  t.equal(kp.secretKey.byteLength, 64)
  t.match(hostIdOf(kp), /^[0-9a-f]{64}$/)
  t.equal((await stat(file)).mode & 0o777, 0o600)
  t.equal((await stat(path.dirname(file))).mode & 0o777, 0o700)
  const again = await loadOrCreateKeyPair(file)
  t.equal(hostIdOf(again), hostIdOf(kp))
  t.ok(again.secretKey.equals(kp.secretKey))
  const doc = JSON.parse(await readFile(file, 'utf8'))
  t.equal(doc.publicKey, hostIdOf(kp))
})

t.test('a file readable by others is tightened to 0600', async t => {
  const dir = await tmpDir(t)
  const file = path.join(dir, 'identity.json')
  await loadOrCreateKeyPair(file)
  await chmod(file, 0o644)
  await loadOrCreateKeyPair(file)
  t.equal((await stat(file)).mode & 0o777, 0o600)
})

t.test('a damaged file is an IdentityError, never replaced', async t => {
  const dir = await tmpDir(t)
  const file = path.join(dir, 'identity.json')
  const other = createKeyPair()
  const cases: Array<[string, string]> = [
    ['not json', '{'],
    ['short key', JSON.stringify({ version: 1, secretKey: 'ab' })],
    ['halves disagree', JSON.stringify({ version: 1, secretKey: createKeyPair().secretKey.subarray(0, 32).toString('hex') + other.publicKey.toString('hex') })],
    ['wrong public key', JSON.stringify({ version: 1, publicKey: hostIdOf(other), secretKey: createKeyPair().secretKey.toString('hex') })]
  ]
  for (const [name, text] of cases) {
    await writeFile(file, text, { mode: 0o600 })
    await t.rejects(loadOrCreateKeyPair(file), IdentityError, name)
    t.equal(await readFile(file, 'utf8'), text, `${name}: file left as it was`)
  }
})

t.test('a seed gives the same key pair every time', async t => {
  const seed = Buffer.alloc(32, 7)
  t.equal(hostIdOf(createKeyPair(seed)), hostIdOf(createKeyPair(seed)))
  t.not(hostIdOf(createKeyPair()), hostIdOf(createKeyPair()))
})
