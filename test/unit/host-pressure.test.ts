// Host memory pressure as a stress input: the balloon loop reads /proc/pressure/memory (through the
// real host-memory adapter, over a /proc tree of the test's own), and sustained pressure over
// memory.policy.hostPressurePercent makes the host reclaim and, when nothing can be reclaimed,
// report itself short of memory in its gossip (what moves a VM away). Bad thresholds name the field.
import t, { type Test } from 'tap'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { BalloonController, hostMemoryReport } from '../../agent/runtime/balloon-controller.js'
import { renderMemoryMetrics } from '../../agent/api/memory.js'
import { hostMemory } from '../../agent/adapters/host-memory.js'
import { validateMemorySection } from '../../agent/runtime/memory-setup.js'
import { memoryLogger } from '../../agent/lib/logger.js'
import { ConfigError } from '../../policies/config-error.js'

function procTree (t: Test): { dir: string, pressure: (some10: number) => void } {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'psi-'))
  t.teardown(() => { fs.rmSync(dir, { recursive: true, force: true }) })
  fs.mkdirSync(path.join(dir, 'proc/pressure'), { recursive: true })
  fs.writeFileSync(path.join(dir, 'proc/meminfo'), 'MemTotal:        8388608 kB\nMemFree:         4194304 kB\nMemAvailable:    6291456 kB\n')
  const pressure = (some10: number): void => {
    fs.writeFileSync(path.join(dir, 'proc/pressure/memory'), `some avg10=${some10.toFixed(2)} avg60=1.00 avg300=0.50 total=123456\nfull avg10=${(some10 / 2).toFixed(2)} avg60=0.50 avg300=0.20 total=65432\n`)
  }
  return { dir, pressure }
}

const noVms = { memoryFacts: async (): Promise<never> => { throw new Error('no VM on this host') }, balloon: async (): Promise<void> => {} }

for (const ballooning of [true, false]) {
  t.test(`sustained pressure makes the host short of memory (ballooning ${ballooning ? 'on' : 'off'})`, async t => {
    const { dir, pressure } = procTree(t)
    const log = memoryLogger()
    const mem = validateMemorySection({ balloon: ballooning, policy: { hostPressurePercent: 25, hostPressureSamples: 2 } }, [])
    const ctl = new BalloonController(mem, { driver: noVms, host: hostMemory({ root: dir }), logger: log })
    // 2 GiB of 8 used: far under the target; only the pressure speaks.
    pressure(40)
    const s1 = await ctl.step([])
    t.equal(s1?.host.pressureSome10, 40, 'the reading arrives')
    t.equal(s1?.host.pressured, false, 'one sample over the threshold is not sustained')
    t.equal(hostMemoryReport(s1!.host, ballooning).unmetMiB, 0, 'not short yet')
    const s2 = await ctl.step([])
    t.equal(s2?.host.pressured, true, 'two samples in a row: pressured')
    const rep = hostMemoryReport(s2!.host, ballooning)
    t.equal(rep.unmetMiB, mem.policy.shrinkStepMiBMin, 'nothing to reclaim: the step it asked for is unmet, so the host is stressed')
    t.equal(rep.pressure, 0.4)
    const metrics = renderMemoryMetrics({ self: { id: 'x', name: 'hv' }, nowMs: 0, status: s2!, counters: { ...ctl.counters } })
    t.match(metrics, /\nagent_memory_host_pressured 1\n/, 'Prometheus: pressured as a 0/1 gauge')
    t.match(metrics, new RegExp(`\\nagent_memory_host_pressure_want_mib ${mem.policy.shrinkStepMiBMin}\\n`), 'and what it asks for')
    t.equal(log.find('host memory pressure 40% (some avg10) above memory.policy.hostPressurePercent 25%', 'warn').length, 1, 'the operator is told once')
    await ctl.step([])
    t.equal(log.find('above memory.policy.hostPressurePercent', 'warn').length, 1, '...not at every step')
    pressure(24.99)
    const s3 = await ctl.step([])
    t.equal(s3?.host.pressured, false, 'back under the threshold')
    t.equal(hostMemoryReport(s3!.host, ballooning).unmetMiB, 0, 'no longer short')
    pressure(90)
    t.equal((await ctl.step([]))?.host.pressured, false, 'the streak starts again from zero')
  })
}

t.test('without PSI the host is never pressured', async t => {
  const { dir } = procTree(t)
  const ctl = new BalloonController(validateMemorySection({ balloon: true, policy: { hostPressureSamples: 1 } }, []), { driver: noVms, host: hostMemory({ root: dir }), logger: memoryLogger() })
  const s = await ctl.step([])
  t.equal(s?.host.pressureSome10, null)
  t.equal(s?.host.pressured, false)
})

t.test('the defaults are the documented ones', async t => {
  const m = validateMemorySection({}, [])
  t.equal(m.policy.hostPressurePercent, 20)
  t.equal(m.policy.hostPressureSamples, 3)
})

t.test('a bad threshold is refused with the field named', async t => {
  for (const [k, v] of [['hostPressurePercent', 0], ['hostPressurePercent', 150], ['hostPressurePercent', '20'], ['hostPressureSamples', 0], ['hostPressureSamples', 1.5]] as const) {
    let err: unknown = null
    try { validateMemorySection({ policy: { [k]: v } }, []) } catch (e) { err = e }
    t.ok(err instanceof ConfigError && err.path === `memory.policy.${k}` && err.message.includes(`memory.policy.${k}`), `${k} = ${JSON.stringify(v)}: ${(err as Error | null)?.message ?? 'accepted'}`)
  }
})
