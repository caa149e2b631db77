/**
 * Smoke test of bench:failover's code (bench/lib/failover-run.ts) at reduced sizes: one baseline
 * boot, one real failover in namespaces, 20 simulated runs. The numbers must be there and make
 * sense (the restart not before the fence delay, the answer after the restart, one copy, one VIP
 * carrier, restarts in the simulation and no double start).
 *
 * Needs root, QEMU, the test guest and a built dist/; without them it FAILS with the reason.
 * About 2 minutes.
 */
import t from 'tap'
import { netnsUnavailable } from './netns/testbed.js'
import { compiledCli } from './integration/cluster-harness.js'
import { buildTestGuest } from './guest/guest.js'
import { realFailovers, simulatedRuns, type Summary } from '../bench/lib/failover-run.js'

const why = await netnsUnavailable()
let cli: string | null = null
let guestDir: string | null = null
try { cli = compiledCli() } catch (err) { t.fail((err as Error).message) }
try { guestDir = buildTestGuest() } catch (err) { t.fail(`QEMU or the test guest is missing: ${(err as Error).message}`) }

t.test('simulated part', async t => {
  const s = simulatedRuns({ runs: 20, seed: 123_000 })
  t.equal(s.runs, 20)
  t.ok((s.restarts as number) > 0, `restarts happened (${String(s.restarts)})`)
  t.equal(s.doubleStarts, 0, 'no double start')
  t.same(s.violations, { S1: 0, S4: 0, S5: 0 }, 'no S1, S4 or S5 violation (VIPs modelled)')
  const nr = s.vmsNotRunning as { total: number, byReason: Record<string, number> }
  t.equal((s.vmsRunningAtEnd as number) + nr.total, s.vms, 'every VM is running at the end or has a reason')
  t.equal(nr.byReason.unexplained, 0, 'no VM left not running without a reason')
  t.equal(nr.byReason['gave up after other start failures'], 0, 'no VM given up after a failure the simulator did not inject')
  t.equal(nr.total, nr.byReason['gave up after injected start failures'], `the only reason: given up after injected start failures (${nr.total})`)
  t.equal(s.vmsLeftFailed, nr.total, 'each VM left failed is counted with its reason')
})

if (why !== null) {
  t.fail(`bench:failover's real part cannot run: ${why}`)
} else if (cli !== null && guestDir !== null) {
  const cliPath = cli
  const dir = guestDir
  t.test('real part, one failover', async t => {
    const r = await realFailovers({ cli: cliPath, guestDir: dir, failovers: 1, boots: 1, log: s => { t.comment(s) } })
    const answering = r.answeringMs as Summary
    const timing = r.timing as { fenceDelayMs: number, productionDefault: boolean, watchdogSec: number }
    t.equal(timing.productionDefault, true, 'the production default HA timing is measured')
    t.equal(timing.fenceDelayMs, 15_300, 'fence delay 15.3 s (requiredFenceDelayTicks of the defaults)')
    t.equal(timing.watchdogSec, 8, 'emulated watchdogs of 8 s')
    // The restarted agent learns the HA owner (it claims nothing until it has caught up with the
    // held claims) and every agent agrees on it within the rejoin wait of 120 s.
    t.equal(r.rejoinError, null, 'the killed host rejoined: every agent quorate and agreeing on the owner within 120 s')
    const m = r.milestonesMs as Record<string, Summary>
    t.equal(r.repetitions, 1)
    t.equal(answering.samples.length, 1, 'one failover measured')
    t.ok(m.guestHeartbeat!.median! > timing.fenceDelayMs, 'the restart came after the fence delay')
    t.ok(m.claimed!.median! >= m.detected!.median!, 'claim after detection')
    t.ok(answering.median! > m.qemuStarted!.median!, 'the answer after QEMU started')
    t.ok((r.baselineBootMs as Summary).median! > 0, 'baseline boot measured')
    t.equal(r.maxConcurrentCopies, 1, 'one copy at a time')
    t.equal(r.maxVipCarriers, 1, 'one VIP carrier at a time')
    t.same(r.runningCopiesAfterRejoin, [1], 'one copy after the killed host came back')
    t.equal(r.clientOnNewOwnerMac, true)
  })
}
