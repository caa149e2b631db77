/**
 * Virtual IPs with real agents (needs root and a built dist/; fails with the reason otherwise).
 *
 * Goal: the VIP wiring end to end, as an operator and a client see it: agents claim a floating
 * VIP and a VM-bound one, `starling vips` shows owners and announcements, an operator move hands
 * the VIP over without a client outage worth the name, a SIGKILLed owner's VIP answers again
 * from another host (the unit's stop hook removes the old address), and a partition never leaves
 * two reachable hosts carrying the VIP while the client ends on the right MAC after the heal.
 *
 * Method: three host namespaces and a client on a bridge (testbed.ts); one `starling agent`
 * process per host namespace, meshed over the bridge addresses, 20 ms ticks and fast failure
 * detection (agent-cluster.ts FAST_CORE); simulated VMs (vm-app runs on h2). The client pings the
 * floating VIP every 5 ms; tcpdump on the client records replies with the responder's MAC and
 * tcpdump on the bridge records gratuitous ARPs. Address holders are read with `ip -n`.
 */
import t from 'tap'
import { createTestbed, netnsUnavailable } from './testbed.js'
import { AgentCluster } from './agent-cluster.js'
import { killOwner, plannedMove, sleep, waitFor, waitOwner } from './vip-agents.js'
import { compiledCli } from '../integration/cluster-harness.js'

const PING_MS = 5

const why = await netnsUnavailable()
let cli: string | null = null
try { cli = compiledCli() } catch (err) { t.fail((err as Error).message) }
if (why !== null) {
  t.fail(`network namespace tests cannot run: ${why}`)
} else if (cli !== null) {
  const cliPath = cli
  t.test('VIPs with one agent process per host namespace', async t => {
    const bed = await createTestbed({ hosts: 3, clients: 1 })
    t.teardown(async () => { await bed.destroy() })
    const client = bed.clients[0]!
    const web = bed.vip(0)
    const app = bed.vip(1)
    const c = await AgentCluster.create({
      bed,
      cli: cliPath,
      vips: [
        { id: 'web', address: `${web}/24`, iface: 'eth0', hosts: ['h1', 'h2', 'h3'] },
        { id: 'app', address: `${app}/24`, iface: 'eth0', vm: 'vm-app' }
      ],
      vmsOn: { h2: ['vm-app'] },
      // 20 ms ticks: second burst after 1.5 s (past the client's 1 s locktime), handoff bound 1 s.
      vip: { burstCount: 3, burstIntervalMs: 100, secondBurstTicks: 75, handoffTimeoutTicks: 50, handoffReserveTicks: 50 }
    })
    t.teardown(async () => { await c.destroy() })
    const capture = await bed.startArpCapture()
    t.teardown(async () => { await capture.stop() })

    // Group VIPs are not preempted, so whoever claims first keeps the VIP, and a host claims only
    // when it sees a majority and no earlier group member alive. Start h1 and h2 alone: h2 can
    // only see a majority with h1 alive, so h1 claims. (All three at once let h2 win on a loaded
    // machine when h1 started last.)
    c.start('h1')
    c.start('h2')
    const formed = await waitOwner(c, web, 'h1', 30_000)
    c.start('h3')
    await waitFor(async () => { try { await c.vips('h3'); return true } catch { return false } }, 30_000, 'h3 to answer')
    await waitOwner(c, app, 'h2', 10_000)
    t.pass(`web on h1 (first of its group), app on h2 (runs vm-app), ${formed} ms after start`)

    // `starling vips`: owner and last announcement as the owner and another host see them.
    await waitFor(async () => (await c.vips('h3')).vips.every(v => v.owner !== null), 15_000, 'h3 to know both owners')
    const fromH3 = await c.vips('h3')
    t.same(fromH3.vips.map(v => [v.vip, v.ownerName]), [['web', 'h1'], ['app', 'h2']], 'h3 sees the owners')
    const fromH1 = await c.vips('h1')
    const w1 = fromH1.vips.find(v => v.vip === 'web')!
    t.equal(w1.role, 'owner')
    t.ok(w1.lastAnnounceAtMs !== null && fromH1.nowMs - w1.lastAnnounceAtMs < 60_000, 'the owner shows its last announcement')
    const text = await c.vipsText('h1')
    t.match(text, /web\s+10\.\d+\.\d+\.200\/24\s+eth0\s+group of 3\s+h1 \(self\)\s+owner\s+\d{4}-/, 'text table')
    t.comment(text)

    const pinger = await bed.startPinger(client, web, PING_MS)
    t.teardown(async () => { await pinger.stop() })
    await pinger.waitReply(Date.now(), 5000, c.host('h1').node.mac)
    await sleep(1200) // past the client's locktime for the entry it just made

    // Planned move, asked on h3 (not the owner: forwarded to h1).
    const mv = await plannedMove(c, bed, pinger, 'web', web, 'h1', 'h2', 'h3')
    t.comment(`planned move h1 -> h2: ${JSON.stringify(mv)}`)
    t.equal(mv.neighbourMac, mv.newOwnerMac, 'the client\'s neighbour entry is on the new owner\'s MAC')
    t.ok(mv.outageMs <= 100, `planned move outage ${mv.outageMs} ms (${mv.lost} pings lost)`)
    t.ok(capture.gratuitous(web, c.host('h2').node.mac).length > 0, 'tcpdump on the bridge: gratuitous ARP from h2 for the VIP')
    await sleep(2000) // second burst done; the old owner removed long ago

    // Owner's agent killed: the stop hook removes its address; the majority takes over.
    const fo = await killOwner(c, bed, pinger, 'web', web, 'h2')
    t.comment(`kill -9 of the owner's agent: ${JSON.stringify(fo)}`)
    t.not(fo.newOwner, 'h2')
    t.ok(fo.detectionMs !== null, `death detected in ${String(fo.detectionMs)} ms`)
    t.ok(fo.failoverMs < 10_000, `a new owner answers ${fo.failoverMs} ms after the kill`)
    t.equal(fo.neighbourMac, fo.newOwnerMac, 'the client\'s neighbour entry is on the new owner\'s MAC')
    t.ok(capture.gratuitous(web, fo.newOwnerMac, Date.now() - 5000).length > 0, 'tcpdump: the new owner announced')
    // app follows vm-app, which ran on h2 only: no other host may take it (the VM is not there).
    t.same(await c.holders(app), [], 'app is carried by nobody while vm-app\'s host is down')

    // h2 comes back (start-up removal first, then it takes app again; web stays where it is).
    c.start('h2')
    await waitOwner(c, app, 'h2', 20_000)
    t.same(await c.holders(web), [fo.newOwner], 'no preemption: web stays on its owner after h2 returns')
    await sleep(1500)

    // Partition: unplug the owner. It fences (removes the address); the other two take over.
    const owner = fo.newOwner
    const ownerNode = c.host(owner).node
    const cutAt = Date.now()
    let doubles = 0
    let samples = 0
    let watching = true
    let ownerCut = false
    const watch = (async () => {
      while (watching) {
        const hs = await c.holders(web)
        // The unplugged host cannot answer the client: count reachable carriers only.
        const reachable = hs.filter(h => h !== owner || !ownerCut)
        samples++
        if (reachable.length > 1) doubles++
        await sleep(20)
      }
    })()
    ownerCut = true
    await bed.linkDown(ownerNode)
    const fencedMs = await waitFor(async () => !(await c.holders(web)).includes(owner), 10_000, `${owner} to fence itself`)
    const taken = await waitFor(async () => (await c.holders(web)).filter(h => h !== owner).length === 1, 15_000, 'the majority to take over')
    const newOwner = (await c.holders(web)).find(h => h !== owner)!
    t.comment(`partition of ${owner}: fenced after ${fencedMs} ms, ${newOwner} carries the VIP after ${taken + fencedMs} ms`)
    await pinger.waitReply(cutAt, 10_000, c.host(newOwner).node.mac)
    await sleep(1000)
    // Heal.
    const healAt = Date.now()
    await bed.linkUp(ownerNode)
    ownerCut = false
    await sleep(3000)
    watching = false
    await watch
    t.equal(doubles, 0, `never two reachable carriers (${samples} samples through the partition)`)
    const after = await c.holders(web)
    t.same(after, [newOwner], 'after the heal one host carries the VIP')
    const last = pinger.replies.filter(r => r.t > Date.now() - 1000)
    t.ok(last.length > 0 && last.every(r => r.mac === c.host(newOwner).node.mac), 'the client\'s last replies all come from the owner')
    t.equal((await bed.neighbour(client, web)).mac, c.host(newOwner).node.mac, 'the client ends on the owner\'s MAC')
    t.ok(capture.gratuitous(web, c.host(newOwner).node.mac, healAt).length > 0, 'tcpdump: the owner announced again after the heal')
    const v = await c.vips(owner)
    t.equal(v.vips.find(x => x.vip === 'web')?.ownerName, newOwner, `the healed host knows ${newOwner} owns web`)
  })
}
