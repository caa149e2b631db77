// The active view (agent/core/membership/active-view.ts): neighbours on activeViewSize / 2 hash
// rings. Bounded whatever the cluster's size, symmetric when views agree, connected with a small
// diameter, healed when a member leaves, the same whether built incrementally or from scratch;
// and the core sends its routine traffic (probe rounds, gossip, push-pull) only over it, and
// contacts at most joinFanout seeds per join attempt.
import t from 'tap'
import { ActiveView } from '../../../agent/core/membership/active-view.js'
import { MemberTable } from '../../../agent/core/membership/member-state.js'
import { AgentCore } from '../../../agent/core/agent-core.js'
import { defaultCoreConfig } from '../../../agent/core/config.js'
import { JOINED_RETRY_MULT } from '../../../agent/core/membership/push-pull.js'
import type { PersistedCoreState } from '../../../agent/core/persisted.js'
import { Prng } from '../../../agent/core/prng.js'

function hexId (prng: Prng): string {
  let s = ''
  for (let i = 0; i < 8; i++) s += prng.nextU32().toString(16).padStart(8, '0')
  return s
}

/** One host's member table and view over `ids` (all alive). */
function viewOf (self: string, ids: string[], size: number): { table: MemberTable, view: ActiveView } {
  const table = new MemberTable(self, () => {}, () => {})
  const view = new ActiveView(self, size, table)
  table.onReachable = (id, hash, reachable) => { if (reachable) view.added(id, hash); else view.removed(id) }
  for (const id of ids) table.becomeAlive(id, id, '', 1, 0)
  return { table, view }
}

function graph (ids: string[], size: number): Map<string, string[]> {
  return new Map(ids.map(id => [id, viewOf(id, ids, size).view.peers()]))
}

/** Eccentricity of `from` by BFS (Infinity when some host is unreachable). */
function eccentricity (g: Map<string, string[]>, from: string): number {
  const dist = new Map([[from, 0]])
  const q = [from]
  for (let i = 0; i < q.length; i++) {
    const u = q[i]!
    for (const v of g.get(u) ?? []) if (!dist.has(v)) { dist.set(v, dist.get(u)! + 1); q.push(v) }
  }
  return dist.size < g.size ? Infinity : Math.max(...dist.values())
}

const prng = new Prng(42)
const ids400 = Array.from({ length: 400 }, () => hexId(prng))

t.test('bounded by activeViewSize at any size, symmetric when views agree', t => {
  for (const size of [4, 6, 8]) {
    const g = graph(ids400, size)
    const degrees = [...g.values()].map(v => v.length)
    t.ok(degrees.every(d => d >= 2 && d <= size), `size ${size}: every view has 2..${size} members (min ${Math.min(...degrees)}, max ${Math.max(...degrees)})`)
    let asymmetric = 0
    for (const [a, peers] of g) for (const b of peers) if (!(g.get(b) ?? []).includes(a)) asymmetric++
    t.equal(asymmetric, 0, `size ${size}: B in A's view exactly when A is in B's`)
  }
  t.end()
})

t.test('the overlay is connected with a logarithmic diameter', t => {
  const g = graph(ids400, 6)
  const ecc = [ids400[0]!, ids400[100]!, ids400[399]!].map(id => eccentricity(g, id))
  t.ok(ecc.every(e => Number.isFinite(e)), 'every host reaches every other')
  // A ring alone has diameter n / 2 = 200; three random rings together stay near log2(400) ~ 9.
  t.ok(Math.max(...ecc) <= 12, `eccentricities ${ecc.join(', ')} <= 12 at 400 hosts`)
  t.end()
})

t.test('a member that leaves is replaced, and incremental upkeep matches a fresh build', t => {
  const ids = ids400.slice(0, 120)
  const self = ids[0]!
  const { table, view } = viewOf(self, ids, 6)
  const before = view.peers()
  const v0 = view.version
  const gone = before[0]!
  table.becomeDead(table.get(gone)!, 1, 1)
  const after = view.peers()
  t.notOk(after.includes(gone), 'the dead member is out of the view')
  t.ok(after.length >= 2 && after.length <= 6, `still bounded (${after.length})`)
  t.ok(view.version > v0, 'the version moved')
  // Churn: kill and revive members, then compare with a view built from the final set.
  const r = new Prng(9)
  for (let i = 0; i < 300; i++) {
    const id = ids[1 + r.int(ids.length - 1)]!
    const m = table.get(id)!
    if (m.state === 'alive') table.becomeDead(m, m.incarnation, i)
    else table.becomeAlive(id, id, '', m.incarnation + 1, i)
    if (i % 7 === 0) view.peers() // interleave reads with changes
  }
  const live = ids.filter(id => table.get(id)!.state === 'alive')
  const fresh = viewOf(self, live.filter(id => id !== self), 6).view.peers()
  t.same(view.peers(), fresh, 'the same neighbours as a view built from scratch')
  t.end()
})

t.test('small clusters keep a full mesh; size 0 means every reachable member', t => {
  const ids = ids400.slice(0, 6)
  t.same(viewOf(ids[0]!, ids, 6).view.peers(), ids.slice(1).sort(), 'five others with a view of 6: all of them')
  t.same(viewOf(ids[0]!, ids400.slice(0, 50), 0).view.peers(), ids400.slice(1, 50).sort(), 'size 0: all 49')
  t.end()
})

t.test('the core probes, gossips and pushes-pulls only over its view; joins contact joinFanout seeds', t => {
  const ids = ids400.slice(0, 60)
  const self = ids[0]!
  const restored: PersistedCoreState = { incarnation: 0, reportSeqCeiling: 0, members: ids.slice(1).map(id => ({ id, name: id, addr: `${id}:1`, incarnation: 1, state: 'alive' as const })) }
  const config = { ...defaultCoreConfig(), activeViewSize: 4, pushPullIntervalTicks: 20 }
  const core = new AgentCore({ self, name: self, addr: 'x:1', config, seed: 3, seeds: [], restored })
  const view = new Set(core.activeView().peers)
  t.ok(view.size >= 2 && view.size <= 4, `view of ${view.size}`)
  // The peers never answer, so they become suspects and dead and the view moves on to others:
  // each send is checked against the view of its tick (before or after it).
  const routine = new Map<string, number>()
  let outside = 0
  let maxView = 0
  for (let i = 0; i < 400; i++) {
    const before = new Set(core.activeView().peers)
    core.tick()
    const after = new Set(core.activeView().peers)
    maxView = Math.max(maxView, before.size, after.size)
    for (let rd = core.ready(); rd !== null; rd = core.ready()) {
      for (const o of rd.send) {
        const type = o.envelope.body.type
        if (type !== 'ping' && type !== 'gossip' && type !== 'pushPull') continue
        routine.set(type, (routine.get(type) ?? 0) + 1)
        if (!before.has(o.to) && !after.has(o.to)) outside++
      }
      core.advance(rd)
    }
  }
  for (const type of ['ping', 'gossip', 'pushPull']) t.ok((routine.get(type) ?? 0) > 0, `${type} frames sent (${routine.get(type) ?? 0})`)
  t.equal(outside, 0, 'none of them to a member outside the view of its tick')
  t.ok(maxView <= 4, `the view never held more than 4 (max ${maxView})`)

  const seeds = ids.slice(1, 21).map(id => ({ id, name: id, addr: `${id}:1` }))
  const fresh = new AgentCore({ self, name: self, addr: 'x:1', config: { ...defaultCoreConfig(), joinFanout: 3 }, seed: 5, seeds })
  const joins: string[] = []
  for (let i = 0; i < 60; i++) {
    fresh.tick()
    for (let rd = fresh.ready(); rd !== null; rd = fresh.ready()) {
      for (const o of rd.send) if (o.envelope.body.type === 'pushPull') joins.push(o.to)
      fresh.advance(rd)
    }
  }
  t.equal(joins.length, 6, 'two join attempts in 60 ticks (joinRetryTicks 50), three seeds each')
  t.equal(new Set(joins).size, 6, 'the second attempt tries three other seeds')
  t.end()
})

t.test('once joined, seeds not known alive are tried one at a time, JOINED_RETRY_MULT times less often', t => {
  // A's seeds are B, which answers, and 19 that never do. A joins B; from then on the 19 missing
  // seeds cost one join frame per joinRetryTicks * JOINED_RETRY_MULT, not joinFanout per joinRetryTicks.
  const ids = ids400.slice(100, 121)
  const [a, b] = [ids[0]!, ids[1]!]
  const seeds = ids.slice(1).map(id => ({ id, name: id, addr: `${id}:1` }))
  const config = { ...defaultCoreConfig(), joinFanout: 3 }
  const A = new AgentCore({ self: a, name: a, addr: 'a:1', config, seed: 7, seeds })
  const B = new AgentCore({ self: b, name: b, addr: 'b:1', config, seed: 8, seeds: [{ id: a, name: a, addr: 'a:1' }] })
  const joinTicks: Array<[number, string]> = []
  let joinedAt = -1
  const ticks = 50 + config.joinRetryTicks * JOINED_RETRY_MULT * 2 + 10
  for (let i = 0; i < ticks; i++) {
    for (const [from, to, core] of [[a, b, A], [b, a, B]] as const) {
      core.tick()
      for (let rd = core.ready(); rd !== null; rd = core.ready()) {
        for (const o of rd.send) {
          const body = o.envelope.body
          if (core === A && body.type === 'pushPull' && !body.reply && body.members.length === 1) joinTicks.push([i, o.to])
          if (o.to === to) (to === a ? A : B).step({ type: 'receive', from, envelope: o.envelope })
        }
        core.advance(rd)
      }
    }
    if (joinedAt < 0 && A.status().members.alive > 1) joinedAt = i
  }
  t.ok(joinedAt >= 0 && joinedAt < 60, `A joined B at tick ${joinedAt}`)
  const after = joinTicks.filter(([tick]) => tick > joinedAt)
  const before = joinTicks.length - after.length
  t.ok(before >= 1 && before <= 6, `${before} join frames before the join (joinFanout per attempt)`)
  // The attempt already scheduled at the join keeps its tick (joinRetryTicks after the last one).
  const gaps = after.slice(1).map(([x], k) => x - after[k]![0])
  t.ok(after.length === 3 && gaps.every(g => g === config.joinRetryTicks * JOINED_RETRY_MULT), `then one at a time, ${config.joinRetryTicks * JOINED_RETRY_MULT} ticks apart (at ticks ${after.map(([x]) => x).join(', ')})`)
  t.ok(after.every(([, to]) => to !== b), 'never to B, which is alive')
  t.equal(A.status().members.alive, 2, 'B is still alive at A')
  t.end()
})

t.test('an odd activeViewSize is refused with the field named', t => {
  t.throws(() => new AgentCore({ self: 'a', name: 'a', addr: 'a:1', config: { ...defaultCoreConfig(), activeViewSize: 5 }, seed: 1, seeds: [] }), /activeViewSize must be even/)
  t.end()
})
