/**
 * Goal: a VM whose disk is local moves with its disk through the agents' journaled protocol
 * (`starling migrate VM --with-storage`), and keeps running with a consistent disk; requests the
 * target cannot serve are refused before any copy, with the VM untouched; kill -9 of an agent
 * while the disk is being copied ends with one running copy and a consistent disk.
 *
 * Method: two agents on loopback (writeLocalCluster, configurations rewritten for driver.kind
 * 'qemu', TCG). host1 boots g1 with a 128 MiB qcow2 disk, on which the test guest's disk checker
 * (test/guest/dirtier.c) rewrites 4 KiB blocks at random and verifies every block of its 64 MiB
 * region every few seconds: a "disk ok" pass after the move, printed by the copy that runs, shows
 * that every block holds what the guest last wrote there. host2 creates incoming images under its
 * own image directory. The agents' QEMU processes are detached and survive their agent.
 * A return trip to host1, which holds the copy the disk left there, sends only the clusters
 * written since. Then kill -9 of the source agent (reserved, while copying, at the switch-over)
 * and of the target agent (preparing its images, while copying, at the switch-over: told to take
 * over, before it answers): one running copy after restart, its disk verified by the guest.
 * Run: npm run build && npx tap test/integration/migration-qemu-storage.test.ts  (about 4 minutes)
 */
import tap, { type Test } from 'tap'
import { execFile, execFileSync, spawn, type ChildProcess } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import { compiledCli, LocalCluster, aliveCount } from './cluster-harness.js'
import { buildTestGuest, guestKernel } from '../guest/guest.js'
import { SerialMonitor } from '../../bench/lib/serial-monitor.js'

const sleep = (ms: number): Promise<void> => new Promise(resolve => setTimeout(resolve, ms))
const MiB = 1024 * 1024

let logDump = (): string => ''

async function until (what: string, pred: () => boolean | Promise<boolean>, timeoutMs: number): Promise<void> {
  const end = Date.now() + timeoutMs
  while (!(await pred())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}\n${logDump()}`)
    await sleep(100)
  }
}

let guestDir = ''
try {
  execFileSync('qemu-system-x86_64', ['--version'], { stdio: 'ignore' })
  execFileSync('qemu-img', ['--version'], { stdio: 'ignore' })
  guestDir = buildTestGuest()
} catch (err) {
  tap.fail(`QEMU, qemu-img (qemu-utils) or the test guest is missing: ${(err as Error).message}`)
}
if (guestDir !== '') await tap.test('migration with storage through the agents', run)

interface Row { id: string, state: string, vm: string, role: string, reason: string, mode?: string, storage?: boolean, diskPhase?: string, progress: { downtimeMs: number | null, dirtySyncCount?: number, disk?: { sentBytes: number, totalBytes: number } } | null }

async function run (t: Test): Promise<void> {
  const cli = compiledCli()
  const cluster = await LocalCluster.create(2, { core: { reportIntervalTicks: 10, reportPullIntervalTicks: 10, pushPullIntervalTicks: 50 } })
  const procs = new Map<string, ChildProcess>()
  logDump = () => cluster.hosts.map(h => `--- ${h.name}\n` + (fs.existsSync(h.logFile) ? fs.readFileSync(h.logFile, 'utf8').split('\n').filter(l => !l.includes('member-state') && !l.includes('peer connected')).slice(-15).join('\n') : '')).join('\n').slice(-8000)
  const mons: SerialMonitor[] = []
  const runDir = (h: string): string => path.join(cluster.host(h).stateDir, 'vms')
  const imageDir = (h: string): string => path.join(cluster.host(h).stateDir, 'images')
  const srcImage = path.join(imageDir('host1'), 'g1', 'disk.qcow2')
  fs.mkdirSync(path.dirname(srcImage), { recursive: true })
  execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', srcImage, String(128 * MiB)])
  // The half the guest's checker does not use holds data, as a disk's system files would: a full
  // copy sends it, a return trip must not.
  execFileSync('qemu-io', ['-f', 'qcow2', '-c', 'write -q -P 0x5a 64M 64M', srcImage])
  for (const h of cluster.hosts) {
    const cfg = JSON.parse(fs.readFileSync(h.configFile, 'utf8')) as Record<string, any>
    cfg.driver = {
      kind: 'qemu',
      vms: [],
      qemu: {
        runDir: runDir(h.name),
        imageDir: imageDir(h.name),
        accel: 'tcg',
        migrationListen: '127.0.0.1',
        vms: h.name === 'host1'
          ? [{
              id: 'g1', vcpus: 1, memMiB: 256, kernel: guestKernel(guestDir), initrd: path.join(guestDir, 'initramfs.cpio'),
              append: 'console=ttyS0 quiet loglevel=3 panic=-1 dirtier_ws=16 dirtier_rate=0 dirtier_disk=64 dirtier_disk_rate=64',
              disks: [{ file: srcImage, format: 'qcow2' }]
            }]
          : []
      }
    }
    cfg.sampler = { kind: 'driver', intervalMs: 500, capacity: { cpuCores: 16, cpuMipsPerCore: 1000, memMiB: 8192, netMbps: 10000 } }
    cfg.migration = { autoBalance: false, maxBandwidthBytes: 128 * MiB, bandwidthBytesPerS: 128 * MiB, leaseTicks: 60, prepareTimeoutTicks: 150, intentTimeoutTicks: 50, resendTicks: 10 }
    fs.writeFileSync(h.configFile, JSON.stringify(cfg, null, 2))
  }
  const start = (name: string, exitAt?: string): ChildProcess => {
    const h = cluster.host(name)
    const fd = fs.openSync(h.logFile, 'a')
    const env = { ...process.env }
    delete env.STARLING_TEST_EXIT_AT
    if (exitAt !== undefined) env.STARLING_TEST_EXIT_AT = exitAt
    const p = spawn(process.execPath, [cli, 'agent', '--config', h.configFile], { stdio: ['ignore', fd, fd], env })
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
  const alive = (h: string): boolean => {
    try { process.kill(Number(fs.readFileSync(path.join(runDir(h), 'g1', 'qemu.pid'), 'utf8').trim()), 0); return true } catch { return false }
  }
  /** Hosts whose copy of g1 prints (its serial log grows over 600 ms). */
  const running = async (): Promise<string[]> => {
    const size = (h: string): number => { try { return fs.statSync(path.join(runDir(h), 'g1', 'serial.log')).size } catch { return 0 } }
    const before = new Map(cluster.hosts.filter(h => alive(h.name)).map(h => [h.name, size(h.name)]))
    await sleep(600)
    return [...before].filter(([h, n]) => alive(h) && size(h) > n).map(([h]) => h)
  }
  const migrations = async (name: string): Promise<Row[]> => {
    const r = await fetch(`http://${cluster.host(name).apiListen}/v1/migrations`, { signal: AbortSignal.timeout(2000) }).catch(() => null)
    if (r === null || !r.ok) return []
    return ((await r.json()) as { migrations: Row[] }).migrations
  }
  const monitor = (h: string): SerialMonitor => {
    const m = new SerialMonitor(path.join(runDir(h), 'g1', 'serial.log'))
    mons.push(m)
    return m
  }
  /** The copy on `h` passes a full disk verification that started after now, with nothing broken. */
  const diskSound = async (tt: Test, h: string, what: string): Promise<void> => {
    const m = monitor(h)
    const t0 = performance.now()
    await m.until(`two disk passes on ${h}`, () => m.diskPasses.filter(p => p.atMs > t0).length >= 2, 60_000)
    tt.same(m.broken, [], `${what}: no bad block, page or crash on ${h}`)
  }

  t.teardown(async () => {
    for (const m of mons) m.close()
    for (const p of procs.values()) if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL')
    for (const h of cluster.hosts) {
      for (const vm of fs.existsSync(runDir(h.name)) ? fs.readdirSync(runDir(h.name)) : []) {
        try { process.kill(Number(fs.readFileSync(path.join(runDir(h.name), vm, 'qemu.pid'), 'utf8').trim()), 'SIGKILL') } catch { /* gone */ }
      }
    }
    await sleep(300)
    await cluster.stop()
  })

  for (const h of cluster.hosts) start(h.name)
  await until('two agents alive in every view', async () => {
    for (const h of cluster.hosts) { const s = await cluster.status(h.name); if (s === null || aliveCount(s) !== 2) return false }
    return true
  }, 60_000)
  let firstSent = 0
  const srcMon = monitor('host1')
  await srcMon.until('a disk pass on host1', () => srcMon.diskPasses.length >= 1, 90_000)

  await t.test('starling migrate --with-storage: the disk moves with the VM, which keeps running', async tt => {
    // Under TCG the memory copy may need a second round, which the sync cap forbids (a broken
    // guest otherwise): the driver then cancels at the switch-over and the VM stays on host1
    // with its disk. That is a correct outcome, checked here; the move is then asked again.
    let r = { code: 1, out: '' }
    for (let attempt = 1; attempt <= 3 && r.code !== 0; attempt++) {
      r = await starling(['migrate', 'g1', '--to', 'host2', '--with-storage', '--config', cluster.host('host1').configFile])
      if (r.code === 0) break
      tt.comment(`attempt ${attempt}: ${r.out.trim()}`)
      await until('g1 still running on host1 only', async () => { const c = await running(); return c.length === 1 && c[0] === 'host1' }, 20_000)
      await diskSound(tt, 'host1', `after aborted attempt ${attempt}`)
      tt.notOk(fs.existsSync(path.join(imageDir('host2'), 'g1', 'disk.qcow2')), 'the aborted copy left no image on host2')
    }
    tt.equal(r.code, 0, r.out.trim())
    await until('one copy, on host2', async () => { const c = await running(); return c.length === 1 && c[0] === 'host2' }, 30_000)
    const done = (await migrations('host1')).find(m => m.vm === 'g1')
    tt.comment(`record: mode ${String((done as { mode?: string } | undefined)?.mode)}, progress ${JSON.stringify(done?.progress)}`)
    await diskSound(tt, 'host2', 'after the move')
    tt.notOk(alive('host1'), 'the source QEMU is gone')
    const dstImage = path.join(imageDir('host2'), 'g1', 'disk.qcow2')
    tt.ok(fs.existsSync(dstImage), 'the disk lives in host2\'s image directory')
    const rec = (await migrations('host1')).find(m => m.vm === 'g1' && m.state === 'committed')
    tt.equal(rec?.storage, true, 'the record says the disk moved')
    tt.equal(rec?.diskPhase, 'memory', 'and that the memory phase followed the mirror')
    tt.equal((rec as { diskCopyMode?: string } | undefined)?.diskCopyMode, 'background', 'the guest\'s measured writes (64 KiB/s) planned a background copy')
    const sent = rec?.progress?.disk?.sentBytes ?? 0
    tt.ok(sent > 0, `disk bytes sent measured: ${(sent / MiB).toFixed(1)} MiB`)
    const out = await starling(['migrations', '--api', cluster.host('host1').apiListen])
    tt.match(out.out, /disk \d+ MiB\/\d+ MiB copied/, 'starling migrations shows the disk copy')
    firstSent = sent
  })

  await t.test('the return trip sends only the clusters written since the disk left host1', async tt => {
    if (firstSent === 0) { tt.fail('the first trip did not complete: no return trip to test'); return }
    const oldCopy = path.join(imageDir('host1'), 'g1', 'disk.qcow2')
    tt.ok(fs.existsSync(oldCopy), 'host1 kept the copy the disk left there')
    const info = JSON.parse(execFileSync('qemu-img', ['info', '--output=json', '-U', oldCopy], { encoding: 'utf8' })) as { 'format-specific'?: { data?: { bitmaps?: Array<{ name: string }> } } }
    tt.ok((info['format-specific']?.data?.bitmaps ?? []).some(b => b.name.startsWith('left-')), 'and sealed it when the VM left')
    let r = { code: 1, out: '' }
    for (let attempt = 1; attempt <= 3 && r.code !== 0; attempt++) {
      r = await starling(['migrate', 'g1', '--to', 'host1', '--with-storage', '--config', cluster.host('host2').configFile])
      if (r.code === 0) break
      tt.comment(`attempt ${attempt}: ${r.out.trim()}`)
      await until('g1 still running on host2 only', async () => { const c = await running(); return c.length === 1 && c[0] === 'host2' }, 20_000)
      // An aborted return removed the old copy (it was being overwritten): the next try is a full copy.
    }
    tt.equal(r.code, 0, r.out.trim())
    await until('one copy, on host1', async () => { const c = await running(); return c.length === 1 && c[0] === 'host1' }, 30_000)
    await diskSound(tt, 'host1', 'after the return')
    const rec = (await migrations('host2')).find(m => m.vm === 'g1' && m.state === 'committed')
    const sent = rec?.progress?.disk?.sentBytes ?? 0
    const copied = rec?.progress?.disk?.totalBytes ?? 0
    tt.comment(`return: ${(sent / MiB).toFixed(1)} MiB sent for ${(copied / MiB).toFixed(1)} MiB of changed clusters; the first trip sent ${(firstSent / MiB).toFixed(1)} MiB`)
    tt.ok(copied > 0, 'the changed clusters were measured by QEMU\'s bitmap')
    tt.ok(sent <= 1.2 * copied + 2 * MiB, `bytes sent (${(sent / MiB).toFixed(1)} MiB) are at most 1.2 x the changed clusters + 2 MiB of protocol`)
    tt.ok(sent < 0.75 * firstSent, `the return sent less than 0.75 x the full first copy (${(firstSent / MiB).toFixed(1)} MiB)`)
    const log = fs.readFileSync(cluster.host('host2').logFile, 'utf8')
    tt.match(log, /returns to a host holding its copy/, 'the source sent the disk by its changes')
  })

  // kill -9 of an agent at the steps where the disk is in flight: the agent SIGKILLs itself right
  // after journaling the step (STARLING_TEST_EXIT_AT) and is restarted without the hook. Whatever
  // the outcome (moved or not), one copy runs and its disk verifies.
  const settled = async (): Promise<boolean> => {
    for (const h of ['host1', 'host2']) {
      const p = procs.get(h)
      if (p === undefined || p.exitCode !== null || p.signalCode !== null) return false
      if ((await migrations(h)).some(m => m.state !== 'committed' && m.state !== 'aborted')) return false
    }
    return (await running()).length === 1
  }
  for (const [role, state] of [['source', 'reserved'], ['target', 'preparing'], ['source', 'copying'], ['target', 'copying'], ['source', 'switching'], ['target', 'switching']] as const) {
    await t.test(`kill -9 of the ${role} agent at ${state} of a move with storage: one running copy, its disk sound`, async tt => {
      const from = (await running())[0]
      tt.ok(from === 'host1' || from === 'host2', `VM on ${String(from)}`)
      if (from === undefined) return
      const to = from === 'host1' ? 'host2' : 'host1'
      const victim = role === 'source' ? from : to
      const old = procs.get(victim)
      old?.kill('SIGKILL')
      await new Promise<void>(resolve => { if (old === undefined || old.exitCode !== null || old.signalCode !== null) resolve(); else old.once('exit', () => resolve()) })
      const p = start(victim, `${role}:${state}`)
      const exited = new Promise<boolean>(resolve => p.once('exit', () => resolve(true)))
      await until('two agents alive in every view', async () => {
        for (const h of cluster.hosts) { const s = await cluster.status(h.name); if (s === null || aliveCount(s) !== 2) return false }
        return true
      }, 60_000)
      let died = false
      for (let attempt = 1; attempt <= 3 && !died; attempt++) {
        const r = await starling(['migrate', 'g1', '--to', to, '--with-storage', '--no-wait', '--config', cluster.host(from).configFile])
        died = await Promise.race([exited, sleep(30_000).then(() => false)])
        if (!died) tt.comment(`attempt ${attempt}: no exit yet (${r.out.trim()})`)
      }
      tt.ok(died, `${victim} killed itself at ${role}:${state}`)
      start(victim)
      try {
        await until('no migration in flight and one running copy', settled, 120_000)
      } catch (err) {
        tt.comment(JSON.stringify({ h1: await migrations('host1'), h2: await migrations('host2') }))
        throw err
      }
      const now = await running()
      tt.equal(now.length, 1, `exactly one running copy, on ${now.join(',')}`)
      if (now[0] !== undefined) await diskSound(tt, now[0], `after the kill at ${role}:${state}`)
    })
  }
}
