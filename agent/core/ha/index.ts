/**
 * High availability without a master.
 *
 * Pieces (all pure and deterministic; time is ticks):
 *   quorum.ts   majority of the configured members (tie-breakers included) from the local view
 *               plus round-trip leases; suspect counts as absent.
 *   fencing.ts  the self-fencing clock and the watchdog contract.
 *   restart.ts  claims on protected VMs granted by a majority; the shared greedy assignment.
 *               The claim order, the grant rule, retry and back-off: ../claims/ (shared with VIPs).
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
 * loop must catch up its ticks before it pings: the runtime replays a few and tells the core how
 * many it skipped, 'ticksSkipped', which moves HA's clock by them at once); stop and pause really stop the guest's writes;
 * the watchdog resets the host (hardware or softdog). A 2-host cluster needs a tie-breaker
 * member (validateHaInventory enforces it), like Proxmox's QDevice.
 *
 * The fence gate (step 1 needs a watchdog that resets H)
 * -------------------------------------------------------
 * Step 1 holds only on a host whose watchdog resets it. Without one, a hung agent (SIGSTOP, a
 * stalled process) pings nothing and fences nothing while its QEMU runs on: after D the majority
 * would start a second copy. systemd's watchdog is no substitute: it restarts the agent (after
 * its own timeout, and KillMode=process leaves the VMs running), it does not stop the guests. So:
 *   - the runtime tells the core `haLocalFence` only once it holds the watchdog device open (the
 *     device's timeout checked <= watchdogTicks, so F bounds it); until then the host is unfenced;
 *   - every beat carries the sender's fence; a member grants the takeover of H only if H's latest
 *     life it heard of said `fenced` (takeoverOk), or an operator confirmed H down in that life
 *     (`starling ha confirm-down`: the operator's word replaces the reset, as Proxmox's manual
 *     fencing and oVirt's "host has been rebooted" do; a later life of H voids it);
 *   - an unfenced host claims no restart and is left out of the shared assignment, so no VM is
 *     placed where it would be unprotected.
 * Residual case, not covered: H stops cleanly (magic close: its watchdog is disarmed), restarts
 * with no device, and dies before its first beat of the new life reaches g: g still holds the
 * earlier life's report. The window is one beat interval after a restart that also lost the
 * device; the unit's fence-setup makes a missing device at restart unlikely.
 *
 * Live migration: the handover of a claim (S1, S4)
 * -------------------------------------------------
 * A protected VM v runs on source S under claim cS (granted). A live migration to T hands the
 * claim over before the VM may run on T:
 *   a. T's migration machine, admitting the intent, calls incomingStart: from then on (durably)
 *      T's HA role for v is 'incoming', fenced like a running copy (stopped when T loses its
 *      majority; the watchdog is withheld until it is stopped). T must be quorate to accept.
 *   b. When T's incoming copy is ready, S (role running, quorate, armed) sends a 'handover'
 *      request for cT = (top epoch + 1, T): the sender being the owner is its consent. A member g
 *      grants it when S holds v at g (standing claim or prior), every other claim that may run
 *      is takeover-able, cT is above the standing claim, g is quorate and armed, and both S and
 *      T are present at g (alive, lease fresh: g heard each within L). The target grants only
 *      the handover it expects (step a). g keeps cS as a prior below cT (it still runs).
 *   c. S issues the migrate command only once a majority H, T among it, granted cT while S
 *      sees a majority; otherwise it aborts after 3 x claimTimeoutTicks, v staying on S.
 *   d. Commit (T's copy runs; the source's copy stays paused for good, R1/R2 of the migration
 *      machine): T becomes 'running' under cT and asserts it ('held' drops priors below it); S
 *      goes idle and releases cS. Abort (T's copy never ran, or is gone): T releases cT as never
 *      granted (it supersedes nothing), S runs on under cS, which members keep as a prior.
 *   Before the commit T never asserts cT ('held') and does not release it on a query, so no
 *   member drops cS or sees cT released while T may run v. S's copy stops (fence, conflict)
 *   only by a stop, never a pause, while handing over: a paused source copy may be older than
 *   what ran on T. If HA fences T's copy after the switch-over, T's migration machine answers
 *   committed (the VM is lost and restarted from its disk) so S never resumes its older copy.
 * Why no third host X runs v while S or T may (S1): X's claim cX needs a majority G; G and H
 * intersect in some g.
 *   - g granted cT before cX: g then holds cT and cS (standing or priors) until they are
 *     released (by a host that no longer runs v and will not, d) or superseded by a
 *     majority-granted higher claim that itself had to find them free. So g grants cX only
 *     if S and T are both takeover-able at g (dead, silent for D, armed, not in maintenance).
 *     For S the argument of 1-5 holds unchanged. For T: g heard T at some r >= t_h - L when it
 *     granted cT at t_h, and was silent on T during [tg - D, tg], so t_h < tg - D + L <=
 *     t0 + W - D + L, hence T's fence duty (from a, before t_h) began before t0 - F (D >=
 *     L + F + 2W + 2). Step 1 then holds for T (it pings only while quorate or in grace, or
 *     once nothing is left to fence; before a, T was quorate when it accepted), and 2-5 give
 *     the contradiction exactly as for a restarted copy.
 *   - g granted cX before cT: g grants cT only if X is takeover-able (or cX released), and the
 *     same argument with X as the old owner and cT as the new claim shows X's copy stopped
 *     before T's could run (T's copy runs only after H's grants).
 *   The members outside H that never heard of cT still hold cS (or higher) for S, so they
 *   too wait for S. Hence at every time at most one of S, T, X runs v; and while the handover
 *   is pending both S and T fence, so a cut-off end stops itself before the majority could
 *   act (S4). The VM is never left unclaimed for long: until the migration ends, cS stays
 *   a prior and cT standing; each end that stops running releases its claim; a lost release
 *   is repaired by the members' queries (answered once the migration has ended).
 * The simulator (agent/sim/sim-cluster.ts; test/sim/ha-random-faults-migration.test.ts and
 * test/sim/races.test.ts) runs the whole core, HA with migrations, under power losses, hangs,
 * agent crashes, partitions and loss, checking S1-S5 after every tick.
 *
 * Live protection: protect and unprotect, agreed by a majority (S1)
 * ------------------------------------------------------------------
 * The protected VMs are part of the replicated cluster configuration (cluster-config/). Each
 * agent applies a version when it learns it (HaManager.setVms), so for a while some members
 * protect a VM and others do not yet, or no longer. A protection made at version s is its own
 * generation: its claims have epochs in [s x SPAN, (s + 1) x SPAN) (SPAN = HA_EPOCH_SPAN = 2^32;
 * s < 2^20 keeps them safe integers, uint64 on the wire; the files' protection is s = 0), and its
 * first claim, (s x SPAN, home), stands at every member that applies s, as epoch 0 does at start-up.
 *   a. One generation alone is the start-up case: every claim of it needs a majority of grants
 *      from members holding its records, and an acceptor grants a request only for a claim of
 *      its own record's generation (sameGeneration): an earlier generation's is refused (its
 *      claimant abandons), a later one's is not answered until the member applies it. So the
 *      argument of 1-5 above holds within the generation, with one difference: the home starts
 *      fencing when it applies s, not at time 0, while a member that applied s earlier might see
 *      the home silent and take it over. So the first claim's home is never taken over by a
 *      member that has not heard the home speak of this generation (an HA frame about v with a
 *      claim of generation s, which it sends only after applying s: 'held' when it runs v, the
 *      release after destroying it) or had an operator confirm it down (homeHeard, durable;
 *      homeSettled). The evidence travels: a member that holds it says so in its requests and
 *      'held' claims of generation s (homeSettled on the wire), and a member that receives that
 *      from a member adopts it (members are authenticated and run this code). So a member
 *      added after the home was cut off, which can never hear the home itself, still grants
 *      the takeover a member that heard the home asks for. Then, when a takeover is granted,
 *      someone heard the home speak of s before, so the home applied s, and steps 1-5 apply to
 *      its copy from then on.
 *   b. Generations do not mix: a claim of generation s' < s ranks below s's first claim, so no
 *      stale claim or grant of an earlier protection outranks or confuses the new one; its
 *      requests are refused. A 'held' of an earlier generation (its owner runs v, not having
 *      applied the versions since) is kept as a prior like any claim that may run, so v is not
 *      free at that member until its owner stops it or may be taken over; when that owner applies
 *      s it stops its copy (a host other than the home that runs v stops it: conflict).
 *   c. Unprotect at version u: members that apply u forget v (records deleted, claims in flight
 *      dropped, nothing granted for v any more). A host whose copy of v runs keeps fencing it
 *      (HaManager.retired: stopped when it loses its majority, the watchdog withheld meanwhile)
 *      until it knows a majority of the members acts on u or later (their frames carry their
 *      version). A claim of v's generation granted after that needs a grant from one of them
 *      given before it applied u, so the claim started (t0) before this host stopped fencing, and
 *      1-5 at t0 stop this host's copy or contradict the grant. A copy that keeps running after
 *      that runs unprotected, as the operator asked.
 *   d. The home is where the proposer's view sees v running (its members' reports); protect is
 *      refused when no member reports v, when it migrates, and when the home or every member
 *      that could restart it holds no fence. Residual case, not covered: a copy started on another
 *      host too recently for the proposer's view runs beside the home's until that host applies
 *      s (it then stops it, b); with the home's copy gone (destroyed and released) the majority
 *      may restart v meanwhile. Start VMs once, then protect them.
 * The timing (lease, fence, watchdog, fence delay) stays in each host's file and must be the
 * same everywhere (the mesh hello refuses a host whose ha.timing differs): one host's fence delay
 * is argued against the others' fence and watchdog, so changing it live, host by host, would
 * break 5 during the roll-out. The simulator runs protect, unprotect and crashes together
 * (test/sim/ha-protect-live.test.ts), checking S1 after every tick.
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
 *   - Migration: the migration machine calls the handover (MigrationMachine.ha, wired by
 *     AgentCore): incomingStart on the target, handoverStart / handoverGranted on the source
 *     before the copy starts, handoverEnd at both ends when the record commits or aborts.
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
