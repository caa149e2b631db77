/**
 * Whole evacuations: a host that empties itself (a consolidation, plan reason 'underload') either
 * moves every VM it planned to move or none. A consolidation left half done keeps the host on
 * (no energy saved) and has spent migrations for nothing; with moves reserved one by one, 40 % of
 * the consolidations of the PlanetLab day 20110303 ended that way in the trace simulator.
 *
 * The group's reservations are judged together: the copies start only once every target has
 * granted (and, in the agents, prepared its incoming VM); any refusal (or a member that fails or
 * times out before its copy) withdraws the whole group, and the reservations the other targets
 * granted are released. The source tries again at a later decision.
 *
 * The agents' migration machine (migration-machine.ts) and the trace simulator's decentralised
 * mode (agent/sim/trace/decentral.ts) both judge with these two functions.
 */

/** How one member of a group stands: no answer yet, granted (and ready), or refused (or failed). */
export type EvacuationAnswer = 'pending' | 'granted' | 'refused'

export type EvacuationVerdict =
  /** Every target granted: the copies start. */
  | { kind: 'start' }
  /** Some answers are still awaited. */
  | { kind: 'wait' }
  /** A target refused: every reservation of the group is released, no copy starts. */
  | { kind: 'withdraw', refused: number }

/** Is this plan reserved as a whole? A consolidation of more than one move. */
export function reservedWhole (moves: ReadonlyArray<{ reason: string }>): boolean {
  return moves.length > 1 && moves.every(m => m.reason === 'underload')
}

/** The group's verdict from its members' answers. */
export function judgeEvacuation (answers: readonly EvacuationAnswer[]): EvacuationVerdict {
  let refused = 0
  let pending = 0
  for (const a of answers) {
    if (a === 'refused') refused++
    else if (a === 'pending') pending++
  }
  if (refused > 0) return { kind: 'withdraw', refused }
  if (pending > 0) return { kind: 'wait' }
  return { kind: 'start' }
}
