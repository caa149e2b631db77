/**
 * `starling demo`: a local cluster on this machine. It writes a configuration per host (keys,
 * loopback addresses, simulated VMs with varied load patterns), starts one real agent process per
 * host, and shows the cluster forming and its loads live until stopped (Ctrl-C) or --duration.
 * The agents are the same program systemd runs; only the driver and sampler are simulated.
 */
import { parseArgs } from 'node:util'
import { spawn, type ChildProcess } from 'node:child_process'
import { mkdtemp, mkdir, writeFile, rm } from 'node:fs/promises'
import { openSync, closeSync } from 'node:fs'
import { createServer } from 'node:net'
import { createSocket } from 'node:dgram'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { Prng } from '../core/index.js'
import { loadOrCreateKeyPair } from '../adapters/identity.js'
import { identityFile } from '../main.js'
import { fetchStatus, UsageError } from './client.js'
import { agentSpawnArgs } from './agent-node-args.js'
import { renderStatusTree, type StatusPayload } from './render.js'

const PATTERNS = ['sine', 'walk', 'spiky', 'constant'] as const

/** A UDP+TCP port that is free on 127.0.0.1 right now (the DHT node binds UDP, the API TCP). */
export async function freePort (): Promise<number> {
  for (let attempt = 0; attempt < 50; attempt++) {
    const port = await new Promise<number>((resolve, reject) => {
      const s = createServer()
      s.once('error', reject)
      s.listen(0, '127.0.0.1', () => {
        const a = s.address()
        s.close(() => resolve(typeof a === 'object' && a !== null ? a.port : 0))
      })
    })
    const udpFree = await new Promise<boolean>(resolve => {
      const u = createSocket('udp4')
      u.once('error', () => resolve(false))
      u.bind(port, '127.0.0.1', () => u.close(() => resolve(true)))
    })
    if (udpFree && port > 0) return port
  }
  throw new Error('no free port found on 127.0.0.1')
}

export interface DemoHost {
  name: string
  configFile: string
  stateDir: string
  apiListen: string
  /** The control socket (changes: migrate, drain, ...), in the host's state directory. */
  apiSocket: string
  address: string
  publicKey: string
  logFile: string
}

/**
 * Writes the configurations of an n-host local cluster under `dir` (used by the demo, the
 * integration tests and the mesh benchmark).
 */
export async function writeLocalCluster (dir: string, n: number, opts: { seed?: number, vmsPerHost?: number, core?: Record<string, unknown>, mesh?: Record<string, unknown>, sampleIntervalMs?: number } = {}): Promise<DemoHost[]> {
  const prng = new Prng(opts.seed ?? 1)
  const hosts: DemoHost[] = []
  for (let i = 1; i <= n; i++) {
    const name = `host${i}`
    const stateDir = path.join(dir, name)
    await mkdir(stateDir, { recursive: true })
    const kp = await loadOrCreateKeyPair(identityFile(stateDir))
    const port = await freePort()
    const apiPort = await freePort()
    hosts.push({
      name, stateDir, configFile: path.join(dir, `${name}.json`), logFile: path.join(dir, `${name}.log`),
      apiListen: `127.0.0.1:${apiPort}`, apiSocket: path.join(stateDir, 'control.sock'), address: `127.0.0.1:${port}`, publicKey: Buffer.from(kp.publicKey).toString('hex')
    })
  }
  const members = hosts.map(h => ({ name: h.name, publicKey: h.publicKey, address: h.address }))
  const secret = Buffer.from(Array.from({ length: 24 }, () => prng.int(256))).toString('hex')
  for (const [i, h] of hosts.entries()) {
    const vmCount = opts.vmsPerHost ?? 2 + prng.int(3)
    const vms = Array.from({ length: vmCount }, (_, j) => ({
      id: `vm-${h.name.slice(4)}-${j + 1}`,
      vcpus: 1 + prng.int(4),
      memMiB: 1024 * (1 + prng.int(8)),
      pattern: PATTERNS[prng.int(PATTERNS.length)] as string,
      cpuMean: Math.round((0.2 + prng.next() * 0.6) * 100) / 100
    }))
    const config = {
      cluster: { name: 'demo', secret, members },
      node: { name: h.name, listen: h.address, stateDir: h.stateDir, apiListen: h.apiListen, apiSocket: h.apiSocket },
      driver: { kind: 'sim', vms },
      sampler: { kind: 'driver', intervalMs: opts.sampleIntervalMs ?? 1000, capacity: { cpuCores: 8 * (1 + (i % 3)), cpuMipsPerCore: 1000, memMiB: 32768 * (1 + (i % 2)), netMbps: 10000 } },
      core: opts.core ?? { reportIntervalTicks: 10, reportPullIntervalTicks: 10, pushPullIntervalTicks: 50 },
      ...(opts.mesh !== undefined ? { mesh: opts.mesh } : {}),
      log: { level: 'info' }
    }
    await writeFile(h.configFile, JSON.stringify(config, null, 2))
  }
  return hosts
}

/** The compiled CLI entry point (this file's sibling). */
export function cliEntry (): string {
  return path.join(path.dirname(fileURLToPath(import.meta.url)), 'starling.js')
}

/** Start one agent process (with the daemon's Node flags, agent-node-args.ts), its stdout and stderr appended to h.logFile. */
export function startAgent (h: DemoHost, entry = cliEntry()): ChildProcess {
  const fd = openSync(h.logFile, 'a')
  const child = spawn(process.execPath, agentSpawnArgs(entry, ['agent', '--config', h.configFile]), { stdio: ['ignore', fd, fd] })
  closeSync(fd)
  return child
}

async function stopAll (children: ChildProcess[], timeoutMs = 5000): Promise<void> {
  await Promise.all(children.map(async c => {
    if (c.exitCode !== null || c.signalCode !== null) return
    const done = new Promise<void>(resolve => c.once('exit', () => resolve()))
    c.kill('SIGTERM')
    const t = setTimeout(() => c.kill('SIGKILL'), timeoutMs)
    await done
    clearTimeout(t)
  }))
}

export async function runDemo (args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      hosts: { type: 'string', default: '5' },
      duration: { type: 'string' },
      seed: { type: 'string', default: '1' },
      keep: { type: 'boolean' },
      json: { type: 'boolean' }
    }
  })
  const n = Number(values.hosts)
  if (!Number.isInteger(n) || n < 1 || n > 50) throw new UsageError('--hosts must be an integer from 1 to 50')
  const durationS = values.duration === undefined ? Infinity : Number(values.duration)
  if (!(durationS > 0)) throw new UsageError('--duration must be a positive number of seconds')
  const dir = await mkdtemp(path.join(os.tmpdir(), 'starling-demo-'))
  const hosts = await writeLocalCluster(dir, n, { seed: Number(values.seed) })
  const t0 = Date.now()
  const children = hosts.map(h => startAgent(h))
  const tty = process.stdout.isTTY === true && values.json !== true
  let stopping = false
  const stop = (): void => { stopping = true }
  process.once('SIGINT', stop)
  process.once('SIGTERM', stop)
  process.stderr.write(`demo: ${n} agents started in ${dir} (logs: <host>.log); Ctrl-C stops them\n`)
  let formedAtMs: number | null = null
  let turn = 0
  while (!stopping && Date.now() - t0 < durationS * 1000) {
    await new Promise(resolve => setTimeout(resolve, 1000))
    const h = hosts[turn++ % hosts.length] as DemoHost
    let s: StatusPayload | null = null
    try { s = await fetchStatus(h.apiListen, 900) } catch { s = null }
    const elapsed = ((Date.now() - t0) / 1000).toFixed(1)
    const alive = s?.members.filter(m => m.state === 'alive').length ?? 0
    if (formedAtMs === null && alive === n) formedAtMs = Date.now() - t0
    const exited = children.filter(c => c.exitCode !== null).length
    const header = `t=${elapsed}s  agents ${n - exited}/${n} running  ` +
      (formedAtMs === null ? `forming: ${alive}/${n} alive in ${h.name}'s view` : `cluster formed in ${(formedAtMs / 1000).toFixed(1)} s`)
    if (values.json === true) {
      process.stdout.write(JSON.stringify({ t: Number(elapsed), view: h.name, alive, formedAtMs, status: s }) + '\n')
    } else {
      const body = s === null ? `(${h.name} not answering yet)` : renderStatusTree(s)
      process.stdout.write((tty ? '\x1b[2J\x1b[H' : '\n') + header + '\n' + body + '\n')
    }
  }
  process.stderr.write('demo: stopping agents\n')
  await stopAll(children)
  if (values.keep !== true) await rm(dir, { recursive: true, force: true })
  return 0
}
