// Herald demo page: a plain client of Herald's JSON protocol or, switched to
// STOMP, of its STOMP 1.2 endpoint through @stomp/stompjs (vendored at
// /vendor/stomp.umd.min.js), plus a view of the node's /api/stats. No
// framework, no build step.
//
// Both protocols sit behind one small connection interface (openJson,
// openStomp): subscribe(pattern), unsubscribe(pattern), publish(topic, text),
// refresh(token), close(), each answering a Promise once the server confirmed
// it, and events (open, message, notice, expiring, failed, close) the page
// renders the same way.
//
// When the node mints development tokens (GET /api/dev/token answers 200),
// "Sign in as" gets one for a chosen user and connects with it, and each
// time the node says the token is expiring, mints a fresh one and refreshes
// the session with it.
"use strict";

const $ = (id) => document.getElementById(id);
const MAX_MESSAGES = 200;

const state = {
  connection: null, // the live connection (see openJson / openStomp), or null
  subscriptions: new Set(),
  received: 0,
  devTokens: null, // what GET /api/dev/token said, when the node mints tokens
};

const MODES = {
  json: {
    path: "/ws",
    open: openJson,
    tokenHint: "(optional JWT, sent as ?token=)",
    publishHint: "JSON, or any text (sent as a string)",
  },
  stomp: {
    path: "/stomp",
    open: openStomp,
    tokenHint: "(optional JWT, sent as the CONNECT passcode)",
    publishHint: "SEND body: JSON as application/json, anything else as text/plain",
  },
};

function mode() {
  return document.querySelector('input[name="protocol"]:checked').value;
}

function defaultUrl(name = mode()) {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  return `${scheme}://${location.host}${MODES[name].path}`;
}

/** A new mode takes its own default URL, unless the person typed another one. */
function onModeChange() {
  const name = mode();
  const url = $("url").value.trim();
  if (!url || Object.keys(MODES).some((other) => url === defaultUrl(other))) $("url").value = defaultUrl(name);
  $("token-hint").textContent = MODES[name].tokenHint;
  $("publish-hint").textContent = MODES[name].publishHint;
  $("stomp-destinations").hidden = name !== "stomp";
}

function setStatus(text, kind) {
  const status = $("status");
  status.textContent = text;
  status.className = `status ${kind}`;
}

function setConnected(connected) {
  $("connect").disabled = connected;
  $("dev-connect").disabled = connected;
  $("disconnect").disabled = !connected;
  for (const button of document.querySelectorAll("#subscribe-form button, #publish-form button")) {
    button.disabled = !connected;
  }
  $("session-facts").hidden = !connected;
}

/** The protocol cannot change while a connection is open or opening. */
function lockMode(locked) {
  for (const input of document.querySelectorAll('input[name="protocol"]')) input.disabled = locked;
}

function connect(event) {
  event.preventDefault();
  openConnection(null);
}

/**
 * Opens a connection with the token in the Token field. `signIn` ({user,
 * ttl, expiresAt}) says the page minted that token, and so may mint the
 * next one when the node says it is expiring.
 */
function openConnection(signIn, resubscribe = []) {
  if (state.connection) return;
  const name = mode();
  const token = $("token").value.trim();
  const url = $("url").value.trim() || defaultUrl(name);
  setStatus("connecting…", "pending");
  lockMode(true);
  let connection = null;
  // A draining node says when to come back: {"op":"reconnect"} in JSON,
  // the x-herald-reconnect-after-ms header of its ERROR in STOMP.
  let reconnectAfter = null;
  const current = () => connection !== null && state.connection === connection;
  const events = {
    open(facts) {
      if (!current()) return;
      $("fact-session").textContent = facts.session ?? "—";
      $("fact-user").textContent = facts.user ?? "anonymous";
      $("fact-node-label").textContent = facts.nodeLabel;
      $("fact-node").textContent = facts.node ?? "—";
      $("fact-protocol").textContent = facts.protocol;
      const expiresAt = signIn ? signIn.expiresAt : tokenExpiry(token);
      $("fact-token").textContent = expiresAt ? untilText(expiresAt) : "—";
      setConnected(true);
      setStatus("connected", "online");
      for (const topic of resubscribe) subscribeOn(connection, topic);
    },
    reconnect(afterMs) {
      if (current() && Number.isFinite(afterMs) && afterMs >= 0) reconnectAfter = afterMs;
    },
    message(message) {
      if (current()) addMessage(message);
    },
    notice(text) {
      if (current()) notice(text);
    },
    expiring(inMs) {
      if (current()) onExpiring(connection, signIn, inMs);
    },
    failed() {
      if (current()) setStatus("connection failed", "offline");
    },
    close(closeEvent) {
      if (!current()) return;
      state.connection = null;
      const topics = [...state.subscriptions];
      state.subscriptions.clear();
      renderSubscriptions();
      setConnected(false);
      if (reconnectAfter !== null) {
        // Told when: come back then, not at once with every other client
        // of the node, and take the subscriptions along.
        setStatus(`node draining: reconnecting in ${(reconnectAfter / 1000).toFixed(1)} s`, "pending");
        setTimeout(() => openConnection(signIn, topics), reconnectAfter);
        return;
      }
      lockMode(false);
      const why =
        closeEvent.code === 1000 || closeEvent.code === 1005
          ? ""
          : ` (${closeEvent.code}${closeEvent.reason ? " " + closeEvent.reason : ""})`;
      setStatus(`disconnected${why}`, "offline");
    },
  };
  try {
    connection = MODES[name].open(url, token, events);
  } catch (err) {
    lockMode(false);
    setStatus("connection failed", "offline");
    notice(err.message);
    return;
  }
  state.connection = connection;
}

function disconnect() {
  if (state.connection) state.connection.close();
}

// ---------------------------------------------------------------------------
// Development tokens: minted by the node itself (POST /api/dev/token), on a
// node started with HERALD_DEV_TOKENS=true only.

/** Shows "Sign in as" when the node mints tokens; a 404 (the usual case) leaves it hidden. */
async function discoverDevTokens() {
  try {
    const response = await fetch("/api/dev/token", { cache: "no-store" });
    if (!response.ok) return;
    const info = await response.json();
    if (!info.enabled) return;
    state.devTokens = info;
    $("dev-ttl").max = String(info.max_ttl_secs);
    $("dev-ttl").value = String(info.default_ttl_secs);
    $("dev-form").hidden = false;
  } catch {
    // No answer: no development tokens either.
  }
}

/** A fresh token for `user`, valid `ttl` seconds: {token, expires_at, jti, user}. */
async function mintToken(user, ttl) {
  const response = await fetch("/api/dev/token", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ user, ttl_secs: ttl }),
  });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(body.message || `HTTP ${response.status}`);
  return body;
}

async function signIn(event) {
  event.preventDefault();
  if (state.connection) return;
  const user = $("dev-user").value.trim();
  const typed = $("dev-ttl").value.trim();
  const ttl = typed === "" ? state.devTokens.default_ttl_secs : Number(typed);
  if (!user) {
    notice("sign in: type the user to sign in as");
    return;
  }
  try {
    const minted = await mintToken(user, ttl);
    if (state.connection) return;
    $("token").value = minted.token;
    info(`token minted for ${minted.user}, valid until ${untilText(minted.expires_at)}`);
    openConnection({ user, ttl, expiresAt: minted.expires_at });
  } catch (err) {
    notice(`sign in as ${user}: ${err.message}`);
  }
}

/**
 * The node says the session's token expires in `inMs`. A token this page
 * minted is replaced halfway through that time: a token shorter than the
 * node's notice window (30 s) gets its notice at once, and replacing it at
 * once would make the replacement's notice come at once too, round and
 * round. Any other token the person has to replace.
 */
function onExpiring(connection, signIn, inMs) {
  const seconds = Math.round(inMs / 1000);
  if (!signIn) {
    notice(`the token expires in ${seconds} s: connect again with a fresh one`);
    return;
  }
  info(`token for ${signIn.user} expires in ${seconds} s: refreshing it`);
  setTimeout(async () => {
    if (state.connection !== connection) return;
    try {
      const minted = await mintToken(signIn.user, signIn.ttl);
      await connection.refresh(minted.token);
      if (state.connection !== connection) return;
      const until = untilText(minted.expires_at);
      $("token").value = minted.token;
      $("fact-token").textContent = until;
      info(`token refreshed for ${minted.user}: valid until ${until}`);
    } catch (err) {
      if (state.connection === connection) notice(`token refresh failed: ${err.message}`);
    }
  }, Math.floor(inMs / 2));
}

function untilText(unixSeconds) {
  return new Date(unixSeconds * 1000).toLocaleTimeString();
}

/** A JWT's `exp`, read (not checked) for display; null when there is none. */
function tokenExpiry(token) {
  try {
    const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const exp = JSON.parse(atob(part)).exp;
    return typeof exp === "number" ? exp : null;
  } catch {
    return null;
  }
}

// ---------------------------------------------------------------------------
// JSON protocol: one JSON object per text frame, answers matched by `id`.

function openJson(baseUrl, token, events) {
  let url = baseUrl;
  if (token) url += (url.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(token);
  const socket = new WebSocket(url);
  let nextId = 1;
  const pending = new Map(); // id -> {resolve, reject}

  function call(op) {
    const id = String(nextId++);
    return new Promise((resolve, reject) => {
      pending.set(id, { resolve, reject });
      socket.send(JSON.stringify({ ...op, id }));
    });
  }

  function settle(frame, ok) {
    const waiter = frame.id !== undefined && pending.get(String(frame.id));
    if (!waiter) return false;
    pending.delete(String(frame.id));
    if (ok) waiter.resolve(frame);
    else waiter.reject(new Error(`${frame.code}: ${frame.message}`));
    return true;
  }

  socket.onmessage = (event) => {
    const frame = JSON.parse(event.data);
    switch (frame.op) {
      case "welcome":
        events.open({ session: frame.session, user: frame.user, nodeLabel: "Node", node: frame.node, protocol: "JSON" });
        break;
      case "message":
        events.message({
          topic: frame.topic,
          contentType: frame.encoding === "base64" ? "base64" : null,
          body: typeof frame.data === "string" ? frame.data : JSON.stringify(frame.data, null, 2),
          time: new Date(frame.ts),
          id: frame.mid,
        });
        break;
      case "ack":
      case "pong":
      case "response":
        settle(frame, true);
        break;
      case "expiring":
        events.expiring(frame.in_ms);
        break;
      case "reconnect":
        events.reconnect(frame.after_ms);
        break;
      case "error":
        if (!settle(frame, false)) events.notice(`${frame.code}: ${frame.message}`);
        break;
    }
  };
  socket.onclose = (event) => {
    for (const { reject } of pending.values()) reject(new Error("connection closed"));
    pending.clear();
    events.close(event);
  };
  socket.onerror = () => events.failed();

  return {
    subscribe: (pattern) => call({ op: "subscribe", topic: pattern }),
    unsubscribe: (pattern) => call({ op: "unsubscribe", topic: pattern }),
    publish(topic, text) {
      let data;
      try {
        data = JSON.parse(text);
      } catch {
        data = text;
      }
      return call({ op: "publish", topic, data });
    },
    refresh: (token) => call({ op: "refresh", token }),
    close: () => socket.close(1000),
  };
}

// ---------------------------------------------------------------------------
// STOMP 1.2 through @stomp/stompjs: every frame asks for a RECEIPT, so the
// page learns when the server did what was asked; a refusal is an ERROR
// (with the receipt-id) and then the close, as STOMP has it.

/** `news.#` is the destination `/topic/news.#`; `/user/queue/x`, `/app/x` stay as typed. */
function destinationFor(name) {
  return name.startsWith("/") ? name : `/topic/${name}`;
}

function contentTypeOf(text) {
  try {
    JSON.parse(text);
    return "application/json";
  } catch {
    return "text/plain;charset=utf-8";
  }
}

function utf8OrNull(bytes) {
  try {
    return new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch {
    return null;
  }
}

/** What a MESSAGE body looks like in the list: JSON pretty-printed, text as is, bytes in hex. */
function stompBody(message, contentType) {
  let text = message.body;
  if (message.isBinaryBody) {
    const bytes = message.binaryBody;
    text = utf8OrNull(bytes);
    if (text === null) {
      const shown = [...bytes.slice(0, 48)].map((b) => b.toString(16).padStart(2, "0")).join(" ");
      return `${bytes.length} bytes: ${shown}${bytes.length > 48 ? " …" : ""}`;
    }
  }
  if (/[/+]json\b/i.test(contentType)) {
    try {
      return JSON.stringify(JSON.parse(text), null, 2);
    } catch {
      // Labelled JSON but not JSON: show what came.
    }
  }
  return text;
}

function openStomp(url, token, events) {
  if (typeof StompJs === "undefined") {
    throw new Error("The STOMP client did not load (/vendor/stomp.umd.min.js); reload the page.");
  }
  const client = new StompJs.Client({
    brokerURL: url,
    connectHeaders: token ? { passcode: token } : {},
    reconnectDelay: 0, // like the JSON mode: a closed connection stays closed
  });
  const handles = new Map(); // pattern -> StompSubscription
  const pending = new Map(); // receipt -> {resolve, reject}
  let nextReceipt = 1;

  /** Runs `send(headers)` with a fresh `receipt` header; settles on its RECEIPT or ERROR. */
  function withReceipt(send) {
    const receipt = `r-${nextReceipt++}`;
    return new Promise((resolve, reject) => {
      pending.set(receipt, { resolve, reject });
      client.watchForReceipt(receipt, () => {
        if (pending.delete(receipt)) resolve();
      });
      try {
        send({ receipt });
      } catch (err) {
        pending.delete(receipt);
        reject(err);
      }
    });
  }

  function onMessage(message) {
    const contentType = message.headers["content-type"] || "";
    events.message({
      topic: message.headers.destination,
      contentType: contentType || "no content-type",
      body: stompBody(message, contentType),
      time: new Date(),
      id: message.headers["message-id"],
    });
  }

  client.onConnect = (frame) => {
    // The node tells a subscriber of /herald/expiring when the token is
    // about to run out (at once, if it already is), with the time left in
    // the `in-ms` header and the body {"in_ms": N}.
    if (token) {
      client.subscribe("/herald/expiring", (message) => {
        const inMs = Number(message.headers["in-ms"] ?? JSON.parse(message.body).in_ms);
        events.expiring(inMs);
      });
    }
    events.open({
      session: frame.headers.session,
      user: frame.headers["user-name"],
      nodeLabel: "Server",
      node: frame.headers.server,
      protocol: `STOMP ${frame.headers.version ?? ""}`.trim(),
    });
  };
  client.onStompError = (frame) => {
    const text = frame.headers.message || frame.body || "the server refused a frame";
    const after = frame.headers["x-herald-reconnect-after-ms"];
    if (after !== undefined) events.reconnect(Number(after));
    const receipt = frame.headers["receipt-id"];
    const waiter = receipt !== undefined && pending.get(receipt);
    if (waiter) {
      pending.delete(receipt);
      waiter.reject(new Error(text));
    } else {
      events.notice(`ERROR: ${text}`);
    }
  };
  client.onWebSocketError = () => events.failed();
  client.onWebSocketClose = (event) => {
    for (const { reject } of pending.values()) reject(new Error("connection closed"));
    pending.clear();
    handles.clear();
    events.close(event);
  };
  client.activate();

  return {
    async subscribe(pattern) {
      let handle;
      await withReceipt((headers) => {
        handle = client.subscribe(destinationFor(pattern), onMessage, headers);
      });
      handles.set(pattern, handle);
    },
    async unsubscribe(pattern) {
      const handle = handles.get(pattern);
      if (!handle) return;
      await withReceipt((headers) => handle.unsubscribe(headers));
      handles.delete(pattern);
    },
    publish(topic, text) {
      return withReceipt((headers) =>
        client.publish({
          destination: destinationFor(topic),
          body: text,
          headers: { ...headers, "content-type": contentTypeOf(text) },
        }),
      );
    },
    /** A fresh token goes to /herald/refresh as the passcode; a refusal is an ERROR and the close. */
    refresh: (token) =>
      withReceipt((headers) => client.publish({ destination: "/herald/refresh", headers: { ...headers, passcode: token } })),
    close: () => client.deactivate(),
  };
}

// ---------------------------------------------------------------------------
// What the person does and sees, the same in both modes.

async function subscribe(event) {
  event.preventDefault();
  const topic = $("subscribe-topic").value.trim();
  const connection = state.connection;
  if (!topic || !connection || state.subscriptions.has(topic)) return;
  if (!(await subscribeOn(connection, topic))) return;
  $("subscribe-topic").value = "";
  if (!$("publish-topic").value && !/[*#]/.test(topic)) $("publish-topic").value = topic;
}

/**
 * Subscribes `connection` to `topic` and lists it; also used to subscribe
 * again after a reconnect a draining node asked for. False when it failed
 * or the connection was replaced meanwhile.
 */
async function subscribeOn(connection, topic) {
  try {
    await connection.subscribe(topic);
    if (state.connection !== connection) return false;
    state.subscriptions.add(topic);
    renderSubscriptions();
    return true;
  } catch (err) {
    notice(`subscribe ${topic}: ${err.message}`);
    return false;
  }
}

async function unsubscribe(topic) {
  const connection = state.connection;
  if (!connection) return;
  try {
    await connection.unsubscribe(topic);
    if (state.connection !== connection) return;
    state.subscriptions.delete(topic);
    renderSubscriptions();
  } catch (err) {
    notice(`unsubscribe ${topic}: ${err.message}`);
  }
}

function renderSubscriptions() {
  const list = $("subscription-list");
  list.replaceChildren();
  for (const topic of [...state.subscriptions].sort()) {
    const item = document.createElement("li");
    const name = document.createElement("span");
    name.textContent = topic;
    const remove = document.createElement("button");
    remove.type = "button";
    remove.className = "chip-remove";
    remove.title = `Unsubscribe from ${topic}`;
    remove.setAttribute("aria-label", `Unsubscribe from ${topic}`);
    remove.textContent = "×";
    remove.onclick = () => unsubscribe(topic);
    item.append(name, remove);
    list.append(item);
  }
}

async function publish(event) {
  event.preventDefault();
  const topic = $("publish-topic").value.trim();
  const text = $("publish-data").value;
  if (!state.connection) return;
  try {
    await state.connection.publish(topic, text);
  } catch (err) {
    notice(`publish ${topic}: ${err.message}`);
  }
}

/** One received message: {topic, contentType (or null), body (text), time, id}. */
function addMessage(message) {
  state.received += 1;
  $("message-count").textContent = String(state.received);
  $("empty").hidden = true;
  const item = document.createElement("li");
  const head = document.createElement("div");
  head.className = "message-head";
  const topic = document.createElement("span");
  topic.className = "topic";
  topic.textContent = message.topic;
  head.append(topic);
  if (message.contentType) {
    const type = document.createElement("span");
    type.className = "content-type";
    type.textContent = message.contentType;
    head.append(type);
  }
  const time = document.createElement("time");
  time.textContent = message.time.toLocaleTimeString();
  time.title = `message ${message.id}`;
  head.append(time);
  const body = document.createElement("pre");
  body.textContent = message.body;
  item.append(head, body);
  prepend(item);
}

function notice(text, kind = "notice") {
  const item = document.createElement("li");
  item.className = kind;
  item.textContent = text;
  prepend(item);
}

/** A line in the log that reports, rather than warns. */
function info(text) {
  notice(text, "notice info");
}

function prepend(item) {
  const list = $("message-list");
  list.prepend(item);
  while (list.children.length > MAX_MESSAGES) list.lastElementChild.remove();
  $("empty").hidden = list.children.length > 0;
}

const STAT_LABELS = [
  ["Connections", (s) => s.connections.current],
  ["Total sessions", (s) => s.connections.total],
  ["Users online", (s) => s.users_online],
  ["Topics", (s) => s.topics],
  ["Subscriptions", (s) => s.subscriptions],
  ["Messages in", (s) => s.messages.in],
  ["Deliveries", (s) => s.messages.out],
  ["Dropped", (s) => s.messages.dropped],
  ["Broker backlog", (s) => s.broker.backlog],
  ["RabbitMQ", (s) => s.amqp.state],
  ["Uptime", (s) => formatUptime(s.uptime_s)],
];

function formatUptime(seconds) {
  const h = Math.floor(seconds / 3600);
  const m = Math.floor((seconds % 3600) / 60);
  return h ? `${h}h ${m}m` : m ? `${m}m ${seconds % 60}s` : `${seconds}s`;
}

async function refreshStats() {
  try {
    const response = await fetch("/api/stats", { cache: "no-store" });
    if (!response.ok) {
      const body = await response.json().catch(() => ({}));
      $("stats-note").textContent = `Stats unavailable: ${body.message || response.status}`;
      $("stats-note").hidden = false;
      return;
    }
    const stats = await response.json();
    const grid = $("stats-grid");
    grid.replaceChildren();
    for (const [label, read] of STAT_LABELS) {
      const cell = document.createElement("div");
      cell.className = "stat";
      const value = document.createElement("strong");
      value.textContent = String(read(stats));
      const name = document.createElement("span");
      name.textContent = label;
      cell.append(value, name);
      grid.append(cell);
    }
    $("stats-note").hidden = true;
    $("stats-age").textContent = `node ${stats.node} · updated ${new Date().toLocaleTimeString()}`;
  } catch {
    $("stats-note").textContent = "Stats unavailable: the node did not answer.";
    $("stats-note").hidden = false;
  }
}

$("url").value = defaultUrl();
onModeChange();
for (const input of document.querySelectorAll('input[name="protocol"]')) input.addEventListener("change", onModeChange);
$("connect-form").addEventListener("submit", connect);
$("disconnect").addEventListener("click", disconnect);
$("dev-form").addEventListener("submit", signIn);
$("subscribe-form").addEventListener("submit", subscribe);
$("publish-form").addEventListener("submit", publish);
$("clear").addEventListener("click", () => {
  $("message-list").replaceChildren();
  $("empty").hidden = false;
});
refreshStats();
setInterval(refreshStats, 2000);
discoverDevTokens();
