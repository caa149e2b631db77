#!/usr/bin/env node
/**
 * The `starling` command.
 *   starling agent --config FILE          the daemon (systemd runs this)
 *   starling status [--json]              the whole cluster as a tree, as the local agent sees it
 *   starling members [--json]             the member list
 *   starling keygen --state-dir DIR       create (or read) this host's key pair, print the public key
 *   starling demo [--hosts N]             a local cluster of agent processes on loopback, live
 *   starling sim [...]                    the trace-driven simulator (see `starling sim --help`)
 * Reading commands find the agent from --api ip:port, or from --config FILE (node.apiListen),
 * or at 127.0.0.1:7946. Exit codes: 0 ok, 1 failure, 2 bad usage or configuration.
 */
import { parseArgs } from 'node:util'
import { renderMembers, renderStatusTree } from './render.js'
import { apiAddress, fetchStatus, UsageError } from './client.js'

const USAGE = `usage: starling <command> [options]
commands:
  agent --config FILE        run the agent daemon
  status [--json]            show the cluster as a tree (hosts, load now and forecast, VMs)
  members [--json]           show the members
  keygen --state-dir DIR     create or read this host's key pair and print its public key
  demo [--hosts N] [--duration S]  start a local cluster on loopback with simulated VMs
  sim [--help]               run the trace-driven simulator
options for status and members:
  --api IP:PORT              the agent's API address (default from --config, else 127.0.0.1:7946)
  --config FILE              read node.apiListen from this configuration
  --json                     machine-readable output`

async function readCommand (cmd: 'status' | 'members', args: string[]): Promise<number> {
  const { values } = parseArgs({ args, options: { api: { type: 'string' }, config: { type: 'string' }, json: { type: 'boolean' } } })
  const s = await fetchStatus(apiAddress(values))
  if (values.json === true) {
    process.stdout.write(JSON.stringify(cmd === 'status' ? s : s.members, null, 2) + '\n')
  } else {
    process.stdout.write((cmd === 'status' ? renderStatusTree(s) : renderMembers(s)) + '\n')
  }
  return 0
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
      case 'members':
        return await readCommand(cmd, rest)
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
      case 'sim': {
        const { runSimCli } = await import('./sim.js')
        return await runSimCli(rest)
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
