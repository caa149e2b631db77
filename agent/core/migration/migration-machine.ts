/**
 * The migration state machine, both ends (DESIGN: Migration; S1 "a crash mid-migration resolves
 * to exactly one running copy"). Every transition is a becomeX() here; each journals the record
 * (`mig/<id>`, in the same Ready as, and so before, the sends and driver commands that act on it)
 * and emits one event "migration <id> became <state> (from <state>)".
 *
 *   source: proposed ─intent→ reserved ─IncomingReady→ copying ─completed→ switching ─Committed→ committed
 *   target:            reserved → preparing ─prepared→ copying ─TransferCompleted→ switching → committed
 *   either end, before the switch-over: → aborted (the VM runs on the source)
 *
 * Who owns the VM. The hypervisor is the arbiter: a pre-copy that fails or is cancelled leaves
 * the guest running on the source and the target's incoming copy exits; once the transfer
 * completes (or post-copy starts) the guest runs on the target and the source copy stays paused.
 * The agents add two rules on top:
 *   R1 the source stops its paused copy only after the target said MigrationCommitted, and the
 *      target says so only after its own hypervisor reports the guest running there;
 *   R2 the source resumes its paused copy only after the target said MigrationAborted, and the
 *      target says so only after killing its incoming copy, which it does only when its guest
 *      never ran there (killIncoming is refused for a running guest).
 *   R3 a target that aborts once the copy may have completed (copying, switching) without seeing
 *      its incoming copy (gone: the host lost power after the guest may have run there) says
 *      mayHaveRun, and a source in switching then never resumes: its paused copy is older than
 *      the VM's last state, and resuming it would run stale memory over a disk the target may have
 *      written. HA destroys it and restarts a protected VM from its disk; an unprotected one stays
 *      paused and an event asks for an operator.
 * So the paused source copy and the target copy never both run, and a stale copy never runs.
 *
 * With storage (the VM's disks are local: they move with it). The source decides after its query
 * (the driver says whether the disks are local, or the operator asked with --with-storage) and
 * says so in the intent; the target creates empty images of the exact sizes and exports them
 * (prepareIncoming with storage), and its IncomingReady names the export. The source's copying
 * then has two phases, each journaled before it is acted on: 'mirroring' (the mirror to the
 * export is started; progress samples report it and renew the target's lease) and, once every
 * mirror is ready, 'memory' (the memory copy is started with storage: the hypervisor pauses the
 * source before the switch-over, completes the mirrors and only then sends the device state).
 * A mirror that fails, or a restart before the switch-over, cancels the migration and its mirrors:
 * the guest runs on the source, whose disk it never stopped writing, and the target's incoming
 * copy is killed, and then (dropImages, after the kill's result or on finding it gone) the images
 * it created go: the driver journals them before creating them, and deletes those and only those.
 * The same cleanup is redone at a restart for a record that ended aborted. Never when mayHaveRun
 * (R3: they may hold the VM's newest disk): an event says they are kept. After the switch-over
 * everything is as without storage: the target's disk was complete before its guest ran; once the
 * target says committed, the source stops its copy and sets aside the images the VM left
 * (stopSource with retireDisks; again after a restart, the source domain being gone), so that the
 * VM may come back to it later.
 *
 * Crash points (kill -9 of an agent; its QEMU processes live on, see qemu-driver re-attach). On
 * restart every non-terminal record is re-read from the journal and the hypervisor is queried
 * before anything else is done for it:
 *   source proposed/reserved: migrate was never issued (it is issued only after `copying` is
 *     journaled), so the guest runs here: abort and tell the target (whose lease would expire
 *     anyway and whose incoming copy, never run, is killed).
 *   source copying: ask the hypervisor. Pre-copy still running → cancel it (the cancel may lose
 *     the race to completion: the next progress sample decides; a sample that shows no migration
 *     at all, as libvirt gives after the cancel, is resolved by a query); completed → switching;
 *     post-copy → keep polling until completed; failed/cancelled/none with the guest running
 *     here → abort. Guest gone here → ask the target (its answer decides committed or lost).
 *   source switching: the copy here is paused; ask the target again (TransferCompleted) and wait
 *     for its verdict (R1/R2). With the target unreachable we wait: never resume unilaterally.
 *   source committed/aborted: redo the cleanup (stop the paused copy / resume it) if needed.
 *   target reserved/preparing/copying/switching: guest running here → committed (tell the
 *     source); an incoming copy that never ran → kill it and abort (the source's migration then
 *     fails and its guest keeps running there); nothing here → abort.
 * A kill at any line between two journal writes leaves the older state in the journal; every
 * resolution above only needs the older state and the hypervisor's answer, and every message is
 * idempotent (the other end answers from its record, or resends), so a lost or repeated frame
 * does no harm. A target whose source went silent acts at lease expiry as after a restart.
 * Known window: a target that finds its incoming copy not yet running right after the source
 * completed re-checks a few times before killing it; if it kills it, the source resumes its paused
 * copy (R2): still exactly one running copy.
 *
 * Whole evacuations (evacuation.ts). A consolidation of several moves is started as one group
 * (startGroup): each move has its own record, intent and reservation, and each record carries the
 * group's id. A member whose target granted and prepared (IncomingReady), and for a protected VM
 * whose HA handover a majority granted, is held in 'reserved' instead of starting its copy. Once
 * every member is held the copies start, staged: at most the free outgoing slots at a time
 * (migration.outMax counts copies under way, copying or switching, not the reservations that wait
 * for a slot), the next one each time a copy of this host ends. A member that is refused, fails or
 * times out before the copies start aborts, and its abort withdraws the group: every other member
 * aborts too and tells its target (MigrationAborted, which releases the target's reservation and
 * kills an incoming VM it prepared). The wait before the start is bounded by the group's deadline
 * (the query budget plus the grant wait, counted from the group's start).
 * While a member is held its source renews its target's lease (a MigrationProgress 'waiting' every
 * third of the lease, at most every resendTicks): the target keeps an unused grant alive while
 * earlier copies run, and drops it at lease expiry only if the source went silent (crashed or cut
 * off), as for any migration; it then tells the source, whose held member aborts. A failure part
 * way (a copy that fails or is refused, a held member whose target dropped its grant, a handover no
 * longer granted when its turn comes, or a copy of this host stuck at the switch-over for longer
 * than a lease while every slot is taken) withdraws the members still held, and only those: the
 * copies under way run on (each ends committed or aborted by the rules above), what was copied
 * stays committed, and the host is left with fewer VMs. A restart aborts every member before its
 * copy (as for any record in proposed or reserved), so what waits is withdrawn then too.
 */
import { assert } from '../assert.js'
import type { CoreState } from '../state.js'
import type { Body } from '../messages.js'
import type { HostId, VmId, VmSummary, HostCapacity, HostMemoryReport } from '../types.js'
import {
  defaultConvergencePolicy, initialConvergenceState, planMigration, stepConvergence,
  type ConvergencePolicy, type ConvergenceState
} from './convergence.js'
import { TERMINAL_STATES } from './migration-state.js'
import type {
  DriverCommand, DriverQueryResult, DriverResult, MigrationConfig, MigrationRecord, MigrationState, StorageWanted, VmSpecWire
} from './migration-state.js'
import { admit, outgoingAllowed, vmDemandMips, type AdmissionInput } from './reservation.js'
import { planDiskCopy } from './disk-copy.js'
import { judgeEvacuation } from './evacuation.js'
import type { RuleSet } from '../../../policies/types.js'
import { hardAllows } from '../../../policies/rules.js'

/** See MigrationMachine.ha. */
export interface MigrationHaHooks {
  protects: (vm: VmId) => boolean
  incomingStart: (vm: VmId, source: HostId) => string | null
  handoverStart: (vm: VmId, target: HostId) => string | null
  handoverGranted: (vm: VmId) => boolean
  handoverEnd: (vm: VmId, outcome: 'committed' | 'aborted') => void
  /** Source: the paused copy of a protected VM is stale (the target lost it after it may have run): HA destroys it and restarts the VM from disk. */
  staleCopy: (vm: VmId) => void
  /** Ticks the source waits for the handover grant. */
  timeoutTicks: number
}
const NO_HA: MigrationHaHooks = { protects: () => false, incomingStart: () => null, handoverStart: () => null, handoverGranted: () => true, handoverEnd: () => {}, staleCopy: () => {}, timeoutTicks: 0 }

export const KEY_MIGRATION_PREFIX = 'mig/rec/'
export const KEY_DRAINING = 'mig/draining'

const SWITCH_CHECKS_MAX = 20

interface Conv { state: ConvergenceState, policy: ConvergencePolicy }

export class MigrationMachine {
  readonly recs = new Map<string, MigrationRecord>()
  private readonly conv = new Map<string, Conv>()
  /** Tick at which a record needs attention (timeout, poll, resend). */
  private readonly due = new Map<string, number>()
  /** Records whose next driver query result resolves them (restart, lease expiry, lost VM). */
  private readonly recovering = new Set<string>()
  /** Targets whose abort waits for the kill of their incoming copy (R2), with the reason to give. */
  private readonly killing = new Map<string, string>()
  /** Finished records that a newer migration of the same VM replaced (see supersede()). */
  private readonly superseded = new Set<string>()
  /** A driver command is outstanding for the record (one at a time). */
  private readonly busy = new Set<string>()
  private readonly switchChecks = new Map<string, number>()
  private readonly abortWanted = new Set<string>()
  private nextSeq = 1
  localVms: VmSummary[] = []
  capacity: HostCapacity | null = null
  /** This host's memory report from its latest sample (absent: its driver cannot tell). */
  memory: HostMemoryReport | undefined = undefined
  /** Why a VM must not migrate, or null. */
  pinned: (vm: VmId) => string | null = () => null
  /**
   * HA handover of a protected VM's claim (agent/core/ha, the handover argument in its index.ts).
   * The target registers its incoming copy before it admits it; the source asks for the handover
   * once the target is ready and starts the copy only when a majority granted it (else it aborts
   * after handoverTimeoutTicks: the VM stays on the source with its claim); both ends report the
   * outcome. Defaults: no VM is protected.
   */
  ha: MigrationHaHooks = NO_HA
  /** Records that took part in a handover (their outcome is reported to HA). */
  private readonly handing = new Set<string>()
  /** Source records waiting for the handover grant: tick they started waiting. */
  private readonly awaitingGrant = new Map<string, number>()
  /** Target records whose incoming copy HA destroyed with a fence. */
  private readonly fencedIn = new Set<string>()
  /** Source records of a whole evacuation whose target is ready: their copy waits for the group's start. */
  private readonly heldForGroup = new Set<string>()
  /**
   * Source: the tick at which each proposed move's wait for an answer to its intent ends. The
   * intent goes again every resendTicks until then (a frame lost with a connection would otherwise
   * leave the move, and a whole consolidation with it, waiting the full timeout for nothing); the
   * target answers a repeated intent from its record.
   */
  private readonly intentUntil = new Map<string, number>()
  /** Whole evacuations whose copies started, and those withdrawn (see the module comment). */
  private readonly groupsStarted = new Set<string>()
  private readonly groupsWithdrawn = new Set<string>()
  /** Groups being judged now, and those to judge again once that is done (a judgement may abort a member, which judges). */
  private readonly judging = new Set<string>()
  private readonly rejudge = new Set<string>()
  /** Source records: the lease length their target granted (held members renew it). */
  private readonly grantLease = new Map<string, number>()

  draining = false
  /** Set by the replica manager (agent/core/replica): starting replicas reserve, hosted ones stand for their VM. */
  replicaHooks: { reservations: () => Array<{ vm: VmId, memMiB: number, cpuDemandMips: number }>, alias: (id: VmId) => VmId } = { reservations: () => [], alias: id => id }
  /** Counters for status() (evacuations: whole evacuations whose copies started, those withdrawn before any copy, and those cut short part way). */
  readonly counts = { started: 0, committed: 0, aborted: 0, refused: 0, recovered: 0, evacuationsStarted: 0, evacuationsWithdrawn: 0, evacuationsCutShort: 0 }

  constructor (private readonly s: CoreState, public cfg: MigrationConfig, restored: readonly MigrationRecord[], draining: boolean) {
    this.draining = draining
    // Only the newest record of a VM may act on it. A VM with an unfinished migration is that
    // migration's alone: older, finished records of the same VM are history, and re-running
    // their cleanup (a resume after an old abort) would start a second copy of a VM whose
    // newer migration completed (S1).
    const active = new Set(restored.filter(r => !TERMINAL_STATES.has(r.state)).map(r => r.vm))
    // Of the finished source records of a VM, only the newest that reached the target (it got an
    // incoming address, so it may have paused the VM here) may redo a resume. A record refused or
    // aborted before that never touched the VM: re-running its cleanup would resume a copy that
    // another, older record paused and judged stale (S1).
    const lastTouch = new Map<VmId, MigrationRecord>()
    for (const r of restored) {
      if (r.role !== 'source' || !TERMINAL_STATES.has(r.state) || r.uri === null) continue
      const o = lastTouch.get(r.vm)
      if (o === undefined || newerRecord(r, o)) lastTouch.set(r.vm, r)
    }
    for (const r of restored) {
      this.recs.set(r.id, { ...r })
      if (r.superseded === true && TERMINAL_STATES.has(r.state)) {
        this.superseded.add(r.id)
        this.due.set(r.id, r.updatedTick + cfg.retainTicks)
      } else if (TERMINAL_STATES.has(r.state) && active.has(r.vm)) {
        this.supersede(r)
      } else if (!TERMINAL_STATES.has(r.state)) {
        this.handing.add(r.id) // its outcome is reported to HA (a no-op for unprotected VMs)
        this.recovering.add(r.id)
        this.counts.recovered++
      } else if (r.role === 'source' && lastTouch.get(r.vm)?.id !== r.id) {
        // Terminal, and never the one that paused the VM here: history.
      } else if (r.role === 'source' || r.role === 'target') {
        // Terminal: redo the cleanup if it may not have happened (checked by a query).
        this.recovering.add(r.id)
      }
    }
    for (const id of this.recovering) this.command({ kind: 'query', mig: id, vm: this.recs.get(id)!.vm })
  }

  // -------------------------------------------------------------------------------------------
  // Transitions: all here, each journals the record and emits one event.

  private become (r: MigrationRecord, to: MigrationState, why = ''): void {
    const from = r.state
    r.state = to
    r.updatedTick = this.s.now
    if (why !== '') r.reason = why
    this.journal(r)
    this.s.emit({
      kind: 'migration-state',
      host: r.role === 'source' ? r.target : r.source,
      text: `migration ${r.id} became ${to} (from ${from})${why !== '' ? `: ${why}` : ''}`,
      transition: { from, to, incarnation: this.s.incarnation }
    })
  }

  private becomeProposed (r: MigrationRecord): void { this.become(r, 'proposed') }
  private becomeReserved (r: MigrationRecord): void { this.become(r, 'reserved') }
  private becomePreparing (r: MigrationRecord): void { this.become(r, 'preparing') }
  private becomeCopying (r: MigrationRecord): void { this.become(r, 'copying') }
  private becomeSwitching (r: MigrationRecord): void { this.become(r, 'switching') }
  private becomeCommitted (r: MigrationRecord): void {
    if (r.durationTicks === 0) r.durationTicks = this.s.now - r.createdTick
    this.counts.committed++
    this.become(r, 'committed')
    this.settle(r)
    if (r.role === 'source') this.slotFreed(r.group)
  }

  private becomeAborted (r: MigrationRecord, why: string): void {
    this.counts.aborted++
    this.become(r, 'aborted', why)
    this.settle(r)
    if (r.role === 'source' && r.group !== undefined) this.judgeGroup(r.group, `${r.vm}: ${why}`)
    if (r.role === 'source') this.slotFreed(r.group)
  }

  /** An outgoing record ended: a slot may be free for a held copy of a started group (its own first). */
  private slotFreed (own: string | undefined): void {
    if (own !== undefined && this.groupsStarted.has(own)) this.judgeGroup(own)
    for (const g of [...this.groupsStarted]) if (g !== own && !this.groupsWithdrawn.has(g)) this.judgeGroup(g)
  }

  private settle (r: MigrationRecord): void {
    this.grantLease.delete(r.id)
    this.awaitingGrant.delete(r.id)
    this.heldForGroup.delete(r.id)
    this.fencedIn.delete(r.id)
    if (this.handing.delete(r.id)) this.ha.handoverEnd(r.vm, r.state === 'committed' ? 'committed' : 'aborted')
    this.conv.delete(r.id)
    this.switchChecks.delete(r.id)
    this.abortWanted.delete(r.id)
    this.due.set(r.id, this.s.now + this.cfg.retainTicks)
  }

  private journal (r: MigrationRecord): void { this.s.persist(KEY_MIGRATION_PREFIX + r.id, { ...r }) }

  /**
   * `r` no longer speaks for its VM: a newer migration of the same VM exists here. No late driver
   * result of it is acted on, and a restart does not redo its cleanup. It stays journaled, marked
   * superseded (in the same batch as the newer record), until it is retained no longer: the other
   * end may still ask for its outcome. A source left in switching by a partition asks the target
   * again after the heal; a target that had committed, then started a newer record of the VM
   * (a migration onwards) and restarted, must still answer committed, or the source waits forever
   * with its paused copy and the VM's VIP.
   */
  private supersede (r: MigrationRecord): void {
    assert(TERMINAL_STATES.has(r.state), `migration ${r.id} superseded while ${r.state}`)
    this.superseded.add(r.id)
    this.recovering.delete(r.id)
    this.lostHere.delete(r.id)
    r.superseded = true
    this.journal(r)
    this.due.set(r.id, r.updatedTick + this.cfg.retainTicks)
  }

  /** A new record of `vm` is about to be journaled: finished older ones of it are superseded. */
  private supersedeOlder (vm: VmId): void {
    for (const x of this.recs.values()) if (x.vm === vm && TERMINAL_STATES.has(x.state) && !this.superseded.has(x.id)) this.supersede(x)
  }

  private send (to: HostId, body: Body): void { this.s.send(to, body, [], false) }

  private command (c: DriverCommand): void {
    this.busy.add(c.mig)
    this.s.pending.driver.push(c)
  }

  // -------------------------------------------------------------------------------------------
  // Queries for the scheduler and the API.

  live (): MigrationRecord[] { return [...this.recs.values()].filter(r => !TERMINAL_STATES.has(r.state)) }
  liveOut (): MigrationRecord[] { return this.live().filter(r => r.role === 'source') }
  liveIn (): MigrationRecord[] { return this.live().filter(r => r.role === 'target') }

  /**
   * The rules changed (an agreed configuration version): an incoming VM that no copy has reached
   * yet, and that a hard rule now forbids here beside the VMs this host runs or expects, is
   * refused now, as a new intent would be. (One whose copy has begun completes; the rule then
   * holds from the next placement on.) Returns how many were refused.
   */
  recheckIncoming (why: string): number {
    const s = this.s
    const rules = this.rules()
    let n = 0
    // Oldest first: the earlier placement stands, a later one that it and the rule exclude goes.
    const incoming = this.liveIn().sort((a, b) => a.createdTick - b.createdTick || (a.id < b.id ? -1 : 1))
    const placement = new Map<VmId, HostId>()
    for (const v of this.localVms) placement.set(v.id, s.self)
    for (const r of incoming) if (r.state === 'switching') placement.set(r.vm, s.self)
    for (const r of incoming) {
      if (r.state === 'switching') continue
      placement.delete(r.vm)
      if (hardAllows(rules, placement, r.vm, s.self)) { placement.set(r.vm, s.self); continue }
      n++
      if (r.state === 'proposed' || r.state === 'reserved') {
        this.counts.refused++
        this.becomeAborted(r, why)
        this.send(r.source, abortedBody(r))
      } else {
        // An incoming copy exists (preparing, copying): aborted the way an expired lease is, from
        // a fresh query, so that a guest that already runs here is never killed (R2).
        this.ruleAbort.set(r.id, why)
      }
    }
    return n
  }

  /** Incoming migrations a newly agreed hard rule forbids, with the reason: aborted at the next tick (tick()). */
  private readonly ruleAbort = new Map<string, string>()
  isMoving (vm: VmId): boolean { return this.live().some(r => r.vm === vm) }
  /** Disk copies (migrations with storage) this host takes part in now, either role. */
  diskCopies (): number { return this.live().filter(r => r.storage === true).length }

  /** Rules with this host's name replaced by its id (configuration names hosts). */
  rules (): RuleSet {
    const s = this.s
    return {
      vmVm: this.cfg.rules.vmVm,
      vmHost: this.cfg.rules.vmHost.map(r => ({ ...r, hosts: r.hosts.map(h => h === s.name ? s.self : h) }))
    }
  }

  /** Hosts (other than self) whose latest report carries our rules hash, plus self: a majority of members? */
  rulesAgreed (): boolean {
    const s = this.s
    if (this.cfg.rules.vmVm.length + this.cfg.rules.vmHost.length === 0) return true
    let same = 1
    let total = 0
    for (const m of s.members.byId.values()) {
      if (m.state === 'left') continue
      total++
      if (m.id !== s.self && m.report?.rulesHash === s.rulesHash) same++
    }
    return same > Math.max(1, total) / 2
  }

  /** VMs in flight in the cluster, approximated from gossip (see MigrationConfig.clusterMax). */
  clusterInFlight (): number {
    const ids = new Set<string>()
    for (const m of this.s.members.byId.values()) {
      if (m.id === this.s.self || m.report === null || m.state === 'dead' || m.state === 'left') continue
      for (const v of m.report.vms) if (v.state === 'migrating') ids.add(v.id)
    }
    for (const r of this.live()) ids.add(r.vm)
    return ids.size
  }

  // -------------------------------------------------------------------------------------------
  // Source: starting a migration.

  /** Starts moving `vm` to `target`; returns the record (aborted at once with a reason when refused). */
  start (vm: VmId, target: HostId, cause: string, storage: StorageWanted = 'auto', group?: string): MigrationRecord {
    const s = this.s
    const id = `${s.self.slice(0, 8)}-${s.incarnation}-${this.nextSeq++}`
    const here = this.localVms.find(v => v.id === vm)
    const r: MigrationRecord = {
      id, vm, role: 'source', source: s.self, target, state: 'proposed', cause, spec: null,
      cpuDemandMips: here === undefined || this.capacity === null ? 0 : vmDemandMips(here, this.capacity),
      createdTick: s.now, updatedTick: s.now, leaseExpiresTick: 0, uri: null, mode: null,
      downtimeLimitMs: 0, timeoutMs: 0, progress: null, reason: '', durationTicks: 0
    }
    if (storage === 'yes') r.storageWanted = 'yes'
    if (group !== undefined) r.group = group
    const refuse = group !== undefined && this.groupsWithdrawn.has(group) ? 'consolidation withdrawn before this move was proposed' : this.refusal(vm, target, here, group !== undefined)
    this.supersedeOlder(vm)
    this.recs.set(id, r)
    this.counts.started++
    if (refuse !== null) {
      this.counts.refused++
      this.becomeAborted(r, refuse)
      return r
    }
    this.becomeProposed(r)
    this.command({ kind: 'query', mig: id, vm, measure: true })
    // The query measures the guest (its dirty rate over a second, more on a loaded host): it has
    // the budget of driver work; the wait for the target's grant starts when the intent goes out.
    this.due.set(id, s.now + this.cfg.prepareTimeoutTicks)
    return r
  }

  /**
   * Starts a whole evacuation (evacuation.ts): one record per move, all in one group; the copies
   * start only once every target granted and prepared, and any refusal withdraws them all. A move
   * refused here at once (a limit, a rule) withdraws the group before any intent goes out; the
   * moves after it are refused as withdrawn. Returns the records, in the order of `moves`.
   */
  startGroup (moves: ReadonlyArray<{ vm: VmId, to: HostId }>, cause: string): MigrationRecord[] {
    const group = `${this.s.self.slice(0, 8)}-${this.s.incarnation}-${this.nextSeq}`
    const out: MigrationRecord[] = []
    // The reservations a group holds at once are bounded by the policy's moves per decision (the
    // largest consolidation it plans); its copies by the outgoing slots (staged).
    const most = this.cfg.policy.maxMovesPerDecision
    if (moves.length > most) this.groupsWithdrawn.add(group)
    for (const mv of moves) out.push(this.start(mv.vm, mv.to, cause, 'auto', group))
    if (moves.length > most) this.counts.evacuationsWithdrawn++
    if (moves.length > 0) this.s.emit({ kind: 'migration-group', host: this.s.self, text: `consolidation ${group}: ${moves.length} moves reserved as a whole, copied ${this.cfg.outMax} at a time${moves.length > most ? ` (withdrawn at once: more than policy.maxMovesPerDecision ${most})` : this.groupsWithdrawn.has(group) ? ' (withdrawn at once)' : ''}` })
    return out
  }

  /** The source records of group `g`. */
  private groupMembers (g: string): MigrationRecord[] {
    return [...this.recs.values()].filter(r => r.role === 'source' && r.group === g)
  }

  /**
   * The tick at which held member `r` gives up waiting for the rest of its group before the
   * copies start: the group's start plus the query budget and the grant wait. (Its target's lease
   * does not bound it: the source renews it while it waits.)
   */
  private heldDeadline (r: MigrationRecord): number {
    let first = this.s.now
    for (const m of this.groupMembers(r.group ?? '')) first = Math.min(first, m.createdTick)
    return first + this.cfg.prepareTimeoutTicks + this.cfg.intentTimeoutTicks
  }

  /** How often a held member renews its target's lease: a third of the lease granted, at most every resendTicks. */
  private renewTicks (r: MigrationRecord): number {
    const lease = this.grantLease.get(r.id) ?? this.cfg.leaseTicks
    return Math.max(1, Math.min(this.cfg.resendTicks, Math.floor(lease / 3)))
  }

  /**
   * Outgoing slots free for a copy of a group: outMax less the outgoing records that are not a
   * group member waiting before its copy (copies under way, and moves outside a group, which take
   * their slot from their start).
   */
  private copySlotsFree (): number {
    let busy = 0
    for (const r of this.liveOut()) if (!(r.group !== undefined && (r.state === 'proposed' || r.state === 'reserved'))) busy++
    return this.cfg.outMax - busy
  }

  /** A copy of this host stuck at the switch-over for longer than a lease (its target unreachable) while every slot is taken. */
  private slotsStuck (): MigrationRecord | undefined {
    if (this.copySlotsFree() > 0) return undefined
    return this.liveOut().find(x => x.state === 'switching' && this.s.now - x.updatedTick > this.cfg.leaseTicks)
  }

  /**
   * Judges group `g` after one of its members changed, or a slot freed (judgeEvacuation): starts
   * held copies as slots allow once every member is held, withdraws every member still before
   * its copy when one is refused or fails.
   */
  private judgeGroup (g: string, why = ''): void {
    if (this.groupsWithdrawn.has(g)) return
    // A member aborted by this judgement judges again: once this one is done.
    if (this.judging.has(g)) { this.rejudge.add(g); return }
    this.judging.add(g)
    try {
      do {
        this.rejudge.delete(g)
        this.judgeOnce(g, why)
      } while (this.rejudge.has(g) && !this.groupsWithdrawn.has(g))
    } finally {
      this.judging.delete(g)
      this.rejudge.delete(g)
    }
  }

  private judgeOnce (g: string, why: string): void {
    const members = this.groupMembers(g)
    // A member past its reservation (after a restart) means the copies began.
    if (members.some(m => m.state === 'copying' || m.state === 'switching' || m.state === 'committed')) this.groupsStarted.add(g)
    const started = this.groupsStarted.has(g)
    const verdict = judgeEvacuation(members.map(m => {
      switch (m.state) {
        case 'committed': return 'done'
        case 'copying': case 'switching': return 'copying'
        case 'aborted': return started ? 'failed' : 'refused'
        default: return this.heldForGroup.has(m.id) ? 'granted' : 'pending'
      }
    }), this.copySlotsFree())
    if (verdict.kind === 'wait') return
    if (verdict.kind === 'done') { this.groupsStarted.delete(g); return }
    if (verdict.kind === 'copy') {
      if (verdict.first) {
        this.groupsStarted.add(g)
        this.counts.evacuationsStarted++
        this.s.emit({ kind: 'migration-group', host: this.s.self, text: `consolidation ${g}: all ${members.length} targets granted; copies start, ${this.cfg.outMax} at a time` })
      }
      for (const i of verdict.start) {
        const m = members[i]
        if (m === undefined || !this.heldForGroup.delete(m.id)) continue
        // A protected VM's handover was granted when it was held; its copy waited for a slot
        // since: the VM may run on the target only while a majority still grants it.
        if (this.ha.protects(m.vm) && !this.ha.handoverGranted(m.vm)) {
          this.becomeAborted(m, 'the HA handover was no longer granted when its copy\'s turn came')
          this.send(m.target, { type: 'migrationAborted', id: m.id, reason: m.reason })
          continue
        }
        this.startCopy(m)
      }
      return
    }
    this.groupsWithdrawn.add(g)
    if (verdict.started) this.counts.evacuationsCutShort++
    else this.counts.evacuationsWithdrawn++
    this.s.emit({
      kind: 'migration-group',
      host: this.s.self,
      text: verdict.started
        ? `consolidation ${g} cut short (${why}): the ${verdict.withdraw.length} moves still waiting are withdrawn; those copied stay`
        : `consolidation ${g} withdrawn (${why}): the reservations granted are released`
    })
    for (const i of verdict.withdraw) {
      const m = members[i]
      if (m === undefined || TERMINAL_STATES.has(m.state)) continue
      this.becomeAborted(m, `consolidation ${verdict.started ? 'cut short' : 'withdrawn'}: ${why}`)
      // Released at the target (an intent went out once the spec was read).
      if (m.spec !== null) this.send(m.target, { type: 'migrationAborted', id: m.id, reason: m.reason })
    }
  }

  /** Why `vm` must not start moving to `target`, or null. A group member takes no slot before its copy (its copies are staged). */
  private refusal (vm: VmId, target: HostId, here: VmSummary | undefined, inGroup = false): string | null {
    if (here === undefined) return `VM ${vm} does not run on this host`
    if (target === this.s.self) return 'target is this host'
    const pin = this.pinned(vm)
    if (pin !== null) return pin
    const m = this.s.members.get(target)
    if (m === undefined || m.state !== 'alive') return `target ${target.slice(0, 8)} is not an alive member`
    if (this.isMoving(vm)) return `VM ${vm} is already migrating`
    if (!inGroup && this.liveOut().length >= this.cfg.outMax) return `outgoing limit ${this.cfg.outMax} reached`
    if (this.clusterInFlight() >= this.cfg.clusterMax) return `cluster limit ${this.cfg.clusterMax} reached`
    if (!this.rulesAgreed()) return 'rule set not agreed by a majority'
    const out = outgoingAllowed(this.cfg.rules, vm, this.liveIn().map(r => r.vm))
    return out.ok ? null : out.reason
  }

  // -------------------------------------------------------------------------------------------
  // Messages.

  onMessage (from: HostId, b: Body): void {
    switch (b.type) {
      case 'migrationIntent': this.onIntent(from, b); break
      case 'reservationGranted': this.onGranted(from, b.id, b.leaseTicks); break
      case 'reservationRefused': this.onPeerAborted(from, b.id, `target refused: ${b.reason}`); break
      case 'incomingReady': this.onIncomingReady(from, b.id, b.uri, b.nbd); break
      case 'migrationProgress': this.onProgressNote(from, b.id, b.status, b.transferredBytes, b.remainingBytes); break
      case 'transferCompleted': this.onTransferCompleted(from, b.id); break
      case 'migrationCommitted': this.onCommitted(from, b.id); break
      case 'migrationAborted': this.onPeerAborted(from, b.id, b.reason, b.mayHaveRun === true); break
      case 'migrationStatusQuery': this.onStatusQuery(from, b.id); break
      case 'migrationStatusAnswer': this.onStatusAnswer(from, b.id, b.state); break
      default: break
    }
  }

  private mine (from: HostId, id: string, role: 'source' | 'target'): MigrationRecord | undefined {
    const r = this.recs.get(id)
    if (r === undefined || r.role !== role) return undefined
    if ((role === 'source' ? r.target : r.source) !== from) return undefined
    return r
  }

  /**
   * What this host admits against (reservation.ts): residents (a replica hosted here counted as
   * its VM, so the hard rules see it), live incoming reservations and starting replicas.
   */
  admissionInput (): AdmissionInput {
    const live = this.liveIn()
    const h = this.replicaHooks
    return {
      self: this.s.self,
      capacity: this.capacity,
      residents: this.localVms.filter(v => !live.some(r => r.vm === v.id)).map(v => { const a = h.alias(v.id); return a === v.id ? v : { ...v, id: a } }),
      reservations: live.map(r => ({ vm: r.vm, memMiB: r.spec?.memMiB ?? 0, cpuDemandMips: r.cpuDemandMips })).concat(h.reservations()),
      outgoing: this.liveOut().map(r => r.vm),
      incomingCount: live.length,
      inMax: this.cfg.inMax,
      clusterInFlight: this.clusterInFlight(),
      clusterMax: this.cfg.clusterMax + 1, // the intent's own VM is already counted by its source's report
      draining: this.draining,
      evacuating: this.liveOut().some(r => r.cause === 'underload'),
      cpuCapFraction: this.cfg.policy.placement.cpuCapFraction ?? 1,
      rules: this.rules(),
      rulesAgreed: this.rulesAgreed(),
      memReclaimableMiB: this.memory?.reclaimableMiB ?? 0,
      memOvercommitRatio: this.cfg.memOvercommitRatio
    }
  }

  private onIntent (from: HostId, b: Extract<Body, { type: 'migrationIntent' }>): void {
    const s = this.s
    const known = this.recs.get(b.id)
    if (known !== undefined) {
      // A repeated intent: answer from the record.
      if (known.role !== 'target' || known.source !== from) return
      if (known.state === 'aborted') this.send(from, { type: 'reservationRefused', id: b.id, reason: known.reason })
      else if (!TERMINAL_STATES.has(known.state)) this.send(from, { type: 'reservationGranted', id: b.id, leaseTicks: this.cfg.leaseTicks })
      return
    }
    // A migration of this VM still open here (a source record a restart left to resolve, say)
    // speaks for its copies here: a second one would let that record's outcome, when it comes,
    // undo the new move's (its abort resets HA's role for the VM while the new copy runs here).
    const open = this.live().find(x => x.vm === b.vm)
    const verdict = open !== undefined
      ? { ok: false as const, reason: `VM ${b.vm} has a migration here still open (${open.id}, ${open.role} ${open.state})` }
      : admit(this.admissionInput(), { vm: b.vm, memMiB: b.memMiB, cpuDemandMips: b.cpuDemandMips, vcpus: b.vcpus })
    if (!verdict.ok) {
      this.counts.refused++
      this.send(from, { type: 'reservationRefused', id: b.id, reason: verdict.reason })
      return
    }
    if (b.withStorage === true && this.diskCopies() >= this.cfg.diskCopiesMax) {
      this.counts.refused++
      this.send(from, { type: 'reservationRefused', id: b.id, reason: `disk copy limit ${this.cfg.diskCopiesMax} reached on the target` })
      return
    }
    const haWhy = this.ha.protects(b.vm) ? this.ha.incomingStart(b.vm, from) : null
    if (haWhy !== null) {
      this.counts.refused++
      this.send(from, { type: 'reservationRefused', id: b.id, reason: haWhy })
      return
    }
    const spec: VmSpecWire = { vcpus: b.vcpus, memMiB: b.memMiB, extraJson: b.extraJson }
    const r: MigrationRecord = {
      id: b.id, vm: b.vm, role: 'target', source: from, target: s.self, state: 'proposed', cause: 'peer', spec,
      cpuDemandMips: b.cpuDemandMips, createdTick: s.now, updatedTick: s.now,
      leaseExpiresTick: s.now + this.cfg.leaseTicks, uri: null, mode: null, downtimeLimitMs: 0, timeoutMs: 0,
      progress: null, reason: '', durationTicks: 0
    }
    if (b.withStorage === true) r.storage = true
    this.supersedeOlder(r.vm)
    this.recs.set(r.id, r)
    if (this.ha.protects(r.vm)) this.handing.add(r.id)
    this.becomeReserved(r)
    this.send(from, { type: 'reservationGranted', id: r.id, leaseTicks: this.cfg.leaseTicks })
    this.becomePreparing(r)
    this.command(r.storage === true
      ? { kind: 'prepareIncoming', mig: r.id, vm: r.vm, spec, postcopy: true, storage: true }
      : { kind: 'prepareIncoming', mig: r.id, vm: r.vm, spec, postcopy: true })
  }

  private onGranted (from: HostId, id: string, leaseTicks: number): void {
    const r = this.mine(from, id, 'source')
    if (r === undefined) return
    if (r.state === 'aborted') { this.send(from, { type: 'migrationAborted', id, reason: r.reason }); return }
    if (r.state !== 'proposed') return
    r.leaseExpiresTick = this.s.now + leaseTicks
    this.grantLease.set(id, leaseTicks)
    this.becomeReserved(r)
    this.due.set(id, this.s.now + this.cfg.prepareTimeoutTicks)
  }

  private onIncomingReady (from: HostId, id: string, uri: string, nbd: string | undefined): void {
    const r = this.mine(from, id, 'source')
    if (r === undefined) return
    if (r.state === 'aborted') { this.send(from, { type: 'migrationAborted', id, reason: r.reason }); return }
    if (r.state !== 'reserved' && r.state !== 'proposed') return
    // A repeated IncomingReady (a duplicated frame) of a move already waiting (for its group's
    // turn, or for the HA handover) changes nothing: its copy starts only when that wait ends.
    if (this.heldForGroup.has(id) || this.awaitingGrant.has(id)) return
    r.uri = uri
    if (nbd !== undefined && nbd !== '') r.nbd = nbd
    if (r.group !== undefined) {
      if (r.state === 'proposed') this.becomeReserved(r)
      // A whole evacuation: a protected VM's handover is part of its readiness (a majority that
      // refuses it withdraws the group like a refusing target); then the copy waits for the others.
      if (this.ha.protects(r.vm) && !this.startHandover(r)) return
      if (this.awaitingGrant.has(id)) return
      this.hold(r)
      return
    }
    this.proceed(r)
  }

  /** A member of a whole evacuation is ready (target prepared, handover granted): held until the group starts. */
  private hold (r: MigrationRecord): void {
    this.awaitingGrant.delete(r.id)
    this.heldForGroup.add(r.id)
    this.due.set(r.id, this.s.now + this.renewTicks(r))
    this.judgeGroup(r.group ?? '')
  }

  /** Asks for the HA handover of `r`'s VM; false (and aborted) when HA refuses it at once. */
  private startHandover (r: MigrationRecord): boolean {
    this.handing.add(r.id)
    const why = this.ha.handoverStart(r.vm, r.target)
    if (why !== null) {
      this.becomeAborted(r, why)
      this.send(r.target, { type: 'migrationAborted', id: r.id, reason: r.reason })
      return false
    }
    this.awaitingGrant.set(r.id, this.s.now)
    this.due.set(r.id, this.s.now + 1)
    return true
  }

  /** Source, the target ready: the HA handover of a protected VM first, else the copy. */
  private proceed (r: MigrationRecord): void {
    if (this.ha.protects(r.vm) && !this.awaitingGrant.has(r.id)) {
      // The VM may run on the target only once a majority granted it the VM's claim.
      if (this.startHandover(r) && r.state === 'proposed') this.becomeReserved(r)
      return
    }
    this.startCopy(r)
  }

  /** Why a disk copy must not start because its first pass would take too long, or null. */
  private diskCopyTooLong (q: DriverQueryResult): string | null {
    if (q.diskAllocatedBytes === undefined) return null
    const dp = planDiskCopy(this.diskCopyInput(q))
    const s = dp.firstPassMs / 1000
    if (s <= this.cfg.maxDiskCopySeconds) return null
    return `the disk copy would take about ${Math.round(s)} s (${Math.round(q.diskAllocatedBytes / 1048576)} MiB at ${(this.bandwidth() / 1048576).toFixed(1)} MiB/s), above migration.maxDiskCopySeconds (${this.cfg.maxDiskCopySeconds} s)`
  }

  private diskCopyInput (q: DriverQueryResult | undefined): Parameters<typeof planDiskCopy>[0] {
    return {
      writeBytesPerS: q?.diskWriteBytesPerS ?? 0,
      writeSizeBytes: q?.diskWriteSizeBytes ?? 0,
      granularityBytes: 65536,
      bandwidthBytesPerS: this.bandwidth(),
      sizeBytes: q?.diskAllocatedBytes ?? 0,
      allocatedBytes: q?.diskAllocatedBytes ?? 0
    }
  }

  private startCopy (r: MigrationRecord): void {
    const id = r.id
    const uri = r.uri ?? ''
    this.awaitingGrant.delete(id)
    if (r.storage === true && (r.nbd === undefined || r.nbd === '')) {
      this.becomeAborted(r, 'the target did not export the disks (its driver cannot receive them)')
      this.send(r.target, { type: 'migrationAborted', id: r.id, reason: r.reason })
      return
    }
    const plan = this.plan(r)
    if (plan === null) return
    if (r.storage === true) {
      r.diskPhase = 'mirroring'
      const dp = planDiskCopy(this.diskCopyInput(this.lastQuery.get(id)))
      r.diskCopyMode = dp.copyMode
      this.becomeCopying(r)
      this.s.emit({ kind: 'migration-disk', host: r.target, text: `migration ${r.id}: disk copy ${dp.copyMode}: ${dp.reason}` })
      this.command({ kind: 'mirror', mig: id, vm: r.vm, nbd: r.nbd ?? '', copyMode: dp.copyMode })
      this.due.set(id, this.s.now + this.cfg.pollTicks)
      return
    }
    this.becomeCopying(r)
    this.command({ kind: 'migrate', mig: id, vm: r.vm, uri, params: { mode: plan, maxBandwidthBytes: this.cfg.maxBandwidthBytes, downtimeLimitMs: r.downtimeLimitMs, ...this.syncCap(r) } })
    this.due.set(id, this.s.now + this.cfg.pollTicks)
  }

  /**
   * Under TCG the policy's dirty-sync cap, for the driver to enforce at the switch-over in every
   * mode (QEMU decides on another round by itself, faster than any poll; see convergence.ts).
   * Under KVM the cap stays the controller's alone: enforcing it in the driver adds a pause
   * before the switch-over (a QMP round trip inside the guest's pause), not measured under KVM.
   */
  private syncCap (r: MigrationRecord): { maxDirtySyncs?: number } {
    const policy = this.conv.get(r.id)?.policy
    return this.lastQuery.get(r.id)?.accel === 'tcg' && policy !== undefined ? { maxDirtySyncs: policy.maxDirtySyncs } : {}
  }

  /** Source, with storage: every mirror is ready; journal the memory phase, then start it. */
  private startMemoryCopy (r: MigrationRecord): void {
    r.diskPhase = 'memory'
    r.updatedTick = this.s.now
    this.journal(r)
    this.s.emit({ kind: 'migration-disk', host: r.target, text: `migration ${r.id}: disks mirrored (${Math.round((r.progress?.disk?.sentBytes ?? 0) / 1048576)} MiB sent); copying memory` })
    const mode = r.mode === 'precopy' || r.mode === 'hybrid' ? r.mode : (this.conv.get(r.id)?.policy.postcopyAtOnce === true ? 'postcopy' : 'hybrid')
    this.command({ kind: 'migrate', mig: r.id, vm: r.vm, uri: r.uri ?? '', params: { mode, maxBandwidthBytes: this.cfg.maxBandwidthBytes, downtimeLimitMs: r.downtimeLimitMs, storage: true, ...this.syncCap(r) } })
    this.due.set(r.id, this.s.now + this.cfg.pollTicks)
  }

  /** Source, with storage, before the switch-over: the disk copy failed; cancel it, the VM stays. */
  private abortDiskCopy (r: MigrationRecord, why: string): void {
    this.abortWanted.add(r.id)
    this.becomeAborted(r, why)
    this.command({ kind: 'cancel', mig: r.id, vm: r.vm })
    this.send(r.target, { type: 'migrationAborted', id: r.id, reason: r.reason })
  }

  /** The migration link's bandwidth, bytes/s: configured, else the host's NIC speed. */
  private bandwidth (): number {
    return this.cfg.bandwidthBytesPerS > 0 ? this.cfg.bandwidthBytesPerS : Math.max(1, (this.capacity?.netMbps ?? 1000) * 1e6 / 8)
  }

  /** Chooses the mode with convergence.ts; null (and aborted) when it must not start. */
  private plan (r: MigrationRecord): 'precopy' | 'postcopy' | 'hybrid' | null {
    const q = this.lastQuery.get(r.id)
    const onStall = this.cfg.onStallByVm[r.vm] ?? this.cfg.onStall
    const policy = defaultConvergencePolicy(q?.accel ?? 'kvm', onStall)
    const memBytes = (r.spec?.memMiB ?? 0) * 1048576
    const bw = this.bandwidth()
    const plan = planMigration({
      memBytes,
      dirtyRateBytesPerS: q?.dirtyRateBytesPerS ?? 0,
      dirtyRateMeasured: q?.dirtyRateMeasured === true,
      ...(q?.residentBytes !== undefined ? { residentBytes: q.residentBytes } : {}),
      bandwidthBytesPerS: bw
    }, policy)
    r.downtimeLimitMs = plan.downtimeLimitMs
    r.timeoutMs = plan.timeoutMs
    r.mode = plan.mode
    if (plan.mode === 'reject') {
      this.becomeAborted(r, `convergence plan: ${plan.reason}`)
      this.send(r.target, { type: 'migrationAborted', id: r.id, reason: r.reason })
      return null
    }
    this.conv.set(r.id, { state: initialConvergenceState(plan, policy), policy })
    if (plan.mode === 'postcopy') return policy.postcopyAtOnce ? 'postcopy' : 'hybrid'
    return plan.mode
  }

  private onProgressNote (from: HostId, id: string, status: string, transferredBytes: number, remainingBytes: number): void {
    const r = this.mine(from, id, 'target')
    if (r === undefined || TERMINAL_STATES.has(r.state)) return
    r.leaseExpiresTick = this.s.now + this.cfg.leaseTicks
    r.progress = { status, totalTimeMs: 0, transferredBytes, remainingBytes, dirtySyncCount: 0, downtimeMs: null }
  }

  private onTransferCompleted (from: HostId, id: string): void {
    const r = this.recs.get(id)
    if (r === undefined) { this.send(from, { type: 'migrationStatusAnswer', id, state: 'unknown' }); return }
    if (r.role !== 'target' || r.source !== from) return
    if (r.state === 'committed') { this.send(from, { type: 'migrationCommitted', id }); return }
    if (r.state === 'aborted') { this.send(from, abortedBody(r)); return }
    r.leaseExpiresTick = this.s.now + this.cfg.leaseTicks
    if (r.state !== 'switching') this.becomeSwitching(r)
    if (!this.busy.has(id)) this.command({ kind: 'query', mig: id, vm: r.vm })
  }

  private onCommitted (from: HostId, id: string): void {
    const r = this.mine(from, id, 'source')
    if (r === undefined || r.state !== 'switching') return // R1: only a paused, completed source stops
    this.becomeCommitted(r)
    this.command(r.storage === true ? { kind: 'stopSource', mig: id, vm: r.vm, retireDisks: true } : { kind: 'stopSource', mig: id, vm: r.vm })
  }

  /**
   * Source in switching, told by the target that its copy is gone and may have run: our paused
   * copy is older than the VM's last state. Resuming it would run stale memory over a disk the
   * target may have written to, so it is never resumed: HA destroys it and restarts the VM from
   * its disk; an unprotected VM stays paused here for an operator to decide.
   */
  private staleSource (r: MigrationRecord, why: string): void {
    const s = this.s
    r.mayHaveRun = true
    const protectedVm = this.ha.protects(r.vm)
    this.becomeAborted(r, `${why}; the paused copy here is older than what may have run there: not resumed`)
    if (protectedVm) { this.ha.staleCopy(r.vm); return }
    s.emit({
      kind: 'migration-lost',
      host: r.target,
      text: `VM ${r.vm} NEEDS AN OPERATOR: migration ${r.id} completed, then the target lost the VM; the copy paused here is older than what may have run there. Start the VM from its disk, or resume this copy only if the target never ran it`
    })
  }

  private onPeerAborted (from: HostId, id: string, why: string, mayHaveRun = false): void {
    const r = this.recs.get(id)
    if (r !== undefined && r.role === 'target' && r.source === from && r.state === 'aborted' && r.mayHaveRun === true && !mayHaveRun && r.storage === true && !this.superseded.has(r.id)) {
      // This target gave up on a copy it could not see (libvirt had not started it yet, or had
      // removed it) and kept its images, as the guest might have run here. The source now says it
      // aborted too, without a stale copy of its own: its guest runs there (the migration was
      // cancelled or failed), so what was copied here is not the VM's disk; the images go.
      r.mayHaveRun = false
      r.reason += `; the source runs the VM (${why})`
      this.journal(r)
      this.dropAbandoned(r)
      return
    }
    if (r !== undefined && r.role === 'source' && r.target === from && r.state === 'aborted' && mayHaveRun && r.mayHaveRun !== true && r.storage === true && !this.superseded.has(r.id)) {
      // A target that restarted (or whose lease ran out) after this end had already aborted, and
      // that could not see its incoming copy: it keeps the images it created, as the guest might
      // have run there. It did not (this end aborted with the guest running here): say so again,
      // so that it deletes them. It answers nothing to this, so the exchange ends here.
      this.send(from, abortedBody(r))
      return
    }
    if (r === undefined || TERMINAL_STATES.has(r.state)) return
    if ((r.role === 'source' ? r.target : r.source) !== from) return
    if (r.role === 'source') {
      switch (r.state) {
        case 'proposed': case 'reserved':
          this.becomeAborted(r, why)
          // No copy was started: the guest never left here. A target that kept its images as the
          // guest might have run there (it could not see its incoming copy) hears so, and drops them.
          if (mayHaveRun && r.storage === true) this.send(from, abortedBody(r))
          break
        case 'copying':
          // The guest still runs here (pre-copy); cancel and let the next sample settle it.
          this.abortWanted.add(id)
          this.command({ kind: 'cancel', mig: id, vm: r.vm })
          break
        case 'switching':
          if (mayHaveRun) { this.staleSource(r, why); break }
          // R2: the target killed its copy, which never ran: resume ours.
          this.becomeAborted(r, why)
          this.command({ kind: 'resume', mig: id, vm: r.vm })
          break
        default: break
      }
    } else {
      const hadCopy = r.state !== 'reserved' && r.state !== 'proposed'
      this.becomeAborted(r, why)
      if (hadCopy) this.command({ kind: 'killIncoming', mig: id, vm: r.vm })
    }
  }

  private onStatusQuery (from: HostId, id: string): void {
    const r = this.recs.get(id)
    if (r === undefined || (r.source !== from && r.target !== from)) {
      this.send(from, { type: 'migrationStatusAnswer', id, state: 'unknown' })
      return
    }
    this.send(from, { type: 'migrationStatusAnswer', id, state: r.state })
  }

  private onStatusAnswer (from: HostId, id: string, state: string): void {
    const r = this.recs.get(id)
    if (r === undefined || r.role !== 'source' || r.target !== from || TERMINAL_STATES.has(r.state)) return
    if (!this.lostHere.has(id)) return
    // Our copy is gone: the target's word decides.
    if (state === 'committed') { this.lostHere.delete(id); this.becomeCommitted(r) } else if (state === 'aborted' || state === 'unknown') {
      this.lostHere.delete(id)
      this.becomeAborted(r, 'the VM is gone from the source and the target does not run it')
    }
  }

  private readonly lostHere = new Set<string>()
  private readonly lastQuery = new Map<string, DriverQueryResult>()

  // -------------------------------------------------------------------------------------------
  // Driver results.

  onDriverResult (c: DriverCommand, res: DriverResult): void {
    this.busy.delete(c.mig)
    const r = this.recs.get(c.mig)
    if (r === undefined) return
    if (c.kind === 'killIncoming') {
      if (this.killing.has(r.id)) {
        const why = this.killing.get(r.id) as string
        this.killing.delete(r.id)
        this.onKillResult(r, why, res)
      } else if (!res.ok && res.code !== 'VM_NOT_FOUND') {
        this.onDriverFailure(r, c, res.code, res.message)
        return
      }
      // The incoming copy is killed (or was gone): its images may go now, after it.
      if (res.ok || res.code === 'VM_NOT_FOUND') this.dropAbandoned(r)
      return
    }
    if (c.kind === 'query') {
      if (res.ok && res.kind === 'query') this.lastQuery.set(r.id, res.query)
      if (this.recovering.delete(r.id)) { this.resolve(r, res.ok && res.kind === 'query' ? res.query : null); return }
      if (r.role === 'source' && r.state === 'proposed') { this.afterSourceQuery(r, res.ok && res.kind === 'query' ? res.query : null); return }
      if (r.role === 'target' && r.state === 'switching') { this.checkSwitch(r, res.ok && res.kind === 'query' ? res.query : null); return }
      return
    }
    if (!res.ok) { this.onDriverFailure(r, c, res.code, res.message); return }
    switch (res.kind) {
      case 'prepareIncoming':
        if (r.role !== 'target' || r.state !== 'preparing') {
          if (r.state === 'aborted') this.command({ kind: 'killIncoming', mig: r.id, vm: r.vm })
          return
        }
        r.uri = res.uri
        if (res.nbd !== undefined) r.nbd = res.nbd
        r.leaseExpiresTick = this.s.now + this.cfg.leaseTicks
        this.becomeCopying(r)
        this.send(r.source, r.nbd !== undefined ? { type: 'incomingReady', id: r.id, uri: res.uri, nbd: r.nbd } : { type: 'incomingReady', id: r.id, uri: res.uri })
        return
      case 'progress': this.onSample(r, res.progress); return
      default: return
    }
  }

  private afterSourceQuery (r: MigrationRecord, q: DriverQueryResult | null): void {
    if (q === null || q.presence !== 'running' || q.spec === null) {
      this.becomeAborted(r, q === null ? 'cannot read the VM from the hypervisor' : `VM is ${q.presence} here`)
      return
    }
    const disks = q.disks ?? 'none'
    const storage = r.storageWanted === 'yes' || disks === 'local'
    if (storage) {
      const why = r.storageWanted === 'yes' && disks === 'none'
        ? 'the VM has no disk to move (--with-storage)'
        : q.canMoveStorage !== true
          ? 'the VM has local disks and this host\'s driver cannot move them'
          : q.storageProblem !== undefined
            ? q.storageProblem
            : this.diskCopies() >= this.cfg.diskCopiesMax ? `disk copy limit ${this.cfg.diskCopiesMax} reached on this host` : this.diskCopyTooLong(q)
      if (why !== null) { this.counts.refused++; this.becomeAborted(r, why); return }
      r.storage = true
    }
    r.spec = q.spec
    this.journal(r)
    this.sendIntent(r)
    const until = this.s.now + this.cfg.intentTimeoutTicks
    this.intentUntil.set(r.id, until)
    this.due.set(r.id, Math.min(until, this.s.now + this.cfg.resendTicks))
  }

  /** Source: the intent of proposed move `r`, from its record (the spec its query read). */
  private sendIntent (r: MigrationRecord): void {
    if (r.spec === null) return
    this.send(r.target, {
      type: 'migrationIntent', id: r.id, vm: r.vm, vcpus: r.spec.vcpus, memMiB: r.spec.memMiB,
      extraJson: r.spec.extraJson, cpuDemandMips: r.cpuDemandMips, ...(r.storage === true ? { withStorage: true } : {})
    })
  }

  private onDriverFailure (r: MigrationRecord, c: DriverCommand, code: string, message: string): void {
    const s = this.s
    s.emit({ kind: 'migration-driver', host: s.self, text: `migration ${r.id}: driver ${c.kind} failed (${code}): ${message}` })
    switch (c.kind) {
      case 'prepareIncoming':
        if (r.state === 'preparing') {
          this.becomeAborted(r, `prepare failed: ${message}`)
          this.send(r.source, { type: 'migrationAborted', id: r.id, reason: r.reason })
        }
        return
      case 'mirror':
        if (r.role === 'source' && r.state === 'copying' && r.diskPhase === 'mirroring') this.abortDiskCopy(r, `disk mirror failed to start: ${message}`)
        return
      case 'migrate': case 'progress': case 'cancel':
        // Unsure what the hypervisor did: ask it, then resolve as after a restart.
        if (!TERMINAL_STATES.has(r.state)) { this.recovering.add(r.id); this.command({ kind: 'query', mig: r.id, vm: r.vm }) }
        return
      case 'stopSource': case 'resume': case 'killIncoming':
        if (code !== 'VM_NOT_FOUND' && code !== 'VM_RUNNING') this.due.set(r.id, s.now + this.cfg.resendTicks) // retried by tick
        return
      case 'dropImages':
        // Left for the next restart's cleanup (it asks again); the event names the images' VM.
        return
      default: return
    }
  }

  /** A progress sample of an outgoing migration. */
  private onSample (r: MigrationRecord, p: MigrationRecord['progress'] & object): void {
    if (r.role !== 'source' || r.state !== 'copying') return
    if (r.storage === true && r.diskPhase === 'mirroring') {
      r.progress = p
      const d = p.disk
      this.send(r.target, { type: 'migrationProgress', id: r.id, status: 'mirroring', transferredBytes: d?.doneBytes ?? 0, remainingBytes: Math.max(0, (d?.totalBytes ?? 0) - (d?.doneBytes ?? 0)) })
      if (d === undefined) { this.abortDiskCopy(r, 'the hypervisor runs no disk mirror for the VM'); return }
      if (d.error !== null) { this.abortDiskCopy(r, `disk mirror failed: ${d.error}`); return }
      if (d.ready) { this.startMemoryCopy(r); return }
      this.due.set(r.id, this.s.now + this.cfg.pollTicks)
      return
    }
    if (p.status === 'none') {
      // The hypervisor knows no migration of the VM: it ended and left no record (libvirt keeps
      // none of a job cancelled after an agent restart, when the driver no longer has its own).
      // Polling on would wait forever and renew the target's lease; resolve from a query, as
      // after a restart (the guest running here: aborted; gone: the target decides).
      this.recovering.add(r.id)
      this.command({ kind: 'query', mig: r.id, vm: r.vm })
      return
    }
    r.progress = p
    this.send(r.target, { type: 'migrationProgress', id: r.id, status: p.status, transferredBytes: p.transferredBytes, remainingBytes: p.remainingBytes })
    if (p.status === 'completed') {
      r.durationTicks = this.s.now - r.createdTick
      this.becomeSwitching(r)
      this.send(r.target, { type: 'transferCompleted', id: r.id })
      this.due.set(r.id, this.s.now + this.cfg.resendTicks)
      return
    }
    if (p.status === 'failed' || p.status === 'cancelled') {
      this.becomeAborted(r, this.abortWanted.has(r.id) ? 'cancelled' : `hypervisor: migration ${p.status}${p.error !== undefined ? `: ${p.error}` : ''}`)
      this.send(r.target, { type: 'migrationAborted', id: r.id, reason: r.reason })
      return
    }
    this.due.set(r.id, this.s.now + this.cfg.pollTicks)
    // The switch-over is under way (the guest is paused, the driver completes the disks and checks
    // the sync cap): nothing to steer, and a cancel now would race the device state.
    if (p.status === 'pre-switchover' || p.status === 'device') return
    const cv = this.conv.get(r.id)
    if (cv === undefined || this.abortWanted.has(r.id)) return
    const step = stepConvergence(cv.state, { status: p.status, totalTimeMs: p.totalTimeMs, remainingBytes: p.remainingBytes, transferredBytes: p.transferredBytes, dirtySyncCount: p.dirtySyncCount }, cv.policy, r.timeoutMs)
    cv.state = step.state
    const a = step.action
    if (a.kind === 'setDowntime') { r.downtimeLimitMs = a.downtimeLimitMs; this.command({ kind: 'setDowntime', mig: r.id, vm: r.vm, downtimeLimitMs: a.downtimeLimitMs }) }
    if (a.kind === 'startPostcopy') this.command({ kind: 'startPostcopy', mig: r.id, vm: r.vm })
    if (a.kind === 'abort') { r.reason = a.reason; this.abortWanted.add(r.id); this.command({ kind: 'cancel', mig: r.id, vm: r.vm }) }
  }

  /** Target in switching: does the guest run here? */
  /** HA destroyed the incoming copy of `vm` here with a fence (ha-bridge calls it). */
  onIncomingFenced (vm: VmId): void {
    for (const r of this.liveIn()) if (r.vm === vm) this.fencedIn.add(r.id)
  }

  /**
   * Target: HA fenced our copy after it may have run (the transfer completed or post-copy began):
   * the VM's state lived here, so the source must not resume its older paused copy (R2 would
   * let it): we answer committed, the VM is lost, and HA restarts it from its disk.
   */
  private fencedAfterSwitch (r: MigrationRecord): boolean {
    if (!this.fencedIn.has(r.id)) return false
    if (r.state !== 'switching' && !(r.progress?.status ?? '').startsWith('postcopy')) return false
    r.reason = 'the incoming copy was fenced by HA after the switch-over; the VM is lost and HA restarts it'
    this.becomeCommitted(r)
    this.send(r.source, { type: 'migrationCommitted', id: r.id })
    return true
  }

  private checkSwitch (r: MigrationRecord, q: DriverQueryResult | null): void {
    if (q?.presence !== 'running' && this.fencedAfterSwitch(r)) return
    if (q?.presence === 'running') {
      this.becomeCommitted(r)
      this.send(r.source, { type: 'migrationCommitted', id: r.id })
      return
    }
    const n = (this.switchChecks.get(r.id) ?? 0) + 1
    this.switchChecks.set(r.id, n)
    if (q?.presence === 'incoming' && n < SWITCH_CHECKS_MAX) {
      this.due.set(r.id, this.s.now + 1)
      return
    }
    this.abortTarget(r, q, 'the incoming copy did not start running')
  }

  private abortTarget (r: MigrationRecord, q: DriverQueryResult | null, why: string): void {
    // Once the copy may have completed (copying, switching), only an incoming copy seen not
    // running proves that the guest never ran here; a copy that is gone (a power loss) proves
    // nothing, and the source must not resume its older one (R2 needs the proof).
    if ((r.state === 'copying' || r.state === 'switching') && q?.presence !== 'incoming') {
      r.mayHaveRun = true
      why += '; the incoming copy is gone, so the guest may have run here'
    }
    if (q !== null && q.presence === 'absent') {
      this.becomeAborted(r, why)
      this.send(r.source, abortedBody(r))
      this.dropAbandoned(r)
      return
    }
    // R2: the source hears MigrationAborted only once the incoming copy is killed. The guest may
    // start running between the query and the kill (the switch-over won): the kill is then
    // refused, and the record is resolved from a fresh query instead (onKillResult).
    if (this.killing.has(r.id)) return
    this.killing.set(r.id, why)
    this.command({ kind: 'killIncoming', mig: r.id, vm: r.vm })
  }

  /** The kill abortTarget asked for: aborted only when it killed the copy, else resolved again. */
  private onKillResult (r: MigrationRecord, why: string, res: DriverResult): void {
    if (TERMINAL_STATES.has(r.state)) return
    if (res.ok || res.code === 'VM_NOT_FOUND') {
      if (!res.ok && (r.state === 'copying' || r.state === 'switching') && r.mayHaveRun !== true) {
        // The copy went away by itself after the query: it proves nothing (R3).
        r.mayHaveRun = true
        why += '; the incoming copy was gone at the kill, so the guest may have run here'
      }
      this.becomeAborted(r, why)
      this.send(r.source, abortedBody(r))
      return
    }
    // Refused (VM_RUNNING: the guest runs here) or unsure: ask the hypervisor and resolve again.
    this.recovering.add(r.id)
    this.command({ kind: 'query', mig: r.id, vm: r.vm })
  }

  /**
   * Target, aborted, of a move with storage: the images this host created for it go (the driver
   * knows which from its own journal, written before it created them), unless the guest may have
   * run here (mayHaveRun: they may then hold the VM's newest disk, and stay for an operator).
   * Issued after the incoming copy is killed or found gone; never for a superseded record (a
   * newer migration of the VM speaks for it).
   */
  private dropAbandoned (r: MigrationRecord): void {
    if (r.role !== 'target' || r.state !== 'aborted' || r.storage !== true || this.superseded.has(r.id)) return
    if (r.mayHaveRun === true) {
      this.s.emit({ kind: 'migration-lost', host: r.source, text: `migration ${r.id}: the disk images created here for ${r.vm} are kept: the guest may have run here, so they may hold its newest disk; remove them once the VM runs elsewhere` })
      return
    }
    this.command({ kind: 'dropImages', mig: r.id, vm: r.vm })
  }

  /** Resolution after a restart, a lease expiry or a driver failure (see the module comment). */
  private resolve (r: MigrationRecord, q: DriverQueryResult | null): void {
    const s = this.s
    if (this.superseded.has(r.id)) return
    if (q === null) { this.recovering.add(r.id); this.due.set(r.id, s.now + this.cfg.resendTicks); return }
    if (r.role === 'target') {
      if (r.state === 'committed') return
      if (r.state === 'aborted') {
        // The cleanup again (a restart may have come between the abort and it): the incoming
        // copy first, then the images it was given (dropAbandoned, after the kill's result).
        if (q.presence === 'incoming') this.command({ kind: 'killIncoming', mig: r.id, vm: r.vm })
        else if (q.presence === 'absent') this.dropAbandoned(r)
        return
      }
      if (q.presence === 'running') {
        this.becomeCommitted(r)
        this.send(r.source, { type: 'migrationCommitted', id: r.id })
      } else if (!this.fencedAfterSwitch(r)) {
        const byRule = this.ruleAbort.get(r.id)
        this.abortTarget(r, q, byRule ?? (q.presence === 'absent' ? 'no incoming copy here' : 'lease expired or restarted before the guest ran here'))
      }
      this.ruleAbort.delete(r.id)
      return
    }
    switch (r.state) {
      case 'committed':
        // The paused copy goes; with storage, the images it left are set aside (again, if a
        // restart came first: the driver's own journal says which, and it is idempotent).
        if (q.presence === 'paused' || (r.storage === true && q.presence === 'absent')) {
          this.command(r.storage === true ? { kind: 'stopSource', mig: r.id, vm: r.vm, retireDisks: true } : { kind: 'stopSource', mig: r.id, vm: r.vm })
        }
        return
      case 'aborted': if (q.presence === 'paused' && q.migration === 'completed' && r.mayHaveRun !== true) this.command({ kind: 'resume', mig: r.id, vm: r.vm }); return
      case 'proposed': case 'reserved':
        this.becomeAborted(r, 'restarted before copying')
        this.send(r.target, { type: 'migrationAborted', id: r.id, reason: r.reason })
        return
      case 'switching':
        if (q.presence === 'absent') { this.lostHere.add(r.id); this.send(r.target, { type: 'migrationStatusQuery', id: r.id }); this.due.set(r.id, s.now + this.cfg.resendTicks); return }
        this.send(r.target, { type: 'transferCompleted', id: r.id })
        this.due.set(r.id, s.now + this.cfg.resendTicks)
        return
      default: break
    }
    // copying
    const m = q.migration
    if (q.presence === 'absent') { this.lostHere.add(r.id); this.send(r.target, { type: 'migrationStatusQuery', id: r.id }); this.due.set(r.id, s.now + this.cfg.resendTicks); return }
    if (m === 'completed') {
      this.becomeSwitching(r)
      this.send(r.target, { type: 'transferCompleted', id: r.id })
      this.due.set(r.id, s.now + this.cfg.resendTicks)
      return
    }
    if (m.startsWith('postcopy')) { this.due.set(r.id, s.now + this.cfg.pollTicks); return }
    if (m === 'active' || m === 'setup' || m === 'pre-switchover' || m === 'device' || m === 'cancelling') {
      this.abortWanted.add(r.id)
      this.command({ kind: 'cancel', mig: r.id, vm: r.vm })
      this.due.set(r.id, s.now + this.cfg.pollTicks)
      return
    }
    // none, failed, cancelled: the guest runs here.
    this.becomeAborted(r, q.presence === 'running' ? `migration ${m}; the VM runs on the source` : `migration ${m}; the VM is ${q.presence} on the source`)
    this.send(r.target, { type: 'migrationAborted', id: r.id, reason: r.reason })
    if (q.presence === 'paused' && m !== 'none') this.command({ kind: 'resume', mig: r.id, vm: r.vm })
    else if (r.storage === true && q.presence === 'running') this.command({ kind: 'cancel', mig: r.id, vm: r.vm }) // drops the disk mirrors
  }

  // -------------------------------------------------------------------------------------------
  // Time.

  /** The earliest tick at which tick() may act: a record's due tick, or the tick after a target's lease runs out. */
  nextDue (): number {
    if (this.ruleAbort.size > 0) return this.s.now + 1
    let due = Infinity
    for (const r of this.recs.values()) {
      if (r.role === 'target' && !TERMINAL_STATES.has(r.state) && r.state !== 'switching') due = Math.min(due, r.leaseExpiresTick + 1)
      const d = this.due.get(r.id)
      if (d !== undefined) due = Math.min(due, d)
    }
    return due
  }

  tick (): void {
    const s = this.s
    for (const r of this.recs.values()) {
      if (this.ruleAbort.has(r.id) && (TERMINAL_STATES.has(r.state) || r.state === 'switching')) this.ruleAbort.delete(r.id)
      if (r.role === 'target' && this.ruleAbort.has(r.id) && !this.busy.has(r.id) && !this.recovering.has(r.id)) {
        this.recovering.add(r.id)
        this.command({ kind: 'query', mig: r.id, vm: r.vm })
        continue
      }
      if (r.role === 'target' && !TERMINAL_STATES.has(r.state) && r.state !== 'switching' && s.now > r.leaseExpiresTick && !this.busy.has(r.id) && !this.recovering.has(r.id)) {
        s.emit({ kind: 'migration-lease', host: r.source, text: `migration ${r.id}: lease expired` })
        this.recovering.add(r.id)
        this.command({ kind: 'query', mig: r.id, vm: r.vm })
        continue
      }
      const due = this.due.get(r.id)
      if (due === undefined || s.now < due || this.busy.has(r.id)) continue
      this.due.delete(r.id)
      this.onDue(r)
    }
  }

  private onDue (r: MigrationRecord): void {
    const s = this.s
    if (TERMINAL_STATES.has(r.state)) {
      if (s.now - r.updatedTick >= this.cfg.retainTicks) this.forget(r)
      else if (this.recovering.has(r.id) || this.lostHere.has(r.id)) this.command({ kind: 'query', mig: r.id, vm: r.vm })
      else this.due.set(r.id, r.updatedTick + this.cfg.retainTicks)
      return
    }
    if (this.recovering.has(r.id)) { this.command({ kind: 'query', mig: r.id, vm: r.vm }); return }
    if (r.role === 'target') {
      if (r.state === 'switching') this.command({ kind: 'query', mig: r.id, vm: r.vm })
      return
    }
    switch (r.state) {
      case 'reserved':
        if (this.heldForGroup.has(r.id)) {
          const started = r.group !== undefined && this.groupsStarted.has(r.group)
          const stuck = started ? this.slotsStuck() : undefined
          const why = !started && s.now >= this.heldDeadline(r)
            ? 'the other targets of the consolidation did not all grant in time'
            : stuck !== undefined ? `the copy of ${stuck.vm} is stuck at the switch-over, no slot frees for this one` : null
          if (why !== null) {
            this.becomeAborted(r, why)
            this.send(r.target, { type: 'migrationAborted', id: r.id, reason: r.reason })
            return
          }
          // Still waiting (for the other grants, or for a slot): the target's lease is renewed.
          this.send(r.target, { type: 'migrationProgress', id: r.id, status: 'waiting', transferredBytes: 0, remainingBytes: 0 })
          const next = s.now + this.renewTicks(r)
          this.due.set(r.id, started ? next : Math.min(next, this.heldDeadline(r)))
          return
        }
        if (this.awaitingGrant.has(r.id)) {
          if (this.ha.handoverGranted(r.vm)) {
            if (r.group !== undefined) this.hold(r)
            else this.startCopy(r)
            return
          }
          if (s.now - this.awaitingGrant.get(r.id)! < this.ha.timeoutTicks) { this.due.set(r.id, s.now + 1); return }
          this.becomeAborted(r, 'no majority granted the HA handover in time')
          this.send(r.target, { type: 'migrationAborted', id: r.id, reason: r.reason })
          return
        }
        // falls through
      case 'proposed': {
        const until = r.state === 'proposed' ? this.intentUntil.get(r.id) : undefined
        if (until !== undefined && s.now < until) {
          this.sendIntent(r)
          this.due.set(r.id, Math.min(until, s.now + this.cfg.resendTicks))
          return
        }
        this.becomeAborted(r, r.state === 'reserved' ? 'the target did not prepare in time' : r.spec === null ? 'the hypervisor did not answer the query in time' : 'no answer from the target')
        this.send(r.target, { type: 'migrationAborted', id: r.id, reason: r.reason })
        return
      }
      case 'copying': this.command({ kind: 'progress', mig: r.id, vm: r.vm }); return
      case 'switching':
        this.send(r.target, this.lostHere.has(r.id) ? { type: 'migrationStatusQuery', id: r.id } : { type: 'transferCompleted', id: r.id })
        this.due.set(r.id, s.now + this.cfg.resendTicks)
        return
      default: break
    }
  }

  private forget (r: MigrationRecord): void {
    this.recs.delete(r.id)
    this.intentUntil.delete(r.id)
    if (r.group !== undefined && this.groupMembers(r.group).length === 0) { this.groupsStarted.delete(r.group); this.groupsWithdrawn.delete(r.group) }
    this.superseded.delete(r.id)
    this.due.delete(r.id)
    this.lastQuery.delete(r.id)
    this.s.pending.persist.push({ type: 'del', key: KEY_MIGRATION_PREFIX + r.id })
    const terminal = [...this.recs.values()].filter(x => TERMINAL_STATES.has(x.state))
    if (terminal.length > this.cfg.retainMax) {
      const oldest = terminal.sort((a, b) => a.updatedTick - b.updatedTick)[0]
      if (oldest !== undefined) this.forget(oldest)
    }
  }

  setDraining (on: boolean): void {
    if (this.draining === on) return
    this.draining = on
    this.s.persist(KEY_DRAINING, on)
    this.s.emit({ kind: 'drain', host: this.s.self, text: `host ${this.s.name} ${on ? 'is draining' : 'stopped draining'}` })
  }
}

/** The MigrationAborted a target sends from its record (it says when the guest may have run here). */
function abortedBody (r: MigrationRecord): Body {
  return r.mayHaveRun === true ? { type: 'migrationAborted', id: r.id, reason: r.reason, mayHaveRun: true } : { type: 'migrationAborted', id: r.id, reason: r.reason }
}

/** Whether source record `a` was started after `b` on this host (ids are self-incarnation-seq). */
function newerRecord (a: MigrationRecord, b: MigrationRecord): boolean {
  const key = (r: MigrationRecord): [number, number] => {
    const m = /-(\d+)-(\d+)$/.exec(r.id)
    return m === null ? [0, 0] : [Number(m[1]), Number(m[2])]
  }
  const [ai, as] = key(a)
  const [bi, bs] = key(b)
  return ai !== bi ? ai > bi : as > bs
}
