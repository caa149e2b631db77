/**
 * bench:failover's measurements, also run with small sizes by its smoke test.
 *
 * (a) Real failovers (needs root, QEMU, the test guest, a built dist/): test/netns/ha-vip.ts's bed
 *     (three host namespaces and a client, one agent per host with 100 ms ticks, the production
 *     default HA timing unless another is given, an emulated 8 s watchdog device per host, and the
 *     QEMU driver; an HA-protected TCG guest with a NIC and a VIP bound to it). Each repetition kills
 *     -9 the agent and the QEMU of the host that runs the guest (then runs its unit's stop hook)
 *     and times, from the kill: the survivors declaring it dead, the new owner's claim (after the
 *     fence delay), the grants, QEMU started, the VIP taken, the guest's first heartbeat, and the
 *     first HTTP answer of the new guest at VIP:8080 from the client. The killed agent is
 *     restarted between repetitions. Baseline in the same run: the same guest booted by QEMU
 *     alone (spawn to its first HTTP answer), the floor of any restart that boots it.
 * (b) Simulated runs: agent/sim/scenarios.ts randomFaultRun on the one simulator (the real
 *     AgentCore on every host; the random-fault test's runs: 2-5 hosts, power losses, hangs, agent
 *     crashes, symmetric, one-way and three-way partitions, loss, heals, then a liveness phase),
 *     S1-S5 checked after every tick; a double start is a run where a VM ran on two hypervisors at
 *     once (S1) or was started while another copy still ran (S4). Runs that end in a defect the
 *     simulator found and that is not fixed yet (scenarios.ts KNOWN_DEFECTS) are counted apart,
 *     with their seeds.
 */
import { spawn } from 'node:child_process'
import { createServer } from 'node:net'
import http from 'node:http'
import { randomFaultRun, type KnownDefect, type NotRunningReason } from '../../agent/sim/scenarios.js'
import { DEFAULT_TIMING, TICK_MS, createHaVipBed, killOwner, netGuest, rejoin, runningCopies, waitSteady, watchdogSec, type FailoverResult } from '../../test/netns/ha-vip.js'
import { requiredFenceDelayTicks, type HaConfig } from '../../agent/core/ha/ha-config.js'
import { sleep } from '../../test/lib/wait.js'

const round = (x: number): number => Math.round(x * 10) / 10

export function median (xs: readonly number[]): number | null {
  const s = [...xs].sort((a, b) => a - b)
  const m = Math.floor(s.length / 2)
  return s.length === 0 ? null : s.length % 2 === 1 ? s[m]! : (s[m - 1]! + s[m]!) / 2
}

export interface Summary { median: number | null, min: number | null, max: number | null, samples: number[] }

export function summary (xs: readonly number[]): Summary {
  return xs.length === 0
    ? { median: null, min: null, max: null, samples: [] }
    : { median: round(median(xs)!), min: round(Math.min(...xs)), max: round(Math.max(...xs)), samples: xs.map(round) }
}

async function freePort (): Promise<number> {
  return await new Promise((resolve, reject) => {
    const s = createServer()
    s.once('error', reject)
    s.listen(0, '127.0.0.1', () => {
      const a = s.address()
      const port = typeof a === 'object' && a !== null ? a.port : 0
      s.close(() => resolve(port))
    })
  })
}

async function httpGet (url: string, timeoutMs: number): Promise<string | null> {
  return await new Promise(resolve => {
    const req = http.get(url, { timeout: timeoutMs, agent: false }, res => {
      let body = ''
      res.setEncoding('utf8')
      res.on('data', (d: string) => { body += d })
      res.on('end', () => resolve(res.statusCode === 200 ? body.trim() : null))
      res.on('error', () => resolve(null))
    })
    req.on('timeout', () => req.destroy(new Error('timeout')))
    req.on('error', () => resolve(null))
  })
}

/** The guest booted by QEMU alone on loopback: spawn to its first HTTP answer, ms. */
export async function baselineBoot (guestDir: string, timeoutMs = 120_000): Promise<number> {
  const g = netGuest(guestDir)
  const port = await freePort()
  const args = [
    '-machine', 'pc,accel=tcg', '-m', `${g.memMiB}M`, '-smp', String(g.vcpus), '-nodefaults', '-no-user-config', '-display', 'none', '-vga', 'none',
    '-serial', 'null', '-kernel', g.kernel, '-initrd', g.initrd, '-append', g.append,
    '-netdev', `user,id=n0,hostfwd=tcp:127.0.0.1:${port}-:80`, '-device', 'virtio-net-pci,netdev=n0,romfile='
  ]
  const t0 = performance.now()
  const p = spawn('qemu-system-x86_64', args, { stdio: 'ignore' })
  const kill = (): void => { if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL') }
  process.once('exit', kill)
  try {
    while (performance.now() - t0 < timeoutMs) {
      if (p.exitCode !== null) throw new Error(`QEMU exited with code ${p.exitCode}`)
      const body = await httpGet(`http://127.0.0.1:${port}/`, 500)
      if (body?.startsWith('starling-test-guest') === true) return performance.now() - t0
      await sleep(50)
    }
    throw new Error(`the guest did not answer within ${timeoutMs} ms`)
  } finally {
    const done = new Promise(resolve => p.once('exit', resolve))
    kill()
    if (p.exitCode === null && p.signalCode === null) await done
    process.removeListener('exit', kill)
  }
}

export interface RealOptions {
  cli: string
  guestDir: string
  failovers: number
  boots: number
  log?: (s: string) => void
  /** Another HA timing than the production default (reported with its label). */
  timing?: { ha: HaConfig, label: string }
}

export async function realFailovers (o: RealOptions): Promise<Record<string, unknown>> {
  const log = o.log ?? (() => {})
  const boots: number[] = []
  for (let i = 0; i < o.boots; i++) {
    boots.push(await baselineBoot(o.guestDir))
    log(`baseline boot ${i + 1}/${o.boots}: ${Math.round(boots[i]!)} ms`)
  }
  const hb = await createHaVipBed(o.cli, o.guestDir, o.timing !== undefined ? { timing: o.timing.ha } : {})
  const timing = hb.timing
  const runs: FailoverResult[] = []
  const copiesAfter: number[] = []
  let rejoinError: string | null = null
  try {
    hb.c.startAll()
    let steady = await waitSteady(hb, 180_000)
    log(`steady: g1 on ${steady.owner}`)
    for (let i = 0; i < o.failovers; i++) {
      const r = await killOwner(hb, steady.owner, steady.token, 120_000)
      runs.push(r)
      log(`failover ${i + 1}/${o.failovers}: ${r.killed} -> ${r.newOwner}, answering after ${r.answeringMs} ms`)
      try {
        steady = await rejoin(hb, r.killed, 120_000)
      } catch (err) {
        // Keep the failovers measured so far; the reason is in the output (and the bench fails).
        rejoinError = `after failover ${i + 1}, ${r.killed} rejoining: ${(err as Error).message.split('; last seen:')[0]!}`
        log((err as Error).message)
        // Whatever the rejoined agent's view, the VM must still run once.
        copiesAfter.push((await runningCopies(hb.c)).length)
        break
      }
      copiesAfter.push((await runningCopies(hb.c)).length)
    }
  } finally {
    await hb.watch.stop()
    await hb.destroy()
  }
  const pick = (f: (r: FailoverResult) => number | null): number[] => runs.map(f).filter((x): x is number => x !== null)
  const fenceDelayMs = timing.fenceDelayTicks * TICK_MS
  const answering = summary(pick(r => r.answeringMs))
  const boot = summary(boots)
  const floor = boot.median === null ? null : fenceDelayMs + boot.median
  const result = {
    repetitions: runs.length,
    timing: {
      profile: o.timing?.label ?? 'production default (no ha.timing in the configurations: defaultHaConfig), 100 ms ticks',
      productionDefault: o.timing === undefined,
      ha: timing,
      fenceDelayMs,
      safeMinimumFenceDelayTicks: requiredFenceDelayTicks(timing),
      productionDefaultFenceDelayMs: DEFAULT_TIMING.fenceDelayTicks * TICK_MS,
      /** Every host's emulated watchdog device (a FIFO; its reset kills the host's agent and QEMU). */
      watchdogSec: watchdogSec(timing)
    },
    /** Kill to the new guest's first HTTP answer at the VIP, from the client. Target <= 20000 ms. */
    answeringMs: answering,
    targetMs: 20_000,
    medianWithinTarget: answering.median !== null && answering.median <= 20_000,
    /** Milestones after the kill (ms). */
    milestonesMs: {
      detected: summary(pick(r => r.detectionMs)),
      claimed: summary(pick(r => r.claimMs)),
      granted: summary(pick(r => r.grantedMs)),
      qemuStarted: summary(pick(r => r.qemuStartedMs)),
      vipOwned: summary(pick(r => r.vipOwnerMs)),
      guestHeartbeat: summary(pick(r => r.bootedMs)),
      answering
    },
    /** Phases: detection; fence-delay wait (detection to claim); claim round (claim to grants); QEMU start; guest boot (QEMU up to first answer); VIP taken after QEMU up. */
    phasesMs: {
      detection: summary(pick(r => r.detectionMs)),
      waitForFenceDelay: summary(pick(r => r.claimMs !== null && r.detectionMs !== null ? r.claimMs - r.detectionMs : null)),
      claimRound: summary(pick(r => r.grantedMs !== null && r.claimMs !== null ? r.grantedMs - r.claimMs : null)),
      qemuStart: summary(pick(r => r.qemuStartedMs !== null && r.grantedMs !== null ? r.qemuStartedMs - r.grantedMs : null)),
      guestBootToAnswer: summary(pick(r => r.qemuStartedMs !== null ? r.answeringMs - r.qemuStartedMs : null)),
      vipAfterQemuStart: summary(pick(r => r.vipOwnerMs !== null && r.qemuStartedMs !== null ? r.vipOwnerMs - r.qemuStartedMs : null))
    },
    /** Kill to the VM restarted with its VIP in place (QEMU started and the VIP taken): HA's own part, before the guest's boot. */
    restartedWithVipMs: summary(pick(r => r.qemuStartedMs !== null && r.vipOwnerMs !== null ? Math.max(r.qemuStartedMs, r.vipOwnerMs) : null)),
    /** The same guest booted by QEMU alone on this machine in this run: spawn to first HTTP answer. */
    baselineBootMs: boot,
    /** answering minus the baseline boot (medians): the failover of a guest that would boot at once. */
    answeringMinusBaselineBootMs: answering.median === null || boot.median === null ? null : round(answering.median - boot.median),
    /** answering / (fence delay + baseline boot): what HA adds beyond the wait it must make and the boot. */
    ratioToFloor: floor === null || answering.median === null ? null : Math.round(answering.median / floor * 100) / 100,
    clientOnNewOwnerMac: runs.every(r => r.neighbourMac === r.newOwnerMac),
    newBootTokenEachTime: new Set(runs.map(r => r.token)).size === runs.length,
    /** Kill to the killed host's emulated watchdog reset (its device left open without 'V' by the kill -9). */
    watchdogResetMs: summary(pick(r => r.watchdogResetMs)),
    maxConcurrentCopies: hb.watch.maxCopies,
    maxVipCarriers: hb.watch.maxCarriers,
    runningCopiesAfterRejoin: copiesAfter,
    /** Why the repetitions stopped early (a killed host that did not rejoin in time), or null. */
    rejoinError,
    runs
  }
  return result
}

export interface SimOptions { runs: number, seed: number }

export function simulatedRuns (o: SimOptions): Record<string, unknown> {
  const t0 = performance.now()
  const faults = { powerLosses: 0, hangs: 0, agentCrashes: 0, watchdogResets: 0, partitions: 0, isolations: 0, cuts: 0, lost: 0, startFailuresInjected: 0, stopHangsInjected: 0 }
  let restarts = 0
  let s1Runs = 0
  let s4Runs = 0
  let s5Runs = 0
  let maxVipOverlap = 0
  let doubleStartRuns = 0
  let notLive = 0
  let failedVms = 0
  const badSeeds: number[] = []
  const knownDefects: Partial<Record<KnownDefect, number[]>> = {}
  const notRunningByReason: Record<NotRunningReason, number> = { 'gave up after injected start failures': 0, 'gave up after other start failures': 0, 'HA stop never completed': 0, unexplained: 0 }
  const notRunningExamples: Array<{ seed: number, vm: string, reason: NotRunningReason }> = []
  let vms = 0
  let vmsRunning = 0
  for (let i = 0; i < o.runs; i++) {
    const seed = o.seed + i
    const r = randomFaultRun(seed, { vips: true })
    restarts += r.haRestarts
    for (const k of Object.keys(faults) as Array<keyof typeof faults>) faults[k] += r.faults[k]
    maxVipOverlap = Math.max(maxVipOverlap, r.maxVipOverlap)
    if (r.knownDefect !== null) { (knownDefects[r.knownDefect] ??= []).push(seed); continue }
    const v = r.violation ?? ''
    const s1 = v.startsWith('S1')
    const s4 = v.startsWith('S4')
    if (s1) s1Runs++
    if (v.startsWith('S5')) s5Runs++
    if (s4) s4Runs++
    if ((s1 && v.includes(' runs on ')) || (s4 && v.includes('still runs'))) doubleStartRuns++
    if (r.violation !== null && badSeeds.length < 10) badSeeds.push(seed)
    if (!r.live && r.violation === null) notLive++
    failedVms += r.failed
    vms += r.vms
    vmsRunning += r.vms - r.notRunning.length
    for (const x of r.notRunning) {
      notRunningByReason[x.reason]++
      if (notRunningExamples.length < 10) notRunningExamples.push({ seed, ...x })
    }
  }
  return {
    runs: o.runs,
    seeds: `${o.seed}..${o.seed + o.runs - 1}`,
    restarts,
    doubleStarts: doubleStartRuns,
    /** Runs stopped by a safety violation, by property (runs with a known defect are counted in knownDefects instead). */
    violations: { S1: s1Runs, S4: s4Runs, S5: s5Runs },
    /** Runs that ended in a defect the simulator found and that is not fixed yet, by defect, with their seeds. */
    knownDefects,
    /** Longest run of ticks with two hosts carrying a VIP (a make-before-break hand-off overlap, bounded), over all runs. */
    maxVipOverlapTicks: maxVipOverlap,
    notLiveAfterHeal: notLive,
    /** VMs over the runs without a known defect (HA-protected and not), and those running exactly once at the end. */
    vms,
    vmsRunningAtEnd: vmsRunning,
    /** VMs given up after maxAttempts failed starts (status failed: left to the operator) in some agent's eyes at the end. */
    vmsLeftFailed: failedVms,
    /**
     * Every VM not running exactly once at the end, by reason (scenarios.ts notRunningReason):
     * 'gave up after injected start failures' = maxAttempts failed starts in a row, each one the
     * simulator injected (the runs inject start failures with probability 0.1 in 30 % of them);
     * the other reasons would be bugs.
     */
    vmsNotRunning: { total: vms - vmsRunning, byReason: notRunningByReason, examples: notRunningExamples },
    faults,
    badSeeds,
    wallMs: Math.round(performance.now() - t0)
  }
}
