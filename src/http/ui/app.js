// The dashboard: reads /api/v1/dashboard with the signed-in token, refreshes
// when /api/v1/stream reports an engine commit, and acts through the same
// JSON API as every other client. No framework: the page must load from the
// binary alone and stay readable on a wall screen and a phone.
'use strict';

const $ = (id) => document.getElementById(id);
const esc = (s) => String(s ?? '').replace(/[&<>"']/g,
  (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' }[c]));

let token = sessionStorage.getItem('branchguard-token') || '';
const view = { data: null, branch: null, limit: 50, timeline: null, skew: 0 };
let feed = null;

function headers(json) {
  const h = {};
  if (token) h.Authorization = 'Bearer ' + token;
  if (json) h['Content-Type'] = 'application/json';
  return h;
}

async function api(method, path, body) {
  const r = await fetch(path, {
    method,
    headers: headers(body !== undefined),
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  let j = null;
  try { j = await r.json(); } catch (_) { /* not JSON: the status says enough */ }
  if (!r.ok) {
    const e = new Error((j && j.error) || `${r.status} ${r.statusText}`);
    e.status = r.status;
    throw e;
  }
  return j;
}

function showError(msg) {
  $('error').textContent = msg || '';
  $('error').hidden = !msg;
}

// ---- refresh, coalesced: one request in flight, one more queued at most.
let inFlight = false;
let again = false;
async function refresh() {
  if (inFlight) { again = true; return; }
  inFlight = true;
  try {
    const q = new URLSearchParams({ limit: String(view.limit) });
    if (view.branch) q.set('branch', view.branch);
    const d = await api('GET', '/api/v1/dashboard?' + q);
    view.data = d;
    view.skew = Date.parse(d.now) - Date.now();
    showError('');
    render(d);
    if (view.timeline) await showTimeline(view.timeline, false);
    follow();
  } catch (e) {
    if (e.status === 401 || e.status === 403) signedOut(e.message);
    else showError('Could not load the dashboard: ' + e.message);
  } finally {
    inFlight = false;
    if (again) { again = false; refresh(); }
  }
}

function signedOut(why) {
  stopFeed();
  $('main').hidden = true;
  $('me').hidden = true;
  $('signin').hidden = false;
  showError(token ? 'Sign-in failed: ' + why : '');
  $('live').textContent = 'signed out';
}

// ---- live feed over fetch (EventSource cannot send the token header).
function stopFeed() {
  if (feed) { feed.abort(); feed = null; }
}

function setLive(on) {
  $('live').textContent = on ? 'live' : 'reconnecting…';
  $('live').classList.toggle('on', on);
}

function follow() {
  if (feed) return;
  const ctl = new AbortController();
  feed = ctl;
  (async () => {
    while (!ctl.signal.aborted) {
      try {
        const r = await fetch('/api/v1/stream', { headers: headers(false), signal: ctl.signal });
        if (!r.ok) throw new Error('stream ' + r.status);
        setLive(true);
        const reader = r.body.getReader();
        const dec = new TextDecoder();
        let buf = '';
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buf += dec.decode(value, { stream: true });
          let i;
          while ((i = buf.indexOf('\n\n')) >= 0) {
            const msg = buf.slice(0, i);
            buf = buf.slice(i + 2);
            if (/^event: change$/m.test(msg)) refresh();
          }
        }
      } catch (_) { /* reconnect below */ }
      if (ctl.signal.aborted) return;
      setLive(false);
      await new Promise((res) => setTimeout(res, 2000));
      refresh();
    }
  })();
}

// ---- rendering
// One way to write a time, as everywhere else: in the branch's time zone
// (the bank's without a branch), to the second, with its offset —
// `2026-11-24 09:15:00 +08:00`.
function when(t, branch) {
  if (!t) return '-';
  const z = view.data && view.data.zones;
  const timeZone = z ? (branch && z.branches[branch]) || z.default : undefined;
  const p = Object.fromEntries(new Intl.DateTimeFormat('en-CA', {
    timeZone, year: 'numeric', month: '2-digit', day: '2-digit', hour: '2-digit',
    minute: '2-digit', second: '2-digit', hourCycle: 'h23', timeZoneName: 'longOffset',
  }).formatToParts(new Date(t)).map((x) => [x.type, x.value]));
  const offset = (p.timeZoneName || 'GMT').replace('GMT', '') || '+00:00';
  return `${p.year}-${p.month}-${p.day} ${p.hour}:${p.minute}:${p.second} ${offset}`;
}

// One way to write a duration: `45s`, `7m32s`, `2h5m`, `3d4h`.
function span(secs) {
  secs = Math.abs(Math.round(secs));
  const d = Math.floor(secs / 86400), h = Math.floor((secs % 86400) / 3600);
  const m = Math.floor((secs % 3600) / 60), s = secs % 60;
  if (d) return d + 'd' + (h ? h + 'h' : '') + (m ? m + 'm' : '');
  return (h ? h + 'h' : '') + (m ? m + 'm' : '') + (s || (!h && !m) ? s + 's' : '');
}

// A score to one decimal, as the reports write it.
function score(x) {
  return x == null ? '-' : Number(x).toFixed(1);
}

function countdown(deadline) {
  const left = (Date.parse(deadline) - (Date.now() + view.skew)) / 1000;
  return left > 0 ? 'due in ' + span(left) : 'overdue by ' + span(left);
}

function tick() {
  for (const el of document.querySelectorAll('[data-deadline]')) {
    const text = countdown(el.dataset.deadline);
    if (el.textContent !== text) el.textContent = text;
    const row = el.closest('.step');
    const open = row && row.dataset.open === '1';
    if (row && open) row.classList.toggle('overdue', text.startsWith('overdue'));
  }
}

function tiles(d) {
  const inc = d.incidents;
  const t = [`<div class="tile${inc.overdue ? ' bad' : ''}"><b id="n-overdue">${inc.overdue}</b>overdue</div>`,
    `<div class="tile"><b id="n-open">${inc.open}${inc.truncated ? '+' : ''}</b>open</div>`];
  for (const x of inc.by_tier) t.push(`<div class="tile"><b>${x.open}</b>tier ${x.tier}</div>`);
  for (const x of inc.by_playbook) t.push(`<div class="tile"><b>${x.open}</b>${esc(x.name)}</div>`);
  // Drills apart: never counted with real incidents.
  if (inc.drills && inc.drills.open) t.push(`<div class="tile drill"><b id="n-drills">${inc.drills.open}</b>drill(s) running</div>`);
  return t.join('');
}

function stepButtons(i, s, can) {
  const b = [];
  const label = (verb) => `${verb} “${esc(s.title)}” of incident #${i.id}`;
  const open = ['notified', 'acknowledged', 'overdue'].includes(s.state) && !s.closed;
  if (can.answer && open && !s.acknowledged_at) {
    b.push(`<button type="button" data-act="ack" data-id="${i.id}" data-step="${esc(s.id)}" aria-label="${label('Acknowledge')}">Acknowledge</button>`);
  }
  if (can.answer && open) {
    b.push(`<button type="button" data-act="done" data-id="${i.id}" data-step="${esc(s.id)}" aria-label="${label('Mark done')}">Done</button>`);
  }
  return b.join(' ');
}

function incidentCard(i, can) {
  const late = i.steps.some((s) => s.overdue);
  // Open steps first, nearest deadline first; the answered ones after.
  const isOpen = (s) => ['notified', 'acknowledged', 'overdue'].includes(s.state) && !s.closed;
  const ordered = [...i.steps].sort((a, b) => (isOpen(b) - isOpen(a))
    || (isOpen(a) ? (a.deadline || '~').localeCompare(b.deadline || '~') : 0));
  const steps = ordered.map((s) => {
    const open = ['notified', 'acknowledged', 'overdue'].includes(s.state) && !s.closed;
    const due = open && s.deadline
      ? `<span class="countdown" data-deadline="${esc(s.deadline)}">${esc(countdown(s.deadline))}</span>` : '';
    const ack = s.acknowledged_at ? `acknowledged by ${esc(s.by || '?')}` : (open ? 'not acknowledged' : '');
    const missing = s.roll_call_missing && s.roll_call_missing.length
      ? `<span>not yet safe: ${s.roll_call_missing.map(esc).join(', ')}</span>` : '';
    const state = s.closed ? `${s.state} (incident resolved before done)` : s.state;
    return `<div class="step${s.overdue ? ' overdue' : ''}" data-step="${i.id}:${esc(s.id)}" data-open="${open ? 1 : 0}">
      <span class="title">${s.critical ? '<span class="badge crit">CRITICAL</span> ' : ''}${esc(s.title)}</span> <span class="state">${esc(state)}</span>
      <span>${esc(s.owner || '-')}</span> <span class="ack">${ack}</span> ${due} ${missing}
      ${stepButtons(i, s, can)}</div>`;
  }).join('');
  const cmd = can.command ? `
    <button type="button" data-act="escalate" data-id="${i.id}" aria-label="Escalate incident #${i.id}">Escalate</button>
    <button type="button" data-act="resolve" data-id="${i.id}" aria-label="Resolve incident #${i.id}">Resolve</button>` : '';
  return `<article class="incident${late ? ' late' : ''}${i.tier >= 2 ? ' t2' : ''}" data-incident="${i.id}" aria-labelledby="i-${i.id}">
    <h3 id="i-${i.id}"><a href="/incidents/${i.id}">#${i.id}</a> ${esc(i.branch_name || i.branch)} — ${esc(i.playbook_name)}
      <span class="badge">tier ${i.tier}</span>${i.drill ? ' <span class="badge drill">DRILL</span>' : ''}</h3>
    <div class="muted">${esc(i.kind)} (${esc(i.severity)})${i.summary ? ': ' + esc(i.summary) : ''} · opened ${esc(when(i.opened_at, i.branch))} · ${i.event_count} event(s)</div>
    ${steps}
    <div class="actions"><button type="button" data-act="timeline" data-id="${i.id}" aria-label="Timeline of incident #${i.id}">Timeline</button><button type="button" data-act="report" data-id="${i.id}" aria-label="Report of incident #${i.id}">Report</button>${cmd}</div>
  </article>`;
}

function branchTable(inc) {
  if (!inc.branches.length) return '<p>No branch has an open incident.</p>';
  const rows = inc.branches.map((b) => `<tr><td><button type="button" class="link" data-act="branch" data-branch="${esc(b.id)}"
      aria-label="Show incidents of ${esc(b.name || b.id)}">${esc(b.name || b.id)}</button></td>
      <td>${b.open}</td><td class="${b.overdue ? 'fail' : ''}">${b.overdue}</td><td>${b.tier}</td></tr>`).join('');
  const more = inc.branches_total > inc.branches.length
    ? `<p class="muted">and ${inc.branches_total - inc.branches.length} more branches</p>` : '';
  return `<div class="scroll"><table><thead><tr><th scope="col">Branch</th><th scope="col">Open</th><th scope="col">Overdue</th><th scope="col">Tier</th></tr></thead><tbody>${rows}</tbody></table></div>${more}`;
}

function trendSvg(points, pass) {
  const w = 160, h = 40;
  if (!points.length) return '';
  const x = (k) => (points.length === 1 ? w / 2 : (k * (w - 8)) / (points.length - 1) + 4);
  const y = (v) => h - 4 - ((h - 8) * Math.max(0, Math.min(100, v))) / 100;
  const line = points.map((p, k) => `${x(k).toFixed(1)},${y(p.score).toFixed(1)}`).join(' ');
  const dots = points.map((p, k) => `<circle cx="${x(k).toFixed(1)}" cy="${y(p.score).toFixed(1)}" r="2.5" fill="${p.passed ? '#0a5c1f' : '#a00000'}"/>`).join('');
  const label = 'scores over time: ' + points.map((p) => score(p.score)).join(', ');
  const passLine = pass == null ? '' : `<line x1="0" x2="${w}" y1="${y(pass)}" y2="${y(pass)}" stroke="#777" stroke-dasharray="3 3"/>`;
  return `<svg class="trend" width="${w}" height="${h}" viewBox="0 0 ${w} ${h}" role="img" aria-label="${esc(label)}">
    ${passLine}<polyline fill="none" stroke="#0b4f9c" stroke-width="2" points="${line}"/>${dots}</svg>`;
}

// Who the open incidents' rostered roles reach now.
function onDuty(rows) {
  const body = rows.map((r) => `<tr><td>${esc(r.role)}</td><td>${esc(r.branch_name || r.branch)}</td>
    <td class="${r.person ? '' : 'fail'}">${esc(r.name || 'nobody (gap)')}</td>
    <td>${r.until ? esc(when(r.until, r.branch)) : '-'}</td></tr>`).join('');
  return `<div class="scroll"><table><thead><tr><th scope="col">Role</th><th scope="col">Branch</th><th scope="col">On duty</th><th scope="col">Until</th></tr></thead><tbody>${body}</tbody></table></div>`;
}

function scoreboard(sb) {
  if (!sb.items.length) return '<p>No drill has been scored yet.</p>';
  const rows = sb.items.map((r) => `<tr data-score="${esc(r.drill)}:${esc(r.branch)}">
    <td>${esc(r.drill)}</td><td>${esc(r.branch_name || r.branch)}</td>
    <td class="score">${score(r.score)}</td>
    <td class="${r.passed ? 'pass' : 'fail'}">${r.passed ? 'pass' : 'fail'}</td>
    <td>${trendSvg(r.points, r.pass_score)}</td></tr>`).join('');
  return `<div class="scroll"><table><thead><tr><th scope="col">Drill</th><th scope="col">Branch</th><th scope="col">Last score</th><th scope="col">Result</th><th scope="col">Trend</th></tr></thead><tbody>${rows}</tbody></table></div>`;
}

function probes(p) {
  if (!p.total) return '<p>No probes configured for these branches.</p>';
  const counts = Object.entries(p.counts).map(([k, n]) => `<span class="st-${esc(k)}">${n} ${esc(k)}</span>`).join(' · ');
  const rows = p.items.map((x) => `<tr><td>${esc(x.branch)}</td><td>${esc(x.system)}</td>
    <td class="st-${esc(x.status)}">${esc(x.status)}</td><td>${esc(when(x.checked_at, x.branch))}</td></tr>`).join('');
  return `<p>${counts}</p><div class="scroll"><table><thead><tr><th scope="col">Branch</th><th scope="col">System</th><th scope="col">Status</th><th scope="col">Checked</th></tr></thead><tbody>${rows}</tbody></table></div>`;
}

function matchers(ms) {
  return Object.entries(ms).map(([k, v]) => typeof v === 'object'
    ? `${esc(v.name)}${v.regex ? '~' : '='}${esc(v.value)}` : `${esc(k)}=${esc(v)}`).join(', ');
}

function silences(d) {
  const rows = d.silences.map((s) => `<tr data-silence="${s.id}"><td>${matchers(s.matchers)}</td>
    <td>${esc(when(s.starts_at))} – ${esc(when(s.ends_at))}${s.active ? '' : ' (to come)'}</td>
    <td>${esc(s.comment)} (${esc(s.created_by)})</td>
    <td>${d.can.silence ? `<button type="button" data-act="expire" data-id="${s.id}" aria-label="End silence ${s.id}">End</button>` : ''}</td></tr>`).join('');
  const windows = d.maintenance.map((m) => `<tr><td>${esc(m.name)}: ${matchers(m.matchers)}</td>
    <td>every <code>${esc(m.start)}</code> for ${span(m.duration_seconds)}</td><td>maintenance window</td><td></td></tr>`).join('');
  if (!rows && !windows) return '<p>No silences or maintenance windows.</p>';
  return `<div class="scroll"><table><thead><tr><th scope="col">Matches</th><th scope="col">When</th><th scope="col">Why</th><th scope="col"><span class="muted">Action</span></th></tr></thead><tbody>${rows}${windows}</tbody></table></div>`;
}

function render(d) {
  $('standby').textContent = d.standby
    ? `This node is a standby (${d.standby.replace(/^standby: /, '')}): it shows what the leader stored, and takes no action here.`
    : '';
  $('standby').hidden = !d.standby;
  $('signin').hidden = true;
  $('main').hidden = false;
  $('me').hidden = false;
  const who = d.who;
  $('me-text').textContent = who.tokens
    ? `${who.name} (${who.role}${who.branches ? ': ' + who.branches.join(', ') : ''})`
    : 'no tokens configured (loopback)';
  $('signout').hidden = !who.tokens;
  // Whoever is not bound to a person names the person acting (the history
  // records a person, and the token it came through).
  $('actor').hidden = $('actor-label').hidden = Boolean(who.person);
  $('summary').innerHTML = tiles(d);
  const inc = d.incidents;
  $('filter').innerHTML = view.branch
    ? `Branch ${esc(view.branch)} only. <button type="button" data-act="branch" data-branch="">Show all branches</button>` : '';
  $('incidents').innerHTML = inc.items.length
    ? inc.items.map((i) => incidentCard(i, d.can)).join('') : '<p>Nothing open.</p>';
  $('more').hidden = inc.matching <= inc.items.length;
  const follow = d.follow_up || { items: [], count: 0 };
  $('followup-section').hidden = !follow.count;
  // Resolved: its follow-up steps are answered here; it is not resolved again.
  $('followups').innerHTML = follow.items.map((i) => incidentCard(i, { ...d.can, command: false })).join('');
  $('branches').innerHTML = branchTable(inc);
  const duty = d.on_duty || [];
  $('duty-section').hidden = !duty.length;
  $('duty').innerHTML = onDuty(duty);
  $('scoreboard').innerHTML = scoreboard(d.scoreboard);
  $('probes').innerHTML = probes(d.probes);
  $('silences').innerHTML = silences(d);
  $('silence-form').hidden = !d.can.silence;
}

async function showTimeline(id, focus) {
  const i = await api('GET', '/api/v1/incidents/' + encodeURIComponent(id));
  view.timeline = id;
  const steps = i.steps.map((s) => `<tr><td>${esc(s.title)}</td><td>${esc(s.state)}</td><td>${esc(when(s.activated_at, i.branch))}</td>
    <td>${esc(when(s.acknowledged_at, i.branch))}</td><td>${s.response_seconds == null ? '-' : span(s.response_seconds)}</td><td>${esc(s.by || '-')}</td></tr>`).join('');
  const history = (i.history || []).map((h) => `<li><time datetime="${esc(h.at)}">${esc(when(h.at, i.branch))}</time> <b>${esc(h.what)}</b> — ${esc(h.by)}: ${esc(h.detail)}</li>`).join('');
  const out = (i.outbox || []).map((o) => `<tr><td>${esc(o.channel)}</td><td>${esc(o.recipient)}</td><td>${esc(o.subject)}</td>
    <td>${o.attempts}</td><td>${o.delivered_at ? 'delivered ' + esc(when(o.delivered_at, i.branch)) : o.failed_at ? 'failed' : 'pending'}</td><td>${esc(o.last_error || '')}</td></tr>`).join('');
  $('timeline-body').innerHTML = `<h3>#${i.id} ${esc(i.branch)} — ${esc(i.playbook)} (${esc(i.status)}, tier ${i.tier})</h3>
    <table><caption>Steps and response times</caption><thead><tr><th scope="col">Step</th><th scope="col">State</th><th scope="col">Started</th><th scope="col">Acknowledged</th><th scope="col">Response</th><th scope="col">By</th></tr></thead><tbody>${steps}</tbody></table>
    <h4>Events, escalations and answers</h4><ol class="history">${history}</ol>
    <table><caption>Notifications and delivery attempts</caption><thead><tr><th scope="col">Channel</th><th scope="col">To</th><th scope="col">Subject</th><th scope="col">Attempts</th><th scope="col">Outcome</th><th scope="col">Last error</th></tr></thead><tbody>${out}</tbody></table>`;
  $('h-timeline').textContent = 'Timeline';
  $('close-timeline').textContent = 'Close timeline';
  $('timeline').hidden = false;
  if (focus) $('h-timeline').focus();
}

// The incident report (Markdown), shown as text: it is read with the
// token, so it cannot be a plain link, and as text nothing in it can run.
async function apiText(path) {
  const r = await fetch(path, { headers: headers(false) });
  const text = await r.text();
  if (!r.ok) throw new Error(`${r.status} ${text}`);
  return text;
}

async function showReport(id, focus) {
  const text = await apiText(`/api/v1/incidents/${encodeURIComponent(id)}/report`);
  view.timeline = null;
  $('timeline-body').innerHTML = `<h3>Report of #${esc(id)}</h3><p class="muted">Markdown, as <code>branchguard incident report ${esc(id)}</code> prints it; also as JSON and printable HTML from <code>/api/v1/incidents/${esc(id)}/report</code>.</p><pre class="report"></pre>`;
  $('timeline-body').querySelector('pre.report').textContent = text;
  $('h-timeline').textContent = 'Report';
  $('close-timeline').textContent = 'Close report';
  $('timeline').hidden = false;
  if (focus) $('h-timeline').focus();
}

function actorBody() {
  if (view.data && !view.data.who.person) {
    const by = $('actor').value.trim();
    if (!by) throw new Error('say who is acting: fill in "Acting as (person id)" first');
    return { by };
  }
  return {};
}

async function act(el) {
  const a = el.dataset.act, id = el.dataset.id;
  try {
    if (a === 'timeline') return await showTimeline(id, true);
    if (a === 'report') return await showReport(id, true);
    if (a === 'branch') { view.branch = el.dataset.branch || null; return await refresh(); }
    el.disabled = true;
    if (a === 'ack' || a === 'done') {
      await api('POST', `/api/v1/incidents/${id}/steps/${encodeURIComponent(el.dataset.step)}/${a}`, actorBody());
    } else if (a === 'resolve' || a === 'escalate') {
      if (a === 'resolve' && !window.confirm(`Resolve incident #${id}?`)) { el.disabled = false; return; }
      await api('POST', `/api/v1/incidents/${id}/${a}`, actorBody());
    } else if (a === 'expire') {
      await api('DELETE', `/api/v1/silences/${id}`, actorBody());
    }
    showError('');
    await refresh();
  } catch (e) {
    el.disabled = false;
    showError(e.message);
  }
}

document.addEventListener('click', (ev) => {
  const el = ev.target.closest('button[data-act]');
  if (el) act(el);
});

$('signin').addEventListener('submit', (ev) => {
  ev.preventDefault();
  token = $('token').value.trim();
  sessionStorage.setItem('branchguard-token', token);
  $('token').value = '';
  stopFeed();
  refresh();
});

$('signout').addEventListener('click', () => {
  token = '';
  sessionStorage.removeItem('branchguard-token');
  signedOut('');
});

$('more').addEventListener('click', () => { view.limit = Math.min(1000, view.limit * 2); refresh(); });
$('close-timeline').addEventListener('click', () => { view.timeline = null; $('timeline').hidden = true; });

function formMatchers(f) {
  const m = [{ name: 'branch', value: f.branch.value.trim() }];
  if (f.system.value.trim()) m.push({ name: 'system', value: f.system.value.trim() });
  return m;
}

// Before a silence is made: what it would have held back.
$('silence-preview').addEventListener('click', async () => {
  const f = $('silence-form');
  if (!f.branch.value.trim()) { $('preview').textContent = 'Name a branch first.'; return; }
  try {
    const p = await api('POST', '/api/v1/silences/preview', { matchers: formMatchers(f) });
    const inc = p.incidents.map((i) => `#${i.id} ${i.playbook}${i.drill ? ' (drill)' : ''}`).join(', ');
    $('preview').textContent = `Would match ${p.incidents.length} open incident(s)${inc ? ': ' + inc : ''}, `
      + `and ${p.events.count}${p.events.complete ? '' : '+'} event(s) of the last day.`;
  } catch (e) { $('preview').textContent = 'Could not preview: ' + e.message; }
});

$('silence-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const f = ev.target;
  const m = formMatchers(f);
  const ends = new Date(Date.now() + view.skew + Number(f.minutes.value) * 60000).toISOString();
  try {
    const by = actorBody().by;
    await api('POST', '/api/v1/silences', { matchers: m, ends_at: ends, comment: f.comment.value.trim(), ...(by ? { created_by: by } : {}) });
    f.reset();
    showError('');
    refresh();
  } catch (e) { showError('Could not add the silence: ' + e.message); }
});

setInterval(tick, 1000);
refresh();
