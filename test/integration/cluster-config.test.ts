/**
 * Goal: one cluster configuration, changed live from any member and agreed by a majority, with
 * real agent processes on loopback (Hyperswarm, LevelDB): rules and members change without a
 * restart, a host added later adopts the agreed history, a change without a majority is pending
 * and applies when the majority is back, a removed host is refused and its own agent says why,
 * and bad or unauthenticated changes change nothing.
 * Method: five hosts' configurations, the first three listing only themselves; the CLI drives the
 * changes through each host's control socket; views are read from the agents' APIs.
 */
import t from 'tap'
import { readFile, writeFile } from 'node:fs/promises'
import { LocalCluster, runCli, stateOf } from './cluster-harness.js'
import { until } from '../lib/wait.js'

interface Show { version: number, hash: string, members: Array<{ name: string }>, rules: Array<{ number: number, text: string }>, automation: string, removed: boolean }

async function edit (file: string, f: (c: any) => void): Promise<void> {
  const c = JSON.parse(await readFile(file, 'utf8'))
  f(c)
  await writeFile(file, JSON.stringify(c, null, 2))
}

t.test('members and rules change live, agreed by a majority', async t => {
  const cluster = await LocalCluster.create(5, { seed: 11 })
  t.teardown(async () => await cluster.stop())
  const [h1, h2, h3, h4, h5] = cluster.hosts.map(h => h.name) as [string, string, string, string, string]
  const first = cluster.hosts.slice(0, 3).map(h => ({ name: h.name, publicKey: h.publicKey, address: h.address }))
  for (const h of cluster.hosts.slice(0, 3)) await edit(h.configFile, c => { c.cluster.members = first })
  const sock = (n: string): string[] => ['--socket', cluster.host(n).apiSocket, '--api', cluster.host(n).apiListen]
  const show = async (n: string): Promise<Show | null> => {
    const r = await runCli(['config', 'show', '--json', '--api', cluster.host(n).apiListen], 10_000)
    return r.code === 0 ? JSON.parse(r.out) as Show : null
  }
  const versions = async (names: string[]): Promise<Array<number | null>> => await Promise.all(names.map(async n => (await show(n))?.version ?? null))
  const allAt = async (names: string[], v: number, ms = 20_000): Promise<void> => {
    await until(`${names.join(', ')} at version ${v}`, async () => (await versions(names)).every(x => x === v), ms)
  }

  for (const n of [h1, h2, h3]) cluster.start(n)
  await cluster.waitViews([h1, h2, h3], s => [h1, h2, h3].every(n => stateOf(s, n) === 'alive'), 30_000)
  const s0 = await show(h1)
  t.equal(s0?.version, 1, 'version 1 comes from the files')
  t.same(s0?.members.map(m => m.name), [h1, h2, h3])

  // Unauthenticated: TCP without a token changes nothing.
  const res = await fetch(`http://${cluster.host(h2).apiListen}/v1/config`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ op: 'automation', level: 'manual' }) })
  t.equal(res.status, 403, 'a change over TCP without the token is refused (403)')
  t.equal((await show(h2))?.version, 1, 'and nothing changed')

  // A rule, from host2: in effect on all three without a restart.
  // host2 knows a VM from the members' load reports: until host1's and host2's first reports
  // reached it, the rule is rightly refused as naming an unknown VM (a clean-clone run added it
  // that early); asked again then, for up to 30 s.
  let add = await runCli(['rules', 'add', 'vm-vm', 'anti-affinity', 'vm-1-1,vm-2-1', '--hard', ...sock(h2)], 30_000)
  for (const end = Date.now() + 30_000; add.code !== 0 && /which no member runs or configures/.test(add.out) && Date.now() < end;) {
    await new Promise(resolve => setTimeout(resolve, 1000))
    add = await runCli(['rules', 'add', 'vm-vm', 'anti-affinity', 'vm-1-1,vm-2-1', '--hard', ...sock(h2)], 30_000)
  }
  t.equal(add.code, 0, `rules add: ${add.out.trim()}`)
  t.match(add.out, /committed at version 2/)
  await allAt([h1, h2, h3], 2)
  const rulesHashes: Array<string | undefined> = await Promise.all([h1, h2, h3].map(async n => ((await cluster.status(n))?.core as { migrations?: { rulesHash?: string } } | undefined)?.migrations?.rulesHash))
  t.ok(rulesHashes.every(h => h !== undefined && h !== '' && h === rulesHashes[0]), `every agent acts on the same rules (hash ${String(rulesHashes[0])})`)

  // Bad input: a clear error, nothing changed.
  for (const [args, pattern] of [
    [['rules', 'add', 'vm-vm', 'affinity', 'vm-1-1,nosuchvm'], /nosuchvm, which no member runs/],
    [['rules', 'add', 'vm-host', 'affinity', 'vm-1-1', 'nosuchhost'], /host nosuchhost, not a member/],
    [['members', 'add', h2, cluster.host(h4).publicKey, cluster.host(h4).address], /already called host2/],
    [['members', 'add', 'hostx', cluster.host(h3).publicKey, '127.0.0.1:1'], /already has the key/],
    [['rules', 'remove', '7'], /there is no rule 7/]
  ] as Array<[string[], RegExp]>) {
    const r = await runCli([...args, ...sock(h1)], 30_000)
    t.not(r.code, 0, `${args.join(' ')} is refused`)
    t.match(r.out, pattern)
  }
  t.same(await versions([h1, h2, h3]), [2, 2, 2], 'bad changes changed nothing')

  // Grow: host4 is added from host1, then started; it adopts the agreed history.
  const a4 = await runCli(['members', 'add', h4, cluster.host(h4).publicKey, cluster.host(h4).address, ...sock(h1)], 30_000)
  t.match(a4.out, /committed at version 3/, `members add ${h4}: ${a4.out.trim()}`)
  cluster.start(h4)
  await allAt([h1, h2, h3, h4], 3, 40_000)
  const s4 = await show(h4)
  t.same(s4?.members.map(m => m.name), [h1, h2, h3, h4], `${h4} holds the agreed members`)
  t.equal(s4?.rules.length, 1, `${h4} holds the agreed rule (its file has none)`)
  await cluster.waitViews([h1, h4], s => [h1, h2, h3, h4].every(n => stateOf(s, n) === 'alive'), 30_000)

  const a5 = await runCli(['members', 'add', h5, cluster.host(h5).publicKey, cluster.host(h5).address, ...sock(h3)], 30_000)
  t.match(a5.out, /committed at version 4/, `members add ${h5}: ${a5.out.trim()}`)
  cluster.start(h5)
  await allAt([h1, h2, h3, h4, h5], 4, 40_000)

  // Five members: three down leave two, which cannot change anything; the change is pending and
  // applies once a third member is back.
  cluster.kill9(h3); cluster.kill9(h4); cluster.kill9(h5)
  const p = await runCli(['config', 'automation', 'partial', ...sock(h1)], 40_000)
  t.equal(p.code, 3, `without a majority the change is pending (exit 3): ${p.out.trim()}`)
  t.same(await versions([h1, h2]), [4, 4], 'and not applied')
  cluster.start(h3)
  await allAt([h1, h2, h3], 5, 60_000)
  t.equal((await show(h2))?.automation, 'partial', 'applied once a majority answered')

  // Shrink back to three while host4 and host5 are down.
  for (const n of [h5, h4]) {
    const r = await runCli(['members', 'remove', n, '--force', ...sock(h2)], 40_000)
    t.equal(r.code, 0, `members remove ${n}: ${r.out.trim()}`)
  }
  await allAt([h1, h2, h3], 7)
  t.same((await show(h1))?.members.map(m => m.name), [h1, h2, h3])
  // host4 comes back: it is refused, and its own agent says why.
  cluster.start(h4)
  const log4 = async (): Promise<string> => await readFile(cluster.host(h4).logFile, 'utf8').catch(() => '')
  await until(`${h4} says it was removed`, async () => /removed from the cluster at configuration version 7/.test(await log4()), 40_000, { detail: async () => (await log4()).split('\n').slice(-40).join('\n') })
  t.equal((await show(h4))?.removed, true, `${h4}'s own status says it is not a member`)
  const v1 = await cluster.status(h1)
  t.not(stateOf(v1!, h4), 'alive', `${h4} is not alive in ${h1}'s view`)
})
