/**
 * `starling drain HOST`: ask for the drain, then follow it until HOST runs no VM, or until every
 * VM left has found no target for a while (each printed with the reason), or a timeout.
 *
 * The outcome comes from the local agent's status (`core.drains`): exact for a drain of the
 * agent's own host (its migration records), and from gossip for another host's (that host's
 * load report, ranked with the same placement policy as this agent sees the cluster).
 * Exit codes: 0 drained, 1 VMs left (no target, or the timeout), 2 bad usage.
 */
import { parseArgs } from 'node:util'
import { apiTarget, callApi, fetchStatus, TARGET_OPTIONS, UsageError } from './client.js'
import type { StatusPayload } from '../api/payloads.js'

interface DrainVm { vm: string, state: string, target: string | null, reason: string }
interface DrainReport { host: string, name: string, own: boolean, vms: DrainVm[], moved: number }

function reportOf (s: StatusPayload, host: string): DrainReport | undefined {
  const drains = (s.core as { drains?: DrainReport[] }).drains ?? []
  return drains.find(d => d.name === host || d.host === host)
}

function line (v: DrainVm): string {
  const to = v.target !== null ? ` to ${v.target}` : ''
  return `  ${v.vm}: ${v.state}${to}${v.reason !== '' ? ` (${v.reason})` : ''}`
}

export async function drainCommand (args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: { ...TARGET_OPTIONS, 'no-wait': { type: 'boolean' }, timeout: { type: 'string' }, settle: { type: 'string' }, json: { type: 'boolean' } }
  })
  const host = positionals[0]
  if (host === undefined || positionals.length > 1) throw new UsageError('starling drain needs exactly one HOST')
  const timeoutS = Number(values.timeout ?? 600)
  const settleS = Number(values.settle ?? 15)
  if (!(timeoutS > 0) || !(settleS > 0)) throw new UsageError('--timeout and --settle must be positive numbers of seconds')
  const target = apiTarget(values)
  const before = await fetchStatus(target.addr)
  const member = before.members.find(m => m.name === host || m.id === host)
  if (member === undefined) { process.stderr.write(`starling: no member named ${host}\n`); return 1 }
  await callApi(target, '/v1/drain', { host })
  if (values['no-wait'] === true) { process.stdout.write(`drain of ${host} requested\n`); return 0 }
  process.stdout.write(`drain of ${member.name} requested; following it (--no-wait not to)\n`)

  const t0 = Date.now()
  const shown = new Map<string, string>()
  const initial = new Set(member.report?.vms.map(v => v.id) ?? [])
  let stuckSince: number | null = null
  let last: DrainReport | undefined
  while (Date.now() - t0 < timeoutS * 1000) {
    await new Promise(resolve => setTimeout(resolve, 500))
    let s: StatusPayload
    try { s = await fetchStatus(target.addr) } catch { continue }
    const r = reportOf(s, member.name)
    if (r === undefined) continue
    last = r
    for (const v of r.vms) {
      const key = `${v.state} ${v.target ?? ''}`
      if (shown.get(v.vm) !== key) { shown.set(v.vm, key); process.stdout.write(line(v) + '\n') }
    }
    // Done when the drained host runs no VM: by its own sample, or by its latest report.
    const still = r.own ? r.vms.length : (s.members.find(m => m.id === member.id)?.report?.vms.length ?? r.vms.length)
    if (still === 0) {
      const moved = r.own ? r.moved : initial.size
      if (values.json === true) process.stdout.write(JSON.stringify({ host: member.name, drained: true, moved, seconds: (Date.now() - t0) / 1000 }) + '\n')
      else process.stdout.write(`${member.name} drained: ${moved} VM${moved === 1 ? '' : 's'} moved in ${((Date.now() - t0) / 1000).toFixed(1)} s\n`)
      return 0
    }
    if (r.vms.length > 0 && r.vms.every(v => v.state === 'no target')) {
      stuckSince ??= Date.now()
      if (Date.now() - stuckSince >= settleS * 1000) break
    } else {
      stuckSince = null
    }
  }
  const left = last?.vms ?? []
  if (values.json === true) {
    process.stdout.write(JSON.stringify({ host: member.name, drained: false, left }) + '\n')
  } else {
    const why = stuckSince !== null ? `no target for ${left.length} VM${left.length === 1 ? '' : 's'}` : `not done after ${timeoutS} s`
    process.stdout.write(`${member.name} not drained: ${why}; it stays draining (it refuses incoming VMs and retries)\n${left.map(line).join('\n')}\n`)
  }
  return 1
}
