// Goal: the replica protocol of stateless VMs (agent/core/replica) between real AgentCores: a
// replica is admitted by its host against its own state and the hard rules, boots, and only then
// gets a share of the VIP's connections; retiring stops the split before the replica; a host's
// restart picks up its journal; a replica never outlives its origin; a stressed host relieves
// itself with a replica when the policy says so.
// Method: three cores (a runs the VMs, b and c may host replicas) wired by hand: every frame is
// delivered at the next tick, driver commands are answered by a tiny hypervisor per host whose
// VMs feed back into the host samples (so admission sees what runs).
import t from 'tap'
import { AgentCore, type AgentCoreOptions } from '../../../agent/core/agent-core.js'
import { localTestCoreConfig } from '../../../agent/core/config.js'
import { defaultMigrationConfig } from '../../../agent/core/migration/migration-config.js'
import { defaultReplicationParams } from '../../../policies/replication.js'
import type { ReplicaCommand, ReplicaMessage, ReplicaRecord, SplitEffect } from '../../../agent/core/replica/replica-types.js'
import type { HostCapacity, VmSummary } from '../../../agent/core/types.js'
import type { Envelope } from '../../../agent/core/messages.js'
import type { CoreEvent, PersistOp } from '../../../agent/core/effects.js'
import type { RuleSet } from '../../../policies/types.js'
import { decodeFrame, encodeEnvelope } from '../../../agent/adapters/wire-codec.js'
import { PROTOCOL_CUR, PROTOCOL_MAX, PROTOCOL_MIN } from '../../../agent/core/messages.js'

const HOSTS = ['a', 'b', 'c'] as const
type H = typeof HOSTS[number]

interface Node {
  id: H
  core: AgentCore
  cap: HostCapacity
  vms: Map<string, VmSummary>
  cpuUtil: number
  split: SplitEffect[]
  commands: ReplicaCommand[]
  events: CoreEvent[]
  store: Map<string, unknown>
  /** Answer start commands with this error code instead of success. */
  failStart: string | null
  up: boolean
}

interface WorldOpts {
  rules?: RuleSet
  cap?: Partial<Record<H, Partial<HostCapacity>>>
  mode?: 'off' | 'cost' | 'prefer'
  autoBalance?: boolean
  restored?: Partial<Record<H, ReplicaRecord[]>>
}

const STATELESS = [{ vm: 'web', vcpus: 1, memMiB: 1024 }, { vm: 'api', vcpus: 1, memMiB: 1024 }]

function makeCore (id: H, o: WorldOpts, restoredReplicas: ReplicaRecord[], incarnation = 0): AgentCore {
  const opts: AgentCoreOptions = {
    self: id, name: id, addr: `${id}:1`, config: localTestCoreConfig(), seed: HOSTS.indexOf(id) + 1, seeds: [],
    restored: {
      incarnation, reportSeqCeiling: 0, draining: false, migrations: [],
      members: HOSTS.filter(h => h !== id).map(h => ({ id: h, name: h, addr: `${h}:1`, incarnation: 1, state: 'alive' as const }))
    },
    migration: { ...defaultMigrationConfig(), autoBalance: o.autoBalance ?? false, ...(o.autoBalance === true ? { balanceTicks: 20, decisionTicks: 10 } : {}), ...(o.rules !== undefined ? { rules: o.rules } : {}) },
    replicas: { stateless: STATELESS, params: { ...defaultReplicationParams(), mode: o.mode ?? 'cost' }, restored: restoredReplicas }
  }
  return new AgentCore(opts)
}

class World {
  readonly nodes = new Map<H, Node>()
  private inflight: Array<{ to: H, from: H, env: Envelope }> = []
  now = 0

  constructor (readonly o: WorldOpts = {}) {
    for (const id of HOSTS) {
      const cap: HostCapacity = { cpuCores: 4, cpuMipsPerCore: 1000, memMiB: 8192, netMbps: 1000, ...(o.cap?.[id] ?? {}) }
      this.nodes.set(id, {
        id, core: makeCore(id, o, o.restored?.[id] ?? []), cap, vms: new Map(), cpuUtil: 0.1,
        split: [], commands: [], events: [], store: new Map(), failStart: null, up: true
      })
    }
  }

  node (id: H): Node { return this.nodes.get(id)! }

  addVm (host: H, id: string, cpuUtil = 0.05, memMiB = 1024): void {
    this.node(host).vms.set(id, { id, vcpus: 1, memMiB, cpuUtil, memUsedMiB: memMiB / 2, state: 'running' })
  }

  /** Restart a host's core from its own journal (the VMs keep running). */
  restart (id: H): void {
    const n = this.node(id)
    const restored = [...n.store.entries()].filter(([k]) => k.startsWith('replica/')).map(([, v]) => v as ReplicaRecord)
    n.core = makeCore(id, this.o, restored, 5)
    n.split = []
  }

  step (ticks = 1): void {
    for (let i = 0; i < ticks; i++) {
      this.now++
      const deliver = this.inflight
      this.inflight = []
      for (const f of deliver) { const n = this.node(f.to); if (n.up) n.core.step({ type: 'receive', from: f.from, envelope: f.env }) }
      for (const n of this.nodes.values()) {
        if (!n.up) continue
        if (this.now % 10 === 1) {
          n.core.step({ type: 'hostSample', sample: { cpuUtil: n.cpuUtil, memUsedMiB: 1024, netMbps: 1, capacity: n.cap, vms: [...n.vms.values()] } })
        }
        n.core.tick()
        this.drain(n)
      }
    }
  }

  private drain (n: Node): void {
    for (let rd = n.core.ready(); rd !== null; rd = n.core.ready()) {
      for (const p of rd.persist as PersistOp[]) { if (p.type === 'put') n.store.set(p.key, p.value); else n.store.delete(p.key) }
      for (const s of rd.send) this.inflight.push({ to: s.to as H, from: n.id, env: s.envelope })
      n.split.push(...rd.split)
      n.events.push(...rd.events)
      const cmds = rd.replica
      const queries = rd.driver.filter(c => c.kind === 'query')
      n.core.advance(rd)
      for (const c of queries) {
        const v = n.vms.get(c.vm)
        n.core.step({ type: 'driverResult', command: c, result: { ok: true, kind: 'query', query: { presence: v === undefined ? 'absent' : 'running', migration: 'none', spec: { vcpus: 1, memMiB: v?.memMiB ?? 0, extraJson: '{}' }, dirtyRateBytesPerS: 0, accel: 'tcg' } } })
      }
      for (const c of cmds) {
        n.commands.push(c)
        let ok = true
        let code: string | undefined
        if (c.kind === 'replicaStart') {
          if (n.failStart !== null) { ok = false; code = n.failStart } else n.vms.set(c.id, { id: c.id, vcpus: 1, memMiB: 1024, cpuUtil: 0.03, memUsedMiB: 512, state: 'running' })
        } else n.vms.delete(c.id)
        n.core.step({ type: 'replicaDriverResult', command: c, ok, ...(code !== undefined ? { code } : {}) })
      }
    }
  }

  lastSplit (id: H, vm: string): string[] | undefined {
    const n = this.node(id)
    for (let i = n.split.length - 1; i >= 0; i--) if (n.split[i]!.vm === vm) return n.split[i]!.hosts
    return undefined
  }

  replicas (id: H): ReplicaRecord[] { return this.node(id).core.replicaRecords() ?? [] }

  operator (id: H, vm: string, to?: string, retire = false): void {
    const n = this.node(id)
    n.core.step({ type: 'operatorReplicate', vm, ...(to !== undefined ? { to } : {}), retire })
    this.drain(n)
  }
}

t.test('an operator\'s replica is admitted, boots, and only then gets connections; retiring stops the split first', t => {
  const w = new World()
  w.addVm('a', 'web')
  w.step(30)
  w.operator('a', 'web', 'b')
  t.equal(w.replicas('a')[0]?.state, 'requested', 'the origin journals the request')
  t.equal(w.node('a').store.has('replica/out/web'), true, 'in its store')
  t.equal(w.lastSplit('a', 'web'), undefined, 'no split before the replica runs')
  w.step(3)
  t.same(w.node('b').commands.map(c => `${c.kind} ${c.id}`), ['replicaStart web-replica'], 'b boots web-replica')
  t.equal(w.replicas('b')[0]?.state, 'running', 'b runs it')
  t.equal(w.replicas('a')[0]?.state, 'running', 'a hears it runs')
  t.same(w.lastSplit('a', 'web'), ['b'], 'a splits web\'s connections with b')
  t.equal(w.node('a').split.length, 1, 'one split effect')

  // A second request for the same VM is refused at the origin.
  w.operator('a', 'web', 'c')
  t.ok(w.node('a').events.some(e => /has a replica already/.test(e.text)), 'one replica per VM')

  w.operator('a', 'web', undefined, true)
  t.same(w.lastSplit('a', 'web'), [], 'retiring ends the split at once, before the replica stops')
  t.equal(w.node('b').vms.has('web-replica'), true, 'the replica still runs at that moment')
  w.step(3)
  t.equal(w.node('b').vms.has('web-replica'), false, 'then b stops it')
  t.same(w.replicas('a'), [], 'the origin forgets it')
  t.same(w.replicas('b'), [], 'so does the host')
  t.equal([...w.node('a').store.keys()].filter(k => k.startsWith('replica/')).length, 0, 'and the journals are empty')
  t.end()
})

t.test('the host admits against its own state: memory, hard anti-affinity, a failed boot', t => {
  const w = new World({
    cap: { b: { memMiB: 1536 } },
    rules: { vmVm: [{ kind: 'anti-affinity', vms: ['web', 'db'], hard: true }], vmHost: [] }
  })
  w.addVm('a', 'web')
  w.addVm('b', 'other', 0.05, 1024)
  w.addVm('c', 'db')
  w.step(40)
  w.operator('a', 'web', 'b')
  w.step(3)
  t.same(w.node('b').commands, [], 'b (1 GiB used of 1.5) boots nothing')
  t.same(w.replicas('a'), [], 'a drops the refused request')
  t.ok(w.node('a').events.some(e => /refused: mem/.test(e.text)), `a says why: ${w.node('a').events.filter(e => e.kind === 'replica').map(e => e.text).join(' | ')}`)

  w.operator('a', 'web', 'c')
  w.step(3)
  t.same(w.node('c').commands, [], 'c, which runs db (hard anti-affine with web), boots nothing: the replica is web for the rules')
  t.ok(w.node('a').events.some(e => /ended \(refused: .*(rule|anti)/.test(e.text)), 'refused by the rule')

  // A replica hosted on b counts as web there: db may not migrate onto b while it runs.
  const w2 = new World({ rules: { vmVm: [{ kind: 'anti-affinity', vms: ['web', 'db'], hard: true }], vmHost: [] } })
  w2.addVm('a', 'web')
  w2.addVm('c', 'db')
  w2.step(40)
  w2.operator('a', 'web', 'b')
  w2.step(3)
  t.equal(w2.replicas('b')[0]?.state, 'running', 'web-replica runs on b')
  w2.node('c').core.step({ type: 'operatorMigrate', vm: 'db', to: 'b' })
  w2.step(5)
  const mig = w2.node('c').core.migrations()[0]
  t.equal(mig?.state, 'aborted', `a migration of db onto b is refused (${mig?.reason ?? 'none'}; ${w2.node('c').events.filter(e => /migrat/.test(e.kind)).map(e => e.text).join(' | ')})`)

  const w3 = new World()
  w3.addVm('a', 'web')
  w3.step(30)
  w3.node('b').failStart = 'DRIVER_FAILED'
  w3.operator('a', 'web', 'b')
  w3.step(3)
  t.same(w3.replicas('a'), [], 'a failed boot ends the request')
  t.same(w3.replicas('b'), [], 'and b keeps no record')
  t.equal(w3.lastSplit('a', 'web'), undefined, 'nothing was ever split')
  t.end()
})

t.test('restarts resume from the journal; a replica does not outlive its origin', t => {
  const w = new World()
  w.addVm('a', 'web')
  w.step(30)
  w.operator('a', 'web', 'b')
  w.step(3)
  t.same(w.lastSplit('a', 'web'), ['b'], 'running and split')
  w.restart('a')
  w.step(2)
  t.same(w.lastSplit('a', 'web'), ['b'], 'a restarted origin splits again from its journal')
  t.equal(w.replicas('a')[0]?.state, 'running', 'its record is back')

  // The host restarts while the start command is out: it issues the start again.
  const w2 = new World()
  w2.addVm('a', 'web')
  w2.step(30)
  w2.node('b').up = false
  w2.operator('a', 'web', 'b')
  w2.step(2)
  const rec: ReplicaRecord = { id: 'web-replica', vm: 'web', role: 'host', origin: 'a', host: 'b', state: 'starting', cpuDemandMips: 100, memMiB: 1024, vcpus: 1, createdTick: 1, updatedTick: 1, reason: 'requested' }
  w2.node('b').store.set('replica/in/web-replica', rec)
  w2.restart('b')
  w2.node('b').up = true
  w2.step(15)
  t.same(w2.node('b').commands.map(c => c.kind), ['replicaStart'], 'the restarted host boots it (once)')
  t.equal(w2.replicas('a')[0]?.state, 'running', 'the origin\'s resent request is answered from the record')
  t.same(w2.lastSplit('a', 'web'), ['b'], 'and the split starts')

  // The origin dies: the host stops the replica once the cluster declares it dead.
  w2.node('a').up = false
  let ticks = 0
  while (w2.node('b').vms.has('web-replica') && ticks < 2000) { w2.step(1); ticks++ }
  t.equal(w2.node('b').vms.has('web-replica'), false, `b stops the replica ${ticks} ticks after its origin went silent`)
  t.ok(w2.node('b').events.some(e => /origin a is dead/.test(e.text)), 'because its origin is dead')
  t.end()
})

t.test('a stressed host relieves itself with a replica when the policy prefers it, and retires it when calm', t => {
  // The policies place a VM's demand on one core: one fast core per host.
  const one = { cpuCores: 1, cpuMipsPerCore: 4000 }
  const w = new World({ mode: 'prefer', autoBalance: true, cap: { a: one, b: one, c: one } })
  // a at 95 %: web (stateless) 60 %, batch 35 %; b and c idle.
  w.addVm('a', 'web', 0.6)
  w.addVm('a', 'batch', 0.35)
  w.node('a').cpuUtil = 0.95
  let ticks = 0
  while (w.replicas('a').length === 0 && ticks < 3000) { w.step(1); ticks++ }
  const r = w.replicas('a')[0]
  t.ok(r !== undefined, `a starts a replica after ${ticks} ticks under stress (${r?.reason ?? 'none'})`)
  t.equal(r?.vm, 'web', 'of the stateless VM')
  w.step(5)
  t.equal(w.replicas('a')[0]?.state, 'running', 'it runs')
  t.same(w.node('a').core.migrations(), [], 'and nothing migrated')
  const target = w.replicas('a')[0]?.host
  t.same(w.lastSplit('a', 'web'), [target], 'the split goes to its host')

  // The load falls: the replica is retired.
  w.node('a').cpuUtil = 0.15
  w.node('a').vms.set('web', { ...w.node('a').vms.get('web')!, cpuUtil: 0.05 })
  w.node('a').vms.delete('batch')
  ticks = 0
  while (w.replicas('a').length > 0 && ticks < 6000) { w.step(1); ticks++ }
  t.same(w.replicas('a'), [], `retired ${ticks} ticks after the load fell`)
  t.same(w.lastSplit('a', 'web'), [], 'the split ended')
  t.equal(w.node(target as H).vms.has('web-replica'), false, 'and the replica is stopped')
  t.end()
})

t.test('under mode cost the same stress migrates when a replica would cost more', t => {
  const one = { cpuCores: 1, cpuMipsPerCore: 4000 }
  const w = new World({ mode: 'cost', autoBalance: true, cap: { a: one, b: one, c: one } })
  w.addVm('a', 'web', 0.6)
  w.addVm('a', 'batch', 0.35)
  w.node('a').cpuUtil = 0.95
  let ticks = 0
  while (w.node('a').core.migrations().length === 0 && ticks < 3000) { w.step(1); ticks++ }
  t.ok(w.node('a').core.migrations().length > 0, `a migration starts after ${ticks} ticks`)
  t.same(w.replicas('a'), [], 'and no replica')
  t.end()
})

t.test('every replica frame survives the wire codec; a bad op is rejected, not thrown', t => {
  const key = 'ab'.repeat(32)
  const env = (body: ReplicaMessage): Envelope => ({ protocolMin: PROTOCOL_MIN, protocolMax: PROTOCOL_MAX, protocolCur: PROTOCOL_CUR, from: key, incarnation: 3, lamport: 9, body, gossip: [] })
  const ops: Array<ReplicaMessage['op']> = ['request', 'started', 'refused', 'retire', 'retired']
  for (const op of ops) {
    const b: ReplicaMessage = { type: 'replica', op, id: 'web-replica', vm: 'web', cpuDemandMips: op === 'request' ? 1280 : 0, memMiB: op === 'request' ? 1024 : 0, vcpus: op === 'request' ? 2 : 0, reason: op === 'refused' ? 'memory: 2048 MiB > 1536 MiB' : '' }
    const r = decodeFrame(encodeEnvelope(env(b)), { expectFrom: key })
    t.ok(r.ok, `${op} decodes`)
    if (r.ok) t.same(r.envelope.body, b, `${op} unchanged`)
    const frame = encodeEnvelope(env(b))
    let rejected = 0
    for (let n = 1; n < frame.length; n += 2) { const x = decodeFrame(frame.subarray(0, n)); if (!x.ok) rejected++ }
    t.ok(rejected > 0, `${op}: truncated frames are rejected (${rejected})`)
  }
  // op 9 is unknown: change the op byte (field 1, varint) inside the encoded body.
  const frame = encodeEnvelope(env({ type: 'replica', op: 'started', id: 'web-replica', vm: 'web', cpuDemandMips: 0, memMiB: 0, vcpus: 0, reason: '' }))
  const i = frame.indexOf(0x08, frame.length - 30)
  t.ok(i > 0 && frame[i + 1] === 2, 'found the op field')
  const bad = Uint8Array.from(frame); bad[i + 1] = 9
  const r = decodeFrame(bad, { expectFrom: key })
  t.equal(r.ok, false, `an unknown op is rejected (${r.ok ? '' : r.reason})`)
  t.end()
})

t.test('after a partition in which the origin gave the host up, the replica is stopped at the heal', t => {
  const w = new World()
  w.addVm('a', 'web')
  w.step(30)
  w.operator('a', 'web', 'b')
  w.step(3)
  t.equal(w.replicas('b')[0]?.state, 'running', 'b runs web-replica')
  // a believes b is dead (a partition seen from a's side only) and drops the record.
  const aNode = w.node('a')
  const sched = aNode.core as unknown as { replicas: { out: Map<string, ReplicaRecord> } }
  const rec = sched.replicas.out.get('web')!
  sched.replicas.out.delete('web')
  t.ok(rec !== undefined, 'a forgot its record (as when it declares b dead)')
  let ticks = 0
  while (w.node('b').vms.has('web-replica') && ticks < 500) { w.step(1); ticks++ }
  t.equal(w.node('b').vms.has('web-replica'), false, `b's confirmation is answered with a retire: stopped ${ticks} ticks later`)
  t.same(w.replicas('b'), [], 'b forgets it')
  t.end()
})

t.test('a VM whose QEMU burns more than its vCPUs (TCG) asks at most half its vCPUs of the replica host', t => {
  const w = new World()
  // web has 1 vCPU of 1000 MIPS but its process uses 2.7 of the host's 4 cores (emulator threads).
  w.addVm('a', 'web', 0.67)
  w.step(30)
  w.operator('a', 'web', 'b')
  w.step(3)
  const r = w.replicas('a')[0]
  t.equal(r?.state, 'running', `admitted and running (${w.node('a').events.filter(e => e.kind === 'replica').map(e => e.text).join(' | ')})`)
  t.ok(r !== undefined && r.cpuDemandMips <= 520, `the replica asks ${r?.cpuDemandMips ?? NaN} MIPS: half of one vCPU plus the overhead`)
  t.end()
})
