/**
 * What the local API serves, shared by the agent (which builds it), the HTTP adapter (which serves
 * it and renders its Prometheus metrics) and the `starling` command (which prints it): the status
 * payload (GET /v1/status), the VIP payload (GET /v1/vips) and the HA payload (GET /v1/ha), with
 * their builders and the agent_vip_* and agent_ha_* metrics.
 */
import type { HaStatus, MemberView, VipStatus, VipStatusReport } from '../core/index.js'
import type { BalloonCounters, HostMemoryStatus } from './memory.js'
import type { PeerConnectionStats } from '../ports/transport.js'
import type { ClusterPlan, PlanStep } from '../../policies/cluster-plan.js'

/** What the local API returns on GET /v1/status. */
export interface StatusPayload {
  cluster: string
  self: { id: string, name: string }
  members: MemberView[]
  core: Record<string, unknown>
  runtime: Record<string, unknown>
  process?: Record<string, number>
  /**
   * The mesh: connections open now, the active view's size (null: a full mesh), members being
   * connected on demand, and counters since start.
   */
  mesh?: {
    open: number
    active: number | null
    pending: number
    framesSent: number
    framesReceived: number
    onDemandConnects: number
    /** On-demand dials that waited for another to finish (optional: older agents). */
    onDemandDialsQueued?: number
    idleCloses: number
    connectionsOpened: number
    connectionsClosed: number
    /** Connections replaced by a newer one to the same member (optional: older agents). */
    connectionsReplaced?: number
    heldExpired: number
    /** Connections this agent dialled: attempted, opened, and closed before opening (optional: older agents). */
    dialsAttempted?: number
    dialsOpened?: number
    dialsFailed?: number
    dialsInFlight?: number
    /** Calls sent to a member's known address with no DHT search beside them (optional: older agents). */
    directCalls?: number
    /** Announcements (and, in a full mesh, lookups) of the topic renewed on the DHT (optional: older agents). */
    discoveryRefreshes?: number
    /** Each open connection's traffic and how long ago the peer was last heard on it (optional: older agents). */
    peers?: PeerConnectionStats[]
    /** Frames not sent, by cause (optional: older agents). */
    sendDropped?: Record<string, number>
  }
  /**
   * Members refused at their hello (another cluster secret, HA timing that differs, no hello) or
   * connected with cluster-wide settings that differ from ours (flagged): agent/cluster-settings.ts.
   */
  settingsMismatches?: SettingsMismatch[]
  /** This host's memory at the last balloon step (absent: the driver has no balloon side). */
  memory?: { atMs: number, ballooning: boolean, host: HostMemoryStatus, counters: BalloonCounters } | null
}

export interface SettingsMismatch {
  peer: string
  /** The member's name in our cluster.members. */
  name: string
  refused: boolean
  reason: string
  /** Configuration paths that differ ("cluster.secret" when it does not prove our secret). */
  fields: string[]
  detail: string
  /** Wall ms of the first time seen, and how many times since. */
  since: number
  times: number
}

/** One VIP as GET /v1/vips returns it. */
export interface VipRow extends VipStatus {
  /** Owner's member name ('' when no owner is known). */
  ownerName: string
  /** Wall time of this host's last burst for the VIP (ms since the epoch), or null. */
  lastAnnounceAtMs: number | null
}

export interface VipsPayload {
  self: { id: string, name: string }
  /** Wall time the snapshot was taken (ms since the epoch). */
  nowMs: number
  tickMs: number
  vips: VipRow[]
}

/**
 * Builds the API payload. The last announcement's wall time comes from ticks:
 * now − (ticks() − lastAnnounceTick) × tickMs.
 */
export function vipsPayload (r: VipStatusReport, self: { id: string, name: string }, nameOf: (id: string) => string, tickMs: number, nowMs: number): VipsPayload {
  return {
    self,
    nowMs,
    tickMs,
    vips: r.vips.map(v => ({
      ...v,
      ownerName: v.owner === null ? '' : nameOf(v.owner),
      lastAnnounceAtMs: v.lastAnnounceTick === null ? null : nowMs - (r.ticks - v.lastAnnounceTick) * tickMs
    }))
  }
}

/** agent_vip_* gauges: counters summed over the VIPs, and per VIP whether this host owns it. */
export function renderVipMetrics (p: VipsPayload): string {
  const out: string[] = []
  const sum: Record<string, number> = {}
  for (const v of p.vips) for (const [k, n] of Object.entries(v.counters as unknown as Record<string, number>)) sum[k] = (sum[k] ?? 0) + n
  for (const [k, n] of Object.entries(sum)) {
    const name = `agent_vip_${k.replace(/([a-z0-9])([A-Z])/g, '$1_$2').toLowerCase()}`
    out.push(`# TYPE ${name} counter`, `${name} ${n}`)
  }
  out.push('# TYPE agent_vip_owned gauge')
  for (const v of p.vips) out.push(`agent_vip_owned{vip="${v.vip}"} ${v.role === 'owner' ? 1 : 0}`)
  out.push('# TYPE agent_vip_last_announce_age_seconds gauge')
  for (const v of p.vips) if (v.lastAnnounceAtMs !== null) out.push(`agent_vip_last_announce_age_seconds{vip="${v.vip}"} ${((p.nowMs - v.lastAnnounceAtMs) / 1000).toFixed(3)}`)
  return out.join('\n') + '\n'
}

/** GET /v1/ha: HaManager.status() with member names beside the ids. */
export interface HaPayload extends HaStatus {
  selfName: string
  tickMs: number
  /** Member names by id, for every id the status mentions. */
  names: Record<string, string>
  /** This host's watchdog device: which, and why there is none when selfFenced is false. */
  watchdog: { device: string | null, problem: string | null }
}

export function haPayload (s: HaStatus, self: { id: string, name: string }, nameOf: (id: string) => string, tickMs: number, watchdog: HaPayload['watchdog'] = { device: null, problem: null }): HaPayload {
  const ids = new Set<string>([self.id, ...s.quorum.present, ...s.fencedHosts, ...s.maintenance, ...s.unfenced, ...s.awaitingConfirmation, ...s.confirmedDown.map(c => c.host)])
  for (const v of s.vms) if (v.standing !== null) ids.add(v.standing.host)
  const names: Record<string, string> = {}
  for (const id of ids) names[id] = id === self.id ? self.name : nameOf(id)
  return { ...s, selfName: self.name, tickMs, names, watchdog }
}

/** agent_ha_* gauges: quorum, fence, watchdog, restarts, and the HA counters. */
export function renderHaMetrics (p: HaPayload): string {
  const out: string[] = []
  const g = (name: string, v: number, type = 'gauge'): void => { out.push(`# TYPE agent_ha_${name} ${type}`, `agent_ha_${name} ${v}`) }
  g('quorate', p.quorum.quorate ? 1 : 0)
  g('quorum_present', p.quorum.present.length)
  g('quorum_needed', p.quorum.needed)
  g('fencing', p.fence.fencing ? 1 : 0)
  g('watchdog_ok', p.fence.watchdogOk ? 1 : 0)
  g('armed', p.mode.armed ? 1 : 0)
  g('fenced_hosts', p.fencedHosts.length)
  g('self_fenced', p.selfFenced ? 1 : 0)
  g('unfenced_hosts', p.unfenced.length)
  g('awaiting_confirmation', p.awaitingConfirmation.length)
  g('restarts_pending', p.pending.length)
  g('restarts_done', p.restartsDone, 'counter')
  g('vms_running_here', p.vms.filter(v => v.role === 'running').length)
  for (const [k, n] of Object.entries(p.counters)) g(k.replace(/([a-z0-9])([A-Z])/g, '$1_$2').toLowerCase(), n, 'counter')
  return out.join('\n') + '\n'
}

/** One step of GET /v1/plan: policies/cluster-plan.ts PlanStep with member names beside the ids. */
export interface PlanStepRow extends PlanStep {
  fromName: string
  toName: string
}

/** What GET /v1/plan returns: the plan this agent draws from its view, names resolved. */
export interface PlanPayload {
  self: { id: string, name: string }
  /** Wall time the plan was drawn (ms since the epoch). */
  nowMs: number
  steps: PlanStepRow[]
  emptied: Array<{ id: string, name: string }>
  final: Array<{ id: string, name: string, cpu: number, memMiB: number }>
}

export function planPayload (p: ClusterPlan, self: { id: string, name: string }, nameOf: (id: string) => string, nowMs: number): PlanPayload {
  return {
    self,
    nowMs,
    steps: p.steps.map(s => ({ ...s, fromName: nameOf(s.from), toName: nameOf(s.to) })),
    emptied: p.emptied.map(id => ({ id, name: nameOf(id) })),
    final: Object.entries(p.final).map(([id, l]) => ({ id, name: nameOf(id), cpu: l.cpu, memMiB: l.memMiB })).sort((a, b) => a.name.localeCompare(b.name))
  }
}

/** `starling plan` as text. */
export function renderPlan (p: PlanPayload): string {
  if (p.steps.length === 0) return `no moves: the cluster is balanced as ${p.self.name} sees it`
  const pct = (x: number): string => `${Math.round(x * 100)}%`
  const lines = [`plan drawn by ${p.self.name}: ${p.steps.length} step(s)${p.emptied.length > 0 ? `; empties ${p.emptied.map(h => h.name).join(', ')} (could power off)` : ''}`,
    'STEP  RATING  VM            FROM -> TO          SOURCE CPU      TARGET CPU      COPY            AFTER  WHY']
  for (const s of p.steps) {
    lines.push([
      String(s.step).padEnd(5),
      `${'*'.repeat(s.rating)}`.padEnd(7),
      s.vm.padEnd(13),
      `${s.fromName} -> ${s.toName}`.padEnd(19),
      `${pct(s.source.before.cpu)} -> ${pct(s.source.after.cpu)}`.padEnd(15),
      `${pct(s.target.before.cpu)} -> ${pct(s.target.after.cpu)}`.padEnd(15),
      `${Math.round(s.cost.bytes / 1048576)} MiB ~${s.cost.seconds.toFixed(1)} s`.padEnd(15),
      (s.after.length > 0 ? s.after.join(',') : '-').padEnd(6),
      s.reason.text
    ].join(' '))
  }
  lines.push(`after the plan: ${p.final.map(h => `${h.name} ${pct(h.cpu)}`).join(', ')}`)
  return lines.join('\n')
}
