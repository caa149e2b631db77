// Goal: a consolidation of several moves is reserved as a whole by the agents' migration machine
// (agent/core/migration/evacuation.ts, migration-machine.ts startGroup): the copies start only
// once every target granted and prepared; a refusal or a grant that does not come in time
// withdraws the group (the reservations granted are released at their targets, no copy starts);
// a held grant is renewed by its source while it waits, and a target whose source crashed drops
// it on its own at lease expiry. (Staged copies: staged-evacuation.test.ts.)
// Method: one MigrationMachine per host over its own CoreState (agent/core is deterministic),
// frames delivered by hand between them, a scripted hypervisor answering every driver command.
// Each case records the driver commands and the frames, and asserts on the records, on what each
// target still reserves (its admission input) and on the absence of any 'migrate' command.
import t from 'tap'
import { CoreState } from '../../../agent/core/state.js'
import { localTestCoreConfig } from '../../../agent/core/config.js'
import { Prng } from '../../../agent/core/prng.js'
import { emptyReady } from '../../../agent/core/effects.js'
import { MigrationMachine } from '../../../agent/core/migration/migration-machine.js'
import { defaultMigrationConfig } from '../../../agent/core/migration/migration-config.js'
import { judgeEvacuation, reservedWhole } from '../../../agent/core/migration/evacuation.js'
import type { DriverCommand, DriverResult, MigrationConfig } from '../../../agent/core/migration/migration-state.js'
import type { HostCapacity } from '../../../agent/core/types.js'

const IDS = ['src', 'tgt-b', 'tgt-c'] as const
const CAP: HostCapacity = { cpuCores: 8, cpuMipsPerCore: 1000, memMiB: 8192, netMbps: 10000 }
const SPEC = { vcpus: 1, memMiB: 1024, extraJson: '{}' }

function cfg (leaseTicks = 30): MigrationConfig {
  return { ...defaultMigrationConfig(), autoBalance: false, leaseTicks, intentTimeoutTicks: 20, prepareTimeoutTicks: 40, pollTicks: 2, resendTicks: 5, retainTicks: 5000 }
}

interface World {
  now: number
  states: Map<string, CoreState>
  machines: Map<string, MigrationMachine>
  /** Every driver command carried out: "host kind vm". */
  log: string[]
  /** Frames delivered: "from>to type". */
  frames: string[]
  /** Hosts whose frames are lost both ways (crashed or unreachable), and hosts that do not run at all. */
  cut: Set<string>
  down: Set<string>
  /** Driver commands held back (answered by release()). */
  defer: ((host: string, c: DriverCommand) => boolean) | null
  deferred: Array<[string, DriverCommand]>
}

function world (leaseTicks = 30): World {
  const w: World = { now: 0, states: new Map(), machines: new Map(), log: [], frames: [], cut: new Set(), down: new Set(), defer: null, deferred: [] }
  for (const id of IDS) {
    const s = new CoreState(id, id, `${id}:1`, localTestCoreConfig(), new Prng(1), 1)
    for (const o of IDS) s.members.becomeAlive(o, o, `${o}:1`, 1, 0)
    const m = new MigrationMachine(s, cfg(leaseTicks), [], false)
    m.capacity = CAP
    w.states.set(id, s)
    w.machines.set(id, m)
  }
  const src = w.machines.get('src')!
  src.localVms = [
    { id: 'v1', vcpus: 1, memMiB: 1024, cpuUtil: 0.01, memUsedMiB: 1024, state: 'running' },
    { id: 'v2', vcpus: 1, memMiB: 1024, cpuUtil: 0.01, memUsedMiB: 1024, state: 'running' }
  ]
  return w
}

/** The scripted hypervisor: the source's VMs run, an incoming VM listens, every command succeeds. */
function answer (host: string, c: DriverCommand): DriverResult {
  switch (c.kind) {
    case 'query': return { ok: true, kind: 'query', query: { presence: host === 'src' ? 'running' : 'incoming', migration: 'none', spec: SPEC, dirtyRateBytesPerS: 0, accel: 'kvm' } }
    case 'prepareIncoming': return { ok: true, kind: 'prepareIncoming', uri: `tcp:${host}:4444` }
    case 'progress': return { ok: true, kind: 'progress', progress: { status: 'active', totalTimeMs: 100, transferredBytes: 1, remainingBytes: 1 << 20, dirtySyncCount: 1, downtimeMs: null } }
    default: return { ok: true, kind: c.kind } as DriverResult
  }
}

/** Carries out every pending effect of every running host until none is left. */
function pump (w: World): void {
  for (let round = 0; round < 100; round++) {
    let any = false
    for (const [id, s] of w.states) {
      if (w.down.has(id)) { s.pending = emptyReady(); continue }
      const rd = s.pending
      s.pending = emptyReady()
      const m = w.machines.get(id)!
      for (const o of rd.send) {
        any = true
        if (w.cut.has(id) || w.cut.has(o.to) || w.down.has(o.to)) continue
        w.frames.push(`${id}>${o.to} ${o.envelope.body.type}`)
        w.machines.get(o.to)!.onMessage(id, o.envelope.body)
      }
      for (const c of rd.driver) {
        any = true
        if (w.defer?.(id, c) === true) { w.deferred.push([id, c]); continue }
        w.log.push(`${id} ${c.kind} ${c.vm}`)
        m.onDriverResult(c, answer(id, c))
      }
    }
    if (!any) return
  }
  throw new Error('effects did not settle')
}

function release (w: World): void {
  for (const [id, c] of w.deferred.splice(0)) {
    w.log.push(`${id} ${c.kind} ${c.vm}`)
    w.machines.get(id)!.onDriverResult(c, answer(id, c))
  }
  pump(w)
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

const reserved = (w: World, host: string): string[] => w.machines.get(host)!.admissionInput().reservations.map(r => r.vm)
const migrates = (w: World): string[] => w.log.filter(l => l.includes(' migrate '))
const sources = (w: World): string[] => w.machines.get('src')!.liveOut().map(r => `${r.vm}:${r.state}`)
const srcStates = (w: World): string[] => [...w.machines.get('src')!.recs.values()].filter(r => r.role === 'source').map(r => `${r.vm}:${r.state}`)

function startGroup (w: World): void {
  w.machines.get('src')!.startGroup([{ vm: 'v1', to: 'tgt-b' }, { vm: 'v2', to: 'tgt-c' }], 'underload')
  pump(w)
}

t.test('the group judge: any refusal withdraws, all granted starts, otherwise it waits', async t => {
  t.same(judgeEvacuation(['granted', 'granted']), { kind: 'copy', start: [0, 1], first: true })
  t.same(judgeEvacuation(['granted', 'pending']), { kind: 'wait' })
  t.same(judgeEvacuation(['granted', 'refused', 'pending']), { kind: 'withdraw', refused: 1, withdraw: [0, 2], started: false })
  t.ok(reservedWhole([{ reason: 'underload' }, { reason: 'underload' }]), 'a consolidation of two moves is reserved whole')
  t.notOk(reservedWhole([{ reason: 'underload' }]), 'a single move is reserved on its own')
  t.notOk(reservedWhole([{ reason: 'overload' }, { reason: 'overload' }]), 'overload relief keeps per-move reservations')
})

t.test('all targets grant: the copies start together, only after the last target is ready', async t => {
  const w = world()
  // tgt-c's frames wait: tgt-b grants and prepares first, its copy must not start alone.
  w.cut.add('tgt-c')
  startGroup(w)
  t.same(reserved(w, 'tgt-b'), ['v1'], 'tgt-b holds v1')
  t.same(migrates(w), [], 'no copy starts while tgt-c has not answered')
  t.same(sources(w).sort(), ['v1:reserved', 'v2:proposed'], 'v1 held in reserved, v2 waits for its grant')
  // tgt-c comes back: the source resends nothing by itself before the intent timeout, so give it
  // the intent again by re-delivering (the intent went out while cut): run the intent path anew.
  w.cut.delete('tgt-c')
  const v2 = w.machines.get('src')!.liveOut().find(r => r.vm === 'v2')!
  w.machines.get('tgt-c')!.onMessage('src', { type: 'migrationIntent', id: v2.id, vm: 'v2', vcpus: 1, memMiB: 1024, extraJson: '{}', cpuDemandMips: v2.cpuDemandMips })
  pump(w)
  t.same(migrates(w).sort(), ['src migrate v1', 'src migrate v2'], 'both copies started once every target was ready')
  t.same(sources(w).sort(), ['v1:copying', 'v2:copying'], 'both source records copying')
  t.match(w.machines.get('src')!.counts, { evacuationsStarted: 1, evacuationsWithdrawn: 0 }, 'counted as a started evacuation')
  t.same(reserved(w, 'tgt-b'), ['v1'])
  t.same(reserved(w, 'tgt-c'), ['v2'])
})

t.test('one target refuses: the other reservation is released and no copy starts', async t => {
  const w = world()
  w.machines.get('tgt-c')!.setDraining(true) // tgt-c refuses every intent
  startGroup(w)
  t.same(migrates(w), [], 'no copy started')
  t.same(srcStates(w).sort(), ['v1:aborted', 'v2:aborted'], 'both moves aborted at the source')
  const v1 = [...w.machines.get('src')!.recs.values()].find(r => r.vm === 'v1')!
  t.match(v1.reason, /consolidation withdrawn/, `v1 withdrawn: ${v1.reason}`)
  t.ok(w.frames.includes('tgt-c>src reservationRefused'), 'tgt-c refused')
  t.ok(w.frames.includes('src>tgt-b migrationAborted'), 'the source released tgt-b\'s grant')
  t.same(reserved(w, 'tgt-b'), [], 'tgt-b holds nothing any more')
  const tb = [...w.machines.get('tgt-b')!.recs.values()][0]
  t.equal(tb?.state, 'aborted', 'tgt-b\'s record aborted')
  t.ok(w.log.includes('tgt-b killIncoming v1'), 'tgt-b killed the incoming VM it had prepared')
  t.match(w.machines.get('src')!.counts, { evacuationsStarted: 0, evacuationsWithdrawn: 1 }, 'counted as a withdrawn evacuation')
})

t.test('a grant that does not come in time withdraws the group', async t => {
  const w = world()
  w.cut.add('tgt-c') // tgt-c never hears the intent
  startGroup(w)
  t.same(reserved(w, 'tgt-b'), ['v1'], 'tgt-b granted')
  advance(w, 25) // past the intent timeout (20 ticks), before tgt-b's lease (30) runs out
  t.same(migrates(w), [], 'no copy started')
  t.same(srcStates(w).sort(), ['v1:aborted', 'v2:aborted'], 'both moves aborted')
  const v2 = [...w.machines.get('src')!.recs.values()].find(r => r.vm === 'v2')!
  t.match(v2.reason, /no answer from the target/, `v2: ${v2.reason}`)
  t.same(reserved(w, 'tgt-b'), [], 'tgt-b released v1 when the source said so, before its own lease ran out')
  t.ok(w.frames.includes('src>tgt-b migrationAborted'))
})

t.test('a target that grants but does not prepare in time withdraws the group', async t => {
  const w = world()
  const src = w.machines.get('src')!
  const orig = src.onMessage.bind(src)
  src.onMessage = (from, b) => { if (!(from === 'tgt-c' && b.type === 'incomingReady')) orig(from, b) }
  startGroup(w)
  t.same(sources(w).sort(), ['v1:reserved', 'v2:reserved'], 'both granted; v2 not ready')
  advance(w, 45) // past prepareTimeoutTicks (40) after v2's grant
  t.same(migrates(w), [], 'no copy started')
  t.same(srcStates(w).sort(), ['v1:aborted', 'v2:aborted'])
  t.same(reserved(w, 'tgt-b'), [], 'tgt-b released')
  t.same(reserved(w, 'tgt-c'), [], 'tgt-c released')
})

t.test('a held move gives up at the group deadline while another move is still on its way', async t => {
  const w = world(100) // leases longer than the group's deadline (as the defaults: 100 and 350 ticks)
  // v2's query is slow (a dirty-rate measurement on a loaded host): its intent goes out at tick 30,
  // tgt-c grants but never reports ready, so v2's own prepare wait would last until tick 70. v1 is
  // held, ready on tgt-b, and gives up at the group's deadline: its start (0) + prepareTimeoutTicks
  // (40) + intentTimeoutTicks (20).
  w.defer = (host, c) => host === 'src' && c.kind === 'query' && c.vm === 'v2'
  const src = w.machines.get('src')!
  const orig = src.onMessage.bind(src)
  src.onMessage = (from, b) => { if (!(from === 'tgt-c' && b.type === 'incomingReady')) orig(from, b) }
  startGroup(w)
  t.same(sources(w).sort(), ['v1:reserved', 'v2:proposed'], 'v1 held, v2 being read')
  advance(w, 30)
  w.defer = null
  release(w)
  t.same(sources(w).sort(), ['v1:reserved', 'v2:reserved'], 'v2 granted at tick 30')
  advance(w, 29)
  t.same(sources(w).sort(), ['v1:reserved', 'v2:reserved'], 'still waiting at tick 59')
  advance(w, 1)
  const v1 = [...src.recs.values()].find(r => r.vm === 'v1')!
  t.equal(v1.state, 'aborted', 'v1 gave up at tick 60')
  t.match(v1.reason, /did not all grant in time/, v1.reason)
  t.same(srcStates(w).sort(), ['v1:aborted', 'v2:aborted'], 'the group withdrawn')
  t.same(reserved(w, 'tgt-b'), [], 'tgt-b released')
  t.same(reserved(w, 'tgt-c'), [], 'tgt-c released')
  t.same(migrates(w), [], 'no copy started')
})

t.test('a held move keeps its grant alive past the lease while the group waits, and releases it at the group deadline', async t => {
  const w = world(30)
  w.cut.add('tgt-c') // v2's target never answers
  w.defer = (host, c) => host === 'src' && c.kind === 'query' && c.vm === 'v2' // v2's query never returns
  startGroup(w)
  t.same(sources(w).sort(), ['v1:reserved', 'v2:proposed'], 'v1 held')
  advance(w, 35)
  t.same(reserved(w, 'tgt-b'), ['v1'], 'tgt-b still holds v1 at tick 35, past the 30-tick lease it granted')
  t.ok(w.frames.filter(f => f === 'src>tgt-b migrationProgress').length >= 3, 'the source renewed the lease while v1 waited')
  advance(w, 24)
  t.same(reserved(w, 'tgt-b'), ['v1'], 'still held at tick 59')
  advance(w, 1)
  const v1 = [...w.machines.get('src')!.recs.values()].find(r => r.vm === 'v1')!
  t.equal(v1.state, 'aborted', 'v1 gave up at the group deadline (tick 60: query budget 40 + grant wait 20)')
  t.match(v1.reason, /did not all grant in time/, v1.reason)
  t.ok(w.frames.includes('src>tgt-b migrationAborted'), 'released explicitly')
  t.same(reserved(w, 'tgt-b'), [], 'tgt-b released')
  const tb = [...w.machines.get('tgt-b')!.recs.values()][0]
  t.notMatch(tb?.reason ?? '', /lease expired/, `released by the source, not by its lease: ${tb?.reason ?? ''}`)
  t.same(migrates(w), [], 'no copy started')
})

t.test('a crashed source: each target drops its unused grant at lease expiry', async t => {
  const w = world()
  w.cut.add('tgt-c')
  startGroup(w)
  t.same(reserved(w, 'tgt-b'), ['v1'], 'tgt-b granted and prepared')
  w.down.add('src') // the source dies holding v1 (its copy never started)
  w.cut.delete('tgt-c')
  advance(w, 29)
  t.same(reserved(w, 'tgt-b'), ['v1'], 'held while the lease runs (30 ticks)')
  advance(w, 5)
  t.same(reserved(w, 'tgt-b'), [], 'the grant expired on tgt-b by itself')
  const tb = [...w.machines.get('tgt-b')!.recs.values()][0]
  t.equal(tb?.state, 'aborted', `tgt-b aborted: ${tb?.reason ?? ''}`)
  t.ok(w.log.includes('tgt-b killIncoming v1'), 'its incoming VM, never run, was killed')
  t.same(migrates(w), [], 'no copy ever started')
})

t.test('a source restarted before the copies: every member aborts and releases its target', async t => {
  const w = world()
  w.cut.add('tgt-c')
  startGroup(w)
  const recs = [...w.machines.get('src')!.recs.values()].map(r => ({ ...r }))
  t.ok(recs.every(r => r.group === recs[0]?.group && r.group !== undefined), 'both records journal the group')
  // The source restarts from its records (journal): a new machine over the same state.
  const s = w.states.get('src')!
  s.pending = emptyReady()
  const m = new MigrationMachine(s, cfg(), recs, false)
  m.capacity = CAP
  m.localVms = w.machines.get('src')!.localVms
  w.machines.set('src', m)
  w.cut.delete('tgt-c')
  pump(w)
  t.same(srcStates(w).sort(), ['v1:aborted', 'v2:aborted'], 'both aborted after the restart')
  t.same(reserved(w, 'tgt-b'), [], 'tgt-b released')
  t.same(migrates(w), [], 'no copy started')
})

/** HA hooks on the source: every VM protected, handovers granted when `granted` holds the VM. */
function protect (w: World, granted: Set<string>, ended: string[]): void {
  w.machines.get('src')!.ha = {
    protects: () => true,
    incomingStart: () => null,
    handoverStart: () => null,
    handoverGranted: vm => granted.has(vm),
    handoverEnd: (vm, outcome) => { ended.push(`${vm}:${outcome}`) },
    staleCopy: () => {},
    timeoutTicks: 10
  }
}

t.test('protected VMs: the copies start once every target is ready and every handover granted', async t => {
  const w = world()
  const granted = new Set(['v1'])
  const ended: string[] = []
  protect(w, granted, ended)
  startGroup(w)
  advance(w, 3)
  t.same(migrates(w), [], 'v2\'s handover not granted yet: no copy, v1\'s neither')
  granted.add('v2')
  advance(w, 1)
  t.same(migrates(w).sort(), ['src migrate v1', 'src migrate v2'], 'both copies started together')
})

t.test('protected VMs: a handover that no majority grants in time withdraws the group', async t => {
  const w = world()
  const granted = new Set(['v1'])
  const ended: string[] = []
  protect(w, granted, ended)
  startGroup(w)
  advance(w, 12) // past the handover timeout (10 ticks)
  t.same(migrates(w), [], 'no copy started')
  t.same(srcStates(w).sort(), ['v1:aborted', 'v2:aborted'], 'both aborted')
  const v2 = [...w.machines.get('src')!.recs.values()].find(r => r.vm === 'v2')!
  t.match(v2.reason, /HA handover/, v2.reason)
  t.same(ended.sort(), ['v1:aborted', 'v2:aborted'], 'HA told both handovers ended aborted (v1\'s granted claim goes back)')
  t.same(reserved(w, 'tgt-b'), [], 'tgt-b released')
  t.same(reserved(w, 'tgt-c'), [], 'tgt-c released')
})

t.test('moves outside a consolidation keep their own reservation', async t => {
  const w = world()
  w.machines.get('tgt-c')!.setDraining(true)
  const m = w.machines.get('src')!
  m.start('v1', 'tgt-b', 'overload')
  m.start('v2', 'tgt-c', 'overload')
  pump(w)
  t.same(srcStates(w).sort(), ['v1:copying', 'v2:aborted'], 'v1 copies although v2 was refused')
  t.same(migrates(w), ['src migrate v1'])
})
