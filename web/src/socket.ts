// The WebSocket side of protocol v1.1 (JSON): requests matched to their
// replies by `req`, events handed on, and reconnection with backoff, to the
// next node the page may use (api.ts `nodes()`) each time.

import { ApiError, answered } from "./api";

export type ConnState = "connecting" | "open" | "reconnecting";

/** Why the socket gave up for good: the token was refused (revoked, logged
 * out elsewhere), or an operator suspended the account. */
export type Ended = "unauthorized" | "suspended";

/** An operator suspended the account: do not come back. (4004, an operator
 * disconnected the user, is like any other loss: reconnect.) */
const CLOSE_SUSPENDED = 4005;

export class RequestError extends Error {
  constructor(
    public code: string,
    message: string,
  ) {
    super(message);
  }
}

interface Waiting {
  resolve: (ok: any) => void;
  reject: (e: RequestError) => void;
}

/** Backoff after the `attempt`th failure in a row: 250 ms doubling to 5 s,
 * with jitter so that a node's clients do not all come back at once. */
function backoff(attempt: number): number {
  const base = Math.min(5000, 250 * 2 ** attempt);
  return base / 2 + (Math.random() * base) / 2;
}

export class ChatSocket {
  state: ConnState = "connecting";
  private ws: WebSocket | null = null;
  private waiting = new Map<number, Waiting>();
  private nextReq = 1;
  private attempt = 0;
  private node = 0;
  private stopped = false;

  constructor(
    /** The nodes to use, asked again at each attempt: the list the page
     * learns from its origin may arrive after the first one. */
    private nodes: () => string[],
    /** A valid access token (refreshed first when it is about to expire). */
    private token: () => Promise<string>,
    private onEvent: (frame: any) => void,
    private onState: (state: ConnState) => void,
    /** The socket gave up for good: signed out, and why. */
    private onEnded: (why: Ended) => void,
  ) {}

  start() {
    void this.connect();
  }

  stop() {
    this.stopped = true;
    this.ws?.close(1000);
  }

  private setState(s: ConnState) {
    this.state = s;
    this.onState(s);
  }

  private async connect() {
    if (this.stopped) return;
    let token: string;
    try {
      token = await this.token();
    } catch (e) {
      // A suspended account's refresh answers 403 `forbidden`.
      const suspended = e instanceof ApiError && e.status === 403 && e.code === "forbidden";
      return this.onEnded(suspended ? "suspended" : "unauthorized");
    }
    const nodes = this.nodes();
    const node = nodes[this.node % nodes.length];
    const base = node.replace(/^http/, "ws");
    const ws = new WebSocket(`${base}/v1/ws?access_token=${encodeURIComponent(token)}`, "chat.v1.json");
    this.ws = ws;
    ws.onopen = () => {
      answered(node);
      this.attempt = 0;
      this.setState("open");
    };
    ws.onmessage = (e) => {
      let frame: any;
      try {
        frame = JSON.parse(e.data);
      } catch {
        return;
      }
      this.handle(frame);
    };
    ws.onclose = (e) => {
      if (this.ws !== ws) return;
      this.ws = null;
      for (const w of this.waiting.values()) {
        w.reject(new RequestError("unavailable", "connection lost"));
      }
      this.waiting.clear();
      if (this.stopped) return;
      if (e.code === CLOSE_SUSPENDED) {
        this.stopped = true;
        return this.onEnded("suspended");
      }
      if (e.code === 4001 && this.attempt > 2) return this.onEnded("unauthorized");
      // Anything else (4004 included): back after the backoff.
      this.setState("reconnecting");
      // Another node next: this one may be the one that went away.
      this.node += 1;
      const delay = backoff(this.attempt);
      this.attempt += 1;
      setTimeout(() => void this.connect(), delay);
    };
  }

  private handle(frame: any) {
    const req = frame.req;
    if ((frame.type === "ok" || frame.type === "error") && typeof req === "number") {
      const w = this.waiting.get(req);
      if (w) {
        this.waiting.delete(req);
        if (frame.type === "ok") w.resolve(frame);
        else w.reject(new RequestError(frame.code, frame.message));
        return;
      }
    }
    this.onEvent(frame);
  }

  /** Sends a request; its `ok` (or a RequestError). Fails at once with
   * `unavailable` while the connection is down. */
  request(frame: Record<string, unknown>): Promise<any> {
    const ws = this.ws;
    if (!ws || ws.readyState !== WebSocket.OPEN) {
      return Promise.reject(new RequestError("unavailable", "not connected"));
    }
    const req = this.nextReq++;
    return new Promise((resolve, reject) => {
      this.waiting.set(req, { resolve, reject });
      ws.send(JSON.stringify({ ...frame, req }));
    });
  }

  /** A frame nobody answers (typing). */
  notify(frame: Record<string, unknown>) {
    if (this.ws?.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(frame));
  }
}
