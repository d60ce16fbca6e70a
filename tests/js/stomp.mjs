// Helpers for the STOMP tests: a real @stomp/stompjs client that waits for
// RECEIPTs, a raw STOMP socket (frame builder and parser) for what a well
// behaved client never sends, a JSON-protocol client, HTTP publishing, a
// signed JWT, and a RabbitMQ connection through amqplib.
import { createHmac } from "node:crypto";
import { Client } from "@stomp/stompjs";
import WebSocket from "ws";
import amqp from "amqplib";
import { amqpUrl } from "./herald.mjs";

/** How long any single expected event may take. */
export const WAIT = 5_000;

export const STOMP_PROTOCOLS = ["v12.stomp", "v11.stomp", "v10.stomp"];

/** An HS256 JWT for `sub`, expiring `ttlSeconds` from now. */
export function signToken(secret, sub, ttlSeconds = 3600, claims = {}) {
  const part = (value) => Buffer.from(JSON.stringify(value)).toString("base64url");
  const head = part({ alg: "HS256", typ: "JWT" });
  const body = part({ sub, exp: Math.floor(Date.now() / 1000) + ttlSeconds, ...claims });
  const signature = createHmac("sha256", secret).update(`${head}.${body}`).digest("base64url");
  return `${head}.${body}.${signature}`;
}

/** Rejects with `what` when `promise` has not settled within `ms`. */
export function within(ms, promise, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** A queue of arriving things that a test awaits one at a time. */
export class Inbox {
  constructor(name) {
    this.name = name;
    this.items = [];
    this.waiters = [];
  }

  push(item) {
    const waiter = this.waiters.shift();
    if (waiter) waiter(item);
    else this.items.push(item);
  }

  next(ms = WAIT) {
    if (this.items.length > 0) return Promise.resolve(this.items.shift());
    let resolve;
    const arrived = new Promise((r) => {
      resolve = r;
      this.waiters.push(r);
    });
    return within(ms, arrived, `the next item on ${this.name}`).catch((err) => {
      this.waiters = this.waiters.filter((w) => w !== resolve);
      throw err;
    });
  }
}

// ---------------------------------------------------------------------------
// The real @stomp/stompjs client

const openSessions = new Set();
let receiptCounter = 0;

/** A receipt id no other frame of this process uses. */
export function freshReceipt(prefix = "r") {
  receiptCounter += 1;
  return `${prefix}-${process.pid}-${receiptCounter}`;
}

/**
 * A connected @stomp/stompjs Client with what happened to it recorded:
 * `connected` (the CONNECTED frame), `errors` (ERROR frames), `closed` (a
 * promise of the WebSocket's close event), `heartbeats` (EOLs received),
 * `unhandled` (MESSAGEs for no live subscription).
 */
export class StompSession {
  /**
   * Opens `url` (a ws:// URL, or anything when `webSocketFactory` is given)
   * and waits for CONNECTED. Rejects with the ERROR frame's message (the
   * error carries `.frame` and `.session`) when the server refuses.
   */
  static async open(url, { connectHeaders = {}, webSocketFactory, protocols = STOMP_PROTOCOLS, ...config } = {}) {
    const session = new StompSession();
    let connected;
    let refused;
    const outcome = new Promise((resolve, reject) => {
      connected = resolve;
      refused = reject;
    });
    let resolveClosed;
    session.closed = new Promise((resolve) => {
      resolveClosed = resolve;
    });
    session.client = new Client({
      webSocketFactory: webSocketFactory ?? (() => new WebSocket(url, protocols)),
      connectHeaders,
      reconnectDelay: 0,
      connectionTimeout: WAIT,
      debug: (line) => session.log.push(line),
      onConnect: (frame) => {
        session.connected = frame;
        connected(session);
      },
      onStompError: (frame) => {
        session.errors.push(frame);
        for (const fail of session.pending.values()) fail(frame);
        const err = new Error(`ERROR frame: ${frame.headers.message}`);
        err.frame = frame;
        err.session = session;
        refused(err);
      },
      onUnhandledMessage: (message) => session.unhandled.push(message),
      onHeartbeatReceived: () => {
        session.heartbeats += 1;
      },
      onHeartbeatLost: () => {
        session.heartbeatsLost += 1;
      },
      onWebSocketClose: (event) => {
        openSessions.delete(session);
        session.closeEvent = event;
        resolveClosed(event);
        const err = new Error(`WebSocket closed (${event.code} ${event.reason}) before CONNECTED`);
        err.session = session;
        err.closeEvent = event;
        refused(err);
      },
      ...config,
    });
    session.client.activate();
    openSessions.add(session);
    return within(WAIT * 2, outcome, `CONNECTED from ${url}`);
  }

  constructor() {
    this.errors = [];
    this.log = [];
    this.heartbeats = 0;
    this.heartbeatsLost = 0;
    this.unhandled = [];
    this.pending = new Map();
  }

  /** Resolves with the RECEIPT for `id`; rejects on an ERROR or after WAIT. */
  receipt(id) {
    const arrived = new Promise((resolve, reject) => {
      this.pending.set(id, (frame) => reject(new Error(`ERROR instead of RECEIPT ${id}: ${frame.headers.message}`)));
      this.client.watchForReceipt(id, (frame) => {
        this.pending.delete(id);
        resolve(frame);
      });
    });
    return within(WAIT, arrived, `RECEIPT ${id}`).finally(() => this.pending.delete(id));
  }

  /** Subscribes and waits for its RECEIPT; returns the subscription and an Inbox of its MESSAGEs. */
  async subscribe(destination, headers = {}) {
    const inbox = new Inbox(`subscription to ${destination}`);
    const id = freshReceipt("sub");
    const receipt = this.receipt(id);
    const subscription = this.client.subscribe(destination, (message) => inbox.push(message), { ...headers, receipt: id });
    await receipt;
    return { subscription, inbox, id: subscription.id };
  }

  /** SEND with a receipt; resolves with the RECEIPT. `body` may be a string or bytes. */
  async send(destination, body, headers = {}) {
    const id = freshReceipt("send");
    const receipt = this.receipt(id);
    const frame = { destination, headers: { ...headers, receipt: id } };
    if (typeof body === "string") frame.body = body;
    else frame.binaryBody = body;
    this.client.publish(frame);
    return receipt;
  }

  /** Disconnects the way stompjs does (DISCONNECT with a receipt, then close). */
  async close() {
    await within(WAIT, this.client.deactivate(), "stompjs to deactivate");
    openSessions.delete(this);
  }
}

/** Ends every StompSession a test left open. */
export async function closeAllSessions() {
  const sessions = [...openSessions];
  openSessions.clear();
  await Promise.all(sessions.map((s) => s.client.deactivate({ force: true }).catch(() => {})));
}

/** The bytes of a stompjs message, whatever kind of WebSocket message carried it. */
export function bodyBytes(message) {
  return Buffer.from(message.binaryBody);
}

// ---------------------------------------------------------------------------
// Raw STOMP frames

function escapeHeader(value) {
  return String(value).replace(/\\/g, "\\\\").replace(/\r/g, "\\r").replace(/\n/g, "\\n").replace(/:/g, "\\c");
}

function unescapeHeader(value) {
  return value.replace(/\\(.)/g, (_, c) => ({ "\\": "\\", r: "\r", n: "\n", c: ":" })[c] ?? `\\${c}`);
}

/**
 * The bytes of one STOMP frame. Header values are escaped as STOMP 1.2 says
 * (except on CONNECT/STOMP, which are never escaped); `rawHeaders` lines go
 * in as given, for frames that must be malformed.
 */
export function frame(command, headers = {}, body = "", { rawHeaders = [] } = {}) {
  const escape = command === "CONNECT" || command === "STOMP" ? String : escapeHeader;
  const lines = [command, ...Object.entries(headers).map(([k, v]) => `${k}:${escape(v)}`), ...rawHeaders];
  return Buffer.concat([Buffer.from(`${lines.join("\n")}\n\n`), Buffer.from(body), Buffer.from([0])]);
}

/** Parses STOMP frames out of a byte stream; EOLs between frames count as heart-beats. */
export class FrameParser {
  constructor(onFrame, onHeartbeat) {
    this.buffer = Buffer.alloc(0);
    this.onFrame = onFrame;
    this.onHeartbeat = onHeartbeat;
  }

  push(chunk, binary) {
    this.buffer = Buffer.concat([this.buffer, chunk]);
    for (;;) {
      while (this.buffer.length > 0 && (this.buffer[0] === 0x0a || (this.buffer[0] === 0x0d && this.buffer[1] === 0x0a))) {
        this.buffer = this.buffer.subarray(this.buffer[0] === 0x0a ? 1 : 2);
        this.onHeartbeat();
      }
      const end = this.buffer.indexOf("\n\n");
      const endCrlf = this.buffer.indexOf("\r\n\r\n");
      let headEnd;
      let bodyStart;
      if (end >= 0 && (endCrlf < 0 || end < endCrlf)) {
        headEnd = end;
        bodyStart = end + 2;
      } else if (endCrlf >= 0) {
        headEnd = endCrlf;
        bodyStart = endCrlf + 4;
      } else {
        return;
      }
      const [command, ...headerLines] = this.buffer.subarray(0, headEnd).toString("utf8").split(/\r?\n/);
      const headers = {};
      for (const line of headerLines) {
        const colon = line.indexOf(":");
        const key = line.slice(0, colon);
        const raw = line.slice(colon + 1);
        const value = command === "CONNECTED" ? raw : unescapeHeader(raw);
        if (!(key in headers)) headers[key] = value;
      }
      let bodyEnd;
      if (headers["content-length"] !== undefined) {
        bodyEnd = bodyStart + Number(headers["content-length"]);
        if (this.buffer.length < bodyEnd + 1) return;
        if (this.buffer[bodyEnd] !== 0) throw new Error(`server frame ${command}: no NUL after content-length bytes`);
      } else {
        bodyEnd = this.buffer.indexOf(0, bodyStart);
        if (bodyEnd < 0) return;
      }
      const body = Buffer.from(this.buffer.subarray(bodyStart, bodyEnd));
      this.buffer = this.buffer.subarray(bodyEnd + 1);
      this.onFrame({ command, headers, body, text: body.toString("utf8"), binary });
    }
  }
}

/** The pseudo-frame RawStomp reads once the WebSocket has closed. */
export const CLOSED = "(closed)";

/** A WebSocket speaking STOMP frame by frame, with nothing done for the test. */
export class RawStomp {
  /** Opens `url` offering `protocols`; resolves once the socket is open. */
  static async open(url, protocols = ["v12.stomp"], options = {}) {
    const raw = new RawStomp(new WebSocket(url, protocols, options));
    await within(WAIT, new Promise((resolve, reject) => {
      raw.ws.once("open", resolve);
      raw.ws.once("error", reject);
    }), `the WebSocket to ${url} to open`);
    return raw;
  }

  constructor(ws) {
    this.ws = ws;
    this.frames = new Inbox("frames from the server");
    this.heartbeats = 0;
    this.lastHeartbeat = 0;
    this.parser = new FrameParser(
      (f) => this.frames.push(f),
      () => {
        this.heartbeats += 1;
        this.lastHeartbeat = Date.now();
      },
    );
    this.closed = new Promise((resolve) => {
      ws.on("close", (code, reason) => {
        this.closedAt = Date.now();
        const close = { code, reason: reason.toString() };
        // Whoever waits for a frame learns at once that none will come.
        this.frames.push({ command: CLOSED, headers: {}, body: Buffer.alloc(0), text: `closed ${code} ${close.reason}`, close });
        resolve(close);
      });
    });
    ws.on("error", () => {});
    ws.on("message", (data, isBinary) => this.parser.push(Buffer.from(data), isBinary));
  }

  /** Sends bytes or text as one WebSocket message (text unless `binary`). */
  send(data, { binary = false } = {}) {
    this.ws.send(data, { binary });
  }

  /** Sends one or more frames (from `frame()`) in one WebSocket text message. */
  sendFrames(...frames) {
    this.send(Buffer.concat(frames), { binary: false });
  }

  /** The next frame; rejects when none comes within `ms`. */
  next(ms = WAIT) {
    return this.frames.next(ms);
  }

  /** The next frame, asserted to be `command`. */
  async expect(command, ms = WAIT) {
    const got = await this.next(ms);
    if (got.command !== command) {
      throw new Error(`expected ${command}, got ${got.command} ${JSON.stringify(got.headers)} ${got.text}`);
    }
    return got;
  }

  /** CONNECT (accept-version 1.2 unless told) and the CONNECTED answer. */
  async connect(headers = {}) {
    this.sendFrames(frame("CONNECT", { "accept-version": "1.2", host: "herald", ...headers }));
    return this.expect("CONNECTED");
  }

  /** The close event, within `ms`. */
  expectClose(ms = WAIT) {
    return within(ms, this.closed, "the server to close the WebSocket");
  }

  terminate() {
    this.ws.terminate();
  }
}

// ---------------------------------------------------------------------------
// The JSON protocol and the HTTP API

/** A client of Herald's JSON protocol (`GET /ws` without a STOMP subprotocol). */
export class JsonClient {
  static async open(url) {
    const client = new JsonClient(new WebSocket(url));
    client.welcome = await client.frames.next();
    if (client.welcome.op !== "welcome") throw new Error(`expected a welcome, got ${JSON.stringify(client.welcome)}`);
    return client;
  }

  constructor(ws) {
    this.ws = ws;
    this.frames = new Inbox("JSON frames");
    this.messages = new Inbox("JSON messages");
    this.replies = new Map();
    this.nextId = 0;
    ws.on("error", () => {});
    ws.on("message", (data) => {
      const value = JSON.parse(data.toString());
      if (value.op === "message") this.messages.push(value);
      else if (value.id !== undefined && this.replies.has(value.id)) {
        this.replies.get(value.id)(value);
        this.replies.delete(value.id);
      } else this.frames.push(value);
    });
  }

  /** Sends an op with a fresh id and resolves with the reply for it. */
  call(op) {
    this.nextId += 1;
    const id = String(this.nextId);
    const reply = new Promise((resolve) => this.replies.set(id, resolve));
    this.ws.send(JSON.stringify({ ...op, id }));
    return within(WAIT, reply, `the reply to ${JSON.stringify(op)}`);
  }

  async expectAck(op) {
    const reply = await this.call(op);
    if (reply.op !== "ack") throw new Error(`expected an ack for ${JSON.stringify(op)}, got ${JSON.stringify(reply)}`);
    return reply;
  }

  close() {
    this.ws.close();
  }
}

async function post(node, path, body) {
  const response = await fetch(node.url(path), {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(body),
  });
  const text = await response.text();
  if (response.status !== 202) throw new Error(`POST ${path} answered ${response.status}: ${text}`);
  return JSON.parse(text);
}

/** `POST /api/publish`, asserting 202. */
export function publishHttp(node, topic, data) {
  return post(node, "/api/publish", { topic, data });
}

/** `POST /api/users/{user}/messages`, asserting 202. */
export function messageUser(node, user, data) {
  return post(node, `/api/users/${encodeURIComponent(user)}/messages`, { data });
}

// ---------------------------------------------------------------------------
// RabbitMQ as a microservice sees it

/** A connection with a confirm channel, for publishing and consuming in tests. */
export async function connectRabbit() {
  const connection = await amqp.connect(amqpUrl());
  const channel = await connection.createConfirmChannel();
  return {
    connection,
    channel,
    /** Publishes and waits for RabbitMQ's confirm. */
    async publish(exchange, routingKey, body, options = {}) {
      await new Promise((resolve, reject) => {
        channel.publish(exchange, routingKey, Buffer.from(body), options, (err) => (err ? reject(err) : resolve()));
      });
    },
    async close() {
      await connection.close().catch(() => {});
    },
  };
}
