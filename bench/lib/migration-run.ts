/**
 * One measured live migration of the test guest between two QEMU drivers (source and
 * destination hosts), steered either by Starling's convergence policy or left to QEMU's defaults.
 *
 * A run: boot a fresh guest on the source, wait until it has filled its working set and passed a
 * full integrity check, measure its dirty rate from its own heartbeat counter over one second,
 * start an empty `-incoming` target, migrate, poll `query-migrate` every POLL_MS, and then check
 * the guest on the target (heartbeats continue in sequence, no reboot, no corrupted page, two
 * full integrity passes) or, for a cancelled migration, on the source.
 *
 * Downtime is measured from the guest: the host time between the last heartbeat line read from
 * the source's console and the first read from the target's (the guest prints one every 10 ms, so
 * about 10 ms of the gap is the heartbeat period itself), cross-checked with the guest's own
 * clock across the same two lines and with QEMU's `downtime`.
 */
import type { QemuDriver } from '../../agent/adapters/qemu-driver.js'
import type { MigrationParams, MigrationProgress } from '../../agent/ports/migrating-driver.js'
import {
  defaultConvergencePolicy, initialConvergenceState, planMigration, stepConvergence,
  type ConvergencePolicy, type MigrationPlan
} from '../../agent/core/migration/convergence.js'
import type { VmSpec } from '../../agent/ports/hypervisor-driver.js'
import { guestDirtyRate, SerialMonitor } from './serial-monitor.js'
import { sleep } from '../../test/lib/wait.js'

export const MiB = 1024 * 1024

export type GuestName = 'idle' | 'moderate' | 'heavy'
export type PolicyName = 'starling' | 'qemu-defaults'

export interface GuestCase {
  name: GuestName
  /** Working set the guest rewrites, MiB. */
  wsMiB: number
  /** Rewrite rate, MiB/s; 0 = idle (verify only); 'max' = as fast as the vCPU can. */
  rate: number | 'max'
}

export interface RunContext {
  src: QemuDriver
  dst: QemuDriver
  /** Address the target listens on (the destination host's). */
  listenIp: string
  kernel: string
  initrd: string
  memMiB: number
  /** Link bandwidth given to the planner, bytes/s. */
  plannerBandwidthBytesPerS: number
  /** max-bandwidth given to QEMU under Starling's policy, bytes/s; 0 = none (the link is the cap). */
  starlingMaxBandwidthBytes: number
  /** QEMU-defaults runs still active after this are cancelled and reported as not converged. */
  defaultsCapMs: number
  /** Bytes sent so far by the source host's link (tc counter). */
  txBytes: () => Promise<number>
  /** Progress lines for stderr. */
  say: (msg: string) => void
  /** Fields replacing those of the default convergence policy (experiments; empty = the default). */
  policyOverride?: Partial<ConvergencePolicy>
  /** Multifd channels for Starling's runs (0: off, as the agents run). */
  multifd?: number
}

export interface RunResult {
  guest: GuestName
  policy: PolicyName
  run: number
  outcome: 'completed' | 'not-converged' | 'failed' | 'rejected' | 'error'
  /** Migration mode used: precopy, hybrid (pre-copy with a post-copy fallback) or postcopy. */
  mode: string
  plan: { mode: string, downtimeLimitMs: number, predictedTotalMs: number, predictedDowntimeMs: number, reason: string } | null
  /** Controller actions, in order. */
  actions: string[]
  /** Dirty rate the guest reported just before the migration, MiB/s. */
  dirtyRateMiBps: number
  /** Dirty rate QEMU measured (page sampling, 1 s) just before, MiB/s; the plan's input, as in the agent. */
  dirtyRateQemuMiBps: number
  /** Guest memory resident in the source QEMU before the migration (the plan's first pass), MiB. */
  residentMiB: number | null
  /** QEMU's total-time, ms. */
  totalMs: number | null
  /** Host time from the migrate command to the terminal state being seen, ms. */
  wallMs: number
  /** Heartbeat gap across the hand-over, host clock, ms. */
  downtimeHeartbeatMs: number | null
  /** The same gap on the guest's clock, ms. */
  downtimeGuestClockMs: number | null
  /** QEMU's downtime, ms (unreliable after post-copy). */
  downtimeQemuMs: number | null
  /** Largest heartbeat gap on the target from its first heartbeat to the end of the migration (post-copy faults), ms. */
  maxStallAfterSwitchMs: number | null
  /** QEMU's ram.transferred, bytes. */
  ramTransferredBytes: number
  /** Bytes the source host put on the link during the migration (tc), headers included. */
  wireBytes: number | null
  dirtySyncs: number
  postcopy: boolean
  /** One entry per dirty-bitmap sync seen (and the last sample): time, syncs, MiB left and sent. */
  trace: Array<{ atMs: number, status: string, syncs: number, remainingMiB: number, transferredMiB: number }>
  integrity: { ok: boolean, detail: string }
  error?: string
}

const POLL_MS = 50
/**
 * Guest memory written besides the working set, MiB: the decompressed kernel, the initramfs and
 * its unpacked copy, firmware (the idle guest with a 64 MiB working set sends about 128 MiB of
 * non-zero pages). The rest of the guest's RAM stays zero pages, which the plan counts as almost free.
 */
const GUEST_BASE_MIB = 64
const TERMINAL = new Set(['completed', 'failed', 'cancelled'])
const round1 = (x: number): number => Math.round(x * 10) / 10

function guestSpec (ctx: RunContext, id: string, g: GuestCase): VmSpec {
  return {
    id,
    vcpus: 1,
    memMiB: ctx.memMiB,
    extra: {
      kernel: ctx.kernel,
      initrd: ctx.initrd,
      append: `console=ttyS0 quiet loglevel=3 panic=-1 dirtier_ws=${g.wsMiB} dirtier_rate=${g.rate}`,
      balloon: false
    }
  }
}

/** QEMU 7.2's own defaults, stated explicitly (the driver always sets these two parameters). */
export const QEMU_DEFAULT_PARAMS: MigrationParams = {
  mode: 'precopy',
  maxBandwidthBytes: 128 * MiB,
  downtimeLimitMs: 300,
  autoConverge: false,
  xbzrle: false,
  multifd: 0
}

export async function runMigration (ctx: RunContext, g: GuestCase, policyName: PolicyName, run: number): Promise<RunResult> {
  const id = `${g.name}-${policyName === 'starling' ? 's' : 'q'}${run}`
  const res: RunResult = {
    guest: g.name,
    policy: policyName,
    run,
    outcome: 'error',
    mode: '',
    plan: null,
    actions: [],
    dirtyRateMiBps: NaN,
    dirtyRateQemuMiBps: NaN,
    residentMiB: null,
    totalMs: null,
    wallMs: NaN,
    downtimeHeartbeatMs: null,
    downtimeGuestClockMs: null,
    downtimeQemuMs: null,
    maxStallAfterSwitchMs: null,
    ramTransferredBytes: 0,
    wireBytes: null,
    dirtySyncs: 0,
    postcopy: false,
    trace: [],
    integrity: { ok: false, detail: 'not checked' }
  }
  const spec = guestSpec(ctx, id, g)
  const monitors: SerialMonitor[] = []
  try {
    await ctx.src.start(spec)
    const srcMon = new SerialMonitor(ctx.src.serialPath(id))
    monitors.push(srcMon)
    await srcMon.until('"dirtier ready" on the source', () => srcMon.ready, 90_000)
    await srcMon.until('a full integrity pass on the source', () => srcMon.integrityOkAt.length >= 1 && srcMon.beats.length >= 50, 60_000)
    const rateFrom = performance.now()
    await srcMon.until('one second of heartbeats', () => (srcMon.lastBeat()?.atMs ?? 0) >= rateFrom + 1000, 20_000)
    res.dirtyRateMiBps = guestDirtyRate(srcMon.beats, 1000) / MiB
    // The agent plans from QEMU's own measurement (the guest's figure is the cross-check).
    const dirtyRate = await ctx.src.measureDirtyRate(id)
    res.dirtyRateQemuMiBps = dirtyRate / MiB

    const starling = policyName === 'starling'
    const policy: ConvergencePolicy = { ...defaultConvergencePolicy(ctx.src.accel, 'postcopy'), ...ctx.policyOverride }
    let params: MigrationParams = QEMU_DEFAULT_PARAMS
    let plan: MigrationPlan | null = null
    if (starling) {
      // The same inputs as the agent's plan: QEMU's dirty rate, the resident guest memory the
      // driver reads, the link; the guest's working set is not known to an agent.
      const resident = ctx.src.residentGuestBytes(id)
      res.residentMiB = resident === null ? null : round1(resident / MiB)
      plan = planMigration({
        memBytes: ctx.memMiB * MiB,
        residentBytes: resident ?? Math.min(ctx.memMiB, g.wsMiB + GUEST_BASE_MIB) * MiB,
        dirtyRateBytesPerS: dirtyRate,
        bandwidthBytesPerS: ctx.plannerBandwidthBytesPerS
      }, policy)
      res.plan = {
        mode: plan.mode,
        downtimeLimitMs: plan.downtimeLimitMs,
        predictedTotalMs: Math.round(plan.estimate.totalMs),
        predictedDowntimeMs: Math.round(plan.estimate.downtimeMs),
        reason: plan.reason
      }
      if (plan.mode === 'reject') {
        res.outcome = 'rejected'
        res.integrity = { ok: true, detail: 'not migrated' }
        return res
      }
      const mode = plan.mode === 'postcopy' ? (policy.postcopyAtOnce ? 'postcopy' : 'hybrid') : plan.mode
      // The sync cap goes to the driver as the agent passes it (enforced at the switch-over).
      params = { mode, maxBandwidthBytes: ctx.starlingMaxBandwidthBytes, downtimeLimitMs: plan.downtimeLimitMs, autoConverge: false, xbzrle: false, multifd: ctx.multifd ?? 0, maxDirtySyncs: policy.maxDirtySyncs }
    }
    res.mode = params.mode

    const { uri } = await ctx.dst.prepareIncoming(spec, `${ctx.listenIp}:0`, { postcopy: params.mode !== 'precopy', ...(params.multifd > 1 ? { multifd: params.multifd } : {}) })
    const dstMon = new SerialMonitor(ctx.dst.serialPath(id))
    monitors.push(dstMon)
    const tx0 = await ctx.txBytes()
    const t0 = performance.now()
    await ctx.src.migrate(id, uri, { ...params, targetPostcopy: params.mode !== 'precopy' })
    let state = plan !== null ? initialConvergenceState(plan, policy) : null
    let p: MigrationProgress
    let cancelled = false
    let postcopyAt: number | null = null
    let lastActive: MigrationProgress | null = null
    const note = (q: MigrationProgress): void => {
      res.trace.push({ atMs: q.totalTimeMs, status: q.status, syncs: q.dirtySyncCount, remainingMiB: round1(q.remainingBytes / MiB), transferredMiB: round1(q.transferredBytes / MiB) })
    }
    for (;;) {
      p = await ctx.src.progress(id)
      if (TERMINAL.has(p.status)) break
      if (p.dirtySyncCount !== lastActive?.dirtySyncCount || p.status !== lastActive.status) note(p)
      lastActive = p
      if (p.status === 'postcopy-active' && postcopyAt === null) postcopyAt = performance.now()
      if (state !== null && plan !== null) {
        const step = stepConvergence(state, p, policy, plan.timeoutMs)
        state = step.state
        const a = step.action
        if (a.kind !== 'none') {
          res.actions.push(`${a.kind}${a.kind === 'setDowntime' ? ` ${a.downtimeLimitMs} ms` : ''} at ${p.totalTimeMs} ms: ${a.reason}`)
          if (a.kind === 'setDowntime') await ctx.src.setDowntimeLimit(id, a.downtimeLimitMs)
          else if (a.kind === 'startPostcopy') await ctx.src.startPostcopy(id)
          else { cancelled = true; await ctx.src.cancel(id) }
        }
      } else if (!cancelled && performance.now() - t0 > ctx.defaultsCapMs) {
        res.actions.push(`cancel at ${p.totalTimeMs} ms: still ${p.status} after the ${ctx.defaultsCapMs} ms cap (${p.dirtySyncCount} syncs, ${(p.remainingBytes / MiB).toFixed(1)} MiB left)`)
        cancelled = true
        await ctx.src.cancel(id)
      }
      await sleep(POLL_MS)
    }
    res.wallMs = performance.now() - t0
    res.wireBytes = (await ctx.txBytes()) - tx0
    note(p)
    // A cancelled migration reports no figures: keep the last ones seen while it ran.
    const figures = p.status === 'completed' || lastActive === null ? p : lastActive
    res.totalMs = p.status === 'completed' ? p.totalTimeMs : null
    res.downtimeQemuMs = p.downtimeMs
    res.ramTransferredBytes = figures.transferredBytes
    res.dirtySyncs = figures.dirtySyncCount
    res.postcopy = postcopyAt !== null || params.mode === 'postcopy'
    const endAt = performance.now()

    if (p.status === 'completed') {
      res.outcome = 'completed'
      res.integrity = await checkTarget(res, srcMon, dstMon, endAt)
    } else {
      res.outcome = cancelled ? 'not-converged' : 'failed'
      if (!cancelled) res.error = p.errorDesc ?? `migration ${p.status}`
      res.integrity = await checkSourceAfterCancel(srcMon)
    }
    return res
  } catch (err) {
    res.outcome = 'error'
    res.error = err instanceof Error ? err.message : String(err)
    if (res.integrity.detail === 'not checked') res.integrity = { ok: false, detail: `run failed: ${res.error}` }
    return res
  } finally {
    for (const m of monitors) m.close()
    await ctx.dst.kill(id).catch(() => {})
    await ctx.src.kill(id).catch(() => {})
  }
}

/** After a completed migration: the guest goes on on the target with its memory intact. */
async function checkTarget (res: RunResult, srcMon: SerialMonitor, dstMon: SerialMonitor, endAt: number): Promise<{ ok: boolean, detail: string }> {
  const problems: string[] = []
  try {
    await dstMon.until('heartbeats on the target', () => dstMon.beats.length >= 5, 20_000)
  } catch (err) {
    return { ok: false, detail: (err as Error).message }
  }
  srcMon.read()
  const last = srcMon.lastBeat()
  const first = dstMon.beats[0]
  if (last === undefined || first === undefined) return { ok: false, detail: 'no heartbeat to compare' }
  res.downtimeHeartbeatMs = first.atMs - last.atMs
  res.downtimeGuestClockMs = (first.guestS - last.guestS) * 1000
  res.maxStallAfterSwitchMs = dstMon.maxGapMs(first.atMs, Math.max(endAt, first.atMs))
  // One beat may be missing: a line the source had begun printing when it stopped is finished by
  // the target's serial port, so neither console holds it whole. More than that, or a sequence
  // going back, means the guest lost state.
  const notes: string[] = []
  if (first.seq <= last.seq || first.seq > last.seq + 2) problems.push(`heartbeat sequence jumps from ${last.seq} (source) to ${first.seq} (target)`)
  else if (first.seq === last.seq + 2) notes.push(`beat ${last.seq + 1} split across the hand-over`)
  try {
    // The first "ok" may close a pass begun on the source; the second is a pass made entirely on the target.
    await dstMon.until('two integrity passes on the target', () => dstMon.integrityOkAt.length >= 2, 30_000)
  } catch (err) {
    problems.push((err as Error).message)
  }
  dstMon.read()
  if (dstMon.starts > 0) problems.push('the guest rebooted on the target')
  if (dstMon.broken.length > 0) problems.push(`target console: ${dstMon.broken.slice(0, 3).join(' | ')}`)
  if (srcMon.broken.length > 0) problems.push(`source console: ${srcMon.broken.slice(0, 3).join(' | ')}`)
  return problems.length === 0
    ? { ok: true, detail: `heartbeat continues in sequence${notes.length > 0 ? ` (${notes.join('; ')})` : ''}; ${dstMon.integrityOkAt.length} integrity passes on the target, no failure` }
    : { ok: false, detail: problems.join('; ') }
}

/** After a cancelled or failed migration: the guest goes on on the source with its memory intact. */
async function checkSourceAfterCancel (srcMon: SerialMonitor): Promise<{ ok: boolean, detail: string }> {
  const beats = srcMon.beats.length
  const passes = srcMon.integrityOkAt.length
  try {
    await srcMon.until('heartbeats on the source after the cancel', () => srcMon.beats.length >= beats + 20, 20_000)
    await srcMon.until('a new integrity pass on the source', () => srcMon.integrityOkAt.length >= passes + 2, 30_000)
  } catch (err) {
    return { ok: false, detail: (err as Error).message }
  }
  if (srcMon.starts > 1) return { ok: false, detail: 'the guest rebooted on the source' }
  if (srcMon.broken.length > 0) return { ok: false, detail: `source console: ${srcMon.broken.slice(0, 3).join(' | ')}` }
  return { ok: true, detail: 'the guest keeps running on the source; integrity passes continue without failure' }
}
