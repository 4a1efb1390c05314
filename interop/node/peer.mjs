#!/usr/bin/env node
// Node `ws` as an interop peer for duplex (run by interop/run.sh). Same
// command line and output as interop/python/peer.py:
//
//   peer.mjs client --url URL [--ca PEM] [--no-compression] --expect-deflate yes|no --label L
//   peer.mjs server --mode drive|echo [--tls-cert PEM --tls-key PEM] [--no-compression]
//                   --expect-deflate yes|no --label L
//
// client: send every test payload to `duplex echo`, check each echo byte for
//         byte, close with 1000 and check the server answered 1000.
// server: accept one connection from `duplex connect`; `drive` sends every
//         payload to the client (run with --echo) and checks the echo, then
//         closes with 1000; `echo` echoes (pipe-mode test) and checks the
//         client closes with 1000. Prints `listening on 127.0.0.1:PORT`.
//
// Each check prints `PASS <label>: <check>` or `FAIL <label>: <check>: <why>`;
// every planned check is printed exactly once.

import fs from 'node:fs';
import https from 'node:https';
import { parseArgs } from 'node:util';
import { WebSocket, WebSocketServer } from 'ws';

const SIZES = [0, 1, 125, 126, 65535, 65536, 1 << 20, 16 << 20];
const KINDS = ['text', 'binary'];
const MAX_SIZE = 64 << 20;
const STEP_TIMEOUT_MS = 60_000;

// 1-, 2-, 3- and 4-byte UTF-8 sequences, repeated and cut at a character
// boundary to reach an exact byte length.
const TEXT_BLOCK = Buffer.from(
  'duplex interop: a-z 0123456789 caf\u00e9 na\u00efve \u00fcber ' +
    '\u20ac \u2603 \u65e5\u672c\u8a9e \u{1f600} \u{1d11e} \u0416\u0438\u0437\u043d\u044c\n',
);

function textPayload(size) {
  const reps = Math.floor((size + 4) / TEXT_BLOCK.length) + 1;
  const full = Buffer.concat(Array(reps).fill(TEXT_BLOCK));
  let i = size;
  while (i > 0 && (full[i] & 0xc0) === 0x80) i--; // back to a character start
  return Buffer.concat([full.subarray(0, i), Buffer.alloc(size - i, 'x')]);
}

function binaryPayload(size) {
  // Half incompressible (xorshift32 seeded by the size), half repetitive.
  const out = Buffer.alloc(size);
  const half = Math.floor(size / 2);
  let x = (size ^ 0x9e3779b9) >>> 0 || 1;
  for (let i = 0; i < size - half; i++) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    out[i] = x & 0xff;
  }
  const pattern = Buffer.from('duplex\x00\xff\x01\x80', 'latin1');
  for (let i = 0; i < half; i++) out[size - half + i] = pattern[i % pattern.length];
  return out;
}

function* payloads() {
  for (const kind of KINDS) {
    for (const size of SIZES) {
      yield [kind, size, kind === 'text' ? textPayload(size) : binaryPayload(size)];
    }
  }
}

const payloadCheck = (kind, size) => `${kind} ${size} B echoed`;

function plannedChecks(mode) {
  if (mode === 'echo') return ['permessage-deflate negotiation', 'client closed with 1000'];
  const checks = ['permessage-deflate negotiation'];
  for (const k of KINDS) for (const s of SIZES) checks.push(payloadCheck(k, s));
  checks.push('close handshake answered with 1000');
  return checks;
}

class Report {
  constructor(label, planned) {
    this.label = label;
    this.pending = new Set(planned);
    this.failed = 0;
  }
  result(check, ok, why = '') {
    this.pending.delete(check);
    if (ok) {
      console.log(`PASS ${this.label}: ${check}`);
    } else {
      this.failed++;
      console.log(`FAIL ${this.label}: ${check}: ${why}`);
    }
  }
  finish(why) {
    for (const check of [...this.pending]) this.result(check, false, why);
    return this.failed ? 1 : 0;
  }
}

function firstDifference(a, b) {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return `first difference at byte ${i}`;
  return `length ${b.length} instead of ${a.length}`;
}

function withTimeout(promise, ms, what) {
  let timer;
  const limit = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms / 1000} s: ${what}`)), ms);
  });
  return Promise.race([promise, limit]).finally(() => clearTimeout(timer));
}

// Turns a ws socket's events into awaitable messages and a close promise.
class Peer {
  constructor(ws) {
    this.ws = ws;
    this.queue = [];
    this.waiters = [];
    this.error = null;
    this.closed = new Promise((resolve) => {
      ws.on('close', (code, reason) => {
        this.error ??= new Error(`connection closed (code ${code})`);
        this.flushWaiters();
        resolve({ code, reason: reason.toString() });
      });
    });
    ws.on('message', (data, isBinary) => {
      const item = { data: Buffer.isBuffer(data) ? data : Buffer.concat(data), isBinary };
      const w = this.waiters.shift();
      if (w) w.resolve(item);
      else this.queue.push(item);
    });
    ws.on('error', (err) => {
      this.error ??= err;
      this.flushWaiters();
    });
  }
  flushWaiters() {
    for (const w of this.waiters.splice(0)) w.reject(this.error);
  }
  recv() {
    if (this.queue.length) return Promise.resolve(this.queue.shift());
    if (this.error) return Promise.reject(this.error);
    return new Promise((resolve, reject) => this.waiters.push({ resolve, reject }));
  }
  send(data, binary) {
    return new Promise((resolve, reject) =>
      this.ws.send(data, { binary }, (err) => (err ? reject(err) : resolve())),
    );
  }
}

function checkExtension(report, extensions, expect) {
  const negotiated = (extensions || '').includes('permessage-deflate');
  report.result(
    'permessage-deflate negotiation',
    negotiated === expect,
    `expected ${expect ? 'negotiated' : 'not negotiated'}, extensions were ${JSON.stringify(extensions)}`,
  );
}

async function drive(peer, report) {
  for (const [kind, size, data] of payloads()) {
    await withTimeout(peer.send(data, kind === 'binary'), STEP_TIMEOUT_MS, `sending ${kind} ${size}`);
    const got = await withTimeout(peer.recv(), STEP_TIMEOUT_MS, `echo of ${kind} ${size}`);
    const check = payloadCheck(kind, size);
    if (got.isBinary !== (kind === 'binary')) {
      report.result(check, false, `got a ${got.isBinary ? 'binary' : 'text'} message`);
    } else {
      const same = got.data.equals(data);
      report.result(check, same, same ? '' : firstDifference(data, got.data));
    }
  }
  peer.ws.close(1000, 'interop done');
  const { code } = await withTimeout(peer.closed, STEP_TIMEOUT_MS, 'close handshake');
  report.result('close handshake answered with 1000', code === 1000, `peer close code ${code}`);
}

const deflateOption = (off) => (off ? false : { threshold: 0 });

async function runClient(args, report) {
  const ws = new WebSocket(args.url, {
    perMessageDeflate: deflateOption(args['no-compression']),
    maxPayload: MAX_SIZE,
    ca: args.ca ? fs.readFileSync(args.ca) : undefined,
    handshakeTimeout: STEP_TIMEOUT_MS,
  });
  const peer = new Peer(ws);
  await withTimeout(
    new Promise((resolve, reject) => {
      ws.once('open', resolve);
      ws.once('error', reject);
    }),
    STEP_TIMEOUT_MS,
    'opening handshake',
  );
  checkExtension(report, ws.extensions, args.expectDeflate);
  await drive(peer, report);
}

async function runServer(args, report) {
  const options = { perMessageDeflate: deflateOption(args['no-compression']), maxPayload: MAX_SIZE };
  let http = null;
  let wss;
  if (args['tls-cert']) {
    http = https.createServer({
      cert: fs.readFileSync(args['tls-cert']),
      key: fs.readFileSync(args['tls-key']),
    });
    wss = new WebSocketServer({ ...options, server: http });
    await new Promise((resolve) => http.listen(0, '127.0.0.1', resolve));
  } else {
    wss = new WebSocketServer({ ...options, host: '127.0.0.1', port: 0 });
    await new Promise((resolve) => wss.once('listening', resolve));
  }
  const { address, port } = (http ?? wss).address();
  console.log(`listening on ${address}:${port}`);

  const ws = await new Promise((resolve) => wss.once('connection', resolve));
  try {
    const peer = new Peer(ws);
    checkExtension(report, ws.extensions, args.expectDeflate);
    if (args.mode === 'drive') {
      await drive(peer, report);
    } else {
      ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
      const { code } = await peer.closed;
      report.result('client closed with 1000', code === 1000, `client close code ${code}`);
    }
  } finally {
    wss.close();
    http?.close();
  }
}

async function main() {
  const [role, ...rest] = process.argv.slice(2);
  const { values: args } = parseArgs({
    args: rest,
    options: {
      url: { type: 'string' },
      ca: { type: 'string' },
      mode: { type: 'string' },
      'tls-cert': { type: 'string' },
      'tls-key': { type: 'string' },
      'no-compression': { type: 'boolean', default: false },
      'expect-deflate': { type: 'string' },
      label: { type: 'string' },
      timeout: { type: 'string', default: '300' },
    },
  });
  if (!['client', 'server'].includes(role) || !args.label || !['yes', 'no'].includes(args['expect-deflate'])) {
    console.error('usage: peer.mjs client|server --label L --expect-deflate yes|no ...');
    process.exit(2);
  }
  if (role === 'client' && !args.url) throw new Error('client needs --url');
  if (role === 'server' && !['drive', 'echo'].includes(args.mode)) throw new Error('server needs --mode drive|echo');
  args.expectDeflate = args['expect-deflate'] === 'yes';

  const report = new Report(args.label, plannedChecks(role === 'server' ? args.mode : 'drive'));
  let why = 'not reached';
  const stop = new Promise((_, reject) =>
    process.once('SIGTERM', () => reject(new Error('stopped by the harness (SIGTERM)'))),
  );
  try {
    const run = role === 'client' ? runClient(args, report) : runServer(args, report);
    await withTimeout(Promise.race([run, stop]), Number(args.timeout) * 1000, 'whole run');
  } catch (err) {
    why = err?.message ?? String(err);
  }
  process.exit(report.finish(why));
}

main();
