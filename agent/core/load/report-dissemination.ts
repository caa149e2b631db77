/**
 * Load report dissemination, designed for bytes and frames: (1) infect-and-die push: a host
 * forwards each report it learns first by push, once, to reportFanout peers of its active view.
 * The push rides on frames that go to view members anyway (probes, acks, membership gossip,
 * configuration announcements: CoreState.rider); a report that has not reached reportFanout peers
 * after reportPushWaitTicks goes out at the next gossip round in a frame of its own. Every host
 * learns every host's report, so the reports are O(n) per host whatever is done; what need not
 * grow with n is the number of frames: each dedicated push frame costs a send, an encryption, a
 * stream packet and its acknowledgement on both ends, about what the bytes inside it cost.
 * (2) pull anti-entropy of versions: every reportPullIntervalTicks a host names the members whose
 * report is missing (none for reportIntervalTicks + grace) to one random peer, which answers with
 * the newer reports it holds. Pulled reports are not forwarded. Seqs are leased in blocks that are
 * persisted before any report using them is sent.
 */
import type { Gossip, ReportDigest } from '../messages.js'
import { KEY_REPORT_SEQ_CEILING } from '../persisted.js'
import type { CoreState } from '../state.js'
import type { HostId, LoadReport } from '../types.js'

/** A report waiting to be pushed: the peers it went to so far, the tick from which it may go in a frame of its own. */
interface PendingPush { report: LoadReport, bytes: number, to: HostId[], dueAt: number, from: HostId | null }
import { reportBytes } from '../wire-size.js'
import { holtForecast, LoadHistory } from './load-history.js'

export class ReportGossip {
  readonly history: LoadHistory
  private seq: number
  private seqCeiling: number
  private nextReportTick: number
  private nextPullTick: number
  /** Reports to push (one per host: newer replaces older), until each has gone to reportFanout peers. */
  private readonly pushBuf = new Map<HostId, PendingPush>()
  /** oldestAliveReportTick()'s cache: the tick, the member it belongs to, the stateVersion it was computed at. */
  private oldest: { version: number, tick: number, id: HostId | null } | null = null

  constructor (private readonly s: CoreState, restoredCeiling: number) {
    const c = s.config
    this.history = new LoadHistory(c.loadHistoryMax)
    this.seq = restoredCeiling
    this.seqCeiling = restoredCeiling
    this.nextReportTick = s.prng.int(c.reportIntervalTicks) + 1
    this.nextPullTick = c.reportIntervalTicks + s.prng.int(c.reportPullIntervalTicks) + 1
  }

  get pending (): number { return this.pushBuf.size }

  /** The earliest tick at which a pending report may go in a frame of its own (Infinity: none pending). */
  pushDueAt (): number {
    let at = Infinity
    for (const p of this.pushBuf.values()) if (p.dueAt < at) at = p.dueAt
    return at
  }

  /** Is some pending report due (it may go in a frame of its own) and not yet sent to `to`? */
  dueFor (to: HostId): boolean {
    const now = this.s.now
    for (const [h, p] of this.pushBuf) if (p.dueAt <= now && skips(h, p, to) === false) return true
    return false
  }

  /**
   * from: the member that pushed it to us (it is not sent back there), null for our own. With no
   * view member there is nobody to push to: the report is not kept waiting (and waking) for one.
   */
  private queuePush (r: LoadReport, from: HostId | null): void {
    if (this.s.view.count === 0) { this.pushBuf.delete(r.host); return }
    this.pushBuf.set(r.host, { report: r, bytes: reportBytes(r) + 8, to: [], dueAt: this.s.now + this.s.config.reportPushWaitTicks, from })
  }

  /**
   * The pending reports a frame to view member `to` carries: those not yet sent to it (nor its
   * own, nor those it pushed to us), within the frame's report budget; each goes to reportFanout distinct peers, then leaves
   * the buffer.
   */
  ride (to: HostId): Gossip[] {
    const s = this.s
    if (this.pushBuf.size === 0) return []
    const budget = s.config.frameBytesMax - s.config.gossipBytesMax - 256
    const items: Gossip[] = []
    let used = 0
    for (const [h, p] of this.pushBuf) {
      if (skips(h, p, to) || used + p.bytes > budget) continue
      used += p.bytes
      items.push({ type: 'report', report: p.report })
      p.to.push(to)
      if (p.to.length >= s.config.reportFanout) this.pushBuf.delete(h)
    }
    return items
  }

  /**
   * After a gossip round: the due reports still short of reportFanout peers (a view smaller than
   * the fanout, or no room in any frame) are not pushed further; those sent to nobody count as
   * dropped.
   */
  endRound (): void {
    const now = this.s.now
    for (const [h, p] of this.pushBuf) {
      if (p.dueAt > now) continue
      if (p.to.length === 0) this.s.counters.reportDrops++
      this.pushBuf.delete(h)
    }
  }

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
    const oldest = this.oldestAliveReportTick()
    let pull = Infinity
    if (oldest !== Infinity) {
      const staleAt = oldest + c.reportIntervalTicks + c.reportStaleGraceTicks
      pull = staleAt <= this.nextPullTick ? this.nextPullTick : this.nextPullTick + Math.ceil((staleAt - this.nextPullTick) / c.reportPullIntervalTicks) * c.reportPullIntervalTicks
    }
    return Math.min(this.nextReportTick, pull)
  }

  /**
   * The oldest reportTick among alive members other than self (Infinity: none), cached: it changes
   * only when a member's state changes (stateVersion) or the member holding it gets a newer report
   * (accept() raises one member's reportTick, which leaves the minimum of the others as it was).
   */
  private oldestAliveReportTick (): number {
    const s = this.s
    const c = this.oldest
    if (c !== null && c.version === s.members.stateVersion) return c.tick
    let tick = Infinity
    let id: HostId | null = null
    for (const m of s.members.byId.values()) if (m.id !== s.self && m.state === 'alive' && m.reportTick < tick) { tick = m.reportTick; id = m.id }
    this.oldest = { version: s.members.stateVersion, tick, id }
    return tick
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
    this.queuePush(report, null)
  }

  /**
   * Accept a report if newer; returns true when it was new. Pushed reports (pushedBy: the member
   * that pushed it; null: pulled) are forwarded once, never back to that member.
   */
  accept (r: LoadReport, pushedBy: HostId | null): boolean {
    const s = this.s
    if (r.host === s.self) return false
    const m = s.members.get(r.host)
    if (m === undefined) return false
    if (m.report !== null && m.report.seq >= r.seq) return false
    m.report = r
    m.reportTick = s.now
    if (this.oldest?.id === r.host) this.oldest = null
    s.counters.reportsAccepted++
    if (pushedBy !== null && m.state !== 'dead' && m.state !== 'left') this.queuePush(r, pushedBy)
    return true
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

/** A pending report does not go to `to` when it is `to`'s own (host h), came from `to`, or already went there. */
function skips (h: HostId, p: PendingPush, to: HostId): boolean {
  return h === to || p.from === to || p.to.includes(to)
}
