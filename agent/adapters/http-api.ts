/**
 * The agent's HTTP API, on two listeners:
 *   - the control socket (a unix socket, mode 0660, group starling by default: the libvirt and
 *     Docker model): the whole API. The kernel checks the socket's permissions at connect(), so
 *     only root and the members of its group reach it; each change is logged with the caller
 *     the client names (uid, user) beside the listener it came through.
 *   - the TCP listener (node.apiListen, for Prometheus and remote views): the read-only views;
 *     a change is accepted only with `Authorization: Bearer <token>` of node.apiTokenFile
 *     (401 without one, 403 with a wrong one, 403 when no token is configured).
 * A change (POST) must carry `content-type: application/json` (415 otherwise): a web page can
 * make a browser POST text/plain to any address without a preflight, never application/json.
 *   GET /v1/status   the whole cluster view as this agent sees it (JSON)
 *   GET /v1/members  members only (JSON)
 *   GET /metrics     Prometheus text format
 *   GET /healthz     200 once the agent runs
 *   GET /v1/migrations       migrations this host takes part in (in flight and recent), and the
 *                            disk images VMs that moved away left here (keptDisks)
 *   GET /v1/plan             what the cluster's hosts would do now, step by step (policies/cluster-plan.ts)
 *   POST /v1/migrate {vm, to?, withStorage?}   ask for a move (202: queued; the core decides);
 *                                withStorage: the disks move too (else: when they are local)
 *   GET /v1/replicas         replicas this host runs VMs of or hosts (404 when not configured)
 *   POST /v1/replicate {vm, to?, retire?}   start (or retire) a replica of a VM that runs here
 *   POST /v1/drain {host}        ask a host to drain (202)
 *   GET /v1/vips                 virtual IPs: owner, role here, last announcement
 *   POST /v1/vips/move {vip, to} move a group VIP (forwarded to its owner; 202)
 *   GET /v1/ha                   high availability: quorum, fence, mode, restarts (404: not configured)
 *   GET /v1/memory               memory of this host and its VMs: balloons, guest statistics, KSM (404: no balloon side)
 *   GET /, /v1/view, /v1/events  the read-only web page and its live view (TCP only: web-view.ts)
 *   POST /v1/ha/mode {armed}     arm or disarm HA cluster-wide (202)
 *   POST /v1/ha/maintenance {host, on}  put a host in HA maintenance or take it out (202)
 *   POST /v1/ha/confirm-down {host}     an operator's word that a host with no fence is down (202)
 *   GET /v1/config               the agreed cluster configuration: version, members, rules, automation
 *   GET /v1/config/history       every version this host holds, with what changed
 *   POST /v1/config {op, ...}    change it (agent/runtime/cluster-config.ts): 200 committed,
 *                                202 pending (no majority yet), 400 invalid, 409 not agreed
 */
import http from 'node:http'
import { chmodSync, chownSync, lstatSync, unlinkSync } from 'node:fs'
import net from 'node:net'
import { timingSafeEqual, createHash } from 'node:crypto'
import type { Logger } from '../ports/logger.js'
import type { Input } from '../core/index.js'
import { renderHaMetrics, renderVipMetrics, type HaPayload, type StatusPayload, type VipsPayload } from '../api/payloads.js'
import { renderMemoryMetrics, type MemoryPayload } from '../api/memory.js'

export interface HttpApiInit {
  host: string
  port: number
  /** The control socket's path (null: no socket; the TCP listener is then the only one). */
  socketPath?: string | null
  /** gid the control socket is given (undefined: the process's own group). */
  socketGid?: number
  /** Bearer token that allows changes over TCP (null: TCP is read-only). */
  token?: string | null
}

export interface HttpApiComponents {
  logger: Logger
  /** Builds the status snapshot; must be cheap (called per request). */
  status: () => StatusPayload
  /** Migration records for GET /v1/migrations. */
  migrations?: () => unknown[]
  /** Disk images VMs left here when they moved away with their disks (GET /v1/migrations, keptDisks). */
  keptDisks?: () => unknown[]
  /** The cluster's plan for GET /v1/plan (drawn per request). */
  plan?: () => unknown
  /** Queues an operator input (migrate, drain) for the core. */
  request?: (input: Input) => void
  /** Virtual IPs for GET /v1/vips and the agent_vip_* metrics (null: none configured). */
  vips?: () => VipsPayload | null
  /** High availability for GET /v1/ha (null: not configured). */
  ha?: () => HaPayload | null
  /** Replica records for GET /v1/replicas (null: replication not configured). */
  replicas?: () => unknown[] | null
  /** This host's memory for GET /v1/memory and the agent_memory_* metrics (null: the driver has no balloon side). */
  memory?: () => MemoryPayload | null
  /**
   * The read-only web page (GET /, its files, /v1/view, /v1/events: agent/adapters/web-view.ts),
   * served on the TCP listener only. Returns false for a URL it does not serve.
   */
  web?: (req: http.IncomingMessage, res: http.ServerResponse, url: string) => boolean
  /** The replicated cluster configuration (absent: 404). */
  config?: {
    show: () => unknown
    history: () => unknown
    /** Carries out one change; `who` names the caller for the version's note. */
    change: (body: Record<string, unknown>, who: string) => Promise<{ code: number, body: unknown }>
  }
}

const BODY_BYTES_MAX = 4096

async function readJson (req: http.IncomingMessage): Promise<Record<string, unknown> | null> {
  let size = 0
  const chunks: Buffer[] = []
  for await (const c of req) {
    size += (c as Buffer).length
    if (size > BODY_BYTES_MAX) return null
    chunks.push(c as Buffer)
  }
  try {
    const v = JSON.parse(Buffer.concat(chunks).toString('utf8')) as unknown
    return typeof v === 'object' && v !== null && !Array.isArray(v) ? v as Record<string, unknown> : null
  } catch { return null }
}

export interface HttpApi {
  start: () => Promise<void>
  stop: () => Promise<void>
  /** The bound port (useful when init.port is 0). */
  port: () => number
}

/** Prometheus exposition of numeric counters: agent_<module>_<thing>. */
export function renderMetrics (s: StatusPayload): string {
  const out: string[] = []
  const emit = (module: string, obj: Record<string, unknown>): void => {
    for (const [k, v] of Object.entries(obj)) {
      if (typeof v !== 'number' || !Number.isFinite(v)) continue
      const name = `agent_${module}_${k.replace(/([a-z0-9])([A-Z])/g, '$1_$2').toLowerCase()}`
      out.push(`# TYPE ${name} gauge`, `${name} ${v}`)
    }
  }
  emit('core', s.core)
  const counters = s.core.counters
  if (typeof counters === 'object' && counters !== null) emit('core', counters as Record<string, unknown>)
  emit('runtime', s.runtime)
  if (s.process !== undefined) emit('process', s.process)
  const byState = new Map<string, number>()
  for (const m of s.members) byState.set(m.state, (byState.get(m.state) ?? 0) + 1)
  out.push('# TYPE agent_membership_members gauge')
  for (const st of ['alive', 'suspect', 'dead', 'left']) out.push(`agent_membership_members{state="${st}"} ${byState.get(st) ?? 0}`)
  const self = s.members.find(m => m.id === s.self.id)
  if (self?.report != null) {
    out.push('# TYPE agent_host_cpu_utilisation_ratio gauge', `agent_host_cpu_utilisation_ratio ${self.report.cpuUtil}`)
    out.push('# TYPE agent_host_memory_utilisation_ratio gauge', `agent_host_memory_utilisation_ratio ${self.report.memUtil}`)
    out.push('# TYPE agent_host_vms gauge', `agent_host_vms ${self.report.vms.length}`)
  }
  return out.join('\n') + '\n'
}

/** agent_replicas{role,state}: replicas of this host's VMs (origin) and those it runs (host). */
export function renderReplicaMetrics (records: unknown[]): string {
  const n = new Map<string, number>()
  for (const r of records) {
    const x = r as { role?: unknown, state?: unknown }
    if (typeof x.role !== 'string' || typeof x.state !== 'string') continue
    n.set(`${x.role}/${x.state}`, (n.get(`${x.role}/${x.state}`) ?? 0) + 1)
  }
  const out = ['# TYPE agent_replicas gauge']
  for (const role of ['origin', 'host']) {
    for (const st of ['requested', 'starting', 'running', 'retiring']) out.push(`agent_replicas{role="${role}",state="${st}"} ${n.get(`${role}/${st}`) ?? 0}`)
  }
  return out.join('\n') + '\n'
}

/**
 * A socket file left by an agent that died: removed when nothing answers on it. One that answers
 * belongs to a running agent: refusing to start beats stealing its socket.
 */
async function removeStaleSocket (path: string): Promise<void> {
  const answers = await new Promise<boolean>(resolve => {
    const c = net.connect(path)
    c.once('connect', () => { c.destroy(); resolve(true) })
    c.once('error', () => resolve(false))
  })
  if (answers) throw new Error(`another process listens on the control socket ${path} (another agent with the same node.apiSocket?)`)
  let st
  try { st = lstatSync(path) } catch { return }
  if (!st.isSocket()) throw new Error(`node.apiSocket ${path} exists and is not a socket: not removing it`)
  unlinkSync(path)
}

export function httpApi (init: HttpApiInit) {
  return (c: HttpApiComponents): HttpApi => {
    const log = c.logger.forComponent('agent:api')
    let server: http.Server | null = null
    let control: http.Server | null = null
    const tokenDigest = init.token != null && init.token !== '' ? createHash('sha256').update(init.token).digest() : null
    const json = (res: http.ServerResponse, code: number, body: unknown): void => { res.writeHead(code, { 'content-type': 'application/json' }).end(JSON.stringify(body)) }
    /** Who may change the cluster through this request: null = allowed, else the refusal. */
    const refuse = (via: 'unix' | 'tcp', req: http.IncomingMessage): { code: number, error: string } | null => {
      if (via === 'unix') return null
      const auth = req.headers.authorization
      if (tokenDigest === null) return { code: 403, error: `changes are not accepted over TCP on this host (no token in the API token file): use the control socket ${init.socketPath ?? ''} as root or a member of its group` }
      if (auth === undefined) return { code: 401, error: 'changes over TCP need "Authorization: Bearer <token>" (the API token file), or the control socket' }
      const m = /^Bearer (\S+)$/.exec(auth)
      // Compare digests so that the comparison takes the same time whatever the length.
      if (m === null || !timingSafeEqual(createHash('sha256').update(m[1] as string).digest(), tokenDigest)) return { code: 403, error: 'wrong API token' }
      return null
    }
    const handle = (via: 'unix' | 'tcp') => (req: http.IncomingMessage, res: http.ServerResponse): void => {
      try {
        const url = (req.url ?? '/').split('?')[0]
        if (req.method === 'POST' && (url === '/v1/config' || url === '/v1/migrate' || url === '/v1/drain' || url === '/v1/vips/move' || url === '/v1/ha/mode' || url === '/v1/ha/maintenance' || url === '/v1/ha/confirm-down' || url === '/v1/replicate')) {
          const no = refuse(via, req)
          const caller = { via, uid: req.headers['x-starling-uid'] ?? null, user: req.headers['x-starling-user'] ?? null, remote: via === 'tcp' ? `${req.socket.remoteAddress ?? '?'}:${req.socket.remotePort ?? '?'}` : null }
          if (no !== null) {
            log.warn(`control request ${url} refused: ${no.error}`, caller)
            req.resume()
            json(res, no.code, { error: no.error })
            return
          }
          const ct = (req.headers['content-type'] ?? '').split(';')[0]?.trim().toLowerCase()
          if (ct !== 'application/json') { req.resume(); json(res, 415, { error: 'a change must be sent with content-type: application/json' }); return }
          post(url, req, res, caller).catch(err => {
            log.error('api request failed', { url, err })
            if (!res.headersSent) json(res, 500, { error: err instanceof Error ? err.message : String(err) })
            else res.end()
          })
          return
        }
        if (req.method !== 'GET') { res.writeHead(405).end(); return }
        if (url === '/v1/plan' && c.plan !== undefined) {
          res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(c.plan()))
          return
        }
        if (url === '/v1/config' || url === '/v1/config/history') {
          if (c.config === undefined) { json(res, 404, { error: 'no replicated configuration on this agent' }); return }
          json(res, 200, url === '/v1/config' ? c.config.show() : c.config.history())
          return
        }
        if (url === '/v1/migrations') {
          res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ migrations: c.migrations?.() ?? [], keptDisks: c.keptDisks?.() ?? [] }))
          return
        }
        if (url === '/v1/replicas') {
          const r = c.replicas?.() ?? null
          if (r === null) res.writeHead(404, { 'content-type': 'application/json' }).end(JSON.stringify({ error: 'replication is not configured on this host' }))
          else res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ replicas: r }))
          return
        }
        if (url === '/v1/vips') {
          const v = c.vips?.() ?? null
          res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(v ?? { self: c.status().self, nowMs: Date.now(), tickMs: 0, vips: [] }))
          return
        }
        if (url === '/v1/ha') {
          const h = c.ha?.() ?? null
          if (h === null) { res.writeHead(404, { 'content-type': 'text/plain' }).end('no HA configured\n'); return }
          res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(h))
          return
        }
        if (url === '/v1/memory') {
          const m = c.memory?.() ?? null
          if (m === null) { res.writeHead(404, { 'content-type': 'application/json' }).end(JSON.stringify({ error: 'this host\'s driver has no balloon side (memory facts need driver.kind qemu)' })); return }
          res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(m))
          return
        }
        if (url === '/healthz') { res.writeHead(200, { 'content-type': 'text/plain' }).end('ok\n'); return }
        if (via === 'tcp' && c.web !== undefined && c.web(req, res, url ?? '/')) return
        if (url === '/v1/status' || url === '/v1/members') {
          const s = c.status()
          const body = url === '/v1/status' ? s : { cluster: s.cluster, self: s.self, members: s.members }
          res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(body))
          return
        }
        if (url === '/metrics') {
          const v = c.vips?.() ?? null
          const h = c.ha?.() ?? null
          const r = c.replicas?.() ?? null
          const m = c.memory?.() ?? null
          res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4' }).end(renderMetrics(c.status()) + (v !== null ? renderVipMetrics(v) : '') + (h !== null ? renderHaMetrics(h) : '') + (r !== null ? renderReplicaMetrics(r) : '') + (m !== null ? renderMemoryMetrics(m) : ''))
          return
        }
        res.writeHead(404, { 'content-type': 'text/plain' }).end('not found\n')
      } catch (err) {
        log.error('api request failed', { err })
        if (!res.headersSent) res.writeHead(500)
        res.end()
      }
    }
    const post = async (url: string, req: http.IncomingMessage, res: http.ServerResponse, caller: Record<string, unknown>): Promise<void> => {
      const body = await readJson(req)
      const bad = (msg: string): void => { res.writeHead(400, { 'content-type': 'application/json' }).end(JSON.stringify({ error: msg })) }
      if (body === null) { bad('body must be a JSON object'); return }
      if (url === '/v1/config') {
        if (c.config === undefined) { json(res, 404, { error: 'no replicated configuration on this agent' }); return }
        log.info(`control request ${url}`, { ...caller, body })
        const who = caller.via === 'unix' ? `${String(caller.user ?? caller.uid ?? 'local')} on the control socket` : `token holder at ${String(caller.remote)}`
        const r = await c.config.change(body, who)
        log.info(`config change ${r.code === 200 ? 'committed' : 'not committed'}`, { code: r.code, result: r.body })
        json(res, r.code, r.body)
        return
      }
      if (c.request === undefined) { res.writeHead(501).end(); return }
      log.info(`control request ${url}`, { ...caller, body })
      if (url === '/v1/migrate') {
        if (typeof body.vm !== 'string' || body.vm === '') { bad('vm must be a non-empty string'); return }
        if (body.to !== undefined && typeof body.to !== 'string') { bad('to must be a string'); return }
        if (body.withStorage !== undefined && typeof body.withStorage !== 'boolean') { bad('withStorage must be true or false'); return }
        c.request({ type: 'operatorMigrate', vm: body.vm, ...(typeof body.to === 'string' && body.to !== '' ? { to: body.to } : {}), ...(body.withStorage === true ? { withStorage: true } : {}) })
      } else if (url === '/v1/replicate') {
        if (typeof body.vm !== 'string' || body.vm === '') { bad('vm must be a non-empty string'); return }
        if (body.to !== undefined && typeof body.to !== 'string') { bad('to must be a string'); return }
        if (body.retire !== undefined && typeof body.retire !== 'boolean') { bad('retire must be true or false'); return }
        c.request({ type: 'operatorReplicate', vm: body.vm, ...(typeof body.to === 'string' && body.to !== '' ? { to: body.to } : {}), retire: body.retire === true })
      } else if (url === '/v1/vips/move') {
        if (typeof body.vip !== 'string' || body.vip === '' || typeof body.to !== 'string' || body.to === '') { bad('vip and to must be non-empty strings'); return }
        c.request({ type: 'operatorVipMove', vip: body.vip, to: body.to })
      } else if (url === '/v1/ha/mode') {
        if (typeof body.armed !== 'boolean') { bad('armed must be true or false'); return }
        c.request({ type: 'haOperatorMode', armed: body.armed })
      } else if (url === '/v1/ha/maintenance') {
        if (typeof body.host !== 'string' || body.host === '' || typeof body.on !== 'boolean') { bad('host must be a non-empty string and on a boolean'); return }
        c.request({ type: 'haOperatorMaintenance', host: body.host, on: body.on })
      } else if (url === '/v1/ha/confirm-down') {
        if (typeof body.host !== 'string' || body.host === '') { bad('host must be a non-empty string'); return }
        c.request({ type: 'haOperatorConfirmDown', host: body.host })
      } else {
        if (typeof body.host !== 'string' || body.host === '') { bad('host must be a non-empty string'); return }
        c.request({ type: 'operatorDrain', host: body.host })
      }
      res.writeHead(202, { 'content-type': 'application/json' }).end(JSON.stringify({ accepted: true }))
    }
    return {
      start: async () => {
        if (server !== null) return
        const s = http.createServer(handle('tcp'))
        server = s
        await new Promise<void>((resolve, reject) => {
          s.once('error', reject)
          s.listen(init.port, init.host, () => { s.off('error', reject); resolve() })
        })
        const sp = init.socketPath ?? null
        if (sp !== null) {
          await removeStaleSocket(sp)
          const u = http.createServer(handle('unix'))
          control = u
          await new Promise<void>((resolve, reject) => {
            u.once('error', reject)
            u.listen(sp, () => { u.off('error', reject); resolve() })
          })
          // Created under the process's umask (0077 under the unit): narrow first, then open to
          // the group, never wider than 0660 at any moment.
          if (init.socketGid !== undefined) chownSync(sp, -1, init.socketGid)
          chmodSync(sp, 0o660)
        }
      },
      stop: async () => {
        for (const s of [server, control]) {
          if (s === null) continue
          s.closeAllConnections()
          await new Promise<void>(resolve => s.close(() => resolve()))
        }
        server = null
        control = null
      },
      port: () => {
        const a = server?.address()
        return typeof a === 'object' && a !== null ? a.port : init.port
      }
    }
  }
}
