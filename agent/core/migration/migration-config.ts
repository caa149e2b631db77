/**
 * Defaults and validation of the migration tunables (MigrationConfig in migration-state.ts).
 * Intervals are ticks; the defaults assume the production tick of 100 ms.
 */
import { ConfigError } from '../config.js'
import { defaultPolicyConfig } from '../../../policies/config.js'
import { AUTOMATION_LEVELS, type MigrationConfig } from './migration-state.js'

export function defaultMigrationConfig (): MigrationConfig {
  return {
    outMax: 2,
    inMax: 2,
    clusterMax: 8,
    leaseTicks: 100,
    intentTimeoutTicks: 50,
    prepareTimeoutTicks: 300,
    pollTicks: 2,
    resendTicks: 20,
    retainTicks: 36_000,
    retainMax: 200,
    bandwidthBytesPerS: 0,
    maxBandwidthBytes: 0,
    memOvercommitRatio: 1,
    onStall: 'abort',
    onStallByVm: {},
    rules: { vmVm: [], vmHost: [] },
    autoBalance: true,
    automation: 'full',
    decisionTicks: 50,
    // policy.intervalSec (300 s) at the production tick of 100 ms
    balanceTicks: 3000,
    policy: defaultPolicyConfig(),
    diskCopiesMax: 1,
    maxDiskCopySeconds: 3600
  }
}

/** Returns the config when it can work; throws ConfigError naming the first broken rule. */
export function validateMigrationConfig (c: MigrationConfig): MigrationConfig {
  const ints: Array<keyof MigrationConfig> = ['outMax', 'inMax', 'clusterMax', 'leaseTicks', 'intentTimeoutTicks', 'prepareTimeoutTicks', 'pollTicks', 'resendTicks', 'retainTicks', 'retainMax', 'decisionTicks', 'balanceTicks', 'diskCopiesMax']
  for (const k of ints) {
    const v = c[k]
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 1) throw new ConfigError(`migration.${k} must be a positive integer (got ${String(v)})`, `migration.${k}`)
  }
  if (!(c.bandwidthBytesPerS >= 0) || !(c.maxBandwidthBytes >= 0)) throw new ConfigError('migration bandwidths must be >= 0')
  if (typeof c.maxDiskCopySeconds !== 'number' || !(c.maxDiskCopySeconds > 0)) throw new ConfigError(`migration.maxDiskCopySeconds must be a positive number (got ${String(c.maxDiskCopySeconds)})`, 'migration.maxDiskCopySeconds')
  if (typeof c.memOvercommitRatio !== 'number' || !(c.memOvercommitRatio >= 1 && c.memOvercommitRatio <= 4)) {
    throw new ConfigError(`migration.memOvercommitRatio must be between 1 and 4 (got ${String(c.memOvercommitRatio)})`, 'migration.memOvercommitRatio')
  }
  if (!AUTOMATION_LEVELS.includes(c.automation)) throw new ConfigError(`migration.automation must be one of ${AUTOMATION_LEVELS.join(', ')} (got ${String(c.automation)})`, 'migration.automation')
  if (c.onStall !== 'abort' && c.onStall !== 'postcopy') throw new ConfigError(`migration.onStall must be abort or postcopy (got ${String(c.onStall)})`, 'migration.onStall')
  if (c.leaseTicks <= 2 * c.pollTicks) throw new ConfigError('migration.leaseTicks must be > 2 * pollTicks (progress renews the lease)', 'migration.leaseTicks')
  return c
}
