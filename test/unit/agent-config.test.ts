/** validateConfig: good configurations pass with defaults filled in; each bad one names its field. */
import t from 'tap'
import { validateConfig } from '../../agent/config.js'

const KEY_A = 'a'.repeat(64)
const KEY_B = 'b'.repeat(64)

function good (): any {
  return {
    cluster: {
      name: 'lab',
      secret: 'correct horse battery staple',
      members: [
        { name: 'hv1', publicKey: KEY_A, address: '10.0.0.1:49737' },
        { name: 'hv2', publicKey: KEY_B, address: '10.0.0.2:49737' }
      ]
    },
    node: { name: 'hv1' }
  }
}

t.test('a minimal configuration gets every default', async t => {
  const c = validateConfig(good())
  t.equal(c.node.listen, '10.0.0.1:49737', 'listen defaults to the member address')
  t.equal(c.node.apiListen, '127.0.0.1:7946')
  t.equal(c.node.stateDir, '/var/lib/starling')
  t.equal(c.sampler.kind, 'system')
  t.equal(c.driver.kind, 'sim')
  t.equal(c.log.level, 'info')
  t.ok(c.core.tickMs > 0, 'core defaults are filled in')
})

t.test('defaults of the control API and the HA fence; the fence delay follows the timing in force', async t => {
  const c = validateConfig(good())
  t.equal(c.node.apiSocket, '/run/starling/control.sock')
  t.equal(c.node.apiTokenFile, '/etc/starling/api-token')
  t.equal(c.node.apiSocketGroup, null)
  t.same(c.ha.watchdog, { device: '/dev/watchdog', timeoutSec: null, loadSoftdog: true }, 'HA needs /dev/watchdog by default and loads softdog when it is missing')
  t.equal(c.ha.config.fenceDelayTicks, 153, 'default timing: the minimum fence delay, 15.3 s')
  const slow = good()
  slow.ha = { timing: { watchdogTicks: 100 } }
  t.equal(validateConfig(slow).ha.config.fenceDelayTicks, Math.ceil((15 + 25 + 100 + 30 + 2) * 1.002), 'a 10 s watchdog: derived again (173 ticks)')
  const low = good()
  low.ha = { timing: { fenceDelayTicks: 100 } }
  t.throws(() => validateConfig(low), /fenceDelayTicks must be >= 153/, 'a fence delay below the minimum is refused')
  const bad = good()
  bad.node.apiSocket = 'relative.sock'
  t.throws(() => validateConfig(bad), /node\.apiSocket must be an absolute path/)
})

const bad: Array<[string, (c: any) => void, RegExp]> = [
  ['root not an object', c => { c.cluster = 'x' }, /cluster must be an object/],
  ['missing secret', c => { delete c.cluster.secret }, /cluster\.secret must be a non-empty string/],
  ['short secret', c => { c.cluster.secret = 'short' }, /cluster\.secret must be at least 16/],
  ['no members', c => { c.cluster.members = [] }, /cluster\.members must be a non-empty array/],
  ['bad key', c => { c.cluster.members[1].publicKey = 'xyz' }, /cluster\.members\[1\]\.publicKey must be 64 hex/],
  ['duplicate name', c => { c.cluster.members[1].name = 'hv1' }, /duplicates member name "hv1"/],
  ['duplicate key', c => { c.cluster.members[1].publicKey = KEY_A }, /duplicates the key/],
  ['bad address', c => { c.cluster.members[0].address = 'hv1:80' }, /members\[0\]\.address must be "ip:port"/],
  ['wildcard listen', c => { c.node.listen = '0.0.0.0:49737' }, /concrete address, not 0\.0\.0\.0/],
  ['bad port', c => { c.node.apiListen = '127.0.0.1:70000' }, /invalid port/],
  ['node not a member', c => { c.node.name = 'hv9' }, /node\.name "hv9" is not one of cluster\.members/],
  ['unknown driver', c => { c.driver = { kind: 'vmware' } }, /driver\.kind must be "sim"/],
  ['bad sampler', c => { c.sampler = { kind: 'magic' } }, /sampler\.kind must be "system" or "driver"/],
  ['bad vm pattern', c => { c.driver = { vms: [{ id: 'v', pattern: 'chaos' }] } }, /driver\.vms\[0\]\.pattern/],
  ['duplicate vm', c => { c.driver = { vms: [{ id: 'v' }, { id: 'v' }] } }, /duplicates VM id "v"/],
  ['vm cpuMean out of range', c => { c.driver = { vms: [{ id: 'v', cpuMean: 2 }] } }, /cpuMean must be between 0 and 1/],
  ['unknown core key', c => { c.core = { probeEveryMs: 5 } }, /core\.probeEveryMs: unknown key/],
  ['impossible core combination', c => { c.core = { probeTimeoutTicks: 20, probeDeadlineTicks: 10 } }, /probeTimeoutTicks must be < probeDeadlineTicks/],
  ['timeout not above keep-alive', c => { c.mesh = { keepAliveMs: 5000, timeoutMs: 4000 } }, /mesh\.timeoutMs must be greater than mesh\.keepAliveMs/],
  ['probe datagrams not a boolean', c => { c.mesh = { probeDatagrams: 'yes' } }, /mesh\.probeDatagrams must be true or false/],
  ['bad log level', c => { c.log = { level: 'loud' } }, /log\.level must be one of/]
]

for (const [name, mutate, re] of bad) {
  t.test(`rejects: ${name}`, async t => {
    const c = good()
    mutate(c)
    t.throws(() => validateConfig(c), { name: 'ConfigError', message: re })
  })
}

t.test('driver.kind libvirt: defaults', async t => {
  const c = validateConfig({ ...good(), driver: { kind: 'libvirt' } })
  t.equal(c.driver.kind, 'libvirt')
  t.same(c.driver.libvirt, { uri: 'qemu:///system', peerUri: 'qemu+tcp://10.0.0.1/system', peerUris: {}, migrationListen: '10.0.0.1', domainType: 'auto', persistent: false, sharedStorage: [] },
    'local libvirtd; peers reach it over TCP at the host of node.listen, where migrations also listen')
})

t.test('driver.kind libvirt: every setting', async t => {
  const c = validateConfig({
    ...good(),
    driver: {
      kind: 'libvirt',
      libvirt: { uri: 'qemu+tcp://127.0.0.1:16509/system', peerUri: 'qemu+tls://{name}.lab/system?x={host}', migrationListen: '192.168.1.1', domainType: 'qemu', serialDir: '/var/log/starling/serial', persistent: true, imageDir: '/var/lib/starling/images', sharedStorage: ['/srv/nfs'] }
    }
  })
  t.same(c.driver.libvirt, {
    uri: 'qemu+tcp://127.0.0.1:16509/system',
    peerUri: 'qemu+tls://hv1.lab/system?x=192.168.1.1',
    peerUris: {},
    migrationListen: '192.168.1.1',
    domainType: 'qemu',
    serialDir: '/var/log/starling/serial',
    persistent: true,
    imageDir: '/var/lib/starling/images',
    sharedStorage: ['/srv/nfs']
  }, '{name} and {host} filled in')
  t.throws(() => validateConfig({ ...good(), driver: { kind: 'libvirt', libvirt: { imageDir: 'images' } } }), /driver\.libvirt\.imageDir/, 'a relative imageDir names the field')
  t.throws(() => validateConfig({ ...good(), driver: { kind: 'libvirt', libvirt: { sharedStorage: 'nfs' } } }), /driver\.libvirt\.sharedStorage/, 'sharedStorage must be a list of absolute paths')
  const v6 = validateConfig({ ...good(), driver: { kind: 'libvirt', libvirt: { migrationListen: 'fd00::1' } } })
  t.equal(v6.driver.libvirt.peerUri, 'qemu+tcp://[fd00::1]/system', 'an IPv6 listen address in brackets')
})

t.test('driver.kind libvirt: per-member URIs, the same map on every host', async t => {
  const peerUris = { hv1: 'qemu+tcp://10.1.0.1:16509/system', hv2: 'qemu+ssh://root@hv2/system' }
  const c1 = validateConfig({ ...good(), driver: { kind: 'libvirt', libvirt: { peerUris } } })
  t.equal(c1.driver.libvirt.peerUri, 'qemu+tcp://10.1.0.1:16509/system', 'this host takes its own entry')
  t.same(c1.driver.libvirt.peerUris, peerUris)
  const g2 = good()
  g2.node.name = 'hv2'
  t.equal(validateConfig({ ...g2, driver: { kind: 'libvirt', libvirt: { peerUris, peerUri: 'qemu+tcp://{host}:1/system' } } }).driver.libvirt.peerUri, 'qemu+ssh://root@hv2/system', 'the entry wins over the template')
  t.equal(validateConfig({ ...good(), driver: { kind: 'libvirt', libvirt: { peerUris: { hv2: peerUris.hv2 } } } }).driver.libvirt.peerUri, 'qemu+tcp://10.0.0.1/system', 'a host without an entry uses the template')
})

const badLibvirt: Array<[string, any, RegExp]> = [
  ['libvirt: unknown setting', { uri: 'qemu:///system', listen: 'x' }, /driver\.libvirt\.listen: unknown key/],
  ['libvirt: bad domain type', { domainType: 'tcg' }, /driver\.libvirt\.domainType must be auto, kvm or qemu/],
  ['libvirt: uri not a URI', { uri: '/var/run/libvirt/libvirt-sock' }, /driver\.libvirt\.uri must be a libvirt URI/],
  ['libvirt: empty uri', { uri: '' }, /driver\.libvirt\.uri must be a non-empty string/],
  ['libvirt: peer URI template not a URI', { peerUri: '{host}:16509' }, /driver\.libvirt\.peerUri must be a libvirt URI/],
  ['libvirt: peerUris not an object', { peerUris: ['qemu:///system'] }, /driver\.libvirt\.peerUris must be an object/],
  ['libvirt: peerUris names a stranger', { peerUris: { hv9: 'qemu+tcp://x/system' } }, /driver\.libvirt\.peerUris\.hv9 is not one of cluster\.members/],
  ['libvirt: peerUris entry not a URI', { peerUris: { hv2: 'hv2' } }, /driver\.libvirt\.peerUris\.hv2 must be a libvirt URI/],
  ['libvirt: migrationListen with a prefix length', { migrationListen: '10.0.0.1/24' }, /driver\.libvirt\.migrationListen must be a host address/],
  ['libvirt: relative serialDir', { serialDir: 'serial' }, /driver\.libvirt\.serialDir must be an absolute path/],
  ['libvirt: persistent not a boolean', { persistent: 'yes' }, /driver\.libvirt\.persistent must be true or false/],
  ['libvirt: section not an object', 'qemu:///system', /driver\.libvirt must be an object/]
]

for (const [name, section, re] of badLibvirt) {
  t.test(`rejects: ${name}`, async t => {
    t.throws(() => validateConfig({ ...good(), driver: { kind: 'libvirt', libvirt: section } }), { name: 'ConfigError', message: re })
  })
}

t.test('rejects: unknown driver names libvirt among the kinds', async t => {
  t.throws(() => validateConfig({ ...good(), driver: { kind: 'xen' } }), { name: 'ConfigError', message: /driver\.kind must be "sim", "qemu" or "libvirt" \(got "xen"\)/ })
})

t.test('migration.policy: chosen and tuned in the configuration; balancing decisions every policy interval', async t => {
  const d = validateConfig(good())
  t.equal(d.migration.policy.intervalSec, 300, 'the default policy decides every 300 s')
  t.equal(d.migration.balanceTicks, 3000, 'so the agent balances every 3000 ticks of 100 ms')
  t.equal(d.migration.decisionTicks, 50, 'drain steps keep their own, shorter interval')
  const c = validateConfig({
    ...good(),
    core: { tickMs: 50 },
    migration: { policy: { intervalSec: 30, overload: { kind: 'mad', safety: 2.5 }, guards: { holdDecisions: 3 } } }
  })
  t.equal(c.migration.policy.overload.kind, 'mad', 'a section given replaces the default one')
  t.equal(c.migration.policy.guards.holdDecisions, 3, 'guards merge field by field')
  t.equal(c.migration.policy.guards.cooldownDecisions, 12, 'the other guards keep their defaults')
  t.equal(c.migration.balanceTicks, 600, '30 s at 50 ms ticks')
  t.equal(validateConfig({ ...good(), migration: { balanceTicks: 7 } }).migration.balanceTicks, 7, 'an explicit balanceTicks wins')
})

const badPolicy: Array<[string, any, RegExp]> = [
  ['unknown policy setting', { detector: 'thr' }, /migration\.policy\.detector: unknown key/],
  ['policy not an object', 'lr-mmt', /migration\.policy must be an object/],
  ['section not an object', { overload: 'thr' }, /migration\.policy\.overload must be an object/],
  ['unknown overload kind', { overload: { kind: 'magic' } }, /migration\.policy.*overload\.kind must be one of/],
  ['underload above overload', { underload: { kind: 'threshold', threshold: 0.95 } }, /migration\.policy.*underload\.threshold \(0\.95\) must be < overload\.threshold/],
  ['bad hold time', { guards: { holdDecisions: 0 } }, /migration\.policy.*guards\.holdDecisions must be an integer >= 1/],
  ['a detector without its parameter', { overload: { kind: 'mad' } }, /migration\.policy.*overload\.safety is required/],
  ['k-of-n without a forecast', { overload: { kind: 'kOfN', threshold: 0.9, k: 1, n: 1 } }, /migration\.policy.*overload\.forecast is required/]
]

for (const [name, policy, re] of badPolicy) {
  t.test(`rejects: ${name}`, async t => {
    t.throws(() => validateConfig({ ...good(), migration: { policy } }), { name: 'ConfigError', message: re })
  })
}

// ---------------------------------------------------------------------------------------------
// Unknown keys: every object at every level (agent/config-keys.ts), with the nearest known key.

const typos: Array<[string, (c: any) => void, string]> = [
  ['a typo under node', c => { c.node.apiListn = '127.0.0.1:7946' }, 'config: node.apiListn: unknown key; did you mean apiListen?'],
  ['a typo at the top level', c => { c.samplr = { kind: 'driver' } }, 'config: samplr: unknown key; did you mean sampler?'],
  ['a setting in the wrong section', c => { c.apiListen = '127.0.0.1:7946' }, 'config: apiListen: unknown key; did you mean node.apiListen?'],
  ['a member (array item)', c => { c.cluster.members[1].adress = '10.0.0.2:1' }, 'config: cluster.members[1].adress: unknown key; did you mean address?'],
  ['a secret misspelt, before the value check that would follow', c => { c.cluster.secrte = c.cluster.secret; delete c.cluster.secret }, 'config: cluster.secrte: unknown key; did you mean secret?'],
  ['case only', c => { c.mesh = { keepaliveMs: 1000 } }, 'config: mesh.keepaliveMs: unknown key; did you mean keepAliveMs?'],
  ['a transposition', c => { c.log = { levle: 'info' } }, 'config: log.levle: unknown key; did you mean level?'],
  ['a simulated VM', c => { c.driver = { vms: [{ id: 'v', cpumean: 0.2, patern: 'sine' }] } }, 'config: driver.vms[0].cpumean: unknown key; did you mean cpuMean?'],
  ['a QEMU VM', c => { c.driver = { kind: 'qemu', qemu: { vms: [{ id: 'v', kernal: '/k' }] } } }, 'config: driver.qemu.vms[0].kernal: unknown key; did you mean kernel?'],
  ['the QEMU section', c => { c.driver = { kind: 'qemu', qemu: { acel: 'tcg' } } }, 'config: driver.qemu.acel: unknown key; did you mean accel?'],
  ['the sampler capacity', c => { c.sampler = { kind: 'driver', capacity: { memMib: 1024 } } }, 'config: sampler.capacity.memMib: unknown key; did you mean memMiB?'],
  ['a core tunable', c => { c.core = { probeIntervalTick: 5 } }, 'config: core.probeIntervalTick: unknown key; did you mean probeIntervalTicks?'],
  ['a migration setting', c => { c.migration = { outmax: 1 } }, 'config: migration.outmax: unknown key; did you mean outMax?'],
  ['a VM-VM rule', c => { c.migration = { rules: { vmVm: [{ kind: 'anti-affinity', vms: ['a', 'b'], hrad: true }] } } }, 'config: migration.rules.vmVm[0].hrad: unknown key; did you mean hard?'],
  ['a VM-host rule', c => { c.migration = { rules: { vmHost: [{ kind: 'affinity', vm: 'a', host: ['hv1'], hard: true }] } } }, 'config: migration.rules.vmHost[0].host: unknown key; did you mean hosts?'],
  ['the rules section', c => { c.migration = { rules: { vmvm: [] } } }, 'config: migration.rules.vmvm: unknown key; did you mean vmVm?'],
  ['a policy guard', c => { c.migration = { policy: { guards: { holdDecision: 2 } } } }, 'config: migration.policy.guards.holdDecision: unknown key; did you mean holdDecisions?'],
  ['a guard under its old name', c => { c.migration = { policy: { guards: { cooldownTicks: 2 } } } }, 'config: migration.policy.guards.cooldownTicks: renamed cooldownDecisions (it counts policy decisions, one every intervalSec, not 100 ms core ticks)'],
  ['a policy setting under its old name', c => { c.migration = { policy: { maxMovesPerTick: 2 } } }, 'config: migration.policy.maxMovesPerTick: renamed maxMovesPerDecision (it counts policy decisions, one every intervalSec, not 100 ms core ticks)'],
  ['a forecast inside a detector', c => { c.migration = { policy: { overload: { kind: 'kOfN', threshold: 0.9, k: 1, n: 1, forecast: { kind: 'lr', windw: 6 } } } } }, 'config: migration.policy.overload.forecast.windw: unknown key; did you mean window?'],
  ['an HA VM', c => { c.ha = { vms: [{ id: 'db', home: 'hv1', kernel: '/k', fencepolicy: 'stop' }] } }, 'config: ha.vms[0].fencepolicy: unknown key; did you mean fencePolicy?'],
  ['HA timing', c => { c.ha = { timing: { leaseTick: 30 } } }, 'config: ha.timing.leaseTick: unknown key; did you mean leaseTicks?'],
  ['the HA watchdog', c => { c.ha = { watchdog: { devcie: '/dev/watchdog' } } }, 'config: ha.watchdog.devcie: unknown key; did you mean device?'],
  ['an HA host capacity (free member names, fixed keys inside)', c => { c.ha = { hosts: { hv1: { cpuMip: 1, memMiB: 1 } } } }, 'config: ha.hosts.hv1.cpuMip: unknown key; did you mean cpuMips?'],
  ['the HA section', c => { c.ha = { tiebreaker: 'hv2' } }, 'config: ha.tiebreaker: unknown key; did you mean tieBreaker?'],
  ['a VIP', c => { c.vips = [{ id: 'w', address: '192.0.2.1/24', ifac: 'eth0', vm: 'x' }] }, 'config: vips[0].ifac: unknown key; did you mean iface?'],
  ['a VIP tunable', c => { c.vip = { burstCont: 3 } }, 'config: vip.burstCont: unknown key; did you mean burstCount?'],
  ['replication', c => { c.replication = { mod: 'cost' } }, 'config: replication.mod: unknown key; did you mean mode?'],
  ['a replica definition (strings are VM ids)', c => { c.replication = { vms: ['web', { id: 'api', vcpus: 1, memMiB: 64, kernel: '/k', initrdd: '/i' }] } }, 'config: replication.vms[1].initrdd: unknown key; did you mean initrd?'],
  ['the libvirt section', c => { c.driver = { kind: 'libvirt', libvirt: { peerUrl: 'qemu+tcp://{host}/system' } } }, 'config: driver.libvirt.peerUrl: unknown key; did you mean peerUri?']
]

for (const [name, mutate, message] of typos) {
  t.test(`unknown key: ${name}`, async t => {
    const c = good()
    mutate(c)
    t.throws(() => validateConfig(c), { name: 'ConfigError', code: 'CONFIG_INVALID', message })
  })
}

t.test('unknown key: no near key lists what the object takes', async t => {
  const c = good()
  c.node.colour = 'blue'
  t.throws(() => validateConfig(c), { message: /^config: node\.colour: unknown key \(node takes name, listen, stateDir, apiListen, / })
  const d = good()
  d.migration = { policy: { overload: { kind: 'thr', threshold: 0.9, safety: 2 } } }
  t.throws(() => validateConfig(d), { message: 'config: migration.policy.overload.safety: unknown key (migration.policy.overload with kind "thr" takes kind, threshold)' },
    'a key of another detector kind is refused for this kind')
})

t.test('free keys stay free: VM ids and member names as keys are not checked against a list', async t => {
  const c = good()
  c.migration = { onStallByVm: { 'any-vm': 'postcopy' } }
  c.driver = { kind: 'libvirt', libvirt: { peerUris: { hv2: 'qemu+tcp://10.0.0.2/system' } } }
  t.doesNotThrow(() => validateConfig(c))
})

t.test('every section with every key passes (the key list knows what the validators read)', async t => {
  const { defaultCoreConfig } = await import('../../agent/core/config.js')
  const { defaultHaConfig } = await import('../../agent/core/ha/ha-config.js')
  const { defaultVipConfig } = await import('../../agent/core/vip/vip-config.js')
  const { defaultMigrationConfig } = await import('../../agent/core/migration/migration-config.js')
  const { defaultPolicyConfig } = await import('../../policies/config.js')
  const c = good()
  c.cluster.members.push({ name: 'hv3', publicKey: 'c'.repeat(64), address: '10.0.0.3:49737' })
  c.node = { name: 'hv1', listen: '10.0.0.1:49737', stateDir: '/var/lib/starling', apiListen: '127.0.0.1:7946' }
  c.mesh = { keepAliveMs: 5000, timeoutMs: 15000, probeDatagrams: true }
  c.driver = {
    kind: 'qemu',
    vms: [{ id: 's', vcpus: 1, memMiB: 512, pattern: 'sine', cpuMean: 0.3 }],
    qemu: { runDir: '/var/lib/starling/vms', accel: 'tcg', migrationListen: '10.0.0.1', binary: 'qemu-system-x86_64', vms: [{ id: 'q', vcpus: 1, memMiB: 256, kernel: '/k', initrd: '/i', append: 'console=ttyS0', args: ['-nic', 'none'], balloon: true }] },
    libvirt: { uri: 'qemu:///system', peerUri: 'qemu+tcp://{host}/system', peerUris: {}, migrationListen: '10.0.0.1', domainType: 'auto', serialDir: '/var/log/s', persistent: false, sharedStorage: [] }
  }
  const { policy, rules, ...migration } = defaultMigrationConfig()
  c.migration = {
    ...migration,
    policy: { ...policy, placement: { kind: 'pabfd', cpuCapFraction: 0.85, countWake: true, overload: null, allowInactive: true }, selection: { kind: 'rs', seed: 1 } },
    rules: { vmVm: [{ kind: 'anti-affinity', vms: ['a', 'b'], hard: false, weight: 2 }], vmHost: [{ kind: 'affinity', vm: 'a', hosts: ['hv1'], hard: true }] }
  }
  c.sampler = { kind: 'driver', intervalMs: 1000, capacity: { cpuCores: 8, cpuMipsPerCore: 1000, memMiB: 4096, netMbps: 1000 } }
  c.core = defaultCoreConfig()
  c.vips = [{ id: 'web', address: '192.0.2.10/24', iface: 'eth0', vm: 'db' }, { id: 'api', address: '192.0.2.11/24', iface: 'eth0', hosts: ['hv1', 'hv2'] }]
  c.vip = defaultVipConfig()
  c.ha = {
    armed: true,
    tieBreaker: 'hv3',
    hosts: { hv1: { cpuMips: 16000, memMiB: 65536 } },
    vms: [{ id: 'db', home: 'hv1', priority: 1, order: 0, maxAttempts: 3, fencePolicy: 'stop', vcpus: 1, memMiB: 256, cpuMips: 1000, kernel: '/k', initrd: '/i', append: 'x', args: [] }],
    timing: defaultHaConfig(),
    watchdog: { device: '/dev/watchdog', timeoutSec: 5, loadSoftdog: true }
  }
  c.replication = { mode: 'cost', vms: ['db', { id: 'r', vcpus: 1, memMiB: 64, image: '/srv/r.img', args: [] }], serviceAddresses: { hv2: '10.0.0.2' }, bootSec: 30, overheadFraction: 0.02, migrationDegradation: 0.1, horizonSec: 300, retireBelow: 0.7 }
  const { defaultBalloonParams } = await import('../../policies/balloon.js')
  c.memory = { balloon: true, hostMemMiB: 4096, statsPollSec: 1, vmMinPercent: 25, policy: defaultBalloonParams(), vms: { q: { minMiB: 128, shares: 500 } } }
  const { defaultCpuAllocParams } = await import('../../policies/cpu-alloc.js')
  c.cpu = { allocate: true, vmCores: 4, cgroupParent: 'starling', params: defaultCpuAllocParams(), vms: { q: { qos: 'high', weight: 2, capCores: 1 } } }
  c.log = { level: 'debug' }
  t.doesNotThrow(() => validateConfig(c))
  t.equal(validateConfig(c).ha.vms.length, 1)
  t.same(policy, defaultPolicyConfig())
})

t.test('memory: defaults are safe (facts only, no ballooning); bad input names the field and changes nothing else', async t => {
  const d = validateConfig(good()).memory
  t.equal(d.balloon, false, 'ballooning is off unless asked for')
  t.equal(d.ksm, false, 'KSM is only reported unless asked for')
  t.equal(d.policy.targetPercent, 80)
  const withVms = (memory: unknown, balloon = true): any => {
    const c = good()
    c.driver = { kind: 'qemu', qemu: { vms: [{ id: 'web', memMiB: 512 }, { id: 'plain', memMiB: 256, balloon }] } }
    c.memory = memory
    return c
  }
  const ok = validateConfig(withVms({ balloon: true, vms: { web: { minMiB: 256, shares: 2000 } } }))
  t.same(ok.memory.vms, { web: { minMiB: 256, shares: 2000 } })
  t.equal(ok.driver.qemu.vms[1]?.balloon, true)
  const cases: Array<[string, any, RegExp, string]> = [
    ['a VM minimum above its maximum', withVms({ vms: { web: { minMiB: 600 } } }), /memory\.vms\.web\.minMiB \(600\) is above the VM's memory \(512 MiB, driver\.qemu\.vms\[0\]\.memMiB\)/, 'memory.vms.web.minMiB'],
    ['a target of 0 %', withVms({ policy: { targetPercent: 0 } }), /memory\.policy\.targetPercent must be above 0 and at most 100 \(got 0\)/, 'memory.policy.targetPercent'],
    ['a target of 101 %', withVms({ policy: { targetPercent: 101 } }), /memory\.policy\.targetPercent must be above 0 and at most 100 \(got 101\)/, 'memory.policy.targetPercent'],
    ['a VM with no balloon device', withVms({ vms: { plain: { shares: 10 } } }, false), /memory\.vms\.plain is set, but VM plain has no balloon device \(driver\.qemu\.vms\[1\]\.balloon is false\)/, 'memory.vms.plain'],
    ['stale sooner than the poll', withVms({ statsPollSec: 5 }), /memory\.policy\.statsStaleAfterS \(5\) must be at least twice memory\.statsPollSec/, 'memory.policy.statsStaleAfterS'],
    ['a balloon flag that is not a boolean', withVms({}, 'yes' as any), /driver\.qemu\.vms\[1\]\.balloon must be true or false/, 'driver.qemu.vms[1].balloon'],
    ['an unknown policy key', withVms({ policy: { targetPercnt: 70 } }), /memory\.policy\.targetPercnt: unknown key; did you mean targetPercent\?/, 'memory.policy.targetPercnt'],
    ['a KSM flag that is not a boolean', withVms({ ksm: 'on' }), /memory\.ksm must be true or false/, 'memory.ksm'],
    ['a KSM stop threshold under its start', withVms({ ksmPolicy: { startFreePercent: 30, stopFreePercent: 20 } }), /memory\.ksmPolicy\.stopFreePercent \(20\) must be at least startFreePercent \(30\)/, 'memory.ksmPolicy.stopFreePercent'],
    ['a ksmd budget of 0', withVms({ ksmPolicy: { maxCpuPercent: 0 } }), /memory\.ksmPolicy\.maxCpuPercent must be above 0 and at most 100/, 'memory.ksmPolicy.maxCpuPercent'],
    ['an unknown KSM key', withVms({ ksmPolicy: { maxCpuPercnt: 10 } }), /memory\.ksmPolicy\.maxCpuPercnt: unknown key; did you mean maxCpuPercent\?/, 'memory.ksmPolicy.maxCpuPercnt']
  ]
  for (const [name, c, re, field] of cases) {
    const before = JSON.stringify(c)
    let err: any = null
    try { validateConfig(c) } catch (e) { err = e }
    t.match(String(err?.message), re, name)
    t.equal(err?.path, field, `${name}: the error names ${field}`)
    t.equal(JSON.stringify(c), before, `${name}: the input is left as it was`)
  }
})

t.test('cpu: off by default; bad input names the field', async t => {
  t.equal(validateConfig(good()).cpu.allocate, false)
  const cases: Array<[unknown, RegExp, string]> = [
    [{ vms: { db: { qos: 'urgent' } } }, /cpu\.vms\.db\.qos must be high, normal or low/, 'cpu.vms.db.qos'],
    [{ vms: { db: { capCores: 0 } } }, /cpu\.vms\.db\.capCores must be a number of cores above 0/, 'cpu.vms.db.capCores'],
    [{ vmCores: -1 }, /cpu\.vmCores must be a number of cores above 0/, 'cpu.vmCores'],
    [{ params: { probeFactor: 0 } }, /cpu\.params\.probeFactor must be between 1 and 10/, 'cpu.params.probeFactor'],
    [{ cgroupParent: '../x' }, /cpu\.cgroupParent must be a cgroup name/, 'cpu.cgroupParent']
  ]
  for (const [cpu, re, field] of cases) {
    const c = good()
    c.cpu = cpu
    let err: any = null
    try { validateConfig(c) } catch (e) { err = e }
    t.match(String(err?.message), re, field)
    t.equal(err?.path, field)
  }
})

t.test('the shipped example configuration passes', async t => {
  const { readFileSync } = await import('node:fs')
  const text = readFileSync(new URL('../../systemd/starling.example.json', import.meta.url), 'utf8')
  t.doesNotThrow(() => validateConfig(JSON.parse(text)))
})

t.test('closestKey: near keys only, the nearest first', async t => {
  const { closestKey, editDistance } = await import('../../agent/lib/known-keys.js')
  t.equal(editDistance('samplr', 'sampler'), 1)
  t.equal(editDistance('levle', 'level'), 1, 'a transposition is one edit')
  t.equal(editDistance('APILISTEN', 'apiListen'), 0, 'case does not count')
  t.equal(closestKey('apiListn', ['name', 'listen', 'apiListen']), 'apiListen')
  t.equal(closestKey('lsten', ['name', 'listen', 'apiListen']), 'listen')
  t.equal(closestKey('colour', ['name', 'listen', 'apiListen']), null, 'nothing within a third of the key')
  t.equal(closestKey('vn', ['vm', 'id']), 'vm')
})

t.test('one ConfigError for every section, with the field path; enums are rejected, not coerced', async t => {
  const { ConfigError } = await import('../../agent/core/index.js')
  const { ConfigError: PolicyConfigErrorClass } = await import('../../policies/config.js')
  t.equal(ConfigError, PolicyConfigErrorClass, 'the core, the policies and the agent throw one class')
  const reject = (patch: (c: any) => void): InstanceType<typeof ConfigError> => {
    const c = good()
    patch(c)
    try { validateConfig(c) } catch (err) {
      t.ok(err instanceof ConfigError, `a ConfigError (${(err as Error).message})`)
      return err as InstanceType<typeof ConfigError>
    }
    throw new Error('accepted')
  }
  const stall = reject(c => { c.migration = { onStallByVm: { web1: 'postcopy', db1: 'pause' } } })
  t.equal(stall.path, 'migration.onStallByVm.db1', 'an invalid onStallByVm value is refused, not turned into abort')
  t.match(stall.message, /must be abort or postcopy \(got "pause"\)/)
  t.equal(reject(c => { c.migration = { onStall: 'later' } }).path, 'migration.onStall')
  t.equal(reject(c => { c.migration = { autoBalance: 'yes' } }).path, 'migration.autoBalance', 'a boolean given as a string is refused')
  t.equal(reject(c => { c.driver = { kind: 'qemu', simulatedVips: true } }).path, 'driver.simulatedVips', 'simulated VIPs with real VMs are refused')
  t.equal(reject(c => { c.migration = { automation: 'auto' } }).path, 'migration.automation', 'an automation level that does not exist is refused, not coerced')
  t.equal(reject(c => { c.core = { probeTimeoutTicks: 1 } }).path, 'core.probeTimeoutTicks', 'the core section: the path is prefixed with core')
  const policy = reject(c => { c.migration = { policy: { selection: { kind: 'fastest' } } } })
  t.equal(policy.path, 'migration.policy.selection.kind', 'the policy section: prefixed with migration.policy')
  t.match(policy.message, /^config: migration\.policy selection\.kind must be one of/, 'message as before')
  t.equal(reject(c => { c.vip = { burstCount: 0 } }).path, 'vip.burstCount')
  t.equal(reject(c => { c.node.colour = 'blue' }).path, 'node.colour', 'an unknown key')
  t.equal(reject(c => { c.log = { level: 'loud' } }).path, 'log.level')
})

t.test('VIP lease timing is a refused setting where VIPs are configured, and only there', async t => {
  const { clusterSettings } = await import('../../agent/cluster-settings.js')
  const lease = (raw: any): { refuse: boolean, digest: string } | undefined => {
    const s = clusterSettings(validateConfig(raw)).find(x => x.field === 'vip.lease')
    return s === undefined ? undefined : { refuse: s.refuse, digest: Buffer.from(s.digest).toString('hex') }
  }
  t.equal(lease(good()), undefined, 'no VIPs: nothing to agree on')
  const withVip = (tuning?: Record<string, number>): any => {
    const c = good()
    c.vips = [{ id: 'web', address: '192.0.2.10/24', iface: 'eth0', hosts: ['hv1', 'hv2'] }]
    if (tuning !== undefined) c.vip = tuning
    return c
  }
  const a = lease(withVip())
  t.equal(a?.refuse, true, 'a member with another lease is refused')
  t.equal(lease(withVip({ burstCount: 3 }))?.digest, a?.digest, 'other VIP tunables do not enter it')
  t.not(lease(withVip({ leaseTicks: 40 }))?.digest, a?.digest, 'leaseTicks does')
  t.not(lease(withVip({ clockDriftPpm: 2000 }))?.digest, a?.digest, 'clockDriftPpm does')
})
