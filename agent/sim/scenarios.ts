/**
 * Scenarios of the one simulator (SimCluster running the real AgentCore on every host, with
 * migration, HA, VIPs and replicas together), checked by SafetyCheckers (S1-S5) after every tick.
 *
 * randomFaultRun: one seeded run. A random cluster (2-5 hosts, a tie-breaker member where the
 * count is even and sometimes otherwise, 1-3 HA-protected VMs per host with a VIP each, one
 * unprotected stateless VM per host with a VIP of its own and replicas allowed), random faults
 * for a few hundred ticks (power losses, agent hangs and crashes, partitions in two and three,
 * isolation, one-way cuts, loss, heals, HA start failures and stop commands that hang), operator
 * migrations and replica requests at random; then a final heal and a bound within which every
 * VM must run exactly once again (or be given up after injected start failures, as designed)
 * and every VIP be carried by exactly the host that runs its VM, which owns it.
 */
import { localTestVipConfig, Prng, simHaConfig, type HaMemberSpec, type HaVmSpec, type HostId, type MigrationConfig, type VipSpec, type VmId } from '../core/index.js'
import { defaultMigrationConfig } from '../core/index.js'
import { InvariantError, SafetyCheckers } from './checkers.js'
import { SimCluster, type FaultCounts } from './sim-cluster.js'
import { SimHypervisor } from './sim-hypervisor.js'

/**
 * Why a VM does not run at the end of a run. 'HA stop never completed': some host's HA record of
 * the VM stays 'stopping' (a stop that never completed: HA sends it again with a back-off, so this
 * is a liveness failure, reported as one).
 */
export type NotRunningReason = 'gave up after injected start failures' | 'gave up after other start failures' | 'HA stop never completed' | 'unexplained'

/**
 * Defects of the core that this simulator found and that are not fixed yet. A run that ends in
 * one of them says which (RandomRunResult.knownDefect); the tests report those runs as todo,
 * loudly, with their seeds, never as passes.
 */
/** None at present: every violation and every run that does not settle fails its test. */
export const KNOWN_DEFECTS: Readonly<Record<string, string>> = {}
export type KnownDefect = string

export interface RandomRunOptions {
  /** Probability per tick of an operator migration of a random VM to a random host. @default 0 */
  migrations?: number
  /** A VIP for every VM. @default false */
  vips?: boolean
  /** Probability per tick of an operator request for a replica of an unprotected VM. @default 0 */
  replicas?: number
  /** Probability that an HA start fails during the fault phase. @default 0.1 in 30 % of the runs, else 0 */
  startFailure?: number
  /** Debugging: faults and the cores' events as text. */
  trace?: (line: string) => void
}

export interface RandomRunResult {
  seed: number
  hosts: number
  /** The first safety violation (the run stops there), or null. */
  violation: string | null
  /** The violation, or the run's not settling, is one of KNOWN_DEFECTS. */
  knownDefect: KnownDefect | null
  live: boolean
  ticks: number
  ticksToLive: number
  faults: FaultCounts
  /** Operator migrations asked for, and migrations committed (counted at their sources). */
  migrationsAsked: number
  migrationsCommitted: number
  replicasAsked: number
  replicasStarted: number
  haRestarts: number
  /** HA VMs given up (maxAttempts failed starts) in the eyes of some agent at the end. */
  failed: number
  vms: number
  notRunning: Array<{ vm: VmId, reason: NotRunningReason }>
  maxVipOverlap: number
  ticksChecked: number
  restartsChecked: number
}

/** Migration tunables for short simulated runs (the migration test's). */
export function simMigrationConfig (): MigrationConfig {
  return { ...defaultMigrationConfig(), autoBalance: false, leaseTicks: 30, intentTimeoutTicks: 20, prepareTimeoutTicks: 40, pollTicks: 2, resendTicks: 5, decisionTicks: 5, retainTicks: 5000 }
}

export interface RandomWorld {
  sim: SimCluster
  hv: SimHypervisor
  checkers: SafetyCheckers
  /** Hosts that may run VMs (the tie-breaker does not). */
  workers: HostId[]
  haVms: HaVmSpec[]
  plainVms: VmId[]
}

/** The cluster of a random run (also used by the targeted scenarios). */
export function randomWorld (seed: number, o: { vips?: boolean, replicas?: boolean, hosts?: number, tieBreaker?: boolean, vmsPerHost?: number, delayMax?: number, loss?: number, startFailure?: number, stopHang?: number } = {}): RandomWorld {
  const p = new Prng(seed)
  const n = o.hosts ?? 2 + p.int(4) // 2..5
  const tie = o.tieBreaker ?? (n === 2 || (n % 2 === 0 && p.chance(0.5)))
  const perHost = o.vmsPerHost ?? 1 + p.int(3)
  const delayMax = o.delayMax ?? 1 + p.int(2)
  const loss = o.loss ?? (p.chance(0.5) ? p.next() * 0.1 : 0)
  const startFailure = o.startFailure ?? (p.chance(0.3) ? 0.1 : 0)
  const stopHang = o.stopHang ?? (p.chance(0.2) ? 0.1 : 0)
  const total = n + (tie ? 1 : 0)
  const ids: HostId[] = Array.from({ length: total }, (_, i) => `h${String(i).padStart(4, '0')}`)
  const workers = ids.slice(0, n)
  const MEM = 16384
  const members: HaMemberSpec[] = ids.map((id, i) => i < n ? { id, cpuMips: 8000, memMiB: MEM } : { id, cpuMips: 0, memMiB: 0, tieBreaker: true })
  const haVms: HaVmSpec[] = []
  workers.forEach((h, i) => {
    for (let k = 0; k < perHost; k++) {
      const id = `vm${i}-${k}`
      haVms.push({ id, home: h, priority: k % 3, cpuMips: 1000, memMiB: 1024, source: { kind: 'shared', definition: `${id}.xml` }, fencePolicy: k % 2 === 0 ? 'stop' : 'pause' })
    }
  })
  const plainVms = workers.map((_, i) => `web${i}`)
  const vipSpecs: VipSpec[] = []
  if (o.vips === true) {
    ;[...haVms.map(v => v.id), ...plainVms].forEach((vm, i) => {
      vipSpecs.push({ id: `ip-${vm}`, address: `192.0.2.${10 + i}/24`, iface: 'eth0', binding: { kind: 'vm', vm } })
    })
  }
  const hv = new SimHypervisor({ seed: seed * 31 + 7, copyTicks: 6 })
  const sim = new SimCluster({
    seed,
    hosts: total,
    hypervisor: hv,
    capacity: { cpuCores: 8, cpuMipsPerCore: 1000, memMiB: MEM, netMbps: 10000 },
    sampleIntervalTicks: 2,
    migration: simMigrationConfig(),
    network: { delayTicksMin: 1, delayTicksMax: delayMax, loss },
    ha: { vms: haVms, members, config: simHaConfig(), startFailure, stopHang },
    ...(vipSpecs.length > 0 ? { vips: { specs: vipSpecs } } : {}),
    ...(o.replicas === true ? { replicas: { stateless: plainVms.map(vm => ({ vm, vcpus: 1, memMiB: 512 })), params: { mode: 'cost', bootSec: 1, overheadFraction: 0.02, migrationDegradation: 0.1, horizonSec: 300, retireBelow: 0.7 } } } : {})
  })
  for (const v of haVms) hv.addVm(v.home, v.id, v.memMiB)
  workers.forEach((h, i) => { hv.addVm(h, plainVms[i]!, 512) })
  const checkers = new SafetyCheckers(sim, { capMemMiB: MEM })
  return { sim, hv, checkers, workers, haVms, plainVms }
}

/** VMs given up by HA (maxAttempts failed starts) in the eyes of some running agent. */
function haFailed (sim: SimCluster, vm: VmId): boolean {
  for (const id of sim.ids) {
    const s = sim.core(id)?.haStatus()?.vms.find(x => x.vm === vm)
    if (s?.failed === true) return true
  }
  return false
}

function copies (hv: SimHypervisor, vm: VmId): number { return hv.running().get(vm)?.length ?? 0 }

/**
 * Why a VM does not run exactly once now, or null when it does. 'gave up after injected start
 * failures': some agent holds it failed (maxAttempts failed starts in a row, by design left to
 * the operator) and every failed start since it last ran was one the simulator injected, at least
 * as many as the attempts allowed. 'gave up after other start failures': held failed with a
 * failure the simulator did not inject among them. 'unexplained': neither running once nor given
 * up (a liveness bug). An unprotected VM whose newest copy died in a power loss is lost, as
 * physics says (no reason needed).
 */
export function notRunningReason (w: RandomWorld, vm: VmId): NotRunningReason | null {
  const { sim, hv } = w
  const spec = w.haVms.find(v => v.id === vm)
  if (spec === undefined) return copies(hv, vm) === 1 || (copies(hv, vm) === 0 && hv.lostToPowerLoss.has(vm)) ? null : 'unexplained'
  if (!haFailed(sim, vm)) {
    if (copies(hv, vm) === 1) return null
    return sim.ids.some(h => sim.core(h)?.haStatus()?.vms.find(x => x.vm === vm)?.role === 'stopping') ? 'HA stop never completed' : 'unexplained'
  }
  const f = sim.startFailures.get(vm) ?? { injected: 0, other: 0 }
  const max = spec.maxAttempts ?? sim.ha!.config.maxAttempts
  return f.other === 0 && f.injected >= max ? 'gave up after injected start failures' : 'gave up after other start failures'
}

/** Every agent runs, every VM runs once (or was given up, or lost with its host), every VIP is carried by its VM's host alone, which owns it. */
export function allSettled (w: RandomWorld): boolean {
  const { sim, hv } = w
  for (const id of sim.ids) if (!sim.isRunning(id)) return false
  const running = hv.running()
  for (const v of w.haVms) if ((running.get(v.id)?.length ?? 0) !== 1 && !haFailed(sim, v.id)) return false
  for (const vm of w.plainVms) if ((running.get(vm)?.length ?? 0) !== 1 && !hv.lostToPowerLoss.has(vm)) return false
  for (const spec of sim.vipSpecs) {
    const vm = spec.binding.kind === 'vm' ? spec.binding.vm : ''
    const runs = running.get(vm) ?? []
    const carriers = [...sim.carriers.get(spec.id)!]
    // A VM given up or lost: nothing to follow (a host may keep the address, one at most: S5).
    if (runs.length === 0 && carriers.length <= 1) continue
    if (runs.length !== 1 || carriers.length !== 1 || carriers[0] !== runs[0]) return false
    if (sim.core(runs[0]!)!.vips()?.vips.find(x => x.vip === spec.id)?.role !== 'owner') return false
  }
  return true
}

/** One seeded run: random faults for a few hundred ticks, then heal and wait for every VM (and VIP) to settle. */
export function randomFaultRun (seed: number, o: RandomRunOptions = {}): RandomRunResult {
  const p = new Prng(seed ^ 0x5bd1e995)
  const w = randomWorld(seed, { vips: o.vips === true, replicas: (o.replicas ?? 0) > 0, ...(o.startFailure !== undefined ? { startFailure: o.startFailure } : {}) })
  const { sim, hv, workers } = w
  const ids = sim.ids
  const trace = o.trace
  const log = (s: string): void => trace?.(`${sim.now} FAULT ${s}`)
  if (trace !== undefined) sim.onEvent((h, ev, tick) => { trace(`${tick} ${h} ${ev.text}`) })
  let migrationsAsked = 0
  let replicasAsked = 0
  let migrationsCommitted = 0
  let replicasStarted = 0
  sim.onEvent((_h, ev) => {
    if (ev.kind === 'replica' && ev.text.endsWith('running here')) replicasStarted++
  })
  const allVms = [...w.haVms.map(v => v.id), ...w.plainVms]
  const mp = new Prng(seed * 7 + 3) // operators' own stream: the fault schedule stays that of the seed
  const safetyTicks = 250 + p.int(150)
  let violation: string | null = null
  let live = false
  let ticksToLive = -1
  const bound = 1500
  try {
    for (let tick = 0; tick < safetyTicks; tick++) {
      if ((o.migrations ?? 0) > 0 && mp.chance(o.migrations ?? 0)) {
        const vm = allVms[mp.int(allVms.length)]!
        const dst = workers[mp.int(workers.length)]!
        const src = hv.running().get(vm)?.[0]
        if (src !== undefined && src !== dst && sim.isRunning(src)) { migrationsAsked++; sim.step(src, { type: 'operatorMigrate', vm, to: dst }) }
      }
      if ((o.replicas ?? 0) > 0 && mp.chance(o.replicas ?? 0)) {
        const vm = w.plainVms[mp.int(w.plainVms.length)]!
        const src = hv.running().get(vm)?.[0]
        const retire = mp.chance(0.3)
        if (src !== undefined && sim.isRunning(src)) { replicasAsked++; sim.step(src, { type: 'operatorReplicate', vm, retire }) }
      }
      if (p.chance(0.06)) {
        const h = ids[p.int(ids.length)]!
        switch (p.int(9)) {
          case 0: { const d = 1 + p.int(sim.rebootTicks); log(`power loss ${h} ${d}`); sim.powerLoss(h, d); break }
          case 1: { const d = 2 + p.int(20); log(`hang ${h} ${d}`); sim.hang(h, d); break }
          case 2: { const d = 1 + p.int(12); log(`agent crash ${h} ${d}`); sim.agentCrash(h, d); break }
          case 3: {
            const s = p.shuffle([...ids])
            const cut = 1 + p.int(ids.length - 1)
            log(`partition ${s.slice(0, cut).join(',')} | ${s.slice(cut).join(',')}`)
            sim.partition([s.slice(0, cut), s.slice(cut)])
            break
          }
          case 4: log(`isolate ${h}`); sim.isolate(h); break
          case 5: { const x = ids[p.int(ids.length)]!; if (x !== h) { log(`cut ${h}>${x}`); sim.cut(h, x) } break }
          case 6: sim.network.loss = p.next() * 0.3; log(`loss ${sim.network.loss}`); break
          case 7: log('heal'); sim.heal(); sim.network.loss = 0; break
          case 8: {
            const s = p.shuffle([...ids])
            const a = Math.max(1, Math.floor(s.length / 3))
            log(`split3 ${s.join(',')}`)
            sim.partition([s.slice(0, a), s.slice(a, 2 * a), s.slice(2 * a)])
            break
          }
        }
      }
      sim.tick()
    }
    log('final heal')
    sim.heal()
    sim.network.loss = 0
    sim.startFailure = 0
    sim.stopHang = 0
    const healedAt = sim.now
    let streak = 0
    let settledAt = -1
    for (let i = 0; i < bound && streak < 30; i++) {
      sim.tick()
      if (allSettled(w)) { if (streak++ === 0) settledAt = sim.now } else streak = 0
    }
    live = streak >= 30
    ticksToLive = live ? settledAt - healedAt : bound
  } catch (err) {
    if (!(err instanceof InvariantError)) throw err
    violation = err.message
  }
  for (const id of ids) for (const r of sim.core(id)?.migrations() ?? []) if (r.role === 'source' && r.state === 'committed') migrationsCommitted++
  const notRunning: RandomRunResult['notRunning'] = []
  if (violation === null) for (const vm of allVms) { const reason = notRunningReason(w, vm); if (reason !== null) notRunning.push({ vm, reason }) }
  const knownDefect: KnownDefect | null = null
  if (!live && violation === null && trace !== undefined) {
    for (const h of ids) for (const r of sim.core(h)?.migrations() ?? []) if (r.state !== 'committed' && r.state !== 'aborted') trace(`END migration ${r.id} of ${r.vm} on ${h}: ${r.role} ${r.state}`)
    for (const vm of allVms) trace(`END ${vm}: runs on ${(hv.running().get(vm) ?? []).join(',') || 'nothing'}; ${ids.map(h => `${h}:${JSON.stringify(sim.core(h)?.haStatus()?.vms.find(x => x.vm === vm)?.role ?? '-')}`).join(' ')}`)
    for (const spec of sim.vipSpecs) trace(`END VIP ${spec.id}: carried by ${[...sim.carriers.get(spec.id)!].join(',') || 'nobody'}; roles ${ids.map(h => `${h}:${sim.core(h)?.vips()?.vips.find(x => x.vip === spec.id)?.role ?? '-'}`).join(' ')}`)
  }
  sim.faults.lost = sim.network.stats.lost
  return {
    seed,
    hosts: ids.length,
    violation,
    knownDefect,
    live,
    ticks: sim.now,
    ticksToLive,
    faults: { ...sim.faults },
    migrationsAsked,
    migrationsCommitted,
    replicasAsked,
    replicasStarted,
    haRestarts: sim.haRestarts,
    failed: w.haVms.filter(v => haFailed(sim, v.id)).length,
    vms: allVms.length,
    notRunning,
    maxVipOverlap: w.checkers.maxVipOverlap,
    ticksChecked: w.checkers.ticksChecked,
    restartsChecked: w.checkers.restartsChecked
  }
}

export interface VipRunResult {
  seed: number
  violation: string | null
  knownDefect: KnownDefect | null
  /** After the quiet phase: each VIP has one owner all hosts agree on, which alone carries it (a VM's VIP: the VM's host). */
  live: boolean
  /** What is wrong at the end when not live. */
  problems: string[]
  ticks: number
  ticksChecked: number
  faults: FaultCounts
  movesAsked: number
  migrationsAsked: number
  maxVipOverlap: number
}

/**
 * VIP ownership under random interleavings (the VIP property scenario): five hosts, two group
 * VIPs (three hosts, and all five in reverse order of preference) and the VIP of an HA-protected
 * VM that migrates and is restarted; a network with delay, loss, duplication and reordering;
 * partitions in two or three, heals, power losses, agent crashes, operator moves of the group
 * VIPs, address effects that fail. A fault phase, then a quiet phase after which every VIP must
 * have settled. `mode` is the planned-move mode; with break-before-make no address is ever
 * carried by two hosts.
 */
export function vipFaultRun (seed: number, mode: 'make-before-break' | 'break-before-make', o: { faultTicks?: number, quietTicks?: number } = {}): VipRunResult {
  const p = new Prng(seed ^ 0x27d4eb2d)
  const ids = ['h0000', 'h0001', 'h0002', 'h0003', 'h0004']
  const specs: VipSpec[] = [
    { id: 'g1', address: '192.0.2.10/24', iface: 'eth0', binding: { kind: 'group', hosts: ids.slice(0, 3) } },
    { id: 'g2', address: '192.0.2.11/24', iface: 'eth0', binding: { kind: 'group', hosts: [...ids].reverse() } },
    { id: 'v1', address: '192.0.2.12/24', iface: 'eth0', binding: { kind: 'vm', vm: 'vm1' } }
  ]
  const MEM = 16384
  const hv = new SimHypervisor({ seed: seed * 31 + 7, copyTicks: 4 })
  const sim = new SimCluster({
    seed, hosts: 5, hypervisor: hv, sampleIntervalTicks: 2, migration: simMigrationConfig(),
    capacity: { cpuCores: 8, cpuMipsPerCore: 1000, memMiB: MEM, netMbps: 10000 },
    network: { delayTicksMin: 1, delayTicksMax: 3, loss: 0.05, duplicate: 0.03, reorder: 0.05 },
    ha: { vms: [{ id: 'vm1', home: ids[0]!, priority: 0, cpuMips: 1000, memMiB: 1024, source: { kind: 'shared', definition: 'vm1.xml' }, fencePolicy: 'stop' }], config: simHaConfig() },
    vips: { specs, config: { ...localTestVipConfig(), plannedMove: mode } }
  })
  sim.vipFailure = 0.03
  hv.addVm(ids[0]!, 'vm1', 1024)
  const checkers = new SafetyCheckers(sim, { capMemMiB: MEM, singleCarrier: mode === 'break-before-make' })
  const roleOf = (h: HostId, vip: string): string | undefined => sim.core(h)?.vips()?.vips.find(v => v.vip === vip)?.role
  let movesAsked = 0
  let migrationsAsked = 0
  let violation: string | null = null
  let live = false
  const problems: string[] = []
  const settledProblems = (): string[] => {
    const out: string[] = []
    for (const id of ids) if (!sim.isRunning(id)) out.push(`${id} is not running`)
    const vmAt = hv.running().get('vm1') ?? []
    for (const spec of specs) {
      const owners = ids.filter(h => roleOf(h, spec.id) === 'owner')
      const carriers = [...sim.carriers.get(spec.id)!]
      const seen = new Set(ids.map(h => sim.core(h)?.vips()?.vips.find(v => v.vip === spec.id)?.owner ?? 'none'))
      if (owners.length !== 1) { out.push(`${spec.id}: ${owners.length} owners`); continue }
      if (carriers.join() !== owners.join()) out.push(`${spec.id}: owner ${owners.join()} but carried by ${carriers.join() || 'nobody'}`)
      if (seen.size !== 1 || !seen.has(owners[0]!)) out.push(`${spec.id}: hosts disagree on the owner (${[...seen].join(',')})`)
      if (spec.binding.kind === 'vm' && vmAt.length === 1 && owners[0] !== vmAt[0]) out.push(`${spec.id}: owner ${owners.join()} but the VM runs on ${vmAt[0]!}`)
    }
    return out
  }
  try {
    for (let i = 0; i < (o.faultTicks ?? 400); i++) {
      if (p.chance(0.01)) { const k = p.chance(0.2) ? 3 : 2; const g: HostId[][] = Array.from({ length: k }, () => []); for (const id of ids) g[p.int(k)]!.push(id); sim.partition(g) }
      if (p.chance(0.015)) sim.heal()
      if (p.chance(0.006)) sim.powerLoss(ids[p.int(5)]!, 5 + p.int(25))
      if (p.chance(0.004)) sim.agentCrash(ids[p.int(5)]!, 1 + p.int(4))
      if (p.chance(0.02)) {
        const spec = specs[p.int(2)]!
        const hosts = spec.binding.kind === 'group' ? spec.binding.hosts : []
        const to = hosts[p.int(hosts.length)]!
        const owner = ids.find(h => roleOf(h, spec.id) === 'owner' && sim.isRunning(h))
        if (owner !== undefined) { movesAsked++; sim.step(owner, { type: 'operatorVipMove', vip: spec.id, to }) }
      }
      if (p.chance(0.02)) {
        const src = hv.running().get('vm1')?.[0]
        const to = ids[p.int(5)]!
        if (src !== undefined && src !== to && sim.isRunning(src)) { migrationsAsked++; sim.step(src, { type: 'operatorMigrate', vm: 'vm1', to }) }
      }
      sim.tick()
    }
    sim.heal()
    sim.network.loss = 0
    sim.network.duplicate = 0
    sim.network.reorder = 0
    sim.vipFailure = 0
    let streak = 0
    for (let i = 0; i < (o.quietTicks ?? 1000) && streak < 30; i++) {
      sim.tick()
      if (settledProblems().length === 0) streak++; else streak = 0
    }
    live = streak >= 30
    if (!live) problems.push(...settledProblems())
  } catch (err) {
    if (!(err instanceof InvariantError)) throw err
    violation = err.message
  }
  sim.faults.lost = sim.network.stats.lost
  return { seed, violation, knownDefect: null, live, problems, ticks: sim.now, ticksChecked: checkers.ticksChecked, faults: { ...sim.faults }, movesAsked, migrationsAsked, maxVipOverlap: checkers.maxVipOverlap }
}

export interface ConfigRunResult {
  seed: number
  violation: string | null
  /** After the quiet phase: every running host holds the same latest version, and every HA VM runs once. */
  live: boolean
  problems: string[]
  ticks: number
  ticksChecked: number
  /** Ticks at which two or more hosts held a majority and S6 compared them. */
  majorityPairsChecked: number
  changesAsked: number
  /** Versions decided (the latest version minus 1). */
  versions: number
  /** The member counts the versions went through, in order. */
  sizes: number[]
  faults: FaultCounts
  haRestarts: number
  /** Paused copies resumed (HA events). */
  resumes: number
}

/**
 * Membership changes of the replicated cluster configuration under faults, with HA armed: five
 * hosts, the first three members at version 1 with protected VMs, the other two added and removed
 * (one member per change, never below three) by operators on random running members, while hosts
 * crash, lose power, hang, and the network partitions, cuts, loses and heals. The checkers run
 * after every tick: no VM runs twice (S1), no two hosts hold majorities with no member in common
 * (S6), no two hosts act on different configurations of one version (S7). Then a quiet phase:
 * every running host must hold the same latest version and every protected VM run once.
 */
export function configFaultRun (seed: number, o: { faultTicks?: number, quietTicks?: number, trace?: (line: string) => void, end?: (sim: SimCluster) => void, rulesChanges?: boolean } = {}): ConfigRunResult {
  const p = new Prng(seed ^ 0x27d4eb2f)
  // Rules-only versions between the membership changes (their own stream: the faults stay those of the seed).
  const pr = o.rulesChanges === true ? new Prng(seed ^ 0x5bd1e995) : null
  const MEM = 16384
  const hv = new SimHypervisor({ seed: seed * 17 + 5, copyTicks: 6 })
  const probe = new SimCluster({ seed, hosts: 5, clusterConfig: {} }) // the ids a seed gives (hexIds draw from the seed)
  const ids = probe.ids
  const workers = ids.slice(0, 3)
  const haVms: HaVmSpec[] = []
  workers.forEach((h, i) => {
    for (let k = 0; k < 2; k++) haVms.push({ id: `vm${i}-${k}`, home: h, priority: k, cpuMips: 1000, memMiB: 1024, source: { kind: 'shared', definition: `vm${i}-${k}.xml` }, fencePolicy: k === 0 ? 'stop' : 'pause' })
  })
  const sim = new SimCluster({
    seed,
    hosts: 5,
    hypervisor: hv,
    capacity: { cpuCores: 8, cpuMipsPerCore: 1000, memMiB: MEM, netMbps: 10000 },
    sampleIntervalTicks: 2,
    migration: simMigrationConfig(),
    network: { delayTicksMin: 1, delayTicksMax: 2, loss: 0 },
    ha: { vms: haVms, config: simHaConfig() },
    clusterConfig: { members: workers }
  })
  for (const v of haVms) hv.addVm(v.home, v.id, v.memMiB)
  const checkers = new SafetyCheckers(sim, { capMemMiB: MEM })
  const trace = o.trace
  if (trace !== undefined) sim.onEvent((h, ev, tick) => { trace(`${tick} ${h.slice(0, 8)} ${ev.text}`) })
  const log = (s: string): void => trace?.(`${sim.now} FAULT ${s}`)
  const latest = (id: HostId): number => sim.core(id)?.clusterConfig()?.latest.version ?? 0
  const sizes: number[] = [3]
  sim.onEvent((_h, ev) => {
    if (ev.kind !== 'config-committed') return
    const m = / version (\d+) in effect/.exec(ev.text)
    const v = m === null ? 0 : Number(m[1])
    if (v === sizes.length + 1) sizes.push(sim.core(_h)?.clusterConfig()?.latest.members.length ?? 0)
  })
  let changesAsked = 0
  let resumes = 0
  sim.onEvent((_h, ev) => { if (ev.text.includes(' became running') && ev.text.includes('(resume)')) resumes++ })
  let violation: string | null = null
  const problems: string[] = []
  const faultTicks = o.faultTicks ?? 600
  try {
    for (let tick = 0; tick < faultTicks; tick++) {
      if (tick % 25 === 0) {
        const from = ids[p.int(ids.length)]!
        const st = sim.core(from)?.clusterConfig()
        if (st?.doc != null && !st.removed) {
          const members = st.doc.members.map(m => m.publicKey)
          const outside = ids.filter(h => !members.includes(h))
          const add = members.length <= 3 || (members.length < 5 && p.chance(0.5))
          if (add && outside.length > 0) {
            const h = outside[p.int(outside.length)]!
            if (sim.configChange(from, d => ({ ...d, members: [...d.members, sim.docMember(h)] }), `add ${h.slice(0, 8)}`) !== null) { changesAsked++; log(`add ${h.slice(0, 8)} from ${from.slice(0, 8)}`) }
          } else if (!add) {
            const h = members[p.int(members.length)]!
            if (sim.configChange(from, d => ({ ...d, members: d.members.filter(m => m.publicKey !== h) }), `remove ${h.slice(0, 8)}`) !== null) { changesAsked++; log(`remove ${h.slice(0, 8)} from ${from.slice(0, 8)}`) }
          }
        }
      }
      if (pr !== null && tick % 25 === 12) {
        const from = ids[pr.int(ids.length)]!
        if (sim.configChange(from, d => ({ ...d, automation: d.automation === 'full' ? 'partial' : 'full' }), 'automation') !== null) { changesAsked++; log(`automation from ${from.slice(0, 8)}`) }
      }
      if (p.chance(0.05)) {
        const h = ids[p.int(ids.length)]!
        switch (p.int(7)) {
          case 0: { const d = 1 + p.int(sim.rebootTicks); log(`power loss ${h.slice(0, 8)} ${d}`); sim.powerLoss(h, d); break }
          case 1: { const d = 1 + p.int(12); log(`agent crash ${h.slice(0, 8)} ${d}`); sim.agentCrash(h, d); break }
          case 2: { const d = 2 + p.int(15); log(`hang ${h.slice(0, 8)} ${d}`); sim.hang(h, d); break }
          case 3: {
            const s = p.shuffle([...ids])
            const cut = 1 + p.int(ids.length - 1)
            log(`partition ${s.slice(0, cut).map(x => x.slice(0, 8)).join(',')} | ${s.slice(cut).map(x => x.slice(0, 8)).join(',')}`)
            sim.partition([s.slice(0, cut), s.slice(cut)])
            break
          }
          case 4: { const x = ids[p.int(ids.length)]!; if (x !== h) { log(`cut ${h.slice(0, 8)}>${x.slice(0, 8)}`); sim.cut(h, x) } break }
          case 5: sim.network.loss = p.next() * 0.2; log(`loss ${sim.network.loss}`); break
          case 6: log('heal'); sim.heal(); sim.network.loss = 0; break
        }
      }
      sim.tick()
    }
    log('final heal')
    sim.heal()
    sim.network.loss = 0
    const quiet = o.quietTicks ?? 800
    let streak = 0
    const ok = (): boolean => {
      const running = ids.filter(h => sim.isRunning(h))
      const v = new Set(running.map(latest))
      if (running.length < ids.length || v.size !== 1) return false
      return haVms.every(vm => (hv.running().get(vm.id) ?? []).length === 1)
    }
    for (let i = 0; i < quiet && streak < 30; i++) {
      sim.tick()
      streak = ok() ? streak + 1 : 0
    }
    if (streak < 30) {
      problems.push(`versions ${ids.map(h => `${h.slice(0, 8)}:${latest(h)}${sim.isRunning(h) ? '' : '(down)'}`).join(' ')}`)
      for (const vm of haVms) { const where = hv.running().get(vm.id) ?? []; if (where.length !== 1) problems.push(`${vm.id} runs on ${where.length} hosts`) }
    }
  } catch (err) {
    if (!(err instanceof InvariantError)) throw err
    violation = err.message
  }
  o.end?.(sim)
  const top = Math.max(...ids.map(latest))
  return {
    seed, violation, live: violation === null && problems.length === 0, problems, ticks: sim.now, ticksChecked: checkers.ticksChecked,
    majorityPairsChecked: checkers.majorityPairsChecked, changesAsked, versions: top - 1, sizes, faults: { ...sim.faults }, haRestarts: sim.haRestarts,
    resumes
  }
}
