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

export async function startHerald(args = []) {
  const env = Object.fromEntries(Object.entries(process.env).filter(([key]) => !key.startsWith("HERALD_")));
  const child = spawn(heraldBinary(), ["--listen", "127.0.0.1:0", ...args], {
    env: { ...env, RUST_LOG: "info" },
    stdio: ["ignore", "ignore", "pipe"],
  });
  const logs = [];
  const lines = createInterface({ input: child.stderr });
  const address = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`herald did not start:\n${logs.join("\n")}`)), 10_000);
    lines.on("line", (line) => {
      logs.push(line);
      const match = line.match(/listening on http:\/\/(\S+)/);
      if (match) {
        clearTimeout(timer);
        resolve(match[1]);
      }
    });
    child.once("exit", (code) => reject(new Error(`herald exited with ${code}:\n${logs.join("\n")}`)));
  });
  return {
    address,
    url: (p) => `http://${address}${p}`,
    logs,
    async stop() {
      if (child.exitCode !== null) return;
      child.kill("SIGTERM");
      await once(child, "exit");
    },
  };
}

let counter = 0;
export function uniqueTopic(prefix) {
  counter += 1;
  return `${prefix}.js${process.pid}x${counter}`;
}
