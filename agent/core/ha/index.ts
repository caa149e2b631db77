/**
 * High availability without a master.
 *
 * Pieces (all pure and deterministic; time is ticks):
 *   quorum.ts   majority of the configured members (tie-breakers included) from the local view
 *               plus round-trip leases; suspect counts as absent.
 *   fencing.ts  the self-fencing clock and the watchdog contract.
 *   restart.ts  claims on protected VMs granted by a majority; the shared greedy assignment.
 *   ha-manager.ts  one host's part: acceptor, claimant, fence; inputs in, effects out.
 *
 * Timing argument (why a restart never overlaps the old copy: S1, S4)
 * -------------------------------------------------------------------
 * Terms, in ticks: L = leaseTicks, F = fenceTicks + watchdogTicks, W = claimTimeoutTicks,
 * D = fenceDelayTicks.
 *
 * 1. Fence bound. If host H runs VM v at time t, H pinged the watchdog at some p >= t - watchdog
 *    (else the watchdog has reset H). The core allows a ping only when H is quorate, or within
 *    fenceTicks of its last quorate tick in this agent life, or when v is stopped or paused.
 *    So H was quorate at some s in [t - F, t]. (A hung or crashed agent does not ping; a
 *    restarted one has no grace until it is quorate again.)
 * 2. Quorate means a majority Q each received, at some r in [s - L, s], a beat H sent at or after
 *    s - L: the echo proves it, and echoes name H's own send tick, so delays only make it older.
 * 3. A takeover claim C (by host c, started at t0) is acted on only if a majority G granted it,
 *    each g at some tg in [t0, t0 + W] (c abandons a claim at W and never starts v under it),
 *    and g grants only if it has heard nothing at all from H during [tg - D, tg]. That needs g
 *    to know H's claim: a member's standing claim alone may hide it (a higher claim granted
 *    while a partition hid H's claim, then abandoned and released; or the release of a claim
 *    it granted over H's). So each member also keeps, durably, the claims below its standing
 *    one that may still run (priors): claims it granted a higher claim over, and claims whose
 *    owner says it runs them ('held', repeated every heldRefreshTicks < D) or that a refuser
 *    reports standing; a prior goes only when its owner releases it or a majority-granted
 *    higher claim supersedes it, and the VM is free only once every prior's host may be taken
 *    over. (A member that hears H's beats but none of its 'held' frames for D ticks would still
 *    miss it: the frames travel the same connection, so this assumes they are not lost apart.)
 * 4. The old copy started at t_v <= t0 + 2W - D: its claim was granted by a majority that
 *    intersects G, and that member g' received H's request before it last heard H, i.e. before
 *    tg' - D <= t0 + W - D; H starts at most W after it sent the request. (The epoch-0 claim of
 *    the configuration starts at 0, and no member grants before D ticks of its own life.)
 * 5. Suppose H still runs v at some time >= t0. By 1 applied at t0 (v ran since t_v <= t0 - F when
 *    D >= 2W + F), H was quorate at some s in [t0 - F, t0], and by 2 a majority Q heard H within
 *    [s - L, s], which lies inside [t0 + W - D, t0] when D >= W + F + L. That window is inside
 *    every grantor's silent window [tg - D, tg]. Q and G intersect: contradiction.
 *    Hence D > 2W + F + L suffices; the config adds 2 ticks for rounding and multiplies by
 *    (1 + 2 x clockDriftPpm) because D is measured on g's clock and F, L on H's.
 * Assumptions: clock rates differ by at most clockDriftPpm (no synchronisation needed: only
 * durations are compared); the agent's scheduling delay is bounded by the watchdog (a stalled
 * loop must catch up its ticks before it pings); stop and pause really stop the guest's writes;
 * the watchdog resets the host (hardware or softdog; systemd's watchdog only restarts the agent,
 * so it is a weaker fallback: use FailureAction=reboot-force with it). A 2-host cluster needs
 * a tie-breaker member (validateHaInventory enforces it), like Proxmox's QDevice.
 *
 * Mode and maintenance. Disarm (network maintenance) is a versioned register spread by the
 * beats: a disarmed member grants and claims nothing, and stops fencing only once it knows a
 * majority is disarmed at its version (then no claim can be granted). Re-arm takes a higher
 * version; no member grants the takeover of a host that has not reported the current armed
 * version (it might not be fencing). Maintenance of a host (also a versioned register): it is
 * not failed over (its VMs are not taken over when it goes down) and is never a target.
 *
 * Wiring (not done here):
 *   - AgentCore: one HaManager per agent, fed `members` on every membership change, `heard` for
 *     every frame, `haMessage` for the HA frames (new envelope bodies), `haDriverResult`;
 *     its tick() inside the core's tick; its effects merged into Ready (persist first).
 *   - Runtime: the watchdog port (fencing.ts), pinged after each caught-up loop turn iff
 *     watchdogOk(); haStart/haStop carried out by the hypervisor driver (start from the shared
 *     definition or the image; stop = destroy, pause = suspend); `vip` hints passed to the VIP
 *     module (vmPlaced / vmMovedAway), which then claims the VM's addresses.
 *   - Migration: a committed migration of a protected VM must move its claim (the target claims
 *     with the source's release in hand); until then HA VMs should not be migrated.
 *   - CLI: `starling ha status` prints HaManager.status() of the local agent (quorum present /
 *     needed, fencing and deadline, watchdog, mode, maintenance, fencedHosts, pending restarts,
 *     restartsDone, each VM's owner, attempts and failed flag); `starling ha disarm|arm` and
 *     `starling ha maintenance <host> on|off` send the operator inputs.
 */
export * from './ha-config.js'
export * from './ha-types.js'
export * from './quorum.js'
export * from './fencing.js'
export * from './restart.js'
export { HaManager } from './ha-manager.js'
export type { HaManagerInit } from './ha-manager.js'
