/**
 * Underload detection for consolidation: a host whose load is low enough that its VMs should
 * move away so it can sleep.
 *
 * - threshold: utilisation (current, or forecast) below `threshold`.
 * - lowest: Beloglazov/CloudSim: the active host with the lowest non-zero utilisation among
 *   the candidates (repeatedly, excluding hosts already picked).
 */
import { forecast, type ForecastParams } from './forecast.js'
import { hostUtil, type HostView } from './types.js'

export type UnderloadParams =
  | { kind: 'none' }
  | {
    kind: 'threshold'
    threshold: number
    forecast?: ForecastParams
    /**
     * Of the underloaded hosts, only those whose evacuation cost (demand x memory squared, summed
     * over their VMs, policies/plan.ts) is at or below this quantile of the active hosts' in the host's view
     * empty themselves (0.5: the cheaper half). @default 1
     */
    quantile?: number
    /**
     * A host whose VMs (and reservations) fill more than this fraction of its memory does not
     * empty itself, however low its CPU: memory binds, and its VMs would need as much elsewhere.
     * @default 1 (no limit)
     */
    memFull?: number
  }
  | { kind: 'lowest' }

/** Is this host underloaded on its own terms (threshold detectors)? 'lowest' answers true for any active host. */
export function isUnderloaded (util: number, history: readonly number[], p: UnderloadParams): boolean {
  switch (p.kind) {
    case 'none': return false
    case 'lowest': return util > 0
    case 'threshold': {
      if (util <= 0) return false
      if (util >= p.threshold) return false
      if (p.forecast === undefined) return true
      return forecast(history, 1, p.forecast) < p.threshold
    }
  }
}

/** The active host with the lowest non-zero utilisation not in `excluded`, or null. Ties: first. */
export function lowestUtilHost (hosts: readonly HostView[], excluded: ReadonlySet<string>): HostView | null {
  let best: HostView | null = null
  let bestU = Infinity
  for (const h of hosts) {
    if (excluded.has(h.id) || h.vms.length === 0) continue
    const u = hostUtil(h)
    if (u > 0 && u < bestU) { bestU = u; best = h }
  }
  return best
}
