/**
 * The simulated VIP port (demo and simulated hosts): addresses persist in the state file as on a
 * real interface (an agent killed with kill -9 leaves them; the next start removes them), add and
 * remove are idempotent, an announcement needs the address here, and an aborted call does nothing.
 */
import t from 'tap'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { simVip } from '../../agent/adapters/sim-vip.js'
import { removeLocalVips, validateVipSection } from '../../agent/runtime/vip-setup.js'
import { silentLogger } from '../../agent/lib/logger.js'

const vip = { address: '10.99.0.10', prefixLength: 24, iface: 'demo0' }

t.test('addresses survive the adapter (a killed agent leaves them) and the start-up removes them', async t => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'stl-simvip-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const stateFile = path.join(dir, 'sim-vips.json')
  const a = simVip({ stateFile })({ logger: silentLogger() })
  t.equal(await a.hasAddress(vip), false)
  await a.add(vip)
  await a.add(vip)
  t.same(JSON.parse(readFileSync(stateFile, 'utf8')), ['10.99.0.10/24@demo0'], 'added once, on file')
  t.equal((await a.announce(vip, { count: 3, intervalMs: 0 })).sent, 3, 'a burst reports its packets')
  // A new agent on the same state directory: the address is still "on the interface".
  const b = simVip({ stateFile })({ logger: silentLogger() })
  t.equal(await b.hasAddress(vip), true, 'the address outlives the adapter')
  const section = validateVipSection([{ id: 'db', address: '10.99.0.10/24', iface: 'demo0', vm: 'db-1' }], undefined, ['h1'], 100)
  t.same(await removeLocalVips(section, b, silentLogger()), [], 'the start-up removal succeeds')
  t.equal(await simVip({ stateFile })({ logger: silentLogger() }).hasAddress(vip), false, 'and the address is gone for good')
  await b.remove(vip)
  await t.rejects(b.announce(vip, { count: 1, intervalMs: 0 }), { code: 'VIP_ADDRESS_NOT_HERE' }, 'no burst for an address that is not here')
})

t.test('an aborted call changes nothing; an unreadable file is ignored with a warning', async t => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'stl-simvip-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const stateFile = path.join(dir, 'sim-vips.json')
  writeFileSync(stateFile, 'not json')
  const warnings: string[] = []
  const logger = { ...silentLogger(), forComponent: () => ({ ...silentLogger(), warn: (m: string) => { warnings.push(m) } }) }
  const a = simVip({ stateFile })({ logger: logger as unknown as ReturnType<typeof silentLogger> })
  t.equal(warnings.length, 1, `warned: ${warnings[0] ?? ''}`)
  const ac = new AbortController()
  ac.abort()
  await t.rejects(a.add(vip, { signal: ac.signal }), { code: 'VIP_ABORTED' })
  t.equal(await a.hasAddress(vip), false, 'nothing added')
})
