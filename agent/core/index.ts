/** Public surface of the deterministic core: the core itself, its inputs and effects, its config. */
export { AgentCore } from './agent-core.js'
export type { AgentCoreOptions, CoreStatus, CoreCounters, PersistedCoreState } from './agent-core.js'
export type { Input } from './inputs.js'
export type { Ready, PersistOp, Outbound, CoreEvent } from './effects.js'
export { ConfigError, defaultCoreConfig, localTestCoreConfig, validateCoreConfig } from './config.js'
export type { CoreConfig } from './config.js'
export { restoreCoreState, KEY_INCARNATION, KEY_REPORT_SEQ_CEILING, KEY_MEMBER_PREFIX } from './persisted.js'
