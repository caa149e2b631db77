/**
 * Running one simulation: a day of traces, a model, and a mode (centralised CloudSim policy,
 * DVFS baseline, or decentralised agents). Shared by the CLI, the bench and the tests.
 */
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { parsePolicyName } from '../../../policies/config.js'
import { CloudsimController, cloudsimController, firstFitPlace, type CloudsimPolicy } from './cloudsim.js'
import { TraceSim, type Metrics, type StepSample } from './engine.js'
import { defaultModel, type SimModel } from './model.js'
import type { TraceDay } from './traces.js'
import { runDecentralised, type DecentralOptions } from './decentral.js'

export type Mode = 'central' | 'decentral'

export interface RunSpec {
  /** Policy name: DVFS, or DETECTOR-SELECTION-PARAM (e.g. LR-MMT-1.2). */
  policy: string
  mode: Mode
  model?: SimModel
  decentral?: Partial<DecentralOptions>
}

export interface RunResult {
  day: string
  policy: string
  mode: Mode
  vms: number
  hosts: number
  /** Seed of a decentralised run (undefined for centralised runs, which are deterministic). */
  seed?: number
  metrics: Metrics
  wallMs: number
  timeline: StepSample[]
}

export function cloudsimPolicy (name: string): CloudsimPolicy {
  const p = parsePolicyName(name)
  const o = p.overload
  const param = o.kind === 'thr' ? o.threshold : o.kind === 'kOfN' ? o.threshold : o.safety
  return { detector: o.kind as CloudsimPolicy['detector'], param, selection: p.selection }
}

export function runOne (trace: TraceDay, spec: RunSpec): RunResult {
  const t0 = performance.now()
  const model = spec.model ?? defaultModel()
  const sim = new TraceSim(model, trace)
  let metrics: Metrics
  if (spec.policy.toUpperCase() === 'DVFS') {
    firstFitPlace(sim)
    metrics = sim.run(null)
  } else if (spec.mode === 'central') {
    const c = new CloudsimController(sim, cloudsimPolicy(spec.policy))
    c.initialPlace()
    metrics = sim.run(cloudsimController(c))
  } else {
    metrics = runDecentralised(sim, spec.policy, spec.decentral ?? {})
  }
  const seed = spec.mode === 'decentral' && spec.policy.toUpperCase() !== 'DVFS' ? (spec.decentral?.seed ?? 1) : undefined
  return {
    day: trace.day, policy: spec.policy, mode: spec.mode, vms: trace.util.length, hosts: model.hosts,
    ...(seed !== undefined ? { seed } : {}),
    metrics, wallMs: performance.now() - t0, timeline: sim.timeline
  }
}

export interface ReferenceRow { variant: string, day: string, policy: string, energyKWh: number, migrations: number, slav: number, slatah: number, pdm: number, esv: number, wallS: number }

/** Rows of reference_runs.csv (next to the traces). */
export function loadReference (tracesDir: string): ReferenceRow[] {
  const lines = readFileSync(join(tracesDir, 'reference_runs.csv'), 'utf8').trim().split(/\r?\n/)
  const head = (lines.shift() ?? '').split(',')
  const col = (name: string): number => head.indexOf(name)
  return lines.map(l => l.split(',')).map(c => ({
    variant: c[col('variant')] ?? '', day: c[col('day')] ?? '', policy: c[col('policy')] ?? '',
    energyKWh: Number(c[col('energy_kwh_precise')] ?? c[col('energy_kwh')]), migrations: Number(c[col('migrations')]),
    slav: Number(c[col('slav')]), slatah: Number(c[col('slatah')]), pdm: Number(c[col('pdm')]), esv: Number(c[col('esv')]),
    wallS: Number(c[col('wall_s')])
  }))
}
