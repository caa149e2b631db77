/**
 * The agent's configuration: one JSON file (systemd/starling.example.json documents every field).
 * `validateConfig()` turns untrusted JSON into an AgentConfig or throws a ConfigError whose message
 * names the offending field; nothing downstream re-checks what it checked.
 */
import {
  ConfigError, defaultCoreConfig, defaultMigrationConfig, localTestCoreConfig, validateCoreConfig,
  validateMigrationConfig, AUTOMATION_LEVELS, type AutomationLevel, type CoreConfig, type MigrationConfig
} from './core/index.js'
import { validateRules } from '../policies/rules.js'
import { validatePolicyConfig } from '../policies/config.js'
import type { PolicyConfig } from '../policies/plan.js'
import type { RuleSet } from '../policies/types.js'
import { validateVipSection, type VipSection } from './runtime/vip-setup.js'
import { validateHaSection, type HaSection } from './runtime/ha-setup.js'
import { validateReplicationSection, type ReplicationSection } from './runtime/replica-setup.js'
import { validateMemorySection, type MemorySection } from './runtime/memory-setup.js'
import { validateCpuSection, type CpuSection } from './runtime/cpu-setup.js'
import { checkKeys } from './lib/known-keys.js'
import { CONFIG_KEYS } from './config-keys.js'
import { isObj, type Obj } from './lib/obj.js'

export { ConfigError }

/** One member of the cluster, as every agent's configuration lists it. */
export interface MemberConfig {
  /** Human name, unique in the cluster (the hostname by default). */
  name: string
  /** Hex Noise public key (64 hex chars); `starling keygen` prints it. Only these keys may connect. */
  publicKey: string
  /** "ip:port" where that agent's DHT node listens; peers bootstrap from it. */
  address: string
}

/** A simulated VM of the embedded driver. */
export interface SimVmConfig {
  id: string
  vcpus: number
  memMiB: number
  /** Load pattern: 'constant' | 'sine' | 'walk' | 'spiky' | 'trace:<file>'. @default 'sine' */
  pattern: string
  /** Mean CPU use as a fraction of the VM's vcpus, [0, 1]. @default 0.3 */
  cpuMean?: number
}

/** The QEMU driver's settings (driver.kind 'qemu'). */
export interface QemuConfig {
  /** One sub-directory per VM (QMP socket, serial log). @default "<stateDir>/vms" */
  runDir: string
  /** 'auto' probes /dev/kvm; both ends of a migration must agree. @default 'auto' */
  accel: 'auto' | 'kvm' | 'tcg'
  /** Address incoming migrations listen on (a port is chosen per migration). @default the host of node.listen */
  migrationListen: string
  /** @default 'qemu-system-x86_64' */
  binary: string
  /**
   * Where a migration with storage creates the disk images of a VM that comes here:
   * `<imageDir>/<vm>/<file name>`. Unset: at the same path as on the source host.
   */
  imageDir?: string
  /**
   * Directories on storage that every host reaches (NFS, a cluster file system). A disk under one
   * of them stays where it is when its VM moves; every other disk is local and moves with its
   * VM (a migration with storage). @default [] (every disk is local)
   */
  sharedStorage: string[]
  /** @default 'qemu-img' */
  imgBinary: string
  /** VMs started when the agent starts on an empty state directory (first boot only). */
  vms: Array<{ id: string, vcpus: number, memMiB: number, kernel?: string, initrd?: string, append?: string, args?: string[], balloon?: boolean, disks?: Array<{ file: string, format: 'raw' | 'qcow2' }> }>
}

/** The libvirt driver's settings (driver.kind 'libvirt'). libvirtd keeps the VMs; the agent only lists and migrates them. */
export interface LibvirtConfig {
  /** This host's libvirt connection URI. @default 'qemu:///system' */
  uri: string
  /**
   * This host's libvirt URI as the other hosts' libvirtd reach it (the p2p migration target):
   * `peerUris[node.name]` when given, else the `peerUri` template with `{host}` replaced by
   * migrationListen and `{name}` by node.name. @default 'qemu+tcp://{host}/system'
   */
  peerUri: string
  /** Every member's libvirt URI as its peers reach it, by member name (the same map on every host). @default {} */
  peerUris: Record<string, string>
  /** Address the destination QEMU listens on for incoming migrations (libvirt picks the port). @default the host of node.listen */
  migrationListen: string
  /** Domain type of the domains the agent creates: 'auto' probes /dev/kvm. @default 'auto' */
  domainType: 'auto' | 'kvm' | 'qemu'
  /** Directory of the VMs' serial console logs (`<id>.log`); an incoming VM's console is moved here. @default none */
  serialDir?: string
  /** Domains are persistent: migrate with --persistent --undefinesource. @default false */
  persistent: boolean
  /** QEMU binary libvirt runs for the agent's domains (<emulator>; the same path on every host). @default libvirt's choice */
  emulator?: string
  /**
   * Where a migration with storage creates an incoming VM's disk images:
   * `<imageDir>/<vm>/<file name>`. Unset: at the same path as on the source host.
   */
  imageDir?: string
  /**
   * Directories on storage every host reaches: file disks under them (and on a network or
   * cluster file system: NFS, CIFS, Ceph, GFS2, OCFS2, Lustre) stay put; other file disks are
   * local and are copied with their VM (--copy-storage-all). @default []
   */
  sharedStorage: string[]
}

export interface AgentConfig {
  cluster: {
    /** Cluster name, shown by `starling status`. */
    name: string
    /** Shared secret: the mesh topic derives from it. At least 16 characters. */
    secret: string
    members: MemberConfig[]
  }
  node: {
    /** This agent's name; must be one of cluster.members. */
    name: string
    /** "ip:port" of this agent's DHT node (a concrete address, not 0.0.0.0). */
    listen: string
    /** Directory of the agent's LevelDB state and key pair. @default "/var/lib/starling" */
    stateDir: string
    /**
     * "ip:port" of the HTTP API's TCP listener: read-only views (status, members, migrations,
     * metrics, health); changes only with the bearer token of apiTokenFile. @default "127.0.0.1:7946"
     */
    apiListen: string
    /**
     * The control socket: the whole API, changes included, for root and the members of the
     * socket's group (mode 0660, the libvirt and Docker model). @default "/run/starling/control.sock"
     */
    apiSocket: string
    /** Group of the control socket (name or gid). @default the agent's own group (starling under the unit) */
    apiSocketGroup: string | null
    /**
     * File holding the bearer token that lets a TCP client make changes (readable by the agent, by
     * no one else: mode 0640 root:starling or stricter). Absent file: the TCP listener is read-only.
     * @default "/etc/starling/api-token"
     */
    apiTokenFile: string
  }
  mesh: {
    /**
     * Keep-alive interval of an idle mesh connection, ms. The failure detector (SWIM probes) does
     * not need it; it keeps NAT and firewall state alive and lets the transport reap a dead
     * connection. Lower = more packets; a stall longer than timeoutMs drops the connections.
     * @default 15000
     */
    keepAliveMs: number
    /** A connection with nothing received for this long is closed, ms; > keepAliveMs. @default 45000 */
    timeoutMs: number
    /**
     * A connection to a member outside this host's active view (opened on demand for an indirect
     * probe, a join, a migration, a claim) is closed after this long with no frame either way, ms.
     * @default 20000
     */
    idleCloseMs: number
    /**
     * Send SWIM probes (ping, ack, nack, ping-req) as encrypted datagrams on the mesh connection
     * instead of stream frames, as memberlist sends its probes over UDP: a lost probe is a
     * lost probe (no retransmission delaying the verdict). @default true
     */
    probeDatagrams: boolean
  }
  driver: {
    /** 'sim' is the embedded default (simulated VMs, no migration); 'qemu' runs real VMs over QMP; 'libvirt' drives libvirtd's domains through virsh. */
    kind: 'sim' | 'qemu' | 'libvirt'
    vms: SimVmConfig[]
    /**
     * kind 'sim' only: carry the VIP addresses on a simulated interface (agent/adapters/sim-vip.ts)
     * instead of the host's real one (iproute2 and arping), for demos that run without root or
     * network namespaces. @default false
     */
    simulatedVips: boolean
    /** For kind 'qemu'. */
    qemu: QemuConfig
    /** For kind 'libvirt'. */
    libvirt: LibvirtConfig
  }
  /** Live migration: limits, timeouts (ticks), rules and placement policy. */
  migration: MigrationConfig
  sampler: {
    /**
     * 'system' samples the real host with systeminformation; 'driver' derives host load from the
     * driver's VMs and the declared capacity below (for demos and simulated hosts). @default 'system'
     */
    kind: 'system' | 'driver'
    /** Wall milliseconds between samples. @default 1000 */
    intervalMs: number
    /** Declared capacity for kind 'driver'. */
    capacity: { cpuCores: number, cpuMipsPerCore: number, memMiB: number, netMbps: number }
  }
  /** Membership and scheduling tunables; every field has a default (agent/core/config.ts). */
  core: CoreConfig
  /** Virtual IPs (`vips`) and their tunables (`vip`); see agent/runtime/vip-setup.ts. */
  vips: VipSection
  /** High availability: protected VMs, tie-breaker, arming and timing (ticks); see agent/runtime/ha-setup.ts. */
  ha: HaSection
  /** Replicas of stateless VMs instead of migrations, and the split of their VIPs; see agent/runtime/replica-setup.ts. */
  replication: ReplicationSection
  /** Memory inside this host: ballooning and its policy; see agent/runtime/memory-setup.ts. */
  memory: MemorySection
  /** CPU inside this host: QoS classes, weights and quotas; see agent/runtime/cpu-setup.ts. */
  cpu: CpuSection
  log: {
    /** 'debug' | 'info' | 'warn' | 'error'. @default 'info' */
    level: 'debug' | 'info' | 'warn' | 'error'
  }
}

function fail (path: string, what: string): never {
  throw new ConfigError(`config: ${path} ${what}`, path)
}

/**
 * Runs a section's own validation; its ConfigError gets `section` in front of its field path (the
 * section's checks name fields relative to it) and, when given, a new message.
 */
function inSection<T> (section: string, check: () => T, message?: (msg: string) => string): T {
  try { return check() } catch (err) {
    if (!(err instanceof ConfigError)) throw err
    const msg = message === undefined ? err.message : message(err.message)
    throw section === '' ? new ConfigError(msg, err.path) : err.withPrefix(section, msg)
  }
}

function str (o: Obj, key: string, path: string, def?: string): string {
  const v = o[key]
  if (v === undefined && def !== undefined) return def
  if (typeof v !== 'string' || v.length === 0) fail(`${path}.${key}`, 'must be a non-empty string')
  return v
}

function num (o: Obj, key: string, path: string, def: number | undefined, min: number, max = Number.MAX_SAFE_INTEGER): number {
  const v = o[key]
  if (v === undefined && def !== undefined) return def
  if (typeof v !== 'number' || !Number.isFinite(v)) fail(`${path}.${key}`, 'must be a number')
  if (v < min || v > max) fail(`${path}.${key}`, `must be between ${min} and ${max} (got ${v})`)
  return v
}

function obj (o: Obj, key: string, path: string, optional = false): Obj {
  const v = o[key]
  if (v === undefined && optional) return {}
  if (!isObj(v)) fail(`${path}.${key}`, 'must be an object')
  return v
}

/** "ip:port" with a concrete IPv4 address. */
export function parseAddress (s: string, path: string): { host: string, port: number } {
  const m = /^(\d{1,3}(?:\.\d{1,3}){3}):(\d{1,5})$/.exec(s)
  if (m === null) fail(path, `must be "ip:port" with an IPv4 address (got "${s}")`)
  const host = m[1] as string
  const port = Number(m[2])
  if (host.split('.').some(p => Number(p) > 255)) fail(path, `has an invalid IPv4 address (got "${s}")`)
  if (host === '0.0.0.0') fail(path, 'must be a concrete address, not 0.0.0.0 (peers bootstrap from it)')
  if (port < 1 || port > 65535) fail(path, `has an invalid port (got ${port})`)
  return { host, port }
}

const LOG_LEVELS = ['debug', 'info', 'warn', 'error'] as const

function validateMembers (raw: unknown): MemberConfig[] {
  if (!Array.isArray(raw) || raw.length === 0) fail('cluster.members', 'must be a non-empty array')
  const names = new Set<string>(); const keys = new Set<string>(); const addrs = new Set<string>()
  return raw.map((m: unknown, i): MemberConfig => {
    const p = `cluster.members[${i}]`
    if (!isObj(m)) fail(p, 'must be an object')
    const name = str(m, 'name', p)
    const publicKey = str(m, 'publicKey', p).toLowerCase()
    if (!/^[0-9a-f]{64}$/.test(publicKey)) fail(`${p}.publicKey`, 'must be 64 hex characters (see `starling keygen`)')
    const address = str(m, 'address', p)
    parseAddress(address, `${p}.address`)
    if (names.has(name)) fail(`${p}.name`, `duplicates member name "${name}"`)
    if (keys.has(publicKey)) fail(`${p}.publicKey`, `duplicates the key of another member`)
    if (addrs.has(address)) fail(`${p}.address`, `duplicates the address of another member`)
    names.add(name); keys.add(publicKey); addrs.add(address)
    return { name, publicKey, address }
  })
}

function validateVms (raw: unknown): SimVmConfig[] {
  if (raw === undefined) return []
  if (!Array.isArray(raw)) fail('driver.vms', 'must be an array')
  const ids = new Set<string>()
  return raw.map((v: unknown, i): SimVmConfig => {
    const p = `driver.vms[${i}]`
    if (!isObj(v)) fail(p, 'must be an object')
    const id = str(v, 'id', p)
    if (ids.has(id)) fail(`${p}.id`, `duplicates VM id "${id}"`)
    ids.add(id)
    const pattern = str(v, 'pattern', p, 'sine')
    if (!/^(constant|sine|walk|spiky|trace:.+)$/.test(pattern)) fail(`${p}.pattern`, `must be constant, sine, walk, spiky or trace:<file> (got "${pattern}")`)
    const vm: SimVmConfig = { id, vcpus: num(v, 'vcpus', p, 1, 1, 1024), memMiB: num(v, 'memMiB', p, 1024, 16), pattern }
    if (v.cpuMean !== undefined) vm.cpuMean = num(v, 'cpuMean', p, undefined, 0, 1)
    return vm
  })
}

/** Validate untrusted JSON. Throws ConfigError with the field path on the first problem. */
function simulatedVips (v: unknown, kind: string): boolean {
  if (v === undefined) return false
  if (typeof v !== 'boolean') fail('driver.simulatedVips', `must be true or false (got ${JSON.stringify(v)})`)
  if (v && kind !== 'sim') fail('driver.simulatedVips', `is for driver.kind "sim" only (got "${kind}"): real VMs need their addresses on a real interface`)
  return v as boolean
}

export function validateConfig (raw: unknown, opts: { testProfile?: boolean } = {}): AgentConfig {
  if (!isObj(raw)) fail('(root)', 'must be a JSON object')
  // Unknown keys first (agent/config-keys.ts): a typo often explains the error a value would give.
  checkKeys(raw, CONFIG_KEYS)
  const cluster = obj(raw, 'cluster', 'config')
  const secret = str(cluster, 'secret', 'cluster')
  if (secret.length < 16) fail('cluster.secret', 'must be at least 16 characters')
  const members = validateMembers(cluster.members)
  const node = obj(raw, 'node', 'config')
  const name = str(node, 'name', 'node')
  const self = members.find(m => m.name === name)
  if (self === undefined) fail('node.name', `"${name}" is not one of cluster.members`)
  const listen = str(node, 'listen', 'node', self.address)
  parseAddress(listen, 'node.listen')
  const apiListen = str(node, 'apiListen', 'node', '127.0.0.1:7946')
  parseAddress(apiListen, 'node.apiListen')
  const apiSocket = str(node, 'apiSocket', 'node', '/run/starling/control.sock')
  if (!apiSocket.startsWith('/')) fail('node.apiSocket', `must be an absolute path (got ${JSON.stringify(apiSocket)})`)
  if (Buffer.byteLength(apiSocket) > 107) fail('node.apiSocket', `is longer than a unix socket path may be (107 bytes; got ${Buffer.byteLength(apiSocket)})`)
  const apiSocketGroup = node.apiSocketGroup === undefined ? null : String(str(node, 'apiSocketGroup', 'node'))
  const apiTokenFile = str(node, 'apiTokenFile', 'node', '/etc/starling/api-token')
  if (!apiTokenFile.startsWith('/')) fail('node.apiTokenFile', `must be an absolute path (got ${JSON.stringify(apiTokenFile)})`)
  const mesh = obj(raw, 'mesh', 'config', true)
  const keepAliveMs = num(mesh, 'keepAliveMs', 'mesh', 15_000, 100, 600_000)
  const timeoutMs = num(mesh, 'timeoutMs', 'mesh', 3 * keepAliveMs, 200, 3_600_000)
  if (timeoutMs <= keepAliveMs) fail('mesh.timeoutMs', `must be greater than mesh.keepAliveMs (${keepAliveMs})`)
  const idleCloseMs = num(mesh, 'idleCloseMs', 'mesh', 20_000, 1000, 3_600_000)
  const probeDatagrams = mesh.probeDatagrams ?? true
  if (typeof probeDatagrams !== 'boolean') fail('mesh.probeDatagrams', `must be true or false (got ${JSON.stringify(probeDatagrams)})`)
  const driver = obj(raw, 'driver', 'config', true)
  const kind = driver.kind ?? 'sim'
  if (kind !== 'sim' && kind !== 'qemu' && kind !== 'libvirt') fail('driver.kind', `must be "sim", "qemu" or "libvirt" (got ${JSON.stringify(kind)})`)
  const stateDir = str(node, 'stateDir', 'node', '/var/lib/starling')
  const qemu = validateQemu(obj(driver, 'qemu', 'driver', true), stateDir, parseAddress(listen, 'node.listen').host)
  const libvirt = validateLibvirt(obj(driver, 'libvirt', 'driver', true), name, members.map(m => m.name), parseAddress(listen, 'node.listen').host)
  const sampler = obj(raw, 'sampler', 'config', true)
  const skind = sampler.kind ?? 'system'
  if (skind !== 'system' && skind !== 'driver') fail('sampler.kind', `must be "system" or "driver" (got ${JSON.stringify(skind)})`)
  const cap = obj(sampler, 'capacity', 'sampler', true)
  const log = obj(raw, 'log', 'config', true)
  const level = log.level ?? 'info'
  if (!(LOG_LEVELS as readonly unknown[]).includes(level)) fail('log.level', `must be one of ${LOG_LEVELS.join(', ')}`)
  const coreRaw = obj(raw, 'core', 'config', true)
  const base = opts.testProfile === true ? localTestCoreConfig() : defaultCoreConfig()
  const core = inSection('core', () => validateCoreConfig({ ...base, ...coreRaw } as CoreConfig))
  const migration = validateMigration(obj(raw, 'migration', 'config', true), core.tickMs)
  const vips = validateVipSection(raw.vips, raw.vip, members.map(m => m.name), core.tickMs)
  const ha = validateHaSection(raw.ha, members.map(m => m.name))
  const replication = validateReplicationSection(raw.replication, members.map(m => m.name))
  const memory = validateMemorySection(raw.memory, [
    ...qemu.vms.map((v, i) => ({ id: v.id, memMiB: v.memMiB, balloon: v.balloon ?? true, path: `driver.qemu.vms[${i}]` })),
    ...ha.vms.map((v, i) => ({ id: v.id, memMiB: v.memMiB, balloon: true, path: `ha.vms[${i}]` }))
  ])
  return {
    cluster: { name: str(cluster, 'name', 'cluster', 'starling'), secret, members },
    node: { name, listen, stateDir, apiListen, apiSocket, apiSocketGroup, apiTokenFile },
    mesh: { keepAliveMs, timeoutMs, idleCloseMs, probeDatagrams: probeDatagrams as boolean },
    driver: { kind, vms: validateVms(driver.vms), simulatedVips: simulatedVips(driver.simulatedVips, kind), qemu, libvirt },
    migration,
    sampler: {
      kind: skind,
      intervalMs: num(sampler, 'intervalMs', 'sampler', 1000, 100, 3_600_000),
      capacity: {
        cpuCores: num(cap, 'cpuCores', 'sampler.capacity', 16, 1, 4096),
        cpuMipsPerCore: num(cap, 'cpuMipsPerCore', 'sampler.capacity', 1000, 1),
        memMiB: num(cap, 'memMiB', 'sampler.capacity', 65536, 64),
        netMbps: num(cap, 'netMbps', 'sampler.capacity', 10000, 1)
      }
    },
    core,
    vips,
    ha,
    replication,
    memory,
    cpu: validateCpuSection(raw.cpu),
    log: { level: level as AgentConfig['log']['level'] }
  }
}

/** Extra QEMU arguments of a VM (devices such as a NIC), passed as they are. */
export function qemuArgs (v: unknown, path: string): string[] {
  if (!Array.isArray(v) || !v.every(a => typeof a === 'string')) fail(path, 'must be an array of strings')
  return v as string[]
}

function validateQemu (q: Obj, stateDir: string, listenHost: string): QemuConfig {
  const accel = q.accel ?? 'auto'
  if (accel !== 'auto' && accel !== 'kvm' && accel !== 'tcg') fail('driver.qemu.accel', `must be auto, kvm or tcg (got ${JSON.stringify(accel)})`)
  const vmsRaw = q.vms ?? []
  if (!Array.isArray(vmsRaw)) fail('driver.qemu.vms', 'must be an array')
  const vms = vmsRaw.map((v: unknown, i): QemuConfig['vms'][number] => {
    const p = `driver.qemu.vms[${i}]`
    if (!isObj(v)) fail(p, 'must be an object')
    const out: QemuConfig['vms'][number] = { id: str(v, 'id', p), vcpus: num(v, 'vcpus', p, 1, 1, 256), memMiB: num(v, 'memMiB', p, 256, 16) }
    for (const k of ['kernel', 'initrd', 'append'] as const) if (v[k] !== undefined) out[k] = str(v, k, p)
    if (v.args !== undefined) out.args = qemuArgs(v.args, `${p}.args`)
    if (v.balloon !== undefined) {
      if (typeof v.balloon !== 'boolean') fail(`${p}.balloon`, `must be true or false (got ${JSON.stringify(v.balloon)})`)
      out.balloon = v.balloon
    }
    if (v.disks !== undefined) {
      if (!Array.isArray(v.disks)) fail(`${p}.disks`, 'must be an array of {file, format}')
      out.disks = v.disks.map((d: unknown, j) => {
        const dp = `${p}.disks[${j}]`
        if (!isObj(d)) fail(dp, 'must be an object with file and format')
        const file = str(d, 'file', dp)
        if (!file.startsWith('/') || file.includes(',')) fail(`${dp}.file`, `must be an absolute path without commas (got ${JSON.stringify(file)})`)
        const format = d.format ?? 'qcow2'
        if (format !== 'raw' && format !== 'qcow2') fail(`${dp}.format`, `must be raw or qcow2 (got ${JSON.stringify(format)})`)
        return { file, format }
      })
    }
    return out
  })
  const shared = q.sharedStorage ?? []
  if (!Array.isArray(shared) || !shared.every(d => typeof d === 'string' && d.startsWith('/'))) fail('driver.qemu.sharedStorage', 'must be an array of absolute directory paths')
  const out: QemuConfig = {
    runDir: str(q, 'runDir', 'driver.qemu', `${stateDir}/vms`),
    accel,
    migrationListen: str(q, 'migrationListen', 'driver.qemu', listenHost),
    binary: str(q, 'binary', 'driver.qemu', 'qemu-system-x86_64'),
    sharedStorage: shared as string[],
    imgBinary: str(q, 'imgBinary', 'driver.qemu', 'qemu-img'),
    vms
  }
  if (q.imageDir !== undefined) {
    out.imageDir = str(q, 'imageDir', 'driver.qemu')
    if (!out.imageDir.startsWith('/')) fail('driver.qemu.imageDir', `must be an absolute path (got ${JSON.stringify(out.imageDir)})`)
  }
  return out
}

const LIBVIRT_URI_RE = /^[a-z][a-z0-9+.-]*:\/\/[^\s]*$/i

function libvirtUri (o: Obj, key: string, path: string, def?: string): string {
  const v = str(o, key, path, def)
  if (!LIBVIRT_URI_RE.test(v)) fail(`${path}.${key}`, `must be a libvirt URI such as qemu+tcp://host/system (got ${JSON.stringify(v)})`)
  return v
}

function validateLibvirt (l: Obj, self: string, memberNames: string[], listenHost: string): LibvirtConfig {
  const domainType = l.domainType ?? 'auto'
  if (domainType !== 'auto' && domainType !== 'kvm' && domainType !== 'qemu') fail('driver.libvirt.domainType', `must be auto, kvm or qemu (got ${JSON.stringify(domainType)})`)
  const migrationListen = str(l, 'migrationListen', 'driver.libvirt', listenHost)
  if (/[\s/]/.test(migrationListen)) fail('driver.libvirt.migrationListen', `must be a host address (got ${JSON.stringify(migrationListen)})`)
  const peerUris: Record<string, string> = {}
  if (l.peerUris !== undefined) {
    if (!isObj(l.peerUris)) fail('driver.libvirt.peerUris', 'must be an object of member name to libvirt URI')
    for (const k of Object.keys(l.peerUris)) {
      if (!memberNames.includes(k)) fail(`driver.libvirt.peerUris.${k}`, 'is not one of cluster.members')
      peerUris[k] = libvirtUri(l.peerUris, k, 'driver.libvirt.peerUris')
    }
  }
  const template = str(l, 'peerUri', 'driver.libvirt', 'qemu+tcp://{host}/system')
  const host = migrationListen.includes(':') ? `[${migrationListen}]` : migrationListen
  const peerUri = peerUris[self] ?? template.replace(/\{host\}/g, host).replace(/\{name\}/g, self)
  if (!LIBVIRT_URI_RE.test(peerUri)) fail('driver.libvirt.peerUri', `must be a libvirt URI such as qemu+tcp://{host}/system (got ${JSON.stringify(template)})`)
  if (l.persistent !== undefined && typeof l.persistent !== 'boolean') fail('driver.libvirt.persistent', 'must be true or false')
  const out: LibvirtConfig = {
    uri: libvirtUri(l, 'uri', 'driver.libvirt', 'qemu:///system'),
    peerUri,
    peerUris,
    migrationListen,
    domainType,
    persistent: l.persistent === true,
    sharedStorage: []
  }
  const shared = l.sharedStorage ?? []
  if (!Array.isArray(shared) || !shared.every(d => typeof d === 'string' && d.startsWith('/'))) fail('driver.libvirt.sharedStorage', 'must be an array of absolute directory paths')
  out.sharedStorage = shared as string[]
  if (l.imageDir !== undefined) {
    const dir = str(l, 'imageDir', 'driver.libvirt')
    if (!dir.startsWith('/')) fail('driver.libvirt.imageDir', `must be an absolute path (got ${JSON.stringify(dir)})`)
    out.imageDir = dir
  }
  if (l.serialDir !== undefined) {
    const dir = str(l, 'serialDir', 'driver.libvirt')
    if (!dir.startsWith('/')) fail('driver.libvirt.serialDir', `must be an absolute path (got ${JSON.stringify(dir)})`)
    out.serialDir = dir
  }
  if (l.emulator !== undefined) {
    const bin = str(l, 'emulator', 'driver.libvirt')
    if (!bin.startsWith('/')) fail('driver.libvirt.emulator', `must be an absolute path (got ${JSON.stringify(bin)})`)
    out.emulator = bin
  }
  return out
}

/**
 * The placement policy (policies/config.ts): each section given (overload, underload,
 * selection, placement) replaces the default section whole, since its fields depend on its kind;
 * guards merge field by field; intervalSec and maxMovesPerDecision replace. The result must pass
 * validatePolicyConfig, whose message names the field.
 */
function validatePolicySection (raw: unknown, d: PolicyConfig): PolicyConfig {
  if (raw === undefined) return d
  if (!isObj(raw)) fail('migration.policy', 'must be an object')
  for (const k of ['overload', 'underload', 'selection', 'placement', 'guards'] as const) {
    if (raw[k] !== undefined && !isObj(raw[k])) fail(`migration.policy.${k}`, 'must be an object')
  }
  const p = { ...d, ...raw, guards: { ...d.guards, ...(raw.guards as object | undefined) } } as PolicyConfig
  return inSection('migration.policy', () => validatePolicyConfig(p), msg => `config: migration.policy ${msg}`)
}

function validateMigration (m: Obj, tickMs: number): MigrationConfig {
  const d = defaultMigrationConfig()
  const out: MigrationConfig = { ...d }
  out.policy = validatePolicySection(m.policy, d.policy)
  // The policy's guards (hold time, cool-down) and its forecast horizon count decisions of
  // policy.intervalSec, as the trace simulator measured them: decide that often unless told.
  const balanceDefault = Math.max(1, Math.round(out.policy.intervalSec * 1000 / tickMs))
  for (const k of ['outMax', 'inMax', 'clusterMax', 'leaseTicks', 'intentTimeoutTicks', 'prepareTimeoutTicks', 'pollTicks', 'resendTicks', 'retainTicks', 'retainMax', 'decisionTicks', 'balanceTicks', 'bandwidthBytesPerS', 'maxBandwidthBytes', 'diskCopiesMax', 'maxDiskCopySeconds'] as const) {
    out[k] = num(m, k, 'migration', k === 'balanceTicks' ? balanceDefault : d[k], 0)
  }
  const onStall = (v: unknown, path: string): 'abort' | 'postcopy' => v === 'abort' || v === 'postcopy' ? v : fail(path, `must be abort or postcopy (got ${JSON.stringify(v)})`)
  if (m.onStall !== undefined) out.onStall = onStall(m.onStall, 'migration.onStall')
  if (m.onStallByVm !== undefined) {
    if (!isObj(m.onStallByVm)) fail('migration.onStallByVm', 'must be an object')
    out.onStallByVm = Object.fromEntries(Object.entries(m.onStallByVm).map(([k, v]) => [k, onStall(v, `migration.onStallByVm.${k}`)]))
  }
  if (m.memOvercommitRatio !== undefined) out.memOvercommitRatio = num(m, 'memOvercommitRatio', 'migration', 1, 1, 4)
  if (m.autoBalance !== undefined && typeof m.autoBalance !== 'boolean') fail('migration.autoBalance', `must be true or false (got ${JSON.stringify(m.autoBalance)})`)
  if (m.autoBalance !== undefined) out.autoBalance = m.autoBalance === true
  if (m.automation !== undefined) {
    if (!AUTOMATION_LEVELS.includes(m.automation as AutomationLevel)) fail('migration.automation', `must be one of ${AUTOMATION_LEVELS.join(', ')} (got ${JSON.stringify(m.automation)})`)
    out.automation = m.automation as AutomationLevel
  }
  if (m.rules !== undefined) {
    if (!isObj(m.rules)) fail('migration.rules', 'must be an object with vmVm and vmHost arrays')
    const rules = { vmVm: Array.isArray(m.rules.vmVm) ? m.rules.vmVm : [], vmHost: Array.isArray(m.rules.vmHost) ? m.rules.vmHost : [] } as unknown as RuleSet
    const errs = validateRules(rules)
    if (errs.length > 0) fail('migration.rules', errs[0] ?? 'invalid')
    out.rules = rules
  }
  return inSection('', () => validateMigrationConfig(out), msg => `config: ${msg}`)
}
