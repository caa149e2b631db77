/**
 * Components with a start and a stop, started in order and stopped in the reverse order: the
 * agent's composition root (agent/main.ts) is a list of them.
 *
 * `add` starts a component at once and records it, so that a component may be built from the ones
 * started before it (the core from the restored store, the API from the core). When a start fails
 * half-way, `stopAll` stops what had started, newest first, and the caller rethrows: no listener,
 * lock or timer outlives a failed start-up. A stop that fails is reported and the others still run.
 */

export interface Component {
  /** Named in the log when its start or stop fails. */
  readonly name: string
  start?: () => void | Promise<void>
  stop?: () => void | Promise<void>
}

export interface StopFailure { name: string, err: unknown }

export class Lifecycle {
  private readonly started: Component[] = []
  private stopping: Promise<StopFailure[]> | null = null

  constructor (private readonly onStopFailure: (f: StopFailure) => void = () => {}) {}

  /** Starts `c` now; it is stopped by stopAll (unless its start threw: then it holds nothing). */
  async add (c: Component): Promise<void> {
    if (this.stopping !== null) throw new Error(`cannot start ${c.name}: the agent is stopping`)
    await c.start?.()
    this.started.push(c)
  }

  /** Names of the started components, in start order. */
  names (): string[] { return this.started.map(c => c.name) }

  /**
   * Stops every started component, newest first; resolves with the stops that failed (each also
   * reported through onStopFailure). Idempotent: a second call waits for the first.
   */
  async stopAll (): Promise<StopFailure[]> {
    if (this.stopping === null) this.stopping = this.stopInReverse()
    return await this.stopping
  }

  private async stopInReverse (): Promise<StopFailure[]> {
    const failures: StopFailure[] = []
    for (const c of [...this.started].reverse()) {
      try {
        await c.stop?.()
      } catch (err) {
        const f = { name: c.name, err }
        failures.push(f)
        this.onStopFailure(f)
      }
    }
    this.started.length = 0
    return failures
  }
}

/**
 * Runs `build` with a fresh Lifecycle. When build throws, the components it had started are
 * stopped (newest first) and the error is rethrown.
 */
export async function startOrUnwind<T> (life: Lifecycle, build: (life: Lifecycle) => Promise<T>): Promise<T> {
  try {
    return await build(life)
  } catch (err) {
    await life.stopAll()
    throw err
  }
}
