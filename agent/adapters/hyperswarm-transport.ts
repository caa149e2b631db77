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
 *   (about 10 min), so discovery is refreshed every 0.5-1 s (jittered) while an allowed peer is
 *   missing, more slowly when that lasts, and rarely once the mesh is complete.
 * - Keep-alive 1 s and timeout 3 s on every connection: a peer killed with kill -9 is noticed in
 *   about 3 s instead of 14-18 s.
 * - Framing: the Noise stream carries a 4-byte big-endian length, then the frame. A length above
 *   maxFrameBytes (up to maxDiscardBytes) is skipped without buffering and counted, and the
 *   connection survives; a length of 0 or above maxDiscardBytes is a broken peer: disconnected
 *   and counted.
 * - One connection per peer: Hyperswarm deduplicates; when it replaces a connection, frames go
 *   to the newest and no disconnect/connect pair is reported if the new one arrives first.
 */
import { createHash } from 'node:crypto'
import dgram from 'node:dgram'
import Hyperswarm, { type NoiseSecretStream, type PeerDiscoverySession } from 'hyperswarm'
import HyperDHT from 'hyperdht'
import type { HostId } from '../core/types.js'
import type { Logger } from '../ports/logger.js'
import type { Transport, TransportHandlers } from '../ports/transport.js'
import { FRAME_HEADER_BYTES, MAX_FRAME_BYTES_DEFAULT } from './wire-codec.js'

/** Prefix hashed before the cluster secret, so the topic is useless for anything else. */
export const TOPIC_DOMAIN = 'starling/mesh/v1/topic\n'

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
  /** Largest frame sent or delivered, bytes (without the length prefix). @default 65536 */
  maxFrameBytes?: number
  /** Frames longer than maxFrameBytes but at most this are skipped unbuffered; longer lengths disconnect the peer. @default 1048576 */
  maxDiscardBytes?: number
  /** Bytes a connection may hold unsent while it is congested; beyond this send() drops. @default 1048576 */
  maxQueuedBytes?: number
  /** Hyperswarm's peer limit. @default allowedKeys.length + 16 */
  maxPeers?: number
  /** Grace for unannouncing on stop before the swarm is torn down by force, ms. @default 2000 */
  stopGraceMs?: number
  /** A DHT to use instead of creating a bootstrapper (e.g. hyperdht/testnet); host, port and bootstrap are then ignored. stop() destroys it. */
  dht?: HyperDHT
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
  /** send() refusals, by cause. */
  sendDropped: { notStarted: number, noPeer: number, oversized: number, congested: number }
  /** Incoming frames over maxFrameBytes, skipped. */
  oversizedFramesSkipped: number
  /** Connections closed because the peer sent a length of 0 or beyond maxDiscardBytes. */
  badLengthDisconnects: number
  /** Keys refused by the firewall (or a connection of an unlisted key). */
  rejectedPeers: number
  connectionsOpened: number
  connectionsClosed: number
  /** Connections replaced by a newer one to the same peer. */
  connectionsReplaced: number
  discoveryRefreshes: number
}

export interface HyperswarmTransport extends Transport {
  stats (): HyperswarmTransportStats
  /** The DHT address this agent's node listens on, once started. */
  address (): { host: string, port: number } | null
}

export class TransportStoppedError extends Error {
  static override name = 'TransportStoppedError'
  readonly code = 'TRANSPORT_STOPPED'
  constructor (message = 'transport was stopped and cannot start again') { super(message); this.name = 'TransportStoppedError' }
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
    return 'ok'
  }
}

function freshStats (): HyperswarmTransportStats {
  return {
    framesSent: 0,
    bytesSent: 0,
    framesReceived: 0,
    bytesReceived: 0,
    datagramsSent: 0,
    datagramsReceived: 0,
    sendDropped: { notStarted: 0, noPeer: 0, oversized: 0, congested: 0 },
    oversizedFramesSkipped: 0,
    badLengthDisconnects: 0,
    rejectedPeers: 0,
    connectionsOpened: 0,
    connectionsClosed: 0,
    connectionsReplaced: 0,
    discoveryRefreshes: 0
  }
}

class HyperswarmMeshTransport implements HyperswarmTransport {
  readonly self: HostId
  private readonly log: Logger
  private readonly opts: Options
  private readonly allowed: ReadonlySet<string>
  private readonly topic: Buffer
  private readonly bootstrap: Array<{ host: string, port: number }>
  private readonly counters = freshStats()
  private readonly peers = new Map<HostId, PeerConnection>()
  private handlers: TransportHandlers | null = null
  private swarm: Hyperswarm | null = null
  private discovery: PeerDiscoverySession | null = null
  private starting: Promise<void> | null = null
  private stopping: Promise<void> | null = null
  private refreshTimer: NodeJS.Timeout | null = null
  private refreshing = false
  private lastPeerChangeAt = 0

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
    this.topic = clusterTopic(init.clusterSecret)
    const selfAddr = `${init.host}:${init.port}`
    this.bootstrap = (init.bootstrap ?? []).filter(s => s.trim() !== selfAddr).map(parseHostPort)
    this.opts = {
      keepAliveMs: init.keepAliveMs ?? 1000,
      timeoutMs: init.timeoutMs ?? 3000,
      refreshFastMsMin: init.refreshFastMsMin ?? 500,
      refreshFastMsMax: init.refreshFastMsMax ?? 1000,
      refreshFastWindowMs: init.refreshFastWindowMs ?? 30_000,
      refreshMissingMs: init.refreshMissingMs ?? 5000,
      refreshIdleMs: init.refreshIdleMs ?? 600_000,
      maxFrameBytes: init.maxFrameBytes ?? MAX_FRAME_BYTES_DEFAULT,
      maxDiscardBytes: init.maxDiscardBytes ?? 1024 * 1024,
      maxQueuedBytes: init.maxQueuedBytes ?? 1024 * 1024,
      stopGraceMs: init.stopGraceMs ?? 2000
    }
    const o = this.opts
    if (o.timeoutMs > 0 && o.keepAliveMs >= o.timeoutMs) throw new Error('hyperswarm transport: keepAliveMs must be < timeoutMs')
    if (o.refreshFastMsMin > o.refreshFastMsMax) throw new Error('hyperswarm transport: refreshFastMsMin must be <= refreshFastMsMax')
    if (o.maxDiscardBytes < o.maxFrameBytes) throw new Error('hyperswarm transport: maxDiscardBytes must be >= maxFrameBytes')
  }

  stats (): HyperswarmTransportStats {
    return { ...this.counters, sendDropped: { ...this.counters.sendDropped } }
  }

  address (): { host: string, port: number } | null {
    const dht = this.swarm?.dht
    if (dht === undefined || dht.destroyed) return null
    try { return dht.address() } catch { return null }
  }

  connected (): HostId[] {
    return [...this.peers.keys()]
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
    const swarm = new Hyperswarm({
      dht,
      keyPair: kp,
      firewall: remote => this.firewall(remote),
      // Hyperswarm counts connections against maxPeers with a factor of up to 4 when peers are
      // joined explicitly: leave room for topic-discovered members too.
      maxPeers: this.init.maxPeers ?? 4 * this.allowed.size + 16
    })
    this.swarm = swarm
    swarm.on('connection', (conn: NoiseSecretStream) => this.onConnection(conn))
    if (this.stopping !== null) return
    // Both ways of finding members. The topic is the design's discovery; joining every member's
    // key explicitly connects through the DHT node that serves it, which also works where topic
    // lookups cannot (two nodes: each holds only the other's announcement and never queries itself).
    this.discovery = swarm.join(this.topic, { server: true, client: true })
    this.joinMissingPeers()
    this.lastPeerChangeAt = Date.now()
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
    for (const k of this.allowed) {
      if (k === this.self || this.peers.has(k)) continue
      const key = Buffer.from(k, 'hex')
      try {
        swarm.leavePeer(key)
        swarm.joinPeer(key)
      } catch (err) {
        this.log.debug('joinPeer failed', { peer: short(k), err })
      }
    }
  }

  private firewall (remote: Buffer): boolean {
    const id = remote.toString('hex')
    if (this.allowed.has(id)) return false
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
    if (!this.allowed.has(id)) { // the firewall should have caught it; never trust one check
      this.reject(id, 'not_allowed')
      conn.destroy()
      return
    }
    conn.setKeepAlive(this.opts.keepAliveMs)
    conn.setTimeout(this.opts.timeoutMs)
    const peer = new PeerConnection(id, conn, this.opts.maxQueuedBytes)
    const parser = new FrameParser(
      this.opts.maxFrameBytes,
      this.opts.maxDiscardBytes,
      frame => this.deliver(id, frame),
      len => {
        this.counters.oversizedFramesSkipped++
        this.log.warn('skipped an oversized frame', { peer: short(id), bytes: len, maxFrameBytes: this.opts.maxFrameBytes })
      }
    )
    conn.on('data', (chunk: Uint8Array) => {
      if (this.peers.get(id) !== peer) return // replaced or stopping
      if (!parser.push(chunk)) {
        if (conn.destroying) return
        this.counters.badLengthDisconnects++
        this.log.warn('peer sent a broken frame length: disconnecting', { peer: short(id) })
        conn.destroy()
      }
    })
    // Datagrams (sendDatagram): one whole frame each, authenticated and decrypted by the stream.
    conn.on('message', (m: Uint8Array) => {
      if (this.peers.get(id) !== peer || m.byteLength === 0 || m.byteLength > this.opts.maxFrameBytes) return
      this.counters.datagramsReceived++
      this.deliver(id, Uint8Array.prototype.slice.call(m))
    })
    conn.on('close', () => this.onClose(peer))

    this.counters.connectionsOpened++
    const existing = this.peers.get(id)
    this.peers.set(id, peer)
    if (existing !== undefined) {
      this.counters.connectionsReplaced++
      this.log.debug('connection replaced', { peer: short(id) })
      existing.conn.destroy()
      return
    }
    this.lastPeerChangeAt = Date.now()
    this.log.info('peer connected', { peer: short(id), initiator: conn.isInitiator, peers: this.peers.size })
    this.call(h => h.onPeerConnected(id))
    if (this.missingPeers() === 0) this.scheduleRefresh(this.nextRefreshDelay())
  }

  private onClose (peer: PeerConnection): void {
    this.counters.connectionsClosed++
    if (this.peers.get(peer.id) !== peer || this.stopping !== null) return
    this.peers.delete(peer.id)
    this.lastPeerChangeAt = Date.now()
    this.log.info('peer disconnected', { peer: short(peer.id), peers: this.peers.size })
    this.call(h => h.onPeerDisconnected(peer.id))
    this.scheduleRefresh(this.fastDelay())
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
    if (peer === undefined) { c.sendDropped.noPeer++; return false }
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
    this.counters.framesSent++
    this.counters.datagramsSent++
    this.counters.bytesSent += frame.byteLength
    return true
  }

  get datagramMaxBytes (): number { return DATAGRAM_MAX_BYTES }

  // -- discovery refresh ------------------------------------------------------------------------

  private missingPeers (): number {
    let n = 0
    for (const k of this.allowed) if (k !== this.self && !this.peers.has(k)) n++
    return n
  }

  private jitter (min: number, max: number): number {
    // Jitter only spreads refreshes apart; it is not part of any decision.
    return min + Math.random() * (max - min)
  }

  private fastDelay (): number {
    return this.jitter(this.opts.refreshFastMsMin, this.opts.refreshFastMsMax)
  }

  private nextRefreshDelay (): number {
    if (this.missingPeers() === 0) return this.jitter(this.opts.refreshIdleMs * 0.75, this.opts.refreshIdleMs * 1.25)
    if (Date.now() - this.lastPeerChangeAt < this.opts.refreshFastWindowMs) return this.fastDelay()
    return this.jitter(this.opts.refreshMissingMs * 0.75, this.opts.refreshMissingMs * 1.25)
  }

  private scheduleRefresh (delayMs: number): void {
    if (this.stopping !== null || this.discovery === null) return
    if (this.refreshTimer !== null) clearTimeout(this.refreshTimer)
    this.refreshTimer = null
    if (this.refreshing) return // the refresh in flight schedules the next one when it ends
    this.refreshTimer = setTimeout(() => { this.refreshTimer = null; void this.refresh() }, delayMs)
    this.refreshTimer.unref()
  }

  private async refresh (): Promise<void> {
    const discovery = this.discovery
    if (discovery === null || this.stopping !== null) return
    this.refreshing = true
    this.counters.discoveryRefreshes++
    this.joinMissingPeers()
    try {
      await discovery.refresh({ client: true, server: true })
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
