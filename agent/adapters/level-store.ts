/**
 * The Store port on LevelDB (`level` → classic-level).
 *
 * - One `batch()` call is one LevelDB write batch: all of a Ready's persist ops land together or
 *   not at all (STYLE §1.1, persist before send).
 * - Values are JSON: each value is serialised before the batch is handed to LevelDB, so a value
 *   that cannot be stored fails the whole call with STORE_INVALID_VALUE and nothing is written.
 * - Keys are UTF-8 strings compared byte-wise, which is LevelDB's order; `entries(prefix)` scans
 *   from `prefix` and stops at the first key that no longer starts with it.
 * - LevelDB takes an exclusive lock on the directory; a second agent (another process, or a
 *   second instance in this one) gets StateLockedError from open().
 * - `sync` decides whether a batch waits for fsync; see LevelStoreInit.sync.
 */
import { mkdir } from 'node:fs/promises'
import { Level } from 'level'
import type { PersistOp } from '../core/index.js'
import type { Logger } from '../ports/logger.js'
import type { Store } from '../ports/store.js'
import { StateLockedError, StoreError, errorCode } from '../lib/errors.js'
import { encodeBatch } from './store-encoding.js'

export interface LevelStoreInit {
  /** Directory of the database (created if missing). Under systemd: /var/lib/starling/db. */
  location: string
  /**
   * fsync every batch before it resolves. True makes "resolves when durable" hold across a power
   * cut, at about a millisecond or more per batch on a disk; false survives a process crash
   * (kill -9) but may lose the last batches on power loss.
   * @default true
   */
  sync?: boolean
  /**
   * Most ops in one batch (STYLE §1.8). A larger batch is rejected whole with
   * STORE_BATCH_TOO_LARGE and logged: the core must never produce one.
   * @default 10000
   */
  batchOpsMax?: number
  /**
   * LevelDB block cache and write buffer, bytes. The agent's state is small (identity, membership
   * snapshot, journal), so LevelDB's defaults (8 MiB cache, 4 MiB buffer) only cost resident memory.
   * @default 1048576
   */
  cacheBytes?: number
}

export interface LevelStoreComponents {
  logger: Logger
}

/** A LevelDB store, with `compact()` for the hourly maintenance job. */
export interface LevelStore extends Store {
  readonly location: string
  /** Compact the whole key range (reclaims space from deleted history). */
  compact (): Promise<void>
}

type Db = Level<string, string>

class LevelStoreImpl implements LevelStore {
  readonly location: string
  private readonly sync: boolean
  private readonly batchOpsMax: number
  private readonly cacheBytes: number
  private readonly log: Logger
  private db: Db | null = null
  private opening: Promise<void> | null = null

  constructor (init: LevelStoreInit, components: LevelStoreComponents) {
    this.location = init.location
    this.sync = init.sync ?? true
    this.batchOpsMax = init.batchOpsMax ?? 10_000
    this.cacheBytes = init.cacheBytes ?? 1024 * 1024
    this.log = components.logger.forComponent('agent:store')
  }

  async open (): Promise<void> {
    if (this.db !== null) return
    if (this.opening !== null) return await this.opening
    this.opening = this.doOpen().finally(() => { this.opening = null })
    return await this.opening
  }

  private async doOpen (): Promise<void> {
    try {
      await mkdir(this.location, { recursive: true })
    } catch (err) {
      throw new StoreError('STORE_IO', `cannot create state directory ${this.location}`, { cause: err })
    }
    const db: Db = new Level<string, string>(this.location, { keyEncoding: 'utf8', valueEncoding: 'utf8', cacheSize: this.cacheBytes, writeBufferSize: this.cacheBytes })
    try {
      await db.open()
    } catch (err) {
      await db.close().catch(() => {})
      const cause = (err as { cause?: unknown }).cause
      if (errorCode(err) === 'LEVEL_LOCKED' || errorCode(cause) === 'LEVEL_LOCKED') {
        throw new StateLockedError(this.location, { cause: err })
      }
      throw new StoreError('STORE_IO', `cannot open the store in ${this.location}`, { cause: err })
    }
    this.db = db
    this.log.info('store opened', { location: this.location, sync: this.sync })
  }

  private opened (op: string): Db {
    if (this.db === null) throw new StoreError('STORE_NOT_OPEN', `store ${this.location} is not open (${op})`)
    return this.db
  }

  async batch (ops: PersistOp[]): Promise<void> {
    const db = this.opened('batch')
    if (ops.length === 0) return
    const encoded = encodeBatch(ops, this.batchOpsMax, this.log)
    try {
      await db.batch(encoded, { sync: this.sync })
    } catch (err) {
      throw new StoreError('STORE_IO', `batch of ${ops.length} ops failed in ${this.location}`, { cause: err })
    }
  }

  async get<T = unknown> (key: string): Promise<T | undefined> {
    const db = this.opened('get')
    let raw: string | undefined
    try {
      raw = await db.get(key)
    } catch (err) {
      throw new StoreError('STORE_IO', `get ${JSON.stringify(key)} failed in ${this.location}`, { cause: err })
    }
    return raw === undefined ? undefined : parse<T>(key, raw)
  }

  async entries<T = unknown> (prefix: string): Promise<Array<[string, T]>> {
    const db = this.opened('entries')
    const out: Array<[string, T]> = []
    try {
      for await (const [key, raw] of db.iterator({ gte: prefix })) {
        if (!key.startsWith(prefix)) break
        out.push([key, parse<T>(key, raw)])
      }
    } catch (err) {
      if (err instanceof StoreError) throw err
      throw new StoreError('STORE_IO', `scan of ${JSON.stringify(prefix)} failed in ${this.location}`, { cause: err })
    }
    return out
  }

  async compact (): Promise<void> {
    const db = this.opened('compact')
    const started = performance.now()
    try {
      // `level` on Node is classic-level, which has compactRange; its public type is the union
      // with browser-level, which does not.
      const compactable = db as unknown as { compactRange?: (start: string, end: string) => Promise<void> }
      if (typeof compactable.compactRange !== 'function') return
      await compactable.compactRange('', '\u{10FFFF}')
    } catch (err) {
      throw new StoreError('STORE_IO', `compaction failed in ${this.location}`, { cause: err })
    }
    this.log.info('store compacted', { location: this.location, tookMs: Math.round(performance.now() - started) })
  }

  async close (): Promise<void> {
    if (this.opening !== null) await this.opening.catch(() => {})
    const db = this.db
    if (db === null) return
    this.db = null
    try {
      await db.close()
    } catch (err) {
      throw new StoreError('STORE_IO', `close failed in ${this.location}`, { cause: err })
    }
    this.log.info('store closed', { location: this.location })
  }
}

function parse<T> (key: string, raw: string): T {
  try {
    return JSON.parse(raw) as T
  } catch (err) {
    throw new StoreError('STORE_CORRUPT', `value of ${JSON.stringify(key)} is not JSON`, { cause: err })
  }
}

/** Factory (STYLE §1.4): `levelStore({ location })({ logger })`. Nothing touches disk before open(). */
export function levelStore (init: LevelStoreInit): (components: LevelStoreComponents) => LevelStore {
  return components => new LevelStoreImpl(init, components)
}
