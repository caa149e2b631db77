/**
 * Small numeric helpers shared by the forecasting and detection policies.
 * Pure: no clock, no IO, no randomness. Arrays are never mutated.
 */

export function mean (xs: readonly number[]): number {
  if (xs.length === 0) return 0
  let s = 0
  for (const x of xs) s += x
  return s / xs.length
}

/** Sorted copy, ascending. */
export function sorted (xs: readonly number[]): number[] {
  return Float64Array.from(xs).sort() as unknown as number[]
}

/**
 * Percentile with the "(n+1)p" position rule and linear interpolation between
 * neighbours (the default estimator of Apache commons-math, which CloudSim's
 * median uses). p in (0, 100].
 */
export function percentile (xs: readonly number[], p: number): number {
  const n = xs.length
  if (n === 0) return NaN
  const s = Float64Array.from(xs).sort()
  if (n === 1) return s[0] as number
  const pos = p * (n + 1) / 100
  if (pos < 1) return s[0] as number
  if (pos >= n) return s[n - 1] as number
  const lo = Math.floor(pos)
  const d = pos - lo
  const lower = s[lo - 1] as number
  const upper = s[lo] as number
  return lower + d * (upper - lower)
}

export function median (xs: readonly number[]): number { return percentile(xs, 50) }

/** Median absolute deviation from the median. 0 for an empty series. */
export function mad (xs: readonly number[]): number {
  if (xs.length === 0) return 0
  const m = median(xs)
  return median(xs.map(x => Math.abs(m - x)))
}

/**
 * Interquartile range.
 * - 'index': quartiles are the sorted elements at round(0.25 (n+1)) - 1 and
 *   round(0.75 (n+1)) - 1 (what CloudSim 3.0.3 does; Java's round is floor(x + 0.5)).
 * - 'interpolated': the (n+1)p percentile with interpolation.
 */
export function iqr (xs: readonly number[], method: 'index' | 'interpolated' = 'index'): number {
  const n = xs.length
  if (n === 0) return 0
  if (method === 'interpolated') return percentile(xs, 75) - percentile(xs, 25)
  const s = Float64Array.from(xs).sort()
  const q1 = Math.max(0, Math.floor(0.25 * (n + 1) + 0.5) - 1)
  const q3 = Math.min(n - 1, Math.floor(0.75 * (n + 1) + 0.5) - 1)
  return (s[q3] as number) - (s[q1] as number)
}

/** Ordinary least squares y = a + b x. Returns [a, b]; b = 0 when x has no spread. */
export function ols (xs: readonly number[], ys: readonly number[]): [number, number] {
  return wls(xs, ys, null)
}

/** Weighted least squares y = a + b x (weights >= 0; null = all 1). */
export function wls (xs: readonly number[], ys: readonly number[], ws: readonly number[] | null): [number, number] {
  const n = Math.min(xs.length, ys.length)
  let sw = 0; let sx = 0; let sy = 0
  for (let i = 0; i < n; i++) {
    const w = ws === null ? 1 : (ws[i] ?? 0)
    sw += w; sx += w * (xs[i] as number); sy += w * (ys[i] as number)
  }
  if (sw === 0) return [0, 0]
  const mx = sx / sw; const my = sy / sw
  let sxx = 0; let sxy = 0
  for (let i = 0; i < n; i++) {
    const w = ws === null ? 1 : (ws[i] ?? 0)
    const dx = (xs[i] as number) - mx
    sxx += w * dx * dx
    sxy += w * dx * ((ys[i] as number) - my)
  }
  const b = sxx === 0 ? 0 : sxy / sxx
  return [my - b * mx, b]
}

/** Coefficient of determination of y regressed on the columns of X (with intercept). 0 if singular. */
export function rSquared (y: readonly number[], cols: ReadonlyArray<readonly number[]>): number {
  const n = y.length
  const p = cols.length + 1
  if (n <= p) return 0
  // normal equations (X'X) b = X'y with X = [1, cols...]
  const xtx: number[][] = Array.from({ length: p }, () => new Array<number>(p).fill(0))
  const xty = new Array<number>(p).fill(0)
  const row = new Array<number>(p).fill(0)
  for (let i = 0; i < n; i++) {
    row[0] = 1
    for (let j = 1; j < p; j++) row[j] = (cols[j - 1] as readonly number[])[i] ?? 0
    for (let a = 0; a < p; a++) {
      const ra = row[a] as number
      xty[a] = (xty[a] as number) + ra * (y[i] as number)
      const xa = xtx[a] as number[]
      for (let b = 0; b < p; b++) xa[b] = (xa[b] as number) + ra * (row[b] as number)
    }
  }
  const beta = solve(xtx, xty)
  if (beta === null) return 0
  const my = mean(y)
  let ssTot = 0; let ssRes = 0
  for (let i = 0; i < n; i++) {
    let pred = beta[0] as number
    for (let j = 1; j < p; j++) pred += (beta[j] as number) * ((cols[j - 1] as readonly number[])[i] ?? 0)
    const yi = y[i] as number
    ssRes += (yi - pred) ** 2
    ssTot += (yi - my) ** 2
  }
  return ssTot === 0 ? 0 : 1 - ssRes / ssTot
}

/** Gaussian elimination with partial pivoting; null when singular. Does not mutate its inputs. */
export function solve (a0: readonly (readonly number[])[], b0: readonly number[]): number[] | null {
  const n = b0.length
  const a = a0.map(r => r.slice())
  const b = b0.slice()
  for (let c = 0; c < n; c++) {
    let piv = c
    for (let r = c + 1; r < n; r++) if (Math.abs((a[r] as number[])[c] as number) > Math.abs((a[piv] as number[])[c] as number)) piv = r
    const pr = a[piv] as number[]
    if (Math.abs(pr[c] as number) < 1e-12) return null
    if (piv !== c) { a[piv] = a[c] as number[]; a[c] = pr; const t = b[piv] as number; b[piv] = b[c] as number; b[c] = t }
    const rc = a[c] as number[]
    for (let r = c + 1; r < n; r++) {
      const rr = a[r] as number[]
      const f = (rr[c] as number) / (rc[c] as number)
      if (f === 0) continue
      for (let k = c; k < n; k++) rr[k] = (rr[k] as number) - f * (rc[k] as number)
      b[r] = (b[r] as number) - f * (b[c] as number)
    }
  }
  const x = new Array<number>(n).fill(0)
  for (let r = n - 1; r >= 0; r--) {
    const rr = a[r] as number[]
    let s = b[r] as number
    for (let k = r + 1; k < n; k++) s -= (rr[k] as number) * (x[k] as number)
    x[r] = s / (rr[r] as number)
  }
  return x
}

/** Pearson correlation; 0 when either series is constant. */
export function correlation (a: readonly number[], b: readonly number[]): number {
  const n = Math.min(a.length, b.length)
  if (n < 2) return 0
  const ma = mean(a.slice(0, n)); const mb = mean(b.slice(0, n))
  let sab = 0; let saa = 0; let sbb = 0
  for (let i = 0; i < n; i++) {
    const da = (a[i] as number) - ma; const db = (b[i] as number) - mb
    sab += da * db; saa += da * da; sbb += db * db
  }
  return saa === 0 || sbb === 0 ? 0 : sab / Math.sqrt(saa * sbb)
}
