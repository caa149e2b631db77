/**
 * CPU weights and quotas of the VMs' processes through cgroups: v2 (`cpu.weight`, `cpu.max`) when
 * the unified hierarchy has the cpu controller, v1 (`cpu.shares`, `cpu.cfs_quota_us`) otherwise.
 * Every VM gets a group `<root>/<parent>/<vm>`; its QEMU process is moved there whole
 * (cgroup.procs). The parent group may hold a quota for all the VMs together (`vmCores`).
 *
 * Errors (no cgroup file system, no permission, a process gone) reject with DriverError
 * (DRIVER_FAILED) naming the file; nothing throws synchronously.
 */
import fs from 'node:fs'
import fsp from 'node:fs/promises'
import path from 'node:path'
import { DriverError } from '../lib/errors.js'

export interface CgroupCpuInit {
  /** Group under which every VM gets its own. @default 'starling' */
  parent?: string
  /** Cores all the VMs may use together (the parent group's quota); null = no quota. @default null */
  vmCores?: number | null
  /** cgroups mount point (tests, other layouts). @default '/sys/fs/cgroup' */
  mount?: string
  /** CFS period, µs. @default 100000 */
  periodUs?: number
}

export interface CgroupLayout { version: 1 | 2, root: string }

/** Finds the cpu controller: v2 when the unified hierarchy offers it, else the v1 cpu hierarchy; null when neither. */
export function detectCpuCgroup (mount = '/sys/fs/cgroup'): CgroupLayout | null {
  try {
    const ctl = fs.readFileSync(path.join(mount, 'cgroup.controllers'), 'utf8')
    if (ctl.split(/\s+/).includes('cpu')) return { version: 2, root: mount }
  } catch { /* not a v2 root */ }
  for (const dir of [path.join(mount, 'cpu'), path.join(mount, 'cpu,cpuacct')]) {
    if (fs.existsSync(path.join(dir, 'cpu.shares'))) return { version: 1, root: dir }
  }
  return null
}

/** Parses `utime + stime` of /proc/<pid>/stat into seconds (USER_HZ = 100). */
export function processCpuSeconds (pid: number): number | null {
  let stat: string
  try { stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8') } catch { return null }
  const close = stat.lastIndexOf(')')
  if (close < 0) return null
  const f = stat.slice(close + 2).split(' ')
  const v = Number(f[11]) + Number(f[12])
  return Number.isFinite(v) ? v / 100 : null
}

/**
 * Time process `pid`'s threads ran and waited runnable on a run queue, s (sum of
 * /proc/<pid>/task/<tid>/schedstat: run_ns wait_ns slices); null when unreadable (no schedstats).
 */
export function processSchedSeconds (pid: number): { runS: number, waitS: number } | null {
  let tids: string[]
  try { tids = fs.readdirSync(`/proc/${pid}/task`) } catch { return null }
  let run = 0; let wait = 0; let any = false
  for (const tid of tids) {
    try {
      const f = fs.readFileSync(`/proc/${pid}/task/${tid}/schedstat`, 'utf8').trim().split(/\s+/)
      const r = Number(f[0]); const w = Number(f[1])
      if (Number.isFinite(r) && Number.isFinite(w)) { run += r; wait += w; any = true }
    } catch { /* a thread that ended */ }
  }
  return any ? { runS: run / 1e9, waitS: wait / 1e9 } : null
}

export class CgroupCpu {
  readonly layout: CgroupLayout
  readonly dir: string
  private readonly period: number
  private readonly placed = new Map<string, number>()

  constructor (layout: CgroupLayout, private readonly init: CgroupCpuInit = {}) {
    this.layout = layout
    this.dir = path.join(layout.root, init.parent ?? 'starling')
    this.period = init.periodUs ?? 100_000
  }

  private async write (file: string, value: string): Promise<void> {
    try { await fsp.writeFile(file, value) } catch (err) {
      throw new DriverError('DRIVER_FAILED', `cgroup: cannot write ${JSON.stringify(value)} to ${file}: ${(err as Error).message}`, { cause: err })
    }
  }

  /** Creates the parent group (and its quota); idempotent. */
  async setup (): Promise<void> {
    await fsp.mkdir(this.dir, { recursive: true }).catch((err: Error) => { throw new DriverError('DRIVER_FAILED', `cgroup: cannot create ${this.dir}: ${err.message}`, { cause: err }) })
    if (this.layout.version === 2) {
      // The controller must be enabled for the children, at the root and at the parent.
      await this.write(path.join(this.layout.root, 'cgroup.subtree_control'), '+cpu').catch(() => {})
      await this.write(path.join(this.dir, 'cgroup.subtree_control'), '+cpu')
    }
    await this.quota(this.dir, this.init.vmCores ?? null)
  }

  private async quota (dir: string, cores: number | null): Promise<void> {
    if (this.layout.version === 2) {
      await this.write(path.join(dir, 'cpu.max'), cores === null ? `max ${this.period}` : `${Math.max(1000, Math.round(cores * this.period))} ${this.period}`)
    } else {
      await this.write(path.join(dir, 'cpu.cfs_period_us'), String(this.period))
      await this.write(path.join(dir, 'cpu.cfs_quota_us'), cores === null ? '-1' : String(Math.max(1000, Math.round(cores * this.period))))
    }
  }

  /** Puts VM `vm`'s process `pid` in its group (once per pid). */
  async place (vm: string, pid: number): Promise<void> {
    if (this.placed.get(vm) === pid) return
    const d = path.join(this.dir, vm)
    await fsp.mkdir(d, { recursive: true }).catch((err: Error) => { throw new DriverError('DRIVER_FAILED', `cgroup: cannot create ${d}: ${err.message}`, { cause: err }) })
    await this.write(path.join(d, 'cgroup.procs'), String(pid))
    this.placed.set(vm, pid)
  }

  /** Sets VM `vm`'s weight (cgroups v2 units, 1-10000; v1 shares = weight x 1024 / 100) and quota in cores. */
  async set (vm: string, weight: number, quotaCores: number | null): Promise<void> {
    const d = path.join(this.dir, vm)
    const w = Math.max(1, Math.min(10000, Math.round(weight)))
    if (this.layout.version === 2) await this.write(path.join(d, 'cpu.weight'), String(w))
    else await this.write(path.join(d, 'cpu.shares'), String(Math.max(2, Math.round(w * 1024 / 100))))
    await this.quota(d, quotaCores)
  }

  /** Removes the groups of VMs no longer here (their processes are gone or elsewhere). */
  async forget (keep: ReadonlySet<string>): Promise<void> {
    for (const vm of [...this.placed.keys()]) {
      if (keep.has(vm)) continue
      this.placed.delete(vm)
      await fsp.rmdir(path.join(this.dir, vm)).catch(() => {})
    }
  }

  /** Removes every group this object made (empty ones; a group with a live process stays). */
  async close (): Promise<void> {
    await this.forget(new Set())
    await fsp.rmdir(this.dir).catch(() => {})
  }
}
