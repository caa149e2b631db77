// Determinism boundary: no clock, no timers, no Math.random, no node:* imports, no async/await
// and no IO anywhere under agent/core. Scans the source text (comments stripped).
// Import directions (the layers hold): the core imports only itself and policies/; policies/
// import only themselves; adapters/ import no cli/, runtime/ or sim/ (only ports/, lib/, api/ and
// the core's index); ports/ hold interfaces over the core's index; everything else under agent/
// reaches the core only through agent/core/index.ts; and neither the core nor the policies have
// an import cycle, type-only imports included.
import t from 'tap'
import { readdirSync, readFileSync, statSync } from 'node:fs'
import { dirname, join, relative, resolve, sep } from 'node:path'
import { fileURLToPath } from 'node:url'

const repo = fileURLToPath(new URL('../../../', import.meta.url))
const root = join(repo, 'agent', 'core')

function files (dir: string): string[] {
  const out: string[] = []
  for (const name of readdirSync(dir)) {
    const p = join(dir, name)
    if (statSync(p).isDirectory()) out.push(...files(p))
    else if (name.endsWith('.ts') && !name.endsWith('.d.ts')) out.push(p)
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

// ---------------------------------------------------------------------------------------------
// Import directions

/** Every module specifier a source names: static imports and re-exports, side-effect imports, import(). */
export function specifiers (src: string): string[] {
  const s = stripComments(src)
  const out: string[] = []
  const re = /\bfrom\s+['"]([^'"]+)['"]|^\s*import\s+['"]([^'"]+)['"]|\bimport\s*\(\s*['"]([^'"]+)['"]\s*\)/gm
  for (const m of s.matchAll(re)) out.push((m[1] ?? m[2] ?? m[3]) as string)
  return out
}

/** Repository-relative path (forward slashes) of a relative specifier from `file`, as its .ts source. */
function target (file: string, spec: string): string {
  return relative(repo, resolve(dirname(join(repo, file)), spec.replace(/\.js$/, '.ts'))).split(sep).join('/')
}

const under = (p: string, dir: string): boolean => p.startsWith(dir + '/')

/**
 * The rule broken by `file` (repository-relative) importing `spec`, or null. Packages and node:
 * modules are judged by the determinism check above (the core) and by the rules here (policies).
 */
export function importViolation (file: string, spec: string): string | null {
  const relativeSpec = spec.startsWith('.')
  const to = relativeSpec ? target(file, spec) : null
  if (under(file, 'agent/core')) {
    if (to === null) return `the core imports no package (${spec})`
    if (!under(to, 'agent/core') && !under(to, 'policies')) return `the core imports only itself and policies/ (${to})`
    return null
  }
  if (under(file, 'policies')) {
    if (to === null) return `policies import no package (${spec})`
    if (!under(to, 'policies')) return `policies import only policies/ (${to})`
    return null
  }
  if (to === null) return null
  if (under(file, 'agent') && under(to, 'agent/core') && to !== 'agent/core/index.ts') return `the edge imports the core only through agent/core/index.ts (${to})`
  if (under(file, 'agent/adapters')) {
    const allowed = ['agent/adapters', 'agent/ports', 'agent/lib', 'agent/api']
    if (to !== 'agent/core/index.ts' && !allowed.some(d => under(to, d))) return `adapters import only adapters/, ports/, lib/, api/ and the core's index (${to})`
  }
  if (under(file, 'agent/ports')) {
    if (to !== 'agent/core/index.ts' && !under(to, 'agent/ports') && !under(to, 'agent/lib')) return `ports import only ports/, lib/ and the core's index (${to})`
  }
  return null
}

/** Import cycles among `list` (repository-relative paths): the strongly connected components of more than one file. */
export function cycles (graph: ReadonlyMap<string, readonly string[]>): string[][] {
  let next = 0
  const index = new Map<string, number>()
  const low = new Map<string, number>()
  const stack: string[] = []
  const onStack = new Set<string>()
  const out: string[][] = []
  const visit = (v: string): void => {
    index.set(v, next); low.set(v, next); next++
    stack.push(v); onStack.add(v)
    for (const w of graph.get(v) ?? []) {
      if (!graph.has(w)) continue
      if (!index.has(w)) { visit(w); low.set(v, Math.min(low.get(v) as number, low.get(w) as number)) } else if (onStack.has(w)) low.set(v, Math.min(low.get(v) as number, index.get(w) as number))
    }
    if (low.get(v) === index.get(v)) {
      const c: string[] = []
      let w: string
      do { w = stack.pop() as string; onStack.delete(w); c.push(w) } while (w !== v)
      if (c.length > 1) out.push(c.sort())
    }
  }
  for (const v of graph.keys()) if (!index.has(v)) visit(v)
  return out
}

const sources = (dir: string): string[] => files(join(repo, dir)).map(f => relative(repo, f).split(sep).join('/'))

t.test('the rules catch what they are meant to catch', t => {
  t.match(importViolation('policies/selection.ts', '../agent/core/prng.js'), /policies import only policies/)
  t.match(importViolation('agent/core/state.ts', '../runtime/runtime.js'), /the core imports only itself and policies/)
  t.match(importViolation('agent/core/state.ts', 'node:fs'), /the core imports no package/)
  t.equal(importViolation('agent/core/ha/restart.ts', '../../../policies/placement.js'), null, 'core -> policies is allowed')
  t.match(importViolation('agent/adapters/http-api.ts', '../cli/render.js'), /adapters import only/)
  t.match(importViolation('agent/adapters/http-api.ts', '../runtime/runtime.js'), /adapters import only/)
  t.equal(importViolation('agent/adapters/http-api.ts', 'node:http'), null)
  t.match(importViolation('agent/main.ts', './core/agent-core.js'), /only through agent\/core\/index.ts/)
  t.match(importViolation('agent/sim/trace/cloudsim.ts', '../../core/prng.js'), /only through agent\/core\/index.ts/)
  t.equal(importViolation('agent/sim/trace/cloudsim.ts', '../../core/index.js'), null)
  t.match(importViolation('agent/ports/store.ts', '../adapters/level-store.js'), /ports import only/)
  t.same(specifiers("import a from './a.js'\nimport type { B } from \"./b.js\"\nexport { c } from './c.js'\nimport './d.js'\nconst e = await import('./e.js')\n// import f from './f.js'\n"),
    ['./a.js', './b.js', './c.js', './d.js', './e.js'], 'specifiers: static, type-only, re-export, side effect, dynamic; not in comments')
  t.same(cycles(new Map([['a', ['b']], ['b', ['c']], ['c', ['a']], ['d', ['a']]])), [['a', 'b', 'c']], 'a three-file cycle is found')
  t.same(cycles(new Map([['a', ['b']], ['b', []]])), [], 'no cycle, none found')
  t.end()
})

t.test('imports follow the layers', t => {
  const list = [...sources('agent'), ...sources('policies')]
  t.ok(list.length > 100, `found the sources (${list.length})`)
  let checked = 0
  for (const f of list) {
    for (const spec of specifiers(readFileSync(join(repo, f), 'utf8'))) {
      checked++
      const v = importViolation(f, spec)
      if (v !== null) t.fail(`${f}: ${v}`)
    }
  }
  t.ok(checked > 500, `checked every import (${checked})`)
  t.end()
})

t.test('no import cycle in the core or the policies (type-only imports included)', t => {
  const graph = new Map<string, string[]>()
  for (const f of [...sources('agent/core'), ...sources('policies')]) {
    graph.set(f, specifiers(readFileSync(join(repo, f), 'utf8')).filter(s => s.startsWith('.')).map(s => target(f, s)))
  }
  t.ok(graph.size > 50, `found the sources (${graph.size})`)
  t.same(cycles(graph), [], 'no cycles')
  t.end()
})
