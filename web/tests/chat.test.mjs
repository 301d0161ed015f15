// The web app in a real browser (Debian's chromium, driven by playwright-core)
// against a real two-node cluster: two users on two nodes, a reload, 500
// messages scrolled back, and a node killed under one of them. Screenshots
// go to web/test-artifacts/.

import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { chromium } from "playwright-core";
import { eventually, recordFrames, root, startCluster, PASSWORD, unique, register, watchErrors } from "./cluster.mjs";

const artifacts = join(root, "web", "test-artifacts");
let cluster;
let browser;

before(async () => {
  mkdirSync(artifacts, { recursive: true });
  cluster = await startCluster(2);
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    // Root in a container: no sandbox; no GPU, no network beyond loopback.
    args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run"],
  });
});

after(async () => {
  await browser?.close();
  cluster?.stop();
});

/** Chromium reports some Content-Security-Policy violations only as
 * events: each becomes a console error, which the tests count. */
function reportCspViolations() {
  document.addEventListener("securitypolicyviolation", (e) =>
    console.error(`CSP violation: ${e.violatedDirective} blocked ${e.blockedURI}`),
  );
}

/** A new browser context on node `i`'s page (which learns the other node
 * from the list node `i` publishes), with the console watched for errors
 * and policy violations. */
async function open(i, viewport = { width: 1100, height: 760 }) {
  const context = await browser.newContext({ viewport });
  await context.addInitScript(reportCspViolations);
  const page = await context.newPage();
  watchErrors(page);
  recordFrames(page);
  await page.goto(cluster.urls[i]);
  return page;
}

async function signUp(i, prefix) {
  const page = await open(i);
  await register(page, prefix);
  return page;
}

async function startDirect(page, other) {
  await page.fill("[data-testid=new-members]", other);
  await page.click("[data-testid=start]");
  await page.waitForFunction(() => location.hash.startsWith("#/c/"));
  return decodeURIComponent(await page.evaluate(() => location.hash.slice(4)));
}

async function say(page, text) {
  await page.fill("[data-testid=composer]", text);
  await page.press("[data-testid=composer]", "Enter");
}

/** The shown messages' ids, in order (acknowledged ones only). */
function shownIds(page) {
  return page.$$eval("[data-testid=message][data-id]", (els) => els.map((e) => e.getAttribute("data-id")));
}

function noConsoleErrors(page, allowed = /$^/) {
  const errors = page.errors.filter((e) => !allowed.test(e));
  assert.deepEqual(errors, [], `console errors on ${page.user}'s page`);
}

let alice;
let bob;
let conv;

test("two users on two nodes chat both ways, with typing, receipts and presence", async () => {
  alice = await signUp(0, "alice");
  bob = await signUp(1, "bob");
  conv = await startDirect(alice, bob.user);

  // Bob's list shows the new conversation with one unread message.
  await say(alice, "hello bob");
  const item = bob.locator(`[data-testid=conversation][data-id="${conv}"]`);
  await item.waitFor();
  await eventually("bob's unread count", async () => (await item.locator("[data-testid=unread]").textContent()) === "1");
  // Alice's own message is confirmed by its ack.
  await alice.waitForSelector("[data-testid=message][data-id]:has-text('hello bob')");
  assert.equal(await alice.locator("[data-testid=message][data-pending]").count(), 0);

  await item.click();
  await bob.waitForSelector("[data-testid=message]:has-text('hello bob')");
  await eventually("read clears the badge", async () => (await item.locator("[data-testid=unread]").textContent()) === "");
  // Bob has read it: Alice sees "seen".
  await alice.waitForSelector("[data-testid=seen]:has-text('" + bob.user + "')");

  // Bob types: Alice sees it; he sends: she gets the message.
  await bob.type("[data-testid=composer]", "hi al");
  await alice.waitForSelector("[data-testid=typing]:visible");
  assert.match(await alice.textContent("[data-testid=typing]"), new RegExp(bob.user));
  await bob.type("[data-testid=composer]", "ice, Shift+Enter makes");
  await bob.press("[data-testid=composer]", "Shift+Enter");
  await bob.type("[data-testid=composer]", "a new line");
  await bob.press("[data-testid=composer]", "Enter");
  await alice.waitForSelector("[data-testid=message]:has-text('a new line')");
  const body = await alice.textContent("[data-testid=message]:has-text('a new line') .body");
  assert.equal(body, "hi alice, Shift+Enter makes\na new line");

  // Presence: each sees the other online.
  await alice.waitForSelector(`[data-testid=presence][data-user="${bob.user}"][data-status=online]`);
  await bob.waitForSelector(`[data-testid=presence][data-user="${alice.user}"][data-status=online]`);

  // Reactions and edits reach the other side.
  await bob.hover("[data-testid=message]:has-text('hello bob')");
  await bob.click("[data-testid=message]:has-text('hello bob') button[aria-label='React 👍']");
  await alice.waitForSelector("[data-testid=message]:has-text('hello bob') .chip:has-text('👍 1')");

  // Edit, reply (quoting), mention, delete: the other side sees each.
  await alice.hover("[data-testid=message]:has-text('hello bob')");
  await alice.click("[data-testid=message]:has-text('hello bob') button:has-text('Edit')");
  // As a person does: edit once the composer holds the message to edit.
  await alice.waitForSelector(".composer .context:has-text('Editing your message')");
  await eventually("the composer holds the old body", async () =>
    (await alice.inputValue("[data-testid=composer]")) === "hello bob");
  await alice.fill("[data-testid=composer]", "hello bob, edited");
  await alice.press("[data-testid=composer]", "Enter");
  await bob.waitForSelector("[data-testid=message]:has-text('hello bob, edited') .edited");
  await bob.hover("[data-testid=message]:has-text('hello bob, edited')");
  await bob.click("[data-testid=message]:has-text('hello bob, edited') button:has-text('Reply')");
  await say(bob, `replying to you @${alice.user}`);
  const reply = alice.locator("[data-testid=message]:has-text('replying to you')");
  await reply.locator(".quote:has-text('hello bob, edited')").waitFor();
  await reply.locator("mark.mention").waitFor();
  await say(alice, "to be deleted");
  await bob.waitForSelector("[data-testid=message]:has-text('to be deleted')");
  await alice.hover("[data-testid=message]:has-text('to be deleted')");
  await alice.click("[data-testid=message]:has-text('to be deleted') button:has-text('Delete')");
  await bob.waitForSelector("[data-testid=message] .deleted");
  assert.equal(await bob.locator("[data-testid=message]:has-text('to be deleted')").count(), 0);

  // Both histories agree, in order, once each.
  await eventually("both show the same messages", async () => {
    const [a, b] = [await shownIds(alice), await shownIds(bob)];
    return a.length === 4 && JSON.stringify(a) === JSON.stringify(b);
  });
  await alice.screenshot({ path: join(artifacts, "two-users-alice.png") });
  await bob.screenshot({ path: join(artifacts, "two-users-bob.png") });
  noConsoleErrors(alice);
  noConsoleErrors(bob);
});

test("a reaction reaches the other page as a reaction frame: added, a second emoji after it, taken back", async () => {
  // Bob's message, reacted to by Alice, watched on Bob's page.
  const target = "[data-testid=message]:has-text('a new line')";
  const id = await bob.getAttribute(target, "data-id");
  assert.ok(id, "the message is acknowledged");
  const chips = () => bob.$$eval(`${target} .chip`, (els) => els.map((e) => e.textContent));
  const from = bob.wsLog.length;
  const react = async (label) => {
    await alice.hover(target);
    await alice.click(`${target} button[aria-label='${label}']`);
  };
  await react("React 🎉");
  await eventually("bob sees 🎉", async () => JSON.stringify(await chips()) === JSON.stringify(["🎉 1"]), 20_000);
  // A new emoji goes after the ones already there.
  await react("React ❤️");
  await eventually("bob sees 🎉 then ❤️", async () => JSON.stringify(await chips()) === JSON.stringify(["🎉 1", "❤️ 1"]), 20_000);
  // Alice takes hers back: the chip goes, the other stays.
  await alice.hover(target);
  await alice.click(`${target} .chip:has-text('🎉')`);
  await eventually("bob sees only ❤️", async () => JSON.stringify(await chips()) === JSON.stringify(["❤️ 1"]), 20_000);

  const received = bob.wsLog.slice(from).filter((e) => e.dir === "in").map((e) => e.frame);
  const reactions = received.filter((f) => f.type === "reaction" && f.message === id);
  assert.deepEqual(
    reactions.map((f) => [f.conversation, f.user, f.on, f.reaction.emoji, f.reaction.count]),
    [
      [conv, alice.user, true, "🎉", 1],
      [conv, alice.user, true, "❤️", 1],
      [conv, alice.user, false, "🎉", 0],
    ],
  );
  assert.ok(reactions.every((f, k) => k === 0 || f.rev === reactions[k - 1].rev + 1), "one revision each");
  assert.deepEqual(
    received.filter((f) => f.type === "message_updated"),
    [],
    "the whole message is not sent for a reaction",
  );
  // Alice's own page shows what her `ok` replies carried (her reply and
  // Bob's event travel apart: either may come first).
  const mine = () => alice.$$eval(`${target} .chip`, (els) => els.map((e) => e.textContent));
  await eventually("alice sees only ❤️", async () => JSON.stringify(await mine()) === JSON.stringify(["❤️ 1"]), 20_000);
  noConsoleErrors(alice);
  noConsoleErrors(bob);
});

test("a group: created with a title, a member invited and removed, one leaves", async () => {
  const carol = unique("carol");
  const res = await fetch(`${cluster.urls[0]}/v1/auth/register`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ username: carol, password: PASSWORD }),
  });
  assert.equal(res.status, 201);
  await alice.selectOption("select[aria-label=Kind]", "group");
  await alice.fill("[data-testid=new-members]", bob.user);
  await alice.fill("input[aria-label=Title]", "weekend plans");
  await alice.click("[data-testid=start]");
  await alice.waitForFunction(() => location.hash.startsWith("#/c/g"));
  const group = decodeURIComponent(await alice.evaluate(() => location.hash.slice(4)));
  await bob.locator(`[data-testid=conversation][data-id="${group}"]:has-text('weekend plans')`).waitFor();
  // Invite Carol, then remove her.
  await alice.fill("input[aria-label='Invite users']", carol);
  await alice.press("input[aria-label='Invite users']", "Enter");
  await alice.waitForSelector(`[data-testid=presence][data-user="${carol}"]`);
  await alice.click(`.members li:has([data-user="${carol}"]) button:has-text('remove')`);
  await alice.waitForSelector(`[data-testid=presence][data-user="${carol}"]`, { state: "detached" });
  // Bob leaves: it is gone from his list, and he from Alice's members.
  await bob.click(`[data-testid=conversation][data-id="${group}"]`);
  await bob.click("button:has-text('Leave')");
  await bob.locator(`[data-testid=conversation][data-id="${group}"]`).waitFor({ state: "detached" });
  await alice.waitForSelector(`[data-testid=presence][data-user="${bob.user}"]`, { state: "detached" });
  await alice.screenshot({ path: join(artifacts, "group.png") });
  // Back to the direct conversation for the tests that follow.
  await alice.goto(`${cluster.urls[0]}/#/c/${encodeURIComponent(conv)}`);
  await bob.goto(`${cluster.urls[1]}/#/c/${encodeURIComponent(conv)}`);
  await alice.waitForSelector("[data-testid=message][data-id]");
  await bob.waitForSelector("[data-testid=message][data-id]");
  noConsoleErrors(alice);
  noConsoleErrors(bob);
});

test("a reload keeps the session and the history", async () => {
  const before = await shownIds(alice);
  await alice.reload();
  await alice.waitForSelector("[data-testid=connection][data-state=open]");
  assert.equal(await alice.locator("[data-testid=login]").count(), 0, "still signed in");
  await alice.waitForSelector("[data-testid=message][data-id]");
  await eventually("the history is back", async () => JSON.stringify(await shownIds(alice)) === JSON.stringify(before));
  noConsoleErrors(alice);
});

test("500 messages scroll back in order", async () => {
  const page = await signUp(0, "reader");
  const id = await startDirect(page, alice.user);
  const token = await page.evaluate(() => JSON.parse(localStorage.getItem("chat.session")).access);
  const post = (n) =>
    fetch(`${cluster.urls[0]}/v1/conversations/${encodeURIComponent(id)}/messages`, {
      method: "POST",
      headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
      body: JSON.stringify({ client_msg_id: `seed-${n}`, body: `seed message ${n}` }),
    }).then((r) => assert.equal(r.status, 201));
  for (let n = 0; n < 500; n += 25) {
    await Promise.all(Array.from({ length: 25 }, (_, k) => post(n + k)));
  }
  // What the server holds, oldest first.
  const stored = [];
  let after;
  for (;;) {
    const q = after ? `?after=${after}&limit=200` : "?after=0&limit=200";
    const res = await fetch(`${cluster.urls[0]}/v1/conversations/${encodeURIComponent(id)}/messages${q}`, {
      headers: { authorization: `Bearer ${token}` },
    });
    const v = await res.json();
    stored.push(...v.messages.map((m) => m.id));
    if (!v.more) break;
    after = v.messages[v.messages.length - 1].id;
  }
  assert.equal(stored.length, 500);

  await page.reload();
  await page.waitForSelector("[data-testid=message][data-id]");
  await eventually("scrolled back to the first message", async () => {
    await page.$eval(".messages", (el) => {
      el.scrollTop = 0;
      el.dispatchEvent(new Event("scroll"));
    });
    return (await shownIds(page)).length === 500 && (await page.locator(".more").count()) === 0;
  });
  assert.deepEqual(await shownIds(page), stored, "every message once, in id order");
  await page.screenshot({ path: join(artifacts, "scrolled-back.png") });
  // And on a phone-sized window.
  await page.setViewportSize({ width: 390, height: 760 });
  await page.screenshot({ path: join(artifacts, "phone.png") });
  noConsoleErrors(page);
  await page.context().close();
});

test("the session outlives its access token", async () => {
  // A node of its own whose access tokens last 4 s.
  const short = await startCluster(1, { CHAT__AUTH__ACCESS_TTL_SECS: "4" });
  try {
    const context = await browser.newContext();
    const page = await context.newPage();
    page.errors = [];
    page.on("pageerror", (e) => page.errors.push(String(e)));
    await page.goto(short.urls[0]);
    page.user = unique("shortlived");
    await page.fill("[data-testid=username]", page.user);
    await page.fill("[data-testid=password]", PASSWORD);
    await page.click("[data-testid=register]");
    await page.waitForSelector("[data-testid=connection][data-state=open]");
    const first = await page.evaluate(() => JSON.parse(localStorage.getItem("chat.session")).access);
    const peer = unique("peer");
    const res = await fetch(`${short.urls[0]}/v1/auth/register`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ username: peer, password: PASSWORD }),
    });
    assert.equal(res.status, 201);
    const id = await startDirect(page, peer);
    // Past the first token's life: refreshed, still signed in, still sending.
    await eventually(
      "the access token is refreshed",
      async () => (await page.evaluate(() => JSON.parse(localStorage.getItem("chat.session")).access)) !== first,
      20_000,
    );
    await page.waitForFunction((t) => JSON.parse(atob(t.split(".")[1])).exp * 1000 < Date.now(), first);
    await page.waitForSelector("[data-testid=connection][data-state=open]");
    await say(page, "still here");
    await page.waitForSelector("[data-testid=message][data-id]:has-text('still here')");
    assert.equal(await page.locator("[data-testid=login]").count(), 0, "still signed in");
    assert.ok(id);
    assert.deepEqual(page.errors, []);
    await context.close();
  } finally {
    short.stop();
  }
});

test("killing the node a user is on: reconnecting, then nothing missing or twice", async () => {
  // Bob is on node 2: it dies. His page also loses the network for a
  // moment, or it could be back on another node (and the message stored)
  // before the pending state can be seen.
  await bob.context().setOffline(true);
  cluster.kill(1);
  await bob.waitForSelector("[data-testid=connection][data-state=reconnecting]");
  await bob.screenshot({ path: join(artifacts, "reconnecting.png") });
  // Bob writes while cut off: shown at once, pending.
  await say(bob, "written while offline");
  await bob.waitForSelector("[data-testid=message][data-pending]:has-text('written while offline')");
  await bob.context().setOffline(false);
  // Alice (on node 1) goes on writing; some of it may need the
  // conversation's owner to move to node 1 first.
  for (const n of [1, 2, 3]) await say(alice, `while bob is away ${n}`);
  await eventually(
    "alice's messages are acknowledged",
    async () => (await alice.locator("[data-testid=message][data-pending]").count()) === 0,
    90_000,
  );
  // Bob's page moves to node 1, catches up and sends what was pending.
  await bob.waitForSelector("[data-testid=connection][data-state=open]", { timeout: 90_000 });
  await bob.waitForSelector("[data-testid=message]:has-text('while bob is away 3')");
  await alice.waitForSelector("[data-testid=message][data-id]:has-text('written while offline')", { timeout: 90_000 });
  let seen = "";
  await eventually("both show one history", async () => {
    const [a, b] = [await shownIds(alice), await shownIds(bob)];
    const pending = await bob.locator("[data-testid=message][data-pending]").count();
    seen = `alice ${JSON.stringify(a)} bob ${JSON.stringify(b)} bob pending ${pending}`;
    return JSON.stringify(a) === JSON.stringify(b) && pending === 0;
  }).catch(async (e) => {
    await bob.screenshot({ path: join(artifacts, "failover-bob-failed.png") });
    await alice.screenshot({ path: join(artifacts, "failover-alice-failed.png") });
    throw new Error(`${e.message}; ${seen}`);
  });
  const ids = await shownIds(bob);
  assert.equal(new Set(ids).size, ids.length, "no message twice");
  const badge = bob.locator(`[data-testid=conversation][data-id="${conv}"] [data-testid=unread]`);
  await eventually("what came in while away is read", async () => (await badge.textContent()) === "");
  const texts = await bob.$$eval("[data-testid=message] .body", (els) => els.map((e) => e.textContent));
  for (const t of ["written while offline", "while bob is away 1", "while bob is away 2", "while bob is away 3"]) {
    assert.equal(texts.filter((x) => x === t).length, 1, `"${t}" shown once`);
  }
  await bob.screenshot({ path: join(artifacts, "after-failover.png") });
  // The dead node's connection failures are the only console errors.
  noConsoleErrors(bob, /WebSocket|ERR_CONNECTION_REFUSED|ERR_INTERNET_DISCONNECTED|Failed to load resource/);
});
