/**
 * Composition root: the only place that chooses real implementations and touches process.*.
 * `runAgent(configFile)` resolves with the exit code once the agent has stopped (SIGTERM/SIGINT).
 */
import { readFile } from 'node:fs/promises'
import path from 'node:path'
import { ConfigError, validateConfig, parseAddress, type AgentConfig } from './config.js'
import { AgentCore } from './core/agent-core.js'
import { loadPersistedCoreState } from './runtime/restore.js'
import type { HostSample } from './core/types.js'
import type { Logger } from './ports/logger.js'
import type { HostSampler } from './ports/host-sampler.js'
import type { HypervisorDriver } from './ports/hypervisor-driver.js'
import { jsonLogger } from './lib/logger.js'
import { levelStore } from './adapters/level-store.js'
import { loadOrCreateKeyPair } from './adapters/identity.js'
import { hyperswarmTransport } from './adapters/hyperswarm-transport.js'
import { encodeEnvelope, decodeFrame } from './adapters/wire-codec.js'
import { simDriver } from './adapters/sim-driver.js'
import { siSampler } from './adapters/si-sampler.js'
import { cronJobs } from './adapters/cron-jobs.js'
import { systemdNotifier } from './adapters/systemd-notify.js'
import { httpApi } from './adapters/http-api.js'
import { Runtime } from './runtime/runtime.js'
import type { StatusPayload } from './cli/render.js'

/** Where the agent keeps its Noise key pair inside its state directory. */
export function identityFile (stateDir: string): string {
  return path.join(stateDir, 'identity.json')
}

export async function loadConfigFile (file: string): Promise<AgentConfig> {
  let text: string
  try {
    text = await readFile(file, 'utf8')
  } catch (err) {
    throw new ConfigError(`cannot read configuration ${file}: ${(err as Error).message}`)
  }
  let raw: unknown
  try {
    raw = JSON.parse(text)
  } catch (err) {
    throw new ConfigError(`configuration ${file} is not valid JSON: ${(err as Error).message}`)
  }
  return validateConfig(raw)
}

/** Host load derived from the driver's VMs and a declared capacity (demo and simulated hosts). */
function driverSampler (config: AgentConfig, driver: HypervisorDriver): HostSampler {
  return {
    sample: async (signal) => {
      const vms = await driver.list(signal)
      const cap = config.sampler.capacity
      return {
        cpuUtil: Math.min(1, vms.reduce((s, v) => s + v.cpuUtil, 0)),
        memUsedMiB: vms.reduce((s, v) => s + v.memUsedMiB, 0),
        netMbps: 0,
        capacity: cap
      }
    }
  }
}

export async function runAgent (configFile: string): Promise<number> {
  const config = await loadConfigFile(configFile)
  const logger: Logger = jsonLogger({ level: config.log.level, journaldPrefix: process.env.JOURNAL_STREAM !== undefined })
  const log = logger.forComponent('agent:main')
  const self = config.cluster.members.find(m => m.name === config.node.name)
  if (self === undefined) throw new ConfigError(`config: node.name "${config.node.name}" is not one of cluster.members`)

  const store = levelStore({ location: path.join(config.node.stateDir, 'db') })({ logger })
  await store.open() // rejects with StateLockedError when another agent holds this directory
  const keyPair = await loadOrCreateKeyPair(identityFile(config.node.stateDir))
  const selfId = Buffer.from(keyPair.publicKey).toString('hex')
  if (selfId !== self.publicKey) {
    await store.close()
    throw new ConfigError(`config: this agent's public key ${selfId} is not the publicKey of "${self.name}" in cluster.members (see \`starling keygen --state-dir ${config.node.stateDir}\`)`)
  }

  const listen = parseAddress(config.node.listen, 'node.listen')
  const peers = config.cluster.members.filter(m => m.publicKey !== selfId)
  const transport = hyperswarmTransport({
    keyPair,
    clusterSecret: config.cluster.secret,
    host: listen.host,
    port: listen.port,
    bootstrap: peers.map(m => m.address),
    allowedKeys: config.cluster.members.map(m => m.publicKey),
    maxFrameBytes: config.core.frameBytesMax
  })({ logger })

  const restored = await loadPersistedCoreState(store)
  const core = new AgentCore({
    self: selfId,
    name: self.name,
    addr: config.node.listen,
    config: config.core,
    seed: Number.parseInt(selfId.slice(0, 8), 16) ^ Date.now(),
    seeds: peers.map(m => ({ id: m.publicKey, name: m.name, addr: m.address })),
    ...(restored !== null ? { restored } : {})
  })

  const driver = simDriver({
    vms: config.driver.vms,
    seed: Number.parseInt(selfId.slice(0, 8), 16),
    hostCpuCores: config.sampler.kind === 'driver' ? config.sampler.capacity.cpuCores : undefined,
    traceDir: path.dirname(path.resolve(configFile))
  })({ logger })
  const sampler = config.sampler.kind === 'system' ? siSampler({})({ logger }) : driverSampler(config, driver)
  const sample = async (signal: AbortSignal): Promise<HostSample> => {
    const [host, vms] = await Promise.all([sampler.sample(signal), driver.list(signal)])
    return { ...host, vms }
  }

  const runtime = new Runtime({ tickMs: config.core.tickMs, sampleIntervalMs: config.sampler.intervalMs }, {
    core, transport, store, logger, sample, codec: { encode: encodeEnvelope, decode: (frame, from) => decodeFrame(frame, { maxFrameBytes: config.core.frameBytesMax, expectFrom: from }) }
  })

  const status = (): StatusPayload => ({
    cluster: config.cluster.name,
    self: { id: selfId, name: self.name },
    members: core.view(),
    core: { ...core.status() },
    runtime: { ...runtime.stats }
  })
  const apiAddr = parseAddress(config.node.apiListen, 'node.apiListen')
  const api = httpApi({ host: apiAddr.host, port: apiAddr.port })({ logger, status })
  // The watchdog is pinged only while the loop makes progress: a hung agent gets fenced by systemd.
  let ticksAtLastPing = -1
  const healthy = (): boolean => {
    const progressed = runtime.stats.ticks > ticksAtLastPing
    ticksAtLastPing = runtime.stats.ticks
    return progressed
  }
  const notifier = systemdNotifier({})({ logger, healthy })
  const cron = cronJobs({
    jobs: [
      { name: 'compact-store', schedule: '17 * * * *', run: async () => { await store.compact() } },
      {
        name: 'report',
        schedule: '*/5 * * * *',
        run: async () => {
          const s = status()
          log.info('cluster report', { alive: s.members.filter(m => m.state === 'alive').length, members: s.members.length })
        }
      }
    ]
  })({ logger })

  await runtime.start()
  await api.start()
  cron.start()
  await notifier.ready(`cluster ${config.cluster.name}: ${config.cluster.members.length} members configured`)
  log.info('agent started', { id: selfId.slice(0, 8), name: self.name, listen: config.node.listen, api: config.node.apiListen, incarnation: core.status().incarnation })

  const signal = await new Promise<string>(resolve => {
    process.once('SIGTERM', () => resolve('SIGTERM'))
    process.once('SIGINT', () => resolve('SIGINT'))
  })
  log.info('agent stopping', { signal })
  await notifier.stopping()
  cron.stop()
  await api.stop()
  await runtime.stop({ leave: true })
  await notifier.close()
  await driver.close()
  await store.close()
  log.info('agent stopped')
  return 0
}
