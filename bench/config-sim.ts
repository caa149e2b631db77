/**
 * How a change of the replicated cluster configuration scales with the number of members, on the
 * deterministic simulator: the real AgentCore on every host (agent/core/cluster-config/config-log.ts,
 * the production defaults) over the simulated network, so that sizes this machine cannot run as
 * processes (bench/config.md: 30 agents did not form here) are measured in ticks and frames.
 * For each size N: K changes (automation partial/full alternately) from a random member; the
 * ticks from the request until the proposer reports it committed, and until every member applies
 * it; the configuration frames sent per change (prepare/promise/accept/accepted/commit and the
 * catch-up they cause), from which the cost per member follows.
 * A tick is the agent's 100 ms; each frame takes DELAY_MIN..DELAY_MAX ticks (default 1..2, far
 * slower than a LAN, so the tick figures are upper bounds in rounds, not times).
 * Environment: SIZES (5,30,60), K (20), SEEDS (1-3), DELAY_MIN (1), DELAY_MAX (2).
 * Prints one JSON object.
 */
import { SimCluster } from '../agent/sim/sim-cluster.js'
import { parseSeeds } from '../agent/cli/sim.js'
import { Prng } from '../agent/core/prng.js'
import type { Envelope } from '../agent/core/index.js'
import os from 'node:os'

const sizes = (process.env.SIZES ?? '5,30,60').split(',').map(Number)
const k = Number(process.env.K ?? 20)
const seeds = parseSeeds(process.env.SEEDS ?? '1-3') ?? [1]
const dmin = Number(process.env.DELAY_MIN ?? 1)
const dmax = Number(process.env.DELAY_MAX ?? 2)

const median = (xs: number[]): number => { const s = [...xs].sort((a, b) => a - b); return s.length === 0 ? NaN : s.length % 2 === 1 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2 }
const p90 = (xs: number[]): number => { const s = [...xs].sort((a, b) => a - b); return s[Math.min(s.length - 1, Math.ceil(0.9 * s.length) - 1)] ?? NaN }

const out: Record<string, unknown> = { bench: 'config-sim', tickMs: 100, delayTicks: [dmin, dmax], k, seeds, loadavg: os.loadavg().map(x => Math.round(x * 100) / 100), sizes: {} as Record<string, unknown> }
for (const n of sizes) {
  const committed: number[] = []
  const applied: number[] = []
  const frames: number[] = []
  let pending = 0
  const t0 = performance.now()
  for (const seed of seeds) {
    const sim = new SimCluster({ seed, hosts: n, sampleIntervalTicks: 0, network: { delayTicksMin: dmin, delayTicksMax: dmax }, clusterConfig: {} })
    let cfgFrames = 0
    const send = sim.network.send.bind(sim.network)
    sim.network.send = (now: number, from: string, to: string, e: Envelope): void => { if (e.body.type === 'cfg') cfgFrames++; send(now, from, to, e) }
    sim.run(50)
    const prng = new Prng(seed)
    for (let i = 0; i < k; i++) {
      const from = sim.ids[prng.int(n)]!
      const v = sim.core(from)!.clusterConfig()!.latest.version + 1
      const before = cfgFrames
      const start = sim.now
      const req = sim.configChange(from, d => ({ ...d, automation: i % 2 === 0 ? 'partial' : 'full' }), `change ${i}`)
      if (req === null) throw new Error(`no change possible from ${from}`)
      let c = -1
      let a = -1
      for (let j = 0; j < 600 && a < 0; j++) {
        sim.tick()
        if (c < 0 && sim.core(from)!.configOutcome(req)?.status === 'committed') c = sim.now - start
        if (sim.ids.every(h => sim.core(h)!.clusterConfig()!.latest.version >= v)) a = sim.now - start
      }
      if (c < 0 || a < 0) { pending++; continue }
      committed.push(c)
      applied.push(a)
      sim.run(40) // announcements settle before the next change
      frames.push(cfgFrames - before)
    }
  }
  ;(out['sizes'] as Record<string, unknown>)[String(n)] = {
    changes: committed.length,
    pending,
    committedTicks: { median: median(committed), p90: p90(committed) },
    appliedEverywhereTicks: { median: median(applied), p90: p90(applied) },
    cfgFramesPerChange: { median: median(frames), perMember: Math.round(median(frames) / n * 10) / 10 },
    wallMs: Math.round(performance.now() - t0)
  }
}
process.stdout.write(JSON.stringify(out, null, 2) + '\n')
