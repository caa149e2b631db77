// Goal: a source restarted in `copying` resolves its migration when the hypervisor, after the
// cancel, shows no migration at all. libvirt keeps no statistics of a job cancelled after the
// agent restarted (the driver has lost its own record of the `virsh migrate` it ran), so its
// progress() then says 'none' for ever; the source must not poll on (and renew the target's lease
// with every sample) but query the hypervisor and abort, the guest running here.
// Method: one AgentCore restored with a source record in `copying`, its driver commands answered
// as the libvirt driver answered them in the integration test (migration-libvirt.test.ts, kill -9
// of the source agent while libvirtd copies): query 'active' -> cancel ok -> progress 'none' ->
// query 'none', guest running.
import t from 'tap'
import { AgentCore } from '../../../agent/core/agent-core.js'
import { localTestCoreConfig } from '../../../agent/core/config.js'
import { defaultMigrationConfig } from '../../../agent/core/migration/migration-config.js'
import type { DriverCommand, DriverQueryResult, DriverResult, MigrationRecord } from '../../../agent/core/migration/migration-state.js'

const record: MigrationRecord = {
  id: 'a-1-1', vm: 'g1', role: 'source', source: 'a', target: 'b', state: 'copying', cause: 'operator',
  spec: { vcpus: 1, memMiB: 256, extraJson: '{}' }, cpuDemandMips: 0, createdTick: 10, updatedTick: 12,
  leaseExpiresTick: 70, uri: 'libvirt-p2p:?dest=x', mode: 'precopy', downtimeLimitMs: 100, timeoutMs: 60_000,
  progress: null, reason: '', durationTicks: 0
}

t.test('a restarted source whose cancelled copy left no trace in the hypervisor aborts', t => {
  const core = new AgentCore({
    self: 'a', name: 'a', addr: 'a:1', config: localTestCoreConfig(), seed: 1, seeds: [],
    restored: {
      incarnation: 1, reportSeqCeiling: 0, draining: false, migrations: [record],
      members: [{ id: 'b', name: 'b', addr: 'b:1', incarnation: 1, state: 'alive' }]
    },
    migration: { ...defaultMigrationConfig(), autoBalance: false }
  })
  const query = (migration: string): DriverQueryResult => ({ presence: 'running', migration, spec: record.spec, dirtyRateBytesPerS: 0, accel: 'tcg' })
  let cancelled = false
  const answer = (c: DriverCommand): DriverResult => {
    switch (c.kind) {
      case 'query': return { ok: true, kind: 'query', query: query(cancelled ? 'none' : 'active') }
      case 'cancel': cancelled = true; return { ok: true, kind: 'cancel' }
      case 'progress': return { ok: true, kind: 'progress', progress: { status: cancelled ? 'none' : 'active', totalTimeMs: 0, transferredBytes: 0, remainingBytes: 0, dirtySyncCount: 0, downtimeMs: null } }
      default: return { ok: true, kind: c.kind } as DriverResult
    }
  }
  const kinds: string[] = []
  const sent: string[] = []
  for (let tick = 0; tick < 100; tick++) {
    core.tick()
    for (let rd = core.ready(); rd !== null; rd = core.ready()) {
      for (const s of rd.send) if (s.to === 'b') sent.push(s.envelope.body.type)
      const cmds = rd.driver.filter(c => c.mig === record.id)
      core.advance(rd)
      for (const c of cmds) { kinds.push(c.kind); core.step({ type: 'driverResult', command: c, result: answer(c) }) }
    }
  }
  const r = core.migrations().find(m => m.id === record.id)
  t.equal(r?.state, 'aborted', `the record ends aborted (${r?.reason ?? ''}); driver commands: ${kinds.slice(0, 8).join(', ')}${kinds.length > 8 ? `, ... (${kinds.length})` : ''}`)
  t.match(r?.reason ?? '', /runs on the source/, 'because the guest runs here')
  t.ok(sent.includes('migrationAborted'), 'the target is told')
  t.ok(kinds.filter(k => k === 'progress').length <= 2, `no endless polling (${kinds.filter(k => k === 'progress').length} progress samples)`)
  t.end()
})
