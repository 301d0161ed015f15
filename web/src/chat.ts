// What the page knows of the user's chats, kept in step with the server:
// the conversation list, the loaded part of each history, what is being
// sent, typing, receipts and presence. Components read it and re-render on
// `subscribe`.

import { ChatSocket, ConnState, Ended, RequestError } from "./socket";
import { Session, loadSession, nodes, readJson, refresh, send } from "./api";

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
/** Past the node's wait for owners (2 s by default), with a margin. */
const RESYNC_AFTER_MS = 3000;
/** First wait before asking again when a catch-up met a conversation
 * whose owner is moving (`unavailable`); doubled up to 5 s. */
const RESYNC_RETRY_MS = 250;

/** A catch-up due for a conversation: from which revision (below the
 * noted one after a gap), and whether new messages it brings count as
 * unread (they do when it runs while connected: nothing else will count
 * them; after a reconnect the list's `unread` has). */
interface Due {
  fromRev?: number;
  count: boolean;
}

function merge(a: Due | null, b: Due): Due {
  if (!a) return b;
  const froms = [a.fromRev, b.fromRev].filter((r): r is number => r !== undefined);
  return { fromRev: froms.length ? Math.min(...froms) : undefined, count: a.count || b.count };
}

function randomKey(): string {
  const bytes = new Uint8Array(12);
  crypto.getRandomValues(bytes);
  return "w" + Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

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
  /** The highest revision seen per conversation: where `changes` resumes. */
  revs = new Map<string, number>();
  /** The conversation on screen. */
  open: string | null = null;
  error: string | null = null;

  private socket: ChatSocket;
  private listeners = new Set<() => void>();
  private typingSent = new Map<string, number>();
  private refreshing: Promise<Session> | null = null;
  private refreshTimer: number | undefined;
  private readSent = new Map<string, string>();
  private resyncTimer: number | undefined;
  /** Conversations with a catch-up running, each with the one due after
   * it (null when none): a `catch_up` or a gap that comes during a
   * catch-up may announce what its requests were already past, so it
   * runs once more, but never two at a time. */
  private resyncing = new Map<string, Due | null>();

  constructor(
    session: Session,
    /** Signed out by the server: the token refused, or the account suspended. */
    private signedOut: (why: Ended) => void,
  ) {
    this.session = session;
    this.socket = new ChatSocket(
      nodes,
      () => this.token(),
      (f) => this.event(f),
      (s) => {
        this.conn = s;
        if (s === "open") void this.synced();
        this.changed();
      },
      (why) => this.signedOut(why),
    );
    this.scheduleRefresh();
  }

  start() {
    this.socket.start();
  }

  stop() {
    this.socket.stop();
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

  /** Brings everything up to date after a (re)connect: the list, what was
   * missed in the loaded conversations, presence, then the outbox. */
  private async synced() {
    try {
      const reply = await this.socket.request({ type: "conversations", limit: 200 });
      for (const c of reply.conversations as Conversation[]) this.putConversation(c);
      await this.watchMembers();
      for (const id of this.messages.keys()) await this.reconnectCatchUp(id);
      if (this.open && !this.messages.has(this.open)) await this.load(this.open);
      // What came in while away is on screen now: read.
      if (this.open && document.visibilityState === "visible") this.markRead(this.open);
      // A node lets a client in before a conversation's (new) owner has
      // heard of it when the owner is slow to answer (taking over from a
      // node that died): what that owner accepts before it has heard
      // arrives neither live nor in the catch-up above. Once more, later.
      clearTimeout(this.resyncTimer);
      this.resyncTimer = window.setTimeout(() => {
        for (const id of this.messages.keys()) this.resync(id);
      }, RESYNC_AFTER_MS);
      this.error = null;
    } catch (e) {
      if (e instanceof RequestError && e.code !== "unavailable") this.error = e.message;
    }
    this.changed();
    for (const o of [...this.outbox]) void this.deliver(o);
  }

  private async watchMembers() {
    const users = new Set<string>();
    for (const c of this.conversations.values()) {
      for (const m of c.members) if (m.user !== this.session.user) users.add(m.user);
    }
    const list = [...users].slice(0, 1000);
    if (!list.length) return;
    const reply = await this.socket.request({ type: "watch", users: list });
    for (const p of reply.presence ?? []) this.presence.set(p.user, p.status);
  }

  /** New messages with `history after`, then edits, deletes and reactions
   * of the ones already shown with `changes`; of a conversation whose
   * messages are not loaded, `changes` alone (its last message, unread
   * count and revision). `count`: new messages count as unread. */
  private async catchUp(id: string, fromRev?: number, count = false) {
    // Taken before `history`: the messages it brings note their revisions,
    // which are past the edits, deletes and reactions still to fetch. From
    // the revision before a gap, not the one noted since: the message that
    // showed the gap has already moved the noted one past it.
    let rev = this.revs.get(id) ?? 0;
    if (fromRev !== undefined && fromRev < rev) rev = fromRev;
    const start = rev;
    try {
      await this.fetchMissed(id, rev, count);
    } catch (e) {
      // Some of it may be in and noted (`history` notes the newest
      // revisions first): the next catch-up starts where this one did.
      if ((this.revs.get(id) ?? 0) > start) this.revs.set(id, start);
      throw e;
    }
  }

  private async fetchMissed(id: string, rev: number, count: boolean) {
    const put = (m: Message) => this.putMessage(m, false, count && !m.deleted);
    const list = this.messages.get(id);
    if (list) {
      let after = list.length ? list[list.length - 1].id : undefined;
      for (;;) {
        const reply = await this.socket.request({
          type: "history",
          conversation: id,
          ...(after ? { after } : {}),
          limit: 200,
        });
        for (const m of reply.messages as Message[]) put(m);
        if (!reply.more || !reply.messages.length) break;
        after = reply.messages[reply.messages.length - 1].id;
      }
    } else if (!this.conversations.has(id)) {
      // Not in the list (its `conversation` event lost too): the list
      // brings it, with its last message and unread count, as after a
      // reconnect.
      const reply = await this.socket.request({ type: "conversations", limit: 200 });
      for (const c of reply.conversations as Conversation[]) this.putConversation(c);
      return;
    }
    for (;;) {
      const reply = await this.socket.request({ type: "changes", conversation: id, after_rev: rev, limit: 200 });
      for (const m of reply.messages as Message[]) put(m);
      if (!reply.more || !reply.messages.length) {
        this.noteRev(id, reply.rev);
        break;
      }
      rev = reply.messages[reply.messages.length - 1].rev;
    }
  }

  /** The reconnect's catch-up of one conversation, its failure the
   * caller's; one already running (a `catch_up` came first) covers it with
   * one more run after it. */
  private async reconnectCatchUp(id: string) {
    if (this.resyncing.has(id)) {
      this.resyncing.set(id, merge(this.resyncing.get(id) ?? null, { count: false }));
      return;
    }
    this.resyncing.set(id, null);
    try {
      await this.catchUp(id);
    } finally {
      const due = this.resyncing.get(id) ?? null;
      this.resyncing.delete(id);
      if (due) this.resync(id, due.fromRev, due.count);
    }
  }

  /** A catch-up of one conversation; while one runs, one more after it. */
  private resync(id: string, fromRev?: number, count = false) {
    // Disconnected: the reconnect catches everything up.
    if (this.conn !== "open") return;
    const due: Due = { fromRev, count };
    if (this.resyncing.has(id)) {
      this.resyncing.set(id, merge(this.resyncing.get(id) ?? null, due));
      return;
    }
    this.resyncing.set(id, null);
    void this.resyncLoop(id, due);
  }

  private async resyncLoop(id: string, first: Due) {
    let due: Due | null = first;
    let failures = 0;
    while (due && this.conn === "open") {
      const run: Due = due;
      try {
        await this.catchUp(id, run.fromRev, run.count);
        failures = 0;
        due = this.resyncing.get(id) ?? null;
        this.resyncing.set(id, null);
      } catch (e) {
        // `unavailable` while connected: the conversation's owner is
        // moving (taking over from a node that died, which is when a
        // `catch_up` comes); what was missed is stored, and the new owner
        // serves it once it has taken over: ask again.
        if (!(e instanceof RequestError && e.code === "unavailable")) break;
        const wait = Math.min(5000, RESYNC_RETRY_MS * 2 ** failures);
        failures += 1;
        await new Promise((resolve) => setTimeout(resolve, wait));
        due = merge(this.resyncing.get(id) ?? null, run);
        this.resyncing.set(id, null);
      }
      this.changed();
    }
    this.resyncing.delete(id);
    if (this.open === id && document.visibilityState === "visible") this.markRead(id);
    this.changed();
  }

  // --- events ------------------------------------------------------------------

  private event(f: any) {
    switch (f.type) {
      case "message":
      case "message_updated":
        this.putMessage(f.message as Message, true, f.type === "message");
        break;
      case "reaction":
        this.putReaction(f);
        break;
      case "catch_up":
        // The node cannot vouch that every change of these reached this
        // connection live (an owner confirmed late, or changed).
        for (const id of f.conversations as string[]) this.resync(id, undefined, true);
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

  private noteRev(id: string, rev: number | undefined) {
    if (rev !== undefined && rev > (this.revs.get(id) ?? 0)) this.revs.set(id, rev);
  }

  /** A revision seen live (an event, or the answer to this client's own
   * change): revisions count every change of a conversation, so one more
   * than one past the last seen means something was missed; fetch it. The
   * answer to our own send counts too: noting its rev without the check
   * would step over an event lost just before it (a reconnect during an
   * owner's takeover), and the next events would show no gap. */
  private liveRev(conversation: string, rev: number) {
    const known = this.revs.get(conversation) ?? 0;
    if (known > 0 && rev > known + 1 && this.messages.has(conversation)) {
      this.resync(conversation, known, true);
    }
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
    this.liveRev(f.conversation, f.rev);
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

  /** Adds or replaces (by id, keeping the higher rev) a message; `live`
   * for anything not read by a catch-up (events, and the answers to this
   * client's own changes); `created` when, if new to this page, it counts
   * as unread (a new message's event, or a catch-up made while connected). */
  private putMessage(m: Message, live = false, created = false) {
    if (live) this.liveRev(m.conversation, m.rev);
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
      const reply = await this.socket.request({ type: "history", conversation: id, limit: PAGE });
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
    const reply = await this.socket.request({
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
    this.socket.request({ type: "read", conversation: id, up_to: last.id }).catch(() => {
      this.readSent.delete(id);
    });
  }

  /** Sends a message (with `files`, uploads done: their ids go with every retry). */
  send(conversation: string, body: string, reply_to?: string, files?: { id?: string; name: string }[]) {
    const ids = files?.flatMap((f) => (f.id ? [f.id] : []));
    const o: Outgoing = { client_msg_id: randomKey(), conversation, body, reply_to };
    if (ids?.length) {
      o.attachments = ids;
      o.names = files!.filter((f) => f.id).map((f) => f.name);
    }
    this.outbox.push(o);
    this.typingSent.delete(conversation);
    this.socket.notify({ type: "typing", conversation, active: false });
    this.changed();
    void this.deliver(o);
  }

  /** Sends `o` until it is stored: a lost connection leaves it in the
   * outbox, sent again after the reconnect with the same `client_msg_id`. */
  private async deliver(o: Outgoing) {
    if (!this.outbox.includes(o)) return;
    try {
      const reply = await this.socket.request({
        type: "send",
        conversation: o.conversation,
        client_msg_id: o.client_msg_id,
        body: o.body,
        ...(o.reply_to ? { reply_to: o.reply_to } : {}),
        ...(o.attachments?.length ? { attachments: o.attachments } : {}),
      });
      this.putMessage(reply.message, true);
    } catch (e) {
      const err = e as RequestError;
      if (err.code === "rate_limited") {
        setTimeout(() => void this.deliver(o), 1000);
      } else if (err.code === "unavailable") {
        // The owner is moving (or the store is down): try again while
        // connected; a lost connection resends everything when back.
        if (this.conn === "open") setTimeout(() => void this.deliver(o), 500);
      } else {
        o.error = err.message;
      }
    }
    this.changed();
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
    this.socket.notify({ type: "typing", conversation, active: true });
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

  private async ask(frame: Record<string, unknown>): Promise<any> {
    try {
      const reply = await this.socket.request(frame);
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
    this.putMessage(reply.message, true);
    this.changed();
  }

  async remove(m: Message) {
    const reply = await this.ask({ type: "delete", conversation: m.conversation, message: m.id });
    this.putMessage(reply.message, true);
    this.changed();
  }

  async react(m: Message, emoji: string) {
    const on = !m.reactions.some((r) => r.emoji === emoji && r.users.includes(this.session.user));
    const reply = await this.ask({ type: "react", conversation: m.conversation, message: m.id, emoji, on });
    this.putMessage(reply.message, true);
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
