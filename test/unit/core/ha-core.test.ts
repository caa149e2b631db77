// Table tests for the HA core: quorum from the view and leases, the fence clock and watchdog,
// the fence-delay formula, the restart assignment, and a claim round between three managers.
import t from 'tap'
import { ConfigError } from '../../../agent/core/config.js'
import { Prng } from '../../../agent/core/prng.js'
import {
  FenceClock, HaManager, assignRestarts, compareHaClaims, evaluateQuorum, majority, requiredFenceDelayTicks,
  simHaConfig, defaultHaConfig, validateHaConfig, validateHaInventory, watchdogAllows, type HaEffect, type HaVmSpec
} from '../../../agent/core/ha/index.js'

t.test('majority of the configured members, tie-breaker included', t => {
  t.same([1, 2, 3, 4, 5, 6].map(majority), [1, 2, 2, 3, 3, 4])
  const members = ['a', 'b', 'q']
  const q = (alive: string[], fresh: string[]): boolean => evaluateQuorum({ self: 'a', members, state: id => alive.includes(id) ? 'alive' : 'suspect', fresh: id => fresh.includes(id) }).quorate
  t.ok(q(['q'], ['q']), 'two hosts and a tie-breaker: self + tie-breaker is a majority')
  t.notOk(q(['b'], []), 'alive in the view but no fresh echo (one-way cut) does not count')
  t.notOk(q([], ['b', 'q']), 'suspect does not count even with a fresh lease')
  t.throws(() => validateHaInventory([{ id: 'a', cpuMips: 1, memMiB: 1 }, { id: 'b', cpuMips: 1, memMiB: 1 }], []), ConfigError, 'two hosts need a tie-breaker')
  t.end()
})

t.test('fence clock: grace after a majority, none at start-up', t => {
  const f = new FenceClock(0, 2, 6)
  t.notOk(f.inGrace(1), 'never quorate: no grace')
  t.notOk(f.mustFence(5), 'start-up waits fenceTicks before fencing')
  t.ok(f.mustFence(6), 'then fences')
  f.observe(10, true)
  t.notOk(f.mustFence(10))
  t.notOk(f.mustFence(11), 'a blip shorter than fenceAfterTicks is ridden out')
  t.ok(f.mustFence(12))
  t.ok(f.inGrace(16), 'the watchdog is pinged up to fenceTicks after the last quorate tick')
  t.notOk(f.inGrace(17))
  t.same(f.deadline(13), 16)
  t.ok(watchdogAllows({ quorate: false, inGrace: false, allFenced: true, fencingOff: false }), 'nothing left to fence')
  t.notOk(watchdogAllows({ quorate: false, inGrace: false, allFenced: false, fencingOff: false }), 'a running VM without a majority withholds the ping')
  t.end()
})

t.test('fence delay covers lease + fence + watchdog + 2 claim timeouts, stretched by drift', t => {
  const c = simHaConfig()
  t.equal(requiredFenceDelayTicks(c), 6 + 6 + 10 + 16 + 2)
  t.equal(requiredFenceDelayTicks({ ...c, clockDriftPpm: 50_000 }), Math.ceil(40 * 1.1))
  t.doesNotThrow(() => validateHaConfig(defaultHaConfig()))
  t.throws(() => validateHaConfig({ ...c, fenceDelayTicks: 39 }), ConfigError)
  t.throws(() => validateHaConfig({ ...c, leaseTicks: 3 }), ConfigError)
  t.end()
})

const vm = (id: string, priority = 0, cpu = 1000): HaVmSpec => ({ id, home: 'x', priority, cpuMips: cpu, memMiB: 1024, source: { kind: 'shared', definition: id } })
const host = (id: string, used = 0) => ({ id, cpuMips: 4000, coreMips: 4000, memMiB: 8192, usedMips: used, usedMemMiB: 0 })

t.test('assignment: deterministic, spread, priority first, capacity and hard rules respected', t => {
  const orphans = [vm('c'), vm('a', 5), vm('b')]
  const hosts = [host('h2'), host('h1')]
  const one = assignRestarts({ orphans, hosts, rules: { vmVm: [], vmHost: [] }, placement: new Map() })
  const two = assignRestarts({ orphans: [...orphans].reverse(), hosts: [...hosts].reverse(), rules: { vmVm: [], vmHost: [] }, placement: new Map() })
  t.same([...one].sort(), [...two].sort(), 'same inputs in any order, same answer')
  t.equal(new Set(one.values()).size, 2, 'spread over both hosts')
  const full = assignRestarts({ orphans: [vm('lo', 0, 3000), vm('hi', 9, 3000)], hosts: [host('h1', 1000)], rules: { vmVm: [], vmHost: [] }, placement: new Map() })
  t.equal(full.get('hi'), 'h1', 'the higher priority gets the last capacity')
  t.equal(full.get('lo'), null, 'the other waits')
  const anti = assignRestarts({ orphans: [vm('a')], hosts: [host('h1'), host('h2', 3000)], rules: { vmVm: [{ kind: 'anti-affinity', vms: ['a', 'z'], hard: true }], vmHost: [] }, placement: new Map([['z', 'h1']]) })
  t.equal(anti.get('a'), 'h2', 'hard anti-affinity keeps it off h1')
  t.ok(compareHaClaims({ epoch: 2, host: 'a', attempts: 0 }, { epoch: 1, host: 'z', attempts: 0 }) > 0)
  t.end()
})

/** Three managers; host c (home of v1) goes silent at tick 20 and ends in `gone` at tick 30. */
function silentHomeRun (gone: 'dead' | 'left'): { starts: Array<{ host: string, tick: number }>, cSilentSince: number, cfg: ReturnType<typeof simHaConfig> } {
  const cfg = simHaConfig()
  const members = ['a', 'b', 'c'].map(id => ({ id, cpuMips: 8000, memMiB: 16384 }))
  const vms: HaVmSpec[] = [{ ...vm('v1'), home: 'c' }]
  const mk = (id: string): HaManager => new HaManager({ self: id, members, vms, config: cfg, prng: new Prng(id.charCodeAt(0)), life: 1, running: id === 'c' ? ['v1'] : [] })
  const m = new Map([['a', mk('a')], ['b', mk('b')]])
  const starts: Array<{ host: string, tick: number }> = []
  let cSilentSince = 0
  const cAlive = (tick: number): boolean => tick < 20
  for (let tick = 1; tick <= 120; tick++) {
    const inbox: Array<{ to: string, from: string, e: HaEffect }> = []
    for (const [id, h] of m) {
      h.step({ type: 'members', members: [{ id: 'a', state: 'alive' }, { id: 'b', state: 'alive' }, { id: 'c', state: cAlive(tick) ? 'alive' : tick < 30 ? 'suspect' : gone }] })
      h.tick()
      for (const e of h.takeEffects()) {
        if (e.type === 'send') for (const to of e.to) inbox.push({ to, from: id, e })
        if (e.type === 'driver' && e.command.kind === 'haStart') starts.push({ host: id, tick })
      }
      if (cAlive(tick)) h.step({ type: 'heard', from: 'c' }); else if (cSilentSince === 0) cSilentSince = tick
    }
    for (const x of inbox) {
      if (x.e.type !== 'send') continue
      const r = m.get(x.to)
      if (r === undefined) continue
      r.step({ type: 'haMessage', from: x.from, message: x.e.message })
      for (const e of r.takeEffects()) {
        if (e.type === 'send') for (const to of e.to) { const rr = m.get(to); if (rr !== undefined) rr.step({ type: 'haMessage', from: x.to, message: e.message }) }
        if (e.type === 'driver' && e.command.kind === 'haStart') starts.push({ host: x.to, tick })
      }
    }
  }
  return { starts, cSilentSince, cfg }
}

t.test('three managers: a dead host is taken over only after the fence delay, by one host', t => {
  const { starts, cSilentSince, cfg } = silentHomeRun('dead')
  t.equal(starts.length, 1, `exactly one restart (${JSON.stringify(starts)})`)
  const lastHeard = cSilentSince - 1
  t.ok(starts[0]!.tick - lastHeard >= cfg.fenceDelayTicks, `not before the fence delay after the last frame (${starts[0]!.tick - lastHeard} >= ${cfg.fenceDelayTicks})`)
  t.end()
})

t.test('three managers: a host that left gracefully is not taken over (its VMs run on without its agent)', t => {
  const { starts } = silentHomeRun('left')
  t.equal(starts.length, 0, `no restart (${JSON.stringify(starts)})`)
  t.end()
})

// A one-way cut (h2 -> h1) lets h1 alone find h2 silent past the fence delay, while h2 keeps its
// majority through h0, h3 and h4. h0 and h4 hold a higher abandoned claim (8@h4, released), made
// while a partition hid h2's claim 1@h2 from them, so by their standing records alone the VM is
// free, and they would grant a takeover with h1 without any of them checking h2's silence. They
// hear h2's 'held 1@h2' and must keep it as a claim that may still run.
t.test('five managers: a lower held claim hidden by a released abandoned claim still blocks the takeover', t => {
  const cfg = simHaConfig()
  const ids = ['h0', 'h1', 'h2', 'h3', 'h4']
  const members = ids.map(id => ({ id, cpuMips: 8000, memMiB: 16384 }))
  const vms: HaVmSpec[] = [{ ...vm('v'), home: 'h4' }]
  const live = { standing: { epoch: 1, host: 'h2', attempts: 0 }, released: false, own: null }
  const stale = { standing: { epoch: 8, host: 'h4', attempts: 0 }, released: true, own: null }
  const restored = (d: object) => ({ vms: { v: d } as never, modes: {}, maintenance: [] })
  const mk = (id: string, d: object): HaManager => new HaManager({ self: id, members, vms, config: cfg, prng: new Prng(id.charCodeAt(1)), life: 1, restored: restored(d) })
  const m = new Map([
    ['h0', mk('h0', stale)], ['h1', mk('h1', live)], ['h3', mk('h3', live)],
    ['h4', mk('h4', { ...stale, own: { epoch: 8, host: 'h4', attempts: 0 }, ownGranted: false })]
  ])
  const starts: Array<{ host: string, tick: number, epoch: number }> = []
  const h2Stops = 150
  const queue: Array<{ to: string, from: string, message: HaEffect & { type: 'send' } }> = []
  const drain = (id: string, h: HaManager, tick: number): void => {
    for (const e of h.takeEffects()) {
      if (e.type === 'send') for (const to of e.to) queue.push({ to, from: id, message: e })
      if (e.type === 'driver' && e.command.kind === 'haStart') {
        starts.push({ host: id, tick, epoch: e.command.epoch })
        h.step({ type: 'haDriverResult', command: e.command, ok: true })
      }
    }
  }
  for (let tick = 1; tick <= 260; tick++) {
    for (const [id, h] of m) {
      // h1 no longer hears h2 (one-way cut); the others do, and h2's beats keep its lease there.
      const h2 = id === 'h1' ? (tick < 3 ? 'alive' : tick < 10 ? 'suspect' : 'dead') : 'alive'
      h.step({ type: 'members', members: ids.filter(x => x !== id).map(x => ({ id: x, state: x === 'h2' ? h2 : 'alive' as const })) })
      if (id !== 'h1') {
        h.step({ type: 'heard', from: 'h2' })
        if (tick < h2Stops && tick % cfg.heldRefreshTicks === 1) h.step({ type: 'haMessage', from: 'h2', message: { type: 'haClaim', vm: 'v', claim: { epoch: 1, host: 'h2', attempts: 0 }, phase: 'held' } })
        if (tick === h2Stops) h.step({ type: 'haMessage', from: 'h2', message: { type: 'haRelease', vm: 'v', claim: { epoch: 1, host: 'h2', attempts: 0 }, granted: true } })
      }
      h.tick()
      drain(id, h, tick)
    }
    while (queue.length > 0) {
      const x = queue.shift()!
      const r = m.get(x.to)
      if (r === undefined) continue
      r.step({ type: 'haMessage', from: x.from, message: x.message.message })
      drain(x.to, r, tick)
    }
  }
  t.same(starts.filter(s => s.tick < h2Stops), [], 'no restart while h2 runs the VM and keeps its majority')
  t.equal(starts.length, 1, `once h2 releases its claim, exactly one restart (${JSON.stringify(starts)})`)
  t.end()
})
