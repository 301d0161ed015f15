// The notification settings page (`#/settings`), a conversation's bell,
// and the page a verification link opens (`/verify-email?token=`).
import { useEffect, useState } from "preact/hooks";
import { ApiError, send, readJson } from "./api";
import { Chat, Conversation } from "./chat";
import { Level, Me, Settings, bellOf, enablePush, getMe, getSettings, pushSupported, putEmail, putSettings, setLevel } from "./notify";

const HOUR = 3_600_000;

function message(e: unknown): string {
  return e instanceof ApiError || e instanceof Error ? e.message : String(e);
}

export function SettingsPage({ chat }: { chat: Chat }) {
  const [settings, setSettings] = useState<Settings | null>(null);
  const [me, setMe] = useState<Me | null>(null);
  const [email, setEmail] = useState("");
  const [status, setStatus] = useState<string | null>(null);
  const [error, setError] = useState<string | null>(null);
  useEffect(() => {
    void Promise.all([getSettings(chat), getMe(chat)])
      .then(([s, m]) => {
        setSettings(s);
        setMe(m);
        setEmail(m.email ?? "");
      })
      .catch((e) => setError(message(e)));
  }, [chat]);
  const save = async (patch: Partial<Settings>) => {
    setError(null);
    try {
      setSettings(await putSettings(chat, patch));
      setStatus("Saved");
    } catch (e) {
      setError(message(e));
    }
  };
  if (!settings || !me) return <p class="empty">{error ?? "Loading…"}</p>;
  const zone = Intl.DateTimeFormat().resolvedOptions().timeZone;
  const dnd = settings.dnd ?? null;
  return (
    <div class="settings" data-testid="settings">
      <header class="conv-head">
        <a class="back" href="#/" aria-label="Back to the list">
          ←
        </a>
        <h2>Notifications</h2>
      </header>
      {error && (
        <p class="error" role="alert">
          {error}
        </p>
      )}
      {status && <p role="status">{status}</p>}
      <fieldset>
        <legend>E-mail</legend>
        <form
          onSubmit={(e) => {
            e.preventDefault();
            setError(null);
            putEmail(chat, email.trim())
              .then(() => getMe(chat))
              .then((m) => {
                setMe(m);
                setStatus(`A confirmation link went to ${email.trim()}`);
              })
              .catch((err) => setError(message(err)));
          }}
        >
          <label>
            Address{" "}
            <input data-testid="email" type="email" value={email} onInput={(e) => setEmail(e.currentTarget.value)} />
          </label>{" "}
          <button type="submit">Save address</button>{" "}
          <span data-testid="email-state">{me.email ? (me.email_verified ? "confirmed" : "not confirmed yet") : "none"}</span>
        </form>
        <label>
          <input
            data-testid="email-enabled"
            type="checkbox"
            checked={settings.email.enabled}
            onChange={(e) => void save({ email: { ...settings.email, enabled: e.currentTarget.checked } })}
          />{" "}
          Mail me what I leave unread
        </label>
        <label>
          after{" "}
          <select
            data-testid="email-delay"
            value={String(settings.email.delay_secs)}
            onChange={(e) => void save({ email: { ...settings.email, delay_secs: Number(e.currentTarget.value) } })}
          >
            {[300, 900, 3600, 14400].map((s) => (
              <option value={String(s)}>{s < 3600 ? `${s / 60} minutes` : `${s / 3600} hour${s > 3600 ? "s" : ""}`}</option>
            ))}
            {![300, 900, 3600, 14400].includes(settings.email.delay_secs) && (
              <option value={String(settings.email.delay_secs)}>{settings.email.delay_secs} seconds</option>
            )}
          </select>
        </label>
      </fieldset>
      <fieldset>
        <legend>This browser</legend>
        <label>
          <input
            data-testid="push-enabled"
            type="checkbox"
            checked={settings.push.enabled}
            onChange={(e) => void save({ push: { enabled: e.currentTarget.checked } })}
          />{" "}
          Push notifications
        </label>{" "}
        <button
          type="button"
          disabled={!pushSupported()}
          onClick={() => {
            setError(null);
            enablePush(chat)
              .then(() => setStatus("This browser will show notifications"))
              .catch((e) => setError(message(e)));
          }}
        >
          Notify me in this browser
        </button>
      </fieldset>
      <fieldset>
        <legend>Quiet hours</legend>
        <label>
          <input
            data-testid="dnd-enabled"
            type="checkbox"
            checked={dnd !== null}
            onChange={(e) =>
              void save({ dnd: e.currentTarget.checked ? { start: "22:00", end: "07:00", tz: zone } : null })
            }
          />{" "}
          Nothing between
        </label>
        {dnd && (
          <span>
            {" "}
            <input
              data-testid="dnd-start"
              type="time"
              value={dnd.start}
              onChange={(e) => void save({ dnd: { ...dnd, start: e.currentTarget.value } })}
            />{" "}
            and{" "}
            <input
              data-testid="dnd-end"
              type="time"
              value={dnd.end}
              onChange={(e) => void save({ dnd: { ...dnd, end: e.currentTarget.value } })}
            />{" "}
            <small>({dnd.tz})</small>
          </span>
        )}
      </fieldset>
    </div>
  );
}

/** A conversation's bell: what of it notifies me, or a mute. */
export function Bell({ chat, c }: { chat: Chat; c: Conversation }) {
  const [error, setError] = useState<string | null>(null);
  const choose = (value: string) => {
    setError(null);
    const [level, hours] = value.startsWith("mute") ? ["all", Number(value.slice(4))] : [value, 0];
    setLevel(chat, c, level as Level, hours ? hours * HOUR : undefined).catch((e) => setError(message(e)));
  };
  const state = bellOf(c);
  return (
    <label class="bell" title="Notifications">
      <span aria-hidden="true">{state === "muted" || state === "none" ? "🔕" : "🔔"}</span>
      <select data-testid="bell" data-state={state} value={state === "muted" ? "" : state} onChange={(e) => choose(e.currentTarget.value)}>
        {state === "muted" && <option value="">muted</option>}
        <option value="all">All messages</option>
        <option value="mentions">Mentions</option>
        <option value="none">Nothing</option>
        <option value="mute1">Mute for 1 hour</option>
        <option value="mute8">Mute for 8 hours</option>
        <option value="mute24">Mute for a day</option>
      </select>
      {error && (
        <span class="error" role="alert">
          {error}
        </span>
      )}
    </label>
  );
}

/** `/verify-email?token=`: confirms the address the mailed link was for. */
export function VerifyEmail() {
  const [state, setState] = useState<"working" | "done" | string>("working");
  useEffect(() => {
    const token = new URLSearchParams(location.search).get("token") ?? "";
    send("POST", "/v1/auth/verify-email", { token })
      .then(readJson)
      .then(() => setState("done"))
      .catch((e) => setState(message(e)));
  }, []);
  return (
    <main class="signin" data-testid="verify" data-state={state === "done" || state === "working" ? state : "failed"}>
      <h1>Chat</h1>
      <p role="status">
        {state === "working" ? "Confirming…" : state === "done" ? "Your address is confirmed." : state}
      </p>
      <p>
        <a href="/">Open the app</a>
      </p>
    </main>
  );
}
