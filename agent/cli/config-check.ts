/**
 * `starling config check FILE`: validates a configuration as the agent would at start-up, and
 * starts nothing (no state directory, key, socket or network is touched). Prints `ok` and a
 * summary, with the digests of the settings that must agree cluster-wide
 * (agent/cluster-settings.ts): run it on every host and compare them. A bad file prints the error
 * naming the field and exits 2, as the agent does. `--effective` prints instead the whole
 * configuration the agent would run with, every default filled in (the cluster secret hidden):
 * the one place where all the modules' defaults show together.
 */
import { parseArgs } from 'node:util'
import { UsageError } from './client.js'
import type { AgentConfig } from '../config.js'
import { clusterSettings, settingsFingerprint } from '../cluster-settings.js'

export const CONFIG_USAGE = 'starling config check FILE [--effective]'

/** The summary `config check` prints for a valid configuration. */
export function configSummary (file: string, c: AgentConfig): string {
  const settings = clusterSettings(c)
  const driverVms = c.driver.kind === 'qemu' ? c.driver.qemu.vms.length : c.driver.kind === 'sim' ? c.driver.vms.length : null
  const lines = [
    `ok: ${file}`,
    `  cluster "${c.cluster.name}": ${c.cluster.members.length} members (${c.cluster.members.map(m => m.name).join(', ')})`,
    `  this host: ${c.node.name}, mesh ${c.node.listen}, API ${c.node.apiListen}, state ${c.node.stateDir}`,
    `  driver ${c.driver.kind}${driverVms === null ? '' : `, ${driverVms} VM(s) at first boot`}; sampler ${c.sampler.kind}; log ${c.log.level}`,
    `  HA: ${c.ha.enabled ? `${c.ha.vms.length} protected VM(s), ${c.ha.armed ? 'armed' : 'disarmed'} at first start, fence delay ${c.ha.config.fenceDelayTicks} ticks of ${c.core.tickMs} ms` : 'no ha section (takes no part)'}` +
      `; VIPs: ${c.vips.list.length}; replication: ${c.replication.enabled ? c.replication.params.mode : 'off'}`,
    `  cluster-wide settings ${settingsFingerprint(settings).slice(0, 16)} (the same on every member):`,
    ...settings.map(s => `    ${s.field.padEnd(16)} ${Buffer.from(s.digest).toString('hex').slice(0, 16)}  ${s.refuse ? 'a member that differs is refused' : 'a member that differs is flagged'}`)
  ]
  return lines.join('\n')
}

export async function configCommand (args: string[]): Promise<number> {
  const { positionals, values } = parseArgs({ args, allowPositionals: true, options: { effective: { type: 'boolean' } } })
  const [sub, file, ...rest] = positionals
  if (sub !== 'check' || file === undefined || rest.length > 0) throw new UsageError(`usage: ${CONFIG_USAGE}`)
  const { loadConfigFile } = await import('../main.js')
  const config = await loadConfigFile(file) // a ConfigError names the field; the command exits 2
  if (values.effective === true) {
    process.stdout.write(JSON.stringify({ ...config, cluster: { ...config.cluster, secret: '(hidden)' } }, null, 2) + '\n')
    return 0
  }
  process.stdout.write(configSummary(file, config) + '\n')
  return 0
}
