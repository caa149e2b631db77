// A suspicion fires after its timeout times this host's local-health multiplier (gossip-merge.ts,
// suspicionFiresAt): a host whose acks come back late does not trust its own deadline, a healthy
// one declares on time, and a death declared elsewhere is applied at once either way.
import t from 'tap'
import { AgentCore } from '../../../agent/core/agent-core.js'
import { defaultCoreConfig } from '../../../agent/core/config.js'
import type { Body, Envelope, Gossip } from '../../../agent/core/messages.js'
import type { PersistedCoreState } from '../../../agent/core/persisted.js'

const ids = ['a', 'b', 'c', 'd', 'e'].map(x => x.repeat(64))
const [a, , c, , e] = ids as [string, string, string, string, string]

function env (from: string, body: Body, gossip: Gossip[] = []): Envelope {
  return { protocolMin: 1, protocolMax: 1, protocolCur: 1, from, incarnation: 1, lamport: 1, body, gossip }
}

/** A core whose pings every member answers `ackDelay` ticks later; returns it and a step function. */
function cluster (ackDelay: number): { core: AgentCore, run: (ticks: number) => string[] } {
  const restored: PersistedCoreState = { incarnation: 0, reportSeqCeiling: 0, members: ids.slice(1).map(id => ({ id, name: id, addr: `${id}:1`, incarnation: 1, state: 'alive' as const })) }
  const core = new AgentCore({ self: a, name: 'a', addr: 'a:1', config: defaultCoreConfig(), seed: 11, seeds: [], restored })
  const due: Array<{ at: number, from: string, seq: number, target: string }> = []
  let now = 0
  const run = (ticks: number): string[] => {
    const events: string[] = []
    for (let i = 0; i < ticks; i++) {
      core.tick()
      now++
      for (const d of due.filter(x => x.at <= now)) {
        core.step({ type: 'receive', from: d.from, envelope: env(d.from, { type: 'ack', seq: d.seq, target: d.target }) })
      }
      due.splice(0, due.length, ...due.filter(x => x.at > now))
      for (let rd = core.ready(); rd !== null; rd = core.ready()) {
        for (const o of rd.send) {
          const b = o.envelope.body
          if (b.type === 'ping' && b.target === o.to) due.push({ at: now + ackDelay, from: o.to, seq: b.seq, target: o.to })
        }
        for (const ev of rd.events) events.push(ev.text)
        core.advance(rd)
      }
    }
    return events
  }
  return { core, run }
}

/** Ticks from a suspicion of e (gossiped by c) until this core declares e dead, and the multiplier when it began. */
function timeToDeath (ackDelay: number): { ticks: number, multiplier: number } {
  const { core, run } = cluster(ackDelay)
  run(200)
  const multiplier = core.status().probeMultiplier
  core.step({ type: 'receive', from: c, envelope: env(c, { type: 'gossip' }, [{ type: 'suspect', node: e, incarnation: 1, from: c }]) })
  for (let n = 1; n <= 3000; n++) {
    if (run(1).some(x => x.startsWith(`member ${e.slice(0, 8)}`) && x.includes('became dead'))) return { ticks: n, multiplier }
  }
  return { ticks: Infinity, multiplier }
}

t.test('a host whose acks come back late waits its multiplier times longer before it declares a suspect dead', t => {
  const healthy = timeToDeath(0)
  const starved = timeToDeath(15)
  t.equal(healthy.multiplier, 1, 'acks at once: multiplier 1')
  // n = 5: min = 3 * 1 * 5 = 15 ticks, max = 6 * 15 = 90 (no confirmations): the healthy host declares at 90.
  t.ok(healthy.ticks >= 89 && healthy.ticks <= 92, `healthy: dead ${healthy.ticks} ticks after the suspicion (timeout 90)`)
  t.ok(starved.multiplier > 4, `acks 15 ticks late: multiplier ${starved.multiplier.toFixed(2)}`)
  t.ok(starved.ticks >= Math.floor(90 * starved.multiplier) - 1, `starved: dead ${starved.ticks} ticks after the suspicion, not before 90 x ${starved.multiplier.toFixed(2)}`)
  t.ok(Number.isFinite(starved.ticks), 'but it is still declared')
  t.end()
})

t.test('a death declared by another member is applied at once, however starved this host is', t => {
  const { core, run } = cluster(15)
  run(200)
  t.ok(core.status().probeMultiplier > 4, 'starved')
  core.step({ type: 'receive', from: c, envelope: env(c, { type: 'gossip' }, [{ type: 'dead', node: e, incarnation: 1, from: c }]) })
  t.match(core.view().find(m => m.id === e), { state: 'dead' })
  t.end()
})
