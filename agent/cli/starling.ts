#!/usr/bin/env node
/**
 * The `starling` command.
 *   starling agent --config FILE          the daemon (systemd runs this)
 *   starling config check FILE            validate a configuration without starting anything (agent/cli/config-check.ts)
 *   starling status [--json]              the whole cluster as a tree, as the local agent sees it
 *   starling members [--json]             the member list
 *   starling members add|remove, rules list|add|remove, config show|history|automation
 *                                         the replicated cluster configuration (agent/cli/cluster-config.ts)
 *   starling keygen --state-dir DIR       create (or read) this host's key pair, print the public key
 *   starling demo [--hosts N]             a local cluster of agent processes on loopback, live
 *   starling sim [...]                    the trace-driven simulator (see `starling sim --help`)
 *   starling migrate VM [--to HOST] [--with-storage]   move a VM (the cluster picks the target without
 *                                         --to; its disks move too when local, or with --with-storage); waits for the outcome
 *   starling migrations [--json]          migrations in flight and recent, with progress
 *   starling plan [--json] | plan apply   what the cluster would do now and why; carry it out (agent/cli/plan.ts)
 *   starling drain HOST                   spread HOST's VMs over the cluster; waits and prints each VM's outcome
 *   starling replicate VM [--to HOST] | --retire VM   a replica of a stateless VM; starling replicas
 *   starling vips [--json]                virtual IPs: owner and last announcement (agent/cli/vips.ts)
 *   starling ha status|arm|disarm|maintenance  high availability (agent/cli/ha.ts)
 *   starling memory [--json]              this host's memory, balloons and guests (agent/cli/memory.ts)
 * Reading commands find the agent from --api ip:port, or from --config FILE (node.apiListen),
 * or at 127.0.0.1:7946. Commands that change anything go through the control socket (--socket,
 * --config's node.apiSocket, or /run/starling/control.sock: root or group starling), or over
 * TCP with --api and a bearer token (--token-file, STARLING_API_TOKEN).
 * Exit codes: 0 ok, 1 failure, 2 bad usage or configuration.
 */
import { parseArgs } from 'node:util'
import { renderMembers, renderStatusTree } from './render.js'
import { apiAddress, apiTarget, callApi, fetchStatus, TARGET_OPTIONS, UsageError, type ApiTarget } from './client.js'

const USAGE = `usage: starling <command> [options]
commands:
  agent --config FILE        run the agent daemon
  fence-setup --config FILE  as root, before the agent: load softdog when there is no watchdog device, give it to the agent
  config check FILE [--effective]  validate a configuration without starting anything; prints ok and a summary,
                             or with --effective the whole configuration with every default filled in
  status [--json]            show the cluster as a tree (hosts, load now and forecast, VMs)
  members [--json]           show the members
  members add NAME KEY ADDRESS | members remove NAME [--force]
                             change the cluster's members, agreed by a majority, live (no restart)
  rules list [--json] | rules add vm-vm KIND VM,VM[,...] [--hard] [--weight W]
        | rules add vm-host KIND VM HOST[,...] [--hard] | rules remove N
                             the placement rules (KIND: affinity or anti-affinity), agreed like members
  config show|history [--json]  the agreed cluster configuration and its versions
  config automation manual|partial|full  the balancing automation level, agreed like members
  keygen --state-dir DIR     create or read this host's key pair and print its public key
  demo [--hosts N] [--duration S] [--scenario NAME]  a local cluster on loopback with simulated VMs playing a scenario (all, balance, consolidate, failover, none)
  sim [--help]               run the trace-driven simulator
  migrate VM [--to HOST] [--with-storage] [--no-wait] [--timeout S]  move a VM; waits until it is committed or aborted
                             (its local disks move with it; --with-storage moves its disks even when not known local)
  migrations [--json]        migrations this host takes part in (in flight and recent)
  plan [--json]              what the cluster's hosts would do now, step by step: VM, source, target, why,
                             predicted CPU before and after, cost, rating, steps that must come first
  plan apply [--max-steps N] [--step K] [--timeout S]  carry the plan's steps out through the normal protocol;
                             stops at a step that did not go as planned; Ctrl-C finishes the step under way
  drain HOST [--no-wait] [--timeout S]  spread HOST's VMs over the cluster; follows it and prints, per VM, what
                             moved and why a VM found no target
  replicate VM [--to HOST]   start a replica of a stateless VM that runs on this host (its VIP's connections are split)
  replicate --retire VM      stop splitting and stop the replica
  replicas [--json]          replicas of this host's VMs, and those it hosts
  vips [--json]              virtual IPs: each one's owner and last announcement
  vips move VIP HOST         move a group VIP to HOST (its owner hands it over)
  vips --release-local --config FILE  remove this host's VIP addresses (the unit's stop hook)
  ha status [--json]         high availability: quorum, fence, fenced hosts, restarts pending and done
  ha disarm | ha arm         stop / resume failing over (network maintenance), cluster-wide
  ha maintenance HOST on|off keep HOST out of failover (not restarted elsewhere, not a target)
  ha confirm-down HOST       HOST (which had no fence) is powered off: restart its HA VMs elsewhere
  ha protect VM [--priority N] [--order N] [--fence-policy stop|pause] [--kernel F [--initrd F] [--append S] | --image F]
                             protect a running VM from now on (home: where it runs), agreed like rules, live
  ha unprotect VM            stop protecting it (a running copy keeps running)
  memory [--json]            this host's memory: physical, committed, ballooned, KSM saving, pressure; per VM
                             its maximum, balloon, the guest's free memory and the age of its statistics
options:
  --api IP:PORT              the agent's TCP API address (default from --config, else 127.0.0.1:7946)
  --config FILE              read node.apiListen, node.apiSocket and node.apiTokenFile from this configuration
  --socket PATH              the control socket for changes (default from --config, else /run/starling/control.sock;
                             root or the socket's group, starling)
  --token-file FILE          with --api: the bearer token that allows changes over TCP (or STARLING_API_TOKEN)
  --json                     machine-readable output`

async function readCommand (cmd: 'status' | 'members', args: string[]): Promise<number> {
  const { values } = parseArgs({ args, options: { ...TARGET_OPTIONS, json: { type: 'boolean' } } })
  const s = await fetchStatus(apiAddress(values))
  if (values.json === true) {
    process.stdout.write(JSON.stringify(cmd === 'status' ? s : s.members, null, 2) + '\n')
  } else {
    process.stdout.write((cmd === 'status' ? renderStatusTree(s) : renderMembers(s)) + '\n')
    if (cmd === 'status') {
      // The pending plan, in one line (best effort: an agent without GET /v1/plan says nothing).
      try {
        const p = (await callApi(apiAddress(values), '/v1/plan')) as { steps: Array<{ vm: string, fromName: string, toName: string }> }
        process.stdout.write(p.steps.length === 0
          ? 'plan: no moves pending\n'
          : `plan: ${p.steps.length} move(s) pending (${p.steps.slice(0, 3).map(x => `${x.vm} ${x.fromName}->${x.toName}`).join(', ')}${p.steps.length > 3 ? ', ...' : ''}): starling plan\n`)
      } catch { /* older agent */ }
    }
  }
  return 0
}

interface MigrationRow {
  id: string, vm: string, role: string, source: string, target: string, state: string, cause: string, reason: string,
  createdTick: number, durationTicks: number, mode: string | null,
  progress: {
    status: string, transferredBytes: number, remainingBytes: number, totalTimeMs: number, downtimeMs: number | null
    disk?: { ready: boolean, totalBytes: number, doneBytes: number, sentBytes: number, error: string | null }
  } | null
  storage?: boolean
  diskPhase?: string
}

interface KeptDiskRow { vm: string, file: string, allocatedBytes: number, sizeBytes: number, leftAtMs: number }

async function listMigrations (addr: ApiTarget | string): Promise<{ migrations: MigrationRow[], keptDisks: KeptDiskRow[] }> {
  const r = (await callApi(addr, '/v1/migrations')) as { migrations: MigrationRow[], keptDisks?: KeptDiskRow[] }
  return { migrations: r.migrations, keptDisks: r.keptDisks ?? [] }
}

/**
 * The images VMs that moved away with their disks left on this host (the libvirt driver's
 * `.departed` copies): never booted, kept as a fallback until the VM returns or the operator
 * deletes them.
 */
export function renderKeptDisks (rows: KeptDiskRow[], nowMs: number): string {
  if (rows.length === 0) return ''
  const mib = (b: number): string => `${(b / 1048576).toFixed(1)} MiB`
  const age = (ms: number): string => ms < 3_600_000 ? `${Math.max(0, Math.round(ms / 60_000))} min ago` : ms < 172_800_000 ? `${Math.round(ms / 3_600_000)} h ago` : `${Math.round(ms / 86_400_000)} d ago`
  const lines = ['', 'Disk copies kept here (the disk as of the VM\'s departure, never booted; delete with rm when not wanted):', 'VM            LEFT           ON DISK      FILE']
  for (const r of rows) lines.push(`${r.vm.padEnd(13)} ${age(nowMs - r.leftAtMs).padEnd(14)} ${mib(r.allocatedBytes).padEnd(12)} ${r.file}`)
  return lines.join('\n')
}

function renderMigrations (rows: MigrationRow[]): string {
  if (rows.length === 0) return 'no migrations'
  const mib = (b: number): string => `${Math.round(b / 1048576)} MiB`
  const lines = ['ID                 VM            ROLE    STATE       PEER      PROGRESS                    REASON']
  for (const r of rows) {
    const peer = (r.role === 'source' ? r.target : r.source).slice(0, 8)
    const p = r.progress
    const d = p?.disk
    const disk = d === undefined ? '' : `disk ${mib(d.doneBytes)}/${mib(d.totalBytes)} copied (${mib(d.sentBytes)} sent${d.ready ? ', ready' : ''}); `
    const mem = p === null ? '' : r.diskPhase === 'mirroring' ? 'memory waits' : `memory ${p.status} ${mib(p.transferredBytes)} sent, ${mib(p.remainingBytes)} left${p.downtimeMs !== null ? `, ${p.downtimeMs} ms down` : ''}`
    const prog = p === null ? (r.storage === true ? 'with storage' : '-') : `${disk}${mem}`
    lines.push(`${r.id.padEnd(18)} ${r.vm.padEnd(13)} ${r.role.padEnd(7)} ${r.state.padEnd(11)} ${peer.padEnd(9)} ${prog.padEnd(27)} ${r.reason}`)
  }
  return lines.join('\n')
}

async function migrateCommand (args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({ args, allowPositionals: true, options: { ...TARGET_OPTIONS, to: { type: 'string' }, 'with-storage': { type: 'boolean' }, 'no-wait': { type: 'boolean' }, timeout: { type: 'string' }, json: { type: 'boolean' } } })
  const vm = positionals[0]
  if (vm === undefined || positionals.length > 1) throw new UsageError('starling migrate needs exactly one VM')
  const addr = apiTarget(values)
  const ask = async (): Promise<void> => { await callApi(addr, '/v1/migrate', { vm, ...(values.to !== undefined ? { to: values.to } : {}), ...(values['with-storage'] === true ? { withStorage: true } : {}) }) }
  const timeoutMs = 1000 * Number(values.timeout ?? 300)
  if (values['no-wait'] !== true) {
    // A VM on another host: this agent forwards the request there, and its journal will not show
    // the move; follow it by the hosts' reports instead, and ask again if it does not start.
    const st = await fetchStatus(addr.addr)
    const from = st.members.find(m => m.state === 'alive' && m.report?.vms.some(v => v.id === vm && v.state === 'running') === true)?.name
    if (from !== undefined && from !== st.self.name) {
      const { followMove } = await import('./plan.js')
      process.stdout.write(`migration of ${vm} requested from ${from}, which runs it\n`)
      const r = await followMove(ask, addr.addr, vm, from, values.to ?? null, timeoutMs, line => { process.stdout.write(`${line}\n`) })
      if (r.kind === 'done') { process.stdout.write(`${vm} runs on ${r.host}\n`); return 0 }
      if (r.kind === 'timeout') { process.stderr.write(`starling: ${vm} is ${r.host === undefined ? 'not running' : `on ${r.host}`} after ${timeoutMs / 1000} s (see starling migrations on ${from})\n`); return 1 }
      process.stderr.write(`starling: the move of ${vm} was ${r.text}\n`)
      return 1
    }
  }
  const before = new Set((await listMigrations(addr)).migrations.map(r => r.id))
  await ask()
  if (values['no-wait'] === true) { process.stdout.write(`migration of ${vm} requested\n`); return 0 }
  const deadline = Date.now() + timeoutMs
  let seen: MigrationRow | undefined
  while (Date.now() < deadline) {
    seen = (await listMigrations(addr)).migrations.find(r => r.vm === vm && !before.has(r.id))
    if (seen !== undefined && (seen.state === 'committed' || seen.state === 'aborted')) break
    if (seen === undefined && Date.now() > deadline - timeoutMs + 5000) {
      process.stdout.write(`migration of ${vm} requested (not started by this host: forwarded or refused; see the agents' logs)\n`)
      return 0
    }
    await new Promise(resolve => setTimeout(resolve, 200))
  }
  if (seen === undefined) { process.stderr.write(`starling: no migration of ${vm} started\n`); return 1 }
  if (values.json === true) process.stdout.write(JSON.stringify(seen) + '\n')
  else process.stdout.write(`migration ${seen.id} of ${vm}: ${seen.state}${seen.reason !== '' ? ` (${seen.reason})` : ''}\n`)
  return seen.state === 'committed' ? 0 : 1
}

export async function main (argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv
  try {
    switch (cmd) {
      case 'agent': {
        const { values } = parseArgs({ args: rest, options: { config: { type: 'string' } } })
        if (values.config === undefined) throw new UsageError('starling agent needs --config FILE')
        const { runAgent } = await import('../main.js')
        return await runAgent(values.config)
      }
      case 'status':
        return await readCommand(cmd, rest)
      case 'members': {
        if (rest[0] === 'add' || rest[0] === 'remove') {
          const { configCliCommand } = await import('./cluster-config.js')
          return await configCliCommand('members', rest)
        }
        return await readCommand(cmd, rest)
      }
      case 'rules': {
        const { configCliCommand } = await import('./cluster-config.js')
        return await configCliCommand('rules', rest)
      }
      case 'fence-setup': {
        // Run as root before the agent (the unit's ExecStartPre=+): the agent, a system user,
        // can neither load modules nor chown the device.
        const { values } = parseArgs({ args: rest, options: { config: { type: 'string' } } })
        if (values.config === undefined) throw new UsageError('starling fence-setup needs --config FILE')
        const { loadConfigFile } = await import('../main.js')
        const config = await loadConfigFile(values.config)
        if (!config.ha.enabled) { process.stdout.write('fence-setup: no ha section: this host takes no part in HA, no watchdog needed\n'); return 0 }
        const { prepareWatchdogDevice } = await import('../adapters/watchdog-device.js')
        const { resolveGroup } = await import('../adapters/api-credentials.js')
        let gid: number | undefined
        try { gid = resolveGroup(config.node.apiSocketGroup ?? 'starling') } catch { gid = undefined }
        const r = prepareWatchdogDevice({
          device: config.ha.watchdog.device,
          loadSoftdog: config.ha.watchdog.loadSoftdog,
          softMarginSec: Math.floor(config.ha.config.watchdogTicks * config.core.tickMs / 1000),
          ...(gid !== undefined ? { gid } : {})
        })
        for (const d of r.did) process.stdout.write(`fence-setup: ${d}\n`)
        // Never stops the start: the agent then runs unfenced, protects no VM and says why.
        if (!r.ok) process.stderr.write(`fence-setup: NO FENCE: ${r.problem ?? ''}\n`)
        return 0
      }
      case 'keygen': {
        const { values } = parseArgs({ args: rest, options: { 'state-dir': { type: 'string' }, json: { type: 'boolean' } } })
        const dir = values['state-dir']
        if (dir === undefined) throw new UsageError('starling keygen needs --state-dir DIR')
        const { identityFile } = await import('../main.js')
        const { loadOrCreateKeyPair } = await import('../adapters/identity.js')
        const kp = await loadOrCreateKeyPair(identityFile(dir))
        const hex = Buffer.from(kp.publicKey).toString('hex')
        process.stdout.write(values.json === true ? JSON.stringify({ publicKey: hex }) + '\n' : hex + '\n')
        return 0
      }
      case 'demo': {
        const { runDemo } = await import('./demo.js')
        return await runDemo(rest)
      }
      case 'config': {
        if (rest[0] === 'show' || rest[0] === 'history' || rest[0] === 'automation') {
          const { configCliCommand } = await import('./cluster-config.js')
          return await configCliCommand('config', rest)
        }
        const { configCommand } = await import('./config-check.js')
        return await configCommand(rest)
      }
      case 'sim': {
        const { runSimCli } = await import('./sim.js')
        return await runSimCli(rest)
      }
      case 'migrate':
        return await migrateCommand(rest)
      case 'migrations': {
        const { values } = parseArgs({ args: rest, options: { ...TARGET_OPTIONS, json: { type: 'boolean' } } })
        const { migrations, keptDisks } = await listMigrations(apiAddress(values))
        // --json stays the list of migrations; the kept copies are in GET /v1/migrations (keptDisks).
        process.stdout.write((values.json === true ? JSON.stringify(migrations, null, 2) : renderMigrations(migrations) + renderKeptDisks(keptDisks, Date.now())) + '\n')
        return 0
      }
      case 'plan': {
        const { planCommand } = await import('./plan.js')
        return await planCommand(rest)
      }
      case 'vips': {
        const { vipsCommand } = await import('./vips.js')
        return await vipsCommand(rest)
      }
      case 'ha': {
        const { haCommand } = await import('./ha.js')
        return await haCommand(rest)
      }
      case 'memory': {
        const { memoryCommand } = await import('./memory.js')
        return await memoryCommand(rest)
      }
      case 'replicate': {
        const { values, positionals } = parseArgs({ args: rest, allowPositionals: true, options: { ...TARGET_OPTIONS, to: { type: 'string' }, retire: { type: 'boolean' }, timeout: { type: 'string' } } })
        const vm = positionals[0]
        if (vm === undefined || positionals.length > 1) throw new UsageError('starling replicate needs exactly one VM')
        if (values.retire === true && values.to !== undefined) throw new UsageError('--retire takes no --to')
        const addr = apiTarget(values)
        const mine = async (): Promise<{ state: string, host: string } | undefined> =>
          ((await callApi(addr, '/v1/replicas')) as { replicas: Array<{ vm: string, role: string, state: string, host: string }> }).replicas.find(r => r.vm === vm && r.role === 'origin')
        await callApi(addr, '/v1/replicate', { vm, ...(values.to !== undefined ? { to: values.to } : {}), retire: values.retire === true })
        // Wait for the outcome: running (or gone, for a retirement); a request the core refused
        // leaves no record (the reason is in the agent's log).
        const deadline = Date.now() + 1000 * Number(values.timeout ?? 60)
        let seen = false
        while (Date.now() < deadline) {
          const r = await mine()
          if (values.retire === true) {
            if (r === undefined) { process.stdout.write(`replica of ${vm} retired\n`); return 0 }
          } else if (r !== undefined) {
            seen = true
            if (r.state === 'running') { process.stdout.write(`replica of ${vm} runs on ${r.host.slice(0, 8)}\n`); return 0 }
          } else if (seen || Date.now() > deadline - 1000 * Number(values.timeout ?? 60) + 3000) {
            process.stderr.write(`starling: no replica of ${vm} ${seen ? 'runs (refused by its host or failed to boot)' : 'was started (refused: see the agent\'s log)'}\n`)
            return 1
          }
          await new Promise(resolve => setTimeout(resolve, 200))
        }
        process.stderr.write(`starling: the ${values.retire === true ? 'retirement' : 'replica'} of ${vm} did not complete in time\n`)
        return 1
      }
      case 'replicas': {
        const { values } = parseArgs({ args: rest, options: { ...TARGET_OPTIONS, json: { type: 'boolean' } } })
        const rows = ((await callApi(apiAddress(values), '/v1/replicas')) as { replicas: Array<{ id: string, vm: string, role: string, origin: string, host: string, state: string, reason: string }> }).replicas
        if (values.json === true) process.stdout.write(JSON.stringify(rows, null, 2) + '\n')
        else if (rows.length === 0) process.stdout.write('no replicas\n')
        else {
          const lines = ['REPLICA              VM           ROLE     ORIGIN    HOST      STATE      REASON']
          for (const r of rows) lines.push(`${r.id.padEnd(20)} ${r.vm.padEnd(12)} ${r.role.padEnd(8)} ${r.origin.slice(0, 8).padEnd(9)} ${r.host.slice(0, 8).padEnd(9)} ${r.state.padEnd(10)} ${r.reason}`)
          process.stdout.write(lines.join('\n') + '\n')
        }
        return 0
      }
      case 'drain': {
        const { drainCommand } = await import('./drain.js')
        return await drainCommand(rest)
      }
      case undefined:
      case 'help':
      case '--help':
      case '-h':
        process.stdout.write(USAGE + '\n')
        return cmd === undefined ? 2 : 0
      default:
        throw new UsageError(`unknown command "${cmd}"`)
    }
  } catch (err) {
    const e = err as Error & { code?: string }
    if (e.name === 'UsageError' || e.code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION' || e.code === 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE' || e.code === 'ERR_PARSE_ARGS_UNEXPECTED_POSITIONAL') {
      process.stderr.write(`starling: ${e.message}\n${USAGE}\n`)
      return 2
    }
    if (e.name === 'ConfigError' || e.code === 'CONFIG_INVALID') {
      process.stderr.write(`starling: ${e.message}\n`)
      return 2
    }
    process.stderr.write(`starling: ${e.message}\n`)
    return 1
  }
}

const code = await main(process.argv.slice(2))
// The agent and the demo keep running until signalled; they resolve when done.
process.exitCode = code
