/**
 * bench:mesh — ten real agent processes on loopback.
 * Measures: start to full mesh (every agent sees all ten alive), kill -9 detection (time until
 * every survivor stops considering the victim alive, and until all declare it dead) over several
 * victims, and each agent's RSS and idle CPU over a quiet window. Prints one JSON object.
 * Serf's figures on this kind of machine (ANCHORS.md): 14.4 MiB RSS, 0.085 % CPU idle.
 */
import { readFileSync } from 'node:fs'
import { LocalCluster, aliveCount, stateOf } from '../test/integration/cluster-harness.js'

const N = Number(process.env.HOSTS ?? 10)
const KILLS = Number(process.env.KILLS ?? 3)
const IDLE_S = Number(process.env.IDLE_S ?? 20)
const CLK_TCK = 100

function median (xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b)
  const m = Math.floor(s.length / 2)
  return s.length === 0 ? NaN : s.length % 2 === 1 ? s[m] as number : ((s[m - 1] as number) + (s[m] as number)) / 2
}

function procStat (pid: number): { cpuTicks: number, rssKiB: number } {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  const cpuTicks = Number(fields[11]) + Number(fields[12]) // utime + stime (fields 14, 15)
  const status = readFileSync(`/proc/${pid}/status`, 'utf8')
  const rssKiB = Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? NaN)
  return { cpuTicks, rssKiB }
}

async function main (): Promise<void> {
  const cluster = await LocalCluster.create(N, { seed: 11 })
  const names = cluster.hosts.map(h => h.name)
  try {
    const t0 = Date.now()
    cluster.startAll()
    const meshMs = await cluster.waitViews(names, s => aliveCount(s) === N, 60_000, 50)
    const startToMeshMs = meshMs === null ? null : Date.now() - t0

    // Idle footprint: let the cluster settle, then measure CPU over a quiet window.
    await new Promise(resolve => setTimeout(resolve, 5000))
    const pids = names.map(n => cluster.procs.get(n)?.pid as number)
    const a = pids.map(procStat)
    await new Promise(resolve => setTimeout(resolve, IDLE_S * 1000))
    const b = pids.map(procStat)
    const cpuPct = b.map((x, i) => 100 * (x.cpuTicks - (a[i] as { cpuTicks: number }).cpuTicks) / CLK_TCK / IDLE_S)
    const rssMiB = b.map(x => x.rssKiB / 1024)

    const noticedMs: number[] = []
    const deadMs: number[] = []
    for (let k = 0; k < Math.min(KILLS, N - 3); k++) {
      const victim = names[N - 1 - k] as string
      const survivors = names.slice(0, N - 1 - k)
      const tk = Date.now()
      cluster.kill9(victim)
      const n1 = await cluster.waitViews(survivors, s => stateOf(s, victim) !== 'alive', 30_000, 20)
      if (n1 !== null) noticedMs.push(Date.now() - tk)
      const n2 = await cluster.waitViews(survivors, s => stateOf(s, victim) === 'dead', 60_000, 50)
      if (n2 !== null) deadMs.push(Date.now() - tk)
    }
    const out = {
      bench: 'mesh',
      hosts: N,
      startToFullMeshMs: startToMeshMs,
      startToFullMeshTargetMs: 3000,
      kill9: {
        victims: Math.min(KILLS, N - 3),
        noticedByAllMsMedian: median(noticedMs),
        noticedByAllMs: noticedMs,
        declaredDeadByAllMsMedian: median(deadMs),
        declaredDeadByAllMs: deadMs,
        targetMedianMs: 3000
      },
      footprint: {
        idleWindowS: IDLE_S,
        rssMiBMedian: Math.round(median(rssMiB) * 10) / 10,
        rssMiBMax: Math.round(Math.max(...rssMiB) * 10) / 10,
        idleCpuPctMedian: Math.round(median(cpuPct) * 1000) / 1000,
        idleCpuPctMax: Math.round(Math.max(...cpuPct) * 1000) / 1000,
        targets: { rssMiB: 64, idleCpuPct: 0.2 },
        serf: { rssMiB: 14.4, idleCpuPct: 0.085 },
        ratioToSerf: { rss: Math.round(median(rssMiB) / 14.4 * 100) / 100, cpu: Math.round(median(cpuPct) / 0.085 * 100) / 100 }
      }
    }
    process.stdout.write(JSON.stringify(out) + '\n')
  } finally {
    await cluster.stop()
  }
}

await main()
