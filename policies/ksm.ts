/**
 * The page sharing policy: when the kernel's same-page merging (KSM) should run on this host and
 * how fast it should scan, from the host's free memory, its committed guest memory and what ksmd
 * cost at the last step. Pure: the caller reads /proc/meminfo, /sys/kernel/mm/ksm and ksmd's CPU
 * time, and writes the settings back.
 *
 * The rules are ksmtuned's (and oVirt MoM's), with hysteresis and a CPU budget added:
 *
 * - KSM runs while the host's free memory is under `startFreePercent` of its memory, or while its
 *   guests' configured memory plus that threshold exceeds the host's memory (overcommitted: the
 *   guests may take it at any time). It stops (run = 0; merged pages stay merged) only once free
 *   memory is above `stopFreePercent` and the host is not overcommitted by that larger margin;
 *   between the two it keeps what it was doing.
 * - While it runs, the scan rate (pages per wake-up) grows by `boostPages` at each step the host
 *   is short of free memory and decays by `decayPages` otherwise, within
 *   [minPagesToScan, maxPagesToScan] (ksmtuned and MoM: 64..1250, +300, -50).
 * - ksmd's CPU share never stays above `maxCpuPercent` of one core: when the last step measured
 *   more, the rate is scaled down by budget / measured (at least to the minimum; at the minimum
 *   the sleep between wake-ups doubles, up to 1 s); a boost never goes beyond what the measured
 *   cost per page allows. The sleep comes back to its base once ksmd is well under its budget.
 * - With `advisor` the kernel's own KSM advisor (Linux >= 6.7, scan-time mode) sets the rate within
 *   the same bounds and budget; the policy then decides only when KSM runs.
 *
 * The base sleep between wake-ups is ksmtuned's: 10 ms for 16 GiB, scaled by 16 GiB / host
 * memory, at least 10 ms; `sleepMs` overrides it.
 */
import { ConfigError } from './config-error.js'

export interface KsmParams {
  /** KSM runs while free memory is under this share of the host's memory, percent (ksmtuned: 20). @default 20 */
  startFreePercent: number
  /** ...and stops only once free memory is above this share (hysteresis), percent. >= startFreePercent. @default 30 */
  stopFreePercent: number
  /** Also run while the guests' configured memory plus the start threshold exceeds the host's memory (ksmtuned). @default true */
  runWhenOvercommitted: boolean
  /** Fewest pages ksmd scans per wake-up (ksmtuned, MoM: 64). @default 64 */
  minPagesToScan: number
  /** Most pages ksmd scans per wake-up (ksmtuned, MoM: 1250). @default 1250 */
  maxPagesToScan: number
  /** Pages per wake-up added at each step the host is short of free memory (ksmtuned, MoM: 300). @default 300 */
  boostPages: number
  /** Pages per wake-up taken off at each step it is not (ksmtuned, MoM: 50). @default 50 */
  decayPages: number
  /** Sleep between ksmd's wake-ups, ms; null: ksmtuned's 10 ms x 16 GiB / host memory, at least 10. @default null */
  sleepMs: number | null
  /** ksmd's CPU budget, percent of one core. @default 20 */
  maxCpuPercent: number
  /** Let the kernel's KSM advisor (advisor_mode scan-time) set the scan rate, where the kernel has one. @default false */
  advisor: boolean
  /** The advisor's target time for one full scan, s (kernel default 200). @default 200 */
  advisorTargetScanS: number
}

export function defaultKsmParams (): KsmParams {
  return {
    startFreePercent: 20,
    stopFreePercent: 30,
    runWhenOvercommitted: true,
    minPagesToScan: 64,
    maxPagesToScan: 1250,
    boostPages: 300,
    decayPages: 50,
    sleepMs: null,
    maxCpuPercent: 20,
    advisor: false,
    advisorTargetScanS: 200
  }
}

/** Longest sleep the CPU budget may push ksmd to, ms. */
const MAX_SLEEP_MS = 1000

/** Checks a parameter set; the ConfigError names the field. */
export function validateKsmParams (p: KsmParams): KsmParams {
  const range = (k: keyof KsmParams, lo: number, hi: number, loOpen = false): void => {
    const v = p[k]
    if (typeof v !== 'number' || !Number.isFinite(v)) throw new ConfigError(`${k} must be a number (got ${JSON.stringify(v)})`, k)
    if ((loOpen ? v <= lo : v < lo) || v > hi) throw new ConfigError(`${k} must be ${loOpen ? 'above' : 'at least'} ${lo} and at most ${hi} (got ${v})`, k)
  }
  const bool = (k: keyof KsmParams): void => {
    if (typeof p[k] !== 'boolean') throw new ConfigError(`${k} must be true or false (got ${JSON.stringify(p[k])})`, k)
  }
  range('startFreePercent', 0, 100)
  range('stopFreePercent', 0, 100)
  bool('runWhenOvercommitted')
  range('minPagesToScan', 1, 1 << 24)
  range('maxPagesToScan', 1, 1 << 24)
  range('boostPages', 0, 1 << 24)
  range('decayPages', 0, 1 << 24)
  if (p.sleepMs !== null) range('sleepMs', 1, 60_000)
  range('maxCpuPercent', 0, 100, true)
  bool('advisor')
  range('advisorTargetScanS', 1, 86400)
  if (p.stopFreePercent < p.startFreePercent) throw new ConfigError(`stopFreePercent (${p.stopFreePercent}) must be at least startFreePercent (${p.startFreePercent}), or KSM starts and stops at every step`, 'stopFreePercent')
  if (p.maxPagesToScan < p.minPagesToScan) throw new ConfigError(`maxPagesToScan (${p.maxPagesToScan}) must be at least minPagesToScan (${p.minPagesToScan})`, 'maxPagesToScan')
  return p
}

/** The host as the policy sees it at one step. */
export interface KsmInput {
  /** Memory counted as the host's, MiB. */
  totalMiB: number
  /** Memory in use, MiB (free = total - used). */
  usedMiB: number
  /** Sum of the running guests' configured memory, MiB. */
  committedMiB: number
  /** ksmd's CPU since the last step, fraction of one core; null when not measured (first step, no ksmd). */
  cpuShare: number | null
  /** The machine's memory, MiB, which ksmd scans (the base sleep scales with it); @default totalMiB */
  physicalMiB?: number
}

/** What the agent set at the last step; null before its first. */
export interface KsmControl {
  run: boolean
  pagesToScan: number
  sleepMs: number
}

export type KsmReason =
  /** Free memory under the start threshold. */
  | 'lowFree'
  /** Committed guest memory plus the threshold exceeds the host's memory. */
  | 'overcommitted'
  /** Between the start and stop thresholds: as before. */
  | 'hold'
  /** Free memory above the stop threshold and not overcommitted: stopped. */
  | 'notNeeded'

export interface KsmDecision extends KsmControl {
  reason: KsmReason
  /** The rate was cut for ksmd's CPU budget. */
  cpuLimited: boolean
  /** Scan rate left to the kernel's advisor (pagesToScan is then only its floor). */
  advisor: boolean
  freeMiB: number
  startThresholdMiB: number
  stopThresholdMiB: number
}

/** ksmtuned's base sleep: 10 ms for 16 GiB, scaled by 16 GiB / host memory, at least 10 ms. */
export function baseSleepMs (totalMiB: number, p: KsmParams): number {
  if (p.sleepMs !== null) return p.sleepMs
  return Math.max(10, Math.round(10 * 16384 / Math.max(1, totalMiB)))
}

/** One policy step. Deterministic: the same facts and the same last control give the same decision. */
export function decideKsm (h: KsmInput, prev: KsmControl | null, p: KsmParams): KsmDecision {
  const free = h.totalMiB - h.usedMiB
  const start = h.totalMiB * p.startFreePercent / 100
  const stop = h.totalMiB * p.stopFreePercent / 100
  const low = free < start
  const over = p.runWhenOvercommitted && h.committedMiB + start > h.totalMiB
  const wasRunning = prev?.run ?? false
  let run: boolean
  let reason: KsmReason
  if (low) { run = true; reason = 'lowFree' } else if (over) { run = true; reason = 'overcommitted' } else if (free > stop && !(p.runWhenOvercommitted && h.committedMiB + stop > h.totalMiB)) {
    run = false; reason = 'notNeeded'
  } else { run = wasRunning; reason = 'hold' }

  const base = baseSleepMs(h.physicalMiB ?? h.totalMiB, p)
  const clampPages = (x: number): number => Math.max(p.minPagesToScan, Math.min(p.maxPagesToScan, Math.round(x)))
  let pages = clampPages(prev?.pagesToScan ?? p.minPagesToScan)
  let sleep = Math.max(base, Math.min(MAX_SLEEP_MS, prev?.sleepMs ?? base))
  let cpuLimited = false
  if (!run) {
    pages = clampPages(pages - p.decayPages)
    sleep = base
  } else {
    const budget = p.maxCpuPercent / 100
    // The measured cost only describes the rate that ran (the last control, while running).
    const cpu = wasRunning ? h.cpuShare : null
    if (cpu !== null && cpu > budget) {
      cpuLimited = true
      if (pages <= p.minPagesToScan) sleep = Math.min(MAX_SLEEP_MS, sleep * 2)
      else pages = clampPages(Math.floor(pages * budget / cpu))
    } else {
      pages = clampPages(low ? pages + p.boostPages : pages - p.decayPages)
      if (cpu !== null && cpu > 0) {
        // Do not boost beyond what the measured cost per page allows.
        const cap = Math.floor((prev?.pagesToScan ?? pages) * budget / cpu)
        if (pages > cap) { pages = clampPages(Math.max(cap, Math.min(pages, prev?.pagesToScan ?? pages))); cpuLimited = true }
      }
      if (sleep > base && cpu !== null && cpu < budget / 2) sleep = Math.max(base, Math.floor(sleep / 2))
    }
  }
  return { run, pagesToScan: pages, sleepMs: sleep, reason, cpuLimited, advisor: p.advisor, freeMiB: free, startThresholdMiB: start, stopThresholdMiB: stop }
}
