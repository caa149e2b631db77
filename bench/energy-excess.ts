/**
 * Where the decentralised agents' energy above the RAM-respecting lower bound goes
 * (agent/sim/trace/bound.ts), per hour of one day and seed:
 *
 * - hosts: the run keeps more hosts on than the bound needs, priced at the cheapest idle power
 *   (sum of the smallest idle powers of the run's active count, less the bound's);
 * - type: the hosts it keeps on draw more at idle than the cheapest ones would (the 93.7 W hosts
 *   instead of the 86 W ones);
 * - cpu: the rest, the power above idle beyond the bound's least W per MIPS served, plus what the
 *   accounting by the hosts active at a segment's start misses (hosts emptied or woken part way).
 *
 * A segment's run energy is the difference of the run's cumulative energy at two steps; its idle
 * power is that of the hosts active at the segment's start (StepSample.idleW).
 *
 *   npm run bench:energy-excess                 (DAY=20110309 SEED=1)
 *   DAY=20110325 SEED=2 node dist/bench/energy-excess.js
 */
import { findPlanetlabDir, loadDay } from '../agent/sim/trace/traces.js'
import { runOne } from '../agent/sim/trace/run.js'
import { defaultModel } from '../agent/sim/trace/model.js'
import { energyLowerBound } from '../agent/sim/trace/bound.js'

const dir = process.env.TRACES ?? findPlanetlabDir()
if (dir == null) throw new Error('PlanetLab traces not found: expected data/planetlab in the repository (or set TRACES=DIR)')
const day = process.env.DAY ?? '20110309'
const seed = Number(process.env.SEED ?? '1')
const model = defaultModel()
const trace = loadDay(dir, day)
const lb = energyLowerBound(model, trace)
const run = runOne(trace, { policy: 'AGENT', mode: 'decentral', model, decentral: { seed } })
const tl = run.timeline
const idle: number[] = []
for (let i = 0; i < model.hosts; i++) idle.push((model.hostTypes[i % model.hostTypes.length]?.powerW[0]) ?? 0)
idle.sort((a, b) => a - b)
// cheapestW[n]: the idle power of the n cheapest hosts (prefix sums of the sorted idle powers).
const cheapestW = [0]
for (const w of idle) cheapestW.push((cheapestW[cheapestW.length - 1] as number) + w)
const cheapest = (n: number): number => cheapestW[Math.max(0, Math.min(n, idle.length))] as number

interface Hour { run: number, bound: number, hosts: number, type: number, active: number, needed: number, n: number }
const hours: Hour[] = []
const n = Math.min(tl.length - 1, lb.segmentKWh.length)
for (let k = 0; k < n; k++) {
  const a = tl[k]; const b = tl[k + 1]
  if (a === undefined || b === undefined) break
  const dtH = (b.t - a.t) / 3600
  const hr = Math.floor(k * model.intervalSec / 3600)
  const h = hours[hr] ?? (hours[hr] = { run: 0, bound: 0, hosts: 0, type: 0, active: 0, needed: 0, n: 0 })
  const need = lb.hostsNeeded[k] ?? 0
  h.run += b.energyKWh - a.energyKWh
  h.bound += lb.segmentKWh[k] ?? 0
  const onW = cheapest(a.activeHosts)
  h.hosts += (onW - cheapest(need)) * dtH / 1000
  h.type += (a.idleW - onW) * dtH / 1000
  h.active += a.activeHosts
  h.needed += need
  h.n++
}
const f = (x: number, w = 7): string => x.toFixed(2).padStart(w)
const lines = [`${day} seed ${seed}: energy ${run.metrics.energyKWh.toFixed(2)} kWh, lower bound ${lb.energyKWh.toFixed(2)} kWh, ratio ${(run.metrics.energyKWh / lb.energyKWh).toFixed(3)}, migrations ${run.metrics.migrations}`,
  'hour  active  needed   run kWh  bound kWh  above %   hosts    type     cpu']
const tot = { run: 0, bound: 0, hosts: 0, type: 0 }
hours.forEach((h, i) => {
  tot.run += h.run; tot.bound += h.bound; tot.hosts += h.hosts; tot.type += h.type
  lines.push(`${String(i).padStart(4)} ${(h.active / h.n).toFixed(1).padStart(7)} ${(h.needed / h.n).toFixed(1).padStart(7)} ${f(h.run, 9)} ${f(h.bound, 10)} ${(100 * (h.run / h.bound - 1)).toFixed(1).padStart(8)} ${f(h.hosts)} ${f(h.type)} ${f(h.run - h.bound - h.hosts - h.type)}`)
})
lines.push(`all  ${' '.repeat(15)} ${f(tot.run, 9)} ${f(tot.bound, 10)} ${(100 * (tot.run / tot.bound - 1)).toFixed(1).padStart(8)} ${f(tot.hosts)} ${f(tot.type)} ${f(tot.run - tot.bound - tot.hosts - tot.type)}`)
console.log(lines.join('\n'))
