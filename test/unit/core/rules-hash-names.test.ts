// The rules hash that the members compare (a majority must carry the same one before any
// migration starts) is the hash of the rules as written: it does not depend on which host names
// a member could resolve to host ids from its own seed list.
import t from 'tap'
import { AgentCore, defaultCoreConfig, defaultMigrationConfig } from '../../../agent/core/index.js'

t.test('members with different seed lists carry the same rules hash', t => {
  const rules = { vmVm: [], vmHost: [{ kind: 'affinity' as const, vm: 'w', hosts: ['host-c'], hard: true }] }
  const migration = { ...defaultMigrationConfig(), rules }
  const core = (self: string, seeds: Array<{ id: string, name: string, addr: string }>): AgentCore =>
    new AgentCore({ self, name: self, addr: `${self}:1`, config: defaultCoreConfig(), seed: 1, seeds, migration })
  const a = core('host-a', [{ id: 'kb', name: 'host-b', addr: 'b:1' }, { id: 'kc', name: 'host-c', addr: 'c:1' }])
  const b = core('host-b', [{ id: 'ka', name: 'host-a', addr: 'a:1' }])
  const ha = a.status().migrations.rulesHash
  t.not(ha, '', 'a rule set has a hash')
  t.equal(b.status().migrations.rulesHash, ha, 'the same rules, the same hash, whichever names each could resolve')
  t.end()
})
