/** Reads back what the core persisted (keys documented in agent/core/persisted.ts). */
import {
  KEY_DRAINING, KEY_INCARNATION, KEY_MEMBER_PREFIX, KEY_MIGRATION_PREFIX, KEY_REPORT_SEQ_CEILING,
  restoreCoreState, type PersistedCoreState
} from '../core/index.js'
import type { Store } from '../ports/store.js'

export async function loadPersistedCoreState (store: Store): Promise<PersistedCoreState | null> {
  const [inc, seq, members, migrations, draining] = await Promise.all([
    store.get(KEY_INCARNATION), store.get(KEY_REPORT_SEQ_CEILING), store.entries(KEY_MEMBER_PREFIX),
    store.entries(KEY_MIGRATION_PREFIX), store.get(KEY_DRAINING)
  ])
  return restoreCoreState(inc, seq, members, migrations, draining) ?? null
}
