/**
 * Affinity and anti-affinity rules (VM-VM and VM-host, hard and soft).
 * A hard rule is a constraint: a placement that breaks it is never proposed. A soft rule adds a
 * penalty (its weight, default 1) to a candidate's score, so it is broken only when nothing
 * else fits. Rules are checked against a placement map (VM -> host) that includes the moves
 * already planned in the same round, so two planned moves cannot jointly break a hard rule.
 */
import type { HostId, RuleSet, VmId } from './types.js'

/** VM -> host, including planned moves. */
export type Placement = ReadonlyMap<VmId, HostId>

/** True if putting `vm` on `host` breaks no hard rule, given where the other VMs are. */
export function hardAllows (rules: RuleSet, placement: Placement, vm: VmId, host: HostId): boolean {
  return violations(rules, placement, vm, host, true) === 0
}

/** Sum of weights of the soft rules that putting `vm` on `host` breaks. */
export function softPenalty (rules: RuleSet, placement: Placement, vm: VmId, host: HostId): number {
  return violations(rules, placement, vm, host, false)
}

function violations (rules: RuleSet, placement: Placement, vm: VmId, host: HostId, hard: boolean): number {
  let n = 0
  for (const r of rules.vmHost) {
    if (r.hard !== hard || r.vm !== vm) continue
    const listed = r.hosts.includes(host)
    if ((r.kind === 'affinity' && !listed) || (r.kind === 'anti-affinity' && listed)) n += hard ? 1 : (r.weight ?? 1)
  }
  for (const r of rules.vmVm) {
    if (r.hard !== hard || !r.vms.includes(vm)) continue
    for (const other of r.vms) {
      if (other === vm) continue
      const where = placement.get(other)
      if (where === undefined) continue
      if (r.kind === 'anti-affinity' && where === host) n += hard ? 1 : (r.weight ?? 1)
      if (r.kind === 'affinity' && where !== host) n += hard ? 1 : (r.weight ?? 1)
    }
  }
  return n
}

/** Every hard rule that the whole placement breaks (for checkers and property tests). */
export function brokenHardRules (rules: RuleSet, placement: Placement): string[] {
  const out: string[] = []
  for (const r of rules.vmHost) {
    if (!r.hard) continue
    const h = placement.get(r.vm)
    if (h === undefined) continue
    const listed = r.hosts.includes(h)
    if (r.kind === 'affinity' && !listed) out.push(`${r.vm} must run on one of ${r.hosts.join(',')} but is on ${h}`)
    if (r.kind === 'anti-affinity' && listed) out.push(`${r.vm} must not run on ${h}`)
  }
  for (const r of rules.vmVm) {
    if (!r.hard) continue
    const hosts = r.vms.map(v => placement.get(v)).filter((h): h is HostId => h !== undefined)
    if (r.kind === 'anti-affinity' && new Set(hosts).size !== hosts.length) out.push(`anti-affinity ${r.vms.join(',')} shares a host`)
    if (r.kind === 'affinity' && new Set(hosts).size > 1) out.push(`affinity ${r.vms.join(',')} is split`)
  }
  return out
}

/** Validate a rule set; returns error messages (empty = valid). */
export function validateRules (rules: RuleSet): string[] {
  const errs: string[] = []
  for (const r of rules.vmVm) {
    if (r.vms.length < 2) errs.push(`VM-VM ${r.kind} rule needs at least 2 VMs (got ${r.vms.length})`)
    if (r.hard && r.kind === 'affinity' && r.vms.length > 1) {
      for (const a of rules.vmVm) {
        if (a.hard && a.kind === 'anti-affinity' && a.vms.filter(v => r.vms.includes(v)).length >= 2) {
          errs.push(`hard affinity ${r.vms.join(',')} contradicts hard anti-affinity ${a.vms.join(',')}`)
        }
      }
    }
  }
  for (const r of rules.vmHost) {
    if (r.hosts.length === 0) errs.push(`VM-host ${r.kind} rule for ${r.vm} lists no host`)
  }
  return errs
}
