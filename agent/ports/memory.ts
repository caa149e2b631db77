import type { VmId } from '../core/index.js'

/** One guest's memory, as its hypervisor reports it at a sample. */
export interface VmMemoryFacts {
  id: VmId
  /** Configured memory (the balloon's ceiling), MiB. */
  maxMiB: number
  /** The VM has a working balloon device; false = it cannot be ballooned (and the rest is null). */
  balloon: boolean
  /** The balloon's actual size: the memory the guest has now, MiB. */
  actualMiB: number | null
  /** The guest's own statistics through the balloon device; null when it never sent any. */
  guest: {
    /** Memory the guest sees (stat-total-memory), MiB. */
    totalMiB: number | null
    /** Free memory (stat-free-memory), MiB. */
    freeMiB: number | null
    /** Memory available without swapping (stat-available-memory), MiB; null on guests that do not report it. */
    availableMiB: number | null
    /** Cumulative counters since the guest booted; null where unsupported. */
    majorFaults: number | null
    swapInPages: number | null
    swapOutPages: number | null
    /** Age of these statistics, s (a guest that stops answering gets older and older). */
    ageS: number
  } | null
}

/**
 * The balloon side of a hypervisor driver. Contract as HypervisorDriver: every call may block on
 * the hypervisor, takes an AbortSignal, and rejects with a DriverError (VM_NOT_FOUND for an unknown
 * VM, DRIVER_FAILED for a VM without a balloon device or a target outside (0, max]).
 */
export interface BalloonDriver {
  /**
   * The VM's memory facts. The first call arms the guest's statistics (a poll every
   * `statsPollS`); until the guest answers, `guest` is null.
   */
  memoryFacts (id: VmId, statsPollS: number, signal?: AbortSignal): Promise<VmMemoryFacts>
  /** Sets the balloon target: the memory the guest should have, MiB, in (0, max]. */
  balloon (id: VmId, mib: number, signal?: AbortSignal): Promise<void>
}

/** This host's memory, from the kernel. */
export interface HostMemoryFacts {
  totalMiB: number
  availableMiB: number
  /** /proc/pressure/memory: share of time some (full) tasks stalled on memory over 10 s, percent; null without PSI. */
  pressureSome10: number | null
  pressureFull10: number | null
  /** /sys/kernel/mm/ksm; null without KSM. */
  ksm: {
    /** 0 stopped, 1 running, 2 unmerging. */
    run: number
    pagesShared: number
    pagesSharing: number
    /** Zero pages merged with use_zero_pages (not counted in pagesSharing). */
    zeroPages: number
    /** Memory saved, MiB: (pages_sharing + ksm_zero_pages) x page size. Each merged page's first mapping counts in pages_shared and saves nothing; every further one counts in pages_sharing. */
    savedMiB: number
    fullScans: number
    /** The kernel's own net saving (general_profit: merged pages less KSM's metadata), MiB; null on kernels without it. */
    netSavedMiB: number | null
    /** Scan rate in force: pages per wake-up, and the sleep between wake-ups, ms. */
    pagesToScan: number | null
    sleepMs: number | null
    /** The KSM advisor's mode ('none', 'scan-time'); null on kernels without it. */
    advisor: string | null
    /** ksmd's CPU time so far, s; null when not readable. */
    ksmdCpuS: number | null
  } | null
}
