/**
 * The Store port in memory, for the simulator and for tests.
 *
 * It follows level-store.ts rule for rule (the contract suite in test/contract/store.ts runs
 * against both): batches are checked whole before anything is applied, values are stored as JSON
 * text (so a caller mutating an object after put() changes nothing stored, and get() returns a
 * fresh copy), keys are ordered as LevelDB orders them (UTF-8 bytes, not UTF-16 code units), and
 * two open stores on the same `MemoryStoreData` is a StateLockedError.
 *
 * The data lives outside the store object, so a simulated crash is `store` dropped without
 * close() (call `data.release()`) and a restart is a new store on the same data.
 */
import type { PersistOp } from '../core/index.js'
import type { Logger } from '../ports/logger.js'
import type { Store } from '../ports/store.js'
import { StateLockedError, StoreError } from '../lib/errors.js'
import { encodeBatch } from './store-encoding.js'

/** The durable part of a memory store: what survives a simulated crash. */
export class MemoryStoreData {
  /** key → JSON text. */
  readonly entries = new Map<string, string>()
  /** Id of the store instance holding the lock, or null. */
  holder: number | null = null
  constructor (readonly name: string) {}
  /** Drop the lock without closing (what the OS does when a process dies). */
  release (): void { this.holder = null }
}

export interface MemoryStoreInit {
  /**
   * The data to open. Pass the same object to a later store to simulate a restart.
   * @default a fresh, empty MemoryStoreData named 'memory'
   */
  data?: MemoryStoreData
  /** Same as LevelStoreInit.batchOpsMax. @default 10000 */
  batchOpsMax?: number
}

export interface MemoryStoreComponents {
  logger: Logger
}

export interface MemoryStore extends Store {
  readonly data: MemoryStoreData
  /** No-op, for parity with LevelStore. */
  compact (): Promise<void>
}

let nextInstanceId = 1

/** LevelDB's key order: byte-wise over UTF-8. */
export function compareKeys (a: string, b: string): number {
  return Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'))
}


class MemoryStoreImpl implements MemoryStore {
  readonly data: MemoryStoreData
  private readonly id = nextInstanceId++
  private readonly batchOpsMax: number
  private readonly log: Logger
  private isOpen = false

  constructor (init: MemoryStoreInit, components: MemoryStoreComponents) {
    this.data = init.data ?? new MemoryStoreData('memory')
    this.batchOpsMax = init.batchOpsMax ?? 10_000
    this.log = components.logger.forComponent('agent:store')
  }

  async open (): Promise<void> {
    if (this.isOpen) return
    if (this.data.holder !== null && this.data.holder !== this.id) throw new StateLockedError(this.data.name)
    this.data.holder = this.id
    this.isOpen = true
  }

  private check (op: string): void {
    if (!this.isOpen) throw new StoreError('STORE_NOT_OPEN', `store ${this.data.name} is not open (${op})`)
    if (this.data.holder !== this.id) {
      // The lock was released under us (a simulated crash): this instance is dead.
      this.isOpen = false
      throw new StoreError('STORE_NOT_OPEN', `store ${this.data.name} lost its lock (${op})`)
    }
  }

  async batch (ops: PersistOp[]): Promise<void> {
    this.check('batch')
    if (ops.length === 0) return
    const encoded = encodeBatch(ops, this.batchOpsMax, this.log)
    for (const op of encoded) {
      if (op.type === 'put') this.data.entries.set(op.key, op.value)
      else this.data.entries.delete(op.key)
    }
  }

  async get<T = unknown> (key: string): Promise<T | undefined> {
    this.check('get')
    const raw = this.data.entries.get(key)
    return raw === undefined ? undefined : JSON.parse(raw) as T
  }

  async entries<T = unknown> (prefix: string): Promise<Array<[string, T]>> {
    this.check('entries')
    const keys = [...this.data.entries.keys()].filter(k => k.startsWith(prefix)).sort(compareKeys)
    return keys.map(k => [k, JSON.parse(this.data.entries.get(k) as string) as T])
  }

  async compact (): Promise<void> {
    this.check('compact')
  }

  async close (): Promise<void> {
    if (!this.isOpen) return
    this.isOpen = false
    if (this.data.holder === this.id) this.data.holder = null
  }
}

/** Factory (STYLE §1.4): `memoryStore({ data })({ logger })`. */
export function memoryStore (init: MemoryStoreInit = {}): (components: MemoryStoreComponents) => MemoryStore {
  return components => new MemoryStoreImpl(init, components)
}
