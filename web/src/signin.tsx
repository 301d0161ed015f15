// Signing in: a password (and the second factor's code when the account
// has one), or the OpenID Connect provider when one is configured; a
// forgotten password asked for by mail, and the page the mailed link
// opens (`/reset-password?token=`).
import { useEffect, useState } from "preact/hooks";
import { ApiError, Session, login, readJson, register, send } from "./api";

function message(e: unknown): string {
  return e instanceof ApiError || e instanceof Error ? e.message : String(e);
}

export function SignIn({ onIn, suspended }: { onIn: (s: Session) => void; suspended: boolean }) {
  const [username, setUsername] = useState("");
  const [password, setPassword] = useState("");
  const [code, setCode] = useState("");
  // Set once the password was right and the account asks for a code.
  const [needsCode, setNeedsCode] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const [provider, setProvider] = useState<string | null>(null);
  const [forgot, setForgot] = useState(false);
  useEffect(() => {
    void send("GET", "/v1/auth/providers")
      .then(readJson)
      .then((p) => setProvider(p?.oidc?.name ?? null))
      .catch(() => setProvider(null));
  }, []);
  const go = async (how: "login" | "register") => {
    setBusy(true);
    setError(null);
    try {
      if (how === "register") {
        onIn(await register(username.trim(), password));
      } else {
        const c = code.trim();
        // Six digits: an authenticator's code; anything else a recovery code.
        const second = !needsCode ? undefined : /^\d{6}$/.test(c) ? { totp: c } : { recovery_code: c };
        onIn(await login(username.trim(), password, second));
      }
    } catch (e) {
      if (e instanceof ApiError && e.code === "totp_required") {
        setNeedsCode(true);
        setError(null);
      } else {
        setError(message(e));
      }
    } finally {
      setBusy(false);
    }
  };
  if (forgot) return <ForgotPassword back={() => setForgot(false)} />;
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
        {needsCode && (
          <label>
            Code from your authenticator app, or a recovery code
            <input
              data-testid="totp"
              autocomplete="one-time-code"
              inputMode="numeric"
              value={code}
              onInput={(e) => setCode(e.currentTarget.value)}
              required
            />
          </label>
        )}
        {error && (
          <p class="error" role="alert">
            {error}
          </p>
        )}
        <div class="row">
          <button data-testid="login" type="submit" disabled={busy}>
            Sign in
          </button>
          {!needsCode && (
            <button data-testid="register" type="button" disabled={busy} onClick={() => void go("register")}>
              Create account
            </button>
          )}
        </div>
        <p class="row">
          <button type="button" class="link" data-testid="forgot" onClick={() => setForgot(true)}>
            Forgot your password?
          </button>
        </p>
        {provider && (
          <p class="row">
            <a data-testid="sso" class="button" href="/v1/auth/oidc/start">
              Sign in with {provider}
            </a>
          </p>
        )}
      </form>
    </main>
  );
}

function ForgotPassword({ back }: { back: () => void }) {
  const [email, setEmail] = useState("");
  const [sent, setSent] = useState(false);
  const [error, setError] = useState<string | null>(null);
  return (
    <main class="signin" data-testid="forgot-page">
      <h1>Reset your password</h1>
      {sent ? (
        <p role="status" data-testid="reset-sent">
          If an account has that address confirmed, a link to choose a new password is on its way. It works once, for 30
          minutes.
        </p>
      ) : (
        <form
          onSubmit={(e) => {
            e.preventDefault();
            setError(null);
            void send("POST", "/v1/auth/password-reset", { email: email.trim() })
              .then(readJson)
              .then(() => setSent(true))
              .catch((err) => setError(message(err)));
          }}
        >
          <label>
            E-mail address
            <input data-testid="reset-email" type="email" value={email} onInput={(e) => setEmail(e.currentTarget.value)} required />
          </label>
          {error && (
            <p class="error" role="alert">
              {error}
            </p>
          )}
          <button type="submit">Send the link</button>
        </form>
      )}
      <p>
        <button type="button" class="link" onClick={back}>
          Back to sign-in
        </button>
      </p>
    </main>
  );
}

/** The page a reset mail's link opens: a new password, then sign in. */
export function ResetPassword() {
  const token = new URLSearchParams(location.search).get("token") ?? "";
  const [password, setPassword] = useState("");
  const [state, setState] = useState<"form" | "done" | "failed">("form");
  const [error, setError] = useState<string | null>(null);
  return (
    <main class="signin" data-testid="reset" data-state={state}>
      <h1>Choose a new password</h1>
      {state === "done" ? (
        <p role="status">
          Your password is set, and every device was signed out. <a href="/">Sign in</a>
        </p>
      ) : (
        <form
          onSubmit={(e) => {
            e.preventDefault();
            setError(null);
            void send("POST", "/v1/auth/password-reset/confirm", { token, password })
              .then(readJson)
              .then(() => setState("done"))
              .catch((err) => {
                setError(message(err));
                if (err instanceof ApiError && /link/.test(err.message)) setState("failed");
              });
          }}
        >
          <label>
            New password
            <input
              data-testid="new-password"
              type="password"
              autocomplete="new-password"
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
          <button type="submit" data-testid="set-password">
            Set password
          </button>
        </form>
      )}
    </main>
  );
}
