// The Starling page: draws the view one agent serves (GET /v1/events, server-sent events; the
// first one arrives at once). Plain JavaScript with no dependencies; charts are inline SVG.
'use strict'

const $ = id => document.getElementById(id)
const esc = s => String(s).replace(/[&<>"']/g, c => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c])
const pct = x => x === null || x === undefined ? '–' : `${Math.round(x * 100)}%`
const ago = ms => ms === null ? 'no data' : ms < 1500 ? 'just now' : ms < 120000 ? `${Math.round(ms / 1000)} s ago` : `${Math.round(ms / 60000)} min ago`
const clock = t => new Date(t).toLocaleTimeString([], { hour12: false })

/** History (solid), forecast (dashed, one step ahead) and the threshold, as an SVG sparkline. */
function spark (h, forecast, threshold) {
  const W = 240
  const H = 36
  const n = Math.max(h.length, 2)
  const step = W / n
  const y = v => (H - 2 - Math.max(0, Math.min(1, v)) * (H - 4)).toFixed(1)
  let pts = ''
  for (let i = 0; i < h.length; i++) pts += `${(i * step).toFixed(1)},${y(h[i])} `
  const lastX = ((h.length - 1) * step).toFixed(1)
  const area = h.length > 1 ? `<polygon class="area" points="0,${H} ${pts}${lastX},${H}"/>` : ''
  const fc = h.length > 0 && forecast !== null ? `<polyline class="fc" points="${lastX},${y(h[h.length - 1])} ${(h.length * step).toFixed(1)},${y(forecast)}"/>` : ''
  return `<svg class="spark" viewBox="0 0 ${W} ${H}" preserveAspectRatio="none" aria-label="CPU history">` +
    `<line class="thr" x1="0" x2="${W}" y1="${y(threshold)}" y2="${y(threshold)}"/>${area}<polyline class="hist" points="${pts}"/>${fc}</svg>`
}

function renderHosts (v, haVms) {
  const staleMs = Math.max(10000, v.intervalMs * 10)
  let html = ''
  for (const h of v.hosts) {
    const hot = h.forecast !== null && h.forecast > v.threshold
    const empty = h.state === 'alive' && h.cpu !== null && h.vms.length === 0
    const vms = h.vms.map(m => `<span class="vm ${esc(m.state)}${haVms.has(m.id) ? ' ha' : ''}" data-vm="${esc(m.id)}" title="${esc(m.id)}: ${m.vcpus} vCPU, ${m.memMiB} MiB, ${esc(m.state)}">${esc(m.id)} ${pct(m.cpu)}</span>`).join('')
    html += `<div class="host ${esc(h.state)}" data-host="${esc(h.name)}" data-state="${esc(h.state)}">` +
      `<div class="top"><span class="name">${esc(h.name)}</span><span class="badge">${esc(h.state)}</span>` +
      (empty ? '<span class="badge empty" title="no VMs: this host could be powered off">could power off</span>' : '') +
      `<span class="age${h.ageMs !== null && h.ageMs > staleMs ? ' stale' : ''}" title="time since this agent last saw the host's load report change">${ago(h.ageMs)}</span></div>` +
      `<div class="load">cpu <b class="${hot ? 'hot' : ''}">${pct(h.cpu)}</b> forecast <b class="${hot ? 'hot' : ''}">${pct(h.forecast)}</b> mem <b>${pct(h.mem)}</b>` +
      `<span>${h.cores ?? '?'} cores · ${h.memMiB === null ? '?' : Math.round(h.memMiB / 1024)} GiB · ${h.vms.length} VMs</span></div>` +
      spark(h.history, h.forecast, v.threshold) +
      `<div class="vms">${vms}</div></div>`
  }
  $('hosts').innerHTML = html
  const alive = v.hosts.filter(h => h.state === 'alive').length
  const vmCount = v.hosts.reduce((n, h) => n + h.vms.length, 0)
  $('host-count').textContent = `${alive}/${v.hosts.length} alive · ${vmCount} VMs`
}

function renderMigrations (v) {
  if (v.migrations.length === 0) { $('migrations').innerHTML = '<p class="none">none in flight</p>'; return }
  $('migrations').innerHTML = v.migrations.map(m => {
    const f = m.fraction === null ? 0 : m.fraction
    return `<div class="mig ${esc(m.state)}" data-mig="${esc(m.vm)}" data-state="${esc(m.state)}">` +
      `<div><b>${esc(m.vm)}</b> ${esc(m.from)} → ${esc(m.to)} · ${esc(m.state)}${m.fraction !== null ? ` ${pct(f)}` : ''}${m.seconds !== null ? ` · ${m.seconds} s` : ''} <small>(${esc(m.cause)})</small></div>` +
      `<progress max="1" value="${f.toFixed(3)}"></progress>` +
      (m.state === 'aborted' ? `<small>${esc(m.reason)}</small>` : '') + '</div>'
  }).join('')
}

function renderPlan (v) {
  if (v.plan === null || v.plan === undefined) { $('plan').innerHTML = '<p class="none">not served</p>'; return }
  if (v.plan.length === 0) { $('plan').innerHTML = '<p class="none">no moves: balanced as this host sees it</p>'; return }
  $('plan').innerHTML = '<table><tr><th>#</th><th>VM</th><th>from → to</th><th>rating</th><th>why</th></tr>' +
    v.plan.map(x => `<tr data-plan-vm="${esc(x.vm)}"><td>${x.step}</td><td>${esc(x.vm)}</td><td>${esc(x.from)} → ${esc(x.to)}</td><td>${'★'.repeat(x.rating)}</td><td>${esc(x.why)}</td></tr>`).join('') + '</table>'
}

function renderHa (v) {
  if (v.ha === null) { $('ha').innerHTML = '<p class="none">not configured on this host</p>'; return }
  const h = v.ha
  $('ha').innerHTML = `<p>${h.selfFenced ? 'this host holds a watchdog' : '<b>no watchdog here: its HA VMs are not protected</b>'} · ${h.restartsDone} restart(s) done here` +
    `${h.pending.length > 0 ? ` · <b>pending: ${h.pending.map(esc).join(', ')}</b>` : ''}${h.fenced.length > 0 ? ` · fenced: ${h.fenced.map(esc).join(', ')}` : ''}</p>` +
    '<table><tr><th>VM</th><th>owner</th><th>here</th><th>attempts</th></tr>' +
    h.vms.map(x => `<tr data-ha-vm="${esc(x.vm)}"><td>${esc(x.vm)}</td><td>${esc(x.owner)}</td><td>${esc(x.role)}</td><td>${x.attempts}${x.failed ? ' FAILED' : ''}</td></tr>`).join('') + '</table>'
}

function renderVips (v) {
  if (v.vips === null || v.vips.length === 0) { $('vips').innerHTML = '<p class="none">none configured</p>'; return }
  $('vips').innerHTML = '<table><tr><th>VIP</th><th>address</th><th>owner</th></tr>' +
    v.vips.map(x => `<tr data-vip="${esc(x.vip)}"><td>${esc(x.vip)}</td><td>${esc(x.address)}</td><td>${esc(x.owner)}</td></tr>`).join('') + '</table>'
}

function renderEvents (v) {
  $('events').innerHTML = v.events.slice().reverse().map(e => `<li class="${esc(e.kind)}"><time>${clock(e.t)}</time>${esc(e.text)}</li>`).join('')
}

function renderBanner (v) {
  const q = v.quorum
  const b = $('banner')
  const suspect = v.hosts.filter(h => h.state === 'suspect').map(h => h.name)
  const dead = v.hosts.filter(h => h.state === 'dead').map(h => h.name)
  if (!q.quorate) {
    b.className = 'banner bad'
    b.textContent = `NO QUORUM: ${v.self.name} sees ${q.present} of ${q.size} members (${q.needed} needed): partitioned or most hosts down; nothing is failed over from this side`
  } else if (suspect.length > 0 || dead.length > 0) {
    b.className = 'banner warn'
    b.textContent = `quorum: ${q.present}/${q.size} present (${q.needed} needed)` + (suspect.length > 0 ? ` · suspect: ${suspect.join(', ')}` : '') + (dead.length > 0 ? ` · dead: ${dead.join(', ')}` : '')
  } else {
    b.className = 'banner ok'
    b.textContent = `quorum: ${q.present}/${q.size} present (${q.needed} needed) · all hosts alive`
  }
}

let first = true
function render (v) {
  $('cluster').textContent = v.cluster
  $('seen-from').textContent = `as seen by ${v.self.name}`
  const haVms = new Set(v.ha === null ? [] : v.ha.vms.map(x => x.vm))
  renderBanner(v)
  renderHosts(v, haVms)
  renderMigrations(v)
  renderPlan(v)
  renderHa(v)
  renderVips(v)
  renderEvents(v)
  document.body.dataset.updated = String(v.nowMs)
  if (first) {
    first = false
    performance.mark('starling-first-render')
    document.body.dataset.rendered = '1'
  }
}

function connect () {
  const es = new EventSource('/v1/events')
  es.addEventListener('view', ev => {
    $('conn').className = 'conn live'
    $('conn').textContent = 'live'
    render(JSON.parse(ev.data))
  })
  es.onerror = () => {
    $('conn').className = 'conn down'
    $('conn').textContent = 'reconnecting…'
  }
}

connect()
