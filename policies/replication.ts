/**
 * Replication instead of migration for stateless VMs (after Golondrina, Pereira et al.): when a
 * host is stressed, a VM marked stateless may be relieved by starting a copy from its image on
 * another host, the two copies sharing its requests behind its virtual IP, instead of moving it.
 *
 * The model (what this code assumes; the simulator uses the same):
 * - Requests are split evenly between the copies, so a replica takes half of the VM's demand off
 *   the original's host (one replica per VM at most here: two copies).
 * - A copy costs its full RAM on the target (it is a whole guest) and `overheadFraction` of the
 *   VM's nominal MIPS on top of its share of the demand (its own kernel and background work).
 * - It is booted from the image: no memory is copied, nothing is degraded while it boots, but it
 *   serves nothing for `bootSec`; the original carries the whole demand until then.
 * - A migration copies the VM's memory over half the link (migrationSeconds) and, as in
 *   CloudSim's model, the VM loses `migrationDegradation` of its demand while it copies.
 *
 * Costs are in MIPS-seconds of service lost or spent:
 *   migration   = migrationDegradation x demand x copySec + excess x max(0, copySec - bootSec)
 *   replication = overheadFraction x nominal MIPS x horizonSec + excess x max(0, bootSec - copySec)
 * where excess is the source's demand above its capacity (the service short while the relief is
 * not yet there) and horizonSec is how long a replica is assumed to live at least (one decision
 * interval: it is retired only at a later decision). `mode: 'cost'` replicates when that is
 * cheaper; `mode: 'prefer'` replicates whenever a replica relieves the host and fits (Golondrina's
 * choice, cost ignored); `mode: 'off'` never.
 *
 * A replica must relieve the host: with half the VM's demand still on the source (and the rest
 * of the plan applied), the source's overload detector must clear. It must fit its target with
 * the same limits as a migration (CPU up to placement.cpuCapFraction, one core, all of its RAM
 * counted, reservations counted) and pass every hard rule as the VM itself would (the replica is
 * the VM for the rules: a VM-host rule binds it, an anti-affinity group keeps it away from the
 * group's other members, and a VM in a hard affinity group is never replicated, since its two
 * copies cannot both sit with the group). It never lands on a host that holds a copy already.
 */
import { exceedsCores } from './placement.js'
import { detectOverload } from './overload.js'
import { hostSample, type PolicyConfig } from './plan.js'
import { hardAllows } from './rules.js'
import { hostMemAdmitMiB, migrationSeconds, type ClusterView, type HostId, type HostView, type Move, type VmId, type VmView } from './types.js'

export interface ReplicationParams {
  mode: 'off' | 'cost' | 'prefer'
  /** Seconds from the start of a copy to it serving requests. @default 30 */
  bootSec: number
  /** CPU of a copy beyond its share of the requests, fraction of the VM's nominal MIPS. @default 0.02 */
  overheadFraction: number
  /** Share of a migrating VM's demand lost while it copies (CloudSim: 0.1). @default 0.1 */
  migrationDegradation: number
  /** Shortest life of a replica counted in its cost, seconds. @default 300 (one decision) */
  horizonSec: number
  /** A replica is retired when its original's host, with the whole demand back, stays under this utilisation and is not overloaded. @default 0.7 */
  retireBelow: number
}

export function defaultReplicationParams (): ReplicationParams {
  return { mode: 'cost', bootSec: 30, overheadFraction: 0.02, migrationDegradation: 0.1, horizonSec: 300, retireBelow: 0.7 }
}

export type Relief =
  | { kind: 'migrate', move: Move }
  | { kind: 'replicate', vm: VmId, from: HostId, to: HostId, costReplicate: number, costMigrate: number }

/** Where the copies of a VM run now (the original first). Replicated VMs are in `copies`. */
export type Copies = ReadonlyMap<VmId, readonly HostId[]>

/** CPU a replica of `v` asks for on its target: half the demand plus its overhead. */
export function replicaDemandMips (v: VmView, p: ReplicationParams): number {
  return v.cpuDemandMips / 2 + p.overheadFraction * v.cpuMips
}

/** The two costs of relieving `from` of `v` (MIPS-seconds), by migrating it to `to` or by a replica. */
export function reliefCosts (v: VmView, from: HostView, to: HostView, p: ReplicationParams, capFraction: number): { migrate: number, replicate: number } {
  const copySec = migrationSeconds(v.memMiB, Math.min(from.netMbps, to.netMbps))
  let demand = from.reservedMips
  for (const x of from.vms) demand += x.cpuDemandMips
  const excess = Math.max(0, demand - from.cpuMips * capFraction)
  return {
    migrate: p.migrationDegradation * v.cpuDemandMips * copySec + excess * Math.max(0, copySec - p.bootSec),
    replicate: p.overheadFraction * v.cpuMips * p.horizonSec + excess * Math.max(0, p.bootSec - copySec)
  }
}

interface Load { demand: number, mem: number }

function loadOf (h: HostView): Load {
  let d = h.reservedMips; let m = h.reservedMemMiB
  for (const v of h.vms) { d += v.cpuDemandMips; m += v.memMiB }
  return { demand: d, mem: m }
}

function inHardAffinity (view: ClusterView, vm: VmId): boolean {
  return view.rules.vmVm.some(r => r.hard && r.kind === 'affinity' && r.vms.includes(vm))
}

/** Host utilisation history with `share` of `v`'s history taken off (same scaling as the planner). */
function historyWithout (h: HostView, hist: number[], v: VmView, share: number): void {
  const k = v.cpuMips / h.cpuMips
  const n = Math.min(hist.length, v.history.length)
  for (let i = 1; i <= n; i++) {
    const hi = hist.length - i
    hist[hi] = Math.max(0, (hist[hi] as number) - share * (v.history[v.history.length - i] as number) * k)
  }
}

/**
 * Best target for a replica of `v` (least utilised after it, ties by id), or null. `load`
 * carries what earlier decisions of the same plan added to each host.
 */
export function replicaTarget (view: ClusterView, v: VmView, cfg: PolicyConfig, p: ReplicationParams,
  load: ReadonlyMap<HostId, Load>, copies: Copies, placement: ReadonlyMap<VmId, HostId>): HostView | null {
  const cap = cfg.placement.cpuCapFraction ?? 1
  const need = replicaDemandMips(v, p)
  const held = copies.get(v.id) ?? [v.host]
  const rules = view.rules.vmVm.length + view.rules.vmHost.length > 0
  let best: HostView | null = null
  let bestU = Infinity
  for (const h of view.hosts) {
    if (held.includes(h.id) || h.id === v.host) continue
    if (!h.active && cfg.placement.allowInactive === false) continue
    const l = load.get(h.id) ?? loadOf(h)
    if (exceedsCores(h, v, need)) continue
    if (l.demand + need > h.cpuMips * cap + 1e-9) continue
    if (l.mem + v.memMiB > hostMemAdmitMiB(h)) continue
    if (rules && !hardAllows(view.rules, placement, v.id, h.id)) continue
    const u = (l.demand + need) / h.cpuMips
    if (u < bestU || (u === bestU && best !== null && h.id < best.id)) { best = h; bestU = u }
  }
  return best
}

/**
 * Turn a host's overload plan (planHost's moves) into reliefs: each move of a stateless VM is
 * replaced by a replica when the replica relieves the host, fits, passes the hard rules, and
 * (mode 'cost') costs less than the migration. Other moves stay migrations. Pure.
 */
export function chooseRelief (view: ClusterView, self: HostId, moves: readonly Move[], stateless: (vm: VmId) => boolean,
  cfg: PolicyConfig, p: ReplicationParams, copies: Copies = new Map()): Relief[] {
  const out: Relief[] = moves.map(move => ({ kind: 'migrate', move }))
  const me = view.hosts.find(h => h.id === self)
  if (p.mode === 'off' || me === undefined || moves.length === 0 || moves.some(m => m.reason !== 'overload')) return out
  const byId = new Map(view.hosts.map(h => [h.id, h]))
  const vmOf = new Map(me.vms.map(v => [v.id, v]))
  const placement = new Map<VmId, HostId>()
  for (const h of view.hosts) for (const v of h.vms) placement.set(v.id, h.id)
  // the plan's effect on every host, as a migration plan
  const load = new Map<HostId, Load>()
  const at = (h: HostView): Load => { let l = load.get(h.id); if (l === undefined) { l = loadOf(h); load.set(h.id, l) } return l }
  const hist = me.history.slice()
  const leaving: VmId[] = []
  for (const m of moves) {
    const v = vmOf.get(m.vm); const t = byId.get(m.to)
    if (v === undefined || t === undefined) continue
    at(me).demand -= v.cpuDemandMips; at(me).mem -= v.memMiB
    at(t).demand += v.cpuDemandMips; at(t).mem += v.memMiB
    historyWithout(me, hist, v, 1)
    leaving.push(v.id)
  }
  const cap = cfg.placement.cpuCapFraction ?? 1
  for (let i = 0; i < moves.length; i++) {
    const m = moves[i] as Move
    const v = vmOf.get(m.vm); const t = byId.get(m.to)
    if (v === undefined || t === undefined || !stateless(v.id) || v.migrating || (copies.get(v.id)?.length ?? 1) > 1) continue
    if (inHardAffinity(view, v.id)) continue
    // with this VM replicated instead: half of it stays, the migration target does not get it
    const srcDemand = at(me).demand + v.cpuDemandMips / 2
    const trialHist = hist.slice()
    for (let j = 1; j <= Math.min(trialHist.length, v.history.length); j++) {
      const hi = trialHist.length - j
      trialHist[hi] = (trialHist[hi] as number) + 0.5 * (v.history[v.history.length - j] as number) * v.cpuMips / me.cpuMips
    }
    const staying = me.vms.filter(x => !leaving.includes(x.id) || x.id === v.id)
    const s = hostSample(me, cfg.intervalSec, staying, srcDemand / me.cpuMips, trialHist)
    if (detectOverload(s, cfg.overload).overloaded) continue
    at(t).demand -= v.cpuDemandMips; at(t).mem -= v.memMiB
    const r = replicaTarget(view, v, cfg, p, load, copies, placement)
    if (r === null) { at(t).demand += v.cpuDemandMips; at(t).mem += v.memMiB; continue }
    const c = reliefCosts(v, me, r, p, cap)
    if (p.mode === 'cost' && !(c.replicate < c.migrate)) { at(t).demand += v.cpuDemandMips; at(t).mem += v.memMiB; continue }
    at(me).demand = srcDemand; at(me).mem += v.memMiB
    at(r).demand += replicaDemandMips(v, p); at(r).mem += v.memMiB
    for (let j = 0; j < hist.length; j++) hist[j] = trialHist[j] as number
    out[i] = { kind: 'replicate', vm: v.id, from: me.id, to: r.id, costReplicate: c.replicate, costMigrate: c.migrate }
  }
  return out
}

/**
 * Whether to retire the replica of `v` (its original on `home`, the replica elsewhere): the home
 * host, with the replica's half of the demand back, is not overloaded and stays under
 * `retireBelow`. Pure.
 */
export function shouldRetire (view: ClusterView, home: HostId, v: VmView, cfg: PolicyConfig, p: ReplicationParams): boolean {
  const h = view.hosts.find(x => x.id === home)
  if (h === undefined) return true
  const u = (loadOf(h).demand + v.cpuDemandMips) / h.cpuMips
  if (u > p.retireBelow) return false
  const hist = h.history.slice()
  historyWithout(h, hist, v, -1)
  return !detectOverload(hostSample(h, cfg.intervalSec, h.vms, u, hist), cfg.overload).overloaded
}
