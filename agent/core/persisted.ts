/**
 * What the core keeps in the store, and how the runtime hands it back after a restart.
 * Rule (persist before send): a Ready's persist batch holds every claim its sends make, so a
 * restarted agent never reuses an incarnation or a report seq it may already have sent.
 *
 * Keys:
 * - `core/incarnation`      number: the highest incarnation this host has used (restart uses +1).
 * - `core/reportSeqCeiling` number: report seqs up to this value may have been sent (leased in
 *                           blocks of reportSeqLease; a restart starts above it).
 * - `core/member/<hostId>`  MemberRecord: last known record of each member, flushed every
 *                           memberSnapshotIntervalTicks for those that changed.
 * - `mig/rec/<id>`          MigrationRecord: the migration journal, written at every transition
 *                           before the sends and driver commands acting on it.
 * - `mig/draining`          boolean: this host is draining.
 */
import type { MemberRecord } from './messages.js'
import type { MigrationRecord } from './migration/migration-state.js'
import { KEY_DRAINING, KEY_MIGRATION_PREFIX } from './migration/migration-machine.js'

export { KEY_DRAINING, KEY_MIGRATION_PREFIX }

export const KEY_INCARNATION = 'core/incarnation'
export const KEY_REPORT_SEQ_CEILING = 'core/reportSeqCeiling'
export const KEY_MEMBER_PREFIX = 'core/member/'

export interface PersistedCoreState {
  /** Highest incarnation used (value of `core/incarnation`). */
  incarnation: number
  /** Value of `core/reportSeqCeiling`. */
  reportSeqCeiling: number
  /** Values under `core/member/`. */
  members: MemberRecord[]
  /** Values under `mig/rec/` (the migration journal). */
  migrations?: MigrationRecord[]
  /** Value of `mig/draining`. */
  draining?: boolean
}

function num (v: unknown): number {
  return typeof v === 'number' && Number.isFinite(v) && v >= 0 ? Math.floor(v) : 0
}

function isRecord (v: unknown): v is MemberRecord {
  if (typeof v !== 'object' || v === null) return false
  const r = v as Record<string, unknown>
  return typeof r.id === 'string' && typeof r.name === 'string' && typeof r.addr === 'string' &&
    typeof r.incarnation === 'number' && ['alive', 'suspect', 'dead', 'left'].includes(r.state as string)
}

/**
 * Build the restored state from what the store returned: `get(KEY_INCARNATION)`,
 * `get(KEY_REPORT_SEQ_CEILING)` and `entries(KEY_MEMBER_PREFIX)`. Returns undefined for an empty
 * store (first start). Malformed member values are skipped.
 */
export function restoreCoreState (
  incarnation: unknown, reportSeqCeiling: unknown, memberEntries: Array<[string, unknown]>,
  migrationEntries: Array<[string, unknown]> = [], draining: unknown = undefined
): PersistedCoreState | undefined {
  if (incarnation === undefined && reportSeqCeiling === undefined && memberEntries.length === 0 && migrationEntries.length === 0) return undefined
  const members: MemberRecord[] = []
  for (const [, v] of memberEntries) if (isRecord(v)) members.push(v)
  const migrations: MigrationRecord[] = []
  for (const [, v] of migrationEntries) if (isMigration(v)) migrations.push(v)
  return { incarnation: num(incarnation), reportSeqCeiling: num(reportSeqCeiling), members, migrations, draining: draining === true }
}

const MIGRATION_STATES = ['proposed', 'reserved', 'preparing', 'copying', 'switching', 'committed', 'aborted']

function isMigration (v: unknown): v is MigrationRecord {
  if (typeof v !== 'object' || v === null) return false
  const r = v as Record<string, unknown>
  return typeof r.id === 'string' && typeof r.vm === 'string' && (r.role === 'source' || r.role === 'target') &&
    typeof r.source === 'string' && typeof r.target === 'string' && MIGRATION_STATES.includes(r.state as string) &&
    typeof r.createdTick === 'number' && typeof r.updatedTick === 'number'
}
