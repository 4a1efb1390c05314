#!/usr/bin/env node
// Node `ws` as a plain client of the hub's raw rooms (run by interop/rooms/run.sh).
// Same command line, stream and output as interop/rooms/room_py.py:
//
//   room_node.mjs room --url ws://HOST --label L --room R --id ID --peers A,B,.. --n N
//                      --sync DIR [--expect-own]
//   room_node.mjs probe --url ws://HOST --label L
//
// room:  join /rooms/R as member ID of --peers (ring order), wait for DIR/go, send this
//        member's stream and check every other member's stream arrives exactly once, in
//        order, byte for byte, with its type; none of our own (all of it with
//        --expect-own); nothing from outside the room. Prints READY once joined and
//        RECEIVED-ALL once complete, waits for DIR/stop, closes with 1000.
// probe: a foreign Origin is refused with 403 on /rooms/lobby, /echo and /ws; a
//        localhost Origin is accepted; /echo echoes text and binary byte for byte and
//        answers a close with 1000.
//
// Each check prints `PASS <label>: <check>` or `FAIL <label>: <check>: <why>`; every
// planned check is printed exactly once.

import fs from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { WebSocket } from 'ws';

const TEXT_BODY = 'caf\u00e9 \u2603 \u65e5\u672c \u{1f600}';
const BIN_SIZES = [64, 70000, 1000];
const EVIL_ORIGIN = 'https://evil.example';
const STEP_TIMEOUT_MS = 30_000;

// --- the stream every room member sends (identical in room_py.py) -----------------------
const textMessage = (peer, seq, body) => `${peer} ${seq} ${body}`;

function binaryMessage(peer, index, seq, size) {
  const head = Buffer.from(`${peer} ${seq}|`);
  const out = Buffer.alloc(size);
  head.copy(out);
  for (let j = 0; j < size - head.length; j++) {
    out[head.length + j] = (j * 7 + seq * 13 + index * 29 + 0x80) & 0xff;
  }
  return out;
}

// N texts with the binaries spread among them, then the empty binary between a
// `begin empty` and an `end empty` text (an empty message names no sender, so members
// send it one at a time, in ring order). Texts are strings, binaries Buffers.
function stream(peer, index, n) {
  const total = n + BIN_SIZES.length;
  const at = new Map(
    BIN_SIZES.map((size, i) => [Math.floor(((i + 1) * total) / (BIN_SIZES.length + 1)), size]),
  );
  const out = [];
  for (let seq = 0; seq < total; seq++) {
    out.push(
      at.has(seq)
        ? binaryMessage(peer, index, seq, at.get(seq))
        : textMessage(peer, seq, TEXT_BODY + '.'.repeat(seq % 5)),
    );
  }
  out.push(textMessage(peer, total, 'begin empty'));
  out.push(Buffer.alloc(0));
  out.push(textMessage(peer, total + 2, 'end empty'));
  return out;
}

function describe(m) {
  if (m === undefined) return 'nothing';
  const bytes = typeof m === 'string' ? Buffer.from(m) : m;
  const kind = typeof m === 'string' ? 'text' : 'binary';
  return `${kind} ${bytes.length} B ${JSON.stringify(bytes.subarray(0, 24).toString('latin1'))}`;
}

// Same type and same bytes.
function same(want, got) {
  if (typeof want === 'string') return typeof got === 'string' && want === got;
  return Buffer.isBuffer(got) && want.equals(got);
}

// --- reporting --------------------------------------------------------------------------
class Report {
  constructor(label, planned) {
    this.label = label;
    this.pending = new Set(planned);
    this.failed = 0;
  }
  result(check, ok, why = '') {
    if (!this.pending.delete(check)) return; // each planned check is reported once
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

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function withTimeout(promise, ms, what) {
  let timer;
  const limit = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms / 1000} s: ${what}`)), ms);
  });
  return Promise.race([promise, limit]).finally(() => clearTimeout(timer));
}

async function waitFor(predicate, ms) {
  const deadline = Date.now() + ms;
  while (!predicate()) {
    if (Date.now() > deadline) return false;
    await sleep(20);
  }
  return true;
}

// Opens a WebSocket; resolves with it once open, rejects with the HTTP status on a refusal.
function open(url, options = {}, protocols = []) {
  return withTimeout(
    new Promise((resolve, reject) => {
      const ws = new WebSocket(url, protocols, { maxPayload: 1 << 20, ...options });
      ws.binaryType = 'nodebuffer';
      ws.once('open', () => resolve(ws));
      ws.once('unexpected-response', (req, res) => {
        const err = new Error(`HTTP ${res.statusCode}`);
        err.status = res.statusCode;
        req.destroy();
        reject(err);
      });
      ws.on('error', reject); // later errors end in 'close'
    }),
    STEP_TIMEOUT_MS,
    `opening ${url}`,
  );
}

const send = (ws, data) =>
  new Promise((resolve, reject) => ws.send(data, (err) => (err ? reject(err) : resolve())));

// Resolves with the code of the close frame the server answered ours with.
function close(ws, reason) {
  return withTimeout(
    new Promise((resolve) => {
      if (ws.readyState === WebSocket.CLOSED) {
        resolve(null);
        return;
      }
      ws.once('close', (code) => resolve(code));
      ws.close(1000, reason);
    }),
    STEP_TIMEOUT_MS,
    'closing',
  );
}

// --- room -------------------------------------------------------------------------------
function roomChecks(args) {
  const checks = args.peers
    .filter((p) => p !== args.id)
    .map((p) => `received every message of ${p} once, in order, byte for byte`);
  checks.push(
    args.expectOwn
      ? 'received all of its own messages back, in order'
      : 'received none of its own messages',
  );
  checks.push(`received nothing from outside room ${args.room}`);
  checks.push('sent its whole stream');
  checks.push('close answered with 1000');
  return checks;
}

// Attributes each received message to its sender and compares it with that sender's stream.
class Inbox {
  constructor(args) {
    this.me = args.id;
    this.expectOwn = args.expectOwn;
    this.members = new Set(args.peers);
    this.expected = new Map();
    args.peers.forEach((p, i) => {
      if (p !== this.me || this.expectOwn) this.expected.set(p, stream(p, i, args.n));
    });
    this.pos = new Map([...this.expected.keys()].map((p) => [p, 0]));
    this.error = new Map();
    this.own = 0;
    this.foreign = [];
    this.openEmpty = null; // whose begin/end window we are in
    this.ended = new Set();
  }

  complete() {
    return [...this.expected].every(([p, s]) => this.pos.get(p) === s.length);
  }

  handle(m) {
    let sender;
    if (typeof m === 'string') {
      const parts = m.split(' ');
      sender = parts[0];
      const body = parts.slice(2).join(' ');
      if (body === 'begin empty' && this.members.has(sender)) {
        if (this.openEmpty !== null) {
          this.foreign.push(`${sender} began its empty message inside ${this.openEmpty}'s window`);
        }
        this.openEmpty = sender;
      } else if (body === 'end empty' && sender === this.openEmpty) {
        this.openEmpty = null;
      }
    } else if (m.length > 0) {
      const space = m.indexOf(0x20);
      sender = m.subarray(0, space < 0 ? m.length : space).toString('latin1');
    } else {
      sender = this.openEmpty;
      if (sender === null) {
        this.foreign.push("an empty binary message outside any member's begin/end window");
        return;
      }
    }
    if (!this.members.has(sender)) {
      this.foreign.push(describe(m));
    } else if (sender === this.me && !this.expectOwn) {
      this.own++;
    } else {
      const i = this.pos.get(sender);
      const want = this.expected.get(sender)[i];
      if (want === undefined) {
        if (!this.error.has(sender)) {
          this.error.set(sender, `an extra message after its stream: ${describe(m)}`);
        }
      } else if (!same(want, m) && !this.error.has(sender)) {
        this.error.set(sender, `message #${i}: got ${describe(m)}, expected ${describe(want)}`);
      }
      this.pos.set(sender, i + 1);
      if (typeof m === 'string' && m.endsWith(' end empty')) this.ended.add(sender);
    }
  }
}

async function runRoom(args, report) {
  const inbox = new Inbox(args);
  const ws = await open(`${args.url.replace(/\/$/, '')}/rooms/${args.room}`);
  let closedEarly = null;
  ws.on('message', (data, isBinary) => inbox.handle(isBinary ? data : data.toString('utf8')));
  ws.on('close', (code) => {
    closedEarly ??= code;
  });
  console.log('READY');
  if (!(await waitFor(() => fs.existsSync(path.join(args.sync, 'go')), 60_000))) {
    throw new Error('no go file within 60 s');
  }
  const ring = args.peers.indexOf(args.id);
  const mine = stream(args.id, ring, args.n);
  let sent = 0;
  try {
    for (const m of mine.slice(0, -3)) {
      await withTimeout(send(ws, m), STEP_TIMEOUT_MS, 'sending');
      sent++;
    }
    // Our turn for the empty message comes once the previous member ended its own.
    if (ring > 0) {
      const before = args.peers[ring - 1];
      await waitFor(() => inbox.ended.has(before) || closedEarly !== null, STEP_TIMEOUT_MS);
      if (!inbox.ended.has(before)) throw new Error(`${before}'s end-empty message never came`);
    }
    for (const m of mine.slice(-3)) {
      await withTimeout(send(ws, m), STEP_TIMEOUT_MS, 'sending');
      sent++;
    }
    report.result('sent its whole stream', true);
  } catch (e) {
    report.result('sent its whole stream', false, `${sent} of ${mine.length} sent: ${e}`);
  }
  await waitFor(() => inbox.complete() || closedEarly !== null, STEP_TIMEOUT_MS);
  if (inbox.complete()) console.log('RECEIVED-ALL');
  await waitFor(() => fs.existsSync(path.join(args.sync, 'stop')), 60_000);
  await sleep(300); // late duplicates would arrive now
  const early = closedEarly;
  const code = await close(ws, 'room test done');
  report.result(
    'close answered with 1000',
    early === null && code === 1000,
    early !== null ? `server closed first (code ${early})` : `close code ${code}`,
  );

  for (const [p, s] of inbox.expected) {
    const check =
      p === args.id
        ? 'received all of its own messages back, in order'
        : `received every message of ${p} once, in order, byte for byte`;
    if (inbox.error.has(p)) report.result(check, false, inbox.error.get(p));
    else report.result(check, inbox.pos.get(p) === s.length, `${inbox.pos.get(p)} of ${s.length} messages`);
  }
  if (!args.expectOwn) {
    report.result('received none of its own messages', inbox.own === 0, `${inbox.own} came back`);
  }
  report.result(
    `received nothing from outside room ${args.room}`,
    inbox.foreign.length === 0,
    `${inbox.foreign.length} foreign, first: ${inbox.foreign[0]}`,
  );
}

// --- probe ------------------------------------------------------------------------------
const PROBE_ECHOES = [
  ['text 0 B', ''],
  ['text with 1- to 4-byte UTF-8', TEXT_BODY.repeat(200)],
  ['binary 0 B', Buffer.alloc(0)],
  ['binary 70000 B', binaryMessage('echo', 0, 0, 70000)],
];
const PROBE_PATHS = ['/rooms/lobby', '/echo', '/ws'];

function probeChecks() {
  const checks = PROBE_PATHS.map((p) => `${p} refuses Origin ${EVIL_ORIGIN} with 403`);
  checks.push('/echo accepts a localhost Origin');
  for (const [name] of PROBE_ECHOES) checks.push(`/echo echoes ${name}`);
  checks.push('/echo answers a close with 1000');
  return checks;
}

async function runProbe(args, report) {
  const base = args.url.replace(/\/$/, '');
  const port = base.split(':').pop();
  for (const p of PROBE_PATHS) {
    const check = `${p} refuses Origin ${EVIL_ORIGIN} with 403`;
    try {
      const ws = await open(base + p, { origin: EVIL_ORIGIN }, p === '/ws' ? ['duplex.v1'] : []);
      ws.terminate();
      report.result(check, false, 'the handshake succeeded');
    } catch (e) {
      report.result(check, e.status === 403, e.status ? `HTTP ${e.status}` : String(e));
    }
  }
  const ws = await open(`${base}/echo`, { origin: `http://localhost:${port}` });
  report.result('/echo accepts a localhost Origin', true);
  const inbox = [];
  ws.on('message', (data, isBinary) => inbox.push(isBinary ? data : data.toString('utf8')));
  for (const [name, data] of PROBE_ECHOES) {
    await withTimeout(send(ws, data), STEP_TIMEOUT_MS, 'sending');
    await waitFor(() => inbox.length > 0, STEP_TIMEOUT_MS);
    const got = inbox.shift();
    report.result(`/echo echoes ${name}`, same(data, got), `got ${describe(got)}`);
  }
  const code = await close(ws, 'probe done');
  report.result('/echo answers a close with 1000', code === 1000, `close code ${code}`);
}

async function main() {
  const { values, positionals } = parseArgs({
    allowPositionals: true,
    options: {
      url: { type: 'string' },
      label: { type: 'string' },
      room: { type: 'string', default: 'lobby' },
      id: { type: 'string' },
      peers: { type: 'string', default: '' },
      n: { type: 'string', default: '50' },
      sync: { type: 'string' },
      'expect-own': { type: 'boolean', default: false },
      timeout: { type: 'string', default: '150' },
    },
  });
  const mode = positionals[0];
  const args = {
    ...values,
    peers: values.peers.split(',').filter(Boolean),
    n: Number(values.n),
    expectOwn: values['expect-own'],
  };
  if (!['room', 'probe'].includes(mode) || !args.url || !args.label) {
    console.error('usage: room_node.mjs room|probe --url URL --label L [...]');
    return 2;
  }
  if (mode === 'room' && (!args.peers.includes(args.id) || !args.sync)) {
    console.error('room mode needs --id (one of --peers) and --sync');
    return 2;
  }
  const report = new Report(args.label, mode === 'room' ? roomChecks(args) : probeChecks());
  try {
    await withTimeout(
      (mode === 'room' ? runRoom : runProbe)(args, report),
      Number(args.timeout) * 1000,
      'the whole run',
    );
  } catch (e) {
    return report.finish(`the run stopped: ${e}`);
  }
  return report.finish('not checked');
}

process.exitCode = await main();
process.exit();
