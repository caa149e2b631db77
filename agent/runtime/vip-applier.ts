/**
 * Carries out the core's VIP address effects (Ready.vip) on the VIP port and reports each back as
 * a vipApplied input:
 *  - add-and-announce: add the address, start the burst; report the add once the first gratuitous
 *    ARP is on its way (onFirstSent), so that the old owner of a make-before-break move removes
 *    the address only after clients were told; the rest of the burst goes on;
 *  - announce: report at the end of the burst (failures are counted by the core);
 *  - remove: report when done.
 * Effects of one VIP run one at a time, in the order the core issued them (an add overtaken by a
 * later remove would leave an address the core believes gone); different VIPs run in parallel.
 * A remove (or a newer burst) cuts short a burst still running for the same VIP: removing must
 * not wait a second for announcements of an address that is about to go.
 */
import type { VipAddressEffect, VipCoreInput } from '../core/index.js'
import type { Logger } from '../ports/logger.js'
import { VipError, type VipAdapter, type VipAddress } from '../ports/vip-adapter.js'

export interface VipEffectSink {
  /** Queues effects; `report` receives each vipApplied (the runtime's enqueue). Never throws. */
  apply: (effects: readonly VipAddressEffect[], report: (input: VipCoreInput) => void) => void
  /** Resolves once every queued effect has been carried out (bursts cut short). */
  idle: () => Promise<void>
}

interface Lane {
  chain: Promise<void>
  /** Aborts the burst in progress, if any. */
  burst: AbortController | null
}

function codeOf (err: unknown): string {
  return err instanceof VipError ? err.code : 'VIP_COMMAND_FAILED'
}

export class VipApplier implements VipEffectSink {
  private readonly lanes = new Map<string, Lane>()
  private readonly log: Logger
  private stopped = false

  constructor (private readonly adapter: VipAdapter, logger: Logger) {
    this.log = logger.forComponent('agent:vip')
  }

  apply (effects: readonly VipAddressEffect[], report: (input: VipCoreInput) => void): void {
    for (const e of effects) {
      let lane = this.lanes.get(e.vip)
      if (lane === undefined) { lane = { chain: Promise.resolve(), burst: null }; this.lanes.set(e.vip, lane) }
      const l = lane
      if (l.burst !== null) l.burst.abort() // a later effect supersedes the burst in progress
      l.chain = l.chain.then(async () => { await this.run(e, l, report) })
    }
  }

  async idle (): Promise<void> {
    for (const l of this.lanes.values()) l.burst?.abort()
    await Promise.all([...this.lanes.values()].map(async l => await l.chain))
  }

  /** Stops bursts and waits for the lanes; later effects are still carried out (a removal must be). */
  async close (): Promise<void> {
    this.stopped = true
    await this.idle()
  }

  private async run (e: VipAddressEffect, lane: Lane, report: (input: VipCoreInput) => void): Promise<void> {
    const addr: VipAddress = { address: e.address, prefixLength: e.prefixLength, iface: e.iface }
    const where = `${e.address}/${e.prefixLength} on ${e.iface}`
    switch (e.type) {
      case 'remove': {
        try {
          await this.adapter.remove(addr)
          this.log.info(`vip ${e.vip}: removed ${where} (${e.reason})`)
          report({ type: 'vipApplied', vip: e.vip, op: 'remove', ok: true })
        } catch (err) {
          this.log.warn(`vip ${e.vip}: remove ${where} failed`, { err })
          report({ type: 'vipApplied', vip: e.vip, op: 'remove', ok: false, code: codeOf(err) })
        }
        return
      }
      case 'add-and-announce': {
        try {
          await this.adapter.add(addr)
        } catch (err) {
          this.log.warn(`vip ${e.vip}: add ${where} failed`, { err })
          report({ type: 'vipApplied', vip: e.vip, op: 'add', ok: false, code: codeOf(err) })
          return
        }
        this.log.info(`vip ${e.vip}: added ${where}; announcing`)
        let told = false
        const tell = (): void => { if (!told) { told = true; report({ type: 'vipApplied', vip: e.vip, op: 'add', ok: true }) } }
        await this.burst(e, addr, lane, report, tell)
        tell() // the address is there even when the burst failed before its first packet
        return
      }
      case 'announce':
        if (await this.burst(e, addr, lane, report, () => {})) report({ type: 'vipApplied', vip: e.vip, op: 'announce', ok: true })
    }
  }

  /** One burst; an abort by a later effect is not a failure. Reports a real failure as announce ok: false. */
  private async burst (e: VipAddressEffect & { burst: { count: number, intervalMs: number } }, addr: VipAddress, lane: Lane,
    report: (input: VipCoreInput) => void, onFirstSent: () => void): Promise<boolean> {
    if (this.stopped) return true
    const ac = new AbortController()
    lane.burst = ac
    try {
      await this.adapter.announce(addr, { count: e.burst.count, intervalMs: e.burst.intervalMs, signal: ac.signal, onFirstSent })
      return true
    } catch (err) {
      if (!(err instanceof VipError && err.code === 'VIP_ABORTED' && ac.signal.aborted)) {
        this.log.warn(`vip ${e.vip}: announcement failed`, { err })
        report({ type: 'vipApplied', vip: e.vip, op: 'announce', ok: false, code: codeOf(err) })
        return false
      }
      return true
    } finally {
      if (lane.burst === ac) lane.burst = null
    }
  }
}
