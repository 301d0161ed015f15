// A page told `catch_up` fetches what it missed, in a real browser against a
// real three-node cluster: the owner of a conversation dies after
// acknowledging a message and before handing it to the other nodes (the
// nodes hand batches over 3 s late, `[faults] peer_fanout_delay_ms`, so
// that every run goes through that window). Nobody will deliver that
// message live; the page's node tells it to catch up, and the page, never
// reconnecting, asks `changes` and shows it. node/tests/live_delivery.rs
// proves the same of the node with Rust clients.

import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { eventually, launchBrowser, recordFrames, root, startCluster, weight, PASSWORD, unique, watchErrors } from "./cluster.mjs";

const artifacts = join(root, "web", "test-artifacts");
/** Bob's page is on node 1, Alice sends on node 2, node 3 owns the group. */
const [PAGE_NODE, SENDER_NODE, OWNER] = [0, 1, 2];
let cluster;
let browser;

before(async () => {
  mkdirSync(artifacts, { recursive: true });
  cluster = await startCluster(3, { CHAT__FAULTS__PEER_FANOUT_DELAY_MS: "3000" });
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  cluster?.stop();
  if (cluster) console.log(`# node logs: ${cluster.dir}/node-{1,2,3}.log`);
});

async function newPage() {
  const context = await browser.newContext({ viewport: { width: 1100, height: 760 } });
  const page = await context.newPage();
  watchErrors(page);
  recordFrames(page);
  return page;
}

async function http(i, method, path, { token, body } = {}) {
  const headers = {};
  if (token) headers.authorization = `Bearer ${token}`;
  if (body !== undefined) headers["content-type"] = "application/json";
  const res = await fetch(cluster.urls[i] + path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return { status: res.status, body: await res.json().catch(() => null) };
}

/** A group of the page's user with `members`, made in the page; its id. */
async function createGroup(page, members, title) {
  const before = await page.evaluate(() => location.hash);
  await page.selectOption("select[aria-label=Kind]", "group");
  await page.fill("[data-testid=new-members]", members.join(", "));
  await page.fill("input[aria-label=Title]", title);
  await page.click("[data-testid=start]");
  await page.waitForFunction((was) => location.hash.startsWith("#/c/g") && location.hash !== was, before);
  return decodeURIComponent(await page.evaluate(() => location.hash.slice(4)));
}

test("the placement here is the nodes' own", () => {
  // The value actors/src/placement.rs pins: SHA-256("node-1\0g:1"), first 8 bytes.
  assert.equal(weight("node-1", "g:1"), 0x41ba2b32c73502ccn);
});

test("a page told to catch up after an owner died shows the message it missed, without reconnecting", async () => {
  const bobName = unique("bob");
  const bobReg = await http(PAGE_NODE, "POST", "/v1/auth/register", { body: { username: bobName, password: PASSWORD } });
  assert.equal(bobReg.status, 201, JSON.stringify(bobReg.body));

  // Alice, on node 2, makes groups with Bob until one is owned by node 3.
  const alice = await newPage();
  await alice.goto(cluster.urls[SENDER_NODE]);
  alice.user = unique("alice");
  await alice.fill("[data-testid=username]", alice.user);
  await alice.fill("[data-testid=password]", PASSWORD);
  await alice.click("[data-testid=register]");
  await alice.waitForSelector("[data-testid=connection][data-state=open]");
  let group;
  for (let n = 0; n < 60 && !group; n++) {
    const id = await createGroup(alice, [bobName], `try ${n}`);
    if (cluster.owner(id, [0, 1, 2]) === OWNER) group = id;
  }
  assert.ok(group, "a group owned by node 3");
  const aliceToken = await alice.evaluate(() => JSON.parse(localStorage.getItem("chat.session")).access);

  // Bob's page on node 1, the group open.
  const bob = await newPage();
  await bob.goto(`${cluster.urls[PAGE_NODE]}/#/c/${encodeURIComponent(group)}`);
  await bob.fill("[data-testid=username]", bobName);
  await bob.fill("[data-testid=password]", PASSWORD);
  await bob.click("[data-testid=login]");
  await bob.waitForSelector("[data-testid=connection][data-state=open]");
  await bob.waitForSelector("[data-testid=composer]");
  // The page catches up once on its own a while after connecting (in case
  // an owner was slow to hear of it): let that pass first, so that the
  // only reason left for it to ask `changes` later is the `catch_up`.
  const asked = (e) => e.dir === "out" && e.frame.type === "changes" && e.frame.conversation === group;
  await eventually("the page's own catch-up after connecting", () => bob.wsLog.some(asked), 20_000);
  const post = (client_msg_id, body) =>
    http(SENDER_NODE, "POST", `/v1/conversations/${encodeURIComponent(group)}/messages`, {
      token: aliceToken,
      body: { client_msg_id, body },
    });
  // One message the page sees live (3 s late): the last revision it saw.
  const first = await post("first", "seen live");
  assert.equal(first.status, 201, JSON.stringify(first.body));
  await bob.waitForSelector(`[data-testid=message][data-id="${first.body.message.id}"]`, { timeout: 20_000 });
  const from = bob.wsLog.length;
  const sockets = bob.sockets;

  // Acknowledged to Alice (201: stored), then its owner dies before it
  // hands the message to node 1.
  const sent = await post("last-words", "sent as the owner died");
  assert.equal(sent.status, 201, JSON.stringify(sent.body));
  cluster.kill(OWNER);
  const id = sent.body.message.id;

  await bob
    .waitForSelector(`[data-testid=message][data-id="${id}"]:has-text('sent as the owner died')`, { timeout: 20_000 })
    .catch(async (e) => {
      await bob.screenshot({ path: join(artifacts, "catch-up-failed.png") });
      const log = bob.wsLog.slice(from).map((x) => `${x.dir} ${JSON.stringify(x.frame)}`);
      throw new Error(`${e.message}\nframes since the send:\n${log.join("\n")}\n${cluster.log(PAGE_NODE)}`);
    });

  const since = bob.wsLog.slice(from);
  const told = since.findIndex((e) => e.dir === "in" && e.frame.type === "catch_up" && e.frame.conversations.includes(group));
  assert.ok(told >= 0, "the page was told to catch up on the group");
  const changes = since.slice(told + 1).find(asked);
  assert.ok(changes, "and then asked `changes` for it");
  assert.equal(changes.frame.after_rev, first.body.message.rev, "from the last revision it saw");
  assert.ok(
    !since.some((e) => e.dir === "in" && e.frame.type === "message" && e.frame.message.id === id),
    "the message came by the catch-up, not live (the owner died before handing it over)",
  );
  assert.equal(bob.sockets, sockets, "the page never reconnected");
  assert.equal(await bob.getAttribute("[data-testid=connection]", "data-state"), "open");
  await bob.screenshot({ path: join(artifacts, "caught-up.png") });
  assert.deepEqual(bob.errors, []);
});
