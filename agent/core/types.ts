/**
 * Plain data shared by the core, the policies, the wire codec and the runtime.
 * Everything here is serialisable (no classes, no functions) so it can be
 * persisted, gossiped and snapshotted in tests.
 */

/** Host and VM identities: defined with the policies (the lower layer), which decide over them too. */
import type { HostId, VmId } from '../../policies/types.js'
export type { HostId, VmId }

/** Lifecycle of a VM as the hypervisor reports it. */
export type VmRunState = 'running' | 'paused' | 'stopped' | 'migrating'

/** One VM as a host reports it in its load report. Utilisations are fractions in [0, 1]. */
export interface VmSummary {
  id: VmId
  /** Virtual CPUs allotted. */
  vcpus: number
  /** Memory allotted, MiB. */
  memMiB: number
  /** CPU used, as a fraction of the host's total CPU capacity (not of the VM's vcpus). */
  cpuUtil: number
  /** Memory actually used by the guest, MiB. */
  memUsedMiB: number
  state: VmRunState
}

/** Capacity of a host: what placement may fill. */
export interface HostCapacity {
  cpuCores: number
  /** CPU speed in MIPS-like units per core; lets heterogeneous hosts be compared. @default 1000 */
  cpuMipsPerCore: number
  memMiB: number
  netMbps: number
}

/** A host sample taken by the sampler (the edge), fed to the core as an input. */
export interface HostSample {
  /** Host CPU utilisation, fraction [0, 1]. */
  cpuUtil: number
  /** Memory in use, MiB. */
  memUsedMiB: number
  /** Network throughput, Mbit/s (rx + tx). */
  netMbps: number
  capacity: HostCapacity
  vms: VmSummary[]
  /** Memory inside the host (ballooning, page sharing), when its driver can tell. */
  memory?: HostMemoryReport
  /**
   * The host's CPU is contended and its CPU allocation (QoS classes) serves every VM that must be
   * served: the contention is handled inside the host, which is then not stressed by its CPU.
   */
  cpuResolved?: boolean
}

/**
 * What a host tells the cluster about its memory beyond use: what its VMs were promised, what the
 * balloons hold back, what it could take back now, and how short it is. Whole MiB.
 */
export interface HostMemoryReport {
  /** Sum of its running VMs' configured memory, MiB. */
  committedMiB: number
  /** Held back by balloons (sum of maximum - balloon), MiB. */
  balloonedMiB: number
  /** What its guests could give now without going under their floors, MiB. */
  reclaimableMiB: number
  /** Memory over its target that no guest could give at the last step, MiB (> 0: short of memory). */
  unmetMiB: number
  /** Memory pressure: share of time some task stalled on memory over 10 s (PSI), fraction [0, 1]. */
  pressure: number
  /** Saved by page sharing (KSM), MiB. */
  ksmSavedMiB: number
  /** ksmd's CPU share of one core, fraction [0, 1] (what the saving costs). */
  ksmCpu: number
}

/**
 * The load report gossiped by every host: what it has, what it uses now, what it expects next.
 * `seq` increases with every new report of the same host; a higher seq supersedes a lower one.
 */
export interface LoadReport {
  host: HostId
  seq: number
  capacity: HostCapacity
  cpuUtil: number
  memUtil: number
  netUtil: number
  /** Predicted host CPU utilisation for the next report intervals, nearest first. */
  forecastCpu: number[]
  vms: VmSummary[]
  /** Hash of the rule set this host acts on ('' or absent = none); a majority must share it. */
  rulesHash?: string
  /** Memory inside the host (absent: its driver cannot tell). */
  memory?: HostMemoryReport
  /** Its CPU contention is handled by its CPU allocation (see HostSample.cpuResolved). */
  cpuResolved?: boolean
}

/** SWIM member states. */
export type MemberState =
  /** Answering probes, or refuted the last suspicion. */
  | 'alive'
  /** Missed a probe (direct and indirect); dead unless it refutes before the suspicion timeout. */
  | 'suspect'
  /** Declared failed; only a higher incarnation brings it back. */
  | 'dead'
  /** Announced its own graceful departure. */
  | 'left'

/** What every host knows of a member: the cluster view's row. */
export interface MemberView {
  id: HostId
  /** Human name from the configuration (hostname by default). */
  name: string
  /** Address the agent's DHT node listens on, "ip:port"; lets peers bootstrap from it. */
  addr: string
  state: MemberState
  incarnation: number
  /** Latest load report known for this member, if any. */
  report: LoadReport | null
}
