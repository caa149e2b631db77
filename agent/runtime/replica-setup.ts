/**
 * Replicas of stateless VMs in the agent (agent/core/replica): the configuration section, the
 * executor of replica commands, and the connection split behind the VMs' VIPs.
 *
 * Configuration (JSON):
 *   "replication": {
 *     "mode": "cost",                         // off | cost | prefer (policies/replication.ts)
 *     "vms": ["web", { "id": "api", "vcpus": 1, "memMiB": 512, "kernel": "...", "initrd": "...", "args": [] }],
 *     "serviceAddresses": { "host2": "10.0.0.12" },
 *     "bootSec": 30, "overheadFraction": 0.02, "migrationDegradation": 0.1, "horizonSec": 300, "retireBelow": 0.7
 *   }
 * A VM listed by id boots from its definition in `ha.vms` or `driver.qemu.vms`; an object is a
 * definition of its own (the fields of `ha.vms`). The definition must be the same in every
 * member's file: any member may be asked to boot the replica. A replica is VM `<id>-replica`.
 * `serviceAddresses` says where the host that carries a VM's VIP forwards the connections it
 * splits to a replica on that member (the replica's VM answers on its host's addresses, e.g. QEMU
 * user networking's hostfwd); a member not listed is reached at the host of its mesh address.
 * Connections are split only for VIPs bound to the VM (`vips[].vm`), on TCP, by iptables NAT on
 * the carrying host (agent/adapters/iptables-splitter.ts), which needs net.ipv4.ip_forward=1.
 */
import {
  ConfigError, isReplicaRecord, KEY_REPLICA_PREFIX, type HostId, type ReplicaCommand,
  type ReplicaCoreOptions, type ReplicaRecord, type SplitEffect, type VmId
} from '../core/index.js'
import { defaultReplicationParams, type ReplicationParams } from '../../policies/replication.js'
import type { Store } from '../ports/store.js'
import type { HypervisorDriver, VmSpec } from '../ports/hypervisor-driver.js'
import type { Logger } from '../ports/logger.js'
import { isIpv4, type SplitTarget } from '../adapters/iptables-splitter.js'
import { bootSpec } from './ha-setup.js'
import { checkKeys } from '../lib/known-keys.js'
import { CONFIG_KEYS } from '../config-keys.js'
import { isObj, type Obj } from '../lib/obj.js'

export interface ReplicaVmDef {
  id: string
  vcpus: number
  memMiB: number
  kernel?: string
  initrd?: string
  append?: string
  image?: string
  args?: string[]
}

export interface ReplicationSection {
  enabled: boolean
  params: ReplicationParams
  /** Ids as written; resolved against ha.vms and driver.qemu.vms by resolveReplicaVms. */
  vms: Array<string | ReplicaVmDef>
  /** Member name -> IPv4 address its replicas answer on. */
  serviceAddresses: Record<string, string>
}

const ID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,55}$/

export function validateReplicationSection (raw: unknown, memberNames: readonly string[]): ReplicationSection {
  const fail = (path: string, what: string): never => { throw new ConfigError(`config: ${path} ${what}`, path) }
  const d = defaultReplicationParams()
  if (raw === undefined) return { enabled: false, params: { ...d, mode: 'off' }, vms: [], serviceAddresses: {} }
  if (!isObj(raw)) fail('replication', 'must be an object')
  const r = raw as Obj
  checkKeys(r, CONFIG_KEYS.replication, 'replication') // the section's keys: agent/config-keys.ts
  const mode = r.mode ?? d.mode
  if (mode !== 'off' && mode !== 'cost' && mode !== 'prefer') fail('replication.mode', `must be "off", "cost" or "prefer" (got ${JSON.stringify(mode)})`)
  const num = (k: keyof ReplicationParams, min: number, max: number): number => {
    const v = r[k] ?? d[k]
    if (typeof v !== 'number' || !Number.isFinite(v) || v < min || v > max) fail(`replication.${k}`, `must be a number in [${min}, ${max}] (got ${JSON.stringify(v)})`)
    return v as number
  }
  const params: ReplicationParams = {
    mode: mode as ReplicationParams['mode'],
    bootSec: num('bootSec', 0, 3600),
    overheadFraction: num('overheadFraction', 0, 1),
    migrationDegradation: num('migrationDegradation', 0, 1),
    horizonSec: num('horizonSec', 0, 86_400),
    retireBelow: num('retireBelow', 0, 1)
  }
  const vms: Array<string | ReplicaVmDef> = []
  const rv = r.vms ?? []
  if (!Array.isArray(rv)) fail('replication.vms', 'must be an array of VM ids or definitions')
  for (const [i, v] of (rv as unknown[]).entries()) {
    const p = `replication.vms[${i}]`
    if (typeof v === 'string') {
      if (!ID.test(v)) fail(p, `must be a VM id (letters, digits, . _ -; got "${v}")`)
      vms.push(v)
      continue
    }
    if (!isObj(v)) fail(p, 'must be a VM id or a definition object')
    const o = v as Obj
    if (typeof o.id !== 'string' || !ID.test(o.id)) fail(`${p}.id`, 'must be a VM id')
    for (const k of ['vcpus', 'memMiB'] as const) if (!Number.isInteger(o[k]) || (o[k] as number) < 1) fail(`${p}.${k}`, 'must be a positive integer')
    for (const k of ['kernel', 'initrd', 'append', 'image'] as const) if (o[k] !== undefined && typeof o[k] !== 'string') fail(`${p}.${k}`, 'must be a string')
    if (o.kernel === undefined && o.image === undefined) fail(p, 'needs a kernel or an image to boot from')
    if (o.args !== undefined && (!Array.isArray(o.args) || o.args.some(a => typeof a !== 'string'))) fail(`${p}.args`, 'must be an array of strings')
    vms.push(o as unknown as ReplicaVmDef)
  }
  const ids = vms.map(v => typeof v === 'string' ? v : v.id)
  const dup = ids.find((x, i) => ids.indexOf(x) !== i)
  if (dup !== undefined) fail('replication.vms', `lists ${dup} twice`)
  const sa = r.serviceAddresses ?? {}
  if (!isObj(sa)) fail('replication.serviceAddresses', 'must be an object of member name -> IPv4 address')
  const serviceAddresses: Record<string, string> = {}
  for (const [k, v] of Object.entries(sa as Obj)) {
    if (!memberNames.includes(k)) fail(`replication.serviceAddresses.${k}`, 'is not a cluster member')
    if (typeof v !== 'string' || !isIpv4(v)) fail(`replication.serviceAddresses.${k}`, `must be an IPv4 address (got ${JSON.stringify(v)})`)
    serviceAddresses[k] = v as string
  }
  return { enabled: vms.length > 0, params, vms, serviceAddresses }
}

/** Resolve each listed VM to its boot definition; throws ConfigError for one that has none. */
export function resolveReplicaVms (section: ReplicationSection, known: ReadonlyArray<ReplicaVmDef>): ReplicaVmDef[] {
  return section.vms.map((v, i) => {
    if (typeof v !== 'string') return v
    const d = known.find(k => k.id === v)
    if (d === undefined) throw new ConfigError(`config: replication.vms[${i}] VM ${v} has no definition in ha.vms or driver.qemu.vms (give one inline)`, `replication.vms[${i}]`)
    return d
  })
}

/** The boot spec of the replica of `vm` (null: not configured). */
export function replicaSpec (defs: readonly ReplicaVmDef[], vm: VmId, id: VmId): VmSpec | null {
  const e = defs.find(x => x.id === vm)
  return e === undefined ? null : bootSpec(e, id)
}

/** The core's options: the stateless VMs, the policy and the journal found in the store. */
export async function replicaCoreOptions (section: ReplicationSection, defs: readonly ReplicaVmDef[], store: Store): Promise<ReplicaCoreOptions> {
  const restored: ReplicaRecord[] = []
  for (const [, v] of await store.entries(KEY_REPLICA_PREFIX)) if (isReplicaRecord(v)) restored.push(v)
  return { stateless: defs.map(d => ({ vm: d.id, vcpus: d.vcpus, memMiB: d.memMiB })), params: section.params, restored }
}

export type ReplicaDriverOutcome = { ok: true } | { ok: false, code: string, message: string }
export type ReplicaExecutor = (c: ReplicaCommand, signal: AbortSignal) => Promise<ReplicaDriverOutcome>

interface KillableDriver extends HypervisorDriver { kill?: (id: string) => Promise<void> }

/**
 * Carries out replica commands; never throws. Start: a copy that runs already counts as started,
 * a stopped or paused leftover is removed first. Stop: kill at once (a stateless copy has nothing
 * to save); one that is not there is stopped already.
 */
export function replicaExecutor (driver: HypervisorDriver, defs: readonly ReplicaVmDef[]): ReplicaExecutor {
  const d = driver as KillableDriver
  const kill = async (id: VmId, signal: AbortSignal): Promise<void> => {
    if (typeof d.kill === 'function') { await d.kill(id); return }
    try { await driver.stop(id, signal) } catch (err) { if ((err as { code?: string }).code !== 'VM_NOT_FOUND') throw err }
  }
  return async (c, signal) => {
    try {
      const here = (await driver.list(signal)).find(v => v.id === c.id)
      if (c.kind === 'replicaStart') {
        if (here?.state === 'running') return { ok: true }
        const spec = replicaSpec(defs, c.vm, c.id)
        if (spec === null) return { ok: false, code: 'DRIVER_FAILED', message: `VM ${c.vm} has no replication definition on this host` }
        if (here !== undefined) await kill(c.id, signal)
        await driver.start(spec, signal)
      } else if (here !== undefined) {
        await kill(c.id, signal)
      }
      return { ok: true }
    } catch (err) {
      return { ok: false, code: (err as { code?: string }).code ?? 'DRIVER_FAILED', message: err instanceof Error ? err.message : String(err) }
    }
  }
}

/**
 * Turns the core's split effects into the splitter's wanted state: for every VM with replicas,
 * each VIP bound to it, split to the service addresses of the replicas' hosts.
 */
export class SplitState {
  private readonly byVm = new Map<VmId, HostId[]>()

  constructor (
    private readonly vipsOf: (vm: VmId) => string[],
    private readonly addressOf: (host: HostId) => string | null,
    private readonly log: Logger
  ) {}

  update (effects: readonly SplitEffect[]): SplitTarget[] {
    for (const e of effects) {
      if (e.hosts.length === 0) this.byVm.delete(e.vm)
      else this.byVm.set(e.vm, e.hosts.slice())
    }
    const out: SplitTarget[] = []
    for (const [vm, hosts] of this.byVm) {
      const backends: string[] = []
      for (const h of hosts) {
        const a = this.addressOf(h)
        if (a === null) this.log.warn(`replica of ${vm}: no service address for host ${h.slice(0, 8)}; its share stays here`)
        else backends.push(a)
      }
      const vips = this.vipsOf(vm)
      if (vips.length === 0) this.log.warn(`replica of ${vm}: no VIP is bound to ${vm}, so no connection reaches the replica (vips[].vm)`)
      for (const vip of vips) out.push({ vip, backends })
    }
    return out
  }
}
