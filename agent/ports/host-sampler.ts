import type { HostCapacity } from '../core/index.js'

/** Host-level load, without VMs (the hypervisor driver reports those). */
export interface HostLoad {
  cpuUtil: number
  memUsedMiB: number
  netMbps: number
  capacity: HostCapacity
}

/** Samples the local host. May take up to a second (the first systeminformation call does). */
export interface HostSampler {
  sample (signal?: AbortSignal): Promise<HostLoad>
}
