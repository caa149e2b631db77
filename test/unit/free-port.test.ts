// Goal: a local cluster (the demo, the tests, bench:scale) never gives two members one address.
// freePort draws ports at random outside the kernel's ephemeral range and checks each is free
// right now; the ports of a cluster are all drawn before any agent binds, so a port drawn twice
// was still free the second time, and the configuration then refused the cluster ("duplicates
// the address of another member"; a 60-host cluster draws 120 ports, about one such cluster in
// four had a pair). Method: draw as many ports as eight 60-host clusters need in one process and
// count distinct ones; then write a 60-host local cluster and check its addresses.
import t from 'tap'
import { mkdtemp, rm } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { freePort, writeLocalCluster } from '../../agent/cli/demo.js'

t.test('freePort never hands out a port twice in one process', async t => {
  const ports: number[] = []
  for (let i = 0; i < 960; i++) ports.push(await freePort())
  t.equal(new Set(ports).size, ports.length, `${ports.length} draws, all distinct`)
  t.ok(ports.every(p => p >= 1024 && p <= 65535), 'ports in range')
})

t.test('a 60-host local cluster has 60 distinct member addresses and API ports', async t => {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'starling-ports-'))
  t.teardown(async () => { await rm(dir, { recursive: true, force: true }) })
  const hosts = await writeLocalCluster(dir, 60, { seed: 3 })
  t.equal(hosts.length, 60)
  const port = (a: string): string => a.slice(a.lastIndexOf(':') + 1)
  const ports = hosts.flatMap(h => [port(h.address), port(h.apiListen)])
  t.equal(new Set(ports).size, 120, 'mesh and API ports: 120, all distinct')
})
