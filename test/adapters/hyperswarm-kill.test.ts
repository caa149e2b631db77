/**
 * Death detection on the Hyperswarm mesh: a member killed with SIGKILL (no FIN, no unannounce)
 * must be reported disconnected by the others within keep-alive timeout bounds, and a process
 * that starts again with the same key must be reconnected.
 * Method: two transports in this process, a third in a child process (same TypeScript loader as
 * this test), all on 127.0.0.1 with free ports; kill -9 the child; time the disconnect events.
 * Expected: about timeoutMs (3 s) plus up to one keep-alive; ANCHORS measured 2.3-2.9 s.
 */
import t from 'tap'
import { spawn, type ChildProcess } from 'node:child_process'
import dgram from 'node:dgram'
import { createKeyPair, hostIdOf, type KeyPair } from '../../agent/adapters/identity.js'
import { hyperswarmTransport, type HyperswarmTransport } from '../../agent/adapters/hyperswarm-transport.js'
import { silentLogger } from '../../agent/lib/logger.js'
import { until as waitUntil } from '../lib/wait.js'

const HOST = '127.0.0.1'
const SECRET = 'kill-test-secret-' + process.pid
const tsLoader = process.execArgv.filter(a => a.includes('@tapjs/typescript') || a === '--enable-source-maps')

async function freePort (): Promise<number> {
  const s = dgram.createSocket('udp4')
  await new Promise<void>((resolve, reject) => { s.once('error', reject); s.bind(0, HOST, () => resolve()) })
  const port = s.address().port
  await new Promise<void>(resolve => s.close(() => resolve()))
  return port
}

const until = async (what: string, cond: () => boolean, timeoutMs: number): Promise<number> => await waitUntil(what, cond, timeoutMs, { pollMs: 10 })

interface Spec { seed: Buffer, kp: KeyPair, port: number }

/** A child process running one transport; prints "peers N" whenever its peer count changes. */
function spawnMember (me: Spec, all: Spec[]): { child: ChildProcess, peers: () => number } {
  const url = (p: string): string => new URL(p, import.meta.url).href
  const params = {
    seed: me.seed.toString('hex'),
    port: me.port,
    bootstrap: all.filter(s => s !== me).map(s => `${HOST}:${s.port}`),
    allowed: all.map(s => hostIdOf(s.kp)),
    secret: SECRET
  }
  const code = `
    const { createKeyPair } = await import(${JSON.stringify(url('../../agent/adapters/identity.ts'))})
    const { hyperswarmTransport } = await import(${JSON.stringify(url('../../agent/adapters/hyperswarm-transport.ts'))})
    const { silentLogger } = await import(${JSON.stringify(url('../../agent/lib/logger.ts'))})
    const p = ${JSON.stringify(params)}
    const tr = hyperswarmTransport({ keyPair: createKeyPair(Buffer.from(p.seed, 'hex')), clusterSecret: p.secret,
      host: '${HOST}', port: p.port, bootstrap: p.bootstrap, allowedKeys: p.allowed })({ logger: silentLogger() })
    const report = () => process.stdout.write('peers ' + tr.connected().length + '\\n')
    await tr.start({ onFrame: () => {}, onPeerConnected: report, onPeerDisconnected: report, onRejected: () => {} })
    report()
    setInterval(() => {}, 1 << 30)
  `
  const child = spawn(process.execPath, [...tsLoader, '--input-type=module', '-e', code], { stdio: ['ignore', 'pipe', 'inherit'] })
  let peers = 0
  let buf = ''
  child.stdout?.on('data', (d: Buffer) => {
    buf += d.toString()
    const lines = buf.split('\n')
    buf = lines.pop() ?? ''
    for (const l of lines) if (l.startsWith('peers ')) peers = Number(l.slice(6))
  })
  return { child, peers: () => peers }
}

t.test('a member killed with SIGKILL is reported gone within the keep-alive timeout, and comes back', {
  skip: tsLoader.length === 0 ? 'needs the TypeScript loader of tap for the child process' : false
}, async t => {
  const specs: Spec[] = []
  for (let i = 0; i < 3; i++) {
    const seed = createKeyPair().secretKey.subarray(0, 32)
    specs.push({ seed, kp: createKeyPair(seed), port: await freePort() })
  }
  const victim = specs[2]!
  const victimId = hostIdOf(victim.kp)
  const local = specs.slice(0, 2).map(s => {
    const gone: number[] = []
    const transport: HyperswarmTransport = hyperswarmTransport({
      keyPair: s.kp, clusterSecret: SECRET, host: HOST, port: s.port,
      bootstrap: specs.filter(o => o !== s).map(o => `${HOST}:${o.port}`),
      allowedKeys: specs.map(o => hostIdOf(o.kp))
    })({ logger: silentLogger() })
    return { transport, gone }
  })
  let child = spawnMember(victim, specs)
  t.teardown(async () => {
    child.child.kill('SIGKILL')
    await Promise.all(local.map(l => l.transport.stop()))
  })
  await Promise.all(local.map(l => l.transport.start({
    onFrame: () => {},
    onPeerConnected: () => {},
    onPeerDisconnected: p => { if (p === victimId) l.gone.push(Date.now()) },
    onRejected: () => {}
  })))
  await until('full mesh with the child', () => child.peers() === 2 && local.every(l => l.transport.connected().length === 2), 60_000)
  t.pass('three-member mesh across processes')

  const killedAt = Date.now()
  child.child.kill('SIGKILL')
  await until('both survivors notice', () => local.every(l => l.gone.length > 0), 20_000)
  const delays = local.map(l => l.gone[0]! - killedAt)
  t.comment(`kill -9 noticed after ${delays.join(' ms and ')} ms (keepAliveMs 1000, timeoutMs 3000)`)
  for (const d of delays) t.ok(d >= 1500 && d <= 6000, `detected in ${d} ms, within 1.5-6 s`)
  t.same(local.map(l => l.transport.connected()), [[hostIdOf(specs[1]!.kp)], [hostIdOf(specs[0]!.kp)]], 'survivors stay connected')

  // The same key on the same port comes back: the survivors reconnect without help.
  const restartedAt = Date.now()
  child = spawnMember(victim, specs)
  const back = await until('reconnect after restart', () => local.every(l => l.transport.connected().includes(victimId)), 60_000)
  t.comment(`restarted member reconnected ${back} ms after spawn (includes the child's TypeScript start-up)`)
  t.ok(Date.now() - restartedAt < 60_000)
})
