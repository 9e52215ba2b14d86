// The wall through a daemon restart: tests/wall.rs kills the daemon when
// this script says `ready`, and starts it again on the same port when it
// says `banner`. The wall must show the lost-feed banner, then live data
// again, without a reload of the page.
//
// Environment: BG_URL, BG_SIGNALS (a folder for the two signal files).
import { launch } from './launch.mjs';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';

const url = process.env.BG_URL;
const signals = process.env.BG_SIGNALS;
assert.ok(url && signals);
const browser = await launch();
const figures = {};
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
  await page.goto(url + '/wall');
  await page.locator('.tile').first().waitFor({ timeout: 10000 });
  await page.evaluate(() => { window.__noReload = 'still here'; });
  assert.equal(await page.locator('#banner').isVisible(), false);
  writeFileSync(`${signals}/ready`, '');
  const lost = Date.now();
  await page.locator('#banner').waitFor({ state: 'visible', timeout: 20000 });
  figures.banner_after_ms = Date.now() - lost;
  // The last picture stays while the daemon is away.
  assert.ok(await page.locator('.tile').count() > 0, 'the tiles stay');
  writeFileSync(`${signals}/banner`, '');
  await page.locator('#banner').waitFor({ state: 'hidden', timeout: 30000 });
  figures.back_after_ms = Date.now() - lost;
  assert.equal(await page.evaluate(() => window.__noReload), 'still here', 'the page was reloaded');
  assert.ok(await page.locator('.tile').count() > 0);
} finally {
  await browser.close();
}
console.log(JSON.stringify(figures));
