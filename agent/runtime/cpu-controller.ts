/**
 * Dynamic CPU allocation of one host, run at every host sample: measures each running VM's CPU
 * use (its QEMU process's CPU time), asks policies/cpu-alloc.ts for the split and applies it as
 * cgroup weights and quotas (agent/adapters/cgroup-cpu.ts). Its last verdict (contended, and
 * resolved or not) goes into the host's load report: a host whose contention the split resolves
 * is not stressed. Never throws out of step(): failures are counted and logged.
 */
import type { VmId, VmSummary } from '../core/index.js'
import type { Logger } from '../ports/logger.js'
import { allocateCpu, type CpuAllocation, type CpuAllocParams, type QosClass } from '../../policies/cpu-alloc.js'

export interface CpuVmSetting { qos: QosClass, weight: number, capCores: number | null }

export interface CpuControllerInit {
  params: CpuAllocParams
  /** Cores the VMs may use in all. */
  capacityCores: number
  /** A VM's class, weight and cap. */
  setting: (vm: VmId) => CpuVmSetting
}

export interface CpuControllerComponents {
  /** The cgroups (place, set, forget). */
  cgroup: {
    place: (vm: string, pid: number) => Promise<void>
    set: (vm: string, weight: number, quotaCores: number | null) => Promise<void>
    forget: (keep: ReadonlySet<string>) => Promise<void>
  }
  /** A VM's process id; undefined when it has none here. */
  pid: (vm: VmId) => number | undefined
  /** Time a process's threads ran and waited runnable, s; null when unreadable. */
  schedSeconds: (pid: number) => { runS: number, waitS: number } | null
  logger: Logger
  /** Monotonic clock, ms. @default performance.now */
  now?: () => number
}

export interface CpuStatus {
  atMs: number
  allocation: CpuAllocation
  usedCores: Record<string, number>
  /** Time each VM waited runnable, cores (its unmet demand). */
  waitCores: Record<string, number>
}

export class CpuController {
  readonly counters = { steps: 0, applyErrors: 0, contendedSteps: 0, unresolvedSteps: 0 }
  private last: CpuStatus | null = null
  private readonly prev = new Map<VmId, { pid: number, cpuS: number, waitS: number, atMs: number, allotted: number | null, weight: number | null, quota: number | null }>()
  private readonly log: Logger
  private readonly now: () => number

  constructor (private readonly init: CpuControllerInit, private readonly c: CpuControllerComponents) {
    this.log = c.logger.forComponent('agent:cpu')
    this.now = c.now ?? (() => performance.now())
  }

  status (): CpuStatus | null { return this.last }

  async step (vms: readonly VmSummary[]): Promise<CpuStatus | null> {
    const at = this.now()
    const inputs = []
    const used: Record<string, number> = {}
    const waited: Record<string, number> = {}
    const keep = new Set<string>()
    for (const v of vms) {
      if (v.state !== 'running') continue
      const pid = this.c.pid(v.id)
      if (pid === undefined) continue
      keep.add(v.id)
      const sch = this.c.schedSeconds(pid)
      if (sch === null) continue
      const cpuS = sch.runS
      try { await this.c.cgroup.place(v.id, pid) } catch (err) {
        this.counters.applyErrors++
        this.log.warn(`vm ${v.id}: cannot put its process in its CPU group`, { err })
        continue
      }
      const p = this.prev.get(v.id)
      if (p === undefined || p.pid !== pid || at <= p.atMs) {
        this.prev.set(v.id, { pid, cpuS, waitS: sch.waitS, atMs: at, allotted: null, weight: null, quota: null })
        continue
      }
      const dt = (at - p.atMs) / 1000
      const u = Math.max(0, (cpuS - p.cpuS) / dt)
      const w = Math.max(0, (sch.waitS - p.waitS) / dt)
      used[v.id] = u
      waited[v.id] = w
      p.cpuS = cpuS; p.waitS = sch.waitS; p.atMs = at
      const s = this.init.setting(v.id)
      inputs.push({ id: v.id, qos: s.qos, weight: s.weight, vcpus: v.vcpus, capCores: s.capCores, usedCores: u, waitCores: w, allottedCores: p.allotted })
    }
    for (const id of [...this.prev.keys()]) if (!keep.has(id)) this.prev.delete(id)
    await this.c.cgroup.forget(keep).catch(() => {})
    if (inputs.length === 0) { this.last = null; return null } // no stale verdict outlives its VMs
    const a = allocateCpu(this.init.capacityCores, inputs, this.init.params)
    this.counters.steps++
    if (a.contended) this.counters.contendedSteps++
    if (!a.resolved) this.counters.unresolvedSteps++
    for (const x of a.vms) {
      const p = this.prev.get(x.id)
      if (p === undefined) continue
      p.allotted = x.allottedCores
      if (p.weight === x.weight && p.quota === x.quotaCores) continue
      try {
        await this.c.cgroup.set(x.id, x.weight, x.quotaCores)
        p.weight = x.weight; p.quota = x.quotaCores
      } catch (err) {
        this.counters.applyErrors++
        this.log.warn(`vm ${x.id}: cannot set its CPU weight`, { err })
      }
    }
    this.last = { atMs: at, allocation: a, usedCores: used, waitCores: waited }
    return this.last
  }
}
