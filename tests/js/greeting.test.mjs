// The greeting example's page (examples/greeting/static: the Spring STOMP
// tutorial's index.html and app.js, stompjs and jQuery) in headless
// Chromium, against a real Herald started with the example's herald.toml,
// a real RabbitMQ and the real greeting service: a person clicks Connect,
// types a name, clicks Send, and sees the greeting.
//
// The browser has no network. Every HTTP request the page makes is answered
// here with page.route: the page's own files from examples/greeting/static
// under a made-up http origin, and the CDN URLs its script tags name from
// the files this directory's npm packages install (@stomp/stompjs 7.3.0
// answers the tutorial's 7.0.0 URL; Bootstrap, which only styles the page,
// is an empty stylesheet). The WebSocket is not routed: it reaches Herald
// itself. Herald listens on an ephemeral port, so app.js is served with the
// host:port of its brokerURL (ws://127.0.0.1:8080/stomp, as the README says
// to run it) replaced by the test node's address; nothing else changes.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { once } from "node:events";
import { readFile } from "node:fs/promises";
import { createInterface } from "node:readline";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { amqpUrl, heraldBinary, launchChromium, startHerald } from "./herald.mjs";

const AMQP_URL = amqpUrl();
const here = path.dirname(fileURLToPath(import.meta.url));
const example = path.resolve(here, "../../examples/greeting");
const modules = path.join(here, "node_modules");
// Where the README serves the page (python3 -m http.server 8000); nothing
// listens there, page.route answers. A routed response comes from no
// address, so Chromium's Local Network Access checks count the page as
// public and ask before it may open a WebSocket to 127.0.0.1: the test
// grants that, as a person would at the prompt.
const PAGE_ORIGIN = "http://127.0.0.1:8000";
const BROKER_URL = "ws://127.0.0.1:8080/stomp";

/** What the page's CDN script and style tags get. */
const CDN = new Map([
  ["https://cdn.jsdelivr.net/npm/@stomp/stompjs@7.0.0/bundles/stomp.umd.min.js", path.join(modules, "@stomp/stompjs/bundles/stomp.umd.min.js")],
  ["https://code.jquery.com/jquery-3.7.1.min.js", path.join(modules, "jquery/dist/jquery.min.js")],
  ["https://cdn.jsdelivr.net/npm/bootstrap@3.3.7/dist/css/bootstrap.min.css", null],
]);
const TYPES = { ".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8" };

let service;
let herald;
let browser;

/**
 * The greeting service as `cargo build --examples` builds it, beside the
 * herald binary under test (target/debug/examples/greeting-service), started
 * as tests/example_greeting.rs starts it: ready once it prints its line.
 */
async function startGreetingService() {
  const binary = path.join(path.dirname(heraldBinary()), "examples", "greeting-service");
  const child = spawn(binary, [], { env: { ...process.env, AMQP_URL }, stdio: ["ignore", "pipe", "inherit"] });
  const lines = createInterface({ input: child.stdout });
  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${binary} did not say it was ready`)), 15_000);
    child.once("error", (err) => reject(new Error(`cannot start ${binary} (${err.message}); \`cargo build --examples\` builds it`)));
    child.once("exit", (code) => reject(new Error(`${binary} exited with ${code}`)));
    lines.once("line", (line) => {
      clearTimeout(timer);
      if (line.trim() === "greeting service ready") resolve();
      else reject(new Error(`${binary} said ${JSON.stringify(line)}`));
    });
  });
  return {
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill("SIGTERM");
      await once(child, "exit");
    },
  };
}

before(async () => {
  service = await startGreetingService();
  herald = await startHerald(["--config", path.join(example, "herald.toml"), "--amqp-url", AMQP_URL], { ready: true });
  browser = await launchChromium();
});

after(async () => {
  await browser?.close();
  await herald?.stop();
  await service?.stop();
});

/** A page whose every request is answered from examples/greeting/static or node_modules. */
async function tutorialPage() {
  const context = await browser.newContext();
  await context.grantPermissions(["local-network-access"], { origin: PAGE_ORIGIN });
  const page = await context.newPage();
  const script = await readFile(path.join(example, "static", "app.js"), "utf8");
  assert.ok(script.includes(`brokerURL: '${BROKER_URL}'`), `app.js connects to ${BROKER_URL}`);
  const served = script.replace(BROKER_URL, `ws://${herald.address}/stomp`);
  const unexpected = [];
  await page.route("**/*", async (route) => {
    const url = route.request().url();
    if (CDN.has(url)) {
      const file = CDN.get(url);
      const type = url.endsWith(".css") ? TYPES[".css"] : TYPES[".js"];
      return route.fulfill({ status: 200, contentType: type, body: file ? await readFile(file) : "" });
    }
    if (url.startsWith(`${PAGE_ORIGIN}/`)) {
      const name = new URL(url).pathname === "/" ? "index.html" : new URL(url).pathname.slice(1);
      const body =
        name === "app.js" ? served : await readFile(path.join(example, "static", path.basename(name)), "utf8").catch(() => null);
      if (body === null) return route.fulfill({ status: 404, body: "not found" });
      return route.fulfill({ status: 200, contentType: TYPES[path.extname(name)], body });
    }
    unexpected.push(url);
    return route.abort();
  });
  return { page, unexpected };
}

test("a person connects, sends a name and sees the greeting from the service", async () => {
  const { page, unexpected } = await tutorialPage();
  const errors = [];
  page.on("pageerror", (err) => errors.push(err.message));
  const stompErrors = [];
  page.on("console", (message) => {
    if (message.type() === "error") stompErrors.push(message.text());
  });
  try {
    await page.goto(`${PAGE_ORIGIN}/index.html`);
    // The tutorial's <label for="connect"> names the Connect button
    // "WebSocket connection:" for assistive technology, so it is found by id.
    await page.locator("#connect").click();
    await page.locator("#disconnect:enabled").waitFor();
    assert.ok(await page.locator("#connect").isDisabled());
    // The tutorial subscribes without a receipt; wait until Herald holds
    // the subscription, as a person reading the page would have time for.
    await waitForSubscriptions(1);

    await page.getByPlaceholder("Your name here...").fill("Ada");
    await page.getByRole("button", { name: "Send", exact: true }).click();
    await page.locator("#greetings").getByText("Hello, Ada!", { exact: true }).waitFor({ timeout: 10_000 });

    await page.getByPlaceholder("Your name here...").fill("Grace");
    await page.getByRole("button", { name: "Send", exact: true }).click();
    await page.locator("#greetings").getByText("Hello, Grace!", { exact: true }).waitFor({ timeout: 10_000 });
    assert.deepEqual(await page.locator("#greetings td").allTextContents(), ["Hello, Ada!", "Hello, Grace!"]);

    await page.getByRole("button", { name: "Disconnect", exact: true }).click();
    await page.locator("#connect:enabled").waitFor();
    assert.deepEqual(errors, []);
    assert.deepEqual(stompErrors, []);
    assert.deepEqual(unexpected, [], "the page asked for nothing beyond its files and its CDN tags");
  } catch (err) {
    err.message += `\n--- page console errors:\n${stompErrors.join("\n")}\n--- herald log (last 30 lines):\n${herald.logs.slice(-30).join("\n")}`;
    throw err;
  } finally {
    await page.context().close();
  }
});

async function waitForSubscriptions(count) {
  const deadline = Date.now() + 10_000;
  for (;;) {
    const stats = await fetch(herald.url("/api/stats")).then((r) => r.json());
    if (stats.subscriptions === count) return;
    if (Date.now() > deadline) throw new Error(`herald holds ${stats.subscriptions} subscriptions, not ${count}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}
