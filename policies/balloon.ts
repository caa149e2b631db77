/**
 * The balloon policy: how much memory each guest of one host should have, from the host's use
 * against its target and from each guest's own statistics. Pure: the caller gathers the facts
 * (QMP query-balloon and guest-stats, /proc/meminfo) and applies the targets (QMP balloon).
 *
 * One step, in this order:
 *
 * 1. A guest under pressure (its free memory under its floor, or swapping) grows at once, back to
 *    `growToFactor` times its floor, up to its maximum: giving is never rate-limited, since a guest
 *    that waits for memory swaps or kills a process.
 * 2. When the host is above its target (use after step 1 over the target plus the band, or any
 *    growth at all above the target), the excess is taken from the guests with the most free memory
 *    above `shrinkToFactor` times their floor, fewest shares first, at most one shrink step each
 *    (`shrinkStepPercent` of the guest's maximum, but at least `shrinkStepMiBMin`), never below the
 *    guest's minimum. A guest whose statistics are stale (not answering) or that is swapping is
 *    never shrunk.
 * 3. When the host is below its target by more than the band, the room is handed back to the
 *    guests under their maximum, in proportion to their shares.
 *
 * Host memory pressure (PSI, /proc/pressure/memory "some" avg10, passed in as data): when it has
 * stayed above `hostPressurePercent` for `hostPressureSamples` samples in a row, the host is short
 * of memory whatever its use says (its budget is wrong, its own processes grew, its page cache
 * thrashes): each such step reclaims one more step (`shrinkStepMiBMin`) from the guests on top
 * of any excess over the target, and gives nothing back. What the guests cannot give is unmet:
 * the host is stressed like an overloaded CPU, and the agents move a VM away. The streak is
 * carried from step to step by the caller (`pressureStreak` in, `hostPressureStreak` out).
 *
 * Anti-oscillation: a guest grows when its free memory falls under its floor and then holds
 * `growToFactor` times it; it is shrunk only down to `shrinkToFactor` times its floor (between
 * the two nothing happens); the host acts only outside target +- band and lands on the target;
 * changes under `deadbandMiB` are skipped; a shrink target runs at most one step ahead of the
 * balloon's actual size.
 *
 * Sources of the defaults: Proxmox (80 % target, shares 1000), oVirt MoM (guests keep 20 % free,
 * at most 5 % per step); the minimum step of 128 MiB makes reclaim reach 128 MiB/s at one step per
 * second, ten times Proxmox's 100 MiB per 10 s.
 */
import { ConfigError } from './config-error.js'

export interface BalloonParams {
  /** Host memory use the policy steers to, percent of host memory. (0, 100]. @default 80 */
  targetPercent: number
  /** Half-width of the band around the target inside which the host neither reclaims nor gives back, percent of host memory. @default 2 */
  bandPercent: number
  /** Most one step takes from a guest, percent of its maximum. @default 5 */
  shrinkStepPercent: number
  /** ...but a step may always take this much, MiB (reclaim speed = this per step). @default 128 */
  shrinkStepMiBMin: number
  /** Free memory a guest keeps, percent of its current memory (oVirt MoM: 20). @default 20 */
  guestFreePercent: number
  /** ...and at least this much, MiB. @default 64 */
  guestFreeMiBMin: number
  /** A guest under its floor grows until its free memory is this multiple of the floor. > shrinkToFactor. @default 2 */
  growToFactor: number
  /** A guest is shrunk only while its free memory stays above this multiple of its floor. >= 1. @default 1.5 */
  shrinkToFactor: number
  /** Balloon changes smaller than this are skipped, MiB (Proxmox: 10). @default 8 */
  deadbandMiB: number
  /** Guest statistics older than this are stale: the guest is never shrunk, s. @default 5 */
  statsStaleAfterS: number
  /** Host memory pressure (PSI "some" avg10, percent of time some task stalled on memory) above which the host counts as short of memory. (0, 100]. @default 20 */
  hostPressurePercent: number
  /** ...once it has stayed above it this many samples in a row (avg10 is already a 10-s average). Integer >= 1. @default 3 */
  hostPressureSamples: number
}

export function defaultBalloonParams (): BalloonParams {
  return {
    targetPercent: 80,
    bandPercent: 2,
    shrinkStepPercent: 5,
    shrinkStepMiBMin: 128,
    guestFreePercent: 20,
    guestFreeMiBMin: 64,
    growToFactor: 2,
    shrinkToFactor: 1.5,
    deadbandMiB: 8,
    statsStaleAfterS: 5,
    hostPressurePercent: 20,
    hostPressureSamples: 3
  }
}

/** Checks a parameter set; the ConfigError names the field. */
export function validateBalloonParams (p: BalloonParams): BalloonParams {
  const range = (k: keyof BalloonParams, lo: number, hi: number, loOpen = false): void => {
    const v = p[k]
    if (typeof v !== 'number' || !Number.isFinite(v)) throw new ConfigError(`${k} must be a number (got ${JSON.stringify(v)})`, k)
    if ((loOpen ? v <= lo : v < lo) || v > hi) throw new ConfigError(`${k} must be ${loOpen ? 'above' : 'at least'} ${lo} and at most ${hi} (got ${v})`, k)
  }
  range('targetPercent', 0, 100, true)
  range('bandPercent', 0, 50)
  range('shrinkStepPercent', 0, 100, true)
  range('shrinkStepMiBMin', 0, 1 << 20)
  range('guestFreePercent', 0, 90)
  range('guestFreeMiBMin', 0, 1 << 20)
  range('shrinkToFactor', 1, 100)
  range('growToFactor', 1, 100)
  range('deadbandMiB', 0, 1 << 20)
  range('statsStaleAfterS', 0, 86400, true)
  range('hostPressurePercent', 0, 100, true)
  range('hostPressureSamples', 1, 10000)
  if (!Number.isInteger(p.hostPressureSamples)) throw new ConfigError(`hostPressureSamples must be a whole number of samples (got ${p.hostPressureSamples})`, 'hostPressureSamples')
  if (p.growToFactor <= p.shrinkToFactor) throw new ConfigError(`growToFactor (${p.growToFactor}) must be greater than shrinkToFactor (${p.shrinkToFactor}), or guests oscillate`, 'growToFactor')
  return p
}

/** One guest, as the agent saw it at this sample. */
export interface BalloonVm {
  id: string
  /** Configured memory (the balloon never goes above), MiB. */
  maxMiB: number
  /** Floor: the balloon never goes below, MiB. */
  minMiB: number
  /** Weight for handing back memory and for the order of reclaim (fewest first); 0 = leave this VM alone. */
  shares: number
  /** The balloon's actual size (the guest's memory now), MiB (QMP query-balloon). */
  actualMiB: number
  /** The last target set, MiB; null when none was set since the agent started. */
  targetMiB: number | null
  /** Memory the guest could use at once (stat-available-memory, else stat-free-memory), MiB; null when unknown. */
  guestFreeMiB: number | null
  /** Age of the guest's statistics, s; null when the guest never sent any. */
  statsAgeS: number | null
  /** The guest swapped (in or out) or took major faults since the last sample. */
  swapping: boolean
}

export interface BalloonHost {
  /** Memory the policy counts as the host's, MiB. */
  totalMiB: number
  /** Memory in use now, MiB (MemTotal - MemAvailable, or the sum of the guests' balloons). */
  usedMiB: number
  /** The host's memory pressure now: /proc/pressure/memory "some" avg10, percent; null or absent without PSI. */
  pressureSome10?: number | null
  /** Samples in a row the pressure was above the threshold before this one (the last decision's hostPressureStreak); absent = 0. */
  pressureStreak?: number
}

export type BalloonReason =
  /** Free memory under the floor, or swapping: grown at once. */
  | 'pressure'
  /** Host above its target: shrunk by one step. */
  | 'reclaim'
  /** Host below its target: grown by its share of the room. */
  | 'giveBack'

export interface BalloonChange {
  id: string
  /** New balloon target, MiB (integer). */
  targetMiB: number
  /** The current size it replaces (last target, or actual size when none), MiB. */
  fromMiB: number
  reason: BalloonReason
}

/** Why a guest was left alone, for the operator. */
export type BalloonHold = 'stale' | 'swapping' | 'excluded' | 'noStats' | 'atFloor' | 'atMax'

export interface BalloonDecision {
  changes: BalloonChange[]
  /** Guests left alone this step and why (only those with a reason worth showing). */
  held: Array<{ id: string, why: BalloonHold }>
  /** Host target, MiB. */
  targetMiB: number
  /** Host use counted by the policy (balloons in flight included), MiB. */
  usedMiB: number
  /** Memory the guests could give now without going under their floors (ignoring step caps), MiB. */
  reclaimableMiB: number
  /** Memory the host should shed that its guests cannot give, whatever the pace (after growth for pressure), MiB; > 0 = the host is stressed. */
  unmetMiB: number
  /** Guests under pressure this step. */
  pressured: string[]
  /** Samples in a row (this one included) the host's pressure was above hostPressurePercent; 0 when it is not (or unknown). */
  hostPressureStreak: number
  /** The host's pressure has lasted hostPressureSamples: this step reclaims for it, and gives nothing back. */
  hostPressured: boolean
  /** What the host's sustained pressure asks of the guests this step, MiB (0 when not pressured): with ballooning off, all of it is unmet. */
  pressureWantMiB: number
}

function floorMiB (vm: BalloonVm, sizeMiB: number, p: BalloonParams): number {
  return Math.max(p.guestFreeMiBMin, sizeMiB * p.guestFreePercent / 100)
}

/** One policy step. Deterministic: the same facts give the same changes, in id order within a phase. */
export function decideBalloon (host: BalloonHost, vms: readonly BalloonVm[], p: BalloonParams): BalloonDecision {
  const target = host.totalMiB * p.targetPercent / 100
  const band = host.totalMiB * p.bandPercent / 100
  const sorted = [...vms].sort((a, b) => a.id < b.id ? -1 : a.id > b.id ? 1 : 0)
  const held: BalloonDecision['held'] = []
  // What each guest has once the balloons in flight arrive; its free memory then.
  const cur = new Map<string, number>()
  const free = new Map<string, number | null>()
  let used = host.usedMiB
  for (const v of sorted) {
    const c = v.targetMiB ?? v.actualMiB
    cur.set(v.id, c)
    free.set(v.id, v.guestFreeMiB === null ? null : v.guestFreeMiB + (c - v.actualMiB))
    used += c - v.actualMiB
  }
  const stale = (v: BalloonVm): boolean => v.statsAgeS === null || v.statsAgeS > p.statsStaleAfterS
  const next = new Map<string, { to: number, reason: BalloonReason }>()
  const pressured: string[] = []

  // 1. Pressure: grow at once.
  let grown = 0
  for (const v of sorted) {
    if (v.shares <= 0) { held.push({ id: v.id, why: 'excluded' }); continue }
    const c = cur.get(v.id) as number
    const f = free.get(v.id) ?? null
    if (f === null || stale(v)) continue
    const fl = floorMiB(v, c, p)
    if (f >= fl && !v.swapping) continue
    pressured.push(v.id)
    const want = Math.max(p.growToFactor * fl - f, v.swapping ? p.shrinkStepMiBMin : 0)
    const to = Math.min(v.maxMiB, c + want)
    if (to - c < Math.min(p.deadbandMiB, v.maxMiB - c) || to <= c) { if (to <= c) held.push({ id: v.id, why: 'atMax' }); continue }
    next.set(v.id, { to, reason: 'pressure' })
    grown += to - c
  }

  // 2. Reclaim, from the guests with the most free memory above their shrink line.
  const spare = (v: BalloonVm): number => {
    const c = cur.get(v.id) as number
    const f = free.get(v.id) ?? null
    if (f === null) return 0
    // Free memory after a shrink by x is f - x, and the floor then is floor(c - x): solve
    // f - x >= k * max(minFree, (c - x) * pct) for x, both branches.
    const k = p.shrinkToFactor
    const byMin = f - k * p.guestFreeMiBMin
    const pct = p.guestFreePercent / 100
    const byPct = k * pct < 1 ? (f - k * pct * c) / (1 - k * pct) : (f >= k * pct * c ? Infinity : -Infinity)
    return Math.max(0, Math.min(byMin, byPct, c - v.minMiB))
  }
  let reclaimable = 0
  const donors: Array<{ v: BalloonVm, spare: number }> = []
  for (const v of sorted) {
    if (v.shares <= 0 || next.has(v.id)) continue
    if (v.guestFreeMiB === null) { held.push({ id: v.id, why: 'noStats' }); continue }
    if (stale(v)) { held.push({ id: v.id, why: 'stale' }); continue }
    if (v.swapping) { held.push({ id: v.id, why: 'swapping' }); continue }
    const s = spare(v)
    reclaimable += s
    donors.push({ v, spare: s })
  }
  const after = used + grown
  const psi = host.pressureSome10 ?? null
  const streak = psi !== null && Number.isFinite(psi) && psi > p.hostPressurePercent ? Math.max(0, host.pressureStreak ?? 0) + 1 : 0
  const hostPressured = streak >= p.hostPressureSamples
  const pressureWant = hostPressured ? Math.max(p.shrinkStepMiBMin, p.deadbandMiB) : 0
  let want = (after > target + band || (grown > 0 && after > target)) ? after - target : 0
  // Sustained host pressure: one more step on top of any excess over the target.
  if (hostPressured) want = Math.max(0, want) + pressureWant
  // Unmet: what the guests could not give even without the per-step caps. The caps only pace the
  // reclaim over a few samples; counting what they hold back would stress the host (and move a VM
  // away) for memory its balloons bring back within seconds.
  const unmet = Math.max(0, want - reclaimable)
  if (want > 0) {
    donors.sort((a, b) => (b.spare / b.v.shares) - (a.spare / a.v.shares) || (a.v.id < b.v.id ? -1 : 1))
    for (const d of donors) {
      if (want <= 0) break
      const c = cur.get(d.v.id) as number
      const step = Math.max(p.shrinkStepMiBMin, d.v.maxMiB * p.shrinkStepPercent / 100)
      // At most one step below what the guest really has now (the balloon's actual size).
      const lowest = Math.max(d.v.minMiB, Math.min(c, d.v.actualMiB - step))
      const take = Math.min(want, d.spare, c - lowest)
      if (take < p.deadbandMiB) { if (d.spare < p.deadbandMiB) held.push({ id: d.v.id, why: 'atFloor' }); continue }
      next.set(d.v.id, { to: c - take, reason: 'reclaim' })
      want -= take
    }
  } else if (after < target - band && !hostPressured) {
    // 3. Give back the room, by shares, to the guests under their maximum.
    let room = target - after
    const takers = sorted.filter(v => v.shares > 0 && !next.has(v.id) && (cur.get(v.id) as number) < v.maxMiB)
    for (let round = 0; round < 4 && room >= p.deadbandMiB && takers.length > 0; round++) {
      const sharesSum = takers.reduce((s, v) => s + v.shares, 0)
      let given = 0
      for (const v of takers) {
        const c = next.get(v.id)?.to ?? (cur.get(v.id) as number)
        const add = Math.min(v.maxMiB - c, room * v.shares / sharesSum)
        if (add <= 0) continue
        next.set(v.id, { to: c + add, reason: 'giveBack' })
        given += add
      }
      room -= given
      if (given < p.deadbandMiB) break
    }
  }

  const changes: BalloonChange[] = []
  for (const v of sorted) {
    const n = next.get(v.id)
    if (n === undefined) continue
    const from = cur.get(v.id) as number
    const to = Math.max(v.minMiB, Math.min(v.maxMiB, Math.round(n.to)))
    // Skip small moves, but never a growth that reaches the maximum or relieves pressure.
    if (Math.abs(to - from) < p.deadbandMiB && !(n.reason === 'pressure' && to > from) && !(to === v.maxMiB && to > from)) continue
    if (to === from) continue
    changes.push({ id: v.id, targetMiB: to, fromMiB: from, reason: n.reason })
  }
  return { changes, held, targetMiB: target, usedMiB: used, reclaimableMiB: reclaimable, unmetMiB: unmet, pressured, hostPressureStreak: streak, hostPressured, pressureWantMiB: pressureWant }
}
