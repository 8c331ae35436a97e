// End-to-end test of the web console in headless Chromium: starts `annal
// serve` on a temporary store with tokens, writes sample data through the
// API, opens each page and checks what it shows against the API, follows the
// live tail, replays a parked event from the Groups page, and checks that a
// read-only token gets a read-only console. Saves a screenshot of each page.
//
// Environment: ANNAL_BIN (the annal binary), CHROMIUM (the browser),
// SCREENSHOTS (folder for the PNGs).

import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtempSync, writeFileSync, mkdirSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import assert from 'node:assert/strict';
import { chromium } from 'playwright-core';

const BIN = process.env.ANNAL_BIN || 'target/debug/annal';
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const SHOTS = process.env.SCREENSHOTS || 'target/console-screenshots';
const ADMIN = 'admin-token-for-the-console-test';
const READER = 'read-token-for-the-console-test';

const sha = (s) => createHash('sha256').update(s).digest('hex');
const sleep = (ms) => new Promise(r => setTimeout(r, ms));

async function freePort() {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.listen(0, '127.0.0.1', () => { const p = s.address().port; s.close(() => resolve(p)); });
    s.on('error', reject);
  });
}

const results = [];
async function step(name, f) {
  const t = performance.now();
  try {
    await f();
    results.push({ name, ok: true, ms: Math.round(performance.now() - t) });
    console.log(`ok   ${name} (${Math.round(performance.now() - t)} ms)`);
  } catch (e) {
    results.push({ name, ok: false });
    console.log(`FAIL ${name}: ${e.stack || e}`);
    throw e;
  }
}

const dir = mkdtempSync(join(tmpdir(), 'annal-console-'));
const port = await freePort();
const base = `http://127.0.0.1:${port}`;
writeFileSync(join(dir, 'annal.toml'), `[server]
listen = "127.0.0.1:${port}"
tokens = [
  { name = "admin", sha256 = "${sha(ADMIN)}", role = "admin" },
  { name = "reader", sha256 = "${sha(READER)}", role = "read" },
]
`);
mkdirSync(SHOTS, { recursive: true });

const server = spawn(BIN, ['--data', join(dir, 'data'), '--config', join(dir, 'annal.toml'), 'serve'], { stdio: ['ignore', 'inherit', 'pipe'] });
let serverLog = '';
server.stderr.on('data', (d) => { serverLog += d; });

async function call(path, { method = 'GET', body, token = ADMIN } = {}) {
  const resp = await fetch(base + path, {
    method,
    headers: { Authorization: `Bearer ${token}`, ...(body ? { 'Content-Type': 'application/json' } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
  const text = await resp.text();
  return { status: resp.status, json: text ? JSON.parse(text) : null, text };
}

let browser;
let exitCode = 0;
/** Script errors and failed requests the page reported (printed if a step fails). */
let consoleErrors = [];
try {
  await step('server starts and prints the console URL', async () => {
    for (let i = 0; i < 200; i++) {
      try { if ((await fetch(base + '/health/live')).ok) break; } catch { /* not yet */ }
      await sleep(50);
    }
    assert.ok((await fetch(base + '/health/live')).ok, 'the server did not come up: ' + serverLog);
    await sleep(100);
    assert.match(serverLog, new RegExp(`console at http://127\\.0\\.0\\.1:${port}/ui/`));
  });

  // Sample data: 25 orders of 3 events, 5 users, a group with one parked event.
  await step('sample data written through the API', async () => {
    for (let i = 1; i <= 25; i++) {
      const corr = `corr-${i}`;
      const r = await call(`/streams/order-${i}`, {
        method: 'POST', body: {
          events: [
            { type: 'OrderPlaced', data: { order: i, total: 10 * i, lines: [{ sku: 'a', qty: 1 }, { sku: 'b', qty: 2 }] }, metadata: { $correlationId: corr }, tags: [`customer:c${i % 4}`] },
            { type: 'OrderPaid', data: { order: i, amount: 10 * i }, metadata: { $correlationId: corr } },
            { type: 'OrderShipped', data: { order: i }, metadata: { $correlationId: corr } },
          ],
        },
      });
      assert.equal(r.status, 200, r.text);
    }
    for (let i = 1; i <= 5; i++) {
      assert.equal((await call(`/streams/user-${i}`, { method: 'POST', body: { events: [{ type: 'UserRegistered', data: { user: i } }] } })).status, 200);
    }
    assert.equal((await call('/streams/order-3/metadata', { method: 'PUT', body: { max_count: 100 } })).status, 200);
    const g = await call('/groups/billing', { method: 'PUT', body: { stream: 'order-1', max_retries: 0 } });
    assert.equal(g.status, 201, g.text);
    const f = await call('/groups/billing/fetch?consumer=c1&max=1', { method: 'POST' });
    assert.equal(f.json.events.length, 1, f.text);
    const n = await call('/groups/billing/nack', { method: 'POST', body: { consumer: 'c1', id: f.json.events[0].id, action: 'park', reason: 'the payment service refused it' } });
    assert.equal(n.status, 204, n.text);
  });

  browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ['--no-sandbox'] });
  const ctx = await browser.newContext({ viewport: { width: 1280, height: 800 }, colorScheme: 'light' });
  await ctx.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: base });
  const page = await ctx.newPage();
  consoleErrors = [];
  page.on('pageerror', (e) => consoleErrors.push(String(e)));
  page.on('console', (m) => { if (m.type() === 'error') consoleErrors.push(m.text()); });

  await step('/ redirects to the console, which asks for a token', async () => {
    await page.goto(base + '/');
    assert.equal(new URL(page.url()).pathname, '/ui/');
    await page.waitForSelector('form.login');
    await page.screenshot({ path: join(SHOTS, 'login.png') });
  });

  await step('a wrong token is refused', async () => {
    await page.fill('#token', 'not-a-token');
    await page.click('form.login button[type=submit]');
    await page.waitForSelector('text=The token was refused');
  });

  await step('signs in with the admin token (kept in session storage)', async () => {
    await page.fill('#token', ADMIN);
    await page.click('form.login button[type=submit]');
    await page.waitForSelector('#streams-table');
    assert.equal(await page.textContent('#who .badge'), 'admin');
    assert.equal(await page.evaluate(() => sessionStorage.getItem('annal-token')), ADMIN);
  });

  await step('Streams page lists what /browse/streams does, pages and searches', async () => {
    const api = (await call('/browse/streams?limit=50')).json;
    const names = await page.$$eval('#streams-table tbody tr', (rows) => rows.map(r => r.dataset.stream));
    assert.deepEqual(names, api.streams.map(s => s.stream));
    assert.equal(api.matched, 30);
    assert.match(await page.textContent('#streams-summary'), /^30 streams/);
    const row = await page.$eval('#streams-table tr[data-stream="order-3"]', r => r.textContent);
    assert.match(row, /max count 100/);
    await page.screenshot({ path: join(SHOTS, 'streams.png') });
    await page.fill('#stream-search', 'USER');
    await page.waitForFunction(() => document.querySelectorAll('#streams-table tbody tr').length === 5);
    assert.match(await page.textContent('#streams-summary'), /^5 streams matching/);
    assert.match(page.url(), /search=USER/);
    await page.fill('#stream-search', '');
    await page.selectOption('#stream-category', 'order');
    await page.waitForFunction(() => document.querySelector('#streams-summary').textContent.startsWith('25 streams'));
  });

  await step('Streams page pages through 30 streams 20 at a time (server-side), forward and back', async () => {
    const first = (await call('/browse/streams?limit=20')).json;
    const second = (await call('/browse/streams?limit=20&after=' + encodeURIComponent(first.next))).json;
    assert.deepEqual([first.streams.length, second.streams.length, second.next], [20, 10, null]);
    await page.goto(base + '/ui/#/streams');
    await page.waitForSelector('#streams-table');
    await page.selectOption('#page-size', '20');
    const rows = () => page.$$eval('#streams-table tbody tr', (rs) => rs.map(r => r.dataset.stream));
    await page.waitForFunction(() => document.querySelectorAll('#streams-table tbody tr').length === 20);
    assert.deepEqual(await rows(), first.streams.map(s => s.stream));
    await page.click('#streams-next');
    await page.waitForFunction(() => document.querySelectorAll('#streams-table tbody tr').length === 10);
    assert.deepEqual(await rows(), second.streams.map(s => s.stream));
    assert.equal(await page.$('#streams-next'), null);
    await page.click('#streams-prev');
    await page.waitForFunction(() => document.querySelectorAll('#streams-table tbody tr').length === 20);
    assert.deepEqual(await rows(), first.streams.map(s => s.stream));
  });

  await step('Stream page shows the events of /streams/{stream}, newest first, with JSON and correlation links', async () => {
    await page.goto(base + '/ui/#/stream/order-7');
    await page.waitForSelector('#stream-events details.event');
    const api = (await call('/streams/order-7?direction=backward&from=end')).json.events;
    const shown = await page.$$eval('#stream-events details.event', (els) => els.map(e => [Number(e.dataset.position), e.dataset.type]));
    assert.deepEqual(shown, api.map(e => [e.position, e.type]));
    assert.equal(await page.textContent('#stream-revision'), '2');
    await page.click(`#ev-${api[2].position} > summary`);
    const body = await page.textContent(`#ev-${api[2].position} .ev-body`);
    assert.match(body, /"total": 70/);
    assert.match(body, /corr-7/);
    assert.match(body, /3 events on this page/);
    await page.screenshot({ path: join(SHOTS, 'stream.png'), fullPage: false });
    // Oldest first, and a jump to a revision.
    await page.selectOption('#direction', 'forward');
    await page.waitForFunction(() => document.querySelector('#stream-events details.event')?.dataset.type === 'OrderPlaced');
    await page.fill('#jump', '2');
    await page.press('#jump', 'Enter');
    await page.waitForFunction(() => document.querySelectorAll('#stream-events details.event').length === 1);
    // The correlation's link opens the log filtered by it, oldest first: every event of corr-7.
    await page.click('#stream-events details.event > summary');
    await page.click('#stream-events .corr-all');
    await page.waitForFunction(() => location.hash.startsWith('#/log') && document.querySelectorAll('#log-events details.event').length === 3);
    const chain = await page.$$eval('#log-events details.event', (els) => els.map(e => e.dataset.type));
    assert.deepEqual(chain, ['OrderPlaced', 'OrderPaid', 'OrderShipped']);
  });

  await step('the metadata editor saves max age and max count, and refuses when the metadata moved', async () => {
    await page.goto(base + '/ui/#/stream/order-5');
    await page.waitForSelector('#meta-form');
    await page.fill('#meta-max-age', '86400000');
    await page.fill('#meta-max-count', '1000');
    await page.click('#meta-form button[type=submit]');
    await page.waitForSelector('#toast.show:has-text("Metadata saved")');
    assert.deepEqual((await call('/streams/order-5/metadata')).json, { max_age_ms: 86400000, max_count: 1000 });
    // Someone else changes it: the form's save is refused.
    await call('/streams/order-5/metadata', { method: 'PUT', body: { max_count: 5 } });
    await page.fill('#meta-max-count', '7');
    await page.click('#meta-form button[type=submit]');
    await page.waitForSelector('#toast.show:has-text("changed since")');
    assert.deepEqual((await call('/streams/order-5/metadata')).json, { max_count: 5 });
  });

  await step('Log page shows /all newest first and filters by type', async () => {
    await page.goto(base + '/ui/#/log');
    await page.waitForSelector('#log-events details.event');
    const api = (await call('/all?direction=backward&from=end&limit=50')).json.events;
    const shown = await page.$$eval('#log-events details.event', (els) => els.map(e => Number(e.dataset.position)));
    assert.deepEqual(shown, api.map(e => e.position));
    await page.fill('#log-type', 'OrderPaid');
    await page.press('#log-type', 'Enter');
    await page.waitForFunction(() => [...document.querySelectorAll('#log-events details.event')].every(e => e.dataset.type === 'OrderPaid'));
    assert.equal(await page.$$eval('#log-events details.event', els => els.length), 25);
    await page.fill('#log-type', '');
    await page.press('#log-type', 'Enter');
    await page.waitForFunction(() => document.querySelectorAll('#log-events details.event').length === 50);
  });

  await step('Log page filters by topic patterns, aggregate and a metadata field, as the API does', async () => {
    await page.goto(base + '/ui/#/log');
    await page.waitForSelector('#log-events details.event');
    await page.click('#log-more summary');
    await page.fill('#log-type_pattern', 'OrderPaid, UserRegistered');
    await page.press('#log-type_pattern', 'Enter');
    const byPattern = (await call('/all?direction=backward&from=end&limit=50&type_pattern=OrderPaid&type_pattern=UserRegistered')).json.events;
    assert.equal(byPattern.length, 30);
    await page.waitForFunction((n) => document.querySelectorAll('#log-events details.event').length === n, byPattern.length);
    const shown = await page.$$eval('#log-events details.event', (els) => els.map(e => Number(e.dataset.position)));
    assert.deepEqual(shown, byPattern.map(e => e.position));
    await page.fill('#log-type_pattern', '');
    await page.fill('#log-aggregate_type', 'order');
    await page.fill('#log-metadata', '$correlationId=corr-7');
    await page.press('#log-metadata', 'Enter');
    await page.waitForFunction(() => document.querySelectorAll('#log-events details.event').length === 3);
    const types = await page.$$eval('#log-events details.event', (els) => els.map(e => e.dataset.type));
    assert.deepEqual(types, ['OrderShipped', 'OrderPaid', 'OrderPlaced']);
    // The filters are kept in the address: reloading it shows the same three events.
    assert.ok(page.url().includes('aggregate_type=order') && page.url().includes('metadata='), page.url());
    await page.reload();
    await page.waitForFunction(() => document.querySelectorAll('#log-events details.event').length === 3);
    await page.fill('#log-aggregate_type', '');
    await page.fill('#log-metadata', '');
    await page.press('#log-metadata', 'Enter');
    await page.waitForFunction(() => document.querySelectorAll('#log-events details.event').length === 50);
  });

  let tailMs = 0;
  await step('the live tail shows an appended event within a second, pauses and resumes', async () => {
    await page.click('#live');
    await page.waitForSelector('#pause:not([hidden])');
    await sleep(300); // the subscription is open
    const t = performance.now();
    await call('/streams/probe-1', { method: 'POST', body: { events: [{ type: 'LiveProbe', data: { n: 1 } }] } });
    await page.waitForSelector('#log-events details.event[data-type=LiveProbe]', { timeout: 1000 });
    tailMs = Math.round(performance.now() - t);
    console.log(`     append to live tail: ${tailMs} ms`);
    await page.waitForFunction(() => /[1-9][0-9.]* events\/s/.test(document.querySelector('#rate').textContent));
    await page.screenshot({ path: join(SHOTS, 'log.png') });
    await page.click('#pause');
    await call('/streams/probe-1', { method: 'POST', body: { events: [{ type: 'WhilePaused', data: {} }] } });
    await page.waitForFunction(() => /1 waiting/.test(document.querySelector('#rate').textContent));
    assert.equal(await page.$('#log-events details.event[data-type=WhilePaused]'), null);
    await page.click('#pause');
    await page.waitForSelector('#log-events details.event[data-type=WhilePaused]', { timeout: 1000 });
    await page.click('#live');
  });

  await step('Groups page shows lag, in-flight and parked as /groups/{name} says', async () => {
    await page.goto(base + '/ui/#/groups');
    await page.waitForSelector('#groups-table tr[data-group=billing]');
    const g = (await call('/groups/billing')).json;
    const cells = await page.$$eval('#groups-table tr[data-group=billing] td', tds => tds.map(t => t.textContent));
    assert.equal(cells[0], 'billing');
    assert.equal(cells[3], String(g.checkpoint));
    assert.equal(cells[4], String(3 - g.checkpoint), 'lag');
    assert.equal(cells[5], String(g.in_flight));
    assert.equal(cells[7], '1', 'parked');
    await page.screenshot({ path: join(SHOTS, 'groups.png') });
  });

  await step('a parked event is shown and replayed from the group page', async () => {
    await page.click('#groups-table a[href="#/groups/billing"]');
    await page.waitForSelector('#parked-events .parked');
    assert.match(await page.textContent('#parked-events'), /the payment service refused it/);
    await page.screenshot({ path: join(SHOTS, 'group.png') });
    const before = (await call('/groups/billing')).json.ready;
    await page.click('#replay-parked');
    await page.waitForSelector('#toast.show:has-text("1 parked events put back in line")');
    assert.equal((await call('/groups/billing')).json.ready, before + 1);
    const again = await call('/groups/billing/fetch?consumer=c2&max=10', { method: 'POST' });
    assert.ok(again.json.events.some(e => e.stream === 'order-1' && e.revision === 0), again.text);
  });

  await step('a page whose answer comes late does not draw over the page opened after it', async () => {
    // The Groups page's answer is held back until the Node page is showing.
    let release;
    const held = new Promise(r => { release = r; });
    await page.route('**/groups', async (r) => { await held; await r.continue(); });
    await page.goto(base + '/ui/#/groups');
    await page.goto(base + '/ui/#/node');
    await page.waitForSelector('#node-events');
    release();
    await sleep(500);
    await page.unroute('**/groups');
    assert.ok(await page.isVisible('#node-events'), 'the Node page was replaced');
    assert.equal(await page.$('#groups-table'), null);
  });

  await step('Node page shows /node and rates from /metrics, and runs verify', async () => {
    await page.goto(base + '/ui/#/node');
    await page.waitForSelector('#node-events');
    const n = (await call('/node')).json;
    assert.equal(await page.textContent('#node-events'), n.events.toLocaleString('en-US'));
    assert.equal(await page.textContent('#node-streams'), n.streams.toLocaleString('en-US'));
    assert.equal(n.disk.uncompressed_segment_bytes, n.disk.segment_bytes);
    assert.equal(await page.textContent('#disk-compression'), 'none');
    await page.waitForSelector('#verify-none');
    await page.waitForSelector('#node-charts svg.chart polyline', { state: 'attached', timeout: 8000 });
    // Appends show in the append rate, sampled from /metrics every 2 s.
    await call('/streams/rate-1', { method: 'POST', body: { events: Array.from({ length: 20 }, () => ({ type: 'Tick', data: {} })) } });
    await page.waitForFunction(() => /Events appended [1-9]/.test(document.querySelector('#node-charts figcaption').textContent), null, { timeout: 6000 });
    await page.click('#verify');
    await page.waitForSelector('#verify-result .ok:has-text("Clean")', { timeout: 10000 });
    // The server keeps the result: a fresh visit shows it without running verify again.
    assert.equal((await call('/node')).json.last_verify.clean, true);
    await page.goto(base + '/ui/#/streams');
    await page.goto(base + '/ui/#/node');
    await page.waitForSelector('#verify-result .ok:has-text("Clean")');
    await page.screenshot({ path: join(SHOTS, 'node.png'), fullPage: true });
  });

  await step('keyboard: g then l opens the log, / focuses the search', async () => {
    await page.goto(base + '/ui/#/streams');
    await page.waitForSelector('#streams-table');
    await page.keyboard.press('/');
    assert.equal(await page.evaluate(() => document.activeElement.id), 'stream-search');
    await page.keyboard.press('Escape');
    await page.keyboard.press('g');
    await page.keyboard.press('l');
    await page.waitForSelector('#log-events');
  });

  await step('a read-only token gets a read-only console; the server refuses its admin calls', async () => {
    const ro = await browser.newContext({ viewport: { width: 1280, height: 800 }, colorScheme: 'dark' });
    const p = await ro.newPage();
    await p.goto(base + '/ui/#/node');
    await p.fill('#token', READER);
    await p.click('form.login button[type=submit]');
    await p.waitForSelector('#verify');
    assert.equal(await p.textContent('#who .badge'), 'read');
    assert.ok(await p.$eval('#verify', b => b.disabled), 'verify is disabled');
    await p.screenshot({ path: join(SHOTS, 'node-read-only-dark.png') });
    await p.goto(base + '/ui/#/groups/billing');
    await p.waitForSelector('#replay-parked');
    assert.ok(await p.$eval('#replay-parked', b => b.disabled), 'replay is disabled');
    await p.goto(base + '/ui/#/stream/order-2');
    await p.waitForSelector('#meta-form');
    assert.ok(await p.$eval('#meta-form button[type=submit]', b => b.disabled), 'save is disabled');
    // The buttons are only a courtesy: the server refuses the calls themselves.
    const statuses = await p.evaluate(async () => {
      const auth = { Authorization: 'Bearer ' + sessionStorage.getItem('annal-token') };
      const verify = await fetch('/admin/verify', { method: 'POST', headers: auth });
      const replay = await fetch('/groups/billing/replay-parked', { method: 'POST', headers: auth });
      return [verify.status, (await verify.json()).error, replay.status];
    });
    assert.deepEqual(statuses, [403, 'forbidden', 403]);
    await ro.close();
  });

  await step('on a phone-sized screen the pages fit the width', async () => {
    const phone = await browser.newContext({ viewport: { width: 390, height: 844 }, deviceScaleFactor: 2, isMobile: true, hasTouch: true });
    const p = await phone.newPage();
    await p.goto(base + '/ui/');
    await p.fill('#token', ADMIN);
    await p.click('form.login button[type=submit]');
    await p.waitForSelector('#streams-table');
    for (const route of ['streams', 'stream/order-1', 'log']) {
      await p.goto(base + '/ui/#/' + route);
      await p.waitForTimeout(300);
      const overflow = await p.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
      assert.ok(overflow <= 1, `${route} is ${overflow} px wider than the phone`);
    }
    await p.screenshot({ path: join(SHOTS, 'log-phone.png') });
    await phone.close();
  });

  await step('an event too large to draw whole is drawn in part, quickly, with the rest counted', async () => {
    // Any writer can store such an event; the page of an admin who opens it must not freeze.
    const wide = Object.fromEntries(Array.from({ length: 2000 }, (_, i) => [`k${i}`, i]));
    const long = Array(300000).fill(0);
    for (const data of [{ wide }, { long }]) {
      assert.equal((await call('/streams/big-1', { method: 'POST', body: { events: [{ type: 'Big', data }] } })).status, 200);
    }
    await page.goto(base + '/ui/#/stream/big-1');
    await page.waitForSelector('#stream-events details.event');
    const [longest, widest] = await page.$$eval('#stream-events details.event', (els) => els.map(e => Number(e.dataset.position)));
    const started = Date.now();
    await page.click(`#ev-${widest} > summary`);
    await page.waitForFunction((p) => /1500 more/.test(document.querySelector(`#ev-${p} .ev-body`)?.textContent || ''), widest, { timeout: 10000 });
    await page.click(`#ev-${longest} > summary`);
    await page.waitForFunction((p) => /more characters/.test(document.querySelector(`#ev-${p} .ev-body`)?.textContent || ''), longest, { timeout: 10000 });
    assert.ok(Date.now() - started < 10000);
    const drawn = await page.$$eval(`#ev-${widest} .j-key`, (els) => els.length);
    assert.ok(drawn <= 501, `${drawn} keys drawn`); // "wide" and 500 of its keys
  });

  await step('no script errors in the page', async () => {
    assert.deepEqual(consoleErrors.filter(e => !/401|403|409|Unauthorized|Forbidden|Conflict/.test(e)), []);
  });
} catch {
  exitCode = 1;
} finally {
  if (browser) await browser.close();
  if (server.exitCode === null) {
    const exited = new Promise(r => server.once('exit', r));
    server.kill('SIGTERM');
    await exited;
  }
  rmSync(dir, { recursive: true, force: true });
  const ok = results.filter(r => r.ok).length;
  console.log(`${ok} of ${results.length} steps passed; screenshots in ${SHOTS}`);
  if (exitCode) console.log('page errors:\n' + consoleErrors.join('\n') + '\nserver log:\n' + serverLog);
  process.exit(exitCode);
}
