/**
 * The LevelDB store (agent/adapters/level-store.ts) and its in-memory twin
 * (agent/adapters/memory-store.ts).
 *
 * Goal: both obey the Store contract; the LevelDB one also maps LevelDB's directory lock, held by
 * another process, to StateLockedError, and reports corrupt values and unusable directories.
 * Method: the shared contract suite (test/contract/store.ts) against each, in a temporary
 * directory for LevelDB; the lock case with a real second Node process holding the directory.
 */
import t from 'tap'
import { spawn } from 'node:child_process'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Level } from 'level'
import { levelStore } from '../../agent/adapters/level-store.js'
import { MemoryStoreData, memoryStore, compareKeys } from '../../agent/adapters/memory-store.js'
import { memoryLogger, silentLogger } from '../../agent/lib/logger.js'
import { storeContract } from '../contract/store.js'

const logger = silentLogger()

async function tempRoot (): Promise<string> {
  return await mkdtemp(join(tmpdir(), 'starling-store-'))
}

t.test('contract: LevelDB store', async t => {
  const root = await tempRoot()
  let n = 0
  storeContract(t, {
    name: 'level',
    location: async () => {
      const location = join(root, `db-${n++}`)
      return { make: () => levelStore({ location })({ logger }) }
    },
    cleanup: async () => { await rm(root, { recursive: true, force: true }) }
  })
})

t.test('contract: memory store', async t => {
  let n = 0
  storeContract(t, {
    name: 'memory',
    location: async () => {
      const data = new MemoryStoreData(`mem-${n++}`)
      return { make: () => memoryStore({ data })({ logger }) }
    },
    cleanup: async () => {}
  })
})

t.test('memory store: a simulated crash releases the lock and kills the old instance', async t => {
  const data = new MemoryStoreData('h1')
  const before = memoryStore({ data })({ logger })
  await before.open()
  await before.batch([{ type: 'put', key: 'k', value: 1 }])
  data.release()
  const after = memoryStore({ data })({ logger })
  await after.open()
  t.equal(await after.get('k'), 1, 'data survives')
  await t.rejects(before.get('k'), { code: 'STORE_NOT_OPEN' }, 'the crashed instance is dead')
  await after.close()
})

t.test('compareKeys is UTF-8 byte order', async t => {
  t.ok(compareKeys('\uffff', '😀') < 0)
  t.ok('\uffff' > '😀', 'unlike JavaScript string order')
  t.equal(compareKeys('a', 'a'), 0)
})

/** Start a Node process that opens `location` with plain `level` and holds it until killed. */
async function holdInAnotherProcess (location: string): Promise<{ kill: () => Promise<void> }> {
  const script = `
    import { Level } from 'level'
    const db = new Level(process.argv[1])
    await db.open()
    process.stdout.write('held\\n')
    setInterval(() => {}, 1 << 30)
  `
  const child = spawn(process.execPath, ['--input-type=module', '-e', script, location], {
    cwd: process.cwd(), stdio: ['ignore', 'pipe', 'pipe']
  })
  let stderr = ''
  const exited = new Promise<void>(resolve => child.once('exit', () => resolve()))
  child.stderr.on('data', (b: Buffer) => { stderr += b.toString() })
  await new Promise<void>((resolve, reject) => {
    child.stdout.on('data', (b: Buffer) => { if (b.toString().includes('held')) resolve() })
    child.on('exit', code => reject(new Error(`holder exited with ${code}: ${stderr}`)))
  })
  return {
    kill: async () => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
      await exited
    }
  }
}

t.test('level: a directory held by another process is StateLockedError', async t => {
  const root = await tempRoot()
  t.teardown(() => rm(root, { recursive: true, force: true }))
  const location = join(root, 'db')
  const holder = await holdInAnotherProcess(location)
  t.teardown(() => holder.kill())

  const log = memoryLogger()
  const store = levelStore({ location })({ logger: log })
  const err = await store.open().then(() => null, (e: unknown) => e)
  t.match(err, {
    name: 'StateLockedError',
    code: 'STATE_LOCKED',
    stateDir: location,
    message: `state directory ${location} is in use by another starling agent`
  })
  t.match((err as Error).cause, { code: 'LEVEL_DATABASE_NOT_OPEN', cause: { code: 'LEVEL_LOCKED' } }, 'LevelDB error kept as cause')
  await t.rejects(store.get('k'), { code: 'STORE_NOT_OPEN' }, 'the store stays closed')

  // kill -9 of the holder frees the lock (the OS drops it with the process): a restart works.
  await holder.kill()
  await store.open()
  await store.batch([{ type: 'put', key: 'k', value: 'mine' }])
  t.equal(await store.get('k'), 'mine')
  await store.close()
  t.ok(log.find('store opened').length === 1, 'open is logged once')
})

t.test('level: a value that is not JSON is STORE_CORRUPT', async t => {
  const root = await tempRoot()
  t.teardown(() => rm(root, { recursive: true, force: true }))
  const location = join(root, 'db')
  const raw = new Level<string, string>(location, { valueEncoding: 'utf8' })
  await raw.put('bad/1', '{not json')
  await raw.put('good', '"ok"')
  await raw.close()
  const store = levelStore({ location })({ logger })
  await store.open()
  t.equal(await store.get('good'), 'ok')
  await t.rejects(store.get('bad/1'), { name: 'StoreError', code: 'STORE_CORRUPT', message: /bad\/1/ })
  await t.rejects(store.entries('bad/'), { code: 'STORE_CORRUPT' })
  await store.close()
})

t.test('level: a location that cannot be a directory is STORE_IO', async t => {
  const root = await tempRoot()
  t.teardown(() => rm(root, { recursive: true, force: true }))
  const file = join(root, 'plain-file')
  await writeFile(file, 'x')
  const store = levelStore({ location: join(file, 'db') })({ logger })
  await t.rejects(store.open(), { name: 'StoreError', code: 'STORE_IO', message: /cannot create state directory/ })
})

t.test('level: compact keeps the data and is logged', async t => {
  const root = await tempRoot()
  t.teardown(() => rm(root, { recursive: true, force: true }))
  const log = memoryLogger()
  const store = levelStore({ location: join(root, 'db'), sync: false })({ logger: log })
  await store.open()
  await store.batch(Array.from({ length: 1000 }, (_, i) => ({ type: 'put' as const, key: `hist/${i}`, value: { i } })))
  await store.batch(Array.from({ length: 900 }, (_, i) => ({ type: 'del' as const, key: `hist/${i}` })))
  await store.compact()
  t.equal((await store.entries('hist/')).length, 100)
  t.equal(log.find('store compacted').length, 1)
  t.equal(log.find('store compacted')[0]?.component, 'agent:store')
  await store.close()
})

t.test('level: a batch over the limit is logged as an error', async t => {
  const root = await tempRoot()
  t.teardown(() => rm(root, { recursive: true, force: true }))
  const log = memoryLogger()
  const store = levelStore({ location: join(root, 'db'), batchOpsMax: 2 })({ logger: log })
  await store.open()
  await t.rejects(store.batch([1, 2, 3].map(i => ({ type: 'put' as const, key: `k${i}`, value: i }))), { code: 'STORE_BATCH_TOO_LARGE' })
  t.match(log.find('batch limit reached', 'error'), [{ fields: { ops: 3, batchOpsMax: 2 } }])
  await store.close()
})
