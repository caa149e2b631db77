/**
 * Judging guests from outside the agents, for tests with real agent processes and QEMU: which
 * hosts run a copy of a VM (its QEMU process is alive and its guest's serial heartbeat grows),
 * how many copies ever ran at once (sampled every 20 ms), and network cuts of a host's loopback
 * address with iptables (root only).
 */
import { execFileSync } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import { sleep } from '../lib/wait.js'

export class GuestWatch {
  /** The most copies alive at once since start(). */
  maxConcurrent = 0
  private timer: NodeJS.Timeout | null = null

  /** `runDir(h)`: host h's QEMU run directory (driver.qemu.runDir); the VM's files are under runDir/vm. */
  constructor (readonly hosts: readonly string[], readonly vm: string, private readonly runDir: (h: string) => string) {}

  pidFile (h: string): string { return path.join(this.runDir(h), this.vm, 'qemu.pid') }
  serial (h: string): string { return path.join(this.runDir(h), this.vm, 'serial.log') }

  /** The pid of host h's QEMU for the VM if it is alive (a zombie nobody reaped counts as dead). */
  pid (h: string): number | null {
    try {
      const pid = Number(fs.readFileSync(this.pidFile(h), 'utf8').trim())
      const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8')
      return /^\S+ \(.*\) [^Z]/s.test(stat) && stat.includes('qemu') ? pid : null
    } catch { return null }
  }

  /** Heartbeat lines the guest printed on host h's serial console. */
  heartbeats (h: string): number {
    try { return (fs.readFileSync(this.serial(h), 'latin1').match(/^hb \d+ /gm) ?? []).length } catch { return 0 }
  }

  /** Hosts whose QEMU runs and whose guest prints heartbeats (the log grows over 800 ms). */
  async running (): Promise<string[]> {
    const before = new Map(this.hosts.filter(h => this.pid(h) !== null).map(h => [h, this.heartbeats(h)]))
    await sleep(800)
    return [...before].filter(([h, n]) => this.pid(h) !== null && this.heartbeats(h) > n).map(([h]) => h)
  }

  /** Samples every 20 ms how many copies are alive at once (a restart overlapping the old copy shows as 2). */
  start (): void {
    this.timer ??= setInterval(() => { this.maxConcurrent = Math.max(this.maxConcurrent, this.hosts.filter(h => this.pid(h) !== null).length) }, 20)
  }

  stop (): void {
    if (this.timer !== null) clearInterval(this.timer)
    this.timer = null
  }

  /** Kills every copy (teardown). */
  killAll (): void {
    for (const h of this.hosts) { const pid = this.pid(h); if (pid !== null) try { process.kill(pid, 'SIGKILL') } catch { /* gone */ } }
  }
}

/** True when this process may cut loopback addresses (root and a working iptables). */
export function canCut (): boolean {
  if (process.getuid?.() !== 0) return false
  try { execFileSync('iptables', ['-L', '-n'], { stdio: 'ignore' }); return true } catch { return false }
}

/** Cuts hosts off by their loopback address (UDP both ways: the mesh runs over UDP) and heals them. */
export class Cuts {
  private readonly rules: string[][] = []

  cut (ip: string): void {
    for (const dir of ['-s', '-d']) {
      const r = ['INPUT', dir, ip, '-p', 'udp', '-j', 'DROP']
      execFileSync('iptables', ['-I', ...r])
      this.rules.push(r)
    }
  }

  heal (): void { for (const r of this.rules.splice(0)) { try { execFileSync('iptables', ['-D', ...r]) } catch { /* gone */ } } }
}
