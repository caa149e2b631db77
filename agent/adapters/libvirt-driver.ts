/**
 * The libvirt driver: drives libvirtd through `virsh -c <uri>`, the path most operators already
 * use, and implements the same MigratingDriver interface as the QEMU driver.
 *
 * Every call runs one `virsh` process (execFile, no shell) with LC_ALL=C, a deadline and the
 * caller's AbortSignal; its failures become DriverErrors (classifyVirshError()). Outputs are read
 * with small tolerant parsers (domstats --raw, domjobinfo --rawstats, domstate --reason, dominfo)
 * that never throw on odd text: unknown lines are skipped, missing figures read as 0 or null.
 *
 * VMs are libvirt domains named after their VmId. start() creates a transient domain (or defines
 * and starts a persistent one) from a small generated XML, or from `spec.extra.xml` verbatim.
 *
 * Migration is peer-to-peer (`virsh migrate --live --p2p`): the source libvirtd talks to the
 * destination libvirtd itself, so the target side has nothing to start. prepareIncoming() on the
 * target only works out where the data must go and returns it as a target string (see
 * formatMigrationTarget()): the destination's libvirt URI as the source host reaches it, the
 * migration URI and listen address (always given explicitly: libvirt refuses a loopback address
 * it would pick itself), and the path of the serial console log on the destination (a file-backed
 * console cannot keep the source's path when both hosts share a file system). The source's
 * migrate() runs `virsh migrate` in the background, resolves once libvirt has an active job, and
 * progress() reads `domjobinfo --rawstats` until the virsh process ends. After success libvirt has
 * already stopped the source domain (that is its hand-over); stop() then only forgets the job.
 * The completed job's figures (downtime included) are read from the destination; after a
 * post-copy migration libvirt 9.0 keeps none there, so the last figures seen while it ran are
 * reported, without a downtime (measure the pause from the guest instead).
 *
 * A pre-copy with a dirty-sync cap (MigrationParams.maxDirtySyncs, the convergence policy's, set
 * by the agents under TCG; forced to 3 on a TCG host without a padding emulator, see migrate()) is
 * held to it by capSyncs(): libvirt has no such setting, so the driver raises the downtime limit
 * just before the last round allowed ends, and cancels a migration that goes past the cap anyway.
 * (A hybrid migration is held to it by the convergence controller's post-copy switch.)
 *
 * measureDirtyRate() gives the convergence plan the guest's dirty rate, as the QEMU driver's does:
 * QEMU's page sampling, started with `virsh domdirtyrate-calc` and read from `domstats --dirtyrate`.
 *
 * Contract (agent/ports/hypervisor-driver.ts): nothing throws synchronously; failures reject with
 * DriverError (DRIVER_UNREACHABLE, DRIVER_TIMEOUT, VM_NOT_FOUND, DRIVER_FAILED).
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process'
import fs from 'node:fs'
import fsp from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import type { VmId, VmRunState, VmSummary } from '../core/index.js'
import { DriverError, type DriverErrorCode } from '../lib/errors.js'
import type { Logger } from '../ports/logger.js'
import type { VmSpec } from '../ports/hypervisor-driver.js'
import type { BalloonDriver, VmMemoryFacts } from '../ports/memory.js'
import { probeAccel } from './qemu-driver.js'
import type { DiskCopyMode, IncomingOptions, KeptDiskCopy, MigratingDriver, MigrationParams, MigrationProgress, MigrationStatus } from '../ports/migrating-driver.js'

export interface LibvirtDriverInit {
  /** libvirt connection URI of this host, e.g. 'qemu:///system'. */
  uri: string
  /**
   * This host's libvirt URI as the other hosts' libvirtd reach it (p2p migration target), e.g.
   * 'qemu+tcp://10.0.0.2/system' or 'qemu+tls://host-b/system'.
   * @default 'qemu+tcp://<listen host of prepareIncoming>/system'
   */
  peerUri?: string
  /**
   * The virsh binary.
   * @default 'virsh'
   */
  virsh?: string
  /**
   * Deadline of one virsh call, ms.
   * @default 30000
   */
  callTimeoutMs?: number
  /**
   * How long migrate() waits for libvirt to report the migration job, ms.
   * @default 60000
   */
  acceptTimeoutMs?: number
  /**
   * Domain type: 'kvm', 'qemu' (TCG), or 'auto' (the QEMU driver's probeAccel()).
   * @default 'auto'
   */
  domainType?: 'kvm' | 'qemu' | 'auto'
  /**
   * Machine type; pin it so that hosts with different QEMU versions can migrate to each other.
   * @default 'pc'
   */
  machine?: string
  /** CPU model (custom mode); both ends of a migration must offer it. @default libvirt's default */
  cpuModel?: string
  /** QEMU binary given as <emulator>. @default libvirt's choice */
  emulator?: string
  /**
   * Directory of the serial console logs, one `<id>.log` per VM. Without it VMs get no serial
   * device (unless `extra.xml` has one).
   */
  serialDir?: string
  /**
   * Define domains persistently (define + start; migrate with --persistent --undefinesource)
   * instead of creating transient ones.
   * @default false
   */
  persistent?: boolean
  /**
   * CPU cores of this host, to express VM CPU use as a fraction of the host.
   * @default os.availableParallelism()
   */
  hostCpuCores?: number
  /**
   * Where a migration with storage creates the incoming VM's disk images: `<imageDir>/<vm>/<name>`
   * (the name of the source's image file). Unset: at the same path as on the source.
   * @default the source's path
   */
  imageDir?: string
  /**
   * Directories on storage every host reaches: disks under them stay put when their VM moves;
   * every other file disk is local and is copied with its VM (`virsh migrate --copy-storage-all`).
   * @default []
   */
  sharedStorage?: string[]
  /** The qemu-img binary (creates the target images). @default 'qemu-img' */
  qemuImgBinary?: string
  /**
   * Where the driver journals the disk images it creates for an incoming move with storage
   * (before creating them, so that those of a move that aborted are deleted, and only those,
   * even after a restart) and the images an outgoing move leaves behind (set aside once the
   * target runs the VM). Unset: kept in memory only, and lost with the agent.
   * @default none (the agent sets `<node.stateDir>/libvirt`)
   */
  stateDir?: string
}

/** The suffix of a disk image a VM left on this host when it moved away with its disks. */
export const DEPARTED_SUFFIX = '.departed'

/** A journal entry of the driver's own (stateDir): the images of one VM's move with storage. */
type JournalKind = 'incoming' | 'outgoing' | 'departed'

interface ImageJournal {
  /** The migration (record id) the images are for; null when prepared without one. */
  migration: string | null
  /** Incoming: the images this host created (none of them existed before). Outgoing: the VM's images here. */
  images: string[]
}

export interface LibvirtDriverComponents {
  logger: Logger
}

/** Driver-specific part of a VmSpec (`spec.extra`) understood by this driver. */
export interface LibvirtVmExtra {
  /** A complete domain XML used as it is (its <name> must be the VM id). */
  xml?: string
  /** Direct kernel boot. */
  kernel?: string
  initrd?: string
  append?: string
  /** Disk images, attached as virtio disks vda, vdb... */
  disks?: Array<{ file: string, format?: 'raw' | 'qcow2' }>
  /**
   * Add a virtio balloon device (needed by balloon()).
   * @default true
   */
  balloon?: boolean
}

/** Where a p2p migration goes; what prepareIncoming() returns, encoded as a string. */
export interface LibvirtMigrationTarget {
  /** The destination libvirtd's URI, as the source's libvirtd reaches it. */
  destUri: string
  /** QEMU's migration stream: tcp://ADDR[:PORT] (no port: the destination picks one). */
  migrateUri: string
  /** Address the destination QEMU listens on. */
  listenAddress: string
  /** Serial console log path on the destination, if the VM has a file-backed console. */
  serialPath?: string
  /**
   * A migration with storage: each local disk's image on the source and where the destination
   * created its empty copy (libvirt then copies the disks with --copy-storage-all).
   */
  disks?: Array<{ from: string, to: string }>
  /** The target created overlays on base images it holds: only the overlays are copied (--copy-storage-inc). */
  shallow?: boolean
}

const TARGET_PREFIX = 'libvirt-p2p:?'

/** Encodes a migration target as the `uri` string handed from target to source. */
export function formatMigrationTarget (t: LibvirtMigrationTarget): string {
  const q = new URLSearchParams({ dest: t.destUri, migrateuri: t.migrateUri, listen: t.listenAddress })
  if (t.serialPath !== undefined) q.set('serial', t.serialPath)
  if (t.disks !== undefined) q.set('disks', JSON.stringify(t.disks))
  if (t.shallow === true) q.set('inc', '1')
  return TARGET_PREFIX + q.toString()
}

/** Decodes formatMigrationTarget()'s string; null when it is not one. */
export function parseMigrationTarget (s: string): LibvirtMigrationTarget | null {
  if (typeof s !== 'string' || !s.startsWith(TARGET_PREFIX)) return null
  const q = new URLSearchParams(s.slice(TARGET_PREFIX.length))
  const destUri = q.get('dest')
  const migrateUri = q.get('migrateuri')
  const listenAddress = q.get('listen')
  if (destUri === null || destUri === '' || migrateUri === null || !/^tcp:\/\/\S+$/.test(migrateUri) || listenAddress === null || listenAddress === '') return null
  const t: LibvirtMigrationTarget = { destUri, migrateUri, listenAddress }
  const serial = q.get('serial')
  if (serial !== null && serial !== '') t.serialPath = serial
  const disks = q.get('disks')
  if (disks !== null) {
    let list: unknown
    try { list = JSON.parse(disks) } catch { return null }
    if (!Array.isArray(list) || !list.every(d => typeof d === 'object' && d !== null && typeof d.from === 'string' && typeof d.to === 'string' && d.from !== '' && d.to !== '')) return null
    t.disks = list as Array<{ from: string, to: string }>
  }
  if (q.get('inc') === '1') t.shallow = true
  return t
}

// ---------------------------------------------------------------------------------------------
// Parsers. Each takes virsh's text and never throws.

/**
 * `virsh domstats --raw`: "Domain: 'name'" headers followed by indented key=value lines.
 * Returns one record per domain, in output order.
 */
export function parseDomstats (text: string): Map<string, Record<string, string>> {
  const out = new Map<string, Record<string, string>>()
  let cur: Record<string, string> | null = null
  for (const raw of String(text).split('\n')) {
    const line = raw.replace(/\r$/, '')
    const head = /^Domain:\s*'(.*)'\s*$/.exec(line)
    if (head !== null) {
      cur = Object.create(null) as Record<string, string>
      out.set(head[1] ?? '', cur)
      continue
    }
    if (cur === null) continue
    const kv = /^\s+([A-Za-z0-9_.-]+)=(.*)$/.exec(line)
    if (kv !== null && kv[1] !== undefined) cur[kv[1]] = (kv[2] ?? '').trim()
  }
  return out
}

/** The state of a domain's dirty-rate measurement (libvirt's virDomainDirtyRateStatus). */
export type DirtyRateStatus = 'unstarted' | 'measuring' | 'measured' | 'unknown'

/** The `dirtyrate.*` fields of one domain's `domstats --raw --dirtyrate`, read. */
export interface DirtyRateStats {
  status: DirtyRateStatus
  /** When the last measurement started, s on QEMU's clock; null when not reported. */
  startTimeS: number | null
  /** Its measuring time, s; null when not reported. */
  periodS: number | null
  /** 'page-sampling', 'dirty-bitmap' or 'dirty-ring'; null when not reported. */
  mode: string | null
  /**
   * The measured rate, MiB/s (libvirt passes on QEMU's dirty-rate, computed from the RAM size in
   * MiB, though it names it megabytes_per_second); null until a measurement has completed.
   */
  mibPerS: number | null
}

const DIRTY_RATE_STATUSES: readonly DirtyRateStatus[] = ['unstarted', 'measuring', 'measured']

/**
 * Reads the `dirtyrate.*` fields of a domstats record (parseDomstats()): calc_status (0
 * unstarted, 1 measuring, 2 measured; names accepted too), calc_start_time, calc_period,
 * calc_mode and megabytes_per_second (present once measured). Never throws: a missing or odd
 * figure reads as null, an odd status as 'unknown'.
 */
export function parseDirtyRate (rec: Record<string, string> | undefined): DirtyRateStats {
  const r = rec ?? {}
  const num = (k: string): number | null => {
    const v = r[k]
    if (v === undefined || v.trim() === '') return null
    const n = Number(v)
    return Number.isFinite(n) && n >= 0 ? n : null
  }
  const raw = (r['dirtyrate.calc_status'] ?? '').trim().toLowerCase()
  const code = raw === '' ? NaN : Number(raw)
  let status: DirtyRateStatus = 'unknown'
  if (Number.isInteger(code) && code >= 0 && code < DIRTY_RATE_STATUSES.length) status = DIRTY_RATE_STATUSES[code] ?? 'unknown'
  else status = DIRTY_RATE_STATUSES.find(s => s === raw) ?? 'unknown'
  const mode = (r['dirtyrate.calc_mode'] ?? '').trim()
  return {
    status,
    startTimeS: num('dirtyrate.calc_start_time'),
    periodS: num('dirtyrate.calc_period'),
    mode: mode === '' ? null : mode,
    mibPerS: num('dirtyrate.megabytes_per_second')
  }
}

/** libvirt's virDomainJobType, by number and by virsh's human name. */
const JOB_TYPES = ['none', 'bounded', 'unbounded', 'completed', 'failed', 'cancelled'] as const
export type JobType = typeof JOB_TYPES[number]

/** libvirt's virDomainJobOperation numbers that matter here. */
export const JOB_OPERATION = { migrationIn: 4, migrationOut: 5 } as const

/** libvirt's answer to a job query on a migration's destination while the incoming job runs. */
export const INCOMING_JOB_REFUSAL = /statistics are available only on the source/i

export interface JobInfo {
  type: JobType
  /** virDomainJobOperation (4 incoming, 5 outgoing migration); null when not reported. */
  operation: number | null
  /** The typed parameters, by libvirt's names (time_elapsed, downtime, memory_processed...). */
  fields: Record<string, string>
}

/** `virsh domjobinfo --rawstats`: "Job type: N" then "name: value" lines. Unknown type: 'none'. */
export function parseJobInfo (text: string): JobInfo {
  const fields = Object.create(null) as Record<string, string>
  let type: JobType = 'none'
  for (const raw of String(text).split('\n')) {
    const m = /^\s*([A-Za-z0-9_ .-]+?)\s*:\s*(.*?)\s*$/.exec(raw.replace(/\r$/, ''))
    if (m === null || m[1] === undefined) continue
    const key = m[1]
    const value = m[2] ?? ''
    if (/^job type$/i.test(key)) {
      const n = Number(value)
      if (value !== '' && Number.isInteger(n) && n >= 0 && n < JOB_TYPES.length) type = JOB_TYPES[n] ?? 'none'
      else {
        const named = JOB_TYPES.find(t => t === value.toLowerCase())
        type = named ?? 'none'
      }
      continue
    }
    fields[key] = value
  }
  const op = Number(fields.operation)
  return { type, operation: fields.operation !== undefined && Number.isInteger(op) ? op : null, fields }
}

/** A finite non-negative number from a field, else 0. */
function fnum (v: string | undefined): number {
  if (v === undefined || v === '') return 0
  const n = Number(v)
  return Number.isFinite(n) && n >= 0 ? n : 0
}

/** Turns job statistics into the MigrationProgress the agent reads from every driver. */
export function jobToProgress (job: JobInfo, status: MigrationStatus): MigrationProgress {
  const f = job.fields
  const finished = job.type === 'completed'
  const downtime = f.downtime !== undefined && Number.isFinite(Number(f.downtime)) && f.downtime !== '' ? Number(f.downtime) : null
  return {
    status,
    totalTimeMs: fnum(f.time_elapsed),
    downtimeMs: finished ? downtime : null,
    expectedDowntimeMs: finished ? null : downtime,
    transferredBytes: fnum(f.memory_processed ?? f.data_processed),
    remainingBytes: fnum(f.memory_remaining ?? f.data_remaining),
    totalBytes: fnum(f.memory_total ?? f.data_total),
    dirtySyncCount: fnum(f.memory_iteration),
    dirtyPagesRate: fnum(f.memory_dirty_rate),
    pageSizeBytes: fnum(f.memory_page_size) || 4096,
    mbps: fnum(f.memory_bps) * 8 / 1e6,
    postcopyRequests: fnum(f.memory_postcopy_requests),
    cpuThrottlePercent: fnum(f.auto_converge_throttle),
    errorDesc: f.errmsg !== undefined && f.errmsg !== '' ? f.errmsg : null
  }
}

/** An empty progress record. */
export function emptyProgress (status: MigrationStatus, errorDesc: string | null = null): MigrationProgress {
  return jobToProgress({ type: 'none', operation: null, fields: errorDesc === null ? {} : { errmsg: errorDesc } }, status)
}

/** `virsh domstate --reason`: "running (migrated)" → { state: 'running', reason: 'migrated' }. */
export function parseDomstate (text: string): { state: string, reason: string } | null {
  const line = String(text).split('\n').map(l => l.trim()).find(l => l !== '')
  if (line === undefined) return null
  const m = /^([a-z][a-z ]*?)(?:\s*\(([^)]*)\))?$/i.exec(line)
  if (m === null || m[1] === undefined) return null
  return { state: m[1].toLowerCase(), reason: (m[2] ?? '').toLowerCase() }
}

/** `virsh dominfo`: "Name:   value" lines into a record keyed by the label. */
export function parseDominfo (text: string): Record<string, string> {
  const out = Object.create(null) as Record<string, string>
  for (const raw of String(text).split('\n')) {
    const m = /^([A-Za-z][A-Za-z0-9 ()]*?):\s*(.*?)\s*$/.exec(raw)
    if (m?.[1] !== undefined) out[m[1]] = m[2] ?? ''
  }
  return out
}

/** KiB from a dominfo memory field ("262144 KiB"), or null. */
function kibField (v: string | undefined): number | null {
  const m = /^(\d+)\s*KiB$/i.exec(v ?? '')
  return m?.[1] !== undefined ? Number(m[1]) : null
}

// virDomainState and the reasons that matter (libvirt-domain.h).
const ST_RUNNING = 1; const ST_BLOCKED = 2; const ST_PAUSED = 3; const ST_SHUTDOWN = 4
const ST_SHUTOFF = 5; const ST_CRASHED = 6; const ST_PMSUSPENDED = 7
const PAUSED_MIGRATION = 2; const PAUSED_POSTCOPY = 12; const PAUSED_POSTCOPY_FAILED = 13
const RUNNING_POSTCOPY = 10; const RUNNING_POSTCOPY_FAILED = 11

/** Maps domstats' state.state / state.reason to the agent's run state. */
export function runStateOf (state: number, reason: number, incoming = false): VmRunState {
  if (state === ST_RUNNING || state === ST_BLOCKED || state === ST_SHUTDOWN) return 'running'
  if (state === ST_SHUTOFF || state === ST_CRASHED) return 'stopped'
  if (state === ST_PAUSED && (incoming || reason === PAUSED_MIGRATION || reason === PAUSED_POSTCOPY || reason === PAUSED_POSTCOPY_FAILED)) return 'migrating'
  if (state === ST_PAUSED || state === ST_PMSUSPENDED) return 'paused'
  return incoming ? 'migrating' : 'paused'
}

/**
 * A domain's state (domstats state.state / state.reason) named as QEMU's query-status would name
 * it, the vocabulary of the QEMU driver's describe(): 'running', 'inmigrate' (an incoming copy
 * whose guest has not run here), 'postmigrate' (paused by a migration), 'paused', 'shutdown'...
 */
export function runStatusOf (state: number, reason: number, incoming: boolean): string {
  if (state === ST_RUNNING || state === ST_BLOCKED || state === ST_SHUTDOWN) return 'running'
  if (state === ST_PAUSED) {
    if (incoming) return 'inmigrate'
    if (reason === PAUSED_MIGRATION || reason === PAUSED_POSTCOPY || reason === PAUSED_POSTCOPY_FAILED) return 'postmigrate'
    return 'paused'
  }
  if (state === ST_SHUTOFF) return 'shutdown'
  if (state === ST_CRASHED) return 'guest-panicked'
  if (state === ST_PMSUSPENDED) return 'suspended'
  return incoming ? 'inmigrate' : 'unknown'
}

/**
 * Which DriverError code a virsh failure deserves, from its stderr (LC_ALL=C).
 * Connection failures first: virsh then also says it could not get the domain.
 */
/**
 * A VM's memory facts from its `domstats` record (KiB fields; `now` in seconds since the epoch).
 * The guest's statistics count only once it has answered (balloon.last-update > 0); libvirt leaves
 * out the ones a guest does not report.
 */
export function memoryFactsOf (id: VmId, s: Record<string, string>, balloon: boolean, nowS: number): VmMemoryFacts {
  const maxKiB = fnum(s['balloon.maximum'])
  const maxMiB = maxKiB / 1024
  if (!balloon || s['balloon.current'] === undefined) return { id, maxMiB, balloon: false, actualMiB: null, guest: null }
  const opt = (k: string): number | null => {
    const v = s[k]
    if (v === undefined || v === '') return null
    const n = Number(v)
    return Number.isFinite(n) && n >= 0 ? n : null
  }
  const mib = (k: string): number | null => { const v = opt(k); return v === null ? null : v / 1024 }
  const last = opt('balloon.last-update') ?? 0
  const guest = last <= 0
    ? null
    : {
        totalMiB: mib('balloon.available'),
        freeMiB: mib('balloon.unused'),
        availableMiB: mib('balloon.usable'),
        majorFaults: opt('balloon.major_fault'),
        swapInPages: opt('balloon.swap_in'),
        swapOutPages: opt('balloon.swap_out'),
        ageS: Math.max(0, nowS - last)
      }
  return { id, maxMiB, balloon: true, actualMiB: fnum(s['balloon.current']) / 1024, guest }
}

export function classifyVirshError (stderr: string): DriverErrorCode {
  const s = String(stderr)
  if (/failed to connect to the hypervisor|Failed to connect socket|unable to connect to server|Connection refused|Cannot recv data|End of file while reading data|client socket is closed|no connection driver available|Cannot write data/i.test(s)) return 'DRIVER_UNREACHABLE'
  if (/Domain not found|failed to get domain|no domain with matching/i.test(s)) return 'VM_NOT_FOUND'
  if (/Timed out during operation|cannot acquire state change lock/i.test(s)) return 'DRIVER_TIMEOUT'
  return 'DRIVER_FAILED'
}

/** The useful part of virsh's stderr: its "error:" lines, joined, at most 500 characters. */
export function virshErrorText (stderr: string): string {
  const lines = String(stderr).split('\n').map(l => l.trim()).filter(l => l !== '')
  const errs = lines.filter(l => l.startsWith('error:')).map(l => l.slice(6).trim())
  const text = (errs.length > 0 ? errs : lines).join('; ')
  return text.length > 500 ? `${text.slice(0, 497)}...` : text
}

function xmlEscape (s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;').replace(/'/g, '&apos;')
}

function xmlUnescape (s: string): string {
  return s.replace(/&lt;/g, '<').replace(/&gt;/g, '>').replace(/&quot;/g, '"').replace(/&apos;/g, "'").replace(/&amp;/g, '&')
}

/** The source path of the first file-backed <serial> in a domain XML, or null. */
export function serialPathOf (xml: string): string | null {
  const m = /<serial\s+type=(['"])file\1[^>]*>([\s\S]*?)<\/serial>/.exec(String(xml))
  if (m?.[2] === undefined) return null
  const src = /<source\b[^>]*\bpath=(['"])(.*?)\1/.exec(m[2])
  return src?.[2] !== undefined ? xmlUnescape(src[2]) : null
}

/**
 * Points every file-backed <serial> and <console> at `newPath` (the same log, as libvirt writes
 * it). Returns null when the XML has no file-backed serial.
 */
export function rewriteSerialPath (xml: string, newPath: string): string | null {
  const old = serialPathOf(xml)
  if (old === null) return null
  let changed = false
  const out = String(xml).replace(/<(serial|console)\s+type=(['"])file\2[^>]*>[\s\S]*?<\/\1>/g, block =>
    block.replace(/(<source\b[^>]*\bpath=)(['"])(.*?)\2/, (_m, pre: string, q: string) => {
      changed = true
      return `${pre}${q}${xmlEscape(newPath)}${q}`
    }))
  return changed ? out : null
}

/**
 * A file disk of a domain XML: its image, format and target device, and the image it is an
 * overlay of (its first backing file, from the live XML's backingStore), if any.
 */
export interface DomainDisk { file: string, format: string, dev: string, readonly: boolean, shareable: boolean, backing?: string, backingFormat?: string }

/** The file-backed disks (device='disk') of a domain XML, in order. */
export function disksOf (xml: string): DomainDisk[] {
  const out: DomainDisk[] = []
  for (const m of String(xml).matchAll(/<disk\b([^>]*)>([\s\S]*?)<\/disk>/g)) {
    const head = m[1] ?? ''
    const body = m[2] ?? ''
    if (!/\btype=(['"])file\1/.test(head) || /\bdevice=(['"])(?!disk\1)[^'"]*\1/.test(head)) continue
    const file = /<source\b[^>]*\bfile=(['"])(.*?)\1/.exec(body)?.[2]
    const dev = /<target\b[^>]*\bdev=(['"])(.*?)\1/.exec(body)?.[2]
    if (file === undefined || dev === undefined) continue
    const format = /<driver\b[^>]*\btype=(['"])(.*?)\1/.exec(body)?.[2] ?? 'raw'
    const disk: DomainDisk = { file: xmlUnescape(file), format, dev: xmlUnescape(dev), readonly: /<readonly\s*\/>/.test(body), shareable: /<shareable\s*\/>/.test(body) }
    const bs = /<backingStore\b[^>]*\btype=(['"])file\1[^>]*>([\s\S]*?)(?:<backingStore\b|<\/backingStore>)/.exec(body)?.[2]
    const bfile = bs !== undefined ? /<source\b[^>]*\bfile=(['"])(.*?)\1/.exec(bs)?.[2] : undefined
    if (bs !== undefined && bfile !== undefined) {
      disk.backing = xmlUnescape(bfile)
      disk.backingFormat = /<format\b[^>]*\btype=(['"])(.*?)\1/.exec(bs)?.[2] ?? 'raw'
    }
    out.push(disk)
  }
  return out
}

/** Points each file disk whose image is a `from` of `map` at its `to`. */
export function rewriteDiskPaths (xml: string, map: Array<{ from: string, to: string }>): string {
  return String(xml).replace(/(<source\b[^>]*\bfile=)(['"])(.*?)\2/g, (all, pre: string, q: string, file: string) => {
    const hit = map.find(d => d.from === xmlUnescape(file))
    return hit === undefined ? all : `${pre}${q}${xmlEscape(hit.to)}${q}`
  })
}

export interface DomainXmlOptions {
  type: 'kvm' | 'qemu'
  machine: string
  cpuModel?: string
  emulator?: string
  serialPath?: string
}

/** A domain XML for `spec` (direct kernel boot or disks, serial log file, balloon). */
export function buildDomainXml (spec: VmSpec, x: LibvirtVmExtra, o: DomainXmlOptions): string {
  const e = xmlEscape
  const os: string[] = [`    <type arch='x86_64' machine='${e(o.machine)}'>hvm</type>`]
  if (x.kernel !== undefined) os.push(`    <kernel>${e(x.kernel)}</kernel>`)
  if (x.initrd !== undefined) os.push(`    <initrd>${e(x.initrd)}</initrd>`)
  if (x.append !== undefined) os.push(`    <cmdline>${e(x.append)}</cmdline>`)
  if (x.kernel === undefined) os.push("    <boot dev='hd'/>")
  const dev: string[] = []
  if (o.emulator !== undefined) dev.push(`    <emulator>${e(o.emulator)}</emulator>`)
  for (const [i, d] of (x.disks ?? []).entries()) {
    dev.push(`    <disk type='file' device='disk'><driver name='qemu' type='${d.format ?? 'raw'}'/><source file='${e(d.file)}'/><target dev='vd${String.fromCharCode(97 + i)}' bus='virtio'/></disk>`)
  }
  if (o.serialPath !== undefined) {
    dev.push(`    <serial type='file'><source path='${e(o.serialPath)}'/><target port='0'/></serial>`)
    dev.push(`    <console type='file'><source path='${e(o.serialPath)}'/><target type='serial' port='0'/></console>`)
  }
  // autodeflate: QEMU's deflate-on-oom (the QEMU driver's note on its balloon device).
  dev.push(x.balloon ?? true ? "    <memballoon model='virtio' autodeflate='on'/>" : "    <memballoon model='none'/>")
  const cpu = o.cpuModel !== undefined ? `  <cpu mode='custom' match='exact'><model fallback='forbid'>${e(o.cpuModel)}</model></cpu>\n` : ''
  return `<domain type='${o.type}'>
  <name>${e(spec.id)}</name>
  <memory unit='MiB'>${Math.round(spec.memMiB)}</memory>
  <currentMemory unit='MiB'>${Math.round(spec.memMiB)}</currentMemory>
  <vcpu>${Math.round(spec.vcpus)}</vcpu>
  <os>
${os.join('\n')}
  </os>
${cpu}  <features><acpi/></features>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
${dev.join('\n')}
  </devices>
</domain>
`
}

/** A VM spec's `extra`, checked. */
function libvirtExtra (spec: VmSpec): LibvirtVmExtra {
  const x = spec.extra ?? {}
  const out: LibvirtVmExtra = {}
  for (const k of ['xml', 'kernel', 'initrd', 'append'] as const) {
    const v = x[k]
    if (v === undefined) continue
    if (typeof v !== 'string') throw new DriverError('DRIVER_FAILED', `vm ${spec.id}: extra.${k} must be a string`)
    out[k] = v
  }
  if (x.balloon !== undefined) out.balloon = x.balloon === true
  if (x.disks !== undefined) {
    if (!Array.isArray(x.disks) || x.disks.length > 26) throw new DriverError('DRIVER_FAILED', `vm ${spec.id}: extra.disks must be an array of at most 26`)
    out.disks = x.disks.map((d: unknown) => {
      const o = (typeof d === 'object' && d !== null ? d : {}) as Record<string, unknown>
      if (typeof o.file !== 'string') throw new DriverError('DRIVER_FAILED', `vm ${spec.id}: extra.disks[].file must be a string`)
      return { file: o.file, format: o.format === 'qcow2' ? 'qcow2' : 'raw' }
    })
  }
  return out
}

/** The `nbd` a libvirt target returns: libvirt moves the disks inside the migration itself. */
const COPY_STORAGE = 'libvirt:copy-storage-all'

/** spec.extra.disks, tolerant: entries without a file are left out. */
function diskList (spec: VmSpec): Array<{ file: string, format?: string, sizeBytes?: number, backing?: string, backingFormat?: string }> {
  const raw = (spec.extra ?? {}).disks
  if (!Array.isArray(raw)) return []
  return raw.filter((d): d is { file: string } => typeof d === 'object' && d !== null && typeof (d as { file?: unknown }).file === 'string')
    .map(d => {
      const o = d as { file: string, format?: unknown, sizeBytes?: unknown, backing?: unknown, backingFormat?: unknown }
      return {
        file: o.file,
        ...(typeof o.format === 'string' ? { format: o.format } : {}),
        ...(typeof o.sizeBytes === 'number' ? { sizeBytes: o.sizeBytes } : {}),
        ...(typeof o.backing === 'string' && o.backing !== '' ? { backing: o.backing, backingFormat: typeof o.backingFormat === 'string' ? o.backingFormat : 'raw' } : {})
      }
    })
}

/**
 * statfs magic numbers of network and cluster file systems (linux/magic.h and the file systems'
 * own headers): an image on one is reached by every host, so it stays put when its VM moves.
 * NFS, SMB/CIFS (two), Ceph, GFS2, OCFS2, Lustre.
 */
const NETWORK_FS = new Set([0x6969, 0xFF534D42, 0xFE534D42, 0x00C36400, 0x01161970, 0x7461636f, 0x0BD00BD0])

/** Whether `file` (or, when it does not exist, its directory) lies on a network or cluster file system. */
function onNetworkFs (file: string): boolean {
  try { return NETWORK_FS.has(fs.statfsSync(file).type) } catch {
    try { return NETWORK_FS.has(fs.statfsSync(path.dirname(file)).type) } catch { return false }
  }
}

/** Runs a tool (qemu-img); rejects with its stderr. */
function runTool (bin: string, args: string[], signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    execFile(bin, args, { encoding: 'utf8', timeout: 60_000, ...(signal !== undefined ? { signal } : {}) }, (err, _out, errOut) => {
      if (err === null) resolve()
      else reject(new Error(`${bin} ${args[0] ?? ''}: ${errOut.trim() || err.message}`))
    })
  })
}

const VM_ID_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/

function checkId (id: VmId): void {
  if (typeof id !== 'string' || !VM_ID_RE.test(id)) throw new DriverError('DRIVER_FAILED', `vm id "${String(id)}" must match ${String(VM_ID_RE)}`)
}

/** Splits "host:port" (IPv6 in brackets). */
function splitHostPort (addr: string): { host: string, port: number } | null {
  const m = /^\[?([^\]]*?)\]?:(\d{1,5})$/.exec(addr)
  if (m === null || m[1] === undefined || m[2] === undefined || m[1] === '') return null
  const port = Number(m[2])
  return port <= 65535 ? { host: m[1], port } : null
}

const isAborted = (signal: AbortSignal | undefined): boolean => signal?.aborted === true

const sleep = (ms: number, signal?: AbortSignal): Promise<void> => new Promise((resolve, reject) => {
  if (signal?.aborted === true) { reject(new DriverError('DRIVER_TIMEOUT', 'aborted')); return }
  const t = setTimeout(() => { signal?.removeEventListener('abort', onAbort); resolve() }, ms)
  const onAbort = (): void => { clearTimeout(t); reject(new DriverError('DRIVER_TIMEOUT', 'aborted')) }
  signal?.addEventListener('abort', onAbort, { once: true })
})

/** Dirty-sync numbers of one domain as libvirt's migration-iteration events report them. */
interface SyncEvents {
  on (fn: (syncs: number) => void): void
  alive (): boolean
  stop (): void
}

/**
 * The downtime limit raised at the dirty-sync cap, ms: at the link's rate it lets QEMU complete
 * at that sync whatever a guest dirtied in one round (5 s at 128 MiB/s is 640 MiB). Bounded: a
 * limit of minutes would, should the link slow down after the raise, make the rest of the copy
 * one long stop-and-copy with the guest paused throughout; with the bound the copy goes on in
 * rounds, and a sync past the cap cancels it (the guest stays on the source).
 */
export const CAP_DOWNTIME_MS = 5_000

/** An event line of `virsh event --event migration-iteration`: the sync number, or null. */
export function parseIterationEvent (line: string): number | null {
  const m = /event 'migration-iteration' for domain '[^']*': iteration: '(\d+)'/.exec(String(line))
  return m?.[1] !== undefined ? Number(m[1]) : null
}

/** One outgoing migration: the `virsh migrate` process and what we learnt of it. */
interface OutgoingJob {
  target: LibvirtMigrationTarget
  proc: ChildProcess
  /** Set when the virsh process has ended. */
  exit: { code: number | null, stderr: string } | null
  ended: Promise<void>
  postcopy: boolean
  cancelRequested: boolean
  /** The last progress seen while active (kept for the moment the job vanishes). */
  last: MigrationProgress | null
  /** Final figures once known (read from the destination). */
  final: MigrationProgress | null
  tmpDir: string
  /**
   * The dirty-sync cap (MigrationParams.maxDirtySyncs) of this pre-copy: 'completing' once the
   * driver raised the downtime limit so that QEMU completes within the cap, 'cancelled' once it
   * cancelled the migration because QEMU went on past the cap with the guest running.
   */
  cap: { max: number, action: 'none' | 'completing' | 'cancelled', reason: string } | null
  /** The disks go too (--copy-storage-all). */
  storage: boolean
  /** How they are copied: 'write-blocking' when libvirt was asked for synchronous writes. */
  copyMode: DiskCopyMode
  /** The last job statistics seen of a migration with storage (disk_* figures). */
  lastDisk?: Record<string, string>
}

/**
 * The disk side of a libvirt migration with storage, from its job statistics (disk_total...).
 * `completed`: the migration completed, so the disks were copied whole (libvirt switches over only
 * once its disk mirror is in sync): done is the total, whatever the last statistics seen said (a
 * copy that ends between two polls, or a completed job whose disk_processed counts less than the
 * copy, left done below the total: 1.0 of 3.0 MiB in one run).
 */
export function diskProgress (f: Record<string, string> | null | undefined, ready: boolean, copyMode: DiskCopyMode, completed = false): NonNullable<MigrationProgress['disk']> {
  const total = fnum(f?.disk_total)
  const done = completed ? Math.max(total, fnum(f?.disk_processed)) : fnum(f?.disk_processed)
  return { jobs: 0, ready: ready || (total > 0 && done >= total), totalBytes: total, doneBytes: done, sentBytes: done, copyMode, error: null }
}

/**
 * The storage flags of `virsh migrate` for a move with disks: --copy-storage-inc when only the
 * overlays go (the target holds their base), --copy-storage-all otherwise; and, for a
 * write-blocking copy, --copy-storage-synchronous-writes (libvirt 8.0 and later: every guest write
 * completes only once the target has it too, so the disk copy converges however fast the guest
 * writes; the QEMU driver's blockdev-mirror copy-mode=write-blocking). `syncWrites`: a write-blocking
 * copy was planned and this virsh knows the flag (without it the copy runs in the background).
 */
export function storageMigrateArgs (inc: boolean, syncWrites: boolean): string[] {
  const args = [inc ? '--copy-storage-inc' : '--copy-storage-all']
  if (syncWrites) args.push('--copy-storage-synchronous-writes')
  return args
}

/**
 * The guest's writes to the given disks (by target dev) from one `domstats --raw --block` record:
 * bytes and requests, summed (block.N.name, block.N.wr.bytes, block.N.wr.reqs).
 */
export function blockWrites (rec: Record<string, string> | undefined, devs: ReadonlySet<string>): { bytes: number, ops: number } {
  let bytes = 0
  let ops = 0
  const count = fnum(rec?.['block.count'])
  for (let i = 0; i < count; i++) {
    if (!devs.has(rec?.[`block.${i}.name`] ?? '')) continue
    bytes += fnum(rec?.[`block.${i}.wr.bytes`])
    ops += fnum(rec?.[`block.${i}.wr.reqs`])
  }
  return { bytes, ops }
}

interface CpuSample { ns: number, at: number }

export class LibvirtDriver implements MigratingDriver, BalloonDriver {
  readonly kind = 'libvirt'
  readonly domainType: 'kvm' | 'qemu'
  readonly domainTypeReason: string
  private readonly log: Logger
  private readonly virshBin: string
  private readonly hostCpuCores: number
  private readonly jobs = new Map<VmId, OutgoingJob>()
  private readonly incoming = new Set<VmId>()
  /** VMs whose disks go with their next migration (mirrorDisks() was called), with the copy mode it asked for. */
  private readonly storageArmed = new Map<VmId, DiskCopyMode>()
  /** Whether this virsh knows --copy-storage-synchronous-writes (asked once, on the first write-blocking copy). */
  private syncWritesFlag: Promise<boolean> | null = null
  /** The unpadded-TCG warning was logged (once per driver). */
  private warnedUnpadded = false
  /** Free space held for incoming images (per VM and file system), until the guest runs here or the copy goes. */
  private readonly reservedImages = new Map<string, { vm: VmId, dev: string, bytes: number, files: string[] }>()
  private readonly cpu = new Map<VmId, CpuSample>()
  /** The guest statistics period armed per VM ('none': it has no balloon device). */
  private readonly statsPeriod = new Map<VmId, { period: number | 'none' }>()
  /**
   * The driver's journals (see LibvirtDriverInit.stateDir), by VM: images created for an incoming
   * move, images an outgoing one leaves, and the `.departed` copies kept after it (for
   * keptDiskCopies(), until the VM returns or the operator deletes them).
   */
  private readonly journals = { incoming: new Map<VmId, ImageJournal>(), outgoing: new Map<VmId, ImageJournal>(), departed: new Map<VmId, ImageJournal>() }
  /** Per-VM serialisation of image creation and deletion (prepareIncoming, dropIncomingImages). */
  private readonly imageLocks = new Map<VmId, Promise<unknown>>()
  private closed = false

  constructor (private readonly init: LibvirtDriverInit, components: LibvirtDriverComponents) {
    this.log = components.logger.forComponent('agent:libvirt-driver')
    this.virshBin = init.virsh ?? 'virsh'
    this.hostCpuCores = init.hostCpuCores ?? os.availableParallelism()
    const want = init.domainType ?? 'auto'
    if (want === 'auto') {
      const p = probeAccel()
      this.domainType = p.accel === 'kvm' ? 'kvm' : 'qemu'
      this.domainTypeReason = p.reason
    } else {
      this.domainType = want
      this.domainTypeReason = 'configured'
    }
    this.log.info(`libvirt at ${init.uri}, domain type ${this.domainType} (${this.domainTypeReason})`)
    this.loadJournals()
  }

  // -------------------------------------------------------------------------------------------
  // The driver's own journal of the images moves with storage create and leave (stateDir).

  private journalDir (kind: JournalKind): string | null {
    return this.init.stateDir === undefined ? null : path.join(this.init.stateDir, `${kind}-images`)
  }

  /** Reads the journals left by an earlier run (a restart): entries that cannot be read are reported and left alone. */
  private loadJournals (): void {
    for (const kind of ['incoming', 'outgoing', 'departed'] as const) {
      const dir = this.journalDir(kind)
      if (dir === null) continue
      let names: string[] = []
      try { names = fs.readdirSync(dir) } catch { continue }
      for (const n of names) {
        if (!n.endsWith('.json')) continue
        const vm = n.slice(0, -5)
        try {
          const j = JSON.parse(fs.readFileSync(path.join(dir, n), 'utf8')) as Partial<ImageJournal>
          if (!VM_ID_RE.test(vm) || !Array.isArray(j.images) || !j.images.every(f => typeof f === 'string' && path.isAbsolute(f))) throw new Error('not a list of absolute image paths')
          this.journals[kind].set(vm, { migration: typeof j.migration === 'string' ? j.migration : null, images: j.images })
        } catch (err) {
          this.log.warn(`cannot read the ${kind} image journal ${path.join(dir, n)}: ${err instanceof Error ? err.message : String(err)}; its images are left alone`)
        }
      }
      if (this.journals[kind].size > 0) this.log.info(`${kind} disk images journaled by an earlier run: ${[...this.journals[kind]].map(([vm, j]) => `${vm}: ${j.images.join(', ')}`).join('; ')}`)
    }
  }

  /** Journals (durably: written, synced, renamed into place) or forgets `vm`'s entry. */
  private async writeJournal (kind: JournalKind, vm: VmId, j: ImageJournal | null): Promise<void> {
    if (j === null) this.journals[kind].delete(vm)
    else this.journals[kind].set(vm, j)
    const dir = this.journalDir(kind)
    if (dir === null) return
    const file = path.join(dir, `${vm}.json`)
    if (j === null) { await fsp.rm(file, { force: true }); return }
    await fsp.mkdir(dir, { recursive: true })
    const tmp = `${file}.tmp`
    const fh = await fsp.open(tmp, 'w', 0o600)
    try {
      await fh.writeFile(JSON.stringify(j))
      await fh.sync()
    } finally {
      await fh.close()
    }
    await fsp.rename(tmp, file)
  }

  /** Runs `fn` after every earlier image operation of `vm` (creation and deletion never interleave). */
  private async withImageLock<T> (vm: VmId, fn: () => Promise<T>): Promise<T> {
    const prev = this.imageLocks.get(vm) ?? Promise.resolve()
    const run = prev.then(fn, fn)
    const tail = run.catch(() => {})
    this.imageLocks.set(vm, tail)
    void tail.then(() => { if (this.imageLocks.get(vm) === tail) this.imageLocks.delete(vm) })
    return await run
  }

  /** Every image a domain of this libvirtd uses (its disks and their backing files), resolved. */
  private async imagesInUse (signal?: AbortSignal): Promise<Set<string>> {
    const used = new Set<string>()
    const names = (await this.virsh(['list', '--all', '--name'], { signal })).split('\n').map(l => l.trim()).filter(l => l !== '')
    for (const n of names) {
      let xml: string
      try { xml = await this.virsh(['dumpxml', n], { signal }) } catch (err) {
        if (err instanceof DriverError && err.code === 'VM_NOT_FOUND') continue
        throw err
      }
      for (const d of disksOf(xml)) {
        used.add(path.resolve(d.file))
        if (d.backing !== undefined) used.add(path.resolve(d.backing))
      }
    }
    return used
  }

  /**
   * The guest of an incoming move runs here: the images created for it are its disks now (no
   * longer the journal's), and a copy this host kept from the VM's earlier stay is older than
   * them: it goes.
   */
  private arrived (id: VmId): void {
    const j = this.journals.incoming.get(id)
    if (j === undefined) return
    this.journals.incoming.delete(id)
    void (async () => {
      await this.writeJournal('incoming', id, null)
      for (const f of j.images) {
        const old = f + DEPARTED_SUFFIX
        if (!fs.existsSync(old)) continue
        if ((await this.imagesInUse()).has(path.resolve(old))) continue
        await fsp.rm(old, { force: true })
        this.log.info(`vm ${id}: runs here again from ${f}; removed ${old}, the copy it left here on an earlier move (older than the disk it runs from)`, { vm: id })
      }
      const kept = this.journals.departed.get(id)
      if (kept !== undefined) {
        const left = kept.images.filter(f => fs.existsSync(f))
        await this.writeJournal('departed', id, left.length > 0 ? { ...kept, images: left } : null)
      }
    })().catch(err => { this.log.warn(`vm ${id}: cannot settle the journal of its incoming images`, { vm: id, err }) })
  }

  /**
   * Target of a move with storage that aborted before its guest ran here: deletes the images
   * created for migration `migration` (journaled before they were created) and only those,
   * after killing an incoming copy that never ran. A guest running here keeps them (VM_RUNNING);
   * an image some domain here uses is left alone, with a warning. Resolves with the files deleted.
   */
  async dropIncomingImages (id: VmId, migration: string, signal?: AbortSignal): Promise<string[]> {
    checkId(id)
    return await this.withImageLock(id, async () => {
      const j = this.journals.incoming.get(id)
      if (j === undefined || (j.migration !== null && j.migration !== migration)) return []
      const d = await this.describe(id, signal)
      if (d !== null) {
        if (d.runStatus !== 'inmigrate') throw new DriverError('VM_RUNNING', `vm ${id}: the domain is ${d.runStatus} here; the images created for migration ${migration} stay`)
        try { await this.killIfNotRunning(id, signal) } catch (err) { if (!(err instanceof DriverError) || err.code !== 'VM_NOT_FOUND') throw err }
      }
      const used = await this.imagesInUse(signal)
      const gone: string[] = []
      const kept: string[] = []
      for (const f of j.images) {
        if (used.has(path.resolve(f))) { kept.push(f); continue }
        await fsp.rm(f, { force: true })
        gone.push(f)
      }
      // The per-VM directory under imageDir, when it held only these.
      if (this.init.imageDir !== undefined) await fsp.rmdir(path.join(this.init.imageDir, id)).catch(() => {})
      this.releaseImages(id)
      this.incoming.delete(id)
      await this.writeJournal('incoming', id, kept.length > 0 ? { ...j, images: kept } : null)
      if (kept.length > 0) this.log.warn(`vm ${id}: images of migration ${migration} kept, a domain here uses them: ${kept.join(', ')}`, { vm: id })
      this.log.info(`vm ${id}: migration ${migration} aborted before the guest ran here: deleted the images created for it${gone.length > 0 ? `: ${gone.join(', ')}` : ' (none was left)'}`, { vm: id })
      return gone
    })
  }

  /**
   * Source of a move with storage, after the target runs the VM: each image the move left here
   * (journaled by migrate()) is renamed `<image>${DEPARTED_SUFFIX}`: the disk as of the
   * switch-over, older than the VM's, never booted by the agent, and out of the way of a return
   * of the VM (whose target creates its disk afresh at the path). One such copy per image: a
   * later departure replaces it, and a return that runs here removes it. Refused (VM_RUNNING)
   * while the VM runs here; an image a domain here uses is left in place. Resolves with the
   * retained files.
   */
  async retireDepartedDisks (id: VmId, signal?: AbortSignal): Promise<string[]> {
    checkId(id)
    const j = this.journals.outgoing.get(id)
    if (j === undefined) return []
    const d = await this.describe(id, signal)
    if (d !== null && d.runStatus === 'running') throw new DriverError('VM_RUNNING', `vm ${id} runs here; its images stay where they are`)
    const used = await this.imagesInUse(signal)
    const retained: string[] = []
    for (const f of j.images) {
      const to = f + DEPARTED_SUFFIX
      if (!fs.existsSync(f)) { if (fs.existsSync(to)) retained.push(to); continue }
      if (used.has(path.resolve(f))) { this.log.warn(`vm ${id}: ${f} is used by a domain here; left in place`, { vm: id }); continue }
      const replaced = fs.existsSync(to)
      await fsp.rename(f, to)
      retained.push(to)
      this.log.info(`vm ${id}: moved away with its disks; the image it left here is kept as ${to} (the disk as of the switch-over, never booted; delete it when no longer wanted)${replaced ? `, replacing the one of an earlier departure` : ''}`, { vm: id })
    }
    // Listed by keptDiskCopies() (`starling migrations`) until the VM returns or they are deleted.
    if (retained.length > 0) await this.writeJournal('departed', id, { migration: j.migration, images: retained })
    await this.writeJournal('outgoing', id, null)
    return retained
  }

  /**
   * The `.departed` images kept on this host (retireDepartedDisks()), still on disk: VM, file,
   * bytes allocated, and when the VM left (the file's modification time: the switch-over).
   * Entries whose files were all deleted by the operator are forgotten.
   */
  keptDiskCopies (): KeptDiskCopy[] {
    const out: KeptDiskCopy[] = []
    for (const [vm, j] of this.journals.departed) {
      let any = false
      for (const file of j.images) {
        let st: fs.Stats
        try { st = fs.statSync(file) } catch { continue }
        any = true
        out.push({ vm, file, allocatedBytes: st.blocks * 512, sizeBytes: st.size, leftAtMs: st.mtimeMs })
      }
      if (!any) void this.writeJournal('departed', vm, null).catch(() => {})
    }
    return out.sort((a, b) => a.vm < b.vm ? -1 : a.vm > b.vm ? 1 : a.file < b.file ? -1 : 1)
  }

  /** The accelerator in the agent's terms (shapes the convergence policy): kvm, or tcg for type 'qemu'. */
  get accel (): 'kvm' | 'tcg' { return this.domainType === 'kvm' ? 'kvm' : 'tcg' }

  /** The serial console log of VM `id` on this host, when serialDir is set. */
  serialPath (id: VmId): string | undefined {
    return this.init.serialDir === undefined ? undefined : path.join(this.init.serialDir, `${id}.log`)
  }

  /**
   * Runs `virsh -c <uri> ...args` and resolves with its stdout; rejects with a DriverError.
   * `uri` defaults to this host's.
   */
  async virsh (args: string[], opts: { signal?: AbortSignal | undefined, timeoutMs?: number, uri?: string } = {}): Promise<string> {
    const timeoutMs = opts.timeoutMs ?? this.init.callTimeoutMs ?? 30_000
    const signals = [AbortSignal.timeout(timeoutMs)]
    if (opts.signal !== undefined) signals.push(opts.signal)
    const signal = AbortSignal.any(signals)
    const what = `virsh ${args[0] ?? ''}${args[1] !== undefined && !args[1].startsWith('-') ? ` ${args[1]}` : ''}`
    if (signal.aborted) throw new DriverError('DRIVER_TIMEOUT', `${what}: aborted before it ran`)
    return await new Promise<string>((resolve, reject) => {
      execFile(this.virshBin, ['-c', opts.uri ?? this.init.uri, ...args], {
        encoding: 'utf8',
        env: { ...process.env, LC_ALL: 'C', LANG: 'C' },
        signal,
        killSignal: 'SIGKILL',
        maxBuffer: 32 * 1024 * 1024,
        windowsHide: true
      }, (err, stdout, stderr) => {
        if (err === null) { resolve(stdout); return }
        const e = err as NodeJS.ErrnoException & { code?: unknown }
        if (e.name === 'AbortError' || signal.aborted) {
          reject(new DriverError('DRIVER_TIMEOUT', `${what}: ${opts.signal?.aborted === true ? 'aborted' : `no answer within ${timeoutMs} ms`}`, { cause: err }))
        } else if (e.code === 'ENOENT' || e.code === 'EACCES') {
          reject(new DriverError('DRIVER_UNREACHABLE', `${what}: cannot run ${this.virshBin} (${String(e.code)})`, { cause: err }))
        } else {
          const text = virshErrorText(stderr) || e.message
          reject(new DriverError(classifyVirshError(stderr), `${what}: ${text}`, { cause: err }))
        }
      })
    })
  }

  /**
   * The domains of this libvirtd. `--nowait`: a domain receiving a migration holds libvirt's job
   * until the migration ends, and without it domstats waits for that job (libvirt 9.0: no answer
   * within 30 s), which stopped an agent restarted mid-migration at its first list(); with it the
   * figures that need the job are left out for that domain (dominfo below fills them in).
   */
  async list (signal?: AbortSignal): Promise<VmSummary[]> {
    const stats = parseDomstats(await this.virsh(['domstats', '--raw', '--state', '--cpu-total', '--balloon', '--vcpu', '--nowait'], { signal }))
    const now = performance.now()
    const out: VmSummary[] = []
    for (const [id, s] of stats) {
      let vcpus = fnum(s['vcpu.maximum'] ?? s['vcpu.current'])
      let memKiB = fnum(s['balloon.maximum'])
      let usedKiB = fnum(s['balloon.current'])
      if (vcpus === 0 || memKiB === 0) {
        // Drivers without those stats (the test driver): dominfo has the essentials.
        try {
          const info = parseDominfo(await this.virsh(['dominfo', id], { signal }))
          vcpus = vcpus || fnum(info['CPU(s)'])
          memKiB = memKiB || (kibField(info['Max memory']) ?? 0)
          usedKiB = usedKiB || (kibField(info['Used memory']) ?? 0)
        } catch (err) {
          if (signal?.aborted === true) throw err
          // The domain went away between the two calls; list it with what we have.
        }
      }
      const state = runStateOf(fnum(s['state.state']), fnum(s['state.reason']), this.incoming.has(id))
      if (state === 'running' && this.incoming.has(id)) { this.incoming.delete(id); this.releaseImages(id) }
      if (state === 'running' && this.journals.incoming.has(id)) this.arrived(id)
      out.push({
        id,
        vcpus,
        memMiB: memKiB / 1024,
        cpuUtil: this.cpuUtil(id, s['cpu.time'], now),
        memUsedMiB: Math.min(usedKiB || memKiB, memKiB) / 1024,
        state
      })
    }
    for (const id of this.cpu.keys()) if (!stats.has(id)) this.cpu.delete(id)
    for (const id of this.statsPeriod.keys()) if (!stats.has(id)) this.statsPeriod.delete(id)
    return out
  }

  /** `virsh domstats --raw` of one VM (all groups), parsed. */
  async domainStats (id: VmId, signal?: AbortSignal): Promise<Record<string, string>> {
    checkId(id)
    const s = parseDomstats(await this.virsh(['domstats', '--raw', id], { signal }))
    const rec = s.get(id)
    if (rec === undefined) throw new DriverError('VM_NOT_FOUND', `vm ${id}: no statistics returned`)
    return rec
  }

  async start (spec: VmSpec, signal?: AbortSignal): Promise<void> {
    if (this.closed) throw new DriverError('DRIVER_FAILED', 'driver is closed')
    checkId(spec.id)
    if (!(spec.vcpus >= 1) || !(spec.memMiB >= 16)) throw new DriverError('DRIVER_FAILED', `vm ${spec.id}: needs vcpus >= 1 and memMiB >= 16`)
    const x = libvirtExtra(spec)
    let xml: string
    if (x.xml !== undefined) {
      if (!new RegExp(`<name>\\s*${spec.id.replace(/\./g, '\\.')}\\s*</name>`).test(x.xml)) throw new DriverError('DRIVER_FAILED', `vm ${spec.id}: extra.xml must name the domain "${spec.id}"`)
      xml = x.xml
    } else {
      const serial = this.serialPath(spec.id)
      if (serial !== undefined) await this.freshLog(serial)
      const o: DomainXmlOptions = { type: this.domainType, machine: this.init.machine ?? 'pc' }
      if (this.init.cpuModel !== undefined) o.cpuModel = this.init.cpuModel
      if (this.init.emulator !== undefined) o.emulator = this.init.emulator
      if (serial !== undefined) o.serialPath = serial
      xml = buildDomainXml(spec, x, o)
    }
    this.jobs.delete(spec.id)
    await this.withTempFile(`${spec.id}.xml`, xml, async file => {
      if (this.init.persistent === true) {
        await this.virsh(['define', file], { signal })
        await this.virsh(['start', spec.id], { signal })
      } else {
        await this.virsh(['create', file], { signal })
      }
    })
    this.log.info(`vm ${spec.id} started`, { vm: spec.id })
  }

  /**
   * Stops VM `id` at once (virsh destroy). After a completed outgoing migration libvirt has
   * already stopped it: then this only forgets the migration.
   */
  async stop (id: VmId, signal?: AbortSignal): Promise<void> {
    checkId(id)
    const job = this.jobs.get(id)
    const handedOver = job?.exit?.code === 0
    if (job !== undefined && job.exit !== null) this.jobs.delete(id)
    try {
      await this.virsh(['destroy', id], { signal })
    } catch (err) {
      if (!(err instanceof DriverError)) throw err
      const gone = err.code === 'VM_NOT_FOUND' && handedOver
      const notRunning = err.code === 'DRIVER_FAILED' && /not running/i.test(err.message)
      if (!gone && !notRunning) throw err
    }
    this.incoming.delete(id)
    this.releaseImages(id)
    this.storageArmed.delete(id)
    this.cpu.delete(id)
    this.statsPeriod.delete(id)
    this.log.info(`vm ${id} stopped`, { vm: id })
  }

  /**
   * VM `id` as this host's libvirtd has it, in the QEMU driver's terms: the run state as QEMU
   * would name it ('running', 'inmigrate' for an incoming copy whose guest has not run here,
   * 'postmigrate' for a source paused by a migration, 'paused', 'shutdown'...), the migration
   * status (MigrationStatus: 'none', 'active', 'postcopy-active', 'completed', 'failed'...), and
   * its size. Null when libvirt has no such domain here (after a completed p2p migration libvirt
   * has already removed the source). The spec carries no `extra`: the domain XML travels with
   * the migration itself.
   */
  async describe (id: VmId, signal?: AbortSignal): Promise<{ runStatus: string, migration: string, spec: VmSpec } | null> {
    checkId(id)
    let st: Record<string, string> | undefined
    let info: Record<string, string>
    try {
      st = parseDomstats(await this.virsh(['domstats', '--raw', '--state', id], { signal })).get(id)
      if (st === undefined) return null
      info = parseDominfo(await this.virsh(['dominfo', id], { signal }))
    } catch (err) {
      if (err instanceof DriverError && err.code === 'VM_NOT_FOUND') return null
      throw err
    }
    const state = fnum(st['state.state'])
    const reason = fnum(st['state.reason'])
    const active = await this.activeJob(id, signal)
    if (active === 'gone') return null
    const incoming = this.incoming.has(id) || active?.operation === JOB_OPERATION.migrationIn
    const migration = await this.migrationStatus(id, state, reason, active, signal)
    const runStatus = runStatusOf(state, reason, incoming)
    if (runStatus === 'running' && this.journals.incoming.has(id)) this.arrived(id)
    // The disks (with their sizes, for a target that must create them) of a guest that runs
    // here with no job under way (an incoming copy's disk queries would wait for its migration's
    // job). A finished job does not count: after a failed move with storage the status reads
    // 'failed', and a retry must still see the disks (without them it went as a memory-only
    // migration, which libvirt refused as unsafe).
    const disks = runStatus === 'running' && active === null && !migration.startsWith('postcopy') ? await this.diskFacts(id, signal) : []
    const spec: VmSpec = {
      id,
      vcpus: fnum(info['CPU(s)']),
      memMiB: (kibField(info['Max memory']) ?? 0) / 1024,
      extra: disks.length > 0
        ? { disks: disks.map(d => ({ file: d.file, format: d.format, ...(d.sizeBytes > 0 ? { sizeBytes: d.sizeBytes } : {}), ...(d.backing !== undefined ? { backing: d.backing, backingFormat: d.backingFormat ?? 'raw' } : {}) })) }
        : {}
    }
    return { runStatus, migration, spec }
  }

  /** VM `id`'s writable, unshared file disks, from its running definition. */
  private async writableDisks (id: VmId, signal?: AbortSignal): Promise<DomainDisk[]> {
    return disksOf(await this.virsh(['dumpxml', id], { signal })).filter(d => !d.readonly && !d.shareable)
  }

  /**
   * VM `id`'s writable, unshared file disks as this libvirtd runs them: image, format, virtual
   * size and allocation (`virsh domblkinfo`).
   */
  private async diskFacts (id: VmId, signal?: AbortSignal): Promise<Array<DomainDisk & { sizeBytes: number, allocatedBytes: number }>> {
    const disks = await this.writableDisks(id, signal)
    const out = []
    for (const d of disks) {
      // A disk whose size cannot be read is still reported (as local, without a size): the target
      // then refuses to create it, with the reason, rather than the VM moving without it.
      let info: Record<string, string> = {}
      try {
        info = parseDominfo(await this.virsh(['domblkinfo', id, d.dev], { signal }))
      } catch (err) {
        if (isAborted(signal) || (err instanceof DriverError && err.code === 'DRIVER_UNREACHABLE')) throw err
        this.log.debug(`vm ${id}: no size for disk ${d.dev}`, { vm: id, err })
      }
      out.push({ ...d, sizeBytes: fnum(info.Capacity), allocatedBytes: fnum(info.Allocation) })
    }
    return out
  }

  /** Whether a VM's disks (spec.extra.disks) stay put ('shared'), must move ('local'), or there are none. */
  diskLocality (spec: VmSpec): 'none' | 'shared' | 'local' {
    const disks = diskList(spec)
    if (disks.length === 0) return 'none'
    const shared = (this.init.sharedStorage ?? []).map(d => d.endsWith('/') ? d : `${d}/`)
    return disks.every(d => shared.some(dir => path.resolve(d.file).startsWith(dir)) || onNetworkFs(d.file)) ? 'shared' : 'local'
  }

  /** Source, before a migration with storage: why the disks cannot be moved, or null. */
  storageProblem (spec: VmSpec): string | null {
    for (const d of diskList(spec)) {
      try { fs.accessSync(d.file) } catch { return `disk ${d.file} does not exist on the source` }
    }
    return null
  }

  /** Bytes VM `id`'s disks hold here (each image's allocation): a full copy's size. Null: no disk. */
  async diskAllocatedBytes (id: VmId, signal?: AbortSignal): Promise<number | null> {
    checkId(id)
    const disks = await this.diskFacts(id, signal)
    return disks.length === 0 ? null : disks.reduce((a, d) => a + d.allocatedBytes, 0)
  }

  /** Where this host keeps its copy of a disk the source has at `file`. */
  targetImagePath (vm: VmId, file: string): string {
    return this.init.imageDir === undefined ? file : path.join(this.init.imageDir, vm, path.basename(file))
  }

  /**
   * Target of a migration with storage: creates each disk of `spec` empty, of its exact virtual
   * size and format, where this host keeps it, for libvirt's --copy-storage-all to fill. Refuses,
   * creating nothing, when a size is unknown, an image is already there (never overwritten) or
   * the file system lacks the space.
   */
  private async createTargetImages (spec: VmSpec, migration: string | null, signal?: AbortSignal): Promise<Array<{ from: string, to: string }>> {
    const disks = diskList(spec)
    if (disks.length === 0) throw new DriverError('DRIVER_FAILED', `vm ${spec.id}: a migration with storage needs extra.disks`)
    const plan: Array<{ from: string, to: string, format: string, sizeBytes: number, backing?: string, backingFormat?: string }> = []
    for (const [i, d] of disks.entries()) {
      if (d.sizeBytes === undefined || !(d.sizeBytes > 0)) throw new DriverError('DRIVER_FAILED', `vm ${spec.id}: extra.disks[${i}].sizeBytes is missing (the source reports each disk's virtual size)`)
      // An overlay moves alone (--copy-storage-inc): its base must be here, at the same path.
      if (d.backing !== undefined && !fs.existsSync(d.backing)) throw new DriverError('DRIVER_FAILED', `vm ${spec.id}: backing file ${d.backing} of disk ${d.file} is missing at the target (only the overlay is copied; put the same base image at the same path on this host first)`)
      const to = this.targetImagePath(spec.id, d.file)
      if (fs.existsSync(to)) throw new DriverError('DRIVER_FAILED', `vm ${spec.id}: target image ${to} already exists; never overwritten (if its directory is storage every host shares, list it in sharedStorage; if it is an old copy, remove it)`)
      plan.push({ from: d.file, to, format: d.format ?? 'raw', sizeBytes: d.sizeBytes, ...(d.backing !== undefined ? { backing: d.backing, backingFormat: d.backingFormat ?? 'raw' } : {}) })
    }
    // Free space, per file system: each image may grow to its virtual size, and the incoming
    // copies admitted before this one hold what their images may still take (reserved from the
    // check until the guest runs here or the copy goes). The check and the reservation happen
    // with no wait between them, so two copies asked for at once are never both admitted on
    // space that fits one.
    const need = new Map<string, { bytes: number, dir: string }>()
    for (const d of plan) {
      let probe = path.dirname(d.to)
      while (!fs.existsSync(probe) && probe !== path.dirname(probe)) probe = path.dirname(probe)
      const dev = String((await fsp.stat(probe)).dev)
      const e = need.get(dev) ?? { bytes: 0, dir: probe }
      e.bytes += d.sizeBytes
      need.set(dev, e)
    }
    const free = new Map<string, number>()
    for (const [dev, e] of need) {
      const st = await fsp.statfs(e.dir)
      free.set(dev, Number(st.bavail) * Number(st.bsize))
    }
    for (const [dev, e] of need) {
      const f = free.get(dev) ?? 0
      const r = this.reservedBytes(dev, spec.id)
      if (e.bytes > f - r) {
        const mib = (b: number): number => Math.ceil(b / 1048576)
        throw new DriverError('DRIVER_FAILED', `vm ${spec.id}: not enough free space at the target for its disks: ${mib(e.bytes)} MiB needed in ${e.dir}, ${Math.floor(f / 1048576)} MiB free` +
          (r > 0 ? ` of which ${mib(r)} MiB are reserved by other incoming copies` : ''))
      }
    }
    for (const [dev, e] of need) this.reservedImages.set(`${spec.id}:${dev}`, { vm: spec.id, dev, bytes: e.bytes, files: plan.map(d => d.to) })
    const created: string[] = []
    try {
      // Journaled before anything is created (none of these paths exists: checked above): a move
      // that aborts, even across a restart, deletes these and nothing else.
      const older = this.journals.incoming.get(spec.id)
      if (older !== undefined) {
        const left = older.images.filter(f => fs.existsSync(f))
        if (left.length > 0) this.log.warn(`vm ${spec.id}: images created here for an earlier incoming move${older.migration !== null ? ` (${older.migration})` : ''} are still there and are no longer tracked: ${left.join(', ')}`, { vm: spec.id })
      }
      await this.writeJournal('incoming', spec.id, { migration, images: plan.map(d => d.to) })
      for (const d of plan) {
        await fsp.mkdir(path.dirname(d.to), { recursive: true })
        const backing = d.backing !== undefined ? ['-b', d.backing, '-F', d.backingFormat ?? 'raw'] : []
        await runTool(this.init.qemuImgBinary ?? 'qemu-img', ['create', '-q', '-f', d.format, ...backing, d.to, String(d.sizeBytes)], signal)
        created.push(d.to)
      }
    } catch (err) {
      this.releaseImages(spec.id)
      for (const f of created) await fsp.rm(f, { force: true }).catch(() => {})
      if (this.journals.incoming.get(spec.id)?.migration === migration) await this.writeJournal('incoming', spec.id, null).catch(() => {})
      throw new DriverError('DRIVER_FAILED', `vm ${spec.id}: cannot create the target images: ${err instanceof Error ? err.message : String(err)}`, { cause: err })
    }
    this.log.info(`vm ${spec.id}: target images ${created.join(', ')}`, { vm: spec.id })
    return plan.map(d => ({ from: d.from, to: d.to }))
  }

  /**
   * Bytes the incoming copies of VMs other than `except` may still write on file system `dev`:
   * each reservation's size less what its images already hold there.
   */
  private reservedBytes (dev: string, except: VmId): number {
    // Synchronous: the caller checks and reserves with no wait in between.
    let total = 0
    for (const r of this.reservedImages.values()) {
      if (r.dev !== dev || r.vm === except) continue
      let used = 0
      for (const f of r.files) {
        try { const st = fs.statSync(f); if (String(st.dev) === dev) used += st.blocks * 512 } catch {}
      }
      total += Math.max(0, r.bytes - used)
    }
    return total
  }

  /** Drops the free-space reservation of VM `id`'s incoming images (it runs here, or it went). */
  private releaseImages (id: VmId): void {
    for (const [k, r] of this.reservedImages) if (r.vm === id) this.reservedImages.delete(k)
  }

  /**
   * Source, migration with storage: libvirt copies the disks itself in the migration
   * (--copy-storage-all: it mirrors them over NBD to the images the target created, and lets the
   * memory go only once they are in step), so there is nothing to start here; the disk phase
   * reads as ready and migrate() with `storage` does the copy.
   */
  async mirrorDisks (id: VmId, nbd: string, opts: { copyMode?: DiskCopyMode, maxBandwidthBytes?: number } = {}, _signal?: AbortSignal): Promise<void> {
    checkId(id)
    if (nbd !== COPY_STORAGE) throw new DriverError('DRIVER_FAILED', `vm ${id}: "${nbd}" is not a libvirt storage target (from prepareIncoming of a libvirt driver)`)
    // A finished migration of the VM (one that failed: the VM is still here) is history: its
    // figures must not stand for this one's (a retry polled the old failure for ever).
    const old = this.jobs.get(id)
    if (old !== undefined) {
      if (old.exit === null) throw new DriverError('DRIVER_FAILED', `vm ${id} is already migrating`)
      this.jobs.delete(id)
    }
    this.storageArmed.set(id, opts.copyMode ?? 'background')
  }

  /** Whether `virsh migrate` takes --copy-storage-synchronous-writes (libvirt 8.0 and later). */
  private async supportsSyncWrites (): Promise<boolean> {
    this.syncWritesFlag ??= new Promise<boolean>(resolve => {
      execFile(this.virshBin, ['help', 'migrate'], { encoding: 'utf8', timeout: 10_000, env: { ...process.env, LC_ALL: 'C', LANG: 'C' } },
        (err, out) => resolve(err === null && out.includes('--copy-storage-synchronous-writes')))
    })
    return await this.syncWritesFlag
  }

  /**
   * The guest's disk writes over about `ms`, from libvirt's block statistics of its writable,
   * unshared file disks (`domstats --raw --block`: wr.bytes, wr.reqs): bytes/s and the mean write
   * size, bytes. For planning a disk copy's mode, as the QEMU driver's does from query-blockstats.
   */
  async measureDiskWrites (id: VmId, ms = 1000, signal?: AbortSignal): Promise<{ bytesPerS: number, writeSizeBytes: number }> {
    checkId(id)
    const devs = new Set((await this.writableDisks(id, signal)).map(d => d.dev))
    const read = async (): Promise<{ bytes: number, ops: number }> =>
      blockWrites(parseDomstats(await this.virsh(['domstats', '--raw', '--block', id], { signal })).get(id), devs)
    const a = await read()
    const t0 = performance.now()
    await sleep(ms, signal)
    const b = await read()
    const dt = (performance.now() - t0) / 1000
    const ops = b.ops - a.ops
    return { bytesPerS: dt > 0 ? Math.max(0, b.bytes - a.bytes) / dt : 0, writeSizeBytes: ops > 0 ? (b.bytes - a.bytes) / ops : 0 }
  }

  /**
   * The running job of VM `id` (null: none, or not supported by this libvirt driver; 'gone': no
   * domain). On the destination of a migration libvirt keeps the incoming job's statistics to
   * itself and refuses the call ("migration statistics are available only on the source host"):
   * that refusal is how an incoming job shows, and it is returned as one (no fields).
   */
  private async activeJob (id: VmId, signal?: AbortSignal): Promise<JobInfo | null | 'gone'> {
    try {
      const j = parseJobInfo(await this.virsh(['domjobinfo', '--rawstats', id], { signal }))
      return j.type === 'unbounded' || j.type === 'bounded' ? j : null
    } catch (err) {
      if (err instanceof DriverError && err.code === 'VM_NOT_FOUND') return 'gone'
      if (err instanceof DriverError && INCOMING_JOB_REFUSAL.test(err.message)) return { type: 'unbounded', operation: JOB_OPERATION.migrationIn, fields: Object.create(null) as Record<string, string> }
      if (err instanceof DriverError && err.code === 'DRIVER_FAILED' && /not supported|no job/i.test(err.message)) return null
      throw err
    }
  }

  /** The migration status of a VM that exists here (see describe()). */
  private async migrationStatus (id: VmId, state: number, reason: number, active: JobInfo | null, signal?: AbortSignal): Promise<MigrationStatus> {
    // libvirt marks post-copy in the domain state: a paused source, a running destination.
    if ((state === ST_PAUSED && reason === PAUSED_POSTCOPY) || (state === ST_RUNNING && reason === RUNNING_POSTCOPY)) return 'postcopy-active'
    if ((state === ST_PAUSED && reason === PAUSED_POSTCOPY_FAILED) || (state === ST_RUNNING && reason === RUNNING_POSTCOPY_FAILED)) return 'postcopy-paused'
    if (this.jobs.has(id)) {
      // A migration run by this driver: its own bookkeeping knows best.
      try {
        return (await this.progress(id, signal)).status
      } catch (err) {
        if (isAborted(signal) || !(err instanceof DriverError) || err.code === 'DRIVER_UNREACHABLE') throw err
      }
    }
    if (active !== null) return fnum(active.fields.memory_total) === 0 ? 'setup' : 'active'
    // No job now: the last one this libvirtd finished, if it was an outgoing migration (an
    // incoming one that completed is how the VM came here, not a migration away from here).
    try {
      const done = parseJobInfo(await this.virsh(['domjobinfo', '--completed', '--keep-completed', '--rawstats', id], { signal }))
      if (done.operation === JOB_OPERATION.migrationOut && (done.type === 'completed' || done.type === 'failed' || done.type === 'cancelled')) return done.type
    } catch (err) {
      if (isAborted(signal) || !(err instanceof DriverError) || err.code === 'DRIVER_UNREACHABLE' || err.code === 'DRIVER_TIMEOUT') throw err
    }
    return 'none'
  }

  /**
   * Resumes a paused VM (a source whose migration the target did not take over). A VM that
   * already runs is left as it is, as QEMU's `cont` does.
   */
  async resume (id: VmId, signal?: AbortSignal): Promise<void> {
    checkId(id)
    try {
      await this.virsh(['resume', id], { signal })
    } catch (err) {
      if (!(err instanceof DriverError) || err.code !== 'DRIVER_FAILED') throw err
      const st = parseDomstate(await this.virsh(['domstate', id], { signal }))
      if (st?.state !== 'running') throw err
    }
    this.log.info(`vm ${id} resumed`, { vm: id })
  }

  /**
   * Pauses VM `id` (`virsh suspend`): HA's fence by pause, when the configuration asks for it
   * rather than a stop. A VM already paused is left as it is; the guest's memory stays, so a
   * quorate host may resume it later.
   */
  async pause (id: VmId, signal?: AbortSignal): Promise<void> {
    checkId(id)
    try {
      await this.virsh(['suspend', id], { signal })
    } catch (err) {
      if (!(err instanceof DriverError) || err.code !== 'DRIVER_FAILED') throw err
      const st = parseDomstate(await this.virsh(['domstate', id], { signal }))
      if (st?.state !== 'paused') throw err
    }
    this.log.info(`vm ${id} paused`, { vm: id })
  }

  /**
   * Destroys VM `id` only if its guest is not running here (an incoming copy, or a paused
   * source); a persistent domain of a persistent-mode driver is undefined as well. Rejects with
   * VM_RUNNING when the guest runs here or a post-copy migration involves this copy (then it
   * holds pages the other side needs), and with VM_NOT_FOUND when libvirt has no such domain.
   */
  async killIfNotRunning (id: VmId, signal?: AbortSignal): Promise<void> {
    // Not while libvirt migrates the domain in: libvirtd finishes an incoming migration by itself
    // (Finish resumes the guest here, then the source's Confirm ends the source's copy), so a state
    // read before a destroy can be stale by the time the destroy lands, and the destroy then kills
    // the only copy (seen: a restarted source's libvirtd completed the move while the target's
    // lease ran out; the target read 'inmigrate' and destroyed the guest that had just started).
    // Once the job is over the state is final (running, or the domain is gone), so the check below
    // holds until the destroy.
    const job = await this.activeJob(id, signal)
    if (job !== null && job !== 'gone' && job.operation === JOB_OPERATION.migrationIn) {
      throw new DriverError('VM_RUNNING', `vm ${id}: libvirt is migrating it in (it completes or fails the move by itself); not killing it`)
    }
    const d = await this.describe(id, signal)
    if (d === null) {
      // An incoming copy that never ran here (prepared, or its migration failed and libvirt
      // removed the domain): the space its images held is free for other copies again.
      if (this.incoming.has(id)) this.releaseImages(id)
      throw new DriverError('VM_NOT_FOUND', `vm ${id} is not on this host`)
    }
    if (d.runStatus === 'running' || d.migration.startsWith('postcopy')) throw new DriverError('VM_RUNNING', `vm ${id}: the guest is ${d.runStatus} (${d.migration}); not killing it`)
    try {
      await this.virsh(['destroy', id], { signal })
    } catch (err) {
      // A defined domain that is already shut off has nothing to destroy.
      if (!(err instanceof DriverError) || err.code !== 'DRIVER_FAILED' || !/not running/i.test(err.message)) throw err
    }
    if (this.init.persistent === true) {
      try {
        if (/^yes$/i.test(parseDominfo(await this.virsh(['dominfo', id], { signal })).Persistent ?? '')) await this.virsh(['undefine', id], { signal })
      } catch (err) {
        if (!(err instanceof DriverError) || err.code !== 'VM_NOT_FOUND') throw err
      }
    }
    if (this.jobs.get(id)?.exit !== null) this.jobs.delete(id)
    this.incoming.delete(id)
    this.releaseImages(id)
    this.cpu.delete(id)
    this.statsPeriod.delete(id)
    this.log.info(`vm ${id} destroyed (${d.runStatus}, migration ${d.migration})`, { vm: id })
  }

  async close (): Promise<void> {
    // Running `virsh migrate` processes are left alone: the migration belongs to libvirtd.
    this.closed = true
  }

  async prepareIncoming (spec: VmSpec, listenAddr: string, opts: IncomingOptions = {}, signal?: AbortSignal): Promise<{ uri: string, nbd?: string }> {
    // Post-copy and parallel channels are negotiated by the two libvirtd themselves.
    if (this.closed) throw new DriverError('DRIVER_FAILED', 'driver is closed')
    checkId(spec.id)
    const hp = splitHostPort(listenAddr)
    if (hp === null) throw new DriverError('DRIVER_FAILED', `vm ${spec.id}: listen address "${listenAddr}" is not host:port`)
    let exists = false
    try {
      const st = parseDomstate(await this.virsh(['domstate', spec.id], { signal }))
      exists = st !== null && st.state !== 'shut off'
    } catch (err) {
      if (!(err instanceof DriverError) || err.code !== 'VM_NOT_FOUND') throw err
    }
    if (exists) throw new DriverError('DRIVER_FAILED', `vm ${spec.id} is already active on this host`)
    // A finished outgoing migration of the same VM is history once it may come back.
    if (this.jobs.get(spec.id)?.exit !== null) this.jobs.delete(spec.id)
    const host = hp.host.includes(':') ? `[${hp.host}]` : hp.host
    const t: LibvirtMigrationTarget = {
      destUri: this.init.peerUri ?? `qemu+tcp://${host}/system`,
      migrateUri: hp.port === 0 ? `tcp://${host}` : `tcp://${host}:${hp.port}`,
      listenAddress: hp.host
    }
    const serial = this.serialPath(spec.id)
    if (serial !== undefined) {
      await this.freshLog(serial)
      t.serialPath = serial
    }
    if (opts.storage === true) {
      t.disks = await this.withImageLock(spec.id, async () => await this.createTargetImages(spec, opts.migration ?? null, signal))
      if (diskList(spec).some(d => d.backing !== undefined)) t.shallow = true
    }
    this.incoming.add(spec.id)
    this.log.info(`vm ${spec.id} may migrate in on ${t.migrateUri}${t.disks !== undefined ? ' with its disks' : ''}`, { vm: spec.id })
    return t.disks !== undefined ? { uri: formatMigrationTarget(t), nbd: COPY_STORAGE } : { uri: formatMigrationTarget(t) }
  }

  async migrate (id: VmId, uri: string, params: MigrationParams, signal?: AbortSignal): Promise<void> {
    if (this.closed) throw new DriverError('DRIVER_FAILED', 'driver is closed')
    checkId(id)
    const t = parseMigrationTarget(uri)
    if (t === null) throw new DriverError('DRIVER_FAILED', `vm ${id}: "${uri}" is not a libvirt migration target (from prepareIncoming of a libvirt driver)`)
    const running = this.jobs.get(id)
    if (running !== undefined && running.exit === null) throw new DriverError('DRIVER_FAILED', `vm ${id} is already migrating`)
    const storage = params.storage === true
    // TCG without a padding emulator: QEMU before 9.0 loses guest writes during the dirty syncs
    // of a RAM block sized a multiple of 256 KiB, and libvirt sizes RAM in whole MiB. The policy
    // assumes padded RAM (convergence.ts); here the old guard stays: at most 3 syncs, and a
    // post-copy at once rather than after pre-copy rounds.
    if (this.domainType === 'qemu' && this.init.emulator === undefined) {
      if (!this.warnedUnpadded) {
        this.warnedUnpadded = true
        this.log.warn('TCG guests without driver.libvirt.emulator: their RAM is not padded off a multiple of 256 KiB, which QEMU before 9.0 can corrupt in migration; migrations keep to 3 dirty syncs and switch to post-copy at once (see the configuration reference)')
      }
      params = { ...params, maxDirtySyncs: Math.min(params.maxDirtySyncs ?? 3, 3), ...(params.mode === 'hybrid' ? { mode: 'postcopy' as const } : {}) }
    }
    if (storage && (t.disks === undefined || !this.storageArmed.has(id))) throw new DriverError('DRIVER_FAILED', `vm ${id}: a migration with storage needs a target prepared with storage and mirrorDisks() first`)
    let xml = await this.virsh(['dumpxml', '--migratable', id], { signal })
    if (t.serialPath !== undefined) xml = rewriteSerialPath(xml, t.serialPath) ?? xml
    if (storage && t.disks !== undefined) xml = rewriteDiskPaths(xml, t.disks)
    // libvirt refuses post-copy with a storage copy: the memory goes by pre-copy (held to the
    // sync cap when one is given).
    if (storage && params.mode !== 'precopy') {
      this.log.info(`vm ${id}: a migration with storage runs as pre-copy (libvirt copies disks only with pre-copy), not ${params.mode}`, { vm: id })
      params = { ...params, mode: 'precopy' }
    }
    // Overlays on a base image the target holds too: only their own layer goes (the target
    // checked the base and created each overlay on it, and says so). A disk without a base is
    // copied whole either way.
    const inc = storage && t.shallow === true
    // The images this move leaves here, journaled before it starts: once the target runs the VM,
    // retireDepartedDisks() sets them aside (even after a restart of the agent).
    if (storage && t.disks !== undefined) await this.writeJournal('outgoing', id, { migration: null, images: t.disks.map(d => d.from) })
    const tmpDir = await fsp.mkdtemp(path.join(os.tmpdir(), 'starling-libvirt-'))
    const xmlFile = path.join(tmpDir, `${id}.xml`)
    await fsp.writeFile(xmlFile, xml, { mode: 0o600 })
    const args = ['-c', this.init.uri, 'migrate', '--live', '--p2p', '--migrateuri', t.migrateUri, '--listen-address', t.listenAddress, '--xml', xmlFile]
    if (params.mode !== 'precopy') args.push('--postcopy')
    if (params.autoConverge) args.push('--auto-converge')
    if (params.xbzrle) args.push('--compressed', '--comp-methods', 'xbzrle')
    if (params.multifd > 1) args.push('--parallel', '--parallel-connections', String(Math.round(params.multifd)))
    if (params.maxBandwidthBytes > 0) args.push('--bandwidth', String(Math.max(1, Math.ceil(params.maxBandwidthBytes / 1048576))))
    if (this.init.persistent === true) args.push('--persistent', '--undefinesource')
    const asked: DiskCopyMode = storage ? this.storageArmed.get(id) ?? 'background' : 'background'
    const syncWrites = asked === 'write-blocking' && await this.supportsSyncWrites()
    // What the copy really does (reported by progress()): write-blocking only with the flag.
    const copyMode: DiskCopyMode = syncWrites ? 'write-blocking' : 'background'
    if (storage) {
      args.push(...storageMigrateArgs(inc, syncWrites))
      if (inc) this.log.info(`vm ${id}: disks on a base image: only their overlays are copied (--copy-storage-inc)`, { vm: id })
      if (syncWrites) this.log.info(`vm ${id}: the disks are copied with synchronous writes (--copy-storage-synchronous-writes): the guest writes faster than the link would catch up with`, { vm: id })
      else if (asked === 'write-blocking') this.log.warn(`vm ${id}: the disk copy should block the guest's writes, but this virsh has no --copy-storage-synchronous-writes (libvirt 8.0 and later): copied in the background, it may not converge`, { vm: id })
    }
    args.push(id, t.destUri)

    const wantCap = params.mode === 'precopy' && params.maxDirtySyncs !== undefined && params.maxDirtySyncs >= 3
    const events = wantCap ? this.syncEvents(id) : null
    let proc: ChildProcess
    try {
      proc = spawn(this.virshBin, args, { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, LC_ALL: 'C', LANG: 'C' } })
    } catch (err) {
      await fsp.rm(tmpDir, { recursive: true, force: true })
      events?.stop()
      throw new DriverError('DRIVER_UNREACHABLE', `vm ${id}: cannot run ${this.virshBin}`, { cause: err })
    }
    let stderr = ''
    proc.stderr?.setEncoding('utf8')
    proc.stderr?.on('data', (d: string) => { if (stderr.length < 64 * 1024) stderr += d })
    const job: OutgoingJob = {
      target: t, proc, exit: null, ended: Promise.resolve(), postcopy: false, cancelRequested: false, last: null, final: null, tmpDir,
      cap: wantCap ? { max: Math.floor(params.maxDirtySyncs ?? 3), action: 'none', reason: '' } : null,
      storage,
      copyMode
    }
    job.ended = new Promise<void>(resolve => {
      let done = false
      const finish = (code: number | null): void => {
        if (done) return
        done = true
        job.exit = { code, stderr }
        events?.stop()
        if (storage) this.storageArmed.delete(id)
        void fsp.rm(tmpDir, { recursive: true, force: true }).catch(() => {})
        this.log.info(`vm ${id} virsh migrate ended (${code === 0 ? 'ok' : virshErrorText(stderr) || `code ${String(code)}`})`, { vm: id })
        resolve()
      }
      proc.once('error', err => { stderr += `error: ${err.message}\n`; finish(-1) })
      proc.once('close', code => finish(code))
    })
    this.jobs.set(id, job)
    this.log.info(`vm ${id} migration to ${t.destUri} via ${t.migrateUri} (${params.mode})`, { vm: id, params })

    // Accepted once libvirt shows the outgoing job (or virsh already finished).
    const deadline = performance.now() + (this.init.acceptTimeoutMs ?? 60_000)
    for (;;) {
      if (job.exit !== null) {
        if (job.exit.code === 0) return
        throw new DriverError(job.exit.code === -1 ? 'DRIVER_UNREACHABLE' : classifyVirshError(job.exit.stderr), `vm ${id}: migrate: ${virshErrorText(job.exit.stderr) || `virsh exited with ${String(job.exit.code)}`}`)
      }
      if (signal?.aborted === true || performance.now() > deadline) {
        await this.virsh(['domjobabort', id], { timeoutMs: 10_000 }).catch(() => {})
        throw new DriverError('DRIVER_TIMEOUT', `vm ${id}: migrate: libvirt did not start the job${signal?.aborted === true ? ' (aborted)' : ' in time'}`)
      }
      let info: JobInfo | null = null
      try { info = parseJobInfo(await this.virsh(['domjobinfo', '--rawstats', id], { signal })) } catch { /* retried */ }
      if (info !== null && (info.type === 'unbounded' || info.type === 'bounded') && info.operation === JOB_OPERATION.migrationOut) break
      await Promise.race([sleep(50), job.ended])
    }
    try {
      await this.virsh(['migrate-setmaxdowntime', id, String(Math.max(1, Math.round(params.downtimeLimitMs)))], { signal })
    } catch (err) {
      if (job.exit === null) this.log.warn(`vm ${id}: cannot set the downtime limit`, { err })
    }
    if (params.mode === 'postcopy') void this.switchWhenPossible(id, job)
    if (job.cap !== null) void this.capSyncs(id, job, job.cap, events)
  }

  /**
   * Follows VM `id`'s dirty syncs through `virsh event --event migration-iteration --loop` (ended
   * by stop(), and after an hour at the latest should the agent die first). The highest sync seen
   * before a listener is set is handed to it at once.
   */
  private syncEvents (id: VmId): SyncEvents {
    let max = 0
    let fn: ((syncs: number) => void) | null = null
    let ended = false
    let proc: ChildProcess | null = null
    try {
      proc = spawn(this.virshBin, ['-c', this.init.uri, 'event', '--domain', id, '--event', 'migration-iteration', '--loop', '--timeout', '3600'], {
        stdio: ['ignore', 'pipe', 'ignore'], env: { ...process.env, LC_ALL: 'C', LANG: 'C' }
      })
    } catch (err) {
      this.log.warn(`vm ${id}: cannot follow the migration's dirty syncs as events; polling instead`, { vm: id, err })
      ended = true
    }
    if (proc !== null) {
      let rest = ''
      proc.stdout?.setEncoding('utf8')
      proc.stdout?.on('data', (d: string) => {
        const lines = (rest + d).split('\n')
        rest = lines.pop() ?? ''
        for (const l of lines) {
          const n = parseIterationEvent(l)
          if (n === null || n <= max) continue
          max = n
          fn?.(n)
        }
      })
      proc.once('error', () => { ended = true })
      proc.once('close', () => { ended = true })
    }
    return {
      on: f => { fn = f; if (max > 0) f(max) },
      alive: () => !ended,
      stop: () => { ended = true; if (proc !== null && proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL') }
    }
  }

  /**
   * Holds a pre-copy to its dirty-sync cap (MigrationParams.maxDirtySyncs), which libvirt cannot
   * be told (QEMU's pause-before-switchover, which the QEMU driver uses for it, is libvirt's own).
   * QEMU counts a sync at setup, one when a round's unsent rest falls below its threshold (its
   * rate × the downtime limit), and one in the stop-and-copy; the syncs that can lose a guest's
   * write (under TCG) are those taken while the guest runs. Right after a round's sync QEMU either
   * stops the guest and completes or begins another round, and that round can be over in 50 ms,
   * too soon for any libvirt call to land (a `virsh suspend` took 0.5-2.4 s there). So the
   * driver acts before the sync that ends the last round allowed (`max - 1`): it follows the
   * round through `domjobinfo` and, once the rest of it would be sent within about three polls,
   * raises the downtime limit so far that QEMU completes at that sync whatever the guest dirtied
   * (the pause is then the rest of the round plus those pages). Should that sync come first with
   * the guest still running (the round ended sooner than foreseen; libvirt's migration-iteration
   * event, followed with `virsh event --loop`, says so within milliseconds), the limit is raised
   * at once and, if QEMU goes on to sync `max` with the guest running, the migration is cancelled
   * (`domjobabort`): the guest goes on, intact, on the source, and progress() reports why. The
   * last case is a race the driver can lose (a round of milliseconds); it is logged as an error
   * when a completed migration took more syncs than its cap.
   */
  private async capSyncs (id: VmId, job: OutgoingJob, cap: NonNullable<OutgoingJob['cap']>, events: SyncEvents | null): Promise<void> {
    let seen = 0
    const running = async (): Promise<boolean | null> => {
      try {
        return parseDomstate(await this.virsh(['domstate', id], { timeoutMs: 5000 }))?.state === 'running'
      } catch { return null }
    }
    let raising: Promise<void> | null = null
    const raise = (why: string): Promise<void> => {
      if (raising !== null) return raising
      raising = (async () => {
        try {
          await this.virsh(['migrate-setmaxdowntime', id, String(CAP_DOWNTIME_MS)], { timeoutMs: 10_000 })
          if (cap.action === 'none') cap.action = 'completing'
          cap.reason = why
          this.log.info(`vm ${id}: ${why}: downtime limit raised so that the migration completes within ${cap.max} dirty syncs`, { vm: id })
        } catch (err) {
          if (job.exit === null) this.log.warn(`vm ${id}: cannot raise the downtime limit at the dirty-sync cap`, { vm: id, err })
        }
      })()
      return raising
    }
    const cancel = async (reason: string): Promise<void> => {
      if (cap.action === 'cancelled' || job.exit !== null) return
      cap.action = 'cancelled'
      cap.reason = reason
      this.log.warn(`vm ${id}: ${reason}`, { vm: id })
      job.cancelRequested = true
      await this.virsh(['domjobabort', id], { timeoutMs: 10_000 }).catch(err => { this.log.warn(`vm ${id}: cannot cancel the migration past its sync cap`, { vm: id, err }) })
    }
    const onSync = (syncs: number): void => {
      if (syncs <= seen) return
      seen = syncs
      this.log.debug(`vm ${id}: dirty sync ${syncs}`, { vm: id })
      if (job.exit !== null || cap.action === 'cancelled') return
      if (syncs === cap.max - 1) void raise(`dirty sync ${syncs} taken`)
      else if (syncs >= cap.max) {
        // Taken with the guest running, unless QEMU had stopped it for its stop-and-copy (then it
        // is the final sync, which the cap allows).
        void (async () => {
          if (await running() === true && job.exit === null) await cancel(`cancelled: dirty sync ${syncs} was taken with the guest running, past the cap of ${cap.max}`)
        })()
      }
    }
    events?.on(onSync)
    let prev: { remaining: number, at: number } | null = null
    while (job.exit === null && !job.cancelRequested && !this.closed) {
      const t0 = performance.now()
      let info: JobInfo | null = null
      try { info = parseJobInfo(await this.virsh(['domjobinfo', '--rawstats', id], { timeoutMs: 5000 })) } catch { /* retried */ }
      const now = performance.now()
      // Each poll is a virsh process: often only near the end of the round (and while no event
      // stream reports the syncs).
      let pauseMs = events !== null && events.alive() ? 250 : 50
      if (info !== null && (info.type === 'unbounded' || info.type === 'bounded')) {
        const syncs = fnum(info.fields.memory_iteration)
        if (events === null || !events.alive()) onSync(syncs)
        const remaining = fnum(info.fields.memory_remaining)
        // The round before the last sync allowed: when will its rest be sent?
        if (raising === null && syncs === cap.max - 2 && fnum(info.fields.memory_total) > 0) {
          // Every 50 ms in this round: an idle guest's round lasts a few hundred ms, and a poll
          // every 250 ms saw it once or not at all (no rate, so no raise), after which QEMU took
          // the next sync and a 40 ms round past it (4 syncs, the guest running for the third).
          pauseMs = 50
          if (prev !== null && now > prev.at && prev.remaining > remaining) {
            const etaMs = remaining / ((prev.remaining - remaining) / (now - prev.at))
            pauseMs = Math.max(50, Math.min(pauseMs, etaMs / 4))
            // Acting takes a poll's time at most (one virsh call), and the next look comes after
            // the pause and a poll.
            if (etaMs <= Math.max(500, 3 * (now - t0) + pauseMs)) void raise(`the round before dirty sync ${cap.max - 1} ends in about ${Math.round(etaMs)} ms`)
          }
          prev = { remaining, at: now }
        }
      }
      if (raising !== null && (events !== null && events.alive())) break
      await Promise.race([sleep(pauseMs), job.ended])
    }
    // With the limit raised, the events alone watch for a sync past the cap.
    await job.ended
    if (job.exit?.code === 0 && seen > cap.max) this.log.error(`vm ${id}: the migration completed after ${seen} dirty syncs, past the cap of ${cap.max}: the guest may be damaged on the destination`, { vm: id })
  }

  /**
   * Post-copy at once: libvirt accepts the switch only once QEMU's migration has begun, which can
   * take seconds (the destination QEMU starts first). Retried in the background until it is
   * accepted or the migration ends; progress() says 'postcopy-active' once it runs.
   */
  private async switchWhenPossible (id: VmId, job: OutgoingJob): Promise<void> {
    let lastErr: unknown = null
    while (job.exit === null && !job.cancelRequested && !this.closed) {
      try {
        await this.virsh(['migrate-postcopy', id], { timeoutMs: 10_000 })
        job.postcopy = true
        this.log.info(`vm ${id} migration switched to post-copy`, { vm: id })
        return
      } catch (err) {
        lastErr = err
        await Promise.race([sleep(100), job.ended])
      }
    }
    if (job.exit?.code !== 0) this.log.warn(`vm ${id}: the migration ended before it could switch to post-copy`, { vm: id, err: lastErr })
  }

  async startPostcopy (id: VmId, signal?: AbortSignal): Promise<void> {
    checkId(id)
    const job = this.jobs.get(id)
    if (job === undefined || job.exit !== null) throw new DriverError('DRIVER_FAILED', `vm ${id}: no outgoing migration to switch to post-copy`)
    await this.virsh(['migrate-postcopy', id], { signal })
    job.postcopy = true
    this.log.info(`vm ${id} migration switched to post-copy`, { vm: id })
  }

  async progress (id: VmId, signal?: AbortSignal): Promise<MigrationProgress> {
    checkId(id)
    const job = this.jobs.get(id)
    if (job !== undefined && job.storage) {
      const p = await this.outgoingProgress(id, job, signal)
      const completed = p.status === 'completed'
      return p.disk !== undefined ? p : { ...p, disk: diskProgress(job.lastDisk, completed, job.copyMode, completed) }
    }
    if (job !== undefined) return await this.outgoingProgress(id, job, signal)
    // Armed for a migration with storage that has not begun: libvirt copies the disks within it.
    if (this.storageArmed.has(id)) return { ...emptyProgress('none'), disk: diskProgress(null, true, this.storageArmed.get(id) ?? 'background') }
    return await this.localProgress(id, signal)
  }

  /** Progress of a migration run by virsh from this driver. */
  private async outgoingProgress (id: VmId, job: OutgoingJob, signal?: AbortSignal): Promise<MigrationProgress> {
    if (job.exit === null) {
      let info: JobInfo | null = null
      let failure: unknown = null
      try {
        info = parseJobInfo(await this.virsh(['domjobinfo', '--rawstats', id], { signal }))
      } catch (err) {
        // At the end of a migration the source domain shuts down and goes away: libvirt then
        // says "not running" or "not found" until virsh migrate returns.
        if (isAborted(signal) || !(err instanceof DriverError) || err.code === 'DRIVER_UNREACHABLE') throw err
        failure = err
      }
      if (info !== null && (info.type === 'unbounded' || info.type === 'bounded')) {
        if (job.storage) job.lastDisk = info.fields
        let status: MigrationStatus = fnum(info.fields.memory_total) === 0 ? 'setup' : 'active'
        // Asked for post-copy: it runs once libvirt has paused the source for it.
        // Once seen, it stays: a source shutting down at the end no longer looks paused.
        if (job.postcopy && (job.last?.status === 'postcopy-active' || await this.pausedForPostcopy(id, signal))) status = 'postcopy-active'
        const p = jobToProgress(info, status)
        job.last = p
        return p
      }
      // No job any more (or no domain: a transient source is gone): virsh is about to report.
      await Promise.race([job.ended, sleep(2000, signal)])
      if (job.exit === null) {
        if (failure !== null) throw failure
        return job.last ?? emptyProgress('setup')
      }
    }
    return await this.finishedProgress(id, job, signal)
  }

  private async pausedForPostcopy (id: VmId, signal?: AbortSignal): Promise<boolean> {
    try {
      const st = parseDomstats(await this.virsh(['domstats', '--raw', '--state', id], { signal })).get(id)
      return st !== undefined && fnum(st['state.state']) === ST_PAUSED && fnum(st['state.reason']) === PAUSED_POSTCOPY
    } catch (err) {
      if (isAborted(signal)) throw err
      return false
    }
  }

  private async finishedProgress (id: VmId, job: OutgoingJob, signal?: AbortSignal): Promise<MigrationProgress> {
    if (job.final !== null) return job.final
    const exit = job.exit ?? { code: null, stderr: '' }
    if (exit.code !== 0) {
      const text = virshErrorText(exit.stderr) || `virsh exited with ${String(exit.code)}`
      const cancelled = job.cancelRequested || /canceled by client|cancelled by client|operation aborted/i.test(text)
      const base = job.last ?? emptyProgress('none')
      job.final = { ...base, status: cancelled ? 'cancelled' : 'failed', downtimeMs: null, errorDesc: job.cap?.action === 'cancelled' ? `${job.cap.reason} (${text})` : text }
      return job.final
    }
    // Completed: the destination keeps the job's final figures (downtime included).
    let p: MigrationProgress | null = null
    for (const [uri, where] of [[job.target.destUri, 'destination'], [this.init.uri, 'source']] as const) {
      try {
        const info = parseJobInfo(await this.virsh(['domjobinfo', '--completed', '--keep-completed', '--rawstats', id], { signal, uri }))
        if (info.type === 'completed') {
          p = jobToProgress(info, 'completed')
          // The completed job's disk figures, when it has them, over the last ones polled while it
          // ran (a short disk copy can end between two polls, the last of which saw none copied).
          if (job.storage && fnum(info.fields.disk_total) > 0 && fnum(info.fields.disk_processed) >= fnum(job.lastDisk?.disk_processed)) job.lastDisk = info.fields
          break
        }
      } catch (err) {
        if (signal?.aborted === true) throw err
        this.log.debug(`vm ${id}: no completed job statistics on the ${where}`, { err })
      }
    }
    job.final = p ?? { ...(job.last ?? emptyProgress('completed')), status: 'completed', expectedDowntimeMs: null, remainingBytes: 0 }
    return job.final
  }

  /** Progress as this host's libvirtd sees it (an incoming migration, or the last finished job). */
  private async localProgress (id: VmId, signal?: AbortSignal): Promise<MigrationProgress> {
    let info: JobInfo
    try {
      info = parseJobInfo(await this.virsh(['domjobinfo', '--rawstats', id], { signal }))
    } catch (err) {
      if (err instanceof DriverError && err.code === 'VM_NOT_FOUND' && this.incoming.has(id)) return emptyProgress('none')
      throw err
    }
    if (info.type === 'unbounded' || info.type === 'bounded') return jobToProgress(info, fnum(info.fields.memory_total) === 0 ? 'setup' : 'active')
    const done = parseJobInfo(await this.virsh(['domjobinfo', '--completed', '--keep-completed', '--rawstats', id], { signal }))
    if (done.type === 'completed') return jobToProgress(done, 'completed')
    if (done.type === 'failed') return jobToProgress(done, 'failed')
    if (done.type === 'cancelled') return jobToProgress(done, 'cancelled')
    return emptyProgress('none')
  }

  async cancel (id: VmId, signal?: AbortSignal): Promise<void> {
    checkId(id)
    const job = this.jobs.get(id)
    if (job?.postcopy === true && job.exit === null) throw new DriverError('DRIVER_FAILED', `vm ${id}: cannot cancel a migration in post-copy; the target holds the newest state`)
    if (job !== undefined) job.cancelRequested = true
    try {
      await this.virsh(['domjobabort', id], { signal })
    } catch (err) {
      if (job !== undefined) job.cancelRequested = job.exit === null
      throw err
    }
    this.log.info(`vm ${id} migration cancelled`, { vm: id })
  }

  async setDowntimeLimit (id: VmId, ms: number, signal?: AbortSignal): Promise<void> {
    checkId(id)
    if (!(ms > 0)) throw new DriverError('DRIVER_FAILED', `vm ${id}: downtime limit must be positive, got ${ms}`)
    await this.virsh(['migrate-setmaxdowntime', id, String(Math.max(1, Math.round(ms)))], { signal })
  }

  /** Changes the bandwidth cap of a running migration, bytes/s (rounded up to MiB/s). */
  async setBandwidth (id: VmId, bytesPerS: number, signal?: AbortSignal): Promise<void> {
    checkId(id)
    if (!(bytesPerS > 0)) throw new DriverError('DRIVER_FAILED', `vm ${id}: bandwidth must be positive, got ${bytesPerS}`)
    await this.virsh(['migrate-setspeed', id, String(Math.max(1, Math.ceil(bytesPerS / 1048576)))], { signal })
  }

  /**
   * The VM's memory facts for the balloon loop (the BalloonDriver port): the balloon's size and
   * the guest's own statistics through the balloon device. The first call (and a change of
   * `statsPollS`) arms the guest's statistics with `virsh dommemstat --period N --live`; they are
   * then read with the rest of the domain's statistics (`domstats`: balloon.current and .maximum,
   * and the guest's balloon.unused, .available, .usable, .swap_in, .swap_out, .major_fault and
   * .last-update, the fields of `dommemstat` in one call). A VM whose balloon device is missing
   * (libvirt refuses the period) is reported as such, and asked again only if its maximum changes.
   */
  async memoryFacts (id: VmId, statsPollS: number, signal?: AbortSignal): Promise<VmMemoryFacts> {
    checkId(id)
    const poll = Math.max(1, Math.round(statsPollS))
    let armed = this.statsPeriod.get(id)
    if (armed === undefined || (armed.period !== poll && armed.period !== 'none')) {
      try {
        await this.virsh(['dommemstat', id, '--period', String(poll), '--live'], { signal })
        armed = { period: poll }
      } catch (err) {
        if (!(err instanceof DriverError) || err.code !== 'DRIVER_FAILED' || !/balloon/i.test(err.message)) throw err
        armed = { period: 'none' }
      }
      this.statsPeriod.set(id, armed)
    }
    return memoryFactsOf(id, await this.domainStats(id, signal), armed.period !== 'none', Date.now() / 1000)
  }

  /**
   * Sets the memory the guest may use (virsh setmem --live, through the balloon), MiB. libvirt
   * accepts it at once; the guest's balloon driver gives the memory back over the next moments
   * (domainStats()'s balloon.current shows how far it got).
   */
  async balloon (id: VmId, mib: number, signal?: AbortSignal): Promise<void> {
    checkId(id)
    const s = await this.domainStats(id, signal)
    const maxKiB = fnum(s['balloon.maximum'])
    const kib = Math.round(mib * 1024)
    if (!(kib > 0) || (maxKiB > 0 && kib > maxKiB)) throw new DriverError('DRIVER_FAILED', `vm ${id}: balloon target ${mib} MiB outside (0, ${maxKiB / 1024}]`)
    await this.virsh(['setmem', id, String(kib), '--live'], { signal })
  }

  /**
   * Measures how fast VM `id`'s guest dirties its memory, bytes/s, as the QEMU driver's
   * measureDirtyRate() does, through libvirt: `virsh domdirtyrate-calc --mode page-sampling`
   * starts QEMU's page sampling over `calcTimeS` (1-60 s), then `domstats --dirtyrate` is polled
   * until libvirt reports it measured. QEMU hashes a sample of pages (libvirt leaves QEMU's default
   * of 512 per GiB) at the start and at the end and scales the share that changed to the guest's
   * memory, so the figure counts distinct pages (it saturates at the working set over the
   * measuring time) and is coarse: whole MiB/s, with a sampling error of about ±25 % (one
   * standard deviation) for a guest writing 32 MiB/s over 1 s (about 16 sampled pages hit), less
   * for more written; QEMU does not sample RAM blocks under 128 MiB. One measurement runs at a time in a QEMU: one already under way is waited out first. Resolves
   * after about `calcTimeS`; rejects with DRIVER_TIMEOUT when no result came within calcTimeS +
   * 10 s or `signal` aborted, and with virsh's error codes otherwise (VM_NOT_FOUND...).
   */
  async measureDirtyRate (id: VmId, opts: { calcTimeS?: number } = {}, signal?: AbortSignal): Promise<number> {
    checkId(id)
    const want = opts.calcTimeS ?? 1
    const calcTimeS = Number.isFinite(want) ? Math.max(1, Math.min(60, Math.round(want))) : 1
    const deadline = performance.now() + (calcTimeS + 10) * 1000
    const read = async (): Promise<DirtyRateStats> =>
      parseDirtyRate(parseDomstats(await this.virsh(['domstats', '--raw', '--dirtyrate', id], { signal })).get(id))
    const timedOut = (what: string): DriverError => new DriverError('DRIVER_TIMEOUT', `vm ${id}: dirty-rate measurement ${what} after ${calcTimeS + 10} s`)
    let withMode = true
    let before: DirtyRateStats
    let calcAt: number
    for (;;) {
      before = await read()
      if (before.status === 'measuring') {
        if (performance.now() > deadline) throw timedOut('of another caller still running')
        await sleep(100, signal)
        continue
      }
      const args = ['domdirtyrate-calc', id, '--seconds', String(calcTimeS)]
      if (withMode) args.push('--mode', 'page-sampling')
      try {
        await this.virsh(args, { signal })
        calcAt = performance.now()
        break
      } catch (err) {
        if (!(err instanceof DriverError) || err.code !== 'DRIVER_FAILED') throw err
        // An older virsh has no --mode; its only mode is page sampling.
        if (withMode && /support option --mode|unknown option.*mode/i.test(err.message)) { withMode = false; continue }
        // Another caller started one between our read and our start: wait that one out.
        if (/already being measured/i.test(err.message) && performance.now() <= deadline) { await sleep(100, signal); continue }
        throw err
      }
    }
    await sleep(Math.max(0, calcTimeS * 1000 - 50), signal)
    for (;;) {
      const r = await read()
      // A measurement of ours has a start time of its own (QEMU's clock in whole seconds, and the
      // previous one took at least a second).
      const ours = before.startTimeS === null || r.startTimeS !== before.startTimeS
      if (r.status === 'measured' && ours) {
        if (r.mibPerS === null) throw new DriverError('DRIVER_FAILED', `vm ${id}: libvirt reported the dirty-rate measurement done without a rate`)
        const bytesPerS = r.mibPerS * 1048576
        this.log.debug(`vm ${id} dirty rate ${r.mibPerS} MiB/s (${r.mode ?? 'page-sampling'}, ${calcTimeS} s, ${(performance.now() - calcAt).toFixed(0)} ms)`, { vm: id })
        return bytesPerS
      }
      // (Fields missing altogether: libvirt skipped the group this time, e.g. while busy; polled on.)
      if (r.status === 'unstarted') {
        throw new DriverError('DRIVER_FAILED', `vm ${id}: libvirt reports no dirty-rate measurement after starting one (status ${r.status})`)
      }
      if (performance.now() > deadline) throw timedOut(`still ${r.status}`)
      await sleep(100, signal)
    }
  }

  private cpuUtil (id: VmId, cpuTime: string | undefined, now: number): number {
    const ns = Number(cpuTime)
    if (cpuTime === undefined || !Number.isFinite(ns)) { this.cpu.delete(id); return 0 }
    const prev = this.cpu.get(id)
    this.cpu.set(id, { ns, at: now })
    if (prev === undefined || !(now > prev.at) || ns < prev.ns) return 0
    const used = (ns - prev.ns) / 1e9
    return Math.max(0, Math.min(1, used / ((now - prev.at) / 1000) / this.hostCpuCores))
  }

  /** Empties (or creates) a serial log file and its directory. */
  private async freshLog (file: string): Promise<void> {
    try {
      await fsp.mkdir(path.dirname(file), { recursive: true })
      await fsp.writeFile(file, '')
    } catch (err) {
      throw new DriverError('DRIVER_FAILED', `cannot prepare serial log ${file}`, { cause: err })
    }
  }

  private async withTempFile<T> (name: string, content: string, fn: (file: string) => Promise<T>): Promise<T> {
    const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'starling-libvirt-'))
    try {
      const file = path.join(dir, name)
      await fsp.writeFile(file, content, { mode: 0o600 })
      return await fn(file)
    } finally {
      await fsp.rm(dir, { recursive: true, force: true })
    }
  }
}

/** Factory in the Init/Components shape. */
export function libvirtDriver (init: LibvirtDriverInit): (components: LibvirtDriverComponents) => LibvirtDriver {
  return components => new LibvirtDriver(init, components)
}
