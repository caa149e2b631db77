/**
 * Wire codec: typed protocol messages (agent/core/messages.ts) to and from protobuf frames
 * (proto/mesh/v1/*.proto), with protobufjs reflection built once when this module is imported
 * from the descriptor generated from those files (wire-schema.ts; parsing the .proto text and
 * loading protobufjs's parser cost each agent about 10-15 ms of CPU at start-up).
 *
 * Decoding is the trust boundary. `decodeFrame` never throws: every frame that is too big,
 * malformed, of a protocol version we do not share, missing a required field or carrying an
 * absurd value comes back as `{ ok: false, reason }` and is counted by reason (STYLE 1.7, 1.12).
 * Unknown fields are skipped; a gossip item of an unknown kind is dropped and counted while the
 * rest of the frame is kept; a body of an unknown kind rejects the frame.
 *
 * Encoding is for our own messages: a value the wire cannot carry (NaN, a negative count, an
 * empty host id) is a programmer error and throws WireEncodeError.
 *
 * Fixed point: utilisations travel in basis points (1/10000), capacities and sizes in whole
 * units (see proto/mesh/v1/load.proto). A decoded utilisation is the sent one rounded to 1e-4.
 */
import protobuf from 'protobufjs/light.js'
import { WIRE_SCHEMA } from './wire-schema.js'
import {
  FRAME_BYTES_MAX_DEFAULT, PROTOCOL_MAX, PROTOCOL_MIN, type Body, type ClaimRef, type Envelope, type Gossip, type HaClaim,
  type HaMaintenance, type HaMode, type HostCapacity, type HostId, type HostMemoryReport, type LoadReport,
  type MemberRecord, type VmRunState, type VmSummary, type Ballot, type ConfigEntry, type ConfigMessage
} from '../core/index.js'

// ---------------------------------------------------------------------------------------------
// Limits and options

/** Bytes of the length prefix the stream transport puts before each frame (uint32 big-endian). */
export const FRAME_HEADER_BYTES = 4
/** Utilisations above this (a fraction; 10.0 = 1000 %) are absurd: encode clamps, decode rejects. */
export const UTIL_MAX = 10
/** Fixed-point scale of utilisations on the wire: basis points. */
export const UTIL_SCALE = 10_000

export interface WireLimits {
  /** Largest accepted frame, bytes. @default FRAME_BYTES_MAX_DEFAULT (agent/core/config.ts, 256 KiB) */
  maxFrameBytes: number
  /** Gossip items per frame. @default 256 */
  maxGossipItems: number
  /** Member records in one push-pull. @default 4096 */
  maxMembers: number
  /** Load reports in one push-pull, and digests in one report pull. @default 4096 */
  maxReports: number
  /** VMs in one load report. @default 1024 */
  maxVmsPerReport: number
  /** Forecast points in one load report. @default 64 */
  maxForecastPoints: number
  /** Longest string (host name, address, VM id), UTF-8 bytes. @default 255 */
  maxStringBytes: number
}

export const DEFAULT_WIRE_LIMITS: Readonly<WireLimits> = Object.freeze({
  maxFrameBytes: FRAME_BYTES_MAX_DEFAULT,
  maxGossipItems: 256,
  maxMembers: 4096,
  maxReports: 4096,
  maxVmsPerReport: 1024,
  maxForecastPoints: 64,
  maxStringBytes: 255
})

export interface DecodeOptions extends Partial<WireLimits> {
  /**
   * The authenticated sender (the connection's key). When given, a frame whose `from` differs
   * is rejected with `sender_mismatch`.
   */
  expectFrom?: HostId
}

/** Why a frame was rejected. Stable codes: branch and count on these, never on `detail`. */
export type RejectReason =
  /** Zero-length frame. */
  | 'empty'
  /** Longer than maxFrameBytes. */
  | 'oversized'
  /** Not valid protobuf (bad varint, truncated field, wrong wire type, two bodies). */
  | 'malformed'
  /** Protocol fields absent or inconsistent (min > max, cur outside [min, max]). */
  | 'protocol_invalid'
  /** The sender's [min, max] does not overlap ours. */
  | 'protocol_mismatch'
  /** No body at all. */
  | 'missing_body'
  /** A body of a kind this build does not know (a newer peer's). */
  | 'unknown_body'
  /** A required field is absent (sender id, probe target, member state, ...). */
  | 'missing_field'
  /** A value out of any sane range (unsafe integer, utilisation > UTIL_MAX, bad key length). */
  | 'absurd_value'
  /** More items than a limit allows (gossip, members, reports, VMs, forecast points). */
  | 'too_many_items'
  /** `from` is not the authenticated sender. */
  | 'sender_mismatch'

export type DecodeResult =
  | { ok: true, envelope: Envelope, /** Gossip items of unknown kinds that were dropped. */ droppedGossip: number }
  | { ok: false, reason: RejectReason, detail: string }

export const REJECT_REASONS: readonly RejectReason[] = Object.freeze([
  'empty', 'oversized', 'malformed', 'protocol_invalid', 'protocol_mismatch', 'missing_body',
  'unknown_body', 'missing_field', 'absurd_value', 'too_many_items', 'sender_mismatch'
] as const)

/** Decoder counters since start (or the last reset); exported as agent_wire_* metrics. */
export interface DecodeCounters {
  /** Frames decoded and accepted. */
  accepted: number
  /** Frames rejected, by reason. */
  rejected: Record<RejectReason, number>
  /** Gossip items of unknown kinds dropped from otherwise accepted frames. */
  unknownGossipDropped: number
}

const counters: DecodeCounters = freshCounters()

function freshCounters (): DecodeCounters {
  const rejected = Object.fromEntries(REJECT_REASONS.map(r => [r, 0])) as Record<RejectReason, number>
  return { accepted: 0, rejected, unknownGossipDropped: 0 }
}

/** A copy of the decoder counters. */
export function decodeCounters (): DecodeCounters {
  return { accepted: counters.accepted, rejected: { ...counters.rejected }, unknownGossipDropped: counters.unknownGossipDropped }
}

/** Zero the decoder counters (tests). */
export function resetDecodeCounters (): void {
  const f = freshCounters()
  counters.accepted = 0
  counters.rejected = f.rejected
  counters.unknownGossipDropped = 0
}

export class WireEncodeError extends Error {
  static override name = 'WireEncodeError'
  readonly code = 'WIRE_ENCODE_INVALID'
  constructor (message: string) { super(message); this.name = 'WireEncodeError' }
}

// ---------------------------------------------------------------------------------------------
// Schema

function loadSchema (): protobuf.Root {
  const root = protobuf.Root.fromJSON(WIRE_SCHEMA)
  root.resolveAll()
  return root
}

const schema = loadSchema()
const EnvelopeType = schema.lookupType('starling.mesh.v1.Envelope')

/** ConfigMsg.Op values 1..8, in order (config.proto). */
const CONFIG_OPS = ['prepare', 'promise', 'accept', 'accepted', 'nack', 'commit', 'have', 'fetch'] as const
/** The largest configuration document a frame carries (config.proto, ConfigEntry.doc). */
export const CONFIG_DOC_BYTES = 64 * 1024

/** ReplicaMsg.Op values 1..5, in order (replica.proto). */
const REPLICA_OPS = ['request', 'started', 'refused', 'retire', 'retired'] as const

/** Envelope field numbers of the body oneof that this build knows, and the range kept for bodies. */
const BODY_FIELDS: ReadonlyMap<number, string> = new Map(
  (EnvelopeType.oneofs['body']?.fieldsArray ?? []).map(f => [f.id, f.name])
)
const BODY_RANGE_MIN = 8
const BODY_RANGE_MAX = 63

const MEMBER_STATES = ['alive', 'suspect', 'dead', 'left'] as const
const VM_STATES: readonly VmRunState[] = ['running', 'paused', 'stopped', 'migrating']

// ---------------------------------------------------------------------------------------------
// Encode

/** Plain object shaped like the protobufjs message; encode() accepts these directly. */
type Pb = Record<string, unknown>

const HEX_KEY = /^[0-9a-f]{64}$/

function encStr (s: string, where: string, required: boolean): string {
  if (typeof s !== 'string') throw new WireEncodeError(`${where}: not a string`)
  if (required && s.length === 0) throw new WireEncodeError(`${where}: empty`)
  if (Buffer.byteLength(s, 'utf8') > DEFAULT_WIRE_LIMITS.maxStringBytes) {
    throw new WireEncodeError(`${where}: longer than ${DEFAULT_WIRE_LIMITS.maxStringBytes} bytes`)
  }
  return s
}

function encHost (id: HostId, where: string): Pb {
  return HEX_KEY.test(id) ? { key: Buffer.from(id, 'hex') } : { name: encStr(id, where, true) }
}

/** Longer texts (a VM's driver spec, a reason): up to LONG_STRING_BYTES. */
export const LONG_STRING_BYTES = 8192

function encLong (s: string, where: string): string {
  if (typeof s !== 'string') throw new WireEncodeError(`${where}: not a string`)
  if (Buffer.byteLength(s, 'utf8') > LONG_STRING_BYTES) throw new WireEncodeError(`${where}: longer than ${LONG_STRING_BYTES} bytes`)
  return s
}

function encCount (v: number, where: string, max = 0xffff_ffff): number {
  if (!Number.isFinite(v) || v < 0) throw new WireEncodeError(`${where}: ${v} is not a non-negative number`)
  const r = Math.round(v)
  if (r > max) throw new WireEncodeError(`${where}: ${v} exceeds ${max}`)
  return r
}

function encU64 (v: number, where: string): number {
  return encCount(v, where, Number.MAX_SAFE_INTEGER)
}

function encUtil (v: number, where: string): number {
  if (!Number.isFinite(v) || v < 0) throw new WireEncodeError(`${where}: utilisation ${v} is not a non-negative number`)
  return Math.round(Math.min(v, UTIL_MAX) * UTIL_SCALE)
}

function encMember (m: MemberRecord, where: string): Pb {
  const state = MEMBER_STATES.indexOf(m.state)
  if (state < 0) throw new WireEncodeError(`${where}: unknown member state ${String(m.state)}`)
  return { id: encHost(m.id, where + '.id'), name: encStr(m.name, where + '.name', false), addr: encStr(m.addr, where + '.addr', false), incarnation: encU64(m.incarnation, where + '.incarnation'), state: state + 1 }
}

function encCapacity (c: HostCapacity, where: string): Pb {
  return {
    cpuCores: encCount(c.cpuCores, where + '.cpuCores'),
    cpuMipsPerCore: encCount(c.cpuMipsPerCore, where + '.cpuMipsPerCore'),
    memMib: encCount(c.memMiB, where + '.memMiB'),
    netMbps: encCount(c.netMbps, where + '.netMbps')
  }
}

function encVm (vm: VmSummary, where: string): Pb {
  const state = VM_STATES.indexOf(vm.state)
  if (state < 0) throw new WireEncodeError(`${where}: unknown VM state ${String(vm.state)}`)
  return {
    id: encStr(vm.id, where + '.id', true),
    vcpus: encCount(vm.vcpus, where + '.vcpus'),
    memMib: encCount(vm.memMiB, where + '.memMiB'),
    cpuUtilBp: encUtil(vm.cpuUtil, where + '.cpuUtil'),
    memUsedMib: encCount(vm.memUsedMiB, where + '.memUsedMiB'),
    state: state + 1
  }
}

function encReport (r: LoadReport, where: string): Pb {
  return {
    host: encHost(r.host, where + '.host'),
    seq: encU64(r.seq, where + '.seq'),
    capacity: encCapacity(r.capacity, where + '.capacity'),
    cpuUtilBp: encUtil(r.cpuUtil, where + '.cpuUtil'),
    memUtilBp: encUtil(r.memUtil, where + '.memUtil'),
    netUtilBp: encUtil(r.netUtil, where + '.netUtil'),
    forecastCpuBp: r.forecastCpu.map((f, i) => encUtil(f, `${where}.forecastCpu[${i}]`)),
    vms: r.vms.map((vm, i) => encVm(vm, `${where}.vms[${i}]`)),
    ...(r.rulesHash !== undefined && r.rulesHash !== '' ? { rulesHash: encStr(r.rulesHash, where + '.rulesHash', false) } : {}),
    ...(r.memory !== undefined ? { memory: encHostMemory(r.memory, where + '.memory') } : {}),
    ...(r.cpuResolved === true ? { cpuResolved: true } : {})
  }
}

function encHostMemory (m: HostMemoryReport, where: string): Pb {
  return {
    committedMib: encCount(m.committedMiB, where + '.committedMiB'),
    balloonedMib: encCount(m.balloonedMiB, where + '.balloonedMiB'),
    reclaimableMib: encCount(m.reclaimableMiB, where + '.reclaimableMiB'),
    unmetMib: encCount(m.unmetMiB, where + '.unmetMiB'),
    pressureBp: encUtil(m.pressure, where + '.pressure'),
    ksmSavedMib: encCount(m.ksmSavedMiB, where + '.ksmSavedMiB'),
    ksmCpuBp: encUtil(m.ksmCpu, where + '.ksmCpu')
  }
}

function encGossip (g: Gossip, where: string): Pb {
  switch (g.type) {
    case 'alive': return { alive: encMember(g.member, where + '.member') }
    case 'suspect': return { suspect: { node: encHost(g.node, where + '.node'), incarnation: encU64(g.incarnation, where + '.incarnation'), from: encHost(g.from, where + '.from') } }
    case 'dead': return { dead: { node: encHost(g.node, where + '.node'), incarnation: encU64(g.incarnation, where + '.incarnation'), from: encHost(g.from, where + '.from') } }
    case 'left': return { left: { node: encHost(g.node, where + '.node'), incarnation: encU64(g.incarnation, where + '.incarnation') } }
    case 'report': return { report: encReport(g.report, where + '.report') }
    default: {
      const unknown: never = g // a new Gossip kind must be added here and to membership.proto
      throw new WireEncodeError(`${where}: unknown gossip type ${String((unknown as { type?: unknown }).type)}`)
    }
  }
}

function encClaim (c: ClaimRef, where: string): Pb {
  return { host: encHost(c.host, where + '.host'), lamport: encU64(c.lamport, where + '.lamport') }
}

function encHaClaim (c: HaClaim, where: string): Pb {
  return { epoch: encU64(c.epoch, where + '.epoch'), host: encHost(c.host, where + '.host'), attempts: encCount(c.attempts, where + '.attempts') }
}

function encHaMode (m: HaMode, where: string): Pb {
  return { version: encU64(m.version, where + '.version'), armed: m.armed }
}

function encHaMaintenance (m: HaMaintenance, where: string): Pb {
  return { host: encHost(m.host, where + '.host'), version: encU64(m.version, where + '.version'), on: m.on }
}

function encBody (b: Body): [string, Pb] {
  switch (b.type) {
    case 'ping':
    case 'ack':
    case 'nack':
    case 'pingReq':
      return [b.type, { seq: encCount(b.seq, 'body.seq'), target: encHost(b.target, 'body.target') }]
    case 'pushPull':
      return ['pushPull', {
        reply: b.reply,
        members: b.members.map((m, i) => encMember(m, `body.members[${i}]`)),
        reports: b.reports.map((r, i) => encReport(r, `body.reports[${i}]`))
      }]
    case 'gossip':
      return ['gossipOnly', {}]
    case 'reportPull':
      return ['reportPull', {
        want: b.want.map((d, i) => ({ host: encHost(d.host, `body.want[${i}].host`), seq: encU64(d.seq, `body.want[${i}].seq`) }))
      }]
    case 'migrationIntent':
      return ['migrationIntent', {
        id: encStr(b.id, 'body.id', true), vm: encStr(b.vm, 'body.vm', true), vcpus: encCount(b.vcpus, 'body.vcpus'),
        memMib: encCount(b.memMiB, 'body.memMiB'), extraJson: encLong(b.extraJson, 'body.extraJson'),
        cpuDemandMips: encU64(b.cpuDemandMips, 'body.cpuDemandMips'), ...(b.withStorage === true ? { withStorage: true } : {})
      }]
    case 'reservationGranted': return ['reservationGranted', { id: encStr(b.id, 'body.id', true), leaseTicks: encCount(b.leaseTicks, 'body.leaseTicks') }]
    case 'reservationRefused': return ['reservationRefused', { id: encStr(b.id, 'body.id', true), reason: encLong(b.reason, 'body.reason') }]
    // The target's address and disk export may name image paths (a libvirt target with storage
    // lists where it created each disk): long texts.
    case 'incomingReady': {
      if (typeof b.uri === 'string' && b.uri.length === 0) throw new WireEncodeError('body.uri: empty')
      return ['incomingReady', { id: encStr(b.id, 'body.id', true), uri: encLong(b.uri, 'body.uri'), ...(b.nbd !== undefined && b.nbd !== '' ? { nbd: encLong(b.nbd, 'body.nbd') } : {}) }]
    }
    case 'migrationProgress':
      return ['migrationProgress', {
        id: encStr(b.id, 'body.id', true), status: encStr(b.status, 'body.status', false),
        transferredBytes: encU64(b.transferredBytes, 'body.transferredBytes'), remainingBytes: encU64(b.remainingBytes, 'body.remainingBytes')
      }]
    case 'transferCompleted': return ['transferCompleted', { id: encStr(b.id, 'body.id', true) }]
    case 'migrationCommitted': return ['migrationCommitted', { id: encStr(b.id, 'body.id', true) }]
    case 'migrationAborted': return ['migrationAborted', { id: encStr(b.id, 'body.id', true), reason: encLong(b.reason, 'body.reason'), ...(b.mayHaveRun === true ? { mayHaveRun: true } : {}) }]
    case 'migrationStatusQuery': return ['migrationStatusQuery', { id: encStr(b.id, 'body.id', true) }]
    case 'migrationStatusAnswer': return ['migrationStatusAnswer', { id: encStr(b.id, 'body.id', true), state: encStr(b.state, 'body.state', true) }]
    case 'moveRequested': return ['moveRequested', { vm: encStr(b.vm, 'body.vm', false), to: encStr(b.to, 'body.to', false), drain: b.drain, ...(b.withStorage === true ? { withStorage: true } : {}) }]
    case 'vipClaim': return ['vipClaim', { vip: encStr(b.vip, 'body.vip', true), claim: encClaim(b.claim, 'body.claim'), phase: b.phase === 'request' ? 1 : 2, renew: encU64(b.renew, 'body.renew') }]
    case 'vipGrant': return ['vipGrant', { vip: encStr(b.vip, 'body.vip', true), claim: encClaim(b.claim, 'body.claim'), from: encHost(b.from, 'body.from'), renew: encU64(b.renew, 'body.renew'), quiet: encU64(b.quiet, 'body.quiet') }]
    case 'vipRelease': return ['vipRelease', { vip: encStr(b.vip, 'body.vip', true), claim: encClaim(b.claim, 'body.claim'), ...(b.to !== null ? { to: encHost(b.to, 'body.to') } : {}) }]
    case 'vipStanding': return ['vipStanding', { vip: encStr(b.vip, 'body.vip', true), standing: encClaim(b.standing, 'body.standing'), from: encHost(b.from, 'body.from') }]
    case 'vipMoveRequested': return ['vipMoveRequested', { vip: encStr(b.vip, 'body.vip', true), to: encHost(b.to, 'body.to') }]
    case 'haBeat':
      return ['haBeat', {
        life: encU64(b.life, 'body.life'), sent: encU64(b.sent, 'body.sent'),
        ...(b.echo !== null ? { echo: { life: encU64(b.echo.life, 'body.echo.life'), sent: encU64(b.echo.sent, 'body.echo.sent') } } : {}),
        mode: encHaMode(b.mode, 'body.mode'),
        maintenance: b.maintenance.map((m, i) => encHaMaintenance(m, `body.maintenance[${i}]`)),
        ...(b.fenced ? { fenced: true } : {}),
        confirmed: b.confirmed.map((c, i) => ({ host: encHost(c.host, `body.confirmed[${i}].host`), life: encU64(c.life, `body.confirmed[${i}].life`) }))
      }]
    case 'haClaim': return ['haClaim', { vm: encStr(b.vm, 'body.vm', true), claim: encHaClaim(b.claim, 'body.claim'), phase: b.phase === 'request' ? 1 : b.phase === 'held' ? 2 : 3, ...(b.resumes !== undefined ? { resumes: encHaClaim(b.resumes, 'body.resumes') } : {}), ...(b.homeSettled === true ? { homeSettled: true } : {}) }]
    case 'haGrant': return ['haGrant', { vm: encStr(b.vm, 'body.vm', true), claim: encHaClaim(b.claim, 'body.claim') }]
    case 'haRefuse':
      return ['haRefuse', { vm: encStr(b.vm, 'body.vm', true), claim: encHaClaim(b.claim, 'body.claim'), ...(b.standing !== null ? { standing: encHaClaim(b.standing, 'body.standing') } : {}), released: b.released }]
    case 'haRelease': return ['haRelease', { vm: encStr(b.vm, 'body.vm', true), claim: encHaClaim(b.claim, 'body.claim'), granted: b.granted }]
    case 'haQuery': return ['haQuery', { vm: encStr(b.vm, 'body.vm', true), claim: encHaClaim(b.claim, 'body.claim') }]
    case 'replica':
      return ['replica', {
        op: REPLICA_OPS.indexOf(b.op) + 1, id: encStr(b.id, 'body.id', true), vm: encStr(b.vm, 'body.vm', true),
        cpuDemandMips: encU64(Math.round(b.cpuDemandMips), 'body.cpuDemandMips'), memMib: encCount(b.memMiB, 'body.memMiB'),
        vcpus: encCount(b.vcpus, 'body.vcpus'), reason: encLong(b.reason, 'body.reason')
      }]
    case 'cfg': return ['config', encConfigMsg(b)]
    default: {
      const unknown: never = b // a new Body kind must be added here and to envelope.proto
      throw new WireEncodeError(`unknown body type ${String((unknown as { type?: unknown }).type)}`)
    }
  }
}

/**
 * Encodes an envelope into one frame (without the transport's length prefix).
 * Throws WireEncodeError for values the wire cannot carry; never produces a frame that our own
 * decoder would reject for a value (size and count limits are the sender's to respect).
 */
export function encodeEnvelope (env: Envelope): Uint8Array {
  const [bodyField, body] = encBody(env.body)
  const msg: Pb = {
    protocolMin: encCount(env.protocolMin, 'protocolMin'),
    protocolMax: encCount(env.protocolMax, 'protocolMax'),
    protocolCur: encCount(env.protocolCur, 'protocolCur'),
    from: encHost(env.from, 'from'),
    incarnation: encU64(env.incarnation, 'incarnation'),
    lamport: encU64(env.lamport, 'lamport'),
    gossip: env.gossip.map((g, i) => encGossip(g, `gossip[${i}]`)),
    [bodyField]: body,
    ...(env.cfgVersion !== undefined && env.cfgVersion > 0 ? { configVersion: encU64(env.cfgVersion, 'cfgVersion') } : {})
  }
  return EnvelopeType.encode(msg).finish()
}

/** Encoded size of an envelope in bytes, without the transport's length prefix. */
export function envelopeByteSize (env: Envelope): number {
  return encodeEnvelope(env).byteLength
}

/** Bytes an envelope takes on a stream connection: its encoding plus the length prefix. */
export function frameByteSize (env: Envelope): number {
  return envelopeByteSize(env) + FRAME_HEADER_BYTES
}

// ---------------------------------------------------------------------------------------------
// Decode

class Reject {
  constructor (readonly reason: RejectReason, readonly detail: string) {}
}

/** protobufjs gives uint64 as a Long (the `long` package is installed) or a number. */
interface LongLike { low: number, high: number, toNumber: () => number }

function isObj (v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null
}

class Decoder {
  droppedGossip = 0
  constructor (readonly lim: WireLimits) {}

  u32 (v: unknown, where: string): number {
    if (v === undefined || v === null) return 0
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 0) throw new Reject('absurd_value', `${where}: ${String(v)}`)
    return v
  }

  u64 (v: unknown, where: string): number {
    if (v === undefined || v === null) return 0
    if (typeof v === 'number') {
      if (!Number.isSafeInteger(v) || v < 0) throw new Reject('absurd_value', `${where}: ${v}`)
      return v
    }
    if (isObj(v) && typeof v['toNumber'] === 'function') {
      const l = v as unknown as LongLike
      // Safe integers fit in 53 bits: the high word may use 21 bits.
      if ((l.high >>> 0) > 0x1f_ffff) throw new Reject('absurd_value', `${where}: beyond 2^53`)
      return l.toNumber()
    }
    throw new Reject('absurd_value', `${where}: not an integer`)
  }

  util (v: unknown, where: string): number {
    const bp = this.u32(v, where)
    if (bp > UTIL_MAX * UTIL_SCALE) throw new Reject('absurd_value', `${where}: ${bp} bp`)
    return bp / UTIL_SCALE
  }

  str (v: unknown, where: string, required: boolean): string {
    const s = typeof v === 'string' ? v : ''
    if (required && s.length === 0) throw new Reject('missing_field', where)
    if (Buffer.byteLength(s, 'utf8') > this.lim.maxStringBytes) {
      throw new Reject('absurd_value', `${where}: string longer than ${this.lim.maxStringBytes} bytes`)
    }
    return s
  }

  long (v: unknown, where: string): string {
    const s = typeof v === 'string' ? v : ''
    if (Buffer.byteLength(s, 'utf8') > LONG_STRING_BYTES) throw new Reject('absurd_value', `${where}: longer than ${LONG_STRING_BYTES} bytes`)
    return s
  }

  host (v: unknown, where: string): HostId {
    if (!isObj(v)) throw new Reject('missing_field', where)
    const key = v['key']
    if (key instanceof Uint8Array && key.byteLength > 0) {
      if (key.byteLength !== 32) throw new Reject('absurd_value', `${where}: key of ${key.byteLength} bytes`)
      return Buffer.from(key.buffer, key.byteOffset, key.byteLength).toString('hex')
    }
    return this.str(v['name'], where, true)
  }

  count<T> (arr: unknown, max: number, where: string, each: (x: unknown, i: number) => T): T[] {
    if (arr === undefined || arr === null) return []
    if (!Array.isArray(arr)) throw new Reject('malformed', where)
    if (arr.length > max) throw new Reject('too_many_items', `${where}: ${arr.length} > ${max}`)
    return arr.map(each)
  }

  member (v: unknown, where: string): MemberRecord {
    if (!isObj(v)) throw new Reject('missing_field', where)
    const stateNo = this.u32(v['state'], where + '.state')
    if (stateNo === 0) throw new Reject('missing_field', where + '.state')
    const state = MEMBER_STATES[stateNo - 1]
    if (state === undefined) throw new Reject('absurd_value', `${where}.state: ${stateNo}`)
    return {
      id: this.host(v['id'], where + '.id'),
      name: this.str(v['name'], where + '.name', false),
      addr: this.str(v['addr'], where + '.addr', false),
      incarnation: this.u64(v['incarnation'], where + '.incarnation'),
      state
    }
  }

  capacity (v: unknown, where: string): HostCapacity {
    if (!isObj(v)) throw new Reject('missing_field', where)
    const c = {
      cpuCores: this.u32(v['cpuCores'], where + '.cpuCores'),
      cpuMipsPerCore: this.u32(v['cpuMipsPerCore'], where + '.cpuMipsPerCore'),
      memMiB: this.u32(v['memMib'], where + '.memMiB'),
      netMbps: this.u32(v['netMbps'], where + '.netMbps')
    }
    // A host with no CPU or memory would turn every ratio downstream into NaN or Infinity.
    if (c.cpuCores === 0 || c.cpuMipsPerCore === 0 || c.memMiB === 0) {
      throw new Reject('absurd_value', `${where}: zero cpuCores, cpuMipsPerCore or memMiB`)
    }
    return c
  }

  vm (v: unknown, where: string): VmSummary {
    if (!isObj(v)) throw new Reject('missing_field', where)
    const stateNo = this.u32(v['state'], where + '.state')
    if (stateNo === 0) throw new Reject('missing_field', where + '.state')
    const state = VM_STATES[stateNo - 1]
    if (state === undefined) throw new Reject('absurd_value', `${where}.state: ${stateNo}`)
    return {
      id: this.str(v['id'], where + '.id', true),
      vcpus: this.u32(v['vcpus'], where + '.vcpus'),
      memMiB: this.u32(v['memMib'], where + '.memMiB'),
      cpuUtil: this.util(v['cpuUtilBp'], where + '.cpuUtil'),
      memUsedMiB: this.u32(v['memUsedMib'], where + '.memUsedMiB'),
      state
    }
  }

  report (v: unknown, where: string): LoadReport {
    if (!isObj(v)) throw new Reject('missing_field', where)
    const rulesHash = this.str(v['rulesHash'], where + '.rulesHash', false)
    const r: LoadReport = {
      host: this.host(v['host'], where + '.host'),
      seq: this.u64(v['seq'], where + '.seq'),
      capacity: this.capacity(v['capacity'], where + '.capacity'),
      cpuUtil: this.util(v['cpuUtilBp'], where + '.cpuUtil'),
      memUtil: this.util(v['memUtilBp'], where + '.memUtil'),
      netUtil: this.util(v['netUtilBp'], where + '.netUtil'),
      forecastCpu: this.count(v['forecastCpuBp'], this.lim.maxForecastPoints, where + '.forecastCpu',
        (f, i) => this.util(f, `${where}.forecastCpu[${i}]`)),
      vms: this.count(v['vms'], this.lim.maxVmsPerReport, where + '.vms', (x, i) => this.vm(x, `${where}.vms[${i}]`))
    }
    if (rulesHash !== '') r.rulesHash = rulesHash
    if (v['memory'] !== undefined && v['memory'] !== null) r.memory = this.hostMemory(v['memory'], where + '.memory')
    if (v['cpuResolved'] === true) r.cpuResolved = true
    return r
  }

  hostMemory (v: unknown, where: string): HostMemoryReport {
    if (!isObj(v)) throw new Reject('malformed', where)
    return {
      committedMiB: this.u32(v['committedMib'], where + '.committedMiB'),
      balloonedMiB: this.u32(v['balloonedMib'], where + '.balloonedMiB'),
      reclaimableMiB: this.u32(v['reclaimableMib'], where + '.reclaimableMiB'),
      unmetMiB: this.u32(v['unmetMib'], where + '.unmetMiB'),
      pressure: this.util(v['pressureBp'], where + '.pressure'),
      ksmSavedMiB: this.u32(v['ksmSavedMib'], where + '.ksmSavedMiB'),
      ksmCpu: this.util(v['ksmCpuBp'], where + '.ksmCpu')
    }
  }

  /** One gossip item, or null for an item of an unknown kind (dropped and counted). */
  gossip (v: unknown, where: string): Gossip | null {
    if (!isObj(v)) throw new Reject('malformed', where)
    const g = v
    if (isObj(g['alive'])) return { type: 'alive', member: this.member(g['alive'], where + '.alive') }
    if (isObj(g['suspect'])) {
      const s = g['suspect']
      return { type: 'suspect', node: this.host(s['node'], where + '.node'), incarnation: this.u64(s['incarnation'], where + '.incarnation'), from: this.host(s['from'], where + '.from') }
    }
    if (isObj(g['dead'])) {
      const s = g['dead']
      return { type: 'dead', node: this.host(s['node'], where + '.node'), incarnation: this.u64(s['incarnation'], where + '.incarnation'), from: this.host(s['from'], where + '.from') }
    }
    if (isObj(g['left'])) {
      const s = g['left']
      return { type: 'left', node: this.host(s['node'], where + '.node'), incarnation: this.u64(s['incarnation'], where + '.incarnation') }
    }
    if (isObj(g['report'])) return { type: 'report', report: this.report(g['report'], where + '.report') }
    this.droppedGossip++
    return null
  }

  claim (v: unknown, where: string): ClaimRef {
    if (!isObj(v)) throw new Reject('missing_field', where)
    return { host: this.host(v['host'], where + '.host'), lamport: this.u64(v['lamport'], where + '.lamport') }
  }

  haClaim (v: unknown, where: string): HaClaim {
    if (!isObj(v)) throw new Reject('missing_field', where)
    return { epoch: this.u64(v['epoch'], where + '.epoch'), host: this.host(v['host'], where + '.host'), attempts: this.u32(v['attempts'], where + '.attempts') }
  }

  haMode (v: unknown, where: string): HaMode {
    if (!isObj(v)) throw new Reject('missing_field', where)
    return { version: this.u64(v['version'], where + '.version'), armed: v['armed'] === true }
  }

  haBeat (v: Record<string, unknown>): Body {
    const e = v['echo']
    return {
      type: 'haBeat',
      life: this.u64(v['life'], 'body.life'),
      sent: this.u64(v['sent'], 'body.sent'),
      echo: isObj(e) ? { life: this.u64(e['life'], 'body.echo.life'), sent: this.u64(e['sent'], 'body.echo.sent') } : null,
      mode: this.haMode(v['mode'], 'body.mode'),
      maintenance: this.count(v['maintenance'], this.lim.maxMembers, 'body.maintenance', (x, i) => {
        if (!isObj(x)) throw new Reject('malformed', `body.maintenance[${i}]`)
        return { host: this.host(x['host'], `body.maintenance[${i}].host`), version: this.u64(x['version'], `body.maintenance[${i}].version`), on: x['on'] === true }
      }),
      fenced: v['fenced'] === true,
      confirmed: v['confirmed'] === undefined ? [] : this.count(v['confirmed'], this.lim.maxMembers, 'body.confirmed', (x, i) => {
        if (!isObj(x)) throw new Reject('malformed', `body.confirmed[${i}]`)
        return { host: this.host(x['host'], `body.confirmed[${i}].host`), life: this.u64(x['life'], `body.confirmed[${i}].life`) }
      })
    }
  }

  probe<T extends 'ping' | 'ack' | 'nack' | 'pingReq'> (type: T, v: Record<string, unknown>): { type: T, seq: number, target: HostId } {
    return { type, seq: this.u32(v['seq'], 'body.seq'), target: this.host(v['target'], 'body.target') }
  }

  body (name: string, v: unknown): Body {
    if (!isObj(v)) throw new Reject('missing_body', name)
    switch (name) {
      case 'ping': return this.probe('ping', v)
      case 'ack': return this.probe('ack', v)
      case 'nack': return this.probe('nack', v)
      case 'pingReq': return this.probe('pingReq', v)
      case 'pushPull': return {
        type: 'pushPull',
        reply: v['reply'] === true,
        members: this.count(v['members'], this.lim.maxMembers, 'body.members', (m, i) => this.member(m, `body.members[${i}]`)),
        reports: this.count(v['reports'], this.lim.maxReports, 'body.reports', (r, i) => this.report(r, `body.reports[${i}]`))
      }
      case 'gossipOnly': return { type: 'gossip' }
      case 'reportPull': return {
        type: 'reportPull',
        want: this.count(v['want'], this.lim.maxReports, 'body.want', (x, i) => {
          if (!isObj(x)) throw new Reject('malformed', `body.want[${i}]`)
          return { host: this.host(x['host'], `body.want[${i}].host`), seq: this.u64(x['seq'], `body.want[${i}].seq`) }
        })
      }
      case 'migrationIntent': return {
        type: 'migrationIntent', id: this.str(v['id'], 'body.id', true), vm: this.str(v['vm'], 'body.vm', true),
        vcpus: this.u32(v['vcpus'], 'body.vcpus'), memMiB: this.u32(v['memMib'], 'body.memMiB'),
        extraJson: this.long(v['extraJson'], 'body.extraJson'), cpuDemandMips: this.u64(v['cpuDemandMips'], 'body.cpuDemandMips'),
        ...(v['withStorage'] === true ? { withStorage: true } : {})
      }
      case 'reservationGranted': return { type: 'reservationGranted', id: this.str(v['id'], 'body.id', true), leaseTicks: this.u32(v['leaseTicks'], 'body.leaseTicks') }
      case 'reservationRefused': return { type: 'reservationRefused', id: this.str(v['id'], 'body.id', true), reason: this.long(v['reason'], 'body.reason') }
      case 'incomingReady': {
        const nbd = typeof v['nbd'] === 'string' && v['nbd'] !== '' ? this.long(v['nbd'], 'body.nbd') : undefined
        const uri = this.long(v['uri'], 'body.uri')
        if (uri === '') throw new Reject('missing_field', 'body.uri')
        return { type: 'incomingReady', id: this.str(v['id'], 'body.id', true), uri, ...(nbd !== undefined ? { nbd } : {}) }
      }
      case 'migrationProgress': return {
        type: 'migrationProgress', id: this.str(v['id'], 'body.id', true), status: this.str(v['status'], 'body.status', false),
        transferredBytes: this.u64(v['transferredBytes'], 'body.transferredBytes'), remainingBytes: this.u64(v['remainingBytes'], 'body.remainingBytes')
      }
      case 'transferCompleted': return { type: 'transferCompleted', id: this.str(v['id'], 'body.id', true) }
      case 'migrationCommitted': return { type: 'migrationCommitted', id: this.str(v['id'], 'body.id', true) }
      case 'migrationAborted': return { type: 'migrationAborted', id: this.str(v['id'], 'body.id', true), reason: this.long(v['reason'], 'body.reason'), ...(v['mayHaveRun'] === true ? { mayHaveRun: true } : {}) }
      case 'migrationStatusQuery': return { type: 'migrationStatusQuery', id: this.str(v['id'], 'body.id', true) }
      case 'migrationStatusAnswer': return { type: 'migrationStatusAnswer', id: this.str(v['id'], 'body.id', true), state: this.str(v['state'], 'body.state', true) }
      case 'moveRequested': return { type: 'moveRequested', vm: this.str(v['vm'], 'body.vm', false), to: this.str(v['to'], 'body.to', false), drain: v['drain'] === true, ...(v['withStorage'] === true ? { withStorage: true } : {}) }
      case 'vipClaim': {
        const phase = this.u32(v['phase'], 'body.phase')
        if (phase !== 1 && phase !== 2) throw new Reject(phase === 0 ? 'missing_field' : 'absurd_value', `body.phase: ${phase}`)
        return { type: 'vipClaim', vip: this.str(v['vip'], 'body.vip', true), claim: this.claim(v['claim'], 'body.claim'), phase: phase === 1 ? 'request' : 'held', renew: this.u64(v['renew'], 'body.renew') }
      }
      case 'vipGrant': return {
        type: 'vipGrant', vip: this.str(v['vip'], 'body.vip', true), claim: this.claim(v['claim'], 'body.claim'), from: this.host(v['from'], 'body.from'),
        renew: this.u64(v['renew'], 'body.renew'), quiet: this.u64(v['quiet'], 'body.quiet')
      }
      case 'vipRelease': return { type: 'vipRelease', vip: this.str(v['vip'], 'body.vip', true), claim: this.claim(v['claim'], 'body.claim'), to: isObj(v['to']) ? this.host(v['to'], 'body.to') : null }
      case 'vipStanding': return { type: 'vipStanding', vip: this.str(v['vip'], 'body.vip', true), standing: this.claim(v['standing'], 'body.standing'), from: this.host(v['from'], 'body.from') }
      case 'vipMoveRequested': return { type: 'vipMoveRequested', vip: this.str(v['vip'], 'body.vip', true), to: this.host(v['to'], 'body.to') }
      case 'haBeat': return this.haBeat(v)
      case 'haClaim': {
        const phase = this.u32(v['phase'], 'body.phase')
        if (phase !== 1 && phase !== 2 && phase !== 3) throw new Reject(phase === 0 ? 'missing_field' : 'absurd_value', `body.phase: ${phase}`)
        const resumes = isObj(v['resumes']) ? { resumes: this.haClaim(v['resumes'], 'body.resumes') } : {}
        return { type: 'haClaim', vm: this.str(v['vm'], 'body.vm', true), claim: this.haClaim(v['claim'], 'body.claim'), phase: phase === 1 ? 'request' : phase === 2 ? 'held' : 'handover', ...resumes, ...(v['homeSettled'] === true ? { homeSettled: true as const } : {}) }
      }
      case 'haGrant': return { type: 'haGrant', vm: this.str(v['vm'], 'body.vm', true), claim: this.haClaim(v['claim'], 'body.claim') }
      case 'haRefuse': return {
        type: 'haRefuse', vm: this.str(v['vm'], 'body.vm', true), claim: this.haClaim(v['claim'], 'body.claim'),
        standing: isObj(v['standing']) ? this.haClaim(v['standing'], 'body.standing') : null, released: v['released'] === true
      }
      case 'haRelease': return { type: 'haRelease', vm: this.str(v['vm'], 'body.vm', true), claim: this.haClaim(v['claim'], 'body.claim'), granted: v['granted'] === true }
      case 'haQuery': return { type: 'haQuery', vm: this.str(v['vm'], 'body.vm', true), claim: this.haClaim(v['claim'], 'body.claim') }
      case 'replica': {
        const op = REPLICA_OPS[this.u32(v['op'], 'body.op') - 1]
        if (op === undefined) throw new Reject(v['op'] === undefined || v['op'] === 0 ? 'missing_field' : 'absurd_value', `body.op: ${String(v['op'])}`)
        return {
          type: 'replica', op, id: this.str(v['id'], 'body.id', true), vm: this.str(v['vm'], 'body.vm', true),
          cpuDemandMips: this.u64(v['cpuDemandMips'], 'body.cpuDemandMips'), memMiB: this.u32(v['memMib'], 'body.memMiB'),
          vcpus: this.u32(v['vcpus'], 'body.vcpus'), reason: this.long(v['reason'], 'body.reason')
        }
      }
      case 'config': return this.configMsg(v)
      default: throw new Reject('unknown_body', name)
    }
  }

  private ballot (v: unknown, where: string): Ballot {
    if (!isObj(v)) throw new Reject('missing_field', where)
    return { n: this.u64(v['n'], where + '.n'), by: this.host(v['by'], where + '.by') }
  }

  private configEntry (v: unknown, where: string): ConfigEntry {
    if (!isObj(v)) throw new Reject('missing_field', where)
    const doc = typeof v['doc'] === 'string' ? v['doc'] : ''
    if (Buffer.byteLength(doc, 'utf8') > CONFIG_DOC_BYTES) throw new Reject('absurd_value', `${where}.doc: longer than ${CONFIG_DOC_BYTES} bytes`)
    const members = this.count(v['members'], this.lim.maxMembers, where + '.members', (x, i) => this.host(x, `${where}.members[${i}]`))
    if (members.length === 0) throw new Reject('missing_field', where + '.members')
    return {
      version: this.u64(v['version'], where + '.version'), base: this.str(v['base'], where + '.base', false), members,
      doc, note: this.long(v['note'], where + '.note'), hash: this.str(v['hash'], where + '.hash', true)
    }
  }

  private configMsg (v: Record<string, unknown>): ConfigMessage {
    const op = CONFIG_OPS[this.u32(v['op'], 'body.op') - 1]
    if (op === undefined) throw new Reject(v['op'] === undefined || v['op'] === 0 ? 'missing_field' : 'absurd_value', `body.op: ${String(v['op'])}`)
    const m: ConfigMessage = { type: 'cfg', op, slot: this.u64(v['slot'], 'body.slot') }
    if (isObj(v['ballot'])) m.ballot = this.ballot(v['ballot'], 'body.ballot')
    const base = this.str(v['base'], 'body.base', false)
    if (base !== '') m.base = base
    if (isObj(v['entry'])) m.entry = this.configEntry(v['entry'], 'body.entry')
    if (isObj(v['accBallot'])) m.accBallot = this.ballot(v['accBallot'], 'body.accBallot')
    if (isObj(v['promised'])) m.promised = this.ballot(v['promised'], 'body.promised')
    const have = this.u64(v['have'], 'body.have')
    if (op === 'nack') m.have = have
    return m
  }
}

function encBallot (b: Ballot, where: string): Pb { return { n: encU64(b.n, where + '.n'), by: encHost(b.by, where + '.by') } }

function encConfigMsg (m: ConfigMessage): Pb {
  const e = m.entry
  if (e !== undefined && Buffer.byteLength(e.doc, 'utf8') > CONFIG_DOC_BYTES) throw new WireEncodeError(`body.entry.doc: longer than ${CONFIG_DOC_BYTES} bytes`)
  return {
    op: CONFIG_OPS.indexOf(m.op) + 1,
    slot: encU64(m.slot, 'body.slot'),
    ...(m.ballot !== undefined ? { ballot: encBallot(m.ballot, 'body.ballot') } : {}),
    ...(m.base !== undefined && m.base !== '' ? { base: encStr(m.base, 'body.base', false) } : {}),
    ...(e !== undefined
      ? {
          entry: {
            version: encU64(e.version, 'body.entry.version'), base: encStr(e.base, 'body.entry.base', false),
            members: e.members.map((h, i) => encHost(h, `body.entry.members[${i}]`)), doc: e.doc,
            note: encLong(e.note, 'body.entry.note'), hash: encStr(e.hash, 'body.entry.hash', true)
          }
        }
      : {}),
    ...(m.accBallot !== undefined ? { accBallot: encBallot(m.accBallot, 'body.accBallot') } : {}),
    ...(m.promised !== undefined ? { promised: encBallot(m.promised, 'body.promised') } : {}),
    ...(m.have !== undefined ? { have: encU64(m.have, 'body.have') } : {})
  }
}

/**
 * Walks the top-level fields without decoding them: finds the body's field number (rejecting a
 * frame with none, an unknown one or two of them) and fails fast on broken framing.
 */
function scanBody (frame: Uint8Array): string {
  const r = protobuf.Reader.create(frame)
  let body: string | null = null
  let unknownBody: number | null = null
  while (r.pos < r.len) {
    const tag = r.uint32()
    const field = tag >>> 3
    const wireType = tag & 7
    if (field === 0) throw new Reject('malformed', 'field number 0')
    const known = BODY_FIELDS.get(field)
    if (known !== undefined) {
      if (body !== null) throw new Reject('malformed', 'two bodies')
      body = known
    } else if (field >= BODY_RANGE_MIN && field <= BODY_RANGE_MAX) {
      unknownBody = field
    }
    r.skipType(wireType)
  }
  if (body !== null) return body
  if (unknownBody !== null) throw new Reject('unknown_body', `field ${unknownBody}`)
  throw new Reject('missing_body', 'no body')
}

function checkProtocol (min: number, max: number, cur: number): void {
  if (min === 0 || max === 0 || cur === 0) throw new Reject('protocol_invalid', `absent version (min ${min}, max ${max}, cur ${cur})`)
  if (min > max || cur < min || cur > max) throw new Reject('protocol_invalid', `inconsistent versions (min ${min}, max ${max}, cur ${cur})`)
  if (max < PROTOCOL_MIN || min > PROTOCOL_MAX) {
    throw new Reject('protocol_mismatch', `peer speaks ${min}-${max}, we speak ${PROTOCOL_MIN}-${PROTOCOL_MAX}`)
  }
}

function decodeOrReject (frame: Uint8Array, opts: DecodeOptions | undefined): { envelope: Envelope, droppedGossip: number } {
  const lim: WireLimits = { ...DEFAULT_WIRE_LIMITS, ...stripUndefined(opts) }
  if (!(frame instanceof Uint8Array)) throw new Reject('malformed', 'not bytes')
  if (frame.byteLength === 0) throw new Reject('empty', 'zero-length frame')
  if (frame.byteLength > lim.maxFrameBytes) throw new Reject('oversized', `${frame.byteLength} > ${lim.maxFrameBytes} bytes`)
  const bodyName = scanBody(frame)
  let raw: Record<string, unknown>
  try {
    raw = EnvelopeType.decode(frame) as unknown as Record<string, unknown>
  } catch (err) {
    throw new Reject('malformed', err instanceof Error ? err.message : String(err))
  }
  const d = new Decoder(lim)
  const protocolMin = d.u32(raw['protocolMin'], 'protocolMin')
  const protocolMax = d.u32(raw['protocolMax'], 'protocolMax')
  const protocolCur = d.u32(raw['protocolCur'], 'protocolCur')
  checkProtocol(protocolMin, protocolMax, protocolCur)
  const from = d.host(raw['from'], 'from')
  if (opts?.expectFrom !== undefined && from !== opts.expectFrom) {
    throw new Reject('sender_mismatch', `from ${from.slice(0, 12)} on a connection of ${opts.expectFrom.slice(0, 12)}`)
  }
  const body = d.body(bodyName, raw[bodyName])
  const gossip: Gossip[] = []
  for (const g of d.count(raw['gossip'], lim.maxGossipItems, 'gossip', (x, i) => d.gossip(x, `gossip[${i}]`))) {
    if (g !== null) gossip.push(g)
  }
  const envelope: Envelope = {
    protocolMin,
    protocolMax,
    protocolCur,
    from,
    incarnation: d.u64(raw['incarnation'], 'incarnation'),
    lamport: d.u64(raw['lamport'], 'lamport'),
    body,
    gossip
  }
  const cfgVersion = d.u64(raw['configVersion'], 'configVersion')
  if (cfgVersion > 0) envelope.cfgVersion = cfgVersion
  return { envelope, droppedGossip: d.droppedGossip }
}

function stripUndefined (o: DecodeOptions | undefined): Partial<WireLimits> {
  const out: Partial<WireLimits> = {}
  if (o === undefined) return out
  for (const k of Object.keys(DEFAULT_WIRE_LIMITS) as (keyof WireLimits)[]) {
    const v = o[k]
    if (typeof v === 'number' && v >= 0) out[k] = v
  }
  return out
}

/**
 * Decodes one frame (without the length prefix). Never throws: a frame that cannot be trusted
 * comes back as `{ ok: false, reason, detail }` and is counted under `reason`.
 */
export function decodeFrame (frame: Uint8Array, opts?: DecodeOptions): DecodeResult {
  try {
    const { envelope, droppedGossip } = decodeOrReject(frame, opts)
    counters.accepted++
    counters.unknownGossipDropped += droppedGossip
    return { ok: true, envelope, droppedGossip }
  } catch (err) {
    const rej = err instanceof Reject
      ? err
      : new Reject('malformed', err instanceof Error ? `${err.name}: ${err.message}` : String(err))
    counters.rejected[rej.reason]++
    return { ok: false, reason: rej.reason, detail: rej.detail }
  }
}

// ---------------------------------------------------------------------------------------------
// Hello (hello.proto): the first frame of each mesh connection, read by the transport itself.

/** What a hello carries (the transport computes and checks the proof). */
export interface Hello {
  /** The sender's host id. */
  from: HostId
  /** HMAC-SHA256 proving the cluster secret for this connection (32 bytes). */
  proof: Uint8Array
  /** Digests of the cluster-wide settings, by configuration path. */
  settings: Array<{ field: string, digest: Uint8Array }>
}

export type HelloResult =
  | { ok: true, hello: Hello }
  | { ok: false, reason: RejectReason | 'not_hello', detail: string }

/** Most settings digests in one hello. */
const HELLO_MAX_SETTINGS = 64

/** Encodes a hello as an Envelope whose body is Hello (incarnation and lamport 0, no gossip). */
export function encodeHello (h: Hello): Uint8Array {
  if (h.proof.byteLength !== 32) throw new WireEncodeError(`hello.proof: ${h.proof.byteLength} bytes, not 32`)
  if (h.settings.length > HELLO_MAX_SETTINGS) throw new WireEncodeError(`hello.settings: more than ${HELLO_MAX_SETTINGS}`)
  return EnvelopeType.encode({
    protocolMin: PROTOCOL_MIN,
    protocolMax: PROTOCOL_MAX,
    protocolCur: PROTOCOL_MAX,
    from: encHost(h.from, 'from'),
    hello: {
      proof: h.proof,
      settings: h.settings.map((s, i) => ({ field: encStr(s.field, `hello.settings[${i}].field`, true), digest: s.digest }))
    }
  }).finish()
}

/**
 * Decodes the first frame of a connection, which must be a hello from `expectFrom` in a protocol
 * version we speak. Never throws. Not counted in decodeCounters (the transport counts refusals).
 */
export function decodeHello (frame: Uint8Array, expectFrom: HostId): HelloResult {
  try {
    if (frame.byteLength === 0) throw new Reject('empty', 'zero-length frame')
    if (frame.byteLength > 16 * 1024) throw new Reject('oversized', `hello of ${frame.byteLength} bytes`)
    const bodyName = scanBody(frame)
    if (bodyName !== 'hello') return { ok: false, reason: 'not_hello', detail: `the first frame is a ${bodyName}, not a hello` }
    const raw = EnvelopeType.decode(frame) as unknown as Record<string, unknown>
    const d = new Decoder(DEFAULT_WIRE_LIMITS)
    checkProtocol(d.u32(raw['protocolMin'], 'protocolMin'), d.u32(raw['protocolMax'], 'protocolMax'), d.u32(raw['protocolCur'], 'protocolCur'))
    const from = d.host(raw['from'], 'from')
    if (from !== expectFrom) throw new Reject('sender_mismatch', `from ${from.slice(0, 12)} on a connection of ${expectFrom.slice(0, 12)}`)
    const body = raw['hello'] as Record<string, unknown>
    const proof = body['proof']
    if (!(proof instanceof Uint8Array) || proof.byteLength !== 32) throw new Reject(proof === undefined ? 'missing_field' : 'absurd_value', 'hello.proof')
    const settings = d.count(body['settings'], HELLO_MAX_SETTINGS, 'hello.settings', (x, i) => {
      const s = isObj(x) ? x : {}
      const digest = s['digest']
      if (!(digest instanceof Uint8Array) || digest.byteLength === 0 || digest.byteLength > 64) throw new Reject('absurd_value', `hello.settings[${i}].digest`)
      return { field: d.str(s['field'], `hello.settings[${i}].field`, true), digest: Uint8Array.prototype.slice.call(digest) }
    })
    return { ok: true, hello: { from, proof: Uint8Array.prototype.slice.call(proof), settings } }
  } catch (err) {
    const rej = err instanceof Reject ? err : new Reject('malformed', err instanceof Error ? err.message : String(err))
    return { ok: false, reason: rej.reason, detail: rej.detail }
  }
}
