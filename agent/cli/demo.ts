/**
 * `starling demo`: a local cluster on this machine. It writes a configuration per host (keys,
 * loopback addresses, simulated VMs), starts one real agent process per host and plays a
 * scenario (demo-scenario.ts: a load surge and the migrations that relieve it, quiet hours and
 * consolidation, kill -9 of a host and the HA restarts, the host rejoining), narrated as a
 * timeline of events beside the cluster tree; it ends by printing what happened and how long
 * each step took (exit 1 when a step was not seen: a smoke test). On a TTY the view redraws in
 * place; otherwise only events are printed. Every agent serves the web page; the demo prints its
 * address. The agents are the same program systemd runs; only the driver, the sampler and the
 * watchdog devices are simulated.
 */
import { parseArgs } from 'node:util'
import { spawn, type ChildProcess } from 'node:child_process'
import { mkdtemp, mkdir, writeFile, rm } from 'node:fs/promises'
import { openSync, closeSync, readFileSync } from 'node:fs'
import { createServer } from 'node:net'
import { createSocket } from 'node:dgram'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { Prng } from '../core/index.js'
import { loadOrCreateKeyPair } from '../adapters/identity.js'
import { identityFile } from '../main.js'
import { UsageError } from './client.js'
import { agentSpawnArgs } from './agent-node-args.js'
import { renderStatusTree, type StatusPayload } from './render.js'
import { FifoWatchdog } from '../sim/fifo-watchdog.js'
import { DEMO_WATCHDOG_SEC, SCENARIOS, Watcher, prepareScenario, renderSummary, resetSimHost, runScenario, type DemoEvent, type ScenarioName, type ScenarioResult } from './demo-scenario.js'

const PATTERNS = ['sine', 'walk', 'spiky', 'constant'] as const

/**
 * The kernel's ephemeral port range (net.ipv4.ip_local_port_range): ports it hands out by itself
 * to outgoing connections and to binds of port 0.
 */
function ephemeralRange (): [number, number] {
  try {
    const [lo, hi] = readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/).map(Number)
    if (lo !== undefined && hi !== undefined && lo > 0 && hi >= lo) return [lo, hi]
  } catch { /* not Linux */ }
  return [32768, 60999]
}

/** Ports freePort has handed out in this process: free until the agent that gets one binds it. */
const handedOut = new Set<number>()

/**
 * A UDP+TCP port that is free on 127.0.0.1 right now (the DHT node binds UDP, the API TCP), drawn
 * outside the ephemeral range: a port from inside it can be handed by the kernel to any outgoing
 * connection (a virsh or libvirt client, a migration stream) between this check and the agent's
 * bind, which then fails with EADDRINUSE (seen in a clean-clone run). Never the same port twice in
 * one process: a port is still free when it is drawn again before its agent starts, and two
 * draws from about 27,000 ports meet often enough (120 draws for a 60-host cluster: about one
 * cluster in four had two members on one address, which the configuration refuses).
 */
export async function freePort (): Promise<number> {
  const [lo, hi] = ephemeralRange()
  const ranges = ([[10000, lo - 1], [hi + 1, 65535]] as Array<[number, number]>).filter(([a, b]) => b - a >= 1000)
  const span = ranges.reduce((n, [a, b]) => n + b - a + 1, 0)
  const free = async (port: number): Promise<boolean> => {
    const tcp = await new Promise<boolean>(resolve => {
      const s = createServer()
      s.once('error', () => resolve(false))
      s.listen(port, '127.0.0.1', () => s.close(() => resolve(true)))
    })
    if (!tcp) return false
    return await new Promise<boolean>(resolve => {
      const u = createSocket('udp4')
      u.once('error', () => resolve(false))
      u.bind(port, '127.0.0.1', () => u.close(() => resolve(true)))
    })
  }
  for (let attempt = 0; attempt < 200 && span > 0; attempt++) {
    let k = Math.floor(Math.random() * span)
    let port = 0
    for (const [a, b] of ranges) { if (k <= b - a) { port = a + k; break } k -= b - a + 1 }
    if (port > 0 && !handedOut.has(port) && await free(port)) { handedOut.add(port); return port }
  }
  // No room outside the ephemeral range: let the kernel choose.
  for (let attempt = 0; attempt < 50; attempt++) {
    const port = await new Promise<number>((resolve, reject) => {
      const s = createServer()
      s.once('error', reject)
      s.listen(0, '127.0.0.1', () => {
        const a = s.address()
        s.close(() => resolve(typeof a === 'object' && a !== null ? a.port : 0))
      })
    })
    if (port > 0 && !handedOut.has(port) && await free(port)) { handedOut.add(port); return port }
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
      scenario: { type: 'string', default: 'all' },
      'surge-at': { type: 'string' },
      'quiet-at': { type: 'string' },
      seed: { type: 'string', default: '1' },
      keep: { type: 'boolean' },
      json: { type: 'boolean' }
    }
  })
  const n = Number(values.hosts)
  if (!Number.isInteger(n) || n < 1 || n > 50) throw new UsageError('--hosts must be an integer from 1 to 50')
  const durationS = values.duration === undefined ? Infinity : Number(values.duration)
  if (!(durationS > 0)) throw new UsageError('--duration must be a positive number of seconds')
  const scenario = values.scenario as ScenarioName
  if (!SCENARIOS.includes(scenario)) throw new UsageError(`--scenario must be one of ${SCENARIOS.join(', ')}`)
  const at = (k: 'surge-at' | 'quiet-at'): number | undefined => {
    const v = values[k]
    if (v === undefined) return undefined
    const x = Number(v)
    if (!(x >= 0)) throw new UsageError(`--${k} must be a number of seconds >= 0`)
    return x
  }
  const surgeAtS = at('surge-at')
  const quietAtS = at('quiet-at')
  const dir = await mkdtemp(path.join(os.tmpdir(), 'starling-demo-'))
  const hosts = await writeLocalCluster(dir, n, { seed: Number(values.seed) })
  const plan = scenario === 'none' ? null : await prepareScenario(dir, hosts, scenario, { ...(surgeAtS !== undefined ? { surgeAtS } : {}), ...(quietAtS !== undefined ? { quietAtS } : {}) })
  const tty = process.stdout.isTTY === true && values.json !== true
  const children = new Map<string, ChildProcess>()
  // The emulated watchdog of each host: a reset kills the host's agent (if it still runs).
  const watchdogs: FifoWatchdog[] = []
  for (const [name, file] of Object.entries(plan?.watchdogs ?? {})) {
    const w = new FifoWatchdog(file, DEMO_WATCHDOG_SEC * 1000, () => {
      const c = children.get(name)
      if (c !== undefined && c.exitCode === null && c.signalCode === null) c.kill('SIGKILL')
    })
    w.start()
    watchdogs.push(w)
  }
  const t0 = Date.now()
  for (const h of hosts) children.set(h.name, startAgent(h))
  let stopping = false
  const stop = (): void => { stopping = true }
  process.once('SIGINT', stop)
  process.once('SIGTERM', stop)
  const going = (): boolean => !stopping && Date.now() - t0 < durationS * 1000
  const say = (line: string): void => { process.stderr.write(`demo: ${line}\n`) }
  say(`${n} agents started in ${dir} (logs: <host>.log); Ctrl-C stops them`)
  say(`web view: http://${hosts[0]?.apiListen ?? '?'}/ (every agent serves it: ${hosts.map(h => `http://${h.apiListen}/`).join(' ')})`)
  say(`scenario: ${scenario}${plan?.surgeAtS != null ? `; surge at ${plan.surgeAtS} s` : ''}${plan?.quietAtS != null ? `; quiet hours at ${plan.quietAtS} s` : ''}`)
  if (plan?.haNote != null) say(plan.haNote)
  if (plan?.ha === true) say('virtual IPs db and web follow db-1 and web-1 on a simulated interface (real hosts use iproute2 and arping: npm run bench:vip)')

  const timeline: string[] = []
  const fmt = (e: DemoEvent): string => `${(e.tMs / 1000).toFixed(1).padStart(6)} s  ${e.text}`
  const onEvent = (e: DemoEvent): void => {
    if (values.json === true) { process.stdout.write(JSON.stringify({ event: e }) + '\n'); return }
    timeline.push(fmt(e))
    if (!tty) process.stdout.write(fmt(e) + '\n')
  }
  const running = (name: string): boolean => { const c = children.get(name); return c !== undefined && c.exitCode === null && c.signalCode === null }
  const watcher = new Watcher(hosts, t0, running, onEvent, plan?.threshold)
  // On a TTY: the cluster tree (the observer's view) beside the timeline, redrawn in place.
  const draw = (): void => {
    const s = watcher.status() as StatusPayload | null
    const elapsed = ((Date.now() - t0) / 1000).toFixed(1)
    const left = [`t=${elapsed}s  scenario ${scenario}  web http://${hosts[0]?.apiListen ?? '?'}/`, ...(s === null ? ['(no agent answering yet)'] : renderStatusTree(s).split('\n'))]
    const cols = process.stdout.columns ?? 160
    const rows = process.stdout.rows ?? 40
    const lw = Math.min(112, Math.max(40, cols - 60))
    const right = ['timeline', ...timeline.slice(-(rows - 3))]
    const out: string[] = []
    for (let i = 0; i < Math.min(rows - 1, Math.max(left.length, right.length)); i++) {
      const l = (left[i] ?? '').slice(0, lw).padEnd(lw)
      out.push(`${l} │ ${(right[i] ?? '').slice(0, Math.max(0, cols - lw - 3))}`)
    }
    process.stdout.write('\x1b[H\x1b[2J' + out.join('\n') + '\n')
  }
  const redraw = tty ? setInterval(draw, 1000) : null
  let result: ScenarioResult | null = null
  if (plan !== null) {
    result = await runScenario(plan, watcher, hosts, {
      t0,
      going,
      kill: async name => {
        const c = children.get(name)
        if (c !== undefined && c.exitCode === null) {
          const gone = new Promise<void>(resolve => c.once('exit', () => resolve()))
          c.kill('SIGKILL')
          await gone
        }
        const h = hosts.find(x => x.name === name)
        if (h !== undefined) await resetSimHost(h)
      },
      start: name => {
        const h = hosts.find(x => x.name === name)
        if (h !== undefined) children.set(name, startAgent(h))
      }
    })
  }
  // With no scenario, or after it on a TTY without --duration: the live view until Ctrl-C.
  while (going() && (plan === null || (tty && durationS === Infinity) || durationS !== Infinity)) {
    await watcher.poll()
    if (plan === null && !tty && values.json !== true) {
      const s = watcher.status() as StatusPayload | null
      if (s !== null) process.stdout.write('\n' + renderStatusTree(s) + '\n')
    }
    await new Promise(resolve => setTimeout(resolve, 1000))
  }
  if (redraw !== null) { clearInterval(redraw); draw() }
  watcher.stop()
  if (result !== null) {
    if (values.json === true) process.stdout.write(JSON.stringify({ result }) + '\n')
    else process.stdout.write(renderSummary(result) + '\n')
  }
  say('stopping agents')
  await stopAll([...children.values()])
  for (const w of watchdogs) w.stop()
  if (values.keep !== true) await rm(dir, { recursive: true, force: true })
  else say(`kept ${dir}`)
  return result === null || result.ok ? 0 : 1
}
