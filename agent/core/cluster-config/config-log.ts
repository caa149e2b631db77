/**
 * The replicated cluster configuration: a log of versions, each one decided by a majority of the
 * members named by the version before it. One version is open at a time, and each is a single
 * decree of Paxos (prepare/promise, accept/accepted, then commit), so two different versions N
 * can never both be decided, whatever crashes, partitions, duplicates and reorderings happen.
 *
 * The log keeps the configuration itself opaque (`doc`, canonical JSON made and checked by the
 * runtime, which owns the validators); it only reads `members`, the host ids whose majority
 * decides the next version.
 *
 * Why a version can be decided only once (the usual Paxos argument, per version N):
 * - Version N is decided by a majority of the members of version N-1. Every agent that takes part
 *   holds the same version N-1 (acceptors refuse a prepare or an accept whose base hash is not the
 *   hash of their own version N-1), so every proposer counts majorities of the same member list,
 *   and any two of those majorities share a member.
 * - An acceptor promises a ballot (persisted before it answers) and never accepts below a
 *   promise; a proposer that gathered a majority of promises proposes the value of the highest
 *   ballot accepted among them, if any. So once a value is accepted by a majority at ballot b,
 *   every higher ballot proposes that same value.
 *
 * Why two sides of a partition can never both hold a majority during a change (what the agents'
 * quorums need: ../ha/quorum.ts, the VIP module):
 * 1. A change adds or removes at most one member (the runtime makes no other change: see
 *    agent/runtime/cluster-config.ts). With members M and M' = M ± one host, any majority of M
 *    and any majority of M' share a host: the two majorities hold more than |M ∪ M'| hosts.
 * 2. A host never counts towards its quorum a member that acts on a newer version than its own
 *    (CoreState.countable; each frame carries its sender's version). A host x acting on version
 *    a and holding a quorum therefore sees a majority of C_a (the members of a) at versions <= a.
 * 3. Versions only grow at a host, and version b is decided only once a majority of C_(b-1)
 *    accepted it at version b-1 (acceptors take part only at their own latest version). So once
 *    some version b >= a+2 exists, a majority of C_(a+1) acts on versions >= a+1.
 * 4. By 1, that majority and x's majority of C_a share a host, which would act on a version both
 *    <= a and >= a+1: impossible. So two hosts holding quorums act on versions at most one apart,
 *    and by 1 their majorities share a host: a host present on both sides of a partition.
 * The simulator checks this after every tick (S6, agent/sim/checkers.ts): with rule 2 removed it
 * finds split majorities (test/sim/cluster-config.test.ts).
 *
 * Catch-up: every `announceTicks` an agent tells `announceFanout` members its version and hash;
 * a member that is behind fetches the missing versions, a member that is ahead sends them. A
 * fresh agent whose whole log is its own genesis (the configuration file, never used to decide
 * anything) adopts the cluster's history when the cluster is ahead: that is how an added host,
 * or a host whose file differed, joins the agreed configuration.
 *
 * Deterministic: no clock (ticks come in), no randomness, no IO (sends and writes go out through
 * the port). The hash function comes in as a parameter (a pure function).
 */
import { majority } from '../claims/grant.js'
import type { HostId } from '../types.js'

export interface ConfigEntry {
  version: number
  /** Hash of version-1's entry ('' for the genesis). */
  base: string
  /** Members of this version, by host id: version+1 needs a majority of these. */
  members: HostId[]
  /** The configuration, canonical JSON (made and checked by the runtime). */
  doc: string
  /** What changed, by whom and when (stamped by the proposing runtime; informative only). */
  note: string
  /** entryHash(version, base, members, doc, note). */
  hash: string
}

export interface Ballot { n: number, by: HostId }

export type ConfigOp = 'prepare' | 'promise' | 'accept' | 'accepted' | 'nack' | 'commit' | 'have' | 'fetch'

/**
 * One frame of the protocol. `slot` is the version being decided (prepare, promise, accept,
 * accepted, nack), the version held (have) or the first version wanted (fetch).
 */
export interface ConfigMessage {
  type: 'cfg'
  op: ConfigOp
  slot: number
  /** prepare, promise, accept, accepted, nack: the proposer's ballot. */
  ballot?: Ballot
  /** prepare, accept: hash of version slot-1 at the proposer; have: hash of the version held. */
  base?: string
  /** accept, commit: the entry; promise: the value accepted earlier, if any. */
  entry?: ConfigEntry
  /** promise: the ballot at which `entry` was accepted. */
  accBallot?: Ballot
  /** nack: the ballot promised, and the newest version the acceptor holds. */
  promised?: Ballot
  have?: number
}

export type HashFn = (text: string) => string

export function entryHash (h: HashFn, e: Omit<ConfigEntry, 'hash'>): string {
  return h(JSON.stringify([e.version, e.base, e.members, e.doc, e.note]))
}

export interface ConfigLogOptions {
  /** Ticks between resends of an unanswered prepare or accept. */
  retryTicks: number
  /** Ticks after which an undecided change is reported as pending (it goes on being tried). */
  pendingTicks: number
  /** Ticks between announcements of the version held. */
  announceTicks: number
  /** Members told at each announcement. */
  announceFanout: number
  /** Entries sent per fetch answer. */
  fetchBatch: number
}

export const defaultConfigLogOptions = (): ConfigLogOptions => ({ retryTicks: 10, pendingTicks: 100, announceTicks: 20, announceFanout: 3, fetchBatch: 8 })

/** Where the log's effects go (the agent core's send, persist and events). */
export interface ConfigLogPort {
  send: (to: HostId, m: ConfigMessage) => void
  persist: (key: string, value: unknown) => void
  event: (kind: string, text: string) => void
  /** A version was decided and is now this host's configuration. */
  committed: (e: ConfigEntry) => void
  /**
   * The peers announcements rotate over (default: every member). With a bounded active view
   * (membership/active-view.ts) these are the view's members: catch-up then spreads hop by hop
   * over the view's connections, instead of connecting to every member in turn (which kept a
   * connection to every member open and undid the bound).
   */
  announcePeers?: () => HostId[]
}

/** The outcome of an operator's change, reported once per request (pending may come before the final one). */
export interface ConfigOutcome {
  req: string
  /** committed: in effect at `version`. conflict: another change took the version (recompute and retry). pending: no majority yet. refused: not started. */
  status: 'committed' | 'conflict' | 'pending' | 'refused'
  version: number
  detail: string
}

export const KEY_CONFIG_ENTRY_PREFIX = 'cfg/entry/'
export const KEY_CONFIG_ACCEPTOR = 'cfg/acceptor'

export function configEntryKey (version: number): string { return KEY_CONFIG_ENTRY_PREFIX + String(version).padStart(10, '0') }

export interface AcceptorState {
  /** The version this state is about (the open one: latest + 1). */
  slot: number
  promised: Ballot | null
  accepted: { ballot: Ballot, entry: ConfigEntry } | null
}

export interface RestoredConfigLog {
  entries: ConfigEntry[]
  acceptor: AcceptorState | null
}

function cmp (a: Ballot, b: Ballot): number {
  return a.n !== b.n ? a.n - b.n : a.by < b.by ? -1 : a.by > b.by ? 1 : 0
}

interface Proposal {
  req: string
  slot: number
  ballot: Ballot
  phase: 'prepare' | 'accept'
  /** The operator's change. */
  own: ConfigEntry
  /** The value pushed in phase 2 (own, or a value found accepted by a promise). */
  value: ConfigEntry | null
  promises: Map<HostId, { ballot: Ballot, entry: ConfigEntry } | null>
  accepts: Set<HostId>
  started: number
  lastSend: number
  pendingSaid: boolean
}

export class ConfigLog {
  private readonly entries: ConfigEntry[] = []
  private acc: AcceptorState
  private prop: Proposal | null = null
  private readonly early = new Map<number, ConfigEntry>()
  private nextAnnounce = 0
  private announceCursor = 0
  private fetchAskedAt = -Infinity
  /** The member ahead of us whose history we asked for from version 1 (only its genesis is adopted). */
  private adoptFrom: HostId | null = null
  /** True while the log holds only this host's own genesis and never took part in a decision. */
  private adoptable: boolean
  readonly outcomes: ConfigOutcome[] = []
  readonly counters = { committed: 0, diverged: 0, refusedFrames: 0, adopted: 0 }
  /** membershipOf()'s cache: per kept version from `first` on, its membership count. */
  private readonly memberships: { first: ConfigEntry | null, m: number[] } = { first: null, m: [] }

  constructor (
    private readonly self: HostId,
    genesis: ConfigEntry,
    restored: RestoredConfigLog | null,
    private readonly hash: HashFn,
    private readonly port: ConfigLogPort,
    private readonly opts: ConfigLogOptions = defaultConfigLogOptions()
  ) {
    const kept = [...(restored?.entries ?? [])].sort((a, b) => a.version - b.version)
    if (kept.length === 0) {
      this.entries.push(genesis)
      port.persist(configEntryKey(genesis.version), genesis)
    } else {
      for (const e of kept) {
        const prev = this.entries[this.entries.length - 1]
        if (prev !== undefined && (e.version !== prev.version + 1 || e.base !== prev.hash)) break
        this.entries.push(e)
      }
    }
    const latest = this.latest()
    const a = restored?.acceptor
    this.acc = a !== null && a !== undefined && a.slot === latest.version + 1 ? a : { slot: latest.version + 1, promised: null, accepted: null }
    this.adoptable = this.entries.length === 1 && this.acc.promised === null && this.entries[0]!.hash === genesis.hash
  }

  latest (): ConfigEntry { return this.entries[this.entries.length - 1]! }
  history (): readonly ConfigEntry[] { return this.entries }

  /**
   * The membership a version belongs to: how many hosts were added or removed between the first
   * version this host keeps and `version` (a rules-only version has its predecessor's). Two
   * versions whose counts differ by k have member lists that differ by at most k hosts, whatever
   * each change did. Only meaningful beside another answer of this host's; null for a version it
   * does not hold.
   */
  membershipOf (version: number): number | null {
    const first = this.entries[0]!
    if (version < first.version || version > this.latest().version) return null
    if (this.memberships.first !== first) { this.memberships.first = first; this.memberships.m = [0] }
    const m = this.memberships.m
    for (let i = m.length; i < this.entries.length; i++) {
      const a = this.entries[i - 1]!.members
      const b = this.entries[i]!.members
      m.push(m[i - 1]! + b.filter(id => !a.includes(id)).length + a.filter(id => !b.includes(id)).length)
    }
    return m[version - first.version]!
  }

  /** Do versions a and b, both held here, name the same members (every version between them too)? */
  sameMembers (a: number, b: number): boolean {
    const x = this.membershipOf(a)
    return x !== null && x === this.membershipOf(b)
  }
  /** This host is not among the members of the latest version. */
  removed (): boolean { return !this.latest().members.includes(this.self) }
  /** The change being agreed from this host, if any. */
  inFlight (): { req: string, slot: number, phase: string, promises: number, accepts: number, needed: number } | null {
    const p = this.prop
    if (p === null) return null
    return { req: p.req, slot: p.slot, phase: p.phase, promises: p.promises.size, accepts: p.accepts.size, needed: majority(this.latest().members.length) }
  }

  /** The earliest tick at which tick() may do anything. */
  nextDue (): number {
    const p = this.prop
    let due = this.nextAnnounce
    if (p !== null) {
      due = Math.min(due, p.lastSend + this.opts.retryTicks)
      if (!p.pendingSaid) due = Math.min(due, p.started + this.opts.pendingTicks)
    }
    return due
  }

  /** Any frame of a member carries its version: one that is ahead is asked for what we miss. */
  heard (from: HostId, version: number, now: number): void {
    if (version <= this.latest().version) return
    if (this.adoptable) this.adoptFrom = from
    this.askFetch(from, now, this.adoptable ? 1 : undefined)
  }

  /** An entry for the next version with this content (hash filled in). */
  makeNext (content: { members: HostId[], doc: string, note: string }): ConfigEntry {
    const base = this.latest()
    const e = { version: base.version + 1, base: base.hash, members: [...content.members], doc: content.doc, note: content.note }
    return { ...e, hash: entryHash(this.hash, e) }
  }

  /**
   * Start agreeing on `entry` (made by makeNext on the version the runtime read). The outcome is
   * reported in `outcomes` (drained by the caller).
   */
  propose (req: string, entry: ConfigEntry, now: number): void {
    const latest = this.latest()
    if (this.removed()) { this.outcome(req, 'refused', latest.version, 'this host is not a member of the cluster configuration'); return }
    if (entry.version !== latest.version + 1 || entry.base !== latest.hash || entry.hash !== entryHash(this.hash, entry)) {
      this.outcome(req, 'conflict', latest.version, `the configuration is now at version ${latest.version}`)
      return
    }
    if (this.prop !== null) { this.outcome(req, 'refused', latest.version, `another change (${this.prop.req}) is being agreed from this host`); return }
    const top = [this.acc.promised, this.acc.accepted?.ballot].reduce((m, b) => b !== null && b !== undefined && b.n > m ? b.n : m, 0)
    this.prop = {
      req, slot: entry.version, ballot: { n: top + 1, by: this.self }, phase: 'prepare', own: entry, value: null,
      promises: new Map(), accepts: new Set(), started: now, lastSend: now, pendingSaid: false
    }
    this.adoptable = false
    this.sendPhase(now, true)
  }

  tick (now: number): void {
    const p = this.prop
    if (p !== null) {
      if (now - p.lastSend >= this.opts.retryTicks) this.sendPhase(now, false)
      if (!p.pendingSaid && now - p.started >= this.opts.pendingTicks) {
        p.pendingSaid = true
        const got = p.phase === 'prepare' ? p.promises.size : p.accepts.size
        this.outcome(p.req, 'pending', this.latest().version,
          `no majority yet: ${got} of ${this.latest().members.length} members answered (${majority(this.latest().members.length)} needed); still trying`)
      }
    }
    if (now >= this.nextAnnounce) {
      this.nextAnnounce = now + this.opts.announceTicks
      const latest = this.latest()
      const viewPeers = this.port.announcePeers?.().filter(p => p !== this.self && latest.members.includes(p)) ?? []
      const peers = viewPeers.length > 0 ? viewPeers : this.peers()
      for (let i = 0; i < Math.min(this.opts.announceFanout, peers.length); i++) {
        const to = peers[(this.announceCursor + i) % peers.length]!
        this.port.send(to, { type: 'cfg', op: 'have', slot: latest.version, base: latest.hash })
      }
      this.announceCursor = peers.length === 0 ? 0 : (this.announceCursor + this.opts.announceFanout) % peers.length
    }
  }

  /** Members of the latest version other than self (announcements and commits go to them). */
  private peers (): HostId[] { return this.latest().members.filter(m => m !== this.self) }

  step (from: HostId, m: ConfigMessage, now: number): void {
    if (!Number.isSafeInteger(m.slot) || m.slot < 0) { this.counters.refusedFrames++; return }
    switch (m.op) {
      case 'prepare': this.onPrepare(from, m); break
      case 'accept': this.onAccept(from, m); break
      case 'promise': case 'accepted': case 'nack': this.onReply(from, m, now); break
      case 'commit': if (m.entry !== undefined) this.onCommit(from, m.entry, now); else this.counters.refusedFrames++; break
      case 'have': this.onHave(from, m, now); break
      case 'fetch': this.onFetch(from, m.slot); break
    }
  }

  // ---- acceptor ----

  private answer (to: HostId, m: ConfigMessage): void {
    if (to === this.self) this.onReply(this.self, m, null)
    else this.port.send(to, m)
  }

  private nack (to: HostId, slot: number, ballot: Ballot): void {
    const promised = this.acc.promised
    this.answer(to, { type: 'cfg', op: 'nack', slot, ballot, ...(promised !== null ? { promised } : {}), have: this.latest().version })
  }

  private onPrepare (from: HostId, m: ConfigMessage): void {
    const b = m.ballot
    if (b === undefined) { this.counters.refusedFrames++; return }
    const latest = this.latest()
    if (m.slot <= latest.version) { this.sendFrom(from, m.slot); this.nack(from, m.slot, b); return }
    if (m.slot > latest.version + 1 || m.base !== latest.hash) { this.askFetch(from, -Infinity); this.nack(from, m.slot, b); return }
    if (this.acc.promised !== null && cmp(b, this.acc.promised) < 0) { this.nack(from, m.slot, b); return }
    this.acc = { ...this.acc, promised: b }
    this.adoptable = false
    this.port.persist(KEY_CONFIG_ACCEPTOR, this.acc)
    const a = this.acc.accepted
    this.answer(from, { type: 'cfg', op: 'promise', slot: m.slot, ballot: b, ...(a !== null ? { entry: a.entry, accBallot: a.ballot } : {}) })
  }

  private onAccept (from: HostId, m: ConfigMessage): void {
    const b = m.ballot
    const e = m.entry
    if (b === undefined || e === undefined || !this.wellFormed(e)) { this.counters.refusedFrames++; return }
    const latest = this.latest()
    if (m.slot <= latest.version) { this.sendFrom(from, m.slot); this.nack(from, m.slot, b); return }
    if (m.slot > latest.version + 1 || e.version !== m.slot || e.base !== latest.hash) { this.askFetch(from, -Infinity); this.nack(from, m.slot, b); return }
    if (this.acc.promised !== null && cmp(b, this.acc.promised) < 0) { this.nack(from, m.slot, b); return }
    this.acc = { slot: m.slot, promised: b, accepted: { ballot: b, entry: e } }
    this.adoptable = false
    this.port.persist(KEY_CONFIG_ACCEPTOR, this.acc)
    this.answer(from, { type: 'cfg', op: 'accepted', slot: m.slot, ballot: b })
  }

  // ---- proposer ----

  private sendPhase (now: number, all: boolean): void {
    const p = this.prop
    if (p === null) return
    p.lastSend = now
    const latest = this.latest()
    const msg: ConfigMessage = p.phase === 'prepare'
      ? { type: 'cfg', op: 'prepare', slot: p.slot, base: latest.hash, ballot: p.ballot }
      : { type: 'cfg', op: 'accept', slot: p.slot, base: latest.hash, ballot: p.ballot, entry: p.value! }
    const answered = p.phase === 'prepare' ? p.promises : p.accepts
    for (const to of latest.members) {
      if (!all && answered.has(to)) continue
      if (to === this.self) { if (p.phase === 'prepare') this.onPrepare(this.self, msg); else this.onAccept(this.self, msg) } else this.port.send(to, msg)
      if (this.prop !== p) return // decided (or dropped) by our own answer
    }
  }

  private onReply (from: HostId, m: ConfigMessage, now: number | null): void {
    const p = this.prop
    const b = m.ballot
    if (p === null || b === undefined || m.slot !== p.slot || cmp(b, p.ballot) !== 0) return
    const members = this.latest().members
    if (!members.includes(from)) return
    const need = majority(members.length)
    if (m.op === 'nack') {
      if (m.have !== undefined && m.have >= p.slot) { this.askFetch(from, -Infinity); return }
      if (m.promised !== undefined && cmp(m.promised, p.ballot) > 0) {
        // Outbid: start again above it (the resend timer paces the next round).
        p.ballot = { n: m.promised.n + 1, by: this.self }
        p.phase = 'prepare'
        p.value = null
        p.promises.clear()
        p.accepts.clear()
        // Back off by this host's rank, so that two proposers outbidding each other fall out of step.
        if (now !== null) p.lastSend = now + Math.max(0, members.indexOf(this.self))
      }
      return
    }
    if (m.op === 'promise' && p.phase === 'prepare') {
      const acc = m.entry !== undefined && m.accBallot !== undefined && this.wellFormed(m.entry) && m.entry.version === p.slot ? { ballot: m.accBallot, entry: m.entry } : null
      p.promises.set(from, acc)
      if (p.promises.size >= need) {
        let best: { ballot: Ballot, entry: ConfigEntry } | null = null
        for (const a of p.promises.values()) if (a !== null && (best === null || cmp(a.ballot, best.ballot) > 0)) best = a
        p.value = best?.entry ?? p.own
        p.phase = 'accept'
        this.sendPhase(now ?? p.lastSend, true)
      }
      return
    }
    if (m.op === 'accepted' && p.phase === 'accept') {
      p.accepts.add(from)
      if (p.accepts.size >= need) {
        const chosen = p.value!
        const old = this.latest().members
        this.commit(chosen)
        const to = new Set([...old, ...chosen.members])
        to.delete(this.self)
        for (const h of to) this.port.send(h, { type: 'cfg', op: 'commit', slot: chosen.version, entry: chosen })
      }
    }
  }

  // ---- learning ----

  private wellFormed (e: ConfigEntry): boolean {
    return Number.isSafeInteger(e.version) && e.version >= 1 && Array.isArray(e.members) && e.members.length > 0 &&
      typeof e.doc === 'string' && typeof e.note === 'string' && typeof e.base === 'string' && e.hash === entryHash(this.hash, e)
  }

  private commit (e: ConfigEntry): void {
    this.entries.push(e)
    this.acc = { slot: e.version + 1, promised: null, accepted: null }
    this.port.persist(configEntryKey(e.version), e)
    this.port.persist(KEY_CONFIG_ACCEPTOR, this.acc)
    this.counters.committed++
    this.port.event('config-committed', `cluster configuration version ${e.version} in effect (${e.note})`)
    const p = this.prop
    if (p !== null && p.slot <= e.version) {
      this.prop = null
      if (e.hash === p.own.hash) this.outcome(p.req, 'committed', e.version, e.note)
      else this.outcome(p.req, 'conflict', e.version, `version ${e.version} was taken by another change (${e.note})`)
    }
    this.port.committed(e)
  }

  private onCommit (from: HostId, e: ConfigEntry, now: number): void {
    if (!this.wellFormed(e)) { this.counters.refusedFrames++; return }
    if (this.adoptable && e.version === 1 && from === this.adoptFrom) { this.adopt(e); return }
    const latest = this.latest()
    if (e.version <= latest.version) {
      const mine = this.entries.find(x => x.version === e.version)
      if (mine !== undefined && mine.hash !== e.hash) this.diverged(from, e.version)
      return
    }
    if (e.version > latest.version + 1) {
      if (this.early.size < 64) this.early.set(e.version, e)
      this.askFetch(from, now)
      return
    }
    if (e.base !== latest.hash) {
      if (this.adoptable) { this.adoptFrom = from; this.askFetch(from, now, 1); return }
      this.diverged(from, latest.version)
      return
    }
    this.commit(e)
    for (let next = this.early.get(this.latest().version + 1); next !== undefined; next = this.early.get(this.latest().version + 1)) {
      this.early.delete(next.version)
      if (next.base !== this.latest().hash) break
      this.commit(next)
    }
    for (const v of this.early.keys()) if (v <= this.latest().version) this.early.delete(v)
  }

  /** Replace this host's own genesis with the cluster's (see the header: fresh hosts only). */
  private adopt (e: ConfigEntry): void {
    const mine = this.entries[0]!
    if (mine.hash === e.hash) { this.adoptable = false; return }
    this.entries.length = 0
    this.entries.push(e)
    this.acc = { slot: e.version + 1, promised: null, accepted: null }
    this.port.persist(configEntryKey(e.version), e)
    this.port.persist(KEY_CONFIG_ACCEPTOR, this.acc)
    this.counters.adopted++
    this.adoptable = false
    this.port.event('config-adopted', `adopted the cluster's configuration history in place of this host's file (version 1: ${e.note})`)
    this.port.committed(e)
  }

  private diverged (from: HostId, version: number): void {
    this.counters.diverged++
    this.port.event('config-diverged', `member ${from} holds another cluster configuration at version ${version}; the configuration files differed when the cluster formed`)
  }

  private askFetch (from: HostId, now: number, start?: number): void {
    if (now !== -Infinity && now - this.fetchAskedAt < this.opts.retryTicks) return
    if (now !== -Infinity) this.fetchAskedAt = now
    this.port.send(from, { type: 'cfg', op: 'fetch', slot: start ?? this.latest().version + 1 })
  }

  private onHave (from: HostId, m: ConfigMessage, now: number): void {
    const latest = this.latest()
    if (m.slot > latest.version) {
      // Ahead of us: a fresh host takes the whole history from it (its own genesis may differ).
      if (this.adoptable) this.adoptFrom = from
      this.askFetch(from, now, this.adoptable ? 1 : undefined)
    } else if (m.slot < latest.version) this.sendFrom(from, m.slot + 1)
    else if (m.base !== latest.hash) this.diverged(from, m.slot)
  }

  private onFetch (from: HostId, start: number): void { this.sendFrom(from, Math.max(1, start)) }

  private sendFrom (to: HostId, start: number): void {
    if (to === this.self) return
    const first = this.entries[0]!.version
    for (let v = Math.max(start, first); v <= this.latest().version && v < start + this.opts.fetchBatch; v++) {
      const e = this.entries[v - first]!
      this.port.send(to, { type: 'cfg', op: 'commit', slot: e.version, entry: e })
    }
  }

  private outcome (req: string, status: ConfigOutcome['status'], version: number, detail: string): void {
    this.outcomes.push({ req, status, version, detail })
  }
}
