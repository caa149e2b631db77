/**
 * Target-side admission (DESIGN S2, S3): the target decides against its own authoritative state,
 * never against a peer's view of it.
 *
 * - Capacity (S3): residents (from the latest host sample, VMs leaving included until they have
 *   left) plus every live reservation (incoming migrations not yet committed or aborted, their
 *   memory included while they copy) plus the candidate must fit in memory, and in CPU up to
 *   `cpuCapFraction` of the host (the policy's placement.cpuCapFraction: the headroom the planner
 *   keeps on targets, kept by the target too). A VM's demand must also fit the cores it has
 *   (`vcpus` x this host's core speed). A reservation counts from the moment it is granted,
 *   before any copy starts.
 * - A host emptying itself (consolidation moves out under way) admits nothing: it would have to
 *   send the newcomer on at once.
 *
 * The decentralised trace simulator admits with this same function, against its own
 * authoritative state of the target (agent/sim/trace/decentral.ts).
 * - Hard rules (S2): every hard VM-VM rule is a predicate over the VMs of one host, and each
 *   host is the only one that changes its own set of VMs (it admits incoming VMs and starts
 *   outgoing ones, one input at a time). A VM in flight counts on BOTH ends until the migration
 *   ends. So two concurrent placements onto the same target are serialised by that target: the
 *   first grant is a reservation the second one sees. A VM leaving a host is held by the same
 *   host's check (`outgoingAllowed`), so an affinity partner cannot leave while its mate comes in.
 * - Limits: incoming migrations per host, and the cluster-wide limit approximated from gossip.
 * - Leases: a grant holds until `leaseExpiresTick` (target ticks), renewed by the source's
 *   progress; an expired lease on a VM that never ran here is dropped (see the machine).
 */
import { brokenHardRules } from '../../../policies/rules.js'
import { memOvercommitMiB, type RuleSet } from '../../../policies/types.js'
import type { HostCapacity, HostId, VmId, VmSummary } from '../types.js'

/** What the target knows of itself when an intent arrives. */
export interface AdmissionInput {
  self: HostId
  capacity: HostCapacity | null
  residents: readonly VmSummary[]
  /** Live reservations for incoming VMs: id, memory and CPU demand. */
  reservations: ReadonlyArray<{ vm: VmId, memMiB: number, cpuDemandMips: number }>
  /** VMs leaving this host right now (still counted here). */
  outgoing: readonly VmId[]
  incomingCount: number
  inMax: number
  clusterInFlight: number
  clusterMax: number
  draining: boolean
  /** This host is emptying itself (consolidation moves out under way). @default false */
  evacuating?: boolean
  /** Highest CPU demand admitted, fraction of capacity (the policy's placement.cpuCapFraction). @default 1 */
  cpuCapFraction?: number
  rules: RuleSet
  rulesAgreed: boolean
  /** Memory this host's guests could give back now, MiB (its balloon loop's reclaimable memory). @default 0 */
  memReclaimableMiB?: number
  /** Overcommit admitted: configured memory up to capacity x this, beyond capacity only as far as reclaimable. @default 1 */
  memOvercommitRatio?: number
}

/**
 * What a VM asks of its host's CPU, MIPS: its measured use, at most its vCPUs' worth. A QEMU
 * process also burns CPU in emulator and I/O threads (much of it under TCG), which is not demand
 * that follows the VM to another host.
 */
export function vmDemandMips (v: Pick<VmSummary, 'cpuUtil' | 'vcpus'>, cap: HostCapacity): number {
  return Math.min(v.cpuUtil * cap.cpuCores * cap.cpuMipsPerCore, v.vcpus * cap.cpuMipsPerCore)
}

export interface Candidate {
  vm: VmId
  memMiB: number
  cpuDemandMips: number
  /** Virtual CPUs: the demand must fit in that many of this host's cores. Unchecked when absent. */
  vcpus?: number
}

export type Admission = { ok: true } | { ok: false, reason: string }

export function admit (a: AdmissionInput, c: Candidate): Admission {
  if (a.draining) return { ok: false, reason: 'target is draining' }
  if (a.evacuating === true) return { ok: false, reason: 'target is emptying itself' }
  if (!a.rulesAgreed) return { ok: false, reason: 'rule set not agreed by a majority' }
  if (a.capacity === null) return { ok: false, reason: 'target has no host sample yet' }
  if (a.residents.some(v => v.id === c.vm) && !a.outgoing.includes(c.vm)) return { ok: false, reason: 'VM already runs on the target' }
  if (a.reservations.some(r => r.vm === c.vm)) return { ok: false, reason: 'VM already reserved on the target' }
  if (a.incomingCount >= a.inMax) return { ok: false, reason: `incoming limit ${a.inMax} reached` }
  if (a.clusterInFlight >= a.clusterMax) return { ok: false, reason: `cluster limit ${a.clusterMax} reached` }
  const capMips = a.capacity.cpuCores * a.capacity.cpuMipsPerCore
  if (c.vcpus !== undefined && c.cpuDemandMips > c.vcpus * a.capacity.cpuMipsPerCore + 1e-6) {
    return { ok: false, reason: `cpu: VM demand ${Math.round(c.cpuDemandMips)} > its ${c.vcpus} core(s) here (${c.vcpus * a.capacity.cpuMipsPerCore} MIPS)` }
  }
  const capFrac = a.cpuCapFraction ?? 1
  let mem = c.memMiB
  let mips = c.cpuDemandMips
  for (const v of a.residents) { mem += v.memMiB; mips += v.cpuUtil * capMips }
  for (const r of a.reservations) { mem += r.memMiB; mips += r.cpuDemandMips }
  // Overcommit: beyond capacity only what the guests could give back now, and never beyond the ratio.
  const ratio = Math.max(1, a.memOvercommitRatio ?? 1)
  const over = memOvercommitMiB(a.capacity.memMiB, a.memReclaimableMiB ?? 0, ratio)
  if (mem > a.capacity.memMiB + over) {
    const extra = ratio > 1 ? ` + ${Math.round(over)} MiB reclaimable (overcommit ratio ${ratio})` : ''
    return { ok: false, reason: `memory: ${Math.round(mem)} MiB > ${a.capacity.memMiB} MiB${extra}` }
  }
  if (mips > capMips * capFrac + 1e-6) return { ok: false, reason: `cpu: ${Math.round(mips)} > ${capFrac === 1 ? '' : `${capFrac} x `}${capMips} MIPS` }
  const placement = placementWith(a, c.vm)
  const broken = brokenHardRules(onlyRulesOf(a.rules, c.vm), placement)
  if (broken.length > 0) return { ok: false, reason: `hard rule: ${broken[0] ?? ''}` }
  return { ok: true }
}

/** May `vm` leave this host? Not while a hard-affine partner is reserved to arrive here. */
export function outgoingAllowed (rules: RuleSet, vm: VmId, incoming: readonly VmId[]): Admission {
  for (const r of rules.vmVm) {
    if (!r.hard || r.kind !== 'affinity' || !r.vms.includes(vm)) continue
    const mate = r.vms.find(v => v !== vm && incoming.includes(v))
    if (mate !== undefined) return { ok: false, reason: `hard affinity: ${mate} is arriving here` }
  }
  return { ok: true }
}

/**
 * The placement as this host can vouch for it: its residents and reservations on self, the
 * candidate on self. Other hosts' VMs are unknown here (absent from the map), so only the rules
 * over this host's VMs are judged, which is what S2 needs (see the module comment). For a hard
 * affinity rule the candidate's partners must be here already.
 */
function placementWith (a: AdmissionInput, vm: VmId): Map<VmId, HostId> {
  const p = new Map<VmId, HostId>()
  for (const v of a.residents) p.set(v.id, a.self)
  for (const r of a.reservations) p.set(r.vm, a.self)
  p.set(vm, a.self)
  for (const r of a.rules.vmVm) {
    if (!r.hard || r.kind !== 'affinity' || !r.vms.includes(vm)) continue
    for (const o of r.vms) if (!p.has(o)) p.set(o, '(elsewhere)')
  }
  return p
}

/** The rules that mention `vm` (others may already be broken elsewhere; not ours to judge). */
function onlyRulesOf (rules: RuleSet, vm: VmId): RuleSet {
  return { vmVm: rules.vmVm.filter(r => r.vms.includes(vm)), vmHost: rules.vmHost.filter(r => r.vm === vm) }
}

/** A stable hash of a rule set (FNV-1a over its canonical JSON), gossiped to agree on it. */
export function rulesHash (rules: RuleSet): string {
  const canon = JSON.stringify({
    vmVm: rules.vmVm.map(r => ({ k: r.kind, h: r.hard, v: [...r.vms].sort(), w: r.weight ?? 1 })),
    vmHost: rules.vmHost.map(r => ({ k: r.kind, h: r.hard, vm: r.vm, hs: [...r.hosts].sort(), w: r.weight ?? 1 }))
  })
  let h = 0x811c9dc5
  for (let i = 0; i < canon.length; i++) {
    h ^= canon.charCodeAt(i)
    h = Math.imul(h, 0x01000193) >>> 0
  }
  return h.toString(16).padStart(8, '0')
}
