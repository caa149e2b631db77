import t from 'tap'
import { Lifecycle, startOrUnwind, type Component } from '../../agent/lib/lifecycle.js'

function recorder (): { log: string[], comp: (name: string, opts?: { failStart?: boolean, failStop?: boolean }) => Component } {
  const log: string[] = []
  return {
    log,
    comp: (name, opts = {}) => ({
      name,
      start: async () => { log.push(`start ${name}`); if (opts.failStart === true) throw new Error(`${name} cannot start`) },
      stop: async () => { log.push(`stop ${name}`); if (opts.failStop === true) throw new Error(`${name} cannot stop`) }
    })
  }
}

t.test('components start in order and stop in reverse', async t => {
  const r = recorder()
  const life = new Lifecycle()
  for (const n of ['store', 'driver', 'runtime', 'api']) await life.add(r.comp(n))
  t.same(life.names(), ['store', 'driver', 'runtime', 'api'])
  t.same(await life.stopAll(), [], 'no stop failed')
  t.same(r.log, ['start store', 'start driver', 'start runtime', 'start api', 'stop api', 'stop runtime', 'stop driver', 'stop store'])
  t.same(life.names(), [], 'nothing left started')
})

t.test('a start-up that fails half-way stops what had started, newest first, and rethrows', async t => {
  const r = recorder()
  const life = new Lifecycle()
  await t.rejects(startOrUnwind(life, async l => {
    await l.add(r.comp('store'))
    await l.add(r.comp('runtime'))
    await l.add(r.comp('api', { failStart: true }))
    await l.add(r.comp('web'))
  }), /api cannot start/, 'the start-up error reaches the caller')
  t.same(r.log, ['start store', 'start runtime', 'start api', 'stop runtime', 'stop store'], 'the failed component holds nothing and is not stopped; later ones never start')
})

t.test('a failing stop is reported and the others still stop', async t => {
  const r = recorder()
  const reported: string[] = []
  const life = new Lifecycle(f => reported.push(`${f.name}: ${(f.err as Error).message}`))
  await life.add(r.comp('store'))
  await life.add(r.comp('driver', { failStop: true }))
  await life.add(r.comp('api'))
  const failures = await life.stopAll()
  t.same(failures.map(f => f.name), ['driver'])
  t.same(reported, ['driver: driver cannot stop'])
  t.same(r.log.slice(3), ['stop api', 'stop driver', 'stop store'], 'store stopped although driver failed')
})

t.test('stopAll is idempotent and refuses new components afterwards', async t => {
  const r = recorder()
  const life = new Lifecycle()
  await life.add(r.comp('store'))
  await Promise.all([life.stopAll(), life.stopAll()])
  t.same(r.log, ['start store', 'stop store'], 'stopped once')
  await t.rejects(life.add(r.comp('late')), /cannot start late: the agent is stopping/)
})

t.test('components without start or stop', async t => {
  const life = new Lifecycle()
  let stopped = false
  await life.add({ name: 'only-stop', stop: () => { stopped = true } })
  await life.add({ name: 'only-start', start: () => {} })
  await life.stopAll()
  t.ok(stopped)
})
