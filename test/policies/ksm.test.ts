/**
 * Goal: the KSM policy starts page sharing when free memory runs short or the host is
 * overcommitted, holds between its thresholds, stops when not needed, keeps the scan rate within
 * its bounds and ksmd within its CPU budget, and refuses bad parameters naming the field.
 */
import t from 'tap'
import { baseSleepMs, decideKsm, defaultKsmParams, validateKsmParams, type KsmControl, type KsmParams } from '../../policies/ksm.js'
import { ConfigError } from '../../policies/config-error.js'

const P = defaultKsmParams()
const host = (freeMiB: number, committedMiB = 0, cpuShare: number | null = null): Parameters<typeof decideKsm>[0] =>
  ({ totalMiB: 10000, usedMiB: 10000 - freeMiB, committedMiB, cpuShare })

t.test('starts under the start threshold, holds between, stops above the stop threshold', async t => {
  const on = decideKsm(host(1500), null, P)
  t.equal(on.run, true, 'free 15 % < 20 %: on')
  t.equal(on.reason, 'lowFree')
  t.equal(on.pagesToScan, P.minPagesToScan + P.boostPages, 'boosted from the minimum')
  const held = decideKsm(host(2500), on, P)
  t.equal(held.run, true, 'free 25 %, between 20 and 30: still on')
  t.equal(held.reason, 'hold')
  t.equal(held.pagesToScan, on.pagesToScan - P.decayPages, 'and the rate decays')
  const heldOff = decideKsm(host(2500), { ...on, run: false }, P)
  t.equal(heldOff.run, false, 'between the thresholds an off KSM stays off')
  const off = decideKsm(host(3500), held, P)
  t.equal(off.run, false, 'free 35 % > 30 %: off')
  t.equal(off.reason, 'notNeeded')
})

t.test('overcommitted: on whatever the free memory (ksmtuned), unless asked not to', async t => {
  const d = decideKsm(host(5000, 9000), null, P)
  t.equal(d.run, true, 'committed 9000 + 2000 > 10000')
  t.equal(d.reason, 'overcommitted')
  t.equal(d.pagesToScan, P.minPagesToScan, 'no boost: free memory is not short')
  t.equal(decideKsm(host(5000, 9000), null, { ...P, runWhenOvercommitted: false }).run, false, 'runWhenOvercommitted false: off')
  const band = decideKsm(host(5000, 7500), { run: true, pagesToScan: 64, sleepMs: 10 }, P)
  t.equal(band.run, true, 'committed 7500 + 2000 fits but + 3000 does not: held on')
})

t.test('the scan rate stays within its bounds', async t => {
  let c: KsmControl | null = null
  for (let i = 0; i < 20; i++) c = decideKsm(host(500), c, P)
  t.equal(c?.pagesToScan, P.maxPagesToScan, 'boosts stop at the maximum')
  for (let i = 0; i < 40; i++) c = decideKsm(host(2500), c, P)
  t.equal(c?.pagesToScan, P.minPagesToScan, 'decays stop at the minimum')
})

t.test('ksmd is held within its CPU budget', async t => {
  const P = { ...defaultKsmParams(), sleepMs: 10 }
  const prev = { run: true, pagesToScan: 1000, sleepMs: 10 }
  const d = decideKsm(host(500, 0, 0.5), prev, P)
  t.equal(d.cpuLimited, true, '50 % of a core against a budget of 20 %')
  t.equal(d.pagesToScan, 400, 'the rate scaled by 0.2 / 0.5, no boost')
  const atMin = decideKsm(host(500, 0, 0.5), { run: true, pagesToScan: 64, sleepMs: 10 }, P)
  t.equal(atMin.pagesToScan, 64, 'at the minimum the rate stays')
  t.equal(atMin.sleepMs, 20, 'and the sleep doubles')
  const back = decideKsm(host(500, 0, 0.02), { run: true, pagesToScan: 64, sleepMs: 40 }, P)
  t.equal(back.sleepMs, 20, 'well under the budget the sleep halves back')
  const capped = decideKsm(host(500, 0, 0.18), { run: true, pagesToScan: 1000, sleepMs: 10 }, P)
  t.equal(capped.pagesToScan, 1111, 'a boost goes no further than the measured cost per page allows (1000 x 0.20 / 0.18)')
  t.equal(capped.cpuLimited, true)
  const free = decideKsm(host(500, 0, 0.05), { run: true, pagesToScan: 1000, sleepMs: 10 }, P)
  t.equal(free.pagesToScan, 1250, 'with room in the budget the boost goes on, up to the maximum')
  const notRunning = decideKsm(host(500, 0, 0.9), { run: false, pagesToScan: 1000, sleepMs: 10 }, P)
  t.equal(notRunning.cpuLimited, false, 'a CPU share measured while KSM was off is not ksmd\'s scan cost')
})

t.test('the base sleep is ksmtuned\'s', async t => {
  t.equal(baseSleepMs(16384, P), 10, '10 ms for 16 GiB')
  t.equal(baseSleepMs(4096, P), 40, '40 ms for 4 GiB')
  t.equal(baseSleepMs(65536, P), 10, 'at least 10 ms')
  t.equal(baseSleepMs(4096, { ...P, sleepMs: 5 }), 5, 'sleepMs overrides it')
  t.equal(decideKsm({ totalMiB: 600, usedMiB: 550, committedMiB: 0, cpuShare: null, physicalMiB: 16384 }, null, P).sleepMs, 10, 'scaled by the machine\'s memory, not by a budget counted for the VMs')
})

t.test('deterministic', async t => {
  const a = decideKsm(host(1234, 9000, 0.3), { run: true, pagesToScan: 700, sleepMs: 20 }, P)
  const b = decideKsm(host(1234, 9000, 0.3), { run: true, pagesToScan: 700, sleepMs: 20 }, P)
  t.same(a, b)
})

t.test('bad parameters name the field', async t => {
  const bad = (patch: Partial<KsmParams>, field: string): void => {
    let err: unknown = null
    try { validateKsmParams({ ...P, ...patch }) } catch (e) { err = e }
    t.ok(err instanceof ConfigError && err.path === field, `${JSON.stringify(patch)} -> ${field}: ${(err as Error | null)?.message ?? 'accepted'}`)
  }
  bad({ startFreePercent: 101 }, 'startFreePercent')
  bad({ stopFreePercent: 10 }, 'stopFreePercent')
  bad({ maxCpuPercent: 0 }, 'maxCpuPercent')
  bad({ minPagesToScan: 2000 }, 'maxPagesToScan')
  bad({ sleepMs: 0 }, 'sleepMs')
  bad({ advisor: 'yes' as unknown as boolean }, 'advisor')
  t.same(validateKsmParams(defaultKsmParams()), defaultKsmParams(), 'the defaults are valid')
})
