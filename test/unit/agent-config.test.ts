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
  ['bad log level', c => { c.log = { level: 'loud' } }, /log\.level must be one of/]
]

for (const [name, mutate, re] of bad) {
  t.test(`rejects: ${name}`, async t => {
    const c = good()
    mutate(c)
    t.throws(() => validateConfig(c), { name: 'ConfigError', message: re })
  })
}
