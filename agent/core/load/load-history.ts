/**
 * Bounded load history and a simple forecast: host samples are averaged per report interval;
 * the interval means (at most loadHistoryMax) feed Holt's linear method (EWMA level + EWMA trend),
 * which extrapolates h intervals ahead, clamped to [0, 1]. Richer forecasters live in policies/.
 */
import type { HostSample } from '../types.js'

/** Holt's linear forecast of `horizon` steps from a series (oldest first). */
export function holtForecast (series: readonly number[], alpha: number, beta: number, horizon: number): number[] {
  const out: number[] = []
  if (series.length === 0) return out
  let level = series[0]!
  let trend = 0
  for (let i = 1; i < series.length; i++) {
    const x = series[i]!
    const prev = level
    level = alpha * x + (1 - alpha) * (level + trend)
    trend = beta * (level - prev) + (1 - beta) * trend
  }
  for (let h = 1; h <= horizon; h++) out.push(clamp01(level + h * trend))
  return out
}

function clamp01 (x: number): number { return x < 0 ? 0 : x > 1 ? 1 : x }

export class LoadHistory {
  private readonly means: number[] = []
  private sum = 0
  private count = 0
  latest: HostSample | null = null

  constructor (private readonly max: number) {}

  add (sample: HostSample): void {
    this.latest = sample
    this.sum += clamp01(sample.cpuUtil)
    this.count++
  }

  /** Close the current interval: its mean CPU joins the bounded history. */
  closeInterval (): void {
    if (this.count === 0) {
      if (this.latest === null) return
      this.means.push(clamp01(this.latest.cpuUtil))
    } else {
      this.means.push(this.sum / this.count)
    }
    if (this.means.length > this.max) this.means.shift()
    this.sum = 0
    this.count = 0
  }

  get intervalMeans (): readonly number[] { return this.means }
}
