import { useEffect, useLayoutEffect, useMemo, useReducer, useRef, useState } from "preact/hooks";
import { ApiError, Session, clearSession, loadSession, login, logout, register } from "./api";
import { Chat, Conversation, Message, Outgoing } from "./chat";
import { Ended } from "./socket";
import { Bell, SettingsPage, VerifyEmail } from "./settings";
import { registerWorker } from "./notify";

/** What `#/settings` routes to. */
const SETTINGS = "\u0000settings";

/** `#/c/<id>` → the conversation id; `#/settings` → [`SETTINGS`]. */
function route(): string | null {
  if (location.hash === "#/settings") return SETTINGS;
  const m = location.hash.match(/^#\/c\/(.+)$/);
  return m ? decodeURIComponent(m[1]) : null;
}

export function App() {
  // A mailed verification link opens this page: no sign-in needed.
  return location.pathname === "/verify-email" ? <VerifyEmail /> : <Main />;
}

function Main() {
  const [session, setSession] = useState<Session | null>(loadSession());
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

function SignIn({ onIn, suspended }: { onIn: (s: Session) => void; suspended: boolean }) {
  const [username, setUsername] = useState("");
  const [password, setPassword] = useState("");
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const go = async (how: "login" | "register") => {
    setBusy(true);
    setError(null);
    try {
      onIn(await (how === "login" ? login : register)(username.trim(), password));
    } catch (e) {
      setError(e instanceof ApiError ? e.message : String(e));
    } finally {
      setBusy(false);
    }
  };
  return (
    <main class="signin">
      <h1>Chat</h1>
      {suspended && (
        <p data-testid="suspended" class="error notice" role="alert">
          Your account is suspended. You were signed out; ask an operator to lift the suspension.
        </p>
      )}
      <form
        onSubmit={(e) => {
          e.preventDefault();
          void go("login");
        }}
      >
        <label>
          Username
          <input
            data-testid="username"
            autocomplete="username"
            value={username}
            onInput={(e) => setUsername(e.currentTarget.value)}
            required
          />
        </label>
        <label>
          Password
          <input
            data-testid="password"
            type="password"
            autocomplete="current-password"
            value={password}
            onInput={(e) => setPassword(e.currentTarget.value)}
            required
          />
        </label>
        {error && (
          <p class="error" role="alert">
            {error}
          </p>
        )}
        <div class="row">
          <button data-testid="login" type="submit" disabled={busy}>
            Sign in
          </button>
          <button data-testid="register" type="button" disabled={busy} onClick={() => void go("register")}>
            Create account
          </button>
        </div>
      </form>
    </main>
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
    void chat.show(open === SETTINGS ? null : open);
  }, [chat, open]);
  const conversation = open ? chat.conversations.get(open) : undefined;
  const settings = open === SETTINGS;
  return (
    <div class={`shell ${open ? "has-open" : ""}`}>
      <header class="top">
        <strong>Chat</strong>
        <span class="me">{chat.session.user}</span>
        <a data-testid="settings-link" href="#/settings">
          Settings
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
        <NewConversation chat={chat} />
        <ul>
          {chat.list().map((c) => (
            <ListItem key={c.id} chat={chat} c={c} active={c.id === open} />
          ))}
        </ul>
      </nav>
      <section class="pane">
        {settings ? (
          <SettingsPage chat={chat} />
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
        <span class="last">{last ? (last.deleted ? "message deleted" : `${last.sender}: ${last.body}`) : "no messages yet"}</span>
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

  // Stay at the bottom when there; keep the view still when older
  // messages are added above it.
  useLayoutEffect(() => {
    const el = scroller.current;
    if (!el) return;
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
    <div class="conversation">
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
              {m.role !== "member" && <em> {m.role}</em>}
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
    <article data-testid="message" data-id={m.id} class={`msg ${mine ? "mine" : ""} ${mentioned ? "mentioned" : ""}`}>
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
      {m.deleted ? <p class="deleted">message deleted</p> : <p class="body">{renderBody(m.body, m.mentions)}</p>}
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
      <p class="body">{o.body}</p>
      {o.error && (
        <button type="button" class="small" onClick={() => chat.discard(o)}>
          Discard
        </button>
      )}
    </article>
  );
}

function Composer(props: { chat: Chat; c: Conversation; replyTo: Message | null; editing: Message | null; done: () => void }) {
  const { chat, c, replyTo, editing, done } = props;
  const [text, setText] = useState("");
  const input = useRef<HTMLTextAreaElement>(null);
  // Before the browser paints, not after: text typed right after "Edit"
  // (a fast user, a test) must not be overwritten by the old body.
  useLayoutEffect(() => {
    if (editing) setText(editing.body);
    input.current?.focus();
  }, [editing, replyTo]);
  const submit = () => {
    const body = text.trim();
    if (!body) return;
    if (editing) void chat.edit(editing, body).catch(() => undefined);
    else chat.send(c.id, body, replyTo?.id);
    setText("");
    done();
  };
  const canWrite = c.kind !== "channel" || c.members.some((m) => m.user === chat.session.user && m.role !== "member");
  if (!canWrite) return <p class="readonly">Only owners and admins write here.</p>;
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
      />
      <button type="submit">Send</button>
    </form>
  );
}
