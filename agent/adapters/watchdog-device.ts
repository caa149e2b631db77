/**
 * The Linux watchdog device (/dev/watchdog: a hardware timer, or the softdog module): the fence
 * that resets a host whose agent is hung, crashed or cut off from the majority past its grace.
 *
 * Contract of the kernel's watchdog API (Documentation/watchdog/watchdog-api.rst): opening the
 * device starts the timer; any write restarts it ("pets" it); if nothing is written for the
 * device's timeout, the machine is reset. Closing the file does NOT stop the timer unless the
 * last write contained the magic character 'V' (and the kernel was not built or loaded with
 * nowayout): only then does a close disarm it. Only one process may hold the device open.
 *
 * This adapter:
 * - when the device is missing, loads the softdog module (`prepareWatchdogDevice`, as root: the
 *   unit's `starling fence-setup`, or an agent run as root) with soft_margin set to the HA bound,
 *   and gives the device to the agent's group;
 * - opens the device once at start-up; if it is absent or cannot be opened (no driver, no
 *   softdog, permissions, already held, a timeout the HA timing does not allow),
 *   `openWatchdogDevice` says why and the composition root logs it at error: the host then
 *   protects no VM (the HA core's fence gate, agent/core/ha/index.ts). systemd's watchdog
 *   (WatchdogSec=) restarts a hung agent but does not reset the host, so it never counts as a
 *   fence;
 * - pets it every `petIntervalMs` only while `healthy()` holds: the runtime's ticks advanced
 *   since the previous pet AND the HA core allows it (HaManager.watchdogOk: quorate, within the
 *   fence grace, every local HA VM fenced, or fencing off). A hung event loop runs no timer and
 *   pets nothing; a loop that runs but makes no tick progress is skipped too;
 * - on a clean stop writes the magic 'V' and closes, but only when the core still allows the
 *   watchdog at that moment (the agent left gracefully while it could have pinged). An agent
 *   stopped while it is withholding the ping (cut off, fenced) closes without 'V': the timer
 *   runs on and resets the host, as the fence requires.
 *
 * Safety timing. The HA timing argument (agent/core/ha/index.ts) bounds the time a host may run
 * an HA VM after its last allowed ping by `ha.timing.watchdogTicks x core.tickMs`, and
 * validateHaConfig makes the fence delay exceed it (fenceDelay >= lease + fence + watchdog +
 * 2 x claimTimeout + 2, stretched by the clock drift). So the device's own timeout must not
 * exceed watchdogTicks x tickMs: a longer hardware timeout would let a hung host run past the
 * moment the majority may restart its VMs. The device's timeout is read from sysfs
 * (/sys/class/watchdog/watchdogN/timeout) or, where sysfs does not say, taken from the
 * configuration (`ha.watchdog.timeoutSec`, what the operator set, e.g. softdog's soft_margin);
 * a device whose timeout exceeds the bound, or is unknown, is refused (start-up error), never
 * used silently. Node cannot issue the WDIOC_SETTIMEOUT ioctl without a native addon, so the
 * timeout is the driver's (set softdog's with `options softdog soft_margin=10`).
 */
import { execFileSync } from 'node:child_process'
import { chmodSync, chownSync, closeSync, constants, openSync, readFileSync, realpathSync, statSync, writeSync } from 'node:fs'
import path from 'node:path'
import type { Logger } from '../ports/logger.js'

export interface WatchdogDeviceInit {
  /** The device, normally /dev/watchdog (or /dev/watchdogN). */
  device: string
  /** The longest device timeout the HA timing allows: ha.timing.watchdogTicks x core.tickMs. */
  maxTimeoutMs: number
  /** The device's timeout as configured by the operator, when sysfs does not report it. */
  timeoutSec?: number
  /**
   * Pet period. @default min(timeout / 4, 1000 ms), at least 2 ticks so that every pet can
   * see tick progress
   */
  petIntervalMs?: number
  /** One core tick, ms (the pet period is at least two of them). */
  tickMs: number
  /** Where the watchdog class lives in sysfs. @default '/sys/class/watchdog' */
  sysfsDir?: string
}

export interface WatchdogDeviceComponents {
  logger: Logger
  /** Asked before each pet: false skips it (no tick progress, or HA withholds the watchdog). */
  healthy: () => boolean
  /** Asked at a clean stop: true allows the magic close (HA allows the watchdog now). */
  mayDisarm: () => boolean
}

export interface WatchdogDeviceStats { pets: number, skipped: number, writeErrors: number, timeoutMs: number, petIntervalMs: number }

export interface WatchdogDevice {
  readonly device: string
  /** Start petting (idempotent). */
  start (): void
  /** One pet now if healthy (the timer calls it; exposed for tests). Returns whether it wrote. */
  pet (): boolean
  /**
   * Stop petting and close. `clean`: a graceful stop (writes 'V' first when mayDisarm()).
   * Returns whether the timer was disarmed. Idempotent.
   */
  close (clean: boolean): boolean
  stats (): WatchdogDeviceStats
}

export type OpenWatchdogResult = { ok: true, watchdog: WatchdogDevice } | { ok: false, reason: string, fatal: boolean }

/** The device's timeout in seconds from sysfs, or undefined when sysfs does not say. */
export function sysfsTimeoutSec (device: string, sysfsDir = '/sys/class/watchdog'): number | undefined {
  let name: string
  try { name = path.basename(realpathSync(device)) } catch { name = path.basename(device) }
  // /dev/watchdog is the legacy alias of the first device, watchdog0
  if (name === 'watchdog') name = 'watchdog0'
  try {
    const v = Number(readFileSync(path.join(sysfsDir, name, 'timeout'), 'utf8').trim())
    return Number.isFinite(v) && v > 0 ? v : undefined
  } catch {
    return undefined
  }
}

class Device implements WatchdogDevice {
  private timer: NodeJS.Timeout | null = null
  private fd: number | null
  private readonly log: Logger
  private readonly counters = { pets: 0, skipped: 0, writeErrors: 0 }

  constructor (readonly device: string, fd: number, private readonly timeoutMs: number, private readonly petIntervalMs: number,
    private readonly c: WatchdogDeviceComponents) {
    this.fd = fd
    this.log = c.logger.forComponent('agent:watchdog')
  }

  start (): void {
    if (this.timer !== null || this.fd === null) return
    this.timer = setInterval(() => { this.pet() }, this.petIntervalMs)
    // Never keeps a stopping process alive on its own.
    this.timer.unref()
  }

  pet (): boolean {
    if (this.fd === null) return false
    let ok: boolean
    try { ok = this.c.healthy() } catch { ok = false }
    if (!ok) {
      this.counters.skipped++
      if (this.counters.skipped % 10 === 1) this.log.warn('watchdog device not petted (no tick progress, or HA withholds it): the host resets when its timeout runs out', { device: this.device, skipped: this.counters.skipped, timeoutMs: this.timeoutMs })
      return false
    }
    try {
      // Any character but 'V' restarts the timer and clears a pending magic close.
      writeSync(this.fd, '.')
      this.counters.pets++
      return true
    } catch (err) {
      this.counters.writeErrors++
      this.log.error('watchdog device write failed', { device: this.device, err })
      return false
    }
  }

  close (clean: boolean): boolean {
    if (this.timer !== null) clearInterval(this.timer)
    this.timer = null
    const fd = this.fd
    if (fd === null) return false
    this.fd = null
    let disarm = false
    if (clean) {
      try { disarm = this.c.mayDisarm() } catch { disarm = false }
    }
    if (disarm) {
      try {
        writeSync(fd, 'V')
      } catch (err) {
        disarm = false
        this.log.error('watchdog magic close failed: the host will be reset when the timeout runs out', { device: this.device, err })
      }
    }
    try { closeSync(fd) } catch (err) { this.log.warn('watchdog close failed', { device: this.device, err }) }
    if (disarm) this.log.info('watchdog device disarmed (magic close) on a clean stop', { device: this.device })
    else this.log.error('watchdog device closed WITHOUT magic close: the host resets when its timeout runs out (fence)', { device: this.device, clean, timeoutMs: this.timeoutMs })
    return disarm
  }

  stats (): WatchdogDeviceStats { return { ...this.counters, timeoutMs: this.timeoutMs, petIntervalMs: this.petIntervalMs } }
}

export type WatchdogCheck = { ok: true, timeoutMs: number, petIntervalMs: number } | { ok: false, reason: string, fatal: boolean }

/**
 * Check the device without opening it (opening starts the timer): present, and its timeout
 * known and within the HA bound. Never throws. `fatal`: the device is there but unsafe to use
 * (timeout too long or unknown); not fatal: absent (fall back to systemd's watchdog). The
 * composition root runs it before anything starts, so that a refusal exits at once.
 */
export function checkWatchdogDevice (init: WatchdogDeviceInit, logger?: Logger): WatchdogCheck {
  try {
    statSync(init.device)
  } catch (err) {
    const e = err as NodeJS.ErrnoException
    return { ok: false, fatal: false, reason: `${init.device} is not there (${e.code ?? e.message}): no watchdog driver and no softdog loaded` }
  }
  const sysSec = sysfsTimeoutSec(init.device, init.sysfsDir)
  const sec = sysSec ?? init.timeoutSec
  if (sec === undefined) {
    return { ok: false, fatal: true, reason: `cannot tell the timeout of ${init.device} (no sysfs timeout): set ha.watchdog.timeoutSec to the driver's timeout (at most ${init.maxTimeoutMs / 1000} s)` }
  }
  if (sysSec !== undefined && init.timeoutSec !== undefined && sysSec !== init.timeoutSec) {
    logger?.forComponent('agent:watchdog').warn('ha.watchdog.timeoutSec differs from the timeout sysfs reports; using sysfs', { device: init.device, sysfs: sysSec, configured: init.timeoutSec })
  }
  const timeoutMs = sec * 1000
  if (timeoutMs > init.maxTimeoutMs) {
    return { ok: false, fatal: true, reason: `${init.device} times out after ${sec} s, longer than ha.timing.watchdogTicks x core.tickMs = ${init.maxTimeoutMs / 1000} s that the HA fence delay is computed from: lower the driver's timeout (softdog: soft_margin) or raise ha.timing.watchdogTicks` }
  }
  const petIntervalMs = init.petIntervalMs ?? Math.max(2 * init.tickMs, Math.min(timeoutMs / 4, 1000))
  if (petIntervalMs * 2 > timeoutMs) {
    return { ok: false, fatal: true, reason: `${init.device}: pet interval ${petIntervalMs} ms is more than half the timeout ${timeoutMs} ms` }
  }
  return { ok: true, timeoutMs, petIntervalMs }
}

/** Check (as checkWatchdogDevice), then open the device, which starts its timer. Never throws. */
export function openWatchdogDevice (init: WatchdogDeviceInit, c: WatchdogDeviceComponents): OpenWatchdogResult {
  const chk = checkWatchdogDevice(init, c.logger)
  if (!chk.ok) return chk
  let fd: number
  try {
    // Non-blocking: a character device opens at once either way, and a FIFO (a test's emulated
    // device) with no reader fails with ENXIO instead of blocking the agent.
    fd = openSync(init.device, constants.O_WRONLY | constants.O_NONBLOCK)
  } catch (err) {
    const e = err as NodeJS.ErrnoException
    return { ok: false, fatal: false, reason: `cannot open ${init.device}: ${e.code ?? e.message}` }
  }
  return { ok: true, watchdog: new Device(init.device, fd, chk.timeoutMs, chk.petIntervalMs, c) }
}

/**
 * A progress gate: true when `ticks()` advanced since the previous call and `allow()` holds.
 * Each consumer (systemd's watchdog, the device) needs its own, or one would consume the
 * progress the other is looking for.
 */
export function progressGate (ticks: () => number, allow: () => boolean): () => boolean {
  let last = -1
  return () => {
    const now = ticks()
    const progressed = now > last
    last = now
    return progressed && allow()
  }
}

export interface PrepareWatchdogOptions {
  device: string
  /** Load softdog when the device is missing. */
  loadSoftdog: boolean
  /** softdog's soft_margin, seconds (the HA bound: watchdogTicks x tickMs). */
  softMarginSec: number
  /** Give the device to this gid, mode 0660 (the unit's agent runs as group starling). */
  gid?: number
  /** @default 'modprobe' */
  modprobe?: string
}

/**
 * Makes the watchdog device usable before the agent opens it: loads softdog when the device is
 * missing (root only), and hands it to the agent's group. Returns what it did, or why it could
 * not; never throws. Opening the device is left to the agent: it starts the timer.
 */
export function prepareWatchdogDevice (o: PrepareWatchdogOptions): { ok: boolean, did: string[], problem: string | null } {
  const did: string[] = []
  const exists = (): boolean => { try { statSync(o.device); return true } catch { return false } }
  if (!exists()) {
    if (!o.loadSoftdog) return { ok: false, did, problem: `${o.device} is missing and ha.watchdog.loadSoftdog is false` }
    if (process.getuid?.() !== 0) return { ok: false, did, problem: `${o.device} is missing and loading softdog needs root (the unit's ExecStartPre runs \`starling fence-setup\`)` }
    try {
      execFileSync(o.modprobe ?? 'modprobe', ['softdog', `soft_margin=${o.softMarginSec}`], { stdio: ['ignore', 'ignore', 'pipe'], timeout: 20_000 })
      did.push(`loaded softdog (soft_margin=${o.softMarginSec})`)
    } catch (err) {
      const e = err as Error & { stderr?: Buffer }
      return { ok: false, did, problem: `${o.device} is missing and \`modprobe softdog\` failed: ${(e.stderr?.toString() ?? e.message).trim()}` }
    }
    // udev creates the node shortly after the module registers the device.
    for (let i = 0; i < 50 && !exists(); i++) execFileSync('sleep', ['0.1'])
    if (!exists()) return { ok: false, did, problem: `softdog loaded but ${o.device} did not appear` }
  }
  if (o.gid !== undefined && process.getuid?.() === 0) {
    try {
      chownSync(o.device, 0, o.gid)
      chmodSync(o.device, 0o660)
      did.push(`${o.device} given to gid ${o.gid}, mode 0660`)
    } catch (err) {
      return { ok: false, did, problem: `cannot give ${o.device} to the agent's group: ${(err as Error).message}` }
    }
  }
  return { ok: true, did, problem: null }
}
