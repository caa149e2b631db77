/**
 * Replicas of stateless VMs (DESIGN: replication, after Golondrina): instead of moving a stressed
 * host's stateless VM, another host boots a second copy of it from its image, and the host that
 * carries the VM's virtual IP splits new connections between the copies.
 *
 * Roles: the ORIGIN runs the VM itself and decides (its stress, its retirement); the HOST runs
 * the replica. A replica is a VM of its own identity, `<vm>-replica`: S1 (one running copy per
 * VM identity) holds for it as for any VM, and an HA restart of the original never collides with
 * it. For the hard rules a replica is its VM (reservation.ts sees it under the VM's id).
 *
 * Journal (persist before send): the origin's record under `replica/out/<vm>`, the host's under
 * `replica/in/<replica id>`, written at every transition.
 */
import type { HostId, VmId } from '../types.js'

export const KEY_REPLICA_PREFIX = 'replica/'
export const REPLICA_SUFFIX = '-replica'

/** The id of the replica of `vm` (one replica per VM). */
export function replicaId (vm: VmId): VmId { return `${vm}${REPLICA_SUFFIX}` }

export type ReplicaState =
  /** Origin: asked the host to start it, no answer yet. */
  | 'requested'
  /** Host: the start command is out. */
  | 'starting'
  /** Both: the replica runs (the origin splits connections to it). */
  | 'running'
  /** Both: it is being stopped (origin: asked; host: the stop command is out). */
  | 'retiring'

export interface ReplicaRecord {
  /** The replica's VM id (replicaId(vm)). */
  id: VmId
  vm: VmId
  role: 'origin' | 'host'
  origin: HostId
  host: HostId
  state: ReplicaState
  /** What the replica asks of its host: half the VM's demand plus the overhead, MIPS. */
  cpuDemandMips: number
  memMiB: number
  vcpus: number
  createdTick: number
  updatedTick: number
  /** Why it was made ('overload', 'operator'), or why it is being retired. */
  reason: string
}

export function replicaKey (r: Pick<ReplicaRecord, 'role' | 'vm' | 'id'>): string {
  return r.role === 'origin' ? `${KEY_REPLICA_PREFIX}out/${r.vm}` : `${KEY_REPLICA_PREFIX}in/${r.id}`
}

/** The one frame type of the replica protocol (direct, never relayed). */
export interface ReplicaMessage {
  type: 'replica'
  op: 'request' | 'started' | 'refused' | 'retire' | 'retired'
  id: VmId
  vm: VmId
  /** request only. */
  cpuDemandMips: number
  memMiB: number
  vcpus: number
  /** refused, retire: why. */
  reason: string
}

/** Hypervisor commands of the host of a replica (Ready.replica); results come back as replicaDriverResult. */
export type ReplicaCommand =
  /** Boot `id` from the configured definition of `vm` (a copy that runs already counts as started). */
  | { kind: 'replicaStart', id: VmId, vm: VmId }
  /** Kill `id` (gone already counts as stopped). */
  | { kind: 'replicaStop', id: VmId, vm: VmId }

/**
 * Where new connections to a VM's virtual IPs go besides the VM itself (Ready.split): the hosts
 * of its running replicas. The full list each time it changes; empty = no splitting.
 */
export interface SplitEffect { vm: VmId, hosts: HostId[] }

export type ReplicaCoreInput =
  | { type: 'replicaDriverResult', command: ReplicaCommand, ok: boolean, code?: string }
  /** Operator: start a replica of `vm` (on `to`, or where the cluster chooses), or retire it. */
  | { type: 'operatorReplicate', vm: VmId, to?: string, retire: boolean }

export function isReplicaRecord (v: unknown): v is ReplicaRecord {
  if (typeof v !== 'object' || v === null) return false
  const r = v as Record<string, unknown>
  return typeof r.id === 'string' && typeof r.vm === 'string' && (r.role === 'origin' || r.role === 'host') &&
    typeof r.origin === 'string' && typeof r.host === 'string' &&
    ['requested', 'starting', 'running', 'retiring'].includes(r.state as string) &&
    typeof r.cpuDemandMips === 'number' && typeof r.memMiB === 'number' && typeof r.vcpus === 'number' &&
    typeof r.createdTick === 'number' && typeof r.updatedTick === 'number'
}
