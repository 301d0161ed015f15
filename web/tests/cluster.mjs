// A real local cluster for the browser tests: a redis-server and chat-node
// processes on free loopback ports, serving the built app from web/dist.

import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { once } from "node:events";
import { mkdtempSync, openSync, readFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const here = dirname(fileURLToPath(import.meta.url));
export const root = resolve(here, "..", "..");
const nodeBin = process.env.CHAT_NODE_BIN ?? join(root, "target", "debug", "chat-node");

const handedOut = new Set();

function bindable(port) {
  return new Promise((ok) => {
    const s = createServer();
    s.unref();
    s.once("error", () => ok(false));
    s.listen(port, "127.0.0.1", () => s.close(() => ok(true)));
  });
}

/** A loopback port free now and not handed out before, below the kernel's
 * ephemeral range (32768 and up), from which outgoing connections draw: a
 * port from port 0 could be taken by one before the server binds it. */
export async function freePort() {
  for (let i = 0; i < 1000; i++) {
    const port = 20000 + Math.floor(Math.random() * 12000);
    if (handedOut.has(port)) continue;
    if (await bindable(port)) {
      handedOut.add(port);
      return port;
    }
  }
  throw new Error("no free port");
}

/** Records, in `page.wsLog`, every frame the page's WebSockets send
 * (`dir` "out") and receive ("in"), parsed, in the order they went:
 * what the page was told and what it asked. */
export function recordFrames(page) {
  page.wsLog = [];
  page.sockets = 0;
  page.on("websocket", (ws) => {
    page.sockets += 1;
    const log = (dir) => (f) => {
      let frame;
      try {
        frame = JSON.parse(f.payload);
      } catch {
        return;
      }
      page.wsLog.push({ dir, frame });
    };
    ws.on("framereceived", log("in"));
    ws.on("framesent", log("out"));
  });
}

/** The password every test account is made with. */
export const PASSWORD = "correct horse battery";

/** A name no other run of the tests has used. */
export function unique(prefix) {
  return `${prefix}${Date.now().toString(36)}${Math.floor(Math.random() * 1e6).toString(36)}`;
}

/** Counts `page`'s console errors and uncaught exceptions in `page.errors`
 * (every test checks the app logged none). */
export function watchErrors(page) {
  page.errors = [];
  page.on("console", (m) => m.type() === "error" && page.errors.push(m.text()));
  page.on("pageerror", (e) => page.errors.push(String(e)));
  return page;
}

/** Registers a new user named from `prefix` on the sign-in form `page`
 * shows, and waits for its socket to open; `page.user` is the name. */
export async function register(page, prefix) {
  const name = unique(prefix);
  await page.fill("[data-testid=username]", name);
  await page.fill("[data-testid=password]", PASSWORD);
  await page.click("[data-testid=register]");
  await page.waitForSelector("[data-testid=connection][data-state=open]");
  page.user = name;
  return page;
}

/** Polls `check` until it returns a truthy value (or throws past `ms`). */
export async function eventually(what, check, ms = 60_000) {
  const deadline = Date.now() + ms;
  let last;
  for (;;) {
    try {
      const v = await check();
      if (v) return v;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) throw new Error(`${what}: not within ${ms} ms (${last ?? "false"})`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Starts `n` nodes (and Redis) and waits until they serve together.
 * `admins` (name to password) are made with `chat-node admin create-user`
 * on node 1's store before it first starts: registration refuses the names
 * in `[admin] users`, and the embedded store is one process's. Node 1's
 * op log carries the accounts to the others. */
/** The weight of `node` for `key` in rendezvous hashing, as
 * actors/src/placement.rs computes it: the first 8 bytes of
 * SHA-256(node, 0, key), big-endian. */
export function weight(node, key) {
  const digest = createHash("sha256").update(node).update(Buffer.from([0])).update(key).digest();
  return digest.readBigUInt64BE(0);
}

/** Which of the live node names owns `conversation`: the highest weight
 * (ties broken by the greater name, as the Rust side's `max_by_key`). */
export function ownerName(conversation, names) {
  let best = null;
  for (const name of names) {
    const w = weight(name, conversation);
    if (!best || w > best.w || (w === best.w && name > best.name)) best = { w, name };
  }
  return best?.name ?? null;
}

export async function startCluster(n, extraEnv = {}, { admins = {} } = {}) {
  const dir = mkdtempSync(join(tmpdir(), "chat-web-test-"));
  const redisPort = await freePort();
  const redis = spawn("redis-server", ["--port", String(redisPort), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"], {
    stdio: "ignore",
  });
  const clusterPorts = [];
  for (let i = 0; i < n; i++) clusterPorts.push(await freePort());
  const httpPorts = [];
  for (let i = 0; i < n; i++) httpPorts.push(await freePort());
  const cluster = {
    dir,
    redis,
    nodes: [],
    urls: httpPorts.map((p) => `http://127.0.0.1:${p}`),
    /** Node `i`'s name, as placement hashes it. */
    name(i) {
      return `node-${i + 1}`;
    },
    /** The environment node `i` runs with, also for its operator commands:
     * they must open its store as it does (its name, its cluster). */
    env(i) {
      const env = { ...process.env };
      for (const k of Object.keys(env)) if (k.startsWith("CHAT__")) delete env[k];
      Object.assign(env, {
        RUST_LOG: "info",
        NO_COLOR: "1",
        CHAT__NODE__NAME: this.name(i),
        CHAT__NODE__ID: String(i + 1),
        CHAT__AUTH__JWT_SECRET: "web-test-secret-web-test-secret-0123456789",
        CHAT__AUTH__THROTTLE__REGISTRATIONS_PER_HOUR: "1000000",
        CHAT__AUTH__THROTTLE__REGISTRATION_BURST: "1000000",
        CHAT__AUTH__THROTTLE__LOGINS_PER_MINUTE: "1000000",
        CHAT__AUTH__THROTTLE__LOGIN_BURST: "1000000",
        CHAT__LIMITS__SEND_BURST: "100000",
        CHAT__LIMITS__SENDS_PER_SECOND: "100000",
        CHAT__CLUSTER__LISTEN: `127.0.0.1:${clusterPorts[i]}`,
        CHAT__CLUSTER__SEEDS: JSON.stringify(clusterPorts.map((p) => `127.0.0.1:${p}`)),
        CHAT__CLUSTER__COOKIE: "web-test-cookie-0123456789",
        CHAT__CLUSTER__JOIN_TIMEOUT_SECS: "3",
        CHAT__PRESENCE__BACKEND: "redis",
        CHAT__PRESENCE__REDIS_URL: `redis://127.0.0.1:${redisPort}`,
        CHAT__PRESENCE__TTL_SECS: "5",
        CHAT__WEB__DIR: join(root, "web", "dist"),
        // Every node publishes them all: a page fails over to the others.
        CHAT__WEB__NODES: JSON.stringify(this.urls),
        // A function of the nodes' URLs, for settings that name them.
        ...(typeof extraEnv === "function" ? extraEnv(this.urls) : extraEnv),
      });
      return env;
    },
    /** The index of the node that owns `conversation` while the nodes
     * `live` (indexes) serve. */
    owner(conversation, live) {
      const name = ownerName(conversation, live.map((i) => this.name(i)));
      return live.find((i) => this.name(i) === name);
    },
    dataDir(i) {
      return join(dir, `node-${i + 1}`);
    },
    start(i) {
      const log = openSync(join(dir, `node-${i + 1}.log`), "a");
      const child = spawn(nodeBin, ["--http", `127.0.0.1:${httpPorts[i]}`, "--data-dir", this.dataDir(i)], {
        env: this.env(i),
        stdio: ["ignore", "ignore", log],
      });
      this.nodes[i] = child;
      return child;
    },
    /** `chat-node admin create-user NAME` on node `i`'s store, as an
     * operator runs it: with the node stopped, the password on stdin. */
    async createAdmin(i, name, password) {
      assert.ok(!this.nodes[i], `node ${i + 1} must be stopped to open its store`);
      const child = spawn(nodeBin, ["--data-dir", this.dataDir(i), "admin", "create-user", name], {
        env: this.env(i),
        stdio: ["pipe", "pipe", "pipe"],
      });
      let out = "";
      child.stdout.on("data", (d) => (out += d));
      child.stderr.on("data", (d) => (out += d));
      child.stdin.end(`${password}\n`);
      const [code] = await once(child, "exit");
      assert.equal(code, 0, `chat-node admin create-user ${name}: ${out}`);
    },
    kill(i) {
      this.nodes[i]?.kill("SIGKILL");
      this.nodes[i] = null;
    },
    /** Waits until every running node serves with all the others. */
    async formed() {
      const running = this.nodes.filter(Boolean).length;
      for (let i = 0; i < n; i++) {
        if (!this.nodes[i]) continue;
        await eventually(`node ${i + 1} serves in a cluster of ${running}`, async () => {
          const res = await fetch(`${this.urls[i]}/v1/cluster`);
          const v = await res.json();
          return v.serving && (v.serving_nodes ?? []).length === running && (v.peers ?? []).every((p) => p.serving && p.synced);
        });
      }
    },
    log(i) {
      try {
        return readFileSync(join(dir, `node-${i + 1}.log`), "utf8").split("\n").slice(-20).join("\n");
      } catch {
        return "";
      }
    },
    stop() {
      for (const c of this.nodes) c?.kill("SIGKILL");
      redis.kill("SIGKILL");
    },
  };
  for (const [name, password] of Object.entries(admins)) await cluster.createAdmin(0, name, password);
  for (let i = 0; i < n; i++) cluster.start(i);
  await cluster.formed();
  return cluster;
}

/** Debian's Chromium, headless, as every browser test runs it. */
export function launchBrowser() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run"],
  });
}

/** Closes the browser and stops the cluster, saying where its logs are. */
export async function tearDown(browser, cluster) {
  await browser?.close();
  cluster?.stop();
  if (cluster) console.log(`# node logs: ${cluster.dir}/node-*.log`);
}
