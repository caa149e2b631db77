/**
 * Goal: with real agent processes on loopback, a member whose key is allowed but whose cluster
 * secret differs never joins (before the hello it was alive in the others' views within 2-12 s),
 * HA timing that differs refuses the member, and migration rules that differ are flagged; each
 * time naming the field in the logs, in /v1/status and in `starling members`.
 * Method: the demo's configurations, one file edited per case; the views are polled through the
 * agents' APIs over the whole window.
 */
import t from 'tap'
import { spawn } from 'node:child_process'
import { readFile, writeFile } from 'node:fs/promises'
import { LocalCluster, compiledCli, stateOf } from './cluster-harness.js'
import type { StatusPayload } from '../../agent/api/payloads.js'
import { sleep } from '../lib/wait.js'

async function edit (file: string, f: (c: any) => void): Promise<void> {
  const c = JSON.parse(await readFile(file, 'utf8'))
  f(c)
  await writeFile(file, JSON.stringify(c, null, 2))
}

async function cli (args: string[]): Promise<{ code: number, stdout: string }> {
  const p = spawn(process.execPath, [compiledCli(), ...args], { stdio: ['ignore', 'pipe', 'inherit'] })
  let stdout = ''
  p.stdout.on('data', (d: Buffer) => { stdout += d.toString() })
  const code = await new Promise<number>(resolve => p.once('exit', c => resolve(c ?? -1)))
  return { code, stdout }
}

/** Polls every view for `ms`; returns the views in which `name` was ever alive. */
async function everAlive (cluster: LocalCluster, viewers: string[], name: string, ms: number): Promise<string[]> {
  const seen = new Set<string>()
  const t0 = Date.now()
  while (Date.now() - t0 < ms) {
    for (const v of viewers) {
      const s = await cluster.status(v)
      if (s !== null && stateOf(s, name) === 'alive') seen.add(v)
    }
    await sleep(200)
  }
  return [...seen]
}

const mismatchOf = (s: StatusPayload | null, name: string): NonNullable<StatusPayload['settingsMismatches']>[number] | undefined =>
  s?.settingsMismatches?.find(m => m.name === name)

t.test('another secret is refused, other rules are flagged', async t => {
  const cluster = await LocalCluster.create(4, { seed: 5 })
  t.teardown(async () => await cluster.stop())
  await edit(cluster.host('host3').configFile, c => { c.cluster.secret = 'a-different-cluster-secret' })
  await edit(cluster.host('host4').configFile, c => { c.migration = { rules: { vmVm: [{ kind: 'anti-affinity', vms: ['vm-1-1', 'vm-2-1'], hard: false }], vmHost: [] } } })
  const t0 = Date.now()
  cluster.startAll()
  const good = ['host1', 'host2', 'host4']
  const formed = await cluster.waitViews(good, s => good.every(n => stateOf(s, n) === 'alive'), 30_000)
  t.not(formed, null, 'host1, host2 and host4 form the cluster (differing rules do not keep host4 out)')
  const window = Math.max(0, 30_000 - (Date.now() - t0))
  const saw = await everAlive(cluster, [...good, 'host3'], 'host3', window)
  t.same(saw, ['host3'], `in 30 s from the start host3 was alive only in its own view (views that saw it alive: ${saw.join(', ')})`)
  const s3 = await cluster.status('host3')
  t.same(s3?.members.filter(m => m.state === 'alive').map(m => m.name), ['host3'], 'and host3 sees no one alive')

  const s1 = await cluster.status('host1')
  t.match(mismatchOf(s1, 'host3'), { refused: true, reason: 'secret_mismatch', fields: ['cluster.secret'] }, '/v1/status lists host3 as refused for its secret')
  t.match(mismatchOf(s1, 'host4'), { refused: false, reason: 'settings_differ', fields: ['migration.rules'] }, 'and host4 as flagged for its rules')
  t.match(mismatchOf(s3, 'host1'), { refused: true, fields: ['cluster.secret'] }, 'host3 refuses the others too')
  const log1 = await readFile(cluster.host('host1').logFile, 'utf8')
  t.match(log1, /"level":"error".*refused host3 \([0-9a-f]{8}\) at its hello: it does not prove our cluster secret: its cluster\.secret differs/, 'host1 logs why, at error')
  t.match(log1, /"level":"error".*host4 \([0-9a-f]{8}\): connected, but migration\.rules differs from ours \(flagged, not refused\)/, 'and the flagged field')
  t.match(await readFile(cluster.host('host3').logFile, 'utf8'), /"level":"error".*refused host1 .*cluster\.secret differs/, 'host3 logs its side')
  const members = await cli(['members', '--config', cluster.host('host1').configFile])
  t.equal(members.code, 0)
  t.match(members.stdout, /REFUSED host3 [0-9a-f]{8}: cluster\.secret: /, '`starling members` shows the refusal')
  t.match(members.stdout, /DIFFERS host4 [0-9a-f]{8}: migration\.rules: /, 'and the flagged member')
})

t.test('HA timing that differs refuses the member, naming ha.timing', async t => {
  const cluster = await LocalCluster.create(3, { seed: 6 })
  t.teardown(async () => await cluster.stop())
  // One protected VM (never booted here: the simulated driver does not run it), the same inventory everywhere.
  const ha = { armed: false, vms: [{ id: 'db', home: 'host1', image: '/nonexistent/db.img' }] }
  for (const h of cluster.hosts) await edit(h.configFile, c => { c.ha = h.name === 'host3' ? { ...ha, timing: { fenceDelayTicks: 400 } } : ha })
  cluster.startAll()
  const formed = await cluster.waitViews(['host1', 'host2'], s => stateOf(s, 'host1') === 'alive' && stateOf(s, 'host2') === 'alive', 30_000)
  t.not(formed, null, 'host1 and host2 form the cluster')
  const refused = await cluster.waitViews(['host1', 'host2'], s => mismatchOf(s, 'host3')?.refused === true, 20_000)
  t.not(refused, null, 'both refuse host3')
  const s1 = await cluster.status('host1')
  t.match(mismatchOf(s1, 'host3'), { reason: 'settings_mismatch', fields: ['ha.timing'], detail: /ha\.timing must be the same on every member/ })
  t.not(stateOf(s1!, 'host3'), 'alive', 'host3 is not alive in host1\'s view')
  t.match(await readFile(cluster.host('host2').logFile, 'utf8'), /"level":"error".*refused host3 .*ha\.timing must be the same on every member and differs/)
})
