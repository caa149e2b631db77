/**
 * bench:sampler — what the host sampler (`sampler.kind: system`) costs per sample, before and
 * after reading the kernel's files directly.
 *
 * Two implementations of the same sampler (agent/adapters/si-sampler.ts), run in one process:
 * - `systeminformation`: every figure from systeminformation (the fallback off Linux, and what
 *   every sample did before);
 * - `kernel files`: the default on Linux, CPU, memory and network counters from /proc/stat,
 *   /proc/meminfo and /sys/class/net; systeminformation for the host's description only.
 *
 * Measured:
 * - periodic samples, ROUNDS rounds of BATCH samples each, the two implementations alternating
 *   batch by batch, INTERVAL_MS apart (default 250 ms: systeminformation's currentLoad does not
 *   read anything again within 200 ms). CPU per sample of this process (process.cpuUsage around
 *   each sample(), median) and, per batch, of this process and its children over the whole batch
 *   (utime, stime, cutime, cstime of /proc/self/stat, 10 ms ticks: hence per batch), per sample;
 *   the median over batches;
 * - the first sample (capacity and identity) and a sample that re-reads capacity (every
 *   `capacityRefreshMs`, 5 min by default), each in a fresh process, FIRST_RUNS times per
 *   implementation: wall time and CPU with children;
 * - programs started (successful execve, counted with `strace -f`, when strace is installed):
 *   by the first sample, by a capacity re-read, and per periodic sample (COUNT_SAMPLES of them),
 *   with the commands most started.
 *
 * Prints one JSON object.
 */
import { spawn, spawnSync } from 'node:child_process'
import { readFileSync, statfsSync } from 'node:fs'
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import si from 'systeminformation'
import { siSampler, type SystemInfoApi } from '../agent/adapters/si-sampler.js'
import { silentLogger } from '../agent/lib/logger.js'
import type { HostSampler } from '../agent/ports/host-sampler.js'
import { sleep } from '../test/lib/wait.js'

const ROUNDS = Number(process.env.ROUNDS ?? 8)
const BATCH = Number(process.env.BATCH ?? 25)
const INTERVAL_MS = Number(process.env.INTERVAL_MS ?? 250)
const FIRST_RUNS = Number(process.env.FIRST_RUNS ?? 5)
const COUNT_SAMPLES = Number(process.env.COUNT_SAMPLES ?? 20)
const REFRESH_MS = 300_000
const MARK = '/starling-bench-mark'

type Impl = 'systeminformation' | 'kernel files'
const IMPLS: Impl[] = ['systeminformation', 'kernel files']

const r3 = (x: number): number => Math.round(x * 1000) / 1000

function median (xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b)
  const m = Math.floor(s.length / 2)
  return s.length === 0 ? NaN : s.length % 2 === 1 ? s[m] as number : ((s[m - 1] as number) + (s[m] as number)) / 2
}

function spread (xs: number[]): { median: number, min: number, max: number } {
  return { median: r3(median(xs)), min: r3(Math.min(...xs)), max: r3(Math.max(...xs)) }
}

const CLK_TCK = 100 // Linux's USER_HZ on every architecture Node runs on

/** CPU ms of this process and of its waited-for children so far (10 ms resolution). */
function procCpuMs (): { self: number, children: number } {
  const stat = readFileSync('/proc/self/stat', 'utf8')
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ').map(Number)
  // Fields 14-17 of proc(5) (utime, stime, cutime, cstime); f[0] is field 3.
  const tick = 1000 / CLK_TCK
  return { self: ((f[11] ?? 0) + (f[12] ?? 0)) * tick, children: ((f[13] ?? 0) + (f[14] ?? 0)) * tick }
}

function cpuUsageMs (): number {
  const u = process.cpuUsage()
  return (u.user + u.system) / 1000
}

function makeSampler (impl: Impl, now?: () => number): HostSampler {
  const logger = silentLogger()
  return impl === 'systeminformation'
    ? siSampler({})({ logger, now, systemInfo: si as unknown as SystemInfoApi })
    : siSampler({})({ logger, now })
}

/** A syscall strace records with its argument, so the trace can be cut into phases. */
function mark (name: string): void {
  try { statfsSync(`${MARK}/${name}`) } catch { /* ENOENT: only the trace matters */ }
}

/**
 * Child mode: one fresh sampler; its first sample, COUNT_SAMPLES periodic ones, one that re-reads
 * capacity. Prints wall and CPU (with children) of the first and the re-reading sample.
 */
async function child (impl: Impl): Promise<void> {
  let offsetMs = 0
  const sampler = makeSampler(impl, () => performance.now() + offsetMs)
  const c0 = procCpuMs()
  const t0 = performance.now()
  mark('first-start')
  await sampler.sample()
  mark('first-end')
  const firstWallMs = performance.now() - t0
  const c1 = procCpuMs()
  for (let i = 0; i < COUNT_SAMPLES; i++) {
    await sleep(INTERVAL_MS)
    await sampler.sample()
  }
  mark('periodic-end')
  await sleep(INTERVAL_MS)
  offsetMs += REFRESH_MS + 1
  const c2 = procCpuMs()
  const t2 = performance.now()
  await sampler.sample()
  const refreshWallMs = performance.now() - t2
  const c3 = procCpuMs()
  mark('refresh-end')
  process.stdout.write(JSON.stringify({
    firstWallMs,
    firstCpuMs: { self: c1.self - c0.self, children: c1.children - c0.children },
    refreshWallMs,
    refreshCpuMs: { self: c3.self - c2.self, children: c3.children - c2.children }
  }) + '\n')
}

async function runChild (impl: Impl, strace: string | null): Promise<string> {
  const self = fileURLToPath(import.meta.url)
  const args = ['--child', impl]
  const [cmd, argv] = strace === null
    ? [process.execPath, [self, ...args]]
    : ['strace', ['-f', '-qq', '-s', '120', '-e', 'trace=execve,statfs', '-o', strace, process.execPath, self, ...args]]
  return await new Promise((resolve, reject) => {
    const p = spawn(cmd, argv, { stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env, COUNT_SAMPLES: String(COUNT_SAMPLES) } })
    let out = ''
    p.stdout.on('data', (d: Buffer) => { out += d.toString() })
    p.once('error', reject)
    p.once('exit', code => code === 0 ? resolve(out) : reject(new Error(`${cmd} exited with ${String(code)}`)))
  })
}

/** Successful execve calls per phase of a trace, and the programs started. */
function countExecs (trace: string): Record<string, { execs: number, programs: Record<string, number> }> {
  const phases: Record<string, { execs: number, programs: Record<string, number> }> = {}
  let phase = 'startup'
  const pending = new Map<string, string>()
  const add = (prog: string): void => {
    const p = (phases[phase] ??= { execs: 0, programs: {} })
    p.execs++
    p.programs[prog] = (p.programs[prog] ?? 0) + 1
  }
  for (const line of trace.split('\n')) {
    const m = /statfs\("\/starling-bench-mark\/([a-z-]+)"/.exec(line)
    if (m !== null) { phase = m[1] as string; continue }
    const pid = line.split(' ', 1)[0] ?? ''
    const call = /execve\("([^"]*)"/.exec(line)
    if (call !== null) {
      const prog = path.basename(call[1] as string)
      if (line.includes('<unfinished ...>')) pending.set(pid, prog)
      else if (/= 0$/.test(line)) add(prog)
      continue
    }
    if (line.includes('<... execve resumed>')) {
      const prog = pending.get(pid)
      pending.delete(pid)
      if (prog !== undefined && /= 0$/.test(line)) add(prog)
    }
  }
  return phases
}

function top (programs: Record<string, number>, n = 6): Record<string, number> {
  return Object.fromEntries(Object.entries(programs).sort((a, b) => b[1] - a[1]).slice(0, n))
}

async function periodic (): Promise<Record<Impl, unknown>> {
  const samplers = new Map(IMPLS.map(impl => [impl, makeSampler(impl)]))
  for (const s of samplers.values()) { await s.sample(); await sleep(INTERVAL_MS); await s.sample() }
  const perSample = new Map<Impl, number[]>(IMPLS.map(i => [i, []]))
  const perBatchSelf = new Map<Impl, number[]>(IMPLS.map(i => [i, []]))
  const perBatchWithChildren = new Map<Impl, number[]>(IMPLS.map(i => [i, []]))
  const perBatchChildren = new Map<Impl, number[]>(IMPLS.map(i => [i, []]))
  for (let round = 0; round < ROUNDS; round++) {
    for (const impl of round % 2 === 0 ? IMPLS : [...IMPLS].reverse()) {
      const sampler = samplers.get(impl) as HostSampler
      await sleep(INTERVAL_MS)
      const b0 = procCpuMs()
      for (let i = 0; i < BATCH; i++) {
        if (i > 0) await sleep(INTERVAL_MS)
        const u0 = cpuUsageMs()
        await sampler.sample()
        perSample.get(impl)?.push(cpuUsageMs() - u0)
      }
      const b1 = procCpuMs()
      perBatchSelf.get(impl)?.push((b1.self - b0.self) / BATCH)
      perBatchChildren.get(impl)?.push((b1.children - b0.children) / BATCH)
      perBatchWithChildren.get(impl)?.push((b1.self - b0.self + b1.children - b0.children) / BATCH)
    }
  }
  const out: Record<string, unknown> = {}
  for (const impl of IMPLS) {
    out[impl] = {
      samples: (perSample.get(impl) ?? []).length,
      sampleCallCpuMs: spread(perSample.get(impl) ?? []),
      batchCpuMsPerSample: {
        self: spread(perBatchSelf.get(impl) ?? []),
        children: spread(perBatchChildren.get(impl) ?? []),
        withChildren: spread(perBatchWithChildren.get(impl) ?? [])
      }
    }
  }
  return out as Record<Impl, unknown>
}

interface ChildReport { firstWallMs: number, firstCpuMs: { self: number, children: number }, refreshWallMs: number, refreshCpuMs: { self: number, children: number } }

async function main (): Promise<void> {
  if (!readFileSync('/proc/stat', 'utf8').startsWith('cpu')) throw new Error('bench:sampler needs Linux (/proc/stat)')
  // First sample and capacity re-read: fresh processes, the implementations alternating.
  const firsts = new Map<Impl, ChildReport[]>(IMPLS.map(i => [i, []]))
  for (let run = 0; run < FIRST_RUNS; run++) {
    for (const impl of run % 2 === 0 ? IMPLS : [...IMPLS].reverse()) {
      const out = await runChild(impl, null)
      firsts.get(impl)?.push(JSON.parse(out) as ChildReport)
    }
  }
  const first: Record<string, unknown> = {}
  for (const impl of IMPLS) {
    const rs = firsts.get(impl) ?? []
    first[impl] = {
      runs: rs.length,
      wallMs: spread(rs.map(r => r.firstWallMs)),
      cpuMsWithChildren: spread(rs.map(r => r.firstCpuMs.self + r.firstCpuMs.children)),
      childrenCpuMs: spread(rs.map(r => r.firstCpuMs.children)),
      capacityReread: {
        wallMs: spread(rs.map(r => r.refreshWallMs)),
        cpuMsWithChildren: spread(rs.map(r => r.refreshCpuMs.self + r.refreshCpuMs.children))
      }
    }
  }
  // Programs started, under strace (which slows everything: CPU figures come from the runs above).
  let programs: Record<string, unknown> | string
  if (spawnSync('strace', ['-V']).status !== 0) {
    programs = 'not measured: strace is not installed'
  } else {
    programs = {}
    const dir = await mkdtemp(path.join(os.tmpdir(), 'bench-sampler-'))
    try {
      for (const impl of IMPLS) {
        const file = path.join(dir, `${impl.replace(' ', '-')}.trace`)
        await runChild(impl, file)
        const phases = countExecs(await readFile(file, 'utf8'))
        const firstP = phases['first-start'] ?? { execs: 0, programs: {} }
        const per = phases['first-end'] ?? { execs: 0, programs: {} }
        const refresh = phases['periodic-end'] ?? { execs: 0, programs: {} }
        programs[impl] = {
          firstSample: firstP.execs,
          firstSampleTop: top(firstP.programs),
          perPeriodicSample: r3(per.execs / COUNT_SAMPLES),
          periodicTop: top(per.programs),
          capacityReread: refresh.execs,
          capacityRereadTop: top(refresh.programs)
        }
      }
    } finally {
      await rm(dir, { recursive: true, force: true })
    }
  }
  const periodicOut = await periodic()
  const ratio = (key: 'sampleCallCpuMs' | 'withChildren'): number => {
    const get = (impl: Impl): number => {
      const p = periodicOut[impl] as { sampleCallCpuMs: { median: number }, batchCpuMsPerSample: { withChildren: { median: number } } }
      return key === 'sampleCallCpuMs' ? p.sampleCallCpuMs.median : p.batchCpuMsPerSample.withChildren.median
    }
    return r3(get('kernel files') / get('systeminformation'))
  }
  console.log(JSON.stringify({
    node: process.version,
    cpus: os.cpus().length,
    settings: { ROUNDS, BATCH, INTERVAL_MS, FIRST_RUNS, COUNT_SAMPLES },
    periodic: periodicOut,
    ratioAfterOverBefore: { sampleCallCpu: ratio('sampleCallCpuMs'), cpuWithChildren: ratio('withChildren') },
    firstSample: first,
    programsStarted: programs
  }))
}

const childAt = process.argv.indexOf('--child')
if (childAt >= 0) {
  const impl = process.argv[childAt + 1] as Impl
  if (!IMPLS.includes(impl)) throw new Error(`--child takes one of ${IMPLS.join(', ')}`)
  await child(impl)
} else {
  await main()
}
