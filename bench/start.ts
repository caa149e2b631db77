/**
 * bench:start — what one agent costs to start, from the bundle that ships
 * (dist/agent/cli/starling.js, packaging/bundle-cli.mjs) against tsc's own output beside it
 * (dist/agent/cli/starling.unbundled.js), alternated in the same run: CPU used (user + system)
 * and wall time from spawn until the agent's API answers, with the daemon's node flags
 * (AGENT_NODE_ARGS), in a one-member cluster on loopback; and a short CLI command's CPU
 * (`starling --help`, which loads no agent). Medians over REPS runs each, and the ratios.
 * Prints one JSON object. Env: REPS (9).
 */
import { spawn } from 'node:child_process'
import { existsSync, readFileSync } from 'node:fs'
import { loadavg } from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { AGENT_NODE_ARGS } from '../agent/cli/agent-node-args.js'
import { LocalCluster } from '../test/integration/cluster-harness.js'
import { sleep } from '../test/lib/wait.js'
import { median } from './lib/failover-run.js'

const REPS = Math.max(1, Number(process.env.REPS ?? 9))
const CLK_TCK = 100
const cli = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'agent', 'cli')
const ENTRIES = { bundle: path.join(cli, 'starling.js'), unbundled: path.join(cli, 'starling.unbundled.js') }

/** CPU ms from a /proc stat file: its own (utime + stime) or its reaped children's (cutime + cstime). */
function statCpuMs (file: string, which: 'self' | 'children'): number {
  const stat = readFileSync(file, 'utf8')
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  const i = which === 'self' ? 11 : 13
  return (Number(f[i]) + Number(f[i + 1])) * 1000 / CLK_TCK
}

/** One agent from `entry`: ms until its API answers, and its CPU ms then. */
async function agentStart (entry: string, seed: number): Promise<{ wallMs: number, cpuMs: number }> {
  const c = await LocalCluster.create(1, { seed })
  const h = c.hosts[0]!
  const t0 = performance.now()
  const p = spawn(process.execPath, [...AGENT_NODE_ARGS, entry, 'agent', '--config', h.configFile], { stdio: ['ignore', 'ignore', 'pipe'] })
  let err = ''
  p.stderr.on('data', (b: Buffer) => { err += b.toString() })
  try {
    while (await c.status(h.name) === null) {
      if (p.exitCode !== null) throw new Error(`the agent exited (${p.exitCode}): ${err.slice(-500)}`)
      if (performance.now() - t0 > 30_000) throw new Error('the agent did not answer within 30 s')
      await sleep(5)
    }
    return { wallMs: performance.now() - t0, cpuMs: statCpuMs(`/proc/${p.pid!}/stat`, 'self') }
  } finally {
    // Reaped before the next measure: a child's CPU joins our children's times when reaped.
    const exited = new Promise(resolve => p.once('exit', resolve))
    p.kill('SIGKILL')
    if (p.exitCode === null && p.signalCode === null) await exited
    await c.stop()
  }
}

/** Runs `starling --help` from `entry` to its end; its CPU is read from our reaped children's times. */
async function cliHelp (entry: string): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    const p = spawn(process.execPath, [entry, '--help'], { stdio: 'ignore' })
    p.on('error', reject)
    p.on('exit', code => { if (code === 0) resolve(); else reject(new Error(`starling --help exited ${String(code)}`)) })
  })
}

async function main (): Promise<void> {
  for (const [k, f] of Object.entries(ENTRIES)) if (!existsSync(f)) throw new Error(`${k}: ${f} is missing (npm run build)`)
  const loadBefore = loadavg()
  const runs: Record<keyof typeof ENTRIES, Array<{ wallMs: number, cpuMs: number, helpCpuMs: number }>> = { bundle: [], unbundled: [] }
  for (let r = 0; r < REPS; r++) {
    // Alternated, so that the machine's other load falls on both alike.
    for (const k of (r % 2 === 0 ? ['bundle', 'unbundled'] : ['unbundled', 'bundle']) as Array<keyof typeof ENTRIES>) {
      const a = await agentStart(ENTRIES[k], 500 + r)
      const c0 = statCpuMs('/proc/self/stat', 'children')
      await cliHelp(ENTRIES[k])
      runs[k].push({ ...a, helpCpuMs: statCpuMs('/proc/self/stat', 'children') - c0 })
    }
  }
  // REPS >= 1, so every median exists.
  const sum = (k: keyof typeof ENTRIES): { agentCpuMsMedian: number, agentWallMsMedian: number, helpCpuMsMedian: number } => ({
    agentCpuMsMedian: median(runs[k].map(x => x.cpuMs))!,
    agentWallMsMedian: Math.round(median(runs[k].map(x => x.wallMs))!),
    helpCpuMsMedian: median(runs[k].map(x => x.helpCpuMs))!
  })
  const b = sum('bundle')
  const u = sum('unbundled')
  const r2 = (x: number): number => Math.round(x * 100) / 100
  process.stdout.write(JSON.stringify({
    bench: 'start',
    reps: REPS,
    nodeArgs: AGENT_NODE_ARGS.join(' '),
    bundle: b,
    unbundled: u,
    ratios: {
      agentCpu: r2(b.agentCpuMsMedian / u.agentCpuMsMedian),
      agentWall: r2(b.agentWallMsMedian / u.agentWallMsMedian),
      helpCpu: r2(b.helpCpuMsMedian / u.helpCpuMsMedian)
    },
    notes: ['CPU: user + system of the agent process when its API first answered (clock ticks of 10 ms)', 'help: `starling --help`, a CLI command that loads no agent'],
    loadAvg: { before: loadBefore.map(r2), after: loadavg().map(r2) }
  }) + '\n')
}

await main()
