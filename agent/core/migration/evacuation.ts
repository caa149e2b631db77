/**
 * Whole evacuations: a host that empties itself (a consolidation, plan reason 'underload') either
 * moves every VM it planned to move or none. A consolidation left half done keeps the host on
 * (no energy saved) and has spent migrations for nothing; with moves reserved one by one, 40 % of
 * the consolidations of the PlanetLab day 20110303 ended that way in the trace simulator.
 *
 * The group's reservations are judged together: the copies start only once every target has
 * granted (and, in the agents, prepared its incoming VM); any refusal (or a member that fails or
 * times out before the copies start) withdraws the whole group, and the reservations the other
 * targets granted are released. The source tries again at a later decision.
 *
 * Staged copies. The whole group is reserved at once, but its copies run at most the source's
 * free outgoing slots at a time (migration.outMax counts copies, not reservations): the first
 * ones start when the last target has granted, each later one when a copy ends and frees a slot,
 * in the order of the plan. A host with more VMs than slots is emptied as one group. The
 * reservations that wait for a slot stay granted (the agents renew their leases); a failure part
 * way, once copies began (a copy that fails, a waiting grant lost), withdraws what still waits,
 * while what was copied stays where it went and what copies runs on: every VM ends on exactly one
 * host, and the host is left with fewer VMs than before (a later decision may consolidate it again).
 *
 * The agents' migration machine (migration-machine.ts) and the trace simulator's decentralised
 * mode (agent/sim/trace/decentral.ts) both judge their groups with judgeEvacuation.
 */

/**
 * How one member of a group stands: no answer yet; granted (and ready) with its copy waiting;
 * refused (or failed, or timed out) before its copy; its copy under way; its copy done (the VM
 * runs on the target); its copy failed (the VM stayed on the source).
 */
export type EvacuationAnswer = 'pending' | 'granted' | 'refused' | 'copying' | 'done' | 'failed'

export type EvacuationVerdict =
  /**
   * No member is refused and none is pending: start the copies of these members now (indexes
   * into the answers, in order; empty while every slot is taken). `first`: no copy had begun.
   */
  | { kind: 'copy', start: number[], first: boolean }
  /** Some answers are still awaited (no copy has begun). */
  | { kind: 'wait' }
  /**
   * A member was refused or failed: withdraw these members (the pending and waiting ones: their
   * reservations are released). `started`: copies had begun (what they copied stays moved).
   */
  | { kind: 'withdraw', refused: number, withdraw: number[], started: boolean }
  /** Every member has its outcome: nothing left to start or withdraw. */
  | { kind: 'done' }

/** Is this plan reserved as a whole? A consolidation of more than one move. */
export function reservedWhole (moves: ReadonlyArray<{ reason: string }>): boolean {
  return moves.length > 1 && moves.every(m => m.reason === 'underload')
}

/**
 * The group's verdict from its members' answers and the copies the source may start now
 * (`freeSlots`: its outgoing slots not taken by copies under way, its own or others').
 */
export function judgeEvacuation (answers: readonly EvacuationAnswer[], freeSlots = Infinity): EvacuationVerdict {
  let bad = 0
  let pending = 0
  let started = false
  const waiting: number[] = []
  answers.forEach((a, i) => {
    if (a === 'refused' || a === 'failed') bad++
    else if (a === 'pending') pending++
    else if (a === 'granted') waiting.push(i)
    if (a === 'copying' || a === 'done' || a === 'failed') started = true
  })
  if (bad > 0) {
    const withdraw = answers.flatMap((a, i) => a === 'pending' || a === 'granted' ? [i] : [])
    if (withdraw.length === 0 && started) return { kind: 'done' }
    return { kind: 'withdraw', refused: bad, withdraw, started }
  }
  if (pending > 0) return { kind: 'wait' }
  if (waiting.length === 0) return { kind: 'done' }
  return { kind: 'copy', start: waiting.slice(0, Math.max(0, freeSlots)), first: !started }
}
