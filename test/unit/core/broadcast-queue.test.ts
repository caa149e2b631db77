// Retransmit limit (memberlist retransmitLimit) and the bounded, invalidating broadcast queue.
import t from 'tap'
import { BroadcastQueue, retransmitLimit } from '../../../agent/core/membership/broadcast-queue.js'
import type { Gossip } from '../../../agent/core/messages.js'

t.test('retransmit limit = mult * ceil(log10(n + 1))', t => {
  const rows: Array<[number, number, number]> = [
    [4, 0, 0], [4, 1, 4], [4, 9, 4], [4, 10, 8], [4, 99, 8], [4, 100, 12], [4, 999, 12], [4, 1000, 16], [3, 200, 9]
  ]
  for (const [mult, n, want] of rows) t.equal(retransmitLimit(mult, n), want, `mult=${mult} n=${n}`)
  t.end()
})

const alive = (id: string, inc: number): Gossip => ({ type: 'alive', member: { id, name: id, addr: '', incarnation: inc, state: 'alive' } })
const incOf = (g: Gossip): number => g.type === 'alive' ? g.member.incarnation : -1

t.test('each broadcast is sent at most limit times, fewest transmitted first', t => {
  const q = new BroadcastQueue(100)
  q.enqueue('a', alive('a', 1), 10)
  t.same(q.take(100, 2).map(incOf), [1])
  q.enqueue('b', alive('b', 7), 10)
  const second = q.take(10, 2)
  t.equal(second.length, 1)
  t.equal(second[0]!.type === 'alive' ? second[0]!.member.id : '', 'b', 'the fresher (untransmitted) item goes first')
  t.equal(q.take(100, 2).length, 2, 'a (2nd transmit) and b (2nd transmit)')
  t.equal(q.size, 0, 'both reached the limit and left the queue')
  t.same(q.take(100, 2), [])
  t.end()
})

t.test('a newer broadcast about the same member invalidates the older', t => {
  const q = new BroadcastQueue(100)
  q.enqueue('a', alive('a', 1), 10)
  q.enqueue('a', alive('a', 2), 10)
  t.equal(q.size, 1)
  t.same(q.take(100, 5).map(incOf), [2])
  t.end()
})

t.test('the byte budget is respected', t => {
  const q = new BroadcastQueue(100)
  for (let i = 0; i < 10; i++) q.enqueue(`n${i}`, alive(`n${i}`, i), 30)
  t.equal(q.take(100, 5).length, 3)
  t.equal(q.take(29, 5).length, 0)
  t.end()
})

t.test('the queue is bounded: overflow drops the most transmitted and counts it', t => {
  const q = new BroadcastQueue(3)
  q.enqueue('a', alive('a', 1), 10)
  q.take(100, 10)
  q.enqueue('b', alive('b', 1), 10)
  q.enqueue('c', alive('c', 1), 10)
  q.enqueue('d', alive('d', 1), 10)
  t.equal(q.size, 3)
  t.equal(q.drops, 1)
  t.equal(q.peek('a'), undefined, 'a had the most transmits')
  t.end()
})
