/**
 * Carries out the core's driver commands on a hypervisor driver and turns the outcome into a
 * DriverResult. Never throws: a DriverError (or anything else) becomes `{ ok: false, code }`.
 */
import type { DriverCommand, DriverResult, VmPresence } from '../core/migration/migration-state.js'
import type { MigratingDriver } from '../adapters/qemu-driver.js'
import type { HypervisorDriver, VmSpec } from '../ports/hypervisor-driver.js'
import { errorCode } from '../lib/errors.js'

export interface DriverExecutorInit {
  /** Address (host) the incoming migrations listen on; the port is chosen per migration. */
  migrationListenHost: string
}

export type DriverExecutor = (c: DriverCommand, signal: AbortSignal) => Promise<DriverResult>

/**
 * A driver the migration machine can use: the migration calls, plus what recovery needs (the QEMU
 * and libvirt drivers). describe() names run states as QEMU's query-status does ('running',
 * 'inmigrate', ...) and resolves with null when the VM is not on this host; killIfNotRunning()
 * rejects with VM_RUNNING rather than kill a guest that runs here.
 */
export interface RecoverableMigratingDriver extends MigratingDriver {
  readonly accel: 'kvm' | 'tcg'
  describe (id: string, signal?: AbortSignal): Promise<{ runStatus: string, migration: string, spec: VmSpec } | null>
  resume (id: string, signal?: AbortSignal): Promise<void>
  killIfNotRunning (id: string, signal?: AbortSignal): Promise<void>
}

/** Whether `driver` can take part in migrations (see RecoverableMigratingDriver). */
export function canMigrate (driver: HypervisorDriver): driver is RecoverableMigratingDriver {
  const d = driver as Partial<RecoverableMigratingDriver>
  return typeof d.describe === 'function' && typeof d.resume === 'function' && typeof d.killIfNotRunning === 'function' &&
    typeof d.prepareIncoming === 'function' && typeof d.migrate === 'function' && typeof d.progress === 'function' && (d.accel === 'kvm' || d.accel === 'tcg')
}

function presenceOf (runStatus: string): VmPresence {
  if (runStatus === 'running') return 'running'
  if (runStatus === 'inmigrate') return 'incoming'
  return 'paused'
}

export function driverExecutor (driver: HypervisorDriver, init: DriverExecutorInit): DriverExecutor {
  return async (c, signal) => {
    try {
      return await run(driver, init, c, signal)
    } catch (err) {
      const code = errorCode(err) ?? 'DRIVER_FAILED'
      return { ok: false, kind: c.kind, code, message: err instanceof Error ? err.message : String(err) }
    }
  }
}

async function run (driver: HypervisorDriver, init: DriverExecutorInit, c: DriverCommand, signal: AbortSignal): Promise<DriverResult> {
  if (!canMigrate(driver)) {
    // The simulated driver cannot migrate: report what it has, refuse the rest.
    if (c.kind === 'query') {
      const vms = await driver.list(signal)
      const v = vms.find(x => x.id === c.vm)
      return { ok: true, kind: 'query', query: { presence: v === undefined ? 'absent' : 'running', migration: 'none', spec: v === undefined ? null : { vcpus: v.vcpus, memMiB: v.memMiB, extraJson: '{}' }, dirtyRateBytesPerS: 0, accel: 'kvm' } }
    }
    return { ok: false, kind: c.kind, code: 'DRIVER_FAILED', message: `the ${driver.kind} driver cannot migrate` }
  }
  const q = driver
  switch (c.kind) {
    case 'query': {
      const d = await q.describe(c.vm, signal)
      if (d === null) return { ok: true, kind: 'query', query: { presence: 'absent', migration: 'none', spec: null, dirtyRateBytesPerS: 0, accel: q.accel } }
      const { id: _id, vcpus, memMiB, extra } = d.spec
      void _id
      return {
        ok: true,
        kind: 'query',
        query: { presence: presenceOf(d.runStatus), migration: d.migration, spec: { vcpus, memMiB, extraJson: JSON.stringify(extra ?? {}) }, dirtyRateBytesPerS: 0, accel: q.accel }
      }
    }
    case 'prepareIncoming': {
      let extra: Record<string, unknown> = {}
      try { extra = JSON.parse(c.spec.extraJson) as Record<string, unknown> } catch { /* empty extra */ }
      const r = await q.prepareIncoming({ id: c.vm, vcpus: c.spec.vcpus, memMiB: c.spec.memMiB, extra }, `${init.migrationListenHost}:0`, { postcopy: true }, signal)
      return { ok: true, kind: 'prepareIncoming', uri: r.uri }
    }
    case 'migrate':
      await q.migrate(c.vm, c.uri, { mode: c.params.mode, maxBandwidthBytes: c.params.maxBandwidthBytes, downtimeLimitMs: c.params.downtimeLimitMs, autoConverge: false, xbzrle: false, multifd: 0 }, signal)
      return { ok: true, kind: 'migrate' }
    case 'progress': {
      const p = await q.progress(c.vm, signal)
      return { ok: true, kind: 'progress', progress: { status: p.status, totalTimeMs: p.totalTimeMs, transferredBytes: p.transferredBytes, remainingBytes: p.remainingBytes, dirtySyncCount: p.dirtySyncCount, downtimeMs: p.downtimeMs } }
    }
    case 'setDowntime': await q.setDowntimeLimit(c.vm, c.downtimeLimitMs, signal); return { ok: true, kind: 'setDowntime' }
    case 'startPostcopy': await q.startPostcopy(c.vm, signal); return { ok: true, kind: 'startPostcopy' }
    case 'cancel': await q.cancel(c.vm, signal); return { ok: true, kind: 'cancel' }
    case 'stopSource': await q.killIfNotRunning(c.vm, signal); return { ok: true, kind: 'stopSource' }
    case 'resume': await q.resume(c.vm, signal); return { ok: true, kind: 'resume' }
    case 'killIncoming': await q.killIfNotRunning(c.vm, signal); return { ok: true, kind: 'killIncoming' }
  }
}
