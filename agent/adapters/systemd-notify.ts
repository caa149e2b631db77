/**
 * sd_notify for a Type=notify unit: READY=1, STATUS=..., WATCHDOG=1, STOPPING=1.
 *
 * The protocol is one datagram on the AF_UNIX SOCK_DGRAM socket named by $NOTIFY_SOCKET. Node
 * cannot open unix datagram sockets (its `dgram` module is UDP only, `net` is stream only), and
 * a native addon would be a new dependency. So each notification runs the `systemd-notify`
 * binary, which ships with systemd itself and is therefore present whenever NOTIFY_SOCKET is set.
 * Two consequences, both handled:
 *
 * - The datagram comes from a child process, not from the main PID, so the unit needs
 *   NotifyAccess=all (systemd/starling.service sets it).
 * - A child that exits before systemd reads its datagram used to be a race (systemd could not
 *   tell which unit the dead sender belonged to). systemd-notify (systemd >= 246) avoids it: it
 *   follows the message with BARRIER=1 and waits until systemd has processed it. Each call is
 *   bounded by `timeoutMs`.
 *
 * Without NOTIFY_SOCKET (run by hand, in tests, under another supervisor) every call is a no-op.
 * Notifications never throw or reject: a failure is logged at warn and counted.
 *
 * Watchdog: when systemd sets WATCHDOG_USEC (from WatchdogSec=) for this process (WATCHDOG_PID
 * unset or equal to our pid), ready() starts sending WATCHDOG=1 every WATCHDOG_USEC / 2, as
 * sd_watchdog_enabled(3) advises. Each ping first asks the `healthy` component: an agent whose
 * tick loop is wedged stops pinging, and systemd restarts it (Restart=on-failure).
 */
import { execFile } from 'node:child_process'
import type { Logger } from '../ports/logger.js'

export interface SystemdNotifierInit {
  /**
   * The notification socket. An abstract socket starts with '@'.
   * @default process.env.NOTIFY_SOCKET (unset: every call is a no-op)
   */
  notifySocket?: string
  /**
   * Watchdog period in microseconds, as systemd passes it.
   * @default process.env.WATCHDOG_USEC, if WATCHDOG_PID is unset or is this process
   */
  watchdogUsec?: number
  /**
   * The sender program.
   * @default 'systemd-notify' (looked up in PATH)
   */
  binary?: string
  /**
   * Longest a single notification may take (systemd-notify waits for systemd to process it).
   * @default 5000
   */
  timeoutMs?: number
}

export interface SystemdNotifierComponents {
  logger: Logger
  /**
   * Asked before each watchdog ping; false skips the ping (the runtime says whether its loop
   * is making progress).
   * @default () => true
   */
  healthy?: () => boolean
}

export interface SystemdNotifier {
  /** True when NOTIFY_SOCKET is set (notifications go somewhere). */
  readonly enabled: boolean
  /** Watchdog ping interval in ms, or null when systemd asked for no watchdog. */
  readonly watchdogIntervalMs: number | null
  /**
   * Start the watchdog pings before READY=1, for a start-up that may outlast WatchdogSec (systemd
   * enforces the watchdog from the start of the main process). Idempotent; ready() does it too.
   */
  start (): void
  /** READY=1 (with STATUS= if given); starts the watchdog pings if start() did not. */
  ready (status?: string): Promise<void>
  /** STATUS=..., the line `systemctl status` shows. */
  status (text: string): Promise<void>
  /** One WATCHDOG=1 now. */
  watchdog (): Promise<void>
  /** STOPPING=1 (with STATUS= if given). The watchdog keeps pinging until close(). */
  stopping (status?: string): Promise<void>
  /** Stop the watchdog and wait for notifications under way. Idempotent. */
  close (): Promise<void>
  /** Counters for status output. */
  stats (): { sent: number, failed: number, watchdogSkipped: number }
}

/** STATUS= text must be one line: each assignment of the datagram is a line. */
function oneLine (s: string): string {
  return s.replace(/[\r\n]+/g, ' ').slice(0, 1024)
}

/** Watchdog settings from systemd's environment variables (sd_watchdog_enabled semantics). */
export function watchdogFromEnv (env: NodeJS.ProcessEnv, pid: number): number | undefined {
  const usec = env['WATCHDOG_USEC']
  if (usec === undefined || usec === '') return undefined
  const watchdogPid = env['WATCHDOG_PID']
  if (watchdogPid !== undefined && watchdogPid !== '' && Number(watchdogPid) !== pid) return undefined
  const n = Number(usec)
  return Number.isFinite(n) && n > 0 ? n : undefined
}

class Notifier implements SystemdNotifier {
  readonly enabled: boolean
  readonly watchdogIntervalMs: number | null
  private readonly log: Logger
  private readonly socket: string | undefined
  private readonly binary: string
  private readonly timeoutMs: number
  private readonly healthy: () => boolean
  private readonly abort = new AbortController()
  /** Notifications are sent one after another, in call order. */
  private chain: Promise<void> = Promise.resolve()
  private pingInFlight = false
  private timer: NodeJS.Timeout | null = null
  private closed = false
  private readonly counters = { sent: 0, failed: 0, watchdogSkipped: 0 }

  constructor (init: SystemdNotifierInit, components: SystemdNotifierComponents) {
    this.log = components.logger.forComponent('agent:systemd')
    const socket = init.notifySocket ?? process.env['NOTIFY_SOCKET']
    this.socket = socket === '' ? undefined : socket
    this.enabled = this.socket !== undefined
    this.binary = init.binary ?? 'systemd-notify'
    this.timeoutMs = init.timeoutMs ?? 5000
    this.healthy = components.healthy ?? (() => true)
    const usec = init.watchdogUsec ?? watchdogFromEnv(process.env, process.pid)
    this.watchdogIntervalMs = this.enabled && usec !== undefined ? Math.max(1, Math.floor(usec / 2000)) : null
  }

  private send (assignments: string[]): Promise<void> {
    if (!this.enabled || this.closed) return Promise.resolve()
    const run = async (): Promise<void> => {
      try {
        await this.exec(assignments)
        this.counters.sent++
      } catch (err) {
        this.counters.failed++
        this.log.warn('sd_notify failed', { what: assignments[0], err, socket: this.socket })
      }
    }
    const p = this.chain.then(run)
    this.chain = p
    return p
  }

  private exec (assignments: string[]): Promise<void> {
    return new Promise((resolve, reject) => {
      execFile(this.binary, assignments, {
        env: { ...process.env, NOTIFY_SOCKET: this.socket },
        timeout: this.timeoutMs,
        signal: this.abort.signal,
        windowsHide: true
      }, (err, _stdout, stderr) => {
        if (err !== null) {
          reject(Object.assign(err, { stderr: String(stderr).trim().slice(0, 500) }))
        } else {
          resolve()
        }
      })
    })
  }

  start (): void {
    this.startWatchdog()
  }

  async ready (status?: string): Promise<void> {
    await this.send(['READY=1', ...(status !== undefined ? [`STATUS=${oneLine(status)}`] : [])])
    this.startWatchdog()
    if (this.enabled) this.log.info('told systemd we are ready', { watchdogIntervalMs: this.watchdogIntervalMs })
  }

  async status (text: string): Promise<void> {
    await this.send([`STATUS=${oneLine(text)}`])
  }

  async watchdog (): Promise<void> {
    await this.send(['WATCHDOG=1'])
  }

  async stopping (status?: string): Promise<void> {
    await this.send(['STOPPING=1', ...(status !== undefined ? [`STATUS=${oneLine(status)}`] : [])])
  }

  private startWatchdog (): void {
    if (this.watchdogIntervalMs === null || this.timer !== null || this.closed) return
    this.timer = setInterval(() => { this.ping() }, this.watchdogIntervalMs)
    // The watchdog must not keep a stopping agent alive on its own.
    this.timer.unref()
  }

  private ping (): void {
    // At most one ping at a time: a slow systemd must not pile up child processes.
    if (this.pingInFlight) return
    let ok: boolean
    try { ok = this.healthy() } catch { ok = false }
    if (!ok) {
      this.counters.watchdogSkipped++
      this.log.warn('runtime unhealthy: watchdog ping skipped', { skipped: this.counters.watchdogSkipped })
      return
    }
    this.pingInFlight = true
    void this.watchdog().finally(() => { this.pingInFlight = false })
  }

  async close (): Promise<void> {
    if (this.timer !== null) clearInterval(this.timer)
    this.timer = null
    await this.chain
    this.closed = true
    this.abort.abort()
  }

  stats (): { sent: number, failed: number, watchdogSkipped: number } {
    return { ...this.counters }
  }
}

/** Factory (STYLE §1.4): `systemdNotifier({})({ logger })`. */
export function systemdNotifier (init: SystemdNotifierInit = {}): (components: SystemdNotifierComponents) => SystemdNotifier {
  return components => new Notifier(init, components)
}
