/**
 * The simulated driver across agent restarts (SimDriverInit.stateFile): the VM set is kept in the
 * state file and taken back by the next driver, with each VM's load where it was; with no file,
 * a first boot starts the configured VMs and a later boot (a host that was reset) starts none.
 */
import t from 'tap'
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { simDriver, type SimVmConfig } from '../../agent/adapters/sim-driver.js'
import { silentLogger } from '../../agent/lib/logger.js'

const logger = silentLogger()
const VMS: SimVmConfig[] = [
  { id: 'a', vcpus: 2, memMiB: 1024, pattern: 'sine', cpuMean: 0.5 },
  { id: 'b', vcpus: 1, memMiB: 512, pattern: 'constant', cpuMean: 0.25 }
]

t.test('the VM set survives a restart; a reset host starts none of its configured VMs', async t => {
  const dir = mkdtempSync(join(tmpdir(), 'starling-simstate-'))
  t.teardown(() => { rmSync(dir, { recursive: true, force: true }) })
  const stateFile = join(dir, 'sim-vms.json')
  let now = 1_000_000
  const d1 = simDriver({ vms: VMS, hostCpuCores: 8, stateFile, startConfigured: true })({ logger, now: () => now })
  t.same((await d1.list()).map(v => v.id), ['a', 'b'], 'first boot: the configured VMs run')
  await d1.stop('b')
  await d1.start({ id: 'c', vcpus: 4, memMiB: 2048, extra: { pattern: 'constant', cpuMean: 0.75 } })
  now += 123_456
  const before = await d1.list()
  await d1.close()
  t.ok(existsSync(stateFile), 'the state file was written')
  t.match(readFileSync(stateFile, 'utf8'), /"id":"c"/, 'it names the VM started at run time')

  // The agent restarts (not a first boot): the VMs come back from the file, not from the configuration.
  const d2 = simDriver({ vms: VMS, hostCpuCores: 8, stateFile, startConfigured: false })({ logger, now: () => now })
  const after = await d2.list()
  t.same(after.map(v => [v.id, v.state]), [['a', 'running'], ['b', 'stopped'], ['c', 'running']], 'the same VMs in the same states')
  t.equal(after.find(v => v.id === 'a')?.cpuUtil, before.find(v => v.id === 'a')?.cpuUtil, 'the sine VM\'s load continues where it was (same seed and start time)')
  t.equal(after.find(v => v.id === 'c')?.cpuUtil, (0.75 * 4) / 8, 'the run-time VM keeps its pattern')
  await d2.close()

  // The host was reset: its guests died with it (the file is gone), and it is not a first boot.
  rmSync(stateFile)
  const d3 = simDriver({ vms: VMS, hostCpuCores: 8, stateFile, startConfigured: false })({ logger, now: () => now })
  t.same(await d3.list(), [], 'a reset host runs none of its configured VMs')
  await d3.close()
  rmSync(stateFile, { force: true })
  const d4 = simDriver({ vms: VMS, hostCpuCores: 8, stateFile, startConfigured: true })({ logger, now: () => now })
  t.same((await d4.list()).map(v => v.id), ['a', 'b'], 'a first boot with no file starts the configured VMs')
  await d4.close()
})

t.test('a trace file may name its own sample period (a scripted surge)', async t => {
  const dir = mkdtempSync(join(tmpdir(), 'starling-simtrace-'))
  t.teardown(() => { rmSync(dir, { recursive: true, force: true }) })
  writeFileSync(join(dir, 'surge'), '# a scripted surge\n# interval-ms 1000\n20\n20\n90\n90\n')
  let now = 0
  const d = simDriver({ vms: [{ id: 's', vcpus: 4, memMiB: 512, pattern: 'trace:surge' }], hostCpuCores: 4, traceDir: dir })({ logger, now: () => now })
  t.equal((await d.list())[0]?.cpuUtil, 0.2, 'before the surge')
  now = 2500
  t.equal((await d.list())[0]?.cpuUtil, 0.9, '2.5 s later (1 s per sample): the surge')
  writeFileSync(join(dir, 'bad'), '# interval-ms soon\n20\n')
  t.throws(() => simDriver({ vms: [{ id: 'b', vcpus: 1, memMiB: 512, pattern: 'trace:bad' }], traceDir: dir })({ logger }), { code: 'TRACE_INVALID', message: /interval-ms/ })
  await d.close()
})
