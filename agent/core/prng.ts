/**
 * Seeded PRNG (mulberry32-style 32-bit mixing, written from the published description).
 * The only source of randomness in the core and in the simulator.
 */
export class Prng {
  private state: number
  constructor (seed: number) {
    this.state = (seed >>> 0) ^ 0x9e3779b9
    if (this.state === 0) this.state = 0x6d2b79f5
  }

  /** Uniform 32-bit unsigned integer. */
  nextU32 (): number {
    this.state = (this.state + 0x6d2b79f5) >>> 0
    let t = this.state
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return (t ^ (t >>> 14)) >>> 0
  }

  /** Uniform in [0, 1). */
  next (): number { return this.nextU32() / 4294967296 }

  /** Uniform integer in [0, n). */
  int (n: number): number { return Math.floor(this.next() * n) }

  /** True with probability p. */
  chance (p: number): boolean { return this.next() < p }

  /** Fisher-Yates shuffle in place. */
  shuffle<T> (a: T[]): T[] {
    for (let i = a.length - 1; i > 0; i--) {
      const j = this.int(i + 1)
      const x = a[i] as T; a[i] = a[j] as T; a[j] = x
    }
    return a
  }

  /** Derive an independent stream (for one host of a simulation, say). */
  fork (salt: number): Prng { return new Prng((this.nextU32() ^ Math.imul(salt + 1, 0x85ebca6b)) >>> 0) }
}

/** A seeded Prng as a function of its seed: the random source the policies take as an argument. */
export function seededPrng (seed: number): Prng { return new Prng(seed) }
