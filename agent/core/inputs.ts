/** Everything that can happen to the core, as data. The runtime queues inputs and steps them in order. */
import type { Envelope } from './messages.js'
import type { HostId, HostSample } from './types.js'

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
