/**
 * Goal: a host whose guests need more memory than ballooning can find moves a VM to a peer
 * through the agents, with the guest's memory intact, and only one (a copy the migration layer
 * aborts and tries again, as it may under TCG on a loaded machine, is the same move).
 *
 * Method: two agents on loopback (LocalCluster, configurations rewritten for driver.kind 'qemu',
 * TCG). host1 runs two test guests of 256 MiB whose programs hold a 150 MiB working set each
 * (dirtier_ws=150, checksummed page by page) and is given a memory budget (memory.hostMemMiB
 * 420, target 80 % = 336 MiB) with ballooning on: the guests' balloons cannot go under what
 * their working sets and free floors need, so the balloon loop reports memory it cannot reclaim,
 * the host gossips it (HostMemory.unmet_mib) and its decider moves a VM out as for an overloaded
 * CPU (migration.policy with no underload consolidation, so memory is the only reason to move).
 * Run: npm run build && npx tap test/integration/memory-pressure-qemu.test.ts  (about 2 minutes)
 */
import tap, { type Test } from 'tap'
import { execFileSync, spawn, type ChildProcess } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import { compiledCli, LocalCluster, aliveCount } from './cluster-harness.js'
import { buildTestGuest, guestKernel } from '../guest/guest.js'
import { sleep, until as waitUntil } from '../lib/wait.js'
import type { MemoryPayload } from '../../agent/api/memory.js'

let logDump = (): string => ''
const until = async (what: string, pred: () => boolean | Promise<boolean>, timeoutMs: number): Promise<number> =>
  await waitUntil(what, pred, timeoutMs, { detail: () => logDump() })

const serialLines = (file: string): string[] => { try { return fs.readFileSync(file, 'latin1').split('\n') } catch { return [] } }

let guestDir = ''
try {
  execFileSync('qemu-system-x86_64', ['--version'], { stdio: 'ignore' })
  guestDir = buildTestGuest()
} catch (err) {
  tap.fail(`QEMU or the test guest is missing: ${(err as Error).message}`)
}
if (guestDir !== '') await tap.test('memory pressure moves a VM away', run)

async function run (t: Test): Promise<void> {
  const cli = compiledCli()
  const cluster = await LocalCluster.create(2, { core: { reportIntervalTicks: 10, reportPullIntervalTicks: 10, pushPullIntervalTicks: 50 } })
  const procs = new Map<string, ChildProcess>()
  const runDir = (h: string): string => path.join(cluster.host(h).stateDir, 'vms')
  // On a failure: each agent's last log lines, and the start and end of every guest console on host2 (a
  // guest that panicked or rebooted after its move says so there).
  logDump = () => cluster.hosts.map(h => `--- ${h.name}\n` + (fs.existsSync(h.logFile) ? fs.readFileSync(h.logFile, 'utf8').split('\n').filter(l => !l.includes('member-state') && !l.includes('peer connected')).slice(-15).join('\n') : '')).join('\n').slice(-8000) +
    (fs.existsSync(runDir('host2')) ? fs.readdirSync(runDir('host2')) : []).map(vm => `\n--- console of ${vm} on host2\n` + (l => [...l.slice(0, 40), '...', ...l.slice(-10)])(serialLines(path.join(runDir('host2'), vm, 'serial.log'))).join('\n')).join('')
  const guest = (id: string): Record<string, unknown> => ({
    id, vcpus: 1, memMiB: 256, kernel: guestKernel(guestDir), initrd: path.join(guestDir, 'initramfs.cpio'),
    append: 'console=ttyS0 quiet loglevel=3 panic=-1 dirtier_ws=150 dirtier_rate=0'
  })
  for (const h of cluster.hosts) {
    const cfg = JSON.parse(fs.readFileSync(h.configFile, 'utf8')) as Record<string, any>
    cfg.driver = { kind: 'qemu', vms: [], qemu: { runDir: runDir(h.name), accel: 'tcg', migrationListen: '127.0.0.1', vms: h.name === 'host1' ? [guest('m1'), guest('m2')] : [] } }
    cfg.sampler = { kind: 'driver', intervalMs: 1000, capacity: { cpuCores: 16, cpuMipsPerCore: 1000, memMiB: 8192, netMbps: 10000 } }
    cfg.migration = {
      autoBalance: true, balanceTicks: 10, decisionTicks: 10,
      maxBandwidthBytes: 128 * 1048576, bandwidthBytesPerS: 128 * 1048576, leaseTicks: 60, prepareTimeoutTicks: 150, intentTimeoutTicks: 50, resendTicks: 10,
      policy: { underload: { kind: 'none' }, guards: { holdDecisions: 2, cooldownDecisions: 30, minGain: 0 } }
    }
    if (h.name === 'host1') cfg.memory = { balloon: true, hostMemMiB: 420, statsPollSec: 1, policy: { statsStaleAfterS: 4 } }
    fs.writeFileSync(h.configFile, JSON.stringify(cfg, null, 2))
  }
  t.teardown(async () => {
    for (const p of procs.values()) if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL')
    for (const h of cluster.hosts) {
      for (const vm of fs.existsSync(runDir(h.name)) ? fs.readdirSync(runDir(h.name)) : []) {
        try { process.kill(Number(fs.readFileSync(path.join(runDir(h.name), vm, 'qemu.pid'), 'utf8').trim()), 'SIGKILL') } catch { /* gone */ }
      }
    }
    await sleep(300)
    await cluster.stop()
  })
  for (const h of cluster.hosts) {
    const fd = fs.openSync(h.logFile, 'a')
    procs.set(h.name, spawn(process.execPath, [cli, 'agent', '--config', h.configFile], { stdio: ['ignore', fd, fd] }))
    fs.closeSync(fd)
  }
  const memory = async (): Promise<MemoryPayload | null> => {
    const r = await fetch(`http://${cluster.host('host1').apiListen}/v1/memory`, { signal: AbortSignal.timeout(2000) }).catch(() => null)
    return r === null || !r.ok ? null : await r.json() as MemoryPayload
  }
  const migrations = async (name: string): Promise<Array<{ id: string, state: string, vm: string, role: string, reason: string }>> => {
    const r = await fetch(`http://${cluster.host(name).apiListen}/v1/migrations`, { signal: AbortSignal.timeout(2000) }).catch(() => null)
    if (r === null || !r.ok) return []
    return ((await r.json()) as { migrations: [] }).migrations
  }
  await until('two agents alive in both views', async () => {
    for (const h of cluster.hosts) { const s = await cluster.status(h.name); if (s === null || aliveCount(s) !== 2) return false }
    return true
  }, 60_000)

  let maxUnmet = 0
  let moved: { id: string, vm: string, reason: string } | undefined
  // Boots seen on host1's consoles before the move (the source's directory goes with its QEMU).
  const boots = (h: string, vm: string): number => serialLines(path.join(runDir(h), vm, 'serial.log')).filter(l => l.startsWith('dirtier start')).length
  const bootsOnHost1 = new Map<string, number>()
  await t.test('host1 is short of memory that its balloons cannot find, and moves one VM to host2', async tt => {
    await until('a committed migration out of host1', async () => {
      const m = await memory()
      maxUnmet = Math.max(maxUnmet, m?.status?.host.unmetMiB ?? 0)
      for (const vm of ['m1', 'm2']) bootsOnHost1.set(vm, Math.max(bootsOnHost1.get(vm) ?? 0, boots('host1', vm)))
      moved = (await migrations('host1')).find(r => r.role === 'source' && r.state === 'committed')
      return moved !== undefined
    }, 240_000)
    tt.ok(maxUnmet > 0, `host1 reported memory it could not reclaim (up to ${maxUnmet.toFixed(0)} MiB)`)
    tt.comment(`moved ${moved?.vm} (${moved?.reason})`)
    tt.ok(moved !== undefined && ['m1', 'm2'].includes(moved.vm), 'one of its VMs moved')
  })

  await t.test('the moved guest runs on host2 with its memory intact; the other stays; no second move', async tt => {
    const vm = moved?.vm ?? 'm1'
    const other = vm === 'm1' ? 'm2' : 'm1'
    const target = path.join(runDir('host2'), vm, 'serial.log')
    const passes = (): number => serialLines(target).filter(l => l.startsWith('integrity ok')).length
    await until(`an integrity pass of ${vm} on host2`, () => passes() >= 1, 60_000)
    tt.same(serialLines(target).filter(l => l.includes('INTEGRITY FAIL')), [], 'no page lost or changed')
    // One boot in all: a guest still booting may be moved (the host is short of memory from its
    // start, and no balloon can help before the guest's driver is up), and then its first boot ends
    // on host2. A restart shows as a second start line.
    const b1 = Math.max(bootsOnHost1.get(vm) ?? 0, boots('host1', vm))
    if (!tt.ok(b1 + boots('host2', vm) <= 1, `the guest did not boot again (start lines: ${b1} on host1 before the move, ${boots('host2', vm)} on host2)`)) tt.comment(logDump())
    const src = path.join(runDir('host1'), other, 'serial.log')
    const n = serialLines(src).length
    await sleep(3000)
    tt.ok(serialLines(src).length > n, `${other} still runs on host1`)
    await until('host1 no longer short of memory', async () => ((await memory())?.status?.host.unmetMiB ?? 1) === 0, 30_000)
    await sleep(5000)
    const all = (await migrations('host1')).concat(await migrations('host2')).filter(r => r.role === 'source')
    tt.comment(`migrations: ${all.map(r => `${r.vm} ${r.state}${r.reason !== '' ? ` (${r.reason})` : ''}`).join(', ')}`)
    tt.equal(all.filter(r => r.state === 'committed').length, 1, 'one VM moved')
    tt.same(all.filter(r => r.vm === other), [], `${other} was never sent: the VM already leaving covers the shortfall`)
  })
}
