/**
 * Stream framing of the Hyperswarm transport, without a network: frames split or merged at any
 * byte boundary come out whole and in order; an oversized frame is skipped without being
 * buffered; a broken length stops the parser for good.
 * Method: seeded random frames cut into random chunks (SEED=<n> reproduces a run).
 */
import t from 'tap'
import { Prng } from '../../agent/core/prng.js'
import { FrameParser } from '../../agent/adapters/hyperswarm-transport.js'

function framed (payload: Uint8Array): Uint8Array {
  const b = new Uint8Array(4 + payload.byteLength)
  new DataView(b.buffer).setUint32(0, payload.byteLength)
  b.set(payload, 4)
  return b
}

function concat (parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((s, p) => s + p.byteLength, 0))
  let off = 0
  for (const p of parts) { out.set(p, off); off += p.byteLength }
  return out
}

t.test('frames cut at random boundaries come out whole, in order, oversized ones skipped', async t => {
  const seed = Number(process.env['SEED'] ?? Date.now() % 1_000_000)
  t.comment(`seed=${seed}`)
  const prng = new Prng(seed)
  for (let round = 0; round < 200; round++) {
    const max = 1000
    const frames: Uint8Array[] = []
    for (let i = 0; i < 1 + prng.int(20); i++) {
      const n = prng.chance(0.1) ? max + 1 + prng.int(3000) : 1 + prng.int(max)
      const f = new Uint8Array(n)
      for (let j = 0; j < n; j++) f[j] = prng.int(256)
      frames.push(f)
    }
    const stream = concat(frames.map(framed))
    const got: Uint8Array[] = []
    const skipped: number[] = []
    const p = new FrameParser(max, 8000, f => got.push(f), len => skipped.push(len))
    let off = 0
    while (off < stream.byteLength) {
      const n = prng.chance(0.3) ? 1 : 1 + prng.int(2000)
      t.equal(p.push(stream.subarray(off, off + n)), true)
      off += n
    }
    const want = frames.filter(f => f.byteLength <= max)
    t.equal(got.length, want.length, `round ${round}: frame count`)
    for (let i = 0; i < want.length; i++) {
      if (Buffer.compare(Buffer.from(got[i]!), Buffer.from(want[i]!)) !== 0) t.fail(`round ${round}: frame ${i} differs`)
    }
    t.same(skipped, frames.filter(f => f.byteLength > max).map(f => f.byteLength))
  }
})

t.test('delivered frames are copies: reusing the input buffer does not change them', async t => {
  const got: Uint8Array[] = []
  const p = new FrameParser(100, 100, f => got.push(f), () => {})
  const chunk = Buffer.from(framed(Uint8Array.of(1, 2, 3)))
  p.push(chunk)
  chunk.fill(0)
  t.same([...got[0]!], [1, 2, 3])
})

t.test('a zero length or a length beyond the discard limit breaks the parser for good', async t => {
  for (const len of [0, 8001]) {
    const got: Uint8Array[] = []
    const p = new FrameParser(1000, 8000, f => got.push(f), () => {})
    t.equal(p.push(framed(Uint8Array.of(9))), true)
    const bad = new Uint8Array(4)
    new DataView(bad.buffer).setUint32(0, len)
    t.equal(p.push(bad), false, `length ${len} is refused`)
    t.equal(p.push(framed(Uint8Array.of(7))), false, 'nothing is parsed after that')
    t.equal(got.length, 1)
  }
})
