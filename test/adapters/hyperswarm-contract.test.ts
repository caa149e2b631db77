/**
 * The Transport contract suite (test/contract/transport.ts) against the Hyperswarm transport on
 * 127.0.0.1: real DHT nodes, real Noise connections, free ports, no outside help.
 */
import t from 'tap'
import dgram from 'node:dgram'
import { createKeyPair, hostIdOf } from '../../agent/adapters/identity.js'
import { hyperswarmTransport } from '../../agent/adapters/hyperswarm-transport.js'
import { silentLogger } from '../../agent/lib/logger.js'
import type { Transport } from '../../agent/ports/transport.js'
import { transportContract } from '../contract/transport.js'

const HOST = '127.0.0.1'
const MAX_FRAME_BYTES = 16 * 1024

async function freePort (): Promise<number> {
  const s = dgram.createSocket('udp4')
  await new Promise<void>((resolve, reject) => { s.once('error', reject); s.bind(0, HOST, () => resolve()) })
  const port = s.address().port
  await new Promise<void>(resolve => s.close(() => resolve()))
  return port
}

let made: Transport[] = []
let clusterNo = 0

transportContract(t, {
  name: 'hyperswarm',
  maxFrameBytes: MAX_FRAME_BYTES,
  deadlineMs: 30_000,
  settle: ms => new Promise(resolve => setTimeout(resolve, ms)),
  async cluster (n) {
    const secret = `contract-${process.pid}-${clusterNo++}`
    const specs: Array<{ kp: ReturnType<typeof createKeyPair>, port: number }> = []
    for (let i = 0; i < n; i++) specs.push({ kp: createKeyPair(), port: await freePort() })
    const ts = specs.map(s => hyperswarmTransport({
      keyPair: s.kp,
      clusterSecret: secret,
      host: HOST,
      port: s.port,
      bootstrap: specs.filter(o => o !== s).map(o => `${HOST}:${o.port}`),
      allowedKeys: specs.map(o => hostIdOf(o.kp)),
      maxFrameBytes: MAX_FRAME_BYTES
    })({ logger: silentLogger() }))
    made.push(...ts)
    return ts
  },
  async cleanup () {
    const ts = made
    made = []
    await Promise.all(ts.map(x => x.stop()))
  }
})
