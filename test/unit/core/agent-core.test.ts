// AgentCore with no clock and no sockets: step/tick in, ready() out. Checks the SWIM rules
// (ack, indirect probe, suspicion, death, refutation), persist-before-send, restart incarnation,
// push-pull, load reports and graceful leave.
import t from 'tap'
import { AgentCore } from '../../../agent/core/agent-core.js'
import { localTestCoreConfig } from '../../../agent/core/config.js'
import type { Ready } from '../../../agent/core/effects.js'
import type { Body, Envelope, Gossip, MemberRecord } from '../../../agent/core/messages.js'
import type { PersistedCoreState } from '../../../agent/core/persisted.js'
import type { HostSample } from '../../../agent/core/types.js'

const rec = (id: string, incarnation = 1): MemberRecord => ({ id, name: id, addr: `${id}:1`, incarnation, state: 'alive' })

function newCore (members: string[], restored?: Partial<PersistedCoreState>): AgentCore {
  const r: PersistedCoreState = { incarnation: 0, reportSeqCeiling: 0, members: members.map(id => rec(id)), ...restored }
  return new AgentCore({ self: 'a', name: 'a', addr: 'a:1', config: localTestCoreConfig(), seed: 7, seeds: [], restored: r })
}

function env (from: string, body: Body, gossip: Gossip[] = [], incarnation = 1): Envelope {
  return { protocolMin: 1, protocolMax: 1, protocolCur: 1, from, incarnation, lamport: 1, body, gossip }
}

function drain (core: AgentCore): Ready {
  const all: Ready = { persist: [], send: [], events: [], driver: [], vip: [], ha: [], replica: [], split: [] }
  for (let rd = core.ready(); rd !== null; rd = core.ready()) {
    all.persist.push(...rd.persist); all.send.push(...rd.send); all.events.push(...rd.events)
    core.advance(rd)
  }
  return all
}

function ticks (core: AgentCore, n: number): Ready {
  const all: Ready = { persist: [], send: [], events: [], driver: [], vip: [], ha: [], replica: [], split: [] }
  for (let i = 0; i < n; i++) {
    core.tick()
    const rd = drain(core)
    all.persist.push(...rd.persist); all.send.push(...rd.send); all.events.push(...rd.events)
  }
  return all
}

t.test('a new core persists its incarnation before it sends anything', t => {
  const core = newCore(['b', 'c'])
  const rd = core.ready()!
  t.match(rd.persist, [{ type: 'put', key: 'core/incarnation', value: 1 }])
  t.equal(rd.send.length, 0)
  core.advance(rd)
  t.throws(() => core.advance(rd), { code: 'ASSERTION_FAILED' })
  t.end()
})

t.test('a restarted core comes back above every incarnation it used', t => {
  const core = newCore(['b'], { incarnation: 41 })
  t.equal(core.incarnation, 42)
  t.match(drain(core).persist, [{ key: 'core/incarnation', value: 42 }])
  t.end()
})

t.test('a ping is answered with an ack', t => {
  const core = newCore(['b', 'c'])
  drain(core)
  core.step({ type: 'receive', from: 'b', envelope: env('b', { type: 'ping', seq: 9, target: 'a' }) })
  t.match(drain(core).send, [{ to: 'b', envelope: { body: { type: 'ack', seq: 9, target: 'a' } } }])
  t.end()
})

t.test('suspect is refuted by a higher incarnation, persisted in the same Ready', t => {
  const core = newCore(['b', 'c'])
  drain(core)
  core.step({ type: 'receive', from: 'b', envelope: env('b', { type: 'gossip' }, [{ type: 'suspect', node: 'a', incarnation: 3, from: 'b' }]) })
  t.equal(core.incarnation, 4)
  const rd = ticks(core, 2)
  t.ok(rd.persist.some(p => p.type === 'put' && p.key === 'core/incarnation' && p.value === 4), 'incarnation 4 persisted')
  const alive = rd.send.flatMap(o => o.envelope.gossip).find(g => g.type === 'alive' && g.member.id === 'a')
  t.match(alive, { member: { id: 'a', incarnation: 4 } })
  t.equal(core.status().counters.refutations, 1)
  t.end()
})

t.test('a silent member goes through indirect probes, suspicion and death', t => {
  const core = newCore(['b', 'c', 'd', 'e'])
  drain(core)
  const events: string[] = []
  let pingReqs = 0
  for (let i = 0; i < 400 && !events.some(e => e.includes('became dead')); i++) {
    const rd = ticks(core, 1)
    for (const o of rd.send) {
      const b = o.envelope.body
      // everyone but b answers directly
      if (b.type === 'ping' && b.target !== 'b') core.step({ type: 'receive', from: o.to, envelope: env(o.to, { type: 'ack', seq: b.seq, target: b.target }) })
      if (b.type === 'pingReq') {
        pingReqs++
        if (b.target !== 'b') core.step({ type: 'receive', from: o.to, envelope: env(o.to, { type: 'ack', seq: b.seq, target: b.target }) })
      }
    }
    for (const e of rd.events) events.push(e.text)
  }
  t.ok(pingReqs > 0, 'indirect probes were sent')
  t.ok(events.includes('member b became suspect (from alive)'), 'b suspected')
  t.ok(events.includes('member b became dead (from suspect)'), 'b declared dead')
  t.notOk(events.some(e => /member [cde]/.test(e)), 'no one else changed')
  t.equal(core.status().counters.deathsDeclared, 1)
  t.end()
})

t.test('an alive with a higher incarnation brings a dead member back', t => {
  const core = newCore(['b', 'c'])
  drain(core)
  core.step({ type: 'receive', from: 'c', envelope: env('c', { type: 'gossip' }, [{ type: 'dead', node: 'b', incarnation: 1, from: 'c' }]) })
  t.match(core.view().find(m => m.id === 'b'), { state: 'dead' })
  core.step({ type: 'receive', from: 'c', envelope: env('c', { type: 'gossip' }, [{ type: 'alive', member: rec('b', 1) }]) })
  t.match(core.view().find(m => m.id === 'b'), { state: 'dead' }, 'same incarnation does not')
  core.step({ type: 'receive', from: 'c', envelope: env('c', { type: 'gossip' }, [{ type: 'alive', member: rec('b', 2) }]) })
  t.match(core.view().find(m => m.id === 'b'), { state: 'alive', incarnation: 2 })
  t.end()
})

t.test('a frame from a host held dead is answered with its death notice', t => {
  const core = newCore(['b', 'c'])
  drain(core)
  core.step({ type: 'receive', from: 'c', envelope: env('c', { type: 'gossip' }, [{ type: 'dead', node: 'b', incarnation: 1, from: 'c' }]) })
  drain(core)
  core.step({ type: 'receive', from: 'b', envelope: env('b', { type: 'gossip' }) })
  t.match(drain(core).send, [{ to: 'b', envelope: { gossip: [{ type: 'dead', node: 'b', incarnation: 1 }] } }])
  t.end()
})

t.test('a death notice about us from a host we hold dead is still heard: we refute (both sides of a split merge)', t => {
  const core = newCore(['b', 'c'])
  drain(core)
  core.step({ type: 'receive', from: 'c', envelope: env('c', { type: 'gossip' }, [{ type: 'dead', node: 'b', incarnation: 1, from: 'c' }]) })
  drain(core)
  const before = core.status().incarnation
  // b holds us dead too and tells us so; it is not believed about c, but about us it is.
  core.step({ type: 'receive', from: 'b', envelope: env('b', { type: 'gossip' }, [{ type: 'dead', node: 'a', incarnation: before, from: 'b' }, { type: 'dead', node: 'c', incarnation: 1, from: 'b' }]) })
  t.ok(core.status().incarnation > before, 'we refuted with a higher incarnation')
  t.match(core.view().find(m => m.id === 'c'), { state: 'alive' }, 'the held-dead sender is not believed about others')
  t.ok(drain(core).persist.some(p => p.type === 'put' && p.key === 'core/incarnation'), 'the new incarnation is persisted')
  t.end()
})

t.test('push-pull: a join request gets the whole table back, and its sender is learned', t => {
  const core = newCore(['b', 'c'])
  drain(core)
  core.step({ type: 'receive', from: 'z', envelope: env('z', { type: 'pushPull', reply: false, members: [rec('z', 5)], reports: [] }) })
  const rd = drain(core)
  const reply = rd.send.find(o => o.to === 'z')!
  t.match(reply.envelope.body, { type: 'pushPull', reply: true })
  const body = reply.envelope.body
  t.same(body.type === 'pushPull' ? body.members.map(m => m.id).sort() : [], ['a', 'b', 'c'], 'all but its own record, which it sent')
  t.match(core.view().find(m => m.id === 'z'), { state: 'alive', incarnation: 5 })
  t.end()
})

t.test('push-pull: a reply leaves out the records the request showed the requester holds as we do', t => {
  const core = newCore(['b', 'c', 'd', 'e'])
  drain(core)
  core.step({ type: 'receive', from: 'c', envelope: env('c', { type: 'gossip' }, [{ type: 'suspect', node: 'd', incarnation: 1, from: 'c' }]) })
  drain(core)
  // z holds b as we do, c at an older incarnation, d alive (we hold it suspect), e at a newer
  // incarnation, and does not know us.
  const theirs = [rec('z', 2), rec('b', 1), rec('c', 0), rec('d', 1), rec('e', 3)]
  core.step({ type: 'receive', from: 'z', envelope: env('z', { type: 'pushPull', reply: false, members: theirs, reports: [] }, [], 2) })
  const reply = drain(core).send.find(o => o.to === 'z')!.envelope.body
  t.equal(reply.type, 'pushPull')
  const got = reply.type === 'pushPull' ? reply.members : []
  t.same(got.map(m => `${m.id}:${m.incarnation}:${m.state}`).sort(), ['a:1:alive', 'c:1:alive', 'd:1:suspect'],
    'ours (always), c (newer here), d (suspect here); not b or z (the same), not e (merged from theirs: now the same)')
  t.match(core.view().find(m => m.id === 'e'), { incarnation: 3 }, 'their newer record was merged')
  t.equal(core.status().counters.pushPullRecordsSkipped, 3)
  // A request from a sender we hold dead is not merged: it gets our whole table.
  core.step({ type: 'receive', from: 'c', envelope: env('c', { type: 'gossip' }, [{ type: 'dead', node: 'b', incarnation: 1, from: 'c' }]) })
  drain(core)
  core.step({ type: 'receive', from: 'b', envelope: env('b', { type: 'pushPull', reply: false, members: [rec('b', 1), rec('c', 1)], reports: [] }) })
  const whole = drain(core).send.find(o => o.to === 'b' && o.envelope.body.type === 'pushPull')!.envelope.body
  t.same(whole.type === 'pushPull' ? whole.members.map(m => m.id).sort() : [], ['a', 'b', 'c', 'd', 'e', 'z'], 'held dead: the whole table')
  t.end()
})

const sample: HostSample = {
  cpuUtil: 0.5, memUsedMiB: 1024, netMbps: 100,
  capacity: { cpuCores: 8, cpuMipsPerCore: 1000, memMiB: 4096, netMbps: 1000 },
  vms: [{ id: 'vm1', vcpus: 2, memMiB: 1024, cpuUtil: 0.2, memUsedMiB: 512, state: 'running' }]
}

t.test('samples become a load report with a forecast, its seq leased and persisted first', t => {
  const core = newCore(['b', 'c'])
  drain(core)
  core.step({ type: 'hostSample', sample })
  t.match(core.view().find(m => m.id === 'a')!.report, { host: 'a', seq: 1 }, 'the first sample is reported at once')
  const rd = ticks(core, localTestCoreConfig().reportIntervalTicks + 1)
  const me = core.view().find(m => m.id === 'a')!
  t.match(me.report, { host: 'a', seq: 2, cpuUtil: 0.5, memUtil: 0.25, netUtil: 0.1, vms: [{ id: 'vm1' }] })
  t.equal(me.report!.forecastCpu.length, localTestCoreConfig().forecastHorizon)
  t.ok(rd.persist.some(p => p.type === 'put' && p.key === 'core/reportSeqCeiling'), 'seq ceiling persisted')
  t.ok(rd.send.some(o => o.envelope.gossip.some(g => g.type === 'report')), 'report pushed')
  t.end()
})

t.test('the host\'s memory (committed, ballooned, reclaimable, short) rides on its load report', t => {
  const core = newCore(['b', 'c'])
  drain(core)
  const memory = { committedMiB: 6144, balloonedMiB: 1024, reclaimableMiB: 700, unmetMiB: 0, pressure: 0.01, ksmSavedMiB: 12, ksmCpu: 0.05 }
  core.step({ type: 'hostSample', sample: { ...sample, memory } })
  t.same(core.view().find(m => m.id === 'a')!.report?.memory, memory, 'in the report this host gossips')
  const rd = ticks(core, localTestCoreConfig().reportIntervalTicks + 1)
  t.ok(rd.send.some(o => o.envelope.gossip.some(g => g.type === 'report' && g.report.memory?.committedMiB === 6144)), 'and pushed to peers')
  t.end()
})

t.test('graceful leave broadcasts Left and stops answering', t => {
  const core = newCore(['b', 'c'])
  drain(core)
  core.step({ type: 'leave' })
  const rd = drain(core)
  t.ok(rd.send.some(o => o.envelope.gossip.some(g => g.type === 'left' && g.node === 'a')))
  t.match(rd.events, [{ text: 'member a became left (from alive)' }])
  core.step({ type: 'receive', from: 'b', envelope: env('b', { type: 'ping', seq: 1, target: 'a' }) })
  t.notOk(drain(core).send.some(o => o.envelope.body.type === 'ack'))
  t.end()
})

t.test('frames outside the protocol range are rejected and counted', t => {
  const core = newCore(['b'])
  drain(core)
  core.step({ type: 'receive', from: 'b', envelope: { ...env('b', { type: 'gossip' }), protocolMin: 2, protocolMax: 3 } })
  core.step({ type: 'frameRejected', from: null, reason: 'decode' })
  t.equal(core.status().counters.framesRejected, 2)
  t.end()
})
