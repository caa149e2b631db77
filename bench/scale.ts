/**
 * bench:scale — the real mesh at several sizes in one run: HOSTS agent processes (simulated VMs,
 * loopback, production defaults otherwise: a bounded active view, connections on demand) for each
 * size of SIZES, one size after the other. For each size: spawn to full membership (every agent
 * sees every other alive), then after SETTLE_S an idle window of IDLE_S: CPU and RSS per agent
 * (median, max), open connections per agent (median, max) and the active view's size, frames per
 * second per agent (sent + received by the transport, datagrams included), whether all views
 * agree (same members in the same states), formation over time (about every 5 s: seconds since spawn,
 * agents answering, median and least alive seen, load average, and how many (view, member) pairs
 * are absent, suspect, dead), Lifeguard's local health score (median, max); then kill -9 of one agent: time until every survivor
 * stops holding it alive, and until every survivor holds it dead. The load average is reported
 * with every size (the machine is shared). Prints one JSON object.
 * Env: SIZES (10,30,60), SETTLE_S (25: start-up's on-demand connections close after
 * mesh.idleCloseMs, 20 s), IDLE_S (20), CORE (JSON of core settings over the production
 * defaults), MESH (JSON of mesh settings), FULL_TIMEOUT_S (120).
 */
import { readFileSync } from 'node:fs'
import { availableParallelism, loadavg } from 'node:os'
import { AGENT_NODE_ARGS } from '../agent/cli/agent-node-args.js'
import { defaultCoreConfig } from '../agent/core/config.js'
import type { StatusPayload } from '../agent/api/payloads.js'
import { LocalCluster, aliveCount, stateOf } from '../test/integration/cluster-harness.js'
import { sleep } from '../test/lib/wait.js'

const SIZES = (process.env.SIZES ?? '10,30,60').split(',').map(Number)
const SETTLE_S = Number(process.env.SETTLE_S ?? 25)
const IDLE_S = Number(process.env.IDLE_S ?? 20)
const FULL_TIMEOUT_S = Number(process.env.FULL_TIMEOUT_S ?? 120)
/** The production defaults (a bounded active view of 6) unless CORE says otherwise (`{"activeViewSize":0}`: a full mesh). */
const CORE = JSON.parse(process.env.CORE ?? '{}') as Record<string, number>
const MESH = JSON.parse(process.env.MESH ?? '{}') as Record<string, unknown>
const CLK_TCK = 100

function median (xs: number[]): number {
  const s = xs.filter(x => Number.isFinite(x)).sort((a, b) => a - b)
  const m = Math.floor(s.length / 2)
  return s.length === 0 ? NaN : s.length % 2 === 1 ? s[m]! : (s[m - 1]! + s[m]!) / 2
}
const r1 = (x: number): number => Math.round(x * 10) / 10
const r3 = (x: number): number => Math.round(x * 1000) / 1000
const load = (): number[] => loadavg().map(x => Math.round(x * 100) / 100)

function procStat (pid: number): { cpuTicks: number, rssKiB: number } {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    const status = readFileSync(`/proc/${pid}/status`, 'utf8')
    return { cpuTicks: Number(fields[11]) + Number(fields[12]), rssKiB: Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? NaN) }
  } catch {
    return { cpuTicks: NaN, rssKiB: NaN }
  }
}

/** One view as comparable text: every member's name and state, sorted. */
function viewKey (s: StatusPayload): string {
  return s.members.map(m => `${m.name}:${m.state}`).sort().join(',')
}

async function statuses (cluster: LocalCluster, names: string[]): Promise<Array<StatusPayload | null>> {
  // Sequential batches: sixty parallel requests to sixty busy agents would measure the poller.
  const out: Array<StatusPayload | null> = []
  for (let i = 0; i < names.length; i += 10) out.push(...await Promise.all(names.slice(i, i + 10).map(async n => await cluster.status(n))))
  return out
}

/**
 * Why membership is not full: the agents that did not answer, and for each member that some view
 * does not hold alive, the views that do not and the state they hold it in (a missing member
 * has no entry: 'absent').
 */
function notFull (names: string[], views: Array<StatusPayload | null>): { silent: string[], notAlive: Record<string, Record<string, string>> } {
  const silent = names.filter((_, i) => views[i] === null)
  const notAlive: Record<string, Record<string, string>> = {}
  for (const [i, v] of views.entries()) {
    if (v === null) continue
    for (const m of names) {
      const st = m === names[i] ? 'alive' : stateOf(v, m) ?? 'absent'
      if (st !== 'alive') (notAlive[m] ??= {})[names[i]!] = st
    }
  }
  return { silent, notAlive }
}

/**
 * The survivors' own account of the kill, from their logs ("member <id> became <state>" lines,
 * each with the agent's timestamp): ms from the kill to the first suspicion anywhere, to the last
 * survivor no longer holding the victim alive, and to the last one holding it dead. Polling the
 * survivors' APIs measures the same thing plus the poller's own delays: under load a status call
 * that times out keeps a poll round from seeing what the agents already hold (a run at load 27
 * polled 48 s for a death every agent had logged within 7 s).
 */
function killFromLogs (logFiles: string[], victimId: string, killAtMs: number): { firstSuspicionMs: number | null, noticedByAllMs: number | null, deadEverywhereMs: number | null } {
  let first = Infinity
  let noticedAll = -Infinity
  let deadAll = -Infinity
  // Log lines name members by their short id (the first 8 hex digits).
  const short = victimId.slice(0, 8)
  const re = new RegExp(`^member ${short} became (suspect|dead|left)`)
  for (const f of logFiles) {
    let noticed = Infinity
    let dead = Infinity
    let text = ''
    try { text = readFileSync(f, 'utf8') } catch { return { firstSuspicionMs: null, noticedByAllMs: null, deadEverywhereMs: null } }
    for (const line of text.split('\n')) {
      if (!line.includes(short)) continue
      let rec: { ts?: string, msg?: string }
      try { rec = JSON.parse(line) as { ts?: string, msg?: string } } catch { continue }
      const m = re.exec(rec.msg ?? '')
      const at = Date.parse(rec.ts ?? '')
      if (m === null || !Number.isFinite(at) || at < killAtMs) continue
      noticed = Math.min(noticed, at)
      if (m[1] !== 'suspect') dead = Math.min(dead, at)
    }
    first = Math.min(first, noticed)
    noticedAll = Math.max(noticedAll, noticed)
    deadAll = Math.max(deadAll, dead)
  }
  const ms = (t: number): number | null => Number.isFinite(t) ? t - killAtMs : null
  return { firstSuspicionMs: ms(first), noticedByAllMs: ms(noticedAll), deadEverywhereMs: ms(deadAll) }
}

async function measure (n: number): Promise<Record<string, unknown>> {
  const cluster = await LocalCluster.create(n, { seed: 17, core: CORE, mesh: MESH })
  const names = cluster.hosts.map(h => h.name)
  const loadBefore = load()
  try {
    const t0 = Date.now()
    cluster.startAll()
    let fullAt: number | null = null
    let lastAlive: number[] = []
    let lastViews: Array<StatusPayload | null> = []
    // Formation over time, one entry about every 5 s: [s since spawn, agents answering, median and
    // least alive seen, load average, and over all (view, other agent) pairs not alive: how many
    // views lack the agent, hold it suspect, hold it dead or left].
    const formation: Array<[number, number, number, number, number, number, number, number]> = []
    while (Date.now() - t0 < FULL_TIMEOUT_S * 1000) {
      const views = await statuses(cluster, names)
      lastViews = views
      lastAlive = views.map(v => v === null ? -1 : aliveCount(v))
      const at = (Date.now() - t0) / 1000
      if (formation.length === 0 || at - formation[formation.length - 1]![0] >= 5) {
        const answering = lastAlive.filter(a => a >= 0)
        const nf = notFull(names, views).notAlive
        const pairs = Object.values(nf).flatMap(byView => Object.values(byView))
        const count = (st: string[]): number => pairs.filter(x => st.includes(x)).length
        formation.push([r1(at), answering.length, median(answering), answering.length === 0 ? 0 : Math.min(...answering), r1(loadavg()[0]!), count(['absent']), count(['suspect']), count(['dead', 'left'])])
      }
      if (lastAlive.every(a => a === n)) { fullAt = Date.now(); break }
      await sleep(250)
    }
    const spawnToFullMembershipMs = fullAt === null ? null : fullAt - t0
    if (fullAt === null) {
      return { hosts: n, spawnToFullMembershipMs: null, formation, aliveSeenMedian: median(lastAlive), aliveSeenMin: Math.min(...lastAlive), notFull: notFull(names, lastViews), loadAvgBefore: loadBefore, loadAvgAtEnd: load() }
    }
    await sleep(SETTLE_S * 1000)
    const pids = names.map(nm => cluster.procs.get(nm)?.pid as number)
    const a = pids.map(procStat)
    const sa = await statuses(cluster, names)
    const loadIdle0 = load()
    await sleep(IDLE_S * 1000)
    const b = pids.map(procStat)
    const sb = await statuses(cluster, names)
    const loadIdle1 = load()
    const cpuPct = b.map((x, i) => 100 * (x.cpuTicks - a[i]!.cpuTicks) / CLK_TCK / IDLE_S)
    const rssMiB = b.map(x => x.rssKiB / 1024)
    const frames = sb.map((x, i) => {
      const p = sa[i]?.mesh
      const q = x?.mesh
      return p === undefined || q === undefined ? NaN : ((q.framesSent + q.framesReceived) - (p.framesSent + p.framesReceived)) / IDLE_S
    })
    const open = sb.map(x => x?.mesh?.open ?? NaN)
    const health = sb.map(x => Number(x?.core?.healthScore ?? NaN))
    const active = sb.map(x => x?.mesh?.active ?? NaN)
    const keys = sb.map(x => x === null ? null : viewKey(x))
    const viewsAgree = keys.every(k => k !== null && k === keys[0]) && sb.every(x => x !== null && aliveCount(x) === n)

    const victim = names[n - 1]!
    const survivors = names.slice(0, n - 1)
    const tk = Date.now()
    cluster.kill9(victim)
    const noticed = await cluster.waitViews(survivors, s => stateOf(s, victim) !== 'alive', 60_000, 100)
    const noticedMs = noticed === null ? null : Date.now() - tk
    const dead = await cluster.waitViews(survivors, s => stateOf(s, victim) === 'dead', 60_000, 100)
    const deadMs = dead === null ? null : Date.now() - tk
    const after = await statuses(cluster, survivors)
    const victimId = sb[n - 1]?.self.id ?? after.find(x => x !== null)?.members.find(m => m.name === victim)?.id ?? ''
    const fromLogs = victimId === '' ? null : killFromLogs(survivors.map(nm => cluster.host(nm).logFile), victimId, tk)
    const afterKeys = after.map(x => x === null ? null : viewKey(x))
    return {
      hosts: n,
      spawnToFullMembershipMs,
      formation,
      idleCpuPctMedian: r3(median(cpuPct)),
      idleCpuPctMax: r3(Math.max(...cpuPct)),
      rssMiBMedian: r1(median(rssMiB)),
      rssMiBMax: r1(Math.max(...rssMiB)),
      openConnectionsMedian: median(open),
      openConnectionsMax: Math.max(...open),
      activeViewMedian: median(active),
      framesPerSecondMedian: r1(median(frames)),
      framesPerSecondMax: r1(Math.max(...frames)),
      // Lifeguard's local health (0 = healthy): probe timeouts scale by (score + 1), so a starved
      // agent detects failures later; read at the end of the idle window, before the kill.
      healthScoreMedian: median(health),
      healthScoreMax: Math.max(...health.filter(x => Number.isFinite(x))),
      viewsAgree,
      kill9: {
        noticedByAllMs: noticedMs,
        deadEverywhereMs: deadMs,
        fromLogs,
        viewsAgreeAfter: afterKeys.every(k => k !== null && k === afterKeys[0])
      },
      loadAvg: { beforeSpawn: loadBefore, idleStart: loadIdle0, idleEnd: loadIdle1 }
    }
  } finally {
    await cluster.stop()
  }
}

async function main (): Promise<void> {
  const core = { ...defaultCoreConfig(), ...CORE }
  const runs: Array<Record<string, unknown>> = []
  for (const n of SIZES) {
    runs.push(await measure(n))
    await sleep(5000) // let the machine settle between sizes
  }
  const bySize = new Map(runs.map(r => [r.hosts as number, r]))
  const small = bySize.get(Math.min(...SIZES))
  const large = bySize.get(Math.max(...SIZES))
  const num = (r: Record<string, unknown> | undefined, k: string): number => typeof r?.[k] === 'number' ? r[k] as number : NaN
  const cpuRatio = num(large, 'idleCpuPctMedian') / num(small, 'idleCpuPctMedian')
  // The agents' own timestamps when their logs have them, else the poll's.
  const deadMs = runs.map(r => {
    const k = r.kill9 as { deadEverywhereMs?: number | null, fromLogs?: { deadEverywhereMs: number | null } | null } | undefined
    return k?.fromLogs?.deadEverywhereMs ?? k?.deadEverywhereMs ?? null
  })
  const out = {
    bench: 'scale',
    sizes: SIZES,
    cores: availableParallelism(),
    nodeArgs: AGENT_NODE_ARGS.join(' '),
    core: CORE,
    mesh: MESH,
    activeViewSize: core.activeViewSize,
    settleS: SETTLE_S,
    idleWindowS: IDLE_S,
    runs,
    idleCpuRatioLargestToSmallest: Number.isFinite(cpuRatio) ? Math.round(cpuRatio * 100) / 100 : null,
    targets: {
      idleCpuRatioLe1_2: cpuRatio <= 1.2,
      openConnectionsBounded: runs.every(r => num(r, 'openConnectionsMax') <= core.activeViewSize + 4),
      deadEverywhereLe3s: deadMs.every(x => x !== null && x <= 3000),
      viewsAgree: runs.every(r => r.viewsAgree === true),
      fullMembershipLargestLe15s: num(large, 'spawnToFullMembershipMs') <= 15_000
    },
    notes: [
      'frames: sent + received by the transport per agent per second (stream frames and datagrams), over the idle window',
      'open connections: at the end of the idle window; bounded target: at most activeViewSize + 4 at every size',
      'kill -9 to dead everywhere is decided by the SWIM suspicion timeout: suspicionMult * max(1, log10 n) probe intervals at least',
      'kill9.fromLogs: the same times from the survivors\' logs (their own timestamps); the target uses them when present, as polling the APIs adds the poller\'s delays under load'
    ],
    loadAvgEnd: load()
  }
  process.stdout.write(JSON.stringify(out) + '\n')
}

await main()
