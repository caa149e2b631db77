/**
 * Goal: a normal agent start, with the daemon's Node flags (agent-node-args.ts, the same list as
 * the systemd unit's ExecStart), writes nothing to stderr (which the journal would keep), and
 * its stdout holds only its JSON log lines, none above info. Method: one agent from the demo's
 * configuration generator, run until its API answers and a few seconds more, then stopped with
 * SIGTERM as systemd does.
 */
import t from 'tap'
import { spawn } from 'node:child_process'
import { LocalCluster, compiledCli } from './cluster-harness.js'
import { AGENT_NODE_ARGS, agentSpawnArgs } from '../../agent/cli/agent-node-args.js'
import { sleep } from '../lib/wait.js'

t.test('an agent starts and stops without a word on stderr', async t => {
  const cluster = await LocalCluster.create(1, { seed: 3 })
  t.teardown(async () => await cluster.stop())
  const h = cluster.hosts[0]!
  // no STARLING_NODE_ARGS: exactly the daemon's flags
  const args = agentSpawnArgs(compiledCli(), ['agent', '--config', h.configFile], '')
  t.same(args.slice(0, AGENT_NODE_ARGS.length), [...AGENT_NODE_ARGS], 'started with the daemon flags')
  const p = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] })
  cluster.procs.set(h.name, p)
  let stdout = ''; let stderr = ''
  p.stdout.on('data', (d: Buffer) => { stdout += d.toString() })
  p.stderr.on('data', (d: Buffer) => { stderr += d.toString() })
  const exited = new Promise<number | null>(resolve => p.once('exit', code => resolve(code)))

  const readyMs = await cluster.waitViews([h.name], s => s.self.name === h.name, 30_000)
  t.not(readyMs, null, 'the agent came up and its API answers')
  await sleep(3000)
  p.kill('SIGTERM')
  t.equal(await exited, 0, 'a SIGTERM stop exits 0')

  t.equal(stderr, '', 'nothing on stderr')
  const lines = stdout.split('\n').filter(l => l !== '')
  t.ok(lines.length > 0, `the agent logged (${lines.length} lines)`)
  const bad: string[] = []
  for (const l of lines) {
    let level: unknown
    try { level = (JSON.parse(l) as { level?: unknown }).level } catch { bad.push(`not JSON: ${l}`); continue }
    if (level !== 'debug' && level !== 'info') bad.push(l)
  }
  t.same(bad, [], 'stdout: JSON log lines only, at debug or info')
})
