// A chat page on node A while A crashes: the page shows it is reconnecting, reconnects when
// A is back on its port, and recovers, once and in order, what node B published meanwhile.
// A and B share the run's Redis, where history outlives A.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import {
  chatMessages as messages,
  Hub,
  launchBrowser,
  newPage,
  screenshot,
  showsMessages as shows,
  texts,
  waitConnected,
  waitFor,
  withScreenshot,
} from "./harness.mjs";

const ROOM = "lobby";
const CHANNEL = `chat:${ROOM}`;
let a;
let b;
let browser;

before(async () => {
  a = await new Hub({ name: "restart-a", redis: true }).start();
  b = await new Hub({ name: "restart-b", redis: true }).start();
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await a?.stop();
  await b?.stop();
});

test("the page shows reconnecting while its node is down, then recovers what was published meanwhile", { timeout: 120000 }, async () => {
  const page = await newPage(browser.browser);
  await withScreenshot(page, "restart", async () => {
    await page.goto(`${a.base}/chat?nick=Ann&room=${ROOM}&reconnect_min=200&reconnect_max=2000`);
    await waitConnected(page);
    await page.fill("#text", "before the crash");
    await page.press("#text", "Enter");
    const before = ["Ann: before the crash"];
    await shows(page, before);

    // Every state the page shows from now on, with its text.
    await page.evaluate(() => {
      const el = document.getElementById("state");
      window.e2eStates = [];
      const note = () => {
        const last = window.e2eStates.at(-1);
        const now = { state: el.dataset.state, text: el.textContent.trim() };
        if (!last || last.state !== now.state || last.text !== now.text) window.e2eStates.push(now);
      };
      new MutationObserver(note).observe(el, {
        attributes: true,
        childList: true,
        subtree: true,
        characterData: true,
      });
    });

    const killed = await a.kill9();
    assert.equal(killed.signal, "SIGKILL");
    const shown = await waitFor("the page to show that it is reconnecting", async () => {
      const states = await page.evaluate(() => window.e2eStates);
      return states.find((s) => s.state === "reconnecting" && /Reconnecting in \d+ s/i.test(s.text));
    });
    assert.match(shown.text, /Reconnecting in \d+ s/i);
    await screenshot(page, "restart-reconnecting");

    // Published on node B (through its HTTP API) while A is down.
    const sent = [];
    for (let i = 1; i <= 3; i++) {
      const text = `while A was down #${i}`;
      await b.publish(CHANNEL, { nick: "Bob", text });
      sent.push(`Bob: ${text}`);
    }
    // A few more reconnect attempts fail while A stays down; the page shows none of it.
    await new Promise((r) => setTimeout(r, 1500));
    assert.notEqual(await page.getAttribute("#state", "data-state"), "connected");
    assert.deepEqual(await messages(page), before);

    await a.restart();
    await waitConnected(page, 20000);
    const all = [...before, ...sent];
    await shows(page, all);
    await new Promise((r) => setTimeout(r, 1000));
    assert.deepEqual(await messages(page), all, "each message exactly once, in order");
    assert.deepEqual(await texts(page, "#messages .notice"), [], "recovered: no 'could not recover' notice");
    const states = (await page.evaluate(() => window.e2eStates)).map((s) => s.state);
    assert.equal(states.at(-1), "connected");
    assert.ok(!states.slice(0, -1).includes("connected"), `not connected while A was down: ${states}`);
    assert.deepEqual(page.problems.filter((p) => !/WebSocket|ERR_CONNECTION_REFUSED/.test(p)), []);
  });
  await page.context().close();
});
