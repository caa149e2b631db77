/**
 * The hello of every mesh connection (proto/mesh/v1/hello.proto), with real transports on
 * 127.0.0.1. Goal: a member whose key is allowed but whose cluster secret differs never reaches
 * the agent (no connect event, no frame) and both ends say why; a setting marked `refuse` that
 * differs refuses the peer naming the field; other differing settings connect and are flagged.
 * The codec part: a hello round-trips, and a first frame that is an ordinary envelope is told apart.
 */
import t from 'tap'
import dgram from 'node:dgram'
import { createHash } from 'node:crypto'
import { createKeyPair, hostIdOf, type KeyPair } from '../../agent/adapters/identity.js'
import { hyperswarmTransport, type HyperswarmTransport, type SettingDigest } from '../../agent/adapters/hyperswarm-transport.js'
import { decodeHello, encodeEnvelope, encodeHello } from '../../agent/adapters/wire-codec.js'
import { PROTOCOL_MAX, PROTOCOL_MIN } from '../../agent/core/messages.js'
import type { TransportHandlers } from '../../agent/ports/transport.js'
import { silentLogger } from '../../agent/lib/logger.js'
import { poll } from '../lib/wait.js'
import { sleep } from '../lib/wait.js'

const HOST = '127.0.0.1'

async function freePort (): Promise<number> {
  const s = dgram.createSocket('udp4')
  await new Promise<void>((resolve, reject) => { s.once('error', reject); s.bind(0, HOST, () => resolve()) })
  const port = s.address().port
  await new Promise<void>(resolve => s.close(() => resolve()))
  return port
}

const digest = (s: string): Uint8Array => createHash('sha256').update(s).digest()

interface Node {
  id: string
  transport: HyperswarmTransport
  connects: string[]
  frames: string[]
  rejected: Array<{ remote: string | null, reason: string }>
}

async function pair (a: { secret: string, settings: SettingDigest[] }, b: { secret: string, settings: SettingDigest[] }): Promise<[Node, Node]> {
  const specs: Array<{ kp: KeyPair, port: number }> = [{ kp: createKeyPair(), port: await freePort() }, { kp: createKeyPair(), port: await freePort() }]
  const keys = specs.map(s => hostIdOf(s.kp))
  const nodes = [a, b].map((o, i): Node => {
    const spec = specs[i]!
    const transport = hyperswarmTransport({
      keyPair: spec.kp,
      clusterSecret: o.secret,
      host: HOST,
      port: spec.port,
      bootstrap: specs.filter(x => x !== spec).map(x => `${HOST}:${x.port}`),
      allowedKeys: keys,
      settings: o.settings,
      refusedRetryMs: 2000
    })({ logger: silentLogger() })
    return { id: keys[i]!, transport, connects: [], frames: [], rejected: [] }
  })
  for (const n of nodes) {
    const h: TransportHandlers = {
      onFrame: (from, f) => { n.frames.push(`${from}:${Buffer.from(f).toString()}`) },
      onPeerConnected: p => { n.connects.push(p) },
      onPeerDisconnected: () => {},
      onRejected: (remote, reason) => { n.rejected.push({ remote, reason }) }
    }
    await n.transport.start(h)
  }
  return [nodes[0]!, nodes[1]!]
}

const until = async (cond: () => boolean, timeoutMs: number): Promise<boolean> => (await poll(cond, timeoutMs, 20)) !== null

const SECRET = 'hello-test-secret-' + process.pid
const members = { field: 'cluster.members', digest: digest('m'), refuse: false }
const timing = { field: 'ha.timing', digest: digest('t1'), refuse: true }

t.test('an allowed key with another cluster secret is refused at its hello, both ways, and not called again in a loop', async t => {
  const [a, b] = await pair({ secret: SECRET, settings: [members] }, { secret: SECRET + '-other', settings: [members] })
  t.teardown(async () => { await Promise.all([a.transport.stop(), b.transport.stop()]) })
  t.ok(await until(() => a.rejected.length > 0 && b.rejected.length > 0, 20_000), 'each end refused the other')
  t.same(a.rejected[0], { remote: b.id, reason: 'secret_mismatch' })
  t.same(b.rejected[0], { remote: a.id, reason: 'secret_mismatch' })
  // Over a window in which an unchecked mesh forms many times over (about 1 s on loopback).
  await sleep(6000)
  t.same(a.connects, [], 'the agent never heard of a connection')
  t.same(b.connects, [])
  t.same(a.frames, [], 'nor got a frame')
  t.same(a.transport.connected(), [])
  const check = a.transport.peerChecks()
  t.equal(check.length, 1)
  t.match(check[0], { peer: b.id, refused: true, reason: 'secret_mismatch', fields: ['cluster.secret'] })
  t.ok(a.transport.stats().helloRefusals >= 1, `refusals counted (${a.transport.stats().helloRefusals})`)
  t.ok(a.transport.stats().helloRefusals <= 10, `and not retried in a loop: ${a.transport.stats().helloRefusals} in about 7 s with refusedRetryMs 2000`)
})

t.test('the same secret: connected; a differing setting marked refuse refuses the peer, naming it', async t => {
  const [a, b] = await pair({ secret: SECRET, settings: [members, timing] }, { secret: SECRET, settings: [members, { ...timing, digest: digest('t2') }] })
  t.teardown(async () => { await Promise.all([a.transport.stop(), b.transport.stop()]) })
  t.ok(await until(() => a.rejected.length > 0 && b.rejected.length > 0, 20_000), 'each end refused the other')
  t.same(a.rejected[0], { remote: b.id, reason: 'settings_mismatch' })
  t.match(a.transport.peerChecks(), [{ peer: b.id, refused: true, reason: 'settings_mismatch', fields: ['ha.timing'], detail: /ha\.timing must be the same on every member/ }])
  t.same(a.connects, [])
})

t.test('a differing setting not marked refuse connects and is flagged; a field only one side sends is not compared', async t => {
  const [a, b] = await pair(
    { secret: SECRET, settings: [members, { field: 'migration.rules', digest: digest('r1'), refuse: false }, timing] },
    { secret: SECRET, settings: [members, { field: 'migration.rules', digest: digest('r2'), refuse: false }] }
  )
  t.teardown(async () => { await Promise.all([a.transport.stop(), b.transport.stop()]) })
  t.ok(await until(() => a.connects.length === 1 && b.connects.length === 1, 20_000), 'connected')
  t.ok(a.transport.send(b.id, Buffer.from('x')), 'frames flow')
  t.ok(await until(() => b.frames.length === 1, 5000))
  t.same(b.frames, [`${a.id}:x`], 'the hello is not delivered as a frame; the first frame after it is')
  t.match(a.transport.peerChecks(), [{ peer: b.id, refused: false, reason: 'settings_differ', fields: ['migration.rules'] }])
  t.match(b.transport.peerChecks(), [{ peer: a.id, refused: false, fields: ['migration.rules'] }])
  t.same(a.rejected, [])
})

t.test('codec: a hello round-trips; an ordinary envelope first is not a hello', async t => {
  const from = 'ab'.repeat(32)
  const proof = digest('p')
  const frame = encodeHello({ from, proof, settings: [{ field: 'ha.timing', digest: digest('x') }] })
  const r = decodeHello(frame, from)
  t.ok(r.ok)
  if (r.ok) {
    t.same(Buffer.from(r.hello.proof), Buffer.from(proof))
    t.same(r.hello.settings.map(s => [s.field, Buffer.from(s.digest).toString('hex')]), [['ha.timing', Buffer.from(digest('x')).toString('hex')]])
  }
  t.match(decodeHello(frame, 'cd'.repeat(32)), { ok: false, reason: 'sender_mismatch' }, 'from must be the connection\'s key')
  const ping = encodeEnvelope({ protocolMin: PROTOCOL_MIN, protocolMax: PROTOCOL_MAX, protocolCur: PROTOCOL_MAX, from, incarnation: 1, lamport: 1, body: { type: 'ping', seq: 1, target: from }, gossip: [] } as never)
  t.match(decodeHello(ping, from), { ok: false, reason: 'not_hello' })
  t.match(decodeHello(new Uint8Array([1, 2, 3]), from), { ok: false })
})

t.test('a member that says nothing is closed after helloTimeoutMs and called again, not refused', async t => {
  // The silent member: a raw Hyperswarm with an allowed key that accepts connections and never
  // writes (what a member looks like whose side holds the connection back, or that is stalled).
  const { default: Hyperswarm } = await import('hyperswarm')
  const { default: HyperDHT } = await import('hyperdht')
  const silentKp = createKeyPair()
  const silentId = hostIdOf(silentKp)
  const kp = createKeyPair()
  const [port, silentPort] = [await freePort(), await freePort()]
  const silentDht = HyperDHT.bootstrapper(silentPort, HOST, { host: HOST, bootstrap: [`${HOST}:${port}`], keyPair: { publicKey: Buffer.from(silentKp.publicKey), secretKey: Buffer.from(silentKp.secretKey) } })
  await silentDht.ready()
  const silent = new Hyperswarm({ dht: silentDht, keyPair: { publicKey: Buffer.from(silentKp.publicKey), secretKey: Buffer.from(silentKp.secretKey) } })
  let incoming = 0
  silent.on('connection', (conn: { on: (e: string, f: () => void) => void }) => { incoming++; conn.on('error', () => {}) })
  await silent.listen()
  const transport = hyperswarmTransport({
    keyPair: kp, clusterSecret: SECRET, host: HOST, port, bootstrap: [`${HOST}:${silentPort}`],
    allowedKeys: [hostIdOf(kp), silentId], addresses: { [silentId]: `${HOST}:${silentPort}` }, helloTimeoutMs: 800
  })({ logger: silentLogger() })
  const connects: string[] = []
  await transport.start({ onFrame: () => {}, onPeerConnected: p => { connects.push(p) }, onPeerDisconnected: () => {}, onRejected: () => {} })
  t.teardown(async () => { await transport.stop(); await silent.destroy() })
  t.ok(await until(() => transport.stats().helloTimeouts >= 1, 20_000), `the silent member's connection was closed for its missing hello (${transport.stats().helloTimeouts})`)
  const check = transport.peerChecks().find(c => c.peer === silentId)
  t.match(check, { refused: false, reason: 'hello_timeout' }, 'listed as a hello timeout, not a refusal')
  const seen = incoming
  t.ok(await until(() => incoming > seen, 10_000), `and called again well within refusedRetryMs (${incoming} connections reached it)`)
  t.same(connects, [], 'never reported as connected')
})
