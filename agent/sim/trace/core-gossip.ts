/**
 * The agents' real load-report dissemination for the trace simulator: one AgentCore per host
 * (membership, probes, suspicion, report push and pull, push-pull anti-entropy: the code the
 * agent runs) over a SimNetwork with seeded delay, loss and duplication, on a compressed clock.
 *
 * Per trace step: every core gets its host's sample (capacity, the VMs it runs with their current
 * demand), then all cores run `ticksPerStep` ticks: frames due are delivered, every core ticks,
 * its sends go to the network. The decisions of the step come after these ticks, from what each
 * core then holds: a step is the time from a load change (the trace's new sample) to the
 * decision, compressed into `ticksPerStep` ticks with the report, pull and gossip intervals
 * scaled with it (compressedCoreConfig). Failure detection runs too: a peer whose probes are
 * lost is suspected, and the agent's view leaves suspects out.
 */
import {
  AgentCore, defaultCoreConfig, defaultMigrationConfig, Prng, validateCoreConfig, type CoreConfig,
  type HostSample, type MemberRecord, type MemberState, type MigrationConfig
} from '../../core/index.js'
import type { ClusterView } from '../../../policies/types.js'
import type { PolicyConfig } from '../../../policies/plan.js'
import { SimNetwork, type SimNetworkOptions } from '../sim-network.js'

export interface CoreGossipOptions {
  seed: number
  /** Core ticks per trace step (from the load change to the decision). @default 12 */
  ticksPerStep: number
  /** Core configuration in compressed ticks. @default compressedCoreConfig(ticksPerStep) */
  config?: CoreConfig
  /** Link model: delay in ticks, loss, duplication, reordering. @default 1 tick, no loss */
  network: Omit<SimNetworkOptions, 'seed'>
}

export function defaultCoreGossipOptions (): CoreGossipOptions {
  return { seed: 1, ticksPerStep: 12, network: { delayTicksMin: 1, delayTicksMax: 1, loss: 0 } }
}

/**
 * The production profile (defaultCoreConfig) with the load-report timeline compressed into a
 * step of `ticksPerStep` ticks: one report per host per step (made at a random phase of the
 * step, as the agents' report timers are), pushed every tick, missing reports pulled every two
 * ticks once none came for a step and a quarter. Probing, suspicion and push-pull keep their
 * production intervals in ticks (a step of 12 ticks is then 1.2 s of probing: failure detection
 * is slower than in production relative to a step, which only matters when probes are lost).
 */
export function compressedCoreConfig (ticksPerStep: number): CoreConfig {
  return {
    ...defaultCoreConfig(),
    gossipIntervalTicks: 1,
    reportPushWaitTicks: 0,
    reportIntervalTicks: ticksPerStep,
    reportPullIntervalTicks: 2,
    reportStaleGraceTicks: Math.ceil(ticksPerStep / 4),
    memberSnapshotIntervalTicks: 100 * ticksPerStep
  }
}

export interface HeldReport { state: MemberState, seq: number }

export class CoreGossip {
  readonly ids: string[]
  readonly cores: AgentCore[]
  readonly network: SimNetwork
  readonly ticksPerStep: number
  readonly config: CoreConfig
  now = 0
  private readonly index = new Map<string, number>()
  private readonly phase: number[]

  /** `ids[i]` is host i's member id; every core starts knowing every host alive (no join storm). */
  constructor (ids: readonly string[], o: CoreGossipOptions, policy: PolicyConfig) {
    const prng = new Prng(o.seed)
    this.ids = ids.slice()
    this.ticksPerStep = o.ticksPerStep
    this.config = validateCoreConfig(o.config ?? compressedCoreConfig(o.ticksPerStep))
    this.network = new SimNetwork({ seed: prng.nextU32(), ...o.network })
    ids.forEach((id, i) => this.index.set(id, i))
    this.phase = ids.map(() => 1 + prng.int(o.ticksPerStep))
    const members: MemberRecord[] = ids.map(id => ({ id, name: id, addr: `${id}:49737`, incarnation: 1, state: 'alive' }))
    const seeds = ids.slice(0, 3).map(id => ({ id, name: id, addr: `${id}:49737` }))
    // The cores do not balance (the simulator's HostDeciders do, with the same policy); the
    // scheduler records the peers' history once per step, when the decisions are made.
    const migration: MigrationConfig = { ...defaultMigrationConfig(), autoBalance: false, balanceTicks: o.ticksPerStep, policy }
    this.cores = ids.map(id => new AgentCore({
      self: id, name: id, addr: `${id}:49737`, config: this.config, seed: prng.nextU32(), seeds, migration,
      restored: { incarnation: 0, reportSeqCeiling: 0, members }
    }))
  }

  /** One trace step: samples in (undefined: none for that host), then ticksPerStep ticks. */
  step (samples: ReadonlyArray<HostSample | undefined>): void {
    if (this.now === 0) {
      // The first sample makes a report at once and starts the host's report timer: each host
      // gets it at its own random tick of the first step, so report phases spread over a step
      // as the agents' timers do (otherwise every host would report at the same tick).
      for (let k = 1; k <= this.ticksPerStep; k++) {
        for (let i = 0; i < this.cores.length; i++) {
          const smp = samples[i]
          if (smp !== undefined && this.phase[i] === k) (this.cores[i] as AgentCore).step({ type: 'hostSample', sample: smp })
        }
        this.tick()
      }
      return
    }
    for (let i = 0; i < this.cores.length; i++) {
      const smp = samples[i]
      if (smp !== undefined) (this.cores[i] as AgentCore).step({ type: 'hostSample', sample: smp })
    }
    for (let k = 0; k < this.ticksPerStep; k++) this.tick()
  }

  private tick (): void {
    this.now++
    for (const f of this.network.take(this.now)) {
      const to = this.index.get(f.to)
      if (to !== undefined) (this.cores[to] as AgentCore).step({ type: 'receive', from: f.from, envelope: f.envelope })
    }
    for (const c of this.cores) c.tick()
    for (let i = 0; i < this.cores.length; i++) {
      const core = this.cores[i] as AgentCore
      const rd = core.ready()
      if (rd === null) continue
      const from = this.ids[i] as string
      for (const o of rd.send) this.network.send(this.now, from, o.to, o.envelope)
      core.advance(rd)
    }
  }

  /** The report host `i` holds of host `j` and the state it holds `j` in (null: no report). */
  held (i: number, j: number): HeldReport | null {
    const m = (this.cores[i] as AgentCore).member(this.ids[j] as string)
    if (m === undefined || m.report === null) return null
    return { state: m.state, seq: m.report.seq }
  }

  /** Seq of host j's own latest report. */
  ownSeq (j: number): number {
    return (this.cores[j] as AgentCore).member(this.ids[j] as string)?.report?.seq ?? 0
  }

  /** Host i's view exactly as its agent's scheduler builds it (AgentCore.clusterView). */
  agentView (i: number): ClusterView {
    return (this.cores[i] as AgentCore).clusterView()
  }

  hostIndex (id: string): number | undefined { return this.index.get(id) }
}
