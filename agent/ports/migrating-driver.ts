/**
 * The migration operations of a hypervisor driver, on top of the base port (hypervisor-driver.ts):
 * what the migration machine's driver commands need. The QEMU (QMP), libvirt and simulated
 * drivers implement it.
 */
import type { VmId } from '../core/index.js'
import type { HypervisorDriver, VmSpec } from './hypervisor-driver.js'

/** Migration mode. */
export type MigrationMode =
  /** Pre-copy only: rounds of dirty pages, then a stop-and-copy within the downtime limit. */
  | 'precopy'
  /** Post-copy at once: the guest runs on the target right away and faults pages in. */
  | 'postcopy'
  /** Pre-copy first, with post-copy enabled so that startPostcopy() can switch later. */
  | 'hybrid'

export interface MigrationParams {
  mode: MigrationMode
  /** Bandwidth cap of the pre-copy phase, bytes/s (not of the final stop-and-copy). 0 = no cap. */
  maxBandwidthBytes: number
  /** Largest acceptable stop-and-copy pause, ms. */
  downtimeLimitMs: number
  /** Throttle the guest's vCPUs when it dirties memory faster than it can be sent. */
  autoConverge: boolean
  /** Send deltas of re-dirtied pages (cache in the source). */
  xbzrle: boolean
  /** Number of parallel channels; 0 or 1 = off. The target must be prepared with the same. */
  multifd: number
  /**
   * Whether the target was prepared to accept post-copy (prepareIncoming's `postcopy`, true by
   * default and always true for the agent's targets). With postcopy-preempt the two ends must
   * agree on the capability even when this migration never switches to post-copy: a target
   * that expects the preempt channel waits for it forever. @default true
   */
  targetPostcopy?: boolean
  /**
   * The VM's disks move too: mirrorDisks() has been run to the target's NBD export and its jobs
   * are ready. The source then pauses before the switch-over, completes the mirrors while the
   * guest is paused (no write after that point is lost) and only then lets the device state go.
   * @default false
   */
  storage?: boolean
  /**
   * The largest dirty-bitmap sync count this migration may reach (the convergence policy's cap,
   * which QEMU cannot be told; the agents set it under TCG, where the controller's polls are too
   * slow to hold it, and leave it to the controller under KVM). When set, the source pauses before the switch-over and goes on
   * only when the syncs so far plus the final one stay within it; otherwise it cancels the
   * migration, and the guest resumes on the source intact (errorDesc says why).
   */
  maxDirtySyncs?: number
}

/** How a disk copy writes the guest's own writes while the mirror runs. */
/** A disk image a VM left on this host when it moved away with its disks (the disk as of the switch-over). */
export interface KeptDiskCopy {
  vm: VmId
  file: string
  /** Bytes the image takes on disk. */
  allocatedBytes: number
  /** The image file's size. */
  sizeBytes: number
  /** When the VM left (the image's modification time), ms since the epoch. */
  leftAtMs: number
}

export type DiskCopyMode =
  /** Guest writes complete at once; the mirror copies dirty blocks in the background. */
  | 'background'
  /** Guest writes complete only once also written to the target: the copy always converges. */
  | 'write-blocking'

/** The disk side of a migration with storage (the mirror jobs of the source, summed). */
export interface DiskCopyProgress {
  /** Mirror jobs still known to the hypervisor. */
  jobs: number
  /** Every job has copied the whole disk once and now only follows new writes. */
  ready: boolean
  /** Bytes the jobs have to copy (grows with the guest's writes), and have copied. */
  totalBytes: number
  doneBytes: number
  /** Bytes sent over the link to the target, measured (the NBD connection's writes). */
  sentBytes: number
  /** The copy mode of the jobs (the first job's). */
  copyMode: DiskCopyMode
  /** A job failed: its error. */
  error: string | null
  /**
   * A disk sent by its changes (a return to a host holding the copy it left): the clusters
   * written since it left, bytes, counted with the guest paused at the switch-over.
   */
  changedBytes?: number
}

/** QEMU's migration states (query-migrate `status`). */
export type MigrationStatus =
  | 'none' | 'setup' | 'cancelling' | 'cancelled' | 'active' | 'postcopy-active' | 'postcopy-paused'
  | 'postcopy-recover' | 'completed' | 'failed' | 'colo' | 'pre-switchover' | 'device' | 'wait-unplug'

export interface MigrationProgress {
  status: MigrationStatus
  /** Time since the migration started (or its whole duration once finished), ms. */
  totalTimeMs: number
  /** The pause QEMU measured, ms; null until completed. Unreliable after post-copy. */
  downtimeMs: number | null
  /** QEMU's estimate of the pause if it switched over now, ms; null when not reported. */
  expectedDowntimeMs: number | null
  transferredBytes: number
  remainingBytes: number
  totalBytes: number
  /** Completed dirty-bitmap syncs: 1 after the first full pass, +1 per later round. */
  dirtySyncCount: number
  /** Pages dirtied per second in the last round; 0 until a round has been measured. */
  dirtyPagesRate: number
  /** Page size the rates are counted in, bytes. */
  pageSizeBytes: number
  /** Current transfer rate, Mbit/s. */
  mbps: number
  /** Pages the target asked for during post-copy. */
  postcopyRequests: number
  /** vCPU throttle of auto-converge, percent; 0 when off. */
  cpuThrottlePercent: number
  /** QEMU's error description when status is 'failed'. */
  errorDesc: string | null
  /** The disk copy, when the VM's disks move with it (absent otherwise). */
  disk?: DiskCopyProgress
}

export interface IncomingOptions {
  /**
   * Accept a post-copy migration (sets postcopy-ram on the target; needs userfaultfd).
   * @default true
   */
  postcopy?: boolean
  /**
   * Parallel channels, matching the source's `multifd`. 0 or 1 = off.
   * @default 0
   */
  multifd?: number
  /**
   * The VM's disks move with it: create each disk image of the spec (extra.disks, with its
   * virtual size) empty on this host and export it over NBD for the source's mirrorDisks().
   * prepareIncoming then also resolves with the NBD address.
   * @default false
   */
  storage?: boolean
  /**
   * The migration this target is prepared for (its record's id): a driver that journals the
   * images it creates for a move with storage files them under it (dropIncomingImages).
   */
  migration?: string
}

/** The migration operations of a driver, on top of the base port. */
export interface MigratingDriver extends HypervisorDriver {
  /**
   * Starts `spec` as an empty migration target listening on `listenAddr` ("host:port"; port 0
   * picks a free one). Resolves with the URI to give the source's migrate().
   */
  prepareIncoming (spec: VmSpec, listenAddr: string, opts?: IncomingOptions, signal?: AbortSignal): Promise<{ uri: string, nbd?: string }>
  /**
   * Source, migration with storage: starts mirroring every disk of VM `id` to the target's NBD
   * export `nbd` ("nbd:host:port", from prepareIncoming). Resolves once the jobs run; progress()
   * reports them under `disk` until migrate() with `storage` completes them at the switch-over.
   * Drivers without it cannot move local disks.
   */
  mirrorDisks? (id: VmId, nbd: string, opts?: { copyMode?: DiskCopyMode, maxBandwidthBytes?: number }, signal?: AbortSignal): Promise<void>
  /**
   * Starts migrating VM `id` to `uri`; resolves once QEMU accepted it (poll progress()). Once
   * 'completed', the source QEMU stays paused (it must not run again: the target owns the VM);
   * stop() it when the target is confirmed running. After 'cancelled' or 'failed' the VM runs
   * on the source again and the target QEMU exits.
   */
  migrate (id: VmId, uri: string, params: MigrationParams, signal?: AbortSignal): Promise<void>
  /**
   * Target of a move with storage that aborted before its guest ran here: deletes the images this
   * host created for `migration` (as journaled before they were created), kills an incoming copy
   * that still uses them (one whose guest never ran), and resolves with the files deleted. Never
   * deletes a file it did not create, nor one a domain here uses; rejects with VM_RUNNING while
   * the guest runs here. Drivers that clean up by themselves lack it.
   */
  dropIncomingImages? (id: VmId, migration: string, signal?: AbortSignal): Promise<string[]>
  /**
   * Source of a move with storage, once the target runs the VM: sets the disk images the VM left
   * here aside under a name that says so (never booted, used by no domain), so that the VM can
   * come back to this host. Resolves with the retained files. Drivers that keep the images for a
   * later return (the QEMU driver's delta copy) lack it.
   */
  retireDepartedDisks? (id: VmId, signal?: AbortSignal): Promise<string[]>
  /** The copies retireDepartedDisks() kept on this host and that are still there (`starling migrations`). */
  keptDiskCopies? (): KeptDiskCopy[]
  /** Switches a running 'hybrid' (or 'postcopy') migration to post-copy. */
  startPostcopy (id: VmId, signal?: AbortSignal): Promise<void>
  /** The migration state of VM `id`, on the source or the target. */
  progress (id: VmId, signal?: AbortSignal): Promise<MigrationProgress>
  /**
   * Cancels an outgoing migration; the VM keeps running on the source. Rejects (DRIVER_FAILED)
   * once post-copy has started: from then on the target holds the newest state.
   */
  cancel (id: VmId, signal?: AbortSignal): Promise<void>
  /** Changes the allowed downtime of a running migration, ms. */
  setDowntimeLimit (id: VmId, ms: number, signal?: AbortSignal): Promise<void>
  /** Sets the balloon target: the memory the guest may use, MiB. */
  balloon (id: VmId, mib: number, signal?: AbortSignal): Promise<void>
}
