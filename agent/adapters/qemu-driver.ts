/**
 * The QEMU driver: runs one qemu-system-x86_64 process per VM and talks to each over QMP.
 *
 * Every VM gets a directory `<runDir>/<vmId>/` holding its QMP socket (`qmp.sock`), its serial
 * console (`serial.log`) and QEMU's own output (`qemu.log`). A migration target is started with
 * `-incoming defer` and then told where to listen (`migrate-incoming`), so that capabilities can
 * be set on it first, as post-copy requires.
 *
 * Accelerator: 'kvm' needs a /dev/kvm that boots ordinary guests. Some hosts expose a /dev/kvm
 * backed by PVM (a pagetable-based KVM for nested clouds) that opens fine but cannot boot a stock
 * Linux guest; 'auto' therefore picks kvm only when /dev/kvm is usable, the CPU advertises
 * hardware virtualisation (vmx or svm in /proc/cpuinfo) and the kvm_pvm module is not loaded, and
 * tcg otherwise. See probeAccel().
 *
 * Contract (agent/ports/hypervisor-driver.ts): every call may block on QEMU, takes an
 * AbortSignal, and rejects with DriverError (DRIVER_UNREACHABLE, DRIVER_TIMEOUT, VM_NOT_FOUND,
 * DRIVER_FAILED); nothing throws synchronously. QEMU processes outlive the driver unless
 * `dieWithAgent` or `killOnClose` says otherwise: they are started detached, in a process group
 * of their own, so that a kill -9 of the agent (or of its process group) leaves the VMs running.
 * Each VM directory also holds `spec.json` and `qemu.pid`, so that a restarted agent re-attaches
 * to its QEMU processes by their QMP sockets (reattach()).
 *
 * Re-attaching never holds the agent's start-up for long: each QEMU gets reattachTimeoutMs to
 * answer (connect, greeting, query-status). One that does not (stopped, or its main loop busy in
 * a migration's switch-over) stays known as "pending" by its pid: it is attached in the
 * background, its state is unknown until then (describe() rejects with DRIVER_UNREACHABLE, so
 * that nothing concludes it is absent), and no other copy of it is started here meanwhile.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process'
import fs from 'node:fs'
import fsp from 'node:fs/promises'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'
import type { VmId, VmRunState, VmSummary } from '../core/index.js'
import { DriverError, errorCode } from '../lib/errors.js'
import type { Logger } from '../ports/logger.js'
import type { VmSpec } from '../ports/hypervisor-driver.js'
import type { DiskCopyMode, DiskCopyProgress, IncomingOptions, MigratingDriver, MigrationParams, MigrationProgress, MigrationStatus } from '../ports/migrating-driver.js'
import { DeltaCopy, intactCopyToken, isSeal, joinHave, newToken, nodeBitmaps, prepareDeparture, probeImage, seal, splitHave, trackName, unseal } from './qemu-disk-delta.js'
import { QmpClient, QmpError } from './qmp-client.js'
import type { BalloonDriver, VmMemoryFacts } from '../ports/memory.js'

export type Accel = 'kvm' | 'tcg'

export interface QemuDriverInit {
  /** Directory holding one sub-directory per VM (QMP socket, serial log, QEMU log). */
  runDir: string
  /**
   * The QEMU binary.
   * @default 'qemu-system-x86_64'
   */
  qemuBinary?: string
  /**
   * Accelerator: 'kvm', 'tcg', or 'auto' (probeAccel()). Both ends of a migration must agree.
   * @default 'auto'
   */
  accel?: Accel | 'auto'
  /**
   * CPU model passed to -cpu. Both ends of a migration must use the same one; 'host' only works
   * between identical hosts and never under tcg.
   * @default QEMU's default model
   */
  cpuModel?: string
  /**
   * Machine type; pin it so that hosts with different QEMU versions can migrate to each other.
   * @default 'pc'
   */
  machine?: string
  /**
   * CPU cores of this host, to express VM CPU use as a fraction of the host.
   * @default os.availableParallelism()
   */
  hostCpuCores?: number
  /**
   * Default deadline of one QMP call, ms.
   * @default 10000
   */
  qmpTimeoutMs?: number
  /**
   * How long start() waits for QEMU's QMP socket to answer, ms.
   * @default 15000
   */
  startTimeoutMs?: number
  /**
   * How long stop() waits for QEMU to exit after `quit` before killing it, ms.
   * @default 5000
   */
  stopTimeoutMs?: number
  /**
   * How long reattach() gives each QEMU of a previous run to answer on QMP (connect, greeting,
   * query-status), ms; one that does not is left pending and attached in the background.
   * @default 3000
   */
  reattachTimeoutMs?: number
  /**
   * Pause between two background attempts to attach a pending QEMU, ms.
   * @default 2000
   */
  reattachRetryMs?: number
  /**
   * Kill every QEMU of this driver when the agent process dies (prctl PDEATHSIG via setpriv).
   * Right for tests; wrong in production, where VMs must survive an agent restart.
   * @default false
   */
  dieWithAgent?: boolean
  /**
   * close() kills the VMs instead of just letting go of them.
   * @default false
   */
  killOnClose?: boolean
  /**
   * Use QEMU's postcopy-preempt capability (a separate channel for the pages a post-copy target
   * faults on, so they do not queue behind the background stream) whenever post-copy is enabled,
   * on both the source and the target. 'auto' enables it when this QEMU lists the capability in
   * query-migrate-capabilities (QEMU 7.1 and later). Both ends of a migration must agree: set it
   * to false on every host when some run a QEMU without it.
   * @default 'auto'
   */
  postcopyPreempt?: boolean | 'auto'
  /**
   * Where a migration with storage creates the incoming VM's disk images: `<imageDir>/<vm>/<name>`
   * (the name of the source's image file). Unset: at the same path as on the source, which suits
   * hosts that lay out their local storage alike.
   * @default the source's path
   */
  imageDir?: string
  /**
   * The qemu-img binary (creates the target images of a migration with storage).
   * @default 'qemu-img'
   */
  qemuImgBinary?: string
  /**
   * Directories on storage every host reaches: disks under them stay put when their VM moves
   * (diskLocality() says 'shared'); every other disk is local and moves with its VM.
   * @default []
   */
  sharedStorage?: string[]
}

export interface QemuDriverComponents {
  logger: Logger
}

/** One disk of a VM (QemuVmExtra.disks). */
export interface QemuDisk {
  file: string
  format?: 'raw' | 'qcow2'
  /** Virtual size, bytes. */
  sizeBytes?: number
  /**
   * The image's backing file (a base image), as describe() reads it from QEMU. A migration with
   * storage copies only the top image and needs the same base at the same path on the target.
   */
  backing?: string
  backingFormat?: 'raw' | 'qcow2'
}

/** Driver-specific part of a VmSpec (`spec.extra`) understood by this driver. */
export interface QemuVmExtra {
  /** Direct kernel boot: the kernel image. */
  kernel?: string
  initrd?: string
  /** Kernel command line. */
  append?: string
  /**
   * Disk images, each passed as `-drive file=...,if=virtio,format=<fmt>` with the node name
   * `disk<i>`. `sizeBytes` is the image's virtual size: describe() fills it in (a migration with
   * storage creates the target image at exactly that size).
   */
  disks?: QemuDisk[]
  /**
   * Add a virtio balloon device (needed by balloon()).
   * @default true
   */
  balloon?: boolean
  /** Extra QEMU arguments, appended as they are. */
  args?: string[]
}

/** A QEMU of a previous run that did not answer on QMP at start-up (QemuDriver.reattach()). */
interface PendingAttach {
  spec: VmSpec
  dir: string
  pid: number
  /** When the first attempt began (performance.now()), ms. */
  sinceMs: number
  attempts: number
  lastError: string
  timer: NodeJS.Timeout | null
}

interface VmHandle {
  spec: VmSpec
  dir: string
  /** The child process when this driver started it; null when re-attached after a restart. */
  proc: ChildProcess | null
  pid: number
  qmp: QmpClient
  exited: Promise<void>
  hasExited: boolean
  /** How QEMU ended ('signal SIGSEGV', 'code 1'), once it has and this driver started it. */
  exitReason?: string
  incoming: boolean
  /** Balloon target, MiB; the spec's memMiB until balloon() is called. */
  balloonMiB: number
  cpuTicks: number
  cpuSampledAt: number
  /** Migration capabilities this QEMU knows (query-migrate-capabilities), read once. */
  caps?: Set<string>
  /** Source of a migration with storage: the mirror jobs to the target's NBD export. */
  mirror?: MirrorState
  /** Target of a migration with storage: the NBD export is up. */
  exporting?: boolean
  /** The source is in its switch-over (pre-switchover handled, device state going): no cancel now. */
  switching?: boolean
  /** Why this driver cancelled the last migration at the switch-over (the sync cap), if it did. */
  gateError?: string
  /** The departure of a migration with storage: its token and the qcow2 disk nodes it seals. */
  departure?: { token: string, nodes: string[] }
}

interface MirrorState {
  /** Target NBD server. */
  host: string
  port: number
  /** Mirror job ids, one per disk copied whole (`mig-disk<i>`). */
  jobs: string[]
  /** Disks the target holds an intact old copy of: only what changed since goes (backup rounds). */
  deltas: DeltaCopy[]
  copyMode: DiskCopyMode
  /** Bytes sent on the NBD connections, last measured. */
  sentBytes: number
  /** A job ended with an error. */
  error: string | null
  /** The pre-switchover handler (removed when the migration ends). */
  off?: () => void
}

/** Name of the file next to a target's QMP socket listing the images a migration with storage created. */
const CREATED_IMAGES = 'created-images.json'

/** Options of measureDirtyRate(). */
export interface DirtyRateOptions {
  /**
   * Measuring time, s (QEMU counts the sampled pages that changed across it, so a shorter time
   * under-counts pages written twice less, a longer one saturates at the working set).
   * @default 1
   */
  calcTimeS?: number
  /**
   * Pages sampled per GiB of guest memory (QEMU accepts 128-4096). More pages measure finer but
   * lengthen the pause of the next migration: QEMU reads every sampled page, and on a guest whose
   * memory is partly untouched, sampling 256 or 1024 pages of a 256 MiB guest lengthened QEMU's
   * pause in a following storage move from 74-148 ms to 331-447 ms (TCG, QEMU 7.2, THP madvise;
   * also 5 s after the measurement), while 128 per GiB left it at 77-93 ms (bench:storage,
   * PLAIN_PRE). 128 per GiB is 1024 pages in an 8 GiB guest; in a 256 MiB guest, 32 pages
   * resolve the rate to about 8 MiB/s, which the convergence steps correct during the copy.
   * @default 128, QEMU's least
   */
  samplePagesPerGiB?: number
}

/**
 * KiB added to the guest RAM under TCG, so that its size is not a multiple of 256 KiB. QEMU before
 * 9.0 syncs the dirty bitmap of such a RAM block a word at a time without flushing the TCG TLB, so
 * a page the guest wrote before a sync keeps a cached translation that no longer marks it dirty:
 * its later writes never reach the target of a live migration, which resumes with stale kernel
 * memory (seen here as oopses in the guest's hrtimer interrupt, rb_next/timerqueue_del, about one
 * migration in four, every one with a fourth dirty sync). Upstream fix: "physmem: Fix migration
 * dirty bitmap coherency with TCG memory access" (QEMU 9.0). The page-by-page path that other
 * sizes take flushes the TLB. KVM tracks dirty pages in the kernel and is not affected.
 */
export const TCG_RAM_PAD_KIB = 8

/** Result of the accelerator probe, with the reason for the log. */
export interface AccelProbe {
  accel: Accel
  reason: string
}

/**
 * Chooses kvm or tcg for this host. kvm needs all of: /dev/kvm readable and writable, hardware
 * virtualisation flags (vmx/svm) in /proc/cpuinfo, and no kvm_pvm module (PVM's /dev/kvm opens
 * but does not boot stock Linux guests).
 */
export function probeAccel (): AccelProbe {
  try { fs.accessSync('/dev/kvm', fs.constants.R_OK | fs.constants.W_OK) } catch {
    return { accel: 'tcg', reason: '/dev/kvm missing or not accessible' }
  }
  if (fs.existsSync('/sys/module/kvm_pvm')) return { accel: 'tcg', reason: '/dev/kvm is PVM (kvm_pvm loaded), which does not boot stock guests' }
  let cpuinfo = ''
  try { cpuinfo = fs.readFileSync('/proc/cpuinfo', 'utf8') } catch { /* treated as no flags */ }
  if (!/^flags\s*:.*\b(vmx|svm)\b/m.test(cpuinfo)) return { accel: 'tcg', reason: 'no vmx/svm CPU flag' }
  return { accel: 'kvm', reason: '/dev/kvm usable with hardware virtualisation' }
}

/** Splits "host:port" (IPv6 in brackets). */
function splitHostPort (addr: string): { host: string, port: number } | null {
  const m = /^\[?([^\]]*?)\]?:(\d{1,5})$/.exec(addr)
  if (m === null || m[1] === undefined || m[2] === undefined || m[1] === '') return null
  const port = Number(m[2])
  return port <= 65535 ? { host: m[1], port } : null
}

function num (v: unknown): number {
  return typeof v === 'number' && Number.isFinite(v) ? v : 0
}

/** Parses `utime + stime` (clock ticks) from /proc/<pid>/stat. */
export function parseProcStatCpuTicks (stat: string): number | null {
  const close = stat.lastIndexOf(')')
  if (close < 0) return null
  // Fields after the comm: state(3) ppid(4) ... utime(14) stime(15); index 0 here is field 3.
  const f = stat.slice(close + 2).split(' ')
  const utime = Number(f[11])
  const stime = Number(f[12])
  return Number.isFinite(utime) && Number.isFinite(stime) ? utime + stime : null
}

/** Linux's USER_HZ: the unit of /proc/<pid>/stat times on every architecture Starling runs on. */
const USER_HZ = 100

/** A VM spec's `extra`, checked. */
function qemuExtra (spec: VmSpec): QemuVmExtra {
  const x = spec.extra ?? {}
  const str = (k: string): string | undefined => {
    const v = x[k]
    if (v === undefined) return undefined
    if (typeof v !== 'string') throw new DriverError('DRIVER_FAILED', `vm ${spec.id}: extra.${k} must be a string`)
    return v
  }
  const out: QemuVmExtra = {}
  const kernel = str('kernel'); if (kernel !== undefined) out.kernel = kernel
  const initrd = str('initrd'); if (initrd !== undefined) out.initrd = initrd
  const append = str('append'); if (append !== undefined) out.append = append
  if (x.balloon !== undefined) out.balloon = x.balloon === true
  if (x.args !== undefined) {
    if (!Array.isArray(x.args) || !x.args.every(a => typeof a === 'string')) throw new DriverError('DRIVER_FAILED', `vm ${spec.id}: extra.args must be strings`)
    out.args = x.args as string[]
  }
  if (x.disks !== undefined) {
    if (!Array.isArray(x.disks)) throw new DriverError('DRIVER_FAILED', `vm ${spec.id}: extra.disks must be an array`)
    out.disks = x.disks.map((d: unknown) => {
      const o = (typeof d === 'object' && d !== null ? d : {}) as Record<string, unknown>
      if (typeof o.file !== 'string') throw new DriverError('DRIVER_FAILED', `vm ${spec.id}: extra.disks[].file must be a string`)
      const disk: QemuDisk = { file: o.file, format: o.format === 'qcow2' ? 'qcow2' : 'raw' }
      if (o.backing !== undefined) {
        if (typeof o.backing !== 'string' || !o.backing.startsWith('/')) throw new DriverError('DRIVER_FAILED', `vm ${spec.id}: extra.disks[].backing must be an absolute path`)
        disk.backing = o.backing
        disk.backingFormat = o.backingFormat === 'raw' ? 'raw' : 'qcow2'
      }
      if (o.sizeBytes !== undefined) {
        if (typeof o.sizeBytes !== 'number' || !Number.isSafeInteger(o.sizeBytes) || o.sizeBytes <= 0) throw new DriverError('DRIVER_FAILED', `vm ${spec.id}: extra.disks[].sizeBytes must be a positive integer`)
        disk.sizeBytes = o.sizeBytes
      }
      return disk
    })
  }
  return out
}

const VM_ID_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/

/** Node name of disk `i` (the format node of its -drive). */
function diskNode (i: number): string { return `disk${i}` }

/**
 * A free TCP port on `host` (bound and released: the caller binds it again at once). When `host`
 * is not an address of this process's network namespace (QEMU runs in another one), a random
 * high port: the caller retries on a clash.
 */
async function freePort (host: string): Promise<number> {
  return await new Promise<number>((resolve, reject) => {
    const srv = net.createServer()
    srv.once('error', (err: NodeJS.ErrnoException) => {
      if (err.code === 'EADDRNOTAVAIL') resolve(20_000 + Math.floor(Math.random() * 40_000))
      else reject(err)
    })
    srv.listen(0, host, () => {
      const a = srv.address()
      const port = typeof a === 'object' && a !== null ? a.port : 0
      srv.close(() => resolve(port))
    })
  })
}

async function run (cmd: string, args: string[], signal?: AbortSignal): Promise<string> {
  return await new Promise<string>((resolve, reject) => {
    execFile(cmd, args, { encoding: 'utf8', ...(signal !== undefined ? { signal } : {}) }, (err, stdout, stderr) => {
      if (err !== null) reject(new Error(`${cmd} ${args.join(' ')}: ${stderr.trim() || err.message}`, { cause: err }))
      else resolve(stdout)
    })
  })
}

/**
 * Bytes this host sent on its established TCP connections to host:port, from the kernel's
 * tcp_info (ss -ti: bytes_sent, else bytes_acked). Null when ss is missing or shows none.
 */
export async function tcpBytesSentTo (host: string, port: number): Promise<number | null> {
  let out: string
  try { out = await run('ss', ['-tinH', 'state', 'established', 'dst', host, 'dport', '=', `:${port}`]) } catch { return null }
  let total = 0
  let seen = false
  for (const m of out.matchAll(/\bbytes_(sent|acked):(\d+)/g)) {
    // bytes_sent counts retransmissions too; prefer it when present, else bytes_acked.
    if (m[1] === 'sent' || !/\bbytes_sent:/.test(out)) { total += Number(m[2]); seen = true }
  }
  return seen ? total : null
}

/** The last `chars` characters of QEMU's own output in a VM's directory ('' when there is none). */
async function qemuLogTail (dir: string, chars: number): Promise<string> {
  return await fsp.readFile(path.join(dir, 'qemu.log'), 'utf8').then(s => s.trim().slice(-chars)).catch(() => '')
}

/** Splits "nbd:host:port". */
function splitNbd (addr: string): { host: string, port: number } | null {
  if (!addr.startsWith('nbd:')) return null
  return splitHostPort(addr.slice(4))
}

/** Maps QMP failures to the port's DriverError codes, with context. */
function driverError (what: string, err: unknown): DriverError {
  if (err instanceof DriverError) return err
  const code = errorCode(err)
  if (code === 'QMP_TIMEOUT') return new DriverError('DRIVER_TIMEOUT', `${what}: timed out`, { cause: err })
  if (code === 'QMP_CLOSED' || code === 'QMP_CONNECT_FAILED') return new DriverError('DRIVER_UNREACHABLE', `${what}: QEMU is not answering`, { cause: err })
  const msg = err instanceof Error ? err.message : String(err)
  return new DriverError('DRIVER_FAILED', `${what}: ${msg}`, { cause: err })
}

export class QemuDriver implements MigratingDriver, BalloonDriver {
  readonly kind = 'qemu'
  readonly accel: Accel
  readonly accelReason: string
  private readonly vms = new Map<VmId, VmHandle>()
  /** QEMUs of a previous run that did not answer at start-up: known by pid, attached in the background. */
  private readonly pendingAttach = new Map<VmId, PendingAttach>()
  /** Free space held for incoming images (per VM and file system), until the copy runs or goes. */
  private readonly reservedImages = new Map<string, { vm: VmId, dev: string, bytes: number }>()
  private readonly log: Logger
  private readonly binary: string
  private readonly hostCpuCores: number
  private readonly qmpTimeoutMs: number
  private closed = false
  /** Guest-statistics poll interval armed per QEMU (by its QMP client), s. */
  private readonly statsArmed = new WeakMap<QmpClient, number>()

  constructor (private readonly init: QemuDriverInit, components: QemuDriverComponents) {
    this.log = components.logger.forComponent('agent:qemu-driver')
    this.binary = init.qemuBinary ?? 'qemu-system-x86_64'
    this.hostCpuCores = init.hostCpuCores ?? os.availableParallelism()
    this.qmpTimeoutMs = init.qmpTimeoutMs ?? 10_000
    const want = init.accel ?? 'auto'
    if (want === 'auto') {
      const p = probeAccel()
      this.accel = p.accel
      this.accelReason = p.reason
    } else {
      this.accel = want
      this.accelReason = 'configured'
    }
    this.log.info(`accelerator ${this.accel} (${this.accelReason})`)
  }

  /** The QEMU process id of VM `id` (attached, or pending: see reattach()), or undefined. */
  pid (id: VmId): number | undefined {
    const p = this.pendingAttach.get(id)
    if (p !== undefined) return p.pid
    const vm = this.vms.get(id)
    return vm === undefined || vm.hasExited ? undefined : vm.pid
  }

  /** The serial console log of VM `id` (written by QEMU as the guest prints). */
  serialPath (id: VmId): string { return path.join(this.init.runDir, id, 'serial.log') }

  /** Resolves when VM `id`'s QEMU process has exited (at once if it is not known). */
  async exited (id: VmId): Promise<void> { await this.vms.get(id)?.exited }

  async list (signal?: AbortSignal): Promise<VmSummary[]> {
    const out: VmSummary[] = []
    for (const [id, vm] of this.vms) {
      if (vm.hasExited) continue
      let state: VmRunState = 'stopped'
      try {
        const st = await vm.qmp.execute<{ status?: string, running?: boolean }>('query-status', undefined, this.opts(signal))
        state = this.runState(vm, st.status ?? '')
      } catch (err) {
        if (signal?.aborted === true) throw driverError('list', err)
        this.log.warn(`vm ${id}: query-status failed`, { err })
        continue
      }
      out.push({
        id,
        vcpus: vm.spec.vcpus,
        memMiB: vm.spec.memMiB,
        cpuUtil: this.sampleCpu(vm),
        memUsedMiB: Math.min(vm.balloonMiB, vm.spec.memMiB),
        state
      })
    }
    return out
  }

  async start (spec: VmSpec, signal?: AbortSignal): Promise<void> {
    await this.launch(spec, false, signal)
    this.log.info(`vm ${spec.id} started`, { vm: spec.id })
  }

  /** SIGKILL a VM's QEMU, child or re-attached. */
  private killProc (vm: VmHandle): void {
    if (vm.proc !== null) { vm.proc.kill('SIGKILL'); return }
    try { process.kill(vm.pid, 'SIGKILL') } catch { /* already gone */ }
  }

  /**
   * Re-attaches to the QEMU processes a previous run of the agent left in runDir (by their QMP
   * sockets), all at once, each within reattachTimeoutMs. Directories whose QEMU is gone are
   * skipped. A QEMU that does not answer in time stays pending (see the head comment). Returns the
   * ids attached now; pendingIds() lists the others.
   */
  async reattach (signal?: AbortSignal): Promise<VmId[]> {
    let names: string[] = []
    try { names = await fsp.readdir(this.init.runDir) } catch { return [] }
    const found: VmId[] = []
    await Promise.all(names.map(async id => {
      if (this.vms.has(id) || this.pendingAttach.has(id) || !VM_ID_RE.test(id)) return
      const dir = path.join(this.init.runDir, id)
      let spec: VmSpec
      let pid: number
      try {
        spec = JSON.parse(await fsp.readFile(path.join(dir, 'spec.json'), 'utf8')) as VmSpec
        pid = Number((await fsp.readFile(path.join(dir, 'qemu.pid'), 'utf8')).trim())
        process.kill(pid, 0)
      } catch {
        return
      }
      const t0 = performance.now()
      const r = await this.attachOnce(id, dir, spec, pid, signal)
      if (r === true) { found.push(id); return }
      if (r === 'gone') return
      const p: PendingAttach = { spec, dir, pid, sinceMs: t0, attempts: 1, lastError: r, timer: null }
      this.pendingAttach.set(id, p)
      this.log.warn(`vm ${id}: QEMU pid ${pid} did not answer on QMP within ${this.reattachTimeoutMs} ms (${r}); its state is unknown until it does: it stays pending and is attached in the background`, { vm: id, pid })
      this.retryAttach(id)
    }))
    return found.sort()
  }

  /** VMs whose QEMU runs here but is not attached yet (it did not answer on QMP at start-up). */
  pendingIds (): VmId[] { return [...this.pendingAttach.keys()].sort() }

  private get reattachTimeoutMs (): number { return this.init.reattachTimeoutMs ?? 3000 }

  /** The next background attempt for pending VM `id`, until it is attached or its QEMU is gone. */
  private retryAttach (id: VmId): void {
    const p = this.pendingAttach.get(id)
    if (p === undefined || this.closed) return
    p.timer = setTimeout(() => {
      p.timer = null
      void (async () => {
        if (this.closed || this.pendingAttach.get(id) !== p) return
        p.attempts++
        const r = await this.attachOnce(id, p.dir, p.spec, p.pid)
        if (this.closed || this.pendingAttach.get(id) !== p) return
        if (r === true || r === 'gone') {
          this.pendingAttach.delete(id)
          const after = `${Math.round(performance.now() - p.sinceMs)} ms and ${p.attempts} attempts`
          if (r === true) this.log.info(`vm ${id}: the pending QEMU pid ${p.pid} answered after ${after}; attached`, { vm: id, pid: p.pid })
          else this.log.warn(`vm ${id}: the pending QEMU pid ${p.pid} exited before it answered (${after})`, { vm: id, pid: p.pid })
          return
        }
        if (r !== p.lastError || p.attempts % 30 === 0) this.log.warn(`vm ${id}: QEMU pid ${p.pid} still does not answer on QMP (${r}); still pending after ${p.attempts} attempts`, { vm: id, pid: p.pid })
        p.lastError = r
        this.retryAttach(id)
      })()
    }, this.init.reattachRetryMs ?? 2000)
    p.timer.unref()
  }

  /**
   * One bounded attempt to attach the QEMU `pid` of VM `id`: true once attached, 'gone' when the
   * process is not there any more, else why it did not answer.
   */
  private async attachOnce (id: VmId, dir: string, spec: VmSpec, pid: number, signal?: AbortSignal): Promise<true | 'gone' | string> {
    const alive = (): boolean => { try { process.kill(pid, 0); return true } catch { return false } }
    if (!alive()) return 'gone'
    const bound = AbortSignal.timeout(this.reattachTimeoutMs)
    const sig = signal === undefined ? bound : AbortSignal.any([signal, bound])
    let qmp: QmpClient
    try {
      qmp = await QmpClient.connect(path.join(dir, 'qmp.sock'), { connectTimeoutMs: this.reattachTimeoutMs, commandTimeoutMs: this.qmpTimeoutMs, signal: sig })
    } catch (err) {
      return alive() ? `connect: ${err instanceof Error ? err.message : String(err)}` : 'gone'
    }
    let status: string
    try {
      const st = await qmp.execute<{ status?: string }>('query-status', undefined, { signal: sig, timeoutMs: this.reattachTimeoutMs })
      status = st.status ?? ''
    } catch (err) {
      // Its state is unknown: not guessed (a copy paused by a completed incoming migration and
      // a fresh incoming one are told apart only by it).
      qmp.close()
      return alive() ? `query-status: ${err instanceof Error ? err.message : String(err)}` : 'gone'
    }
    if (this.closed) { qmp.close(); return 'gone' }
    let hasExited = false
    const exited = new Promise<void>(resolve => qmp.onClose(() => {
      // The QMP socket closes when QEMU exits; wait for the pid to disappear too.
      const poll = (): void => {
        try { process.kill(pid, 0); setTimeout(poll, 20).unref() } catch { hasExited = true; const h = this.vms.get(id); if (h !== undefined) h.hasExited = true; resolve() }
      }
      poll()
    }))
    const incoming = status === 'inmigrate'
    if (!incoming) await fsp.rm(path.join(dir, CREATED_IMAGES), { force: true }).catch(() => {})
    const vm: VmHandle = { spec, dir, proc: null, pid, qmp, exited, hasExited, incoming, balloonMiB: spec.memMiB, cpuTicks: 0, cpuSampledAt: performance.now() }
    this.vms.set(id, vm)
    qmp.onEvent(e => { if (e.event === 'RESUME' && vm.incoming) { vm.incoming = false; void fsp.rm(path.join(dir, CREATED_IMAGES), { force: true }).catch(() => {}) } })
    this.log.info(`vm ${id} re-attached (pid ${pid}, ${status})`, { vm: id, pid })
    return true
  }

  /** Rejects every call that needs QMP on a VM whose QEMU is not attached yet: its state is unknown, never guessed. */
  private refusePending (id: VmId, what: string): void {
    const p = this.pendingAttach.get(id)
    if (p === undefined) return
    throw new DriverError('DRIVER_UNREACHABLE', `vm ${id}: ${what}: its QEMU (pid ${p.pid}) has not answered on QMP since the agent started (${p.lastError}); its state is unknown`)
  }

  /** The VM's run state as QEMU says it ('running', 'inmigrate', 'postmigrate', ...), its migration status and spec; null when unknown here. */
  async describe (id: VmId, signal?: AbortSignal): Promise<{ runStatus: string, migration: string, spec: VmSpec } | null> {
    this.refusePending(id, 'describe')
    const vm = this.vms.get(id)
    if (vm === undefined || vm.hasExited) return null
    try {
      const st = await vm.qmp.execute<{ status?: string }>('query-status', undefined, this.opts(signal))
      const mig = await vm.qmp.execute<{ status?: string }>('query-migrate', undefined, this.opts(signal))
      return { runStatus: st.status ?? 'unknown', migration: mig.status ?? 'none', spec: await this.specWithSizes(vm, signal) }
    } catch (err) {
      if (vm.hasExited) return null
      throw driverError(`vm ${id}: describe`, err)
    }
  }

  /** The VM's spec with each disk's virtual size filled in from QEMU (query-named-block-nodes). */
  private async specWithSizes (vm: VmHandle, signal?: AbortSignal): Promise<VmSpec> {
    const disks = qemuExtra(vm.spec).disks ?? []
    if (disks.length === 0) return vm.spec
    const nodes = await vm.qmp.execute<Array<{ 'node-name'?: string, image?: { 'virtual-size'?: number, 'full-backing-filename'?: string, 'backing-filename-format'?: string } }>>('query-named-block-nodes', { flat: true }, this.opts(signal))
    const sized = disks.map((d, i) => {
      const n = nodes.find(x => x['node-name'] === diskNode(i))
      const size = n?.image?.['virtual-size']
      const out: QemuDisk = typeof size === 'number' && size > 0 ? { ...d, sizeBytes: size } : { ...d }
      const backing = n?.image?.['full-backing-filename']
      if (typeof backing === 'string' && backing.startsWith('/')) {
        out.backing = backing
        out.backingFormat = n?.image?.['backing-filename-format'] === 'raw' ? 'raw' : 'qcow2'
      }
      return out
    })
    return { ...vm.spec, extra: { ...(vm.spec.extra ?? {}), disks: sized } }
  }

  /** Resumes a paused VM (a source whose completed migration the target did not take over). */
  async resume (id: VmId, signal?: AbortSignal): Promise<void> {
    const vm = this.get(id)
    try {
      await vm.qmp.execute('cont', undefined, this.opts(signal))
      this.log.info(`vm ${id} resumed`, { vm: id })
    } catch (err) {
      throw driverError(`vm ${id}: resume`, err)
    }
  }

  /** Pauses a running VM (QMP stop): its guest stops writing; resume() continues it. */
  async pause (id: VmId, signal?: AbortSignal): Promise<void> {
    const vm = this.get(id)
    try {
      await vm.qmp.execute('stop', undefined, this.opts(signal))
      this.log.info(`vm ${id} paused`, { vm: id })
    } catch (err) {
      throw driverError(`vm ${id}: pause`, err)
    }
  }

  /**
   * Kills VM `id` only if its guest is not running here (an incoming copy, or a paused source).
   * Rejects with VM_RUNNING otherwise: a running guest is never killed by this call.
   */
  async killIfNotRunning (id: VmId, signal?: AbortSignal): Promise<void> {
    const d = await this.describe(id, signal)
    if (d === null) {
      await this.dropFailedIncomingImages(id)
      throw new DriverError('VM_NOT_FOUND', `vm ${id} is not on this host`)
    }
    if (d.runStatus === 'running' || d.migration.startsWith('postcopy')) throw new DriverError('VM_RUNNING', `vm ${id}: the guest is ${d.runStatus} (${d.migration}); not killing it`)
    const dir = path.join(this.init.runDir, id)
    // An incoming copy of a migration with storage: the images it created were never booted
    // (its guest never ran here); they go with it. A paused source keeps its disks.
    const created = d.runStatus === 'inmigrate' ? await readCreatedImages(dir) : []
    await this.kill(id)
    for (const f of created) await fsp.rm(f, { force: true }).catch(() => {})
    await fsp.rm(dir, { recursive: true, force: true }).catch(() => {})
  }

  /**
   * An incoming copy of a migration with storage whose QEMU exited because the migration failed
   * (QEMU's "load of migration failed"): its guest never ran here, so the images it created go.
   * The list of created images is removed once the guest runs here (RESUME), so a copy that
   * ran keeps its disks whatever happens to its QEMU.
   */
  private async dropFailedIncomingImages (id: VmId): Promise<void> {
    const dir = path.join(this.init.runDir, id)
    const created = await readCreatedImages(dir)
    if (created.length === 0) return
    const log = await fsp.readFile(path.join(dir, 'qemu.log'), 'utf8').catch(() => '')
    if (!/load of migration failed/.test(log)) return
    for (const f of created) await fsp.rm(f, { force: true }).catch(() => {})
    await fsp.rm(path.join(dir, CREATED_IMAGES), { force: true }).catch(() => {})
    this.log.info(`vm ${id}: removed the images of a failed incoming copy: ${created.join(', ')}`, { vm: id })
  }

  async stop (id: VmId, signal?: AbortSignal): Promise<void> {
    const vm = this.get(id)
    if (!vm.hasExited) {
      try { await vm.qmp.execute('quit', undefined, this.opts(signal, 3000)) } catch { /* killed below if it does not exit */ }
      const waited = await Promise.race([
        vm.exited.then(() => true),
        new Promise<boolean>(resolve => setTimeout(() => resolve(false), this.init.stopTimeoutMs ?? 5000).unref())
      ])
      if (!waited) {
        this.log.warn(`vm ${id}: QEMU did not quit, killing it`, { vm: id })
        this.killProc(vm)
        await vm.exited
      }
    }
    vm.qmp.close()
    this.vms.delete(id)
    this.log.info(`vm ${id} stopped`, { vm: id })
  }

  async close (): Promise<void> {
    if (this.closed) return
    this.closed = true
    for (const p of this.pendingAttach.values()) if (p.timer !== null) clearTimeout(p.timer)
    this.pendingAttach.clear()
    for (const [id, vm] of [...this.vms]) {
      if (this.init.killOnClose === true && !vm.hasExited) {
        this.killProc(vm)
        await vm.exited
      }
      vm.qmp.close()
      this.vms.delete(id)
    }
  }

  async prepareIncoming (spec: VmSpec, listenAddr: string, opts: IncomingOptions = {}, signal?: AbortSignal): Promise<{ uri: string, nbd?: string }> {
    const hp = splitHostPort(listenAddr)
    if (hp === null) throw new DriverError('DRIVER_FAILED', `vm ${spec.id}: listen address "${listenAddr}" is not host:port`)
    if (this.pendingAttach.has(spec.id)) throw new DriverError('DRIVER_FAILED', `vm ${spec.id} is already running on this host (pid ${this.pendingAttach.get(spec.id)!.pid}, not attached yet)`)
    let created: string[] = []
    let have = new Map<number, string>()
    if (opts.storage === true) {
      const r = await this.createTargetImages(spec, signal)
      spec = r.spec
      created = r.created
      have = r.have
    }
    let vm: VmHandle
    try {
      vm = await this.launch(spec, true, signal)
    } catch (err) {
      for (const f of created) await fsp.rm(f, { force: true }).catch(() => {})
      throw err
    }
    if (created.length > 0) await fsp.writeFile(path.join(vm.dir, CREATED_IMAGES), JSON.stringify(created))
    try {
      const caps: Array<{ capability: string, state: boolean }> = [{ capability: 'events', state: true }]
      const post = opts.postcopy ?? true
      if (post) caps.push({ capability: 'postcopy-ram', state: true })
      const multifd = opts.multifd ?? 0
      if (multifd > 1) caps.push({ capability: 'multifd', state: true })
      if (post && multifd <= 1 && await this.usePreempt(vm, signal)) caps.push({ capability: 'postcopy-preempt', state: true })
      // The departure bitmaps come with a disk (they record what changes here, for a return).
      if (opts.storage === true) caps.push({ capability: 'dirty-bitmaps', state: true })
      await vm.qmp.execute('migrate-set-capabilities', { capabilities: caps }, this.opts(signal))
      if (multifd > 1) await vm.qmp.execute('migrate-set-parameters', { 'multifd-channels': multifd }, this.opts(signal))
      const host = hp.host.includes(':') ? `[${hp.host}]` : hp.host
      await vm.qmp.execute('migrate-incoming', { uri: `tcp:${host}:${hp.port}` }, this.opts(signal))
      let port = hp.port
      if (port === 0) {
        const q = await vm.qmp.execute<{ 'socket-address'?: Array<{ type?: string, port?: string | number }> }>('query-migrate', undefined, this.opts(signal))
        const sa = q['socket-address']?.find(a => a.type === 'inet')
        port = Number(sa?.port ?? 0)
        if (!(port > 0)) throw new DriverError('DRIVER_FAILED', `vm ${spec.id}: QEMU did not report the port it listens on`)
      }
      this.log.info(`vm ${spec.id} waiting for an incoming migration on ${host}:${port}`, { vm: spec.id })
      if (opts.storage !== true) return { uri: `tcp:${host}:${port}` }
      const nbd = await this.exportDisks(vm, hp.host, signal)
      return { uri: `tcp:${host}:${port}`, nbd: joinHave(nbd, have) }
    } catch (err) {
      await this.kill(spec.id)
      for (const f of created) await fsp.rm(f, { force: true }).catch(() => {})
      throw driverError(`vm ${spec.id}: prepare incoming`, err)
    }
  }

  /** Whether the disks of `spec` are local (they move with the VM), shared, or absent. */
  diskLocality (spec: VmSpec): 'none' | 'shared' | 'local' {
    let disks: QemuDisk[]
    try { disks = qemuExtra(spec).disks ?? [] } catch { return 'none' }
    if (disks.length === 0) return 'none'
    const shared = (this.init.sharedStorage ?? []).map(d => d.endsWith('/') ? d : `${d}/`)
    return disks.every(d => shared.some(dir => path.resolve(d.file).startsWith(dir))) ? 'shared' : 'local'
  }

  /** Where this host keeps its copy of a disk the source has at `file`. */
  targetImagePath (vm: VmId, file: string): string {
    return this.init.imageDir === undefined ? file : path.join(this.init.imageDir, vm, path.basename(file))
  }

  /**
   * Target of a migration with storage: creates every disk of `spec` empty, of its exact
   * virtual size, where this host keeps it (targetImagePath), and returns the spec pointing at
   * them. Refuses, creating nothing, when a size is unknown or an image is already there (it
   * would be a disk of another VM, or a copy this host must not overwrite blindly).
   */
  private async createTargetImages (spec: VmSpec, signal?: AbortSignal): Promise<{ spec: VmSpec, created: string[], have: Map<number, string> }> {
    const disks = qemuExtra(spec).disks ?? []
    if (disks.length === 0) throw new DriverError('DRIVER_FAILED', `vm ${spec.id}: a migration with storage needs extra.disks`)
    const out: QemuDisk[] = []
    // Disks this host holds an intact copy of from the VM's last visit: reused in place, and
    // only what changed since crosses the link (qemu-disk-delta.ts).
    const have = new Map<number, string>()
    const seals = new Map<string, string[]>()
    for (const [i, d] of disks.entries()) {
      if (d.sizeBytes === undefined) throw new DriverError('DRIVER_FAILED', `vm ${spec.id}: extra.disks[${i}].sizeBytes is missing (the source reports each disk's virtual size)`)
      const file = this.targetImagePath(spec.id, d.file)
      if (d.backing !== undefined && !fs.existsSync(d.backing)) throw new DriverError('DRIVER_FAILED', `vm ${spec.id}: backing file ${d.backing} of disk ${d.file} is missing at the target`)
      if (fs.existsSync(file)) {
        let why: string
        try {
          const facts = await probeImage(this.binary, file)
          const r = intactCopyToken(facts, d.backing !== undefined ? { sizeBytes: d.sizeBytes, backing: d.backing } : { sizeBytes: d.sizeBytes })
          if (r.token !== null) {
            have.set(i, r.token)
            seals.set(file, facts.bitmaps.filter(b => isSeal(b.name)).map(b => b.name))
            out.push({ ...d, file, format: 'qcow2' })
            continue
          }
          why = r.reason
        } catch (err) {
          why = err instanceof Error ? err.message : String(err)
        }
        throw new DriverError('DRIVER_FAILED', `vm ${spec.id}: target image ${file} already exists and is not an intact copy of this disk (${why}); never overwritten: if its directory is storage every host shares, list it in driver.qemu.sharedStorage so the disk stays put; if it is an old copy, remove it`)
      }
      out.push({ ...d, file })
    }
    // Free space, per file system: the images may grow to their virtual size; other incoming
    // copies hold what they may still need (reserved until they run or go).
    const need = new Map<string, { bytes: number, dir: string }>()
    for (const d of out) {
      const dir = await existingDir(path.dirname(d.file))
      const dev = String((await fsp.stat(dir)).dev)
      const e = need.get(dev) ?? { bytes: 0, dir }
      e.bytes += d.sizeBytes ?? 0
      need.set(dev, e)
    }
    for (const [dev, e] of need) {
      const st = await fsp.statfs(e.dir)
      const free = Number(st.bavail) * Number(st.bsize)
      const reserved = [...this.reservedImages.values()].filter(r => r.dev === dev).reduce((a, r) => a + r.bytes, 0)
      if (e.bytes > free - reserved) {
        throw new DriverError('DRIVER_FAILED', `vm ${spec.id}: not enough free space at the target for its disks: ${mib(e.bytes)} MiB needed in ${e.dir}, ${mib(free)} MiB free of which ${mib(reserved)} MiB are reserved by other incoming copies`)
      }
    }
    const created: string[] = []
    try {
      for (const [file, names] of seals) {
        // The seal goes before anything writes: a copy that fails half-way never looks intact.
        for (const name of names) await run(this.init.qemuImgBinary ?? 'qemu-img', ['bitmap', '--remove', file, name], signal)
        created.push(file)
      }
      for (const d of out) {
        if (seals.has(d.file)) continue
        await fsp.mkdir(path.dirname(d.file), { recursive: true })
        const backing = d.backing !== undefined ? ['-b', d.backing, '-F', d.backingFormat ?? 'qcow2'] : []
        await run(this.init.qemuImgBinary ?? 'qemu-img', ['create', '-q', '-f', d.format ?? 'raw', ...backing, d.file, String(d.sizeBytes)], signal)
        created.push(d.file)
      }
    } catch (err) {
      for (const f of created) await fsp.rm(f, { force: true }).catch(() => {})
      throw new DriverError('DRIVER_FAILED', `vm ${spec.id}: cannot create the target images: ${err instanceof Error ? err.message : String(err)}`, { cause: err })
    }
    for (const [dev, e] of need) this.reservedImages.set(`${spec.id}:${dev}`, { vm: spec.id, dev, bytes: e.bytes })
    this.log.info(`vm ${spec.id}: target images ${created.map(f => seals.has(f) ? `${f} (the copy left here, reused: only changes are sent)` : f).join(', ')}`, { vm: spec.id })
    return { spec: { ...spec, extra: { ...(spec.extra ?? {}), disks: out } }, created, have }
  }

  /** Drops the free-space reservation of VM `id`'s incoming images (it runs here, or it went). */
  private releaseImages (id: VmId): void {
    for (const [k, r] of this.reservedImages) if (r.vm === id) this.reservedImages.delete(k)
  }

  /**
   * Source, before a migration with storage: why VM `id`'s disks cannot be moved (a disk file
   * that does not exist here), or null.
   */
  storageProblem (spec: VmSpec): string | null {
    let disks: QemuDisk[]
    try { disks = qemuExtra(spec).disks ?? [] } catch (err) { return err instanceof Error ? err.message : String(err) }
    for (const d of disks) if (!fs.existsSync(d.file)) return `disk ${d.file} does not exist on the source`
    return null
  }

  /**
   * Target of a migration with storage: serves every disk of the incoming VM over NBD (writable)
   * on `host` for the source's mirror. The export stops once the migration completes here (the
   * mirrors completed before the source let the device state go).
   */
  private async exportDisks (vm: VmHandle, host: string, signal?: AbortSignal): Promise<string> {
    const disks = qemuExtra(vm.spec).disks ?? []
    let port = 0
    for (let attempt = 0; ; attempt++) {
      port = await freePort(host)
      try {
        await vm.qmp.execute('nbd-server-start', { addr: { type: 'inet', data: { host, port: String(port) } } }, this.opts(signal))
        break
      } catch (err) {
        if (attempt >= 4 || !/in use|bind|listen/i.test(err instanceof Error ? err.message : '')) throw err
      }
    }
    vm.exporting = true
    for (const [i] of disks.entries()) {
      await vm.qmp.execute('block-export-add', { type: 'nbd', id: `mig-${diskNode(i)}`, 'node-name': diskNode(i), name: diskNode(i), writable: true }, this.opts(signal))
    }
    const off = vm.qmp.onEvent(e => {
      if (e.event !== 'MIGRATION' || e.data.status !== 'completed' || vm.exporting !== true) return
      off()
      vm.exporting = false
      void this.stopExport(vm, disks.length)
    })
    const h = host.includes(':') ? `[${host}]` : host
    this.log.info(`vm ${vm.spec.id}: disks exported for the incoming mirror on ${h}:${port}`, { vm: vm.spec.id })
    return `nbd:${h}:${port}`
  }

  private async stopExport (vm: VmHandle, n: number): Promise<void> {
    try {
      for (let i = 0; i < n; i++) await vm.qmp.execute('block-export-del', { id: `mig-${diskNode(i)}` }, this.opts(undefined))
      await vm.qmp.execute('nbd-server-stop', undefined, this.opts(undefined))
    } catch (err) {
      this.log.warn(`vm ${vm.spec.id}: stopping the NBD export after the migration failed`, { err })
    }
  }

  async mirrorDisks (id: VmId, nbd: string, opts: { copyMode?: DiskCopyMode, maxBandwidthBytes?: number, fullCopy?: boolean } = {}, signal?: AbortSignal): Promise<void> {
    const vm = this.get(id)
    const { addr, have } = splitHave(nbd)
    const hp = splitNbd(addr)
    if (hp === null) throw new DriverError('DRIVER_FAILED', `vm ${id}: NBD address must be nbd:host:port, got "${nbd}"`)
    let disks: QemuDisk[]
    try { disks = qemuExtra(await this.specWithSizes(vm, signal)).disks ?? [] } catch (err) { throw driverError(`vm ${id}: mirror disks`, err) }
    if (disks.length === 0) throw new DriverError('DRIVER_FAILED', `vm ${id}: has no disk to mirror`)
    if (vm.mirror !== undefined && (vm.mirror.jobs.length > 0 || vm.mirror.deltas.length > 0)) throw new DriverError('DRIVER_FAILED', `vm ${id}: its disks are already being mirrored`)
    const copyMode = opts.copyMode ?? 'background'
    const m: MirrorState = { host: hp.host, port: hp.port, jobs: [], deltas: [], copyMode, sentBytes: 0, error: null }
    vm.mirror = m
    try {
      for (const [i, d] of disks.entries()) {
        const target = `mig-tgt-${diskNode(i)}`
        await vm.qmp.execute('blockdev-add', { driver: 'nbd', 'node-name': target, server: { type: 'inet', host: hp.host, port: String(hp.port) }, export: diskNode(i) }, this.opts(signal))
        const token = have.get(i)
        // The target holds the copy this disk left there: send only the clusters written since,
        // when this node still tracks them (a write-heavy guest gets a full mirror, which can
        // block its writes to converge).
        if (token !== undefined && copyMode === 'background' && opts.fullCopy !== true) {
          const bm = (await nodeBitmaps(vm.qmp, diskNode(i), this.opts(signal))).find(b => b.name === trackName(token))
          if (bm !== undefined && bm.persistent && bm.recording && bm.inconsistent !== true) {
            const delta = new DeltaCopy(vm.qmp, diskNode(i), target, bm.name, Math.round(opts.maxBandwidthBytes ?? 0), this.opts(undefined))
            await delta.start()
            m.deltas.push(delta)
            this.log.info(`vm ${id}: disk ${i} returns to a host holding its copy: sending the ${mib(bm.count)} MiB written since it left`, { vm: id })
            continue
          }
          this.log.info(`vm ${id}: disk ${i}: the target holds an old copy but this disk no longer tracks its changes since (${bm === undefined ? 'no bitmap' : 'bitmap not usable'}): copying it whole`, { vm: id })
        }
        const job = `mig-${diskNode(i)}`
        const args: Record<string, unknown> = {
          'job-id': job,
          device: diskNode(i),
          target,
          // A disk on a base image: only its own layer (the target has the same base).
          sync: d.backing !== undefined && opts.fullCopy !== true ? 'top' : 'full',
          'copy-mode': copyMode
        }
        if ((opts.maxBandwidthBytes ?? 0) > 0) args.speed = Math.round(opts.maxBandwidthBytes ?? 0)
        await vm.qmp.execute('blockdev-mirror', args, this.opts(signal))
        m.jobs.push(job)
      }
    } catch (err) {
      await this.dropMirrors(vm)
      throw driverError(`vm ${id}: mirror disks`, err)
    }
    const off = vm.qmp.onEvent(e => {
      if ((e.event === 'BLOCK_JOB_COMPLETED' || e.event === 'BLOCK_JOB_ERROR') && m.jobs.includes(String(e.data.device)) && typeof e.data.error === 'string' && m.error === null) {
        m.error = `${String(e.data.device)}: ${e.data.error}`
      }
    })
    m.off = off
    this.log.info(`vm ${id}: mirroring ${m.jobs.length} disk(s) whole and ${m.deltas.length} by their changes to ${addr} (${copyMode})`, { vm: id })
  }

  /** Cancels the mirror jobs of `vm` (without completing them) and removes the NBD client nodes. */
  private async dropMirrors (vm: VmHandle): Promise<void> {
    const m = vm.mirror
    if (m === undefined) return
    m.off?.()
    const disks = qemuExtra(vm.spec).disks ?? []
    for (const job of m.jobs) {
      try { await vm.qmp.execute('block-job-cancel', { device: job, force: true }, this.opts(undefined)) } catch { /* gone */ }
    }
    for (const d of m.deltas) await d.cancel()
    await this.waitJobsGone(vm, m.jobs, 10_000).catch(() => {})
    for (const [i] of disks.entries()) {
      try { await vm.qmp.execute('blockdev-del', { 'node-name': `mig-tgt-${diskNode(i)}` }, this.opts(undefined)) } catch { /* not added */ }
    }
    vm.mirror = undefined
  }

  private async waitJobsGone (vm: VmHandle, jobs: string[], timeoutMs: number): Promise<void> {
    const end = performance.now() + timeoutMs
    for (;;) {
      const list = await vm.qmp.execute<Array<{ device?: string }>>('query-block-jobs', undefined, this.opts(undefined))
      if (!list.some(j => jobs.includes(j.device ?? ''))) return
      if (performance.now() > end) throw new DriverError('DRIVER_TIMEOUT', `vm ${vm.spec.id}: block jobs ${jobs.join(', ')} still running after ${timeoutMs} ms`)
      await new Promise(resolve => setTimeout(resolve, 10))
    }
  }

  /**
   * The switch-over of a migration with storage, with the source paused in pre-switchover: the
   * ready mirrors are completed (block-job-cancel on a ready mirror copies what is still dirty and
   * leaves the target a point-in-time copy, without pivoting the source to it), the NBD client
   * nodes go, and the migration continues. A mirror that fails cancels the migration: the guest
   * resumes on the source and the target's incoming copy exits.
   */
  private async switchOver (vm: VmHandle, storage: boolean, maxSyncs: number | undefined): Promise<void> {
    const id = vm.spec.id
    vm.switching = true
    if (maxSyncs !== undefined) {
      let syncs = 0
      try {
        const q = await vm.qmp.execute<{ ram?: { 'dirty-sync-count'?: number } }>('query-migrate', undefined, this.opts(undefined))
        syncs = num(q.ram?.['dirty-sync-count'])
      } catch { syncs = Infinity }
      // The switch-over takes one more sync (with the guest stopped).
      if (syncs + 1 > maxSyncs) {
        vm.gateError = `cancelled before the switch-over: ${Number.isFinite(syncs) ? syncs : 'unknown'} dirty syncs so far, the final one would pass the cap of ${maxSyncs}`
        this.log.warn(`vm ${id}: ${vm.gateError}`, { vm: id })
        vm.switching = false
        try { await vm.qmp.execute('migrate_cancel', undefined, this.opts(undefined)) } catch { /* reported by progress */ }
        if (storage) await this.dropMirrors(vm)
        return
      }
    }
    if (storage) { await this.switchOverDisks(vm); return }
    try {
      await vm.qmp.execute('migrate-continue', { state: 'pre-switchover' }, this.opts(undefined))
    } catch (err) {
      vm.switching = false
      this.log.warn(`vm ${id}: migrate-continue failed, cancelling the migration`, { vm: id, err })
      try { await vm.qmp.execute('migrate_cancel', undefined, this.opts(undefined)) } catch { /* reported by progress */ }
    }
  }

  private async switchOverDisks (vm: VmHandle): Promise<void> {
    const m = vm.mirror
    const id = vm.spec.id
    try {
      if (m === undefined || (m.jobs.length === 0 && m.deltas.length === 0)) throw new Error('no mirror jobs to complete')
      const list = await vm.qmp.execute<Array<{ device?: string, ready?: boolean }>>('query-block-jobs', undefined, this.opts(undefined))
      const notReady = m.jobs.filter(j => list.find(x => x.device === j)?.ready !== true)
      if (notReady.length > 0) throw new Error(`mirror jobs not ready: ${notReady.join(', ')}`)
      for (const job of m.jobs) await vm.qmp.execute('block-job-cancel', { device: job }, this.opts(undefined))
      // Disks sent by their changes: the last round, with the guest paused.
      for (const d of m.deltas) await d.final(60_000)
      await this.waitJobsGone(vm, m.jobs, 60_000)
      if (m.error !== null) throw new Error(`mirror failed: ${m.error}`)
      // Every copy is complete and the guest is paused: seal the images left here.
      if (vm.departure !== undefined) {
        const unsealed = await seal(vm.qmp, vm.departure.nodes, vm.departure.token, this.opts(undefined))
        if (unsealed.length > 0) this.log.warn(`vm ${id}: the copies left here are not sealed (${unsealed.join('; ')}): a return copies them whole`, { vm: id })
      }
      const sent = await tcpBytesSentTo(m.host, m.port)
      if (sent !== null) m.sentBytes = sent
      m.jobs = []
      m.off?.()
      const disks = qemuExtra(vm.spec).disks ?? []
      for (const [i] of disks.entries()) await vm.qmp.execute('blockdev-del', { 'node-name': `mig-tgt-${diskNode(i)}` }, this.opts(undefined))
      await vm.qmp.execute('migrate-continue', { state: 'pre-switchover' }, this.opts(undefined))
      this.log.info(`vm ${id}: disks complete on the target, switching over`, { vm: id })
    } catch (err) {
      this.log.warn(`vm ${id}: disk switch-over failed, cancelling the migration`, { vm: id, err })
      vm.switching = false
      if (vm.departure !== undefined) await unseal(vm.qmp, vm.departure.nodes, vm.departure.token, this.opts(undefined))
      if (m !== undefined) m.error = m.error ?? (err instanceof Error ? err.message : String(err))
      try { await vm.qmp.execute('migrate_cancel', undefined, this.opts(undefined)) } catch { /* reported by progress */ }
      await this.dropMirrors(vm)
    }
  }

  /** The disk side of VM `id`'s migration with storage (sums of its mirror jobs), or undefined. */
  private async diskProgress (vm: VmHandle, signal?: AbortSignal): Promise<DiskCopyProgress | undefined> {
    const m = vm.mirror
    if (m === undefined) return undefined
    const list = await vm.qmp.execute<Array<{ device?: string, len?: number, offset?: number, ready?: boolean }>>('query-block-jobs', undefined, this.opts(signal))
    const mine = list.filter(j => m.jobs.includes(j.device ?? ''))
    if (m.jobs.length > 0 || m.deltas.length > 0) {
      const sent = await tcpBytesSentTo(m.host, m.port)
      if (sent !== null) m.sentBytes = sent
    }
    let total = mine.reduce((a, j) => a + num(j.len), 0)
    let done = mine.reduce((a, j) => a + num(j.offset), 0)
    for (const d of m.deltas) {
      const j = list.find(x => x.device === d.job)
      const t = d.running && j !== undefined ? d.noteJob(num(j.len), num(j.offset)) : d.totals
      total += t.total
      done += t.done
      // Writes since the last round may call for another.
      void d.maybeNextRound()
    }
    const deltaError = m.deltas.find(d => d.error !== null)?.error ?? null
    const changed = m.deltas.length > 0 && m.deltas.every(d => d.changedBytes !== null) ? m.deltas.reduce((a, d) => a + (d.changedBytes ?? 0), 0) : undefined
    return {
      ...(changed !== undefined ? { changedBytes: changed } : {}),
      jobs: mine.length + m.deltas.filter(d => d.running).length,
      ready: mine.length === m.jobs.length && mine.every(j => j.ready === true) && m.deltas.every(d => d.ready) && (m.jobs.length + m.deltas.length) > 0,
      totalBytes: total,
      doneBytes: done,
      sentBytes: m.sentBytes,
      copyMode: m.copyMode,
      error: m.error ?? deltaError
    }
  }

  /**
   * The guest's disk writes over about `ms`, from QEMU's block statistics (query-blockstats of
   * its disks): bytes/s and the mean write size, bytes. For planning a disk copy's mode.
   */
  async measureDiskWrites (id: VmId, ms = 1000, signal?: AbortSignal): Promise<{ bytesPerS: number, writeSizeBytes: number }> {
    const vm = this.get(id)
    const read = async (): Promise<{ bytes: number, ops: number }> => {
      const list = await vm.qmp.execute<Array<{ 'node-name'?: string, stats?: { wr_bytes?: number, wr_operations?: number } }>>('query-blockstats', undefined, this.opts(signal))
      let bytes = 0
      let ops = 0
      for (const e of list) {
        if (!/^disk\d+$/.test(e['node-name'] ?? '')) continue
        bytes += num(e.stats?.wr_bytes)
        ops += num(e.stats?.wr_operations)
      }
      return { bytes, ops }
    }
    try {
      const a = await read()
      const t0 = performance.now()
      await new Promise(resolve => setTimeout(resolve, ms))
      const b = await read()
      const dt = (performance.now() - t0) / 1000
      const ops = b.ops - a.ops
      return { bytesPerS: dt > 0 ? (b.bytes - a.bytes) / dt : 0, writeSizeBytes: ops > 0 ? (b.bytes - a.bytes) / ops : 0 }
    } catch (err) {
      throw driverError(`vm ${id}: measure disk writes`, err)
    }
  }

  /**
   * Bytes VM `id`'s disks hold on this host (each image's allocation, QEMU's actual-size; of a
   * disk on a base image, its own layer, which is what a copy sends): the size of a full first
   * pass, for the disk copy's estimate. Null when the VM has no disk.
   */
  async diskAllocatedBytes (id: VmId, signal?: AbortSignal): Promise<number | null> {
    const vm = this.get(id)
    const disks = qemuExtra(vm.spec).disks ?? []
    if (disks.length === 0) return null
    try {
      const nodes = await vm.qmp.execute<Array<{ 'node-name'?: string, image?: { 'actual-size'?: number } }>>('query-named-block-nodes', { flat: true }, this.opts(signal))
      return disks.reduce((a, _d, i) => a + num(nodes.find(n => n['node-name'] === diskNode(i))?.image?.['actual-size']), 0)
    } catch (err) {
      throw driverError(`vm ${id}: disk allocation`, err)
    }
  }

  /** Switches the copy mode of VM `id`'s running mirrors (QEMU 8.2+ changes it live; older ones refuse). */
  async setDiskCopyMode (id: VmId, mode: DiskCopyMode, signal?: AbortSignal): Promise<void> {
    const vm = this.get(id)
    const m = vm.mirror
    if (m === undefined || m.jobs.length === 0) throw new DriverError('DRIVER_FAILED', `vm ${id}: no disk mirror runs`)
    try {
      for (const job of m.jobs) await vm.qmp.execute('block-job-change', { id: job, type: 'mirror', 'copy-mode': mode }, this.opts(signal))
      m.copyMode = mode
    } catch (err) {
      throw driverError(`vm ${id}: set disk copy mode`, err)
    }
  }

  async migrate (id: VmId, uri: string, params: MigrationParams, signal?: AbortSignal): Promise<void> {
    const vm = this.get(id)
    if (!/^tcp:/.test(uri)) throw new DriverError('DRIVER_FAILED', `vm ${id}: migration URI must be tcp:host:port, got "${uri}"`)
    const post = params.mode !== 'precopy'
    const multifd = params.multifd > 1
    try {
      // The target enables preempt (with postcopy-ram) whenever it accepts post-copy, whatever
      // this migration's mode: the source must match it, or the target waits for a preempt
      // channel that never comes and the copy stalls after its first pages.
      const havePreempt = await this.usePreempt(vm, signal)
      const preempt = havePreempt && !multifd && (post || (params.targetPostcopy ?? true))
      const caps = [
        { capability: 'events', state: true },
        { capability: 'xbzrle', state: params.xbzrle },
        { capability: 'auto-converge', state: params.autoConverge },
        { capability: 'postcopy-ram', state: post || preempt },
        { capability: 'multifd', state: multifd }
      ]
      if (havePreempt) caps.push({ capability: 'postcopy-preempt', state: preempt })
      const storage = params.storage === true
      if (storage && (vm.mirror === undefined || (vm.mirror.jobs.length === 0 && vm.mirror.deltas.length === 0))) throw new DriverError('DRIVER_FAILED', `vm ${id}: a migration with storage needs mirrorDisks() first`)
      // Disks sent by their changes: no copy round may span the moment QEMU stops the guest
      // (DeltaCopy.hold); the final round, with the guest paused, sends what is left.
      if (storage) for (const d of vm.mirror?.deltas ?? []) await d.hold(60_000)
      let mapping: Array<Record<string, unknown>> | null = null
      vm.departure = undefined
      if (storage) {
        // Departure bitmaps go with the disks (qcow2 only): the copy left here can later take
        // back only what changed (qemu-disk-delta.ts).
        const nodes = (qemuExtra(vm.spec).disks ?? []).map((d, i) => ({ d, node: diskNode(i) })).filter(x => (x.d.format ?? 'raw') === 'qcow2').map(x => x.node)
        if (nodes.length > 0) {
          const token = newToken(Date.now())
          const dep = await prepareDeparture(vm.qmp, nodes, token, this.opts(signal))
          if (dep.skipped.length > 0) this.log.info(`vm ${id}: no departure bitmap on ${dep.skipped.join('; ')}: a return copies those disks whole`, { vm: id })
          if (dep.nodes.length > 0) {
            mapping = dep.mapping
            vm.departure = { token, nodes: dep.nodes }
            caps.push({ capability: 'dirty-bitmaps', state: true })
          }
        }
      }
      const maxSyncs = params.maxDirtySyncs
      // With storage, or a sync cap, the source stops in pre-switchover: the mirrors complete
      // while the guest is paused, before QEMU inactivates the disks and sends the device state,
      // and the sync count is checked before the final sync.
      const gate = storage || maxSyncs !== undefined
      caps.push({ capability: 'pause-before-switchover', state: gate })
      await vm.qmp.execute('migrate-set-capabilities', { capabilities: caps }, this.opts(signal))
      vm.switching = false
      vm.gateError = undefined
      if (gate) {
        const m = vm.mirror
        const offSwitch = vm.qmp.onEvent(e => {
          if (e.event !== 'MIGRATION') return
          const st = String(e.data.status)
          if (st === 'pre-switchover') { offSwitch(); void this.switchOver(vm, storage, maxSyncs) } else if (st === 'failed' || st === 'cancelled' || st === 'completed') {
            offSwitch()
            vm.switching = false
            if (st !== 'completed' && m !== undefined && vm.mirror === m) void this.dropMirrors(vm)
            // The guest runs on here: its images are no intact copy of anything left behind.
            if (st !== 'completed' && vm.departure !== undefined) void unseal(vm.qmp, vm.departure.nodes, vm.departure.token, this.opts(undefined))
          }
        })
      }
      const p: Record<string, unknown> = {
        'max-bandwidth': Math.max(0, Math.round(params.maxBandwidthBytes)),
        'downtime-limit': Math.max(1, Math.round(params.downtimeLimitMs))
      }
      if (multifd) p['multifd-channels'] = params.multifd
      if (mapping !== null) p['block-bitmap-mapping'] = mapping
      await vm.qmp.execute('migrate-set-parameters', p, this.opts(signal))
      await vm.qmp.execute('migrate', { uri }, this.opts(signal))
      this.log.info(`vm ${id} migration started to ${uri} (${params.mode})`, { vm: id, params })
      if (params.mode === 'postcopy') await vm.qmp.execute('migrate-start-postcopy', undefined, this.opts(signal))
    } catch (err) {
      throw driverError(`vm ${id}: migrate`, err)
    }
  }

  /** The migration capabilities VM `id`'s QEMU knows (query-migrate-capabilities). */
  async migrationCapabilities (id: VmId, signal?: AbortSignal): Promise<Set<string>> {
    return await this.capsOf(this.get(id), signal)
  }

  /** Whether this driver enables postcopy-preempt with post-copy (init.postcopyPreempt). */
  async postcopyPreempt (id: VmId, signal?: AbortSignal): Promise<boolean> {
    return await this.usePreempt(this.get(id), signal)
  }

  private async capsOf (vm: VmHandle, signal?: AbortSignal): Promise<Set<string>> {
    if (vm.caps !== undefined) return vm.caps
    const list = await vm.qmp.execute<Array<{ capability?: string }>>('query-migrate-capabilities', undefined, this.opts(signal))
    vm.caps = new Set(list.map(c => c.capability ?? '').filter(c => c !== ''))
    return vm.caps
  }

  private async usePreempt (vm: VmHandle, signal?: AbortSignal): Promise<boolean> {
    const want = this.init.postcopyPreempt ?? 'auto'
    if (want === false) return false
    const has = (await this.capsOf(vm, signal)).has('postcopy-preempt')
    if (!has && want === true) throw new DriverError('DRIVER_FAILED', `vm ${vm.spec.id}: this QEMU has no postcopy-preempt capability (postcopyPreempt is true)`)
    return has
  }

  /**
   * Measures how fast VM `id`'s guest dirties its memory, bytes/s, with QEMU's page sampling
   * (calc-dirty-rate, then query-dirty-rate until measured): QEMU hashes a sample of pages at the
   * start and at the end of `calcTimeS` and scales the share that changed to the guest's memory.
   * It counts distinct pages, so it saturates at the working set over the measuring time, and it
   * reads no dirty log (it works under KVM and TCG and while nothing else measures). Resolves
   * after about `calcTimeS`.
   */
  async measureDirtyRate (id: VmId, opts: DirtyRateOptions = {}, signal?: AbortSignal): Promise<number> {
    const vm = this.get(id)
    const calcTimeS = Math.max(1, Math.round(opts.calcTimeS ?? 1))
    const perGiB = Math.max(128, Math.min(4096, Math.round(opts.samplePagesPerGiB ?? 128)))
    const query = async (): Promise<{ status?: string, 'dirty-rate'?: number }> =>
      await vm.qmp.execute('query-dirty-rate', undefined, this.opts(signal))
    const sleep = async (ms: number): Promise<void> => await new Promise(resolve => setTimeout(resolve, ms))
    try {
      // Only one measurement runs at a time in a QEMU: wait out one already under way.
      for (let i = 0; i < 100 && (await query()).status === 'measuring'; i++) await sleep(100)
      const started = performance.now()
      // Not the dirty-bitmap mode: under TCG, QEMU 7.2 stopped answering in it (three of three tries).
      await vm.qmp.execute('calc-dirty-rate', { 'calc-time': calcTimeS, 'sample-pages': perGiB, mode: 'page-sampling' }, this.opts(signal))
      const deadline = started + calcTimeS * 1000 + 10_000
      for (;;) {
        await sleep(100)
        if (signal?.aborted === true) throw new DriverError('DRIVER_FAILED', `vm ${id}: dirty-rate measurement aborted`)
        const q = await query()
        // QEMU sets 'measuring' before calc-dirty-rate returns; the elapsed time guards anyway.
        if (q.status === 'measured' && performance.now() - started >= calcTimeS * 1000 - 50) {
          const mibps = q['dirty-rate'] ?? -1
          if (!(mibps >= 0)) throw new DriverError('DRIVER_FAILED', `vm ${id}: QEMU reported no dirty rate`)
          // QEMU reports MiB/s (sampled share x the RAM block's size in MiB / time).
          return mibps * 1024 * 1024
        }
        if (performance.now() > deadline) throw new DriverError('DRIVER_TIMEOUT', `vm ${id}: dirty-rate measurement still ${q.status ?? 'unknown'} after ${calcTimeS + 10} s`)
      }
    } catch (err) {
      throw driverError(`vm ${id}: measure dirty rate`, err)
    }
  }

  /**
   * Guest memory the VM's QEMU holds resident, bytes: the resident size of the anonymous mapping
   * of exactly the guest's RAM size in /proc/<pid>/smaps (pages the guest never touched are not
   * resident, and a migration sends them as zero pages for a few bytes each). Null when no such
   * mapping is found (a file- or hugepage-backed RAM, or another OS).
   */
  residentGuestBytes (id: VmId): number | null {
    const vm = this.get(id)
    let smaps: string
    try { smaps = fs.readFileSync(`/proc/${vm.pid}/smaps`, 'utf8') } catch { return null }
    const wantKiB = this.ramKiB(vm.spec)
    let inRam = false
    let sizeKiB = 0
    let best: number | null = null
    for (const line of smaps.split('\n')) {
      if (/^[0-9a-f]+-[0-9a-f]+ /.test(line)) {
        const f = line.trim().split(/\s+/)
        inRam = (f[1] ?? '').startsWith('rw') && f.length === 5 // anonymous: no path
        sizeKiB = 0
      } else if (inRam && line.startsWith('Size:')) {
        sizeKiB = Number(line.split(/\s+/)[1])
      } else if (inRam && line.startsWith('Rss:') && sizeKiB === wantKiB) {
        const rss = Number(line.split(/\s+/)[1]) * 1024
        if (Number.isFinite(rss)) best = Math.max(best ?? 0, rss)
      }
    }
    return best
  }

  /**
   * driverError(), and when the QMP connection closed because QEMU itself ended, how it ended and
   * the end of its log (a crash in a migration says more there than 'not answering').
   */
  private async goneError (vm: VmHandle, what: string, err: unknown): Promise<DriverError> {
    const e = driverError(what, err)
    if (e.code !== 'DRIVER_UNREACHABLE') return e
    const ended = await Promise.race([vm.exited.then(() => true), new Promise<false>(resolve => setTimeout(() => resolve(false), 500).unref())])
    if (!ended) return e
    const tail = await qemuLogTail(vm.dir, 800)
    return new DriverError('DRIVER_UNREACHABLE', `${what}: QEMU exited${vm.exitReason !== undefined ? ` (${vm.exitReason})` : ''}${tail !== '' ? `; its log ends: ${tail}` : ', its log is empty'}`, { cause: err })
  }

  async startPostcopy (id: VmId, signal?: AbortSignal): Promise<void> {
    const vm = this.get(id)
    try {
      await vm.qmp.execute('migrate-start-postcopy', undefined, this.opts(signal))
      this.log.info(`vm ${id} migration switched to post-copy`, { vm: id })
    } catch (err) {
      throw driverError(`vm ${id}: start post-copy`, err)
    }
  }

  async progress (id: VmId, signal?: AbortSignal): Promise<MigrationProgress> {
    const vm = this.get(id)
    let q: Record<string, unknown> = {}
    // QEMU sets 'completed' a moment before it fills in total-time and downtime: ask again then.
    for (let attempt = 0; attempt < 20; attempt++) {
      try {
        q = await vm.qmp.execute<Record<string, unknown>>('query-migrate', undefined, this.opts(signal))
      } catch (err) {
        throw await this.goneError(vm, `vm ${id}: query-migrate`, err)
      }
      if (q.status !== 'completed' || num(q['total-time']) > 0 || vm.incoming) break
      await new Promise(resolve => setTimeout(resolve, 10))
    }
    const ram = (typeof q.ram === 'object' && q.ram !== null ? q.ram : {}) as Record<string, unknown>
    const status = (typeof q.status === 'string' ? q.status : 'none') as MigrationStatus
    let disk: DiskCopyProgress | undefined
    try { disk = await this.diskProgress(vm, signal) } catch (err) { throw driverError(`vm ${id}: query-block-jobs`, err) }
    return {
      status,
      totalTimeMs: num(q['total-time']),
      downtimeMs: typeof q.downtime === 'number' ? q.downtime : null,
      expectedDowntimeMs: typeof q['expected-downtime'] === 'number' ? q['expected-downtime'] : null,
      transferredBytes: num(ram.transferred),
      remainingBytes: num(ram.remaining),
      totalBytes: num(ram.total),
      dirtySyncCount: num(ram['dirty-sync-count']),
      dirtyPagesRate: num(ram['dirty-pages-rate']),
      pageSizeBytes: num(ram['page-size']) || 4096,
      mbps: num(ram.mbps),
      postcopyRequests: num(ram['postcopy-requests']),
      cpuThrottlePercent: num(q['cpu-throttle-percentage']),
      errorDesc: typeof q['error-desc'] === 'string' ? q['error-desc'] : (vm.mirror?.error ?? vm.gateError ?? null),
      ...(disk !== undefined ? { disk } : {})
    }
  }

  async cancel (id: VmId, signal?: AbortSignal): Promise<void> {
    const vm = this.get(id)
    const p = await this.progress(id, signal)
    if (p.status === 'postcopy-active' || p.status === 'postcopy-paused' || p.status === 'postcopy-recover') {
      throw new DriverError('DRIVER_FAILED', `vm ${id}: cannot cancel a migration in post-copy (${p.status}); the target holds the newest state`)
    }
    if (vm.switching === true) {
      // The device state is on its way (or about to be): a cancel now could leave the target
      // running while the source resumes. The next progress sample shows the outcome.
      throw new DriverError('DRIVER_FAILED', `vm ${id}: cannot cancel during the switch-over (${p.status})`)
    }
    try {
      // Disk mirrors (a migration with storage, also one that never reached the memory copy):
      // cancelled without completing; the source keeps writing its own disk only.
      const jobs = await vm.qmp.execute<Array<{ device?: string }>>('query-block-jobs', undefined, this.opts(signal))
      const orphan = jobs.map(j => j.device ?? '').filter(j => j.startsWith('mig-disk'))
      if (vm.mirror === undefined && orphan.length > 0) vm.mirror = { host: '', port: 0, jobs: orphan, deltas: [], copyMode: 'background', sentBytes: 0, error: null }
      if (p.status === 'none' || p.status === 'completed' || p.status === 'failed' || p.status === 'cancelled') {
        await this.dropMirrors(vm)
        this.log.info(`vm ${id} disk mirrors cancelled (migration ${p.status})`, { vm: id })
        return
      }
      await vm.qmp.execute('migrate_cancel', undefined, this.opts(signal))
      await this.dropMirrors(vm)
      this.log.info(`vm ${id} migration cancelled (was ${p.status})`, { vm: id })
    } catch (err) {
      throw driverError(`vm ${id}: cancel migration`, err)
    }
  }

  async setDowntimeLimit (id: VmId, ms: number, signal?: AbortSignal): Promise<void> {
    const vm = this.get(id)
    try {
      await vm.qmp.execute('migrate-set-parameters', { 'downtime-limit': Math.max(1, Math.round(ms)) }, this.opts(signal))
    } catch (err) {
      throw driverError(`vm ${id}: set downtime limit`, err)
    }
  }

  async balloon (id: VmId, mib: number, signal?: AbortSignal): Promise<void> {
    const vm = this.get(id)
    if (!(mib > 0) || mib > vm.spec.memMiB) throw new DriverError('DRIVER_FAILED', `vm ${id}: balloon target ${mib} MiB outside (0, ${vm.spec.memMiB}]`)
    try {
      await vm.qmp.execute('balloon', { value: Math.round(mib * 1024 * 1024) }, this.opts(signal))
      vm.balloonMiB = mib
    } catch (err) {
      throw driverError(`vm ${id}: balloon`, err)
    }
  }

  /**
   * VM `id`'s memory (BalloonDriver): the balloon's actual size (query-balloon) and the guest's
   * statistics through the balloon device (qom-get guest-stats, armed with
   * guest-stats-polling-interval on first use). QEMU re-arms its statistics poll only when the
   * guest answers, so the age of `last-update` tells a guest that stopped answering. A VM without
   * a balloon device (or whose guest has no balloon driver bound yet) reports `balloon: false`.
   */
  async memoryFacts (id: VmId, statsPollS: number, signal?: AbortSignal): Promise<VmMemoryFacts> {
    const vm = this.get(id)
    const none: VmMemoryFacts = { id, maxMiB: vm.spec.memMiB, balloon: false, actualMiB: null, guest: null }
    let actual: number
    try {
      const q = await vm.qmp.execute<{ actual?: number }>('query-balloon', undefined, this.opts(signal))
      // Under TCG the RAM is a few KiB over the VM's size (TCG_RAM_PAD_KIB): not memory to report.
      actual = Math.min(num(q.actual) / 1048576, vm.spec.memMiB)
    } catch (err) {
      // DeviceNotActive: no balloon device, or no guest driver behind it.
      if (err instanceof QmpError && err.code === 'QMP_COMMAND_FAILED') return none
      throw driverError(`vm ${id}: query-balloon`, err)
    }
    const dev = '/machine/peripheral/balloon0'
    const poll = Math.max(1, Math.round(statsPollS))
    try {
      if (this.statsArmed.get(vm.qmp) !== poll) {
        await vm.qmp.execute('qom-set', { path: dev, property: 'guest-stats-polling-interval', value: poll }, this.opts(signal))
        this.statsArmed.set(vm.qmp, poll)
      }
      const g = await vm.qmp.execute<{ stats?: Record<string, number>, 'last-update'?: number }>('qom-get', { path: dev, property: 'guest-stats' }, this.opts(signal))
      const st = g.stats ?? {}
      const last = num(g['last-update'])
      // Unsupported statistics read -1 (and 0 before the first answer).
      const mib = (k: string): number | null => typeof st[k] === 'number' && (st[k] as number) >= 0 ? (st[k] as number) / 1048576 : null
      const cnt = (k: string): number | null => typeof st[k] === 'number' && (st[k] as number) >= 0 ? st[k] as number : null
      const guest = last <= 0
        ? null
        : {
            totalMiB: mib('stat-total-memory'),
            freeMiB: mib('stat-free-memory'),
            availableMiB: mib('stat-available-memory'),
            majorFaults: cnt('stat-major-faults'),
            swapInPages: cnt('stat-swap-in'),
            swapOutPages: cnt('stat-swap-out'),
            ageS: Math.max(0, Date.now() / 1000 - last)
          }
      return { id, maxMiB: vm.spec.memMiB, balloon: true, actualMiB: actual, guest }
    } catch (err) {
      // A balloon device under another id (a VM started by hand): the size, without statistics.
      if (err instanceof QmpError && err.code === 'QMP_COMMAND_FAILED') return { id, maxMiB: vm.spec.memMiB, balloon: true, actualMiB: actual, guest: null }
      throw driverError(`vm ${id}: guest memory statistics`, err)
    }
  }

  /** Kills VM `id`'s QEMU at once (SIGKILL) and forgets it, a pending one too (by its pid); no error if it is unknown. */
  async kill (id: VmId): Promise<void> {
    this.releaseImages(id)
    const p = this.pendingAttach.get(id)
    if (p !== undefined) {
      if (p.timer !== null) clearTimeout(p.timer)
      this.pendingAttach.delete(id)
      try { process.kill(p.pid, 'SIGKILL') } catch { /* already gone */ }
      // Not our child: wait for the pid to go (a SIGKILL is not refused; bounded all the same).
      for (let i = 0; i < 250; i++) {
        try { process.kill(p.pid, 0) } catch { break }
        await new Promise(resolve => setTimeout(resolve, 20))
      }
      this.log.info(`vm ${id}: killed its pending QEMU pid ${p.pid}`, { vm: id, pid: p.pid })
      return
    }
    const vm = this.vms.get(id)
    if (vm === undefined) return
    if (!vm.hasExited) this.killProc(vm)
    await vm.exited
    vm.qmp.close()
    this.vms.delete(id)
  }

  private get (id: VmId): VmHandle {
    this.refusePending(id, 'cannot act on it')
    const vm = this.vms.get(id)
    if (vm === undefined || vm.hasExited) throw new DriverError('VM_NOT_FOUND', `vm ${id} is not running on this host${vm?.exitReason !== undefined ? ` (its QEMU exited: ${vm.exitReason})` : ''}`)
    return vm
  }

  private opts (signal: AbortSignal | undefined, timeoutMs = this.qmpTimeoutMs): { signal?: AbortSignal, timeoutMs: number } {
    return signal === undefined ? { timeoutMs } : { signal, timeoutMs }
  }

  private runState (vm: VmHandle, status: string): VmRunState {
    if (vm.incoming || status === 'inmigrate' || status === 'finish-migrate' || status === 'postmigrate') {
      if (status === 'running') { vm.incoming = false; return 'running' }
      return 'migrating'
    }
    if (status === 'running') return 'running'
    if (status === 'shutdown' || status === 'guest-panicked' || status === 'internal-error') return 'stopped'
    return 'paused'
  }

  private sampleCpu (vm: VmHandle): number {
    let stat: string
    try { stat = fs.readFileSync(`/proc/${vm.pid}/stat`, 'utf8') } catch { return 0 }
    const ticks = parseProcStatCpuTicks(stat)
    if (ticks === null) return 0
    const now = performance.now()
    const dt = (now - vm.cpuSampledAt) / 1000
    const used = (ticks - vm.cpuTicks) / USER_HZ
    vm.cpuTicks = ticks
    vm.cpuSampledAt = now
    if (!(dt > 0)) return 0
    return Math.max(0, Math.min(1, used / dt / this.hostCpuCores))
  }

  /** Guest RAM in KiB as QEMU is given it: the VM's size, padded under TCG (TCG_RAM_PAD_KIB). */
  private ramKiB (spec: VmSpec): number { return spec.memMiB * 1024 + (this.accel === 'tcg' ? TCG_RAM_PAD_KIB : 0) }

  private qemuArgs (spec: VmSpec, dir: string, incoming: boolean): string[] {
    const x = qemuExtra(spec)
    const a = [
      '-name', `${spec.id},debug-threads=on`,
      '-machine', `${this.init.machine ?? 'pc'},accel=${this.accel}`,
      '-m', `${this.ramKiB(spec)}K`,
      '-smp', String(spec.vcpus),
      '-nodefaults', '-no-user-config', '-display', 'none', '-vga', 'none',
      '-qmp', `unix:${path.join(dir, 'qmp.sock')},server=on,wait=off`,
      '-serial', `file:${path.join(dir, 'serial.log')}`
    ]
    if (this.init.cpuModel !== undefined) a.push('-cpu', this.init.cpuModel)
    if (x.kernel !== undefined) a.push('-kernel', x.kernel)
    if (x.initrd !== undefined) a.push('-initrd', x.initrd)
    if (x.append !== undefined) a.push('-append', x.append)
    for (const [i, d] of (x.disks ?? []).entries()) {
      if (d.file.includes(',')) throw new DriverError('DRIVER_FAILED', `vm ${spec.id}: disk path "${d.file}" contains a comma`)
      a.push('-drive', `file=${d.file},if=virtio,format=${d.format ?? 'raw'},index=${i},node-name=${diskNode(i)}`)
    }
    // deflate-on-oom: a guest about to run out of memory takes pages back from its balloon
    // instead of killing a process (the balloon loop reads guest statistics a second or more old,
    // and a guest that allocates fast in between would otherwise be starved by a target taken from them).
    if (x.balloon ?? true) a.push('-device', 'virtio-balloon-pci,id=balloon0,deflate-on-oom=on')
    a.push('-pidfile', path.join(dir, 'qemu.pid'))
    if (incoming) a.push('-incoming', 'defer')
    a.push(...(x.args ?? []))
    return a
  }

  private async launch (spec: VmSpec, incoming: boolean, signal?: AbortSignal): Promise<VmHandle> {
    if (this.closed) throw new DriverError('DRIVER_FAILED', 'driver is closed')
    if (!VM_ID_RE.test(spec.id)) throw new DriverError('DRIVER_FAILED', `vm id "${spec.id}" must match ${String(VM_ID_RE)}`)
    if (!(spec.vcpus >= 1) || !(spec.memMiB >= 16)) throw new DriverError('DRIVER_FAILED', `vm ${spec.id}: needs vcpus >= 1 and memMiB >= 16`)
    if (this.vms.has(spec.id) && this.vms.get(spec.id)?.hasExited !== true) throw new DriverError('DRIVER_FAILED', `vm ${spec.id} is already running on this host`)
    if (this.pendingAttach.has(spec.id)) throw new DriverError('DRIVER_FAILED', `vm ${spec.id} is already running on this host (pid ${this.pendingAttach.get(spec.id)!.pid}, not attached yet)`)
    const dir = path.join(this.init.runDir, spec.id)
    // sun_path holds 108 bytes; QEMU would fail with a less helpful message.
    if (Buffer.byteLength(path.join(dir, 'qmp.sock')) > 107) throw new DriverError('DRIVER_FAILED', `vm ${spec.id}: run directory path too long for a unix socket (${dir})`)
    const args = this.qemuArgs(spec, dir, incoming)
    await fsp.mkdir(dir, { recursive: true })
    await fsp.rm(path.join(dir, 'qmp.sock'), { force: true })
    await fsp.writeFile(path.join(dir, 'serial.log'), '')
    await fsp.writeFile(path.join(dir, 'spec.json'), JSON.stringify(spec))
    const logFd = fs.openSync(path.join(dir, 'qemu.log'), 'w')
    let proc: ChildProcess
    try {
      const [cmd, argv] = this.init.dieWithAgent === true
        ? ['setpriv', ['--pdeathsig', 'KILL', '--', this.binary, ...args]]
        : [this.binary, args]
      proc = spawn(cmd, argv, { stdio: ['ignore', logFd, logFd], detached: this.init.dieWithAgent !== true })
    } finally {
      fs.closeSync(logFd)
    }
    const spawned = new Promise<void>((resolve, reject) => {
      proc.once('spawn', resolve)
      proc.once('error', reject)
    })
    try { await spawned } catch (err) {
      throw new DriverError('DRIVER_UNREACHABLE', `vm ${spec.id}: cannot run ${this.binary}`, { cause: err })
    }
    if (this.init.dieWithAgent !== true) proc.unref()
    const pid = proc.pid ?? -1
    let hasExited = false
    const exited = new Promise<void>(resolve => proc.once('exit', (code, sig) => {
      hasExited = true
      const h = this.vms.get(spec.id)
      if (h !== undefined && h.proc === proc) { h.hasExited = true; h.exitReason = sig !== null ? `signal ${sig}` : `code ${String(code)}` }
      this.log.info(`vm ${spec.id} QEMU exited (${sig ?? `code ${String(code)}`})`, { vm: spec.id, pid })
      resolve()
    }))
    let qmp: QmpClient
    try {
      const died = exited.then(() => { throw new Error('QEMU exited during start-up') })
      died.catch(() => {})
      const connectOpts = signal === undefined ? { connectTimeoutMs: this.init.startTimeoutMs ?? 15_000, commandTimeoutMs: this.qmpTimeoutMs } : { signal, connectTimeoutMs: this.init.startTimeoutMs ?? 15_000, commandTimeoutMs: this.qmpTimeoutMs }
      qmp = await Promise.race([QmpClient.connect(path.join(dir, 'qmp.sock'), connectOpts), died])
    } catch (err) {
      if (!hasExited) proc.kill('SIGKILL')
      await exited
      const tail = await qemuLogTail(dir, 2000)
      throw new DriverError('DRIVER_UNREACHABLE', `vm ${spec.id}: QEMU did not come up: ${tail || (err instanceof Error ? err.message : String(err))}`, { cause: err })
    }
    const vm: VmHandle = {
      spec, dir, proc, pid, qmp, exited, hasExited, incoming, balloonMiB: spec.memMiB, cpuTicks: 0, cpuSampledAt: performance.now()
    }
    this.vms.set(spec.id, vm)
    try {
      const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8')
      vm.cpuTicks = parseProcStatCpuTicks(stat) ?? 0
    } catch { /* the first sample will read 0 */ }
    qmp.onEvent(e => {
      if (e.event === 'MIGRATION') this.log.debug(`vm ${spec.id} migration ${String(e.data.status)}`, { vm: spec.id })
      if (e.event === 'RESUME' && vm.incoming) {
        vm.incoming = false
        this.releaseImages(spec.id)
        // The guest runs here: the images a migration with storage created are its disks now.
        void fsp.rm(path.join(dir, CREATED_IMAGES), { force: true }).catch(() => {})
      }
    })
    return vm
  }
}

function mib (bytes: number): number { return Math.round(bytes / 1048576) }

/** `dir` or its nearest existing parent. */
async function existingDir (dir: string): Promise<string> {
  for (let d = dir; ; d = path.dirname(d)) {
    try { if ((await fsp.stat(d)).isDirectory()) return d } catch { /* go up */ }
    if (path.dirname(d) === d) return d
  }
}

/** The images a migration with storage created for the incoming copy in `dir` (none when not one). */
async function readCreatedImages (dir: string): Promise<string[]> {
  try {
    const v = JSON.parse(await fsp.readFile(path.join(dir, CREATED_IMAGES), 'utf8')) as unknown
    return Array.isArray(v) ? v.filter((f): f is string => typeof f === 'string') : []
  } catch { return [] }
}

/** Factory in the Init/Components shape. */
export function qemuDriver (init: QemuDriverInit): (components: QemuDriverComponents) => QemuDriver {
  return components => new QemuDriver(init, components)
}

export { QmpError }
