/**
 * Goal: plan mode on real agents (three processes on loopback, the Hyperswarm mesh, simulated
 * VMs). With `migration.automation: manual` an overloaded host moves nothing on its own; `starling
 * plan` drawn by two different agents gives the same steps; `starling plan apply` carries them
 * out through the normal protocol and the overloaded host ends under its threshold with every VM
 * running once.
 * Run: npx tsc -p tsconfig.build.json && npx tap test/integration/plan-agents.test.ts (about a minute)
 */
import t from 'tap'
import { readFileSync, writeFileSync } from 'node:fs'
import { LocalCluster, aliveCount, runCli, type CliRun } from './cluster-harness.js'
import type { PlanPayload, StatusPayload } from '../../agent/api/payloads.js'
import { poll, sleep } from '../lib/wait.js'

const cli = async (args: string[], timeoutMs = 180_000): Promise<CliRun> => await runCli(args, timeoutMs)

function placement (s: StatusPayload): Map<string, string[]> {
  const out = new Map<string, string[]>()
  for (const m of s.members) {
    if (m.state !== 'alive') continue
    for (const v of m.report?.vms ?? []) out.set(v.id, [...(out.get(v.id) ?? []), m.name])
  }
  return out
}

t.test('manual automation: nothing moves on its own; two agents draw the same plan; plan apply carries it out', async t => {
  const c = await LocalCluster.create(3, { seed: 17, sampleIntervalMs: 500 })
  t.teardown(async () => { await c.stop() })
  let cores = 0
  for (const h of c.hosts) {
    const cfg = JSON.parse(readFileSync(h.configFile, 'utf8')) as Record<string, any>
    if (h.name === 'host1') cores = cfg.sampler.capacity.cpuCores as number
    // host1: one busy VM per core (95 %); host2 and host3: half full (50 %).
    const n = h.name === 'host1' ? cfg.sampler.capacity.cpuCores as number : Math.max(1, Math.round(cfg.sampler.capacity.cpuCores / 2))
    cfg.driver.vms = Array.from({ length: n }, (_, i) => ({ id: `${h.name}-vm${i}`, vcpus: 1, memMiB: 512, pattern: 'constant', cpuMean: h.name === 'host1' ? 0.95 : 1 }))
    cfg.migration = { automation: 'manual', balanceTicks: 10, decisionTicks: 10 }
    writeFileSync(h.configFile, JSON.stringify(cfg, null, 2))
  }
  c.startAll()
  const names = ['host1', 'host2', 'host3']
  const formed = await c.waitViews(names, s => aliveCount(s) === 3 && s.members.every(m => (m.report?.vms.length ?? 0) > 0), 60_000)
  t.ok(formed !== null, `mesh formed with reports in ${formed} ms`)
  if (formed === null) return
  const cfg = (h: string): string[] => ['--config', c.host(h).configFile]
  const plan = async (h: string): Promise<PlanPayload | null> => {
    const r = await cli(['plan', '--json', ...cfg(h)])
    return r.code === 0 ? JSON.parse(r.out) as PlanPayload : null
  }
  const brief = (p: PlanPayload | null): string => p === null ? 'none' : p.steps.map(s => `${s.vm} ${s.fromName}->${s.toName}`).join('; ')

  // Two agents, the same steps (their views converge within a few reports).
  let a: PlanPayload | null = null
  let b: PlanPayload | null = null
  const same = await poll(async () => {
    [a, b] = await Promise.all([plan('host2'), plan('host3')])
    return a !== null && b !== null && a.steps.length > 0 && brief(a) === brief(b)
  }, 30_000, 500)
  t.ok(same !== null, `host2 and host3 draw the same plan: ${brief(a)} | ${brief(b)}`)
  const p = a as PlanPayload | null
  if (p === null) return
  t.ok(p.steps.every(s => s.fromName === 'host1' && s.reason.kind === 'overload'), 'every step relieves host1')
  const text = await cli(['plan', ...cfg('host1')])
  t.match(text.out, /STEP\s+RATING\s+VM/, 'starling plan prints a table')
  t.match(text.out, /overload: \d+ % now/, 'with the reason of each step')

  const st = await cli(['status', ...cfg('host2')])
  t.match(st.out, /plan: \d+ move\(s\) pending \(host1-vm\d+ host1->host\d/, 'starling status shows the pending plan')
  const view = await fetch(`http://${c.host('host3').apiListen}/v1/view`).then(async r => await r.json()) as { plan: Array<{ vm: string }> | null }
  t.ok(view.plan !== null && view.plan.length > 0, 'the web view carries the pending plan')
  await sleep(3000)
  const s0 = await c.status('host1')
  const on1 = [...placement(s0!).entries()].filter(([, hs]) => hs.includes('host1')).map(([vm]) => vm)
  t.equal(on1.length, cores, `manual: host1 still runs all its ${cores} VMs (${on1.join(', ')})`)

  const r = await cli(['plan', 'apply', ...cfg('host2')])
  t.comment(r.out.trim())
  t.equal(r.code, 0, 'plan apply succeeds')
  if (r.code !== 0) {
    // What the source and the target recorded (state and reason), for the post-mortem.
    for (const h of ['host1', ...new Set(p.steps.map(st => st.toName))]) {
      const m = await fetch(`http://${c.host(h).apiListen}/v1/migrations`).then(async x => await x.json()).catch((err: Error) => err.message)
      t.comment(`${h} migrations: ${JSON.stringify(m)}`)
    }
    // And what the agents logged about the request and their connections.
    for (const h of names) {
      const log = readFileSync(c.host(h).logFile, 'utf8').split('\n').filter(l => /migrat|moveRequested|connect|refused|cannot send/.test(l))
      t.comment(`${h} log (${log.length} lines):\n${log.slice(-40).map(l => l.slice(0, 300)).join('\n')}`)
    }
  }
  t.match(r.out, new RegExp(`${p.steps.length} of ${p.steps.length} step\\(s\\) applied`))
  const done = await c.waitViews(names, s => {
    const where = placement(s)
    return p.steps.every(st => where.get(st.vm)?.join() === st.toName) && [...where.values()].every(hs => hs.length === 1)
  }, 20_000)
  t.ok(done !== null, 'every view shows each VM on its planned target, running once')
  const s1 = await c.status('host1')
  const self = s1?.members.find(m => m.name === 'host1')
  t.ok(self?.report !== null && (self?.report?.cpuUtil ?? 1) <= 0.9, `host1 under its threshold (${self?.report?.cpuUtil.toFixed(2)})`)
})
