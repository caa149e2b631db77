/**
 * The JSON-lines logger as the journal receives it (agent/lib/logger.ts), and the typed errors
 * it serialises (agent/lib/errors.ts).
 *
 * Goal: one parseable JSON object per line with ts/level/component/msg/fields; errors with
 * name, message, code, stack and cause; a log call never throws; the optional `<N>` priority
 * prefix journald understands.
 * Method: a logger writing into an array, with a fixed clock.
 */
import t from 'tap'
import { jsonLogger, memoryLogger, silentLogger, isLogThreshold, type LogRecord } from '../../agent/lib/logger.js'
import { AbortError, CronExpressionError, DriverError, SamplerError, StateLockedError, StoreError, TraceFileError, errorCode } from '../../agent/lib/errors.js'

const NOW = new Date('2025-01-02T03:04:05.678Z')

function capture (init: Parameters<typeof jsonLogger>[0] = {}) {
  const lines: string[] = []
  const logger = jsonLogger({ now: () => NOW, write: l => { lines.push(l) }, ...init })
  const records = (): LogRecord[] => lines.map(l => JSON.parse(l) as LogRecord)
  return { logger, lines, records }
}

t.test('one JSON object per line, with ts, level, component, msg, fields', async t => {
  const { logger, lines, records } = capture()
  logger.info('agent started', { id: 'ab12cd34', members: 3 })
  logger.forComponent('agent:membership').warn('member ab12cd34 became suspect (from alive)', { peer: 'ab12cd34' })
  logger.info('no fields')
  logger.info('empty fields', {})
  t.ok(lines.every(l => l.endsWith('\n') && l.indexOf('\n') === l.length - 1), 'exactly one newline, at the end')
  t.same(records(), [
    { ts: '2025-01-02T03:04:05.678Z', level: 'info', component: 'agent', msg: 'agent started', fields: { id: 'ab12cd34', members: 3 } },
    { ts: '2025-01-02T03:04:05.678Z', level: 'warn', component: 'agent:membership', msg: 'member ab12cd34 became suspect (from alive)', fields: { peer: 'ab12cd34' } },
    { ts: '2025-01-02T03:04:05.678Z', level: 'info', component: 'agent', msg: 'no fields' },
    { ts: '2025-01-02T03:04:05.678Z', level: 'info', component: 'agent', msg: 'empty fields' }
  ])
  const multi = capture()
  multi.logger.info('line one\nline two', { text: 'a\nb' })
  t.equal(multi.lines.length, 1)
  t.equal(multi.lines[0]?.split('\n').length, 2, 'newlines inside values are escaped by JSON')
})

t.test('level filter, inherited by component loggers', async t => {
  const { logger, records } = capture({ level: 'warn' })
  const child = logger.forComponent('agent:store')
  for (const l of [logger, child]) { l.debug('d'); l.info('i'); l.warn('w'); l.error('e') }
  t.same(records().map(r => `${r.component}/${r.level}`), ['agent/warn', 'agent/error', 'agent:store/warn', 'agent:store/error'])
  const off = capture({ level: 'silent' })
  off.logger.error('nothing')
  t.same(off.lines, [])
  const dbg = capture({ level: 'debug' })
  dbg.logger.debug('x')
  t.equal(dbg.lines.length, 1)
  t.ok(isLogThreshold('warn'))
  t.notOk(isLogThreshold('verbose'))
})

t.test('errors are serialised with name, message, code, stack and cause', async t => {
  const { logger, records } = capture()
  const io = Object.assign(new Error('IO error: lock /x/LOCK: already held by process'), { code: 'LEVEL_LOCKED' })
  const err = new StateLockedError('/x', { cause: io })
  logger.error('cannot start', { err, nested: { list: [new DriverError('VM_NOT_FOUND', 'vm a is not on this host')] } })
  const f = records()[0]?.fields as Record<string, any>
  t.match(f['err'], {
    name: 'StateLockedError',
    code: 'STATE_LOCKED',
    message: 'state directory /x is in use by another starling agent',
    stack: /StateLockedError/,
    cause: { name: 'Error', code: 'LEVEL_LOCKED', message: /already held/ }
  })
  t.match(f['nested'].list[0], { name: 'DriverError', code: 'VM_NOT_FOUND' })
})

t.test('a log call never throws: cycles, BigInt, functions, throwing getters, a broken sink', async t => {
  const { logger, records } = capture()
  const cyclic: Record<string, unknown> = { a: 1 }
  cyclic['self'] = cyclic
  const evil = { get boom (): never { throw new Error('getter exploded') } }
  logger.info('odd values', {
    cyclic, big: 12n, fn: function named () {}, sym: Symbol('s'), nan: NaN, date: new Date(0),
    bytes: new Uint8Array(3), map: new Map([['k', 1]]), set: new Set([1, 2]), undef: undefined, evil,
    deep: { a: { b: { c: { d: { e: { f: { g: { h: { i: 1 } } } } } } } } }
  })
  const f = records()[0]?.fields as Record<string, unknown>
  t.match(f, {
    cyclic: { a: 1, self: '[cycle]' }, big: '12n', fn: '[function named]', sym: 'Symbol(s)', nan: 'NaN',
    date: '1970-01-01T00:00:00.000Z', bytes: '[3 bytes]', map: { k: 1 }, set: [1, 2], evil: /unserialisable: getter exploded/
  })
  t.notOk('undef' in f, 'undefined fields are left out')
  t.match(JSON.stringify(f['deep']), /too deep/)
  const broken = jsonLogger({ write: () => { throw new Error('EPIPE') } })
  t.doesNotThrow(() => broken.error('stdout closed'))
})

t.test('journald priority prefix, when asked for', async t => {
  const { logger, lines } = capture({ journaldPrefix: true, level: 'debug' })
  logger.debug('d'); logger.info('i'); logger.warn('w'); logger.error('e')
  t.same(lines.map(l => l.slice(0, 3)), ['<7>', '<6>', '<4>', '<3>'], 'syslog priorities: debug, info, warning, err')
  t.same(JSON.parse(lines[1]!.slice(3)), { ts: NOW.toISOString(), level: 'info', component: 'agent', msg: 'i' }, 'the rest is the JSON record')
  const plain = capture()
  plain.logger.info('i')
  t.equal(plain.lines[0]?.[0], '{', 'no prefix by default')
})

t.test('memory and silent loggers', async t => {
  const log = memoryLogger({ recordsMax: 3 })
  const child = log.forComponent('agent:x')
  child.info('one'); child.warn('two'); log.error('three'); log.debug('four')
  t.same(log.records.map(r => r.msg), ['two', 'three', 'four'], 'shared by children, oldest dropped past recordsMax')
  t.same(log.find('t').map(r => r.msg), ['two', 'three'])
  t.same(log.find('t', 'error').map(r => r.msg), ['three'])
  log.clear()
  t.same(log.records, [])
  const s = silentLogger()
  t.doesNotThrow(() => { s.error('x', { err: new Error('y') }); s.forComponent('c').info('z') })
})

t.test('typed errors: name, stable code, cause', async t => {
  const cause = new Error('root')
  const cases: Array<[Error & { code: string }, string, string]> = [
    [new StateLockedError('/d', { cause }), 'StateLockedError', 'STATE_LOCKED'],
    [new StoreError('STORE_IO', 'x', { cause }), 'StoreError', 'STORE_IO'],
    [new DriverError('DRIVER_TIMEOUT', 'x', { cause }), 'DriverError', 'DRIVER_TIMEOUT'],
    [new SamplerError('x', { cause }), 'SamplerError', 'SAMPLER_FAILED'],
    [new CronExpressionError('job', '* *', { cause, detail: 'bad' }), 'CronExpressionError', 'CRON_INVALID_EXPRESSION'],
    [new TraceFileError('/f', 'x', { cause }), 'TraceFileError', 'TRACE_INVALID'],
    [new AbortError('x', { cause }), 'AbortError', 'ABORT_ERR']
  ]
  for (const [err, name, code] of cases) {
    t.ok(err instanceof Error, `${name} is an Error`)
    t.equal(err.name, name)
    t.equal(err.code, code)
    t.equal(err.cause, cause, `${name} keeps its cause`)
    t.equal(errorCode(err), code)
  }
  t.equal(new DriverError('DRIVER_FAILED', 'x').cause, undefined, 'no cause unless given')
  t.equal(new CronExpressionError('job', '* *', { detail: 'bad' }).message, 'cron job "job": invalid cron expression "* *": bad')
  t.equal(errorCode('nope'), undefined)
  t.equal(errorCode({ code: 5 }), undefined)
})
