/**
 * VIP ownership, table tests: claim order, majority grants, takeover only after death on the
 * majority side, make-before-break and break-before-make planned moves, fencing, bursts, heal
 * re-announcement, restart, stale messages, and the effects' ordering (persist before send).
 * Method: three or five cores stepped by hand; a small pump delivers their messages at once and
 * confirms their address effects, so each case reads as a script.
 */
import t from 'tap'
import { Prng } from '../../../agent/core/prng.js'
import type { MemberState } from '../../../agent/core/types.js'
import {
  VipOwnership, restoreVipState, type VipEffect, type VipDurable, type VipRole
} from '../../../agent/core/vip/vip-ownership.js'
import { ConfigError } from '../../../agent/core/config.js'
import {
  defaultVipConfig, leaseWaitTicks, localTestVipConfig, parseVipAddress, validateVipConfig, validateVipSpecs,
  type VipConfig, type VipSpec
} from '../../../agent/core/vip/vip-config.js'
import { compareClaims, type VipMessage } from '../../../agent/core/vip/vip-messages.js'

const GROUP: VipSpec = { id: 'web', address: '192.0.2.10/24', iface: 'eth0', binding: { kind: 'group', hosts: ['a', 'b', 'c'] } }
const VMVIP: VipSpec = { id: 'db', address: '192.0.2.11/24', iface: 'eth0', binding: { kind: 'vm', vm: 'vm1' } }
/** The longest a taker waits for an old owner's lease (a grantor renewed it just now), with the test tunables. */
const WAIT = leaseWaitTicks(localTestVipConfig(), 0)

interface Cluster {
  nodes: Map<string, VipOwnership>
  /** Address effects seen, in order, as "host:type[:reason]". */
  log: string[]
  /** Hosts whose interface holds each VIP now. */
  holders: Map<string, Set<string>>
  /** Messages not delivered (for tests that hold them back). */
  held: Array<{ from: string, to: string, message: VipMessage }>
  /** When set, messages matching it are held back instead of delivered. */
  hold?: (from: string, to: string, m: VipMessage) => boolean
  /** When false, address effects are not confirmed automatically. */
  autoApply: boolean
  pendingApply: Array<{ host: string, e: VipEffect }>
  /** What each host persisted (its store), for restarts. */
  stores: Map<string, Map<string, unknown>>
}

function cluster (ids: string[], opts: { vips?: VipSpec[], config?: Partial<VipConfig>, restored?: Record<string, NonNullable<ConstructorParameters<typeof VipOwnership>[0]['restored']>> } = {}): Cluster {
  const c: Cluster = { nodes: new Map(), log: [], holders: new Map(), held: [], autoApply: true, pendingApply: [], stores: new Map() }
  ids.forEach((id, i) => {
    const restored = opts.restored?.[id]
    c.nodes.set(id, new VipOwnership({
      self: id,
      members: ids,
      vips: opts.vips ?? [GROUP],
      config: { ...localTestVipConfig(), ...opts.config },
      prng: new Prng(100 + i),
      ...(restored !== undefined ? { restored } : {})
    }))
  })
  return c
}

function n (c: Cluster, id: string): VipOwnership {
  const x = c.nodes.get(id)
  if (x === undefined) throw new Error(`no node ${id}`)
  return x
}

function role (c: Cluster, id: string, vip = 'web'): VipRole | undefined {
  return n(c, id).status().find(s => s.vip === vip)?.role
}

function owner (c: Cluster, id: string, vip = 'web'): string | null | undefined {
  return n(c, id).status().find(s => s.vip === vip)?.owner
}

function holders (c: Cluster, vip = 'web'): string[] {
  return [...(c.holders.get(vip) ?? [])].sort()
}

function applyAddress (c: Cluster, host: string, e: VipEffect): void {
  if (e.type !== 'add-and-announce' && e.type !== 'remove' && e.type !== 'announce') return
  const set = c.holders.get(e.vip) ?? new Set<string>()
  c.holders.set(e.vip, set)
  if (e.type === 'add-and-announce') set.add(host)
  if (e.type === 'remove') set.delete(host)
  n(c, host).step({ type: 'vipApplied', vip: e.vip, op: e.type === 'add-and-announce' ? 'add' : e.type, ok: true })
}

/** Delivers every message and confirms every address effect until nothing moves. */
function pump (c: Cluster, maxRounds = 100): void {
  for (let round = 0; round < maxRounds; round++) {
    let moved = false
    for (const [id, node] of c.nodes) {
      for (const e of node.takeEffects()) {
        if (e.type === 'send') {
          for (const to of e.to) {
            if (!c.nodes.has(to)) continue // that host is down
            if (c.hold?.(id, to, e.message) === true) { c.held.push({ from: id, to, message: e.message }); continue }
            n(c, to).step({ type: 'vipMessage', from: id, message: e.message })
            moved = true
          }
        } else if (e.type === 'add-and-announce' || e.type === 'remove' || e.type === 'announce') {
          c.log.push(`${id}:${e.type}${e.type === 'add-and-announce' ? '' : `:${e.reason}`}`)
          if (c.autoApply) { applyAddress(c, id, e); moved = true } else c.pendingApply.push({ host: id, e })
        } else if (e.type === 'persist') {
          const store = c.stores.get(id) ?? new Map<string, unknown>()
          c.stores.set(id, store)
          if (e.op.type === 'put') store.set(e.op.key, structuredClone(e.op.value))
          else store.delete(e.op.key)
        }
      }
    }
    if (!moved) return
  }
  throw new Error('pump did not settle')
}

function view (c: Cluster, at: string, states: Record<string, MemberState>): void {
  n(c, at).step({ type: 'members', members: Object.entries(states).map(([id, state]) => ({ id, state })) })
}

function allAlive (c: Cluster): void {
  const ids = [...c.nodes.keys()]
  for (const id of ids) view(c, id, Object.fromEntries(ids.map(x => [x, 'alive' as const])))
}

function ticks (c: Cluster, k: number, only?: string[]): void {
  for (let i = 0; i < k; i++) {
    for (const [id, node] of c.nodes) if (only === undefined || only.includes(id)) node.tick()
    pump(c)
  }
}

t.test('compareClaims: lamport first, host id breaks ties', async t => {
  const table: Array<[number, string, number, string, number]> = [
    [1, 'a', 2, 'a', -1], [2, 'a', 1, 'z', 1], [3, 'a', 3, 'b', -1], [3, 'b', 3, 'a', 1], [7, 'x', 7, 'x', 0]
  ]
  for (const [la, ha, lb, hb, want] of table) {
    t.equal(Math.sign(compareClaims({ lamport: la, host: ha }, { lamport: lb, host: hb })), want, `(${la},${ha}) vs (${lb},${hb})`)
  }
})

t.test('config: defaults are valid; impossible combinations are rejected by name', async t => {
  t.doesNotThrow(() => validateVipConfig(defaultVipConfig(100)))
  t.doesNotThrow(() => validateVipConfig(localTestVipConfig()))
  const bad: Array<[Partial<VipConfig>, RegExp]> = [
    [{ handoffTimeoutTicks: 60, secondBurstTicks: 50 }, /handoffTimeoutTicks must be < vip.secondBurstTicks/],
    [{ claimRetryTicks: 20, claimTimeoutTicks: 20 }, /claimRetryTicks must be < vip.claimTimeoutTicks/],
    [{ burstCount: 0 }, /burstCount must be an integer >= 1/],
    [{ takeoverGraceTicks: -1 }, /takeoverGraceTicks must be an integer >= 0/],
    [{ plannedMove: 'teleport' as never }, /plannedMove/]
  ]
  for (const [patch, re] of bad) {
    t.throws(() => validateVipConfig({ ...defaultVipConfig(), ...patch }), re)
    try { validateVipConfig({ ...defaultVipConfig(), ...patch }) } catch (err) { t.ok(err instanceof ConfigError); t.equal((err as ConfigError).code, 'CONFIG_INVALID'); t.match((err as ConfigError).path, /^vip\./, 'the field path') }
  }
  t.same(parseVipAddress('10.1.2.3/24'), { address: '10.1.2.3', prefixLength: 24 })
  t.equal(parseVipAddress('10.1.2.300/24'), null)
  t.equal(parseVipAddress('10.1.2.3'), null)
  t.throws(() => validateVipSpecs([GROUP, { ...GROUP, id: 'web2' }], ['a', 'b', 'c']), /duplicates 192.0.2.10/)
  t.throws(() => validateVipSpecs([{ ...GROUP, binding: { kind: 'group', hosts: ['a', 'zz'] } }], ['a', 'b', 'c']), /zz, not a cluster member/)
  t.throws(() => validateVipSpecs([{ ...GROUP, iface: 'a-very-long-interface-name' }], ['a']), /iface/)
})

t.test('a free group VIP goes to the first host of the group once a majority grants it', async t => {
  const c = cluster(['a', 'b', 'c'])
  pump(c) // start-up removals
  t.same(c.log, ['a:remove:startup', 'b:remove:startup', 'c:remove:startup'], 'every host first makes sure the address is absent')
  c.log.length = 0
  // Not quorate yet: nobody claims.
  ticks(c, 3)
  t.equal(role(c, 'a'), 'standby', 'no claim without a view of a majority')
  allAlive(c)
  pump(c)
  t.equal(role(c, 'a'), 'owner')
  t.equal(role(c, 'b'), 'standby')
  t.same(holders(c), ['a'])
  t.same(c.log, ['a:add-and-announce'])
  for (const id of ['a', 'b', 'c']) t.equal(owner(c, id), 'a', `${id} knows a owns it`)
  const st = n(c, 'a').status()[0]
  t.equal(st?.lastAnnounceReason, 'takeover')
  t.equal(st?.counters.ownerChanges, 1)
})

t.test('bursts: on takeover, a second one secondBurstTicks later, optional refresh', async t => {
  const c = cluster(['a', 'b', 'c'], { config: { secondBurstTicks: 20, refreshTicks: 15, handoffTimeoutTicks: 8 } })
  allAlive(c); pump(c); c.log.length = 0
  ticks(c, 15)
  t.same(c.log, ['a:announce:refresh'], 'refresh at 15 ticks')
  ticks(c, 5)
  t.same(c.log, ['a:announce:refresh', 'a:announce:second-burst'], 'second burst at 20 ticks')
  ticks(c, 10)
  t.same(c.log.slice(2), ['a:announce:refresh'], 'refresh continues; no third burst')
  const effects = cluster(['a'], { vips: [{ ...GROUP, binding: { kind: 'group', hosts: ['a'] } }], config: { burstCount: 5, burstIntervalMs: 200 } })
  allAlive(effects)
  const e = n(effects, 'a').takeEffects().find(x => x.type === 'add-and-announce')
  t.match(e, { type: 'add-and-announce', address: '192.0.2.10', prefixLength: 24, iface: 'eth0', burst: { count: 5, intervalMs: 200 } })
})

t.test('persist comes before send in every batch, and grants are persisted', async t => {
  const c = cluster(['a', 'b', 'c'])
  pump(c)
  allAlive(c)
  const a = n(c, 'a').takeEffects()
  const firstSend = a.findIndex(e => e.type === 'send')
  const lastPersist = a.map(e => e.type).lastIndexOf('persist')
  t.ok(firstSend > lastPersist && lastPersist >= 0, 'claimant persists its claim before sending the request')
  const req = a.find(e => e.type === 'send')
  if (req?.type !== 'send') throw new Error('no request')
  n(c, 'b').step({ type: 'vipMessage', from: 'a', message: req.message })
  const b = n(c, 'b').takeEffects()
  t.match(b.map(e => e.type), ['persist', 'persist', 'send'], 'b persists the grant, then sends it')
  t.match(b[0], { type: 'persist', op: { type: 'put', key: 'vip/state/web', value: { granted: { host: 'a', lamport: 1 }, released: false } } })
})

t.test('concurrent claims: the lower yields, exactly one wins', async t => {
  // b and c both believe they are the first up host (a is dead in both views).
  const c = cluster(['a', 'b', 'c', 'd', 'e'], { vips: [{ ...GROUP, binding: { kind: 'group', hosts: ['a', 'b', 'c'] } }] })
  pump(c)
  const everyone = { a: 'dead', b: 'alive', c: 'alive', d: 'alive', e: 'alive' } as const
  for (const id of ['a', 'b', 'd', 'e']) view(c, id, everyone)
  view(c, 'c', { ...everyone, b: 'suspect' }) // c thinks b is suspect... and still counts it up, so c defers to b
  pump(c)
  // a (dead in every view but its own) claimed too and its claim was granted just before b's:
  // b waits out the lease a could have had.
  t.equal(role(c, 'b'), 'claiming', 'b won, and waits for the lease a could have had')
  ticks(c, WAIT)
  t.equal(role(c, 'b'), 'owner')
  t.equal(role(c, 'c'), 'standby')
  // Now a real race: both claim before either hears of the other.
  const r = cluster(['a', 'b', 'c', 'd', 'e'])
  pump(r)
  r.hold = () => true
  for (const id of ['b', 'c', 'd', 'e']) view(r, id, { a: 'dead', b: 'alive', c: 'alive', d: 'alive', e: 'alive' })
  view(r, 'c', { a: 'dead', b: 'dead', c: 'alive', d: 'alive', e: 'alive' })
  pump(r)
  t.equal(role(r, 'b'), 'claiming'); t.equal(role(r, 'c'), 'claiming')
  const held = r.held.splice(0)
  r.hold = undefined
  // Deliver c's request to d first, b's to e first, then everything.
  const order = [...held].sort((x, y) => (x.from === 'c' && x.to === 'd' ? -1 : 0) - (y.from === 'c' && y.to === 'd' ? -1 : 0))
  for (const m of order) n(r, m.to).step({ type: 'vipMessage', from: m.from, message: m.message })
  pump(r)
  ticks(r, 30)
  const owners = ['a', 'b', 'c', 'd', 'e'].filter(id => role(r, id) === 'owner')
  t.equal(owners.length, 1, `one owner (${owners.join(',')})`)
  t.equal(holders(r).length, 1)
})

t.test('takeover only after the owner is declared dead, and only with a majority', async t => {
  const c = cluster(['a', 'b', 'c'])
  allAlive(c); pump(c)
  t.equal(role(c, 'a'), 'owner')
  // a suspect: not free yet.
  for (const id of ['b', 'c']) view(c, id, { a: 'suspect', b: 'alive', c: 'alive' })
  ticks(c, 5, ['b', 'c'])
  t.equal(role(c, 'b'), 'standby', 'a suspect owner keeps the VIP')
  // a dead: b (next in the group) takes over with c's grant.
  c.nodes.delete('a') // a is gone (its machine is down)
  c.holders.get('web')?.delete('a')
  ticks(c, WAIT, ['b', 'c']) // a's last lease renewal is that long ago
  for (const id of ['b', 'c']) view(c, id, { a: 'dead', b: 'alive', c: 'alive' })
  pump(c)
  t.equal(role(c, 'b'), 'owner')
  t.same(holders(c), ['b'])
  t.equal(n(c, 'b').status()[0]?.counters.takeovers, 1)

  // Minority side: c alone sees a and b dead: not quorate, never claims.
  const m = cluster(['a', 'b', 'c'], { vips: [{ ...GROUP, binding: { kind: 'group', hosts: ['c', 'a', 'b'] } }] })
  pump(m)
  view(m, 'c', { a: 'dead', b: 'dead', c: 'alive' })
  ticks(m, 20, ['c'])
  t.equal(role(m, 'c'), 'standby', 'a minority host never claims')
})

t.test('takeoverGraceTicks delays grants and claims after a death', async t => {
  const c = cluster(['a', 'b', 'c'], { config: { takeoverGraceTicks: 5 } })
  allAlive(c); pump(c)
  c.nodes.delete('a'); c.holders.get('web')?.delete('a')
  ticks(c, WAIT) // a's last lease renewal is that long ago
  for (const id of ['b', 'c']) view(c, id, { a: 'dead', b: 'alive', c: 'alive' })
  pump(c)
  ticks(c, 4)
  t.equal(role(c, 'b'), 'standby', 'within the grace')
  ticks(c, 1)
  t.equal(role(c, 'b'), 'owner', 'after the grace')
})

t.test('a request held back until this member declares the owner dead is granted at once', async t => {
  // b declares a dead first and claims; c still counts a alive and holds b's request back. The
  // moment c declares a dead (the members input), c grants it: no wait for b's retry.
  const table: Array<{ name: string, grace: number, cView: MemberState, ticksAfter: number, want: VipRole }> = [
    { name: 'c declares a dead: granted with no tick', grace: 0, cView: 'dead', ticksAfter: 0, want: 'owner' },
    { name: 'c sees a left: granted with no tick', grace: 0, cView: 'left', ticksAfter: 0, want: 'owner' },
    { name: 'c only suspects a: still held back', grace: 0, cView: 'suspect', ticksAfter: 0, want: 'claiming' },
    { name: 'grace 3: not within the grace', grace: 3, cView: 'dead', ticksAfter: 2, want: 'claiming' },
    { name: 'grace 3: on the tick the grace runs out', grace: 3, cView: 'dead', ticksAfter: 3, want: 'owner' }
  ]
  for (const row of table) {
    const c = cluster(['a', 'b', 'c'], { config: { takeoverGraceTicks: row.grace, claimRetryTicks: 8, claimTimeoutTicks: 20 } })
    allAlive(c); pump(c)
    t.equal(role(c, 'a'), 'owner', `${row.name}: a owns`)
    c.nodes.delete('a'); c.holders.get('web')?.delete('a')
    ticks(c, WAIT) // a's last lease renewal is that long ago
    view(c, 'b', { a: 'dead', b: 'alive', c: 'alive' })
    pump(c)
    for (let i = 0; i < row.grace; i++) { n(c, 'b').tick(); pump(c) }
    t.equal(role(c, 'b'), 'claiming', `${row.name}: b claims`)
    t.equal(owner(c, 'c'), 'a', `${row.name}: c refused, a's claim stands for it`)
    t.equal(n(c, 'b').status()[0]?.counters.claims, 1, `${row.name}: b's first claim`)
    view(c, 'c', { a: row.cView, b: 'alive', c: 'alive' })
    pump(c)
    // Ticks on c only: b's retry (claimRetryTicks 8) does not come into it.
    for (let i = 0; i < row.ticksAfter; i++) { n(c, 'c').tick(); pump(c) }
    t.equal(role(c, 'b'), row.want, row.name)
    if (row.want === 'owner') {
      t.same(holders(c), ['b'], `${row.name}: b alone carries it`)
      t.equal(owner(c, 'c'), 'b', `${row.name}: c counts b as the owner`)
    }
  }
})

t.test('a held-back request is granted only under the rules of a grant', async t => {
  // Five members, two claimants that cannot hear each other: b (a dead) and d (a and b dead, so
  // d is first of the group in its view). c and e count a alive, refuse both and hold back the
  // higher one (d's: same Lamport time, higher host); when they declare a dead, they grant that one.
  const vips = [{ ...GROUP, binding: { kind: 'group' as const, hosts: ['a', 'b', 'd', 'c', 'e'] } }]
  {
    const c = cluster(['a', 'b', 'c', 'd', 'e'], { vips, config: { claimRetryTicks: 8, claimTimeoutTicks: 20 } })
    allAlive(c); pump(c)
    t.equal(role(c, 'a'), 'owner')
    c.nodes.delete('a'); c.holders.get('web')?.delete('a')
    ticks(c, WAIT) // a's last lease renewal is that long ago
    c.hold = (from, to) => (from === 'b' && to === 'd') || (from === 'd' && to === 'b')
    view(c, 'b', { a: 'dead', b: 'alive', c: 'alive', d: 'alive', e: 'alive' })
    pump(c)
    view(c, 'd', { a: 'dead', b: 'dead', c: 'alive', d: 'alive', e: 'alive' })
    pump(c)
    t.equal(role(c, 'b'), 'claiming')
    t.equal(role(c, 'd'), 'claiming')
    t.equal(owner(c, 'c'), 'a', 'c refused both')
    for (const id of ['c', 'e']) view(c, id, { a: 'dead', b: 'alive', c: 'alive', d: 'alive', e: 'alive' })
    pump(c)
    t.equal(owner(c, 'c'), 'd', 'c granted the highest held-back claim (d\'s), not b\'s')
    t.equal(owner(c, 'e'), 'd', 'e too')
    t.equal(role(c, 'd'), 'owner', 'd has a majority (d, c, e)')
    t.not(role(c, 'b'), 'owner', 'b never gets a majority')
  }
  {
    // A held-back request whose claimant has released it since is not granted.
    const c = cluster(['a', 'b', 'c'], { config: { claimRetryTicks: 8, claimTimeoutTicks: 20 } })
    allAlive(c); pump(c)
    c.nodes.delete('a'); c.holders.get('web')?.delete('a')
    view(c, 'b', { a: 'dead', b: 'alive', c: 'alive' })
    pump(c)
    t.equal(role(c, 'b'), 'claiming')
    n(c, 'b').step({ type: 'leave' }) // b gives its claim up; c hears the release (a's claim still stands for c)
    pump(c)
    t.equal(role(c, 'b'), 'standby')
    view(c, 'c', { a: 'dead', b: 'alive', c: 'alive' })
    const effects = n(c, 'c').takeEffects()
    t.notOk(effects.some(e => e.type === 'send' && e.message.type === 'vipGrant'), 'no grant for a released claim')
    t.not(owner(c, 'c'), 'b')
  }
  {
    // An owner that is alive in this member's eyes keeps blocking: nothing is granted on a tick.
    const c = cluster(['a', 'b', 'c'], { config: { claimRetryTicks: 8, claimTimeoutTicks: 20 } })
    allAlive(c); pump(c)
    c.hold = (from, to) => (from === 'b' && to === 'a') || (from === 'a' && to === 'b')
    view(c, 'b', { a: 'dead', b: 'alive', c: 'alive' })
    pump(c)
    ticks(c, 5, ['c'])
    t.equal(role(c, 'b'), 'claiming', 'c keeps holding it back while a is alive')
    t.equal(owner(c, 'c'), 'a')
    t.same(holders(c), ['a'])
  }
})

t.test('an alive owner refuses a takeover claim and tells the claimant', async t => {
  const c = cluster(['a', 'b', 'c'])
  allAlive(c); pump(c)
  // b wrongly believes a dead and c too; a is fine and connected to b only.
  c.hold = (from, to) => (from === 'c' && to === 'a') || (from === 'a' && to === 'c')
  view(c, 'b', { a: 'dead', b: 'alive', c: 'alive' })
  pump(c)
  t.equal(role(c, 'b'), 'standby', 'b asked, a refused and answered held; c granted but b gave up')
  t.equal(role(c, 'a'), 'owner')
  t.same(holders(c), ['a'])
})

t.test('planned move, make-before-break: the successor adds before the old owner removes', async t => {
  const c = cluster(['a', 'b', 'c'], { vips: [VMVIP] })
  n(c, 'a').step({ type: 'vmPlaced', vm: 'vm1' })
  allAlive(c); pump(c)
  t.equal(role(c, 'a', 'db'), 'owner')
  c.log.length = 0
  // Migration switch-over: a learns the VM left for b, b that it runs there.
  n(c, 'a').step({ type: 'vmMovedAway', vm: 'vm1', to: 'b' })
  t.equal(role(c, 'a', 'db'), 'handingOff', 'a released but keeps the address')
  n(c, 'b').step({ type: 'vmPlaced', vm: 'vm1' })
  pump(c)
  t.same(c.log, ['b:add-and-announce', 'a:remove:handoff-done'], 'add on b, then remove on a')
  t.equal(role(c, 'b', 'db'), 'owner')
  t.equal(role(c, 'a', 'db'), 'standby')
  t.same(holders(c, 'db'), ['b'])
  for (const id of ['a', 'b', 'c']) t.equal(owner(c, id, 'db'), 'b')
})

t.test('make-before-break: the successor\'s lease renewals while its add is under way do not make the old owner remove early', async t => {
  const c = cluster(['a', 'b', 'c'], { vips: [VMVIP] })
  n(c, 'a').step({ type: 'vmPlaced', vm: 'vm1' })
  allAlive(c); pump(c)
  c.autoApply = false
  c.log.length = 0
  n(c, 'a').step({ type: 'vmMovedAway', vm: 'vm1', to: 'b' })
  n(c, 'b').step({ type: 'vmPlaced', vm: 'vm1' })
  pump(c)
  t.equal(role(c, 'b', 'db'), 'owner')
  t.same(c.log, ['b:add-and-announce'], 'b adds (slowly)')
  const { renewTicks } = localTestVipConfig()
  ticks(c, renewTicks * 2 + 1) // b renews its lease meanwhile
  t.same(c.log, ['b:add-and-announce'], 'a keeps the address while b\'s add is not done')
  t.equal(role(c, 'b', 'db'), 'owner', 'b\'s lease holds (the renewals were echoed)')
  for (const p of c.pendingApply.splice(0)) applyAddress(c, p.host, p.e)
  c.autoApply = true
  pump(c)
  t.same(c.log, ['b:add-and-announce', 'a:remove:handoff-done'], 'a removes once b holds it')
  t.same(holders(c, 'db'), ['b'])
})

t.test('make-before-break: the old owner never holds longer than handoffTimeoutTicks', async t => {
  const c = cluster(['a', 'b', 'c'], { vips: [VMVIP] })
  n(c, 'a').step({ type: 'vmPlaced', vm: 'vm1' })
  allAlive(c); pump(c); c.log.length = 0
  n(c, 'a').step({ type: 'vmMovedAway', vm: 'vm1', to: 'b' }) // b never claims (its VM start is late)
  pump(c)
  ticks(c, 7)
  t.same(holders(c, 'db'), ['a'], 'still holding within the timeout')
  ticks(c, 1)
  t.same(holders(c, 'db'), [], 'removed at the timeout')
  t.same(c.log, ['a:remove:handoff-timeout'])
  n(c, 'b').step({ type: 'vmPlaced', vm: 'vm1' })
  pump(c)
  t.same(holders(c, 'db'), ['b'], 'the late successor takes the released VIP')
})

t.test('planned move, break-before-make: release only after the removal is confirmed', async t => {
  const c = cluster(['a', 'b', 'c'], { config: { plannedMove: 'break-before-make' } })
  allAlive(c); pump(c)
  c.autoApply = false
  c.log.length = 0
  n(c, 'a').step({ type: 'operatorMove', vip: 'web', to: 'c' })
  pump(c)
  t.same(c.log, ['a:remove:release'])
  t.equal(role(c, 'a'), 'releasing')
  t.equal(role(c, 'c'), 'standby', 'c has heard nothing yet')
  c.autoApply = true
  for (const p of c.pendingApply.splice(0)) applyAddress(c, p.host, p.e)
  pump(c)
  t.same(c.log, ['a:remove:release', 'c:add-and-announce'])
  t.same(holders(c), ['c'])
})

t.test('operator move: group members only, current owner only', async t => {
  const c = cluster(['a', 'b', 'c', 'd'], { vips: [GROUP] })
  allAlive(c); pump(c)
  const rejected = (id: string): string[] => n(c, id).takeEffects().flatMap(e => e.type === 'event' && e.event.kind === 'vip-move-rejected' ? [e.event.text] : [])
  n(c, 'a').step({ type: 'operatorMove', vip: 'web', to: 'd' })
  t.match(rejected('a'), [/d is not in its group/])
  n(c, 'b').step({ type: 'operatorMove', vip: 'web', to: 'c' })
  t.match(rejected('b'), [/not its owner/])
  n(c, 'a').step({ type: 'operatorMove', vip: 'web', to: 'c' })
  pump(c)
  t.equal(role(c, 'c'), 'owner', 'c got it, not b (the first of the group): the release named c')
})

t.test('fencing: an owner that loses the majority removes the address, and claims again when it returns', async t => {
  const c = cluster(['a', 'b', 'c'])
  allAlive(c); pump(c)
  c.log.length = 0
  view(c, 'a', { a: 'alive', b: 'suspect', c: 'suspect' })
  pump(c)
  t.equal(role(c, 'a'), 'fenced')
  t.same(holders(c), [])
  t.same(c.log, ['a:remove:fence'])
  view(c, 'a', { a: 'alive', b: 'alive', c: 'alive' })
  pump(c)
  t.equal(role(c, 'a'), 'owner', 'nobody took over: a claims again and gets it')
  t.same(holders(c), ['a'])
})

t.test('partition and heal: the majority takes over, the fenced host stays out, the owner re-announces', async t => {
  const c = cluster(['a', 'b', 'c'])
  allAlive(c); pump(c)
  c.log.length = 0
  c.hold = (from, to) => from === 'a' || to === 'a'
  view(c, 'a', { a: 'alive', b: 'suspect', c: 'suspect' }) // a fences at suspicion
  for (const id of ['b', 'c']) view(c, id, { a: 'suspect', b: 'alive', c: 'alive' })
  pump(c)
  for (const id of ['b', 'c']) view(c, id, { a: 'dead', b: 'alive', c: 'alive' })
  pump(c)
  t.equal(role(c, 'b'), 'claiming', 'b won the takeover and waits for the lease a could still have')
  ticks(c, WAIT, ['b', 'c'])
  t.same(holders(c), ['b'], 'b took over; a had fenced')
  t.same(c.log, ['a:remove:fence', 'b:add-and-announce'])
  c.held.length = 0
  c.hold = undefined
  c.log.length = 0
  allAlive(c)
  pump(c)
  ticks(c, 25)
  t.same(holders(c), ['b'], 'after the heal only b holds it')
  t.equal(role(c, 'a'), 'standby')
  t.ok(c.log.includes('b:announce:heal'), 'b re-announced when a came back')
  t.same(c.log.filter(x => x.startsWith('a:')), [], 'a never added it again')
})

t.test('a cut-off owner that still sees everybody alive drops the address when its lease runs out, before the taker adds it', async t => {
  const c = cluster(['a', 'b', 'c'])
  allAlive(c); pump(c)
  ticks(c, 7) // a renews its lease every renewTicks
  c.log.length = 0
  c.hold = (from, to) => from === 'a' || to === 'a'
  // a never notices (it keeps seeing everybody alive: a one-way cut can do that); b and c declare it dead at once.
  for (const id of ['b', 'c']) view(c, id, { a: 'dead', b: 'alive', c: 'alive' })
  pump(c)
  let most = 0
  let owners = 0
  for (let i = 0; i < 2 * WAIT; i++) {
    ticks(c, 1)
    most = Math.max(most, holders(c).length)
    owners = Math.max(owners, ['a', 'b', 'c'].filter(h => role(c, h) === 'owner').length)
  }
  t.equal(most, 1, 'never two holders')
  t.equal(owners, 1, 'never two owners')
  t.same(holders(c), ['b'], 'b took over')
  t.same(c.log.filter(x => x.includes(':remove') || x.includes(':add')), ['a:remove:lease-expired', 'b:add-and-announce'], 'a removed (its lease ran out) before b added')
  t.not(role(c, 'a'), 'owner', 'a, cut off, may claim again but wins nothing')
})

t.test('split brain (an owner that stops running its ticks past the lease: no timing holds): the lower claim steps down, the higher re-announces', async t => {
  const c = cluster(['a', 'b', 'c'])
  allAlive(c); pump(c)
  c.log.length = 0
  c.hold = (from, to) => from === 'a' || to === 'a'
  // a's agent stalls (no ticks) and sees nothing; b and c declare it dead and take over after the wait.
  for (const id of ['b', 'c']) view(c, id, { a: 'dead', b: 'alive', c: 'alive' })
  pump(c)
  ticks(c, WAIT, ['b', 'c'])
  t.same(holders(c), ['a', 'b'], 'two holders: what the lease normally prevents')
  c.hold = undefined
  const held = c.held.splice(0)
  for (const m of held) n(c, m.to).step({ type: 'vipMessage', from: m.from, message: m.message })
  allAlive(c)
  pump(c)
  ticks(c, 25)
  t.same(holders(c), ['b'], 'a (lower claim) stepped down')
  t.ok(c.log.includes('a:remove:step-down'))
  const afterStepDown = c.log.slice(c.log.indexOf('a:remove:step-down'))
  t.ok(afterStepDown.some(x => x.startsWith('b:announce')), 'b announced after a removed')
})

t.test('restart: the address is removed first and a persisted claim is released after', async t => {
  const durable: VipDurable = { granted: { host: 'a', lamport: 4 }, released: false, releasedTo: null, floor: {}, own: { host: 'a', lamport: 4 } }
  const restored = restoreVipState([['vip/lamport', 4], ['vip/state/web', durable]])
  t.same(restored, { lamport: 4, vips: { web: durable } })
  t.throws(() => restoreVipState([['vip/state/web', { granted: 'a@4' }]]), /malformed/, 'a damaged record stops the agent')
  t.throws(() => restoreVipState([['vip/lamport', 'x']]), /not an integer/)
  const c = cluster(['a', 'b', 'c'], { restored: { a: restored } })
  const effects = n(c, 'a').takeEffects()
  t.match(effects.filter(e => e.type === 'remove'), [{ reason: 'startup' }])
  t.equal(effects.filter(e => e.type === 'send').length, 0, 'no release before the removal is confirmed')
  n(c, 'a').step({ type: 'vipApplied', vip: 'web', op: 'remove', ok: true })
  const after = n(c, 'a').takeEffects()
  t.match(after.filter(e => e.type === 'send'), [{ message: { type: 'vipRelease', claim: { host: 'a', lamport: 4 }, to: null } }])
  allAlive(c); pump(c)
  // a just gave the VIP up: the others defer to it for handoffReserveTicks... and it defers to
  // them; and a restarted acceptor that granted before waits out a lease it may have renewed.
  ticks(c, WAIT)
  t.equal(role(c, 'a'), 'owner')
  t.ok((n(c, 'a').status()[0]?.ownerClaim?.lamport ?? 0) > 4, 'the new claim has a later Lamport time')
})

/**
 * Restarts `id` (kill -9 and start): a new core from what it persisted, the address removed at
 * start-up; `edit` changes the stored record first. The others keep running; none of them has
 * declared it dead (a quick restart).
 */
function restart (c: Cluster, id: string, members: string[], vips: VipSpec[], edit?: (d: VipDurable) => VipDurable): VipOwnership {
  const entries = [...(c.stores.get(id) ?? new Map<string, unknown>())].map(([k, v]) => {
    const copy = structuredClone(v)
    return [k, k.startsWith('vip/state/') && edit !== undefined ? edit(copy as VipDurable) : copy] as const
  })
  c.holders.forEach(set => set.delete(id))
  const node = new VipOwnership({ self: id, members, vips, config: localTestVipConfig(), prng: new Prng(999), restored: restoreVipState(entries) })
  c.nodes.set(id, node)
  view(c, id, Object.fromEntries(members.map(x => [x, 'alive' as const])))
  return node
}

t.test('restart of the owner: it takes its VIP back without waiting for a lease, since it had outwaited every lease it renewed for others', async t => {
  // a holds db (its VM runs there); b holds it first, so a's acceptor renewed another host's
  // lease before a's own claim: the case where the wait would matter.
  const c = cluster(['a', 'b', 'c'], { vips: [VMVIP] })
  n(c, 'b').step({ type: 'vmPlaced', vm: 'vm1' })
  allAlive(c); pump(c)
  t.equal(role(c, 'b', 'db'), 'owner')
  ticks(c, 5)
  n(c, 'b').step({ type: 'vmMovedAway', vm: 'vm1', to: 'a' })
  n(c, 'a').step({ type: 'vmPlaced', vm: 'vm1' })
  pump(c)
  ticks(c, WAIT)
  t.equal(role(c, 'a', 'db'), 'owner', 'a took it over by the migration')
  ticks(c, 5)
  t.match(c.stores.get('a')?.get('vip/state/db'), { promised: { host: 'a' }, ownedUnder: { host: 'a' } }, 'a persisted that it became owner under the claim it promised last')

  restart(c, 'a', ['a', 'b', 'c'], [VMVIP])
  pump(c)
  t.same(holders(c, 'db'), [], 'the restarted agent removed the address')
  n(c, 'a').step({ type: 'vmPlaced', vm: 'vm1' }) // its VM still runs
  pump(c)
  ticks(c, 1)
  t.equal(role(c, 'a', 'db'), 'owner', `owner again within a tick of its claim (a lease wait is ${WAIT} ticks)`)
  t.same(holders(c, 'db'), ['a'])
  for (const id of ['a', 'b', 'c']) t.equal(owner(c, id, 'db'), 'a')

  // The same restart from a record that does not say so (written by an agent without
  // ownedUnder, or before the add was persisted) waits a whole lease, as before.
  restart(c, 'a', ['a', 'b', 'c'], [VMVIP], d => { delete d.ownedUnder; return d })
  pump(c)
  n(c, 'a').step({ type: 'vmPlaced', vm: 'vm1' })
  pump(c)
  ticks(c, WAIT - 2)
  t.equal(role(c, 'a', 'db'), 'claiming', 'without the record it waits out a lease it may have renewed')
  ticks(c, 3)
  t.equal(role(c, 'a', 'db'), 'owner')
})

t.test('restart of a member whose highest promise is another host\'s claim: its grants still make a taker wait', async t => {
  const c = cluster(['a', 'b', 'c'], { vips: [VMVIP] })
  n(c, 'a').step({ type: 'vmPlaced', vm: 'vm1' })
  allAlive(c); pump(c)
  ticks(c, 5)
  t.equal(role(c, 'a', 'db'), 'owner')
  t.match(c.stores.get('b')?.get('vip/state/db'), { promised: { host: 'a' } }, 'b renewed a\'s claim')
  // b restarts; then a is cut off (its frames lost) and declared dead; the VM is restarted on c.
  restart(c, 'b', ['a', 'b', 'c'], [VMVIP])
  pump(c)
  c.hold = (from, to) => from === 'a' || to === 'a'
  for (const id of ['b', 'c']) view(c, id, { a: 'dead', b: 'alive', c: 'alive' })
  n(c, 'c').step({ type: 'vmPlaced', vm: 'vm1' })
  pump(c)
  t.equal(role(c, 'c', 'db'), 'claiming', 'c claims')
  ticks(c, 2, ['b', 'c'])
  t.equal(role(c, 'c', 'db'), 'claiming', 'and waits: b does not know when it last renewed a\'s lease')
  ticks(c, WAIT, ['b', 'c'])
  t.equal(role(c, 'c', 'db'), 'owner', 'owner once that lease must have run out')
})

t.test('stale and forged messages are ignored', async t => {
  const c = cluster(['a', 'b', 'c'])
  allAlive(c); pump(c)
  n(c, 'a').step({ type: 'operatorMove', vip: 'web', to: 'b' })
  pump(c)
  t.equal(owner(c, 'c'), 'b')
  // A late 'held' from a's released claim must not bring a back.
  n(c, 'c').step({ type: 'vipMessage', from: 'a', message: { type: 'vipClaim', vip: 'web', claim: { host: 'a', lamport: 1 }, phase: 'held', renew: 0 } })
  t.equal(owner(c, 'c'), 'b', 'stale held ignored')
  // b cannot release a claim of a's, nor grant in another's name.
  n(c, 'c').step({ type: 'vipMessage', from: 'a', message: { type: 'vipRelease', vip: 'web', claim: { host: 'b', lamport: 99 }, to: null } })
  n(c, 'c').step({ type: 'vipMessage', from: 'zz', message: { type: 'vipRelease', vip: 'web', claim: { host: 'zz', lamport: 99 }, to: null } })
  n(c, 'c').step({ type: 'vipMessage', from: 'a', message: { type: 'vipClaim', vip: 'nope', claim: { host: 'a', lamport: 99 }, phase: 'held', renew: 0 } })
  t.equal(owner(c, 'c'), 'b')
  t.equal(n(c, 'c').status()[0]?.counters.rejected, 2, 'forged sender and non-member counted; unknown VIP dropped')
})

t.test('adapter failures: a failed add gives the VIP up; a failed remove is retried', async t => {
  const c = cluster(['a', 'b', 'c'])
  c.autoApply = false
  allAlive(c); pump(c)
  const first = c.pendingApply.splice(0)
  for (const p of first) if (p.e.type === 'remove') applyAddress(c, p.host, p.e)
  pump(c)
  const add = [...first, ...c.pendingApply.splice(0)].find(p => p.e.type === 'add-and-announce')
  t.equal(add?.host, 'a')
  n(c, 'a').step({ type: 'vipApplied', vip: 'web', op: 'add', ok: false, code: 'VIP_IFACE_NOT_FOUND' })
  pump(c)
  const rm = c.pendingApply.splice(0).find(p => p.host === 'a' && p.e.type === 'remove')
  t.ok(rm, 'a cleans up')
  n(c, 'a').step({ type: 'vipApplied', vip: 'web', op: 'remove', ok: false, code: 'VIP_COMMAND_FAILED' })
  pump(c)
  t.equal(c.pendingApply.length, 0)
  ticks(c, 3)
  const retry = c.pendingApply.splice(0).find(p => p.host === 'a' && p.e.type === 'remove')
  t.match(retry?.e, { type: 'remove', reason: 'retry' }, 'removal retried')
  c.autoApply = true
  if (retry !== undefined) applyAddress(c, retry.host, retry.e)
  pump(c)
  ticks(c, 2)
  for (const p of c.pendingApply.splice(0)) applyAddress(c, p.host, p.e)
  pump(c)
  t.equal(role(c, 'a'), 'standby', 'a released and backs off')
  t.equal(role(c, 'b'), 'owner', 'b, next in the group, took the released VIP')
  t.equal(n(c, 'a').status()[0]?.counters.addFailures, 1)
})

t.test('leave: an owner removes, then releases; the next host takes over', async t => {
  const c = cluster(['a', 'b', 'c'])
  allAlive(c); pump(c)
  n(c, 'a').step({ type: 'leave' })
  pump(c)
  for (const id of ['b', 'c']) view(c, id, { a: 'left', b: 'alive', c: 'alive' })
  pump(c)
  t.same(holders(c), ['b'])
  t.equal(role(c, 'a'), 'standby')
})

t.test('lost grants and requests are retried; a claim without a majority is given up', async t => {
  const c = cluster(['a', 'b', 'c'])
  let drops = 2
  c.hold = (_from, _to, m) => m.type === 'vipGrant' && drops-- > 0
  allAlive(c); pump(c)
  t.equal(role(c, 'a'), 'claiming')
  ticks(c, 2)
  t.equal(role(c, 'a'), 'owner', 'the retried request got a grant')
  const d = cluster(['a', 'b', 'c'])
  d.hold = () => true
  allAlive(d); pump(d)
  ticks(d, 10)
  t.equal(role(d, 'a'), 'standby', 'given up after claimTimeoutTicks')
  t.equal(n(d, 'a').status()[0]?.counters.claimsAbandoned, 1)
})
