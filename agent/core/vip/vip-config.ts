/**
 * Virtual-IP definitions and the tunables of VIP ownership (STYLE §1.5): every interval is in
 * ticks, the only notion of time in the core; defaultVipConfig() converts the documented wall
 * times with the agent's tickMs.
 */
import { ConfigError } from '../config.js'
import type { HostId, VmId } from '../types.js'
import type { VipId } from './vip-messages.js'

/** What a VIP follows. */
export type VipBinding =
  /** The VIP follows a VM: it is held by the host that runs the VM (after a migration or an HA restart too). */
  | { kind: 'vm', vm: VmId }
  /**
   * A floating VIP held by one host of a group, as with keepalived. `hosts` is in order of
   * preference: a free VIP is claimed by the first host of the list that is up. No preemption:
   * a preferred host that comes back does not take the VIP from a healthy owner (no thrashing, L2).
   */
  | { kind: 'group', hosts: HostId[] }

/** One virtual IP of the cluster configuration. */
export interface VipSpec {
  id: VipId
  /** IPv4 address with its prefix length, "192.0.2.10/24". */
  address: string
  /** Interface the owner adds the address to, e.g. "br0" or "eth0". Same name on every host. */
  iface: string
  binding: VipBinding
}

/** How a planned move (migration, operator move) hands the address over. */
export type PlannedMoveMode =
  /** The new owner adds and announces, then the old one removes (no gap; a bounded overlap). */
  | 'make-before-break'
  /** The old owner removes and only then releases; the new owner adds after (a gap of tens of ms). */
  | 'break-before-make'

export interface VipConfig {
  /**
   * Ticks between resending a claim request to members that have not granted it yet, and a
   * release that the successor has not answered yet. Lower = faster recovery from a lost frame,
   * more frames. @default 200 ms
   */
  claimRetryTicks: number
  /**
   * Ticks a claim may wait for a majority of grants before it is given up (released) and retried
   * after a backoff. Lower = faster retry after a lost race, more churn. @default 2 s
   */
  claimTimeoutTicks: number
  /**
   * Base backoff after giving up a claim or failing to add the address; the actual wait is
   * base + a seeded random 0..base, so two losers do not collide again. @default 500 ms
   */
  claimBackoffTicks: number
  /**
   * Ticks a member waits after it has declared a VIP's owner dead before it grants a takeover
   * claim (or makes one). Safety does not rest on it: the old owner's lease does (leaseTicks;
   * the new owner waits until that lease must have run out). Raise it to ride out spurious
   * death declarations. Adds to failover time.
   * @default 0
   */
  takeoverGraceTicks: number
  /**
   * Make-before-break: the longest the old owner keeps the address after releasing it, when the
   * successor's 'held' claim does not arrive. Must be below secondBurstTicks, so that the new
   * owner's second burst always follows the old owner's removal. @default 2 s
   */
  handoffTimeoutTicks: number
  /**
   * After a release that names a successor, other hosts of a group stay away from the VIP for
   * this long, so the named host gets it. @default 2 s
   */
  handoffReserveTicks: number
  /**
   * Ticks from taking over to the second announcement burst (keepalived garp_master_delay, 5 s).
   * The second burst corrects any neighbour that learnt an old MAC in the meantime (an ARP reply
   * from the old owner during a make-before-break overlap, or an update ignored within Linux's
   * 1 s locktime). @default 5 s
   */
  secondBurstTicks: number
  /** Ticks between periodic refresh bursts while owner; 0 = off (keepalived garp_master_refresh). @default 0 */
  refreshTicks: number
  /**
   * Ticks between re-sending the owner's 'held' claim to all members (anti-entropy: members that
   * missed the takeover learn the owner). @default 10 s
   */
  heldRefreshTicks: number
  /** Ticks between retries of a failed address removal (a host that may still hold the address must keep trying). @default 500 ms */
  removeRetryTicks: number
  /** Gratuitous ARPs per burst (keepalived garp_master_repeat 5; Pacemaker IPaddr2 5). @default 5 */
  burstCount: number
  /** Wall milliseconds between the ARPs of one burst; an edge parameter carried in the effect. @default 200 (IPaddr2) */
  burstIntervalMs: number
  /** @default 'make-before-break' */
  plannedMove: PlannedMoveMode
  /**
   * The owner's lease: it keeps the address only while a majority of the members (itself
   * included) has renewed its claim by echoing a renewal it sent at most this many ticks ago;
   * when it cannot renew, it removes the address. A host that takes a VIP over waits until the
   * old owner's lease must have run out (vip-ownership.ts, "Leases"); after a crash that wait is
   * usually already over when SWIM declares the death. Lower = a cut-off owner drops the address
   * sooner, renewals must arrive sooner. Must agree on every member. @default 3 s
   */
  leaseTicks: number
  /** Ticks between the owner's lease renewals ('held' to every member). < leaseTicks / 2. @default 1 s */
  renewTicks: number
  /**
   * Worst difference between two hosts' clock rates, in parts per million: the takeover wait
   * stretches the lease by 2 x this, since the lease runs on the old owner's clock and the wait
   * on the new one's. @default 1000
   */
  clockDriftPpm: number
}

function ticks (ms: number, tickMs: number): number { return Math.max(1, Math.round(ms / tickMs)) }

/** Production LAN defaults for a given tick length. */
export function defaultVipConfig (tickMs = 100): VipConfig {
  return {
    claimRetryTicks: ticks(200, tickMs),
    claimTimeoutTicks: ticks(2000, tickMs),
    claimBackoffTicks: ticks(500, tickMs),
    takeoverGraceTicks: 0,
    handoffTimeoutTicks: ticks(2000, tickMs),
    handoffReserveTicks: ticks(2000, tickMs),
    secondBurstTicks: ticks(5000, tickMs),
    refreshTicks: 0,
    heldRefreshTicks: ticks(10_000, tickMs),
    removeRetryTicks: ticks(500, tickMs),
    burstCount: 5,
    burstIntervalMs: 200,
    plannedMove: 'make-before-break',
    leaseTicks: ticks(3000, tickMs),
    renewTicks: ticks(1000, tickMs),
    clockDriftPpm: 1000
  }
}

/**
 * Ticks a new owner waits, after the last grant it counts, for the lease of an owner that a
 * grantor renewed `quiet` ticks before granting: the lease, 2 ticks of rounding (the owner's
 * removal within the tick its lease ends, and whole ticks on both clocks), stretched by the
 * worst clock-rate difference, less what already elapsed at the grantor. vip-ownership.ts,
 * "Leases", explains each term.
 */
export function leaseWaitTicks (c: Pick<VipConfig, 'leaseTicks' | 'clockDriftPpm'>, quiet: number): number {
  const bound = Math.ceil((c.leaseTicks + 2) * (1 + 2 * c.clockDriftPpm / 1e6))
  return Math.max(0, bound - Math.max(0, quiet))
}

/** Small numbers for tests (tick = one step of a test loop). */
export function localTestVipConfig (): VipConfig {
  return {
    ...defaultVipConfig(100),
    claimRetryTicks: 2,
    claimTimeoutTicks: 10,
    claimBackoffTicks: 3,
    handoffTimeoutTicks: 8,
    handoffReserveTicks: 8,
    secondBurstTicks: 20,
    heldRefreshTicks: 30,
    removeRetryTicks: 3,
    leaseTicks: 10,
    renewTicks: 2,
    clockDriftPpm: 0
  }
}

const IPV4_CIDR = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})\/(\d{1,2})$/
const IFACE = /^[A-Za-z0-9_.:-]{1,15}$/

/** Parses "a.b.c.d/len"; null when malformed. */
export function parseVipAddress (s: string): { address: string, prefixLength: number } | null {
  const m = IPV4_CIDR.exec(s)
  if (m === null) return null
  const octets = m.slice(1, 5).map(Number)
  const prefixLength = Number(m[5])
  if (octets.some(o => o > 255) || prefixLength < 1 || prefixLength > 32) return null
  return { address: octets.join('.'), prefixLength }
}

/** Checks the tunables; throws ConfigError naming the first bad field. */
export function validateVipConfig (c: VipConfig): VipConfig {
  const positive: Array<keyof VipConfig> = ['claimRetryTicks', 'claimTimeoutTicks', 'claimBackoffTicks', 'handoffTimeoutTicks',
    'handoffReserveTicks', 'secondBurstTicks', 'heldRefreshTicks', 'removeRetryTicks', 'burstCount', 'leaseTicks', 'renewTicks']
  for (const k of positive) {
    const v = c[k]
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 1) throw new ConfigError(`vip.${k} must be an integer >= 1 (got ${String(v)})`, `vip.${k}`)
  }
  for (const k of ['takeoverGraceTicks', 'refreshTicks', 'burstIntervalMs', 'clockDriftPpm'] as const) {
    if (!Number.isInteger(c[k]) || c[k] < 0) throw new ConfigError(`vip.${k} must be an integer >= 0 (got ${c[k]})`, `vip.${k}`)
  }
  if (c.burstCount > 100) throw new ConfigError(`vip.burstCount must be <= 100 (got ${c.burstCount})`, 'vip.burstCount')
  if (c.claimRetryTicks >= c.claimTimeoutTicks) throw new ConfigError('vip.claimRetryTicks must be < vip.claimTimeoutTicks', 'vip.claimRetryTicks')
  if (c.handoffTimeoutTicks >= c.secondBurstTicks) throw new ConfigError('vip.handoffTimeoutTicks must be < vip.secondBurstTicks (the second burst must follow the old owner\'s removal)', 'vip.handoffTimeoutTicks')
  if (c.renewTicks * 2 >= c.leaseTicks) throw new ConfigError('vip.renewTicks must be < vip.leaseTicks / 2 (a lost renewal must leave time for the next one)', 'vip.renewTicks')
  if (c.clockDriftPpm > 100_000) throw new ConfigError(`vip.clockDriftPpm must be <= 100000 (got ${c.clockDriftPpm})`, 'vip.clockDriftPpm')
  if (c.plannedMove !== 'make-before-break' && c.plannedMove !== 'break-before-make') throw new ConfigError(`vip.plannedMove must be 'make-before-break' or 'break-before-make' (got ${String(c.plannedMove)})`, 'vip.plannedMove')
  return c
}

/** Checks the VIP definitions against the configured members; throws ConfigError. */
export function validateVipSpecs (specs: readonly VipSpec[], members: readonly HostId[]): VipSpec[] {
  const ids = new Set<string>()
  const addrs = new Set<string>()
  return specs.map((s, i) => {
    const p = `vips[${i}]`
    if (typeof s.id !== 'string' || s.id.length === 0) throw new ConfigError(`${p}.id must be a non-empty string`, `${p}.id`)
    if (ids.has(s.id)) throw new ConfigError(`${p}.id duplicates "${s.id}"`, `${p}.id`)
    ids.add(s.id)
    const a = parseVipAddress(s.address)
    if (a === null) throw new ConfigError(`${p}.address must be IPv4 "a.b.c.d/len" (got "${s.address}")`, `${p}.address`)
    if (addrs.has(a.address)) throw new ConfigError(`${p}.address duplicates ${a.address}`, `${p}.address`)
    addrs.add(a.address)
    if (!IFACE.test(s.iface)) throw new ConfigError(`${p}.iface must be an interface name of 1-15 characters (got "${s.iface}")`, `${p}.iface`)
    if (s.binding.kind === 'group') {
      if (s.binding.hosts.length === 0) throw new ConfigError(`${p}.binding.hosts must not be empty`, `${p}.binding.hosts`)
      for (const h of s.binding.hosts) if (!members.includes(h)) throw new ConfigError(`${p}.binding.hosts names ${h}, not a cluster member`, `${p}.binding.hosts`)
    } else if (s.binding.kind === 'vm') {
      if (typeof s.binding.vm !== 'string' || s.binding.vm.length === 0) throw new ConfigError(`${p}.binding.vm must be a VM id`, `${p}.binding.vm`)
    } else {
      throw new ConfigError(`${p}.binding.kind must be 'vm' or 'group'`, `${p}.binding.kind`)
    }
    return s
  })
}
