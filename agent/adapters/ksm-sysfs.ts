/**
 * The kernel's same-page merging, driven through /sys/kernel/mm/ksm (root only): run,
 * pages_to_scan, sleep_millisecs and, on kernels with the KSM advisor (Linux >= 6.7),
 * advisor_mode, advisor_max_cpu, advisor_min_pages_to_scan, advisor_max_pages_to_scan and
 * advisor_target_scan_time. It also finds ksmd's CPU time (/proc/PID/stat of the kernel thread).
 *
 * The settings found at the first write are kept, and restore() puts them back (the agent calls it
 * when it stops, so that the operator's KSM settings outlive it). With `stateFile` (in the agent's
 * state directory) they also outlive a crash: they are written there (atomically) before the
 * first change, the file goes once they are restored, and recover() at the next start puts back
 * what a run that never stopped cleanly left in it. While the file exists, the values in it are the
 * operator's: a run that finds it does not take the kernel's current values (the crashed run's)
 * for the originals.
 */
import fsp from 'node:fs/promises'
import { DriverError } from '../lib/errors.js'
import { writeFileAtomically } from '../lib/atomic-file.js'

export interface KsmSettings {
  run: 0 | 1
  pagesToScan?: number
  sleepMs?: number
  /** Hand the scan rate to the kernel's advisor (scan-time mode) with these bounds; null: advisor off. */
  advisor?: { maxCpuPercent: number, minPages: number, maxPages: number, targetScanS: number } | null
}

const SETTING_FILES = ['run', 'pages_to_scan', 'sleep_millisecs', 'advisor_mode', 'advisor_max_cpu', 'advisor_min_pages_to_scan', 'advisor_max_pages_to_scan', 'advisor_target_scan_time'] as const

export interface KsmSysfsInit {
  /** Root of /proc and /sys (tests point it at a copy). @default '' */
  root?: string
  /** Where the operator's settings are kept while the agent has changed them (survives a crash); none: in memory only. */
  stateFile?: string
}

/** What recover() found and did. */
export interface KsmRecovery {
  /** A previous run's saved settings were found and written back (those that could be: see failed). */
  restored: boolean
  /** The settings written back, file -> value. */
  settings: Record<string, string>
  /** Files that could not be written back, or why the state file could not be used. */
  failed: string[]
}

const STATE_VERSION = 1

export class KsmSysfs {
  private readonly dir: string
  private readonly root: string
  private saved: Map<string, string> | null = null
  private ksmdPid: number | null | undefined = undefined
  /** Last value written per file: a file is written only when its value changes. */
  private readonly written = new Map<string, string>()

  private readonly stateFile: string | null

  constructor (init: KsmSysfsInit = {}) {
    this.root = init.root ?? ''
    this.dir = `${this.root}/sys/kernel/mm/ksm`
    this.stateFile = init.stateFile ?? null
  }

  /** The settings a previous run saved and did not restore; null when there are none. Rejects when the file is unusable. */
  private async loadSaved (): Promise<Map<string, string> | null> {
    if (this.stateFile === null) return null
    let text: string
    try { text = await fsp.readFile(this.stateFile, 'utf8') } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null
      throw new DriverError('DRIVER_FAILED', `KSM: cannot read the saved settings ${this.stateFile}: ${(err as Error).message}`, { cause: err })
    }
    let doc: unknown
    try { doc = JSON.parse(text) } catch { doc = null }
    const settings = (doc as { version?: unknown, settings?: unknown } | null)?.settings
    if ((doc as { version?: unknown } | null)?.version !== STATE_VERSION || typeof settings !== 'object' || settings === null ||
      !Object.entries(settings).every(([k, v]) => (SETTING_FILES as readonly string[]).includes(k) && typeof v === 'string' && /^[a-z0-9-]{1,32}$/.test(v))) {
      throw new DriverError('DRIVER_FAILED', `KSM: the saved settings ${this.stateFile} are not a version ${STATE_VERSION} settings file (corrupt?); remove it once /sys/kernel/mm/ksm is as it should be`)
    }
    return new Map(Object.entries(settings as Record<string, string>))
  }

  /** The operator's settings: those a crashed run saved, else the kernel's now, saved before anything changes. */
  private async originals (): Promise<Map<string, string>> {
    const kept = await this.loadSaved()
    if (kept !== null) return kept
    const now = await this.read()
    if (this.stateFile !== null) {
      try {
        await writeFileAtomically(this.stateFile, JSON.stringify({ version: STATE_VERSION, settings: Object.fromEntries(now) }) + '\n')
      } catch (err) {
        throw new DriverError('DRIVER_FAILED', `KSM: cannot save the host's settings to ${this.stateFile} before changing them (nothing changed): ${(err as Error).message}`, { cause: err })
      }
    }
    return now
  }

  /**
   * At start: puts back the settings a previous run saved and never restored (it crashed, or was
   * killed), then forgets them. Never throws; a state file it cannot use is left in place and
   * reported in `failed`.
   */
  async recover (): Promise<KsmRecovery> {
    let kept: Map<string, string> | null
    try { kept = await this.loadSaved() } catch (err) { return { restored: false, settings: {}, failed: [(err as Error).message] } }
    if (kept === null) return { restored: false, settings: {}, failed: [] }
    this.saved = kept
    const failed = await this.restore()
    return { restored: true, settings: Object.fromEntries(kept), failed }
  }

  /** The kernel has KSM. */
  async available (): Promise<boolean> {
    try { await fsp.access(`${this.dir}/run`); return true } catch { return false }
  }

  /** The kernel has the KSM advisor. */
  async hasAdvisor (): Promise<boolean> {
    try { await fsp.access(`${this.dir}/advisor_mode`); return true } catch { return false }
  }

  /** The settings now (each file that exists). */
  async read (): Promise<Map<string, string>> {
    const out = new Map<string, string>()
    for (const f of SETTING_FILES) {
      try {
        let v = (await fsp.readFile(`${this.dir}/${f}`, 'utf8')).trim()
        // advisor_mode reads "[none] scan-time": the bracketed one is in force.
        if (f === 'advisor_mode') v = /\[([^\]]+)\]/.exec(v)?.[1] ?? v
        out.set(f, v)
      } catch { /* not in this kernel */ }
    }
    return out
  }

  private async put (file: string, value: string): Promise<void> {
    if (this.written.get(file) === value) return
    try {
      await fsp.writeFile(`${this.dir}/${file}`, value)
    } catch (err) {
      throw new DriverError('DRIVER_FAILED', `KSM: cannot write ${value} to /sys/kernel/mm/ksm/${file}: ${(err as Error).message}`, { cause: err })
    }
    this.written.set(file, value)
  }

  /** Applies the settings (only the files whose value changed since the last write). */
  async apply (s: KsmSettings): Promise<void> {
    if (this.saved === null) this.saved = await this.originals()
    if (s.advisor !== undefined) {
      if (s.advisor === null) {
        if (this.saved.has('advisor_mode')) await this.put('advisor_mode', 'none')
      } else {
        if (!this.saved.has('advisor_mode')) throw new DriverError('DRIVER_FAILED', 'KSM: this kernel has no KSM advisor (/sys/kernel/mm/ksm/advisor_mode)')
        await this.put('advisor_max_cpu', String(Math.max(1, Math.round(s.advisor.maxCpuPercent))))
        // The kernel refuses a minimum above the maximum (and the reverse): when the minimum is
        // refused, the maximum goes first.
        try {
          await this.put('advisor_min_pages_to_scan', String(Math.round(s.advisor.minPages)))
          await this.put('advisor_max_pages_to_scan', String(Math.round(s.advisor.maxPages)))
        } catch {
          await this.put('advisor_max_pages_to_scan', String(Math.round(s.advisor.maxPages)))
          await this.put('advisor_min_pages_to_scan', String(Math.round(s.advisor.minPages)))
        }
        await this.put('advisor_target_scan_time', String(Math.round(s.advisor.targetScanS)))
        await this.put('advisor_mode', 'scan-time')
      }
    }
    if (s.advisor == null) {
      if (s.pagesToScan !== undefined) await this.put('pages_to_scan', String(Math.round(s.pagesToScan)))
      if (s.sleepMs !== undefined) await this.put('sleep_millisecs', String(Math.round(s.sleepMs)))
    }
    await this.put('run', String(s.run))
  }

  /**
   * Puts back the settings found before the first write, and then forgets them (the state file
   * goes, unless a write failed: the next start tries again). Never throws; returns what failed.
   */
  async restore (): Promise<string[]> {
    const saved = this.saved
    if (saved === null) return []
    const failed: string[] = []
    // The advisor first (it owns pages_to_scan while on), run last.
    const order = ['advisor_mode', 'advisor_max_cpu', 'advisor_min_pages_to_scan', 'advisor_max_pages_to_scan', 'advisor_target_scan_time', 'pages_to_scan', 'sleep_millisecs', 'run']
    for (const f of order) {
      const v = saved.get(f)
      if (v === undefined) continue
      try { await fsp.writeFile(`${this.dir}/${f}`, v) } catch (err) { failed.push(`${f}: ${(err as Error).message}`) }
    }
    if (failed.length === 0 && this.stateFile !== null) {
      try { await fsp.unlink(this.stateFile) } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') failed.push(`${this.stateFile}: ${(err as Error).message}`)
      }
    }
    this.saved = null
    this.written.clear()
    return failed
  }

  /** ksmd's CPU time so far, s (utime + stime of the kernel thread); null when there is no ksmd. */
  async ksmdCpuSeconds (): Promise<number | null> {
    if (this.ksmdPid === undefined) this.ksmdPid = await this.findKsmd()
    if (this.ksmdPid === null) return null
    try {
      const stat = await fsp.readFile(`${this.root}/proc/${this.ksmdPid}/stat`, 'utf8')
      // Fields after the command name (which is in parentheses): utime is the 14th field, stime the 15th.
      const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
      const ticks = Number(rest[11]) + Number(rest[12])
      return Number.isFinite(ticks) ? ticks / 100 : null
    } catch {
      this.ksmdPid = undefined
      return null
    }
  }

  private async findKsmd (): Promise<number | null> {
    let names: string[]
    try { names = await fsp.readdir(`${this.root}/proc`) } catch { return null }
    for (const d of names) {
      if (!/^\d+$/.test(d)) continue
      try { if ((await fsp.readFile(`${this.root}/proc/${d}/comm`, 'utf8')).trim() === 'ksmd') return Number(d) } catch { /* gone */ }
    }
    return null
  }
}
