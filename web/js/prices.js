// Live prices demo: one subscription per symbol (`prices:<SYMBOL>`), fed by
// `duplex serve --demo-feed`. The SDK resubscribes and recovers after reconnects.
import { createClient, el, clock } from "./common.js";

// Symbol, name and the decimals the feed quotes it in.
const SYMBOLS = [
  ["BTC-USD", "Bitcoin", 2],
  ["ETH-USD", "Ether", 2],
  ["SOL-USD", "Solana", 3],
  ["EUR-USD", "Euro / US dollar", 5],
  ["GBP-USD", "Pound / US dollar", 5],
  ["AAPL", "Apple", 2],
  ["MSFT", "Microsoft", 2],
  ["NVDA", "NVIDIA", 2],
];
const NO_FEED_AFTER = 3000; // ms without any update before the "no feed" hint shows
const TREND_POINTS = 60;
const FLASH_MS = 600; // as long as the flash animation of style.css

const tbody = document.querySelector("#prices tbody");
const noFeed = document.getElementById("no-feed");
const totalEl = document.getElementById("total-updates");
const rateEl = document.getElementById("update-rate");
const lastEl = document.getElementById("last-update");

const rows = new Map();
let total = 0;
let lastAny = 0;
let watchSince = Date.now();
const arrivals = []; // arrival times of the last second, for the rate

const formats = new Map();
function format(value, decimals) {
  let f = formats.get(decimals);
  if (!f) {
    f = new Intl.NumberFormat(undefined, { minimumFractionDigits: decimals, maximumFractionDigits: decimals });
    formats.set(decimals, f);
  }
  return f.format(value);
}

function svgEl(tag) {
  return document.createElementNS("http://www.w3.org/2000/svg", tag);
}

for (const [symbol, name, decimals] of SYMBOLS) {
  const tr = document.createElement("tr");
  tr.dataset.symbol = symbol;
  tr.dataset.updates = "0";

  const sym = el("th", "sym", symbol);
  sym.scope = "row";
  sym.append(el("span", "name", name));
  const price = el("td", "price num", "–");
  const change = el("td", "change num", "");
  const pct = el("td", "pct num wide", "");
  const spark = el("td", "spark wide");
  const svg = svgEl("svg");
  svg.setAttribute("viewBox", `0 0 ${TREND_POINTS - 1} 20`);
  svg.setAttribute("preserveAspectRatio", "none");
  svg.setAttribute("aria-hidden", "true");
  const line = svgEl("polyline");
  svg.append(line);
  spark.append(svg);
  const updates = el("td", "updates num wide", "0");
  const updated = el("td", "updated num wide", "–");
  tr.append(sym, price, change, pct, spark, updates, updated);
  tbody.append(tr);

  rows.set(symbol, { decimals, tr, price, change, pct, line, updates, updated, count: 0, last: null, trend: [], flashTimer: null });
}

function drawTrend(row) {
  const points = row.trend;
  if (points.length < 2) {
    row.line.setAttribute("points", "");
    return;
  }
  const min = Math.min(...points);
  const max = Math.max(...points);
  const span = max - min || 1;
  const offset = TREND_POINTS - points.length;
  row.line.setAttribute(
    "points",
    points.map((p, i) => `${offset + i},${(19 - ((p - min) / span) * 18).toFixed(2)}`).join(" "),
  );
  const first = points[0];
  const last = points[points.length - 1];
  row.tr.classList.toggle("rising", last > first);
  row.tr.classList.toggle("falling", last < first);
}

function flash(row, direction) {
  const { tr } = row;
  tr.classList.remove("up", "down");
  void tr.offsetWidth; // restart the CSS animation
  tr.classList.add(direction);
  clearTimeout(row.flashTimer);
  row.flashTimer = setTimeout(() => tr.classList.remove("up", "down"), FLASH_MS);
}

/** Shows a price update; `live` is false for the last price loaded from history. */
function apply(symbol, data, live) {
  const row = rows.get(symbol);
  if (!row || !data || typeof data.price !== "number" || !Number.isFinite(data.price)) return;
  const decimals = row.decimals;
  const previous = row.last;
  const change = typeof data.change === "number" && Number.isFinite(data.change)
    ? data.change
    : previous !== null ? data.price - previous : 0;

  row.price.textContent = format(data.price, decimals);
  const arrow = change > 0 ? "▲" : change < 0 ? "▼" : "•";
  const sign = change > 0 ? "+" : change < 0 ? "-" : "";
  row.change.textContent = `${arrow} ${sign}${format(Math.abs(change), decimals)}`;
  const base = data.price - change;
  const pct = base ? (change / base) * 100 : 0;
  row.pct.textContent = `${sign}${format(Math.abs(pct), 3)}%`;
  for (const cell of [row.change, row.pct]) {
    cell.classList.toggle("pos", change > 0);
    cell.classList.toggle("neg", change < 0);
  }
  row.last = data.price;
  row.trend.push(data.price);
  if (row.trend.length > TREND_POINTS) row.trend.shift();
  drawTrend(row);

  const when = Number.isFinite(data.time) ? data.time : Date.now();
  row.updated.textContent = clock(when);
  row.tr.classList.remove("stale");

  if (!live) return;
  row.count += 1;
  row.tr.dataset.updates = String(row.count);
  row.updates.textContent = String(row.count);
  if (change !== 0) flash(row, change > 0 ? "up" : "down");

  total += 1;
  const now = Date.now();
  lastAny = now;
  arrivals.push(now);
  totalEl.textContent = String(total);
  lastEl.textContent = clock(when);
  noFeed.hidden = true;
}

const client = createClient();
client.connect();

for (const symbol of rows.keys()) {
  const sub = client.subscribe(`prices:${symbol}`);
  let primed = false;
  sub.addEventListener("publication", (event) => apply(symbol, event.data, true));
  sub.addEventListener("subscribed", async () => {
    if (primed) return;
    primed = true;
    // The namespace keeps the latest price: show it at once instead of a dash.
    try {
      const result = await sub.history({ limit: 1 });
      const latest = (result.publications || []).at(-1);
      if (latest && rows.get(symbol).last === null) apply(symbol, latest.data, false);
    } catch {
      // No history (expired or disabled): the next live update fills the row.
    }
  });
  sub.addEventListener("unrecovered", () => {
    rows.get(symbol).tr.classList.add("stale");
  });
}

client.addEventListener("state", (event) => {
  if (event.state === "connected") watchSince = Date.now();
});

setInterval(() => {
  const now = Date.now();
  while (arrivals.length && arrivals[0] <= now - 1000) arrivals.shift();
  rateEl.textContent = String(arrivals.length);
  const quiet = now - Math.max(lastAny, watchSince);
  noFeed.hidden = !(client.state === "connected" && quiet >= NO_FEED_AFTER);
}, 250);
