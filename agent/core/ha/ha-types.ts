/** Messages, inputs, effects, durable state and status of the HA module (plain data). */
import type { CoreEvent, PersistOp } from '../events.js'
import type { HostId, MemberState, VmId } from '../types.js'
import type { HaSource } from './ha-config.js'
import type { HaClaim } from './restart.js'

/** Cluster-wide arming, a versioned register: the higher version wins. */
export interface HaMode { version: number, armed: boolean }
/** Maintenance of one host, a versioned register per host. */
export interface HaMaintenance { host: HostId, version: number, on: boolean }
/**
 * An operator's word that `host` is down for good in its life `life` (powered off, its VMs
 * stopped): lets the cluster take over a host that reported no fence. A later life of the host
 * voids it. Spread by the beats; the highest life wins.
 */
export interface HaConfirmDown { host: HostId, life: number }
/** What a member last said of its own fence: in which life, and whether a watchdog would reset it. */
export interface HaFenceReport { life: number, fenced: boolean }

export type HaMessage =
  /** Heartbeat to one member: our life and tick, the latest (life, tick) of theirs we saw (renews their lease), our mode and maintenance registers. */
  | {
    type: 'haBeat', life: number, sent: number, echo: { life: number, sent: number } | null, mode: HaMode, maintenance: HaMaintenance[],
    /** The sender holds a watchdog that resets it (index.ts, fence gate); absent from an older peer = false. */
    fenced: boolean
    /** Operators' confirmations that a host is down (HaConfirmDown). */
    confirmed: HaConfirmDown[]
  }
  /**
   * Ask for grants ('request'), or assert a granted claim ('held', by its running owner).
   * 'handover': sent by the owner of the VM's claim, asking for a claim of a migration's target
   * (claim.host): the owner's consent to a live migration (index.ts, handover argument).
   */
  | {
    type: 'haClaim', vm: VmId, claim: HaClaim, phase: 'request' | 'held' | 'handover'
    /**
     * A request to resume the sender's paused copy, which runs under this claim (its host is the
     * sender). Absent: a boot from the VM's disk (or an older peer). An acceptor refuses a resume
     * over any claim above it (ha-manager.ts, onRequest: such a claim may have booted the VM from
     * its disk, and the paused memory is then older than the disk).
     */
    resumes?: HaClaim
    /**
     * The sender knows that the home of this claim's protection applied it (heard the home
     * speak of it, or was told so by a member): index.ts, live protection a. Absent: not known (or an older peer). Sent on requests and 'held' claims.
     */
    homeSettled?: true
  }
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
  /** The runtime: this host now holds (true) or lost (false) a watchdog that resets it. */
  | { type: 'haLocalFence', fenced: boolean }
  /**
   * Operator: `host` is down for good (powered off, VMs stopped): it may be taken over without a
   * fence. `knownLife`: the host's incarnation as the membership view knows it (gossip reaches
   * this host even when no HA beat of `host` did): the confirmation covers the life it names.
   */
  | { type: 'haOperatorConfirmDown', host: HostId, knownLife?: number }
  | { type: 'haMessage', from: HostId, message: HaMessage }
  /** Any other frame from a member (lets grantors measure silence over all traffic). */
  | { type: 'heard', from: HostId }
  | { type: 'haDriverResult', command: HaCommand, ok: boolean, code?: string }
  /** `ticks` ticks of time passed that no tick() counted (the runtime skipped them after a stall). */
  | { type: 'elapsed', ticks: number }
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
export const HA_FENCES_KEY = `${HA_KEY_PREFIX}fences`
export const HA_CONFIRMS_KEY = `${HA_KEY_PREFIX}confirms`

/** What survives a restart, per VM: the acceptor's standing claim and this host's own claim. */
/** ownGranted: our own claim had reached a majority (its release then supersedes lower claims). */
/** priors: claims below the standing one that may still run (ha-manager.ts); absent = none. */
/** handover: the claim this host (a migration's source) asked for its target (absent = none). */
/** incomingFrom: this host receives the VM by a migration from that host (absent = none). */
/** since: the configuration version of this protection (absent: 0, the files); homeHeard false: the home of its first claim has not spoken of it here yet; retiring: unprotected at that version, its copy here still fenced. */
export interface HaVmDurable { standing: HaClaim | null, released: boolean, own: HaClaim | null, ownGranted?: boolean, priors?: HaClaim[], handover?: HaClaim, incomingFrom?: HostId, ownEpochMax?: number, since?: number, homeHeard?: boolean, retiring?: number, ownVersion?: number }

export interface HaRestored {
  vms: Record<VmId, HaVmDurable>
  /** Mode register of every member as last heard (self included). */
  modes: Record<HostId, HaMode>
  maintenance: HaMaintenance[]
  /** What each member last reported of its fence (absent: nothing heard). */
  fences?: Record<HostId, HaFenceReport>
  /** Operators' confirmations that a host is down. */
  confirms?: HaConfirmDown[]
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
  /** Members this host would let be taken over now (dead, silent past the fence delay, armed, fenced or confirmed down). */
  fencedHosts: HostId[]
  /** This host holds a watchdog that resets it; false: its VMs are not protected and it restarts none. */
  selfFenced: boolean
  /** Members (other than this one) that reported no fence, or were never heard: never taken over without an operator's confirmation. */
  unfenced: HostId[]
  /** Members that are dead, silent past the fence delay, with no fence, and not confirmed down: their HA VMs wait for `starling ha confirm-down`. */
  awaitingConfirmation: HostId[]
  /** Hosts an operator confirmed down (in the life named). */
  confirmedDown: HaConfirmDown[]
  /** VMs free to restart and not failed, by this host's records. */
  pending: VmId[]
  /** Restarts this host has done (successful starts under a claim of epoch > 0). */
  restartsDone: number
  vms: HaVmStatus[]
  counters: HaCounters
}

/** The durable HA state from the store's entries under HA_KEY_PREFIX (undefined when there are none: a first start). */
export function haRestoredFrom (entries: Iterable<readonly [string, unknown]>): HaRestored | undefined {
  const vms: Record<VmId, HaVmDurable> = {}
  let modes: Record<HostId, HaMode> = {}
  let maintenance: HaMaintenance[] = []
  let fences: Record<HostId, HaFenceReport> = {}
  let confirms: HaConfirmDown[] = []
  let any = false
  const vmPrefix = `${HA_KEY_PREFIX}vm/`
  for (const [k, v] of entries) {
    if (!k.startsWith(HA_KEY_PREFIX)) continue
    any = true
    if (k.startsWith(vmPrefix)) vms[k.slice(vmPrefix.length)] = v as HaVmDurable
    else if (k === HA_MODES_KEY) modes = v as Record<HostId, HaMode>
    else if (k === HA_MAINT_KEY) maintenance = v as HaMaintenance[]
    else if (k === HA_FENCES_KEY) fences = v as Record<HostId, HaFenceReport>
    else if (k === HA_CONFIRMS_KEY) confirms = v as HaConfirmDown[]
  }
  return any ? { vms, modes, maintenance, fences, confirms } : undefined
}
