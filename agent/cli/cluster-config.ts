/**
 * The replicated cluster configuration from the command line (GET and POST /v1/config; the
 * agent's side is agent/runtime/cluster-config.ts). Run on any member; each change is agreed by
 * a majority of the members before it is in effect, everywhere, without restarting anyone.
 *   starling config show [--json]            the agreed version: members, rules, automation
 *   starling config history [--json]         every version, with what changed, by whom and when
 *   starling config automation LEVEL         manual | partial | full
 *   starling members add NAME KEY ADDRESS    a new member (its key from `starling keygen` on it)
 *   starling members remove NAME [--force]   a member (refused while it runs VMs, without --force)
 *   starling rules list [--json]             the rules, numbered
 *   starling rules add vm-vm affinity|anti-affinity VM,VM[,...] [--hard] [--weight W]
 *   starling rules add vm-host affinity|anti-affinity VM HOST[,HOST...] [--hard] [--weight W]
 *   starling rules remove N
 *   starling ha protect VM [...] | ha unprotect VM   (agent/cli/ha.ts)
 * A change prints "committed at version N", or "pending" (exit 3) when no majority answered in
 * time: it then applies as soon as one does.
 */
import { parseArgs } from 'node:util'
import { apiTarget, callApi, TARGET_OPTIONS, UsageError, type ApiTarget } from './client.js'

export interface ConfigShow {
  version: number
  hash: string
  note: string
  removed: boolean
  members: Array<{ name: string, publicKey: string, address: string }>
  rules: Array<{ number: number, text: string }>
  automation: string | null
  /** The protected VMs (fromFiles: the configuration keeps none yet; these are this host's file's). */
  ha?: { vms: Array<{ id: string, home: string, priority?: number, order?: number, fencePolicy?: string, since?: number, image?: string, kernel?: string }>, fromFiles: boolean }
  inFlight: { req: string, slot: number, phase: string, promises: number, accepts: number, needed: number } | null
}

export interface ConfigHistory { versions: Array<{ version: number, hash: string, members: number, note: string }> }

interface ChangeBody { status: string, version: number, detail: string, note?: string }

export function renderConfig (c: ConfigShow): string {
  const lines = [
    `version      ${c.version} (${c.hash.slice(0, 12)}): ${c.note}`,
    ...(c.removed ? ['THIS HOST IS NOT A MEMBER: it was removed from the cluster'] : []),
    `automation   ${c.automation ?? '?'}`,
    `members      ${c.members.length}`
  ]
  for (const m of c.members) lines.push(`  ${m.name.padEnd(16)} ${m.address.padEnd(22)} ${m.publicKey.slice(0, 16)}…`)
  lines.push(`rules        ${c.rules.length}`)
  for (const r of c.rules) lines.push(`  ${String(r.number).padStart(3)}  ${r.text}`)
  if (c.ha !== undefined) {
    lines.push(`protected    ${c.ha.vms.length}${c.ha.fromFiles ? ' (from the configuration files)' : ''}`)
    for (const v of c.ha.vms) lines.push(`  ${v.id.padEnd(16)} home ${v.home.padEnd(16)} priority ${v.priority ?? 0}, order ${v.order ?? 0}, fence ${v.fencePolicy ?? 'stop'}, boots ${v.image ?? v.kernel ?? '?'}${v.since !== undefined ? `, since version ${v.since}` : ''}`)
  }
  if (c.inFlight !== null) lines.push(`in flight    version ${c.inFlight.slot}, ${c.inFlight.phase}: ${c.inFlight.phase === 'prepare' ? c.inFlight.promises : c.inFlight.accepts} of ${c.inFlight.needed} needed`)
  return lines.join('\n')
}

/** One change through POST /v1/config: prints committed (exit 0) or pending (exit 3); a refusal is an error. */
export async function configChange (t: ApiTarget, body: Record<string, unknown>): Promise<number> { return await change(t, body) }

async function change (t: ApiTarget, body: Record<string, unknown>): Promise<number> {
  const r = await callApi(t, '/v1/config', body, { timeoutMs: 25_000 }) as ChangeBody
  if (r.status === 'committed') {
    process.stdout.write(`committed at version ${r.version}: ${r.note ?? r.detail}\n`)
    return 0
  }
  process.stdout.write(`pending: ${r.note ?? ''} is not agreed yet (${r.detail}); it applies once a majority of the members answers\n`)
  return 3
}

function list (s: string | undefined, what: string): string[] {
  if (s === undefined || s.trim() === '') throw new UsageError(`${what} is missing`)
  return s.split(',').map(x => x.trim()).filter(x => x !== '')
}

export async function configCliCommand (sub: string, args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args, allowPositionals: true,
    options: { ...TARGET_OPTIONS, json: { type: 'boolean' }, force: { type: 'boolean' }, hard: { type: 'boolean' }, weight: { type: 'string' } }
  })
  const t = apiTarget(values)
  const json = values.json === true
  const out = (v: unknown, text: () => string): number => { process.stdout.write((json ? JSON.stringify(v, null, 2) : text()) + '\n'); return 0 }
  const [verb, ...rest] = positionals
  if (sub === 'config') {
    if (verb === 'show' && rest.length === 0) { const c = await callApi(t.addr, '/v1/config', undefined, { notFound: 'this agent keeps no replicated configuration' }) as ConfigShow; return out(c, () => renderConfig(c)) }
    if (verb === 'history' && rest.length === 0) {
      const h = await callApi(t.addr, '/v1/config/history', undefined, { notFound: 'this agent keeps no replicated configuration' }) as ConfigHistory
      return out(h, () => h.versions.map(v => `${String(v.version).padStart(4)}  ${v.hash.slice(0, 12)}  ${v.members} members  ${v.note}`).join('\n'))
    }
    if (verb === 'automation' && rest.length === 1) return await change(t, { op: 'automation', level: rest[0] })
    throw new UsageError('usage: starling config show|history [--json] | config automation manual|partial|full | config check FILE')
  }
  if (sub === 'members') {
    if (verb === 'add') {
      const [name, key, address] = rest
      if (name === undefined || key === undefined || address === undefined || rest.length > 3) throw new UsageError('usage: starling members add NAME KEY ADDRESS')
      return await change(t, { op: 'member-add', name, publicKey: key, address })
    }
    if (verb === 'remove') {
      if (rest.length !== 1) throw new UsageError('usage: starling members remove NAME [--force]')
      return await change(t, { op: 'member-remove', name: rest[0], ...(values.force === true ? { force: true } : {}) })
    }
    throw new UsageError('usage: starling members [--json] | members add NAME KEY ADDRESS | members remove NAME [--force]')
  }
  // rules
  if (verb === 'list' || verb === undefined) {
    const c = await callApi(t.addr, '/v1/config', undefined, { notFound: 'this agent keeps no replicated configuration' }) as ConfigShow
    return out(c.rules, () => c.rules.length === 0 ? '(no rules)' : c.rules.map(r => `${String(r.number).padStart(3)}  ${r.text}`).join('\n'))
  }
  if (verb === 'remove') {
    const n = Number(rest[0])
    if (rest.length !== 1 || !Number.isSafeInteger(n) || n < 1) throw new UsageError('usage: starling rules remove N (N from starling rules list)')
    return await change(t, { op: 'rule-remove', number: n })
  }
  if (verb === 'add') {
    const [type, kind, a, b] = rest
    if (kind !== 'affinity' && kind !== 'anti-affinity') throw new UsageError('usage: starling rules add vm-vm|vm-host affinity|anti-affinity ...')
    const weight = values.weight !== undefined ? Number(values.weight) : undefined
    if (weight !== undefined && !(weight > 0)) throw new UsageError('--weight must be a positive number')
    const common = { kind, hard: values.hard === true, ...(weight !== undefined ? { weight } : {}) }
    if (type === 'vm-vm' && rest.length === 3) return await change(t, { op: 'rule-add', rule: { type, ...common, vms: list(a, 'the VMs') } })
    if (type === 'vm-host' && rest.length === 4 && a !== undefined) return await change(t, { op: 'rule-add', rule: { type, ...common, vm: a, hosts: list(b, 'the hosts') } })
    throw new UsageError('usage: starling rules add vm-vm KIND VM,VM[,...] | rules add vm-host KIND VM HOST[,HOST...]  [--hard] [--weight W]')
  }
  throw new UsageError('usage: starling rules list|add|remove')
}
