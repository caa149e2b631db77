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

t.test('protect and unprotect: the VM\'s home is where it runs; refused with the reason, nothing changed', async t => {
  const where: Record<string, { host: string, state: string, vcpus: number, memMiB: number }> = {
    db: { host: 'h1', state: 'running', vcpus: 2, memMiB: 2048 },
    mover: { host: 'h2', state: 'migrating', vcpus: 1, memMiB: 512 },
    onq: { host: 'h3', state: 'running', vcpus: 1, memMiB: 512 },
    nodef: { host: 'h2', state: 'running', vcpus: 1, memMiB: 512 }
  }
  const fences: Record<string, boolean> = { h1: true, h2: true, h3: true }
  const pctx = (o: Partial<ChangeContext> = {}): ChangeContext => ctx({
    ha: { enabled: true, tieBreaker: 'h3' },
    nextVersion: 7,
    protect: {
      where: vm => where[vm],
      definition: vm => vm === 'nodef' ? undefined : { vcpus: 2, memMiB: 2048, kernel: '/k', initrd: '/i', append: 'console=ttyS0' },
      fenced: name => fences[name]
    },
    ...o
  })
  const p = applyChange(doc, parseChange({ op: 'ha-protect', vm: 'db', settings: { priority: 5, fencePolicy: 'pause' } }), pctx())
  t.same(p.doc.ha?.vms, [{ id: 'db', home: 'h1', kernel: '/k', initrd: '/i', append: 'console=ttyS0', vcpus: 2, memMiB: 2048, cpuMips: 2000, priority: 5, order: 0, fencePolicy: 'pause', since: 7 }], 'home from where it runs, the definition this host knows, since = the version of the change')
  t.match(p.note, /VM db protected \(home h1\)/)
  const img = applyChange(doc, parseChange({ op: 'ha-protect', vm: 'nodef', settings: { image: '/srv/nodef.qcow2' } }), pctx())
  t.equal(img.doc.ha?.vms[0]?.image, '/srv/nodef.qcow2', 'an image given on the command line')
  t.equal(img.doc.ha?.vms[0]?.vcpus, 1, 'its size from the running VM\'s report')
  const bad: Array<[string, () => unknown, RegExp]> = [
    ['twice', () => applyChange(p.doc, { op: 'ha-protect', vm: 'db', settings: {} }, pctx()), /VM db is already protected/],
    ['unknown VM', () => applyChange(doc, { op: 'ha-protect', vm: 'ghost', settings: {} }, pctx()), /no member reports VM ghost/],
    ['migrating', () => applyChange(doc, { op: 'ha-protect', vm: 'mover', settings: {} }, pctx()), /VM mover is migrating/],
    ['on the tie-breaker', () => applyChange(doc, { op: 'ha-protect', vm: 'onq', settings: {} }, pctx()), /h3, the tie-breaker/],
    ['no definition', () => applyChange(doc, { op: 'ha-protect', vm: 'nodef', settings: {} }, pctx()), /no definition of VM nodef/],
    ['home unfenced', () => applyChange(doc, { op: 'ha-protect', vm: 'db', settings: {} }, pctx({ protect: { where: vm => where[vm], definition: () => ({ vcpus: 1, memMiB: 512, kernel: '/k' }), fenced: n => n !== 'h1' } })), /h1, where VM db runs, holds no fence/],
    ['no fenced restarter', () => applyChange(doc, { op: 'ha-protect', vm: 'db', settings: {} }, pctx({ protect: { where: vm => where[vm], definition: () => ({ vcpus: 1, memMiB: 512, kernel: '/k' }), fenced: n => n === 'h1' } })), /no other member that could restart VM db holds a fence/],
    ['no HA here', () => applyChange(doc, { op: 'ha-protect', vm: 'db', settings: {} }, pctx({ ha: { enabled: false, tieBreaker: null } })), /takes no part in HA/],
    ['unprotect what is not', () => applyChange(doc, { op: 'ha-unprotect', vm: 'db' }, pctx()), /VM db is not protected/],
    ['kernel and image', () => parseChange({ op: 'ha-protect', vm: 'db', settings: { kernel: '/k', image: '/i' } }), /kernel or image, not both/],
    ['bad priority', () => parseChange({ op: 'ha-protect', vm: 'db', settings: { priority: 1.5 } }), /settings.priority must be an integer/]
  ]
  for (const [what, f, re] of bad) t.throws(f, re, what)
  const un = applyChange(p.doc, parseChange({ op: 'ha-unprotect', vm: 'db' }), pctx())
  t.same(un.doc.ha, { vms: [] }, 'unprotected: an empty inventory (not the files\')')
})

t.test('the document\'s inventory is parsed defensively: bad entries are a reason, not a crash', async t => {
  const { parseClusterDoc, canonicalDocJson, haSpecsOf } = await import('../../agent/core/index.js')
  const withVms = (vms: unknown): string => JSON.stringify({ ...doc, ha: { vms } })
  const good = { id: 'db', home: 'h1', vcpus: 1, memMiB: 512, kernel: '/k', since: 4 }
  const d = parseClusterDoc(withVms([good]))
  t.not(typeof d, 'string')
  if (typeof d !== 'string') {
    t.same(haSpecsOf(d), [{ id: 'db', home: key('a'), priority: 0, order: 0, cpuMips: 1000, memMiB: 512, source: { kind: 'shared', definition: 'db' }, fencePolicy: 'stop', since: 4 }], 'home by key, defaults filled')
    t.equal(parseClusterDoc(canonicalDocJson(d)) !== null, true)
  }
  t.equal(typeof parseClusterDoc(JSON.stringify(doc)) !== 'string' && (parseClusterDoc(JSON.stringify(doc)) as { ha?: unknown }).ha, undefined, 'no ha: the files\' inventory stands')
  const cases: Array<[unknown, RegExp]> = [
    ['x', /ha: not \{ vms/],
    [[5], /ha.vms: not objects/],
    [[{ ...good, home: 7 }], /needs an id and a home/],
    [[good, good], /VM db is listed twice/],
    [[{ ...good, vcpus: 0 }], /vcpus must be an integer >= 1/],
    [[{ ...good, kernel: undefined }], /needs kernel or image/],
    [[{ ...good, fencePolicy: 'kill' }], /fencePolicy must be stop or pause/],
    [[{ ...good, since: -1 }], /since must be a configuration version/],
    [[{ ...good, since: 2 ** 30 }], /since must be a configuration version/],
    [[{ ...good, args: [1] }], /args must be a list of strings/],
    [[{ ...good, id: '../x' }], /bad VM id/]
  ]
  for (const [vms, re] of cases) t.match(parseClusterDoc(withVms(vms)), re, JSON.stringify(vms))
  t.same((parseClusterDoc(withVms([{ ...good, evil: 1 }])) as { ha: { vms: object[] } }).ha.vms[0], good, 'unknown fields are dropped')
})

t.test('config show lists the protected VMs, and says when they are still the files\'', async t => {
  const { renderConfig } = await import('../../agent/cli/cluster-config.js')
  const base = { version: 4, hash: 'ab'.repeat(32), note: 'VM db protected (home h1)', removed: false, members: doc.members, rules: [], automation: 'full', inFlight: null }
  const agreed = renderConfig({ ...base, ha: { vms: [{ id: 'db', home: 'h1', priority: 5, fencePolicy: 'pause', kernel: '/k', since: 4 }], fromFiles: false } })
  t.match(agreed, /protected {4}1\n {2}db {15}home h1 {15}priority 5, order 0, fence pause, boots \/k, since version 4/)
  t.notMatch(agreed, /from the configuration files/)
  t.match(renderConfig({ ...base, ha: { vms: [], fromFiles: true } }), /protected {4}0 \(from the configuration files\)/)
})
