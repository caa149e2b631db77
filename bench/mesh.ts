/**
 * bench:mesh — ten real agent processes on loopback.
 * Measures: start to full mesh (every agent sees all ten alive) and the CPU each agent used until
 * then, by phase (modules loaded, ready, joined), kill -9 detection (time until
 * every survivor stops considering the victim alive, and until all declare it dead) over several
 * victims, and each agent's RSS and idle CPU over a quiet window. Prints one JSON object.
 * Serf's figures on this kind of machine (ANCHORS.md): 14.4 MiB RSS, 0.085 % CPU idle.
 * The agents run with the daemon's Node flags (agent/cli/agent-node-args.ts). Env: HOSTS (10),
 * KILLS (3), SETTLE_S (20: seconds after the full mesh before the idle window), IDLE_S (20), CORE
 * (JSON of core settings over the production defaults), MESH (JSON of mesh settings, e.g.
 * MESH='{"probeDatagrams":false}'), FLOOR (1: also measure the stack's floor, 0: skip it).
 *
 * The floor, measured in the same run after the agents stop: HOSTS processes that run only Node,
 * Hyperswarm and the agent's transport with the same flags and mesh settings, and send only SWIM
 * pings (one per probe interval, answered) as datagrams (bench/lib/mesh-floor.ts). No agent can do
 * less on this stack and still detect a failure at this probe rate, so its spawn-to-connected time
 * and idle CPU are what the agent's figures are divided by (`ratioToFloor`).
 */
import { cpSync, existsSync, mkdtempSync, readFileSync } from 'node:fs'
import path from 'node:path'
import { spawn, type ChildProcess } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { availableParallelism, tmpdir } from 'node:os'
import { fileURLToPath } from 'node:url'
import { AGENT_NODE_ARGS, agentSpawnArgs } from '../agent/cli/agent-node-args.js'
import { freePort } from '../agent/cli/demo.js'
import { defaultCoreConfig } from '../agent/core/config.js'
import { LocalCluster, aliveCount, stateOf } from '../test/integration/cluster-harness.js'
import { sleep } from '../test/lib/wait.js'

const N = Number(process.env.HOSTS ?? 10)
const KILLS = Number(process.env.KILLS ?? 3)
const IDLE_S = Number(process.env.IDLE_S ?? 20)
/** Seconds between the full mesh and the idle window: V8 shrinks the heap left by start-up (a few full GCs) during the first 20 s or so. */
const SETTLE_S = Number(process.env.SETTLE_S ?? 20)
const CLK_TCK = 100
/** Core settings over the production defaults, as JSON (CORE='{"probeIntervalTicks":10}'), to measure a trade-off. */
const CORE = JSON.parse(process.env.CORE ?? '{}') as Record<string, number>
/** Mesh settings over the defaults, as JSON (MESH='{"probeDatagrams":false}'). */
const MESH = JSON.parse(process.env.MESH ?? '{}') as Record<string, unknown>
const FLOOR = process.env.FLOOR !== '0'

function median (xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b)
  const m = Math.floor(s.length / 2)
  return s.length === 0 ? NaN : s.length % 2 === 1 ? s[m] as number : ((s[m - 1] as number) + (s[m] as number)) / 2
}

interface ProcStat { cpuTicks: number, rssKiB: number, anonKiB: number, fileKiB: number, pssKiB: number }

function procStat (pid: number): ProcStat {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  const cpuTicks = Number(fields[11]) + Number(fields[12]) // utime + stime (fields 14, 15)
  const status = readFileSync(`/proc/${pid}/status`, 'utf8')
  const kib = (text: string, key: string): number => Number(new RegExp(`${key}:\\s+(\\d+)`).exec(text)?.[1] ?? NaN)
  // RSS = anonymous (heap, stacks, malloc) + file-backed (mostly the node binary's pages, shared
  // by every Node process); PSS divides shared pages among the processes that map them.
  let pssKiB = NaN
  try { pssKiB = kib(readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8'), 'Pss') } catch {}
  return { cpuTicks, rssKiB: kib(status, 'VmRSS'), anonKiB: kib(status, 'RssAnon'), fileKiB: kib(status, 'RssFile'), pssKiB }
}

const r1 = (x: number): number => Math.round(x * 10) / 10
const r3 = (x: number): number => Math.round(x * 1000) / 1000

interface RuntimeRates { ticks: number, tickWakeups: number, framesSent: number }

async function runtimeStats (cluster: LocalCluster, name: string): Promise<RuntimeRates | null> {
  const s = await cluster.status(name) as { runtime?: Partial<RuntimeRates> } | null
  const r = s?.runtime
  return r === undefined ? null : { ticks: r.ticks ?? NaN, tickWakeups: r.tickWakeups ?? NaN, framesSent: r.framesSent ?? NaN }
}

/** Copies the agents' logs out of the cluster's directory (removed at stop), for a run to explain. */
function keepLogs (cluster: LocalCluster): string {
  const dir = mkdtempSync(path.join(tmpdir(), 'starling-bench-mesh-logs-'))
  for (const h of cluster.hosts) if (existsSync(h.logFile)) cpSync(h.logFile, path.join(dir, path.basename(h.logFile)))
  return dir
}

interface Floor { spawnToAllConnectedMs: number | null, startupCpuSMedian: number, idleCpuPctMedian: number, rssMiBMedian: number, probeIntervalMs: number }

/** The stack's floor (see the header): spawn to every connection open, then idle CPU and RSS. */
async function measureFloor (): Promise<Floor> {
  const core = { ...defaultCoreConfig(), ...CORE }
  const probeIntervalMs = core.tickMs * core.probeIntervalTicks
  const keepAliveMs = typeof MESH.keepAliveMs === 'number' ? MESH.keepAliveMs : 5000
  const ports: number[] = []
  while (ports.length < N) {
    const p = await freePort()
    if (!ports.includes(p)) ports.push(p)
  }
  const env = {
    ...process.env,
    FLOOR_SEEDS: Array.from({ length: N }, () => randomBytes(32).toString('hex')).join(','),
    FLOOR_PORTS: ports.join(','),
    FLOOR_PROBE_MS: String(probeIntervalMs),
    FLOOR_KEEPALIVE_MS: String(keepAliveMs),
    FLOOR_TIMEOUT_MS: String(typeof MESH.timeoutMs === 'number' ? MESH.timeoutMs : 3 * keepAliveMs)
  }
  const entry = fileURLToPath(new URL('./lib/mesh-floor.js', import.meta.url))
  const t0 = Date.now()
  let connected = 0
  let allAt: number | null = null
  const procs: ChildProcess[] = []
  try {
    for (let i = 0; i < N; i++) {
      const p = spawn(process.execPath, agentSpawnArgs(entry, [String(i)]), { env, stdio: ['ignore', 'pipe', 'inherit'] })
      procs.push(p)
      let seen = false
      p.stdout?.setEncoding('utf8')
      p.stdout?.on('data', (d: string) => {
        if (!seen && d.includes('connected')) {
          seen = true
          if (++connected === N) allAt = Date.now()
        }
      })
    }
    while (allAt === null && Date.now() - t0 < 60_000) await sleep(20)
    const startupCpuS = procs.map(p => procStat(p.pid as number).cpuTicks / CLK_TCK)
    await sleep(SETTLE_S * 1000)
    const pids = procs.map(p => p.pid as number)
    const a = pids.map(procStat)
    await sleep(IDLE_S * 1000)
    const b = pids.map(procStat)
    return {
      spawnToAllConnectedMs: allAt === null ? null : allAt - t0,
      startupCpuSMedian: r3(median(startupCpuS)),
      idleCpuPctMedian: r3(median(b.map((x, i) => 100 * (x.cpuTicks - (a[i] as ProcStat).cpuTicks) / CLK_TCK / IDLE_S))),
      rssMiBMedian: r1(median(b.map(x => x.rssKiB / 1024))),
      probeIntervalMs
    }
  } finally {
    for (const p of procs) p.kill('SIGKILL')
  }
}

async function main (): Promise<void> {
  // Production defaults (core: {}), not the demo's faster report interval.
  const cluster = await LocalCluster.create(N, { seed: 11, core: CORE, mesh: MESH })
  const names = cluster.hosts.map(h => h.name)
  let result: { spawnToFullMeshMs: number | null, startupCpuSMedian: number, footprint: { idleCpuPctMedian: number, rssMiBMedian: number } } | null = null
  try {
    // Two clocks: from spawning the processes (includes Node start-up and module loading, which
    // on 2 shared cores is most of it), and from the moment the last agent's API answered.
    const t0 = Date.now()
    cluster.startAll()
    const firstAnswer = new Map<string, number>()
    let meshAt: number | null = null
    let meshViews: Array<Awaited<ReturnType<typeof cluster.status>>> = []
    while (Date.now() - t0 < 60_000 && meshAt === null) {
      const views = await Promise.all(names.map(async n => await cluster.status(n)))
      views.forEach((v, i) => { if (v !== null && !firstAnswer.has(names[i] as string)) firstAnswer.set(names[i] as string, Date.now()) })
      if (views.every(v => v !== null && aliveCount(v) === N)) { meshAt = Date.now(); meshViews = views }
      else await sleep(50)
    }
    const startToMeshMs = meshAt === null ? null : meshAt - t0
    const lastReady = Math.max(...firstAnswer.values())
    const readyToMeshMs = meshAt === null ? null : meshAt - lastReady
    const spawnToLastReadyMs = lastReady - t0
    // CPU each agent used from its spawn to the full mesh (Node start-up, module loading, joining).
    const startupCpuS = names.map(n => procStat(cluster.procs.get(n)?.pid as number).cpuTicks / CLK_TCK)
    // Where it went, from each agent's own marks (agent/main.ts): Node's start-up and the agent's
    // modules (loaded), then everything up to ready (store, DHT node, runtime, API), then joining.
    const mark = (k: string): number[] => meshViews.map(v => v?.process?.[k] ?? NaN)
    const loadedS = mark('startupLoadedCpuSeconds')
    const readyS = mark('startupReadyCpuSeconds')
    const startupCpuPhasesS = {
      loaded: r3(median(loadedS)),
      loadedToReady: r3(median(readyS.map((r, i) => r - (loadedS[i] as number)))),
      readyToFullMesh: r3(median(startupCpuS.map((x, i) => x - (readyS[i] as number))))
    }

    // Idle footprint: let the cluster settle, then measure CPU over a quiet window.
    await sleep(SETTLE_S * 1000)
    // Same-run baseline: a bare Node process whose event loop stays alive, measured over the same
    // window, so the machine's noise shows in both figures.
    const bare = spawn(process.execPath, ['-e', 'setInterval(() => {}, 60000)'], { stdio: 'ignore' })
    await sleep(1000)
    const pids = names.map(n => cluster.procs.get(n)?.pid as number)
    const a = pids.map(procStat)
    const bareA = procStat(bare.pid as number)
    const statsA = await Promise.all(names.map(async n => await runtimeStats(cluster, n)))
    await sleep(IDLE_S * 1000)
    const b = pids.map(procStat)
    const statsB = await Promise.all(names.map(async n => await runtimeStats(cluster, n)))
    // What wakes an idle agent, per second: its own timer (a core tick is due) and frames.
    const perS = (k: keyof RuntimeRates): number => r1(median(statsB.map((x, i) => ((x?.[k] ?? NaN) - (statsA[i]?.[k] ?? NaN)) / IDLE_S)))
    const bareB = procStat(bare.pid as number)
    bare.kill('SIGKILL')
    const bareCpuPct = 100 * (bareB.cpuTicks - bareA.cpuTicks) / CLK_TCK / IDLE_S
    const cpuPct = b.map((x, i) => 100 * (x.cpuTicks - (a[i] as { cpuTicks: number }).cpuTicks) / CLK_TCK / IDLE_S)
    const rssMiB = b.map(x => x.rssKiB / 1024)
    const mib = (f: (x: ProcStat) => number): number => r1(median(b.map(f)) / 1024)

    const noticedMs: number[] = []
    const deadMs: number[] = []
    const missed: unknown[] = []
    for (let k = 0; k < Math.min(KILLS, N - 3); k++) {
      const victim = names[N - 1 - k] as string
      const survivors = names.slice(0, N - 1 - k)
      const tk = Date.now()
      cluster.kill9(victim)
      const n1 = await cluster.waitViews(survivors, s => stateOf(s, victim) !== 'alive', 30_000, 20)
      if (n1 !== null) noticedMs.push(Date.now() - tk)
      else {
        // Which survivors kept it alive, or did not answer, and whether their process still runs.
        const views = await Promise.all(survivors.map(async n => await cluster.status(n)))
        missed.push({
          victim,
          survivors: survivors.map((n, i) => {
            const v = views[i]
            const p = cluster.procs.get(n)
            return { name: n, answered: v !== null && v !== undefined, victimState: v === null || v === undefined ? null : stateOf(v, victim) ?? null, alive: v === null || v === undefined ? null : aliveCount(v), exit: p?.exitCode ?? p?.signalCode ?? null }
          }).filter(x => !x.answered || x.victimState === 'alive' || x.exit !== null),
          logsKeptIn: keepLogs(cluster)
        })
      }
      const n2 = await cluster.waitViews(survivors, s => stateOf(s, victim) === 'dead', 60_000, 50)
      if (n2 !== null) deadMs.push(Date.now() - tk)
    }
    const out = {
      bench: 'mesh',
      hosts: N,
      nodeArgs: AGENT_NODE_ARGS.join(' '),
      core: CORE,
      mesh: MESH,
      // All N agents are spawned at once: on a machine with few cores their start-up (CPU-bound)
      // dominates the first clock; the second starts when the last agent's API answered.
      spawnToFullMeshMs: startToMeshMs,
      spawnToLastAgentReadyMs: spawnToLastReadyMs,
      lastAgentReadyToFullMeshMs: readyToMeshMs,
      fullMeshTargetMs: 3000,
      startupCpuSMedian: r3(median(startupCpuS)),
      // Medians per phase (null for a build without the marks); /proc counts 10 ms ticks.
      startupCpuPhasesS: Number.isNaN(startupCpuPhasesS.loaded) ? null : startupCpuPhasesS,
      cores: availableParallelism(),
      // The agents' start-up CPU spread over every core: no spawn-to-mesh time can be shorter.
      startupCpuFloorMs: Math.round(1000 * startupCpuS.reduce((a, x) => a + x, 0) / availableParallelism()),
      kill9: {
        victims: Math.min(KILLS, N - 3),
        noticedByAllMsMedian: median(noticedMs),
        noticedByAllMs: noticedMs,
        declaredDeadByAllMsMedian: median(deadMs),
        declaredDeadByAllMs: deadMs,
        // Victims some survivor still saw alive after 30 s: who, and in what state.
        missed,
        targetMedianMs: 3000
      },
      footprint: {
        settleS: SETTLE_S,
        idleWindowS: IDLE_S,
        rssMiBMedian: r1(median(rssMiB)),
        rssMiBMax: r1(Math.max(...rssMiB)),
        anonMiBMedian: mib(x => x.anonKiB),
        fileMiBMedian: mib(x => x.fileKiB),
        pssMiBMedian: mib(x => x.pssKiB),
        idleCpuPctMedian: r3(median(cpuPct)),
        perSecondMedian: { tickWakeups: perS('tickWakeups'), ticks: perS('ticks'), framesSent: perS('framesSent') },
        idleCpuPctMax: r3(Math.max(...cpuPct)),
        targets: { rssMiB: 64, idleCpuPct: 0.2 },
        serf: { rssMiB: 14.4, idleCpuPct: 0.085 },
        bareNodeBaseline: { rssMiB: r1(bareB.rssKiB / 1024), anonMiB: r1(bareB.anonKiB / 1024), fileMiB: r1(bareB.fileKiB / 1024), idleCpuPct: r3(bareCpuPct) },
        // The bare process idles at ~0 CPU (a tick of 10 ms per window at most): the CPU ratio is null then.
        ratioToBareNode: { rss: Math.round(median(rssMiB) / (bareB.rssKiB / 1024) * 100) / 100, cpu: bareCpuPct > 0 ? Math.round(median(cpuPct) / bareCpuPct * 100) / 100 : null },
        ratioToSerf: { rss: Math.round(median(rssMiB) / 14.4 * 100) / 100, cpu: Math.round(median(cpuPct) / 0.085 * 100) / 100 }
      }
    }
    result = out
  } finally {
    await cluster.stop()
  }
  if (result === null) throw new Error('bench:mesh: no result')
  if (FLOOR) {
    const floor = await measureFloor()
    const ratio = (x: number | null, y: number | null): number | null => x === null || y === null || y === 0 ? null : Math.round(x / y * 100) / 100
    Object.assign(result, {
      stackFloor: floor,
      ratioToFloor: {
        spawnToFullMesh: ratio(result.spawnToFullMeshMs, floor.spawnToAllConnectedMs),
        startupCpu: ratio(result.startupCpuSMedian, floor.startupCpuSMedian),
        idleCpu: ratio(result.footprint.idleCpuPctMedian, floor.idleCpuPctMedian),
        rss: ratio(result.footprint.rssMiBMedian, floor.rssMiBMedian)
      }
    })
  }
  process.stdout.write(JSON.stringify(result) + '\n')
}

await main()
