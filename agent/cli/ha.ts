/**
 * `starling ha status [--json]`: high availability as the local agent sees it (GET /v1/ha):
 * quorum (present / needed), the fence and the watchdog, the mode, hosts in maintenance, hosts
 * that may be taken over (fenced), restarts pending and done, and each protected VM's owner.
 * `starling ha disarm|arm` (network maintenance: nothing is failed over while disarmed),
 * `starling ha maintenance HOST on|off` and `starling ha confirm-down HOST` (a host with no fence
 * is down for good: its VMs may restart elsewhere) send the operator inputs. Also the API payload.
 */
import { parseArgs } from 'node:util'
import type { HaStatus } from '../core/ha/ha-types.js'
import { apiTarget, callApi, TARGET_OPTIONS, UsageError } from './client.js'

/** GET /v1/ha: HaManager.status() with member names beside the ids. */
export interface HaPayload extends HaStatus {
  selfName: string
  tickMs: number
  /** Member names by id, for every id the status mentions. */
  names: Record<string, string>
  /** This host's watchdog device: which, and why there is none when selfFenced is false. */
  watchdog: { device: string | null, problem: string | null }
}

export function haPayload (s: HaStatus, self: { id: string, name: string }, nameOf: (id: string) => string, tickMs: number, watchdog: HaPayload['watchdog'] = { device: null, problem: null }): HaPayload {
  const ids = new Set<string>([self.id, ...s.quorum.present, ...s.fencedHosts, ...s.maintenance, ...s.unfenced, ...s.awaitingConfirmation, ...s.confirmedDown.map(c => c.host)])
  for (const v of s.vms) if (v.standing !== null) ids.add(v.standing.host)
  const names: Record<string, string> = {}
  for (const id of ids) names[id] = id === self.id ? self.name : nameOf(id)
  return { ...s, selfName: self.name, tickMs, names, watchdog }
}

/** agent_ha_* gauges: quorum, fence, watchdog, restarts, and the HA counters. */
export function renderHaMetrics (p: HaPayload): string {
  const out: string[] = []
  const g = (name: string, v: number, type = 'gauge'): void => { out.push(`# TYPE agent_ha_${name} ${type}`, `agent_ha_${name} ${v}`) }
  g('quorate', p.quorum.quorate ? 1 : 0)
  g('quorum_present', p.quorum.present.length)
  g('quorum_needed', p.quorum.needed)
  g('fencing', p.fence.fencing ? 1 : 0)
  g('watchdog_ok', p.fence.watchdogOk ? 1 : 0)
  g('armed', p.mode.armed ? 1 : 0)
  g('fenced_hosts', p.fencedHosts.length)
  g('self_fenced', p.selfFenced ? 1 : 0)
  g('unfenced_hosts', p.unfenced.length)
  g('awaiting_confirmation', p.awaitingConfirmation.length)
  g('restarts_pending', p.pending.length)
  g('restarts_done', p.restartsDone, 'counter')
  g('vms_running_here', p.vms.filter(v => v.role === 'running').length)
  for (const [k, n] of Object.entries(p.counters)) g(k.replace(/([a-z0-9])([A-Z])/g, '$1_$2').toLowerCase(), n, 'counter')
  return out.join('\n') + '\n'
}

export function renderHa (p: HaPayload): string {
  const n = (id: string): string => p.names[id] ?? id.slice(0, 8)
  const list = (ids: string[]): string => ids.length === 0 ? '-' : ids.map(n).join(', ')
  const q = p.quorum
  const lines = [
    `as seen by ${p.selfName}`,
    `quorum       ${q.quorate ? 'yes' : 'NO'}: ${q.present.length}/${q.size} present, ${q.needed} needed (${list(q.present)})`,
    p.selfFenced
      ? `watchdog     ${p.watchdog.device ?? 'yes'}: this host is reset if its agent hangs; its HA VMs are protected`
      : `watchdog     NONE: this host's HA VMs are NOT protected and it restarts none${p.watchdog.problem !== null ? ` (${p.watchdog.problem})` : ''}`,
    `fence        ${p.fence.fencing ? `FENCING (deadline tick ${String(p.fence.deadlineTick)})` : 'no'}; watchdog ${p.fence.watchdogOk ? 'pinged' : 'WITHHELD'}`,
    `mode         ${p.mode.armed ? 'armed' : 'disarmed'} (version ${p.mode.version})${p.mode.fencingOff ? ', fencing off (a majority is disarmed)' : ''}`,
    `maintenance  ${list(p.maintenance)}`,
    `fenced hosts ${list(p.fencedHosts)}`,
    `no fence     ${list(p.unfenced)}${p.unfenced.length > 0 ? ' (never taken over without `starling ha confirm-down`)' : ''}`,
    ...(p.awaitingConfirmation.length > 0 ? [`WAITING      ${list(p.awaitingConfirmation)}: dead with no fence; make sure it is powered off, then \`starling ha confirm-down HOST\``] : []),
    ...(p.confirmedDown.length > 0 ? [`confirmed    ${list(p.confirmedDown.map(c => c.host))} down (by an operator)`] : []),
    `restarts     ${p.pending.length} pending (${p.pending.join(', ') || '-'}), ${p.restartsDone} done by this host`,
    `counters     ${Object.entries(p.counters).map(([k, v]) => `${k} ${v}`).join(', ')}`,
    '',
    'VM            OWNER            CLAIM (epoch)  HERE        ATTEMPTS  STATE'
  ]
  for (const v of p.vms) {
    const owner = v.owner === null ? '-' : `${n(v.owner)}${v.owner === p.self ? ' (self)' : ''}`
    const claim = v.standing === null ? '-' : `${v.standing.epoch}${v.released ? ' released' : ''}`
    lines.push(`${v.vm.padEnd(13)} ${owner.padEnd(16)} ${claim.padEnd(14)} ${v.role.padEnd(11)} ${String(v.attempts).padEnd(9)} ${v.failed ? 'FAILED (left alone)' : 'ok'}`)
  }
  if (p.vms.length === 0) lines.push('(no protected VMs)')
  return lines.join('\n')
}

export async function fetchHa (addr: string): Promise<HaPayload> {
  return await callApi(addr, '/v1/ha', undefined, { notFound: `agent at ${addr} has no HA configured` }) as HaPayload
}

export async function haCommand (args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({ args, allowPositionals: true, options: { ...TARGET_OPTIONS, json: { type: 'boolean' } } })
  const addr = apiTarget(values)
  const [sub, ...rest] = positionals
  switch (sub) {
    case undefined:
    case 'status': {
      if (rest.length > 0) throw new UsageError('starling ha status takes no arguments')
      const p = await fetchHa(addr.addr)
      process.stdout.write((values.json === true ? JSON.stringify(p, null, 2) : renderHa(p)) + '\n')
      return 0
    }
    case 'arm':
    case 'disarm':
      if (rest.length > 0) throw new UsageError(`starling ha ${sub} takes no arguments`)
      await callApi(addr, '/v1/ha/mode', { armed: sub === 'arm' })
      process.stdout.write(`ha ${sub} requested (spread to the cluster by the HA beats)\n`)
      return 0
    case 'confirm-down': {
      const [host] = rest
      if (host === undefined || rest.length > 1) throw new UsageError('starling ha confirm-down needs HOST')
      await callApi(addr, '/v1/ha/confirm-down', { host })
      process.stdout.write(`${host} confirmed down: its HA VMs may now restart elsewhere (spread to the cluster by the HA beats)\n`)
      return 0
    }
    case 'maintenance': {
      const [host, on] = rest
      if (host === undefined || (on !== 'on' && on !== 'off') || rest.length > 2) throw new UsageError('starling ha maintenance needs HOST and on|off')
      await callApi(addr, '/v1/ha/maintenance', { host, on: on === 'on' })
      process.stdout.write(`maintenance of ${host} ${on} requested\n`)
      return 0
    }
    default:
      throw new UsageError(`unknown ha subcommand "${sub}"`)
  }
}
