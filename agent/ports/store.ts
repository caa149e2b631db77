import type { PersistOp } from '../core/index.js'

/**
 * Durable key-value state of one agent (identity, membership snapshot, history, journal).
 * Values are JSON-able. Keys are strings; prefixes group them ("id/", "hist/", "journal/").
 */
export interface Store {
  /** Open the store; rejects with StateLockedError if another agent holds this state directory. */
  open (): Promise<void>
  /** Apply all ops atomically (one LevelDB batch). Resolves when durable. */
  batch (ops: PersistOp[]): Promise<void>
  get<T = unknown> (key: string): Promise<T | undefined>
  /** All entries whose key starts with `prefix`, in key order. */
  entries<T = unknown> (prefix: string): Promise<Array<[string, T]>>
  close (): Promise<void>
}
