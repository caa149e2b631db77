/**
 * Contract suite for the Store port (agent/ports/store.ts).
 *
 * Goal: the in-memory store the simulator uses and the LevelDB store the agent uses obey the same
 * rules, so a simulation that passes says something about the real agent.
 * Method: every case gets a fresh location from the harness and may create several store
 * instances on it (to reopen, or to contend for the lock), then asserts only through the port.
 */
import type { Test } from 'tap'
import type { PersistOp } from '../../agent/core/effects.js'
import type { Store } from '../../agent/ports/store.js'

/** A place where stores can be opened: every call to `make` is a new instance on the same data. */
export interface StoreLocation {
  make (): Store
}

export interface StoreHarness {
  /** Implementation name, for test titles. */
  name: string
  /** A fresh, empty location. */
  location (): Promise<StoreLocation>
  /** Remove everything the harness created. Called once, after every case. */
  cleanup (): Promise<void>
}

const put = (key: string, value: unknown): PersistOp => ({ type: 'put', key, value })
const del = (key: string): PersistOp => ({ type: 'del', key })

export function storeContract (t: Test, harness: StoreHarness): void {
  /** Every store a case opened, closed after it so a failing case does not leak a lock. */
  const opened: Store[] = []
  const fresh = async (): Promise<{ loc: StoreLocation, store: Store }> => {
    const loc = await harness.location()
    const store = loc.make()
    opened.push(store)
    await store.open()
    return { loc, store }
  }
  const another = (loc: StoreLocation): Store => {
    const s = loc.make()
    opened.push(s)
    return s
  }
  t.afterEach(async () => {
    for (const s of opened.splice(0)) await s.close().catch(() => {})
  })
  t.teardown(() => harness.cleanup())

  t.test(`${harness.name}: get of a missing key is undefined; empty batch resolves`, async t => {
    const { store } = await fresh()
    t.equal(await store.get('nope'), undefined)
    await store.batch([])
    t.same(await store.entries(''), [])
  })

  t.test(`${harness.name}: JSON values round-trip`, async t => {
    const { store } = await fresh()
    const values: Record<string, unknown> = {
      'v/object': { a: 1, b: [1, 'two', null, true], c: { d: { e: 'deep' } } },
      'v/array': [3, 2, 1],
      'v/string': 'hé ✓ 😀',
      'v/number': -12.5,
      'v/zero': 0,
      'v/null': null,
      'v/false': false,
      'v/empty': ''
    }
    await store.batch(Object.entries(values).map(([k, v]) => put(k, v)))
    for (const [k, v] of Object.entries(values)) t.same(await store.get(k), v, k)
    // JSON semantics: undefined members vanish, as they would after a restart.
    await store.batch([put('v/holes', { keep: 1, drop: undefined })])
    t.same(await store.get('v/holes'), { keep: 1 })
  })

  t.test(`${harness.name}: stored values are copies`, async t => {
    const { store } = await fresh()
    const v = { n: 1, list: [1] }
    await store.batch([put('k', v)])
    v.n = 2
    v.list.push(2)
    const got = await store.get<{ n: number, list: number[] }>('k')
    t.same(got, { n: 1, list: [1] }, 'mutating after put changes nothing stored')
    got!.n = 99
    t.same(await store.get('k'), { n: 1, list: [1] }, 'mutating a result changes nothing stored')
  })

  t.test(`${harness.name}: ops of one batch apply in order`, async t => {
    const { store } = await fresh()
    await store.batch([put('a', 1), del('a'), del('b'), put('b', 2), put('c', 1), put('c', 3)])
    t.equal(await store.get('a'), undefined, 'put then del: gone')
    t.equal(await store.get('b'), 2, 'del then put: present')
    t.equal(await store.get('c'), 3, 'last put wins')
    await store.batch([del('never-existed')])
  })

  t.test(`${harness.name}: a batch with a bad value writes nothing`, async t => {
    const { store } = await fresh()
    await store.batch([put('keep', 'old')])
    const cyclic: Record<string, unknown> = {}
    cyclic['self'] = cyclic
    for (const [label, bad] of [['undefined', undefined], ['bigint', 10n], ['cycle', cyclic], ['function', () => 1]] as const) {
      await t.rejects(store.batch([put('keep', 'new'), put('fresh', 1), put('bad', bad)]),
        { name: 'StoreError', code: 'STORE_INVALID_VALUE' }, label)
      t.equal(await store.get('keep'), 'old', `${label}: earlier put of the batch not applied`)
      t.equal(await store.get('fresh'), undefined, `${label}: nothing else applied`)
    }
  })

  t.test(`${harness.name}: a batch over the limit is rejected whole`, async t => {
    const { store } = await fresh()
    const ops = Array.from({ length: 10_001 }, (_, i) => put(`many/${i}`, i))
    await t.rejects(store.batch(ops), { name: 'StoreError', code: 'STORE_BATCH_TOO_LARGE' })
    t.same(await store.entries('many/'), [])
    await store.batch(ops.slice(0, 10_000))
    t.equal((await store.entries('many/')).length, 10_000, 'exactly the limit is accepted')
  })

  t.test(`${harness.name}: entries(prefix) is the prefix range, in LevelDB key order`, async t => {
    const { store } = await fresh()
    const keys = ['hist/b', 'hist/a', 'hist/a/1', 'hist0', 'his', 'hist', 'hist/\uffff', 'hist/😀', 'hist/Z', 'hist/é', 'id/self', 'a']
    await store.batch(keys.map(k => put(k, k.length)))
    const got = await store.entries<number>('hist/')
    // UTF-8 byte order: 'Z' < 'a' < 'b' < 'é' (C3 A9) < '\uffff' (EF BF BF) < '😀' (F0 9F 98 80).
    // (JavaScript's < would put the surrogate pair of '😀' before '\uffff'.)
    t.same(got.map(([k]) => k), ['hist/Z', 'hist/a', 'hist/a/1', 'hist/b', 'hist/é', 'hist/\uffff', 'hist/😀'])
    t.same(got[0], ['hist/Z', 6], 'values come with their keys')
    t.same((await store.entries('')).map(([k]) => k).slice(0, 4), ['a', 'his', 'hist', 'hist/Z'], "'' scans everything")
    t.same(await store.entries('zzz'), [], 'no match: empty')
    t.same((await store.entries('hist')).length, 9, "'hist' includes 'hist', 'hist0' and 'hist/...'")
  })

  t.test(`${harness.name}: concurrent batches all land`, async t => {
    const { store } = await fresh()
    await Promise.all(Array.from({ length: 50 }, (_, i) => store.batch([put(`c/${String(i).padStart(2, '0')}`, i), put('last', i)])))
    t.equal((await store.entries('c/')).length, 50)
    t.type(await store.get('last'), 'number')
  })

  t.test(`${harness.name}: data survives close and reopen`, async t => {
    const { loc, store } = await fresh()
    await store.batch([put('id/self', { name: 'h1' }), put('journal/1', 'x')])
    await store.batch([del('journal/1')])
    await store.close()
    await store.close()
    const again = another(loc)
    await again.open()
    t.same(await again.get('id/self'), { name: 'h1' })
    t.equal(await again.get('journal/1'), undefined)
  })

  t.test(`${harness.name}: calls outside open..close reject with STORE_NOT_OPEN`, async t => {
    const loc = await harness.location()
    const store = another(loc)
    await t.rejects(store.get('k'), { name: 'StoreError', code: 'STORE_NOT_OPEN' }, 'get before open')
    await t.rejects(store.batch([put('k', 1)]), { code: 'STORE_NOT_OPEN' }, 'batch before open')
    await t.rejects(store.entries(''), { code: 'STORE_NOT_OPEN' }, 'entries before open')
    await store.close()
    await store.open()
    await store.open()
    await store.batch([put('k', 1)])
    await store.close()
    await t.rejects(store.get('k'), { code: 'STORE_NOT_OPEN' }, 'get after close')
  })

  t.test(`${harness.name}: a second open store on one location is StateLockedError`, async t => {
    const { loc, store } = await fresh()
    const second = another(loc)
    await t.rejects(second.open(), { name: 'StateLockedError', code: 'STATE_LOCKED', message: /is in use by another starling agent/ })
    await store.batch([put('still', 'works')])
    await store.close()
    await second.open()
    t.equal(await second.get('still'), 'works', 'the lock passes on after close')
  })

  t.test(`${harness.name}: the store keeps working after a rejected batch`, async t => {
    const { store } = await fresh()
    await t.rejects(store.batch([put('x', undefined)]))
    await store.batch([put('x', 1)])
    t.equal(await store.get('x'), 1)
  })
}
