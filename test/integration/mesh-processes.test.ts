/**
 * Goal: real agent processes form a Hyperswarm mesh on loopback with no outside help, agree on
 * the cluster, detect a kill -9, refuse a key outside the cluster, and keep their identity
 * across a restart. Method: five `starling agent` processes from configurations written by the
 * demo's own generator; assertions read each agent's local API and the `starling` CLI.
 */
import t from 'tap'
import { spawn } from 'node:child_process'
import { readFile, writeFile } from 'node:fs/promises'
import { LocalCluster, aliveCount, compiledCli, stateOf } from './cluster-harness.js'
import { writeLocalCluster, startAgent } from '../../agent/cli/demo.js'
import type { StatusPayload } from '../../agent/api/payloads.js'
import { sleep } from '../lib/wait.js'

const N = 5

async function cli (args: string[]): Promise<{ code: number, stdout: string, stderr: string }> {
  const p = spawn(process.execPath, [compiledCli(), ...args], { stdio: ['ignore', 'pipe', 'pipe'] })
  let stdout = ''; let stderr = ''
  p.stdout.on('data', (d: Buffer) => { stdout += d.toString() })
  p.stderr.on('data', (d: Buffer) => { stderr += d.toString() })
  const code = await new Promise<number>(resolve => p.once('exit', c => resolve(c ?? -1)))
  return { code, stdout, stderr }
}

function summary (s: StatusPayload): string {
  return JSON.stringify(s.members.map(m => ({ id: m.id, name: m.name, state: m.state, vms: (m.report?.vms ?? []).map(v => v.id).sort() }))
    .sort((a, b) => a.name.localeCompare(b.name)))
}

t.test('five agent processes on loopback', async t => {
  const cluster = await LocalCluster.create(N, { seed: 7 })
  t.teardown(async () => await cluster.stop())
  const names = cluster.hosts.map(h => h.name)
  cluster.startAll()

  const formedMs = await cluster.waitViews(names, s => aliveCount(s) === N && s.members.every(m => m.report !== null), 30_000)
  t.not(formedMs, null, 'every agent sees all five hosts alive with load reports')
  t.comment(`mesh formed and reports converged in ${formedMs} ms`)

  await t.test('starling status --json on each agent shows the same cluster', async t => {
    // Views converge by gossip: allow a few report rounds for the VM lists to settle.
    let summaries: string[] = []
    for (let attempt = 0; attempt < 20; attempt++) {
      summaries = []
      for (const h of cluster.hosts) {
        const r = await cli(['status', '--json', '--config', h.configFile])
        t.equal(r.code, 0, `status exits 0 on ${h.name}`)
        summaries.push(summary(JSON.parse(r.stdout) as StatusPayload))
      }
      if (new Set(summaries).size === 1) break
      await sleep(500)
    }
    t.equal(new Set(summaries).size, 1, 'all five views agree on hosts, states and VMs')
    const tree = await cli(['status', '--config', cluster.hosts[0]!.configFile])
    t.match(tree.stdout, /host5/, 'the tree names the hosts')
    t.match(tree.stdout, /vm-1-1/, 'the tree lists the VMs')
  })

  const before = await cluster.status('host5')
  const idBefore = before?.self.id
  const incBefore = before?.members.find(m => m.name === 'host5')?.incarnation ?? -1

  await t.test('kill -9 of one agent is detected by the others', async t => {
    cluster.kill9('host5')
    const others = names.filter(n => n !== 'host5')
    const suspectMs = await cluster.waitViews(others, s => stateOf(s, 'host5') !== 'alive', 20_000, 50)
    t.not(suspectMs, null, 'all others stop considering host5 alive')
    const deadMs = await cluster.waitViews(others, s => stateOf(s, 'host5') === 'dead', 40_000, 100)
    t.not(deadMs, null, 'all others declare host5 dead')
    t.comment(`kill -9 noticed by all in ${suspectMs} ms; declared dead by all within ${(suspectMs ?? 0) + (deadMs ?? 0)} ms`)
  })

  await t.test('a restarted agent comes back with its identity and a higher incarnation', async t => {
    cluster.start('host5')
    const backMs = await cluster.waitViews(names, s => aliveCount(s) === N, 30_000)
    t.not(backMs, null, 'host5 is alive again in every view')
    const after = await cluster.status('host5')
    t.equal(after?.self.id, idBefore, 'same host id (public key) after restart')
    const incAfter = after?.members.find(m => m.name === 'host5')?.incarnation ?? -1
    t.ok(incAfter > incBefore, `incarnation rose (${incBefore} -> ${incAfter})`)
  })

  await t.test('an agent stalled long enough to be declared dead rejoins when it resumes', async t => {
    // SIGSTOP stands for a long GC pause, a frozen VM or a suspended host: when it resumes, each
    // side holds the other dead, and only the death notices about oneself can merge them again.
    const p = cluster.procs.get('host4')
    p?.kill('SIGSTOP')
    const others = names.filter(n => n !== 'host4')
    const deadMs = await cluster.waitViews(others, s => stateOf(s, 'host4') === 'dead', 40_000, 200)
    t.not(deadMs, null, 'the others declare the stalled agent dead')
    await sleep(5000)
    p?.kill('SIGCONT')
    const backMs = await cluster.waitViews(names, s => aliveCount(s) === N, 60_000, 200)
    t.not(backMs, null, 'every view has all five alive again')
    t.comment(`rejoined ${backMs} ms after SIGCONT`)
  })

  await t.test('a second agent on the same state directory is refused', async t => {
    const r = await cli(['agent', '--config', cluster.host('host1').configFile])
    t.not(r.code, 0, 'the second agent exits with an error')
    t.match(r.stderr + r.stdout, /in use by another starling agent/, 'it says why')
    const s = await cluster.status('host1')
    t.equal(s !== null && aliveCount(s), N, 'the first agent keeps running')
  })

  await t.test('an agent whose key is not in the cluster is refused', async t => {
    // The intruder knows the secret and every address, but its key is in no one's member list.
    const [intruder] = await writeLocalCluster(cluster.dir + '/intruder', 1, { seed: 99 })
    const cfg = JSON.parse(await readFile(intruder!.configFile, 'utf8'))
    const real = JSON.parse(await readFile(cluster.host('host1').configFile, 'utf8'))
    cfg.cluster.secret = real.cluster.secret
    cfg.cluster.members = [...real.cluster.members, { name: 'intruder', publicKey: intruder!.publicKey, address: intruder!.address }]
    cfg.node.name = 'intruder'
    await writeFile(intruder!.configFile, JSON.stringify(cfg))
    const rejectedCount = async (): Promise<number[]> => await Promise.all(names.map(async n => Number((await cluster.status(n))?.runtime.framesRejected ?? 0)))
    const before = await rejectedCount()
    const p = startAgent(intruder!, compiledCli())
    t.teardown(() => { p.kill('SIGKILL') })
    // Wait until the intruder has tried (its start-up can take seconds on a loaded machine).
    let refusedMs: number | null = null
    for (const t0 = Date.now(); refusedMs === null && Date.now() - t0 < 40_000;) {
      const counts = await rejectedCount()
      if (counts.some((x, i) => x > (before[i] ?? 0))) refusedMs = Date.now() - t0
      else await sleep(250)
    }
    await sleep(2000)
    for (const n of names) {
      const s = await cluster.status(n)
      t.notOk(s?.members.some(m => m.id === intruder!.publicKey), `${n} does not list the intruder`)
    }
    const rejected = await rejectedCount()
    t.ok(refusedMs !== null, `at least one agent counted the refused connection (${before.join(',')} -> ${rejected.join(',')})`)
  })
})

t.test('a configuration error exits with code 2 and a clear message', async t => {
  const cluster = await LocalCluster.create(1, { seed: 3 })
  t.teardown(async () => await cluster.stop())
  const h = cluster.hosts[0]!
  const cfg = JSON.parse(await readFile(h.configFile, 'utf8'))
  delete cfg.cluster.secret
  await writeFile(h.configFile, JSON.stringify(cfg))
  const r = await cli(['agent', '--config', h.configFile])
  t.equal(r.code, 2)
  t.match(r.stderr, /cluster\.secret must be a non-empty string/)
  const r2 = await cli(['agent', '--config', h.configFile + '.missing'])
  t.equal(r2.code, 2)
  t.match(r2.stderr, /cannot read configuration/)
})
