// The operators' console (`/admin`) in a real browser against a real
// three-node cluster: an admin signs in and sees the nodes; a non-admin is
// turned away; a user connected on two nodes is suspended (both pages are
// signed out, sign-in is refused), unsuspended, and disconnected (both
// connections close and come back); a conversation's owner is looked up;
// node-3 is drained until its process exits. Screenshots go to
// web/test-artifacts/ (admin-console.png is the overview).

import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { eventually, freePort, launchBrowser, root, startCluster, PASSWORD, unique, watchErrors } from "./cluster.mjs";

const artifacts = join(root, "web", "test-artifacts");
const NAMES = ["node-1", "node-2", "node-3"];

const ADMIN = unique("root");
const BOB = unique("bob");
let cluster;
let browser;
let adminToken;
let bobTokens;
/** The console on node 1, signed in as the admin. */
let console1;
/** Bob's chat app on node 2 and on node 3. */
let bob2;
let bob3;

/** `method path` on node `i`: the status and the JSON body. */
async function http(i, method, path, { token, body } = {}) {
  const headers = {};
  if (token) headers.authorization = `Bearer ${token}`;
  if (body !== undefined) headers["content-type"] = "application/json";
  const res = await fetch(cluster.urls[i] + path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  let json = null;
  try {
    json = text ? JSON.parse(text) : null;
  } catch {
    json = { unparsed: text };
  }
  return { status: res.status, body: json };
}

before(async () => {
  mkdirSync(artifacts, { recursive: true });
  // The value is TOML: an array of strings. A name listed there is
  // reserved: the operator makes its account, as an operator would.
  // A webhook to a port nothing listens on: its deliveries end as dead
  // letters within seconds (retries 10 ms apart, doubling).
  const deadEnd = await freePort();
  const env = {
    CHAT__ADMIN__USERS: JSON.stringify([ADMIN]),
    CHAT__NOTIFICATIONS__POLL_MS: "100",
    CHAT__NOTIFICATIONS__RETRY_BASE_MS: "10",
    CHAT__NOTIFICATIONS__WEBHOOKS: `[{name = "dead-end", url = "http://127.0.0.1:${deadEnd}/hook", secret = "web-test-webhook-secret", events = ["message.created"]}]`,
  };
  cluster = await startCluster(3, env, { admins: { [ADMIN]: PASSWORD } });
  const taken = await http(1, "POST", "/v1/auth/register", { body: { username: ADMIN.toUpperCase(), password: PASSWORD } });
  assert.equal(taken.status, 409, `register ${ADMIN.toUpperCase()}: ${JSON.stringify(taken.body)}`);
  assert.equal(taken.body?.code, "conflict");
  const a = await http(0, "POST", "/v1/auth/login", { body: { username: ADMIN, password: PASSWORD } });
  assert.equal(a.status, 200, `sign in as ${ADMIN}: ${JSON.stringify(a.body)}`);
  adminToken = a.body.access_token;
  const b = await http(1, "POST", "/v1/auth/register", { body: { username: BOB, password: PASSWORD } });
  assert.equal(b.status, 201, `register ${BOB}: ${JSON.stringify(b.body)}`);
  bobTokens = b.body;
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  cluster?.stop();
  if (cluster) console.log(`# node logs: ${cluster.dir}/node-{1,2,3}.log`);
});

/** Records every WebSocket of the page: its url, whether it opened, and
 * its close code (playwright's own events do not give the code). */
function recordSockets() {
  const Native = window.WebSocket;
  window.__sockets = [];
  window.WebSocket = class extends Native {
    constructor(url, protocols) {
      super(url, protocols);
      const entry = { url: String(url).replace(/\?.*$/, ""), opened: false, code: null };
      window.__sockets.push(entry);
      this.addEventListener("open", () => (entry.opened = true));
      this.addEventListener("close", (e) => (entry.code = e.code));
    }
  };
}

/** Chromium reports some Content-Security-Policy violations only as
 * events: each becomes a console error, which the tests count. */
function reportCspViolations() {
  document.addEventListener("securitypolicyviolation", (e) =>
    console.error(`CSP violation: ${e.violatedDirective} blocked ${e.blockedURI}`),
  );
}

async function newPage(viewport = { width: 1100, height: 760 }) {
  const context = await browser.newContext({ viewport });
  await context.addInitScript(recordSockets);
  await context.addInitScript(reportCspViolations);
  const page = await context.newPage();
  watchErrors(page);
  return page;
}

function noConsoleErrors(page, who, allowed = /$^/) {
  const errors = page.errors.filter((e) => !allowed.test(e));
  assert.deepEqual(errors, [], `console errors on ${who}'s page`);
}

/** The console at node `i`'s /admin, signed in as `user`. */
async function openConsole(i, user) {
  const page = await newPage({ width: 1360, height: 1000 });
  await page.goto(`${cluster.urls[i]}/admin`);
  await page.fill("[data-testid=username]", user);
  await page.fill("[data-testid=password]", PASSWORD);
  await page.click("[data-testid=login]");
  return page;
}

/** The chat app on node `i` (knowing the others from the list node `i`
 * publishes), signed in as `user`. */
async function openChat(i, user) {
  const page = await newPage();
  await page.goto(cluster.urls[i]);
  page.node = i;
  await chatSignIn(page, user);
  return page;
}

async function chatSignIn(page, user) {
  await page.fill("[data-testid=username]", user);
  await page.fill("[data-testid=password]", PASSWORD);
  await page.click("[data-testid=login]");
  await page.waitForSelector("[data-testid=connection][data-state=open]");
}

const sockets = (page) => page.evaluate(() => window.__sockets);
const wsUrl = (i) => `${cluster.urls[i].replace(/^http/, "ws")}/v1/ws`;

/** The page's open socket (opened, not closed), or undefined. */
async function openSocket(page) {
  return (await sockets(page)).find((s) => s.opened && s.code === null);
}

async function rows(page) {
  return page.$$eval("[data-testid=node-row]", (els) =>
    els.map((e) => ({
      name: e.getAttribute("data-node"),
      up: e.getAttribute("data-up"),
      serving: e.getAttribute("data-serving"),
      store: e.getAttribute("data-store-up"),
      presence: e.getAttribute("data-presence-up"),
    })),
  );
}

async function lookUpUser(page, user) {
  await page.fill("[data-testid=user-query]", user);
  await page.click("[data-testid=user-lookup]");
  return page.waitForSelector(`[data-testid=user-card][data-user="${user}"]`);
}

/** Waits for the audit table to show `action` on `target`. */
async function audited(page, action, target) {
  const row = page.locator(`[data-testid=audit-row][data-action="${action}"][data-target="${target}"]`).first();
  await row.waitFor({ timeout: 30_000 });
  const cells = await row.locator("td").allTextContents();
  assert.equal(cells[1], ADMIN, `the ${action} row names the admin`);
  assert.ok(NAMES.includes(cells[4]), `the ${action} row names a node: ${cells[4]}`);
  return cells;
}

function assertNodeShape(n) {
  const types = {
    name: "string",
    node_id: "number",
    local: "boolean",
    up: "boolean",
    serving: "boolean",
    heard_ms_ago: "number",
    version: "string",
    connections: "number",
    sessions: "number",
    conversations: "number",
    messages_per_sec: "number",
    deliveries_per_sec: "number",
    store_up: "boolean",
    presence_up: "boolean",
  };
  for (const [k, t] of Object.entries(types)) assert.equal(typeof n[k], t, `node ${n.name}: ${k} is a ${t} (${JSON.stringify(n)})`);
  for (const k of ["rtt_ms", "send_p99_ms"]) {
    assert.ok(n[k] === null || typeof n[k] === "number", `node ${n.name}: ${k} is a number or null (${JSON.stringify(n)})`);
  }
}

test("the console at /admin signs an admin in and lists three nodes, all up", async () => {
  // The API itself, as the page reads it.
  const api = await http(0, "GET", "/v1/admin/nodes", { token: adminToken });
  assert.equal(api.status, 200, JSON.stringify(api.body));
  await eventually("the API lists three nodes", async () => {
    const { body } = await http(0, "GET", "/v1/admin/nodes", { token: adminToken });
    return body.nodes.length === 3;
  });
  const { body } = await http(0, "GET", "/v1/admin/nodes", { token: adminToken });
  for (const n of body.nodes) assertNodeShape(n);
  assert.deepEqual(body.nodes.filter((n) => n.local).map((n) => n.name), ["node-1"], "node-1 answered");

  console1 = await openConsole(0, ADMIN);
  await console1.waitForSelector("[data-testid=nodes]");
  await eventually("three nodes, up and serving, store and presence up", async () => {
    const r = await rows(console1);
    return (
      JSON.stringify(r.map((x) => x.name).sort()) === JSON.stringify(NAMES) &&
      r.every((x) => x.up === "true" && x.serving === "true" && x.store === "true" && x.presence === "true")
    );
  });
  await console1.screenshot({ path: join(artifacts, "admin-console-nodes.png"), fullPage: true });
  noConsoleErrors(console1, "the admin");
});

test("a non-admin is turned away; the API answers 401 without a token, 403 for bob", async () => {
  const page = await openConsole(1, BOB);
  await page.waitForSelector("[data-testid=not-admin]");
  assert.equal((await page.textContent("[data-testid=not-admin]")).trim(), "This account is not an admin");
  assert.equal(await page.locator("[data-testid=nodes]").count(), 0);
  await page.screenshot({ path: join(artifacts, "admin-not-admin.png") });
  // And from the page itself, as any script there could try.
  const statuses = await page.evaluate(async (token) => {
    const anon = await fetch("/v1/admin/nodes");
    const asBob = await fetch("/v1/admin/nodes", { headers: { authorization: `Bearer ${token}` } });
    return { anon: anon.status, anonBody: await anon.json(), bob: asBob.status, bobBody: await asBob.json() };
  }, bobTokens.access_token);
  assert.equal(statuses.anon, 401, JSON.stringify(statuses));
  assert.equal(statuses.bob, 403, JSON.stringify(statuses));
  assert.equal(statuses.bobBody.code, "forbidden", JSON.stringify(statuses));
  assert.equal(typeof statuses.anonBody.code, "string", JSON.stringify(statuses));
  for (const path of ["/v1/admin/audit?limit=50", `/v1/admin/users/${BOB}`]) {
    assert.equal((await http(2, "GET", path)).status, 401, `${path} without a token`);
    assert.equal((await http(2, "GET", path, { token: bobTokens.access_token })).status, 403, `${path} as bob`);
  }
  assert.equal((await http(2, "POST", `/v1/admin/users/${BOB}/suspend`, { token: bobTokens.access_token })).status, 403);
  noConsoleErrors(page, "bob (console)", /Failed to load resource/);
  await page.context().close();
});

test("suspend: bob's pages on node 2 and node 3 are signed out, his sign-in is refused", async () => {
  bob2 = await openChat(1, BOB);
  bob3 = await openChat(2, BOB);
  assert.equal((await openSocket(bob2))?.url, wsUrl(1), "bob on node 2");
  assert.equal((await openSocket(bob3))?.url, wsUrl(2), "bob on node 3");

  const card = await lookUpUser(console1, BOB);
  assert.equal(await card.getAttribute("data-suspended"), "false");
  await eventually("bob shows online", async () => {
    if ((await console1.getAttribute("[data-testid=user-card]", "data-online")) === "true") return true;
    await console1.click("[data-testid=user-lookup]");
    return false;
  });
  const user = await http(0, "GET", `/v1/admin/users/${BOB}`, { token: adminToken });
  assert.equal(user.status, 200);
  assert.deepEqual(Object.keys(user.body).sort(), ["admin", "created_at", "display_name", "id", "last_seen", "online", "suspended"]);
  assert.equal(user.body.id, BOB);

  await console1.click("[data-testid=suspend]");
  await console1.waitForSelector("[data-testid=user-card][data-suspended=true]");
  await console1.waitForSelector("[data-testid=unsuspend]");
  // Both pages: closed with 4005, signed out, told why.
  for (const [page, i] of [
    [bob2, 1],
    [bob3, 2],
  ]) {
    await page.waitForSelector("[data-testid=suspended]");
    await page.waitForSelector("[data-testid=login]");
    const closed = (await sockets(page)).filter((s) => s.url === wsUrl(i) && s.code !== null).map((s) => s.code);
    assert.deepEqual(closed, [4005], `bob's socket on node ${i + 1} closed with 4005`);
  }
  assert.match(await bob3.textContent("[data-testid=suspended]"), /Your account is suspended/);
  await bob3.screenshot({ path: join(artifacts, "admin-bob-suspended.png") });
  const socketsThen = [(await sockets(bob2)).length, (await sockets(bob3)).length];

  const login = await http(1, "POST", "/v1/auth/login", { body: { username: BOB, password: PASSWORD } });
  assert.equal(login.status, 403, JSON.stringify(login.body));
  assert.deepEqual(login.body, { code: "forbidden", message: "this account is suspended" });
  const refresh = await http(2, "POST", "/v1/auth/refresh", { body: { refresh_token: bobTokens.refresh_token } });
  assert.equal(refresh.status, 403, `refresh while suspended: ${JSON.stringify(refresh.body)}`);
  assert.equal(refresh.body.code, "forbidden");
  // The chat page's own attempt is refused too, and says why.
  await bob2.fill("[data-testid=username]", BOB);
  await bob2.fill("[data-testid=password]", PASSWORD);
  await bob2.click("[data-testid=login]");
  await bob2.waitForSelector(".signin .error[role=alert]:has-text('this account is suspended')");

  await audited(console1, "suspend", BOB);
  await console1.screenshot({ path: join(artifacts, "admin-console-suspended.png"), fullPage: true });
  // Nobody came back meanwhile.
  assert.deepEqual([(await sockets(bob2)).length, (await sockets(bob3)).length], socketsThen, "no reconnect after 4005");
});

test("unsuspend: bob signs in again", async () => {
  await console1.click("[data-testid=unsuspend]");
  await console1.waitForSelector("[data-testid=user-card][data-suspended=false]");
  await console1.waitForSelector("[data-testid=suspend]");
  const login = await http(1, "POST", "/v1/auth/login", { body: { username: BOB, password: PASSWORD } });
  assert.equal(login.status, 200, JSON.stringify(login.body));
  assert.ok(login.body.access_token);
  await audited(console1, "unsuspend", BOB);
});

test("disconnect: bob's connections on node 2 and node 3 close (4004) and come back", async () => {
  await chatSignIn(bob2, BOB);
  await chatSignIn(bob3, BOB);
  assert.equal(await bob2.locator("[data-testid=suspended]").count(), 0, "the notice is gone once signed in");
  assert.equal((await openSocket(bob2))?.url, wsUrl(1), "bob on node 2");
  assert.equal((await openSocket(bob3))?.url, wsUrl(2), "bob on node 3");
  const before = [(await sockets(bob2)).length, (await sockets(bob3)).length];

  await lookUpUser(console1, BOB);
  await console1.click("[data-testid=disconnect]");
  await console1.waitForSelector("[data-testid=user-status]:has-text('disconnected')");
  for (const [page, i, n] of [
    [bob2, 1, before[0]],
    [bob3, 2, before[1]],
  ]) {
    await eventually(`bob's page on node ${i + 1}: closed with 4004, then open again`, async () => {
      const all = await sockets(page);
      const closed = all.slice(n - 1, n)[0];
      const later = all.slice(n);
      return (
        closed.url === wsUrl(i) &&
        closed.code === 4004 &&
        later.some((s) => s.opened && s.code === null) &&
        (await page.getAttribute("[data-testid=connection]", "data-state")) === "open"
      );
    });
    assert.equal(await page.locator("[data-testid=login]").count(), 0, "still signed in");
  }
  await eventually("bob is online again", async () => {
    const { body } = await http(0, "GET", `/v1/admin/users/${BOB}`, { token: adminToken });
    return body.online === true && body.suspended === false;
  });
  await audited(console1, "disconnect", BOB);
});

test("a conversation bob created: the console says which node owns it", async () => {
  await bob2.selectOption("select[aria-label=Kind]", "group");
  await bob2.fill("[data-testid=new-members]", ADMIN);
  await bob2.fill("input[aria-label=Title]", "ops check");
  await bob2.click("[data-testid=start]");
  await bob2.waitForFunction(() => location.hash.startsWith("#/c/"));
  const id = decodeURIComponent(await bob2.evaluate(() => location.hash.slice(4)));

  await console1.fill("[data-testid=conv-query]", id);
  await console1.click("[data-testid=conv-lookup]");
  await console1.waitForSelector(`[data-testid=conv-card][data-id="${id}"]`);
  const owner = (await console1.textContent("[data-testid=conv-owner]")).trim();
  assert.ok(NAMES.includes(owner), `the owner is a node: ${owner}`);
  const api = await http(0, "GET", `/v1/admin/conversations/${encodeURIComponent(id)}`, { token: adminToken });
  assert.equal(api.status, 200, JSON.stringify(api.body));
  assert.equal(api.body.id, id);
  assert.equal(api.body.owner, owner);
  assert.equal(api.body.members, 2);
  assert.equal(typeof api.body.rev, "number");
  assert.equal(typeof api.body.kind, "string");
  // What each node's store holds of it: the same on every node once their
  // copies agree, and the console shows it.
  assert.match(api.body.digest, /^[0-9a-f]{16}$/);
  let digest;
  await eventually("every node holds the same state of it", async () => {
    const seen = new Set();
    for (let i = 0; i < NAMES.length; i++) {
      const { body } = await http(i, "GET", `/v1/admin/conversations/${encodeURIComponent(id)}`, { token: adminToken });
      seen.add(body.digest);
    }
    [digest] = seen;
    return seen.size === 1;
  });
  await console1.click("[data-testid=conv-lookup]");
  await console1.waitForFunction(
    (d) => document.querySelector("[data-testid=conv-digest]")?.textContent.trim() === d,
    digest,
  );

  // Unknown ids: 404 not_found, and said so on the page.
  const missing = await http(0, "GET", `/v1/admin/conversations/${encodeURIComponent("g:nosuchthing")}`, { token: adminToken });
  assert.equal(missing.status, 404);
  assert.equal(missing.body.code, "not_found");
  await console1.fill("[data-testid=conv-query]", "g:nosuchthing");
  await console1.click("[data-testid=conv-lookup]");
  await console1.waitForSelector("[data-testid=conv-error]");
  const nobody = await http(0, "GET", `/v1/admin/users/${unique("nobody")}`, { token: adminToken });
  assert.equal(nobody.status, 404);
  assert.equal(nobody.body.code, "not_found");
  // Back to the real one for the screenshot.
  await console1.fill("[data-testid=conv-query]", id);
  await console1.click("[data-testid=conv-lookup]");
  await console1.waitForSelector(`[data-testid=conv-card][data-id="${id}"]`);
});

test("a webhook delivery given up is listed in the console and replayed from it", async () => {
  // Bob says something: its message.created delivery fails 8 times.
  const chat = await openChat(1, BOB);
  await chat.fill("[data-testid=new-members]", ADMIN);
  await chat.click("[data-testid=start]");
  await chat.waitForFunction(() => location.hash.startsWith("#/c/"));
  await chat.fill("[data-testid=composer]", "for the webhook");
  await chat.press("[data-testid=composer]", "Enter");
  const page = await openConsole(0, ADMIN);
  const row = page.locator("[data-testid=dead-letter]").first();
  await row.waitFor({ timeout: 30_000 });
  const delivery = await row.getAttribute("data-delivery");
  const cells = await row.locator("td").allTextContents();
  assert.equal(cells[1], "dead-end");
  assert.equal(cells[2], "message.created");
  assert.equal(cells[3], "8");
  await row.locator("[data-testid=replay]").click();
  await eventually("the replayed letter leaves the list", async () =>
    (await page.locator(`[data-testid=dead-letter][data-delivery="${delivery}"]`).count()) === 0,
  );
  const replayed = page.locator(`[data-testid=audit-row][data-action=replay_webhook]`).first();
  await replayed.waitFor({ timeout: 30_000 });
  noConsoleErrors(page, "the admin");
  noConsoleErrors(chat, BOB);
});

test("drain node-3 from node 1's console: its clients move, it exits, the table shows two nodes", async () => {
  // Someone on node 3 who should be moved off it.
  const carol = unique("carol");
  const page = await newPage();
  await page.goto(cluster.urls[2]);
  await page.fill("[data-testid=username]", carol);
  await page.fill("[data-testid=password]", PASSWORD);
  await page.click("[data-testid=register]");
  await page.waitForSelector("[data-testid=connection][data-state=open]");
  assert.equal((await openSocket(page))?.url, wsUrl(2), "carol on node 3");

  const child = cluster.nodes[2];
  let exit = null;
  child.once("exit", (code, signal) => (exit = { code, signal }));

  const row = console1.locator("[data-testid=node-row][data-node=node-3]");
  await row.locator("[data-testid=drain]").click();
  // An in-page confirmation first: nothing is sent yet.
  await row.locator("[data-testid=drain-confirm]").waitFor();
  assert.equal(exit, null);
  const answer = console1.waitForResponse((r) => r.url().endsWith("/v1/admin/nodes/node-3/drain"));
  await row.locator("[data-testid=drain-confirm]").click();
  const res = await answer;
  assert.equal(res.status(), 202);
  assert.deepEqual(await res.json(), { node: "node-3", draining: true });

  await eventually("node-3's process exits", () => exit !== null, 90_000);
  assert.equal(exit.signal, null, `node-3 exited by itself: ${JSON.stringify(exit)}`);
  assert.equal(exit.code, 0, `node-3 exited cleanly: ${JSON.stringify(exit)}`);
  cluster.nodes[2] = null;

  await eventually(
    "the table shows node-1 and node-2",
    async () => JSON.stringify((await rows(console1)).map((r) => r.name).sort()) === JSON.stringify(["node-1", "node-2"]),
    60_000,
  );
  // Carol's connection was closed with 1001; she is back, on another node.
  await eventually("carol reconnects elsewhere", async () => {
    const all = await sockets(page);
    const open = all.find((s) => s.opened && s.code === null);
    return (
      all.some((s) => s.url === wsUrl(2) && s.code === 1001) &&
      open &&
      open.url !== wsUrl(2) &&
      (await page.getAttribute("[data-testid=connection]", "data-state")) === "open"
    );
  });
  await audited(console1, "drain", "node-3");
  // The overview: two nodes, the user card (bob online), the owner, the audit log.
  await console1.click("[data-testid=user-lookup]");
  await console1.waitForSelector("[data-testid=user-card][data-online=true]");
  await console1.waitForSelector("[data-testid=audit-row][data-action=disconnect]");
  await console1.screenshot({ path: join(artifacts, "admin-console.png"), fullPage: true });
  // The one error: the lookup of a conversation that does not exist (404).
  noConsoleErrors(console1, "the admin", /status of 404/);
  noConsoleErrors(page, "carol", /WebSocket|ERR_CONNECTION_REFUSED|Failed to load resource/);
  for (const [p, who] of [
    [bob2, "bob on node 2"],
    [bob3, "bob on node 3"],
  ]) {
    noConsoleErrors(p, who, /WebSocket|ERR_CONNECTION_REFUSED|Failed to load resource/);
  }
});
