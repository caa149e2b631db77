// Goal: a migration with storage whose first disk pass would outlast migration.maxDiskCopySeconds
// is refused before anything is copied, with the estimate as its reason; one within the limit
// goes on to the target. The estimate is the disks' allocated bytes (as the driver measured them)
// over the link's bandwidth (here the host's 1000 Mbit/s NIC: 119.2 MiB/s).
// Method: one AgentCore with a live peer b; the operator moves g1 (local disks) to b; the driver's
// measuring query answers with the disks' allocation.
import t from 'tap'
import { AgentCore } from '../../../agent/core/agent-core.js'
import { localTestCoreConfig } from '../../../agent/core/config.js'
import { defaultMigrationConfig } from '../../../agent/core/migration/migration-config.js'
import type { DriverCommand, DriverResult } from '../../../agent/core/migration/migration-state.js'
import type { HostSample } from '../../../agent/core/types.js'

const GiB = 1024 ** 3
const sample: HostSample = {
  cpuUtil: 0.2, memUsedMiB: 1024, netMbps: 10,
  capacity: { cpuCores: 8, cpuMipsPerCore: 1000, memMiB: 16384, netMbps: 1000 },
  vms: [{ id: 'g1', vcpus: 1, memMiB: 512, cpuUtil: 0.1, memUsedMiB: 256, state: 'running' }]
}

function moveWithDisk (allocatedBytes: number, maxDiskCopySeconds: number): { state: string, reason: string, sentIntent: boolean } {
  const core = new AgentCore({
    self: 'a', name: 'a', addr: 'a:1', config: localTestCoreConfig(), seed: 1, seeds: [],
    restored: { incarnation: 1, reportSeqCeiling: 0, draining: false, migrations: [], members: [{ id: 'b', name: 'b', addr: 'b:1', incarnation: 1, state: 'alive' }] },
    migration: { ...defaultMigrationConfig(), autoBalance: false, maxDiskCopySeconds }
  })
  core.step({ type: 'hostSample', sample })
  core.step({ type: 'operatorMigrate', vm: 'g1', to: 'b', withStorage: true })
  const answer = (c: DriverCommand): DriverResult => c.kind === 'query'
    ? { ok: true, kind: 'query', query: { presence: 'running', migration: 'none', spec: { vcpus: 1, memMiB: 512, extraJson: '{}' }, dirtyRateBytesPerS: 0, accel: 'kvm', disks: 'local', canMoveStorage: true, diskAllocatedBytes: allocatedBytes, diskWriteBytesPerS: 0, diskWriteSizeBytes: 0 } }
    : { ok: true, kind: c.kind } as DriverResult
  let sentIntent = false
  for (let tick = 0; tick < 5; tick++) {
    core.tick()
    for (let rd = core.ready(); rd !== null; rd = core.ready()) {
      if (rd.send.some(s => s.to === 'b' && s.envelope.body.type === 'migrationIntent')) sentIntent = true
      const cmds = rd.driver
      core.advance(rd)
      for (const c of cmds) core.step({ type: 'driverResult', command: c, result: answer(c) })
    }
  }
  const r = core.migrations().find(m => m.vm === 'g1')
  return { state: r?.state ?? 'none', reason: r?.reason ?? '', sentIntent }
}

t.test('a disk copy longer than the limit is refused before anything is copied', async t => {
  // 20 GiB at 119.2 MiB/s: about 172 s.
  const r = moveWithDisk(20 * GiB, 120)
  t.equal(r.state, 'aborted')
  t.match(r.reason, /the disk copy would take about 172 s \(20480 MiB at 119\.2 MiB\/s\), above migration\.maxDiskCopySeconds \(120 s\)/, r.reason)
  t.notOk(r.sentIntent, 'the target never heard of it')
})

t.test('within the limit it goes on to the target', async t => {
  const r = moveWithDisk(20 * GiB, 3600)
  t.not(r.state, 'aborted', `state ${r.state} ${r.reason}`)
  t.ok(r.sentIntent, 'the target is asked')
})

t.test('the limit must be positive', async t => {
  t.throws(() => moveWithDisk(GiB, 0), /maxDiskCopySeconds must be a positive number/)
})
