// The SDK against real nodes: both encodings end to end, errors as typed
// RequestErrors, a request with no answer timing out (against a real
// socket server that never answers), token refresh, and across a node's
// death: the reconnect to the other node, the outbox sending what was
// written meanwhile exactly once, the catch-up bringing what was missed,
// and presence watches kept.

import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { once } from "node:events";
import { WebSocketServer } from "ws";
import WebSocket from "ws";
import { ChatClient, RequestError, cmpMessageId } from "../dist/index.js";
import { client, eventually, opened, register, startCluster } from "./helpers.mjs";

let cluster;

before(async () => {
  cluster = await startCluster(2);
});

after(() => cluster?.stop());

for (const codec of ["json", "msgpack"]) {
  test(`${codec}: a group, a message both ways, history, typed errors`, async () => {
    const [one, two] = cluster.urls;
    const ann = await register(one, "ann");
    const bob = await register(two, "bob");
    const a = client(ann, [one], { codec });
    const b = client(bob, [two], { codec });
    a.connect();
    b.connect();
    await Promise.all([opened(a), opened(b)]);
    const created = await a.request({ type: "create", kind: "group", members: [bob.id], title: "sdk" });
    const conv = created.conversation.id;
    assert.equal(created.conversation.kind, "group");
    await eventually("bob hears of the group", async () => b.seen.conversation.some((e) => e.conversation.id === conv));

    const sent = await a.send(conv, "hello from ann");
    assert.equal(typeof sent.id, "string", "message ids are strings in both encodings");
    assert.match(sent.id, /^\d+$/);
    assert.equal(typeof sent.ts, "number");
    await eventually("bob gets it live", async () => b.seen.message.some((e) => e.message.id === sent.id));
    const got = b.seen.message.find((e) => e.message.id === sent.id).message;
    assert.equal(got.body, "hello from ann");
    assert.equal(got.sender, ann.id);
    const reply = await b.send(conv, "hello back", { replyTo: sent.id });
    assert.equal(reply.reply_to, sent.id);
    assert.ok(cmpMessageId(reply.id, sent.id) > 0, "ids increase");
    await eventually("ann gets the reply", async () => a.seen.message.some((e) => e.message.id === reply.id));

    const page = await a.request({ type: "history", conversation: conv, limit: 10 });
    assert.deepEqual(
      page.messages.map((m) => m.body),
      ["hello from ann", "hello back"],
    );

    // The node's errors, typed; a send the node refuses is not retried.
    await assert.rejects(a.request({ type: "history", conversation: conv, limit: 5000 }), (e) => e instanceof RequestError && e.code === "bad_request" && !e.retriable);
    await assert.rejects(a.send("no-such-conversation", "x"), (e) => e instanceof RequestError && (e.code === "forbidden" || e.code === "not_found"));
    assert.equal(a.outbox.pending().length, 0);
    a.close();
    b.close();
    assert.equal(a.state, "closed");
  });
}

test("a request with no answer times out; the client stays usable", async () => {
  const server = new WebSocketServer({ host: "127.0.0.1", port: 0, handleProtocols: (p) => [...p][0] });
  await once(server, "listening");
  const node = `http://127.0.0.1:${server.address().port}`;
  const c = new ChatClient({ nodes: [node], token: async () => "t", WebSocket, requestTimeoutMs: 300 });
  c.connect();
  await opened(c);
  const started = Date.now();
  await assert.rejects(c.request({ type: "ping" }), (e) => e instanceof RequestError && e.code === "timeout" && e.retriable);
  assert.ok(Date.now() - started >= 290, "not before its time");
  // A second request goes out on the same connection.
  const [socket] = server.clients;
  const seen = new Promise((resolve) => socket.once("message", (d) => resolve(JSON.parse(d.toString()))));
  const pending = c.request({ type: "ping" }).catch(() => {});
  assert.equal((await seen).type, "ping");
  c.close();
  await pending;
  server.close();
});

test("a revision gap and a catch_up frame each ask changes from the last revision seen, one at a time", async () => {
  // A stand-in node on a real socket: it sends events and records requests.
  const server = new WebSocketServer({ host: "127.0.0.1", port: 0, handleProtocols: (p) => [...p][0] });
  await once(server, "listening");
  const asked = [];
  let socket;
  server.on("connection", (s) => {
    socket = s;
    s.on("message", (d) => {
      const f = JSON.parse(d.toString());
      asked.push(f);
      if (f.type === "changes") {
        const rev = 9;
        const messages = f.after_rev < 7 ? [{ id: "1000", conversation: "c1", sender: "u", body: "x", kind: "text", ts: 1, client_msg_id: "k", rev: 7, deleted: false, reactions: [], mentions: [] }] : [];
        s.send(JSON.stringify({ type: "ok", req: f.req, messages, more: false, rev }));
      }
    });
  });
  const node = `http://127.0.0.1:${server.address().port}`;
  // No second pass after the connect: only the gap and catch_up ask.
  const c = new ChatClient({ nodes: [node], token: async () => "t", WebSocket, lateCatchUpMs: 0 });
  const changes = [];
  c.on("changes", (e) => changes.push(e));
  c.connect();
  await opened(c);
  const msg = (rev) => JSON.stringify({ type: "message", message: { id: String(1000 + rev), conversation: "c1", sender: "u", body: "b", kind: "text", ts: 1, client_msg_id: `k${rev}`, rev, deleted: false, reactions: [], mentions: [] } });
  socket.send(msg(1));
  socket.send(msg(2));
  socket.send(msg(5)); // 3 and 4 never came
  await eventually("the gap is caught up", async () => changes.length === 1);
  assert.deepEqual(
    asked.filter((f) => f.type === "changes").map((f) => [f.conversation, f.after_rev]),
    [["c1", 2]],
  );
  assert.equal(changes[0].rev, 9);
  assert.equal(changes[0].reason, "gap");
  assert.equal(c.sync.rev("c1"), 9, "followed from the reply's rev");
  // The node cannot vouch for c1 (and names c2, which the client does not follow).
  socket.send(JSON.stringify({ type: "catch_up", conversations: ["c1", "c2"] }));
  await eventually("catch_up is answered", async () => changes.length === 2);
  assert.equal(changes[1].reason, "catch_up");
  assert.deepEqual(
    asked.filter((f) => f.type === "changes").map((f) => [f.conversation, f.after_rev]),
    [["c1", 2], ["c1", 9]],
  );
  c.close();
  server.close();
});

test("an access token about to expire is refreshed before connecting", async () => {
  const [one] = cluster.urls;
  const ann = await register(one, "fresh");
  const refreshed = [];
  // A margin longer than the token's life: it counts as expiring now.
  const c = client(ann, [one], { tokens: { marginMs: 10 * 365 * 86_400_000, onRefresh: (s) => refreshed.push(s) } });
  c.connect();
  await opened(c);
  assert.equal(refreshed.length, 1, "refreshed once");
  assert.notEqual(refreshed[0].refresh_token, ann.session.refresh_token, "the refresh token rotated");
  await c.request({ type: "ping" });
  c.close();
});

test("a node dies: the client moves to the other, sends what was written meanwhile once, and catches up", async () => {
  const [one, two] = cluster.urls;
  const ann = await register(one, "ann");
  const bob = await register(two, "bob");
  // Ann's first node is node 1; Bob stays on node 2.
  const a = client(ann, [one, two]);
  const b = client(bob, [two]);
  a.connect();
  b.connect();
  await Promise.all([opened(a), opened(b)]);
  const conv = (await a.request({ type: "create", kind: "group", members: [bob.id] })).conversation.id;
  const first = await a.send(conv, "before");
  a.sync.track(conv, first.rev);
  assert.deepEqual(
    (await a.watch([bob.id])).map((p) => p.status),
    ["online"],
  );

  const down = once(cluster.nodes[0], "exit");
  cluster.kill(0);
  await down;
  await eventually("ann notices", async () => a.state === "reconnecting" || a.seen.state.includes("reconnecting"));
  // Written while away: waits in the outbox.
  const meanwhile = a.send(conv, "written while away");
  assert.equal(a.outbox.pending().length, 1);
  // Bob writes while Ann is away (the conversation may be moving owner).
  const missed = [];
  for (const n of [1, 2, 3]) {
    for (;;) {
      try {
        missed.push((await b.send(conv, `missed ${n}`)).id);
        break;
      } catch (e) {
        if (!(e instanceof RequestError) || !e.retriable) throw e;
      }
    }
  }

  await opened(a);
  const stored = await meanwhile;
  assert.equal(stored.body, "written while away");
  assert.equal(a.outbox.pending().length, 0);
  // Everything Bob wrote reached Ann: live, or in a catch-up.
  const seen = () => new Set([...a.seen.message.map((e) => e.message.id), ...a.seen.changes.flatMap((c) => c.messages.map((m) => m.id))]);
  await eventually("ann has what she missed", async () => missed.every((id) => seen().has(id)), 60_000);
  assert.ok(a.seen.changes.some((c) => c.conversation === conv), "the reconnect asked for the changes");
  // Stored once: the history holds it once.
  await eventually("history settles", async () => {
    const page = await b.request({ type: "history", conversation: conv, limit: 50 });
    const bodies = page.messages.map((m) => m.body);
    assert.equal(bodies.filter((x) => x === "written while away").length, 1, JSON.stringify(bodies));
    return true;
  });
  await eventually("bob gets ann's message live", async () => b.seen.message.some((e) => e.message.id === stored.id));
  // The watch came back with the connection: Bob leaving is seen.
  b.close();
  await eventually("ann sees bob go offline", async () => a.seen.presence.some((p) => p.user === bob.id && p.status === "offline"), 60_000);
  a.close();
});
