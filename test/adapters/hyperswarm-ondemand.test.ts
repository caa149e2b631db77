/**
 * Hyperswarm transport with a bounded active view (onDemand), two real agents on 127.0.0.1.
 * Goal: dials to members outside the view that do not answer (a dead seed a join keeps trying,
 * a member too busy to answer) never take the dial slots the view needs: a member that enters
 * the view is connected within seconds while such dials hang, and at most maxOnDemandDials
 * of them run at once, the others waiting with their frames held.
 * Method: ten "silent" members are allowed keys whose DHT address is a UDP socket that swallows
 * every packet, so a dial to one hangs until Hyperswarm gives up (many seconds). Agent A sends a
 * frame to each of them, then to B (outside its view), then puts B in its view.
 */
import t, { type Test } from 'tap'
import dgram from 'node:dgram'
import { createKeyPair, hostIdOf, type KeyPair } from '../../agent/adapters/identity.js'
import { hyperswarmTransport, type HyperswarmTransport, type HyperswarmTransportInit } from '../../agent/adapters/hyperswarm-transport.js'
import type { TransportHandlers } from '../../agent/ports/transport.js'
import { silentLogger } from '../../agent/lib/logger.js'
import { until } from '../lib/wait.js'

const HOST = '127.0.0.1'
const SECRET = 'test-ondemand-secret-' + process.pid

async function boundSocket (): Promise<dgram.Socket> {
  const s = dgram.createSocket('udp4')
  await new Promise<void>((resolve, reject) => { s.once('error', reject); s.bind(0, HOST, () => resolve()) })
  return s
}

async function freePort (): Promise<number> {
  const s = await boundSocket()
  const port = s.address().port
  await new Promise<void>(resolve => s.close(() => resolve()))
  return port
}

/**
 * n real transports on 127.0.0.1 that bootstrap from each other, stopped at teardown. Their
 * members are themselves and `others` (key -> address); `init` is added to each one's settings.
 */
async function localTransports (t: Test, n: number, others: Record<string, string>, init: Partial<HyperswarmTransportInit>): Promise<{ ids: string[], addr: (i: number) => string, transports: HyperswarmTransport[] }> {
  const specs: Array<{ kp: KeyPair, port: number }> = []
  for (let i = 0; i < n; i++) specs.push({ kp: createKeyPair(), port: await freePort() })
  const ids = specs.map(s => hostIdOf(s.kp))
  const addr = (i: number): string => `${HOST}:${specs[i]!.port}`
  const addresses: Record<string, string> = { ...Object.fromEntries(ids.map((k, i) => [k, addr(i)])), ...others }
  const transports = specs.map(spec => hyperswarmTransport({
    keyPair: spec.kp,
    clusterSecret: SECRET,
    host: HOST,
    port: spec.port,
    bootstrap: specs.filter(o => o !== spec).map(o => `${HOST}:${o.port}`),
    allowedKeys: Object.keys(addresses),
    addresses,
    ...init
  })({ logger: silentLogger() }))
  t.teardown(async () => { await Promise.all(transports.map(x => x.stop())) })
  return { ids, addr, transports }
}

t.test('dials to silent members outside the view do not hold up the view, and at most maxOnDemandDials run at once', async t => {
  const silent: dgram.Socket[] = []
  for (let i = 0; i < 10; i++) silent.push(await boundSocket()) // swallow everything: a dial to them hangs
  t.teardown(() => { for (const s of silent) s.close() })
  const silentKeys = silent.map(() => hostIdOf(createKeyPair()))
  const silentAddresses = Object.fromEntries(silentKeys.map((k, i) => [k, `${HOST}:${silent[i]!.address().port}`]))
  const { ids, transports } = await localTransports(t, 2, silentAddresses, { onDemand: true, maxOnDemandDials: 3, pendingTtlMs: 60_000 })
  const got: string[][] = [[], []]
  const handlers = (i: number): TransportHandlers => ({
    onFrame: (from, frame) => { got[i]!.push(`${from}:${new TextDecoder().decode(frame)}`) },
    onPeerConnected: () => {},
    onPeerDisconnected: () => {},
    onRejected: () => {}
  })
  await Promise.all(transports.map(async (x, i) => { await x.start(handlers(i)) }))
  const [a, b] = transports as [HyperswarmTransport, HyperswarmTransport]
  a.setActivePeers([])
  b.setActivePeers([])

  for (const k of silentKeys) t.ok(a.send(k, new TextEncoder().encode('join')), 'a frame for a silent member is held')
  const st = a.stats()
  t.equal(st.onDemandConnects, silentKeys.length, 'one on-demand connection asked for per member')
  t.equal(st.onDemandDialsQueued, silentKeys.length - 3, 'all but maxOnDemandDials wait for a dial to finish')
  t.ok(a.send(ids[1]!, new TextEncoder().encode('held')), 'a frame for B (outside the view) is held too')
  t.equal(a.stats().onDemandDialsQueued, silentKeys.length - 2, 'and waits behind the silent ones')
  t.ok(a.stats().dialsInFlight <= 3, `dials in flight: ${a.stats().dialsInFlight}, at most maxOnDemandDials`)

  // B enters A's view: it is dialled at once, whatever the silent dials are doing.
  const t0 = Date.now()
  a.setActivePeers([ids[1]!])
  await until('B connected', () => a.connected().includes(ids[1]!), 15_000, { pollMs: 20 })
  const ms = Date.now() - t0
  t.comment(`B connected ${ms} ms after entering the view, with ${a.stats().dialsInFlight} silent dials in flight`)
  await until('the held frame', () => got[1]!.includes(`${ids[0]!}:held`), 5000, { pollMs: 20 })
  t.pass('the frame held for B arrived once B was connected')
  t.notOk(silentKeys.some(k => a.connected().includes(k)), 'no silent member connected')
  t.ok(a.stats().dialsInFlight <= 3 + 1, `dials in flight stay bounded (${a.stats().dialsInFlight})`)
})

t.test('onDemandAbove: a full mesh while the cluster is no larger than the view, on demand once an agreed change makes it larger, a full mesh again when it shrinks', async t => {
  // Three real transports, onDemandAbove 3. Members A, B, C: a full mesh (each connects to the
  // other two). A fourth member D is added (a key whose address swallows every packet): every
  // transport switches to connections on demand; with views A: [B], B: [A, C], C: [B], the idle
  // A-C connection is closed and not rebuilt. D is removed again: a full mesh, A and C reconnect.
  const silent = await boundSocket()
  t.teardown(() => { silent.close() })
  const dKey = hostIdOf(createKeyPair())
  const { ids, addr, transports } = await localTransports(t, 3, {}, { onDemandAbove: 3, idleCloseMs: 1500 })
  const noop: TransportHandlers = { onFrame: () => {}, onPeerConnected: () => {}, onPeerDisconnected: () => {}, onRejected: () => {} }
  await Promise.all(transports.map(async x => { await x.start(noop) }))
  const [a, b, c] = transports as [HyperswarmTransport, HyperswarmTransport, HyperswarmTransport]
  const [A, B, C] = ids as [string, string, string]
  // The core names its view in a full mesh too; the transport keeps it for a switch.
  a.setActivePeers([B])
  b.setActivePeers([A, C])
  c.setActivePeers([B])
  t.equal(a.connections().active, null, 'three members, onDemandAbove 3: a full mesh')
  await until('a full mesh of three', () => a.connected().length === 2 && c.connected().length === 2, 30_000, { pollMs: 50 })
  t.pass('A is connected to B and to C (outside its view)')

  const members = (withD: boolean): Array<{ key: string, address: string, name: string }> => [
    ...ids.map((k, i) => ({ key: k, address: addr(i), name: `n${i}` })),
    ...(withD ? [{ key: dKey, address: `${HOST}:${silent.address().port}`, name: 'd' }] : [])
  ]
  for (const x of transports) x.setMembers(members(true), () => [])
  t.equal(a.connections().active, 1, 'four members: on demand, with the view the core gave before (B)')
  t.equal(a.stats().modeSwitches, 1, 'one switch counted')
  await until('the idle A-C connection closed', () => !a.connected().includes(C) && !c.connected().includes(A), 20_000, { pollMs: 50 })
  t.ok(a.connected().includes(B), 'A keeps its view member B')
  await new Promise(resolve => setTimeout(resolve, 4000))
  t.notOk(a.connected().includes(C), 'A-C not rebuilt 4 s later (neither holds the other in its view)')
  t.ok(a.send(C, new TextEncoder().encode('x')), 'a frame for C outside the view is held while a connection opens on demand')

  for (const x of transports) x.setMembers(members(false), () => [])
  t.equal(a.connections().active, null, 'three members again: a full mesh')
  t.equal(a.stats().modeSwitches, 2)
  await until('A and C connected again', () => a.connected().includes(C) && c.connected().includes(A), 30_000, { pollMs: 50 })
  await new Promise(resolve => setTimeout(resolve, 3000))
  t.ok(a.connected().includes(C) && a.connected().includes(B), 'A keeps both (no idle close in a full mesh)')
})

t.test('on demand, a view member missing does not renew the topic every second: nobody looks the topic up there', async t => {
  // A silent member (its address swallows every packet) in the view of A (on demand) and of B (a
  // full mesh): B renews its topic every 0.5-1 s while the member is missing, A does not.
  const silent = await boundSocket()
  t.teardown(() => { silent.close() })
  const sKey = hostIdOf(createKeyPair())
  const others = { [sKey]: `${HOST}:${silent.address().port}` }
  const onDemand = await localTransports(t, 2, others, { onDemand: true })
  const fullMesh = await localTransports(t, 2, others, {})
  const noop: TransportHandlers = { onFrame: () => {}, onPeerConnected: () => {}, onPeerDisconnected: () => {}, onRejected: () => {} }
  for (const x of [...onDemand.transports, ...fullMesh.transports]) await x.start(noop)
  const a = onDemand.transports[0]!
  const b = fullMesh.transports[0]!
  a.setActivePeers([onDemand.ids[1]!, sKey])
  await until('the on-demand pair connected', () => a.connected().includes(onDemand.ids[1]!), 15_000, { pollMs: 50 })
  const a0 = a.stats().discoveryRefreshes
  const b0 = b.stats().discoveryRefreshes
  await new Promise(resolve => setTimeout(resolve, 4000))
  const da = a.stats().discoveryRefreshes - a0
  const db = b.stats().discoveryRefreshes - b0
  t.equal(da, 0, `on demand: no topic renewal in 4 s with a view member missing (${da})`)
  t.ok(db >= 2, `full mesh: the topic renewed ${db} times in the same 4 s (the member is missing)`)
})

t.test('a member outside the view is called at its own DHT node, with no DHT search, and the call goes on as soon as it answers', async t => {
  // directSearchDelayMs 60 s: the call's stand-in search must end when the member answers, not at
  // the delay (a stand-in that only waited held every on-demand connection for the whole delay).
  const { ids, transports } = await localTransports(t, 3, {}, { onDemand: true, directSearchDelayMs: 60_000 })
  const got: string[] = []
  const handlers = (i: number): TransportHandlers => ({
    onFrame: (from, frame) => { if (i === 2) got.push(`${from}:${new TextDecoder().decode(frame)}`) },
    onPeerConnected: () => {},
    onPeerDisconnected: () => {},
    onRejected: () => {}
  })
  await Promise.all(transports.map(async (x, i) => { await x.start(handlers(i)) }))
  const [a, b, c] = transports as [HyperswarmTransport, HyperswarmTransport, HyperswarmTransport]
  a.setActivePeers([])
  b.setActivePeers([])
  c.setActivePeers([])
  const t0 = Date.now()
  t.ok(a.send(ids[2]!, new TextEncoder().encode('direct')), 'a frame for C (outside the view) is held while C is called')
  await until('the frame at C', () => got.includes(`${ids[0]!}:direct`), 20_000, { pollMs: 20 })
  t.comment(`delivered ${Date.now() - t0} ms after the send`)
  t.ok(a.stats().directCalls >= 1, `the call went to C's own DHT node (${a.stats().directCalls} direct calls)`)
  t.equal(b.stats().directCalls, 0, 'B called nobody')
})

t.test("hyperdht's own searches with a member's address (the announcer's: no session) get the real query, never the stand-in", async t => {
  // The announcer renews this node's records with findPeer(target, { nodes: its closest }) and
  // reads closestReplies and finished(); a stand-in there crashed the agent (TypeError in pickBest)
  // once its closest nodes had shrunk to one member's address.
  const { ids, addr, transports } = await localTransports(t, 2, {}, { onDemand: true, directSearchDelayMs: 60_000 })
  const noop: TransportHandlers = { onFrame: () => {}, onPeerConnected: () => {}, onPeerDisconnected: () => {}, onRejected: () => {} }
  for (const x of transports) await x.start(noop)
  const [a] = transports as [HyperswarmTransport]
  const dht = (a as unknown as { swarm: { dht: { findPeer: (k: Buffer, o: object) => { finished?: () => Promise<void>, closestReplies?: unknown[], destroy: () => void } } } }).swarm.dht
  const [host, port] = addr(1).split(':') as [string, string]
  const before = a.stats().directCalls
  const q = dht.findPeer(Buffer.from(ids[1]!, 'hex'), { hash: false, nodes: [{ host, port: Number(port) }] })
  t.type(q.finished, 'function', 'the announcer gets a real query (finished())')
  await q.finished!()
  t.ok(Array.isArray(q.closestReplies), `with closestReplies (${q.closestReplies?.length ?? 'none'})`)
  t.equal(a.stats().directCalls, before, 'no direct call counted')
  const c = dht.findPeer(Buffer.from(ids[1]!, 'hex'), { hash: false, session: {}, nodes: [{ host, port: Number(port) }], retries: 3 })
  t.equal(c.finished, undefined, "a connect's search (with a session) is the stand-in")
  c.destroy()
  t.equal(a.stats().directCalls, before + 1, 'and counted as a direct call')
})
