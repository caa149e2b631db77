/**
 * The replicated cluster configuration log (agent/core/cluster-config/config-log.ts) on a
 * deterministic lossy network: frames dropped, duplicated and reordered, hosts crashed and
 * restarted from what they persisted, partitions, and proposals racing from several hosts.
 * After every step: no two hosts ever hold different entries for one version. After healing:
 * every host holds the same latest version.
 */
import { createHash } from 'node:crypto'
import tap from 'tap'
import { ConfigLog, KEY_CONFIG_ACCEPTOR, KEY_CONFIG_ENTRY_PREFIX, entryHash } from '../../../agent/core/cluster-config/config-log.js'
import type { AcceptorState, ConfigEntry, ConfigMessage, ConfigOutcome } from '../../../agent/core/cluster-config/config-log.js'
import { Prng } from '../../../agent/core/prng.js'

const sha = (s: string): string => createHash('sha256').update(s).digest('hex')

function genesis (members: string[], doc = '{"rules":[]}'): ConfigEntry {
  const e = { version: 1, base: '', members, doc, note: 'genesis' }
  return { ...e, hash: entryHash(sha, e) }
}

interface Frame { from: string, to: string, m: ConfigMessage }

class Net {
  readonly store = new Map<string, Map<string, unknown>>()
  readonly logs = new Map<string, ConfigLog>()
  readonly queue: Frame[] = []
  readonly down = new Set<string>()
  /** Pairs that cannot talk ("a|b", both directions). */
  readonly cut = new Set<string>()
  readonly outcomes: ConfigOutcome[] = []
  /** Every entry any host ever committed, by version: the safety check. */
  readonly decided = new Map<number, string>()
  violations: string[] = []
  now = 0

  constructor (readonly prng: Prng, readonly hosts: string[], readonly gen: (h: string) => ConfigEntry, readonly loss = 0.2, readonly dup = 0.1) {
    for (const h of hosts) { this.store.set(h, new Map()); this.start(h) }
  }

  start (h: string): void {
    const st = this.store.get(h)!
    const entries = [...st.entries()].filter(([k]) => k.startsWith(KEY_CONFIG_ENTRY_PREFIX)).map(([, v]) => v as ConfigEntry)
    const acceptor = (st.get(KEY_CONFIG_ACCEPTOR) ?? null) as AcceptorState | null
    const log = new ConfigLog(h, this.gen(h), entries.length === 0 ? null : { entries, acceptor }, sha, {
      send: (to, m) => { this.queue.push({ from: h, to, m: JSON.parse(JSON.stringify(m)) }) },
      persist: (k, v) => { st.set(k, JSON.parse(JSON.stringify(v))) },
      event: () => {},
      committed: e => {
        const seen = this.decided.get(e.version)
        if (e.version > 1) {
          if (seen === undefined) this.decided.set(e.version, e.hash)
          else if (seen !== e.hash) this.violations.push(`${h} committed another version ${e.version}`)
        }
      }
    }, { retryTicks: 3, pendingTicks: 30, announceTicks: 5, announceFanout: 2, fetchBatch: 4 })
    this.logs.set(h, log)
    this.down.delete(h)
  }

  crash (h: string): void { this.down.add(h); this.logs.delete(h) }

  blocked (a: string, b: string): boolean { return this.cut.has(`${a}|${b}`) || this.cut.has(`${b}|${a}`) }

  /** One tick: deliver (some of) the queued frames in random order, then tick every host. */
  step (): void {
    this.now++
    const batch = this.queue.splice(0)
    this.prng.shuffle(batch)
    for (const f of batch) {
      if (this.down.has(f.to) || this.blocked(f.from, f.to) || this.prng.chance(this.loss)) continue
      if (this.prng.chance(0.15)) { this.queue.push(f); continue } // late
      const copies = this.prng.chance(this.dup) ? 2 : 1
      for (let i = 0; i < copies; i++) this.logs.get(f.to)?.step(f.from, f.m, this.now)
    }
    for (const [h, log] of this.logs) {
      log.tick(this.now)
      for (const o of log.outcomes.splice(0)) this.outcomes.push({ ...o, req: `${h}:${o.req}` })
    }
  }

  latest (): Map<string, number> { return new Map([...this.logs].map(([h, l]) => [h, l.latest().version])) }
}

function propose (net: Net, h: string, req: string, change: (members: string[]) => string[], doc: string): void {
  const log = net.logs.get(h)
  if (log === undefined) return
  const e = log.makeNext({ members: change(log.latest().members), doc, note: req })
  log.propose(req, e, net.now)
  for (const o of log.outcomes.splice(0)) net.outcomes.push({ ...o, req: `${h}:${req}` })
}

tap.test('a change is agreed by every member and reported committed', async t => {
  const hosts = ['a', 'b', 'c']
  const net = new Net(new Prng(1), hosts, () => genesis(hosts), 0, 0)
  propose(net, 'a', 'r1', m => m, '{"rules":[1]}')
  for (let i = 0; i < 20; i++) net.step()
  t.same([...net.latest().values()], [2, 2, 2], 'every host holds version 2')
  t.same(net.outcomes.map(o => [o.req, o.status, o.version]), [['a:r1', 'committed', 2]])
  t.equal(net.logs.get('c')!.latest().doc, '{"rules":[1]}')
})

tap.test('without a majority the change is reported pending and not applied; it applies when the partition heals', async t => {
  const hosts = ['a', 'b', 'c']
  const net = new Net(new Prng(2), hosts, () => genesis(hosts), 0, 0)
  net.cut.add('a|b'); net.cut.add('a|c')
  propose(net, 'a', 'r1', m => m, '{"x":1}')
  for (let i = 0; i < 40; i++) net.step()
  t.same([...net.latest().values()], [1, 1, 1], 'nobody applied it')
  t.same(net.outcomes.map(o => o.status), ['pending'], 'reported pending')
  t.match(net.outcomes[0]!.detail, /1 of 3 members answered \(2 needed\)/)
  net.cut.clear()
  for (let i = 0; i < 30; i++) net.step()
  t.same([...net.latest().values()], [2, 2, 2], 'applied after the heal')
  t.same(net.outcomes.map(o => o.status), ['pending', 'committed'])
})

tap.test('two hosts propose at once: one version 2, the loser is told conflict', async t => {
  const hosts = ['a', 'b', 'c', 'd', 'e']
  for (let seed = 1; seed <= 40; seed++) {
    const net = new Net(new Prng(seed), hosts, () => genesis(hosts), 0.1, 0.1)
    propose(net, 'a', 'ra', m => m, '{"from":"a"}')
    propose(net, 'e', 're', m => m, '{"from":"e"}')
    for (let i = 0; i < 200 && !(net.outcomes.filter(o => o.status !== 'pending').length === 2 && new Set(net.latest().values()).size === 1); i++) net.step()
    if (net.violations.length > 0) { t.fail(`seed ${seed}: ${net.violations.join('; ')}`); continue }
    const final = net.outcomes.filter(o => o.status !== 'pending')
    if (final.length !== 2 || final.filter(o => o.status === 'committed').length !== 1 || final.filter(o => o.status === 'conflict').length !== 1) {
      t.fail(`seed ${seed}: outcomes ${JSON.stringify(net.outcomes)}`)
      continue
    }
    if (new Set(net.latest().values()).size !== 1) t.fail(`seed ${seed}: not converged ${JSON.stringify([...net.latest()])}`)
  }
  t.pass('40 races: exactly one committed and one conflict each, all hosts converged, no version decided twice')
})

tap.test('random faults: drops, duplicates, reordering, crashes with restarts, partitions, racing proposals', async t => {
  const hosts = ['a', 'b', 'c', 'd', 'e']
  let changes = 0
  for (let seed = 1; seed <= 60; seed++) {
    const prng = new Prng(1000 + seed)
    const net = new Net(prng, hosts, () => genesis(hosts), 0.25, 0.15)
    let n = 0
    for (let i = 0; i < 400; i++) {
      if (i < 300) {
        if (prng.chance(0.08)) { const h = hosts[prng.int(hosts.length)]!; propose(net, h, `r${n}`, m => m, `{"n":${n}}`); n++ }
        if (prng.chance(0.03)) { const h = hosts[prng.int(hosts.length)]!; if (!net.down.has(h)) net.crash(h) }
        if (prng.chance(0.05)) { for (const h of [...net.down]) net.start(h) }
        if (prng.chance(0.03)) { const a = hosts[prng.int(5)]!; const b = hosts[prng.int(5)]!; if (a !== b) net.cut.add(`${a}|${b}`) }
        if (prng.chance(0.04)) net.cut.clear()
      } else if (i === 300) { for (const h of [...net.down]) net.start(h); net.cut.clear() }
      net.step()
      if (net.violations.length > 0) break
    }
    if (net.violations.length > 0) { t.fail(`seed ${1000 + seed}: ${net.violations.join('; ')}`); continue }
    const v = new Set(net.latest().values())
    if (v.size !== 1) t.fail(`seed ${1000 + seed}: not converged after healing: ${JSON.stringify([...net.latest()])}`)
    // Each host's persisted history is one chain: version k's base is version k-1's hash.
    for (const [h, log] of net.logs) {
      const hist = log.history()
      for (let k = 1; k < hist.length; k++) if (hist[k]!.base !== hist[k - 1]!.hash) t.fail(`seed ${1000 + seed}: ${h}'s history breaks at ${hist[k]!.version}`)
    }
    changes += net.decided.size
  }
  t.ok(changes > 60, `changes were decided despite the faults (${changes} versions over 60 runs)`)
})

tap.test('members move one at a time; the next version needs a majority of the new list', async t => {
  const hosts = ['a', 'b', 'c', 'd']
  const net = new Net(new Prng(7), hosts, h => genesis(h === 'd' ? ['d'] : ['a', 'b', 'c']), 0, 0)
  // d is a fresh host whose file names only itself: it adopts the cluster's history once added.
  propose(net, 'a', 'add-d', m => [...m, 'd'], '{}')
  for (let i = 0; i < 40; i++) net.step()
  t.same([...net.latest()], [['a', 2], ['b', 2], ['c', 2], ['d', 2]], 'd adopted the history and holds version 2')
  t.same(net.logs.get('d')!.latest().members, ['a', 'b', 'c', 'd'])
  t.equal(net.logs.get('d')!.history()[0]!.hash, net.logs.get('a')!.history()[0]!.hash, "d's genesis is the cluster's")
  // Four members: a majority is 3. With c and d down, a and b cannot change anything.
  net.crash('c'); net.crash('d')
  propose(net, 'a', 'rm-b', m => m.filter(x => x !== 'b'), '{}')
  for (let i = 0; i < 60; i++) net.step()
  t.equal(net.logs.get('a')!.latest().version, 2, 'two of four cannot decide')
  t.ok(net.outcomes.some(o => o.req === 'a:rm-b' && o.status === 'pending'))
  net.start('c')
  for (let i = 0; i < 60; i++) net.step()
  t.equal(net.logs.get('a')!.latest().version, 3, 'three of four can')
  t.same(net.logs.get('a')!.latest().members, ['a', 'c', 'd'])
  t.ok(net.logs.get('b')!.removed(), 'b knows it was removed')
  net.start('d')
  for (let i = 0; i < 60; i++) net.step()
  t.equal(net.logs.get('d')!.latest().version, 3, 'd, down during the change, caught up')
})

tap.test('bad frames are counted and change nothing', async t => {
  const hosts = ['a', 'b', 'c']
  const net = new Net(new Prng(3), hosts, () => genesis(hosts), 0, 0)
  const a = net.logs.get('a')!
  const forged = { version: 2, base: a.latest().hash, members: ['a'], doc: '{}', note: 'forged', hash: 'not-the-hash' }
  a.step('b', { type: 'cfg', op: 'commit', slot: 2, entry: forged }, 1)
  a.step('b', { type: 'cfg', op: 'accept', slot: 2, ballot: { n: 1, by: 'b' }, entry: forged }, 1)
  a.step('b', { type: 'cfg', op: 'prepare', slot: -1, ballot: { n: 1, by: 'b' } }, 1)
  a.step('b', { type: 'cfg', op: 'accept', slot: 2 }, 1)
  t.equal(a.latest().version, 1)
  t.equal(a.counters.refusedFrames, 4)
})

tap.test('announcements rotate over announcePeers when given (the active view), else over every member', t => {
  const members = ['a', 'b', 'c', 'd', 'e', 'f', 'g']
  const run = (announcePeers?: () => string[]): Set<string> => {
    const to = new Set<string>()
    const log = new ConfigLog('a', genesis(members), null, sha, {
      send: (dst, m) => { if (m.op === 'have') to.add(dst) },
      persist: () => {},
      event: () => {},
      committed: () => {},
      ...(announcePeers !== undefined ? { announcePeers } : {})
    }, { retryTicks: 10, pendingTicks: 100, announceTicks: 2, announceFanout: 3, fetchBatch: 8 })
    for (let now = 0; now < 200; now++) log.tick(now)
    return to
  }
  t.same([...run()].sort(), ['b', 'c', 'd', 'e', 'f', 'g'], 'without a view: every member in turn')
  t.same([...run(() => ['c', 'f', 'x'])].sort(), ['c', 'f'], 'with a view: only its members that are members of the configuration')
  t.same([...run(() => ['x'])].sort(), ['b', 'c', 'd', 'e', 'f', 'g'], 'a view with no member of the configuration falls back to every member')
  t.end()
})

tap.test('membership counts: rules-only versions share their predecessor\'s; versions a host does not hold match nothing', async t => {
  const hosts = ['a', 'b', 'c', 'd']
  const net = new Net(new Prng(7), hosts, () => genesis(['a', 'b', 'c']), 0, 0)
  const steps: Array<[(m: string[]) => string[], string]> = [
    [m => m, '{"rules":[1]}'], // 2: rules only
    [m => [...m, 'd'], '{"rules":[1]}'], // 3: d added
    [m => m, '{"rules":[2]}'], // 4: rules only
    [m => m.filter(x => x !== 'd'), '{"rules":[2]}'], // 5: d removed (the members of 1 again)
    [m => [...m].reverse(), '{"rules":[3]}'], // 6: the same members in another order
    [m => [...m.filter(x => x !== 'a'), 'd'], '{"rules":[3]}'] // 7: one removed and one added at once (not made by the runtime): counts two
  ]
  for (const [i, [change, doc]] of steps.entries()) {
    propose(net, 'a', `r${i}`, change, doc)
    for (let k = 0; k < 30; k++) net.step()
  }
  const log = net.logs.get('b')!
  t.equal(log.latest().version, 7)
  t.same([1, 2, 3, 4, 5, 6, 7].map(v => log.membershipOf(v)), [0, 0, 1, 1, 2, 2, 4], 'a count per host added or removed')
  t.ok(log.sameMembers(1, 2), 'a rules-only change keeps the members')
  t.ok(log.sameMembers(3, 4))
  t.ok(log.sameMembers(5, 6), 'the order of the list does not matter')
  t.notOk(log.sameMembers(2, 3), 'a member added')
  t.notOk(log.sameMembers(1, 5), 'the same members two changes apart do not match: a member was in between')
  t.notOk(log.sameMembers(6, 7), 'a swap of one member for another')
  t.equal(log.membershipOf(8), null, 'a version ahead of this host')
  t.notOk(log.sameMembers(7, 8))
  t.equal(log.membershipOf(0), null)
})
