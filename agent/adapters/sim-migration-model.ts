/**
 * How long a simulated VM's live migration takes: the pre-copy model of the simulated driver
 * (sim-driver.ts). Pure functions, no clock: the driver runs the same steps on timers.
 *
 * The model follows QEMU's pre-copy loop, page contents left out:
 *   1. The first pass sends the guest's resident memory (the memory it uses; pages it never
 *      touched go as zero pages, counted as free) at the pre-copy bandwidth: the link speed, or
 *      the migration's bandwidth cap when lower.
 *   2. While a pass runs, the guest dirties memory at its dirty rate; the next pass sends what
 *      was dirtied, never more than the resident memory (the working set cannot exceed it).
 *   3. After each pass, if what is left could be sent at the full link speed within the
 *      downtime limit, the guest pauses and the rest goes in one stop-and-copy: that is the
 *      downtime. Otherwise another pass starts.
 *   A guest that dirties memory as fast as the bandwidth never converges: passes go on (as in
 *   QEMU) until the migration's owner raises the downtime limit, switches to post-copy or cancels.
 *   Post-copy: the guest runs on the target at once and what is left goes at the link speed.
 *
 * Dirty rate of a simulated VM: `dirtyMiBps` (MiB/s a fully busy vCPU dirties) × vcpus × its
 * current load (the pattern's value, a fraction of its vcpus).
 */

/** MiB/s a fully busy simulated vCPU dirties by default. */
export const DEFAULT_DIRTY_MIBPS = 16

export interface CopyInput {
  /** Bytes the first pass sends (the guest's resident memory). */
  residentBytes: number
  /** Bytes the guest dirties per second during the copy. */
  dirtyRateBytesPerS: number
  /** Pre-copy bandwidth, bytes/s (the link, or the migration's cap when lower). */
  bandwidthBytesPerS: number
  /** Link speed for the stop-and-copy, bytes/s (not capped). */
  linkBytesPerS: number
  /** Largest acceptable pause, ms. */
  downtimeLimitMs: number
}

/** One pre-copy pass. */
export interface CopyPass { bytes: number, ms: number }

/** The dirty rate of a simulated VM, bytes/s (see the module comment). */
export function dirtyRateBytesPerS (dirtyMiBps: number, vcpus: number, load: number): number {
  return Math.max(0, dirtyMiBps * vcpus * Math.max(0, Math.min(1, load)) * 1048576)
}

/** Pre-copy bandwidth: the link, capped by the migration's maxBandwidthBytes when that is > 0 and lower. */
export function precopyBandwidth (linkBytesPerS: number, maxBandwidthBytes: number): number {
  return maxBandwidthBytes > 0 ? Math.min(linkBytesPerS, maxBandwidthBytes) : linkBytesPerS
}

/** Duration of sending `bytes` at `bytesPerS`, ms. */
export function sendMs (bytes: number, bytesPerS: number): number {
  return bytesPerS > 0 ? (bytes * 1000) / bytesPerS : Infinity
}

/** Bytes dirtied during a pass of `ms` (capped at the resident memory). */
export function dirtiedDuring (ms: number, dirtyRate: number, residentBytes: number): number {
  return Math.min(residentBytes, (dirtyRate * ms) / 1000)
}

/** After a pass: may the rest go in one stop-and-copy within the downtime limit? */
export function canStop (pendingBytes: number, linkBytesPerS: number, downtimeLimitMs: number): boolean {
  return sendMs(pendingBytes, linkBytesPerS) <= downtimeLimitMs
}

export interface CopyPrediction {
  /** The pre-copy passes, first pass first. */
  passes: CopyPass[]
  /** Whether the stop-and-copy fits the downtime limit within maxPasses. */
  converged: boolean
  /** Time of the passes, ms. */
  precopyMs: number
  /** The pause of the stop-and-copy, ms (null when not converged). */
  downtimeMs: number | null
  /** From the start to completion, ms (null when not converged). */
  totalMs: number | null
  /** Bytes sent in all, the stop-and-copy included. */
  transferredBytes: number
}

/**
 * What the model predicts for a migration whose inputs stay constant: the passes, the downtime
 * and the total time. A migration that has not converged after `maxPasses` passes is reported
 * as such (the driver itself keeps going until told otherwise).
 */
export function predictCopy (x: CopyInput, maxPasses = 30): CopyPrediction {
  const passes: CopyPass[] = []
  let pending = Math.max(0, x.residentBytes)
  let precopyMs = 0
  let sent = 0
  for (;;) {
    const ms = sendMs(pending, x.bandwidthBytesPerS)
    passes.push({ bytes: pending, ms })
    precopyMs += ms
    sent += pending
    pending = dirtiedDuring(ms, x.dirtyRateBytesPerS, x.residentBytes)
    if (canStop(pending, x.linkBytesPerS, x.downtimeLimitMs)) {
      const downtimeMs = sendMs(pending, x.linkBytesPerS)
      return { passes, converged: true, precopyMs, downtimeMs, totalMs: precopyMs + downtimeMs, transferredBytes: sent + pending }
    }
    if (passes.length >= maxPasses) return { passes, converged: false, precopyMs, downtimeMs: null, totalMs: null, transferredBytes: sent }
  }
}
