/**
 * `starling vips`: each virtual IP, its owner and its last announcement, as the local agent sees
 * them (GET /v1/vips); `starling vips move VIP HOST` moves a group VIP (forwarded to its owner);
 * `starling vips --release-local --config FILE` removes this host's configured VIP addresses
 * without an agent (the unit's ExecStopPost: an agent killed by SIGKILL leaves them behind).
 * (The payload the API serves and the agent_vip_* metrics: agent/api/payloads.ts.)
 */
import { parseArgs } from 'node:util'
import type { VipsPayload } from '../api/payloads.js'
import { apiTarget, callApi, TARGET_OPTIONS, UsageError } from './client.js'

export type { VipRow, VipsPayload } from '../api/payloads.js'

function ago (ms: number): string {
  if (ms < 1000) return `${Math.round(ms)} ms ago`
  if (ms < 120_000) return `${(ms / 1000).toFixed(1)} s ago`
  return `${Math.round(ms / 60_000)} min ago`
}

export function renderVips (p: VipsPayload): string {
  if (p.vips.length === 0) return 'no virtual IPs configured'
  const lines = [`as seen by ${p.self.name}`, 'VIP           ADDRESS             IFACE    BINDING               OWNER            HERE        LAST ANNOUNCEMENT (by this host)']
  for (const v of p.vips) {
    const binding = v.binding.kind === 'vm' ? `vm ${v.binding.vm}` : `group of ${v.binding.hosts.length}`
    const owner = v.owner === null ? '-' : `${v.ownerName !== '' ? v.ownerName : v.owner.slice(0, 8)}${v.owner === p.self.id ? ' (self)' : ''}`
    const last = v.lastAnnounceAtMs === null ? '-' : `${new Date(v.lastAnnounceAtMs).toISOString()} (${ago(p.nowMs - v.lastAnnounceAtMs)}, ${v.lastAnnounceReason ?? ''})`
    lines.push(`${v.vip.padEnd(13)} ${v.address.padEnd(19)} ${v.iface.padEnd(8)} ${binding.padEnd(21)} ${owner.padEnd(16)} ${v.role.padEnd(11)} ${last}`)
  }
  return lines.join('\n')
}

export async function fetchVips (addr: string): Promise<VipsPayload> {
  return await callApi(addr, '/v1/vips') as VipsPayload
}

/** Removes the configured VIP addresses of this host (no agent needed). Exit 1 if one failed. */
async function releaseLocal (configFile: string): Promise<number> {
  // Light imports only: this runs as the unit's stop hook, right after a crash, while another
  // host may already be taking the VIP over; the agent's whole module graph takes seconds to load.
  const { readFile } = await import('node:fs/promises')
  const { validateConfig } = await import('../config.js')
  const { removeLocalVips } = await import('../runtime/vip-setup.js')
  const { arpVip } = await import('../adapters/arp-vip.js')
  const { jsonLogger } = await import('../lib/logger.js')
  let raw: unknown
  try { raw = JSON.parse(await readFile(configFile, 'utf8')) } catch (err) { throw new UsageError(`cannot read configuration ${configFile}: ${(err as Error).message}`) }
  const config = validateConfig(raw)
  const logger = jsonLogger({ level: 'warn' })
  const failed = await removeLocalVips(config.vips, arpVip({})({ logger }), logger)
  for (const f of failed) process.stderr.write(`starling: could not remove ${f}\n`)
  return failed.length === 0 ? 0 : 1
}

export async function vipsCommand (args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: { ...TARGET_OPTIONS, json: { type: 'boolean' }, 'release-local': { type: 'boolean' } }
  })
  if (values['release-local'] === true) {
    if (values.config === undefined) throw new UsageError('starling vips --release-local needs --config FILE')
    return await releaseLocal(values.config)
  }
  const addr = apiTarget(values)
  if (positionals[0] === 'move') {
    const [, vip, to] = positionals
    if (vip === undefined || to === undefined || positionals.length > 3) throw new UsageError('starling vips move needs VIP and HOST')
    await callApi(addr, '/v1/vips/move', { vip, to })
    process.stdout.write(`move of ${vip} to ${to} requested\n`)
    return 0
  }
  if (positionals.length > 0) throw new UsageError(`unknown vips subcommand "${positionals[0] ?? ''}"`)
  const p = await fetchVips(addr.addr)
  process.stdout.write((values.json === true ? JSON.stringify(p, null, 2) : renderVips(p)) + '\n')
  return 0
}
