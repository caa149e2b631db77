// HA: the claim that any host may make for a VM left unclaimed too long (a "stuck" orphan) holds
// the hard rules against the claims this host makes in the same step, not only against what ran
// before: two VMs kept apart are never both claimed by one host at once.
import t from 'tap'
import { Prng } from '../../../agent/core/prng.js'
import { HaManager, simHaConfig, type HaMessage, type HaVmSpec } from '../../../agent/core/ha/index.js'

const vm = (id: string, home: string): HaVmSpec => ({ id, home, priority: 0, cpuMips: 1000, memMiB: 1024, source: { kind: 'shared', definition: id } })

t.test('stuck orphans kept apart by a hard rule: one host never claims both at once', t => {
  const cfg = simHaConfig()
  const members = ['a', 'b', 'c', 'd'].map(id => ({ id, cpuMips: 8000, memMiB: 16384 }))
  // a runs v0, so the shared assignment gives v1 and v2 (c's) to b and d, which never claim
  // them here: after a while they are stuck and any eligible host may try them.
  const vms = [vm('v0', 'a'), vm('v1', 'c'), vm('v2', 'c')]
  const rules = { vmVm: [{ kind: 'anti-affinity' as const, vms: ['v1', 'v2'], hard: true }], vmHost: [] }
  const a = new HaManager({ self: 'a', members, vms, config: cfg, prng: new Prng(1), life: 1, running: ['v0'], rules })
  a.step({ type: 'haLocalFence', fenced: true })
  const beat = (tick: number, echo: number | null): HaMessage => ({ type: 'haBeat', life: 1, sent: tick, echo: echo === null ? null : { life: 1, sent: echo }, mode: { version: 0, armed: true }, maintenance: [], fenced: true, confirmed: [] })
  let lastSent: number | null = null
  let claimsOfBoth = 0
  let claimed = 0
  for (let tick = 1; tick <= 200; tick++) {
    const c = tick < 20 ? 'alive' : tick < 30 ? 'suspect' : 'dead'
    a.step({ type: 'members', members: [{ id: 'b', state: 'alive' }, { id: 'd', state: 'alive' }, { id: 'c', state: c }] })
    for (const id of ['b', 'd']) a.step({ type: 'haMessage', from: id, message: beat(tick, lastSent) })
    if (tick < 20) a.step({ type: 'haMessage', from: 'c', message: beat(tick, null) })
    a.tick()
    for (const e of a.takeEffects()) {
      if (e.type === 'send' && e.message.type === 'haBeat') lastSent = e.message.sent
    }
    const mine = a.status().vms.filter(v => v.owner === 'a' && (v.role === 'claiming' || v.role === 'starting')).map(v => v.vm)
    if (mine.some(v => v !== 'v0')) claimed++
    if (mine.includes('v1') && mine.includes('v2')) claimsOfBoth++
  }
  t.ok(claimed > 0, `a did claim a stuck VM of c's (${claimed} ticks)`)
  t.equal(claimsOfBoth, 0, 'never v1 and v2 both')
  t.end()
})
