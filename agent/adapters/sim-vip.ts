/**
 * The VIP port for hosts whose VMs are simulated (the sim driver: the demo and local clusters).
 * A simulated VM has no network, so there is no interface to put its address on and nobody to
 * send ARP to; the ownership protocol (agent/core/vip) still runs for real between the agents.
 * This adapter keeps the addresses this host "carries" in a file of its state directory (so that
 * an agent killed with kill -9 leaves them behind, as on a real interface, and the start-up
 * removes them before any claim) and logs each gratuitous ARP burst it would have sent.
 *
 * Production hosts use agent/adapters/arp-vip.ts (iproute2 and arping); the composition root
 * picks this one only with `driver.simulatedVips: true` (driver kind "sim", as the demo sets it).
 */
import { existsSync, readFileSync, renameSync, writeFileSync } from 'node:fs'
import type { Logger } from '../ports/logger.js'
import { VipError, type AnnounceOptions, type AnnounceResult, type VipAdapter, type VipAddress, type VipCallOptions } from '../ports/vip-adapter.js'

export interface SimVipInit {
  /** JSON file holding the addresses this host carries (created on the first add). */
  stateFile: string
}

export interface SimVipComponents { logger: Logger }

const key = (v: VipAddress): string => `${v.address}/${v.prefixLength}@${v.iface}`

export class SimVip implements VipAdapter {
  private readonly log: Logger
  private readonly held: Set<string>

  constructor (private readonly init: SimVipInit, components: SimVipComponents) {
    this.log = components.logger.forComponent('agent:vip')
    this.held = new Set(this.read())
  }

  async add (vip: VipAddress, options: VipCallOptions = {}): Promise<void> {
    this.checkAborted(options, 'add', vip)
    if (this.held.has(key(vip))) return
    this.held.add(key(vip))
    this.write()
    this.log.info(`vip: ${vip.address}/${vip.prefixLength} added to ${vip.iface} (simulated interface)`)
  }

  async remove (vip: VipAddress, options: VipCallOptions = {}): Promise<void> {
    this.checkAborted(options, 'remove', vip)
    if (!this.held.delete(key(vip))) return
    this.write()
    this.log.info(`vip: ${vip.address}/${vip.prefixLength} removed from ${vip.iface} (simulated interface)`)
  }

  async hasAddress (vip: VipAddress, options: VipCallOptions = {}): Promise<boolean> {
    this.checkAborted(options, 'hasAddress', vip)
    return this.held.has(key(vip))
  }

  async announce (vip: VipAddress, options: AnnounceOptions): Promise<AnnounceResult> {
    this.checkAborted(options, 'announce', vip)
    if (!this.held.has(key(vip))) throw new VipError('VIP_ADDRESS_NOT_HERE', `cannot announce ${vip.address}: not on ${vip.iface}`)
    const t0 = Date.now()
    options.onFirstSent?.()
    this.log.info(`vip: gratuitous ARP for ${vip.address} on ${vip.iface}, ${options.count} packet(s) (simulated network)`)
    return { sent: options.count, elapsedMs: Date.now() - t0 }
  }

  private checkAborted (options: VipCallOptions, what: string, vip: VipAddress): void {
    if (options.signal?.aborted === true) throw new VipError('VIP_ABORTED', `${what} of ${vip.address} aborted`)
  }

  private read (): string[] {
    if (!existsSync(this.init.stateFile)) return []
    try {
      const v = JSON.parse(readFileSync(this.init.stateFile, 'utf8')) as unknown
      return Array.isArray(v) ? v.filter((x): x is string => typeof x === 'string') : []
    } catch (err) {
      this.log.warn(`vip: ignoring unreadable ${this.init.stateFile}: ${(err as Error).message}`)
      return []
    }
  }

  private write (): void {
    const tmp = `${this.init.stateFile}.tmp`
    writeFileSync(tmp, JSON.stringify([...this.held].sort()))
    renameSync(tmp, this.init.stateFile)
  }
}

export function simVip (init: SimVipInit): (components: SimVipComponents) => SimVip {
  return components => new SimVip(init, components)
}
