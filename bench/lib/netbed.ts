/**
 * Two emulated hypervisor hosts for migration measurements: a source and a destination network
 * namespace on one bridge (the namespace test bed of test/netns/testbed.ts), the link shaped with
 * a tc token bucket (tbf) on both hosts' eth0, and a QEMU launcher per host that runs QEMU inside that
 * host's namespace (a small wrapper script given to the QEMU driver as its binary:
 * `exec ip netns exec <ns> qemu-system-x86_64 "$@"`; exec keeps the pid, so the driver's
 * process handling, die-with-agent included, is unchanged).
 *
 * Also: a TCP goodput probe across the link, and tc's byte counter of a host's egress, which
 * counts every byte put on the link (headers included).
 */
import { execFile } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import { createTestbed, netnsUnavailable, type Testbed, type TestNode } from '../../test/netns/testbed.js'

export interface MigrationLink {
  readonly bed: Testbed
  readonly source: TestNode
  readonly destination: TestNode
  /** Shaped rate, bits/s. */
  readonly rateBitsPerS: number
  /** Path of an executable that runs QEMU inside `node`'s namespace with the given arguments. */
  qemuLauncher (node: TestNode): string
  /** Bytes sent by `node`'s eth0 so far (tc qdisc counter). */
  txBytes (node: TestNode): Promise<number>
  /** Measures TCP goodput from source to destination for about `ms`, bytes/s. */
  probeGoodput (ms?: number): Promise<number>
  destroy (): Promise<void>
}

export { netnsUnavailable }

function sh (argv: string[], timeoutMs = 15_000): Promise<string> {
  const [cmd, ...args] = argv
  return new Promise((resolve, reject) => {
    execFile(cmd ?? 'false', args, { timeout: timeoutMs, killSignal: 'SIGKILL' }, (err, stdout, stderr) => {
      if (err !== null) reject(new Error(`${argv.join(' ')}: ${String(stderr).trim() || err.message}`))
      else resolve(String(stdout))
    })
  })
}

/** Receiver: accepts one connection, prints the bytes received at each 100 ms tick. */
const RECEIVER = `
const net = require('node:net')
const srv = net.createServer(s => {
  let n = 0
  s.on('data', d => { n += d.length })
  const t = setInterval(() => process.stdout.write(performance.now().toFixed(1) + ' ' + n + '\\n'), 100)
  s.on('close', () => { clearInterval(t); srv.close() })
  s.on('error', () => {})
})
srv.listen(Number(process.argv[2]), process.argv[1], () => process.stdout.write('listening\\n'))
`
/** Sender: writes as fast as the socket takes it for argv[3] ms. */
const SENDER = `
const net = require('node:net')
const buf = Buffer.alloc(1 << 20, 7)
const s = net.connect(Number(process.argv[2]), process.argv[1], () => {
  const end = Date.now() + Number(process.argv[3])
  const pump = () => { while (Date.now() < end) { if (!s.write(buf)) { s.once('drain', pump); return } } s.end() }
  pump()
})
s.on('error', e => { console.error(String(e)); process.exit(1) })
`

export interface MigrationLinkInit {
  /** Link rate, Mbit/s. */
  rateMbit: number
  /** Longest a packet may wait in the shaper's queue, ms (tbf `latency`; sets the queue size). */
  queueMs: number
  /** First three octets of the test subnet. @default '10.231.42' */
  subnet?: string
  /** Directory for the QEMU launcher scripts. */
  tmpDir: string
}

export async function createMigrationLink (opts: MigrationLinkInit): Promise<MigrationLink> {
  const bed = await createTestbed({ hosts: 2, clients: 0, subnet: opts.subnet ?? '10.231.42' })
  try {
    const [source, destination] = bed.hosts
    if (source === undefined || destination === undefined) throw new Error('test bed without two hosts')
    for (const h of bed.hosts) {
      // A token bucket on each host's egress: the link's rate, a 256 KiB burst (about 2 ms at
      // 1 Gbit/s, above a 64 KiB GSO packet so that none is split) and a queue of queueMs.
      await bed.run(h.netns, ['tc', 'qdisc', 'replace', 'dev', 'eth0', 'root', 'tbf', 'rate', `${opts.rateMbit}mbit`, 'burst', '256kb', 'latency', `${opts.queueMs}ms`])
    }
    const launchers = new Map<string, string>()
    for (const h of bed.hosts) {
      const file = path.join(opts.tmpDir, `qemu-in-${h.name}.sh`)
      fs.writeFileSync(file, `#!/bin/sh\nexec ip netns exec ${h.netns} qemu-system-x86_64 "$@"\n`, { mode: 0o755 })
      launchers.set(h.name, file)
    }
    const link: MigrationLink = {
      bed,
      source,
      destination,
      rateBitsPerS: opts.rateMbit * 1e6,
      qemuLauncher (node) {
        const f = launchers.get(node.name)
        if (f === undefined) throw new Error(`no launcher for ${node.name}`)
        return f
      },
      async txBytes (node) {
        const out = await sh(['ip', 'netns', 'exec', node.netns, 'tc', '-s', '-j', 'qdisc', 'show', 'dev', 'eth0'])
        const rows = JSON.parse(out) as Array<{ root?: boolean, bytes?: number }>
        const root = rows.find(r => r.root === true) ?? rows[0]
        return Number(root?.bytes ?? NaN)
      },
      async probeGoodput (ms = 1500) {
        const port = 47000 + Math.floor(Math.random() * 1000)
        const rx = bed.spawnIn(destination.netns, ['node', '-e', RECEIVER, destination.ip, String(port)])
        const samples: Array<{ t: number, n: number }> = []
        let buf = ''
        const listening = new Promise<void>((resolve, reject) => {
          const timer = setTimeout(() => reject(new Error('goodput receiver did not start')), 10_000)
          rx.stdout?.on('data', (d: Buffer) => {
            buf += d.toString()
            let i: number
            while ((i = buf.indexOf('\n')) >= 0) {
              const line = buf.slice(0, i)
              buf = buf.slice(i + 1)
              if (line === 'listening') { clearTimeout(timer); resolve(); continue }
              const [t, n] = line.split(' ')
              samples.push({ t: Number(t), n: Number(n) })
            }
          })
        })
        const closed = new Promise<void>(resolve => rx.once('exit', () => resolve()))
        await listening
        await sh(['ip', 'netns', 'exec', source.netns, 'node', '-e', SENDER, destination.ip, String(port), String(ms)], ms + 15_000)
        await Promise.race([closed, new Promise(resolve => setTimeout(resolve, 3000))])
        rx.kill('SIGKILL')
        // Skip the first 300 ms (slow start) and use the steady part.
        const first = samples.find(s => s.n > 0)
        if (first === undefined) throw new Error('goodput probe received nothing')
        const a = samples.find(s => s.t >= first.t + 300)
        const b = samples.filter(s => s.t <= first.t + ms - 100).pop()
        if (a === undefined || b === undefined || b.t <= a.t) throw new Error('goodput probe too short')
        return (b.n - a.n) / ((b.t - a.t) / 1000)
      },
      async destroy () { await bed.destroy() }
    }
    return link
  } catch (err) {
    await bed.destroy()
    throw err
  }
}
