/**
 * The wire codec loads the descriptor generated from proto/ (agent/adapters/wire-schema.ts), not
 * the .proto files: this test parses proto/mesh/v1/*.proto again and fails when the committed
 * descriptor differs from them (run `npm run gen:wire-schema` after changing a .proto file).
 */
import t from 'tap'
import { readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { parseWireSchema, protoDir, wireSchemaSource } from '../../agent/adapters/wire-schema-gen.js'
import { WIRE_SCHEMA } from '../../agent/adapters/wire-schema.js'

t.test('the committed descriptor is the one proto/ generates', async t => {
  const parsed = parseWireSchema(protoDir())
  t.same(WIRE_SCHEMA, parsed, 'wire-schema.ts matches proto/mesh/v1 (else: npm run gen:wire-schema)')
  const file = fileURLToPath(new URL('../../agent/adapters/wire-schema.ts', import.meta.url))
  t.equal(readFileSync(file, 'utf8'), wireSchemaSource(parsed), 'and its text is exactly what the generator writes')
})

t.test('the descriptor has every message the envelope carries', async t => {
  const v1 = (((WIRE_SCHEMA.nested?.['starling'] as { nested?: Record<string, unknown> }).nested?.['mesh'] as { nested?: Record<string, unknown> }).nested?.['v1'] as { nested?: Record<string, unknown> }).nested ?? {}
  const envelope = v1['Envelope'] as { oneofs?: { body?: { oneof: string[] } } } | undefined
  t.ok(envelope !== undefined, 'Envelope is there')
  t.ok((envelope?.oneofs?.body?.oneof.length ?? 0) >= 20, `its body oneof lists ${envelope?.oneofs?.body?.oneof.length ?? 0} kinds`)
})
