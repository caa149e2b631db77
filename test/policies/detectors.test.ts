// Table tests for the numeric helpers, the forecasters and the overload/underload detectors.
import t from 'tap'
import { iqr, mad, median, ols, percentile, rSquared } from '../../policies/stats.js'
import { arForecast, ewma, forecast, holtForecast, horizonSteps, linearForecast, robustLinearForecast } from '../../policies/forecast.js'
import { detectOverload, type OverloadParams } from '../../policies/overload.js'
import { isUnderloaded } from '../../policies/underload.js'

const close = (a: number, b: number, eps = 1e-9): boolean => Math.abs(a - b) <= eps

t.test('stats', t => {
  const cases: Array<[string, number, number]> = [
    ['median odd', median([3, 1, 2]), 2],
    ['median even', median([4, 1, 3, 2]), 2.5],
    ['p25 (n+1) rule', percentile([1, 2, 3, 4, 5, 6, 7], 25), 2],
    ['mad', mad([1, 1, 2, 2, 4, 6, 9]), 1],
    // CloudSim 3.0.3 index quartiles: n=12 -> q1 index round(3.25)-1=2, q3 round(9.75)-1=9
    ['iqr index', iqr([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]), 10 - 3],
    ['iqr interpolated', iqr([1, 2, 3, 4, 5, 6, 7], 'interpolated'), 4],
    ['ols slope', ols([1, 2, 3, 4], [2, 4, 6, 8])[1], 2],
    ['ols intercept', ols([1, 2, 3, 4], [3, 5, 7, 9])[0], 1],
    ['r2 perfect', rSquared([2, 4, 6, 8, 10], [[1, 2, 3, 4, 5]]), 1]
  ]
  for (const [name, got, want] of cases) t.ok(close(got, want, 1e-9), `${name}: ${got} = ${want}`)
  t.end()
})

t.test('forecasters', t => {
  const ramp = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
  const cases: Array<[string, number, number, number]> = [
    ['lr on a ramp, 1 step', linearForecast(ramp, 10, 1), 1.1, 1e-9],
    ['lr on a ramp, 3 steps', linearForecast(ramp, 10, 3), 1.3, 1e-9],
    ['lr on a flat series', linearForecast([0.5, 0.5, 0.5], 10, 5), 0.5, 1e-12],
    ['lrr ignores an outlier', robustLinearForecast([0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.95, 0.5], 10, 1), 0.5, 0.05],
    ['lrr on a ramp', robustLinearForecast(ramp, 10, 1), 1.1, 1e-6],
    ['ewma alpha 1 = last', ewma([0.1, 0.9], 1), 0.9, 1e-12],
    ['ewma alpha .5', ewma([0, 1], 0.5), 0.5, 1e-12],
    ['holt on a ramp', holtForecast(ramp, 0.8, 0.8, 1), 1.1, 0.02],
    ['ar on a constant', arForecast([0.4, 0.4, 0.4, 0.4, 0.4, 0.4, 0.4, 0.4], 2, 8, 3), 0.4, 1e-6],
    ['ar on an alternating series', arForecast([0.2, 0.8, 0.2, 0.8, 0.2, 0.8, 0.2, 0.8, 0.2, 0.8, 0.2, 0.8], 1, 12, 1), 0.2, 0.05],
    ['dispatcher last', forecast([0.3, 0.6], 2, { kind: 'last' }), 0.6, 0]
  ]
  for (const [name, got, want, eps] of cases) t.ok(close(got, want, eps), `${name}: ${got.toFixed(4)} ~ ${want}`)
  t.equal(horizonSteps(27.84, 300), 1, 'a 28 s migration is one 300 s step ahead')
  t.equal(horizonSteps(301, 300), 2)
  t.equal(horizonSteps(0, 300), 1, 'never less than one step')
  t.end()
})

t.test('overload detectors', t => {
  const flat = (u: number, n: number): number[] => new Array(n).fill(u)
  const noisy = [0.2, 0.6, 0.3, 0.7, 0.2, 0.65, 0.25, 0.6, 0.3, 0.7, 0.2, 0.6]
  type Row = [string, OverloadParams, number, number[], boolean]
  const rows: Row[] = [
    ['thr below', { kind: 'thr', threshold: 0.8 }, 0.8, [], false],
    ['thr above', { kind: 'thr', threshold: 0.8 }, 0.81, [], true],
    ['kOfN spike alone', { kind: 'kOfN', threshold: 0.8, k: 2, n: 3, forecast: { kind: 'last' } }, 0.95, [0.5, 0.5, 0.95], false],
    ['kOfN sustained', { kind: 'kOfN', threshold: 0.8, k: 2, n: 3, forecast: { kind: 'last' } }, 0.9, [0.5, 0.85, 0.9], true],
    ['kOfN sustained but falling forecast', { kind: 'kOfN', threshold: 0.8, k: 2, n: 3, forecast: { kind: 'lr', window: 3 } }, 0.81, [0.99, 0.9, 0.81], false],
    ['iqr short history falls back to 0.7', { kind: 'iqr', safety: 1.5 }, 0.75, flat(0.5, 5), true],
    ['iqr flat history: threshold 1', { kind: 'iqr', safety: 1.5 }, 0.95, flat(0.5, 12), false],
    ['iqr noisy history: lower threshold', { kind: 'iqr', safety: 1.5 }, 0.5, noisy, true],
    ['mad flat: threshold 1', { kind: 'mad', safety: 2.5 }, 0.99, flat(0.5, 12), false],
    ['mad noisy: threshold 1 - 2.5 x 0.2 = 0.5', { kind: 'mad', safety: 2.5 }, 0.55, noisy, true],
    ['mad noisy: under 0.5', { kind: 'mad', safety: 2.5 }, 0.45, noisy, false],
    ['lr rising past 1/s', { kind: 'lr', safety: 1.2 }, 0.8, [0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8], true],
    ['lr flat at .8 < 1/1.2', { kind: 'lr', safety: 1.2 }, 0.8, flat(0.8, 10), false],
    ['lr flat at .84 >= 1/1.2', { kind: 'lr', safety: 1.2 }, 0.84, flat(0.84, 10), true],
    ['lr short history falls back', { kind: 'lr', safety: 1.2 }, 0.71, flat(0.71, 9), true],
    ['lrr outlier does not trigger', { kind: 'lrr', safety: 1.2 }, 0.5, [0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.99], false]
  ]
  for (const [name, p, util, history, want] of rows) {
    t.equal(detectOverload({ util, history, horizonSteps: 1 }, p).overloaded, want, name)
  }
  t.end()
})

t.test('underload', t => {
  t.equal(isUnderloaded(0.1, [], { kind: 'threshold', threshold: 0.3 }), true)
  t.equal(isUnderloaded(0, [], { kind: 'threshold', threshold: 0.3 }), false, 'an empty host is asleep, not underloaded')
  t.equal(isUnderloaded(0.35, [], { kind: 'threshold', threshold: 0.3 }), false)
  t.equal(isUnderloaded(0.2, [0.1, 0.2, 0.3, 0.4], { kind: 'threshold', threshold: 0.3, forecast: { kind: 'lr', window: 4 } }), false, 'a rising forecast vetoes')
  t.equal(isUnderloaded(0.2, [], { kind: 'none' }), false)
  t.end()
})
