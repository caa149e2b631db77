/**
 * Goal: nothing changes the cluster without authentication. A real agent runs in a network
 * namespace of its own; its control socket (mode 0660, a test group) takes changes from members
 * of that group only, and its TCP listener serves the read-only views to anyone but takes a
 * change only with the bearer token of node.apiTokenFile. Checked with the `starling` command
 * run as an unprivileged user (nobody), as a member of the socket's group, and from a client in
 * another network namespace; a text/plain POST (what a web page can make a browser send without
 * a preflight) is refused even with the token.
 * Needs root (namespaces, users): fails with the reason otherwise, never skips.
 */
import t, { type Test } from 'tap'
import { execFileSync } from 'node:child_process'
import { chmodSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { createTestbed, netnsUnavailable, type Testbed } from './testbed.js'
import { compiledCli } from '../integration/cluster-harness.js'
import { writeLocalCluster } from '../../agent/cli/demo.js'
import { agentSpawnArgs } from '../../agent/cli/agent-node-args.js'
import { sleep, waitFor } from './vip-agents.js'

const GROUP = 'stlapitest'
const why = process.getuid?.() !== 0 ? 'needs root (network namespaces, a test user and group)' : await netnsUnavailable()
if (why !== null) {
  t.fail(`control API test cannot run: ${why}`)
} else {
  await t.test('control API: socket for the group, token for TCP, JSON only', run)
}

async function run (tt: Test): Promise<void> {
  const cli = compiledCli()
  // The test runner's NODE_OPTIONS make every Node child write into the runner's own directory,
  // which another user may not: the other users' commands run without them.
  const asUser = ['env', '-u', 'NODE_OPTIONS', process.execPath]
  const bed: Testbed = await createTestbed({ hosts: 1, clients: 1 })
  const dir = mkdtempSync(path.join(os.tmpdir(), 'stl-api-'))
  tt.teardown(async () => {
    await bed.destroy()
    try { execFileSync('userdel', [GROUP], { stdio: 'ignore' }) } catch { /* not created */ }
    try { execFileSync('groupdel', [GROUP], { stdio: 'ignore' }) } catch { /* not created */ }
    rmSync(dir, { recursive: true, force: true })
  })
  try { execFileSync('userdel', [GROUP], { stdio: 'ignore' }) } catch { /* left by an earlier run or absent */ }
  try { execFileSync('groupdel', [GROUP], { stdio: 'ignore' }) } catch { /* absent */ }
  execFileSync('groupadd', ['--system', GROUP])
  execFileSync('useradd', ['--system', '--no-create-home', '--gid', GROUP, '--shell', '/usr/sbin/nologin', GROUP])
  const gid = Number(execFileSync('getent', ['group', GROUP], { encoding: 'utf8' }).split(':')[2])

  const [h] = await writeLocalCluster(dir, 1, { vmsPerHost: 2 })
  const node = bed.hosts[0]!
  const client = bed.clients[0]!
  const api = `${node.ip}:7946`
  const tokenFile = path.join(dir, 'api-token')
  const token = 'test-token-' + 'x'.repeat(24)
  writeFileSync(tokenFile, token + '\n', { mode: 0o640 })
  const cfg = JSON.parse(readFileSync(h!.configFile, 'utf8')) as Record<string, any>
  cfg.cluster.members[0].address = `${node.ip}:${h!.address.split(':')[1]!}`
  cfg.node.listen = cfg.cluster.members[0].address
  cfg.node.apiListen = api
  cfg.node.apiSocketGroup = GROUP
  cfg.node.apiTokenFile = tokenFile
  writeFileSync(h!.configFile, JSON.stringify(cfg, null, 2))
  // Other users must be able to reach the socket's directory: the socket's own mode is what is tested.
  chmodSync(dir, 0o755)
  chmodSync(h!.stateDir, 0o755)
  const socket = h!.apiSocket

  const agent = bed.spawnIn(node.netns, [process.execPath, ...agentSpawnArgs(cli, ['agent', '--config', h!.configFile])])
  let log = ''
  agent.stdout?.on('data', (b: Buffer) => { log += b.toString() })
  agent.stderr?.on('data', (b: Buffer) => { log += b.toString() })
  const ready = await waitFor(async () => (await bed.exec(client.netns, [process.execPath, cli, 'status', '--json', '--api', api])).code === 0, 30_000, 'the agent\'s API', 300)
    .then(() => true, () => false)
  tt.ok(ready, `the read-only status answers a client in another namespace (${client.netns})`)
  if (!ready) { tt.comment(log.slice(-3000)); return }

  const st = statSync(socket)
  tt.ok(st.isSocket(), 'the control socket exists')
  tt.equal((st.mode & 0o777).toString(8), '660', 'control socket mode 0660')
  tt.equal(st.gid, gid, `control socket group ${GROUP}`)

  // 1. From another namespace, over TCP, no token: 401 with what to do.
  const noTok = await bed.exec(client.netns, [process.execPath, cli, 'drain', 'host1', '--no-wait', '--api', api])
  tt.not(noTok.code, 0, 'drain over TCP without a token fails')
  tt.match(noTok.stderr, /HTTP 401.*Bearer/, `401 names the bearer token: ${noTok.stderr.trim()}`)
  // 2. A wrong token: 403.
  const wrong = await bed.exec(client.netns, ['env', 'STARLING_API_TOKEN=not-the-token-at-all', process.execPath, cli, 'drain', 'host1', '--no-wait', '--api', api])
  tt.not(wrong.code, 0, 'drain with a wrong token fails')
  tt.match(wrong.stderr, /HTTP 403.*wrong API token/, `403 for a wrong token: ${wrong.stderr.trim()}`)
  // 3. text/plain with the right token: refused (415), nothing queued.
  const plain = await bed.exec(client.netns, [process.execPath, '-e',
    `fetch('http://${api}/v1/drain', { method: 'POST', headers: { 'content-type': 'text/plain', authorization: 'Bearer ${token}' }, body: JSON.stringify({ host: 'host1' }) }).then(r => { console.log(r.status); })`])
  tt.equal(plain.stdout.trim(), '415', 'a text/plain POST is refused with 415 even with the token')
  // 4. The right token from another namespace: accepted.
  const good = await bed.exec(client.netns, [process.execPath, cli, 'drain', 'host1', '--no-wait', '--api', api, '--token-file', tokenFile])
  // --no-wait: the drain itself (one host, nowhere to go) is not what is tested here, the acceptance is.
  tt.equal(good.code, 0, `drain with the token accepted: ${good.stdout.trim()}${good.stderr.trim()}`)

  // 5. An unprivileged local user: the socket refuses the connection, TCP without a token says 401.
  const nobodySock = await bed.exec(node.netns, ['runuser', '-u', 'nobody', '--', ...asUser, cli, 'drain', 'host1', '--no-wait', '--socket', socket, '--api', api])
  tt.not(nobodySock.code, 0, 'nobody cannot drain through the control socket')
  tt.match(nobodySock.stderr, /permission denied on the control socket/, `clear refusal: ${nobodySock.stderr.trim()}`)
  const nobodyTcp = await bed.exec(node.netns, ['runuser', '-u', 'nobody', '--', ...asUser, cli, 'migrate', 'vm-1-1', '--to', 'host1', '--api', api])
  tt.not(nobodyTcp.code, 0, 'nobody cannot migrate over TCP')
  tt.match(nobodyTcp.stderr, /HTTP 401/, `401 over TCP: ${nobodyTcp.stderr.trim()}`)

  // 6. A member of the socket's group: accepted, and logged with who asked.
  const member = await bed.exec(node.netns, ['runuser', '-u', GROUP, '--', ...asUser, cli, 'drain', 'host1', '--no-wait', '--socket', socket, '--api', api])
  tt.equal(member.code, 0, `a member of ${GROUP} drains through the socket: ${member.stdout.trim()}${member.stderr.trim()}`)
  const uid = Number(execFileSync('id', ['-u', GROUP], { encoding: 'utf8' }).trim())
  await sleep(300)
  const lines = log.split('\n').filter(l => l.includes('control request /v1/drain')).map(l => (JSON.parse(l) as { fields: Record<string, unknown> }).fields)
  tt.ok(lines.some(l => l.via === 'unix' && l.uid === String(uid) && l.user === GROUP), `the change is logged with the caller (uid ${uid}, via the socket)`)
  tt.ok(lines.some(l => l.via === 'tcp' && typeof l.remote === 'string' && (l.remote as string).startsWith(client.ip)), 'the token change is logged with the remote address')
  tt.ok(log.split('\n').some(l => l.includes('refused') && l.includes('/v1/migrate')), 'refusals are logged')

  // 7. A token file that other users can read is no secret: the agent refuses to start with it.
  chmodSync(tokenFile, 0o644)
  const leaky = await bed.exec(node.netns, [process.execPath, cli, 'agent', '--config', h!.configFile], { timeoutMs: 20_000 })
  tt.equal(leaky.code, 2, 'an agent with a world-readable token file exits 2 at start')
  tt.match(leaky.stderr, /node\.apiTokenFile .* readable or writable by other users/, `and says why: ${leaky.stderr.trim()}`)
}
