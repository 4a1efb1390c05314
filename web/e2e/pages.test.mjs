// The index page links to every demo, each of which loads all it needs without an error;
// the chat page asks for a nickname when none is given in the address.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { launchBrowser, newPage, startHub, texts, waitConnected, withScreenshot } from "./harness.mjs";

let hub;
let browser;

before(async () => {
  hub = await startHub({ name: "pages" });
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await hub?.stop();
});

/** Records every response of 400 or more (the browser's own /favicon.ico request aside). */
function failedResponses(page) {
  const failed = [];
  page.on("response", (res) => {
    if (res.status() >= 400 && new URL(res.url()).pathname !== "/favicon.ico") {
      failed.push(`${res.status()} ${res.url()}`);
    }
  });
  page.on("requestfailed", (req) => {
    // WebSockets show here when the page goes away; pages and their files must not.
    if (req.resourceType() !== "websocket") failed.push(`failed ${req.url()}`);
  });
  return failed;
}

test("the index links to every page, and each loads without errors", { timeout: 90000 }, async () => {
  const page = await newPage(browser.browser);
  const failed = failedResponses(page);
  await withScreenshot(page, "index", async () => {
    await page.goto(`${hub.base}/`);
    const links = await page.$$eval("a[href]", (as) => [...new Set(as.map((a) => new URL(a.href).pathname))]);
    for (const route of ["/chat", "/prices", "/status", "/plain"]) {
      assert.ok(links.includes(route), `the index links to ${route}: ${links}`);
    }
    for (const route of ["/chat", "/prices", "/status", "/plain"]) {
      await page.goto(`${hub.base}/`);
      await Promise.all([page.waitForURL(`${hub.base}${route}`), page.click(`a[href="${route}"] >> nth=0`)]);
      await page.waitForLoadState("load");
      // The SDK pages get connected (the chat page only after a nickname).
      if (route === "/prices" || route === "/status") await waitConnected(page);
      if (route === "/plain") {
        assert.equal(await page.inputValue("#url"), `ws://127.0.0.1:${hub.port}/rooms/lobby`);
      }
    }
    await page.goto(`${hub.base}/`);
    assert.deepEqual(failed, [], "every request of every page succeeded");
    assert.deepEqual(page.problems, []);
  });
  await page.context().close();
});

test("the chat page asks for a nickname, then joins", { timeout: 60000 }, async () => {
  const page = await newPage(browser.browser);
  const failed = failedResponses(page);
  await withScreenshot(page, "chat-login", async () => {
    await page.goto(`${hub.base}/chat`);
    await page.waitForSelector("#login #nick", { state: "visible" });
    await page.fill("#nick", "Dee");
    await page.click('#login [type="submit"]');
    await waitConnected(page);
    await page.waitForSelector('#members li:has-text("Dee")');
    assert.deepEqual(await texts(page, "#members li"), ["Dee"]);
    assert.equal(await page.isVisible("#login"), false, "the form is gone once joined");
    assert.deepEqual(failed, []);
    assert.deepEqual(page.problems, []);
  });
  await page.context().close();
});
