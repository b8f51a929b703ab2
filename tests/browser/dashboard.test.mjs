// dashboard.test.mjs — GET /dashboard in a real browser (Debian's chromium
// driven by playwright-core) against a real poold and the test PostgreSQL:
// a wrong token shows an error; the right one shows the orgs; a row changes
// while load runs; sorting and search work; a resize through the page
// changes the server's stats; the lookup box shows a stored message.
// Environment from tests/tests.cmake: POOLD_BIN,
// DATABASE_URL, POOLD_TEST_ADMIN_URL. POOLD_SCREENSHOT: where to save a
// screenshot of the page (default: a temporary file).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { chromium } from 'playwright-core';

const BIN = process.env.POOLD_BIN;
const ADMIN_URL = process.env.POOLD_TEST_ADMIN_URL;
const TOKEN = 'tok-' + randomBytes(12).toString('hex');
const READ_TOKEN = 'read-' + randomBytes(12).toString('hex');
const P = 'br' + randomBytes(4).toString('hex') + '_';
const ORGS = [...Array(8).keys()].map((i) => `${P}org${i}`);
const [BUSY, RESIZED] = ORGS;
const CHROMIUM_FLAGS = ['--headless', '--no-sandbox', '--disable-gpu',
  '--disable-background-networking', '--disable-component-update',
  '--disable-sync', '--no-first-run'];

let poold, logDir, logFile, base, context, page, profile;

function psql(sql) {
  const r = spawnSync('psql', ['-X', '-q', '-At', '-v', 'ON_ERROR_STOP=1', '-d', ADMIN_URL, '-c', sql],
    { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  return r.stdout.trim();
}

async function waitFor(pred, ms, what) {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await pred();
    if (v) return v;
    if (Date.now() > deadline) throw new Error('timed out waiting for ' + what);
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function admin(method, path, body) {
  const r = await fetch(base + path, {
    method, headers: { Authorization: 'Bearer ' + TOKEN, 'Content-Type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return { status: r.status, json: await r.json() };
}

let seq = 0;
async function processOne(org) {
  const r = await fetch(base + '/process', {
    method: 'POST', headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ id: `${P}m${seq++}`, org_id: org, payload: 'ab' }),
  });
  await r.arrayBuffer();
  return r.status;
}

/* Load: `workers` loops posting to org until stop.done is set. */
function load(org, workers, stop) {
  return Promise.all([...Array(workers)].map(async () => {
    while (!stop.done) assert.equal(await processOne(org), 200);
  }));
}

before(async () => {
  assert.ok(BIN && ADMIN_URL, 'POOLD_BIN and POOLD_TEST_ADMIN_URL must be set');
  psql('INSERT INTO orgs (org_id, config) VALUES ' +
    ORGS.map((o) => `('${o}', '{"rules": []}')`).join(','));
  logDir = mkdtempSync(join(tmpdir(), 'dashtest-'));
  logFile = join(logDir, 'poold.log');
  const { openSync } = await import('node:fs');
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('POOLD_')));
  Object.assign(env, {
    POOLD_ADMIN_TOKEN: TOKEN, POOLD_READ_TOKEN: READ_TOKEN,
    POOLD_LISTEN: '127.0.0.1:0', POOLD_CLIENT_AUTH: 'none',
    POOLD_PROCESS_COST_MS: '5',
  });
  poold = spawn(BIN, [], { env, stdio: ['ignore', 'ignore', openSync(logFile, 'w')] });
  const port = await waitFor(() => {
    const m = /listening .*port="(\d+)"/.exec(readFileSync(logFile, 'utf8'));
    return m && m[1];
  }, 20000, 'poold to listen');
  base = `http://127.0.0.1:${port}`;
  await waitFor(async () => (await fetch(base + '/readyz')).status === 200, 20000, 'readiness');
  for (const o of ORGS) assert.equal(await processOne(o), 200); // every org has a pool
  profile = mkdtempSync(join(tmpdir(), 'dashtest-chromium-'));
  context = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true, args: CHROMIUM_FLAGS, viewport: { width: 1360, height: 900 },
  });
  page = await context.newPage();
  page.on('pageerror', (e) => { throw e; });
});

after(async () => {
  if (context) await context.close();
  if (profile) rmSync(profile, { recursive: true, force: true });
  if (poold) {
    poold.kill('SIGTERM');
    const code = await new Promise((r) => poold.on('exit', r));
    assert.equal(code, 0, 'poold exit code; log:\n' + readFileSync(logFile, 'utf8').slice(-4000));
  }
  psql(`DELETE FROM processed_messages WHERE org_id LIKE '${P}%'; DELETE FROM orgs WHERE org_id LIKE '${P}%'`);
  if (logDir) rmSync(logDir, { recursive: true, force: true });
});

const rowCell = (org, key) => page.locator(`#orgs tbody tr[data-org="${org}"] td[data-key="${key}"]`);

test('a wrong token shows an error and no data', async () => {
  const r = await page.goto(base + '/dashboard');
  assert.equal(r.status(), 200);
  await page.fill('#token', 'not-the-token');
  await page.click('#login button[type=submit]');
  await page.locator('#error').waitFor({ state: 'visible' });
  assert.match(await page.textContent('#error'), /401/);
  assert.equal(await page.isHidden('#main'), true);
});

test('the right token shows every org and a row changes under load', async () => {
  await page.fill('#token', TOKEN);
  await page.click('#login button[type=submit]');
  await page.locator('#main').waitFor({ state: 'visible' });
  assert.equal(await page.isHidden('#error'), true);
  await page.fill('#search', P);
  await waitFor(async () => (await page.locator('#orgs tbody tr').count()) === ORGS.length,
    10000, 'one row per org');
  assert.equal(await page.textContent('#ready'), 'ready');
  const first = Number(await rowCell(BUSY, 'acquired').textContent());
  const stop = { done: false };
  const running = Promise.all([load(BUSY, 4, stop), load(ORGS[2], 1, stop), load(ORGS[3], 1, stop)]);
  try {
    // the page refreshes by itself every 2 s: the row must move
    await waitFor(async () => Number(await rowCell(BUSY, 'acquired').textContent()) > first + 20,
      20000, 'the busy org\'s row to change');
    // sorting by acquired, descending: the busy org comes first
    await page.click('#orgs th[data-key="acquired"]');
    assert.equal(await page.locator('#orgs tbody tr').first().getAttribute('data-org'), BUSY);
    // let the charts gather a few points for the screenshot
    await waitFor(async () => page.evaluate(() => document.querySelectorAll('canvas').length === 4),
      1000, 'charts');
    await new Promise((r) => setTimeout(r, 5000));
    await page.screenshot({ path: process.env.POOLD_SCREENSHOT || join(tmpdir(), 'poold-dashboard.png'),
      fullPage: true });
  } finally {
    stop.done = true;
    await running;
  }
});

test('search narrows the table to matching orgs', async () => {
  await page.fill('#search', RESIZED);
  await waitFor(async () => (await page.locator('#orgs tbody tr').count()) === 1, 5000, 'one row');
  assert.equal(await page.locator('#orgs tbody tr').first().getAttribute('data-org'), RESIZED);
});

test('a resize through the page changes the server\'s stats', async () => {
  const before = (await admin('GET', `/pools/${RESIZED}`)).json.max_size;
  const want = before + 3;
  const row = page.locator(`#orgs tbody tr[data-org="${RESIZED}"]`);
  await row.locator('input.size').fill(String(want));
  await row.locator('button[data-action="resize"]').click();
  await waitFor(async () => (await admin('GET', `/pools/${RESIZED}`)).json.max_size === want,
    10000, 'the server to report the new size');
  await waitFor(async () => Number(await rowCell(RESIZED, 'max_size').textContent()) === want,
    10000, 'the page to show the new size');
  assert.match(await page.textContent('#notice'), /resize .* done/);
  // an invalid size is refused by the server and the page says so
  await row.locator('input.size').fill('0');
  await row.locator('button[data-action="resize"]').click();
  await waitFor(async () => /400 invalid_size/.test(await page.textContent('#notice')), 10000,
    'the refusal to be shown');
  assert.equal(await page.getAttribute('#notice', 'class'), 'error');
  assert.equal((await admin('GET', `/pools/${RESIZED}`)).json.max_size, want);
});

test('pause and resume through the page', async () => {
  const row = page.locator(`#orgs tbody tr[data-org="${RESIZED}"]`);
  await row.locator('button[data-action="pause"]').click();
  await waitFor(async () => (await admin('GET', `/pools/${RESIZED}`)).json.paused === true,
    10000, 'the server to report the org paused');
  assert.equal(await processOne(RESIZED), 503);
  await row.locator('span.paused').waitFor({ state: 'visible' });
  await row.locator('button[data-action="resume"]').click();
  await waitFor(async () => (await admin('GET', `/pools/${RESIZED}`)).json.paused === false,
    10000, 'the server to report the org resumed');
  assert.equal(await processOne(RESIZED), 200);
  await row.locator('button[data-action="pause"]').waitFor({ state: 'visible' });
});

test('the lookup box shows a stored result, and says when there is none', async () => {
  const id = `${P}look/1 é`; // a slash and a space: the page must encode them
  const r = await fetch(base + '/process', {
    method: 'POST', headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ id: `${P}look1`, org_id: ORGS[4], payload: 'ab' }),
  });
  assert.equal(r.status, 200);
  await page.fill('#lookup-org', ORGS[4]);
  await page.fill('#lookup-id', `${P}look1`);
  await page.click('#lookup button[type=submit]');
  await waitFor(async () => /processed at/.test(await page.textContent('#lookup-result')),
    10000, 'the stored result');
  const text = await page.textContent('#lookup-result');
  assert.match(text, new RegExp(`message${P}look1`));
  assert.match(text, /passedyes/);
  assert.match(text, /checks0/);
  assert.match(text, /processed at\d{4}-\d\d-\d\dT/);
  assert.equal(await page.getAttribute('#lookup-result', 'class'), '');
  await page.fill('#lookup-id', id);
  await page.click('#lookup button[type=submit]');
  await waitFor(async () => /not found/.test(await page.textContent('#lookup-result')),
    10000, 'the not-found answer');
  assert.equal(await page.getAttribute('#lookup-result', 'class'), 'error');
});

test('a read-only token sees the data without the controls', async (t) => {
  const probe = await fetch(base + '/stats', { headers: { Authorization: 'Bearer ' + READ_TOKEN } });
  await probe.arrayBuffer();
  if (probe.status === 401) {
    t.skip('this poold has no POOLD_READ_TOKEN');
    return;
  }
  await page.click('#logout');
  await page.fill('#token', READ_TOKEN);
  await page.click('#login button[type=submit]');
  await page.locator('#main').waitFor({ state: 'visible' });
  await page.fill('#search', P);
  await waitFor(async () => (await page.locator('#orgs tbody tr').count()) === ORGS.length,
    10000, 'one row per org');
  assert.match(await page.textContent('#scope'), /Read-only/);
  assert.equal(await page.locator('#orgs button[data-action]').count(), 0);
  assert.equal(await page.isHidden('#orgs th.controls'), true);
});
