// Status demo: subscribes to `sys:stats`, where every node publishes its statistics once a
// second, keeps the latest report per node, and charts the summed rates of the last 60 s.
import { createClient, el } from "./common.js";

const NODE_TIMEOUT = 5000; // ms: a node silent this long is dropped
const WINDOW = 60000; // ms shown in the chart

const $ = (id) => document.getElementById(id);
const totals = {
  connections: $("connections"),
  channels: $("channels"),
  subscriptions: $("subscriptions"),
  in_rate: $("in-rate"),
  out_rate: $("out-rate"),
};
const nodeCount = $("node-count");
const waiting = $("waiting");
const tbody = document.querySelector("#nodes tbody");
const canvas = $("chart");

/** node id -> {stats, seen: local ms of the last report} */
const nodes = new Map();
/** One sample per second: {t, out, in} (null rates while nothing is known). */
const series = [];
let everHeard = false;
let connectedSince = null;

function num(value) {
  return typeof value === "number" && Number.isFinite(value) && value >= 0 ? value : 0;
}

/** Rates with one decimal below 100, whole numbers above; plain digits so they parse back. */
function rate(value) {
  if (value >= 100 || Number.isInteger(value)) return String(Math.round(value));
  return value.toFixed(1);
}

function count(value) {
  return new Intl.NumberFormat(undefined).format(value);
}

function uptime(secs) {
  secs = Math.floor(num(secs));
  const d = Math.floor(secs / 86400);
  const h = Math.floor((secs % 86400) / 3600);
  const m = Math.floor((secs % 3600) / 60);
  const s = secs % 60;
  if (d) return `${d} d ${h} h`;
  if (h) return `${h} h ${m} min`;
  if (m) return `${m} min ${s} s`;
  return `${s} s`;
}

function sums() {
  const t = { connections: 0, channels: 0, subscriptions: 0, in_rate: 0, out_rate: 0 };
  for (const { stats } of nodes.values()) {
    for (const key of Object.keys(t)) t[key] += num(stats[key]);
  }
  return t;
}

function render() {
  const t = sums();
  totals.connections.textContent = String(t.connections);
  totals.channels.textContent = String(t.channels);
  totals.subscriptions.textContent = String(t.subscriptions);
  totals.in_rate.textContent = rate(t.in_rate);
  totals.out_rate.textContent = rate(t.out_rate);
  nodeCount.textContent = nodes.size === 1 ? "on 1 node" : nodes.size ? `on ${nodes.size} nodes` : "no nodes";

  const list = [...nodes.entries()].sort(([a], [b]) => a.localeCompare(b));
  if (!list.length) {
    const tr = el("tr", "empty");
    const td = el("td", "", everHeard ? "No node has reported in the last 5 s." : "Waiting for the first report…");
    td.colSpan = 9;
    tr.append(td);
    tbody.replaceChildren(tr);
    return;
  }
  tbody.replaceChildren(
    ...list.map(([id, { stats }]) => {
      const tr = el("tr");
      tr.dataset.node = id;
      const name = el("td", "node", id);
      if (id === client.node) {
        name.append(" ", el("span", "tag", "this page"));
      }
      tr.append(
        name,
        el("td", "num", count(num(stats.connections))),
        el("td", "num wide", count(num(stats.channels))),
        el("td", "num wide", count(num(stats.subscriptions))),
        el("td", "num wide", rate(num(stats.in_rate))),
        el("td", "num", rate(num(stats.out_rate))),
        el("td", "num wider", count(num(stats.messages_in))),
        el("td", "num wider", count(num(stats.messages_out))),
        el("td", "num wider", uptime(stats.uptime_secs)),
      );
      return tr;
    }),
  );
}

// ---- chart ----

function color(name, fallback) {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim() || fallback;
}

/** The smallest "nice" grid step (1, 2, 5 × 10^n, and 25 × 10^n from 25 up) at or above `raw`. */
function niceStep(raw) {
  if (raw <= 1) return 1;
  const exp = Math.pow(10, Math.floor(Math.log10(raw)));
  for (const m of exp >= 10 ? [1, 2, 2.5, 5, 10] : [1, 2, 5, 10]) {
    if (m * exp >= raw) return m * exp;
  }
  return 10 * exp;
}

function draw() {
  const dpr = window.devicePixelRatio || 1;
  const width = canvas.clientWidth;
  const height = canvas.clientHeight;
  if (!width || !height) return;
  if (canvas.width !== Math.round(width * dpr) || canvas.height !== Math.round(height * dpr)) {
    canvas.width = Math.round(width * dpr);
    canvas.height = Math.round(height * dpr);
  }
  const ctx = canvas.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, width, height);

  const text = color("--muted", "#667");
  const grid = color("--border", "#ddd");
  const out = color("--accent", "#4f46e5");
  const inn = color("--up", "#16a34a");
  const font = getComputedStyle(document.body).fontFamily;

  const pad = { left: 44, right: 8, top: 10, bottom: 22 };
  const w = width - pad.left - pad.right;
  const h = height - pad.top - pad.bottom;
  const now = Date.now();
  const x = (t) => pad.left + ((t - (now - WINDOW)) / WINDOW) * w;

  let max = 0;
  for (const s of series) {
    if (s.out !== null) max = Math.max(max, s.out, s.in);
  }
  const GRID = 4;
  const step = niceStep(max / GRID);
  const top = step * GRID;
  const y = (v) => pad.top + h - (v / top) * h;

  ctx.font = `11px ${font}`;
  ctx.lineWidth = 1;
  ctx.strokeStyle = grid;
  ctx.fillStyle = text;
  ctx.textAlign = "right";
  ctx.textBaseline = "middle";
  for (let i = 0; i <= GRID; i++) {
    const v = step * i;
    const yy = Math.round(y(v)) + 0.5;
    ctx.beginPath();
    ctx.moveTo(pad.left, yy);
    ctx.lineTo(pad.left + w, yy);
    ctx.stroke();
    ctx.fillText(rate(v), pad.left - 6, yy);
  }
  ctx.textBaseline = "top";
  for (const [secs, align] of [[60, "left"], [30, "center"], [0, "right"]]) {
    ctx.textAlign = align;
    ctx.fillText(secs ? `−${secs} s` : "now", x(now - secs * 1000), pad.top + h + 6);
  }

  if (!series.some((s) => s.out !== null)) {
    ctx.textAlign = "center";
    ctx.textBaseline = "middle";
    ctx.fillText("Waiting for statistics…", pad.left + w / 2, pad.top + h / 2);
    return;
  }

  ctx.save();
  ctx.beginPath();
  ctx.rect(pad.left, pad.top - 2, w, h + 4);
  ctx.clip();
  const runs = []; // consecutive known samples; gaps (no data) break the line
  let run = [];
  for (const s of series) {
    if (s.out === null) {
      if (run.length) runs.push(run);
      run = [];
    } else {
      run.push(s);
    }
  }
  if (run.length) runs.push(run);

  for (const r of runs) {
    if (r.length === 1) {
      // a lone sample (just after connecting, or between gaps): a dot, not an invisible line
      for (const [key, fill] of [["in", inn], ["out", out]]) {
        ctx.beginPath();
        ctx.arc(x(r[0].t), y(r[0][key]), 2.5, 0, 2 * Math.PI);
        ctx.fillStyle = fill;
        ctx.fill();
      }
      continue;
    }
    // filled area under the out-rate
    ctx.beginPath();
    ctx.moveTo(x(r[0].t), y(0));
    for (const s of r) ctx.lineTo(x(s.t), y(s.out));
    ctx.lineTo(x(r[r.length - 1].t), y(0));
    ctx.closePath();
    ctx.globalAlpha = 0.14;
    ctx.fillStyle = out;
    ctx.fill();
    ctx.globalAlpha = 1;
    for (const [key, stroke, widthPx] of [["in", inn, 1.5], ["out", out, 2]]) {
      ctx.beginPath();
      r.forEach((s, i) => (i ? ctx.lineTo(x(s.t), y(s[key])) : ctx.moveTo(x(s.t), y(s[key]))));
      ctx.strokeStyle = stroke;
      ctx.lineWidth = widthPx;
      ctx.lineJoin = "round";
      ctx.stroke();
    }
  }
  ctx.restore();
}

new ResizeObserver(draw).observe(canvas);
matchMedia("(prefers-color-scheme: dark)").addEventListener("change", draw);
matchMedia(`(resolution: ${window.devicePixelRatio || 1}dppx)`).addEventListener("change", draw);

// ---- data ----

const client = createClient();
client.connect();
client.addEventListener("state", (event) => {
  connectedSince = event.state === "connected" ? Date.now() : null;
});

const sub = client.subscribe("sys:stats", { recover: false });
sub.addEventListener("publication", (event) => {
  const stats = event.data;
  if (!stats || typeof stats !== "object" || typeof stats.node !== "string" || !stats.node) return;
  nodes.set(stats.node, { stats, seen: Date.now() });
  waiting.hidden = true;
  if (!everHeard) {
    everHeard = true;
    tick(); // the first point of the chart now, not at the next second
  } else {
    render();
  }
});
sub.addEventListener("error", (event) => {
  waiting.hidden = false;
  waiting.replaceChildren(el("strong", "", "Cannot read statistics. "),
    `Subscribing to sys:stats failed: ${(event.error && (event.error.message || event.error.code)) || "error"}`);
});

function tick() {
  const now = Date.now();
  for (const [id, node] of nodes) {
    if (now - node.seen > NODE_TIMEOUT) nodes.delete(id);
  }
  const t = sums();
  series.push(nodes.size ? { t: now, out: t.out_rate, in: t.in_rate } : { t: now, out: null, in: null });
  while (series.length && series[0].t < now - WINDOW - 1000) series.shift();
  if (!everHeard && connectedSince !== null && now - connectedSince > 2500) waiting.hidden = false;
  render();
  draw();
}

render();
draw();
setInterval(tick, 1000);
