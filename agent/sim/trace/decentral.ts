/**
 * Decentralised mode: every host decides for itself, every step, with the agent's own decision
 * code: a policies/decider.ts HostDecider per host (the object the agent core's scheduler holds),
 * fed its own fresh sample and its gossiped view of the other hosts; every move it proposes goes
 * to the target, which admits or refuses it with the agent core's admit()
 * (agent/core/migration/reservation.ts) against the simulator's authoritative state of that
 * target. Nothing here decides or admits on its own.
 *
 * Views, `gossip`:
 * - 'model' (default, fast): each host publishes a load report every step; a peer sees report
 *   ages of `viewAgeSteps` plus one more step for every consecutive loss (probability `lossP`,
 *   capped at `maxAgeSteps`), drawn from the seeded Prng.
 * - 'core': the agents' own dissemination (core-gossip.ts): one AgentCore per host over a
 *   SimNetwork with seeded delay, loss and duplication, `coreGossip.ticksPerStep` core ticks per
 *   step. What host i knows of host j is what i's core holds: j is in the view only if i's core
 *   holds j alive with a report (as the agent's scheduler builds it), and the report's seq says
 *   which step it was made in. `coreView` says what the view is made of:
 *   - 'snapshot': the simulator's report of j at that step (the same content as the model's:
 *     power curve, VM histories), so 'core' and 'model' differ only in what delay, loss and
 *     suspicion do to the view (the validation of the model);
 *   - 'agent': AgentCore.clusterView(), exactly what the agent's scheduler decides over (its
 *     reports carry no power curve and no VM history).
 * A host always sees itself fresh. Hosts decide in a random order (same Prng) each step.
 *
 * Admission input, per target: capacity from the host type; residents = every VM it holds that
 * is not copying in (VMs leaving it count until they have left); reservations = copies migrating
 * in plus moves granted to it this step (all of this step's moves start together);
 * cpuCapFraction = the policy's placement.cpuCapFraction; evacuating = it started consolidation
 * moves out this step. Each move is admitted on its own, as the agent's targets do (one intent
 * each). A consolidation is reserved as a whole (`wholeEvacuations`, default): when one of its
 * targets refuses, the reservations the others granted are released and none of its moves starts,
 * and the host tries again at its next decision; no host is left half emptied (with moves admitted
 * one by one, 40 % of the consolidations on 20110303 were, each a wasted migration or more). Its
 * copies are staged as the agents stage them: at most the source's free outgoing slots (outMax
 * less its copies under way) start at the decision, and each copy that ends (engine
 * onMigrationEnd, between steps) starts the next; the waiting moves keep their reservations at
 * their targets (counted in every admission, across steps if need be) and their VMs count as
 * moving. A waiting VM that ended (CloudSim's idle-VM removal) fails its move, and what still
 * waits is withdrawn. The agents' migration protocol does the same (migration-machine.ts
 * startGroup), and both judge the group with agent/core/migration/evacuation.ts. The source does
 * not empty itself while VMs are on their way to it.
 *
 * `checkAdmissions` re-derives capacity from the simulator's state after every step (not from
 * the admission's bookkeeping) and counts any breach in `Metrics.admissionViolations` (S3).
 *
 * The age model stays the default because the cores cost 1.7 s per step at 800 hosts for the
 * gossip alone (every host forwards every new report once: ~2 n^2 report receptions per step;
 * a whole day took 22 min on a loaded machine), far from a 60 s day; bench/sim-gossip.ts
 * compares the two and bench/sim-gossip.md has the figures. Still a model: the admit() call is direct,
 * not the migration reservation exchange over the simulated network.
 */
import { admit, defaultMigrationConfig, judgeEvacuation, Prng, reservedWhole, seededPrng, type AdmissionInput, type EvacuationAnswer, type HostSample } from '../../core/index.js'
import { HostDecider } from '../../../policies/decider.js'
import type { PolicyConfig } from '../../../policies/plan.js'
import { defaultPolicyConfig, validatePolicyConfig } from '../../../policies/config.js'
import { NO_RULES, type ClusterView, type HostView, type VmView } from '../../../policies/types.js'
import { CloudsimController } from './cloudsim.js'
import { CoreGossip, defaultCoreGossipOptions, type CoreGossipOptions } from './core-gossip.js'
import type { Metrics, SimHost, SimVm, TraceSim } from './engine.js'

export interface DecentralOptions {
  seed: number
  /** Age of a peer's report in steps when nothing is lost. @default 1 */
  viewAgeSteps: number
  /** Probability that a report round is lost (the view gets one step older). @default 0.1 */
  lossP: number
  maxAgeSteps: number
  /** VM history samples in reports. @default 12 */
  reportHistory: number
  policy: PolicyConfig
  /**
   * Migration limits the targets admit against: incoming per target and cluster-wide, counted
   * over the moves of one step. @default unlimited. The agent's limits (migration.inMax 2,
   * clusterMax 8) bound *concurrent* migrations; the agent decides every few seconds and runs
   * the moves of a 300 s step one after the other, which a step model cannot express: applied
   * per step they would throttle the agents far below what they do (clusterMax 8 per step:
   * +15 % energy on 20110303).
   */
  inMax: number
  clusterMax: number
  /**
   * Copies a host may have under way at once: the agent's outgoing slots (migration.outMax).
   * Overload relief starts at most the free ones; a consolidation is reserved whole and copied
   * this many at a time (staged, as the agent's migration machine does). @default the agent's
   * default outMax (2)
   */
  outMax: number
  /**
   * A consolidation (underload) plan is reserved as a whole: if any of its targets refuses, the
   * reservations its other targets granted are released and none of its moves starts, so no
   * host is left half emptied. @default true
   */
  wholeEvacuations: boolean
  /** Where the views come from: the age model, or the agents' cores over the simulated network. @default 'model' */
  gossip: 'model' | 'core'
  /** With gossip 'core': the simulator's reports at the held report's step, or the agent's own view. @default 'snapshot' */
  coreView: 'snapshot' | 'agent'
  /** With gossip 'core': clock, link model, seed (the seed defaults to `seed`). */
  coreGossip: Partial<CoreGossipOptions>
}

/** The agents' policy: the production default (policies/config.ts), so the simulator measures what ships. */
export function defaultDecentralPolicy (): PolicyConfig {
  return defaultPolicyConfig()
}

export function defaultDecentralOptions (): DecentralOptions {
  return { seed: 1, viewAgeSteps: 1, lossP: 0.1, maxAgeSteps: 5, reportHistory: 12, policy: defaultDecentralPolicy(), inMax: Infinity, clusterMax: Infinity, outMax: defaultMigrationConfig().outMax, wholeEvacuations: true, gossip: 'model', coreView: 'snapshot', coreGossip: {} }
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

export interface DecentralStats {
  /** Moves the deciders proposed, and those the targets refused, by reason (first words). */
  proposed: number
  refused: Record<string, number>
  /**
   * Staleness of the views the deciders asked for: viewAges[a] counts (viewer, peer) pairs whose
   * report was made `a` steps before the decision; the last slot counts peers missing from the
   * view (no report, or not held alive). Filled for 'model' and for 'core' with 'snapshot'.
   */
  viewAges?: number[]
  /** With gossip 'core': the network's counters at the end. */
  network?: { sent: number, bytes: number, lost: number, duplicated: number, delivered: number }
  /** Views built (decisions that needed the gossiped view). */
  views?: number
  /** Consolidations that started some of their moves but had others refused (the host stays on). */
  partialEvacuations?: number
  /** Consolidations whose moves were all admitted. */
  evacuations?: number
  /** Consolidations withdrawn because a target refused one of their moves (wholeEvacuations). */
  withdrawnEvacuations?: number
  /** Consolidations whose waiting moves were withdrawn part way (a VM that ended before its copy's turn). */
  cutShortEvacuations?: number
  /** Consolidations started with more moves than their source's free slots (their copies staged). */
  stagedEvacuations?: number
  /** Most copies under way out of one host at any moment. */
  maxCopiesOut?: number
}

/** A member of a whole evacuation in the simulator: how it stands (evacuation.ts) and what its target reserves. */
interface SimMember { vm: number, tgt: number, answer: EvacuationAnswer, memMiB: number, cpuDemandMips: number }
interface SimGroup { src: number, members: SimMember[] }

/** Slots of DecentralStats.viewAges: ages 0..AGE_SLOTS-2 (older ones in the one before last), missing last. */
export const AGE_SLOTS = 12

export function runDecentralised (sim: TraceSim, _policyName: string, o: Partial<DecentralOptions>, stats?: DecentralStats): Metrics {
  const opt: DecentralOptions = { ...defaultDecentralOptions(), ...o }
  const cfg = validatePolicyConfig(opt.policy)
  const capFrac = cfg.placement.cpuCapFraction ?? 1
  const prng = new Prng(opt.seed)
  // same initial placement as the centralised runs, for a like-for-like comparison
  new CloudsimController(sim, { detector: 'thr', param: 0.8, selection: { kind: 'mmt' } }).initialPlace()
  const n = sim.hosts.length
  const past: HostView[][] = []
  // As the agents do (migration.inMax): a consolidation places no more VMs on one target than it
  // admits at once; with the default unlimited per-step admission, no cap.
  const policy: PolicyConfig = Number.isFinite(opt.inMax) ? { ...cfg, maxIncomingPerTarget: opt.inMax } : cfg
  const deciders = sim.hosts.map(() => new HostDecider(policy, seededPrng))
  const order = sim.hosts.map((_h, i) => i)
  let tick = 0
  let violations = 0
  const ages = stats !== undefined ? (stats.viewAges ??= new Array<number>(AGE_SLOTS).fill(0)) : null
  const cg = opt.gossip === 'core'
    ? new CoreGossip(sim.hosts.map(h => String(h.id)), { ...defaultCoreGossipOptions(), seed: opt.seed, ...opt.coreGossip }, cfg)
    : null
  /** seqAt[j][s]: host j's own report seq at the end of step s's ticks (core gossip). */
  const seqAt: number[][] = sim.hosts.map(() => [])
  const keep = opt.gossip === 'core' ? AGE_SLOTS : opt.maxAgeSteps + opt.viewAgeSteps + 1
  // Whole evacuations whose copies are staged (evacuation.ts): the groups with moves still waiting
  // for a slot, the copies under way out of each host, and each copy's source.
  const groups: SimGroup[] = []
  const outCopies = new Int32Array(n)
  const copySrc = new Map<number, number>()
  const copyStarted = (src: number): void => {
    const c = (outCopies[src] as number) + 1
    outCopies[src] = c
    if (stats !== undefined && c > (stats.maxCopiesOut ?? 0)) stats.maxCopiesOut = c
  }
  sim.onMigrationEnd = (vm) => {
    const src = copySrc.get(vm)
    if (src === undefined) return
    copySrc.delete(vm)
    outCopies[src] = (outCopies[src] as number) - 1
    const own = groups.find(g => g.members.some(mb => mb.vm === vm && mb.answer === 'copying'))
    const mine = own?.members.find(mb => mb.vm === vm)
    if (mine !== undefined) mine.answer = 'done'
    // the slot freed goes to the groups of this source, the VM's own first
    for (const g of groups.filter(x => x.src === src).sort((a, b) => (a === own ? -1 : b === own ? 1 : 0))) stage(g)
    for (let k = groups.length - 1; k >= 0; k--) if (!(groups[k] as SimGroup).members.some(mb => mb.answer === 'granted')) groups.splice(k, 1)
  }
  /** Starts the copies of `g` its source's free slots allow, or withdraws what waits after a failure (judgeEvacuation). */
  const stage = (g: SimGroup): void => {
    for (;;) {
      // a VM that ended (CloudSim drops idle VMs) or left its host while its copy waited: that move fails
      for (const mb of g.members) {
        const v = sim.vms[mb.vm] as SimVm
        if (mb.answer === 'granted' && (!v.alive || v.host !== g.src)) mb.answer = 'refused'
      }
      const verdict = judgeEvacuation(g.members.map(mb => mb.answer), opt.outMax - (outCopies[g.src] as number))
      if (verdict.kind === 'withdraw') {
        if (stats !== undefined) stats.cutShortEvacuations = (stats.cutShortEvacuations ?? 0) + 1
        for (const k of verdict.withdraw) {
          const mb = g.members[k] as SimMember
          mb.answer = 'refused'
          ;(deciders[g.src] as HostDecider).cancelled(String(mb.vm))
        }
        return
      }
      if (verdict.kind !== 'copy' || verdict.start.length === 0) return
      for (const k of verdict.start) {
        const mb = g.members[k] as SimMember
        mb.answer = 'copying'
        copySrc.set(mb.vm, g.src)
        copyStarted(g.src)
        sim.startMigration(mb.vm, mb.tgt)
      }
    }
  }
  const metrics = sim.run((s, _t) => {
    tick++
    const now = s.hosts.map(h => report(s, h, opt.reportHistory))
    past.unshift(now)
    if (past.length > keep) past.length = keep
    if (cg !== null) {
      cg.step(s.hosts.map(h => sampleOf(s, h)))
      for (let j = 0; j < n; j++) (seqAt[j] as number[])[tick] = cg.ownSeq(j)
    }
    const viewOf = (i: number): ClusterView => {
      if (stats !== undefined) stats.views = (stats.views ?? 0) + 1
      if (cg === null) return viewFor(i, now, past, opt, prng, tick, ages)
      if (opt.coreView === 'agent') return agentView(cg, i, tick)
      return coreSnapshotView(cg, i, now, past, seqAt, tick, ages)
    }
    prng.shuffle(order)
    // this step's grants per target (all start together: concurrent reservations), with the
    // reservations of whole evacuations whose copies wait for a slot
    const granted: Array<Array<{ vm: string, memMiB: number, cpuDemandMips: number }>> = s.hosts.map(h => h.migIn.map(id => {
      const v = s.vms[id] as SimVm
      return { vm: String(id), memMiB: v.ram, cpuDemandMips: s.requested(v) }
    }))
    const leaving: string[][] = s.hosts.map(() => [])
    const evacuating = new Uint8Array(n)
    const moving = new Set<string>()
    for (const h of s.hosts) for (const id of h.migIn) moving.add(String(id))
    /** Moves admitted and not started: they hold their targets as admitted moves do (checkAdmissions). */
    const held: Array<[number, number]> = []
    const waitingOut = new Int32Array(n)
    for (const g of groups) {
      evacuating[g.src] = 1
      for (const mb of g.members) {
        if (mb.answer !== 'granted') continue
        ;(granted[mb.tgt] as unknown[]).push({ vm: String(mb.vm), memMiB: mb.memMiB, cpuDemandMips: mb.cpuDemandMips })
        moving.add(String(mb.vm))
        ;(leaving[g.src] as string[]).push(String(mb.vm))
        held.push([mb.vm, mb.tgt])
        waitingOut[g.src] = (waitingOut[g.src] as number) + 1
      }
    }
    let inFlight = moving.size
    const moves: Array<[number, number]> = []
    const admitted: Array<[number, number]> = [...held]
    const arrivals: Array<[number, string]> = []
    for (const i of order) {
      let view: ClusterView | null = null
      let self = now[i] as HostView
      if (cg !== null && opt.coreView === 'agent') {
        // the agent's scheduler decides over its whole view, itself as its own report shows it
        view = viewOf(i)
        self = view.hosts.find(h => h.id === self.id) ?? self
      }
      const plan = (deciders[i] as HostDecider).decide({
        self,
        view: () => (view ??= viewOf(i)),
        receiving: (granted[i] as unknown[]).length > 0,
        // the agent's free outgoing slots (its scheduler: outMax less its live outgoing records)
        outSlots: Math.min(cfg.maxMovesPerDecision, opt.outMax - (outCopies[i] as number) - (waitingOut[i] as number)),
        moving: vm => moving.has(vm)
      })
      if (plan.length === 0) continue
      if (stats !== undefined) stats.proposed += plan.length
      const consolidation = plan[0]?.reason === 'underload'
      const ok: Array<[number, number]> = []
      const answers: EvacuationAnswer[] = []
      const whole = opt.wholeEvacuations && reservedWhole(plan)
      const free = opt.outMax - (outCopies[i] as number)
      for (const m of plan) {
        const vm = s.vms[Number(m.vm)] as SimVm
        const tgt = Number(m.to)
        if (!whole && ok.length >= free) {
          // moves reserved one by one take a slot each from their start (the agent refuses the rest)
          if (stats !== undefined) stats.refused['outgoing limit'] = (stats.refused['outgoing limit'] ?? 0) + 1
          answers.push('refused')
          continue
        }
        const v = admit(admissionInput(s, s.hosts[tgt] as SimHost, granted[tgt] as [], leaving[tgt] as string[], evacuating[tgt] === 1, inFlight, opt, capFrac),
          { vm: m.vm, memMiB: vm.ram, cpuDemandMips: s.requested(vm), vcpus: 1 })
        if (!v.ok) {
          // as the agent's scheduler does when a target answers reservationRefused
          ;(deciders[i] as HostDecider).refused(m.to)
          if (stats !== undefined) { const k = v.reason.split(/[:(0-9]/)[0]?.trim() ?? v.reason; stats.refused[k] = (stats.refused[k] ?? 0) + 1 }
          answers.push('refused')
          continue
        }
        answers.push('granted')
        ok.push([vm.id, tgt])
        ;(granted[tgt] as unknown[]).push({ vm: m.vm, memMiB: vm.ram, cpuDemandMips: s.requested(vm) })
        inFlight++
      }
      // judged as the agents' migration machine judges its groups: copies staged over the free slots
      const verdict = whole && ok.length > 0 ? judgeEvacuation(answers, free) : null
      if (verdict?.kind === 'withdraw') {
        // one target refused: the granted reservations of this evacuation are released, nothing starts
        if (stats !== undefined) stats.withdrawnEvacuations = (stats.withdrawnEvacuations ?? 0) + 1
        for (const [vm, tgt] of ok) {
          const g = granted[tgt] as Array<{ vm: string }>
          g.splice(g.findIndex(x => x.vm === String(vm)), 1)
          inFlight--
        }
        ok.length = 0
      }
      const okIds = new Set(ok.map(([vm]) => String(vm)))
      for (const m of plan) if (!okIds.has(m.vm)) (deciders[i] as HostDecider).cancelled(m.vm)
      for (const [vm, tgt] of ok) {
        moving.add(String(vm))
        ;(leaving[i] as string[]).push(String(vm))
        arrivals.push([tgt, String(vm)])
        admitted.push([vm, tgt])
      }
      if (verdict?.kind === 'copy') {
        // the whole group reserved; its first copies start now, the others as slots free (onMigrationEnd)
        const g: SimGroup = { src: i, members: ok.map(([vm, tgt]) => ({ vm, tgt, answer: 'granted' as EvacuationAnswer, memMiB: (s.vms[vm] as SimVm).ram, cpuDemandMips: s.requested(s.vms[vm] as SimVm) })) }
        groups.push(g)
        if (stats !== undefined && g.members.length > free) stats.stagedEvacuations = (stats.stagedEvacuations ?? 0) + 1
        for (const k of verdict.start) {
          const mb = g.members[k] as SimMember
          mb.answer = 'copying'
          moves.push([mb.vm, mb.tgt])
          copySrc.set(mb.vm, i)
          copyStarted(i)
        }
        evacuating[i] = 1
      } else {
        for (const [vm, tgt] of ok) { moves.push([vm, tgt]); copySrc.set(vm, i); copyStarted(i) }
        if (consolidation && ok.length > 0) evacuating[i] = 1
      }
      if (consolidation && ok.length > 0 && stats !== undefined) {
        if (ok.length < plan.length) stats.partialEvacuations = (stats.partialEvacuations ?? 0) + 1
        else stats.evacuations = (stats.evacuations ?? 0) + 1
      }
    }
    for (const [tgt, vm] of arrivals) (deciders[tgt] as HostDecider).arrived(vm)
    violations += checkAdmissions(s, admitted, capFrac)
    return moves
  })
  sim.onMigrationEnd = null
  if (cg !== null && stats !== undefined) {
    const st = cg.network.stats
    stats.network = { sent: st.sent, bytes: st.bytes, lost: st.lost, duplicated: st.duplicated, delivered: st.delivered }
  }
  return { ...metrics, admissionViolations: violations }
}

/** Host h's sample as its agent's sampler would give it: capacity and the VMs it runs (copies in excluded). */
function sampleOf (s: TraceSim, h: SimHost): HostSample {
  const vms: HostSample['vms'] = []
  let util = 0
  let mem = 0
  for (const id of h.vms) {
    if (h.migIn.includes(id)) continue
    const v = s.vms[id] as SimVm
    const u = s.requested(v) / h.totalMips
    util += u
    mem += v.ram
    vms.push({ id: String(id), vcpus: 1, memMiB: v.ram, cpuUtil: u, memUsedMiB: v.ram, state: v.inMigration ? 'migrating' : 'running' })
  }
  return {
    cpuUtil: util, memUsedMiB: mem, netMbps: 0,
    capacity: { cpuCores: Math.round(h.totalMips / h.peMips), cpuMipsPerCore: h.peMips, memMiB: h.ram, netMbps: h.bw / 1000 },
    vms
  }
}

/**
 * Host i's view from what its core holds: peer j is in it when i's core holds j alive with a
 * report; the content is the simulator's report of j at the step that report was made in.
 */
function coreSnapshotView (cg: CoreGossip, self: number, now: HostView[], past: HostView[][], seqAt: number[][], tick: number, ages: number[] | null): ClusterView {
  const hosts: HostView[] = []
  for (let j = 0; j < now.length; j++) {
    if (j === self) { hosts.push(now[j] as HostView); continue }
    const held = cg.held(self, j)
    if (held === null || held.state !== 'alive') { if (ages !== null) (ages[AGE_SLOTS - 1] as number)++; continue }
    // the step the held report was made in: the first step whose end saw j's seq reach it
    const sj = seqAt[j] as number[]
    let step = tick
    while (step > 1 && (sj[step - 1] ?? 0) >= held.seq) step--
    const age = tick - step
    if (ages !== null) (ages[Math.min(age, AGE_SLOTS - 2)] as number)++
    const snap = past[Math.min(age, past.length - 1)] as HostView[]
    hosts.push(snap[j] as HostView)
  }
  return { hosts, rules: NO_RULES, tick }
}

/** Host i's view as its agent's scheduler builds it (member ids are the simulator's host ids, VM ids its VM ids). */
function agentView (cg: CoreGossip, self: number, tick: number): ClusterView {
  const v = cg.agentView(self)
  return { hosts: v.hosts, rules: v.rules, tick }
}

/** What target `h` knows of itself, from the simulator's state, in the agent core's AdmissionInput. */
function admissionInput (s: TraceSim, h: SimHost, granted: ReadonlyArray<{ vm: string, memMiB: number, cpuDemandMips: number }>,
  leaving: readonly string[], evacuating: boolean, inFlight: number, opt: DecentralOptions, capFrac: number): AdmissionInput {
  const residents = []
  for (const id of h.vms) {
    if (h.migIn.includes(id)) continue
    const v = s.vms[id] as SimVm
    residents.push({ id: String(id), vcpus: 1, memMiB: v.ram, cpuUtil: s.requested(v) / h.totalMips, memUsedMiB: v.ram, state: 'running' as const })
  }
  return {
    self: String(h.id),
    capacity: { cpuCores: Math.round(h.totalMips / h.peMips), cpuMipsPerCore: h.peMips, memMiB: h.ram, netMbps: h.bw / 1000 },
    residents,
    reservations: granted,
    outgoing: leaving,
    incomingCount: granted.length,
    inMax: opt.inMax,
    clusterInFlight: inFlight,
    clusterMax: opt.clusterMax,
    draining: false,
    evacuating,
    cpuCapFraction: capFrac,
    rules: NO_RULES,
    rulesAgreed: true
  }
}

/**
 * Independent check of one step's admitted moves against the simulator's own state (not the
 * admission's bookkeeping): for every target, the RAM of all VMs it holds plus the RAM of the
 * VMs admitted to it must fit its RAM, and the current demand of the VMs that stay plus that of
 * the admitted VMs must fit `cpuCapFraction` of its CPU, each admitted VM within one core. Returns
 * the number of targets that break either.
 */
export function checkAdmissions (sim: TraceSim, moves: ReadonlyArray<readonly [number, number]>, cpuCapFraction: number): number {
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
    if (sim.ramHeld(h) + r > h.ram || stay + (inCpu.get(tgt) ?? 0) > h.totalMips * cpuCapFraction + 1e-6) bad++
  }
  return bad
}

function viewFor (self: number, now: HostView[], past: HostView[][], opt: DecentralOptions, prng: Prng, tick: number, ages: number[] | null): ClusterView {
  const hosts: HostView[] = new Array(now.length)
  for (let j = 0; j < now.length; j++) {
    if (j === self) { hosts[j] = now[j] as HostView; continue }
    let age = opt.viewAgeSteps
    while (age < opt.viewAgeSteps + opt.maxAgeSteps && prng.chance(opt.lossP)) age++
    if (ages !== null) (ages[Math.min(age, AGE_SLOTS - 2)] as number)++
    const snap = past[Math.min(age, past.length - 1)] as HostView[]
    hosts[j] = snap[j] as HostView
  }
  return { hosts, rules: NO_RULES, tick }
}
