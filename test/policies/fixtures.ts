// Small views for the policy tests: two-core G5 hosts (5320 MIPS, 8 GiB), 2500-MIPS VMs, and the
// thresholds the table tests are written against.
import { validatePolicyConfig } from '../../policies/config.js'
import type { PolicyConfig } from '../../policies/plan.js'
import type { HostView, VmView } from '../../policies/types.js'

export const G5 = [93.7, 97, 101, 105, 110, 116, 121, 125, 129, 133, 135]

export function vm (id: string, host: string, demand: number, mem = 1000): VmView {
  return { id, host, cpuMips: 2500, cpuDemandMips: demand, memMiB: mem, history: [], migrating: false }
}
export function host (id: string, vms: VmView[], o: Partial<HostView> = {}): HostView {
  return { id, cpuMips: 5320, coreMips: 2660, memMiB: 8192, netMbps: 1000, powerCurveW: G5, vms, reservedMips: 0, reservedMemMiB: 0, history: [], active: vms.length > 0, ...o }
}
export function cfg (o: Partial<PolicyConfig> = {}): PolicyConfig {
  return validatePolicyConfig({
    overload: { kind: 'thr', threshold: 0.8 },
    underload: { kind: 'threshold', threshold: 0.2 },
    selection: { kind: 'mmt' },
    placement: { kind: 'pabfd', countWake: true, cpuCapFraction: 0.85 },
    guards: { holdDecisions: 2, cooldownDecisions: 3, minGain: 0 },
    intervalSec: 300,
    maxMovesPerDecision: 4,
    ...o
  })
}
