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
  ksm: { run: number, pagesShared: number, pagesSharing: number, zeroPages: number, savedMiB: number, fullScans: number } | null
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
  for (const [k, v] of Object.entries(s.host)) {
    if (typeof v !== 'number' || !Number.isFinite(v)) continue
    const name = `agent_memory_host_${metricName(k).replace(/_mi_b$/, '_mib').replace(/10$/, '_avg10_percent')}`
    out.push(`# TYPE ${name} gauge`, `${name} ${v}`)
  }
  if (s.host.ksm !== null) {
    out.push('# TYPE agent_memory_ksm_saved_mib gauge', `agent_memory_ksm_saved_mib ${s.host.ksm.savedMiB}`)
    out.push('# TYPE agent_memory_ksm_running gauge', `agent_memory_ksm_running ${s.host.ksm.run === 1 ? 1 : 0}`)
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
