/**
 * Composition root: the only place that chooses real implementations and touches process.*.
 * `runAgent(configFile)` resolves with the exit code once the agent has stopped (SIGTERM/SIGINT).
 */
import { readFile } from 'node:fs/promises'
import { mkdirSync } from 'node:fs'
import path from 'node:path'
import { ConfigError, validateConfig, parseAddress, type AgentConfig } from './config.js'
import { AgentCore, type HostSample, type SplitEffect } from './core/index.js'
import { loadPersistedCoreState } from './runtime/restore.js'
import type { Logger } from './ports/logger.js'
import type { HostSampler } from './ports/host-sampler.js'
import type { HypervisorDriver } from './ports/hypervisor-driver.js'
import { jsonLogger } from './lib/logger.js'
import { levelStore } from './adapters/level-store.js'
import { loadOrCreateKeyPair } from './adapters/identity.js'
import { hyperswarmTransport } from './adapters/hyperswarm-transport.js'
import { clusterSettings } from './cluster-settings.js'
import { encodeEnvelope, decodeFrame } from './adapters/wire-codec.js'
import { simDriver, type SimDriverInit } from './adapters/sim-driver.js'
import type { CronJob, CronJobs } from './adapters/cron-jobs.js'
import { systemdNotifier } from './adapters/systemd-notify.js'
import { checkWatchdogDevice, openWatchdogDevice, prepareWatchdogDevice, progressGate, type WatchdogDevice, type WatchdogDeviceInit } from './adapters/watchdog-device.js'
import { httpApi } from './adapters/http-api.js'
import { webView } from './adapters/web-view.js'
import { readApiToken, resolveGroup } from './adapters/api-credentials.js'
import { Runtime } from './runtime/runtime.js'
import { driverExecutor } from './runtime/driver-commands.js'
// The QEMU and libvirt drivers are loaded only when configured (startQemu, startLibvirt): the
// embedded simulated driver's agent does not pay for their code.
import type { QemuDriver } from './adapters/qemu-driver.js'
import type { LibvirtDriver } from './adapters/libvirt-driver.js'
import { haPayload, vipsPayload, type StatusPayload } from './api/payloads.js'
import { arpVip } from './adapters/arp-vip.js'
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
  const driver = new QemuDriver({ runDir: q.runDir, accel: q.accel, qemuBinary: q.binary, hostCpuCores: config.sampler.capacity.cpuCores }, { logger })
  await driver.reattach()
  if (firstBoot) {
    for (const v of q.vms) {
      const extra: Record<string, unknown> = {}
      if (v.kernel !== undefined) extra.kernel = v.kernel
      if (v.initrd !== undefined) extra.initrd = v.initrd
      if (v.append !== undefined) extra.append = v.append
      if (v.args !== undefined) extra.args = v.args
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
    ...(config.sampler.kind === 'driver' ? { hostCpuCores: config.sampler.capacity.cpuCores } : {}),
    ...(l.serialDir !== undefined ? { serialDir: l.serialDir } : {})
  }, { logger })
  const vms = await driver.list(AbortSignal.timeout(60_000))
  logger.forComponent('agent:main').info(`libvirt at ${l.uri}: ${vms.length} domain(s) (${vms.map(v => `${v.id} ${v.state}`).join(', ')}); migrations arrive at ${l.peerUri}`)
  return driver
}

export async function runAgent (configFile: string): Promise<number> {
  const startupCpu: StartupCpu = { loadedS: cpuSeconds(), readyS: null }
  const config = await loadConfigFile(configFile)
  const logger: Logger = jsonLogger({ level: config.log.level, journaldPrefix: process.env.JOURNAL_STREAM !== undefined })
  const log = logger.forComponent('agent:main')
  const self = config.cluster.members.find(m => m.name === config.node.name)
  if (self === undefined) throw new ConfigError(`config: node.name "${config.node.name}" is not one of cluster.members`)
  const haWatchdog = checkHaWatchdog(config, logger)
  // Control API credentials: a bad token file or group stops the start-up here, with its reason.
  const apiToken = readApiToken(config.node.apiTokenFile)
  const apiGid = config.node.apiSocketGroup !== null ? resolveGroup(config.node.apiSocketGroup) : null

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
    maxFrameBytes: config.core.frameBytesMax,
    keepAliveMs: config.mesh.keepAliveMs,
    timeoutMs: config.mesh.timeoutMs,
    // Proven and compared at every connection: agent/cluster-settings.ts
    settings: clusterSettings(config),
    names: Object.fromEntries(config.cluster.members.map(m => [m.publicKey, m.name]))
  })({ logger })

  const restored = await loadPersistedCoreState(store)
  // Virtual IPs: an agent killed by SIGKILL left its addresses on the interface, and a restarted
  // agent does not know whether it still owns them: remove them before the core claims anything.
  const vipOptions = config.vips.list.length > 0
    ? await vipCoreOptions(config.vips, new Map(config.cluster.members.map(m => [m.name, m.publicKey])), store)
    : undefined
  const vipApplier = new VipApplier(arpVip({})({ logger }), logger)
  if (vipOptions !== undefined) {
    for (const f of await removeLocalVips(config.vips, arpVip({})({ logger }), logger)) log.warn(`vip: could not remove ${f} at start-up`)
  }
  const driver: HypervisorDriver = config.driver.kind === 'qemu'
    ? await startQemu(config, restored === null, logger)
    : config.driver.kind === 'libvirt'
      ? await startLibvirt(config, logger)
      : simDriver({
        vms: config.driver.vms,
        seed: Number.parseInt(selfId.slice(0, 8), 16),
        hostCpuCores: config.sampler.kind === 'driver' ? config.sampler.capacity.cpuCores : undefined,
        traceDir: path.dirname(path.resolve(configFile)),
        // The migration link runs at the simulated host's declared network speed (the core plans with it too).
        linkMbps: config.sampler.kind === 'driver' ? config.sampler.capacity.netMbps : undefined,
        // The VM set outlives an agent restart (as QEMU guests do); with no such file the
        // configured VMs start only on a first boot (no core state yet), as the QEMU driver's.
        stateFile: path.join(config.node.stateDir, 'sim-vms.json'),
        startConfigured: restored === null,
        // Tests inject driver faults into an agent process through its environment (JSON of SimDriverInit.faults).
        ...(process.env.STARLING_TEST_SIM_FAULTS !== undefined ? { faults: JSON.parse(process.env.STARLING_TEST_SIM_FAULTS) as SimDriverInit['faults'] } : {})
      })({ logger })
  // High availability: the protected VMs this host runs now (a paused leftover is destroyed: a
  // fresh agent does not know under which claim it was paused).
  const haExec = haDriverExecutor(driver, { spec: vm => haBootSpec(config.ha, vm) })
  let haOptions: Awaited<ReturnType<typeof haCoreOptions>> | undefined
  if (config.ha.enabled) {
    const here = await driver.list(AbortSignal.timeout(60_000))
    const running: string[] = []
    for (const v of here) {
      if (!config.ha.vms.some(e => e.id === v.id)) continue
      if (v.state === 'running') { running.push(v.id); continue }
      const r = await haExec({ kind: 'haStop', vm: v.id, epoch: -1, mode: 'destroy', reason: 'superseded' }, AbortSignal.timeout(60_000))
      log.warn(`ha: destroyed the ${v.state} leftover copy of ${v.id} at start-up${r.ok ? '' : ` (failed: ${r.code})`}`)
    }
    haOptions = await haCoreOptions(config.ha, new Map(config.cluster.members.map(m => [m.name, m.publicKey])), store, running)
    log.info(`ha: ${config.ha.vms.length} protected VM(s), running here: ${running.join(', ') || 'none'}`)
  }
  // Replicas of stateless VMs: their boot definitions, the journal, and the split of their VIPs
  // (emptied at start: the core says again what to split once it runs).
  let replicaOptions: Awaited<ReturnType<typeof replicaCoreOptions>> | undefined
  let replicaDefs: ReplicaVmDef[] = []
  let splitter: IptablesSplitter | null = null
  if (config.replication.enabled) {
    replicaDefs = resolveReplicaVms(config.replication, [
      ...config.ha.vms.map(v => ({ id: v.id, vcpus: v.vcpus, memMiB: v.memMiB, kernel: v.kernel, initrd: v.initrd, append: v.append, image: v.image, args: v.args })),
      ...config.driver.qemu.vms.map(v => ({ id: v.id, vcpus: v.vcpus, memMiB: v.memMiB, kernel: v.kernel, initrd: v.initrd, append: v.append, args: v.args }))
    ].map(d => Object.fromEntries(Object.entries(d).filter(([, x]) => x !== undefined)) as unknown as ReplicaVmDef))
    replicaOptions = await replicaCoreOptions(config.replication, replicaDefs, store)
    splitter = new IptablesSplitter({}, logger)
    if (!(await splitter.clear())) log.warn('replication: could not reset the connection split at start-up (iptables); replicas will get no connections from this host')
    log.info(`replication: ${replicaDefs.length} stateless VM(s) (${replicaDefs.map(d => d.id).join(', ')}), mode ${config.replication.params.mode}`)
  }
  const core = new AgentCore({
    self: selfId,
    name: self.name,
    addr: config.node.listen,
    config: config.core,
    seed: Number.parseInt(selfId.slice(0, 8), 16) ^ Date.now(),
    seeds: peers.map(m => ({ id: m.publicKey, name: m.name, addr: m.address })),
    ...(restored !== null ? { restored } : {}),
    migration: config.migration,
    ...(vipOptions !== undefined ? { vips: vipOptions } : {}),
    ...(haOptions !== undefined ? { ha: haOptions } : {}),
    ...(replicaOptions !== undefined ? { replicas: replicaOptions } : {})
  })
  const splitState = new SplitState(
    vm => config.vips.list.filter(e => e.binding.kind === 'vm' && e.binding.vm === vm).map(e => e.address.split('/')[0] as string),
    host => {
      const m = config.cluster.members.find(x => x.publicKey === host)
      if (m === undefined) return null
      return config.replication.serviceAddresses[m.name] ?? parseAddress(m.address, 'member').host
    },
    logger.forComponent('agent:split')
  )

  // systeminformation costs about 8 MiB of RSS: load it only when the real host is sampled.
  const sampler = config.sampler.kind === 'system'
    ? (await import('./adapters/si-sampler.js')).siSampler({})({ logger })
    : driverSampler(config, driver)
  const sample = async (signal: AbortSignal): Promise<HostSample> => {
    const [host, vms] = await Promise.all([sampler.sample(signal), driver.list(signal)])
    return { ...host, vms }
  }

  const runtime = new Runtime({ tickMs: config.core.tickMs, sampleIntervalMs: config.sampler.intervalMs, probeDatagrams: config.mesh.probeDatagrams }, {
    core, transport, store, logger, sample, codec: { encode: encodeEnvelope, decode: (frame, from) => decodeFrame(frame, { maxFrameBytes: config.core.frameBytesMax, expectFrom: from }) },
    driver: driverExecutor(driver, { migrationListenHost: config.driver.kind === 'libvirt' ? config.driver.libvirt.migrationListen : config.driver.qemu.migrationListen }),
    vip: vipApplier,
    ha: haExec,
    ...(config.replication.enabled ? { replica: replicaExecutor(driver, replicaDefs) } : {}),
    ...(splitter !== null ? { split: (effects: SplitEffect[]) => { const s = splitter; if (s !== null) void s.apply(splitState.update(effects)) } } : {}),
    ...(process.env.STARLING_TEST_EXIT_AT !== undefined ? { exitAtStep: process.env.STARLING_TEST_EXIT_AT } : {})
  })

  const status = (): StatusPayload => ({
    cluster: config.cluster.name,
    self: { id: selfId, name: self.name },
    members: core.view(),
    core: { ...core.status() },
    runtime: { ...runtime.stats },
    process: processStats(startupCpu),
    settingsMismatches: transport.peerChecks().map(c => ({ ...c, name: config.cluster.members.find(m => m.publicKey === c.peer)?.name ?? c.peer.slice(0, 8) }))
  })
  const apiAddr = parseAddress(config.node.apiListen, 'node.apiListen')
  mkdirSync(path.dirname(config.node.apiSocket), { recursive: true, mode: 0o755 })
  const vipsNow = () => {
    const r = core.vips()
    return r === null ? null : vipsPayload(r, { id: selfId, name: self.name }, id => core.member(id)?.name ?? id.slice(0, 8), config.core.tickMs, Date.now())
  }
  const haNow = () => {
    const r = core.haStatus()
    return r === null ? null : haPayload(r, { id: selfId, name: self.name }, id => core.member(id)?.name ?? id.slice(0, 8), config.core.tickMs, { ...haWatchdog })
  }
  // The read-only web page on the TCP listener, drawn from this agent's own view (web-view.ts).
  const overload = config.migration.policy.overload
  const web = webView({})({
    status,
    migrations: () => core.migrations(),
    ha: haNow,
    vips: vipsNow,
    tickMs: config.core.tickMs,
    ...(overload.kind === 'thr' || overload.kind === 'kOfN' ? { overloadThreshold: overload.threshold } : {})
  })
  const api = httpApi({
    host: apiAddr.host,
    port: apiAddr.port,
    socketPath: config.node.apiSocket,
    token: apiToken,
    ...(apiGid !== null ? { socketGid: apiGid } : {})
  })({
    logger,
    status,
    migrations: () => core.migrations(),
    replicas: () => core.replicaRecords(),
    vips: vipsNow,
    ha: haNow,
    web: web.handle,
    request: input => { runtime.enqueue(input) }
  })
  // The watchdog is pinged only while the loop makes progress (a hung agent gets fenced by
  // systemd) and HA allows it (a host cut off from the majority past its fence grace is reset).
  // Each pinger has its own progress gate (one must not consume the progress the other checks).
  const notifier = systemdNotifier({})({ logger, healthy: progressGate(() => runtime.stats.ticks, () => core.haWatchdogOk()) })
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
  // The calendar jobs start once every configured member is alive, or CRON_START_LATEST_MS after
  // the start: loading node-cron and the time-zone data its first schedule reads costs about
  // 30-40 ms of CPU, which would otherwise compete with the joining of the mesh (bench/mesh.md).
  // A slot that falls before then is skipped; the next one runs (hourly and 5-minute jobs).
  const cron: { jobs: CronJobs | null } = { jobs: null }
  let cronStopped = false
  const startedAt = Date.now()
  const startCron = async (): Promise<void> => {
    const { cronJobs } = await import('./adapters/cron-jobs.js')
    if (cronStopped) return
    const jobs = cronJobs({ jobs: cronList })({ logger })
    jobs.start()
    cron.jobs = jobs
  }
  const cronGate = setInterval(() => {
    const alive = core.view().filter(m => m.state === 'alive').length
    if (alive < config.cluster.members.length && Date.now() - startedAt < CRON_START_LATEST_MS) return
    clearInterval(cronGate)
    startCron().catch((err: unknown) => { log.error('cron jobs could not start', { err }) })
  }, CRON_GATE_POLL_MS)
  cronGate.unref()

  await runtime.start()
  await api.start()
  web.start()
  const watchdog = openHaWatchdog(config, logger, runtime, core, haWatchdog)
  await notifier.ready(`cluster ${config.cluster.name}: ${config.cluster.members.length} members configured`)
  startupCpu.readyS = cpuSeconds()
  log.info('agent started', { id: selfId.slice(0, 8), name: self.name, listen: config.node.listen, api: config.node.apiListen, control: config.node.apiSocket, tcpChanges: apiToken !== null ? 'with the bearer token' : 'refused (read-only)', incarnation: core.status().incarnation, cpuMs: { loaded: Math.round(startupCpu.loadedS * 1000), ready: Math.round(startupCpu.readyS * 1000) } })

  const signal = await new Promise<string>(resolve => {
    process.once('SIGTERM', () => resolve('SIGTERM'))
    process.once('SIGINT', () => resolve('SIGINT'))
  })
  log.info('agent stopping', { signal })
  await notifier.stopping()
  cronStopped = true
  clearInterval(cronGate)
  cron.jobs?.stop()
  web.stop()
  await api.stop()
  await runtime.stop({ leave: true })
  watchdog?.close(true)
  await vipApplier.close()
  if (splitter !== null) await splitter.clear()
  await notifier.close()
  await driver.close()
  await store.close()
  log.info('agent stopped')
  return 0
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
