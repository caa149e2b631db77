/**
 * Synthetic host samples for the simulator: each host gets a seeded profile (base CPU, a slow
 * daily-like wave, noise, a handful of VMs) so reports carry realistic sizes and moving values.
 */
import { Prng, type HostCapacity, type HostSample, type VmSummary } from '../core/index.js'

export class SyntheticLoad {
  private readonly prng: Prng
  private readonly base: number
  private readonly amp: number
  private readonly periodTicks: number
  private readonly phase: number
  private readonly capacity: HostCapacity
  private readonly vms: Array<Omit<VmSummary, 'cpuUtil' | 'memUsedMiB'> & { share: number }>

  constructor (seed: number, vmCount: number) {
    const p = this.prng = new Prng(seed)
    this.base = 0.15 + 0.5 * p.next()
    this.amp = 0.1 * p.next()
    this.periodTicks = 3000 + p.int(3000)
    this.phase = p.next() * 2 * Math.PI
    this.capacity = { cpuCores: 32, cpuMipsPerCore: 1000, memMiB: 262144, netMbps: 10000 }
    this.vms = []
    for (let i = 0; i < vmCount; i++) {
      this.vms.push({ id: `vm-${seed.toString(16)}-${i}`, vcpus: 2 + 2 * p.int(4), memMiB: 4096 * (1 + p.int(8)), state: 'running', share: 0.5 + p.next() })
    }
  }

  sample (tick: number): HostSample {
    const p = this.prng
    const wave = this.amp * Math.sin(this.phase + (2 * Math.PI * tick) / this.periodTicks)
    const cpu = Math.min(1, Math.max(0, this.base + wave + 0.02 * (p.next() - 0.5)))
    let shares = 0
    for (const v of this.vms) shares += v.share
    const vms: VmSummary[] = this.vms.map(v => ({
      id: v.id, vcpus: v.vcpus, memMiB: v.memMiB, state: v.state,
      cpuUtil: shares > 0 ? cpu * v.share / shares : 0,
      memUsedMiB: Math.round(v.memMiB * 0.6)
    }))
    let mem = 8192
    for (const v of vms) mem += v.memUsedMiB
    return { cpuUtil: cpu, memUsedMiB: mem, netMbps: 100 + 1000 * cpu, capacity: this.capacity, vms }
  }
}
