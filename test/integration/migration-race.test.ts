/**
 * Goal: two hosts that at the same moment try to place anti-affine VMs on the same target never
 * both succeed (S2), with real agents and real QEMU guests (TCG).
 * Method: three agents; VM a runs on host1, VM b on host2, a hard anti-affinity rule keeps a and b
 * apart. Both `starling migrate a --to host3` and `starling migrate b --to host3` are started
 * together. Exactly one may commit; the other must be refused or aborted and keep running where
 * it was; every VM runs exactly once at the end.
 */
import tap from 'tap'
import { execFile, execFileSync, spawn, type ChildProcess } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { compiledCli, LocalCluster, aliveCount } from './cluster-harness.js'
import { buildTestGuest, guestKernel } from '../guest/guest.js'
import { sleep, until as waitUntil } from '../lib/wait.js'

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..')

let guestDir = ''
try {
  execFileSync('qemu-system-x86_64', ['--version'], { stdio: 'ignore' })
  guestDir = buildTestGuest()
} catch (err) {
  tap.fail(`QEMU or the test guest is missing: ${(err as Error).message}`)
}

if (guestDir !== '') {
  await tap.test('concurrent anti-affine placements on one target: at most one lands', async t => {
    const cli = compiledCli()
    const cluster = await LocalCluster.create(3, { core: { reportIntervalTicks: 10, reportPullIntervalTicks: 10, pushPullIntervalTicks: 50 } })
    const procs = new Map<string, ChildProcess>()
    const runDir = (h: string): string => path.join(cluster.host(h).stateDir, 'vms')
    const guests: Record<string, string> = { host1: 'a', host2: 'b' }
    for (const h of cluster.hosts) {
      const cfg = JSON.parse(fs.readFileSync(h.configFile, 'utf8')) as Record<string, any>
      const vm = guests[h.name]
      cfg.driver = {
        kind: 'qemu',
        vms: [],
        qemu: {
          runDir: runDir(h.name),
          accel: 'tcg',
          migrationListen: '127.0.0.1',
          vms: vm === undefined
            ? []
            : [{ id: vm, vcpus: 1, memMiB: 256, kernel: guestKernel(guestDir), initrd: path.join(guestDir, 'initramfs.cpio'), append: 'console=ttyS0 quiet loglevel=3 panic=-1 dirtier_ws=16 dirtier_rate=0' }]
        }
      }
      cfg.sampler = { kind: 'driver', intervalMs: 500, capacity: { cpuCores: 16, cpuMipsPerCore: 1000, memMiB: 8192, netMbps: 10000 } }
      cfg.migration = {
        autoBalance: false, maxBandwidthBytes: 128 * 1048576, bandwidthBytesPerS: 128 * 1048576, leaseTicks: 60, prepareTimeoutTicks: 150, intentTimeoutTicks: 50, resendTicks: 10,
        rules: { vmVm: [{ kind: 'anti-affinity', vms: ['a', 'b'], hard: true }], vmHost: [] }
      }
      fs.writeFileSync(h.configFile, JSON.stringify(cfg, null, 2))
    }
    const pidAlive = (h: string, vm: string): boolean => {
      try { process.kill(Number(fs.readFileSync(path.join(runDir(h), vm, 'qemu.pid'), 'utf8').trim()), 0); return true } catch { return false }
    }
    const serialSize = (h: string, vm: string): number => { try { return fs.statSync(path.join(runDir(h), vm, 'serial.log')).size } catch { return 0 } }
    /** Hosts where `vm`'s guest is running: its QEMU lives and its console keeps growing. */
    const runningOn = async (vm: string): Promise<string[]> => {
      const before = new Map(cluster.hosts.filter(h => pidAlive(h.name, vm)).map(h => [h.name, serialSize(h.name, vm)]))
      await sleep(700)
      return [...before].filter(([h, n]) => pidAlive(h, vm) && serialSize(h, vm) > n).map(([h]) => h)
    }
    const starling = async (args: string[]): Promise<{ code: number, out: string }> => await new Promise(resolve => {
      execFile(process.execPath, [cli, ...args], { encoding: 'utf8' }, (err, stdout, stderr) => {
        const code = err === null ? 0 : typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : 1
        resolve({ code, out: `${stdout}${stderr}`.trim() })
      })
    })
    const until = async (what: string, pred: () => boolean | Promise<boolean>, timeoutMs: number): Promise<number> => await waitUntil(what, pred, timeoutMs, { pollMs: 200 })
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
    await until('three agents alive in every view', async () => {
      for (const h of cluster.hosts) { const s = await cluster.status(h.name); if (s === null || aliveCount(s) !== 3) return false }
      return true
    }, 60_000)
    await until('both guests running', async () => (await runningOn('a')).join() === 'host1' && (await runningOn('b')).join() === 'host2', 90_000)
    await sleep(1500) // a few load reports, so every host knows where a and b run

    const [ra, rb] = await Promise.all([
      starling(['migrate', 'a', '--to', 'host3', '--config', cluster.host('host1').configFile]),
      starling(['migrate', 'b', '--to', 'host3', '--config', cluster.host('host2').configFile])
    ])
    t.comment(`a: exit ${ra.code}: ${ra.out}`)
    t.comment(`b: exit ${rb.code}: ${rb.out}`)
    const committed = [ra, rb].filter(r => r.code === 0).length
    t.ok(committed <= 1, `at most one of the two placements committed (${committed})`)
    t.ok([ra, rb].some(r => r.code !== 0 && /refused|aborted|anti-affin/.test(r.out)), 'the other was refused or aborted, and says so')

    const a = await runningOn('a')
    const b = await runningOn('b')
    t.equal(a.length, 1, `a runs exactly once (${a.join(',')})`)
    t.equal(b.length, 1, `b runs exactly once (${b.join(',')})`)
    t.notOk(a[0] === 'host3' && b[0] === 'host3', 'a and b are not together on host3')
    if (ra.code !== 0) t.equal(a[0], 'host1', 'the refused a still runs on host1')
    if (rb.code !== 0) t.equal(b[0], 'host2', 'the refused b still runs on host2')
  })
}
