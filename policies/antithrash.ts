/**
 * Anti-thrash guards (design promise L2: a VM is not moved back and forth; every move must pay
 * for itself). Pure checks over ticks:
 *
 * - holdTicks: a host condition (overload or underload) must have held this many consecutive
 *   ticks before it triggers a move (hysteresis against spikes).
 * - cooldownTicks: a VM that moved is not moved again for this many ticks.
 * - minGain: a move must improve the objective by at least this much (utilisation points for
 *   balance, watts for consolidation, overload excess for relief).
 */

export interface GuardParams {
  /** Consecutive ticks a condition must hold before acting. @default 1 */
  holdTicks: number
  /** Ticks after a VM's last move during which it is not moved again. @default 0 */
  cooldownTicks: number
  /** Smallest gain a move must bring (same unit as the caller's objective). @default 0 */
  minGain: number
}

export const NO_GUARDS: GuardParams = Object.freeze({ holdTicks: 1, cooldownTicks: 0, minGain: 0 })

/** Has the condition held long enough? `streak` counts consecutive ticks it has been true. */
export function conditionHeld (streak: number, g: GuardParams): boolean {
  return streak >= Math.max(1, g.holdTicks)
}

/** May a VM that last moved at `lastMovedTick` (undefined = never) move at `tick`? */
export function vmCooledDown (lastMovedTick: number | undefined, tick: number, g: GuardParams): boolean {
  return lastMovedTick === undefined || tick - lastMovedTick >= g.cooldownTicks
}

/** Does a move bring enough? */
export function gainEnough (gain: number, g: GuardParams): boolean {
  return gain >= g.minGain
}

/** Update a streak counter with this tick's observation. */
export function nextStreak (streak: number, holds: boolean): number {
  return holds ? streak + 1 : 0
}
