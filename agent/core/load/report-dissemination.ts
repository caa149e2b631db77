/**
 * Load report dissemination, designed for bytes: (1) infect-and-die push: a host forwards each
 * report it learns first by push, once, to reportFanout random peers, batched per gossip round;
 * (2) pull anti-entropy of versions: every reportPullIntervalTicks a host names the members whose
 * report is missing (none for reportIntervalTicks + grace) to one random peer, which answers with
 * the newer reports it holds. Pulled reports are not forwarded. Seqs are leased in blocks that are
 * persisted before any report using them is sent.
 */
import type { Gossip, ReportDigest } from '../messages.js'
import { KEY_REPORT_SEQ_CEILING } from '../persisted.js'
import type { CoreState } from '../state.js'
import type { HostId, LoadReport } from '../types.js'
import { reportBytes } from '../wire-size.js'
import { holtForecast, LoadHistory } from './load-history.js'

export class ReportGossip {
  readonly history: LoadHistory
  private seq: number
  private seqCeiling: number
  private nextReportTick: number
  private nextPullTick: number
  /** Reports to push on the next gossip round (one per host: newer replaces older). */
  private readonly pushBuf = new Map<HostId, LoadReport>()

  constructor (private readonly s: CoreState, restoredCeiling: number) {
    const c = s.config
    this.history = new LoadHistory(c.loadHistoryMax)
    this.seq = restoredCeiling
    this.seqCeiling = restoredCeiling
    this.nextReportTick = s.prng.int(c.reportIntervalTicks) + 1
    this.nextPullTick = c.reportIntervalTicks + s.prng.int(c.reportPullIntervalTicks) + 1
  }

  get pending (): number { return this.pushBuf.size }

  tick (): void {
    const s = this.s
    if (s.now >= this.nextReportTick) {
      this.nextReportTick = s.now + s.config.reportIntervalTicks
      this.makeReport()
    }
    if (s.now >= this.nextPullTick) {
      this.nextPullTick = s.now + s.config.reportPullIntervalTicks
      this.pull()
    }
  }

  /**
   * The earliest tick at which tick() may act: the next report, or the first pull round at which
   * some alive member's report has gone stale (pull() sends nothing before that).
   */
  nextDue (): number {
    const s = this.s
    const c = s.config
    let oldest = Infinity
    for (const m of s.members.byId.values()) if (m.id !== s.self && m.state === 'alive' && m.reportTick < oldest) oldest = m.reportTick
    let pull = Infinity
    if (oldest !== Infinity) {
      const staleAt = oldest + c.reportIntervalTicks + c.reportStaleGraceTicks
      pull = staleAt <= this.nextPullTick ? this.nextPullTick : this.nextPullTick + Math.ceil((staleAt - this.nextPullTick) / c.reportPullIntervalTicks) * c.reportPullIntervalTicks
    }
    return Math.min(this.nextReportTick, pull)
  }

  /** A new host sample; the very first one is reported at once so the view is never empty. */
  onSample (sample: Parameters<LoadHistory['add']>[0]): void {
    this.history.add(sample)
    if (this.s.selfMember.report === null) {
      this.makeReport()
      this.nextReportTick = this.s.now + this.s.config.reportIntervalTicks
    }
  }

  private makeReport (): void {
    const s = this.s
    const c = s.config
    this.history.closeInterval()
    const x = this.history.latest
    if (x === null || s.leaving) return
    this.seq++
    if (this.seq > this.seqCeiling) {
      this.seqCeiling = this.seq + c.reportSeqLease - 1
      s.persist(KEY_REPORT_SEQ_CEILING, this.seqCeiling)
    }
    const cap = x.capacity
    const report: LoadReport = {
      host: s.self,
      seq: this.seq,
      capacity: cap,
      cpuUtil: x.cpuUtil,
      memUtil: cap.memMiB > 0 ? x.memUsedMiB / cap.memMiB : 0,
      netUtil: cap.netMbps > 0 ? x.netMbps / cap.netMbps : 0,
      forecastCpu: holtForecast(this.history.intervalMeans, c.forecastAlpha, c.forecastBeta, c.forecastHorizon),
      vms: x.vms
    }
    if (s.rulesHash !== '') report.rulesHash = s.rulesHash
    if (x.memory !== undefined) report.memory = x.memory
    if (x.cpuResolved === true) report.cpuResolved = true
    const me = s.selfMember
    me.report = report
    me.reportTick = s.now
    s.counters.reportsMade++
    this.pushBuf.set(s.self, report)
  }

  /** Accept a report if newer; returns true when it was new. Pushed reports are forwarded once. */
  accept (r: LoadReport, pushed: boolean): boolean {
    const s = this.s
    if (r.host === s.self) return false
    const m = s.members.get(r.host)
    if (m === undefined) return false
    if (m.report !== null && m.report.seq >= r.seq) return false
    m.report = r
    m.reportTick = s.now
    s.counters.reportsAccepted++
    if (pushed && m.state !== 'dead' && m.state !== 'left') this.pushBuf.set(r.host, r)
    return true
  }

  /** Gossip round: take the push buffer (to go to reportFanout peers), within one frame. */
  takePush (): Gossip[] {
    const s = this.s
    if (this.pushBuf.size === 0) return []
    const budget = s.config.frameBytesMax - s.config.gossipBytesMax - 256
    const items: Gossip[] = []
    let used = 0
    for (const r of this.pushBuf.values()) {
      const b = reportBytes(r) + 8
      if (used + b > budget) { s.counters.reportDrops++; continue }
      used += b
      items.push({ type: 'report', report: r })
    }
    this.pushBuf.clear()
    return items
  }

  /** Name the members whose report is missing to one random peer of the active view. */
  private pull (): void {
    const s = this.s
    const c = s.config
    if (s.members.reachableCount === 0 || s.leaving) return
    const staleBefore = s.now - c.reportIntervalTicks - c.reportStaleGraceTicks
    const want: ReportDigest[] = []
    for (const m of s.members.byId.values()) {
      if (m.id === s.self || m.state !== 'alive' || m.reportTick > staleBefore) continue
      want.push({ host: m.id, seq: m.report?.seq ?? 0 })
      if (want.length >= c.reportPullMax) break
    }
    if (want.length === 0) return
    const peer = s.view.random(s.prng, 1)[0]
    if (peer === undefined) return
    s.counters.reportPulls++
    s.send(peer, { type: 'reportPull', want })
  }

  /** Answer a pull with every newer report we hold, within one frame. */
  onPull (from: HostId, want: ReportDigest[]): void {
    const s = this.s
    const budget = s.config.frameBytesMax - s.config.gossipBytesMax - 256
    const reports: LoadReport[] = []
    let used = 0
    for (const d of want) {
      const m = s.members.get(d.host)
      const r = m?.report
      if (r == null || r.seq <= d.seq) continue
      const b = reportBytes(r) + 4
      if (used + b > budget) break
      used += b
      reports.push(r)
    }
    if (reports.length === 0) return
    s.send(from, { type: 'pushPull', reply: true, members: [], reports })
  }
}
