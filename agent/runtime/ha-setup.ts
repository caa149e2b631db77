/**
 * High availability in the agent: the configuration section, and what the composition root
 * needs (the inventory with host ids, the tunables in ticks, the restored state, the boot spec of
 * each protected VM, the start-up clean-up of paused leftovers).
 *
 * Configuration (JSON), intervals in core ticks (core.tickMs, 100 ms by default):
 *   "ha": {
 *     "armed": true,
 *     "tieBreaker": "host3",
 *     "hosts": { "host1": { "cpuMips": 16000, "memMiB": 65536 } },
 *     "vms": [
 *       { "id": "db", "home": "host1", "priority": 10, "order": 0, "maxAttempts": 3, "fencePolicy": "stop",
 *         "vcpus": 2, "memMiB": 2048, "kernel": "/srv/vm/vmlinuz", "initrd": "/srv/vm/initrd", "append": "console=ttyS0",
 *         "args": ["-netdev", "bridge,id=n0,br=br0", "-device", "virtio-net-pci,netdev=n0"] }
 *     ],
 *     "timing": { "leaseTicks": 15, "fenceTicks": 25, "watchdogTicks": 80 },
 *     "watchdog": { "device": "/dev/watchdog", "loadSoftdog": true }
 *   }
 * Every cluster member takes part (majorities count all of them); `tieBreaker` names a member
 * that votes but never runs protected VMs (needed with two hosts). A VM boots from its
 * definition here (kernel/initrd/append, or `image`: a disk image on shared storage) on
 * whichever host restarts it; the definition must be the same in every member's file.
 * `timing` overrides agent/core/ha/ha-config.ts defaultHaConfig(); fenceDelayTicks defaults to
 * the safe minimum for the timing in force, and a value below it is refused at start-up.
 */
import {
  ConfigError, defaultHaConfig, HA_KEY_PREFIX, haRestoredFrom, requiredFenceDelayTicks,
  validateHaConfig, validateHaInventory, type HaConfig, type HaCoreOptions, type HaMemberSpec,
  type HaRestored, type HaSource, type HaVmSpec, type HostId, type VmId
} from '../core/index.js'
import type { Store } from '../ports/store.js'
import type { VmSpec } from '../ports/hypervisor-driver.js'
import { checkKeys } from '../lib/known-keys.js'
import { CONFIG_KEYS } from '../config-keys.js'
import { isObj, type Obj } from '../lib/obj.js'

/** One protected VM as written in the file (home by member name). */
export interface HaVmEntry {
  id: string
  home: string
  priority: number
  order: number
  maxAttempts?: number
  fencePolicy: 'stop' | 'pause'
  vcpus: number
  memMiB: number
  /** CPU demand for the restart placement. @default vcpus x 1000 */
  cpuMips: number
  kernel?: string
  initrd?: string
  append?: string
  /** Boot from this disk image (shared storage) rather than a kernel. */
  image?: string
  /** Extra QEMU arguments (devices such as a NIC), as driver.qemu.vms[].args. */
  args?: string[]
  /** The simulated driver: the load pattern a restart runs (as driver.vms[].pattern). */
  pattern?: string
  /** The simulated driver: mean CPU use as a fraction of the VM's vcpus (as driver.vms[].cpuMean). */
  cpuMean?: number
}

export interface HaSection {
  /**
   * This host takes part in HA: its file has an ha section (even `{}`). It then votes in HA
   * majorities, holds a watchdog, and can be home to, or restart, VMs protected live (`starling
   * ha protect`); without one it takes no part. @default false
   */
  enabled: boolean
  /** The mode a new cluster starts in (run-time arm/disarm wins). @default true */
  armed: boolean
  /** Member name of the tie-breaker (votes, never runs HA VMs), or null. */
  tieBreaker: string | null
  /** Capacity of each member for the restart placement. @default unbounded */
  hosts: Record<string, { cpuMips: number, memMiB: number }>
  vms: HaVmEntry[]
  config: HaConfig
  /**
   * The watchdog device that resets this host when its agent hangs (agent/adapters/watchdog-device.ts):
   * `device` (@default "/dev/watchdog"); `timeoutSec`, the device's timeout when sysfs does not
   * report it; `loadSoftdog` (@default true): when the device is missing, load the softdog module
   * with soft_margin = timing.watchdogTicks x tickMs (as Proxmox does; needs root: the unit's
   * `starling fence-setup`). The device's timeout must be <= timing.watchdogTicks x tickMs. A host
   * that cannot hold the device protects no VM (HA refuses there, and says why); the systemd
   * watchdog is never taken for a fence.
   */
  watchdog: { device: string, timeoutSec: number | null, loadSoftdog: boolean }
}

const UNBOUNDED = { cpuMips: 1e9, memMiB: 1e9 }

/** Validates `ha` of the configuration. Throws ConfigError naming the field. */
export function validateHaSection (raw: unknown, memberNames: readonly string[]): HaSection {
  const fail = (path: string, what: string): never => { throw new ConfigError(`config: ${path} ${what}`, path) }
  const r: Obj = raw === undefined ? {} : isObj(raw) ? raw : fail('ha', 'must be an object')
  checkKeys(r, CONFIG_KEYS.ha, 'ha') // the section's keys: agent/config-keys.ts
  const int = (o: Obj, k: string, p: string, def: number | undefined, min: number): number => {
    const v = o[k]
    if (v === undefined && def !== undefined) return def
    if (typeof v !== 'number' || !Number.isInteger(v) || v < min) fail(`${p}.${k}`, `must be an integer >= ${min}`)
    return v as number
  }
  const str = (o: Obj, k: string, p: string): string => {
    if (typeof o[k] !== 'string' || o[k] === '') fail(`${p}.${k}`, 'must be a non-empty string')
    return o[k] as string
  }
  if (r.armed !== undefined && typeof r.armed !== 'boolean') fail('ha.armed', 'must be true or false')
  let tieBreaker: string | null = null
  if (r.tieBreaker !== undefined) {
    tieBreaker = str(r, 'tieBreaker', 'ha')
    if (!memberNames.includes(tieBreaker)) fail('ha.tieBreaker', `"${tieBreaker}" is not one of cluster.members`)
  }
  const hosts: HaSection['hosts'] = {}
  if (r.hosts !== undefined) {
    if (!isObj(r.hosts)) fail('ha.hosts', 'must be an object of member name to { cpuMips, memMiB }')
    for (const [name, h] of Object.entries(r.hosts as Obj)) {
      if (!memberNames.includes(name)) fail(`ha.hosts.${name}`, 'is not one of cluster.members')
      if (!isObj(h)) fail(`ha.hosts.${name}`, 'must be an object')
      hosts[name] = { cpuMips: int(h as Obj, 'cpuMips', `ha.hosts.${name}`, undefined, 1), memMiB: int(h as Obj, 'memMiB', `ha.hosts.${name}`, undefined, 1) }
    }
  }
  const vms: HaVmEntry[] = []
  if (r.vms !== undefined) {
    if (!Array.isArray(r.vms)) fail('ha.vms', 'must be an array')
    for (const [i, v] of (r.vms as unknown[]).entries()) {
      const p = `ha.vms[${i}]`
      if (!isObj(v)) fail(p, 'must be an object')
      const o = v as Obj
      const id = str(o, 'id', p)
      if (!/^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/.test(id)) fail(`${p}.id`, 'must be letters, digits, _ . - (up to 64)')
      const home = str(o, 'home', p)
      if (!memberNames.includes(home)) fail(`${p}.home`, `"${home}" is not one of cluster.members`)
      const fencePolicy = o.fencePolicy ?? 'stop'
      if (fencePolicy !== 'stop' && fencePolicy !== 'pause') fail(`${p}.fencePolicy`, 'must be "stop" or "pause"')
      const vcpus = int(o, 'vcpus', p, 1, 1)
      const e: HaVmEntry = {
        id, home, priority: int(o, 'priority', p, 0, -1_000_000), order: int(o, 'order', p, 0, -1_000_000),
        fencePolicy: fencePolicy as 'stop' | 'pause', vcpus, memMiB: int(o, 'memMiB', p, 256, 16), cpuMips: int(o, 'cpuMips', p, vcpus * 1000, 0)
      }
      if (o.maxAttempts !== undefined) e.maxAttempts = int(o, 'maxAttempts', p, undefined, 1)
      for (const k of ['kernel', 'initrd', 'append', 'image'] as const) if (o[k] !== undefined) e[k] = str(o, k, p)
      if (o.args !== undefined) {
        if (!Array.isArray(o.args) || !o.args.every(a => typeof a === 'string')) fail(`${p}.args`, 'must be an array of strings')
        e.args = o.args as string[]
      }
      if (o.pattern !== undefined) {
        e.pattern = str(o, 'pattern', p)
        if (!/^(constant|sine|walk|spiky|trace:.+)$/.test(e.pattern)) fail(`${p}.pattern`, `must be constant, sine, walk, spiky or trace:<file> (got "${e.pattern}")`)
      }
      if (o.cpuMean !== undefined) {
        if (typeof o.cpuMean !== 'number' || !(o.cpuMean >= 0 && o.cpuMean <= 1)) fail(`${p}.cpuMean`, 'must be a number in [0, 1]')
        e.cpuMean = o.cpuMean as number
      }
      if (e.kernel === undefined && e.image === undefined) fail(p, 'needs "kernel" or "image" (what a restart boots)')
      vms.push(e)
    }
  }
  const watchdog: HaSection['watchdog'] = { device: '/dev/watchdog', timeoutSec: null, loadSoftdog: true }
  if (r.watchdog !== undefined) {
    if (!isObj(r.watchdog)) fail('ha.watchdog', 'must be an object { device?, timeoutSec?, loadSoftdog? }')
    const w = r.watchdog as Obj
    if (w.device !== undefined) watchdog.device = str(w, 'device', 'ha.watchdog')
    if (!watchdog.device.startsWith('/')) fail('ha.watchdog.device', `must be an absolute path (got ${JSON.stringify(watchdog.device)})`)
    if (w.timeoutSec !== undefined) watchdog.timeoutSec = int(w, 'timeoutSec', 'ha.watchdog', undefined, 1)
    if (w.loadSoftdog !== undefined && typeof w.loadSoftdog !== 'boolean') fail('ha.watchdog.loadSoftdog', 'must be true or false')
    if (w.loadSoftdog === false) watchdog.loadSoftdog = false
  }
  const base = defaultHaConfig()
  let timing: Obj = {}
  if (r.timing !== undefined) {
    if (!isObj(r.timing)) fail('ha.timing', 'must be an object')
    timing = r.timing as Obj
  }
  const merged = { ...base, ...timing } as HaConfig
  // Unless given, the fence delay is the smallest the timing argument allows for the timing in
  // force (agent/core/ha/index.ts): the fastest safe failover.
  if (timing.fenceDelayTicks === undefined) merged.fenceDelayTicks = requiredFenceDelayTicks(merged)
  try {
    validateHaConfig(merged)
    if (vms.length > 0) validateHaInventory(haMembers(memberNames, { tieBreaker, hosts }, n => n), vms.map(e => haVmSpec(e, n => n)))
  } catch (err) {
    if (err instanceof ConfigError) throw new ConfigError(err.message.startsWith('config:') ? err.message : `config: ${err.message}`, err.path)
    throw err
  }
  return { enabled: raw !== undefined, armed: r.armed !== false, tieBreaker, hosts, vms, config: merged, watchdog }
}

function haMembers (names: readonly string[], s: Pick<HaSection, 'tieBreaker' | 'hosts'>, idOf: (name: string) => HostId): HaMemberSpec[] {
  return names.map(n => ({ id: idOf(n), ...(s.hosts[n] ?? UNBOUNDED), ...(s.tieBreaker === n ? { tieBreaker: true } : {}) }))
}

function haSource (e: HaVmEntry): HaSource {
  return e.image !== undefined ? { kind: 'image', image: e.image } : { kind: 'shared', definition: e.id }
}

function haVmSpec (e: HaVmEntry, idOf: (name: string) => HostId): HaVmSpec {
  return {
    id: e.id, home: idOf(e.home), priority: e.priority, order: e.order, cpuMips: e.cpuMips, memMiB: e.memMiB,
    source: haSource(e), fencePolicy: e.fencePolicy, ...(e.maxAttempts !== undefined ? { maxAttempts: e.maxAttempts } : {})
  }
}

/**
 * What the driver boots for a protected VM (null: not a protected VM): its entry in the agreed
 * cluster configuration (`agreed`, when it keeps the inventory), else in this host's file.
 */
export function haBootSpec (section: HaSection, vm: VmId, agreed?: ReadonlyArray<Omit<HaVmEntry, 'priority' | 'order' | 'fencePolicy' | 'cpuMips'>>): VmSpec | null {
  const e = agreed !== undefined ? agreed.find(x => x.id === vm) : section.vms.find(x => x.id === vm)
  if (e === undefined) return null
  const spec = bootSpec(e, e.id)
  // The simulated driver reads the load it runs from the spec's extra (QEMU ignores these keys).
  if (e.pattern !== undefined) spec.extra = { ...spec.extra, pattern: e.pattern }
  if (e.cpuMean !== undefined) spec.extra = { ...spec.extra, cpuMean: e.cpuMean }
  return spec
}

/** The driver's spec of a VM definition (kernel, initrd, append, or a disk image; extra QEMU args), booted as `id`. */
export function bootSpec (e: { vcpus: number, memMiB: number, kernel?: string, initrd?: string, append?: string, image?: string, args?: string[] }, id: VmId): VmSpec {
  const extra: Record<string, unknown> = {}
  if (e.kernel !== undefined) extra.kernel = e.kernel
  if (e.initrd !== undefined) extra.initrd = e.initrd
  if (e.append !== undefined) extra.append = e.append
  if (e.image !== undefined) extra.disks = [{ file: e.image }]
  if (e.args !== undefined) extra.args = e.args
  return { id, vcpus: e.vcpus, memMiB: e.memMiB, extra }
}

/** Reads what the core persisted under 'ha/' (undefined on a first start). */
export async function loadHaState (store: Store): Promise<HaRestored | undefined> {
  return haRestoredFrom(await store.entries(HA_KEY_PREFIX))
}

/** What AgentCoreOptions.ha takes. `running`: protected VMs the driver runs here now. */
export async function haCoreOptions (section: HaSection, idByName: ReadonlyMap<string, string>, store: Store, running: VmId[]): Promise<HaCoreOptions> {
  const idOf = (n: string): HostId => idByName.get(n) ?? n
  const restored = await loadHaState(store)
  return {
    members: haMembers([...idByName.keys()], section, idOf),
    vms: section.vms.map(e => haVmSpec(e, idOf)),
    config: section.config,
    armed: section.armed,
    running,
    ...(restored !== undefined ? { restored } : {})
  }
}
