/**
 * Goal: high availability through real agent processes and real QEMU guests, never two copies.
 * Cluster A, every host with a watchdog that resets it: (1) kill -9 of a host's agent AND its
 * guest: the protected VM runs again on another host (its heartbeat on the serial console) within
 * a bound, and only one copy runs; the time from the kill to the first heartbeat elsewhere is
 * reported. (2) SIGSTOP of the owner's agent alone (a hung agent; its QEMU runs on): its watchdog
 * resets the host before the majority restarts the VM elsewhere; no overlap. (3) A network cut of
 * the host that runs the VM: the cut-off host fences itself (its agent kills the guest) before
 * the majority restarts it elsewhere, and after the heal nothing runs twice.
 * Cluster B, the VM's host without a watchdog (the others with one): (4) SIGSTOP of its agent:
 * the cluster refuses to restart the VM (a second copy would run beside the first, which goes on),
 * and says it waits for an operator; once the host is really off, `starling ha confirm-down`
 * lets the VM restart elsewhere, once.
 *
 * Method: three agents on loopback, each on its own 127.0.0.x address (so that iptables can cut
 * one off by address), QEMU under TCG with the test guest (test/guest, heartbeat about every
 * 10 ms). Protected VM g1 (home host1) is booted by host1 on its first start. HA timing is short
 * for a test but checked safe by validateHaConfig (tick 100 ms). The watchdog is emulated
 * (agent/sim/fifo-watchdog.ts: a FIFO with the kernel's semantics; a reset kills the host's
 * agent and its QEMU), since a real one would reset the machine running the tests. The agents'
 * QEMU processes outlive their agent (detached), as in production. Copies are judged from
 * outside: a QEMU process whose serial log grows.
 * Run: npm run build && npx tap test/integration/ha-qemu.test.ts  (about 4 minutes; the cut
 * needs root for iptables)
 */
import tap, { type Test } from 'tap'
import { execFile, spawn, type ChildProcess } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import { compiledCli, LocalCluster, aliveCount } from './cluster-harness.js'
import { localHaConfig, validateHaConfig, requiredFenceDelayTicks, type HaConfig } from '../../agent/core/ha/ha-config.js'
import type { HaPayload } from '../../agent/api/payloads.js'
import { buildTestGuest, guestKernel } from '../guest/guest.js'
import { FifoWatchdog } from '../../agent/sim/fifo-watchdog.js'
import { Cuts, GuestWatch, canCut } from './guest-watch.js'
import { sleep, until as waitUntil } from '../lib/wait.js'

const VM = 'g1'

/** Short but safe (localHaConfig: fence delay 8.8 s, watchdog 4 s at 100 ms ticks). */
const TIMING: HaConfig = localHaConfig()
const WATCHDOG_SEC = TIMING.watchdogTicks / 10
/** Cluster B: a longer grace at start (5 s), so that host1, started last, keeps the VM it boots. */
const TIMING_B: HaConfig = { ...TIMING, fenceAfterTicks: 40, fenceTicks: 50, fenceDelayTicks: requiredFenceDelayTicks({ ...TIMING, fenceTicks: 50 }) }

let logDump = (): string => ''

const until = async (what: string, pred: () => boolean | Promise<boolean>, timeoutMs: number, pollMs = 100): Promise<number> =>
  await waitUntil(what, pred, timeoutMs, { pollMs, detail: logDump })

let guestDir = ''
try {
  guestDir = buildTestGuest()
} catch (err) {
  tap.fail(`QEMU or the test guest is missing: ${(err as Error).message}`)
}
if (guestDir !== '') {
  await tap.test('HA failover through the agents, every host fenced', async t => { await run(t, 'A') })
  await tap.test('HA on a host with no fence: refused, then restarted on an operator\'s confirmation', async t => { await run(t, 'B') })
}

async function run (t: Test, kind: 'A' | 'B'): Promise<void> {
  const timing = kind === 'A' ? TIMING : TIMING_B
  t.doesNotThrow(() => validateHaConfig({ ...timing }), `test timing is safe (fence delay ${timing.fenceDelayTicks} >= ${requiredFenceDelayTicks(timing)} ticks)`)
  const cli = compiledCli()
  const cluster = await LocalCluster.create(3, { core: { reportIntervalTicks: 10, reportPullIntervalTicks: 10, pushPullIntervalTicks: 50 } })
  const procs = new Map<string, ChildProcess>()
  const names = cluster.hosts.map(h => h.name)
  const ip = (name: string): string => `127.0.0.${names.indexOf(name) + 1}`
  const runDir = (h: string): string => path.join(cluster.host(h).stateDir, 'vms')
  const guests = new GuestWatch(names, VM, runDir)
  logDump = () => cluster.hosts.map(h => `--- ${h.name}\n` + (fs.existsSync(h.logFile) ? fs.readFileSync(h.logFile, 'utf8').split('\n').filter(l => /\bha\b|ha-|fence|vm g1/.test(l)).slice(-25).join('\n') : '')).join('\n').slice(-12000)
  const members = cluster.hosts.map(h => ({ name: h.name, publicKey: h.publicKey, address: `${ip(h.name)}:${h.address.split(':')[1]!}` }))
  const nameOf = (key: string): string => members.find(m => m.publicKey === key)?.name ?? key.slice(0, 8)
  /** Each agent's connections as it reports them: traffic each way, and how long ago the peer was heard on the stream and by datagram. */
  const meshDump = async (): Promise<string> => (await Promise.all(names.map(async h => {
    const s = await cluster.status(h)
    if (s === null) return `${h}: no status`
    const rows = (s.mesh?.peers ?? []).map(p => `  ${nameOf(p.peer)}: open ${p.openForMs} ms (${p.initiator ? 'dialled' : 'accepted'}), stream in/out ${p.streamIn}/${p.streamOut} (last in ${p.lastStreamInMsAgo ?? '-'} ms ago), datagrams in/out ${p.datagramsIn}/${p.datagramsOut} (last in ${p.lastDatagramInMsAgo ?? '-'} ms ago), backlog ${p.backlogBytes} B`)
    const log = fs.readFileSync(cluster.host(h).logFile, 'utf8').split('\n').filter(l => l.includes('"component":"agent:transport"')).slice(-12).map(l => `  ${l}`)
    return `${h}: connections opened ${s.mesh?.connectionsOpened}, closed ${s.mesh?.connectionsClosed}, replaced ${s.mesh?.connectionsReplaced}; dropped ${JSON.stringify(s.mesh?.sendDropped ?? {})}, members ${s.members.map(m => `${m.name} ${m.state}`).join(', ')}\n${rows.join('\n')}\n${log.join('\n')}`
  }))).join('\n')
  const wdPath = (h: string): string => path.join(cluster.dir, `${h}.watchdog`)
  /** The emulated watchdogs; a reset kills the host's agent and its QEMU, as a real reset would. */
  const watchdogs = new Map<string, FifoWatchdog>()
  const resetAt = new Map<string, number>()
  const guest = { vcpus: 1, memMiB: 256, kernel: guestKernel(guestDir), initrd: path.join(guestDir, 'initramfs.cpio'), append: 'console=ttyS0 quiet loglevel=3 panic=-1 dirtier_ws=8 dirtier_rate=0' }
  for (const h of cluster.hosts) {
    const cfg = JSON.parse(fs.readFileSync(h.configFile, 'utf8')) as Record<string, any>
    cfg.cluster.members = members
    cfg.node.listen = members.find(m => m.name === h.name)!.address
    cfg.driver = { kind: 'qemu', vms: [], qemu: { runDir: runDir(h.name), accel: 'tcg', migrationListen: ip(h.name), vms: h.name === 'host1' ? [{ id: VM, ...guest }] : [] } }
    cfg.sampler = { kind: 'driver', intervalMs: 500, capacity: { cpuCores: 16, cpuMipsPerCore: 1000, memMiB: 8192, netMbps: 10000 } }
    cfg.migration = { autoBalance: false }
    // Cluster B: host1 (the VM's home) has no watchdog device.
    const device = kind === 'B' && h.name === 'host1' ? path.join(cluster.dir, 'no-watchdog-here') : wdPath(h.name)
    cfg.ha = { vms: [{ id: VM, home: 'host1', priority: 10, ...guest }], timing, watchdog: { device, timeoutSec: WATCHDOG_SEC, loadSoftdog: false } }
    fs.writeFileSync(h.configFile, JSON.stringify(cfg, null, 2))
  }
  const start = (name: string): ChildProcess => {
    const h = cluster.host(name)
    const fd = fs.openSync(h.logFile, 'a')
    const p = spawn(process.execPath, [cli, 'agent', '--config', h.configFile], { stdio: ['ignore', fd, fd] })
    fs.closeSync(fd)
    procs.set(name, p)
    return p
  }
  const starling = async (args: string[]): Promise<{ code: number, out: string }> => await new Promise(resolve => {
    execFile(process.execPath, [cli, ...args], { encoding: 'utf8' }, (err, stdout, stderr) => {
      const code = err === null ? 0 : typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : 1
      resolve({ code, out: `${stdout}${stderr}` })
    })
  })
  const ha = async (name: string): Promise<HaPayload | null> => {
    const r = await fetch(`http://${cluster.host(name).apiListen}/v1/ha`, { signal: AbortSignal.timeout(2000) }).catch(() => null)
    return r === null || !r.ok ? null : await r.json() as HaPayload
  }
  const qemuPid = (h: string): number | null => guests.pid(h)
  const hbCount = (h: string): number => guests.heartbeats(h)
  const running = async (): Promise<string[]> => await guests.running()
  guests.start()
  for (const h of names) {
    if (kind === 'B' && h === 'host1') continue
    const w = new FifoWatchdog(wdPath(h), WATCHDOG_SEC * 1000, () => {
      resetAt.set(h, performance.now())
      const p = procs.get(h)
      if (p !== undefined && p.exitCode === null && p.signalCode === null) p.kill('SIGKILL')
      const q = qemuPid(h)
      if (q !== null) try { process.kill(q, 'SIGKILL') } catch { /* gone */ }
    })
    w.start()
    watchdogs.set(h, w)
  }
  const cuts = new Cuts()
  const cut = (name: string): void => { cuts.cut(ip(name)) }
  const heal = (): void => { cuts.heal() }

  t.teardown(async () => {
    guests.stop()
    for (const w of watchdogs.values()) w.stop()
    heal()
    for (const p of procs.values()) if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL')
    guests.killAll()
    await sleep(300)
    await cluster.stop()
  })

  if (kind === 'B') {
    // host1 starts last, into a running majority, so that it keeps the VM it boots.
    start('host2'); start('host3')
    await until('host2 and host3 see each other', async () => {
      for (const h of ['host2', 'host3']) { const s = await cluster.status(h); if (s === null || aliveCount(s) !== 2) return false }
      return true
    }, 60_000)
    start('host1')
  } else {
    for (const h of names) start(h)
  }
  await until('three agents alive in every view', async () => {
    for (const h of names) { const s = await cluster.status(h); if (s === null || aliveCount(s) !== 3) return false }
    return true
  }, 60_000)
  // A host that sees no majority within fenceTicks of its start fences what it runs (then the
  // majority restarts it): the owner is whoever runs g1 once every agent is quorate.
  let first = ''
  await until('every agent quorate and agreeing on g1\'s running owner', async () => {
    const owners = new Set<string>()
    for (const h of names) {
      const s = await ha(h)
      const v = s?.vms.find(x => x.vm === VM)
      if (s == null || !s.quorum.quorate || v?.owner == null) return false
      owners.add(v.owner)
    }
    if (owners.size !== 1) return false
    first = names[members.findIndex(m => m.publicKey === [...owners][0])] ?? ''
    return (await ha(first))?.vms.find(x => x.vm === VM)?.role === 'running'
  }, 60_000)
  t.comment(`g1 runs on ${first}${first === 'host1' ? ' (its home)' : ' (host1 fenced it at start-up, before it saw a majority)'}`)
  if (kind === 'B') { await unfencedHost(t, first); return }
  const other0 = names.find(h => h !== first)!
  // Quorate needs two of three; "present" needs a lease echo with each, over a direct connection,
  // which may open a moment after the views agree. Every host must have heard the owner's HA beats
  // (which say it has a watchdog) before the owner is killed: a survivor that never did holds it
  // unfenced and rightly refuses to take its VM over (a clean-clone run on a loaded machine had
  // host3 refuse every claim of host2's for 90 s). Waited for, up to a minute; said loudly if not.
  const presentEverywhere = async (): Promise<boolean> => (await Promise.all(names.map(async h => (await ha(h))?.quorum.present.length === 3))).every(x => x)
  try {
    await until('every host sees 3/3 present', presentEverywhere, 60_000)
  } catch {
    t.fail(`not every host sees the other two present (HA beats echoed over a direct connection) after 60 s; connections:\n${await meshDump()}`)
  }
  const st = await starling(['ha', 'status', '--api', cluster.host(other0).apiListen])
  t.equal(st.code, 0, 'starling ha status answers')
  if (!t.match(st.out, /quorum\s+yes: 3\/3 present, 2 needed/, 'quorum shown')) t.comment(`connections:\n${await meshDump()}`)
  t.match(st.out, new RegExp(`g1\\s+${first}`), 'owner shown by name')
  await until(`g1 heartbeats on ${first}`, () => hbCount(first) > 20, 60_000)
  t.same(await running(), [first], `one copy, on ${first}`)

  /** Restarts a host's agent and waits until every view has it alive and it is quorate. */
  const rejoin = async (name: string): Promise<void> => {
    start(name)
    await until(`${name} back in every view`, async () => {
      for (const h of names) { const v = await cluster.status(h); if (v === null || aliveCount(v) !== 3) return false }
      return true
    }, 60_000)
    await until(`${name} quorate again`, async () => (await ha(name))?.quorum.quorate === true, 30_000)
  }

  /** Cluster B: host1 has no fence. */
  async function unfencedHost (tt: Test, owner: string): Promise<void> {
    if (owner !== 'host1') { tt.fail(`g1 should run on host1, the host with no fence (runs on ${owner}): nothing to check`); return }
    // "No fence" is also what a host believes of a member it never heard an HA beat from. Both
    // survivors should hear host1 (present in their quorum) within seconds; when one does not (a
    // missing connection, seen on loaded runs and not yet explained), say so loudly with the
    // connections, and go on: the confirmation below must still restart g1 once (it covers the
    // life the membership view knows).
    try {
      await until('host2 and host3 hear host1\'s HA beats', async () => (await Promise.all(['host2', 'host3'].map(async h => (await ha(h))?.quorum.present.length === 3))).every(x => x), 20_000)
    } catch {
      tt.comment(`WARNING: host2 or host3 does not hear host1's HA beats after 20 s; connections:\n${await meshDump()}`)
    }
    const self = await starling(['ha', 'status', '--api', cluster.host('host1').apiListen])
    tt.match(self.out, /watchdog\s+NONE: this host's HA VMs are NOT protected/, 'host1 says it protects nothing')
    const other = await starling(['ha', 'status', '--api', cluster.host('host2').apiListen])
    tt.match(other.out, /no fence\s+host1 \(never taken over without `starling ha confirm-down`\)/, 'host2 knows host1 has no fence')
    tt.match(fs.readFileSync(cluster.host('host1').logFile, 'utf8'), /HA REFUSED ON THIS HOST/, 'host1 logged the refusal')
    const t0 = performance.now()
    procs.get('host1')!.kill('SIGSTOP')
    const waitMs = timing.fenceDelayTicks * 100 + 12_000
    tt.comment(`host1's agent stopped; watching for ${(waitMs / 1000).toFixed(0)} s (fence delay ${(timing.fenceDelayTicks / 10).toFixed(1)} s)`)
    let awaiting = false
    while (performance.now() - t0 < waitMs) {
      const p = await ha('host2')
      if (p !== null && p.awaitingConfirmation.some(id => p.names[id] === 'host1')) awaiting = true
      await sleep(500)
    }
    tt.ok(awaiting, 'host2 reports host1 as waiting for an operator\'s confirmation')
    tt.equal(guests.maxConcurrent, 1, 'no second copy of g1 while host1\'s agent is hung')
    tt.same(await running(), ['host1'], 'g1 still runs on host1, whose QEMU goes on without its agent')
    const st = await starling(['ha', 'status', '--api', cluster.host('host3').apiListen])
    tt.match(st.out, /WAITING\s+host1: dead with no fence/, '`starling ha status` says what it waits for')
    // The operator makes sure host1 is off (here: its agent and its QEMU are killed), then confirms.
    procs.get('host1')!.kill('SIGKILL')
    const pid = qemuPid('host1')
    if (pid !== null) process.kill(pid, 'SIGKILL')
    await until('host1\'s QEMU gone', () => qemuPid('host1') === null, 10_000)
    const c0 = performance.now()
    const conf = await starling(['ha', 'confirm-down', 'host1', '--config', cluster.host('host2').configFile])
    tt.equal(conf.code, 0, `confirm-down accepted: ${conf.out.trim()}`)
    let where = ''
    try {
      await until('g1 heartbeats on host2 or host3', () => {
        for (const h of ['host2', 'host3']) if (qemuPid(h) !== null && hbCount(h) > 0) { where = h; return true }
        return false
      }, 60_000, 20)
    } catch (err) {
      // For the post-mortem (a clean-clone run saw host2 claim g1 every 1.5 s for 60 s with no
      // majority of grants): how each survivor sees the VM, its quorum and host1.
      for (const h of ['host2', 'host3']) tt.comment(`${h}: ${(await starling(['ha', 'status', '--api', cluster.host(h).apiListen])).out}`)
      for (const h of ['host2', 'host3']) tt.comment(`${h} HA log: ${fs.readFileSync(cluster.host(h).logFile, 'utf8').split('\n').filter(l => /"kind":"ha-/.test(l)).slice(-25).join('\n')}`)
      tt.comment(`connections:\n${await meshDump()}`)
      throw err
    }
    tt.comment(`g1 restarted on ${where} ${((performance.now() - c0) / 1000).toFixed(2)} s after the confirmation`)
    tt.same(await running(), [where], `one running copy, on ${where}`)
    tt.equal(guests.maxConcurrent, 1, 'never two g1 QEMU processes at once')
  }

  await t.test('kill -9 of the owner\'s agent and its guest: g1 runs again elsewhere, once', async tt => {
    const victim = first
    const pid = qemuPid(victim)
    tt.ok(pid !== null, `${victim} QEMU found`)
    const t0 = performance.now()
    const wall0 = Date.now()
    procs.get(victim)!.kill('SIGKILL')
    process.kill(pid!, 'SIGKILL')
    let where = ''
    const others = names.filter(h => h !== victim)
    const stale = new Map(others.map(h => [h, qemuPid(h) === null]))
    await until('a heartbeat of g1 on another host', () => {
      for (const h of others) if (qemuPid(h) !== null && stale.get(h) === true && hbCount(h) > 0) { where = h; return true }
      return false
    }, 90_000, 10)
    const failoverMs = performance.now() - t0
    tt.comment(`failover: kill -9 to the first heartbeat on ${where}: ${(failoverMs / 1000).toFixed(2)} s (fence delay ${(TIMING.fenceDelayTicks * 0.1).toFixed(1)} s)`)
    // Where the time goes, from the restarting agent's log: membership declares the victim dead,
    // the fence delay runs from its last frame, then claim, grants, QEMU start, guest boot.
    const at = (re: RegExp): string => {
      const line = fs.readFileSync(cluster.host(where).logFile, 'utf8').split('\n').filter(l => re.test(l)).map(l => JSON.parse(l) as { ts: string }).find(l => Date.parse(l.ts) >= wall0)
      return line === undefined ? '?' : `${((Date.parse(line.ts) - wall0) / 1000).toFixed(2)} s`
    }
    tt.comment(`after the kill: ${victim} declared dead ${at(/became dead/)}, claim ${at(/g1 became claiming/)}, granted ${at(/g1 became starting/)}, QEMU started ${at(/ha start \(boot\) of g1 done/)}`)
    tt.ok(failoverMs < 45_000, `within 45 s (${(failoverMs / 1000).toFixed(1)} s)`)
    tt.ok(failoverMs > TIMING.fenceDelayTicks * 100, 'not before the fence delay')
    tt.ok(watchdogs.get(victim)!.resets >= 1, `${victim}'s watchdog, closed without the magic character by the kill, reset it`)
    tt.same(await running(), [where], `one running copy, on ${where}`)
    const s = await ha(where)
    tt.equal(s?.restartsDone, 1, `${where} counts the restart`)
    tt.equal(s?.vms.find(v => v.vm === VM)?.role, 'running')
    const other = others.find(h => h !== where)!
    const so = await starling(['ha', 'status', '--json', '--api', cluster.host(other).apiListen])
    const p = JSON.parse(so.out) as HaPayload
    tt.same(p.fencedHosts.map(id => p.names[id]), [victim], `${victim} is listed as fenced (may be taken over)`)
    tt.equal(p.names[p.vms[0]!.owner ?? ''], where, `${other} sees ${where} as the owner`)

    await rejoin(victim)
    await sleep(2000)
    tt.same(await running(), [where], `after ${victim} restarts, still one copy`)
    tt.equal(guests.maxConcurrent, 1, 'never two g1 QEMU processes at once')
  })

  await t.test('SIGSTOP of the owner\'s agent alone (hung; its QEMU runs on): the watchdog resets the host before the restart', async tt => {
    const victim = (await running())[0]
    tt.ok(victim !== undefined, `g1 runs on ${String(victim)}`)
    if (victim === undefined) return
    const resetsBefore = watchdogs.get(victim)!.resets
    const t0 = performance.now()
    procs.get(victim)!.kill('SIGSTOP')
    await until(`${victim}'s watchdog resets it`, () => watchdogs.get(victim)!.resets > resetsBefore, 30_000, 20)
    const resetMs = resetAt.get(victim)! - t0
    tt.comment(`reset ${(resetMs / 1000).toFixed(2)} s after the SIGSTOP (watchdog ${WATCHDOG_SEC} s)`)
    tt.ok(resetMs >= WATCHDOG_SEC * 1000 - 2000, 'not long before the watchdog timeout (the agent pets about every second)')
    let where = ''
    await until('g1 heartbeats on another host', () => {
      for (const h of names) if (h !== victim && qemuPid(h) !== null && hbCount(h) > 0) { where = h; return true }
      return false
    }, 90_000, 10)
    const restartMs = performance.now() - t0
    tt.comment(`restart: first heartbeat on ${where} ${(restartMs / 1000).toFixed(2)} s after the SIGSTOP (fence delay ${(TIMING.fenceDelayTicks / 10).toFixed(1)} s)`)
    tt.ok(resetMs < restartMs, 'the hung host was reset before the new copy ran')
    tt.equal(guests.maxConcurrent, 1, 'never two g1 QEMU processes at once')
    tt.same(await running(), [where], `one running copy, on ${where}`)
    await rejoin(victim)
  })

  if (!canCut()) t.fail('the cut test needs root and iptables')
  else await t.test('a cut: the cut-off host fences itself before the restart; after the heal nothing runs twice', async tt => {
    const owner = (await running())[0]
    tt.ok(owner !== undefined, `g1 runs on ${String(owner)}`)
    const oldPid = qemuPid(owner!)
    const t0 = performance.now()
    cut(owner!)
    let fencedAt = 0
    await until(`${owner!} fences itself (its agent kills the guest)`, () => {
      if (qemuPid(owner!) !== null || fencedAt !== 0) return fencedAt !== 0
      fencedAt = performance.now()
      return true
    }, 30_000, 10)
    tt.comment(`fence: ${((fencedAt - t0) / 1000).toFixed(2)} s after the cut`)
    let where = ''
    await until('g1 heartbeats on another host', () => {
      for (const h of names) if (h !== owner && qemuPid(h) !== null && hbCount(h) > 0) { where = h; return true }
      return false
    }, 90_000, 10)
    const restartAt = performance.now()
    tt.comment(`restart: first heartbeat on ${where} ${((restartAt - t0) / 1000).toFixed(2)} s after the cut`)
    tt.ok(fencedAt < restartAt, 'the cut-off copy stopped before the new copy ran')
    tt.equal(qemuPid(owner!), null, `no g1 QEMU on ${owner!} (was pid ${String(oldPid)})`)
    const cutView = await ha(owner!)
    tt.equal(cutView?.quorum.quorate, false, `${owner!} sees no majority while cut`)
    heal()
    const healAt = performance.now()
    let merged = true
    try {
      await until('the cut host back in every view', async () => {
        for (const h of names) { const v = await cluster.status(h); if (v === null || aliveCount(v) !== 3) return false }
        return true
      }, 60_000, 500)
      tt.comment(`mesh merged ${((performance.now() - healAt) / 1000).toFixed(1)} s after the cut was lifted`)
      await until('every agent quorate', async () => { for (const h of names) if ((await ha(h))?.quorum.quorate !== true) return false; return true }, 30_000)
    } catch {
      merged = false
      for (const h of names) tt.comment(`${h} sees ${JSON.stringify((await cluster.status(h))?.members.map(m => `${m.name}:${m.state}`))}`)
    }
    tt.ok(merged, 'the membership merges again after the heal')
    await sleep(3000)
    tt.same(await running(), [where], `after the heal, one copy, on ${where}`)
    tt.equal(guests.maxConcurrent, 1, 'never two g1 QEMU processes at once')
    const healed = await ha(owner!)
    tt.equal(healed?.vms.find(v => v.vm === VM)?.role, 'idle', `${owner!} runs nothing`)
  })
}
