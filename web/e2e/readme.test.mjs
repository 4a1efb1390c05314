// The example of web/README.md, verbatim, runs in the browser: the page is the README's html
// block, served by a site of its own in front of the hub (/duplex.js and the WebSocket are the
// hub's, through it), and two copies of it chat with each other.
import assert from "node:assert/strict";
import fs from "node:fs";
import http from "node:http";
import net from "node:net";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { after, before, test } from "node:test";
import { launchBrowser, newPage, startHub, texts, waitFor, withScreenshot } from "./harness.mjs";

const README = path.join(path.dirname(fileURLToPath(import.meta.url)), "..", "README.md");

/** The first ```html block of the README. */
function readmeExample() {
  const text = fs.readFileSync(README, "utf8");
  const match = text.match(/```html\n([\s\S]*?)```/);
  assert.ok(match, `no html example in ${README}`);
  return match[1];
}

let hub;
let browser;

before(async () => {
  hub = await startHub({ name: "readme-node" });
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await hub?.stop();
});

/**
 * The example as a site of its own would serve it: an HTTP server on another loopback port
 * answers `/` with the example and passes everything else, WebSocket upgrades included, to
 * the hub, as a reverse proxy in front of it would. Returns {base, close()}.
 */
async function exampleSite(html) {
  const hubPort = new URL(hub.base).port;
  const server = http.createServer(async (req, res) => {
    if (req.url === "/") {
      res.writeHead(200, { "content-type": "text/html; charset=utf-8" });
      res.end(html);
      return;
    }
    const upstream = await fetch(`${hub.base}${req.url}`);
    res.writeHead(upstream.status, { "content-type": upstream.headers.get("content-type") });
    res.end(Buffer.from(await upstream.arrayBuffer()));
  });
  server.on("upgrade", (req, socket, head) => {
    const upstream = net.connect(hubPort, "127.0.0.1", () => {
      const lines = [`${req.method} ${req.url} HTTP/1.1`];
      for (let i = 0; i < req.rawHeaders.length; i += 2) {
        lines.push(`${req.rawHeaders[i]}: ${req.rawHeaders[i + 1]}`);
      }
      upstream.write(`${lines.join("\r\n")}\r\n\r\n`);
      upstream.write(head);
      upstream.pipe(socket).pipe(upstream);
    });
    upstream.on("error", () => socket.destroy());
    socket.on("error", () => upstream.destroy());
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    base: `http://127.0.0.1:${server.address().port}`,
    close: () => {
      server.closeAllConnections();
      return new Promise((resolve) => server.close(resolve));
    },
  };
}

async function examplePage(site) {
  const page = await newPage(browser.browser);
  await page.goto(`${site.base}/`);
  let state;
  await waitFor("the example to connect", async () => {
    state = ((await page.textContent("#state")) ?? "").trim();
    return state === "connected";
  }).catch((error) => {
    error.message += ` (#state: ${JSON.stringify(state)}; page problems: ${page.problems})`;
    throw error;
  });
  return page;
}

test("the web/README.md example connects, publishes and receives", { timeout: 60000 }, async () => {
  const site = await exampleSite(readmeExample());
  const ann = await examplePage(site);
  const other = await examplePage(site);
  await withScreenshot(ann, "readme-example", async () => {
    await ann.fill("#text", "hello from the README");
    await ann.click("#compose button");
    for (const page of [ann, other]) {
      await waitFor("the message in #messages", async () =>
        (await texts(page, "#messages li")).includes("Ann: hello from the README"),
      );
    }
    assert.equal(await ann.inputValue("#text"), "", "cleared once the publish was answered");
    const seen = await texts(other, "#messages li");
    assert.equal(seen.filter((t) => t === "Ann: hello from the README").length, 1, `${seen}`);
    assert.deepEqual(ann.problems, []);
    assert.deepEqual(other.problems, []);
  });
  await other.context().close();
  await ann.context().close();
  await site.close();
});
