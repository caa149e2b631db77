/**
 * Protecting and unprotecting a VM live, agreed by a majority from any member (the `ha.vms` of
 * the replicated cluster configuration; agent/core/ha/index.ts, live protection).
 * Method: the real AgentCore on four simulated hosts (HA armed, every host fenced, no VM
 * protected at the start), an unprotected VM p running on one host; the changes go through the
 * configuration log as `starling ha protect|unprotect` sends them (the home is where p runs, the
 * protection's `since` the version of the change). The safety checkers (agent/sim/checkers.ts:
 * S1 never two copies, S4 restarts only with a majority and no other copy, S6, S7) run after
 * every tick; a violation throws. Seeds vary the network's delays and who proposes.
 */
import t from 'tap'
import { SimCluster } from '../../agent/sim/sim-cluster.js'
import { SimHypervisor } from '../../agent/sim/sim-hypervisor.js'
import { SafetyCheckers } from '../../agent/sim/checkers.js'
import { simMigrationConfig } from '../../agent/sim/scenarios.js'
import { Prng } from '../../agent/core/prng.js'
import type { ClusterDoc, HostId } from '../../agent/core/index.js'

const P = 'p'

function cluster (seed: number, rules?: (ids: string[], name: (id: string) => string) => ClusterDoc['rules']): { sim: SimCluster, hv: SimHypervisor, ids: HostId[], starts: Array<{ host: HostId, tick: number }> } {
  const ids = [...new SimCluster({ seed, hosts: 4, hexIds: true }).ids]
  const name = (id: string): string => `n${id.slice(0, 8)}`
  const hv = new SimHypervisor({ seed: seed * 7 + 3, copyTicks: 4 })
  hv.addVm(ids[0]!, P, 1024)
  const sim = new SimCluster({
    seed, hosts: 4, hypervisor: hv, sampleIntervalTicks: 2,
    migration: { ...simMigrationConfig(), autoBalance: false, ...(rules !== undefined ? { rules: rules(ids, name) } : {}) },
    capacity: { cpuCores: 8, cpuMipsPerCore: 1000, memMiB: 16384, netMbps: 10000 },
    network: { delayTicksMin: 1, delayTicksMax: 1 + (seed % 3) },
    clusterConfig: {},
    ha: { vms: [] }
  })
  const starts: Array<{ host: HostId, tick: number }> = []
  sim.onReady((host, rd) => { for (const c of rd.ha) if (c.kind === 'haStart' && c.vm === P) starts.push({ host, tick: sim.now }) })
  return { sim, hv, ids, starts }
}

/** What `starling ha protect p` proposes from `from`: home where p runs now, since = the version of the change. */
function protect (sim: SimCluster, hv: SimHypervisor, from: HostId): string | null {
  const where = hv.running().get(P) ?? []
  if (where.length !== 1) return null
  const next = (sim.core(from)?.clusterConfig()?.latest.version ?? 0) + 1
  return sim.configChange(from, d => d.ha?.vms.some(v => v.id === P) === true ? d : {
    ...d,
    ha: { vms: [...(d.ha?.vms ?? []), { id: P, home: sim.docMember(where[0]!).name, vcpus: 1, memMiB: 1024, cpuMips: 500, image: 'p.img', since: next }] }
  }, `protect ${P}`)
}

function unprotect (sim: SimCluster, from: HostId): string | null {
  return sim.configChange(from, d => ({ ...d, ha: { vms: (d.ha?.vms ?? []).filter(v => v.id !== P) } }), `unprotect ${P}`)
}

t.test('protect live, crash the home: restarted exactly once where the rules allow; unprotect, crash: not restarted', async t => {
  let bad = 0
  for (let seed = 1; seed <= 8; seed++) {
    const target = (ids: string[]): string => ids[1 + (seed % 3)]!
    const { sim, hv, ids, starts } = cluster(seed, (ids, name) => ({ vmVm: [], vmHost: [{ kind: 'affinity', vm: P, hosts: [name(ids[0]!), name(target(ids))], hard: true }] }))
    const checkers = new SafetyCheckers(sim, { capMemMiB: 16384 })
    const [H, , , X] = ids as [HostId, HostId, HostId, HostId]
    const T = target(ids)
    sim.run(40)
    t.equal(sim.core(H)!.haStatus()!.vms.length, 0, `seed ${seed}: nothing protected at the start`)
    const req = protect(sim, hv, X)
    sim.run(30)
    t.equal(sim.core(X)!.configOutcome(req!)?.status, 'committed', `seed ${seed}: the protection is agreed`)
    t.equal(sim.core(H)!.haStatus()!.vms.find(v => v.vm === P)?.role, 'running', `seed ${seed}: the home runs p as protected`)
    t.same(starts, [], `seed ${seed}: protecting a running VM starts nothing`)
    sim.crash(H)
    sim.run(400)
    const where = hv.running().get(P) ?? []
    if (where.length !== 1 || where[0] !== T || starts.length !== 1) { bad++; t.fail(`seed ${seed}: after the crash p runs on ${where.join(',') || 'no host'} after ${starts.length} start(s); the rule allows only ${T.slice(0, 8)}`) }
    // Unprotect from another member, then crash the host that runs it now.
    const by = ids.find(h => h !== T && h !== H)!
    const un = unprotect(sim, by)
    sim.run(30)
    t.equal(sim.core(by)!.configOutcome(un!)?.status, 'committed', `seed ${seed}: the unprotect is agreed`)
    t.equal(sim.core(T)!.haStatus()!.vms.length, 0, `seed ${seed}: p is no longer protected at its host`)
    t.same(hv.running().get(P), [T], `seed ${seed}: and keeps running there`)
    sim.crash(T)
    sim.run(400)
    if ((hv.running().get(P) ?? []).length !== 0 || starts.length !== 1) { bad++; t.fail(`seed ${seed}: unprotected p was restarted (${starts.length} starts)`) }
    t.ok(checkers.ticksChecked >= 900, `seed ${seed}: safety checked after every tick (${checkers.ticksChecked})`)
  }
  t.equal(bad, 0, 'protected: restarted once where allowed; unprotected: never')
})

t.test('protect / unprotect / protect racing with crashes: never two copies; a VM left protected runs once', async t => {
  let protectedAtEnd = 0
  let notRunning = 0
  for (let seed = 1; seed <= 16; seed++) {
    const p = new Prng(seed * 97 + 1)
    const { sim, hv, ids } = cluster(seed)
    // Throws InvariantError (fails the test) on two copies, a restart without a majority, split majorities.
    const checkers = new SafetyCheckers(sim, { capMemMiB: 16384 })
    sim.run(40)
    type Step = { at: number, what: 'protect' | 'unprotect' | 'power' | 'agent' }
    const plan: Step[] = ([
      { at: p.int(5), what: 'protect' },
      { at: 5 + p.int(20), what: 'unprotect' },
      { at: 10 + p.int(30), what: 'protect' },
      { at: p.int(60), what: (p.chance(0.5) ? 'power' : 'agent') as 'power' | 'agent' }
    ] as Step[]).sort((a, b) => a.at - b.at)
    let k = 0
    for (let tick = 0; tick < 70; tick++) {
      while (k < plan.length && plan[k]!.at === tick) {
        const step = plan[k++]!
        const from = ids[p.int(ids.length)]!
        if (step.what === 'protect') protect(sim, hv, from)
        else if (step.what === 'unprotect') unprotect(sim, from)
        else {
          // The host that runs p, or another, loses power or its agent.
          const victim = p.chance(0.7) ? (hv.running().get(P) ?? [ids[0]!])[0]! : ids[p.int(ids.length)]!
          if (step.what === 'power') sim.powerLoss(victim, 5 + p.int(20)); else sim.agentCrash(victim, 3 + p.int(10))
        }
      }
      sim.tick()
    }
    sim.run(500)
    const running = ids.filter(h => sim.isRunning(h))
    const latest = running.map(h => sim.core(h)!.clusterConfig()!)
    t.equal(new Set(latest.map(c => c.latest.version)).size, 1, `seed ${seed}: every host ends on one version`)
    const isProtected = latest[0]!.doc?.ha?.vms.some(v => v.id === P) === true
    const where = hv.running().get(P) ?? []
    if (isProtected) {
      protectedAtEnd++
      if (where.length !== 1) { notRunning++; t.fail(`seed ${seed}: p is protected but runs on ${where.length} hosts`) }
    }
    t.ok(where.length <= 1, `seed ${seed}: p runs on ${where.length} host(s)`)
    t.ok(checkers.ticksChecked > 600, `seed ${seed}: checked every tick`)
  }
  t.ok(protectedAtEnd >= 4, `${protectedAtEnd} of 16 runs ended with p protected`)
  t.equal(notRunning, 0, 'every run that ended with p protected runs it once')
})

t.test('the home is cut off while the protection is agreed: p is never restarted beside its unfenced copy', async t => {
  let bad = 0
  for (let seed = 1; seed <= 8; seed++) {
    const { sim, hv, ids, starts } = cluster(seed)
    const checkers = new SafetyCheckers(sim, { capMemMiB: 16384 })
    const [H, , , X] = ids as [HostId, HostId, HostId, HostId]
    sim.run(40)
    // H is cut off at once: it never hears of the protection and does not fence p, while the
    // three others (a majority of four) agree it and see H silent far past the fence delay.
    sim.partition([[H], ids.filter(h => h !== H)])
    const req = protect(sim, hv, X)
    sim.run(300)
    t.equal(sim.core(X)!.configOutcome(req!)?.status, 'committed', `seed ${seed}: agreed by the three others`)
    t.equal(sim.core(H)!.haStatus()!.vms.length, 0, `seed ${seed}: H does not know p is protected`)
    if (starts.length !== 0) { bad++; t.fail(`seed ${seed}: p was started on ${starts.map(s => s.host.slice(0, 8)).join(',')} while H runs it`) }
    sim.heal()
    sim.run(200)
    // On learning the version H holds no majority yet (its leases are stale), so it fences its
    // copy at once (availability after a cut, never safety); the majority then restarts p once.
    t.equal((hv.running().get(P) ?? []).length, 1, `seed ${seed}: once healed, p runs once (on ${(hv.running().get(P) ?? []).map(h => h.slice(0, 8)).join(',')})`)
    t.ok(starts.length <= 1, `seed ${seed}: at most one start (${starts.length})`)
    t.ok(checkers.ticksChecked >= 540, `seed ${seed}: checked every tick`)
  }
  t.equal(bad, 0, 'never restarted beside a home that did not know it protects p')
})

t.test('members added just before and during the home\'s cut restart p once: the word of those that heard the home travels', async t => {
  // host C joins a few ticks before the home H is cut off (it hears H's beats, perhaps not yet its
  // claim on p), D joins during the cut and never hears H. Of five members three must grant:
  // A and B heard H speak of p, C and D only through them.
  let bad = 0
  for (let seed = 1; seed <= 12; seed++) {
    const ids = [...new SimCluster({ seed, hosts: 5, hexIds: true }).ids]
    const [H, A, B, C, D] = ids as [HostId, HostId, HostId, HostId, HostId]
    const hv = new SimHypervisor({ seed: seed * 7 + 3, copyTicks: 4 })
    hv.addVm(H, P, 1024)
    const sim = new SimCluster({
      seed, hosts: 5, hypervisor: hv, sampleIntervalTicks: 2,
      migration: { ...simMigrationConfig(), autoBalance: false },
      capacity: { cpuCores: 8, cpuMipsPerCore: 1000, memMiB: 16384, netMbps: 10000 },
      network: { delayTicksMin: 1, delayTicksMax: 1 + (seed % 3) },
      clusterConfig: { members: [H, A, B] },
      ha: { vms: [] }
    })
    const starts: HostId[] = []
    sim.onReady((host, rd) => { for (const c of rd.ha) if (c.kind === 'haStart' && c.vm === P) starts.push(host) })
    const checkers = new SafetyCheckers(sim, { capMemMiB: 16384 })
    sim.run(40)
    const req = protect(sim, hv, A)
    sim.run(30)
    t.equal(sim.core(A)!.configOutcome(req!)?.status, 'committed', `seed ${seed}: the protection is agreed`)
    const members = (h: HostId): number => sim.core(h)?.clusterConfig()?.latest.members.length ?? 0
    const add = (from: HostId, h: HostId): string | null => sim.configChange(from, d => ({ ...d, members: [...d.members, sim.docMember(h)] }), `add ${h.slice(0, 8)}`)
    t.ok(add(B, C) !== null, `seed ${seed}: C asked in`)
    for (let k = 0; k < 200 && !(members(C) === 4 && members(H) === 4); k++) sim.run(1)
    t.ok(members(C) === 4 && members(H) === 4, `seed ${seed}: C and H act on four members`)
    sim.run(2 + (seed % 6))
    sim.partition([[H], [A, B, C, D]])
    t.ok(add(A, D) !== null, `seed ${seed}: D asked in during the cut`)
    sim.run(400)
    t.equal(members(D), 5, `seed ${seed}: D is a member`)
    const where = hv.running().get(P) ?? []
    // H fenced its copy (the simulated hypervisor stops it); one of the others restarted p once.
    if (where.length !== 1 || where[0] === H || starts.length !== 1) { bad++; t.fail(`seed ${seed}: p runs on ${where.map(h => h.slice(0, 8)).join(',') || 'no host'} after ${starts.length} start(s)`) }
    t.ok(checkers.ticksChecked >= 470, `seed ${seed}: safety checked after every tick (${checkers.ticksChecked})`)
  }
  t.equal(bad, 0, 'restarted once by a majority that includes members who never heard the home')
})
