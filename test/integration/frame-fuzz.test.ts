/**
 * Goal: garbage from an authenticated member never crashes an agent, and is counted.
 * Method: three real agent processes; this test process joins the mesh as a fourth, allowed
 * member (its key is in the cluster) and sends random, truncated, bit-flipped and forged frames
 * through the real Hyperswarm transport. Afterwards every agent still runs, still sees the
 * cluster, and counted the rejections. The seed is printed; rerun with SEED=<n>.
 */
import t from 'tap'
import { readFile } from 'node:fs/promises'
import path from 'node:path'
import { LocalCluster, aliveCount } from './cluster-harness.js'
import { hyperswarmTransport } from '../../agent/adapters/hyperswarm-transport.js'
import { loadOrCreateKeyPair } from '../../agent/adapters/identity.js'
import { encodeEnvelope } from '../../agent/adapters/wire-codec.js'
import { identityFile } from '../../agent/main.js'
import { silentLogger } from '../../agent/lib/logger.js'
import { Prng } from '../../agent/core/prng.js'
import type { Envelope } from '../../agent/core/messages.js'
import { poll } from '../lib/wait.js'
import { sleep } from '../lib/wait.js'

const seed = Number(process.env.SEED ?? Date.now() % 1_000_000)

t.test('random and malformed frames from a member never crash the agents', async t => {
  t.comment(`seed=${seed} (reproduce with SEED=${seed})`)
  const prng = new Prng(seed)
  const cluster = await LocalCluster.create(4, { seed: 5 })
  t.teardown(async () => await cluster.stop())
  const agents = ['host1', 'host2', 'host3']
  for (const n of agents) cluster.start(n)

  // This process plays host4 with host4's own key, so the agents' firewalls admit it.
  const me = cluster.host('host4')
  const cfg = JSON.parse(await readFile(me.configFile, 'utf8'))
  const keyPair = await loadOrCreateKeyPair(identityFile(me.stateDir))
  const [ip, port] = me.address.split(':') as [string, string]
  const transport = hyperswarmTransport({
    keyPair,
    clusterSecret: cfg.cluster.secret,
    host: ip,
    port: Number(port),
    bootstrap: agents.map(n => cluster.host(n).address),
    allowedKeys: cfg.cluster.members.map((m: { publicKey: string }) => m.publicKey)
  })({ logger: silentLogger() })
  const connected = new Set<string>()
  await transport.start({ onFrame: () => {}, onPeerConnected: p => connected.add(p), onPeerDisconnected: p => connected.delete(p), onRejected: () => {} })
  t.teardown(async () => await transport.stop())

  await poll(() => connected.size >= agents.length, 30_000)
  t.equal(connected.size, agents.length, 'the fuzzer is connected to every agent')
  const ids = [...connected]

  const valid: Envelope = { protocolMin: 1, protocolMax: 1, protocolCur: 1, from: me.publicKey, incarnation: 1, lamport: 1, body: { type: 'ping', seq: 1, target: ids[0] ?? me.publicKey }, gossip: [] }
  const good = Uint8Array.from(encodeEnvelope(valid)) // a copy: encodeEnvelope returns a Buffer, whose slice() shares memory
  const frames: Uint8Array[] = []
  for (let i = 0; i < 300; i++) {
    const kind = i % 5
    if (kind === 0) frames.push(Uint8Array.from({ length: 1 + prng.int(512) }, () => prng.int(256)))
    else if (kind === 1) frames.push(good.slice(0, prng.int(good.length)))
    else if (kind === 2) { const f = good.slice(); const j = prng.int(f.length); f[j] = (f[j] as number) ^ (1 << prng.int(8)); frames.push(f) }
    else if (kind === 3) frames.push(encodeEnvelope({ ...valid, protocolMin: 7, protocolMax: 9, protocolCur: 8 }))
    else frames.push(encodeEnvelope({ ...valid, from: 'f'.repeat(64) }))
  }
  // Let Hyperswarm settle duplicate connections first; a send that finds no open connection
  // (one being replaced) is retried for a while rather than counted as delivered.
  await sleep(1000)
  let sent = 0
  for (const f of frames) {
    for (const id of ids) {
      for (let attempt = 0; attempt < 100; attempt++) {
        if (transport.send(id, f)) { sent++; break }
        await sleep(20)
      }
    }
    if (sent % 50 === 0) await new Promise(resolve => setImmediate(resolve))
  }
  t.ok(sent >= frames.length * agents.length * 0.9, `frames sent: ${sent}`)
  await sleep(2000)

  for (const n of agents) {
    const p = cluster.procs.get(n)
    t.equal(p?.exitCode, null, `${n} still runs`)
    const s = await cluster.status(n)
    t.ok(s !== null && aliveCount(s) >= agents.length, `${n} still sees the cluster`)
    t.ok(Number(s?.runtime.framesRejected ?? 0) >= 200, `${n} counted the rejected frames (${String(s?.runtime.framesRejected)})`)
  }
  t.comment(`logs in ${path.dirname(me.configFile)}`)
})
