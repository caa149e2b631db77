/**
 * Core configuration: every interval is counted in ticks (the runtime turns `tickMs` of wall time
 * into one `tick()`). Shape follows memberlist's documented config: each field says what it does,
 * its unit, the trade-off, and the formula it feeds. `validateCoreConfig` rejects impossible
 * combinations with an exact message; nothing downstream re-checks them.
 */

import { ConfigError } from '../../policies/config-error.js'

/** A configuration that cannot work (one class for every configuration check, with the field path). */
export { ConfigError }

/**
 * Largest frame, bytes (one encoded Envelope, without the transport's length prefix): the frames
 * the core builds (push-pull of the whole membership and its load reports fills them, so a
 * cluster of a few hundred hosts needs more than 64 KiB) and the largest the codec and the
 * transport accept. One constant, so a receiver never refuses what a sender built.
 */
export const FRAME_BYTES_MAX_DEFAULT = 256 * 1024

export interface CoreConfig {
  /** Wall-clock length of one tick, ms. Only the runtime and reports of durations use it. Lower = finer timers, more wakeups. */
  tickMs: number

  /** Ticks between the starts of two probe rounds (scaled by local health). Lower = faster first detection, more probe traffic. Probes may overlap. */
  probeIntervalTicks: number
  /** Ticks to wait for a direct ack before asking `indirectChecks` peers (scaled by local health). Must exceed one round trip. */
  probeTimeoutTicks: number
  /** Ticks from a probe's start until an unanswered probe becomes a suspicion (scaled by local health). Must leave room for the indirect path (4 hops). */
  probeDeadlineTicks: number
  /** Peers asked to probe on our behalf after a direct timeout (SWIM k). Higher = fewer false suspicions under loss, more traffic. */
  indirectChecks: number
  /** Ticks a relay waits for the target's ack before sending a Lifeguard nack to the requester. Must be < probeDeadlineTicks - probeTimeoutTicks. */
  nackTimeoutTicks: number
  /** Lifeguard local-health multiplier cap: probe intervals and timeouts, and the time this host waits before it declares a suspect dead, are scaled by (score + 1) or the measured round trips' multiplier, at most awarenessMax. Higher = more tolerance of a starved host, slower detection by it. */
  awarenessMax: number

  /** Suspicion base: min timeout = suspicionMult * max(1, log10(n)) * probeIntervalTicks. Higher = fewer false deaths, slower detection. */
  suspicionMult: number
  /** Max suspicion timeout = suspicionMaxTimeoutMult * min timeout (used when no one confirms). */
  suspicionMaxTimeoutMult: number
  /**
   * Independent confirmations that shrink the suspicion timeout from max to min (log scale). 0 = always min.
   * A member that hears a suspicion checks it with a probe of its own with probability
   * min(1, 2k / (n - 2)) (Prober.confirmProbe), so a real failure gathers its k confirmations
   * within one probe deadline.
   */
  suspicionConfirmations: number

  /**
   * Gossip retransmit limit = retransmitMult * ceil(log10(n + 1)) transmissions per broadcast. Higher = surer spread, more bytes.
   * 6, not memberlist's 4: with 4, at 1000 members and 5 % loss a member missed a refutation about
   * once in 1e5 (about 12 copies reach each member), which made about two false deaths an hour
   * (bench/scale.md, "What the false deaths are").
   */
  retransmitMult: number
  /** Ticks between gossip rounds. Lower = faster spread, more frames. */
  gossipIntervalTicks: number
  /** Random peers a gossip round sends membership broadcasts to. */
  gossipNodes: number
  /** Byte budget for piggybacked membership broadcasts in one frame. */
  gossipBytesMax: number
  /** Broadcast queue bound (items); beyond it the most-transmitted items are dropped and counted. */
  broadcastQueueMax: number

  /** Ticks between push-pull anti-entropy exchanges with one random peer, before scaling. */
  pushPullIntervalTicks: number
  /** Above this many members the push-pull interval grows by ceil(log2(n) - log2(threshold)) + 1 (memberlist pushPullScale). */
  pushPullScaleThreshold: number
  /** Ticks between join attempts (small push-pull) to seeds not known alive. Lower = faster (re)join, more frames to dead seeds. */
  joinRetryTicks: number
  /**
   * Seeds not known alive that one join attempt contacts, taken in turn from a shuffled order: a
   * cluster started all at once does not open a connection from every host to every seed, and a
   * dead seed costs one attempt per round of the order. Higher = faster first join, more
   * connections at start-up.
   */
  joinFanout: number
  /**
   * Members this host keeps connections to and sends its routine traffic to (probe rounds,
   * gossip, push-pull, report pulls): its neighbours on activeViewSize / 2 hash rings
   * (membership/active-view.ts), so connections and idle cost per host do not grow with the
   * cluster; a cluster no larger than the view is a full mesh anyway. Even, or 0 for every
   * reachable member (a full mesh: connections and start-up work grow with the cluster; at 60
   * agents on one 2-core machine it formed in one run of two, the view in both: bench/scale.md).
   * Higher = more probers per member and faster spread, more connections.
   */
  activeViewSize: number
  /**
   * A member that just entered the active view and has no connection yet is left out of the
   * probe rounds for at most this many ticks (its first ping would only time out while the
   * connection opens). 0 = probe at once.
   */
  connectGraceTicks: number
  /** Minimum ticks between two death notices sent back to the same host we hold dead. */
  deathNoticeIntervalTicks: number

  /** Ticks between two load reports of this host. Lower = fresher views, proportionally more bytes (the bandwidth lower bound is n * reportBytes / interval). */
  reportIntervalTicks: number
  /** Infect-and-die push: peers each new report is forwarded to once, by every host that first learns it. Higher = wider push coverage, about fanout copies per host. */
  reportFanout: number
  /**
   * Ticks a report to push waits for frames that go to view members anyway (probes, acks,
   * membership gossip, configuration announcements) to carry it before a gossip round sends it in
   * a frame of its own. 0 = at the next gossip round. Higher = fewer frames, the push a little
   * slower per hop (at most this many ticks plus a gossip interval).
   */
  reportPushWaitTicks: number
  /** Ticks between pulls of missing reports from one random peer. Lower = faster repair of what the push missed. */
  reportPullIntervalTicks: number
  /** A member's report is missing when none arrived for reportIntervalTicks + this many ticks. */
  reportStaleGraceTicks: number
  /** Most hosts named in one pull request. */
  reportPullMax: number
  /** Report interval means kept for the forecast. */
  loadHistoryMax: number
  /** Report intervals forecast ahead (length of LoadReport.forecastCpu). */
  forecastHorizon: number
  /** Holt level smoothing in (0, 1]. Higher = follows the latest interval more closely. */
  forecastAlpha: number
  /** Holt trend smoothing in [0, 1]. 0 = no trend. */
  forecastBeta: number

  /**
   * Largest frame the core builds, bytes (estimated as the protobuf encoding): push-pull and report
   * gossip fill frames up to it. The transport and the decoder accept frames up to the same size
   * (main.ts passes this field to both). @default FRAME_BYTES_MAX_DEFAULT
   */
  frameBytesMax: number
  /** Ticks between flushes of changed member records to the store. */
  memberSnapshotIntervalTicks: number
  /** Report sequence numbers reserved per store write, so a restart never reuses one. */
  reportSeqLease: number
}

/** Production LAN profile: tick 100 ms, probe every 500 ms, gossip every 200 ms, report every 10 s. */
export function defaultCoreConfig (): CoreConfig {
  return {
    tickMs: 100,
    probeIntervalTicks: 5,
    probeTimeoutTicks: 3,
    probeDeadlineTicks: 9,
    indirectChecks: 5,
    nackTimeoutTicks: 3,
    awarenessMax: 8,
    suspicionMult: 3,
    suspicionMaxTimeoutMult: 6,
    suspicionConfirmations: 3,
    retransmitMult: 6,
    gossipIntervalTicks: 2,
    gossipNodes: 3,
    gossipBytesMax: 2048,
    broadcastQueueMax: 4096,
    pushPullIntervalTicks: 300,
    pushPullScaleThreshold: 32,
    joinRetryTicks: 50,
    joinFanout: 3,
    activeViewSize: 6,
    connectGraceTicks: 50,
    deathNoticeIntervalTicks: 10,
    reportIntervalTicks: 100,
    reportFanout: 2,
    reportPushWaitTicks: 5,
    reportPullIntervalTicks: 10,
    reportStaleGraceTicks: 30,
    reportPullMax: 256,
    loadHistoryMax: 60,
    forecastHorizon: 3,
    forecastAlpha: 0.5,
    forecastBeta: 0.3,
    frameBytesMax: FRAME_BYTES_MAX_DEFAULT,
    memberSnapshotIntervalTicks: 600,
    reportSeqLease: 1000
  }
}

/** Small clusters in tests: the default with faster anti-entropy and reports. */
export function localTestCoreConfig (): CoreConfig {
  return {
    ...defaultCoreConfig(),
    pushPullIntervalTicks: 50,
    joinRetryTicks: 10,
    reportIntervalTicks: 20,
    reportPullIntervalTicks: 10,
    reportStaleGraceTicks: 10,
    memberSnapshotIntervalTicks: 50,
    reportSeqLease: 10
  }
}

const positiveInts: Array<keyof CoreConfig> = [
  'tickMs', 'probeIntervalTicks', 'probeTimeoutTicks', 'probeDeadlineTicks', 'nackTimeoutTicks',
  'awarenessMax', 'retransmitMult', 'gossipIntervalTicks', 'gossipNodes', 'gossipBytesMax',
  'broadcastQueueMax', 'pushPullIntervalTicks', 'pushPullScaleThreshold', 'joinRetryTicks',
  'deathNoticeIntervalTicks', 'joinFanout', 'reportIntervalTicks', 'reportFanout', 'reportPullIntervalTicks',
  'reportPullMax', 'loadHistoryMax', 'forecastHorizon', 'frameBytesMax',
  'memberSnapshotIntervalTicks', 'reportSeqLease'
]
const nonNegativeInts: Array<keyof CoreConfig> = ['indirectChecks', 'suspicionConfirmations', 'reportStaleGraceTicks', 'reportPushWaitTicks', 'activeViewSize', 'connectGraceTicks']

/** Returns the config unchanged when it can work; throws ConfigError naming the first broken rule. */
export function validateCoreConfig (c: CoreConfig): CoreConfig {
  for (const k of positiveInts) {
    const v = c[k]
    if (!Number.isInteger(v) || v < 1) throw new ConfigError(`${k} must be a positive integer (got ${String(v)})`, k)
  }
  for (const k of nonNegativeInts) {
    const v = c[k]
    if (!Number.isInteger(v) || v < 0) throw new ConfigError(`${k} must be a non-negative integer (got ${String(v)})`, k)
  }
  if (!(c.suspicionMult > 0)) throw new ConfigError(`suspicionMult must be > 0 (got ${c.suspicionMult})`, 'suspicionMult')
  if (!(c.suspicionMaxTimeoutMult >= 1)) throw new ConfigError(`suspicionMaxTimeoutMult must be >= 1 (got ${c.suspicionMaxTimeoutMult})`, 'suspicionMaxTimeoutMult')
  if (c.probeTimeoutTicks < 2) throw new ConfigError('probeTimeoutTicks must be >= 2 (one round trip is two ticks)', 'probeTimeoutTicks')
  if (c.probeTimeoutTicks >= c.probeDeadlineTicks) throw new ConfigError('probeTimeoutTicks must be < probeDeadlineTicks', 'probeTimeoutTicks')
  if (c.nackTimeoutTicks >= c.probeDeadlineTicks - c.probeTimeoutTicks) {
    throw new ConfigError('nackTimeoutTicks must be < probeDeadlineTicks - probeTimeoutTicks', 'nackTimeoutTicks')
  }
  if (c.activeViewSize % 2 !== 0) throw new ConfigError(`activeViewSize must be even (two neighbours per ring) or 0 for a full mesh (got ${c.activeViewSize})`, 'activeViewSize')
  if (c.gossipBytesMax > c.frameBytesMax) throw new ConfigError('gossipBytesMax must be <= frameBytesMax', 'gossipBytesMax')
  if (!(c.forecastAlpha > 0 && c.forecastAlpha <= 1)) throw new ConfigError('forecastAlpha must be in (0, 1]', 'forecastAlpha')
  if (!(c.forecastBeta >= 0 && c.forecastBeta <= 1)) throw new ConfigError('forecastBeta must be in [0, 1]', 'forecastBeta')
  if (c.reportPullIntervalTicks > c.reportIntervalTicks + c.reportStaleGraceTicks) {
    throw new ConfigError('reportPullIntervalTicks must be <= reportIntervalTicks + reportStaleGraceTicks', 'reportPullIntervalTicks')
  }
  return c
}
