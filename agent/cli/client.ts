/** Talking to a running agent's local API, and the CLI's usage error. */
import { readFileSync } from 'node:fs'
import type { StatusPayload } from './render.js'

export class UsageError extends Error {
  readonly code = 'USAGE'
  constructor (message: string) { super(message); this.name = 'UsageError' }
}

export function apiAddress (values: { api?: string | undefined, config?: string | undefined }): string {
  if (values.api !== undefined) return values.api
  if (values.config !== undefined) {
    let raw: unknown
    try {
      raw = JSON.parse(readFileSync(values.config, 'utf8'))
    } catch (err) {
      throw new UsageError(`cannot read configuration ${values.config}: ${(err as Error).message}`)
    }
    const api = (raw as { node?: { apiListen?: unknown } })?.node?.apiListen
    if (typeof api === 'string') return api
  }
  return '127.0.0.1:7946'
}

export async function fetchStatus (api: string, timeoutMs = 3000): Promise<StatusPayload> {
  let res: Response
  try {
    res = await fetch(`http://${api}/v1/status`, { signal: AbortSignal.timeout(timeoutMs) })
  } catch (err) {
    throw new Error(`no starling agent answers at ${api} (${(err as Error).message}); is it running? (systemctl status starling)`, { cause: err })
  }
  if (!res.ok) throw new Error(`agent at ${api} answered HTTP ${res.status}`)
  return await res.json() as StatusPayload
}

/**
 * One call to the local agent's API: GET without a body, POST with a JSON body. Throws an Error
 * that says what to check when no agent answers, and the agent's own text on an HTTP error
 * (`notFound` replaces it for a 404, for endpoints that exist only when a feature is configured).
 */
export async function callApi (addr: string, pathname: string, body?: unknown, opts: { notFound?: string, timeoutMs?: number } = {}): Promise<unknown> {
  let res: Response
  try {
    res = await fetch(`http://${addr}${pathname}`, {
      method: body === undefined ? 'GET' : 'POST',
      ...(body !== undefined ? { body: JSON.stringify(body), headers: { 'content-type': 'application/json' } } : {}),
      signal: AbortSignal.timeout(opts.timeoutMs ?? 3000)
    })
  } catch (err) {
    throw new Error(`no starling agent answers at ${addr} (${(err as Error).message})`, { cause: err })
  }
  const text = await res.text()
  if (res.status === 404 && opts.notFound !== undefined) throw new Error(opts.notFound)
  if (!res.ok) throw new Error(`agent at ${addr} answered HTTP ${res.status}: ${text.trim()}`)
  return JSON.parse(text) as unknown
}
