/**
 * Goal: the libvirt driver reads virsh's outputs right, survives odd ones, and maps failures to
 * the port's error codes; its migration bookkeeping passes the right arguments to virsh.
 *
 * Method: (1) the parsers on outputs captured from libvirt 9.0 (domstats --raw, also its
 * dirtyrate fields, domjobinfo --rawstats while running and completed, domstate --reason,
 * dominfo, virsh errors) and on garbage; (2) the driver against libvirt's built-in test driver (`test:///default`, real virsh,
 * a fresh state per connection: lifecycle calls, stats, setmem, unsupported job calls); (3) the
 * driver against a scripted stand-in for virsh that records its arguments, to check the migrate
 * command line, the console path rewrite, the completed figures read from the destination, and
 * timeouts, garbage and crashes; (4) describe, resume and killIfNotRunning (the migration
 * wiring's calls) on test:///default and on a scripted virsh whose domain state is set per case
 * (running, incoming, paused after a failed or completed migration, post-copy on either side,
 * shut off, persistent, gone, virsh missing); (5) measureDirtyRate on a scripted virsh (the
 * command line, an old virsh without --mode, a measurement of someone else's under way or started
 * in between, one that never ends, one libvirt forgets, one without a rate). The real migration and a real dirty rate are in libvirt-migrate.test.ts.
 * Run: npx tap test/adapters/libvirt-driver.test.ts  (about 20 s: the scripted measurements wait
 * out their measuring time)
 */
import t from 'tap'
import { execFileSync } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import {
  LibvirtDriver, buildDomainXml, classifyVirshError, formatMigrationTarget, jobToProgress, memoryFactsOf, parseDomstate, parseDominfo,
  diskProgress, parseDirtyRate, parseDomstats, parseIterationEvent, parseJobInfo, parseMigrationTarget, rewriteSerialPath, disksOf, rewriteDiskPaths, runStateOf, serialPathOf, virshErrorText
} from '../../agent/adapters/libvirt-driver.js'
import type { MigrationParams } from '../../agent/ports/migrating-driver.js'
import { silentLogger } from '../../agent/lib/logger.js'
import { canMigrate, driverExecutor } from '../../agent/runtime/driver-commands.js'
import { sleep } from '../lib/wait.js'

// ---- Outputs captured from libvirt 9.0 (Debian 12) ----------------------------------------------

const DOMSTATS = `Domain: 'g1'
  state.state=1
  state.reason=1
  cpu.time=4130000000
  cpu.user=3630000000
  cpu.system=500000000
  balloon.current=262144
  balloon.maximum=262144
  balloon.last-update=0
  balloon.rss=122912
  vcpu.current=1
  vcpu.maximum=1
  vcpu.0.state=1
  vcpu.0.time=3700000000
  dirtyrate.calc_mode=page-sampling

Domain: 'g2'
  state.state=3
  state.reason=2

`

// domstats --raw --dirtyrate of a TCG guest: never measured, while measuring, measured.
const DIRTY_UNSTARTED = `Domain: 'g1'
  dirtyrate.calc_status=0
  dirtyrate.calc_start_time=0
  dirtyrate.calc_period=0
  dirtyrate.calc_mode=page-sampling

`

const DIRTY_MEASURING = `Domain: 'g1'
  dirtyrate.calc_status=1
  dirtyrate.calc_start_time=21954
  dirtyrate.calc_period=1
  dirtyrate.calc_mode=page-sampling

`

const DIRTY_MEASURED = `Domain: 'g1'
  dirtyrate.calc_status=2
  dirtyrate.calc_start_time=22117
  dirtyrate.calc_period=2
  dirtyrate.calc_mode=page-sampling
  dirtyrate.megabytes_per_second=60

`

const JOB_ACTIVE = `Job type: 2

operation: 5
time_elapsed: 1739
data_total: 268828672
data_processed: 52428800
data_remaining: 216399872
memory_total: 268828672
memory_processed: 52428800
memory_remaining: 216399872
memory_bps: 85560947
memory_dirty_rate: 120
memory_iteration: 1
memory_postcopy_requests: 0
memory_page_size: 4096
downtime: 300
disk_total: 0
`

const JOB_COMPLETED = `Job type: 3

operation: 4
time_elapsed: 5909
time_elapsed_net: 5908
downtime: 77
downtime_net: 76
setup_time: 2
data_total: 268828672
data_processed: 108126303
data_remaining: 0
memory_total: 268828672
memory_processed: 108126303
memory_remaining: 0
memory_bps: 85560947
memory_constant: 39458
memory_normal: 26260
memory_normal_bytes: 107560960
memory_dirty_rate: 0
memory_iteration: 3
memory_postcopy_requests: 0
memory_page_size: 4096
disk_total: 0
disk_processed: 0
disk_remaining: 0

`

const DOMINFO = `Id:             1
Name:           test
UUID:           6695eb01-f6a4-8304-79aa-97f2502e193f
OS Type:        linux
State:          running
CPU(s):         2
CPU time:       1795313312.9s
Max memory:     8388608 KiB
Used memory:    1048576 KiB
Persistent:     yes
Security DOI:   
`

const DUMPXML = `<domain type='qemu' id='1'>
  <name>g1</name>
  <devices>
    <serial type='file'>
      <source path='/srv/a/serial/g1.log'/>
      <target type='isa-serial' port='0'>
        <model name='isa-serial'/>
      </target>
    </serial>
    <console type='file'>
      <source path='/srv/a/serial/g1.log'/>
      <target type='serial' port='0'/>
    </console>
    <disk type='file' device='disk'><source file='/srv/a/serial/g1.log'/><target dev='vda'/></disk>
  </devices>
</domain>
`

const GARBAGE = ['', '\n\n', '\u0000\u0001\u00ff', 'Domain:', "Domain: 'x", '=====', 'Job type:', 'Job type: 99\nfoo', ':::', 'a'.repeat(100_000),
  Buffer.from(Array.from({ length: 4096 }, (_, i) => (i * 7919) % 256)).toString('latin1')]

t.test('disks of a live domain XML: file disks with their first backing file', async t => {
  const xml = `<domain><devices>
    <disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='/srv/vm1/top.qcow2' index='3'/>
      <backingStore type='file' index='2'><format type='qcow2'/><source file='/srv/base/mid.qcow2'/>
        <backingStore type='file' index='1'><format type='raw'/><source file='/srv/base/root.img'/><backingStore/></backingStore>
      </backingStore>
      <target dev='vda' bus='virtio'/></disk>
    <disk type='file' device='disk'><driver name='qemu' type='raw'/><source file='/srv/vm1/data&amp;1.img'/><backingStore/><target dev='vdb' bus='virtio'/></disk>
    <disk type='file' device='cdrom'><source file='/iso/x.iso'/><target dev='sda'/><readonly/></disk>
  </devices></domain>`
  t.same(disksOf(xml), [
    { file: '/srv/vm1/top.qcow2', format: 'qcow2', dev: 'vda', readonly: false, shareable: false, backing: '/srv/base/mid.qcow2', backingFormat: 'qcow2' },
    { file: '/srv/vm1/data&1.img', format: 'raw', dev: 'vdb', readonly: false, shareable: false }
  ], 'the overlay names its first base; an empty backingStore is none; a cdrom is no disk')
  const moved = rewriteDiskPaths(xml, [{ from: '/srv/vm1/top.qcow2', to: '/img/vm1/top.qcow2' }])
  t.match(moved, "<source file='/img/vm1/top.qcow2'", 'the moved disk points at the target image')
  t.match(moved, "<source file='/srv/base/mid.qcow2'/>", 'its base stays where both hosts hold it')
})

t.test('disk progress of a migration with storage: copied whole once the migration completed', async t => {
  // The last statistics seen while the copy ran (it ended between two polls), as in a run where a
  // completed migration reported 1.0 of 3.0 MiB copied.
  const last = { disk_total: String(3 * 1048576), disk_processed: String(1048576) }
  const running = diskProgress(last, false, 'background')
  t.equal(running.doneBytes, 1048576, 'while it runs: what libvirt said')
  t.notOk(running.ready, 'and not ready')
  const done = diskProgress(last, true, 'background', true)
  t.equal(done.doneBytes, 3 * 1048576, 'completed: the total')
  t.equal(done.sentBytes, 3 * 1048576, 'sent as well')
  t.equal(diskProgress({ disk_total: '100', disk_processed: '150' }, true, 'background', true).doneBytes, 150, 'never below what libvirt counted')
  t.equal(diskProgress(null, true, 'background').doneBytes, 0, 'armed, not begun: nothing copied')
})

t.test('domstats --raw', async t => {
  const s = parseDomstats(DOMSTATS)
  t.same([...s.keys()], ['g1', 'g2'])
  t.equal(s.get('g1')?.['cpu.time'], '4130000000')
  t.equal(s.get('g1')?.['balloon.maximum'], '262144')
  t.equal(s.get('g1')?.['dirtyrate.calc_mode'], 'page-sampling')
  t.same(s.get('g2'), { 'state.state': '3', 'state.reason': '2' })
  t.equal(parseDomstats(DOMSTATS.replace(/\n/g, '\r\n')).get('g1')?.['vcpu.current'], '1', 'CRLF tolerated')
  t.equal(parseDomstats("  stray=1\nDomain: 'a'\nnot a pair\n  k=v=w\n").get('a')?.k, 'v=w', 'stray lines skipped, = in values kept')
  t.equal(parseDomstats("Domain: 'a'\n  __proto__=1\n").get('a')?.__proto__, '1', 'no prototype pollution')
  for (const g of GARBAGE) t.doesNotThrow(() => parseDomstats(g))
})

t.test('domstats --dirtyrate', async t => {
  const of = (text: string): ReturnType<typeof parseDirtyRate> => parseDirtyRate(parseDomstats(text).get('g1'))
  t.same(of(DIRTY_UNSTARTED), { status: 'unstarted', startTimeS: 0, periodS: 0, mode: 'page-sampling', mibPerS: null }, 'never measured')
  t.same(of(DIRTY_MEASURING), { status: 'measuring', startTimeS: 21954, periodS: 1, mode: 'page-sampling', mibPerS: null }, 'measuring: no rate yet')
  t.same(of(DIRTY_MEASURED), { status: 'measured', startTimeS: 22117, periodS: 2, mode: 'page-sampling', mibPerS: 60 }, 'measured')
  t.equal(of(DIRTY_MEASURED.replace('calc_status=2', 'calc_status=measured')).status, 'measured', 'a status by name')
  t.same(parseDirtyRate(parseDomstats(DOMSTATS).get('g2')), { status: 'unknown', startTimeS: null, periodS: null, mode: null, mibPerS: null }, 'no dirtyrate fields (libvirt skipped the group)')
  t.same(parseDirtyRate(undefined), { status: 'unknown', startTimeS: null, periodS: null, mode: null, mibPerS: null }, 'no record')
  const odd = of(DIRTY_MEASURED.replace('calc_status=2', 'calc_status=7').replace('=60', '=-3').replace('=22117', '=soon'))
  t.same(odd, { status: 'unknown', startTimeS: null, periodS: 2, mode: 'page-sampling', mibPerS: null }, 'odd status and figures read as unknown and null')
  t.equal(of(DIRTY_MEASURED.replace('=60', '=')).mibPerS, null, 'an empty rate is no rate (not 0)')
  for (const g of GARBAGE) t.doesNotThrow(() => parseDirtyRate(parseDomstats(g).get('g1')))
})

t.test('domjobinfo --rawstats', async t => {
  const a = parseJobInfo(JOB_ACTIVE)
  t.equal(a.type, 'unbounded')
  t.equal(a.operation, 5)
  const pa = jobToProgress(a, 'active')
  t.match(pa, {
    status: 'active', totalTimeMs: 1739, downtimeMs: null, expectedDowntimeMs: 300, transferredBytes: 52428800,
    remainingBytes: 216399872, totalBytes: 268828672, dirtySyncCount: 1, dirtyPagesRate: 120, pageSizeBytes: 4096,
    postcopyRequests: 0, cpuThrottlePercent: 0, errorDesc: null
  })
  t.ok(Math.abs(pa.mbps - 684.49) < 0.01, 'bytes/s to Mbit/s')
  const c = parseJobInfo(JOB_COMPLETED)
  t.equal(c.type, 'completed')
  t.equal(c.operation, 4)
  t.match(jobToProgress(c, 'completed'), { downtimeMs: 77, expectedDowntimeMs: null, totalTimeMs: 5909, transferredBytes: 108126303, remainingBytes: 0, dirtySyncCount: 3 })
  t.equal(parseJobInfo('Job type:         None        \n\n').type, 'none', 'the human form')
  t.equal(parseJobInfo('Job type:         Unbounded   \nOperation:        Outgoing migration\n').type, 'unbounded')
  t.equal(parseJobInfo('Job type: 4\nerrmsg: migration failed: boom\n').fields.errmsg, 'migration failed: boom')
  t.equal(jobToProgress(parseJobInfo('Job type: 4\nerrmsg: boom\n'), 'failed').errorDesc, 'boom')
  const odd = jobToProgress(parseJobInfo('Job type: 2\ntime_elapsed: -5\nmemory_total: NaN\nmemory_processed: 1e400\nmemory_page_size: 0\n'), 'active')
  t.match(odd, { totalTimeMs: 0, totalBytes: 0, transferredBytes: 0, pageSizeBytes: 4096 }, 'negative, NaN, infinite read as 0; page size defaults')
  for (const g of GARBAGE) {
    t.doesNotThrow(() => jobToProgress(parseJobInfo(g), 'active'))
    const p = jobToProgress(parseJobInfo(g), 'active')
    t.ok(Object.values(p).every(v => typeof v !== 'number' || Number.isFinite(v)), 'every figure finite')
  }
  t.equal(parseJobInfo('Job type: 99\n').type, 'none', 'unknown job type')
})

t.test('migration-iteration events (virsh event --loop, libvirt 9.0)', async t => {
  t.equal(parseIterationEvent("event 'migration-iteration' for domain 'g1': iteration: '2'"), 2, 'the sync number')
  t.equal(parseIterationEvent("2026-12-05 23:56:01.378+0000: event 'migration-iteration' for domain 'g-1.x': iteration: '13'"), 13, 'with --timestamp')
  t.equal(parseIterationEvent("event 'lifecycle' for domain 'g1': Suspended Migrated"), null, 'another event')
  t.equal(parseIterationEvent('events received: 3'), null, 'the summary line')
  t.equal(parseIterationEvent(''), null, 'nothing')
})

t.test('domstate, dominfo, run states', async t => {
  t.same(parseDomstate('running (migrated)\n\n'), { state: 'running', reason: 'migrated' })
  t.same(parseDomstate('shut off (destroyed)'), { state: 'shut off', reason: 'destroyed' })
  t.same(parseDomstate('paused'), { state: 'paused', reason: '' })
  t.equal(parseDomstate(''), null)
  t.equal(parseDomstate('((('), null)
  const i = parseDominfo(DOMINFO)
  t.equal(i['CPU(s)'], '2')
  t.equal(i['Max memory'], '8388608 KiB')
  t.equal(i['Security DOI'], '')
  for (const g of GARBAGE) { t.doesNotThrow(() => parseDomstate(g)); t.doesNotThrow(() => parseDominfo(g)) }
  t.equal(runStateOf(1, 1), 'running')
  t.equal(runStateOf(3, 1), 'paused')
  t.equal(runStateOf(3, 2), 'migrating', 'paused for migration')
  t.equal(runStateOf(3, 12), 'migrating', 'paused in post-copy')
  t.equal(runStateOf(3, 11, true), 'migrating', 'incoming domain')
  t.equal(runStateOf(5, 3), 'stopped')
  t.equal(runStateOf(6, 0), 'stopped')
  t.equal(runStateOf(0, 0), 'paused')
  t.equal(runStateOf(NaN, NaN), 'paused')
})

t.test('virsh errors to DriverError codes', async t => {
  t.equal(classifyVirshError("error: failed to get domain 'nope'\n"), 'VM_NOT_FOUND')
  t.equal(classifyVirshError("error: failed to get domain 'nope'\nerror: Domain not found: no domain with matching name 'nope'\n"), 'VM_NOT_FOUND')
  t.equal(classifyVirshError("error: failed to connect to the hypervisor\nerror: unable to connect to server at '127.0.0.1:1': Connection refused\n"), 'DRIVER_UNREACHABLE')
  t.equal(classifyVirshError("error: failed to connect to the hypervisor\nerror: Failed to connect socket to '/var/run/libvirt/libvirt-sock': No such file or directory\n"), 'DRIVER_UNREACHABLE')
  t.equal(classifyVirshError('error: Timed out during operation: cannot acquire state change lock (held by monitor=remoteDispatchDomainMigratePerform3Params)'), 'DRIVER_TIMEOUT')
  t.equal(classifyVirshError('error: Requested operation is not valid: no job is active on the domain'), 'DRIVER_FAILED')
  t.equal(classifyVirshError(''), 'DRIVER_FAILED')
  t.equal(virshErrorText("error: failed to connect to the hypervisor\nerror: unable to connect to server\n"), 'failed to connect to the hypervisor; unable to connect to server')
  t.equal(virshErrorText('plain text\n'), 'plain text')
  t.ok(virshErrorText('error: ' + 'x'.repeat(5000)).length <= 500, 'bounded')
})

t.test('migration target strings', async t => {
  const tg = { destUri: 'qemu+tcp://10.0.0.2:16509/system?no_verify=1&x=y', migrateUri: 'tcp://10.0.0.2:49152', listenAddress: '10.0.0.2', serialPath: '/var/log/vm a&b.log' }
  t.same(parseMigrationTarget(formatMigrationTarget(tg)), tg, 'round trip with reserved characters')
  const { serialPath: _s, ...noSerial } = tg
  t.same(parseMigrationTarget(formatMigrationTarget(noSerial)), noSerial)
  const withDisks = { ...tg, disks: [{ from: '/srv/a b.qcow2', to: '/img/vm1/a b.qcow2' }], shallow: true }
  t.same(parseMigrationTarget(formatMigrationTarget(withDisks)), withDisks, 'with the disks and the overlay-only copy')
  for (const bad of ['', 'tcp:1.2.3.4:5', 'libvirt-p2p:?dest=x', 'libvirt-p2p:?dest=x&migrateuri=udp://a&listen=a', 'libvirt-p2p:?migrateuri=tcp://a&listen=a', '%%%']) {
    t.equal(parseMigrationTarget(bad), null, `rejected: ${bad}`)
  }
})

t.test('domain XML: building it and moving the console', async t => {
  const spec = { id: 'vm-1', vcpus: 2, memMiB: 256 }
  const xml = buildDomainXml(spec, { kernel: '/k', initrd: '/i', append: 'console=ttyS0 a<b & "c"' }, { type: 'qemu', machine: 'pc', serialPath: "/s/it's.log" })
  t.match(xml, /<domain type='qemu'>/)
  t.match(xml, /<name>vm-1<\/name>/)
  t.match(xml, /<memory unit='MiB'>256<\/memory>/)
  t.match(xml, /<vcpu>2<\/vcpu>/)
  t.match(xml, /<cmdline>console=ttyS0 a&lt;b &amp; &quot;c&quot;<\/cmdline>/, 'escaped')
  t.equal(serialPathOf(xml), "/s/it's.log", 'serial path read back unescaped')
  t.match(xml, /<memballoon model='virtio' autodeflate='on'\/>/, 'the balloon gives way to a guest about to run out of memory (deflate-on-oom)')
  t.match(buildDomainXml(spec, { balloon: false, disks: [{ file: '/d.qcow2', format: 'qcow2' }, { file: '/e.img' }] }, { type: 'kvm', machine: 'q35', cpuModel: 'Haswell' }),
    /type='kvm'[\s\S]*machine='q35'[\s\S]*Haswell[\s\S]*type='qcow2'[\s\S]*vda[\s\S]*vdb[\s\S]*memballoon model='none'/)
  const moved = rewriteSerialPath(DUMPXML, '/srv/b/serial/g1.log')
  t.ok(moved !== null)
  t.equal((moved ?? '').match(/\/srv\/b\/serial\/g1\.log/g)?.length, 2, 'serial and console moved')
  t.match(moved, /<source file='\/srv\/a\/serial\/g1\.log'\/>/, 'a disk with the same path is left alone')
  t.equal(rewriteSerialPath('<domain><devices><serial type="pty"><source path="/dev/pts/3"/></serial></devices></domain>', '/x'), null, 'pty console: nothing to move')
  for (const g of GARBAGE) { t.doesNotThrow(() => rewriteSerialPath(g, '/x')); t.doesNotThrow(() => serialPathOf(g)) }
})

// ---- The driver against libvirt's test driver ---------------------------------------------------

let haveVirsh = true
try { execFileSync('virsh', ['--version'], { stdio: 'ignore' }) } catch { haveVirsh = false }

t.test('against test:///default (real virsh)', async t => {
  if (!haveVirsh) { t.fail('virsh cannot run: install the Debian package libvirt-clients'); return }
  const d = new LibvirtDriver({ uri: 'test:///default', domainType: 'qemu' }, { logger: silentLogger() })
  const l = await d.list()
  t.match(l, [{ id: 'test', vcpus: 2, memMiB: 8192, memUsedMiB: 2048, state: 'running', cpuUtil: 0 }], 'the built-in domain, sized from dominfo')
  t.match(await d.domainStats('test'), { 'state.state': '1' })
  await t.rejects(d.domainStats('nope'), { code: 'VM_NOT_FOUND' })
  await d.balloon('test', 1024)
  t.pass('setmem accepted')
  await d.stop('test')
  t.pass('destroy accepted')
  await t.rejects(d.stop('nope'), { code: 'VM_NOT_FOUND' })
  await t.rejects(d.progress('test'), { code: 'DRIVER_FAILED', message: /not supported/ }, 'the test driver has no job statistics')
  await t.rejects(d.cancel('test'), { code: 'DRIVER_FAILED' })
  await t.rejects(d.setDowntimeLimit('test', 100), { code: 'DRIVER_FAILED' })
  await t.rejects(d.setDowntimeLimit('test', 0), { code: 'DRIVER_FAILED', message: /positive/ })
  await t.rejects(d.startPostcopy('test'), { code: 'DRIVER_FAILED', message: /no outgoing migration/ })
  await d.start({ id: 'tq', vcpus: 1, memMiB: 64 })
  t.pass('create of a generated XML accepted')
  await t.rejects(d.start({ id: 'x', vcpus: 1, memMiB: 64, extra: { xml: '<domain><name>y</name></domain>' } }), { code: 'DRIVER_FAILED', message: /must name/ })
  await t.rejects(d.start({ id: 'x', vcpus: 1, memMiB: 64, extra: { kernel: 5 } }), { code: 'DRIVER_FAILED', message: /extra.kernel/ })
  await t.rejects(d.start({ id: 'x', vcpus: 0, memMiB: 64 }), { code: 'DRIVER_FAILED' })
  await t.rejects(d.prepareIncoming({ id: 'test', vcpus: 1, memMiB: 64 }, '127.0.0.1:0'), { code: 'DRIVER_FAILED', message: /already active/ })
  await t.rejects(d.prepareIncoming({ id: 'new', vcpus: 1, memMiB: 64 }, 'nonsense'), { code: 'DRIVER_FAILED', message: /host:port/ })
  const { uri } = await d.prepareIncoming({ id: 'new', vcpus: 1, memMiB: 64 }, '[::1]:49152')
  t.same(parseMigrationTarget(uri), { destUri: 'qemu+tcp://[::1]/system', migrateUri: 'tcp://[::1]:49152', listenAddress: '::1' })
  t.match(await d.progress('new'), { status: 'none' }, 'a prepared target without its domain yet')
})

// ---- The driver against a scripted virsh --------------------------------------------------------

t.test('against a scripted virsh', async t => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'starling-fake-virsh-'))
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  const fake = path.join(dir, 'virsh')
  const argsLog = path.join(dir, 'args')
  // Behaviour per subcommand; MODE in the environment picks the variant.
  fs.writeFileSync(fake, `#!/bin/sh
uri=$2; shift 2
echo "$uri $*" >> '${argsLog}'
mode=$(cat '${dir}/mode' 2>/dev/null)
case "$1" in
  dumpxml) cat <<'EOF'
${DUMPXML}EOF
  ;;
  migrate)
    for a in "$@"; do case "$prev" in --xml) cp "$a" '${dir}/sent.xml' ;; esac; prev=$a; done
    case "$mode" in
      fail) echo "error: operation failed: migration out job: unexpectedly failed" >&2; exit 1 ;;
      slow|pslow) sleep 1.5; exit 0 ;;
      *) exit 0 ;;
    esac ;;
  domjobinfo)
    case "$*" in
      *--completed*) if [ "$uri" = dest:///x ]; then cat <<'EOF'
${JOB_COMPLETED}EOF
        else echo "Job type: 0"; fi ;;
      *) if [ "$mode" = slow ] || [ "$mode" = pslow ]; then cat <<'EOF'
${JOB_ACTIVE}EOF
         else echo "Job type: 0"; fi ;;
    esac ;;
  domstats)
    case "$mode" in
      garbage) head -c 3000 /dev/urandom ;;
      hang) exec sleep 10 ;;
      pslow) printf "Domain: '%s'\\n  state.state=3\\n  state.reason=12\\n" "$4" ;;
      *) printf "Domain: 'g1'\\n  state.state=1\\n  balloon.maximum=262144\\n  balloon.current=131072\\n  vcpu.maximum=1\\n  cpu.time=1\\n" ;;
    esac ;;
  crash) kill -SEGV $$ ;;
  destroy) if [ "$mode" = gone ]; then echo "error: failed to get domain '$2'" >&2; exit 1; fi ;;
  *) ;;
esac
exit 0
`, { mode: 0o755 })
  const setMode = (m: string): void => fs.writeFileSync(path.join(dir, 'mode'), m)
  const args = (): string[] => { try { return fs.readFileSync(argsLog, 'utf8').trim().split('\n') } catch { return [] } }
  const d = new LibvirtDriver({ uri: 'src:///x', virsh: fake, domainType: 'qemu', callTimeoutMs: 2000 }, { logger: silentLogger() })
  const target = formatMigrationTarget({ destUri: 'dest:///x', migrateUri: 'tcp://10.0.0.2:49152', listenAddress: '10.0.0.2', serialPath: '/srv/b/serial/g1.log' })
  const params: MigrationParams = { mode: 'hybrid', maxBandwidthBytes: 100 * 1048576 + 1, downtimeLimitMs: 250, autoConverge: true, xbzrle: true, multifd: 4 }

  setMode('ok')
  await d.migrate('g1', target, params)
  const line = args().find(l => l.includes(' migrate ')) ?? ''
  t.match(line, /^src:\/\/\/x migrate --live --p2p --migrateuri tcp:\/\/10\.0\.0\.2:49152 --listen-address 10\.0\.0\.2 --xml \S+g1\.xml --postcopy --auto-converge --compressed --comp-methods xbzrle --parallel --parallel-connections 4 --bandwidth 101 g1 dest:\/\/\/x$/, 'the migrate command line')
  t.equal((fs.readFileSync(path.join(dir, 'sent.xml'), 'utf8').match(/\/srv\/b\/serial\/g1\.log/g) ?? []).length, 2, 'the XML sent names the destination console')
  const p = await d.progress('g1')
  t.match(p, { status: 'completed', downtimeMs: 77, totalTimeMs: 5909, dirtySyncCount: 3 }, 'completed figures read from the destination')
  t.ok(args().some(l => l.startsWith('dest:///x domjobinfo --completed --keep-completed --rawstats g1')), 'asked the destination, keeping its record')
  setMode('gone')
  await d.stop('g1')
  t.pass('stop() after a completed migration accepts that libvirt already removed the domain')
  await t.rejects(d.stop('g1'), { code: 'VM_NOT_FOUND' }, 'but only once')

  fs.rmSync(argsLog, { force: true })
  setMode('slow')
  await d.migrate('g1', target, { ...params, mode: 'precopy', multifd: 0, xbzrle: false, autoConverge: false, maxBandwidthBytes: 0 })
  t.ok(args().some(l => l.endsWith('migrate-setmaxdowntime g1 250')), 'downtime limit set once the job runs')
  t.notMatch(args().find(l => l.includes(' migrate ')), /--postcopy|--bandwidth|--parallel/, 'pre-copy without caps')
  await t.rejects(d.migrate('g1', target, params), { code: 'DRIVER_FAILED', message: /already migrating/ })
  t.match(await d.progress('g1'), { status: 'active', transferredBytes: 52428800, expectedDowntimeMs: 300 })
  await d.setBandwidth('g1', 1)
  t.ok(args().some(l => l.endsWith('migrate-setspeed g1 1')), 'migrate-setspeed in MiB/s')
  await sleep(1800)
  t.match(await d.progress('g1'), { status: 'completed' })

  fs.rmSync(argsLog, { force: true })
  setMode('pslow')
  await d.migrate('g1', target, { ...params, mode: 'postcopy' })
  let ps = await d.progress('g1')
  for (let i = 0; i < 20 && ps.status !== 'postcopy-active'; i++) { await sleep(50); ps = await d.progress('g1') }
  t.equal(ps.status, 'postcopy-active', 'post-copy at once: switched in the background, seen from the paused source')
  t.ok(args().some(l => l.endsWith('migrate-postcopy g1')), 'virsh migrate-postcopy')
  await t.rejects(d.cancel('g1'), { code: 'DRIVER_FAILED', message: /post-copy/ }, 'no cancel once in post-copy')
  await sleep(1800)
  t.match(await d.progress('g1'), { status: 'completed' })

  setMode('fail')
  await t.rejects(d.migrate('g1', target, params), { code: 'DRIVER_FAILED', message: /unexpectedly failed/ }, 'a migration refused at once')
  t.match(await d.progress('g1'), { status: 'failed', errorDesc: /unexpectedly failed/ })

  setMode('ok')
  const l = await d.list()
  t.match(l, [{ id: 'g1', memMiB: 256, memUsedMiB: 128, vcpus: 1, state: 'running' }])
  await t.rejects(d.balloon('g1', 300), { code: 'DRIVER_FAILED' })
  await d.balloon('g1', 128)
  t.ok(args().some(l => l.endsWith('setmem g1 131072 --live')), 'setmem in KiB, live')

  setMode('garbage')
  t.same(await d.list(), [], 'random bytes from domstats: an empty list')
  await t.rejects(d.domainStats('g1'), { code: 'VM_NOT_FOUND' })

  setMode('hang')
  const t0 = performance.now()
  await t.rejects(d.list(), { code: 'DRIVER_TIMEOUT' }, 'a hung virsh hits the deadline')
  t.ok(performance.now() - t0 < 4000, 'and is killed then')
  const ac = new AbortController()
  setTimeout(() => ac.abort(), 100)
  await t.rejects(d.list(ac.signal), { code: 'DRIVER_TIMEOUT', message: /aborted/ }, 'the caller\'s signal')

  await t.rejects(d.virsh(['crash']), { code: 'DRIVER_FAILED' }, 'virsh killed by a signal')
  const missing = new LibvirtDriver({ uri: 'x:///', virsh: path.join(dir, 'no-such-virsh'), domainType: 'qemu' }, { logger: silentLogger() })
  await t.rejects(missing.list(), { code: 'DRIVER_UNREACHABLE' }, 'no virsh binary')
  await t.rejects(d.migrate('g1', 'tcp:10.0.0.2:4444', params), { code: 'DRIVER_FAILED' })
  await t.rejects(d.migrate('../x', target, params), { code: 'DRIVER_FAILED', message: /vm id/ })
})

// ---- describe, resume, killIfNotRunning (the migration wiring's calls) --------------------------

t.test('describe, resume, killIfNotRunning against test:///default (real virsh)', async t => {
  if (!haveVirsh) { t.fail('virsh cannot run: install the Debian package libvirt-clients'); return }
  const d = new LibvirtDriver({ uri: 'test:///default', domainType: 'qemu' }, { logger: silentLogger() })
  t.equal(d.accel, 'tcg', "domain type 'qemu' is tcg to the agent")
  // The test driver's built-in domain has one file disk, /guest/diskimage1 (raw; its size is the
  // test driver's own figure, read with domblkinfo).
  const builtIn = await d.describe('test')
  t.match(builtIn, { runStatus: 'running', migration: 'none', spec: { id: 'test', vcpus: 2, memMiB: 8192, extra: { disks: [{ file: '/guest/diskimage1', format: 'raw' }] } } }, 'the built-in domain (no job statistics in the test driver: no migration), with its disk')
  const disks = (builtIn?.spec.extra?.disks ?? []) as Array<{ sizeBytes?: number }>
  t.ok(disks.length === 1 && (disks[0]?.sizeBytes ?? 0) > 0, `the disk's virtual size (${String(disks[0]?.sizeBytes)})`)
  t.equal(await d.describe('nope'), null, 'no such domain: null')
  await d.resume('test')
  t.pass('resume of a running domain is a no-op')
  await t.rejects(d.resume('nope'), { code: 'VM_NOT_FOUND' })
  // HA's fence by pause (fencePolicy "pause"). test:///default keeps state per connection, so
  // each call sees the built-in domain running: the pause is checked by its own answer.
  await d.pause('test')
  t.pass('pause of a running domain succeeds (virsh suspend)')
  await t.rejects(d.pause('nope'), { code: 'VM_NOT_FOUND' })
  await t.rejects(d.pause('../x'), { code: 'DRIVER_FAILED', message: /vm id/ })
  await t.rejects(d.killIfNotRunning('test'), { code: 'VM_RUNNING' }, 'a running guest is never killed')
  await t.rejects(d.killIfNotRunning('nope'), { code: 'VM_NOT_FOUND' })
  await t.rejects(d.describe('../x'), { code: 'DRIVER_FAILED', message: /vm id/ })
  await t.rejects(d.measureDirtyRate('test'), { code: 'DRIVER_FAILED', message: /not supported/ }, 'the test driver cannot measure a dirty rate')

  // The runtime's executor drives it like the QEMU driver.
  t.ok(canMigrate(d), 'the migration wiring accepts the libvirt driver')
  const run = driverExecutor(d, { migrationListenHost: '127.0.0.1' })
  const signal = AbortSignal.timeout(30_000)
  const q = await run({ kind: 'query', mig: 'm1', vm: 'test' }, signal)
  t.match(q, {
    ok: true, kind: 'query', query: { presence: 'running', migration: 'none', spec: { vcpus: 2, memMiB: 8192, extraJson: /"file":"\/guest\/diskimage1"/ }, dirtyRateBytesPerS: 0, accel: 'tcg', disks: 'local', canMoveStorage: true, storageProblem: 'disk /guest/diskimage1 does not exist on the source' }
  }, 'query: a running VM with its size, its disk local (no sharedStorage), and why it cannot move here (the image is the test driver\'s fiction)')
  const measured = await run({ kind: 'query', mig: 'm1', vm: 'test', measure: true }, signal)
  t.ok(measured.ok && measured.kind === 'query' && measured.query.dirtyRateMeasured === undefined && measured.query.dirtyRateBytesPerS === 0,
    'query with measure: a driver that cannot measure leaves the rate unmeasured rather than failing the query')
  t.match(await run({ kind: 'query', mig: 'm1', vm: 'nope' }, signal), { ok: true, query: { presence: 'absent', spec: null } }, 'query: absent')
  t.match(await run({ kind: 'stopSource', mig: 'm1', vm: 'test' }, signal), { ok: false, code: 'VM_RUNNING' }, 'stopSource refuses a running guest')
  t.match(await run({ kind: 'killIncoming', mig: 'm1', vm: 'nope' }, signal), { ok: false, code: 'VM_NOT_FOUND' })
  t.same(await run({ kind: 'resume', mig: 'm1', vm: 'test' }, signal), { ok: true, kind: 'resume' })
  const prep = await run({ kind: 'prepareIncoming', mig: 'm1', vm: 'new', spec: { vcpus: 1, memMiB: 64, extraJson: '{}' }, postcopy: true }, signal)
  t.match(prep, { ok: true, kind: 'prepareIncoming', uri: /^libvirt-p2p:/ }, 'prepareIncoming: a p2p target on the listen host')
  t.match(parseMigrationTarget(prep.ok && prep.kind === 'prepareIncoming' ? prep.uri : ''), { listenAddress: '127.0.0.1', migrateUri: 'tcp://127.0.0.1' })
})

t.test('describe, resume, killIfNotRunning against a scripted virsh', async t => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'starling-fake-virsh-'))
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  const fake = path.join(dir, 'virsh')
  const argsLog = path.join(dir, 'args')
  // One domain g1. Files in the directory hold its state: exists, state ("<state> <reason>"),
  // job (domjobinfo), completed (domjobinfo --completed), persistent (yes/no).
  fs.writeFileSync(fake, `#!/bin/sh
shift 2
echo "$*" >> '${argsLog}'
D='${dir}'
st=$(cut -d' ' -f1 "$D/state" 2>/dev/null)
case "$1" in
  domstats|dominfo|domjobinfo|domstate|resume|destroy|undefine)
    if [ ! -e "$D/exists" ]; then
      echo "error: failed to get domain 'g1'" >&2
      echo "error: Domain not found: no domain with matching name 'g1'" >&2
      exit 1
    fi ;;
esac
case "$1" in
  domstats) printf "Domain: 'g1'\\n  state.state=%s\\n  state.reason=%s\\n" $(cat "$D/state") ;;
  dominfo) printf "Id:             3\\nName:           g1\\nCPU(s):         2\\nMax memory:     262144 KiB\\nUsed memory:    262144 KiB\\nPersistent:     %s\\n" "$(cat "$D/persistent" 2>/dev/null || echo no)" ;;
  domjobinfo) case "$*" in
      *--completed*) cat "$D/completed" 2>/dev/null || echo "Job type: 0" ;;
      *) cat "$D/job" 2>/dev/null || echo "Job type: 0" ;;
    esac ;;
  domstate) case "$st" in 1) echo running ;; 3) echo paused ;; *) echo "shut off" ;; esac ;;
  resume) if [ "$st" != 3 ]; then echo "error: internal error: domain 'g1' not paused" >&2; exit 1; fi; echo "1 5" > "$D/state" ;;
  destroy) if [ "$st" = 5 ]; then echo "error: Requested operation is not valid: domain is not running" >&2; exit 1; fi; echo "5 2" > "$D/state" ;;
  undefine) rm -f "$D/exists" ;;
esac
exit 0
`, { mode: 0o755 })
  const put = (name: string, text: string | null): void => {
    if (text === null) fs.rmSync(path.join(dir, name), { force: true })
    else fs.writeFileSync(path.join(dir, name), text)
  }
  const domain = (state: string, o: { job?: string, completed?: string, persistent?: boolean } = {}): void => {
    put('exists', '')
    put('state', state)
    put('job', o.job ?? null)
    put('completed', o.completed ?? null)
    put('persistent', o.persistent === true ? 'yes' : 'no')
    fs.rmSync(argsLog, { force: true })
  }
  const args = (): string[] => { try { return fs.readFileSync(argsLog, 'utf8').trim().split('\n') } catch { return [] } }
  const d = new LibvirtDriver({ uri: 'src:///x', virsh: fake, domainType: 'kvm', callTimeoutMs: 2000 }, { logger: silentLogger() })
  t.equal(d.accel, 'kvm')
  const spec = { id: 'g1', vcpus: 2, memMiB: 256, extra: {} }
  const incomingJob = JOB_ACTIVE.replace('operation: 5', 'operation: 4')
  const failedOut = 'Job type: 4\n\noperation: 5\nerrmsg: migration failed\n'

  put('exists', null)
  t.equal(await d.describe('g1'), null, 'no domain: null')
  await t.rejects(d.resume('g1'), { code: 'VM_NOT_FOUND' })
  await t.rejects(d.killIfNotRunning('g1'), { code: 'VM_NOT_FOUND' }, 'nothing to kill (after a p2p hand-over libvirt removed the source)')

  domain('1 1')
  t.same(await d.describe('g1'), { runStatus: 'running', migration: 'none', spec }, 'running, sized from dominfo')
  await t.rejects(d.killIfNotRunning('g1'), { code: 'VM_RUNNING' })
  t.notOk(args().some(l => l.startsWith('destroy')), 'no destroy of a running guest')
  await d.resume('g1')
  t.pass('resume of a running guest is a no-op')

  domain('1 2', { completed: JOB_COMPLETED })
  t.match(await d.describe('g1'), { runStatus: 'running', migration: 'none' }, 'the completed incoming job that brought the VM here is not a migration away')
  t.ok(args().some(l => l === 'domjobinfo --completed --keep-completed --rawstats g1'), 'the completed record is kept for others')

  domain('3 2', { job: incomingJob })
  t.same(await d.describe('g1'), { runStatus: 'inmigrate', migration: 'active', spec }, 'an incoming copy (job operation 4)')
  // libvirtd finishes an incoming migration by itself (it may start the guest between a read of
  // the state and a destroy): never destroyed while its job runs.
  await t.rejects(d.killIfNotRunning('g1'), { code: 'VM_RUNNING' }, 'not while libvirt migrates it in')
  t.notOk(args().some(l => l.startsWith('destroy')), 'no destroy while the incoming job runs')
  domain('3 2')
  await d.killIfNotRunning('g1')
  t.ok(args().includes('destroy g1'), 'once the job is over, the copy left paused is destroyed')
  t.notOk(args().some(l => l.startsWith('undefine')), 'nothing undefined by a transient-mode driver')
  t.match(await d.describe('g1'), { runStatus: 'shutdown' })

  domain('3 2', { job: JOB_ACTIVE.replace('memory_total: 268828672', 'memory_total: 0') })
  t.match(await d.describe('g1'), { runStatus: 'postmigrate', migration: 'setup' }, 'an outgoing job that has not sized the memory yet')

  domain('3 2', { completed: failedOut })
  t.match(await d.describe('g1'), { runStatus: 'postmigrate', migration: 'failed' }, 'a source left paused by a failed migration')
  await d.resume('g1')
  t.ok(args().includes('resume g1'), 'virsh resume')
  t.match(await d.describe('g1'), { runStatus: 'running', migration: 'failed' })

  domain('3 1', { completed: JOB_COMPLETED.replace('operation: 4', 'operation: 5') })
  t.match(await d.describe('g1'), { runStatus: 'paused', migration: 'completed' }, 'paused, after a completed outgoing migration')
  await d.killIfNotRunning('g1')
  t.ok(args().includes('destroy g1'), 'a paused source is destroyed')

  for (const [state, runStatus, migration] of [['3 12', 'postmigrate', 'postcopy-active'], ['1 10', 'running', 'postcopy-active'], ['3 13', 'postmigrate', 'postcopy-paused'], ['1 11', 'running', 'postcopy-paused']] as const) {
    domain(state)
    t.match(await d.describe('g1'), { runStatus, migration }, `state ${state}: ${runStatus}, ${migration}`)
    await t.rejects(d.killIfNotRunning('g1'), { code: 'VM_RUNNING' }, `state ${state}: a copy in post-copy is never killed`)
    t.notOk(args().some(l => l.startsWith('destroy')))
  }

  domain('5 2')
  t.match(await d.describe('g1'), { runStatus: 'shutdown', migration: 'none' }, 'a defined domain that is shut off')
  await t.rejects(d.resume('g1'), { code: 'DRIVER_FAILED', message: /not paused/ }, 'resume of a shut-off domain fails')
  await d.killIfNotRunning('g1')
  t.pass('killIfNotRunning of a shut-off domain: nothing to destroy')

  const dp = new LibvirtDriver({ uri: 'src:///x', virsh: fake, domainType: 'qemu', persistent: true, callTimeoutMs: 2000 }, { logger: silentLogger() })
  domain('3 1', { persistent: true })
  await dp.killIfNotRunning('g1')
  t.ok(args().includes('destroy g1') && args().includes('undefine g1'), 'a persistent-mode driver also undefines the domain')
  t.equal(await dp.describe('g1'), null, 'gone')
  domain('5 2', { persistent: true })
  await dp.killIfNotRunning('g1')
  t.ok(args().includes('undefine g1'), 'a shut-off persistent domain is undefined')

  const missing = new LibvirtDriver({ uri: 'x:///', virsh: path.join(dir, 'no-such-virsh'), domainType: 'qemu' }, { logger: silentLogger() })
  await t.rejects(missing.describe('g1'), { code: 'DRIVER_UNREACHABLE' }, 'an unreachable libvirt is not an absent VM')
  await t.rejects(missing.killIfNotRunning('g1'), { code: 'DRIVER_UNREACHABLE' })
  await t.rejects(missing.resume('g1'), { code: 'DRIVER_UNREACHABLE' })
})

// ---- measureDirtyRate against a scripted virsh ----------------------------------------------------

t.test('measureDirtyRate against a scripted virsh', async t => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'starling-fake-virsh-'))
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  const fake = path.join(dir, 'virsh')
  const argsLog = path.join(dir, 'args')
  // MODE picks the variant: ok; old (a virsh without --mode); race (the first start finds one
  // under way); other (one under way when asked); stuck (never done); lost (libvirt forgets it);
  // norate (done without a rate). A measurement is "started" once the file 'started' exists.
  fs.writeFileSync(fake, `#!/bin/sh
shift 2
echo "$*" >> '${argsLog}'
mode=$(cat '${dir}/mode' 2>/dev/null)
st='${dir}/started'
n=$(cat '${dir}/n' 2>/dev/null || echo 0); echo $((n + 1)) > '${dir}/n'
case "$1" in
  domdirtyrate-calc)
    [ "$2" = nope ] && { echo "error: failed to get domain 'nope'" >&2; exit 1; }
    case "$mode:$*" in
      old:*--mode*) echo "error: command 'domdirtyrate-calc' doesn't support option --mode" >&2; exit 1 ;;
    esac
    if [ "$mode" = race ] && [ ! -e '${dir}/raced' ]; then
      touch '${dir}/raced'
      echo "error: internal error: unable to execute QEMU command 'calc-dirty-rate': the dirty rate is already being measured." >&2; exit 1
    fi
    touch "$st"; echo "Start to calculate domain's memory dirty rate successfully." ;;
  domstats)
    [ "$4" = nope ] && { echo "error: failed to get domain 'nope'" >&2; exit 1; }
    echo "Domain: '$4'"
    if [ "$mode" = other ] && [ "$n" -lt 4 ]; then
      printf '  dirtyrate.calc_status=1\\n  dirtyrate.calc_start_time=499\\n  dirtyrate.calc_period=1\\n'
    elif [ ! -e "$st" ]; then
      printf '  dirtyrate.calc_status=2\\n  dirtyrate.calc_start_time=500\\n  dirtyrate.calc_period=1\\n  dirtyrate.megabytes_per_second=99\\n'
    else case "$mode" in
      stuck) printf '  dirtyrate.calc_status=1\\n  dirtyrate.calc_start_time=501\\n  dirtyrate.calc_period=1\\n' ;;
      lost) printf '  dirtyrate.calc_status=0\\n  dirtyrate.calc_start_time=0\\n  dirtyrate.calc_period=0\\n' ;;
      norate) printf '  dirtyrate.calc_status=2\\n  dirtyrate.calc_start_time=501\\n  dirtyrate.calc_period=1\\n' ;;
      *) printf '  dirtyrate.calc_status=2\\n  dirtyrate.calc_start_time=501\\n  dirtyrate.calc_period=1\\n  dirtyrate.calc_mode=page-sampling\\n  dirtyrate.megabytes_per_second=5\\n' ;;
    esac fi ;;
esac
exit 0
`, { mode: 0o755 })
  const setMode = (m: string): void => {
    for (const f of ['args', 'started', 'raced', 'n']) fs.rmSync(path.join(dir, f), { force: true })
    fs.writeFileSync(path.join(dir, 'mode'), m)
  }
  const args = (): string[] => { try { return fs.readFileSync(argsLog, 'utf8').trim().split('\n') } catch { return [] } }
  const d = new LibvirtDriver({ uri: 'src:///x', virsh: fake, domainType: 'qemu', callTimeoutMs: 2000 }, { logger: silentLogger() })

  setMode('ok')
  let t0 = performance.now()
  t.equal(await d.measureDirtyRate('g1'), 5 * 1048576, 'MiB/s from libvirt in bytes/s; the earlier measurement (99 MiB/s, start 500) is not taken for ours')
  t.ok(performance.now() - t0 >= 940, 'it waits out the measuring time before reading')
  t.same(args().filter(l => l.startsWith('domdirtyrate-calc')), ['domdirtyrate-calc g1 --seconds 1 --mode page-sampling'], 'started once, in page-sampling mode')
  t.ok(args().every(l => l.startsWith('domdirtyrate-calc') || l === 'domstats --raw --dirtyrate g1'), 'read with domstats --raw --dirtyrate')

  for (const [given, seconds] of [[0.2, '1'], [Number.NaN, '1'], [2.4, '2']] as const) {
    setMode('ok')
    await d.measureDirtyRate('g1', { calcTimeS: given })
    t.ok(args().includes(`domdirtyrate-calc g1 --seconds ${seconds} --mode page-sampling`), `calcTimeS ${given}: --seconds ${seconds}`)
  }

  setMode('old')
  t.equal(await d.measureDirtyRate('g1'), 5 * 1048576, 'a virsh without --mode')
  t.same(args().filter(l => l.startsWith('domdirtyrate-calc')), ['domdirtyrate-calc g1 --seconds 1 --mode page-sampling', 'domdirtyrate-calc g1 --seconds 1'], 'is asked again without it (page sampling is its only mode)')

  setMode('race')
  t.equal(await d.measureDirtyRate('g1'), 5 * 1048576, 'a start that finds another measurement under way is retried')

  setMode('other')
  t.equal(await d.measureDirtyRate('g1'), 5 * 1048576, 'a measurement already under way is waited out first')
  t.equal(args().findIndex(l => l.startsWith('domdirtyrate-calc')), 5, 'started only once the other one had finished (four reads saw it measuring, the fifth measured)')

  setMode('stuck')
  const ac = new AbortController()
  setTimeout(() => ac.abort(), 1500)
  t0 = performance.now()
  await t.rejects(d.measureDirtyRate('g1', {}, ac.signal), { code: 'DRIVER_TIMEOUT' }, 'a measurement that never ends: the caller\'s signal ends the wait')
  t.ok(performance.now() - t0 < 2500, 'at once')

  setMode('lost')
  await t.rejects(d.measureDirtyRate('g1'), { code: 'DRIVER_FAILED', message: /no dirty-rate measurement/ }, 'libvirt forgot the measurement')
  setMode('norate')
  await t.rejects(d.measureDirtyRate('g1'), { code: 'DRIVER_FAILED', message: /without a rate/ }, 'measured without a rate is not 0')
  setMode('ok')
  await t.rejects(d.measureDirtyRate('nope'), { code: 'VM_NOT_FOUND' })
  await t.rejects(d.measureDirtyRate('../x'), { code: 'DRIVER_FAILED', message: /vm id/ })
})

t.test('memoryFacts: dommemstat arms the guest statistics, domstats reads them', async t => {
  // The balloon fields of `domstats --raw` as libvirt 9.0 prints them for a guest that answers.
  const rec = parseDomstats(`Domain: 'g1'
  state.state=1
  balloon.current=196608
  balloon.maximum=262144
  balloon.swap_in=0
  balloon.swap_out=0
  balloon.major_fault=210
  balloon.minor_fault=81000
  balloon.unused=120000
  balloon.available=180000
  balloon.usable=150000
  balloon.last-update=1700000000
  balloon.disk_caches=20000
  balloon.rss=140000
`).get('g1') ?? {}
  t.same(memoryFactsOf('g1', rec, true, 1700000002.5), {
    id: 'g1', maxMiB: 256, balloon: true, actualMiB: 192,
    guest: { totalMiB: 180000 / 1024, freeMiB: 120000 / 1024, availableMiB: 150000 / 1024, majorFaults: 210, swapInPages: 0, swapOutPages: 0, ageS: 2.5 }
  }, 'KiB to MiB; the age from last-update')
  const { 'balloon.last-update': _l, ...never } = rec
  t.equal(memoryFactsOf('g1', never, true, 1700000002).guest, null, 'a guest that never answered: no statistics')
  t.match(memoryFactsOf('g1', { ...rec, 'balloon.usable': '' }, true, 1700000002).guest, { availableMiB: null }, 'a statistic the guest does not report: null')
  t.same(memoryFactsOf('g1', rec, false, 0), { id: 'g1', maxMiB: 256, balloon: false, actualMiB: null, guest: null }, 'no balloon device')

  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'starling-fake-virsh-'))
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  const fake = path.join(dir, 'virsh')
  const argsLog = path.join(dir, 'args')
  fs.writeFileSync(fake, `#!/bin/sh
shift 2
echo "$*" >> '${argsLog}'
case "$1" in
  dommemstat)
    [ "$2" = nodev ] && { echo "error: Requested operation is not valid: No memory balloon device configured, can not set the collection period" >&2; exit 1; }
    [ "$2" = nope ] && { echo "error: failed to get domain 'nope'" >&2; exit 1; } ;;
  domstats)
    printf "Domain: '%s'\\n  state.state=1\\n  balloon.current=262144\\n  balloon.maximum=262144\\n  balloon.unused=100000\\n  balloon.last-update=%s\\n" "$3" "$(date +%s)" ;;
esac
exit 0
`, { mode: 0o755 })
  const args = (): string[] => { try { return fs.readFileSync(argsLog, 'utf8').trim().split('\n') } catch { return [] } }
  const d = new LibvirtDriver({ uri: 'src:///x', virsh: fake, domainType: 'qemu', callTimeoutMs: 2000 }, { logger: silentLogger() })
  const f = await d.memoryFacts('g1', 1)
  t.match(f, { id: 'g1', maxMiB: 256, balloon: true, actualMiB: 256, guest: { freeMiB: 100000 / 1024 } })
  t.ok((f.guest?.ageS ?? 99) < 2, 'fresh statistics')
  await d.memoryFacts('g1', 1)
  t.same(args().filter(l => l.startsWith('dommemstat')), ['dommemstat g1 --period 1 --live'], 'armed once')
  await d.memoryFacts('g1', 2)
  t.same(args().filter(l => l.startsWith('dommemstat')).slice(-1), ['dommemstat g1 --period 2 --live'], 'and again for a new period')
  t.match(await d.memoryFacts('nodev', 1), { balloon: false, actualMiB: null, guest: null }, 'no balloon device: reported, not an error')
  await d.memoryFacts('nodev', 1)
  t.equal(args().filter(l => l === 'dommemstat nodev --period 1 --live').length, 1, 'and not asked again')
  await t.rejects(d.memoryFacts('nope', 1), { code: 'VM_NOT_FOUND' }, 'an unknown VM')
})
