/**
 * The settings that must agree on every member of a cluster, as digests that agents compare when
 * they connect (agent/adapters/hyperswarm-transport.ts, the hello frame) and that
 * `starling config check` prints, so that two hosts' files can be compared without starting them.
 *
 * The cluster secret is not among them: each agent proves it holds the secret instead of showing
 * a digest of it (a digest of a low-entropy secret could be guessed offline).
 *
 * What a differing field does (decided by the receiving agent, for its own fields):
 * - `ha.timing` (the HA timers and the tick length they count; compared only when both agents
 *   protect VMs): the peer is refused. The no-double-run argument (agent/core/ha/index.ts)
 *   compares one host's fence and watchdog with the others' fence delay, so a host with other
 *   timers must not vote or claim with them. A refused host is alone, without a majority, and
 *   fences its own VMs as in any partition. Change HA timing with HA disarmed (`starling ha
 *   disarm`, roll the files, `starling ha arm`): a disarmed cluster neither claims nor fences.
 * - `cluster.members`, `migration.rules`, `migration.automation`, `ha.hosts` (the tie-breaker and
 *   the members' capacities for restarts): flagged (logged at error, listed in /v1/status
 *   `settingsMismatches` and by `starling members`), not refused. The first three (and the
 *   protected VMs, `ha.vms`) are only the bootstrap of the agreed cluster configuration
 *   (agent/core/cluster-config), which rules once it exists and is changed live
 *   (`starling members|rules|config`, `starling ha protect|unprotect`); so the protected VMs are
 *   no longer compared here. The HA timing stays in the files: changing it live is unsafe (the
 *   fence delay of one host is argued against the others' fence and watchdog, so every host must
 *   use one timing at every instant).
 */
import { createHash } from 'node:crypto'
import type { AgentConfig } from './config.js'
import { canonicalDocJson } from './core/index.js'

export interface ClusterSetting {
  /** Configuration path, e.g. "ha.timing". */
  field: string
  /** SHA-256 of the field's canonical JSON (domain-separated). */
  digest: Uint8Array
  /** A peer whose digest of this field differs is refused (else flagged). */
  refuse: boolean
}

const DOMAIN = 'starling/settings/v1\n'

/** JSON with object keys sorted at every level (arrays keep their order): the core's, one text per value. */
export const canonicalJson = canonicalDocJson

function digest (field: string, value: unknown): Uint8Array {
  return createHash('sha256').update(DOMAIN).update(field).update('\n').update(canonicalJson(value)).digest()
}

/** The digests of this configuration's cluster-wide settings, in a fixed order. */
export function clusterSettings (c: AgentConfig): ClusterSetting[] {
  const byName = <T extends { name: string }>(xs: readonly T[]): T[] => [...xs].sort((a, b) => a.name < b.name ? -1 : a.name > b.name ? 1 : 0)
  const out: ClusterSetting[] = [
    { field: 'cluster.members', digest: digest('cluster.members', byName(c.cluster.members).map(m => ({ name: m.name, publicKey: m.publicKey, address: m.address }))), refuse: false },
    { field: 'migration.rules', digest: digest('migration.rules', c.migration.rules), refuse: false },
    { field: 'migration.automation', digest: digest('migration.automation', c.migration.automation), refuse: false },
    { field: 'ha.hosts', digest: digest('ha.hosts', { tieBreaker: c.ha.tieBreaker, hosts: c.ha.hosts }), refuse: false }
  ]
  // Only where HA takes part (an ha section): a cluster without HA has no timing to agree on.
  if (c.ha.enabled) out.push({ field: 'ha.timing', digest: digest('ha.timing', { tickMs: c.core.tickMs, ...c.ha.config }), refuse: true })
  // Only where VIPs are configured: a taker waits out the old owner's lease by its own leaseTicks.
  if (c.vips.list.length > 0) {
    const v = c.vips.config
    out.push({ field: 'vip.lease', digest: digest('vip.lease', { tickMs: c.core.tickMs, leaseTicks: v.leaseTicks, clockDriftPpm: v.clockDriftPpm }), refuse: true })
  }
  return out
}

/** One digest of every cluster-wide setting (for display: equal on every member of a healthy cluster). */
export function settingsFingerprint (settings: readonly ClusterSetting[]): string {
  const h = createHash('sha256').update(DOMAIN)
  for (const s of settings) h.update(s.field).update('\n').update(s.digest)
  return h.digest('hex')
}
