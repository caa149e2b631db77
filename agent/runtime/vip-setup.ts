/**
 * Virtual IPs in the agent: the configuration section, and the pieces the composition root needs
 * (the specs with host ids, the tunables in ticks, the restored state, the adapter and applier,
 * and the start-up removal of addresses a killed agent left on the interface).
 *
 * Configuration (JSON):
 *   "vips": [
 *     { "id": "web", "address": "192.0.2.10/24", "iface": "eth0", "vm": "vm-web" },
 *     { "id": "api", "address": "192.0.2.11/24", "iface": "eth0", "hosts": ["host1", "host2"] }
 *   ],
 *   "vip": { "burstCount": 5, "burstIntervalMs": 200, "secondBurstTicks": 50, ... }
 * A VIP names either the VM it follows ("vm") or the hosts that may hold it, in order of
 * preference ("hosts", member names). "vip" overrides tunables of agent/core/vip/vip-config.ts
 * (intervals in ticks; the defaults are the documented wall times at core.tickMs).
 */
import {
  ConfigError, defaultVipConfig, parseVipAddress, restoreVipState, validateVipConfig,
  validateVipSpecs, VIP_KEY_PREFIX, type VipConfig, type VipCoreOptions,
  type VipRestored, type VipSpec
} from '../core/index.js'
import type { Store } from '../ports/store.js'
import type { Logger } from '../ports/logger.js'
import type { VipAdapter } from '../ports/vip-adapter.js'
import { checkKeys } from '../lib/known-keys.js'
import { CONFIG_KEYS } from '../config-keys.js'
import { isObj, type Obj } from '../lib/obj.js'

/** One configured VIP as written in the file (hosts by member name). */
export interface VipEntry {
  id: string
  address: string
  iface: string
  binding: { kind: 'vm', vm: string } | { kind: 'group', hosts: string[] }
}

export interface VipSection {
  list: VipEntry[]
  /** Tunables (ticks), validated with the core's tickMs. */
  config: VipConfig
}

/** Validates `vips` and `vip` of the configuration. Throws ConfigError naming the field. */
export function validateVipSection (rawList: unknown, rawTuning: unknown, memberNames: readonly string[], tickMs: number): VipSection {
  const fail = (path: string, what: string): never => { throw new ConfigError(`config: ${path} ${what}`, path) }
  const list: VipEntry[] = []
  checkKeys(rawList, CONFIG_KEYS.vips, 'vips') // the sections' keys: agent/config-keys.ts
  checkKeys(rawTuning, CONFIG_KEYS.vip, 'vip')
  if (rawList !== undefined) {
    if (!Array.isArray(rawList)) fail('vips', 'must be an array')
    for (const [i, v] of (rawList as unknown[]).entries()) {
      const p = `vips[${i}]`
      if (!isObj(v)) fail(p, 'must be an object')
      const o = v as Obj
      for (const k of ['id', 'address', 'iface'] as const) if (typeof o[k] !== 'string' || o[k] === '') fail(`${p}.${k}`, 'must be a non-empty string')
      if (parseVipAddress(o.address as string) === null) fail(`${p}.address`, `must be IPv4 "a.b.c.d/len" (got "${String(o.address)}")`)
      const hasVm = o.vm !== undefined
      const hasHosts = o.hosts !== undefined
      if (hasVm === hasHosts) fail(p, 'must name exactly one of "vm" (the VM it follows) or "hosts" (the group that holds it)')
      let binding: VipEntry['binding']
      if (hasVm) {
        if (typeof o.vm !== 'string' || o.vm === '') fail(`${p}.vm`, 'must be a VM id')
        binding = { kind: 'vm', vm: o.vm as string }
      } else {
        if (!Array.isArray(o.hosts) || o.hosts.length === 0) fail(`${p}.hosts`, 'must be a non-empty array of member names')
        for (const h of o.hosts as unknown[]) if (typeof h !== 'string' || !memberNames.includes(h)) fail(`${p}.hosts`, `names ${JSON.stringify(h)}, not one of cluster.members`)
        binding = { kind: 'group', hosts: [...(o.hosts as string[])] }
      }
      list.push({ id: o.id as string, address: o.address as string, iface: o.iface as string, binding })
    }
  }
  const base = defaultVipConfig(tickMs)
  let config: VipConfig = base
  if (rawTuning !== undefined) {
    if (!isObj(rawTuning)) fail('vip', 'must be an object')
    config = { ...base, ...(rawTuning as Partial<VipConfig>) }
  }
  try {
    validateVipConfig(config)
    validateVipSpecs(list.map(e => ({ ...e, binding: e.binding.kind === 'vm' ? e.binding : { kind: 'group', hosts: e.binding.hosts } })), memberNames)
  } catch (err) {
    if (err instanceof ConfigError) throw new ConfigError(`config: ${err.message}`, err.path)
    throw err
  }
  return { list, config }
}

/** The specs with member names turned into host ids. */
export function vipSpecs (section: VipSection, idByName: ReadonlyMap<string, string>): VipSpec[] {
  return section.list.map(e => ({
    id: e.id,
    address: e.address,
    iface: e.iface,
    binding: e.binding.kind === 'vm' ? { kind: 'vm', vm: e.binding.vm } : { kind: 'group', hosts: e.binding.hosts.map(h => idByName.get(h) ?? h) }
  }))
}

/** Reads what the core persisted under 'vip/'. */
export async function loadVipState (store: Store): Promise<VipRestored> {
  return restoreVipState(await store.entries(VIP_KEY_PREFIX))
}

/** What AgentCoreOptions.vips takes. */
export async function vipCoreOptions (section: VipSection, idByName: ReadonlyMap<string, string>, store: Store): Promise<VipCoreOptions> {
  return { specs: vipSpecs(section, idByName), members: [...idByName.values()], config: section.config, restored: await loadVipState(store) }
}

/**
 * Removes every configured VIP address from this host (start-up, before any claim; and the unit's
 * stop hook after a crash). An agent that was killed (kill -9) left its addresses on the
 * interface; it does not know whether it still owns them. Returns the addresses that failed.
 */
export async function removeLocalVips (section: VipSection, adapter: VipAdapter, logger: Logger): Promise<string[]> {
  const log = logger.forComponent('agent:vip')
  const failed: string[] = []
  await Promise.all(section.list.map(async e => {
    const a = parseVipAddress(e.address)
    if (a === null) return
    try {
      const here = await adapter.hasAddress({ ...a, iface: e.iface })
      if (here) {
        await adapter.remove({ ...a, iface: e.iface })
        log.warn(`vip ${e.id}: removed stale ${e.address} from ${e.iface}`)
      }
    } catch (err) {
      failed.push(`${e.id} (${e.address} on ${e.iface}): ${(err as Error).message}`)
    }
  }))
  return failed
}
