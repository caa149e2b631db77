/**
 * Public surface of the deterministic core: everything the edge (main.ts, runtime, cli,
 * adapters, ports, sim, the configuration) may name. The edge imports the core only through this
 * file (test/unit/core/lint-core.test.ts checks it); what is not exported here is the core's own.
 */

// The core itself, its inputs, its effects and what it persists.
export { AgentCore } from './agent-core.js'
export type { AgentCoreOptions, CoreStatus, CoreCounters, PersistedCoreState } from './agent-core.js'
export type { Input } from './inputs.js'
export type { Ready, Outbound } from './effects.js'
export type { CoreEvent, PersistOp } from './events.js'
export {
  restoreCoreState, KEY_DRAINING, KEY_INCARNATION, KEY_MEMBER_PREFIX, KEY_MIGRATION_PREFIX, KEY_REPORT_SEQ_CEILING
} from './persisted.js'

// Configuration: defaults and validation of the core's sections.
export { ConfigError, defaultCoreConfig, FRAME_BYTES_MAX_DEFAULT, localTestCoreConfig, validateCoreConfig } from './config.js'
export type { CoreConfig } from './config.js'
export { defaultMigrationConfig, validateMigrationConfig } from './migration/migration-config.js'
export { defaultHaConfig, HA_EPOCH_SPAN, HA_SINCE_MAX, haEpochBase, localHaConfig, requiredFenceDelayTicks, simHaConfig, validateHaConfig, validateHaInventory } from './ha/ha-config.js'
export type { HaConfig, HaMemberSpec, HaSource, HaVmSpec } from './ha/ha-config.js'
export { defaultVipConfig, localTestVipConfig, parseVipAddress, validateVipConfig, validateVipSpecs } from './vip/vip-config.js'
export type { VipConfig, VipSpec } from './vip/vip-config.js'

// Plain data: ids, samples, load reports, the membership view.
export type {
  HostCapacity, HostId, HostMemoryReport, HostSample, LoadReport, MemberState, MemberView, VmId, VmRunState, VmSummary
} from './types.js'

// The wire: what travels between agents (the codec and the transports carry it).
export { PROTOCOL_CUR, PROTOCOL_MAX, PROTOCOL_MIN } from './messages.js'
export type { Body, Envelope, Gossip, MemberRecord } from './messages.js'
export { envelopeBytes } from './wire-size.js'

// Migration: the driver commands and their results, the configuration, admission.
export type { AutomationLevel, DriverCommand, DriverQueryResult, DriverResult, MigrationConfig, VmPresence, VmSpecWire } from './migration/migration-state.js'
export { AUTOMATION_LEVELS } from './migration/migration-state.js'
export { admit } from './migration/reservation.js'
export type { AdmissionInput } from './migration/reservation.js'
export { judgeEvacuation, reservedWhole } from './migration/evacuation.js'
export type { EvacuationAnswer, EvacuationVerdict } from './migration/evacuation.js'

// Virtual IPs.
export type { VipAddressEffect, VipCoreInput, VipCoreOptions, VipStatusReport } from './vip/vip-bridge.js'
export { VIP_KEY_PREFIX, restoreVipState } from './vip/vip-types.js'
export type { VipEffect, VipRestored, VipStatus } from './vip/vip-types.js'
export type { ClaimRef, VipMessage } from './vip/vip-messages.js'
export { VipOwnership } from './vip/vip-ownership.js'

// High availability.
export type { HaCoreOptions } from './ha/ha-bridge.js'
export { HA_KEY_PREFIX, haRestoredFrom } from './ha/ha-types.js'
export type { HaCommand, HaMaintenance, HaMessage, HaMode, HaRestored, HaStatus } from './ha/ha-types.js'
export type { HaClaim } from './ha/restart.js'
export { HaManager } from './ha/ha-manager.js'

// Replicas.
export type { ReplicaCoreOptions } from './replica/replica-manager.js'
export { KEY_REPLICA_PREFIX, isReplicaRecord } from './replica/replica-types.js'
export type { ReplicaCommand, ReplicaRecord, SplitEffect } from './replica/replica-types.js'

// Determinism helpers the simulators share with the core.
export { Prng, seededPrng } from './prng.js'
export { assert } from './assert.js'

// The replicated cluster configuration.
export { ConfigLog, KEY_CONFIG_ACCEPTOR, KEY_CONFIG_ENTRY_PREFIX, configEntryKey, entryHash, defaultConfigLogOptions } from './cluster-config/config-log.js'
export type { AcceptorState, Ballot, ConfigEntry, ConfigLogOptions, ConfigMessage, ConfigOutcome, HashFn, RestoredConfigLog } from './cluster-config/config-log.js'
export { canonicalDocJson, clusterDocProblem, haSpecsOf, parseClusterDoc } from './cluster-config/cluster-doc.js'
export type { ClusterDoc, ClusterDocHaVm, ClusterDocMember } from './cluster-config/cluster-doc.js'
export type { ClusterConfigCoreOptions, ClusterConfigStatus } from './agent-core.js'
