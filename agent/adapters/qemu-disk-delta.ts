/**
 * A disk that returns to a host it left sends only the clusters written since it left.
 *
 * How the two ends know what differs, with QEMU's own dirty bitmaps (qcow2 images only: a raw
 * image cannot keep a bitmap):
 *
 * - **Departure (source, before `migrate`).** Each disk gets a persistent bitmap
 *   `starling-<token>`, and the migration carries it to the target (the `dirty-bitmaps`
 *   capability). On the target it keeps recording: it holds every cluster written since the VM
 *   left the source (and the few written during the copy, which only makes it larger).
 * - **The switch (source, guest paused in pre-switchover, disk copies complete).** Each disk gets
 *   a second persistent bitmap, `left-<token>`, which is not migrated. QEMU stores it in the
 *   source's image when the migration completes. It is the image's seal: its count stays 0 for
 *   as long as nothing writes to the image. If the migration fails and the guest resumes there,
 *   or anything boots from the image later, the bitmap records the writes and the seal is broken.
 * - **Return (target = a host holding an old copy).** The target reads its image's bitmaps with a
 *   throwaway read-only QEMU. A seal `left-T` with count 0, a clean image of the right size and
 *   backing file: the image holds exactly what the VM's disk held when it left with token T. The
 *   seal is removed before the image is touched (a copy that fails half-way never looks valid),
 *   the image is reused in place, and the target tells the source "disk i: I have T".
 * - **The copy (source).** When disk i's node has a consistent bitmap `starling-T`, the source
 *   sends only its clusters: an incremental backup (`blockdev-backup`, sync `bitmap`, the bitmap
 *   left as it is) into the target's NBD export, started in one transaction with a new round
 *   bitmap that records the writes made from then on. Rounds repeat, like a memory pre-copy,
 *   while a round's new writes exceed a threshold; the last round runs in pre-switchover with
 *   the guest paused, so it copies exactly what is left. QEMU 7.2's mirror takes no bitmap, and a
 *   backup cannot run beside a mirror on the same node, hence backup rounds.
 *
 * Correctness of a round: a backup copies each cluster of its bitmap as it was when the round
 * started (a guest write to a cluster not yet copied first copies the old content out), and the
 * round bitmap, added in the same transaction, records every write after that instant. So after
 * round k the target holds the source's content at round k's start, except for the clusters in
 * the round-k bitmap, which round k+1 copies. The final round, with the guest paused, leaves the
 * target identical to the source.
 */
import { spawn } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import type { QmpClient, QmpEvent } from './qmp-client.js'

/** The dirty bitmaps of a block node, as QMP reports them. */
export interface BitmapInfo {
  name: string
  count: number
  persistent: boolean
  recording: boolean
  busy: boolean
  inconsistent?: boolean
}

/** What `qemu-img info`-like probing of an image found (through QEMU, which also counts bitmaps). */
export interface ImageFacts {
  format: string
  virtualSize: number
  backing?: string
  bitmaps: BitmapInfo[]
}

const SEAL = 'left-'
const TRACK = 'starling-'
/** Departure bitmaps a live disk keeps (the newest): one per host the VM may return to. */
export const KEEP_TRACKING = 3

/** A new token: sortable by time (base-36 ms) then random. */
export function newToken (nowMs: number): string {
  return `${Math.floor(nowMs).toString(36).padStart(9, '0')}-${randomBytes(4).toString('hex')}`
}

export function trackName (token: string): string { return `${TRACK}${token}` }
export function sealName (token: string): string { return `${SEAL}${token}` }
export function isSeal (name: string): boolean { return name.startsWith(SEAL) }

/** `nbd:host:port;have=0:T,1:T` → the address and what the target holds per disk. */
export function splitHave (nbd: string): { addr: string, have: Map<number, string> } {
  const i = nbd.indexOf(';have=')
  const have = new Map<number, string>()
  if (i < 0) return { addr: nbd, have }
  for (const part of nbd.slice(i + 6).split(',')) {
    const m = /^(\d{1,3}):([0-9a-z]{1,16}-[0-9a-f]{8})$/.exec(part)
    if (m?.[1] !== undefined && m[2] !== undefined) have.set(Number(m[1]), m[2])
  }
  return { addr: nbd.slice(0, i), have }
}

export function joinHave (addr: string, have: Map<number, string>): string {
  if (have.size === 0) return addr
  return `${addr};have=${[...have].map(([i, t]) => `${i}:${t}`).join(',')}`
}

/**
 * The image's format, size, backing file and bitmaps with their counts, read by a throwaway
 * QEMU that opens it read-only (`qemu-img info` lists bitmaps without counts).
 */
export async function probeImage (qemuBinary: string, file: string, timeoutMs = 20_000): Promise<ImageFacts> {
  const blockdev = JSON.stringify({ driver: 'qcow2', 'node-name': 'probe', 'read-only': true, file: { driver: 'file', filename: file, 'read-only': true } })
  const p = spawn(qemuBinary, ['-machine', 'none', '-nodefaults', '-display', 'none', '-S', '-blockdev', blockdev, '-qmp', 'stdio'], { stdio: ['pipe', 'pipe', 'pipe'] })
  let out = ''
  let err = ''
  p.stdout.setEncoding('utf8').on('data', (s: string) => { out += s })
  p.stderr.setEncoding('utf8').on('data', (s: string) => { err += s })
  p.stdin.end('{"execute":"qmp_capabilities"}\n{"execute":"query-named-block-nodes","arguments":{"flat":true}}\n{"execute":"quit"}\n')
  const timer = setTimeout(() => p.kill('SIGKILL'), timeoutMs)
  const code = await new Promise<number | null>(resolve => p.on('close', c => resolve(c)))
  clearTimeout(timer)
  for (const line of out.split('\n')) {
    let msg: { return?: unknown }
    try { msg = JSON.parse(line) as { return?: unknown } } catch { continue }
    if (!Array.isArray(msg.return)) continue
    const n = (msg.return as Array<Record<string, any>>).find(x => x['node-name'] === 'probe')
    if (n === undefined) continue
    const img = n.image as Record<string, any> | undefined
    const bitmaps = named(n['dirty-bitmaps'])
    const facts: ImageFacts = { format: String(img?.format ?? n.drv ?? ''), virtualSize: Number(img?.['virtual-size'] ?? 0), bitmaps }
    const backing = img?.['full-backing-filename']
    if (typeof backing === 'string' && backing !== '') facts.backing = backing
    return facts
  }
  throw new Error(`cannot read ${file} (QEMU exit ${String(code)}): ${err.trim().split('\n').slice(-2).join(' ') || 'no answer'}`)
}

/**
 * The token of the departure this image is an intact copy of, or null with the reason: a clean
 * qcow2 image of `sizeBytes` (on `backing`, if any) whose seal bitmap counted no write.
 */
export function intactCopyToken (f: ImageFacts, want: { sizeBytes: number, backing?: string }): { token: string | null, reason: string } {
  if (f.format !== 'qcow2') return { token: null, reason: `it is ${f.format || 'not qcow2'}, which keeps no bitmap` }
  if (f.virtualSize !== want.sizeBytes) return { token: null, reason: `its size ${f.virtualSize} is not the disk's ${want.sizeBytes}` }
  if ((f.backing ?? '') !== (want.backing ?? '')) return { token: null, reason: `its backing file ${f.backing ?? 'none'} is not the disk's ${want.backing ?? 'none'}` }
  const seals = f.bitmaps.filter(b => isSeal(b.name))
  if (seals.length === 0) return { token: null, reason: 'it carries no departure seal (it was not left by a completed migration)' }
  const intact = seals.filter(b => b.count === 0 && b.inconsistent !== true).sort((a, b) => b.name.localeCompare(a.name))[0]
  if (intact === undefined) return { token: null, reason: `its seal ${seals.map(b => `${b.name} counted ${b.count} bytes written${b.inconsistent === true ? ' and is inconsistent' : ''}`).join(', ')} since it was left` }
  return { token: intact.name.slice(SEAL.length), reason: 'intact since it was left' }
}

/** The bitmap names of node `node` in a live QEMU. */
export async function nodeBitmaps (qmp: QmpClient, node: string, opts: { signal?: AbortSignal, timeoutMs?: number }): Promise<BitmapInfo[]> {
  const nodes = await qmp.execute<Array<Record<string, any>>>('query-named-block-nodes', { flat: true }, opts)
  const n = nodes.find(x => x['node-name'] === node)
  return named(n?.['dirty-bitmaps'])
}

/** The named bitmaps of a QMP `dirty-bitmaps` list (a block job's own bitmap has no name). */
function named (v: unknown): BitmapInfo[] {
  return Array.isArray(v) ? (v as Array<Partial<BitmapInfo>>).filter((b): b is BitmapInfo => typeof b.name === 'string') : []
}

/**
 * Source, before `migrate` with storage: on each qcow2 disk node, drops seals (a live image is no
 * intact copy of anything) and all but the newest KEEP_TRACKING - 1 departure bitmaps, adds
 * `starling-<token>`, and returns the block-bitmap-mapping that carries the departure bitmaps
 * (and only them) to the target under their own names, with the nodes that took the bitmap. A
 * node that cannot keep one (a qcow2 v2 image has no persistent bitmaps) is left out: its disk
 * moves as before and a later return copies it whole.
 */
export async function prepareDeparture (qmp: QmpClient, nodes: string[], token: string, opts: { signal?: AbortSignal, timeoutMs?: number }): Promise<{ mapping: Array<Record<string, unknown>>, nodes: string[], skipped: string[] }> {
  const mapping: Array<Record<string, unknown>> = []
  const took: string[] = []
  const skipped: string[] = []
  for (const node of nodes) {
    try {
      const have = await nodeBitmaps(qmp, node, opts)
      const tracking = have.filter(b => b.name.startsWith(TRACK)).map(b => b.name).sort().reverse()
      const drop = [...have.filter(b => isSeal(b.name)).map(b => b.name), ...tracking.slice(KEEP_TRACKING - 1)]
      for (const name of drop) await qmp.execute('block-dirty-bitmap-remove', { node, name }, opts).catch(() => {})
      await qmp.execute('block-dirty-bitmap-add', { node, name: trackName(token), persistent: true }, opts)
      const keep = [...tracking.slice(0, KEEP_TRACKING - 1), trackName(token)]
      mapping.push({ 'node-name': node, alias: node, bitmaps: keep.map(name => ({ name, alias: name })) })
      took.push(node)
    } catch (err) {
      skipped.push(`${node}: ${err instanceof Error ? err.message : String(err)}`)
    }
  }
  return { mapping, nodes: took, skipped }
}

/**
 * Source, in pre-switchover with the copies complete: seals each image. Best effort: an image
 * left unsealed is only copied whole on a return. Returns what could not be sealed.
 */
export async function seal (qmp: QmpClient, nodes: string[], token: string, opts: { timeoutMs?: number }): Promise<string[]> {
  const failed: string[] = []
  for (const node of nodes) {
    try { await qmp.execute('block-dirty-bitmap-add', { node, name: sealName(token), persistent: true }, opts) } catch (err) { failed.push(`${node}: ${err instanceof Error ? err.message : String(err)}`) }
  }
  return failed
}

/** Removes the seals again (a migration that did not complete: the guest runs on here). */
export async function unseal (qmp: QmpClient, nodes: string[], token: string, opts: { timeoutMs?: number }): Promise<void> {
  for (const node of nodes) await qmp.execute('block-dirty-bitmap-remove', { node, name: sealName(token) }, opts).catch(() => {})
}

/** Copy rounds stop once a round's new writes are at most this many bytes. */
export const ROUND_DONE_BYTES = 4 * 1048576
/** At most this many rounds before the switch-over's final one. */
export const MAX_ROUNDS = 12

/**
 * The incremental copy of one disk to the target's NBD node: backup rounds driven by QMP events.
 * `ready` once a round ended with few new writes; final() runs the last round (guest paused).
 */
export class DeltaCopy {
  readonly job: string
  round = 0
  running = false
  error: string | null = null
  /** Bytes the finished rounds copied, and the running round's length and progress. */
  copiedBytes = 0
  /** The clusters written since the disk left the target (the departure bitmap), counted at the switch-over. */
  changedBytes: number | null = null
  private roundLen = 0
  /** The bitmap recording writes since the current (or last) round started. */
  private roundBitmap: string | null = null
  private oldBitmaps: string[] = []
  private lastRoundNew = Infinity
  private done: Array<() => void> = []
  private off: (() => void) | null = null
  private stopped = false
  /** No more rounds before the final one (the memory copy runs: see hold()). */
  private held = false

  constructor (
    private readonly qmp: QmpClient,
    readonly node: string,
    private readonly target: string,
    private readonly base: string,
    private readonly speed: number,
    private readonly opts: { timeoutMs?: number }
  ) {
    this.job = `mig-${node}`
  }

  get ready (): boolean { return !this.running && this.error === null && (this.lastRoundNew <= ROUND_DONE_BYTES || this.round >= MAX_ROUNDS) }

  /** The first round: every cluster of the departure bitmap. */
  async start (): Promise<void> {
    this.off = this.qmp.onEvent(e => this.onEvent(e))
    await this.startRound(this.base)
  }

  private roundName (k: number): string { return `mig-r${k}-${this.node}` }

  private async startRound (from: string): Promise<void> {
    const next = this.roundName(this.round + 1)
    const backup: Record<string, unknown> = { 'job-id': this.job, device: this.node, target: this.target, sync: 'bitmap', bitmap: from, 'bitmap-mode': 'never', 'auto-dismiss': true }
    if (this.speed > 0) backup.speed = this.speed
    this.running = true
    try {
      await this.qmp.execute('transaction', { actions: [
        { type: 'block-dirty-bitmap-add', data: { node: this.node, name: next } },
        { type: 'blockdev-backup', data: backup }
      ] }, this.opts)
    } catch (err) {
      this.running = false
      throw err
    }
    if (this.roundBitmap !== null) this.oldBitmaps.push(this.roundBitmap)
    this.roundBitmap = next
    this.round++
  }

  private onEvent (e: QmpEvent): void {
    if (e.data?.device !== this.job) return
    if (e.event === 'BLOCK_JOB_ERROR' && this.error === null) this.error = `${this.job}: ${String(e.data.operation ?? 'io')} error`
    if (e.event !== 'BLOCK_JOB_COMPLETED' && e.event !== 'BLOCK_JOB_CANCELLED') return
    if (typeof e.data.error === 'string' && this.error === null) this.error = `${this.job}: ${e.data.error}`
    if (e.event === 'BLOCK_JOB_CANCELLED' && this.error === null) this.error = `${this.job}: cancelled`
    this.copiedBytes += Number(e.data.len ?? 0)
    this.roundLen = 0
    this.running = false
    for (const f of this.done.splice(0)) f()
    void this.afterRound()
  }

  private async afterRound (): Promise<void> {
    // The bitmaps of finished rounds are no longer busy: drop them.
    for (const name of this.oldBitmaps.splice(0)) await this.qmp.execute('block-dirty-bitmap-remove', { node: this.node, name }, this.opts).catch(() => {})
    await this.maybeNextRound()
  }

  /**
   * Before the memory copy starts: no more rounds until the final one, and the running round (if
   * any) has ended. A round must not run when the migration stops the guest for its switch-over:
   * QEMU 7.2 then fails to remove the backup job's copy-before-write filter when the job ends
   * ("Permission conflict on node ... required by an unnamed block device ... and unshared by
   * block device ..."), leaves the filter in its node list without its file child, and the next
   * query-named-block-nodes segfaults (or bdrv_close fails an assertion). QEMU picks the moment it
   * stops the guest, so rounds stop before it starts. The final round, started with the guest
   * paused, copies what the memory copy's writes left.
   */
  async hold (timeoutMs: number): Promise<void> {
    this.held = true
    await this.waitIdle(timeoutMs)
    if (this.error !== null) throw new Error(this.error)
  }

  /** Starts another round when the writes since the last one are worth it (called on progress polls too). */
  async maybeNextRound (): Promise<void> {
    if (this.running || this.stopped || this.held || this.error !== null || this.roundBitmap === null || this.round >= MAX_ROUNDS) return
    const count = (await nodeBitmaps(this.qmp, this.node, this.opts).catch(() => [])).find(b => b.name === this.roundBitmap)?.count ?? 0
    this.lastRoundNew = count
    if (count <= ROUND_DONE_BYTES || this.running || this.stopped || this.held) return
    await this.startRound(this.roundBitmap).catch(err => { this.error = `${this.job}: ${err instanceof Error ? err.message : String(err)}` })
  }

  /** The running round's length and progress (from query-block-jobs), for progress reports. */
  noteJob (len: number, offset: number): { total: number, done: number } {
    this.roundLen = len
    return { total: this.copiedBytes + len, done: this.copiedBytes + offset }
  }

  get totals (): { total: number, done: number } { return { total: this.copiedBytes + this.roundLen, done: this.copiedBytes } }

  private async waitIdle (timeoutMs: number): Promise<void> {
    if (!this.running) return
    await new Promise<void>((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`${this.job}: a copy round still runs after ${timeoutMs} ms`)), timeoutMs)
      this.done.push(() => { clearTimeout(t); resolve() })
    })
  }

  /** With the guest paused: the last round, copying what the previous ones left; then cleans up. */
  async final (timeoutMs: number): Promise<void> {
    this.stopped = true
    await this.waitIdle(timeoutMs)
    if (this.error !== null) throw new Error(this.error)
    if (this.roundBitmap === null) throw new Error(`${this.job}: no copy round ran`)
    this.changedBytes = (await nodeBitmaps(this.qmp, this.node, this.opts).catch(() => [])).find(b => b.name === this.base)?.count ?? null
    const last = this.roundBitmap
    const backup: Record<string, unknown> = { 'job-id': this.job, device: this.node, target: this.target, sync: 'bitmap', bitmap: last, 'bitmap-mode': 'never', 'auto-dismiss': true }
    this.running = true
    const finished = new Promise<void>((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`${this.job}: the final round did not end within ${timeoutMs} ms`)), timeoutMs)
      this.done.push(() => { clearTimeout(t); resolve() })
    })
    try {
      await this.qmp.execute('blockdev-backup', backup, this.opts)
    } catch (err) {
      this.running = false
      throw err
    }
    await finished
    if (this.error !== null) throw new Error(this.error)
    await this.cleanup()
  }

  /** Stops: cancels a running round and drops the round bitmaps (the departure bitmap stays). */
  async cancel (): Promise<void> {
    this.stopped = true
    if (this.running) await this.qmp.execute('block-job-cancel', { device: this.job, force: true }, this.opts).catch(() => {})
    await this.waitIdle(10_000).catch(() => {})
    await this.cleanup()
  }

  private async cleanup (): Promise<void> {
    this.off?.()
    this.off = null
    const names = [...this.oldBitmaps.splice(0), ...(this.roundBitmap !== null ? [this.roundBitmap] : [])]
    this.roundBitmap = null
    for (const name of names) await this.qmp.execute('block-dirty-bitmap-remove', { node: this.node, name }, this.opts).catch(() => {})
  }
}
