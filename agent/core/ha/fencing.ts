/**
 * The self-fencing clock and the watchdog contract.
 *
 * Fence: once this host has been without a majority (quorum.ts) for fenceAfterTicks, it stops or
 * pauses every HA VM it runs (per VM policy). From the last quorate tick it has fenceTicks in
 * total; after that the core withholds the watchdog unless every local HA VM is confirmed
 * stopped or paused, so the hardware (or softdog) resets the host at most watchdogTicks later.
 * A hung agent (deadlock, a stalled event loop, a crashed process) withholds the ping too, by
 * not running: that is how the watchdog fences what the core cannot.
 *
 * A freshly started agent has never been quorate in this life: it gets no grace (lastQuorate is
 * -Infinity), so an agent restart cannot extend the life of VMs that kept running while it was
 * down. It pings again once it sees a majority (which re-establishes the premise of the timing
 * argument) or once nothing is left to fence.
 *
 * Runtime contract (the edge implements it, the core never touches a device):
 *
 *   Open /dev/watchdog (a hardware driver, else the softdog module) whose timeout is at most
 *   watchdogTicks * tickMs (agent/adapters/watchdog-device.ts refuses a longer or unknown one:
 *   the fence delay is computed from watchdogTicks); where neither exists, systemd's
 *   WatchdogSec= with sd_notify("WATCHDOG=1") and FailureAction=reboot-force. The magic close
 *   'V' only on a clean stop (the agent left the cluster, which then does not take its VMs
 *   over) and only while watchdogOk() holds; an agent that crashes, hangs, or stops while it
 *   withholds the ping leaves the timer running. (Residual case: a leave lost in a partition
 *   that starts at the same moment; the majority then treats the host as dead, and this host
 *   must have stopped its HA VMs itself: a graceful stop with HA VMs running is an operator
 *   action to take only on a connected cluster, after draining.)
 *
 * After each loop turn, and only when the turn has processed every tick that wall time calls
 * for (a stalled loop must not ping before it has caught up), the runtime pings iff
 * `HaManager.watchdogOk()` is true and its own health checks pass (store writable, driver
 * answering). A disarmed cluster (see restart.ts) keeps pinging: nothing can take over then.
 */
export class FenceClock {
  private lastQuorate = -Infinity
  private readonly startTick: number

  constructor (startTick: number, private readonly fenceAfterTicks: number, private readonly fenceTicks: number) {
    this.startTick = startTick
  }

  /** Record this tick's quorum. */
  observe (now: number, quorate: boolean): void { if (quorate) this.lastQuorate = now }

  /** Tick of the last quorate observation in this life (-Infinity if none). */
  get lastQuorateTick (): number { return this.lastQuorate }

  /**
   * Fence actions are due: no majority for fenceAfterTicks. A start-up that has not yet seen a
   * majority waits fenceTicks instead (the peers' leases need a round trip to form; the watchdog
   * is withheld meanwhile, so this wait cannot extend the life of the VMs).
   */
  mustFence (now: number): boolean {
    if (this.lastQuorate === now) return false
    if (this.lastQuorate === -Infinity) return now - this.startTick >= this.fenceTicks
    return now - this.lastQuorate >= this.fenceAfterTicks
  }

  /** Within the grace after losing the majority (a start-up without a majority has none). */
  inGrace (now: number): boolean { return now - this.lastQuorate <= this.fenceTicks }

  /** The tick by which local HA VMs must be stopped, or null while quorate. */
  deadline (now: number): number | null {
    if (this.lastQuorate === now) return null
    return this.lastQuorate === -Infinity ? this.startTick : this.lastQuorate + this.fenceTicks
  }
}

/** Whether the runtime may ping the watchdog now (pure; HaManager supplies the facts). */
export function watchdogAllows (f: { quorate: boolean, inGrace: boolean, allFenced: boolean, fencingOff: boolean }): boolean {
  return f.fencingOff || f.quorate || f.inGrace || f.allFenced
}
