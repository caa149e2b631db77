/** Structured logger; one JSON line per record on stdout (journald picks it up). */
export interface Logger {
  debug (msg: string, fields?: Record<string, unknown>): void
  info (msg: string, fields?: Record<string, unknown>): void
  warn (msg: string, fields?: Record<string, unknown>): void
  error (msg: string, fields?: Record<string, unknown>): void
  /** A child logger for one component, e.g. 'agent:membership'. */
  forComponent (name: string): Logger
}
