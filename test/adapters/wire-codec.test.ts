/**
 * Wire codec: round trips for every body and gossip kind, and the decoder's promise that a
 * frame it cannot trust comes back as a counted rejection, never as an exception.
 * Method: hand-built envelopes for the round trips; seeded random bytes, truncations and bit
 * flips of valid frames for the fuzzing (SEED=<n> reproduces a run).
 */
import t from 'tap'
import protobuf from 'protobufjs'
import { Prng } from '../../agent/core/prng.js'
import { PROTOCOL_CUR, PROTOCOL_MAX, PROTOCOL_MIN, type Envelope, type Gossip, type Body } from '../../agent/core/messages.js'
import type { LoadReport } from '../../agent/core/types.js'
import { envelopeBytes } from '../../agent/core/wire-size.js'
import {
  decodeCounters, decodeFrame, encodeEnvelope, envelopeByteSize, frameByteSize, resetDecodeCounters,
  DEFAULT_WIRE_LIMITS, FRAME_HEADER_BYTES, REJECT_REASONS, WireEncodeError, type DecodeResult
} from '../../agent/adapters/wire-codec.js'
import { defaultCoreConfig, FRAME_BYTES_MAX_DEFAULT as MAX_FRAME_BYTES_DEFAULT } from '../../agent/core/config.js'

const KEY_A = 'a1'.repeat(32)
const KEY_B = '0f'.repeat(32)

function report (host = KEY_B, vms = 2): LoadReport {
  return {
    host,
    seq: 42,
    capacity: { cpuCores: 16, cpuMipsPerCore: 2500, memMiB: 65536, netMbps: 10000 },
    cpuUtil: 0.4567,
    memUtil: 0.8,
    netUtil: 0.0012,
    forecastCpu: [0.5, 0.55, 0.6123],
    vms: Array.from({ length: vms }, (_, i) => ({
      id: `vm-${i}`, vcpus: 2, memMiB: 4096, cpuUtil: 0.0625, memUsedMiB: 3000 + i, state: 'running' as const
    }))
  }
}

const ALL_GOSSIP: Gossip[] = [
  { type: 'alive', member: { id: KEY_B, name: 'hv2', addr: '10.0.0.2:49737', incarnation: 7, state: 'alive' } },
  { type: 'alive', member: { id: 'sim-host-3', name: '', addr: '', incarnation: 0, state: 'left' } },
  { type: 'suspect', node: KEY_B, incarnation: 3, from: 'h9' },
  { type: 'dead', node: 'h4', incarnation: 2 ** 40, from: KEY_A },
  { type: 'left', node: 'h5', incarnation: 1 },
  { type: 'report', report: report() },
  // with the memory inside the host (ballooning, page sharing)
  { type: 'report', report: { ...report('h8', 1), memory: { committedMiB: 98304, balloonedMiB: 12288, reclaimableMiB: 4000, unmetMiB: 0, pressure: 0.0125, ksmSavedMiB: 900, ksmCpu: 0.1234 }, cpuResolved: true } }
]

const ALL_BODIES: Body[] = [
  { type: 'vipClaim', vip: 'web', claim: { host: KEY_B, lamport: 42 }, phase: 'request', renew: 1234 },
  { type: 'vipClaim', vip: 'web', claim: { host: 'h2', lamport: 0 }, phase: 'held', renew: 0 },
  { type: 'vipGrant', vip: 'web', claim: { host: KEY_B, lamport: 7 }, from: KEY_A, renew: 1234, quiet: 0 },
  { type: 'vipGrant', vip: 'web', claim: { host: KEY_B, lamport: 8 }, from: KEY_A, renew: 0, quiet: 90061 },
  { type: 'vipRelease', vip: 'web', claim: { host: KEY_B, lamport: 7 }, to: KEY_A },
  { type: 'vipRelease', vip: 'web', claim: { host: KEY_B, lamport: 8 }, to: null },
  { type: 'vipStanding', vip: 'web', standing: { host: KEY_A, lamport: 9 }, from: KEY_B },
  { type: 'vipMoveRequested', vip: 'web', to: 'h3' },
  { type: 'haBeat', life: 3, sent: 1234, echo: { life: 2, sent: 1230 }, mode: { version: 2, armed: false }, maintenance: [{ host: KEY_B, version: 1, on: true }, { host: 'h3', version: 2, on: false }], fenced: true, confirmed: [{ host: KEY_A, life: 7 }] },
  { type: 'haBeat', life: 1, sent: 0, echo: null, mode: { version: 0, armed: true }, maintenance: [], fenced: false, confirmed: [] },
  { type: 'haClaim', vm: 'g1', claim: { epoch: 0, host: KEY_B, attempts: 0 }, phase: 'request' },
  { type: 'haClaim', vm: 'g1', claim: { epoch: 2 ** 40, host: 'h2', attempts: 2 }, phase: 'held' },
  { type: 'haClaim', vm: 'g1', claim: { epoch: 3, host: KEY_B, attempts: 0 }, phase: 'request', resumes: { epoch: 1, host: KEY_B, attempts: 0 } },
  { type: 'haClaim', vm: 'g1', claim: { epoch: 7 * 2 ** 32 + 1, host: KEY_B, attempts: 0 }, phase: 'request', homeSettled: true },
  { type: 'haGrant', vm: 'g1', claim: { epoch: 5, host: KEY_A, attempts: 1 } },
  { type: 'haRefuse', vm: 'g1', claim: { epoch: 5, host: KEY_A, attempts: 0 }, standing: { epoch: 6, host: KEY_B, attempts: 0 }, released: true },
  { type: 'haRefuse', vm: 'g1', claim: { epoch: 1, host: KEY_A, attempts: 3 }, standing: null, released: false },
  { type: 'haRelease', vm: 'g1', claim: { epoch: 4, host: KEY_B, attempts: 1 }, granted: true },
  { type: 'haRelease', vm: 'g1', claim: { epoch: 4, host: 'h3', attempts: 0 }, granted: false },
  { type: 'haQuery', vm: 'g1', claim: { epoch: 9, host: KEY_B, attempts: 0 } },
  { type: 'ping', seq: 1, target: KEY_B },
  { type: 'ack', seq: 0, target: 'h2' },
  { type: 'nack', seq: 4294967295, target: KEY_B },
  { type: 'pingReq', seq: 99, target: 'h3' },
  { type: 'pushPull', reply: false, members: [{ id: KEY_A, name: 'a', addr: '127.0.0.1:1', incarnation: 1, state: 'suspect' }], reports: [report(), report('h7', 0)] },
  { type: 'pushPull', reply: true, members: [], reports: [] },
  { type: 'gossip' },
  { type: 'reportPull', want: [{ host: KEY_B, seq: 12 }, { host: 'h3', seq: 0 }] },
  { type: 'reportPull', want: [] }
]

function env (body: Body, gossip: Gossip[] = [], from = KEY_A): Envelope {
  return { protocolMin: PROTOCOL_MIN, protocolMax: PROTOCOL_MAX, protocolCur: PROTOCOL_CUR, from, incarnation: 3, lamport: 1234567, body, gossip }
}

function ok (t: { fail: (msg: string) => unknown }, r: DecodeResult): Envelope {
  if (!r.ok) { t.fail(`rejected: ${r.reason} ${r.detail}`); throw new Error('rejected') }
  return r.envelope
}

t.test('round trip: every body kind, every gossip kind', async t => {
  for (const body of ALL_BODIES) {
    const e = env(body, ALL_GOSSIP)
    const frame = encodeEnvelope(e)
    t.same(ok(t, decodeFrame(frame)), e, `body ${body.type}`)
  }
  for (const g of ALL_GOSSIP) {
    const e = env({ type: 'gossip' }, [g], 'sim-host-1')
    t.same(ok(t, decodeFrame(encodeEnvelope(e))), e, `gossip ${g.type}`)
  }
})

t.test('host ids: hex keys travel as 32 bytes, other ids as text, both round-trip exactly', async t => {
  const hexSize = envelopeByteSize(env({ type: 'gossip' }, [], KEY_A))
  const upper = KEY_A.toUpperCase() // not our canonical form: must stay text to round-trip
  const textSize = envelopeByteSize(env({ type: 'gossip' }, [], upper))
  t.ok(hexSize + 30 <= textSize, `key ${hexSize} B vs text ${textSize} B`)
  t.equal(ok(t, decodeFrame(encodeEnvelope(env({ type: 'gossip' }, [], upper)))).from, upper)
})

t.test('fixed point: utilisations round to basis points, sizes to whole units', async t => {
  const r = report()
  r.cpuUtil = 0.123456
  r.forecastCpu = [1 / 3]
  r.vms[0]!.cpuUtil = 0.00004 // below half a basis point: 0
  r.capacity.memMiB = 1024.4
  const got = ok(t, decodeFrame(encodeEnvelope(env({ type: 'gossip' }, [{ type: 'report', report: r }]))))
  const rep = (got.gossip[0] as { report: LoadReport }).report
  t.equal(rep.cpuUtil, 0.1235)
  t.equal(rep.forecastCpu[0], 0.3333)
  t.equal(rep.vms[0]!.cpuUtil, 0)
  t.equal(rep.capacity.memMiB, 1024)
  const big = report()
  big.cpuUtil = 50 // clamped to UTIL_MAX on encode
  const got2 = ok(t, decodeFrame(encodeEnvelope(env({ type: 'gossip' }, [{ type: 'report', report: big }]))))
  t.equal((got2.gossip[0] as { report: LoadReport }).report.cpuUtil, 10)
})

t.test('sizes: a load report is compact, and the size functions agree with the encoder', async t => {
  const withMemory = { ...report(KEY_B, 3), memory: { committedMiB: 200000, balloonedMiB: 0, reclaimableMiB: 77, unmetMiB: 5, pressure: 0.5, ksmSavedMiB: 1, ksmCpu: 1 }, cpuResolved: true }
  const em = env({ type: 'gossip' }, [{ type: 'report', report: withMemory }])
  t.equal(envelopeByteSize(em), encodeEnvelope(em).byteLength, 'the memory part is sized as encoded')
  const e = env({ type: 'gossip' }, [{ type: 'report', report: report(KEY_B, 10) }])
  const n = encodeEnvelope(e).byteLength
  t.equal(envelopeByteSize(e), n)
  t.equal(frameByteSize(e), n + FRAME_HEADER_BYTES)
  t.comment(`envelope with a 10-VM report: ${n} bytes`)
  t.ok(n < 400, `10-VM report frame is ${n} bytes`)
  const ping = encodeEnvelope(env({ type: 'ping', seq: 12, target: KEY_B })).byteLength
  t.comment(`ping between two real hosts: ${ping} bytes`)
  t.ok(ping < 90)
})

t.test("the core's size estimate (core/wire-size.ts) matches the real encoding", async t => {
  const prng = new Prng(7)
  const cases: Envelope[] = [
    ...ALL_BODIES.map(b => env(b, ALL_GOSSIP)),
    ...ALL_BODIES.map(b => env(b)),
    ...ALL_GOSSIP.map(g => env({ type: 'gossip' }, [g], 'sim-1'))
  ]
  for (let i = 0; i < 200; i++) {
    const r = report(prng.chance(0.5) ? KEY_B : `h${i}`, prng.int(8))
    r.cpuUtil = prng.next()
    r.memUtil = prng.int(3) === 0 ? 0 : prng.next()
    r.seq = prng.int(1e9)
    r.forecastCpu = Array.from({ length: prng.int(5) }, () => prng.next())
    cases.push({ ...env({ type: 'ping', seq: prng.int(1e6), target: 'x' }, [{ type: 'report', report: r }]), lamport: prng.int(2 ** 40), incarnation: prng.int(3) })
  }
  let mismatches = 0
  for (const e of cases) {
    const real = envelopeByteSize(e)
    const est = envelopeBytes(e)
    if (real !== est) {
      mismatches++
      if (mismatches <= 5) t.fail(`estimate ${est} != encoded ${real} for ${e.body.type} with ${e.gossip.map(g => g.type).join(',')}`)
    }
  }
  t.equal(mismatches, 0, `${cases.length} envelopes: estimate equals encoding`)
})

t.test('encode refuses values the wire cannot carry', async t => {
  const bad: [string, Envelope][] = [
    ['NaN util', env({ type: 'gossip' }, [{ type: 'report', report: { ...report(), cpuUtil: NaN } }])],
    ['negative incarnation', { ...env({ type: 'gossip' }), incarnation: -1 }],
    ['empty host', env({ type: 'ping', seq: 1, target: '' })],
    ['bad state', env({ type: 'gossip' }, [{ type: 'alive', member: { id: 'x', name: '', addr: '', incarnation: 1, state: 'zombie' as 'alive' } }])],
    ['unsafe lamport', { ...env({ type: 'gossip' }), lamport: 2 ** 60 }],
    ['long name', env({ type: 'gossip' }, [{ type: 'alive', member: { id: 'x', name: 'n'.repeat(300), addr: '', incarnation: 1, state: 'alive' } }])]
  ]
  for (const [name, e] of bad) t.throws(() => encodeEnvelope(e), WireEncodeError, name)
})

/** Hand-made frames through the raw schema, to send what our encoder never would. */
const root = new protobuf.Root()
const Raw = protobuf.parse(`
syntax = "proto3";
message HostRef { oneof id { bytes key = 1; string name = 2; } }
message Ping { uint32 seq = 1; HostRef target = 2; }
message Future { string x = 1; }
message Gossip { oneof item { Future future = 9; } }
message Env {
  uint32 protocol_min = 1; uint32 protocol_max = 2; uint32 protocol_cur = 3; HostRef from = 4;
  uint64 incarnation = 5; uint64 lamport = 6; repeated Gossip gossip = 7;
  Ping ping = 8; Ping ack = 9; Future future_body = 40; uint32 unknown_extra = 99;
}`, root).root.lookupType('Env')
function raw (o: Record<string, unknown>): Uint8Array {
  return Raw.encode({ protocolMin: 1, protocolMax: 1, protocolCur: 1, from: { name: 'h1' }, ...o }).finish()
}

t.test('rejections by reason, counted', async t => {
  resetDecodeCounters()
  const cases: [string, Uint8Array, string][] = [
    ['empty', new Uint8Array(0), 'empty'],
    ['oversized', new Uint8Array(MAX_FRAME_BYTES_DEFAULT + 1), 'oversized'],
    ['garbage', Uint8Array.from([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]), 'malformed'],
    ['no body', raw({}), 'missing_body'],
    ['unknown body', raw({ futureBody: { x: 'hi' } }), 'unknown_body'],
    ['two bodies', raw({ ping: { seq: 1, target: { name: 'x' } }, ack: { seq: 1, target: { name: 'x' } } }), 'malformed'],
    ['no target', raw({ ping: { seq: 1 } }), 'missing_field'],
    ['no from', raw({ from: null, ping: { seq: 1, target: { name: 'x' } } }), 'missing_field'],
    ['short key', raw({ from: { key: new Uint8Array(5) }, ping: { seq: 1, target: { name: 'x' } } }), 'absurd_value'],
    ['no version', raw({ protocolMin: 0, ping: { seq: 1, target: { name: 'x' } } }), 'protocol_invalid'],
    ['min > max', raw({ protocolMin: 3, protocolMax: 2, protocolCur: 2, ping: { seq: 1, target: { name: 'x' } } }), 'protocol_invalid'],
    ['future only', raw({ protocolMin: PROTOCOL_MAX + 1, protocolMax: PROTOCOL_MAX + 3, protocolCur: PROTOCOL_MAX + 1, ping: { seq: 1, target: { name: 'x' } } }), 'protocol_mismatch'],
    ['lamport beyond 2^53', raw({ lamport: '18446744073709551615', ping: { seq: 1, target: { name: 'x' } } }), 'absurd_value']
  ]
  for (const [name, frame, reason] of cases) {
    const r = decodeFrame(frame)
    t.equal(r.ok, false, name)
    if (!r.ok) t.equal(r.reason, reason, `${name}: ${r.detail}`)
  }
  const c = decodeCounters()
  t.equal(c.rejected.malformed, 2)
  t.equal(c.rejected.absurd_value, 2)
  t.equal(c.accepted, 0)
})

t.test('overlapping protocol ranges are accepted; unknown fields ignored; unknown gossip dropped', async t => {
  resetDecodeCounters()
  const r = decodeFrame(raw({
    protocolMin: 1, protocolMax: PROTOCOL_MAX + 5, protocolCur: PROTOCOL_MAX + 2,
    ping: { seq: 5, target: { name: 'x' } },
    unknownExtra: 77,
    gossip: [{ future: { x: 'from a newer peer' } }, { future: { x: 'again' } }]
  }))
  t.equal(r.ok, true)
  if (r.ok) {
    t.same(r.envelope.body, { type: 'ping', seq: 5, target: 'x' })
    t.equal(r.envelope.gossip.length, 0)
    t.equal(r.droppedGossip, 2)
  }
  t.equal(decodeCounters().unknownGossipDropped, 2)
})

t.test('limits: too many items, absurd values, sender check', async t => {
  const many = env({ type: 'gossip' }, Array.from({ length: 20 }, (_, i) => ({ type: 'left' as const, node: `h${i}`, incarnation: i })))
  const r1 = decodeFrame(encodeEnvelope(many), { maxGossipItems: 10 })
  t.equal(r1.ok ? 'ok' : r1.reason, 'too_many_items')
  const vms = env({ type: 'gossip' }, [{ type: 'report', report: report(KEY_B, 30) }])
  const r2 = decodeFrame(encodeEnvelope(vms), { maxVmsPerReport: 29 })
  t.equal(r2.ok ? 'ok' : r2.reason, 'too_many_items')
  const r3 = decodeFrame(encodeEnvelope(vms), { maxFrameBytes: 100 })
  t.equal(r3.ok ? 'ok' : r3.reason, 'oversized')
  const r4 = decodeFrame(encodeEnvelope(env({ type: 'gossip' })), { expectFrom: KEY_B })
  t.equal(r4.ok ? 'ok' : r4.reason, 'sender_mismatch')
  const r5 = decodeFrame(encodeEnvelope(env({ type: 'gossip' })), { expectFrom: KEY_A })
  t.equal(r5.ok, true)
  const zeroCores = env({ type: 'gossip' }, [{ type: 'report', report: { ...report(), capacity: { cpuCores: 0, cpuMipsPerCore: 1, memMiB: 1, netMbps: 0 } } }])
  const r6 = decodeFrame(encodeEnvelope(zeroCores))
  t.equal(r6.ok ? 'ok' : r6.reason, 'absurd_value')
})

t.test('fuzz: random bytes, truncations, bit flips, splices never throw', async t => {
  const seed = Number(process.env['SEED'] ?? Date.now() % 1_000_000)
  t.comment(`seed=${seed} (reproduce with SEED=${seed})`)
  const prng = new Prng(seed)
  const valid = [...ALL_BODIES.map(b => encodeEnvelope(env(b, ALL_GOSSIP))), encodeEnvelope(env({ type: 'gossip' }))]
  resetDecodeCounters()
  let runs = 0
  let accepted = 0
  const check = (frame: Uint8Array): void => {
    runs++
    let r: DecodeResult
    try {
      r = decodeFrame(frame)
    } catch (err) {
      t.fail(`threw on ${Buffer.from(frame).toString('hex').slice(0, 200)}: ${String(err)}`)
      return
    }
    if (r.ok) accepted++
    else if (!REJECT_REASONS.includes(r.reason) || typeof r.detail !== 'string') t.fail(`bad rejection ${JSON.stringify(r)}`)
  }
  for (let i = 0; i < 3000; i++) {
    const n = prng.int(300)
    const b = new Uint8Array(n)
    for (let j = 0; j < n; j++) b[j] = prng.int(256)
    check(b)
  }
  for (const v of valid) {
    for (let cut = 0; cut < v.byteLength; cut++) check(v.subarray(0, cut))
    for (let i = 0; i < 2000; i++) {
      const b = Uint8Array.from(v)
      const flips = 1 + prng.int(4)
      for (let f = 0; f < flips; f++) {
        const pos = prng.int(b.byteLength)
        b[pos] = b[pos]! ^ (1 << prng.int(8))
      }
      check(b)
    }
    for (let i = 0; i < 300; i++) {
      const other = valid[prng.int(valid.length)]!
      const a = prng.int(v.byteLength)
      const s = prng.int(other.byteLength)
      check(Uint8Array.from([...v.subarray(0, a), ...other.subarray(s)]))
    }
  }
  check(new Uint8Array(MAX_FRAME_BYTES_DEFAULT * 4))
  // Deep nesting of start-group tags must not blow the stack into an exception.
  check(new Uint8Array(60_000).fill(0x0b))
  const c = decodeCounters()
  const rejected = Object.values(c.rejected).reduce((s, x) => s + x, 0)
  t.equal(c.accepted + rejected, runs, 'every frame is counted once')
  t.equal(c.accepted, accepted)
  t.comment(`${runs} frames: ${accepted} accepted, rejected ${JSON.stringify(c.rejected)}`)
})

t.test('decoded messages are plain data', async t => {
  const e = ok(t, decodeFrame(encodeEnvelope(env(ALL_BODIES[4]!, ALL_GOSSIP))))
  t.same(JSON.parse(JSON.stringify(e)), e)
  t.equal(Object.getPrototypeOf(e), Object.prototype)
})

t.test('one frame size: the core builds frames up to the size the codec accepts by default', async t => {
  t.equal(defaultCoreConfig().frameBytesMax, DEFAULT_WIRE_LIMITS.maxFrameBytes, 'core.frameBytesMax default = the decoder\'s default limit')
  t.equal(MAX_FRAME_BYTES_DEFAULT, 256 * 1024)
  t.end()
})

