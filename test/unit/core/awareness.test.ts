// Lifeguard local health (memberlist awareness.go) and the probe outcome rule that drives it.
import t from 'tap'
import { Awareness, ProbeRtt, probeAwarenessDelta } from '../../../agent/core/membership/awareness.js'
import { AgentCore } from '../../../agent/core/agent-core.js'
import { defaultCoreConfig } from '../../../agent/core/config.js'
import type { PersistedCoreState } from '../../../agent/core/persisted.js'

function envelopeTemplate (from: string): { protocolMin: number, protocolMax: number, protocolCur: number, from: string, incarnation: number, lamport: number, gossip: [] } {
  return { protocolMin: 1, protocolMax: 1, protocolCur: 1, from, incarnation: 1, lamport: 1, gossip: [] }
}

t.test('score is clamped to [0, max - 1] and scales timeouts by score + 1', t => {
  const a = new Awareness(8)
  const rows: Array<[number, number, number]> = [
    // delta, score after, scale(5)
    [-1, 0, 5], [1, 1, 10], [3, 4, 25], [10, 7, 40], [-2, 5, 30], [-100, 0, 5]
  ]
  for (const [d, score, scaled] of rows) {
    t.equal(a.applyDelta(d), score, `delta ${d}`)
    t.equal(a.scale(5), scaled)
  }
  t.end()
})

t.test('probe outcome deltas', t => {
  const rows: Array<[boolean, number, number, number]> = [
    // acked, expectedNacks, nacks, delta
    [true, 0, 0, -1], [true, 3, 0, -1], [false, 0, 0, 1], [false, 3, 3, 0], [false, 3, 1, 2], [false, 5, 0, 5]
  ]
  for (const [acked, exp, n, want] of rows) t.equal(probeAwarenessDelta(acked, exp, n), want, `acked=${acked} exp=${exp} nacks=${n}`)
  t.end()
})

t.test('round trips: the multiplier covers the median direct ack of the window, then forgets it', t => {
  const rtt = new ProbeRtt(3, 100)
  t.equal(rtt.multiplier(0), 1, 'no sample: 1')
  rtt.sample(10, 0)
  rtt.sample(12, 1)
  t.equal(rtt.multiplier(12), 1, 'acks within a tick or two: 1 (an idle cluster detects as fast as before)')
  rtt.sample(14, 40)
  t.equal(rtt.multiplier(14), 1, 'one slow ack among fast ones does not move it (median 1)')
  rtt.sample(20, 23)
  rtt.sample(22, 30)
  t.equal(rtt.typical(22), 23, 'median of 0, 1, 23, 30, 40')
  t.equal(rtt.multiplier(22), 8, 'most acks slow: (23 + 1) / 3')
  rtt.sample(60, 2)
  t.equal(rtt.multiplier(115), 8, 'at 115 the acks of ticks 10-14 have aged out: the median of 23, 30 and 2 is 23')
  t.equal(rtt.multiplier(122), 1, 'at 122 the slow ones have aged out too, however few samples came since (only 2 is left)')
  t.equal(rtt.typical(161), null, 'no sample left in the window')

  const a = new Awareness(8)
  a.setSlowness(new ProbeRtt(3, 100).multiplier(0))
  t.equal(a.scale(5), 5, 'healthy, no round trips: unscaled')
  a.setSlowness(3.5)
  t.equal(a.scale(3), 11, 'slowness 3.5: 3 ticks become 11 (rounded up)')
  a.applyDelta(5)
  t.equal(a.multiplier, 6, 'the score wins when larger (score 5 + 1)')
  a.setSlowness(40)
  t.equal(a.multiplier, 8, 'never beyond awarenessMax')
  t.end()
})

t.test('the core measures a direct ack that comes after its probe ended, and not an ack relayed by another member', t => {
  const [a, b, c] = ['a'.repeat(64), 'b'.repeat(64), 'c'.repeat(64)]
  const restored: PersistedCoreState = { incarnation: 0, reportSeqCeiling: 0, members: [b, c].map(id => ({ id, name: id, addr: `${id}:1`, incarnation: 1, state: 'alive' as const })) }
  const core = new AgentCore({ self: a, name: a, addr: 'a:1', config: defaultCoreConfig(), seed: 4, seeds: [], restored })
  const pings: Array<{ tick: number, to: string, seq: number }> = []
  const run = (ticks: number): void => {
    for (let i = 0; i < ticks; i++) {
      core.tick()
      for (let rd = core.ready(); rd !== null; rd = core.ready()) {
        for (const o of rd.send) {
          const body = o.envelope.body
          if (body.type === 'ping' && body.target === o.to) pings.push({ tick: core.status().ticks, to: o.to, seq: body.seq })
        }
        core.advance(rd)
      }
    }
  }
  const ack = (from: string, p: { to: string, seq: number }): void => {
    const envelope = { ...envelopeTemplate(from), body: { type: 'ack' as const, seq: p.seq, target: p.to } }
    core.step({ type: 'receive', from, envelope })
  }
  run(12)
  const first = pings[0]!
  t.ok(first !== undefined, `a ping to ${first.to.slice(0, 4)} at tick ${first.tick}`)
  run(first.tick + 15 - core.status().ticks)
  const other = first.to === b ? c : b
  ack(other, first)
  t.equal(core.status().probeRttTicks, null, 'an ack that another member relays is not a round trip of the target')
  ack(first.to, first)
  t.equal(core.status().probeRttTicks, 15, 'the target\'s own ack, 15 ticks after the ping (past its deadline): measured')
  t.ok(core.status().probeMultiplier >= 16 / 3, `and the probes now wait at least (15 + 1) / 3 times longer (${core.status().probeMultiplier.toFixed(2)})`)
  t.end()
})
