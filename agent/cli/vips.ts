/**
 * `starling vips`: each virtual IP, its owner and its last announcement, as the local agent sees
 * them (GET /v1/vips); `starling vips move VIP HOST` moves a group VIP (forwarded to its owner);
 * `starling vips --release-local --config FILE` removes this host's configured VIP addresses
 * without an agent (the unit's ExecStopPost: an agent killed by SIGKILL leaves them behind).
 * Also the payload the API serves and the agent_vip_* metrics.
 */
import { parseArgs } from 'node:util'
import type { VipStatusReport } from '../core/vip/vip-bridge.js'
import type { VipStatus } from '../core/vip/vip-types.js'
import { apiTarget, callApi, TARGET_OPTIONS, UsageError } from './client.js'

/** One VIP as GET /v1/vips returns it. */
export interface VipRow extends VipStatus {
  /** Owner's member name ('' when no owner is known). */
  ownerName: string
  /** Wall time of this host's last burst for the VIP (ms since the epoch), or null. */
  lastAnnounceAtMs: number | null
}

export interface VipsPayload {
  self: { id: string, name: string }
  /** Wall time the snapshot was taken (ms since the epoch). */
  nowMs: number
  tickMs: number
  vips: VipRow[]
}

/**
 * Builds the API payload. The last announcement's wall time comes from ticks:
 * now − (ticks() − lastAnnounceTick) × tickMs.
 */
export function vipsPayload (r: VipStatusReport, self: { id: string, name: string }, nameOf: (id: string) => string, tickMs: number, nowMs: number): VipsPayload {
  return {
    self,
    nowMs,
    tickMs,
    vips: r.vips.map(v => ({
      ...v,
      ownerName: v.owner === null ? '' : nameOf(v.owner),
      lastAnnounceAtMs: v.lastAnnounceTick === null ? null : nowMs - (r.ticks - v.lastAnnounceTick) * tickMs
    }))
  }
}

/** agent_vip_* gauges: counters summed over the VIPs, and per VIP whether this host owns it. */
export function renderVipMetrics (p: VipsPayload): string {
  const out: string[] = []
  const sum: Record<string, number> = {}
  for (const v of p.vips) for (const [k, n] of Object.entries(v.counters as unknown as Record<string, number>)) sum[k] = (sum[k] ?? 0) + n
  for (const [k, n] of Object.entries(sum)) {
    const name = `agent_vip_${k.replace(/([a-z0-9])([A-Z])/g, '$1_$2').toLowerCase()}`
    out.push(`# TYPE ${name} counter`, `${name} ${n}`)
  }
  out.push('# TYPE agent_vip_owned gauge')
  for (const v of p.vips) out.push(`agent_vip_owned{vip="${v.vip}"} ${v.role === 'owner' ? 1 : 0}`)
  out.push('# TYPE agent_vip_last_announce_age_seconds gauge')
  for (const v of p.vips) if (v.lastAnnounceAtMs !== null) out.push(`agent_vip_last_announce_age_seconds{vip="${v.vip}"} ${((p.nowMs - v.lastAnnounceAtMs) / 1000).toFixed(3)}`)
  return out.join('\n') + '\n'
}

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
