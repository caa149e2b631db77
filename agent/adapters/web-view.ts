/**
 * The agent's web page: a read-only view of the cluster as THIS agent sees it (its own gossiped
 * membership and load reports, its own migration records, HA and VIP state). Every agent serves
 * the same page; none is a master, and two agents show the same hosts and VMs once gossip has
 * spread (a report or two).
 *
 * Served on the TCP API listener (node.apiListen), GET only:
 *   GET /                 the page (agent/web/index.html)
 *   GET /web/app.js, /web/style.css   its script and style, plain files shipped in the repository
 *   GET /v1/view          the view as one JSON object (what the page draws)
 *   GET /v1/events        the same view as server-sent events: one at once, then one a second
 *
 * The view adds to the status what a page needs and the agent does not otherwise keep: a short
 * history of each host's CPU load (sampled here, once a second), how old each host's data is (the
 * time since this agent last saw its load report change) and a timeline of events, found by
 * comparing successive samples: members turning suspect, dead or alive again, VMs appearing on
 * another host, this host's migrations starting and ending, HA restarts, VIP owners changing,
 * forecasts crossing the overload threshold. Changes are never accepted here.
 *
 * The files are read from agent/web/, found next to this module: ../web from the sources
 * (agent/adapters/) or from a package that copied them into dist/agent/web, else the sources'
 * agent/web from dist/agent/adapters/ of a checkout.
 */
import { readFileSync, existsSync } from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import type http from 'node:http'
import type { MemberView } from '../core/index.js'

/** The parts of the status payload the view reads. */
export interface WebStatus { cluster: string, self: { id: string, name: string }, members: MemberView[] }

/** The parts of a migration record the view reads. */
export interface WebMigration {
  id: string
  vm: string
  role: string
  source: string
  target: string
  state: string
  cause: string
  reason: string
  durationTicks: number
  progress: { status: string, totalTimeMs: number, transferredBytes: number, remainingBytes: number, dirtySyncCount: number, downtimeMs: number | null } | null
}

/** The parts of GET /v1/ha the view reads. */
export interface WebHa {
  quorum: { size: number, needed: number, present: string[], quorate: boolean }
  pending: string[]
  restartsDone: number
  fencedHosts: string[]
  selfFenced: boolean
  vms: Array<{ vm: string, role: string, owner: string | null, attempts: number, failed: boolean }>
  names: Record<string, string>
}

/** The parts of GET /v1/vips the view reads. */
export interface WebVips { vips: Array<{ vip: string, address: string, owner: string | null, ownerName: string }> }

export interface WebViewComponents {
  status: () => WebStatus
  migrations?: () => WebMigration[]
  ha?: () => WebHa | null
  vips?: () => WebVips | null
  /** The cluster's pending plan (GET /v1/plan's steps), drawn at each sample. */
  plan?: () => { steps: Array<{ step: number, vm: string, fromName: string, toName: string, rating: number, reason: { text: string } }> }
  /** Core tick, ms (migration durations are in ticks). @default 100 */
  tickMs?: number
  /** The overload threshold the forecast is compared with (the policy's). @default 0.9 */
  overloadThreshold?: number
  /** Wall clock, ms. @default Date.now */
  now?: () => number
}

export interface WebViewInit {
  /** Sampling period of the history, the events and the live updates, ms. @default 1000 */
  intervalMs?: number
  /** Points of history kept per host. @default 90 */
  historyPoints?: number
  /** Events kept. @default 300 */
  eventsMax?: number
}

export interface ViewEvent { t: number, kind: string, text: string, host?: string, vm?: string }

export interface ViewHost {
  id: string
  name: string
  state: string
  incarnation: number
  /** ms since this agent last saw the host's load report change (null: none yet). */
  ageMs: number | null
  cpu: number | null
  mem: number | null
  forecast: number | null
  cores: number | null
  memMiB: number | null
  /** CPU utilisation, oldest first, one point per interval. */
  history: number[]
  vms: Array<{ id: string, vcpus: number, memMiB: number, cpu: number, state: string }>
}

export interface ViewMigration {
  id: string
  vm: string
  from: string
  to: string
  role: string
  state: string
  cause: string
  reason: string
  /** Share of the copy done, [0, 1] (null: not copying yet). */
  fraction: number | null
  seconds: number | null
}

export interface WebViewPayload {
  cluster: string
  self: { id: string, name: string }
  nowMs: number
  intervalMs: number
  threshold: number
  quorum: { present: number, size: number, needed: number, quorate: boolean, source: 'ha' | 'membership' }
  hosts: ViewHost[]
  migrations: ViewMigration[]
  ha: { pending: string[], restartsDone: number, fenced: string[], selfFenced: boolean, vms: Array<{ vm: string, owner: string, role: string, attempts: number, failed: boolean }> } | null
  vips: Array<{ vip: string, address: string, owner: string }> | null
  /** Moves the cluster would make now (`starling plan`); null when not served. */
  plan: Array<{ step: number, vm: string, from: string, to: string, rating: number, why: string }> | null
  events: ViewEvent[]
}

export interface WebView {
  /** Handles GET requests for the page, its files, /v1/view and /v1/events; false when the URL is not one of them. */
  handle: (req: http.IncomingMessage, res: http.ServerResponse, url: string) => boolean
  /** Start sampling (idempotent). */
  start: () => void
  /** Stop sampling and end the live streams. */
  stop: () => void
  /** The view now (what /v1/view returns). */
  view: () => WebViewPayload
  /** Take a sample now (the timer does it every interval; tests call it). */
  sample: () => void
}

const FILES: Record<string, { file: string, type: string }> = {
  '/': { file: 'index.html', type: 'text/html; charset=utf-8' },
  '/index.html': { file: 'index.html', type: 'text/html; charset=utf-8' },
  '/web/app.js': { file: 'app.js', type: 'text/javascript; charset=utf-8' },
  '/web/style.css': { file: 'style.css', type: 'text/css; charset=utf-8' }
}

/** Where the page's files are: agent/web, found from this module in the sources or in dist/. */
export function webAssetDir (): string {
  const here = path.dirname(fileURLToPath(import.meta.url))
  const candidates = [path.join(here, '..', 'web'), path.join(here, '..', '..', '..', 'agent', 'web')]
  for (const c of candidates) if (existsSync(path.join(c, 'index.html'))) return c
  throw new Error(`the web page's files are missing (looked in ${candidates.join(', ')})`)
}

const SECURITY_HEADERS = {
  'x-content-type-options': 'nosniff',
  'x-frame-options': 'DENY',
  'referrer-policy': 'no-referrer',
  'content-security-policy': "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'"
}

const round3 = (x: number): number => Math.round(x * 1000) / 1000

export function webView (init: WebViewInit = {}) {
  return (c: WebViewComponents): WebView => {
    const intervalMs = init.intervalMs ?? 1000
    const historyMax = init.historyPoints ?? 90
    const eventsMax = init.eventsMax ?? 300
    const now = c.now ?? Date.now
    const tickMs = c.tickMs ?? 100
    const threshold = c.overloadThreshold ?? 0.9
    const files = new Map<string, Buffer>()
    let dir: string | null = null
    const history = new Map<string, number[]>()
    /** Per host: the report's seq and when this agent saw it change. */
    const seen = new Map<string, { seq: number, at: number }>()
    const events: ViewEvent[] = []
    let prev: { states: Map<string, string>, vmHost: Map<string, string>, migs: Map<string, string>, over: Set<string>, haOwner: Map<string, string>, haPending: Set<string>, restartsDone: number, vipOwner: Map<string, string> } | null = null
    let timer: NodeJS.Timeout | null = null
    const streams = new Set<http.ServerResponse>()

    const push = (e: Omit<ViewEvent, 't'>): void => {
      events.push({ t: now(), ...e })
      if (events.length > eventsMax) events.splice(0, events.length - eventsMax)
    }

    const nameOf = (s: WebStatus, id: string): string => s.members.find(m => m.id === id)?.name ?? id.slice(0, 8)

    const sample = (): void => {
      const s = c.status()
      const t = now()
      const states = new Map<string, string>()
      const vmHost = new Map<string, string>()
      const over = new Set<string>()
      for (const m of s.members) {
        states.set(m.name, m.state)
        const r = m.report
        if (r !== null) {
          const h = history.get(m.id) ?? []
          h.push(round3(r.cpuUtil))
          if (h.length > historyMax) h.splice(0, h.length - historyMax)
          history.set(m.id, h)
          const was = seen.get(m.id)
          if (was === undefined || was.seq !== r.seq) seen.set(m.id, { seq: r.seq, at: t })
          if (m.state !== 'dead' && m.state !== 'left') {
            for (const v of r.vms) if (v.state !== 'migrating' && v.state !== 'stopped') vmHost.set(v.id, m.name)
            const f = r.forecastCpu.length > 0 ? Math.max(...r.forecastCpu) : r.cpuUtil
            if (f > threshold) over.add(m.name)
          }
        }
      }
      const migs = new Map<string, string>()
      const mr = c.migrations?.() ?? []
      for (const r of mr) migs.set(r.id, r.state)
      const ha = c.ha?.() ?? null
      const haOwner = new Map<string, string>()
      const haPending = new Set<string>(ha?.pending ?? [])
      if (ha !== null) for (const v of ha.vms) if (v.owner !== null) haOwner.set(v.vm, ha.names[v.owner] ?? nameOf(s, v.owner))
      const vipOwner = new Map<string, string>()
      for (const v of c.vips?.()?.vips ?? []) vipOwner.set(v.vip, v.ownerName !== '' ? v.ownerName : '-')
      if (prev === null) {
        push({ kind: 'start', text: `view of ${s.self.name} started: ${s.members.length} members, ${[...states.values()].filter(x => x === 'alive').length} alive` })
      } else {
        for (const [name, st] of states) {
          const was = prev.states.get(name)
          if (was === undefined) push({ kind: 'member', host: name, text: `${name} joined (${st})` })
          else if (was !== st) push({ kind: st === 'alive' ? 'alive' : st, host: name, text: st === 'alive' ? `${name} is alive again (was ${was})` : `${name} is ${st} (was ${was})` })
        }
        for (const name of over) if (!prev.over.has(name)) push({ kind: 'overload', host: name, text: `${name}: CPU forecast above the ${Math.round(threshold * 100)} % threshold` })
        for (const name of prev.over) if (!over.has(name) && states.get(name) === 'alive') push({ kind: 'relieved', host: name, text: `${name}: CPU forecast back below ${Math.round(threshold * 100)} %` })
        for (const [vm, host] of vmHost) {
          const was = prev.vmHost.get(vm)
          if (was !== undefined && was !== host) push({ kind: 'moved', vm, host, text: `${vm} now runs on ${host} (was ${was})` })
        }
        for (const r of mr) {
          const was = prev.migs.get(r.id)
          if (was === r.state) continue
          const what = `migration of ${r.vm} ${nameOf(s, r.source)} → ${nameOf(s, r.target)}`
          if (r.state === 'committed') push({ kind: 'migrated', vm: r.vm, text: `${what} committed${r.durationTicks > 0 ? ` (${((r.durationTicks * tickMs) / 1000).toFixed(1)} s copying)` : ''}` })
          else if (r.state === 'aborted') push({ kind: 'aborted', vm: r.vm, text: `${what} aborted: ${r.reason}` })
          else if (was === undefined) push({ kind: 'migration', vm: r.vm, text: `${what} started (${r.cause})` })
        }
        for (const vm of haPending) if (!prev.haPending.has(vm)) push({ kind: 'ha-pending', vm, text: `HA: ${vm} is to be restarted (its host is fenced)` })
        for (const [vm, owner] of haOwner) {
          const was = prev.haOwner.get(vm)
          if (was !== undefined && was !== owner) push({ kind: 'ha-restart', vm, host: owner, text: `HA: ${vm} restarted on ${owner} (was on ${was})` })
        }
        if (ha !== null && ha.restartsDone > prev.restartsDone) push({ kind: 'ha-done', text: `HA: ${s.self.name} has done ${ha.restartsDone} restart(s)` })
        for (const [vip, owner] of vipOwner) {
          const was = prev.vipOwner.get(vip)
          if (was !== undefined && was !== owner) push({ kind: 'vip', text: `VIP ${vip} now on ${owner} (was ${was})` })
        }
      }
      prev = { states, vmHost, migs, over, haOwner, haPending, restartsDone: ha?.restartsDone ?? 0, vipOwner }
      if (streams.size > 0) {
        const data = `event: view\ndata: ${JSON.stringify(view())}\n\n`
        for (const r of streams) r.write(data)
      }
    }

    const view = (): WebViewPayload => {
      const s = c.status()
      const t = now()
      const hosts: ViewHost[] = s.members.map(m => {
        const r = m.report
        const at = seen.get(m.id)?.at
        return {
          id: m.id,
          name: m.name,
          state: m.state,
          incarnation: m.incarnation,
          ageMs: at === undefined ? null : t - at,
          cpu: r === null ? null : round3(r.cpuUtil),
          mem: r === null ? null : round3(r.memUtil),
          forecast: r === null ? null : round3(r.forecastCpu.length > 0 ? Math.max(...r.forecastCpu) : r.cpuUtil),
          cores: r?.capacity.cpuCores ?? null,
          memMiB: r?.capacity.memMiB ?? null,
          history: history.get(m.id) ?? [],
          vms: r === null || m.state === 'dead' || m.state === 'left' ? [] : r.vms.map(v => ({ id: v.id, vcpus: v.vcpus, memMiB: v.memMiB, cpu: round3(v.cpuUtil), state: v.state }))
        }
      }).sort((a, b) => a.name.localeCompare(b.name, undefined, { numeric: true }))
      const migrations: ViewMigration[] = (c.migrations?.() ?? [])
        .filter(r => r.state !== 'committed' && r.state !== 'aborted' ? true : (prev?.migs.has(r.id) ?? false))
        .slice(0, 20)
        .map(r => {
          const p = r.progress
          const total = p === null ? 0 : p.transferredBytes + p.remainingBytes
          return {
            id: r.id,
            vm: r.vm,
            from: nameOf(s, r.source),
            to: nameOf(s, r.target),
            role: r.role,
            state: r.state,
            cause: r.cause,
            reason: r.reason,
            fraction: r.state === 'committed' ? 1 : p === null || total === 0 ? null : round3(p.transferredBytes / total),
            seconds: p === null ? null : Math.round(p.totalTimeMs / 100) / 10
          }
        })
      const ha = c.ha?.() ?? null
      const alive = s.members.filter(m => m.state === 'alive' || m.state === 'suspect').length
      const needed = Math.floor(s.members.length / 2) + 1
      const quorum = ha !== null
        ? { present: ha.quorum.present.length, size: ha.quorum.size, needed: ha.quorum.needed, quorate: ha.quorum.quorate, source: 'ha' as const }
        : { present: alive, size: s.members.length, needed, quorate: alive >= needed, source: 'membership' as const }
      const hn = (id: string | null): string => id === null ? '-' : ha?.names[id] ?? nameOf(s, id)
      const vips = c.vips?.() ?? null
      return {
        cluster: s.cluster,
        self: s.self,
        nowMs: t,
        intervalMs,
        threshold,
        quorum,
        hosts,
        migrations,
        ha: ha === null ? null : { pending: ha.pending, restartsDone: ha.restartsDone, fenced: ha.fencedHosts.map(hn), selfFenced: ha.selfFenced, vms: ha.vms.map(v => ({ vm: v.vm, owner: hn(v.owner), role: v.role, attempts: v.attempts, failed: v.failed })) },
        vips: vips === null ? null : vips.vips.map(v => ({ vip: v.vip, address: v.address, owner: v.ownerName !== '' ? v.ownerName : '-' })),
        plan: c.plan === undefined ? null : c.plan().steps.slice(0, 20).map(x => ({ step: x.step, vm: x.vm, from: x.fromName, to: x.toName, rating: x.rating, why: x.reason.text })),
        events: events.slice(-100)
      }
    }

    const file = (name: string): Buffer => {
      const hit = files.get(name)
      if (hit !== undefined) return hit
      dir ??= webAssetDir()
      const b = readFileSync(path.join(dir, name))
      files.set(name, b)
      return b
    }

    const handle = (req: http.IncomingMessage, res: http.ServerResponse, url: string): boolean => {
      if (req.method !== 'GET' && req.method !== 'HEAD') return false
      const f = FILES[url]
      if (f !== undefined) {
        res.writeHead(200, { 'content-type': f.type, 'cache-control': 'no-cache', ...SECURITY_HEADERS }).end(req.method === 'HEAD' ? undefined : file(f.file))
        return true
      }
      if (url === '/v1/view') {
        if (prev === null) sample()
        res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'no-store' }).end(JSON.stringify(view()))
        return true
      }
      if (url === '/v1/events') {
        if (prev === null) sample()
        res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-store', connection: 'keep-alive', 'x-accel-buffering': 'no' })
        res.write(`retry: 2000\nevent: view\ndata: ${JSON.stringify(view())}\n\n`)
        streams.add(res)
        const gone = (): void => { streams.delete(res) }
        req.once('close', gone)
        res.once('close', gone)
        return true
      }
      return false
    }

    return {
      handle,
      view,
      sample,
      start: () => {
        if (timer !== null) return
        timer = setInterval(() => {
          try { sample() } catch { /* the next sample tries again */ }
        }, intervalMs)
        timer.unref()
      },
      stop: () => {
        if (timer !== null) clearInterval(timer)
        timer = null
        for (const r of streams) r.end()
        streams.clear()
      }
    }
  }
}
