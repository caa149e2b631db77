/**
 * A small QMP (QEMU Machine Protocol) client over a unix socket.
 *
 * QMP is JSON objects separated by newlines. On connect QEMU sends a greeting ({"QMP": ...}) and
 * accepts only `qmp_capabilities` until that is done ("capabilities negotiation"); after it,
 * every `{"execute", "arguments", "id"}` gets exactly one `{"return"|"error", "id"}` reply, and
 * asynchronous `{"event", "data", "timestamp"}` records may arrive at any time, in between.
 *
 * Contract:
 * - Every command carries its own id; replies are matched by id, never by order.
 * - Every call takes an AbortSignal and a timeout; an aborted or timed-out command is forgotten
 *   (a late reply is dropped), but QEMU may still carry it out.
 * - Input that is not QMP (bad JSON, unknown shapes, over-long lines) is dropped and counted in
 *   `garbageCount`; it never throws. A closed socket rejects every pending command with
 *   QmpClosedError, and so do later calls.
 */
import net from 'node:net'
import { StringDecoder } from 'node:string_decoder'
import { StarlingError, type StarlingErrorOptions } from '../lib/errors.js'

/** What went wrong talking QMP. */
export type QmpErrorCode =
  /** The socket could not be opened, or the greeting/negotiation failed. */
  | 'QMP_CONNECT_FAILED'
  /** The connection is closed (QEMU exited, or close() was called). */
  | 'QMP_CLOSED'
  /** A command's deadline passed, or its AbortSignal fired. */
  | 'QMP_TIMEOUT'
  /** QEMU answered with an error object; `qmpClass` holds its class (GenericError, ...). */
  | 'QMP_COMMAND_FAILED'

export class QmpError extends StarlingError {
  static override readonly name = 'QmpError'
  override readonly code: QmpErrorCode
  /** The QMP command concerned, if any. */
  readonly command: string | undefined
  /** QEMU's error class for QMP_COMMAND_FAILED (e.g. 'GenericError', 'DeviceNotActive'). */
  readonly qmpClass: string | undefined
  constructor (code: QmpErrorCode, message: string, opts: StarlingErrorOptions & { command?: string, qmpClass?: string } = {}) {
    super(message, opts)
    this.name = 'QmpError'
    this.code = code
    this.command = opts.command
    this.qmpClass = opts.qmpClass
  }
}

/** An asynchronous QMP event. */
export interface QmpEvent {
  event: string
  data: Record<string, unknown>
  /** QEMU's wall-clock time of the event, ms since the epoch (0 if QEMU gave none). */
  timestampMs: number
}

export interface QmpCallOptions {
  signal?: AbortSignal
  /** Deadline for this call, ms. @default the client's commandTimeoutMs */
  timeoutMs?: number
}

export interface QmpConnectOptions {
  signal?: AbortSignal
  /**
   * How long to keep retrying to connect (QEMU creates the socket a little after it starts) and
   * to finish the negotiation, ms.
   * @default 10000
   */
  connectTimeoutMs?: number
  /**
   * Default deadline of a command, ms.
   * @default 10000
   */
  commandTimeoutMs?: number
  /**
   * Longest line accepted; a longer one is dropped as garbage. QMP replies are small except
   * for a few introspection commands.
   * @default 4 MiB
   */
  maxLineBytes?: number
}

interface Pending {
  command: string
  resolve: (v: unknown) => void
  reject: (e: Error) => void
  cleanup: () => void
}

const sleep = (ms: number): Promise<void> => new Promise(resolve => setTimeout(resolve, ms))

function isObject (v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v)
}

export class QmpClient {
  /** Lines that were not valid QMP and were dropped. */
  garbageCount = 0
  /** The QEMU version from the greeting, e.g. "7.2.22". */
  readonly version: string

  private readonly pending = new Map<string, Pending>()
  private readonly listeners = new Set<(e: QmpEvent) => void>()
  private readonly closeListeners = new Set<(err: QmpError) => void>()
  private nextId = 1
  private buf = ''
  private discarding = false
  private closedWith: QmpError | null = null

  private constructor (
    private readonly sock: net.Socket,
    version: string,
    private readonly commandTimeoutMs: number,
    private readonly maxLineBytes: number
  ) {
    this.version = version
  }

  /** Connects, reads the greeting, and negotiates capabilities. */
  static async connect (socketPath: string, opts: QmpConnectOptions = {}): Promise<QmpClient> {
    const connectTimeoutMs = opts.connectTimeoutMs ?? 10_000
    const deadline = AbortSignal.timeout(connectTimeoutMs)
    const signal = opts.signal === undefined ? deadline : AbortSignal.any([opts.signal, deadline])
    let lastErr: unknown
    let sock: net.Socket | null = null
    while (sock === null) {
      if (signal.aborted) {
        throw new QmpError('QMP_CONNECT_FAILED', `cannot connect to QMP socket ${socketPath} within ${connectTimeoutMs} ms`, { cause: lastErr ?? signal.reason })
      }
      try {
        sock = await openSocket(socketPath, signal)
      } catch (err) {
        lastErr = err
        await sleep(20)
      }
    }
    const s = sock
    try {
      const greeting = await readGreeting(s, signal)
      const q = greeting.QMP
      const v = isObject(q) && isObject(q.version) && isObject(q.version.qemu) ? q.version.qemu : {}
      const version = `${String(v.major ?? '?')}.${String(v.minor ?? '?')}.${String(v.micro ?? '?')}`
      const client = new QmpClient(s, version, opts.commandTimeoutMs ?? 10_000, opts.maxLineBytes ?? 4 * 1024 * 1024)
      client.attach()
      await client.execute('qmp_capabilities', undefined, { signal, timeoutMs: connectTimeoutMs })
      return client
    } catch (err) {
      s.destroy()
      if (err instanceof QmpError && err.code === 'QMP_CONNECT_FAILED') throw err
      throw new QmpError('QMP_CONNECT_FAILED', `QMP negotiation on ${socketPath} failed`, { cause: err })
    }
  }

  /** True once the connection is gone. */
  get closed (): boolean { return this.closedWith !== null }

  /**
   * Runs one command and resolves with its `return` value. Rejects with QmpError: QMP_COMMAND_FAILED
   * when QEMU answers with an error, QMP_TIMEOUT, or QMP_CLOSED.
   */
  execute<T = unknown> (command: string, args?: Record<string, unknown>, opts: QmpCallOptions = {}): Promise<T> {
    if (this.closedWith !== null) {
      return Promise.reject(new QmpError('QMP_CLOSED', `QMP connection closed; cannot run ${command}`, { command, cause: this.closedWith }))
    }
    const id = `starling-${this.nextId++}`
    const timeoutMs = opts.timeoutMs ?? this.commandTimeoutMs
    return new Promise<T>((resolve, reject) => {
      const timeout = AbortSignal.timeout(timeoutMs)
      const signal = opts.signal === undefined ? timeout : AbortSignal.any([opts.signal, timeout])
      const onAbort = (): void => {
        const p = this.pending.get(id)
        if (p === undefined) return
        this.pending.delete(id)
        p.cleanup()
        const why = timeout.aborted ? `timed out after ${timeoutMs} ms` : 'was aborted'
        reject(new QmpError('QMP_TIMEOUT', `QMP command ${command} ${why}`, { command, cause: signal.reason }))
      }
      const entry: Pending = {
        command,
        resolve: v => resolve(v as T),
        reject,
        cleanup: () => signal.removeEventListener('abort', onAbort)
      }
      this.pending.set(id, entry)
      if (signal.aborted) { onAbort(); return }
      signal.addEventListener('abort', onAbort, { once: true })
      const msg: Record<string, unknown> = { execute: command, id }
      if (args !== undefined) msg.arguments = args
      this.sock.write(JSON.stringify(msg) + '\n')
    })
  }

  /** Subscribes to events; returns the unsubscribe function. */
  onEvent (fn: (e: QmpEvent) => void): () => void {
    this.listeners.add(fn)
    return () => { this.listeners.delete(fn) }
  }

  /** Called once when the connection closes, with the reason. */
  onClose (fn: (err: QmpError) => void): () => void {
    this.closeListeners.add(fn)
    return () => { this.closeListeners.delete(fn) }
  }

  /**
   * Resolves with the first event named `name` (and matching `match`, if given) that arrives
   * after this call. Rejects with QMP_TIMEOUT or QMP_CLOSED.
   */
  waitForEvent (name: string, opts: QmpCallOptions & { match?: (e: QmpEvent) => boolean } = {}): Promise<QmpEvent> {
    const timeoutMs = opts.timeoutMs ?? this.commandTimeoutMs
    return new Promise<QmpEvent>((resolve, reject) => {
      const timeout = AbortSignal.timeout(timeoutMs)
      const signal = opts.signal === undefined ? timeout : AbortSignal.any([opts.signal, timeout])
      const done = (): void => { off(); offClose(); signal.removeEventListener('abort', onAbort) }
      const onAbort = (): void => { done(); reject(new QmpError('QMP_TIMEOUT', `no ${name} event within ${timeoutMs} ms`, { cause: signal.reason })) }
      const off = this.onEvent(e => {
        if (e.event !== name || (opts.match !== undefined && !opts.match(e))) return
        done()
        resolve(e)
      })
      const offClose = this.onClose(err => { done(); reject(err) })
      if (this.closedWith !== null) { done(); reject(this.closedWith); return }
      if (signal.aborted) { onAbort(); return }
      signal.addEventListener('abort', onAbort, { once: true })
    })
  }

  /** Closes the connection (idempotent); pending commands reject with QMP_CLOSED. */
  close (): void {
    this.shutdown(new QmpError('QMP_CLOSED', 'QMP connection closed by the client'))
  }

  private attach (): void {
    const dec = new StringDecoder('utf8')
    this.sock.on('data', (chunk: Buffer) => this.onData(dec.write(chunk)))
    this.sock.on('error', err => this.shutdown(new QmpError('QMP_CLOSED', 'QMP socket error', { cause: err })))
    this.sock.on('close', () => this.shutdown(new QmpError('QMP_CLOSED', 'QMP socket closed by QEMU')))
    this.sock.resume()
  }

  private onData (chunk: string): void {
    this.buf += chunk
    for (;;) {
      const nl = this.buf.indexOf('\n')
      if (nl < 0) break
      const line = this.buf.slice(0, nl)
      this.buf = this.buf.slice(nl + 1)
      if (this.discarding) { this.discarding = false; continue }
      this.onLine(line)
    }
    if (this.buf.length > this.maxLineBytes) {
      // The rest of this line, up to the next newline, is dropped too.
      this.buf = ''
      this.discarding = true
      this.garbageCount++
    }
  }

  private onLine (line: string): void {
    if (line.trim() === '') return
    let msg: unknown
    try { msg = JSON.parse(line) } catch { this.garbageCount++; return }
    if (!isObject(msg)) { this.garbageCount++; return }
    if (typeof msg.event === 'string') {
      const ts = isObject(msg.timestamp) ? msg.timestamp : {}
      const sec = typeof ts.seconds === 'number' ? ts.seconds : 0
      const usec = typeof ts.microseconds === 'number' ? ts.microseconds : 0
      const ev: QmpEvent = { event: msg.event, data: isObject(msg.data) ? msg.data : {}, timestampMs: sec * 1000 + usec / 1000 }
      for (const fn of [...this.listeners]) {
        try { fn(ev) } catch { /* a listener's bug must not break the connection */ }
      }
      return
    }
    const id = typeof msg.id === 'string' ? msg.id : undefined
    const p = id === undefined ? undefined : this.pending.get(id)
    if (id === undefined || p === undefined) {
      // A reply to a command that timed out, or not ours: nothing waits for it.
      if (!('return' in msg) && !('error' in msg)) this.garbageCount++
      return
    }
    this.pending.delete(id)
    p.cleanup()
    if ('return' in msg) { p.resolve(msg.return); return }
    const e = isObject(msg.error) ? msg.error : {}
    const cls = typeof e.class === 'string' ? e.class : 'UnknownError'
    const desc = typeof e.desc === 'string' ? e.desc : JSON.stringify(msg.error ?? msg)
    p.reject(new QmpError('QMP_COMMAND_FAILED', `QMP ${p.command} failed: ${desc}`, { command: p.command, qmpClass: cls }))
  }

  private shutdown (err: QmpError): void {
    if (this.closedWith !== null) return
    this.closedWith = err
    this.sock.destroy()
    for (const [id, p] of this.pending) {
      this.pending.delete(id)
      p.cleanup()
      p.reject(new QmpError('QMP_CLOSED', `QMP connection closed while ${p.command} was pending`, { command: p.command, cause: err }))
    }
    for (const fn of [...this.closeListeners]) {
      try { fn(err) } catch { /* ignore */ }
    }
    this.closeListeners.clear()
    this.listeners.clear()
  }
}

function openSocket (path: string, signal: AbortSignal): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.createConnection({ path })
    const onAbort = (): void => { s.destroy(); reject(signal.reason) }
    signal.addEventListener('abort', onAbort, { once: true })
    s.once('connect', () => { signal.removeEventListener('abort', onAbort); s.removeAllListeners('error'); resolve(s) })
    s.once('error', err => { signal.removeEventListener('abort', onAbort); s.destroy(); reject(err) })
  })
}

/** Reads the first line (the greeting) without losing whatever follows it. */
function readGreeting (s: net.Socket, signal: AbortSignal): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    let acc = ''
    const finish = (err: Error | null, v?: Record<string, unknown>): void => {
      s.off('data', onData); s.off('close', onClose); s.off('error', onErr)
      signal.removeEventListener('abort', onAbort)
      if (err !== null) reject(err); else resolve(v ?? {})
    }
    const onData = (chunk: Buffer): void => {
      acc += chunk.toString('utf8')
      const nl = acc.indexOf('\n')
      if (nl < 0) {
        if (acc.length > 65536) finish(new Error('QMP greeting too long'))
        return
      }
      // Stop reading before handing back what follows the greeting: unshift() re-emits it.
      s.off('data', onData)
      s.pause()
      const rest = acc.slice(nl + 1)
      if (rest.length > 0) s.unshift(Buffer.from(rest, 'utf8'))
      let g: unknown
      try { g = JSON.parse(acc.slice(0, nl)) } catch { finish(new Error('QMP greeting is not JSON')); return }
      if (!isObject(g) || !isObject(g.QMP)) { finish(new Error('first line is not a QMP greeting')); return }
      finish(null, g)
    }
    const onClose = (): void => finish(new Error('socket closed before the QMP greeting'))
    const onErr = (err: Error): void => finish(err)
    const onAbort = (): void => finish(new Error('timed out waiting for the QMP greeting', { cause: signal.reason }))
    s.on('data', onData); s.once('close', onClose); s.once('error', onErr)
    // An abort that happened already fires no event: without this check, a QEMU that never
    // greets would hold the caller forever.
    if (signal.aborted) { onAbort(); return }
    signal.addEventListener('abort', onAbort, { once: true })
  })
}
