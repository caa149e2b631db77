// Table tests for dynamic CPU allocation (policies/cpu-alloc.ts): class by class, weighted max-min
// inside a class, probing of saturated demand, the weights that carry it out, and when the host
// copes (resolved) or not.
import t from 'tap'
import { allocateCpu, defaultCpuAllocParams, validateCpuAllocParams, type CpuVm } from '../../policies/cpu-alloc.js'
import { ConfigError } from '../../policies/config-error.js'

const P = defaultCpuAllocParams()
const vm = (id: string, o: Partial<CpuVm> = {}): CpuVm => ({ id, qos: 'normal', weight: 1, vcpus: 2, capCores: null, usedCores: 1, allottedCores: null, ...o })
const by = (r: ReturnType<typeof allocateCpu>): Record<string, number> => Object.fromEntries(r.vms.map(v => [v.id, Math.round(v.allottedCores * 100) / 100]))

t.test('no contention: everyone gets its demand, equal default weights', async t => {
  const r = allocateCpu(4, [vm('a', { usedCores: 1 }), vm('b', { usedCores: 1.5 })], P)
  t.equal(r.contended, false)
  t.equal(r.resolved, true)
  t.same(by(r), { a: 1, b: 1.5 })
  t.same(r.vms.map(v => v.weight), [100, 100])
})

t.test('contention: the high class keeps its demand, the low one absorbs the shortfall', async t => {
  const r = allocateCpu(2, [vm('batch', { qos: 'low', usedCores: 2, allottedCores: 1 }), vm('db', { qos: 'high', usedCores: 1.2, allottedCores: 1 })], P)
  t.equal(r.contended, true)
  // db saturated (1.2 >= 0.9 x 1): demand 1.8; batch saturated: demand min(2, 3) = 2
  t.same(by(r), { batch: 0.2, db: 1.8 })
  t.equal(r.resolved, true, 'the high class is served: the host copes')
  const w = Object.fromEntries(r.vms.map(v => [v.id, v.weight]))
  t.ok(w.db! / w.batch! >= 8, `weights follow the allotments (${w.db}:${w.batch})`)
})

t.test('inside a class, weighted max-min: a small demand is met, the rest split by weight', async t => {
  const r = allocateCpu(3, [vm('a', { usedCores: 0.5 }), vm('b', { usedCores: 2, weight: 3 }), vm('c', { usedCores: 2, weight: 1 })], P)
  t.same(by(r), { a: 0.5, b: 1.88, c: 0.63 })
})

t.test('not resolved: the high class alone wants more than the host', async t => {
  const r = allocateCpu(2, [vm('h1', { qos: 'high', usedCores: 2 }), vm('h2', { qos: 'high', usedCores: 1.5 }), vm('l', { qos: 'low', usedCores: 1 })], P)
  t.equal(r.contended, true)
  t.equal(r.resolved, false)
  t.equal(Math.round(r.unservedCores * 100) / 100, 1.5)
  t.same(by(r), { h1: 1, h2: 1, l: 0 })
})

t.test('caps: demand never above the cap, and the cap becomes the quota', async t => {
  const r = allocateCpu(4, [vm('a', { usedCores: 2, capCores: 0.5, allottedCores: 0.5 })], P)
  t.equal(r.vms[0]!.demandCores, 0.5)
  t.equal(r.vms[0]!.quotaCores, 0.5)
})

t.test('probing converges: a starved high-class VM reaches its vCPUs in a few steps', async t => {
  // One core, two busy single-vCPU VMs; each step each VM uses what its weight gives it.
  let hi = vm('hi', { qos: 'high', vcpus: 1, usedCores: 0.5 })
  let lo = vm('lo', { qos: 'low', vcpus: 1, usedCores: 0.5 })
  for (let i = 0; i < 6; i++) {
    const r = allocateCpu(1, [hi, lo], P)
    const w = Object.fromEntries(r.vms.map(v => [v.id, v.weight]))
    const share = w.hi! / (w.hi! + w.lo!)
    hi = { ...hi, usedCores: share, allottedCores: r.vms.find(v => v.id === 'hi')!.allottedCores }
    lo = { ...lo, usedCores: 1 - share, allottedCores: r.vms.find(v => v.id === 'lo')!.allottedCores }
  }
  t.ok(hi.usedCores >= 0.95, `the high-class VM ends with ${hi.usedCores.toFixed(3)} of its one core`)
})

t.test('measured waiting is demand: a VM that waited for a CPU wants what it ran plus what it waited', async t => {
  const r = allocateCpu(1, [vm('hi', { qos: 'high', vcpus: 1, usedCores: 0.3, waitCores: 0.6 }), vm('lo', { qos: 'low', vcpus: 1, usedCores: 0.3, waitCores: 0.9 })], P)
  t.same(r.vms.map(v => Math.round(v.demandCores * 100) / 100), [0.9, 1], 'hi 0.3 + 0.6; lo 0.3 + 0.9 capped at its one vCPU')
  t.equal(r.contended, true)
  t.same(by(r), { hi: 0.9, lo: 0.1 })
  t.equal(r.resolved, true)
})

t.test('validation names the field', async t => {
  let err: unknown = null
  try { validateCpuAllocParams({ ...P, probeFactor: 0.5 }) } catch (e) { err = e }
  t.ok(err instanceof ConfigError && err.path === 'probeFactor')
})

t.test('contended with no VM of a guaranteed class: not resolved (the host is relieved by moves)', async t => {
  const r = allocateCpu(2, [vm('a', { usedCores: 2, allottedCores: 1 }), vm('b', { usedCores: 2, allottedCores: 1 })], P)
  t.equal(r.contended, true)
  t.equal(r.unservedCores, 0, 'nothing of a guaranteed class goes unserved...')
  t.equal(r.resolved, false, '...but nobody is protected: the overload is not hidden')
})

t.test('weights in two bands: a VM served in full outweighs every absorber 50 to 1, so it is served during its bursts too', async t => {
  // hi wants 0.8 of the core in bursts (runs flat out, then sleeps); two batch VMs take the rest.
  const r = allocateCpu(1, [
    vm('hi', { qos: 'high', vcpus: 1, usedCores: 0.75, waitCores: 0.05 }),
    vm('b1', { qos: 'low', vcpus: 1, usedCores: 0.15, waitCores: 0.85, weight: 3 }),
    vm('b2', { qos: 'low', vcpus: 1, usedCores: 0.05, waitCores: 0.95, weight: 1 })
  ], P)
  t.same(by(r), { b1: 0.15, b2: 0.05, hi: 0.8 })
  const w = Object.fromEntries(r.vms.map(v => [v.id, v.weight]))
  // Proportional weights (80:15:5) would give hi only 80 % of the CPU during a burst while both batch VMs run.
  const burst = w.hi! / (w.hi! + w.b1! + w.b2!)
  t.ok(burst >= 0.97, `during a burst hi gets ${burst.toFixed(3)} of the core (weights ${w.hi}:${w.b1}:${w.b2})`)
  t.ok(w.hi! >= 50 * Math.max(w.b1!, w.b2!), 'the served band is 50 times the absorbers at least')
  t.ok(Math.abs(w.b1! / w.b2! - 3) < 0.2, `the absorbers keep their proportions among themselves, 3:1 within rounding (${w.b1}:${w.b2})`)
})

t.test('weights: when nobody is served in full, they are the allotments in proportion', async t => {
  const r = allocateCpu(2, [vm('a', { usedCores: 2, allottedCores: 1, weight: 3 }), vm('b', { usedCores: 2, allottedCores: 1, weight: 1 })], P)
  const w = Object.fromEntries(r.vms.map(v => [v.id, v.weight]))
  t.same(by(r), { a: 1.5, b: 0.5 })
  t.equal(w.a! / w.b!, 3, `a:b = ${w.a}:${w.b}`)
})
