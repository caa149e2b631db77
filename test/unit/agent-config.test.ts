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
  ['unknown core key', c => { c.core = { probeEveryMs: 5 } }, /core\.probeEveryMs is not a known core setting/],
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
  t.same(c.driver.libvirt, { uri: 'qemu:///system', peerUri: 'qemu+tcp://10.0.0.1/system', peerUris: {}, migrationListen: '10.0.0.1', domainType: 'auto', persistent: false },
    'local libvirtd; peers reach it over TCP at the host of node.listen, where migrations also listen')
})

t.test('driver.kind libvirt: every setting', async t => {
  const c = validateConfig({
    ...good(),
    driver: {
      kind: 'libvirt',
      libvirt: { uri: 'qemu+tcp://127.0.0.1:16509/system', peerUri: 'qemu+tls://{name}.lab/system?x={host}', migrationListen: '192.168.1.1', domainType: 'qemu', serialDir: '/var/log/starling/serial', persistent: true }
    }
  })
  t.same(c.driver.libvirt, {
    uri: 'qemu+tcp://127.0.0.1:16509/system',
    peerUri: 'qemu+tls://hv1.lab/system?x=192.168.1.1',
    peerUris: {},
    migrationListen: '192.168.1.1',
    domainType: 'qemu',
    serialDir: '/var/log/starling/serial',
    persistent: true
  }, '{name} and {host} filled in')
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
  ['libvirt: unknown setting', { uri: 'qemu:///system', listen: 'x' }, /driver\.libvirt\.listen is not a known libvirt setting/],
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
    migration: { policy: { intervalSec: 30, overload: { kind: 'mad', safety: 2.5 }, guards: { holdTicks: 3 } } }
  })
  t.equal(c.migration.policy.overload.kind, 'mad', 'a section given replaces the default one')
  t.equal(c.migration.policy.guards.holdTicks, 3, 'guards merge field by field')
  t.equal(c.migration.policy.guards.cooldownTicks, 12, 'the other guards keep their defaults')
  t.equal(c.migration.balanceTicks, 600, '30 s at 50 ms ticks')
  t.equal(validateConfig({ ...good(), migration: { balanceTicks: 7 } }).migration.balanceTicks, 7, 'an explicit balanceTicks wins')
})

const badPolicy: Array<[string, any, RegExp]> = [
  ['unknown policy setting', { detector: 'thr' }, /migration\.policy\.detector is not a policy setting/],
  ['policy not an object', 'lr-mmt', /migration\.policy must be an object/],
  ['section not an object', { overload: 'thr' }, /migration\.policy\.overload must be an object/],
  ['unknown overload kind', { overload: { kind: 'magic' } }, /migration\.policy.*overload\.kind must be one of/],
  ['underload above overload', { underload: { kind: 'threshold', threshold: 0.95 } }, /migration\.policy.*underload\.threshold \(0\.95\) must be < overload\.threshold/],
  ['bad hold time', { guards: { holdTicks: 0 } }, /migration\.policy.*guards\.holdTicks must be an integer >= 1/],
  ['a detector without its parameter', { overload: { kind: 'mad' } }, /migration\.policy.*overload\.safety is required/],
  ['k-of-n without a forecast', { overload: { kind: 'kOfN', threshold: 0.9, k: 1, n: 1 } }, /migration\.policy.*overload\.forecast is required/]
]

for (const [name, policy, re] of badPolicy) {
  t.test(`rejects: ${name}`, async t => {
    t.throws(() => validateConfig({ ...good(), migration: { policy } }), { name: 'ConfigError', message: re })
  })
}
