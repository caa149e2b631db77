/**
 * What the replicated cluster configuration holds (the `doc` of each ConfigEntry): the members,
 * the placement rules and the balancing automation level. Everything else in an agent's file is
 * that host's own (its name, addresses, state directory, driver, tunables) or its bootstrap.
 *
 * Parsed defensively: a document comes from a peer, and one that does not parse is reported and
 * not acted on.
 */
import { validateRules } from '../../../policies/rules.js'
import type { RuleSet, VmHostRule, VmVmRule } from '../../../policies/types.js'
import { AUTOMATION_LEVELS, type AutomationLevel } from '../migration/migration-state.js'
import type { HostId } from '../types.js'

export interface ClusterDocMember {
  name: string
  /** Hex Noise public key: the member's host id. */
  publicKey: HostId
  /** "ip:port" of its DHT node. */
  address: string
}

export interface ClusterDoc {
  members: ClusterDocMember[]
  rules: RuleSet
  automation: AutomationLevel
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
  return null
}

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
