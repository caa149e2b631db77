import type { HostId } from '../core/index.js'

/** Frames and connection events delivered by a transport. */
export interface TransportHandlers {
  /** A raw frame from an authenticated cluster member. Decoding happens after this, at the edge. */
  onFrame: (from: HostId, frame: Uint8Array) => void
  /** A connection to a member opened. */
  onPeerConnected: (peer: HostId) => void
  /** A connection to a member closed (a hint: the failure detector decides). */
  onPeerDisconnected: (peer: HostId) => void
  /** A connection was refused or dropped for not belonging to the cluster. Counted, never thrown. */
  onRejected: (remote: HostId | null, reason: string) => void
}

/**
 * Moves opaque frames between cluster members.
 * Contract: best-effort, unordered across peers (ordered per connection), no retries.
 */
export interface Transport {
  /** Our own host id (hex public key on the real mesh). */
  readonly self: HostId
  /** Begin accepting and opening connections. Resolves once listening; idempotent. */
  start (handlers: TransportHandlers): Promise<void>
  /**
   * Best-effort send. Never blocks, never throws for an unreachable peer: returns false and
   * lets the failure detector decide. The transport takes ownership of `frame`. A transport with
   * on-demand connections may hold the frame while it connects (and drop it if that fails).
   */
  send (to: HostId, frame: Uint8Array): boolean
  /**
   * Optional: best-effort send as one unreliable, unordered datagram on the connection (no
   * retransmission, no acknowledgement packet), for small frames the protocol already tolerates
   * losing, duplicating and reordering (SWIM probes). Returns false when it cannot (no peer,
   * frame larger than `datagramMaxBytes`); the caller then uses send().
   */
  sendDatagram?: (to: HostId, frame: Uint8Array) => boolean
  /** Largest frame sendDatagram takes, bytes. */
  readonly datagramMaxBytes?: number
  /** Members with an open connection now. */
  connected (): HostId[]
  /**
   * Optional: the members to keep a connection to (the core's active view), replacing the last
   * set. A transport that has it connects to any other member only on demand (a send to it) and
   * closes such a connection once idle; until the first call it keeps every member connected.
   */
  setActivePeers?: (peers: HostId[]) => void
  /** Close every connection and stop listening; idempotent. */
  stop (): Promise<void>
}

/** One open connection as peerStats() reports it (`starling status --json`, mesh.peers). */
export interface PeerConnectionStats {
  peer: string
  initiator: boolean
  openForMs: number
  streamIn: number
  streamOut: number
  datagramsIn: number
  datagramsOut: number
  /** ms since the last frame received on the stream, and as a datagram (null: none yet). */
  lastStreamInMsAgo: number | null
  lastDatagramInMsAgo: number | null
  /** Bytes written while the stream was congested, not yet drained. */
  backlogBytes: number
}
