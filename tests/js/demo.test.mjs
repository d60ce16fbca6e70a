// The demo page in headless Chromium, as a person would use it: connect,
// subscribe, publish, watch messages arrive (from the page and from a
// backend's HTTP call), unsubscribe, and read the node's stats.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import path from "node:path";
import { chromium } from "playwright-core";
import { startHerald, uniqueTopic } from "./herald.mjs";

const CHROMIUM = process.env.CHROMIUM_PATH || "/usr/bin/chromium";
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
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: [
      "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync",
    ],
  });
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
