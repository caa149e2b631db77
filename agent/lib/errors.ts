/**
 * Typed operating errors of the edge (STYLE §1.7).
 *
 * Every class has a `name` and a stable `code`: branch on those, never on message text. When an
 * error wraps another, the original is kept as `cause` (ES2022 error cause), so a log line can show
 * the whole chain. Programmer errors are not here: they are `AssertionError`s from core/assert.ts
 * and crash the agent on purpose.
 */

/** Options shared by every typed error. */
export interface StarlingErrorOptions {
  /** The error this one wraps, kept for logs. */
  cause?: unknown
}

/** Base class: a message, a stable `code`, and an optional `cause`. */
export abstract class StarlingError extends Error {
  abstract readonly code: string
  constructor (message: string, options: StarlingErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause })
  }
}

/** The state directory is held by another agent (LevelDB's LOCK file). Start-up must stop. */
export class StateLockedError extends StarlingError {
  static override readonly name = 'StateLockedError'
  override readonly code = 'STATE_LOCKED' as const
  /** The directory that is in use. */
  readonly stateDir: string
  constructor (stateDir: string, options: StarlingErrorOptions = {}) {
    super(`state directory ${stateDir} is in use by another starling agent`, options)
    this.name = 'StateLockedError'
    this.stateDir = stateDir
  }
}

/** What went wrong in a store call. */
export type StoreErrorCode =
  /** A call was made before open() resolved or after close(). */
  | 'STORE_NOT_OPEN'
  /** A value cannot be stored as JSON (undefined, BigInt, a cycle...). Nothing was written. */
  | 'STORE_INVALID_VALUE'
  /** A batch has more ops than the configured limit. Nothing was written. */
  | 'STORE_BATCH_TOO_LARGE'
  /** A stored value does not parse as JSON. */
  | 'STORE_CORRUPT'
  /** The underlying database failed (disk full, permissions, IO error). */
  | 'STORE_IO'

/** A failed store operation; `code` says which kind. */
export class StoreError extends StarlingError {
  static override readonly name = 'StoreError'
  override readonly code: StoreErrorCode
  constructor (code: StoreErrorCode, message: string, options: StarlingErrorOptions = {}) {
    super(message, options)
    this.name = 'StoreError'
    this.code = code
  }
}

/** What went wrong in a hypervisor driver call. */
export type DriverErrorCode =
  /** The hypervisor (libvirtd, the QMP socket) cannot be reached. */
  | 'DRIVER_UNREACHABLE'
  /** The call did not finish within its deadline, or its AbortSignal fired. */
  | 'DRIVER_TIMEOUT'
  /** No VM with that id on this host. */
  | 'VM_NOT_FOUND'
  /** The hypervisor answered with a failure (or the driver itself was misused). */
  | 'DRIVER_FAILED'
  /** Refused: the guest runs on this host and the call would have killed it. */
  | 'VM_RUNNING'

/** A failed hypervisor driver call; becomes a `DriverFailed` input for the core. */
export class DriverError extends StarlingError {
  static override readonly name = 'DriverError'
  override readonly code: DriverErrorCode
  constructor (code: DriverErrorCode, message: string, options: StarlingErrorOptions = {}) {
    super(message, options)
    this.name = 'DriverError'
    this.code = code
  }
}

/** The host sampler failed to read the host (systeminformation threw or returned nonsense). */
export class SamplerError extends StarlingError {
  static override readonly name = 'SamplerError'
  override readonly code = 'SAMPLER_FAILED' as const
  constructor (message: string, options: StarlingErrorOptions = {}) {
    super(message, options)
    this.name = 'SamplerError'
  }
}

/** A cron expression or job definition was rejected when scheduling. */
export class CronExpressionError extends StarlingError {
  static override readonly name = 'CronExpressionError'
  override readonly code = 'CRON_INVALID_EXPRESSION' as const
  /** The job whose expression was rejected. */
  readonly job: string
  readonly expression: string
  /** `detail` says what is wrong (node-cron's reason, a duplicate name...). */
  constructor (job: string, expression: string, options: StarlingErrorOptions & { detail?: string } = {}) {
    super(`cron job "${job}": invalid cron expression "${expression}"${options.detail !== undefined ? `: ${options.detail}` : ''}`, options)
    this.name = 'CronExpressionError'
    this.job = job
    this.expression = expression
  }
}

/** A trace file for the simulated driver is missing or malformed. */
export class TraceFileError extends StarlingError {
  static override readonly name = 'TraceFileError'
  override readonly code = 'TRACE_INVALID' as const
  readonly file: string
  constructor (file: string, message: string, options: StarlingErrorOptions = {}) {
    super(`trace file ${file}: ${message}`, options)
    this.name = 'TraceFileError'
    this.file = file
  }
}

/** An operation was cancelled through its AbortSignal (or because its owner stopped). */
export class AbortError extends StarlingError {
  static override readonly name = 'AbortError'
  override readonly code = 'ABORT_ERR' as const
  constructor (message = 'The operation was aborted', options: StarlingErrorOptions = {}) {
    super(message, options)
    this.name = 'AbortError'
  }
}

/** The `code` of any error-like value, or undefined. Never throws. */
export function errorCode (err: unknown): string | undefined {
  if (typeof err !== 'object' || err === null) return undefined
  const code = (err as { code?: unknown }).code
  return typeof code === 'string' ? code : undefined
}
