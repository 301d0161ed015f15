// Where the pages send passwords and tokens: only to their own origin and
// the nodes that origin publishes (`[web] nodes`), never to a server named
// by a link (`/?nodes=`, `/admin?node=`) or planted in localStorage
// (`chat.nodes`, which earlier versions kept from such a link). A stand-in
// server on a loopback port plays the attacker's and records every
// connection it receives. Also: the pages work under the node's
// Content-Security-Policy (any violation is a console error here), cannot be
// framed, and the build ships no source maps.

import { after, before, beforeEach, test } from "node:test";
import assert from "node:assert/strict";
import { once } from "node:events";
import { readdirSync } from "node:fs";
import { createServer } from "node:http";
import { join } from "node:path";
import { eventually, freePort, launchBrowser, root, startCluster, PASSWORD, unique, watchErrors } from "./cluster.mjs";


const ADMIN = unique("root");
let cluster;
let browser;
let node;
/** The stand-in's base URL, and everything it received. */
let standIn;
const received = [];
let standInServer;
/** A page of another origin that frames the app. */
let framer;
let framerServer;

/** A server on `port` answering every request with `handler`. */
function serve(port, handler) {
  return new Promise((ok) => {
    const server = createServer(handler);
    server.listen(port, "127.0.0.1", () => ok(server));
  });
}

before(async () => {
  standIn = `http://127.0.0.1:${await freePort()}`;
  // Answers as an attacker's server would (CORS open to any page), so that
  // nothing but the page itself keeps a request from arriving.
  standInServer = await serve(Number(new URL(standIn).port), (req, res) => {
    let body = "";
    req.on("data", (c) => (body += c));
    req.on("end", () => {
      received.push(`${req.method} ${req.url} ${body}`);
      res.writeHead(req.method === "OPTIONS" ? 204 : 503, {
        "access-control-allow-origin": "*",
        "access-control-allow-headers": "*",
        "access-control-allow-methods": "*",
        "content-type": "application/json",
      });
      res.end(req.method === "OPTIONS" ? "" : JSON.stringify({ code: "unavailable", message: "stand-in" }));
    });
  });
  standInServer.on("connection", () => received.push("a TCP connection"));
  standInServer.on("upgrade", (req, socket) => {
    received.push(`UPGRADE ${req.url}`);
    socket.destroy();
  });

  // Registration refuses the names in `[admin] users`: the admin's account
  // is made first, and the node restarted naming it an admin.
  const env = {};
  cluster = await startCluster(1, env);
  node = cluster.urls[0];
  const res = await fetch(`${node}/v1/auth/register`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ username: ADMIN, password: PASSWORD }),
  });
  assert.equal(res.status, 201);
  env.CHAT__ADMIN__USERS = JSON.stringify([ADMIN]);
  // Its port and store are free once the process is gone.
  const exited = once(cluster.nodes[0], "exit");
  cluster.kill(0);
  await exited;
  cluster.start(0);
  await cluster.formed();

  framer = `http://127.0.0.1:${await freePort()}`;
  framerServer = await serve(Number(new URL(framer).port), (_req, res) => {
    res.writeHead(200, { "content-type": "text/html" });
    res.end(`<!doctype html><iframe src="${node}/" onload="window.framed = true"></iframe>`);
  });

  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  cluster?.stop();
  standInServer?.close();
  framerServer?.close();
});

// Each test answers for what reached the stand-in while it ran.
beforeEach(() => {
  received.length = 0;
});

/** Chromium reports some violations only as events, so each one becomes a
 * console error, which the tests collect. */
function reportCspViolations() {
  document.addEventListener("securitypolicyviolation", (e) =>
    console.error(`CSP violation: ${e.violatedDirective} blocked ${e.blockedURI}`),
  );
}

async function newPage() {
  const context = await browser.newContext();
  await context.addInitScript(reportCspViolations);
  const page = await context.newPage();
  watchErrors(page);
  return page;
}

/** Waits until the page shows `done` or an error, or the stand-in heard
 * something: whichever comes first, the stand-in must have heard nothing. */
async function settles(page, done, what) {
  await eventually(
    what,
    async () => received.length > 0 || (await page.locator(`${done}, [role=alert]`).count()) > 0,
  );
  assert.deepEqual(received, [], `${what}: the stand-in was reached`);
  assert.equal(await page.locator("[role=alert]").count(), 0, `${what}: ${await page.locator("[role=alert]").allTextContents()}`);
  await page.waitForSelector(done);
}

function assertCsp(response, what) {
  const csp = response.headers()["content-security-policy"] ?? "";
  assert.match(csp, /frame-ancestors 'none'/, `${what}: CSP ${csp}`);
  assert.match(csp, /default-src 'self'/, `${what}: CSP ${csp}`);
}

test("a link's ?nodes= gets no request: registering and chatting go to the page's own node", async () => {
  const page = await newPage();
  const response = await page.goto(`${node}/?nodes=${standIn}`);
  const user = unique("carol");
  await page.fill("[data-testid=username]", user);
  await page.fill("[data-testid=password]", PASSWORD);
  await page.click("[data-testid=register]");
  await settles(page, "[data-testid=connection][data-state=open]", "registering");
  assert.equal(await page.evaluate(() => localStorage.getItem("chat.nodes")), null, "the link's list is not kept");

  // The chat under the CSP: a conversation, a message acknowledged.
  const peer = unique("dave");
  const res = await fetch(`${node}/v1/auth/register`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ username: peer, password: PASSWORD }),
  });
  assert.equal(res.status, 201);
  await page.fill("[data-testid=new-members]", peer);
  await page.click("[data-testid=start]");
  await page.waitForFunction(() => location.hash.startsWith("#/c/"));
  await page.fill("[data-testid=composer]", "under the policy");
  await page.press("[data-testid=composer]", "Enter");
  await page.waitForSelector("[data-testid=message][data-id]:has-text('under the policy')");
  assert.deepEqual(received, []);
  assert.deepEqual(page.errors, [], "console errors (CSP violations included)");
  assertCsp(response, "the app");
  await page.context().close();
});

test("a chat.nodes planted in localStorage is removed, not used", async () => {
  const planted = unique("erin");
  const res = await fetch(`${node}/v1/auth/register`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ username: planted, password: PASSWORD }),
  });
  assert.equal(res.status, 201);
  const page = await newPage();
  await page.goto(node);
  await page.evaluate((s) => localStorage.setItem("chat.nodes", JSON.stringify([s])), standIn);
  await page.reload();
  await page.fill("[data-testid=username]", planted);
  await page.fill("[data-testid=password]", PASSWORD);
  await page.click("[data-testid=login]");
  await settles(page, "[data-testid=connection][data-state=open]", "signing in");
  assert.equal(await page.evaluate(() => localStorage.getItem("chat.nodes")), null, "the planted list is gone");
  assert.deepEqual(page.errors, [], "console errors (CSP violations included)");
  await page.context().close();
});

test("the admin console ignores ?node=: the admin's password goes to its own node", async () => {
  const page = await newPage();
  const response = await page.goto(`${node}/admin?node=${standIn}`);
  await page.fill("[data-testid=username]", ADMIN);
  await page.fill("[data-testid=password]", PASSWORD);
  await page.click("[data-testid=login]");
  await settles(page, "[data-testid=node-row][data-node=node-1]", "the admin signing in");
  await page.fill("[data-testid=user-query]", ADMIN);
  await page.click("[data-testid=user-lookup]");
  await page.waitForSelector(`[data-testid=user-card][data-user="${ADMIN}"]`);
  assert.deepEqual(received, []);
  assert.deepEqual(page.errors, [], "console errors (CSP violations included)");
  assertCsp(response, "the console");
  await page.context().close();
});

test("another origin cannot frame the app", async () => {
  const page = await newPage();
  await page.goto(framer);
  // The frame's load event fires for the refusal's error page too.
  await page.waitForFunction(() => window.framed === true);
  const frame = page.frames().find((f) => f !== page.mainFrame());
  const inside = await frame.evaluate(() => document.querySelector("#app") !== null).catch(() => false);
  assert.equal(inside, false, "the app loaded inside another origin's frame");
  await page.context().close();
});

test("the build ships no source maps", () => {
  const maps = readdirSync(join(root, "web", "dist", "assets")).filter((f) => f.endsWith(".map"));
  assert.deepEqual(maps, []);
});
