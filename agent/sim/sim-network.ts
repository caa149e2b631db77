/**
 * Simulated network on a virtual clock: seeded delay (ticks), loss, duplication, reordering
 * (extra delay), partitions into groups, isolation of a host and asymmetric cuts. Envelopes are
 * passed by reference (never cloned: receivers must not mutate them); bytes are counted with the
 * protobuf size estimator. Frames wait in a timing wheel, so sending and delivering are O(1).
 */
import { assert, envelopeBytes, Prng, type Envelope, type HostId } from '../core/index.js'

export interface SimNetworkOptions {
  seed: number
  /** @default 1 */
  delayTicksMin?: number
  /** @default 1 */
  delayTicksMax?: number
  /** Probability a frame is lost. @default 0 */
  loss?: number
  /** Probability a frame is delivered twice. @default 0 */
  duplicate?: number
  /** Probability a frame gets 1..reorderTicksMax extra ticks of delay (overtaken by later ones). @default 0 */
  reorder?: number
  /** @default 3 */
  reorderTicksMax?: number
}

export interface Frame { from: HostId, to: HostId, envelope: Envelope, bytes: number }

export interface NetworkStats { sent: number, bytes: number, lost: number, blocked: number, duplicated: number, delivered: number }

const WHEEL = 64

export class SimNetwork {
  loss: number
  duplicate: number
  reorder: number
  readonly stats: NetworkStats = { sent: 0, bytes: 0, lost: 0, blocked: 0, duplicated: 0, delivered: 0 }
  private readonly prng: Prng
  private readonly delayMin: number
  private readonly delayMax: number
  private readonly reorderMax: number
  private readonly wheel: Frame[][] = Array.from({ length: WHEEL }, () => [])
  private groupOf = new Map<HostId, number>()
  private partitioned = false
  private readonly isolated = new Set<HostId>()
  private readonly cuts = new Set<string>()

  constructor (o: SimNetworkOptions) {
    this.prng = new Prng(o.seed)
    this.delayMin = o.delayTicksMin ?? 1
    this.delayMax = o.delayTicksMax ?? 1
    this.loss = o.loss ?? 0
    this.duplicate = o.duplicate ?? 0
    this.reorder = o.reorder ?? 0
    this.reorderMax = o.reorderTicksMax ?? 3
    assert(this.delayMin >= 1 && this.delayMax >= this.delayMin, 'delay must be >= 1 tick and min <= max')
    assert(this.delayMax + this.reorderMax + 1 < WHEEL, 'delay too large for the timing wheel')
  }

  /** True when a frame from `from` can reach `to` now. */
  reachable (from: HostId, to: HostId): boolean {
    if (this.isolated.size > 0 && (this.isolated.has(from) || this.isolated.has(to))) return false
    if (this.partitioned && (this.groupOf.get(from) ?? -1) !== (this.groupOf.get(to) ?? -1)) return false
    if (this.cuts.size > 0 && this.cuts.has(from + '\u0000' + to)) return false
    return true
  }

  /** Any fault other than loss is active (partition, isolation, cut). */
  get faulty (): boolean { return this.partitioned || this.isolated.size > 0 || this.cuts.size > 0 }

  send (now: number, from: HostId, to: HostId, envelope: Envelope): void {
    const bytes = envelopeBytes(envelope)
    this.stats.sent++
    this.stats.bytes += bytes
    if (!this.reachable(from, to)) { this.stats.blocked++; return }
    if (this.loss > 0 && this.prng.chance(this.loss)) { this.stats.lost++; return }
    const f: Frame = { from, to, envelope, bytes }
    this.schedule(now, f)
    if (this.duplicate > 0 && this.prng.chance(this.duplicate)) { this.stats.duplicated++; this.schedule(now + 1, f) }
  }

  private schedule (now: number, f: Frame): void {
    let d = this.delayMin === this.delayMax ? this.delayMin : this.delayMin + this.prng.int(this.delayMax - this.delayMin + 1)
    if (this.reorder > 0 && this.prng.chance(this.reorder)) d += 1 + this.prng.int(this.reorderMax)
    this.wheel[(now + d) % WHEEL]!.push(f)
  }

  /** Frames due at tick `now` (call once per tick, in order). */
  take (now: number): Frame[] {
    const slot = now % WHEEL
    const due = this.wheel[slot]!
    if (due.length === 0) return due
    this.wheel[slot] = []
    this.stats.delivered += due.length
    return due
  }

  /** Split hosts into groups that cannot reach each other; unlisted hosts form one more group. */
  partition (groups: HostId[][]): void {
    this.groupOf = new Map()
    groups.forEach((g, i) => { for (const id of g) this.groupOf.set(id, i) })
    this.partitioned = true
  }

  isolate (id: HostId): void { this.isolated.add(id) }

  /** Drop frames from a to b only (asymmetric). */
  cut (a: HostId, b: HostId): void { this.cuts.add(a + '\u0000' + b) }

  heal (): void {
    this.partitioned = false
    this.groupOf = new Map()
    this.isolated.clear()
    this.cuts.clear()
  }
}
