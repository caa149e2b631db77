/**
 * `starling plan [--json]`: what the cluster's hosts would do now, step by step, and why (GET
 * /v1/plan; policies/cluster-plan.ts draws it from the agent's view).
 *
 * `starling plan apply [--max-steps N] [--step K]`: carries steps out in order through the
 * normal migration protocol (POST /v1/migrate with the step's target; the agent forwards it to
 * the VM's host). Before each step it checks that the VM is still where the plan found it; after
 * it, that the VM runs on the target. It stops at the first step that did not happen as planned
 * (aborted: the source's reports showed the VM migrating, then running there again; refused:
 * they never showed it migrating), and on Ctrl-C it lets the step under way finish and starts no other.
 */
import { parseArgs } from 'node:util'
import { apiAddress, apiTarget, callApi, fetchStatus, TARGET_OPTIONS, UsageError } from './client.js'
import { renderPlan, type PlanPayload, type PlanStepRow } from '../api/payloads.js'

async function fetchPlan (addr: string): Promise<PlanPayload> {
  return (await callApi(addr, '/v1/plan')) as PlanPayload
}

/** A move that has not shown in the source's reports after this long was refused. */
const REFUSED_AFTER_MS = 30_000
/**
 * The request goes to the local agent, which forwards it over the mesh to the host running the VM;
 * a frame lost there (a connection replaced or dropped at that moment) would leave nothing to
 * wait for. A move not seen after this long is asked for again (twice at most, before
 * REFUSED_AFTER_MS): a repeat that reaches a host already moving the VM is refused there ("already
 * migrating") and changes nothing.
 */
const ASK_AGAIN_MS = 8_000
/** A move reads as aborted once this many polls in a row (500 ms apart: 5 s, a few report intervals) show the VM back on its source. */
const ABORTED_AFTER_POLLS = 10

/** Where `vm` is and in which state, by each alive host's own latest report. */
async function vmStates (addr: string, vm: string): Promise<Array<{ host: string, state: string }>> {
  const s = await fetchStatus(addr)
  const out: Array<{ host: string, state: string }> = []
  for (const m of s.members) {
    if (m.state !== 'alive' || m.report === null) continue
    for (const v of m.report.vms) if (v.id === vm) out.push({ host: m.name, state: v.state })
  }
  return out
}

/** Host each running VM is on, by each host's own latest report. */
async function placement (addr: string): Promise<Map<string, string>> {
  const s = await fetchStatus(addr)
  const out = new Map<string, string>()
  for (const m of s.members) {
    if (m.state !== 'alive' || m.report === null) continue
    for (const v of m.report.vms) if (v.state === 'running') out.set(v.id, m.name)
  }
  return out
}

export type MoveOutcome =
  | { kind: 'done', host: string }
  | { kind: 'refused' | 'aborted', text: string }
  | { kind: 'timeout', host: string | undefined }

/**
 * Asks for a move (`ask`: POST /v1/migrate to the local agent, which forwards it to the VM's
 * host) and follows it by the hosts' own reports until the VM runs on `to` (any host but `from`
 * when `to` is null). Refused: the reports never showed it migrating (after REFUSED_AFTER_MS, the
 * move asked for again at ASK_AGAIN_MS intervals meanwhile); aborted: they showed it migrating,
 * then running on `from` again. `say` gets a line when the move is asked for again.
 */
export async function followMove (ask: () => Promise<void>, addr: string, vm: string, from: string, to: string | null, timeoutMs: number, say: (line: string) => void): Promise<MoveOutcome> {
  await ask()
  const t0 = Date.now()
  let now: string | undefined = from
  let sawMoving = false
  // Polls in a row that showed the VM back on its source and moving nowhere: reports are
  // gossiped, so one poll can pair the source's older report (running) with the target's
  // newer one (no longer incoming) in the middle of a move that is going well.
  let backOnSource = 0
  let asked = 1
  while (Date.now() - t0 < timeoutMs) {
    await new Promise(resolve => setTimeout(resolve, 500))
    const st = await vmStates(addr, vm)
    now = st.find(x => x.state === 'running')?.host
    if (now !== undefined && (to === null ? now !== from : now === to)) return { kind: 'done', host: now }
    if (st.some(x => x.state === 'migrating')) sawMoving = true
    // The source's reports show the move: migrating, then running again on the source when it
    // was aborted; never migrating when the move was refused before it started.
    backOnSource = sawMoving && now === from && !st.some(x => x.state === 'migrating') ? backOnSource + 1 : 0
    if (backOnSource >= ABORTED_AFTER_POLLS) return { kind: 'aborted', text: `aborted (see starling migrations on ${from})` }
    if (!sawMoving && now === from && asked < 3 && Date.now() - t0 > asked * ASK_AGAIN_MS) {
      asked++
      say(`the move has not started after ${Math.round((Date.now() - t0) / 1000)} s; asking again`)
      await ask()
    }
    if (!sawMoving && now === from && Date.now() - t0 > REFUSED_AFTER_MS) return { kind: 'refused', text: `not started within ${REFUSED_AFTER_MS / 1000} s: refused (the reason is in the agents' logs: journalctl -u starling on ${from})` }
  }
  return { kind: 'timeout', host: now }
}

export async function planCommand (args: string[]): Promise<number> {
  if (args[0] === 'apply') return await applyCommand(args.slice(1))
  const { values } = parseArgs({ args, options: { ...TARGET_OPTIONS, json: { type: 'boolean' } } })
  const p = await fetchPlan(apiAddress(values))
  process.stdout.write((values.json === true ? JSON.stringify(p, null, 2) : renderPlan(p)) + '\n')
  return 0
}

async function applyCommand (args: string[]): Promise<number> {
  const { values } = parseArgs({ args, options: { ...TARGET_OPTIONS, 'max-steps': { type: 'string' }, step: { type: 'string' }, timeout: { type: 'string' } } })
  const int = (v: string | undefined, name: string): number | null => {
    if (v === undefined) return null
    const n = Number(v)
    if (!Number.isInteger(n) || n < 1) throw new UsageError(`--${name} must be a whole number >= 1 (got ${v})`)
    return n
  }
  const maxSteps = int(values['max-steps'], 'max-steps')
  const only = int(values.step, 'step')
  const stepTimeoutMs = 1000 * (int(values.timeout, 'timeout') ?? 600)
  const addr = apiAddress(values)
  const target = apiTarget(values)
  const plan = await fetchPlan(addr)
  let steps: PlanStepRow[] = plan.steps
  if (only !== null) {
    const s = steps.find(x => x.step === only)
    if (s === undefined) throw new UsageError(`the plan has no step ${only} (it has ${steps.length}); run starling plan again`)
    if (s.after.length > 0) process.stdout.write(`note: step ${only} comes after step(s) ${s.after.join(', ')}, which make room on ${s.toName}\n`)
    steps = [s]
  }
  if (maxSteps !== null) steps = steps.slice(0, maxSteps)
  if (steps.length === 0) { process.stdout.write('nothing to apply: the plan is empty\n'); return 0 }
  let interrupted = false
  const onSigint = (): void => {
    interrupted = true
    process.stdout.write('\ninterrupted: the step under way finishes, no other starts\n')
  }
  process.on('SIGINT', onSigint)
  try {
    let done = 0
    for (const s of steps) {
      if (interrupted) break
      const where = (await placement(addr)).get(s.vm)
      if (where !== s.fromName) {
        process.stdout.write(`step ${s.step}: ${s.vm} is ${where === undefined ? 'not running' : `on ${where}`}, not on ${s.fromName}: the plan is out of date; stopped (run starling plan again)\n`)
        return 1
      }
      process.stdout.write(`step ${s.step}: ${s.vm} ${s.fromName} -> ${s.toName} (${s.reason.text})\n`)
      const t0 = Date.now()
      const r = await followMove(async () => { await callApi(target, '/v1/migrate', { vm: s.vm, to: s.toName }) }, addr, s.vm, s.fromName, s.toName, stepTimeoutMs, line => { process.stdout.write(`step ${s.step}: ${line}\n`) })
      if (r.kind === 'refused' || r.kind === 'aborted') {
        process.stdout.write(`step ${s.step}: the move of ${s.vm} was ${r.text}; stopped\n`)
        return 1
      }
      if (r.kind === 'timeout') {
        process.stdout.write(`step ${s.step}: ${s.vm} is ${r.host === undefined ? 'not running' : `on ${r.host}`} after ${Math.round((Date.now() - t0) / 1000)} s, not on ${s.toName}; stopped (see starling migrations on ${s.fromName})\n`)
        return 1
      }
      done++
      process.stdout.write(`step ${s.step}: done in ${((Date.now() - t0) / 1000).toFixed(1)} s\n`)
    }
    process.stdout.write(`${done} of ${steps.length} step(s) applied${interrupted ? ' (interrupted)' : ''}\n`)
    return interrupted ? 130 : 0
  } finally {
    process.off('SIGINT', onSigint)
  }
}
