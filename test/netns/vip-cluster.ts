/**
 * Real VIP cores driving real adapters in a test bed, without the agent: a stand-in for the
 * runtime that is just enough to run the VIP protocol end to end on namespaces.
 *
 * - One VipOwnership core and one ArpVip adapter (inside the host's namespace) per host.
 * - Ticks come from a wall-clock timer (tickMs). Messages between cores are delivered in-process
 *   on the next turn of the event loop, and only between hosts whose bridge ports are both up, so
 *   cutting a host's link in the bed partitions it for the protocol too.
 * - A membership stand-in turns connectivity into each core's view as SWIM would: a peer cut off
 *   for suspectAfterTicks is suspect, for deadAfterTicks dead. freezeView(host) stops a host's
 *   view from changing (a host that fails to notice it is cut off: fencing broken on purpose).
 * - killAgent(host) stands for kill -9 of a host's agent: its core stops (no ticks, no frames),
 *   its address stays on the interface unless the stop hook is run (what systemd's
 *   ExecStopPost would do), and the host counts as unreachable for the others. restartAgent
 *   builds a new core from what the old one persisted (the persist effects are kept per host).
 * - Address effects are applied through the adapter one at a time per host, in order. A
 *   takeover's add is reported done when the first ARP of its burst is out (onFirstSent), and
 *   the rest of the burst continues in the background, as the effect's contract says.
 */
import { Prng } from '../../agent/core/prng.js'
import type { MemberState } from '../../agent/core/types.js'
import { VipOwnership, restoreVipState, type VipEffect, type VipRole } from '../../agent/core/vip/vip-ownership.js'
import type { VipConfig, VipSpec } from '../../agent/core/vip/vip-config.js'
import type { VipId, VipMessage } from '../../agent/core/vip/vip-messages.js'
import { arpVip, type ArpVip } from '../../agent/adapters/arp-vip.js'
import { silentLogger } from '../../agent/lib/logger.js'
import { errorCode } from '../../agent/lib/errors.js'
import type { Testbed, TestNode } from './testbed.js'
import { until } from '../lib/wait.js'

export interface VipClusterInit {
  bed: Testbed
  vips: VipSpec[]
  config: VipConfig
  /** Wall milliseconds per tick. */
  tickMs: number
  /** Ticks cut off before a peer is suspect (the cut-off host loses its quorum and fences then). */
  suspectAfterTicks: number
  /** Ticks cut off before a peer is dead (the majority may take over then). */
  deadAfterTicks: number
  seed?: number
}

/**
 * One applied address effect, with wall time: when the address was added or removed, or when a
 * burst (announce) started; a failed burst is recorded again, with ok false, when it ends.
 */
export interface AppliedEffect {
  t: number
  host: string
  type: 'add-and-announce' | 'announce' | 'remove'
  vip: VipId
  reason: string
  ok: boolean
  code?: string
}

interface HostRt {
  node: TestNode
  core: VipOwnership
  adapter: ArpVip
  queue: VipEffect[]
  busy: boolean
  cutSince: Map<string, number | null>
  lastView: string
  frozen: boolean
  /** The agent was killed: its core does nothing until restartAgent. */
  killed: boolean
  /** What its core persisted. */
  store: Map<string, unknown>
}

export class VipCluster {
  readonly hosts = new Map<string, HostRt>()
  readonly applied: AppliedEffect[] = []
  readonly events: Array<{ t: number, host: string, text: string }> = []
  /** Link cuts and restores, with wall time. */
  readonly links: Array<{ t: number, host: string, up: boolean }> = []
  private readonly cut = new Set<string>()
  private timer: NodeJS.Timeout | null = null
  private ticks = 0
  private stopped = false
  private readonly background = new Set<Promise<unknown>>()

  private readonly prng: Prng

  constructor (readonly init: VipClusterInit) {
    this.prng = new Prng(init.seed ?? 1)
    for (const node of init.bed.hosts) {
      const adapter = arpVip({ netns: node.netns, timeoutMs: 3000 })({ logger: silentLogger() })
      const store = new Map<string, unknown>()
      this.hosts.set(node.name, { node, core: this.newCore(node.name, store), adapter, queue: [], busy: false, cutSince: new Map(), lastView: '', frozen: false, killed: false, store })
    }
  }

  private newCore (name: string, store: Map<string, unknown>): VipOwnership {
    const members = this.init.bed.hosts.map(h => h.name)
    return new VipOwnership({
      self: name,
      members,
      vips: this.init.vips,
      config: this.init.config,
      prng: this.prng.fork(members.indexOf(name)),
      restored: restoreVipState([...store.entries()])
    })
  }

  /** kill -9 of the host's agent; with `stopHook`, the unit's stop hook then removes its VIPs. */
  async killAgent (host: string, opts: { stopHook: boolean }): Promise<void> {
    const h = this.h(host)
    // Its link stays up: the kernel keeps answering ARP for whatever address is left.
    h.killed = true
    h.queue.length = 0
    if (!opts.stopHook) return
    for (const spec of this.init.vips) {
      const [address = '', len = '32'] = spec.address.split('/')
      await h.adapter.remove({ address, prefixLength: Number(len), iface: spec.iface })
      this.applied.push({ t: Date.now(), host, type: 'remove', vip: spec.id, reason: 'stop-hook', ok: true })
    }
  }

  /** A new agent process on the host, from the old one's persisted state. */
  restartAgent (host: string): void {
    const h = this.h(host)
    h.core = this.newCore(host, h.store)
    h.killed = false
    h.lastView = ''
    h.cutSince.clear()
    this.drain(host)
  }

  private h (name: string): HostRt {
    const x = this.hosts.get(name)
    if (x === undefined) throw new Error(`no host ${name}`)
    return x
  }

  start (): void {
    for (const name of this.hosts.keys()) this.drain(name)
    this.timer = setInterval(() => this.tick(), this.init.tickMs)
  }

  async stop (): Promise<void> {
    this.stopped = true
    if (this.timer !== null) clearInterval(this.timer)
    for (const h of this.hosts.values()) h.adapter.stop()
    await Promise.allSettled([...this.background])
  }

  roleOf (host: string, vip: VipId): VipRole | undefined { return this.h(host).core.roleOf(vip) }

  /** Hosts whose core believes it owns the VIP. */
  owners (vip: VipId): string[] { return [...this.hosts.keys()].filter(n => this.roleOf(n, vip) === 'owner') }

  step (host: string, input: Parameters<VipOwnership['step']>[0]): void {
    if (this.stopped || this.h(host).killed) return
    this.h(host).core.step(input)
    this.drain(host)
  }

  /** Cuts a host off (its bridge port goes down) for the network and for the protocol. */
  async linkDown (host: string): Promise<void> {
    await this.init.bed.linkDown(this.h(host).node)
    this.cut.add(host)
    this.links.push({ t: Date.now(), host, up: false })
  }

  async linkUp (host: string): Promise<void> {
    await this.init.bed.linkUp(this.h(host).node)
    this.cut.delete(host)
    this.links.push({ t: Date.now(), host, up: true })
  }

  freezeView (host: string, frozen = true): void { this.h(host).frozen = frozen }

  async waitFor (pred: () => boolean, timeoutMs: number, what: string): Promise<number> {
    return await until(what, pred, timeoutMs, { pollMs: 5 })
  }

  private reachable (a: string, b: string): boolean {
    return !this.cut.has(a) && !this.cut.has(b) && this.hosts.get(a)?.killed !== true && this.hosts.get(b)?.killed !== true
  }

  /**
   * From the applied effects and the link events: how long two or more hosts that the client
   * could reach carried the VIP at once, in [fromMs, toMs]. Total and longest episode, ms.
   */
  doubleCarriers (vip: VipId, fromMs: number, toMs: number): { totalMs: number, longestMs: number } {
    type Ev = { t: number, host: string, kind: 'add' | 'remove' | 'down' | 'up' }
    const evs: Ev[] = [
      ...this.applied.filter(a => a.vip === vip && a.ok && a.type !== 'announce').map(a => ({ t: a.t, host: a.host, kind: a.type === 'remove' ? 'remove' as const : 'add' as const })),
      ...this.links.map(l => ({ t: l.t, host: l.host, kind: l.up ? 'up' as const : 'down' as const }))
    ].sort((a, b) => a.t - b.t)
    const carrying = new Set<string>()
    const down = new Set<string>()
    let totalMs = 0; let longestMs = 0; let since: number | null = null
    const close = (t: number): void => {
      if (since === null) return
      const a = Math.max(since, fromMs); const b = Math.min(t, toMs)
      if (b > a) { totalMs += b - a; longestMs = Math.max(longestMs, b - a) }
      since = null
    }
    for (const e of evs) {
      if (e.kind === 'add') carrying.add(e.host)
      if (e.kind === 'remove') carrying.delete(e.host)
      if (e.kind === 'down') down.add(e.host)
      if (e.kind === 'up') down.delete(e.host)
      const n = [...carrying].filter(h => !down.has(h)).length
      if (n >= 2 && since === null) since = e.t
      if (n < 2) close(e.t)
    }
    close(toMs)
    return { totalMs, longestMs }
  }

  private tick (): void {
    if (this.stopped) return
    this.ticks++
    this.views()
    for (const [name, h] of this.hosts) {
      if (h.killed) continue
      h.core.tick()
      this.drain(name)
    }
  }

  private views (): void {
    for (const [name, h] of this.hosts) {
      if (h.frozen || h.killed) continue
      const members: Array<{ id: string, state: MemberState }> = []
      for (const peer of this.hosts.keys()) {
        if (peer === name) continue
        let since = h.cutSince.get(peer) ?? null
        if (this.reachable(name, peer)) since = null
        else if (since === null) since = this.ticks
        h.cutSince.set(peer, since)
        const cutTicks = since === null ? -1 : this.ticks - since
        const state: MemberState = cutTicks >= this.init.deadAfterTicks ? 'dead' : cutTicks >= this.init.suspectAfterTicks ? 'suspect' : 'alive'
        members.push({ id: peer, state })
      }
      const key = JSON.stringify(members)
      if (key === h.lastView) continue
      h.lastView = key
      h.core.step({ type: 'members', members })
      this.drain(name)
    }
  }

  private drain (name: string): void {
    const h = this.h(name)
    for (const e of h.core.takeEffects()) {
      if (e.type === 'persist') {
        if (e.op.type === 'put') h.store.set(e.op.key, structuredClone(e.op.value))
        else h.store.delete(e.op.key)
        continue
      }
      if (e.type === 'event') { this.events.push({ t: Date.now(), host: name, text: e.event.text }); continue }
      if (e.type === 'send') { for (const to of e.to) this.deliver(name, to, e.message); continue }
      h.queue.push(e)
    }
    void this.work(name)
  }

  private deliver (from: string, to: string, message: VipMessage): void {
    const copy = structuredClone(message)
    setImmediate(() => {
      if (this.stopped || !this.reachable(from, to)) return
      this.step(to, { type: 'vipMessage', from, message: copy })
    })
  }

  private record (host: string, e: VipEffect & { type: 'add-and-announce' | 'announce' | 'remove' }, ok: boolean, code?: string): void {
    this.applied.push({ t: Date.now(), host, type: e.type, vip: e.vip, reason: e.type === 'add-and-announce' ? 'takeover' : e.reason, ok, ...(code !== undefined ? { code } : {}) })
  }

  /** Applies one host's address effects, one at a time, in order. */
  private async work (name: string): Promise<void> {
    const h = this.h(name)
    if (h.busy) return
    h.busy = true
    try {
      while (h.queue.length > 0 && !this.stopped && !h.killed) {
        const e = h.queue.shift()
        if (e === undefined || (e.type !== 'add-and-announce' && e.type !== 'announce' && e.type !== 'remove')) continue
        const target = { address: e.address, prefixLength: e.prefixLength, iface: e.iface }
        if (e.type === 'remove') {
          try {
            await h.adapter.remove(target)
            this.record(name, e, true)
            this.step(name, { type: 'vipApplied', vip: e.vip, op: 'remove', ok: true })
          } catch (err) {
            this.record(name, e, false, errorCode(err))
            this.step(name, { type: 'vipApplied', vip: e.vip, op: 'remove', ok: false, code: errorCode(err) ?? 'UNKNOWN' })
          }
          continue
        }
        if (e.type === 'add-and-announce') {
          try {
            await h.adapter.add(target)
            this.record(name, e, true) // the address is on the interface from here
          } catch (err) {
            this.record(name, e, false, errorCode(err))
            this.step(name, { type: 'vipApplied', vip: e.vip, op: 'add', ok: false, code: errorCode(err) ?? 'UNKNOWN' })
            continue
          }
        }
        // The burst: the add is reported at its first packet; the rest runs in the background.
        let firstSent!: () => void
        const first = new Promise<void>(resolve => { firstSent = resolve })
        const burst = h.adapter.announce(target, { count: e.burst.count, intervalMs: e.burst.intervalMs, onFirstSent: firstSent })
        if (e.type === 'announce') this.record(name, e, true)
        const tracked = burst.then(
          () => { this.step(name, { type: 'vipApplied', vip: e.vip, op: 'announce', ok: true }) },
          (err: unknown) => {
            if (e.type === 'announce') this.record(name, e, false, errorCode(err))
            this.step(name, { type: 'vipApplied', vip: e.vip, op: 'announce', ok: false, code: errorCode(err) ?? 'UNKNOWN' })
          }
        ).finally(() => { firstSent(); this.background.delete(tracked) })
        this.background.add(tracked)
        if (e.type === 'add-and-announce') {
          await first
          this.step(name, { type: 'vipApplied', vip: e.vip, op: 'add', ok: true })
        }
      }
    } finally {
      h.busy = false
    }
  }
}
