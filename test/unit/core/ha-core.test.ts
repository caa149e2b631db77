// Table tests for the HA core: quorum from the view and leases, the fence clock and watchdog,
// the fence-delay formula, the restart assignment, and a claim round between three managers.
import t from 'tap'
import { ConfigError } from '../../../agent/core/config.js'
import { Prng } from '../../../agent/core/prng.js'
import {
  FenceClock, HaManager, assignRestarts, compareHaClaims, evaluateQuorum, majority, requiredFenceDelayTicks,
  simHaConfig, defaultHaConfig, validateHaConfig, validateHaInventory, watchdogAllows, type HaEffect, type HaMessage, type HaVmSpec
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
  t.equal(defaultHaConfig().fenceDelayTicks, requiredFenceDelayTicks(defaultHaConfig()), 'the default fence delay is the safe minimum for the default timing')
  t.ok(defaultHaConfig().fenceDelayTicks * 100 <= 16_000, `default fence delay ${defaultHaConfig().fenceDelayTicks * 100} ms leaves room under a 20 s failover`)
  t.throws(() => validateHaConfig({ ...defaultHaConfig(), fenceDelayTicks: defaultHaConfig().fenceDelayTicks - 1 }), ConfigError, 'one tick less is refused')
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

/** A manager that holds a watchdog (the runtime says so once the device is open). */
function fenced (h: HaManager): HaManager {
  h.step({ type: 'haLocalFence', fenced: true })
  return h
}

/** A beat of c's (life `life`), saying whether c holds a fence. */
const cBeat = (tick: number, fence: boolean, life = 1): HaMessage => ({ type: 'haBeat', life, sent: tick, echo: null, mode: { version: 0, armed: true }, maintenance: [], fenced: fence, confirmed: [] })

interface SilentOpts {
  /** What c's beats say of its fence. @default true */
  cFenced?: boolean
  /** An operator confirms c down through a, at this tick. */
  confirmAt?: number
  /** c restarts at this tick as life 2 with no watchdog (its beats say so), then goes silent again. */
  cRestartAt?: number
  /** a never hears c's HA beats (no connection between them; gossip still tells a of c). */
  aDeafToC?: boolean
  /** The life of c that a's membership view knows, passed with the confirmation (AgentCore does). */
  confirmKnownLife?: number
  ticks?: number
}

/** Three managers; host c (home of v1) goes silent at tick 20 and ends in `gone` at tick 30. */
function silentHomeRun (gone: 'dead' | 'left', o: SilentOpts = {}): { starts: Array<{ host: string, tick: number }>, cSilentSince: number, cfg: ReturnType<typeof simHaConfig>, m: Map<string, HaManager> } {
  const cfg = simHaConfig()
  const members = ['a', 'b', 'c'].map(id => ({ id, cpuMips: 8000, memMiB: 16384 }))
  const vms: HaVmSpec[] = [{ ...vm('v1'), home: 'c' }]
  const mk = (id: string): HaManager => fenced(new HaManager({ self: id, members, vms, config: cfg, prng: new Prng(id.charCodeAt(0)), life: 1, running: id === 'c' ? ['v1'] : [] }))
  const m = new Map([['a', mk('a')], ['b', mk('b')]])
  const starts: Array<{ host: string, tick: number }> = []
  let cSilentSince = 0
  const cAlive = (tick: number): boolean => tick < 20 || (o.cRestartAt !== undefined && tick >= o.cRestartAt && tick < o.cRestartAt + 2)
  for (let tick = 1; tick <= (o.ticks ?? 120); tick++) {
    const inbox: Array<{ to: string, from: string, e: HaEffect }> = []
    for (const [id, h] of m) {
      h.step({ type: 'members', members: [{ id: 'a', state: 'alive' }, { id: 'b', state: 'alive' }, { id: 'c', state: cAlive(tick) ? 'alive' : tick < 30 || (o.cRestartAt !== undefined && tick < o.cRestartAt + 12) ? 'suspect' : gone }] })
      if (tick < 20 && tick % cfg.beatIntervalTicks === 0 && !(o.aDeafToC === true && id === 'a')) h.step({ type: 'haMessage', from: 'c', message: cBeat(tick, o.cFenced ?? true) })
      if (o.cRestartAt === tick) h.step({ type: 'haMessage', from: 'c', message: cBeat(tick, false, 2) })
      if (o.confirmAt === tick && id === 'a') h.step({ type: 'haOperatorConfirmDown', host: 'c', ...(o.confirmKnownLife !== undefined ? { knownLife: o.confirmKnownLife } : {}) })
      h.tick()
      for (const e of h.takeEffects()) {
        if (e.type === 'send') for (const to of e.to) inbox.push({ to, from: id, e })
        if (e.type === 'driver' && e.command.kind === 'haStart') starts.push({ host: id, tick })
      }
      if (cAlive(tick)) { h.step({ type: 'heard', from: 'c' }); cSilentSince = 0 } else if (cSilentSince === 0) cSilentSince = tick
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
  return { starts, cSilentSince, cfg, m }
}

t.test('three managers: a dead host is taken over only after the fence delay, by one host', t => {
  const { starts, cSilentSince, cfg } = silentHomeRun('dead')
  t.equal(starts.length, 1, `exactly one restart (${JSON.stringify(starts)})`)
  const lastHeard = cSilentSince - 1
  t.ok(starts[0]!.tick - lastHeard >= cfg.fenceDelayTicks, `not before the fence delay after the last frame (${starts[0]!.tick - lastHeard} >= ${cfg.fenceDelayTicks})`)
  t.end()
})

t.test('fence gate: a dead host that reported no watchdog is never taken over, until an operator confirms it down', t => {
  const none = silentHomeRun('dead', { cFenced: false, ticks: 200 })
  t.equal(none.starts.length, 0, `no restart of a host with no fence, however long (${JSON.stringify(none.starts)})`)
  const st = none.m.get('a')!.status()
  t.same(st.awaitingConfirmation, ['c'], 'a lists c as waiting for an operator\'s confirmation')
  t.same(st.unfenced, ['c'], 'and as unfenced')
  t.same(st.fencedHosts, [], 'c is not listed as one that may be taken over')
  t.equal(st.selfFenced, true, 'a holds its own fence')
  const confirmed = silentHomeRun('dead', { cFenced: false, confirmAt: 100, ticks: 200 })
  t.equal(confirmed.starts.length, 1, `after confirm-down, exactly one restart (${JSON.stringify(confirmed.starts)})`)
  t.ok(confirmed.starts[0]!.tick >= 100, 'not before the confirmation')
  t.same(confirmed.m.get('b')!.status().confirmedDown.map(c => c.host), ['c'], 'the confirmation reached b through the beats')
  t.end()
})

t.test('confirm-down through an agent that never heard the host\'s beats covers the life its membership view knows', t => {
  // a has no connection to c: c's beats never reached it, though gossip told it of c (life 1).
  // Before, a recorded the confirmation for life 0, which covers no life b knows: b refused
  // every claim, and the VM never restarted.
  const blind = silentHomeRun('dead', { cFenced: false, aDeafToC: true, confirmAt: 100, ticks: 220 })
  t.equal(blind.starts.length, 0, 'without the membership\'s life, no restart (the confirmation covers life 0 only)')
  const r = silentHomeRun('dead', { cFenced: false, aDeafToC: true, confirmAt: 100, confirmKnownLife: 1, ticks: 220 })
  t.equal(r.starts.length, 1, `with it, exactly one restart (${JSON.stringify(r.starts)})`)
  t.ok(r.starts[0]!.tick >= 100, 'not before the confirmation')
  t.same(r.m.get('b')!.status().confirmedDown.map(c => [c.host, c.life]), [['c', 1]], 'b holds c confirmed down in life 1')
  // A later life is not covered: c comes back as life 2 (its beat says so) after a confirmation of life 1.
  const later = silentHomeRun('dead', { cFenced: false, aDeafToC: true, confirmAt: 25, confirmKnownLife: 1, cRestartAt: 40, ticks: 220 })
  t.ok(later.starts.every(s => s.tick < 40), `no restart after c's new life (${JSON.stringify(later.starts)})`)
  t.end()
})

t.test('fence gate: a fence reported in an earlier life does not cover a later one', t => {
  // c reported a fence in life 1, restarts as life 2 without one (its beat says so), then dies.
  const r = silentHomeRun('dead', { cRestartAt: 40, ticks: 220 })
  t.equal(r.starts.length, 0, `no restart: the latest life said it holds no fence (${JSON.stringify(r.starts)})`)
  t.same(r.m.get('a')!.status().awaitingConfirmation, ['c'], 'c waits for an operator')
  t.end()
})

t.test('fence gate: a host without a fence restarts nothing and is left out of the shared assignment', t => {
  const cfg = simHaConfig()
  const members = ['a', 'b', 'c'].map(id => ({ id, cpuMips: 8000, memMiB: 16384 }))
  const h = new HaManager({ self: 'a', members, vms: [{ ...vm('v1'), home: 'c' }], config: cfg, prng: new Prng(1), life: 1 })
  t.equal(h.status().selfFenced, false, 'a manager starts unfenced until the runtime says otherwise')
  h.step({ type: 'haLocalFence', fenced: true })
  t.equal(h.status().selfFenced, true, 'haLocalFence sets it')
  const ev = h.takeEffects().filter(e => e.type === 'event')
  t.ok(ev.some(e => e.type === 'event' && e.event.kind === 'ha-fence'), 'and says so as an event')
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
  const mk = (id: string, d: object): HaManager => fenced(new HaManager({ self: id, members, vms, config: cfg, prng: new Prng(id.charCodeAt(1)), life: 1, restored: restored(d) }))
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

t.test('a stall the runtime skipped: HA learns the elapsed ticks, so the fence grace does not outlast the real time', t => {
  // Three managers with the production timing (fence grace 25 ticks); a runs v1. a's agent
  // stalls for 60 ticks while b and c go on. The runtime then replays 10 ticks and skips 50.
  const cfg = defaultHaConfig()
  const members = ['a', 'b', 'c'].map(id => ({ id, cpuMips: 8000, memMiB: 16384 }))
  const vms: HaVmSpec[] = [{ ...vm('v1'), home: 'a' }]
  const run = (told: boolean): { watchdogOk: boolean, fenced: boolean, events: string[] } => {
    const m = new Map(['a', 'b', 'c'].map(id => [id, fenced(new HaManager({ self: id, members, vms, config: cfg, prng: new Prng(id.charCodeAt(0)), life: 1, running: id === 'a' ? ['v1'] : [] }))]))
    const stalled = new Set<string>()
    let fencedStop = false
    const events: string[] = []
    const collect = (id: string, h: HaManager, inbox: Array<{ to: string, from: string, message: HaMessage }>): void => {
      for (const e of h.takeEffects()) {
        if (e.type === 'send') for (const to of e.to) inbox.push({ to, from: id, message: e.message })
        if (id === 'a' && e.type === 'driver' && e.command.kind === 'haStop' && e.command.reason === 'fence') fencedStop = true
        if (id === 'a' && e.type === 'event') events.push(e.event.text)
      }
    }
    const round = (): void => {
      const inbox: Array<{ to: string, from: string, message: HaMessage }> = []
      for (const [id, h] of m) {
        if (stalled.has(id)) continue
        h.step({ type: 'members', members: ['a', 'b', 'c'].map(x => ({ id: x, state: 'alive' as const })) })
        h.tick()
        collect(id, h, inbox)
      }
      for (const x of inbox) {
        const r = m.get(x.to)
        if (r === undefined || stalled.has(x.to)) continue
        r.step({ type: 'haMessage', from: x.from, message: x.message })
        collect(x.to, r, [])
      }
    }
    for (let i = 0; i < 40; i++) round()
    const a = m.get('a')!
    t.ok(a.quorate && a.roleOf('v1') === 'running' && a.watchdogOk(), `${told ? 'told' : 'not told'}: a runs v1, quorate, pings its watchdog`)
    stalled.add('a')
    for (let i = 0; i < 60; i++) round()
    if (told) a.step({ type: 'elapsed', ticks: 50 })
    for (let i = 0; i < 10; i++) { a.tick(); collect('a', a, []) }
    return { watchdogOk: a.watchdogOk(), fenced: fencedStop, events }
  }
  const blind = run(false)
  t.ok(blind.watchdogOk, 'not told of the skipped ticks, a still counts itself in its grace after 60 real ticks without a majority (the hazard)')
  const told = run(true)
  t.notOk(told.watchdogOk, 'told, a withholds its watchdog ping: 60 ticks without a majority are past the grace')
  t.ok(told.fenced, 'and fences v1 at once')
  t.ok(told.events.some(e => e.includes('50 ticks passed uncounted')), 'the clock jump is reported')
  t.end()
})
