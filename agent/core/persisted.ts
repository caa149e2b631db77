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
 */
import type { MemberRecord } from './messages.js'

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
  incarnation: unknown, reportSeqCeiling: unknown, memberEntries: Array<[string, unknown]>
): PersistedCoreState | undefined {
  if (incarnation === undefined && reportSeqCeiling === undefined && memberEntries.length === 0) return undefined
  const members: MemberRecord[] = []
  for (const [, v] of memberEntries) if (isRecord(v)) members.push(v)
  return { incarnation: num(incarnation), reportSeqCeiling: num(reportSeqCeiling), members }
}
