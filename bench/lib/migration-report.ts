/**
 * Medians per guest and policy, and the issue's targets judged against them (on the medians;
 * the worst heartbeat gap is reported beside).
 */
import { MiB, type GuestName, type PolicyName, type RunResult } from './migration-run.js'

export function median (xs: readonly number[]): number | null {
  const s = xs.filter(x => Number.isFinite(x)).sort((a, b) => a - b)
  if (s.length === 0) return null
  const m = Math.floor(s.length / 2)
  return s.length % 2 === 1 ? s[m] as number : ((s[m - 1] as number) + (s[m] as number)) / 2
}

const r1 = (x: number | null): number | null => x === null ? null : Math.round(x * 10) / 10
const r2 = (x: number | null): number | null => x === null ? null : Math.round(x * 100) / 100

export interface CaseSummary {
  runs: number
  completed: number
  notConverged: number
  failedOrError: number
  modes: string[]
  /** Medians over the completed runs. */
  totalMs: number | null
  totalOverPhysicalLimit: number | null
  downtimeHeartbeatMs: number | null
  downtimeHeartbeatMaxMs: number | null
  downtimeGuestClockMs: number | null
  downtimeQemuMs: number | null
  maxStallAfterSwitchMs: number | null
  ramTransferredMiB: number | null
  wireMiB: number | null
  /** The bytes actually put on the link (median) at the link rate, ms: the floor for what was sent. */
  wireAtLinkRateMs: number | null
  dirtySyncs: number | null
  dirtyRateMiBps: number | null
  integrityHeldEveryRun: boolean
  /** Runs whose guest memory held (on the target, or on the source after a cancel). */
  intact: number
}

export type Summary = Partial<Record<GuestName, Partial<Record<PolicyName, CaseSummary>>>>

export function summarizeCase (runs: readonly RunResult[], physicalLimitMs: number, linkBitsPerS: number): CaseSummary {
  const done = runs.filter(r => r.outcome === 'completed')
  const med = (f: (r: RunResult) => number | null): number | null => median(done.map(f).filter((x): x is number => x !== null))
  const total = med(r => r.totalMs)
  const wire = med(r => r.wireBytes)
  const hb = done.map(r => r.downtimeHeartbeatMs).filter((x): x is number => x !== null)
  return {
    runs: runs.length,
    completed: done.length,
    notConverged: runs.filter(r => r.outcome === 'not-converged').length,
    failedOrError: runs.filter(r => r.outcome === 'failed' || r.outcome === 'error' || r.outcome === 'rejected').length,
    modes: [...new Set(runs.map(r => r.mode).filter(m => m !== ''))],
    totalMs: r1(total),
    totalOverPhysicalLimit: total === null ? null : r2(total / physicalLimitMs),
    downtimeHeartbeatMs: r1(median(hb)),
    downtimeHeartbeatMaxMs: hb.length === 0 ? null : r1(Math.max(...hb)),
    downtimeGuestClockMs: r1(med(r => r.downtimeGuestClockMs)),
    downtimeQemuMs: r1(med(r => r.downtimeQemuMs)),
    maxStallAfterSwitchMs: r1(med(r => r.maxStallAfterSwitchMs)),
    ramTransferredMiB: r1(med(r => r.ramTransferredBytes / MiB)),
    wireMiB: wire === null ? null : r1(wire / MiB),
    wireAtLinkRateMs: wire === null ? null : Math.round(wire * 8 / linkBitsPerS * 1000),
    dirtySyncs: med(r => r.dirtySyncs),
    dirtyRateMiBps: r1(median(runs.map(r => r.dirtyRateMiBps))),
    integrityHeldEveryRun: runs.every(r => r.integrity.ok),
    intact: runs.filter(r => r.integrity.ok).length
  }
}

export function summarize (runs: readonly RunResult[], physicalLimitMs: number, linkBitsPerS: number): Summary {
  const out: Summary = {}
  for (const g of ['idle', 'moderate', 'heavy'] as GuestName[]) {
    for (const p of ['starling', 'qemu-defaults'] as PolicyName[]) {
      const rs = runs.filter(r => r.guest === g && r.policy === p)
      if (rs.length === 0) continue
      const byGuest = out[g] ?? {}
      byGuest[p] = summarizeCase(rs, physicalLimitMs, linkBitsPerS)
      out[g] = byGuest
    }
  }
  return out
}

export interface TargetVerdict {
  target: string
  measured: string
  met: boolean | null
}

/** The issue's targets; `met` is null when the runs needed to judge one were not made. */
export function judgeTargets (s: Summary, runs: readonly RunResult[], physicalLimitMs: number): TargetVerdict[] {
  const out: TargetVerdict[] = []
  const idle = s.idle?.starling
  out.push(idle === undefined
    ? { target: 'idle guest (Starling): total time <= 1.3x the physical limit', measured: 'not run', met: null }
    : {
        target: 'idle guest (Starling): total time <= 1.3x the physical limit',
        measured: `median ${String(idle.totalMs)} ms = ${String(idle.totalOverPhysicalLimit)}x the ${Math.round(physicalLimitMs)} ms limit, ${idle.completed}/${idle.runs} completed`,
        met: idle.completed === idle.runs && idle.totalOverPhysicalLimit !== null && idle.totalOverPhysicalLimit <= 1.3
      })
  const mod = s.moderate?.starling
  out.push(mod === undefined
    ? { target: 'moderate guest (Starling): downtime <= 100 ms', measured: 'not run', met: null }
    : {
        target: 'moderate guest (Starling): downtime <= 100 ms',
        measured: `heartbeat gap median ${String(mod.downtimeHeartbeatMs)} ms (max ${String(mod.downtimeHeartbeatMaxMs)} ms; QEMU says ${String(mod.downtimeQemuMs)} ms), ${mod.completed}/${mod.runs} completed`,
        met: mod.completed === mod.runs && mod.downtimeHeartbeatMs !== null && mod.downtimeHeartbeatMs <= 100
      })
  const heavy = s.heavy?.starling
  out.push(heavy === undefined
    ? { target: 'write-heavy guest (Starling): completes within 3x the physical limit, downtime <= 1 s', measured: 'not run', met: null }
    : {
        target: 'write-heavy guest (Starling): completes within 3x the physical limit, downtime <= 1 s',
        measured: `${heavy.completed}/${heavy.runs} completed; median total ${String(heavy.totalMs)} ms = ${String(heavy.totalOverPhysicalLimit)}x the limit; heartbeat gap median ${String(heavy.downtimeHeartbeatMs)} ms (max ${String(heavy.downtimeHeartbeatMaxMs)} ms); longest stall on the target during post-copy ${String(heavy.maxStallAfterSwitchMs)} ms (median)`,
        met: heavy.completed === heavy.runs && heavy.totalOverPhysicalLimit !== null && heavy.totalOverPhysicalLimit <= 3 &&
          heavy.downtimeHeartbeatMs !== null && heavy.downtimeHeartbeatMs <= 1000
      })
  const heavyQ = s.heavy?.['qemu-defaults']
  out.push(heavyQ === undefined
    ? { target: 'write-heavy guest: QEMU defaults do not complete', measured: 'not run', met: null }
    : {
        target: 'write-heavy guest: QEMU defaults do not complete',
        measured: `${heavyQ.completed}/${heavyQ.runs} completed, ${heavyQ.notConverged} not converged within the cap`,
        met: heavyQ.completed === 0 && heavyQ.notConverged === heavyQ.runs
      })
  const broken = runs.filter(r => !r.integrity.ok)
  out.push({
    target: 'guest memory intact in every run',
    measured: broken.length === 0
      ? `${runs.length}/${runs.length} runs intact`
      : `${runs.length - broken.length}/${runs.length} intact; broken: ${broken.map(r => `${r.guest}/${r.policy}#${r.run}: ${r.integrity.detail}`).join('; ')}`,
    met: broken.length === 0
  })
  return out
}
