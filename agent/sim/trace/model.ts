/**
 * The data-centre model of the PlanetLab experiments (Beloglazov & Buyya 2012, as the
 * CloudSim 3.0.3 power examples run it), with every parameter exposed so that other traces
 * and other data centres can be simulated. Defaults reproduce the reference setup exactly:
 * see data/planetlab/README.md.
 */

export interface HostType {
  name: string
  /** Cores. */
  pes: number
  /** MIPS per core. */
  peMips: number
  ramMiB: number
  /** Link speed in the CloudSim unit (1,000,000 = 1 Gbit/s). */
  bw: number
  /** SPECpower: W at 0 %, 10 %, ..., 100 % utilisation. */
  powerW: number[]
}

export interface VmType {
  name: string
  mips: number
  ramMiB: number
  bw: number
}

export interface SimModel {
  /** Number of hosts; host i has type i mod hostTypes.length. @default 800 */
  hosts: number
  hostTypes: HostType[]
  /** VM i of N gets type floor(i / ceil(N / vmTypes.length)) (contiguous blocks). */
  vmTypes: VmType[]
  /** Seconds between trace samples and between decisions. @default 300 */
  intervalSec: number
  /** Simulated seconds. @default 86400 */
  limitSec: number
  /** Offset of the first event (CloudSim fires at 0.1 s, 300.1 s, ...). @default 0.1 */
  phaseSec: number
  /** Share of the link a migration uses: time = RAM / (bw x share / 8000). @default 0.5 */
  migrationLinkShare: number
  /** Share of a migrating VM's demand that it gets on the source (the CPU scheduler applies it). @default 0.9 */
  migrationSourceShare: number
  /** Share of a migrating VM's demand reserved on the target while copying. @default 0.1 */
  migrationTargetShare: number
  /** VM utilisation samples kept per VM for the detectors. @default 30 */
  historyLength: number
  /**
   * CloudSim removes a VM for good when its requested MIPS is exactly 0 at an update (it
   * treats it as finished). Kept on by default for fidelity. @default true
   */
  dropIdleVms: boolean
}

export const G4: HostType = {
  name: 'HP ProLiant ML110 G4 (Xeon 3040)', pes: 2, peMips: 1860, ramMiB: 4096, bw: 1_000_000,
  powerW: [86, 89.4, 92.6, 96, 99.5, 102, 106, 108, 112, 114, 117]
}
export const G5: HostType = {
  name: 'HP ProLiant ML110 G5 (Xeon 3075)', pes: 2, peMips: 2660, ramMiB: 4096, bw: 1_000_000,
  powerW: [93.7, 97, 101, 105, 110, 116, 121, 125, 129, 133, 135]
}

export function defaultModel (): SimModel {
  return {
    hosts: 800,
    hostTypes: [G4, G5],
    vmTypes: [
      { name: 'High-CPU Medium', mips: 2500, ramMiB: 870, bw: 100_000 },
      { name: 'Extra Large', mips: 2000, ramMiB: 1740, bw: 100_000 },
      { name: 'Small', mips: 1000, ramMiB: 1740, bw: 100_000 },
      { name: 'Micro', mips: 500, ramMiB: 613, bw: 100_000 }
    ],
    intervalSec: 300,
    limitSec: 86_400,
    phaseSec: 0.1,
    migrationLinkShare: 0.5,
    migrationSourceShare: 0.9,
    migrationTargetShare: 0.1,
    historyLength: 30,
    dropIdleVms: true
  }
}

/** Migration time in seconds: RAM (MB) / (bw x share / 8000); 870 MB -> 13.92 s at 1 Gbit/s and half the link. */
export function migrationTimeSec (ramMiB: number, bw: number, share: number): number {
  return ramMiB / (bw / (8000 / share))
}

/**
 * Power at utilisation u from an 11-point SPECpower curve, computed the way CloudSim's
 * PowerModelSpecPower does (exact table value on a 10 % point, else linear between the two).
 */
export function specPower (curve: readonly number[], u: number): number {
  if (u % 0.1 === 0) return curve[Math.trunc(u * 10)] as number
  const u1 = Math.floor(u * 10)
  const u2 = Math.ceil(u * 10)
  const p1 = curve[u1] as number
  const p2 = curve[u2] as number
  const delta = (p2 - p1) / 10
  return p1 + delta * (u - u1 / 10) * 100
}
