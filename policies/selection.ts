/**
 * VM selection: which VM should leave an overloaded host first.
 *
 * - mmt: minimum migration time = smallest memory (Beloglazov); ties: first in the host's list.
 * - mc: maximum correlation: the VM whose history is best explained by the others' (largest
 *   R^2 of a multiple regression); falls back to mmt when no fit is possible.
 * - rs: random, from a seed (deterministic: same seed, same choice); the caller passes the
 *   random source in.
 * - hl: highest current load.
 * - vsr: Sandpiper's volume-to-size ratio, volume = 1 / ((1-cpu)(1-mem)), size = memory.
 *
 * Migrating VMs are never chosen. Returns null when there is nothing to choose.
 */
import { rSquared } from './stats.js'
import type { HostView, SeededRandom, VmView } from './types.js'

export type SelectionKind = 'mmt' | 'mc' | 'rs' | 'hl' | 'vsr'

export interface SelectionParams { kind: SelectionKind, seed?: number }

export function selectVm (host: HostView, vms: readonly VmView[], p: SelectionParams, random: SeededRandom): VmView | null {
  const cands = vms.filter(v => !v.migrating)
  if (cands.length === 0) return null
  switch (p.kind) {
    case 'mmt': return argBest(cands, v => -v.memMiB)
    case 'hl': return argBest(cands, v => v.cpuDemandMips)
    case 'rs': {
      const rng = random((p.seed ?? 0) ^ hashStr(host.id) ^ cands.length)
      return cands[rng.int(cands.length)] ?? null
    }
    case 'vsr': {
      return argBest(cands, v => {
        const cpu = Math.min(0.99, v.cpuDemandMips / Math.max(1, host.cpuMips))
        const mem = Math.min(0.99, v.memMiB / Math.max(1, host.memMiB))
        return (1 / ((1 - cpu) * (1 - mem))) / Math.max(1, v.memMiB)
      })
    }
    case 'mc': {
      const n = Math.min(...cands.map(v => v.history.length))
      if (cands.length < 2 || n < cands.length + 2) return argBest(cands, v => -v.memMiB)
      const hs = cands.map(v => v.history.slice(-n))
      return argBest(cands, (_v, i) => rSquared(hs[i] as number[], hs.filter((_, j) => j !== i)))
    }
  }
}

/** First element with the strictly largest score. */
function argBest<T> (xs: readonly T[], score: (x: T, i: number) => number): T | null {
  let best: T | null = null
  let bestS = -Infinity
  xs.forEach((x, i) => { const s = score(x, i); if (s > bestS) { bestS = s; best = x } })
  return best
}

export function hashStr (s: string): number {
  let h = 0x811c9dc5
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193)
  return h >>> 0
}
