/**
 * Overload detection: is a host's CPU load too high, now or by the time a migration would end?
 *
 * - thr: static threshold on current utilisation.
 * - kOfN: "k of the last n samples over the threshold AND the forecast over it" (Sandpiper,
 *   Golondrina): ignores single spikes, acts on sustained or growing load.
 * - iqr / mad: Beloglazov's adaptive thresholds 1 - s * IQR(history) and 1 - s * MAD(history).
 * - lr / lrr: Beloglazov's local regression: s * forecast(now + migration time) >= 1.
 *
 * All adaptive detectors fall back to a static threshold when the history is too short.
 */
import { iqr, mad } from './stats.js'
import { forecast, type ForecastParams, linearForecast, robustLinearForecast } from './forecast.js'

export type OverloadParams =
  | { kind: 'thr', threshold: number }
  | { kind: 'kOfN', threshold: number, k: number, n: number, forecast: ForecastParams }
  | { kind: 'iqr', safety: number, minSamples?: number, fallback?: number, quartiles?: 'index' | 'interpolated' }
  | { kind: 'mad', safety: number, minSamples?: number, fallback?: number }
  | { kind: 'lr', safety: number, window?: number, fallback?: number }
  | { kind: 'lrr', safety: number, window?: number, fallback?: number }

/** What a detector looks at for one host. */
export interface HostLoadSample {
  /** Current utilisation (demand / capacity). */
  util: number
  /** Utilisation history, oldest first (the current sample last, if it has been recorded). */
  history: readonly number[]
  /** Steps ahead that a migration started now would take to finish (>= 1). */
  horizonSteps: number
}

export interface OverloadVerdict {
  overloaded: boolean
  /** The threshold that applied (static, adaptive, or 1 / safety for lr). */
  threshold: number
  /** The value compared with it (current utilisation or s * forecast). */
  value: number
  /** True when an adaptive detector fell back to its static threshold. */
  fellBack: boolean
}

/** Default fallback threshold for the adaptive detectors when history is short (CloudSim: 0.7). */
export const FALLBACK_THRESHOLD = 0.7

export function detectOverload (s: HostLoadSample, p: OverloadParams): OverloadVerdict {
  switch (p.kind) {
    case 'thr':
      return { overloaded: s.util > p.threshold, threshold: p.threshold, value: s.util, fellBack: false }
    case 'kOfN': {
      const last = s.history.slice(-p.n)
      let over = 0
      for (const u of last) if (u > p.threshold) over++
      const f = forecast(s.history, s.horizonSteps, p.forecast)
      return { overloaded: over >= p.k && f > p.threshold, threshold: p.threshold, value: f, fellBack: false }
    }
    case 'iqr':
    case 'mad': {
      const min = p.minSamples ?? 12
      if (s.history.length < min) return fallback(s, p.fallback)
      const spread = p.kind === 'iqr' ? iqr(s.history, p.quartiles ?? 'index') : mad(s.history)
      const thr = 1 - p.safety * spread
      return { overloaded: s.util > thr, threshold: thr, value: s.util, fellBack: false }
    }
    case 'lr':
    case 'lrr': {
      const w = p.window ?? 10
      if (s.history.length < w) return fallback(s, p.fallback)
      const f = p.kind === 'lr'
        ? linearForecast(s.history, w, s.horizonSteps)
        : robustLinearForecast(s.history, w, s.horizonSteps)
      const v = p.safety * f
      return { overloaded: v >= 1, threshold: 1, value: v, fellBack: false }
    }
  }
}

function fallback (s: HostLoadSample, thr = FALLBACK_THRESHOLD): OverloadVerdict {
  return { overloaded: s.util > thr, threshold: thr, value: s.util, fellBack: true }
}

/** The utilisation level a detector would accept after a move (used to keep targets healthy). */
export function isOverloadedAfter (s: HostLoadSample, addUtil: number, p: OverloadParams): boolean {
  const util = s.util + addUtil
  const hist = s.history.length > 0 ? s.history.map(h => h + addUtil) : []
  return detectOverload({ util, history: hist, horizonSteps: s.horizonSteps }, p).overloaded
}
