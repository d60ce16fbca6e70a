// STOMP over SockJS's WebSocket transport, as a Spring-style page does it:
// the real sockjs-client under the real @stomp/stompjs, against the real
// herald binary; and the SockJS framing itself, frame by frame.
import { test, before, after, afterEach } from "node:test";
import assert from "node:assert/strict";
import SockJS from "sockjs-client";
import WebSocket from "ws";
import { startHerald, uniqueTopic } from "./herald.mjs";
import {
  StompSession,
  JsonClient,
  Inbox,
  FrameParser,
  frame,
  publishHttp,
  closeAllSessions,
  within,
  WAIT,
} from "./stomp.mjs";

const T = { timeout: 20_000 };
let node;
const opened = [];

before(async () => {
  node = await startHerald();
});
afterEach(async () => {
  for (const thing of opened.splice(0)) thing.close();
  await closeAllSessions();
});
after(async () => {
  await node?.stop();
});

/** A raw WebSocket on SockJS's websocket transport URL, reading its framing. */
async function openSockJsSocket() {
  const server = String(Math.floor(Math.random() * 1000)).padStart(3, "0");
  const session = Math.random().toString(36).slice(2, 10);
  const ws = new WebSocket(node.wsUrl(`/stomp/${server}/${session}/websocket`));
  const raw = { ws, packets: new Inbox("SockJS packets"), frames: new Inbox("STOMP frames over SockJS") };
  const parser = new FrameParser((f) => raw.frames.push(f), () => {});
  raw.closed = new Promise((resolve) => ws.on("close", (code, reason) => resolve({ code, reason: reason.toString() })));
  ws.on("error", () => {});
  ws.on("message", (data, isBinary) => {
    const text = data.toString();
    raw.packets.push({ text, isBinary });
    if (text.startsWith("a")) {
      for (const chunk of JSON.parse(text.slice(1))) parser.push(Buffer.from(chunk, "utf8"), false);
    }
  });
  raw.close = () => ws.terminate();
  await within(WAIT, new Promise((resolve, reject) => {
    ws.once("open", resolve);
    ws.once("error", reject);
  }), "the SockJS WebSocket to open");
  opened.push(raw);
  return raw;
}

/** The next SockJS packet that is not a heart-beat `h`. */
async function nextPacket(raw) {
  for (;;) {
    const packet = await raw.packets.next();
    if (packet.text !== "h") return packet;
  }
}

test("GET /stomp/info answers SockJS's info shape: websocket true, origins *:*, no cookie needed, an entropy number", T, async () => {
  const response = await fetch(node.url("/stomp/info"));
  assert.equal(response.status, 200);
  assert.match(response.headers.get("content-type") ?? "", /application\/json/);
  const info = await response.json();
  assert.deepEqual(Object.keys(info).sort(), ["cookie_needed", "entropy", "origins", "websocket"]);
  assert.equal(info.websocket, true);
  assert.deepEqual(info.origins, ["*:*"]);
  assert.equal(info.cookie_needed, false);
  assert.ok(Number.isInteger(info.entropy), `entropy ${info.entropy} is an integer`);
});

test("stompjs over the real sockjs-client (websocket transport) connects, subscribes, receives a POST /api/publish, sends to a /topic and disconnects", T, async () => {
  const topic = uniqueTopic("sockjs.stompjs");
  let disconnected;
  const session = await StompSession.open(null, {
    webSocketFactory: () => new SockJS(node.url("/stomp"), null, { transports: ["websocket"] }),
    onDisconnect: (receipt) => (disconnected = receipt),
  });
  assert.equal(session.connected.headers.version, "1.2");
  assert.match(session.connected.headers.session, /^s-/);
  const { inbox } = await session.subscribe(`/topic/${topic}`);

  await publishHttp(node, topic, { from: "http", n: 1 });
  const fromHttp = await inbox.next();
  assert.deepEqual(JSON.parse(fromHttp.body), { from: "http", n: 1 });
  assert.equal(fromHttp.headers["content-type"], "application/json");
  assert.equal(fromHttp.headers.destination, `/topic/${topic}`);

  const json = await JsonClient.open(node.wsUrl("/ws"));
  opened.push(json);
  await json.expectAck({ op: "subscribe", topic });
  await session.send(`/topic/${topic}`, '{"from":"sockjs"}', { "content-type": "application/json" });
  assert.equal((await inbox.next()).body, '{"from":"sockjs"}', "the sender's own subscription gets it byte-exact");
  assert.deepEqual((await json.messages.next()).data, { from: "sockjs" });

  await session.close();
  assert.ok(disconnected, "the DISCONNECT's RECEIPT arrived through SockJS");
  await within(WAIT, session.closed, "the SockJS socket to close");
});

test("SockJS framing on /stomp/{server}/{session}/websocket: o first, frames as a[...], client arrays and strings accepted, c[...] before the close", T, async () => {
  const topic = uniqueTopic("sockjs.raw");
  const raw = await openSockJsSocket();
  assert.equal((await nextPacket(raw)).text, "o", "the open frame comes first");

  raw.ws.send(JSON.stringify([frame("CONNECT", { "accept-version": "1.2", host: "herald" }).toString("utf8")]));
  const packet = await nextPacket(raw);
  assert.match(packet.text, /^a\["CONNECTED\\n/, "STOMP frames arrive inside a[...]");
  const connected = await raw.frames.next();
  assert.equal(connected.command, "CONNECTED");
  assert.equal(connected.headers.version, "1.2");

  // Two frames in one array, then one frame as a bare JSON string.
  raw.ws.send(JSON.stringify([
    frame("SUBSCRIBE", { destination: `/topic/${topic}`, id: "0", receipt: "sub-0" }).toString("utf8"),
    frame("SUBSCRIBE", { destination: `/topic/${topic}`, id: "1", receipt: "sub-1" }).toString("utf8"),
  ]));
  const receipts = [await raw.frames.next(), await raw.frames.next()];
  assert.deepEqual(receipts.map((f) => `${f.command} ${f.headers["receipt-id"]}`).sort(), ["RECEIPT sub-0", "RECEIPT sub-1"]);
  raw.ws.send(JSON.stringify(frame("SEND", { destination: `/topic/${topic}`, "content-type": "text/plain" }, "über sockjs").toString("utf8")));
  const messages = [await raw.frames.next(), await raw.frames.next()];
  assert.deepEqual(messages.map((f) => `${f.command} ${f.headers.subscription} ${f.text}`).sort(), [
    "MESSAGE 0 über sockjs",
    "MESSAGE 1 über sockjs",
  ]);

  raw.ws.send(JSON.stringify([frame("DISCONNECT", { receipt: "bye" }).toString("utf8")]));
  const bye = await raw.frames.next();
  assert.equal(bye.command, "RECEIPT");
  assert.equal(bye.headers["receipt-id"], "bye");
  let closing;
  do closing = await nextPacket(raw);
  while (closing.text.startsWith("a"));
  assert.match(closing.text, /^c\[\d+,".*"\]$/, "c[code,reason] before the close");
  const [code, reason] = JSON.parse(closing.text.slice(1));
  assert.ok(Number.isInteger(code) && typeof reason === "string");
  await within(WAIT, raw.closed, "the close after c[...]");
});

test("SockJS's xhr-streaming and xhr-polling transports are not served (404)", T, async () => {
  for (const transport of ["xhr_streaming", "xhr", "xhr_send", "eventsource"]) {
    const response = await fetch(node.url(`/stomp/000/nostream1/${transport}`), { method: transport === "eventsource" ? "GET" : "POST" });
    assert.equal(response.status, 404, `${transport} answers 404`);
    await response.arrayBuffer();
  }
});
