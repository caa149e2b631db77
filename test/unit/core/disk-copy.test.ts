/**
 * planDiskCopy (agent/core/migration/disk-copy.ts): a background mirror while the guest dirties
 * mirror regions (at the mirror's granularity) slower than half the link, write-blocking beyond.
 * Run: npx tap test/unit/core/disk-copy.test.ts
 */
import t from 'tap'
import { BACKGROUND_SHARE, planDiskCopy } from '../../../agent/core/migration/disk-copy.js'

const MiB = 1024 * 1024
const link = 30 * MiB
const base = { writeSizeBytes: 4096, granularityBytes: 65536, bandwidthBytesPerS: link, sizeBytes: 256 * MiB, allocatedBytes: 224 * MiB }

t.test('an idle disk is copied in the background', async t => {
  const p = planDiskCopy({ ...base, writeBytesPerS: 0 })
  t.equal(p.copyMode, 'background')
  t.equal(p.dirtyBytesPerS, 0)
  t.equal(Math.round(p.firstPassMs), Math.round(224 / 30 * 1000), 'first pass: allocated data over the link')
})

t.test('small random writes dirty a whole mirror region each', async t => {
  // 256 KiB/s of 4 KiB writes = 64 writes/s = 4 MiB/s of 64 KiB regions: background.
  const moderate = planDiskCopy({ ...base, writeBytesPerS: 256 * 1024 })
  t.equal(moderate.dirtyBytesPerS, 4 * MiB)
  t.equal(moderate.copyMode, 'background')
  // 2 MiB/s of 4 KiB writes = 32 MiB/s of regions, above half the 30 MiB/s link: write-blocking.
  const high = planDiskCopy({ ...base, writeBytesPerS: 2 * MiB })
  t.equal(high.dirtyBytesPerS, 32 * MiB)
  t.equal(high.copyMode, 'write-blocking')
  t.match(high.reason, /write-blocking/)
})

t.test('the threshold is half the link', async t => {
  const at = BACKGROUND_SHARE * link / 65536 * 4096
  t.equal(planDiskCopy({ ...base, writeBytesPerS: at }).copyMode, 'background', 'at the threshold: background')
  t.equal(planDiskCopy({ ...base, writeBytesPerS: at * 1.01 }).copyMode, 'write-blocking', 'above it: write-blocking')
  t.equal(planDiskCopy({ ...base, writeBytesPerS: 2 * MiB, writeSizeBytes: 1 * MiB }).copyMode, 'background', 'large sequential writes dirty no more than they write')
})

t.test('the reason gives the first pass estimate when the allocation is known', async t => {
  t.match(planDiskCopy({ ...base, writeBytesPerS: 0 }).reason, /first pass about 7\.5 s for 224\.0 MiB/)
  t.notMatch(planDiskCopy({ ...base, writeBytesPerS: 0, allocatedBytes: 0 }).reason, /first pass/, 'unknown allocation: no estimate')
})
