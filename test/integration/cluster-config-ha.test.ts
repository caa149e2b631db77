/**
 * Goal: the cluster grows from 3 to 5 members and shrinks back to 3 while HA is armed and a
 * protected QEMU guest runs, with a partition during a change, through real agent processes: no
 * VM runs twice, no two sides hold a majority at once beyond the lease that the HA timing
 * argument allows, no configuration version is decided twice, and an HA restart honours a
 * placement rule agreed live (by host name) and protects a VM protected live.
 * Method: five agents on loopback, each on its own 127.0.0.x address (iptables cuts one off by
 * address; root), the first three listing only themselves; QEMU under TCG with the test guest
 * (heartbeat on its serial console), g1 started unprotected on host1 (no file lists a protected
 * VM; each has an empty `ha` inventory, its timing and its watchdog); every host holds an
 * emulated watchdog (agent/sim/fifo-watchdog.ts; a reset kills the host's agent and its QEMU).
 * Steps: a hard VM-host rule keeps g1 on host1-3; g1 is protected live (`starling ha protect`
 * from host2, with the boot definition on the command line: host2's file has none); host4 is added; g1's owner is cut off and
 * host5 is added from another member during the cut (the three others are a majority of the four
 * members); the owner fences g1 and the others restart it on one of host1-3 (the rule); the cut
 * heals and the cut host catches up; host5 and host4 are removed. Copies are judged from outside (a
 * QEMU process whose serial log grows), majorities from every agent's /v1/ha every 250 ms.
 * Run: npm run build && npx tap test/integration/cluster-config-ha.test.ts  (about 3 minutes)
 */
import t from 'tap'
import { spawn, type ChildProcess } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import { compiledCli, LocalCluster, runCli } from './cluster-harness.js'
import { localHaConfig } from '../../agent/core/ha/ha-config.js'
import type { HaPayload } from '../../agent/api/payloads.js'
import type { ConfigHistory, ConfigShow } from '../../agent/cli/cluster-config.js'
import { buildTestGuest, guestKernel } from '../guest/guest.js'
import { FifoWatchdog } from '../../agent/sim/fifo-watchdog.js'
import { Cuts, GuestWatch, canCut } from './guest-watch.js'
import { sleep, until as waitUntil } from '../lib/wait.js'

const VM = 'g1'
const TIMING = localHaConfig()
const WATCHDOG_SEC = TIMING.watchdogTicks / 10

let guestDir = ''
try {
  guestDir = buildTestGuest()
} catch (err) {
  t.fail(`QEMU or the test guest is missing: ${(err as Error).message}`)
}
if (!canCut()) t.fail('this test cuts a host off with iptables: it needs root and iptables')
else if (guestDir !== '') await t.test('grow 3 -> 5 and shrink back while HA is armed, with a partition during a change', async t => {
  const cluster = await LocalCluster.create(5, { seed: 23, core: { reportIntervalTicks: 10, reportPullIntervalTicks: 10, pushPullIntervalTicks: 50 } })
  const names = cluster.hosts.map(h => h.name)
  const [h1, h2, h3, h4, h5] = names as [string, string, string, string, string]
  const ip = (n: string): string => `127.0.0.${names.indexOf(n) + 1}`
  const runDir = (h: string): string => path.join(cluster.host(h).stateDir, 'vms')
  const guests = new GuestWatch(names, VM, runDir)
  const cuts = new Cuts()
  const procs = new Map<string, ChildProcess>()
  const watchdogs = new Map<string, FifoWatchdog>()
  const members = cluster.hosts.map(h => ({ name: h.name, publicKey: h.publicKey, address: `${ip(h.name)}:${h.address.split(':')[1]!}` }))
  const guest = { vcpus: 1, memMiB: 256, kernel: guestKernel(guestDir), initrd: path.join(guestDir, 'initramfs.cpio'), append: 'console=ttyS0 quiet loglevel=3 panic=-1 dirtier_ws=8 dirtier_rate=0' }
  const wdPath = (h: string): string => path.join(cluster.dir, `${h}.watchdog`)
  for (const h of cluster.hosts) {
    const cfg = JSON.parse(fs.readFileSync(h.configFile, 'utf8')) as Record<string, any>
    // host1-3 start as the cluster; host4 and host5 know everyone (their bootstrap list).
    cfg.cluster.members = names.indexOf(h.name) < 3 ? members.slice(0, 3) : members
    cfg.node.listen = members.find(m => m.name === h.name)!.address
    cfg.driver = { kind: 'qemu', vms: [], qemu: { runDir: runDir(h.name), accel: 'tcg', migrationListen: ip(h.name), vms: h.name === h1 ? [{ id: VM, ...guest }] : [] } }
    cfg.sampler = { kind: 'driver', intervalMs: 500, capacity: { cpuCores: 16, cpuMipsPerCore: 1000, memMiB: 8192, netMbps: 10000 } }
    cfg.migration = { autoBalance: false }
    // No protected VM in the files: every host takes part in HA (an ha section) and g1 is protected live.
    cfg.ha = { timing: TIMING, watchdog: { device: wdPath(h.name), timeoutSec: WATCHDOG_SEC, loadSoftdog: false } }
    fs.writeFileSync(h.configFile, JSON.stringify(cfg, null, 2))
  }
  const logDump = (): string => cluster.hosts.map(h => `--- ${h.name}\n` + (fs.existsSync(h.logFile) ? fs.readFileSync(h.logFile, 'utf8').split('\n').filter(l => /\bha\b|ha-|fence|g1|config|member/.test(l)).slice(-20).join('\n') : '')).join('\n').slice(-14000)
  const until = async (what: string, pred: () => boolean | Promise<boolean>, ms: number, pollMs = 200): Promise<number> => await waitUntil(what, pred, ms, { pollMs, detail: logDump })
  const start = (name: string): void => {
    const h = cluster.host(name)
    const fd = fs.openSync(h.logFile, 'a')
    procs.set(name, spawn(process.execPath, [compiledCli(), 'agent', '--config', h.configFile], { stdio: ['ignore', fd, fd] }))
    fs.closeSync(fd)
    const w = new FifoWatchdog(wdPath(name), WATCHDOG_SEC * 1000, () => {
      const p = procs.get(name)
      if (p !== undefined && p.exitCode === null && p.signalCode === null) p.kill('SIGKILL')
      const q = guests.pid(name)
      if (q !== null) try { process.kill(q, 'SIGKILL') } catch { /* gone */ }
    })
    w.start()
    watchdogs.set(name, w)
  }
  const sock = (n: string): string[] => ['--socket', cluster.host(n).apiSocket, '--api', cluster.host(n).apiListen]
  const ha = async (n: string): Promise<HaPayload | null> => {
    const r = await fetch(`http://${cluster.host(n).apiListen}/v1/ha`, { signal: AbortSignal.timeout(2000) }).catch(() => null)
    return r === null || !r.ok ? null : await r.json() as HaPayload
  }
  const show = async (n: string): Promise<ConfigShow | null> => {
    const r = await runCli(['config', 'show', '--json', ...sock(n)], 10_000)
    return r.code === 0 ? JSON.parse(r.out) as ConfigShow : null
  }
  const allAt = async (ns: string[], v: number, ms = 40_000): Promise<void> => {
    await until(`${ns.join(', ')} at version ${v}`, async () => (await Promise.all(ns.map(async n => (await show(n))?.version))).every(x => x === v), ms, 500)
  }
  const quorateAll = async (ns: string[], size: number, ms = 40_000): Promise<void> => {
    await until(`${ns.join(', ')} quorate among ${size} members`, async () => (await Promise.all(ns.map(async n => await ha(n)))).every(p => p?.quorum.quorate === true && p.quorum.needed === Math.floor(size / 2) + 1), ms, 500)
  }

  // Majorities, sampled from every running agent: while host1 is cut off, host1 and the others
  // both quorate beyond the lease (and two ticks of slack) would be two majorities at once.
  let cutAt = 0
  let cutHost = ''
  let twoMajorities = 0
  let otherSideQuorate = 0
  const leaseMs = (TIMING.leaseTicks + 2) * 100
  let sampling = true
  const sampler = (async () => {
    while (sampling) {
      if (cutAt > 0) {
        const at = performance.now()
        const ps = await Promise.all(names.filter(n => procs.has(n)).map(async n => [n, await ha(n)] as const))
        const q1 = ps.find(([n]) => n === cutHost)?.[1]?.quorum.quorate === true
        const others = ps.filter(([n, p]) => n !== cutHost && p?.quorum.quorate === true).length
        if (others > 0) otherSideQuorate++
        if (q1 && others > 0 && at - cutAt > leaseMs) twoMajorities++
      }
      await sleep(250)
    }
  })()
  guests.start()

  t.teardown(async () => {
    sampling = false
    await sampler
    guests.stop()
    for (const w of watchdogs.values()) w.stop()
    cuts.heal()
    for (const p of procs.values()) if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL')
    guests.killAll()
    await sleep(300)
    await cluster.stop()
  })

  // Three members, HA armed, g1 on host1 (its driver starts it), not protected yet.
  for (const n of [h1, h2, h3]) start(n)
  await quorateAll([h1, h2, h3], 3, 90_000)
  let owner = ''
  await until('g1 heartbeats on one host', async () => {
    const r = await guests.running()
    owner = r.length === 1 ? r[0]! : ''
    return owner !== '' && guests.heartbeats(owner) > 20
  }, 90_000, 500)
  t.comment(`g1 runs on ${owner}`)

  // A placement rule agreed live, by host name: g1 stays on host1-3.
  const rule = await runCli(['rules', 'add', 'vm-host', 'affinity', VM, `${h1},${h2},${h3}`, '--hard', ...sock(h3)], 30_000)
  t.match(rule.out, /committed at version 2/, `rules add: ${rule.out.trim()}`)

  // Protect g1 live, from host2, whose file does not define g1: the definition is given.
  t.equal((await show(h2))?.ha?.vms.length, 0, 'nothing protected before')
  const prot = await runCli(['ha', 'protect', VM, '--priority', '10', '--vcpus', String(guest.vcpus), '--mem-mib', String(guest.memMiB), '--kernel', guest.kernel, '--initrd', guest.initrd, '--append', guest.append, ...sock(h2)], 30_000)
  t.match(prot.out, /committed at version 3/, `ha protect: ${prot.out.trim()}`)
  const listed = (await show(h3))?.ha?.vms ?? []
  t.same(listed.map(v => [v.id, v.home, v.since]), [[VM, owner, 3]], `config show lists g1, homed where it runs (${owner}), since version 3`)
  await until(`${owner} runs g1 as protected`, async () => (await ha(owner))?.vms.find(v => v.vm === VM)?.role === 'running', 20_000, 300)
  t.same(await guests.running(), [owner], `protecting g1 left its one copy on ${owner}`)

  // Grow to four.
  const a4 = await runCli(['members', 'add', h4, members[3]!.publicKey, members[3]!.address, ...sock(h1)], 30_000)
  t.match(a4.out, /committed at version 4/, `members add ${h4}: ${a4.out.trim()}`)
  start(h4)
  await allAt([h1, h2, h3, h4], 4)
  await quorateAll([h1, h2, h3, h4], 4)
  t.same(await guests.running(), [owner], `still one copy of g1, on ${owner}`)

  // The partition during a change: g1's owner is cut off, and host5 is added from another of
  // the first three (it and the two others are three of the four members: a majority).
  const from = [h1, h2, h3].find(h => h !== owner)!
  const rest = names.filter(h => h !== owner)
  cutHost = owner
  cuts.cut(ip(owner))
  cutAt = performance.now()
  const a5 = await runCli(['members', 'add', h5, members[4]!.publicKey, members[4]!.address, ...sock(from)], 40_000)
  t.match(a5.out, /committed at version 5/, `members add ${h5} from ${from} while ${owner} is cut off: ${a5.out.trim()}`)
  start(h5)
  await until(`${owner} fences g1 (its agent stops the guest)`, () => guests.pid(owner) === null, 30_000)
  t.equal((await show(owner))?.version, 4, `${owner}, cut off, decided nothing (still at version 4)`)
  t.equal((await ha(owner))?.quorum.quorate, false, `${owner} sees no majority while cut off`)
  let where = ''
  await until('g1 restarted on another host', () => {
    for (const h of rest) if (guests.pid(h) !== null && guests.heartbeats(h) > 0) { where = h; return true }
    return false
  }, 120_000, 50)
  t.comment(`g1 restarted on ${where} ${((performance.now() - cutAt) / 1000).toFixed(1)} s after the cut`)
  t.ok([h1, h2, h3].includes(where), `the restart honours the rule agreed live: ${where} is one of host1-3`)
  t.same(await guests.running(), [where], `one copy, on ${where}`)
  await allAt(rest, 5)
  await quorateAll(rest, 5)

  // Heal: the cut host catches up and runs nothing.
  cuts.heal()
  cutAt = 0
  await allAt(names, 5, 60_000)
  await quorateAll(names, 5, 60_000)
  await sleep(2000)
  t.same(await guests.running(), [where], `after the heal, one copy, on ${where}`)
  t.equal((await ha(owner))?.vms.find(v => v.vm === VM)?.role, 'idle', `${owner} runs nothing`)

  // Shrink back to three: host5 and host4 run no VM, so no --force is needed.
  for (const [n, from, v] of [[h5, h3, 6], [h4, h1, 7]] as Array<[string, string, number]>) {
    const r = await runCli(['members', 'remove', n, ...sock(from)], 40_000)
    t.match(r.out, new RegExp(`committed at version ${v}`), `members remove ${n}: ${r.out.trim()}`)
  }
  await allAt([h1, h2, h3], 7)
  await quorateAll([h1, h2, h3], 3)
  await sleep(2000)
  t.same(await guests.running(), [where], `after the shrink, one copy, on ${where}`)
  for (const n of [h4, h5]) {
    await until(`${n} says it was removed`, async () => (await show(n))?.removed === true, 40_000, 500)
    t.equal((await ha(n))?.quorum.quorate, false, `${n}, removed, holds no majority`)
  }

  // No version decided twice: every host that holds a version holds the same one.
  const seen = new Map<number, Set<string>>()
  for (const n of names) {
    const r = await runCli(['config', 'history', '--json', ...sock(n)], 10_000)
    for (const e of (JSON.parse(r.out) as ConfigHistory).versions) seen.set(e.version, (seen.get(e.version) ?? new Set()).add(e.hash))
  }
  t.same([...seen.keys()].sort((a, b) => a - b), [1, 2, 3, 4, 5, 6, 7], 'versions 1-7')
  t.ok([...seen.values()].every(s => s.size === 1), 'each version has one value on every host that holds it')
  t.equal(guests.maxConcurrent, 1, 'never two g1 QEMU processes at once')
  t.equal(twoMajorities, 0, `never two sides with a majority beyond the lease (${otherSideQuorate} samples of the other side quorate during the cut)`)
  t.ok(otherSideQuorate > 0, 'the sampler saw the majority side during the cut')
})
