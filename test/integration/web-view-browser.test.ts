/**
 * The web page every agent serves (agent/adapters/web-view.ts, agent/web/), in a real browser:
 * Debian's headless Chromium driven by playwright-core (never a downloaded browser).
 *
 * 1. First paint with 500 VMs on 50 hosts: the page served by a web view over a simulated status
 *    of that size; the time from navigation to the first drawn view must be under 1 s.
 * 2. A running local cluster of three agents: the page loaded from two different agents shows
 *    the same hosts and VMs; screenshots are written; a migration asked with `starling migrate`
 *    during the test appears on the page and completes (the VM then shows on its target on both
 *    pages); a host killed with kill -9 turns suspect, then dead, on the page.
 * Fails (never skips) when /usr/bin/chromium is missing: test/setup.sh installs it.
 */
import t from 'tap'
import { execFile } from 'node:child_process'
import { existsSync, mkdirSync } from 'node:fs'
import http from 'node:http'
import path from 'node:path'
import os from 'node:os'
import { mkdtempSync } from 'node:fs'
import { chromium, type BrowserContext, type Page } from 'playwright-core'
import { LocalCluster, compiledCli } from './cluster-harness.js'
import { webView, type WebStatus } from '../../agent/adapters/web-view.js'
import type { MemberView } from '../../agent/core/types.js'
import { sleep } from '../lib/wait.js'

const CHROMIUM = '/usr/bin/chromium'
const ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync']

/** Where screenshots go: STARLING_SCREENSHOT_DIR, or a fresh directory under the system's temp. */
const shots = process.env.STARLING_SCREENSHOT_DIR ?? mkdtempSync(path.join(os.tmpdir(), 'starling-shots-'))
mkdirSync(shots, { recursive: true })

/** Chromium with a fresh profile (--user-data-dir, which playwright passes for a persistent context). */
async function launch (t: { fail: (message: string) => void }): Promise<BrowserContext | null> {
  if (!existsSync(CHROMIUM)) {
    t.fail(`${CHROMIUM} is missing: install Debian's chromium package (test/setup.sh does it as root)`)
    return null
  }
  const userDataDir = mkdtempSync(path.join(os.tmpdir(), 'starling-chromium-'))
  return await chromium.launchPersistentContext(userDataDir, { executablePath: CHROMIUM, headless: true, args: ARGS, viewport: { width: 1400, height: 900 } })
}

/** A status with `hosts` hosts of `vmsPerHost` VMs each, as an agent's view of a big cluster. */
function bigStatus (hosts: number, vmsPerHost: number): WebStatus {
  const members: MemberView[] = []
  for (let i = 1; i <= hosts; i++) {
    const id = `${String(i).padStart(4, '0')}`.repeat(16)
    members.push({
      id,
      name: `host${i}`,
      addr: `10.0.${Math.floor(i / 250)}.${i % 250}:7000`,
      state: i % 17 === 0 ? 'suspect' : 'alive',
      incarnation: 1,
      report: {
        host: id,
        seq: 1,
        capacity: { cpuCores: 32, cpuMipsPerCore: 1000, memMiB: 262144, netMbps: 10000 },
        cpuUtil: ((i * 37) % 100) / 100,
        memUtil: 0.5,
        netUtil: 0.1,
        forecastCpu: [((i * 41) % 100) / 100],
        vms: Array.from({ length: vmsPerHost }, (_, j) => ({ id: `vm-${i}-${j + 1}`, vcpus: 2, memMiB: 4096, cpuUtil: 0.02, memUsedMiB: 2048, state: 'running' as const }))
      }
    })
  }
  return { cluster: 'big', self: { id: members[0]!.id, name: 'host1' }, members }
}

t.test('first paint with 500 VMs on 50 hosts is under 1 s', async t => {
  const browser = await launch(t)
  if (browser === null) return
  t.teardown(async () => { await browser.close() })
  const status = bigStatus(50, 10)
  const wv = webView({})({ status: () => status })
  for (let k = 0; k < 60; k++) wv.sample() // a minute of history per host
  const server = http.createServer((req, res) => { if (!wv.handle(req, res, (req.url ?? '/').split('?')[0] ?? '/')) res.writeHead(404).end() })
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => { wv.stop(); server.closeAllConnections(); server.close() })
  const port = (server.address() as { port: number }).port
  const page = await browser.newPage()
  await page.setViewportSize({ width: 1600, height: 1000 })
  const runs: number[] = []
  for (let run = 0; run < 3; run++) {
    await page.goto(`http://127.0.0.1:${port}/`)
    await page.waitForSelector('body[data-rendered="1"]', { timeout: 10_000 })
    const ms = await page.evaluate(() => performance.getEntriesByName('starling-first-render')[0]?.startTime ?? -1)
    runs.push(ms)
  }
  const fcp = await page.evaluate(() => performance.getEntriesByName('first-contentful-paint')[0]?.startTime ?? -1)
  const counts = await page.evaluate(() => ({ hosts: document.querySelectorAll('[data-host]').length, vms: document.querySelectorAll('[data-vm]').length, sparks: document.querySelectorAll('svg.spark').length }))
  t.same(counts, { hosts: 50, vms: 500, sparks: 50 }, 'every host, VM and history chart is drawn')
  const median = [...runs].sort((a, b) => a - b)[1] as number
  t.comment(`first drawn view (navigation start to the first render, 500 VMs on 50 hosts): ${runs.map(r => r.toFixed(0)).join(', ')} ms (median ${median.toFixed(0)} ms); first contentful paint ${fcp.toFixed(0)} ms`)
  t.ok(median > 0 && median < 1000, `first paint under 1 s (median ${median.toFixed(0)} ms)`)
  await page.screenshot({ path: path.join(shots, 'big-cluster.png'), fullPage: false })
})

t.test('the page from two agents of a running cluster: same hosts and VMs, a migration, a death', async t => {
  const browser = await launch(t)
  if (browser === null) return
  t.teardown(async () => { await browser.close() })
  const c = await LocalCluster.create(3, { seed: 11, sampleIntervalMs: 500 })
  t.teardown(async () => { await c.stop() })
  c.startAll()
  const formed = await c.waitViews(['host1', 'host2', 'host3'], s => s.members.filter(m => m.state === 'alive' && m.report !== null).length === 3, 60_000)
  t.ok(formed !== null, `the cluster formed (${formed ?? '-'} ms)`)
  const open = async (name: string): Promise<Page> => {
    const p = await browser.newPage()
    await p.goto(`http://${c.host(name).apiListen}/`)
    await p.waitForSelector('body[data-rendered="1"]', { timeout: 10_000 })
    return p
  }
  const p1 = await open('host1')
  const p2 = await open('host2')
  /** host name -> sorted VM ids, as the page shows them. */
  const dom = async (p: Page): Promise<Record<string, string[]>> => await p.evaluate(() => {
    const out: Record<string, string[]> = {}
    for (const h of document.querySelectorAll<HTMLElement>('[data-host]')) out[h.dataset.host ?? '?'] = [...h.querySelectorAll<HTMLElement>('[data-vm]')].map(v => v.dataset.vm ?? '?').sort()
    return out
  })
  const sameOnBoth = async (timeoutMs: number): Promise<{ a: Record<string, string[]>, b: Record<string, string[]> }> => {
    const end = Date.now() + timeoutMs
    let a = await dom(p1)
    let b = await dom(p2)
    while (Date.now() < end && (JSON.stringify(a) !== JSON.stringify(b) || Object.keys(a).length !== 3 || Object.values(a).some(v => v.length === 0))) {
      await sleep(250)
      a = await dom(p1)
      b = await dom(p2)
    }
    return { a, b }
  }
  const first = await sameOnBoth(15_000)
  t.same(Object.keys(first.a).sort(), ['host1', 'host2', 'host3'], 'host1\'s page shows the three hosts')
  t.same(first.b, first.a, `host2's page shows the same hosts and VMs as host1's (${Object.values(first.a).flat().length} VMs)`)
  t.match(await p1.textContent('#seen-from'), /host1/, 'host1\'s page says whose view it is')
  t.match(await p2.textContent('#seen-from'), /host2/, 'host2\'s page says whose view it is')
  await p1.screenshot({ path: path.join(shots, 'host1.png'), fullPage: true })
  await p2.screenshot({ path: path.join(shots, 'host2.png'), fullPage: true })
  t.comment(`screenshots in ${shots}`)

  // A migration asked for during the test appears on the source's page and completes.
  const vm = first.a.host1?.[0]
  t.ok(vm !== undefined, 'host1 runs a VM to move')
  if (vm === undefined) return
  const seen = p1.waitForSelector(`.mig[data-mig="${vm}"]`, { timeout: 30_000 }).then(() => true, () => false)
  const r = await new Promise<{ code: number, out: string }>(resolve => {
    execFile(process.execPath, [compiledCli(), 'migrate', vm, '--to', 'host2', '--config', c.host('host1').configFile], { timeout: 60_000 }, (err, stdout, stderr) => {
      resolve({ code: err === null ? 0 : typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : 1, out: stdout + stderr })
    })
  })
  t.equal(r.code, 0, `starling migrate ${vm} --to host2 exits 0 (${r.out.trim().split('\n').pop() ?? ''})`)
  t.ok(await seen, `the migration of ${vm} appears on host1's page`)
  const committed = await p1.waitForSelector(`.mig[data-mig="${vm}"][data-state="committed"]`, { timeout: 30_000 }).then(() => true, () => false)
  t.ok(committed, 'and is shown committed there')
  await p1.screenshot({ path: path.join(shots, 'host1-migrated.png'), fullPage: true })
  for (const [name, p] of [['host1', p1], ['host2', p2]] as const) {
    const there = await p.waitForSelector(`[data-host="host2"] [data-vm="${vm}"]`, { timeout: 20_000 }).then(() => true, () => false)
    t.ok(there, `${name}'s page shows ${vm} on host2`)
    const gone = await p.waitForFunction(v => document.querySelector(`[data-host="host1"] [data-vm="${v}"]`) === null, vm, { timeout: 20_000 }).then(() => true, () => false)
    t.ok(gone, `and no longer on host1`)
  }
  const timeline = await p1.textContent('#events') ?? ''
  t.match(timeline, new RegExp(`migration of ${vm} host1 → host2 committed`), 'the timeline tells the migration')

  // kill -9 of host3: suspect, then dead, on both pages.
  const states = async (p: Page): Promise<void> => {
    await p.evaluate(() => {
      const w = window as unknown as { seenStates: string[] }
      w.seenStates = []
      const note = (): void => {
        const s = document.querySelector<HTMLElement>('[data-host="host3"]')?.dataset.state
        if (s !== undefined && w.seenStates[w.seenStates.length - 1] !== s) w.seenStates.push(s)
      }
      new MutationObserver(note).observe(document.getElementById('hosts')!, { childList: true, subtree: true, attributes: true })
      note()
    })
  }
  await states(p1)
  await states(p2)
  c.kill9('host3')
  for (const [name, p] of [['host1', p1], ['host2', p2]] as const) {
    const dead = await p.waitForSelector('[data-host="host3"][data-state="dead"]', { timeout: 60_000 }).then(() => true, () => false)
    const seq = await p.evaluate(() => (window as unknown as { seenStates: string[] }).seenStates)
    t.ok(dead, `${name}'s page shows host3 dead`)
    t.same(seq.filter((s, i) => seq.indexOf(s) === i), ['alive', 'suspect', 'dead'], `${name}'s page showed host3 alive, then suspect, then dead (${seq.join(' → ')})`)
    t.match(await p.textContent('#banner') ?? '', /dead: host3/, `${name}'s banner names the dead host`)
  }
  await p1.screenshot({ path: path.join(shots, 'host1-dead.png'), fullPage: true })
})
