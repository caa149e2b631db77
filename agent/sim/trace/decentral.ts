/**
 * Decentralised mode: every host decides for itself, every step, with the same planner the
 * agent core calls (policies/plan.ts), from its own gossiped view of the other hosts.
 *
 * Gossip model (until the agent's membership core is plugged in): each host publishes a load
 * report every step; a peer sees report ages of `viewAgeSteps` plus one more step for every
 * consecutive loss (probability `lossP`, capped at `maxAgeSteps`), drawn from the seeded Prng.
 * A host always sees itself fresh.
 *
 * Reservation step: a proposal reaches the target, which admits it against its authoritative
 * state: CPU (residents' current demand + reservations already granted this step, up to
 * `admitCap` of capacity, and the VM's core size) and RAM (every VM it holds, including copies
 * still migrating in, + RAM granted this step, up to the host's RAM; a source keeps a leaving
 * VM's RAM until the copy ends). A consolidation plan is all or nothing; a host that accepted
 * incoming VMs does not evacuate itself in the same step, and an evacuating host accepts
 * nothing. So concurrent decisions never overfill a host, whatever the views said (safety
 * property S3). `checkAdmissions` re-derives this from the simulator's state after every step
 * and counts any breach in `Metrics.admissionViolations`.
 *
 * To plug in the real core: replace `viewFor()` by the agent core's ClusterView (membership +
 * load reports from agent/core), and `admit()` by the migration reservation message exchange
 * over agent/sim/sim-network.ts; the planner call stays the same.
 */
import { Prng } from '../../core/prng.js'
import { detectOverload } from '../../../policies/overload.js'
import { isUnderloaded } from '../../../policies/underload.js'
import { nextStreak } from '../../../policies/antithrash.js'
import { planHost, hostSample, type PolicyConfig } from '../../../policies/plan.js'
import { defaultPolicyConfig, validatePolicyConfig } from '../../../policies/config.js'
import { NO_RULES, type ClusterView, type HostView, type VmView } from '../../../policies/types.js'
import { CloudsimController } from './cloudsim.js'
import type { Metrics, SimHost, SimVm, TraceSim } from './engine.js'

export interface DecentralOptions {
  seed: number
  /** Age of a peer's report in steps when nothing is lost. @default 1 */
  viewAgeSteps: number
  /** Probability that a report round is lost (the view gets one step older). @default 0.1 */
  lossP: number
  maxAgeSteps: number
  /** Highest CPU demand a target admits, fraction of its capacity. @default the policy's placement.cpuCapFraction (0.85) */
  admitCap: number
  /** VM history samples in reports. @default 12 */
  reportHistory: number
  policy: PolicyConfig
}

/** The agents' policy: the production default (policies/config.ts), so the simulator measures what ships. */
export function defaultDecentralPolicy (): PolicyConfig {
  return defaultPolicyConfig()
}

export function defaultDecentralOptions (): DecentralOptions {
  const policy = defaultDecentralPolicy()
  return { seed: 1, viewAgeSteps: 1, lossP: 0.1, maxAgeSteps: 5, admitCap: policy.placement.cpuCapFraction ?? 1, reportHistory: 12, policy }
}

function report (sim: TraceSim, h: SimHost, histLen: number): HostView {
  const vms: VmView[] = []
  let demand = 0
  for (const id of h.vms) {
    if (h.migIn.includes(id)) continue
    const v = sim.vms[id] as SimVm
    const d = sim.requested(v)
    demand += d
    vms.push({ id: String(id), host: String(h.id), cpuMips: v.mips, cpuDemandMips: d, memMiB: v.ram, history: v.hist.slice(0, histLen).reverse(), migrating: v.inMigration })
  }
  const hist = new Array<number>(histLen).fill(0)
  for (const id of h.vms) {
    const v = sim.vms[id] as SimVm
    for (let i = 0; i < Math.min(histLen, v.hist.length); i++) hist[histLen - 1 - i] = (hist[histLen - 1 - i] as number) + (v.hist[i] as number) * v.mips / h.totalMips
  }
  let start = 0
  while (start < hist.length && hist[start] === 0) start++
  let inMem = 0
  for (const id of h.migIn) inMem += (sim.vms[id] as SimVm).ram
  return {
    id: String(h.id), cpuMips: h.totalMips, coreMips: h.peMips, memMiB: h.ram, netMbps: h.bw / 1000,
    powerCurveW: h.power, sleepW: 0, vms, reservedMips: 0, reservedMemMiB: inMem, history: hist.slice(start), active: demand > 0 || vms.length > 0
  }
}

export function runDecentralised (sim: TraceSim, _policyName: string, o: Partial<DecentralOptions>): Metrics {
  const opt: DecentralOptions = { ...defaultDecentralOptions(), ...o }
  const cfg = validatePolicyConfig(opt.policy)
  const prng = new Prng(opt.seed)
  // same initial placement as the centralised runs, for a like-for-like comparison
  new CloudsimController(sim, { detector: 'thr', param: 0.8, selection: { kind: 'mmt' } }).initialPlace()
  const n = sim.hosts.length
  const past: HostView[][] = []
  const over = new Int32Array(n)
  const under = new Int32Array(n)
  const lastMoved = new Map<string, number>()
  let tick = 0
  let violations = 0
  const metrics = sim.run((s, _t) => {
    tick++
    const now = s.hosts.map(h => report(s, h, opt.reportHistory))
    past.unshift(now)
    if (past.length > opt.maxAgeSteps + opt.viewAgeSteps + 1) past.length = opt.maxAgeSteps + opt.viewAgeSteps + 1
    // which hosts have something to decide (from their own fresh state)
    const deciders: number[] = []
    for (let i = 0; i < n; i++) {
      const me = now[i] as HostView
      if (me.vms.length === 0) { over[i] = 0; under[i] = 0; continue }
      const smp = hostSample(me, cfg.intervalSec)
      const o1 = detectOverload(smp, cfg.overload).overloaded
      over[i] = nextStreak(over[i] as number, o1)
      under[i] = nextStreak(under[i] as number, !o1 && isUnderloaded(smp.util, me.history, cfg.underload))
      if ((over[i] as number) > 0 || (under[i] as number) > 0) deciders.push(i)
    }
    prng.shuffle(deciders)
    // authoritative state of every host for admission: demand incl. granted reservations
    const demand = now.map(h => h.vms.reduce((a, v) => a + v.cpuDemandMips, 0))
    const ram = s.hosts.map(h => s.ramHeld(h))
    const receiving = new Uint8Array(n)
    const evacuating = new Uint8Array(n)
    const moves: Array<[number, number]> = []
    for (const i of deciders) {
      if (receiving[i] === 1 && (over[i] as number) === 0) continue
      const view = viewFor(i, now, past, opt, prng, tick)
      const plan = planHost(view, String(i), cfg, { overStreak: over[i] as number, underStreak: under[i] as number, lastMoved })
      if (plan.length === 0) continue
      const consolidation = plan[0]?.reason === 'underload'
      const granted: Array<[number, number, number]> = []
      for (const m of plan) {
        const vm = s.vms[Number(m.vm)] as SimVm
        const tgt = Number(m.to)
        const h = s.hosts[tgt] as SimHost
        const d = s.requested(vm)
        const ok = evacuating[tgt] !== 1 && d <= h.peMips && (demand[tgt] as number) + d <= h.totalMips * opt.admitCap &&
          (ram[tgt] as number) + vm.ram <= h.ram
        if (!ok) { if (consolidation) break; else continue }
        demand[tgt] = (demand[tgt] as number) + d
        ram[tgt] = (ram[tgt] as number) + vm.ram
        granted.push([vm.id, tgt, d])
      }
      if (consolidation && granted.length !== plan.length) {
        for (const [vm, tgt, d] of granted) { demand[tgt] = (demand[tgt] as number) - d; ram[tgt] = (ram[tgt] as number) - (s.vms[vm] as SimVm).ram }
        continue
      }
      for (const [vm, tgt, d] of granted) {
        moves.push([vm, tgt])
        receiving[tgt] = 1
        demand[i] = (demand[i] as number) - d
        lastMoved.set(String(vm), tick)
      }
      if (consolidation) evacuating[i] = 1
    }
    violations += checkAdmissions(s, moves, opt.admitCap)
    return moves
  })
  return { ...metrics, admissionViolations: violations }
}

/**
 * Independent check of one step's admitted moves against the simulator's own state (not the
 * admission's bookkeeping): for every target, the RAM of all VMs it holds plus the RAM of the
 * VMs admitted to it must fit its RAM, and the current demand of the VMs that stay plus that of
 * the admitted VMs must fit `admitCap` of its CPU, each admitted VM within one core. Returns
 * the number of targets that break either.
 */
export function checkAdmissions (sim: TraceSim, moves: ReadonlyArray<readonly [number, number]>, admitCap: number): number {
  const leaving = new Set(moves.map(([vm]) => vm))
  const inRam = new Map<number, number>()
  const inCpu = new Map<number, number>()
  let bad = 0
  for (const [id, tgt] of moves) {
    const vm = sim.vms[id] as SimVm
    const d = sim.requested(vm)
    if (d > (sim.hosts[tgt] as SimHost).peMips) bad++
    inRam.set(tgt, (inRam.get(tgt) ?? 0) + vm.ram)
    inCpu.set(tgt, (inCpu.get(tgt) ?? 0) + d)
  }
  for (const [tgt, r] of inRam) {
    const h = sim.hosts[tgt] as SimHost
    let stay = 0
    for (const id of h.vms) if (!leaving.has(id) && !h.migIn.includes(id)) stay += sim.requested(sim.vms[id] as SimVm)
    if (sim.ramHeld(h) + r > h.ram || stay + (inCpu.get(tgt) ?? 0) > h.totalMips * admitCap + 1e-6) bad++
  }
  return bad
}

function viewFor (self: number, now: HostView[], past: HostView[][], opt: DecentralOptions, prng: Prng, tick: number): ClusterView {
  const hosts: HostView[] = new Array(now.length)
  for (let j = 0; j < now.length; j++) {
    if (j === self) { hosts[j] = now[j] as HostView; continue }
    let age = opt.viewAgeSteps
    while (age < opt.viewAgeSteps + opt.maxAgeSteps && prng.chance(opt.lossP)) age++
    const snap = past[Math.min(age, past.length - 1)] as HostView[]
    hosts[j] = snap[j] as HostView
  }
  return { hosts, rules: NO_RULES, tick }
}
