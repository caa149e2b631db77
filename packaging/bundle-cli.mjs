#!/usr/bin/env node
/**
 * Bundles the compiled CLI (dist/agent/cli/starling.js, written by tsc) in its place: an entry,
 * and the commands it loads on demand as chunks beside it, so that the agent, the CLI, the demo,
 * the tests and the package all run the bundle.
 *
 * Why: an agent's start is mostly Node's module loader resolving and reading a few hundred files
 * (ours and hyperswarm's many small packages). `npm run bench:start` measures one agent's CPU
 * until its API answers, under the daemon's flags (--lite-mode): 200 ms from the bundle against
 * 280 ms from tsc's output (REPS=5). Where many agents start at once (a host's boot, a test bed,
 * a cluster's first start), that is less work before each one answers.
 *
 * Kept outside: native addons (located at run time beside their package) and packages that load
 * their own files by computed paths. They stay in node_modules, which the package ships.
 * The bundle sits where tsc put the entry, at the same depth as the rest of dist/agent, so that
 * the paths computed from import.meta.url (the web page's files, the PlanetLab traces, the demo's
 * own entry) resolve as before.
 * Usage: node packaging/bundle-cli.mjs (after tsc; `npm run build` runs both).
 */
import { build } from 'esbuild'
import { copyFileSync, existsSync, readFileSync, readdirSync, rmSync } from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')
const entry = path.join(root, 'dist', 'agent', 'cli', 'starling.js')
if (!existsSync(entry)) {
  process.stderr.write(`bundle-cli: ${entry} is missing: run tsc -p tsconfig.build.json first\n`)
  process.exit(1)
}
const MARK = '// starling: bundled by packaging/bundle-cli.mjs'
/** The chunks' file names begin with this (packaging/deb/build.sh ships them). */
const CHUNK_PREFIX = 'bundle-'
// Already a bundle (tsc did not run since): nothing to do; bundling it again would declare the
// banner's require twice.
if (readFileSync(entry, 'utf8').slice(0, 200).includes(MARK)) {
  process.stdout.write('bundle-cli: already bundled\n')
  process.exit(0)
}

// tsc's entry is kept beside the bundle: `npm run bench:start` compares the two, and its stack
// traces name the source files (node dist/agent/cli/starling.unbundled.js ...).
copyFileSync(entry, path.join(path.dirname(entry), 'starling.unbundled.js'))

const EXTERNAL = [
  'sodium-native', 'udx-native', 'classic-level', 'fs-native-extensions', 'require-addon', 'node-gyp-build',
  'systeminformation'
]

// The previous build's chunks (their names carry a hash of their contents).
const dir = path.dirname(entry)
for (const f of readdirSync(dir)) if (f.startsWith(CHUNK_PREFIX) && f.endsWith('.js')) rmSync(path.join(dir, f))

const result = await build({
  entryPoints: [entry],
  outdir: dir,
  allowOverwrite: true,
  bundle: true,
  // The commands' dynamic imports become chunks beside the entry: a short command (`starling
  // status`) reads the CLI's chunk and its own, not the agent's.
  splitting: true,
  chunkNames: `${CHUNK_PREFIX}[hash]`,
  platform: 'node',
  format: 'esm',
  target: 'node20',
  external: EXTERNAL,
  // CommonJS packages inside an ES module bundle still call require(): give them Node's.
  banner: { js: `${MARK}\nimport { createRequire as __starlingRequire } from 'node:module'; const require = __starlingRequire(import.meta.url);` },
  legalComments: 'eof',
  logLevel: 'warning',
  metafile: true
})
const inputs = Object.keys(result.metafile.inputs).length
const outputs = Object.values(result.metafile.outputs)
const bytes = outputs.reduce((a, o) => a + o.bytes, 0)
process.stdout.write(`bundle-cli: ${path.relative(root, entry)}: ${inputs} modules in ${outputs.length} files, ${Math.round(bytes / 1024)} KiB\n`)
