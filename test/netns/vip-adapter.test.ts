/**
 * The iproute2/arping VIP adapter on real network namespaces (needs root; fails with the reason
 * otherwise, never skips).
 *
 * Goal: the adapter's contract (idempotence, typed errors, deadlines) and what a move costs a
 * client: a planned move make-before-break versus break-before-make, and a takeover after the
 * owner's link goes down. Method: a test bed of three hosts and a client on one bridge; the
 * client pings the VIP every 5 ms while tcpdump on the client records each echo reply with the
 * responder's MAC, and tcpdump on the bridge records the gratuitous ARPs. Moves are 1.3 s apart
 * (Linux ignores a second change of a neighbour entry within locktime, 1 s).
 */
import t, { type Test } from 'tap'
import { createTestbed, namespacesWithPrefix, netnsUnavailable, type Testbed } from './testbed.js'
import { arpVip } from '../../agent/adapters/arp-vip.js'
import { silentLogger } from '../../agent/lib/logger.js'
import { VipError, type VipAddress } from '../../agent/ports/vip-adapter.js'
import { moveBreakBeforeMake, moveMakeBeforeBreak, takeOver } from './moves.js'
import { sleep } from '../lib/wait.js'

const PING_MS = 5
const BURST = { count: 3, intervalMs: 100 }

function median (xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b)
  const m = Math.floor(s.length / 2)
  return s.length === 0 ? NaN : s.length % 2 === 1 ? s[m] as number : ((s[m - 1] as number) + (s[m] as number)) / 2
}


const prefixes: string[] = []

async function withBed (t: Test, hosts: number): Promise<Testbed> {
  const bed = await createTestbed({ hosts, clients: 1 })
  prefixes.push(bed.prefix)
  t.teardown(async () => { await bed.destroy() })
  return bed
}

const why = await netnsUnavailable()
if (why !== null) {
  t.fail(`network namespace tests cannot run: ${why}`)
} else {
  t.test('adapter contract: idempotent add/remove, hasAddress, typed errors', async t => {
    const bed = await withBed(t, 1)
    const h = bed.hosts[0]
    if (h === undefined) throw new Error('no host')
    const ad = arpVip({ netns: h.netns })({ logger: silentLogger() })
    const vip: VipAddress = { address: bed.vip(0), prefixLength: 24, iface: 'eth0' }
    t.equal(await ad.hasAddress(vip), false)
    await ad.add(vip)
    await ad.add(vip)
    t.equal(await ad.hasAddress(vip), true, 'added (twice: idempotent)')
    const res = await ad.announce(vip, { count: 2, intervalMs: 50 })
    t.equal(res.sent, 2, 'a burst of two')
    await ad.remove(vip)
    await ad.remove(vip)
    t.equal(await ad.hasAddress(vip), false, 'removed (twice: idempotent)')

    const code = async (p: Promise<unknown>): Promise<string> => {
      try { await p; return 'resolved' } catch (err) {
        t.ok(err instanceof VipError, 'a VipError')
        return (err as VipError).code
      }
    }
    t.equal(await code(ad.add({ ...vip, iface: 'nope0' })), 'VIP_IFACE_NOT_FOUND')
    t.equal(await code(ad.announce(vip, { count: 1, intervalMs: 0 })), 'VIP_ADDRESS_NOT_HERE', 'announcing an absent address')
    t.equal(await code(ad.add({ ...vip, address: '10.0.0.300' })), 'VIP_INVALID_ARGUMENT')
    t.equal(await code(ad.announce(vip, { count: 0, intervalMs: 0 })), 'VIP_INVALID_ARGUMENT')
    const ghost = arpVip({ netns: `${bed.prefix}-ghost` })({ logger: silentLogger() })
    t.equal(await code(ghost.add(vip)), 'VIP_NETNS_NOT_FOUND')
    const missing = arpVip({ netns: h.netns, arpingCommand: 'arping-does-not-exist' })({ logger: silentLogger() })
    await ad.add(vip)
    t.equal(await code(missing.announce(vip, { count: 1, intervalMs: 0 })), 'VIP_COMMAND_FAILED', 'ip netns exec reports the missing tool')
    const missingIp = arpVip({ ipCommand: 'ip-does-not-exist' })({ logger: silentLogger() })
    t.equal(await code(missingIp.hasAddress(vip)), 'VIP_TOOL_MISSING')
    t.equal(await code(ad.announce(vip, { count: 3, intervalMs: 1000, timeoutMs: 300 })), 'VIP_TIMEOUT', 'a burst longer than its deadline')
    const ac = new AbortController()
    const p = ad.announce(vip, { count: 3, intervalMs: 200, signal: ac.signal })
    setTimeout(() => ac.abort(), 100)
    t.equal(await code(p), 'VIP_ABORTED')
    ad.stop()
    t.equal(await code(ad.hasAddress(vip)), 'VIP_ABORTED', 'a stopped adapter refuses calls')
    ad.start()
    t.equal(await ad.hasAddress(vip), true, 'and works again after start()')
  })

  t.test('planned moves: make-before-break versus break-before-make', async t => {
    const bed = await withBed(t, 3)
    const client = bed.clients[0]
    if (client === undefined) throw new Error('no client')
    const ads = bed.hosts.map(h => arpVip({ netns: h.netns })({ logger: silentLogger() }))
    const vip: VipAddress = { address: bed.vip(0), prefixLength: 24, iface: 'eth0' }
    const capture = await bed.startArpCapture()
    await ads[0]?.add(vip)
    const pinger = await bed.startPinger(client, vip.address, PING_MS)
    t.teardown(async () => { await pinger.stop(); await capture.stop() })
    await pinger.waitReply(0, 5000, bed.hosts[0]?.mac)

    const results: Record<'mbb' | 'bbm', Array<{ outageMs: number, lost: number, maxGapMs: number }>> = { mbb: [], bbm: [] }
    const plan: Array<[number, number, 'mbb' | 'bbm']> = [[0, 1, 'mbb'], [1, 2, 'bbm'], [2, 0, 'mbb'], [0, 1, 'bbm'], [1, 2, 'mbb'], [2, 0, 'bbm']]
    for (const [fromI, toI, mode] of plan) {
      await sleep(1300)
      const from = ads[fromI]; const to = ads[toI]; const toNode = bed.hosts[toI]
      if (from === undefined || to === undefined || toNode === undefined) throw new Error('bad plan')
      const t0 = Date.now()
      const move = mode === 'mbb' ? await moveMakeBeforeBreak(from, to, vip, BURST) : await moveBreakBeforeMake(from, to, vip, BURST)
      const reply = await pinger.waitReply(t0, 3000, toNode.mac)
      await move.burst
      await sleep(100)
      const o = pinger.outage(t0 - 20, reply.t)
      results[mode].push({ ...o, maxGapMs: Math.round(pinger.maxGapMs(t0 - 20, reply.t + 50)) })
      const neigh = await bed.neighbour(client, vip.address)
      t.equal(neigh.mac, toNode.mac, `${mode} h${fromI + 1}->h${toI + 1}: the client's neighbour entry is on the new owner's MAC`)
      t.equal(pinger.lastReply()?.mac, toNode.mac, 'replies come from the new owner')
      t.ok(capture.gratuitous(vip.address, toNode.mac, t0).length >= BURST.count, `tcpdump on the bridge saw the new owner's ${BURST.count} gratuitous ARPs`)
    }
    const mbb = median(results.mbb.map(r => r.outageMs))
    const bbm = median(results.bbm.map(r => r.outageMs))
    t.comment(`make-before-break: ${JSON.stringify(results.mbb)}`)
    t.comment(`break-before-make: ${JSON.stringify(results.bbm)}`)
    t.comment(`median client outage: make-before-break ${mbb.toFixed(1)} ms, break-before-make ${bbm.toFixed(1)} ms (ping every ${PING_MS} ms)`)
    t.ok(mbb <= 20, `make-before-break outage ${mbb.toFixed(1)} ms <= 20 ms`)
    t.ok(bbm < 1000, `break-before-make outage ${bbm.toFixed(1)} ms stays short (gratuitous ARP works)`)
  })

  t.test('failover: the owner\'s link goes down, another host takes over and announces', async t => {
    const bed = await withBed(t, 3)
    const client = bed.clients[0]
    const [h1, h2] = bed.hosts
    if (client === undefined || h1 === undefined || h2 === undefined) throw new Error('bed')
    const a1 = arpVip({ netns: h1.netns })({ logger: silentLogger() })
    const a2 = arpVip({ netns: h2.netns })({ logger: silentLogger() })
    const vip: VipAddress = { address: bed.vip(0), prefixLength: 24, iface: 'eth0' }
    const capture = await bed.startArpCapture()
    await a1.add(vip)
    const pinger = await bed.startPinger(client, vip.address, PING_MS)
    t.teardown(async () => { await pinger.stop(); await capture.stop() })
    await pinger.waitReply(0, 5000, h1.mac)
    await sleep(1300)
    const cutAt = Date.now()
    await bed.linkDown(h1)
    await sleep(200) // stands for failure detection, which the agent adds
    const decidedAt = Date.now()
    const move = await takeOver(a2, vip, BURST)
    const reply = await pinger.waitReply(decidedAt, 5000, h2.mac)
    await move.burst
    const afterDecisionMs = reply.t - decidedAt
    const garp = capture.gratuitous(vip.address, h2.mac, decidedAt)[0]
    t.comment(`first reply from the new owner ${afterDecisionMs.toFixed(1)} ms after the takeover decision (first gratuitous ARP at +${garp === undefined ? '?' : (garp.t - decidedAt).toFixed(1)} ms; ${(reply.t - cutAt).toFixed(0)} ms after the cut, of which 200 ms stand for detection)`)
    // Without gratuitous ARP the client would wait for its entry to go stale: tens of seconds.
    t.ok(afterDecisionMs < 1500, 'the VIP answers again soon after the takeover is applied')
    t.equal((await bed.neighbour(client, vip.address)).mac, h2.mac, 'the client\'s entry is on the new owner')
    t.ok(capture.gratuitous(vip.address, h2.mac, decidedAt).length >= 1, 'the takeover was announced on the bridge')
    // The old owner would have fenced itself; it removes before its link comes back.
    await a1.remove(vip)
    await bed.linkUp(h1)
    await sleep(300)
    t.equal(pinger.lastReply()?.mac, h2.mac, 'still answered by the new owner after the link is back')
  })

  t.test('the test beds left nothing behind', async t => {
    for (const p of prefixes) t.same(await namespacesWithPrefix(p), [], `no namespace left with prefix ${p}`)
  })
}
