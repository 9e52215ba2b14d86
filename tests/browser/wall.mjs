// The wall screen (/wall) in Debian's Chromium through playwright-core,
// against a daemon tests/wall.rs prepared (no tokens: loopback). Every check
// throws on failure; the figures measured are printed as one JSON line.
//
// Environment: BG_URL, BG_URGENT (the incident with the overdue critical
// step), BG_DRILL_INCIDENT, BG_OUT (folder for screenshots).
import { env, launch } from './launch.mjs';
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';

const url = env('BG_URL');
const out = env('BG_OUT');
const urgent = Number(env('BG_URGENT'));
const drill = Number(env('BG_DRILL_INCIDENT'));
mkdirSync(out, { recursive: true });

const browser = await launch();
const figures = { views: {}, axe: {} };

// axe-core in the page: the serious and critical violations, if any.
async function axe(page) {
  await page.addScriptTag({ path: 'node_modules/axe-core/axe.min.js' });
  return page.evaluate(async () => {
    const r = await window.axe.run(document);
    return {
      // It looked: rules ran and passed (color contrast among them).
      passes: r.passes.map((p) => p.id),
      violations: r.violations
        .filter((v) => v.impact === 'serious' || v.impact === 'critical')
        .map((v) => ({ id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.slice(0, 3).map((n) => n.target.join(' ')) })),
    };
  });
}

// Each view as a person sees it, checked by axe-core (the page's own
// content security policy is bypassed only to put axe in).
async function checked(name, path, viewport, ready) {
  const ctx = await browser.newContext({ viewport, bypassCSP: true });
  const page = await ctx.newPage();
  await page.goto(url + path);
  await page.locator(ready).first().waitFor({ timeout: 10000 });
  const found = await axe(page);
  figures.axe[name] = found.passes.length;
  assert.ok(found.passes.includes('color-contrast'), `${name}: axe-core checked no contrast`);
  assert.deepEqual(found.violations, [], `${name}: axe-core found serious or critical violations`);
  await page.screenshot({ path: `${out}/${name}-${viewport.width}x${viewport.height}.png` });
  await ctx.close();
}

try {
  for (const [w, h] of [[1920, 1080], [1280, 800], [3840, 2160], [390, 844]]) {
    const page = await browser.newPage({ viewport: { width: w, height: h } });
    const problems = [];
    page.on('pageerror', (e) => problems.push(String(e)));
    await page.goto(url + '/wall');
    await page.locator('.tile').first().waitFor({ timeout: 10000 });
    const view = await page.evaluate(() => ({
      width: window.innerWidth,
      height: window.innerHeight,
      scroll_w: document.documentElement.scrollWidth,
      scroll_h: document.documentElement.scrollHeight,
      tiles: document.querySelectorAll('.tile').length,
      first: Number(document.querySelector('.tile').dataset.incident),
      open: document.getElementById('w-open').textContent,
      drills: document.getElementById('drills').textContent,
      band: document.getElementById('band').textContent,
      rest: document.getElementById('rest').textContent,
      clock: document.getElementById('clock').textContent,
    }));
    // Never scrolls: nothing past the screen either way.
    assert.ok(view.scroll_h <= view.height, `${w}x${h} scrolls down: ${JSON.stringify(view)}`);
    assert.ok(view.scroll_w <= view.width, `${w}x${h} scrolls sideways: ${JSON.stringify(view)}`);
    assert.equal(view.first, urgent, 'the overdue critical step comes first');
    // The screen is used: at least two rows of tiles fit.
    assert.ok(view.tiles >= (w < 700 ? 2 : 4), `${w}x${h}: only ${view.tiles} tiles`);
    const first = page.locator('.tile').first();
    assert.match(await first.textContent(), /CRITICAL/);
    assert.match(await first.textContent(), /OVERDUE/);
    // A tile shows as many steps as it has room for, the most urgent first.
    for (const t of await page.locator('.tile').all()) {
      assert.ok(await t.locator('.step').count() <= 2);
    }
    // The critical step due in 2 h before the notice due in 1 h.
    const second = page.locator('.tile').nth(1);
    assert.match(await second.locator('.step').first().textContent(), /CRITICAL.*Look at the queue system/s);
    // Drills apart: counted on their own, listed in the band, never a tile.
    assert.match(view.drills, /^1 drill\(s\) running, not counted$/);
    assert.match(view.band, new RegExp(`#${drill} `));
    assert.equal(await page.locator(`.tile[data-incident="${drill}"]`).count(), 0);
    // More open than fit: the page says so and pages through by itself.
    assert.match(view.rest, /^Page 1 of \d+ \(300 open\)/);
    assert.ok(view.clock.length > 0, 'a clock');
    assert.deepEqual(problems, []);
    await page.screenshot({ path: `${out}/wall-${w}x${h}.png` });
    figures.views[`${w}x${h}`] = view;
    figures.first = view.first;
    figures.open = view.open;
    await page.close();
  }
  // The light theme, from the URL.
  const light = await browser.newPage({ viewport: { width: 1280, height: 800 } });
  await light.goto(url + '/wall?theme=light&branches=br-17');
  await light.locator('.tile').first().waitFor({ timeout: 10000 });
  assert.equal(await light.evaluate(() => document.body.classList.contains('light')), true);
  // br-17 only: its eight queue incidents and the alarm.
  const names = await light.locator('.tile h2').allTextContents();
  assert.ok(names.length > 0 && names.every((n) => n.includes('Branch 17')), JSON.stringify(names));
  const rest = await light.locator('#rest').textContent();
  assert.match(rest, /\(9 open\)|^9 open/, rest);
  figures.light = { tiles: names.length, rest };
  await light.screenshot({ path: `${out}/wall-light-br-17.png` });

  await checked('wall-dark', '/wall', { width: 1920, height: 1080 }, '.tile');
  await checked('wall-light', '/wall?theme=light', { width: 1920, height: 1080 }, '.tile');
  await checked('dashboard', '/', { width: 1920, height: 1080 }, '[data-incident]');
  await checked('dashboard', '/', { width: 1280, height: 800 }, '[data-incident]');
  await checked('phone', '/', { width: 390, height: 844 }, '[data-incident]');
} finally {
  await browser.close();
}
console.log(JSON.stringify(figures));
