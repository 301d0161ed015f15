// Baseline for chat-bench: the stack chat microservice tutorials build on.
// A Socket.IO v4 server with the Redis adapter (so several processes can share
// rooms), one room per conversation, fan-out with socket.to(room).emit and an
// ack to the sender. In-memory only: no persistence, no auth check, which makes
// it a generous baseline next to a server that fsyncs before acknowledging.
//
//   PORT=3000 REDIS_URL=redis://127.0.0.1:6379 node server.js
//
// Without REDIS_URL, or when Redis cannot be reached, it falls back to the
// in-memory adapter and says so loudly on stderr and in its READY line, so a
// result is never silently taken from the wrong stack.
"use strict";

const http = require("http");
const { Server } = require("socket.io");

const port = parseInt(process.env.PORT || "3000", 10);
const host = process.env.HOST || "127.0.0.1";
const redisUrl = process.env.REDIS_URL || "";

async function redisAdapter() {
  if (!redisUrl) {
    return { adapter: null, why: "REDIS_URL is not set" };
  }
  try {
    const { createClient } = require("redis");
    const { createAdapter } = require("@socket.io/redis-adapter");
    const pub = createClient({
      url: redisUrl,
      socket: { connectTimeout: 3000, reconnectStrategy: false },
    });
    const sub = pub.duplicate();
    pub.on("error", (e) => console.error("redis pub error:", e.message));
    sub.on("error", (e) => console.error("redis sub error:", e.message));
    await Promise.all([pub.connect(), sub.connect()]);
    return { adapter: createAdapter(pub, sub), why: "" };
  } catch (e) {
    return { adapter: null, why: `redis at ${redisUrl}: ${e.message}` };
  }
}

async function main() {
  const httpServer = http.createServer((req, res) => {
    res.writeHead(req.url === "/healthz" ? 200 : 404);
    res.end();
  });
  const io = new Server(httpServer, {
    // The harness speaks Engine.IO over WebSocket directly, as browsers do
    // once upgraded; long-polling would only add noise.
    transports: ["websocket"],
    perMessageDeflate: false,
    serveClient: false,
  });

  const { adapter, why } = await redisAdapter();
  let adapterName = "redis";
  if (adapter) {
    io.adapter(adapter);
  } else {
    adapterName = "memory";
    console.error("!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!");
    console.error(`!! WARNING: Redis adapter unavailable (${why}).`);
    console.error("!! Falling back to the in-memory adapter: this is NOT the tutorial stack");
    console.error("!! and cannot share rooms between processes.");
    console.error("!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!");
  }

  let seq = 0;
  io.on("connection", (socket) => {
    const token = socket.handshake.auth && socket.handshake.auth.token;
    socket.data.user = typeof token === "string" && token ? token : socket.id;

    socket.on("join", (room, ack) => {
      if (typeof room !== "string" || room.length === 0) {
        if (typeof ack === "function") ack({ error: "bad_request" });
        return;
      }
      socket.join(room);
      if (typeof ack === "function") ack({ ok: true, room });
    });

    socket.on("send", (msg, ack) => {
      const reply = typeof ack === "function" ? ack : () => {};
      if (!msg || typeof msg.room !== "string" || typeof msg.body !== "string") {
        reply({ error: "bad_request" });
        return;
      }
      // The same membership check the chat server makes on every send.
      if (!socket.rooms.has(msg.room)) {
        reply({ error: "forbidden" });
        return;
      }
      seq += 1;
      const message = {
        id: `${process.pid}-${seq}`,
        room: msg.room,
        sender: socket.data.user,
        body: msg.body,
        client_msg_id: msg.client_msg_id,
        ts: Date.now(),
      };
      socket.to(msg.room).emit("message", message);
      reply({ ok: true, message });
    });
  });

  httpServer.listen(port, host, () => {
    console.log(`READY port=${port} adapter=${adapterName} pid=${process.pid}`);
  });

  const stop = () => {
    io.close();
    process.exit(0);
  };
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
}

main().catch((e) => {
  console.error("socket.io baseline failed:", e);
  process.exit(1);
});
