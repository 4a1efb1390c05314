// Unit tests of web/duplex.js: reconnect and backoff, recovery, commands and frames.
// The hub is played by a fake WebSocket class given through options.WebSocket; time is
// node:test's mocked setTimeout and Date. server.test.mjs runs the SDK against a real hub.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import {
  DuplexClient,
  DuplexError,
  Subscription,
  backoff,
  decodeBinaryFrame,
  encodeBinaryFrame,
  mayReconnect,
} from "../duplex.js";

const URL = "ws://hub.test/ws";
const CONNECT_RESULT = { client: "c1", user: "", ping: 25, node: "n1", version: "0.1.0" };

/** Lets pending promise callbacks and the SDK's async connection steps run. */
const flush = () => new Promise((resolve) => setImmediate(resolve));

/**
 * A client wired to fake sockets, with mocked time. `random` defaults to 0.5 so that every
 * backoff delay is half its ceiling.
 */
function setup(t, options = {}) {
  t.mock.timers.enable({ apis: ["setTimeout", "Date"], now: 1_000_000 });
  const sockets = [];
  class FakeWebSocket {
    constructor(url, protocols) {
      this.url = url;
      this.protocols = protocols;
      this.readyState = 0;
      this.binaryType = "blob";
      this.sent = [];
      this.closed = null;
      /** How many close() calls throw before one works. */
      this.refuseClose = 0;
      sockets.push(this);
    }

    send(data) {
      if (this.readyState !== 1) throw new Error(`send in readyState ${this.readyState}`);
      this.sent.push(data);
    }

    close(code, reason) {
      // Like browsers and `ws`: a reason over 123 bytes of UTF-8 is refused.
      if (reason !== undefined && new TextEncoder().encode(reason).length > 123) {
        throw new SyntaxError("the close reason is longer than 123 bytes");
      }
      if (this.refuseClose > 0) {
        this.refuseClose -= 1;
        throw new Error("close refused");
      }
      this.closed = { code, reason };
      this.readyState = 3;
    }

    // The server's side.

    open() {
      this.readyState = 1;
      this.onopen?.(new Event("open"));
    }

    commands() {
      return this.sent.map((d) => (typeof d === "string" ? JSON.parse(d) : decodeBinaryFrame(d)));
    }

    command(cmd) {
      return this.commands().findLast((c) => c.cmd === cmd);
    }

    push(frame) {
      this.onmessage?.({ data: typeof frame === "string" ? frame : JSON.stringify(frame) });
    }

    reply(cmd, result = {}) {
      const { id } = this.command(cmd);
      this.push({ id, result });
      return id;
    }

    refuse(cmd, code, message = "refused") {
      this.push({ id: this.command(cmd).id, error: { code, message } });
    }

    accept(result = {}) {
      this.open();
      this.reply("connect", { ...CONNECT_RESULT, ...result });
    }

    drop(code = 1006, reason = "", wasClean = code !== 1006) {
      this.readyState = 3;
      this.onclose?.({ code, reason, wasClean });
    }
  }
  const client = new DuplexClient(URL, { WebSocket: FakeWebSocket, random: () => 0.5, ...options });
  const events = record(client, ["open", "message", "close", "error", "state"]);
  return {
    client,
    sockets,
    events,
    socket: () => sockets.at(-1),
    tick: (ms) => t.mock.timers.tick(ms),
    /** Lets the next connection attempt (after `ms`) create its socket. */
    async redial(ms) {
      t.mock.timers.tick(ms);
      await flush();
      return sockets.at(-1);
    },
  };
}

/** Connects and answers the connect command; returns the socket. */
async function online(h, result) {
  h.client.connect();
  await flush();
  h.socket().accept(result);
  return h.socket();
}

/** Records every event of `names` on `target`, in order. */
function record(target, names) {
  const events = [];
  for (const name of names) target.addEventListener(name, (event) => events.push(event));
  return events;
}

const states = (events) =>
  events
    .filter((e) => e.type === "state")
    .map((e) => (e.delay === null ? e.state : [e.state, e.delay]));
const ofType = (events, type) => events.filter((e) => e.type === type);

describe("backoff", () => {
  test("full jitter: random() * min(max, min * 2 ** attempt)", () => {
    const cases = [
      // [attempt, random(), delay]
      [0, 0.5, 250],
      [0, 0, 0], // the first delay is random too
      [1, 0.5, 500],
      [3, 1, 4000],
      [5, 1, 16000],
      [6, 1, 20000], // capped
      [60, 0.25, 5000],
    ];
    for (const [attempt, draw, delay] of cases) {
      assert.equal(
        backoff(attempt, 500, 20000, () => draw),
        delay,
        `attempt ${attempt}, ${draw}`,
      );
    }
  });

  test("reconnect codes follow the protocol's advice", () => {
    for (const code of [1000, 1001, 1006, 1011, 3000, 4000, 4001, 4002, 4003, 4004, 4499]) {
      assert.equal(mayReconnect(code), true, `code ${code}`);
    }
    const final = [1002, 1003, 1007, 1008, 1009, 1010, 3500, 3750, 3999, 4500, 4501, 4502, 4999];
    for (const code of final) {
      assert.equal(mayReconnect(code), false, `code ${code}`);
    }
  });

  test("failed attempts wait the jittered, doubling, capped delays", async (t) => {
    const draws = [0.1, 0.9, 0.5, 1, 1, 0.3];
    const h = setup(t, {
      minReconnectDelay: 100,
      maxReconnectDelay: 1000,
      random: () => draws.shift(),
    });
    h.client.connect();
    await flush();
    const expected = [10, 180, 200, 800, 1000, 300];
    for (const delay of expected) {
      h.socket().drop(1006);
      assert.equal(h.client.state, "reconnecting");
      assert.equal(h.client.reconnectAt, Date.now() + delay);
      const before = h.sockets.length;
      await h.redial(delay - 1);
      assert.equal(h.sockets.length, before, `no attempt before ${delay} ms`);
      await h.redial(1);
      assert.equal(h.sockets.length, before + 1, `an attempt after ${delay} ms`);
    }
    const closes = ofType(h.events, "close");
    assert.deepEqual(
      closes.map((e) => [e.code, e.reconnect, e.delay]),
      expected.map((delay) => [1006, true, delay]),
    );
  });

  test("the delay starts over once a connection stayed connected for 5 s", async (t) => {
    const h = setup(t, { minReconnectDelay: 100, maxReconnectDelay: 10000 });
    h.client.connect();
    await flush();
    h.socket().drop(1006); // attempt 0: 50 ms
    (await h.redial(50)).drop(1006); // attempt 1: 100 ms
    (await h.redial(100)).drop(1006); // attempt 2: 200 ms
    (await h.redial(200)).accept();
    h.tick(4999);
    h.socket().drop(1001); // connected, but not for long: attempt 3, 400 ms
    (await h.redial(400)).accept();
    h.tick(5000);
    h.socket().drop(1001); // stable: attempt 0 again
    const delays = ofType(h.events, "close").map((e) => e.delay);
    assert.deepEqual(delays, [50, 100, 200, 400, 50]);
  });

  test("a server that accepts and closes at once gets ever longer waits", async (t) => {
    const h = setup(t, { minReconnectDelay: 100, maxReconnectDelay: 1000, random: () => 1 });
    await online(h);
    for (const code of [4004, 4001, 4004, 4004, 4004]) {
      h.socket().drop(code);
      (await h.redial(ofType(h.events, "close").at(-1).delay)).accept();
    }
    const delays = ofType(h.events, "close").map((e) => e.delay);
    assert.deepEqual(delays, [100, 200, 400, 800, 1000]);
  });

  test("stableAfter sets how long a connection must last to reset the backoff", async (t) => {
    const h = setup(t, { minReconnectDelay: 100, stableAfter: 100 });
    await online(h);
    h.socket().drop(1006); // attempt 0: 50 ms
    (await h.redial(50)).accept();
    h.tick(99);
    h.socket().drop(1006); // attempt 1: 100 ms
    (await h.redial(100)).accept();
    h.tick(100);
    h.socket().drop(1006); // attempt 0 again
    const delays = ofType(h.events, "close").map((e) => e.delay);
    assert.deepEqual(delays, [50, 100, 50]);
    for (const bad of [{ stableAfter: -1 }, { timeout: 0 }]) {
      assert.throws(() => new DuplexClient(URL, { WebSocket: class {}, ...bad }), RangeError);
    }
  });

  test("the state events of a session", async (t) => {
    const h = setup(t, { minReconnectDelay: 1000 });
    assert.equal(h.client.state, "disconnected");
    const first = await online(h);
    first.drop(1006);
    assert.equal(h.client.reconnectAt, Date.now() + 500);
    (await h.redial(500)).accept();
    h.client.disconnect();
    assert.deepEqual(states(h.events), [
      "connecting",
      "connected",
      ["reconnecting", 500],
      "connecting",
      "connected",
      "disconnected",
    ]);
    assert.equal(h.client.reconnectAt, null);
    assert.deepEqual(
      h.events.filter((e) => e.type !== "state").map((e) => e.type),
      ["open", "close", "open", "close"],
    );
  });
});

describe("reconnect", () => {
  for (const code of [1000, 1001, 1006, 1011, 4001, 4002, 4004]) {
    test(`reconnects after close ${code}`, async (t) => {
      const h = setup(t);
      const socket = await online(h);
      socket.drop(code, "bye");
      const [close] = ofType(h.events, "close");
      assert.equal(close.code, code);
      assert.equal(close.reason, "bye");
      assert.equal(close.wasClean, code !== 1006);
      assert.equal(close.reconnect, true);
      assert.equal(close.delay, 250);
      const next = await h.redial(250);
      assert.notEqual(next, socket);
      next.accept();
      assert.equal(h.client.state, "connected");
    });
  }

  for (const code of [1002, 1008, 1009, 4500, 4501, 4502, 4999]) {
    test(`stays disconnected after close ${code}`, async (t) => {
      const h = setup(t);
      const socket = await online(h);
      socket.drop(code, "no");
      const [close] = ofType(h.events, "close");
      assert.deepEqual([close.code, close.reconnect, close.delay], [code, false, null]);
      assert.equal(h.client.state, "disconnected");
      await h.redial(60_000);
      assert.equal(h.sockets.length, 1);
    });
  }

  test("a disconnect push with reconnect:false overrides the close code", async (t) => {
    const h = setup(t);
    const socket = await online(h);
    socket.push({ push: "disconnect", code: 4000, reason: "moved", reconnect: false });
    socket.drop(4000, "moved");
    assert.equal(ofType(h.events, "close")[0].reconnect, false);
    assert.equal(h.client.state, "disconnected");
  });

  test("disconnect() closes with the given code and stops reconnecting", async (t) => {
    const h = setup(t);
    const socket = await online(h);
    h.client.disconnect(4321, "leaving");
    assert.deepEqual(socket.closed, { code: 4321, reason: "leaving" });
    const [close] = ofType(h.events, "close");
    assert.deepEqual(
      [close.code, close.reason, close.wasClean, close.reconnect],
      [4321, "leaving", true, false],
    );
    socket.drop(4321, "leaving"); // a late close event of the old socket changes nothing
    await h.redial(60_000);
    assert.equal(h.sockets.length, 1);
    assert.equal(h.client.state, "disconnected");
    assert.throws(() => h.client.disconnect(1006), RangeError);
  });

  test("disconnect() while waiting to reconnect cancels the attempt", async (t) => {
    const h = setup(t);
    (await online(h)).drop(1006);
    h.client.disconnect();
    await h.redial(60_000);
    assert.equal(h.sockets.length, 1);
    assert.deepEqual(states(h.events).at(-1), "disconnected");
  });

  test("connect() again after disconnect() starts over", async (t) => {
    const h = setup(t);
    await online(h);
    h.client.disconnect();
    await online(h);
    assert.equal(h.sockets.length, 2);
    assert.equal(h.client.state, "connected");
  });

  test("connect() is idempotent", async (t) => {
    const h = setup(t);
    h.client.connect();
    h.client.connect();
    await flush();
    h.client.connect();
    assert.equal(h.sockets.length, 1);
  });

  test("offers duplex.v1, reads binary as ArrayBuffer and sends the connect command", async (t) => {
    const h = setup(t, { name: "app", version: "1.2", info: { name: "Ann" } });
    const socket = await online(h);
    assert.equal(socket.url, URL);
    assert.equal(socket.protocols, "duplex.v1");
    assert.equal(socket.binaryType, "arraybuffer");
    assert.deepEqual(socket.commands()[0], {
      id: 1,
      cmd: "connect",
      name: "app",
      version: "1.2",
      info: { name: "Ann" },
    });
    const [open] = ofType(h.events, "open");
    assert.deepEqual([open.clientId, open.user, open.node], ["c1", "", "n1"]);
    assert.deepEqual([h.client.clientId, h.client.user, h.client.node], ["c1", "", "n1"]);
  });

  test("the token function is called before every connect; 4003 gets a fresh token", async (t) => {
    let calls = 0;
    const h = setup(t, { token: async () => `token-${++calls}` });
    const first = await online(h);
    assert.equal(first.command("connect").token, "token-1");
    first.drop(4003, "token expired");
    const second = await h.redial(250);
    assert.equal(calls, 2);
    second.open();
    assert.equal(second.command("connect").token, "token-2");
    second.drop(1006); // before connected: the second attempt waits 500 ms
    const third = await h.redial(500);
    assert.equal(calls, 3);
    third.open();
    assert.equal(third.command("connect").token, "token-3");
  });

  test("a token string is sent as is", async (t) => {
    const h = setup(t, { token: "jwt" });
    assert.equal((await online(h)).command("connect").token, "jwt");
  });

  test("a failing token function is reported and retried with backoff", async (t) => {
    let calls = 0;
    const h = setup(t, {
      token: () => {
        calls += 1;
        if (calls === 1) throw new Error("auth backend down");
        return "jwt";
      },
    });
    h.client.connect();
    await flush();
    assert.equal(h.sockets.length, 0);
    const [error] = ofType(h.events, "error");
    assert.equal(error.error.code, "token");
    assert.match(error.error.message, /auth backend down/);
    assert.deepEqual(states(h.events), ["connecting", ["reconnecting", 250]]);
    const socket = await h.redial(250);
    socket.accept();
    assert.equal(socket.command("connect").token, "jwt");
  });

  test("an invalid token: error 101 is surfaced, then close 4501 ends it", async (t) => {
    const h = setup(t, { token: "bad" });
    h.client.connect();
    await flush();
    const socket = h.socket();
    socket.open();
    socket.refuse("connect", 101, "invalid token");
    socket.drop(4501, "unauthorized");
    const [error] = ofType(h.events, "error");
    assert.ok(error.error instanceof DuplexError);
    assert.deepEqual([error.error.code, error.error.message], [101, "invalid token"]);
    assert.equal(ofType(h.events, "close")[0].code, 4501);
    assert.equal(h.client.state, "disconnected");
    assert.equal(ofType(h.events, "open").length, 0);
  });

  test("an expired static token is not retried; a token function is", async (t) => {
    const expire = async (token) => {
      const h = setup(t, { token });
      h.client.connect();
      await flush();
      h.socket().open();
      h.socket().refuse("connect", 109, "token expired");
      h.socket().drop(4003, "token expired");
      return h.client.state;
    };
    assert.equal(await expire("old"), "disconnected");
    t.mock.timers.reset();
    assert.equal(await expire(() => "fresh"), "reconnecting");
  });

  test("a connect refused for another reason gives up with 3500", async (t) => {
    const h = setup(t, { info: { big: "x".repeat(2000) } });
    h.client.connect();
    await flush();
    const socket = h.socket();
    socket.open();
    socket.refuse("connect", 107, "info too large");
    assert.deepEqual(socket.closed, { code: 3500, reason: "info too large" });
    assert.equal(h.client.state, "disconnected");
  });

  test("close 4003 with a token string ends it; with a token function it reconnects", async (t) => {
    const expire = async (token) => {
      const h = setup(t, { token });
      const socket = await online(h);
      socket.drop(4003, "token expired");
      const [close] = ofType(h.events, "close");
      await h.redial(60_000);
      return [close.reconnect, close.delay, h.client.state, h.sockets.length];
    };
    assert.deepEqual(await expire("old"), [false, null, "disconnected", 1]);
    t.mock.timers.reset();
    const [reconnect, delay, , sockets] = await expire(() => "fresh");
    assert.deepEqual([reconnect, delay, sockets], [true, 250, 2]);
  });

  test("a token function that never settles is cut off by the connect timeout", async (t) => {
    let calls = 0;
    let late;
    const h = setup(t, {
      timeout: 3000,
      token: () => {
        calls += 1;
        if (calls === 1) return new Promise((resolve) => (late = resolve));
        return "jwt";
      },
    });
    h.client.connect();
    await flush();
    h.tick(2999);
    assert.equal(h.client.state, "connecting");
    h.tick(1);
    const [error] = ofType(h.events, "error");
    assert.equal(error.error.code, "token");
    assert.match(error.error.message, /did not settle within 3000 ms/);
    assert.deepEqual(states(h.events), ["connecting", ["reconnecting", 250]]);
    late("stale"); // too late: this attempt is over
    await flush();
    assert.equal(h.sockets.length, 0);
    const socket = await h.redial(250);
    assert.equal(h.sockets.length, 1);
    socket.accept();
    assert.equal(socket.command("connect").token, "jwt");
    assert.equal(h.client.state, "connected");
  });

  test("the connect timeout counts from the attempt's start, token included", async (t) => {
    let resolve;
    const h = setup(t, { timeout: 3000, token: () => new Promise((r) => (resolve = r)) });
    h.client.connect();
    await flush();
    h.tick(2000);
    resolve("jwt");
    await flush();
    h.socket().open();
    h.tick(999);
    assert.equal(h.socket().closed, null);
    h.tick(1);
    assert.deepEqual(h.socket().closed, { code: 3000, reason: "connect timeout" });
  });

  test("a close reason is cut to 123 bytes of UTF-8 at a character boundary", async (t) => {
    const h = setup(t);
    let socket = await online(h);
    h.client.disconnect(4000, "x".repeat(200));
    assert.deepEqual(socket.closed, { code: 4000, reason: "x".repeat(123) });
    assert.equal(ofType(h.events, "close")[0].reason, "x".repeat(123));
    socket = await online(h);
    h.client.disconnect(1000, "a" + "é".repeat(100)); // 1 + 200 bytes
    assert.deepEqual(socket.closed, { code: 1000, reason: "a" + "é".repeat(61) });
    socket = await online(h);
    h.client.disconnect(1000, "ab" + "😀".repeat(40)); // 4-byte characters, 2 UTF-16 units
    assert.deepEqual(socket.closed, { code: 1000, reason: "ab" + "😀".repeat(30) });
    socket = await online(h);
    h.client.disconnect(1000, "é".repeat(61) + "x");
    assert.equal(socket.closed.reason, "é".repeat(61) + "x", "exactly 123 bytes: kept");
  });

  test("a long connect refusal message does not leave the old socket open", async (t) => {
    const h = setup(t);
    h.client.connect();
    await flush();
    const socket = h.socket();
    socket.open();
    socket.refuse("connect", 100, `broker failed: ${"y".repeat(150)}`);
    assert.equal(socket.readyState, 3, "the refused socket is closed");
    assert.equal(socket.closed.code, 3000);
    assert.equal(new TextEncoder().encode(socket.closed.reason).length, 123);
    const next = await h.redial(250);
    assert.notEqual(next, socket);
    assert.equal(h.client.state, "connecting");
  });

  test("when close(code, reason) throws, the socket is closed with less", async (t) => {
    const h = setup(t);
    let socket = await online(h);
    socket.refuseClose = 1;
    h.client.disconnect(4000, "bye");
    assert.deepEqual(socket.closed, { code: 4000, reason: undefined });
    socket = await online(h);
    socket.refuseClose = 2;
    h.client.disconnect(4000, "bye");
    assert.deepEqual(socket.closed, { code: undefined, reason: undefined });
    assert.equal(h.client.state, "disconnected");
  });

  test("a connection that does not open within the timeout is retried", async (t) => {
    const h = setup(t, { timeout: 3000 });
    h.client.connect();
    await flush();
    h.tick(3000);
    assert.deepEqual(h.socket().closed, { code: 3000, reason: "connect timeout" });
    assert.equal(h.client.state, "reconnecting");
    (await h.redial(250)).accept();
    assert.equal(h.client.state, "connected");
  });

  test("a silent connection is pinged, and dropped when the ping gets no reply", async (t) => {
    const h = setup(t, { timeout: 4000 });
    const socket = await online(h, { ping: 10 }); // checks after 10 s + 5 s of silence
    h.tick(14_000);
    socket.push({ push: "join", channel: "x", info: {} }); // anything counts as a sign of life
    h.tick(14_000);
    assert.equal(socket.command("ping"), undefined);
    h.tick(1000);
    assert.ok(socket.command("ping"), "a ping after 15 s of silence");
    socket.reply("ping");
    h.tick(14_999);
    assert.equal(socket.commands().filter((c) => c.cmd === "ping").length, 1);
    h.tick(1);
    assert.equal(socket.commands().filter((c) => c.cmd === "ping").length, 2);
    h.tick(4000);
    assert.deepEqual(socket.closed, { code: 3000, reason: "no reply to ping" });
    assert.equal(h.client.state, "reconnecting");
  });

  test("no pings when the server's ping interval is 0", async (t) => {
    const h = setup(t);
    const socket = await online(h, { ping: 0 });
    h.tick(600_000);
    assert.equal(socket.command("ping"), undefined);
    assert.equal(h.client.state, "connected");
  });

  test("on<event> properties are handlers like the browser's", async (t) => {
    const h = setup(t);
    const seen = [];
    h.client.onopen = (e) => seen.push(`open ${e.clientId}`);
    h.client.onclose = (e) => seen.push(`first ${e.code}`);
    h.client.onclose = (e) => seen.push(`second ${e.code}`);
    assert.equal(typeof h.client.onclose, "function");
    (await online(h)).drop(1006);
    h.client.onopen = null;
    (await h.redial(250)).accept();
    assert.equal(h.client.onopen, null);
    assert.deepEqual(seen, ["open c1", "second 1006"]);
  });

  test("a URL is required outside a page", () => {
    assert.throws(() => new DuplexClient(null, { WebSocket: class {} }), TypeError);
    assert.throws(() => new DuplexClient(URL, { WebSocket: undefined }), /WebSocket/);
    assert.throws(
      () => new DuplexClient(URL, { WebSocket: class {}, minReconnectDelay: 0 }),
      RangeError,
    );
  });
});

describe("handlers that disconnect or unsubscribe", () => {
  test("disconnect() in an error handler after a token failure stops reconnecting", async (t) => {
    const h = setup(t, { token: () => Promise.reject(new Error("no")) });
    h.client.addEventListener("error", () => h.client.disconnect());
    h.client.connect();
    await flush();
    assert.equal(h.client.state, "disconnected");
    assert.equal(h.client.reconnectAt, null);
    await h.redial(60_000);
    assert.equal(h.sockets.length, 0);
    assert.deepEqual(states(h.events), ["connecting", "disconnected"]);
  });

  test("disconnect() in an error handler after a token timeout stops reconnecting", async (t) => {
    const h = setup(t, { timeout: 1000, token: () => new Promise(() => {}) });
    h.client.addEventListener("error", () => h.client.disconnect());
    h.client.connect();
    await flush();
    h.tick(1000);
    await h.redial(60_000);
    assert.deepEqual(states(h.events), ["connecting", "disconnected"]);
    assert.equal(h.sockets.length, 0);
  });

  test("disconnect() in an error handler during a connect refusal", async (t) => {
    const h = setup(t);
    h.client.addEventListener("error", () => h.client.disconnect(4000, "giving up"));
    h.client.connect();
    await flush();
    const socket = h.socket();
    socket.open();
    socket.refuse("connect", 107, "info too large"); // must not throw
    assert.deepEqual(socket.closed, { code: 4000, reason: "giving up" });
    assert.deepEqual(
      ofType(h.events, "close").map((e) => [e.code, e.reconnect]),
      [[4000, false]],
    );
    assert.equal(h.client.state, "disconnected");
    await h.redial(60_000);
    assert.equal(h.sockets.length, 1);
  });

  test("disconnect() in an error handler after a temporary connect refusal", async (t) => {
    const h = setup(t);
    h.client.onerror = () => h.client.disconnect();
    h.client.connect();
    await flush();
    h.socket().open();
    h.socket().refuse("connect", 100, "internal error");
    await h.redial(60_000);
    assert.equal(h.sockets.length, 1);
    assert.equal(ofType(h.events, "close").length, 1);
    assert.equal(h.client.state, "disconnected");
  });

  test("a WebSocket that cannot be created ends it; a handler may start over", async (t) => {
    let fail = true;
    const h = setup(t);
    class Refusing {
      constructor(url) {
        if (fail) throw new SyntaxError(`bad url ${url}`);
        this.created = true;
      }
    }
    const client = new DuplexClient(URL, { WebSocket: Refusing, timeout: 1000 });
    const events = record(client, ["error", "state"]);
    client.onerror = () => {
      fail = false;
      client.disconnect();
      client.connect();
    };
    client.connect();
    await flush();
    assert.equal(events[1].type, "error");
    assert.equal(events[1].error.code, "transport");
    assert.match(events[1].error.message, /cannot open .*bad url/);
    assert.equal(client.state, "connecting", "the handler's connect() is not undone");
    h.tick(1000); // the new attempt's socket never opens: retried
    assert.equal(client.state, "reconnecting");
  });

  test("disconnect() in a state handler on connected: no open event", async (t) => {
    const h = setup(t);
    h.client.addEventListener("state", (e) => {
      if (e.state === "connected") h.client.disconnect();
    });
    const socket = await online(h);
    assert.equal(ofType(h.events, "open").length, 0);
    assert.deepEqual(socket.closed, { code: 1000, reason: "" });
    assert.deepEqual(states(h.events), ["connecting", "connected", "disconnected"]);
  });

  test("disconnect() in a state handler on connecting: no dial", async (t) => {
    let calls = 0;
    const h = setup(t, { token: () => `t${++calls}` });
    h.client.addEventListener("state", (e) => {
      if (e.state === "connecting") h.client.disconnect();
    });
    h.client.connect();
    await flush();
    assert.equal(calls, 0, "the token function is not called");
    assert.equal(h.sockets.length, 0);
    assert.equal(h.client.state, "disconnected");
    h.tick(60_000);
    assert.equal(ofType(h.events, "error").length, 0, "no connect timeout either");
  });

  test("disconnect() in a state handler on reconnecting: close says no reconnect", async (t) => {
    const h = setup(t);
    h.client.addEventListener("state", (e) => {
      if (e.state === "reconnecting") h.client.disconnect();
    });
    (await online(h)).drop(1006);
    const [close] = ofType(h.events, "close");
    assert.deepEqual([close.code, close.reconnect, close.delay], [1006, false, null]);
    assert.equal(h.client.state, "disconnected");
    await h.redial(60_000);
    assert.equal(h.sockets.length, 1);
  });

  test("unsubscribe() in the error handler of a refused subscription", async (t) => {
    const h = setup(t);
    const socket = await online(h);
    const sub = h.client.subscribe("admin:x");
    const events = record(sub, ["error", "unsubscribed"]);
    sub.addEventListener("error", () => sub.unsubscribe());
    socket.refuse("subscribe", 103, "permission denied");
    assert.deepEqual(
      events.map((e) => e.type),
      ["error", "unsubscribed"],
    );
    assert.equal(socket.command("unsubscribe"), undefined, "nothing to unsubscribe from");
  });

  test("disconnect() while recovered publications are delivered keeps the position", async (t) => {
    const h = setup(t);
    const socket = await online(h);
    const sub = h.client.subscribe("chat:a");
    socket.reply("subscribe", { channel: "chat:a", epoch: "e1", offset: 5, recoverable: true });
    socket.drop(1006);
    const next = await h.redial(250);
    next.accept();
    const seen = [];
    sub.addEventListener("publication", (e) => {
      seen.push(e.offset);
      if (e.offset === 7) h.client.disconnect();
    });
    const missed = [6, 7, 8, 9].map((offset) => ({ offset, epoch: "e1", data: offset }));
    next.reply("subscribe", {
      channel: "chat:a",
      epoch: "e1",
      offset: 9,
      recoverable: true,
      recovered: true,
      publications: missed,
    });
    assert.deepEqual(seen, [6, 7]);
    assert.deepEqual([sub.epoch, sub.offset], ["e1", 7]);
    const last = await online(h);
    assert.deepEqual(last.command("subscribe").recover, { offset: 7, epoch: "e1" });
  });
});

describe("commands", () => {
  test("publish resolves with the reply's result and rejects with its error", async (t) => {
    const h = setup(t);
    const socket = await online(h);
    const ok = h.client.publish("chat:a", { text: "hi" }, { key: "k" });
    assert.deepEqual(socket.command("publish"), {
      id: 2,
      cmd: "publish",
      channel: "chat:a",
      data: { text: "hi" },
      key: "k",
    });
    socket.reply("publish", { offset: 3, epoch: "e" });
    assert.deepEqual(await ok, { offset: 3, epoch: "e" });
    const denied = h.client.publish("prices:X", 1);
    socket.refuse("publish", 103, "permission denied");
    await assert.rejects(denied, { name: "DuplexError", code: 103, message: "permission denied" });
  });

  test("ids increase over the client's life, across connections", async (t) => {
    const h = setup(t);
    const first = await online(h);
    const dropped = h.client.ping();
    first.drop(1006);
    await assert.rejects(dropped, { code: "disconnected" });
    const second = await h.redial(250);
    second.accept();
    h.client.ping();
    const ids = [...first.commands(), ...second.commands()].map((c) => c.id);
    assert.deepEqual(ids, [1, 2, 3, 4]);
  });

  test("a command without a reply rejects with timeout; a late reply is ignored", async (t) => {
    const h = setup(t, { timeout: 2000 });
    const socket = await online(h);
    const presence = h.client.presence("chat:a");
    h.tick(1999);
    let settled = false;
    presence.then(
      () => (settled = true),
      () => (settled = true),
    );
    await flush();
    assert.equal(settled, false);
    h.tick(1);
    await assert.rejects(presence, { code: "timeout" });
    socket.reply("presence", { clients: {} }); // too late: ignored
    assert.equal(ofType(h.events, "error").length, 0);
  });

  test("commands in flight reject with disconnected when the connection drops", async (t) => {
    const h = setup(t);
    const socket = await online(h);
    const pending = [h.client.publish("chat:a", 1), h.client.history("chat:a"), h.client.ping()];
    socket.drop(1006);
    for (const promise of pending) await assert.rejects(promise, { code: "disconnected" });
    const next = await h.redial(250);
    next.accept();
    assert.deepEqual(
      next.commands().map((c) => c.cmd),
      ["connect"],
      "nothing is re-sent",
    );
  });

  test("commands issued offline are sent once connected, after the subscribes", async (t) => {
    const h = setup(t);
    const published = h.client.publish("chat:a", { n: 1 });
    const sub = h.client.subscribe("chat:a");
    const stats = h.client.presenceStats("chat:a");
    assert.equal(sub.state, "subscribing");
    h.client.connect();
    await flush();
    const socket = h.socket();
    socket.open();
    assert.deepEqual(
      socket.commands().map((c) => c.cmd),
      ["connect"],
      "nothing before connect",
    );
    socket.reply("connect", CONNECT_RESULT);
    assert.deepEqual(
      socket.commands().map((c) => [c.id, c.cmd]),
      [
        [3, "connect"],
        [4, "subscribe"],
        [1, "publish"],
        [2, "presence_stats"],
      ],
    );
    socket.reply("publish", {});
    socket.reply("presence_stats", { clients: 1, users: 1 });
    assert.deepEqual(await published, {});
    assert.deepEqual(await stats, { clients: 1, users: 1 });
  });

  test("queued commands wait through failed attempts, then time out", async (t) => {
    const h = setup(t, { timeout: 5000 });
    h.client.connect();
    await flush();
    const publish = h.client.publish("chat:a", 1);
    h.socket().drop(1006);
    (await h.redial(250)).drop(1006);
    const third = await h.redial(500);
    third.accept();
    assert.equal(third.command("publish").data, 1, "survived two failed attempts");
    third.reply("publish");
    await publish;
    third.drop(1006);
    const late = h.client.ping();
    h.tick(5000);
    await assert.rejects(late, { code: "timeout" });
  });

  test("disconnect() rejects queued commands too", async (t) => {
    const h = setup(t);
    const ping = h.client.ping();
    h.client.connect();
    h.client.disconnect();
    await assert.rejects(ping, { code: "disconnected" });
  });

  test("history decodes data_b64 and names the channel", async (t) => {
    const h = setup(t);
    const socket = await online(h);
    const history = h.client.history("chat:a", { limit: 2 });
    assert.deepEqual(socket.command("history"), {
      id: 2,
      cmd: "history",
      channel: "chat:a",
      limit: 2,
    });
    socket.reply("history", {
      epoch: "e",
      offset: 2,
      publications: [
        { offset: 1, epoch: "e", data: { a: 1 } },
        { offset: 2, epoch: "e", data_b64: "AAH/", key: "k" },
      ],
    });
    const result = await history;
    assert.equal(result.offset, 2);
    assert.deepEqual(result.publications[0], {
      channel: "chat:a",
      data: { a: 1 },
      offset: 1,
      epoch: "e",
      info: undefined,
      key: undefined,
    });
    assert.deepEqual(result.publications[1].data, new Uint8Array([0, 1, 255]));
    assert.equal(result.publications[1].key, "k");
  });
});

describe("binary frames", () => {
  test("encode and decode round trip", () => {
    const frame = encodeBinaryFrame({ id: 7, cmd: "publish" }, new Uint8Array([1, 2, 3]));
    const header = new TextEncoder().encode('{"id":7,"cmd":"publish"}');
    assert.deepEqual([...frame.subarray(0, 4)], [0, 0, 0, header.length]);
    assert.deepEqual(frame.subarray(4, 4 + header.length), header);
    assert.deepEqual([...frame.subarray(4 + header.length)], [1, 2, 3]);
    const decoded = decodeBinaryFrame(frame.buffer);
    assert.deepEqual(decoded, { id: 7, cmd: "publish", data: new Uint8Array([1, 2, 3]) });
    const empty = decodeBinaryFrame(encodeBinaryFrame({ a: 1 }, new ArrayBuffer(0)));
    assert.equal(empty.data.length, 0);
  });

  test("a header longer than 255 bytes uses all four length bytes", () => {
    const big = { text: "x".repeat(70_000) };
    const frame = encodeBinaryFrame(big, new Uint8Array([9]));
    const length = JSON.stringify(big).length;
    assert.deepEqual(
      [...frame.subarray(0, 4)],
      [0, length >> 16, (length >> 8) & 255, length & 255],
    );
    assert.deepEqual(decodeBinaryFrame(frame).data, new Uint8Array([9]));
  });

  test("malformed frames are refused", () => {
    const bad = [
      new Uint8Array([0, 0]),
      new Uint8Array([0, 0, 0, 1, 123]),
      new Uint8Array([0, 0, 0, 9, 123, 125]),
      new Uint8Array([0, 0, 0, 2, 91, 93]),
      new Uint8Array([0, 0, 0, 2, 123, 123]),
    ];
    for (const frame of bad) assert.throws(() => decodeBinaryFrame(frame), { code: "bad_frame" });
  });

  test("publishing bytes sends a binary frame", async (t) => {
    const h = setup(t);
    const socket = await online(h);
    const bytes = new Uint8Array([10, 0, 20, 30]);
    h.client.publish("chat:a", bytes.subarray(1, 3), { key: "k" });
    h.client.publish("chat:a", new Uint16Array([258]).buffer);
    const [first, second] = socket.sent.slice(1);
    assert.ok(first instanceof Uint8Array, "a binary message");
    assert.deepEqual(decodeBinaryFrame(first), {
      id: 2,
      cmd: "publish",
      channel: "chat:a",
      key: "k",
      data: new Uint8Array([0, 20]),
    });
    assert.deepEqual(decodeBinaryFrame(second).data, new Uint8Array(new Uint16Array([258]).buffer));
  });

  test("a binary publication push arrives as Uint8Array", async (t) => {
    const h = setup(t);
    const socket = await online(h);
    const sub = h.client.subscribe("chat:a");
    socket.reply("subscribe", { channel: "chat:a", epoch: "e", offset: 0, recoverable: true });
    const header = { push: "publication", channel: "chat:a", offset: 1, epoch: "e" };
    socket.onmessage({ data: encodeBinaryFrame(header, new Uint8Array([5, 6])).buffer });
    assert.deepEqual(ofType(h.events, "message")[0].data, new Uint8Array([5, 6]));
    assert.equal(sub.offset, 1);
  });

  test("an unreadable frame is reported as an error and skipped", async (t) => {
    const h = setup(t);
    const socket = await online(h);
    socket.push("not json");
    socket.onmessage({ data: new Uint8Array([0, 0, 0, 99]).buffer });
    const errors = ofType(h.events, "error").map((e) => e.error.code);
    assert.deepEqual(errors, ["bad_frame", "bad_frame"]);
    assert.equal(h.client.state, "connected");
  });
});

describe("subscriptions and recovery", () => {
  const pub = (offset, epoch = "e1", data = { n: offset }) => ({
    push: "publication",
    channel: "chat:a",
    offset,
    epoch,
    data,
    info: { client: "c9", user: "" },
  });

  /** A subscription of chat:a at {e1, offset}; returns the subscription and its events. */
  async function subscribed(h, offset = 5) {
    const socket = await online(h);
    const sub = h.client.subscribe("chat:a");
    const events = record(sub, [
      "subscribed",
      "publication",
      "unrecovered",
      "error",
      "unsubscribed",
    ]);
    assert.deepEqual(socket.command("subscribe"), { id: 2, cmd: "subscribe", channel: "chat:a" });
    socket.reply("subscribe", {
      channel: "chat:a",
      epoch: "e1",
      offset,
      recoverable: true,
      presence: true,
    });
    return { socket, sub, events };
  }

  const offsets = (events) => ofType(events, "publication").map((e) => e.offset);

  test("resubscribes with recover from the last publication seen", async (t) => {
    const h = setup(t);
    const { socket, sub } = await subscribed(h);
    assert.ok(sub instanceof Subscription);
    assert.equal(h.client.getSubscription("chat:a"), sub);
    socket.push(pub(6));
    socket.push(pub(7));
    socket.drop(1006);
    assert.equal(sub.state, "subscribing");
    const next = await h.redial(250);
    next.accept();
    assert.deepEqual(next.command("subscribe").recover, { offset: 7, epoch: "e1" });
  });

  test("resubscribes from the subscribe reply's position when nothing came", async (t) => {
    const h = setup(t);
    const { socket } = await subscribed(h, 5);
    socket.drop(4001);
    const next = await h.redial(250);
    next.accept();
    assert.deepEqual(next.command("subscribe").recover, { offset: 5, epoch: "e1" });
  });

  test("recovered publications come in order before live ones; repeats are dropped", async (t) => {
    const h = setup(t);
    const { socket, sub, events } = await subscribed(h);
    socket.push(pub(6));
    socket.drop(1006);
    const next = await h.redial(250);
    next.accept();
    next.push(pub(7)); // before the reply: belongs to no subscription yet, so ignored
    next.reply("subscribe", {
      channel: "chat:a",
      epoch: "e1",
      offset: 9,
      recoverable: true,
      recovered: true,
      publications: [
        { offset: 7, epoch: "e1", data: { n: 7 } },
        { offset: 8, epoch: "e1", data_b64: "AQI=" },
        { offset: 9, epoch: "e1", data: { n: 9 } },
      ],
    });
    next.push(pub(9)); // a repeat
    next.push(pub(8)); // an older one
    next.push(pub(10));
    assert.deepEqual(offsets(events), [6, 7, 8, 9, 10]);
    assert.deepEqual(
      ofType(h.events, "message").map((e) => e.offset),
      [6, 7, 8, 9, 10],
    );
    assert.deepEqual(ofType(events, "publication")[2].data, new Uint8Array([1, 2]));
    const resubscribed = ofType(events, "subscribed")[1];
    assert.deepEqual(
      [resubscribed.recovered, resubscribed.wasRecovering, resubscribed.publications],
      [true, true, 3],
    );
    assert.equal(
      events.findIndex((e) => e === resubscribed),
      2,
      "subscribed before the publications",
    );
    assert.deepEqual([sub.epoch, sub.offset], ["e1", 10]);
    assert.equal(ofType(events, "unrecovered").length, 0);
  });

  test("a publication event carries channel, data, offset, epoch, info and key", async (t) => {
    const h = setup(t);
    const { socket, events } = await subscribed(h);
    socket.push({ ...pub(6), key: "BTC" });
    const [e] = ofType(events, "publication");
    assert.deepEqual(
      {
        channel: e.channel,
        data: e.data,
        offset: e.offset,
        epoch: e.epoch,
        info: e.info,
        key: e.key,
      },
      {
        channel: "chat:a",
        data: { n: 6 },
        offset: 6,
        epoch: "e1",
        info: { client: "c9", user: "" },
        key: "BTC",
      },
    );
  });

  test("a new epoch on resubscribe is reported as unrecovered", async (t) => {
    const h = setup(t);
    const { socket, sub, events } = await subscribed(h);
    socket.drop(1006);
    const next = await h.redial(250);
    next.accept();
    next.reply("subscribe", {
      channel: "chat:a",
      epoch: "e2",
      offset: 0,
      recoverable: true,
      recovered: false,
    });
    const [unrecovered] = ofType(events, "unrecovered");
    assert.deepEqual([unrecovered.epoch, unrecovered.offset], ["e2", 0]);
    const resubscribed = ofType(events, "subscribed")[1];
    assert.deepEqual([resubscribed.recovered, resubscribed.wasRecovering], [false, true]);
    next.push(pub(1, "e2"));
    assert.deepEqual(offsets(events), [1], "the new epoch's publications are not repeats");
    assert.deepEqual([sub.epoch, sub.offset], ["e2", 1]);
  });

  test("no event follows an unsubscribe from a subscribed handler", async (t) => {
    const h = setup(t);
    const { socket, sub, events } = await subscribed(h);
    socket.drop(1006);
    const next = await h.redial(250);
    next.accept();
    sub.onsubscribed = () => sub.unsubscribe();
    next.reply("subscribe", {
      channel: "chat:a",
      epoch: "e2",
      offset: 0,
      recoverable: true,
      recovered: false,
    });
    assert.deepEqual(
      events.map((e) => e.type),
      ["subscribed", "subscribed", "unsubscribed"],
    );
  });

  test("a live publication of a new epoch is accepted", async (t) => {
    const h = setup(t);
    const { socket, events } = await subscribed(h, 50);
    socket.push(pub(1, "e2"));
    assert.deepEqual(offsets(events), [1]);
  });

  test("no recovery without history, with recover:false, or when not recoverable", async (t) => {
    const h = setup(t);
    const socket = await online(h);
    h.client.subscribe("news");
    h.client.subscribe("chat:b", { recover: false });
    h.client.subscribe("log:c");
    socket.push({ id: 2, result: { channel: "news", recoverable: false } });
    socket.push({ id: 3, result: { channel: "chat:b", epoch: "e", offset: 4, recoverable: true } });
    socket.push({ id: 4, result: { channel: "log:c", epoch: "e", offset: 4, recoverable: false } });
    socket.drop(1006);
    const next = await h.redial(250);
    next.accept();
    const recovers = next
      .commands()
      .filter((c) => c.cmd === "subscribe")
      .map((c) => c.recover);
    assert.deepEqual(recovers, [undefined, undefined, undefined]);
  });

  test("publications without offsets are all delivered", async (t) => {
    const h = setup(t);
    const socket = await online(h);
    const sub = h.client.subscribe("news");
    const events = record(sub, ["publication"]);
    socket.reply("subscribe", { channel: "news", recoverable: false });
    socket.push({ push: "publication", channel: "news", data: 1 });
    socket.push({ push: "publication", channel: "news", data: 1 });
    assert.equal(events.length, 2);
  });

  test("a refused subscription reports the error and ends", async (t) => {
    const h = setup(t);
    const socket = await online(h);
    const sub = h.client.subscribe("admin:x");
    const events = record(sub, ["error", "unsubscribed"]);
    socket.refuse("subscribe", 103, "permission denied");
    assert.deepEqual(
      events.map((e) => e.type),
      ["error", "unsubscribed"],
    );
    assert.equal(events[0].error.code, 103);
    assert.equal(sub.state, "unsubscribed");
    assert.equal(h.client.getSubscription("admin:x"), undefined);
  });

  test("a temporarily refused subscription is retried with backoff", async (t) => {
    const h = setup(t);
    const socket = await online(h);
    const sub = h.client.subscribe("chat:a");
    const errors = record(sub, ["error"]);
    socket.refuse("subscribe", 111, "too many commands");
    assert.equal(errors[0].error.code, 111);
    h.tick(249);
    assert.equal(socket.commands().filter((c) => c.cmd === "subscribe").length, 1);
    h.tick(1);
    socket.refuse("subscribe", 111, "too many commands");
    h.tick(500);
    socket.reply("subscribe", { channel: "chat:a", recoverable: false });
    assert.equal(socket.commands().filter((c) => c.cmd === "subscribe").length, 3);
    assert.equal(sub.state, "subscribed");
  });

  test("a subscribe without a reply drops the connection", async (t) => {
    const h = setup(t, { timeout: 1000 });
    const socket = await online(h);
    h.client.subscribe("chat:a");
    h.tick(1000);
    assert.deepEqual(socket.closed, { code: 3000, reason: "subscribe timeout" });
    assert.equal(h.client.state, "reconnecting");
    assert.equal(h.client.getSubscription("chat:a").state, "subscribing");
  });

  test("unsubscribe sends the command and silences the subscription", async (t) => {
    const h = setup(t);
    const { socket, sub, events } = await subscribed(h);
    sub.onunsubscribed = () => events.push("handler");
    sub.unsubscribe();
    sub.unsubscribe();
    assert.deepEqual(socket.command("unsubscribe"), {
      id: 3,
      cmd: "unsubscribe",
      channel: "chat:a",
    });
    socket.push(pub(6));
    assert.deepEqual(
      events.slice(1).map((e) => e.type ?? e),
      ["unsubscribed", "handler"],
    );
    assert.equal(h.client.getSubscription("chat:a"), undefined);
    socket.drop(1006);
    const next = await h.redial(250);
    next.accept();
    assert.equal(next.command("subscribe"), undefined, "not resubscribed");
  });

  test("unsubscribing while the subscribe is in flight ignores its reply", async (t) => {
    const h = setup(t);
    const socket = await online(h);
    const sub = h.client.subscribe("chat:a");
    const events = record(sub, ["subscribed"]);
    sub.unsubscribe();
    socket.push({ id: 2, result: { channel: "chat:a", recoverable: false } });
    assert.equal(events.length, 0);
    assert.equal(sub.state, "unsubscribed");
  });

  test("subscribe returns the channel's existing subscription", async (t) => {
    const h = setup(t);
    const { socket, sub } = await subscribed(h);
    assert.equal(h.client.subscribe("chat:a"), sub);
    assert.equal(socket.commands().filter((c) => c.cmd === "subscribe").length, 1);
  });

  test("join and leave pushes, and presence through the subscription", async (t) => {
    const h = setup(t);
    const { socket, sub } = await subscribed(h);
    const events = record(sub, ["join", "leave"]);
    const ann = { client: "c2", user: "", info: { name: "Ann" } };
    socket.push({ push: "join", channel: "chat:a", info: ann });
    socket.push({ push: "leave", channel: "chat:a", info: ann });
    socket.push({ push: "join", channel: "chat:other", info: ann });
    assert.deepEqual(
      events.map((e) => [e.type, e.info]),
      [
        ["join", ann],
        ["leave", ann],
      ],
    );
    const presence = sub.presence();
    assert.deepEqual(socket.command("presence"), { id: 3, cmd: "presence", channel: "chat:a" });
    socket.reply("presence", { clients: { c2: ann } });
    assert.deepEqual(await presence, { clients: { c2: ann } });
    const stats = sub.presenceStats();
    socket.reply("presence_stats", { clients: 1, users: 1 });
    assert.deepEqual(await stats, { clients: 1, users: 1 });
    const published = sub.publish({ text: "hi" });
    assert.equal(socket.command("publish").channel, "chat:a");
    socket.reply("publish", { offset: 6, epoch: "e1" });
    assert.deepEqual(await published, { offset: 6, epoch: "e1" });
    const history = sub.history({ since: { offset: 1, epoch: "e1" } });
    assert.deepEqual(socket.command("history").since, { offset: 1, epoch: "e1" });
    socket.reply("history", { publications: [], epoch: "e1", offset: 6 });
    assert.deepEqual((await history).publications, []);
  });
});
