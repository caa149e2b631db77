/**
 * Every key the configuration file may hold, section by section: the one place to add a key.
 * `validateConfig` (agent/config.ts) refuses any other key before it reads a value, naming its
 * path and the known key it was probably meant to be (agent/lib/known-keys.ts):
 *
 *   config: node.apiListn: unknown key; did you mean apiListen?
 *
 * Adding a setting: one line here (`newKey: V`), then read it where its section is validated.
 * Where a spec is typed `KeysOf<T>`, the compiler also fails until T and the spec list the same
 * keys. Flat sections of tunables (core, ha.timing, vip, migration) take their keys from their
 * defaults: a tunable with a default is known without a line here.
 */
import { V, byKind, leavesOf, listOf, mapOf, renamed, type KeyObject, type KeysOf } from './lib/known-keys.js'
import { defaultCoreConfig, defaultHaConfig, defaultMigrationConfig, defaultVipConfig } from './core/index.js'
import type { AgentConfig, MemberConfig, QemuConfig, LibvirtConfig, SimVmConfig } from './config.js'
import type { HaVmEntry } from './runtime/ha-setup.js'
import type { ReplicaVmDef } from './runtime/replica-setup.js'
import type { ReplicationParams } from '../policies/replication.js'
import type { ForecastParams } from '../policies/forecast.js'
import type { OverloadParams } from '../policies/overload.js'
import type { PlacementParams } from '../policies/placement.js'
import type { SelectionParams } from '../policies/selection.js'
import type { GuardParams } from '../policies/antithrash.js'
import type { VmHostRule, VmVmRule } from '../policies/types.js'
import { defaultBalloonParams } from '../policies/balloon.js'
import { defaultKsmParams } from '../policies/ksm.js'
import type { MemorySection, MemoryVmEntry } from './runtime/memory-setup.js'
import type { CpuSection, CpuVmEntry } from './runtime/cpu-setup.js'
import { defaultCpuAllocParams } from '../policies/cpu-alloc.js'

/** Compile-time only: `spec` lists every key of T (it may list more). */
function covers<T> (spec: KeysOf<T>): void { void spec }

const member: KeysOf<MemberConfig> = { name: V, publicKey: V, address: V }

const node = {
  name: V,
  listen: V,
  stateDir: V,
  apiListen: V,
  apiSocket: V,
  apiSocketGroup: V,
  apiTokenFile: V
}
covers<AgentConfig['node']>(node)

const mesh: KeysOf<AgentConfig['mesh']> = { keepAliveMs: V, timeoutMs: V, idleCloseMs: V, probeDatagrams: V }

const simVm: KeysOf<SimVmConfig> = { id: V, vcpus: V, memMiB: V, pattern: V, cpuMean: V }

const qemuDisk: KeysOf<NonNullable<QemuConfig['vms'][number]['disks']>[number]> = { file: V, format: V }

const qemuVm: KeysOf<QemuConfig['vms'][number]> = { id: V, vcpus: V, memMiB: V, kernel: V, initrd: V, append: V, args: V, balloon: V, disks: listOf(qemuDisk) }

const qemu: KeysOf<QemuConfig> = { runDir: V, accel: V, migrationListen: V, binary: V, imageDir: V, sharedStorage: V, imgBinary: V, vms: listOf(qemuVm) }

const libvirt: KeysOf<LibvirtConfig> = {
  uri: V, peerUri: V, peerUris: mapOf(V), migrationListen: V, domainType: V, serialDir: V, persistent: V, imageDir: V, sharedStorage: V, emulator: V
}

const sampler: KeysOf<AgentConfig['sampler']> = {
  kind: V,
  intervalMs: V,
  capacity: { cpuCores: V, cpuMipsPerCore: V, memMiB: V, netMbps: V } satisfies KeysOf<AgentConfig['sampler']['capacity']>
}

// migration.policy: sections with a `kind` take the keys of that kind (policies/*.ts).
const forecast: KeysOf<ForecastParams> = { kind: V, alpha: V, beta: V, window: V, order: V }
type Overload<K> = KeysOf<Extract<OverloadParams, { kind: K }>>
const overload = byKind('kind', {
  thr: { kind: V, threshold: V } satisfies Overload<'thr'>,
  kOfN: { kind: V, threshold: V, k: V, n: V, forecast } satisfies Overload<'kOfN'>,
  iqr: { kind: V, safety: V, minSamples: V, fallback: V, quartiles: V } satisfies Overload<'iqr'>,
  mad: { kind: V, safety: V, minSamples: V, fallback: V } satisfies Overload<'mad'>,
  lr: { kind: V, safety: V, window: V, fallback: V } satisfies Overload<'lr'>,
  lrr: { kind: V, safety: V, window: V, fallback: V } satisfies Overload<'lrr'>
})
const underload = byKind('kind', {
  none: { kind: V },
  threshold: { kind: V, threshold: V, forecast, quantile: V, memFull: V },
  lowest: { kind: V }
})
const selection: KeysOf<SelectionParams> = { kind: V, seed: V }
const placement: KeysOf<PlacementParams> = { kind: V, cpuCapFraction: V, countWake: V, overload, allowInactive: V }
/** The policy counts decisions (one every intervalSec), not the core's 100 ms ticks. */
const DECISIONS = 'it counts policy decisions, one every intervalSec, not 100 ms core ticks'
const guardKeys: KeysOf<GuardParams> = { holdDecisions: V, cooldownDecisions: V, minGain: V }
const guards = { ...guardKeys, holdTicks: renamed('holdDecisions', DECISIONS), cooldownTicks: renamed('cooldownDecisions', DECISIONS) }
const policy = { overload, underload, selection, placement, guards, intervalSec: V, maxMovesPerDecision: V, maxMovesPerTick: renamed('maxMovesPerDecision', DECISIONS) }

const rules = {
  vmVm: listOf({ kind: V, vms: V, hard: V, weight: V } satisfies KeysOf<VmVmRule>),
  vmHost: listOf({ kind: V, vm: V, hosts: V, hard: V, weight: V } satisfies KeysOf<VmHostRule>)
}

const migration: KeyObject = { ...leavesOf(defaultMigrationConfig()), policy, rules, onStallByVm: mapOf(V) }

const haVm: KeysOf<HaVmEntry> = {
  id: V, home: V, priority: V, order: V, maxAttempts: V, fencePolicy: V, vcpus: V, memMiB: V, cpuMips: V,
  kernel: V, initrd: V, append: V, image: V, args: V, pattern: V, cpuMean: V
}

const ha = {
  armed: V,
  tieBreaker: V,
  hosts: mapOf({ cpuMips: V, memMiB: V }),
  vms: listOf(haVm),
  timing: leavesOf(defaultHaConfig()),
  watchdog: {
    device: V,
    timeoutSec: V,
    loadSoftdog: V
  }
}

const replicaVm: KeysOf<ReplicaVmDef> = { id: V, vcpus: V, memMiB: V, kernel: V, initrd: V, append: V, image: V, args: V }

const replication = {
  mode: V,
  vms: listOf(replicaVm), // items may also be VM ids (strings)
  serviceAddresses: mapOf(V),
  bootSec: V,
  overheadFraction: V,
  migrationDegradation: V,
  horizonSec: V,
  retireBelow: V
} satisfies Omit<KeysOf<ReplicationParams>, 'mode'> & KeyObject

const memory = {
  balloon: V,
  hostMemMiB: V,
  statsPollSec: V,
  vmMinPercent: V,
  policy: leavesOf(defaultBalloonParams()),
  vms: mapOf({ minMiB: V, shares: V } satisfies KeysOf<MemoryVmEntry>),
  ksm: V,
  ksmPolicy: leavesOf(defaultKsmParams())
} satisfies KeysOf<MemorySection> & KeyObject

const cpu = {
  allocate: V,
  vmCores: V,
  cgroupParent: V,
  params: leavesOf(defaultCpuAllocParams()),
  vms: mapOf({ qos: V, weight: V, capCores: V } satisfies KeysOf<CpuVmEntry>)
} satisfies KeysOf<CpuSection> & KeyObject

/** The whole file. */
export const CONFIG_KEYS = {
  cluster: { name: V, secret: V, members: listOf(member) },
  node,
  mesh,
  driver: { kind: V, vms: listOf(simVm), simulatedVips: V, qemu, libvirt },
  migration,
  sampler,
  core: leavesOf(defaultCoreConfig()),
  vips: listOf({ id: V, address: V, iface: V, vm: V, hosts: V }),
  vip: leavesOf(defaultVipConfig()),
  ha,
  replication,
  memory,
  cpu,
  log: { level: V } satisfies KeysOf<AgentConfig['log']>
} satisfies KeyObject
