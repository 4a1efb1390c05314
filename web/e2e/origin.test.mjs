// A page served from an origin the hub does not allow cannot open a WebSocket to it: the
// hub refuses the upgrade with 403, which the browser reports as a failed connection
// (error, then close 1006, never open). The same page from an allowed origin connects.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { launchBrowser, newPage, servePage, startHub, waitFor, withScreenshot } from "./harness.mjs";

// The page opens ws://<hub>/rooms/lobby (given as ?ws=) and records what the socket does.
const PAGE = `<!doctype html>
<meta charset="utf-8">
<title>origin probe</title>
<style>body { font: 16px sans-serif; margin: 2em; } li { margin: .2em 0; }</style>
<h1>WebSocket from <span id="origin"></span></h1>
<p>to <code id="target"></code></p>
<ul id="events"></ul>
<script>
 window.events = [];
 const target = new URLSearchParams(location.search).get("ws");
 document.getElementById("origin").textContent = location.origin;
 document.getElementById("target").textContent = target;
 function note(what) {
  window.events.push(what);
  const li = document.createElement("li");
  li.textContent = what;
  document.getElementById("events").append(li);
 }
 const ws = new WebSocket(target);
 ws.onopen = () => { note("open"); ws.send("hello from " + location.origin); };
 ws.onerror = () => note("error");
 ws.onclose = (e) => note("close " + e.code);
</script>
`;

let hub;
let browser;
let allowed;
let refused;

before(async () => {
  allowed = await servePage(PAGE);
  refused = await servePage(PAGE);
  // Localhost origins are allowed by default: switch that off, allow one origin by name.
  hub = await startHub({
    name: "origin",
    args: ["--set", "allow_localhost_origins=false", "--allowed-origin", allowed.origin],
  });
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await hub?.stop();
  await allowed?.close();
  await refused?.close();
});

async function probe(page, server) {
  const target = `ws://127.0.0.1:${hub.port}/rooms/lobby`;
  await page.goto(`${server.origin}/probe?ws=${encodeURIComponent(target)}`);
  await waitFor(
    `the socket of ${server.origin} to open or close`,
    async () => {
      const events = await page.evaluate(() => window.events);
      return events.some((e) => e === "open" || e.startsWith("close"));
    },
    { ms: 10000 },
  );
}

test("a page from a disallowed origin is refused (403: error, close 1006, never open)", { timeout: 60000 }, async () => {
  const page = await newPage(browser.browser);
  await withScreenshot(page, "origin-refused", async () => {
    const before = await hub.metric("duplex_origin_refusals_total");
    await probe(page, refused);
    // Nothing more may happen after the close.
    await new Promise((r) => setTimeout(r, 500));
    assert.deepEqual(await page.evaluate(() => window.events), ["error", "close 1006"]);
    assert.equal(
      await hub.metric("duplex_origin_refusals_total"),
      before + 1,
      "the hub counted exactly one refusal for the page's Origin",
    );
    // Chromium's console says why the handshake failed.
    assert.ok(
      page.problems.some((p) => /WebSocket/.test(p) && /\b403\b/.test(p)),
      `a console error for the 403 handshake: ${JSON.stringify(page.problems)}`,
    );
  });
  await page.context().close();
});

test("the same page from the allowed origin opens", { timeout: 60000 }, async () => {
  const page = await newPage(browser.browser);
  await withScreenshot(page, "origin-allowed", async () => {
    const before = await hub.metric("duplex_origin_refusals_total");
    await probe(page, allowed);
    assert.deepEqual(await page.evaluate(() => window.events), ["open"]);
    await waitFor("the hub to count the page's connection on /rooms", async () =>
      (await hub.metric('duplex_connections{dialect="rooms"}')) === 1,
    );
    assert.equal(await hub.metric("duplex_origin_refusals_total"), before);
  });
  await page.context().close();
});
