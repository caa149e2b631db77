// The CLI's bundle (packaging/bundle-cli.mjs), which the agent, the demo, the tests' clusters and
// the package all run: dist/agent/cli/starling.js is its entry, the chunks it names are beside it,
// a short command reads only a small part of it, and it runs.
import t from 'tap'
import { spawnSync } from 'node:child_process'
import { existsSync, readFileSync } from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..')
const cli = path.join(repo, 'dist', 'agent', 'cli')
const entry = path.join(cli, 'starling.js')

/** The files a module imports statically (relative imports), and all it can import (dynamic ones too). */
function imports (file: string): { statics: string[], all: string[] } {
  const s = readFileSync(file, 'utf8')
  const statics = [...s.matchAll(/^import\s+(?:[^;]*?\s+from\s+)?"\.\/([^"]+)"/gm)].map(m => m[1]!)
  const all = [...s.matchAll(/(?:from\s+|import\s*\(?\s*)"\.\/([^"]+)"/g)].map(m => m[1]!)
  return { statics, all }
}

t.test('the entry is the bundle, and every chunk it can reach is beside it', t => {
  if (!existsSync(entry)) { t.fail('dist/ missing: run `npm run build` first'); t.end(); return }
  t.match(readFileSync(entry, 'utf8').slice(0, 200), /bundled by packaging\/bundle-cli\.mjs/, 'dist/agent/cli/starling.js is the bundle (npm run build bundles after tsc)')
  const seen = new Set<string>()
  const todo = ['starling.js']
  while (todo.length > 0) {
    const f = todo.pop()!
    if (seen.has(f)) continue
    seen.add(f)
    t.ok(existsSync(path.join(cli, f)), `${f} exists`)
    if (existsSync(path.join(cli, f))) todo.push(...imports(path.join(cli, f)).all)
  }
  t.ok(seen.size > 2, `${seen.size} files in the bundle`)
  t.end()
})

t.test('a short command reads a small part of the bundle: the agent is in chunks loaded on demand', t => {
  if (!existsSync(entry)) { t.fail('dist/ missing: run `npm run build` first'); t.end(); return }
  const seen = new Set<string>()
  const todo = ['starling.js']
  let bytes = 0
  while (todo.length > 0) {
    const f = todo.pop()!
    if (seen.has(f)) continue
    seen.add(f)
    bytes += readFileSync(path.join(cli, f)).byteLength
    todo.push(...imports(path.join(cli, f)).statics)
  }
  const total = [...new Set(imports(entry).all)].length
  t.ok(bytes < 200 * 1024, `the entry and its static imports: ${Math.round(bytes / 1024)} KiB (${seen.size} files; the entry can reach ${total} chunks)`)
  const r = spawnSync(process.execPath, [entry, '--help'], { encoding: 'utf8' })
  t.equal(r.status, 0, 'starling --help runs from the bundle')
  t.match(r.stdout, /usage: starling/)
  t.end()
})
