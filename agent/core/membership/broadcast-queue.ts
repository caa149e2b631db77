/**
 * Bounded, invalidating piggyback queue (memberlist TransmitLimitedQueue): every membership
 * broadcast is sent at most retransmitMult * ceil(log10(n + 1)) times, fewest-transmitted first
 * and newest first among equals; a newer broadcast about the same member invalidates the older;
 * beyond `maxItems` the most-transmitted items are dropped and counted.
 */
import type { Gossip } from '../messages.js'

/** memberlist retransmitLimit: mult * ceil(log10(n + 1)). */
export function retransmitLimit (mult: number, n: number): number {
  return mult * Math.ceil(Math.log10(n + 1))
}

interface Item { key: string, gossip: Gossip, bytes: number, transmits: number, live: boolean }

/** Smallest item worth looking for once the budget is nearly spent. */
const MIN_ITEM_BYTES = 8

export class BroadcastQueue {
  /** buckets[t] holds the live (and lazily some dead) items transmitted t times. */
  private buckets: Item[][] = [[]]
  private readonly byKey = new Map<string, Item>()
  /** Items dropped because the queue was full. */
  drops = 0

  constructor (readonly maxItems: number) {}

  get size (): number { return this.byKey.size }

  /** Queue a broadcast; an older one with the same key is invalidated. */
  enqueue (key: string, gossip: Gossip, bytes: number): void {
    const old = this.byKey.get(key)
    if (old !== undefined) old.live = false
    const item: Item = { key, gossip, bytes, transmits: 0, live: true }
    this.byKey.set(key, item)
    this.buckets[0]!.push(item)
    if (this.byKey.size > this.maxItems) this.dropMostTransmitted()
  }

  /** The queued gossip about `key`, if any. */
  peek (key: string): Gossip | undefined { return this.byKey.get(key)?.gossip }

  /** Take broadcasts that fit in `budgetBytes`, counting one transmission each. */
  take (budgetBytes: number, limit: number): Gossip[] {
    const out: Gossip[] = []
    if (this.byKey.size === 0) return out
    const moved: Item[] = []
    let used = 0
    for (let t = 0; t < this.buckets.length && budgetBytes - used >= MIN_ITEM_BYTES; t++) {
      const b = this.buckets[t]!
      if (b.length === 0) continue
      const keep: Item[] = []
      for (let i = b.length - 1; i >= 0; i--) {
        const it = b[i]!
        if (!it.live) continue
        if (used + it.bytes > budgetBytes) { keep.push(it); continue }
        used += it.bytes
        out.push(it.gossip)
        it.transmits++
        if (it.transmits >= limit) this.remove(it)
        else moved.push(it)
      }
      keep.reverse()
      this.buckets[t] = keep
    }
    for (const it of moved) this.bucket(it.transmits).push(it)
    return out
  }

  private bucket (t: number): Item[] {
    while (this.buckets.length <= t) this.buckets.push([])
    return this.buckets[t]!
  }

  private remove (it: Item): void {
    it.live = false
    if (this.byKey.get(it.key) === it) this.byKey.delete(it.key)
  }

  private dropMostTransmitted (): void {
    for (let t = this.buckets.length - 1; t >= 0 && this.byKey.size > this.maxItems; t--) {
      const b = this.buckets[t]!
      while (b.length > 0 && this.byKey.size > this.maxItems) {
        const it = b.shift()!
        if (!it.live) continue
        this.remove(it)
        this.drops++
      }
    }
  }
}
