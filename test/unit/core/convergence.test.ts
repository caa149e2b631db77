/**
 * Goal: the convergence policy picks the migration mode the pre-copy model justifies, climbs the
 * downtime ramp on stalls, and takes the VM's fallback at the stall limit, the time budget and
 * the TCG sync cap. Method: table tests over the pure functions; a run feeds a list of progress
 * samples through stepConvergence and compares the actions with the expected ones.
 */
import t from 'tap'
import {
  checkConvergencePolicy, defaultConvergencePolicy, estimatePrecopy, initialConvergenceState, planMigration, stepConvergence, windowRate,
  type ConvergenceAction, type ConvergencePolicy, type ConvergenceSample, type MigrationEstimateInput, type MigrationPlan
} from '../../../agent/core/migration/convergence.js'

const MiB = 1024 * 1024
const GiB = 1024 * MiB

/**
 * A policy for a hypervisor whose syncs taken with the guest running are not sound (the former
 * TCG default, before the guest RAM was padded): one pass, a margin of 4 on its pause, post-copy
 * only at once. The defaults no longer use it; its mechanics stay tested.
 */
const singlePass = (onStall: 'abort' | 'postcopy'): ConvergencePolicy =>
  ({ ...defaultConvergencePolicy('kvm', onStall), maxDirtySyncs: 3, capDowntimeMargin: 4, postcopyAtOnce: true, postcopyOnlyAtOnce: true })

t.test('estimatePrecopy follows the pre-copy model', async t => {
  const cases: Array<{ name: string, in: MigrationEstimateInput, downMs: number, converges: boolean, rounds?: number, totalMs?: number, downtimeMs?: number }> = [
    { name: 'idle guest: one pass, no pause', in: { memBytes: GiB, dirtyRateBytesPerS: 0, bandwidthBytesPerS: 128 * MiB }, downMs: 100, converges: true, rounds: 1, totalMs: 8000, downtimeMs: 0 },
    // r = 1/8: leftovers 128 MiB, 16 MiB, 2 MiB; the closed form gives (M/B)(1-r^4)/(1-r) = 9140.6 ms
    { name: 'r = 1/8 converges in 3 rounds at 100 ms', in: { memBytes: GiB, dirtyRateBytesPerS: 16 * MiB, bandwidthBytesPerS: 128 * MiB }, downMs: 100, converges: true, rounds: 3, totalMs: 8 * (1 - 1 / 4096) / (7 / 8) * 1000, downtimeMs: 15.625 },
    { name: 'the same at 150 ms needs 2 rounds', in: { memBytes: GiB, dirtyRateBytesPerS: 16 * MiB, bandwidthBytesPerS: 128 * MiB }, downMs: 150, converges: true, rounds: 2, downtimeMs: 125 },
    { name: 'D >= B never converges', in: { memBytes: GiB, dirtyRateBytesPerS: 200 * MiB, bandwidthBytesPerS: 128 * MiB }, downMs: 500, converges: false },
    { name: 'a 64 MiB working set rewritten flat out fits in 500 ms', in: { memBytes: 256 * MiB, workingSetBytes: 64 * MiB, dirtyRateBytesPerS: GiB, bandwidthBytesPerS: 128 * MiB }, downMs: 500, converges: true, rounds: 1, downtimeMs: 500 },
    { name: '...but not in 300 ms', in: { memBytes: 256 * MiB, workingSetBytes: 64 * MiB, dirtyRateBytesPerS: GiB, bandwidthBytesPerS: 128 * MiB }, downMs: 300, converges: false },
    { name: 'no bandwidth', in: { memBytes: GiB, dirtyRateBytesPerS: 0, bandwidthBytesPerS: 0 }, downMs: 300, converges: false },
    // Zero pages cost (almost) nothing: the first pass carries the resident memory only.
    { name: 'idle guest with 128 MiB resident: the pass takes 1 s, not 8', in: { memBytes: GiB, residentBytes: 128 * MiB, dirtyRateBytesPerS: 0, bandwidthBytesPerS: 128 * MiB }, downMs: 100, converges: true, rounds: 1, totalMs: 1000, downtimeMs: 0 },
    // 112 MiB resident at 112 MiB/s: a 1 s pass leaves 16 MiB = 142.9 ms
    { name: 'moderate guest, 112 MiB resident: one round at 150 ms', in: { memBytes: 256 * MiB, residentBytes: 112 * MiB, workingSetBytes: 64 * MiB, dirtyRateBytesPerS: 16 * MiB, bandwidthBytesPerS: 112 * MiB }, downMs: 150, converges: true, rounds: 1, totalMs: 1000 + 1000 / 7, downtimeMs: 1000 / 7 },
    { name: '...the same counting every page as sent: a 2.3 s pass leaves 36.6 MiB', in: { memBytes: 256 * MiB, workingSetBytes: 64 * MiB, dirtyRateBytesPerS: 16 * MiB, bandwidthBytesPerS: 112 * MiB }, downMs: 150, converges: true, rounds: 2 },
    { name: 'the working set cannot exceed the resident memory', in: { memBytes: 256 * MiB, residentBytes: 32 * MiB, workingSetBytes: 64 * MiB, dirtyRateBytesPerS: GiB, bandwidthBytesPerS: 128 * MiB }, downMs: 250, converges: true, rounds: 1, downtimeMs: 250 },
    { name: 'resident above memory is memory', in: { memBytes: 128 * MiB, residentBytes: GiB, dirtyRateBytesPerS: 0, bandwidthBytesPerS: 128 * MiB }, downMs: 100, converges: true, rounds: 1, totalMs: 1000 }
  ]
  for (const c of cases) {
    const e = estimatePrecopy(c.in, c.downMs)
    t.equal(e.converges, c.converges, `${c.name}: converges`)
    if (c.rounds !== undefined) {
      t.equal(e.rounds, c.rounds, `${c.name}: rounds`)
      t.equal(e.dirtySyncs, c.rounds + 2, `${c.name}: syncs`)
    }
    if (c.totalMs !== undefined) t.ok(Math.abs(e.totalMs - c.totalMs) < 0.01, `${c.name}: total ${e.totalMs} ~ ${c.totalMs}`)
    if (c.downtimeMs !== undefined) t.ok(Math.abs(e.downtimeMs - c.downtimeMs) < 0.01, `${c.name}: downtime ${e.downtimeMs}`)
  }
})

t.test('planMigration chooses the mode up front', async t => {
  const heavy = { memBytes: 256 * MiB, workingSetBytes: 64 * MiB, dirtyRateBytesPerS: GiB, bandwidthBytesPerS: 128 * MiB }
  const moderate = { memBytes: GiB, dirtyRateBytesPerS: 16 * MiB, bandwidthBytesPerS: 128 * MiB }
  const hot = { memBytes: GiB, dirtyRateBytesPerS: 200 * MiB, bandwidthBytesPerS: 128 * MiB }
  const idle = { memBytes: 256 * MiB, dirtyRateBytesPerS: 0, bandwidthBytesPerS: 128 * MiB }
  const benchModerate = { memBytes: 256 * MiB, workingSetBytes: 64 * MiB, residentBytes: 112 * MiB, dirtyRateBytesPerS: 16 * MiB, bandwidthBytesPerS: 112 * MiB }
  // A hypothetical accelerator capped at 4 syncs whose running syncs are sound (post-copy may follow a pass).
  const tcg4 = (onStall: 'abort' | 'postcopy'): ConvergencePolicy => ({ ...singlePass(onStall), maxDirtySyncs: 4, postcopyOnlyAtOnce: false })
  const cases: Array<{ name: string, in: MigrationEstimateInput, policy: ConvergencePolicy, mode: string, downMs: number, reason: RegExp }> = [
    { name: 'idle, abort policy', in: idle, policy: singlePass('abort'), mode: 'precopy', downMs: 100, reason: /1 round\(s\) at 100 ms/ },
    { name: 'idle, post-copy policy under kvm: hybrid keeps the fallback open', in: idle, policy: defaultConvergencePolicy('kvm', 'postcopy'), mode: 'hybrid', downMs: 100, reason: /converges/ },
    { name: 'idle, post-copy policy with a single pass: plain pre-copy (post-copy is not sound after the pass)', in: idle, policy: singlePass('postcopy'), mode: 'precopy', downMs: 100, reason: /converges/ },
    { name: 'moderate under kvm: 3 rounds at 100 ms', in: moderate, policy: defaultConvergencePolicy('kvm', 'abort'), mode: 'precopy', downMs: 100, reason: /3 round\(s\) at 100 ms/ },
    { name: 'moderate with a cap of 4 syncs: 2 rounds, starts at 150 ms', in: moderate, policy: tcg4('postcopy'), mode: 'hybrid', downMs: 150, reason: /2 round\(s\) at 150 ms/ },
    { name: 'moderate with a single pass: post-copy', in: moderate, policy: singlePass('postcopy'), mode: 'postcopy', downMs: 100, reason: /more than 1 round\(s\) or more than 500 ms.*post-copy at once/ },
    { name: 'working set rewritten flat out, kvm: pre-copy at the top of the ramp', in: heavy, policy: defaultConvergencePolicy('kvm', 'abort'), mode: 'precopy', downMs: 500, reason: /1 round\(s\) at 500 ms downtime$/ },
    { name: 'the same with a single pass: 500 ms predicted leaves no margin under the cap, rejected', in: heavy, policy: singlePass('abort'), mode: 'reject', downMs: 100, reason: /more than 1 round\(s\) or more than 500 ms downtime with margin 4 \(predicted pause 500 ms\); post-copy not allowed/ },
    { name: 'the same with post-copy allowed: post-copy at once', in: heavy, policy: singlePass('postcopy'), mode: 'postcopy', downMs: 100, reason: /margin 4.*post-copy at once/ },
    // The bench's moderate guest: 256 MiB, 64 MiB working set at 16 MiB/s, 112 MiB resident, 112 MiB/s.
    { name: 'bench moderate with a single pass: 143 ms x 4 fits no step, post-copy at once', in: benchModerate, policy: singlePass('postcopy'), mode: 'postcopy', downMs: 100, reason: /margin 4 \(predicted pause 143 ms\); post-copy at once/ },
    { name: 'the same, measured by QEMU as 18 MiB/s over 128 MiB resident at 118 MB/s: 182 ms x 4, post-copy at once', in: { memBytes: 256 * MiB, residentBytes: 128 * MiB, dirtyRateBytesPerS: 18 * MiB, bandwidthBytesPerS: 118e6 }, policy: singlePass('postcopy'), mode: 'postcopy', downMs: 100, reason: /margin 4 \(predicted pause 182 ms\); post-copy at once/ },
    { name: 'a 40 MiB/s writer: post-copy at once', in: { ...benchModerate, dirtyRateBytesPerS: 40 * MiB }, policy: singlePass('postcopy'), mode: 'postcopy', downMs: 100, reason: /margin 4 \(predicted pause 357 ms\); post-copy at once/ },
    { name: 'an unmeasured dirty rate is said so in the reason', in: { ...idle, dirtyRateMeasured: false }, policy: defaultConvergencePolicy('kvm', 'abort'), mode: 'precopy', downMs: 100, reason: /dirty rate not measured, assumed 0 MiB\/s$/ },
    { name: 'bench moderate under tcg (padded RAM): pre-copy with the post-copy fallback, 2 rounds at 100 ms', in: benchModerate, policy: defaultConvergencePolicy('tcg', 'postcopy'), mode: 'hybrid', downMs: 100, reason: /^pre-copy converges in 2 round\(s\) at 100 ms downtime$/ },
    { name: 'heavy under tcg: pre-copy at the top of the ramp, post-copy as the fallback', in: heavy, policy: defaultConvergencePolicy('tcg', 'postcopy'), mode: 'hybrid', downMs: 500, reason: /1 round\(s\) at 500 ms downtime$/ },
    { name: 'bench moderate under kvm: no cap, no margin, 2 rounds at 100 ms', in: benchModerate, policy: defaultConvergencePolicy('kvm', 'postcopy'), mode: 'hybrid', downMs: 100, reason: /^pre-copy converges in 2 round\(s\) at 100 ms downtime$/ },
    { name: 'light writer with a single pass: 18 ms x 4 fits the first step', in: { ...benchModerate, dirtyRateBytesPerS: 2 * MiB }, policy: singlePass('postcopy'), mode: 'precopy', downMs: 100, reason: /1 round\(s\) at 100 ms downtime \(predicted pause 18 ms x margin 4\)/ },
    { name: 'an 8 MiB/s writer with a single pass: 71 ms x 4 starts at 300 ms', in: { ...benchModerate, dirtyRateBytesPerS: 8 * MiB }, policy: singlePass('postcopy'), mode: 'precopy', downMs: 300, reason: /at 300 ms downtime \(predicted pause 71 ms/ },
    { name: '...counting every page as sent: post-copy at once', in: { ...benchModerate, residentBytes: undefined, dirtyRateBytesPerS: 8 * MiB }, policy: singlePass('postcopy'), mode: 'postcopy', downMs: 100, reason: /margin 4 \(predicted pause 163 ms\); post-copy at once/ },
    { name: 'no single-pass cap: 7 rounds at 100 ms', in: { memBytes: GiB, dirtyRateBytesPerS: 64 * MiB, bandwidthBytesPerS: 128 * MiB }, policy: defaultConvergencePolicy('kvm', 'abort'), mode: 'precopy', downMs: 100, reason: /^pre-copy converges in 7 round\(s\) at 100 ms downtime$/ },
    { name: '...which a single-pass policy rejects', in: { memBytes: GiB, dirtyRateBytesPerS: 64 * MiB, bandwidthBytesPerS: 128 * MiB }, policy: singlePass('abort'), mode: 'reject', downMs: 100, reason: /more than 1 round/ },
    { name: 'hot guest, post-copy allowed', in: hot, policy: defaultConvergencePolicy('kvm', 'postcopy'), mode: 'postcopy', downMs: 100, reason: /never converges; post-copy after the first pass/ },
    { name: 'hot guest, post-copy not allowed', in: hot, policy: singlePass('abort'), mode: 'reject', downMs: 100, reason: /never converges; post-copy not allowed/ },
    { name: 'converges but only beyond the cap', in: { memBytes: 4 * GiB, dirtyRateBytesPerS: 64 * MiB, bandwidthBytesPerS: 128 * MiB }, policy: tcg4('abort'), mode: 'reject', downMs: 100, reason: /more than 2 round/ }
  ]
  for (const c of cases) {
    const p = planMigration(c.in, c.policy)
    t.equal(p.mode, c.mode, `${c.name}: mode`)
    t.match(p.reason, c.reason, `${c.name}: reason`)
    t.equal(p.downtimeLimitMs, c.downMs, `${c.name}: starting downtime`)
  }
  t.equal(planMigration(moderate, defaultConvergencePolicy('kvm', 'abort')).timeoutMs, 800_000, '800 s per GiB')
  t.equal(planMigration(idle, defaultConvergencePolicy('kvm', 'abort')).timeoutMs, 800_000, 'at least the budget of 1 GiB')
})

t.test('policy checks', async t => {
  t.same(checkConvergencePolicy(defaultConvergencePolicy('tcg', 'abort')), [])
  t.same(checkConvergencePolicy(defaultConvergencePolicy('kvm', 'postcopy')), [])
  t.same(checkConvergencePolicy(singlePass('postcopy')), [])
  // The guest RAM is padded under TCG, so its pre-copy rounds and late post-copy switches are
  // sound: the TCG default is the KVM one (bench:migration, 10 runs a case, all intact).
  t.same(defaultConvergencePolicy('tcg', 'abort'), defaultConvergencePolicy('kvm', 'abort'), 'TCG: the same policy as KVM (abort)')
  t.same(defaultConvergencePolicy('tcg', 'postcopy'), defaultConvergencePolicy('kvm', 'postcopy'), 'TCG: the same policy as KVM (post-copy)')
  t.equal(defaultConvergencePolicy('tcg', 'abort').maxDirtySyncs, 30, 'a cap of 30 syncs under either accelerator')
  t.equal(defaultConvergencePolicy('kvm', 'abort').postcopyOnlyAtOnce, false, 'post-copy may follow pre-copy')
  t.equal(defaultConvergencePolicy('kvm', 'abort').postcopyAtOnce, false, 'a planned post-copy switches after the first pass')
  t.equal(defaultConvergencePolicy('kvm', 'abort').capDowntimeMargin, 1, 'no margin')
  t.match(checkConvergencePolicy({ ...singlePass('postcopy'), postcopyAtOnce: false }), [/postcopyOnlyAtOnce needs postcopyAtOnce/])
  t.ok(defaultConvergencePolicy('kvm', 'abort').rateWindowMs >= 500, 'rate window of at least 500 ms')
  const bad: ConvergencePolicy = { ...defaultConvergencePolicy('kvm', 'abort'), downtimeRampMs: [300, 100], rampAtStalls: [], maxDirtySyncs: 2, capDowntimeMargin: 0.5, rateWindowMs: 50 }
  t.match(checkConvergencePolicy(bad), [/ascending/, /one shorter/, /maxDirtySyncs/, /capDowntimeMargin/, /rateWindowMs/])
})

t.test('windowRate measures over at least the window, never a single short delta', async t => {
  type W = Parameters<typeof windowRate>[0]
  const at = (ms: number, bytes: number): ConvergenceSample => ({ status: 'active', totalTimeMs: ms, transferredBytes: bytes, remainingBytes: 0, dirtySyncCount: 1 })
  const feed = (pts: Array<[number, number]>, windowMs = 1000, rate0 = 5e7): { window: W, rate: number } => {
    let r: { window: W, rate: number } = { window: [], rate: rate0 }
    for (const [ms, b] of pts) r = windowRate(r.window, at(ms, b), windowMs, r.rate)
    return r
  }
  const cases: Array<{ name: string, pts: Array<[number, number]>, rate: number, windowFrom: number }> = [
    { name: 'shorter than the window: the previous rate stays', pts: [[0, 0], [50, 5e6], [900, 9e7]], rate: 5e7, windowFrom: 0 },
    { name: 'one full window: bytes over time', pts: [[0, 0], [500, 1e7], [1000, 1e8]], rate: 1e8, windowFrom: 0 },
    // 50 ms samples, 1e8 B/s on average, but the last 50 ms carried 1 MB (20 MB/s)
    { name: 'a slow last 50 ms does not drag the rate down', pts: [...Array.from({ length: 40 }, (_, i): [number, number] => [i * 50, i * 50 * 1e5]), [2000, 1950 * 1e5 + 1e6]], rate: (1950 * 1e5 + 1e6 - 1000 * 1e5) / 1.0, windowFrom: 1000 },
    // 50 MB in the last 50 ms read as 1 GB/s on its own; over the window, 1e8 B in 1.05 s
    { name: 'a burst in the last 50 ms does not blow it up', pts: [[0, 0], [1000, 5e7], [1050, 1e8]], rate: 1e8 / 1.05, windowFrom: 0 },
    { name: 'old samples leave the window', pts: [[0, 0], [1000, 1e8], [2000, 1.5e8], [3000, 2e8]], rate: 5e7, windowFrom: 2000 },
    { name: 'nothing sent across the window: the previous rate stays (no fake stall)', pts: [[0, 1e8], [600, 1e8], [1200, 1e8]], rate: 5e7, windowFrom: 0 },
    { name: 'a sample that does not advance the clock is ignored', pts: [[0, 0], [1000, 1e8], [1000, 9e8]], rate: 1e8, windowFrom: 0 }
  ]
  for (const c of cases) {
    const r = feed(c.pts)
    t.ok(Math.abs(r.rate - c.rate) < 1, `${c.name}: rate ${r.rate} ~ ${c.rate}`)
    t.equal(r.window[0]?.atMs, c.windowFrom, `${c.name}: window starts at ${c.windowFrom}`)
  }
  t.equal(feed([[0, 0], [1000, 1e8], [1050, 1.05e8]], 1000).rate, 1.05e8 / 1.05, 'the window is the newest sample at least a window old: 1.05 s here')
})

/** Samples on a 100 MB/s link: transferred grows with time, so the measured rate is 1e8 B/s. */
const RATE = 1e8
const sample = (ms: number, syncs: number, remainingBytes: number, status = 'active'): ConvergenceSample =>
  ({ status, totalTimeMs: ms, transferredBytes: ms * RATE / 1000, remainingBytes, dirtySyncCount: syncs })
/** Bytes that take `ms` to send at RATE. */
const msOf = (ms: number): number => ms * RATE / 1000
/** Samples every 50 ms from 0 to `untilMs` at `share` of RATE, `syncs` syncs, a pass of 2 s. */
const smooth = (untilMs: number, syncs: number, share = 1): ConvergenceSample[] =>
  Array.from({ length: untilMs / 50 + 1 }, (_, i) => ({ ...sample(i * 50, syncs, msOf(2000 - i * 50)), transferredBytes: msOf(i * 50) * share }))

function plan (mode: MigrationPlan['mode']): MigrationPlan {
  return { mode, downtimeLimitMs: 100, estimate: { converges: true, rounds: 1, dirtySyncs: 3, downtimeMs: 0, totalMs: 0 }, timeoutMs: 60_000, bandwidthBytesPerS: RATE, reason: 'test' }
}

function run (p: MigrationPlan, policy: ConvergencePolicy, samples: ConvergenceSample[]): string[] {
  let st = initialConvergenceState(p, policy)
  const out: string[] = []
  for (const s of samples) {
    const r = stepConvergence(st, s, policy, p.timeoutMs)
    st = r.state
    out.push(show(r.action))
  }
  return out
}
function show (a: ConvergenceAction): string {
  switch (a.kind) {
    case 'none': return '-'
    case 'setDowntime': return `downtime ${a.downtimeLimitMs}`
    case 'startPostcopy': return 'postcopy'
    case 'abort': return 'abort'
  }
}

t.test('stepConvergence drives a running migration', async t => {
  // A cap of 4 syncs leaves one adjustment after the first pass; the TCG default of 3 leaves none.
  const tcgAbort = { ...singlePass('abort'), maxDirtySyncs: 4 }
  const tcgPost = { ...singlePass('postcopy'), maxDirtySyncs: 4, postcopyOnlyAtOnce: false }
  const tcg3 = singlePass('postcopy')
  const kvmAbort = defaultConvergencePolicy('kvm', 'abort')
  const kvmPost = defaultConvergencePolicy('kvm', 'postcopy')
  // KVM guest whose leftover never shrinks: a stall per round from the third sync on.
  const stalling = [sample(100, 1, msOf(5000)), sample(1000, 2, msOf(800))]
  for (let i = 0; i < 8; i++) stalling.push(sample(2000 + i * 500, 3 + i, msOf(800)))
  const cases: Array<{ name: string, plan: MigrationPlan, policy: ConvergencePolicy, samples: ConvergenceSample[], actions: string[] }> = [
    {
      name: 'idle guest completes, nothing to do',
      plan: plan('precopy'), policy: tcgAbort,
      samples: [sample(100, 1, msOf(2000)), sample(2000, 2, msOf(1)), sample(2010, 3, 0, 'completed')],
      actions: ['-', '-', '-']
    },
    {
      name: 'cap 4: after the first pass the last allowed round must fit, so the limit goes up to 200',
      plan: plan('hybrid'), policy: tcgPost,
      samples: [sample(100, 1, msOf(2000)), sample(2000, 2, msOf(150)), sample(2200, 3, msOf(140)), sample(2400, 4, 0, 'completed')],
      actions: ['-', 'downtime 200', '-', '-']
    },
    {
      name: 'cap 4: the rest cannot fit in 500 ms, post-copy now',
      plan: plan('hybrid'), policy: tcgPost,
      samples: [sample(100, 1, msOf(2000)), sample(2000, 2, msOf(900)), sample(2100, 2, msOf(800), 'postcopy-active')],
      actions: ['-', 'postcopy', '-']
    },
    {
      name: 'cap 4: the same without post-copy aborts',
      plan: plan('precopy'), policy: tcgAbort,
      samples: [sample(100, 1, msOf(2000)), sample(2000, 2, msOf(900)), sample(2100, 2, msOf(900), 'cancelled')],
      actions: ['-', 'abort', '-']
    },
    {
      name: 'cap 4: QEMU began a round that would pass the cap',
      plan: plan('precopy'), policy: tcgAbort,
      samples: [sample(100, 1, msOf(2000)), sample(2000, 2, msOf(80)), sample(2500, 3, msOf(400))],
      actions: ['-', '-', 'abort']
    },
    {
      name: 'cap 4: at the last decision with little left QEMU is completing; leave it',
      plan: plan('precopy'), policy: tcgAbort,
      samples: [sample(100, 1, msOf(2000)), sample(2000, 2, msOf(80)), sample(2100, 3, msOf(50)), sample(2150, 4, 0, 'completed')],
      actions: ['-', '-', '-', '-']
    },
    {
      name: 'single pass (cap 3): one pass whose rest fits completes untouched',
      plan: plan('hybrid'), policy: tcg3,
      samples: [sample(100, 1, msOf(2000)), sample(2000, 2, msOf(60)), sample(2050, 3, 0, 'completed')],
      actions: ['-', '-', '-']
    },
    {
      name: 'single pass (cap 3): the rest does not fit after the pass: cancel, never post-copy after a running sync',
      plan: plan('hybrid'), policy: tcg3,
      samples: [sample(100, 1, msOf(2000)), sample(2000, 2, msOf(400))],
      actions: ['-', 'abort']
    },
    {
      name: 'the same with post-copy sound after a pass (kvm-like, capped at 3): post-copy',
      plan: plan('hybrid'), policy: { ...tcg3, postcopyOnlyAtOnce: false },
      samples: [sample(100, 1, msOf(2000)), sample(2000, 2, msOf(400))],
      actions: ['-', 'postcopy']
    },
    {
      name: 'single pass: a post-copy plan started at once whose budget runs out before any running sync still switches',
      plan: { ...plan('postcopy'), timeoutMs: 1000 }, policy: tcg3,
      samples: [sample(100, 1, msOf(2000)), sample(1500, 1, msOf(1500))],
      actions: ['-', 'postcopy']
    },
    {
      name: 'single pass (cap 3): the stop-and-copy sync itself (nothing left) is not a reason to fall back',
      plan: plan('hybrid'), policy: tcg3,
      samples: [sample(100, 1, msOf(2000)), sample(900, 2, msOf(60)), sample(1000, 3, 0), sample(1010, 3, 0, 'completed')],
      actions: ['-', '-', '-', '-']
    },
    {
      name: 'a plan that starts high on the ramp never lowers the limit on stalls',
      plan: { ...plan('precopy'), downtimeLimitMs: 300 }, policy: kvmAbort,
      samples: [sample(100, 1, msOf(5000)), sample(1000, 2, msOf(800)), sample(1500, 3, msOf(800)), sample(2000, 4, msOf(800)), sample(2500, 5, msOf(800)), sample(3000, 6, msOf(800))],
      actions: ['-', '-', '-', '-', '-', 'downtime 400']
    },
    {
      name: 'kvm: stalls climb the oVirt ramp, then abort',
      plan: plan('precopy'), policy: kvmAbort, samples: stalling,
      actions: ['-', '-', 'downtime 150', 'downtime 200', 'downtime 300', 'downtime 400', '-', 'downtime 500', 'abort', '-']
    },
    {
      name: 'kvm: the same with post-copy as the fallback',
      plan: plan('hybrid'), policy: kvmPost, samples: stalling,
      actions: ['-', '-', 'downtime 150', 'downtime 200', 'downtime 300', 'downtime 400', '-', 'downtime 500', 'postcopy', '-']
    },
    {
      name: 'kvm: rounds that keep shrinking by more than 10 % are not stalls',
      plan: plan('precopy'), policy: kvmAbort,
      samples: [sample(100, 1, msOf(5000)), sample(1000, 2, msOf(800)), sample(1800, 3, msOf(600)), sample(2400, 4, msOf(400)), sample(2800, 5, msOf(80))],
      actions: ['-', '-', '-', '-', '-']
    },
    {
      name: 'kvm: several syncs between two samples count once',
      plan: plan('precopy'), policy: kvmAbort,
      samples: [sample(100, 1, msOf(5000)), sample(1000, 2, msOf(800)), sample(3000, 6, msOf(800))],
      actions: ['-', '-', 'downtime 150']
    },
    {
      name: 'planned post-copy switches after the first pass',
      plan: plan('postcopy'), policy: kvmPost,
      samples: [sample(100, 1, msOf(5000)), sample(1000, 1, msOf(3000)), sample(2000, 2, msOf(3000)), sample(2100, 2, msOf(3000))],
      actions: ['-', '-', 'postcopy', '-']
    },
    {
      name: 'planned post-copy at once (single pass): the driver already switched, nothing to do',
      plan: plan('postcopy'), policy: singlePass('postcopy'),
      samples: [sample(100, 1, msOf(5000)), sample(1000, 2, msOf(3000)), sample(1100, 2, msOf(3000), 'postcopy-active')],
      actions: ['-', '-', '-']
    },
    {
      name: 'the time budget triggers the fallback once',
      plan: { ...plan('hybrid'), timeoutMs: 5000 }, policy: kvmPost,
      samples: [sample(100, 1, msOf(5000)), sample(4000, 1, msOf(3000)), sample(5001, 1, msOf(3000)), sample(5100, 1, msOf(3000))],
      actions: ['-', '-', 'postcopy', '-']
    },
    {
      // The report's case: 50 ms samples, the last 50 ms slow; a 50 ms delta read 20 MB/s and
      // "~1500 ms left", the window reads ~96 MB/s and ~312 ms, which fits the 500 ms limit.
      name: 'single pass (cap 3): the rate over a window does not fake a stall at the end of the pass',
      plan: { ...plan('hybrid'), downtimeLimitMs: 500 }, policy: tcg3,
      samples: [...smooth(1950, 1), { ...sample(2000, 2, msOf(300)), transferredBytes: msOf(1950) + 1e6 }],
      actions: [...smooth(1950, 1).map(() => '-'), '-']
    },
    {
      name: 'single pass (cap 3): a link that is slow over the whole window still falls back',
      plan: { ...plan('hybrid'), downtimeLimitMs: 500 }, policy: tcg3,
      samples: [...smooth(1950, 1, 0.2), { ...sample(2000, 2, msOf(300)), transferredBytes: msOf(2000) * 0.2 }],
      actions: [...smooth(1950, 1).map(() => '-'), 'abort']
    },
    {
      name: 'a rejected plan does nothing',
      plan: plan('reject'), policy: kvmAbort,
      samples: [sample(100, 1, msOf(5000)), sample(100_000, 9, msOf(5000))],
      actions: ['-', '-']
    }
  ]
  for (const c of cases) t.same(run(c.plan, c.policy, c.samples), c.actions, c.name)
})

t.test('the TCG default holds a pre-copy to its sync cap', async t => {
  // A pre-copy that never stalls (each round leaves 15 % less) but never gets small enough: the
  // controller must fall back before QEMU's sync count passes the cap, whatever the fallback.
  for (const onStall of ['postcopy', 'abort'] as const) {
    const policy = defaultConvergencePolicy('tcg', onStall)
    const samples = Array.from({ length: 40 }, (_, i) => sample(1000 + i * 500, i + 1, msOf(1e6 * 0.85 ** i)))
    const actions = run(plan(onStall === 'postcopy' ? 'hybrid' : 'precopy'), policy, samples)
    const at = actions.findIndex(a => a === 'postcopy' || a === 'abort')
    t.ok(at >= 0, `${onStall}: a fallback is taken`)
    t.equal(actions[at], onStall, `${onStall}: the VM's fallback`)
    t.ok(samples[at] !== undefined && samples[at].dirtySyncCount < policy.maxDirtySyncs, `${onStall}: taken at ${String(samples[at]?.dirtySyncCount)} syncs, below the cap of ${policy.maxDirtySyncs} (the stop-and-copy or the switch takes one more)`)
    t.same(actions.slice(at + 1).filter(a => a !== '-'), [], `${onStall}: nothing after it`)
  }
})

t.test('stepConvergence is pure: the same inputs give the same outputs and the state is not mutated', async t => {
  const p = plan('hybrid')
  const policy = singlePass('postcopy')
  const st = initialConvergenceState(p, policy)
  const frozen = JSON.stringify(st)
  const a = stepConvergence(st, sample(100, 2, msOf(150)), policy, p.timeoutMs)
  const b = stepConvergence(st, sample(100, 2, msOf(150)), policy, p.timeoutMs)
  t.same(a, b)
  t.equal(JSON.stringify(st), frozen)
})
