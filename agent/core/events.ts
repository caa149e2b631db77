/**
 * The two records every part of the core emits: a write to the local store and a logged event.
 * A leaf module (it imports only the id types), so the parts can name them without importing the
 * effect batch (effects.ts), which in turn names every part's commands.
 */
import type { HostId } from './types.js'

/** A write to the local store; all writes of one Ready form one atomic batch. Values are JSON-able. */
export type PersistOp =
  | { type: 'put', key: string, value: unknown }
  | { type: 'del', key: string }

/** A logged transition or notable event. The core does not log; the runtime writes these at info. */
export interface CoreEvent {
  /** Stable machine name, e.g. 'member-state', 'report-limit'. */
  kind: string
  /** Host the event is about (for the log line's short id). */
  host: HostId
  /** One-line text in the fixed transition format, e.g. "member ab12cd34 became suspect (from alive)". */
  text: string
  /** For state transitions: the states and the incarnation, so checkers need not parse text. */
  transition?: { from: string, to: string, incarnation: number }
}
