/**
 * Migration convergence: choosing pre-copy or post-copy up front, and steering a running
 * pre-copy so that it finishes (or gives up) in bounded time. Pure functions: no IO, no clock,
 * no randomness; the caller passes measurements in and carries the returned state.
 *
 * The pre-copy model (ANCHORS §2): with memory M, dirty rate D and bandwidth B, round i sends what
 * was dirtied during round i-1, so round i leaves M·r^i to send with r = D/B; the migration can
 * stop the guest and copy the rest once that is below B × the allowed downtime. The total is about
 * (M/B)(1 - r^(n+1))/(1 - r), and it converges only if D < B. We refine it with the working set:
 * a guest cannot dirty more than it touches, so what is left after a round is min(W, D·t). And QEMU
 * sends a page that is all zeros as a few header bytes, so the first pass costs only the guest's
 * resident (ever written) memory: an idle-ish guest sends much less than its RAM.
 *
 * While it runs, each dirty-bitmap sync ends a round. A round that does not cut the smallest
 * amount left so far by `minProgressFraction` is a stall. As in oVirt's convergence schedule, the
 * allowed downtime climbs a ramp (100 → 150 → 200 → 300 → 400 → 500 ms after 1/2/3/4/6 stalls);
 * after `fallbackAfterStalls` stalls, after the round cap, or after the time budget, the migration
 * switches to post-copy or is aborted, as the VM's policy says.
 *
 * The round cap bounds the dirty-bitmap syncs of a pre-copy (QEMU counts one at setup, one at the
 * end of every round, and one in the stop-and-copy, so a migration of k rounds makes k + 2); the
 * drivers are given it and enforce it at the switch-over. It is the same under KVM and TCG. An
 * earlier TCG default (3 syncs: a single pass, a margin of 4 on its predicted pause, post-copy only
 * at once) worked around guests that broke on the target after pre-copy rounds or a late post-copy
 * switch; that was QEMU's TCG dirty tracking losing writes on RAM blocks sized a multiple of
 * 256 KiB (fixed in QEMU 9.0), which the drivers now avoid by padding the guest RAM under TCG. With
 * the padding, bench:migration (TCG, 10 runs a guest) kept every guest intact under this policy,
 * and the workarounds only cost pause time: the 16 MiB/s guest paused 697 ms (median heartbeat
 * gap) after post-copy at once, 141 ms with pre-copy rounds (QEMU's defaults: 353 ms); the
 * write-heavy guest 564 ms, 285 ms with post-copy after the stalls (which takes 5.1 s in all,
 * against 1.2 s at once; QEMU's defaults never complete it).
 *
 * `capDowntimeMargin` remains for a policy whose cap allows a single round: QEMU decides by
 * itself, right after a sync, whether to stop and copy or to begin another round, long before the
 * next progress sample, so such a plan is pre-copy only when the model's leftover, times the
 * margin, fits a ramp step. `postcopyAtOnce` and `postcopyOnlyAtOnce` remain as options for a
 * hypervisor whose running syncs are not sound.
 *
 * The controller's transfer rate is taken over a sliding window of at least `rateWindowMs`: QEMU
 * sends in bursts (zero pages cost almost nothing, a bitmap sync sends nothing), so the delta
 * between two samples a few tens of ms apart can be far off and would fake a stall.
 */

/** What to do when pre-copy stalls. */
export type StallFallback =
  /** Switch to post-copy: always finishes, but a network failure during it loses the VM. */
  | 'postcopy'
  /** Cancel the migration: the VM keeps running on the source. */
  | 'abort'

export interface ConvergencePolicy {
  /** Allowed downtime at each step of the ramp, ms, ascending; the first is the starting value. */
  downtimeRampMs: readonly number[]
  /**
   * Stalled rounds at which the ramp moves to the next step: entry j moves it to
   * downtimeRampMs[j + 1]. Non-decreasing, one shorter than downtimeRampMs.
   */
  rampAtStalls: readonly number[]
  /** Stalled rounds after which the fallback is taken. */
  fallbackAfterStalls: number
  /** A round must cut the smallest remaining amount seen so far by this fraction not to stall. */
  minProgressFraction: number
  /** Largest dirty-bitmap sync count a pre-copy may reach (see the module comment). */
  maxDirtySyncs: number
  /**
   * When the sync cap leaves no room for a second round (maxDirtySyncs 3), pre-copy is planned
   * only if the model's leftover × this margin fits the downtime limit (see the module comment);
   * 1 = no margin. It covers the pass's unsent tail and the model's optimism.
   */
  capDowntimeMargin: number
  /** The transfer rate is measured over at least this span of samples, ms. */
  rateWindowMs: number
  /** Time budget of a migration per GiB of guest memory, ms (Nova: 800 s per GiB). */
  completionTimeoutMsPerGiB: number
  /** What to do on a stall, the cap, or the budget. */
  onStall: StallFallback
  /**
   * A planned post-copy switches at once instead of after the first full pass. Every dirty-bitmap
   * sync taken while the guest runs risks losing a write under TCG; switching at once leaves only
   * the setup sync (harmless: every page is dirty then) and the one taken with the guest stopped.
   */
  postcopyAtOnce: boolean
  /**
   * Post-copy is sound only when switched before any dirty-bitmap sync taken with the guest
   * running: a fallback after the first pass cancels instead (the guest stays on the source),
   * and a pre-copy plan does not enable post-copy. Under TCG on QEMU 7.2 every switch made after
   * a pass broke the guest on the target here (4 of 4 runs), while post-copy at once did not.
   */
  postcopyOnlyAtOnce: boolean
}

/**
 * The default policy: oVirt's ramp, Nova's time budget, a cap of 30 syncs. The same for both
 * accelerators (the argument stays for callers that know theirs): under TCG the guest RAM is
 * padded off a multiple of 256 KiB, which is what made pre-copy rounds unsafe there (module
 * comment).
 */
export function defaultConvergencePolicy (_accel: 'kvm' | 'tcg', onStall: StallFallback): ConvergencePolicy {
  return {
    downtimeRampMs: [100, 150, 200, 300, 400, 500],
    rampAtStalls: [1, 2, 3, 4, 6],
    fallbackAfterStalls: 7,
    minProgressFraction: 0.1,
    maxDirtySyncs: 30,
    capDowntimeMargin: 1,
    rateWindowMs: 1000,
    completionTimeoutMsPerGiB: 800_000,
    onStall,
    postcopyAtOnce: false,
    postcopyOnlyAtOnce: false
  }
}

/** Checks a policy; returns the problems found (empty when sound). */
export function checkConvergencePolicy (p: ConvergencePolicy): string[] {
  const errs: string[] = []
  if (p.downtimeRampMs.length === 0) errs.push('downtimeRampMs must not be empty')
  if (p.downtimeRampMs.some((v, i) => !(v > 0) || (i > 0 && v < (p.downtimeRampMs[i - 1] ?? 0)))) errs.push('downtimeRampMs must be positive and ascending')
  if (p.rampAtStalls.length !== Math.max(0, p.downtimeRampMs.length - 1)) errs.push('rampAtStalls must be one shorter than downtimeRampMs')
  if (p.rampAtStalls.some((v, i) => !(v >= 1) || (i > 0 && v < (p.rampAtStalls[i - 1] ?? 0)))) errs.push('rampAtStalls must be >= 1 and non-decreasing')
  if (!(p.fallbackAfterStalls >= 1)) errs.push('fallbackAfterStalls must be >= 1')
  if (!(p.minProgressFraction >= 0 && p.minProgressFraction < 1)) errs.push('minProgressFraction must be in [0, 1)')
  if (!(p.maxDirtySyncs >= 3)) errs.push('maxDirtySyncs must be >= 3 (setup, one round, stop-and-copy)')
  if (!(p.capDowntimeMargin >= 1)) errs.push('capDowntimeMargin must be >= 1')
  if (!(p.rateWindowMs >= 500)) errs.push('rateWindowMs must be >= 500 (a shorter window follows QEMU\'s bursts)')
  if (!(p.completionTimeoutMsPerGiB > 0)) errs.push('completionTimeoutMsPerGiB must be > 0')
  if (p.postcopyOnlyAtOnce && !p.postcopyAtOnce) errs.push('postcopyOnlyAtOnce needs postcopyAtOnce (a planned post-copy would switch after a pass)')
  return errs
}

/** The VM and link as measured before the migration starts. */
export interface MigrationEstimateInput {
  /** Guest memory, bytes. */
  memBytes: number
  /** Memory the guest rewrites, bytes (caps what a round can leave); memBytes when unknown. */
  workingSetBytes?: number
  /**
   * Memory the guest has written at all, bytes; the rest is zero pages, which QEMU sends as a few
   * header bytes each, so the first pass costs about this much. memBytes when unknown.
   */
  residentBytes?: number
  /** Rate at which the guest dirties memory, bytes/s. */
  dirtyRateBytesPerS: number
  /**
   * False when nobody measured the dirty rate (the plan then assumes dirtyRateBytesPerS and says
   * so in its reason); true or absent when it was measured.
   */
  dirtyRateMeasured?: boolean
  /** Usable bandwidth of the migration link, bytes/s. */
  bandwidthBytesPerS: number
}

/** The pre-copy model's prediction for one downtime limit. */
export interface PrecopyEstimate {
  converges: boolean
  /** Rounds before the stop-and-copy (the first full pass counts as one). */
  rounds: number
  /** Dirty-bitmap syncs QEMU will count: rounds + 2. */
  dirtySyncs: number
  /** Predicted pause, ms. */
  downtimeMs: number
  /** Predicted duration, ms. */
  totalMs: number
}

const MAX_MODEL_ROUNDS = 60

/** Runs the pre-copy model until the rest fits in `downtimeLimitMs`, within `maxRounds` rounds. */
export function estimatePrecopy (input: MigrationEstimateInput, downtimeLimitMs: number, maxRounds = MAX_MODEL_ROUNDS): PrecopyEstimate {
  const B = input.bandwidthBytesPerS
  const D = Math.max(0, input.dirtyRateBytesPerS)
  const resident = Math.max(0, Math.min(input.residentBytes ?? input.memBytes, input.memBytes))
  const W = Math.min(input.workingSetBytes ?? input.memBytes, resident)
  if (!(B > 0) || !(input.memBytes >= 0)) return { converges: false, rounds: 0, dirtySyncs: 0, downtimeMs: Infinity, totalMs: Infinity }
  let remaining = resident
  let totalS = 0
  for (let k = 1; k <= maxRounds; k++) {
    const t = remaining / B
    totalS += t
    remaining = Math.min(W, D * t)
    const downS = remaining / B
    if (downS * 1000 <= downtimeLimitMs) {
      return { converges: true, rounds: k, dirtySyncs: k + 2, downtimeMs: downS * 1000, totalMs: (totalS + downS) * 1000 }
    }
  }
  return { converges: false, rounds: maxRounds, dirtySyncs: maxRounds + 2, downtimeMs: (remaining / B) * 1000, totalMs: Infinity }
}

/** How to run a migration. */
export type PlannedMode =
  /** Pre-copy, aborted if it stalls (post-copy not enabled). */
  | 'precopy'
  /** Pre-copy with post-copy enabled as the fallback. */
  | 'hybrid'
  /**
   * Post-copy, because pre-copy cannot finish within the limits: at once (start the driver in
   * 'postcopy' mode) when policy.postcopyAtOnce, else after the first full pass (start it in
   * 'hybrid' mode; the controller switches).
   */
  | 'postcopy'
  /** Do not start: pre-copy cannot finish and post-copy is not allowed. */
  | 'reject'

export interface MigrationPlan {
  mode: PlannedMode
  /**
   * Downtime limit to start with, ms: the lowest ramp step at which the model converges within
   * the round cap, with the cap margin when the cap allows a single round (the first step when
   * it does not converge at all).
   */
  downtimeLimitMs: number
  /** The model's prediction at the smallest ramp step that converges (or the last step). */
  estimate: PrecopyEstimate
  /** Time budget, ms; past it the fallback is taken. */
  timeoutMs: number
  /** The link bandwidth assumed, bytes/s; used until a transfer rate is measured. */
  bandwidthBytesPerS: number
  reason: string
}

/**
 * Chooses the mode before the migration starts. Pre-copy (or hybrid, when post-copy is the
 * fallback) when the model converges within the ramp's largest downtime and the sync cap (with
 * the cap margin when the cap allows a single round); otherwise post-copy if allowed, else reject.
 */
export function planMigration (input: MigrationEstimateInput, policy: ConvergencePolicy): MigrationPlan {
  const ramp = policy.downtimeRampMs
  const first = ramp[0] ?? 300
  const roundsMax = Math.max(1, policy.maxDirtySyncs - 2)
  // With a single round allowed, QEMU must complete right after the pass by itself (module comment).
  const margin = roundsMax === 1 ? Math.max(1, policy.capDowntimeMargin) : 1
  const timeoutMs = Math.max(1, input.memBytes / 2 ** 30) * policy.completionTimeoutMsPerGiB
  const precopyMode: PlannedMode = policy.onStall === 'postcopy' && !policy.postcopyOnlyAtOnce ? 'hybrid' : 'precopy'
  const unmeasured = input.dirtyRateMeasured === false ? `; dirty rate not measured, assumed ${Math.round(input.dirtyRateBytesPerS / 1048576)} MiB/s` : ''
  let last: PrecopyEstimate = estimatePrecopy(input, first / margin, roundsMax)
  for (const step of ramp) {
    const e = estimatePrecopy(input, step / margin, roundsMax)
    last = e
    if (e.converges) {
      const m = margin > 1 ? ` (predicted pause ${Math.round(e.downtimeMs)} ms x margin ${margin})` : ''
      const why = `pre-copy converges in ${e.rounds} round(s) at ${step} ms downtime${m}${unmeasured}`
      return { mode: precopyMode, downtimeLimitMs: step, estimate: e, timeoutMs, bandwidthBytesPerS: input.bandwidthBytesPerS, reason: why }
    }
  }
  const r = input.bandwidthBytesPerS > 0 ? input.dirtyRateBytesPerS / input.bandwidthBytesPerS : Infinity
  const maxStep = ramp[ramp.length - 1] ?? first
  const predicted = Number.isFinite(last.downtimeMs) ? `${Math.round(last.downtimeMs)} ms` : 'unbounded'
  // A working set smaller than memory bounds the leftover even when D >= B.
  const wsBound = (input.workingSetBytes ?? input.memBytes) < input.memBytes
  const why = r >= 1 && !wsBound
    ? `dirty rate is ${r.toFixed(2)}x the bandwidth: pre-copy never converges`
    : margin > 1
      ? `pre-copy needs more than ${roundsMax} round(s) or more than ${maxStep} ms downtime with margin ${margin} (predicted pause ${predicted})`
      : `pre-copy needs more than ${roundsMax} round(s) or more than ${maxStep} ms downtime`
  if (policy.onStall === 'postcopy') {
    const when = policy.postcopyAtOnce ? 'at once' : 'after the first pass'
    return { mode: 'postcopy', downtimeLimitMs: first, estimate: last, timeoutMs, bandwidthBytesPerS: input.bandwidthBytesPerS, reason: `${why}; post-copy ${when}${unmeasured}` }
  }
  return { mode: 'reject', downtimeLimitMs: first, estimate: last, timeoutMs, bandwidthBytesPerS: input.bandwidthBytesPerS, reason: `${why}; post-copy not allowed${unmeasured}` }
}

/** One progress sample of a running migration (from the driver's progress()). */
export interface ConvergenceSample {
  status: string
  /** Time since the migration started, ms. */
  totalTimeMs: number
  remainingBytes: number
  transferredBytes: number
  dirtySyncCount: number
}

/** The controller's memory between samples. */
export interface ConvergenceState {
  readonly mode: PlannedMode
  readonly downtimeLimitMs: number
  /** Index in downtimeRampMs of the current limit. */
  readonly rampIndex: number
  readonly stalls: number
  readonly lastSyncCount: number
  /** Smallest amount left after a round so far, bytes. */
  readonly bestRemainingBytes: number
  /**
   * Transfer rate over the last rateWindowMs or more of samples, bytes/s (the plan's until a
   * window has been seen).
   */
  readonly rateBytesPerS: number
  /** Samples (time, bytes sent) of the rate window: back to the newest one at least a window old. */
  readonly rateWindow: ReadonlyArray<{ readonly atMs: number, readonly bytes: number }>
  readonly lastSample: ConvergenceSample | null
  /** A fallback or post-copy switch was ordered; the controller has nothing more to do. */
  readonly settled: boolean
}

export type ConvergenceAction =
  | { kind: 'none' }
  | { kind: 'setDowntime', downtimeLimitMs: number, reason: string }
  | { kind: 'startPostcopy', reason: string }
  | { kind: 'abort', reason: string }

export function initialConvergenceState (plan: MigrationPlan, policy: ConvergencePolicy): ConvergenceState {
  let rampIndex = 0
  while (rampIndex < policy.downtimeRampMs.length - 1 && (policy.downtimeRampMs[rampIndex + 1] ?? Infinity) <= plan.downtimeLimitMs) rampIndex++
  return {
    mode: plan.mode,
    downtimeLimitMs: plan.downtimeLimitMs,
    rampIndex,
    stalls: 0,
    lastSyncCount: 0,
    bestRemainingBytes: Infinity,
    rateBytesPerS: plan.bandwidthBytesPerS,
    rateWindow: [],
    lastSample: null,
    settled: plan.mode === 'reject'
  }
}

const TERMINAL = new Set(['completed', 'failed', 'cancelled', 'cancelling'])
const POSTCOPY = new Set(['postcopy-active', 'postcopy-paused', 'postcopy-recover'])

/**
 * Adds a sample to the rate window; returns the window (the samples back to the newest one at
 * least `windowMs` older than this one) and the rate across it, or `rate` unchanged while the
 * window is shorter than `windowMs` or nothing was sent across it.
 */
export function windowRate (
  window: ConvergenceState['rateWindow'], sample: ConvergenceSample, windowMs: number, rate: number
): { window: ConvergenceState['rateWindow'], rate: number } {
  const newest = window[window.length - 1]
  if (newest !== undefined && sample.totalTimeMs <= newest.atMs) return { window, rate }
  const w = [...window, { atMs: sample.totalTimeMs, bytes: sample.transferredBytes }]
  while (w.length > 2 && sample.totalTimeMs - (w[1]?.atMs ?? 0) >= windowMs) w.shift()
  const oldest = w[0]
  if (oldest === undefined || sample.totalTimeMs - oldest.atMs < windowMs || sample.transferredBytes <= oldest.bytes) return { window: w, rate }
  return { window: w, rate: (sample.transferredBytes - oldest.bytes) / ((sample.totalTimeMs - oldest.atMs) / 1000) }
}

/**
 * Feeds one progress sample; returns the new state and at most one action for the driver.
 * `timeoutMs` is the plan's budget.
 */
export function stepConvergence (
  state: ConvergenceState, sample: ConvergenceSample, policy: ConvergencePolicy, timeoutMs: number
): { state: ConvergenceState, action: ConvergenceAction } {
  const none: ConvergenceAction = { kind: 'none' }
  const measured = windowRate(state.rateWindow, sample, policy.rateWindowMs, state.rateBytesPerS)
  const rate = measured.rate
  let s: ConvergenceState = { ...state, rateBytesPerS: rate, rateWindow: measured.window, lastSample: sample }
  if (s.settled || TERMINAL.has(sample.status) || POSTCOPY.has(sample.status)) {
    return { state: POSTCOPY.has(sample.status) ? { ...s, settled: true } : s, action: none }
  }
  const fallback = (why: string): { state: ConvergenceState, action: ConvergenceAction } => {
    // After a sync taken with the guest running, post-copy is not sound everywhere (policy).
    const late = policy.postcopyOnlyAtOnce && sample.dirtySyncCount >= 2
    const post = (s.mode === 'hybrid' || s.mode === 'postcopy') && !late
    return {
      state: { ...s, settled: true },
      action: post
        ? { kind: 'startPostcopy', reason: why }
        : { kind: 'abort', reason: late && s.mode !== 'precopy' ? `${why}; post-copy is not sound after a pass (policy), cancelling` : why }
    }
  }
  if (sample.totalTimeMs > timeoutMs) return fallback(`time budget of ${Math.round(timeoutMs)} ms exceeded`)
  if (sample.dirtySyncCount <= s.lastSyncCount) return { state: s, action: none }

  // A round ended (one or more syncs since the last sample).
  const syncs = sample.dirtySyncCount
  s = { ...s, lastSyncCount: syncs }
  if (s.mode === 'postcopy') {
    if (policy.postcopyAtOnce || syncs < 2) return { state: s, action: none }
    return fallback('first full pass done; switching to post-copy as planned')
  }
  if (syncs >= 3) {
    const stalled = sample.remainingBytes > s.bestRemainingBytes * (1 - policy.minProgressFraction)
    if (stalled) s = { ...s, stalls: s.stalls + 1 }
  }
  s = { ...s, bestRemainingBytes: Math.min(s.bestRemainingBytes, sample.remainingBytes) }
  if (s.stalls >= policy.fallbackAfterStalls) return fallback(`${s.stalls} stalled rounds`)

  const ramp = policy.downtimeRampMs
  const maxDown = ramp[ramp.length - 1] ?? s.downtimeLimitMs
  const needMs = rate > 0 ? (sample.remainingBytes / rate) * 1000 : Infinity
  // QEMU decides after each round whether the rest fits in the downtime limit; at sync count c
  // a stop-and-copy now ends with c + 1 syncs. So c = maxDirtySyncs - 1 is the last decision.
  const lastDecision = policy.maxDirtySyncs - 1
  if (syncs >= lastDecision) {
    // Past the last decision: either QEMU is completing (the rest fits; the stop-and-copy takes
    // a sync of its own) or it began a round that would end beyond the cap.
    if (needMs <= s.downtimeLimitMs) return { state: s, action: none }
    return fallback(`pre-copy reached ${syncs} dirty syncs with ~${Math.round(needMs)} ms of data left (cap ${policy.maxDirtySyncs})`)
  }
  if (syncs === lastDecision - 1 && syncs >= 2) {
    // The next round is the last one allowed: its leftover (about what is left now, or less
    // when the guest's writes converge) must fit in one stop-and-copy.
    if (needMs > maxDown) return fallback(`one round left under the sync cap, and the rest needs ~${Math.round(needMs)} ms > ${maxDown} ms`)
    let idx = s.rampIndex
    while (idx < ramp.length - 1 && (ramp[idx] ?? maxDown) < needMs * 1.25) idx++
    if (idx > s.rampIndex) {
      const ms = ramp[idx] ?? maxDown
      return { state: { ...s, rampIndex: idx, downtimeLimitMs: ms }, action: { kind: 'setDowntime', downtimeLimitMs: ms, reason: `one round left under the sync cap; the rest needs ~${Math.round(needMs)} ms` } }
    }
    return { state: s, action: none }
  }
  let idx = 0
  while (idx < policy.rampAtStalls.length && s.stalls >= (policy.rampAtStalls[idx] ?? Infinity)) idx++
  if (idx > s.rampIndex) {
    const ms = ramp[idx] ?? maxDown
    return { state: { ...s, rampIndex: idx, downtimeLimitMs: ms }, action: { kind: 'setDowntime', downtimeLimitMs: ms, reason: `${s.stalls} stalled round(s)` } }
  }
  return { state: s, action: none }
}
