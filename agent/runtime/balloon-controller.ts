/**
 * The balloon loop of one host, run at every host sample: gathers the memory facts (the host's
 * from the kernel, each running guest's from its hypervisor), asks the balloon policy
 * (policies/balloon.ts) for targets and applies them. It keeps the last picture for the operator
 * (starling memory, metrics) and counts what it did.
 *
 * It never throws out of step(): a VM whose facts cannot be read is left alone this step and the
 * failure is counted and logged; a VM without a balloon device is reported as such (once in the
 * log, naming the field when the configuration asked to balloon it) and never touched.
 */
import type { HostMemoryReport, VmId, VmSummary } from '../core/index.js'
import type { Logger } from '../ports/logger.js'
import type { BalloonDriver, HostMemoryFacts, VmMemoryFacts } from '../ports/memory.js'
import { decideBalloon, type BalloonChange, type BalloonVm } from '../../policies/balloon.js'
import { memoryVmSettings, type MemorySection } from './memory-setup.js'
import type { BalloonCounters, KsmStatus, MemoryStatus, VmMemoryStatus } from '../api/memory.js'
import type { KsmController } from './ksm-controller.js'

export type { BalloonCounters, MemoryStatus, VmMemoryStatus } from '../api/memory.js'

/** The part of the memory picture a host gossips (whole MiB; pressure as a fraction). */
export function hostMemoryReport (h: MemoryStatus['host'], ballooning: boolean): HostMemoryReport {
  return {
    committedMiB: Math.round(h.committedMiB),
    balloonedMiB: Math.round(h.balloonedMiB),
    reclaimableMiB: Math.floor(h.reclaimableMiB),
    // Short of memory only counts while the balloons are driven: with memory.balloon off the
    // policy's shortfall is a what-if, and must not move VMs. Sustained host pressure is no
    // what-if: with nothing reclaimed by balloons, all it asks for is unmet.
    unmetMiB: ballooning ? Math.ceil(h.unmetMiB) : (h.pressured ? Math.ceil(h.pressureWantMiB) : 0),
    pressure: Math.min(1, Math.max(0, (h.pressureSome10 ?? 0) / 100)),
    ksmSavedMiB: Math.round(h.ksm?.savedMiB ?? 0),
    ksmCpu: Math.min(1, Math.max(0, h.ksm?.cpuShare ?? 0))
  }
}

export interface BalloonControllerComponents {
  driver: BalloonDriver
  host: { read: (signal?: AbortSignal) => Promise<HostMemoryFacts> }
  logger: Logger
  /** Wall clock, ms (tests and benchmarks may step it). @default Date.now */
  now?: () => number
  /** The policy (a benchmark runs another one beside it). @default decideBalloon */
  decide?: typeof decideBalloon
  /** The KSM loop, stepped with the host's memory as counted here (memory.ksm); none: KSM is only reported. */
  ksm?: KsmController
}

interface VmState {
  targetMiB: number | null
  swapCount: number | null
  majorFaults: number | null
  lastAtMs: number
  warnedNoBalloon: boolean
}

/** Major faults per second above which a guest counts as short of memory (it re-reads evicted pages). */
const MAJOR_FAULTS_PER_S_PRESSURE = 100

export class BalloonController {
  readonly counters: BalloonCounters = { steps: 0, grows: 0, shrinks: 0, staleShrinks: 0, reclaimedMiB: 0, givenMiB: 0, factErrors: 0, applyErrors: 0 }
  /** Every change applied, newest last (bounded). */
  readonly history: Array<BalloonChange & { atMs: number }> = []
  private readonly state = new Map<VmId, VmState>()
  private last: MemoryStatus | null = null
  /** Samples in a row the host's memory pressure was above the threshold (policies/balloon.ts carries it). */
  private pressureStreak = 0
  private wasPressured = false
  private ksmdCpu: { s: number, atMs: number } | null = null
  private readonly log: Logger
  private readonly now: () => number

  constructor (private readonly m: MemorySection, private readonly c: BalloonControllerComponents) {
    this.log = c.logger.forComponent('agent:balloon')
    this.now = c.now ?? Date.now
  }

  /** The KSM loop this controller steps; undefined when KSM is only reported. */
  get ksm (): KsmController | undefined { return this.c.ksm }

  /** The memory picture of the last step; null before the first. */
  status (): MemoryStatus | null { return this.last }

  /**
   * One step over the VMs of this sample (only running ones are considered). Never throws.
   * `moving`: VMs in a live migration of this host (either end). Their balloons are left as they
   * are, counted at their current size: a balloon that inflates while the memory is copied
   * discards pages under the copy (and one that deflates hands the guest pages the copy must send
   * again), and the guest is leaving anyway.
   */
  async step (vms: readonly VmSummary[], signal?: AbortSignal, moving: ReadonlySet<VmId> = new Set()): Promise<MemoryStatus | null> {
    let hostFacts: HostMemoryFacts
    try { hostFacts = await this.c.host.read(signal) } catch (err) {
      this.counters.factErrors++
      this.log.warn('host memory facts unreadable; balloons left alone', { err })
      return null
    }
    const at = this.now()
    const running = vms.filter(v => v.state === 'running')
    const facts: VmMemoryFacts[] = []
    for (const v of running) {
      try { facts.push(await this.c.driver.memoryFacts(v.id, this.m.statsPollSec, signal)) } catch (err) {
        this.counters.factErrors++
        this.log.warn(`vm ${v.id}: memory facts unreadable; its balloon is left alone`, { err })
      }
    }
    for (const id of [...this.state.keys()]) if (!running.some(v => v.id === id)) this.state.delete(id)

    const policyVms: BalloonVm[] = []
    const rows: VmMemoryStatus[] = []
    let committed = 0; let ballooned = 0; let fixed = 0
    for (const f of facts) {
      const st = this.state.get(f.id) ?? { targetMiB: null, swapCount: null, majorFaults: null, lastAtMs: at, warnedNoBalloon: false }
      this.state.set(f.id, st)
      const set = memoryVmSettings(this.m, f.id, f.maxMiB)
      committed += f.maxMiB
      if (!f.balloon || f.actualMiB === null) {
        fixed += f.maxMiB
        if (!st.warnedNoBalloon) {
          st.warnedNoBalloon = true
          if (this.m.balloon && this.m.vms[f.id] !== undefined) this.log.error(`vm ${f.id}: memory.vms.${f.id} asks to balloon it, but it has no balloon device (or no balloon driver in the guest); it is left alone`)
          else this.log.info(`vm ${f.id}: no balloon device (or no balloon driver in the guest); its memory is not ballooned`)
        }
        rows.push({ id: f.id, maxMiB: f.maxMiB, minMiB: set.minMiB, shares: set.shares, balloon: false, actualMiB: null, targetMiB: null, guestFreeMiB: null, guestTotalMiB: null, statsAgeS: null, stale: true, swapping: false, held: null })
        continue
      }
      ballooned += Math.max(0, f.maxMiB - f.actualMiB)
      const g = f.guest
      const free = g === null ? null : (g.availableMiB ?? g.freeMiB)
      const age = g === null ? null : g.ageS
      const row = (targetMiB: number | null, swapping: boolean, held: string | null): VmMemoryStatus => ({
        id: f.id, maxMiB: f.maxMiB, minMiB: set.minMiB, shares: set.shares, balloon: true, actualMiB: f.actualMiB, targetMiB,
        guestFreeMiB: free, guestTotalMiB: g?.totalMiB ?? null, statsAgeS: age, stale: age === null || age > this.m.policy.statsStaleAfterS, swapping, held
      })
      if (moving.has(f.id)) {
        // Left alone while it moves: what it holds now is fixed for the policy.
        fixed += f.actualMiB
        st.targetMiB = null
        rows.push(row(null, false, 'migrating'))
        continue
      }
      // Swapping: any swap traffic, or many major faults, since the last sample.
      const swaps = g === null ? null : (g.swapInPages ?? 0) + (g.swapOutPages ?? 0)
      const dtS = Math.max(0.001, (at - st.lastAtMs) / 1000)
      const swapping = g !== null && ((swaps !== null && st.swapCount !== null && swaps > st.swapCount) ||
        (g.majorFaults !== null && st.majorFaults !== null && (g.majorFaults - st.majorFaults) / dtS > MAJOR_FAULTS_PER_S_PRESSURE))
      st.swapCount = swaps
      st.majorFaults = g?.majorFaults ?? null
      st.lastAtMs = at
      // A target reached (or given up by the guest) is no longer in flight.
      if (st.targetMiB !== null && Math.abs(st.targetMiB - f.actualMiB) < 1) st.targetMiB = null
      policyVms.push({
        id: f.id, maxMiB: f.maxMiB, minMiB: set.minMiB, shares: set.shares, actualMiB: f.actualMiB,
        targetMiB: st.targetMiB, guestFreeMiB: free, statsAgeS: age, swapping
      })
      rows.push(row(st.targetMiB, swapping, null))
    }
    const totalMiB = this.m.hostMemMiB ?? hostFacts.totalMiB
    const usedMiB = this.m.hostMemMiB !== null
      ? fixed + policyVms.reduce((s, v) => s + v.actualMiB, 0)
      : hostFacts.totalMiB - hostFacts.availableMiB
    const d = (this.c.decide ?? decideBalloon)({ totalMiB, usedMiB, pressureSome10: hostFacts.pressureSome10, pressureStreak: this.pressureStreak }, policyVms, this.m.policy)
    this.pressureStreak = d.hostPressureStreak
    if (d.hostPressured && !this.wasPressured) this.log.warn(`host memory pressure ${hostFacts.pressureSome10 ?? 0}% (some avg10) above memory.policy.hostPressurePercent ${this.m.policy.hostPressurePercent}% for ${d.hostPressureStreak} samples: reclaiming ${Math.round(d.pressureWantMiB)} MiB a step${this.m.balloon ? '' : ' (ballooning off: the host reports it as short of memory)'}`)
    else if (!d.hostPressured && this.wasPressured) this.log.info('host memory pressure back under memory.policy.hostPressurePercent')
    this.wasPressured = d.hostPressured
    for (const h of d.held) { const r = rows.find(x => x.id === h.id); if (r !== undefined) r.held = h.why }
    this.counters.steps++

    const applied: BalloonChange[] = []
    if (this.m.balloon) {
      for (const ch of d.changes) {
        const row = rows.find(r => r.id === ch.id)
        if (ch.targetMiB < ch.fromMiB && row?.stale === true) {
          // The policy never does this; counted so that a regression shows.
          this.counters.staleShrinks++
          this.log.error(`vm ${ch.id}: refusing to shrink a guest whose statistics are stale`)
          continue
        }
        try {
          await this.c.driver.balloon(ch.id, ch.targetMiB, signal)
        } catch (err) {
          this.counters.applyErrors++
          this.log.warn(`vm ${ch.id}: balloon to ${ch.targetMiB} MiB failed`, { err })
          continue
        }
        const st = this.state.get(ch.id)
        if (st !== undefined) st.targetMiB = ch.targetMiB
        if (row !== undefined) row.targetMiB = ch.targetMiB
        if (ch.targetMiB > ch.fromMiB) { this.counters.grows++; this.counters.givenMiB += ch.targetMiB - ch.fromMiB } else { this.counters.shrinks++; this.counters.reclaimedMiB += ch.fromMiB - ch.targetMiB }
        applied.push(ch)
        this.history.push({ ...ch, atMs: at })
        if (this.history.length > 1000) this.history.splice(0, this.history.length - 1000)
        this.log.debug(`vm ${ch.id} balloon ${ch.fromMiB} -> ${ch.targetMiB} MiB (${ch.reason})`)
      }
    }
    // ksmd's CPU share since the last sample, and the KSM step.
    let ksm: KsmStatus | null = null
    const kf = hostFacts.ksm
    if (kf !== null) {
      let cpuShare: number | null = null
      if (kf.ksmdCpuS !== null) {
        if (this.ksmdCpu !== null && at > this.ksmdCpu.atMs) cpuShare = Math.max(0, (kf.ksmdCpuS - this.ksmdCpu.s) / ((at - this.ksmdCpu.atMs) / 1000))
        this.ksmdCpu = { s: kf.ksmdCpuS, atMs: at }
      }
      const { ksmdCpuS: _cpu, ...facts } = kf
      ksm = { ...facts, cpuShare, managed: false, reason: null, cpuLimited: false, budgetPercent: null }
      if (this.c.ksm !== undefined) {
        const k = await this.c.ksm.step({ totalMiB, usedMiB: d.usedMiB, committedMiB: committed, physicalMiB: hostFacts.totalMiB }, kf, cpuShare)
        ksm.managed = true
        ksm.reason = k.reason
        ksm.cpuLimited = k.cpuLimited
        ksm.budgetPercent = this.c.ksm.params.maxCpuPercent
        if (k.applied) {
          ksm.run = k.run ? 1 : 0
          if (!k.advisor) { ksm.pagesToScan = k.pagesToScan; ksm.sleepMs = k.sleepMs }
        }
      }
    }
    this.last = {
      atMs: at,
      host: {
        physicalMiB: hostFacts.totalMiB,
        availableMiB: hostFacts.availableMiB,
        totalMiB,
        usedMiB: d.usedMiB,
        targetMiB: d.targetMiB,
        committedMiB: committed,
        balloonedMiB: ballooned,
        reclaimableMiB: d.reclaimableMiB,
        unmetMiB: d.unmetMiB,
        pressureSome10: hostFacts.pressureSome10,
        pressureFull10: hostFacts.pressureFull10,
        pressured: d.hostPressured,
        pressureWantMiB: d.pressureWantMiB,
        ksm
      },
      vms: rows,
      ballooning: this.m.balloon,
      changes: applied
    }
    return this.last
  }
}
