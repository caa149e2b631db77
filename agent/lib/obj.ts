/** A JSON object as the configuration checks read it. */
export type Obj = Record<string, unknown>

/** A plain JSON object: not null, not an array. */
export function isObj (v: unknown): v is Obj {
  return typeof v === 'object' && v !== null && !Array.isArray(v)
}
