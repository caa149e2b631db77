/** The encoding every Store shares: one batch of ops checked and turned into JSON strings, whole or not at all. */
import type { PersistOp } from '../core/index.js'
import type { Logger } from '../ports/logger.js'
import { StoreError } from '../lib/errors.js'

export type EncodedOp = { type: 'put', key: string, value: string } | { type: 'del', key: string }

/**
 * Check and serialise a whole batch before any of it is written, so a bad op writes nothing.
 * Both the LevelDB store and the in-memory store call it; test/contract/store.ts holds both to it.
 */
export function encodeBatch (ops: PersistOp[], batchOpsMax: number, log: Logger): EncodedOp[] {
  if (ops.length > batchOpsMax) {
    log.error('batch limit reached', { ops: ops.length, batchOpsMax })
    throw new StoreError('STORE_BATCH_TOO_LARGE', `batch of ${ops.length} ops exceeds batchOpsMax ${batchOpsMax}`)
  }
  return ops.map((op, i): EncodedOp => {
    if (typeof op.key !== 'string') throw new StoreError('STORE_INVALID_VALUE', `op ${i}: key is not a string`)
    if (op.type === 'del') return { type: 'del', key: op.key }
    let value: string | undefined
    try {
      value = JSON.stringify(op.value)
    } catch (err) {
      throw new StoreError('STORE_INVALID_VALUE', `op ${i}: value of ${JSON.stringify(op.key)} is not JSON-able`, { cause: err })
    }
    if (value === undefined) throw new StoreError('STORE_INVALID_VALUE', `op ${i}: value of ${JSON.stringify(op.key)} is not JSON-able (${typeof op.value})`)
    return { type: 'put', key: op.key, value }
  })
}
