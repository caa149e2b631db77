/**
 * Talking to a running agent's API, and the CLI's usage error.
 *
 * Reads (GET) go to the TCP listener (node.apiListen). Changes (POST) go to the control socket
 * (node.apiSocket; the kernel lets only root and the socket's group in), or, when the command is
 * pointed at a TCP address with --api, over TCP with the bearer token of --token-file, the
 * STARLING_API_TOKEN variable, or the configuration's node.apiTokenFile.
 */
import { readFileSync } from 'node:fs'
import http from 'node:http'
import os from 'node:os'
import type { StatusPayload } from '../api/payloads.js'

export class UsageError extends Error {
  readonly code = 'USAGE'
  constructor (message: string) { super(message); this.name = 'UsageError' }
}

/** Where the CLI reaches the agent: its TCP address (reads), its control socket and token (changes). */
export interface ApiTarget {
  /** "ip:port" of the TCP listener. */
  addr: string
  /** The control socket, or null when the command was pointed at a TCP address only. */
  socket: string | null
  /** Bearer token for changes over TCP, when one was given or could be read. */
  token: string | null
}

export const DEFAULT_API = '127.0.0.1:7946'
export const DEFAULT_SOCKET = '/run/starling/control.sock'
export const DEFAULT_TOKEN_FILE = '/etc/starling/api-token'

interface TargetOptions { api?: string | undefined, config?: string | undefined, socket?: string | undefined, 'token-file'?: string | undefined }

/** The options every command that talks to the agent takes (for util.parseArgs). */
export const TARGET_OPTIONS = {
  api: { type: 'string' },
  config: { type: 'string' },
  socket: { type: 'string' },
  'token-file': { type: 'string' }
} as const

function readNode (config: string): Record<string, unknown> {
  let raw: unknown
  try {
    raw = JSON.parse(readFileSync(config, 'utf8'))
  } catch (err) {
    throw new UsageError(`cannot read configuration ${config}: ${(err as Error).message}`)
  }
  const node = (raw as { node?: unknown })?.node
  return typeof node === 'object' && node !== null ? node as Record<string, unknown> : {}
}

function readToken (file: string, explicit: boolean): string | null {
  try {
    return (readFileSync(file, 'utf8').split('\n')[0] ?? '').trim() || null
  } catch (err) {
    if (explicit) throw new UsageError(`cannot read the API token file ${file}: ${(err as Error).message}`)
    return null
  }
}

export function apiTarget (values: TargetOptions): ApiTarget {
  const node = values.config !== undefined ? readNode(values.config) : {}
  const addr = values.api ?? (typeof node.apiListen === 'string' ? node.apiListen : DEFAULT_API)
  // --api alone names a TCP listener (maybe another host's): changes then go over TCP.
  const socket = values.socket ?? (typeof node.apiSocket === 'string' ? node.apiSocket : values.api !== undefined && values.config === undefined ? null : DEFAULT_SOCKET)
  let token: string | null = null
  if (values['token-file'] !== undefined) token = readToken(values['token-file'], true)
  else if (process.env.STARLING_API_TOKEN !== undefined && process.env.STARLING_API_TOKEN !== '') token = process.env.STARLING_API_TOKEN
  else if (socket === null) token = readToken(typeof node.apiTokenFile === 'string' ? node.apiTokenFile : DEFAULT_TOKEN_FILE, false)
  return { addr, socket, token }
}

/** The TCP address only (reading commands). */
export function apiAddress (values: TargetOptions): string {
  return apiTarget(values).addr
}

export async function fetchStatus (api: string, timeoutMs = 3000): Promise<StatusPayload> {
  return await callApi(api, '/v1/status', undefined, { timeoutMs }) as StatusPayload
}

function whoAmI (): Record<string, string> {
  const uid = process.getuid?.()
  let user = ''
  try { user = os.userInfo().username } catch { /* no passwd entry */ }
  return { ...(uid !== undefined ? { 'x-starling-uid': String(uid) } : {}), ...(user !== '' ? { 'x-starling-user': user } : {}) }
}

function request (opts: http.RequestOptions, body: string | undefined, timeoutMs: number): Promise<{ status: number, text: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ ...opts, timeout: timeoutMs }, res => {
      const chunks: Buffer[] = []
      res.on('data', (c: Buffer) => chunks.push(c))
      res.on('end', () => resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8') }))
      res.on('error', reject)
    })
    req.on('timeout', () => req.destroy(new Error(`no answer within ${timeoutMs} ms`)))
    req.on('error', reject)
    req.end(body)
  })
}

function errorText (text: string): string {
  try {
    const v = JSON.parse(text) as { error?: unknown }
    if (typeof v.error === 'string') return v.error
  } catch { /* not JSON */ }
  return text.trim()
}

/**
 * One call to the agent's API: GET without a body (TCP), POST with a JSON body (control socket,
 * or TCP with the token). Throws an Error that says what to check when no agent answers or the
 * caller may not make changes, and the agent's own text on another HTTP error (`notFound`
 * replaces it for a 404, for endpoints that exist only when a feature is configured).
 */
export async function callApi (target: ApiTarget | string, pathname: string, body?: unknown, opts: { notFound?: string, timeoutMs?: number } = {}): Promise<unknown> {
  const t: ApiTarget = typeof target === 'string' ? { addr: target, socket: null, token: null } : target
  const timeoutMs = opts.timeoutMs ?? 3000
  const post = body !== undefined
  const payload = post ? JSON.stringify(body) : undefined
  const headers: Record<string, string> = post ? { 'content-type': 'application/json', ...whoAmI() } : {}
  const viaSocket = post && t.socket !== null
  const where = viaSocket ? `the control socket ${t.socket as string}` : t.addr
  let res: { status: number, text: string }
  try {
    if (viaSocket) {
      res = await request({ socketPath: t.socket as string, path: pathname, method: 'POST', headers }, payload, timeoutMs)
    } else {
      const [host, port] = [t.addr.slice(0, t.addr.lastIndexOf(':')), Number(t.addr.slice(t.addr.lastIndexOf(':') + 1))]
      if (post && t.token !== null) headers.authorization = `Bearer ${t.token}`
      res = await request({ host, port, path: pathname, method: post ? 'POST' : 'GET', headers }, payload, timeoutMs)
    }
  } catch (err) {
    const e = err as NodeJS.ErrnoException
    if (viaSocket && (e.code === 'EACCES' || e.code === 'EPERM')) {
      throw new Error(`permission denied on ${where}: changes need root or membership of the socket's group (starling); or --api with --token-file`, { cause: err })
    }
    throw new Error(`no starling agent answers at ${where} (${e.code ?? e.message}); is it running? (systemctl status starling)`, { cause: err })
  }
  if (res.status === 404 && opts.notFound !== undefined) throw new Error(opts.notFound)
  if (res.status === 401 || res.status === 403) throw new Error(`agent at ${where} refused the change (HTTP ${res.status}): ${errorText(res.text)}`)
  if (res.status < 200 || res.status > 299) throw new Error(`agent at ${where} answered HTTP ${res.status}: ${errorText(res.text)}`)
  return JSON.parse(res.text) as unknown
}
