/**
 * Strict keys for a JSON document: a shape (`KeySpec`) lists the keys each object may have, and
 * `checkKeys` refuses any other key with its path and, when one is close, the known key it was
 * probably meant to be:
 *
 *   config: node.apiListn: unknown key; did you mean apiListen?
 *   config: apiListen: unknown key; did you mean node.apiListen?
 *
 * Only keys are checked here; values (types, ranges) are the validators' business. The shape of
 * the agent's configuration is agent/config-keys.ts.
 */
import { ConfigError } from '../core/index.js'
import { isObj, type Obj } from './obj.js'

/** A value whose inside is not checked here (a number, a string, an array of strings...). */
export const V = 'value' as const

/** What a key may hold. A plain object lists the keys an object may have, each with its own spec. */
export type KeySpec = typeof V | KeyObject | ListOf | MapOf | ByKind | Renamed
export interface KeyObject { readonly [key: string]: KeySpec }

/** An array; its items that are objects follow `item` (other items are left to the validators). */
export class ListOf { constructor (readonly item: KeySpec) {} }
/** An object of free keys (member names, VM ids) whose values follow `value`. */
export class MapOf { constructor (readonly value: KeySpec) {} }
/** An object whose keys depend on the value of its `field` (e.g. "kind"); an unknown kind is checked against every variant's keys. */
export class ByKind { constructor (readonly field: string, readonly variants: Readonly<Record<string, KeyObject>>) {} }

/** A key that an earlier version knew: refused with its new name and why it changed. */
export class Renamed { constructor (readonly to: string, readonly why: string) {} }

export const listOf = (item: KeySpec): ListOf => new ListOf(item)
export const mapOf = (value: KeySpec): MapOf => new MapOf(value)
export const byKind = (field: string, variants: Record<string, KeyObject>): ByKind => new ByKind(field, variants)
export const renamed = (to: string, why: string): Renamed => new Renamed(to, why)

/** Every key of `o` as a value leaf (for flat records whose keys are those of their defaults). */
export function leavesOf (o: object): Record<string, typeof V> {
  return Object.fromEntries(Object.keys(o).map(k => [k, V]))
}

/**
 * Spec of a record type with exactly the keys of T (optional ones included): a key added to the
 * type and not to the spec, or the reverse, fails to compile.
 */
export type KeysOf<T> = { readonly [K in keyof Required<T>]: KeySpec }

/**
 * Edit distance with adjacent transpositions (optimal string alignment), case-insensitive:
 * "samplr" -> "sampler" 1, "apiLsiten" -> "apiListen" 1, "apilisten" -> "apiListen" 0.
 */
export function editDistance (a: string, b: string): number {
  const s = a.toLowerCase(); const t = b.toLowerCase()
  const rows: number[][] = []
  for (let i = 0; i <= s.length; i++) rows.push(Array.from({ length: t.length + 1 }, (_, j) => i === 0 ? j : j === 0 ? i : 0))
  for (let i = 1; i <= s.length; i++) {
    for (let j = 1; j <= t.length; j++) {
      const cost = s[i - 1] === t[j - 1] ? 0 : 1
      const row = rows[i] as number[]; const up = rows[i - 1] as number[]
      let d = Math.min((up[j] as number) + 1, (row[j - 1] as number) + 1, (up[j - 1] as number) + cost)
      if (i > 1 && j > 1 && s[i - 1] === t[j - 2] && s[i - 2] === t[j - 1]) d = Math.min(d, (rows[i - 2] as number[])[j - 2] as number + 1)
      row[j] = d
    }
  }
  return (rows[s.length] as number[])[t.length] as number
}

/**
 * The known key `key` was most likely meant to be, or null when none is close: at most a third
 * of the known key's length away (at least 1 edit), the nearest first, the first listed on a tie.
 */
export function closestKey (key: string, known: readonly string[]): string | null {
  let best: string | null = null
  let bestD = Infinity
  for (const k of known) {
    const d = editDistance(key, k)
    if (d <= Math.max(1, Math.floor(k.length / 3)) && d < bestD) { best = k; bestD = d }
  }
  return best
}

function join (path: string, key: string): string {
  return path === '' ? key : `${path}.${key}`
}

/** Paths (lists as `[]`, free keys as `*`) of every key the spec knows, by key. */
function indexKeys (spec: KeySpec, path: string, out: Map<string, string[]>): Map<string, string[]> {
  if (spec instanceof ListOf) return indexKeys(spec.item, `${path}[]`, out)
  if (spec instanceof MapOf) return indexKeys(spec.value, join(path, '*'), out)
  if (spec instanceof ByKind) {
    for (const v of Object.values(spec.variants)) indexKeys(v, path, out)
    return out
  }
  if (spec === V || spec instanceof Renamed) return out
  for (const [k, sub] of Object.entries(spec)) {
    if (sub instanceof Renamed) continue
    const p = join(path, k)
    const list = out.get(k.toLowerCase()) ?? []
    if (!list.includes(p)) list.push(p)
    out.set(k.toLowerCase(), list)
    indexKeys(sub, p, out)
  }
  return out
}

function variantKeys (spec: ByKind, value: Obj): { keys: KeyObject, kind: string | null } {
  const kind = value[spec.field]
  if (typeof kind === 'string' && Object.hasOwn(spec.variants, kind)) return { keys: spec.variants[kind] as KeyObject, kind }
  const all: Record<string, KeySpec> = {}
  for (const v of Object.values(spec.variants)) Object.assign(all, v)
  return { keys: all, kind: null }
}

/**
 * Throws ConfigError at the first key of `value` that `spec` does not know, in document order.
 * `root` and `rootPath` place `path` in the whole document (for "did you mean node.apiListen?").
 */
export function checkKeys (value: unknown, spec: KeySpec, path = '', root: { spec: KeySpec, path: string } = { spec, path }): void {
  if (spec === V || spec instanceof Renamed) return
  if (spec instanceof ListOf) {
    if (Array.isArray(value)) value.forEach((item, i) => checkKeys(item, spec.item, `${path}[${i}]`, root))
    return
  }
  if (!isObj(value)) return // the validator says what the value must be
  if (spec instanceof MapOf) {
    for (const [k, v] of Object.entries(value)) checkKeys(v, spec.value, join(path, k), root)
    return
  }
  const { keys, kind } = spec instanceof ByKind ? variantKeys(spec, value) : { keys: spec, kind: null }
  for (const [k, v] of Object.entries(value)) {
    const sub = Object.hasOwn(keys, k) ? keys[k] : undefined
    if (sub === undefined) {
      const variant = spec instanceof ByKind && kind !== null ? `${spec.field} "${kind}"` : null
      // A key of another kind is refused for this kind, not sent elsewhere in the document.
      const ofOtherKind = spec instanceof ByKind && Object.values(spec.variants).some(v => Object.hasOwn(v, k))
      throw unknownKey(path, k, Object.entries(keys).filter(([, s]) => !(s instanceof Renamed)).map(([n]) => n), variant, ofOtherKind ? null : root)
    }
    if (sub instanceof Renamed) throw new ConfigError(`config: ${join(path, k)}: renamed ${sub.to} (${sub.why})`, join(path, k))
    checkKeys(v, sub, join(path, k), root)
  }
}

function unknownKey (path: string, key: string, known: string[], variant: string | null, root: { spec: KeySpec, path: string } | null): ConfigError {
  const where = `config: ${join(path, key)}: unknown key`
  const near = closestKey(key, known)
  const at = join(path, key)
  if (near !== null) return new ConfigError(`${where}; did you mean ${near}?`, at)
  // The same key elsewhere in the document: a setting put in the wrong section.
  const here = join(path, key).replace(/\[\d+\]/g, '[]').toLowerCase()
  const elsewhere = root === null ? [] : (indexKeys(root.spec, root.path, new Map()).get(key.toLowerCase()) ?? []).filter(p => p.toLowerCase() !== here)
  if (elsewhere.length > 0 && elsewhere.length <= 3) return new ConfigError(`${where}; did you mean ${elsewhere.join(' or ')}?`, at)
  const scope = variant !== null ? `${path === '' ? 'this object' : path} with ${variant}` : path === '' ? 'the top level' : path
  const shown = known.length <= 16 ? known.join(', ') : `${known.slice(0, 16).join(', ')}, ...`
  return new ConfigError(`${where} (${scope} takes ${shown})`, at)
}
