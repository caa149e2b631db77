/**
 * Planning a disk copy (a migration with storage). Pure functions: no IO, no clock.
 *
 * A background mirror copies dirty regions after the guest wrote them; it converges only while it
 * copies faster than the guest dirties. It dirties at the mirror's granularity (the image's
 * cluster, 64 KiB for qcow2 by default), so small random writes dirty far more than they write:
 * 1 MiB/s of 4 KiB writes can dirty 16 MiB/s of mirror regions. When that dirty rate outruns
 * `backgroundShare` of the link, the copy is planned in write-blocking mode: each guest write
 * completes only once also written to the target, so the copy always converges, at the cost of
 * the guest's write latency (a round trip to the target per write).
 */
import type { DiskCopyModeName } from './migration-state.js'

export interface DiskCopyInput {
  /** The guest's disk writes, bytes/s, and the size of one write, bytes (measured). */
  writeBytesPerS: number
  writeSizeBytes: number
  /** Mirror granularity (the image's cluster size), bytes. */
  granularityBytes: number
  /** Usable link bandwidth, bytes/s. */
  bandwidthBytesPerS: number
  /** Disk virtual size, bytes, and the part allocated (what a first pass copies). */
  sizeBytes: number
  allocatedBytes: number
}

export interface DiskCopyPlan {
  copyMode: DiskCopyModeName
  /** The rate at which the guest dirties mirror regions, bytes/s. */
  dirtyBytesPerS: number
  /** Predicted time of the first pass, ms. */
  firstPassMs: number
  reason: string
}

/** Share of the link a background mirror may lose to new dirty regions and still converge well. */
export const BACKGROUND_SHARE = 0.5

export function planDiskCopy (i: DiskCopyInput): DiskCopyPlan {
  const writes = i.writeSizeBytes > 0 ? i.writeBytesPerS / i.writeSizeBytes : 0
  const perWrite = Math.max(i.writeSizeBytes, i.granularityBytes)
  const dirty = writes * perWrite
  const bw = Math.max(1, i.bandwidthBytesPerS)
  const firstPassMs = i.allocatedBytes / bw * 1000
  const pass = i.allocatedBytes > 0 ? `; first pass about ${(firstPassMs / 1000).toFixed(1)} s for ${mibs(i.allocatedBytes)} MiB` : ''
  if (dirty > BACKGROUND_SHARE * bw) {
    return { copyMode: 'write-blocking', dirtyBytesPerS: dirty, firstPassMs, reason: `the guest dirties ${mibs(dirty)} MiB/s of mirror regions, above ${BACKGROUND_SHARE} x the link (${mibs(bw)} MiB/s): write-blocking${pass}` }
  }
  return { copyMode: 'background', dirtyBytesPerS: dirty, firstPassMs, reason: `the guest dirties ${mibs(dirty)} MiB/s of mirror regions, within ${BACKGROUND_SHARE} x the link (${mibs(bw)} MiB/s): background${pass}` }
}

function mibs (b: number): string { return (b / 1048576).toFixed(1) }
