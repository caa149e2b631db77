/**
 * The `memory` section of the configuration: ballooning inside this host (the policy is
 * policies/balloon.ts, the loop agent/runtime/balloon-controller.ts). Every field is documented
 * in systemd/starling.example.md.
 */
import { ConfigError } from '../core/index.js'
import { defaultBalloonParams, validateBalloonParams, type BalloonParams } from '../../policies/balloon.js'
import { defaultKsmParams, validateKsmParams, type KsmParams } from '../../policies/ksm.js'
import { isObj, type Obj } from '../lib/obj.js'

export interface MemoryVmEntry {
  /** The balloon never takes the VM below this, MiB. @default memory.vmMinPercent of the VM's memory */
  minMiB?: number
  /** Weight for handing memory back, and reclaim order (fewest first); 0 = never balloon this VM. @default 1000 */
  shares?: number
}

export interface MemorySection {
  /**
   * Apply the balloon policy's targets. Off: the agent still gathers and reports the memory facts
   * (starling memory), and leaves every balloon where it is. @default false
   */
  balloon: boolean
  /**
   * Memory the policy counts as this host's, MiB, with the host's use counted as the sum of its
   * guests' balloons (a budget for the VMs). null: the host's MemTotal, with its use from
   * MemAvailable (the real host). @default null
   */
  hostMemMiB: number | null
  /** How often the guests send their statistics, s (QEMU guest-stats-polling-interval). @default 1 */
  statsPollSec: number
  /** A VM's floor when memory.vms does not set one, percent of its memory. @default 25 */
  vmMinPercent: number
  /** The balloon policy's parameters (policies/balloon.ts); each field has a default. */
  policy: BalloonParams
  /** Per-VM settings by VM id. */
  vms: Record<string, MemoryVmEntry>
  /**
   * Drive the kernel's page sharing (KSM, /sys/kernel/mm/ksm, root only): start it when free
   * memory runs short, scan within bounds and ksmd's CPU budget, stop it when not needed, and put
   * the host's own KSM settings back when the agent stops. Off: KSM is only reported. @default false
   */
  ksm: boolean
  /** The KSM policy's parameters (policies/ksm.ts); each field has a default. */
  ksmPolicy: KsmParams
}

export function defaultMemorySection (): MemorySection {
  return { balloon: false, hostMemMiB: null, statsPollSec: 1, vmMinPercent: 25, policy: defaultBalloonParams(), vms: {}, ksm: false, ksmPolicy: defaultKsmParams() }
}

/** A VM the configuration defines, with where its memory is set (for messages). */
export interface KnownVm { id: string, memMiB: number, balloon: boolean, path: string }

function fail (path: string, what: string): never {
  throw new ConfigError(`config: ${path} ${what}`, path)
}

function num (o: Obj, key: string, path: string, lo: number, hi: number): number {
  const v = o[key]
  if (typeof v !== 'number' || !Number.isFinite(v)) fail(`${path}.${key}`, `must be a number (got ${JSON.stringify(v)})`)
  if (v < lo || v > hi) fail(`${path}.${key}`, `must be between ${lo} and ${hi} (got ${v})`)
  return v
}

/**
 * Validates `memory`. `known` lists the VMs the configuration defines (driver.qemu.vms, ha.vms,
 * ...): a floor above a VM's memory, or settings for a VM without a balloon device, name the field.
 */
export function validateMemorySection (raw: unknown, known: KnownVm[]): MemorySection {
  const d = defaultMemorySection()
  if (raw === undefined) return d
  if (!isObj(raw)) fail('memory', 'must be an object')
  const out: MemorySection = { ...d, policy: { ...d.policy }, vms: {}, ksmPolicy: { ...d.ksmPolicy } }
  if (raw.balloon !== undefined) {
    if (typeof raw.balloon !== 'boolean') fail('memory.balloon', `must be true or false (got ${JSON.stringify(raw.balloon)})`)
    out.balloon = raw.balloon
  }
  if (raw.ksm !== undefined) {
    if (typeof raw.ksm !== 'boolean') fail('memory.ksm', `must be true or false (got ${JSON.stringify(raw.ksm)})`)
    out.ksm = raw.ksm
  }
  if (raw.ksmPolicy !== undefined) {
    if (!isObj(raw.ksmPolicy)) fail('memory.ksmPolicy', 'must be an object')
    const p = { ...d.ksmPolicy, ...raw.ksmPolicy } as KsmParams
    try { out.ksmPolicy = validateKsmParams(p) } catch (err) {
      if (!(err instanceof ConfigError)) throw err
      throw new ConfigError(`config: memory.ksmPolicy.${err.message}`, `memory.ksmPolicy.${err.path}`)
    }
  }
  if (raw.hostMemMiB !== undefined && raw.hostMemMiB !== null) out.hostMemMiB = num(raw, 'hostMemMiB', 'memory', 64, 1 << 30)
  if (raw.statsPollSec !== undefined) out.statsPollSec = Math.round(num(raw, 'statsPollSec', 'memory', 1, 3600))
  if (raw.vmMinPercent !== undefined) out.vmMinPercent = num(raw, 'vmMinPercent', 'memory', 0, 100)
  if (raw.policy !== undefined) {
    if (!isObj(raw.policy)) fail('memory.policy', 'must be an object')
    const p = { ...d.policy, ...raw.policy } as BalloonParams
    try { out.policy = validateBalloonParams(p) } catch (err) {
      if (!(err instanceof ConfigError)) throw err
      throw new ConfigError(`config: memory.policy.${err.message}`, `memory.policy.${err.path}`)
    }
  }
  if (out.policy.statsStaleAfterS < 2 * out.statsPollSec) {
    fail('memory.policy.statsStaleAfterS', `(${out.policy.statsStaleAfterS}) must be at least twice memory.statsPollSec (${out.statsPollSec}), or every guest looks stale between two polls`)
  }
  if (raw.vms !== undefined) {
    if (!isObj(raw.vms)) fail('memory.vms', 'must be an object of VM id to { minMiB, shares }')
    for (const [id, e] of Object.entries(raw.vms)) {
      const p = `memory.vms.${id}`
      if (!isObj(e)) fail(p, 'must be an object')
      const entry: MemoryVmEntry = {}
      if (e.minMiB !== undefined) entry.minMiB = num(e, 'minMiB', p, 0, 1 << 30)
      if (e.shares !== undefined) entry.shares = num(e, 'shares', p, 0, 50000)
      for (const k of known.filter(v => v.id === id)) {
        if (!k.balloon) fail(p, `is set, but VM ${id} has no balloon device (${k.path}.balloon is false)`)
        if (entry.minMiB !== undefined && entry.minMiB > k.memMiB) fail(`${p}.minMiB`, `(${entry.minMiB}) is above the VM's memory (${k.memMiB} MiB, ${k.path}.memMiB)`)
      }
      out.vms[id] = entry
    }
  }
  return out
}

/** A VM's floor and shares from the section, for a VM of `maxMiB`. */
export function memoryVmSettings (m: MemorySection, id: string, maxMiB: number): { minMiB: number, shares: number } {
  const e = m.vms[id]
  const minMiB = Math.min(maxMiB, e?.minMiB ?? Math.round(maxMiB * m.vmMinPercent / 100))
  return { minMiB, shares: e?.shares ?? 1000 }
}
