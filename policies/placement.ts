/**
 * Target ranking: where should a VM go. Every ranking first filters by hard constraints
 * (capacity of CPU and memory including reservations, the single-core limit, hard rules,
 * not the source, not overloaded after the move unless the caller allows empty hosts), then
 * orders the feasible hosts:
 *
 * - pabfd: power-aware best fit decreasing (Beloglazov): least power increase. With
 *   `countWake` an asleep host also pays its idle power (CloudSim does not; it is blind to it).
 * - leastLoaded: lowest utilisation after the move.
 * - balance: largest reduction of the spread of utilisation (sum of squares), as VMware DRS
 *   and Proxmox CRS aim for an even cluster.
 *
 * Soft rules add a penalty that dominates the score, so they break ties the right way and are
 * broken only when every alternative is worse on hard grounds.
 */
import { hardAllows, softPenalty, type Placement } from './rules.js'
import { hostDemandMips, hostMemAdmitMiB, hostMemUsedMiB, type HostView, type RuleSet, type VmView } from './types.js'
import { detectOverload, type OverloadParams } from './overload.js'

export type PlacementKind = 'pabfd' | 'leastLoaded' | 'balance'

export interface PlacementParams {
  kind: PlacementKind
  /** Highest CPU fill a target may reach, fraction of cpuMips. @default 1 */
  cpuCapFraction?: number
  /** pabfd: charge idle power when waking an inactive host. @default true */
  countWake?: boolean
  /** Skip targets that the detector would call overloaded after the move. @default null */
  overload?: OverloadParams | null
  /** Allow inactive (asleep) hosts as targets. @default true */
  allowInactive?: boolean
}

/** Power at utilisation u from an 11-point curve (linear between the 10 % points), W. */
export function powerAt (curve: readonly number[], u: number): number {
  if (curve.length < 2) return 0
  const x = Math.max(0, Math.min(1, u)) * (curve.length - 1)
  const i = Math.min(curve.length - 2, Math.floor(x))
  const a = curve[i] as number; const b = curve[i + 1] as number
  return a + (b - a) * (x - i)
}

/**
 * The power curve assumed for a host that declares none (11 points, W at 0 %, 10 %, ..., 100 %
 * CPU): linear from idle to peak, peak 60 W plus 10 W per core, idle 60 % of peak (the share
 * SPECpower results of two-socket servers typically show, e.g. the HP ProLiant curves of the
 * PlanetLab model: 86 of 117 W and 93.7 of 135 W). Only differences between hosts and between
 * states matter to the policies: with no curve at all every placement scores 0 W and no
 * consolidation ever saves the minimum gain, so hosts would never be emptied.
 */
export function defaultPowerCurveW (cpuCores: number): number[] {
  const peak = 60 + 10 * Math.max(1, cpuCores)
  const idle = 0.6 * peak
  return Array.from({ length: 11 }, (_, i) => Math.round((idle + (peak - idle) * i / 10) * 10) / 10)
}

/**
 * The VM asks for more than `host`'s cores can give it: its demand spreads over at most its vCPUs,
 * each on one core (a single-vCPU VM cannot ask for more than one core).
 */
export function exceedsCores (host: HostView, vm: Pick<VmView, 'cpuDemandMips' | 'vcpus'>, demandMips = vm.cpuDemandMips): boolean {
  return demandMips > host.coreMips * Math.max(1, vm.vcpus ?? 1) + 1e-9
}

/** True if `vm` fits on `host` by capacity alone (CPU incl. reservations, memory, core size). */
export function fits (host: HostView, vm: VmView, cpuCapFraction = 1): boolean {
  if (exceedsCores(host, vm)) return false
  if (hostDemandMips(host) + vm.cpuDemandMips > host.cpuMips * cpuCapFraction + 1e-9) return false
  if (hostMemUsedMiB(host) + vm.memMiB > hostMemAdmitMiB(host)) return false
  return true
}

export interface RankedTarget { host: HostView, score: number }

/**
 * Feasible targets for `vm`, best first. `placement` maps every VM (including planned moves)
 * to its host and is used for the rules. Ties keep the order of `hosts`.
 */
export function rankTargets (
  hosts: readonly HostView[], vm: VmView, rules: RuleSet, placement: Placement, p: PlacementParams
): RankedTarget[] {
  const cap = p.cpuCapFraction ?? 1
  const out: RankedTarget[] = []
  const utils = hosts.map(h => h.cpuMips > 0 ? hostDemandMips(h) / h.cpuMips : 0)
  for (let i = 0; i < hosts.length; i++) {
    const h = hosts[i] as HostView
    if (h.id === vm.host) continue
    if (!h.active && p.allowInactive === false) continue
    if (!fits(h, vm, cap)) continue
    if (!hardAllows(rules, placement, vm.id, h.id)) continue
    const u0 = utils[i] as number
    const du = vm.cpuDemandMips / h.cpuMips
    if (p.overload != null && h.vms.length > 0) {
      const hist = h.history.map(x => x + du)
      if (detectOverload({ util: u0 + du, history: hist, horizonSteps: 1 }, p.overload).overloaded) continue
    }
    let score: number
    switch (p.kind) {
      case 'pabfd': {
        const before = h.active ? powerAt(h.powerCurveW, u0) : (p.countWake === false ? powerAt(h.powerCurveW, 0) : (h.sleepW ?? 0))
        score = powerAt(h.powerCurveW, u0 + du) - before
        break
      }
      case 'leastLoaded': score = u0 + du; break
      case 'balance': {
        const src = hosts.find(x => x.id === vm.host)
        const us = src !== undefined && src.cpuMips > 0 ? hostDemandMips(src) / src.cpuMips : 0
        const dus = src !== undefined && src.cpuMips > 0 ? vm.cpuDemandMips / src.cpuMips : 0
        // new sum of squares minus old (negative = better balanced)
        score = ((us - dus) ** 2 + (u0 + du) ** 2) - (us ** 2 + u0 ** 2)
        break
      }
    }
    score += 1e6 * softPenalty(rules, placement, vm.id, h.id)
    out.push({ host: h, score })
  }
  // stable sort keeps the input order for equal scores
  return out.sort((a, b) => a.score - b.score)
}
