// The plain-WebSocket page (/plain, `new WebSocket` only, no SDK) talks to a raw room: two
// browser contexts in /rooms/lobby hear each other, and a disconnect closes cleanly.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { launchBrowser, newPage, startHub, texts, waitFor, withScreenshot } from "./harness.mjs";

let hub;
let browser;

before(async () => {
  hub = await startHub({ name: "plain" });
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await hub?.stop();
});

/** Waits until #log has an entry of `kind` (event, in, out) matching `pattern`; returns its text. */
async function logEntry(page, kind, pattern) {
  return waitFor(`a .${kind} entry matching ${pattern} in #log`, async () => {
    const entries = await texts(page, `#log .${kind}`);
    return entries.find((e) => pattern.test(e));
  });
}

async function send(page, text) {
  await page.fill("#message", text);
  await page.click("#send");
}

test("the plain page exchanges messages with another client of the room, and disconnects cleanly", { timeout: 90000 }, async () => {
  const ann = await newPage(browser.browser);
  const bob = await newPage(browser.browser);
  await withScreenshot(ann, "plain", async () => {
    await withScreenshot(bob, "plain-peer", async () => {
      for (const page of [ann, bob]) {
        await page.goto(`${hub.base}/plain?autoconnect=1`);
        assert.equal(await page.inputValue("#url"), `ws://127.0.0.1:${hub.port}/rooms/lobby`);
        await logEntry(page, "event", /open/i);
      }
      await waitFor("both pages' connections on the hub", async () =>
        (await hub.metric('duplex_connections{dialect="rooms"}')) === 2,
      );

      await send(ann, "hello from Ann");
      await logEntry(ann, "out", /hello from Ann/);
      await logEntry(bob, "in", /hello from Ann/);
      await send(bob, "hello from Bob");
      await logEntry(bob, "out", /hello from Bob/);
      await logEntry(ann, "in", /hello from Bob/);

      // Each message arrived once, and not back at its sender (rooms.echo_to_sender is off).
      await new Promise((r) => setTimeout(r, 300));
      assert.deepEqual(
        (await texts(ann, "#log .in")).filter((e) => /hello/.test(e)).length,
        1,
        "Ann received Bob's message once and not her own",
      );
      assert.equal((await texts(bob, "#log .in")).filter((e) => /hello/.test(e)).length, 1);
      assert.ok((await texts(ann, "#log .in")).every((e) => !/hello from Ann/.test(e)));

      await ann.click("#disconnect");
      const closed = await logEntry(ann, "event", /close/i);
      assert.match(closed, /\b100[05]\b/, `the close event shows code 1000 or 1005: ${closed}`);
      await waitFor("the hub to see Ann's connection closed", async () =>
        (await hub.metric('duplex_connections{dialect="rooms"}')) === 1,
      );
      // Bob stays connected and still hears the room (a non-browser publisher: the HTTP API).
      await hub.publish("rooms:lobby", "hello from the HTTP API");
      await logEntry(bob, "in", /hello from the HTTP API/);
      assert.deepEqual(ann.problems, []);
      assert.deepEqual(bob.problems, []);
    });
  });
  await ann.context().close();
  await bob.context().close();
});
