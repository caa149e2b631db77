// Determinism boundary: no clock, no timers, no Math.random, no node:* imports, no async/await
// and no IO anywhere under agent/core. Scans the source text (comments stripped).
import t from 'tap'
import { readdirSync, readFileSync, statSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = fileURLToPath(new URL('../../../agent/core', import.meta.url))

function files (dir: string): string[] {
  const out: string[] = []
  for (const name of readdirSync(dir)) {
    const p = join(dir, name)
    if (statSync(p).isDirectory()) out.push(...files(p))
    else if (name.endsWith('.ts')) out.push(p)
  }
  return out
}

const forbidden: Array<[RegExp, string]> = [
  [/\bDate\b/, 'Date'],
  [/\bsetTimeout\b|\bsetInterval\b|\bsetImmediate\b|\bqueueMicrotask\b/, 'timers'],
  [/\bMath\.random\b/, 'Math.random'],
  [/from\s+['"]node:|require\s*\(|from\s+['"](fs|path|os|net|dgram|child_process|crypto|process)['"]/, 'node imports'],
  [/\basync\b|\bawait\b|\bPromise\b/, 'async'],
  [/\bprocess\.|\bperformance\.|\bconsole\./, 'process/performance/console']
]

function stripComments (src: string): string {
  return src.replace(/\/\*[\s\S]*?\*\//g, '').replace(/(^|[^:'"`])\/\/.*$/gm, '$1')
}

t.test('agent/core has no nondeterminism or IO', t => {
  const list = files(root)
  t.ok(list.length > 5, 'found the core sources')
  for (const f of list) {
    const src = stripComments(readFileSync(f, 'utf8'))
    for (const [re, what] of forbidden) t.notMatch(src, re, `${f.slice(root.length + 1)}: no ${what}`)
  }
  t.end()
})
