/**
 * The active view: the bounded set of members this host keeps a connection to and sends its
 * routine traffic over (probe rounds, gossip, push-pull, report pulls). Anything else (an indirect
 * probe's relay, a join, a migration, a reservation, an HA or VIP claim) is sent to whoever it is
 * for, and the transport connects for it on demand.
 *
 * Construction: `rings` = activeViewSize / 2 orderings of the reachable members, ring j by the
 * position mix(hash(id), j). On each ring a host's neighbours are its predecessor and successor.
 * Every host places every member the same way, so when two views agree the relation is
 * symmetric (B follows A on a ring exactly when A precedes B), the degree is at most
 * activeViewSize whatever the cluster's size, and the overlay is a union of random Hamiltonian
 * cycles: connected, and an expander (logarithmic diameter) for two rings or more. A member that
 * dies leaves every ring, and its neighbours close over the gap: each of its 2r neighbours probes
 * it, which is what detects it. With no more reachable members than activeViewSize, the view is
 * all of them (small clusters keep a full mesh). activeViewSize 0 means every reachable member.
 *
 * Cost: a member joining or becoming reachable is O(rings); one leaving rescans a ring only when
 * it was a neighbour on it (O(n) for the 2r members next to it, O(1) for everyone else).
 */
import type { Prng } from '../prng.js'
import type { HostId } from '../types.js'

/** 32-bit FNV-1a of a string: a member's base position (ids are already random keys on the mesh). */
export function idHash (id: string): number {
  let h = 0x811c9dc5
  for (let i = 0; i < id.length; i++) {
    h ^= id.charCodeAt(i)
    h = Math.imul(h, 0x01000193)
  }
  return h >>> 0
}

/** Position of a member (by its idHash) on ring j: murmur3's finalizer over the salted hash. */
export function ringPosition (hash: number, ring: number): number {
  let h = (hash ^ Math.imul(ring + 1, 0x9e3779b9)) >>> 0
  h ^= h >>> 16
  h = Math.imul(h, 0x85ebca6b)
  h ^= h >>> 13
  h = Math.imul(h, 0xc2b2ae35)
  h ^= h >>> 16
  return h >>> 0
}

const SPAN = 0x100000000

/** What the view needs of the member table: the reachable peers and each one's hash. */
export interface ReachableSource {
  reachablePeers: () => HostId[]
  readonly reachableCount: number
  hashOf: (id: HostId) => number
}

export class ActiveView {
  readonly rings: number
  private readonly selfHash: number
  private readonly selfPos: number[] = []
  private readonly succ: Array<HostId | null>
  private readonly pred: Array<HostId | null>
  private readonly ringStale: boolean[]
  private stale = true
  private list: HostId[] = []
  private readonly set = new Set<HostId>()
  /** Bumped whenever the view's membership changes (the runtime re-sends it to the transport). */
  version = 0

  constructor (private readonly self: HostId, readonly size: number, private readonly src: ReachableSource) {
    this.rings = size === 0 ? 0 : Math.floor(size / 2)
    this.selfHash = idHash(self)
    for (let j = 0; j < this.rings; j++) this.selfPos.push(ringPosition(this.selfHash, j))
    this.succ = new Array<HostId | null>(this.rings).fill(null)
    this.pred = new Array<HostId | null>(this.rings).fill(null)
    this.ringStale = new Array<boolean>(this.rings).fill(false)
  }

  /** Distance going forward (successor side) from us to a member at `pos`; ties broken by id. */
  private fwd (j: number, id: HostId, pos: number): number {
    const d = (pos - this.selfPos[j]!) >>> 0
    return d !== 0 ? d : id > this.self ? 0 : SPAN
  }

  private back (j: number, id: HostId, pos: number): number {
    const d = (this.selfPos[j]! - pos) >>> 0
    return d !== 0 ? d : id < this.self ? 0 : SPAN
  }

  /** True when a is closer than b on ring j in the given direction (ties by id, so every host agrees). */
  private closer (j: number, forward: boolean, a: HostId, ha: number, b: HostId | null): boolean {
    if (b === null) return true
    const pa = ringPosition(ha, j)
    const pb = ringPosition(this.src.hashOf(b), j)
    const da = forward ? this.fwd(j, a, pa) : this.back(j, a, pa)
    const db = forward ? this.fwd(j, b, pb) : this.back(j, b, pb)
    return da !== db ? da < db : forward ? a < b : a > b
  }

  /** A member became reachable (alive or suspect). */
  added (id: HostId, hash: number): void {
    if (id === this.self) return
    this.stale = true
    for (let j = 0; j < this.rings; j++) {
      if (this.ringStale[j] === true) continue
      if (this.closer(j, true, id, hash, this.succ[j]!)) this.succ[j] = id
      if (this.closer(j, false, id, hash, this.pred[j]!)) this.pred[j] = id
    }
  }

  /** A member stopped being reachable (dead or left). */
  removed (id: HostId): void {
    this.stale = true
    for (let j = 0; j < this.rings; j++) {
      if (this.succ[j] === id || this.pred[j] === id) this.ringStale[j] = true
    }
  }

  private rescan (j: number): void {
    let s: HostId | null = null
    let p: HostId | null = null
    for (const id of this.src.reachablePeers()) {
      const h = this.src.hashOf(id)
      if (this.closer(j, true, id, h, s)) s = id
      if (this.closer(j, false, id, h, p)) p = id
    }
    this.succ[j] = s
    this.pred[j] = p
    this.ringStale[j] = false
  }

  private refresh (): void {
    if (!this.stale) return
    this.stale = false
    let next: HostId[]
    if (this.rings === 0 || this.src.reachableCount <= this.size) {
      next = this.src.reachablePeers()
      for (let j = 0; j < this.rings; j++) this.ringStale[j] = true // rebuilt when the view bounds again
    } else {
      for (let j = 0; j < this.rings; j++) if (this.ringStale[j] === true) this.rescan(j)
      next = []
      for (let j = 0; j < this.rings; j++) {
        for (const id of [this.pred[j], this.succ[j]]) if (id !== null && id !== undefined && !next.includes(id)) next.push(id)
      }
    }
    next.sort()
    if (next.length === this.list.length && next.every((id, i) => id === this.list[i])) return
    this.list = next
    this.set.clear()
    for (const id of next) this.set.add(id)
    this.version++
  }

  /** The members of the view, sorted by id (a copy). */
  peers (): HostId[] {
    this.refresh()
    return this.list.slice()
  }

  get count (): number {
    this.refresh()
    return this.list.length
  }

  has (id: HostId): boolean {
    this.refresh()
    return this.set.has(id)
  }

  /** The view's version after bringing it up to date. */
  currentVersion (): number {
    this.refresh()
    return this.version
  }

  /** Up to k distinct random members of the view, none equal to `exclude`. */
  random (prng: Prng, k: number, exclude?: HostId): HostId[] {
    this.refresh()
    const pool = exclude === undefined ? this.list : this.list.filter(id => id !== exclude)
    if (k <= 0 || pool.length === 0) return []
    if (pool.length <= k) return prng.shuffle(pool.slice())
    const out: HostId[] = []
    const copy = pool.slice()
    for (let i = 0; i < k; i++) {
      const j = i + prng.int(copy.length - i)
      const x = copy[j]!; copy[j] = copy[i]!; copy[i] = x
      out.push(x)
    }
    return out
  }
}
