/**
 * Goal: the runtime applies a Ready in order (persist before send), turns frames into inputs
 * through the codec, and survives garbage from a peer. Method: the real AgentCore, the real
 * codec and the in-memory store; a recording transport stands in for the network.
 */
import t from 'tap'
import { AgentCore } from '../../agent/core/agent-core.js'
import { localTestCoreConfig } from '../../agent/core/config.js'
import { memoryStore } from '../../agent/adapters/memory-store.js'
import { decodeFrame, encodeEnvelope } from '../../agent/adapters/wire-codec.js'
import { silentLogger } from '../../agent/lib/logger.js'
import { Runtime } from '../../agent/runtime/runtime.js'
import type { Transport, TransportHandlers } from '../../agent/ports/transport.js'
import type { PersistOp } from '../../agent/core/effects.js'
import type { Input } from '../../agent/core/index.js'
import { sleep } from '../lib/wait.js'

function setup () {
  const log: string[] = []
  let handlers: TransportHandlers | null = null
  const transport: Transport = {
    self: 'aa',
    start: async h => { handlers = h },
    send: (to, frame) => { log.push(`send ${to} ${decodeFrame(frame).ok ? 'valid' : 'INVALID'}`); return true },
    connected: () => [],
    stop: async () => {}
  }
  const inner = memoryStore()({ logger: silentLogger() })
  const store = {
    ...inner,
    open: async () => await inner.open(),
    get: inner.get.bind(inner),
    entries: inner.entries.bind(inner),
    close: async () => await inner.close(),
    batch: async (ops: PersistOp[]) => {
      log.push(`persist ${ops.length}`)
      await sleep(5) // a slow disk must still come first
      await inner.batch(ops)
    }
  }
  const core = new AgentCore({
    self: 'aa', name: 'a', addr: '127.0.0.1:1', config: localTestCoreConfig(), seed: 1,
    seeds: [{ id: 'bb', name: 'b', addr: '127.0.0.1:2' }]
  })
  const runtime = new Runtime({ tickMs: 10, sampleIntervalMs: 1000 }, {
    core, transport, store, logger: silentLogger(),
    codec: { encode: encodeEnvelope, decode: (f, from) => decodeFrame(f, { expectFrom: from }) },
    sample: async () => ({ cpuUtil: 0.5, memUsedMiB: 100, netMbps: 0, capacity: { cpuCores: 4, cpuMipsPerCore: 1000, memMiB: 1000, netMbps: 1000 }, vms: [] })
  })
  return { log, runtime, core, store: inner, handlers: () => handlers as TransportHandlers | null }
}

t.test('persist comes before send, and the incarnation is durable', async t => {
  const { log, runtime, store } = setup()
  await store.open()
  await runtime.start()
  await sleep(300)
  await runtime.stop()
  const firstPersist = log.findIndex(l => l.startsWith('persist'))
  const firstSend = log.findIndex(l => l.startsWith('send'))
  t.ok(firstPersist >= 0, 'something was persisted')
  t.ok(firstSend >= 0, 'something was sent (join to the seed)')
  t.ok(firstPersist < firstSend, `first persist (#${firstPersist}) precedes first send (#${firstSend})`)
  t.notOk(log.some(l => l.endsWith('INVALID')), 'every frame sent decodes')
  t.equal(await store.get('core/incarnation'), 1, 'incarnation 1 is in the store')
})

t.test('garbage frames are rejected and counted, never thrown', async t => {
  const { runtime, core, store, handlers } = setup()
  await store.open()
  await runtime.start()
  const h = handlers()
  t.ok(h !== null, 'transport started')
  const junk = [new Uint8Array(0), new Uint8Array([1, 2, 3]), new Uint8Array(70_000).fill(7), Uint8Array.from({ length: 300 }, (_, i) => (i * 37) & 255)]
  for (const f of junk) h!.onFrame('bb', f)
  // A valid frame from b that claims to come from c: sender mismatch.
  const forged = encodeEnvelope({ protocolMin: 1, protocolMax: 1, protocolCur: 1, from: 'cc', incarnation: 1, lamport: 1, body: { type: 'gossip' }, gossip: [] })
  h!.onFrame('bb', forged)
  await sleep(100)
  t.equal(runtime.stats.framesRejected, junk.length + 1, 'each bad frame counted at the edge')
  t.equal(core.status().counters.framesRejected, junk.length + 1, 'and reported to the core')
  await runtime.stop()
})

t.test('an idle loop sleeps until the core has something due, and still hands it every tick', async t => {
  const { log, runtime, core, store } = setup()
  await store.open()
  await runtime.start()
  await sleep(1000)
  const ticks = runtime.stats.ticks
  const wakeups = runtime.stats.tickWakeups
  const coreTicks = core.now
  await runtime.stop()
  // 1 s of 10 ms ticks. Alone with an unreachable seed, the core's only timers are the join
  // retry (10 ticks), reports (20), push-pull and scheduling (50): about 30 wake-ups, not 100
  // (a loaded machine gives fewer ticks in the second, not fewer timers: at most half of them).
  t.ok(ticks >= 80 && ticks <= 101, `the core had a tick per 10 ms of wall time (${ticks})`)
  t.equal(coreTicks, ticks, 'every tick reached the core')
  t.ok(wakeups <= ticks / 2, `the loop woke ${wakeups} times for ${ticks} ticks`)
  const joins = log.filter(l => l.startsWith('send bb')).length
  t.ok(joins >= 6 && joins <= 11, `join retries to the seed kept their 100 ms cadence (${joins} in 1 s)`)
})

t.test('a long planned sleep is not a stall: every tick is handed over, none skipped', async t => {
  // The runtime's clock alone: a core that has something due only every 40 ticks (4x the
  // catch-up bound), so each wake-up hands over 40 ticks at once.
  let now = 0
  let ticked = 0
  const core = {
    get now () { return now },
    nextDueTick: () => now + 40 - (now % 40),
    tick: () => { now++; ticked++ },
    step: () => {},
    ready: () => null,
    advance: () => {}
  }
  const transport: Transport = { self: 'aa', start: async () => {}, send: () => true, connected: () => [], stop: async () => {} }
  const runtime = new Runtime({ tickMs: 10, sampleIntervalMs: 60_000, ticksCatchUpMax: 10 }, {
    core: core as unknown as AgentCore, transport, store: memoryStore()({ logger: silentLogger() }), logger: silentLogger(),
    codec: { encode: encodeEnvelope, decode: (f, from) => decodeFrame(f, { expectFrom: from }) },
    sample: async () => await new Promise(() => {}) // never: no sample inputs
  })
  await runtime.start()
  await sleep(1000)
  const { ticks, ticksSkipped, tickWakeups } = runtime.stats
  await runtime.stop()
  t.equal(ticksSkipped, 0, 'no tick skipped')
  t.ok(ticks >= 40 && ticks <= 101 && ticked === ticks, `${ticks} ticks in 1 s (handed over at each wake-up), all to the core`)
  t.ok(tickWakeups <= 4, `woken ${tickWakeups} times (every 40 ticks)`)
})

t.test('a stall past the catch-up bound: the skipped ticks reach the core in one input, before the replayed ones', async t => {
  let now = 0
  const seen: string[] = []
  let skippedTold = 0
  const core = {
    get now () { return now },
    nextDueTick: () => now + 1,
    tick: () => { now++; seen.push('tick') },
    step: (input: { type: string, ticks?: number }) => { if (input.type === 'ticksSkipped') { skippedTold += input.ticks ?? 0; seen.push(`skipped ${input.ticks ?? 0}`) } },
    ready: () => null,
    advance: () => {}
  }
  const transport: Transport = { self: 'aa', start: async () => {}, send: () => true, connected: () => [], stop: async () => {} }
  const runtime = new Runtime({ tickMs: 10, sampleIntervalMs: 60_000, ticksCatchUpMax: 10 }, {
    core: core as unknown as AgentCore, transport, store: memoryStore()({ logger: silentLogger() }), logger: silentLogger(),
    codec: { encode: encodeEnvelope, decode: (f, from) => decodeFrame(f, { expectFrom: from }) },
    sample: async () => await new Promise(() => {})
  })
  await runtime.start()
  await sleep(100)
  const t0 = performance.now()
  while (performance.now() - t0 < 400) { /* the loop stalls (a GC pause, a stopped process) */ }
  await sleep(100)
  await runtime.stop()
  const { ticks, ticksSkipped } = runtime.stats
  t.ok(ticksSkipped >= 20, `ticks were skipped after a 400 ms stall of 10 ms ticks (${ticksSkipped})`)
  t.equal(skippedTold, ticksSkipped, 'the core was told every skipped tick')
  t.equal(now, ticks, 'the replayed ticks reached the core')
  const first = seen.findIndex(s => s.startsWith('skipped'))
  t.ok(first > 0 && seen.slice(first + 1, first + 11).every(s => s === 'tick'), 'the skip came before the replayed ticks')
})

t.test('a frame arriving while the leave is persisted does not start a turn of its own', async t => {
  // stop({ leave }) applies the leave's Ready, whose persist awaits the (slow) store; a frame
  // delivered meanwhile used to start a turn that took the next Ready and advanced out of order
  // (an assertion in the core, the agent exiting with code 70 instead of stopping).
  const { log, runtime, store, handlers } = setup()
  await store.open()
  await runtime.start()
  await sleep(200)
  const h = handlers()
  t.ok(h !== null, 'transport started')
  const frame = encodeEnvelope({ protocolMin: 1, protocolMax: 1, protocolCur: 1, from: 'bb', incarnation: 1, lamport: 1, body: { type: 'gossip' }, gossip: [] })
  const persistsBefore = log.filter(l => l.startsWith('persist')).length
  const stopping = runtime.stop({ leave: true, graceMs: 0 })
  // The leave's persist is now awaiting the store (5 ms): frames keep arriving.
  for (let i = 0; i < 5; i++) { h!.onFrame('bb', frame); await sleep(1) }
  await stopping
  t.equal(process.exitCode ?? 0, 0, 'the loop did not fail')
  t.ok(log.filter(l => l.startsWith('persist')).length > persistsBefore, 'the leave was persisted')
  t.equal(await store.get('core/incarnation'), 1, 'the incarnation is still in the store')
})

t.test('after a late wake-up, queued probe answers reach the core before the replayed ticks; other inputs after them', async t => {
  // A probe's deadline is a tick: replaying the ticks of a stall first would run the deadline
  // before an ack that arrived during the stall was looked at (a false suspicion of a member
  // that answered in time, caused by this host's own slowness).
  let now = 0
  const seen: string[] = []
  const core = {
    get now () { return now },
    nextDueTick: () => now + 1,
    tick: () => { now++; seen.push('tick') },
    step: (input: { type: string, envelope?: { body: { type: string } } }) => { seen.push(input.type === 'receive' ? `receive ${input.envelope?.body.type ?? '?'}` : input.type) },
    ready: () => null,
    advance: () => {}
  }
  const transport: Transport = { self: 'aa', start: async () => {}, send: () => true, connected: () => [], stop: async () => {} }
  const runtime = new Runtime({ tickMs: 10, sampleIntervalMs: 60_000, ticksCatchUpMax: 10 }, {
    core: core as unknown as AgentCore, transport, store: memoryStore()({ logger: silentLogger() }), logger: silentLogger(),
    codec: { encode: encodeEnvelope, decode: (f, from) => decodeFrame(f, { expectFrom: from }) },
    sample: async () => await new Promise(() => {})
  })
  await runtime.start()
  await sleep(100)
  const env = (type: string): Input => ({ type: 'receive', from: 'bb', envelope: { protocolMin: 1, protocolMax: 1, protocolCur: 1, from: 'bb', incarnation: 1, lamport: 1, body: { type } as never, gossip: [] } })
  const mark = seen.length
  runtime.enqueue(env('gossip'))
  runtime.enqueue(env('ack'))
  runtime.enqueue(env('nack'))
  const t0 = performance.now()
  while (performance.now() - t0 < 300) { /* the loop is late: the host is busy */ }
  await sleep(50)
  await runtime.stop()
  const after = seen.slice(mark)
  const ack = after.indexOf('receive ack')
  const nack = after.indexOf('receive nack')
  const gossip = after.indexOf('receive gossip')
  const firstTick = after.indexOf('tick')
  t.ok(ack >= 0 && nack > ack, `the answers reached the core, in their order (${ack}, ${nack})`)
  t.ok(firstTick > nack, `before the replayed ticks (first tick at ${firstTick})`)
  t.ok(after.slice(0, gossip).filter(s => s === 'tick').length >= 10, 'the other input came after the replayed ticks, as before')
  t.equal(runtime.stats.probeAnswersFirst, 2, 'both counted')
})

t.test('a message the wire cannot carry is dropped and counted; the loop goes on', async t => {
  // The real codec, refusing every other frame as a field past its limit would be.
  const { log, runtime, store } = setup()
  let n = 0
  const codec = (runtime as unknown as { c: { codec: { encode: (e: Parameters<typeof encodeEnvelope>[0]) => Uint8Array } } }).c.codec
  codec.encode = e => { if (n++ % 2 === 0) encodeEnvelope({ ...e, body: { type: 'incomingReady', id: 'a-1-1', uri: '' } }); return encodeEnvelope(e) }
  await store.open()
  await runtime.start()
  await sleep(500)
  const ticks = runtime.stats.ticks
  await runtime.stop()
  t.ok(runtime.stats.framesSendFailed >= 2, `frames that could not be encoded were counted (${runtime.stats.framesSendFailed})`)
  t.ok(log.filter(l => l.startsWith('send')).length >= 2, 'the others were sent')
  t.ok(ticks >= 30, `the loop kept running (${ticks} ticks in 500 ms)`)
  t.equal(process.exitCode ?? 0, 0, 'no exit was asked for')
})
