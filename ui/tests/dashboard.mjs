// Browser test of the dashboard against a running vesseld (headless Chromium).
//
//   VESSEL_URL=https://127.0.0.1:8443 VESSEL_ADMIN_TOKEN=... VESSEL_VIEWER_TOKEN=... \
//   VESSEL_IMAGE=busybox VESSEL_VM=vm1 VESSEL_OTHER_INSTANCE=web VESSEL_ARTIFACTS=/tmp/shots \
//   node ui/tests/dashboard.mjs
//
// Prints one line per step; ends with "N passed, N failed"; exits non-zero on any failure.

import { chromium } from 'playwright-core';
import fs from 'node:fs';
import path from 'node:path';

function env(name, { required = true } = {}) {
  const v = process.env[name];
  if (required && !v) {
    console.error(`dashboard test: ${name} is not set`);
    process.exit(2);
  }
  return v || '';
}

const BASE = env('VESSEL_URL').replace(/\/+$/, '');
const ADMIN = env('VESSEL_ADMIN_TOKEN');
const VIEWER = env('VESSEL_VIEWER_TOKEN');
const IMAGE = env('VESSEL_IMAGE');
const VM = env('VESSEL_VM', { required: false });
const OTHER = env('VESSEL_OTHER_INSTANCE');
const ARTIFACTS = env('VESSEL_ARTIFACTS', { required: false }) || path.resolve('ui-artifacts');
const UI = `${BASE}/ui/`;
const NAME = 'ui-c1';
const WRONG_TOKEN = 'vessel_' + '0'.repeat(64);

fs.mkdirSync(ARTIFACTS, { recursive: true });

// Console errors that do not come from the dashboard's JavaScript and that it cannot avoid:
// - Chromium logs "Failed to load resource: the server responded with a status of 4xx" for
//   every HTTP error answer, also for a fetch() whose answer the page handles. The steps
//   provoke some on purpose: the wrong token's 401, the 401 of the client-certificate check
//   at start (no certificate here), the 404 of the other project's instance.
// - "WebSocket connection to ... failed": Chromium's own line when a WebSocket is dropped
//   or refused; the reconnect check drops the console's connection on purpose.
// - "Failed to load resource: net::ERR_CONNECTION_REFUSED": the page's retries while the
//   daemon restarts (step f4).
const BROWSER_NOISE = [
  /^Failed to load resource: the server responded with a status of 4\d\d\b/,
  /^Failed to load resource: net::ERR_CONNECTION_REFUSED$/,
  /^WebSocket connection to '[^']*' failed/,
];
const jsErrors = [];
const noise = [];
let passed = 0;
let failed = 0;

function withTimeout(promise, ms, what) {
  let t;
  return Promise.race([
    promise,
    new Promise((_, reject) => {
      t = setTimeout(() => reject(new Error(`timed out after ${ms / 1000} s: ${what}`)), ms);
    }),
  ]).finally(() => clearTimeout(t));
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync'],
  headless: true,
});
const context = await browser.newContext({ ignoreHTTPSErrors: true, viewport: { width: 1280, height: 800 } });
const page = await context.newPage();
page.setDefaultTimeout(15000);
page.on('pageerror', (e) => jsErrors.push(`pageerror: ${e.message}`));
page.on('console', (m) => {
  if (m.type() !== 'error') return;
  const text = m.text();
  if (BROWSER_NOISE.some((re) => re.test(text))) noise.push(text);
  else jsErrors.push(`console.error: ${text} (${m.location().url || '?'})`);
});

async function shot(name) {
  try {
    await page.screenshot({ path: path.join(ARTIFACTS, `${name}.png`), fullPage: false });
  } catch {
    // a screenshot is a help, not a check
  }
}

async function step(name, ms, fn) {
  const t0 = Date.now();
  try {
    await withTimeout(fn(), ms, name);
    passed++;
    console.log(`ok - ${name} (${((Date.now() - t0) / 1000).toFixed(1)} s)`);
  } catch (e) {
    failed++;
    console.log(`FAIL - ${name}: ${e.message.split('\n')[0]}`);
    await shot(`fail-${name.replace(/[^a-z0-9]+/gi, '-').toLowerCase()}`);
  }
}

function skip(name, why) {
  console.log(`skip - ${name}: ${why}`);
}

// ---- REST helpers (outside the page), for expectations and cleanup -------------------------

async function rest(method, p, token = ADMIN, data) {
  const r = await context.request.fetch(`${BASE}${p}`, {
    method, headers: { Authorization: `Bearer ${token}` }, data, failOnStatusCode: false,
  });
  let body = null;
  try {
    body = await r.json();
  } catch {
    body = null;
  }
  return { status: r.status(), body };
}

async function removeInstance(name) {
  const r = await rest('DELETE', `/1.0/instances/${name}?force=1`);
  if (r.status === 202 && r.body && r.body.id) await rest('GET', `/1.0/operations/${r.body.id}/wait?timeout=60`);
}

// ---- page helpers ---------------------------------------------------------------------------

const tid = (id) => `[data-testid="${id}"]`;

async function goto(hash) {
  await page.evaluate((h) => { location.hash = h; }, hash);
}

async function login(token) {
  await page.locator(tid('login-token')).waitFor();
  await page.fill(tid('login-token'), token);
  await page.click(tid('login-submit'));
}

async function waitText(selector, predicate, ms, what) {
  const t0 = Date.now();
  let last = '';
  while (Date.now() - t0 < ms) {
    const loc = page.locator(selector);
    if (await loc.count()) {
      last = ((await loc.first().textContent()) || '').trim();
      if (predicate(last)) return last;
    }
    await page.waitForTimeout(250);
  }
  throw new Error(`${what}: last seen ${JSON.stringify(last)}`);
}

async function terminalLines() {
  return page.evaluate((sel) => {
    const el = document.querySelector(sel);
    if (!el) return [];
    if (el.readTerminal) return el.readTerminal();
    return [...el.querySelectorAll('.xterm-rows > div')].map((d) => d.textContent);
  }, tid('terminal'));
}

async function typeAndRead(word) {
  await page.locator(`${tid('terminal')} .xterm-screen`).click();
  await page.keyboard.type(`echo ${word}`);
  await page.keyboard.press('Enter');
  const t0 = Date.now();
  while (Date.now() - t0 < 20000) {
    const lines = await terminalLines();
    if (lines.some((l) => l.replace(/\u00a0/g, ' ').trim() === word)) return;
    await page.waitForTimeout(250);
  }
  throw new Error(`"${word}" never came back; terminal shows: ${JSON.stringify((await terminalLines()).filter((l) => l.trim()).slice(-5))}`);
}

// ---- the steps ------------------------------------------------------------------------------

await page.goto(UI);

await step('a. a wrong token shows the server\'s message on the login page', 30000, async () => {
  const expected = await rest('GET', '/1.0/auth/self', WRONG_TOKEN);
  if (expected.status !== 401) throw new Error(`the server answered ${expected.status} to a wrong token, not 401`);
  await login(WRONG_TOKEN);
  const msg = await waitText(tid('login-error'), (t) => t.length > 0, 10000, 'no login error shown');
  const server = expected.body && expected.body.error;
  if (server && !msg.includes(server)) throw new Error(`login error ${JSON.stringify(msg)} is not the server's ${JSON.stringify(server)}`);
  if (!(await page.locator(tid('login-token')).isVisible())) throw new Error('left the login page');
  if (await page.locator(tid('logout')).count()) throw new Error('logged in with a wrong token');
});

await step('b. admin logs in, creates ui-c1, sees it running without a reload', 180000, async () => {
  await removeInstance(NAME);
  await page.fill(tid('login-token'), '');
  await login(ADMIN);
  await page.locator(tid('identity-name')).waitFor();
  const role = await page.locator(tid('identity-role')).textContent();
  if (role.trim() !== 'admin') throw new Error(`header shows role ${role}`);
  await goto('#/instances');
  await page.locator(tid('instances-table')).waitFor();
  await page.evaluate(() => { window.__noReload = 1; });
  await page.click(tid('create-open'));
  await page.fill(tid('create-name'), NAME);
  await page.selectOption(tid('create-type'), 'container');
  // the image list loads after the dialog opens
  const t0 = Date.now();
  let value = null;
  while (!value && Date.now() - t0 < 10000) {
    value = await page.evaluate(({ sel, image }) => {
      const opts = [...document.querySelector(sel).options];
      const o = opts.find((x) => x.value === image) || opts.find((x) => x.value && x.textContent.split(/[ ,(]/).includes(image));
      return o ? o.value : null;
    }, { sel: tid('create-image'), image: IMAGE });
    if (!value) await page.waitForTimeout(200);
  }
  if (!value) throw new Error(`image ${IMAGE} is not offered in the create form`);
  await page.selectOption(tid('create-image'), value);
  await shot('create-desktop');
  await page.click(tid('create-submit'));
  const t1 = Date.now();
  while (Date.now() - t1 < 150000) {
    const err = page.locator(tid('create-error'));
    if (await err.count() && await err.isVisible()) throw new Error(`create failed: ${await err.textContent()}`);
    const st = page.locator(tid(`instance-status-${NAME}`));
    if (await st.count() && (await st.textContent()).trim() === 'running') break;
    await page.waitForTimeout(300);
  }
  const status = (await page.locator(tid(`instance-status-${NAME}`)).textContent().catch(() => '')).trim();
  if (status !== 'running') throw new Error(`status of ${NAME} is ${JSON.stringify(status)}, not running`);
  if (!(await page.evaluate(() => window.__noReload === 1))) throw new Error('the page reloaded');
  await shot('instances-after-create');
});

await step('c. exec terminal: echo hi reads back hi', 60000, async () => {
  await page.click(`${tid(`instance-row-${NAME}`)} a`);
  await page.click(tid('tab-exec'));
  await waitText(tid('conn-status'), (t) => t === 'Connected', 30000, 'exec never connected');
  await typeAndRead('hi');
  if (!(await page.evaluate(() => window.__noReload === 1))) throw new Error('the page reloaded');
});

if (VM) {
  await step(`d. ${VM}'s graphical console shows a non-blank frame`, 150000, async () => {
    await goto(`#/instances/${VM}/vnc`);
    await page.locator(tid('tab-vnc')).waitFor({ timeout: 20000 });
    await page.locator(`${tid('vnc-canvas')} canvas`).first().waitFor({ timeout: 20000 });
    const t0 = Date.now();
    let info = null;
    while (Date.now() - t0 < 120000) {
      info = await page.evaluate((sel) => {
        const c = document.querySelector(sel);
        if (!c || !c.width || !c.height) return { ok: false, why: 'no canvas size' };
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        for (let i = 4; i < d.length; i += 4) {
          if (d[i] !== d[0] || d[i + 1] !== d[1] || d[i + 2] !== d[2]) return { ok: true, w: c.width, h: c.height };
        }
        return { ok: false, why: `all ${c.width}x${c.height} pixels equal` };
      }, `${tid('vnc-canvas')} canvas`);
      if (info.ok) break;
      await page.waitForTimeout(2000);
    }
    await shot('vnc-desktop');
    if (!info || !info.ok) {
      const st = await page.locator(tid('conn-status')).textContent().catch(() => '?');
      throw new Error(`blank display (${info && info.why}); status: ${st}`);
    }
  });
} else {
  skip('d. graphical console', 'VESSEL_VM is empty');
}

await step(`e. a console of ${OTHER} (another project) is refused with a message`, 30000, async () => {
  await goto(`#/instances/${OTHER}/console`);
  const msg = await waitText(tid('page-error'), (t) => t.length > 0, 15000, 'no message shown');
  if (await page.locator(tid('terminal')).count()) throw new Error('a terminal was opened');
  if (!(await page.locator(tid('page-error')).isVisible())) throw new Error('the message is not visible');
  console.log(`   message: ${msg}`);
});

await step('f. after a reload the exec and console tabs come back connected', 120000, async () => {
  for (const tab of ['exec', 'console']) {
    await goto(`#/instances/${NAME}/${tab}`);
    await waitText(tid('conn-status'), (t) => t === 'Connected', 30000, `${tab} never connected`);
    await page.reload();
    await page.locator(tid(`tab-${tab}`)).waitFor();
    if (!page.url().endsWith(`#/instances/${NAME}/${tab}`)) throw new Error(`after the reload the page is ${page.url()}`);
    await waitText(tid('conn-status'), (t) => t === 'Connected', 30000, `${tab} did not come back after the reload`);
    await page.locator(tid('terminal')).waitFor();
  }
  await goto(`#/instances/${NAME}/exec`);
  await waitText(tid('conn-status'), (t) => t === 'Connected', 30000, 'exec never connected');
  await typeAndRead('again');
});

await step('f2. a dropped connection shows "reconnecting" and comes back', 90000, async () => {
  // Record every text the status shows, then drop the WebSocket under the session (the
  // terminal's test hook closes it as a network failure would).
  await page.evaluate((sel) => {
    window.__connStates = [];
    const el = document.querySelector(sel);
    new MutationObserver(() => window.__connStates.push(el.textContent)).observe(el, { childList: true, characterData: true, subtree: true });
    document.querySelector('[data-testid="terminal"]').dropConnection();
  }, tid('conn-status'));
  await waitText(tid('conn-status'), (t) => t === 'Connected', 60000, 'did not reconnect');
  const states = await page.evaluate(() => window.__connStates);
  if (!states.some((s) => s === 'Connection lost — reconnecting…')) {
    throw new Error(`"Connection lost — reconnecting…" was never shown; the status went ${JSON.stringify(states)}`);
  }
  await typeAndRead('back');
});

await step('f3. Ctrl-C in the terminal interrupts the command on it', 60000, async () => {
  await goto(`#/instances/${NAME}/exec`);
  await waitText(tid('conn-status'), (t) => t === 'Connected', 30000, 'exec never connected');
  await page.locator(`${tid('terminal')} .xterm-screen`).click();
  await page.keyboard.type('sleep 300');
  await page.keyboard.press('Enter');
  await page.waitForTimeout(500);
  await page.keyboard.press('Control+C');
  // The shell takes input again at once: the sleep is gone.
  await typeAndRead('interrupted');
});

// The harness (crates/vesseld/tests/dashboard.rs) restarts the daemon when this line is
// printed, and makes VESSEL_RESTART_DONE exist when the new one answers.
const RESTART_DONE = env('VESSEL_RESTART_DONE', { required: false });
if (RESTART_DONE) {
  await step('f4. a daemon restart: the open console reconnects by itself', 120000, async () => {
    await goto(`#/instances/${NAME}/console`);
    await waitText(tid('conn-status'), (t) => t === 'Connected', 30000, 'console never connected');
    await page.evaluate((sel) => {
      window.__connStates = [];
      const el = document.querySelector(sel);
      new MutationObserver(() => window.__connStates.push(el.textContent)).observe(el, { childList: true, characterData: true, subtree: true });
    }, tid('conn-status'));
    console.log('RESTART-DAEMON');
    const t0 = Date.now();
    while (!fs.existsSync(RESTART_DONE)) {
      if (Date.now() - t0 > 60000) throw new Error('the harness did not restart the daemon');
      await page.waitForTimeout(200);
    }
    await waitText(tid('conn-status'), (t) => t === 'Connected', 60000, 'the console did not come back');
    const states = await page.evaluate(() => window.__connStates);
    if (!states.some((st) => /reconnecting/.test(st))) {
      throw new Error(`the restart was not seen; the status went ${JSON.stringify(states)}`);
    }
    await typeAndRead('restarted');
  });
} else {
  skip('f4. daemon restart', 'VESSEL_RESTART_DONE is not set');
}

await step('h. screenshots of every page at 1280x800 and 390x844', 240000, async () => {
  const pages = [
    ['instances', '#/instances'],
    ['instance', `#/instances/${NAME}`],
    ['instance-exec', `#/instances/${NAME}/exec`],
    ['instance-snapshots', `#/instances/${NAME}/snapshots`],
    ['instance-backups', `#/instances/${NAME}/backups`],
    ['instance-logs', `#/instances/${NAME}/logs`],
    ['instance-devices', `#/instances/${NAME}/devices`],
    ['images', '#/images'],
    ['storage', '#/storage'],
    ['volumes', '#/volumes'],
    ['exports', '#/exports'],
    ['networks', '#/networks'],
    ['projects', '#/projects'],
    ['operations', '#/operations'],
    ['audit', '#/audit'],
  ];
  const pools = await rest('GET', '/1.0/storage/pools');
  if (pools.status === 200 && pools.body && pools.body.length) pages.push(['storage-pool', `#/storage/${pools.body[0].name}`]);
  const nets = await rest('GET', '/1.0/networks');
  if (nets.status === 200 && nets.body && nets.body.length) pages.push(['network', `#/networks/${nets.body[0].name}`]);
  if (VM) pages.push(['instance-vnc', `#/instances/${VM}/vnc`]);
  const overflow = [];
  for (const [size, w, hgt] of [['desktop', 1280, 800], ['phone', 390, 844]]) {
    await page.setViewportSize({ width: w, height: hgt });
    for (const [name, hash] of pages) {
      await goto(hash);
      await page.waitForTimeout(name.includes('exec') || name.includes('vnc') ? 2500 : 1200);
      if (size === 'phone') {
        const sw = await page.evaluate(() => document.documentElement.scrollWidth);
        if (sw > w + 1) overflow.push(`${name} (${sw}px)`);
      }
      await shot(`${name}-${size}`);
    }
    if (size === 'phone') {
      if (!(await page.locator(tid('menu')).isVisible())) throw new Error('no menu button on a phone-sized screen');
      if (await page.locator('#nav').isVisible()) throw new Error('the navigation is not collapsed on a phone-sized screen');
      await page.click(tid('menu'));
      await page.locator('#nav').waitFor({ state: 'visible' });
      await shot('menu-phone');
      await page.click(tid('menu'));
    }
  }
  await page.setViewportSize({ width: 1280, height: 800 });
  if (overflow.length) throw new Error(`wider than a 390 px screen: ${overflow.join(', ')}`);
});

await step('g. a viewer gets no start/stop/delete/create buttons', 60000, async () => {
  await goto('#/instances');
  await page.click(tid('logout'));
  await page.locator(tid('login-token')).waitFor();
  await shot('login-desktop');
  await page.setViewportSize({ width: 390, height: 844 });
  await shot('login-phone');
  await page.setViewportSize({ width: 1280, height: 800 });
  await login(VIEWER);
  await page.locator(tid('identity-name')).waitFor();
  const role = (await page.locator(tid('identity-role')).textContent()).trim();
  if (role !== 'viewer') throw new Error(`header shows role ${role}, not viewer`);
  await goto('#/instances');
  await page.locator(tid('instances-table')).waitFor();
  await page.waitForTimeout(1500);
  const sel = ['action-start', 'action-stop', 'action-restart', 'action-delete', 'create-open'].map(tid).join(',');
  let n = await page.locator(sel).count();
  if (n) throw new Error(`${n} action buttons on the instances page`);
  await shot('instances-viewer-desktop');
  if (await page.locator(tid(`instance-row-${NAME}`)).count()) {
    await goto(`#/instances/${NAME}`);
    await page.locator(tid('instance-status')).waitFor();
    await page.waitForTimeout(500);
    n = await page.locator(sel).count();
    if (n) throw new Error(`${n} action buttons on the instance page`);
  }
});

await step('g2. admin deletes ui-c1 through the dashboard', 120000, async () => {
  await page.click(tid('logout'));
  await login(ADMIN);
  await page.locator(tid('identity-name')).waitFor();
  await goto(`#/instances/${NAME}`);
  await page.locator(tid('action-delete')).waitFor();
  await page.waitForFunction((s) => !document.querySelector(s).disabled, tid('action-delete'));
  await page.click(tid('action-delete'));
  await page.click(tid('confirm-ok'));
  await page.waitForFunction(() => location.hash === '#/instances', null, { timeout: 90000 });
  await page.locator(tid('instances-table')).waitFor();
  const t0 = Date.now();
  while (await page.locator(tid(`instance-row-${NAME}`)).count()) {
    if (Date.now() - t0 > 20000) throw new Error(`${NAME} is still listed`);
    await page.waitForTimeout(300);
  }
  const r = await rest('GET', `/1.0/instances/${NAME}`);
  if (r.status !== 404) throw new Error(`GET ${NAME} answers ${r.status} after the delete`);
});

// Waits for an asynchronous answer's operation; throws with the answer otherwise.
async function done(r, what) {
  if (r.status === 202 && r.body && r.body.id) {
    const w = await rest('GET', `/1.0/operations/${r.body.id}/wait?timeout=60`);
    if (w.body && w.body.status === 'failure') throw new Error(`${what}: ${JSON.stringify(w.body)}`);
    return w;
  }
  if (r.status >= 300) throw new Error(`${what}: ${r.status} ${JSON.stringify(r.body)}`);
  return r;
}

async function removeExportFixture() {
  await rest('DELETE', '/1.0/storage/exports/ui-disk');
  await rest('DELETE', '/1.0/storage/exports/ui-share');
  await done(await rest('DELETE', '/1.0/storage/pools/ui-p/volumes/ui-share'), 'volume delete').catch(() => {});
  await done(await rest('DELETE', '/1.0/storage/pools/ui-p/volumes/ui-disk'), 'volume delete').catch(() => {});
  await done(await rest('DELETE', '/1.0/storage/pools/ui-p'), 'pool delete').catch(() => {});
}

await step('l. a TLS export gives a new client its three credential files, and revokes them', 90000, async () => {
  try {
    await newClientStep();
  } finally {
    // The next steps need the page without a dialog over it, and the server clean.
    if (await page.locator(tid('dialog-close')).count()) await page.click(tid('dialog-close')).catch(() => {});
    await removeExportFixture().catch(() => {});
  }
});

async function newClientStep() {
  // A dir pool, a block volume and an NBD export on loopback TCP (TLS by default), made
  // outside the page; a port in use is tried again with another.
  await done(await rest('POST', '/1.0/storage/pools', ADMIN, { name: 'ui-p', driver: 'dir' }), 'pool');
  await done(await rest('POST', '/1.0/storage/pools/ui-p/volumes', ADMIN, { name: 'ui-disk', content: 'block', size: 1048576 }), 'volume');
  let made = null;
  for (let i = 0; i < 5 && !made; i++) {
    const port = 20000 + Math.floor(Math.random() * 20000);
    const r = await rest('POST', '/1.0/storage/exports', ADMIN, { name: 'ui-disk', pool: 'ui-p', volume: 'ui-disk', protocol: 'nbd', listen: `127.0.0.1:${port}` });
    if (r.status === 201) made = r.body;
  }
  if (!made || !made.tls) throw new Error(`no TLS export: ${JSON.stringify(made)}`);
  await goto('#/exports');
  await waitText(tid('export-tls-ui-disk'), (t) => t === 'yes, 0 clients', 20000, 'the TLS column');
  await page.click(tid('export-client-ui-disk'));
  const pem = {};
  try {
    // Each file as the user gets it: a click on its link downloads it under its name.
    for (const name of ['ca-cert.pem', 'client-cert.pem', 'client-key.pem']) {
      const link = page.locator(tid(`credential-${name}`));
      await link.waitFor();
      const [dl] = await Promise.all([page.waitForEvent('download'), link.click()]);
      if (dl.suggestedFilename() !== name) throw new Error(`${name} downloads as ${dl.suggestedFilename()}`);
      pem[name] = fs.readFileSync(await dl.path(), 'utf8');
    }
  } finally {
    if (await page.locator(tid('dialog-close')).count()) await shot('export-credentials-desktop');
  }
  if (!pem['ca-cert.pem'].startsWith('-----BEGIN CERTIFICATE-----')) throw new Error(`ca-cert.pem: ${pem['ca-cert.pem'].slice(0, 40)}`);
  if (!pem['client-cert.pem'].startsWith('-----BEGIN CERTIFICATE-----')) throw new Error('client-cert.pem is no certificate');
  if (!pem['client-key.pem'].includes('PRIVATE KEY-----')) throw new Error('client-key.pem is no key');
  const fp = (await page.locator(tid('credential-fingerprint')).textContent()).trim();
  if (!/^[0-9a-f]{64}$/.test(fp)) throw new Error(`fingerprint ${fp}`);
  await page.click(tid('dialog-close'));
  await waitText(tid('export-tls-ui-disk'), (t) => t === 'yes, 1 client', 20000, 'the count after a new client');
  const list = await rest('GET', '/1.0/storage/exports');
  const e = (list.body || []).find((x) => x.name === 'ui-disk');
  if (!e || e.clients !== 1) throw new Error(`the export counts ${e && e.clients} clients`);
  // Revoked from the page, after a confirmation: no clients left, and no button to revoke.
  await page.click(tid('export-revoke-ui-disk'));
  await page.click(tid('confirm-ok'));
  await waitText(tid('export-tls-ui-disk'), (t) => t === 'yes, 0 clients', 20000, 'the count after the revocation');
  if (await page.locator(tid('export-revoke-ui-disk')).count()) throw new Error('a revoke button with no clients');
  const after = await rest('GET', '/1.0/storage/exports');
  const r = (after.body || []).find((x) => x.name === 'ui-disk');
  if (!r || r.clients !== 0) throw new Error(`after the revocation the export counts ${r && r.clients} clients`);
  // An NFS export for two client networks shows them, as the server wrote them.
  await done(await rest('POST', '/1.0/storage/pools/ui-p/volumes', ADMIN, { name: 'ui-share' }), 'fs volume');
  let share = null;
  for (let i = 0; i < 5 && !share; i++) {
    const port = 20000 + Math.floor(Math.random() * 20000);
    const r2 = await rest('POST', '/1.0/storage/exports', ADMIN, { name: 'ui-share', pool: 'ui-p', volume: 'ui-share', protocol: 'nfs', listen: `127.0.0.1:${port}`, allow: ['10.1.2.3/8', '192.0.2.7'] });
    if (r2.status === 201) share = r2.body;
  }
  if (!share) throw new Error('no NFS export');
  await goto('#/');
  await goto('#/exports');
  await waitText(tid('export-allow-ui-share'), (t) => t === '10.0.0.0/8, 192.0.2.7/32', 20000, 'the NFS export\'s client networks');
  await waitText(tid('export-allow-ui-disk'), (t) => t === 'anywhere', 20000, 'the NBD export\'s client networks');
  // Changed from the page: a bad network is refused in the dialog with the server's word,
  // a good one is what the server then serves.
  await page.click(tid('export-networks-ui-share'));
  await page.fill(tid('networks-input'), '10.0.0.0/33');
  await page.click(tid('networks-save'));
  await waitText(tid('networks-error'), (t) => t.includes('not a client network'), 20000, 'the dialog\'s error');
  await page.fill(tid('networks-input'), '192.0.2.0/24, fd00::1/64');
  await page.click(tid('networks-save'));
  await waitText(tid('export-allow-ui-share'), (t) => t === '192.0.2.0/24, fd00::/64', 20000, 'the networks after the change');
  const changed = (await rest('GET', '/1.0/storage/exports')).body.find((x) => x.name === 'ui-share');
  if (JSON.stringify(changed.allow) !== '["192.0.2.0/24","fd00::/64"]') throw new Error(`the server keeps ${JSON.stringify(changed.allow)}`);
  // Emptied: every client again (the page says so to the server; an empty list alone is
  // refused by it).
  await page.click(tid('export-networks-ui-share'));
  await page.fill(tid('networks-input'), '');
  await page.click(tid('networks-save'));
  await waitText(tid('export-allow-ui-share'), (t) => t === 'anywhere', 20000, 'the networks after emptying them');
  await page.click(tid('export-networks-ui-share'));
  await page.fill(tid('networks-input'), '192.0.2.0/24, fd00::1/64');
  await page.click(tid('networks-save'));
  await waitText(tid('export-allow-ui-share'), (t) => t === '192.0.2.0/24, fd00::/64', 20000, 'the networks set again');
}

await step('j. an expired session goes back to the login with the server\'s message', 180000, async () => {
  // A token that lives 12 s, made by the admin for this step; the page logs in with it
  // and is still open when it expires. On a loaded machine the login and the first page can
  // take longer than the token lives (the run in which this step failed had another test
  // binary running beside it): then again with a token that lives twice as long.
  let until = 0;
  for (let life = 12; ; life *= 2) {
    const made = await rest('POST', '/1.0/auth/tokens', ADMIN,
      { name: `ui-short-${Date.now()}`, role: 'viewer', expires: `${life}s` });
    if (made.status !== 201 && made.status !== 200) throw new Error(`token create answered ${made.status}`);
    until = Date.now() + life * 1000;
    if (await page.locator(tid('logout')).count()) await page.click(tid('logout'));
    await login(made.body.token);
    try {
      // Seen before the token's last 2 s, or the expiry could come before the page is open.
      const left = () => Math.max(1, until - Date.now() - 2000);
      await page.locator(tid('identity-name')).waitFor({ timeout: left() });
      await goto('#/instances');
      await page.locator(tid('instances-table')).waitFor({ timeout: left() });
      if (Date.now() < until - 2000) break;
    } catch (e) {
      if (life >= 48) throw e;
    }
    if (life >= 48) throw new Error(`logging in with a token that lives ${life} s took longer than it lives`);
    console.log(`   the login took longer than a ${life} s token lives; again with ${life * 2} s`);
  }
  await page.waitForTimeout(Math.max(0, until - Date.now()) + 1500);
  await goto('#/images');
  const msg = await waitText(tid('login-message'), (t) => /session ended/i.test(t), 20000,
    'no "session ended" message after the token expired');
  if (!/expired/.test(msg)) throw new Error(`the message does not say the identity expired: ${JSON.stringify(msg)}`);
  await shot('session-expired-desktop');
});

// A browser that presents a client certificate the server trusts needs no token.
const CERT = env('VESSEL_CLIENT_CERT', { required: false });
const KEY = env('VESSEL_CLIENT_KEY', { required: false });
if (CERT && KEY) {
  await step('k. a trusted client certificate logs the browser in without a token', 60000, async () => {
    const ctx = await browser.newContext({
      ignoreHTTPSErrors: true,
      viewport: { width: 1280, height: 800 },
      clientCertificates: [{ origin: BASE, certPath: CERT, keyPath: KEY }],
    });
    try {
      const p2 = await ctx.newPage();
      p2.on('pageerror', (e) => jsErrors.push(`pageerror (certificate page): ${e.message}`));
      await p2.goto(`${UI}#/instances`);
      await p2.locator(tid('identity-name')).waitFor({ timeout: 20000 });
      const who = (await p2.locator(tid('identity-name')).textContent()).trim();
      const role = (await p2.locator(tid('identity-role')).textContent()).trim();
      if (who !== 'ui-cert' || role !== 'viewer') throw new Error(`logged in as ${who} (${role}), not ui-cert (viewer)`);
      await p2.locator(tid('instances-table')).waitFor();
      if (await p2.locator(tid('login-token')).count()) throw new Error('the login page is shown');
      await p2.screenshot({ path: path.join(ARTIFACTS, 'certificate-login-desktop.png') });
    } finally {
      await ctx.close();
    }
  });
} else {
  skip('k. client certificate', 'VESSEL_CLIENT_CERT is not set');
}

await step('i. no JavaScript errors on the page', 1000, async () => {
  if (jsErrors.length) throw new Error(`${jsErrors.length} error(s):\n${jsErrors.join('\n')}`);
});
if (jsErrors.length) for (const e of jsErrors) console.log(`   ${e}`);
if (noise.length) console.log(`   (${noise.length} browser network log line(s) allowed: ${[...new Set(noise)].join(' | ')})`);

// Leave the server clean even when a step failed before g2.
await removeInstance(NAME).catch(() => {});
await removeExportFixture().catch(() => {});
await browser.close();
console.log(`screenshots in ${ARTIFACTS}`);
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
