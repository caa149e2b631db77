/**
 * The `cpu` section of the configuration: dynamic CPU allocation inside this host (the policy is
 * policies/cpu-alloc.ts, the loop agent/runtime/cpu-controller.ts, the cgroups
 * agent/adapters/cgroup-cpu.ts). Documented field by field in systemd/starling.example.md.
 */
import { ConfigError } from '../core/index.js'
import { defaultCpuAllocParams, validateCpuAllocParams, type CpuAllocParams, type QosClass } from '../../policies/cpu-alloc.js'
import { isObj } from '../lib/obj.js'

export interface CpuVmEntry {
  /** QoS class: high VMs keep their demand under contention, low ones absorb the shortfall. @default 'normal' */
  qos?: QosClass
  /** Weight inside its class. @default 1 */
  weight?: number
  /** Most the VM may use, cores (a quota). @default none */
  capCores?: number
}

export interface CpuSection {
  /** Set the VMs' CPU weights and quotas from their demand and class (QEMU driver). @default false */
  allocate: boolean
  /** Cores the VMs may use together (a quota on their parent group). null: all of the host's. @default null */
  vmCores: number | null
  /** cgroup under which every VM gets its own group. @default 'starling' */
  cgroupParent: string
  /** The allocation policy's parameters. */
  params: CpuAllocParams
  /** Per-VM class, weight and cap, by VM id. */
  vms: Record<string, CpuVmEntry>
}

export function defaultCpuSection (): CpuSection {
  return { allocate: false, vmCores: null, cgroupParent: 'starling', params: defaultCpuAllocParams(), vms: {} }
}

function fail (path: string, what: string): never {
  throw new ConfigError(`config: ${path} ${what}`, path)
}

export function validateCpuSection (raw: unknown): CpuSection {
  const d = defaultCpuSection()
  if (raw === undefined) return d
  if (!isObj(raw)) fail('cpu', 'must be an object')
  const out: CpuSection = { ...d, params: { ...d.params }, vms: {} }
  if (raw.allocate !== undefined) {
    if (typeof raw.allocate !== 'boolean') fail('cpu.allocate', `must be true or false (got ${JSON.stringify(raw.allocate)})`)
    out.allocate = raw.allocate
  }
  if (raw.vmCores !== undefined && raw.vmCores !== null) {
    if (typeof raw.vmCores !== 'number' || !(raw.vmCores > 0 && raw.vmCores <= 4096)) fail('cpu.vmCores', `must be a number of cores above 0 (got ${JSON.stringify(raw.vmCores)})`)
    out.vmCores = raw.vmCores
  }
  if (raw.cgroupParent !== undefined) {
    if (typeof raw.cgroupParent !== 'string' || !/^[A-Za-z0-9._-]{1,64}$/.test(raw.cgroupParent)) fail('cpu.cgroupParent', `must be a cgroup name (letters, digits, . _ -) (got ${JSON.stringify(raw.cgroupParent)})`)
    out.cgroupParent = raw.cgroupParent
  }
  if (raw.params !== undefined) {
    if (!isObj(raw.params)) fail('cpu.params', 'must be an object')
    try { out.params = validateCpuAllocParams({ ...d.params, ...raw.params } as CpuAllocParams) } catch (err) {
      if (!(err instanceof ConfigError)) throw err
      throw new ConfigError(`config: cpu.params.${err.message}`, `cpu.params.${err.path}`)
    }
  }
  if (raw.vms !== undefined) {
    if (!isObj(raw.vms)) fail('cpu.vms', 'must be an object of VM id to { qos, weight, capCores }')
    for (const [id, e] of Object.entries(raw.vms)) {
      const p = `cpu.vms.${id}`
      if (!isObj(e)) fail(p, 'must be an object')
      const entry: CpuVmEntry = {}
      if (e.qos !== undefined) {
        if (e.qos !== 'high' && e.qos !== 'normal' && e.qos !== 'low') fail(`${p}.qos`, `must be high, normal or low (got ${JSON.stringify(e.qos)})`)
        entry.qos = e.qos
      }
      if (e.weight !== undefined) {
        if (typeof e.weight !== 'number' || !(e.weight > 0 && e.weight <= 10000)) fail(`${p}.weight`, `must be a number in (0, 10000] (got ${JSON.stringify(e.weight)})`)
        entry.weight = e.weight
      }
      if (e.capCores !== undefined) {
        if (typeof e.capCores !== 'number' || !(e.capCores > 0 && e.capCores <= 4096)) fail(`${p}.capCores`, `must be a number of cores above 0 (got ${JSON.stringify(e.capCores)})`)
        entry.capCores = e.capCores
      }
      out.vms[id] = entry
    }
  }
  return out
}
