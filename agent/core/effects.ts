/** What the core asks the runtime to do. Applied in order: persist, then send, then driver, then vip. */
import type { Envelope } from './messages.js'
import type { HostId } from './types.js'
import type { DriverCommand } from './migration/migration-state.js'
import type { VipAddressEffect } from './vip/vip-types.js'
import type { HaCommand } from './ha/ha-types.js'
import type { ReplicaCommand, SplitEffect } from './replica/replica-types.js'
import type { CoreEvent, PersistOp } from './events.js'

export type { CoreEvent, PersistOp } from './events.js'

/** A frame to a peer. Best-effort: the transport may drop it. */
export interface Outbound { to: HostId, envelope: Envelope }

/** One batch of effects. */
export interface Ready {
  persist: PersistOp[]
  send: Outbound[]
  events: CoreEvent[]
  /** Hypervisor commands, carried out after persist and send, in order; results come back as driverResult inputs. */
  driver: DriverCommand[]
  /**
   * Virtual-IP address changes, applied after the driver commands, one at a time per VIP and in
   * order; each reports back with a vipApplied input.
   */
  vip: VipAddressEffect[]
  /**
   * HA hypervisor commands (start, resume, stop, pause, destroy of protected VMs), carried out
   * after persist and send, one at a time in order; each reports back with an haDriverResult input.
   */
  ha: HaCommand[]
  /** Replica hypervisor commands (start, stop), carried out like `ha`; each reports back with a replicaDriverResult input. */
  replica: ReplicaCommand[]
  /** Connection splitting of replicated VMs' VIPs (agent/core/replica): the new full host list of each VM that changed. */
  split: SplitEffect[]
}

export function emptyReady (): Ready {
  return { persist: [], send: [], events: [], driver: [], vip: [], ha: [], replica: [], split: [] }
}

export function isEmptyReady (rd: Ready): boolean {
  return rd.persist.length === 0 && rd.send.length === 0 && rd.events.length === 0 && rd.driver.length === 0 && rd.vip.length === 0 && rd.ha.length === 0 && rd.replica.length === 0 && rd.split.length === 0
}
