/**
 * The Debian package (packaging/deb/build.sh, `npm run package`).
 *
 * Goal: the .deb installs, upgrades, is removed and purged as an operator expects, with no
 * network, and what it installs runs. Method: two builds made here, an older one (node_modules
 * copied and pruned) and one of package.json's version (node_modules by `npm ci --offline`),
 * installed with the real dpkg into a throwaway root (`dpkg --root` with a fresh database;
 * --force-script-chrootless runs the maintainer scripts with DPKG_ROOT instead of chrooting into
 * a root that has no shell; --force-depends because that root has no nodejs or systemd
 * package), every dpkg run in a network namespace of its own (`unshare -n`: no network at all).
 * The root's user database starts with a user at uid 997 so that the ids the scripts give are
 * checked against the root's /etc/passwd, not the host's. Needs root and dist/ (`npm run
 * build`: tsc, then the CLI's bundle).
 */
import t from 'tap'
import { spawn, spawnSync, type SpawnSyncReturns } from 'node:child_process'
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { LocalCluster } from '../integration/cluster-harness.js'
import { agentSpawnArgs } from '../../agent/cli/agent-node-args.js'

const repo = resolve(fileURLToPath(new URL('../..', import.meta.url)))
const version = (JSON.parse(readFileSync(join(repo, 'package.json'), 'utf8')) as { version: string }).version
const oldVersion = '0~old1'
const TOOLS: Array<[string, string]> = [['dpkg-deb', 'dpkg'], ['dpkg', 'dpkg'], ['dpkg-query', 'dpkg'], ['npm', 'npm'], ['unshare', 'util-linux'],
  ['systemd-analyze', 'systemd'], ['systemd-sysusers', 'systemd'], ['systemd-tmpfiles', 'systemd']]

const run = (cmd: string, args: string[], env: NodeJS.ProcessEnv = {}): SpawnSyncReturns<string> =>
  spawnSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } })
const mode = (p: string): string => (statSync(p).mode & 0o7777).toString(8)
const owner = (p: string): string => { const s = statSync(p); return `${s.uid}:${s.gid}` }

t.test('build, install, upgrade, remove and purge the .deb in a throwaway root', async t => {
  const missing = TOOLS.filter(([c]) => spawnSync('sh', ['-c', `command -v ${c}`], { stdio: 'ignore' }).status !== 0)
  if (missing.length > 0) { t.fail(`missing tools: ${missing.map(([c, p]) => `${c} (Debian package ${p})`).join(', ')}; test/setup.sh installs them`); return }
  if (process.getuid?.() !== 0) { t.fail('needs root: dpkg --root sets owners, unshare -n makes a network namespace'); return }
  if (!existsSync(join(repo, 'dist', 'agent', 'cli', 'starling.js'))) { t.fail('dist/ missing: run `npm run build` first'); return }
  t.equal(run('dpkg', ['--compare-versions', oldVersion, 'lt', version]).status, 0, `${oldVersion} is older than ${version}`)

  const tmp = mkdtempSync(join(tmpdir(), 'starling-deb-'))
  t.teardown(() => rmSync(tmp, { recursive: true, force: true }))
  const out = join(tmp, 'out')
  const build = (v: string, env: NodeJS.ProcessEnv): string => {
    const t0 = Date.now()
    const r = run('bash', [join(repo, 'packaging', 'deb', 'build.sh'), '--version', v, '--out', out], { STARLING_DEB_XZ_LEVEL: '1', ...env })
    t.equal(r.status, 0, `build ${v} in ${Date.now() - t0} ms (stderr: ${r.stderr})`)
    return r.stdout.trim()
  }
  const arch = run('dpkg', ['--print-architecture']).stdout.trim()
  const oldDeb = build(oldVersion, { STARLING_DEB_MODULES: 'copy' })
  const newDeb = build(version, {})
  t.equal(newDeb, join(out, `starling_${version}_${arch}.deb`), 'named starling_<version>_<arch>.deb')
  if (!existsSync(oldDeb) || !existsSync(newDeb)) { t.fail('a build produced no package'); return }
  t.comment(`package: ${statSync(newDeb).size} bytes; Installed-Size ${run('dpkg-deb', ['-f', newDeb, 'Installed-Size']).stdout.trim()} KiB`)
  t.same(run('dpkg-deb', ['-f', newDeb, 'Package', 'Version', 'Architecture']).stdout.trim().split('\n'),
    ['Package: starling', `Version: ${version}`, `Architecture: ${arch}`], 'control fields')
  t.equal(run('dpkg-deb', ['--ctrl-tarfile', newDeb]).status, 0)
  const conffiles = run('sh', ['-c', `dpkg-deb --ctrl-tarfile '${newDeb}' | tar -xOf - ./conffiles`]).stdout
  t.equal(conffiles, '/etc/starling/starling.json\n', 'the configuration is the one conffile')
  const listing = (deb: string): string[] => run('dpkg-deb', ['-c', deb]).stdout.split('\n').filter(Boolean).map(l => l.split(/\s+/).slice(0, 3).join(' ') + ' ' + l.split(/\s+/).slice(5).join(' ')).sort()
  const modules = (deb: string): string[] => listing(deb).filter(l => l.includes('/opt/starling/node_modules/'))
  t.ok(modules(newDeb).length > 1000, `node_modules packed (${modules(newDeb).length} entries)`)
  t.same(modules(oldDeb), modules(newDeb), 'node_modules by npm ci --offline and by copy and prune: the same files, sizes and modes')

  // the throwaway root: an empty dpkg database and a user database with root and uid 997
  const R = join(tmp, 'root')
  const admin = join(R, 'var', 'lib', 'dpkg')
  for (const d of ['info', 'updates', 'triggers']) mkdirSync(join(admin, d), { recursive: true })
  for (const f of ['status', 'available']) writeFileSync(join(admin, f), '')
  mkdirSync(join(R, 'etc'))
  writeFileSync(join(R, 'etc', 'passwd'), 'root:x:0:0:root:/root:/bin/sh\nfiller:x:997:997::/:/usr/sbin/nologin\n')
  writeFileSync(join(R, 'etc', 'group'), 'root:x:0:\nfiller:x:997:\n')
  const dpkg = (...args: string[]): SpawnSyncReturns<string> =>
    run('unshare', ['-n', 'dpkg', `--root=${R}`, '--force-script-chrootless', '--force-depends', ...args])
  const status = (): string => run('dpkg-query', [`--admindir=${admin}`, '-W', '-f', '${Status} ${Version}', 'starling']).stdout
  const ids = (file: string, name: string): string | undefined => readFileSync(join(R, 'etc', file), 'utf8').split('\n').find(l => l.startsWith(`${name}:`))

  await t.test('install (older build)', async t => {
    const r = dpkg('-i', oldDeb)
    t.equal(r.status, 0, `dpkg -i exits 0 (stderr: ${r.stderr})`)
    t.equal(status(), `install ok installed ${oldVersion}`)
    const user = ids('passwd', 'starling')?.split(':')
    t.ok(user, 'systemd-sysusers made the user in the root')
    const [uid, gid] = [user?.[2], user?.[3]]
    t.not(uid, '997', 'with an id the root had free')
    t.equal(user?.[5], '/var/lib/starling')
    t.match(ids('group', 'libvirt'), /:starling$/, 'member of libvirt')
    t.match(ids('group', 'kvm'), /:starling$/, 'member of kvm')
    t.equal(`${mode(join(R, 'etc/starling'))} ${owner(join(R, 'etc/starling'))}`, `750 0:${gid}`, '/etc/starling root:starling 0750 (tmpfiles)')
    t.equal(`${mode(join(R, 'etc/starling/starling.json'))} ${owner(join(R, 'etc/starling/starling.json'))}`, `640 0:${gid}`, 'the configuration holds the secret: root:starling 0640')
    t.equal(`${mode(join(R, 'var/lib/starling'))} ${owner(join(R, 'var/lib/starling'))}`, `700 ${uid}:${gid}`, '/var/lib/starling starling:starling 0700, ready for keygen as starling')
    t.same(JSON.parse(readFileSync(join(R, 'etc/starling/starling.json'), 'utf8')), JSON.parse(readFileSync(join(repo, 'systemd/starling.example.json'), 'utf8')), 'the example configuration')
  })

  // the operator edits the configuration and the agent has state
  const conf = join(R, 'etc/starling/starling.json')
  const edited = readFileSync(conf, 'utf8').replace('"name": "rack-a"', '"name": "rack-edited"')
  t.not(edited, readFileSync(conf, 'utf8'), 'the edit changes the file')
  writeFileSync(conf, edited)
  writeFileSync(join(R, 'var/lib/starling/identity.json'), '{"kept":true}\n')

  await t.test('upgrade to the current build', async t => {
    const r = dpkg('-i', newDeb)
    t.equal(r.status, 0, `dpkg -i exits 0 (stderr: ${r.stderr})`)
    t.equal(status(), `install ok installed ${version}`)
    t.equal(readFileSync(conf, 'utf8'), edited, 'the edited configuration is kept')
    t.same(readdirSync(join(R, 'etc/starling')), ['starling.json'], 'no .dpkg-new or .dpkg-dist beside it')
    t.equal(readFileSync(join(R, 'var/lib/starling/identity.json'), 'utf8'), '{"kept":true}\n', 'the state directory is kept')
    t.equal((JSON.parse(readFileSync(join(R, 'opt/starling/package.json'), 'utf8')) as { version: string }).version, version, 'the new files are in place')
  })

  await t.test('what is installed', async t => {
    const unit = join(R, 'usr/lib/systemd/system/starling.service')
    const text = readFileSync(unit, 'utf8')
    t.equal(text, readFileSync(join(repo, 'systemd/starling.service'), 'utf8'), 'the unit of systemd/')
    for (const key of ['ExecStart', 'ExecStopPost']) {
      const line = text.split('\n').find(l => l.startsWith(`${key}=`)) ?? ''
      const script = line.split(/\s+/).find(w => w.endsWith('.js'))
      t.ok(script !== undefined && existsSync(join(R, script)), `${key}'s ${script ?? '(no script)'} is installed`)
    }
    const wrapper = readFileSync(join(R, 'usr/bin/starling'), 'utf8')
    t.equal(mode(join(R, 'usr/bin/starling')), '755')
    const target = /\/\S+\.js/.exec(wrapper)?.[0]
    t.ok(target !== undefined && existsSync(join(R, target)), `/usr/bin/starling runs ${target ?? '?'}, which is installed`)
    t.ok(existsSync(join(R, 'usr/lib/sysusers.d/starling.conf')) && existsSync(join(R, 'usr/lib/tmpfiles.d/starling.conf')), 'sysusers and tmpfiles entries')
    const nm = join(R, 'opt/starling/node_modules')
    for (const p of ['hyperswarm', 'hyperdht', 'level', 'protobufjs', 'systeminformation', 'node-cron']) t.ok(existsSync(join(nm, p, 'package.json')), `dependency ${p}`)
    for (const p of ['tap', 'typescript', '@types', 'playwright-core']) t.notOk(existsSync(join(nm, p)), `no devDependency ${p}`)
    for (const f of ['index.html', 'app.js', 'style.css']) t.ok(existsSync(join(R, 'opt/starling/dist/agent/web', f)), `the web page's ${f} is installed where web-view.js finds it`)
    const platforms = new Set(run('find', [nm, '-type', 'd', '-path', '*/prebuilds/*', '!', '-path', '*/prebuilds/*/*', '-printf', '%f\n']).stdout.split('\n').filter(Boolean))
    t.same([...platforms], [`linux-${process.arch}`], 'prebuilt addons for this platform only')

    const v = run('systemd-analyze', ['verify', unit])
    t.equal(v.status, 0, `systemd-analyze verify exits 0 (stderr: ${v.stderr})`)
    t.same(`${v.stdout}\n${v.stderr}`.split('\n').filter(l => l.includes('starling.service')), [], 'and says nothing about the unit')
    const sec = run('systemd-analyze', ['security', '--offline=yes', unit])
    const score = Number(/Overall exposure level for starling\.service: ([\d.]+)/.exec(sec.stdout)?.[1] ?? NaN)
    t.ok(score <= 2.6, `systemd-analyze security --offline=yes: ${score} (at most 2.6)`)
  })

  await t.test('the installed agent runs on its own node_modules', async t => {
    const entry = join(R, 'opt/starling/dist/agent/cli/starling.js')
    const state = join(tmp, 'keygen')
    const k = run(process.execPath, [entry, 'keygen', '--state-dir', state])
    t.equal(k.status, 0, `keygen (stderr: ${k.stderr})`)
    t.match(k.stdout, /\b[0-9a-f]{64}\b/, 'prints a public key')
    const cluster = await LocalCluster.create(1, { seed: 5 })
    t.teardown(async () => await cluster.stop())
    const h = cluster.hosts[0]!
    const p = spawn(process.execPath, agentSpawnArgs(entry, ['agent', '--config', h.configFile], ''), { stdio: ['ignore', 'ignore', 'pipe'] })
    cluster.procs.set(h.name, p)
    let stderr = ''
    p.stderr.on('data', (d: Buffer) => { stderr += d.toString() })
    const exited = new Promise<number | null>(resolve => p.once('exit', code => resolve(code)))
    const ms = await cluster.waitViews([h.name], s => s.self.name === h.name, 30_000)
    t.not(ms, null, `the agent from /opt/starling came up and its API answers (stderr: ${stderr})`)
    p.kill('SIGTERM')
    t.equal(await exited, 0, 'and stops cleanly')
    t.equal(stderr, '', 'nothing on stderr')
  })

  await t.test('remove keeps configuration and state', async t => {
    const r = dpkg('-r', 'starling')
    t.equal(r.status, 0, `dpkg -r exits 0 (stderr: ${r.stderr})`)
    t.equal(status(), `deinstall ok config-files ${version}`)
    for (const p of ['opt/starling', 'usr/bin/starling', 'usr/lib/systemd/system/starling.service', 'usr/lib/sysusers.d/starling.conf']) t.notOk(existsSync(join(R, p)), `${p} removed`)
    t.equal(readFileSync(conf, 'utf8'), edited, 'the edited configuration stays')
    t.ok(existsSync(join(R, 'var/lib/starling/identity.json')), 'the state stays')
  })

  await t.test('purge removes them', async t => {
    const r = dpkg('-P', 'starling')
    t.equal(r.status, 0, `dpkg -P exits 0 (stderr: ${r.stderr})`)
    t.notMatch(status(), /installed|config-files/, 'no longer known to dpkg')
    t.notOk(existsSync(join(R, 'etc/starling')), '/etc/starling gone')
    t.notOk(existsSync(join(R, 'var/lib/starling')), '/var/lib/starling gone')
    t.ok(ids('passwd', 'starling'), 'the system user stays (files may still carry its uid)')
  })
})
