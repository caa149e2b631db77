/**
 * bench:failover — how long a dead host's HA VM takes to answer again at its VIP, and double
 * starts across simulated runs. Prints one JSON object.
 *
 * (a) Real: FAILOVERS (default 3) times, kill -9 of the agent and the QEMU of the host running an
 *     HA-protected TCG guest with a VIP bound to it, in network namespaces (needs root and QEMU);
 *     median, min and max of the time to the guest's first HTTP answer at the VIP from a client,
 *     with milestones (detection, claim, grants, QEMU start, VIP, guest boot) and a baseline
 *     measured in the same run: the guest booted by QEMU alone, BOOTS times (default 2). Target:
 *     <= 20 s. HA timing: the production default (the agents' configurations have no ha.timing;
 *     fence delay 15.3 s), every host with an emulated 8 s watchdog device. With TUNED=1 the
 *     shorter test/netns/ha-vip.ts TUNED_TIMING is measured too and reported beside it as
 *     `realTuned` (not the default).
 * (b) Simulated: SIM_RUNS (default 1000) seeded runs of the one simulator (the real AgentCore on
 *     every host) from SIM_SEED with power losses, hangs, agent crashes, partitions and loss, with
 *     a VIP per VM: runs, restarts, double starts and S1/S4/S5 violations (target 0), runs that
 *     ended in a known defect (simulated.knownDefects, with seeds), and every VM not running at
 *     the end, counted by reason (simulated.vmsNotRunning; only 'gave up after injected start
 *     failures' is expected).
 * Details: bench/lib/failover-run.ts. Takes about 4 minutes.
 */
import os from 'node:os'
import { netnsUnavailable } from '../test/netns/testbed.js'
import { compiledCli } from '../test/integration/cluster-harness.js'
import { buildTestGuest } from '../test/guest/guest.js'
import { realFailovers, simulatedRuns } from './lib/failover-run.js'
import { TUNED_TIMING } from '../test/netns/ha-vip.js'

const FAILOVERS = Number(process.env.FAILOVERS ?? 3)
const BOOTS = Number(process.env.BOOTS ?? 2)
const SIM_RUNS = Number(process.env.SIM_RUNS ?? 1000)
const SIM_SEED = Number(process.env.SIM_SEED ?? 7_000_000)
const TUNED = process.env.TUNED === '1'

async function main (): Promise<void> {
  const t0 = performance.now()
  const why = await netnsUnavailable()
  if (why !== null) {
    process.stderr.write(`bench:failover cannot run its real part: ${why}\n`)
    process.exitCode = 1
    return
  }
  const guestDir = buildTestGuest()
  const log = (s: string): void => { process.stderr.write(`${s}\n`) }
  const load = (): number[] => os.loadavg().map(x => Math.round(x * 100) / 100)
  const loadBefore = load()
  const real = await realFailovers({ cli: compiledCli(), guestDir, failovers: FAILOVERS, boots: BOOTS, log })
  const realTuned = TUNED
    ? await realFailovers({ cli: compiledCli(), guestDir, failovers: FAILOVERS, boots: 0, log, timing: { ha: TUNED_TIMING, label: 'TUNED_TIMING (test/netns/ha-vip.ts): a shorter profile, NOT the production default' } })
    : undefined
  const loadAfterReal = load()
  log(`simulating ${SIM_RUNS} runs`)
  const simulated = simulatedRuns({ runs: SIM_RUNS, seed: SIM_SEED })
  const nr = simulated.vmsNotRunning as { total: number, byReason: Record<string, number> }
  log(`simulated: ${String(simulated.vmsRunningAtEnd)}/${String(simulated.vms)} HA VMs running at the end; not running: ${nr.total}${nr.total > 0 ? ` (${Object.entries(nr.byReason).filter(([, n]) => n > 0).map(([k, n]) => `${n} ${k}`).join(', ')})` : ''}`)
  const out = { bench: 'failover', real, ...(realTuned !== undefined ? { realTuned } : {}), simulated, loadAverage: { before: loadBefore, afterReal: loadAfterReal, cores: os.cpus().length }, wallS: Math.round((performance.now() - t0) / 1000) }
  process.stdout.write(JSON.stringify(out, null, 2) + '\n')
  if (real.rejoinError !== null || (realTuned !== undefined && realTuned.rejoinError !== null)) process.exitCode = 1
}

main().catch(err => {
  process.stderr.write(`bench:failover failed: ${(err as Error).stack ?? String(err)}\n`)
  process.exitCode = 1
})
