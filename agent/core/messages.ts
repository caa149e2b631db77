/**
 * Typed protocol messages: what the wire codec (agent/adapters/wire-codec.ts) decodes frames
 * into and encodes from. The core never sees bytes. Names say what a message asserts.
 * The schema of record is proto/mesh/v1/*.proto; keep both in step.
 */
import type { HostId, LoadReport, VmId } from './types.js'
import type { VipMessage, VipMoveRequested } from './vip/vip-messages.js'
import type { HaMessage } from './ha/ha-types.js'
import type { ReplicaMessage } from './replica/replica-types.js'
import type { ConfigMessage } from './cluster-config/config-log.js'

/** Wire protocol versions this build speaks. */
export const PROTOCOL_MIN = 1
export const PROTOCOL_MAX = 1
export const PROTOCOL_CUR = 1

/** A member's identity and address as carried by Alive and push-pull. */
export interface MemberRecord {
  id: HostId
  name: string
  addr: string
  incarnation: number
  state: 'alive' | 'suspect' | 'dead' | 'left'
}

/** Piggybacked dissemination items (SWIM infection-style gossip). */
export type Gossip =
  | { type: 'alive', member: MemberRecord }
  | { type: 'suspect', node: HostId, incarnation: number, from: HostId }
  | { type: 'dead', node: HostId, incarnation: number, from: HostId }
  | { type: 'left', node: HostId, incarnation: number }
  | { type: 'report', report: LoadReport }

/** Direct probe. */
export interface Ping { type: 'ping', seq: number, target: HostId }
/** Answer to a probe; for an indirect probe, `target` is the probed host and the relay forwards it. */
export interface Ack { type: 'ack', seq: number, target: HostId }
/** Lifeguard: the relay says it is alive but got no ack from the target within its timeout. */
export interface Nack { type: 'nack', seq: number, target: HostId }
/** Ask the receiver to probe `target` on the sender's behalf. */
export interface PingReq { type: 'pingReq', seq: number, target: HostId }
/**
 * Anti-entropy: the sender's whole member table and its latest report digests.
 * `reply` is true on the answer, so the receiver does not answer again.
 */
export interface PushPull { type: 'pushPull', reply: boolean, members: MemberRecord[], reports: LoadReport[] }
/** A frame that carries only gossip. */
export interface GossipOnly { type: 'gossip' }

/** A host and the report seq the sender holds for it (0 = none). */
export interface ReportDigest { host: HostId, seq: number }
/**
 * Anti-entropy for load reports: the sender holds these (stale) versions; the receiver answers
 * with a PushPull{reply: true, members: [], reports} carrying every newer report it has.
 */
export interface ReportPull { type: 'reportPull', want: ReportDigest[] }

/** Migration negotiation (agent/core/migration/migration-machine.ts); one record id per migration. */
export interface MigrationIntent {
  type: 'migrationIntent', id: string, vm: VmId, vcpus: number, memMiB: number, extraJson: string, cpuDemandMips: number
  /** The VM's disks move with it (the target creates empty images and exports them for the mirror). */
  withStorage?: boolean
}
/** The target admitted the VM and holds its capacity for `leaseTicks` of its own ticks. */
export interface ReservationGranted { type: 'reservationGranted', id: string, leaseTicks: number }
/** The target refused (capacity, a hard rule, a limit, draining...). */
export interface ReservationRefused { type: 'reservationRefused', id: string, reason: string }
/** The target's incoming VM listens at `uri`. */
export interface IncomingReady {
  type: 'incomingReady', id: string, uri: string
  /** With storage: the NBD export ("nbd:host:port") the source mirrors the disks to. */
  nbd?: string
}
/** The source's copy is under way (renews the target's lease). */
export interface MigrationProgress { type: 'migrationProgress', id: string, status: string, transferredBytes: number, remainingBytes: number }
/** The source's hypervisor finished the transfer; the source copy is paused. */
export interface TransferCompleted { type: 'transferCompleted', id: string }
/** The VM runs on the target (sent by the target; final). */
export interface MigrationCommitted { type: 'migrationCommitted', id: string }
/** The VM runs on the source; the other end must drop what it holds (final). */
/**
 * `mayHaveRun` (target to source): the target aborted without seeing its incoming copy (it was
 * gone, e.g. after a power loss), so it cannot say the guest never ran there; a source whose copy
 * completed must then not resume its older paused copy. Absent means false.
 */
export interface MigrationAborted { type: 'migrationAborted', id: string, reason: string, mayHaveRun?: boolean }
/** What does the receiver hold for migration `id`? */
export interface MigrationStatusQuery { type: 'migrationStatusQuery', id: string }
/** The receiver's state for `id` ('unknown' when it holds no record). */
export interface MigrationStatusAnswer { type: 'migrationStatusAnswer', id: string, state: string }
/** An operator asked for a move or a drain through another host's API (vm, or drain = true). */
export interface MoveRequested { type: 'moveRequested', vm: VmId, to: string, drain: boolean, withStorage?: boolean }

export type MigrationBody =
  | MigrationIntent | ReservationGranted | ReservationRefused | IncomingReady | MigrationProgress
  | TransferCompleted | MigrationCommitted | MigrationAborted | MigrationStatusQuery | MigrationStatusAnswer
  | MoveRequested

/** Virtual-IP ownership (agent/core/vip/vip-messages.ts); direct frames, never relayed. */
export type VipBody = VipMessage | VipMoveRequested

/** High availability (agent/core/ha/ha-types.ts): beats, claims and grants; direct frames, never relayed. */
export type HaBody = HaMessage

/** Replicas of stateless VMs (agent/core/replica): direct frames, never relayed. */
export type ReplicaBody = ReplicaMessage

export type Body = Ping | Ack | Nack | PingReq | PushPull | GossipOnly | ReportPull | MigrationBody | VipBody | HaBody | ReplicaBody | ConfigMessage

/** The envelope of every frame. */
export interface Envelope {
  protocolMin: number
  protocolMax: number
  protocolCur: number
  /** Sender's host id; the transport checks it against the authenticated connection key. */
  from: HostId
  /** Sender's own incarnation. */
  incarnation: number
  /** Sender's Lamport time when it sent the frame. */
  lamport: number
  body: Body
  gossip: Gossip[]
  /** Version of the cluster configuration the sender acts on (absent or 0: an older build). */
  cfgVersion?: number
}
