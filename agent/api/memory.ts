/**
 * The memory picture of one host (GET /v1/memory, `starling memory`, the memory part of
 * `starling status` and the agent_memory_* metrics): what the balloon loop
 * (agent/runtime/balloon-controller.ts) saw and did at its last step.
 */

/** One VM in the memory picture. */
export interface VmMemoryStatus {
  id: string
  maxMiB: number
  minMiB: number
  shares: number
  balloon: boolean
  /** Balloon's actual size, MiB; null without a balloon. */
  actualMiB: number | null
  /** Last target set by this agent, MiB; null when none is in flight. */
  targetMiB: number | null
  /** Memory the guest could use at once, MiB (available, else free); null when unknown. */
  guestFreeMiB: number | null
  guestTotalMiB: number | null
  /** Age of the guest's statistics, s; null when it never sent any. */
  statsAgeS: number | null
  stale: boolean
  swapping: boolean
  /** Why the policy left it alone at the last step, if it said ('stale', 'swapping', 'atFloor'...). */
  held: string | null
}

export interface HostMemoryStatus {
  /** Physical memory (MemTotal), MiB. */
  physicalMiB: number
  availableMiB: number
  /** What the policy counts as the host's memory (physical, or memory.hostMemMiB), MiB. */
  totalMiB: number
  /** What the policy counts as used, MiB. */
  usedMiB: number
  targetMiB: number
  /** Sum of the running VMs' configured memory, MiB. */
  committedMiB: number
  /** Sum of what the balloons hold back (maximum - actual), MiB. */
  balloonedMiB: number
  /** What the guests could give now without going under their floors, MiB. */
  reclaimableMiB: number
  /** Memory over the target that could not be reclaimed at the last step, MiB. */
  unmetMiB: number
  /** /proc/pressure/memory avg10, percent; null without PSI. */
  pressureSome10: number | null
  pressureFull10: number | null
  /** The "some" pressure has stayed above memory.policy.hostPressurePercent for memory.policy.hostPressureSamples samples: the host counts as short of memory. */
  pressured: boolean
  /** What that pressure asks of the guests at this step, MiB (0 when not pressured). */
  pressureWantMiB: number
  /** Page sharing; null without KSM in the kernel. */
  ksm: KsmStatus | null
}

/** KSM on this host: the kernel's counters and what the agent did with them. */
export interface KsmStatus {
  /** 0 stopped, 1 running, 2 unmerging. */
  run: number
  /** Merged pages (each saves nothing by itself: it is the copy the others share). */
  pagesShared: number
  /** Further mappings of merged pages: each one is a page saved. */
  pagesSharing: number
  zeroPages: number
  /** Saved: (pages_sharing + ksm_zero_pages) x page size, MiB. */
  savedMiB: number
  /** The kernel's net saving (general_profit: saved less KSM's own metadata), MiB; null on kernels without it. */
  netSavedMiB: number | null
  fullScans: number
  pagesToScan: number | null
  sleepMs: number | null
  advisor: string | null
  /** ksmd's CPU since the previous sample, fraction of one core; null when not measured. */
  cpuShare: number | null
  /** The agent drives KSM (memory.ksm). */
  managed: boolean
  /** Why the policy ran or stopped KSM at the last step ('lowFree', 'overcommitted', 'hold', 'notNeeded'); null when not managed. */
  reason: string | null
  /** The last step cut the scan rate for ksmd's CPU budget. */
  cpuLimited: boolean
  /** ksmd's CPU budget, percent of one core; null when not managed. */
  budgetPercent: number | null
}

export interface KsmCounters {
  steps: number
  starts: number
  stops: number
  rateChanges: number
  /** Steps at which the scan rate was cut for ksmd's CPU budget. */
  cpuLimited: number
  applyErrors: number
}

export interface BalloonChangeRow { id: string, targetMiB: number, fromMiB: number, reason: string }

export interface BalloonCounters {
  steps: number
  grows: number
  shrinks: number
  /** Shrinks asked for a guest whose statistics were stale (refused): must stay 0. */
  staleShrinks: number
  /** MiB taken from guests, in all. */
  reclaimedMiB: number
  /** MiB given to guests, in all. */
  givenMiB: number
  factErrors: number
  applyErrors: number
}

/** The memory picture of this host at the last sample. */
export interface MemoryStatus {
  /** Wall time of the sample, ms since the epoch. */
  atMs: number
  host: HostMemoryStatus
  vms: VmMemoryStatus[]
  /** The balloon policy applies its targets (memory.balloon). */
  ballooning: boolean
  /** Changes applied at the last step. */
  changes: BalloonChangeRow[]
}

/** GET /v1/memory. */
export interface MemoryPayload {
  self: { id: string, name: string }
  nowMs: number
  /** null before the first step. */
  status: MemoryStatus | null
  counters: BalloonCounters
  /** The KSM loop's counters; absent when the agent does not drive KSM. */
  ksmCounters?: KsmCounters
}

function metricName (k: string): string {
  return k.replace(/([a-z0-9])([A-Z])/g, '$1_$2').toLowerCase()
}

/** agent_memory_host_* (MiB and percent gauges), agent_memory_balloon_* counters, agent_memory_vm_*{vm}. */
export function renderMemoryMetrics (p: MemoryPayload): string {
  const out: string[] = []
  for (const [k, v] of Object.entries(p.counters)) out.push(`# TYPE agent_memory_balloon_${metricName(k)} counter`, `agent_memory_balloon_${metricName(k)} ${v}`)
  const s = p.status
  if (s === null) return out.join('\n') + '\n'
  for (const [k, raw] of Object.entries(s.host)) {
    // A yes/no fact (pressured) is a 0/1 gauge.
    const v = typeof raw === 'boolean' ? (raw ? 1 : 0) : raw
    if (typeof v !== 'number' || !Number.isFinite(v)) continue
    const name = `agent_memory_host_${metricName(k).replace(/_mi_b$/, '_mib').replace(/10$/, '_avg10_percent')}`
    out.push(`# TYPE ${name} gauge`, `${name} ${v}`)
  }
  if (p.ksmCounters !== undefined) {
    for (const [k, v] of Object.entries(p.ksmCounters)) out.push(`# TYPE agent_memory_ksm_${metricName(k)}_total counter`, `agent_memory_ksm_${metricName(k)}_total ${v}`)
  }
  const k = s.host.ksm
  if (k !== null) {
    const g = (name: string, v: number | null): void => { if (v !== null && Number.isFinite(v)) out.push(`# TYPE agent_memory_ksm_${name} gauge`, `agent_memory_ksm_${name} ${v}`) }
    g('saved_mib', k.savedMiB)
    g('net_saved_mib', k.netSavedMiB)
    g('running', k.run === 1 ? 1 : 0)
    g('pages_shared', k.pagesShared)
    g('pages_sharing', k.pagesSharing)
    g('pages_to_scan', k.pagesToScan)
    g('sleep_ms', k.sleepMs)
    g('ksmd_cpu_share', k.cpuShare)
    g('managed', k.managed ? 1 : 0)
  }
  const vmGauge = (name: string, pick: (v: VmMemoryStatus) => number | null): void => {
    const rows = s.vms.map(v => [v.id, pick(v)] as const).filter((r): r is readonly [string, number] => r[1] !== null && Number.isFinite(r[1]))
    if (rows.length === 0) return
    out.push(`# TYPE agent_memory_vm_${name} gauge`)
    for (const [id, v] of rows) out.push(`agent_memory_vm_${name}{vm="${id.replace(/["\\\n]/g, '_')}"} ${v}`)
  }
  vmGauge('max_mib', v => v.maxMiB)
  vmGauge('balloon_mib', v => v.actualMiB)
  vmGauge('guest_free_mib', v => v.guestFreeMiB)
  vmGauge('stats_age_seconds', v => v.statsAgeS)
  vmGauge('stale', v => v.balloon ? (v.stale ? 1 : 0) : null)
  return out.join('\n') + '\n'
}
