/**
 * The systemd unit, its sysusers entry and the example configuration (systemd/).
 *
 * Goal: the unit is one systemd accepts and has the settings the agent depends on; the example
 * configuration is valid for agent/config.ts and every field of it is documented.
 * Method: `systemd-analyze verify` (its exit code is 0 even for unknown keys or unparsable values,
 * so its output is checked too); a parse of the unit for the required keys; `systemd-sysusers
 * --root` into a temporary tree. A missing tool (Debian's systemd and util-linux packages, which
 * test/setup.sh installs) or a run without root fails the test with the reason: nothing is skipped.
 */
import t from 'tap'
import { spawnSync } from 'node:child_process'
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { AGENT_NODE_ARGS } from '../../agent/cli/agent-node-args.js'
import { validateConfig } from '../../agent/config.js'

const root = resolve(fileURLToPath(new URL('../..', import.meta.url)))
const unitFile = join(root, 'systemd', 'starling.service')
const has = (cmd: string): boolean => spawnSync(cmd, ['--version'], { stdio: 'ignore' }).status === 0

/** Sections → key → values, in order (a key may repeat, as After= and DeviceAllow= do). */
function parseUnit (text: string): Map<string, Map<string, string[]>> {
  const sections = new Map<string, Map<string, string[]>>()
  let current: Map<string, string[]> | null = null
  for (const raw of text.split('\n')) {
    const line = raw.trim()
    if (line === '' || line.startsWith('#') || line.startsWith(';')) continue
    const section = /^\[(.+)\]$/.exec(line)
    if (section !== null) {
      current = new Map()
      sections.set(section[1] as string, current)
      continue
    }
    const eq = line.indexOf('=')
    if (current === null || eq <= 0) throw new Error(`not a unit line: ${line}`)
    const key = line.slice(0, eq).trim()
    current.set(key, [...(current.get(key) ?? []), line.slice(eq + 1).trim()])
  }
  return sections
}

t.test('systemd-analyze verify accepts the unit', async t => {
  if (!has('systemd-analyze')) {
    t.fail('systemd-analyze is not installed (Debian package systemd; test/setup.sh installs it as root): the unit cannot be verified')
    return
  }
  const r = spawnSync('systemd-analyze', ['verify', unitFile], { encoding: 'utf8' })
  t.equal(r.status, 0, `exit code (stderr: ${r.stderr})`)
  const complaints = `${r.stdout}\n${r.stderr}`.split('\n').filter(l => l.includes('starling.service'))
  t.same(complaints, [], 'no warning about the unit (unknown keys, values it could not parse)')

  // The check above must be able to fail: a broken copy must produce complaints.
  const dir = await mkdtemp(join(tmpdir(), 'starling-unit-'))
  t.teardown(() => rm(dir, { recursive: true, force: true }))
  const broken = join(dir, 'starling.service')
  await writeFile(broken, (await readFile(unitFile, 'utf8')).replace('WatchdogSec=30s', 'WatchdogSec=soon').replace('Type=notify', 'Typo=notify'))
  const rb = spawnSync('systemd-analyze', ['verify', broken], { encoding: 'utf8' })
  t.match(rb.stderr, /WatchdogSec|soon/, 'a bad value is reported')
  t.match(rb.stderr, /Typo/, 'an unknown key is reported')

  const sec = spawnSync('systemd-analyze', ['security', '--offline=yes', unitFile], { encoding: 'utf8' })
  const exposure = /Overall exposure level for starling\.service: ([\d.]+ \S+)/.exec(sec.stdout)
  t.comment(`systemd-analyze security: ${exposure?.[1] ?? `not available (${sec.stderr.trim().split('\n')[0] ?? ''})`}`)
})

t.test('the unit has the settings the agent relies on', async t => {
  const unit = parseUnit(await readFile(unitFile, 'utf8'))
  const service = unit.get('Service')
  t.ok(service, '[Service] section')
  const one = (key: string): string | undefined => service?.get(key)?.at(-1)
  t.equal(one('Type'), 'notify', 'the agent sends READY=1')
  t.equal(one('NotifyAccess'), 'all', 'notifications come from the systemd-notify child process')
  t.equal(one('ExecStart'), ['/usr/bin/node', ...AGENT_NODE_ARGS, '/opt/starling/dist/agent/cli/starling.js agent --config /etc/starling/starling.json'].join(' '), 'the Node flags of agent-node-args.ts, which the demo and the tests use too')
  t.equal(one('Restart'), 'on-failure', 'assertion crashes restart the agent')
  t.ok(one('RestartSec'), 'RestartSec')
  t.match(one('WatchdogSec'), /^\d+s?$/, 'WatchdogSec')
  t.equal(one('StateDirectory'), 'starling', 'state under /var/lib/starling')
  t.equal(one('ProtectSystem'), 'strict')
  t.equal(one('User'), 'starling')
  const caps = (one('CapabilityBoundingSet') ?? '').split(/\s+/).sort()
  t.same(caps, ['CAP_NET_ADMIN', 'CAP_NET_RAW'], 'only the capabilities ip and arping need')
  t.same((one('AmbientCapabilities') ?? '').split(/\s+/).sort(), caps, 'passed on to ip and arping')
  t.ok(service?.get('DeviceAllow')?.some(v => v.startsWith('/dev/kvm')), '/dev/kvm allowed')
  t.match(one('SupplementaryGroups'), /\blibvirt\b/, 'libvirt socket group')
  t.match(one('SupplementaryGroups'), /\bkvm\b/, 'kvm group')
  t.match(one('RestrictAddressFamilies'), /AF_UNIX/, 'unix sockets: libvirt, QMP, sd_notify')
  t.match(one('RestrictAddressFamilies'), /AF_NETLINK/, 'netlink: ip')
  t.match(one('RestrictAddressFamilies'), /AF_PACKET/, 'packet: arping')
  t.not(one('MemoryDenyWriteExecute'), 'yes', 'V8 needs W+X memory')
  t.not(one('PrivateDevices'), 'yes', 'would hide /dev/kvm')
  t.equal(unit.get('Install')?.get('WantedBy')?.[0], 'multi-user.target')
})

t.test('systemd-sysusers creates the user and its groups', async t => {
  if (!has('systemd-sysusers')) {
    t.fail('systemd-sysusers is not installed (Debian package systemd; test/setup.sh installs it as root): starling.sysusers.conf cannot be checked')
    return
  }
  const dir = await mkdtemp(join(tmpdir(), 'starling-sysusers-'))
  t.teardown(() => rm(dir, { recursive: true, force: true }))
  await mkdir(join(dir, 'etc'))
  for (const f of ['passwd', 'group', 'shadow', 'gshadow']) await writeFile(join(dir, 'etc', f), '')
  const r = spawnSync('systemd-sysusers', [`--root=${dir}`, join(root, 'systemd', 'starling.sysusers.conf')], { encoding: 'utf8' })
  t.equal(r.status, 0, r.stderr)
  const passwd = await readFile(join(dir, 'etc', 'passwd'), 'utf8')
  const group = await readFile(join(dir, 'etc', 'group'), 'utf8')
  t.match(passwd, /^starling:x:\d+:\d+:Starling cluster agent:\/var\/lib\/starling:/m)
  t.match(group, /^libvirt:x:\d+:starling$/m)
  t.match(group, /^kvm:x:\d+:starling$/m)
})

t.test('the example configuration is valid and fully documented', async t => {
  const text = await readFile(join(root, 'systemd', 'starling.example.json'), 'utf8')
  const example = JSON.parse(text) as Record<string, unknown>
  const config = validateConfig(example)
  t.equal(config.node.stateDir, '/var/lib/starling', 'stateDir is the unit\'s StateDirectory')
  t.equal(config.node.name, 'hv1')
  t.equal(config.driver.vms.length, 4)
  t.same(new Set(config.driver.vms.map(v => v.pattern)), new Set(['sine', 'walk', 'spiky', 'constant']), 'one VM per synthetic pattern')

  const doc = await readFile(join(root, 'systemd', 'starling.example.md'), 'utf8')
  const keys = new Set<string>()
  const walk = (v: unknown): void => {
    if (Array.isArray(v)) { v.forEach(walk); return }
    if (typeof v === 'object' && v !== null) {
      for (const [k, x] of Object.entries(v)) { keys.add(k); walk(x) }
    }
  }
  walk(example)
  const undocumented = [...keys].filter(k => !doc.includes(`\`${k}\``) && !doc.includes(`\`${k}.`) && !doc.includes(`.${k}\``) && !doc.includes(`## ${k}`))
  t.same(undocumented, [], 'every field of the example appears in starling.example.md')
})

t.test('the unit\'s capabilities are enough for ip and arping as a non-root user', async t => {
  // No systemd as PID 1 here, so the unit cannot be started; this reproduces its credentials
  // instead: another uid, no supplementary groups, the unit's bounding and ambient capability
  // sets and no_new_privs, in a private network namespace with a veth pair of our own.
  const tools = ['unshare', 'setpriv', 'ip', 'arping'].filter(c => spawnSync('sh', ['-c', `command -v ${c}`], { stdio: 'ignore' }).status !== 0)
  const isRoot = process.getuid?.() === 0
  if (!isRoot || tools.length > 0) {
    t.fail(`the unit's capabilities cannot be checked: ${!isRoot ? 'needs root to create a network namespace' : `missing ${tools.join(', ')} (Debian packages util-linux, iproute2, iputils-arping; test/setup.sh installs them as root)`}`)
    return
  }
  const service = parseUnit(await readFile(unitFile, 'utf8')).get('Service')
  const toSetpriv = (v: string | undefined): string => ['-all', ...(v ?? '').split(/\s+/).filter(Boolean).map(c => `+${c.replace(/^CAP_/, '').toLowerCase()}`)].join(',')
  const bounding = toSetpriv(service?.get('CapabilityBoundingSet')?.at(-1))
  const ambient = toSetpriv(service?.get('AmbientCapabilities')?.at(-1))
  const asAgent = (cmd: string, caps: boolean): string =>
    `setpriv --reuid=65534 --regid=65534 --clear-groups --inh-caps=${caps ? ambient : '-all'} --ambient-caps=${caps ? ambient : '-all'} --bounding-set=${caps ? bounding : '-all'} --no-new-privs ${cmd}`
  const script = [
    'set -u',
    'ip link set lo up',
    'ip link add sl-a type veth peer name sl-b && ip link set sl-a up && ip link set sl-b up || exit 10',
    `${asAgent('ip addr add 10.99.0.1/32 dev sl-a', false)} 2>/dev/null && echo NOCAPS_ADD_OK || echo NOCAPS_ADD_DENIED`,
    `${asAgent('ip addr add 10.99.0.1/32 dev sl-a', true)} && echo ADD_OK`,
    `${asAgent('arping -U -c 1 -w 1 -I sl-a 10.99.0.1', true)} >/dev/null && echo ARPING_OK`,
    `${asAgent('ip addr del 10.99.0.1/32 dev sl-a', true)} && echo DEL_OK`
  ].join('\n')
  const r = spawnSync('unshare', ['-n', 'sh', '-c', script], { encoding: 'utf8' })
  if (r.status === 10) {
    t.fail(`the unit's capabilities cannot be checked: no veth pair can be created here (${r.stderr.trim()})`)
    return
  }
  t.comment(`bounding ${bounding}; ambient ${ambient}`)
  t.match(r.stdout, /NOCAPS_ADD_DENIED/, 'without the capabilities, ip addr add is refused (the check can fail)')
  t.match(r.stdout, /^ADD_OK$/m, 'ip addr add with the unit\'s capabilities')
  t.match(r.stdout, /ARPING_OK/, 'arping -U (gratuitous ARP) with the unit\'s capabilities')
  t.match(r.stdout, /DEL_OK/, 'ip addr del with the unit\'s capabilities')
})
