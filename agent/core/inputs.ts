/** Everything that can happen to the core, as data. The runtime queues inputs and steps them in order. */
import type { Envelope } from './messages.js'
import type { HostId, HostSample, VmId } from './types.js'
import type { DriverCommand, DriverResult } from './migration/migration-state.js'
import type { VipCoreInput } from './vip/vip-bridge.js'
import type { HaCoreInput } from './ha/ha-bridge.js'
import type { ReplicaCoreInput } from './replica/replica-types.js'

import type { ConfigEntry } from './cluster-config/config-log.js'

export type Input =
  /** A decoded frame from a peer (authenticated by the transport). */
  | { type: 'receive', from: HostId, envelope: Envelope }
  /** A sample of the local host and its VMs (sampler + hypervisor driver stats). */
  | { type: 'hostSample', sample: HostSample }
  /** The transport opened a connection to a cluster member. */
  | { type: 'peerConnected', peer: HostId }
  /** The transport lost its connection to a member (a hint only: the failure detector decides). */
  | { type: 'peerDisconnected', peer: HostId }
  /** The edge dropped a frame (malformed, oversized, unknown type, outside the cluster). Counted. */
  | { type: 'frameRejected', from: HostId | null, reason: string }
  /** The operator asked this agent to leave the cluster gracefully (SIGTERM). */
  | { type: 'leave' }
  /**
   * The runtime skipped `ticks` ticks after a stall (a GC pause, a suspended process or host): it
   * replays a bounded number of the ticks it missed and skips the rest, so the tick count falls
   * behind the wall clock by that much. HA's timers learn it (their timing argument measures
   * real time); given before the replayed ticks.
   */
  | { type: 'ticksSkipped', ticks: number }
  /** The runtime carried out a driver command (or failed to: a DriverError becomes ok: false). */
  | { type: 'driverResult', command: DriverCommand, result: DriverResult }
  /** The operator asked to move a VM (to a named host, or where the cluster chooses). */
  | { type: 'operatorMigrate', vm: VmId, to?: string, withStorage?: boolean }
  /** The operator asked to drain a host (by name or id): spread its VMs over the cluster. */
  | { type: 'operatorDrain', host: string }
  /** The operator asked for a change of the cluster configuration (an entry made by AgentCore.nextConfig). */
  | { type: 'operatorConfig', req: string, entry: ConfigEntry }
  /** VIP: an address effect carried out (vipApplied), or an operator's move of a group VIP. */
  | VipCoreInput
  /** HA: a driver result for haStart/haStop, or an operator's arm, disarm or maintenance. */
  | HaCoreInput
  /** Replicas: a driver result for replicaStart/replicaStop, or an operator's replicate/retire. */
  | ReplicaCoreInput
