/**
 * The agent's side of the replicated cluster configuration (agent/core/cluster-config): version 1
 * from this host's file, what the store holds, and the operator's changes (`starling members`,
 * `starling rules`, `starling config`), each checked here before the core agrees on it with a
 * majority.
 *
 * A change touches one thing: one member added or removed (so two versions in use at once always
 * have majorities that share a member; the argument is in agent/core/cluster-config/config-log.ts),
 * one rule added or removed, or the automation level.
 */
import { createHash, randomBytes } from 'node:crypto'
import type { AgentConfig } from '../config.js'
import { ConfigError } from '../../policies/config-error.js'
import {
  AUTOMATION_LEVELS, KEY_CONFIG_ACCEPTOR, KEY_CONFIG_ENTRY_PREFIX, entryHash,
  type AcceptorState, type AgentCore, type AutomationLevel, type ConfigEntry, type ConfigOutcome, type Input, type RestoredConfigLog
} from '../core/index.js'
import { canonicalDocJson, clusterDocProblem, type ClusterDoc, type ClusterDocHaVm } from '../core/index.js'
import type { Store } from '../ports/store.js'
import type { VmHostRule, VmVmRule } from '../../policies/types.js'

export const sha256Hex = (text: string): string => createHash('sha256').update(text).digest('hex')

/** The cluster-wide part of a configuration file, as a document. */
export function docFromFile (config: AgentConfig): ClusterDoc {
  return {
    members: config.cluster.members.map(m => ({ name: m.name, publicKey: m.publicKey.toLowerCase(), address: m.address })),
    rules: config.migration.rules,
    automation: config.migration.automation,
    // The protected VMs start as the files list them (no `ha` when they list none: the genesis
    // of a cluster without HA VMs is what it was before the inventory was agreed).
    ...(config.ha.vms.length > 0 ? { ha: { vms: config.ha.vms.map(v => ({ ...v })) } } : {})
  }
}

/** Version 1: this host's file. Hosts whose files agree start with the same version 1. */
/**
 * What a removed member is sent when it connects, so that its own agent learns why it is refused:
 * the versions up to the one that removed it, at most `max` (it applies them in order from its own
 * latest, so a member that was down for up to `max` versions before its removal still learns it).
 * Empty when `key` is a member of the latest version or never was one.
 */
export function farewellEntries (history: readonly ConfigEntry[], key: string, max = 64): ConfigEntry[] {
  let last = -1
  for (let i = 0; i < history.length; i++) if (history[i]!.members.includes(key)) last = i
  if (last < 0 || last === history.length - 1) return []
  return history.slice(Math.max(0, last + 2 - max), last + 2)
}

export function genesisFromFile (config: AgentConfig): ConfigEntry {
  const doc = docFromFile(config)
  const e = { version: 1, base: '', members: doc.members.map(m => m.publicKey), doc: canonicalDocJson(doc), note: 'from the configuration files' }
  return { ...e, hash: entryHash(sha256Hex, e) }
}

/** What the store holds of the log, or null on a first start. */
export async function loadClusterConfig (store: Store): Promise<RestoredConfigLog | null> {
  const [entries, acceptor] = await Promise.all([store.entries(KEY_CONFIG_ENTRY_PREFIX), store.get(KEY_CONFIG_ACCEPTOR)])
  const list = entries.map(([, v]) => v as ConfigEntry).filter(e => typeof e === 'object' && e !== null && typeof e.version === 'number')
  if (list.length === 0) return null
  return { entries: list, acceptor: (acceptor ?? null) as AcceptorState | null }
}

/** One operator change. Rules are numbered as `starling rules list` shows them (VM-VM first, from 1). */
export type ConfigChange =
  | { op: 'member-add', name: string, publicKey: string, address: string }
  | { op: 'member-remove', name: string, force?: boolean }
  | { op: 'rule-add', rule: { type: 'vm-vm', kind: 'affinity' | 'anti-affinity', vms: string[], hard: boolean, weight?: number } | { type: 'vm-host', kind: 'affinity' | 'anti-affinity', vm: string, hosts: string[], hard: boolean, weight?: number } }
  | { op: 'rule-remove', number: number }
  | { op: 'automation', level: AutomationLevel }
  | { op: 'ha-protect', vm: string, settings: HaProtectSettings }
  | { op: 'ha-unprotect', vm: string }

/** What `starling ha protect` may set; the rest comes from the VM's definition (HaProtectContext.definition). */
export interface HaProtectSettings {
  priority?: number
  order?: number
  maxAttempts?: number
  fencePolicy?: 'stop' | 'pause'
  vcpus?: number
  memMiB?: number
  cpuMips?: number
  kernel?: string
  initrd?: string
  append?: string
  image?: string
  args?: string[]
}

/** What a protect is checked against: where the VM runs, how it boots, who holds a fence. */
export interface HaProtectContext {
  /** Where the VM runs now, by the gossiped reports (member name and state), or undefined when no member reports it. */
  where: (vm: string) => { host: string, state: string, vcpus: number, memMiB: number } | undefined
  /** The VM's definition known to this host (its file's driver VMs), if any. */
  definition: (vm: string) => Omit<ClusterDocHaVm, 'home' | 'id'> | undefined
  /** Does this member (by name) hold a fence, as HA here last heard? undefined: this host takes no part in HA. */
  fenced: (name: string) => boolean | undefined
}

/** What a change is checked against beyond the document: the cluster as this host sees it. */
export interface ChangeContext {
  /** VMs the cluster knows (gossiped reports and this host's configured VMs). */
  knownVms: ReadonlySet<string>
  /** VMs a member runs now, by name (from its latest report; undefined: no report). */
  vmsOn: (name: string) => string[] | undefined
  /** This host's HA section: a two-host cluster needs its tie-breaker. */
  ha: { enabled: boolean, tieBreaker: string | null }
  /** For ha-protect. @default every protect is refused */
  protect?: HaProtectContext
  /** The version the change would be (a protection's `since`); filled in by runChange. */
  nextVersion?: number
}

function bad (msg: string, field = 'change'): never { throw new ConfigError(msg, field) }

/** Parses a change from the API's JSON; throws ConfigError naming the field. */
export function parseChange (b: Record<string, unknown>): ConfigChange {
  const s = (k: string): string => { const v = b[k]; if (typeof v !== 'string' || v.trim() === '') bad(`${k} must be a non-empty string`, k); return v.trim() }
  switch (b.op) {
    case 'member-add': return { op: 'member-add', name: s('name'), publicKey: s('publicKey').toLowerCase(), address: s('address') }
    case 'member-remove': return { op: 'member-remove', name: s('name'), ...(b.force === true ? { force: true } : {}) }
    case 'automation': {
      const l = s('level')
      if (!AUTOMATION_LEVELS.includes(l as AutomationLevel)) bad(`level must be one of ${AUTOMATION_LEVELS.join(', ')}`, 'level')
      return { op: 'automation', level: l as AutomationLevel }
    }
    case 'rule-remove': {
      const n = b.number
      if (typeof n !== 'number' || !Number.isSafeInteger(n) || n < 1) bad('number must be a rule number from `starling rules list`', 'number')
      return { op: 'rule-remove', number: n }
    }
    case 'rule-add': {
      const r = b.rule
      if (typeof r !== 'object' || r === null) bad('rule must be an object', 'rule')
      const o = r as Record<string, unknown>
      const kind = o.kind
      if (kind !== 'affinity' && kind !== 'anti-affinity') bad('rule.kind must be affinity or anti-affinity', 'rule.kind')
      const hard = o.hard === true
      const weight = o.weight
      if (weight !== undefined && (typeof weight !== 'number' || !(weight > 0))) bad('rule.weight must be a positive number', 'rule.weight')
      const list = (k: string): string[] => {
        const v = o[k]
        if (!Array.isArray(v) || v.length === 0 || !v.every(x => typeof x === 'string' && x !== '')) bad(`rule.${k} must be a list of names`, `rule.${k}`)
        return v as string[]
      }
      const w = weight !== undefined ? { weight: weight as number } : {}
      if (o.type === 'vm-vm') return { op: 'rule-add', rule: { type: 'vm-vm', kind, vms: list('vms'), hard, ...w } }
      if (o.type === 'vm-host') {
        if (typeof o.vm !== 'string' || o.vm === '') bad('rule.vm must be a VM name', 'rule.vm')
        return { op: 'rule-add', rule: { type: 'vm-host', kind, vm: o.vm, hosts: list('hosts'), hard, ...w } }
      }
      return bad('rule.type must be vm-vm or vm-host', 'rule.type')
    }
    case 'ha-unprotect': return { op: 'ha-unprotect', vm: s('vm') }
    case 'ha-protect': {
      const o = (typeof b.settings === 'object' && b.settings !== null ? b.settings : {}) as Record<string, unknown>
      const st: HaProtectSettings = {}
      const int = (k: 'priority' | 'order' | 'maxAttempts' | 'vcpus' | 'memMiB' | 'cpuMips', min: number): void => {
        const v = o[k]
        if (v === undefined) return
        if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < min) bad(`settings.${k} must be an integer >= ${min}`, `settings.${k}`)
        st[k] = v
      }
      int('priority', -1_000_000); int('order', -1_000_000); int('maxAttempts', 1); int('vcpus', 1); int('memMiB', 16); int('cpuMips', 0)
      if (o.fencePolicy !== undefined) {
        if (o.fencePolicy !== 'stop' && o.fencePolicy !== 'pause') bad('settings.fencePolicy must be stop or pause', 'settings.fencePolicy')
        st.fencePolicy = o.fencePolicy
      }
      for (const k of ['kernel', 'initrd', 'append', 'image'] as const) {
        const v = o[k]
        if (v === undefined) continue
        if (typeof v !== 'string' || v === '') bad(`settings.${k} must be a non-empty string`, `settings.${k}`)
        st[k] = v
      }
      if (o.args !== undefined) {
        if (!Array.isArray(o.args) || !o.args.every(a => typeof a === 'string')) bad('settings.args must be a list of strings', 'settings.args')
        st.args = o.args as string[]
      }
      if (st.kernel !== undefined && st.image !== undefined) bad('give kernel or image, not both', 'settings')
      return { op: 'ha-protect', vm: s('vm'), settings: st }
    }
    default: return bad('op must be one of member-add, member-remove, rule-add, rule-remove, automation, ha-protect, ha-unprotect', 'op')
  }
}

/** The rules of a document, numbered as `starling rules list` and rule-remove count them. */
export function numberedRules (d: ClusterDoc): Array<{ number: number, text: string, rule: VmVmRule | VmHostRule }> {
  const out: Array<{ number: number, text: string, rule: VmVmRule | VmHostRule }> = []
  for (const r of d.rules.vmVm) out.push({ number: out.length + 1, text: `${r.hard ? 'hard' : 'soft'} ${r.kind} of VMs ${r.vms.join(', ')}${r.weight !== undefined ? ` (weight ${r.weight})` : ''}`, rule: r })
  for (const r of d.rules.vmHost) out.push({ number: out.length + 1, text: `${r.hard ? 'hard' : 'soft'} ${r.kind} of VM ${r.vm} ${r.kind === 'affinity' ? 'to' : 'from'} hosts ${r.hosts.join(', ')}${r.weight !== undefined ? ` (weight ${r.weight})` : ''}`, rule: r })
  return out
}

/** The document after `change`, and a one-line note of it; throws ConfigError with the reason. */
export function applyChange (d: ClusterDoc, change: ConfigChange, ctx: ChangeContext): { doc: ClusterDoc, note: string } {
  const names = new Set(d.members.map(m => m.name))
  let doc: ClusterDoc
  let note: string
  switch (change.op) {
    case 'member-add': {
      if (names.has(change.name)) bad(`a member is already called ${change.name}`, 'name')
      const dupKey = d.members.find(m => m.publicKey === change.publicKey)
      if (dupKey !== undefined) bad(`member ${dupKey.name} already has the key ${change.publicKey.slice(0, 12)}…`, 'publicKey')
      doc = { ...d, members: [...d.members, { name: change.name, publicKey: change.publicKey, address: change.address }] }
      note = `member ${change.name} added (${change.address})`
      break
    }
    case 'member-remove': {
      if (!names.has(change.name)) bad(`no member is called ${change.name} (members: ${[...names].join(', ')})`, 'name')
      if (d.members.length === 1) bad('the last member cannot be removed', 'name')
      const left = d.members.filter(m => m.name !== change.name)
      if (ctx.ha.enabled && left.length === 2) {
        const tb = ctx.ha.tieBreaker
        if (tb === null || tb === change.name) bad(`removing ${change.name} leaves two hosts without a tie-breaker: HA needs a third member that votes (ha.tieBreaker), or a majority is lost with either host`, 'name')
      }
      for (const r of d.rules.vmHost) if (r.hosts.includes(change.name)) bad(`rule for VM ${r.vm} names ${change.name}: remove or change that rule first (starling rules list)`, 'name')
      const vms = ctx.vmsOn(change.name) ?? []
      if (vms.length > 0 && change.force !== true) bad(`${change.name} runs ${vms.length} VM(s) (${vms.slice(0, 5).join(', ')}): drain it first (starling drain ${change.name}), or pass --force`, 'name')
      doc = { ...d, members: left }
      note = `member ${change.name} removed`
      break
    }
    case 'rule-add': {
      const r = change.rule
      const vms = r.type === 'vm-vm' ? r.vms : [r.vm]
      for (const v of vms) if (!ctx.knownVms.has(v)) bad(`the rule names VM ${v}, which no member runs or configures`, 'rule')
      if (r.type === 'vm-host') for (const h of r.hosts) if (!names.has(h)) bad(`the rule names host ${h}, not a member (members: ${[...names].join(', ')})`, 'rule.hosts')
      const w = r.weight !== undefined ? { weight: r.weight } : {}
      doc = r.type === 'vm-vm'
        ? { ...d, rules: { vmVm: [...d.rules.vmVm, { kind: r.kind, vms: r.vms, hard: r.hard, ...w }], vmHost: d.rules.vmHost } }
        : { ...d, rules: { vmVm: d.rules.vmVm, vmHost: [...d.rules.vmHost, { kind: r.kind, vm: r.vm, hosts: r.hosts, hard: r.hard, ...w }] } }
      const added = numberedRules(doc)[r.type === 'vm-vm' ? doc.rules.vmVm.length - 1 : doc.rules.vmVm.length + doc.rules.vmHost.length - 1]!
      note = `rule added: ${added.text}`
      break
    }
    case 'rule-remove': {
      const list = numberedRules(d)
      const hit = list.find(x => x.number === change.number)
      if (hit === undefined) bad(`there is no rule ${change.number} (${list.length} rule(s): starling rules list)`, 'number')
      const i = change.number - 1
      doc = i < d.rules.vmVm.length
        ? { ...d, rules: { vmVm: d.rules.vmVm.filter((_, k) => k !== i), vmHost: d.rules.vmHost } }
        : { ...d, rules: { vmVm: d.rules.vmVm, vmHost: d.rules.vmHost.filter((_, k) => k !== i - d.rules.vmVm.length) } }
      note = `rule removed: ${hit.text}`
      break
    }
    case 'ha-protect': ({ doc, note } = protect(d, change.vm, change.settings, ctx)); break
    case 'ha-unprotect': {
      const vms = d.ha?.vms ?? []
      if (!vms.some(v => v.id === change.vm)) bad(`VM ${change.vm} is not protected (protected: ${vms.map(v => v.id).join(', ') || 'none'})`, 'vm')
      doc = { ...d, ha: { vms: vms.filter(v => v.id !== change.vm) } }
      note = `VM ${change.vm} unprotected`
      break
    }
    case 'automation': {
      if (d.automation === change.level) bad(`automation is already ${change.level}`, 'level')
      doc = { ...d, automation: change.level }
      note = `automation ${d.automation} -> ${change.level}`
      break
    }
  }
  const problem = clusterDocProblem(doc)
  if (problem !== null) bad(problem)
  return { doc, note }
}

/**
 * The document with `vm` protected. Its home is where it runs now (the gossiped reports); refused
 * when no member reports it, while it migrates or is not running, when its home is the
 * tie-breaker, when it has no definition to boot from, and when its home or every member that
 * could restart it has no fence (a host without a watchdog that resets it would run it twice
 * after a hang).
 */
function protect (d: ClusterDoc, vm: string, st: HaProtectSettings, ctx: ChangeContext): { doc: ClusterDoc, note: string } {
  const p = ctx.protect
  // The protection's claims rank above every earlier protection's by this version (agent/core/ha/index.ts).
  if (ctx.nextVersion === undefined || ctx.nextVersion < 1) bad('the version of the change is not known', 'change')
  if (p === undefined || !ctx.ha.enabled) bad('this host takes no part in HA (its file has no ha section): run the change on a member that does', 'vm')
  const vms = d.ha?.vms ?? []
  if (vms.some(v => v.id === vm)) bad(`VM ${vm} is already protected`, 'vm')
  const at = p.where(vm)
  if (at === undefined) bad(`no member reports VM ${vm}: start it first (protect takes its home from where it runs)`, 'vm')
  if (at.state === 'migrating') bad(`VM ${vm} is migrating (from ${at.host}): protect it once the migration has ended`, 'vm')
  if (at.state !== 'running') bad(`VM ${vm} is ${at.state} on ${at.host}: protect a running VM`, 'vm')
  if (!d.members.some(m => m.name === at.host)) bad(`VM ${vm} runs on ${at.host}, not a member`, 'vm')
  if (ctx.ha.tieBreaker === at.host) bad(`VM ${vm} runs on ${at.host}, the tie-breaker, which never runs protected VMs: move it first`, 'vm')
  const homeFenced = p.fenced(at.host)
  if (homeFenced === undefined) bad('this host takes no part in HA: run the change on a member that does', 'vm')
  if (!homeFenced) bad(`${at.host}, where VM ${vm} runs, holds no fence (no watchdog that resets it, or not heard): its copy would not be stopped if it hung, and a restart elsewhere would run it twice`, 'vm')
  const others = d.members.filter(m => m.name !== at.host && m.name !== ctx.ha.tieBreaker)
  if (!others.some(m => p.fenced(m.name) === true)) bad(`no other member that could restart VM ${vm} holds a fence (${others.map(m => m.name).join(', ') || 'none'})`, 'vm')
  const def = p.definition(vm)
  const boot = st.kernel !== undefined || st.image !== undefined
    ? { ...(st.kernel !== undefined ? { kernel: st.kernel } : {}), ...(st.image !== undefined ? { image: st.image } : {}), ...(st.initrd !== undefined ? { initrd: st.initrd } : {}), ...(st.append !== undefined ? { append: st.append } : {}), ...(st.args !== undefined ? { args: st.args } : {}) }
    : def !== undefined ? { ...def } : undefined
  if (boot === undefined || (boot.kernel === undefined && boot.image === undefined)) bad(`no definition of VM ${vm} here to restart it from: give --kernel (and --initrd, --append) or --image`, 'settings')
  const e: ClusterDocHaVm = {
    ...boot,
    id: vm,
    home: at.host,
    vcpus: st.vcpus ?? def?.vcpus ?? at.vcpus,
    memMiB: st.memMiB ?? def?.memMiB ?? at.memMiB,
    priority: st.priority ?? 0,
    order: st.order ?? 0,
    fencePolicy: st.fencePolicy ?? 'stop',
    ...(st.cpuMips !== undefined ? { cpuMips: st.cpuMips } : {}),
    ...(st.maxAttempts !== undefined ? { maxAttempts: st.maxAttempts } : {}),
    since: ctx.nextVersion
  }
  if (e.cpuMips === undefined) e.cpuMips = e.vcpus * 1000
  return { doc: { ...d, ha: { vms: [...vms, e] } }, note: `VM ${vm} protected (home ${at.host})` }
}

export interface ChangeResult {
  /** 200 committed, 202 pending, 400 refused (bad change), 409 not agreed (conflict after retries, or refused by the core). */
  code: number
  body: { status: ConfigOutcome['status'] | 'invalid', version: number, detail: string, note?: string, error?: string }
}

/**
 * Carries out one operator change: compute it on the latest version, hand it to the core, and
 * wait for the outcome. A conflict (another change took the version) is recomputed and tried
 * again, up to three times. Pending (no majority within the wait) is returned as such: the core
 * goes on trying and the change applies when a majority answers.
 */
export async function runChange (core: AgentCore, enqueue: (i: Input) => void, change: ConfigChange, ctx: () => ChangeContext, who: string, opts: { waitMs: number, pollMs?: number } = { waitMs: 15_000 }): Promise<ChangeResult> {
  const deadline = Date.now() + opts.waitMs
  let last: ConfigOutcome | undefined
  for (let attempt = 0; attempt < 3; attempt++) {
    const st = core.clusterConfig()
    if (st === null) return { code: 409, body: { status: 'refused', version: 0, detail: 'this agent keeps no replicated configuration' } }
    if (st.doc === null) return { code: 409, body: { status: 'refused', version: st.latest.version, detail: `version ${st.latest.version} is not valid here; fix it with a change from a member that reads it` } }
    if (st.inFlight !== null) return { code: 409, body: { status: 'refused', version: st.latest.version, detail: `another change (${st.inFlight.req}) is being agreed from this host; try again when it ends` } }
    let next: { doc: ClusterDoc, note: string }
    try {
      next = applyChange(st.doc, change, { ...ctx(), nextVersion: st.latest.version + 1 })
    } catch (err) {
      if (err instanceof ConfigError) return { code: 400, body: { status: 'invalid', version: st.latest.version, detail: err.message } }
      throw err
    }
    const note = `${next.note} (by ${who}, ${new Date().toISOString()})`
    const entry = core.nextConfig({ members: next.doc.members.map(m => m.publicKey), doc: canonicalDocJson(next.doc), note })!
    const req = randomBytes(6).toString('hex')
    enqueue({ type: 'operatorConfig', req, entry })
    for (;;) {
      await new Promise(resolve => setTimeout(resolve, opts.pollMs ?? 50))
      last = core.configOutcome(req)
      if (last !== undefined && last.status !== 'pending') break
      if (Date.now() >= deadline) {
        return { code: 202, body: { status: 'pending', version: core.clusterConfig()?.latest.version ?? 0, detail: last?.detail ?? 'no majority has answered yet; the change applies once one does', note: next.note } }
      }
    }
    if (last.status === 'committed') return { code: 200, body: { status: 'committed', version: last.version, detail: last.detail, note: next.note } }
    if (last.status === 'refused') return { code: 409, body: { status: 'refused', version: last.version, detail: last.detail } }
    // conflict: recompute on the version that won
  }
  return { code: 409, body: { status: 'conflict', version: last?.version ?? 0, detail: `${last?.detail ?? 'the configuration kept moving'}; try again` } }
}
