/**
 * A baseline for bench:memory: Proxmox VE's auto-ballooning as its own files describe it
 * (pve-manager PVE/AutoBalloon.pm, run by pvestatd every 10 s): host target = RAM x 80 %; the
 * change needed is spread over the VMs by shares; each VM moves at most 100 MiB per cycle; changes
 * under 10 MiB are skipped; when there is room, VMs whose free memory is under 25 % of their
 * balloon minimum grow first. It reads no statistics' age and never refuses to shrink a VM that is
 * short of memory (the known faults the anchors list). Same signature as decideBalloon, so that
 * the same balloon loop runs it; call it once per 10-s cycle.
 */
import type { BalloonDecision, BalloonHost, BalloonParams, BalloonVm } from '../../policies/balloon.js'

const STEP_MIB = 100
const SKIP_MIB = 10

export function proxmoxDecide (host: BalloonHost, vms: readonly BalloonVm[], p: BalloonParams): BalloonDecision {
  const target = host.totalMiB * p.targetPercent / 100
  const sorted = [...vms].filter(v => v.shares > 0).sort((a, b) => a.id < b.id ? -1 : 1)
  const cur = (v: BalloonVm): number => v.targetMiB ?? v.actualMiB
  const next = new Map<string, number>()
  let diff = target - host.usedMiB // > 0: room to give; < 0: to take
  if (diff > 0) {
    // Starved VMs first (free < 25 % of the balloon minimum), then by shares.
    const starved = sorted.filter(v => v.guestFreeMiB !== null && v.guestFreeMiB < 0.25 * v.minMiB && cur(v) < v.maxMiB)
    for (const v of starved) {
      const add = Math.min(STEP_MIB, v.maxMiB - cur(v), diff)
      if (add >= SKIP_MIB) { next.set(v.id, cur(v) + add); diff -= add }
    }
    const takers = sorted.filter(v => !next.has(v.id) && cur(v) < v.maxMiB)
    const shares = takers.reduce((s, v) => s + v.shares, 0)
    for (const v of takers) {
      const add = Math.min(STEP_MIB, v.maxMiB - cur(v), diff * v.shares / Math.max(1, shares))
      if (add >= SKIP_MIB) next.set(v.id, cur(v) + add)
    }
  } else if (diff < 0) {
    // Take from every VM above its minimum, weighted by shares and by what it has above it.
    const givers = sorted.filter(v => cur(v) > v.minMiB)
    const weight = (v: BalloonVm): number => (cur(v) - v.minMiB) * 1000 / v.shares
    const wsum = givers.reduce((s, v) => s + weight(v), 0)
    for (const v of givers) {
      const take = Math.min(STEP_MIB, cur(v) - v.minMiB, -diff * weight(v) / Math.max(1e-9, wsum))
      if (take >= SKIP_MIB) next.set(v.id, cur(v) - take)
    }
  }
  const changes = sorted.filter(v => next.has(v.id)).map(v => {
    const to = Math.round(next.get(v.id) as number)
    return { id: v.id, targetMiB: to, fromMiB: cur(v), reason: to > cur(v) ? 'giveBack' as const : 'reclaim' as const }
  })
  return { changes, held: [], targetMiB: target, usedMiB: host.usedMiB, reclaimableMiB: 0, unmetMiB: Math.max(0, -diff), pressured: [], hostPressureStreak: 0, hostPressured: false, pressureWantMiB: 0 }
}
