/**
 * Waiting and polling for tests and benchmarks: one definition, used everywhere.
 *
 * `until` throws when the condition does not hold in time (the message names what was awaited and,
 * when given, a detail such as the agents' log tails); `poll` returns null instead, for tests that
 * assert on the outcome themselves. Both return the elapsed milliseconds.
 */

export const sleep = async (ms: number): Promise<void> => { await new Promise(resolve => setTimeout(resolve, ms)) }

export interface UntilOptions {
  /** Pause between two checks, ms (default 100). */
  pollMs?: number
  /** Appended to the timeout's message (e.g. a dump of the logs). */
  detail?: () => string | Promise<string>
}

/** Polls `pred` until it holds; resolves with the elapsed ms, rejects after `timeoutMs`. */
export async function until (what: string, pred: () => boolean | Promise<boolean>, timeoutMs: number, opts: UntilOptions = {}): Promise<number> {
  const ms = await poll(pred, timeoutMs, opts.pollMs)
  if (ms !== null) return ms
  const detail = opts.detail !== undefined ? `\n${await opts.detail()}` : ''
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${detail}`)
}

/** Polls `pred` until it holds; resolves with the elapsed ms, or null when `timeoutMs` passed first. */
export async function poll (pred: () => boolean | Promise<boolean>, timeoutMs: number, pollMs = 100): Promise<number | null> {
  const t0 = Date.now()
  for (;;) {
    if (await pred()) return Date.now() - t0
    if (Date.now() - t0 >= timeoutMs) return null
    await sleep(pollMs)
  }
}
