// Goal: a restarted source never resumes a paused copy that its migration judged stale, because a
// later record of the same VM (refused before it reached the target) asks for a cleanup. Found by
// the simulator (randomFaultRun SEED=20271305: an unprotected VM resumed from a copy older than
// what had run on the target, S1).
// Method: one AgentCore restored with two finished source records of g1: the older reached the
// target and was aborted as stale (mayHaveRun), the newer was refused before copying. The driver
// shows g1 paused after a completed migration. The same restart with only a record that reached the
// target and may not have run there does resume (R2's cleanup redone).
import t from 'tap'
import { AgentCore } from '../../../agent/core/agent-core.js'
import { localTestCoreConfig } from '../../../agent/core/config.js'
import { defaultMigrationConfig } from '../../../agent/core/migration/migration-config.js'
import { randomFaultRun } from '../../../agent/sim/scenarios.js'
import type { DriverCommand, DriverResult, MigrationRecord } from '../../../agent/core/migration/migration-state.js'

const base: MigrationRecord = {
  id: 'a-1-4', vm: 'g1', role: 'source', source: 'a', target: 'b', state: 'aborted', cause: 'operator',
  spec: { vcpus: 1, memMiB: 256, extraJson: '{}' }, cpuDemandMips: 0, createdTick: 10, updatedTick: 30,
  leaseExpiresTick: 0, uri: 'tcp:b:1', mode: 'precopy', downtimeLimitMs: 100, timeoutMs: 60_000,
  progress: null, reason: 'the paused copy here is older than what may have run there: not resumed', durationTicks: 0
}

function restartWith (records: MigrationRecord[]): string[] {
  const core = new AgentCore({
    self: 'a', name: 'a', addr: 'a:1', config: localTestCoreConfig(), seed: 1, seeds: [],
    restored: { incarnation: 3, reportSeqCeiling: 0, draining: false, migrations: records, members: [{ id: 'b', name: 'b', addr: 'b:1', incarnation: 1, state: 'alive' }] },
    migration: { ...defaultMigrationConfig(), autoBalance: false }
  })
  const answer = (c: DriverCommand): DriverResult => c.kind === 'query'
    ? { ok: true, kind: 'query', query: { presence: 'paused', migration: 'completed', spec: base.spec, dirtyRateBytesPerS: 0, accel: 'tcg' } }
    : { ok: true, kind: c.kind } as DriverResult
  const kinds: string[] = []
  for (let tick = 0; tick < 20; tick++) {
    core.tick()
    for (let rd = core.ready(); rd !== null; rd = core.ready()) {
      const cmds = rd.driver
      core.advance(rd)
      for (const c of cmds) { kinds.push(`${c.kind}:${c.mig}`); core.step({ type: 'driverResult', command: c, result: answer(c) }) }
    }
  }
  return kinds
}

t.test('a record refused before copying does not resume a copy an older record judged stale', async t => {
  const stale: MigrationRecord = { ...base, mayHaveRun: true }
  const refused: MigrationRecord = { ...base, id: 'a-2-5', createdTick: 20, uri: null, mode: null, reason: 'VM g1 is already migrating' }
  const kinds = restartWith([stale, refused])
  t.notOk(kinds.some(k => k.startsWith('resume')), `no resume (driver commands: ${kinds.join(', ') || 'none'})`)
})

t.test('the record that paused the VM and may not have run there still redoes its resume', async t => {
  const aborted: MigrationRecord = { ...base, reason: 'migration cancelled; the VM is paused on the source' }
  const kinds = restartWith([aborted])
  t.ok(kinds.includes('resume:a-1-4'), `resumed by its own record (driver commands: ${kinds.join(', ')})`)
})

t.test('the simulator run that found it now ends safe', async t => {
  const r = randomFaultRun(20271305, { migrations: 0.12 })
  t.equal(r.violation, null, r.violation ?? 'no violation')
})
