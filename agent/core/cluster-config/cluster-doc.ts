/**
 * What the replicated cluster configuration holds (the `doc` of each ConfigEntry): the members,
 * the placement rules, the balancing automation level and the protected-VM inventory (`ha.vms`).
 * Everything else in an agent's file is that host's own (its name, addresses, state directory,
 * driver, tunables, HA timing and watchdog) or its bootstrap.
 *
 * Parsed defensively: a document comes from a peer, and one that does not parse is reported and
 * not acted on.
 */
import { validateRules } from '../../../policies/rules.js'
import type { RuleSet, VmHostRule, VmVmRule } from '../../../policies/types.js'
import { AUTOMATION_LEVELS, type AutomationLevel } from '../migration/migration-state.js'
import type { HostId, VmId } from '../types.js'
import { HA_SINCE_MAX, type HaVmSpec } from '../ha/ha-config.js'

export interface ClusterDocMember {
  name: string
  /** Hex Noise public key: the member's host id. */
  publicKey: HostId
  /** "ip:port" of its DHT node. */
  address: string
}

/**
 * One protected VM: the fields of a file's ha.vms entry (agent/runtime/ha-setup.ts), home by
 * member name. `since`: the configuration version that protected it (absent: from the files);
 * its claims' epochs start at since x HA_EPOCH_SPAN (agent/core/ha/index.ts, re-protection).
 */
export interface ClusterDocHaVm {
  id: VmId
  home: string
  priority?: number
  order?: number
  maxAttempts?: number
  fencePolicy?: 'stop' | 'pause'
  vcpus: number
  memMiB: number
  cpuMips?: number
  kernel?: string
  initrd?: string
  append?: string
  image?: string
  args?: string[]
  pattern?: string
  cpuMean?: number
  since?: number
}

export interface ClusterDoc {
  members: ClusterDocMember[]
  rules: RuleSet
  automation: AutomationLevel
  /** The protected VMs. Absent: a document of an older build, or files without ha.vms (the files' inventory stands). */
  ha?: { vms: ClusterDocHaVm[] }
}


const HEX64 = /^[0-9a-f]{64}$/

function isObj (v: unknown): v is Record<string, unknown> { return typeof v === 'object' && v !== null && !Array.isArray(v) }

/** JSON with object keys sorted at every level (arrays keep their order): one text per document. */
export function canonicalDocJson (v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(canonicalDocJson).join(',')}]`
  if (isObj(v)) return `{${Object.keys(v).filter(k => v[k] !== undefined).sort().map(k => `${JSON.stringify(k)}:${canonicalDocJson(v[k])}`).join(',')}}`
  return JSON.stringify(v) ?? 'null'
}

/** Why a document is not a valid cluster configuration, or null when it is. */
export function clusterDocProblem (d: ClusterDoc): string | null {
  if (d.members.length === 0) return 'members: empty'
  const names = new Set<string>()
  const keys = new Set<string>()
  const addrs = new Set<string>()
  for (const m of d.members) {
    if (typeof m.name !== 'string' || m.name.length === 0 || m.name.length > 63 || !/^[A-Za-z0-9][A-Za-z0-9_.-]*$/.test(m.name)) return `members: bad name ${JSON.stringify(m.name)}`
    if (typeof m.publicKey !== 'string' || !HEX64.test(m.publicKey)) return `members: ${m.name}'s key is not 64 hex digits`
    if (typeof m.address !== 'string' || !/^[^\s:]+:\d{1,5}$/.test(m.address)) return `members: ${m.name}'s address ${JSON.stringify(m.address)} is not ip:port`
    if (names.has(m.name)) return `members: the name ${m.name} is used twice`
    if (keys.has(m.publicKey)) return `members: the key ${m.publicKey.slice(0, 12)}… is used twice`
    if (addrs.has(m.address)) return `members: the address ${m.address} is used twice`
    names.add(m.name); keys.add(m.publicKey); addrs.add(m.address)
  }
  if (!AUTOMATION_LEVELS.includes(d.automation)) return `automation: must be one of ${AUTOMATION_LEVELS.join(', ')}`
  const errs = validateRules(d.rules)
  if (errs.length > 0) return `rules: ${errs[0]!}`
  for (const r of d.rules.vmHost) {
    for (const h of r.hosts) if (!names.has(h) && !keys.has(h)) return `rules: the rule for ${r.vm} names ${h}, not a member`
  }
  if (d.ha !== undefined) {
    const ids = new Set<string>()
    for (const v of d.ha.vms) {
      const p = `ha.vms ${JSON.stringify(v.id)}`
      if (typeof v.id !== 'string' || !/^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/.test(v.id)) return `ha.vms: bad VM id ${JSON.stringify(v.id)}`
      if (ids.has(v.id)) return `ha.vms: VM ${v.id} is listed twice`
      ids.add(v.id)
      // Its home must be a member when it is protected (agent/runtime/cluster-config.ts, ha-protect;
      // HaManager.setVms again); a member removed later may stay a VM's home (its claim is taken over).
      if (typeof v.home !== 'string' || !/^[A-Za-z0-9][A-Za-z0-9_.-]*$/.test(v.home)) return `${p}: bad home ${JSON.stringify(v.home)}`
      const int = (x: unknown, min: number): boolean => typeof x === 'number' && Number.isSafeInteger(x) && x >= min
      if (!int(v.vcpus, 1)) return `${p}: vcpus must be an integer >= 1`
      if (!int(v.memMiB, 16)) return `${p}: memMiB must be an integer >= 16`
      if (v.cpuMips !== undefined && !int(v.cpuMips, 0)) return `${p}: cpuMips must be an integer >= 0`
      for (const k of ['priority', 'order'] as const) if (v[k] !== undefined && !int(v[k], -1_000_000)) return `${p}: ${k} must be an integer >= -1000000`
      if (v.maxAttempts !== undefined && !int(v.maxAttempts, 1)) return `${p}: maxAttempts must be an integer >= 1`
      if (v.fencePolicy !== undefined && v.fencePolicy !== 'stop' && v.fencePolicy !== 'pause') return `${p}: fencePolicy must be stop or pause`
      for (const k of ['kernel', 'initrd', 'append', 'image', 'pattern'] as const) if (v[k] !== undefined && (typeof v[k] !== 'string' || v[k] === '')) return `${p}: ${k} must be a non-empty string`
      if (v.args !== undefined && (!Array.isArray(v.args) || !v.args.every(a => typeof a === 'string'))) return `${p}: args must be a list of strings`
      if (v.cpuMean !== undefined && !(typeof v.cpuMean === 'number' && v.cpuMean >= 0 && v.cpuMean <= 1)) return `${p}: cpuMean must be a number in [0, 1]`
      if (v.kernel === undefined && v.image === undefined) return `${p}: needs kernel or image (what a restart boots)`
      if (v.since !== undefined && !(int(v.since, 0) && v.since < HA_SINCE_MAX)) return `${p}: since must be a configuration version below ${HA_SINCE_MAX}`
    }
  }
  return null
}

/** The protected VMs of a document as the HA manager takes them (home by host id), or null when the document keeps none (the files' stand). */
export function haSpecsOf (d: ClusterDoc, formerKeys?: ReadonlyMap<string, HostId>): HaVmSpec[] | null {
  if (d.ha === undefined) return null
  // A home removed from the members since keeps its key (formerKeys: names of members seen before).
  const key = new Map([...(formerKeys ?? new Map<string, HostId>()), ...d.members.map(m => [m.name, m.publicKey] as const)])
  return d.ha.vms.map(v => ({
    id: v.id,
    home: key.get(v.home) ?? v.home,
    priority: v.priority ?? 0,
    order: v.order ?? 0,
    cpuMips: v.cpuMips ?? v.vcpus * 1000,
    memMiB: v.memMiB,
    source: v.image !== undefined ? { kind: 'image' as const, image: v.image } : { kind: 'shared' as const, definition: v.id },
    fencePolicy: v.fencePolicy ?? 'stop',
    ...(v.maxAttempts !== undefined ? { maxAttempts: v.maxAttempts } : {}),
    ...(v.since !== undefined && v.since > 0 ? { since: v.since } : {})
  }))
}

const HA_VM_FIELDS = ['id', 'home', 'priority', 'order', 'maxAttempts', 'fencePolicy', 'vcpus', 'memMiB', 'cpuMips', 'kernel', 'initrd', 'append', 'image', 'args', 'pattern', 'cpuMean', 'since'] as const

function rule (v: unknown): v is Record<string, unknown> & { kind: string, hard: boolean } {
  return isObj(v) && (v['kind'] === 'affinity' || v['kind'] === 'anti-affinity') && typeof v['hard'] === 'boolean' &&
    (v['weight'] === undefined || (typeof v['weight'] === 'number' && Number.isFinite(v['weight']) && v['weight'] > 0))
}

/** The document in `text`, or a one-line reason why it is not one. */
export function parseClusterDoc (text: string): ClusterDoc | string {
  let raw: unknown
  try { raw = JSON.parse(text) } catch { return 'not JSON' }
  if (!isObj(raw) || !Array.isArray(raw['members']) || !isObj(raw['rules'])) return 'not a cluster configuration (members, rules)'
  const members: ClusterDocMember[] = []
  for (const m of raw['members'] as unknown[]) {
    if (!isObj(m)) return 'members: not objects'
    members.push({ name: String(m['name']), publicKey: String(m['publicKey']), address: String(m['address']) })
  }
  const r = raw['rules']
  const vmVm = Array.isArray(r['vmVm']) ? r['vmVm'] as unknown[] : []
  const vmHost = Array.isArray(r['vmHost']) ? r['vmHost'] as unknown[] : []
  for (const x of vmVm) if (!rule(x) || !Array.isArray(x['vms']) || !(x['vms'] as unknown[]).every(s => typeof s === 'string')) return 'rules.vmVm: malformed rule'
  for (const x of vmHost) if (!rule(x) || typeof x['vm'] !== 'string' || !Array.isArray(x['hosts']) || !(x['hosts'] as unknown[]).every(s => typeof s === 'string')) return 'rules.vmHost: malformed rule'
  const doc: ClusterDoc = {
    members,
    rules: { vmVm: vmVm as unknown as VmVmRule[], vmHost: vmHost as unknown as VmHostRule[] },
    automation: (raw['automation'] ?? 'full') as AutomationLevel
  }
  if (raw['ha'] !== undefined) {
    const h = raw['ha']
    if (!isObj(h) || !Array.isArray(h['vms'])) return 'ha: not { vms: [...] }'
    const vms: ClusterDocHaVm[] = []
    for (const x of h['vms'] as unknown[]) {
      if (!isObj(x)) return 'ha.vms: not objects'
      if (typeof x['id'] !== 'string' || typeof x['home'] !== 'string') return 'ha.vms: each needs an id and a home (strings)'
      // Only the known fields are kept (values checked by clusterDocProblem).
      const v: Record<string, unknown> = {}
      for (const k of HA_VM_FIELDS) if (x[k] !== undefined) v[k] = x[k]
      vms.push(v as unknown as ClusterDocHaVm)
    }
    doc.ha = { vms }
  }
  return clusterDocProblem(doc) ?? doc
}

/**
 * The rules as the decision code compares them: hosts are host ids (public keys) there, while an
 * operator names them (`starling rules add vm-host affinity web1 host1,host2`). A VM-host rule's
 * member names become their keys; a key, or a name no member has, stays as written (it matches
 * no host, as a rule for a removed host should). VM-VM rules name VMs only.
 */
export function resolveRuleHosts (rules: RuleSet, members: ReadonlyArray<{ name: string, publicKey: HostId }>): RuleSet {
  if (rules.vmHost.length === 0) return rules
  const byName = new Map(members.map(m => [m.name, m.publicKey]))
  return { vmVm: rules.vmVm, vmHost: rules.vmHost.map(r => ({ ...r, hosts: r.hosts.map(h => byName.get(h) ?? h) })) }
}
