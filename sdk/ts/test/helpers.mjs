// What the SDK's tests share: real chat nodes (the web tests' cluster
// starter: real processes on free loopback ports, a real Redis), users
// registered over HTTP, and clients of the built package over `ws`.

import WebSocket from "ws";
import { ChatClient, sessionTokens } from "../dist/index.js";

export { startCluster, eventually } from "../../../web/tests/cluster.mjs";

export function unique(prefix) {
  return `${prefix}${Date.now().toString(36)}${Math.floor(Math.random() * 1e6).toString(36)}`;
}

/** Registers a user on `node`: `{id, session}`. */
export async function register(node, prefix) {
  const username = unique(prefix);
  const res = await fetch(`${node}/v1/auth/register`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ username, password: "correct horse battery" }),
  });
  const body = await res.json();
  if (res.status !== 201) throw new Error(`register: ${res.status} ${JSON.stringify(body)}`);
  return { id: body.user.id, session: { access_token: body.access_token, refresh_token: body.refresh_token } };
}

/** A client of `user` over `nodes` (in that order), not yet connected;
 * `events` collects every event by type. */
export function client(user, nodes, options = {}) {
  const c = new ChatClient({
    nodes,
    token: sessionTokens(user.session, { nodes, ...(options.tokens ?? {}) }),
    WebSocket,
    backoff: { initialMs: 100, maxMs: 1000 },
    ...options,
  });
  c.seen = {};
  for (const type of ["message", "message_updated", "reaction", "presence", "conversation", "catch_up", "changes", "state", "ended", "error"]) {
    c.seen[type] = [];
    c.on(type, (e) => c.seen[type].push(e));
  }
  return c;
}

/** Waits until `c` is open. */
export function opened(c) {
  if (c.state === "open") return Promise.resolve();
  return new Promise((resolve, reject) => {
    const stop = c.on("state", (s) => {
      if (s === "open") {
        stop();
        resolve();
      }
    });
    c.on("ended", (why) => reject(new Error(`ended: ${why}`)));
  });
}
