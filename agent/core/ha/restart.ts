/**
 * Leaderless restart: who restarts each VM of a dead host, and why two hosts never both do.
 *
 * Ownership of a protected VM is a claim (epoch, host) granted by a majority of the configured
 * members, as VIP ownership is (vip-ownership.ts). Claims are totally ordered by (epoch, host).
 * Each member, as an acceptor, keeps the standing claim of each VM and grants a new claim only
 * when it is higher than the standing one and the VM is free in its eyes (the grant rule, the
 * order of claims, retry and back-off are the shared claim module's, ../claims/):
 *   - the standing claim was released (its owner stopped the VM and said so), or
 *   - it is the claimant's own (a paused VM resumed by its owner), or
 *   - its owner may be taken over: the acceptor's view holds it dead or left, has heard nothing
 *     from it for fenceDelayTicks, it was armed at the current mode version (it fences), and it
 *     is not in maintenance.
 * Majorities intersect, so two claims for one VM can only both be granted if some acceptor
 * granted the lower one and later found it free: released, or its owner silent past the fence
 * delay, which (index.ts) means the owner's copy has stopped. Grants are persisted before sent.
 *
 * Who claims: every quorate host runs `assignRestarts` over the same kind of inputs (the standing
 * claims, the configured VMs and members, the rules, its membership view) and claims only the
 * VMs assigned to itself. Views may differ for a while; then two hosts may claim one VM, the
 * majority grants at most one, the other abandons, releases and backs off with seeded jitter.
 * The assignment is the greedy policy the migration placement uses (policies/placement.ts):
 * VMs by priority (high first), then order (low first), then id; each goes to the best
 * feasible host by rankTargets ('balance', which spreads restarts over hosts), counting
 * the VMs already assigned in this round, hard rules and capacity. The claimant then checks
 * its own authoritative capacity (running plus VMs being claimed or started) before claiming.
 */
import { rankTargets } from '../../../policies/placement.js'
import { claimOrder } from '../claims/index.js'
import type { Placement } from '../../../policies/rules.js'
import type { HostView, RuleSet, VmView } from '../../../policies/types.js'
import type { HostId, VmId } from '../types.js'
import type { HaVmSpec } from './ha-config.js'

/** A claim on a VM: totally ordered by (epoch, host). attempts = failed starts so far. */
export interface HaClaim { epoch: number, host: HostId, attempts: number }

/** HA claims ordered by epoch, then host id (../claims/order.ts); attempts are not part of a claim's name. */
export const haClaimOrder = claimOrder<HaClaim>(c => c.epoch)
/** -1 when a < b, 0 for the same claim, 1 when a > b. */
export const compareHaClaims = haClaimOrder.compare
/** `a` is the claim `b`; false when `b` is null (no claim). */
export const sameHaClaim = haClaimOrder.same

export function haClaimText (c: HaClaim | null): string { return c === null ? 'none' : `${c.epoch}@${c.host.slice(0, 8)}` }

/** A candidate restart target, as this host sees it. */
export interface RestartHost {
  id: HostId
  cpuMips: number
  coreMips: number
  memMiB: number
  /** Memory it admits beyond memMiB (reclaimable under the overcommit ratio, HostView.memOverMiB). @default 0 */
  memOverMiB?: number
  /** CPU and memory of the protected VMs it owns (standing claims) and anything else it reports. */
  usedMips: number
  usedMemMiB: number
}

export interface AssignInput {
  /** VMs to place: free and not failed. Any order (sorted here). */
  orphans: readonly HaVmSpec[]
  /** Eligible targets: present, not in maintenance, not tie-breakers, armed. */
  hosts: readonly RestartHost[]
  rules: RuleSet
  /** Where every other protected VM is (standing owners), for the rules. */
  placement: ReadonlyMap<VmId, HostId>
}

/** Restart order: priority high first, then order low first, then id. */
export function restartOrder (a: HaVmSpec, b: HaVmSpec): number {
  const p = (b.priority ?? 0) - (a.priority ?? 0)
  if (p !== 0) return p
  const o = (a.order ?? 0) - (b.order ?? 0)
  if (o !== 0) return o
  return a.id < b.id ? -1 : a.id > b.id ? 1 : 0
}

/**
 * Pure and deterministic: the same inputs give the same assignment on every host. A VM that fits
 * nowhere maps to null (it waits: capacity may come back).
 */
export function assignRestarts (input: AssignInput): Map<VmId, HostId | null> {
  const out = new Map<VmId, HostId | null>()
  const hosts = [...input.hosts].sort((a, b) => a.id < b.id ? -1 : a.id > b.id ? 1 : 0)
  const used = new Map(hosts.map(h => [h.id, { cpu: h.usedMips, mem: h.usedMemMiB }]))
  const placement = new Map(input.placement)
  for (const vm of [...input.orphans].sort(restartOrder)) {
    const views: HostView[] = hosts.map(h => ({
      id: h.id,
      cpuMips: h.cpuMips,
      coreMips: h.coreMips,
      memMiB: h.memMiB,
      ...(h.memOverMiB !== undefined && h.memOverMiB > 0 ? { memOverMiB: h.memOverMiB } : {}),
      netMbps: 10_000,
      powerCurveW: [],
      vms: [],
      reservedMips: used.get(h.id)!.cpu,
      reservedMemMiB: used.get(h.id)!.mem,
      history: [],
      active: true
    }))
    // The last host is a fine target when it is eligible (it fenced and came back); excluding
    // it would make hosts whose records differ on it disagree on the whole assignment.
    const view: VmView = { id: vm.id, host: '', cpuMips: vm.cpuMips, cpuDemandMips: vm.cpuMips, memMiB: vm.memMiB, history: [], migrating: false }
    const ranked = rankTargets(views, view, input.rules, placement as Placement, { kind: 'balance' })
    const best = ranked[0]?.host.id ?? null
    out.set(vm.id, best)
    if (best !== null) {
      const u = used.get(best)!
      u.cpu += vm.cpuMips
      u.mem += vm.memMiB
      placement.set(vm.id, best)
    }
  }
  return out
}
