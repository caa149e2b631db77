/**
 * bench:memory — resources inside a host following demand, on real guests (QEMU; TCG unless the
 * host has usable KVM), Starling's policies beside a Proxmox-like baseline in the same run. Needs
 * root (cgroups, KSM) and QEMU. Prints one JSON object on stdout; progress on stderr.
 *
 * Memory (per policy, fresh guests each): two test guests of GUEST_MIB (default 768) with a
 * command port, on a host given a memory budget HOST_MIB (default 1200; target 80 % = 960 MiB):
 *   reclaim     from the start, the idle guests give memory until the host is at its target:
 *               reclaim speed = MiB given / time taken, and its per-step median
 *   pressure    PRESSURE_EVENTS (default 3) times the grower allocates at once what takes its free
 *               memory to half its floor (from its latest statistics, and no more than its maximum
 *               can give back); time to its balloon giving it the memory it needs to be back over
 *               its floor (query-balloon, polled every 100 ms), from the end of the allocation (the
 *               guest reports it; 0 when the memory came while it allocated) and from the command
 *               (the allocation's own time included); then it frees it again
 *   stale       one guest's balloon driver is unloaded (its statistics stop): shrinks it gets after
 *               that are stale shrinks (target 0)
 *   band        share of samples (every 500 ms, after the first reclaim) with host use within +-5 %
 *               of the target; guest OOM kills (the guest's allocator reports its death)
 *   policies    starling: policies/balloon.ts, one step a second; proxmox: bench/lib/proxmox-balloon.ts,
 *               one step per 10-s cycle (pvestatd), at most 100 MiB per VM per cycle
 * KSM: two guests each holding KSM_MIB (default 128) of identical pages, the agent's KSM loop
 *   (memory.ksm, its default policy, ksmd budget KSM_BUDGET percent of a core, default 20) stepping
 *   once a second for KSM_S (default 20) s, the host's KSM settings restored after: the twins'
 *   merged memory, the saving the agent reports (pages_sharing + zero pages, and the kernel's net
 *   general_profit) beside /sys/kernel/mm/ksm read directly, and ksmd's CPU against its budget.
 * CPU: two busy single-vCPU guests pinned to one CPU, one high-class and one low-class: the share of
 *   its demand (its own CPU time alone) the high one gets with equal weights and with the allocation,
 *   CPU_ROUNDS (default 3) rounds of alone / equal / allocated, medians.
 * Agent cost: CPU time of the balloon and CPU loops' steps (process.cpuUsage around them).
 * Every figure carries the load average when it was measured.
 */
import { execFileSync } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { QemuDriver } from '../agent/adapters/qemu-driver.js'
import { hostMemory } from '../agent/adapters/host-memory.js'
import { CgroupCpu, detectCpuCgroup, processCpuSeconds, processSchedSeconds } from '../agent/adapters/cgroup-cpu.js'
import { BalloonController, type MemoryStatus } from '../agent/runtime/balloon-controller.js'
import { CpuController } from '../agent/runtime/cpu-controller.js'
import { KsmController } from '../agent/runtime/ksm-controller.js'
import { KsmSysfs } from '../agent/adapters/ksm-sysfs.js'
import { validateMemorySection } from '../agent/runtime/memory-setup.js'
import { decideBalloon } from '../policies/balloon.js'
import { defaultCpuAllocParams } from '../policies/cpu-alloc.js'
import { silentLogger } from '../agent/lib/logger.js'
import type { VmSpec } from '../agent/ports/hypervisor-driver.js'
import { buildTestGuest, guestKernel } from '../test/guest/guest.js'
import { proxmoxDecide } from './lib/proxmox-balloon.js'
import { CommandPort } from '../test/guest/command-port.js'

const env = (k: string, d: number): number => {
  const v = process.env[k]
  if (v === undefined || v === '') return d
  const n = Number(v)
  if (!Number.isFinite(n) || n < 0) throw new Error(`${k} must be a non-negative number (got "${v}")`)
  return n
}
const GUEST_MIB = env('GUEST_MIB', 768)
const HOST_MIB = env('HOST_MIB', 1200)
const PRESSURE_EVENTS = env('PRESSURE_EVENTS', 3)
const CPU_ROUNDS = env('CPU_ROUNDS', 3)
const KSM_MIB = env('KSM_MIB', 128)
const KSM_S = env('KSM_S', 20)
const KSM_BUDGET = env('KSM_BUDGET', 20)

const sleep = (ms: number): Promise<void> => new Promise(resolve => setTimeout(resolve, ms))
const say = (s: string): void => { process.stderr.write(`bench:memory ${s}\n`) }
const load = (): number[] => os.loadavg().map(x => Math.round(x * 100) / 100)
const median = (xs: number[]): number | null => {
  if (xs.length === 0) return null
  const s = [...xs].sort((a, b) => a - b)
  const m = Math.floor(s.length / 2)
  return s.length % 2 === 1 ? s[m] as number : ((s[m - 1] as number) + (s[m] as number)) / 2
}
const r2 = (x: number | null): number | null => x === null ? null : Math.round(x * 100) / 100

function consoleLines (file: string): string[] {
  try { return fs.readFileSync(file, 'utf8').split('\n').map(l => l.trim()).filter(l => l !== '' && !l.startsWith('hb ') && !l.startsWith('integrity')) } catch { return [] }
}

async function until (what: string, cond: () => boolean | Promise<boolean>, timeoutMs: number): Promise<boolean> {
  const end = performance.now() + timeoutMs
  while (!(await cond())) {
    if (performance.now() > end) { say(`gave up waiting for ${what}`); return false }
    await sleep(100)
  }
  return true
}

function guestSpec (guestDir: string, tmp: string, id: string, memMiB: number, append = 'dirtier_ws=16 dirtier_rate=0'): VmSpec {
  return {
    id,
    vcpus: 1,
    memMiB,
    extra: {
      kernel: guestKernel(guestDir),
      initrd: path.join(guestDir, 'initramfs.cpio'),
      append: `console=ttyS0 quiet loglevel=3 panic=-1 ${append}`,
      args: ['-chardev', `socket,id=cmd,path=${path.join(tmp, `${id}.cmd`)},server=on,wait=off`, '-device', 'isa-serial,chardev=cmd']
    }
  }
}

interface MemoryResult {
  policy: string
  stepIntervalS: number
  reclaim: { reclaimedMiB: number, seconds: number | null, mibPerS: number | null, stepMedianMiBPerS: number | null, load: number[] }
  pressureToMemoryS: { runs: Array<number | null>, fromCommand: Array<number | null>, grewMiB: number[], median: number | null, medianFromCommand: number | null, notRelievedWithin30s: number, load: number[] }
  hostWithin5PercentOfTarget: { share: number | null, samples: number }
  oomKills: number
  staleShrinks: number
  agentCpu: { steps: number, msPerStep: number | null, shareOfOneCore: number | null }
}

async function memoryScenario (guestDir: string, policy: 'starling' | 'proxmox'): Promise<MemoryResult> {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), `bench-mem-${policy}-`))
  const driver = new QemuDriver({ runDir: path.join(tmp, 'vms'), accel: 'auto', dieWithAgent: true, killOnClose: true }, { logger: silentLogger() })
  const ports: CommandPort[] = []
  try {
    for (const id of ['idle', 'grower']) await driver.start(guestSpec(guestDir, tmp, id, GUEST_MIB))
    for (const id of ['idle', 'grower']) await until(`${id} ready`, () => consoleLines(driver.serialPath(id)).includes('dirtier commands on ttyS1'), 90_000)
    const port = (id: string): CommandPort => { const p = new CommandPort(path.join(tmp, `${id}.cmd`)); ports.push(p); return p }
    const grower = port('grower'); const idle = port('idle')
    const mem = validateMemorySection({ balloon: true, hostMemMiB: HOST_MIB, statsPollSec: 1, vmMinPercent: 10 }, [])
    const ctl = new BalloonController(mem, { driver, host: hostMemory(), logger: silentLogger(), ...(policy === 'proxmox' ? { decide: proxmoxDecide } : { decide: decideBalloon }) })
    const interval = policy === 'proxmox' ? 10_000 : 1000
    const statuses: Array<MemoryStatus & { wallMs: number }> = []
    let cpuUs = 0; let steps = 0
    let stepping = true
    // The guests' statistics arrive once armed: let one poll come in before the first step.
    for (const id of ['idle', 'grower']) await driver.memoryFacts(id, 1)
    await sleep(2500)
    const t0 = performance.now()
    const loop = (async () => {
      while (stepping) {
        const at = performance.now()
        const vms = await driver.list()
        const c0 = process.cpuUsage()
        const s = await ctl.step(vms)
        const c1 = process.cpuUsage(c0)
        cpuUs += c1.user + c1.system; steps++
        if (s !== null) statuses.push({ ...s, wallMs: performance.now() })
        const left = interval - (performance.now() - at)
        if (left > 0 && stepping) await sleep(left)
      }
    })()
    const sumActual = (s: MemoryStatus): number => s.vms.reduce((n, v) => n + (v.actualMiB ?? v.maxMiB), 0)
    const target = HOST_MIB * 0.8
    const band = HOST_MIB * 0.02
    // 1. Reclaim: until the balloons' sum is at the target (the loop's samples are up to a step old).
    const reclaimLoad = load()
    const usedNow = async (): Promise<number> => {
      let n = 0
      for (const id of ['idle', 'grower']) n += (await driver.memoryFacts(id, 1)).actualMiB ?? GUEST_MIB
      return n
    }
    const start = await usedNow()
    const reached = await until('the host at its target', async () => (await usedNow()) <= target + band, policy === 'proxmox' ? 120_000 : 60_000)
    const reclaimS = reached ? (performance.now() - t0) / 1000 : null
    const end = await usedNow()
    const stepRates: number[] = []
    for (let i = 1; i < statuses.length; i++) {
      const a = statuses[i - 1] as MemoryStatus & { wallMs: number }; const b = statuses[i] as MemoryStatus & { wallMs: number }
      const d = sumActual(a) - sumActual(b)
      if (d > 1) stepRates.push(d / ((b.wallMs - a.wallMs) / 1000))
    }
    // Host use against the target every 500 ms from here to the stale phase, whatever the policy's cadence.
    const bandSamples: number[] = []
    let banding = true
    const bandLoop = (async () => { while (banding) { bandSamples.push(await usedNow()); await sleep(500) } })()
    say(`${policy}: reclaimed ${Math.round(start - end)} MiB in ${reclaimS?.toFixed(1) ?? '-'} s`)
    // 2. Pressure: the grower allocates at once; time until its free memory is over its floor again.
    const pressureLoad = load()
    const runs: Array<number | null> = []
    const fromCommand: Array<number | null> = []
    const grew: number[] = []
    const floorOf = (size: number): number => Math.max(mem.policy.guestFreeMiBMin, size * mem.policy.guestFreePercent / 100)
    for (let i = 0; i < PRESSURE_EVENTS; i++) {
      await sleep(policy === 'proxmox' ? 5000 : 2000)
      const f0 = await driver.memoryFacts('grower', 1)
      const free0 = f0.guest?.availableMiB ?? f0.guest?.freeMiB ?? 0
      // Down to half its floor, and never more than its maximum can give back.
      const size0 = f0.actualMiB ?? GUEST_MIB
      const grow = Math.max(16, Math.round(Math.min(free0 - 0.5 * floorOf(size0), free0 + (GUEST_MIB - size0) - 2 * floorOf(GUEST_MIB))))
      // The size at which its free memory is back at its floor.
      const needSize = size0 + (floorOf(size0) - (free0 - grow))
      grew.push(grow)
      const sent = performance.now()
      await grower.send(`grow ${grow}`)
      await until('the allocation', () => consoleLines(driver.serialPath('grower')).filter(l => l.startsWith('hog held=') || l.startsWith('hog killed')).length >= 2 * i + 1, 30_000)
      const pressed = performance.now()
      const ok = await until('the grower\'s balloon to give it what it needs', async () => ((await driver.memoryFacts('grower', 1)).actualMiB ?? 0) >= needSize - 1, 30_000)
      runs.push(ok ? (performance.now() - pressed) / 1000 : null)
      fromCommand.push(ok ? (performance.now() - sent) / 1000 : null)
      say(`${policy}: pressure ${i + 1} (grow ${grow} MiB): ${ok ? `${runs[runs.length - 1]?.toFixed(1)} s after the allocation, ${fromCommand[fromCommand.length - 1]?.toFixed(1)} s after the command` : 'not relieved within 30 s'}`)
      await grower.send(`shrink ${grow}`)
      await until('the free', () => consoleLines(driver.serialPath('grower')).filter(l => l.startsWith('hog held=') || l.startsWith('hog killed')).length >= 2 * i + 2, 30_000)
    }
    banding = false
    await bandLoop
    // 3. Stale: the idle guest's statistics stop.
    await idle.send('balloon-off')
    await until('the balloon driver unloaded', () => consoleLines(driver.serialPath('idle')).some(l => l.startsWith('balloon-off')), 20_000)
    const offAt = Date.now()
    await sleep(policy === 'proxmox' ? 25_000 : 10_000)
    stepping = false
    await loop
    const staleShrinks = ctl.history.filter(h => h.id === 'idle' && h.atMs >= offAt + (mem.policy.statsStaleAfterS + 1) * 1000 && h.targetMiB < h.fromMiB).length
    const within = bandSamples.filter(u => Math.abs(u - target) <= 0.05 * target).length
    const oom = consoleLines(driver.serialPath('grower')).filter(l => l.startsWith('hog killed')).length
    const elapsedS = (performance.now() - t0) / 1000
    return {
      policy,
      stepIntervalS: interval / 1000,
      reclaim: { reclaimedMiB: Math.round(start - end), seconds: r2(reclaimS), mibPerS: reclaimS === null ? null : r2((start - end) / reclaimS), stepMedianMiBPerS: r2(median(stepRates)), load: reclaimLoad },
      pressureToMemoryS: { runs: runs.map(r2), fromCommand: fromCommand.map(r2), grewMiB: grew, median: r2(median(runs.filter((x): x is number => x !== null))), medianFromCommand: r2(median(fromCommand.filter((x): x is number => x !== null))), notRelievedWithin30s: runs.filter(x => x === null).length, load: pressureLoad },
      hostWithin5PercentOfTarget: { share: bandSamples.length === 0 ? null : r2(within / bandSamples.length), samples: bandSamples.length },
      oomKills: oom,
      staleShrinks,
      agentCpu: { steps, msPerStep: steps === 0 ? null : r2(cpuUs / 1000 / steps), shareOfOneCore: r2(cpuUs / 1e6 / elapsedS) }
    }
  } finally {
    for (const p of ports) p.close()
    await driver.close()
    fs.rmSync(tmp, { recursive: true, force: true })
  }
}

const KSM = '/sys/kernel/mm/ksm'
const readKsm = (f: string): number => Number(fs.readFileSync(path.join(KSM, f), 'utf8').trim())


async function ksmScenario (guestDir: string): Promise<Record<string, unknown>> {
  if (!fs.existsSync(path.join(KSM, 'run'))) return { skipped: 'no KSM in this kernel' }
  const sysfs = new KsmSysfs()
  const saved = await sysfs.read()
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'bench-ksm-'))
  const driver = new QemuDriver({ runDir: path.join(tmp, 'vms'), accel: 'auto', dieWithAgent: true, killOnClose: true }, { logger: silentLogger() })
  const ports: CommandPort[] = []
  try {
    for (const id of ['twin1', 'twin2']) await driver.start(guestSpec(guestDir, tmp, id, 256))
    for (const id of ['twin1', 'twin2']) await until(`${id} ready`, () => consoleLines(driver.serialPath(id)).includes('dirtier commands on ttyS1'), 90_000)
    for (const id of ['twin1', 'twin2']) {
      const p = new CommandPort(path.join(tmp, `${id}.cmd`)); ports.push(p)
      await p.send(`grow ${KSM_MIB} same`)
      await until(`${id} holding`, () => consoleLines(driver.serialPath(id)).includes(`hog held=${KSM_MIB}`), 30_000)
    }
    // The agent's own loop: memory.ksm on, a budget for the VMs that two 256-MiB guests leave
    // short of free memory, ksmd's CPU budget KSM_BUDGET percent of a core; one step a second.
    const mem = validateMemorySection({ balloon: false, hostMemMiB: 600, ksm: true, ksmPolicy: { maxCpuPercent: KSM_BUDGET } }, [])
    const ksm = new KsmController(mem.ksmPolicy, { sysfs, logger: silentLogger() })
    const ctl = new BalloonController(mem, { driver, host: hostMemory({ ksmdCpuSeconds: async () => await sysfs.ksmdCpuSeconds() }), logger: silentLogger(), ksm })
    const merged = (): number => ['twin1', 'twin2'].reduce((sum, id) => {
      const pid = driver.pid(id)
      try { return pid === undefined ? sum : sum + Number(fs.readFileSync(`/proc/${pid}/ksm_merging_pages`, 'utf8').trim()) * 4096 / 1048576 } catch { return sum }
    }, 0)
    const cpu0 = await sysfs.ksmdCpuSeconds()
    const l = load()
    const t0 = performance.now()
    const shares: number[] = []
    let halfAt: number | null = null
    let last: MemoryStatus | null = null
    while (performance.now() - t0 < KSM_S * 1000) {
      last = await ctl.step(await driver.list()) ?? last
      const c = last?.host.ksm?.cpuShare
      if (typeof c === 'number') shares.push(c)
      if (halfAt === null && merged() >= KSM_MIB) halfAt = (performance.now() - t0) / 1000
      await sleep(1000)
    }
    const dt = (performance.now() - t0) / 1000
    const cpu1 = await sysfs.ksmdCpuSeconds()
    const direct = { sharing: readKsm('pages_sharing'), shared: readKsm('pages_shared'), zero: fs.existsSync(path.join(KSM, 'ksm_zero_pages')) ? readKsm('ksm_zero_pages') : 0 }
    const k = last?.host.ksm ?? null
    const sorted = [...shares].sort((a, b) => a - b)
    return {
      guests: 2,
      identicalMiBPerGuest: KSM_MIB,
      runSeconds: r2(dt),
      policy: { ...mem.ksmPolicy },
      decision: { run: k?.run ?? null, reason: k?.reason ?? null, pagesToScan: k?.pagesToScan ?? null, sleepMs: k?.sleepMs ?? null },
      counters: { ...ksm.counters },
      // The twins' own merged pages (both guests' identical pages, up to 2 x KSM_MIB).
      twinsMergedMiB: r2(merged()),
      secondsToMergeOneGuestsWorth: halfAt === null ? null : r2(halfAt),
      agentSavedMiB: r2(k?.savedMiB ?? null),
      agentNetSavedMiB: r2(k?.netSavedMiB ?? null),
      sysSavedMiB: r2((direct.sharing + direct.zero) * 4096 / 1048576),
      pagesSharing: direct.sharing,
      pagesShared: direct.shared,
      note: 'saved = pages_sharing (+ ksm_zero_pages): each merged page\'s first mapping is counted in pages_shared and saves nothing (the kernel\'s general_profit, net of KSM\'s metadata, is agentNetSavedMiB); the host figures are the whole machine\'s (other QEMU guests here may be merged too)',
      ksmdCpuShareOfOneCore: cpu0 === null || cpu1 === null ? null : r2((cpu1 - cpu0) / dt),
      ksmdCpuShareMedianPerStep: sorted.length === 0 ? null : r2(sorted[Math.floor(sorted.length / 2)] as number),
      ksmdCpuBudget: KSM_BUDGET / 100,
      load: l
    }
  } finally {
    await sysfs.restore()
    // Whatever the loop wrote, the host's settings go back.
    for (const [f, v] of saved) { try { fs.writeFileSync(path.join(KSM, f), v) } catch { /* leave it */ } }
    for (const p of ports) p.close()
    await driver.close()
    fs.rmSync(tmp, { recursive: true, force: true })
  }
}

async function cpuOver (pids: Record<string, number>, ms: number): Promise<Record<string, number>> {
  const a = Object.fromEntries(Object.entries(pids).map(([k, p]) => [k, processCpuSeconds(p) ?? 0]))
  const t0 = performance.now()
  await sleep(ms)
  const dt = (performance.now() - t0) / 1000
  return Object.fromEntries(Object.entries(pids).map(([k, p]) => [k, ((processCpuSeconds(p) ?? 0) - (a[k] as number)) / dt]))
}

async function cpuScenario (guestDir: string): Promise<Record<string, unknown>> {
  const layout = detectCpuCgroup()
  if (layout === null) return { skipped: 'no cpu cgroup controller' }
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'bench-cpu-'))
  const driver = new QemuDriver({ runDir: path.join(tmp, 'vms'), accel: 'auto', dieWithAgent: true, killOnClose: true }, { logger: silentLogger() })
  const cg = new CgroupCpu(layout, { parent: `starling-bench-${process.pid}`, vmCores: null })
  try {
    await cg.setup()
    for (const id of ['high', 'low']) {
      const s = guestSpec(guestDir, tmp, id, 128, 'dirtier_ws=8 dirtier_rate=max')
      await driver.start({ ...s, extra: { ...s.extra, balloon: false } })
    }
    const pids = { high: driver.pid('high') as number, low: driver.pid('low') as number }
    for (const [id, pid] of Object.entries(pids)) {
      await cg.place(id, pid)
      await cg.set(id, 100, null)
      execFileSync('taskset', ['-a', '-p', '1', String(pid)], { stdio: 'ignore' })
    }
    for (const id of ['high', 'low']) await until(`${id} busy`, () => consoleLines(driver.serialPath(id)).includes('dirtier ready'), 90_000)
    const qmp = (id: string, cmd: string): Promise<unknown> => (driver as unknown as { vms: Map<string, { qmp: { execute: (c: string) => Promise<unknown> } }> }).vms.get(id)?.qmp.execute(cmd) ?? Promise.resolve()
    const l = load()
    let cpuUs = 0; let steps = 0; let elapsed = 0
    const rounds: Array<{ demand: number, equal: Record<string, number>, alloc: Record<string, number> }> = []
    for (let round = 0; round < CPU_ROUNDS; round++) {
      // Demand: the high-class guest alone (the other paused); then both with equal weights.
      for (const id of ['high', 'low']) await cg.set(id, 100, null)
      await qmp('low', 'stop')
      await sleep(1000)
      const alone = await cpuOver(pids, 4000)
      await qmp('low', 'cont')
      await sleep(1000)
      const equal = await cpuOver(pids, 5000)
      // Then the allocation, stepping once a second (a fresh loop: it converges in a few steps).
      const ctlRound = new CpuController({
        params: defaultCpuAllocParams(),
        capacityCores: 1,
        setting: vm => vm === 'high' ? { qos: 'high', weight: 1, capCores: null } : { qos: 'low', weight: 1, capCores: null }
      }, { cgroup: cg, pid: vm => driver.pid(vm), schedSeconds: processSchedSeconds, logger: silentLogger() })
      let stepping = true
      const t0 = performance.now()
      const loop = (async () => {
        while (stepping) {
          const vms = await driver.list()
          const c0 = process.cpuUsage(); await ctlRound.step(vms); const c1 = process.cpuUsage(c0)
          cpuUs += c1.user + c1.system; steps++
          await sleep(1000)
        }
      })()
      await sleep(4000)
      const alloc = await cpuOver(pids, 5000)
      stepping = false
      await loop
      elapsed += (performance.now() - t0) / 1000
      rounds.push({ demand: alone.high as number, equal, alloc })
      say(`CPU round ${round + 1}: demand ${(alone.high as number).toFixed(2)}, equal ${(equal.high as number).toFixed(2)}, allocated ${(alloc.high as number).toFixed(2)} cores`)
    }
    const med = (f: (r: typeof rounds[number]) => number): number | null => r2(median(rounds.map(f)))
    return {
      cgroups: `v${layout.version}`,
      host: 'both guests pinned to CPU 0 (one core, two busy vCPUs)',
      rounds: rounds.length,
      highDemandCores: med(r => r.demand),
      equalShares: { highCores: med(r => r.equal.high as number), lowCores: med(r => r.equal.low as number), highShareOfDemand: med(r => (r.equal.high as number) / r.demand) },
      withAllocation: { highCores: med(r => r.alloc.high as number), lowCores: med(r => r.alloc.low as number), highShareOfDemand: med(r => (r.alloc.high as number) / r.demand) },
      target: 'highShareOfDemand >= 0.95 with allocation',

      agentCpu: { steps, msPerStep: steps === 0 ? null : r2(cpuUs / 1000 / steps), shareOfOneCore: r2(cpuUs / 1e6 / elapsed) },
      load: l
    }
  } finally {
    await driver.close()
    await cg.close()
    fs.rmSync(tmp, { recursive: true, force: true })
  }
}

async function main (): Promise<void> {
  if (process.getuid?.() !== 0) throw new Error('bench:memory needs root (cgroups, KSM)')
  execFileSync('qemu-system-x86_64', ['--version'], { stdio: 'ignore' })
  const guestDir = buildTestGuest()
  const loadStart = load()
  // PARTS (default memory,ksm,cpu) runs only some scenarios; the others print as null.
  const parts = new Set((process.env.PARTS ?? 'memory,ksm,cpu').split(','))
  const starling = parts.has('memory') ? await memoryScenario(guestDir, 'starling') : null
  const proxmox = parts.has('memory') ? await memoryScenario(guestDir, 'proxmox') : null
  say('KSM')
  const ksm = parts.has('ksm') ? await ksmScenario(guestDir) : null
  say('CPU')
  const cpu: Record<string, unknown> | null = parts.has('cpu') ? await cpuScenario(guestDir) : null
  const ratio = (a: number | null, b: number | null): number | null => a === null || b === null || b === 0 ? null : r2(a / b)
  const out = {
    bench: 'memory',
    host: { cores: os.availableParallelism(), memMiB: Math.round(os.totalmem() / 1048576) },
    setup: { guestMiB: GUEST_MIB, hostBudgetMiB: HOST_MIB, targetPercent: 80, pressureEvents: PRESSURE_EVENTS, cpuRounds: CPU_ROUNDS },
    memory: { starling, proxmox },
    ratios: {
      reclaimSpeedStarlingOverProxmox: ratio(starling?.reclaim.mibPerS ?? null, proxmox?.reclaim.mibPerS ?? null),
      pressureTimeProxmoxOverStarling: ratio(proxmox?.pressureToMemoryS.median ?? null, starling?.pressureToMemoryS.median ?? null)
    },
    targets: {
      reclaimMiBPerS: { want: '>= 100', got: starling?.reclaim.mibPerS ?? null },
      pressureToMemoryS: { want: '<= 2', got: starling?.pressureToMemoryS.median ?? null },
      hostWithin5Percent: { want: 'all samples', got: starling?.hostWithin5PercentOfTarget.share ?? null },
      oomKills: { want: 0, got: starling?.oomKills ?? null },
      staleShrinks: { want: 0, got: starling?.staleShrinks ?? null },
      cpuHighShareWithAllocation: { want: '>= 0.95', got: (cpu?.withAllocation as { highShareOfDemand?: number } | undefined)?.highShareOfDemand ?? null }
    },
    ksm,
    cpu,
    load: { start: loadStart, end: load() }
  }
  process.stdout.write(JSON.stringify(out, null, 2) + '\n')
}

main().catch(err => { process.stderr.write(`bench:memory failed: ${(err as Error).stack ?? String(err)}\n`); process.exitCode = 1 })
