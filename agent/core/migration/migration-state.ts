/**
 * Live migration negotiated peer to peer: the states, the journal record, the driver commands the
 * core issues and the results the runtime reports back, and the tunables. Plain data only, so a
 * record can be journaled (key prefix `mig/`), sent in a status answer and shown by the CLI.
 *
 * Both ends of a migration keep a record under the same id; `role` says which end this is.
 * The source drives the copy; the target admits, reserves and prepares. See migration-machine.ts
 * for the transitions and the crash-recovery argument.
 */
import type { HostId, VmId } from '../types.js'
import type { RuleSet } from '../../../policies/types.js'
import type { PolicyConfig } from '../../../policies/plan.js'
import type { StallFallback } from './convergence.js'

/** Where a migration stands, as one end sees it. */
export type MigrationState =
  /** Source: journaled; the VM's spec is being read, then the intent goes to the target. */
  | 'proposed'
  /**
   * Source: the target granted a reservation and is preparing. Target: admitted and granted;
   * capacity is held until the lease expires.
   */
  | 'reserved'
  /** Target: the incoming VM is being opened (driver prepareIncoming issued). */
  | 'preparing'
  /**
   * Source: the driver's migrate was issued (or may have been, after a crash); progress is
   * polled. Target: the incoming VM listens and receives memory.
   */
  | 'copying'
  /**
   * Source: the hypervisor finished the transfer; the source copy is paused and never resumed
   * unless the target says it did not take over. Target: it was told so and checks its copy.
   */
  | 'switching'
  /** Terminal: the VM runs on the target; the source copy is stopped (or being stopped). */
  | 'committed'
  /** Terminal: the VM runs on the source; the target holds nothing for it. */
  | 'aborted'

export const TERMINAL_STATES: ReadonlySet<MigrationState> = new Set(['committed', 'aborted'])

/** What it takes to open the VM on the target: the source driver's spec, carried in the intent. */
export interface VmSpecWire {
  vcpus: number
  memMiB: number
  /** Driver-specific details (kernel, disks...) as JSON text, opaque to the core. */
  extraJson: string
}

/** The last progress the source's hypervisor reported. */
export interface MigrationProgressView {
  status: string
  totalTimeMs: number
  transferredBytes: number
  remainingBytes: number
  dirtySyncCount: number
  /** The pause the hypervisor measured, ms, once completed (null before). */
  downtimeMs: number | null
  /** With storage: the disk mirror (absent without one). */
  disk?: DiskProgressView
  /** Why the hypervisor failed or cancelled it, when it says. */
  error?: string
}

/** The disk side of a migration with storage, as the source's hypervisor reports it. */
export interface DiskProgressView {
  /** Every mirror copied its disk once and now follows the guest's writes. */
  ready: boolean
  totalBytes: number
  doneBytes: number
  /** Bytes sent over the link, measured. */
  sentBytes: number
  /** A mirror failed: why. */
  error: string | null
}

/**
 * Whether a migration moves the VM's disks. 'auto' (the cluster's own moves, and the operator's
 * without --with-storage): when the hypervisor reports local disks. 'yes': always (a VM without
 * disks is refused).
 */
export type StorageWanted = 'auto' | 'yes'

/** How a disk mirror treats the guest's writes (see disk-copy.ts). */
export type DiskCopyModeName = 'background' | 'write-blocking'

/**
 * Where a migration with storage stands on the source. 'mirroring': the disks are being copied
 * (journaled before the mirror is started); 'memory': the mirrors are ready and the memory copy
 * runs (journaled before it is started); the hypervisor completes the mirrors at the
 * switch-over, with the guest paused, before the device state goes.
 */
export type DiskPhase = 'mirroring' | 'memory'

/** One migration as one end journals it (`mig/<id>`). JSON-able. */
export interface MigrationRecord {
  id: string
  vm: VmId
  role: 'source' | 'target'
  source: HostId
  target: HostId
  state: MigrationState
  /** Why it was started ('operator', 'drain', 'overload', ...). */
  cause: string
  spec: VmSpecWire | null
  /** CPU demand the VM brings, MIPS (admission counts it). */
  cpuDemandMips: number
  /** Tick (of this host) the record was created and last changed. */
  createdTick: number
  updatedTick: number
  /** Target: the reservation holds capacity until this tick of the target. */
  leaseExpiresTick: number
  /** Target's listening URI, once prepared. */
  uri: string | null
  /** Source: mode and budget from the convergence plan. */
  mode: string | null
  downtimeLimitMs: number
  timeoutMs: number
  progress: MigrationProgressView | null
  /** Why it ended (aborted) or what it is waiting for. */
  reason: string
  /** Ticks from copying to committed, as measured by this end. */
  durationTicks: number
  /**
   * Target, aborted: it never saw its incoming copy (gone, e.g. after a power loss), so the guest
   * may have run here; every MigrationAborted it sends says so.
   * Source, aborted: its paused copy is older than what may have run on the target: never resumed.
   */
  mayHaveRun?: boolean
  /**
   * Finished, and no longer speaking for its VM: a newer record of the VM exists here. Kept in the
   * journal only so that this end can still tell the other one the outcome (a source waiting in
   * switching across a partition asks after this host may have restarted); never acted on.
   */
  superseded?: boolean
  /** Source: whether the disks should move (decided after the query into `storage`). */
  storageWanted?: StorageWanted
  /** The VM's disks move with it. */
  storage?: boolean
  /** With storage: the target's NBD export. */
  nbd?: string
  /** Source, with storage: see DiskPhase. */
  diskPhase?: DiskPhase
  /** Source, with storage: the mirror's copy mode and why (disk-copy.ts). */
  diskCopyMode?: DiskCopyModeName
  /**
   * Source: the whole evacuation this move belongs to (evacuation.ts): the id of its first record,
   * shared by every move of the group. Absent for moves reserved on their own.
   */
  group?: string
}

/** The VM as a driver command names it. */
export interface DriverTarget { mig: string, vm: VmId }

/** Parameters of the driver's migrate, from convergence.ts planMigration. */
export interface MigrateParams {
  mode: 'precopy' | 'postcopy' | 'hybrid'
  maxBandwidthBytes: number
  downtimeLimitMs: number
  /** The disks were mirrored (the hypervisor completes the mirrors at the switch-over). */
  storage?: boolean
  /** The dirty-sync cap of the plan's policy, enforced by the hypervisor driver at the switch-over. */
  maxDirtySyncs?: number
}

/** What the core asks the hypervisor driver to do; applied after persist and send, in order. */
export type DriverCommand =
  /**
   * Read the VM's spec, run state and migration status (recovery, and the source before the
   * intent). With `measure`, also measure the guest's dirty rate and resident memory, for the
   * convergence plan (this takes about a second).
   */
  | DriverTarget & { kind: 'query', measure?: boolean }
  /** Target: open an empty incoming VM listening for the migration. */
  | DriverTarget & { kind: 'prepareIncoming', spec: VmSpecWire, postcopy: boolean, storage?: boolean }
  /** Source, with storage: start mirroring the VM's disks to the target's NBD export. */
  | DriverTarget & { kind: 'mirror', nbd: string, copyMode?: DiskCopyModeName }
  | DriverTarget & { kind: 'migrate', uri: string, params: MigrateParams }
  | DriverTarget & { kind: 'progress' }
  | DriverTarget & { kind: 'setDowntime', downtimeLimitMs: number }
  | DriverTarget & { kind: 'startPostcopy' }
  /** Source: cancel the outgoing migration (the VM keeps running here). */
  | DriverTarget & { kind: 'cancel' }
  /**
   * Source: stop the paused source copy after the target took over. With `retireDisks` (a move
   * with storage) the disk images the VM left here are then set aside under a name that says so
   * (never booted; a return of the VM creates its disk afresh at the path).
   */
  | DriverTarget & { kind: 'stopSource', retireDisks?: boolean }
  /** Source: resume the paused source copy (the target did not take over). */
  | DriverTarget & { kind: 'resume' }
  /** Target: kill an incoming VM whose guest never ran here. Refused (VM_RUNNING) if it runs. */
  | DriverTarget & { kind: 'killIncoming' }
  /**
   * Target, a move with storage that aborted before its guest ran here: delete the disk images
   * this host created for this migration (the driver's own journal names them), and only those.
   * Refused (VM_RUNNING) while a guest runs here from them.
   */
  | DriverTarget & { kind: 'dropImages' }

export type DriverCommandKind = DriverCommand['kind']

/** How the VM stands in this host's hypervisor. */
export type VmPresence =
  /** No such VM here. */
  | 'absent'
  /** The guest runs here. */
  | 'running'
  /** Paused here (a source after a completed transfer, or stopped by someone). */
  | 'paused'
  /** An incoming VM whose guest has not run here yet. */
  | 'incoming'

/** The answer to a query. */
export interface DriverQueryResult {
  presence: VmPresence
  /** Migration status as the hypervisor reports it ('none', 'active', 'completed', 'failed', ...). */
  migration: string
  spec: VmSpecWire | null
  /** Measured dirty rate, bytes/s (0 when not measured: see dirtyRateMeasured). */
  dirtyRateBytesPerS: number
  /** The hypervisor measured the dirty rate (a query with `measure`, on a driver that can). */
  dirtyRateMeasured?: boolean
  /** Guest memory resident in the hypervisor, bytes (what a first pass sends); absent when unknown. */
  residentBytes?: number
  /** Accelerator of this host (shapes the convergence policy). */
  accel: 'kvm' | 'tcg'
  /**
   * The VM's disks as the driver sees them: 'none', 'shared' (on storage every host reaches) or
   * 'local' (they must move with the VM). Absent: the driver does not say (treated as 'none').
   */
  disks?: 'none' | 'shared' | 'local'
  /** The driver can move disks (mirror to the target). */
  canMoveStorage?: boolean
  /** Why the disks cannot be moved from here (a disk file that does not exist), if so. */
  storageProblem?: string
  /** The guest's disk writes (measured with `measure`): bytes/s and mean write size, bytes. */
  diskWriteBytesPerS?: number
  diskWriteSizeBytes?: number
  /** Bytes the VM's disks hold on this host (what a full first pass sends), when the driver knows. */
  diskAllocatedBytes?: number
}

/** What the runtime reports back after carrying out a command. Never thrown: failures are data. */
export type DriverResult =
  | { ok: true, kind: 'query', query: DriverQueryResult }
  | { ok: true, kind: 'prepareIncoming', uri: string, nbd?: string }
  | { ok: true, kind: 'progress', progress: MigrationProgressView }
  | { ok: true, kind: Exclude<DriverCommandKind, 'query' | 'prepareIncoming' | 'progress'> }
  | { ok: false, kind: DriverCommandKind, code: string, message: string }

/** Tunables of the migration machine and the scheduler. Every interval is in ticks. */
export type AutomationLevel = 'manual' | 'partial' | 'full'
export const AUTOMATION_LEVELS: readonly AutomationLevel[] = ['manual', 'partial', 'full']

export interface MigrationConfig {
  /**
   * Outgoing migrations one host runs at once. Higher = faster drains, more load on the link. A
   * consolidation is reserved whole (up to policy.maxMovesPerDecision moves) and its copies are
   * staged: at most outMax copies under way, its waiting reservations not counted (evacuation.ts).
   */
  outMax: number
  /** Incoming migrations one host admits at once. */
  inMax: number
  /**
   * Migrations in flight in the whole cluster, approximated from gossip: VMs reported
   * 'migrating' in the latest load reports plus this host's own not yet reported. Stale by up
   * to a report interval, so hosts deciding in the same interval may together exceed it.
   */
  clusterMax: number
  /** Ticks a reservation holds capacity without word from the source (renewed by progress). */
  leaseTicks: number
  /** Source: ticks to wait for the target's grant, from when the intent is sent, before giving up. */
  intentTimeoutTicks: number
  /**
   * Source: ticks to wait for the target to prepare before giving up; also the budget of the
   * source's own query of the VM (a dirty-rate measurement) before the intent is sent.
   */
  prepareTimeoutTicks: number
  /** Source: ticks between progress polls while copying. */
  pollTicks: number
  /** Ticks between resends of an unanswered message (switching, aborted notices). */
  resendTicks: number
  /** Terminal records are kept (journaled) this long, for `starling migrations` and late queries. */
  retainTicks: number
  /** Terminal records kept at most. */
  retainMax: number
  /** Bandwidth assumed for the migration link, bytes/s (0 = from the host's netMbps). */
  bandwidthBytesPerS: number
  /** Pre-copy cap on bandwidth, bytes/s; 0 = none. */
  maxBandwidthBytes: number
  /**
   * Memory overcommit a host admits (migrations, HA restarts, replicas): its VMs' configured
   * memory may reach capacity x this ratio, and beyond capacity only as far as its guests could give
   * memory back now (the balloon loop's reclaimable memory, gossiped in its report). 1 = no
   * overcommit: the sum of configured memory stays within capacity.
   */
  memOvercommitRatio: number
  /** What a stalled pre-copy does, by default and per VM. */
  onStall: StallFallback
  onStallByVm: Record<VmId, StallFallback>
  /** Affinity and anti-affinity rules; the same set on every host (see rulesHash). */
  rules: RuleSet
  /** Stress-triggered moves (policies/plan.ts) on or off (this host only; tests and simulators). */
  autoBalance: boolean
  /**
   * What the cluster's agents do on their own, the same on every host (a differing member is
   * flagged at its hello, as the rules are):
   * - full: relieve overloads and consolidate (the default);
   * - partial: relieve overloads; consolidation is only recommended (`starling plan`);
   * - manual: move nothing on their own; every balancing move is a recommendation to apply.
   * Operator moves (migrate, drain, plan apply) and HA restarts run in every level: an HA restart
   * is recovery of a VM its operator asked to protect, not balancing (vSphere HA likewise runs
   * whatever DRS's automation level).
   */
  automation: AutomationLevel
  /** Ticks between two drain steps (a draining host starts its next moves then). */
  decisionTicks: number
  /**
   * Ticks between two balancing decisions (stress and consolidation). The policy's hold time,
   * per-VM cool-down and forecast horizon count these decisions, and the k-of-n detector sees one
   * sample per decision, as the trace simulator measured them at policy.intervalSec: the agent's
   * configuration derives it from policy.intervalSec unless set.
   */
  balanceTicks: number
  /** The placement policy (hold time, minimum gain, per-VM cool-down in decisions). */
  policy: PolicyConfig
  /**
   * Migrations with storage (disk copies) one host takes part in at once, as source or target.
   * Disk copies load the link and the disks for minutes; more at once slows each.
   */
  diskCopiesMax: number
  /**
   * A migration with storage whose first disk pass would take longer than this (the disks'
   * allocated bytes over the link's bandwidth, estimated before anything is copied) is refused,
   * with the estimate as its reason.
   */
  maxDiskCopySeconds: number
}
