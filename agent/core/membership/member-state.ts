/**
 * SWIM member states and every transition between them (becomeX kept together, each emitting one
 * event "member <id8> became <state> (from <state>)"). Incarnation rule: a transition never lowers
 * a member's incarnation. The table also keeps the reachable set (alive or suspect, not self) in
 * an array so random peers are picked in O(k).
 */
import { assert } from '../assert.js'
import type { CoreEvent } from '../events.js'
import type { Prng } from '../prng.js'
import type { HostId, LoadReport, MemberState } from '../types.js'
import { idHash } from './active-view.js'

export interface Member {
  id: HostId
  name: string
  addr: string
  state: MemberState
  incarnation: number
  report: LoadReport | null
  /** Tick the latest report (or the member itself) became known: report staleness starts here. */
  reportTick: number
  /** Tick of the last state change. */
  stateTick: number
  /** idHash(id): the member's place on the active view's rings (active-view.ts). */
  hash: number
}

export function shortId (id: HostId): string { return id.slice(0, 8) }

export class MemberTable {
  readonly byId = new Map<HostId, Member>()
  private readonly reachable: HostId[] = []
  private readonly reachIdx = new Map<HostId, number>()
  readonly counts: Record<MemberState, number> = { alive: 0, suspect: 0, dead: 0, left: 0 }
  /**
   * Bumped whenever a member is added or changes state: what is derived from the members' states
   * alone (which seeds are alive, the oldest report among alive members) is recomputed only when
   * it changed, not at every turn.
   */
  stateVersion = 0
  /** False while restoring a snapshot: no transition events for what was already known. */
  logging = true
  /** Told when a member becomes reachable (alive or suspect) or stops being so (the active view). */
  onReachable: ((id: HostId, hash: number, reachable: boolean) => void) | null = null

  constructor (
    readonly self: HostId,
    private readonly emit: (ev: CoreEvent) => void,
    private readonly changed: (m: Member) => void
  ) {}

  get (id: HostId): Member | undefined { return this.byId.get(id) }

  /** A known member's idHash (computed when unknown). */
  hashOf (id: HostId): number { return this.byId.get(id)?.hash ?? idHash(id) }

  /** A member of `among` named by id, id prefix (8+ hex) or name; null when none or ambiguous. */
  resolve (h: string, among: readonly HostId[]): HostId | null {
    if (among.includes(h)) return h
    for (const m of this.byId.values()) if (m.name === h && among.includes(m.id)) return m.id
    if (h.length >= 8) {
      const hits = among.filter(id => id.startsWith(h))
      if (hits.length === 1) return hits[0]!
    }
    return null
  }

  /** The known states of `ids` other than ourselves, in `ids` order (what VIP and HA decide on). */
  statesOf (ids: readonly HostId[]): Array<{ id: HostId, state: MemberState }> {
    const out: Array<{ id: HostId, state: MemberState }> = []
    for (const id of ids) {
      if (id === this.self) continue
      const m = this.byId.get(id)
      if (m !== undefined) out.push({ id, state: m.state })
    }
    return out
  }

  /** Members not known dead or left, self included: the n of every formula. */
  get liveCount (): number { return this.counts.alive + this.counts.suspect }

  get reachableCount (): number { return this.reachable.length }

  /** Up to k distinct random reachable peers, none in `exclude`. */
  randomReachable (prng: Prng, k: number, exclude?: HostId): HostId[] {
    const n = this.reachable.length
    const out: HostId[] = []
    if (k <= 0 || n === 0) return out
    if (n <= k + 1) {
      for (const id of this.reachable) if (id !== exclude && out.length < k) out.push(id)
      return out
    }
    for (let tries = 0; out.length < k && tries < 4 * k + 8; tries++) {
      const id = this.reachable[prng.int(n)]!
      if (id !== exclude && !out.includes(id)) out.push(id)
    }
    return out
  }

  /** All reachable peers (a copy, for reshuffling the probe order). */
  reachablePeers (): HostId[] { return this.reachable.slice() }

  /** A member becomes (or is first known as) alive. */
  becomeAlive (id: HostId, name: string, addr: string, incarnation: number, tick: number): Member {
    let m = this.byId.get(id)
    if (m === undefined) {
      m = { id, name, addr, state: 'alive', incarnation, report: null, reportTick: tick, stateTick: tick, hash: idHash(id) }
      this.byId.set(id, m)
      this.counts.alive++
      this.stateVersion++
      this.setReachable(m)
      this.log(m, 'none')
      this.changed(m)
      return m
    }
    assert(incarnation >= m.incarnation, `member ${shortId(id)} incarnation would decrease`)
    m.name = name.length > 0 ? name : m.name
    m.addr = addr.length > 0 ? addr : m.addr
    m.incarnation = incarnation
    if (m.state !== 'alive') this.transition(m, 'alive', tick)
    this.changed(m)
    return m
  }

  becomeSuspect (m: Member, incarnation: number, tick: number): void {
    assert(m.state === 'alive', `member ${shortId(m.id)} cannot become suspect from ${m.state}`)
    assert(incarnation >= m.incarnation, `member ${shortId(m.id)} incarnation would decrease`)
    m.incarnation = incarnation
    this.transition(m, 'suspect', tick)
    this.changed(m)
  }

  becomeDead (m: Member, incarnation: number, tick: number): void {
    assert(m.state === 'alive' || m.state === 'suspect', `member ${shortId(m.id)} cannot become dead from ${m.state}`)
    assert(incarnation >= m.incarnation, `member ${shortId(m.id)} incarnation would decrease`)
    m.incarnation = incarnation
    this.transition(m, 'dead', tick)
    this.changed(m)
  }

  becomeLeft (m: Member, incarnation: number, tick: number): void {
    assert(m.state !== 'left', `member ${shortId(m.id)} already left`)
    assert(incarnation >= m.incarnation, `member ${shortId(m.id)} incarnation would decrease`)
    m.incarnation = incarnation
    this.transition(m, 'left', tick)
    this.changed(m)
  }

  private transition (m: Member, to: MemberState, tick: number): void {
    const from = m.state
    this.counts[from]--
    this.counts[to]++
    m.state = to
    m.stateTick = tick
    this.stateVersion++
    if (to === 'alive' || to === 'suspect') this.setReachable(m)
    else this.unsetReachable(m.id)
    this.log(m, from)
  }

  private log (m: Member, from: MemberState | 'none'): void {
    if (!this.logging) return
    this.emit({
      kind: 'member-state',
      host: m.id,
      text: `member ${shortId(m.id)} became ${m.state} (from ${from})`,
      transition: { from, to: m.state, incarnation: m.incarnation }
    })
  }

  private setReachable (m: Member): void {
    if (m.id === this.self || this.reachIdx.has(m.id)) return
    this.reachIdx.set(m.id, this.reachable.length)
    this.reachable.push(m.id)
    this.onReachable?.(m.id, m.hash, true)
  }

  private unsetReachable (id: HostId): void {
    const i = this.reachIdx.get(id)
    if (i === undefined) return
    const last = this.reachable.pop()!
    if (last !== id) { this.reachable[i] = last; this.reachIdx.set(last, i) }
    this.reachIdx.delete(id)
    this.onReachable?.(id, 0, false)
  }
}
