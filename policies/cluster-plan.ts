/**
 * The cluster's plan: what the agents would do now, step by step, for an operator to review
 * before it happens (`starling plan`, as DRS recommendations, OpenStack Watcher's action plans
 * and Ganeti's hbal dry run).
 *
 * Each host's decision is the one it makes itself (plan.ts planHost, the agents' own code), taken
 * in host-id order over one working copy of the view: a step sees the steps before it applied, so
 * two hosts never count on the same free room, and the plan as a whole stays within every host's
 * capacity and the hard rules. A VM moves at most once in a plan (no step undoes another). Hold
 * times are shown, not waited for: a step's `held` says how many decisions its condition has
 * held so far against the `holdDecisions` it needs, where the caller knows it.
 *
 * Pure and deterministic: the same view (hosts and VMs in any order) gives the same plan.
 */
import { detectOverload } from './overload.js'
import { powerAt } from './placement.js'
import { hostSample, planHost, type PolicyConfig } from './plan.js'
import { hostDemandMips, hostMemUsedMiB, migrationSeconds, type ClusterView, type HostId, type HostView, type RandomSource, type VmId, type VmView } from './types.js'

/** Load of a host, predicted: CPU as a fraction of its capacity, memory in MiB. */
export interface PlanLoad { cpu: number, memMiB: number }

export interface PlanStep {
  /** 1-based position; steps run in this order. */
  step: number
  vm: VmId
  from: HostId
  to: HostId
  reason: {
    /** overload: CPU; memory: short of memory with nothing left to reclaim inside the host; underload: consolidation; rule: a hard rule forbids the VM where it runs. */
    kind: 'overload' | 'memory' | 'underload' | 'rule'
    /** Detector's value and the threshold it was compared with (CPU fractions; for memory, MiB short and 0). */
    value: number
    threshold: number
    /** One line for people. */
    text: string
  }
  /** Predicted load of the source and the target before and after this step (earlier steps applied). */
  source: { before: PlanLoad, after: PlanLoad }
  target: { before: PlanLoad, after: PlanLoad }
  cost: {
    /** Memory to copy at least once, bytes. */
    bytes: number
    /** Estimated copy time over half the slower host's link (as the policies plan), s. */
    seconds: number
  }
  /** 5: relieves a host over its CPU threshold now or short of memory; 4: over by its forecast only; 3: empties a host worth its watts; 2: consolidation with less gain. */
  rating: 1 | 2 | 3 | 4 | 5
  /** Steps that must be done first: they free room on this step's target. */
  after: number[]
}

export interface ClusterPlan {
  steps: PlanStep[]
  /** Hosts the plan empties (each could power off once its steps are done). */
  emptied: HostId[]
  /** Predicted load of every host once every step is done. */
  final: Record<HostId, PlanLoad>
}

export interface ClusterPlanOptions {
  /** Upper bound on steps. @default 64 */
  maxSteps?: number
}

/** Never used: the plan sorts by id, it does not draw (the random selection gets a fixed stream). */
const FIXED: (seed: number) => RandomSource = () => ({ int: () => 0 })

const HELD = Number.MAX_SAFE_INTEGER

function load (h: HostView): PlanLoad {
  return { cpu: h.cpuMips > 0 ? hostDemandMips(h) / h.cpuMips : 0, memMiB: hostMemUsedMiB(h) }
}

/** The view in a canonical order: hosts by id, VMs by id. */
function canonical (view: ClusterView): ClusterView {
  const byId = (a: { id: string }, b: { id: string }): number => a.id < b.id ? -1 : a.id > b.id ? 1 : 0
  return {
    ...view,
    hosts: view.hosts.map(h => ({ ...h, vms: h.vms.slice().sort(byId) })).sort(byId)
  }
}

/** `vm` moved from `from` to `to` in the working view (its demand and its history share follow it). */
function moveVm (hosts: HostView[], vm: VmView, from: HostId, to: HostId): void {
  for (let i = 0; i < hosts.length; i++) {
    const h = hosts[i] as HostView
    if (h.id !== from && h.id !== to) continue
    const sign = h.id === to ? 1 : -1
    const k = vm.cpuMips / h.cpuMips
    const n = Math.min(h.history.length, vm.history.length)
    const hist = h.history.slice()
    for (let j = 1; j <= n; j++) hist[hist.length - j] = Math.max(0, (hist[hist.length - j] as number) + sign * (vm.history[vm.history.length - j] as number) * k)
    // Without the VM's own history, the host's latest point moves by the VM's demand now.
    if (n === 0 && hist.length > 0) hist[hist.length - 1] = Math.max(0, (hist[hist.length - 1] as number) + sign * vm.cpuDemandMips / h.cpuMips)
    const vms = h.id === to ? [...h.vms, { ...vm, host: to }].sort((a, b) => a.id < b.id ? -1 : 1) : h.vms.filter(v => v.id !== vm.id)
    const next: HostView = { ...h, vms, history: hist, active: vms.length > 0 || h.reservedMips > 0 }
    // The memory a host is short of shrinks by what leaves it (else the next pass would move more).
    if (h.id === from && (h.memShortMiB ?? 0) > 0) next.memShortMiB = Math.max(0, (h.memShortMiB ?? 0) - vm.memMiB)
    hosts[i] = next
  }
}

export function clusterPlan (input: ClusterView, cfg: PolicyConfig, opts: ClusterPlanOptions = {}): ClusterPlan {
  const maxSteps = opts.maxSteps ?? 64
  const view = canonical(input)
  const hosts = view.hosts.slice() as HostView[]
  const hadVms = new Set(hosts.filter(h => h.vms.length > 0).map(h => h.id))
  // A VM moved by the plan is not moved again in it: its clock is 0 and the cool-down at least 1.
  const moved = new Map<VmId, number>()
  const planCfg: PolicyConfig = { ...cfg, guards: { ...cfg.guards, cooldownDecisions: Math.max(1, cfg.guards.cooldownDecisions) } }
  const steps: PlanStep[] = []
  let progress = true
  while (progress && steps.length < maxSteps) {
    progress = false
    for (const h of hosts.map(x => x.id)) {
      if (steps.length >= maxSteps) break
      const me = hosts.find(x => x.id === h) as HostView
      if (me.vms.length === 0) continue
      const moves = planHost({ ...view, hosts, tick: 0 }, h, planCfg, { overStreak: HELD, underStreak: HELD, lastMoved: moved, random: FIXED })
      if (moves.length === 0) continue
      // The detector's verdict on the source before its moves, for the reason.
      const smp = hostSample(me, cfg.intervalSec)
      const verdict = detectOverload(smp, cfg.overload)
      // planHost relieves the CPU first (unless the host's own allocation resolves it), then memory.
      const cpuOver = verdict.overloaded && me.cpuResolved !== true
      const memShort = me.memShortMiB ?? 0
      const powerBefore = powerAt(me.powerCurveW, load(me).cpu)
      for (const mv of moves) {
        if (steps.length >= maxSteps) break
        const src = hosts.find(x => x.id === mv.from) as HostView
        const dst = hosts.find(x => x.id === mv.to)
        const vm = src.vms.find(v => v.id === mv.vm)
        if (dst === undefined || vm === undefined) continue
        const sb = load(src); const tb = load(dst)
        moveVm(hosts, vm, mv.from, mv.to)
        moved.set(vm.id, 0)
        const sa = load(hosts.find(x => x.id === mv.from) as HostView); const ta = load(hosts.find(x => x.id === mv.to) as HostView)
        const kind: PlanStep['reason']['kind'] = mv.reason === 'rule' ? 'rule' : mv.reason !== 'overload' ? 'underload' : cpuOver ? 'overload' : 'memory'
        const value = kind === 'overload' ? verdict.value : kind === 'memory' ? memShort : kind === 'rule' ? 0 : smp.util
        const threshold = kind === 'overload' ? verdict.threshold : kind === 'memory' || kind === 'rule' ? 0 : underloadThreshold(cfg)
        const rating: PlanStep['rating'] = kind === 'memory' || kind === 'rule'
          ? 5
          : kind === 'overload'
            ? (smp.util > verdict.threshold ? 5 : 4)
            : (powerBefore - (me.sleepW ?? 0) >= 2 * Math.max(1, cfg.guards.minGain) ? 3 : 2)
        const after = steps.filter(s => s.from === mv.to || s.vm === mv.vm).map(s => s.step)
        steps.push({
          step: steps.length + 1,
          vm: vm.id,
          from: mv.from,
          to: mv.to,
          reason: {
            kind,
            value,
            threshold,
            text: kind === 'overload'
              ? `overload: ${pct(smp.util)} now, ${pct(value)} by the detector against ${pct(threshold)}`
              : kind === 'memory'
                ? `memory: ${Math.round(memShort)} MiB short with nothing left to reclaim inside the host`
                : kind === 'rule'
                  ? `rule: a hard rule forbids ${vm.id} on this host (agreed after it was placed there)`
                : `underload: ${pct(smp.util)} is under ${pct(threshold)}; the host can be emptied onto busier ones`
          },
          source: { before: sb, after: sa },
          target: { before: tb, after: ta },
          cost: { bytes: vm.memMiB * 1048576, seconds: migrationSeconds(vm.memMiB, Math.min(src.netMbps, dst.netMbps)) },
          rating,
          after
        })
        progress = true
      }
      // A host with its isUnderloaded condition and no VMs left is emptied; nothing more from it.
    }
  }
  const final: Record<HostId, PlanLoad> = {}
  for (const h of hosts) final[h.id] = load(h)
  return { steps, emptied: hosts.filter(h => hadVms.has(h.id) && h.vms.length === 0).map(h => h.id), final }
}

function underloadThreshold (cfg: PolicyConfig): number {
  return cfg.underload.kind === 'threshold' ? cfg.underload.threshold : 0
}

function pct (x: number): string { return `${Math.round(x * 100)} %` }
