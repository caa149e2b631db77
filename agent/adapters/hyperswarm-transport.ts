/**
 * Transport over a Hyperswarm mesh: Noise-encrypted connections between cluster members, found
 * through a DHT that the agents run themselves.
 *
 * - Every agent is a DHT bootstrap node for the others (`HyperDHT.bootstrapper` on its own
 *   ip:port, with the other agents as its bootstrap list). The public bootstrap nodes are never
 *   used: offline they fail silently (no error, no peers, forever).
 * - The topic is SHA-256 of a domain-separation prefix and the cluster secret. The topic and
 *   announce records are visible to anyone on the DHT: the firewall, which admits only the
 *   cluster's public keys, is what protects the mesh. Every refused key reaches onRejected.
 * - Swarms that join at the same moment do not find each other until Hyperswarm's own refresh
 *   (about 10 min), so in a full mesh discovery is refreshed every 0.5-1 s (jittered) while an
 *   allowed peer is missing, more slowly when that lasts, and rarely once the mesh is complete.
 *   On demand, members are called by key only, and the topic is renewed at the rare pace.
 * - Connections: without onDemand, one to every member (a full mesh, found by the topic and by
 *   key; setActivePeers() is ignored). With it, only to the members of the active view the core chose
 *   (agent/core/membership/active-view.ts), found by key; a frame for any other member is held
 *   (up to maxQueuedBytes and pendingTtlMs) while a connection to it opens on demand, and a
 *   connection to a member outside the view is closed after idleCloseMs with no frame either way.
 *   Connections, keep-alives and their CPU per agent then stay flat in the cluster's size.
 *   With onDemandAbove, the mode follows the members' count: on demand in a cluster larger than
 *   the view, a full mesh otherwise, switched when setMembers() crosses the bound (all members
 *   at the same agreed version), so a cluster that grows past its view never mixes the two.
 *   At most maxOnDemandDials members outside the view are dialled at once; frames for others
 *   wait (held) for a dial to finish. Hyperswarm runs a few dials at a time (maxParallel) and a
 *   dial to a member that does not answer holds its slot for seconds: without the bound, on-demand
 *   traffic (joins to seeds not known alive, indirect probes, replies) took every slot and the
 *   view's own connections, which failure detection needs, never opened.
 * - Keep-alive and timeout (the agent's mesh.keepAliveMs, mesh.timeoutMs) only need to keep NAT
 *   and firewall state and to reap a dead connection: the SWIM probes detect failures, so a stall
 *   of a few seconds (a GC pause, a busy host) does not drop the agent's connections.
 * - Framing: the Noise stream carries a 4-byte big-endian length, then the frame. A length above
 *   maxFrameBytes (up to maxDiscardBytes) is skipped without buffering and counted, and the
 *   connection survives; a length of 0 or above maxDiscardBytes is a broken peer: disconnected
 *   and counted.
 * - One connection per peer: Hyperswarm deduplicates; when it replaces a connection, frames go
 *   to the newest and no disconnect/connect pair is reported if the new one arrives first.
 * - Hello: the first frame each side sends (proto/mesh/v1/hello.proto) proves the cluster secret,
 *   bound to the connection's Noise handshake hash, and carries digests of the settings that must
 *   agree cluster-wide. The firewall admits any member's key, and the DHT bootstrap addresses of
 *   the member list reach a member whatever its topic, so the topic alone never kept a member
 *   with another secret out: without the proof it joined the mesh in about 2-12 s. Nothing of a
 *   connection reaches the agent before its hello is verified; a peer that fails the proof, sends
 *   something else first or differs in a setting marked `refuse` is disconnected, logged at error
 *   with the reason and the fields, and not called again for refusedRetryMs. One that says nothing
 *   within helloTimeoutMs is disconnected and called again (logged and listed, not refused).
 *   Other differing settings are logged and listed (peerChecks()).
 */
import { createHash, createHmac, timingSafeEqual } from 'node:crypto'
import dgram from 'node:dgram'
import Hyperswarm, { type NoiseSecretStream, type PeerDiscoverySession } from 'hyperswarm'
import HyperDHT from 'hyperdht'
import { FRAME_BYTES_MAX_DEFAULT, type HostId } from '../core/index.js'
import type { Logger } from '../ports/logger.js'
import type { PeerConnectionStats, Transport, TransportHandlers } from '../ports/transport.js'
import { FRAME_HEADER_BYTES, decodeHello, encodeHello } from './wire-codec.js'

/** Prefix hashed before the cluster secret, so the topic is useless for anything else. */
export const TOPIC_DOMAIN = 'starling/mesh/v1/topic\n'
/** Prefix hashed before the cluster secret into the key of the hello's proof. */
export const PROOF_KEY_DOMAIN = 'starling/mesh/v1/proof-key\n'
/** Prefix of the message the hello's proof authenticates. */
export const PROOF_DOMAIN = 'starling/mesh/v1/hello\n'

/** A cluster-wide setting as the hello carries it (agent/cluster-settings.ts computes them). */
export interface SettingDigest {
  field: string
  digest: Uint8Array
  /** A peer whose digest differs is refused; otherwise it is only flagged. */
  refuse: boolean
}

/** Why a peer was refused or flagged at its hello. */
export type PeerCheckReason = 'secret_mismatch' | 'settings_mismatch' | 'settings_differ' | 'no_hello' | 'bad_hello' | 'hello_timeout'

/** The outcome of a peer's last hello that was not a plain match. */
export interface PeerCheck {
  peer: HostId
  /** True: disconnected; false: connected, with settings that differ (flagged). */
  refused: boolean
  reason: PeerCheckReason
  /** Configuration paths that differ ("cluster.secret" when the proof fails). */
  fields: string[]
  detail: string
  /** Wall ms of the first time this outcome was seen, and how many times since. */
  since: number
  times: number
}

export interface HyperswarmTransportInit {
  /** This agent's Noise key pair (see identity.ts); the hex public key is its host id. */
  keyPair: { publicKey: Uint8Array, secretKey: Uint8Array }
  /** Shared secret of the cluster; the topic is SHA-256(TOPIC_DOMAIN + secret). */
  clusterSecret: string | Uint8Array
  /** Concrete IPv4 address this agent's DHT node binds and announces (not 0.0.0.0). */
  host: string
  /** UDP port of this agent's DHT node; peers bootstrap from host:port. */
  port: number
  /** "ip:port" of other agents' DHT nodes (seeds). Empty: this agent bootstraps only from itself. @default [] */
  bootstrap?: string[]
  /** Hex public keys of the cluster's members (ours may be included). Everyone else is refused. */
  allowedKeys: string[]
  /**
   * "ip:port" of each member's DHT node, by hex key. A connection by key then goes straight to
   * the member's own node (where its server listens) instead of looking the key up on the DHT,
   * whose announcements are missing while a cluster started all at once is still bootstrapping.
   * @default {}
   */
  addresses?: Record<string, string>
  /** Interval of keep-alive messages on an idle connection, ms. Lower = faster death detection, more packets. @default 1000 */
  keepAliveMs?: number
  /** A connection with nothing received for this long is closed, ms. Must exceed keepAliveMs. @default 3000 */
  timeoutMs?: number
  /** Discovery refresh interval while an allowed peer is missing: uniformly in [min, max], ms. @default 500 */
  refreshFastMsMin?: number
  /** @default 1000 */
  refreshFastMsMax?: number
  /** How long after the last connect/disconnect the fast refresh lasts while a peer stays missing, ms. @default 30000 */
  refreshFastWindowMs?: number
  /** Refresh interval when a peer has been missing longer than the fast window (a host that is down), ms. @default 5000 */
  refreshMissingMs?: number
  /**
   * Refresh interval once every allowed peer is connected, ms: only to keep our announcement
   * alive on the DHT (Hyperswarm's own interval); members are found by their keys. @default 600000
   */
  refreshIdleMs?: number
  /** Largest frame sent or delivered, bytes (without the length prefix). @default FRAME_BYTES_MAX_DEFAULT (256 KiB; the agent passes core.frameBytesMax) */
  maxFrameBytes?: number
  /** Frames longer than maxFrameBytes but at most this are skipped unbuffered; longer lengths disconnect the peer. @default 1048576 */
  maxDiscardBytes?: number
  /** Bytes a connection may hold unsent while it is congested; beyond this send() drops. @default 1048576 */
  maxQueuedBytes?: number
  /**
   * Start with an empty active view instead of a full mesh: connect only to the members later
   * named by setActivePeers() and, on demand, to those frames are sent to; never connect to every
   * member the topic finds (which, with every agent started at once, is the start-up storm).
   * @default false
   */
  onDemand?: boolean
  /**
   * On demand (as onDemand) while the cluster has more members than this (self included), a full
   * mesh otherwise; decided again whenever setMembers() changes the members, so a cluster that
   * grows past its active view switches at the version that makes it so, on every member alike.
   * Takes the place of onDemand. @default absent (onDemand decides, once)
   */
  onDemandAbove?: number
  /** A connection to a member outside the active view with no frame either way for this long is closed, ms. @default 20000 */
  idleCloseMs?: number
  /** A frame held for a member while a connection to it opens is dropped after this long, ms. @default 10000 */
  pendingTtlMs?: number
  /** Members outside the active view dialled at once (the rest wait); below Hyperswarm's parallel dials, so the view always has slots. @default 4 */
  maxOnDemandDials?: number
  /**
   * A call to a member whose address is known goes to that address alone for this long before a
   * DHT search for the member starts (directRoutes). 0 = search at once, as hyperdht does. @default 2000
   */
  directSearchDelayMs?: number
  /** Hyperswarm's peer limit. @default allowedKeys.length + 16 */
  maxPeers?: number
  /** Grace for unannouncing on stop before the swarm is torn down by force, ms. @default 2000 */
  stopGraceMs?: number
  /** A DHT to use instead of creating a bootstrapper (e.g. hyperdht/testnet); host, port and bootstrap are then ignored. stop() destroys it. */
  dht?: HyperDHT
  /** Member names by hex key, for log lines. @default {} */
  names?: Record<string, string>
  /** Cluster-wide settings sent in the hello and compared with each peer's. @default [] */
  settings?: SettingDigest[]
  /** A new connection whose hello has not arrived after this long is closed, ms. @default max(5000, timeoutMs) */
  helloTimeoutMs?: number
  /** After refusing a peer, do not call it again for this long, ms (it may still call us). @default 30000 */
  refusedRetryMs?: number
}

export interface HyperswarmTransportComponents {
  logger: Logger
}

/** Counters since start; the runtime exports them as agent_transport_* metrics. */
export interface HyperswarmTransportStats {
  framesSent: number
  bytesSent: number
  framesReceived: number
  bytesReceived: number
  /** Frames sent and received as datagrams (sendDatagram; counted in framesSent/Received too). */
  datagramsSent: number
  datagramsReceived: number
  /** send() refusals, by cause (expired: held for a connection that did not open in time). */
  sendDropped: { notStarted: number, noPeer: number, oversized: number, congested: number, expired: number }
  /** Frames held while a connection opened on demand (sent once it opened, or expired). */
  framesHeld: number
  /** Connections opened on demand (a frame for a member outside the active view). */
  onDemandConnects: number
  /** Calls that went to a member's known address with no DHT search beside them (directRoutes). */
  directCalls: number
  /** On-demand dials that waited for another to finish (maxOnDemandDials were under way). */
  onDemandDialsQueued: number
  /** Connections outside the active view closed for being idle. */
  idleCloses: number
  /** Switches between a full mesh and connections on demand (onDemandAbove, as the members changed). */
  modeSwitches: number
  /** Incoming frames over maxFrameBytes, skipped. */
  oversizedFramesSkipped: number
  /** Connections closed because the peer sent a length of 0 or beyond maxDiscardBytes. */
  badLengthDisconnects: number
  /** Keys refused by the firewall (or a connection of an unlisted key), and members refused at their hello. */
  rejectedPeers: number
  /** Connections of members closed at their hello (wrong secret, refused settings, no or bad hello). */
  helloRefusals: number
  /** Connections closed because the peer's hello did not come within helloTimeoutMs (the peer is called again). */
  helloTimeouts: number
  connectionsOpened: number
  connectionsClosed: number
  /** Connections replaced by a newer one to the same peer. */
  connectionsReplaced: number
  discoveryRefreshes: number
  /** Rounds of calling the wanted members with no connection outside a discovery refresh (armRedial). */
  redials: number
  /** Connections we dialled (Hyperswarm client connections): attempted, opened, and attempted ones that never opened. */
  dialsAttempted: number
  dialsOpened: number
  dialsFailed: number
  /** Dials in flight now (Hyperswarm runs at most maxParallel at once). */
  dialsInFlight: number
}

export interface HyperswarmTransport extends Transport {
  stats (): HyperswarmTransportStats
  /** The DHT address this agent's node listens on, once started. */
  address (): { host: string, port: number } | null
  /** Peers refused at their hello, or connected with differing settings (flagged). */
  peerChecks (): PeerCheck[]
  /** Open connections, the active view's size (null: every member) and members being connected on demand. */
  connections (): { open: number, active: number | null, pending: number }
  /** Each open connection: its traffic each way and how long ago the peer was last heard on it. */
  peerStats (): PeerConnectionStats[]
  setActivePeers (peers: HostId[]): void
  /**
   * The cluster's members changed (an agreed configuration version): new members are called and
   * admitted, removed ones are closed and refused from then on. A removed member that connects
   * gets `farewell(key)` (encoded frames: the versions up to the one that removed it) after its
   * hello, then is closed, so that its own agent learns why.
   */
  setMembers (members: Array<{ key: HostId, address: string, name: string }>, farewell: (key: HostId) => Uint8Array[]): void
}

export class TransportStoppedError extends Error {
  static override name = 'TransportStoppedError'
  readonly code = 'TRANSPORT_STOPPED'
  constructor (message = 'transport was stopped and cannot start again') { super(message); this.name = 'TransportStoppedError' }
}

/** The hello's proof: HMAC-SHA256 over the connection's handshake hash and the sender's key (hello.proto). */
export function helloProof (proofKey: Uint8Array, handshakeHash: Uint8Array, senderPublicKey: Uint8Array): Buffer {
  return createHmac('sha256', proofKey).update(PROOF_DOMAIN).update(handshakeHash).update(senderPublicKey).digest()
}

/** The key of the hello's proof: SHA-256 of its domain prefix and the secret. */
export function proofKey (clusterSecret: string | Uint8Array): Buffer {
  return createHash('sha256').update(PROOF_KEY_DOMAIN).update(clusterSecret).digest()
}

/** SHA-256 of the domain prefix and the secret: the 32-byte Hyperswarm topic of a cluster. */
export function clusterTopic (clusterSecret: string | Uint8Array): Buffer {
  return createHash('sha256').update(TOPIC_DOMAIN).update(clusterSecret).digest()
}

const HEX_KEY = /^[0-9a-f]{64}$/

function short (id: string): string { return id.slice(0, 8) }

function parseHostPort (s: string): { host: string, port: number } {
  const m = /^(\d{1,3}(?:\.\d{1,3}){3}):(\d{1,5})$/.exec(s.trim())
  const port = m === null ? NaN : Number(m[2])
  if (m === null || m[1] === undefined || !(port > 0 && port < 65536)) throw new Error(`hyperswarm transport: bootstrap entry "${s}" is not "ipv4:port"`)
  return { host: m[1], port }
}

interface Options {
  keepAliveMs: number
  timeoutMs: number
  refreshFastMsMin: number
  refreshFastMsMax: number
  refreshFastWindowMs: number
  refreshMissingMs: number
  refreshIdleMs: number
  maxFrameBytes: number
  maxDiscardBytes: number
  maxQueuedBytes: number
  stopGraceMs: number
  helloTimeoutMs: number
  refusedRetryMs: number
  idleCloseMs: number
  pendingTtlMs: number
  maxOnDemandDials: number
  directSearchDelayMs: number
}

/**
 * Splits a byte stream into length-prefixed frames. Never buffers more than maxFrameBytes: a
 * longer frame is skipped as it streams past.
 */
export class FrameParser {
  private readonly head = Buffer.alloc(FRAME_HEADER_BYTES)
  private headLen = 0
  private body: Buffer | null = null
  private bodyLen = 0
  private skip = 0

  constructor (
    private readonly maxFrameBytes: number,
    private readonly maxDiscardBytes: number,
    private readonly onFrame: (frame: Uint8Array) => void,
    private readonly onOversized: (len: number) => void
  ) {}

  private broken = false

  /** Consumes a chunk; returns false on a broken length (the caller disconnects), and ever after. */
  push (chunk: Uint8Array): boolean {
    if (this.broken) return false
    let off = 0
    while (off < chunk.byteLength) {
      if (this.skip > 0) {
        const n = Math.min(this.skip, chunk.byteLength - off)
        this.skip -= n
        off += n
      } else if (this.body === null) {
        const n = Math.min(FRAME_HEADER_BYTES - this.headLen, chunk.byteLength - off)
        this.head.set(chunk.subarray(off, off + n), this.headLen)
        this.headLen += n
        off += n
        if (this.headLen < FRAME_HEADER_BYTES) break
        this.headLen = 0
        const len = this.head.readUInt32BE(0)
        if (len === 0 || len > this.maxDiscardBytes) {
          this.broken = true
          return false
        }
        if (len > this.maxFrameBytes) {
          this.skip = len
          this.onOversized(len)
        } else if (chunk.byteLength - off >= len) {
          // A copy (Buffer#slice would share memory): the receiver owns the frame.
          this.onFrame(Uint8Array.prototype.slice.call(chunk, off, off + len))
          off += len
        } else {
          this.body = Buffer.allocUnsafe(len)
          this.bodyLen = 0
        }
      } else {
        const n = Math.min(this.body.byteLength - this.bodyLen, chunk.byteLength - off)
        this.body.set(chunk.subarray(off, off + n), this.bodyLen)
        this.bodyLen += n
        off += n
        if (this.bodyLen === this.body.byteLength) {
          const frame = this.body
          this.body = null
          this.onFrame(frame)
        }
      }
    }
    return true
  }
}

/** One live connection to a member. */
/**
 * Largest frame sent as a datagram: UDX packets carry about 1180 bytes of payload on a 1280-byte
 * path MTU, and the secretbox adds 8 + 16; larger frames go on the stream.
 */
export const DATAGRAM_MAX_BYTES = 1100

class PeerConnection {
  private waitingDrain = false
  private queuedBytes = 0
  /** Wall ms of the last frame sent or received (idle connections outside the view close). */
  lastUsed = Date.now()
  /** Closed by us for being idle: not reported as a lost connection. */
  idleClosed = false
  /** Wall ms this connection was admitted (its hello passed); 0 before. */
  openedAt = 0
  /** Traffic on this connection, for peerStats(): stream frames and datagrams each way, wall ms of the last received. */
  readonly traffic = { streamIn: 0, streamOut: 0, datagramsIn: 0, datagramsOut: 0, lastStreamInAt: 0, lastDatagramInAt: 0 }
  constructor (readonly id: HostId, readonly conn: NoiseSecretStream, private readonly maxQueuedBytes: number) {
    conn.on('drain', () => { this.waitingDrain = false; this.queuedBytes = 0 })
  }

  /** 'ok', or why the frame was not accepted. */
  write (frame: Uint8Array): 'ok' | 'closed' | 'congested' {
    if (this.conn.destroying || this.conn.destroyed) return 'closed'
    const buf = Buffer.allocUnsafe(FRAME_HEADER_BYTES + frame.byteLength)
    if (this.waitingDrain && this.queuedBytes + buf.byteLength > this.maxQueuedBytes) return 'congested'
    buf.writeUInt32BE(frame.byteLength, 0)
    buf.set(frame, FRAME_HEADER_BYTES)
    let flowing: boolean
    try {
      flowing = this.conn.write(buf)
    } catch {
      return 'closed'
    }
    if (this.waitingDrain) this.queuedBytes += buf.byteLength
    if (!flowing) this.waitingDrain = true
    this.lastUsed = Date.now()
    this.traffic.streamOut++
    return 'ok'
  }

  /** Bytes written while the stream asked us to wait (0 when it flows). */
  get backlogBytes (): number { return this.waitingDrain ? this.queuedBytes : 0 }
}

function freshStats (): HyperswarmTransportStats {
  return {
    framesSent: 0,
    bytesSent: 0,
    framesReceived: 0,
    bytesReceived: 0,
    datagramsSent: 0,
    datagramsReceived: 0,
    sendDropped: { notStarted: 0, noPeer: 0, oversized: 0, congested: 0, expired: 0 },
    framesHeld: 0,
    onDemandConnects: 0,
    onDemandDialsQueued: 0,
    idleCloses: 0,
    modeSwitches: 0,
    oversizedFramesSkipped: 0,
    badLengthDisconnects: 0,
    rejectedPeers: 0,
    helloRefusals: 0,
    helloTimeouts: 0,
    connectionsOpened: 0,
    connectionsClosed: 0,
    connectionsReplaced: 0,
    discoveryRefreshes: 0,
    directCalls: 0,
    redials: 0,
    dialsAttempted: 0,
    dialsOpened: 0,
    dialsFailed: 0,
    dialsInFlight: 0
  }
}

class HyperswarmMeshTransport implements HyperswarmTransport {
  readonly self: HostId
  private readonly log: Logger
  private readonly opts: Options
  private allowed: ReadonlySet<string>
  /** Members removed by an agreed configuration: let through the firewall to hear why, then closed. */
  private removed = new Map<HostId, Uint8Array[]>()
  private readonly names = new Map<HostId, string>()
  private readonly topic: Buffer
  private readonly bootstrap: Array<{ host: string, port: number }>
  private readonly addressOf = new Map<HostId, { host: string, port: number }>()
  private readonly counters = freshStats()
  private readonly peers = new Map<HostId, PeerConnection>()
  private handlers: TransportHandlers | null = null
  private swarm: Hyperswarm | null = null
  private discovery: PeerDiscoverySession | null = null
  private starting: Promise<void> | null = null
  private stopping: Promise<void> | null = null
  private refreshTimer: NodeJS.Timeout | null = null
  /** Calls the wanted members we have no connection to, apart from the discovery refresh (armRedial). */
  private redialTimer: NodeJS.Timeout | null = null
  private refreshing = false
  private lastPeerChangeAt = 0
  private readonly proofKey: Buffer
  private readonly settings: SettingDigest[]
  /** Peers refused or flagged at their last hello (a plain match removes the entry). */
  private readonly checks = new Map<HostId, PeerCheck & { loggedAt: number }>()
  /** Refused peers we do not call until this wall time (ms). */
  private readonly refusedUntil = new Map<HostId, number>()
  /** The members to stay connected to; null until setActivePeers(): every member. */
  private active: Set<HostId> | null = null
  /** The core's active view as last given (kept in a full mesh too, for a switch to on demand). */
  private viewPeers: HostId[] = []
  /** Frames held for members being connected on demand, oldest first. */
  private readonly pending = new Map<HostId, { frames: Array<{ frame: Uint8Array, at: number }>, bytes: number }>()
  /** Members outside the view being dialled on demand, and since when (wall ms); at most maxOnDemandDials. */
  private readonly dialing = new Map<HostId, number>()
  private sweepTimer: NodeJS.Timeout | null = null

  constructor (private readonly init: HyperswarmTransportInit, components: HyperswarmTransportComponents) {
    this.log = components.logger.forComponent('agent:transport')
    this.self = Buffer.from(init.keyPair.publicKey).toString('hex')
    const allowed = new Set<string>()
    for (const k of init.allowedKeys) {
      const key = k.toLowerCase()
      if (!HEX_KEY.test(key)) throw new Error(`hyperswarm transport: allowed key "${k}" is not 64 hex digits`)
      allowed.add(key)
    }
    this.allowed = allowed
    if (this.onDemandWanted()) this.active = new Set()
    this.topic = clusterTopic(init.clusterSecret)
    this.proofKey = proofKey(init.clusterSecret)
    this.settings = init.settings ?? []
    const selfAddr = `${init.host}:${init.port}`
    this.bootstrap = (init.bootstrap ?? []).filter(s => s.trim() !== selfAddr).map(parseHostPort)
    for (const [k, a] of Object.entries(init.addresses ?? {})) this.addressOf.set(k.toLowerCase(), parseHostPort(a))
    for (const [k, n] of Object.entries(init.names ?? {})) this.names.set(k.toLowerCase(), n)
    this.opts = {
      keepAliveMs: init.keepAliveMs ?? 1000,
      timeoutMs: init.timeoutMs ?? 3000,
      refreshFastMsMin: init.refreshFastMsMin ?? 500,
      refreshFastMsMax: init.refreshFastMsMax ?? 1000,
      refreshFastWindowMs: init.refreshFastWindowMs ?? 30_000,
      refreshMissingMs: init.refreshMissingMs ?? 5000,
      refreshIdleMs: init.refreshIdleMs ?? 600_000,
      maxFrameBytes: init.maxFrameBytes ?? FRAME_BYTES_MAX_DEFAULT,
      maxDiscardBytes: init.maxDiscardBytes ?? 1024 * 1024,
      maxQueuedBytes: init.maxQueuedBytes ?? 1024 * 1024,
      stopGraceMs: init.stopGraceMs ?? 2000,
      helloTimeoutMs: init.helloTimeoutMs ?? Math.max(5000, init.timeoutMs ?? 3000),
      refusedRetryMs: init.refusedRetryMs ?? 30_000,
      idleCloseMs: init.idleCloseMs ?? 20_000,
      pendingTtlMs: init.pendingTtlMs ?? 10_000,
      maxOnDemandDials: init.maxOnDemandDials ?? 4,
      directSearchDelayMs: init.directSearchDelayMs ?? 2000
    }
    const o = this.opts
    if (o.timeoutMs > 0 && o.keepAliveMs >= o.timeoutMs) throw new Error('hyperswarm transport: keepAliveMs must be < timeoutMs')
    if (o.refreshFastMsMin > o.refreshFastMsMax) throw new Error('hyperswarm transport: refreshFastMsMin must be <= refreshFastMsMax')
    if (o.maxDiscardBytes < o.maxFrameBytes) throw new Error('hyperswarm transport: maxDiscardBytes must be >= maxFrameBytes')
  }

  stats (): HyperswarmTransportStats {
    // Hyperswarm's own counters (not in its typings): a dial in flight is neither opened nor failed yet.
    const sw = this.swarm as unknown as { connecting?: number, stats?: { connects?: { client?: { attempted?: number, opened?: number } } } } | null
    const attempted = sw?.stats?.connects?.client?.attempted ?? 0
    const opened = sw?.stats?.connects?.client?.opened ?? 0
    const pendingDials = sw?.connecting ?? 0
    return {
      ...this.counters,
      sendDropped: { ...this.counters.sendDropped },
      dialsAttempted: attempted,
      dialsOpened: opened,
      dialsFailed: Math.max(0, attempted - opened - pendingDials),
      dialsInFlight: pendingDials
    }
  }

  /** Open connections now, the active view's size (null: every member), and members being connected on demand. */
  connections (): { open: number, active: number | null, pending: number } {
    return { open: this.peers.size, active: this.active === null ? null : this.active.size, pending: this.pending.size }
  }

  peerStats (): PeerConnectionStats[] {
    const now = Date.now()
    const ago = (t: number): number | null => t === 0 ? null : now - t
    return [...this.peers.values()].map(p => {
      const t = p.traffic
      return {
        peer: p.id,
        initiator: p.conn.isInitiator,
        openForMs: now - p.openedAt,
        streamIn: t.streamIn,
        streamOut: t.streamOut,
        datagramsIn: t.datagramsIn,
        datagramsOut: t.datagramsOut,
        lastStreamInMsAgo: ago(t.lastStreamInAt),
        lastDatagramInMsAgo: ago(t.lastDatagramInAt),
        backlogBytes: p.backlogBytes
      }
    })
  }

  setMembers (members: Array<{ key: HostId, address: string, name: string }>, farewell: (key: HostId) => Uint8Array[]): void {
    const next = new Set<string>()
    for (const m of members) {
      const key = m.key.toLowerCase()
      if (!HEX_KEY.test(key)) { this.log.error('setMembers: a key is not 64 hex digits; the member list is unchanged', { key: m.key }); return }
      next.add(key)
      this.addressOf.set(key, parseHostPort(m.address))
      this.names.set(key, m.name)
    }
    const gone = [...this.allowed].filter(k => !next.has(k) && k !== this.self)
    const added = [...next].filter(k => !this.allowed.has(k) && k !== this.self)
    this.allowed = next
    for (const k of gone) {
      this.removed.set(k, farewell(k))
      this.refusedUntil.delete(k)
      this.active?.delete(k)
      this.pending.delete(k)
      try { this.swarm?.leavePeer(Buffer.from(k, 'hex')) } catch { /* not joined */ }
      const p = this.peers.get(k)
      if (p !== undefined) this.sendFarewell(p.conn, k)
    }
    for (const k of added) { this.removed.delete(k); this.refusedUntil.delete(k) }
    if (gone.length + added.length > 0) {
      this.log.info('cluster members changed', { added: added.map(k => `${this.names.get(k) ?? 'member'} (${short(k)})`), removed: gone.map(k => `${this.names.get(k) ?? 'member'} (${short(k)})`), members: next.size })
      this.applyMode()
      this.joinMissingPeers()
    }
  }

  /** Connections on demand beyond the active view (true), or a full mesh (init.onDemandAbove, init.onDemand)? */
  private onDemandWanted (): boolean {
    const above = this.init.onDemandAbove
    return above !== undefined ? this.allowed.size > above : this.init.onDemand === true
  }

  /** Switches between a full mesh and connections on demand when the members' count asks for it (onDemandAbove). */
  private applyMode (): void {
    const want = this.onDemandWanted()
    if (want === (this.active !== null)) return
    this.log.info(want ? 'connections beyond the active view now on demand: the cluster is larger than the view' : 'a full mesh now: the cluster is no larger than the active view', { members: this.allowed.size })
    this.counters.modeSwitches++
    if (want) {
      // Hyperswarm stops rebuilding the connections outside the view; those close once idle (sweep).
      this.active = new Set()
      const view = new Set(this.viewPeers)
      for (const k of this.allowed) {
        if (k === this.self || view.has(k)) continue
        try { this.swarm?.leavePeer(Buffer.from(k, 'hex')) } catch { /* not joined */ }
      }
      this.setActivePeers(this.viewPeers)
    } else {
      this.active = null
      this.dialing.clear()
      if (this.sweepTimer !== null) { clearInterval(this.sweepTimer); this.sweepTimer = null }
      this.armRedial()
    }
    // The topic's lookups find every member in a full mesh only.
    this.scheduleRefresh(this.fastDelay())
  }

  /** A removed member hears the versions that removed it, then the connection closes. */
  private sendFarewell (conn: NoiseSecretStream, id: HostId): void {
    const frames = this.removed.get(id) ?? []
    this.log.warn(`refused ${this.names.get(id) ?? 'member'} (${short(id)}): removed from the cluster`, { peer: short(id) })
    try {
      for (const f of frames) {
        const len = Buffer.alloc(4)
        len.writeUInt32BE(f.byteLength)
        conn.write(Buffer.concat([len, f]))
      }
      conn.end()
    } catch { /* closing anyway */ }
    const t = setTimeout(() => { conn.destroy() }, 2000)
    t.unref()
  }

  setActivePeers (peers: HostId[]): void {
    this.viewPeers = [...peers]
    if (this.active === null) return // a full mesh stays one (the view is kept for a switch: applyMode)
    const next = new Set<HostId>()
    for (const p of peers) if (p !== this.self && this.allowed.has(p)) next.add(p)
    const prev = this.active
    this.active = next
    for (const k of [...this.dialing.keys()]) if (next.has(k)) this.dialing.delete(k)
    const swarm = this.swarm
    if (swarm === null || this.stopping !== null) return // doStart joins what is wanted then
    // Members that left the view: no more reconnecting (their connection closes once idle).
    for (const k of prev ?? this.allowed) {
      if (k === this.self || next.has(k) || this.dialing.has(k)) continue
      try { swarm.leavePeer(Buffer.from(k, 'hex')) } catch { /* not joined */ }
    }
    if (prev === null) {
      // The topic's lookups connect to every member that announces: from now on only announce.
      this.discovery?.refresh({ client: false, server: true }).catch(() => {})
    }
    const added = [...next].filter(k => prev === null || !prev.has(k))
    if (added.length > 0 || prev === null) {
      this.log.debug('active view changed', { peers: next.size, added: added.map(short) })
      this.joinMissingPeers()
      this.scheduleRefresh(this.fastDelay())
    }
    this.armSweep()
  }

  /** True when a connection to this member should be kept (and rebuilt when lost). */
  private wanted (id: HostId): boolean {
    return this.active === null || this.active.has(id) || this.dialing.has(id)
  }

  /** Holds a frame for a member with no connection and asks Hyperswarm for one. */
  private hold (to: HostId, frame: Uint8Array): boolean {
    const c = this.counters
    const now = Date.now()
    let q = this.pending.get(to)
    if (q === undefined) {
      if ((this.refusedUntil.get(to) ?? 0) > now) { c.sendDropped.noPeer++; return false }
      q = { frames: [], bytes: 0 }
      this.pending.set(to, q)
      c.onDemandConnects++
      if (this.active?.has(to) === true) this.callPeer(to)
      else if (this.dialing.size < this.opts.maxOnDemandDials) this.dialOnDemand(to, now)
      else c.onDemandDialsQueued++
      this.armSweep()
    }
    if (q.bytes + frame.byteLength > this.opts.maxQueuedBytes) { c.sendDropped.congested++; return false }
    q.frames.push({ frame, at: now })
    q.bytes += frame.byteLength
    c.framesHeld++
    return true
  }

  private dialOnDemand (id: HostId, now: number): void {
    this.dialing.set(id, now)
    this.callPeer(id)
  }

  /** Starts the dials that waited, oldest first, while fewer than maxOnDemandDials are under way. */
  private startWaitingDials (): void {
    if (this.active === null || this.stopping !== null) return
    const now = Date.now()
    for (const id of this.pending.keys()) {
      if (this.dialing.size >= this.opts.maxOnDemandDials) return
      if (this.dialing.has(id) || this.active.has(id) || this.peers.has(id)) continue
      this.dialOnDemand(id, now)
    }
  }

  /** An on-demand dial is over (connected, given up or its frames expired): free its place. */
  private dialOver (id: HostId): void {
    if (!this.dialing.delete(id)) return
    if (this.active !== null && !this.active.has(id) && !this.peers.has(id)) {
      try { this.swarm?.leavePeer(Buffer.from(id, 'hex')) } catch { /* not joined */ }
    }
    this.startWaitingDials()
  }

  /** Sends what was held for a member whose connection just opened. */
  private flushHeld (peer: PeerConnection): void {
    const q = this.pending.get(peer.id)
    if (q === undefined) return
    this.pending.delete(peer.id)
    const cutoff = Date.now() - this.opts.pendingTtlMs
    for (const { frame, at } of q.frames) {
      if (at < cutoff) { this.counters.sendDropped.expired++; continue }
      const r = peer.write(frame)
      if (r === 'ok') { this.counters.framesSent++; this.counters.bytesSent += frame.byteLength } else if (r === 'congested') this.counters.sendDropped.congested++
      else this.counters.sendDropped.noPeer++
    }
  }

  private armSweep (): void {
    if (this.sweepTimer !== null || this.active === null || this.stopping !== null) return
    const every = Math.max(250, Math.min(this.opts.idleCloseMs, this.opts.pendingTtlMs) / 4)
    this.sweepTimer = setInterval(() => this.sweep(), every)
    this.sweepTimer.unref()
  }

  /** Drops held frames past their time, and closes idle connections outside the view. */
  private sweep (): void {
    if (this.stopping !== null || this.active === null) return
    const now = Date.now()
    for (const [id, q] of this.pending) {
      while (q.frames.length > 0 && now - q.frames[0]!.at > this.opts.pendingTtlMs) {
        const f = q.frames.shift()!
        q.bytes -= f.frame.byteLength
        this.counters.sendDropped.expired++
      }
      const since = this.dialing.get(id)
      if (since !== undefined && now - since > this.opts.pendingTtlMs) {
        // A dial that has not connected in pendingTtlMs is given up with what it held: its place
        // goes to a member that waits (a new frame for this one starts a new dial later).
        for (const f of q.frames) { this.counters.sendDropped.expired++; q.bytes -= f.frame.byteLength }
        q.frames.length = 0
      }
      if (q.frames.length > 0) continue
      this.pending.delete(id)
      if (this.dialing.has(id)) this.dialOver(id)
      else if (!this.active.has(id) && !this.peers.has(id)) {
        try { this.swarm?.leavePeer(Buffer.from(id, 'hex')) } catch { /* not joined */ }
      }
    }
    this.startWaitingDials()
    for (const p of this.peers.values()) {
      if (this.active.has(p.id) || this.pending.has(p.id) || now - p.lastUsed < this.opts.idleCloseMs) continue
      p.idleClosed = true
      this.counters.idleCloses++
      this.log.debug('closing an idle connection outside the active view', { peer: short(p.id) })
      p.conn.destroy()
    }
  }

  address (): { host: string, port: number } | null {
    const dht = this.swarm?.dht
    if (dht === undefined || dht.destroyed) return null
    try { return dht.address() } catch { return null }
  }

  connected (): HostId[] {
    return [...this.peers.keys()]
  }

  peerChecks (): PeerCheck[] {
    return [...this.checks.values()].map(({ loggedAt: _, ...c }) => ({ ...c, fields: [...c.fields] }))
  }

  start (handlers: TransportHandlers): Promise<void> {
    if (this.stopping !== null) return Promise.reject(new TransportStoppedError())
    if (this.starting === null) {
      this.handlers = handlers
      this.starting = this.doStart()
    }
    return this.starting
  }

  private async doStart (): Promise<void> {
    const kp = { publicKey: Buffer.from(this.init.keyPair.publicKey), secretKey: Buffer.from(this.init.keyPair.secretKey) }
    // dht-rpc cannot be destroyed cleanly once its bind failed (it leaks a native watcher that
    // keeps the process alive), so find out first whether we can bind at all.
    if (this.init.dht === undefined) await probeUdpBind(this.init.host, this.init.port)
    const dht = this.init.dht ?? HyperDHT.bootstrapper(this.init.port, this.init.host, {
      host: this.init.host,
      bootstrap: this.bootstrap,
      keyPair: kp,
      connectionKeepAlive: this.opts.keepAliveMs
    })
    try {
      await listening(dht)
    } catch (err) {
      await dht.destroy({ force: true }).catch(() => {
        // Lost the race for the port after probing: release what dht-rpc leaves behind.
        (dht as unknown as { io?: { networkInterfaces?: { destroy?: () => void } } }).io?.networkInterfaces?.destroy?.()
      })
      throw err
    }
    this.directRoutes(dht)
    const swarm = new Hyperswarm({
      dht,
      keyPair: kp,
      firewall: remote => this.firewall(remote),
      // Hyperswarm counts connections against maxPeers with a factor of up to 4 when peers are
      // joined explicitly: leave room for topic-discovered members too.
      maxPeers: this.init.maxPeers ?? 4 * this.allowed.size + 16,
      // Connections opened on demand must not queue behind a few attempts to members that are down.
      maxParallel: 8
    })
    this.swarm = swarm
    swarm.on('connection', (conn: NoiseSecretStream) => this.onConnection(conn))
    if (this.stopping !== null) return
    // Both ways of finding members. The topic is the design's discovery; joining every member's
    // key explicitly connects through the DHT node that serves it, which also works where topic
    // lookups cannot (two nodes: each holds only the other's announcement and never queries itself).
    this.discovery = swarm.join(this.topic, { server: true, client: this.active === null })
    this.joinMissingPeers()
    this.lastPeerChangeAt = Date.now()
    this.armRedial()
    this.log.info('mesh transport started', {
      self: short(this.self), address: this.address(), seeds: this.bootstrap.length, members: this.allowed.size
    })
    // Refresh only once the join's own first announce and lookup are done: a refresh aborts the
    // query in flight. Until then (6-12 s when no seed answers), explicit joins do the work.
    this.discovery.flushed().then(
      () => this.scheduleRefresh(this.fastDelay()),
      err => { this.log.debug('discovery flush failed', { err }); this.scheduleRefresh(this.fastDelay()) }
    )
  }

  /** (Re)joins every allowed key we have no connection to; rejoining resets Hyperswarm's backoff. */
  private joinMissingPeers (): void {
    const swarm = this.swarm
    if (swarm === null || this.stopping !== null) return
    const now = Date.now()
    for (const k of this.allowed) {
      if (k === this.self || this.peers.has(k) || (this.refusedUntil.get(k) ?? 0) > now || !this.wanted(k)) continue
      try { swarm.leavePeer(Buffer.from(k, 'hex')) } catch { /* not joined */ }
      this.callPeer(k)
    }
  }

  /** Asks Hyperswarm for a connection to a member, through the member's own DHT node when its address is known. */
  private callPeer (id: HostId): void {
    const swarm = this.swarm
    if (swarm === null) return
    const addr = this.addressOf.get(id)
    // hyperdht's connect tries cached relay addresses of a key first (lib/connect.js findAndConnect).
    if (addr !== undefined) (swarm.dht as unknown as { _relayAddressesCache?: { set: (k: string, v: unknown) => void } })._relayAddressesCache?.set(id, [addr])
    try { swarm.joinPeer(Buffer.from(id, 'hex')) } catch (err) { this.log.debug('joinPeer failed', { peer: short(id), err }) }
  }

  /**
   * Calls to a member go straight to its own DHT node (its configured address), not through a DHT
   * search. hyperdht's connect tries the cached relay address first (callPeer), but starts a
   * FIND_PEER query beside it at once, and that query reaches most of the cluster's DHT nodes
   * (each agent is one): every on-demand dial (an indirect probe's relay, a check of a suspicion,
   * a reply) cost the whole cluster a search. In a cluster started all at once on few cores that
   * was the largest part of the CPU while suspicions churned (a profile of 60 agents), which made
   * the agents slower to answer probes and the churn last. Now the first search for a member with
   * a known address finds only that address (directQuery) until the member answers, for
   * directSearchDelayMs at most; a call not answered by then falls back to hyperdht's real search
   * (its second try), as before.
   */
  private directRoutes (dht: HyperDHT): void {
    const d = dht as unknown as { findPeer: (key: Buffer, opts?: { session?: unknown, nodes?: Array<{ host: string, port: number }> | null }) => unknown }
    const search = d.findPeer.bind(dht)
    const waitMs = this.opts.directSearchDelayMs
    // Only a connect's search is stood in for: it alone carries a session (lib/connect.js). The
    // announcer, which renews this node's own records, also searches with a list of nodes (its
    // closest) and reads the full query (closestReplies, finished()); were that list one member's
    // address, a stand-in would crash it. hyperdht searches by the hash of the key, so a call is
    // recognised by the one address it was given (callPeer's cache entry): a member's own DHT node.
    d.findPeer = (key, opts) => {
      const nodes = opts?.nodes
      if (waitMs <= 0 || opts?.session == null || nodes == null || nodes.length !== 1 || !this.memberAddress(nodes[0]!)) return search(key, opts)
      this.counters.directCalls++
      return directQuery(nodes[0]!, waitMs)
    }
  }

  private memberAddress (a: { host: string, port: number }): boolean {
    for (const m of this.addressOf.values()) if (m.port === a.port && m.host === a.host) return true
    return false
  }

  private firewall (remote: Buffer): boolean {
    const id = remote.toString('hex')
    if (this.allowed.has(id) || this.removed.has(id)) return false
    this.reject(id, 'not_allowed')
    return true
  }

  private reject (id: HostId, reason: string): void {
    this.counters.rejectedPeers++
    this.log.warn('refused a peer outside the cluster', { peer: short(id), reason })
    this.call(h => h.onRejected(id, reason))
  }

  private onConnection (conn: NoiseSecretStream): void {
    conn.on('error', (err: Error) => this.log.debug('connection error', { err }))
    if (this.stopping !== null) { conn.destroy(); return }
    const id = conn.remotePublicKey.toString('hex')
    if (!this.allowed.has(id) && this.removed.has(id)) {
      // A removed member: it proves the cluster's secret with its hello, then hears why it is out.
      conn.setTimeout(this.opts.timeoutMs)
      this.sendHello(conn)
      const parser = new FrameParser(this.opts.maxFrameBytes, this.opts.maxDiscardBytes, frame => {
        if (this.checkHello(id, conn, frame, true)) this.sendFarewell(conn, id)
      }, () => {})
      conn.on('data', (chunk: Uint8Array) => { if (!parser.push(chunk)) conn.destroy() })
      return
    }
    if (!this.allowed.has(id)) { // the firewall should have caught it; never trust one check
      this.reject(id, 'not_allowed')
      conn.destroy()
      return
    }
    conn.setKeepAlive(this.opts.keepAliveMs)
    conn.setTimeout(this.opts.timeoutMs)
    const peer = new PeerConnection(id, conn, this.opts.maxQueuedBytes)
    // Until the peer's hello is verified (state 'hello'), its frames go to checkHello and nothing
    // reaches the agent; then the connection is admitted ('open') or closed.
    let state: 'hello' | 'open' | 'closed' = 'hello'
    this.counters.connectionsOpened++
    const helloTimer = setTimeout(() => {
      if (state !== 'hello') return
      // Not a refusal: silence says nothing against the peer (a loaded host, or a connection that
      // Hyperswarm holds back on its side until it has closed a duplicate). The connection goes and
      // the member is called again (the close handler arms the redial), not shunned for
      // refusedRetryMs, which kept a pair of members apart for half a minute.
      this.counters.helloTimeouts++
      this.record(id, false, 'hello_timeout', [], `no hello within ${this.opts.helloTimeoutMs} ms: connection closed, calling again`)
      conn.destroy()
    }, this.opts.helloTimeoutMs)
    helloTimer.unref()
    this.sendHello(conn)
    const parser = new FrameParser(
      this.opts.maxFrameBytes,
      this.opts.maxDiscardBytes,
      frame => {
        if (state === 'open') { peer.lastUsed = Date.now(); peer.traffic.streamIn++; peer.traffic.lastStreamInAt = peer.lastUsed; this.deliver(id, frame); return }
        if (state === 'closed') return
        clearTimeout(helloTimer)
        if (!this.checkHello(id, conn, frame)) { state = 'closed'; return }
        state = 'open'
        this.admit(peer)
      },
      len => {
        this.counters.oversizedFramesSkipped++
        this.log.warn('skipped an oversized frame', { peer: short(id), bytes: len, maxFrameBytes: this.opts.maxFrameBytes })
      }
    )
    conn.on('data', (chunk: Uint8Array) => {
      if (state === 'closed' || (state === 'open' && this.peers.get(id) !== peer)) return // refused, replaced or stopping
      if (!parser.push(chunk)) {
        if (conn.destroying) return
        this.counters.badLengthDisconnects++
        this.log.warn('peer sent a broken frame length: disconnecting', { peer: short(id) })
        conn.destroy()
      }
    })
    // Datagrams (sendDatagram): one whole frame each, authenticated and decrypted by the stream.
    conn.on('message', (m: Uint8Array) => {
      if (state !== 'open' || this.peers.get(id) !== peer || m.byteLength === 0 || m.byteLength > this.opts.maxFrameBytes) return
      this.counters.datagramsReceived++
      peer.lastUsed = Date.now()
      peer.traffic.datagramsIn++
      peer.traffic.lastDatagramInAt = peer.lastUsed
      this.deliver(id, Uint8Array.prototype.slice.call(m))
    })
    conn.on('close', () => {
      clearTimeout(helloTimer)
      if (state === 'open') this.onClose(peer)
      else {
        // Closed before its hello was through: Hyperswarm's duplicate resolution closes one of
        // two connections opened at once from both ends, and under load both may go. Call the
        // member again unless another connection to it is open.
        this.counters.connectionsClosed++
        if (state === 'hello' && !this.peers.has(id)) this.armRedial()
      }
      state = 'closed'
    })
  }

  /** Writes our hello: the proof needs the handshake hash, which a stream may get only once open. */
  private sendHello (conn: NoiseSecretStream): void {
    const send = (): void => {
      const hash = conn.handshakeHash
      if (hash === null || conn.destroying || conn.destroyed) return
      const frame = encodeHello({
        from: this.self,
        proof: helloProof(this.proofKey, hash, Buffer.from(this.init.keyPair.publicKey)),
        settings: this.settings.map(s => ({ field: s.field, digest: s.digest }))
      })
      const buf = Buffer.allocUnsafe(FRAME_HEADER_BYTES + frame.byteLength)
      buf.writeUInt32BE(frame.byteLength, 0)
      buf.set(frame, FRAME_HEADER_BYTES)
      try { conn.write(buf) } catch { /* closed: its close event cleans up */ }
    }
    if (conn.handshakeHash !== null) send()
    else conn.opened.then(ok => { if (ok) send() }, () => {})
  }

  /**
   * Checks a peer's first frame: a hello that proves our secret for this connection and whose
   * settings agree (a field we do not send is not compared). Returns false after closing the
   * connection; flags differing settings that do not refuse.
   */
  private checkHello (id: HostId, conn: NoiseSecretStream, frame: Uint8Array, proofOnly = false): boolean {
    const r = decodeHello(frame, id)
    if (!r.ok) {
      const reason: PeerCheckReason = r.reason === 'not_hello' ? 'no_hello' : 'bad_hello'
      this.refusePeer(id, conn, reason, [], reason === 'no_hello'
        ? `${r.detail} (an agent without the secret check, or not a Starling agent)`
        : `malformed hello: ${r.reason} (${r.detail})`)
      return false
    }
    const hash = conn.handshakeHash
    const expected = hash === null ? null : helloProof(this.proofKey, hash, conn.remotePublicKey)
    if (expected === null || !timingSafeEqual(expected, Buffer.from(r.hello.proof))) {
      this.refusePeer(id, conn, 'secret_mismatch', ['cluster.secret'], 'it does not prove our cluster secret: its cluster.secret differs')
      return false
    }
    if (proofOnly) return true
    const theirs = new Map(r.hello.settings.map(s => [s.field, s.digest]))
    const differ = this.settings.filter(s => {
      const d = theirs.get(s.field)
      return d !== undefined && !Buffer.from(d).equals(Buffer.from(s.digest))
    })
    const refusing = differ.filter(s => s.refuse).map(s => s.field)
    const fields = differ.map(s => s.field)
    if (refusing.length > 0) {
      this.refusePeer(id, conn, 'settings_mismatch', fields, `${refusing.join(', ')} must be the same on every member and ${refusing.length === 1 ? 'differs' : 'differ'}${fields.length > refusing.length ? ` (also differing: ${fields.filter(f => !refusing.includes(f)).join(', ')})` : ''}`)
      return false
    }
    this.refusedUntil.delete(id)
    if (fields.length === 0) {
      if (this.checks.delete(id)) this.log.info('peer settings now agree with ours', { peer: short(id) })
      return true
    }
    this.record(id, false, 'settings_differ', fields, `connected, but ${fields.join(', ')} ${fields.length === 1 ? 'differs' : 'differ'} from ours (flagged, not refused)`)
    return true
  }

  /** Closes a member's connection at its hello, records why, and stops calling it for a while. */
  private refusePeer (id: HostId, conn: NoiseSecretStream, reason: PeerCheckReason, fields: string[], detail: string): void {
    this.counters.rejectedPeers++
    this.counters.helloRefusals++
    this.record(id, true, reason, fields, detail)
    this.refusedUntil.set(id, Date.now() + this.opts.refusedRetryMs)
    try { this.swarm?.leavePeer(Buffer.from(id, 'hex')) } catch { /* not joined */ }
    this.call(h => h.onRejected(id, reason))
    conn.destroy()
  }

  /** Keeps the outcome for peerChecks() and logs it at error: when it changes, else once a minute. */
  private record (id: HostId, refused: boolean, reason: PeerCheckReason, fields: string[], detail: string): void {
    const now = Date.now()
    const prev = this.checks.get(id)
    const same = prev !== undefined && prev.refused === refused && prev.reason === reason && prev.fields.join() === fields.join()
    const entry = same
      ? { ...prev, detail, times: prev.times + 1 }
      : { peer: id, refused, reason, fields, detail, since: now, times: 1, loggedAt: 0 }
    if (now - entry.loggedAt >= 60_000) {
      entry.loggedAt = now
      const who = `${this.names.get(id) ?? 'member'} (${short(id)})`
      this.log.error(refused ? `refused ${who} at its hello: ${detail}` : `${who}: ${detail}`, {
        peer: short(id), reason, fields, times: entry.times
      })
    } else {
      this.log.debug(refused ? 'refused cluster member again' : 'member settings still differ', { peer: short(id), reason, times: entry.times })
    }
    this.checks.set(id, entry)
  }

  /** A connection whose hello passed: it becomes the peer's connection. */
  private admit (peer: PeerConnection): void {
    const id = peer.id
    peer.openedAt = Date.now()
    if (this.stopping !== null) { peer.conn.destroy(); return }
    const existing = this.peers.get(id)
    this.peers.set(id, peer)
    this.flushHeld(peer)
    this.dialOver(id)
    if (this.active !== null && !this.active.has(id)) {
      // Connected on demand (or called by a member whose view holds us): do not rebuild it when it closes.
      try { this.swarm?.leavePeer(Buffer.from(id, 'hex')) } catch { /* not joined */ }
    }
    if (existing !== undefined) {
      this.counters.connectionsReplaced++
      this.log.debug('connection replaced', { peer: short(id) })
      existing.conn.destroy()
      return
    }
    this.lastPeerChangeAt = Date.now()
    this.log.info('peer connected', { peer: short(id), initiator: peer.conn.isInitiator, peers: this.peers.size })
    this.call(h => h.onPeerConnected(id))
    if (this.missingPeers() === 0) this.scheduleRefresh(this.nextRefreshDelay())
  }

  private onClose (peer: PeerConnection): void {
    this.counters.connectionsClosed++
    if (this.peers.get(peer.id) !== peer || this.stopping !== null) return
    this.peers.delete(peer.id)
    if (peer.idleClosed) {
      this.log.debug('idle connection closed', { peer: short(peer.id), peers: this.peers.size })
      this.call(h => h.onPeerDisconnected(peer.id))
      return
    }
    this.lastPeerChangeAt = Date.now()
    this.log.info('peer disconnected', { peer: short(peer.id), peers: this.peers.size })
    this.call(h => h.onPeerDisconnected(peer.id))
    if (this.wanted(peer.id)) { this.scheduleRefresh(this.fastDelay()); this.armRedial() }
  }

  private deliver (id: HostId, frame: Uint8Array): void {
    this.counters.framesReceived++
    this.counters.bytesReceived += frame.byteLength
    this.call(h => h.onFrame(id, frame))
  }

  /** Handlers are the runtime's; one that throws must not break a connection. */
  private call (f: (h: TransportHandlers) => void): void {
    const h = this.handlers
    if (h === null || this.stopping !== null) return
    try {
      f(h)
    } catch (err) {
      this.log.error('transport handler threw', { err })
    }
  }

  send (to: HostId, frame: Uint8Array): boolean {
    const c = this.counters
    if (this.swarm === null || this.stopping !== null) { c.sendDropped.notStarted++; return false }
    if (frame.byteLength === 0 || frame.byteLength > this.opts.maxFrameBytes) { c.sendDropped.oversized++; return false }
    const peer = this.peers.get(to)
    if (peer === undefined) {
      if (this.active === null || to === this.self || !this.allowed.has(to)) { c.sendDropped.noPeer++; return false }
      return this.hold(to, frame)
    }
    const r = peer.write(frame)
    if (r === 'ok') {
      c.framesSent++
      c.bytesSent += frame.byteLength
      return true
    }
    if (r === 'congested') c.sendDropped.congested++
    else c.sendDropped.noPeer++
    return false
  }

  /**
   * One datagram on the peer's UDX stream (secret-stream's trySend: secretbox with a counter
   * nonce, so it is authenticated and private; it may be lost, duplicated or reordered, and a
   * replay is not detected, which SWIM probes tolerate: acks match pending sequence numbers and
   * piggybacked gossip is ordered by incarnation). No ack packet comes back, unlike a stream write.
   */
  sendDatagram (to: HostId, frame: Uint8Array): boolean {
    if (this.swarm === null || this.stopping !== null) return false
    if (frame.byteLength === 0 || frame.byteLength > DATAGRAM_MAX_BYTES) return false
    const peer = this.peers.get(to)
    if (peer === undefined || peer.conn.destroying || peer.conn.destroyed || typeof peer.conn.trySend !== 'function') return false
    try { peer.conn.trySend(frame) } catch { return false }
    peer.lastUsed = Date.now()
    peer.traffic.datagramsOut++
    this.counters.framesSent++
    this.counters.datagramsSent++
    this.counters.bytesSent += frame.byteLength
    return true
  }

  get datagramMaxBytes (): number { return DATAGRAM_MAX_BYTES }

  // -- discovery refresh ------------------------------------------------------------------------

  /** Wanted members with no connection, not counting those refused a moment ago (they are not called). */
  private missingPeers (): number {
    let n = 0
    const now = Date.now()
    for (const k of this.active ?? this.allowed) if (k !== this.self && !this.peers.has(k) && (this.refusedUntil.get(k) ?? 0) <= now) n++
    for (const k of this.pending.keys()) if (!this.peers.has(k) && !(this.active?.has(k) ?? true)) n++
    return n
  }

  private jitter (min: number, max: number): number {
    // Jitter only spreads refreshes apart; it is not part of any decision.
    return min + Math.random() * (max - min)
  }

  private fastDelay (): number {
    return this.jitter(this.opts.refreshFastMsMin, this.opts.refreshFastMsMax)
  }

  /** The rare pace: Hyperswarm's own interval, jittered. */
  private idleDelay (): number {
    return this.jitter(this.opts.refreshIdleMs * 0.75, this.opts.refreshIdleMs * 1.25)
  }

  private nextRefreshDelay (): number {
    if (this.missingPeers() === 0) return this.idleDelay()
    if (Date.now() - this.lastPeerChangeAt < this.opts.refreshFastWindowMs) return this.fastDelay()
    return this.jitter(this.opts.refreshMissingMs * 0.75, this.opts.refreshMissingMs * 1.25)
  }

  private scheduleRefresh (delayMs: number): void {
    if (this.stopping !== null || this.discovery === null) return
    // On demand, members are called by key (armRedial) and nobody looks the topic up: renewing its
    // announcement is all a refresh would do, and that is a DHT query and signed announces every
    // 0.5-1 s while any view member is missing. It keeps the idle pace, whatever the caller asked.
    if (this.active !== null) delayMs = Math.max(delayMs, this.idleDelay())
    if (this.refreshTimer !== null) clearTimeout(this.refreshTimer)
    this.refreshTimer = null
    if (this.refreshing) return // the refresh in flight schedules the next one when it ends
    this.refreshTimer = setTimeout(() => { this.refreshTimer = null; void this.refresh() }, delayMs)
    this.refreshTimer.unref()
  }

  /**
   * While a wanted member has no connection, call it again every fastDelay (refreshMissingMs once
   * the fast window is over), whether or not a discovery refresh is under way: a refresh waits for
   * its DHT announce and lookup, which take seconds under load, and the members it would call
   * meanwhile stayed unconnected (a loaded three-agent run kept one pair apart for over 6 s while
   * each heard of the other only through the third; HA needs direct round trips).
   */
  private armRedial (): void {
    if (this.redialTimer !== null || this.stopping !== null || this.swarm === null) return
    if (this.missingPeers() === 0) return
    // With a member missing, the refresh's own schedule: fast inside the window, then refreshMissingMs.
    const delay = this.nextRefreshDelay()
    this.redialTimer = setTimeout(() => {
      this.redialTimer = null
      this.counters.redials++
      this.joinMissingPeers()
      this.armRedial()
    }, delay)
    this.redialTimer.unref()
  }

  private async refresh (): Promise<void> {
    const discovery = this.discovery
    if (discovery === null || this.stopping !== null) return
    this.refreshing = true
    this.counters.discoveryRefreshes++
    this.joinMissingPeers()
    try {
      await discovery.refresh({ client: this.active === null, server: true })
    } catch (err) {
      this.log.debug('discovery refresh failed', { err })
    } finally {
      this.refreshing = false
    }
    this.scheduleRefresh(this.nextRefreshDelay())
  }

  // -- stop -------------------------------------------------------------------------------------

  stop (): Promise<void> {
    if (this.stopping === null) this.stopping = this.doStop()
    return this.stopping
  }

  private async doStop (): Promise<void> {
    if (this.refreshTimer !== null) clearTimeout(this.refreshTimer)
    this.refreshTimer = null
    if (this.redialTimer !== null) clearTimeout(this.redialTimer)
    this.redialTimer = null
    if (this.sweepTimer !== null) clearInterval(this.sweepTimer)
    this.sweepTimer = null
    this.pending.clear()
    this.dialing.clear()
    if (this.starting !== null) await this.starting.catch(() => {})
    const swarm = this.swarm
    for (const p of this.peers.values()) p.conn.destroy()
    this.peers.clear()
    if (swarm === null) return
    // Unannounce politely, but do not wait on peers that are gone.
    let timer: NodeJS.Timeout | null = null
    const graceful = swarm.destroy().then(() => true, () => false)
    const timedOut = new Promise<boolean>(resolve => { timer = setTimeout(() => resolve(false), this.opts.stopGraceMs) })
    const clean = await Promise.race([graceful, timedOut])
    if (timer !== null) clearTimeout(timer)
    if (!clean) await swarm.destroy({ force: true }).catch(() => {})
    if (!swarm.dht.destroyed) await swarm.dht.destroy({ force: true }).catch(() => {})
    this.log.info('mesh transport stopped', { self: short(this.self), clean })
  }
}

/** Binds and closes a UDP socket on host:port: rejects with EADDRINUSE, EADDRNOTAVAIL, ... */
function probeUdpBind (host: string, port: number): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const sock = dgram.createSocket('udp4')
    sock.once('error', err => { sock.close(); reject(err) })
    sock.bind({ port, address: host, exclusive: true }, () => sock.close(() => resolve()))
  })
}

/**
 * Resolves once the DHT node's UDP socket is bound (not when bootstrapping ends: that takes 6-12 s
 * while no seed answers); rejects when binding fails (EADDRINUSE, an address not on this host).
 */
function listening (dht: HyperDHT): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const done = (): void => { dht.removeListener('listening', done); resolve() }
    dht.once('listening', done)
    dht.ready().then(done, (err: unknown) => { dht.removeListener('listening', done); reject(err) })
  })
}

/**
 * A Transport over Hyperswarm (libp2p-style factory): `hyperswarmTransport(init)({ logger })`.
 * Throws at construction on an invalid init (a bad key or seed address); never afterwards.
 */
export function hyperswarmTransport (init: HyperswarmTransportInit): (components: HyperswarmTransportComponents) => HyperswarmTransport {
  return components => new HyperswarmMeshTransport(init, components)
}

/** How often a member call's stand-in search lets hyperdht look whether the call got through (directRoutes). */
const DIRECT_POLL_MS = 20

/**
 * The stand-in for a search of a member called at its known address: it finds only that address,
 * every DIRECT_POLL_MS, for `ms` at most or until destroyed. hyperdht's connect skips a result
 * that is the address it already called (isRelayAddress), and on each result looks whether that
 * call got its answer, which ends the search: the call goes on as soon as the member answered,
 * as with a real search. What hyperdht uses of a query: iteration and destroy().
 */
function directQuery (node: { host: string, port: number }, ms: number): { destroy: () => void, [Symbol.asyncIterator]: () => AsyncGenerator<{ from: { host: string, port: number } }> } {
  let destroyed = false
  return {
    destroy: () => { destroyed = true },
    async * [Symbol.asyncIterator] () {
      const until = Date.now() + ms
      while (!destroyed && Date.now() < until) {
        await new Promise(resolve => setTimeout(resolve, DIRECT_POLL_MS).unref())
        if (!destroyed) yield { from: { host: node.host, port: node.port } }
      }
    }
  }
}
