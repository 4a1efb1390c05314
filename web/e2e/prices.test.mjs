// The price board follows the node's simulated feed (--demo-feed): every symbol's row counts
// updates, its price changes, and rows flash `up` or `down`.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { launchBrowser, newPage, startHub, waitConnected, waitFor, withScreenshot } from "./harness.mjs";

const SYMBOLS = ["BTC-USD", "ETH-USD", "SOL-USD", "EUR-USD", "GBP-USD", "AAPL", "MSFT", "NVDA"];
let hub;
let browser;

before(async () => {
  hub = await startHub({ name: "prices", args: ["--demo-feed"] });
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await hub?.stop();
});

/** Every row: symbol -> {updates, price, change}. */
async function board(page) {
  return page.$$eval("#prices tr[data-symbol]", (rows) =>
    Object.fromEntries(
      rows.map((r) => [
        r.dataset.symbol,
        {
          updates: Number(r.dataset.updates ?? 0),
          price: r.querySelector(".price")?.textContent.trim(),
          change: r.querySelector(".change")?.textContent.trim(),
        },
      ]),
    ),
  );
}

const number = (text) => Number(String(text).replace(/[^0-9.+\-eE]/g, ""));

test("the price board updates from the demo feed", { timeout: 90000 }, async () => {
  const page = await newPage(browser.browser);
  await withScreenshot(page, "prices", async () => {
    await page.goto(`${hub.base}/prices`);
    await waitConnected(page);
    // Record every class change of a row: the up/down flashes are brief.
    await page.evaluate(() => {
      window.e2eFlashes = { up: 0, down: 0 };
      new MutationObserver((records) => {
        for (const r of records) {
          if (r.target.matches?.("tr[data-symbol]")) {
            if (r.target.classList.contains("up")) window.e2eFlashes.up += 1;
            if (r.target.classList.contains("down")) window.e2eFlashes.down += 1;
          }
        }
      }).observe(document.getElementById("prices"), {
        attributes: true,
        attributeFilter: ["class"],
        subtree: true,
      });
    });

    const first = await waitFor("a row per symbol, each with an update", async () => {
      const rows = await board(page);
      return SYMBOLS.every((s) => rows[s]?.updates >= 1) && rows;
    });
    assert.deepEqual(Object.keys(first).sort(), [...SYMBOLS].sort());
    for (const s of SYMBOLS) {
      assert.ok(number(first[s].price) > 0, `${s}: a positive price, got ${JSON.stringify(first[s].price)}`);
      const change = JSON.stringify(first[s].change);
      assert.ok(Number.isFinite(number(first[s].change)), `${s}: a numeric change, got ${change}`);
    }

    // About 4 updates per symbol per second: after 3 s every row has moved on.
    await new Promise((r) => setTimeout(r, 3000));
    const later = await board(page);
    for (const s of SYMBOLS) {
      assert.ok(
        later[s].updates >= first[s].updates + 3,
        `${s}: data-updates went from ${first[s].updates} to ${later[s].updates} in 3 s`,
      );
    }
    const moved = SYMBOLS.filter((s) => later[s].price !== first[s].price);
    assert.ok(moved.length >= 4, `prices changed for ${moved.join(", ") || "no symbol"}`);
    const flashes = await waitFor("rows to flash up and down", async () => {
      const f = await page.evaluate(() => window.e2eFlashes);
      return f.up > 0 && f.down > 0 && f;
    });
    assert.ok(flashes.up > 0 && flashes.down > 0);

    // The board shows what the feed publishes: the last price in BTC-USD's history is one
    // the page has shown (history keeps 1 publication).
    const shown = new Set();
    const watch = setInterval(async () => {
      try {
        shown.add((await board(page))["BTC-USD"].price);
      } catch {
        // the page is closing
      }
    }, 20);
    try {
      await waitFor("BTC-USD's latest published price on the page", async () => {
        const h = await hub.api("history/prices:BTC-USD");
        const price = h.publications.at(-1)?.data?.price;
        return [...shown].some((text) => Math.abs(number(text) - price) < 0.01);
      });
    } finally {
      clearInterval(watch);
    }
    assert.deepEqual(page.problems, []);
  });
  await page.context().close();
});
