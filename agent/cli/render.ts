/** Text rendering of the cluster view for `starling status` and `starling members`. Pure functions. */
import type { MemberView } from '../core/index.js'
import type { StatusPayload } from '../api/payloads.js'

export type { StatusPayload, SettingsMismatch } from '../api/payloads.js'

/** One line per member refused or flagged at its hello (none when every member agrees). */
export function renderMismatches (s: StatusPayload): string[] {
  return (s.settingsMismatches ?? []).map(m =>
    `${m.refused ? 'REFUSED' : 'DIFFERS'} ${m.name} ${m.peer.slice(0, 8)}: ${m.fields.length > 0 ? m.fields.join(', ') : m.reason}: ${m.detail}`)
}

const pct = (x: number): string => `${Math.round(x * 100)}%`.padStart(4)

function forecastOf (m: MemberView): string {
  const f = m.report?.forecastCpu ?? []
  if (f.length === 0) return '   -'
  return pct(Math.max(...f))
}

function sortMembers (ms: MemberView[]): MemberView[] {
  return [...ms].sort((a, b) => a.name.localeCompare(b.name) || a.id.localeCompare(b.id))
}

/** The whole cluster as a tree: hosts with state, load now and forecast, and their VMs. */
export function renderStatusTree (s: StatusPayload): string {
  const members = sortMembers(s.members)
  const alive = members.filter(m => m.state === 'alive').length
  const vms = members.reduce((n, m) => n + (m.state === 'alive' ? (m.report?.vms.length ?? 0) : 0), 0)
  const lines = [`cluster ${s.cluster}: ${alive}/${members.length} hosts alive, ${vms} VMs (seen from ${s.self.name})`]
  members.forEach((m, i) => {
    const last = i === members.length - 1
    const r = m.report
    const load = r === null
      ? 'no load report yet'
      : `cpu ${pct(r.cpuUtil)} next ${forecastOf(m)}  mem ${pct(r.memUtil)}  net ${pct(r.netUtil)}  ${r.capacity.cpuCores} cores ${Math.round(r.capacity.memMiB / 1024)} GiB`
    lines.push(`${last ? '└─' : '├─'} ${m.name.padEnd(10)} ${m.id.slice(0, 8)}  ${m.state.padEnd(7)} inc ${String(m.incarnation).padEnd(3)} ${load}`)
    const vmsOf = r === null || m.state === 'dead' || m.state === 'left' ? [] : [...r.vms].sort((a, b) => a.id.localeCompare(b.id))
    vmsOf.forEach((vm, j) => {
      const stem = last ? '   ' : '│  '
      const branch = j === vmsOf.length - 1 ? '└─' : '├─'
      lines.push(`${stem}${branch} ${vm.id.padEnd(12)} ${String(vm.vcpus).padStart(2)} vcpu ${String(vm.memMiB).padStart(6)} MiB  cpu ${pct(vm.cpuUtil)}  mem ${String(Math.round(vm.memUsedMiB)).padStart(6)} MiB  ${vm.state}`)
    })
  })
  return [...lines, ...renderMemoryLine(s), ...renderMismatches(s)].join('\n')
}

const mib = (x: number): string => x >= 10240 ? `${(x / 1024).toFixed(1)} GiB` : `${Math.round(x)} MiB`

/** The memory of the host this agent runs on (`starling memory` has the detail). */
export function renderMemoryLine (s: StatusPayload): string[] {
  const m = s.memory
  if (m == null) return []
  const h = m.host
  const psi = h.pressureSome10 === null ? '' : `, pressure ${h.pressureSome10.toFixed(1)}%`
  const ksm = h.ksm === null ? '' : `, KSM ${h.ksm.run === 1 ? 'on' : 'off'} saves ${mib(h.ksm.savedMiB)}${h.ksm.cpuShare !== null ? ` (ksmd ${(h.ksm.cpuShare * 100).toFixed(1)}% CPU)` : ''}`
  return [`memory of ${s.self.name}: ${mib(h.usedMiB)} used of ${mib(h.totalMiB)} (target ${mib(h.targetMiB)}), committed ${mib(h.committedMiB)}, ballooned ${mib(h.balloonedMiB)}, reclaimable ${mib(h.reclaimableMiB)}${ksm}${psi}${m.ballooning ? '' : ' (ballooning off)'}`]
}

/** One line per member. */
export function renderMembers (s: StatusPayload): string {
  const rows = sortMembers(s.members).map(m =>
    `${m.name.padEnd(12)} ${m.id.slice(0, 16)}  ${m.state.padEnd(7)} inc ${String(m.incarnation).padEnd(4)} ${m.addr}`)
  return ['NAME         ID                STATE   INC      ADDRESS', ...rows, ...renderMismatches(s)].join('\n')
}
