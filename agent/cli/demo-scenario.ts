/**
 * The demo's scenario: what `starling demo` plays on its local cluster, and how it watches it.
 *
 * The cluster: real agents with the simulated driver. Every VM's load is a scripted trace
 * (agent/adapters/sim-driver.ts trace files with their own `# interval-ms`), written here:
 *   - balance:     host1's VMs run at 25 % of their vCPUs, then surge to 95 % at `surgeAtS`: the
 *                  host's CPU forecast crosses the overload threshold, host1's agent picks VMs and
 *                  targets (a hard anti-affinity rule keeps vm-1-1 away from vm-3-1's host) and
 *                  the migrations run through the real protocol;
 *   - consolidate: at `quietAtS` every VM drops to 6 % (quiet hours): hosts below the underload
 *                  threshold empty themselves onto busier ones; an empty host could power off;
 *   - failover:    two protected VMs (HA, homed on host2) run with an emulated watchdog per host
 *                  (agent/sim/fifo-watchdog.ts); the host running most of them is killed with
 *                  kill -9 (and its simulated guests die with it, as in a reset): it turns suspect,
 *                  then dead; its HA VMs restart elsewhere; then it is started again and rejoins
 *                  without running the VMs that were restarted elsewhere.
 * Virtual IPs are left out: they need network namespaces and root (see bench:vip, bench:failover).
 *
 * The watcher polls every agent's local API (status, migrations, HA) and turns what changes into
 * a timeline of events; `runScenario` waits for each step in order and says how long each took.
 */
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises'
import path from 'node:path'
import type { DemoHost } from './demo.js'
import { localHaConfig } from '../core/index.js'

export type ScenarioName = 'all' | 'balance' | 'consolidate' | 'failover' | 'none'
export const SCENARIOS: readonly ScenarioName[] = ['all', 'balance', 'consolidate', 'failover', 'none']

/** HA timing of the demo: short, and safe by the HA timing argument (validateHaConfig checks it at start-up). */
const HA_TIMING = localHaConfig()
/** The emulated watchdog's timeout, s (= watchdogTicks at 100 ms a tick). */
export const DEMO_WATCHDOG_SEC = HA_TIMING.watchdogTicks / 10
export const HA_VMS = ['db-1', 'web-1']
/** The virtual IP that follows each HA VM (carried on a simulated interface: agent/adapters/sim-vip.ts). */
export const HA_VIPS: Record<string, { vip: string, address: string }> = {
  'db-1': { vip: 'db', address: '10.99.0.10/24' },
  'web-1': { vip: 'web', address: '10.99.0.11/24' }
}
const OVERLOAD_THRESHOLD = 0.9

export interface ScenarioPlan {
  scenario: ScenarioName
  /** Seconds after the agents start at which host1's surge begins (null: none). */
  surgeAtS: number | null
  /** Seconds after the agents start at which every VM turns quiet (null: never). */
  quietAtS: number | null
  ha: boolean
  /** Why HA is off, when it is. */
  haNote: string | null
  rules: Array<{ kind: 'anti-affinity', vms: string[], hard: true }>
  /** The emulated watchdog FIFO of each host. */
  watchdogs: Record<string, string>
  threshold: number
}

/** A trace: `levels` as [fromSecond, percent] steps, one sample a second, `lengthS` long. */
function trace (steps: Array<[number, number]>, lengthS: number): string {
  const out = ['# scripted by starling demo: one sample a second', '# interval-ms 1000']
  for (let s = 0; s < lengthS; s++) {
    let v = steps[0]?.[1] ?? 0
    for (const [from, pct] of steps) if (s >= from) v = pct
    out.push(String(v))
  }
  return out.join('\n') + '\n'
}

/**
 * Rewrites the configurations writeLocalCluster wrote under `dir` for the scenario: scripted
 * VMs, fast balancing decisions, an anti-affinity rule, HA with emulated watchdogs.
 */
export async function prepareScenario (dir: string, hosts: DemoHost[], scenario: ScenarioName, opts: { surgeAtS?: number, quietAtS?: number } = {}): Promise<ScenarioPlan> {
  const n = hosts.length
  const surgeAtS = scenario === 'all' || scenario === 'balance' ? opts.surgeAtS ?? 12 : null
  const quietAtS = scenario === 'all' ? opts.quietAtS ?? (surgeAtS ?? 0) + 30 : scenario === 'consolidate' ? opts.quietAtS ?? 10 : null
  const ha = n >= 3 && (scenario === 'all' || scenario === 'failover')
  const haNote = ha ? null : scenario === 'all' || scenario === 'failover' ? 'HA needs 3 hosts or more (a majority must survive a death): no failover with --hosts < 3' : null
  const lengthS = 7200
  await mkdir(path.join(dir, 'traces'), { recursive: true })
  const rules: ScenarioPlan['rules'] = n >= 3 ? [{ kind: 'anti-affinity', vms: ['vm-1-1', 'vm-3-1'], hard: true }] : []
  const watchdogs: Record<string, string> = {}
  for (const [i, h] of hosts.entries()) {
    const cfg = JSON.parse(await readFile(h.configFile, 'utf8')) as Record<string, any>
    const cores = cfg.sampler.capacity.cpuCores as number
    // host1: three VMs that fill half of it before the surge (above the underload threshold, so
    // that it is not emptied first) and all of it after; the others: VMs that keep their host at
    // about 55 % until quiet hours.
    const count = 3
    const vcpus = i === 0 ? 3 : Math.max(1, Math.round((cores * 0.55) / (count * 0.65)))
    const vms: Array<Record<string, unknown>> = []
    for (let j = 1; j <= count; j++) {
      const id = `vm-${i + 1}-${j}`
      const base = i === 0 ? 45 : 65
      const steps: Array<[number, number]> = [[0, base]]
      if (i === 0 && surgeAtS !== null) steps.push([surgeAtS, 95])
      if (quietAtS !== null) steps.push([quietAtS, 6])
      await writeFile(path.join(dir, 'traces', id), trace(steps, lengthS))
      vms.push({ id, vcpus, memMiB: 1024 * (1 + ((i + j) % 3)), pattern: `trace:traces/${id}` })
    }
    if (ha) {
      for (const id of HA_VMS) {
        const steps: Array<[number, number]> = [[0, 40]]
        if (quietAtS !== null) steps.push([quietAtS, 6])
        await writeFile(path.join(dir, 'traces', id), trace(steps, lengthS))
        if (h.name === 'host2') vms.push({ id, vcpus: 1, memMiB: 1024, pattern: `trace:traces/${id}` })
      }
    }
    // The demo runs without root: its VIPs live on a simulated interface.
    cfg.driver = { kind: 'sim', vms, simulatedVips: true }
    cfg.migration = { balanceTicks: 10, decisionTicks: 10, rules: { vmVm: rules, vmHost: [] } }
    if (ha) {
      watchdogs[h.name] = path.join(dir, `${h.name}.watchdog`)
      cfg.ha = {
        vms: HA_VMS.map((id, k) => ({ id, home: 'host2', priority: 10 - k, vcpus: 1, memMiB: 1024, kernel: 'simulated', pattern: `trace:traces/${id}` })),
        timing: HA_TIMING,
        watchdog: { device: watchdogs[h.name], timeoutSec: DEMO_WATCHDOG_SEC, loadSoftdog: false }
      }
      cfg.vips = HA_VMS.map(vm => ({ id: HA_VIPS[vm]!.vip, address: HA_VIPS[vm]!.address, iface: 'demo0', vm }))
    }
    await writeFile(h.configFile, JSON.stringify(cfg, null, 2))
  }
  return { scenario, surgeAtS, quietAtS, ha, haNote, rules, watchdogs, threshold: OVERLOAD_THRESHOLD }
}

/** One line of the timeline. */
export interface DemoEvent { tMs: number, kind: string, text: string, host?: string, vm?: string }

interface Mig { id: string, vm: string, source: string, target: string, state: string, cause: string, reason: string, durationTicks: number, progress: { transferredBytes: number, remainingBytes: number } | null }
interface Member { id: string, name: string, state: string, incarnation: number, report: { seq: number, cpuUtil: number, forecastCpu: number[], vms: Array<{ id: string, state: string }> } | null }

/** What the watcher knows now. */
export interface Observed {
  /** Member states in the observer's view. */
  states: Map<string, string>
  /** Host each running VM is on (any live agent's latest report). */
  vmHost: Map<string, string>
  /** Alive hosts whose latest report lists no VM. */
  empty: Set<string>
  migrations: Map<string, Mig & { seen: string[], from: string, to: string, startedMs: number, endedMs: number | null }>
  /** Host carrying each virtual IP (its address present there, by that host's own report). */
  vipHost: Map<string, string>
  observer: string | null
}

/**
 * Polls the agents and records events. `running(host)` says whether the demo runs that agent
 * now (a killed host's API is not asked).
 */
export class Watcher {
  readonly events: DemoEvent[] = []
  readonly now: Observed = { states: new Map(), vmHost: new Map(), empty: new Set(), migrations: new Map(), vipHost: new Map(), observer: null }
  private readonly overloaded = new Set<string>()
  private readonly everHadVms = new Set<string>()
  private lastStatus: Record<string, unknown> | null = null
  private stopped = false

  constructor (private readonly hosts: DemoHost[], private readonly t0: number, private readonly running: (host: string) => boolean,
    private readonly onEvent: (e: DemoEvent) => void, private readonly threshold = OVERLOAD_THRESHOLD) {}

  emit (kind: string, text: string, extra: { host?: string, vm?: string } = {}): DemoEvent {
    const e: DemoEvent = { tMs: Date.now() - this.t0, kind, text, ...extra }
    this.events.push(e)
    this.onEvent(e)
    return e
  }

  /** The observer's latest status payload (for the tree). */
  status (): Record<string, unknown> | null { return this.lastStatus }

  stop (): void { this.stopped = true }

  async poll (): Promise<void> {
    if (this.stopped) return
    const get = async (h: DemoHost, p: string): Promise<unknown> => {
      try {
        const r = await fetch(`http://${h.apiListen}${p}`, { signal: AbortSignal.timeout(1500) })
        return r.ok ? await r.json() : null
      } catch { return null }
    }
    const live = this.hosts.filter(h => this.running(h.name))
    const statuses = await Promise.all(live.map(async h => [h, await get(h, '/v1/status')] as const))
    const migs = await Promise.all(live.map(async h => [h, await get(h, '/v1/migrations')] as const))
    const vips = await Promise.all(live.map(async h => [h, await get(h, '/v1/vips')] as const))
    // The observer: the first running agent that answers (its view is the timeline's).
    const obs = statuses.find(([, s]) => s !== null)
    if (obs === undefined) return
    this.now.observer = obs[0].name
    const s = obs[1] as { members: Member[] }
    this.lastStatus = obs[1] as Record<string, unknown>
    const nameById = new Map(s.members.map(m => [m.id, m.name]))
    for (const m of s.members) {
      const was = this.now.states.get(m.name)
      if (was !== undefined && was !== m.state) this.emit(m.state, m.state === 'alive' ? `${m.name} is alive again (was ${was}; incarnation ${m.incarnation}) in ${obs[0].name}'s view` : `${m.name} is ${m.state} in ${obs[0].name}'s view (was ${was})`, { host: m.name })
      this.now.states.set(m.name, m.state)
    }
    // VM placement and load, from each host's own latest report (the freshest about itself).
    const vmHost = new Map<string, string>()
    const empty = new Set<string>()
    for (const [h, st] of statuses) {
      if (st === null) continue
      const self = (st as { members: Member[], self: { id: string } }).members.find(m => m.id === (st as { self: { id: string } }).self.id)
      const r = self?.report ?? null
      if (r === null) continue
      const running = r.vms.filter(v => v.state === 'running')
      for (const v of running) vmHost.set(v.id, h.name)
      if (r.vms.length > 0) this.everHadVms.add(h.name)
      if (r.vms.length === 0 && this.everHadVms.has(h.name) && this.now.states.get(h.name) === 'alive') empty.add(h.name)
      const f = r.forecastCpu.length > 0 ? Math.max(...r.forecastCpu) : r.cpuUtil
      if (f > this.threshold && !this.overloaded.has(h.name)) {
        this.overloaded.add(h.name)
        this.emit('overload', `${h.name}: CPU ${Math.round(r.cpuUtil * 100)} %, forecast ${Math.round(f * 100)} % crosses the ${Math.round(this.threshold * 100)} % threshold`, { host: h.name })
      } else if (f < this.threshold - 0.1 && this.overloaded.has(h.name)) {
        this.overloaded.delete(h.name)
        this.emit('relieved', `${h.name}: forecast back to ${Math.round(f * 100)} %`, { host: h.name })
      }
    }
    for (const [vm, host] of vmHost) {
      const was = this.now.vmHost.get(vm)
      if (was !== undefined && was !== host) this.emit('moved', `${vm} now runs on ${host} (was ${was})`, { vm, host })
      else if (was === undefined && this.now.vmHost.size > 0 && HA_VMS.includes(vm)) this.emit('vm-up', `${vm} runs on ${host}`, { vm, host })
    }
    for (const [vm, host] of this.now.vmHost) if (!vmHost.has(vm) && !this.running(host)) this.now.vmHost.delete(vm)
    for (const [vm, host] of vmHost) this.now.vmHost.set(vm, host)
    for (const h of empty) if (!this.now.empty.has(h)) this.emit('empty', `${h} runs no VM: it could power off`, { host: h })
    this.now.empty = empty
    // Virtual IPs, where each host says the address is on its interface.
    const carried = new Map<string, string>()
    for (const [h, body] of vips) {
      for (const v of (body as { vips?: Array<{ vip: string, address: string, addressHere: string }> } | null)?.vips ?? []) {
        if (v.addressHere === 'present') carried.set(v.vip, h.name)
      }
    }
    for (const [vip, host] of carried) {
      if (this.now.vipHost.get(vip) === host) continue
      const was = this.now.vipHost.get(vip)
      this.emit('vip', `virtual IP ${vip} now on ${host}${was !== undefined ? ` (was ${was})` : ''}: gratuitous ARP sent`, { host })
      this.now.vipHost.set(vip, host)
    }
    for (const [vip, host] of this.now.vipHost) if (!carried.has(vip) && !this.running(host)) this.now.vipHost.delete(vip)
    // Migrations, as their sources journal them.
    for (const [, body] of migs) {
      const list = ((body as { migrations?: Mig[] } | null)?.migrations ?? []).filter(r => (r as unknown as { role: string }).role === 'source')
      for (const r of list) {
        const from = nameById.get(r.source) ?? r.source.slice(0, 8)
        const to = nameById.get(r.target) ?? r.target.slice(0, 8)
        let m = this.now.migrations.get(r.id)
        if (m === undefined) {
          m = { ...r, from, to, seen: [], startedMs: Date.now() - this.t0, endedMs: null }
          this.now.migrations.set(r.id, m)
          this.emit('migration', `${from} picked ${r.vm} → ${to} (${r.cause})`, { vm: r.vm, host: from })
        }
        if (!m.seen.includes(r.state)) {
          m.seen.push(r.state)
          if (r.state === 'copying') this.emit('copying', `${r.vm}: copying ${from} → ${to}`, { vm: r.vm })
          if (r.state === 'committed') {
            m.endedMs = Date.now() - this.t0
            this.emit('committed', `${r.vm}: migration ${from} → ${to} committed (${((r.durationTicks * 100) / 1000).toFixed(1)} s copying)`, { vm: r.vm, host: to })
          }
          if (r.state === 'aborted') {
            m.endedMs = Date.now() - this.t0
            this.emit('aborted', `${r.vm}: migration ${from} → ${to} aborted: ${r.reason}`, { vm: r.vm })
          }
        }
        Object.assign(m, r, { from, to })
      }
    }
  }
}

export interface ScenarioResult {
  ok: boolean
  /** Steps and when they happened (ms since the agents started), or why not. */
  steps: Array<{ step: string, atMs: number | null, note: string }>
  migrations: Array<{ vm: string, from: string, to: string, cause: string, state: string, copyS: number, startedS: number, endedS: number | null }>
  restarts: Array<{ vm: string, from: string, to: string, afterKillS: number, vip: string | null, vipAfterKillS: number | null }>
  killed: string | null
}

export interface ScenarioControl {
  /** kill -9 the host's agent (and, as a reset would, its simulated guests). */
  kill: (host: string) => Promise<void>
  /** Start the host's agent again. */
  start: (host: string) => void
  /** True while the demo should go on. */
  going: () => boolean
  t0: number
}

const sleep = async (ms: number): Promise<void> => { await new Promise(resolve => setTimeout(resolve, ms)) }

/** Plays the plan: waits for each step in order (polling the watcher), acting where the script says. */
export async function runScenario (plan: ScenarioPlan, w: Watcher, hosts: DemoHost[], ctl: ScenarioControl): Promise<ScenarioResult> {
  const steps: ScenarioResult['steps'] = []
  const restarts: ScenarioResult['restarts'] = []
  let killed: string | null = null
  const since = (): number => Date.now() - ctl.t0
  const until = async (what: string, pred: () => boolean, timeoutMs: number): Promise<boolean> => {
    const end = Date.now() + timeoutMs
    while (ctl.going() && Date.now() < end) {
      await w.poll()
      if (pred()) { steps.push({ step: what, atMs: since(), note: '' }); return true }
      await sleep(400)
    }
    steps.push({ step: what, atMs: null, note: ctl.going() ? `not seen within ${Math.round(timeoutMs / 1000)} s` : 'stopped' })
    return false
  }
  const alive = (): number => [...w.now.states.values()].filter(s => s === 'alive').length
  const formed = await until('cluster formed', () => alive() === hosts.length, 60_000)
  if (formed) w.emit('formed', `cluster formed: ${hosts.length}/${hosts.length} alive`)
  let ok = formed
  if (plan.rules.length > 0) w.emit('rule', `rule: ${plan.rules.map(r => `${r.vms.join(' and ')} never on the same host (hard anti-affinity)`).join('; ')}`)
  if (formed && plan.surgeAtS !== null) {
    const wait = plan.surgeAtS * 1000 - since()
    if (wait > 0) await until('surge due', () => since() >= plan.surgeAtS! * 1000, wait + 5000)
    w.emit('surge', `scripted surge: host1's VMs go to 95 % of their vCPUs`, { host: 'host1' })
    ok = await until('forecast crosses the threshold on host1', () => w.events.some(e => e.kind === 'overload' && e.host === 'host1'), 30_000) && ok
    ok = await until('host1 picks a VM and a target', () => [...w.now.migrations.values()].some(m => m.from === 'host1' && m.cause === 'overload'), 40_000) && ok
    ok = await until('the migration off host1 commits', () => [...w.now.migrations.values()].some(m => m.from === 'host1' && m.cause === 'overload' && m.state === 'committed'), 60_000) && ok
    const bad = [...w.now.migrations.values()].filter(m => m.state === 'committed').filter(m => plan.rules.some(r => r.vms.includes(m.vm) && r.vms.some(o => o !== m.vm && w.now.vmHost.get(o) === m.to)))
    if (bad.length > 0) { ok = false; w.emit('rule-broken', `anti-affinity broken by ${bad.map(m => m.vm).join(', ')}`) }
  }
  if (formed && plan.quietAtS !== null) {
    const wait = plan.quietAtS * 1000 - since()
    if (wait > 0) await until('quiet hours due', () => since() >= plan.quietAtS! * 1000, wait + 5000)
    w.emit('quiet', 'quiet hours: every VM drops to 6 % of its vCPUs')
    ok = await until('consolidation empties a host', () => w.now.empty.size > 0, 90_000) && ok
  }
  if (formed && plan.ha) {
    // Let the moves in flight end first (up to 20 s), so the failover shown is HA's and not a
    // consolidation's: a VM copied off the victim as it dies arrives by migration, its virtual IP
    // already moved. Waiting is not a step: moves still open after 20 s do not fail the demo.
    // A VM that moved takes its virtual IP along a little after the move: that counts as open too.
    const open = (): string[] => [
      ...[...w.now.migrations.values()].filter(m => m.endedMs === null).map(m => m.vm),
      ...HA_VMS.filter(v => { const vip = HA_VIPS[v]?.vip; const h = w.now.vmHost.get(v); return vip !== undefined && h !== undefined && w.now.vipHost.get(vip) !== h })
    ]
    const settleBy = Date.now() + 20_000
    await w.poll()
    while (ctl.going() && open().length > 0 && Date.now() < settleBy) { await sleep(400); await w.poll() }
    if (open().length > 0) w.emit('settle', `moves still open before the kill: ${open().join(', ')}`)
    // The victim: the alive host that runs most of the HA VMs.
    await w.poll()
    const count = (h: string): number => HA_VMS.filter(v => w.now.vmHost.get(v) === h).length
    const victim = hosts.map(h => h.name).filter(h => w.now.states.get(h) === 'alive').sort((a, b) => count(b) - count(a) || a.localeCompare(b))[0] ?? 'host2'
    const before = new Map(HA_VMS.map(v => [v, w.now.vmHost.get(v) ?? '?']))
    const onVictim = HA_VMS.filter(v => before.get(v) === victim)
    killed = victim
    const killedAt = since()
    await ctl.kill(victim)
    w.emit('kill', `kill -9 ${victim} (its HA VMs: ${onVictim.join(', ') || 'none'}); its simulated guests die with it`, { host: victim })
    ok = await until(`${victim} suspected`, () => ['suspect', 'dead'].includes(w.now.states.get(victim) ?? ''), 30_000) && ok
    ok = await until(`${victim} declared dead`, () => w.now.states.get(victim) === 'dead', 60_000) && ok
    for (const vm of onVictim) {
      const up = await until(`${vm} restarted elsewhere`, () => { const h = w.now.vmHost.get(vm); return h !== undefined && h !== victim }, 60_000)
      ok = up && ok
      if (up) {
        const to = w.now.vmHost.get(vm) ?? '?'
        restarts.push({ vm, from: victim, to, afterKillS: (since() - killedAt) / 1000, vip: HA_VIPS[vm]?.vip ?? null, vipAfterKillS: null })
        w.emit('ha-restart', `HA: ${vm} restarted on ${to}, ${((since() - killedAt) / 1000).toFixed(1)} s after the kill`, { vm, host: to })
      }
    }
    // Each restarted VM's virtual IP follows it to its new host.
    for (const r of restarts) {
      const vip = r.vip
      if (vip === null) continue
      const followed = await until(`virtual IP ${vip} follows ${r.vm} to ${r.to}`, () => w.now.vipHost.get(vip) === w.now.vmHost.get(r.vm), 30_000)
      ok = followed && ok
      if (followed) r.vipAfterKillS = (since() - killedAt) / 1000
    }
    ctl.start(victim)
    w.emit('restart-host', `${victim} is started again (its agent, after the reset)`, { host: victim })
    ok = await until(`${victim} rejoins`, () => w.now.states.get(victim) === 'alive', 60_000) && ok
    // It must not run again what was restarted elsewhere.
    await sleep(2500)
    await w.poll()
    const twice = onVictim.filter(vm => w.now.vmHost.get(vm) === victim)
    if (twice.length > 0) { ok = false; w.emit('double', `${victim} runs ${twice.join(', ')} again after rejoining`) } else if (onVictim.length > 0) w.emit('rejoined', `${victim} rejoined with none of the VMs restarted elsewhere`, { host: victim })
  }
  const migrations = [...w.now.migrations.values()].map(m => ({
    vm: m.vm, from: m.from, to: m.to, cause: m.cause, state: m.state, copyS: (m.durationTicks * 100) / 1000, startedS: m.startedMs / 1000, endedS: m.endedMs === null ? null : m.endedMs / 1000
  }))
  return { ok: ok && steps.every(s => s.atMs !== null), steps, migrations, restarts, killed }
}

/** The summary printed at the end. */
export function renderSummary (r: ScenarioResult): string {
  const lines = ['', `what happened (${r.ok ? 'every step of the scenario was seen' : 'SOME STEPS WERE NOT SEEN'}):`]
  for (const s of r.steps) lines.push(`  ${s.atMs === null ? '   -   ' : `${(s.atMs / 1000).toFixed(1).padStart(6)} s`}  ${s.step}${s.note !== '' ? `: ${s.note}` : ''}`)
  lines.push(`migrations: ${r.migrations.length}`)
  for (const m of r.migrations) lines.push(`  ${m.vm} ${m.from} → ${m.to} (${m.cause}): ${m.state}${m.endedS !== null ? `, ${(m.endedS - m.startedS).toFixed(1)} s from pick to end (${m.copyS.toFixed(1)} s copying)` : ''}`)
  lines.push(`HA restarts: ${r.restarts.length}${r.killed !== null ? ` (after kill -9 of ${r.killed})` : ''}`)
  for (const x of r.restarts) lines.push(`  ${x.vm} ${x.from} → ${x.to}: running ${x.afterKillS.toFixed(1)} s after the kill${x.vip !== null ? x.vipAfterKillS !== null ? `, virtual IP ${x.vip} there ${x.vipAfterKillS.toFixed(1)} s after the kill` : `, virtual IP ${x.vip} DID NOT follow` : ''}`)
  return lines.join('\n')
}

/** Removes a killed host's simulated guests and addresses (their state files): they died with the host. */
export async function resetSimHost (h: DemoHost): Promise<void> {
  await rm(path.join(h.stateDir, 'sim-vms.json'), { force: true })
  await rm(path.join(h.stateDir, 'sim-vips.json'), { force: true })
}
