// For benches/dashboard.rs: how long the dashboard and the wall take to show
// in Chromium, from navigation to the incident cards (tiles) being on screen,
// on a daemon without tokens. Usage: node render.mjs URL
import { launch } from './launch.mjs';

const url = process.argv[2];
const browser = await launch();
try {
  const times = [];
  for (const [path, size] of [['/', [1280, 800]], ['/', [390, 844]], ['/wall', [1920, 1080]], ['/wall', [3840, 2160]]]) {
    const page = await browser.newPage({ viewport: { width: size[0], height: size[1] } });
    for (let k = 0; k < 5; k++) {
      const t = Date.now();
      await page.goto(url + path);
      await page.locator('[data-incident]').first().waitFor({ timeout: 10000 });
      times.push(Date.now() - t);
    }
    const cards = await page.locator('[data-incident]').count();
    const nodes = await page.evaluate(() => document.getElementsByTagName('*').length);
    await page.close();
    times.sort((a, b) => a - b);
    console.log(`${path} ${size[0]}x${size[1]}: page shown in p50 ${times[2]} ms, max ${times[4]} ms (${cards} incident cards, ${nodes} elements)`);
    times.length = 0;
  }
} finally {
  await browser.close();
}
