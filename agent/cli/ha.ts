/**
 * `starling ha status [--json]`: high availability as the local agent sees it (GET /v1/ha):
 * quorum (present / needed), the fence and the watchdog, the mode, hosts in maintenance, hosts
 * that may be taken over (fenced), restarts pending and done, and each protected VM's owner.
 * `starling ha disarm|arm` (network maintenance: nothing is failed over while disarmed),
 * `starling ha maintenance HOST on|off` and `starling ha confirm-down HOST` (a host with no fence
 * is down for good: its VMs may restart elsewhere) send the operator inputs. (The API payload and
 * the agent_ha_* metrics: agent/api/payloads.ts.)
 * `starling ha protect VM [...]` and `starling ha unprotect VM` change the protected VMs of the
 * replicated cluster configuration (POST /v1/config, agreed by a majority like `starling rules
 * add`): the VM's home is the member that runs it now; its boot definition is the one given
 * (--kernel [--initrd --append --arg ...] or --image), else the one this host's file gives it
 * (driver.qemu.vms, or the simulated driver's list). "pending" (exit 3) when no majority answered.
 */
import { parseArgs } from 'node:util'
import type { HaPayload } from '../api/payloads.js'
import { apiTarget, callApi, TARGET_OPTIONS, UsageError } from './client.js'
import { configChange } from './cluster-config.js'

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
  const { values, positionals } = parseArgs({
    args, allowPositionals: true,
    options: {
      ...TARGET_OPTIONS, json: { type: 'boolean' },
      priority: { type: 'string' }, order: { type: 'string' }, 'max-attempts': { type: 'string' }, 'fence-policy': { type: 'string' },
      vcpus: { type: 'string' }, 'mem-mib': { type: 'string' }, 'cpu-mips': { type: 'string' },
      kernel: { type: 'string' }, initrd: { type: 'string' }, append: { type: 'string' }, image: { type: 'string' }, arg: { type: 'string', multiple: true }
    }
  })
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
    case 'protect': {
      const [vm] = rest
      if (vm === undefined || rest.length > 1) throw new UsageError('usage: starling ha protect VM [--priority N] [--order N] [--max-attempts N] [--fence-policy stop|pause] [--vcpus N --mem-mib N --cpu-mips N] [--kernel F [--initrd F] [--append S] [--arg A ...] | --image F]')
      const int = (k: 'priority' | 'order' | 'max-attempts' | 'vcpus' | 'mem-mib' | 'cpu-mips'): number | undefined => {
        const v = values[k]
        if (v === undefined) return undefined
        const x = Number(v)
        if (!Number.isSafeInteger(x)) throw new UsageError(`--${k} must be an integer`)
        return x
      }
      const fp = values['fence-policy']
      if (fp !== undefined && fp !== 'stop' && fp !== 'pause') throw new UsageError('--fence-policy must be stop or pause')
      if (values.kernel !== undefined && values.image !== undefined) throw new UsageError('give --kernel or --image, not both')
      const settings: Record<string, unknown> = {
        priority: int('priority'), order: int('order'), maxAttempts: int('max-attempts'), fencePolicy: fp,
        vcpus: int('vcpus'), memMiB: int('mem-mib'), cpuMips: int('cpu-mips'),
        kernel: values.kernel, initrd: values.initrd, append: values.append, image: values.image, args: values.arg
      }
      for (const k of Object.keys(settings)) if (settings[k] === undefined) delete settings[k]
      return await configChange(addr, { op: 'ha-protect', vm, settings })
    }
    case 'unprotect': {
      const [vm] = rest
      if (vm === undefined || rest.length > 1) throw new UsageError('usage: starling ha unprotect VM')
      return await configChange(addr, { op: 'ha-unprotect', vm })
    }
    default:
      throw new UsageError(`unknown ha subcommand "${sub}"`)
  }
}
