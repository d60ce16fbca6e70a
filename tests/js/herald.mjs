// Starts the real `herald` binary on a free port for a JavaScript test and
// stops it afterwards.
import { spawn } from "node:child_process";
import { once } from "node:events";
import { createInterface } from "node:readline";
import path from "node:path";
import { fileURLToPath } from "node:url";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");

export function heraldBinary() {
  return process.env.HERALD_BIN || path.join(root, "target", "debug", "herald");
}

/** The RabbitMQ the AMQP tests use (the same default as the Rust tests). */
export function amqpUrl() {
  return process.env.HERALD_TEST_AMQP_URL || "amqp://guest:guest@127.0.0.1:5672/%2f";
}

/**
 * Starts herald with `args` (after `--listen 127.0.0.1:0`) and the extra
 * environment `env` (no HERALD_* variable of the shell leaks in). With
 * `ready`, waits until `GET /readyz` answers 200 (a configured RabbitMQ is
 * connected), failing after `readyWithin` ms.
 */
export async function startHerald(args = [], { env = {}, ready = false, readyWithin = 20_000 } = {}) {
  const inherited = Object.fromEntries(Object.entries(process.env).filter(([key]) => !key.startsWith("HERALD_")));
  const child = spawn(heraldBinary(), ["--listen", "127.0.0.1:0", ...args], {
    env: { ...inherited, RUST_LOG: "info", ...env },
    stdio: ["ignore", "ignore", "pipe"],
  });
  const logs = [];
  const lines = createInterface({ input: child.stderr });
  lines.on("line", (line) => logs.push(line));
  const address = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`herald did not start:\n${logs.join("\n")}`)), 10_000);
    lines.on("line", (line) => {
      const match = line.match(/listening on http:\/\/(\S+)/);
      if (match) {
        clearTimeout(timer);
        resolve(match[1]);
      }
    });
    child.once("exit", (code) => {
      clearTimeout(timer);
      // Let the last lines of stderr arrive before reporting them.
      setTimeout(() => reject(new Error(`herald ${args.join(" ")} exited with ${code}:\n${logs.join("\n")}`)), 100);
    });
  });
  const node = {
    address,
    url: (p) => `http://${address}${p}`,
    wsUrl: (p) => `ws://${address}${p}`,
    logs,
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill("SIGTERM");
      await once(child, "exit");
    },
  };
  if (ready) {
    try {
      await waitReady(node, readyWithin);
    } catch (err) {
      await node.stop();
      throw err;
    }
  }
  return node;
}

/** Polls `GET /readyz` until it answers 200. */
export async function waitReady(node, within = 20_000) {
  const deadline = Date.now() + within;
  let last = "no answer";
  while (Date.now() < deadline) {
    try {
      const response = await fetch(node.url("/readyz"));
      last = `${response.status} ${await response.text()}`;
      if (response.status === 200) return;
    } catch (err) {
      last = String(err);
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  throw new Error(`herald was not ready within ${within} ms (last /readyz: ${last}):\n${node.logs.join("\n")}`);
}

let counter = 0;
export function uniqueTopic(prefix) {
  counter += 1;
  return `${prefix}.js${process.pid}x${counter}`;
}

/** Debian's Chromium (or CHROMIUM_PATH), headless, quiet, for the page tests. */
export async function launchChromium() {
  const { chromium } = await import("playwright-core");
  return chromium.launch({
    executablePath: process.env.CHROMIUM_PATH || "/usr/bin/chromium",
    args: [
      "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync",
    ],
  });
}

/**
 * Records every WebSocket frame `page` sends and receives, so that a
 * failing page test says what went over the wire.
 */
export function recordFrames(page) {
  const frames = [];
  page.on("websocket", (socket) => {
    frames.push(`open ${socket.url()}`);
    socket.on("framesent", (frame) => frames.push(`> ${JSON.stringify(String(frame.payload))}`));
    socket.on("framereceived", (frame) => frames.push(`< ${JSON.stringify(String(frame.payload))}`));
    socket.on("close", () => frames.push("closed"));
  });
  return frames;
}

/** Runs `body`; if it throws, adds the frames and `node`'s log to the error. */
export async function explained(frames, node, body) {
  try {
    await body();
  } catch (err) {
    err.message += `\n--- WebSocket frames:\n${frames.join("\n")}\n--- herald log (last 30 lines):\n${node.logs.slice(-30).join("\n")}`;
    throw err;
  }
}
