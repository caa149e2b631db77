/**
 * Follows the serial console log of the test guest (test/guest/dirtier.c) and stamps every
 * complete line with the host's monotonic clock (performance.now()) at the moment it is read.
 *
 * The guest prints a heartbeat line ("hb <seq> <guest seconds> <pages written>") every 10 ms,
 * "integrity ok ..." after each full verification pass of its working set, "INTEGRITY FAIL ..."
 * on a corrupted page, and "dirtier start ..." when it boots. With its disk checker on it also prints
 * "disk ok pass=<n> blocks=<N> writes=<w> lat_avg_us=<a> lat_max_us=<m>" after each verification
 * pass of its disk region, "DISK FAIL ..." on a block that does not hold what it last wrote, and
 * "disk error ..." when the disk cannot be used. The file is read every `pollMs`
 * (default 2 ms), so the host timestamps carry about that much jitter plus the read itself.
 */
import fs from 'node:fs'
import { sleep } from '../../test/lib/wait.js'

export interface StampedLine { text: string, atMs: number }

export interface Beat {
  seq: number
  /** The guest's monotonic clock, seconds. */
  guestS: number
  /** Pages the guest has rewritten since it started. */
  pagesWritten: number
  /** Host time the line was read, ms (performance.now()). */
  atMs: number
}

/** One verification pass of the guest's disk region. */
export interface DiskPass {
  pass: number
  /** Blocks the guest has written since it started. */
  writes: number
  /** Mean and largest latency of the guest's disk writes during the pass, µs. */
  latAvgUs: number
  latMaxUs: number
  atMs: number
}

const HB_RE = /^hb (\d+) (\d+\.\d+) (\d+)$/
const DISK_OK_RE = /^disk ok pass=(\d+) blocks=\d+ writes=(\d+) lat_avg_us=(\d+) lat_max_us=(\d+)$/
/** Lines that mean the guest kernel or program broke. */
const BROKEN_RE = /Kernel panic|Oops|BUG:|general protection|Fatal exception|segfault|INTEGRITY FAIL|DISK FAIL|disk error/

export class SerialMonitor {
  readonly lines: StampedLine[] = []
  readonly beats: Beat[] = []
  /** Host times of "integrity ok" lines. */
  readonly integrityOkAt: number[] = []
  /** Lines reporting corruption, a panic or a crash. */
  readonly broken: string[] = []
  /** Verification passes of the guest's disk region. */
  readonly diskPasses: DiskPass[] = []
  /** "dirtier start" lines (one per boot). */
  starts = 0
  ready = false
  private fd: number | null = null
  private offset = 0
  private rest = ''
  private readonly chunk = Buffer.alloc(64 * 1024)
  private readonly timer: NodeJS.Timeout

  constructor (readonly file: string, pollMs = 2) {
    this.timer = setInterval(() => { this.read() }, pollMs)
  }

  /** Reads whatever the guest wrote since the last call. */
  read (): void {
    if (this.fd === null) {
      try { this.fd = fs.openSync(this.file, 'r') } catch { return }
    }
    let n: number
    while ((n = fs.readSync(this.fd, this.chunk, 0, this.chunk.length, this.offset)) > 0) {
      this.offset += n
      const at = performance.now()
      const text = this.rest + this.chunk.toString('latin1', 0, n)
      const parts = text.split('\n')
      this.rest = parts.pop() ?? ''
      for (const p of parts) this.line(p.endsWith('\r') ? p.slice(0, -1) : p, at)
    }
  }

  private line (text: string, atMs: number): void {
    this.lines.push({ text, atMs })
    const hb = HB_RE.exec(text)
    if (hb !== null) {
      this.beats.push({ seq: Number(hb[1]), guestS: Number(hb[2]), pagesWritten: Number(hb[3]), atMs })
      return
    }
    const dk = DISK_OK_RE.exec(text)
    if (dk !== null) this.diskPasses.push({ pass: Number(dk[1]), writes: Number(dk[2]), latAvgUs: Number(dk[3]), latMaxUs: Number(dk[4]), atMs })
    if (text.startsWith('integrity ok')) this.integrityOkAt.push(atMs)
    else if (text.startsWith('dirtier start')) this.starts++
    else if (text === 'dirtier ready') this.ready = true
    if (BROKEN_RE.test(text)) this.broken.push(text)
  }

  lastBeat (): Beat | undefined { return this.beats[this.beats.length - 1] }

  /** Beats read at or after host time `fromMs`. */
  beatsSince (fromMs: number): Beat[] { return this.beats.filter(b => b.atMs >= fromMs) }

  /** The largest interval between consecutive beats read in [fromMs, toMs], ms (0 with < 2). */
  maxGapMs (fromMs: number, toMs = Infinity): number {
    let prev: number | null = null
    let max = 0
    for (const b of this.beats) {
      if (b.atMs < fromMs || b.atMs > toMs) continue
      if (prev !== null) max = Math.max(max, b.atMs - prev)
      prev = b.atMs
    }
    return max
  }

  /** The last non-heartbeat lines, for error messages. */
  tail (n = 8): string {
    return this.lines.filter(l => !l.text.startsWith('hb ')).slice(-n).map(l => l.text).join(' | ')
  }

  /** Waits until `pred` holds; rejects after `timeoutMs` with the console's last lines. */
  async until (what: string, pred: () => boolean, timeoutMs: number): Promise<void> {
    const end = performance.now() + timeoutMs
    for (;;) {
      this.read()
      if (pred()) return
      if (this.broken.length > 0) throw new Error(`guest broke while waiting for ${what}: ${this.broken.slice(0, 3).join(' | ')}`)
      if (performance.now() > end) throw new Error(`no ${what} within ${timeoutMs} ms (console: ${this.tail()})`)
      await sleep(10)
    }
  }

  close (): void {
    clearInterval(this.timer)
    if (this.fd !== null) { try { fs.closeSync(this.fd) } catch {} }
    this.fd = null
  }
}

/**
 * Dirty rate the guest reports over the beats read in the last `windowMs`: pages rewritten per
 * guest second × page size, bytes/s. NaN with fewer than two beats in the window.
 */
export function guestDirtyRate (beats: readonly Beat[], windowMs: number, pageBytes = 4096): number {
  const last = beats[beats.length - 1]
  if (last === undefined) return NaN
  const first = beats.find(b => b.atMs >= last.atMs - windowMs)
  if (first === undefined || first === last || last.guestS <= first.guestS) return NaN
  return ((last.pagesWritten - first.pagesWritten) * pageBytes) / (last.guestS - first.guestS)
}
