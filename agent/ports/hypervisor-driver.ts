import type { VmId, VmSummary } from '../core/index.js'

/** What it takes to define and start a VM on a host. */
export interface VmSpec {
  id: VmId
  vcpus: number
  memMiB: number
  /** Driver-specific details (disk image, kernel, NICs...). */
  extra?: Record<string, unknown>
}

/**
 * The hypervisor of this host (simulated, QEMU over QMP, or libvirt).
 * Contract: every call may block on the hypervisor and takes an AbortSignal; failures reject
 * with a DriverError whose `code` says what happened (DRIVER_UNREACHABLE, DRIVER_TIMEOUT,
 * VM_NOT_FOUND, ...). A driver never throws synchronously.
 * Migration operations are added by the migration work; this is the base every driver implements.
 */
export interface HypervisorDriver {
  readonly kind: string
  /** VMs on this host, with their current load. Load fractions are relative to host capacity. */
  list (signal?: AbortSignal): Promise<VmSummary[]>
  start (spec: VmSpec, signal?: AbortSignal): Promise<void>
  stop (id: VmId, signal?: AbortSignal): Promise<void>
  close (): Promise<void>
}
