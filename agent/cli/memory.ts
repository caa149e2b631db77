/**
 * `starling memory [--json]`: this host's memory and its VMs' as the local agent's balloon loop
 * saw them at its last sample (GET /v1/memory): physical, committed, ballooned, reclaimable, KSM's
 * saving and the memory pressure; per VM its maximum, balloon, the guest's free memory and the
 * age of its statistics.
 */
import { parseArgs } from 'node:util'
import type { MemoryPayload, MemoryStatus } from '../api/memory.js'
import { apiAddress, callApi, TARGET_OPTIONS } from './client.js'

const mib = (x: number | null): string => x === null ? '-' : x >= 10240 ? `${(x / 1024).toFixed(1)} GiB` : `${Math.round(x)} MiB`

const pct = (x: number | null): string => x === null ? '-' : `${(x * 100).toFixed(1)}%`

function ksmLine (k: MemoryStatus['host']['ksm']): string {
  if (k === null) return 'not available'
  const state = k.run === 1 ? 'running' : k.run === 2 ? 'unmerging' : 'stopped'
  const by = k.managed ? `driven by the agent (${k.reason ?? '-'}${k.cpuLimited ? ', rate cut for its CPU budget' : ''})` : 'not driven by the agent'
  const rate = k.advisor === 'scan-time' ? 'rate set by the kernel advisor' : `${k.pagesToScan ?? '-'} pages per ${k.sleepMs ?? '-'} ms`
  return `${state}, ${by}; saves ${mib(k.savedMiB)}${k.netSavedMiB !== null ? ` (${mib(k.netSavedMiB)} net of its metadata)` : ''}: ` +
    `${k.pagesSharing} pages sharing ${k.pagesShared}; ${rate}; ksmd CPU ${pct(k.cpuShare)} of a core${k.budgetPercent !== null ? ` (budget ${k.budgetPercent}%)` : ''}`
}

export function renderMemory (p: MemoryPayload): string {
  const s = p.status
  if (s === null) return `${p.self.name}: no memory sample yet`
  const h = s.host
  const lines = [
    `host ${p.self.name} (sampled ${((p.nowMs - s.atMs) / 1000).toFixed(1)} s ago; ballooning ${s.ballooning ? 'on' : 'off'})`,
    `  physical     ${mib(h.physicalMiB)} (${mib(h.availableMiB)} available)`,
    `  counted      ${mib(h.usedMiB)} used of ${mib(h.totalMiB)}, target ${mib(h.targetMiB)}${h.unmetMiB > 0 ? `, ${mib(h.unmetMiB)} over it that no guest can give` : ''}`,
    `  committed    ${mib(h.committedMiB)} (sum of the VMs' memory)`,
    `  ballooned    ${mib(h.balloonedMiB)} held back by balloons; ${mib(h.reclaimableMiB)} more reclaimable`,
    `  KSM          ${ksmLine(h.ksm)}`,
    `  pressure     ${h.pressureSome10 === null ? 'not available' : `some ${h.pressureSome10.toFixed(2)}%, full ${(h.pressureFull10 ?? 0).toFixed(2)}% (avg10)`}${h.pressured ? `: SUSTAINED, short of memory (reclaiming ${mib(h.pressureWantMiB)} a step)` : ''}`,
    ...(p.ksmCounters !== undefined ? [`  KSM loop     ${p.ksmCounters.steps} steps, ${p.ksmCounters.starts} starts, ${p.ksmCounters.stops} stops, ${p.ksmCounters.cpuLimited} steps cut for CPU${p.ksmCounters.applyErrors > 0 ? `, ${p.ksmCounters.applyErrors} WRITE ERRORS` : ''}`] : []),
    `  balloon loop ${p.counters.steps} steps, ${p.counters.grows} grows (${mib(p.counters.givenMiB)}), ${p.counters.shrinks} shrinks (${mib(p.counters.reclaimedMiB)})${p.counters.staleShrinks > 0 ? `, ${p.counters.staleShrinks} STALE SHRINKS REFUSED` : ''}`,
    '',
    'VM            MAX        MIN        BALLOON    TARGET     GUEST FREE STATS AGE  NOTE'
  ]
  for (const v of [...s.vms].sort((a, b) => a.id.localeCompare(b.id))) {
    const age = v.statsAgeS === null ? '-' : `${v.statsAgeS.toFixed(1)} s`
    const note = !v.balloon ? 'no balloon device' : [v.stale ? 'stale' : '', v.swapping ? 'swapping' : '', v.held !== null && v.held !== 'stale' && v.held !== 'swapping' ? v.held : ''].filter(x => x !== '').join(', ')
    lines.push(`${v.id.padEnd(13)} ${mib(v.maxMiB).padEnd(10)} ${mib(v.minMiB).padEnd(10)} ${mib(v.actualMiB).padEnd(10)} ${mib(v.targetMiB).padEnd(10)} ${mib(v.guestFreeMiB).padEnd(10)} ${age.padEnd(10)} ${note}`)
  }
  return lines.join('\n')
}

export async function memoryCommand (args: string[]): Promise<number> {
  const { values } = parseArgs({ args, options: { ...TARGET_OPTIONS, json: { type: 'boolean' } } })
  const p = await callApi(apiAddress(values), '/v1/memory') as MemoryPayload
  process.stdout.write((values.json === true ? JSON.stringify(p, null, 2) : renderMemory(p)) + '\n')
  return 0
}
