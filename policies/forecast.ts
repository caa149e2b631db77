/**
 * Forecasting policies: predict a host's (or VM's) CPU utilisation some steps ahead from its
 * history. Every series is oldest first. The horizon that matters for a migration decision is
 * "now + expected migration time" (OpenStack Neat's local-regression detector does the same):
 * `horizonSteps()` turns a migration time into whole sampling steps.
 */
import { ols, wls, mean, solve } from './stats.js'

export type ForecastKind = 'last' | 'ewma' | 'lr' | 'lrr' | 'ar' | 'holt'

export interface ForecastParams {
  kind: ForecastKind
  /** EWMA / Holt level smoothing, (0, 1]. Higher = reacts faster, noisier. @default 0.5 */
  alpha?: number
  /** Holt trend smoothing, (0, 1]. @default 0.3 */
  beta?: number
  /** Samples used by lr/lrr/ar, newest last. @default 10 */
  window?: number
  /** AR order p (1..4). @default 2 */
  order?: number
}

/** Whole steps that cover `migrationSec` at `intervalSec` per step (at least 1). */
export function horizonSteps (migrationSec: number, intervalSec: number): number {
  if (!(intervalSec > 0)) return 1
  return Math.max(1, Math.ceil(migrationSec / intervalSec))
}

/** Exponentially weighted moving average of the series (its last level). */
export function ewma (series: readonly number[], alpha: number): number {
  if (series.length === 0) return 0
  let level = series[0] as number
  for (let i = 1; i < series.length; i++) level = alpha * (series[i] as number) + (1 - alpha) * level
  return level
}

/**
 * Least-squares line over the last `window` samples (x = 1..w, oldest first), evaluated at
 * x = w + steps. With fewer than 2 samples it returns the last value.
 */
export function linearForecast (series: readonly number[], window: number, steps: number): number {
  const ys = series.slice(-window)
  if (ys.length < 2) return ys.length === 1 ? ys[0] as number : 0
  const xs = ys.map((_, i) => i + 1)
  const [a, b] = ols(xs, ys)
  return a + b * (ys.length + steps)
}

/**
 * Robust local regression (Beloglazov's LRR as the paper describes it): tricube weights favour
 * recent samples; one bisquare pass down-weights outliers by their residual.
 */
export function robustLinearForecast (series: readonly number[], window: number, steps: number): number {
  const ys = series.slice(-window)
  const n = ys.length
  if (n < 3) return linearForecast(series, window, steps)
  const xs = ys.map((_, i) => i + 1)
  const tri = tricubeWeights(n)
  let [a, b] = wls(xs, ys, tri)
  // a few bisquare passes: each down-weights points by their residual from the last fit
  for (let pass = 0; pass < 3; pass++) {
    const res = ys.map((y, i) => Math.abs(y - (a + b * (xs[i] as number))))
    const s6 = 6 * medianOf(res)
    if (s6 === 0) break
    const w = tri.map((t, i) => {
      const u = (res[i] as number) / s6
      return u >= 1 ? 0 : t * (1 - u * u) ** 2
    })
    if (!w.some(x => x > 0)) break
    ;[a, b] = wls(xs, ys, w)
  }
  return a + b * (n + steps)
}

/** Tricube weights over n points with the newest point weighted 1 and the oldest near 0. */
export function tricubeWeights (n: number): number[] {
  const span = n // distance normaliser: the oldest point gets (1 - ((n-1)/n)^3)^3 > 0
  return Array.from({ length: n }, (_, i) => {
    const d = (n - 1 - i) / span
    return (1 - d * d * d) ** 3
  })
}

function medianOf (xs: readonly number[]): number {
  const s = Float64Array.from(xs).sort()
  const n = s.length
  if (n === 0) return 0
  return n % 2 === 1 ? s[(n - 1) / 2] as number : ((s[n / 2 - 1] as number) + (s[n / 2] as number)) / 2
}

/**
 * Autoregressive AR(p) forecast, fitted by least squares on the mean-centred last `window`
 * samples and iterated `steps` ahead. Falls back to the mean when the fit is singular.
 */
export function arForecast (series: readonly number[], order: number, window: number, steps: number): number {
  const ys = series.slice(-window)
  const p = Math.max(1, Math.min(order, 4))
  if (ys.length < p + 2) return ys.length > 0 ? ys[ys.length - 1] as number : 0
  const mu = mean(ys)
  const z = ys.map(y => y - mu)
  const xtx: number[][] = Array.from({ length: p }, () => new Array<number>(p).fill(0))
  const xty = new Array<number>(p).fill(0)
  for (let t = p; t < z.length; t++) {
    for (let a = 0; a < p; a++) {
      const za = z[t - 1 - a] as number
      xty[a] = (xty[a] as number) + za * (z[t] as number)
      const row = xtx[a] as number[]
      for (let b = 0; b < p; b++) row[b] = (row[b] as number) + za * (z[t - 1 - b] as number)
    }
  }
  // small ridge keeps near-constant series well-posed
  for (let a = 0; a < p; a++) (xtx[a] as number[])[a] = ((xtx[a] as number[])[a] as number) + 1e-9
  const phi = solve(xtx, xty)
  if (phi === null) return mu
  const hist = z.slice()
  for (let s = 0; s < steps; s++) {
    let next = 0
    for (let a = 0; a < p; a++) next += (phi[a] as number) * (hist[hist.length - 1 - a] ?? 0)
    hist.push(next)
  }
  return mu + (hist[hist.length - 1] as number)
}

/** Holt's linear (double exponential) smoothing, `steps` ahead. */
export function holtForecast (series: readonly number[], alpha: number, beta: number, steps: number): number {
  if (series.length === 0) return 0
  let level = series[0] as number
  let trend = series.length > 1 ? (series[1] as number) - level : 0
  for (let i = 1; i < series.length; i++) {
    const prev = level
    level = alpha * (series[i] as number) + (1 - alpha) * (level + trend)
    trend = beta * (level - prev) + (1 - beta) * trend
  }
  return level + steps * trend
}

/** Forecast `steps` ahead with the configured model. */
export function forecast (series: readonly number[], steps: number, p: ForecastParams): number {
  const window = p.window ?? 10
  switch (p.kind) {
    case 'last': return series.length > 0 ? series[series.length - 1] as number : 0
    case 'ewma': return ewma(series, p.alpha ?? 0.5)
    case 'lr': return linearForecast(series, window, steps)
    case 'lrr': return robustLinearForecast(series, window, steps)
    case 'ar': return arForecast(series, p.order ?? 2, Math.max(window, 2 * (p.order ?? 2) + 4), steps)
    case 'holt': return holtForecast(series.slice(-window), p.alpha ?? 0.5, p.beta ?? 0.3, steps)
  }
}
