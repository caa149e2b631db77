/**
 * A watchdog device for tests: a FIFO the agent opens as its `ha.watchdog.device`, read here with
 * the kernel's watchdog semantics (Documentation/watchdog/watchdog-api.rst): the first write arms
 * it, every write restarts the timer, a close right after a magic 'V' disarms it, any other close
 * (a crash, kill -9) leaves it running. When the timer runs out, `reset` is called: the test's
 * model of a host reset (kill the host's agent and its QEMU). A real softdog here would reset the
 * machine that runs the tests.
 *
 * Read without blocking (O_NONBLOCK, polled): a read returns data, EAGAIN while a writer holds
 * the FIFO open with nothing new, or 0 (end of file) while no writer has it open. The reader
 * stays open for the whole test, so an agent's non-blocking open for writing always succeeds, and
 * a restarted agent simply starts writing again.
 */
import { execFileSync } from 'node:child_process'
import { closeSync, constants, openSync, readSync, rmSync } from 'node:fs'

export class WatchdogEmulator {
  /** Times the timer ran out (the host was "reset"). */
  resets = 0
  /** Writes seen. */
  pets = 0
  private fd: number | null = null
  private armed = false
  private lastPet = 0
  private lastByte = -1
  private poll: NodeJS.Timeout | null = null
  private readonly buf = Buffer.alloc(256)

  constructor (readonly path: string, readonly timeoutMs: number, private readonly reset: () => void) {}

  start (): void {
    rmSync(this.path, { force: true })
    execFileSync('mkfifo', ['-m', '0600', this.path])
    this.fd = openSync(this.path, constants.O_RDONLY | constants.O_NONBLOCK)
    this.poll = setInterval(() => { this.check() }, 20)
  }

  /** Armed: written to, and not closed with the magic character since. */
  get isArmed (): boolean { return this.armed }

  private check (): void {
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
        // No writer: a close. Magic close disarms; any other close leaves the timer running.
        if (this.armed && this.lastByte === 0x56) this.armed = false
        this.lastByte = -1
        break
      }
      this.pets++
      this.armed = true
      this.lastPet = Date.now()
      this.lastByte = this.buf[n - 1] ?? -1
    }
    if (this.armed && Date.now() - this.lastPet > this.timeoutMs) {
      this.armed = false
      this.resets++
      this.reset()
    }
  }

  stop (): void {
    if (this.poll !== null) clearInterval(this.poll)
    this.poll = null
    if (this.fd !== null) closeSync(this.fd)
    this.fd = null
    rmSync(this.path, { force: true })
  }
}
