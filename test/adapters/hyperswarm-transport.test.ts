/**
 * Hyperswarm transport on 127.0.0.1, several agents in one process, no outside help.
 * Goal: the mesh forms by itself from the agents' own DHT nodes, frames flow both ways, an
 * outsider is refused, oversized frames and broken lengths are handled as designed, and stop()
 * leaves nothing running (the tap process must exit).
 * Method: free UDP ports found by binding port 0; each agent's seeds are the others; deadlines
 * are generous because the machine is shared.
 */
import t from 'tap'
import dgram from 'node:dgram'
import { createKeyPair, hostIdOf, type KeyPair } from '../../agent/adapters/identity.js'
import { hyperswarmTransport, type HyperswarmTransport } from '../../agent/adapters/hyperswarm-transport.js'
import type { TransportHandlers } from '../../agent/ports/transport.js'
import { silentLogger } from '../../agent/lib/logger.js'
import { until as waitUntil } from '../lib/wait.js'
import { sleep } from '../lib/wait.js'

const HOST = '127.0.0.1'
const SECRET = 'test-cluster-secret-' + process.pid

async function freePort (): Promise<number> {
  const s = dgram.createSocket('udp4')
  await new Promise<void>((resolve, reject) => { s.once('error', reject); s.bind(0, HOST, () => resolve()) })
  const port = s.address().port
  await new Promise<void>(resolve => s.close(() => resolve()))
  return port
}

interface Agent {
  id: string
  kp: KeyPair
  port: number
  transport: HyperswarmTransport
  frames: Array<{ from: string, frame: Uint8Array }>
  connects: string[]
  disconnects: string[]
  rejected: Array<{ remote: string | null, reason: string }>
  /** Called on every frame after it is recorded (latency measurement). */
  hook?: (from: string, frame: Uint8Array) => void
}

interface AgentOpts { allowed?: string[], maxFrameBytes?: number, maxDiscardBytes?: number }

function handlersOf (a: Omit<Agent, 'transport'>): TransportHandlers {
  return {
    onFrame: (from, frame) => { a.frames.push({ from, frame }); a.hook?.(from, frame) },
    onPeerConnected: p => { a.connects.push(p) },
    onPeerDisconnected: p => { a.disconnects.push(p) },
    onRejected: (remote, reason) => { a.rejected.push({ remote, reason }) }
  }
}

async function makeAgents (n: number): Promise<Array<{ kp: KeyPair, port: number }>> {
  const out = []
  for (let i = 0; i < n; i++) out.push({ kp: createKeyPair(), port: await freePort() })
  return out
}

function agent (spec: { kp: KeyPair, port: number }, all: Array<{ kp: KeyPair, port: number }>, opts: AgentOpts = {}): Agent {
  const base = { id: hostIdOf(spec.kp), kp: spec.kp, port: spec.port, frames: [], connects: [], disconnects: [], rejected: [] }
  const transport = hyperswarmTransport({
    keyPair: spec.kp,
    clusterSecret: SECRET,
    host: HOST,
    port: spec.port,
    bootstrap: all.filter(o => o !== spec).map(o => `${HOST}:${o.port}`),
    allowedKeys: opts.allowed ?? all.map(o => hostIdOf(o.kp)),
    ...(opts.maxFrameBytes !== undefined ? { maxFrameBytes: opts.maxFrameBytes } : {}),
    ...(opts.maxDiscardBytes !== undefined ? { maxDiscardBytes: opts.maxDiscardBytes } : {})
  })({ logger: silentLogger() })
  return { ...base, transport }
}

const until = async (what: string, cond: () => boolean, timeoutMs: number): Promise<number> => await waitUntil(what, cond, timeoutMs, { pollMs: 20 })

const fullMesh = (agents: Agent[]): boolean =>
  agents.every(a => agents.every(b => a === b || a.transport.connected().includes(b.id)))

t.test('four agents form a full mesh by themselves and exchange frames both ways', async t => {
  const specs = await makeAgents(4)
  const agents = specs.map(s => agent(s, specs))
  t.teardown(async () => { await Promise.all(agents.map(a => a.transport.stop())) })
  const t0 = Date.now()
  await Promise.all(agents.map(a => a.transport.start(handlersOf(a))))
  const started = Date.now() - t0
  const formed = await until('full mesh', () => fullMesh(agents), 30_000)
  t.comment(`start() resolved after ${started} ms; full mesh ${started + formed} ms after start`)
  t.pass('full mesh')
  // start() is idempotent
  await agents[0]!.transport.start(handlersOf(agents[0]!))

  for (const a of agents) {
    for (const b of agents) {
      if (a !== b) t.ok(a.transport.send(b.id, new TextEncoder().encode(`${a.id}->${b.id}`)), 'send accepted')
    }
  }
  await until('all frames', () => agents.every(a => a.frames.length >= 3), 10_000)
  for (const b of agents) {
    const got = b.frames.map(f => `${f.from}:${new TextDecoder().decode(f.frame)}`).sort()
    const want = agents.filter(a => a !== b).map(a => `${a.id}:${a.id}->${b.id}`).sort()
    t.same(got, want, `agent ${b.id.slice(0, 8)} got one frame from each peer, with the right sender`)
    t.same(b.connects.slice().sort(), agents.filter(a => a !== b).map(a => a.id).sort(), 'one connect event per peer')
  }

  // Datagrams: whole frames up to datagramMaxBytes, from the authenticated sender; larger ones are refused.
  const [a, b] = [agents[0]!, agents[1]!]
  const before = b.frames.length
  const dg = new Uint8Array(a.transport.datagramMaxBytes ?? 0).fill(9)
  dg[0] = 42
  let sent = 0
  for (let i = 0; i < 5; i++) if (a.transport.sendDatagram?.(b.id, dg) === true) sent++
  t.equal(sent, 5, `sendDatagram accepts a ${dg.byteLength}-byte frame`)
  await until('a datagram', () => b.frames.length > before, 10_000)
  const got = b.frames.slice(before)
  t.ok(got.every(f => f.from === a.id && f.frame.byteLength === dg.byteLength && f.frame[0] === 42 && f.frame[dg.byteLength - 1] === 9), `${got.length} of 5 datagrams arrived whole, from their sender (loopback may drop some)`)
  t.equal(a.transport.sendDatagram?.(b.id, new Uint8Array(dg.byteLength + 1)), false, 'a frame over datagramMaxBytes is refused (it goes on the stream)')
  t.equal(a.transport.sendDatagram?.('ff'.repeat(32), Uint8Array.of(1)), false, 'no datagram to an unknown peer')

  // Round trip latency over the mesh, for the record.
  const rtts: number[] = []
  b.hook = (from, frame) => { b.transport.send(from, frame) } // echo
  for (let i = 0; i < 200; i++) {
    const s = process.hrtime.bigint()
    await new Promise<void>(resolve => {
      a.hook = () => { resolve() }
      a.transport.send(b.id, Uint8Array.of(1, i))
    })
    rtts.push(Number(process.hrtime.bigint() - s) / 1e6)
  }
  delete a.hook
  delete b.hook
  rtts.sort((x, y) => x - y)
  t.comment(`round trip in one process: p50 ${rtts[100]!.toFixed(2)} ms, p99 ${rtts[198]!.toFixed(2)} ms`)

  t.equal(a.transport.send('ff'.repeat(32), Uint8Array.of(1)), false, 'send to an unknown peer returns false')
  t.equal(a.transport.send(b.id, new Uint8Array(0)), false, 'an empty frame is refused')
  t.equal(a.transport.stats().sendDropped.noPeer, 1)

  // A graceful stop is seen at once by the others, and stop() is idempotent.
  const d = agents[3]!
  await Promise.all([d.transport.stop(), d.transport.stop()])
  const gone = await until('disconnect seen', () => agents.slice(0, 3).every(x => x.disconnects.includes(d.id)), 10_000)
  t.comment(`a stopped agent is seen gone after ${gone} ms`)
  t.equal(d.transport.send(a.id, Uint8Array.of(1)), false, 'send after stop returns false')
  await t.rejects(d.transport.start(handlersOf(d)), { code: 'TRANSPORT_STOPPED' }, 'no restart after stop')
  t.same(d.transport.connected(), [])
})

t.test('an agent whose key is not in allowedKeys is refused, and onRejected hears of it', async t => {
  const specs = await makeAgents(3)
  const members = specs.slice(0, 2)
  const intruderSpec = specs[2]!
  const agents = members.map(s => agent(s, specs, { allowed: members.map(m => hostIdOf(m.kp)) }))
  // The intruder knows the secret and the seeds, and would accept everyone.
  const intruder = agent(intruderSpec, specs, { allowed: specs.map(s => hostIdOf(s.kp)) })
  const all = [...agents, intruder]
  t.teardown(async () => { await Promise.all(all.map(a => a.transport.stop())) })
  await Promise.all(all.map(a => a.transport.start(handlersOf(a))))
  await until('members meshed', () => fullMesh(agents), 30_000)
  const ms = await until('rejection', () => agents.some(a => a.rejected.some(r => r.remote === intruder.id)), 20_000)
  t.comment(`intruder refused within ${ms} ms of the members meshing`)
  // Give it a little more time to try.
  await sleep(1500)
  for (const a of agents) {
    t.notOk(a.transport.connected().includes(intruder.id), 'member has no connection to the intruder')
    t.notOk(a.connects.includes(intruder.id), 'member never reported the intruder connected')
    t.notOk(a.frames.some(f => f.from === intruder.id))
  }
  t.equal(intruder.transport.send(agents[0]!.id, Uint8Array.of(1)), false, 'the intruder cannot send')
  const reasons = agents.flatMap(a => a.rejected.map(r => r.reason))
  t.ok(reasons.every(r => r === 'not_allowed'), 'reason is not_allowed')
  t.ok(agents.reduce((s, a) => s + a.transport.stats().rejectedPeers, 0) >= 1, 'counted')
})

t.test('frame size limits: oversized frames are skipped, broken lengths disconnect', async t => {
  const specs = await makeAgents(2)
  // The sender allows bigger frames than the receiver (a misconfigured or newer peer).
  const big = agent(specs[0]!, specs, { maxFrameBytes: 4 * 1024 * 1024, maxDiscardBytes: 4 * 1024 * 1024 })
  const small = agent(specs[1]!, specs, { maxFrameBytes: 64 * 1024, maxDiscardBytes: 1024 * 1024 })
  t.teardown(async () => { await Promise.all([big.transport.stop(), small.transport.stop()]) })
  await Promise.all([big, small].map(a => a.transport.start(handlersOf(a))))
  await until('pair connected', () => fullMesh([big, small]), 30_000)

  t.equal(small.transport.send(big.id, new Uint8Array(64 * 1024 + 1)), false, 'sending over our own limit is refused')
  t.equal(small.transport.stats().sendDropped.oversized, 1)

  // 100 KiB: over the receiver's limit, under its discard limit: skipped, connection survives.
  t.ok(big.transport.send(small.id, new Uint8Array(100 * 1024).fill(7)))
  t.ok(big.transport.send(small.id, Uint8Array.of(1, 2, 3)))
  t.ok(big.transport.send(small.id, new Uint8Array(64 * 1024).fill(9)), 'exactly at the limit')
  await until('frames after the oversized one', () => small.frames.length >= 2, 10_000)
  t.same(small.frames.map(f => f.frame.byteLength), [3, 64 * 1024], 'oversized frame dropped, the next ones delivered')
  t.equal(small.transport.stats().oversizedFramesSkipped, 1)
  t.same(small.disconnects, [], 'connection survived')

  // 2 MiB: beyond the receiver's discard limit: a broken peer, disconnected without buffering.
  small.frames.length = 0
  t.ok(big.transport.send(small.id, new Uint8Array(2 * 1024 * 1024)))
  await until('disconnect', () => small.disconnects.includes(big.id), 10_000)
  t.equal(small.transport.stats().badLengthDisconnects, 1)
  t.same(small.frames, [], 'nothing delivered')
  const back = await until('reconnect', () => fullMesh([big, small]), 30_000)
  t.comment(`reconnected ${back} ms after the disconnect`)
  t.ok(big.transport.send(small.id, Uint8Array.of(4)))
  await until('frame after reconnect', () => small.frames.length >= 1, 10_000)
  t.pass('frames flow again after reconnecting')
})

t.test('an agent alone, with no seeds, starts and stops cleanly', async t => {
  const [spec] = await makeAgents(1)
  const solo = agent(spec!, [spec!])
  await solo.transport.start(handlersOf(solo))
  t.match(solo.transport.address(), { host: HOST, port: spec!.port })
  t.same(solo.transport.connected(), [])
  await solo.transport.stop()
  await solo.transport.stop()
  t.equal(solo.transport.address(), null)
})

t.test('a port already in use fails start() with an error, and stop() still resolves', async t => {
  const [spec] = await makeAgents(1)
  const holder = dgram.createSocket('udp4')
  await new Promise<void>(resolve => holder.bind(spec!.port, HOST, () => resolve()))
  t.teardown(() => new Promise<void>(resolve => holder.close(() => resolve())))
  const a = agent(spec!, [spec!])
  await t.rejects(a.transport.start(handlersOf(a)))
  await a.transport.stop()
})
