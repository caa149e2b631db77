/**
 * HA failover that a client sees: a host dies and its protected VM answers again at its VIP
 * (needs root, QEMU and a built dist/; fails with the reason otherwise).
 *
 * Goal: kill -9 of the agent AND the QEMU of the host that runs the HA-protected guest g1: g1
 * runs again on another host (its serial heartbeat), the VIP bound to it moves with it, and the
 * guest itself answers HTTP at VIP:8080 from a client namespace (a new boot token, so it is the
 * restarted copy); never two copies of g1 at once, never two hosts carrying the VIP; the killed
 * host's agent comes back without starting a second copy; a second failover (of the new owner)
 * works the same way.
 *
 * Method: ha-vip.ts: three host namespaces and a client on a bridge, one agent per host (100 ms
 * ticks, the QEMU driver, TCG), the test guest with a NIC (QEMU user networking forwards the
 * host's port 8080 to the guest's httpd). HA timing: the production default (no ha.timing in the
 * configurations: fence delay 15.3 s, the minimum requiredFenceDelayTicks allows). Every host
 * holds an emulated watchdog device (8 s; its reset kills the host's agent and QEMU): each
 * agent must report itself fenced, and the killed host's watchdog, left open without the magic
 * character by the kill -9, must fire. Copies are judged from outside the agents: live QEMU processes (pid
 * files), growing serial logs, `ip -n` for the VIP's carriers, and the client's HTTP answers.
 * Run: npm run build && npx tap test/netns/ha-vip.test.ts  (2-3 minutes; the guest's boot under
 * TCG dominates and grows with the machine's load)
 */
import t from 'tap'
import { netnsUnavailable } from './testbed.js'
import { compiledCli } from '../integration/cluster-harness.js'
import { buildTestGuest } from '../guest/guest.js'
import { requiredFenceDelayTicks } from '../../agent/core/ha/ha-config.js'
import { sleep } from './vip-agents.js'
import { DEFAULT_TIMING, TICK_MS, watchdogSec, createHaVipBed, haStatus, killOwner, rejoin, runningCopies, waitSteady } from './ha-vip.js'

const why = await netnsUnavailable()
let cli: string | null = null
let guestDir: string | null = null
try { cli = compiledCli() } catch (err) { t.fail((err as Error).message) }
try { guestDir = buildTestGuest() } catch (err) { t.fail(`QEMU or the test guest is missing: ${(err as Error).message}`) }
if (why !== null) {
  t.fail(`network namespace tests cannot run: ${why}`)
} else if (cli !== null && guestDir !== null) {
  const cliPath = cli
  const dir = guestDir
  t.test('HA VM with a VIP: a host dies, the guest answers at its VIP from another host', async t => {
    t.equal(DEFAULT_TIMING.fenceDelayTicks, requiredFenceDelayTicks(DEFAULT_TIMING), `fence delay ${DEFAULT_TIMING.fenceDelayTicks * TICK_MS} ms, the safe minimum`)
    const hb = await createHaVipBed(cliPath, dir)
    t.equal(hb.timing, DEFAULT_TIMING, 'the bed runs the production default timing')
    t.equal(watchdogSec(hb.timing), 8, 'emulated watchdogs of 8 s')
    t.teardown(async () => { await hb.destroy() })
    const { c } = hb
    c.startAll()
    const s0 = await waitSteady(hb, 180_000)
    t.pass(`g1 runs on ${s0.owner} and answers at ${hb.address}:8080 (${s0.token}), steady ${s0.ms} ms after the waits began`)
    t.same(await runningCopies(c), [s0.owner], `one running copy, on ${s0.owner}`)
    t.same(await c.holders(hb.address), [s0.owner], `${s0.owner} alone carries the VIP`)
    for (const h of c.hosts) {
      const st = await haStatus(hb, h.name)
      t.equal(st?.selfFenced, true, `${h.name} holds its watchdog and says it is fenced`)
      t.ok(c.watchdogs.get(h.name)!.isArmed, `${h.name}'s emulated watchdog is armed (pets ${c.watchdogs.get(h.name)!.pets})`)
    }
    t.equal(c.resets.length, 0, 'no watchdog reset while steady')

    const fo = await killOwner(hb, s0.owner, s0.token, 150_000)
    t.comment(`failover 1: ${JSON.stringify(fo)}`)
    t.not(fo.newOwner, s0.owner, `g1 runs again on ${fo.newOwner}`)
    t.not(fo.token, s0.token, 'the answer comes from a new boot of the guest')
    t.ok(fo.watchdogResetMs !== null && fo.watchdogResetMs >= watchdogSec(hb.timing) * 1000 - 1100, `${fo.killed}'s watchdog reset it ${String(fo.watchdogResetMs)} ms after the kill (timeout ${watchdogSec(hb.timing)} s, pets every second)`)
    t.ok(fo.bootedMs > DEFAULT_TIMING.fenceDelayTicks * TICK_MS, `not before the fence delay (booted ${fo.bootedMs} ms after the kill)`)
    // HA's own part is bounded; the guest's boot under TCG on a loaded machine is not (30-40 s seen).
    t.ok(fo.qemuStartedMs !== null && fo.qemuStartedMs < 30_000, `restarted ${String(fo.qemuStartedMs)} ms after the kill`)
    t.ok(fo.vipOwnerMs !== null && fo.vipOwnerMs < 30_000, `VIP taken ${String(fo.vipOwnerMs)} ms after the kill`)
    t.ok(fo.answeringMs > (fo.qemuStartedMs ?? 0), `the guest answers at the VIP ${fo.answeringMs} ms after the kill (boot ${fo.answeringMs - (fo.qemuStartedMs ?? 0)} ms)`)
    t.equal(fo.neighbourMac, fo.newOwnerMac, 'the client sends to the new owner\'s MAC')
    t.same(await c.holders(hb.address), [fo.newOwner], `${fo.newOwner} alone carries the VIP`)
    t.same(await runningCopies(c), [fo.newOwner], `one running copy, on ${fo.newOwner}`)
    const st = await haStatus(hb, fo.newOwner)
    t.equal(st?.restartsDone, 1, `${fo.newOwner} counts the restart`)

    // The killed host's agent comes back (its QEMU is gone): it must not start a second copy.
    const s1 = await rejoin(hb, fo.killed, 120_000)
    t.equal(s1.owner, fo.newOwner, `after ${fo.killed} rejoins, g1 stays on ${fo.newOwner}`)
    await sleep(2000)
    t.same(await runningCopies(c), [fo.newOwner], 'still one running copy')

    // Again, from the new owner: the guest moves on to a third place or back.
    const fo2 = await killOwner(hb, fo.newOwner, s1.token, 150_000)
    t.comment(`failover 2: ${JSON.stringify(fo2)}`)
    t.not(fo2.newOwner, fo.newOwner, `g1 runs again on ${fo2.newOwner}`)
    t.not(fo2.token, s1.token, 'a new boot answers')
    t.ok(fo2.bootedMs > DEFAULT_TIMING.fenceDelayTicks * TICK_MS, `not before the fence delay (booted ${fo2.bootedMs} ms after the kill)`)
    t.ok(fo2.qemuStartedMs !== null && fo2.qemuStartedMs < 30_000, `restarted ${String(fo2.qemuStartedMs)} ms after the kill`)
    t.ok(fo2.answeringMs > (fo2.qemuStartedMs ?? 0), `the guest answers at the VIP ${fo2.answeringMs} ms after the kill`)
    t.equal(fo2.neighbourMac, fo2.newOwnerMac, 'the client sends to the new owner\'s MAC')
    t.same(await c.holders(hb.address), [fo2.newOwner], `${fo2.newOwner} alone carries the VIP`)
    t.same(await runningCopies(c), [fo2.newOwner], `one running copy, on ${fo2.newOwner}`)

    await hb.watch.stop()
    t.equal(hb.watch.maxCopies, 1, `never two g1 QEMU processes at once (${hb.watch.copySamples} samples)`)
    t.equal(hb.watch.maxCarriers, 1, `never two hosts carrying the VIP (${hb.watch.carrierSamples} samples)`)
    t.ok(hb.watch.copySamples > 100 && hb.watch.carrierSamples > 20, 'the watch sampled')
    t.same(c.resets.map(r => r.host).sort(), [fo.killed, fo2.killed].sort(), 'a watchdog reset for each killed host, and none for a survivor')
  })
}
