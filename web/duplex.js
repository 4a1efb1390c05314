// duplex.js: the browser (and Node) client of the duplex hub's `duplex.v1` protocol
// (docs/protocol.md). A dependency-free ES module; types in duplex.d.ts, usage in README.md.

/** The WebSocket subprotocol this client speaks. */
export const PROTOCOL = "duplex.v1";

/** Close code the SDK uses when it drops a connection it will retry (dead, timed out). */
export const CLOSE_RETRY = 3000;
/** Close code the SDK uses when it gives up after a connect error retrying cannot fix. */
export const CLOSE_GIVE_UP = 3500;

const DEFAULTS = {
  minReconnectDelay: 500,
  maxReconnectDelay: 20000,
  timeout: 10000,
  stableAfter: 5000,
  random: Math.random,
  debug: false,
};

/** Silence after the server's ping interval before the SDK checks the connection itself. */
const PING_MARGIN = 5000;

/** Close codes after which reconnecting cannot help (besides 3500-3999 and 4500-4999). */
const FINAL_CLOSE_CODES = new Set([1002, 1003, 1007, 1008, 1009, 1010]);

/** Error codes worth retrying: internal error (100) and too many requests (111). */
const TEMPORARY_ERRORS = new Set([100, 111]);

const UNAUTHORIZED = 101;
const TOKEN_EXPIRED = 109;
/** The server's close code for an expired token. */
const CLOSE_TOKEN_EXPIRED = 4003;

/** The most bytes of UTF-8 a WebSocket close reason may have (RFC 6455 section 5.5). */
const MAX_CLOSE_REASON = 123;

// Hooks the client calls on its subscriptions; symbols keep them out of the public API.
const SUBSCRIBED = Symbol("subscribed");
const PUBLICATION = Symbol("publication");
const PRESENCE = Symbol("presence");
const RESET = Symbol("reset");
const FAILED = Symbol("failed");
const RECOVER_FROM = Symbol("recoverFrom");

/**
 * An error from the hub (`code` is its numeric error code, docs/protocol.md section 7) or
 * from the SDK (`code` is a string: "timeout", "disconnected", "transport", "token",
 * "bad_frame").
 */
export class DuplexError extends Error {
  /**
   * @param {number|string} code
   * @param {string} message
   * @param {{cause?: unknown}} [options]
   */
  constructor(code, message, options) {
    super(message, options);
    this.name = "DuplexError";
    /** @type {number|string} */
    this.code = code;
  }
}

/**
 * The reconnect delay before attempt `attempt` (0-based): full jitter,
 * `random() * min(max, min * 2 ** attempt)`.
 * @param {number} attempt
 * @param {number} min
 * @param {number} max
 * @param {() => number} [random]
 * @returns {number} milliseconds
 */
export function backoff(attempt, min, max, random = Math.random) {
  return random() * Math.min(max, min * 2 ** attempt);
}

/**
 * Whether a connection closed with `code` may be retried (docs/protocol.md section 5).
 * @param {number} code
 * @returns {boolean}
 */
export function mayReconnect(code) {
  if (FINAL_CLOSE_CODES.has(code)) return false;
  return !((code >= 3500 && code <= 3999) || (code >= 4500 && code <= 4999));
}

/**
 * A binary frame: u32 big-endian header length, the JSON header, the payload.
 * @param {object} header
 * @param {ArrayBuffer|ArrayBufferView} payload
 * @returns {Uint8Array}
 */
export function encodeBinaryFrame(header, payload) {
  const head = new TextEncoder().encode(JSON.stringify(header));
  const body = toBytes(payload);
  const frame = new Uint8Array(4 + head.length + body.length);
  new DataView(frame.buffer).setUint32(0, head.length);
  frame.set(head, 4);
  frame.set(body, 4 + head.length);
  return frame;
}

/**
 * Splits a binary frame into its header object, with the payload as `data`.
 * @param {ArrayBuffer|ArrayBufferView} frame
 * @returns {Record<string, unknown> & {data: Uint8Array}}
 * @throws {DuplexError} "bad_frame" when the frame is malformed
 */
export function decodeBinaryFrame(frame) {
  const bytes = toBytes(frame);
  if (bytes.length < 4) throw new DuplexError("bad_frame", "binary frame shorter than 4 bytes");
  const length = new DataView(bytes.buffer, bytes.byteOffset, 4).getUint32(0);
  if (length < 2 || 4 + length > bytes.length) {
    throw new DuplexError("bad_frame", `binary frame header length ${length} does not fit`);
  }
  const header = parseObject(new TextDecoder().decode(bytes.subarray(4, 4 + length)));
  return { ...header, data: bytes.subarray(4 + length) };
}

/**
 * `reason` cut to at most 123 bytes of UTF-8 at a character boundary: a longer reason makes
 * `WebSocket.close` throw.
 * @param {string} reason
 * @returns {string}
 */
function closeReason(reason) {
  const text = String(reason);
  let bytes = 0;
  let end = 0;
  for (const char of text) {
    const point = char.codePointAt(0);
    // A lone surrogate is sent as U+FFFD: 3 bytes.
    bytes += point < 0x80 ? 1 : point < 0x800 ? 2 : point < 0x10000 ? 3 : 4;
    if (bytes > MAX_CLOSE_REASON) return text.slice(0, end);
    end += char.length;
  }
  return text;
}

/** @param {ArrayBuffer|ArrayBufferView} data */
function toBytes(data) {
  if (data instanceof Uint8Array) return data;
  if (ArrayBuffer.isView(data)) {
    return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  }
  return new Uint8Array(data);
}

function isBinary(data) {
  return data instanceof ArrayBuffer || ArrayBuffer.isView(data);
}

/** @param {string} text */
function parseObject(text) {
  let value;
  try {
    value = JSON.parse(text);
  } catch (error) {
    throw new DuplexError("bad_frame", `frame is not JSON: ${error.message}`);
  }
  if (value === null || typeof value !== "object" || Array.isArray(value)) {
    throw new DuplexError("bad_frame", "frame is not a JSON object");
  }
  return value;
}

/** @param {string|ArrayBuffer|ArrayBufferView} data a text or binary WebSocket message */
function decodeMessage(data) {
  return typeof data === "string" ? parseObject(data) : decodeBinaryFrame(data);
}

/** @param {string} text */
function base64ToBytes(text) {
  return Uint8Array.from(atob(text), (c) => c.charCodeAt(0));
}

/** A publication of a push, a subscribe reply or a history reply, as the events carry it. */
function publication(channel, raw) {
  const data = raw.data_b64 === undefined ? raw.data : base64ToBytes(raw.data_b64);
  return { channel, data, offset: raw.offset, epoch: raw.epoch, info: raw.info, key: raw.key };
}

/** Dispatches a plain Event of `type` carrying `props` as own properties. */
function emit(target, type, props = {}) {
  target.dispatchEvent(Object.assign(new Event(type), props));
}

/** Defines `on<name>` properties that behave like the browser's event handler properties. */
function defineHandlers(cls, names) {
  for (const name of names) {
    const slot = Symbol(`on${name}`);
    Object.defineProperty(cls.prototype, `on${name}`, {
      get() {
        return this[slot]?.handler ?? null;
      },
      set(handler) {
        if (!this[slot]) {
          const entry = { handler: null };
          this.addEventListener(name, (event) => entry.handler?.call(this, event));
          this[slot] = entry;
        }
        this[slot].handler = typeof handler === "function" ? handler : null;
      },
    });
  }
}

function defaultUrl() {
  const location = globalThis.location;
  if (!location) throw new TypeError("no url given and no page location to derive it from");
  return `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`;
}

/**
 * One channel the client is subscribed to; created by `DuplexClient.subscribe`. It survives
 * reconnects: the client resubscribes and recovers what was missed from the last position.
 *
 * Events: "subscribed", "publication", "unrecovered", "join", "leave", "error",
 * "unsubscribed" (see duplex.d.ts), each also as an `on<name>` property.
 */
export class Subscription extends EventTarget {
  #client;
  #channel;
  #recover;
  #links;
  /** @type {'subscribing'|'subscribed'|'unsubscribed'} */
  #state = "subscribing";
  #recoverable = false;
  /** @type {string|undefined} */
  #epoch;
  /** @type {number|undefined} */
  #offset;

  /**
   * @param {DuplexClient} client
   * @param {string} channel
   * @param {{recover?: boolean}} options
   * @param {{detach: () => void, message: (pub: object) => void}} links back to the client
   */
  constructor(client, channel, options, links) {
    super();
    this.#client = client;
    this.#channel = channel;
    this.#recover = options.recover ?? true;
    this.#links = links;
  }

  /** The channel name. */
  get channel() {
    return this.#channel;
  }

  /** "subscribing" (also while the client is offline), "subscribed" or "unsubscribed". */
  get state() {
    return this.#state;
  }

  /** The epoch of the last stream position seen (undefined without history). */
  get epoch() {
    return this.#epoch;
  }

  /** The offset of the last stream position seen (undefined without history). */
  get offset() {
    return this.#offset;
  }

  /**
   * Publishes to this channel; see `DuplexClient.publish`.
   * @param {unknown} data
   * @param {{key?: string}} [options]
   */
  publish(data, options) {
    return this.#client.publish(this.#channel, data, options);
  }

  /** Who is subscribed to this channel, on every node. */
  presence() {
    return this.#client.presence(this.#channel);
  }

  /** How many clients and users are subscribed to this channel. */
  presenceStats() {
    return this.#client.presenceStats(this.#channel);
  }

  /**
   * The channel's history; see `DuplexClient.history`.
   * @param {{limit?: number, since?: {offset: number, epoch: string}}} [options]
   */
  history(options) {
    return this.#client.history(this.#channel, options);
  }

  /** Leaves the channel for good; no event of this subscription follows "unsubscribed". */
  unsubscribe() {
    if (this.#state === "unsubscribed") return;
    this.#state = "unsubscribed";
    this.#links.detach();
    emit(this, "unsubscribed");
  }

  /** The position to recover from on resubscribe, if recovery applies. */
  [RECOVER_FROM]() {
    if (!this.#recover || !this.#recoverable || this.#epoch === undefined) return undefined;
    return { offset: this.#offset, epoch: this.#epoch };
  }

  /**
   * Handles the subscribe reply: recovered publications first, then the new position. A
   * handler that unsubscribes or disconnects stops it; the position stays at the last
   * publication delivered, so a later resubscribe recovers the rest.
   */
  [SUBSCRIBED](result, wasRecovering) {
    this.#state = "subscribed";
    this.#recoverable = result.recoverable === true;
    const missed = result.publications ?? [];
    emit(this, "subscribed", {
      recovered: result.recovered,
      wasRecovering,
      recoverable: this.#recoverable,
      epoch: result.epoch,
      offset: result.offset,
      publications: missed.length,
    });
    for (const raw of missed) {
      if (this.#state !== "subscribed") return;
      this[PUBLICATION](raw);
    }
    if (this.#state !== "subscribed") return;
    if (result.epoch !== undefined) {
      this.#epoch = result.epoch;
      this.#offset = result.offset;
    }
    const lost = wasRecovering && result.recovered === false;
    if (lost && this.#state === "subscribed") {
      emit(this, "unrecovered", { epoch: this.#epoch, offset: this.#offset });
    }
  }

  /** Delivers a publication unless it repeats one already delivered. */
  [PUBLICATION](raw) {
    if (this.#state !== "subscribed") return; // belongs to an earlier subscription
    if (typeof raw.offset === "number" && raw.epoch !== undefined) {
      if (raw.epoch === this.#epoch && raw.offset <= this.#offset) return;
      this.#epoch = raw.epoch;
      this.#offset = raw.offset;
    }
    const pub = publication(this.#channel, raw);
    emit(this, "publication", pub);
    this.#links.message(pub);
  }

  /** A join or leave push. */
  [PRESENCE](kind, info) {
    if (this.#state === "subscribed") emit(this, kind, { info });
  }

  /** The connection is gone: subscribe again once it is back. */
  [RESET]() {
    if (this.#state === "subscribed") this.#state = "subscribing";
  }

  /** The server refused the subscription for good. */
  [FAILED](error) {
    // Unsubscribed before the "error" event, so that its handler's unsubscribe() is a no-op.
    this.#state = "unsubscribed";
    emit(this, "error", { error });
    emit(this, "unsubscribed");
  }
}

defineHandlers(Subscription, [
  "subscribed",
  "publication",
  "unrecovered",
  "join",
  "leave",
  "error",
  "unsubscribed",
]);

/**
 * A connection to a duplex hub that reconnects by itself.
 *
 * Events: "open", "message", "close", "error", "state" (see duplex.d.ts), each also as an
 * `on<name>` property.
 */
export class DuplexClient extends EventTarget {
  #url;
  #options;
  /** @type {'disconnected'|'connecting'|'connected'|'reconnecting'} */
  #state = "disconnected";
  /** @type {number|null} */
  #reconnectAt = null;
  #clientId = null;
  #user = null;
  #node = null;

  /** Whether the app wants a connection: from connect() until disconnect() or a final close. */
  #wanted = false;
  /** Cleared by a server's `reconnect: false` or a connect refusal a retry cannot fix. */
  #retryAllowed = true;
  /** Bumped by every connection attempt and stop, so a stale async step can tell. */
  #generation = 0;
  #attempt = 0;
  #socket = null;
  #timers = { reconnect: null, connect: null, watchdog: null, stable: null };
  #lastSeen = 0;

  #lastId = 0;
  /** Commands awaiting their reply, in the order issued; unsent ones wait for a connection. */
  #pending = new Map();
  /** @type {Map<string, Subscription>} */
  #subs = new Map();
  /** Subscriptions waiting to retry after a temporary error: sub -> {timer, attempt}. */
  #retries = new Map();

  /**
   * @param {string|null} [url] "ws[s]://host/ws"; by default derived from the page's location
   * @param {object} [options] see duplex.d.ts, `DuplexClientOptions`
   */
  constructor(url, options = {}) {
    super();
    this.#options = { ...DEFAULTS, ...options };
    this.#options.WebSocket ??= globalThis.WebSocket;
    if (typeof this.#options.WebSocket !== "function") {
      throw new TypeError("no WebSocket implementation: pass options.WebSocket");
    }
    const { minReconnectDelay: min, maxReconnectDelay: max } = this.#options;
    if (!(min > 0 && max >= min)) {
      throw new RangeError("need 0 < minReconnectDelay <= maxReconnectDelay");
    }
    if (!(this.#options.stableAfter >= 0)) throw new RangeError("need stableAfter >= 0");
    if (!(this.#options.timeout > 0)) throw new RangeError("need timeout > 0");
    this.#url = url ?? defaultUrl();
  }

  /** "disconnected", "connecting", "connected" or "reconnecting". */
  get state() {
    return this.#state;
  }

  /** When reconnecting: the `Date.now()` time of the next attempt; otherwise null. */
  get reconnectAt() {
    return this.#reconnectAt;
  }

  /** This connection's id, from the connect reply. */
  get clientId() {
    return this.#clientId;
  }

  /** The token's user (`sub`), "" when anonymous, from the connect reply. */
  get user() {
    return this.#user;
  }

  /** The hub node serving this connection, from the connect reply. */
  get node() {
    return this.#node;
  }

  /** Starts connecting; does nothing when already started. */
  connect() {
    if (this.#wanted) return;
    this.#wanted = true;
    this.#attempt = 0;
    this.#open();
  }

  /**
   * Closes the connection and stops reconnecting, until `connect()` is called again.
   * Commands awaiting a reply reject with "disconnected".
   * @param {number} [code] 1000 or 3000-4999
   * @param {string} [reason] cut to 123 bytes of UTF-8
   */
  disconnect(code = 1000, reason = "") {
    if (code !== 1000 && !(code >= 3000 && code <= 4999)) {
      throw new RangeError(`close code ${code} is neither 1000 nor in 3000-4999`);
    }
    this.#wanted = false;
    if (this.#socket) this.#abandon(code, reason, true);
    else this.#halt();
  }

  /**
   * Subscribes to `channel`, now or as soon as connected; returns the channel's existing
   * subscription when there is one.
   * @param {string} channel
   * @param {{recover?: boolean}} [options] recover: resubscribe from the last position seen
   * @returns {Subscription}
   */
  subscribe(channel, options = {}) {
    const existing = this.#subs.get(channel);
    if (existing) return existing;
    const sub = new Subscription(this, channel, options, {
      detach: () => this.#unsubscribe(sub),
      message: (pub) => emit(this, "message", pub),
    });
    this.#subs.set(channel, sub);
    if (this.#state === "connected") this.#sendSubscribe(sub);
    return sub;
  }

  /**
   * @param {string} channel
   * @returns {Subscription|undefined}
   */
  getSubscription(channel) {
    return this.#subs.get(channel);
  }

  /**
   * Publishes `data` to `channel`: any JSON value, or bytes (ArrayBuffer or a view), sent
   * in a binary frame. Resolves with the server's result (`{offset, epoch}` on channels
   * with history, `{}` otherwise).
   * @param {string} channel
   * @param {unknown} data
   * @param {{key?: string}} [options] key: what the publication is about (conflation)
   * @returns {Promise<{offset?: number, epoch?: string}>}
   */
  publish(channel, data, { key } = {}) {
    if (isBinary(data)) return this.#call({ cmd: "publish", channel, key }, data);
    return this.#call({ cmd: "publish", channel, data, key });
  }

  /**
   * Who is subscribed to `channel`: `{clients: {[client]: {client, user, info}}}`.
   * @param {string} channel
   */
  presence(channel) {
    return this.#call({ cmd: "presence", channel });
  }

  /**
   * How many clients and distinct users are subscribed: `{clients, users}`.
   * @param {string} channel
   */
  presenceStats(channel) {
    return this.#call({ cmd: "presence_stats", channel });
  }

  /**
   * The channel's kept publications, oldest first, with binary data as Uint8Array.
   * @param {string} channel
   * @param {{limit?: number, since?: {offset: number, epoch: string}}} [options]
   * @returns {Promise<{publications: object[], epoch: string, offset: number}>}
   */
  async history(channel, { limit, since } = {}) {
    const result = await this.#call({ cmd: "history", channel, limit, since });
    const publications = result.publications.map((raw) => publication(channel, raw));
    return { ...result, publications };
  }

  /** An application-level round trip to the server. */
  async ping() {
    await this.#call({ cmd: "ping" });
  }

  // Connection lifecycle.

  async #open() {
    const generation = ++this.#generation;
    this.#retryAllowed = true;
    this.#reconnectAt = null;
    // The attempt's deadline covers the token function too, which might never settle.
    clearTimeout(this.#timers.connect);
    this.#timers.connect = setTimeout(() => {
      if (generation === this.#generation) this.#onConnectTimeout();
    }, this.#options.timeout);
    this.#setState("connecting");
    if (generation !== this.#generation) return; // a "state" handler stopped or restarted
    let token;
    try {
      token = await this.#token();
    } catch (cause) {
      if (generation !== this.#generation) return;
      clearTimeout(this.#timers.connect);
      this.#emitError(new DuplexError("token", `the token function failed: ${cause}`, { cause }));
      if (generation !== this.#generation) return; // an "error" handler stopped or restarted
      this.#scheduleReconnect();
      return;
    }
    if (generation === this.#generation) this.#dial(token);
  }

  async #token() {
    const { token } = this.#options;
    return typeof token === "function" ? token() : token;
  }

  /** No connect reply (or no token) within `timeout` of the attempt's start. */
  #onConnectTimeout() {
    if (this.#socket) {
      this.#abandon(CLOSE_RETRY, "connect timeout");
      return;
    }
    // Still waiting for the token function: whatever it gives later is for a dead attempt.
    const generation = ++this.#generation;
    const { timeout } = this.#options;
    this.#emitError(
      new DuplexError("token", `the token function did not settle within ${timeout} ms`),
    );
    if (generation === this.#generation) this.#scheduleReconnect();
  }

  #dial(token) {
    let socket;
    try {
      socket = new this.#options.WebSocket(this.#url, PROTOCOL);
    } catch (cause) {
      const generation = this.#generation;
      const message = `cannot open ${this.#url}: ${cause}`;
      this.#emitError(new DuplexError("transport", message, { cause }));
      if (generation !== this.#generation) return;
      this.#wanted = false;
      this.#halt();
      return;
    }
    this.#log("dial", this.#url);
    socket.binaryType = "arraybuffer";
    socket.onopen = () => this.#sendConnect(token);
    socket.onmessage = (event) => this.#onMessage(event.data);
    socket.onerror = () => this.#emitError(new DuplexError("transport", "WebSocket error"));
    socket.onclose = (event) => this.#onClosed(event.code, event.reason, event.wasClean);
    this.#socket = socket;
  }

  #sendConnect(token) {
    const { name, version, info } = this.#options;
    const entry = this.#register(
      { cmd: "connect", token, name, version, info },
      {
        onResult: (result) => this.#onConnected(result),
        onError: (error) => this.#onConnectRefused(error),
      },
      null,
    );
    this.#transmit(entry);
  }

  #onConnected(result) {
    clearTimeout(this.#timers.connect);
    // The backoff starts over only once the connection has lasted: a server that accepts and
    // closes at once (4001, 4004) keeps getting longer waits.
    this.#timers.stable = setTimeout(() => {
      this.#attempt = 0;
    }, this.#options.stableAfter);
    this.#clientId = result.client;
    this.#user = result.user;
    this.#node = result.node;
    this.#state = "connected";
    for (const sub of this.#subs.values()) this.#sendSubscribe(sub);
    for (const entry of this.#pending.values()) if (!entry.sent) this.#transmit(entry);
    this.#watch(result.ping);
    const generation = this.#generation;
    this.#announce();
    if (generation !== this.#generation) return; // a "state" handler disconnected
    emit(this, "open", { clientId: result.client, user: result.user, node: result.node });
  }

  #onConnectRefused(error) {
    if (error.code === "disconnected") return;
    clearTimeout(this.#timers.connect);
    if (error.code === TOKEN_EXPIRED) {
      // The server closes with 4003; only a token function can give a fresh token.
      this.#retryAllowed = typeof this.#options.token === "function";
    }
    const generation = this.#generation;
    this.#emitError(error);
    if (generation !== this.#generation) return; // an "error" handler disconnected
    // 101: the server closes with 4501; 109: with 4003.
    if (error.code === UNAUTHORIZED || error.code === TOKEN_EXPIRED) return;
    const retry = TEMPORARY_ERRORS.has(error.code);
    this.#abandon(retry ? CLOSE_RETRY : CLOSE_GIVE_UP, error.message);
  }

  /**
   * Closes the socket without waiting for the close handshake, and handles the closure.
   * Does nothing without a socket (an event handler already closed it).
   */
  #abandon(code, reason, wasClean = false) {
    const socket = this.#socket;
    if (!socket) return;
    this.#detach(socket);
    const sent = closeReason(reason);
    // Should close() still refuse the reason (or the code), a socket left open would be a
    // second live connection once the client reconnects.
    const attempts = [
      () => socket.close(code, sent),
      () => socket.close(code),
      () => socket.close(),
    ];
    for (const attempt of attempts) {
      try {
        attempt();
        break;
      } catch (error) {
        this.#log("close failed", error);
      }
    }
    this.#onClosed(code, sent, wasClean);
  }

  #detach(socket) {
    socket.onopen = socket.onmessage = socket.onclose = null;
    socket.onerror = () => {}; // some implementations throw on an error nobody listens to
  }

  #onClosed(code, reason, wasClean) {
    this.#log("closed", code, reason);
    if (this.#socket) this.#detach(this.#socket);
    this.#socket = null;
    clearTimeout(this.#timers.connect);
    clearTimeout(this.#timers.watchdog);
    clearTimeout(this.#timers.stable);
    this.#clearRetries();
    this.#failPending((entry) => entry.sent);
    for (const sub of this.#subs.values()) sub[RESET]();
    // An expired token string stays expired: only a token function can help.
    const expired = code === CLOSE_TOKEN_EXPIRED && typeof this.#options.token !== "function";
    let reconnect = this.#wanted && this.#retryAllowed && !expired && mayReconnect(code);
    let delay = null;
    const generation = this.#generation;
    if (reconnect) {
      delay = this.#scheduleReconnect();
    } else {
      this.#wanted = false;
      this.#halt();
    }
    if (reconnect && generation !== this.#generation) {
      // A "state" handler called disconnect() (and maybe connect()): no reconnect of ours.
      reconnect = false;
      delay = null;
    }
    emit(this, "close", { code, reason, wasClean, reconnect, delay });
  }

  #scheduleReconnect() {
    const { minReconnectDelay, maxReconnectDelay, random } = this.#options;
    const delay = backoff(this.#attempt++, minReconnectDelay, maxReconnectDelay, random);
    this.#reconnectAt = Date.now() + delay;
    this.#timers.reconnect = setTimeout(() => this.#open(), delay);
    this.#setState("reconnecting", delay);
    return delay;
  }

  /** Stops for good: no socket, no timer, every command rejected. */
  #halt() {
    this.#generation++;
    clearTimeout(this.#timers.reconnect);
    clearTimeout(this.#timers.connect);
    clearTimeout(this.#timers.stable);
    this.#reconnectAt = null;
    this.#failPending(() => true);
    this.#setState("disconnected");
  }

  /**
   * Sends a `ping` command when nothing has arrived for the server's ping interval plus a
   * margin, and drops the connection when that gets no reply either.
   * @param {number} [pingSecs] the server's ping interval; 0 or absent: no checks
   */
  #watch(pingSecs) {
    if (!pingSecs) return;
    const idle = pingSecs * 1000 + PING_MARGIN;
    const check = () => {
      const quiet = Date.now() - this.#lastSeen;
      if (quiet < idle) {
        this.#timers.watchdog = setTimeout(check, idle - quiet);
        return;
      }
      this.#request(
        { cmd: "ping" },
        {
          onResult: () => {
            this.#timers.watchdog = setTimeout(check, idle);
          },
          onError: (error) => {
            if (error.code === "timeout") this.#abandon(CLOSE_RETRY, "no reply to ping");
          },
        },
      );
    };
    this.#timers.watchdog = setTimeout(check, idle);
  }

  #setState(state, delay = null) {
    if (state === this.#state) return;
    this.#state = state;
    this.#announce(delay);
  }

  /** Emits "state" for the current state. */
  #announce(delay = null) {
    this.#log("state", this.#state, delay);
    emit(this, "state", { state: this.#state, delay });
  }

  // Frames in.

  #onMessage(data) {
    this.#lastSeen = Date.now();
    let frame;
    try {
      frame = decodeMessage(data);
    } catch (error) {
      this.#emitError(error);
      return;
    }
    this.#log("in", frame);
    if (frame.id !== undefined) this.#onReply(frame);
    else this.#onPush(frame);
  }

  #onReply(reply) {
    const entry = this.#pending.get(reply.id);
    if (!entry) return; // timed out meanwhile
    this.#pending.delete(reply.id);
    clearTimeout(entry.timer);
    if (reply.error) entry.onError(new DuplexError(reply.error.code, reply.error.message));
    else entry.onResult(reply.result ?? {});
  }

  #onPush(push) {
    const sub = this.#subs.get(push.channel);
    switch (push.push) {
      case "publication":
        sub?.[PUBLICATION](push);
        break;
      case "join":
      case "leave":
        sub?.[PRESENCE](push.push, push.info);
        break;
      case "disconnect":
        if (push.reconnect === false) this.#retryAllowed = false;
        break;
      default:
        this.#log("unknown push", push.push);
    }
  }

  // Commands out.

  /** Sends a command (or queues it until connected); resolves with its result. */
  #call(fields, payload) {
    return new Promise((resolve, reject) => {
      this.#request(fields, { onResult: resolve, onError: reject }, payload);
    });
  }

  #request(fields, handlers, payload) {
    const entry = this.#register(fields, handlers, this.#options.timeout, payload);
    if (this.#state === "connected") this.#transmit(entry);
  }

  /**
   * Assigns an id and remembers the command until its reply, or `timeout` ms (null: no
   * limit) after which it fails with "timeout".
   */
  #register(fields, { onResult, onError }, timeout, payload) {
    const id = ++this.#lastId;
    const command = { id, ...fields };
    const frame =
      payload === undefined ? JSON.stringify(command) : encodeBinaryFrame(command, payload);
    const entry = { id, cmd: fields.cmd, frame, onResult, onError, sent: false, timer: null };
    if (timeout !== null) entry.timer = setTimeout(() => this.#expire(entry, timeout), timeout);
    this.#pending.set(id, entry);
    return entry;
  }

  #transmit(entry) {
    this.#log("out", entry.cmd, entry.id);
    this.#socket.send(entry.frame);
    entry.sent = true;
  }

  #expire(entry, timeout) {
    this.#pending.delete(entry.id);
    entry.onError(new DuplexError("timeout", `no reply to ${entry.cmd} within ${timeout} ms`));
  }

  /** Rejects (with "disconnected") and forgets the pending commands matching `which`. */
  #failPending(which) {
    for (const entry of [...this.#pending.values()].filter(which)) {
      this.#pending.delete(entry.id);
      clearTimeout(entry.timer);
      const message = `connection closed before the ${entry.cmd} reply`;
      entry.onError(new DuplexError("disconnected", message));
    }
  }

  // Subscriptions.

  #sendSubscribe(sub) {
    const recover = sub[RECOVER_FROM]();
    this.#request(
      { cmd: "subscribe", channel: sub.channel, recover },
      {
        onResult: (result) => {
          if (this.#subs.get(sub.channel) !== sub) return; // unsubscribed meanwhile
          this.#retries.delete(sub);
          sub[SUBSCRIBED](result, recover !== undefined);
        },
        onError: (error) => this.#onSubscribeRefused(sub, error),
      },
    );
  }

  #onSubscribeRefused(sub, error) {
    if (this.#subs.get(sub.channel) !== sub || error.code === "disconnected") return;
    if (error.code === "timeout") {
      this.#abandon(CLOSE_RETRY, "subscribe timeout");
    } else if (TEMPORARY_ERRORS.has(error.code)) {
      this.#retrySubscribe(sub, error);
    } else {
      this.#subs.delete(sub.channel);
      sub[FAILED](error);
    }
  }

  /** Subscribes again after a backoff delay, reporting the temporary error meanwhile. */
  #retrySubscribe(sub, error) {
    const { minReconnectDelay, maxReconnectDelay, random } = this.#options;
    const attempt = this.#retries.get(sub)?.attempt ?? 0;
    const delay = backoff(attempt, minReconnectDelay, maxReconnectDelay, random);
    const timer = setTimeout(() => this.#sendSubscribe(sub), delay);
    this.#retries.set(sub, { timer, attempt: attempt + 1 });
    emit(sub, "error", { error });
  }

  #clearRetries() {
    for (const { timer } of this.#retries.values()) clearTimeout(timer);
    this.#retries.clear();
  }

  #unsubscribe(sub) {
    this.#subs.delete(sub.channel);
    clearTimeout(this.#retries.get(sub)?.timer);
    this.#retries.delete(sub);
    if (this.#state !== "connected") return;
    // Best effort: a failure means the connection dropped, which unsubscribes anyway.
    this.#request({ cmd: "unsubscribe", channel: sub.channel }, { onResult() {}, onError() {} });
  }

  // Diagnostics.

  #emitError(error) {
    this.#log("error", error);
    emit(this, "error", { error });
  }

  #log(...args) {
    if (this.#options.debug) console.debug("[duplex]", ...args);
  }
}

defineHandlers(DuplexClient, ["open", "message", "close", "error", "state"]);
