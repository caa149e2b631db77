/**
 * VIP ownership, property test over random interleavings (seeded; SEED=<n> replays one run).
 *
 * Goal: S5 under message delay, loss, duplication and reordering, partitions and heals, machine
 * crashes, agent restarts, migrations, HA restarts, operator moves and adapter failures:
 *  - never two hosts that both believe they own a VIP (role 'owner');
 *  - break-before-make: never two interfaces carrying the address;
 *  - make-before-break: besides the owner, only hosts handing off carry it, each for a bounded
 *    time, and a new owner's second burst never goes out while another reachable host still
 *    carries the address;
 *  - liveness: once the faults stop, every VIP has exactly one owner that all hosts agree on,
 *    which is the only interface carrying it (for a VM's VIP, the host running the VM).
 *
 * Method: a small simulator. Five cores, a network with seeded delay (0-3 ticks), loss,
 * duplication and partitions; a membership oracle that turns connectivity into each host's view
 * the way SWIM does (suspect after 2 ticks cut off, dead after 8: the minority loses its quorum,
 * and fences, well before the majority declares it dead, which is the timing assumption the
 * design states); address effects applied after 0-2 ticks, some failing. Runs have a fault phase
 * and a quiet phase. The membership, scheduler and runtime are stand-ins; the VIP cores are real.
 */
import t from 'tap'
import { Prng } from '../../../agent/core/prng.js'
import type { MemberState } from '../../../agent/core/types.js'
import { VipOwnership, restoreVipState, type VipEffect } from '../../../agent/core/vip/vip-ownership.js'
import { localTestVipConfig, type PlannedMoveMode, type VipSpec } from '../../../agent/core/vip/vip-config.js'
import type { VipMessage } from '../../../agent/core/vip/vip-messages.js'

const HOSTS = ['h0', 'h1', 'h2', 'h3', 'h4']
const VIPS: VipSpec[] = [
  { id: 'g1', address: '192.0.2.10/24', iface: 'eth0', binding: { kind: 'group', hosts: ['h0', 'h1', 'h2'] } },
  { id: 'g2', address: '192.0.2.11/24', iface: 'eth0', binding: { kind: 'group', hosts: ['h4', 'h3', 'h2', 'h1', 'h0'] } },
  { id: 'v1', address: '192.0.2.12/24', iface: 'eth0', binding: { kind: 'vm', vm: 'vm1' } }
]
const SUSPECT_AFTER = 2
const DEAD_AFTER = 8
const FAULT_TICKS = 400
const QUIET_TICKS = 250

interface Host {
  id: string
  node: VipOwnership | null
  store: Map<string, unknown>
  /** VIPs on this host's interface. */
  iface: Set<string>
  pending: Array<{ at: number, effect: VipEffect }>
  /** Ticks left before a restarted agent (address kept) comes back. */
  agentDownUntil: number | null
  /** Last view given to the core, to send only changes. */
  lastView: string
  /** Per peer: tick since which it is unreachable from here (null = reachable). */
  cutSince: Map<string, number | null>
  falseSuspect: Map<string, number>
}

interface Flight { at: number, from: string, to: string, message: VipMessage }

class Sim {
  readonly prng: Prng
  readonly hosts = new Map<string, Host>()
  readonly net: Flight[] = []
  now = 0
  side = new Map<string, number>() // partition group per host
  vmHost: string | null = null
  faults = true
  readonly violations: string[] = []
  readonly overlapSince = new Map<string, number>()
  maxOverlap = 0
  stats = { messages: 0, handoffs: 0, owners: 0, takeovers: 0, conflicts: 0, crashes: 0, partitions: 0 }
  /** The last events of every core, for the failure report. */
  readonly trail: string[] = []

  constructor (readonly seed: number, readonly mode: PlannedMoveMode) {
    this.prng = new Prng(seed)
    for (const id of HOSTS) {
      this.hosts.set(id, { id, node: null, store: new Map(), iface: new Set(), pending: [], agentDownUntil: null, lastView: '', cutSince: new Map(), falseSuspect: new Map() })
      this.side.set(id, 0)
      this.boot(id)
    }
  }

  h (id: string): Host {
    const x = this.hosts.get(id)
    if (x === undefined) throw new Error(`no host ${id}`)
    return x
  }

  boot (id: string): void {
    const h = this.h(id)
    const entries = [...h.store.entries()].filter(([k]) => k.startsWith('vip/'))
    h.node = new VipOwnership({
      self: id,
      members: HOSTS,
      vips: VIPS,
      config: { ...localTestVipConfig(), plannedMove: this.mode },
      prng: this.prng.fork(HOSTS.indexOf(id) + 1000 * this.now),
      restored: restoreVipState(entries)
    })
    h.lastView = ''
    this.drain(id)
  }

  reachable (a: string, b: string): boolean {
    const ha = this.h(a); const hb = this.h(b)
    return ha.node !== null && hb.node !== null && this.side.get(a) === this.side.get(b)
  }

  /** Takes a core's effects: persist at once (before any send leaves), then queue the rest. */
  drain (id: string): void {
    const h = this.h(id)
    if (h.node === null) return
    for (const e of h.node.takeEffects()) {
      if (e.type === 'persist') {
        if (e.op.type === 'put') h.store.set(e.op.key, structuredClone(e.op.value))
        else h.store.delete(e.op.key)
      } else if (e.type === 'send') {
        for (const to of e.to) {
          if (this.faults && this.prng.chance(0.05)) continue
          const copies = this.faults && this.prng.chance(0.03) ? 2 : 1
          for (let i = 0; i < copies; i++) this.net.push({ at: this.now + this.prng.int(4), from: id, to, message: structuredClone(e.message) })
        }
      } else if (e.type === 'event') {
        this.trail.push(`t=${this.now} ${id} ${e.event.text}`)
        if (e.event.text.includes('became owner')) this.stats.owners++
        if (e.event.text.includes('takes over from dead')) this.stats.takeovers++
        if (e.event.kind === 'vip-conflict') this.stats.conflicts++
        if (this.trail.length > 80) this.trail.shift()
      } else {
        // The runtime applies address effects in order, one at a time.
        const last = h.pending.at(-1)?.at ?? this.now
        h.pending.push({ at: Math.max(last, this.now + this.prng.int(3)), effect: e })
      }
    }
    this.check(`after ${id} stepped`)
  }

  step (id: string, input: Parameters<VipOwnership['step']>[0]): void {
    const h = this.h(id)
    if (h.node === null) return
    h.node.step(input)
    this.drain(id)
  }

  applyAddressEffects (): void {
    for (const h of this.hosts.values()) {
      if (h.node === null) continue
      while (h.pending.length > 0 && (h.pending[0]?.at ?? Infinity) <= this.now) {
        const p = h.pending.shift()
        if (p === undefined || h.node === null) break
        const e = p.effect
        if (e.type !== 'add-and-announce' && e.type !== 'remove' && e.type !== 'announce') continue
        // Failures of add, announce and of removals the core can retry safely. A host that
        // cannot remove its address while it fences breaks S5 whatever the protocol does.
        const canFail = e.type !== 'remove' || (e.reason !== 'fence' && e.reason !== 'startup')
        const ok = !(this.faults && canFail && this.prng.chance(0.03))
        if (ok && e.type === 'add-and-announce') h.iface.add(e.vip)
        if (ok && e.type === 'remove') h.iface.delete(e.vip)
        if (ok && e.type === 'announce' && e.reason === 'second-burst') {
          for (const o of this.hosts.values()) {
            if (o.id !== h.id && o.iface.has(e.vip) && this.side.get(o.id) === this.side.get(h.id)) {
              this.violations.push(`t=${this.now} ${h.id} sent its second burst for ${e.vip} while ${o.id} still carries it`)
            }
          }
        }
        this.step(h.id, { type: 'vipApplied', vip: e.vip, op: e.type === 'add-and-announce' ? 'add' : e.type, ok, ...(ok ? {} : { code: 'SIM_FAIL' }) })
      }
    }
  }

  deliver (): void {
    const due = this.net.filter(f => f.at <= this.now)
    this.prng.shuffle(due)
    const keep = this.net.filter(f => f.at > this.now)
    this.net.length = 0
    this.net.push(...keep)
    for (const f of due) {
      if (!this.reachable(f.from, f.to) || this.h(f.to).agentDownUntil !== null) continue
      this.stats.messages++
      this.step(f.to, { type: 'vipMessage', from: f.from, message: f.message })
    }
  }

  /** SWIM-like view of each host: suspect after SUSPECT_AFTER ticks cut off, dead after DEAD_AFTER. */
  views (): void {
    for (const h of this.hosts.values()) {
      if (h.node === null || h.agentDownUntil !== null) continue
      const members: Array<{ id: string, state: MemberState }> = []
      for (const m of HOSTS) {
        if (m === h.id) continue
        const up = this.reachable(h.id, m) && this.h(m).agentDownUntil === null
        let since = h.cutSince.get(m) ?? null
        if (up) since = null
        else if (since === null) since = this.now
        h.cutSince.set(m, since)
        let state: MemberState = 'alive'
        if (since !== null) {
          const cut = this.now - since
          state = cut >= DEAD_AFTER ? 'dead' : cut >= SUSPECT_AFTER ? 'suspect' : 'alive'
        }
        const fs = h.falseSuspect.get(m) ?? 0
        if (state === 'alive' && fs > this.now) state = 'suspect'
        members.push({ id: m, state })
      }
      const key = JSON.stringify(members)
      if (key !== h.lastView) {
        h.lastView = key
        this.step(h.id, { type: 'members', members })
      }
    }
  }

  quorate (id: string): boolean {
    const h = this.h(id)
    if (h.node === null || h.agentDownUntil !== null) return false
    const alive = HOSTS.filter(m => m === id || (h.cutSince.get(m) ?? null) === null || this.now - (h.cutSince.get(m) ?? this.now) < SUSPECT_AFTER)
    return alive.length >= 3
  }

  /** The scheduler and HA stand-in: migrations, fencing of VMs, restarts on the majority side. */
  vms (): void {
    const cur = this.vmHost
    if (cur !== null && !this.quorate(cur) && this.h(cur).node !== null) {
      // Fencing stops the VMs of a host that lost the majority.
      this.vmHost = null
      this.step(cur, { type: 'vmMovedAway', vm: 'vm1', to: null })
    }
    if (this.vmHost === null) {
      // HA: restart where a quorate host sees the old host dead (or at start).
      const cands = HOSTS.filter(id => this.quorate(id))
      if (cands.length > 0 && (cur === null || this.prng.chance(0.2))) {
        const to = cands[this.prng.int(cands.length)] as string
        this.vmHost = to
        this.step(to, { type: 'vmPlaced', vm: 'vm1' })
      }
      return
    }
    if (this.faults && this.prng.chance(0.02)) {
      const from = this.vmHost
      const cands = HOSTS.filter(id => id !== from && this.reachable(from, id) && this.quorate(id))
      if (cands.length === 0) return
      const to = cands[this.prng.int(cands.length)] as string
      this.vmHost = to
      this.stats.handoffs++
      if (this.prng.chance(0.5)) {
        this.step(from, { type: 'vmMovedAway', vm: 'vm1', to })
        this.step(to, { type: 'vmPlaced', vm: 'vm1' })
      } else {
        this.step(to, { type: 'vmPlaced', vm: 'vm1' })
        this.step(from, { type: 'vmMovedAway', vm: 'vm1', to })
      }
    }
  }

  faultsStep (): void {
    if (!this.faults) return
    const p = this.prng
    if (p.chance(0.01)) {
      // Partition into two sides at random (sometimes three).
      this.stats.partitions++
      const k = p.chance(0.2) ? 3 : 2
      for (const id of HOSTS) this.side.set(id, p.int(k))
    }
    if (p.chance(0.015)) for (const id of HOSTS) this.side.set(id, 0)
    if (p.chance(0.006)) {
      const id = HOSTS[p.int(HOSTS.length)] as string
      const h = this.h(id)
      if (h.node !== null) {
        // Machine crash: the address goes with it; the VM too.
        this.stats.crashes++
        h.node = null; h.iface.clear(); h.pending = []
        if (this.vmHost === id) this.vmHost = null
      } else {
        this.boot(id)
      }
    }
    if (p.chance(0.004)) {
      // Agent restart: the address stays on the interface until the new agent removes it.
      const id = HOSTS[p.int(HOSTS.length)] as string
      const h = this.h(id)
      if (h.node !== null && h.agentDownUntil === null) {
        h.node = null; h.pending = []
        h.agentDownUntil = this.now + 1 + p.int(DEAD_AFTER - SUSPECT_AFTER - 4)
        if (this.vmHost === id) this.vmHost = null
      }
    }
    if (p.chance(0.02)) {
      const a = HOSTS[p.int(HOSTS.length)] as string
      const b = HOSTS[p.int(HOSTS.length)] as string
      if (a !== b) this.h(a).falseSuspect.set(b, this.now + 1 + p.int(3))
    }
    if (p.chance(0.02)) {
      // Operator move of a group VIP, asked of the host that believes it owns it.
      const spec = VIPS[p.int(2)] as VipSpec
      if (spec.binding.kind === 'group') {
        const to = spec.binding.hosts[p.int(spec.binding.hosts.length)] as string
        for (const h of this.hosts.values()) {
          if (h.node?.status().find(s => s.vip === spec.id)?.role === 'owner') this.step(h.id, { type: 'operatorMove', vip: spec.id, to })
        }
      }
    }
  }

  agentRestarts (): void {
    for (const h of this.hosts.values()) {
      if (h.agentDownUntil !== null && this.now >= h.agentDownUntil) {
        h.agentDownUntil = null
        this.boot(h.id)
      }
    }
  }

  tick (): void {
    this.now++
    this.faultsStep()
    this.agentRestarts()
    this.views()
    this.vms()
    this.deliver()
    this.applyAddressEffects()
    for (const h of this.hosts.values()) {
      if (h.node === null) continue
      h.node.tick()
      this.drain(h.id)
    }
  }

  check (where: string): void {
    for (const spec of VIPS) {
      const believers = [...this.hosts.values()].filter(h => h.node?.roleOf(spec.id) === 'owner')
      if (believers.length > 1) this.violations.push(`t=${this.now} ${where}: ${spec.id} has owners ${believers.map(b => b.id).join(',')}`)
      const carriers = [...this.hosts.values()].filter(h => h.iface.has(spec.id))
      if (this.mode === 'break-before-make' && carriers.length > 1) this.violations.push(`t=${this.now} ${where}: ${spec.id} on ${carriers.map(c => c.id).join(',')}`)
      // Make-before-break: besides the owner, a host may carry the address only while it hands
      // off (or removes after that), for a bounded time. Back-to-back moves can chain two.
      for (const h of this.hosts.values()) {
        const key = `${spec.id}/${h.id}`
        const overlapping = carriers.length > 1 && h.iface.has(spec.id) && h.node?.roleOf(spec.id) !== 'owner'
        if (!overlapping) { this.overlapSince.delete(key); continue }
        const since = this.overlapSince.get(key) ?? this.now
        this.overlapSince.set(key, since)
        this.maxOverlap = Math.max(this.maxOverlap, this.now - since)
      }
    }
  }

  /** Quiet phase: heal, boot every host, no more faults. */
  heal (): void {
    this.faults = false
    for (const id of HOSTS) {
      this.side.set(id, 0)
      const h = this.h(id)
      h.falseSuspect.clear()
      if (h.node === null && h.agentDownUntil === null) this.boot(id)
    }
  }
}

function runOne (seed: number, mode: PlannedMoveMode): { sim: Sim, problems: string[] } {
  const sim = new Sim(seed, mode)
  for (let i = 0; i < FAULT_TICKS && sim.violations.length === 0; i++) sim.tick()
  sim.heal()
  for (let i = 0; i < QUIET_TICKS && sim.violations.length === 0; i++) sim.tick()
  const problems = [...sim.violations]
  if (problems.length > 0) return { sim, problems }
  const cfg = localTestVipConfig()
  if (sim.maxOverlap > cfg.handoffTimeoutTicks + 6) problems.push(`an overlap lasted ${sim.maxOverlap} ticks`)
  for (const spec of VIPS) {
    const statuses = HOSTS.map(id => sim.h(id).node?.status().find(s => s.vip === spec.id))
    const owners = HOSTS.filter((_, i) => statuses[i]?.role === 'owner')
    const carriers = HOSTS.filter(id => sim.h(id).iface.has(spec.id))
    const seen = new Set(statuses.map(s => s?.owner ?? 'none'))
    if (owners.length !== 1) problems.push(`${spec.id}: ${owners.length} owners after the quiet phase`)
    else {
      if (carriers.join() !== owners.join()) problems.push(`${spec.id}: owner ${owners.join()} but carried by ${carriers.join() || 'nobody'}`)
      if (seen.size !== 1 || !seen.has(owners[0] as string)) problems.push(`${spec.id}: hosts disagree on the owner (${[...seen].join(',')})`)
      if (spec.binding.kind === 'vm' && owners[0] !== sim.vmHost) problems.push(`${spec.id}: owner ${owners.join()} but the VM runs on ${sim.vmHost ?? 'nothing'}`)
    }
  }
  return { sim, problems }
}

const base = Number(process.env.SEED ?? process.env.VIP_SEED_BASE ?? 20_260_101)
const RUNS = process.env.SEED !== undefined ? 1 : Number(process.env.VIP_RUNS ?? 100)

for (const mode of ['make-before-break', 'break-before-make'] as const) {
  t.test(`S5 over random interleavings (${mode})`, async t => {
    t.comment(`seeds ${base}..${base + RUNS - 1}; SEED=<n> replays one`)
    const totals = { messages: 0, handoffs: 0, owners: 0, takeovers: 0, conflicts: 0, crashes: 0, partitions: 0, maxOverlap: 0 }
    for (let i = 0; i < RUNS; i++) {
      const seed = base + i
      const { sim, problems } = runOne(seed, mode)
      totals.messages += sim.stats.messages
      totals.handoffs += sim.stats.handoffs
      totals.owners += sim.stats.owners
      totals.takeovers += sim.stats.takeovers
      totals.conflicts += sim.stats.conflicts
      totals.crashes += sim.stats.crashes
      totals.partitions += sim.stats.partitions
      totals.maxOverlap = Math.max(totals.maxOverlap, sim.maxOverlap)
      if (problems.length > 0) {
        t.comment(sim.trail.join('\n'))
        t.comment(JSON.stringify({ vmHost: sim.vmHost, status: HOSTS.map(id => ({ id, st: sim.h(id).node?.status().map(s => [s.vip, s.role, s.owner, s.ownerClaim, s.addressHere]) })) }))
        t.fail(`seed ${seed}: ${problems.slice(0, 3).join('; ')} (reproduce with SEED=${seed})`)
        return
      }
    }
    t.pass(`${RUNS} runs: ${JSON.stringify(totals)}`)
  })
}
