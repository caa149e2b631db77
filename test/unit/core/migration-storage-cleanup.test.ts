// Goal: the migration machine cleans up after a move with storage. A target whose move aborted
// before its guest ran there asks its driver to delete the images it created (dropImages), only
// after the incoming copy is killed or found gone, also when it restarts with the record already
// aborted; never when the guest may have run there (mayHaveRun: the images may hold the newest
// disk), nor for a move without storage. A source whose move with storage committed asks its
// driver to set the images the VM left aside (stopSource with retireDisks), also after a restart
// (libvirt has already removed the source domain: the VM is absent here).
// Method: one AgentCore restored with one record, its driver commands answered as the libvirt
// driver answers them, a peer's MigrationAborted/MigrationCommitted injected as received frames.
import t from 'tap'
import { AgentCore } from '../../../agent/core/agent-core.js'
import { localTestCoreConfig } from '../../../agent/core/config.js'
import { defaultMigrationConfig } from '../../../agent/core/migration/migration-config.js'
import type { Body } from '../../../agent/core/messages.js'
import type { HostSample } from '../../../agent/core/types.js'
import type { DriverCommand, DriverResult, MigrationRecord, VmPresence } from '../../../agent/core/migration/migration-state.js'

const base: MigrationRecord = {
  id: 'a-1-1', vm: 'g1', role: 'target', source: 'a', target: 'b', state: 'copying', cause: 'operator',
  spec: { vcpus: 1, memMiB: 256, extraJson: '{}' }, cpuDemandMips: 0, createdTick: 10, updatedTick: 12,
  leaseExpiresTick: 1000, uri: 'libvirt-p2p:?dest=x', mode: 'precopy', downtimeLimitMs: 100, timeoutMs: 60_000,
  progress: null, reason: '', durationTicks: 0, storage: true, nbd: 'libvirt:copy-storage-all'
}

interface Run { kinds: string[], cmds: DriverCommand[], rec: MigrationRecord | undefined, sent: Body[] }

const sample: HostSample = {
  cpuUtil: 0.1, memUsedMiB: 512, netMbps: 10,
  capacity: { cpuCores: 8, cpuMipsPerCore: 1000, memMiB: 16384, netMbps: 1000 },
  vms: []
}

/**
 * Runs a core that is `self` with `rec` restored (or, with `live`, none: `inject` then starts the
 * move); `presence` is what queries find (and a kill finds: 'absent' answers VM_NOT_FOUND);
 * `inject` frames arrive at tick 2, `later` ones at tick 6.
 */
function run (self: 'a' | 'b', rec: MigrationRecord, presence: VmPresence, inject: Body[] = [], opts: { live?: boolean, later?: Body[] } = {}): Run {
  const peer = self === 'a' ? 'b' : 'a'
  const core = new AgentCore({
    self, name: self, addr: `${self}:1`, config: localTestCoreConfig(), seed: 1, seeds: [],
    restored: { incarnation: 1, reportSeqCeiling: 0, draining: false, migrations: opts.live === true ? [] : [rec], members: [{ id: peer, name: peer, addr: `${peer}:1`, incarnation: 1, state: 'alive' }] },
    migration: { ...defaultMigrationConfig(), autoBalance: false }
  })
  core.step({ type: 'hostSample', sample })
  let here = presence
  const answer = (c: DriverCommand): DriverResult => {
    switch (c.kind) {
      case 'query': return { ok: true, kind: 'query', query: { presence: here, migration: 'none', spec: rec.spec, dirtyRateBytesPerS: 0, accel: 'tcg' } }
      case 'killIncoming':
        if (here === 'absent') return { ok: false, kind: c.kind, code: 'VM_NOT_FOUND', message: 'gone' }
        here = 'absent'
        return { ok: true, kind: c.kind }
      case 'prepareIncoming': here = 'incoming'; return { ok: true, kind: c.kind, uri: 'libvirt-p2p:?x', nbd: 'libvirt:copy-storage-all' }
      case 'stopSource': return here === 'absent' ? { ok: false, kind: c.kind, code: 'VM_NOT_FOUND', message: 'gone' } : { ok: true, kind: c.kind }
      default: return { ok: true, kind: c.kind } as DriverResult
    }
  }
  const kinds: string[] = []
  const cmds: DriverCommand[] = []
  const sent: Body[] = []
  for (let tick = 0; tick < 40; tick++) {
    if (tick === 6) for (const body of opts.later ?? []) core.step({ type: 'receive', from: peer, envelope: { protocolMin: 1, protocolMax: 1, protocolCur: 1, from: peer, incarnation: 1, lamport: 1, body, gossip: [] } })
    if (tick === 6 && opts.live === true && presence === 'absent') here = 'absent' // libvirt removed the failed incoming domain
    if (tick === 2) for (const body of inject) core.step({ type: 'receive', from: peer, envelope: { protocolMin: 1, protocolMax: 1, protocolCur: 1, from: peer, incarnation: 1, lamport: 1, body, gossip: [] } })
    core.tick()
    for (let rd = core.ready(); rd !== null; rd = core.ready()) {
      const out = rd.driver.filter(c => c.mig === rec.id)
      for (const m of rd.send) if (m.to === peer) sent.push(m.envelope.body)
      core.advance(rd)
      for (const c of out) { kinds.push(c.kind); cmds.push(c); core.step({ type: 'driverResult', command: c, result: answer(c) }) }
    }
  }
  return { kinds, cmds, rec: core.migrations().find(m => m.id === rec.id), sent }
}

const intent: Body = { type: 'migrationIntent', id: base.id, vm: 'g1', vcpus: 1, memMiB: 256, extraJson: '{}', cpuDemandMips: 0, withStorage: true }
const aborted: Body = { type: 'migrationAborted', id: base.id, reason: 'hypervisor: migration failed' }

t.test('target: the source aborts the copy; the images go after the incoming copy', async t => {
  const r = run('b', base, 'incoming', [intent], { live: true, later: [aborted] })
  t.equal(r.rec?.state, 'aborted')
  t.notOk(r.rec?.mayHaveRun)
  t.same(r.kinds, ['prepareIncoming', 'killIncoming', 'dropImages'], `prepare, kill, then drop (${r.kinds.join(', ')})`)
})

t.test('target: the copy is already gone (libvirt removed it); the images go', async t => {
  const r = run('b', base, 'absent', [intent], { live: true, later: [aborted] })
  t.equal(r.rec?.state, 'aborted')
  t.same(r.kinds, ['prepareIncoming', 'killIncoming', 'dropImages'], `the kill finds nothing; the drop follows (${r.kinds.join(', ')})`)
})

t.test('target: restarted in copying with the incoming copy still there: killed, then the images go', async t => {
  const r = run('b', base, 'incoming')
  t.equal(r.rec?.state, 'aborted')
  t.same(r.kinds, ['query', 'killIncoming', 'dropImages'], r.kinds.join(', '))
})

t.test('target restarted with the record aborted: the cleanup is redone', async t => {
  const absent = run('b', { ...base, state: 'aborted', reason: 'x' }, 'absent')
  t.same(absent.kinds, ['query', 'dropImages'], 'no copy here: the images go')
  const incoming = run('b', { ...base, state: 'aborted', reason: 'x' }, 'incoming')
  t.same(incoming.kinds, ['query', 'killIncoming', 'dropImages'], 'an incoming copy is still here: killed first, then the images go')
})

t.test('target restarted mid-prepare: aborts and drops what it may have created', async t => {
  const r = run('b', { ...base, state: 'preparing', uri: null }, 'absent')
  t.equal(r.rec?.state, 'aborted')
  t.notOk(r.rec?.mayHaveRun, 'the guest cannot have run here')
  t.ok(r.kinds.includes('dropImages'), `dropImages issued (${r.kinds.join(', ')})`)
})

t.test('never when the guest may have run here, nor without storage, nor when it runs', async t => {
  const lost = run('b', { ...base, state: 'switching' }, 'absent')
  t.equal(lost.rec?.state, 'aborted')
  t.equal(lost.rec?.mayHaveRun, true, 'a copy gone after the transfer may have run here')
  t.notOk(lost.kinds.includes('dropImages'), `its images are kept (${lost.kinds.join(', ')})`)
  const mayHaveRun = run('b', { ...base, state: 'aborted', mayHaveRun: true }, 'absent')
  t.notOk(mayHaveRun.kinds.includes('dropImages'), 'nor after a restart')
  const staleSource = run('b', { ...base, state: 'aborted', mayHaveRun: true }, 'absent', [{ type: 'migrationAborted', id: base.id, reason: 'stale', mayHaveRun: true }])
  t.notOk(staleSource.kinds.includes('dropImages'), 'nor when the source says its own copy is stale')
  const noStorage = run('b', { ...base, storage: false }, 'incoming', [{ type: 'migrationAborted', id: base.id, reason: 'x' }])
  t.ok(noStorage.kinds.includes('killIncoming') && !noStorage.kinds.includes('dropImages'), `a move without storage drops nothing (${noStorage.kinds.join(', ')})`)
  const committed = run('b', { ...base, state: 'switching' }, 'running')
  t.equal(committed.rec?.state, 'committed')
  t.notOk(committed.kinds.includes('dropImages'), 'a guest that runs here keeps its disks')
})

t.test('source: a committed move with storage sets the images it left aside', async t => {
  const src: MigrationRecord = { ...base, role: 'source', state: 'switching' }
  const r = run('a', src, 'paused', [{ type: 'migrationCommitted', id: base.id }])
  t.equal(r.rec?.state, 'committed')
  const stop = r.cmds.find(c => c.kind === 'stopSource')
  t.same(stop, { kind: 'stopSource', mig: base.id, vm: 'g1', retireDisks: true }, 'stopSource with retireDisks')
  const restarted = run('a', { ...src, state: 'committed' }, 'absent')
  t.same(restarted.cmds.filter(c => c.kind !== 'query'), [{ kind: 'stopSource', mig: base.id, vm: 'g1', retireDisks: true }], 'after a restart too, with the source domain gone')
  const running = run('a', { ...src, state: 'committed' }, 'running')
  t.same(running.kinds, ['query'], 'a VM running here again is left alone')
  const memOnly = run('a', { ...src, storage: false }, 'paused', [{ type: 'migrationCommitted', id: base.id }])
  t.same(memOnly.cmds.find(c => c.kind === 'stopSource'), { kind: 'stopSource', mig: base.id, vm: 'g1' }, 'without storage: a plain stop')
})

t.test('target: gave up on a copy it could not see; the source then says it runs the VM: the images go', async t => {
  // libvirt had not started the incoming domain when the target's lease ran out: absent in copying.
  const r = run('b', { ...base, state: 'aborted', mayHaveRun: true, reason: 'no incoming copy here' }, 'absent', [aborted])
  t.same(r.kinds, ['query', 'dropImages'], r.kinds.join(', '))
  t.equal(r.rec?.mayHaveRun, false, 'the record no longer says the guest may have run here')
  t.match(r.rec?.reason ?? '', /the source runs the VM/)
})

t.test('source, aborted, hears a target that kept its images (it could not see its copy): says again that it runs the VM', async t => {
  const src: MigrationRecord = { ...base, role: 'source', state: 'aborted', reason: 'hypervisor: migration failed' }
  const kept: Body = { type: 'migrationAborted', id: base.id, reason: 'no incoming copy here', mayHaveRun: true }
  const r = run('a', src, 'running', [kept])
  t.same(r.sent.filter(b => b.type === 'migrationAborted'), [{ type: 'migrationAborted', id: base.id, reason: 'hypervisor: migration failed' }], 'one plain MigrationAborted back')
  const stale = run('a', { ...src, mayHaveRun: true }, 'paused', [kept])
  t.same(stale.sent.filter(b => b.type === 'migrationAborted'), [], 'a source whose own copy is stale says nothing (the images may hold the VM\'s disk)')
  const noStorage = run('a', { ...src, storage: false }, 'running', [kept])
  t.same(noStorage.sent.filter(b => b.type === 'migrationAborted'), [], 'nor for a move without storage')
})
