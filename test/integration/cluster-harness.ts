/**
 * Helpers for tests and benchmarks that run real agent processes on loopback: write the
 * configurations, start and kill processes, and poll their local APIs.
 */
import { existsSync } from 'node:fs'
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { execFile, type ChildProcess } from 'node:child_process'
import { cliEntry, startAgent, writeLocalCluster, type DemoHost } from '../../agent/cli/demo.js'
import { fetchStatus } from '../../agent/cli/client.js'
import type { StatusPayload } from '../../agent/api/payloads.js'
import { poll } from '../lib/wait.js'

export type { DemoHost }

/** The compiled CLI; the test command builds it first. Fails loudly when missing. */
export function compiledCli (): string {
  // Tests import the .ts sources; the agent processes run the compiled program under dist/.
  const here = cliEntry()
  const compiled = here.includes(`${path.sep}dist${path.sep}`)
    ? here
    : path.join(path.resolve(path.dirname(here), '..', '..'), 'dist', 'agent', 'cli', 'starling.js')
  if (!existsSync(compiled)) throw new Error(`compiled agent missing at ${compiled}: run \`npm run build\` (npm test does it)`)
  return compiled
}

export class LocalCluster {
  readonly procs = new Map<string, ChildProcess>()
  private constructor (readonly dir: string, readonly hosts: DemoHost[]) {}

  static async create (n: number, opts: { seed?: number, core?: Record<string, unknown>, mesh?: Record<string, unknown>, sampleIntervalMs?: number } = {}): Promise<LocalCluster> {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'starling-it-'))
    const hosts = await writeLocalCluster(dir, n, opts)
    return new LocalCluster(dir, hosts)
  }

  host (name: string): DemoHost {
    const h = this.hosts.find(x => x.name === name)
    if (h === undefined) throw new Error(`no host ${name}`)
    return h
  }

  start (name: string): ChildProcess {
    const p = startAgent(this.host(name), compiledCli())
    this.procs.set(name, p)
    return p
  }

  startAll (): void { for (const h of this.hosts) this.start(h.name) }

  kill9 (name: string): void {
    const p = this.procs.get(name)
    if (p !== undefined && p.exitCode === null) p.kill('SIGKILL')
  }

  async status (name: string): Promise<StatusPayload | null> {
    try { return await fetchStatus(this.host(name).apiListen, 1500) } catch { return null }
  }

  /** Poll until pred holds for every listed host's view; returns the elapsed ms, or null on timeout. */
  async waitViews (names: string[], pred: (s: StatusPayload) => boolean, timeoutMs: number, pollMs = 100): Promise<number | null> {
    return await poll(async () => (await Promise.all(names.map(async n => await this.status(n)))).every(v => v !== null && pred(v)), timeoutMs, pollMs)
  }

  /**
   * For a failed wait: each agent's view in a line (the members it does not hold alive, and in
   * what state; its open connections and active view), and the last warnings and errors of the
   * agents' logs, so that a failure that happens once in a clean-clone run can be understood.
   */
  async postMortem (names: string[] = this.hosts.map(h => h.name), logLines = 8): Promise<string> {
    const out: string[] = []
    for (const n of names) {
      const s = await this.status(n)
      const p = this.procs.get(n)
      const proc = p === undefined ? 'not started' : p.exitCode !== null || p.signalCode !== null ? `exited (${p.signalCode ?? `code ${String(p.exitCode)}`})` : 'running'
      if (s === null) { out.push(`${n}: no answer from its API (process ${proc})`); continue }
      const others = s.members.filter(m => m.state !== 'alive').map(m => `${m.name} ${m.state}`)
      const missing = names.filter(x => x !== n && !s.members.some(m => m.name === x))
      out.push(`${n}: ${aliveCount(s)} alive${others.length > 0 ? `; ${others.join(', ')}` : ''}${missing.length > 0 ? `; unknown: ${missing.join(', ')}` : ''}; mesh open ${String(s.mesh?.open ?? '-')}, view ${String(s.mesh?.active ?? '-')} (process ${proc})`)
    }
    for (const n of names) {
      const log = await readFile(this.host(n).logFile, 'utf8').catch(() => '')
      const bad = log.split('\n').filter(l => /"level":"(warn|error)"/.test(l)).slice(-logLines)
      if (bad.length > 0) out.push(`${n} log, last warnings:\n  ${bad.map(l => l.slice(0, 300)).join('\n  ')}`)
    }
    return out.join('\n')
  }

  async stop (): Promise<void> {
    await Promise.all([...this.procs.values()].map(async p => {
      if (p.exitCode !== null || p.signalCode !== null) return
      const done = new Promise<void>(resolve => p.once('exit', () => resolve()))
      p.kill('SIGTERM')
      const t = setTimeout(() => p.kill('SIGKILL'), 5000)
      await done
      clearTimeout(t)
    }))
    // STARLING_TEST_KEEP=1 keeps the agents' state and logs for a post-mortem (the path is printed).
    if (process.env.STARLING_TEST_KEEP === '1') console.error(`# kept the cluster's state and logs in ${this.dir}`)
    else await rm(this.dir, { recursive: true, force: true })
  }
}

export function aliveCount (s: StatusPayload): number {
  return s.members.filter(m => m.state === 'alive').length
}

export function stateOf (s: StatusPayload, name: string): string | undefined {
  return s.members.find(m => m.name === name)?.state
}

/** What `starling ARGS` printed (stdout and stderr) and its exit code, run as an operator would. */
export interface CliRun { code: number, out: string }
export async function runCli (args: string[], timeoutMs = 120_000): Promise<CliRun> {
  return await new Promise(resolve => {
    execFile(process.execPath, [compiledCli(), ...args], { timeout: timeoutMs }, (err, stdout, stderr) => {
      const code = err === null ? 0 : typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : 1
      resolve({ code, out: stdout + stderr })
    })
  })
}
