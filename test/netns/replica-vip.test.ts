/**
 * A replica of a stateless VM behind its VIP, on real agents in network namespaces with real
 * QEMU guests (TCG) and the kernel's NAT (needs root, QEMU and a built dist/; fails with the
 * reason otherwise).
 *
 * Goal: `starling replicate g1 --to h2` on the host that runs g1 boots a second copy of g1 on
 * h2 from its definition, and the host carrying g1's VIP splits new connections between the two:
 * a client that asks http://VIP:8080/ gets answers from both boots (two boot tokens), about half
 * each, with no failed request. `starling replicate --retire g1` ends the split at once (every
 * later answer comes from the original) and then stops the replica. An agent restarted while its
 * VM has a replica splits again from its journal.
 *
 * Method: testbed.ts (three host namespaces and a client on a bridge), one agent per host
 * (production core profile, the QEMU driver), the test guest with a NIC (QEMU user networking
 * forwards port 8080 of every address of its host to the guest's httpd, which answers with a
 * token made at boot). VIP `app` bound to g1. Forwarding is switched on in the host namespaces,
 * as the operator must on hosts carrying replicated VIPs. The client asks every 100 ms, each on a
 * new connection.
 * Run: npm run build && npx tap test/netns/replica-vip.test.ts  (1-2 minutes; two guest boots)
 */
import t from 'tap'
import { readFileSync } from 'node:fs'
import path from 'node:path'
import { createTestbed, netnsUnavailable } from './testbed.js'
import { AgentCluster } from './agent-cluster.js'
import { sleep, waitFor } from './vip-agents.js'
import { compiledCli } from '../integration/cluster-harness.js'
import { buildTestGuest } from '../guest/guest.js'
import { GUEST_PORT, HttpProber, netGuest } from './ha-vip.js'

const why = await netnsUnavailable()
let cli: string | null = null
let guestDir: string | null = null
try { cli = compiledCli() } catch (err) { t.fail((err as Error).message) }
try { guestDir = buildTestGuest() } catch (err) { t.fail(`QEMU or the test guest is missing: ${(err as Error).message}`) }
if (why !== null) {
  t.fail(`network namespace tests cannot run: ${why}`)
} else if (cli !== null && guestDir !== null) {
  const cliPath = cli
  const dir = guestDir
  t.test('a replica behind the VIP takes half of the new connections, and retiring it gives them back', async t => {
    const bed = await createTestbed({ hosts: 3, clients: 1 })
    let c: AgentCluster | null = null
    let prober: HttpProber | null = null
    t.teardown(async () => {
      if (!t.passing() && c !== null) {
        for (const h of c.hosts) {
          const lines = readFileSync(h.logFile, 'utf8').split('\n').filter(l => /replica|split|error|fatal|exited/i.test(l))
          t.comment(`${h.name}'s log (replica lines, last 20):\n${lines.slice(-20).join('\n')}`)
        }
      }
      prober?.stop()
      if (c !== null) await c.destroy()
      await bed.destroy()
    })
    const address = bed.vip(0)
    const guest = netGuest(dir)
    c = await AgentCluster.create({
      bed,
      cli: cliPath,
      productionCore: true,
      vips: [{ id: 'app', address: `${address}/24`, iface: 'eth0', vm: 'g1' }],
      qemu: { vmsOn: { h1: [{ id: 'g1', ...guest }] } },
      migration: { autoBalance: false },
      replication: { mode: 'off', vms: [{ id: 'g1', ...guest }] }
    })
    const cl = c
    for (const h of bed.hosts) await bed.run(h.netns, ['sysctl', '-qw', 'net.ipv4.ip_forward=1'])
    const api = async (host: string, args: string[]): Promise<{ code: number | null, stdout: string, stderr: string }> =>
      await bed.exec(cl.host(host).node.netns, [process.execPath, cliPath, ...args, '--api', '127.0.0.1:7946', '--socket', path.join(cl.host(host).stateDir, 'control.sock')], { timeoutMs: 15_000 })
    const replicas = async (host: string): Promise<Array<{ id: string, role: string, state: string, host: string }>> => {
      const r = await api(host, ['replicas', '--json'])
      if (r.code !== 0) return []
      try { return JSON.parse(r.stdout) as Array<{ id: string, role: string, state: string, host: string }> } catch { return [] }
    }
    const splitRules = async (host: string): Promise<string[]> =>
      (await bed.exec(cl.host(host).node.netns, ['iptables', '-t', 'nat', '-S', 'STARLING-SPLIT'])).stdout.split('\n').filter(l => l.startsWith('-A'))

    c.startAll()
    prober = HttpProber.start(bed, bed.clients[0]!, address, GUEST_PORT)
    const first = await prober.waitGuest(Date.now(), 180_000)
    const t1 = first.body
    t.pass(`g1 answers at ${address}:${GUEST_PORT} from h1 (${t1})`)
    t.same(await splitRules('h1'), [], 'no split before any replica')

    // h1 must know h2 as a member first (a request naming an unknown host is refused).
    await waitFor(async () => {
      const r = await api('h1', ['members', '--json'])
      try { return r.code === 0 && (JSON.parse(r.stdout) as Array<{ state: string }>).filter(m => m.state === 'alive').length === 3 } catch { return false }
    }, 60_000, 'h1 to see three alive members')
    const asked = await api('h1', ['replicate', 'g1', '--to', 'h2'])
    t.equal(asked.code, 0, `starling replicate g1 --to h2: ${asked.stdout.trim()}${asked.stderr.trim()}`)
    const h2 = cl.host('h2').node.ip
    t.equal((await replicas('h1')).find(r => r.role === 'origin')?.state, 'running', 'the command returned once the replica runs')
    t.not(cl.qemuPid('h2', 'g1-replica'), null, 'h2 runs a QEMU for g1-replica')
    t.equal(cl.qemuPid('h1', 'g1-replica'), null, 'h1 does not')
    t.equal(cl.qemuPid('h3', 'g1-replica'), null, 'nor h3')
    const rules = await splitRules('h1')
    t.ok(rules.length === 1 && rules[0]!.includes(`--to-destination ${h2}`) && rules[0]!.includes(`${address}/32`), `h1 splits ${address} to ${h2}: ${rules.join(' | ')}`)
    const hostRec = (await replicas('h2')).find(r => r.role === 'host')
    t.equal(hostRec?.state, 'running', 'h2 journals it as a replica it hosts')
    const metrics = (await bed.exec(cl.host('h2').node.netns, [process.execPath, '-e', "fetch('http://127.0.0.1:7946/metrics').then(r => r.text()).then(t => process.stdout.write(t))"], { timeoutMs: 10_000 })).stdout
    t.match(metrics, /agent_replicas\{role="host",state="running"\} 1/, 'h2\'s /metrics counts it')

    // The replica boots (TCG: seconds), then answers with its own token.
    const second = await prober.waitGuest(Date.now(), 120_000, t1)
    const t2 = second.body
    t.not(t2, t1, `a second boot answers at the VIP too (${t2})`)
    const from = Date.now()
    await sleep(8000)
    const window = prober.answers.filter(a => a.sentMs >= from && a.sentMs < from + 8000)
    const n1 = window.filter(a => a.ok && a.body === t1).length
    const n2 = window.filter(a => a.ok && a.body === t2).length
    const failed = window.filter(a => !a.ok).length
    t.ok(window.length >= 40, `${window.length} requests in 8 s`)
    t.equal(failed, 0, `no failed request while split (${failed}${failed > 0 ? `: ${[...new Set(window.filter(a => !a.ok).map(a => a.err))].join(', ')}` : ''})`)
    const share = n2 / Math.max(1, n1 + n2)
    t.ok(share > 0.25 && share < 0.75, `the replica took ${n2} of ${n1 + n2} connections (${Math.round(share * 100)} %; 50 % asked)`)

    // A restarted origin splits again from its journal (it empties the chain at start-up, before
    // its API answers, so a rule seen once the API answers was put back by the new agent).
    await cl.kill9('h1')
    cl.start('h1')
    await waitFor(async () => (await replicas('h1')).some(r => r.role === 'origin' && r.state === 'running'), 60_000, 'the restarted agent to answer with its journal')
    await waitFor(async () => (await splitRules('h1')).length === 1, 30_000, 'the restarted agent to split again')
    t.pass('the restarted origin restored the split from its journal')
    t.equal((await replicas('h1')).find(r => r.role === 'origin')?.state, 'running', 'and its record')

    const retire = await api('h1', ['replicate', '--retire', 'g1'])
    t.equal(retire.code, 0, `starling replicate --retire g1: ${retire.stdout.trim()}${retire.stderr.trim()}`)
    await waitFor(async () => (await splitRules('h1')).length === 0, 10_000, 'the split to end')
    const ended = Date.now()
    await waitFor(() => cl.qemuPid('h2', 'g1-replica') === null, 30_000, 'the replica to stop')
    t.pass(`the replica on h2 stopped ${Date.now() - ended} ms after the split ended`)
    await waitFor(async () => (await replicas('h1')).length === 0 && (await replicas('h2')).length === 0, 20_000, 'both journals to forget it')
    await sleep(3000)
    const after = prober.answers.filter(a => a.sentMs >= ended + 500)
    t.ok(after.length >= 20, `${after.length} requests after the retirement`)
    t.ok(after.every(a => a.ok && a.body === t1), `all answered by the original (${after.filter(a => a.ok && a.body === t1).length}/${after.length})`)
    t.not(cl.qemuPid('h1', 'g1'), null, 'the original still runs on h1')
  })
}
