// Table tests for the balloon policy (policies/balloon.ts): who grows, who gives, by how much, and
// who is never touched (stale statistics, swapping, shares 0), plus its anti-oscillation and the
// validation of its parameters.
import t from 'tap'
import { decideBalloon, defaultBalloonParams, validateBalloonParams, type BalloonHost, type BalloonParams, type BalloonVm } from '../../policies/balloon.js'
import { ConfigError } from '../../policies/config-error.js'

const P = defaultBalloonParams()

function vm (id: string, o: Partial<BalloonVm> = {}): BalloonVm {
  return { id, maxMiB: 2048, minMiB: 512, shares: 1000, actualMiB: 2048, targetMiB: null, guestFreeMiB: 1500, statsAgeS: 1, swapping: false, ...o }
}
/** A host whose use is the sum of its guests' sizes plus `other` MiB. */
function host (totalMiB: number, vms: BalloonVm[], other = 0): BalloonHost {
  return { totalMiB, usedMiB: other + vms.reduce((s, v) => s + v.actualMiB, 0) }
}
const byId = (d: ReturnType<typeof decideBalloon>): Record<string, { to: number, why: string }> =>
  Object.fromEntries(d.changes.map(c => [c.id, { to: c.targetMiB, why: c.reason }]))

interface Row {
  name: string
  host: (vms: BalloonVm[]) => BalloonHost
  vms: BalloonVm[]
  params?: Partial<BalloonParams>
  expect: Record<string, { to: number, why: string }>
  held?: Record<string, string>
  unmetPositive?: boolean
}

const rows: Row[] = [
  {
    name: 'host within target +- band: nothing moves',
    host: vms => host(5120, vms), // 4096 of 5120 = 80 %
    vms: [vm('a'), vm('b')],
    expect: {}
  },
  {
    name: 'host over target: the guest with the most free memory gives first, one step at most',
    host: vms => host(4096, vms), // 4096 used, target 3277: 819 over
    vms: [vm('a', { guestFreeMiB: 1800 }), vm('b', { guestFreeMiB: 900 })],
    // step = max(128, 5 % of 2048 = 102) = 128 each; a gives 128, b gives 128 (still over, but
    // what they can give covers it: the caps pace the reclaim, the host is not short)
    expect: { a: { to: 1920, why: 'reclaim' }, b: { to: 1920, why: 'reclaim' } }
  },
  {
    name: 'a bigger step lets reclaim land on the target in one step',
    host: vms => host(4096, vms),
    vms: [vm('a', { guestFreeMiB: 1800 }), vm('b', { guestFreeMiB: 900 })],
    params: { shrinkStepMiBMin: 1024 },
    // a's spare: free 1800 - 1.5 * max(64, 20 % of size)... = (1800 - 0.3*2048)/(0.7) = 1694 > 819 wanted
    expect: { a: { to: 2048 - 819, why: 'reclaim' } }
  },
  {
    name: 'a stale guest is never shrunk, however much it has free',
    host: vms => host(4096, vms),
    vms: [vm('a', { guestFreeMiB: 1900, statsAgeS: 30 }), vm('b', { guestFreeMiB: 900 })],
    expect: { b: { to: 1920, why: 'reclaim' } },
    held: { a: 'stale' },
    unmetPositive: true
  },
  {
    name: 'a guest that never sent statistics is never shrunk',
    host: vms => host(4096, vms),
    vms: [vm('a', { guestFreeMiB: null, statsAgeS: null }), vm('b', { guestFreeMiB: 900 })],
    expect: { b: { to: 1920, why: 'reclaim' } },
    held: { a: 'noStats' },
    unmetPositive: true
  },
  {
    name: 'a swapping guest is never shrunk; it grows instead',
    host: vms => host(8192, vms),
    vms: [vm('a', { actualMiB: 1024, guestFreeMiB: 900, swapping: true }), vm('b', { actualMiB: 1024 })],
    // b, not under pressure, gets its share of the host's room back
    expect: { a: { to: 1024 + 128, why: 'pressure' }, b: { to: 2048, why: 'giveBack' } }
  },
  {
    name: 'a guest under its free floor grows at once, back to twice its floor, and the host takes it from the idle one',
    host: vms => host(4096, vms, 1228), // 1228 + 2048 = 3276 = target
    vms: [vm('busy', { actualMiB: 1024, guestFreeMiB: 100 }), vm('idle', { actualMiB: 1024, guestFreeMiB: 900 })],
    // busy floor = max(64, 204.8) = 204.8; grow to 409.6 free: +309.6 -> 1334; idle gives 128 (one step)
    expect: { busy: { to: 1334, why: 'pressure' }, idle: { to: 896, why: 'reclaim' } }
  },
  {
    name: 'growth is capped at the guest maximum',
    host: vms => host(16384, vms),
    vms: [vm('a', { actualMiB: 2000, guestFreeMiB: 10 })],
    expect: { a: { to: 2048, why: 'pressure' } }
  },
  {
    name: 'reclaim never goes below the guest minimum',
    host: vms => host(600, vms), // target 480: 120 over, but the minimum leaves 40 to take
    vms: [vm('a', { actualMiB: 600, minMiB: 560, guestFreeMiB: 500 })],
    expect: { a: { to: 560, why: 'reclaim' } },
    unmetPositive: true
  },
  {
    name: 'reclaim keeps the free memory above 1.5 x the floor',
    host: vms => host(2048, vms),
    vms: [vm('a', { actualMiB: 1024, minMiB: 128, guestFreeMiB: 150 })],
    // floor(1024) = 204.8 > free: under pressure -> grows, does not shrink
    expect: { a: { to: 1024 + Math.round(409.6 - 150), why: 'pressure' } }
  },
  {
    name: 'between the floor and the shrink line nothing happens (hysteresis)',
    host: vms => host(1024, vms),
    vms: [vm('a', { actualMiB: 1024, minMiB: 128, guestFreeMiB: 280 })],
    // floor 204.8 < 280 < 1.5 * 204.8 = 307: neither grows nor shrinks
    expect: {},
    held: { a: 'atFloor' },
    unmetPositive: true
  },
  {
    name: 'shares 0 excludes a VM',
    host: vms => host(4096, vms),
    vms: [vm('a', { shares: 0, guestFreeMiB: 1900 }), vm('b', { guestFreeMiB: 10 })],
    expect: {},
    held: { a: 'excluded', b: 'atMax' },
    unmetPositive: true
  },
  {
    name: 'host under target: memory is handed back by shares',
    host: vms => host(10240, vms), // target 8192, used 2048
    vms: [vm('a', { actualMiB: 1024 }), vm('b', { actualMiB: 1024, shares: 3000 })],
    expect: { a: { to: 2048, why: 'giveBack' }, b: { to: 2048, why: 'giveBack' } }
  },
  {
    name: 'hand-back splits scarce room by shares',
    host: vms => host(3000, vms), // target 2400, used 2000: 400 room
    vms: [vm('a', { actualMiB: 1000 }), vm('b', { actualMiB: 1000, shares: 3000 })],
    expect: { a: { to: 1100, why: 'giveBack' }, b: { to: 1300, why: 'giveBack' } }
  },
  {
    name: 'a shrink in flight counts: no new step until the balloon has moved',
    host: vms => host(4096, vms),
    vms: [vm('a', { actualMiB: 2048, targetMiB: 1920, guestFreeMiB: 1800 }), vm('b', { guestFreeMiB: 900 })],
    // a's target already one step below its actual size: it cannot go lower this step (it can
    // in the next ones: not short)
    expect: { b: { to: 1920, why: 'reclaim' } }
  },
  {
    name: 'changes under the dead band are skipped',
    host: vms => host(5000, vms), // target 4000, used 4096 = 96 over, outside the 100 MiB band? no: band 2 % = 100
    vms: [vm('a'), vm('b')],
    expect: {}
  }
]

for (const r of rows) {
  t.test(r.name, async t => {
    const p = validateBalloonParams({ ...P, ...r.params })
    const d = decideBalloon(r.host(r.vms), r.vms, p)
    t.same(byId(d), r.expect, 'changes')
    for (const [id, why] of Object.entries(r.held ?? {})) t.ok(d.held.some(h => h.id === id && h.why === why), `${id} held: ${why} (held ${JSON.stringify(d.held)})`)
    t.equal(d.unmetMiB > 0, r.unmetPositive === true, `unmet ${d.unmetMiB}`)
    for (const c of d.changes) t.ok(Number.isInteger(c.targetMiB), 'integer MiB')
    // Determinism: the same facts in another order give the same decision.
    t.same(decideBalloon(r.host(r.vms), [...r.vms].reverse(), p), d, 'order-independent')
  })
}

t.test('reclaimable memory sums what guests could give without breaching their floors', async t => {
  const vms = [vm('a', { guestFreeMiB: 1800 }), vm('b', { guestFreeMiB: 100 }), vm('c', { guestFreeMiB: 1900, statsAgeS: 60 })]
  const d = decideBalloon(host(8192, vms), vms, P)
  // a: min((1800 - 96), (1800 - 0.3 * 2048) / 0.7, 2048 - 512) = 1536; b under pressure; c stale
  t.equal(Math.round(d.reclaimableMiB), 1536)
  t.same(d.pressured, ['b'])
})

t.test('a repeated step converges and then stays put (no oscillation)', async t => {
  // Budget host: used = sum of balloons + 512. Guests' free memory follows their balloon (an
  // idle guest using 300 MiB of its memory).
  const total = 4096
  let vms = [vm('a', { guestFreeMiB: 2048 - 300 }), vm('b', { guestFreeMiB: 2048 - 400 })]
  const seen: string[] = []
  for (let i = 0; i < 30; i++) {
    const d = decideBalloon(host(total, vms, 512), vms, P)
    vms = vms.map(v => {
      const c = d.changes.find(x => x.id === v.id)
      const size = c?.targetMiB ?? v.actualMiB
      const used = v.maxMiB - (v.guestFreeMiB as number) - (v.maxMiB - v.actualMiB)
      return { ...v, actualMiB: size, targetMiB: size, guestFreeMiB: size - used }
    })
    seen.push(vms.map(v => v.actualMiB).join('/'))
  }
  const usedEnd = vms.reduce((s, v) => s + v.actualMiB, 512)
  t.ok(Math.abs(usedEnd - total * 0.8) <= total * 0.02 + 1, `lands within the band of the target (${usedEnd})`)
  t.equal(new Set(seen.slice(-10)).size, 1, `steady at the end: ${seen.slice(-3).join(' ')}`)
})

t.test('parameter validation names the field', async t => {
  const bad: Array<[Partial<BalloonParams>, string]> = [
    [{ targetPercent: 0 }, 'targetPercent'],
    [{ targetPercent: 101 }, 'targetPercent'],
    [{ shrinkStepPercent: 0 }, 'shrinkStepPercent'],
    [{ growToFactor: 1.2, shrinkToFactor: 1.5 }, 'growToFactor'],
    [{ statsStaleAfterS: Number.NaN }, 'statsStaleAfterS']
  ]
  for (const [o, field] of bad) {
    let err: unknown = null
    try { validateBalloonParams({ ...P, ...o }) } catch (e) { err = e }
    t.ok(err instanceof ConfigError && err.path === field && err.message.includes(field), `${field}: ${String(err)}`)
  }
  t.same(validateBalloonParams({ ...P }), P, 'defaults pass')
})

t.test('host memory pressure (PSI some avg10): sustained over the threshold, it reclaims a step and gives nothing back', async t => {
  // 2048 of 5120 used: far under the 80 % target, so without pressure the room is handed back.
  const vms = [vm('a', { actualMiB: 1024, maxMiB: 2048, guestFreeMiB: 800 }), vm('b', { actualMiB: 1024, maxMiB: 2048, guestFreeMiB: 300 })]
  const base = host(5120, vms)
  const calm = decideBalloon({ ...base, pressureSome10: 35, pressureStreak: 0 }, vms, P)
  t.equal(calm.hostPressureStreak, 1, 'the streak starts')
  t.equal(calm.hostPressured, false, 'one sample is not sustained (default 3)')
  t.ok(calm.changes.every(c => c.reason === 'giveBack'), 'not yet pressured: room is handed back as usual')
  const d = decideBalloon({ ...base, pressureSome10: 35, pressureStreak: 2 }, vms, P)
  t.equal(d.hostPressureStreak, 3)
  t.equal(d.hostPressured, true)
  t.equal(d.pressureWantMiB, P.shrinkStepMiBMin)
  t.same(byId(d), { a: { to: 1024 - 128, why: 'reclaim' } }, 'one step from the guest with the most spare, nothing given back')
  t.equal(d.unmetMiB, 0, 'the guests can give it: not stressed')
  const under = decideBalloon({ ...base, pressureSome10: 19.9, pressureStreak: 7 }, vms, P)
  t.equal(under.hostPressureStreak, 0, 'under the threshold the streak ends')
  t.equal(under.hostPressured, false)
  const none = decideBalloon({ ...base, pressureSome10: null, pressureStreak: 7 }, vms, P)
  t.equal(none.hostPressureStreak, 0, 'no PSI: never pressured')
})

t.test('host memory pressure that the guests cannot relieve is unmet: the host is stressed', async t => {
  const vms = [vm('a', { actualMiB: 1024, guestFreeMiB: 100 }), vm('s', { actualMiB: 1024, guestFreeMiB: 900, statsAgeS: 60 })]
  const d = decideBalloon({ ...host(5120, vms), pressureSome10: 60, pressureStreak: 5 }, vms, P)
  t.equal(d.hostPressured, true)
  t.same(d.changes.filter(c => c.reason === 'reclaim'), [], 'nobody can give (one at its floor, one stale)')
  t.ok(d.unmetMiB >= P.shrinkStepMiBMin, `unmet ${d.unmetMiB} MiB`)
  const custom = decideBalloon({ ...host(5120, vms), pressureSome10: 60, pressureStreak: 0 }, vms, { ...P, hostPressurePercent: 50, hostPressureSamples: 1 })
  t.equal(custom.hostPressured, true, 'a threshold and streak of the operator\'s own')
})

t.test('host pressure parameters: a bad value names the field', async t => {
  for (const [k, v] of [['hostPressurePercent', 0], ['hostPressurePercent', 101], ['hostPressurePercent', Number.NaN], ['hostPressureSamples', 0], ['hostPressureSamples', 2.5]] as const) {
    let err: unknown = null
    try { validateBalloonParams({ ...P, [k]: v }) } catch (e) { err = e }
    t.ok(err instanceof ConfigError && err.path === k, `${k} = ${v}: ${(err as Error | null)?.message ?? 'accepted'}`)
  }
})
