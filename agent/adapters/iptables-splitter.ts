/**
 * Splits the new TCP connections to a replicated VM's virtual IPs between the VM itself and its
 * replicas, on the host that carries the VIPs: iptables NAT, so the kernel does the data path.
 *
 *   nat PREROUTING  -> STARLING-SPLIT:  -d VIP -p tcp -m statistic --mode random
 *                                       --probability 1/(k+1-i) -j DNAT --to-destination R_i
 *   nat POSTROUTING -> STARLING-SNAT:   -d R_i -p tcp -m conntrack --ctstate DNAT
 *                                       --ctorigdst VIP -j MASQUERADE
 *
 * With k replicas, rule i (0-based) takes 1/(k+1-i) of what reaches it, so each of the k+1 copies
 * gets 1/(k+1) of the connections; what no rule takes goes to the VM here. Only the first packet
 * of a connection passes the nat table (conntrack keeps the choice), so a connection stays with
 * the copy it started on: when the split ends, new connections go to the VM here while those
 * already on the replica go on until the replica stops (which is why replication is for
 * stateless services). The SNAT makes a replica answer through this host (the client talks to
 * the VIP, not to R_i).
 * Forwarding must be on (net.ipv4.ip_forward=1) on the hosts that carry such VIPs: the splitter
 * does not change a host-wide setting behind the operator's back; it says so loudly instead.
 *
 * Every change rebuilds both chains from the wanted state (flush, then add), in one
 * `iptables-restore --noflush` transaction, so a half-applied split never stays. At start-up and
 * at stop the chains are emptied: a restarted agent splits again only once its core says so.
 * `netns` runs everything in a network namespace (tests).
 */
import { spawn } from 'node:child_process'
import { readFile } from 'node:fs/promises'
import type { Logger } from '../ports/logger.js'

export interface SplitTarget {
  /** The VIP's address (no prefix). */
  vip: string
  /** Where the replicas answer (their hosts' service addresses). */
  backends: string[]
}

export interface IptablesSplitterInit {
  netns?: string
  /** @default 'iptables-restore' */
  restoreCommand?: string
  timeoutMs?: number
}

const SPLIT = 'STARLING-SPLIT'
const SNAT = 'STARLING-SNAT'
const IPV4 = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/

export function isIpv4 (s: string): boolean {
  const m = IPV4.exec(s)
  return m !== null && m.slice(1).every(x => Number(x) <= 255)
}

/** The iptables-restore input that makes the two chains hold exactly `targets` (exported for tests). */
export function splitRules (targets: readonly SplitTarget[]): string {
  const lines = ['*nat', `:${SPLIT} - [0:0]`, `:${SNAT} - [0:0]`, `-F ${SPLIT}`, `-F ${SNAT}`]
  for (const t of targets) {
    if (!isIpv4(t.vip)) throw new Error(`not an IPv4 address: ${t.vip}`)
    const k = t.backends.length
    t.backends.forEach((b, i) => {
      if (!isIpv4(b)) throw new Error(`not an IPv4 address: ${b}`)
      const p = (1 / (k + 1 - i)).toFixed(8)
      lines.push(`-A ${SPLIT} -d ${t.vip}/32 -p tcp -m statistic --mode random --probability ${p} -j DNAT --to-destination ${b}`)
      lines.push(`-A ${SNAT} -d ${b}/32 -p tcp -m conntrack --ctstate DNAT --ctorigdst ${t.vip} -j MASQUERADE`)
    })
  }
  lines.push('COMMIT', '')
  return lines.join('\n')
}

export class IptablesSplitter {
  private chain: Promise<void> = Promise.resolve()
  private hooked = false
  private readonly log: Logger

  constructor (private readonly init: IptablesSplitterInit, logger: Logger) {
    this.log = logger.forComponent('agent:split')
  }

  /** Make the chains hold exactly `targets` (queued: calls apply in order). Never rejects. */
  async apply (targets: readonly SplitTarget[]): Promise<boolean> {
    let ok = false
    const run = async (): Promise<void> => {
      try {
        if (!this.hooked) { await this.hook(); this.hooked = true }
        await this.exec([this.init.restoreCommand ?? 'iptables-restore', '--noflush'], splitRules(targets))
        ok = true
        if (targets.some(t => t.backends.length > 0) && !(await this.forwarding())) {
          this.log.error('net.ipv4.ip_forward is 0 on this host: connections split to replicas on other hosts cannot be forwarded (set it to 1 on hosts that carry replicated VMs\' VIPs)')
        }
      } catch (err) {
        this.log.error(`could not apply the connection split: ${err instanceof Error ? err.message : String(err)}`)
      }
    }
    this.chain = this.chain.then(run)
    await this.chain
    return ok
  }

  /** Empty the chains (start-up and stop). */
  async clear (): Promise<boolean> { return await this.apply([]) }

  /** Jumps from PREROUTING and POSTROUTING to our chains, once (idempotent: -C before -I). */
  private async hook (): Promise<void> {
    await this.exec([this.init.restoreCommand ?? 'iptables-restore', '--noflush'], ['*nat', `:${SPLIT} - [0:0]`, `:${SNAT} - [0:0]`, 'COMMIT', ''].join('\n'))
    for (const [parent, chain] of [['PREROUTING', SPLIT], ['POSTROUTING', SNAT]] as const) {
      try {
        await this.exec(['iptables', '-t', 'nat', '-C', parent, '-j', chain], '')
      } catch {
        await this.exec(['iptables', '-t', 'nat', '-I', parent, '1', '-j', chain], '')
      }
    }
  }

  private async forwarding (): Promise<boolean> {
    if (this.init.netns !== undefined) {
      try { return (await this.exec(['sysctl', '-n', 'net.ipv4.ip_forward'], '')).trim() === '1' } catch { return false }
    }
    try { return (await readFile('/proc/sys/net/ipv4/ip_forward', 'utf8')).trim() === '1' } catch { return false }
  }

  private async exec (argv: string[], input: string): Promise<string> {
    const full = this.init.netns !== undefined ? ['ip', 'netns', 'exec', this.init.netns, ...argv] : argv
    return await new Promise((resolve, reject) => {
      const child = spawn(full[0] as string, full.slice(1), { stdio: ['pipe', 'pipe', 'pipe'], timeout: this.init.timeoutMs ?? 5000, killSignal: 'SIGKILL' })
      let out = ''
      let err = ''
      child.stdout.on('data', (d: Buffer) => { out += d.toString('utf8') })
      child.stderr.on('data', (d: Buffer) => { err += d.toString('utf8') })
      child.on('error', e => { reject(e) })
      child.on('close', code => {
        if (code === 0) resolve(out)
        else reject(new Error(`${full.join(' ')} exited ${String(code)}: ${err.trim()}`))
      })
      child.stdin.on('error', () => { /* the child exited early; close reports it */ })
      child.stdin.end(input)
    })
  }
}
