/**
 * Size estimator consistent with the protobuf schema in proto/mesh/v1 (the codec gives real
 * bytes): varint integers, host ids as 32 raw key bytes when they are 64 hex digits (else text),
 * utilisations as basis-point varints, zero values omitted. Used by the core to keep frames
 * within budget and by the simulator to count bytes without encoding. Report sizes are cached
 * per report object (reports are immutable once made).
 */
import type { Body, Envelope, Gossip, MemberRecord } from './messages.js'
import type { LoadReport, VmSummary } from './types.js'
import type { ConfigMessage } from './cluster-config/config-log.js'

export function varintBytes (n: number): number {
  if (n < 0) return 10
  let b = 1
  while (n >= 128) { n = Math.floor(n / 128); b++ }
  return b
}

/** tag + value for a varint field; 0 when the value is the proto3 default. */
function uintField (n: number): number { return n === 0 ? 0 : 1 + varintBytes(n) }
function lenField (len: number): number { return 1 + varintBytes(len) + len }
function strField (s: string): number { return s.length === 0 ? 0 : lenField(s.length) }
function bp (f: number): number { return uintField(Math.round(f * 10000)) }

const HEX64 = /^[0-9a-f]{64}$/
const hostRefCache = new Map<string, number>()
/** A HostRef message body: 32 key bytes for a hex public key, else the name. */
export function hostRefBytes (id: string): number {
  const hit = hostRefCache.get(id)
  if (hit !== undefined) return hit
  const n = id.length === 64 && HEX64.test(id) ? lenField(32) : lenField(id.length)
  if (hostRefCache.size > 100_000) hostRefCache.clear()
  hostRefCache.set(id, n)
  return n
}
function hostField (id: string): number { return lenField(hostRefBytes(id)) }

function vmBytes (v: VmSummary): number {
  return strField(v.id) + uintField(v.vcpus) + uintField(Math.round(v.memMiB)) + bp(v.cpuUtil) +
    uintField(Math.round(v.memUsedMiB)) + 2
}

const reportCache = new WeakMap<LoadReport, number>()
/** Encoded size of a LoadReport message body (without its own tag). */
export function reportBytes (r: LoadReport): number {
  const hit = reportCache.get(r)
  if (hit !== undefined) return hit
  const c = r.capacity
  const cap = uintField(c.cpuCores) + uintField(c.cpuMipsPerCore) + uintField(Math.round(c.memMiB)) + uintField(Math.round(c.netMbps))
  let fc = 0
  for (const f of r.forecastCpu) fc += varintBytes(Math.round(f * 10000))
  let n = hostField(r.host) + uintField(r.seq) + lenField(cap) + bp(r.cpuUtil) + bp(r.memUtil) + bp(r.netUtil) +
    (fc > 0 ? lenField(fc) : 0)
  for (const v of r.vms) n += lenField(vmBytes(v))
  if (r.rulesHash !== undefined) n += strField(r.rulesHash)
  if (r.memory !== undefined) {
    const m = r.memory
    n += lenField(uintField(Math.round(m.committedMiB)) + uintField(Math.round(m.balloonedMiB)) + uintField(Math.round(m.reclaimableMiB)) +
      uintField(Math.round(m.unmetMiB)) + bp(m.pressure) + uintField(Math.round(m.ksmSavedMiB)) + bp(m.ksmCpu))
  }
  if (r.cpuResolved === true) n += 2
  reportCache.set(r, n)
  return n
}

export function memberRecordBytes (m: MemberRecord): number {
  return hostField(m.id) + strField(m.name) + strField(m.addr) + uintField(m.incarnation) + 2
}

/** Encoded size of one Gossip item including its tag in the envelope. */
export function gossipBytes (g: Gossip): number {
  let inner: number
  switch (g.type) {
    case 'alive': inner = memberRecordBytes(g.member); break
    case 'suspect': case 'dead': inner = hostField(g.node) + uintField(g.incarnation) + hostField(g.from); break
    case 'left': inner = hostField(g.node) + uintField(g.incarnation); break
    case 'report': inner = reportBytes(g.report); break
  }
  return lenField(lenField(inner))
}

function claimBytes (c: { host: string, lamport: number }): number { return hostField(c.host) + uintField(c.lamport) }

function haClaimBytes (c: { epoch: number, host: string, attempts: number }): number { return uintField(c.epoch) + hostField(c.host) + uintField(c.attempts) }

function haBeatBytes (b: Extract<Body, { type: 'haBeat' }>): number {
  let n = uintField(b.life) + uintField(b.sent) + lenField(uintField(b.mode.version) + (b.mode.armed ? 2 : 0))
  if (b.echo !== null) n += lenField(uintField(b.echo.life) + uintField(b.echo.sent))
  for (const m of b.maintenance) n += lenField(hostField(m.host) + uintField(m.version) + (m.on ? 2 : 0))
  if (b.fenced) n += 2
  for (const c of b.confirmed) n += lenField(hostField(c.host) + uintField(c.life))
  return n
}

function ballotBytes (b: { n: number, by: string }): number { return uintField(b.n) + hostField(b.by) }

function configBytes (m: ConfigMessage): number {
  let n = uintField(1) + uintField(m.slot)
  if (m.ballot !== undefined) n += lenField(ballotBytes(m.ballot))
  if (m.base !== undefined) n += strField(m.base)
  const e = m.entry
  if (e !== undefined) {
    let inner = uintField(e.version) + strField(e.base) + strField(e.note) + strField(e.hash) + strField(e.doc)
    for (const h of e.members) inner += lenField(hostRefBytes(h))
    n += lenField(inner)
  }
  if (m.accBallot !== undefined) n += lenField(ballotBytes(m.accBallot))
  if (m.promised !== undefined) n += lenField(ballotBytes(m.promised))
  if (m.have !== undefined) n += uintField(m.have)
  return n
}

function bodyBytes (b: Body): number {
  switch (b.type) {
    case 'ping': case 'ack': case 'nack': case 'pingReq':
      return uintField(b.seq) + hostField(b.target)
    case 'pushPull': {
      let n = b.reply ? 2 : 0
      for (const m of b.members) n += lenField(memberRecordBytes(m))
      for (const r of b.reports) n += lenField(reportBytes(r))
      return n
    }
    case 'reportPull': {
      let n = 0
      for (const d of b.want) n += lenField(hostField(d.host) + uintField(d.seq))
      return n
    }
    case 'gossip': return 0
    case 'vipClaim': return strField(b.vip) + lenField(claimBytes(b.claim)) + uintField(b.phase === 'request' ? 1 : 2) + uintField(b.renew)
    case 'vipGrant': return strField(b.vip) + lenField(claimBytes(b.claim)) + hostField(b.from) + uintField(b.renew) + uintField(b.quiet)
    case 'vipRelease': return strField(b.vip) + lenField(claimBytes(b.claim)) + (b.to !== null ? hostField(b.to) : 0)
    case 'vipStanding': return strField(b.vip) + lenField(claimBytes(b.standing)) + hostField(b.from)
    case 'vipMoveRequested': return strField(b.vip) + hostField(b.to)
    case 'haBeat': return haBeatBytes(b)
    case 'cfg': return configBytes(b)
    case 'haClaim': return strField(b.vm) + lenField(haClaimBytes(b.claim)) + uintField(b.phase === 'request' ? 1 : b.phase === 'held' ? 2 : 3) + (b.resumes !== undefined ? lenField(haClaimBytes(b.resumes)) : 0) + (b.homeSettled === true ? 2 : 0)
    case 'haGrant': case 'haQuery': return strField(b.vm) + lenField(haClaimBytes(b.claim))
    case 'haRefuse': return strField(b.vm) + lenField(haClaimBytes(b.claim)) + (b.standing !== null ? lenField(haClaimBytes(b.standing)) : 0) + (b.released ? 2 : 0)
    case 'haRelease': return strField(b.vm) + lenField(haClaimBytes(b.claim)) + (b.granted ? 2 : 0)
    default: {
      // Migration bodies: rare and small; every string and number field counted, with its tag.
      let n = 0
      for (const v of Object.values(b)) {
        if (typeof v === 'string') n += strField(v)
        else if (typeof v === 'number') n += uintField(Math.max(0, Math.round(v)))
        else if (v === true) n += 2
      }
      return n
    }
  }
}

/** Estimated encoded size of an envelope (without the 4-byte length prefix of the transport). */
export function envelopeBytes (e: Envelope): number {
  let n = uintField(e.protocolMin) + uintField(e.protocolMax) + uintField(e.protocolCur) +
    hostField(e.from) + uintField(e.incarnation) + uintField(e.lamport) + lenField(bodyBytes(e.body)) +
    (e.body.type.startsWith('vip') || e.body.type.startsWith('ha') || e.body.type === 'cfg' ? 1 : 0) + // VIP (16-19, 31), configuration (33) and HA bodies (41-46): two-byte tags
    (e.cfgVersion !== undefined && e.cfgVersion > 0 ? 1 + uintField(e.cfgVersion) : 0) // field 64: a two-byte tag
  for (const g of e.gossip) n += gossipBytes(g)
  return n
}
