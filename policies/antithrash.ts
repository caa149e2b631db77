/**
 * Anti-thrash guards (design promise L2: a VM is not moved back and forth; every move must pay
 * for itself). Pure checks counted in policy decisions, one every `intervalSec` (300 s by default),
 * not in the core's 100 ms ticks (hence the names):
 *
 * - holdDecisions: a host condition (overload or underload) must have held this many consecutive
 *   decisions before it triggers a move (hysteresis against spikes).
 * - cooldownDecisions: a VM that moved is not moved again for this many decisions.
 * - minGain: a move must improve the objective by at least this much (utilisation points for
 *   balance, watts for consolidation, overload excess for relief).
 */

export interface GuardParams {
  /** Consecutive decisions a condition must hold before acting. @default 1 */
  holdDecisions: number
  /** Decisions after a VM's last move during which it is not moved again. @default 0 */
  cooldownDecisions: number
  /** Smallest gain a move must bring (same unit as the caller's objective). @default 0 */
  minGain: number
}

export const NO_GUARDS: GuardParams = Object.freeze({ holdDecisions: 1, cooldownDecisions: 0, minGain: 0 })

/** Has the condition held long enough? `streak` counts consecutive ticks it has been true. */
export function conditionHeld (streak: number, g: GuardParams): boolean {
  return streak >= Math.max(1, g.holdDecisions)
}

/** May a VM that last moved at `lastMovedTick` (undefined = never) move at `tick`? */
export function vmCooledDown (lastMovedTick: number | undefined, tick: number, g: GuardParams): boolean {
  return lastMovedTick === undefined || tick - lastMovedTick >= g.cooldownDecisions
}

/** Does a move bring enough? */
export function gainEnough (gain: number, g: GuardParams): boolean {
  return gain >= g.minGain
}

/** Update a streak counter with this tick's observation. */
export function nextStreak (streak: number, holds: boolean): number {
  return holds ? streak + 1 : 0
}
