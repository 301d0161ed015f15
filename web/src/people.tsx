// People and accounts: the profile page (`#/profile`: display name,
// status, an avatar placeholder), the security page (`#/security`:
// password, the second factor with its QR code, the signed-in devices),
// the user search that starting a conversation offers, and the report and
// block actions of a message's menu.
import { useEffect, useState } from "preact/hooks";
import qrcode from "qrcode-generator";
import { ApiError } from "./api";
import { Chat } from "./chat";

function message(e: unknown): string {
  return e instanceof ApiError || e instanceof Error ? e.message : String(e);
}

export interface Profile {
  id: string;
  display_name: string;
  status_text?: string;
  avatar?: string;
}

interface Me extends Profile {
  email?: string;
  email_verified: boolean;
  totp_enabled: boolean;
}

/** A round placeholder with the user's initial, its colour from the id:
 * what stands for an avatar until media exist. */
export function Avatar({ user, name }: { user: string; name?: string }) {
  let hue = 0;
  for (const ch of user) hue = (hue * 31 + ch.charCodeAt(0)) % 360;
  const initial = (name || user).trim().charAt(0).toUpperCase() || "?";
  return (
    <span class="avatar" data-testid="avatar" aria-hidden="true" style={{ background: `hsl(${hue} 45% 45%)` }}>
      {initial}
    </span>
  );
}

function Page({ title, children }: { title: string; children: preact.ComponentChildren }) {
  return (
    <div class="settings">
      <header class="conv-head">
        <a class="back" href="#/" aria-label="Back to the list">
          ←
        </a>
        <h2>{title}</h2>
      </header>
      {children}
    </div>
  );
}

export function ProfilePage({ chat }: { chat: Chat }) {
  const [me, setMe] = useState<Me | null>(null);
  const [name, setName] = useState("");
  const [status, setStatus] = useState("");
  const [note, setNote] = useState<string | null>(null);
  const [error, setError] = useState<string | null>(null);
  useEffect(() => {
    void chat
      .request("GET", "/v1/me")
      .then((m: Me) => {
        setMe(m);
        setName(m.display_name);
        setStatus(m.status_text ?? "");
      })
      .catch((e) => setError(message(e)));
  }, [chat]);
  if (!me) return <p class="empty">{error ?? "Loading…"}</p>;
  return (
    <Page title="Profile">
      <div data-testid="profile">
        <p class="profile-card">
          <Avatar user={me.id} name={me.display_name} /> <strong data-testid="shown-name">{me.display_name}</strong>{" "}
          <span class="muted">@{me.id}</span>
          {me.status_text && <span data-testid="shown-status"> — {me.status_text}</span>}
        </p>
        <form
          onSubmit={(e) => {
            e.preventDefault();
            setError(null);
            setNote(null);
            chat
              .request("PATCH", "/v1/me", { display_name: name, status_text: status.trim() || null })
              .then((m: Me) => {
                setMe(m);
                setNote("Saved");
              })
              .catch((err) => setError(message(err)));
          }}
        >
          <label>
            Display name <input data-testid="display-name" maxLength={128} value={name} onInput={(e) => setName(e.currentTarget.value)} />
          </label>
          <label>
            Status{" "}
            <input
              data-testid="status-text"
              maxLength={140}
              placeholder="What are you up to?"
              value={status}
              onInput={(e) => setStatus(e.currentTarget.value)}
            />
          </label>
          <button type="submit" data-testid="save-profile">
            Save
          </button>
        </form>
        {note && <p role="status">{note}</p>}
        {error && (
          <p class="error" role="alert">
            {error}
          </p>
        )}
        <Blocked chat={chat} />
      </div>
    </Page>
  );
}

/** Whom the user blocks, each with an Unblock button. */
function Blocked({ chat }: { chat: Chat }) {
  const [blocks, setBlocks] = useState<string[]>([]);
  const load = () =>
    chat
      .request("GET", "/v1/me/blocks")
      .then((r) => setBlocks(r.blocks))
      .catch(() => setBlocks([]));
  useEffect(() => void load(), [chat]);
  return (
    <fieldset>
      <legend>Blocked people</legend>
      {blocks.length === 0 && <p class="muted">Nobody.</p>}
      <ul data-testid="blocked">
        {blocks.map((u) => (
          <li key={u} data-user={u}>
            {u}{" "}
            <button
              type="button"
              class="small"
              data-testid="unblock"
              onClick={() => void chat.request("DELETE", `/v1/me/blocks/${encodeURIComponent(u)}`).then(load)}
            >
              Unblock
            </button>
          </li>
        ))}
      </ul>
    </fieldset>
  );
}

interface SessionRow {
  id: string;
  created_at: number;
  last_used_at: number;
  user_agent?: string;
  address?: string;
  current: boolean;
}

export function SecurityPage({ chat }: { chat: Chat }) {
  const [me, setMe] = useState<Me | null>(null);
  const [sessions, setSessions] = useState<SessionRow[]>([]);
  const [current, setCurrent] = useState("");
  const [next, setNext] = useState("");
  const [enrol, setEnrol] = useState<{ secret: string; otpauth_url: string } | null>(null);
  const [code, setCode] = useState("");
  const [recovery, setRecovery] = useState<string[] | null>(null);
  const [note, setNote] = useState<string | null>(null);
  const [error, setError] = useState<string | null>(null);
  const load = () =>
    Promise.all([chat.request("GET", "/v1/me"), chat.request("GET", "/v1/me/sessions")])
      .then(([m, s]) => {
        setMe(m);
        setSessions(s.sessions);
      })
      .catch((e) => setError(message(e)));
  useEffect(() => void load(), [chat]);
  const act = (p: Promise<unknown>, done: string) => {
    setError(null);
    setNote(null);
    return p
      .then(() => {
        setNote(done);
        return load();
      })
      .catch((e) => setError(message(e)));
  };
  if (!me) return <p class="empty">{error ?? "Loading…"}</p>;
  const qr = enrol ? qrcode(0, "M") : null;
  if (qr && enrol) {
    qr.addData(enrol.otpauth_url);
    qr.make();
  }
  return (
    <Page title="Security">
      <div data-testid="security">
        {note && <p role="status">{note}</p>}
        {error && (
          <p class="error" role="alert">
            {error}
          </p>
        )}
        <fieldset>
          <legend>Password</legend>
          <form
            onSubmit={(e) => {
              e.preventDefault();
              void act(chat.request("POST", "/v1/auth/password", { current, new: next }), "Password changed; your other devices were signed out").then(() => {
                setCurrent("");
                setNext("");
              });
            }}
          >
            <label>
              Current <input data-testid="current-password" type="password" autocomplete="current-password" value={current} onInput={(e) => setCurrent(e.currentTarget.value)} required />
            </label>
            <label>
              New <input data-testid="new-password" type="password" autocomplete="new-password" value={next} onInput={(e) => setNext(e.currentTarget.value)} required />
            </label>
            <button type="submit" data-testid="change-password">
              Change password
            </button>
          </form>
        </fieldset>
        <fieldset data-testid="two-factor" data-state={me.totp_enabled ? "on" : enrol ? "pending" : "off"}>
          <legend>Two-step sign-in</legend>
          {recovery && (
            <div data-testid="recovery-codes">
              <p>Keep these recovery codes somewhere safe: each signs you in once without your phone. They are not shown again.</p>
              <ul>
                {recovery.map((c) => (
                  <li key={c}>
                    <code>{c}</code>
                  </li>
                ))}
              </ul>
            </div>
          )}
          {me.totp_enabled ? (
            <form
              onSubmit={(e) => {
                e.preventDefault();
                void act(chat.request("DELETE", "/v1/me/totp", { code: code.trim() }), "Two-step sign-in is off").then(() => setCode(""));
              }}
            >
              <p>On: signing in asks for a code from your authenticator app.</p>
              <label>
                Code <input data-testid="totp-code" autocomplete="one-time-code" value={code} onInput={(e) => setCode(e.currentTarget.value)} required />
              </label>
              <button type="submit" data-testid="totp-off">
                Turn off
              </button>
            </form>
          ) : enrol && qr ? (
            <form
              onSubmit={(e) => {
                e.preventDefault();
                setError(null);
                chat
                  .request("POST", "/v1/me/totp/confirm", { code: code.trim() })
                  .then((r) => {
                    setRecovery(r.recovery_codes);
                    setEnrol(null);
                    setCode("");
                    return load();
                  })
                  .catch((err) => setError(message(err)));
              }}
            >
              <p>Scan this with your authenticator app, then type the code it shows.</p>
              <img data-testid="totp-qr" alt="QR code of the two-step sign-in secret" src={qr.createDataURL(4, 8)} />
              <p>
                Or type the key: <code data-testid="totp-secret">{enrol.secret}</code>
              </p>
              <label>
                Code <input data-testid="totp-code" autocomplete="one-time-code" inputMode="numeric" value={code} onInput={(e) => setCode(e.currentTarget.value)} required />
              </label>
              <button type="submit" data-testid="totp-confirm">
                Turn on
              </button>
            </form>
          ) : (
            <button
              type="button"
              data-testid="totp-start"
              onClick={() => {
                setError(null);
                setRecovery(null);
                chat
                  .request("POST", "/v1/me/totp")
                  .then(setEnrol)
                  .catch((e) => setError(message(e)));
              }}
            >
              Set up two-step sign-in
            </button>
          )}
        </fieldset>
        <fieldset>
          <legend>Where you are signed in</legend>
          <ul data-testid="sessions">
            {sessions.map((s) => (
              <li key={s.id} data-testid="session" data-current={s.current ? "yes" : "no"}>
                <span>{s.user_agent ?? "unknown device"}</span> <span class="muted">{s.address ?? ""}</span>{" "}
                <span class="muted">last used {new Date(s.last_used_at).toLocaleString()}</span>{" "}
                {s.current ? (
                  <em>this device</em>
                ) : (
                  <button type="button" class="small" data-testid="end-session" onClick={() => void act(chat.request("DELETE", `/v1/me/sessions/${encodeURIComponent(s.id)}`), "Signed out there")}>
                    Sign out
                  </button>
                )}
              </li>
            ))}
          </ul>
        </fieldset>
      </div>
    </Page>
  );
}

/** Suggestions for the last name typed in `query` (two characters or
 * more): people found by the start of their id or display name; picking
 * one puts their id in its place. */
export function UserSearch({ chat, query, pick }: { chat: Chat; query: string; pick: (id: string) => void }) {
  const last = query.split(/[\s,]+/).pop()?.trim() ?? "";
  const [found, setFound] = useState<Profile[]>([]);
  useEffect(() => {
    if (last.length < 2) {
      setFound([]);
      return;
    }
    let stale = false;
    const timer = setTimeout(() => {
      chat
        .request("GET", `/v1/users?prefix=${encodeURIComponent(last)}&limit=8`)
        .then((r) => !stale && setFound(r.users.filter((u: Profile) => u.id !== chat.session.user)))
        .catch(() => !stale && setFound([]));
    }, 150);
    return () => {
      stale = true;
      clearTimeout(timer);
    };
  }, [chat, last]);
  if (!found.length) return null;
  return (
    <ul class="suggestions" data-testid="user-suggestions">
      {found.map((u) => (
        <li key={u.id}>
          <button type="button" class="small" data-testid="suggestion" data-user={u.id} onClick={() => pick(u.id)}>
            <Avatar user={u.id} name={u.display_name} /> {u.display_name} <span class="muted">@{u.id}</span>
          </button>
        </li>
      ))}
    </ul>
  );
}

/** The report and block actions of someone else's message. */
export function MessageMenu({ chat, conversation, id, sender }: { chat: Chat; conversation: string; id: string; sender: string }) {
  const [state, setState] = useState<string | null>(null);
  const report = () => {
    const reason = prompt(`Why report this message of ${sender}?`);
    if (!reason?.trim()) return;
    chat
      .request("POST", "/v1/reports", { conversation, message: id, reason: reason.trim() })
      .then(() => setState("reported"))
      .catch((e) => setState(message(e)));
  };
  const block = () => {
    if (!confirm(`Block ${sender}? They will not be able to message you directly or see you online.`)) return;
    chat
      .request("PUT", `/v1/me/blocks/${encodeURIComponent(sender)}`)
      .then(() => setState("blocked"))
      .catch((e) => setState(message(e)));
  };
  return (
    <>
      <button type="button" class="small" data-testid="report" onClick={report}>
        Report
      </button>
      <button type="button" class="small" data-testid="block" onClick={block}>
        Block {sender}
      </button>
      {state && (
        <span class="muted" role="status" data-testid="menu-state">
          {state}
        </span>
      )}
    </>
  );
}
