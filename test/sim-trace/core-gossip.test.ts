// Goal: the decentralised mode's views can come from the agents' own cores gossiping over the
// simulated network (--gossip core), and then they really do: what a host sees of a peer is what
// its core received, so a peer whose links lose everything is never seen with a newer report and
// drops out of the view once suspected, and a peer's new load shows in the others' views only
// after its report spread. Admission stays authoritative (no violation) with these views.
// Method: (1) CoreGossip alone, 30 hosts: change one host's load and watch it reach the others'
// agent views; isolate another host (every frame to or from it lost) and check no one gets a
// report of it made after that, and that it leaves the views. (2) A slice of 20110303 (40 hosts,
// 52 VMs, 6 hours) in decentralised mode with core gossip (10 % link loss), snapshot and agent
// views, and with the age model: no admission violation, no host over RAM; the core views hold
// reports of the current step (age 0), which the age model (age >= 1) never gives.
import t from 'tap'
import { CoreGossip, defaultCoreGossipOptions } from '../../agent/sim/trace/core-gossip.js'
import { defaultPolicyConfig } from '../../policies/config.js'
import type { HostSample } from '../../agent/core/types.js'
import { findPlanetlabDir, loadDay } from '../../agent/sim/trace/traces.js'
import { defaultModel } from '../../agent/sim/trace/model.js'
import { TraceSim } from '../../agent/sim/trace/engine.js'
import { AGE_SLOTS, runDecentralised, type DecentralStats } from '../../agent/sim/trace/decentral.js'

const cap = { cpuCores: 2, cpuMipsPerCore: 2000, memMiB: 4096, netMbps: 1000 }
function sample (i: number, util: number): HostSample {
  return { cpuUtil: util, memUsedMiB: 512, netMbps: 0, capacity: cap, vms: [{ id: `v${i}`, vcpus: 1, memMiB: 512, cpuUtil: util, memUsedMiB: 512, state: 'running' }] }
}

t.test('views are what the cores received', t => {
  const n = 30
  const ids = Array.from({ length: n }, (_, i) => String(i))
  const cg = new CoreGossip(ids, { ...defaultCoreGossipOptions(), seed: 7 }, defaultPolicyConfig())
  const util = ids.map(() => 0.2)
  const step = (): void => cg.step(ids.map((_id, i) => sample(i, util[i] as number)))
  for (let s = 0; s < 3; s++) step()
  const demandOf = (viewer: number, host: string): number | undefined => cg.agentView(viewer).hosts.find(h => h.id === host)?.vms[0]?.cpuDemandMips
  t.equal(demandOf(0, '5'), 0.2 * 4000, 'host 0 sees host 5 at its reported load')
  // host 5's load changes: the others see it only once its new report reached them
  util[5] = 0.7
  const before = cg.held(0, 5)?.seq ?? 0
  step()
  step()
  const after = cg.held(0, 5)?.seq ?? 0
  t.ok(after > before, `host 0 got a newer report of host 5 (seq ${before} -> ${after})`)
  t.equal(demandOf(0, '5'), 0.7 * 4000, 'host 0 sees host 5 at its new load')
  let seen = 0
  for (let i = 0; i < n; i++) if (i !== 5 && demandOf(i, '5') === 0.7 * 4000) seen++
  t.ok(seen >= n - 3, `${seen} of ${n - 1} hosts see host 5's new load after two steps`)

  // host 9 loses every frame from now on
  cg.network.isolate('9')
  const lastSeq = cg.ownSeq(9)
  util[9] = 0.9
  let newer = 0
  let inViews = n - 1
  for (let s = 0; s < 60; s++) {
    step()
    inViews = 0
    for (let i = 0; i < n; i++) {
      if (i === 9) continue
      if ((cg.held(i, 9)?.seq ?? 0) > lastSeq) newer++
      if (cg.agentView(i).hosts.some(h => h.id === '9')) inViews++
    }
  }
  t.ok(cg.ownSeq(9) > lastSeq + 50, `host 9 kept making reports (seq ${lastSeq} -> ${cg.ownSeq(9)})`)
  t.equal(newer, 0, 'no host ever held a report of host 9 made after its links went down')
  t.equal(inViews, 0, 'host 9 left every view (no longer held alive)')
  t.ok(cg.network.stats.blocked > 0, `frames to and from host 9 were dropped (${cg.network.stats.blocked})`)
  t.end()
})

t.test('decentralised slice with core gossip', t => {
  const dir = findPlanetlabDir()
  if (dir === null) { t.fail('PlanetLab traces not found: expected data/planetlab in the repository'); t.end(); return }
  const full = loadDay(dir, '20110303')
  const trace = { ...full, names: full.names.slice(0, 52), util: full.util.slice(0, 52) }
  const model = { ...defaultModel(), hosts: 40, limitSec: 6 * 3600 }
  const net = { delayTicksMin: 1, delayTicksMax: 2, loss: 0.1, duplicate: 0.02 }
  const run = (o: Parameters<typeof runDecentralised>[2]): { m: ReturnType<typeof runDecentralised>, st: DecentralStats } => {
    const st: DecentralStats = { proposed: 0, refused: {} }
    const m = runDecentralised(new TraceSim(model, trace), 'AGENT', o, st)
    return { m, st }
  }
  const core = run({ seed: 3, gossip: 'core', coreGossip: { network: net } })
  const agent = run({ seed: 3, gossip: 'core', coreView: 'agent', coreGossip: { network: net } })
  const mod = run({ seed: 3 })
  for (const [name, r] of [['core snapshot', core], ['core agent', agent], ['model', mod]] as const) {
    t.equal(r.m.admissionViolations, 0, `${name}: every admitted move fit its target (independent check)`)
    t.equal(r.m.ramOverHostSteps, 0, `${name}: no host over its RAM`)
  }
  const ages = core.st.viewAges ?? []
  const total = ages.reduce((a, b) => a + b, 0)
  t.ok(total > 0 && (core.st.views ?? 0) > 0, `core views were built (${core.st.views ?? 0} views, ${total} peer entries)`)
  t.ok((ages[0] ?? 0) > 0, `core views hold reports of the current step (${ages[0] ?? 0} of ${total})`)
  t.ok((ages[1] ?? 0) > 0, `and of the step before (${ages[1] ?? 0})`)
  t.equal(mod.st.viewAges?.[0] ?? 0, 0, 'the age model never gives a current-step report (age >= viewAgeSteps = 1)')
  t.ok((core.st.network?.lost ?? 0) > 0 && (core.st.network?.duplicated ?? 0) > 0, `the network lost ${core.st.network?.lost ?? 0} and duplicated ${core.st.network?.duplicated ?? 0} frames`)
  t.equal(ages.length, AGE_SLOTS, 'age histogram has its slots')
  t.ok(core.m.migrations > 0, `core-gossip agents migrated (${core.m.migrations})`)
  t.end()
})
