/**
 * `starling ha status [--json]`: high availability as the local agent sees it (GET /v1/ha):
 * quorum (present / needed), the fence and the watchdog, the mode, hosts in maintenance, hosts
 * that may be taken over (fenced), restarts pending and done, and each protected VM's owner.
 * `starling ha disarm|arm` (network maintenance: nothing is failed over while disarmed),
 * `starling ha maintenance HOST on|off` and `starling ha confirm-down HOST` (a host with no fence
 * is down for good: its VMs may restart elsewhere) send the operator inputs. (The API payload and
 * the agent_ha_* metrics: agent/api/payloads.ts.)
 */
import { parseArgs } from 'node:util'
import type { HaPayload } from '../api/payloads.js'
import { apiTarget, callApi, TARGET_OPTIONS, UsageError } from './client.js'

export type { HaPayload } from '../api/payloads.js'

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
