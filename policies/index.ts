/**
 * Policies: pure functions over a frozen cluster view (no clock, IO or Math.random). The agent
 * core and the trace simulator call the same ones.
 */
export * from './types.js'
export * from './stats.js'
export * from './forecast.js'
export * from './overload.js'
export * from './underload.js'
export * from './selection.js'
export * from './placement.js'
export * from './rules.js'
export * from './antithrash.js'
export * from './plan.js'
export * from './cluster-plan.js'
export * from './config.js'
