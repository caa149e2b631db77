/**
 * Composition root: the only place that chooses real implementations and touches process.*.
 * `runAgent(configFile)` resolves with the exit code once the agent has stopped (SIGTERM/SIGINT).
 */
import { readFile } from 'node:fs/promises'
import { availableParallelism } from 'node:os'
import { mkdirSync } from 'node:fs'
import path from 'node:path'
import { ConfigError, validateConfig, parseAddress, type AgentConfig } from './config.js'
import { AgentCore, PROTOCOL_CUR, PROTOCOL_MAX, PROTOCOL_MIN, type HostSample, type RestoredConfigLog, type SplitEffect } from './core/index.js'
import { parseClusterDoc, type ClusterDocHaVm } from './core/index.js'
import { farewellEntries, genesisFromFile, loadClusterConfig, numberedRules, parseChange, runChange, sha256Hex, type ChangeContext, type ConfigChange } from './runtime/cluster-config.js'
import { loadPersistedCoreState } from './runtime/restore.js'
import type { Logger } from './ports/logger.js'
import type { HostSampler } from './ports/host-sampler.js'
import type { HypervisorDriver } from './ports/hypervisor-driver.js'
import { jsonLogger } from './lib/logger.js'
import { levelStore, type LevelStore } from './adapters/level-store.js'
import { loadOrCreateKeyPair } from './adapters/identity.js'
import { hyperswarmTransport } from './adapters/hyperswarm-transport.js'
import { clusterSettings } from './cluster-settings.js'
import { encodeEnvelope, decodeFrame } from './adapters/wire-codec.js'
import { simDriver, type SimDriverInit } from './adapters/sim-driver.js'
import type { CronJob, CronJobs } from './adapters/cron-jobs.js'
import { systemdNotifier } from './adapters/systemd-notify.js'
import { checkWatchdogDevice, openWatchdogDevice, prepareWatchdogDevice, progressGate, type WatchdogDevice, type WatchdogDeviceInit } from './adapters/watchdog-device.js'
import { httpApi, type HttpApiComponents } from './adapters/http-api.js'
import { webView, type WebStatus } from './adapters/web-view.js'
import { readApiToken, resolveGroup } from './adapters/api-credentials.js'
import { Runtime } from './runtime/runtime.js'
import { driverExecutor } from './runtime/driver-commands.js'
// The QEMU and libvirt drivers are loaded only when configured (startQemu, startLibvirt): the
// embedded simulated driver's agent does not pay for their code.
import type { QemuDriver } from './adapters/qemu-driver.js'
import type { LibvirtDriver } from './adapters/libvirt-driver.js'
import { haPayload, planPayload, vipsPayload, type HaPayload, type PlanPayload, type StatusPayload, type VipsPayload } from './api/payloads.js'
import type { Store } from './ports/store.js'
import { Lifecycle, startOrUnwind, type Component } from './lib/lifecycle.js'
import { hostMemory } from './adapters/host-memory.js'
import { KsmSysfs } from './adapters/ksm-sysfs.js'
import { KsmController } from './runtime/ksm-controller.js'
import { BalloonController, hostMemoryReport } from './runtime/balloon-controller.js'
import type { BalloonDriver } from './ports/memory.js'
import type { MemoryPayload } from './api/memory.js'
import { CpuController } from './runtime/cpu-controller.js'
import { arpVip } from './adapters/arp-vip.js'
import { simVip } from './adapters/sim-vip.js'
import type { VipAdapter } from './ports/vip-adapter.js'
import { VipApplier } from './runtime/vip-applier.js'
import { removeLocalVips, vipCoreOptions } from './runtime/vip-setup.js'
import { haBootSpec, haCoreOptions } from './runtime/ha-setup.js'
import { haDriverExecutor } from './runtime/driver-commands.js'
import { replicaCoreOptions, replicaExecutor, resolveReplicaVms, SplitState, type ReplicaVmDef } from './runtime/replica-setup.js'
import { IptablesSplitter } from './adapters/iptables-splitter.js'

/** Latest start of the calendar jobs after the agent's start, ms (sooner once every member is alive). */
const CRON_START_LATEST_MS = 30_000
/** How often the agent checks whether the calendar jobs may start, ms. */
const CRON_GATE_POLL_MS = 1000

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

/** CPU (user + system) this process has used since it started, seconds. */
function cpuSeconds (): number {
  const c = process.cpuUsage()
  return (c.user + c.system) / 1e6
}

/**
 * CPU the process had used at two points of its start-up, seconds: when the agent's modules were
 * loaded (Node's own start-up included) and when the agent was ready (API answering, systemd
 * notified). bench:mesh reports them (bench/mesh.md).
 */
interface StartupCpu { loadedS: number, readyS: number | null }

/** The agent process's own footprint, exported as agent_process_* metrics. */
function processStats (startup: StartupCpu): Record<string, number> {
  const m = process.memoryUsage()
  const c = process.cpuUsage()
  return {
    rssBytes: m.rss, heapUsedBytes: m.heapUsed, heapTotalBytes: m.heapTotal, externalBytes: m.external, cpuUserSeconds: c.user / 1e6, cpuSystemSeconds: c.system / 1e6,
    startupLoadedCpuSeconds: startup.loadedS,
    ...(startup.readyS !== null ? { startupReadyCpuSeconds: startup.readyS } : {})
  }
}

/**
 * The QEMU driver: re-attach to the VMs a previous run left running, then (first boot only, on an
 * empty state directory) start the configured VMs. A VM that migrated away is never started
 * again by a restart.
 */
async function startQemu (config: AgentConfig, firstBoot: boolean, logger: Logger): Promise<QemuDriver> {
  const q = config.driver.qemu
  const { QemuDriver } = await import('./adapters/qemu-driver.js')
  const driver = new QemuDriver({
    runDir: q.runDir, accel: q.accel, qemuBinary: q.binary, qemuImgBinary: q.imgBinary, sharedStorage: q.sharedStorage,
    ...(q.imageDir !== undefined ? { imageDir: q.imageDir } : {}),
    hostCpuCores: config.sampler.capacity.cpuCores
  }, { logger })
  // Bounded (reattachTimeoutMs per QEMU, all at once): a QEMU that does not answer stays pending,
  // attached in the background, and the agent goes on to the mesh.
  const t0 = performance.now()
  const attached = await driver.reattach()
  const pending = driver.pendingIds()
  if (attached.length > 0 || pending.length > 0) {
    logger.forComponent('agent:main').info(`re-attach done in ${Math.round(performance.now() - t0)} ms: attached ${attached.join(', ') || 'none'}; pending ${pending.join(', ') || 'none'}`)
  }
  if (firstBoot) {
    for (const v of q.vms) {
      const extra: Record<string, unknown> = {}
      if (v.kernel !== undefined) extra.kernel = v.kernel
      if (v.initrd !== undefined) extra.initrd = v.initrd
      if (v.append !== undefined) extra.append = v.append
      if (v.args !== undefined) extra.args = v.args
      if (v.balloon !== undefined) extra.balloon = v.balloon
      if (v.disks !== undefined) extra.disks = v.disks
      if (driver.pid(v.id) === undefined) await driver.start({ id: v.id, vcpus: v.vcpus, memMiB: v.memMiB, extra })
    }
  }
  return driver
}

/**
 * The libvirt driver: libvirtd keeps the VMs across agent restarts, so there is nothing to
 * re-attach; the first list() (checked here, so that an unreachable libvirtd stops the start-up
 * with its reason) shows the domains this host has.
 */
async function startLibvirt (config: AgentConfig, logger: Logger): Promise<LibvirtDriver> {
  const l = config.driver.libvirt
  const { LibvirtDriver } = await import('./adapters/libvirt-driver.js')
  const driver = new LibvirtDriver({
    uri: l.uri,
    peerUri: l.peerUri,
    domainType: l.domainType,
    persistent: l.persistent,
    sharedStorage: l.sharedStorage,
    stateDir: path.join(config.node.stateDir, 'libvirt'),
    ...(l.imageDir !== undefined ? { imageDir: l.imageDir } : {}),
    ...(config.sampler.kind === 'driver' ? { hostCpuCores: config.sampler.capacity.cpuCores } : {}),
    ...(l.serialDir !== undefined ? { serialDir: l.serialDir } : {}),
    ...(l.emulator !== undefined ? { emulator: l.emulator } : {})
  }, { logger })
  const vms = await driver.list(AbortSignal.timeout(60_000))
  logger.forComponent('agent:main').info(`libvirt at ${l.uri}: ${vms.length} domain(s) (${vms.map(v => `${v.id} ${v.state}`).join(', ')}); migrations arrive at ${l.peerUri}`)
  return driver
}

/** Waits for SIGTERM or SIGINT; resolves with its name. */
async function stopSignal (): Promise<string> {
  return await new Promise<string>(resolve => {
    process.once('SIGTERM', () => resolve('SIGTERM'))
    process.once('SIGINT', () => resolve('SIGINT'))
  })
}

export async function runAgent (configFile: string): Promise<number> {
  const startupCpu: StartupCpu = { loadedS: cpuSeconds(), readyS: null }
  const config = await loadConfigFile(configFile)
  const logger: Logger = jsonLogger({ level: config.log.level, journaldPrefix: process.env.JOURNAL_STREAM !== undefined })
  const log = logger.forComponent('agent:main')
  const life = new Lifecycle(f => { log.error(`stopping ${f.name} failed`, { err: f.err }) })
  // A start-up that fails half-way stops what had started (newest first) and reports why.
  await startOrUnwind(life, async life => { await startAgent({ config, configFile, logger, startupCpu }, life) })
  log.info('agent stopping', { signal: await stopSignal() })
  await life.stopAll()
  log.info('agent stopped')
  return 0
}

/** What every start-up step may read. */
interface Boot {
  config: AgentConfig
  configFile: string
  logger: Logger
  startupCpu: StartupCpu
}

/**
 * The agent, as a list of components started in this order and stopped in the reverse one
 * (agent/lib/lifecycle.ts): whatever starts later may use what started before it.
 */
async function startAgent (boot: Boot, life: Lifecycle): Promise<void> {
  const { config, logger } = boot
  const log = logger.forComponent('agent:main')
  const self = config.cluster.members.find(m => m.name === config.node.name)
  if (self === undefined) throw new ConfigError(`config: node.name "${config.node.name}" is not one of cluster.members`)
  const haWatchdog = checkHaWatchdog(config, logger)
  // Control API credentials: a bad token file or group stops the start-up here, with its reason.
  const apiToken = readApiToken(config.node.apiTokenFile)
  const apiGid = config.node.apiSocketGroup !== null ? resolveGroup(config.node.apiSocketGroup) : null

  const store = levelStore({ location: path.join(config.node.stateDir, 'db') })({ logger })
  // open() rejects with StateLockedError when another agent holds this directory
  await life.add({ name: 'store', start: async () => { await store.open() }, stop: async () => { await store.close() } })
  const { selfId, keyPair } = await checkIdentity(config, self.publicKey)
  const restored = await loadPersistedCoreState(store)
  // The agreed cluster configuration (agent/runtime/cluster-config.ts): its members, rules and
  // automation rule once this host holds a later version than its file's.
  const cfgRestored = await loadClusterConfig(store)
  const agreed = agreedMembers(cfgRestored) ?? config.cluster.members

  // The loop (runtime, core) starts later; systemd's watchdog pings only while it makes progress
  // and HA allows it, and keeps pinging until close(), the last but one stop.
  const loop: { runtime?: Runtime, core?: AgentCore } = {}
  const notifier = systemdNotifier({})({ logger, healthy: progressGate(() => loop.runtime?.stats.ticks ?? 0, () => loop.core?.haWatchdogOk() ?? false) })
  await life.add({ name: 'systemd notifier', stop: async () => { await notifier.close() } })

  const driver = await startDriver(boot, selfId, restored === null)
  await life.add({ name: 'hypervisor driver', stop: async () => { await driver.close() } })
  const vips = await startVips(config, store, logger)
  await life.add({ name: 'virtual IPs', stop: async () => { await vips.applier.close() } })
  const agreedHa = agreedHaVms(cfgRestored)
  if (!config.ha.enabled && agreedHa.length > 0) logger.forComponent('agent:main').warn(`ha: the cluster protects ${agreedHa.length} VM(s) but this host's file has no ha section: it takes no part in HA (it votes in no HA majority, restarts none and fences nothing); add an ha section (at least {}) to take part`)
  const haOptions = config.ha.enabled ? await startHa(config, agreedHa, driver, store, logger) : undefined
  const replicas = config.replication.enabled ? await startReplicas(config, store, logger) : null
  if (replicas !== null) await life.add({ name: 'connection split', stop: async () => { await replicas.splitter.clear() } })

  // Bootstrap from the file's members and the agreed ones: a host added since knows the cluster by its file.
  const peers = [...new Map([...config.cluster.members, ...agreed].map(m => [m.publicKey, m])).values()].filter(m => m.publicKey !== selfId)
  const core = new AgentCore({
    self: selfId,
    name: self.name,
    addr: config.node.listen,
    config: config.core,
    seed: Number.parseInt(selfId.slice(0, 8), 16) ^ Date.now(),
    seeds: peers.map(m => ({ id: m.publicKey, name: m.name, addr: m.address })),
    ...(restored !== null ? { restored } : {}),
    migration: config.migration,
    ...(vips.options !== undefined ? { vips: vips.options } : {}),
    ...(haOptions !== undefined ? { ha: haOptions } : {}),
    ...(replicas !== null ? { replicas: replicas.options } : {}),
    clusterConfig: { genesis: genesisFromFile(config), restored: cfgRestored, hash: sha256Hex }
  })
  const transport = meshTransport(config, keyPair, peers, agreed, logger)
  // Each agreed version: the transport admits its members and refuses removed ones (who hear why).
  const applyMembers = (): void => {
    const st = core.clusterConfig()
    if (st === null || st.doc === null) return
    const history = core.clusterConfigHistory()
    const farewell = (key: string): Uint8Array[] => farewellEntries(history, key).map(e => encodeEnvelope({
      protocolMin: PROTOCOL_MIN, protocolMax: PROTOCOL_MAX, protocolCur: PROTOCOL_CUR, from: selfId, incarnation: 0, lamport: 0, gossip: [],
      body: { type: 'cfg', op: 'commit', slot: e.version, entry: e }
    }))
    transport.setMembers(st.doc.members.map(m => ({ key: m.publicKey, address: m.address, name: m.name })), farewell)
  }
  if (cfgRestored !== null) applyMembers()
  const memory = await memoryLoop(config, driver, logger)
  const ksmLoop = memory?.ksm
  // The host's own KSM settings come back when the agent stops.
  if (ksmLoop !== undefined) await life.add({ name: 'page sharing', stop: async () => { await ksmLoop.restore() } })
  const cpu = await cpuLoop(config, driver, logger)
  const runtime = new Runtime({ tickMs: config.core.tickMs, sampleIntervalMs: config.sampler.intervalMs, probeDatagrams: config.mesh.probeDatagrams }, {
    core,
    transport,
    store,
    logger,
    sample: await hostSample(config, driver, memory, cpu, logger, () => core.migratingVms()),
    codec: { encode: encodeEnvelope, decode: (frame, from) => decodeFrame(frame, { maxFrameBytes: config.core.frameBytesMax, expectFrom: from }) },
    driver: driverExecutor(driver, { migrationListenHost: config.driver.kind === 'libvirt' ? config.driver.libvirt.migrationListen : config.driver.qemu.migrationListen }),
    vip: vips.applier,
    // A restart boots the definition agreed with the protection (the files' until the cluster agreed one).
    ha: haDriverExecutor(driver, { spec: vm => haBootSpec(config.ha, vm, core.clusterConfig()?.doc?.ha?.vms) }),
    ...(replicas !== null ? { replica: replicaExecutor(driver, replicas.defs), split: replicas.split } : {}),
    ...(process.env.STARLING_TEST_EXIT_AT !== undefined ? { exitAtStep: process.env.STARLING_TEST_EXIT_AT } : {}),
    onEvent: ev => { if (ev.kind === 'config-committed' || ev.kind === 'config-adopted') applyMembers() }
  })
  loop.runtime = runtime
  loop.core = core
  // The tick loop and the HA fence, one component: the watchdog device opens once the loop runs
  // (opening starts its timer) and is disarmed only after the loop has left the cluster.
  let watchdog: WatchdogDevice | null = null
  await life.add({
    name: 'tick loop',
    start: async () => {
      try { await runtime.start() } catch (err) { await runtime.stop(); throw err }
      watchdog = openHaWatchdog(config, logger, runtime, core, haWatchdog)
    },
    // Disarmed even when the loop's stop fails: an open, unfed device would reset the host.
    stop: async () => { try { await runtime.stop({ leave: true }) } finally { watchdog?.close(true) } }
  })

  const status = statusSource(config, { id: selfId, name: self.name }, core, runtime, transport, boot.startupCpu, memory)
  const memoryNow = memory === null ? null : (): MemoryPayload => ({ self: { id: selfId, name: self.name }, nowMs: Date.now(), status: memory.status(), counters: { ...memory.counters }, ...(ksmLoop !== undefined ? { ksmCounters: { ...ksmLoop.counters } } : {}) })
  for (const c of controlApi(config, { token: apiToken, gid: apiGid }, core, runtime, status, () => ({ cluster: config.cluster.name, self: { id: selfId, name: self.name }, members: core.view() }), viewSources(config, { id: selfId, name: self.name }, core, haWatchdog), logger, memoryNow, () => (driver as { keptDiskCopies?: () => unknown[] }).keptDiskCopies?.() ?? [])) await life.add(c)
  await life.add(calendarJobs(config, core, store, status, logger))
  await life.add({
    name: 'systemd readiness',
    start: async () => { await notifier.ready(`cluster ${config.cluster.name}: ${config.cluster.members.length} members configured`) },
    stop: async () => { await notifier.stopping() }
  })
  boot.startupCpu.readyS = cpuSeconds()
  log.info('agent started', { id: selfId.slice(0, 8), name: self.name, listen: config.node.listen, api: config.node.apiListen, control: config.node.apiSocket, tcpChanges: apiToken !== null ? 'with the bearer token' : 'refused (read-only)', incarnation: core.status().incarnation, cpuMs: { loaded: Math.round(boot.startupCpu.loadedS * 1000), ready: Math.round(boot.startupCpu.readyS * 1000) } })
}

type KeyPair = Awaited<ReturnType<typeof loadOrCreateKeyPair>>

/** This agent's key pair; its id (the public key) must be its member entry's publicKey. */
async function checkIdentity (config: AgentConfig, configured: string): Promise<{ selfId: string, keyPair: KeyPair }> {
  const keyPair = await loadOrCreateKeyPair(identityFile(config.node.stateDir))
  const selfId = Buffer.from(keyPair.publicKey).toString('hex')
  if (selfId !== configured) {
    throw new ConfigError(`config: this agent's public key ${selfId} is not the publicKey of "${config.node.name}" in cluster.members (see \`starling keygen --state-dir ${config.node.stateDir}\`)`)
  }
  return { selfId, keyPair }
}

/** The members of the latest agreed version in the store, or null when it holds none (or none that parses). */
/** The protected VMs of the latest version in the store (empty on a first start, or when it keeps none). */
function agreedHaVms (r: RestoredConfigLog | null): ClusterDocHaVm[] {
  if (r === null || r.entries.length === 0) return []
  const latest = [...r.entries].sort((a, b) => b.version - a.version)[0]!
  const doc = parseClusterDoc(latest.doc)
  return typeof doc === 'string' ? [] : doc.ha?.vms ?? []
}

function agreedMembers (r: RestoredConfigLog | null): AgentConfig['cluster']['members'] | null {
  if (r === null || r.entries.length === 0) return null
  const latest = [...r.entries].sort((a, b) => b.version - a.version)[0]!
  const doc = parseClusterDoc(latest.doc)
  return typeof doc === 'string' ? null : doc.members.map(m => ({ name: m.name, publicKey: m.publicKey, address: m.address }))
}

/** The Hyperswarm mesh to the other members (started and stopped by the runtime). */
function meshTransport (config: AgentConfig, keyPair: KeyPair, peers: AgentConfig['cluster']['members'], members: AgentConfig['cluster']['members'], logger: Logger): ReturnType<ReturnType<typeof hyperswarmTransport>> {
  const listen = parseAddress(config.node.listen, 'node.listen')
  return hyperswarmTransport({
    keyPair,
    clusterSecret: config.cluster.secret,
    host: listen.host,
    port: listen.port,
    bootstrap: peers.map(m => m.address),
    allowedKeys: members.map(m => m.publicKey),
    addresses: Object.fromEntries(members.map(m => [m.publicKey, m.address])),
    maxFrameBytes: config.core.frameBytesMax,
    keepAliveMs: config.mesh.keepAliveMs,
    timeoutMs: config.mesh.timeoutMs,
    // Connections to the core's active view, others on demand (agent/core/membership/active-view.ts),
    // in a cluster larger than the view. A cluster no larger than the view is a full mesh anyway:
    // its transport finds and keeps every member as before the view, by the topic. Decided from
    // the agreed members at start and again at each agreed change of them.
    ...(config.core.activeViewSize > 0 ? { onDemandAbove: config.core.activeViewSize + 1 } : {}),
    idleCloseMs: config.mesh.idleCloseMs,
    // Proven and compared at every connection: agent/cluster-settings.ts. Members, rules and
    // automation are flagged only (the files' difference, not the agreed configuration's).
    settings: clusterSettings(config),
    names: Object.fromEntries(members.map(m => [m.publicKey, m.name]))
  })({ logger })
}

/** The configured hypervisor driver, its VMs re-attached or (first boot) started. */
async function startDriver (boot: Boot, selfId: string, firstBoot: boolean): Promise<HypervisorDriver> {
  const { config, logger } = boot
  if (config.driver.kind === 'qemu') return await startQemu(config, firstBoot, logger)
  if (config.driver.kind === 'libvirt') return await startLibvirt(config, logger)
  return simDriver({
    vms: config.driver.vms,
    seed: Number.parseInt(selfId.slice(0, 8), 16),
    hostCpuCores: config.sampler.kind === 'driver' ? config.sampler.capacity.cpuCores : undefined,
    traceDir: path.dirname(path.resolve(boot.configFile)),
    // The migration link runs at the simulated host's declared network speed (the core plans with it too).
    linkMbps: config.sampler.kind === 'driver' ? config.sampler.capacity.netMbps : undefined,
    // The VM set outlives an agent restart (as QEMU guests do); with no such file the
    // configured VMs start only on a first boot (no core state yet), as the QEMU driver's.
    stateFile: path.join(config.node.stateDir, 'sim-vms.json'),
    startConfigured: firstBoot,
    // Tests inject driver faults into an agent process through its environment (JSON of SimDriverInit.faults).
    ...(process.env.STARLING_TEST_SIM_FAULTS !== undefined ? { faults: JSON.parse(process.env.STARLING_TEST_SIM_FAULTS) as SimDriverInit['faults'] } : {})
  })({ logger })
}

/**
 * Virtual IPs: an agent killed by SIGKILL left its addresses on the interface, and a restarted
 * agent does not know whether it still owns them: remove them before the core claims anything.
 */
async function startVips (config: AgentConfig, store: Store, logger: Logger): Promise<{ applier: VipApplier, options: Awaited<ReturnType<typeof vipCoreOptions>> | undefined }> {
  const options = config.vips.list.length > 0
    ? await vipCoreOptions(config.vips, new Map(config.cluster.members.map(m => [m.name, m.publicKey])), store)
    : undefined
  // A demo's simulated hosts may carry addresses on a simulated interface (sim-vip.ts, driver.simulatedVips).
  const adapter = (): VipAdapter => config.driver.simulatedVips
    ? simVip({ stateFile: path.join(config.node.stateDir, 'sim-vips.json') })({ logger })
    : arpVip({})({ logger })
  if (options !== undefined) {
    for (const f of await removeLocalVips(config.vips, adapter(), logger)) logger.forComponent('agent:main').warn(`vip: could not remove ${f} at start-up`)
  }
  const applier = new VipApplier(adapter(), logger)
  return { applier, options }
}

/**
 * High availability: the protected VMs this host runs now (a paused leftover is destroyed: a
 * fresh agent does not know under which claim it was paused).
 */
async function startHa (config: AgentConfig, agreed: readonly ClusterDocHaVm[], driver: HypervisorDriver, store: Store, logger: Logger): Promise<Awaited<ReturnType<typeof haCoreOptions>>> {
  const log = logger.forComponent('agent:main')
  const haExec = haDriverExecutor(driver, { spec: vm => haBootSpec(config.ha, vm, agreed.length > 0 ? agreed : undefined) })
  const here = await driver.list(AbortSignal.timeout(60_000))
  const running: string[] = []
  for (const v of here) {
    if (!config.ha.vms.some(e => e.id === v.id) && !agreed.some(e => e.id === v.id)) continue
    if (v.state === 'running') { running.push(v.id); continue }
    const r = await haExec({ kind: 'haStop', vm: v.id, epoch: -1, mode: 'destroy', reason: 'superseded' }, AbortSignal.timeout(60_000))
    log.warn(`ha: destroyed the ${v.state} leftover copy of ${v.id} at start-up${r.ok ? '' : ` (failed: ${r.code})`}`)
  }
  const options = await haCoreOptions(config.ha, new Map(config.cluster.members.map(m => [m.name, m.publicKey])), store, running)
  log.info(`ha: ${agreed.length > 0 ? agreed.length : config.ha.vms.length} protected VM(s), running here: ${running.join(', ') || 'none'}`)
  return options
}

interface Replicas {
  defs: ReplicaVmDef[]
  options: Awaited<ReturnType<typeof replicaCoreOptions>>
  splitter: IptablesSplitter
  split: (effects: SplitEffect[]) => void
}

/**
 * Replicas of stateless VMs: their boot definitions, the journal, and the split of their VIPs
 * (emptied at start: the core says again what to split once it runs).
 */
async function startReplicas (config: AgentConfig, store: Store, logger: Logger): Promise<Replicas> {
  const log = logger.forComponent('agent:main')
  const defs = resolveReplicaVms(config.replication, [
    ...config.ha.vms.map(v => ({ id: v.id, vcpus: v.vcpus, memMiB: v.memMiB, kernel: v.kernel, initrd: v.initrd, append: v.append, image: v.image, args: v.args })),
    ...config.driver.qemu.vms.map(v => ({ id: v.id, vcpus: v.vcpus, memMiB: v.memMiB, kernel: v.kernel, initrd: v.initrd, append: v.append, args: v.args }))
  ].map(d => Object.fromEntries(Object.entries(d).filter(([, x]) => x !== undefined)) as unknown as ReplicaVmDef))
  const options = await replicaCoreOptions(config.replication, defs, store)
  const splitter = new IptablesSplitter({}, logger)
  if (!(await splitter.clear())) log.warn('replication: could not reset the connection split at start-up (iptables); replicas will get no connections from this host')
  log.info(`replication: ${defs.length} stateless VM(s) (${defs.map(d => d.id).join(', ')}), mode ${config.replication.params.mode}`)
  const splitState = new SplitState(
    vm => config.vips.list.filter(e => e.binding.kind === 'vm' && e.binding.vm === vm).map(e => e.address.split('/')[0] as string),
    host => {
      const m = config.cluster.members.find(x => x.publicKey === host)
      if (m === undefined) return null
      return config.replication.serviceAddresses[m.name] ?? parseAddress(m.address, 'member').host
    },
    logger.forComponent('agent:split')
  )
  return { defs, options, splitter, split: effects => { void splitter.apply(splitState.update(effects)) } }
}

/**
 * Memory inside the host (memory section): the balloon loop, for drivers with a balloon side, and
 * with memory.ksm the KSM loop it steps. A kernel without KSM (or without the advisor that
 * memory.ksmPolicy.advisor asks for) runs without it and says why.
 */
async function memoryLoop (config: AgentConfig, driver: HypervisorDriver, logger: Logger): Promise<BalloonController | null> {
  // The host's KSM settings as they were before a run that changed them and never stopped
  // cleanly: back first, whatever this run does with KSM.
  const sysfs = new KsmSysfs({ stateFile: path.join(config.node.stateDir, 'ksm-settings.json') })
  const rec = await sysfs.recover()
  const ksmLog = logger.forComponent('agent:ksm')
  if (rec.restored) ksmLog.warn(`the previous run changed KSM and did not stop cleanly: the host's settings are back (${Object.entries(rec.settings).map(([k, v]) => `${k}=${v}`).join(', ')})`)
  if (rec.failed.length > 0) ksmLog.error(`KSM settings of a previous run not all restored: ${rec.failed.join('; ')}`)
  if (!('memoryFacts' in driver) || !('balloon' in driver)) return null
  let ksm: KsmController | undefined
  if (config.memory.ksm) {
    const log = ksmLog
    let params = config.memory.ksmPolicy
    if (!(await sysfs.available())) {
      log.error('memory.ksm is on, but this kernel has no KSM (/sys/kernel/mm/ksm); page sharing is only reported')
    } else {
      if (params.advisor && !(await sysfs.hasAdvisor())) {
        log.error('memory.ksmPolicy.advisor is on, but this kernel has no KSM advisor (Linux >= 6.7); the agent sets the scan rate itself')
        params = { ...params, advisor: false }
      }
      ksm = new KsmController(params, { sysfs, logger })
    }
  }
  return new BalloonController(config.memory, {
    driver: driver as HypervisorDriver & BalloonDriver,
    host: hostMemory({ ksmdCpuSeconds: async () => await sysfs.ksmdCpuSeconds() }),
    logger,
    ...(ksm !== undefined ? { ksm } : {})
  })
}

/**
 * Dynamic CPU allocation (cpu section): the VMs' cgroups and the loop that sets their weights, for
 * drivers that run the VMs' processes here (QEMU). A host without a cpu cgroup controller, or where
 * the groups cannot be made, runs without it and says why.
 */
async function cpuLoop (config: AgentConfig, driver: HypervisorDriver, logger: Logger): Promise<CpuController | null> {
  if (!config.cpu.allocate) return null
  const log = logger.forComponent('agent:cpu')
  if (!('pid' in driver) || typeof (driver as { pid?: unknown }).pid !== 'function') {
    log.error(`cpu.allocate is on, but driver.kind ${config.driver.kind} does not run the VMs' processes here; CPU allocation is off`)
    return null
  }
  const { CgroupCpu, detectCpuCgroup, processSchedSeconds } = await import('./adapters/cgroup-cpu.js')
  const layout = detectCpuCgroup()
  if (layout === null) { log.error('cpu.allocate is on, but this host has no cpu cgroup controller (v2 or v1); CPU allocation is off'); return null }
  const cg = new CgroupCpu(layout, { parent: config.cpu.cgroupParent, vmCores: config.cpu.vmCores })
  try { await cg.setup() } catch (err) { log.error('cpu.allocate is on, but the VMs\' cgroup cannot be set up; CPU allocation is off', { err }); return null }
  log.info(`CPU allocation on: cgroups v${layout.version} at ${cg.dir}`)
  const pidOf = (driver as unknown as { pid: (id: string) => number | undefined }).pid.bind(driver)
  return new CpuController({
    params: config.cpu.params,
    capacityCores: config.cpu.vmCores ?? availableParallelism(),
    setting: vm => {
      const e = config.cpu.vms[vm]
      return { qos: e?.qos ?? 'normal', weight: e?.weight ?? 1, capCores: e?.capCores ?? null }
    }
  }, { cgroup: cg, pid: pidOf, schedSeconds: processSchedSeconds, logger })
}

/**
 * The sampler: the real host (systeminformation) or the driver's VMs against a declared capacity.
 * At every sample the balloon loop (when there is one) takes a step over the VMs listed, off the
 * sample's path and one step at a time; it leaves alone the VMs `moving` names (in a migration).
 */
async function hostSample (config: AgentConfig, driver: HypervisorDriver, memory: BalloonController | null, cpu: CpuController | null, logger: Logger, moving: () => ReadonlySet<string>): Promise<(signal: AbortSignal) => Promise<HostSample>> {
  // systeminformation costs about 8 MiB of RSS: load it only when the real host is sampled.
  const sampler: HostSampler = config.sampler.kind === 'system'
    ? (await import('./adapters/si-sampler.js')).siSampler({})({ logger })
    : driverSampler(config, driver)
  let stepping = false
  let cpuStepping = false
  return async (signal) => {
    const [host, vms] = await Promise.all([sampler.sample(signal), driver.list(signal)])
    if (memory !== null && !stepping) {
      stepping = true
      void memory.step(vms, signal, moving()).finally(() => { stepping = false })
    }
    if (cpu !== null && !cpuStepping) {
      cpuStepping = true
      void cpu.step(vms).finally(() => { cpuStepping = false })
    }
    // The last steps' pictures go into the host's load report (one sample behind).
    const m = memory?.status()
    // A verdict older than a few samples (the CPU step failing since) is not reported.
    const cs = cpu?.status()
    const c = cs != null && Date.now() - cs.atMs <= 3 * config.sampler.intervalMs ? cs.allocation : undefined
    return {
      ...host,
      vms,
      ...(m != null ? { memory: hostMemoryReport(m.host, m.ballooning) } : {}),
      ...(c != null && c.contended && c.resolved ? { cpuResolved: true } : {})
    }
  }
}

/** The control API (unix socket, and TCP read-only without the token) and the web view beside it. */
function controlApi (config: AgentConfig, cred: { token: string | null, gid: number | null }, core: AgentCore, runtime: Runtime, status: () => StatusPayload, webStatus: () => WebStatus, views: ReturnType<typeof viewSources>, logger: Logger, memory: (() => MemoryPayload) | null, keptDisks: () => unknown[]): Component[] {
  const apiAddr = parseAddress(config.node.apiListen, 'node.apiListen')
  mkdirSync(path.dirname(config.node.apiSocket), { recursive: true, mode: 0o755 })
  // The read-only web page on the TCP listener, drawn from this agent's own view (web-view.ts).
  const overload = config.migration.policy.overload
  const plan = (): PlanPayload => planPayload(core.plan(), { id: core.status().self, name: config.node.name }, id => core.member(id)?.name ?? id.slice(0, 8), Date.now())
  // The page samples every second whether or not anyone watches: it reads the members alone, not
  // the whole status (process, mesh and core counters), which is the API's to build on request.
  const web = webView({})({
    status: webStatus,
    migrations: () => core.migrations(),
    plan,
    ha: views.ha,
    vips: views.vips,
    tickMs: config.core.tickMs,
    ...(overload.kind === 'thr' || overload.kind === 'kOfN' ? { overloadThreshold: overload.threshold } : {})
  })
  const api = httpApi({
    host: apiAddr.host,
    port: apiAddr.port,
    socketPath: config.node.apiSocket,
    token: cred.token,
    ...(cred.gid !== null ? { socketGid: cred.gid } : {})
  })({
    logger,
    status,
    migrations: () => core.migrations(),
    keptDisks,
    plan,
    replicas: () => core.replicaRecords(),
    ...(memory !== null ? { memory } : {}),
    vips: views.vips,
    ha: views.ha,
    web: web.handle,
    request: input => { runtime.enqueue(input) },
    config: configApi(config, core, runtime)
  })
  return [
    { name: 'control API', start: async () => { await api.start() }, stop: async () => { await api.stop() } },
    { name: 'web view', start: () => { web.start() }, stop: () => { web.stop() } }
  ]
}

/** GET and POST /v1/config: the agreed cluster configuration and its changes (agent/runtime/cluster-config.ts). */
function configApi (config: AgentConfig, core: AgentCore, runtime: Runtime): NonNullable<HttpApiComponents['config']> {
  const ctx = (): ChangeContext => {
    const view = core.view()
    const known = new Set<string>([...config.driver.vms.map(v => v.id), ...config.ha.vms.map(v => v.id), ...(core.clusterConfig()?.doc?.ha?.vms ?? []).map(v => v.id)])
    for (const m of view) for (const v of m.report?.vms ?? []) known.add(v.id)
    const ha = core.haStatus()
    const doc = core.clusterConfig()?.doc
    const keyOf = (name: string): string | undefined => doc?.members.find(m => m.name === name)?.publicKey
    return {
      knownVms: known,
      vmsOn: name => view.find(m => m.name === name)?.report?.vms.map(v => v.id),
      ha: { enabled: config.ha.enabled, tieBreaker: config.ha.tieBreaker },
      protect: {
        where: vm => {
          for (const m of view) {
            if (m.state !== 'alive') continue
            const v = m.report?.vms.find(x => x.id === vm)
            if (v !== undefined) return { host: doc?.members.find(d => d.publicKey === m.id)?.name ?? m.name, state: v.state, vcpus: v.vcpus, memMiB: v.memMiB }
          }
          return undefined
        },
        // The definition this host's file gives the VM (its QEMU or simulated driver's list).
        definition: vm => {
          const q = config.driver.qemu.vms.find(v => v.id === vm)
          if (q !== undefined) return { vcpus: q.vcpus, memMiB: q.memMiB, ...(q.kernel !== undefined ? { kernel: q.kernel } : {}), ...(q.initrd !== undefined ? { initrd: q.initrd } : {}), ...(q.append !== undefined ? { append: q.append } : {}), ...(q.args !== undefined ? { args: q.args } : {}) }
          const sv = config.driver.vms.find(v => v.id === vm)
          if (sv !== undefined) return { vcpus: sv.vcpus, memMiB: sv.memMiB, kernel: `simulated:${sv.id}`, pattern: sv.pattern, ...(sv.cpuMean !== undefined ? { cpuMean: sv.cpuMean } : {}) }
          return undefined
        },
        fenced: name => {
          if (ha === null) return undefined
          const key = keyOf(name)
          if (key === undefined) return false
          return key === ha.self ? ha.selfFenced : !ha.unfenced.includes(key)
        }
      }
    }
  }
  return {
    show: () => {
      const st = core.clusterConfig()
      if (st === null) return { version: 0 }
      return {
        version: st.latest.version,
        hash: st.latest.hash,
        note: st.latest.note,
        removed: st.removed,
        members: st.doc?.members ?? [],
        rules: st.doc === null ? [] : numberedRules(st.doc).map(r => ({ number: r.number, text: r.text, rule: r.rule })),
        automation: st.doc?.automation ?? null,
        ha: { vms: st.doc?.ha?.vms ?? config.ha.vms.map(v => ({ ...v })), fromFiles: st.doc?.ha === undefined },
        inFlight: st.inFlight,
        counters: st.counters
      }
    },
    history: () => ({ versions: core.clusterConfigHistory().map(e => ({ version: e.version, hash: e.hash, base: e.base, members: e.members.length, note: e.note })) }),
    change: async (body, who) => {
      let change: ConfigChange
      try { change = parseChange(body) } catch (err) {
        if (err instanceof ConfigError) return { code: 400, body: { status: 'invalid', version: core.clusterConfig()?.latest.version ?? 0, detail: err.message, error: err.message } }
        throw err
      }
      const r = await runChange(core, input => { runtime.enqueue(input) }, change, ctx, who)
      return r.code >= 400 ? { code: r.code, body: { ...r.body, error: r.body.detail } } : r
    }
  }
}

/** The mesh's connections and traffic, for status and benchmarks. */
function meshStats (transport: Pick<ReturnType<typeof meshTransport>, 'connections' | 'stats' | 'peerStats'>): NonNullable<StatusPayload['mesh']> {
  const c = transport.connections()
  const st = transport.stats()
  return {
    peers: transport.peerStats(),
    sendDropped: { ...st.sendDropped },
    open: c.open,
    active: c.active,
    pending: c.pending,
    framesSent: st.framesSent,
    framesReceived: st.framesReceived,
    onDemandConnects: st.onDemandConnects,
    onDemandDialsQueued: st.onDemandDialsQueued,
    idleCloses: st.idleCloses,
    connectionsOpened: st.connectionsOpened,
    connectionsClosed: st.connectionsClosed,
    connectionsReplaced: st.connectionsReplaced,
    heldExpired: st.sendDropped.expired,
    dialsAttempted: st.dialsAttempted,
    dialsOpened: st.dialsOpened,
    dialsFailed: st.dialsFailed,
    dialsInFlight: st.dialsInFlight,
    directCalls: st.directCalls,
    discoveryRefreshes: st.discoveryRefreshes
  }
}

/** `starling status` and the web view's snapshot of this agent. */
function statusSource (config: AgentConfig, self: { id: string, name: string }, core: AgentCore, runtime: Runtime, transport: Pick<ReturnType<typeof meshTransport>, 'peerChecks' | 'connections' | 'stats' | 'peerStats'>, startupCpu: StartupCpu, memory: BalloonController | null): () => StatusPayload {
  const memoryOf = (m: BalloonController): StatusPayload['memory'] => {
    const st = m.status()
    return st === null ? null : { atMs: st.atMs, ballooning: st.ballooning, host: st.host, counters: { ...m.counters } }
  }
  return () => ({
    ...(memory !== null ? { memory: memoryOf(memory) } : {}),
    cluster: config.cluster.name,
    self,
    members: core.view(),
    core: { ...core.status() },
    runtime: { ...runtime.stats },
    process: processStats(startupCpu),
    mesh: meshStats(transport),
    settingsMismatches: transport.peerChecks().map(c => ({ ...c, name: config.cluster.members.find(m => m.publicKey === c.peer)?.name ?? c.peer.slice(0, 8) }))
  })
}

/** `starling vips` and `starling ha status`, drawn from the core. */
function viewSources (config: AgentConfig, self: { id: string, name: string }, core: AgentCore, haWatchdog: HaWatchdogState): { vips: () => VipsPayload | null, ha: () => HaPayload | null } {
  const name = (id: string): string => core.member(id)?.name ?? id.slice(0, 8)
  return {
    vips: () => {
      const r = core.vips()
      return r === null ? null : vipsPayload(r, self, name, config.core.tickMs, Date.now())
    },
    ha: () => {
      const r = core.haStatus()
      return r === null ? null : haPayload(r, self, name, config.core.tickMs, { ...haWatchdog })
    }
  }
}

/**
 * The calendar jobs start once every configured member is alive, or CRON_START_LATEST_MS after
 * the start: loading node-cron and the time-zone data its first schedule reads costs about
 * 30-40 ms of CPU, which would otherwise compete with the joining of the mesh (bench/mesh.md).
 * A slot that falls before then is skipped; the next one runs (hourly and 5-minute jobs).
 */
function calendarJobs (config: AgentConfig, core: AgentCore, store: LevelStore, status: () => StatusPayload, logger: Logger): Component {
  const log = logger.forComponent('agent:main')
  const cronList: CronJob[] = [
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
  let jobs: CronJobs | null = null
  let stopped = false
  let gate: NodeJS.Timeout | null = null
  const startedAt = Date.now()
  const startCron = async (): Promise<void> => {
    const { cronJobs } = await import('./adapters/cron-jobs.js')
    if (stopped) return
    jobs = cronJobs({ jobs: cronList })({ logger })
    jobs.start()
  }
  return {
    name: 'calendar jobs',
    start: () => {
      gate = setInterval(() => {
        const alive = core.view().filter(m => m.state === 'alive').length
        if (alive < config.cluster.members.length && Date.now() - startedAt < CRON_START_LATEST_MS) return
        if (gate !== null) clearInterval(gate)
        startCron().catch((err: unknown) => { log.error('cron jobs could not start', { err }) })
      }, CRON_GATE_POLL_MS)
      gate.unref()
    },
    stop: () => {
      stopped = true
      if (gate !== null) clearInterval(gate)
      jobs?.stop()
    }
  }
}

/**
 * The watchdog device of `ha.watchdog` (agent/adapters/watchdog-device.ts), only when this host
 * protects VMs. Before anything starts it is prepared (softdog loaded when missing, as root) and
 * checked without being opened; it is opened once the tick loop runs (opening starts the timer),
 * and only then does the core hear that this host holds a fence (haLocalFence). Any problem
 * (missing, not openable, a timeout the HA timing does not allow) leaves the host unfenced: it
 * protects no VM and restarts none, and says so at error level and in `starling ha status`.
 */
function haWatchdogInit (config: AgentConfig): WatchdogDeviceInit | null {
  if (!config.ha.enabled) return null
  const w = config.ha.watchdog
  return {
    device: w.device,
    maxTimeoutMs: config.ha.config.watchdogTicks * config.core.tickMs,
    tickMs: config.core.tickMs,
    ...(w.timeoutSec !== null ? { timeoutSec: w.timeoutSec } : {})
  }
}

/** The HA fence's state, for `starling ha status` and the log. */
interface HaWatchdogState { device: string | null, problem: string | null }

/** Before anything starts: prepare and check the device (never throws; a problem is recorded). */
function checkHaWatchdog (config: AgentConfig, logger: Logger): HaWatchdogState {
  const init = haWatchdogInit(config)
  if (init === null) return { device: null, problem: null }
  const log = logger.forComponent('agent:watchdog')
  const prep = prepareWatchdogDevice({ device: init.device, loadSoftdog: config.ha.watchdog.loadSoftdog, softMarginSec: Math.floor(init.maxTimeoutMs / 1000) })
  for (const d of prep.did) log.info(`watchdog: ${d}`)
  if (!prep.ok) return { device: init.device, problem: prep.problem }
  const r = checkWatchdogDevice(init, logger)
  return { device: init.device, problem: r.ok ? null : r.reason }
}

function openHaWatchdog (config: AgentConfig, logger: Logger, runtime: Runtime, core: AgentCore, state: HaWatchdogState): WatchdogDevice | null {
  const log = logger.forComponent('agent:watchdog')
  const init = haWatchdogInit(config)
  if (init === null) return null
  const refuse = (why: string): null => {
    state.problem = why
    log.error(`HA REFUSED ON THIS HOST: no watchdog that resets it (${why}). Its protected VMs are NOT protected and it restarts none; the cluster restarts a VM of this host only after \`starling ha confirm-down ${config.node.name}\`. The systemd watchdog only restarts the agent, so it is never taken for a fence.`, { device: init.device })
    return null
  }
  if (state.problem !== null) return refuse(state.problem)
  const r = openWatchdogDevice(init, {
    logger,
    healthy: progressGate(() => runtime.stats.ticks, () => core.haWatchdogOk()),
    mayDisarm: () => core.haWatchdogOk()
  })
  if (!r.ok) return refuse(r.reason)
  r.watchdog.start()
  runtime.enqueue({ type: 'haLocalFence', fenced: true })
  log.info('watchdog device armed: this host is reset if its agent hangs; its HA VMs are protected', { device: init.device, ...r.watchdog.stats() })
  return r.watchdog
}
