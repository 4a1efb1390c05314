// The status page shows the node's sys:stats: its connections (the page's own at least, and
// more when another client connects), the node in the per-node table, and a chart.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import {
  launchBrowser,
  newPage,
  startHub,
  texts,
  waitConnected,
  waitFor,
  withScreenshot,
} from "./harness.mjs";

let hub;
let browser;

before(async () => {
  hub = await startHub({ name: "status-node" });
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await hub?.stop();
});

const number = (text) => Number(String(text).replace(/[^0-9.\-]/g, ""));

async function reads(page, selector, check, what) {
  let seen;
  return waitFor(`${selector} ${what}`, async () => {
    seen = (await page.textContent(selector))?.trim();
    return check(number(seen)) && seen;
  }).catch((error) => {
    throw new Error(`${error.message} (last seen: ${JSON.stringify(seen)})`);
  });
}

test("the status page shows live node statistics and a chart", { timeout: 90000 }, async () => {
  const page = await newPage(browser.browser);
  const other = await newPage(browser.browser);
  await withScreenshot(page, "status", async () => {
    await page.goto(`${hub.base}/status`);
    await waitConnected(page);
    await reads(page, "#connections", (n) => n >= 1, "to count the page's own connection");
    await reads(page, "#subscriptions", (n) => n >= 1, "to count the page's subscription to sys:stats");
    await reads(page, "#out-rate", (n) => n > 0, "to show messages going out");
    await waitFor("the node in #nodes", async () =>
      (await texts(page, "#nodes")).some((t) => t.includes("status-node")),
    );
    assert.equal(await page.locator("canvas#chart, svg#chart").count(), 1, "a chart");

    // One more connection (the plain page, in a raw room): the counts follow.
    await other.goto(`${hub.base}/plain?autoconnect=1`);
    await waitFor("the plain page to connect", async () =>
      (await texts(other, "#log .event")).some((t) => /open/i.test(t)),
    );
    await reads(page, "#connections", (n) => n >= 2, "to count the new connection");
    await reads(page, "#channels", (n) => n >= 2, "to count sys:stats and the room");
    assert.deepEqual(page.problems, []);
  });
  await other.context().close();
  await page.context().close();
});
