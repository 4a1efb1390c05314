// Shared helpers of the end-to-end tests (web/e2e/*.test.mjs): hub nodes, headless Chromium,
// screenshots, the HTTP API. Run the tests through web/e2e/run.sh, which builds nothing,
// starts a real redis-server and sets the variables read here:
//
//   E2E_DUPLEX_BIN     the duplex binary
//   E2E_REDIS_URL      redis://127.0.0.1:PORT of the run's redis-server
//   E2E_WORK           a scratch directory: hub logs, and pids/<PID> for every process
//                      started here (run.sh's exit trap kills those still listed)
//   E2E_SCREENSHOTS    where each test saves <test>.png
//   E2E_CHROMIUM       the browser (default /usr/bin/chromium, Debian's package)
//
// Every process started here is stopped by PID: by the tests' `after` hooks, and when this
// process exits for any other reason, by an exit handler (SIGKILL), and then by run.sh.
// The first hub a test file starts is checked to serve exactly the files of web/ (they are
// compiled into the binary): a binary older than the pages fails with "rebuild it".

import { spawn } from "node:child_process";
import fs from "node:fs";
import http from "node:http";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

/** The API key every hub of the tests accepts (`Authorization: apikey KEY`). */
export const API_KEY = "e2e-test-api-key-0123456789";

/** Chromium's flags: headless on a machine without GPU, sandbox or network beyond loopback. */
export const CHROMIUM_ARGS = [
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

function required(name) {
  const value = process.env[name];
  if (!value) {
    throw new Error(`${name} is not set: run the browser tests through web/e2e/run.sh`);
  }
  return value;
}

const env = {
  get bin() {
    const bin = required("E2E_DUPLEX_BIN");
    if (!fs.existsSync(bin)) throw new Error(`E2E_DUPLEX_BIN: no duplex binary at ${bin}`);
    return bin;
  },
  get redis() {
    return required("E2E_REDIS_URL");
  },
  get work() {
    return required("E2E_WORK");
  },
  get screenshots() {
    return required("E2E_SCREENSHOTS");
  },
  chromium: process.env.E2E_CHROMIUM || "/usr/bin/chromium",
};

// --- process bookkeeping ---------------------------------------------------------------------
const live = new Map(); // pid -> description

function register(pid, what) {
  live.set(pid, what);
  fs.mkdirSync(path.join(env.work, "pids"), { recursive: true });
  fs.writeFileSync(path.join(env.work, "pids", String(pid)), `${what}\n`);
}

function unregister(pid) {
  live.delete(pid);
  fs.rmSync(path.join(env.work, "pids", String(pid)), { force: true });
}

function killAll() {
  for (const pid of live.keys()) {
    try {
      process.kill(pid, "SIGKILL");
    } catch {
      // already gone
    }
  }
}
process.on("exit", killAll);
// A signal ends the process without "exit" handlers unless it is handled.
for (const [signal, status] of [
  ["SIGINT", 130],
  ["SIGTERM", 143],
  ["SIGHUP", 129],
]) {
  process.once(signal, () => {
    killAll();
    process.exit(status);
  });
}

/** An error that ends a `waitFor` at once (the thing waited for can no longer happen). */
export class Fatal extends Error {}

/**
 * Polls `check` every `every` ms until it returns a truthy value, which is returned; throws
 * `what` (with the last error, if `check` threw) after `ms`, or at once if `check` throws a
 * `Fatal` error.
 */
export async function waitFor(what, check, { ms = 15000, every = 50 } = {}) {
  const deadline = Date.now() + ms;
  let last;
  for (;;) {
    try {
      const value = await check();
      if (value) return value;
      last = undefined;
    } catch (error) {
      if (error instanceof Fatal) throw error;
      last = error;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${ms} ms waiting for ${what}${last ? `: ${last.message}` : ""}`);
    }
    await sleep(every);
  }
}

// --- hub nodes -------------------------------------------------------------------------------
let hubCount = 0;
let assetsChecked = false;

const WEB = fileURLToPath(new URL("..", import.meta.url));

/** The files of web/ the hub embeds, each with the route it is served at. */
function webFiles() {
  const files = [];
  for (const name of fs.readdirSync(WEB)) {
    if (name.endsWith(".html")) files.push([name, name === "index.html" ? "/" : `/${name.slice(0, -5)}`]);
    else if (/\.(css|js|d\.ts)$/.test(name)) files.push([name, `/${name}`]);
  }
  for (const name of fs.readdirSync(path.join(WEB, "js"))) {
    if (name.endsWith(".js")) files.push([`js/${name}`, `/js/${name}`]);
  }
  return files;
}

/**
 * The pages are compiled into the binary: one built before web/ last changed tests old
 * pages. Fails with what to do when any file served differs from the one on disk.
 */
async function checkAssets(base) {
  const stale = [];
  for (const [file, route] of webFiles()) {
    const res = await fetch(base + route, { signal: AbortSignal.timeout(5000) });
    const body = Buffer.from(await res.arrayBuffer());
    if (res.status !== 200 || !body.equals(fs.readFileSync(path.join(WEB, file)))) {
      stale.push(`web/${file} (${route}: ${res.status})`);
    }
  }
  if (stale.length) {
    throw new Error(
      `${env.bin} does not serve the web/ files of this tree: ${stale.join(", ")}; ` +
        "rebuild it (cargo build --release -p duplex-cli)",
    );
  }
}

/** One `duplex serve` process; `restart()` starts it again on the same port. */
export class Hub {
  /**
   * @param {object} options
   * @param {string} options.name   node name (also names the log file)
   * @param {string[]} [options.args]  more `duplex serve` arguments
   * @param {boolean} [options.redis]  join the run's Redis (--broker)
   */
  constructor({ name, args = [], redis = false }) {
    this.name = name;
    this.args = args;
    this.redis = redis;
    this.port = 0;
    this.child = null;
    this.starts = 0;
  }

  get base() {
    return `http://127.0.0.1:${this.port}`;
  }

  get pid() {
    return this.child?.pid;
  }

  /** The node's log (stderr) of its latest start. */
  log() {
    return fs.existsSync(this.logFile) ? fs.readFileSync(this.logFile, "utf8") : "";
  }

  async start() {
    if (this.child) throw new Error(`hub ${this.name} is already running`);
    this.starts += 1;
    hubCount += 1;
    this.logFile = path.join(env.work, `hub-${this.name}-${this.starts}-${hubCount}.log`);
    const args = [
      "serve",
      "--listen",
      `127.0.0.1:${this.port}`,
      "--node-name",
      this.name,
      "--api-key",
      API_KEY,
      "--set",
      "shutdown.drain_secs=0",
      "--set",
      "shutdown.timeout_secs=5",
    ];
    if (this.redis) args.push("--broker", env.redis);
    args.push(...this.args);
    const fd = fs.openSync(this.logFile, "w");
    const child = spawn(env.bin, args, { stdio: ["ignore", "ignore", fd] });
    fs.closeSync(fd);
    let spawnError = null;
    child.on("error", (error) => {
      spawnError = error;
    });
    this.child = child;
    this.exited = new Promise((resolve) => {
      child.on("exit", (code, signal) => {
        unregister(child.pid);
        resolve({ code, signal });
      });
    });
    if (child.pid === undefined) {
      await sleep(10);
      this.child = null;
      throw new Error(`could not start ${env.bin}: ${spawnError?.message ?? "no pid"}`);
    }
    register(child.pid, `duplex serve (${this.name})`);
    try {
      await this.#ready();
    } catch (error) {
      await this.stop(2000);
      throw error;
    }
    return this;
  }

  async #ready() {
    let exited = null;
    this.exited.then((status) => {
      exited = status;
    });
    const port = await waitFor(
      `hub ${this.name}'s "listening on" line in ${this.logFile}`,
      () => {
        if (exited) {
          throw new Fatal(
            `hub ${this.name} exited (${JSON.stringify(exited)}); its log:\n${this.log()}`,
          );
        }
        const m = /listening on 127\.0\.0\.1:(\d+)/.exec(this.log());
        return m && Number(m[1]);
      },
      { ms: 20000 },
    );
    if (this.port !== 0 && port !== this.port) {
      throw new Error(`hub ${this.name} listens on ${port}, expected ${this.port}`);
    }
    this.port = port;
    await waitFor(`${this.base}/readyz to answer 200`, async () => {
      if (exited) throw new Fatal(`hub ${this.name} exited; its log:\n${this.log()}`);
      const res = await fetch(`${this.base}/readyz`, { signal: AbortSignal.timeout(2000) });
      return res.status === 200;
    });
    if (!assetsChecked) {
      await checkAssets(this.base);
      assetsChecked = true;
    }
    return this;
  }

  /** SIGKILL, as a crash would; waits for the exit. */
  async kill9() {
    const child = this.child;
    if (!child) throw new Error(`hub ${this.name} is not running`);
    process.kill(child.pid, "SIGKILL");
    const status = await this.exited;
    this.child = null;
    return status;
  }

  /** SIGTERM, then SIGKILL after `ms`; returns the exit status (null when not running). */
  async stop(ms = 10000) {
    const child = this.child;
    if (!child) return null;
    this.child = null;
    try {
      process.kill(child.pid, "SIGTERM");
    } catch {
      // already gone
    }
    const timer = setTimeout(() => {
      try {
        process.kill(child.pid, "SIGKILL");
      } catch {
        // already gone
      }
    }, ms);
    const status = await this.exited;
    clearTimeout(timer);
    return status;
  }

  /** Starts the node again, on the port it had. */
  async restart() {
    return this.start();
  }

  /** POST /api/publish; returns the result (the publication's position). */
  async publish(channel, data) {
    const res = await fetch(`${this.base}/api/publish`, {
      method: "POST",
      headers: { authorization: `apikey ${API_KEY}`, "content-type": "application/json" },
      body: JSON.stringify({ channel, data }),
      signal: AbortSignal.timeout(5000),
    });
    const body = await res.json();
    if (res.status !== 200) {
      throw new Error(`POST /api/publish on ${this.name}: ${res.status} ${JSON.stringify(body)}`);
    }
    return body.result;
  }

  /** GET an /api/ path; returns the result. */
  async api(apiPath) {
    const res = await fetch(`${this.base}/api/${apiPath}`, {
      headers: { authorization: `apikey ${API_KEY}` },
      signal: AbortSignal.timeout(5000),
    });
    const body = await res.json();
    if (res.status !== 200) throw new Error(`GET /api/${apiPath}: ${res.status} ${JSON.stringify(body)}`);
    return body.result;
  }

  /** The value of one Prometheus sample of /metrics (0 when absent). */
  async metric(sample) {
    const res = await fetch(`${this.base}/metrics`, { signal: AbortSignal.timeout(5000) });
    const text = await res.text();
    for (const line of text.split("\n")) {
      if (line.startsWith(`${sample} `)) return Number(line.slice(sample.length + 1));
    }
    return 0;
  }
}

/** Starts a hub node (see Hub); stop it in an `after` hook. */
export async function startHub(options) {
  return new Hub(options).start();
}

// --- the browser -----------------------------------------------------------------------------

/**
 * Headless Chromium (Debian's), with its PID recorded. Returns {browser, close()}.
 */
export async function launchBrowser() {
  if (!fs.existsSync(env.chromium)) {
    throw new Error(
      `${env.chromium} not found: install Debian's chromium package ` +
        "(scripts/test.sh setup does), or point E2E_CHROMIUM at a Chromium",
    );
  }
  const server = await chromium.launchServer({
    executablePath: env.chromium,
    headless: true,
    args: CHROMIUM_ARGS,
    host: "127.0.0.1",
    timeout: 30000,
    handleSIGINT: false,
    handleSIGTERM: false,
    handleSIGHUP: false,
  });
  const pid = server.process().pid;
  register(pid, "chromium");
  server.process().on("exit", () => unregister(pid));
  let browser;
  try {
    browser = await chromium.connect(server.wsEndpoint(), { timeout: 30000 });
  } catch (error) {
    await server.kill();
    throw error;
  }
  return {
    browser,
    async close() {
      await browser.close().catch(() => {});
      const closed = new Promise((resolve) => {
        if (server.process().exitCode !== null || server.process().signalCode !== null) resolve();
        else server.process().once("exit", resolve);
      });
      await server.close().catch(() => {});
      const timer = setTimeout(() => server.kill().catch(() => {}), 10000);
      await closed;
      clearTimeout(timer);
    },
  };
}

/**
 * A page in a fresh browser context (its own cookies and storage, like another user). The
 * page's console errors and uncaught exceptions are kept in `page.problems`.
 */
export async function newPage(browser) {
  const context = await browser.newContext({ viewport: { width: 1100, height: 800 } });
  context.setDefaultTimeout(15000);
  const page = await context.newPage();
  page.problems = [];
  page.on("pageerror", (error) => page.problems.push(`uncaught: ${error.message}`));
  page.on("console", (msg) => {
    if (msg.type() !== "error") return;
    const where = msg.location()?.url;
    // A browser asks every site for /favicon.ico by itself; the pages do not ask for it.
    if (where && new URL(where).pathname === "/favicon.ico") return;
    page.problems.push(`console.error: ${msg.text()}${where ? ` (${where})` : ""}`);
  });
  return page;
}

/** Saves the page to E2E_SCREENSHOTS/<name>.png (never fails the test itself). */
export async function screenshot(page, name) {
  fs.mkdirSync(env.screenshots, { recursive: true });
  const file = path.join(env.screenshots, `${name}.png`);
  try {
    await page.screenshot({ path: file, fullPage: true, timeout: 10000 });
  } catch (error) {
    console.error(`# screenshot ${file} failed: ${error.message}`);
  }
  return file;
}

/**
 * Runs `body(page)` and saves the page's screenshot as `name` afterwards, whether `body`
 * passed or failed; on failure the page's console problems are added to the error.
 */
export async function withScreenshot(page, name, body) {
  try {
    await body(page);
  } catch (error) {
    if (page.problems?.length) error.message += `\npage problems:\n  ${page.problems.join("\n  ")}`;
    throw error;
  } finally {
    await screenshot(page, name);
  }
}

/** The texts of every element matching `selector` in the page. */
export async function texts(page, selector) {
  return page.$$eval(selector, (els) => els.map((e) => e.textContent.trim()));
}

// --- a second web origin ---------------------------------------------------------------------

/**
 * An HTTP server on a free loopback port serving `html` at every path: a page of another
 * origin than the hub's. Returns {port, origin, close()}.
 */
export async function servePage(html) {
  const server = http.createServer((req, res) => {
    res.writeHead(200, { "content-type": "text/html; charset=utf-8", "cache-control": "no-store" });
    res.end(html);
  });
  await new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", resolve);
  });
  const { port } = server.address();
  return {
    port,
    origin: `http://127.0.0.1:${port}`,
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/**
 * Waits until the page's `#state` says `connected`; on timeout the error tells what it said.
 */
export async function waitConnected(page, ms = 15000) {
  try {
    await page.waitForSelector('#state[data-state="connected"]', { timeout: ms });
  } catch (error) {
    const state = await page
      .$eval("#state", (el) => `data-state=${el.dataset.state} text=${JSON.stringify(el.textContent.trim())}`)
      .catch(() => "no #state element");
    throw new Error(`${page.url()}: not connected within ${ms} ms (${state})`);
  }
}

// --- the chat page -----------------------------------------------------------------------------

/** The chat messages a chat page shows, as "nick: text". */
export async function chatMessages(page) {
  return page.$$eval("#messages .message", (els) =>
    els.map((e) => {
      const part = (cls) => e.querySelector(cls)?.textContent.trim();
      return `${part(".nick")}: ${part(".text")}`;
    }),
  );
}

/** Waits until a chat page shows exactly `expected` (as from `chatMessages`). */
export async function showsMessages(page, expected) {
  let seen;
  await waitFor(`#messages to show ${JSON.stringify(expected)}`, async () => {
    seen = await chatMessages(page);
    return JSON.stringify(seen) === JSON.stringify(expected);
  }).catch((error) => {
    throw new Error(`${error.message} (last seen: ${JSON.stringify(seen)})`);
  });
}
