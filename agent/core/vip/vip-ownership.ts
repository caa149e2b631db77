/**
 * VIP ownership: at most one owner per virtual IP (S5), failure-driven takeover only on the
 * majority side (S4), make-before-break planned moves, keepalived-style announcement bursts.
 * Pure and deterministic: no clock (time is `tick()`), no IO, no randomness but the seeded Prng.
 *
 * Protocol (one instance per host; every configured member is also an acceptor):
 *
 *  The claim order, the grant rule, retry and back-off are the shared claim module's
 *  (../claims/index.ts); what follows is how VIPs use them, and what they add on top.
 *
 *  1. Claims are named (lamport, host) and totally ordered (vip-messages.ts). Lamport order alone
 *     cannot tell a claimant that it has won: a higher concurrent claim may still be in flight.
 *     So a claim is *requested* from all members and becomes ownership only when a majority of
 *     the configured members has *granted* it. A member grants a claim only if it is higher than
 *     the last claim it granted and the VIP is free in its eyes: the last granted claim was
 *     released, or is the claimant's own, or its host has been declared dead for
 *     takeoverGraceTicks. Two claims can therefore never both collect a majority while their
 *     holders are alive and connected (majorities intersect): that is S5 for owners.
 *     Grants are persisted before they are sent (the runtime applies `persist` first).
 *  2. Takeover of a dead owner needs a majority of grants from members that each declared the
 *     owner dead: it can happen only on the majority side (S4). The old owner, if it is alive
 *     but cut off, removes the address before the new one may add it: it holds the VIP only
 *     under a lease that a majority renews, and the new owner waits until that lease must have
 *     run out (Leases, below). It also fences at once when it sees fewer than a majority alive
 *     (suspect counts as absent), but that alone is not enough: an isolated host suspects its
 *     peers one probe at a time, and with a one-way cut its gossip may never suspect anyone,
 *     while the majority declares it dead. Survivors declare the death at slightly different
 *     times: a member that refuses a takeover
 *     request only because it has not declared the owner dead yet holds the highest such request
 *     back and grants it the moment it does (after takeoverGraceTicks), under the same rules as
 *     a grant on request, so the claimant does not wait for its retry (claimRetryTicks).
 *  3. Competing claimants: the lower claim yields to the higher one (releases its own, so its
 *     grantors are freed); a claimant that hears a 'held' claim gives up. A lost race is
 *     retried after a seeded backoff. Frames may be lost: claim requests and handoff releases
 *     are retried, the owner repeats 'held' every heldRefreshTicks, and a member that a standing
 *     claim stops from granting (or from claiming) tells that claim's host (VipStanding), which
 *     repeats its lost release or its 'held'.
 *  4. Planned move (VM migrated, operator move), make-before-break: the owner releases the VIP
 *     in favour of the successor but keeps the address (role handingOff: it no longer believes it
 *     owns the VIP); the successor claims, is granted, adds and announces, then sends 'held';
 *     on 'held' the old owner removes the address (at the latest after handoffTimeoutTicks).
 *     For that short overlap two hosts carry the address, yet S5 holds where it matters:
 *       - only one host believes it owns the VIP at any time (the property test checks this);
 *       - the old owner removes only when the successor's first gratuitous ARP is out (the
 *         successor sends 'held' on that report), so every neighbour entry already points at
 *         the successor; the old owner merely still answers what was in flight to its MAC,
 *         which is why the move has no gap (0 ms on namespaces here, against 10-100 ms for
 *         break-before-make; ANCHORS: 0 against 12-40 ms);
 *       - a neighbour can learn the old MAC in the overlap only from the old owner: by its
 *         answer to an ARP request broadcast in that window, or by an ARP request of its own
 *         that carries the VIP as sender. The overlap lasts one message delay (tens of ms
 *         measured), Linux ignores a second change of an entry within locktime (1 s) of the
 *         announcement, and the successor's second burst (secondBurstTicks, validated to come
 *         after handoffTimeoutTicks and set past locktime) corrects any such neighbour once
 *         the old owner has removed.
 *     Sites that cannot accept even that choose plannedMove 'break-before-make': the owner
 *     removes first and releases only once the removal is confirmed.
 *  5. Announcements: a burst on taking over, a second burst secondBurstTicks later, an optional
 *     periodic refresh, and a burst (plus 'held' to all) when a member that was dead or had left
 *     comes back, i.e. when a partition heals (keepalived issues 160/166: no gratuitous ARP after
 *     a split brain heals). If two holders ever meet (the fencing assumption was broken), the
 *     lower claim steps down and the higher re-announces, so clients end on the winner's MAC.
 *  6. Start-up: the address is removed first (a restarted agent does not know whether it still
 *     owns anything); a claim persisted before a crash is released once the removal is done.
 *
 * Leases (why a taker never adds the address while the old owner holds it: S5)
 * ----------------------------------------------------------------------------
 * Terms, in ticks: L = leaseTicks, B = ceil((L + 2) x (1 + 2 x clockDriftPpm / 1e6)).
 * Renewing. Every claim frame carries its send tick (renew). An acceptor answers a request or
 * a 'held' of claim c with a grant that echoes it only if c is its standing claim, not
 * released, and not below `promised`, the highest claim it ever granted or renewed (persisted
 * before any grant is sent). So once an acceptor has granted a claim, it never again renews a
 * lower one. The owner sends 'held' every renewTicks (its lease renewal).
 * Holding. The owner keeps the address at tick t only while a majority Q of the members (itself
 * included, while its own acceptor may renew its claim) echoed a send of its claim made at or
 * after t - L (on its clock): at the tick its lease ends it removes the address and gives the
 * claim up (role releasing). The claimant holds the same lease while it waits (below).
 * Taking over. Every grant also carries quiet: the ticks since the grantor last granted or
 * renewed a claim of another host that it does not know released (a restarted acceptor counts
 * from its start, unless the highest claim it promised is its own and it became owner under it:
 * every other claim it renewed came before that promise, and it outwaited their leases before it
 * added the address, so an agent restarted on the owner takes its VIP back without a wait; see
 * outlivedLeases). A claim granted by a majority G becomes ownership only B - quiet ticks after
 * each of G's grants arrived (readyAtTick; at once when quiet >= B, the usual case after a crash,
 * since SWIM takes longer than L to declare a death). A release is
 * sent only by a host that no longer owns under that claim (it removed the address first, or
 * hands off, which is not owning), so renewals of released claims need no wait.
 * Why. Suppose A owns under cA and B under cB > cA at the same real time t. B's grantors G and
 * A's renewers Q are both majorities: some member m is in both. m renewed cA only before it
 * granted cB (promised), at some real time R; A's lease then counts from A's send S <= R and
 * ends at most L ticks of A's clock later. m's grant of cB reported quiet <= the ticks since R,
 * and B waited B - quiet ticks of its own clock after that grant arrived. With clock rates
 * within clockDriftPpm of each other, (1 + 2 x drift) turns A's L ticks into B's ticks, and the
 * 2 ticks cover rounding to whole ticks on both clocks and the removal within the tick the
 * lease ends (the runtime cuts a burst short for a removal). So A removed the address before
 * B became owner: a contradiction. If instead cB < cA, exchange the names.
 * Assumptions: the agent runs its ticks on time (a stalled agent does not remove the address
 * when its lease ends: where HA runs, the watchdog resets such a host, see ../ha/fencing.ts;
 * the simulator's hangs are shorter than SWIM's detection); leaseTicks and clockDriftPpm agree
 * on every member. A renewal and its echo are two frames, so an owner keeps the VIP only with
 * round trips to a majority: a one-way cut drops it.
 */
import { assert } from '../assert.js'
import { backoffTicks, claimDue, freeFor, grantVerdict, majority, retryDue, wonClaim } from '../claims/index.js'
import type { Prng } from '../prng.js'
import type { HostId, MemberState, VmId } from '../types.js'
import { type VipConfig, type VipSpec, leaseWaitTicks, parseVipAddress, validateVipConfig, validateVipSpecs } from './vip-config.js'
import { type ClaimRef, type VipId, type VipMessage, claimText, compareClaims, sameClaim, vipClaimOrder } from './vip-messages.js'
import {
  VIP_LAMPORT_KEY, vipStateKey,
  type AddressState, type AnnounceReason, type Burst, type RemoveReason, type VipCounters, type VipDurable, type VipEffect,
  type VipInput, type VipRestored, type VipRole, type VipStatus, type VipTarget
} from './vip-types.js'

export * from './vip-types.js'

export interface VipOwnershipInit {
  self: HostId
  /** Every configured member of the cluster, self included: majorities count these. */
  members: HostId[]
  vips: VipSpec[]
  config: VipConfig
  /** Seeded randomness for backoff jitter. */
  prng: Prng
  /** State loaded from the store: the Lamport clock and each VIP's durable record. */
  restored?: VipRestored
}

interface Vip {
  spec: VipSpec
  target: VipTarget
  // Acceptor state (durable).
  granted: ClaimRef | null
  released: boolean
  releasedTo: HostId | null
  releasedAtTick: number
  floor: Map<HostId, number>
  /**
   * Highest request refused because the VIP was not free (held back). Granted at once, under the
   * rules of any grant, when the VIP becomes free: the standing claim is released, or its host
   * is declared dead (after takeoverGraceTicks). The claimant need not wait for its retry.
   */
  refused: ClaimRef | null
  /** `renew` of the held-back request, echoed when it is granted. */
  refusedRenew: number
  /**
   * Highest claim this acceptor granted or renewed (durable). It renews only a claim at least
   * this high: once it has granted a claim, it never again renews a lower one ("Leases").
   */
  promised: ClaimRef | null
  /** Per host, the last claim of its that this acceptor granted or renewed, and when (this life's ticks). */
  acked: Map<HostId, { claim: ClaimRef, tick: number }>
  /**
   * Before this life: 0 (its start) if an earlier life may have granted or renewed a claim of
   * another host whose lease may still run, -Infinity if not: it never promised anything
   * (`promised` is persisted before any grant is sent), or the highest claim it promised is its
   * own and it became owner under it (`ownedUnder`), so it had outwaited every such lease.
   */
  ackedBefore: number
  /** Our own claim under which we last became owner (durable; see VipDurable.ownedUnder). */
  ownedUnder: ClaimRef | null
  /** Tick when the owner last asserted `granted` as held (null: not since it was granted). */
  heldSeenTick: number | null
  /** Tick of our last VipStanding query as a blocked candidate. */
  standingQueryTick: number
  // This host's part.
  role: VipRole
  roleSinceTick: number
  own: ClaimRef | null
  /** The claim of another host that ours supersedes (a takeover or a handoff), for counters and logs. */
  supersedes: ClaimRef | null
  grants: Set<HostId>
  /** Our claim's lease: per member, the latest of our send ticks it echoed while granting the claim. */
  echoes: Map<HostId, number>
  /** A won claim becomes ownership no earlier than this (the wait for an old owner's lease). */
  readyAtTick: number
  /** Owner: next lease renewal ('held' to every member). */
  renewAtTick: number | null
  lastSendTick: number
  backoffUntilTick: number
  vmHere: boolean
  handoffTo: HostId | null
  /** Successor named in the release sent once the removal is confirmed (role releasing). */
  releaseTo: HostId | null
  addr: AddressState
  removeRetryAtTick: number | null
  secondBurstAtTick: number | null
  refreshAtTick: number | null
  heldAtTick: number | null
  lastAnnounceTick: number | null
  lastAnnounceReason: VipStatus['lastAnnounceReason']
  counters: VipCounters
  dirty: boolean
}

function zeroCounters (): VipCounters {
  return { claims: 0, claimsAbandoned: 0, takeovers: 0, ownerChanges: 0, announcements: 0, conflicts: 0, addFailures: 0, removeFailures: 0, announceFailures: 0, rejected: 0 }
}

/**
 * Can no lease that an earlier life of `self`'s acceptor renewed for another host still run?
 * Yes when it never promised a claim, or when the highest claim it promised is its own and it
 * became owner under that claim: it renews only claims at least as high as `promised`, so every
 * other host's claim it renewed came before that promise, and a claimant becomes owner only after
 * the leases its own acceptor renewed have run out ("Leases"). Otherwise a restarted member counts
 * from its start (it does not know when it last renewed one).
 */
function outlivedLeases (self: HostId, d: VipDurable | undefined): boolean {
  const promised = d?.promised ?? d?.granted ?? null
  if (promised === null) return true
  return promised.host === self && sameClaim(promised, d?.ownedUnder ?? null)
}

export class VipOwnership {
  readonly self: HostId
  private members: HostId[]
  private memberSet: Set<HostId>
  private quorum: number
  /** This host was removed from the cluster's members (setMembers). */
  private removed = false
  private readonly config: VipConfig
  private readonly prng: Prng
  private readonly vips = new Map<VipId, Vip>()
  private readonly states = new Map<HostId, MemberState>()
  private readonly deadSince = new Map<HostId, number>()
  private now = 0
  private lamport = 0
  private lamportDirty = false
  private out: VipEffect[] = []
  private leaving = false

  constructor (init: VipOwnershipInit) {
    assert(init.members.includes(init.self), `vip: self ${init.self} is not a configured member`)
    this.self = init.self
    this.members = [...init.members]
    this.memberSet = new Set(init.members)
    this.quorum = majority(init.members.length)
    this.config = validateVipConfig(init.config)
    this.prng = init.prng
    this.lamport = init.restored?.lamport ?? 0
    this.states.set(this.self, 'alive')
    for (const spec of validateVipSpecs(init.vips, init.members)) {
      const a = parseVipAddress(spec.address)
      assert(a !== null, 'vip: address validated above')
      const d = init.restored?.vips[spec.id]
      const v: Vip = {
        spec,
        target: { vip: spec.id, address: a.address, prefixLength: a.prefixLength, iface: spec.iface },
        granted: d?.granted ?? null,
        released: d?.released ?? false,
        releasedTo: d?.releasedTo ?? null,
        releasedAtTick: 0,
        floor: new Map(Object.entries(d?.floor ?? {})),
        refused: null,
        refusedRenew: 0,
        promised: d?.promised ?? d?.granted ?? null,
        acked: new Map(),
        ackedBefore: outlivedLeases(init.self, d) ? -Infinity : 0,
        ownedUnder: d?.ownedUnder ?? null,
        heldSeenTick: null,
        standingQueryTick: -Infinity,
        role: 'standby',
        roleSinceTick: 0,
        own: d?.own ?? null,
        supersedes: null,
        grants: new Set(),
        echoes: new Map(),
        readyAtTick: 0,
        renewAtTick: null,
        lastSendTick: 0,
        backoffUntilTick: 0,
        vmHere: false,
        handoffTo: null,
        releaseTo: null,
        addr: 'unknown',
        removeRetryAtTick: null,
        secondBurstAtTick: null,
        refreshAtTick: null,
        heldAtTick: null,
        lastAnnounceTick: null,
        lastAnnounceReason: null,
        counters: zeroCounters(),
        dirty: false
      }
      if (v.own !== null) this.lamport = Math.max(this.lamport, v.own.lamport)
      if (v.granted !== null) this.lamport = Math.max(this.lamport, v.granted.lamport)
      if (v.promised !== null) this.lamport = Math.max(this.lamport, v.promised.lamport)
      this.vips.set(spec.id, v)
      // Start-up: make sure the address is not here; release a claim we held before a restart.
      if (v.own !== null) this.becomeReleasing(v, null, 'startup')
      else this.ensureAbsent(v, 'startup')
    }
  }

  // ---------------------------------------------------------------------------------------------
  // Driving the module


  /**
   * The cluster's members changed (an agreed configuration version, one member at a time):
   * majorities count the new list; grants of a removed member are dropped.
   */
  setMembers (members: readonly HostId[]): void {
    // Not a member (removed, or not added yet): no majority (it fences) until a version names it again.
    this.removed = !members.includes(this.self)
    if (this.removed) return
    const next = new Set(members)
    for (const h of this.members) {
      if (next.has(h)) continue
      this.states.delete(h)
      // A removed member counts as dead from now on, so that what it owned can be taken over
      // (membership no longer reports on it). The taker still waits out the lease of the removed
      // owner's last renewal ("Leases" above): safety rests on that wait, not on this date.
      if (!this.deadSince.has(h)) this.deadSince.set(h, this.now)
      for (const v of this.vips.values()) v.grants.delete(h)
    }
    this.members = [...members]
    this.memberSet = next
    this.quorum = majority(this.members.length)
  }
  step (input: VipInput): void {
    switch (input.type) {
      case 'vipMessage': this.onMessage(input.from, input.message); break
      case 'members': this.onMembers(input.members); break
      case 'vmPlaced': this.onVmPlaced(input.vm); break
      case 'vmMovedAway': this.onVmMovedAway(input.vm, input.to); break
      case 'operatorMove': this.onOperatorMove(input.vip, input.to); break
      case 'vipApplied': this.onApplied(input.vip, input.op, input.ok, input.code); break
      case 'leave': this.onLeave(); break
    }
    for (const v of this.vips.values()) this.evaluate(v)
  }

  tick (): void {
    this.now++
    for (const v of this.vips.values()) {
      this.tickVip(v)
      this.evaluate(v)
    }
  }

  /** Lets the agent share one Lamport clock: witness the time of any frame received. */
  witness (lamport: number): void {
    if (lamport > this.lamport) { this.lamport = lamport; this.lamportDirty = true }
  }

  /** Effects produced since the last call, persist ops first. */
  takeEffects (): VipEffect[] {
    const persist: VipEffect[] = []
    for (const v of this.vips.values()) {
      if (!v.dirty) continue
      v.dirty = false
      persist.push({ type: 'persist', op: { type: 'put', key: vipStateKey(v.spec.id), value: this.durable(v) } })
    }
    if (this.lamportDirty || persist.length > 0) {
      this.lamportDirty = false
      persist.push({ type: 'persist', op: { type: 'put', key: VIP_LAMPORT_KEY, value: this.lamport } })
    }
    const effects = [...persist, ...this.out]
    this.out = []
    return effects
  }

  status (): VipStatus[] {
    return [...this.vips.values()].map(v => ({
      vip: v.spec.id,
      address: v.spec.address,
      iface: v.spec.iface,
      binding: v.spec.binding,
      role: v.role,
      owner: v.granted !== null && !v.released ? v.granted.host : null,
      ownerClaim: v.granted !== null && !v.released ? { ...v.granted } : null,
      addressHere: v.addr,
      lastAnnounceTick: v.lastAnnounceTick,
      lastAnnounceReason: v.lastAnnounceReason,
      counters: { ...v.counters }
    }))
  }

  /** This host's role for one VIP (cheaper than status()). */
  roleOf (vip: VipId): VipRole | undefined { return this.vips.get(vip)?.role }

  /** The logical time of this module, in ticks since construction. */
  ticks (): number { return this.now }

  // ---------------------------------------------------------------------------------------------
  // Inputs

  private onMessage (from: HostId, m: VipMessage): void {
    const v = this.vips.get(m.vip)
    if (v === undefined || !this.memberSet.has(from) || from === this.self) {
      if (v !== undefined) v.counters.rejected++
      return
    }
    if (m.type === 'vipGrant' || m.type === 'vipStanding') {
      if (m.from !== from) { v.counters.rejected++; return }
      if (m.type === 'vipGrant') this.onGrant(v, from, m)
      else this.onStanding(v, from, m.standing)
      return
    }
    if (m.claim.host !== from) { v.counters.rejected++; return }
    this.witness(m.claim.lamport)
    if (m.type === 'vipClaim') {
      if (m.phase === 'request') this.onRequest(v, from, m.claim, m.renew)
      else this.onHeld(v, from, m.claim, m.renew)
    } else {
      this.onRelease(v, from, m.claim, m.to)
    }
  }

  private onRequest (v: Vip, from: HostId, claim: ClaimRef, renew: number): void {
    if (this.isStale(v, claim)) return
    const cmp = vipClaimOrder.versus(claim, v.granted)
    if (cmp > 0 && v.role === 'claiming' && v.own !== null && compareClaims(claim, v.own) > 0) {
      // The lower claimant yields, so that the members it holds are freed for the higher one.
      this.abandonClaim(v, `yields to ${claimText(claim)}`)
    }
    // The grant rule (../claims/grant.ts); a member grants whether or not it sees a majority.
    switch (grantVerdict({ order: cmp, released: v.released, able: true, free: this.isFreeFor(v, claim.host) })) {
      case 'regrant': if (this.renewable(v, claim)) this.sendGrant(v, from, claim, renew); return // the grant was lost, or the claimant renews
      case 'spent': return
      case 'grant': this.grant(v, claim, renew); return
      case 'blocked': if (v.refused === null || compareClaims(claim, v.refused) > 0) { v.refused = { ...claim }; v.refusedRenew = renew } break
      case 'refuse': case 'unable': break
    }
    // Refused. If we hold the VIP, tell the claimant so it stops trying; if another host's claim
    // stands in the way, tell that host (its release or 'held' may have been lost on the way here).
    if (v.role === 'owner' && v.own !== null) this.send([from], this.heldMessage(v))
    else if (cmp > 0 && v.granted !== null && !v.released && v.granted.host !== this.self && v.granted.host !== from) {
      this.send([v.granted.host], { type: 'vipStanding', vip: v.spec.id, standing: { ...v.granted }, from: this.self })
    }
  }

  /** A member still counts one of our claims as standing. */
  private onStanding (v: Vip, from: HostId, standing: ClaimRef): void {
    if (standing.host !== this.self) { v.counters.rejected++; return }
    if (!sameClaim(standing, v.own)) {
      // A claim we gave up (or superseded) long ago: our release did not reach that member.
      this.send([from], { type: 'vipRelease', vip: v.spec.id, claim: { ...standing }, to: null })
      return
    }
    if (v.role === 'owner' && v.addr === 'present') this.send([from], this.heldMessage(v))
    else if (v.role === 'handingOff' && v.own !== null) this.send([from], { type: 'vipRelease', vip: v.spec.id, claim: { ...v.own }, to: v.handoffTo })
    // claiming, releasing, fenced, or owner still adding: the claim is in play; the member waits.
  }

  /** A grant of our claim, or a renewal of it (the lease), with how long the grantor must make us wait. */
  private onGrant (v: Vip, from: HostId, m: { claim: ClaimRef, renew: number, quiet: number }): void {
    if ((v.role !== 'claiming' && v.role !== 'owner') || !sameClaim(m.claim, v.own)) return
    if (m.renew <= this.now && m.renew > (v.echoes.get(from) ?? -Infinity)) v.echoes.set(from, m.renew)
    if (v.role !== 'claiming') return
    v.grants.add(from)
    v.readyAtTick = Math.max(v.readyAtTick, this.now + leaseWaitTicks(this.config, m.quiet))
    this.tryOwn(v)
  }

  /**
   * A claim granted by a majority while we see one becomes ownership once every lease its
   * grantors may have renewed for another host has run out (readyAtTick), if our own lease
   * still holds then (the claimant renews it while it waits).
   */
  private tryOwn (v: Vip): void {
    if (v.role !== 'claiming' || !wonClaim(v.grants.size, this.members.length, this.quorate()) || this.now < v.readyAtTick) return
    if (this.leaseHolds(v)) this.becomeOwner(v)
    else this.abandonClaim(v, 'no majority renewed the claim while it waited for the old lease')
  }

  private onHeld (v: Vip, from: HostId, claim: ClaimRef, renew: number): void {
    if (this.isStale(v, claim)) return
    if (v.granted === null || compareClaims(claim, v.granted) > 0 || (v.released && !sameClaim(claim, v.granted))) {
      v.granted = { ...claim }
      v.released = false
      v.releasedTo = null
      v.dirty = true
    }
    if (sameClaim(claim, v.granted)) v.heldSeenTick = this.now
    else if (v.granted !== null && !v.released && v.granted.host !== this.self && v.granted.host !== from) {
      // A host holds the VIP by a claim below one we count as standing: that one is either a
      // claim given up whose release we missed, or a second holder. Ask its host.
      this.send([v.granted.host], { type: 'vipStanding', vip: v.spec.id, standing: { ...v.granted }, from: this.self })
    }
    const own = v.own
    switch (v.role) {
      case 'claiming':
        this.abandonClaim(v, `${from.slice(0, 8)} holds it (${claimText(claim)})`)
        break
      case 'owner':
        assert(own !== null, 'vip: owner without a claim')
        v.counters.conflicts++
        if (compareClaims(claim, own) > 0) {
          this.event('vip-conflict', `vip ${v.spec.id} held by ${claimText(claim)} above ours ${claimText(own)}: stepping down`)
          this.becomeReleasing(v, null, 'step-down')
        } else {
          this.event('vip-conflict', `vip ${v.spec.id} also held by ${claimText(claim)} below ours ${claimText(own)}: re-announcing`)
          this.reannounce(v, 'conflict')
        }
        break
      case 'handingOff':
        assert(own !== null, 'vip: handing off without a claim')
        if (compareClaims(claim, own) > 0) {
          this.ensureAbsent(v, 'handoff-done')
          this.becomeStandby(v, `successor ${claimText(claim)} holds it`)
        }
        break
      case 'fenced':
        assert(own !== null, 'vip: fenced without a claim')
        if (compareClaims(claim, own) > 0) this.becomeReleasing(v, null, 'fence')
        break
      case 'standby': case 'releasing':
        break
    }
    // The owner's lease renewal: renewed only by an acceptor that counts the claim as standing.
    if (this.renewable(v, claim)) this.sendGrant(v, from, claim, renew)
  }

  private onRelease (v: Vip, from: HostId, claim: ClaimRef, to: HostId | null): void {
    const floor = v.floor.get(from) ?? -1
    if (claim.lamport > floor) { v.floor.set(from, claim.lamport); v.dirty = true }
    // Only the claim we count as standing can be freed by its release. A release of any other
    // claim (one we refused, or never saw) must not erase the standing one: that would let us
    // grant a second claim while its owner still holds the VIP.
    if (v.granted !== null && !sameClaim(claim, v.granted)) return
    if (v.granted === null || !v.released) {
      v.granted = { ...claim }
      v.released = true
      v.releasedTo = to
      v.releasedAtTick = this.now
      v.dirty = true
    }
    // A request we refused only because of that claim can be granted now.
    this.grantHeldBack(v)
    if (v.role === 'claiming') this.sendRequest(v)
  }

  private onMembers (members: ReadonlyArray<{ id: HostId, state: MemberState }>): void {
    let healed = false
    for (const m of members) {
      if (!this.memberSet.has(m.id) || m.id === this.self) continue
      const prev = this.states.get(m.id)
      if (m.state === 'dead' || m.state === 'left') {
        if (prev !== 'dead' && prev !== 'left') this.deadSince.set(m.id, this.now)
      } else {
        this.deadSince.delete(m.id)
        if (prev === 'dead' || prev === 'left') healed = true
      }
      this.states.set(m.id, m.state)
    }
    if (!healed) return
    // A member came back: the partition may have healed. The owner re-announces (clients on
    // the other side may still point at a fenced host's MAC) and re-asserts its claim.
    for (const v of this.vips.values()) {
      if (v.role === 'owner' && v.addr === 'present') this.reannounce(v, 'heal')
    }
  }

  private onVmPlaced (vm: VmId): void {
    for (const v of this.vips.values()) {
      if (v.spec.binding.kind === 'vm' && v.spec.binding.vm === vm) v.vmHere = true
    }
  }

  private onVmMovedAway (vm: VmId, to: HostId | null): void {
    for (const v of this.vips.values()) {
      if (v.spec.binding.kind !== 'vm' || v.spec.binding.vm !== vm) continue
      v.vmHere = false
      this.plannedMove(v, to !== null && this.memberSet.has(to) && to !== this.self ? to : null)
    }
  }

  private onOperatorMove (vip: VipId, to: HostId): void {
    const v = this.vips.get(vip)
    if (v === undefined) return
    const b = v.spec.binding
    if (b.kind !== 'group' || !b.hosts.includes(to) || to === this.self || v.role !== 'owner') {
      const why = b.kind !== 'group' ? 'it follows a VM' : !b.hosts.includes(to) ? `${to.slice(0, 8)} is not in its group` : to === this.self ? 'this host already holds it' : 'this host is not its owner'
      this.event('vip-move-rejected', `vip ${v.spec.id} move to ${to.slice(0, 8)} rejected: ${why}`)
      return
    }
    this.plannedMove(v, to)
  }

  private onApplied (vip: VipId, op: 'add' | 'remove' | 'announce', ok: boolean, code: string | undefined): void {
    const v = this.vips.get(vip)
    if (v === undefined) return
    if (op === 'announce') {
      if (!ok) {
        v.counters.announceFailures++
        this.event('vip-announce-failed', `vip ${v.spec.id} announcement failed (${code ?? 'unknown'})`)
      }
      return
    }
    if (op === 'add') {
      if (v.addr !== 'adding') return // superseded by a removal issued since
      if (ok) {
        v.addr = 'present'
        this.onAddressAdded(v)
      } else {
        v.counters.addFailures++
        this.event('vip-add-failed', `vip ${v.spec.id} add ${v.spec.address} on ${v.spec.iface} failed (${code ?? 'unknown'})`)
        v.addr = 'unknown'
        v.backoffUntilTick = this.now + backoffTicks(this.config, this.prng)
        if (v.role === 'owner') this.becomeReleasing(v, null, 'add-failed')
        else this.ensureAbsent(v, 'add-failed')
      }
      return
    }
    if (v.addr !== 'removing') return // superseded by an add issued since
    if (ok) {
      v.addr = 'absent'
      v.removeRetryAtTick = null
      if (v.role === 'releasing') this.finishRelease(v)
    } else {
      v.counters.removeFailures++
      v.removeRetryAtTick = this.now + this.config.removeRetryTicks
      this.event('vip-remove-failed', `vip ${v.spec.id} remove ${v.spec.address} from ${v.spec.iface} failed (${code ?? 'unknown'}); retrying (${v.counters.removeFailures} failures)`)
    }
  }

  private onLeave (): void {
    this.leaving = true
    for (const v of this.vips.values()) {
      if (v.role === 'owner' || v.role === 'handingOff' || v.role === 'fenced') this.becomeReleasing(v, null, 'release')
      else if (v.role === 'claiming') this.abandonClaim(v, 'leaving')
    }
  }

  // ---------------------------------------------------------------------------------------------
  // Time and standing decisions

  private tickVip (v: Vip): void {
    const now = this.now
    if (v.addr === 'removing' && v.removeRetryAtTick !== null && now >= v.removeRetryAtTick) {
      v.removeRetryAtTick = null
      this.emitRemove(v, 'retry')
    }
    switch (v.role) {
      case 'claiming':
        if (v.grants.size >= this.quorum) {
          // Won, waiting for an old owner's lease: keep our own lease renewed meanwhile.
          if (now - v.lastSendTick >= this.config.renewTicks) this.sendRequest(v, true)
          break
        }
        switch (claimDue(this.config, now, v.roleSinceTick, v.lastSendTick)) {
          case 'give-up': this.abandonClaim(v, 'no majority of grants in time'); break
          case 'resend': this.sendRequest(v); break
          case 'wait': break
        }
        break
      case 'handingOff':
        if (now - v.roleSinceTick >= this.config.handoffTimeoutTicks) {
          this.ensureAbsent(v, 'handoff-timeout')
          this.becomeStandby(v, 'successor did not take over in time')
        } else if (retryDue(this.config, now, v.lastSendTick) && v.own !== null) {
          v.lastSendTick = now
          this.send(this.others(), { type: 'vipRelease', vip: v.spec.id, claim: { ...v.own }, to: v.handoffTo })
        }
        break
      case 'owner':
        if (v.renewAtTick !== null && now >= v.renewAtTick) {
          // 'held' says the address is here: a predecessor handing off removes its copy when it
          // hears it. Until our add is done, renew with the request, which grantors echo alike.
          if (v.addr === 'present') this.send(this.others(), this.heldMessage(v))
          else this.sendRequest(v, true)
          v.renewAtTick = now + this.config.renewTicks
        }
        if (v.addr !== 'present') break
        if (v.secondBurstAtTick !== null && now >= v.secondBurstAtTick) {
          v.secondBurstAtTick = null
          this.announce(v, 'second-burst')
        }
        if (v.refreshAtTick !== null && now >= v.refreshAtTick) {
          this.announce(v, 'refresh')
          v.refreshAtTick = now + this.config.refreshTicks
        }
        if (v.heldAtTick !== null && now >= v.heldAtTick) {
          this.send(this.others(), this.heldMessage(v))
          v.heldAtTick = now + this.config.heldRefreshTicks
        }
        break
      case 'standby':
        this.queryStanding(v)
        break
      case 'releasing': case 'fenced':
        break
    }
  }

  /**
   * A candidate kept from claiming by a standing claim of a live host that has not asserted it
   * lately asks that host about it, at most once per claimTimeoutTicks.
   */
  private queryStanding (v: Vip): void {
    const g = v.granted
    if (g === null || v.released || g.host === this.self || !this.isUp(g.host)) return
    if (!this.isCandidate(v) || this.isFreeFor(v, this.self)) return
    const quiet = this.config.heldRefreshTicks + this.config.claimTimeoutTicks
    if (v.heldSeenTick !== null && this.now - v.heldSeenTick <= quiet) return
    if (this.now - v.standingQueryTick < this.config.claimTimeoutTicks) return
    v.standingQueryTick = this.now
    this.send([g.host], { type: 'vipStanding', vip: v.spec.id, standing: { ...g }, from: this.self })
  }

  /** Decisions that depend on standing conditions (quorum, eligibility, freedom), after every input and tick. */
  private evaluate (v: Vip): void {
    // A death declared (or its grace run out) frees the VIP: grant the held-back request first,
    // so that this host does not start a claim of its own against it.
    this.grantHeldBack(v)
    const quorate = this.quorate()
    switch (v.role) {
      case 'owner':
        if (!quorate) this.becomeFenced(v)
        else if (!this.leaseHolds(v)) {
          // No majority renewed our claim within leaseTicks: drop the address before the lease
          // runs out anywhere else's reckoning, and give the claim up once it is gone.
          this.event('vip-lease-expired', `vip ${v.spec.id}: no majority renewed ${claimText(v.own)} within ${this.config.leaseTicks} ticks`)
          this.becomeReleasing(v, null, 'lease-expired')
        }
        break
      case 'claiming':
        if (!quorate) this.abandonClaim(v, 'lost sight of a majority')
        else this.tryOwn(v)
        break
      case 'handingOff':
        if (!quorate) {
          this.ensureAbsent(v, 'fence')
          this.becomeStandby(v, 'lost sight of a majority while handing off')
        }
        break
      case 'fenced':
        if (quorate) {
          if (this.isEligible(v) && !this.leaving && this.isFreeFor(v, this.self) && this.now >= v.backoffUntilTick) this.becomeClaiming(v)
          else this.becomeReleasing(v, null, 'release')
        }
        break
      case 'standby':
        if (this.shouldClaim(v)) this.becomeClaiming(v)
        break
      case 'releasing':
        break
    }
  }

  private shouldClaim (v: Vip): boolean {
    return this.isCandidate(v) && this.isFreeFor(v, this.self)
  }

  /** Would this host claim the VIP if it were free? (Eligible, quorate, not backing off, preferred.) */
  private isCandidate (v: Vip): boolean {
    if (this.leaving || !this.isEligible(v) || this.now < v.backoffUntilTick || !this.quorate()) return false
    const b = v.spec.binding
    if (b.kind === 'vm') return true // S1: the VM runs on one host only
    if (v.released && v.releasedTo !== null) {
      if (v.releasedTo === this.self) return true
      const reserved = this.now - v.releasedAtTick < this.config.handoffReserveTicks
      if (reserved && this.isUp(v.releasedTo)) return false
    }
    // First host of the group, in order of preference, that is up and not the one that has just
    // given it up (a host whose add failed backs off; a dead owner is not up anyway).
    const recent = this.now - v.releasedAtTick < this.config.handoffReserveTicks
    const leaving = v.granted !== null && v.released && recent ? v.granted.host : null
    const first = b.hosts.find(h => this.isUp(h) && h !== leaving)
    return first === this.self
  }

  // ---------------------------------------------------------------------------------------------
  // Transitions (all of them are here)

  private becomeStandby (v: Vip, why: string): void {
    this.transition(v, 'standby', why)
    v.own = null
    v.grants.clear()
    v.handoffTo = null
    v.dirty = true
  }

  private becomeClaiming (v: Vip): void {
    const prev = v.granted !== null && v.granted.host !== this.self ? { ...v.granted } : null
    const takeover = prev !== null && !v.released
    const claim: ClaimRef = { host: this.self, lamport: ++this.lamport }
    this.lamportDirty = true
    this.transition(v, 'claiming', `claim ${claimText(claim)}${takeover ? ` takes over from dead ${claimText(prev)}` : ''}`)
    v.own = claim
    v.supersedes = takeover ? prev : null
    v.counters.claims++
    v.grants.clear()
    v.echoes.clear()
    // Our own acceptor grants first (it is free for us: that is why we claim), and may itself
    // have renewed another host's lease lately.
    assert(this.isFreeFor(v, this.self), `vip ${v.spec.id}: claiming a VIP that is not free`)
    v.readyAtTick = this.now + leaseWaitTicks(this.config, this.quietFor(v, this.self))
    this.setGranted(v, claim)
    v.grants.add(this.self)
    v.dirty = true
    this.sendRequest(v)
    this.tryOwn(v)
  }

  private becomeOwner (v: Vip): void {
    assert(v.own !== null && v.role === 'claiming', `vip ${v.spec.id}: owner without a claim`)
    this.transition(v, 'owner', `claim ${claimText(v.own)} granted by ${v.grants.size}/${this.members.length}`)
    if (v.supersedes !== null) v.counters.takeovers++
    v.counters.ownerChanges++
    v.addr = 'adding'
    v.removeRetryAtTick = null
    v.renewAtTick = this.now + this.config.renewTicks
    // Persisted before the add goes out: a restart then knows this host outwaited the leases
    // its acceptor had renewed for other hosts (ackedBefore).
    v.ownedUnder = { ...v.own }
    v.dirty = true
    this.out.push({ type: 'add-and-announce', ...v.target, burst: this.burst() })
  }

  private becomeHandingOff (v: Vip, to: HostId): void {
    assert(v.own !== null, `vip ${v.spec.id}: handing off without a claim`)
    this.transition(v, 'handingOff', `to ${to.slice(0, 8)} (make-before-break)`)
    v.handoffTo = to
    this.markReleased(v, v.own, to)
    v.lastSendTick = this.now
    this.send(this.others(), { type: 'vipRelease', vip: v.spec.id, claim: { ...v.own }, to })
  }

  private becomeReleasing (v: Vip, to: HostId | null, reason: RemoveReason): void {
    this.transition(v, 'releasing', `${reason}${to !== null ? `, to ${to.slice(0, 8)}` : ''}`)
    v.releaseTo = to
    v.grants.clear()
    this.ensureAbsent(v, reason)
    if (v.addr === 'absent') this.finishRelease(v)
  }

  private becomeFenced (v: Vip): void {
    this.transition(v, 'fenced', 'fewer than a majority of members alive')
    v.secondBurstAtTick = null
    v.refreshAtTick = null
    v.heldAtTick = null
    this.ensureAbsent(v, 'fence')
  }

  private transition (v: Vip, to: VipRole, why: string): void {
    const from = v.role
    v.role = to
    v.roleSinceTick = this.now
    this.event('vip-role', `vip ${v.spec.id} became ${to} (from ${from}): ${why}`)
  }

  // ---------------------------------------------------------------------------------------------
  // Helpers

  private plannedMove (v: Vip, to: HostId | null): void {
    if (v.role === 'claiming') { this.abandonClaim(v, 'no longer eligible'); return }
    if (v.role === 'fenced') { this.becomeReleasing(v, null, 'release'); return }
    if (v.role !== 'owner') return
    if (to !== null && this.config.plannedMove === 'make-before-break' && v.addr === 'present') this.becomeHandingOff(v, to)
    else this.becomeReleasing(v, to, 'release')
  }

  private abandonClaim (v: Vip, why: string): void {
    assert(v.role === 'claiming' && v.own !== null, `vip ${v.spec.id}: abandoning without a claim`)
    v.counters.claimsAbandoned++
    const own = v.own
    this.markReleased(v, own, null)
    this.send(this.others(), { type: 'vipRelease', vip: v.spec.id, claim: { ...own }, to: null })
    v.backoffUntilTick = this.now + backoffTicks(this.config, this.prng)
    this.becomeStandby(v, why)
  }

  private finishRelease (v: Vip): void {
    assert(v.role === 'releasing' && v.addr === 'absent', `vip ${v.spec.id}: release before removal`)
    const own = v.own
    if (own !== null) {
      this.markReleased(v, own, v.releaseTo)
      this.send(this.others(), { type: 'vipRelease', vip: v.spec.id, claim: { ...own }, to: v.releaseTo })
    }
    v.releaseTo = null
    this.becomeStandby(v, own !== null ? `released ${claimText(own)}` : 'nothing to release')
  }

  private onAddressAdded (v: Vip): void {
    this.noteAnnounce(v, 'takeover')
    if (v.role !== 'owner') return
    v.secondBurstAtTick = this.now + this.config.secondBurstTicks
    v.refreshAtTick = this.config.refreshTicks > 0 ? this.now + this.config.refreshTicks : null
    v.heldAtTick = this.now + this.config.heldRefreshTicks
    this.send(this.others(), this.heldMessage(v))
  }

  private reannounce (v: Vip, reason: AnnounceReason): void {
    if (v.addr !== 'present') return
    this.announce(v, reason)
    // A second burst after the other side has had time to remove (and past Linux's locktime).
    v.secondBurstAtTick = this.now + this.config.secondBurstTicks
    this.send(this.others(), this.heldMessage(v))
    v.heldAtTick = this.now + this.config.heldRefreshTicks
  }

  private announce (v: Vip, reason: AnnounceReason): void {
    this.noteAnnounce(v, reason)
    this.out.push({ type: 'announce', ...v.target, burst: this.burst(), reason })
  }

  private noteAnnounce (v: Vip, reason: 'takeover' | AnnounceReason): void {
    v.lastAnnounceTick = this.now
    v.lastAnnounceReason = reason
    v.counters.announcements++
  }

  private ensureAbsent (v: Vip, reason: RemoveReason): void {
    if (v.addr === 'absent' || v.addr === 'removing') return
    this.emitRemove(v, reason)
  }

  private emitRemove (v: Vip, reason: RemoveReason): void {
    v.addr = 'removing'
    v.secondBurstAtTick = null
    v.refreshAtTick = null
    v.heldAtTick = null
    this.out.push({ type: 'remove', ...v.target, reason })
  }

  /**
   * Grants the held-back request if the VIP is now free for its host, under the rules of a grant
   * on request: not stale (its host has not released it since) and above the claim we count as
   * standing. One that can never be granted any more is forgotten; one still blocked is kept.
   */
  private grantHeldBack (v: Vip): void {
    const r = v.refused
    if (r === null) return
    if (this.isStale(v, r) || (v.granted !== null && compareClaims(r, v.granted) <= 0)) { v.refused = null; return }
    if (!this.isFreeFor(v, r.host)) return
    this.event('vip-grant-held-back', `vip ${v.spec.id} grants held-back ${claimText(r)}: ${v.granted === null || v.released ? 'released' : `${claimText(v.granted)} dead`}`)
    this.grant(v, r, v.refusedRenew)
  }

  private grant (v: Vip, claim: ClaimRef, renew: number): void {
    this.setGranted(v, claim)
    if (sameClaim(claim, v.refused)) v.refused = null
    this.sendGrant(v, claim.host, claim, renew)
  }

  /** May this acceptor renew `claim` (answer it with a grant)? Only the standing claim, not released, and never one below a claim it has granted. */
  private renewable (v: Vip, claim: ClaimRef): boolean {
    return sameClaim(claim, v.granted) && !v.released && (v.promised === null || compareClaims(claim, v.promised) >= 0)
  }

  /** A grant, or a renewal: the claim's lease counts from `renew`; `quiet` tells the claimant how long to wait. */
  private sendGrant (v: Vip, to: HostId, claim: ClaimRef, renew: number): void {
    const quiet = Math.min(this.quietFor(v, claim.host), 0xffff_ffff)
    v.acked.set(claim.host, { claim: { ...claim }, tick: this.now })
    if (v.promised === null || compareClaims(claim, v.promised) > 0) { v.promised = { ...claim }; v.dirty = true }
    this.send([to], { type: 'vipGrant', vip: v.spec.id, claim: { ...claim }, from: this.self, renew, quiet })
  }

  /**
   * Ticks since this acceptor last granted or renewed a claim of a host other than `claimant`
   * that it does not know released: such a host may hold the VIP until its lease runs out. A
   * restarted acceptor does not know when its previous life last renewed one: it counts from its
   * start, unless that life cannot have left such a lease running (outlivedLeases).
   */
  private quietFor (v: Vip, claimant: HostId): number {
    let last = v.ackedBefore
    for (const [h, a] of v.acked) if (h !== claimant && a.tick > last && !this.isStale(v, a.claim)) last = a.tick
    return this.now - last
  }

  /** Our claim's lease holds: a majority (us included, while our acceptor may renew it) echoed a send of ours within leaseTicks. */
  private leaseHolds (v: Vip): boolean {
    if (v.own === null) return false
    const sent: number[] = [...v.echoes.values()]
    if (this.renewable(v, v.own)) sent.push(this.now)
    if (sent.length < this.quorum) return false
    sent.sort((a, b) => b - a)
    return this.now - sent[this.quorum - 1]! < this.config.leaseTicks
  }

  private setGranted (v: Vip, claim: ClaimRef): void {
    v.heldSeenTick = null
    if (v.promised === null || compareClaims(claim, v.promised) > 0) v.promised = { ...claim }
    v.granted = { ...claim }
    v.released = false
    v.releasedTo = null
    v.dirty = true
  }

  private markReleased (v: Vip, claim: ClaimRef, to: HostId | null): void {
    const floor = v.floor.get(claim.host) ?? -1
    if (claim.lamport > floor) v.floor.set(claim.host, claim.lamport)
    if (v.granted === null || sameClaim(claim, v.granted)) {
      v.granted = { ...claim }
      v.released = true
      v.releasedTo = to
      v.releasedAtTick = this.now
    }
    v.dirty = true
  }

  /** To the members that have not granted the claim yet, or (`everyone`: renewing the lease while waiting) to all. */
  private sendRequest (v: Vip, everyone = false): void {
    assert(v.own !== null, 'vip: request without a claim')
    v.lastSendTick = this.now
    const to = this.others().filter(h => everyone || !v.grants.has(h))
    if (to.length > 0) this.send(to, { type: 'vipClaim', vip: v.spec.id, claim: { ...v.own }, phase: 'request', renew: this.now })
  }

  /** 'held': the owner asserts its claim; it is also the lease renewal, which grantors echo. */
  private heldMessage (v: Vip): VipMessage {
    assert(v.own !== null, 'vip: held without a claim')
    return { type: 'vipClaim', vip: v.spec.id, claim: { ...v.own }, phase: 'held', renew: this.now }
  }

  private send (to: HostId[], message: VipMessage): void {
    if (to.length > 0) this.out.push({ type: 'send', to, message })
  }

  private event (kind: string, text: string): void {
    this.out.push({ type: 'event', event: { kind, host: this.self, text } })
  }

  /** A message about a claim its host has since released is stale. */
  private isStale (v: Vip, claim: ClaimRef): boolean {
    return claim.lamport <= (v.floor.get(claim.host) ?? -1)
  }

  /** May this member grant (or `host` make) a claim on the VIP now? Its holder may be taken over once declared dead for takeoverGraceTicks. */
  private isFreeFor (v: Vip, host: HostId): boolean {
    return freeFor(v.granted, v.released, host, h => {
      const since = this.deadSince.get(h)
      return since !== undefined && this.now - since >= this.config.takeoverGraceTicks
    })
  }

  private isEligible (v: Vip): boolean {
    const b = v.spec.binding
    return b.kind === 'vm' ? v.vmHere : b.hosts.includes(this.self)
  }

  private isUp (h: HostId): boolean {
    const s = this.states.get(h)
    return s === 'alive' || s === 'suspect'
  }

  /** We see a majority of the configured members alive (suspect members do not count). */
  private quorate (): boolean {
    if (this.removed) return false
    let alive = 0
    for (const h of this.members) if (h === this.self || this.states.get(h) === 'alive') alive++
    return alive >= this.quorum
  }

  private others (): HostId[] { return this.members.filter(h => h !== this.self) }

  private burst (): Burst { return { count: this.config.burstCount, intervalMs: this.config.burstIntervalMs } }

  private durable (v: Vip): VipDurable {
    return {
      granted: v.granted === null ? null : { ...v.granted },
      released: v.released,
      releasedTo: v.releasedTo,
      floor: Object.fromEntries(v.floor),
      own: v.own === null ? null : { ...v.own },
      promised: v.promised === null ? null : { ...v.promised },
      ownedUnder: v.ownedUnder === null ? null : { ...v.ownedUnder }
    }
  }
}
