/** Child process for testbed.test.ts: makes a bed, prints its prefix, waits to be killed. */
import { createTestbed } from './testbed.js'

const bed = await createTestbed({ hosts: 2, clients: 1 })
process.stdout.write(`ready ${bed.prefix}\n`)
setInterval(() => {}, 60_000)
