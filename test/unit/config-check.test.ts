/**
 * `starling config check FILE` (the compiled CLI): validates without starting anything. A good
 * file prints ok, a summary and the cluster-wide settings digests (exit 0); a bad one prints the
 * error naming the field (exit 2, as the agent does).
 */
import t from 'tap'
import { defaultPolicyConfig } from '../../policies/config.js'
import { spawn } from 'node:child_process'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { compiledCli } from '../integration/cluster-harness.js'

async function cli (args: string[]): Promise<{ code: number, stdout: string, stderr: string }> {
  const p = spawn(process.execPath, [compiledCli(), ...args], { stdio: ['ignore', 'pipe', 'pipe'] })
  let stdout = ''; let stderr = ''
  p.stdout.on('data', (d: Buffer) => { stdout += d.toString() })
  p.stderr.on('data', (d: Buffer) => { stderr += d.toString() })
  const code = await new Promise<number>(resolve => p.once('exit', c => resolve(c ?? -1)))
  return { code, stdout, stderr }
}

function config (): any {
  return {
    cluster: {
      name: 'lab',
      secret: 'correct horse battery staple',
      members: [
        { name: 'hv1', publicKey: 'a'.repeat(64), address: '10.0.0.1:49737' },
        { name: 'hv2', publicKey: 'b'.repeat(64), address: '10.0.0.2:49737' },
        { name: 'hv3', publicKey: 'c'.repeat(64), address: '10.0.0.3:49737' }
      ]
    },
    // Paths that do not exist: nothing is created or opened.
    node: { name: 'hv1', stateDir: '/nonexistent/starling-state' },
    ha: { vms: [{ id: 'db', home: 'hv2', image: '/srv/db.img' }] }
  }
}

t.test('config check', async t => {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'starling-config-check-'))
  t.teardown(async () => await rm(dir, { recursive: true, force: true }))
  const write = async (name: string, c: unknown): Promise<string> => {
    const f = path.join(dir, name)
    await writeFile(f, typeof c === 'string' ? c : JSON.stringify(c))
    return f
  }

  const good = await write('good.json', config())
  const ok = await cli(['config', 'check', good])
  t.equal(ok.code, 0, 'a valid file exits 0')
  t.match(ok.stdout, new RegExp(`^ok: ${good.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}\n`), 'and says ok first')
  t.match(ok.stdout, /cluster "lab": 3 members \(hv1, hv2, hv3\)/)
  t.match(ok.stdout, /HA: 1 protected VM\(s\), armed at first start, fence delay \d+ ticks of 100 ms/)
  t.match(ok.stdout, /ha\.timing\s+[0-9a-f]{16}  a member that differs is refused/, 'the HA timing digest, refused when it differs')
  t.match(ok.stdout, /migration\.rules\s+[0-9a-f]{16}  a member that differs is flagged/)
  t.equal(ok.stderr, '')

  // --effective: every default filled in, the secret hidden.
  const eff = await cli(['config', 'check', good, '--effective'])
  t.equal(eff.code, 0)
  const e = JSON.parse(eff.stdout) as { cluster: { secret: string }, mesh: { keepAliveMs: number }, migration: { automation: string, policy: { guards: { holdDecisions: number } } }, core: { tickMs: number } }
  t.equal(e.cluster.secret, '(hidden)', 'the secret is not printed')
  t.equal(e.migration.automation, 'full', 'module defaults are filled in (migration)')
  t.equal(e.migration.policy.guards.holdDecisions, defaultPolicyConfig().guards.holdDecisions, '(policy): the default policy')
  t.equal(e.core.tickMs, 100, '(core)')
  t.ok(e.mesh.keepAliveMs > 0, '(mesh)')
  t.notMatch(eff.stdout, new RegExp((config() as { cluster: { secret: string } }).cluster.secret), 'nowhere')

  // Another host's file of the same cluster: the same cluster-wide digests, whatever node says.
  const other = config(); other.node = { name: 'hv3' }
  const ok3 = await cli(['config', 'check', await write('hv3.json', other)])
  const digests = (s: string): string => s.split('\n').filter(l => /cluster-wide|^ {4}\S/.test(l)).join('\n')
  t.equal(digests(ok3.stdout), digests(ok.stdout), 'two members of one cluster print the same digests')
  const rules = config(); rules.migration = { rules: { vmVm: [{ kind: 'anti-affinity', vms: ['a', 'b'], hard: true }], vmHost: [] } }
  const okR = await cli(['config', 'check', await write('rules.json', rules)])
  t.not(/migration\.rules\s+(\S+)/.exec(okR.stdout)?.[1], /migration\.rules\s+(\S+)/.exec(ok.stdout)?.[1], 'other rules, another migration.rules digest')
  t.equal(/cluster\.members\s+(\S+)/.exec(okR.stdout)?.[1], /cluster\.members\s+(\S+)/.exec(ok.stdout)?.[1], 'the same members digest')

  const typo = config(); typo.node.apiListn = '127.0.0.1:7946'
  const bad = await cli(['config', 'check', await write('typo.json', typo)])
  t.equal(bad.code, 2, 'an unknown key exits 2')
  t.equal(bad.stderr, 'starling: config: node.apiListn: unknown key; did you mean apiListen?\n', 'naming the path and the nearest key')
  t.equal(bad.stdout, '', 'and prints no ok')

  const value = config(); value.ha.vms[0].home = 'hv9'
  const badValue = await cli(['config', 'check', await write('value.json', value)])
  t.equal(badValue.code, 2)
  t.match(badValue.stderr, /config: ha\.vms\[0\]\.home "hv9" is not one of cluster\.members/)

  const notJson = await cli(['config', 'check', await write('broken.json', '{ "cluster": ')])
  t.equal(notJson.code, 2)
  t.match(notJson.stderr, /is not valid JSON/)
  const missing = await cli(['config', 'check', path.join(dir, 'absent.json')])
  t.equal(missing.code, 2)
  t.match(missing.stderr, /cannot read configuration/)
  const usage = await cli(['config', 'lint', good])
  t.equal(usage.code, 2)
  t.match(usage.stderr, /usage: starling config check FILE/)
})
