// What the page knows of the user's chats, kept in step with the server:
// the conversation list, the loaded part of each history, what is being
// sent, typing, receipts and presence. Components read it and re-render on
// `subscribe`. The connection, requests, reconnects, the outbox's retries
// and the catch-up are the SDK's (sdk/ts); this keeps what the page shows.

import { ChatClient, RequestError, newClientMsgId, type Changes, type Ended, type Request } from "@chat-cluster/sdk";
import { ApiError, Session, answered, loadSession, nodes, readJson, refresh, send } from "./api";

export type ConnState = "connecting" | "open" | "reconnecting";

export interface Reaction {
  emoji: string;
  count: number;
  users: string[];
}

export interface Message {
  id: string;
  conversation: string;
  sender: string;
  body: string;
  kind: string;
  ts: number;
  client_msg_id: string;
  reply_to?: string;
  rev: number;
  edited_at?: number;
  deleted: boolean;
  reactions: Reaction[];
  mentions: string[];
  /** Files it carries (servers of 1.2 and later); links signed. */
  attachments?: Attachment[];
}

export interface Attachment {
  id: string;
  name: string;
  content_type: string;
  size: number;
  width?: number;
  height?: number;
  url?: string;
  thumbnail_url?: string;
}

export interface Member {
  user: string;
  role: "owner" | "admin" | "member";
}

export interface Conversation {
  id: string;
  kind: "direct" | "group" | "channel";
  title?: string;
  members: Member[];
  member_count?: number;
  created_at: number;
  rev: number;
  last_message?: Message | null;
  unread: number;
  mentions: number;
  /** What of it notifies this user (servers of 1.2 and later). */
  notify?: { level: "all" | "mentions" | "none"; muted_until?: number };
}

/** A send not acknowledged yet: shown at once, sent again with the same
 * `client_msg_id` after a failure, so it is stored once. */
export interface Outgoing {
  client_msg_id: string;
  conversation: string;
  body: string;
  reply_to?: string;
  /** Media ids, kept for every retry. */
  attachments?: string[];
  /** Their file names, shown while it is sent. */
  names?: string[];
  error?: string;
}

/** Message ids are u64 decimal strings: compared as numbers. */
export function cmpId(a: string, b: string): number {
  return a.length - b.length || (a < b ? -1 : a > b ? 1 : 0);
}

const TYPING_SHOWN_MS = 6000;
const TYPING_RESEND_MS = 3000;
const PAGE = 50;

export class Chat {
  session: Session;
  conn: ConnState = "connecting";
  conversations = new Map<string, Conversation>();
  /** Loaded history per conversation, ascending by id. */
  messages = new Map<string, Message[]>();
  /** Whether older messages than the loaded ones exist. */
  older = new Map<string, boolean>();
  outbox: Outgoing[] = [];
  /** A message to scroll to and mark (a search result opened). */
  focus: string | null = null;
  typing = new Map<string, Map<string, number>>();
  receipts = new Map<string, Map<string, string>>();
  presence = new Map<string, "online" | "offline">();
  /** The conversation on screen. */
  open: string | null = null;
  error: string | null = null;

  private client: ChatClient;
  /** The last refresh was refused as suspended: the end is a suspension. */
  private suspended = false;
  private listeners = new Set<() => void>();
  private typingSent = new Map<string, number>();
  private refreshing: Promise<Session> | null = null;
  private refreshTimer: number | undefined;
  private readSent = new Map<string, string>();

  constructor(
    session: Session,
    /** Signed out by the server: the token refused, or the account suspended. */
    private signedOut: (why: Ended) => void,
  ) {
    this.session = session;
    this.client = new ChatClient({
      nodes,
      token: async () => {
        try {
          return await this.token();
        } catch (e) {
          // A suspended account's refresh answers 403 `forbidden`.
          this.suspended = e instanceof ApiError && e.status === 403 && e.code === "forbidden";
          throw e;
        }
      },
    });
    this.client.on("state", (s) => {
      if (s === "open") {
        // Links the nodes sign load from the node the page is on.
        answered(this.client.node ?? location.origin);
        void this.synced();
      }
      this.conn = s === "open" ? "open" : s === "idle" || s === "connecting" ? "connecting" : "reconnecting";
      this.changed();
    });
    this.client.on("ended", (why) => this.signedOut(this.suspended ? "suspended" : why));
    this.client.on("changes", (c) => this.caughtUp(c));
    for (const type of ["message", "message_updated", "reaction", "catch_up", "typing", "receipt", "presence", "conversation", "membership"] as const) {
      this.client.on(type, (f) => this.event(f));
    }
    this.scheduleRefresh();
  }

  start() {
    this.client.connect();
  }

  stop() {
    this.client.close();
    clearTimeout(this.refreshTimer);
  }

  subscribe(f: () => void): () => void {
    this.listeners.add(f);
    return () => this.listeners.delete(f);
  }

  private changed() {
    for (const f of this.listeners) f();
  }

  // --- tokens ---------------------------------------------------------------

  /** An HTTP request as this user (JSON in and out), to any node. */
  async request(method: string, path: string, body?: unknown): Promise<any> {
    return readJson(await send(method, path, body, await this.token()));
  }

  /** A token for a request the page makes itself (an upload). */
  bearer(): Promise<string> {
    return this.token();
  }

  /** Shows conversation `id` with message `target` loaded (older pages
   * fetched until it is, and one more for what came before it), and marks
   * it to be scrolled to. */
  async jumpTo(id: string, target: string) {
    await this.show(id);
    for (let pages = 0; pages < 50; pages++) {
      const list = this.messages.get(id) ?? [];
      if (list.length && cmpId(list[0].id, target) < 0) break;
      if (!(await this.loadOlder(id).catch(() => false))) break;
    }
    await this.loadOlder(id).catch(() => false);
    this.focus = target;
    this.changed();
  }

  /** The access token, refreshed first when it expires within a minute. */
  private async token(): Promise<string> {
    if (this.session.expires - Date.now() > 60_000) return this.session.access;
    return (await this.refreshNow()).access;
  }

  private refreshNow(): Promise<Session> {
    if (!this.refreshing) {
      // Another tab may have refreshed already: its tokens are in storage.
      const stored = loadSession();
      const current = stored && stored.expires > this.session.expires ? stored : this.session;
      this.refreshing = refresh(current)
        .then((s) => {
          this.session = s;
          this.scheduleRefresh();
          return s;
        })
        .finally(() => {
          this.refreshing = null;
        });
    }
    return this.refreshing;
  }

  /** Refreshes before expiry, so the open connection is never cut for it. */
  private scheduleRefresh() {
    clearTimeout(this.refreshTimer);
    const lifetime = Math.max(5_000, this.session.expires - Date.now());
    this.refreshTimer = window.setTimeout(() => {
      this.refreshNow().catch(() => {
        // The next connection attempt tries again, or signs out.
      });
    }, lifetime * 0.8);
  }

  // --- after (re)connecting -----------------------------------------------

  /** Brings the page up to date after a (re)connect: the list and
   * presence (the SDK catches up the conversations it follows and sends
   * what the outbox holds). */
  private async synced() {
    try {
      const reply = await this.req({ type: "conversations", limit: 200 });
      for (const c of reply.conversations as Conversation[]) this.putConversation(c);
      await this.watchMembers();
      if (this.open && !this.messages.has(this.open)) await this.load(this.open);
      // What came in while away is on screen now: read.
      if (this.open && document.visibilityState === "visible") this.markRead(this.open);
      this.error = null;
    } catch (e) {
      if (e instanceof RequestError && e.code !== "unavailable") this.error = e.message;
    }
    this.changed();
  }

  /** What a catch-up of the SDK found: new messages count as unread unless
   * it followed a reconnect (the list reloaded then counts them). */
  private caughtUp(c: Changes) {
    const count = c.reason !== "reconnect";
    for (const m of c.messages as Message[]) this.putMessage(m, count && !m.deleted);
    if (this.open === c.conversation && document.visibilityState === "visible") this.markRead(c.conversation);
    this.changed();
  }

  private req(frame: Request): Promise<any> {
    return this.client.request(frame);
  }

  private async watchMembers() {
    const users = new Set<string>();
    for (const c of this.conversations.values()) {
      for (const m of c.members) if (m.user !== this.session.user) users.add(m.user);
    }
    const list = [...users].slice(0, 1000);
    if (!list.length) return;
    const reply = await this.req({ type: "watch", users: list });
    for (const p of reply.presence ?? []) this.presence.set(p.user, p.status);
  }

  // --- events ------------------------------------------------------------------

  private event(f: any) {
    switch (f.type) {
      case "message":
      case "message_updated":
        this.putMessage(f.message as Message, f.type === "message");
        break;
      case "reaction":
        this.putReaction(f);
        break;
      case "catch_up":
        // The node cannot vouch that every change of these reached this
        // connection live: the SDK catches up those it follows; one the
        // page does not know (its `conversation` event lost too) comes with
        // the list, its last message and unread count with it.
        if ((f.conversations as string[]).some((id) => !this.conversations.has(id))) {
          void this.req({ type: "conversations", limit: 200 })
            .then((reply) => {
              for (const c of reply.conversations as Conversation[]) this.putConversation(c);
              this.changed();
            })
            .catch(() => undefined);
        }
        break;
      case "typing": {
        const per = this.typing.get(f.conversation) ?? new Map<string, number>();
        if (f.active) per.set(f.user, Date.now() + TYPING_SHOWN_MS);
        else per.delete(f.user);
        this.typing.set(f.conversation, per);
        setTimeout(() => this.changed(), TYPING_SHOWN_MS + 50);
        break;
      }
      case "receipt": {
        const per = this.receipts.get(f.conversation) ?? new Map<string, string>();
        const held = per.get(f.user);
        if (!held || cmpId(f.up_to, held) > 0) per.set(f.user, f.up_to);
        this.receipts.set(f.conversation, per);
        break;
      }
      case "presence":
        this.presence.set(f.user, f.status);
        break;
      case "conversation": {
        const c = f.conversation as Conversation;
        const mine = c.members.some((m) => m.user === this.session.user);
        if (!mine) {
          this.conversations.delete(c.id);
          if (this.open === c.id) location.hash = "";
        } else {
          this.putConversation(c);
          void this.watchMembers().catch(() => undefined);
        }
        break;
      }
      case "membership": {
        const c = this.conversations.get(f.conversation);
        if (c) {
          const removed = new Set<string>(f.removed);
          c.members = c.members.filter((m) => !removed.has(m.user));
          for (const a of f.added as Member[]) {
            c.members = c.members.filter((m) => m.user !== a.user).concat(a);
          }
          c.member_count = f.member_count;
          if (removed.has(this.session.user)) this.conversations.delete(c.id);
        }
        break;
      }
      default:
        return;
    }
    this.changed();
  }

  /** Notes this user's new setting for conversation `id`. */
  setNotify(id: string, notify: Conversation["notify"]) {
    const c = this.conversations.get(id);
    if (c) {
      c.notify = notify;
      this.changed();
    }
  }

  private putConversation(c: Conversation) {
    const held = this.conversations.get(c.id);
    this.conversations.set(c.id, {
      ...held,
      ...c,
      last_message: c.last_message ?? held?.last_message ?? null,
      unread: c.unread ?? held?.unread ?? 0,
      mentions: c.mentions ?? held?.mentions ?? 0,
    });
    // Only where no messages are shown: a conversation's revision says how
    // far it has gone, not that the messages up to it are here (the list
    // and the messages may be read from different nodes in a takeover).
    // Noting it would start the catch-up past what it has to fetch.
    if (!this.messages.has(c.id)) this.noteRev(c.id, c.rev);
  }

  /** Follows `id` from revision `rev` for the SDK's catch-up. */
  private noteRev(id: string, rev: number | undefined) {
    if (rev !== undefined) this.client.sync.track(id, rev);
  }

  /** A reaction added or taken back: the one emoji's state, not the whole
   * message. Applied where that message is held, unless what is held is
   * already a later state of it (from a catch-up). */
  private putReaction(f: {
    conversation: string;
    message: string;
    rev: number;
    reaction: Reaction;
  }) {
    const apply = (m: Message): Message => {
      if (m.rev >= f.rev) return m;
      const at = m.reactions.findIndex((r) => r.emoji === f.reaction.emoji);
      let reactions: Reaction[];
      if (f.reaction.count === 0) reactions = m.reactions.filter((_, i) => i !== at);
      else if (at < 0) reactions = [...m.reactions, f.reaction];
      else reactions = m.reactions.map((r, i) => (i === at ? f.reaction : r));
      return { ...m, reactions, rev: f.rev };
    };
    const list = this.messages.get(f.conversation);
    const i = list ? this.indexOf(list, f.message) : -1;
    if (list && i < list.length && list[i].id === f.message) list[i] = apply(list[i]);
    const c = this.conversations.get(f.conversation);
    if (c?.last_message?.id === f.message) c.last_message = apply(c.last_message);
    this.noteRev(f.conversation, f.rev);
  }

  /** Where message `id` is, or would go, in `list` (ascending by id). */
  private indexOf(list: Message[], id: string): number {
    let lo = 0;
    let hi = list.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (cmpId(list[mid].id, id) < 0) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  /** Adds or replaces (by id, keeping the higher rev) a message;
   * `created` when, if new to this page, it counts as unread (a new
   * message's event, or a catch-up made while connected). */
  private putMessage(m: Message, created = false) {
    const list = this.messages.get(m.conversation);
    const c = this.conversations.get(m.conversation);
    let isNew = true;
    if (list) {
      const lo = this.indexOf(list, m.id);
      if (lo < list.length && list[lo].id === m.id) {
        isNew = false;
        if (m.rev >= list[lo].rev) list[lo] = m;
      } else if (lo > 0 || !this.older.get(m.conversation)) {
        // Inside or after the loaded window (not older than what is shown).
        list.splice(lo, 0, m);
      }
    } else if (c?.last_message) {
      // No messages loaded: the last one known says what is new, so that a
      // message both caught up and delivered live counts once.
      isNew = cmpId(m.id, c.last_message.id) > 0;
    }
    this.outbox = this.outbox.filter(
      (o) => !(o.conversation === m.conversation && o.client_msg_id === m.client_msg_id && m.sender === this.session.user),
    );
    this.noteRev(m.conversation, m.rev);
    if (c) {
      const last = c.last_message;
      const newer = !last || cmpId(m.id, last.id) > 0 || (m.id === last.id && m.rev >= last.rev);
      if (newer) c.last_message = m;
      if (created && isNew && m.sender !== this.session.user) {
        if (this.open === m.conversation && document.visibilityState === "visible") {
          this.markRead(m.conversation);
        } else {
          c.unread += 1;
          if (m.mentions.includes(this.session.user)) c.mentions += 1;
        }
      }
    }
  }

  // --- actions -----------------------------------------------------------------

  /** Shows a conversation: its newest page, then marks it read. */
  async show(id: string | null) {
    this.open = id;
    this.changed();
    if (!id) return;
    if (!this.messages.has(id)) await this.load(id);
    this.markRead(id);
  }

  private async load(id: string) {
    try {
      const reply = await this.req({ type: "history", conversation: id, limit: PAGE });
      this.messages.set(id, reply.messages);
      this.older.set(id, reply.more);
      for (const m of reply.messages as Message[]) this.noteRev(id, m.rev);
      this.error = null;
    } catch (e) {
      if (e instanceof RequestError && e.code !== "unavailable") this.error = e.message;
    }
    this.changed();
  }

  /** One more page of older messages; false when there is none. */
  async loadOlder(id: string): Promise<boolean> {
    const list = this.messages.get(id);
    if (!list || !this.older.get(id)) return false;
    const before = list[0]?.id;
    const reply = await this.req({
      type: "history",
      conversation: id,
      ...(before ? { before } : {}),
      limit: PAGE,
    });
    const fresh = (reply.messages as Message[]).filter((m) => !before || cmpId(m.id, before) < 0);
    this.messages.set(id, [...fresh, ...(this.messages.get(id) ?? [])]);
    this.older.set(id, reply.more);
    this.changed();
    return true;
  }

  markRead(id: string) {
    const c = this.conversations.get(id);
    const list = this.messages.get(id);
    const last = list?.[list.length - 1];
    if (c) {
      c.unread = 0;
      c.mentions = 0;
    }
    if (!last || this.readSent.get(id) === last.id) return;
    this.readSent.set(id, last.id);
    this.req({ type: "read", conversation: id, up_to: last.id }).catch(() => {
      this.readSent.delete(id);
    });
  }

  /** Sends a message (with `files`, uploads done: their ids go with every retry). */
  send(conversation: string, body: string, reply_to?: string, files?: { id?: string; name: string }[]) {
    const ids = files?.flatMap((f) => (f.id ? [f.id] : []));
    const o: Outgoing = { client_msg_id: newClientMsgId(), conversation, body, reply_to };
    if (ids?.length) {
      o.attachments = ids;
      o.names = files!.filter((f) => f.id).map((f) => f.name);
    }
    this.outbox.push(o);
    this.typingSent.delete(conversation);
    this.client.notify({ type: "typing", conversation, active: false });
    this.changed();
    // The SDK's outbox sends it until it is stored, with the same
    // `client_msg_id` after a lost connection or a moving owner.
    this.client.send(conversation, body, { clientMsgId: o.client_msg_id, replyTo: reply_to, attachments: o.attachments }).then(
      (m) => {
        this.putMessage(m as Message);
        this.changed();
      },
      (e) => {
        o.error = (e as Error).message;
        this.changed();
      },
    );
  }

  /** Gives up an unsent message. */
  discard(o: Outgoing) {
    this.outbox = this.outbox.filter((x) => x !== o);
    this.changed();
  }

  typingNow(conversation: string) {
    const last = this.typingSent.get(conversation) ?? 0;
    if (Date.now() - last < TYPING_RESEND_MS) return;
    this.typingSent.set(conversation, Date.now());
    this.client.notify({ type: "typing", conversation, active: true });
  }

  whoIsTyping(conversation: string): string[] {
    const per = this.typing.get(conversation);
    if (!per) return [];
    const now = Date.now();
    return [...per.entries()].filter(([u, until]) => until > now && u !== this.session.user).map(([u]) => u);
  }

  /** Members other than me who have read up to `id` or past it. */
  seenBy(conversation: string, id: string): string[] {
    const per = this.receipts.get(conversation);
    if (!per) return [];
    return [...per.entries()].filter(([u, upTo]) => u !== this.session.user && cmpId(upTo, id) >= 0).map(([u]) => u);
  }

  /** A change of this user's; the answer's message counts for the SDK's
   * gap check like an event's. */
  private async ask(frame: Request): Promise<any> {
    try {
      const reply = await this.req(frame);
      if (reply.message) this.client.sync.observe({ type: "message_updated", message: reply.message });
      this.error = null;
      return reply;
    } catch (e) {
      this.error = (e as Error).message;
      this.changed();
      throw e;
    }
  }

  async edit(m: Message, body: string) {
    const reply = await this.ask({ type: "edit", conversation: m.conversation, message: m.id, body });
    this.putMessage(reply.message);
    this.changed();
  }

  async remove(m: Message) {
    const reply = await this.ask({ type: "delete", conversation: m.conversation, message: m.id });
    this.putMessage(reply.message);
    this.changed();
  }

  async react(m: Message, emoji: string) {
    const on = !m.reactions.some((r) => r.emoji === emoji && r.users.includes(this.session.user));
    const reply = await this.ask({ type: "react", conversation: m.conversation, message: m.id, emoji, on });
    this.putMessage(reply.message);
    this.changed();
  }

  async create(kind: Conversation["kind"], members: string[], title?: string): Promise<string> {
    const reply = await this.ask({ type: "create", kind, members, ...(title ? { title } : {}) });
    this.putConversation({ unread: 0, mentions: 0, ...reply.conversation });
    await this.watchMembers().catch(() => undefined);
    this.changed();
    return reply.conversation.id;
  }

  async invite(conversation: string, users: string[]) {
    const reply = await this.ask({ type: "invite", conversation, users });
    this.putConversation(reply.conversation);
    await this.watchMembers().catch(() => undefined);
    this.changed();
  }

  async kick(conversation: string, user: string) {
    const reply = await this.ask({ type: "kick", conversation, user });
    this.putConversation(reply.conversation);
    this.changed();
  }

  async leave(conversation: string) {
    await this.ask({ type: "leave", conversation });
    this.conversations.delete(conversation);
    this.messages.delete(conversation);
    this.changed();
  }

  /** Conversations, newest activity first. */
  list(): Conversation[] {
    const activity = (c: Conversation) => c.last_message?.ts ?? c.created_at;
    return [...this.conversations.values()].sort((a, b) => activity(b) - activity(a));
  }

  title(c: Conversation): string {
    if (c.title) return c.title;
    const others = c.members.map((m) => m.user).filter((u) => u !== this.session.user);
    return others.join(", ") || c.id;
  }
}
