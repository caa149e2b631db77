/**
 * The page sharing loop of one host, a step at every memory sample (the balloon loop calls it with
 * the host's memory as it counts it): asks the KSM policy (policies/ksm.ts) whether KSM should run
 * and how fast ksmd should scan, and writes the settings that changed to /sys/kernel/mm/ksm.
 *
 * It starts from the settings the kernel has (an operator's KSM that already runs is the state the
 * policy continues from), never throws out of step() (a failed write is counted and logged, and
 * retried at the next step), and restore() puts back the operator's settings when the agent stops.
 */
import type { Logger } from '../ports/logger.js'
import type { HostMemoryFacts } from '../ports/memory.js'
import { baseSleepMs, decideKsm, type KsmControl, type KsmDecision, type KsmParams } from '../../policies/ksm.js'
import type { KsmSettings } from '../adapters/ksm-sysfs.js'
import type { KsmCounters } from '../api/memory.js'

export interface KsmControllerComponents {
  sysfs: { apply: (s: KsmSettings) => Promise<void>, restore: () => Promise<string[]> }
  logger: Logger
}

export class KsmController {
  readonly counters: KsmCounters = { steps: 0, starts: 0, stops: 0, rateChanges: 0, cpuLimited: 0, applyErrors: 0 }
  private control: KsmControl | null = null
  private lastDecision: KsmDecision | null = null
  private readonly log: Logger

  constructor (readonly params: KsmParams, private readonly c: KsmControllerComponents) {
    this.log = c.logger.forComponent('agent:ksm')
  }

  /** The decision of the last step; null before the first. */
  decision (): KsmDecision | null { return this.lastDecision }

  /**
   * One step. `host` is the host's memory as the balloon loop counts it, `ksm` the kernel's KSM
   * facts now, `cpuShare` ksmd's CPU since the last sample (fraction of one core).
   */
  async step (host: { totalMiB: number, usedMiB: number, committedMiB: number, physicalMiB?: number }, ksm: NonNullable<HostMemoryFacts['ksm']>, cpuShare: number | null): Promise<KsmDecision & { applied: boolean }> {
    // Continue from what the kernel does now (set by us, or by the operator before we started).
    const prev: KsmControl = this.control ?? {
      run: ksm.run === 1,
      pagesToScan: ksm.pagesToScan ?? this.params.minPagesToScan,
      sleepMs: ksm.sleepMs ?? baseSleepMs(host.physicalMiB ?? host.totalMiB, this.params)
    }
    const d = decideKsm({ ...host, cpuShare }, prev, this.params)
    this.counters.steps++
    if (d.cpuLimited) this.counters.cpuLimited++
    this.lastDecision = d
    const settings: KsmSettings = {
      run: d.run ? 1 : 0,
      ...(d.advisor
        ? { advisor: { maxCpuPercent: this.params.maxCpuPercent, minPages: this.params.minPagesToScan, maxPages: this.params.maxPagesToScan, targetScanS: this.params.advisorTargetScanS } }
        : { pagesToScan: d.pagesToScan, sleepMs: d.sleepMs, ...(ksm.advisor !== null ? { advisor: null } : {}) })
    }
    try {
      await this.c.sysfs.apply(settings)
    } catch (err) {
      this.counters.applyErrors++
      this.log.warn('KSM settings could not be written; tried again at the next step', { err })
      return { ...d, applied: false }
    }
    const was = this.control
    if (d.run && !(was?.run ?? ksm.run === 1)) {
      this.counters.starts++
      this.log.info(`KSM started (${d.reason}: ${Math.round(d.freeMiB)} MiB free of ${Math.round(host.totalMiB)}, ${Math.round(host.committedMiB)} MiB committed)`)
    } else if (!d.run && (was?.run ?? ksm.run === 1)) {
      this.counters.stops++
      this.log.info(`KSM stopped: not needed (${Math.round(d.freeMiB)} MiB free of ${Math.round(host.totalMiB)})`)
    }
    if (was !== null && (was.pagesToScan !== d.pagesToScan || was.sleepMs !== d.sleepMs)) this.counters.rateChanges++
    this.control = { run: d.run, pagesToScan: d.pagesToScan, sleepMs: d.sleepMs }
    return { ...d, applied: true }
  }

  /** Puts back the KSM settings found at the first step. Never throws. */
  async restore (): Promise<void> {
    const failed = await this.c.sysfs.restore()
    if (failed.length > 0) this.log.warn(`KSM settings not all restored: ${failed.join('; ')}`)
    this.control = null
  }
}
