/**
 * An emulated watchdog device for the demo's hosts and the tests (all hosts on one machine): a
 * FIFO each agent opens as its `ha.watchdog.device`, read by the demo's or test's process with the kernel's watchdog
 * semantics (Documentation/watchdog/watchdog-api.rst). The first write arms it; each write
 * restarts the timer; a close right after the magic 'V' disarms it; any other close (a crash,
 * kill -9) leaves it running, and when the timer runs out `reset` is called: the demo's model of
 * the host being reset. A real /dev/watchdog or softdog here would reset the machine itself.
 *
 * The FIFO is read without blocking and stays open for the demo's whole run, so that an agent's
 * non-blocking open for writing succeeds, and a restarted agent simply writes again.
 */
import { execFileSync } from 'node:child_process'
import { closeSync, constants, openSync, readSync, rmSync } from 'node:fs'

const MAGIC_CLOSE = 0x56 // 'V'

export class FifoWatchdog {
  /** Times the timer ran out. */
  resets = 0
  /** Writes seen. */
  pets = 0
  private fd: number | null = null
  private armed = false
  private lastWriteAt = 0
  private lastByte = -1
  private timer: NodeJS.Timeout | null = null
  private readonly buf = Buffer.alloc(512)

  constructor (readonly path: string, readonly timeoutMs: number, private readonly reset: () => void) {}

  /** Creates the FIFO (replacing any file there) and starts reading it. */
  start (): void {
    rmSync(this.path, { force: true })
    execFileSync('mkfifo', ['-m', '0600', this.path])
    this.fd = openSync(this.path, constants.O_RDONLY | constants.O_NONBLOCK)
    this.timer = setInterval(() => { this.poll() }, 25)
    this.timer.unref()
  }

  get isArmed (): boolean { return this.armed }

  private poll (): void {
    if (this.fd === null) return
    for (;;) {
      let n: number
      try {
        n = readSync(this.fd, this.buf, 0, this.buf.length, null)
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'EAGAIN') break
        throw err
      }
      if (n === 0) {
        // End of file: the writer closed. Only a magic close disarms.
        if (this.armed && this.lastByte === MAGIC_CLOSE) this.armed = false
        this.lastByte = -1
        break
      }
      this.pets++
      this.armed = true
      this.lastWriteAt = Date.now()
      this.lastByte = this.buf[n - 1] ?? -1
    }
    if (this.armed && Date.now() - this.lastWriteAt > this.timeoutMs) {
      this.armed = false
      this.resets++
      this.reset()
    }
  }

  stop (): void {
    if (this.timer !== null) clearInterval(this.timer)
    this.timer = null
    if (this.fd !== null) closeSync(this.fd)
    this.fd = null
    rmSync(this.path, { force: true })
  }
}
