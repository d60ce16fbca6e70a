// STOMP 1.2 over WebSocket, end to end: the real @stomp/stompjs client (and
// raw STOMP frames where a real client would never send them) against the
// real herald binary and, where the test says so, a real RabbitMQ.
import { describe, test, before, after, afterEach } from "node:test";
import assert from "node:assert/strict";
import { setTimeout as sleep } from "node:timers/promises";
import { startHerald, amqpUrl, uniqueTopic } from "./herald.mjs";
import {
  WAIT,
  StompSession,
  RawStomp,
  CLOSED,
  JsonClient,
  Inbox,
  frame,
  signToken,
  publishHttp,
  messageUser,
  connectRabbit,
  closeAllSessions,
  bodyBytes,
  freshReceipt,
  within,
} from "./stomp.mjs";

const SECRET = "js-stomp-secret";
const T = { timeout: 20_000 };

// Raw sockets and JSON clients a test opened, ended after it.
const opened = [];
function track(thing) {
  opened.push(thing);
  return thing;
}
afterEach(async () => {
  for (const thing of opened.splice(0)) {
    if (thing instanceof RawStomp) thing.terminate();
    else thing.close();
  }
  await closeAllSessions();
});

/** `topic` with `/` separators, as a STOMP destination may spell it. */
const slashed = (topic) => topic.replaceAll(".", "/");

/** Reads frames until `count` arrived; returns them in order. */
async function frames(raw, count) {
  const got = [];
  while (got.length < count) got.push(await raw.next());
  return got;
}

/** The ERROR frame the server must answer with, then its close with `code`. */
async function expectRefusal(raw, { code, receipt } = {}) {
  const error = await raw.expect("ERROR");
  assert.ok(error.headers.message && error.headers.message.trim().length > 0, `ERROR without a message: ${JSON.stringify(error.headers)}`);
  if (receipt !== undefined) assert.equal(error.headers["receipt-id"], receipt, "ERROR echoes the offending frame's receipt");
  const close = await raw.expectClose();
  if (code !== undefined) assert.equal(close.code, code, `close code after ERROR "${error.headers.message}"`);
  return { error, close };
}

// ---------------------------------------------------------------------------

describe("a node with JWT checking and RabbitMQ", () => {
  const nodeId = `js-stomp-${process.pid}`;
  let node;
  let rabbit;

  before(async () => {
    node = await startHerald(["--jwt-secret", SECRET, "--amqp-url", amqpUrl(), "--node-id", nodeId], { ready: true });
    rabbit = await connectRabbit();
  });
  after(async () => {
    await closeAllSessions();
    await rabbit?.close();
    await node?.stop();
  });

  const stomp = () => node.wsUrl("/stomp");
  const tokenFor = (user) => signToken(SECRET, user);

  // 1. CONNECT and who the session is

  test("CONNECT without a token is anonymous: CONNECTED carries version 1.2, heart-beat, session, server and no user-name", T, async () => {
    const session = await StompSession.open(stomp());
    const headers = session.connected.headers;
    assert.equal(headers.version, "1.2");
    assert.equal(headers["heart-beat"], "10000,10000");
    assert.match(headers.session, /^s-\S+/);
    assert.match(headers.server, /^herald\/\S+/);
    assert.equal(headers["user-name"], undefined);
    await session.close();
  });

  test("a token in CONNECT's passcode header signs the session in: CONNECTED user-name", T, async () => {
    const session = await StompSession.open(stomp(), { connectHeaders: { passcode: tokenFor("alice") } });
    assert.equal(session.connected.headers["user-name"], "alice");
    await session.close();
  });

  test("a token in CONNECT's Authorization: Bearer header signs the session in: CONNECTED user-name", T, async () => {
    const session = await StompSession.open(stomp(), { connectHeaders: { Authorization: `Bearer ${tokenFor("bob")}` } });
    assert.equal(session.connected.headers["user-name"], "bob");
    await session.close();
  });

  test("a token in the handshake URL (?token=) signs the STOMP session in", T, async () => {
    const session = await StompSession.open(`${stomp()}?token=${tokenFor("carol")}`);
    assert.equal(session.connected.headers["user-name"], "carol");
    await session.close();
  });

  test("an expired token in CONNECT gets ERROR with a message, then the close", T, async () => {
    const raw = track(await RawStomp.open(stomp()));
    raw.sendFrames(frame("CONNECT", { "accept-version": "1.2", host: "herald", passcode: signToken(SECRET, "alice", -3600) }));
    await expectRefusal(raw);
  });

  test("a token signed with another secret in CONNECT gets ERROR, then the close", T, async () => {
    const raw = track(await RawStomp.open(stomp()));
    raw.sendFrames(frame("CONNECT", { "accept-version": "1.2", host: "herald", passcode: signToken("not-the-secret", "alice") }));
    await expectRefusal(raw);
  });

  test("a handshake token and a CONNECT token for different users get ERROR, then the close", T, async () => {
    const raw = track(await RawStomp.open(`${stomp()}?token=${tokenFor("alice")}`));
    raw.sendFrames(frame("CONNECT", { "accept-version": "1.2", host: "herald", passcode: tokenFor("mallory") }));
    await expectRefusal(raw);
  });

  // 2. /topic subscriptions and where messages come from

  test("a message a service publishes to herald.topics through RabbitMQ reaches a /topic subscriber byte-exact, with its content-type and message id", T, async () => {
    const topic = uniqueTopic("stomp.amqp");
    const session = await StompSession.open(stomp());
    const { inbox, id } = await session.subscribe(`/topic/${topic}`);
    const body = Buffer.from("plain words from a service: héllo ✓\nsecond line");
    const messageId = `svc-${topic}`;
    await rabbit.publish("herald.topics", topic, body, { contentType: "text/plain;charset=utf-8", messageId });
    const message = await inbox.next();
    assert.deepEqual(bodyBytes(message), body);
    assert.equal(message.headers["content-type"], "text/plain;charset=utf-8");
    assert.equal(message.headers["content-length"], String(body.length));
    assert.equal(message.headers.destination, `/topic/${topic}`);
    assert.equal(message.headers.subscription, id);
    assert.equal(message.headers["message-id"], messageId);
    await session.close();
  });

  test("a binary message from RabbitMQ reaches a STOMP subscriber byte-exact as a binary WebSocket message with content-length", T, async () => {
    const topic = uniqueTopic("stomp.amqp.bin");
    const raw = track(await RawStomp.open(stomp()));
    await raw.connect();
    raw.sendFrames(frame("SUBSCRIBE", { destination: `/topic/${topic}`, id: "bin", receipt: "sub-bin" }));
    assert.equal((await raw.expect("RECEIPT")).headers["receipt-id"], "sub-bin");
    const body = Buffer.from([0x00, 0x01, 0xff, 0xfe, 0x80, 0x0a, 0x00, 0xc3]);
    await rabbit.publish("herald.topics", topic, body, { contentType: "application/octet-stream" });
    const message = await raw.expect("MESSAGE");
    assert.equal(message.binary, true, "a non-UTF-8 frame goes out as a binary WebSocket message");
    assert.deepEqual(message.body, body);
    assert.equal(message.headers["content-length"], String(body.length));
    assert.equal(message.headers["content-type"], "application/octet-stream");
    assert.equal(message.headers.subscription, "bin");
  });

  test("a JSON client's publish reaches a STOMP subscriber as the JSON text of data with content-type application/json", T, async () => {
    const topic = uniqueTopic("stomp.fromjson");
    const session = await StompSession.open(stomp());
    const { inbox } = await session.subscribe(`/topic/${topic}`);
    const json = track(await JsonClient.open(node.wsUrl("/ws")));
    // Keys in sorted order and compact, so the JSON text is the same however it is re-encoded.
    const data = { a: 1, list: [true, null, "x"], text: "from a JSON client" };
    await json.expectAck({ op: "publish", topic, data });
    const message = await inbox.next();
    assert.equal(message.body, JSON.stringify(data));
    assert.equal(message.headers["content-type"], "application/json");
    assert.equal(message.headers.destination, `/topic/${topic}`);
    assert.ok(message.headers["message-id"]);
    await session.close();
  });

  test("a POST /api/publish reaches a STOMP subscriber as the JSON text of data with content-type application/json", T, async () => {
    const topic = uniqueTopic("stomp.fromhttp");
    const session = await StompSession.open(stomp());
    const { inbox } = await session.subscribe(`/topic/${topic}`);
    const data = { n: 7, via: "http" };
    await publishHttp(node, topic, data);
    const message = await inbox.next();
    assert.equal(message.body, JSON.stringify(data));
    assert.deepEqual(JSON.parse(message.body), data);
    assert.equal(message.headers["content-type"], "application/json");
    await session.close();
  });

  test("a STOMP SEND to /topic/T with a JSON body reaches a JSON subscriber as that JSON value", T, async () => {
    const topic = uniqueTopic("stomp.tojson");
    const json = track(await JsonClient.open(node.wsUrl("/ws")));
    await json.expectAck({ op: "subscribe", topic });
    const session = await StompSession.open(stomp());
    await session.send(`/topic/${topic}`, JSON.stringify({ sku: 42, tags: ["a", "b"] }), { "content-type": "application/json" });
    await session.send(`/topic/${topic}`, "[1,2,3]");
    const first = await json.messages.next();
    assert.equal(first.topic, topic);
    assert.deepEqual(first.data, { sku: 42, tags: ["a", "b"] });
    const second = await json.messages.next();
    assert.deepEqual(second.data, [1, 2, 3], "a JSON body without content-type is a JSON value too");
    await session.close();
  });

  test("a STOMP SEND with a text body reaches a JSON subscriber as a string", T, async () => {
    const topic = uniqueTopic("stomp.totext");
    const json = track(await JsonClient.open(node.wsUrl("/ws")));
    await json.expectAck({ op: "subscribe", topic });
    const session = await StompSession.open(stomp());
    await session.send(`/topic/${topic}`, "hello, plain words ✓");
    await session.send(`/topic/${topic}`, "{not json", { "content-type": "application/json" });
    const first = await json.messages.next();
    assert.equal(first.data, "hello, plain words ✓");
    assert.equal(first.encoding, undefined);
    const second = await json.messages.next();
    assert.equal(second.data, "{not json", "a body that is not JSON is a string, whatever its content-type says");
    await session.close();
  });

  test("a STOMP SEND with a binary body reaches a JSON subscriber as base64 with encoding base64", T, async () => {
    const topic = uniqueTopic("stomp.tobase64");
    const json = track(await JsonClient.open(node.wsUrl("/ws")));
    await json.expectAck({ op: "subscribe", topic });
    const session = await StompSession.open(stomp());
    const body = new Uint8Array([0xff, 0x00, 0x80, 0x7f]);
    await session.send(`/topic/${topic}`, body, { "content-type": "application/octet-stream" });
    const message = await json.messages.next();
    assert.equal(message.encoding, "base64");
    assert.equal(message.data, Buffer.from(body).toString("base64"));
    await session.close();
  });

  test("a STOMP SEND reaches a STOMP subscriber byte-exact, labelled JSON, text or octet-stream when it had no content-type", T, async () => {
    const topic = uniqueTopic("stomp.tostomp");
    const receiver = await StompSession.open(stomp());
    const { inbox } = await receiver.subscribe(`/topic/${topic}`);
    const sender = await StompSession.open(stomp());
    const binary = new Uint8Array([0xc3, 0x28, 0x00, 0xa0]);
    await sender.send(`/topic/${topic}`, '{"k": [1, 2]}');
    await sender.send(`/topic/${topic}`, "just text ✓");
    await sender.send(`/topic/${topic}`, binary);
    await sender.send(`/topic/${topic}`, "<p>kept</p>", { "content-type": "text/html" });
    const json = await inbox.next();
    assert.equal(json.body, '{"k": [1, 2]}', "byte-exact, whitespace kept");
    assert.equal(json.headers["content-type"], "application/json");
    const text = await inbox.next();
    assert.equal(text.body, "just text ✓");
    assert.equal(text.headers["content-type"], "text/plain;charset=utf-8");
    const bytes = await inbox.next();
    assert.deepEqual(bodyBytes(bytes), Buffer.from(binary));
    assert.equal(bytes.headers["content-type"], "application/octet-stream");
    const html = await inbox.next();
    assert.equal(html.body, "<p>kept</p>");
    assert.equal(html.headers["content-type"], "text/html");
    await sender.close();
    await receiver.close();
  });

  test("a wildcard subscription's MESSAGE names /topic/<topic>, an exact one spelled with / names the subscribed destination, and each gets its own MESSAGE", T, async () => {
    const base = uniqueTopic("stomp.dest");
    const session = await StompSession.open(stomp());
    const wildcard = await session.subscribe(`/topic/${base}.*`);
    const exact = await session.subscribe(`/topic/${slashed(base)}/a`);
    const deep = await session.subscribe(`/topic/${base}.#`);
    await publishHttp(node, `${base}.a`, { n: 1 });
    const viaWildcard = await wildcard.inbox.next();
    assert.equal(viaWildcard.headers.destination, `/topic/${base}.a`);
    assert.equal(viaWildcard.headers.subscription, wildcard.id);
    const viaExact = await exact.inbox.next();
    assert.equal(viaExact.headers.destination, `/topic/${slashed(base)}/a`);
    assert.equal(viaExact.headers.subscription, exact.id);
    const viaDeep = await deep.inbox.next();
    assert.equal(viaDeep.headers.destination, `/topic/${base}.a`);
    assert.deepEqual(JSON.parse(viaDeep.body), { n: 1 });
    await session.close();
  });

  test("UNSUBSCRIBE gets its RECEIPT and ends that subscription's MESSAGEs; an unknown id gets a RECEIPT too", T, async () => {
    const topic = uniqueTopic("stomp.unsub");
    const session = await StompSession.open(stomp());
    const gone = await session.subscribe(`/topic/${topic}`);
    const kept = await session.subscribe(`/topic/${topic}`);
    const receipt = freshReceipt("unsub");
    const unsubscribed = session.receipt(receipt);
    gone.subscription.unsubscribe({ receipt });
    await unsubscribed;
    await publishHttp(node, topic, 1);
    await publishHttp(node, topic, 2);
    assert.equal((await kept.inbox.next()).body, "1");
    assert.equal((await kept.inbox.next()).body, "2");
    assert.equal(gone.inbox.items.length, 0);
    assert.deepEqual(session.unhandled.map((m) => m.headers.subscription), [], "no MESSAGE for the ended subscription");
    const unknown = freshReceipt("unsub-unknown");
    const idempotent = session.receipt(unknown);
    session.client.unsubscribe("never-subscribed", { receipt: unknown });
    await idempotent;
    await session.close();
  });

  test("with ack:client-individual a MESSAGE carries an ack header, and ACK and NACK get their RECEIPTs", T, async () => {
    const topic = uniqueTopic("stomp.ack");
    const session = await StompSession.open(stomp());
    const { inbox } = await session.subscribe(`/topic/${topic}`, { ack: "client-individual" });
    await publishHttp(node, topic, "one");
    await publishHttp(node, topic, "two");
    const first = await inbox.next();
    assert.ok(first.headers.ack, "MESSAGE carries ack");
    const acked = freshReceipt("ack");
    const ackReceipt = session.receipt(acked);
    first.ack({ receipt: acked });
    await ackReceipt;
    const second = await inbox.next();
    assert.ok(second.headers.ack);
    assert.notEqual(second.headers.ack, first.headers.ack);
    const nacked = freshReceipt("nack");
    const nackReceipt = session.receipt(nacked);
    second.nack({ receipt: nacked });
    await nackReceipt;
    await session.close();
  });

  test("SENDs in a transaction are held until COMMIT and dropped by ABORT", T, async () => {
    const topic = uniqueTopic("stomp.tx");
    const raw = track(await RawStomp.open(stomp()));
    await raw.connect();
    raw.sendFrames(frame("SUBSCRIBE", { destination: `/topic/${topic}`, id: "s", receipt: "sub" }));
    await raw.expect("RECEIPT");
    raw.sendFrames(
      frame("BEGIN", { transaction: "t1" }),
      frame("SEND", { destination: `/topic/${topic}`, transaction: "t1", "content-type": "text/plain" }, "held"),
      frame("SEND", { destination: `/topic/${topic}`, "content-type": "text/plain", receipt: "direct" }, "direct"),
    );
    const early = await frames(raw, 2);
    assert.deepEqual(
      early.map((f) => (f.command === "MESSAGE" ? `MESSAGE ${f.text}` : `${f.command} ${f.headers["receipt-id"]}`)).sort(),
      ["MESSAGE direct", "RECEIPT direct"],
      "only the SEND outside the transaction is delivered before COMMIT",
    );
    raw.sendFrames(frame("COMMIT", { transaction: "t1", receipt: "commit" }));
    const committed = await frames(raw, 2);
    assert.deepEqual(
      committed.map((f) => (f.command === "MESSAGE" ? `MESSAGE ${f.text}` : `${f.command} ${f.headers["receipt-id"]}`)).sort(),
      ["MESSAGE held", "RECEIPT commit"],
    );
    raw.sendFrames(
      frame("BEGIN", { transaction: "t2" }),
      frame("SEND", { destination: `/topic/${topic}`, transaction: "t2", "content-type": "text/plain" }, "aborted"),
      frame("ABORT", { transaction: "t2", receipt: "abort" }),
    );
    assert.equal((await raw.expect("RECEIPT")).headers["receipt-id"], "abort");
    raw.sendFrames(frame("SEND", { destination: `/topic/${topic}`, "content-type": "text/plain" }, "after"));
    assert.equal((await raw.expect("MESSAGE")).text, "after", "the aborted SEND never arrives");
  });

  // 3. SEND /app/... to the backends through RabbitMQ

  test("SEND /app/orders/create reaches a backend bound to herald.client with key orders.create, byte-exact with the x-herald headers, and its RECEIPT comes once RabbitMQ holds it", T, async () => {
    const channel = await rabbit.connection.createChannel();
    try {
      const consumed = await channel.assertQueue("", { exclusive: true, autoDelete: true });
      const polled = await channel.assertQueue("", { exclusive: true, autoDelete: true });
      await channel.bindQueue(consumed.queue, "herald.client", "orders.create");
      await channel.bindQueue(polled.queue, "herald.client", "orders.create");
      const deliveries = new Inbox("deliveries to the backend");
      await channel.consume(consumed.queue, (message) => deliveries.push(message), { noAck: true });

      const session = await StompSession.open(stomp(), { connectHeaders: { passcode: tokenFor("alice") } });
      const sessionName = session.connected.headers.session;
      const mine = (message) => String(message.properties.headers?.["x-herald-session"]) === sessionName;
      const nextMine = async () => {
        for (;;) {
          const message = await deliveries.next();
          if (mine(message)) return message;
        }
      };

      const body = '{"sku":42, "qty":1, "note":"héllo"}';
      const receipt = await session.send("/app/orders/create", body);
      assert.ok(receipt.headers["receipt-id"]);
      // The RECEIPT means RabbitMQ confirmed: the message is queued already.
      let queued;
      for (;;) {
        queued = await channel.get(polled.queue, { noAck: true });
        assert.ok(queued, "the message was queued before the RECEIPT");
        if (mine(queued)) break;
      }
      const delivered = await nextMine();
      for (const message of [queued, delivered]) {
        assert.deepEqual(message.content, Buffer.from(body), "body byte-exact");
        assert.equal(message.fields.exchange, "herald.client");
        assert.equal(message.fields.routingKey, "orders.create");
        assert.equal(message.properties.contentType, "application/json");
        const headers = message.properties.headers;
        assert.equal(String(headers["x-herald-user"]), "alice");
        assert.equal(String(headers["x-herald-session"]), sessionName);
        assert.equal(String(headers["x-herald-node"]), nodeId);
      }

      await session.send("/app/orders/create", "two words", { "content-type": "text/plain" });
      const text = await nextMine();
      assert.equal(text.content.toString(), "two words");
      assert.equal(text.properties.contentType, "text/plain", "the frame's content-type becomes the AMQP content_type");
      await session.close();
    } finally {
      await channel.close().catch(() => {});
    }
  });

  test("SEND /app to a destination no backend is bound to gets ERROR with the reason and receipt-id, then close 1013", T, async () => {
    const raw = track(await RawStomp.open(stomp()));
    await raw.connect();
    const destination = `/app/${slashed(uniqueTopic("nobody.listens"))}`;
    raw.sendFrames(frame("SEND", { destination, "content-type": "application/json", receipt: "unroutable" }, '{"x":1}'));
    await expectRefusal(raw, { code: 1013, receipt: "unroutable" });
  });

  // 4. user destinations

  test("alice's /user/queue/notes gets topic user.alice.notes and her /user gets POST /api/users/alice/messages; bob gets neither", T, async () => {
    const alice = await StompSession.open(stomp(), { connectHeaders: { passcode: tokenFor("alice") } });
    const bob = await StompSession.open(stomp(), { connectHeaders: { passcode: tokenFor("bob") } });
    const aliceNotes = await alice.subscribe("/user/queue/notes");
    const aliceUser = await alice.subscribe("/user");
    const bobNotes = await bob.subscribe("/user/queue/notes");
    const bobUser = await bob.subscribe("/user");

    await publishHttp(node, "user.alice.notes", { note: 1 });
    await messageUser(node, "alice", { direct: 1 });
    await publishHttp(node, "user.bob.notes", { note: "bob" });
    await messageUser(node, "bob", { direct: "bob" });
    await publishHttp(node, "user.alice.notes", { note: 2 });
    await messageUser(node, "alice", { direct: 2 });

    const note = await aliceNotes.inbox.next();
    assert.deepEqual(JSON.parse(note.body), { note: 1 });
    assert.equal(note.headers.destination, "/user/queue/notes");
    assert.equal(note.headers.subscription, aliceNotes.id);
    assert.deepEqual(JSON.parse((await aliceNotes.inbox.next()).body), { note: 2 }, "the user message did not land on /user/queue/notes");

    const direct = await aliceUser.inbox.next();
    assert.deepEqual(JSON.parse(direct.body), { direct: 1 });
    assert.equal(direct.headers.destination, "/user");
    assert.equal(direct.headers.subscription, aliceUser.id);
    assert.deepEqual(JSON.parse((await aliceUser.inbox.next()).body), { direct: 2 }, "user.alice.notes did not land on /user");

    // bob's own messages, published after alice's first ones, are the first bob sees.
    assert.deepEqual(JSON.parse((await bobNotes.inbox.next()).body), { note: "bob" });
    assert.deepEqual(JSON.parse((await bobUser.inbox.next()).body), { direct: "bob" });
    await publishHttp(node, "user.bob.notes", { note: "bob-last" });
    await messageUser(node, "bob", { direct: "bob-last" });
    assert.deepEqual(JSON.parse((await bobNotes.inbox.next()).body), { note: "bob-last" }, "bob never gets alice's notes");
    assert.deepEqual(JSON.parse((await bobUser.inbox.next()).body), { direct: "bob-last" }, "bob never gets alice's user messages");
    assert.deepEqual(alice.unhandled, []);
    assert.deepEqual(bob.unhandled, []);
    await alice.close();
    await bob.close();
  });

  test("SEND /user/queue/notes publishes to the sender's own user.{id}.notes", T, async () => {
    const alice = await StompSession.open(stomp(), { connectHeaders: { passcode: tokenFor("alice") } });
    const { inbox } = await alice.subscribe("/user/queue/notes");
    const json = track(await JsonClient.open(`${node.wsUrl("/ws")}?token=${tokenFor("alice")}`));
    await json.expectAck({ op: "subscribe", topic: "user.alice.notes" });
    await alice.send("/user/queue/notes", '{"self":true}');
    assert.equal((await inbox.next()).body, '{"self":true}');
    const seen = await json.messages.next();
    assert.equal(seen.topic, "user.alice.notes");
    assert.deepEqual(seen.data, { self: true });
    await alice.close();
  });

  // 6. clean disconnect

  test("stompjs deactivate sends DISCONNECT with a receipt and gets the RECEIPT before the socket closes", T, async () => {
    let disconnected;
    const session = await StompSession.open(stomp(), { onDisconnect: (receipt) => (disconnected = receipt) });
    await session.close();
    assert.ok(disconnected, "onDisconnect ran: the DISCONNECT's RECEIPT arrived");
    assert.match(disconnected.headers["receipt-id"], /^close-/);
    const close = await within(WAIT, session.closed, "the WebSocket to close");
    assert.ok(close);
  });

  test("DISCONNECT with a receipt: the earlier SEND's MESSAGE, then the RECEIPT, then close 1000", T, async () => {
    const topic = uniqueTopic("stomp.bye");
    const raw = track(await RawStomp.open(stomp()));
    await raw.connect();
    raw.sendFrames(frame("SUBSCRIBE", { destination: `/topic/${topic}`, id: "0", receipt: "sub" }));
    await raw.expect("RECEIPT");
    raw.sendFrames(
      frame("SEND", { destination: `/topic/${topic}`, "content-type": "text/plain" }, "last words"),
      frame("DISCONNECT", { receipt: "bye" }),
    );
    assert.equal((await raw.expect("MESSAGE")).text, "last words");
    assert.equal((await raw.expect("RECEIPT")).headers["receipt-id"], "bye");
    const close = await raw.expectClose();
    assert.equal(close.code, 1000);
    assert.deepEqual(raw.frames.items.map((f) => f.command), [CLOSED], "nothing after the RECEIPT");
  });
});

// ---------------------------------------------------------------------------

describe("a node under --auth required", () => {
  let node;
  before(async () => {
    node = await startHerald(["--jwt-secret", SECRET, "--auth", "required"]);
  });
  after(async () => {
    await closeAllSessions();
    await node?.stop();
  });

  test("under --auth required, stompjs CONNECT without a token is admitted to the upgrade and gets ERROR, then the close", T, async () => {
    const refused = await StompSession.open(node.wsUrl("/stomp")).then(
      () => assert.fail("CONNECTED without a token"),
      (err) => err,
    );
    assert.ok(refused.frame, `an ERROR frame, not just a close: ${refused.message}`);
    assert.ok(refused.frame.headers.message);
    await within(WAIT, refused.session.closed, "the close after ERROR");
  });

  test("under --auth required, CONNECT with a valid passcode token connects as that user", T, async () => {
    const session = await StompSession.open(node.wsUrl("/stomp"), { connectHeaders: { passcode: signToken(SECRET, "dora") } });
    assert.equal(session.connected.headers["user-name"], "dora");
    const topic = uniqueTopic("required.ok");
    const { inbox } = await session.subscribe(`/topic/${topic}`);
    await publishHttp(node, topic, "in");
    assert.equal((await inbox.next()).body, '"in"');
    await session.close();
  });

  test("under --auth required, CONNECT with an Authorization: Bearer token connects as that user", T, async () => {
    const session = await StompSession.open(node.wsUrl("/ws"), { connectHeaders: { Authorization: `Bearer ${signToken(SECRET, "ed")}` } });
    assert.equal(session.connected.headers["user-name"], "ed");
    await session.close();
  });
});

// ---------------------------------------------------------------------------

describe("heart-beats with --stomp-heartbeat 500ms", () => {
  let node;
  before(async () => {
    node = await startHerald(["--stomp-heartbeat", "500ms"]);
  });
  after(async () => {
    await closeAllSessions();
    await node?.stop();
  });

  test("stompjs heart-beating every 500 ms both ways stays connected past three intervals and still receives", T, async () => {
    const session = await StompSession.open(node.wsUrl("/stomp"), { heartbeatIncoming: 500, heartbeatOutgoing: 500 });
    assert.equal(session.connected.headers["heart-beat"], "500,500");
    const topic = uniqueTopic("hb.alive");
    const { inbox } = await session.subscribe(`/topic/${topic}`);
    await sleep(2_500);
    assert.equal(session.closeEvent, undefined, "still connected");
    assert.equal(session.heartbeatsLost, 0, "stompjs never missed Herald's heart-beats");
    assert.ok(session.heartbeats >= 3, `Herald sent heart-beats (${session.heartbeats} in 2.5 s)`);
    await publishHttp(node, topic, { still: "here" });
    assert.deepEqual(JSON.parse((await inbox.next()).body), { still: "here" });
    await session.close();
  });

  test("a client that promised heart-beat:500,0 and stays silent gets ERROR about heart-beats, then close 1001", T, async () => {
    const raw = track(await RawStomp.open(node.wsUrl("/stomp")));
    const connected = await raw.connect({ "heart-beat": "500,0" });
    const since = Date.now();
    assert.equal(connected.headers["heart-beat"], "500,500");
    const error = await raw.expect("ERROR", 5_000);
    assert.match(error.headers.message, /heart-?beat/i);
    const close = await raw.expectClose();
    assert.equal(close.code, 1001);
    const silentFor = raw.closedAt - since;
    assert.ok(silentFor >= 900 && silentFor < 5_000, `dropped after ${silentFor} ms of silence (twice 500 ms expected)`);
    assert.equal(raw.heartbeats, 0, "no heart-beats to a client that asked for none (cy = 0)");
  });

  test("a client asking heart-beat:0,500 gets an EOL about every 500 ms and is never dropped for its own silence", T, async () => {
    const raw = track(await RawStomp.open(node.wsUrl("/stomp")));
    await raw.connect({ "heart-beat": "0,500" });
    await sleep(2_200);
    // About four; a busy machine may delay timers, never multiply them.
    assert.ok(raw.heartbeats >= 2 && raw.heartbeats <= 8, `${raw.heartbeats} heart-beats in 2.2 s`);
    assert.equal(raw.closedAt, undefined, "still open");
    raw.sendFrames(frame("DISCONNECT", { receipt: "done" }));
    assert.equal((await raw.expect("RECEIPT")).headers["receipt-id"], "done");
  });
});

// ---------------------------------------------------------------------------

describe("negotiation and protocol violations (--max-frame 4096, no JWT)", () => {
  let node;
  before(async () => {
    node = await startHerald(["--max-frame", "4096"]);
  });
  after(async () => {
    await closeAllSessions();
    await node?.stop();
  });

  /** A raw v12.stomp socket on /ws, CONNECTED unless told. */
  async function open({ connect = true } = {}) {
    const raw = track(await RawStomp.open(node.wsUrl("/ws"), ["v12.stomp"]));
    assert.equal(raw.ws.protocol, "v12.stomp", "the subprotocol is answered");
    if (connect) await raw.connect();
    return raw;
  }

  test("/ws offering v12.stomp speaks STOMP, /ws offering nothing speaks JSON, /stomp offering nothing speaks STOMP", T, async () => {
    const stompOnWs = await open();
    stompOnWs.sendFrames(frame("DISCONNECT", { receipt: "x" }));
    await stompOnWs.expect("RECEIPT");
    const json = track(await JsonClient.open(node.wsUrl("/ws")));
    assert.match(json.welcome.session, /^s-/);
    const plain = track(await RawStomp.open(node.wsUrl("/stomp"), []));
    const connected = await plain.connect();
    assert.equal(connected.headers.version, "1.2");
  });

  test("CONNECT with accept-version 1.0,1.1 gets version 1.1, and the STOMP command connects like CONNECT", T, async () => {
    const older = await open({ connect: false });
    older.sendFrames(frame("CONNECT", { "accept-version": "1.0,1.1", host: "h" }));
    assert.equal((await older.expect("CONNECTED")).headers.version, "1.1");
    const stompCommand = await open({ connect: false });
    stompCommand.sendFrames(frame("STOMP", { "accept-version": "1.1,1.2", host: "h" }));
    const connected = await stompCommand.expect("CONNECTED");
    assert.equal(connected.headers.version, "1.2");
    assert.match(connected.headers.session, /^s-/);
  });

  test("CONNECT with no common version gets ERROR with a version:1.2,1.1,1.0 header, then the close", T, async () => {
    const raw = await open({ connect: false });
    raw.sendFrames(frame("CONNECT", { "accept-version": "2.0", host: "h" }));
    const { error } = await expectRefusal(raw);
    assert.equal(error.headers.version, "1.2,1.1,1.0");
  });

  test("a STOMP 1.0 session may SUBSCRIBE without id: the id defaults to the destination", T, async () => {
    const raw = await open({ connect: false });
    raw.sendFrames(frame("CONNECT", { host: "h" }));
    assert.equal((await raw.expect("CONNECTED")).headers.version, "1.0");
    const topic = uniqueTopic("v10");
    raw.sendFrames(frame("SUBSCRIBE", { destination: `/topic/${topic}`, receipt: "s10" }));
    assert.equal((await raw.expect("RECEIPT")).headers["receipt-id"], "s10");
    await publishHttp(node, topic, 10);
    const message = await raw.expect("MESSAGE");
    assert.equal(message.headers.subscription, `/topic/${topic}`);
    assert.equal(message.text, "10");
  });

  test("a frame before CONNECT gets ERROR with a message and receipt-id, then close 1002", T, async () => {
    const raw = await open({ connect: false });
    raw.sendFrames(frame("SEND", { destination: "/topic/early", receipt: "early" }, "too soon"));
    await expectRefusal(raw, { code: 1002, receipt: "early" });
  });

  test("an unknown command gets ERROR with a message and receipt-id, then close 1002", T, async () => {
    const raw = await open();
    raw.sendFrames(frame("FROBNICATE", { receipt: "what" }));
    await expectRefusal(raw, { code: 1002, receipt: "what" });
  });

  test("SEND without destination gets ERROR with a message and receipt-id, then close 1002", T, async () => {
    const raw = await open();
    raw.sendFrames(frame("SEND", { receipt: "nodest", "content-type": "text/plain" }, "where to?"));
    await expectRefusal(raw, { code: 1002, receipt: "nodest" });
  });

  test("SUBSCRIBE without id in STOMP 1.2 gets ERROR with a message and receipt-id, then close 1002", T, async () => {
    const raw = await open();
    raw.sendFrames(frame("SUBSCRIBE", { destination: `/topic/${uniqueTopic("noid")}`, receipt: "noid" }));
    await expectRefusal(raw, { code: 1002, receipt: "noid" });
  });

  test("SUBSCRIBE without destination gets ERROR with a message and receipt-id, then close 1002", T, async () => {
    const raw = await open();
    raw.sendFrames(frame("SUBSCRIBE", { id: "1", receipt: "nowhere" }));
    await expectRefusal(raw, { code: 1002, receipt: "nowhere" });
  });

  test("a duplicate subscription id in one session gets ERROR with a message and receipt-id, then close 1002", T, async () => {
    const raw = await open();
    raw.sendFrames(frame("SUBSCRIBE", { destination: `/topic/${uniqueTopic("dup")}`, id: "same", receipt: "first" }));
    assert.equal((await raw.expect("RECEIPT")).headers["receipt-id"], "first");
    raw.sendFrames(frame("SUBSCRIBE", { destination: `/topic/${uniqueTopic("dup")}`, id: "same", receipt: "second" }));
    await expectRefusal(raw, { code: 1002, receipt: "second" });
  });

  test("UNSUBSCRIBE without id gets ERROR with a message and receipt-id, then the close", T, async () => {
    const raw = await open();
    raw.sendFrames(frame("UNSUBSCRIBE", { receipt: "which" }));
    await expectRefusal(raw, { receipt: "which" });
  });

  test("a frame over --max-frame 4096 gets ERROR with a message, then close 1009", T, async () => {
    const raw = await open();
    raw.sendFrames(frame("SEND", { destination: `/topic/${uniqueTopic("big")}`, "content-type": "text/plain" }, "x".repeat(5_000)));
    await expectRefusal(raw, { code: 1009 });
  });

  test("a frame over --max-frame 4096 split over two WebSocket messages gets ERROR with a message, then close 1009", T, async () => {
    const raw = await open();
    const big = frame("SEND", { destination: `/topic/${uniqueTopic("big")}`, "content-type": "text/plain" }, "x".repeat(5_000));
    raw.send(big.subarray(0, 2_500));
    raw.send(big.subarray(2_500));
    await expectRefusal(raw, { code: 1009 });
  });

  test("a bad header escape (\\t) gets ERROR with a message, then close 1002", T, async () => {
    const raw = await open();
    raw.sendFrames(frame("SEND", { destination: `/topic/${uniqueTopic("esc")}` }, "body", { rawHeaders: ["x-note:tab\\there"] }));
    await expectRefusal(raw, { code: 1002 });
  });

  test("a content-length that does not match the body gets ERROR with a message and receipt-id, then close 1002", T, async () => {
    const raw = await open();
    raw.sendFrames(frame("SEND", { destination: `/topic/${uniqueTopic("len")}`, "content-length": "3", receipt: "len" }, "hello"));
    await expectRefusal(raw, { code: 1002, receipt: "len" });
  });

  test("SEND to a destination that is neither /topic, /app nor /user gets ERROR with a message and receipt-id, then the close", T, async () => {
    const raw = await open();
    raw.sendFrames(frame("SEND", { destination: "/queue/elsewhere", receipt: "elsewhere" }, "x"));
    await expectRefusal(raw, { receipt: "elsewhere" });
  });

  test("an anonymous SUBSCRIBE to /user/queue/notes gets ERROR with a message and receipt-id, then the close", T, async () => {
    const raw = await open();
    raw.sendFrames(frame("SUBSCRIBE", { destination: "/user/queue/notes", id: "u", receipt: "anon" }));
    await expectRefusal(raw, { receipt: "anon" });
  });

  test("COMMIT of an unknown transaction gets ERROR with a message and receipt-id, then the close", T, async () => {
    const raw = await open();
    raw.sendFrames(frame("COMMIT", { transaction: "never-begun", receipt: "commit" }));
    await expectRefusal(raw, { receipt: "commit" });
  });

  test("SEND /app with AMQP off gets ERROR with the reason and receipt-id, then close 1013", T, async () => {
    const raw = await open();
    raw.sendFrames(frame("SEND", { destination: "/app/orders/create", receipt: "noamqp" }, "{}"));
    await expectRefusal(raw, { code: 1013, receipt: "noamqp" });
  });
});
