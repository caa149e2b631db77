/** Messages, inputs, effects, durable state and status of the HA module (plain data). */
import type { CoreEvent, PersistOp } from '../effects.js'
import type { HostId, MemberState, VmId } from '../types.js'
import type { HaSource } from './ha-config.js'
import type { HaClaim } from './restart.js'

/** Cluster-wide arming, a versioned register: the higher version wins. */
export interface HaMode { version: number, armed: boolean }
/** Maintenance of one host, a versioned register per host. */
export interface HaMaintenance { host: HostId, version: number, on: boolean }

export type HaMessage =
  /** Heartbeat to one member: our life and tick, the latest (life, tick) of theirs we saw (renews their lease), our mode and maintenance registers. */
  | { type: 'haBeat', life: number, sent: number, echo: { life: number, sent: number } | null, mode: HaMode, maintenance: HaMaintenance[] }
  /**
   * Ask for grants ('request'), or assert a granted claim ('held', by its running owner).
   * 'handover': sent by the owner of the VM's claim, asking for a claim of a migration's target
   * (claim.host): the owner's consent to a live migration (index.ts, handover argument).
   */
  | { type: 'haClaim', vm: VmId, claim: HaClaim, phase: 'request' | 'held' | 'handover' }
  | { type: 'haGrant', vm: VmId, claim: HaClaim }
  /** A request we will not grant, with the claim that stands in its way. */
  | { type: 'haRefuse', vm: VmId, claim: HaClaim, standing: HaClaim | null, released: boolean }
  /**
   * The claim's owner does not run the VM (fenced, failed to start, abandoned, lost in a reset).
   * granted: the claim had been granted by a majority (then it supersedes any lower claim).
   */
  | { type: 'haRelease', vm: VmId, claim: HaClaim, granted: boolean }
  /** "You stand for this VM with this claim, yet you are quiet": answered by 'held' or a release. */
  | { type: 'haQuery', vm: VmId, claim: HaClaim }

/** Driver commands. Results come back as `haDriverResult` inputs with the same command. */
export type HaCommand =
  | { kind: 'haStart', vm: VmId, epoch: number, source: HaSource, mode: 'boot' | 'resume' }
  | { kind: 'haStop', vm: VmId, epoch: number, mode: 'stop' | 'pause' | 'destroy', reason: 'fence' | 'conflict' | 'superseded' }

export type HaInput =
  | { type: 'members', members: ReadonlyArray<{ id: HostId, state: MemberState }> }
  | { type: 'haMessage', from: HostId, message: HaMessage }
  /** Any other frame from a member (lets grantors measure silence over all traffic). */
  | { type: 'heard', from: HostId }
  | { type: 'haDriverResult', command: HaCommand, ok: boolean, code?: string }
  /** Operator: disarm (network maintenance) or re-arm the whole cluster. */
  | { type: 'haOperatorMode', armed: boolean }
  /** Operator: put a host in maintenance (not failed over, not a target) or take it out. */
  | { type: 'haOperatorMaintenance', host: HostId, on: boolean }

export type HaEffect =
  | { type: 'persist', op: PersistOp }
  | { type: 'send', to: HostId[], message: HaMessage }
  | { type: 'driver', command: HaCommand }
  /** Hints for the VIP module: a VM now runs here / no longer runs here. */
  | { type: 'vip', hint: 'vmPlaced' | 'vmMovedAway', vm: VmId }
  /** For the migration machine: the incoming copy of a migration here was destroyed by a fence. */
  | { type: 'handover', vm: VmId, what: 'incomingFenced' }
  | { type: 'event', event: CoreEvent }

export const HA_KEY_PREFIX = 'ha/'
export function haVmKey (vm: VmId): string { return `${HA_KEY_PREFIX}vm/${vm}` }
export const HA_MODES_KEY = `${HA_KEY_PREFIX}modes`
export const HA_MAINT_KEY = `${HA_KEY_PREFIX}maintenance`

/** What survives a restart, per VM: the acceptor's standing claim and this host's own claim. */
/** ownGranted: our own claim had reached a majority (its release then supersedes lower claims). */
/** priors: claims below the standing one that may still run (ha-manager.ts); absent = none. */
/** handover: the claim this host (a migration's source) asked for its target (absent = none). */
/** incomingFrom: this host receives the VM by a migration from that host (absent = none). */
export interface HaVmDurable { standing: HaClaim | null, released: boolean, own: HaClaim | null, ownGranted?: boolean, priors?: HaClaim[], handover?: HaClaim, incomingFrom?: HostId, ownEpochMax?: number }

export interface HaRestored {
  vms: Record<VmId, HaVmDurable>
  /** Mode register of every member as last heard (self included). */
  modes: Record<HostId, HaMode>
  maintenance: HaMaintenance[]
}

/** This host's part in one VM. */
export type HaRole =
  | 'idle' /** not here */
  | 'claiming' /** asking for grants */
  | 'starting' /** granted; haStart issued */
  | 'running'
  | 'stopping' /** haStop issued (fence or conflict) */
  | 'paused' /** fenced with the pause policy; resumed only by a new granted claim */
  | 'incoming' /** a live migration brings the VM here: fenced like a running copy until it commits or aborts */

export interface HaVmStatus {
  vm: VmId
  role: HaRole
  standing: HaClaim | null
  released: boolean
  owner: HostId | null
  attempts: number
  failed: boolean
}

export interface HaCounters {
  claims: number
  claimsAbandoned: number
  restarts: number
  startFailures: number
  fences: number
  conflicts: number
  grants: number
  refusals: number
}

/** `starling ha status`: one host's account. */
export interface HaStatus {
  self: HostId
  tick: number
  quorum: { size: number, needed: number, present: HostId[], quorate: boolean, lastQuorateTick: number | null }
  fence: { fencing: boolean, deadlineTick: number | null, watchdogOk: boolean }
  mode: HaMode & { fencingOff: boolean }
  maintenance: HostId[]
  /** Members this host would let be taken over now (dead, silent past the fence delay, armed). */
  fencedHosts: HostId[]
  /** VMs free to restart and not failed, by this host's records. */
  pending: VmId[]
  /** Restarts this host has done (successful starts under a claim of epoch > 0). */
  restartsDone: number
  vms: HaVmStatus[]
  counters: HaCounters
}
