/**
 * Child of start-unwind.test.ts: runs the agent in this process with its configuration (argv[2]),
 * expects the start-up to fail, then checks what the failed start left held: the state
 * directory's LevelDB lock and the mesh's UDP port. Prints `RESULT <json>` on stderr.
 */
import dgram from 'node:dgram'
import path from 'node:path'
import { runAgent } from '../../agent/main.js'
import { levelStore } from '../../agent/adapters/level-store.js'
import { silentLogger } from '../../agent/lib/logger.js'

const [configFile, stateDir, meshAddress] = process.argv.slice(2) as [string, string, string]
const result: Record<string, unknown> = {}
try {
  await runAgent(configFile)
  result.started = true
} catch (err) {
  result.error = (err as Error).message
}
const store = levelStore({ location: path.join(stateDir, 'db') })({ logger: silentLogger() })
try {
  await store.open()
  result.storeFree = true
  await store.close()
} catch (err) {
  result.storeFree = false
  result.storeError = (err as Error).message
}
const [host, port] = [meshAddress.slice(0, meshAddress.lastIndexOf(':')), Number(meshAddress.slice(meshAddress.lastIndexOf(':') + 1))]
result.meshPortFree = await new Promise<boolean>(resolve => {
  const s = dgram.createSocket('udp4')
  s.once('error', () => { resolve(false) })
  s.bind(port, host, () => { s.close(); resolve(true) })
})
process.stderr.write(`RESULT ${JSON.stringify(result)}\n`)
// Whatever the failed start left running (a timer, a socket) must not keep the process alive.
