/**
 * SWIM incarnation rules for disseminated member states (memberlist aliveNode / suspectNode /
 * deadNode): an Alive is accepted only with a higher incarnation than known (or for a new member);
 * a Suspect or Dead is accepted with an incarnation at least the known one; a claim about this
 * host that is not alive is refuted by raising our incarnation above it and broadcasting Alive.
 * An accepted change is re-broadcast; a new confirmation of a running suspicion is re-broadcast.
 */
import type { MemberRecord } from '../messages.js'
import { KEY_INCARNATION } from '../persisted.js'
import type { CoreState } from '../state.js'
import type { HostId } from '../types.js'
import { Suspicion, suspicionMinTicks } from './suspicion.js'

/** This host's own record as Alive gossip carries it. */
export function selfRecord (s: CoreState): MemberRecord {
  return { id: s.self, name: s.name, addr: s.addr, incarnation: s.incarnation, state: s.leaving ? 'left' : 'alive' }
}

/** Raise our incarnation above `claimed`, persist it, and broadcast Alive (persist before send). */
export function refute (s: CoreState, claimed: number): void {
  if (s.leaving) return
  s.incarnation = Math.max(s.incarnation, claimed) + 1
  s.persist(KEY_INCARNATION, s.incarnation)
  s.selfMember.incarnation = s.incarnation
  s.counters.refutations++
  s.awareness.applyDelta(1)
  s.broadcast(s.self, { type: 'alive', member: selfRecord(s) })
}

export function applyAlive (s: CoreState, r: MemberRecord): void {
  if (r.id === s.self) {
    if (r.incarnation > s.incarnation) refute(s, r.incarnation)
    return
  }
  const m = s.members.get(r.id)
  if (m !== undefined && r.incarnation <= m.incarnation) return
  s.suspicions.delete(r.id)
  s.members.becomeAlive(r.id, r.name, r.addr, r.incarnation, s.now)
  s.broadcast(r.id, { type: 'alive', member: r })
}

/** Returns true when it started a suspicion here (the member was alive, or known at a lower incarnation). */
export function applySuspect (s: CoreState, node: HostId, incarnation: number, from: HostId): boolean {
  if (node === s.self) {
    if (incarnation >= s.incarnation) refute(s, incarnation)
    return false
  }
  const m = s.members.get(node)
  if (m === undefined || incarnation < m.incarnation) return false
  if (m.state === 'dead' || m.state === 'left') return false
  if (m.state === 'suspect') {
    const sus = s.suspicions.get(node)
    if (sus !== undefined && incarnation === sus.incarnation && sus.confirm(from)) {
      s.counters.confirmations++
      s.broadcast(node, { type: 'suspect', node, incarnation, from })
    }
    if (incarnation === m.incarnation) return false
    // a suspicion at a higher incarnation replaces the old one
    m.incarnation = incarnation
  } else {
    s.members.becomeSuspect(m, incarnation, s.now)
  }
  startSuspicion(s, node, incarnation, from)
  s.broadcast(node, { type: 'suspect', node, incarnation, from })
  return true
}

function startSuspicion (s: CoreState, node: HostId, incarnation: number, from: HostId): void {
  const c = s.config
  const n = s.n
  const k = n - 2 < c.suspicionConfirmations ? 0 : c.suspicionConfirmations
  const min = suspicionMinTicks(c.suspicionMult, n, c.probeIntervalTicks)
  const max = Math.round(c.suspicionMaxTimeoutMult * min)
  s.suspicions.set(node, new Suspicion(node, incarnation, s.now, k, min, max, from))
  s.counters.suspicions++
}

export function applyDead (s: CoreState, node: HostId, incarnation: number, from: HostId): void {
  if (node === s.self) {
    if (!s.leaving && incarnation >= s.incarnation) refute(s, incarnation)
    return
  }
  const m = s.members.get(node)
  if (m === undefined || incarnation < m.incarnation) return
  if (m.state === 'dead' || m.state === 'left') return
  s.suspicions.delete(node)
  s.members.becomeDead(m, incarnation, s.now)
  if (from === s.self) s.counters.deathsDeclared++
  s.broadcast(node, { type: 'dead', node, incarnation, from })
}

export function applyLeft (s: CoreState, node: HostId, incarnation: number): void {
  if (node === s.self) {
    if (!s.leaving && incarnation >= s.incarnation) refute(s, incarnation)
    return
  }
  const m = s.members.get(node)
  if (m === undefined || incarnation < m.incarnation || m.state === 'left') return
  s.suspicions.delete(node)
  s.members.becomeLeft(m, incarnation, s.now)
  s.broadcast(node, { type: 'left', node, incarnation })
}

/**
 * The tick at which a suspicion fires here: its timeout (confirmations shorten it, suspicion.ts)
 * times this host's local-health multiplier now. Lifeguard scales only the probes by local health;
 * a starved host also missed the refutation that would have ended the suspicion (it sits unread
 * behind the host's own backlog), so it does not trust its own deadline either. A healthy host
 * (multiplier 1) declares on time; a death declared elsewhere is still applied at once.
 */
export function suspicionFiresAt (s: CoreState, sus: Suspicion): number {
  return sus.startTick + Math.ceil((sus.deadlineTick - sus.startTick) * s.awareness.multiplier)
}

/** The earliest tick at which a running suspicion expires (expireSuspicions acts then). */
export function nextSuspicionDue (s: CoreState): number {
  let due = Infinity
  for (const sus of s.suspicions.values()) due = Math.min(due, suspicionFiresAt(s, sus))
  return due
}

/** Fire suspicions whose time came (suspicionFiresAt): the suspect is declared dead by this host. */
export function expireSuspicions (s: CoreState): void {
  if (s.suspicions.size === 0) return
  for (const sus of [...s.suspicions.values()]) {
    if (s.now < suspicionFiresAt(s, sus)) continue
    const m = s.members.get(sus.node)
    s.suspicions.delete(sus.node)
    if (m === undefined || m.state !== 'suspect' || m.incarnation !== sus.incarnation) continue
    applyDead(s, sus.node, sus.incarnation, s.self)
  }
}
