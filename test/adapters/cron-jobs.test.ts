/**
 * Wall-clock jobs on node-cron (agent/adapters/cron-jobs.ts).
 *
 * Goal: jobs run at the slots their expressions name, failures and overlaps are logged and
 * counted without unscheduling anything, stop() really stops, and bad expressions fail early
 * with a clear message.
 * Method: a fake clock. @tapjs/clock is not among the installed tap plugins, so these tests use
 * Node's own MockTimers (node:test `mock.timers`, setTimeout + Date), which node-cron follows
 * because it reads `new Date()` and the global setTimeout on every beat. One extra test runs on
 * the real clock with a seconds schedule, to show nothing depends on the fake.
 */
import t, { type Test } from 'tap'
import { mock } from 'node:test'
import { getTasks } from 'node-cron'
import { cronJobs, cronExpressionProblem } from '../../agent/adapters/cron-jobs.js'
import { memoryLogger } from '../../agent/lib/logger.js'
import { sleep } from '../lib/wait.js'

const START = Date.UTC(2025, 0, 1, 0, 0, 0)

/** Advance the fake clock minute by minute (or by `stepMs`), letting promise callbacks run. */
async function advance (ms: number, stepMs = 60_000): Promise<void> {
  for (let done = 0; done < ms; done += stepMs) {
    mock.timers.tick(Math.min(stepMs, ms - done))
    for (let i = 0; i < 5; i++) await new Promise(resolve => setImmediate(resolve))
  }
}

function fakeClock (t: Test): void {
  mock.timers.enable({ apis: ['setTimeout', 'setInterval', 'Date'], now: START })
  t.teardown(() => { mock.timers.reset() })
}

t.test('compaction hourly and a report every 5 minutes, at the right wall times', async t => {
  fakeClock(t)
  const log = memoryLogger()
  const compactions: string[] = []
  const reports: string[] = []
  const jobs = cronJobs({
    timezone: 'UTC',
    jobs: [
      { name: 'compact-store', schedule: '17 * * * *', run: async () => { compactions.push(new Date().toISOString()) } },
      { name: 'report', schedule: '*/5 * * * *', run: () => { reports.push(new Date().toISOString()) } }
    ]
  })({ logger: log })
  await advance(10 * 60_000)
  t.same(reports, [], 'nothing runs before start()')
  jobs.start()
  jobs.start()
  t.equal(log.find('cron jobs started').length, 1, 'start is idempotent')
  t.same(jobs.status().map(s => [s.name, s.nextRun?.toISOString()]), [['compact-store', '2025-01-01T00:17:00.000Z'], ['report', '2025-01-01T00:15:00.000Z']])
  await advance(2 * 60 * 60_000)
  t.same(compactions, ['2025-01-01T00:17:00.000Z', '2025-01-01T01:17:00.000Z'])
  t.equal(reports.length, 24, 'every 5 minutes from 00:15 to 02:10 inclusive (started at 00:10, ran 2 h)')
  t.equal(reports[0], '2025-01-01T00:15:00.000Z')
  t.equal(reports.at(-1), '2025-01-01T02:10:00.000Z')
  t.match(jobs.status(), [{ name: 'compact-store', runs: 2, failures: 0 }, { name: 'report', runs: 24 }])
  jobs.stop()
  jobs.stop()
  await advance(60 * 60_000)
  t.equal(reports.length, 24, 'nothing runs after stop()')
  t.equal(jobs.status()[0]?.nextRun, null)
  t.equal([...getTasks().values()].filter(task => task.name?.startsWith('starling:') === true).length, 0, 'tasks removed from node-cron')
  jobs.start()
  await advance(5 * 60_000)
  t.equal(reports.length, 25, 'start() after stop() schedules again')
  jobs.stop()
})

t.test('six fields: seconds granularity', async t => {
  fakeClock(t)
  let runs = 0
  const jobs = cronJobs({ jobs: [{ name: 'fast', schedule: '*/10 * * * * *', run: () => { runs++ } }] })({ logger: memoryLogger() })
  jobs.start()
  await advance(60_000, 1000)
  t.equal(runs, 6)
  jobs.stop()
})

t.test('a failing job is logged and counted, and stays scheduled', async t => {
  fakeClock(t)
  const log = memoryLogger()
  let calls = 0
  const jobs = cronJobs({ jobs: [{ name: 'flaky', schedule: '* * * * *', run: async () => { calls++; if (calls % 2 === 1) throw Object.assign(new Error('disk full'), { code: 'ENOSPC' }) } }] })({ logger: log })
  jobs.start()
  await advance(4 * 60_000)
  t.equal(calls, 4)
  t.match(jobs.status(), [{ runs: 4, failures: 2 }])
  const failed = log.find('cron job failed', 'error')
  t.equal(failed.length, 2)
  t.match(failed[0], { component: 'agent:cron', fields: { job: 'flaky', err: { name: 'Error', message: 'disk full', code: 'ENOSPC' } } })
  jobs.stop()
})

t.test('a run still going at its next slot: slot skipped; stop() aborts the running job', async t => {
  fakeClock(t)
  const log = memoryLogger()
  let started = 0
  let abortedWith: unknown = null
  const jobs = cronJobs({
    jobs: [{
      name: 'slow',
      schedule: '* * * * *',
      run: async (signal) => {
        started++
        await new Promise<void>(resolve => signal.addEventListener('abort', () => { abortedWith = signal.reason; resolve() }, { once: true }))
      }
    }]
  })({ logger: log })
  jobs.start()
  await advance(3 * 60_000)
  t.equal(started, 1, 'never two runs at once')
  t.match(jobs.status(), [{ overlaps: 2 }])
  t.equal(log.find('slot skipped', 'warn').length, 2)
  jobs.stop()
  await advance(1000, 1000)
  t.match(abortedWith, { message: 'cron jobs stopped' }, 'the running job saw the abort')
})

t.test('invalid definitions fail when the jobs are built, with a clear error', async t => {
  const logger = memoryLogger()
  const build = (schedule: string, name = 'compact-store') => () => cronJobs({ jobs: [{ name, schedule, run: () => {} }] })({ logger })
  t.throws(build('61 * * * *'), {
    name: 'CronExpressionError',
    code: 'CRON_INVALID_EXPRESSION',
    job: 'compact-store',
    expression: '61 * * * *',
    message: 'cron job "compact-store": invalid cron expression "61 * * * *": minute: 61 is a invalid expression for minute'
  })
  t.throws(build('every hour'), { code: 'CRON_INVALID_EXPRESSION', message: /expected 5 or 6 fields but got 2/ })
  t.throws(build('* * * * * * *'), { message: /expected 5 or 6 fields but got 7/ })
  t.throws(build('*/5 * * * $'), { message: /illegal characters/ })
  t.throws(build('* * * * *', ''), { message: /a job needs a name/ })
  t.throws(() => cronJobs({ jobs: [{ name: 'a', schedule: '* * * * *', run: () => {} }, { name: 'a', schedule: '@hourly', run: () => {} }] })({ logger }), { message: /another job has the same name/ })
  t.throws(() => cronJobs({ jobs: [], timezone: 'Mars/Olympus_Mons' })({ logger }), { code: 'CRON_INVALID_EXPRESSION', message: /unknown time zone/ })
  t.equal(cronExpressionProblem('@hourly'), null, 'nicknames are accepted')
  t.equal(cronExpressionProblem('17 * * * *'), null)
})

t.test('real clock: a seconds schedule fires (no fake timers involved)', async t => {
  let runs = 0
  const jobs = cronJobs({ jobs: [{ name: 'tick', schedule: '* * * * * *', run: () => { runs++ } }] })({ logger: memoryLogger() })
  jobs.start()
  const deadline = Date.now() + 3500
  while (runs < 2 && Date.now() < deadline) await sleep(50)
  jobs.stop()
  t.ok(runs >= 2, `ran ${runs} times in at most 3.5 s`)
})
