/**
 * The floor under bench:mesh: one process of a cluster that runs only what every agent must run
 * on this stack, Node, Hyperswarm and the agent's own transport (its DHT bootstrapper, firewall,
 * Noise connections, keep-alives), and sends nothing but the SWIM probes that the detection target
 * needs: one ping to a random member per probe interval, as a datagram, each answered with an ack.
 * No core, no store, no API, no sampler, no load reports.
 *
 * Run by bench/mesh.ts as `node [agent flags] mesh-floor.js INDEX`, with the cluster in the
 * environment (FLOOR_SEEDS: hex 32-byte key seeds, FLOOR_PORTS, FLOOR_PROBE_MS, FLOOR_KEEPALIVE_MS,
 * FLOOR_TIMEOUT_MS). Prints "connected" once a connection to every other member is open.
 */
import HyperDHT from 'hyperdht'
import { hyperswarmTransport } from '../../agent/adapters/hyperswarm-transport.js'
import { silentLogger } from '../../agent/lib/logger.js'

const PING = 1
const ACK = 2

async function main (): Promise<void> {
  const me = Number(process.argv[2])
  const seeds = (process.env.FLOOR_SEEDS ?? '').split(',').filter(s => s !== '')
  const ports = (process.env.FLOOR_PORTS ?? '').split(',').map(Number)
  const probeMs = Number(process.env.FLOOR_PROBE_MS ?? 500)
  if (!Number.isInteger(me) || seeds.length < 2 || ports.length !== seeds.length || me < 0 || me >= seeds.length) {
    throw new Error('mesh-floor: INDEX, FLOOR_SEEDS and FLOOR_PORTS must describe the cluster')
  }
  const keyPairs = seeds.map(s => HyperDHT.keyPair(Buffer.from(s, 'hex')))
  const ids = keyPairs.map(k => Buffer.from(k.publicKey).toString('hex'))
  const quiet = (): void => {}
  const t = hyperswarmTransport({
    keyPair: keyPairs[me] as { publicKey: Uint8Array, secretKey: Uint8Array },
    clusterSecret: 'bench-mesh-floor',
    host: '127.0.0.1',
    port: ports[me] as number,
    bootstrap: ports.filter((_, i) => i !== me).map(p => `127.0.0.1:${p}`),
    allowedKeys: ids,
    keepAliveMs: Number(process.env.FLOOR_KEEPALIVE_MS ?? 5000),
    timeoutMs: Number(process.env.FLOOR_TIMEOUT_MS ?? 15000)
  })({ logger: silentLogger() })
  // A ping is the size of the agent's (envelope, sequence number, no gossip): ~90 bytes.
  const ping = new Uint8Array(90).fill(PING)
  const ack = new Uint8Array(60).fill(ACK)
  const peers = ids.filter((_, i) => i !== me)
  const connected = new Set<string>()
  await t.start({
    onFrame: (from, frame) => { if (frame[0] === PING) t.sendDatagram?.(from, ack.slice()) },
    onPeerConnected: peer => {
      connected.add(peer)
      if (connected.size === peers.length) process.stdout.write('connected\n')
    },
    onPeerDisconnected: peer => { connected.delete(peer) },
    onRejected: quiet
  })
  // A fixed sequence per process: which member is probed does not change the cost.
  let x = me + 1
  setInterval(() => {
    x = (x * 48271) % 2147483647
    t.sendDatagram?.(peers[x % peers.length] as string, ping.slice())
  }, probeMs)
  process.on('SIGTERM', () => { void t.stop().finally(() => process.exit(0)) })
}

main().catch(err => {
  process.stderr.write(`${err instanceof Error ? err.message : String(err)}\n`)
  process.exit(1)
})
