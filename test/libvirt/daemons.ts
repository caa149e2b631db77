/**
 * Test bed: several libvirtd daemons on one machine, without systemd.
 *
 * Each daemon runs in its own mount namespace (`unshare -m --propagation private`) where
 * /etc/libvirt, /run/libvirt, /var/lib/libvirt, /var/log/libvirt and /var/cache/libvirt are bind
 * mounts of private directories under one temporary directory, so the daemons share nothing but
 * the network and the rest of the file system. Each has its own host_uuid (libvirt refuses to
 * migrate "to the same host" otherwise), listens on TCP on its own port on 127.0.0.1 without
 * authentication, and gets a qemu.conf that needs no cgroups, no security driver, no per-domain
 * /dev namespace and no virtlogd, and its own migration port range.
 *
 * Clients reach daemon N at `qemu+tcp://127.0.0.1:<port>/system` (also what the daemons use
 * between them for p2p migration). stop() destroys the domains, stops libvirtd, kills any QEMU
 * left behind (from libvirt's pid files) and removes the directory; it runs on failure too, and a
 * process exit hook kills what is left if the test process dies first. libvirtd is started with
 * a parent-death signal, so it does not outlive the test process.
 *
 * Needs root, unshare and mount (util-linux), libvirtd and virsh (Debian: libvirt-daemon-system,
 * libvirt-clients, libvirt-daemon-driver-qemu). libvirtUnavailable() says what is missing.
 */
import { execFile, execFileSync, spawn, type ChildProcess } from 'node:child_process'
import { randomUUID } from 'node:crypto'
import fs from 'node:fs'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'
import { sleep } from '../lib/wait.js'
import { freePort } from '../../agent/cli/demo.js'

/**
 * The QEMU the tests' libvirt domains run (driver.libvirt.emulator): QEMU with the guest RAM
 * padded by 8 KiB, since TCG live migration in QEMU before 9.0 loses guest writes when the RAM is
 * a multiple of 256 KiB (qemu-tcg-pad says why; the QEMU driver pads by itself).
 */
export const TCG_PAD_EMULATOR = new URL('./qemu-tcg-pad', import.meta.url).pathname

export interface LibvirtDaemon {
  name: string
  /** Private directory of this daemon (etc, run, lib, log, cache, serial). */
  dir: string
  /** Connection URI, for virsh and for the other daemons. */
  uri: string
  tcpPort: number
  migrationPorts: [number, number]
  /** A directory for serial logs (outside the private mounts, same path for everyone). */
  serialDir: string
  /** libvirtd's own log. */
  logFile: string
  /** The QEMU log of a domain (libvirt writes it under the private /var/log/libvirt). */
  qemuLog (domain: string): string
  pid: number
}

export interface LibvirtBed {
  root: string
  daemons: LibvirtDaemon[]
  /** Stops everything and removes the directory. Idempotent; never throws. */
  stop (): Promise<void>
}

const BINDS = [['etc', '/etc/libvirt'], ['run', '/run/libvirt'], ['lib', '/var/lib/libvirt'], ['log', '/var/log/libvirt'], ['cache', '/var/cache/libvirt']] as const

function which (cmd: string): boolean {
  try {
    execFileSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore', env: { ...process.env, PATH: `${process.env.PATH ?? ''}:/usr/sbin:/sbin` } })
    return true
  } catch { return false }
}

/** Why libvirt daemons cannot run here, or null when they can. */
export function libvirtUnavailable (): string | null {
  if (process.platform !== 'linux') return 'not Linux'
  if (process.getuid?.() !== 0) return 'not root (libvirtd and mount namespaces need root)'
  const missing = ['libvirtd', 'virsh', 'unshare', 'mount', 'setpriv', 'qemu-system-x86_64'].filter(c => !which(c))
  if (missing.length > 0) return `missing ${missing.join(', ')} (Debian packages libvirt-daemon-system libvirt-clients libvirt-daemon-driver-qemu qemu-system-x86 util-linux)`
  return null
}

function virsh (uri: string, args: string[], timeoutMs = 10_000): Promise<{ ok: boolean, out: string, err: string }> {
  return new Promise(resolve => {
    execFile('virsh', ['-c', uri, ...args], { encoding: 'utf8', timeout: timeoutMs, killSignal: 'SIGKILL', env: { ...process.env, LC_ALL: 'C' } },
      (err, out, errOut) => resolve({ ok: err === null, out, err: errOut }))
  })
}


function alive (pid: number): boolean {
  try { process.kill(pid, 0); return true } catch { return false }
}

/** The command lines of the QEMU processes a daemon runs (from its pid files), arguments split. */
export function qemuCommandLines (d: LibvirtDaemon): string[][] {
  const out: string[][] = []
  for (const pid of qemuPids(d.dir)) {
    try { out.push(fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter(x => x !== '')) } catch { /* gone */ }
  }
  return out
}

/** QEMU pids from libvirt's pid files under a daemon's private /run/libvirt/qemu. */
function qemuPids (dir: string): number[] {
  const runQemu = path.join(dir, 'run', 'qemu')
  let names: string[] = []
  try { names = fs.readdirSync(runQemu) } catch { return [] }
  const pids: number[] = []
  for (const n of names) {
    if (!n.endsWith('.pid')) continue
    try {
      const pid = Number(fs.readFileSync(path.join(runQemu, n), 'utf8').trim())
      if (Number.isInteger(pid) && pid > 1) pids.push(pid)
    } catch { /* gone */ }
  }
  return pids
}

function tail (file: string, n = 2000): string {
  try { return fs.readFileSync(file, 'utf8').slice(-n) } catch { return '' }
}

/**
 * Starts `names.length` libvirtd daemons. On failure everything already started is stopped and
 * the error says why (with the daemon's log).
 */
/**
 * `monitorLog`: libvirtd also logs what it sends QEMU's monitor (the QMP commands, category
 * qemu.qemu_monitor at debug level) into its log file, for tests that check what QEMU was told.
 */
export async function startLibvirtDaemons (names: string[], opts: { parentDir?: string, startTimeoutMs?: number, monitorLog?: boolean } = {}): Promise<LibvirtBed> {
  const why = libvirtUnavailable()
  if (why !== null) throw new Error(`libvirt cannot run here: ${why}`)
  // Short root: QEMU's monitor socket paths (under /var/lib/libvirt) must stay below 108 bytes.
  const root = fs.mkdtempSync(path.join(opts.parentDir ?? os.tmpdir(), 'lvbed-'))
  const daemons: LibvirtDaemon[] = []
  const procs: ChildProcess[] = []
  let stopped = false

  const killAllSync = (): void => {
    for (const d of daemons) for (const pid of qemuPids(d.dir)) { try { process.kill(pid, 'SIGKILL') } catch { /* gone */ } }
    for (const p of procs) { if (p.exitCode === null && p.signalCode === null) { try { p.kill('SIGKILL') } catch { /* gone */ } } }
  }
  process.once('exit', killAllSync)

  const stop = async (): Promise<void> => {
    if (stopped) return
    stopped = true
    for (const d of daemons) {
      const list = await virsh(d.uri, ['list', '--name'], 5000)
      if (list.ok) {
        for (const dom of list.out.split('\n').map(s => s.trim()).filter(s => s !== '')) await virsh(d.uri, ['destroy', dom], 10_000)
      }
    }
    const qemu = daemons.flatMap(d => qemuPids(d.dir))
    for (const p of procs) { if (p.exitCode === null && p.signalCode === null) p.kill('SIGTERM') }
    const end = Date.now() + 5000
    while (procs.some(p => p.exitCode === null && p.signalCode === null) && Date.now() < end) await sleep(50)
    killAllSync()
    for (const pid of qemu) { try { process.kill(pid, 'SIGKILL') } catch { /* gone */ } }
    const end2 = Date.now() + 5000
    while ([...qemu].some(alive) && Date.now() < end2) await sleep(50)
    process.removeListener('exit', killAllSync)
    fs.rmSync(root, { recursive: true, force: true })
  }

  try {
    // Migration port ranges: distinct per daemon, somewhere in the dynamic range.
    const base = 49200 + Math.floor(Math.random() * 100) * 100
    for (const [i, name] of names.entries()) {
      const dir = path.join(root, name)
      for (const [sub] of BINDS) fs.mkdirSync(path.join(dir, sub), { recursive: true })
      const serialDir = path.join(dir, 'serial')
      fs.mkdirSync(serialDir, { recursive: true })
      const tcpPort = await freePort()
      const migrationPorts: [number, number] = [base + i * 50, base + i * 50 + 49]
      const logFile = path.join(dir, 'libvirtd.log')
      fs.writeFileSync(path.join(dir, 'etc', 'libvirtd.conf'), [
        'listen_tls = 0',
        'listen_tcp = 1',
        'listen_addr = "127.0.0.1"',
        `tcp_port = "${tcpPort}"`,
        'auth_tcp = "none"',
        'auth_unix_rw = "none"',
        `host_uuid = "${randomUUID()}"`,
        ...(opts.monitorLog === true ? ['log_filters = "1:qemu.qemu_monitor 3:*"', `log_outputs = "1:file:${logFile}"`] : [`log_outputs = "3:file:${logFile}"`]),
        ''
      ].join('\n'))
      fs.writeFileSync(path.join(dir, 'etc', 'qemu.conf'), [
        'user = "root"',
        'group = "root"',
        'security_driver = "none"',
        'cgroup_controllers = [ ]',
        'namespaces = [ ]',
        'stdio_handler = "file"',
        `migration_port_min = ${migrationPorts[0]}`,
        `migration_port_max = ${migrationPorts[1]}`,
        ''
      ].join('\n'))
      // In the new namespace: make the mount points (harmless if they exist), bind the private
      // directories over them, then become libvirtd.
      const binds = BINDS.map(([sub, target]) => `mkdir -p ${target} && mount --bind '${path.join(dir, sub)}' ${target}`).join(' && ')
      const script = `${binds} && exec libvirtd --listen -f /etc/libvirt/libvirtd.conf -p '${path.join(dir, 'libvirtd.pid')}'`
      const out = fs.openSync(path.join(dir, 'libvirtd.out'), 'w')
      const proc = spawn('setpriv', ['--pdeathsig', 'KILL', '--', 'unshare', '-m', '--propagation', 'private', '--', 'sh', '-c', script], {
        stdio: ['ignore', out, out],
        env: { ...process.env, PATH: `${process.env.PATH ?? ''}:/usr/sbin:/sbin`, LC_ALL: 'C' }
      })
      fs.closeSync(out)
      procs.push(proc)
      const d: LibvirtDaemon = {
        name,
        dir,
        uri: `qemu+tcp://127.0.0.1:${tcpPort}/system`,
        tcpPort,
        migrationPorts,
        serialDir,
        logFile,
        qemuLog: dom => path.join(dir, 'log', 'qemu', `${dom}.log`),
        pid: proc.pid ?? -1
      }
      daemons.push(d)
    }
    const deadline = Date.now() + (opts.startTimeoutMs ?? 30_000)
    for (const [i, d] of daemons.entries()) {
      for (;;) {
        const p = procs[i]
        if (p !== undefined && (p.exitCode !== null || p.signalCode !== null)) {
          throw new Error(`libvirtd ${d.name} exited (${String(p.exitCode ?? p.signalCode)}): ${tail(path.join(d.dir, 'libvirtd.out'))} ${tail(d.logFile)}`)
        }
        const r = await virsh(d.uri, ['uri'], 5000)
        if (r.ok) break
        if (Date.now() > deadline) throw new Error(`libvirtd ${d.name} does not answer on ${d.uri}: ${r.err.trim()}; log: ${tail(d.logFile)}`)
        await sleep(100)
      }
    }
    return { root, daemons, stop }
  } catch (err) {
    await stop()
    throw err
  }
}
