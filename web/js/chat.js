// Chat demo: one duplex.v1 connection, the current room's channel `chat:<room>`, its presence
// as the member list, the last 50 messages from history on join, and live publications.
import { createClient, params, el, clock } from "./common.js";

const NICK_KEY = "duplex.chat.nick";
const ROOM_KEY = "duplex.chat.room";
const ROOMS_KEY = "duplex.chat.rooms";
const DEFAULT_ROOMS = ["lobby", "random"];
const ROOM_NAME = /^[A-Za-z0-9_.@=+-]{1,48}$/;
const HISTORY_LIMIT = 50;
const MAX_NICK = 32;

const $ = (id) => document.getElementById(id);
const ui = {
  loginView: $("login-view"),
  login: $("login"),
  nick: $("nick"),
  chatView: $("chat-view"),
  rooms: $("rooms"),
  addRoom: $("add-room"),
  newRoom: $("new-room"),
  roomError: $("room-error"),
  roomTitle: $("room-title"),
  me: $("me"),
  changeNick: $("change-nick"),
  messages: $("messages"),
  compose: $("compose"),
  text: $("text"),
  sendError: $("send-error"),
  members: $("members"),
  memberCount: $("member-count"),
};

function load(key) {
  try {
    return localStorage.getItem(key);
  } catch {
    return null; // storage disabled: the page still works, it just forgets
  }
}

function save(key, value) {
  try {
    localStorage.setItem(key, value);
  } catch {
    // storage disabled or full: nothing to remember then
  }
}

function cleanNick(value) {
  return String(value ?? "").replace(/\s+/g, " ").trim().slice(0, MAX_NICK);
}

function cleanRoom(value) {
  const room = String(value ?? "").trim().replace(/^#/, "");
  return ROOM_NAME.test(room) ? room : null;
}

function storedRooms() {
  try {
    const list = JSON.parse(load(ROOMS_KEY) ?? "[]");
    return Array.isArray(list) ? list.map(cleanRoom).filter(Boolean) : [];
  } catch {
    return [];
  }
}

// ---- state ----

let client = null;
let nick = "";
let room = cleanRoom(params.get("room")) ?? cleanRoom(load(ROOM_KEY)) ?? "lobby";
let rooms = [...new Set([...DEFAULT_ROOMS, ...storedRooms(), room])];
let sub = null;
/** "epoch:offset" of every message shown, so history and live publications never repeat. */
let shown = new Set();
/** client id -> presence info of the current room. */
let members = new Map();
let historyGen = 0;
let presenceGen = 0;
let presenceTimer = null;

// ---- login ----

function showLogin() {
  ui.chatView.hidden = true;
  ui.loginView.hidden = false;
  ui.nick.value = nick || cleanNick(load(NICK_KEY));
  ui.nick.focus();
  ui.nick.select();
}

ui.login.addEventListener("submit", (event) => {
  event.preventDefault();
  const value = cleanNick(ui.nick.value);
  if (!value) {
    ui.nick.setCustomValidity("Please choose a nickname.");
    ui.nick.reportValidity();
    return;
  }
  start(value);
});
ui.nick.addEventListener("input", () => ui.nick.setCustomValidity(""));

ui.changeNick.addEventListener("click", () => {
  stop();
  params.delete("nick");
  updateUrl();
  showLogin();
});

function start(name) {
  nick = name;
  save(NICK_KEY, nick);
  ui.loginView.hidden = true;
  ui.chatView.hidden = false;
  ui.me.textContent = nick;
  client = createClient({ info: { name: nick } });
  client.addEventListener("open", () => {
    renderMembers(); // our own client id is known now: mark "you"
  });
  client.connect();
  joinRoom(room);
  ui.text.focus();
}

function stop() {
  leaveRoom();
  if (client) client.disconnect();
  client = null;
}

function updateUrl() {
  if (nick && client) params.set("nick", nick);
  params.set("room", room);
  const query = params.toString();
  history.replaceState(null, "", query ? `${location.pathname}?${query}` : location.pathname);
}

// ---- rooms ----

function renderRooms() {
  ui.rooms.replaceChildren(
    ...rooms.map((name) => {
      const li = el("li", "", name);
      li.dataset.room = name;
      li.tabIndex = 0;
      li.setAttribute("role", "button");
      if (name === room) li.setAttribute("aria-current", "true");
      return li;
    }),
  );
  const current = ui.rooms.querySelector('[aria-current="true"]');
  if (current && current.scrollIntoView) current.scrollIntoView({ block: "nearest", inline: "nearest" });
}

function pickRoom(event) {
  const li = event.target.closest("li[data-room]");
  if (li && li.dataset.room !== room) joinRoom(li.dataset.room);
}
ui.rooms.addEventListener("click", pickRoom);
ui.rooms.addEventListener("keydown", (event) => {
  if (event.key === "Enter" || event.key === " ") {
    event.preventDefault();
    pickRoom(event);
  }
});

ui.addRoom.addEventListener("submit", (event) => {
  event.preventDefault();
  const name = cleanRoom(ui.newRoom.value);
  if (!name) {
    ui.roomError.textContent = "Letters, digits and _ . @ = + - only.";
    ui.roomError.hidden = false;
    return;
  }
  ui.roomError.hidden = true;
  ui.newRoom.value = "";
  if (!rooms.includes(name)) {
    rooms.push(name);
    save(ROOMS_KEY, JSON.stringify(rooms.filter((r) => !DEFAULT_ROOMS.includes(r))));
  }
  joinRoom(name);
});
ui.newRoom.addEventListener("input", () => {
  ui.roomError.hidden = true;
});

/** Leaves the current room's channel; `sub` is cleared first so its handlers stay quiet. */
function leaveRoom() {
  const old = sub;
  sub = null;
  if (old) old.unsubscribe();
}

function joinRoom(name) {
  leaveRoom();
  room = name;
  save(ROOM_KEY, room);
  if (!rooms.includes(room)) rooms.push(room);
  updateUrl();
  renderRooms();
  ui.roomTitle.textContent = `# ${room}`;
  ui.text.placeholder = `Message #${room}`;
  document.title = `#${room} · Chat · duplex`;
  ui.sendError.hidden = true;
  clearMessages();
  members = new Map();
  renderMembers();

  const s = client.subscribe(`chat:${room}`);
  sub = s;
  let loaded = false;
  /** The latest refusal; the SDK retries temporary ones (100, 111) by itself. */
  let refusal = null;
  s.addEventListener("subscribed", () => {
    refusal = null;
    if (sub !== s) return;
    if (!loaded) {
      loaded = true;
      loadHistory(s);
    }
    refreshMembers(s);
  });
  s.addEventListener("publication", (event) => {
    if (sub === s) showMessage(event, false);
  });
  s.addEventListener("unrecovered", () => {
    if (sub !== s) return;
    // The server could not replay what we missed while disconnected (its history no longer
    // reaches back, or the stream restarted). Keep what is on screen, say so, and continue
    // from history; messages shown before are not ordered against the new ones any more.
    loaded = true;
    for (const m of ui.messages.querySelectorAll(".message[data-offset]")) m.removeAttribute("data-offset");
    notice("Some messages sent while you were away could not be recovered. The latest ones follow.");
    loadHistory(s);
  });
  s.addEventListener("join", (event) => {
    if (sub !== s || !event.info || !event.info.client) return;
    members.set(event.info.client, event.info);
    renderMembers();
    scheduleMembersRefresh(s);
  });
  s.addEventListener("leave", (event) => {
    if (sub !== s || !event.info || !event.info.client) return;
    members.delete(event.info.client);
    renderMembers();
    scheduleMembersRefresh(s);
  });
  s.addEventListener("error", (event) => {
    refusal = event.error || {};
  });
  s.addEventListener("unsubscribed", () => {
    // Only a refusal the SDK gave up on ends the subscription; leaving the room clears `sub`.
    if (sub !== s || !refusal) return;
    notice(`Could not join #${room}: ${refusal.message || refusal.code || "error"}`, "error");
  });
}

// ---- messages ----

function clearMessages() {
  shown = new Set();
  historyGen++;
  ui.messages.replaceChildren(el("p", "empty", "Loading messages…"));
}

function notice(text, kind = "") {
  ui.messages.querySelector(".empty")?.remove();
  const n = el("p", `notice ${kind}`.trim(), text);
  n.setAttribute("role", "status");
  ui.messages.append(n);
  scrollToEnd(true);
}

async function loadHistory(s) {
  const gen = ++historyGen;
  try {
    const result = await s.history({ limit: HISTORY_LIMIT });
    if (sub !== s || gen !== historyGen) return;
    for (const pub of result.publications || []) {
      showMessage({ ...pub, epoch: pub.epoch ?? result.epoch }, true);
    }
    const empty = ui.messages.querySelector(".empty");
    if (empty) empty.textContent = "No messages yet. Say hello!";
    scrollToEnd(true);
  } catch (error) {
    if (sub !== s || gen !== historyGen) return;
    notice(`Could not load earlier messages: ${error.message || error.code}`, "error");
  }
}

/**
 * The author's name: the publisher's connection info as the hub attached it (token `info`
 * claim, else connect `info`) wins over the `nick` in the data, which any publisher picks;
 * publications from the HTTP API have no connection info, so there the data's nick counts.
 */
function nickOf(pub) {
  const info = pub.info && pub.info.info;
  const attested = info && typeof info.name === "string" ? cleanNick(info.name) : "";
  if (attested) return attested;
  const data = pub.data;
  if (data && typeof data === "object" && typeof data.nick === "string" && data.nick.trim()) {
    return cleanNick(data.nick);
  }
  return memberName(pub.info);
}

function textOf(data) {
  if (data && typeof data === "object" && !(data instanceof ArrayBuffer) && !ArrayBuffer.isView(data)) {
    return typeof data.text === "string" ? data.text : JSON.stringify(data);
  }
  if (typeof data === "string") return data;
  if (data instanceof ArrayBuffer || ArrayBuffer.isView(data)) return `(${data.byteLength} bytes of binary data)`;
  return JSON.stringify(data);
}

function showMessage(pub, fromHistory) {
  const hasOffset = typeof pub.offset === "number";
  if (hasOffset) {
    const key = `${pub.epoch ?? ""}:${pub.offset}`;
    if (shown.has(key)) return;
    shown.add(key);
  }
  ui.messages.querySelector(".empty")?.remove();

  const mine = !!(client && pub.info && pub.info.client && pub.info.client === client.clientId);
  const msg = el("div", "message");
  if (mine) msg.classList.add("mine");
  if (fromHistory) msg.classList.add("history");
  if (hasOffset) msg.dataset.offset = String(pub.offset);

  const meta = el("div", "meta");
  const name = nickOf(pub);
  msg.style.setProperty("--hue", String(hue(name)));
  meta.append(el("span", "nick", name));
  const sent = pub.data && typeof pub.data === "object" && Number.isFinite(pub.data.time) ? pub.data.time : null;
  const when = sent ?? (fromHistory ? null : Date.now());
  if (when !== null) {
    const time = el("time", "", clock(when, false));
    time.dateTime = new Date(when).toISOString();
    meta.append(time);
  }
  msg.append(meta, el("div", "text", textOf(pub.data)));

  const stick = mine || isNearEnd();
  // Keep messages in offset order: history may answer after newer live publications arrived.
  let before = null;
  if (hasOffset) {
    const list = ui.messages.querySelectorAll(".message[data-offset]");
    for (let i = list.length - 1; i >= 0 && Number(list[i].dataset.offset) > pub.offset; i--) {
      before = list[i];
    }
  }
  ui.messages.insertBefore(msg, before);
  if (stick) scrollToEnd(false);
}

function isNearEnd() {
  const m = ui.messages;
  return m.scrollHeight - m.scrollTop - m.clientHeight < 80;
}

function scrollToEnd(force) {
  if (force || isNearEnd()) ui.messages.scrollTop = ui.messages.scrollHeight;
}

ui.compose.addEventListener("submit", async (event) => {
  event.preventDefault();
  const text = ui.text.value;
  if (!text.trim() || !sub) return;
  ui.text.value = "";
  ui.sendError.hidden = true;
  try {
    await sub.publish({ nick, text, time: Date.now() });
  } catch (error) {
    if (!ui.text.value) ui.text.value = text;
    ui.sendError.textContent = `Not sent: ${error.message || error.code}`;
    ui.sendError.hidden = false;
  }
});

// ---- members ----

/** A stable colour per name, so a conversation is easy to follow. */
function hue(name) {
  let h = 0;
  for (const ch of name) h = (h * 31 + ch.codePointAt(0)) % 360;
  return h;
}

function memberName(info) {
  const name = info && info.info && typeof info.info.name === "string" ? cleanNick(info.info.name) : "";
  if (name) return name;
  if (info && info.user) return `user ${info.user}`;
  return "anonymous";
}

function renderMembers() {
  const me = client ? client.clientId : null;
  const list = [...members.entries()]
    .map(([id, info]) => ({ id, name: memberName(info), user: info && info.user }))
    .sort((a, b) => a.name.localeCompare(b.name) || a.id.localeCompare(b.id));
  ui.members.replaceChildren(
    ...list.map((m) => {
      const li = el("li", m.id === me ? "me" : "", m.name);
      li.dataset.client = m.id;
      li.style.setProperty("--hue", String(hue(m.name)));
      li.title = m.user ? `${m.name} (user ${m.user})` : m.name;
      return li;
    }),
  );
  ui.memberCount.textContent = list.length ? String(list.length) : "";
}

async function refreshMembers(s) {
  const gen = ++presenceGen;
  try {
    const result = await s.presence();
    if (sub !== s || gen !== presenceGen) return;
    members = new Map(Object.entries(result.clients || {}));
    renderMembers();
  } catch {
    // Presence off for this namespace, or the connection dropped: the next subscribe retries.
  }
}

function scheduleMembersRefresh(s) {
  clearTimeout(presenceTimer);
  presenceTimer = setTimeout(() => {
    if (sub === s) refreshMembers(s);
  }, 300);
}

// ---- boot ----

renderRooms();
const given = cleanNick(params.get("nick"));
if (given) {
  start(given);
} else {
  showLogin();
}
