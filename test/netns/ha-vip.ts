/**
 * HA with a VIP, on real agents in network namespaces with a real QEMU guest (TCG): shared by the
 * namespace test (ha-vip.test.ts) and bench:failover.
 *
 * Three host namespaces and a client on a bridge (testbed.ts); one `starling agent` per host
 * namespace (agent-cluster.ts) with the production core profile (100 ms ticks) and the QEMU
 * driver. Protected VM g1 (home h1) is the test guest with a NIC: QEMU user networking forwards
 * port 8080 of every address of the host that runs it (its VIP included) to the guest's httpd,
 * which serves a token made at that boot. VIP `app` is bound to g1: the host that runs g1 carries
 * it. A client process in the client namespace asks http://VIP:8080/ every 100 ms, so an answer
 * comes from the guest itself, through whichever host now carries the VIP.
 *
 * A host's death is kill -9 of its agent AND its QEMU, then the unit's ExecStopPost (`starling
 * vips --release-local`, which systemd runs after any stop of the agent) on that host.
 *
 * Every host holds an emulated watchdog device (agent-cluster.ts `watchdog`, a FIFO read by this
 * process; its reset kills the host's agent and QEMU): without a fence an agent protects no VM and
 * the others never take over its VMs. Its timeout is watchdogTicks x tick, 8 s by default.
 */
import { readFileSync } from 'node:fs'
import path from 'node:path'
import type { ChildProcess } from 'node:child_process'
import { createTestbed, type Testbed, type TestNode } from './testbed.js'
import { AgentCluster, type QemuGuest } from './agent-cluster.js'
import { sleep, waitFor } from './vip-agents.js'
import { until } from '../lib/wait.js'
import { defaultHaConfig, requiredFenceDelayTicks, validateHaConfig, type HaConfig } from '../../agent/core/ha/ha-config.js'
import type { HaPayload } from '../../agent/cli/ha.js'
import { guestKernel } from '../guest/guest.js'

export const HA_VM = 'g1'
export const VIP_ID = 'app'
export const GUEST_PORT = 8080
/** Core tick of the agents here (the production default). */
export const TICK_MS = 100

/**
 * HA timing of the bed by default: the production default (agent/core/ha/ha-config.ts
 * defaultHaConfig, 100 ms ticks). The agents' configurations leave `ha.timing` out, so they run
 * exactly what a host with no timing configured runs: lease 1.5 s, fence 2.5 s, watchdog 8 s,
 * claims 1.5 s, and the fence delay derived from them, requiredFenceDelayTicks = 153 ticks (15.3 s).
 */
export const DEFAULT_TIMING: HaConfig = validateHaConfig(defaultHaConfig())

/**
 * A shorter profile, NOT the default: every safety term of validateHaConfig kept and shortened
 * (fence after 0.5 s without a majority, done by 2 s; watchdog 3 s), fence delay the minimum
 * validateHaConfig accepts: (15 + 20 + 30 + 2 x 15 + 2) x (1 + 2 x 1000 ppm) = 98 ticks, 9.8 s.
 * Only for a comparison beside the default (bench:failover with TUNED=1).
 */
export const TUNED_TIMING: HaConfig = validateHaConfig({
  beatIntervalTicks: 5,
  leaseTicks: 15,
  fenceAfterTicks: 5,
  fenceTicks: 20,
  watchdogTicks: 30,
  claimTimeoutTicks: 15,
  claimRetryTicks: 5,
  claimBackoffTicks: 10,
  heldRefreshTicks: 30,
  fenceDelayTicks: requiredFenceDelayTicks({ leaseTicks: 15, fenceTicks: 20, watchdogTicks: 30, claimTimeoutTicks: 15, clockDriftPpm: 1000 }),
  clockDriftPpm: 1000,
  maxAttempts: 3,
  maxClaimsInFlight: 4
})

/** The emulated watchdog's timeout for a timing: the longest the agent accepts, watchdogTicks x tick (8 s by default). */
export function watchdogSec (timing: HaConfig): number { return timing.watchdogTicks * TICK_MS / 1000 }

/** The test guest with a NIC: user networking, host port GUEST_PORT to the guest's httpd on 80. */
export function netGuest (guestDir: string): Omit<QemuGuest, 'id'> {
  return {
    vcpus: 1,
    memMiB: 256,
    kernel: guestKernel(guestDir),
    initrd: path.join(guestDir, 'initramfs.cpio'),
    append: 'console=ttyS0 quiet loglevel=3 panic=-1 dirtier_ws=8 dirtier_rate=0',
    // romfile= : no option ROM (direct kernel boot needs no PXE).
    args: ['-netdev', `user,id=n0,hostfwd=tcp::${GUEST_PORT}-:80`, '-device', 'virtio-net-pci,netdev=n0,romfile=']
  }
}

export interface HttpAnswer { sentMs: number, doneMs: number, ok: boolean, body: string, err?: string }

/** A client process asking http://ADDR:PORT/ every intervalMs (each request times out after 1 s). */
export class HttpProber {
  readonly answers: HttpAnswer[] = []
  private buf = ''
  private constructor (private readonly child: ChildProcess) {
    child.stdout?.on('data', (d: Buffer) => {
      this.buf += d.toString('utf8')
      let i
      while ((i = this.buf.indexOf('\n')) >= 0) {
        const line = this.buf.slice(0, i)
        this.buf = this.buf.slice(i + 1)
        try { this.answers.push(JSON.parse(line) as HttpAnswer) } catch { /* not ours */ }
      }
    })
  }

  static start (bed: Testbed, client: TestNode, address: string, port: number, intervalMs = 100): HttpProber {
    const url = `http://${address}:${port}/`
    const script = `const http = require('node:http');
setInterval(() => {
  const sentMs = Date.now()
  const out = (o) => process.stdout.write(JSON.stringify({ sentMs, doneMs: Date.now(), ...o }) + '\\n')
  const req = http.get(${JSON.stringify(url)}, { timeout: 1000, agent: false }, res => {
    let body = ''
    res.setEncoding('utf8')
    res.on('data', d => { body += d })
    res.on('end', () => out({ ok: res.statusCode === 200, body: body.trim() }))
    res.on('error', e => out({ ok: false, body: '', err: String(e.code ?? e.message) }))
  })
  req.on('timeout', () => req.destroy(new Error('timeout')))
  req.on('error', e => out({ ok: false, body: '', err: String(e.code ?? e.message) }))
}, ${intervalMs})`
    return new HttpProber(bed.spawnIn(client.netns, [process.execPath, '-e', script]))
  }

  /** The first answer from the guest sent at or after `afterMs` (optionally with a token other than `notToken`). */
  firstGuestAnswer (afterMs: number, notToken?: string): HttpAnswer | undefined {
    return this.answers.find(a => a.sentMs >= afterMs && a.ok && a.body.startsWith('starling-test-guest') && a.body !== notToken)
  }

  lastGuestAnswer (): HttpAnswer | undefined {
    for (let i = this.answers.length - 1; i >= 0; i--) { const a = this.answers[i]!; if (a.ok && a.body.startsWith('starling-test-guest')) return a }
    return undefined
  }

  async waitGuest (afterMs: number, timeoutMs: number, notToken?: string): Promise<HttpAnswer> {
    await waitFor(() => this.firstGuestAnswer(afterMs, notToken) !== undefined, timeoutMs, `the guest to answer at the VIP${notToken !== undefined ? ' with a new boot token' : ''}`, 20)
    return this.firstGuestAnswer(afterMs, notToken)!
  }

  stop (): void { if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGKILL') }
}

/**
 * Watches, from outside the agents, how many copies of the VM run (live QEMU processes, sampled
 * every 20 ms) and how many hosts carry the VIP (every 200 ms).
 */
export class CopyWatch {
  maxCopies = 0
  copySamples = 0
  maxCarriers = 0
  carrierSamples = 0
  private readonly timer: NodeJS.Timeout
  private running = true
  private readonly loop: Promise<void>
  /** Hosts to leave out of the carrier count (cut off from the client: their address is unreachable). */
  readonly unreachable = new Set<string>()

  constructor (private readonly c: AgentCluster, vm: string, address: string) {
    this.timer = setInterval(() => {
      this.copySamples++
      this.maxCopies = Math.max(this.maxCopies, c.hosts.filter(h => c.qemuPid(h.name, vm) !== null).length)
    }, 20)
    this.loop = (async () => {
      while (this.running) {
        const hs = (await this.c.holders(address)).filter(h => !this.unreachable.has(h))
        this.carrierSamples++
        this.maxCarriers = Math.max(this.maxCarriers, hs.length)
        await sleep(200)
      }
    })()
  }

  async stop (): Promise<void> {
    clearInterval(this.timer)
    this.running = false
    await this.loop
  }
}

export interface HaVipBed {
  bed: Testbed
  /** The compiled CLI. */
  cli: string
  c: AgentCluster
  client: TestNode
  address: string
  prober: HttpProber
  watch: CopyWatch
  /** The HA timing the agents run. */
  timing: HaConfig
  destroy: () => Promise<void>
}

/** Creates the bed and the agents (not started). On failure, removes what it made. */
export async function createHaVipBed (cli: string, guestDir: string, opts: { subnet?: string, timing?: HaConfig } = {}): Promise<HaVipBed> {
  // No timing given: the configuration leaves ha.timing out and the agents run their defaults.
  const timing = opts.timing ?? DEFAULT_TIMING
  const bed = await createTestbed({ hosts: 3, clients: 1, ...(opts.subnet !== undefined ? { subnet: opts.subnet } : {}) })
  let c: AgentCluster | null = null
  try {
    const address = bed.vip(0)
    const guest = netGuest(guestDir)
    c = await AgentCluster.create({
      bed,
      cli,
      productionCore: true,
      vips: [{ id: VIP_ID, address: `${address}/24`, iface: 'eth0', vm: HA_VM }],
      qemu: { vmsOn: { h1: [{ id: HA_VM, ...guest }] } },
      ha: { vms: [{ id: HA_VM, home: 'h1', priority: 10, ...guest }], ...(opts.timing !== undefined ? { timing: opts.timing } : {}) },
      watchdog: { timeoutSec: watchdogSec(timing) },
      migration: { autoBalance: false }
    })
    const cluster = c
    const client = bed.clients[0]!
    const prober = HttpProber.start(bed, client, address, GUEST_PORT)
    const watch = new CopyWatch(c, HA_VM, address)
    return {
      bed,
      cli,
      c,
      client,
      address,
      prober,
      watch,
      timing,
      destroy: async () => {
        prober.stop()
        await watch.stop()
        await cluster.destroy()
        await bed.destroy()
      }
    }
  } catch (err) {
    if (c !== null) await c.destroy()
    await bed.destroy()
    throw err
  }
}

/** `starling ha status --json` inside a host's namespace (null while its agent does not answer). */
export async function haStatus (hb: HaVipBed, name: string): Promise<HaPayload | null> {
  const h = hb.c.host(name)
  const r = await hb.bed.exec(h.node.netns, [process.execPath, hb.cli, 'ha', 'status', '--json', '--api', '127.0.0.1:7946'], { timeoutMs: 10_000 })
  if (r.code !== 0) return null
  try { return JSON.parse(r.stdout) as HaPayload } catch { return null }
}

/** Heartbeat lines on a host's serial console for the VM (0 when none). */
export function heartbeats (c: AgentCluster, name: string, vm = HA_VM): number {
  try { return (readFileSync(c.serialLog(name, vm), 'latin1').match(/^hb \d+ /gm) ?? []).length } catch { return 0 }
}

/** Hosts whose copy of the VM runs and prints heartbeats (the log grows over 800 ms). */
export async function runningCopies (c: AgentCluster, vm = HA_VM): Promise<string[]> {
  const before = new Map(c.hosts.filter(h => c.qemuPid(h.name, vm) !== null).map(h => [h.name, heartbeats(c, h.name, vm)]))
  await sleep(800)
  return [...before].filter(([h, n]) => c.qemuPid(h, vm) !== null && heartbeats(c, h, vm) > n).map(([h]) => h)
}

export interface Steady { owner: string, token: string, ms: number }

/**
 * Waits until every agent is quorate and agrees on the owner of the VM, that host alone runs it
 * and carries the VIP, and the guest answers at the VIP.
 */
export async function waitSteady (hb: HaVipBed, timeoutMs: number, up: string[] = hb.c.hosts.map(h => h.name)): Promise<Steady> {
  const t0 = Date.now()
  let owner = ''
  // What each agent said last, for the failure message.
  const last = new Map<string, string>()
  try {
    await waitFor(async () => {
      const owners = new Set<string>()
      let ok = true
      for (const h of up) {
        const s = await haStatus(hb, h)
        const v = s?.vms.find(x => x.vm === HA_VM)
        last.set(h, s == null
          ? 'no answer from its API'
          : `quorate ${String(s.quorum.quorate)}, owner ${v?.owner == null ? 'none' : (s.names[v.owner] ?? v.owner)}, role ${String(v?.role)}`)
        if (s == null || !s.quorum.quorate || v?.owner == null) { ok = false; continue }
        owners.add(s.names[v.owner] ?? v.owner)
      }
      if (!ok || owners.size !== 1) return false
      owner = [...owners][0]!
      const s = await haStatus(hb, owner)
      return s?.vms.find(x => x.vm === HA_VM)?.role === 'running'
    }, timeoutMs, 'every agent quorate and agreeing on the VM\'s running owner', 500)
  } catch (err) {
    const tails: string[] = []
    for (const h of up) {
      const lines = (await hb.c.logLines(h)).slice(-12).map(l => `    ${JSON.stringify(l)}`)
      tails.push(`  ${h}: ${last.get(h) ?? '?'}\n${lines.join('\n')}`)
    }
    throw new Error(`${(err as Error).message}; last seen:\n${tails.join('\n')}`)
  }
  await waitFor(() => heartbeats(hb.c, owner) > 20, Math.max(1000, timeoutMs - (Date.now() - t0)), `heartbeats on ${owner}`, 100)
  await waitFor(async () => (await hb.c.holders(hb.address)).join() === owner, Math.max(1000, timeoutMs - (Date.now() - t0)), `${owner} alone to carry the VIP`, 200)
  const a = await hb.prober.waitGuest(Date.now(), Math.max(1000, timeoutMs - (Date.now() - t0)))
  return { owner, token: a.body, ms: Date.now() - t0 }
}

export interface FailoverResult {
  killed: string
  /** Host that runs the VM afterwards. */
  newOwner: string
  /** Kill to: the first survivor's "member ... became dead". */
  detectionMs: number | null
  /** Kill to: the new owner's claim (the fence delay has passed; it asks the others for grants). */
  claimMs: number | null
  /** Kill to: the claim granted by a majority (QEMU is being started). */
  grantedMs: number | null
  /** Kill to: QEMU started (its QMP socket answered). */
  qemuStartedMs: number | null
  /** Kill to: the guest's first heartbeat on its serial console (booted). */
  bootedMs: number
  /** Kill to: the new owner's "vip app became owner". */
  vipOwnerMs: number | null
  /** Kill to: the first HTTP answer of the new guest at the VIP, as the client saw it (request sent). */
  answeringMs: number
  /** The token of the guest's new boot (differs from the one before). */
  token: string
  /** Kill to the killed host's emulated watchdog reset (its device was closed without the magic 'V'), or null. */
  watchdogResetMs: number | null
  /** The MAC the client sends to for the VIP afterwards, and the new owner's. */
  neighbourMac: string | null
  newOwnerMac: string
}

/**
 * Where a failover stopped: each survivor's QEMU and heartbeats, and its log lines since the kill
 * about members, HA, the VM, fences and claims (the last 25, warnings and errors with their fields).
 */
async function failoverTrail (c: HaVipBed['c'], survivors: string[], sinceMs: number): Promise<string> {
  const out: string[] = []
  for (const h of survivors) {
    out.push(`${h}: QEMU ${c.qemuPid(h, HA_VM) ?? 'none'}, heartbeats ${heartbeats(c, h)}`)
    // Each connection's traffic: a stream that carries nothing while datagrams (probes) still
    // arrive would explain a survivor that never hears a claim while membership looks healthy.
    try {
      const st = await c.status(h)
      const name = (id: string): string => st.members.find(m => m.id === id)?.name ?? id.slice(0, 8)
      for (const p of st.mesh?.peers ?? []) {
        out.push(`  peer ${name(p.peer)}: open ${p.openForMs} ms, stream in/out ${p.streamIn}/${p.streamOut} (last in ${p.lastStreamInMsAgo ?? '-'} ms ago), datagrams in/out ${p.datagramsIn}/${p.datagramsOut} (last in ${p.lastDatagramInMsAgo ?? '-'} ms ago), backlog ${p.backlogBytes} B`)
      }
      // Its HA view: quorum, fences, each protected VM's owner and role (why it does not claim or grant).
      for (const line of (await c.haText(h)).split('\n')) out.push(`  ha | ${line}`)
    } catch (err) {
      out.push(`  status unavailable: ${String(err).slice(0, 200)}`)
    }
    const lines = (await c.logLines(h)).filter(l => l.ts >= sinceMs && (/member|ha |vm |fence|claim|grant|quorum|majority|vip/i.test(l.msg) || /warn|error/.test(String(l.raw.level))))
    for (const l of lines.slice(-25)) {
      const level = String(l.raw.level)
      const fields = level === 'warn' || level === 'error' ? ` ${JSON.stringify(l.raw.fields ?? {}).slice(0, 300)}` : ''
      out.push(`  +${l.ts - sinceMs} ms ${level} ${l.msg}${fields}`)
    }
  }
  return out.join('\n')
}

/** kill -9 of the owner's agent and QEMU, its unit's stop hook, then measure until the guest answers at the VIP again. */
export async function killOwner (hb: HaVipBed, owner: string, oldToken: string, timeoutMs: number): Promise<FailoverResult> {
  const { c } = hb
  const id8 = c.host(owner).publicKey.slice(0, 8)
  const others = c.hosts.filter(h => h.name !== owner).map(h => h.name)
  const hadCopy = new Map(others.map(h => [h, c.qemuPid(h, HA_VM) !== null]))
  if (c.qemuPid(owner, HA_VM) === null) throw new Error(`no QEMU for ${HA_VM} on ${owner}`)
  const killAt = Date.now()
  await Promise.all([c.kill9(owner), Promise.resolve(c.killQemu(owner, HA_VM))])
  await c.releaseLocal(owner) // ExecStopPost
  let newOwner = ''
  let bootedAt = 0
  await until('a heartbeat of the VM on another host', () => {
    for (const h of others) {
      if (hadCopy.get(h) !== true && c.qemuPid(h, HA_VM) !== null && heartbeats(c, h) > 0) { newOwner = h; bootedAt = Date.now(); return true }
    }
    return false
  }, timeoutMs, { pollMs: 20, detail: async () => await failoverTrail(c, others, killAt) })
  const answer = await hb.prober.waitGuest(killAt, Math.max(1000, timeoutMs - (Date.now() - killAt)), oldToken)
  const at = async (names: string[], re: RegExp): Promise<number | null> => { const t = await c.firstLog(names, re, killAt); return t === null ? null : t - killAt }
  return {
    killed: owner,
    newOwner,
    detectionMs: await at(others, new RegExp(`member ${id8} became dead`)),
    claimMs: await at([newOwner], new RegExp(`vm ${HA_VM} became claiming`)),
    grantedMs: await at([newOwner], new RegExp(`vm ${HA_VM} became starting`)),
    qemuStartedMs: await at([newOwner], new RegExp(`ha start \\(boot\\) of ${HA_VM} done`)),
    bootedMs: bootedAt - killAt,
    vipOwnerMs: await at([newOwner], new RegExp(`vip ${VIP_ID} became owner`)),
    answeringMs: answer.sentMs - killAt,
    token: answer.body,
    watchdogResetMs: ((r) => r === undefined ? null : r.at - killAt)(c.resets.find(r => r.host === owner && r.at >= killAt)),
    neighbourMac: (await hb.bed.neighbour(hb.client, hb.address)).mac,
    newOwnerMac: c.host(newOwner).node.mac
  }
}

/** Restarts a killed host's agent and waits until it is quorate and the cluster is steady again. */
export async function rejoin (hb: HaVipBed, name: string, timeoutMs: number): Promise<Steady> {
  hb.c.start(name)
  return await waitSteady(hb, timeoutMs)
}
