// Time to first paint of the dashboard's instance list: a page that holds a token in its
// session opens #/instances; the clock runs from navigation to all N rows in the DOM and a
// frame painted after them. Usage: node dashboard-paint.mjs URL TOKEN N ROUNDS
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const require = createRequire(path.join(here, '../ui/package.json'));
const { chromium } = require('playwright-core');

const [url, token, n, rounds] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: '/usr/bin/chromium',
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
try {
  const context = await browser.newContext({ ignoreHTTPSErrors: true, viewport: { width: 1280, height: 800 } });
  await context.addInitScript((t) => sessionStorage.setItem('vessel.token', t), token);
  const page = await context.newPage();
  const times = [];
  for (let r = 0; r <= Number(rounds); r++) {
    await page.goto('about:blank');
    const t0 = Date.now();
    await page.goto(`${url}/ui/#/instances`);
    await page.waitForFunction((want) =>
      document.querySelectorAll('[data-testid^="instance-row-"]').length >= want, Number(n),
    { timeout: 120000, polling: 'raf' });
    await page.evaluate(() => new Promise((res) => requestAnimationFrame(() => res())));
    const ms = Date.now() - t0;
    if (r > 0) times.push(ms); // round 0 warms the caches
  }
  times.sort((a, b) => a - b);
  const med = times[Math.floor(times.length / 2)];
  console.log(`dashboard first paint\t${med} ms median\t(min ${times[0]}, max ${times[times.length - 1]}; ${times.length} rounds)`);
} finally {
  await browser.close();
}
