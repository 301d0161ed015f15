// Socket.IO clients, unchanged, against a real three-node cluster: the
// npm `socket.io-client` 4.8 (its default parser and
// `socket.io-msgpack-parser`), over long-polling and WebSocket, in Node and
// in Chromium, chatting with a native WebSocket client (`ws`) connected to
// another node. Acks carry the reply frames; server events arrive under
// their `type`; errors, a refused token, reconnect and catch-up behave as
// on the native path. node/tests/socketio.rs covers the hostile clients.

import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { createServer } from "node:http";
import { join } from "node:path";
import { io } from "socket.io-client";
import msgpackParser from "socket.io-msgpack-parser";
import WebSocket from "ws";
import { eventually, freePort, launchBrowser, root, startCluster, tearDown, PASSWORD, unique } from "./cluster.mjs";

let cluster;
let browser;

before(async () => {
  cluster = await startCluster(3);
  browser = await launchBrowser();
});

after(() => tearDown(browser, cluster));

async function register(i) {
  const res = await fetch(`${cluster.urls[i]}/v1/auth/register`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ username: unique("sio"), password: PASSWORD }),
  });
  assert.equal(res.status, 201);
  const v = await res.json();
  return { id: v.user.id, token: v.access_token };
}

/** A Socket.IO client on node `i`, connected, that records its events. */
async function sio(i, token, opts = {}) {
  const socket = io(cluster.urls[i], { auth: { token }, reconnection: false, ...opts });
  socket.seen = [];
  socket.onAny((event, frame) => socket.seen.push({ event, frame }));
  await new Promise((ok, fail) => {
    socket.once("connect", ok);
    socket.once("connect_error", fail);
  });
  return socket;
}

/** A native protocol client on node `i`: requests matched by `req`. */
async function native(i, token) {
  const ws = new WebSocket(`${cluster.urls[i].replace("http", "ws")}/v1/ws`, "chat.v1.json", {
    headers: { authorization: `Bearer ${token}` },
  });
  const client = { ws, seen: [], waiting: new Map(), next: 1 };
  ws.on("message", (data) => {
    const f = JSON.parse(String(data));
    if (f.req != null && client.waiting.has(f.req)) {
      client.waiting.get(f.req)(f);
      client.waiting.delete(f.req);
    } else {
      client.seen.push(f);
    }
  });
  client.request = (frame) =>
    new Promise((ok) => {
      const req = client.next++;
      client.waiting.set(req, ok);
      ws.send(JSON.stringify({ ...frame, req }));
    });
  await new Promise((ok, fail) => {
    ws.once("open", ok);
    ws.once("error", fail);
  });
  return client;
}

const ack = (socket, event, arg) => socket.timeout(10_000).emitWithAck(event, arg);

async function sioReceives(socket, body) {
  return eventually(`socket.io client receives ${body}`, () =>
    socket.seen.find((e) => e.event === "message" && e.frame.message?.body === body),
  );
}

async function nativeReceives(client, body) {
  return eventually(`native client receives ${body}`, () =>
    client.seen.find((f) => f.type === "message" && f.message?.body === body),
  );
}

for (const [name, opts] of [
  ["long-polling upgraded to WebSocket", {}],
  ["long-polling only", { transports: ["polling"] }],
  ["WebSocket only", { transports: ["websocket"] }],
  ["the MessagePack parser", { parser: msgpackParser, query: { parser: "msgpack" } }],
]) {
  test(`a socket.io client (${name}) and a native client chat both ways across nodes`, async () => {
    const ann = await register(0);
    const bob = await register(0);
    const a = await sio(1, ann.token, opts);
    const b = await native(2, bob.token);
    try {
      const created = await ack(a, "create", { kind: "group", members: [bob.id] });
      assert.equal(created.type, "ok", JSON.stringify(created));
      const conv = created.conversation.id;
      const sent = await ack(a, "send", { conversation: conv, client_msg_id: unique("c"), body: "from socket.io" });
      assert.equal(sent.type, "ok", JSON.stringify(sent));
      assert.equal(sent.message.body, "from socket.io");
      await nativeReceives(b, "from socket.io");
      const back = await b.request({ type: "send", conversation: conv, client_msg_id: unique("c"), body: "from the native client" });
      assert.equal(back.type, "ok");
      const got = await sioReceives(a, "from the native client");
      assert.equal(got.frame.type, "message", "an event named by its type, with the frame");
      assert.equal(got.frame.message.id, back.message.id);
      // The same client_msg_id again: the same message, not a second one.
      const id = unique("c");
      const first = await ack(a, "send", { conversation: conv, client_msg_id: id, body: "once" });
      const again = await ack(a, "send", { conversation: conv, client_msg_id: id, body: "once" });
      assert.equal(again.message.id, first.message.id);
    } finally {
      a.close();
      b.ws.close();
    }
  });
}

test("errors come back on the ack, a bad token is a connect_error", async () => {
  const ann = await register(0);
  const a = await sio(1, ann.token);
  try {
    const notObject = await ack(a, "send", "just a string");
    assert.equal(notObject.type, "error");
    assert.equal(notObject.code, "bad_request");
    const unknown = await ack(a, "frobnicate", {});
    assert.equal(unknown.type, "error");
    assert.equal(unknown.code, "bad_request");
    const stranger = await ack(a, "send", { conversation: "g:nobody-here", client_msg_id: unique("c"), body: "hi" });
    assert.equal(stranger.type, "error");
    assert.ok(["not_found", "forbidden"].includes(stranger.code), JSON.stringify(stranger));
    // Still connected and answering.
    const ping = await ack(a, "ping", {});
    assert.equal(ping.type, "ok");
  } finally {
    a.close();
  }
  await assert.rejects(sio(1, "not-a-token"), (e) => {
    assert.match(e.message, /^unauthorized/);
    return true;
  });
});

test("a socket.io client that reconnects catches up with history after the last id it saw", async () => {
  const ann = await register(0);
  const bob = await register(0);
  const a = await sio(0, ann.token);
  const b = await native(2, bob.token);
  try {
    const conv = (await ack(a, "create", { kind: "group", members: [bob.id] })).conversation.id;
    const seen = (await ack(a, "send", { conversation: conv, client_msg_id: unique("c"), body: "seen" })).message.id;
    a.disconnect();
    for (const body of ["missed 1", "missed 2", "missed 3"]) {
      const r = await b.request({ type: "send", conversation: conv, client_msg_id: unique("c"), body });
      assert.equal(r.type, "ok");
    }
    a.connect();
    await new Promise((ok) => a.once("connect", ok));
    const page = await ack(a, "history", { conversation: conv, after: seen });
    assert.equal(page.type, "ok");
    assert.deepEqual(
      page.messages.map((m) => m.body),
      ["missed 1", "missed 2", "missed 3"],
    );
    // Live again after the reconnect.
    await b.request({ type: "send", conversation: conv, client_msg_id: unique("c"), body: "live again" });
    await sioReceives(a, "live again");
  } finally {
    a.close();
    b.ws.close();
  }
});

test("socket.io-client in Chromium: both parsers, chat with a native client", async () => {
  const context = await browser.newContext();
  const page = await context.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  try {
    // An app's page on an origin of its own (the node's pages forbid
    // inline scripts): Socket.IO's requests are cross-origin, as an app's.
    const app = createServer((_, res) => res.end("<!doctype html><title>an app</title>"));
    const port = await freePort();
    await new Promise((ok) => app.listen(port, "127.0.0.1", ok));
    after(() => app.close());
    await page.goto(`http://127.0.0.1:${port}/`);
    for (const [bundle, query] of [
      ["socket.io.min.js", {}],
      ["socket.io.msgpack.min.js", { parser: "msgpack" }],
    ]) {
      await page.addScriptTag({ path: join(root, "web", "node_modules", "socket.io-client", "dist", bundle) });
      const ann = await register(0);
      const bob = await register(0);
      const b = await native(2, bob.token);
      try {
        const conv = await page.evaluate(
          async ({ url, token, bob, query }) => {
            const socket = window.io(url, { auth: { token }, query, reconnection: false });
            window.sock = socket;
            window.got = [];
            socket.on("message", (f) => window.got.push(f.message.body));
            await new Promise((ok, fail) => {
              socket.once("connect", ok);
              socket.once("connect_error", fail);
            });
            const created = await socket.emitWithAck("create", { kind: "group", members: [bob] });
            const conv = created.conversation.id;
            const sent = await socket.emitWithAck("send", { conversation: conv, client_msg_id: `p${Date.now()}`, body: "from chromium" });
            if (sent.type !== "ok") throw new Error(JSON.stringify(sent));
            return conv;
          },
          { url: cluster.urls[1], token: ann.token, bob: bob.id, query },
        );
        await nativeReceives(b, "from chromium");
        await b.request({ type: "send", conversation: conv, client_msg_id: unique("c"), body: "to chromium" });
        await eventually("the page's socket receives", () => page.evaluate(() => window.got.includes("to chromium")));
        await page.evaluate(() => window.sock.close());
      } finally {
        b.ws.close();
      }
    }
    assert.deepEqual(errors, []);
  } finally {
    await context.close();
  }
});
