/**
 * Goal: the QEMU driver live-migrates a real guest between two QEMU processes on this machine
 * (127.0.0.1) without losing it, its progress or its memory, and we know how long it paused.
 *
 * Method: the test guest (test/guest/build.sh: a Debian kernel with the dirtier as init) prints
 * a heartbeat every 10 ms on its serial console and checks a checksum of every page of its
 * working set. Two drivers with separate run directories play the source and target hosts. A
 * tail on each serial log timestamps every line as it appears, so the pause seen by the guest is
 * the gap between the last heartbeat written by the source and the first by the target; that is
 * compared with QEMU's own downtime figure. Cases: an idle guest and a lightly dirtying guest
 * (pre-copy), a cancelled migration (the guest keeps running on the source, the target QEMU
 * exits), and a write-heavy guest that only completes with post-copy.
 *
 * Under TCG (the only accelerator that boots Linux here) a dirty-bitmap sync taken while the guest
 * runs can lose a write: we saw the target kernel panic ("Fatal exception in interrupt") after a
 * 4-sync pre-copy and after a post-copy switched at the end of the first pass, about one run in
 * five. So the convergence policy caps TCG pre-copy at 3 syncs (one pass, then stop-and-copy)
 * and post-copy switches at once; in that shape every run we made was sound. A reboot on the
 * target is caught (a second "dirtier start") and the target console is printed on failure.
 * Run: npx tap test/adapters/qemu-migrate.test.ts  (about 1-2 minutes)
 */
import t, { type Test } from 'tap'
import { execFileSync } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { QemuDriver, TCG_RAM_PAD_KIB } from '../../agent/adapters/qemu-driver.js'
import type { MigrationParams, MigrationProgress } from '../../agent/ports/migrating-driver.js'
import { defaultConvergencePolicy, initialConvergenceState, planMigration, stepConvergence } from '../../agent/core/migration/convergence.js'
import { silentLogger } from '../../agent/lib/logger.js'
import type { VmSpec } from '../../agent/ports/hypervisor-driver.js'
import { buildTestGuest, guestKernel } from '../guest/guest.js'
import { sleep } from '../lib/wait.js'

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..')

function haveQemu (): string | null {
  try {
    execFileSync('qemu-system-x86_64', ['--version'], { stdio: 'ignore' })
    return null
  } catch (err) {
    return `qemu-system-x86_64 cannot run (${(err as Error).message}); install the Debian package qemu-system-x86`
  }
}

interface Line { text: string, atMs: number }
interface Heartbeat { seq: number, guestS: number, atMs: number }

/** Follows a serial log, timestamping each complete line with the host's monotonic clock. */
class SerialTail {
  lines: Line[] = []
  hbs: Heartbeat[] = []
  integrityOk = 0
  integrityFail: string[] = []
  private fd: number | null = null
  private pos = 0
  private partial = ''
  private readonly timer: NodeJS.Timeout
  private readonly buf = Buffer.alloc(1 << 16)

  constructor (readonly file: string) {
    this.timer = setInterval(() => this.poll(), 2)
  }

  poll (): void {
    if (this.fd === null) {
      try { this.fd = fs.openSync(this.file, 'r') } catch { return }
    }
    for (;;) {
      const n = fs.readSync(this.fd, this.buf, 0, this.buf.length, this.pos)
      if (n <= 0) return
      this.pos += n
      const atMs = performance.now()
      const parts = (this.partial + this.buf.toString('latin1', 0, n)).split('\n')
      this.partial = parts.pop() ?? ''
      for (const raw of parts) this.onLine(raw.replace(/\r$/, ''), atMs)
    }
  }

  private onLine (text: string, atMs: number): void {
    this.lines.push({ text, atMs })
    const m = /^hb (\d+) (\d+\.\d+) \d+$/.exec(text)
    if (m !== null) this.hbs.push({ seq: Number(m[1]), guestS: Number(m[2]), atMs })
    else if (text.startsWith('integrity ok')) this.integrityOk++
    else if (text.includes('INTEGRITY FAIL')) this.integrityFail.push(text)
  }

  lastHb (): Heartbeat | undefined { return this.hbs[this.hbs.length - 1] }

  async waitFor (what: string, pred: () => boolean, timeoutMs: number): Promise<void> {
    const end = performance.now() + timeoutMs
    while (!pred()) {
      if (performance.now() > end) {
        const tail = this.lines.slice(-5).map(l => l.text).join(' | ')
        throw new Error(`${path.basename(path.dirname(this.file))}: no ${what} within ${timeoutMs} ms; last lines: ${tail}`)
      }
      await sleep(20)
    }
  }

  close (): void { clearInterval(this.timer); if (this.fd !== null) fs.closeSync(this.fd) }
}


const missing = haveQemu()
if (missing !== null) {
  t.fail(`cannot run the QEMU migration tests: ${missing}`)
} else {
  let guestDir = ''
  try {
    guestDir = buildTestGuest()
  } catch (err) {
    t.fail(`the test guest does not build: ${(err as Error).message}`)
  }
  if (guestDir !== '') await run(guestDir)
}

async function run (guestDir: string): Promise<void> {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'starling-qemu-mig-'))
  const src = new QemuDriver({ runDir: path.join(tmp, 'src'), accel: 'auto', dieWithAgent: true, killOnClose: true }, { logger: silentLogger() })
  const dst = new QemuDriver({ runDir: path.join(tmp, 'dst'), accel: 'auto', dieWithAgent: true, killOnClose: true }, { logger: silentLogger() })
  const tails: SerialTail[] = []
  t.teardown(async () => {
    for (const tl of tails) tl.close()
    await src.close()
    await dst.close()
    fs.rmSync(tmp, { recursive: true, force: true })
  })
  t.comment(`accelerator: ${src.accel} (${src.accelReason})`)

  const spec = (id: string, wsMiB: number, rate: number | 'max'): VmSpec => ({
    id,
    vcpus: 1,
    memMiB: 256,
    extra: {
      kernel: guestKernel(guestDir),
      initrd: path.join(guestDir, 'initramfs.cpio'),
      append: `console=ttyS0 quiet loglevel=3 panic=-1 dirtier_ws=${wsMiB} dirtier_rate=${rate}`
    }
  })
  const tail = (d: QemuDriver, id: string): SerialTail => {
    const tl = new SerialTail(d.serialPath(id))
    tails.push(tl)
    return tl
  }
  const boot = async (s: VmSpec): Promise<SerialTail> => {
    await src.start(s)
    const tl = tail(src, s.id)
    await tl.waitFor('dirtier ready', () => tl.lines.some(l => l.text === 'dirtier ready'), 60_000)
    await tl.waitFor('integrity check', () => tl.integrityOk >= 1 && tl.hbs.length >= 20, 30_000)
    return tl
  }
  const waitDone = async (d: QemuDriver, id: string, timeoutMs: number, onPoll?: (p: MigrationProgress) => Promise<void>): Promise<MigrationProgress> => {
    const end = performance.now() + timeoutMs
    for (;;) {
      const p = await d.progress(id)
      if (p.status === 'completed' || p.status === 'failed' || p.status === 'cancelled') return p
      if (performance.now() > end) throw new Error(`migration of ${id} not finished after ${timeoutMs} ms: ${JSON.stringify(p)}`)
      if (onPoll !== undefined) await onPoll(p)
      await sleep(50)
    }
  }
  const precopy: MigrationParams = { mode: 'precopy', maxBandwidthBytes: 128 * 1024 * 1024, downtimeLimitMs: 300, autoConverge: false, xbzrle: false, multifd: 0 }

  /** After a completed migration: the heartbeat continues on the target, memory checks pass. */
  const checkHandover = async (tt: Test, id: string, srcTail: SerialTail, p: MigrationProgress): Promise<{ gapMs: number, guestGapMs: number }> => {
    const dstTail = tail(dst, id)
    const last = srcTail.lastHb()
    tt.ok(last !== undefined, 'source printed heartbeats')
    try {
      await dstTail.waitFor('heartbeats on the target', () => dstTail.hbs.length >= 5, 20_000)
    } catch (err) {
      tt.comment(`${id}: target console:\n${dstTail.lines.filter(l => !l.text.startsWith('hb ')).slice(0, 80).map(l => l.text).join('\n')}`)
      throw err
    }
    const first = dstTail.hbs[0]!
    const rebooted = dstTail.lines.filter(l => !l.text.startsWith('hb ')).slice(0, 40).map(l => l.text)
    tt.notOk(dstTail.lines.some(l => l.text.startsWith('dirtier start')), 'the guest did not reboot on the target', { lines: rebooted })
    tt.ok(first.seq > last!.seq && first.seq <= last!.seq + 2, `heartbeat continues on the target (source last ${last!.seq}, target first ${first.seq})`)
    const gapMs = first.atMs - last!.atMs
    const guestGapMs = (first.guestS - last!.guestS) * 1000
    const passes = dstTail.integrityOk
    await dstTail.waitFor('a full integrity pass on the target', () => dstTail.integrityOk >= passes + 1, 30_000)
    tt.same(dstTail.integrityFail, [], 'no corrupted page on the target')
    tt.same(srcTail.integrityFail, [], 'no corrupted page on the source')
    const listed = await dst.list()
    tt.equal(listed.find(v => v.id === id)?.state, 'running', 'target lists the VM as running')
    tt.equal((await src.list()).find(v => v.id === id)?.state, 'migrating', 'source VM is paused after hand-over')
    await src.stop(id)
    tt.equal(src.pid(id), undefined, 'source QEMU ended')
    tt.comment(`${id}: total ${p.totalTimeMs} ms, QEMU downtime ${String(p.downtimeMs)} ms, heartbeat gap ${gapMs.toFixed(1)} ms (guest clock ${guestGapMs.toFixed(1)} ms), ${p.dirtySyncCount} dirty syncs, ${(p.transferredBytes / 1048576).toFixed(1)} MiB sent`)
    return { gapMs, guestGapMs }
  }

  await t.test('idle guest: pre-copy hand-over', async tt => {
    const srcTail = await boot(spec('idle', 32, 0))
    const { uri } = await dst.prepareIncoming(spec('idle', 32, 0), '127.0.0.1:0')
    tt.match(uri, /^tcp:127\.0\.0\.1:\d+$/)
    tt.equal((await dst.list())[0]?.state, 'migrating', 'target waits as migrating')
    // Under TCG both ends pad the RAM off a multiple of 256 KiB (TCG_RAM_PAD_KIB: QEMU < 9.0 loses writes otherwise).
    const mem = (pid: number | undefined): string => { const a = pid === undefined ? [] : fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0'); return a[a.indexOf('-m') + 1] ?? '?' }
    const kib = spec('idle', 32, 0).memMiB * 1024
    const want = src.accel === 'tcg' ? `${kib + TCG_RAM_PAD_KIB}K` : `${kib}K`
    tt.same([mem(src.pid('idle')), mem(dst.pid('idle'))], [want, want], `-m on both ends (${src.accel})`)
    await src.migrate('idle', uri, precopy)
    const p = await waitDone(src, 'idle', 60_000)
    tt.equal(p.status, 'completed', `migration completed ${p.errorDesc ?? ''}`)
    tt.ok(p.downtimeMs !== null && p.downtimeMs >= 0, 'QEMU reports a downtime')
    const { gapMs } = await checkHandover(tt, 'idle', srcTail, p)
    tt.ok(gapMs < 2000, `guest pause under 2 s (${gapMs.toFixed(1)} ms)`)
    await dst.stop('idle')
  })

  await t.test('dirtying guest (16 MiB/s over 32 MiB): planned and steered by the convergence policy', async tt => {
    const srcTail = await boot(spec('dirty', 32, 16))
    const policy = defaultConvergencePolicy(src.accel, 'postcopy')
    const plan = planMigration({ memBytes: 256 * 1048576, workingSetBytes: 32 * 1048576, dirtyRateBytesPerS: 16 * 1048576, bandwidthBytesPerS: precopy.maxBandwidthBytes }, policy)
    tt.comment(`plan: ${plan.mode} at ${plan.downtimeLimitMs} ms (${plan.reason})`)
    tt.not(plan.mode, 'reject')
    const { uri } = await dst.prepareIncoming(spec('dirty', 32, 16), '127.0.0.1:0')
    const mode = plan.mode === 'reject' ? 'precopy' : plan.mode
    await src.migrate('dirty', uri, { ...precopy, mode, downtimeLimitMs: plan.downtimeLimitMs })
    let st = initialConvergenceState(plan, policy)
    const actions: string[] = []
    const p = await waitDone(src, 'dirty', 60_000, async q => {
      const r = stepConvergence(st, q, policy, plan.timeoutMs)
      st = r.state
      if (r.action.kind === 'none') return
      actions.push(`${r.action.kind}: ${r.action.reason}`)
      if (r.action.kind === 'setDowntime') await src.setDowntimeLimit('dirty', r.action.downtimeLimitMs)
      else if (r.action.kind === 'startPostcopy') await src.startPostcopy('dirty')
      else await src.cancel('dirty')
    })
    tt.comment(`controller actions: ${actions.length === 0 ? 'none' : actions.join('; ')}`)
    tt.equal(p.status, 'completed', `migration completed ${p.errorDesc ?? ''}`)
    const { gapMs } = await checkHandover(tt, 'dirty', srcTail, p)
    tt.ok(p.downtimeMs !== null && gapMs + 15 >= p.downtimeMs * 0.5, 'heartbeat gap is consistent with QEMU downtime')
    await dst.stop('dirty')
  })

  await t.test('write-heavy guest: cancelled pre-copy keeps it on the source, then post-copy moves it', async tt => {
    const srcTail = await boot(spec('heavy', 64, 'max'))
    // Cancel: a bandwidth cap far below the dirty rate keeps pre-copy going until we cancel.
    let { uri } = await dst.prepareIncoming(spec('heavy', 64, 'max'), '127.0.0.1:0')
    await src.migrate('heavy', uri, { ...precopy, maxBandwidthBytes: 16 * 1024 * 1024 })
    await sleep(1500)
    const mid = await src.progress('heavy')
    tt.equal(mid.status, 'active', 'still copying before the cancel')
    await src.cancel('heavy')
    const c = await waitDone(src, 'heavy', 20_000)
    // QEMU 7.2 under TCG ends a cancel racing the stream's own teardown as 'failed' now and then
    // (2 of the last 4 clean-clone runs); the agents treat both ends alike (aborted, the VM stays).
    tt.ok(c.status === 'cancelled' || c.status === 'failed', `migration ended without moving the VM (${c.status}${c.errorDesc !== null ? `: ${c.errorDesc}` : ''})`)
    const seqAtCancel = srcTail.lastHb()?.seq ?? 0
    await srcTail.waitFor('heartbeats after the cancel', () => (srcTail.lastHb()?.seq ?? 0) >= seqAtCancel + 20, 20_000)
    tt.equal((await src.list()).find(v => v.id === 'heavy')?.state, 'running', 'VM still runs on the source')
    await Promise.race([dst.exited('heavy'), sleep(10_000).then(() => { throw new Error('target QEMU did not exit after the cancel') })])
    tt.equal(dst.pid('heavy'), undefined, 'target QEMU exited after the cancel')

    // Post-copy at once: the guest moves after the setup sync, and the target faults pages in
    // while the rest streams in the background.
    ;({ uri } = await dst.prepareIncoming(spec('heavy', 64, 'max'), '127.0.0.1:0'))
    await src.migrate('heavy', uri, { ...precopy, mode: 'postcopy' })
    let sawPostcopy = false
    const p = await waitDone(src, 'heavy', 90_000, async q => { if (q.status === 'postcopy-active') sawPostcopy = true })
    tt.ok(sawPostcopy, 'ran in post-copy')
    tt.equal(p.status, 'completed', `post-copy completed ${p.errorDesc ?? ''}`)
    await checkHandover(tt, 'heavy', srcTail, p)
    await dst.stop('heavy')
  })
}
