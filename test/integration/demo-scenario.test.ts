/**
 * `starling demo` end to end (short timings): five real agents play the whole scenario and the
 * events happen in order: formation, the surge's forecast crossing the threshold on host1, host1
 * picking a VM for overload and the migration committing (never onto its anti-affine peer's
 * host), quiet hours and a host emptied by consolidation, kill -9 of the host with the HA VMs,
 * suspected, dead, its HA VMs running elsewhere with their virtual IPs (on a simulated interface),
 * the host rejoining without running them again.
 * The demo exits 0 only when it saw every step.
 */
import t from 'tap'
import { spawn } from 'node:child_process'
import { compiledCli } from './cluster-harness.js'

interface Ev { tMs: number, kind: string, text: string, host?: string, vm?: string }
interface Result { ok: boolean, steps: Array<{ step: string, atMs: number | null, note: string }>, migrations: Array<{ vm: string, from: string, to: string, cause: string, state: string }>, restarts: Array<{ vm: string, from: string, to: string, afterKillS: number, vip: string | null, vipAfterKillS: number | null }>, killed: string | null }

t.test('the demo plays its scenario in order', async t => {
  const child = spawn(process.execPath, [compiledCli(), 'demo', '--json', '--hosts', '5', '--surge-at', '20', '--quiet-at', '45'], { stdio: ['ignore', 'pipe', 'pipe'] })
  let out = ''
  let err = ''
  child.stdout.on('data', (b: Buffer) => { out += b.toString() })
  child.stderr.on('data', (b: Buffer) => { err += b.toString() })
  const killer = setTimeout(() => child.kill('SIGINT'), 300_000)
  const code = await new Promise<number>(resolve => child.once('exit', c => resolve(c ?? 1)))
  clearTimeout(killer)
  const lines = out.split('\n').filter(Boolean).map(l => JSON.parse(l) as { event?: Ev, result?: Result })
  const events = lines.flatMap(l => l.event !== undefined ? [l.event] : [])
  const result = lines.find(l => l.result !== undefined)?.result
  t.match(err, /web view: http:\/\/127\.0\.0\.1:\d+\//, 'the demo prints the web page\'s address')
  t.ok(result !== undefined, 'it prints what happened')
  if (result === undefined) return
  for (const s of result.steps) t.comment(`${s.atMs === null ? '   -  ' : `${(s.atMs / 1000).toFixed(1)} s`}  ${s.step}${s.note !== '' ? `: ${s.note}` : ''}`)
  for (const r of result.restarts) t.comment(`HA restart of ${r.vm} ${r.from} → ${r.to} ${r.afterKillS.toFixed(1)} s after the kill; virtual IP ${r.vip ?? '-'} there after ${r.vipAfterKillS?.toFixed(1) ?? '-'} s`)
  t.equal(code, 0, `the demo exits 0 (saw every step)${code !== 0 ? `; stderr: ${err.slice(-400)}` : ''}`)
  t.ok(result.ok, 'every step was seen')
  const victim = result.killed ?? 'none'
  // Each step is looked for after the previous one.
  let from = 0
  const at = (pred: (e: Ev) => boolean, what: string): number => {
    const j = events.slice(from).findIndex(pred)
    const i = j < 0 ? -1 : from + j
    t.ok(i >= 0, `event: ${what}`)
    if (i >= 0) from = i + 1
    return i
  }
  // A host emptied by consolidation: the balancing may already empty one before quiet hours, so
  // it is not part of the ordered chain.
  t.ok(events.some(e => e.kind === 'empty'), 'event: a host is emptied by consolidation (could power off)')
  const order = [
    at(e => e.kind === 'formed', 'cluster formed'),
    at(e => e.kind === 'surge', 'the surge begins'),
    at(e => e.kind === 'overload' && e.host === 'host1', 'host1\'s forecast crosses the threshold'),
    at(e => e.kind === 'migration' && e.host === 'host1' && e.text.includes('(overload)'), 'host1 picks a VM and a target for overload'),
    at(e => e.kind === 'committed' && events.some(m => m.kind === 'migration' && m.vm === e.vm && m.text.includes('(overload)')), 'that migration commits'),
    at(e => e.kind === 'quiet', 'quiet hours'),
    at(e => e.kind === 'kill', `kill -9 ${victim}`),
    at(e => (e.kind === 'suspect' || e.kind === 'dead') && e.host === victim, `${victim} suspected`),
    at(e => e.kind === 'dead' && e.host === victim, `${victim} dead`),
    at(e => e.kind === 'ha-restart', 'an HA VM restarted elsewhere'),
    at(e => e.kind === 'alive' && e.host === victim, `${victim} alive again`),
    at(e => e.kind === 'rejoined', `${victim} rejoined without the restarted VMs`)
  ]
  t.same(order.map((x, i) => [i, x >= 0]), order.map((_, i) => [i, true]), 'every event was seen')
  t.ok(order.every((x, i) => i === 0 || x > (order[i - 1] as number)), `in order (${order.join(' < ')})`)
  t.ok(result.restarts.length >= 1 && result.restarts.every(r => r.to !== victim), 'the HA VMs run on other hosts')
  t.notOk(events.some(e => e.kind === 'double' || e.kind === 'rule-broken'), 'no VM ran twice and no rule was broken')
  // Virtual IPs: each HA VM's address was carried before the kill, and follows it after.
  const killAt = events.findIndex(e => e.kind === 'kill')
  t.ok(events.slice(0, killAt).filter(e => e.kind === 'vip').length >= 2, 'both virtual IPs were carried before the kill')
  for (const r of result.restarts) {
    t.ok(r.vip !== null && r.vipAfterKillS !== null && r.vipAfterKillS >= r.afterKillS, `${r.vm}'s virtual IP ${r.vip ?? '-'} followed it to ${r.to}`)
    t.ok(events.slice(killAt).some(e => e.kind === 'vip' && e.host === r.to && e.text.startsWith(`virtual IP ${r.vip ?? '-'} `)), `event: virtual IP ${r.vip ?? '-'} now on ${r.to}`)
  }
})
