/** Programmer-error assertions: a broken invariant crashes the agent on purpose (systemd restarts it). */
export class AssertionError extends Error {
  readonly code = 'ASSERTION_FAILED'
  constructor (message: string) { super(message); this.name = 'AssertionError' }
}

export function assert (cond: unknown, message: string): asserts cond {
  if (!cond) throw new AssertionError(message)
}
