/**
 * Carries out the core's driver commands on a hypervisor driver and turns the outcome into a
 * DriverResult. Never throws: a DriverError (or anything else) becomes `{ ok: false, code }`.
 */
import type {
  DriverCommand, DriverQueryResult, DriverResult, HaCommand, HaSource, VmId, VmPresence
} from '../core/index.js'
import type { MigratingDriver } from '../ports/migrating-driver.js'
import type { HypervisorDriver, VmSpec } from '../ports/hypervisor-driver.js'
import { DriverError, errorCode } from '../lib/errors.js'

export interface DriverExecutorInit {
  /** Address (host) the incoming migrations listen on; the port is chosen per migration. */
  migrationListenHost: string
}

export type DriverExecutor = (c: DriverCommand, signal: AbortSignal) => Promise<DriverResult>

/**
 * A driver the migration machine can use: the migration calls, plus what recovery needs (the QEMU,
 * libvirt and simulated drivers). describe() names run states as QEMU's query-status does ('running',
 * 'inmigrate', ...) and resolves with null when the VM is not on this host; killIfNotRunning()
 * rejects with VM_RUNNING rather than kill a guest that runs here.
 */
export interface RecoverableMigratingDriver extends MigratingDriver {
  readonly accel: 'kvm' | 'tcg'
  describe (id: string, signal?: AbortSignal): Promise<{ runStatus: string, migration: string, spec: VmSpec } | null>
  /** Whether VM `id`'s disks are local (move with it), shared, or absent; drivers without it report none. */
  diskLocality? (spec: VmSpec): 'none' | 'shared' | 'local'
  /** Why the VM's disks cannot be moved from here, or null. */
  storageProblem? (spec: VmSpec): string | null
  resume (id: string, signal?: AbortSignal): Promise<void>
  killIfNotRunning (id: string, signal?: AbortSignal): Promise<void>
}

/** Whether `driver` can take part in migrations (see RecoverableMigratingDriver). */
export function canMigrate (driver: HypervisorDriver): driver is RecoverableMigratingDriver {
  const d = driver as Partial<RecoverableMigratingDriver>
  return typeof d.describe === 'function' && typeof d.resume === 'function' && typeof d.killIfNotRunning === 'function' &&
    typeof d.prepareIncoming === 'function' && typeof d.migrate === 'function' && typeof d.progress === 'function' && (d.accel === 'kvm' || d.accel === 'tcg')
}

/** Drivers that can measure a guest for the convergence plan (dirty rate: QEMU and libvirt; resident memory: QEMU). */
interface MeasuringDriver {
  measureDirtyRate?: (id: string, opts?: { calcTimeS?: number }, signal?: AbortSignal) => Promise<number>
  measureDiskWrites?: (id: string, ms?: number, signal?: AbortSignal) => Promise<{ bytesPerS: number, writeSizeBytes: number }>
  residentGuestBytes?: (id: string) => number | null
  diskAllocatedBytes?: (id: string, signal?: AbortSignal) => Promise<number | null>
}

/**
 * The guest's dirty rate and resident memory, where the driver can measure them. A failed
 * measurement leaves the rate unmeasured (the plan then says so) rather than failing the query.
 */
async function measureGuest (driver: MeasuringDriver, vm: string, signal: AbortSignal): Promise<Partial<DriverQueryResult>> {
  const out: Partial<DriverQueryResult> = {}
  if (typeof driver.residentGuestBytes === 'function') {
    const r = driver.residentGuestBytes(vm)
    if (r !== null && r > 0) out.residentBytes = r
  }
  const disk = typeof driver.measureDiskWrites === 'function' ? driver.measureDiskWrites(vm, 1000, signal).catch(() => null) : Promise.resolve(null)
  if (typeof driver.measureDirtyRate === 'function') {
    try {
      out.dirtyRateBytesPerS = await driver.measureDirtyRate(vm, { calcTimeS: 1 }, signal)
      out.dirtyRateMeasured = true
    } catch { /* unmeasured */ }
  }
  const w = await disk
  if (w !== null) { out.diskWriteBytesPerS = w.bytesPerS; out.diskWriteSizeBytes = w.writeSizeBytes }
  if (typeof driver.diskAllocatedBytes === 'function') {
    const a = await driver.diskAllocatedBytes(vm, signal).catch(() => null)
    if (a !== null && a >= 0) out.diskAllocatedBytes = a
  }
  return out
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
    // A driver without the migration calls: report what it has, refuse the rest.
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
      const presence = presenceOf(d.runStatus)
      const query: DriverQueryResult = { presence, migration: d.migration, spec: { vcpus, memMiB, extraJson: JSON.stringify(extra ?? {}) }, dirtyRateBytesPerS: 0, accel: q.accel }
      if (typeof q.diskLocality === 'function') query.disks = q.diskLocality(d.spec)
      if (typeof q.mirrorDisks === 'function') query.canMoveStorage = true
      const problem = typeof q.storageProblem === 'function' && query.disks === 'local' ? q.storageProblem(d.spec) : null
      if (problem !== null) query.storageProblem = problem
      if (c.measure === true && presence === 'running') Object.assign(query, await measureGuest(q as MeasuringDriver, c.vm, signal))
      return { ok: true, kind: 'query', query }
    }
    case 'prepareIncoming': {
      let extra: Record<string, unknown> = {}
      try { extra = JSON.parse(c.spec.extraJson) as Record<string, unknown> } catch { /* empty extra */ }
      const storage = c.storage === true
      if (storage && typeof q.mirrorDisks !== 'function') throw Object.assign(new Error(`the ${q.kind} driver cannot receive disks`), { code: 'DRIVER_FAILED' })
      const r = await q.prepareIncoming({ id: c.vm, vcpus: c.spec.vcpus, memMiB: c.spec.memMiB, extra }, `${init.migrationListenHost}:0`, storage ? { postcopy: true, storage, migration: c.mig } : { postcopy: true }, signal)
      return r.nbd !== undefined ? { ok: true, kind: 'prepareIncoming', uri: r.uri, nbd: r.nbd } : { ok: true, kind: 'prepareIncoming', uri: r.uri }
    }
    case 'mirror':
      if (typeof q.mirrorDisks !== 'function') throw Object.assign(new Error(`the ${q.kind} driver cannot move disks`), { code: 'DRIVER_FAILED' })
      await q.mirrorDisks(c.vm, c.nbd, c.copyMode !== undefined ? { copyMode: c.copyMode } : {}, signal)
      return { ok: true, kind: 'mirror' }
    case 'migrate':
      await q.migrate(c.vm, c.uri, { mode: c.params.mode, maxBandwidthBytes: c.params.maxBandwidthBytes, downtimeLimitMs: c.params.downtimeLimitMs, autoConverge: false, xbzrle: false, multifd: 0, ...(c.params.storage === true ? { storage: true } : {}), ...(c.params.maxDirtySyncs !== undefined ? { maxDirtySyncs: c.params.maxDirtySyncs } : {}) }, signal)
      return { ok: true, kind: 'migrate' }
    case 'progress': {
      const p = await q.progress(c.vm, signal)
      const view: DriverResult & { kind: 'progress' } = { ok: true, kind: 'progress', progress: { status: p.status, totalTimeMs: p.totalTimeMs, transferredBytes: p.transferredBytes, remainingBytes: p.remainingBytes, dirtySyncCount: p.dirtySyncCount, downtimeMs: p.downtimeMs } }
      if (p.errorDesc !== null && (p.status === 'failed' || p.status === 'cancelled')) view.progress.error = p.errorDesc
      if (p.disk !== undefined) view.progress.disk = { ready: p.disk.ready, totalBytes: p.disk.totalBytes, doneBytes: p.disk.doneBytes, sentBytes: p.disk.sentBytes, error: p.disk.error }
      return view
    }
    case 'setDowntime': await q.setDowntimeLimit(c.vm, c.downtimeLimitMs, signal); return { ok: true, kind: 'setDowntime' }
    case 'startPostcopy': await q.startPostcopy(c.vm, signal); return { ok: true, kind: 'startPostcopy' }
    case 'cancel': await q.cancel(c.vm, signal); return { ok: true, kind: 'cancel' }
    case 'stopSource': {
      // libvirt has already removed a source whose migration completed: the images it left are
      // set aside all the same.
      let gone: unknown = null
      try { await q.killIfNotRunning(c.vm, signal) } catch (err) {
        if (c.retireDisks !== true || errorCode(err) !== 'VM_NOT_FOUND') throw err
        gone = err
      }
      if (c.retireDisks === true && typeof q.retireDepartedDisks === 'function') await q.retireDepartedDisks(c.vm, signal)
      if (gone !== null) throw gone
      return { ok: true, kind: 'stopSource' }
    }
    case 'dropImages':
      if (typeof q.dropIncomingImages === 'function') await q.dropIncomingImages(c.vm, c.mig, signal)
      return { ok: true, kind: 'dropImages' }
    case 'resume': await q.resume(c.vm, signal); return { ok: true, kind: 'resume' }
    case 'killIncoming': {
      // A copy paused by a migration, with no incoming job left, is one whose transfer completed
      // here (libvirt resumes it when its finish phase ends): it may hold the guest's newest state,
      // and the source's copy may already be gone. An agent restarted in that window must not
      // kill it; refused, the machine asks again (onKillResult) and commits once it runs.
      const d = await q.describe(c.vm, signal)
      if (d !== null && d.runStatus === 'postmigrate') throw new DriverError('VM_RUNNING', `vm ${c.vm}: paused by a completed incoming migration; it may hold the guest's newest state, not killing it`)
      await q.killIfNotRunning(c.vm, signal)
      return { ok: true, kind: 'killIncoming' }
    }
  }
}

/** The outcome of an HA command, as the core's haDriverResult input carries it. */
export type HaDriverOutcome = { ok: true } | { ok: false, code: string, message: string }

export type HaDriverExecutor = (c: HaCommand, signal: AbortSignal) => Promise<HaDriverOutcome>

export interface HaDriverInit {
  /** The spec a protected VM boots from: its configured definition, or the image (null: unknown VM). */
  spec: (vm: VmId, source: HaSource) => VmSpec | null
}

/** Optional driver calls HA uses when a driver has them (the QEMU driver has all three). */
interface HaCapableDriver extends HypervisorDriver {
  describe?: (id: string, signal?: AbortSignal) => Promise<{ runStatus: string } | null>
  resume?: (id: string, signal?: AbortSignal) => Promise<void>
  pause?: (id: string, signal?: AbortSignal) => Promise<void>
  /** Immediate hard stop (SIGKILL of the VM process). */
  kill?: (id: string) => Promise<void>
}

/**
 * Carries out HA commands on the hypervisor driver; never throws.
 *   haStart boot    start from the configured spec; a stopped or paused leftover copy of this
 *                   host is destroyed first; a copy that already runs here counts as started.
 *   haStart resume  continue the paused copy.
 *   haStop stop, destroy  kill the VM at once (a fence must not wait for a guest shutdown);
 *                   a VM that is not here is stopped already.
 *   haStop pause    pause it; a driver that cannot pause kills it (stronger, and safe).
 */
export function haDriverExecutor (driver: HypervisorDriver, init: HaDriverInit): HaDriverExecutor {
  const d = driver as HaCapableDriver
  const present = async (vm: VmId, signal: AbortSignal): Promise<string | null> => {
    if (typeof d.describe === 'function') return (await d.describe(vm, signal))?.runStatus ?? null
    const v = (await driver.list(signal)).find(x => x.id === vm)
    return v === undefined ? null : v.state
  }
  const kill = async (vm: VmId, signal: AbortSignal): Promise<void> => {
    if (typeof d.kill === 'function') { await d.kill(vm); return }
    try { await driver.stop(vm, signal) } catch (err) { if (errorCode(err) !== 'VM_NOT_FOUND') throw err }
  }
  const run = async (c: HaCommand, signal: AbortSignal): Promise<void> => {
    if (c.kind === 'haStart') {
      if (c.mode === 'resume') {
        if (typeof d.resume !== 'function') throw Object.assign(new Error(`the ${driver.kind} driver cannot resume`), { code: 'DRIVER_FAILED' })
        await d.resume(c.vm, signal)
        return
      }
      const spec = init.spec(c.vm, c.source)
      if (spec === null) throw Object.assign(new Error(`vm ${c.vm}: no HA definition on this host`), { code: 'DRIVER_FAILED' })
      const st = await present(c.vm, signal)
      if (st === 'running') return
      if (st !== null) await kill(c.vm, signal)
      await driver.start(spec, signal)
      return
    }
    if (c.mode === 'pause' && typeof d.pause === 'function') {
      if ((await present(c.vm, signal)) === null) return
      await d.pause(c.vm, signal)
      return
    }
    await kill(c.vm, signal)
  }
  return async (c, signal) => {
    try {
      await run(c, signal)
      return { ok: true }
    } catch (err) {
      return { ok: false, code: errorCode(err) ?? 'DRIVER_FAILED', message: err instanceof Error ? err.message : String(err) }
    }
  }
}
