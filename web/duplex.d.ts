// Type declarations of duplex.js, the client of the duplex hub's `duplex.v1` protocol
// (docs/protocol.md). Usage: web/README.md.

/** The WebSocket subprotocol the client speaks. */
export declare const PROTOCOL: "duplex.v1";
/** Close code the SDK uses when it drops a connection it will retry (dead, timed out). */
export declare const CLOSE_RETRY: 3000;
/**
 * Close code the SDK uses when it gives up after a connect error retrying cannot fix; like
 * every code in 3500-3999 it is final (no reconnect).
 */
export declare const CLOSE_GIVE_UP: 3500;

/** What the client is doing; "reconnecting" means waiting for the next attempt. */
export type ConnectionState = "disconnected" | "connecting" | "connected" | "reconnecting";

/** "subscribing" also while the client is offline: it subscribes once connected. */
export type SubscriptionState = "subscribing" | "subscribed" | "unsubscribed";

/**
 * A hub error code (number, docs/protocol.md section 7), or one of the SDK's: "timeout" (no
 * reply in time), "disconnected" (the connection closed before the reply), "transport" (the
 * WebSocket failed or could not be created), "token" (the token function threw, rejected
 * or did not settle within `timeout`), "bad_frame" (an unreadable frame from the server).
 */
export type DuplexErrorCode =
  number | "timeout" | "disconnected" | "transport" | "token" | "bad_frame";

/** The error of rejected promises and of "error" events. */
export declare class DuplexError extends Error {
  constructor(code: DuplexErrorCode, message: string, options?: { cause?: unknown });
  code: DuplexErrorCode;
}

/** The part of a WebSocket implementation the client uses (the browser's, or Node's `ws`). */
export interface WebSocketLike {
  binaryType: string;
  onopen: ((event: any) => any) | null;
  /** Called with `{data}`: a string, or an ArrayBuffer since binaryType is "arraybuffer". */
  onmessage: ((event: any) => any) | null;
  onerror: ((event: any) => any) | null;
  /** Called with `{code, reason, wasClean}`. */
  onclose: ((event: any) => any) | null;
  send(data: string | ArrayBufferLike | ArrayBufferView): void;
  close(code?: number, reason?: string): void;
}

export interface WebSocketConstructor {
  new (url: string, protocols?: string | string[]): WebSocketLike;
}

export interface DuplexClientOptions {
  /**
   * A JWT, or a function giving one, called before every connection attempt. Only a function
   * can replace an expired token: with a string (or none), close 4003 is final.
   */
  token?: string | (() => string | Promise<string>);
  /** Display data shown in presence and publication `info` (unverified; a token's wins). */
  info?: Record<string, unknown>;
  /** The client's name, for the server's logs. */
  name?: string;
  /** The client's version, for the server's logs. */
  version?: string;
  /** Base of the reconnect backoff, ms. Default 500. */
  minReconnectDelay?: number;
  /** Cap of the reconnect backoff, ms. Default 20000. */
  maxReconnectDelay?: number;
  /**
   * How long a command waits for its reply, and a connection attempt (the token function
   * included) for its connect reply, ms. Default 10000.
   */
  timeout?: number;
  /**
   * How long a connection must stay connected before the reconnect backoff starts over at
   * attempt 0, ms. Default 5000.
   */
  stableAfter?: number;
  /** The WebSocket class. Default `globalThis.WebSocket`. */
  WebSocket?: WebSocketConstructor;
  /** Source of the backoff jitter, in [0, 1). Default `Math.random`. */
  random?: () => number;
  /** Log frames and state changes with `console.debug`. */
  debug?: boolean;
}

/** A client as presence and publications show it. */
export interface ClientInfo {
  client: string;
  /** The token's `sub`; "" for anonymous clients. */
  user: string;
  /** The token's `info` claim, or else the connect `info`. */
  info?: Record<string, unknown>;
}

/** A place in a channel's stream. */
export interface StreamPosition {
  offset: number;
  epoch: string;
}

/** A publication; binary data arrives as a Uint8Array. */
export interface Publication {
  channel: string;
  data: unknown;
  /** Present when the channel's namespace keeps history. */
  offset?: number;
  epoch?: string;
  /** The publisher; absent for publications from the HTTP API. */
  info?: ClientInfo;
  key?: string;
}

export interface PublishOptions {
  /** What the publication is about; conflating namespaces keep the latest per key. */
  key?: string;
}

/** `{offset, epoch}` on channels with history, `{}` otherwise. */
export interface PublishResult {
  offset?: number;
  epoch?: string;
}

export interface PresenceResult {
  clients: Record<string, ClientInfo>;
}

export interface PresenceStatsResult {
  clients: number;
  users: number;
}

export interface HistoryOptions {
  /** At most this many publications (the latest ones without `since`). */
  limit?: number;
  /** Only the publications after this position. */
  since?: StreamPosition;
}

export interface HistoryResult {
  /** Oldest first. */
  publications: Publication[];
  epoch: string;
  offset: number;
}

export interface SubscribeOptions {
  /** Recover missed publications when resubscribing. Default true. */
  recover?: boolean;
}

/** "open": the connect reply arrived. */
export interface DuplexOpenEvent extends Event {
  readonly clientId: string;
  readonly user: string;
  readonly node: string;
}

/** "message" on the client, "publication" on a subscription. */
export interface DuplexMessageEvent extends Event, Publication {}

/** "close": a connection or connection attempt ended. */
export interface DuplexCloseEvent extends Event {
  readonly code: number;
  readonly reason: string;
  readonly wasClean: boolean;
  /** Whether the client will try again, after `delay` ms. */
  readonly reconnect: boolean;
  readonly delay: number | null;
}

/** "error" on the client or on a subscription. */
export interface DuplexErrorEvent extends Event {
  readonly error: DuplexError;
}

/** "state": every change of `DuplexClient.state`. */
export interface DuplexStateEvent extends Event {
  readonly state: ConnectionState;
  /** When reconnecting: the wait before the next attempt, ms; otherwise null. */
  readonly delay: number | null;
}

/** "subscribed": the server confirmed a (re)subscription. */
export interface SubscribedEvent extends Event {
  /** Only when resubscribing with recovery: whether every missed publication came. */
  readonly recovered: boolean | undefined;
  /** Whether the subscribe asked to recover from a position. */
  readonly wasRecovering: boolean;
  /** Whether the namespace keeps history and allows recovery. */
  readonly recoverable: boolean;
  readonly epoch: string | undefined;
  readonly offset: number | undefined;
  /** How many recovered publications follow as "publication" events. */
  readonly publications: number;
}

/** "unrecovered": publications were missed and cannot be recovered; reload the state. */
export interface UnrecoveredEvent extends Event {
  /** The channel's position now. */
  readonly epoch: string | undefined;
  readonly offset: number | undefined;
}

/** "join" and "leave". */
export interface PresenceEvent extends Event {
  readonly info: ClientInfo;
}

export interface DuplexClientEventMap {
  open: DuplexOpenEvent;
  message: DuplexMessageEvent;
  close: DuplexCloseEvent;
  error: DuplexErrorEvent;
  state: DuplexStateEvent;
}

export interface SubscriptionEventMap {
  subscribed: SubscribedEvent;
  publication: DuplexMessageEvent;
  unrecovered: UnrecoveredEvent;
  join: PresenceEvent;
  leave: PresenceEvent;
  error: DuplexErrorEvent;
  unsubscribed: Event;
}

type Handler<T, E> = ((this: T, event: E) => any) | null;

/** A subscription to one channel, created by `DuplexClient.subscribe`; survives reconnects. */
export declare class Subscription extends EventTarget {
  private constructor();
  readonly channel: string;
  readonly state: SubscriptionState;
  /** The last stream position seen (undefined without history). */
  readonly epoch: string | undefined;
  readonly offset: number | undefined;
  publish(data: unknown, options?: PublishOptions): Promise<PublishResult>;
  presence(): Promise<PresenceResult>;
  presenceStats(): Promise<PresenceStatsResult>;
  history(options?: HistoryOptions): Promise<HistoryResult>;
  /** Leaves the channel for good. */
  unsubscribe(): void;

  onsubscribed: Handler<Subscription, SubscribedEvent>;
  onpublication: Handler<Subscription, DuplexMessageEvent>;
  onunrecovered: Handler<Subscription, UnrecoveredEvent>;
  onjoin: Handler<Subscription, PresenceEvent>;
  onleave: Handler<Subscription, PresenceEvent>;
  onerror: Handler<Subscription, DuplexErrorEvent>;
  onunsubscribed: Handler<Subscription, Event>;

  addEventListener<K extends keyof SubscriptionEventMap>(
    type: K,
    listener: (this: Subscription, event: SubscriptionEventMap[K]) => any,
    options?: boolean | AddEventListenerOptions,
  ): void;
  addEventListener(
    type: string,
    listener: EventListenerOrEventListenerObject | null,
    options?: boolean | AddEventListenerOptions,
  ): void;
  removeEventListener<K extends keyof SubscriptionEventMap>(
    type: K,
    listener: (this: Subscription, event: SubscriptionEventMap[K]) => any,
    options?: boolean | EventListenerOptions,
  ): void;
  removeEventListener(
    type: string,
    listener: EventListenerOrEventListenerObject | null,
    options?: boolean | EventListenerOptions,
  ): void;
}

/** A connection to a duplex hub that reconnects with backoff and recovers subscriptions. */
export declare class DuplexClient extends EventTarget {
  /**
   * @param url "ws[s]://host/ws"; null or omitted: derived from the page's location.
   * @throws TypeError without a URL outside a page, or without a WebSocket implementation.
   * @throws RangeError unless 0 < minReconnectDelay <= maxReconnectDelay, stableAfter >= 0
   *   and timeout > 0.
   */
  constructor(url?: string | null, options?: DuplexClientOptions);
  readonly state: ConnectionState;
  /** When reconnecting: the `Date.now()` time of the next attempt; otherwise null. */
  readonly reconnectAt: number | null;
  /** From the latest connect reply; null before the first. */
  readonly clientId: string | null;
  readonly user: string | null;
  readonly node: string | null;

  /** Starts connecting; does nothing when already started. */
  connect(): void;
  /**
   * Closes and stops reconnecting until `connect()`; pending commands reject. A reason over
   * 123 bytes of UTF-8 is cut at a character boundary.
   * @throws RangeError unless code is 1000 or in 3000-4999.
   */
  disconnect(code?: number, reason?: string): void;
  /** Subscribes now or once connected; returns the channel's existing subscription if any. */
  subscribe(channel: string, options?: SubscribeOptions): Subscription;
  getSubscription(channel: string): Subscription | undefined;
  /** JSON data, or bytes (ArrayBuffer or a view) sent in a binary frame. */
  publish(channel: string, data: unknown, options?: PublishOptions): Promise<PublishResult>;
  presence(channel: string): Promise<PresenceResult>;
  presenceStats(channel: string): Promise<PresenceStatsResult>;
  history(channel: string, options?: HistoryOptions): Promise<HistoryResult>;
  ping(): Promise<void>;

  onopen: Handler<DuplexClient, DuplexOpenEvent>;
  onmessage: Handler<DuplexClient, DuplexMessageEvent>;
  onclose: Handler<DuplexClient, DuplexCloseEvent>;
  onerror: Handler<DuplexClient, DuplexErrorEvent>;
  onstate: Handler<DuplexClient, DuplexStateEvent>;

  addEventListener<K extends keyof DuplexClientEventMap>(
    type: K,
    listener: (this: DuplexClient, event: DuplexClientEventMap[K]) => any,
    options?: boolean | AddEventListenerOptions,
  ): void;
  addEventListener(
    type: string,
    listener: EventListenerOrEventListenerObject | null,
    options?: boolean | AddEventListenerOptions,
  ): void;
  removeEventListener<K extends keyof DuplexClientEventMap>(
    type: K,
    listener: (this: DuplexClient, event: DuplexClientEventMap[K]) => any,
    options?: boolean | EventListenerOptions,
  ): void;
  removeEventListener(
    type: string,
    listener: EventListenerOrEventListenerObject | null,
    options?: boolean | EventListenerOptions,
  ): void;
}

/**
 * The wait before reconnect attempt `attempt` (0-based), with full jitter:
 * `random() * min(max, min * 2 ** attempt)`.
 */
export declare function backoff(
  attempt: number,
  min: number,
  max: number,
  random?: () => number,
): number;

/**
 * Whether a connection closed with `code` may be retried (docs/protocol.md section 5): false
 * for 1002, 1003, 1007-1010, 3500-3999 and 4500-4999.
 */
export declare function mayReconnect(code: number): boolean;

/** A binary frame: u32 big-endian header length, the JSON header, the payload. */
export declare function encodeBinaryFrame(
  header: object,
  payload: ArrayBufferLike | ArrayBufferView,
): Uint8Array;

/**
 * The header object of a binary frame, with the payload as `data`.
 * @throws DuplexError "bad_frame" when malformed.
 */
export declare function decodeBinaryFrame(
  frame: ArrayBufferLike | ArrayBufferView,
): Record<string, unknown> & { data: Uint8Array };
