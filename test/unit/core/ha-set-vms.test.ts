// Protecting and unprotecting VMs live (HaManager.setVms; agent/core/ha/index.ts, live
// protection): three managers on a lossless one-tick network with a driver that does what it is
// told, each step checked for two copies.
import t from 'tap'
import { Prng } from '../../../agent/core/prng.js'
import { HA_EPOCH_SPAN, HaManager, simHaConfig, type HaMessage, type HaVmSpec } from '../../../agent/core/ha/index.js'

const cfg = simHaConfig()
const IDS = ['a', 'b', 'c']
const spec = (id: string, home: string, since?: number): HaVmSpec => ({ id, home, cpuMips: 1000, memMiB: 1024, source: { kind: 'image', image: `${id}.img` }, ...(since !== undefined ? { since } : {}) })

interface Net {
  m: Map<string, HaManager>
  /** VM -> hosts where the driver runs it. */
  runs: Map<string, Set<string>>
  starts: Array<{ host: string, vm: string, epoch: number, tick: number }>
  stops: Array<{ host: string, vm: string, reason: string, tick: number }>
  /** Host ids whose frames are dropped (silent, both ways), and hosts whose agent is gone. */
  silent: Set<string>
  /** Frames lost on the way (beside the silent hosts'). */
  drop: (from: string, to: string, message: HaMessage) => boolean
  /** Configuration version each host acts on (versionOf). */
  version: Map<string, number>
  tick: number
  twice: string[]
  run: (ticks: number) => void
}

function net (o: { vms?: HaVmSpec[], members?: Array<{ id: string, tieBreaker?: boolean }>, running?: Record<string, string[]> } = {}): Net {
  const members = (o.members ?? IDS.map(id => ({ id } as { id: string, tieBreaker?: boolean }))).map(x => ({ id: x.id, cpuMips: 8000, memMiB: 16384, ...(x.tieBreaker === true ? { tieBreaker: true } : {}) }))
  const n: Net = { m: new Map(), runs: new Map(), starts: [], stops: [], silent: new Set(), drop: () => false, version: new Map(members.map(x => [x.id, 1])), tick: 0, twice: [], run: () => {} }
  for (const [host, vms] of Object.entries(o.running ?? {})) for (const v of vms) { if (!n.runs.has(v)) n.runs.set(v, new Set()); n.runs.get(v)!.add(host) }
  for (const x of members) {
    const h = new HaManager({
      self: x.id, members, vms: o.vms ?? [], config: cfg, prng: new Prng(x.id.charCodeAt(0)), life: 1,
      running: (o.running ?? {})[x.id] ?? [],
      runningHere: vm => n.runs.get(vm)?.has(x.id) === true,
      versionOf: host => n.version.get(host) ?? 0
    })
    h.step({ type: 'haLocalFence', fenced: true })
    n.m.set(x.id, h)
  }
  let inflight: Array<{ to: string, from: string, message: HaMessage }> = []
  n.run = (ticks: number) => {
    for (let k = 0; k < ticks; k++) {
      n.tick++
      const next: typeof inflight = []
      const states = [...n.m.keys()].map(id => ({ id, state: n.silent.has(id) ? 'dead' as const : 'alive' as const }))
      for (const f of inflight) if (!n.silent.has(f.to) && !n.silent.has(f.from) && !n.drop(f.from, f.to, f.message)) n.m.get(f.to)!.step({ type: 'haMessage', from: f.from, message: f.message })
      inflight = []
      for (const [id, h] of n.m) {
        if (n.silent.has(id)) continue
        h.step({ type: 'members', members: states.filter(s => s.id !== id) })
        h.tick()
        for (const e of h.takeEffects()) {
          if (e.type === 'send') for (const to of e.to) next.push({ to, from: id, message: e.message })
          if (e.type !== 'driver') continue
          const c = e.command
          const on = n.runs.get(c.vm) ?? new Set<string>()
          n.runs.set(c.vm, on)
          if (c.kind === 'haStart') { on.add(id); n.starts.push({ host: id, vm: c.vm, epoch: c.epoch, tick: n.tick }) } else { on.delete(id); n.stops.push({ host: id, vm: c.vm, reason: c.reason, tick: n.tick }) }
          h.step({ type: 'haDriverResult', command: c, ok: true })
          for (const e2 of h.takeEffects()) if (e2.type === 'send') for (const to of e2.to) next.push({ to, from: id, message: e2.message })
        }
      }
      inflight = next
      for (const [vm, on] of n.runs) if (on.size > 1) n.twice.push(`${n.tick}: ${vm} on ${[...on].join(',')}`)
    }
  }
  return n
}

/** Apply a version's inventory on every manager (`hosts`: only those, to model a lagging member). */
function apply (n: Net, specs: HaVmSpec[], version: number, hosts: string[] = [...n.m.keys()]): Array<string | null> {
  const out = hosts.map(h => { n.version.set(h, version); return n.m.get(h)!.setVms(specs, version) })
  return out
}

t.test('protect live: the home adopts its running copy under the first claim of the version; nothing restarts', t => {
  const n = net({ running: { b: ['p'] } })
  n.run(20)
  t.same(apply(n, [spec('p', 'b', 5)], 5), [null, null, null])
  n.run(40)
  t.equal(n.m.get('b')!.roleOf('p'), 'running', 'b runs it as protected')
  t.same(n.m.get('b')!.ownClaim('p'), { epoch: 5 * HA_EPOCH_SPAN, host: 'b', attempts: 0 }, 'its claim is the first of generation 5')
  t.same(n.starts, [], 'no start')
  t.same(n.stops, [], 'no stop')
  t.same([...n.runs.get('p')!], ['b'])
  t.end()
})

t.test('protect live, then the home dies: restarted exactly once elsewhere, after the fence delay', t => {
  const n = net({ running: { b: ['p'] } })
  n.run(20)
  apply(n, [spec('p', 'b', 3)], 3)
  n.run(20)
  n.silent.add('b')
  n.runs.get('p')!.delete('b') // b and its guest are gone
  const died = n.tick
  n.run(150)
  t.equal(n.starts.length, 1, `one restart (${JSON.stringify(n.starts)})`)
  t.ok(n.starts[0]!.tick - died >= cfg.fenceDelayTicks, 'not before the fence delay')
  t.ok(n.starts[0]!.epoch > 3 * HA_EPOCH_SPAN, 'under a claim of the protection\'s generation')
  t.same(n.twice, [])
  t.end()
})

t.test('protect live: the home that does not run it destroys and releases; another host that runs it stops it', t => {
  const n = net({ running: { c: ['p'] } })
  n.run(20)
  apply(n, [spec('p', 'b', 2)], 2)
  n.run(120)
  t.ok(n.stops.some(s => s.host === 'c' && s.vm === 'p' && s.reason === 'conflict'), 'c, not the home, stops its copy')
  t.ok(n.stops.some(s => s.host === 'b' && s.vm === 'p'), 'b destroys (a start of an earlier life could be in flight) before releasing')
  t.equal(n.starts.length, 1, `then the majority restarts it once (${JSON.stringify(n.starts)})`)
  t.same(n.twice, [])
  t.end()
})

t.test('a home that never applied the protection is never taken over (it may run the VM unfenced), until it speaks of it', t => {
  const n = net({ running: { b: ['p'] } })
  n.run(20)
  // a and c apply version 4; b is cut off before it learns it, its copy running unfenced.
  n.silent.add('b')
  apply(n, [spec('p', 'b', 4)], 4, ['a', 'c'])
  n.run(200)
  t.same(n.starts, [], `no restart while the home may not know it protects p (${JSON.stringify(n.starts)})`)
  t.equal(n.m.get('a')!.status().pending.length, 0, 'not even pending')
  // With an operator's word that b is down, it is restarted.
  n.runs.get('p')!.delete('b')
  n.m.get('a')!.step({ type: 'haOperatorConfirmDown', host: 'b' })
  n.run(100)
  t.equal(n.starts.length, 1, 'after confirm-down, one restart')
  t.same(n.twice, [])
  t.end()
})

t.test('members that never heard the home speak of the protection grant its takeover on the word of one that did', t => {
  // Five members; b's claims on p never reach d and e (as members that joined just before b
  // was cut off: they heard its beats, not yet its 'held'). Only a and c heard b speak of p, and
  // two grants of five would not do: they must pass it on.
  const n = net({ members: ['a', 'b', 'c', 'd', 'e'].map(id => ({ id })), running: { b: ['p'] } })
  n.drop = (from, to, m) => from === 'b' && (to === 'd' || to === 'e') && m.type !== 'haBeat'
  n.run(20)
  apply(n, [spec('p', 'b', 6)], 6)
  n.run(40)
  t.equal(n.m.get('b')!.roleOf('p'), 'running', 'b runs p protected')
  n.silent.add('b')
  n.runs.get('p')!.delete('b')
  const died = n.tick
  n.run(250)
  t.equal(n.starts.length, 1, `one restart (${JSON.stringify(n.starts)})`)
  t.ok(n.starts.length > 0 && n.starts[0]!.tick - died >= cfg.fenceDelayTicks, 'not before the fence delay')
  t.ok(n.starts.length > 0 && n.starts[0]!.epoch > 6 * HA_EPOCH_SPAN, 'under a claim of the protection\'s generation')
  t.same(n.twice, [])
  t.end()
})

t.test('the word is not passed on for a home no one heard: no restart', t => {
  const n = net({ members: ['a', 'b', 'c', 'd', 'e'].map(id => ({ id })), running: { b: ['p'] } })
  n.drop = (from, _to, m) => from === 'b' && m.type !== 'haBeat'
  n.run(20)
  apply(n, [spec('p', 'b', 6)], 6)
  n.run(40)
  n.silent.add('b')
  n.runs.get('p')!.delete('b')
  n.run(250)
  t.same(n.starts, [], 'b may not have applied the protection: never taken over')
  t.same(n.twice, [])
  t.end()
})

t.test('unprotect: forgotten, the copy keeps running, fenced until a majority acts on the version', t => {
  const n = net({ running: { b: ['p'] } })
  n.run(10)
  apply(n, [spec('p', 'b', 2)], 2)
  n.run(30)
  // Only b applies version 3 at first: the others could still grant a takeover of p.
  apply(n, [], 3, ['b'])
  n.run(5)
  t.equal(n.m.get('b')!.roleOf('p'), undefined, 'p is no longer protected at b')
  t.same(n.stops, [], 'its copy keeps running')
  t.equal(n.m.get('b')!.watchdogOk(), true)
  // b loses its majority now: the copy is still fenced.
  n.silent.add('a'); n.silent.add('c')
  n.run(cfg.fenceTicks + 5)
  t.ok(n.stops.some(s => s.host === 'b' && s.vm === 'p' && s.reason === 'fence'), 'fenced: the others had not applied the unprotect')
  t.end()
})

t.test('unprotect applied by a majority: the copy is no longer fenced, and a crash restarts nothing', t => {
  const n = net({ running: { b: ['p'] } })
  n.run(10)
  apply(n, [spec('p', 'b', 2)], 2)
  n.run(30)
  apply(n, [], 3)
  n.run(5)
  n.silent.add('a'); n.silent.add('c')
  n.run(cfg.fenceTicks + 5)
  t.same(n.stops, [], 'unprotected: not fenced once a majority acts on version 3')
  n.silent.clear()
  n.silent.add('b')
  n.runs.get('p')!.delete('b')
  n.run(150)
  t.same(n.starts, [], 'not restarted after its host died')
  t.end()
})

t.test('re-protect: claims of the earlier protection neither outrank nor confuse the new one', t => {
  const n = net({ running: { b: ['p'] } })
  n.run(10)
  apply(n, [spec('p', 'b', 2)], 2)
  n.run(30)
  apply(n, [], 3)
  n.run(5)
  apply(n, [spec('p', 'b', 4)], 4)
  n.run(30)
  t.same(n.m.get('b')!.ownClaim('p'), { epoch: 4 * HA_EPOCH_SPAN, host: 'b', attempts: 0 })
  // A stale request of the first protection, with an epoch far above that protection's first claim.
  const a = n.m.get('a')!
  a.takeEffects()
  a.step({ type: 'haMessage', from: 'c', message: { type: 'haClaim', vm: 'p', claim: { epoch: 2 * HA_EPOCH_SPAN + 9, host: 'c', attempts: 0 }, phase: 'request' } })
  const fx = a.takeEffects().filter(e => e.type === 'send')
  t.equal(fx.length, 1)
  t.equal(fx[0]!.type === 'send' ? fx[0]!.message.type : '', 'haRefuse', 'refused (its claimant learns a higher claim stands)')
  // A request of a later protection this host has not applied yet: no answer, no grant.
  a.step({ type: 'haMessage', from: 'c', message: { type: 'haClaim', vm: 'p', claim: { epoch: 6 * HA_EPOCH_SPAN + 1, host: 'c', attempts: 0 }, phase: 'request' } })
  t.same(a.takeEffects().filter(e => e.type === 'send'), [], 'a claim of another generation is not granted')
  t.equal(a.status().vms.find(v => v.vm === 'p')!.owner, 'b', 'b still owns it at a')
  n.run(20)
  t.same(n.starts, [])
  t.same(n.twice, [])
  t.end()
})

t.test('bad inventories are refused whole, naming the problem; nothing changes', t => {
  const n = net({ members: [{ id: 'a' }, { id: 'b' }, { id: 'q', tieBreaker: true }], running: { a: ['p'] } })
  n.run(5)
  const a = n.m.get('a')!
  t.match(a.setVms([spec('p', 'a', 2), spec('p', 'b', 2)], 2), /vm p listed twice/)
  t.match(a.setVms([spec('p', 'zz', 2)], 2), /home zz is not a member/)
  t.match(a.setVms([spec('p', 'q', 2)], 2), /home q is a tie-breaker/)
  t.equal(a.roleOf('p'), undefined, 'nothing was protected')
  t.equal(a.setVms([spec('p', 'a', 2)], 2), null, 'a good one is applied')
  t.equal(a.roleOf('p'), 'running')
  t.equal(a.setVms([spec('p', 'a', 2)], 3), null, 'a later version may keep a VM whose home was checked when it was protected')
  t.end()
})
