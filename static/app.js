// Herald demo page: a plain client of Herald's JSON protocol, plus a view of
// the node's /api/stats. No framework, no build step.
"use strict";

const $ = (id) => document.getElementById(id);
const MAX_MESSAGES = 200;

const state = {
  socket: null,
  nextId: 1,
  pending: new Map(), // id -> {resolve, reject}
  subscriptions: new Set(),
  received: 0,
};

function defaultUrl() {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  return `${scheme}://${location.host}/ws`;
}

function setStatus(text, kind) {
  const status = $("status");
  status.textContent = text;
  status.className = `status ${kind}`;
}

function setConnected(connected) {
  $("connect").disabled = connected;
  $("disconnect").disabled = !connected;
  for (const button of document.querySelectorAll("#subscribe-form button, #publish-form button")) {
    button.disabled = !connected;
  }
  $("session-facts").hidden = !connected;
}

function call(op) {
  const id = String(state.nextId++);
  return new Promise((resolve, reject) => {
    state.pending.set(id, { resolve, reject });
    state.socket.send(JSON.stringify({ ...op, id }));
  });
}

function connect(event) {
  event.preventDefault();
  const token = $("token").value.trim();
  let url = $("url").value.trim() || defaultUrl();
  if (token) url += (url.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(token);
  setStatus("connecting…", "pending");
  const socket = new WebSocket(url);
  state.socket = socket;
  socket.onmessage = (event) => onFrame(JSON.parse(event.data));
  socket.onclose = (event) => {
    if (state.socket !== socket) return;
    state.socket = null;
    for (const { reject } of state.pending.values()) reject(new Error("connection closed"));
    state.pending.clear();
    state.subscriptions.clear();
    renderSubscriptions();
    setConnected(false);
    const why = event.code === 1000 || event.code === 1005 ? "" : ` (${event.code}${event.reason ? " " + event.reason : ""})`;
    setStatus(`disconnected${why}`, "offline");
  };
  socket.onerror = () => setStatus("connection failed", "offline");
}

function disconnect() {
  if (state.socket) state.socket.close(1000);
}

function onFrame(frame) {
  switch (frame.op) {
    case "welcome":
      $("fact-session").textContent = frame.session;
      $("fact-user").textContent = frame.user ?? "anonymous";
      $("fact-node").textContent = frame.node;
      setConnected(true);
      setStatus("connected", "online");
      break;
    case "message":
      addMessage(frame);
      break;
    case "ack":
    case "pong":
    case "response":
      settle(frame, true);
      break;
    case "error":
      if (!settle(frame, false)) notice(`${frame.code}: ${frame.message}`);
      break;
  }
}

function settle(frame, ok) {
  const waiter = frame.id !== undefined && state.pending.get(String(frame.id));
  if (!waiter) return false;
  state.pending.delete(String(frame.id));
  if (ok) waiter.resolve(frame);
  else waiter.reject(new Error(`${frame.code}: ${frame.message}`));
  return true;
}

async function subscribe(event) {
  event.preventDefault();
  const topic = $("subscribe-topic").value.trim();
  if (!topic || state.subscriptions.has(topic)) return;
  try {
    await call({ op: "subscribe", topic });
    state.subscriptions.add(topic);
    renderSubscriptions();
    $("subscribe-topic").value = "";
    if (!$("publish-topic").value && !/[*#]/.test(topic)) $("publish-topic").value = topic;
  } catch (err) {
    notice(`subscribe ${topic}: ${err.message}`);
  }
}

async function unsubscribe(topic) {
  try {
    await call({ op: "unsubscribe", topic });
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
  let data;
  try {
    data = JSON.parse(text);
  } catch {
    data = text;
  }
  try {
    await call({ op: "publish", topic, data });
  } catch (err) {
    notice(`publish ${topic}: ${err.message}`);
  }
}

function addMessage(frame) {
  state.received += 1;
  $("message-count").textContent = String(state.received);
  $("empty").hidden = true;
  const item = document.createElement("li");
  const head = document.createElement("div");
  head.className = "message-head";
  const topic = document.createElement("span");
  topic.className = "topic";
  topic.textContent = frame.topic;
  const time = document.createElement("time");
  time.textContent = new Date(frame.ts).toLocaleTimeString();
  time.title = `message ${frame.mid}`;
  head.append(topic, time);
  const body = document.createElement("pre");
  body.textContent = typeof frame.data === "string" ? frame.data : JSON.stringify(frame.data, null, 2);
  item.append(head, body);
  prepend(item);
}

function notice(text) {
  const item = document.createElement("li");
  item.className = "notice";
  item.textContent = text;
  prepend(item);
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
$("connect-form").addEventListener("submit", connect);
$("disconnect").addEventListener("click", disconnect);
$("subscribe-form").addEventListener("submit", subscribe);
$("publish-form").addEventListener("submit", publish);
$("clear").addEventListener("click", () => {
  $("message-list").replaceChildren();
  $("empty").hidden = false;
});
refreshStats();
setInterval(refreshStats, 2000);
