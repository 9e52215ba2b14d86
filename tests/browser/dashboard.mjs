// Drives Debian's Chromium (headless, through playwright-core) against a
// running daemon that tests/dashboard.rs started and prepared. Every check
// throws on failure, so a non-zero exit fails the Rust test; the figures it
// measured are printed as one JSON line for the Rust side to check again.
//
// Environment: BG_URL, BG_OPS_TOKEN, BG_HEAD_TOKEN, BG_INGEST_TOKEN,
// BG_DRILL (drill id), BG_SCORES (JSON: [score, ...] of br-a, oldest first),
// BG_OUT (folder for screenshots).
import { env, launch } from './launch.mjs';
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';

const url = env('BG_URL');
const out = env('BG_OUT');
const scores = JSON.parse(env('BG_SCORES'));
const drill = env('BG_DRILL');
mkdirSync(out, { recursive: true });

async function api(method, path, token, body) {
  const r = await fetch(url + path, {
    method,
    headers: { Authorization: 'Bearer ' + token, 'Content-Type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const j = await r.json();
  assert.ok(r.ok, `${method} ${path}: ${r.status} ${JSON.stringify(j)}`);
  return j;
}

const browser = await launch();
const figures = {};
try {
  // ---- the operations centre's wall screen, signed in with the ops token
  const wall = await browser.newPage({ viewport: { width: 1280, height: 800 } });
  const problems = [];
  wall.on('pageerror', (e) => problems.push(String(e)));
  await wall.goto(url + '/');
  await wall.getByLabel('API token').waitFor();
  // Keyboard only: the token field is reachable with Tab and Enter signs in.
  await wall.keyboard.press('Tab');
  assert.equal(await wall.evaluate(() => document.activeElement.id), 'token', 'Tab reaches the token field');
  await wall.keyboard.type(env('BG_OPS_TOKEN'));
  await wall.keyboard.press('Enter');
  await wall.locator('#live', { hasText: 'live' }).waitFor({ timeout: 10000 });
  await wall.evaluate(() => { window.__noReload = 'still here'; });

  // An event posted through the API appears without a reload.
  const posted = Date.now();
  const ev = await api('POST', '/api/v1/events', env('BG_INGEST_TOKEN'), {
    kind: 'system.down', branch: 'br-b', severity: 'critical',
    labels: { system: 'core' }, summary: 'core banking unreachable (browser test)',
  });
  const id = ev.incidents[0];
  assert.ok(Number.isInteger(id), JSON.stringify(ev));
  const card = wall.locator(`[data-incident="${id}"]`);
  await card.waitFor({ timeout: 5000 });
  figures.event_to_page_ms = Date.now() - posted;
  assert.ok(figures.event_to_page_ms < 2000, `the event took ${figures.event_to_page_ms} ms to appear`);
  assert.equal(await wall.evaluate(() => window.__noReload), 'still here', 'the page was reloaded');
  assert.match(await card.textContent(), /core banking unreachable/);
  // A live countdown on the step.
  const countdown = card.locator('[data-step$=":switch"] .countdown');
  const first = await countdown.textContent();
  assert.match(first, /^(due in|overdue by) /);
  await wall.waitForFunction(
    ([sel, before]) => document.querySelector(sel)?.textContent !== before,
    [`[data-incident="${id}"] [data-step$=":switch"] .countdown`, first],
    { timeout: 5000 },
  );

  // Ack from the page: the ops desk names the person who called in; the
  // step changes on the page and in the API, recorded as that person via
  // the ops token.
  await wall.getByLabel('Acting as (person id)').fill('head.b');
  await card.getByRole('button', { name: `Acknowledge “switch” of incident #${id}` }).click();
  await card.locator('[data-step$=":switch"] .ack', { hasText: 'acknowledged by head.b' }).waitFor({ timeout: 5000 });
  const after = await api('GET', `/api/v1/incidents/${id}`, env('BG_OPS_TOKEN'));
  const sw = after.steps.find((s) => s.id === 'switch');
  assert.ok(sw.acknowledged_at, JSON.stringify(sw));
  assert.equal(sw.by, 'head.b');
  const acked = after.history.find((h) => h.what === 'step.acknowledged');
  assert.equal(acked.via, 'ops', JSON.stringify(acked));
  figures.acked_incident = id;

  // The timeline shows the event, the acknowledgement and the notifications.
  await card.getByRole('button', { name: `Timeline of incident #${id}` }).click();
  const tl = wall.locator('#timeline');
  await tl.locator('.history', { hasText: 'ack' }).waitFor({ timeout: 5000 });
  assert.match(await tl.textContent(), /Notifications and delivery attempts/);
  // Its report, read with the token, shown as text.
  await card.getByRole('button', { name: `Report of incident #${id}` }).click();
  const report = tl.locator('pre.report');
  await report.waitFor({ timeout: 5000 });
  assert.equal(await wall.locator('#h-timeline').textContent(), 'Report');
  const md = await report.textContent();
  assert.match(md, new RegExp(`^# Incident #${id} — `), md);
  assert.match(md, /## Steps[\s\S]*switch/, md);
  assert.match(md, /## Review\n\nNo review recorded yet\./, md);

  // The scoreboard: the last score and a point per run in the trend.
  const row = wall.locator(`[data-score="${drill}:br-a"]`);
  await row.waitFor();
  // Scores to one decimal, as the reports write them (never rounded to whole points).
  assert.equal((await row.locator('.score').textContent()).trim(), scores.at(-1).toFixed(1));
  assert.equal(await row.locator('svg circle').count(), scores.length);
  assert.equal(await row.locator('svg').getAttribute('aria-label'),
    'scores over time: ' + scores.map((s) => s.toFixed(1)).join(', '));
  // Times one way: the branch's zone, to the second, with its offset.
  assert.match(await card.locator('.muted').textContent(), /opened \d{4}-\d\d-\d\d \d\d:\d\d:\d\d \+08:00/);

  // Probe status per branch and system (checked every second by the daemon).
  await wall.locator('#probes tr', { hasText: 'queue' }).locator('.st-down').waitFor({ timeout: 10000 });
  await wall.locator('#probes tr', { hasText: 'atm' }).locator('.st-up').waitFor({ timeout: 10000 });

  // A silence added from the form is in force in the API, and ends from its button.
  await wall.getByLabel('Branch id').fill('br-b');
  await wall.getByLabel('System (optional)').fill('core');
  await wall.getByLabel('For how many minutes').fill('30');
  await wall.getByLabel('Why').fill('core upgrade (browser test)');
  // Before it is made: which open incidents and recent events it would match.
  await wall.getByRole('button', { name: 'Preview what it matches' }).click();
  await wall.locator('#preview', { hasText: 'Would match' }).waitFor({ timeout: 5000 });
  const preview = await wall.locator('#preview').textContent();
  assert.match(preview, new RegExp(`Would match 1 open incident\\(s\\): #${id} failover, and [1-9]\\d* event\\(s\\) of the last day`), preview);
  figures.silence_preview = preview;
  await wall.getByRole('button', { name: 'Add silence' }).click();
  const silenceRow = wall.locator('[data-silence]', { hasText: 'core upgrade (browser test)' });
  await silenceRow.waitFor({ timeout: 5000 });
  const silenced = await api('GET', '/api/v1/silences', env('BG_OPS_TOKEN'));
  const mine = silenced.items.find((x) => x.comment === 'core upgrade (browser test)');
  assert.ok(mine, JSON.stringify(silenced));
  assert.deepEqual(mine.matchers.map((m) => `${m.name}=${m.value}`), ['branch=br-b', 'system=core']);
  await silenceRow.getByRole('button', { name: `End silence ${mine.id}` }).click();
  await silenceRow.waitFor({ state: 'detached', timeout: 5000 });
  const left = await api('GET', '/api/v1/silences', env('BG_OPS_TOKEN'));
  assert.ok(!left.items.some((x) => x.id === mine.id), 'the ended silence is no longer in force');

  // Every form field has a label.
  const unlabelled = await wall.evaluate(() => [...document.querySelectorAll('input')]
    .filter((i) => !i.hidden && !document.querySelector(`label[for="${i.id}"]`)).map((i) => i.id || i.name));
  assert.deepEqual(unlabelled, []);
  await wall.locator('#timeline').evaluate((e) => { e.hidden = true; });
  await wall.evaluate(() => window.scrollTo(0, 0));
  await wall.screenshot({ path: `${out}/dashboard-1280x800.png` });
  assert.deepEqual(problems, [], 'script errors on the page');

  // ---- a branch head's phone: only its branch
  const ctx = await browser.newContext({ viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true });
  const phone = await ctx.newPage();
  await phone.goto(url + '/');
  await phone.getByLabel('API token').fill(env('BG_HEAD_TOKEN'));
  await phone.getByRole('button', { name: 'Sign in' }).click();
  await phone.locator('#main').waitFor();
  const shown = await phone.locator('[data-incident]').evaluateAll(
    (els) => els.map((e) => e.querySelector('h3').textContent));
  assert.ok(shown.length > 0, 'the branch head sees its incident');
  for (const t of shown) assert.match(t, /Branch A/, `a branch head sees only its branch: ${t}`);
  assert.equal(await phone.locator(`[data-incident="${id}"]`).count(), 0, 'br-b is hidden');
  const boards = await phone.locator('[data-score]').evaluateAll((els) => els.map((e) => e.dataset.score));
  assert.deepEqual(boards, [`${drill}:br-a`]);
  assert.doesNotMatch(await phone.locator('#branches').textContent(), /Branch B/);
  await phone.locator('#probes tr', { hasText: 'queue' }).waitFor();
  assert.doesNotMatch(await phone.locator('#probes').textContent(), /br-b/);
  // A branch head may not manage silences: no form.
  assert.equal(await phone.locator('#silence-form').isVisible(), false);
  const width = await phone.evaluate(() => document.documentElement.scrollWidth);
  assert.ok(width <= 390, `no sideways scrolling on a phone (page is ${width}px wide)`);
  // Tap targets for a thumb: every visible button at least 44 px high.
  const small = await phone.locator('button:visible').evaluateAll(
    (els) => els.filter((e) => e.getBoundingClientRect().height < 44).map((e) => e.textContent.trim()));
  assert.deepEqual(small, [], 'buttons too small to tap');
  figures.head_incidents = shown.length;
  await phone.screenshot({ path: `${out}/dashboard-390x844.png`, fullPage: true });
  await ctx.close();
} finally {
  await browser.close();
}
console.log(JSON.stringify(figures));
