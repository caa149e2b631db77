/**
 * The embedded simulated hypervisor driver (agent/adapters/sim-driver.ts).
 *
 * Goal: load patterns are deterministic functions of (seed, time since start), stay in their
 * bounds, and the driver keeps the HypervisorDriver contract (typed rejections, never a throw).
 * Method: a clock the test owns; pure pattern checks over many time points; a trace file
 * written to a temporary directory.
 */
import t from 'tap'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { compilePattern, loadTrace, resolvePattern, simDriver, type PatternSpec, type SimVmConfig } from '../../agent/adapters/sim-driver.js'
import { memoryLogger, silentLogger } from '../../agent/lib/logger.js'

const logger = silentLogger()
const MIN = 60_000

function series (fn: (t: number) => number, stepMs: number, n: number): number[] {
  return Array.from({ length: n }, (_, i) => fn(i * stepMs))
}

t.test('constant: cpuUtil is the level scaled by vcpus over host cores', async t => {
  let now = 5_000
  const d = simDriver({ vms: [{ id: 'a', vcpus: 2, memMiB: 1024, pattern: 'constant', cpuMean: 0.5 }], hostCpuCores: 8 })({ logger, now: () => now })
  t.same(await d.list(), [{ id: 'a', vcpus: 2, memMiB: 1024, cpuUtil: 0.125, memUsedMiB: Math.round(1024 * 0.6 * (0.85 + 0.15 * 0.5)), state: 'running' }])
  now += 3_600_000
  t.equal((await d.list())[0]?.cpuUtil, 0.125)
})

t.test('patterns are deterministic in the seed and the time since start', async t => {
  const vms: SimVmConfig[] = ['sine', 'walk', 'spiky'].map((pattern, i) => ({ id: `vm${i}`, vcpus: 4, memMiB: 2048, pattern }))
  const run = async (seed: number, startMs: number): Promise<number[][]> => {
    let now = startMs
    const d = simDriver({ vms, seed, hostCpuCores: 4 })({ logger, now: () => now })
    const out: number[][] = []
    for (let i = 0; i < 200; i++) {
      out.push((await d.list()).map(v => v.cpuUtil))
      now += 7_000
    }
    return out
  }
  const a = await run(42, 0)
  t.same(await run(42, 1_700_000_000_000), a, 'same seed, other start time: same loads')
  t.notSame(await run(43, 0), a, 'another seed: other loads')
  t.same(series(compilePattern({ kind: 'walk', start: 0.3, stepMax: 0.05, stepMs: 1000, min: 0, max: 1 }, 9), 500, 50),
    series(compilePattern({ kind: 'walk', start: 0.3, stepMax: 0.05, stepMs: 1000, min: 0, max: 1 }, 9), 500, 50))
})

t.test('sine: within mean ± amplitude, periodic, seeded phase', async t => {
  const spec: PatternSpec = { kind: 'sine', mean: 0.4, amplitude: 0.3, periodMs: 10 * MIN }
  const f = compilePattern(spec, 7)
  for (let ms = 0; ms < 30 * MIN; ms += 7_919) {
    const v = f(ms)
    t.ok(v >= 0.1 - 1e-9 && v <= 0.7 + 1e-9, `in range at ${ms}`)
    t.ok(Math.abs(v - f(ms + spec.periodMs)) < 1e-9, `periodic at ${ms}`)
  }
  t.not(compilePattern(spec, 7)(0), compilePattern(spec, 8)(0), 'phase depends on the seed')
  t.equal(compilePattern({ ...spec, phase: Math.PI / 2 }, 1)(0), 0.7, 'explicit phase')
  t.same(resolvePattern({ id: 'x', pattern: 'sine', cpuMean: 0.9 }), { kind: 'sine', mean: 0.9, amplitude: 1 - 0.9, periodMs: 10 * MIN }, 'amplitude shrinks to fit in [0, 1]')
})

t.test('walk: bounded steps, bounded values, pure in t even when asked backwards', async t => {
  const spec: PatternSpec = { kind: 'walk', start: 0.5, stepMax: 0.1, stepMs: 1000, min: 0.2, max: 0.8 }
  const f = compilePattern(spec, 3)
  const forward = series(f, 1000, 500)
  for (let i = 1; i < forward.length; i++) {
    const prev = forward[i - 1] as number
    const cur = forward[i] as number
    if (Math.abs(cur - prev) > 0.1 + 1e-12 || cur < 0.2 || cur > 0.8) t.fail(`step ${i}: ${prev} -> ${cur}`)
  }
  t.ok(new Set(forward).size > 100, 'it moves')
  t.equal(f(123_456), forward[123], 'asking backwards gives the same value')
  t.equal(f(-5), 0.5, 'before the start: the start value')
})

t.test('spiky: base or peak, bursts as often as the chance says', async t => {
  const spec: PatternSpec = { kind: 'spiky', base: 0.1, peak: 0.95, chance: 0.05, spikeSteps: 3, stepMs: 1000 }
  const values = series(compilePattern(spec, 11), 1000, 20_000)
  t.ok(values.every(v => v === 0.1 || v === 0.95), 'two levels only')
  const share = values.filter(v => v === 0.95).length / values.length
  // P(peak) = 1 - (1 - chance)^spikeSteps = 0.1426
  t.ok(share > 0.12 && share < 0.165, `peak share ${share.toFixed(4)} near 0.1426`)
  let longest = 0
  let run = 0
  for (const v of values) { run = v === 0.95 ? run + 1 : 0; longest = Math.max(longest, run) }
  t.ok(longest >= 3, 'a burst lasts spikeSteps steps (or more when bursts overlap)')
})

t.test('trace files: PlanetLab format, interpolation, looping, errors', async t => {
  const dir = await mkdtemp(join(tmpdir(), 'starling-trace-'))
  t.teardown(() => rm(dir, { recursive: true, force: true }))
  await writeFile(join(dir, 'vm a'), '0\n40\n100\n20\n')
  t.same(loadTrace(join(dir, 'vm a')), [0, 40, 100, 20])
  const spec = resolvePattern({ id: 'x', pattern: 'trace:vm a' }, { traceDir: dir, traceIntervalMs: 1000 })
  t.match(spec, { kind: 'trace', intervalMs: 1000, offsetMs: 0 })
  const f = compilePattern(spec, 1)
  t.equal(f(0), 0)
  t.equal(f(1000), 0.4)
  t.equal(f(1500), 0.7, 'linear between samples')
  t.equal(f(3500), 0.1, 'wraps from the last sample to the first')
  t.equal(f(4000 + 2000), 1, 'loops')

  let now = 0
  const d = simDriver({ vms: [{ id: 'pl', vcpus: 1, memMiB: 512, pattern: `trace:${join(dir, 'vm a')}` }], hostCpuCores: 2, traceIntervalMs: 300_000 })({ logger, now: () => now })
  await d.list()
  now = 2 * 300_000
  t.equal((await d.list())[0]?.cpuUtil, 0.5, '100 % of 1 vcpu on a 2-core host, at the default 5-minute interval')

  await writeFile(join(dir, 'bad'), '10\n20\nabc\n')
  t.throws(() => loadTrace(join(dir, 'bad')), { name: 'TraceFileError', code: 'TRACE_INVALID', message: /line 3: "abc"/ })
  await writeFile(join(dir, 'over'), '10\n101\n')
  t.throws(() => loadTrace(join(dir, 'over')), { code: 'TRACE_INVALID', message: /line 2/ })
  await writeFile(join(dir, 'empty'), '\n\n')
  t.throws(() => loadTrace(join(dir, 'empty')), { code: 'TRACE_INVALID', message: /no samples/ })
  t.throws(() => simDriver({ vms: [{ id: 'm', vcpus: 1, memMiB: 1, pattern: 'trace:missing' }], traceDir: dir })({ logger }),
    { name: 'TraceFileError', message: /missing: cannot be read/ })
})

t.test('bad configuration fails at construction with a clear message', async t => {
  const make = (vm: SimVmConfig) => () => simDriver({ vms: [vm] })({ logger })
  t.throws(make({ id: 'a', vcpus: 1, memMiB: 1, pattern: 'zigzag' }), { name: 'DriverError', code: 'DRIVER_FAILED', message: /unknown load pattern "zigzag"/ })
  t.throws(make({ id: 'a', vcpus: 0, memMiB: 1 }), { message: /vcpus must be a positive integer/ })
  t.throws(make({ id: 'a', vcpus: 1, memMiB: 1, cpuMean: 1.5 }), { message: /cpuMean must be in \[0, 1\]/ })
  t.throws(make({ id: 'a', vcpus: 1, memMiB: 1, pattern: { kind: 'walk', start: 0.5, stepMax: 0.1, stepMs: 1, min: 0.9, max: 0.1 } }), { message: /min must be <= max/ })
  t.throws(() => simDriver({ vms: [{ id: 'a', vcpus: 1, memMiB: 1 }, { id: 'a', vcpus: 1, memMiB: 1 }] })({ logger }), { message: /configured twice/ })
})

t.test('start, stop, list: the HypervisorDriver contract', async t => {
  let now = 0
  const log = memoryLogger()
  const d = simDriver({ vms: [{ id: 'cfg', vcpus: 2, memMiB: 1024, pattern: 'constant', cpuMean: 0.8 }], hostCpuCores: 4 })({ logger: log, now: () => now })
  t.equal(d.kind, 'sim')
  await d.start({ id: 'new', vcpus: 1, memMiB: 256, extra: { pattern: 'constant', cpuMean: 0.4 } })
  t.same((await d.list()).map(v => [v.id, v.state, v.cpuUtil]), [['cfg', 'running', 0.4], ['new', 'running', 0.1]], 'sorted by id')
  await t.rejects(d.start({ id: 'new', vcpus: 1, memMiB: 256 }), { name: 'DriverError', code: 'DRIVER_FAILED', message: /already running/ })
  await d.stop('cfg')
  await d.stop('cfg')
  t.match(await d.list(), [{ id: 'cfg', state: 'stopped', cpuUtil: 0, memUsedMiB: 0 }, { id: 'new', state: 'running' }])
  await t.rejects(d.stop('ghost'), { name: 'DriverError', code: 'VM_NOT_FOUND' })
  now = 10_000
  await d.start({ id: 'cfg', vcpus: 2, memMiB: 1024 })
  t.equal((await d.list())[0]?.cpuUtil, 0.4, 'a configured VM restarted keeps its configured pattern')
  t.equal(log.find('vm cfg became stopped (from running)').length, 1, 'transition logged once')
  t.equal(log.find('vm cfg became running (from stopped)').length, 1)
  const p = d.start({ id: 'x', vcpus: -1, memMiB: 1 })
  t.type(p, Promise, 'a bad spec is a rejection, not a throw')
  await t.rejects(p, { code: 'DRIVER_FAILED' })
})

t.test('faults, aborts and close', async t => {
  const d = simDriver({ vms: [{ id: 'a', vcpus: 1, memMiB: 1 }] })({ logger, now: () => 0 })
  d.setFault('list', { code: 'DRIVER_TIMEOUT', times: 2 })
  await t.rejects(d.list(), { code: 'DRIVER_TIMEOUT', message: /injected/ })
  await t.rejects(d.list(), { code: 'DRIVER_TIMEOUT' })
  t.equal((await d.list()).length, 1, 'the fault is spent')
  d.setFault('stop', { code: 'DRIVER_UNREACHABLE' })
  await t.rejects(d.stop('a'), { code: 'DRIVER_UNREACHABLE' })
  await t.rejects(d.stop('a'), { code: 'DRIVER_UNREACHABLE' }, 'until cleared')
  d.setFault('stop', null)
  await d.stop('a')
  await t.rejects(d.list(AbortSignal.abort()), { name: 'DriverError', code: 'DRIVER_TIMEOUT', message: /aborted/ })
  await d.close()
  await t.rejects(d.list(), { code: 'DRIVER_UNREACHABLE' })
})

t.test('listAt takes the time from the caller', async t => {
  const d = simDriver({ vms: [{ id: 'w', vcpus: 2, memMiB: 64, pattern: 'walk' }], seed: 5, hostCpuCores: 2 })({
    logger,
    now: () => { throw new Error('the clock must not be read') }
  })
  const a = d.listAt(1_000_000)
  const b = d.listAt(1_000_000 + 60 * 60_000)
  t.equal(a.length, 1)
  t.ok(b[0]!.cpuUtil >= 0 && b[0]!.cpuUtil <= 1)
  t.same(d.listAt(1_000_000), a, 'same time, same answer')
})
