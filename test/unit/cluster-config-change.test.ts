/**
 * Operator changes of the cluster configuration (agent/runtime/cluster-config.ts, applyChange):
 * what each one makes of the agreed document, and the bad ones refused with their reason before
 * anything is proposed.
 */
import t from 'tap'
import { applyChange, farewellEntries, numberedRules, parseChange, type ChangeContext } from '../../agent/runtime/cluster-config.js'
import type { ClusterDoc, ConfigEntry } from '../../agent/core/index.js'

const key = (c: string): string => c.repeat(64)
const doc: ClusterDoc = {
  members: [
    { name: 'h1', publicKey: key('a'), address: '10.0.0.1:7000' },
    { name: 'h2', publicKey: key('b'), address: '10.0.0.2:7000' },
    { name: 'h3', publicKey: key('c'), address: '10.0.0.3:7000' }
  ],
  rules: { vmVm: [{ kind: 'anti-affinity', vms: ['web1', 'web2'], hard: true }], vmHost: [{ kind: 'affinity', vm: 'db', hosts: ['h1'], hard: true }] },
  automation: 'full'
}
const ctx = (o: Partial<ChangeContext> = {}): ChangeContext => ({
  knownVms: new Set(['web1', 'web2', 'db', 'cache']),
  vmsOn: name => name === 'h2' ? ['web2'] : [],
  ha: { enabled: false, tieBreaker: null },
  ...o
})

t.test('good changes', async t => {
  const add = applyChange(doc, { op: 'member-add', name: 'h4', publicKey: key('d'), address: '10.0.0.4:7000' }, ctx())
  t.same(add.doc.members.map(m => m.name), ['h1', 'h2', 'h3', 'h4'])
  t.match(add.note, /member h4 added/)
  const rm = applyChange(doc, { op: 'member-remove', name: 'h3' }, ctx())
  t.same(rm.doc.members.map(m => m.name), ['h1', 'h2'])
  const forced = applyChange(doc, { op: 'member-remove', name: 'h2', force: true }, ctx())
  t.same(forced.doc.members.map(m => m.name), ['h1', 'h3'], 'a member that runs VMs goes with --force')
  const rule = applyChange(doc, { op: 'rule-add', rule: { type: 'vm-host', kind: 'anti-affinity', vm: 'cache', hosts: ['h2', 'h3'], hard: false, weight: 2 } }, ctx())
  t.equal(numberedRules(rule.doc).length, 3)
  t.match(rule.note, /soft anti-affinity of VM cache from hosts h2, h3 \(weight 2\)/)
  const gone = applyChange(doc, { op: 'rule-remove', number: 2 }, ctx())
  t.same(gone.doc.rules.vmHost, [], 'rule 2 is the first VM-host rule (VM-VM rules come first)')
  t.equal(gone.doc.rules.vmVm.length, 1)
  t.equal(applyChange(doc, { op: 'automation', level: 'manual' }, ctx()).doc.automation, 'manual')
})

t.test('bad changes: a clear error, nothing proposed', async t => {
  const cases: Array<[Parameters<typeof applyChange>[1], RegExp, Partial<ChangeContext>?]> = [
    [{ op: 'member-add', name: 'h2', publicKey: key('d'), address: '10.0.0.4:7000' }, /already called h2/],
    [{ op: 'member-add', name: 'h4', publicKey: key('b'), address: '10.0.0.4:7000' }, /h2 already has the key/],
    [{ op: 'member-add', name: 'h4', publicKey: key('d'), address: '10.0.0.3:7000' }, /address 10\.0\.0\.3:7000 is used twice/],
    [{ op: 'member-add', name: 'h4', publicKey: 'xyz', address: '10.0.0.4:7000' }, /not 64 hex digits/],
    [{ op: 'member-remove', name: 'h9' }, /no member is called h9/],
    [{ op: 'member-remove', name: 'h1' }, /rule for VM db names h1/],
    [{ op: 'member-remove', name: 'h2' }, /h2 runs 1 VM\(s\) \(web2\): drain it first/],
    [{ op: 'member-remove', name: 'h3' }, /leaves two hosts without a tie-breaker/, { ha: { enabled: true, tieBreaker: 'h3' } }],
    [{ op: 'member-remove', name: 'h3' }, /leaves two hosts without a tie-breaker/, { ha: { enabled: true, tieBreaker: null } }],
    [{ op: 'rule-add', rule: { type: 'vm-vm', kind: 'affinity', vms: ['web1', 'nosuch'], hard: true } }, /names VM nosuch, which no member runs or configures/],
    [{ op: 'rule-add', rule: { type: 'vm-host', kind: 'affinity', vm: 'db', hosts: ['h7'], hard: true } }, /names host h7, not a member/],
    [{ op: 'rule-add', rule: { type: 'vm-vm', kind: 'affinity', vms: ['web1', 'web2'], hard: true } }, /contradicts hard anti-affinity/],
    [{ op: 'rule-remove', number: 3 }, /there is no rule 3 \(2 rule\(s\)/],
    [{ op: 'automation', level: 'full' }, /already full/]
  ]
  for (const [change, why, o] of cases) t.throws(() => applyChange(doc, change, ctx(o)), why, `${change.op}: ${String(why)}`)
  t.ok(applyChange(doc, { op: 'member-remove', name: 'h2', force: true }, ctx({ ha: { enabled: true, tieBreaker: 'h3' } })), 'HA with the tie-breaker kept: allowed')
})

t.test('the API body is parsed strictly', async t => {
  t.same(parseChange({ op: 'member-add', name: ' h4 ', publicKey: key('D'), address: '10.0.0.4:7000' }), { op: 'member-add', name: 'h4', publicKey: key('d'), address: '10.0.0.4:7000' })
  t.throws(() => parseChange({ op: 'drop-table' }), /op must be one of/)
  t.throws(() => parseChange({ op: 'automation', level: 'max' }), /level must be one of manual, partial, full/)
  t.throws(() => parseChange({ op: 'rule-remove', number: 0 }), /number must be a rule number/)
  t.throws(() => parseChange({ op: 'rule-add', rule: { type: 'vm-vm', kind: 'affinity', vms: [] } }), /rule.vms must be a list of names/)
  t.throws(() => parseChange({ op: 'member-add', name: 'h4' }), /publicKey must be a non-empty string/)
})

t.test('a removed member is sent the versions up to its removal, however many came after', async t => {
  const entry = (version: number, members: string[]): ConfigEntry => ({ version, base: `h${version - 1}`, members, doc: '{}', note: `v${version}`, hash: `h${version}` })
  // x is a member up to version 7 and removed at 8; 92 more versions follow.
  const history = Array.from({ length: 100 }, (_, i) => entry(i + 1, i + 1 <= 7 ? ['a', 'b', 'x'] : ['a', 'b']))
  const f = farewellEntries(history, 'x')
  t.same(f.map(e => e.version), [1, 2, 3, 4, 5, 6, 7, 8], 'up to the version that removed it (the last 8 of the 100 would not reach it)')
  const far = farewellEntries(history.map((e, i) => i < 80 ? { ...e, members: ['a', 'b', 'x'] } : e), 'x')
  t.equal(far.at(-1)?.version, 81, 'ends at its removal')
  t.equal(far.length, 64, 'at most 64: a member down for fewer versions than that before its removal learns it')
  t.same(farewellEntries(history, 'a'), [], 'a member of the latest version hears nothing')
  t.same(farewellEntries(history, 'never'), [], 'nor does a host that never was one')
})
