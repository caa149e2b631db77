/**
 * The namespace test bed itself (needs root; fails with the reason otherwise).
 *
 * Goal: a bed is what it says (names, addresses, MACs, a bridge with forward_delay 0), its
 * traffic stays between its namespaces (nothing appears in the caller's namespace), tc shaping
 * works, and it removes everything it made: on destroy(), when its process is stopped by a
 * signal (exit handler), and, after a SIGKILL, at the next createTestbed (stale sweep).
 * Method: real beds; a child Node process (same loaders as this test) for the signal cases.
 */
import t from 'tap'
import { spawn } from 'node:child_process'
import { execFileSync } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import path from 'node:path'
import { createTestbed, namespacesWithPrefix, netnsUnavailable, sweepStaleTestbeds } from './testbed.js'

const here = path.dirname(fileURLToPath(import.meta.url))

function rootLinks (): string[] {
  return execFileSync('ip', ['-o', 'link', 'show'], { encoding: 'utf8' }).split('\n').map(l => l.split(':')[1]?.trim() ?? '').filter(x => x !== '').sort()
}

/** Starts a child process that makes a bed and prints its prefix, then waits. */
async function childBed (): Promise<{ prefix: string, kill: (sig: NodeJS.Signals) => Promise<void> }> {
  const script = path.join(here, 'testbed-child.fixture.ts')
  const child = spawn(process.execPath, [...process.execArgv, script], { stdio: ['ignore', 'pipe', 'inherit'] })
  const prefix = await new Promise<string>((resolve, reject) => {
    let out = ''
    const timer = setTimeout(() => reject(new Error('child did not make its bed')), 30_000)
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString()
      const m = /ready (\S+)/.exec(out)
      if (m !== null) { clearTimeout(timer); resolve(m[1] as string) }
    })
    child.once('exit', code => { clearTimeout(timer); reject(new Error(`child exited early (${String(code)})`)) })
  })
  return {
    prefix,
    kill: async (sig) => {
      const done = new Promise<void>(resolve => child.once('exit', () => resolve()))
      child.kill(sig)
      await done
    }
  }
}

const why = await netnsUnavailable()
if (why !== null) {
  t.fail(`network namespace tests cannot run: ${why}`)
} else {
  t.test('a bed: names, addresses, MACs, bridge; nothing in the caller\'s namespace', async t => {
    const before = rootLinks()
    const bed = await createTestbed({ hosts: 3, clients: 2, clientSysctls: { 'net.ipv4.conf.all.arp_accept': '1' } })
    t.teardown(async () => { await bed.destroy() })
    t.same(bed.hosts.map(h => [h.name, h.ip, h.mac]), [
      ['h1', '10.231.17.1', '02:53:54:00:00:01'], ['h2', '10.231.17.2', '02:53:54:00:00:02'], ['h3', '10.231.17.3', '02:53:54:00:00:03']
    ])
    t.same(bed.clients.map(c => c.ip), ['10.231.17.101', '10.231.17.102'])
    t.equal(bed.vip(1), '10.231.17.201')
    t.same(rootLinks(), before, 'no link was added to the caller\'s namespace')
    const fd = await bed.run(bed.bridgeNetns, ['cat', '/sys/class/net/br0/bridge/forward_delay'])
    t.equal(fd.trim(), '0', 'forward_delay 0')
    const c1 = bed.clients[0]; const h3 = bed.hosts[2]
    if (c1 === undefined || h3 === undefined) throw new Error('bed')
    t.equal((await bed.exec(c1.netns, ['ping', '-c', '1', '-W', '2', h3.ip])).code, 0, 'a client reaches a host over the bridge')
    t.equal((await bed.neighbour(c1, h3.ip)).mac, h3.mac)
    t.equal((await bed.run(c1.netns, ['sysctl', '-n', 'net.ipv4.conf.all.arp_accept'])).trim(), '1', 'client sysctls applied')
    const route = await bed.exec(c1.netns, ['ip', 'route', 'get', '8.8.8.8'])
    t.not(route.code, 0, 'no way out of the bed: a client has no default route')
    await bed.destroy()
    t.same(await namespacesWithPrefix(bed.prefix), [], 'destroy() removed every namespace')
  })

  t.test('tc shaping of a link', async t => {
    const bed = await createTestbed({ hosts: 1, clients: 1 })
    t.teardown(async () => { await bed.destroy() })
    const c = bed.clients[0]; const h = bed.hosts[0]
    if (c === undefined || h === undefined) throw new Error('bed')
    // Four 1400-byte pings sent at once: at 0.1 Mbit/s each takes 112 ms to leave.
    const maxRtt = async (): Promise<number> => {
      const out = await bed.run(c.netns, ['ping', '-n', '-c', '4', '-l', '4', '-s', '1400', '-W', '3', h.ip])
      return Number(/= [\d.]+\/[\d.]+\/([\d.]+)\//.exec(out)?.[1] ?? NaN)
    }
    await bed.shape(c, { rateMbit: 0.1 })
    const slow = await maxRtt()
    await bed.unshape(c)
    const fast = await maxRtt()
    t.ok(slow >= 200, `rate 0.1 Mbit/s on the client's link: worst rtt ${slow} ms`)
    t.ok(fast < 50, `without it: worst rtt ${fast} ms`)
    // Delay needs netem; this kernel may not have it, and the helper must say so rather than fail obscurely.
    try {
      await bed.shape(c, { delayMs: 40 })
      const out = await bed.run(c.netns, ['ping', '-n', '-c', '2', '-i', '0.2', h.ip])
      const avg = Number(/= [\d.]+\/([\d.]+)\//.exec(out)?.[1] ?? NaN)
      t.ok(avg >= 40, `netem delay 40 ms: rtt ${avg} ms`)
      await bed.unshape(c)
    } catch (err) {
      t.match((err as Error).message, /netem is not available in this kernel/, 'no netem here: the helper says so')
      t.comment((err as Error).message)
    }
  })

  t.test('a bed is removed when its process gets SIGTERM, and swept after SIGKILL', async t => {
    const a = await childBed()
    t.ok((await namespacesWithPrefix(a.prefix)).length >= 3, 'the child made its bed')
    await a.kill('SIGTERM')
    t.same(await namespacesWithPrefix(a.prefix), [], 'the exit handler removed it')
    const b = await childBed()
    await b.kill('SIGKILL')
    t.ok((await namespacesWithPrefix(b.prefix)).length >= 3, 'SIGKILL leaves it behind')
    const swept = await sweepStaleTestbeds()
    t.ok(swept.length >= 3, 'the sweep found it')
    t.same(await namespacesWithPrefix(b.prefix), [], 'and removed it')
  })
}
