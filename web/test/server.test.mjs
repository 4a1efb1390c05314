// web/duplex.js against a real `duplex serve` (env DUPLEX_BIN, else target/debug/duplex;
// build it with `cargo build -p duplex-cli`), through the `ws` package that `npm ci` installs
// in interop/. Neither being there is a failure, not a skip.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { createInterface } from "node:readline";
import { after, describe, test } from "node:test";
import { fileURLToPath, pathToFileURL } from "node:url";
import { DuplexClient } from "../duplex.js";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));
const BIN = process.env.DUPLEX_BIN ?? `${ROOT}target/debug/duplex`;
const WS_MODULE = `${ROOT}interop/node_modules/ws/wrapper.mjs`;
const STEP_TIMEOUT = 10_000;

/** The `ws` package's WebSocket class, loaded by `prerequisites`. */
let WebSocket;
let loading;
const clients = [];
const servers = new Set();

/** Loads `ws` and checks for the binary, once; each test fails with what to do if missing. */
function prerequisites() {
  loading ??= (async () => {
    assert.ok(existsSync(BIN), `no duplex binary at ${BIN}: run cargo build -p duplex-cli`);
    try {
      ({ WebSocket } = await import(pathToFileURL(WS_MODULE).href));
    } catch (cause) {
      throw new Error(`the ws package is missing (${WS_MODULE}): run npm ci in interop/`, {
        cause,
      });
    }
  })();
  return loading;
}

/**
 * Starts `duplex serve` on `listen` and resolves once it prints `listening on ADDR`.
 * @returns {Promise<{addr: string, stop: () => Promise<void>}>}
 */
async function startServer(listen = "127.0.0.1:0") {
  await prerequisites();
  const child = spawn(BIN, ["serve", "--listen", listen], { stdio: ["ignore", "ignore", "pipe"] });
  servers.add(child);
  const exited = new Promise((resolve) => child.once("exit", resolve));
  const stop = async () => {
    child.kill("SIGKILL");
    await exited;
    servers.delete(child);
  };
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${BIN} printed no 'listening on'`)), 15_000);
    child.once("error", reject);
    exited.then((code) => reject(new Error(`${BIN} serve exited with ${code} before listening`)));
    // Keep reading stderr to its end, so the server never blocks on a full pipe.
    createInterface({ input: child.stderr }).on("line", (line) => {
      if (!line.startsWith("listening on ")) return;
      clearTimeout(timer);
      resolve({ addr: line.slice("listening on ".length).trim(), stop });
    });
  });
}

/** A client of `addr`, with short reconnect delays; disconnected after the tests. */
function newClient(addr, options = {}) {
  const client = new DuplexClient(`ws://${addr}/ws`, {
    WebSocket,
    minReconnectDelay: 100,
    maxReconnectDelay: 400,
    timeout: 5000,
    ...options,
  });
  clients.push(client);
  return client;
}

/** The next `type` event of `target` that satisfies `accept`. */
function next(target, type, accept = () => true) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      target.removeEventListener(type, listener);
      reject(new Error(`no ${type} event within ${STEP_TIMEOUT} ms`));
    }, STEP_TIMEOUT);
    const listener = (event) => {
      if (!accept(event)) return;
      clearTimeout(timer);
      target.removeEventListener(type, listener);
      resolve(event);
    };
    target.addEventListener(type, listener);
  });
}

/** Connects `client` and resolves with its open event. */
function open(client) {
  const opened = next(client, "open");
  client.connect();
  return opened;
}

/** Subscribes and resolves with the subscription once the server confirmed it. */
async function subscribe(client, channel) {
  const sub = client.subscribe(channel);
  await next(sub, "subscribed");
  return sub;
}

after(async () => {
  for (const client of clients) client.disconnect();
  for (const child of servers) child.kill("SIGKILL");
});

describe("against duplex serve", () => {
  test("connect, subscribe, publish, receive, history and errors", async () => {
    const server = await startServer();
    try {
      const reader = newClient(server.addr);
      const writer = newClient(server.addr);
      const opened = await open(reader);
      assert.match(opened.clientId, /\S/);
      assert.equal(opened.user, "");
      assert.equal(reader.state, "connected");
      const sub = await subscribe(reader, "chat:sdk-basic");
      assert.equal(sub.state, "subscribed");
      await open(writer);

      const received = next(sub, "publication");
      const result = await writer.publish("chat:sdk-basic", { text: "hello" });
      assert.equal(result.offset, 1);
      assert.match(result.epoch, /\S/);
      const pub = await received;
      assert.deepEqual(pub.data, { text: "hello" });
      assert.deepEqual([pub.channel, pub.offset, pub.epoch], ["chat:sdk-basic", 1, result.epoch]);
      assert.equal(pub.info.client, writer.clientId);

      const binary = next(sub, "publication");
      await writer.publish("chat:sdk-basic", new Uint8Array([0, 1, 2, 255]));
      assert.deepEqual((await binary).data, new Uint8Array([0, 1, 2, 255]));

      const history = await writer.history("chat:sdk-basic", { limit: 10 });
      assert.deepEqual(
        history.publications.map((p) => p.data),
        [{ text: "hello" }, new Uint8Array([0, 1, 2, 255])],
      );
      assert.equal(history.offset, 2);

      await assert.rejects(writer.publish("prices:BTC-USD", { price: 1 }), {
        name: "DuplexError",
        code: 103,
      });
      await assert.rejects(writer.presence("news"), { code: 108 });
      await writer.ping();
    } finally {
      await server.stop();
    }
  });

  test("presence with the connect info, join and leave", async () => {
    const server = await startServer();
    try {
      const ann = newClient(server.addr, { info: { name: "Ann" } });
      const bob = newClient(server.addr, { info: { name: "Bob" } });
      await open(ann);
      const annSub = await subscribe(ann, "chat:sdk-presence");
      await open(bob);
      const joined = next(annSub, "join");
      const bobSub = await subscribe(bob, "chat:sdk-presence");
      const join = await joined;
      assert.equal(join.info.client, bob.clientId);
      assert.deepEqual(join.info.info, { name: "Bob" });

      const presence = await bobSub.presence();
      const names = Object.values(presence.clients).map((c) => c.info?.name);
      assert.deepEqual(names.sort(), ["Ann", "Bob"]);
      assert.deepEqual(Object.keys(presence.clients).sort(), [ann.clientId, bob.clientId].sort());
      assert.deepEqual(await annSub.presenceStats(), { clients: 2, users: 1 });

      const left = next(annSub, "leave");
      bobSub.unsubscribe();
      assert.equal((await left).info.client, bob.clientId);
      assert.deepEqual(await annSub.presenceStats(), { clients: 1, users: 1 });
    } finally {
      await server.stop();
    }
  });

  test("after a server restart: reconnect, resubscribe, learn what was lost", async () => {
    let server = await startServer();
    const client = newClient(server.addr);
    const states = [];
    client.addEventListener("state", (e) => states.push(e.state));
    try {
      await open(client);
      const sub = await subscribe(client, "chat:sdk-restart");
      const received = next(sub, "publication");
      await client.publish("chat:sdk-restart", { n: 1 });
      const first = await received;
      assert.deepEqual([sub.epoch, sub.offset], [first.epoch, 1]);

      const closed = next(client, "close");
      await server.stop();
      const close = await closed;
      assert.equal(close.code, 1006);
      assert.equal(close.wasClean, false);
      assert.equal(close.reconnect, true);
      assert.ok(close.delay >= 0 && close.delay <= 100, `first delay ${close.delay} ms`);
      // Let at least one attempt fail against the closed port.
      await next(client, "state", (e) => e.state === "reconnecting");

      const resubscribed = next(sub, "subscribed");
      const unrecovered = next(sub, "unrecovered");
      server = await startServer(server.addr);
      await next(client, "open");
      const subscribed = await resubscribed;
      // The memory broker lost the stream: a new epoch, nothing to recover.
      assert.deepEqual([subscribed.wasRecovering, subscribed.recovered], [true, false]);
      const lost = await unrecovered;
      assert.notEqual(lost.epoch, first.epoch);

      const live = next(sub, "publication");
      const result = await client.publish("chat:sdk-restart", { n: 2 });
      const pub = await live;
      assert.deepEqual(pub.data, { n: 2 });
      assert.deepEqual([pub.epoch, pub.offset], [result.epoch, result.offset]);
      assert.equal(sub.state, "subscribed");

      const session = states.filter((s, i) => s !== states[i - 1]);
      assert.deepEqual(session.slice(0, 3), ["connecting", "connected", "reconnecting"]);
      assert.deepEqual(session.slice(-2), ["connecting", "connected"]);
      assert.ok(
        states.filter((s) => s === "reconnecting").length >= 2,
        `a failed attempt while the server was down: ${states}`,
      );
    } finally {
      client.disconnect();
      await server.stop();
    }
  });
});
