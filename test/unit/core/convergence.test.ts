/**
 * Goal: the convergence policy picks the migration mode the pre-copy model justifies, climbs the
 * downtime ramp on stalls, and takes the VM's fallback at the stall limit, the time budget and
 * the TCG sync cap. Method: table tests over the pure functions; a run feeds a list of progress
 * samples through stepConvergence and compares the actions with the expected ones.
 */
import t from 'tap'
import {
  checkConvergencePolicy, defaultConvergencePolicy, estimatePrecopy, initialConvergenceState, planMigration, stepConvergence,
  type ConvergenceAction, type ConvergencePolicy, type ConvergenceSample, type MigrationEstimateInput, type MigrationPlan
} from '../../../agent/core/migration/convergence.js'

const MiB = 1024 * 1024
const GiB = 1024 * MiB

t.test('estimatePrecopy follows the pre-copy model', async t => {
  const cases: Array<{ name: string, in: MigrationEstimateInput, downMs: number, converges: boolean, rounds?: number, totalMs?: number, downtimeMs?: number }> = [
    { name: 'idle guest: one pass, no pause', in: { memBytes: GiB, dirtyRateBytesPerS: 0, bandwidthBytesPerS: 128 * MiB }, downMs: 100, converges: true, rounds: 1, totalMs: 8000, downtimeMs: 0 },
    // r = 1/8: leftovers 128 MiB, 16 MiB, 2 MiB; the closed form gives (M/B)(1-r^4)/(1-r) = 9140.6 ms
    { name: 'r = 1/8 converges in 3 rounds at 100 ms', in: { memBytes: GiB, dirtyRateBytesPerS: 16 * MiB, bandwidthBytesPerS: 128 * MiB }, downMs: 100, converges: true, rounds: 3, totalMs: 8 * (1 - 1 / 4096) / (7 / 8) * 1000, downtimeMs: 15.625 },
    { name: 'the same at 150 ms needs 2 rounds', in: { memBytes: GiB, dirtyRateBytesPerS: 16 * MiB, bandwidthBytesPerS: 128 * MiB }, downMs: 150, converges: true, rounds: 2, downtimeMs: 125 },
    { name: 'D >= B never converges', in: { memBytes: GiB, dirtyRateBytesPerS: 200 * MiB, bandwidthBytesPerS: 128 * MiB }, downMs: 500, converges: false },
    { name: 'a 64 MiB working set rewritten flat out fits in 500 ms', in: { memBytes: 256 * MiB, workingSetBytes: 64 * MiB, dirtyRateBytesPerS: GiB, bandwidthBytesPerS: 128 * MiB }, downMs: 500, converges: true, rounds: 1, downtimeMs: 500 },
    { name: '...but not in 300 ms', in: { memBytes: 256 * MiB, workingSetBytes: 64 * MiB, dirtyRateBytesPerS: GiB, bandwidthBytesPerS: 128 * MiB }, downMs: 300, converges: false },
    { name: 'no bandwidth', in: { memBytes: GiB, dirtyRateBytesPerS: 0, bandwidthBytesPerS: 0 }, downMs: 300, converges: false }
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
  const tcg4 = (onStall: 'abort' | 'postcopy'): ConvergencePolicy => ({ ...defaultConvergencePolicy('tcg', onStall), maxDirtySyncs: 4 })
  const cases: Array<{ name: string, in: MigrationEstimateInput, policy: ConvergencePolicy, mode: string, downMs: number, reason: RegExp }> = [
    { name: 'idle, abort policy', in: idle, policy: defaultConvergencePolicy('tcg', 'abort'), mode: 'precopy', downMs: 100, reason: /1 round\(s\) at 100 ms/ },
    { name: 'idle, post-copy policy: hybrid keeps the fallback open', in: idle, policy: defaultConvergencePolicy('tcg', 'postcopy'), mode: 'hybrid', downMs: 100, reason: /converges/ },
    { name: 'moderate under kvm: 3 rounds at 100 ms', in: moderate, policy: defaultConvergencePolicy('kvm', 'abort'), mode: 'precopy', downMs: 100, reason: /3 round\(s\) at 100 ms/ },
    { name: 'moderate with a cap of 4 syncs: 2 rounds, starts at 150 ms', in: moderate, policy: tcg4('postcopy'), mode: 'hybrid', downMs: 150, reason: /2 round\(s\) at 150 ms/ },
    { name: 'moderate under tcg (one pass): post-copy', in: moderate, policy: defaultConvergencePolicy('tcg', 'postcopy'), mode: 'postcopy', downMs: 100, reason: /more than 1 round\(s\) or more than 500 ms.*post-copy at once/ },
    { name: 'working set rewritten flat out: only at the top of the ramp', in: heavy, policy: defaultConvergencePolicy('tcg', 'abort'), mode: 'precopy', downMs: 500, reason: /1 round\(s\) at 500 ms/ },
    { name: 'hot guest, post-copy allowed', in: hot, policy: defaultConvergencePolicy('kvm', 'postcopy'), mode: 'postcopy', downMs: 100, reason: /never converges; post-copy after the first pass/ },
    { name: 'hot guest, post-copy not allowed', in: hot, policy: defaultConvergencePolicy('tcg', 'abort'), mode: 'reject', downMs: 100, reason: /never converges; post-copy not allowed/ },
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
  t.equal(defaultConvergencePolicy('tcg', 'abort').maxDirtySyncs, 3, 'TCG cap of 3 syncs: one pass, then stop-and-copy')
  const bad: ConvergencePolicy = { ...defaultConvergencePolicy('kvm', 'abort'), downtimeRampMs: [300, 100], rampAtStalls: [], maxDirtySyncs: 2 }
  t.match(checkConvergencePolicy(bad), [/ascending/, /one shorter/, /maxDirtySyncs/])
})

/** Samples on a 100 MB/s link: transferred grows with time, so the measured rate is 1e8 B/s. */
const RATE = 1e8
const sample = (ms: number, syncs: number, remainingBytes: number, status = 'active'): ConvergenceSample =>
  ({ status, totalTimeMs: ms, transferredBytes: ms * RATE / 1000, remainingBytes, dirtySyncCount: syncs })
/** Bytes that take `ms` to send at RATE. */
const msOf = (ms: number): number => ms * RATE / 1000

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
  const tcgAbort = { ...defaultConvergencePolicy('tcg', 'abort'), maxDirtySyncs: 4 }
  const tcgPost = { ...defaultConvergencePolicy('tcg', 'postcopy'), maxDirtySyncs: 4 }
  const tcg3 = defaultConvergencePolicy('tcg', 'postcopy')
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
      name: 'tcg (cap 3): one pass whose rest fits completes untouched',
      plan: plan('hybrid'), policy: tcg3,
      samples: [sample(100, 1, msOf(2000)), sample(2000, 2, msOf(60)), sample(2050, 3, 0, 'completed')],
      actions: ['-', '-', '-']
    },
    {
      name: 'tcg (cap 3): the rest does not fit after the pass, post-copy',
      plan: plan('hybrid'), policy: tcg3,
      samples: [sample(100, 1, msOf(2000)), sample(2000, 2, msOf(400))],
      actions: ['-', 'postcopy']
    },
    {
      name: 'tcg (cap 3): the stop-and-copy sync itself (nothing left) is not a reason to fall back',
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
      name: 'planned post-copy at once (tcg): the driver already switched, nothing to do',
      plan: plan('postcopy'), policy: defaultConvergencePolicy('tcg', 'postcopy'),
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
      name: 'a rejected plan does nothing',
      plan: plan('reject'), policy: kvmAbort,
      samples: [sample(100, 1, msOf(5000)), sample(100_000, 9, msOf(5000))],
      actions: ['-', '-']
    }
  ]
  for (const c of cases) t.same(run(c.plan, c.policy, c.samples), c.actions, c.name)
})

t.test('stepConvergence is pure: the same inputs give the same outputs and the state is not mutated', async t => {
  const p = plan('hybrid')
  const policy = defaultConvergencePolicy('tcg', 'postcopy')
  const st = initialConvergenceState(p, policy)
  const frozen = JSON.stringify(st)
  const a = stepConvergence(st, sample(100, 2, msOf(150)), policy, p.timeoutMs)
  const b = stepConvergence(st, sample(100, 2, msOf(150)), policy, p.timeoutMs)
  t.same(a, b)
  t.equal(JSON.stringify(st), frozen)
})
