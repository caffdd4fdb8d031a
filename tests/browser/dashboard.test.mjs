// The admin dashboard in a real browser: Debian's Chromium, headless, driven
// by playwright-core (no browser download; executablePath points at the
// system one).
//
// The test starts the reference backend and the gateway itself (free
// loopback ports, admin token on), runs POP3 sessions over a raw socket while
// the page is open, waits until the page shows live numbers, checks that
// they are the numbers /status and /sessions give, and saves a screenshot to
// tests/browser/out/dashboard.png (logs of both processes land beside it).
// Then: webhook failures (the disconnect event goes to a port nobody
// listens on) appear in the page's panel as /status lists them, and a page
// opened later starts its charts with the server's samples (/history).
//
//   node --test tests/browser/dashboard.test.mjs     (or tests/browser/run.sh)
//
// Environment: PGW_BUILD (default build/), CHROMIUM (default /usr/bin/chromium).

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const REPO = path.resolve(HERE, '..', '..');
const BUILD = path.resolve(process.env.PGW_BUILD || path.join(REPO, 'build'));
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const OUT = path.join(HERE, 'out');
const HOST = '127.0.0.1';
const TOKEN = 'dash-' + randomBytes(8).toString('hex');
const USERS = { alice: 'secret1', bob: 'hunter2' };

const procs = [];
let tmp, backendPort, popPort, adminPort, deadPort, context;

// ---------------------------------------------------------------- helpers

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function waitFor(fn, what, timeoutMs = 15000) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out waiting for ${what}` + (last ? `: ${last.message}` : ''));
    }
    await sleep(50);
  }
}

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.on('error', reject);
    s.listen(0, HOST, () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

function start(name, argv) {
  const log = fs.openSync(path.join(OUT, `${name}.log`), 'w');
  const p = spawn(argv[0], argv.slice(1), { stdio: ['ignore', log, log] });
  fs.closeSync(log);
  p.name = name;
  procs.push(p);
  p.on('exit', (code, sig) => { p.exited = { code, sig }; });
  return p;
}

// SIGTERM to each process (SIGKILL after 10 s); returns the names of those
// that did not exit with status 0 (a sanitizer build exits non-zero on a leak).
async function stopAll() {
  const bad = [];
  for (const p of procs.reverse()) {
    if (!p.exited) {
      p.kill('SIGTERM');
      const done = await Promise.race([
        new Promise((r) => p.once('exit', () => r(true))),
        sleep(10000).then(() => false),
      ]);
      if (!done) p.kill('SIGKILL');
    }
    await waitFor(() => p.exited, `${p.name} to exit`, 5000);
    if (p.exited.code !== 0) bad.push(`${p.name} (${JSON.stringify(p.exited)})`);
  }
  return bad;
}

function tcpOpen(port) {
  return new Promise((resolve) => {
    const s = net.createConnection({ host: HOST, port }, () => { s.destroy(); resolve(true); });
    s.on('error', () => resolve(false));
  });
}

async function admin(pathname, token = TOKEN) {
  const headers = token ? { Authorization: `Bearer ${token}` } : {};
  const r = await fetch(`http://${HOST}:${adminPort}${pathname}`, { headers });
  if (!r.ok) throw new Error(`${pathname}: HTTP ${r.status}`);
  return r.json();
}

function makeMailRoot(dir) {
  fs.writeFileSync(path.join(dir, 'users'),
    Object.entries(USERS).map(([u, p]) => `${u}:${p}\n`).join(''));
  for (const user of Object.keys(USERS)) {
    for (const sub of ['new', 'cur', 'tmp']) fs.mkdirSync(path.join(dir, user, sub), { recursive: true });
  }
  for (let i = 1; i <= 3; i++) {
    const body = `From: sender${i}@example.com\nTo: alice@test.local\nSubject: message ${i}\n\n` +
      `Hello, this is message ${i}.\n`.repeat(20 * i);
    fs.writeFileSync(path.join(dir, 'alice', 'new', `170000000${i}.M${i}P1.browser`), body);
  }
  fs.writeFileSync(path.join(dir, 'bob', 'new', '1700000100.M1P1.browser'),
    'From: x@example.com\nSubject: for bob\n\nHi Bob.\n');
}

// A POP3 client on a bare socket.
class Pop {
  static connect(port) {
    return new Promise((resolve, reject) => {
      const p = new Pop();
      p.buf = '';
      p.waiter = null;
      p.sock = net.createConnection({ host: HOST, port });
      p.sock.setEncoding('latin1');
      p.sock.setTimeout(10000, () => p.sock.destroy(new Error('POP3 timeout')));
      p.sock.on('data', (d) => { p.buf += d; p.pump(); });
      p.sock.on('error', (e) => { p.fail(e); reject(e); });
      p.sock.on('close', () => p.fail(new Error('connection closed')));
      p.sock.once('connect', () => p.line().then((g) => { p.greeting = g; resolve(p); }, reject));
    });
  }

  pump() {
    const i = this.buf.indexOf('\r\n');
    if (i < 0 || !this.waiter) return;
    const line = this.buf.slice(0, i);
    this.buf = this.buf.slice(i + 2);
    const w = this.waiter;
    this.waiter = null;
    w.resolve(line);
  }

  fail(e) {
    const w = this.waiter;
    this.waiter = null;
    if (w) w.reject(e);
  }

  line() {
    return new Promise((resolve, reject) => {
      this.waiter = { resolve, reject };
      this.pump();
    });
  }

  async cmd(text) {
    this.sock.write(text + '\r\n');
    return this.line();
  }

  async multi(text) {
    const st = await this.cmd(text);
    if (st.startsWith('+OK')) while ((await this.line()) !== '.');
    return st;
  }

  async quit() {
    const st = await this.cmd('QUIT');
    this.sock.end();
    return st;
  }
}

async function login(user, pass) {
  const p = await Pop.connect(popPort);
  await p.cmd(`USER ${user}`);
  const st = await p.cmd(`PASS ${pass}`);
  return { p, ok: st.startsWith('+OK') };
}

// One mail session: log in, look around, read a message, leave.
async function readSession() {
  const { p, ok } = await login('alice', USERS.alice);
  assert.ok(ok, 'alice could not log in');
  assert.match(await p.cmd('STAT'), /^\+OK 3 /);
  await p.multi('LIST');
  await p.multi('UIDL');
  await p.multi('RETR 2');
  await p.cmd('NOOP');
  assert.match(await p.quit(), /^\+OK/);
}

// A logged-in session that hangs up without QUIT (its disconnect call fails).
async function abandonedSession() {
  const { p, ok } = await login('alice', USERS.alice);
  assert.ok(ok, 'alice could not log in');
  await new Promise((resolve) => { p.sock.once('close', resolve); p.sock.destroy(); });
}

async function failedLogin() {
  const { p, ok } = await login('alice', 'wrong-password');
  assert.ok(!ok, 'a wrong password logged in');
  await p.quit();
}

// ------------------------------------------------------------ setup, teardown

before(async () => {
  fs.mkdirSync(OUT, { recursive: true });
  for (const bin of ['pop3gw', 'pop3gw-maildir']) {
    assert.ok(fs.existsSync(path.join(BUILD, bin)), `${BUILD}/${bin} missing: run make first`);
  }
  assert.ok(fs.existsSync(CHROMIUM), `${CHROMIUM} missing: apt-get install chromium`);
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'pop3gw-browser-'));
  const root = path.join(tmp, 'mail');
  fs.mkdirSync(root);
  makeMailRoot(root);
  [backendPort, popPort, adminPort, deadPort] =
    [await freePort(), await freePort(), await freePort(), await freePort()];

  const backend = start('backend', [path.join(BUILD, 'pop3gw-maildir'),
    `--listen=${HOST}:${backendPort}`, `--root=${root}`]);
  await waitFor(() => { assert.ok(!backend.exited, 'the backend exited'); return tcpOpen(backendPort); },
    'the backend to listen');

  const gw = start('gateway', [path.join(BUILD, 'pop3gw'),
    `--listen=${HOST}:${popPort}`, `--backend_url=http://${HOST}:${backendPort}`,
    `--admin_listen=${HOST}:${adminPort}`, `--admin_token=${TOKEN}`, '--workers=2',
    '--log_level=debug', '--hostname=test.local', '--auth_failure_delay=0',
    // A session that ends without QUIT sends disconnect to a port nobody
    // listens on: a webhook failure on demand, without touching the others.
    '--events=disconnect', `--backend_url_disconnect=http://${HOST}:${deadPort}/disconnect`]);
  await waitFor(async () => {
    assert.ok(!gw.exited, 'the gateway exited: see tests/browser/out/gateway.log');
    const r = await fetch(`http://${HOST}:${adminPort}/readyz`);
    return r.status === 200 && tcpOpen(popPort);
  }, 'the gateway to be ready');

  const userDataDir = path.join(tmp, 'chromium-profile');
  context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: CHROMIUM,
    headless: true,
    viewport: { width: 1400, height: 1000 },
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
});

after(async () => {
  if (context) await context.close().catch(() => {});
  const bad = await stopAll();
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
  assert.deepEqual(bad, [], 'did not exit cleanly on SIGTERM; see tests/browser/out/*.log');
});

// ------------------------------------------------------------------- the test

// Element id on the page -> where /status has the same number.
const SHOWN = {
  'active-connections': (s) => s.connections.active,
  'connections-total': (s) => s.connections.total,
  'connections-refused': (s) => s.connections.refused,
  'sessions-authorization': (s) => s.sessions.authorization,
  'sessions-transaction': (s) => s.sessions.transaction,
  'logins-ok': (s) => s.logins.ok_total,
  'logins-failed': (s) => s.logins.failed_total,
  'commands-total': (s) => s.pop3.commands,
  'bad-commands': (s) => s.pop3.bad_commands,
  'webhook-calls': (s) => s.webhooks.calls,
  'webhook-errors': (s) => s.webhooks.errors,
  'webhook-inflight': (s) => s.webhooks.inflight,
  'messages-retrieved': (s) => s.pop3.messages_retrieved,
  'bytes-in': (s) => s.bytes.in,
  'bytes-out': (s) => s.bytes.out,
  'latency-p50': (s) => s.webhooks.latency.p50,
  'latency-p99': (s) => s.webhooks.latency.p99,
};

async function shownValues(page) {
  return page.evaluate((ids) => Object.fromEntries(ids.map((id) => {
    const el = document.getElementById(id);
    return [id, el ? el.dataset.value : undefined];
  })), Object.keys(SHOWN));
}

test('the dashboard shows live numbers that match /status', async () => {
  const page = context.pages()[0] || await context.newPage();
  const problems = [];
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  page.on('console', (m) => { if (m.type() === 'error') problems.push(`console: ${m.text()}`); });
  page.on('request', (r) => {
    const u = new URL(r.url());
    if (u.origin !== `http://${HOST}:${adminPort}`) problems.push(`request elsewhere: ${r.url()}`);
  });

  await page.goto(`http://${HOST}:${adminPort}/?token=${TOKEN}`);
  assert.ok(!page.url().includes(TOKEN), 'the token stayed in the address bar');
  await page.waitForFunction(() => Number(document.body.dataset.updates || 0) >= 1);

  // Traffic while the page watches, so that the rate and latency charts move.
  let ok = 0, failed = 0;
  const until = Date.now() + 6000;
  while (Date.now() < until) {
    await Promise.all([readSession(), readSession()]);
    ok += 2;
    if (ok % 6 === 0) { await failedLogin(); failed++; }
    await sleep(150);
  }
  // One session stays open, logged in, so the sessions table has a row.
  const bob = await login('bob', USERS.bob);
  assert.ok(bob.ok, 'bob could not log in');
  ok++;

  // Wait for the page to show what was done...
  await page.waitForFunction(({ ok: o, failed: f }) => {
    const v = (id) => Number(document.getElementById(id).dataset.value);
    return v('logins-ok') === o && v('logins-failed') === f && v('active-connections') === 1 &&
      document.querySelectorAll('#sessions-body tr[data-session]').length === 1;
  }, { ok, failed }, { timeout: 15000 });

  // ...then the numbers it shows are those of /status (retried for a poll's lag).
  let status, shown;
  await waitFor(async () => {
    status = await admin('/status');
    shown = await shownValues(page);
    return Object.entries(SHOWN).every(([id, get]) => shown[id] === String(get(status) ?? ''));
  }, 'the page to show the numbers of /status', 5000).catch(() => {});
  for (const [id, get] of Object.entries(SHOWN)) {
    assert.equal(shown[id], String(get(status) ?? ''), `#${id} differs from /status`);
  }
  assert.equal(status.logins.ok_total, ok);
  assert.equal(status.logins.failed_total, failed);
  assert.ok(status.webhooks.calls > 0 && status.pop3.commands > 0 && status.bytes.out > 0);

  // The text people read agrees with the raw values.
  assert.equal(await page.textContent('#logins-ok'), String(ok));
  assert.equal(await page.textContent('#backend-state'), status.backend.state);
  assert.equal(await page.textContent('#version'), status.version);
  assert.equal(await page.textContent('#live'), 'live');
  assert.ok(!(await page.isVisible('#error')), 'the error banner is shown');

  // The sessions table is /sessions.
  const sessions = await admin('/sessions');
  assert.equal(sessions.count, 1);
  const row = await page.$$eval('#sessions-body tr[data-session]', (rows) => rows.map((r) =>
    [r.dataset.session, ...Array.from(r.cells).map((c) => c.textContent)]));
  const s = sessions.sessions[0];
  assert.equal(row[0][0], s.id);
  assert.equal(row[0][2], 'bob');
  assert.equal(row[0][3], `${s.client.ip}:${s.client.port}`);
  assert.equal(row[0][5], 'TRANSACTION');
  assert.equal(await page.textContent('#live-sessions'), '1');

  // The charts have data: at least a few polls were plotted.
  const updates = Number(await page.getAttribute('body', 'data-updates'));
  assert.ok(updates >= 5, `only ${updates} polls`);

  await page.screenshot({ path: path.join(OUT, 'dashboard.png'), fullPage: true });
  await bob.p.quit();
  assert.deepEqual(problems, []);
});

test('the dashboard without its token says so', async () => {
  const page = await context.newPage();
  // A fresh tab of the same profile shares nothing through sessionStorage.
  const r = await page.goto(`http://${HOST}:${adminPort}/`);
  assert.equal(r.status(), 401);
  assert.match(await page.textContent('body'), /token/);
  await page.close();
});

// Opens the dashboard with its token in a new tab and collects page errors.
async function openDashboard(problems) {
  const page = await context.newPage();
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  page.on('console', (m) => { if (m.type() === 'error') problems.push(`console: ${m.text()}`); });
  await page.goto(`http://${HOST}:${adminPort}/?token=${TOKEN}`);
  await page.waitForFunction(() => Number(document.body.dataset.updates || 0) >= 1);
  return page;
}

test('the recent failures panel lists what /status lists', async () => {
  const problems = [];
  const page = await openDashboard(problems);
  const before = (await admin('/status')).recent_failures.length;
  await abandonedSession();
  await abandonedSession();
  const status = await waitFor(async () => {
    const st = await admin('/status');
    return st.recent_failures.length >= before + 2 && st;
  }, 'two more failures in /status');
  const failures = status.recent_failures;
  assert.equal(failures[0].event, 'disconnect');
  assert.equal(failures[0].http_status, null);
  assert.ok(failures[0].transport_error, 'no transport error');
  assert.match(failures[0].session, /^[0-9a-f]{16}$/);
  assert.ok(!JSON.stringify(failures).includes(USERS.alice), 'a password in the failures');
  await page.waitForFunction((n) =>
    Number(document.getElementById('failures-count').dataset.value) === n, failures.length);
  const rows = await page.$$eval('#failures-body tr[data-time]', (trs) => trs.map((r) =>
    [Number(r.dataset.time), ...Array.from(r.cells).map((c) => c.textContent)]));
  assert.equal(rows.length, failures.length);
  rows.forEach((row, i) => {
    const f = failures[i];
    assert.equal(row[0], f.time, `row ${i}: time`);
    assert.equal(row[2], f.event, `row ${i}: event`);
    assert.equal(row[3], f.http_status !== null ? `HTTP ${f.http_status}` : f.transport_error,
      `row ${i}: status or error`);
    assert.equal(row[5], f.session ?? '-', `row ${i}: session`);
    assert.equal(row[6], f.reason, `row ${i}: reason`);
  });
  await page.screenshot({ path: path.join(OUT, 'dashboard-failures.png'), fullPage: true });
  await page.close();
  assert.deepEqual(problems, []);
});

test('a page opened later starts with the last minutes of history', async () => {
  // The server samples every 5 s from its start: wait for two samples, the
  // older one at least 6 s old, then open a new page.
  const history = await waitFor(async () => {
    const h = await admin('/history');
    return h.samples.length >= 2 && h.now_ms - h.samples[0].t_ms >= 6000 && h;
  }, 'two /history samples', 20000);
  assert.equal(history.interval_seconds, 5);
  const opened = Date.now();
  const problems = [];
  const page = await openDashboard(problems);
  const loaded = Number(await page.getAttribute('body', 'data-history'));
  const oldest = Number(await page.getAttribute('body', 'data-oldest'));
  const pageAge = (Date.now() - opened) / 1000;
  assert.ok(loaded >= history.samples.length, `the page loaded ${loaded} samples`);
  // Points older than the page itself: the charts did not start empty.
  assert.ok(oldest >= 6 && oldest > pageAge + 3, `oldest point ${oldest} s, page ${pageAge} s`);
  // The rate charts have values from the samples already.
  const legend = await page.$$eval('#legend-webhooks b', (bs) => bs.map((b) => b.textContent));
  assert.ok(legend.every((t) => t !== '-'), `webhook legend: ${legend}`);
  await page.close();
  assert.deepEqual(problems, []);
});
