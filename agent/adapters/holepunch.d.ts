/**
 * The parts of Holepunch's hyperswarm 4.x and hyperdht 6.x that Starling uses. The packages
 * ship no TypeScript types; these declarations follow their READMEs and sources.
 */

declare module 'hyperdht' {
  import type { EventEmitter } from 'node:events'

  export interface KeyPair { publicKey: Buffer, secretKey: Buffer }

  export interface HyperDHTOptions {
    /** "host:port" strings or { host, port } objects; [] = no bootstrap nodes at all. */
    bootstrap?: Array<string | { host: string, port: number }>
    port?: number
    host?: string
    ephemeral?: boolean
    firewalled?: boolean
    anyPort?: boolean
    keyPair?: KeyPair
    /** Keep-alive interval of connections the DHT opens, ms; false disables. @default 5000 */
    connectionKeepAlive?: number | false
  }

  export default class HyperDHT extends EventEmitter {
    constructor (opts?: HyperDHTOptions)
    /** A persistent DHT node on a fixed ip:port that others can bootstrap from. */
    static bootstrapper (port: number, host: string, opts?: HyperDHTOptions): HyperDHT
    static keyPair (seed?: Uint8Array): KeyPair
    static hash (data: Uint8Array): Buffer
    readonly destroyed: boolean
    readonly ephemeral: boolean
    readonly host: string | null
    readonly port: number
    ready (): Promise<void>
    destroy (opts?: { force?: boolean }): Promise<void>
    address (): { host: string, port: number }
  }
}

declare module 'hyperswarm' {
  import type { EventEmitter } from 'node:events'
  import type HyperDHT from 'hyperdht'
  import type { KeyPair } from 'hyperdht'

  /** A Noise secret stream (@hyperswarm/secret-stream): a streamx Duplex of messages. */
  export interface NoiseSecretStream extends EventEmitter {
    readonly remotePublicKey: Buffer
    readonly publicKey: Buffer
    readonly isInitiator: boolean
    /** Hash of the Noise handshake (32 bytes, the same at both ends), once the stream is open; null before. */
    readonly handshakeHash: Buffer | null
    /** Resolves true once the handshake is done and the stream open, false if it closed first. */
    readonly opened: Promise<boolean>
    readonly destroyed: boolean
    readonly destroying: boolean
    rawBytesRead: number
    rawBytesWritten: number
    write (data: Uint8Array): boolean
    end (): void
    destroy (err?: Error): void
    /** Send an empty message every ms while idle (filtered by the receiver). */
    setKeepAlive (ms: number): void
    /** Destroy the stream when nothing arrives for ms. */
    setTimeout (ms: number): void
    sendKeepAlive (): void
    /** Unreliable, unordered encrypted datagram over the same UDX stream (dropped when it does not fit a packet). */
    trySend (data: Uint8Array): void
  }

  export interface PeerInfo {
    publicKey: Buffer
    topics: Buffer[]
    client: boolean
    banned: boolean
    ban (banned: boolean): void
  }

  export interface PeerDiscoverySession {
    refresh (opts?: { client?: boolean, server?: boolean }): Promise<void>
    flushed (): Promise<boolean>
    destroy (): Promise<void>
  }

  export interface HyperswarmOptions {
    keyPair?: KeyPair
    dht?: HyperDHT
    /** Return true to REJECT the remote key. */
    firewall?: (remotePublicKey: Buffer, payload: unknown) => boolean
    maxPeers?: number
    maxParallel?: number
  }

  export default class Hyperswarm extends EventEmitter {
    constructor (opts?: HyperswarmOptions)
    readonly keyPair: KeyPair
    readonly dht: HyperDHT
    readonly connections: Set<NoiseSecretStream>
    readonly destroyed: boolean
    join (topic: Uint8Array, opts?: { server?: boolean, client?: boolean }): PeerDiscoverySession
    joinPeer (publicKey: Uint8Array): void
    leavePeer (publicKey: Uint8Array): void
    listen (): Promise<void>
    flush (): Promise<boolean>
    destroy (opts?: { force?: boolean }): Promise<void>
    on (event: 'connection', listener: (conn: NoiseSecretStream, info: PeerInfo) => void): this
    on (event: 'ban', listener: (info: PeerInfo, err: Error) => void): this
    on (event: 'update', listener: () => void): this
    on (event: string, listener: (...args: any[]) => void): this
  }
}
