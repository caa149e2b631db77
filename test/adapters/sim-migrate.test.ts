/**
 * Live migration of the simulated driver (agent/adapters/sim-driver.ts) and its timing model
 * (agent/adapters/sim-migration-model.ts).
 *
 * Goal: the model's passes, downtime and total time follow from memory, dirty rate and link
 * speed as its comment says; two drivers in one process migrate a VM over a real loopback TCP
 * link in the time the model predicts, the VM's load continues on the target where it was, and
 * faults (a broken link, a failing call, a cancel) leave the guest running on the source only.
 * Method: pure checks of predictCopy against hand-computed figures; real timers and sockets for
 * the drivers, with small VMs and links so that a copy takes under a second.
 */
import t from 'tap'
import { simDriver, type SimDriver, type SimVmConfig } from '../../agent/adapters/sim-driver.js'
import { canStop, dirtyRateBytesPerS, precopyBandwidth, predictCopy, sendMs } from '../../agent/adapters/sim-migration-model.js'
import { canMigrate, driverExecutor } from '../../agent/runtime/driver-commands.js'
import { silentLogger } from '../../agent/lib/logger.js'
import { sleep, until as waitUntil } from '../lib/wait.js'
import { mkdtemp, writeFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

const logger = silentLogger()
const MiB = 1048576
const PRECOPY = { mode: 'precopy' as const, maxBandwidthBytes: 0, downtimeLimitMs: 50, autoConverge: false, xbzrle: false, multifd: 0 }

const until = async (pred: () => Promise<boolean>, timeoutMs: number): Promise<number> => await waitUntil('the condition', pred, timeoutMs, { pollMs: 5 })

t.test('model: passes shrink by dirty rate over bandwidth; stop-and-copy once the rest fits the limit', async t => {
  // 600 MiB resident, 1 Gbit/s, 20 MiB/s dirtied, 300 ms limit.
  const bw = 125e6
  const d = 20 * MiB
  const p = predictCopy({ residentBytes: 600 * MiB, dirtyRateBytesPerS: d, bandwidthBytesPerS: bw, linkBytesPerS: bw, downtimeLimitMs: 300 })
  const pass1 = 600 * MiB / bw * 1000 // 5033 ms
  const left1 = d * pass1 / 1000 // 105 MB: 839 ms at 1 Gbit/s, over the limit
  const pass2 = left1 / bw * 1000
  const left2 = d * pass2 / 1000 // 17.6 MB: 141 ms, within it
  t.equal(p.converged, true)
  t.equal(p.passes.length, 2)
  t.ok(Math.abs(p.passes[0]!.ms - pass1) < 1e-6 && Math.abs(p.passes[1]!.ms - pass2) < 1e-6, `passes ${p.passes.map(x => x.ms.toFixed(0)).join(', ')} ms`)
  t.ok(Math.abs(p.downtimeMs! - left2 / bw * 1000) < 1e-6, `downtime ${p.downtimeMs!.toFixed(1)} ms`)
  t.ok(Math.abs(p.totalMs! - (pass1 + pass2 + left2 / bw * 1000)) < 1e-6, `total ${p.totalMs!.toFixed(0)} ms`)
  t.ok(Math.abs(p.transferredBytes - (600 * MiB + left1 + left2)) < 1)
  t.comment(`1 GiB VM at memMean 0.6, half load, 2 vcpus, 1 Gbit/s: ${JSON.stringify(predictCopy({ residentBytes: 1024 * 0.6 * (0.85 + 0.15 * 0.5) * MiB, dirtyRateBytesPerS: dirtyRateBytesPerS(16, 2, 0.5), bandwidthBytesPerS: bw, linkBytesPerS: bw, downtimeLimitMs: 300 }))}`)

  const idle = predictCopy({ residentBytes: 100 * MiB, dirtyRateBytesPerS: 0, bandwidthBytesPerS: 10 * MiB, linkBytesPerS: 10 * MiB, downtimeLimitMs: 1 })
  t.same([idle.passes.length, idle.downtimeMs, idle.totalMs], [1, 0, 10_000], 'an idle guest: one pass, no pause')

  const hot = predictCopy({ residentBytes: 100 * MiB, dirtyRateBytesPerS: 20 * MiB, bandwidthBytesPerS: 10 * MiB, linkBytesPerS: 10 * MiB, downtimeLimitMs: 300 }, 12)
  t.equal(hot.converged, false, 'dirtying faster than the link: no convergence')
  t.equal(hot.passes.length, 12)
  t.ok(hot.passes.slice(1).every(x => x.bytes === 100 * MiB), 'later passes resend the whole working set')
  t.equal(hot.totalMs, null)

  t.equal(precopyBandwidth(125e6, 0), 125e6, 'no cap: the link')
  t.equal(precopyBandwidth(125e6, 50e6), 50e6, 'a lower cap wins')
  t.equal(precopyBandwidth(125e6, 500e6), 125e6, 'a cap above the link changes nothing')
  const capped = predictCopy({ residentBytes: 100 * MiB, dirtyRateBytesPerS: 0, bandwidthBytesPerS: 5 * MiB, linkBytesPerS: 10 * MiB, downtimeLimitMs: 1 })
  t.equal(capped.totalMs, 20_000, 'the pre-copy runs at the cap')
  t.equal(dirtyRateBytesPerS(16, 2, 0.5), 16 * MiB, 'dirty rate: MiB/s per busy vCPU x vcpus x load')
  t.equal(dirtyRateBytesPerS(16, 2, 1.7), 32 * MiB, 'load is clamped to 1')
  t.equal(canStop(10 * MiB, 10 * MiB, 1000), true)
  t.equal(canStop(10 * MiB + 1, 10 * MiB, 1000), false)
  t.equal(sendMs(1, 0), Infinity)
})

interface Pair { src: SimDriver, dst: SimDriver }
function pair (vm: SimVmConfig, linkMbps: number): Pair {
  return {
    src: simDriver({ vms: [vm], seed: 11, hostCpuCores: 4, linkMbps })({ logger }),
    dst: simDriver({ vms: [], seed: 22, hostCpuCores: 4, linkMbps })({ logger })
  }
}

async function prepared (p: Pair, id: string): Promise<string> {
  const d = await p.src.describe(id)
  if (d === null) throw new Error('no such VM')
  // The spec travels as the migration intent's extraJson does.
  const spec = { ...d.spec, extra: JSON.parse(JSON.stringify(d.spec.extra)) as Record<string, unknown> }
  return (await p.dst.prepareIncoming(spec, '127.0.0.1:0')).uri
}

t.test('a migration takes the time the model predicts, reports progress, and the load continues on the target', async t => {
  // A constant load keeps the dirty rate constant, as the prediction assumes.
  const vm: SimVmConfig = { id: 'v', vcpus: 2, memMiB: 128, pattern: 'constant', cpuMean: 0.5, dirtyMiBps: 16 }
  const p = pair(vm, 400)
  t.teardown(async () => { await p.src.close(); await p.dst.close() })
  t.ok(canMigrate(p.src), 'the runtime sees a migrating driver')
  await p.src.list()
  await sleep(300)
  const uri = await prepared(p, 'v')
  t.match(uri, /^tcp:127\.0\.0\.1:\d+$/)
  t.same((await p.dst.list()).map(x => [x.id, x.state]), [['v', 'migrating']], 'the incoming copy is listed as migrating')
  t.equal((await p.dst.describe('v'))?.runStatus, 'inmigrate')

  const resident = p.src.residentGuestBytes('v')!
  const rate = await p.src.measureDirtyRate('v')
  const link = 400e6 / 8
  const predicted = predictCopy({ residentBytes: resident, dirtyRateBytesPerS: rate, bandwidthBytesPerS: link, linkBytesPerS: link, downtimeLimitMs: 50 })
  t.ok(predicted.converged && predicted.passes.length >= 2, `model: ${predicted.passes.length} passes, ${predicted.totalMs!.toFixed(0)} ms`)

  const t0 = Date.now()
  await p.src.migrate('v', uri, PRECOPY)
  const samples: Array<{ status: string, transferredBytes: number, remainingBytes: number, dirtySyncCount: number }> = []
  await until(async () => {
    const s = await p.src.progress('v')
    samples.push(s)
    return s.status === 'completed'
  }, 10_000)
  const measuredMs = Date.now() - t0
  const last = await p.src.progress('v')
  t.comment(`copy of ${(resident / MiB).toFixed(1)} MiB resident at 400 Mbit/s, ${(rate / MiB).toFixed(1)} MiB/s dirtied: ${measuredMs} ms measured (driver: ${last.totalTimeMs} ms, ${last.dirtySyncCount} passes, downtime ${last.downtimeMs} ms), model ${predicted.totalMs!.toFixed(0)} ms, ${predicted.passes.length} passes, downtime ${predicted.downtimeMs!.toFixed(1)} ms`)
  t.ok(last.totalTimeMs >= predicted.totalMs! * 0.85, `not faster than the model (${last.totalTimeMs} >= 0.85 x ${predicted.totalMs!.toFixed(0)})`)
  t.ok(last.totalTimeMs <= predicted.totalMs! * 1.3 + 150, `not much slower than the model (${last.totalTimeMs})`)
  const active = samples.filter(s => s.status === 'active')
  t.ok(active.length >= 5, `progress sampled while active (${active.length})`)
  t.ok(active.some(s => s.transferredBytes > 0 && s.remainingBytes > 0), 'transferred and remaining both reported mid-copy')
  t.ok(active.every((s, i) => i === 0 || s.transferredBytes >= active[i - 1]!.transferredBytes), 'transferred never goes back')
  t.ok(last.transferredBytes >= resident, 'at least the resident memory was sent')
  t.equal(last.dirtySyncCount, predicted.passes.length, 'as many passes as the model says')
  t.ok(last.downtimeMs !== null && last.downtimeMs <= 50 + 100, `downtime ${last.downtimeMs} ms near the 50 ms limit`)

  // Source: paused after the switch-over; target: running with the same load pattern.
  t.equal((await p.src.describe('v'))?.runStatus, 'postmigrate')
  t.same((await p.src.list()).map(x => [x.id, x.state]), [['v', 'migrating']])
  const dst = await p.dst.describe('v')
  t.equal(dst?.runStatus, 'running')
  t.same(dst?.spec.extra?.['pattern'], { kind: 'constant', level: 0.5 }, 'the definition arrived')
  const [row] = await p.dst.list()
  const load = row!.cpuUtil * 4 / 2
  t.equal(load, 0.5, 'the load goes on at the target')

  await t.rejects(p.dst.killIfNotRunning('v'), { code: 'VM_RUNNING' }, 'the running target copy is never killed')
  await p.src.killIfNotRunning('v')
  t.same(await p.src.list(), [], 'gone from the source')
  t.equal(await p.src.describe('v'), null)
})

t.test('the load continues on the target exactly where it was on the source', async t => {
  // A clock both drivers share and the test moves: the VM's age at the switch-over decides.
  let now = 1_000_000
  const clock = (): number => now
  const vm: SimVmConfig = { id: 'w', vcpus: 4, memMiB: 32, pattern: 'walk', cpuMean: 0.5, dirtyMiBps: 0 }
  const src = simDriver({ vms: [vm], seed: 3, hostCpuCores: 4, linkMbps: 10_000 })({ logger, now: clock })
  const dst = simDriver({ seed: 4, hostCpuCores: 4, linkMbps: 10_000 })({ logger, now: clock })
  const twin = simDriver({ vms: [vm], seed: 3, hostCpuCores: 4 })({ logger, now: clock })
  t.teardown(async () => { await src.close(); await dst.close() })
  await src.list(); await twin.list() // both start at t = 1 000 000
  now += 95_000
  const d = await src.describe('w')
  const { uri } = await dst.prepareIncoming({ ...d!.spec, extra: JSON.parse(JSON.stringify(d!.spec.extra)) }, '127.0.0.1:0')
  await src.migrate('w', uri, PRECOPY)
  await until(async () => (await src.progress('w')).status === 'completed', 5000)
  for (const step of [0, 10_000, 123_000, 3_600_000]) {
    now = 1_095_000 + step
    const there = (await dst.list())[0]
    const here = (await twin.list())[0]
    t.equal(there?.cpuUtil, here?.cpuUtil, `same load as an unmigrated twin ${step / 1000} s after the move (${here?.cpuUtil})`)
  }
  const fresh = simDriver({ vms: [vm], seed: 4, hostCpuCores: 4 })({ logger, now: clock })
  await fresh.list()
  const seen: number[] = []
  for (let i = 0; i < 20; i++) { now += 60_000; seen.push((await dst.list())[0]!.cpuUtil - (await fresh.list())[0]!.cpuUtil) }
  t.ok(seen.some(x => x !== 0), 'a VM started fresh on the target (its own seed) would differ: the seed travelled')
})

t.test('faults: a broken link, a failing prepare, a cancel leave the guest running on the source', async t => {
  const vm: SimVmConfig = { id: 'f', vcpus: 1, memMiB: 64, pattern: 'constant', cpuMean: 0.5 }
  const p = pair(vm, 200)
  t.teardown(async () => { await p.src.close(); await p.dst.close() })

  p.dst.setFault('prepareIncoming', { code: 'DRIVER_FAILED', times: 1 })
  await t.rejects(prepared(p, 'f'), { code: 'DRIVER_FAILED', message: /injected/ })
  t.same(await p.dst.list(), [], 'nothing opened on the target')

  // The link breaks half way through the first pass.
  p.src.setLinkFault({ atFraction: 0.5 })
  let uri = await prepared(p, 'f')
  await p.src.migrate('f', uri, PRECOPY)
  await until(async () => (await p.src.progress('f')).status === 'failed', 5000)
  const failed = await p.src.progress('f')
  t.match(failed.errorDesc, /injected/)
  const resident = p.src.residentGuestBytes('f')!
  t.ok(failed.transferredBytes > resident * 0.4 && failed.transferredBytes < resident * 0.6, `broke at ${(failed.transferredBytes / resident * 100).toFixed(0)} % of the first pass`)
  t.same((await p.src.list()).map(x => [x.id, x.state]), [['f', 'running']], 'the guest runs on the source')
  await until(async () => (await p.dst.describe('f'))?.migration === 'failed', 2000)
  t.equal((await p.dst.describe('f'))?.runStatus, 'inmigrate', 'the target copy never ran')
  await p.dst.killIfNotRunning('f')
  t.same(await p.dst.list(), [])

  // The same VM migrates once the fault is spent.
  uri = await prepared(p, 'f')
  await p.src.migrate('f', uri, PRECOPY)
  await sleep(100)
  t.equal((await p.src.progress('f')).status, 'active')
  await p.src.cancel('f')
  t.equal((await p.src.progress('f')).status, 'cancelled')
  t.equal((await p.src.describe('f'))?.runStatus, 'running', 'a cancel leaves the guest running here')
  await until(async () => (await p.dst.describe('f'))?.migration === 'failed', 2000)
  await p.dst.killIfNotRunning('f')

  // Through the runtime's executor, as the migration machine drives it: a failing migrate call.
  p.src.setFault('migrate', { code: 'DRIVER_TIMEOUT', times: 1 })
  const exec = driverExecutor(p.src, { migrationListenHost: '127.0.0.1' })
  const r = await exec({ kind: 'migrate', mig: 'm1', vm: 'f', uri: 'tcp:127.0.0.1:1', params: { mode: 'precopy', maxBandwidthBytes: 0, downtimeLimitMs: 50 } }, AbortSignal.timeout(5000))
  t.same(r, { ok: false, kind: 'migrate', code: 'DRIVER_TIMEOUT', message: 'migrate failed (injected fault DRIVER_TIMEOUT)' })
  const q = await exec({ kind: 'query', mig: 'm1', vm: 'f' }, AbortSignal.timeout(5000))
  t.match(q, { ok: true, kind: 'query', query: { presence: 'running', accel: 'kvm', spec: { vcpus: 1, memMiB: 64 } } })
  const refused = await exec({ kind: 'migrate', mig: 'm1', vm: 'f', uri: 'tcp:127.0.0.1:1', params: { mode: 'precopy', maxBandwidthBytes: 0, downtimeLimitMs: 50 } }, AbortSignal.timeout(5000))
  t.match(refused, { ok: false, code: 'DRIVER_FAILED' }, 'nobody listening: the migration fails at once')
  t.equal((await p.src.progress('f')).status, 'failed')
  t.equal((await p.src.describe('f'))?.runStatus, 'running')
})

t.test('post-copy and a migration that does not converge until the limit is raised', async t => {
  const hot: SimVmConfig = { id: 'h', vcpus: 4, memMiB: 64, pattern: 'constant', cpuMean: 1, dirtyMiBps: 16 }
  const p = pair(hot, 200) // 25 MB/s link, 64 MiB/s dirtied: never converges at 50 ms
  t.teardown(async () => { await p.src.close(); await p.dst.close() })
  let uri = await prepared(p, 'h')
  await p.src.migrate('h', uri, PRECOPY)
  await until(async () => (await p.src.progress('h')).dirtySyncCount >= 3, 10_000)
  t.equal((await p.src.progress('h')).status, 'active', 'still copying after 3 passes')
  await p.src.startPostcopy('h')
  t.equal((await p.src.progress('h')).status, 'postcopy-active')
  await until(async () => (await p.dst.describe('h'))?.runStatus === 'running', 2000)
  await t.rejects(p.src.cancel('h'), { code: 'DRIVER_FAILED', message: /post-copy/ })
  await t.rejects(p.src.killIfNotRunning('h'), { code: 'VM_RUNNING' }, 'not while post-copy runs')
  await until(async () => (await p.src.progress('h')).status === 'completed', 10_000)
  await p.src.killIfNotRunning('h')
  t.same((await p.dst.list()).map(x => [x.id, x.state]), [['h', 'running']])

  // Back, pre-copy only: raising the downtime limit lets it finish.
  uri = await (async () => {
    const d = await p.dst.describe('h')
    return (await p.src.prepareIncoming({ ...d!.spec, extra: JSON.parse(JSON.stringify(d!.spec.extra)) }, '127.0.0.1:0')).uri
  })()
  await p.dst.migrate('h', uri, PRECOPY)
  await until(async () => (await p.dst.progress('h')).dirtySyncCount >= 2, 10_000)
  await p.dst.setDowntimeLimit('h', 60_000)
  await until(async () => (await p.dst.progress('h')).status === 'completed', 10_000)
  t.equal((await p.src.describe('h'))?.runStatus, 'running', 'back on the first driver')
})

t.test('a VM on a trace too long for the wire moves twice: its spec names the trace after a move too', async t => {
  // The migration intent carries the spec's extra JSON up to 8 KiB (wire-codec LONG_STRING_BYTES).
  // A long trace travels by name; the VM's next move, from the host it went to, must name it too
  // (before, the target kept only the samples, the next intent was too long to send, and every
  // consolidation that included the VM waited for an answer that could not come).
  const dir = await mkdtemp(join(tmpdir(), 'starling-long-trace-'))
  t.teardown(async () => { await rm(dir, { recursive: true, force: true }) })
  const file = join(dir, 'long')
  await writeFile(file, Array.from({ length: 3000 }, (_, i) => String(10 + (i % 80))).join('\n') + '\n')
  const vm: SimVmConfig = { id: 'l', vcpus: 1, memMiB: 32, pattern: `trace:${file}`, dirtyMiBps: 0 }
  const a = simDriver({ vms: [vm], seed: 5, hostCpuCores: 4, linkMbps: 10_000, traceIntervalMs: 1000 })({ logger })
  const b = simDriver({ seed: 6, hostCpuCores: 4, linkMbps: 10_000, traceIntervalMs: 1000 })({ logger })
  const c = simDriver({ seed: 7, hostCpuCores: 4, linkMbps: 10_000, traceIntervalMs: 1000 })({ logger })
  t.teardown(async () => { await a.close(); await b.close(); await c.close() })
  await a.list()
  const move = async (from: SimDriver, to: SimDriver): Promise<string> => {
    const d = await from.describe('l')
    const extraJson = JSON.stringify(d!.spec.extra)
    t.ok(extraJson.length <= 8192, `the spec fits the wire (${extraJson.length} bytes)`)
    t.equal(d!.spec.extra?.pattern, `trace:${file}`, 'and names the trace')
    const { uri } = await to.prepareIncoming({ ...d!.spec, extra: JSON.parse(extraJson) as Record<string, unknown> }, '127.0.0.1:0')
    await from.migrate('l', uri, PRECOPY)
    await until(async () => (await from.progress('l')).status === 'completed', 5000)
    return (await to.describe('l'))?.runStatus ?? 'absent'
  }
  t.equal(await move(a, b), 'running', 'a → b')
  t.equal(await move(b, c), 'running', 'b → c: the second move sends its spec as the first did')
})
