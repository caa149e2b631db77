/**
 * The systeminformation host sampler (agent/adapters/si-sampler.ts).
 *
 * Goal: plausible figures from the real machine; exact arithmetic (network delta, capacity,
 * clamping) and typed failures against a scripted fake of systeminformation.
 * Method: one smoke test on the real module; the rest with a fake whose counters and clock the
 * test sets.
 */
import t, { type Test } from 'tap'
import { spawn } from 'node:child_process'
import dgram from 'node:dgram'
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import si from 'systeminformation'
import { parseMeminfo, parseProcStat, procSystemInfo, siSampler, type SystemInfoApi } from '../../agent/adapters/si-sampler.js'
import { SamplerError } from '../../agent/lib/errors.js'
import { memoryLogger, silentLogger } from '../../agent/lib/logger.js'
import { sleep } from '../lib/wait.js'

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
  await sleep(250)
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

t.test('kernel files: the same figures as systeminformation', async t => {
  const direct = procSystemInfo()
  const [ours, theirs] = await Promise.all([direct.mem(), si.mem()])
  t.equal(ours.total, theirs.total, 'MemTotal is the total systeminformation reports')
  t.ok(Math.abs(ours.active - theirs.active) < 0.05 * ours.total, `active memory within 5 % of the total (${Math.round(ours.active / MIB)} against ${Math.round(theirs.active / MIB)} MiB)`)
  const [n1] = await si.networkStats('lo')
  const [d1] = await direct.networkStats('lo')
  t.ok(d1 !== undefined && n1 !== undefined && d1.rx_bytes >= n1.rx_bytes && d1.tx_bytes >= n1.tx_bytes, 'loopback counters read after systeminformation are not behind its')
  // Traffic on loopback moves the counters by at least what was sent.
  const sock = dgram.createSocket('udp4')
  await new Promise<void>(resolve => sock.bind(0, '127.0.0.1', () => resolve()))
  const payload = Buffer.alloc(1000)
  for (let i = 0; i < 20; i++) await new Promise<void>((resolve, reject) => sock.send(payload, sock.address().port, '127.0.0.1', err => err ? reject(err) : resolve()))
  sock.close()
  const [d2] = await direct.networkStats('lo')
  t.ok(d2 !== undefined && d1 !== undefined && d2.tx_bytes - d1.tx_bytes >= 20_000, `20 kB sent on loopback counted (${(d2?.tx_bytes ?? 0) - (d1?.tx_bytes ?? 0)} bytes)`)
  // The same busy window measured by both: systeminformation's currentLoad and ours, each called
  // right before and right after a child spins on one core.
  await si.currentLoad()
  await direct.currentLoad()
  const spin = spawn(process.execPath, ['-e', 'const e = Date.now() + 2000; while (Date.now() < e);'], { stdio: 'ignore' })
  await new Promise(resolve => spin.once('exit', resolve))
  const theirsBusy = (await si.currentLoad()).currentLoad
  const oursBusy = (await direct.currentLoad()).currentLoad
  t.ok(theirsBusy >= 0 && theirsBusy <= 100 && oursBusy >= 0 && oursBusy <= 100, `both percentages (ours ${oursBusy.toFixed(1)}, systeminformation ${theirsBusy.toFixed(1)})`)
  t.ok(Math.abs(oursBusy - theirsBusy) <= 15, `within 15 points of systeminformation over the same window (${oursBusy.toFixed(1)} against ${theirsBusy.toFixed(1)} %)`)
  const cores = (await si.cpu()).cores
  t.ok(oursBusy >= 0 && oursBusy <= 100, 'a percentage')
  t.ok(oursBusy >= 100 / cores / 2, `a spinning core shows: ${oursBusy.toFixed(1)} % busy of ${cores} cores over the window`)
  t.ok(oursBusy >= 100 / cores / 2, 'and both see the spinning core')
  // Definitions, on known text.
  t.same(parseProcStat('cpu  100 5 50 800 30 2 3 10 7 0\ncpu0 1 1 1 1\n'), { busy: 170, total: 1000 }, 'busy = user+nice+system+irq+softirq+steal; total adds idle and iowait')
  t.same(parseMeminfo('MemTotal:       1000 kB\nMemFree:         100 kB\nMemAvailable:    400 kB\n'), { total: 1024000, active: 614400 }, 'active = total - MemAvailable')
  t.same(parseMeminfo('MemTotal: 1000 kB\nMemFree: 100 kB\nBuffers: 50 kB\nCached: 200 kB\nSlab: 50 kB\n'), { total: 1024000, active: 614400 }, 'without MemAvailable: free + buffers + cached + slab')
})

/** A directory laid out as /proc and /sys/class/net with one interface, removed at teardown. */
async function fakeKernel (t: Test, iface: string, stat: string, meminfo: string): Promise<{ proc: string, net: string, counter: (name: string) => string }> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'starling-proc-'))
  t.teardown(async () => { await rm(dir, { recursive: true, force: true }) })
  const proc = path.join(dir, 'proc')
  const net = path.join(dir, 'net')
  await mkdir(proc)
  await mkdir(path.join(net, iface, 'statistics'), { recursive: true })
  await writeFile(path.join(proc, 'stat'), stat)
  await writeFile(path.join(proc, 'meminfo'), meminfo)
  return { proc, net, counter: name => path.join(net, iface, 'statistics', name) }
}

t.test('kernel files that cannot be read or parsed reject with a SamplerError', async t => {
  const k = await fakeKernel(t, 'eth9', 'cpu  1 2 3 4\n', 'MemTotal: 2048 kB\nMemAvailable: 1024 kB\n')
  await writeFile(k.counter('rx_bytes'), '10\n')
  await writeFile(k.counter('tx_bytes'), '20\n')
  const real = procSystemInfo({ proc: k.proc, sysClassNet: k.net, firstWindowMs: 1 })
  const api = { ...real, cpu: async () => ({ cores: 2, speed: 2.0 }), networkInterfaces: async () => [{ iface: 'eth9', speed: 1000, internal: false }], networkInterfaceDefault: async () => 'eth9' }
  const sampler = siSampler({})({ logger, systemInfo: api })
  const ok = await sampler.sample()
  t.equal(ok.memUsedMiB, 1, 'memory from the given meminfo (2048 - 1024 kB = 1 MiB)')
  t.equal(ok.capacity.memMiB, 2, 'capacity from its MemTotal')
  for (const [file, text, what] of [
    [path.join(k.proc, 'stat'), 'intr 1 2 3\n', 'a /proc/stat without the cpu line'],
    [path.join(k.proc, 'stat'), 'cpu  1 x 3 4\n', 'a cpu line with a non-number'],
    [k.counter('rx_bytes'), 'garbage\n', 'a counter that is not a number']
  ] as const) {
    await writeFile(file, text)
    await t.rejects(sampler.sample(), SamplerError, `${what}: SamplerError`)
    await writeFile(path.join(k.proc, 'stat'), 'cpu  1 2 3 4\n')
    await writeFile(k.counter('rx_bytes'), '10\n')
  }
  await rm(path.join(k.proc, 'meminfo'))
  await t.rejects(sampler.sample(), SamplerError, 'a missing /proc/meminfo: SamplerError')
})

t.test('without a readable /proc/stat every figure comes from systeminformation, and the log says so', async t => {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'starling-noproc-'))
  t.teardown(async () => { await rm(dir, { recursive: true, force: true }) })
  const log = memoryLogger()
  const sampler = siSampler({})({ logger: log, procRoots: { proc: dir } })
  t.equal(log.find('no readable /proc/stat').length, 1, 'the fallback is logged when the sampler is made')
  const s = await sampler.sample()
  t.ok(s.cpuUtil >= 0 && s.cpuUtil <= 1 && s.memUsedMiB > 0 && s.memUsedMiB <= s.capacity.memMiB, `systeminformation's figures: ${JSON.stringify(s)}`)

  const log2 = memoryLogger()
  siSampler({})({ logger: log2 })
  t.equal(log2.find('no readable /proc/stat').length, 0, 'no fallback where /proc/stat is readable')
})

t.test('the default sampler reads the kernel files it is pointed at, and a malformed one is a SamplerError', async t => {
  const k = await fakeKernel(t, 'lo', 'cpu  100 0 100 800 0 0 0 0\n', 'MemTotal: 4096 kB\nMemAvailable: 1024 kB\n')
  await writeFile(k.counter('rx_bytes'), '0\n')
  await writeFile(k.counter('tx_bytes'), '0\n')
  let nowMs = 0
  const sampler = siSampler({ interfaces: ['lo'] })({ logger, now: () => nowMs, procRoots: { proc: k.proc, sysClassNet: k.net, firstWindowMs: 1 } })
  const a = await sampler.sample()
  t.equal(a.memUsedMiB, 3, 'memory used from the given meminfo: 4096 - 1024 kB')
  t.equal(a.cpuUtil, 0, 'no jiffies moved during the first window')
  await writeFile(path.join(k.proc, 'stat'), 'cpu  160 0 120 820 0 0 0 0\n')
  await writeFile(k.counter('rx_bytes'), '500000\n')
  await writeFile(k.counter('tx_bytes'), '750000\n')
  nowMs += 1000
  const b = await sampler.sample()
  t.equal(b.cpuUtil, 0.8, '80 busy of 100 jiffies')
  t.equal(b.netMbps, 10, '1.25 MB in 1 s on the given counters')
  await writeFile(path.join(k.proc, 'meminfo'), 'MemTotal: lots\n')
  const err = await sampler.sample().then(() => null, (e: unknown) => e)
  t.ok(err instanceof SamplerError, 'a malformed /proc/meminfo rejects with a SamplerError')
  t.match(err, { code: 'SAMPLER_FAILED', message: /MemTotal/ })
})
