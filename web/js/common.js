// Shared helpers of the demo pages: a DuplexClient configured from the query string and the
// connection state badge (#state) every SDK page shows.
import { DuplexClient } from "/duplex.js";

/** The page's query parameters. */
export const params = new URLSearchParams(location.search);

/** A positive number from the query string, or undefined when absent or invalid. */
export function positiveParam(name) {
  const raw = params.get(name);
  if (raw === null || raw.trim() === "") return undefined;
  const value = Number(raw);
  return Number.isFinite(value) && value > 0 ? value : undefined;
}

// The SDK's reconnect delays when none are given (web/duplex.js).
const DEFAULT_MIN_DELAY = 500;
const DEFAULT_MAX_DELAY = 20000;

/**
 * A DuplexClient for this page's server (ws[s]://host/ws), with `reconnect_min` and
 * `reconnect_max` (ms) from the query string, its state shown in #state. Not yet connected.
 */
export function createClient(options = {}) {
  const opts = { name: "duplex-demo", ...options };
  const min = positiveParam("reconnect_min");
  const max = positiveParam("reconnect_max");
  if (min !== undefined) opts.minReconnectDelay = min;
  if (max !== undefined) opts.maxReconnectDelay = max;
  // The SDK needs min <= max: one bound given alone moves the other default out of its way.
  const lo = opts.minReconnectDelay ?? DEFAULT_MIN_DELAY;
  const hi = opts.maxReconnectDelay ?? DEFAULT_MAX_DELAY;
  if (hi < lo) {
    if (min === undefined) opts.minReconnectDelay = hi;
    else opts.maxReconnectDelay = lo;
  }
  const client = new DuplexClient(null, opts);
  const badge = document.getElementById("state");
  if (badge) showState(client, badge);
  return client;
}

const LABELS = {
  connecting: "Connecting…",
  connected: "Connected",
  reconnecting: "Reconnecting…",
  disconnected: "Disconnected",
};

/**
 * Keeps `el` showing the client's state: data-state plus readable text, with a live
 * countdown ("Reconnecting in 3 s") while a reconnect is scheduled.
 */
export function showState(client, el) {
  let timer = null;
  const render = () => {
    const state = client.state;
    el.dataset.state = state;
    let text = LABELS[state] ?? state;
    if (state === "reconnecting" && typeof client.reconnectAt === "number") {
      const secs = Math.ceil((client.reconnectAt - Date.now()) / 1000);
      text = secs > 0 ? `Reconnecting in ${secs} s` : "Reconnecting…";
    }
    if (el.textContent !== text) el.textContent = text;
    el.title = client.node ? `${text} (node ${client.node})` : text;
  };
  const update = () => {
    render();
    if (client.state === "reconnecting" && timer === null) {
      timer = setInterval(render, 250);
    } else if (client.state !== "reconnecting" && timer !== null) {
      clearInterval(timer);
      timer = null;
    }
  };
  client.addEventListener("state", update);
  client.addEventListener("open", render);
  update();
}

/** Creates an element with a class and text (always textContent: data is never parsed as HTML). */
export function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

/** "14:03:27" (or "14:03" without seconds) in the viewer's locale. */
export function clock(ms, seconds = true) {
  const options = { hour: "2-digit", minute: "2-digit" };
  if (seconds) options.second = "2-digit";
  return new Date(ms).toLocaleTimeString(undefined, options);
}
