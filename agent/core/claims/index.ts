/**
 * Claims granted by a majority: the protocol VIP ownership (../vip/vip-ownership.ts) and HA
 * restarts (../ha/index.ts) share. Pure and deterministic, like the rest of the core.
 *
 *   order.ts   claims named (rank, host), totally ordered; "the same claim".
 *   grant.ts   the grant rule (grantVerdict), freedom (freeFor), majority and the claimant's win.
 *   timing.ts  retry, time-out and back-off (one ClaimTiming, seeded back-off).
 *
 * The protocol, common to both:
 *  1. A host that wants an item (a VIP, a protected VM) makes a claim above every claim it knows
 *     of, records it as granted by its own acceptor, and asks every other member to grant it.
 *  2. Every member is an acceptor. It keeps the standing claim of each item (durably: grants are
 *     persisted before they are sent) and answers a request by grantVerdict: it grants a claim
 *     only if the claim is above the standing one and the item is free for the claimant
 *     (freeFor: released, the claimant's own, or its host may be taken over), and repeats a
 *     grant that was lost. Majorities intersect, so two claims can both win only if some
 *     acceptor found the lower one free before it granted the higher one.
 *  3. The claimant acts only once a majority granted its claim while it sees a majority itself
 *     (wonClaim). Until then it resends the request every claimRetryTicks to the members that
 *     have not granted it; after claimTimeoutTicks it gives the claim up, releases it (so its
 *     grantors are freed) and backs off for a seeded time before it claims again (timing.ts).
 * What "may be taken over" means, and what else must be free, is each module's: VIPs after the
 * holder is declared dead (plus a grace), with floors that make messages about released claims
 * stale; HA after a fence delay with the fence gate, with priors (claims below the standing one
 * that may still run), priorities, attempts and the handover of a live migration. Those stay in
 * their modules, on top of these functions.
 */
export * from './order.js'
export * from './grant.js'
export * from './timing.js'
