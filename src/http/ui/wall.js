// The operations wall: what needs someone now, most urgent first, in tiles
// that fit the screen. It reads /api/v1/dashboard every few seconds with the
// dashboard's signed-in token, pages through by itself when more incidents
// are open than fit, and never scrolls. Its choices are in the URL, so a wall
// screen's bookmark says what it shows: ?theme=light&branches=sh-001,sh-002&plans=system-failover
'use strict';

const q = new URLSearchParams(location.search);
const $ = (id) => document.getElementById(id);
const esc = (s) => String(s ?? '').replace(/[&<>"']/g,
  (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' }[c]));
const list = (k) => (q.get(k) || '').split(',').map((x) => x.trim()).filter(Boolean);
const branches = list('branches');
const plans = list('plans');
const PAGE_SECONDS = 10;
// As many steps as a tile has room for; the rest are counted.
const STEPS_SHOWN = 2;
const POLL_MS = 3000;
let token = sessionStorage.getItem('branchguard-token') || '';
let data = null;
let page = 0;
let pageTurned = Date.now();

if (q.get('theme') === 'light') document.body.classList.add('light');

function headers() {
  return token ? { Authorization: 'Bearer ' + token } : {};
}

// Times in the bank's zone with their offset, as everywhere else.
function fmt(t, opts) {
  const zone = data && data.zones ? data.zones.default : undefined;
  return new Intl.DateTimeFormat('en-GB', { timeZone: zone, hourCycle: 'h23', ...opts }).format(t);
}

function countdown(deadline) {
  const s = Math.round((Date.parse(deadline) - Date.now()) / 1000);
  const a = Math.abs(s);
  const text = a >= 3600 ? `${Math.floor(a / 3600)}h${String(Math.floor(a % 3600 / 60)).padStart(2, '0')}m`
    : `${Math.floor(a / 60)}m${String(a % 60).padStart(2, '0')}s`;
  return s < 0 ? `${text} late` : `in ${text}`;
}

// Open steps, the most urgent first: overdue, then critical, then by deadline
// (a critical switch-over due in 15 minutes before a notice due in 5).
function openSteps(i) {
  return i.steps
    .filter((s) => ['notified', 'acknowledged', 'overdue'].includes(s.state) && !s.closed)
    .sort((a, b) => (b.overdue - a.overdue) || (b.critical - a.critical)
      || (a.deadline || '~').localeCompare(b.deadline || '~'));
}

// Overdue first, then an open critical step, then the nearest deadline.
function rank(i) {
  const st = openSteps(i);
  const next = Math.min(...st.map((s) => (s.deadline ? Date.parse(s.deadline) : Infinity)), Infinity);
  return [st.some((s) => s.overdue) ? 0 : 1, st.some((s) => s.critical) ? 0 : 1, next, -i.tier];
}

// Each incident's rank worked out once, not in every comparison of the sort.
function byUrgency(items) {
  const keyed = items.map((i) => [rank(i), i]);
  keyed.sort(([x], [y]) => {
    for (let k = 0; k < x.length; k++) if (x[k] !== y[k]) return x[k] < y[k] ? -1 : 1;
    return 0;
  });
  return keyed.map(([, i]) => i);
}

function wanted(i) {
  return (!branches.length || branches.includes(i.branch)) && (!plans.length || plans.includes(i.playbook));
}

function tile(i) {
  const st = openSteps(i);
  const late = st.some((s) => s.overdue);
  const crit = st.some((s) => s.critical);
  const more = st.length > STEPS_SHOWN ? ` · ${st.length - STEPS_SHOWN} more open step(s)` : '';
  const steps = st.slice(0, STEPS_SHOWN).map((s) => `<div class="step">
      <span class="t">${s.critical ? '<span class="badge crit">CRITICAL</span>' : ''}${s.overdue ? '<span class="badge late">OVERDUE</span>' : ''}${esc(s.title)}</span>
      <span class="cd${s.overdue ? ' late' : ''}" data-deadline="${esc(s.deadline || '')}">${s.deadline ? esc(countdown(s.deadline)) : ''}</span>
      <span class="who">${esc(s.owner || '-')}${s.acknowledged_at ? ' · acknowledged by ' + esc(s.by || '?') : ' · not acknowledged'}</span>
    </div>`).join('');
  return `<article class="tile${late ? ' late' : crit ? ' crit' : ''}" data-incident="${i.id}">
    <h2>#${i.id} ${esc(i.branch_name || i.branch)} — ${esc(i.playbook_name)}</h2>
    <div class="meta">tier ${i.tier} · ${esc(i.kind)} · opened ${esc(fmt(new Date(i.opened_at), { hour: '2-digit', minute: '2-digit' }))}${more}</div>
    ${steps}</article>`;
}

// How many tiles fit: the grid's columns times the rows that fit its height.
function capacity() {
  const el = $('tiles');
  const cs = getComputedStyle(el);
  const cols = Math.max(1, cs.gridTemplateColumns.split(' ').filter(Boolean).length);
  const rowH = parseFloat(cs.gridAutoRows) || 1;
  const gap = parseFloat(cs.rowGap) || 0;
  const rows = Math.max(1, Math.floor((el.clientHeight + gap) / (rowH + gap)));
  return cols * rows;
}

function counts(items, key) {
  const m = new Map();
  for (const i of items) m.set(key(i), (m.get(key(i)) || 0) + 1);
  return [...m.entries()].sort((a, b) => b[1] - a[1]).map(([k, n]) => `${esc(k)} ${n}`).join(', ');
}

function band(d, drills) {
  const now = Date.now();
  const down = d.probes.items.filter((p) => p.status === 'down' || p.status === 'critical');
  const ending = d.silences.filter((s) => s.active && Date.parse(s.ends_at) - now < 3600e3);
  const duty = d.on_duty || [];
  const parts = [];
  parts.push(`<h2>Probes down (${down.length})</h2><ul>${down.slice(0, 8).map((p) =>
    `<li class="down">${esc(p.branch)} ${esc(p.system)}: ${esc(p.status)}</li>`).join('') || '<li>none</li>'}</ul>`);
  parts.push(`<h2>Drills running (${drills.length})</h2><ul>${drills.slice(0, 6).map((i) =>
    `<li>#${i.id} ${esc(i.branch_name || i.branch)} ${esc(i.playbook_name)}</li>`).join('') || '<li>none</li>'}</ul>`);
  parts.push(`<h2>Silences ending within the hour (${ending.length})</h2><ul>${ending.slice(0, 6).map((s) =>
    `<li>#${s.id} until ${esc(fmt(new Date(s.ends_at), { hour: '2-digit', minute: '2-digit' }))}: ${esc(s.comment)}</li>`).join('') || '<li>none</li>'}</ul>`);
  if (duty.length) {
    parts.push(`<h2>On duty now</h2><ul>${duty.slice(0, 8).map((r) =>
      `<li class="${r.person ? '' : 'down'}">${esc(r.role)} ${esc(r.branch)}: ${esc(r.name || 'nobody (gap)')}</li>`).join('')}</ul>`);
  }
  const follow = d.follow_up ? d.follow_up.count : 0;
  parts.push(`<h2>Follow-up work running: ${follow}</h2>`);
  if (unmatched !== null) {
    parts.push(`<h2>Events that matched no playbook (last hour): ${unmatched.unmatched}</h2>`);
    parts.push(`<h2>Events refused (last hour): ${unmatched.refused}</h2>`);
  }
  return parts.join('');
}

let unmatched = null;

function render() {
  const d = data;
  if (!d) return;
  clock();
  const inc = d.incidents;
  const all = inc.items.filter(wanted);
  const real = byUrgency(all.filter((i) => !i.drill));
  const drills = all.filter((i) => i.drill);
  const filtered = branches.length || plans.length;
  const late = real.filter((i) => openSteps(i).some((s) => s.overdue)).length;
  // Real incidents only: a drill is never counted with them.
  const open = filtered ? real.length : inc.open;
  const overdue = filtered ? late : inc.overdue;
  $('totals').innerHTML = `<span class="${overdue ? 'bad' : ''}"><b id="w-overdue">${overdue}</b>overdue</span>
    <span><b id="w-open">${open}${inc.truncated ? '+' : ''}</b>open</span>`;
  const nd = filtered ? drills.length : (inc.drills ? inc.drills.open : drills.length);
  $('drills').textContent = nd ? `${nd} drill(s) running, not counted` : '';
  const cap = capacity();
  const pages = Math.max(1, Math.ceil(real.length / cap));
  if (page >= pages) page = 0;
  const shown = real.slice(page * cap, page * cap + cap);
  $('tiles').innerHTML = shown.length ? shown.map(tile).join('')
    : '<p class="empty">Nothing open.</p>';
  $('band').innerHTML = band(d, drills);
  $('rest').innerHTML = real.length > cap
    ? `Page ${page + 1} of ${pages} (${real.length} open). By branch: ${counts(real, (i) => i.branch_name || i.branch)}. By plan: ${counts(real, (i) => i.playbook_name)}.`
    : `${real.length} open${filtered ? ' (filtered: ' + esc([...branches, ...plans].join(', ')) + ')' : ''}.`;
}

async function poll() {
  try {
    const r = await fetch('/api/v1/dashboard?limit=1000', { headers: headers() });
    if (r.status === 401 || r.status === 403) {
      $('signin').hidden = false;
      $('signin-error').textContent = token ? 'That token may not read incidents.' : '';
      return;
    }
    if (!r.ok) throw new Error('status ' + r.status);
    data = await r.json();
    $('signin').hidden = true;
    $('banner').hidden = true;
    try {
      const e = await fetch('/api/v1/events?matched=false&limit=1000', { headers: headers() });
      const since = Date.now() - 3600e3;
      const recent = e.ok ? ((await e.json()).items || []).filter((x) => Date.parse(x.received_at) >= since) : null;
      // Refused ones (a critical alert without a branch) are kept, never matched.
      unmatched = recent && {
        refused: recent.filter((x) => x.rejected).length,
        unmatched: recent.filter((x) => !x.rejected && !x.silenced).length,
      };
    } catch (_) { unmatched = null; }
    render();
  } catch (_) {
    // The daemon is away (restarting, network): say so, keep the last
    // picture, and keep trying.
    $('banner').hidden = false;
  }
}

function clock() {
  $('clock').textContent = data ? fmt(new Date(), { hour: '2-digit', minute: '2-digit', second: '2-digit', timeZoneName: 'shortOffset' }) : '';
}

function tick() {
  clock();
  for (const el of document.querySelectorAll('.cd[data-deadline]')) {
    const dl = el.dataset.deadline;
    if (!dl) continue;
    el.textContent = countdown(dl);
    el.classList.toggle('late', Date.parse(dl) < Date.now());
  }
  if (Date.now() - pageTurned >= PAGE_SECONDS * 1000) {
    pageTurned = Date.now();
    page += 1;
    render();
  }
}

$('signin').addEventListener('submit', (ev) => {
  ev.preventDefault();
  token = $('token').value.trim();
  sessionStorage.setItem('branchguard-token', token);
  $('token').value = '';
  poll();
});

window.addEventListener('resize', render);
poll();
setInterval(poll, POLL_MS);
setInterval(tick, 1000);
