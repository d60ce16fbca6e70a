// The operator dashboard in headless Chromium: the login form trades the
// admin key for a cookie, the page renders and its numbers move with
// traffic, and a second node on the same RabbitMQ and cluster secret
// appears in the nodes table and drops off once stopped. Screenshots at a
// laptop's and a wall display's size go to target/screenshots/.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import WebSocket from "ws";
import { amqpUrl, launchChromium, startHerald, uniqueTopic } from "./herald.mjs";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const shots = path.join(root, "target", "screenshots");
const ADMIN = "dashboard-admin-key";
const SECRET = `dashboard-cluster-${process.pid}`;
// Nodes announce every 2 s and drop off 7 s after the last one.
const DROP_OFF_MS = 7_000;

let first;
let browser;
const sockets = [];

function node(id) {
  return startHerald(["--node-id", id], {
    env: { HERALD_ADMIN_KEY: ADMIN, HERALD_AMQP_URL: amqpUrl(), HERALD_CLUSTER_SECRET: SECRET },
    ready: true,
  });
}

// What of the page lies outside the viewport, in pixels, across and down.
function overflow(page) {
  return page.evaluate(() => {
    const root = document.documentElement;
    return { across: root.scrollWidth - innerWidth, down: root.scrollHeight - innerHeight };
  });
}

async function openSocket(url, topic) {
  const socket = new WebSocket(url);
  await new Promise((resolve, reject) => {
    socket.once("open", resolve);
    socket.once("error", reject);
  });
  socket.send(JSON.stringify({ op: "subscribe", topic, id: "1" }));
  sockets.push(socket);
  return socket;
}

before(async () => {
  first = await node(`dash-a-${process.pid}`);
  browser = await launchChromium();
  mkdirSync(shots, { recursive: true });
});

after(async () => {
  for (const socket of sockets) socket.terminate();
  await browser?.close();
  await first?.stop();
});

test("an operator logs in, watches traffic move and sees a second node come and go", async () => {
  const page = await browser.newPage({ viewport: { width: 1366, height: 768 } });
  const errors = [];
  page.on("pageerror", (err) => errors.push(err.message));

  await page.goto(first.url("/dashboard"));
  await page.locator("#login").waitFor();
  await page.locator("#key").fill("not the key");
  await page.locator("#login button").click();
  await page.locator("#note").filter({ hasText: "Wrong key" }).waitFor();
  await page.locator("#key").fill(ADMIN);
  await page.locator("#login button").click();
  await page.locator("#link").filter({ hasText: /^live$/ }).waitFor({ timeout: 10_000 });
  const cookies = await page.context().cookies();
  const session = cookies.find((c) => c.name === "herald_dashboard");
  assert.ok(session?.httpOnly, "the session cookie is HttpOnly");
  assert.equal(session.sameSite, "Strict");

  const topic = uniqueTopic("dash");
  for (let i = 0; i < 5; i += 1) await openSocket(first.wsUrl("/ws"), `${topic}.#`);
  await page.waitForFunction(() => document.getElementById("connections").textContent === "5", null, { timeout: 10_000 });

  // Publishes every 100 ms until the chart's data shows messages out.
  const publishing = setInterval(() => {
    fetch(first.url("/api/publish"), {
      method: "POST",
      headers: { "content-type": "application/json", authorization: `Bearer ${ADMIN}` },
      body: JSON.stringify({ topic: `${topic}.tick`, data: { t: Date.now() } }),
    }).catch(() => {});
  }, 100);
  try {
    await page.waitForFunction(() => Math.max(...window.heraldDashboard.history.out) > 0, null, { timeout: 15_000 });
    await page.waitForFunction(() => Math.max(...window.heraldDashboard.history.in) > 0, null, { timeout: 15_000 });
    await page.locator("#topics td", { hasText: `${topic}.#` }).waitFor();

    const secondId = `dash-b-${process.pid}`;
    const second = await node(secondId);
    try {
      await page.locator("#nodes td", { hasText: secondId }).waitFor({ timeout: 10_000 });
      await page.screenshot({ path: path.join(shots, "dashboard-laptop.png") });
      assert.deepEqual(await overflow(page), { across: 0, down: 0 }, "two nodes fit a laptop screen unscrolled");
      await page.setViewportSize({ width: 1920, height: 1080 });
      await page.goto(first.url("/dashboard?wall"));
      await page.locator("#nodes td", { hasText: secondId }).waitFor({ timeout: 10_000 });
      await page.waitForFunction(() => window.heraldDashboard.history.t.length >= 5, null, { timeout: 10_000 });
      await page.screenshot({ path: path.join(shots, "dashboard-wall.png") });
      assert.deepEqual(await overflow(page), { across: 0, down: 0 }, "two nodes fit a wall display unscrolled");
    } finally {
      await second.stop();
    }
    const stopped = Date.now();
    await page.locator("#nodes td", { hasText: secondId }).waitFor({ state: "detached", timeout: DROP_OFF_MS + 3_000 });
    assert.ok(Date.now() - stopped <= DROP_OFF_MS + 2_000, "the stopped node dropped off within the documented time");
  } finally {
    clearInterval(publishing);
  }
  assert.deepEqual(errors, []);
});
