/**
 * Goal: a start-up that fails half-way stops what had started, newest first (agent/lib/lifecycle.ts
 * in agent/main.ts): the store's lock and the mesh's port are free again, and the process ends by
 * itself. Method: the control API's TCP port is taken before the agent starts, so the start fails
 * after the store, the driver and the tick loop (with its Hyperswarm socket) have started; a
 * child process runs the agent in-process and reports what is still held after the failure.
 */
import t from 'tap'
import net from 'node:net'
import path from 'node:path'
import { spawn } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { LocalCluster } from './cluster-harness.js'

const here = path.dirname(fileURLToPath(import.meta.url))

t.test('a start-up that fails at the control API releases the store and the mesh port, and exits', async t => {
  const cluster = await LocalCluster.create(1, { seed: 11 })
  t.teardown(async () => await cluster.stop())
  const h = cluster.hosts[0]!
  const api = h.apiListen.split(':')
  const blocker = net.createServer()
  await new Promise<void>((resolve, reject) => { blocker.once('error', reject); blocker.listen(Number(api[1]), api[0], () => resolve()) })
  t.teardown(() => { blocker.close() })

  const child = spawn(process.execPath, [...process.execArgv, path.join(here, 'start-unwind.fixture.ts'), h.configFile, h.stateDir, h.address], { stdio: ['ignore', 'pipe', 'pipe'] })
  let stdout = ''; let stderr = ''
  child.stdout.on('data', (d: Buffer) => { stdout += d.toString() })
  child.stderr.on('data', (d: Buffer) => { stderr += d.toString() })
  const code = await new Promise<number | null | 'hung'>(resolve => {
    const timer = setTimeout(() => { child.kill('SIGKILL'); resolve('hung') }, 60_000)
    child.once('exit', c => { clearTimeout(timer); resolve(c) })
  })
  t.equal(code, 0, `the process ended by itself: nothing left running after the failed start (stderr: ${stderr.slice(-2000)})`)
  const m = /RESULT (.*)/.exec(stderr)
  t.ok(m !== null, 'the child reported')
  const r = JSON.parse(m?.[1] ?? '{}') as { started?: boolean, error?: string, storeFree?: boolean, storeError?: string, meshPortFree?: boolean }
  t.notOk(r.started, 'the start failed')
  t.match(r.error ?? '', /EADDRINUSE|address already in use/i, `with the control API's reason (${r.error ?? ''})`)
  t.equal(r.storeFree, true, `the state directory's store can be opened again (${r.storeError ?? 'free'})`)
  t.equal(r.meshPortFree, true, 'the mesh port is free again')
  const stops = stdout.split('\n').filter(l => /agent stopping|stopping .* failed/.test(l))
  t.same(stops, [], 'no stop failed')
})
