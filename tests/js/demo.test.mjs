// The demo page in headless Chromium, as a person would use it: connect,
// subscribe, publish, watch messages arrive (from the page and from a
// backend's HTTP call), unsubscribe, and read the node's stats; in the JSON
// mode (the default) and in the STOMP mode, where the page drives Herald's
// STOMP endpoint through the vendored @stomp/stompjs bundle.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { createHmac } from "node:crypto";
import path from "node:path";
import { explained, launchChromium, recordFrames, startHerald, uniqueTopic } from "./herald.mjs";

let herald;
let browser;

/** Waits until the stats panel shows `value` for `label` (it refreshes every 2 s). */
async function waitForStat(page, label, value) {
  await page.waitForFunction(
    ([label, value]) =>
      [...document.querySelectorAll("#stats-grid .stat")].some(
        (cell) => cell.querySelector("span")?.textContent === label && cell.querySelector("strong")?.textContent === value,
      ),
    [label, value],
    { timeout: 10_000 },
  );
}

before(async () => {
  herald = await startHerald();
  browser = await launchChromium();
});

after(async () => {
  await browser?.close();
  await herald?.stop();
});

test("a person connects, subscribes, publishes and sees messages arrive", async () => {
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  const errors = [];
  page.on("pageerror", (err) => errors.push(err.message));
  await page.goto(herald.url("/"));

  await page.getByTestId("connect").click();
  await page.getByTestId("status").filter({ hasText: /^connected$/ }).waitFor();
  assert.match(await page.locator("#fact-session").textContent(), /^s-/);

  const topic = uniqueTopic("demo");
  await page.getByTestId("subscribe-topic").fill(`${topic}.#`);
  await page.getByTestId("subscribe").click();
  await page.getByTestId("subscription-list").getByText(`${topic}.#`).waitFor();

  await page.getByTestId("publish-topic").fill(`${topic}.page`);
  await page.getByTestId("publish-data").fill('{"text": "typed in the page"}');
  await page.getByTestId("publish").click();
  await page.getByTestId("message-list").getByText("typed in the page").waitFor();

  const response = await fetch(herald.url("/api/publish"), {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ topic: `${topic}.backend`, data: { from: "a backend service" } }),
  });
  assert.equal(response.status, 202);
  await page.getByTestId("message-list").getByText("a backend service").waitFor();
  assert.equal(await page.getByTestId("message-count").textContent(), "2");

  await waitForStat(page, "Connections", "1");
  await waitForStat(page, "Subscriptions", "1");
  await waitForStat(page, "Deliveries", "2");

  await page.screenshot({ path: path.join(process.env.SCREENSHOT_DIR || "/tmp", "herald-demo.png"), fullPage: true });

  await page.getByRole("button", { name: `Unsubscribe from ${topic}.#` }).click();
  await page.getByTestId("subscription-list").getByText(`${topic}.#`).waitFor({ state: "detached" });
  await fetch(herald.url("/api/publish"), {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ topic: `${topic}.late`, data: "after unsubscribing" }),
  });
  await page.waitForTimeout(300);
  assert.equal(await page.getByTestId("message-list").getByText("after unsubscribing").count(), 0);
  assert.deepEqual(errors, []);
});

test("the page shows a refused operation instead of failing silently", async () => {
  const page = await browser.newPage();
  await page.goto(herald.url("/"));
  await page.getByTestId("connect").click();
  await page.getByTestId("status").filter({ hasText: /^connected$/ }).waitFor();
  await page.getByTestId("subscribe-topic").fill("not a topic!");
  await page.getByTestId("subscribe").click();
  await page.getByTestId("message-list").getByText(/invalid_topic/).waitFor();
});

test("the page reports when the server closes the connection", async () => {
  const page = await browser.newPage();
  await page.goto(herald.url("/"));
  await page.getByTestId("connect").click();
  await page.getByTestId("status").filter({ hasText: /^connected$/ }).waitFor();
  const sessions = await fetch(herald.url("/api/stats")).then((r) => r.json());
  assert.ok(sessions.connections.current >= 1);
  await page.getByRole("button", { name: "Disconnect" }).click();
  await page.getByTestId("status").filter({ hasText: /^disconnected/ }).waitFor();
});

test("the STOMP client the page uses is served, cacheable, at /vendor/stomp.umd.min.js", async () => {
  const response = await fetch(herald.url("/vendor/stomp.umd.min.js"));
  assert.equal(response.status, 200);
  assert.match(response.headers.get("content-type"), /^text\/javascript/);
  assert.match(response.headers.get("cache-control"), /max-age=\d+/);
  assert.match(await response.text(), /StompJs/);
});

test("in STOMP mode a person connects, subscribes, publishes and sees messages arrive", async () => {
  // A node of its own, so that the stats panel counts this page only.
  const node = await startHerald();
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  const frames = recordFrames(page);
  const errors = [];
  page.on("pageerror", (err) => errors.push(err.message));
  try {
    await explained(frames, node, async () => {
      await page.goto(node.url("/"));
      await page.getByTestId("protocol-stomp").check();
      assert.equal(await page.locator("#url").inputValue(), `ws://${node.address}/stomp`);

      await page.getByTestId("connect").click();
      await page.getByTestId("status").filter({ hasText: /^connected$/ }).waitFor();
      assert.match(await page.locator("#fact-session").textContent(), /^s-/);
      assert.equal(await page.getByTestId("fact-protocol").textContent(), "STOMP 1.2");
      assert.match(await page.locator("#fact-node").textContent(), /^herald\//);
      assert.ok(await page.getByTestId("protocol-json").isDisabled(), "the protocol is fixed while connected");

      const topic = uniqueTopic("stomp");
      await page.getByTestId("subscribe-topic").fill(`${topic}.#`);
      await page.getByTestId("subscribe").click();
      await page.getByTestId("subscription-list").getByText(`${topic}.#`).waitFor();
      assert.ok(frames.some((f) => f.includes(`SUBSCRIBE\\n`) && f.includes(`destination:/topic/${topic}.#`)), "SUBSCRIBE /topic/<pattern>");

      const messages = page.getByTestId("message-list").locator("li");
      await page.getByTestId("publish-topic").fill(`${topic}.page`);
      await page.getByTestId("publish-data").fill('{"text": "typed in the page"}');
      await page.getByTestId("publish").click();
      const typed = messages.filter({ hasText: "typed in the page" });
      await typed.waitFor();
      assert.equal(await typed.locator(".topic").textContent(), `/topic/${topic}.page`);
      assert.equal(await typed.locator(".content-type").textContent(), "application/json");

      await page.getByTestId("publish-data").fill("plain words, not JSON");
      await page.getByTestId("publish").click();
      const plain = messages.filter({ hasText: "plain words, not JSON" });
      await plain.waitFor();
      assert.equal(await plain.locator(".content-type").textContent(), "text/plain;charset=utf-8");

      const response = await fetch(node.url("/api/publish"), {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ topic: `${topic}.backend`, data: { from: "a backend service" } }),
      });
      assert.equal(response.status, 202);
      const backend = messages.filter({ hasText: "a backend service" });
      await backend.waitFor();
      assert.equal(await backend.locator(".topic").textContent(), `/topic/${topic}.backend`);
      assert.equal(await backend.locator(".content-type").textContent(), "application/json");
      assert.deepEqual(JSON.parse(await backend.locator("pre").textContent()), { from: "a backend service" });
      assert.equal(await page.getByTestId("message-count").textContent(), "3");

      await waitForStat(page, "Connections", "1");
      await waitForStat(page, "Subscriptions", "1");
      await waitForStat(page, "Deliveries", "3");

      await page.screenshot({ path: path.join(process.env.SCREENSHOT_DIR || "/tmp", "herald-demo-stomp.png"), fullPage: true });

      await page.getByRole("button", { name: `Unsubscribe from ${topic}.#` }).click();
      await page.getByTestId("subscription-list").getByText(`${topic}.#`).waitFor({ state: "detached" });
      await waitForStat(page, "Subscriptions", "0");
      await fetch(node.url("/api/publish"), {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ topic: `${topic}.late`, data: "after unsubscribing" }),
      });
      await page.waitForTimeout(300);
      assert.equal(await page.getByTestId("message-list").getByText("after unsubscribing").count(), 0);

      await page.getByRole("button", { name: "Disconnect" }).click();
      await page.getByTestId("status").filter({ hasText: /^disconnected$/ }).waitFor();
      await waitForStat(page, "Connections", "0");
      assert.ok(!(await page.getByTestId("protocol-json").isDisabled()), "the protocol can change again");
      assert.deepEqual(errors, []);
    });
  } finally {
    await page.close();
    await node.stop();
  }
});

test("in STOMP mode the page shows the server's ERROR and the close it brings", async () => {
  const page = await browser.newPage();
  const frames = recordFrames(page);
  try {
    await explained(frames, herald, async () => {
      await page.goto(herald.url("/"));
      await page.getByTestId("protocol-stomp").check();
      await page.getByTestId("connect").click();
      await page.getByTestId("status").filter({ hasText: /^connected$/ }).waitFor();
      await page.getByTestId("subscribe-topic").fill("not a topic!");
      await page.getByTestId("subscribe").click();
      await page.getByTestId("message-list").getByText(/^subscribe not a topic!: \S/).waitFor();
      await page.getByTestId("status").filter({ hasText: /^disconnected/ }).waitFor();
      assert.equal(await page.getByTestId("subscription-list").locator("li").count(), 0);
    });
  } finally {
    await page.close();
  }
});

/** An HS256 token for `user`, signed with `secret`, valid for ten minutes. */
function token(user, secret) {
  const part = (value) => Buffer.from(JSON.stringify(value)).toString("base64url");
  const unsigned = `${part({ alg: "HS256", typ: "JWT" })}.${part({ sub: user, exp: Math.floor(Date.now() / 1000) + 600 })}`;
  return `${unsigned}.${createHmac("sha256", secret).update(unsigned).digest("base64url")}`;
}

test("in STOMP mode the token goes in CONNECT as the passcode, and user messages arrive on /user", async () => {
  // With tokens required, a STOMP upgrade without one is admitted and its
  // CONNECT must carry one: the page puts it there, not in the URL.
  const secret = "demo-page-secret";
  const node = await startHerald(["--jwt-secret", secret, "--auth", "required"]);
  const page = await browser.newPage();
  const frames = recordFrames(page);
  try {
    await explained(frames, node, async () => {
      await page.goto(node.url("/"));
      await page.getByTestId("protocol-stomp").check();
      await page.locator("#token").fill(token("ada", secret));
      await page.getByTestId("connect").click();
      await page.getByTestId("status").filter({ hasText: /^connected$/ }).waitFor();
      assert.equal(await page.locator("#fact-user").textContent(), "ada");
      assert.equal(frames[0], `open ws://${node.address}/stomp`, "no token in the URL");
      assert.ok(frames.some((f) => f.startsWith("> \"CONNECT\\n") && f.includes("passcode:")), "passcode in CONNECT");

      await page.getByTestId("subscribe-topic").fill("/user");
      await page.getByTestId("subscribe").click();
      await page.getByTestId("subscription-list").getByText("/user", { exact: true }).waitFor();
      const response = await fetch(node.url("/api/users/ada/messages"), {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ data: { unread: 3 } }),
      });
      assert.equal(response.status, 202);
      const message = page.getByTestId("message-list").locator("li").filter({ hasText: "unread" });
      await message.waitFor();
      assert.equal(await message.locator(".topic").textContent(), "/user");
      assert.deepEqual(JSON.parse(await message.locator("pre").textContent()), { unread: 3 });
    });
  } finally {
    await page.close();
    await node.stop();
  }
});
