/**
 * The VIP port: puts a virtual IP on this host's interface, takes it off, and announces it with
 * gratuitous ARP. The core (agent/core/vip) decides; this only does, and reports.
 *
 * Contract, for every method:
 * - It may block on a child process or the kernel; it takes an AbortSignal and a deadline
 *   (`timeoutMs`, else the adapter's default) and never outlives either by more than the time
 *   it takes to kill a child process.
 * - It never throws synchronously and never rejects with anything but a VipError; branch on
 *   `code`. An aborted or timed-out call may still have taken effect in the kernel (an address
 *   added just before the deadline): the core treats a failed add as "state unknown" and removes.
 * - add and remove are idempotent: adding an address that is there, or removing one that is
 *   not, succeeds.
 * - Calls for one VIP must not overlap (the runtime applies effects one at a time, in order);
 *   calls for different VIPs may.
 */
import { StarlingError, type StarlingErrorOptions } from '../lib/errors.js'

/** A virtual IP on an interface. */
export interface VipAddress {
  /** Dotted IPv4 address. */
  address: string
  prefixLength: number
  /** Interface name, e.g. "eth0" or "br0". */
  iface: string
}

export interface VipCallOptions {
  signal?: AbortSignal
  /** Deadline for the whole call, ms. @default the adapter's timeoutMs */
  timeoutMs?: number
}

export interface AnnounceOptions extends VipCallOptions {
  /** Gratuitous ARPs to send, >= 1. */
  count: number
  /** Milliseconds between them (0 = back to back, as keepalived's default garp_interval). */
  intervalMs: number
  /**
   * Called once, as soon as the first packet of the burst is on its way (an estimate: see the
   * adapter). The runtime reports a takeover's add as done at that moment, so that the old
   * owner of a make-before-break move removes the address only after clients were told.
   */
  onFirstSent?: () => void
}

export interface AnnounceResult {
  /** Packets the tool reported sent. */
  sent: number
  /** Wall milliseconds from the call to the end of the burst. */
  elapsedMs: number
}

/** What went wrong in a VIP call. */
export type VipErrorCode =
  /** The deadline passed; a child process was killed. */
  | 'VIP_TIMEOUT'
  /** The caller's AbortSignal fired (or the adapter was stopped). */
  | 'VIP_ABORTED'
  /** The address, prefix length, interface name or burst is malformed; nothing was run. */
  | 'VIP_INVALID_ARGUMENT'
  /** No such interface. */
  | 'VIP_IFACE_NOT_FOUND'
  /** The configured network namespace does not exist (tests). */
  | 'VIP_NETNS_NOT_FOUND'
  /** Announcing an address that is not on the interface (arping cannot bind to it). */
  | 'VIP_ADDRESS_NOT_HERE'
  /** Missing CAP_NET_ADMIN (ip) or CAP_NET_RAW (arping). */
  | 'VIP_PERMISSION_DENIED'
  /** `ip` or `arping` is not installed (iproute2, iputils-arping). */
  | 'VIP_TOOL_MISSING'
  /** The tool failed for another reason; the message carries its stderr. */
  | 'VIP_COMMAND_FAILED'

export class VipError extends StarlingError {
  static override readonly name = 'VipError'
  override readonly code: VipErrorCode
  /** The command line that failed, if any (for logs). */
  readonly command: string | undefined
  constructor (code: VipErrorCode, message: string, options: StarlingErrorOptions & { command?: string } = {}) {
    super(message, options)
    this.name = 'VipError'
    this.code = code
    this.command = options.command
  }
}

export interface VipAdapter {
  /** Adds the address to the interface. Present already: success. */
  add (vip: VipAddress, options?: VipCallOptions): Promise<void>
  /** Removes the address from the interface. Absent already: success. */
  remove (vip: VipAddress, options?: VipCallOptions): Promise<void>
  /**
   * Sends a burst of gratuitous ARP for an address that is on the interface; resolves when the
   * burst is over. The deadline covers the whole burst.
   */
  announce (vip: VipAddress, options: AnnounceOptions): Promise<AnnounceResult>
  /** Whether the address is on the interface now. */
  hasAddress (vip: VipAddress, options?: VipCallOptions): Promise<boolean>
}
