#!/usr/bin/env node
// A pop3gw backend in one file of Node.js (20 or later), built-in modules only.
//
// pop3gw speaks POP3 to mail clients and asks a backend like this one, over
// HTTP, for everything that concerns a mailbox: every event is a POST of a
// JSON object to BACKEND_URL/EVENT (see docs/webhooks.md, the contract). This
// backend serves the same layout as the reference backend (backends/maildir):
//
//     ROOT/users                 one "user:password" per line ('#' comments)
//     ROOT/USER/new/, cur/       the user's messages, one file each (Maildir)
//
// Run it, then point the gateway at it:
//
//     node backends/node/backend.js --listen=127.0.0.1:8025 --root=/srv/mail \
//         [--users=FILE] [--secret=whsec_...] [--token=TOKEN]
//
//     # pop3gw.conf
//     backend_url    = http://127.0.0.1:8025
//     backend_secret = whsec_...          # the same key, if --secret is used
//
// Each flag can also come from the environment: BACKEND_LISTEN, BACKEND_ROOT,
// BACKEND_USERS, BACKEND_SECRET, BACKEND_TOKEN (a flag wins). When it is ready
// it prints "pop3gw node backend listening on HOST:PORT" to stderr.
//
// docs/backends.md walks through the Python twin of this file
// (backends/python/backend.py); the two do the same things in the same order.
'use strict';

const http = require('http');
const crypto = require('crypto');
const fs = require('fs');
const path = require('path');
const { pipeline } = require('stream');

const MAX_BODY = 1 << 20; // request bodies are small JSON objects
const SIGNATURE_TOLERANCE = 300; // seconds a webhook-timestamp may be off

const CONFIG = {}; // filled by main(): root, users, keys, token, quiet

function log(...parts) {
  console.error('node-backend:', ...parts);
}

// ------------------------------------------------------------- signatures

// The HMAC keys of "whsec_A whsec_B ...": the base64-decoded part after the
// prefix (the text itself is not the key).
function secretKeys(value) {
  return value.split(/\s+/).filter(Boolean).map((secret) => {
    if (!secret.startsWith('whsec_')) throw new Error('a secret starts with whsec_');
    return Buffer.from(secret.slice('whsec_'.length), 'base64');
  });
}

// Constant-time comparison of two strings of any length (hash them first,
// since crypto.timingSafeEqual wants equal lengths).
function sameSecret(a, b) {
  const h = (s) => crypto.createHash('sha256').update(s).digest();
  return crypto.timingSafeEqual(h(a), h(b));
}

// Standard Webhooks: webhook-signature holds one or more space-separated
// "v1,BASE64" values; BASE64 is HMAC-SHA256(key, id + "." + timestamp + "."
// + raw body). One match with one key is enough.
function signatureOk(headers, body) {
  const id = headers['webhook-id'];
  const stamp = headers['webhook-timestamp'];
  const sigs = headers['webhook-signature'];
  if (!id || !stamp || !sigs || !/^[0-9]+$/.test(stamp)) return false;
  if (Math.abs(Date.now() / 1000 - Number(stamp)) > SIGNATURE_TOLERANCE) {
    return false; // too old (a replay) or from a badly wrong clock
  }
  const signed = Buffer.concat([Buffer.from(`${id}.${stamp}.`), body]);
  for (const key of CONFIG.keys) {
    const mac = crypto.createHmac('sha256', key).update(signed).digest('base64');
    for (const candidate of sigs.split(' ')) {
      if (sameSecret(candidate, 'v1,' + mac)) return true;
    }
  }
  return false;
}

// ------------------------------------------------------------------ users

// A user name is also a directory name under ROOT: keep it inside.
function validUser(name) {
  return typeof name === 'string' && name !== '' && !name.includes('/') &&
    !name.includes('\0') && !name.startsWith('.');
}

// Map of user -> password from the users file, read on every login so that
// edits apply at once. "user:password[:oauth-token]"; the token is ignored
// here because this backend does not do OAuth.
function readUsers() {
  const users = new Map();
  let text = '';
  try {
    text = fs.readFileSync(CONFIG.users, 'utf8');
  } catch (e) {
    log('cannot read users file:', e.message);
  }
  for (let line of text.split('\n')) {
    line = line.replace(/\r$/, '');
    if (line === '' || line.startsWith('#') || !line.includes(':')) continue;
    const [name, password] = line.split(':');
    if (validUser(name) && !users.has(name)) users.set(name, password); // first line counts
  }
  return users;
}

// True when the credentials of an authenticate request are right.
function checkLogin(req) {
  const users = readUsers();
  const name = req.user;
  // An unknown user is compared against a dummy password, so that the reply
  // and its timing are the same as for a wrong password.
  const password = (typeof name === 'string' && users.get(name)) || '';
  const known = users.has(name) && password !== ''; // an empty password: no logins
  switch (req.method) {
    case 'USER': case 'PLAIN': case 'LOGIN': {
      if (typeof req.password !== 'string') return false;
      if (req.method === 'PLAIN' && req.authzid != null && req.authzid !== name) {
        return false; // no logging in as somebody else
      }
      return sameSecret(req.password, password || '\0dummy') && known;
    }
    case 'APOP': {
      // The client proves it knows the password: digest = MD5(timestamp + password).
      const { timestamp, digest } = req.apop || {};
      if (typeof timestamp !== 'string' || typeof digest !== 'string') return false;
      const want = crypto.createHash('md5').update(timestamp + password).digest('hex');
      return sameSecret(digest.toLowerCase(), want) && known;
    }
    default:
      return false; // XOAUTH2, OAUTHBEARER and anything new: not supported here
  }
}

// --------------------------------------------------------------- maildirs

// A message's uid: its file name up to the first ':' (what follows is the
// Maildir flags, which change when a client reads the message). POP3 allows
// 1 to 70 printable characters; other names get their MD5.
function uidOf(name) {
  const base = name.split(':')[0];
  if (/^[\x21-\x7e]{1,70}$/.test(base)) return base;
  return crypto.createHash('md5').update(base).digest('hex');
}

// [{uid, file}] in maildrop order (file names sorted, so oldest first), or
// null if the user has no Maildir.
async function maildrop(user) {
  const home = path.join(CONFIG.root, user);
  try {
    if (!(await fs.promises.stat(home)).isDirectory()) return null;
  } catch {
    return null;
  }
  const entries = [];
  for (const sub of ['new', 'cur']) {
    let dirents = [];
    try {
      dirents = await fs.promises.readdir(path.join(home, sub), { withFileTypes: true });
    } catch {
      continue; // a missing new/ or cur/ is just empty
    }
    for (const d of dirents) {
      if (!d.name.startsWith('.') && d.isFile()) { // isFile() is false for symlinks
        entries.push({ name: d.name, file: path.join(home, sub, d.name) });
      }
    }
  }
  entries.sort((a, b) => Buffer.compare(Buffer.from(a.name), Buffer.from(b.name))); // bytewise
  const out = [];
  const seen = new Set();
  for (const { name, file } of entries) {
    const uid = uidOf(name);
    if (!seen.has(uid)) { // uids must be unique: keep the first
      seen.add(uid);
      out.push({ uid, file });
    }
  }
  return out;
}

const sizes = new Map(); // "path inode mtime bytes" -> size; files rarely change

// The size a POP3 client will count: line ends as CRLF, plus a final CRLF
// when the last line has none. So each LF not preceded by CR counts 2, and a
// non-empty file that does not end in LF gets 2 more.
async function pop3Size(file) {
  const st = await fs.promises.stat(file);
  const key = `${file} ${st.ino} ${st.mtimeMs} ${st.size}`;
  if (sizes.has(key)) return sizes.get(key);
  let size = 0;
  let prev = -1; // the byte before the current one
  const fh = await fs.promises.open(file, 'r');
  try {
    const buf = Buffer.alloc(65536);
    for (;;) {
      const { bytesRead } = await fh.read(buf, 0, buf.length, null);
      if (bytesRead === 0) break;
      for (let i = 0; i < bytesRead; i++) {
        const c = buf[i];
        size += c === 0x0a && prev !== 0x0d ? 2 : 1;
        prev = c;
      }
    }
  } finally {
    await fh.close();
  }
  if (size > 0 && prev !== 0x0a) size += 2;
  sizes.set(key, size);
  return size;
}

// The path of a message, by uid when there is one (message numbers are only
// meaningful in the listing the gateway got), else by number.
async function find(user, uid, number) {
  const drop = (await maildrop(user)) || [];
  if (uid != null) return (drop.find((m) => m.uid === uid) || {}).file || null;
  if (Number.isInteger(number) && number >= 1 && number <= drop.length) {
    return drop[number - 1].file;
  }
  return null;
}

// ----------------------------------------------------------------- events
//
// Each handler gets the parsed request and resolves to [status, JSON reply],
// or for retrieve [200, an open file handle to stream].

const HANDLERS = {
  async authenticate(req) {
    if (checkLogin(req)) return [200, { ok: true, user: req.user }];
    return [200, { ok: false, code: 'AUTH', message: 'invalid user name or password' }];
  },

  async list(req) {
    const drop = await maildrop(req.user);
    if (drop === null) return [404, { error: 'no such user' }];
    const messages = [];
    for (const { uid, file } of drop) {
      try {
        messages.push({ size: await pop3Size(file), uid });
      } catch (e) {
        if (e.code !== 'ENOENT') throw e; // moved meanwhile (new/ -> cur/): skip
      }
    }
    return [200, { messages }];
  },

  async uidl(req) {
    // Only called when list has no uids; this one always has, but answer anyway.
    const drop = await maildrop(req.user);
    if (drop === null) return [404, { error: 'no such user' }];
    return [200, { uids: drop.map((m) => m.uid) }];
  },

  async retrieve(req) {
    // "lines" (TOP) is ignored: the gateway cuts the message itself.
    for (let i = 0; i < 2; i++) { // a file can move from new/ to cur/ under us
      const file = await find(req.user, req.uid, req.message);
      if (file === null) break;
      try {
        return [200, await fs.promises.open(file, 'r')];
      } catch (e) {
        if (e.code !== 'ENOENT') throw e;
      }
    }
    return [404, { error: 'no such message' }];
  },

  // Deletes what the client marked with DELE. Idempotent: a uid that is
  // already gone counts as deleted, so a repeated quit also succeeds.
  async quit(req) {
    const deleted = req.deleted || [];
    if (!Array.isArray(deleted)) return [400, { error: 'deleted is not an array' }];
    let count = 0;
    let failed = false;
    for (const entry of deleted) {
      const uid = entry && entry.uid != null ? entry.uid : null;
      const number = uid === null && entry ? entry.message : null;
      for (let i = 0; i < 2; i++) {
        const file = await find(req.user, uid, number);
        if (file === null) break; // already gone: nothing to do
        try {
          await fs.promises.unlink(file);
          count++;
          if (!CONFIG.quiet) log(`deleted user=${req.user} uid=${uid}`);
          break;
        } catch (e) {
          if (e.code === 'ENOENT') continue; // renamed meanwhile: look again
          log('cannot delete', file, e.message);
          failed = true;
          break;
        }
      }
    }
    if (failed) return [500, { error: 'some deleted messages not removed' }];
    return [200, { ok: true, deleted: count }];
  },

  // connect (before the greeting) and disconnect (a session ended without
  // quit): nothing to do for a backend that keeps no locks.
  async connect() { return [200, { ok: true }]; },
  async disconnect() { return [200, { ok: true }]; },
};

// ------------------------------------------------------------------- HTTP

function reply(res, status, obj) {
  const body = Buffer.from(JSON.stringify(obj));
  res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': body.length });
  res.end(body); // head and body leave in one write
}

// Sends a message file as it is stored, streamed: never whole in memory,
// whatever its size. The gateway converts line ends itself.
async function stream(res, fh) {
  const { size } = await fh.stat();
  res.writeHead(200, { 'Content-Type': 'message/rfc822', 'Content-Length': size });
  // pipeline() closes the file when the transfer ends, also when the gateway
  // stops it early (TOP), and cuts the connection if reading fails: a short
  // body must never look complete.
  pipeline(fh.createReadStream(), res, () => {});
}

async function handle(req, res, body) {
  // 2. Is it the gateway? Check before parsing anything. 401 is for this
  // only: the gateway reads it as "the backend refused the webhook" (and logs
  // a hint about backend_secret / backend_token), never as a wrong password,
  // which authenticate() answers with 200 {"ok": false}.
  if (CONFIG.token !== null &&
      !sameSecret(req.headers.authorization || '', 'Bearer ' + CONFIG.token)) {
    return reply(res, 401, { error: 'bad token' });
  }
  if (CONFIG.keys.length > 0 && !signatureOk(req.headers, body)) {
    return reply(res, 401, { error: 'bad signature' });
  }

  // 3. Which event: the last path segment (backend_url may have a path).
  const event = req.url.split('?')[0].replace(/\/+$/, '').split('/').pop();
  if (!Object.hasOwn(HANDLERS, event)) return reply(res, 404, { error: 'no such event' });
  let msg;
  try {
    msg = JSON.parse(body.toString('utf8'));
  } catch {
    return reply(res, 400, { error: 'body is not JSON' });
  }
  if (msg === null || typeof msg !== 'object' || Array.isArray(msg) || msg.event !== event) {
    return reply(res, 400, { error: 'event does not match the path' });
  }
  // Mailbox events trust "user": the gateway sends the name that
  // authenticate confirmed (and the signature proves it came from it).
  if (!['authenticate', 'connect', 'disconnect'].includes(event) && !validUser(msg.user)) {
    return reply(res, 400, { error: 'bad user name' });
  }

  // 4. Answer. Repeats of a call (same webhook-id) need no bookkeeping: only
  // quit changes anything, and it is idempotent.
  let status, result;
  try {
    [status, result] = await HANDLERS[event](msg);
  } catch (e) { // a bug or an I/O error: 500, never a hang
    log('error in', event, e.message);
    return reply(res, 500, { error: 'internal error' });
  }
  if (event === 'retrieve' && status === 200) return stream(res, result);
  return reply(res, status, result);
}

function onRequest(req, res) {
  if (req.method !== 'POST') {
    req.resume();
    return reply(res, 405, { error: 'use POST' });
  }
  // 1. Read the body: at most 1 MB.
  const chunks = [];
  let length = 0;
  req.on('data', (chunk) => {
    length += chunk.length;
    if (length > MAX_BODY) {
      res.shouldKeepAlive = false;
      reply(res, 413, { error: 'body too large' });
      req.destroy();
    } else {
      chunks.push(chunk);
    }
  });
  req.on('end', () => {
    if (length > MAX_BODY) return;
    handle(req, res, Buffer.concat(chunks)).catch((e) => {
      log('error:', e.message);
      res.destroy();
    });
  });
}

function main(argv) {
  const opts = {
    listen: process.env.BACKEND_LISTEN || '127.0.0.1:8025',
    root: process.env.BACKEND_ROOT,
    users: process.env.BACKEND_USERS,
    secret: process.env.BACKEND_SECRET,
    token: process.env.BACKEND_TOKEN,
    quiet: undefined,
  };
  const usage = 'usage: backend.js --root=DIR [--listen=HOST:PORT] [--users=FILE] ' +
    '[--secret=whsec_...] [--token=TOKEN] [--quiet]';
  for (const arg of argv) {
    const m = /^--([a-z]+)(?:=(.*))?$/s.exec(arg);
    if (arg === '-h' || arg === '--help') {
      console.log(usage);
      return;
    }
    if (!m || !Object.hasOwn(opts, m[1]) || (m[2] === undefined && m[1] !== 'quiet')) {
      console.error(usage);
      process.exit(2);
    }
    opts[m[1]] = m[2] === undefined ? '1' : m[2];
  }
  if (!opts.root) {
    console.error('backend.js: --root=DIR is required');
    process.exit(2);
  }
  try {
    CONFIG.keys = secretKeys(opts.secret || '');
  } catch (e) {
    console.error('backend.js: bad --secret:', e.message);
    process.exit(2);
  }
  CONFIG.root = opts.root;
  CONFIG.users = opts.users || path.join(opts.root, 'users');
  CONFIG.token = opts.token || null;
  CONFIG.quiet = Boolean(opts.quiet);

  // HOST:PORT or [IPv6]:PORT
  const m = /^(?:\[(.*)\]|(.*)):(\d+)$/.exec(opts.listen);
  if (!m) {
    console.error('backend.js: --listen wants HOST:PORT');
    process.exit(2);
  }
  const host = m[1] !== undefined ? m[1] : m[2] || '127.0.0.1';
  const server = http.createServer({ noDelay: true }, onRequest);
  server.keepAliveTimeout = 600 * 1000; // the gateway keeps connections and reuses them
  server.headersTimeout = 60 * 1000;
  server.requestTimeout = 0; // a slow client may hold a retrieve for long
  server.listen(Number(m[3]), host, () => {
    const { address, port } = server.address();
    const shown = address.includes(':') ? `[${address}]` : address;
    console.error(`pop3gw node backend listening on ${shown}:${port}`);
  });
  // SIGTERM (docker stop, CI) and Ctrl-C stop the server with status 0.
  for (const sig of ['SIGTERM', 'SIGINT']) {
    process.on(sig, () => {
      server.close();
      server.closeAllConnections();
      process.exit(0);
    });
  }
}

// Run as a program; when required (the tests do), only export the pieces.
if (require.main === module) main(process.argv.slice(2));
module.exports = { CONFIG, secretKeys, signatureOk, checkLogin, uidOf, pop3Size };
