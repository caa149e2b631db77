// Core config profiles validate; impossible combinations throw ConfigError with an exact message.
import t from 'tap'
import { ConfigError, defaultCoreConfig, localTestCoreConfig, validateCoreConfig } from '../../../agent/core/config.js'
import type { CoreConfig } from '../../../agent/core/config.js'

t.test('profiles are valid', t => {
  t.ok(validateCoreConfig(defaultCoreConfig()))
  t.ok(validateCoreConfig(localTestCoreConfig()))
  t.equal(defaultCoreConfig().tickMs, 100)
  t.end()
})

t.test('impossible combinations are rejected with exact messages', t => {
  const rows: Array<[Partial<CoreConfig>, string]> = [
    [{ probeTimeoutTicks: 9 }, 'probeTimeoutTicks must be < probeDeadlineTicks'],
    [{ probeTimeoutTicks: 1 }, 'probeTimeoutTicks must be >= 2 (one round trip is two ticks)'],
    [{ nackTimeoutTicks: 6 }, 'nackTimeoutTicks must be < probeDeadlineTicks - probeTimeoutTicks'],
    [{ gossipNodes: 0 }, 'gossipNodes must be a positive integer (got 0)'],
    [{ reportIntervalTicks: 2.5 }, 'reportIntervalTicks must be a positive integer (got 2.5)'],
    [{ indirectChecks: -1 }, 'indirectChecks must be a non-negative integer (got -1)'],
    [{ suspicionMaxTimeoutMult: 0.5 }, 'suspicionMaxTimeoutMult must be >= 1 (got 0.5)'],
    [{ gossipBytesMax: 1 << 20 }, 'gossipBytesMax must be <= frameBytesMax'],
    [{ forecastAlpha: 0 }, 'forecastAlpha must be in (0, 1]']
  ]
  for (const [patch, msg] of rows) {
    t.throws(() => validateCoreConfig({ ...defaultCoreConfig(), ...patch }), { name: 'ConfigError', code: 'CONFIG_INVALID', message: msg })
  }
  const e = new ConfigError('x')
  t.ok(e instanceof Error)
  t.end()
})
