// One user's connection to the cluster: a WebSocket to one of its nodes,
// requests matched to their answers by `req` (each with a timeout), events
// handed to the app by type, and on any loss a reconnect to the next node
// after a jittered backoff, which restores presence watches, catches up
// every followed conversation and sends what the outbox holds.

import { backoffDelay, type BackoffOptions } from "./backoff";
import { codec, type Codec, type CodecName } from "./codec";
import { RequestError } from "./errors";
import { Emitter, type ChatEvents, type ConnState, type Changes, type Ended, type EventFrame, type Listener } from "./events";
import { Outbox, type SendOptions } from "./outbox";
import type { ClientFrame, ConversationId, Message, OkReply, UserId } from "./protocol";
import { Sync } from "./sync";

/** What a WebSocket implementation must offer: the browser's, or `ws`'s
 * in Node 20 (`import WebSocket from "ws"`). */
export interface WebSocketLike {
  binaryType: string;
  readonly readyState: number;
  send(data: string | Uint8Array): void;
  close(code?: number, reason?: string): void;
  onopen: ((ev: unknown) => void) | null;
  onmessage: ((ev: { data: unknown }) => void) | null;
  onclose: ((ev: { code: number; reason: string }) => void) | null;
  onerror: ((ev: unknown) => void) | null;
}

export type WebSocketConstructor = new (url: string, protocols?: string | string[]) => WebSocketLike;

/** A request: any client frame; the client adds `req`. */
export type Request = ClientFrame extends infer F ? (F extends unknown ? Omit<F, "req"> : never) : never;

export interface ClientOptions {
  /** The nodes' base URLs (`https://chat-1.example.net`), tried in turn; a
   * function is asked again before each attempt. */
  nodes: string[] | (() => string[]);
  /** A valid access token, asked before every connect: refresh it there
   * (see `sessionTokens`). Throwing ends the client as `unauthorized`. */
  token: () => Promise<string>;
  /** `json` (default) or `msgpack`. */
  codec?: CodecName;
  /** The WebSocket class: the global one by default (browsers, Node 22+). */
  WebSocket?: WebSocketConstructor;
  /** How long a request waits for its answer (10 s). */
  requestTimeoutMs?: number;
  backoff?: BackoffOptions;
  /** After a reconnect, catch every followed conversation up once more this
   * much later (3 s; 0: never): a node lets a client in after at most 2 s
   * even when a conversation's owner has not yet confirmed that it delivers
   * there, and what that owner accepts before confirming comes neither live
   * nor in the first catch-up (the node's `catch_up` frame says so too;
   * this covers a node older than 1.2). */
  lateCatchUpMs?: number;
}

const OPEN = 1;
/** Close codes (docs/protocol.md): token expired or login revoked; an
 * operator suspended the account. */
const CLOSE_UNAUTHORIZED = 4001;
const CLOSE_SUSPENDED = 4005;
/** 4001s in a row, each with a fresh token, before the client gives up. */
const MAX_UNAUTHORIZED = 3;

interface Waiting {
  resolve: (ok: OkReply) => void;
  reject: (e: RequestError) => void;
  timer: ReturnType<typeof setTimeout>;
}

export class ChatClient {
  private _state: ConnState = "idle";
  private ws: WebSocketLike | null = null;
  private waiting = new Map<number, Waiting>();
  private nextReq = 1;
  private attempt = 0;
  private unauthorized = 0;
  private attemptNode = 0;
  private stopped = true;
  private timer: ReturnType<typeof setTimeout> | undefined;
  private lateTimer: ReturnType<typeof setTimeout> | undefined;
  private connected: string | null = null;
  private readonly events = new Emitter<ChatEvents>();
  private readonly watched = new Set<UserId>();
  private readonly codec: Codec;
  private readonly Socket: WebSocketConstructor;
  /** Sends waiting for their acknowledgement. */
  readonly outbox: Outbox;
  /** The revisions followed for catch-up. */
  readonly sync: Sync;

  constructor(private readonly options: ClientOptions) {
    this.codec = codec(options.codec ?? "json");
    const Socket = options.WebSocket ?? (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
    if (!Socket) throw new Error("no WebSocket here: pass options.WebSocket (the `ws` package in Node 20)");
    this.Socket = Socket;
    this.outbox = new Outbox(this);
    this.sync = new Sync(this);
  }

  get state(): ConnState {
    return this._state;
  }

  /** The base URL of the node the client is connected to (null when not). */
  get node(): string | null {
    return this.isOpen ? this.connected : null;
  }

  get isOpen(): boolean {
    return this._state === "open" && this.ws?.readyState === OPEN;
  }

  /** Listens for `type`; returns what stops listening. */
  on<K extends keyof ChatEvents>(type: K, listener: Listener<ChatEvents[K]>): () => void {
    return this.events.on(type, listener);
  }

  /** Connects, and keeps connecting until `close()`. */
  connect(): void {
    if (!this.stopped) return;
    this.stopped = false;
    this.setState("connecting");
    void this.open();
  }

  /** Closes for good: requests in flight fail, the outbox is dropped. */
  close(): void {
    this.stopped = true;
    clearTimeout(this.timer);
    clearTimeout(this.lateTimer);
    const ws = this.ws;
    this.ws = null;
    ws?.close(1000);
    this.failAll("the client was closed");
    this.outbox.clear();
    this.setState("closed");
  }

  /** Sends a request and resolves with its `ok` (or rejects with a
   * RequestError: the node's `error`, `unavailable` when not connected,
   * `timeout` when no answer came in time). */
  request(frame: Request, timeoutMs = this.options.requestTimeoutMs ?? 10_000): Promise<OkReply> {
    const ws = this.ws;
    if (!ws || !this.isOpen) return Promise.reject(new RequestError("unavailable", "not connected"));
    const req = this.nextReq++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiting.delete(req);
        reject(new RequestError("timeout", `no answer to ${frame.type} within ${timeoutMs} ms`));
      }, timeoutMs);
      this.waiting.set(req, { resolve, reject, timer });
      ws.send(this.codec.encode({ ...frame, req }));
    });
  }

  /** A frame nobody answers (`typing`); dropped while disconnected. */
  notify(frame: Request): void {
    if (this.isOpen) this.ws!.send(this.codec.encode(frame));
  }

  /** Sends a message through the outbox: resolves with it as stored, once,
   * however many connections it takes. */
  send(conversation: ConversationId, body: string, options?: SendOptions): Promise<Message> {
    return this.outbox.send(conversation, body, options);
  }

  /** Presence events for `users`, kept across reconnects; resolves with
   * their presence now (empty while disconnected: it comes on reconnect). */
  async watch(users: UserId[]): Promise<OkReply["presence"]> {
    for (const u of users) this.watched.add(u);
    if (!this.isOpen) return [];
    return (await this.request({ type: "watch", users })).presence ?? [];
  }

  async unwatch(users: UserId[]): Promise<void> {
    for (const u of users) this.watched.delete(u);
    if (this.isOpen) await this.request({ type: "unwatch", users });
  }

  /** @internal The catch-up's results, to the app. */
  emitChanges(changes: Changes): void {
    this.events.emit("changes", changes);
  }

  private setState(s: ConnState): void {
    if (this._state === s) return;
    this._state = s;
    this.events.emit("state", s);
  }

  private end(why: Ended): void {
    this.close();
    this.events.emit("ended", why);
  }

  private nodes(): string[] {
    const n = typeof this.options.nodes === "function" ? this.options.nodes() : this.options.nodes;
    if (n.length === 0) throw new Error("no nodes to connect to");
    return n;
  }

  private async open(): Promise<void> {
    if (this.stopped) return;
    let token: string;
    try {
      token = await this.options.token();
    } catch {
      return this.end("unauthorized");
    }
    if (this.stopped) return;
    const nodes = this.nodes();
    const url = nodes[this.attemptNode % nodes.length].replace(/\/+$/, "");
    const base = url.replace(/^http/, "ws");
    const ws = new this.Socket(`${base}/v1/ws?access_token=${encodeURIComponent(token)}`, this.codec.subprotocol);
    ws.binaryType = "arraybuffer";
    this.ws = ws;
    ws.onopen = () => {
      if (this.ws !== ws) return;
      this.attempt = 0;
      this.connected = url;
      this.setState("open");
      this.restore();
    };
    ws.onmessage = (e) => {
      if (this.ws !== ws) return;
      let frame: unknown;
      try {
        frame = this.codec.decode(e.data);
      } catch {
        return;
      }
      this.handle(frame as { type: string; req?: unknown });
    };
    ws.onerror = () => {};
    ws.onclose = (e) => {
      if (this.ws !== ws) return;
      this.ws = null;
      this.failAll("connection lost");
      if (this.stopped) return;
      if (e.code === CLOSE_SUSPENDED) return this.end("suspended");
      if (e.code === CLOSE_UNAUTHORIZED) {
        this.unauthorized += 1;
        if (this.unauthorized >= MAX_UNAUTHORIZED) return this.end("unauthorized");
      } else if (this.attempt === 0) {
        this.unauthorized = 0;
      }
      this.setState("reconnecting");
      // The next node: this one may be the one that went away.
      this.attemptNode += 1;
      const delay = backoffDelay(this.attempt++, this.options.backoff);
      this.timer = setTimeout(() => void this.open(), delay);
    };
  }

  /** What a new connection owes the app: the watches, the catch-up, the
   * outbox. */
  private restore(): void {
    if (this.watched.size > 0) {
      this.request({ type: "watch", users: [...this.watched] }).then(
        (ok) => {
          for (const p of ok.presence ?? []) this.events.emit("presence", { type: "presence", ...p });
        },
        () => {},
      );
    }
    this.sync.reconnected();
    void this.outbox.flush();
    const late = this.options.lateCatchUpMs ?? 3000;
    clearTimeout(this.lateTimer);
    if (late > 0) this.lateTimer = setTimeout(() => this.isOpen && this.sync.reconnected(), late);
  }

  private failAll(why: string): void {
    for (const w of this.waiting.values()) {
      clearTimeout(w.timer);
      w.reject(new RequestError("unavailable", why));
    }
    this.waiting.clear();
  }

  private handle(frame: { type: string; req?: unknown }): void {
    if ((frame.type === "ok" || frame.type === "error") && typeof frame.req === "number") {
      const w = this.waiting.get(frame.req);
      if (w) {
        this.waiting.delete(frame.req);
        clearTimeout(w.timer);
        if (frame.type === "ok") w.resolve(frame as OkReply);
        else {
          const f = frame as unknown as { code: RequestError["code"]; message: string; retry_after_ms?: number };
          w.reject(new RequestError(f.code, f.message, f.retry_after_ms));
        }
        return;
      }
      // The answer to a request that timed out: nobody waits for it.
      if (frame.type === "ok") return;
    }
    if (frame.type === "ok") return;
    const event = frame as EventFrame;
    this.sync.observe(event);
    this.events.emit(event.type, event as never);
  }
}
