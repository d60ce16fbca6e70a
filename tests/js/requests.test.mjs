// The STOMP mapping of the WebSocket-to-REST pipeline, with the real
// @stomp/stompjs client: SEND destination:/service/{name}{path} with
// `method` and `reply-to` is answered by one MESSAGE on the reply-to
// subscription, against a real upstream HTTP server this test starts.
import { describe, test, before, after, afterEach } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";
import { once } from "node:events";
import { startHerald, uniqueTopic } from "./herald.mjs";
import { StompSession, closeAllSessions } from "./stomp.mjs";

const T = { timeout: 20_000 };

/** An upstream that echoes what it got; `/slow` answers after 3 s. */
async function startUpstream() {
  const server = http.createServer((req, res) => {
    const chunks = [];
    req.on("data", (chunk) => chunks.push(chunk));
    req.on("end", () => {
      const url = new URL(req.url, "http://upstream");
      const reply = () => {
        if (url.pathname.startsWith("/status/")) {
          res.writeHead(Number(url.pathname.slice(8)), { "content-type": "text/plain" });
          return res.end("status page");
        }
        res.writeHead(200, { "content-type": "application/json", "x-upstream": "echo" });
        res.end(JSON.stringify({
          method: req.method,
          path: url.pathname,
          query: url.search.slice(1),
          headers: req.headers,
          body: Buffer.concat(chunks).toString(),
        }));
      };
      if (url.pathname === "/slow") setTimeout(reply, 3000);
      else reply();
    });
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  return server;
}

describe("STOMP SEND to /service/", () => {
  let upstream;
  let node;

  before(async () => {
    upstream = await startUpstream();
    const { port } = upstream.address();
    node = await startHerald(["--services", `echo=http://127.0.0.1:${port}`, "--request-timeout", "500ms"]);
  });
  after(async () => {
    await closeAllSessions();
    await node?.stop();
    upstream?.close();
  });
  afterEach(closeAllSessions);

  const url = () => node.wsUrl("/stomp");

  test("is answered by a MESSAGE on the reply-to subscription with status, headers and body", T, async () => {
    const session = await StompSession.open(url());
    const replyTo = `/topic/${uniqueTopic("replies").replaceAll(".", "-")}`;
    const { inbox, id } = await session.subscribe(replyTo);
    await session.send("/service/echo/accounts/42?full=1", JSON.stringify({ amount: 5 }), {
      method: "POST",
      "reply-to": replyTo,
      "content-type": "application/json",
      "correlation-id": "c-1",
      "http-accept-language": "fr",
    });
    const message = await inbox.next();
    assert.equal(message.headers.destination, replyTo);
    assert.equal(message.headers.subscription, id);
    assert.equal(message.headers.status, "200");
    assert.equal(message.headers["content-type"], "application/json");
    assert.equal(message.headers["correlation-id"], "c-1");
    assert.equal(message.headers["http-x-upstream"], "echo");
    const echoed = JSON.parse(message.body);
    assert.equal(echoed.method, "POST");
    assert.equal(echoed.path, "/accounts/42");
    assert.equal(echoed.query, "full=1");
    assert.equal(echoed.body, JSON.stringify({ amount: 5 }));
    assert.equal(echoed.headers["accept-language"], "fr");
    assert.equal(echoed.headers["content-type"], "application/json");
    assert.ok(echoed.headers["x-herald-session"], "the service sees the session");
    assert.equal(echoed.headers["x-request-id"], message.headers["message-id"]);
  });

  test("passes 4xx through as a status and a failed call as an error MESSAGE", T, async () => {
    const session = await StompSession.open(url());
    const replyTo = `/topic/${uniqueTopic("replies").replaceAll(".", "-")}`;
    const { inbox } = await session.subscribe(replyTo);
    await session.send("/service/echo/status/404", "", { method: "GET", "reply-to": replyTo });
    const notFound = await inbox.next();
    assert.equal(notFound.headers.status, "404");
    assert.equal(notFound.body, "status page");
    await session.send("/service/echo/slow", "", { "reply-to": replyTo });
    const failed = await inbox.next();
    assert.equal(failed.headers.error, "timeout");
    assert.equal(failed.headers.status, undefined);
    assert.ok(failed.headers.message);
  });

  test("without a subscribed reply-to, or to an unknown service, is refused with ERROR", T, async () => {
    const session = await StompSession.open(url());
    await assert.rejects(
      session.send("/service/echo/x", "", { method: "GET", "reply-to": "/topic/never-subscribed" }),
      /ERROR instead of RECEIPT/,
    );
    const other = await StompSession.open(url());
    const replyTo = `/topic/${uniqueTopic("replies").replaceAll(".", "-")}`;
    await other.subscribe(replyTo);
    await assert.rejects(
      other.send("/service/nope/x", "", { "reply-to": replyTo }),
      /ERROR instead of RECEIPT/,
    );
    const third = await StompSession.open(url());
    await third.subscribe(replyTo);
    await assert.rejects(
      third.send("/service/echo/../admin", "", { "reply-to": replyTo }),
      /ERROR instead of RECEIPT/,
    );
  });
});
