/**
 * Real agent processes in the test bed's host namespaces: one `starling agent` per namespace,
 * its mesh address the namespace's address on the bridge, its API on the namespace's loopback
 * (read through `ip netns exec ... starling vips --json`). Simulated VMs (driver 'sim'), so a
 * VM-bound VIP follows the VM the configuration starts on a host; or, with `qemu`, real QEMU
 * guests under TCG (driver 'qemu'), started by the agents inside their namespaces (so a guest's
 * user-networking port forward listens on its host's addresses, the VIP included) and outliving
 * their agent as in production.
 *
 * With `watchdog`, every host gets an emulated watchdog device (agent/sim/fifo-watchdog.ts: a
 * FIFO in the cluster's directory, read by this process; the agents inside their namespaces open
 * it by its path as `ha.watchdog.device`). Its reset models a host reset: kill -9 of that host's
 * agent and of every QEMU it started, and the VIP addresses dropped (a rebooted host comes back
 * without them). Never a real /dev/watchdog: its reset would reset the machine running the tests.
 *
 * destroy() kills every agent it started (the bed kills them too) and every QEMU the agents
 * started (by their pid files; also at process exit), and removes the state directories; the
 * bed removes the namespaces.
 */
import { createWriteStream, readFileSync, readdirSync, type WriteStream } from 'node:fs'
import { mkdtemp, mkdir, readFile, rm, writeFile } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { execFile, type ChildProcess } from 'node:child_process'
import { promisify } from 'node:util'
import { loadOrCreateKeyPair } from '../../agent/adapters/identity.js'
import { identityFile } from '../../agent/main.js'
import type { StatusPayload, VipsPayload } from '../../agent/api/payloads.js'
import type { Testbed, TestNode } from './testbed.js'
import { FifoWatchdog } from '../../agent/sim/fifo-watchdog.js'

export interface AgentVip {
  id: string
  address: string
  iface: string
  vm?: string
  hosts?: string[]
}

/** A real guest a host boots on its first start (driver.qemu.vms[]). */
export interface QemuGuest {
  id: string
  vcpus: number
  memMiB: number
  kernel: string
  initrd: string
  append: string
  /** Extra QEMU arguments (a NIC). */
  args?: string[]
}

export interface AgentClusterInit {
  bed: Testbed
  /** The compiled CLI (dist/agent/cli/starling.js). */
  cli: string
  vips: AgentVip[]
  /** Simulated VMs started on a host (by bed host name). */
  vmsOn?: Record<string, string[]>
  /** Core settings (ticks); merged over the test profile (FAST_CORE), or over the production defaults with `productionCore`. */
  core?: Record<string, unknown>
  /** Use the production core profile (100 ms ticks) instead of FAST_CORE. @default false */
  productionCore?: boolean
  /** Real QEMU guests (TCG) instead of simulated VMs: what each host (bed name) boots on its first start. */
  qemu?: { vmsOn: Record<string, QemuGuest[]> }
  /** The `ha` section of every host's configuration (member names are the bed's host names). */
  ha?: Record<string, unknown>
  /**
   * An emulated watchdog device on every host (needs `ha`): its timeout, seconds, which must be
   * <= ha.timing.watchdogTicks x tickMs (the agent refuses a longer one).
   */
  watchdog?: { timeoutSec: number }
  /** The `migration` section. */
  migration?: Record<string, unknown>
  /** The `replication` section. */
  replication?: Record<string, unknown>
  /** VIP tunables (ticks). */
  vip?: Record<string, unknown>
  meshPort?: number
}

export interface AgentHost {
  node: TestNode
  name: string
  publicKey: string
  configFile: string
  stateDir: string
  logFile: string
}

/** Fast failure detection for namespace tests: 20 ms ticks, probes every 100 ms, suspicion 0.3-0.6 s. */
export const FAST_CORE = {
  tickMs: 20,
  probeIntervalTicks: 5,
  probeTimeoutTicks: 3,
  probeDeadlineTicks: 9,
  nackTimeoutTicks: 3,
  suspicionMult: 3,
  suspicionMaxTimeoutMult: 2,
  suspicionConfirmations: 1,
  gossipIntervalTicks: 2,
  pushPullIntervalTicks: 100,
  joinRetryTicks: 25,
  deathNoticeIntervalTicks: 25,
  reportIntervalTicks: 100,
  reportPullIntervalTicks: 50,
  reportStaleGraceTicks: 50,
  memberSnapshotIntervalTicks: 250
}

export interface LogLine { ts: number, msg: string, raw: Record<string, unknown> }

export class AgentCluster {
  readonly hosts: AgentHost[] = []
  private readonly procs = new Map<string, ChildProcess>()
  private readonly logs = new Map<string, WriteStream>()
  /** The emulated watchdog of each host (with `watchdog`). */
  readonly watchdogs = new Map<string, FifoWatchdog>()
  /** Emulated host resets: host and time (ms since the epoch). */
  readonly resets: Array<{ host: string, at: number }> = []
  private readonly pendingResets: Array<Promise<void>> = []
  private constructor (readonly dir: string, private readonly init: AgentClusterInit) {}

  static async create (init: AgentClusterInit): Promise<AgentCluster> {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'starling-vip-agents-'))
    const c = new AgentCluster(dir, init)
    if (init.qemu !== undefined) process.once('exit', c.onExit)
    try {
      await c.write()
      c.startWatchdogs()
    } catch (err) {
      c.stopWatchdogs()
      await rm(dir, { recursive: true, force: true })
      throw err
    }
    return c
  }

  /** The FIFO a host's agent opens as its watchdog device. */
  watchdogPath (name: string): string { return path.join(this.dir, `${name}.watchdog`) }

  private startWatchdogs (): void {
    const w = this.init.watchdog
    if (w === undefined) return
    if (this.init.ha === undefined) throw new Error('AgentCluster: watchdog needs ha')
    for (const h of this.hosts) {
      const dog = new FifoWatchdog(this.watchdogPath(h.name), w.timeoutSec * 1000, () => { this.resetHost(h.name) })
      dog.start()
      this.watchdogs.set(h.name, dog)
    }
  }

  private stopWatchdogs (): void {
    for (const dog of this.watchdogs.values()) dog.stop()
    this.watchdogs.clear()
  }

  /** What a watchdog reset does to a host here: its agent and its QEMU die at once, its addresses go. */
  private resetHost (name: string): void {
    this.resets.push({ host: name, at: Date.now() })
    const p = this.procs.get(name)
    if (p !== undefined && this.running(name)) p.kill('SIGKILL')
    for (const vm of this.qemuVms(name)) this.killQemu(name, vm)
    this.pendingResets.push(this.releaseLocal(name).catch(() => {}))
  }

  private async write (): Promise<void> {
    const { bed } = this.init
    const port = this.init.meshPort ?? 4100
    for (const node of bed.hosts) {
      const stateDir = path.join(this.dir, node.name)
      await mkdir(stateDir, { recursive: true })
      const kp = await loadOrCreateKeyPair(identityFile(stateDir))
      this.hosts.push({
        node, name: node.name, publicKey: Buffer.from(kp.publicKey).toString('hex'), stateDir,
        configFile: path.join(this.dir, `${node.name}.json`), logFile: path.join(this.dir, `${node.name}.log`)
      })
    }
    const members = this.hosts.map(h => ({ name: h.name, publicKey: h.publicKey, address: `${h.node.ip}:${port}` }))
    for (const h of this.hosts) {
      const config = {
        cluster: { name: 'vip-test', secret: 'vip-namespace-test-secret', members },
        node: { name: h.name, listen: `${h.node.ip}:${port}`, stateDir: h.stateDir, apiListen: '127.0.0.1:7946', apiSocket: path.join(h.stateDir, 'control.sock') },
        driver: this.init.qemu !== undefined
          ? { kind: 'qemu', vms: [], qemu: { runDir: this.runDir(h.name), accel: 'tcg', vms: this.init.qemu.vmsOn[h.name] ?? [] } }
          : { kind: 'sim', vms: (this.init.vmsOn?.[h.name] ?? []).map(id => ({ id, vcpus: 1, memMiB: 256, pattern: 'constant', cpuMean: 0.1 })) },
        sampler: { kind: 'driver', intervalMs: this.init.qemu !== undefined ? 500 : 200, capacity: { cpuCores: 4, cpuMipsPerCore: 1000, memMiB: 8192, netMbps: 1000 } },
        core: this.init.productionCore === true ? { ...(this.init.core ?? {}) } : { ...FAST_CORE, ...(this.init.core ?? {}) },
        vips: this.init.vips,
        ...(this.init.vip !== undefined ? { vip: this.init.vip } : {}),
        ...(this.init.ha !== undefined
          ? { ha: this.init.watchdog !== undefined ? { ...this.init.ha, watchdog: { device: this.watchdogPath(h.name), timeoutSec: this.init.watchdog.timeoutSec, loadSoftdog: false } } : this.init.ha }
          : {}),
        ...(this.init.migration !== undefined ? { migration: this.init.migration } : {}),
        ...(this.init.replication !== undefined ? { replication: this.init.replication } : {}),
        log: { level: 'info' }
      }
      await writeFile(h.configFile, JSON.stringify(config, null, 2))
    }
  }

  host (name: string): AgentHost {
    const h = this.hosts.find(x => x.name === name)
    if (h === undefined) throw new Error(`no host ${name}`)
    return h
  }

  byMac (mac: string): AgentHost | undefined { return this.hosts.find(h => h.node.mac === mac) }

  /** The QEMU driver's run directory of a host (one sub-directory per VM). */
  runDir (name: string): string { return path.join(this.dir, name, 'vms') }

  /** The serial console log of a host's copy of `vm` (the driver truncates it at each start). */
  serialLog (name: string, vm: string): string { return path.join(this.runDir(name), vm, 'serial.log') }

  /** The pid of a host's QEMU for `vm` while it is alive (a zombie counts as dead), else null. */
  qemuPid (name: string, vm: string): number | null {
    try {
      const pid = Number(readFileSync(path.join(this.runDir(name), vm, 'qemu.pid'), 'utf8').trim())
      const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
      return /^\S+ \(.*\) [^Z]/s.test(stat) && stat.includes('qemu') ? pid : null
    } catch { return null }
  }

  /** SIGKILL a host's QEMU for `vm`; true when there was one. */
  killQemu (name: string, vm: string): boolean {
    const pid = this.qemuPid(name, vm)
    if (pid === null) return false
    try { process.kill(pid, 'SIGKILL'); return true } catch { return false }
  }

  /** Every VM a host's QEMU driver has a directory for. */
  qemuVms (name: string): string[] {
    try { return readdirSync(this.runDir(name)) } catch { return [] }
  }

  private killAllQemu (): void {
    if (this.init.qemu === undefined) return
    for (const h of this.hosts) for (const vm of this.qemuVms(h.name)) this.killQemu(h.name, vm)
  }

  private readonly onExit = (): void => { this.killAllQemu() }

  start (name: string): ChildProcess {
    const h = this.host(name)
    const child = this.init.bed.spawnIn(h.node.netns, [process.execPath, this.init.cli, 'agent', '--config', h.configFile])
    let log = this.logs.get(name)
    if (log === undefined) { log = createWriteStream(h.logFile, { flags: 'a' }); this.logs.set(name, log) }
    const out = log
    child.stdout?.on('data', (d: Buffer) => out.write(d))
    child.stderr?.on('data', (d: Buffer) => out.write(d))
    this.procs.set(name, child)
    return child
  }

  startAll (): void { for (const h of this.hosts) this.start(h.name) }

  running (name: string): boolean {
    const p = this.procs.get(name)
    return p !== undefined && p.exitCode === null && p.signalCode === null
  }

  /** SIGKILL the agent (`ip netns exec` execs node, so the child is the agent itself). Resolves at its exit. */
  async kill9 (name: string): Promise<void> {
    const p = this.procs.get(name)
    if (p === undefined || !this.running(name)) return
    const done = new Promise<void>(resolve => p.once('exit', () => resolve()))
    p.kill('SIGKILL')
    await done
  }

  async stop (name: string, timeoutMs = 8000): Promise<void> {
    const p = this.procs.get(name)
    if (p === undefined || !this.running(name)) return
    const done = new Promise<void>(resolve => p.once('exit', () => resolve()))
    p.kill('SIGTERM')
    const t = setTimeout(() => p.kill('SIGKILL'), timeoutMs)
    await done
    clearTimeout(t)
  }

  /** What systemd's ExecStopPost runs: remove this host's configured VIP addresses. */
  async releaseLocal (name: string): Promise<void> {
    const h = this.host(name)
    await this.init.bed.run(h.node.netns, [process.execPath, this.init.cli, 'vips', '--release-local', '--config', h.configFile], { timeoutMs: 10_000 })
  }

  /** `starling vips` in a host's namespace (JSON, or the text table). */
  async vips (name: string): Promise<VipsPayload> {
    const h = this.host(name)
    return JSON.parse(await this.init.bed.run(h.node.netns, [process.execPath, this.init.cli, 'vips', '--json', '--api', '127.0.0.1:7946'], { timeoutMs: 10_000 })) as VipsPayload
  }

  /** `starling status --json` in a host's namespace. */
  async status (name: string): Promise<StatusPayload> {
    const h = this.host(name)
    return JSON.parse(await this.init.bed.run(h.node.netns, [process.execPath, this.init.cli, 'status', '--json', '--api', '127.0.0.1:7946'], { timeoutMs: 10_000 })) as StatusPayload
  }

  /** `starling ha status` (the text) in a host's namespace. */
  async haText (name: string): Promise<string> {
    const h = this.host(name)
    return await this.init.bed.run(h.node.netns, [process.execPath, this.init.cli, 'ha', 'status', '--api', '127.0.0.1:7946'], { timeoutMs: 10_000 })
  }

  async vipsText (name: string): Promise<string> {
    const h = this.host(name)
    return await this.init.bed.run(h.node.netns, [process.execPath, this.init.cli, 'vips', '--api', '127.0.0.1:7946'], { timeoutMs: 10_000 })
  }

  async moveVip (via: string, vip: string, to: string): Promise<void> {
    const h = this.host(via)
    await this.init.bed.run(h.node.netns, [process.execPath, this.init.cli, 'vips', 'move', vip, to, '--api', '127.0.0.1:7946', '--socket', path.join(h.stateDir, 'control.sock')], { timeoutMs: 10_000 })
  }

  /** Hosts whose eth0 carries `address` now. */
  async holders (address: string): Promise<string[]> {
    const out: string[] = []
    await Promise.all(this.hosts.map(async h => {
      const r = await promisify(execFile)('ip', ['-n', h.node.netns, '-4', '-o', 'addr', 'show', 'dev', 'eth0'])
      if (r.stdout.includes(` ${address}/`)) out.push(h.name)
    }))
    return out.sort()
  }

  async logLines (name: string): Promise<LogLine[]> {
    let text = ''
    try { text = await readFile(this.host(name).logFile, 'utf8') } catch { return [] }
    const out: LogLine[] = []
    for (const l of text.split('\n')) {
      if (!l.startsWith('{')) continue
      try {
        const raw = JSON.parse(l) as Record<string, unknown>
        out.push({ ts: Date.parse(String(raw.ts)), msg: String(raw.msg), raw })
      } catch { /* a partial line */ }
    }
    return out
  }

  /** Earliest time (ms) any of `names` logged a line matching `re` at or after `fromMs`. */
  async firstLog (names: string[], re: RegExp, fromMs: number): Promise<number | null> {
    let best: number | null = null
    for (const n of names) {
      for (const l of await this.logLines(n)) {
        if (l.ts >= fromMs && re.test(l.msg) && (best === null || l.ts < best)) best = l.ts
      }
    }
    return best
  }

  async destroy (): Promise<void> {
    this.stopWatchdogs()
    await Promise.all(this.pendingResets)
    await Promise.all(this.hosts.map(async h => { await this.kill9(h.name) }))
    this.killAllQemu()
    process.removeListener('exit', this.onExit)
    for (const l of this.logs.values()) l.end()
    if (process.env.STARLING_KEEP_LOGS === undefined) await rm(this.dir, { recursive: true, force: true })
  }
}
