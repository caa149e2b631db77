// Goal: a consolidation larger than the source's outgoing slots (migration.outMax) is reserved
// whole and copied outMax at a time (agent/core/migration/evacuation.ts, migration-machine.ts
// startGroup): it completes; copies under way never exceed outMax; the grants that wait for a
// slot stay alive past their lease (the source renews them); a refusal, a timeout, a failed copy
// or a crash part way leaves every VM running on exactly one host, what was copied committed and
// what waited withdrawn (its target's reservation released, its incoming VM killed).
// Method: one MigrationMachine per host over its own CoreState (agent/core is deterministic),
// frames delivered by hand, and a small scripted hypervisor per host that keeps each VM's state
// (running, paused, incoming), completes a copy after COPY_POLLS progress samples, and can be
// told to fail one. After every frame and driver result the test counts the source's copies.
import t from 'tap'
import type { Test } from 'tap'
import { CoreState } from '../../../agent/core/state.js'
import { localTestCoreConfig } from '../../../agent/core/config.js'
import { Prng } from '../../../agent/core/prng.js'
import { emptyReady } from '../../../agent/core/effects.js'
import { MigrationMachine } from '../../../agent/core/migration/migration-machine.js'
import { defaultMigrationConfig } from '../../../agent/core/migration/migration-config.js'
import { judgeEvacuation } from '../../../agent/core/migration/evacuation.js'
import type { DriverCommand, DriverResult, MigrationConfig, MigrationRecord, VmPresence } from '../../../agent/core/migration/migration-state.js'
import type { Body } from '../../../agent/core/messages.js'
import type { HostCapacity } from '../../../agent/core/types.js'

const IDS = ['src', 'tgt-b', 'tgt-c', 'tgt-d'] as const
const CAP: HostCapacity = { cpuCores: 8, cpuMipsPerCore: 1000, memMiB: 8192, netMbps: 10000 }
const SPEC = { vcpus: 1, memMiB: 1024, extraJson: '{}' }
const VMS = ['v1', 'v2', 'v3', 'v4']
/** Moves of the group: four VMs over three targets (tgt-b takes two: inMax 2). */
const MOVES = [{ vm: 'v1', to: 'tgt-b' }, { vm: 'v2', to: 'tgt-c' }, { vm: 'v3', to: 'tgt-d' }, { vm: 'v4', to: 'tgt-b' }]

function cfg (o: Partial<MigrationConfig> = {}): MigrationConfig {
  return { ...defaultMigrationConfig(), autoBalance: false, outMax: 2, leaseTicks: 30, intentTimeoutTicks: 20, prepareTimeoutTicks: 40, pollTicks: 2, resendTicks: 5, retainTicks: 50_000, ...o }
}

interface Hyper {
  vms: Map<string, VmPresence>
  /** Outgoing copies: VM -> progress samples taken, target, and how it stands. */
  copies: Map<string, { polls: number, target: string, status: string }>
}

interface World {
  now: number
  states: Map<string, CoreState>
  machines: Map<string, MigrationMachine>
  hv: Map<string, Hyper>
  copyPolls: number
  /** Copies of these VMs fail at their first progress sample (the VM keeps running on the source). */
  failCopy: Set<string>
  log: string[]
  frames: string[]
  /** Frames dropped: return true to lose it. */
  drop: (from: string, to: string, b: Body) => boolean
  down: Set<string>
  /** Most source copies (copying or switching) seen at once, and any breach of outMax. */
  maxCopies: number
  cfg: MigrationConfig
}

function world (o: Partial<MigrationConfig> = {}, copyPolls = 3): World {
  const c = cfg(o)
  const w: World = { now: 0, states: new Map(), machines: new Map(), hv: new Map(), copyPolls, failCopy: new Set(), log: [], frames: [], drop: () => false, down: new Set(), maxCopies: 0, cfg: c }
  for (const id of IDS) {
    const s = new CoreState(id, id, `${id}:1`, localTestCoreConfig(), new Prng(1), 1)
    for (const x of IDS) s.members.becomeAlive(x, x, `${x}:1`, 1, 0)
    const m = new MigrationMachine(s, c, [], false)
    m.capacity = CAP
    w.states.set(id, s)
    w.machines.set(id, m)
    w.hv.set(id, { vms: new Map(), copies: new Map() })
  }
  for (const v of VMS) w.hv.get('src')!.vms.set(v, 'running')
  syncLocal(w)
  return w
}

/** Each machine's local VMs as its sampler would report them (running or paused here). */
function syncLocal (w: World): void {
  for (const [id, m] of w.machines) {
    m.localVms = [...w.hv.get(id)!.vms].filter(([, p]) => p === 'running' || p === 'paused')
      .map(([vm]) => ({ id: vm, vcpus: 1, memMiB: 1024, cpuUtil: 0.01, memUsedMiB: 1024, state: 'running' as const }))
  }
}

/** The scripted hypervisor of `host`. */
function answer (w: World, host: string, c: DriverCommand): DriverResult {
  const h = w.hv.get(host)!
  const cp = h.copies.get(c.vm)
  switch (c.kind) {
    case 'query':
      return { ok: true, kind: 'query', query: { presence: h.vms.get(c.vm) ?? 'absent', migration: cp?.status ?? 'none', spec: h.vms.has(c.vm) ? SPEC : null, dirtyRateBytesPerS: 0, accel: 'kvm' } }
    case 'prepareIncoming':
      h.vms.set(c.vm, 'incoming')
      return { ok: true, kind: 'prepareIncoming', uri: `tcp:${host}:4444` }
    case 'migrate': {
      const target = /^tcp:([^:]+):/.exec(c.uri)?.[1] ?? ''
      const listening = !w.down.has(target) && w.hv.get(target)?.vms.get(c.vm) === 'incoming'
      h.copies.set(c.vm, { polls: 0, target, status: listening ? 'active' : 'failed' })
      return { ok: true, kind: 'migrate' } as DriverResult
    }
    case 'progress': {
      if (cp === undefined) return { ok: true, kind: 'progress', progress: { status: 'none', totalTimeMs: 0, transferredBytes: 0, remainingBytes: 0, dirtySyncCount: 0, downtimeMs: null } }
      if (cp.status === 'active') {
        cp.polls++
        const tgt = w.hv.get(cp.target)!
        if (w.failCopy.has(c.vm) || w.down.has(cp.target) || tgt.vms.get(c.vm) !== 'incoming') cp.status = 'failed'
        else if (cp.polls >= w.copyPolls) { cp.status = 'completed'; h.vms.set(c.vm, 'paused'); tgt.vms.set(c.vm, 'running') }
      }
      return { ok: true, kind: 'progress', progress: { status: cp.status, totalTimeMs: 100 * cp.polls, transferredBytes: cp.polls << 20, remainingBytes: cp.status === 'completed' ? 0 : 1 << 20, dirtySyncCount: 1, downtimeMs: null } }
    }
    case 'cancel':
      if (cp !== undefined && cp.status === 'active') cp.status = 'cancelled'
      return { ok: true, kind: 'cancel' } as DriverResult
    case 'stopSource': h.vms.delete(c.vm); return { ok: true, kind: 'stopSource' } as DriverResult
    case 'resume': if (h.vms.get(c.vm) === 'paused') h.vms.set(c.vm, 'running'); return { ok: true, kind: 'resume' } as DriverResult
    case 'killIncoming':
      if (h.vms.get(c.vm) === 'running') return { ok: false, kind: 'killIncoming', code: 'VM_RUNNING', message: 'runs here' }
      h.vms.delete(c.vm)
      return { ok: true, kind: 'killIncoming' } as DriverResult
    default: return { ok: true, kind: c.kind } as DriverResult
  }
}

/** Copies of the source now: its records copying or switching. */
const copiesNow = (w: World): number => w.machines.get('src')!.liveOut().filter(r => r.state === 'copying' || r.state === 'switching').length

function watch (w: World): void {
  const n = copiesNow(w)
  if (n > w.maxCopies) w.maxCopies = n
}

function pump (w: World): void {
  for (let round = 0; round < 200; round++) {
    let any = false
    for (const [id, s] of w.states) {
      if (w.down.has(id)) { s.pending = emptyReady(); continue }
      const rd = s.pending
      s.pending = emptyReady()
      for (const o of rd.send) {
        any = true
        const b = o.envelope.body
        if (w.down.has(o.to) || w.drop(id, o.to, b)) continue
        w.frames.push(`${id}>${o.to} ${b.type}${b.type === 'migrationProgress' ? ` ${b.status}` : ''}`)
        w.machines.get(o.to)!.onMessage(id, b)
        watch(w)
      }
      for (const c of rd.driver) {
        any = true
        w.log.push(`${id} ${c.kind} ${c.vm}`)
        w.machines.get(id)!.onDriverResult(c, answer(w, id, c))
        watch(w)
      }
    }
    syncLocal(w)
    if (!any) return
  }
  throw new Error('effects did not settle')
}

function advance (w: World, ticks: number): void {
  for (let i = 0; i < ticks; i++) {
    w.now++
    for (const [id, s] of w.states) {
      if (w.down.has(id)) continue
      s.now = w.now
      w.machines.get(id)!.tick()
    }
    pump(w)
  }
}

/** Advances until the source has no live record (or `most` ticks). */
function settle (w: World, most = 2000): void {
  for (let i = 0; i < most; i++) {
    if (w.machines.get('src')!.live().length === 0 && [...w.machines.values()].every(m => m.live().length === 0)) return
    advance(w, 1)
  }
}

const srcRec = (w: World, vm: string): MigrationRecord => [...w.machines.get('src')!.recs.values()].find(r => r.role === 'source' && r.vm === vm)!
const states = (w: World): string[] => VMS.map(v => `${v}:${srcRec(w, v)?.state ?? '-'}`)
const reserved = (w: World, host: string): string[] => w.machines.get(host)!.admissionInput().reservations.map(r => r.vm)

/** Where each VM runs (hosts holding it running), and any copy left paused or incoming. */
function placement (w: World): { running: Record<string, string[]>, leftovers: string[] } {
  const running: Record<string, string[]> = {}
  const leftovers: string[] = []
  for (const [h, hv] of w.hv) {
    for (const [vm, p] of hv.vms) {
      if (p === 'running') (running[vm] ??= []).push(h)
      else leftovers.push(`${h}:${vm}:${p}`)
    }
  }
  return { running, leftovers }
}

function exactlyOnce (t: Test, w: World): void {
  const p = placement(w)
  for (const vm of VMS) t.equal(p.running[vm]?.length ?? 0, 1, `${vm} runs on exactly one host (${(p.running[vm] ?? []).join(',')})`)
  t.same(p.leftovers, [], 'no paused or incoming copy left anywhere')
  for (const id of IDS) t.same(reserved(w, id), [], `${id} holds no reservation`)
}

function startGroup (w: World, moves = MOVES): MigrationRecord[] {
  const recs = w.machines.get('src')!.startGroup(moves, 'underload')
  pump(w)
  return recs
}

t.test('the judge stages the copies: free slots first, the next as slots free, a failure withdraws what waits', async t => {
  t.same(judgeEvacuation(['granted', 'granted', 'granted'], 2), { kind: 'copy', start: [0, 1], first: true }, 'two slots: the first two start')
  t.same(judgeEvacuation(['copying', 'copying', 'granted'], 0), { kind: 'copy', start: [], first: false }, 'no slot free: the third waits')
  t.same(judgeEvacuation(['done', 'copying', 'granted'], 1), { kind: 'copy', start: [2], first: false }, 'a slot freed: the third starts')
  t.same(judgeEvacuation(['granted', 'pending', 'granted'], 2), { kind: 'wait' }, 'an answer missing: nothing starts')
  t.same(judgeEvacuation(['granted', 'refused', 'pending'], 2), { kind: 'withdraw', refused: 1, withdraw: [0, 2], started: false }, 'a refusal before the start withdraws all')
  t.same(judgeEvacuation(['done', 'failed', 'granted', 'copying'], 1), { kind: 'withdraw', refused: 1, withdraw: [2], started: true }, 'a copy failed part way: what waits is withdrawn, the copy under way runs on')
  t.same(judgeEvacuation(['done', 'failed', 'copying'], 1), { kind: 'done' }, 'nothing waits: nothing to withdraw')
  t.same(judgeEvacuation(['done', 'done'], 2), { kind: 'done' })
})

t.test('a group of four with two slots completes, never more than two copies at once', async t => {
  const w = world()
  const recs = startGroup(w)
  t.same(recs.map(r => r.state), ['copying', 'copying', 'reserved', 'reserved'], 'all four reserved at once (no outgoing-limit refusal), two copying')
  t.same(w.log.filter(l => l.includes(' migrate ')), ['src migrate v1', 'src migrate v2'], 'the first two copies started, in the plan\'s order')
  t.same(reserved(w, 'tgt-b').sort(), ['v1', 'v4'], 'tgt-b holds both its grants while v4 waits')
  settle(w)
  t.same(states(w), ['v1:committed', 'v2:committed', 'v3:committed', 'v4:committed'], 'every move committed')
  t.equal(w.maxCopies, 2, 'at most outMax (2) copies at once, and two did run together')
  t.same(w.log.filter(l => l.includes(' migrate ')), ['src migrate v1', 'src migrate v2', 'src migrate v3', 'src migrate v4'], 'the later copies started as slots freed')
  t.match(w.machines.get('src')!.counts, { evacuationsStarted: 1, evacuationsWithdrawn: 0, evacuationsCutShort: 0 })
  t.same(w.hv.get('src')!.vms.size, 0, 'the source is empty')
  exactlyOnce(t, w)
})

t.test('one slot: the copies run one after the other', async t => {
  const w = world({ outMax: 1 })
  startGroup(w, MOVES.slice(0, 3))
  settle(w)
  t.same(states(w).slice(0, 3), ['v1:committed', 'v2:committed', 'v3:committed'])
  t.equal(w.maxCopies, 1, 'never two copies at once')
})

t.test('a move outside the group takes its slot: the group copies in the slot left', async t => {
  const w = world()
  const m = w.machines.get('src')!
  m.start('v4', 'tgt-d', 'overload')
  pump(w)
  startGroup(w, MOVES.slice(0, 3))
  t.equal(copiesNow(w), 2, 'v4 and one group copy')
  settle(w)
  t.same(states(w), ['v1:committed', 'v2:committed', 'v3:committed', 'v4:committed'])
  t.equal(w.maxCopies, 2, 'never more than outMax copies, the group\'s and the other together')
})

t.test('waiting grants stay alive past their lease while earlier copies run', async t => {
  // A copy takes 20 samples x 2 ticks = 40 ticks, longer than the lease (30): v3 and v4 wait
  // about 40 ticks for a slot.
  const w = world({}, 20)
  startGroup(w)
  advance(w, 35)
  t.same(states(w).slice(2), ['v3:reserved', 'v4:reserved'], 'v3 and v4 still wait at tick 35, past the 30-tick lease')
  const d = [...w.machines.get('tgt-d')!.recs.values()].find(r => r.vm === 'v3')!
  t.equal(d.state, 'copying', 'tgt-d still holds v3\'s grant (its incoming VM prepared)')
  t.ok(d.leaseExpiresTick > w.now, `tgt-d's lease was renewed (expires at ${d.leaseExpiresTick}, now ${w.now})`)
  t.ok(w.frames.filter(f => f === 'src>tgt-d migrationProgress waiting').length >= 3, 'the source renewed it while it waited')
  settle(w)
  t.same(states(w), ['v1:committed', 'v2:committed', 'v3:committed', 'v4:committed'], 'all four copied')
  t.equal(w.maxCopies, 2)
  for (const id of IDS.slice(1)) {
    for (const r of w.machines.get(id)!.recs.values()) t.notMatch(r.reason, /lease expired/, `${id} ${r.vm}: no lease expired`)
  }
  exactlyOnce(t, w)
})

t.test('a copy that fails part way: the waiting moves are withdrawn, the copy under way completes', async t => {
  const w = world()
  w.failCopy.add('v1')
  startGroup(w)
  settle(w)
  t.same(states(w), ['v1:aborted', 'v2:committed', 'v3:aborted', 'v4:aborted'], 'v1 failed; v2 (copying then) committed; v3 and v4 withdrawn')
  t.match(srcRec(w, 'v3').reason, /consolidation cut short/, srcRec(w, 'v3').reason)
  t.same(w.log.filter(l => l.includes(' migrate ')), ['src migrate v1', 'src migrate v2'], 'no copy of a withdrawn move started')
  t.ok(w.log.includes('tgt-d killIncoming v3'), 'tgt-d killed the incoming VM it had prepared for v3')
  t.match(w.machines.get('src')!.counts, { evacuationsStarted: 1, evacuationsCutShort: 1 })
  t.same(placement(w).running, { v1: ['src'], v2: ['tgt-c'], v3: ['src'], v4: ['src'] }, 'what was copied stayed moved, the rest runs on the source')
  exactlyOnce(t, w)
})

t.test('a waiting grant lost part way (its renewals do not arrive): the target drops it, the rest that waits is withdrawn', async t => {
  const w = world({}, 20)
  // tgt-d does not hear the source's renewals: its lease on v3 runs out while v1 and v2 copy.
  w.drop = (from, to, b) => from === 'src' && to === 'tgt-d' && b.type === 'migrationProgress'
  startGroup(w)
  settle(w)
  const d = [...w.machines.get('tgt-d')!.recs.values()].find(r => r.vm === 'v3')!
  t.match(d.reason, /lease expired/, `tgt-d dropped v3's grant: ${d.reason}`)
  t.same(states(w), ['v1:committed', 'v2:committed', 'v3:aborted', 'v4:aborted'], 'the copies under way committed, v3 and v4 withdrawn')
  t.same(w.log.filter(l => l.includes(' migrate ')), ['src migrate v1', 'src migrate v2'])
  t.equal(w.hv.get('tgt-d')!.vms.has('v3'), false, 'tgt-d killed its incoming v3')
  exactlyOnce(t, w)
})

t.test('a target refuses before the start: nothing is copied, every grant released', async t => {
  const w = world()
  w.machines.get('tgt-d')!.setDraining(true)
  startGroup(w)
  settle(w)
  t.same(states(w), ['v1:aborted', 'v2:aborted', 'v3:aborted', 'v4:aborted'])
  t.same(w.log.filter(l => l.includes(' migrate ')), [], 'no copy started')
  t.match(w.machines.get('src')!.counts, { evacuationsWithdrawn: 1, evacuationsStarted: 0 })
  exactlyOnce(t, w)
})

t.test('a waiting target crashes part way: its copy fails when its turn comes, what waits after it is withdrawn', async t => {
  const w = world({ outMax: 1 }, 5)
  startGroup(w, MOVES.slice(0, 3))
  advance(w, 2)
  t.same(states(w).slice(0, 3), ['v1:copying', 'v2:reserved', 'v3:reserved'])
  w.down.add('tgt-c') // v2's target dies with its prepared incoming VM
  w.hv.get('tgt-c')!.vms.clear()
  settle(w)
  t.same(states(w).slice(0, 3), ['v1:committed', 'v2:aborted', 'v3:aborted'], 'v1 copied; v2 aborted (its target gone); v3 withdrawn')
  t.same(w.log.filter(l => l.includes(' migrate ')).slice(1).every(l => l === 'src migrate v2'), true, 'v3 never copied')
  const p = placement(w)
  t.same(p.running, { v1: ['tgt-b'], v2: ['src'], v3: ['src'], v4: ['src'] })
  t.same(p.leftovers, [], 'nothing paused or incoming')
})

t.test('the source restarts part way: copied moves stay committed, the copy under way and the waiting ones abort', async t => {
  // One slot, a copy about 20 ticks: v1 copies at 0-20, v2 at 21-41, v3 from 42; at tick 50
  // v1 and v2 have committed, v3 copies and v4 waits.
  const w = world({ outMax: 1 }, 10)
  startGroup(w)
  advance(w, 50)
  t.same(states(w), ['v1:committed', 'v2:committed', 'v3:copying', 'v4:reserved'], 'at the crash')
  // The source restarts from its journal: a new machine over the same state (its QEMU copies live on).
  const s = w.states.get('src')!
  s.pending = emptyReady()
  const recs = [...w.machines.get('src')!.recs.values()].map(r => ({ ...r }))
  const m = new MigrationMachine(s, w.cfg, recs, false)
  m.capacity = CAP
  w.machines.set('src', m)
  syncLocal(w)
  pump(w)
  settle(w)
  const after = states(w)
  t.same(after.slice(0, 2), ['v1:committed', 'v2:committed'], 'what was copied stays committed')
  t.ok(after.slice(2).every(x => x.endsWith(':aborted') || x.endsWith(':committed')), `the rest ended: ${after.join(' ')}`)
  t.equal(w.log.filter(l => l === 'src migrate v4').length, 0, 'the waiting v4 was never copied after the restart')
  exactlyOnce(t, w)
})

t.test('a repeated IncomingReady of a waiting move does not start its copy out of turn', async t => {
  const w = world({}, 20)
  const recs = startGroup(w)
  const v3 = recs[2]!
  w.machines.get('src')!.onMessage('tgt-d', { type: 'incomingReady', id: v3.id, uri: 'tcp:tgt-d:4444' })
  pump(w)
  t.equal(srcRec(w, 'v3').state, 'reserved', 'v3 still waits for a slot')
  t.equal(copiesNow(w), 2)
  settle(w)
  t.equal(w.maxCopies, 2)
})

t.test('a group larger than the policy\'s moves per decision is not reserved', async t => {
  const w = world()
  w.machines.get('src')!.cfg = { ...w.cfg, policy: { ...w.cfg.policy, maxMovesPerDecision: 3 } }
  const recs = startGroup(w)
  t.same(recs.map(r => r.state), ['aborted', 'aborted', 'aborted', 'aborted'])
  t.same(w.frames.filter(f => f.includes('migrationIntent')), [], 'no intent sent')
})

t.test('an intent lost on the way is sent again: the consolidation goes ahead instead of waiting out the timeout', async t => {
  const w = world({})
  // The first intent to tgt-c is lost (a connection replaced under it); later ones arrive.
  let lost = 0
  w.drop = (from, to, b) => from === 'src' && to === 'tgt-c' && b.type === 'migrationIntent' && lost++ === 0
  startGroup(w)
  settle(w)
  t.equal(lost, 2, 'the intent went twice: once lost, once answered')
  t.same(states(w), ['v1:committed', 'v2:committed', 'v3:committed', 'v4:committed'], 'the whole consolidation committed')
  t.ok(w.frames.filter(f => f === 'src>tgt-c migrationIntent').length === 1, 'one intent reached tgt-c')
  exactlyOnce(t, w)
})

t.test('an intent the target does not answer still ends the move at the intent timeout', async t => {
  const w = world({})
  w.drop = (from, to, b) => from === 'src' && to === 'tgt-c' && b.type === 'migrationIntent'
  startGroup(w)
  settle(w)
  const sent = [...w.machines.get('src')!.recs.values()].find(r => r.vm === 'v2')!
  t.match(sent.reason, /no answer from the target/, `v2: ${sent.reason}`)
  t.same(states(w), ['v1:aborted', 'v2:aborted', 'v3:aborted', 'v4:aborted'], 'the consolidation is withdrawn as a whole')
  exactlyOnce(t, w)
})

t.test('a host refuses an intent for a VM it has a migration of still open', async t => {
  const w = world({}, 20)
  // src moves v1 to tgt-b; while that copy runs, tgt-c (with a stale view) asks src to take v1.
  w.machines.get('src')!.start('v1', 'tgt-b', 'operator')
  pump(w)
  for (let i = 0; i < 20 && srcRec(w, 'v1').state !== 'copying'; i++) advance(w, 1)
  t.equal(srcRec(w, 'v1').state, 'copying', 'the move of v1 copies')
  const before = w.frames.length
  w.machines.get('src')!.onMessage('tgt-c', { type: 'migrationIntent', id: 'tgt-c-1-1', vm: 'v1', vcpus: 1, memMiB: 1024, extraJson: '{}', cpuDemandMips: 100 })
  pump(w)
  t.same(w.frames.slice(before).filter(f => f.startsWith('src>tgt-c')), ['src>tgt-c reservationRefused'], 'refused')
  t.notOk([...w.machines.get('src')!.recs.values()].some(r => r.role === 'target'), 'src holds no record as a target')
  settle(w)
  t.equal(srcRec(w, 'v1').state, 'committed', 'the first move completes')
  t.same(placement(w).running.v1, ['tgt-b'], 'v1 runs on tgt-b only')
})
