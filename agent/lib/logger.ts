/**
 * Structured JSON-lines logger (the Logger port, agent/ports/logger.ts).
 *
 * One object per line on stdout, so journald stores each record whole and `journalctl -o cat`
 * piped into `jq` reads them back:
 *
 *   {"ts":"2025-01-01T00:00:00.000Z","level":"info","component":"agent:membership","msg":"member ab12cd34 became suspect (from alive)","fields":{"peer":"ab12cd34"}}
 *
 * Errors anywhere in `fields` are serialised as { name, message, code, stack, cause } (the cause
 * chain followed a few levels), never as `{}` as JSON.stringify would. Cycles, BigInts, functions
 * and over-deep values are replaced by short markers instead of throwing: a log call never throws.
 */
import type { Logger } from '../ports/logger.js'

/** Severity, lowest first. 'silent' as a threshold disables every record. */
export type LogLevel = 'debug' | 'info' | 'warn' | 'error'
export type LogThreshold = LogLevel | 'silent'

const LEVEL_RANK: Record<LogThreshold, number> = { debug: 10, info: 20, warn: 30, error: 40, silent: 100 }
/** syslog priorities for journald's `<N>` line prefix (see JsonLoggerInit.journaldPrefix). */
const SYSLOG_PRIORITY: Record<LogLevel, number> = { debug: 7, info: 6, warn: 4, error: 3 }

/** Every accepted threshold, for config validation. */
export const LOG_THRESHOLDS: readonly LogThreshold[] = ['debug', 'info', 'warn', 'error', 'silent']

export function isLogThreshold (v: unknown): v is LogThreshold {
  return typeof v === 'string' && (LOG_THRESHOLDS as readonly string[]).includes(v)
}

/** One record, as written (and as kept by memoryLogger). */
export interface LogRecord {
  /** ISO-8601 wall time of the call. */
  ts: string
  level: LogLevel
  /** The component name given to forComponent(), or the root name. */
  component: string
  msg: string
  /** The caller's fields, serialised (errors expanded). Absent when there were none. */
  fields?: Record<string, unknown>
}

export interface JsonLoggerInit {
  /**
   * Lowest level written.
   * @default 'info'
   */
  level?: LogThreshold
  /**
   * Component name of the root logger.
   * @default 'agent'
   */
  component?: string
  /**
   * Prefix each line with its syslog priority (`<6>` for info, `<3>` for error...). journald reads
   * that prefix on stdout (SyslogLevelPrefix=yes is its default) and stores the record at that
   * priority, so `journalctl -p warning` works; the rest of the line stays JSON. Turn it on only
   * when stdout is the journal (JOURNAL_STREAM is set): other readers would see the prefix.
   * @default false
   */
  journaldPrefix?: boolean
  /**
   * Where each line goes (without the newline, which is added).
   * @default writes to process.stdout
   */
  write?: (line: string) => void
  /**
   * Wall clock for the `ts` field; tests pass a fixed one.
   * @default () => new Date()
   */
  now?: () => Date
}

/** How deep `fields` values are followed before being replaced by a marker. */
const DEPTH_MAX = 8
/** How many links of an error's cause chain are serialised. */
const CAUSE_DEPTH_MAX = 4
/** Longest string kept in a field (a stack counts); longer ones are cut with a marker. */
const STRING_CHARS_MAX = 8_192

/** Serialise an error as a plain object: name, message, code, stack and its cause chain. */
export function serializeError (err: Error, depth = 0): Record<string, unknown> {
  const out: Record<string, unknown> = { name: err.name, message: err.message }
  const code = (err as { code?: unknown }).code
  if (code !== undefined) out['code'] = code
  if (err.stack !== undefined) out['stack'] = clip(err.stack)
  if (err.cause !== undefined) {
    out['cause'] = depth >= CAUSE_DEPTH_MAX
      ? '[cause chain cut]'
      : err.cause instanceof Error ? serializeError(err.cause, depth + 1) : toJsonable(err.cause, new Set(), 1)
  }
  if (err instanceof AggregateError) {
    out['errors'] = err.errors.slice(0, 8).map(e => e instanceof Error ? serializeError(e, depth + 1) : toJsonable(e, new Set(), 1))
  }
  return out
}

function clip (s: string): string {
  return s.length <= STRING_CHARS_MAX ? s : `${s.slice(0, STRING_CHARS_MAX)}…[${s.length - STRING_CHARS_MAX} chars cut]`
}

/** A JSON-safe copy of any value: errors expanded, cycles and exotic values marked. */
function toJsonable (v: unknown, seen: Set<object>, depth: number): unknown {
  switch (typeof v) {
    case 'string': return clip(v)
    case 'number': return Number.isFinite(v) ? v : String(v)
    case 'boolean': return v
    case 'bigint': return `${v.toString()}n`
    case 'undefined': return undefined
    case 'symbol': return v.toString()
    case 'function': return `[function ${v.name || 'anonymous'}]`
  }
  if (v === null) return null
  const obj = v as object
  if (obj instanceof Error) return serializeError(obj)
  if (obj instanceof Date) return Number.isNaN(obj.getTime()) ? 'Invalid Date' : obj.toISOString()
  if (obj instanceof Uint8Array) return `[${obj.byteLength} bytes]`
  if (seen.has(obj)) return '[cycle]'
  if (depth >= DEPTH_MAX) return '[too deep]'
  seen.add(obj)
  try {
    if (Array.isArray(obj)) return obj.map(x => toJsonable(x, seen, depth + 1) ?? null)
    if (obj instanceof Map) return toJsonable(Object.fromEntries(obj), seen, depth + 1)
    if (obj instanceof Set) return toJsonable([...obj], seen, depth + 1)
    const out: Record<string, unknown> = {}
    for (const [k, x] of Object.entries(obj)) {
      const j = toJsonable(x, seen, depth + 1)
      if (j !== undefined) out[k] = j
    }
    return out
  } catch (err) {
    // A getter that throws, a revoked proxy: the log call must still succeed.
    return `[unserialisable: ${err instanceof Error ? err.message : String(err)}]`
  } finally {
    seen.delete(obj)
  }
}

/** Build the record for one call (exported for tests and other sinks). */
export function makeRecord (ts: Date, level: LogLevel, component: string, msg: string, fields?: Record<string, unknown>): LogRecord {
  const rec: LogRecord = { ts: ts.toISOString(), level, component, msg }
  if (fields !== undefined) {
    const f = toJsonable(fields, new Set(), 0)
    if (typeof f === 'object' && f !== null && Object.keys(f).length > 0) rec.fields = f as Record<string, unknown>
  }
  return rec
}

type Sink = (rec: LogRecord) => void

class RecordLogger implements Logger {
  constructor (
    private readonly component: string,
    private readonly thresholdRank: number,
    private readonly sink: Sink,
    private readonly now: () => Date
  ) {}

  private log (level: LogLevel, msg: string, fields?: Record<string, unknown>): void {
    if (LEVEL_RANK[level] < this.thresholdRank) return
    let ts: Date
    try { ts = this.now() } catch { ts = new Date(0) }
    this.sink(makeRecord(ts, level, this.component, msg, fields))
  }

  debug (msg: string, fields?: Record<string, unknown>): void { this.log('debug', msg, fields) }
  info (msg: string, fields?: Record<string, unknown>): void { this.log('info', msg, fields) }
  warn (msg: string, fields?: Record<string, unknown>): void { this.log('warn', msg, fields) }
  error (msg: string, fields?: Record<string, unknown>): void { this.log('error', msg, fields) }

  forComponent (name: string): Logger {
    return new RecordLogger(name, this.thresholdRank, this.sink, this.now)
  }
}

/** The production logger: JSON lines on stdout (or `init.write`). */
export function jsonLogger (init: JsonLoggerInit = {}): Logger {
  const level = init.level ?? 'info'
  const write = init.write ?? ((line: string) => { process.stdout.write(line) })
  const prefix = init.journaldPrefix ?? false
  const sink: Sink = rec => {
    let line: string
    try {
      line = JSON.stringify(rec)
    } catch (err) {
      // Unreachable in practice (fields were made JSON-safe); keep the message at least.
      line = JSON.stringify({ ts: rec.ts, level: rec.level, component: rec.component, msg: rec.msg, fields: { logError: String(err) } })
    }
    try {
      write(`${prefix ? `<${SYSLOG_PRIORITY[rec.level]}>` : ''}${line}\n`)
    } catch {
      // stdout closed (EPIPE): nothing sensible left to do with a log line.
    }
  }
  return new RecordLogger(init.component ?? 'agent', LEVEL_RANK[level], sink, init.now ?? (() => new Date()))
}

/** A logger that drops everything (tests that do not look at logs). */
export function silentLogger (): Logger {
  return new RecordLogger('silent', LEVEL_RANK.silent, () => {}, () => new Date(0))
}

/** A logger that keeps its records in memory, shared by all its component loggers. */
export interface MemoryLogger extends Logger {
  /** Every record so far, oldest first (bounded by `recordsMax`: the oldest are dropped). */
  readonly records: LogRecord[]
  /** Records whose msg contains `text` (and, if given, whose level is `level`). */
  find (text: string, level?: LogLevel): LogRecord[]
  /** Forget every record. */
  clear (): void
}

export interface MemoryLoggerInit {
  /** @default 'debug' */
  level?: LogThreshold
  /** @default 'test' */
  component?: string
  /** Oldest records are dropped beyond this many. @default 10000 */
  recordsMax?: number
  /** @default () => new Date() */
  now?: () => Date
  /** Also print each record as a JSON line here (handy when debugging a test). @default none */
  echo?: (line: string) => void
}

export function memoryLogger (init: MemoryLoggerInit = {}): MemoryLogger {
  const records: LogRecord[] = []
  const recordsMax = init.recordsMax ?? 10_000
  const sink: Sink = rec => {
    records.push(rec)
    if (records.length > recordsMax) records.splice(0, records.length - recordsMax)
    init.echo?.(JSON.stringify(rec))
  }
  const base = new RecordLogger(init.component ?? 'test', LEVEL_RANK[init.level ?? 'debug'], sink, init.now ?? (() => new Date()))
  return Object.assign(base, {
    records,
    find: (text: string, level?: LogLevel) => records.filter(r => r.msg.includes(text) && (level === undefined || r.level === level)),
    clear: () => { records.length = 0 }
  })
}
