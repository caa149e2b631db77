/**
 * Goal: live migration negotiated by real agent processes over the mesh, with driver.kind
 * 'libvirt' and two real libvirtd daemons: after `starling migrate g1 --to host2` the guest's
 * heartbeat goes on at host2 with its memory intact, both agents record the migration as
 * committed, and exactly one copy of the domain exists (running, on host2's libvirtd).
 *
 * Method: two libvirtd daemons on this machine (test/libvirt/daemons.ts), two agents on loopback
 * (writeLocalCluster, configurations rewritten for driver.kind 'libvirt', each with its own
 * daemon's URI as `uri` and as the `peerUri` the other daemon migrates to, and its own serial
 * directory). libvirtd keeps the VMs, so the test creates guest g1 (the test guest, 256 MiB) on
 * host1's daemon before the agents start; the agent only lists it. The guest's console is a file
 * that libvirt writes; the migration moves it into host2's serial directory, where the test reads
 * the heartbeats. When libvirt cannot run here the file fails with the reason; it never skips.
 * Run: npm run build && npx tap test/integration/migration-libvirt.test.ts  (about 1-2 minutes)
 */
import tap, { type Test } from 'tap'
import { execFile, execFileSync } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { LibvirtDriver } from '../../agent/adapters/libvirt-driver.js'
import { silentLogger } from '../../agent/lib/logger.js'
import { libvirtUnavailable, startLibvirtDaemons, type LibvirtBed, type LibvirtDaemon } from '../libvirt/daemons.js'
import { aliveCount, compiledCli, LocalCluster } from './cluster-harness.js'
import { buildTestGuest, guestKernel } from '../guest/guest.js'

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..')
const sleep = (ms: number): Promise<void> => new Promise(resolve => setTimeout(resolve, ms))

/** Heartbeats ("hb N ...") and integrity reports of a serial log, timestamped as they appear. */
class SerialLog {
  seqs: Array<{ seq: number, atMs: number }> = []
  passes = 0
  failures: string[] = []
  restarted = false
  private pos = 0
  private partial = ''
  private readonly timer = setInterval(() => this.read(), 3)
  constructor (readonly file: string) {}
  read (): void {
    let text: Buffer
    try { text = fs.readFileSync(this.file) } catch { return }
    if (text.length <= this.pos) return
    const at = performance.now()
    const lines = (this.partial + text.toString('latin1', this.pos)).split('\n')
    this.pos = text.length
    this.partial = lines.pop() ?? ''
    for (const raw of lines) {
      const l = raw.trim()
      const hb = /^hb (\d+) /.exec(l)
      if (hb !== null) this.seqs.push({ seq: Number(hb[1]), atMs: at })
      else if (l.startsWith('integrity ok')) this.passes++
      else if (l.includes('INTEGRITY FAIL')) this.failures.push(l)
      else if (l.startsWith('dirtier start')) this.restarted = true
    }
  }
  close (): void { clearInterval(this.timer) }
}

let logDump = (): string => ''

async function until (what: string, pred: () => boolean | Promise<boolean>, timeoutMs: number): Promise<void> {
  const end = Date.now() + timeoutMs
  while (!(await pred())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}\n${logDump()}`)
    await sleep(100)
  }
}

/** The state of domain g1 in a daemon ('running', 'paused', 'shut off'), or null when it has none. */
async function domstate (d: LibvirtDaemon, dom: string): Promise<string | null> {
  return await new Promise(resolve => {
    execFile('virsh', ['-c', d.uri, 'domstate', dom], { encoding: 'utf8', timeout: 10_000, env: { ...process.env, LC_ALL: 'C' } },
      (err, out) => resolve(err === null ? out.trim() : null))
  })
}

const why = libvirtUnavailable()
if (why !== null) {
  tap.fail(`cannot run the libvirt migration test: ${why}`)
} else {
  let guestDir = ''
  try {
    guestDir = buildTestGuest()
  } catch (err) {
    tap.fail(`the test guest does not build: ${(err as Error).message}`)
  }
  if (guestDir !== '') await tap.test('migration through the agents with the libvirt driver', async t => { await run(t, guestDir) })
}

async function run (t: Test, guestDir: string): Promise<void> {
  const cli = compiledCli()
  let bed: LibvirtBed
  try {
    bed = await startLibvirtDaemons(['a', 'b'])
  } catch (err) {
    t.fail(`libvirt daemons do not start: ${(err as Error).message}`)
    return
  }
  const [A, B] = bed.daemons as [LibvirtDaemon, LibvirtDaemon]
  const logs: SerialLog[] = []
  let cluster: LocalCluster | null = null
  t.teardown(async () => {
    for (const l of logs) l.close()
    await cluster?.stop()
    await bed.stop()
  })
  cluster = await LocalCluster.create(2, { core: { reportIntervalTicks: 10, reportPullIntervalTicks: 10, pushPullIntervalTicks: 50 } })
  const c = cluster
  logDump = () => c.hosts.map(h => `--- ${h.name}\n` + (fs.existsSync(h.logFile) ? fs.readFileSync(h.logFile, 'utf8').split('\n').filter(l => !l.includes('member-state') && !l.includes('peer connected')).slice(-15).join('\n') : '')).join('\n').slice(-8000)
  const daemonOf = new Map([['host1', A], ['host2', B]])
  for (const h of c.hosts) {
    const d = daemonOf.get(h.name)!
    const cfg = JSON.parse(fs.readFileSync(h.configFile, 'utf8')) as Record<string, any>
    cfg.driver = { kind: 'libvirt', libvirt: { uri: d.uri, peerUri: d.uri, migrationListen: '127.0.0.1', domainType: 'auto', serialDir: d.serialDir } }
    cfg.sampler = { kind: 'driver', intervalMs: 500, capacity: { cpuCores: 16, cpuMipsPerCore: 1000, memMiB: 8192, netMbps: 10000 } }
    cfg.migration = { autoBalance: false, maxBandwidthBytes: 128 * 1048576, bandwidthBytesPerS: 128 * 1048576, leaseTicks: 60, prepareTimeoutTicks: 150, intentTimeoutTicks: 50, resendTicks: 10 }
    fs.writeFileSync(h.configFile, JSON.stringify(cfg, null, 2))
  }
  const starling = async (args: string[]): Promise<{ code: number, out: string }> => await new Promise(resolve => {
    execFile(process.execPath, [cli, ...args], { encoding: 'utf8', timeout: 150_000 }, (err, stdout, stderr) => {
      const code = err === null ? 0 : typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : 1
      resolve({ code, out: `${stdout}${stderr}` })
    })
  })
  const migrations = async (name: string): Promise<Array<{ id: string, vm: string, role: string, state: string, reason: string, progress: { totalTimeMs: number, downtimeMs: number | null } | null }>> => {
    const r = await fetch(`http://${c.host(name).apiListen}/v1/migrations`, { signal: AbortSignal.timeout(2000) }).catch(() => null)
    if (r === null || !r.ok) return []
    return ((await r.json()) as { migrations: [] }).migrations
  }

  // libvirtd keeps the VMs: g1 exists on host1's daemon before any agent runs.
  const creator = new LibvirtDriver({ uri: A.uri, serialDir: A.serialDir, domainType: 'auto', callTimeoutMs: 30_000 }, { logger: silentLogger() })
  await creator.start({
    id: 'g1',
    vcpus: 1,
    memMiB: 256,
    extra: { kernel: guestKernel(guestDir), initrd: path.join(guestDir, 'initramfs.cpio'), append: 'console=ttyS0 quiet loglevel=3 panic=-1 dirtier_ws=32 dirtier_rate=0' }
  })
  t.comment(`g1 created on ${A.uri} as a ${creator.domainType} domain (${creator.domainTypeReason})`)
  const src = new SerialLog(path.join(A.serialDir, 'g1.log'))
  logs.push(src)

  c.startAll()
  await until('two agents alive in both views', async () => {
    for (const h of c.hosts) { const s = await c.status(h.name); if (s === null || aliveCount(s) !== 2) return false }
    return true
  }, 60_000)
  await until('guest heartbeats and an integrity pass on host1', () => src.seqs.length > 20 && src.passes >= 1, 90_000)
  t.pass('the guest runs on host1, both agents are up')
  await sleep(1500) // a few samples: host1 reports g1

  // Read host2's console file from the start: the heartbeat gap is timed as lines appear.
  const dst = new SerialLog(path.join(B.serialDir, 'g1.log'))
  logs.push(dst)
  const t0 = performance.now()
  const r = await starling(['migrate', 'g1', '--to', 'host2', '--api', c.host('host1').apiListen])
  const wallMs = performance.now() - t0
  t.equal(r.code, 0, `starling migrate: ${r.out.trim()}`)
  await until('heartbeats on host2', () => dst.seqs.length >= 5, 30_000)
  const last = src.seqs[src.seqs.length - 1]!
  const first = dst.seqs[0]!
  t.ok(first.seq > last.seq && first.seq <= last.seq + 3, `the heartbeat continues on host2 (host1 last ${last.seq}, host2 first ${first.seq})`)
  t.notOk(dst.restarted, 'the guest did not restart on host2')
  t.ok(first.atMs - last.atMs < 5000, `the guest paused ${(first.atMs - last.atMs).toFixed(0)} ms at the hand-over (< 5 s)`)
  const passes = dst.passes
  await until('an integrity pass on host2', () => dst.passes > passes, 30_000)
  t.same(dst.failures, [], 'no corrupted page on host2')
  t.same(src.failures, [], 'no corrupted page on host1')
  const n = dst.seqs.length
  await sleep(1000)
  t.ok(dst.seqs.length > n + 20, 'the heartbeat goes on on host2')

  await until('one copy of g1, running on host2', async () => (await domstate(B, 'g1')) === 'running' && (await domstate(A, 'g1')) === null, 20_000)
  t.equal(await domstate(B, 'g1'), 'running', "host2's libvirtd runs g1")
  t.equal(await domstate(A, 'g1'), null, "host1's libvirtd has no g1 any more")
  await until('the migration committed on both agents', async () =>
    (await migrations('host1')).some(m => m.vm === 'g1' && m.role === 'source' && m.state === 'committed') &&
    (await migrations('host2')).some(m => m.vm === 'g1' && m.role === 'target' && m.state === 'committed'), 20_000)
  t.pass('host1 (source) and host2 (target) both record it committed')
  const rec = (await migrations('host1')).find(m => m.vm === 'g1' && m.state === 'committed')
  t.comment(`CLI wall time ${wallMs.toFixed(0)} ms; libvirt total ${String(rec?.progress?.totalTimeMs)} ms, downtime ${String(rec?.progress?.downtimeMs)} ms; heartbeat gap ${(first.atMs - last.atMs).toFixed(0)} ms`)
  await until("g1 in host2's report, as host1 sees it", async () => {
    const s = await c.status('host1')
    const vmsOf = (name: string): string[] => s?.members.find(m => m.name === name)?.report?.vms.map(v => v.id) ?? []
    return vmsOf('host2').includes('g1') && !vmsOf('host1').includes('g1')
  }, 30_000)
  t.pass("the cluster view places g1 on host2 (host2's samples list libvirt's domain)")
  const out = await starling(['migrations', '--api', c.host('host1').apiListen])
  t.match(out.out, /committed/, 'starling migrations lists it')
}
