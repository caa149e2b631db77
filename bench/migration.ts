/**
 * bench:migration — live migration of a real guest over a shaped 1 Gbit/s link, Starling's
 * convergence policy against QEMU's defaults. Needs root (network namespaces, tc) and QEMU.
 *
 * Two network namespaces (source and destination hosts) on a bridge, each host's egress shaped
 * with a tc token bucket to LINK_MBIT (default 1000) with a queue of QUEUE_MS (default 5) ms. QEMU runs inside the namespaces (TCG unless
 * the host has usable hardware KVM); the guest is the test guest of test/guest (a Debian kernel
 * whose init rewrites a working set, prints a heartbeat every 10 ms and checks a checksum of
 * every page). Guests, MEM_MIB (default 256) of RAM each:
 *   idle      64 MiB working set, verified but never rewritten
 *   moderate  64 MiB working set rewritten at MODERATE_MIBPS (default 16) MiB/s
 *   heavy     64 MiB working set rewritten as fast as the vCPU can (more than the link carries)
 * Policies:
 *   starling       planMigration() from the guest's measured dirty rate and the measured link
 *                  goodput, then stepConvergence() on every progress sample (downtime ramp,
 *                  post-copy fallback); no bandwidth cap (the link is the cap)
 *   qemu-defaults  nothing set beyond QEMU's defaults (128 MiB/s cap, 300 ms downtime limit, no
 *                  capabilities); cancelled and reported not converged after DEFAULTS_CAP_S
 *                  (default 20) seconds
 * Experiments: GUESTS (default idle,moderate,heavy) and POLICIES (default starling,qemu-defaults)
 * pick the cases; POLICY (JSON) replaces fields of the default convergence policy, e.g.
 * POLICY='{"maxDirtySyncs":30}'; PREEMPT=0 turns postcopy-preempt off (default: on where QEMU has it);
 * MULTIFD=N gives Starling's runs N multifd channels (default 0: off, as the agents run; with
 * multifd the driver leaves postcopy-preempt off).
 * Each run boots a fresh guest. RUNS (default 10) runs per guest and policy, except the heavy
 * guest under QEMU's defaults: RUNS_HEAVY_DEFAULTS (default 2), as each run waits for the cap.
 * A run takes 15-25 s under TCG (the heavy guest under QEMU's defaults the cap more), so the
 * default takes about 15-20 minutes; RUNS=1 GUESTS=moderate is a quick look.
 * Measured per run: QEMU's total time, the downtime from the guest's heartbeat gap (host clock),
 * QEMU's downtime, RAM bytes QEMU sent and bytes on the link (tc), and whether the guest's memory
 * held. The physical limit is guest RAM / link rate (QEMU skips zero pages, so a guest can beat
 * it; `wireAtLinkRateMs` is the floor for the bytes actually sent). Starling's runs pass the
 * policy's dirty-sync cap to the driver, as the agent does. Every run's integrity verdict is in the
 * output (per case: `intact` of `runs`), with the console lines that show a broken guest: under
 * TCG with QEMU before 9.0 a guest whose RAM is a multiple of 256 KiB loses writes in migration
 * (the driver pads it). Prints one JSON object on stdout; progress on stderr. Cleans up every namespace and QEMU it started, also on failure or Ctrl-C.
 */
import { execFileSync } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { QemuDriver } from '../agent/adapters/qemu-driver.js'
import { silentLogger } from '../agent/lib/logger.js'
import { createMigrationLink, netnsUnavailable, type MigrationLink } from './lib/netbed.js'
import { MiB, runMigration, type GuestCase, type PolicyName, type RunContext, type RunResult } from './lib/migration-run.js'
import { summarize, judgeTargets } from './lib/migration-report.js'
import type { ConvergencePolicy } from '../agent/core/migration/convergence.js'
import { guestKernel } from '../test/guest/guest.js'

const env = (k: string, d: number): number => {
  const v = process.env[k]
  if (v === undefined || v === '') return d
  const n = Number(v)
  if (!Number.isFinite(n) || n < 0) throw new Error(`${k} must be a non-negative number (got "${v}")`)
  return n
}

const MEM_MIB = env('MEM_MIB', 256)
const LINK_MBIT = env('LINK_MBIT', 1000)
const QUEUE_MS = env('QUEUE_MS', 5)
const STARLING_MAX_BW_MIBPS = env('STARLING_MAX_BW_MIBPS', 0)
const WS_MIB = env('WS_MIB', 64)
const MODERATE_MIBPS = env('MODERATE_MIBPS', 16)
const RUNS = Math.max(1, Math.round(env('RUNS', 10)))
const RUNS_HEAVY_DEFAULTS = Math.round(env('RUNS_HEAVY_DEFAULTS', 2))
const DEFAULTS_CAP_MS = env('DEFAULTS_CAP_S', 20) * 1000
const POLICY_OVERRIDE = JSON.parse(process.env.POLICY ?? '{}') as Partial<ConvergencePolicy>
const PREEMPT: boolean | 'auto' = process.env.PREEMPT === '0' ? false : process.env.PREEMPT === '1' ? true : 'auto'
const MULTIFD = env('MULTIFD', 0)
const POLICIES = (process.env.POLICIES ?? 'starling,qemu-defaults').split(',').map(s => s.trim()).filter(s => s !== '') as PolicyName[]
const ONLY = (process.env.GUESTS ?? 'idle,moderate,heavy').split(',').map(s => s.trim()).filter(s => s !== '')

const say = (msg: string): void => { process.stderr.write(`[bench:migration] ${msg}\n`) }

function repoRoot (): string {
  let dir = path.dirname(fileURLToPath(import.meta.url))
  for (let i = 0; i < 5; i++) {
    if (fs.existsSync(path.join(dir, 'package.json')) && fs.existsSync(path.join(dir, 'test', 'guest', 'build.sh'))) return dir
    dir = path.dirname(dir)
  }
  throw new Error('cannot find the repository root (test/guest/build.sh)')
}

function qemuVersion (): string {
  try {
    return execFileSync('qemu-system-x86_64', ['--version'], { encoding: 'utf8' }).split('\n')[0] ?? ''
  } catch (err) {
    throw new Error(`qemu-system-x86_64 cannot run (${(err as Error).message}); install the Debian package qemu-system-x86`)
  }
}

async function main (): Promise<void> {
  const started = performance.now()
  const loadAtStart = os.loadavg().map(x => Math.round(x * 100) / 100)
  const why = await netnsUnavailable()
  if (why !== null) throw new Error(`bench:migration needs network namespaces: ${why}`)
  const qemu = qemuVersion()
  const root = repoRoot()
  say('building the test guest')
  const guestDir = execFileSync('bash', [path.join(root, 'test/guest/build.sh')], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] }).trim().split('\n').pop() ?? ''
  const guests: GuestCase[] = ([
    { name: 'idle', wsMiB: WS_MIB, rate: 0 },
    { name: 'moderate', wsMiB: WS_MIB, rate: MODERATE_MIBPS },
    { name: 'heavy', wsMiB: WS_MIB, rate: 'max' }
  ] satisfies GuestCase[]).filter(g => ONLY.includes(g.name))

  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'starling-bench-mig-'))
  let link: MigrationLink | null = null
  let src: QemuDriver | null = null
  let dst: QemuDriver | null = null
  try {
    link = await createMigrationLink({ rateMbit: LINK_MBIT, queueMs: QUEUE_MS, tmpDir: tmp })
    const l = link
    const goodput = await l.probeGoodput(2000)
    say(`link shaped to ${LINK_MBIT} Mbit/s; TCP goodput ${(goodput / 1e6).toFixed(1)} MB/s`)
    const common = { accel: 'auto' as const, dieWithAgent: true, killOnClose: true, startTimeoutMs: 30_000, postcopyPreempt: PREEMPT }
    src = new QemuDriver({ ...common, runDir: path.join(tmp, 'src'), qemuBinary: l.qemuLauncher(l.source) }, { logger: silentLogger() })
    dst = new QemuDriver({ ...common, runDir: path.join(tmp, 'dst'), qemuBinary: l.qemuLauncher(l.destination) }, { logger: silentLogger() })
    const ctx: RunContext = {
      src,
      dst,
      listenIp: l.destination.ip,
      kernel: guestKernel(guestDir),
      initrd: path.join(guestDir, 'initramfs.cpio'),
      memMiB: MEM_MIB,
      plannerBandwidthBytesPerS: goodput,
      defaultsCapMs: DEFAULTS_CAP_MS,
      starlingMaxBandwidthBytes: STARLING_MAX_BW_MIBPS * MiB,
      txBytes: async () => await l.txBytes(l.source),
      say,
      policyOverride: POLICY_OVERRIDE,
      multifd: MULTIFD
    }
    const physicalLimitMs = (MEM_MIB * MiB * 8) / (LINK_MBIT * 1e6) * 1000
    const runs: RunResult[] = []
    for (let i = 0; i < RUNS; i++) {
      for (const g of guests) {
        for (const policy of POLICIES) {
          if (g.name === 'heavy' && policy === 'qemu-defaults' && i >= RUNS_HEAVY_DEFAULTS) continue
          const r = await runMigration(ctx, g, policy, i + 1)
          runs.push(r)
          say(`${g.name}/${policy} #${i + 1}: dirty ${r.dirtyRateMiBps.toFixed(1)} MiB/s (guest) ${r.dirtyRateQemuMiBps.toFixed(1)} (QEMU), ${r.outcome} ${r.mode}, total ${String(r.totalMs)} ms, heartbeat gap ${r.downtimeHeartbeatMs?.toFixed(1) ?? '-'} ms, QEMU downtime ${String(r.downtimeQemuMs)} ms, ${(r.ramTransferredBytes / MiB).toFixed(1)} MiB, ${r.dirtySyncs} syncs, integrity ${r.integrity.ok ? 'ok' : 'BROKEN: ' + r.integrity.detail}${r.error !== undefined ? `, error: ${r.error}` : ''}`)
        }
      }
    }
    const summary = summarize(runs, physicalLimitMs, LINK_MBIT * 1e6)
    const out = {
      bench: 'migration',
      setup: {
        accel: src.accel,
        accelReason: src.accelReason,
        qemu,
        guestMemMiB: MEM_MIB,
        workingSetMiB: WS_MIB,
        moderateRateMiBps: MODERATE_MIBPS,
        link: { rateMbit: LINK_MBIT, shaping: `tc tbf on each host's egress, burst 256 KiB, queue ${QUEUE_MS} ms`, tcpGoodputMBps: Math.round(goodput / 1e4) / 100 },
        physicalLimitMs: Math.round(physicalLimitMs),
        defaultsCapMs: DEFAULTS_CAP_MS,
        postcopyPreempt: PREEMPT,
        multifd: MULTIFD,
        policyOverride: POLICY_OVERRIDE,
        hostCpus: os.availableParallelism(),
        loadAverageAtStart: loadAtStart,
        loadAverageAtEnd: os.loadavg().map(x => Math.round(x * 100) / 100),
        runsPerCase: RUNS,
        runsHeavyDefaults: Math.min(RUNS, RUNS_HEAVY_DEFAULTS),
        downtimeMeasure: 'host time between the last heartbeat line read from the source console and the first from the target (the guest prints one every 10 ms; the serial files are polled every 2 ms)'
      },
      results: summary,
      targets: judgeTargets(summary, runs, physicalLimitMs),
      runs,
      durationS: Math.round((performance.now() - started) / 100) / 10
    }
    process.stdout.write(JSON.stringify(out, null, 2) + '\n')
  } finally {
    await src?.close()
    await dst?.close()
    await link?.destroy()
    fs.rmSync(tmp, { recursive: true, force: true })
  }
}

main().then(() => { process.exit(0) }, (err: unknown) => {
  say(`failed: ${err instanceof Error ? err.stack ?? err.message : String(err)}`)
  process.exit(1)
})
