/**
 * Scenarios on real agents in namespaces (agent-cluster.ts), shared by the namespace test and
 * bench:vip: a planned move through `starling vips move`, and the failover after the owner's
 * agent is killed with SIGKILL (the unit's ExecStopPost then removes its addresses).
 */
import type { Pinger, Testbed } from './testbed.js'
import type { AgentCluster } from './agent-cluster.js'
import { sleep, until } from '../lib/wait.js'


export { sleep }
export async function waitFor (pred: () => Promise<boolean> | boolean, timeoutMs: number, what: string, pollMs = 50): Promise<number> {
  return await until(what, pred, timeoutMs, { pollMs })
}

/** Waits until exactly `name` carries `address`. */
export async function waitOwner (c: AgentCluster, address: string, name: string, timeoutMs: number): Promise<number> {
  return await waitFor(async () => (await c.holders(address)).join() === name, timeoutMs, `${name} alone to carry ${address}`)
}

export interface MoveResult {
  from: string
  to: string
  /** Request to the new owner alone carrying the address. */
  moveMs: number
  /** Client: longest run of unanswered pings (first unanswered request to the next reply). */
  outageMs: number
  lost: number
  /** Client: largest interval between replies around the move (includes the pinger's jitter). */
  maxReplyGapMs: number
  neighbourMac: string | null
  newOwnerMac: string
}

/** `starling vips move VIP TO`, asked through `via` (forwarded to the owner); measured on the client. */
export async function plannedMove (c: AgentCluster, bed: Testbed, pinger: Pinger, vip: string, address: string, from: string, to: string, via: string): Promise<MoveResult> {
  const t0 = Date.now()
  await c.moveVip(via, vip, to)
  const moveMs = await waitOwner(c, address, to, 15_000)
  const mac = c.host(to).node.mac
  await pinger.waitReply(t0, 5000, mac)
  await sleep(300)
  const t1 = Date.now()
  const client = bed.clients[0]
  if (client === undefined) throw new Error('no client')
  const out = pinger.outage(t0, t1)
  return {
    from, to, moveMs, outageMs: out.outageMs, lost: out.lost, maxReplyGapMs: pinger.maxGapMs(t0, t1),
    neighbourMac: (await bed.neighbour(client, address)).mac, newOwnerMac: mac
  }
}

export interface FailoverResult {
  killed: string
  newOwner: string
  /** Kill to the first "became dead" for the killed host in a survivor's log. */
  detectionMs: number | null
  /** Kill to the new owner's "became owner" log line. */
  takeoverMs: number | null
  /** Kill to the first echo reply from the new owner's MAC: the failover gap as the client sees it. */
  failoverMs: number
  /** The unit's stop hook: kill to the old address removed. */
  stopHookMs: number
  /** Client: longest run of unanswered pings. */
  outageMs: number
  lost: number
  neighbourMac: string | null
  newOwnerMac: string
}

/** SIGKILL the owner's agent, run the stop hook as systemd would, and measure until a new owner answers. */
export async function killOwner (c: AgentCluster, bed: Testbed, pinger: Pinger, vip: string, address: string, owner: string): Promise<FailoverResult> {
  const oldMac = c.host(owner).node.mac
  const id8 = c.host(owner).publicKey.slice(0, 8)
  const survivors = c.hosts.filter(h => h.name !== owner && c.running(h.name)).map(h => h.name)
  const killAt = Date.now()
  await c.kill9(owner)
  await c.releaseLocal(owner) // ExecStopPost
  const stopHookMs = Date.now() - killAt
  const reply = await waitFor(() => pinger.replies.some(r => r.t >= killAt && r.mac !== oldMac), 20_000, 'a reply from a new owner')
  void reply
  const first = pinger.replies.find(r => r.t >= killAt && r.mac !== oldMac)
  if (first === undefined) throw new Error('no reply from a new owner')
  const newOwner = c.byMac(first.mac)?.name ?? first.mac
  await sleep(500)
  const client = bed.clients[0]
  if (client === undefined) throw new Error('no client')
  const out = pinger.outage(killAt, Date.now())
  const dead = await c.firstLog(survivors, new RegExp(`member ${id8} became dead`), killAt)
  const owned = await c.firstLog([newOwner], new RegExp(`vip ${vip} became owner`), killAt)
  return {
    killed: owner,
    newOwner,
    detectionMs: dead === null ? null : dead - killAt,
    takeoverMs: owned === null ? null : owned - killAt,
    failoverMs: Math.round(first.t - killAt),
    stopHookMs,
    outageMs: out.outageMs,
    lost: out.lost,
    neighbourMac: (await bed.neighbour(client, address)).mac,
    newOwnerMac: first.mac
  }
}
