/**
 * Contract suite for the Transport port (agent/ports/transport.ts).
 *
 * Goal: the simulated network and the Hyperswarm transport obey the same rules, so that what
 * the simulator shows about the core holds on the real mesh.
 * Method: each case gets a fresh cluster of transports from the harness, starts them, waits for
 * the full mesh, and asserts only through the port and its handlers. Time is wall time (the
 * harness says how long a mesh may take to form); a simulator harness may advance its clock in
 * `settle`.
 */
import type { Test } from 'tap'
import type { HostId } from '../../agent/core/types.js'
import type { Transport, TransportHandlers } from '../../agent/ports/transport.js'

export interface TransportHarness {
  /** Implementation name, for test titles. */
  name: string
  /** n transports of one cluster (each allows all the others), not started. */
  cluster (n: number): Promise<Transport[]>
  /** Largest frame a transport of this harness sends and delivers, bytes. */
  maxFrameBytes: number
  /** How long a fresh cluster may take to connect fully, and a frame to arrive, ms. */
  deadlineMs: number
  /** Let time pass (a simulator advances its clock; a real harness sleeps). */
  settle (ms: number): Promise<void>
  /** Remove everything the harness created. Called after every case. */
  cleanup (): Promise<void>
}

/** What one transport's handlers saw. */
export interface Recorder {
  frames: Array<{ from: HostId, bytes: number[] }>
  connected: HostId[]
  disconnected: HostId[]
  rejected: Array<{ remote: HostId | null, reason: string }>
  handlers: TransportHandlers
}

export function recorder (): Recorder {
  const r: Omit<Recorder, 'handlers'> = { frames: [], connected: [], disconnected: [], rejected: [] }
  return {
    ...r,
    handlers: {
      onFrame: (from, frame) => { r.frames.push({ from, bytes: [...frame] }) },
      onPeerConnected: p => { r.connected.push(p) },
      onPeerDisconnected: p => { r.disconnected.push(p) },
      onRejected: (remote, reason) => { r.rejected.push({ remote, reason }) }
    }
  }
}

export function transportContract (t: Test, harness: TransportHarness): void {
  const until = async (what: string, cond: () => boolean): Promise<void> => {
    const t0 = Date.now()
    while (!cond()) {
      if (Date.now() - t0 > harness.deadlineMs) throw new Error(`${harness.name}: timed out waiting for ${what}`)
      await harness.settle(10)
    }
  }
  const meshed = (ts: Transport[]): boolean =>
    ts.every(a => ts.every(b => a === b || a.connected().includes(b.self)))
  const started = async (n: number): Promise<{ ts: Transport[], rec: Recorder[] }> => {
    const ts = await harness.cluster(n)
    const rec = ts.map(() => recorder())
    await Promise.all(ts.map((tr, i) => tr.start(rec[i]!.handlers)))
    await until('full mesh', () => meshed(ts))
    return { ts, rec }
  }

  t.afterEach(async () => { await harness.cleanup() })

  t.test(`${harness.name}: members connect, each peer reported once, never self`, async t => {
    const { ts, rec } = await started(3)
    for (let i = 0; i < ts.length; i++) {
      const others = ts.filter((_, j) => j !== i).map(x => x.self).sort()
      t.same(ts[i]!.connected().slice().sort(), others)
      t.same(rec[i]!.connected.slice().sort(), others, 'one onPeerConnected per peer')
      t.notOk(ts[i]!.connected().includes(ts[i]!.self))
    }
    t.equal(new Set(ts.map(x => x.self)).size, ts.length, 'distinct ids')
  })

  t.test(`${harness.name}: start() is idempotent`, async t => {
    const { ts, rec } = await started(2)
    await ts[0]!.start(rec[0]!.handlers)
    t.ok(meshed(ts))
  })

  t.test(`${harness.name}: frames arrive intact, with the sender's id, in order per peer`, async t => {
    const { ts, rec } = await started(2)
    const [a, b] = [ts[0]!, ts[1]!]
    for (let i = 0; i < 100; i++) t.equal(a.send(b.self, Uint8Array.of(i, 255 - i, 7)), true)
    t.equal(b.send(a.self, Uint8Array.of(42)), true)
    await until('frames', () => rec[1]!.frames.length >= 100 && rec[0]!.frames.length >= 1)
    t.same(rec[1]!.frames.map(f => f.bytes), Array.from({ length: 100 }, (_, i) => [i, 255 - i, 7]), 'in order')
    t.ok(rec[1]!.frames.every(f => f.from === a.self), 'sender id')
    t.same(rec[0]!.frames, [{ from: b.self, bytes: [42] }])
  })

  t.test(`${harness.name}: a frame of exactly maxFrameBytes is delivered; a bigger one is refused by send`, async t => {
    const { ts, rec } = await started(2)
    const big = new Uint8Array(harness.maxFrameBytes).fill(3)
    t.equal(ts[0]!.send(ts[1]!.self, big), true)
    t.equal(ts[0]!.send(ts[1]!.self, new Uint8Array(harness.maxFrameBytes + 1)), false)
    await until('big frame', () => rec[1]!.frames.length >= 1)
    t.equal(rec[1]!.frames[0]!.bytes.length, harness.maxFrameBytes)
  })

  t.test(`${harness.name}: send never throws: unknown peer, garbage id, before start, after stop`, async t => {
    const ts = await harness.cluster(2)
    const rec = ts.map(() => recorder())
    t.equal(ts[0]!.send(ts[1]!.self, Uint8Array.of(1)), false, 'before start')
    await Promise.all(ts.map((tr, i) => tr.start(rec[i]!.handlers)))
    await until('mesh', () => meshed(ts))
    t.equal(ts[0]!.send('ee'.repeat(32), Uint8Array.of(1)), false, 'unknown peer')
    t.equal(ts[0]!.send('not-a-key', Uint8Array.of(1)), false, 'garbage id')
    t.equal(ts[0]!.send(ts[0]!.self, Uint8Array.of(1)), false, 'self')
    await ts[0]!.stop()
    t.equal(ts[0]!.send(ts[1]!.self, Uint8Array.of(1)), false, 'after stop')
  })

  t.test(`${harness.name}: stop() is idempotent, the others see the peer go, and no handler runs after it`, async t => {
    const { ts, rec } = await started(3)
    const [a, b, c] = [ts[0]!, ts[1]!, ts[2]!]
    const before = rec[0]!.frames.length + rec[0]!.disconnected.length
    await Promise.all([a.stop(), a.stop()])
    await a.stop()
    t.same(a.connected(), [])
    await until('peers see it go', () => rec[1]!.disconnected.includes(a.self) && rec[2]!.disconnected.includes(a.self))
    t.equal(b.send(a.self, Uint8Array.of(1)), false)
    b.send(c.self, Uint8Array.of(2))
    await until('survivors still talk', () => rec[2]!.frames.some(f => f.from === b.self))
    await harness.settle(100)
    t.equal(rec[0]!.frames.length + rec[0]!.disconnected.length, before, 'no handler call after stop')
  })

  t.test(`${harness.name}: a handler that throws does not stop delivery`, async t => {
    const ts = await harness.cluster(2)
    const got: number[] = []
    const rec0 = recorder()
    const throwing: TransportHandlers = {
      ...recorder().handlers,
      onFrame: (_from, frame) => { got.push(frame[0]!); throw new Error('handler bug') },
      onPeerConnected: () => { throw new Error('handler bug') }
    }
    await Promise.all([ts[0]!.start(rec0.handlers), ts[1]!.start(throwing)])
    await until('mesh', () => meshed(ts))
    ts[0]!.send(ts[1]!.self, Uint8Array.of(1))
    ts[0]!.send(ts[1]!.self, Uint8Array.of(2))
    await until('both frames', () => got.length >= 2)
    t.same(got, [1, 2])
  })
}
