/**
 * Goal: deterministic regressions for HA defects the random-fault runs found, each set up on
 * purpose on the one simulator (the real AgentCore on every host; S1-S5 checked after every tick
 * by SafetyCheckers, which throw on a violation):
 *  - a stale resume: a host's fence-paused copy must never be resumed after another host booted
 *    the VM from its disk (found as seeds 20270160, 20270179, 20270270 and 20270464 of
 *    ha-random-faults-migration), while a copy paused during a short cut, before anyone took the
 *    VM over, is still resumed;
 *  - a stop that never completes (a hung hypervisor call) on a migration's target whose incoming
 *    copy was fenced: HA sends it again and reports it, so the host does not stay 'stopping' and
 *    the VM can be restarted elsewhere later (found as seed 777040 of ha-random-faults-vips);
 *  - a rejoin: an agent restarted with its persisted state, while another host holds the VM it
 *    owned, reports that host as the owner within a few ticks, also when its link to the owner
 *    comes up late (it used to claim at its old epoch before it heard the held claim, rank above
 *    it, and then show no owner for good: found with real agents, test/bench-failover.test.ts).
 * Method: three hosts, no loss, one-tick delays; a few seeds of the simulator's own streams.
 */
import t, { type Test } from 'tap'
import { randomWorld, type RandomWorld } from '../../agent/sim/scenarios.js'
import { InvariantError } from '../../agent/sim/checkers.js'
import type { HostId, VmId } from '../../agent/core/index.js'

const SEEDS = [1, 2, 3, 4, 5]

function world (seed: number, vmsPerHost: number): RandomWorld & { events: string[] } {
  const w = randomWorld(seed, { hosts: 3, tieBreaker: false, vmsPerHost, delayMax: 1, loss: 0, startFailure: 0, stopHang: 0 })
  const events: string[] = []
  w.sim.onEvent((h, e, tick) => { events.push(`${tick} ${h} ${e.kind} ${e.text}`) })
  return { ...w, events }
}

const runsOn = (w: RandomWorld, vm: VmId): HostId[] => w.hv.running().get(vm) ?? []
const roleOf = (w: RandomWorld, h: HostId, vm: VmId): string | undefined => w.sim.core(h)?.haStatus()?.vms.find(x => x.vm === vm)?.role

/** Runs `f`; a safety violation (the checkers throw) becomes a failed assertion with its message. */
function safely (t: Test, what: string, f: () => void): boolean {
  try {
    f()
    return true
  } catch (err) {
    if (!(err instanceof InvariantError)) throw err
    t.fail(`${what}: ${err.message}`)
    return false
  }
}

t.test('a fence-paused copy is never resumed once another host booted the VM from its disk', t => {
  // vm1-1 (pause policy) runs on h0001. h0001 is cut off: it pauses its copy, and the majority
  // boots the VM from its disk on another host X after the fence delay. X loses power and comes
  // back at once (its copy is gone; it releases its claim). Then the cut heals: h0001 asks to
  // resume its paused copy, which is older than the disk X's copy wrote. It must be destroyed,
  // and the VM booted from its disk again.
  for (const seed of SEEDS) {
    const w = world(seed, 2)
    const { sim } = w
    let x: HostId | undefined
    const ok = safely(t, `seed ${seed}`, () => {
      sim.run(30)
      t.same(runsOn(w, 'vm1-1'), ['h0001'], 'vm1-1 runs on h0001')
      sim.isolate('h0001')
      t.ok(sim.runUntil(() => runsOn(w, 'vm1-1').some(h => h !== 'h0001'), 200, 1), 'the majority restarted vm1-1 elsewhere')
      x = runsOn(w, 'vm1-1')[0]!
      t.equal(roleOf(w, 'h0001', 'vm1-1'), 'paused', 'h0001 holds a paused copy')
      sim.powerLoss(x, 5)
      sim.run(20)
      sim.heal()
      t.ok(sim.runUntil(() => runsOn(w, 'vm1-1').length === 1 && sim.ids.every(h => roleOf(w, h, 'vm1-1') !== 'paused'), 400, 1), 'vm1-1 runs once again, and no paused copy is left')
    })
    if (!ok) continue
    const resumed = w.events.filter(e => e.includes('vm vm1-1 became running') && e.includes('(resume)'))
    t.same(resumed, [], `seed ${seed}: the stale paused copy was not resumed`)
    t.ok(w.events.some(e => e.includes('vm vm1-1') && e.includes('h0001') && e.includes('destroy')), `seed ${seed}: h0001 destroyed its paused copy`)
  }
  t.end()
})

t.test('a copy paused during a short cut, before any takeover, is resumed', t => {
  for (const seed of SEEDS) {
    const w = world(seed, 2)
    const { sim } = w
    safely(t, `seed ${seed}`, () => {
      sim.run(30)
      sim.isolate('h0001')
      t.ok(sim.runUntil(() => roleOf(w, 'h0001', 'vm1-1') === 'paused', 40, 1), 'h0001 paused its copy when it lost the majority')
      sim.heal()
      t.ok(sim.runUntil(() => roleOf(w, 'h0001', 'vm1-1') === 'running', 100, 1), 'h0001 runs it again')
      t.same(runsOn(w, 'vm1-1'), ['h0001'], 'on h0001 only')
      t.ok(w.events.some(e => e.includes('h0001 ha-role vm vm1-1 became running') && e.includes('(resume)')), 'it was resumed, not booted again')
    })
  }
  t.end()
})

t.test('an HA stop that never completes is sent again and reported, and the VM can still be restarted', t => {
  // vm0-0 (stop policy) migrates from h0000 to h0001. While h0001 holds the incoming copy it is
  // cut off: it fences the copy, and the destroy hangs (the call never returns). The cut heals at
  // once (before h0001's watchdog would reset it). h0001 must not stay 'stopping' for good:
  // that would keep the VM from every other claimant. Then h0000 loses power for long: the VM
  // must be restarted elsewhere.
  for (const seed of SEEDS) {
    const w = world(seed, 1)
    const { sim } = w
    safely(t, `seed ${seed}`, () => {
      sim.run(30)
      sim.step('h0000', { type: 'operatorMigrate', vm: 'vm0-0', to: 'h0001' })
      t.ok(sim.runUntil(() => roleOf(w, 'h0001', 'vm0-0') === 'incoming', 50, 1), 'h0001 receives vm0-0')
      sim.stopHang = 1
      sim.isolate('h0001')
      t.ok(sim.runUntil(() => roleOf(w, 'h0001', 'vm0-0') === 'stopping', 50, 1), 'h0001 fences the incoming copy')
      sim.run(1)
      sim.heal()
      // Every stop hangs for a while (the first retries too), then the hypervisor answers again.
      sim.run(12)
      sim.stopHang = 0
      t.ok(sim.faults.stopHangsInjected > 0, `the stop hung (${sim.faults.stopHangsInjected} injected)`)
      t.ok(sim.runUntil(() => sim.ids.every(h => roleOf(w, h, 'vm0-0') !== 'stopping') && runsOn(w, 'vm0-0').length === 1, 100, 1), 'the stop completed after a retry, and vm0-0 runs once')
      t.ok(w.events.some(e => e.includes('h0001 ha-stop-stuck vm vm0-0')), 'the stuck stop was reported')
      const src = runsOn(w, 'vm0-0')[0]!
      sim.powerLoss(src, 400)
      t.ok(sim.runUntil(() => runsOn(w, 'vm0-0').length === 1 && runsOn(w, 'vm0-0')[0] !== src, 200, 1), `vm0-0 is restarted elsewhere after ${src} lost power`)
    })
  }
  t.end()
})

t.test('a restarted agent learns who holds the VM it owned, and claims nothing meanwhile', t => {
  // vm2-0 runs on h0002 (K), the highest host id, so a claim of K's at the epoch of the claim
  // that restarted the VM elsewhere ranks above it. K loses power; the majority restarts the VM
  // on X. K boots again with its persisted state; in the 'late link' case its link to X stays
  // down for 60 ticks (K sees a majority with the third host, and cannot hear X's held claim).
  const OWNER_WITHIN = 10
  for (const late of [false, true]) {
    for (const seed of SEEDS) {
      const w = world(seed, 1)
      const { sim } = w
      const K = 'h0002'
      const st = (h: HostId): { owner: HostId | null, role: string } | undefined => sim.core(h)?.haStatus()?.vms.find(x => x.vm === 'vm2-0')
      safely(t, `seed ${seed}`, () => {
        sim.run(30)
        sim.powerLoss(K, 100)
        t.ok(sim.runUntil(() => runsOn(w, 'vm2-0').length === 1, 200, 1), 'the majority restarted vm2-0')
        const x = runsOn(w, 'vm2-0')[0]!
        t.ok(sim.runUntil(() => sim.isRunning(K), 200, 1), `${K} is back`)
        const back = sim.now
        if (late) {
          sim.cut(x, K)
          sim.cut(K, x)
          sim.run(60)
          t.equal(st(K)?.owner, x, `${K}, cut off from ${x}, knows ${x} holds vm2-0 (from a refusal) ${sim.now - back} ticks after it came back`)
          sim.heal()
        }
        const from = sim.now
        t.ok(sim.runUntil(() => st(K)?.owner === x, OWNER_WITHIN, 1), `${late ? 'after the heal, ' : ''}${K} reports ${x} as the owner within ${OWNER_WITHIN} ticks (${sim.now - from})`)
        sim.run(200)
        t.equal(st(K)?.owner, x, `${K} still reports ${x} 200 ticks later`)
        t.same(sim.ids.map(h => st(h)?.owner), sim.ids.map(() => x), 'every host agrees')
        t.same(runsOn(w, 'vm2-0'), [x], `vm2-0 runs on ${x} only`)
        const claims = w.events.filter(e => e.includes(`${K} ha-role vm vm2-0 became claiming`))
        if (!late) t.same(claims, [], `${K} claimed nothing`)
        else t.ok(claims.length <= 1, `${K} claimed at most once (${claims.length}), refused`)
      })
    }
  }
  t.end()
})
