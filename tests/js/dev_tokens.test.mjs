// The demo page's "Sign in as", in headless Chromium, against a node started
// with a JWT secret and development tokens on: the page mints a short-lived
// token for a user, connects with it, and refreshes it each time the node
// says it is expiring, so the session outlives its first token, in the JSON
// mode and in the STOMP mode.
//
// The tokens live 4 s: shorter than the node's 30 s notice window, so the
// `expiring` notice comes at once, and the page (which refreshes halfway
// through the time left) refreshes within about 2 s, again and again. The
// session is checked after the first token's `exp` has passed, when it
// would have been closed with 4001 without a refresh.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import path from "node:path";
import { explained, launchChromium, recordFrames, startHerald, uniqueTopic } from "./herald.mjs";

const SECRET = "dev-token-page-secret";
const TTL_SECS = 4;

let herald;
let browser;

before(async () => {
  herald = await startHerald(["--jwt-secret", SECRET, "--dev-tokens", "--auth", "required"]);
  browser = await launchChromium();
});

after(async () => {
  await browser?.close();
  await herald?.stop();
});

/**
 * Signs in as `user` in the page's current mode, waits for the first
 * refresh, and checks that after the first token's expiry the session is
 * still open and still receives what a backend publishes.
 */
async function signInAndOutliveTheFirstToken(page, user) {
  await page.getByTestId("dev-sign-in").waitFor();
  await page.getByTestId("dev-user").fill(user);
  await page.getByTestId("dev-ttl").fill(String(TTL_SECS));
  const signedIn = Date.now();
  await page.getByTestId("dev-connect").click();
  await page.getByTestId("status").filter({ hasText: /^connected$/ }).waitFor();
  assert.equal(await page.locator("#fact-user").textContent(), user);
  assert.match(await page.locator("#token").inputValue(), /^eyJ/, "the minted token is shown");

  const log = page.getByTestId("message-list");
  await log.getByText(`token minted for ${user}, valid until`).waitFor();
  await log.getByText(new RegExp(`^token for ${user} expires in \\d+ s: refreshing it$`)).first().waitFor();
  await log.getByText(new RegExp(`^token refreshed for ${user}: valid until \\S`)).first().waitFor({ timeout: 5_000 });

  const topic = uniqueTopic("devtokens");
  await page.getByTestId("subscribe-topic").fill(topic);
  await page.getByTestId("subscribe").click();
  await page.getByTestId("subscription-list").getByText(topic).waitFor();

  // The first token's `exp` is at most TTL_SECS after the sign-in; a second
  // more makes sure it has passed.
  const pastFirstExpiry = signedIn + (TTL_SECS + 1) * 1000 - Date.now();
  if (pastFirstExpiry > 0) await page.waitForTimeout(pastFirstExpiry);
  const response = await fetch(herald.url("/api/publish"), {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ topic, data: { after: "the first token expired" } }),
  });
  assert.equal(response.status, 202);
  await log.locator("li").filter({ hasText: "the first token expired" }).waitFor();
  assert.equal(await page.getByTestId("status").textContent(), "connected");
  assert.ok(
    (await log.getByText(/^token refreshed for /).count()) >= 2,
    "a refreshed token is refreshed again in its turn",
  );
  assert.equal(await log.locator("li.notice:not(.info)").count(), 0, "no warning or error in the log");
}

test("a node without development tokens shows no sign-in box", async () => {
  const plain = await startHerald(["--jwt-secret", SECRET]);
  const page = await browser.newPage();
  try {
    const discovery = page.waitForResponse((response) => response.url().endsWith("/api/dev/token"));
    await page.goto(plain.url("/"));
    assert.equal((await discovery).status(), 404);
    await page.waitForTimeout(100);
    assert.equal(await page.getByTestId("dev-sign-in").isVisible(), false);
  } finally {
    await page.close();
    await plain.stop();
  }
});

test("in JSON mode the page signs in with a minted token and refreshes it before it expires", async () => {
  const page = await browser.newPage();
  const frames = recordFrames(page);
  const errors = [];
  page.on("pageerror", (err) => errors.push(err.message));
  try {
    await explained(frames, herald, async () => {
      await page.goto(herald.url("/"));
      await signInAndOutliveTheFirstToken(page, "ada");
      await page.screenshot({ path: path.join(process.env.SCREENSHOT_DIR || "/tmp", "herald-demo-dev-tokens.png"), fullPage: true });
      assert.match(frames[0], /^open ws:\/\/.*\/ws\?token=eyJ/, "the token goes as ?token=");
      assert.ok(frames.some((f) => f.includes('\\"op\\":\\"expiring\\"')), "the node sent expiring");
      assert.ok(frames.some((f) => f.startsWith("> ") && f.includes('\\"op\\":\\"refresh\\"')), "the page sent refresh");
      assert.equal(frames.filter((f) => f.startsWith("open ")).length, 1, "one connection throughout");
      assert.deepEqual(errors, []);
    });
  } finally {
    await page.close();
  }
});

test("in STOMP mode the page signs in with the token as passcode and refreshes it on /herald/refresh", async () => {
  const page = await browser.newPage();
  const frames = recordFrames(page);
  const errors = [];
  page.on("pageerror", (err) => errors.push(err.message));
  try {
    await explained(frames, herald, async () => {
      await page.goto(herald.url("/"));
      await page.getByTestId("protocol-stomp").check();
      await signInAndOutliveTheFirstToken(page, "grace");
      assert.equal(frames[0], `open ws://${herald.address}/stomp`, "no token in the URL");
      assert.ok(frames.some((f) => f.startsWith('> "CONNECT\\n') && f.includes("passcode:eyJ")), "passcode in CONNECT");
      assert.ok(frames.some((f) => f.startsWith('> "SUBSCRIBE\\n') && f.includes("destination:/herald/expiring")), "subscribed to /herald/expiring");
      assert.ok(frames.some((f) => f.startsWith('< "MESSAGE\\n') && f.includes("destination:/herald/expiring")), "the node sent the notice");
      assert.ok(
        frames.some((f) => f.startsWith('> "SEND\\n') && f.includes("destination:/herald/refresh") && f.includes("passcode:eyJ")),
        "the page sent the fresh token to /herald/refresh",
      );
      assert.equal(frames.filter((f) => f.startsWith("open ")).length, 1, "one connection throughout");
      assert.deepEqual(errors, []);
    });
  } finally {
    await page.close();
  }
});
