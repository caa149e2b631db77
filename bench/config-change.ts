/**
 * bench:config — time to apply a replicated cluster configuration change on real agents. N agent
 * processes on loopback with the production defaults (writeLocalCluster: full mesh, every member
 * listed), started at once; once every agent sees every other alive and all hold the same
 * configuration version, K changes (`starling config automation`, alternating partial and full)
 * are made one after the other through the control socket of a random member, as an operator
 * would. For each change it measures the CLI's round trip (spawn to exit: it returns once a
 * majority committed) and the time from the command's start until every agent's GET /v1/config
 * shows the new version (each agent polled every POLL_MS). Then K more changes are POSTed to the
 * control socket from this process (no CLI process to start), measured the same way: the
 * protocol's own time without node's start-up. Median and p90 of each, and the load average at
 * start, once formed and at the end (the machine is shared). Prints one JSON object.
 * Env: N (5), K (10), POLL_MS (30), FORM_TIMEOUT_S (180), SEED (1).
 */
import { loadavg } from 'node:os'
import { callApi } from '../agent/cli/client.js'
import { LocalCluster, aliveCount, runCli } from '../test/integration/cluster-harness.js'
import { sleep } from '../test/lib/wait.js'

const N = Number(process.env.N ?? 5)
const K = Number(process.env.K ?? 10)
const POLL_MS = Number(process.env.POLL_MS ?? 30)
const FORM_TIMEOUT_S = Number(process.env.FORM_TIMEOUT_S ?? 180)
const SEED = Number(process.env.SEED ?? 1)

const load = (): number[] => loadavg().map(x => Math.round(x * 100) / 100)
function pct (xs: number[], p: number): number {
  const s = xs.filter(x => Number.isFinite(x)).sort((a, b) => a - b)
  return s.length === 0 ? NaN : s[Math.min(s.length - 1, Math.max(0, Math.ceil(p * s.length) - 1))]!
}
// A pseudo-random member per change, reproducible from SEED.
function rng (seed: number): () => number {
  let x = seed >>> 0 || 1
  return () => { x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0; return x / 0x100000000 }
}

async function version (apiListen: string): Promise<number | null> {
  try {
    const r = await fetch(`http://${apiListen}/v1/config`, { signal: AbortSignal.timeout(2000) })
    if (!r.ok) return null
    return (await r.json() as { version?: number }).version ?? null
  } catch {
    return null
  }
}

/** Poll one agent until it shows version >= v; the elapsed ms since t0, or NaN on timeout. */
async function seen (apiListen: string, v: number, t0: number, timeoutMs: number): Promise<number> {
  while (performance.now() - t0 < timeoutMs) {
    const got = await version(apiListen)
    if (got !== null && got >= v) return performance.now() - t0
    await sleep(POLL_MS)
  }
  return NaN
}

async function main (): Promise<void> {
  const loadStart = load()
  const cluster = await LocalCluster.create(N, { seed: SEED })
  const names = cluster.hosts.map(h => h.name)
  const started = performance.now()
  try {
    cluster.startAll()
    const formedMs = await cluster.waitViews(names, s => aliveCount(s) === N, FORM_TIMEOUT_S * 1000, 500)
    if (formedMs === null) throw new Error(`${N} agents did not all see each other alive within ${FORM_TIMEOUT_S} s`)
    let vs: Array<number | null> = []
    for (let i = 0; i < 100; i++) {
      vs = await Promise.all(cluster.hosts.map(async h => await version(h.apiListen)))
      if (vs.every(v => v !== null && v === vs[0])) break
      await sleep(200)
    }
    if (!vs.every(v => v !== null && v === vs[0])) throw new Error(`configuration versions differ after forming: ${vs.join(',')}`)
    let current = vs[0]!
    const formed = Math.round(performance.now() - started)
    const loadFormed = load()
    const pick = rng(SEED)
    const changes: Array<{ via: string, how: 'cli' | 'socket', version: number, cliMs: number, allMs: number, firstMs: number }> = []
    for (let k = 0; k < 2 * K; k++) {
      const how = k < K ? 'cli' : 'socket'
      const via = cluster.hosts[Math.floor(pick() * N)]!
      const level = k % 2 === 0 ? 'partial' : 'full'
      const target = current + 1
      const t0 = performance.now()
      const watchers = cluster.hosts.map(async h => await seen(h.apiListen, target, t0, 60_000))
      const cli = how === 'cli'
        ? runCli(['config', 'automation', level, '--socket', via.apiSocket, '--api', via.apiListen], 60_000).then(r => ({ ...r, ms: performance.now() - t0 }))
        : callApi({ addr: via.apiListen, socket: via.apiSocket, token: null }, '/v1/config', { op: 'automation', level }, { timeoutMs: 60_000 })
          .then(b => { const r = b as { status?: string, version?: number }; return { code: r.status === 'committed' ? 0 : 3, out: `${String(r.status)} at version ${String(r.version)}`, ms: performance.now() - t0 } })
      const [r, times] = await Promise.all([cli, Promise.all(watchers)])
      if (r.code !== 0) throw new Error(`change ${k} via ${via.name} failed (exit ${r.code}): ${r.out.trim()}`)
      const m = /committed at version (\d+)/.exec(r.out)
      if (m === null || Number(m[1]) !== target) throw new Error(`change ${k}: expected version ${target}, CLI said: ${r.out.trim()}`)
      changes.push({ via: via.name, how, version: target, cliMs: Math.round(r.ms), allMs: Math.round(Math.max(...times)), firstMs: Math.round(Math.min(...times)) })
      current = target
      await sleep(300)
    }
    const stats = (how: 'cli' | 'socket'): Record<string, unknown> => {
      const cs = changes.filter(c => c.how === how)
      const rt = cs.map(c => c.cliMs)
      const all = cs.map(c => c.allMs)
      return {
        roundTripMs: { median: pct(rt, 0.5), p90: pct(rt, 0.9) },
        toAllAgentsMs: { median: pct(all, 0.5), p90: pct(all, 0.9), max: Math.max(...all) },
        toFirstAgentMs: { median: pct(cs.map(c => c.firstMs), 0.5) },
        incomplete: all.filter(x => !Number.isFinite(x)).length
      }
    }
    process.stdout.write(JSON.stringify({
      bench: 'config-change',
      agents: N,
      changes: K,
      pollMs: POLL_MS,
      formedMs: formed,
      viaCli: stats('cli'),
      viaSocket: stats('socket'),
      perChange: changes,
      load: { start: loadStart, formed: loadFormed, end: load() }
    }, null, 2) + '\n')
  } finally {
    await cluster.stop()
  }
}

main().catch(err => { process.stderr.write(`bench:config: ${(err as Error).message}\n`); process.exit(1) })
