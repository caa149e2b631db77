/**
 * The systeminformation host sampler (agent/adapters/si-sampler.ts).
 *
 * Goal: plausible figures from the real machine; exact arithmetic (network delta, capacity,
 * clamping) and typed failures against a scripted fake of systeminformation.
 * Method: one smoke test on the real module; the rest with a fake whose counters and clock the
 * test sets.
 */
import t from 'tap'
import { siSampler, type SystemInfoApi } from '../../agent/adapters/si-sampler.js'
import { memoryLogger, silentLogger } from '../../agent/lib/logger.js'

const logger = silentLogger()
const MIB = 1024 * 1024

t.test('real systeminformation: plausible figures, first sample slow, later ones fast', async t => {
  const sampler = siSampler({})({ logger })
  const t0 = performance.now()
  const first = await sampler.sample()
  const firstMs = performance.now() - t0
  t.comment(`first sample ${firstMs.toFixed(0)} ms: ${JSON.stringify(first)}`)
  t.ok(first.cpuUtil >= 0 && first.cpuUtil <= 1, 'cpuUtil is a fraction')
  t.ok(first.memUsedMiB > 0 && first.memUsedMiB <= first.capacity.memMiB, 'memory used within capacity')
  t.equal(first.netMbps, 0, 'no network rate before a second sample')
  t.ok(first.capacity.cpuCores >= 1)
  t.ok(first.capacity.cpuMipsPerCore > 0)
  t.ok(first.capacity.netMbps > 0)
  await new Promise(resolve => setTimeout(resolve, 250))
  const t1 = performance.now()
  const second = await sampler.sample()
  const secondMs = performance.now() - t1
  t.comment(`second sample ${secondMs.toFixed(0)} ms: ${JSON.stringify(second)}`)
  t.ok(second.netMbps >= 0 && Number.isFinite(second.netMbps))
  t.ok(secondMs < 2000, 'later samples do not wait for a new CPU window')
})

/** A scripted systeminformation: the test sets what each call returns. */
function fakeSi () {
  const state = {
    load: 25,
    active: 2048 * MIB,
    total: 8192 * MIB,
    cores: 4,
    speedGHz: 2.4,
    bytes: new Map<string, { rx: number, tx: number }>([['eth0', { rx: 0, tx: 0 }], ['br0', { rx: 0, tx: 0 }]]),
    speeds: new Map<string, number | null>([['eth0', 10_000], ['br0', -1]]),
    defaultIface: 'eth0',
    fail: null as Error | null,
    hang: false,
    calls: { cpu: 0, stats: [] as string[] }
  }
  const guard = async (): Promise<void> => {
    if (state.fail !== null) throw state.fail
    if (state.hang) await new Promise(() => {})
  }
  const api: SystemInfoApi = {
    currentLoad: async () => { await guard(); return { currentLoad: state.load } },
    mem: async () => { await guard(); return { total: state.total, active: state.active } },
    cpu: async () => { state.calls.cpu++; await guard(); return { cores: state.cores, speed: state.speedGHz } },
    networkStats: async (ifaces?: string) => {
      await guard()
      state.calls.stats.push(ifaces ?? '')
      return [...state.bytes].map(([iface, b]) => ({ iface, rx_bytes: b.rx, tx_bytes: b.tx }))
    },
    networkInterfaces: async () => [...state.speeds].map(([iface, speed]) => ({ iface, speed, internal: false })),
    networkInterfaceDefault: async () => state.defaultIface
  }
  return { state, api }
}

t.test('network rate is the byte delta over the clock delta, default-route interface only', async t => {
  const { state, api } = fakeSi()
  let nowMs = 1000
  const log = memoryLogger()
  const sampler = siSampler({})({ logger: log, now: () => nowMs, systemInfo: api })
  const a = await sampler.sample()
  t.same(a, { cpuUtil: 0.25, memUsedMiB: 2048, netMbps: 0, capacity: { cpuCores: 4, cpuMipsPerCore: 2400, memMiB: 8192, netMbps: 10_000 } })
  t.same(state.calls.stats, ['eth0'], 'only the default-route interface is read')
  // 2 s later: eth0 moved 25 MB in and 5 MB out = 240 Mbit over 2 s; br0 traffic is ignored.
  nowMs += 2000
  state.bytes.set('eth0', { rx: 25_000_000, tx: 5_000_000 })
  state.bytes.set('br0', { rx: 99_000_000, tx: 0 })
  const b = await sampler.sample()
  t.equal(b.netMbps, 120)
  // Counter reset: no negative rate.
  nowMs += 1000
  state.bytes.set('eth0', { rx: 10, tx: 0 })
  t.equal((await sampler.sample()).netMbps, 0, 'counter going backwards counts as 0')
  nowMs += 1000
  state.bytes.set('eth0', { rx: 1_250_010, tx: 0 })
  t.equal((await sampler.sample()).netMbps, 10, 'and the next interval is measured from the reset')
  t.equal(log.find('host capacity').length, 1, 'capacity logged once while unchanged')
})

t.test('configured interfaces, link speed default, MIPS override, clamping', async t => {
  const { state, api } = fakeSi()
  let nowMs = 0
  const sampler = siSampler({ interfaces: ['eth0', 'br0'], linkMbpsDefault: 2500, cpuMipsPerCore: 3000 })({ logger, now: () => nowMs, systemInfo: api })
  state.load = 130
  const a = await sampler.sample()
  t.equal(a.cpuUtil, 1, 'clamped to 1')
  t.same(a.capacity, { cpuCores: 4, cpuMipsPerCore: 3000, memMiB: 8192, netMbps: 12_500 }, 'br0 has no speed: default used')
  t.same(state.calls.stats, ['eth0,br0'])
  nowMs += 1000
  state.bytes.set('br0', { rx: 125_000, tx: 0 })
  t.equal((await sampler.sample()).netMbps, 1, 'both interfaces counted')
})

t.test('unknown clock speed gives 1000 MIPS; capacity re-read after capacityRefreshMs', async t => {
  const { state, api } = fakeSi()
  let nowMs = 0
  state.speedGHz = 0
  const sampler = siSampler({ capacityRefreshMs: 60_000 })({ logger, now: () => nowMs, systemInfo: api })
  t.equal((await sampler.sample()).capacity.cpuMipsPerCore, 1000)
  nowMs = 59_000
  state.cores = 8
  t.equal((await sampler.sample()).capacity.cpuCores, 4, 'cached')
  nowMs = 60_000
  t.equal((await sampler.sample()).capacity.cpuCores, 8, 're-read')
  t.equal(state.calls.cpu, 2)
})

t.test('failures reject with typed errors and never throw synchronously', async t => {
  const { state, api } = fakeSi()
  const sampler = siSampler({ sampleTimeoutMs: 100 })({ logger, systemInfo: api })
  state.fail = Object.assign(new Error('EACCES /proc/stat'), { code: 'EACCES' })
  const p = sampler.sample()
  t.type(p, Promise)
  const err = await p.then(() => null, (e: unknown) => e)
  t.match(err, { name: 'SamplerError', code: 'SAMPLER_FAILED', message: /EACCES/ })
  t.equal((err as Error).cause, state.fail, 'cause kept')

  state.fail = null
  state.hang = true
  await t.rejects(sampler.sample(), { name: 'SamplerError', code: 'SAMPLER_FAILED', message: /longer than 100 ms/ })

  state.hang = false
  t.equal((await sampler.sample()).cpuUtil, 0.25, 'a hung sample is abandoned: the next one starts afresh')

  state.hang = true
  const ac = new AbortController()
  const aborted = sampler.sample(ac.signal)
  ac.abort()
  await t.rejects(aborted, { name: 'AbortError', code: 'ABORT_ERR' })
  await t.rejects(sampler.sample(AbortSignal.abort()), { name: 'AbortError' }, 'already-aborted signal')
})

t.test('concurrent callers share one sample', async t => {
  const { state, api } = fakeSi()
  const sampler = siSampler({})({ logger, now: () => 0, systemInfo: api })
  const [a, b] = await Promise.all([sampler.sample(), sampler.sample()])
  t.same(a, b)
  t.equal(state.calls.stats.length, 1)
})
