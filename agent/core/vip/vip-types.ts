/**
 * The shapes around VIP ownership (vip-ownership.ts): its inputs, its effects, the durable record
 * it persists, and the status it reports. Plain data.
 */
import { assert } from '../assert.js'
import type { CoreEvent, PersistOp } from '../events.js'
import type { HostId, MemberState, VmId } from '../types.js'
import type { VipSpec } from './vip-config.js'
import type { ClaimRef, VipId, VipMessage } from './vip-messages.js'

/** This host's part in one VIP. */
export type VipRole =
  /** Neither owner nor claimant; the address is (being made) absent here. */
  | 'standby'
  /** Our claim request is out, waiting for a majority of grants; the address is absent here. */
  | 'claiming'
  /** A majority granted our claim: the address is (being) added here and announced. */
  | 'owner'
  /** Make-before-break: we released the VIP to a successor and keep the address only until it holds. Not an owner. */
  | 'handingOff'
  /** We are removing the address; the release of our claim is sent once the removal is confirmed. */
  | 'releasing'
  /** We hold a granted claim but see no majority alive: the address is removed (self-fencing, S4). */
  | 'fenced'

/** What this host knows about the address on its own interface. */
export type AddressState = 'unknown' | 'absent' | 'adding' | 'present' | 'removing'

/** One burst of gratuitous ARP. */
export interface Burst {
  count: number
  /** Wall milliseconds between the packets of the burst (an edge parameter from the config). */
  intervalMs: number
}

export type AnnounceReason = 'second-burst' | 'refresh' | 'heal' | 'conflict'
export type RemoveReason = 'startup' | 'handoff-done' | 'handoff-timeout' | 'release' | 'fence' | 'lease-expired' | 'step-down' | 'add-failed' | 'retry'

/** Where to act: the address and interface of a VIP. */
export interface VipTarget {
  vip: VipId
  /** Dotted IPv4 address. */
  address: string
  prefixLength: number
  iface: string
}

/**
 * What the module asks the runtime to do, in order. Persist ops always come first in a batch
 * (persist before send). Address effects report back with a `vipApplied` input; the runtime
 * applies them in the order given, one at a time (an add overtaken by a later remove would
 * leave an address the core believes gone).
 */
export type VipEffect =
  | { type: 'persist', op: PersistOp }
  /** Send a message to each listed member (direct frames; `from` on arrival must be this host). */
  | { type: 'send', to: HostId[], message: VipMessage }
  /**
   * Add the address, then start a burst. Report `vipApplied {op:'add'}` once the address is
   * added and the first gratuitous ARP has gone out (the rest of the burst may continue): the
   * 'held' claim that makes an old owner remove the address is sent on that report.
   */
  | ({ type: 'add-and-announce', burst: Burst } & VipTarget)
  /** A burst of gratuitous ARP for an address we hold. Report `vipApplied {op:'announce'}`. */
  | ({ type: 'announce', burst: Burst, reason: AnnounceReason } & VipTarget)
  /** Remove the address (absent already is success). Report `vipApplied {op:'remove'}`. */
  | ({ type: 'remove', reason: RemoveReason } & VipTarget)
  /** A transition or notable event, for the log (the core does not log). */
  | { type: 'event', event: CoreEvent }

/** An address change for the runtime (an effect of type add-and-announce, announce or remove). */
export type VipAddressEffect = Extract<VipEffect, { type: 'add-and-announce' | 'announce' | 'remove' }>

export type VipInput =
  /** A VIP message from a peer, decoded at the edge; `from` is the authenticated sender. */
  | { type: 'vipMessage', from: HostId, message: VipMessage }
  /** The membership view changed (or periodically): each configured member's state. Self may be absent (counted alive). */
  | { type: 'members', members: ReadonlyArray<{ id: HostId, state: MemberState }> }
  /** A VM now runs on this host (started, migrated in, restarted here by HA). */
  | { type: 'vmPlaced', vm: VmId }
  /** A VM no longer runs here: migrated to `to` (a planned move), or stopped/fenced (`to` null). */
  | { type: 'vmMovedAway', vm: VmId, to: HostId | null }
  /** The operator asked to move a group VIP to `to`; acted on by the current owner only. */
  | { type: 'operatorMove', vip: VipId, to: HostId }
  /** The runtime carried out an address effect. `code` is the adapter's error code on failure. */
  | { type: 'vipApplied', vip: VipId, op: 'add' | 'remove' | 'announce', ok: boolean, code?: string }
  /** The agent is leaving the cluster: give every VIP up. */
  | { type: 'leave' }

/** The durable part of one VIP (key `vip/state/<id>`). */
export interface VipDurable {
  /** The highest claim this member granted or learnt as held. */
  granted: ClaimRef | null
  /** True once `granted` has been released by its holder. */
  released: boolean
  releasedTo: HostId | null
  /** Per host, the highest Lamport time of a claim of its that was released: older messages about it are stale. */
  floor: Record<HostId, number>
  /** Our own outstanding claim (claiming, owner, handing off, fenced), released after a restart. */
  own: ClaimRef | null
  /**
   * The highest claim this member granted or renewed: it never renews a lower one (the lease
   * argument of vip-ownership.ts). Absent in records written before leases: `granted` stands in.
   */
  promised?: ClaimRef | null
  /**
   * Our own claim under which this member last became owner. When it is also `promised`, every
   * claim of another host that this member granted or renewed came before it, and the owner
   * waited until their leases had run out before it added the address: a restarted member then
   * has no lease of another host to wait for. Absent in older records: assume it may have one.
   */
  ownedUnder?: ClaimRef | null
}

export const VIP_KEY_PREFIX = 'vip/'
export const VIP_LAMPORT_KEY = 'vip/lamport'
const VIP_STATE_PREFIX = 'vip/state/'
export function vipStateKey (vip: VipId): string { return `${VIP_STATE_PREFIX}${vip}` }

/** What `starling vips` shows for one VIP, as this host sees it. */
export interface VipStatus {
  vip: VipId
  address: string
  iface: string
  binding: VipSpec['binding']
  role: VipRole
  /** The owner as this host knows it: the holder of the last granted claim not released; null if free or unknown. */
  owner: HostId | null
  ownerClaim: ClaimRef | null
  addressHere: AddressState
  /** Tick of the last burst this host sent for the VIP, and why; null if never. */
  lastAnnounceTick: number | null
  lastAnnounceReason: 'takeover' | AnnounceReason | null
  counters: VipCounters
}

export interface VipCounters {
  claims: number
  claimsAbandoned: number
  takeovers: number
  ownerChanges: number
  announcements: number
  conflicts: number
  addFailures: number
  removeFailures: number
  announceFailures: number
  /** Messages dropped: unknown VIP, sender not a member, or sender not the claim's host. */
  rejected: number
}

/** State loaded from the store, for VipOwnershipInit.restored. */
export interface VipRestored {
  lamport: number
  vips: Record<VipId, VipDurable>
}

function isClaim (c: unknown): c is ClaimRef {
  return typeof c === 'object' && c !== null && typeof (c as ClaimRef).host === 'string' && Number.isInteger((c as ClaimRef).lamport)
}

function isDurable (v: unknown): v is VipDurable {
  if (typeof v !== 'object' || v === null) return false
  const d = v as VipDurable
  return (d.granted === null || isClaim(d.granted)) && typeof d.released === 'boolean' &&
    (d.releasedTo === null || typeof d.releasedTo === 'string') && (d.own === null || isClaim(d.own)) &&
    (d.promised === undefined || d.promised === null || isClaim(d.promised)) &&
    (d.ownedUnder === undefined || d.ownedUnder === null || isClaim(d.ownedUnder)) &&
    typeof d.floor === 'object' && d.floor !== null && Object.values(d.floor).every(x => Number.isInteger(x))
}

/**
 * Rebuilds `VipOwnershipInit.restored` from the store entries under VIP_KEY_PREFIX. A record that
 * does not have the shape written by the core fails an assertion: an acceptor that forgot what it
 * granted could grant a second owner, so the agent stops rather than guess.
 */
export function restoreVipState (entries: ReadonlyArray<readonly [string, unknown]>): VipRestored {
  let lamport = 0
  const vips: Record<VipId, VipDurable> = {}
  for (const [key, value] of entries) {
    if (key === VIP_LAMPORT_KEY) {
      assert(Number.isInteger(value), `vip: stored ${key} is not an integer`)
      lamport = value as number
    } else if (key.startsWith(VIP_STATE_PREFIX)) {
      assert(isDurable(value), `vip: stored ${key} is malformed`)
      vips[key.slice(VIP_STATE_PREFIX.length)] = value
    }
  }
  return { lamport, vips }
}
