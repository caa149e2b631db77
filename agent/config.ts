/**
 * The agent's configuration: one JSON file (systemd/starling.example.json documents every field).
 * `validateConfig()` turns untrusted JSON into an AgentConfig or throws a ConfigError whose message
 * names the offending field; nothing downstream re-checks what it checked.
 */
import { ConfigError, defaultCoreConfig, localTestCoreConfig, validateCoreConfig, type CoreConfig } from './core/config.js'

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
    /** "ip:port" of the local HTTP API (status, members, metrics). @default "127.0.0.1:7946" */
    apiListen: string
  }
  driver: {
    /** 'sim' is the embedded default; real drivers ('qemu', 'libvirt') come with migration. */
    kind: 'sim'
    vms: SimVmConfig[]
  }
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
  log: {
    /** 'debug' | 'info' | 'warn' | 'error'. @default 'info' */
    level: 'debug' | 'info' | 'warn' | 'error'
  }
}

type Obj = Record<string, unknown>

function isObj (v: unknown): v is Obj {
  return typeof v === 'object' && v !== null && !Array.isArray(v)
}

function fail (path: string, what: string): never {
  throw new ConfigError(`config: ${path} ${what}`)
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
export function validateConfig (raw: unknown, opts: { testProfile?: boolean } = {}): AgentConfig {
  if (!isObj(raw)) fail('(root)', 'must be a JSON object')
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
  const driver = obj(raw, 'driver', 'config', true)
  const kind = driver.kind ?? 'sim'
  if (kind !== 'sim') fail('driver.kind', `must be "sim" in this version (got ${JSON.stringify(kind)})`)
  const sampler = obj(raw, 'sampler', 'config', true)
  const skind = sampler.kind ?? 'system'
  if (skind !== 'system' && skind !== 'driver') fail('sampler.kind', `must be "system" or "driver" (got ${JSON.stringify(skind)})`)
  const cap = obj(sampler, 'capacity', 'sampler', true)
  const log = obj(raw, 'log', 'config', true)
  const level = log.level ?? 'info'
  if (!(LOG_LEVELS as readonly unknown[]).includes(level)) fail('log.level', `must be one of ${LOG_LEVELS.join(', ')}`)
  const coreRaw = obj(raw, 'core', 'config', true)
  const base = opts.testProfile === true ? localTestCoreConfig() : defaultCoreConfig()
  for (const k of Object.keys(coreRaw)) {
    if (!(k in base)) fail(`core.${k}`, 'is not a known core setting')
  }
  return {
    cluster: { name: str(cluster, 'name', 'cluster', 'starling'), secret, members },
    node: { name, listen, stateDir: str(node, 'stateDir', 'node', '/var/lib/starling'), apiListen },
    driver: { kind: 'sim', vms: validateVms(driver.vms) },
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
    core: validateCoreConfig({ ...base, ...coreRaw } as CoreConfig),
    log: { level: level as AgentConfig['log']['level'] }
  }
}
