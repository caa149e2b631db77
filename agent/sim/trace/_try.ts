import { defaultModel } from './model.js'
import { loadDay } from './traces.js'
import { TraceSim } from './engine.js'
import { CloudsimController, cloudsimController, firstFitPlace } from './cloudsim.js'
const day = process.argv[2] ?? '20110303'
const tr = loadDay('/work/shared/traces/planetlab', day)
for (const pol of process.argv.slice(3)) {
  const t0 = Date.now()
  const sim = new TraceSim(defaultModel(), tr)
  let m
  if (pol === 'DVFS') { firstFitPlace(sim); m = sim.run(null) }
  else {
    const [d, s, p] = pol.split('-')
    const c = new CloudsimController(sim, { detector: d!.toLowerCase() as any, param: Number(p), selection: { kind: s!.toLowerCase() as any } })
    c.initialPlace(); m = sim.run(cloudsimController(c))
  }
  console.log(pol, JSON.stringify(m), ((Date.now()-t0)/1000).toFixed(1)+'s')
}
