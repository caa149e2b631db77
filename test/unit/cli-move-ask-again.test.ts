// Goal: `starling plan apply` and `starling migrate` do not give up on a move whose request was
// lost on its way. The
// agent the CLI talks to forwards a move to the host that runs the VM over the mesh; a frame lost
// there leaves nothing to wait for, and the CLI used to report the move refused after 30 s. Method:
// a control API on loopback (the agent's endpoints the CLI reads and posts to) that drops the
// first migrate request and carries out the second: the VM then shows on its target. Runs the
// built CLI (dist/, which npm test builds). `starling migrate` of a VM on another host follows it
// by the reports the same way (it used to stop after 5 s saying the request was forwarded).
import t, { type Test } from 'tap'
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import type { AddressInfo } from 'node:net'
import { runCli } from '../integration/cluster-harness.js'

function member (name: string, vms: Array<{ id: string, state: string }>): unknown {
  return { id: `${name}-id`, name, state: 'alive', incarnation: 1, report: { seq: 1, cpuUtil: 0.5, forecastCpu: [], vms } }
}

interface Fake { addr: string, tokenFile: string, posts: Array<Record<string, unknown>> }

/** A control API as host2's agent serves it: host1 runs vm-a; the first migrate request is lost, the second moves vm-a to host3. */
async function fakeAgent (t: Test): Promise<Fake> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'starling-cli-move-'))
  t.teardown(() => { rmSync(dir, { recursive: true, force: true }) })
  const tokenFile = path.join(dir, 'token')
  writeFileSync(tokenFile, 'secret-token-for-the-test\n', { mode: 0o600 })
  const posts: Array<Record<string, unknown>> = []
  let movedAt: number | null = null
  const step = {
    step: 1, vm: 'vm-a', from: 'host1-id', to: 'host3-id', fromName: 'host1', toName: 'host3',
    reason: { kind: 'overload', value: 0.95, threshold: 0.9, text: 'overload: 95 % now' },
    source: { before: { cpu: 0.95, memMiB: 1024 }, after: { cpu: 0.5, memMiB: 512 } },
    target: { before: { cpu: 0.4, memMiB: 512 }, after: { cpu: 0.85, memMiB: 1024 } },
    cost: { bytes: 1, seconds: 1, pauseMs: 1 }, rating: 3, after: []
  }
  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    let body = ''
    req.on('data', (c: Buffer) => { body += c.toString() })
    req.on('end', () => {
      const json = (x: unknown): void => { res.writeHead(200, { 'content-type': 'application/json' }); res.end(JSON.stringify(x)) }
      if (req.url === '/v1/plan') { json({ self: { id: 'host2-id', name: 'host2' }, nowMs: Date.now(), steps: [step], emptied: [], final: [] }); return }
      if (req.url === '/v1/status') {
        const moved = movedAt !== null && Date.now() - movedAt > 600
        json({ cluster: 'test', self: { id: 'host2-id', name: 'host2' }, core: {}, runtime: {}, members: [member('host1', moved ? [] : [{ id: 'vm-a', state: 'running' }]), member('host2', []), member('host3', moved ? [{ id: 'vm-a', state: 'running' }] : [])] })
        return
      }
      if (req.url === '/v1/migrate' && req.method === 'POST') {
        t.equal(req.headers.authorization, 'Bearer secret-token-for-the-test', 'the request carries the token')
        posts.push(JSON.parse(body) as Record<string, unknown>)
        // The first request is accepted and lost; the second one moves the VM.
        if (posts.length === 2) movedAt = Date.now()
        json({ accepted: true })
        return
      }
      res.writeHead(404); res.end('{}')
    })
  })
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => { server.close() })
  return { addr: `127.0.0.1:${(server.address() as AddressInfo).port}`, tokenFile, posts }
}

t.test('plan apply: a move whose first request is lost is asked for again and applied', async t => {
  const f = await fakeAgent(t)
  // The built CLI (npm test builds it first), as an operator runs it.
  const { code, out: text } = await runCli(['plan', 'apply', '--api', f.addr, '--token-file', f.tokenFile], 60_000)
  t.comment(text.trim())
  t.equal(code, 0, 'plan apply succeeds')
  t.equal(f.posts.length, 2, 'the move was asked for twice')
  t.same(f.posts, [{ vm: 'vm-a', to: 'host3' }, { vm: 'vm-a', to: 'host3' }], 'the step\'s VM and target, both times')
  t.match(text, /has not started after \d+ s; asking again/, 'it says it asks again')
  t.match(text, /1 of 1 step\(s\) applied/)
})

t.test('migrate: a VM on another host is followed there and asked for again', async t => {
  for (const to of ['host3', null]) {
    const f = await fakeAgent(t)
    const { code, out: text } = await runCli(['migrate', 'vm-a', ...(to !== null ? ['--to', to] : []), '--api', f.addr, '--token-file', f.tokenFile], 60_000)
    t.comment(text.trim())
    t.equal(code, 0, `migrate ${to === null ? 'without a target' : `--to ${to}`} succeeds`)
    t.same(f.posts, to === null ? [{ vm: 'vm-a' }, { vm: 'vm-a' }] : [{ vm: 'vm-a', to }, { vm: 'vm-a', to }], 'asked for twice')
    t.match(text, /requested from host1, which runs it/)
    t.match(text, /asking again/)
    t.match(text, /vm-a runs on host3/)
  }
})
