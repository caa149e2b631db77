/**
 * Moving a virtual IP between hosts with the adapter alone, as the runtime will do once the core
 * has decided: shared by the namespace tests and bench:vip.
 */
import type { ArpVip } from '../../agent/adapters/arp-vip.js'
import type { AnnounceResult, VipAddress } from '../../agent/ports/vip-adapter.js'

export interface Burst { count: number, intervalMs: number }

/**
 * Make-before-break: add on the new owner, start its burst, and remove on the old owner once the
 * first gratuitous ARP is out (the moment the runtime reports the add done and the new owner's
 * 'held' claim makes the old one remove). Resolves when the old owner has removed; the returned
 * promise is the rest of the burst.
 */
export async function moveMakeBeforeBreak (from: ArpVip, to: ArpVip, vip: VipAddress, burst: Burst): Promise<{ burst: Promise<AnnounceResult> }> {
  await to.add(vip)
  let first!: () => void
  const firstSent = new Promise<void>(resolve => { first = resolve })
  const rest = to.announce(vip, { ...burst, onFirstSent: first })
  rest.catch(() => {})
  await firstSent
  await from.remove(vip)
  return { burst: rest }
}

/** Break-before-make: remove on the old owner, then add and announce on the new one. */
export async function moveBreakBeforeMake (from: ArpVip, to: ArpVip, vip: VipAddress, burst: Burst): Promise<{ burst: Promise<AnnounceResult> }> {
  await from.remove(vip)
  await to.add(vip)
  const rest = to.announce(vip, burst)
  rest.catch(() => {})
  return { burst: rest }
}

/** Takeover after the owner is gone: add and announce. Resolves when the address is added. */
export async function takeOver (to: ArpVip, vip: VipAddress, burst: Burst): Promise<{ burst: Promise<AnnounceResult> }> {
  await to.add(vip)
  const rest = to.announce(vip, burst)
  rest.catch(() => {})
  return { burst: rest }
}
