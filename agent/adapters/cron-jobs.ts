/**
 * Wall-clock jobs on node-cron 4: store compaction every hour, a status report line every few
 * minutes, and the like.
 *
 * These are the only things in the agent scheduled by the calendar rather than by ticks. A job's
 * `run` should only push an input to the runtime or call an adapter: it runs on the event loop
 * between ticks, so it must not touch the core directly (STYLE §4: the runtime queues inputs).
 *
 * - Every expression is checked when the jobs are built: an invalid one throws
 *   CronExpressionError naming the job, the expression and node-cron's reason. Nothing is
 *   scheduled before start().
 * - A run that is still going when its next slot comes is not started twice (node-cron's
 *   noOverlap); the skipped slot is logged at warn and counted.
 * - A run that throws or rejects is logged at error and counted; the job stays scheduled.
 * - stop() destroys every task and aborts the signal handed to running jobs. start() and stop()
 *   are idempotent; start() after stop() schedules the jobs again.
 */
import { createTask, validateDetailed, type ScheduledTask, type Logger as CronLogger } from 'node-cron'
import type { Logger } from '../ports/logger.js'
import { CronExpressionError } from '../lib/errors.js'

export interface CronJob {
  /** Unique among the jobs; used in log lines and status. */
  name: string
  /**
   * Cron expression: 5 fields (minute hour day-of-month month day-of-week) or 6 with seconds
   * first. Nicknames such as '@hourly' work too.
   */
  schedule: string
  /**
   * The work. It gets a signal that fires on stop(). Its rejection is logged, never thrown.
   */
  run: (signal: AbortSignal) => void | Promise<void>
}

export interface CronJobsInit {
  jobs: CronJob[]
  /**
   * IANA time zone the expressions are read in.
   * @default the system's local time zone
   */
  timezone?: string
}

export interface CronJobsComponents {
  logger: Logger
}

/** Counters of one job, for status output and metrics. */
export interface CronJobStatus {
  name: string
  schedule: string
  runs: number
  failures: number
  /** Slots skipped because the previous run was still going. */
  overlaps: number
  /** Slots node-cron found it had missed (event loop blocked past its tolerance). */
  missed: number
  /** Next planned run, or null when stopped. */
  nextRun: Date | null
}

export interface CronJobs {
  start (): void
  stop (): void
  status (): CronJobStatus[]
}

/** Check one expression; returns node-cron's reason when it is invalid, or null. */
export function cronExpressionProblem (expression: string): string | null {
  if (typeof expression !== 'string') return 'not a string'
  let v: ReturnType<typeof validateDetailed>
  try {
    v = validateDetailed(expression)
  } catch (err) {
    return err instanceof Error ? err.message : String(err)
  }
  if (v.valid) return null
  return v.errors.map(e => (e.field === 'expression' ? e.message : `${e.field}: ${e.message}`)).join('; ') || 'invalid'
}

interface JobState {
  job: CronJob
  task: ScheduledTask | null
  counters: { runs: number, failures: number, overlaps: number, missed: number }
}

class CronJobsImpl implements CronJobs {
  private readonly log: Logger
  private readonly jobs: JobState[]
  private readonly timezone: string | undefined
  private abort: AbortController | null = null

  constructor (init: CronJobsInit, components: CronJobsComponents) {
    this.log = components.logger.forComponent('agent:cron')
    this.timezone = init.timezone
    const names = new Set<string>()
    for (const job of init.jobs) {
      if (typeof job.name !== 'string' || job.name === '') throw new CronExpressionError(String(job.name), job.schedule, { detail: 'a job needs a name' })
      if (names.has(job.name)) throw new CronExpressionError(job.name, job.schedule, { detail: 'another job has the same name' })
      names.add(job.name)
      const problem = cronExpressionProblem(job.schedule)
      if (problem !== null) throw new CronExpressionError(job.name, job.schedule, { detail: problem })
    }
    if (this.timezone !== undefined) {
      try {
        new Intl.DateTimeFormat('en-US', { timeZone: this.timezone })
      } catch (err) {
        throw new CronExpressionError('*', `timezone ${this.timezone}`, { detail: 'unknown time zone', cause: err })
      }
    }
    this.jobs = init.jobs.map(job => ({ job, task: null, counters: { runs: 0, failures: 0, overlaps: 0, missed: 0 } }))
  }

  start (): void {
    if (this.abort !== null) return
    const abort = new AbortController()
    this.abort = abort
    for (const state of this.jobs) state.task = this.schedule(state, abort.signal)
    this.log.info('cron jobs started', { jobs: this.jobs.map(s => `${s.job.name} (${s.job.schedule})`) })
  }

  private schedule (state: JobState, signal: AbortSignal): ScheduledTask {
    const { job, counters } = state
    const log = this.log
    const cronLogger: CronLogger = {
      info: (m) => log.debug(String(m), { job: job.name }),
      warn: (m) => log.warn(String(m), { job: job.name }),
      error: (m, err) => log.debug('node-cron reported an error', { job: job.name, err: err ?? m }),
      debug: (m, err) => log.debug(String(m), { job: job.name, ...(err !== undefined ? { err } : {}) })
    }
    const task = createTask(job.schedule, async () => {
      counters.runs++
      const started = performance.now()
      try {
        await job.run(signal)
        log.debug('cron job done', { job: job.name, tookMs: Math.round(performance.now() - started) })
      } catch (err) {
        counters.failures++
        log.error('cron job failed', { job: job.name, err, failures: counters.failures })
      }
    }, {
      name: `starling:${job.name}`,
      noOverlap: true,
      logger: cronLogger,
      ...(this.timezone !== undefined ? { timezone: this.timezone } : {})
    })
    task.on('execution:overlap', () => {
      counters.overlaps++
      log.warn('cron job still running at its next slot: slot skipped', { job: job.name, overlaps: counters.overlaps })
    })
    task.on('execution:missed', (ctx) => {
      counters.missed++
      log.warn('cron job slot missed (event loop was blocked)', { job: job.name, slot: ctx.date, missed: counters.missed })
    })
    void Promise.resolve(task.start()).catch((err: unknown) => { log.error('cron job could not start', { job: job.name, err }) })
    return task
  }

  stop (): void {
    const abort = this.abort
    if (abort === null) return
    this.abort = null
    abort.abort(new Error('cron jobs stopped'))
    for (const state of this.jobs) {
      const task = state.task
      state.task = null
      if (task !== null) void Promise.resolve(task.destroy()).catch(() => {})
    }
    this.log.info('cron jobs stopped')
  }

  status (): CronJobStatus[] {
    return this.jobs.map(s => ({
      name: s.job.name,
      schedule: s.job.schedule,
      ...s.counters,
      nextRun: s.task?.getNextRun() ?? null
    }))
  }
}

/**
 * Factory (STYLE §1.4): `cronJobs({ jobs })({ logger })`. Throws CronExpressionError at once for
 * an invalid expression, an unnamed or duplicate job, or an unknown time zone.
 */
export function cronJobs (init: CronJobsInit): (components: CronJobsComponents) => CronJobs {
  return components => new CronJobsImpl(init, components)
}
