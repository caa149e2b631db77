/**
 * This host's memory from the kernel: /proc/meminfo (MemTotal, MemAvailable),
 * /proc/pressure/memory (PSI, kernel >= 4.20 with CONFIG_PSI) and /sys/kernel/mm/ksm. Each file
 * that is missing or unreadable leaves its part null; only /proc/meminfo is required.
 */
import fsp from 'node:fs/promises'
import { DriverError } from '../lib/errors.js'
import type { HostMemoryFacts } from '../ports/memory.js'

export interface HostMemoryInit {
  /** Root of /proc and /sys (tests point it at a copy). @default '' */
  root?: string
  /** Page size of the KSM counters, bytes. @default 4096 */
  pageBytes?: number
  /** ksmd's CPU time so far, s (KsmSysfs.ksmdCpuSeconds); without it the KSM facts carry none. */
  ksmdCpuSeconds?: () => Promise<number | null>
}

/** Parses /proc/meminfo into kB values by key. */
export function parseMeminfo (text: string): Map<string, number> {
  const out = new Map<string, number>()
  for (const line of text.split('\n')) {
    const m = /^([A-Za-z0-9_()]+):\s+(\d+)/.exec(line)
    if (m !== null) out.set(m[1] as string, Number(m[2]))
  }
  return out
}

/** Parses a PSI file: avg10 of its "some" and "full" lines, percent. */
export function parsePressure (text: string): { some10: number | null, full10: number | null } {
  const get = (kind: string): number | null => {
    const m = new RegExp(`^${kind} .*avg10=([0-9.]+)`, 'm').exec(text)
    return m === null ? null : Number(m[1])
  }
  return { some10: get('some'), full10: get('full') }
}

async function readNum (file: string): Promise<number | null> {
  try {
    const v = Number((await fsp.readFile(file, 'utf8')).trim())
    return Number.isFinite(v) ? v : null
  } catch { return null }
}

export function hostMemory (init: HostMemoryInit = {}): { read: (signal?: AbortSignal) => Promise<HostMemoryFacts> } {
  const root = init.root ?? ''
  const page = init.pageBytes ?? 4096
  return {
    read: async () => {
      let mi: Map<string, number>
      try {
        mi = parseMeminfo(await fsp.readFile(`${root}/proc/meminfo`, 'utf8'))
      } catch (err) {
        throw new DriverError('DRIVER_FAILED', `host memory: cannot read /proc/meminfo: ${(err as Error).message}`, { cause: err })
      }
      const total = mi.get('MemTotal')
      const avail = mi.get('MemAvailable') ?? mi.get('MemFree')
      if (total === undefined || avail === undefined) throw new DriverError('DRIVER_FAILED', 'host memory: /proc/meminfo has no MemTotal or MemAvailable')
      let psi: { some10: number | null, full10: number | null } = { some10: null, full10: null }
      try { psi = parsePressure(await fsp.readFile(`${root}/proc/pressure/memory`, 'utf8')) } catch { /* no PSI */ }
      const ksmDir = `${root}/sys/kernel/mm/ksm`
      const [run, shared, sharing, zero, scans, profit, toScan, sleep] = await Promise.all(['run', 'pages_shared', 'pages_sharing', 'ksm_zero_pages', 'full_scans', 'general_profit', 'pages_to_scan', 'sleep_millisecs'].map(async f => await readNum(`${ksmDir}/${f}`)))
      let advisor: string | null = null
      try { const a = (await fsp.readFile(`${ksmDir}/advisor_mode`, 'utf8')).trim(); advisor = /\[([^\]]+)\]/.exec(a)?.[1] ?? a } catch { /* no advisor */ }
      const ksm = run == null || shared == null || sharing == null
        ? null
        : {
            run,
            pagesShared: shared,
            pagesSharing: sharing,
            zeroPages: zero ?? 0,
            savedMiB: (sharing + (zero ?? 0)) * page / 1048576,
            fullScans: scans ?? 0,
            netSavedMiB: profit == null ? null : profit / 1048576,
            pagesToScan: toScan ?? null,
            sleepMs: sleep ?? null,
            advisor,
            ksmdCpuS: init.ksmdCpuSeconds === undefined ? null : await init.ksmdCpuSeconds()
          }
      return { totalMiB: total / 1024, availableMiB: avail / 1024, pressureSome10: psi.some10, pressureFull10: psi.full10, ksm }
    }
  }
}
