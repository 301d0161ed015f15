import { useEffect, useLayoutEffect, useMemo, useReducer, useRef, useState } from "preact/hooks";
import { Session, adoptSignedIn, clearSession, loadSession, logout } from "./api";
import { Chat, Conversation, Message, Outgoing } from "./chat";
import type { Ended } from "@chat-cluster/sdk";
import { Bell, SettingsPage, VerifyEmail } from "./settings";
import { registerWorker } from "./notify";
import { ResetPassword, SignIn } from "./signin";
import { Avatar, MessageMenu, ProfilePage, SecurityPage, UserSearch } from "./people";
import { AttachButton, Attachments, UploadChips, Uploads, pasteFiles, summary, useDropZone, useUploads } from "./attachments";
import { SearchBox } from "./search";

/** What `#/settings`, `#/profile` and `#/security` route to: no
 * conversation id holds a NUL. */
const SETTINGS = "\u0000settings";
const PROFILE = "\u0000profile";
const SECURITY = "\u0000security";
const PAGES: Record<string, string> = { "#/settings": SETTINGS, "#/profile": PROFILE, "#/security": SECURITY };

/** `#/c/<id>` → the conversation id; a page's hash → its key. */
function route(): string | null {
  if (PAGES[location.hash]) return PAGES[location.hash];
  const m = location.hash.match(/^#\/c\/(.+)$/);
  return m ? decodeURIComponent(m[1]) : null;
}

export function App() {
  // Mailed links open these pages: no sign-in needed.
  if (location.pathname === "/verify-email") return <VerifyEmail />;
  if (location.pathname === "/reset-password") return <ResetPassword />;
  return <Main />;
}

function Main() {
  // An OpenID Connect sign-in comes back with the tokens in the fragment.
  const [session, setSession] = useState<Session | null>(() => adoptSignedIn() ?? loadSession());
  const [suspended, setSuspended] = useState(false);
  if (!session) {
    return (
      <SignIn
        suspended={suspended}
        onIn={(s) => {
          setSuspended(false);
          setSession(s);
        }}
      />
    );
  }
  return (
    <Signed
      key={session.user}
      session={session}
      onOut={(why) => {
        setSuspended(why === "suspended");
        setSession(null);
      }}
    />
  );
}

function useChat(chat: Chat) {
  const [, bump] = useReducer((n: number, _: void) => n + 1, 0);
  useEffect(() => chat.subscribe(() => bump()), [chat]);
}

function Signed({ session, onOut }: { session: Session; onOut: (why?: Ended) => void }) {
  const chat = useMemo(
    () =>
      new Chat(session, (why) => {
        if (why === "suspended") {
          // Revoke this login too (the server may refuse: signed out here either way).
          void logout(chat.session);
        } else {
          clearSession();
        }
        onOut(why);
      }),
    [session.user],
  );
  useChat(chat);
  const [open, setOpen] = useState<string | null>(route());
  useEffect(() => {
    chat.start();
    void registerWorker();
    const onHash = () => setOpen(route());
    addEventListener("hashchange", onHash);
    const onVisible = () => chat.open && document.visibilityState === "visible" && chat.markRead(chat.open);
    document.addEventListener("visibilitychange", onVisible);
    return () => {
      chat.stop();
      removeEventListener("hashchange", onHash);
      document.removeEventListener("visibilitychange", onVisible);
    };
  }, [chat]);
  useEffect(() => {
    void chat.show(open && open.startsWith("\u0000") ? null : open);
  }, [chat, open]);
  const conversation = open ? chat.conversations.get(open) : undefined;
  return (
    <div class={`shell ${open ? "has-open" : ""}`}>
      <header class="top">
        <strong>Chat</strong>
        <a class="me" data-testid="profile-link" href="#/profile">
          <Avatar user={chat.session.user} />
          {chat.session.user}
        </a>
        <a data-testid="settings-link" href="#/settings">
          Settings
        </a>
        <a data-testid="security-link" href="#/security">
          Security
        </a>
        <span
          data-testid="connection"
          data-state={chat.conn === "open" ? "open" : "reconnecting"}
          class={`conn ${chat.conn}`}
          role="status"
        >
          {chat.conn === "open" ? "connected" : "reconnecting…"}
        </span>
        <button
          type="button"
          onClick={() => {
            chat.stop();
            void logout(chat.session).then(() => onOut());
          }}
        >
          Sign out
        </button>
      </header>
      {chat.error && (
        <p class="error banner" role="alert">
          {chat.error}
        </p>
      )}
      <nav class="list" aria-label="Conversations">
        <SearchBox chat={chat} />
        <NewConversation chat={chat} />
        <ul>
          {chat.list().map((c) => (
            <ListItem key={c.id} chat={chat} c={c} active={c.id === open} />
          ))}
        </ul>
      </nav>
      <section class="pane">
        {open === SETTINGS ? (
          <SettingsPage chat={chat} />
        ) : open === PROFILE ? (
          <ProfilePage chat={chat} />
        ) : open === SECURITY ? (
          <SecurityPage chat={chat} />
        ) : open && conversation ? (
          <ConversationView key={open} chat={chat} c={conversation} />
        ) : (
          <p class="empty">{open ? "Loading…" : "Pick a conversation or start one."}</p>
        )}
      </section>
    </div>
  );
}

function ListItem({ chat, c, active }: { chat: Chat; c: Conversation; active: boolean }) {
  const last = c.last_message;
  return (
    <li>
      <a
        data-testid="conversation"
        data-id={c.id}
        href={`#/c/${encodeURIComponent(c.id)}`}
        class={active ? "active" : ""}
      >
        <span class="title">{chat.title(c)}</span>
        <span class="last">{last ? (last.deleted ? "message deleted" : `${last.sender}: ${summary(last)}`) : "no messages yet"}</span>
        <span data-testid="unread" class="badge" aria-label={c.unread ? `${c.unread} unread` : undefined}>
          {c.unread ? String(c.unread) : ""}
        </span>
        {c.mentions > 0 && <span class="badge mention">@{c.mentions}</span>}
      </a>
    </li>
  );
}

function NewConversation({ chat }: { chat: Chat }) {
  const [kind, setKind] = useState<Conversation["kind"]>("direct");
  const [members, setMembers] = useState("");
  const [title, setTitle] = useState("");
  return (
    <form
      class="new"
      onSubmit={async (e) => {
        e.preventDefault();
        const users = members
          .split(/[\s,]+/)
          .map((u) => u.trim().toLowerCase())
          .filter(Boolean);
        if (!users.length) return;
        try {
          const id = await chat.create(kind, users, kind === "direct" ? undefined : title.trim() || undefined);
          setMembers("");
          setTitle("");
          location.hash = `#/c/${encodeURIComponent(id)}`;
        } catch {
          // shown in the banner
        }
      }}
    >
      <select aria-label="Kind" value={kind} onChange={(e) => setKind(e.currentTarget.value as Conversation["kind"])}>
        <option value="direct">Direct</option>
        <option value="group">Group</option>
        <option value="channel">Channel</option>
      </select>
      <input
        data-testid="new-members"
        aria-label={kind === "direct" ? "User" : "Members (comma separated)"}
        placeholder={kind === "direct" ? "username" : "usernames, comma separated"}
        value={members}
        onInput={(e) => setMembers(e.currentTarget.value)}
      />
      <UserSearch
        chat={chat}
        query={members}
        pick={(id) => setMembers(members.replace(/[^\s,]*$/, "") + id + (kind === "direct" ? "" : ", "))}
      />
      {kind !== "direct" && (
        <input aria-label="Title" placeholder="title" value={title} onInput={(e) => setTitle(e.currentTarget.value)} />
      )}
      <button data-testid="start" type="submit">
        Start
      </button>
    </form>
  );
}

function ConversationView({ chat, c }: { chat: Chat; c: Conversation }) {
  const messages = chat.messages.get(c.id) ?? [];
  const pending = chat.outbox.filter((o) => o.conversation === c.id);
  const typing = chat.whoIsTyping(c.id);
  const me = chat.session.user;
  const myRole = c.members.find((m) => m.user === me)?.role;
  const scroller = useRef<HTMLDivElement>(null);
  const stick = useRef(true);
  const before = useRef<{ height: number; top: number } | null>(null);
  const [replyTo, setReplyTo] = useState<Message | null>(null);
  const [editing, setEditing] = useState<Message | null>(null);
  // Files dropped anywhere on the conversation go to the composer.
  const files = useUploads(chat);
  const canWrite = c.kind !== "channel" || myRole === "owner" || myRole === "admin";
  const drop = useDropZone(files, canWrite && !editing);

  // Stay at the bottom when there; keep the view still when older
  // messages are added above it.
  useLayoutEffect(() => {
    const el = scroller.current;
    if (!el) return;
    const focused = chat.focus && el.querySelector(`[data-id="${chat.focus}"]`);
    if (focused) {
      focused.scrollIntoView({ block: "center" });
      stick.current = false;
      before.current = null;
      return;
    }
    if (before.current) {
      el.scrollTop = el.scrollHeight - before.current.height + before.current.top;
      before.current = null;
    } else if (stick.current) {
      el.scrollTop = el.scrollHeight;
    }
  });
  const onScroll = async () => {
    const el = scroller.current;
    if (!el) return;
    stick.current = el.scrollHeight - el.scrollTop - el.clientHeight < 40;
    if (el.scrollTop < 60 && chat.older.get(c.id) && !before.current) {
      before.current = { height: el.scrollHeight, top: el.scrollTop };
      const more = await chat.loadOlder(c.id).catch(() => false);
      if (!more) before.current = null;
    }
  };

  const lastMine = [...messages].reverse().find((m) => m.sender === me && !m.deleted);
  const seen = lastMine ? chat.seenBy(c.id, lastMine.id) : [];
  const byId = new Map(messages.map((m) => [m.id, m]));
  return (
    <div class={`conversation ${drop.dragging ? "dragging" : ""}`} {...drop.props}>
      <header class="conv-head">
        <a class="back" href="#/" aria-label="Back to the list">
          ←
        </a>
        <h2>{chat.title(c)}</h2>
        <Bell chat={chat} c={c} />
        <ul class="members" aria-label="Members">
          {c.members.map((m) => (
            <li key={m.user}>
              <span
                data-testid="presence"
                data-user={m.user}
                data-status={m.user === me || chat.presence.get(m.user) === "online" ? "online" : "offline"}
                class={`dot ${m.user === me || chat.presence.get(m.user) === "online" ? "online" : ""}`}
                title={m.user === me || chat.presence.get(m.user) === "online" ? "online" : "offline"}
              />
              {m.user}
              {m.role !== "member" && <em data-testid="role"> {m.role}</em>}
              {myRole === "owner" && m.user !== me && c.kind !== "direct" && (
                <select
                  class="small"
                  data-testid="role-select"
                  data-user={m.user}
                  aria-label={`Role of ${m.user}`}
                  value={m.role}
                  onChange={(e) => {
                    const role = e.currentTarget.value;
                    if (role === "owner" && !confirm(`Hand ownership of this conversation to ${m.user}? You become an admin.`)) return;
                    void chat.request("PUT", `/v1/conversations/${encodeURIComponent(c.id)}/members/${encodeURIComponent(m.user)}`, { role }).catch(() => undefined);
                  }}
                >
                  <option value="member">member</option>
                  <option value="admin">admin</option>
                  <option value="owner">owner</option>
                </select>
              )}
              {myRole && myRole !== "member" && m.user !== me && c.kind !== "direct" && (
                <button type="button" class="small" onClick={() => void chat.kick(c.id, m.user).catch(() => undefined)}>
                  remove
                </button>
              )}
            </li>
          ))}
        </ul>
        {c.kind !== "direct" && <Members chat={chat} c={c} canInvite={myRole === "owner" || myRole === "admin"} />}
      </header>
      <div class="messages" ref={scroller} onScroll={() => void onScroll()} role="log" aria-live="polite">
        {chat.older.get(c.id) && <p class="more">Scroll up for older messages</p>}
        {messages.map((m) => (
          <MessageRow
            key={m.id}
            chat={chat}
            m={m}
            quoted={m.reply_to ? byId.get(m.reply_to) : undefined}
            mine={m.sender === me}
            onReply={() => setReplyTo(m)}
            onEdit={() => setEditing(m)}
          />
        ))}
        {pending.map((o) => (
          <PendingRow key={o.client_msg_id} chat={chat} o={o} />
        ))}
      </div>
      <p data-testid="typing" class="typing" hidden={typing.length === 0} aria-live="polite">
        {typing.length ? `${typing.join(", ")} ${typing.length === 1 ? "is" : "are"} typing…` : ""}
      </p>
      {seen.length > 0 && (
        <p class="seen" data-testid="seen">
          Seen by {seen.join(", ")}
        </p>
      )}
      <Composer
        chat={chat}
        c={c}
        files={files}
        canWrite={canWrite}
        replyTo={replyTo}
        editing={editing}
        done={() => {
          setReplyTo(null);
          setEditing(null);
          stick.current = true;
        }}
      />
    </div>
  );
}

function Members({ chat, c, canInvite }: { chat: Chat; c: Conversation; canInvite: boolean }) {
  const [who, setWho] = useState("");
  return (
    <div class="member-actions">
      {canInvite && (
        <form
          onSubmit={async (e) => {
            e.preventDefault();
            const users = who.split(/[\s,]+/).map((u) => u.trim().toLowerCase()).filter(Boolean);
            if (!users.length) return;
            await chat.invite(c.id, users).catch(() => undefined);
            setWho("");
          }}
        >
          <input aria-label="Invite users" placeholder="invite username" value={who} onInput={(e) => setWho(e.currentTarget.value)} />
          <button type="submit">Invite</button>
        </form>
      )}
      <button
        type="button"
        onClick={async () => {
          await chat.leave(c.id).catch(() => undefined);
          location.hash = "#/";
        }}
      >
        Leave
      </button>
    </div>
  );
}

const QUICK = ["👍", "❤️", "😂", "🎉"];

function MessageRow(props: {
  chat: Chat;
  m: Message;
  quoted?: Message;
  mine: boolean;
  onReply: () => void;
  onEdit: () => void;
}) {
  const { chat, m, quoted, mine } = props;
  const me = chat.session.user;
  const mentioned = m.mentions.includes(me);
  return (
    <article
      data-testid="message"
      data-id={m.id}
      data-focused={chat.focus === m.id ? "yes" : undefined}
      class={`msg ${mine ? "mine" : ""} ${mentioned ? "mentioned" : ""} ${chat.focus === m.id ? "focused" : ""}`}
    >
      <header>
        <strong>{m.sender}</strong>
        <time dateTime={new Date(m.ts).toISOString()}>{new Date(m.ts).toLocaleTimeString()}</time>
        {m.edited_at && !m.deleted && <span class="edited">(edited)</span>}
      </header>
      {quoted && (
        <blockquote class="quote">
          {quoted.sender}: {quoted.deleted ? "message deleted" : quoted.body}
        </blockquote>
      )}
      {m.deleted ? (
        <p class="deleted">message deleted</p>
      ) : (
        m.body && <p class="body">{renderBody(m.body, m.mentions)}</p>
      )}
      {!m.deleted && m.attachments?.length ? <Attachments list={m.attachments} /> : null}
      {!m.deleted && (
        <div class="reactions">
          {m.reactions.map((r) => (
            <button
              type="button"
              key={r.emoji}
              class={`chip ${r.users.includes(me) ? "on" : ""}`}
              aria-pressed={r.users.includes(me)}
              title={r.users.join(", ")}
              onClick={() => void chat.react(m, r.emoji).catch(() => undefined)}
            >
              {r.emoji} {r.count}
            </button>
          ))}
          <span class="actions">
            {QUICK.filter((q) => !m.reactions.some((r) => r.emoji === q)).map((q) => (
              <button type="button" class="small" aria-label={`React ${q}`} onClick={() => void chat.react(m, q).catch(() => undefined)}>
                {q}
              </button>
            ))}
            <button type="button" class="small" onClick={props.onReply}>
              Reply
            </button>
            {mine && (
              <button type="button" class="small" onClick={props.onEdit}>
                Edit
              </button>
            )}
            {mine && (
              <button type="button" class="small" onClick={() => void chat.remove(m).catch(() => undefined)}>
                Delete
              </button>
            )}
            {!mine && <MessageMenu chat={chat} conversation={m.conversation} id={m.id} sender={m.sender} />}
          </span>
        </div>
      )}
    </article>
  );
}

/** The body with `@member` mentions highlighted. */
function renderBody(body: string, mentions: string[]) {
  if (!mentions.length) return body;
  const parts = body.split(/(@[A-Za-z0-9_.:-]+)/g);
  return parts.map((p) =>
    p.startsWith("@") && mentions.some((u) => p.slice(1).startsWith(u)) ? <mark class="mention">{p}</mark> : p,
  );
}

function PendingRow({ chat, o }: { chat: Chat; o: Outgoing }) {
  return (
    <article data-testid="message" data-pending="" class="msg mine pending">
      <header>
        <strong>{chat.session.user}</strong>
        <span class="status">{o.error ? `not sent: ${o.error}` : "sending…"}</span>
      </header>
      {o.body && <p class="body">{o.body}</p>}
      {o.names && <p class="files">📎 {o.names.join(", ")}</p>}
      {o.error && (
        <button type="button" class="small" onClick={() => chat.discard(o)}>
          Discard
        </button>
      )}
    </article>
  );
}

function Composer(props: {
  chat: Chat;
  c: Conversation;
  files: Uploads;
  canWrite: boolean;
  replyTo: Message | null;
  editing: Message | null;
  done: () => void;
}) {
  const { chat, c, files, replyTo, editing, done } = props;
  const [text, setText] = useState("");
  const input = useRef<HTMLTextAreaElement>(null);
  // A message sent while files still upload: it goes once they are done.
  const [held, setHeld] = useState<{ body: string; reply_to?: string } | null>(null);
  // Before the browser paints, not after: text typed right after "Edit"
  // (a fast user, a test) must not be overwritten by the old body.
  useLayoutEffect(() => {
    if (editing) setText(editing.body);
    input.current?.focus();
  }, [editing, replyTo]);
  useEffect(() => {
    if (!held || files.busy) return;
    if (held.body || files.ready.length) {
      chat.send(c.id, held.body, held.reply_to, files.ready);
      files.clear();
    }
    setHeld(null);
  }, [held, files.busy]);
  const canSend = editing ? !!text.trim() : !held && (!!text.trim() || files.ready.length > 0);
  const submit = () => {
    const body = text.trim();
    if (!canSend) return;
    if (editing) {
      void chat.edit(editing, body).catch(() => undefined);
    } else if (files.busy) {
      setHeld({ body, reply_to: replyTo?.id });
    } else {
      chat.send(c.id, body, replyTo?.id, files.ready);
      files.clear();
    }
    setText("");
    done();
  };
  if (!props.canWrite) return <p class="readonly">Only owners and admins write here.</p>;
  return (
    <form
      class="composer"
      onSubmit={(e) => {
        e.preventDefault();
        submit();
      }}
    >
      {(replyTo || editing) && (
        <p class="context">
          {editing ? "Editing your message" : `Replying to ${replyTo!.sender}: ${replyTo!.body.slice(0, 80)}`}
          <button type="button" class="small" onClick={() => { setText(""); done(); }}>
            Cancel
          </button>
        </p>
      )}
      <textarea
        data-testid="composer"
        ref={input}
        aria-label="Message"
        placeholder="Write a message (Enter sends, Shift+Enter: new line)"
        rows={2}
        value={text}
        onInput={(e) => {
          setText(e.currentTarget.value);
          chat.typingNow(c.id);
        }}
        onKeyDown={(e) => {
          if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
            e.preventDefault();
            submit();
          }
        }}
        onPaste={(e) => !editing && pasteFiles(files, e)}
      />
      {!editing && <AttachButton files={files} />}
      <button type="submit" disabled={!canSend}>
        Send
      </button>
      {held && (
        <p class="context" role="status">
          Sending once the files are uploaded…
          <button type="button" class="small" onClick={() => { setText(held.body); setHeld(null); }}>
            Cancel
          </button>
        </p>
      )}
      {!editing && <UploadChips files={files} />}
    </form>
  );
}
