// The HTTP side: sign-up, sign-in, token refresh and sign-out, and the
// session kept in localStorage so that a reload stays signed in.

export interface Session {
  user: string;
  access: string;
  refresh: string;
  /** Unix ms when the access token expires. */
  expires: number;
}

const KEY = "chat.session";
/** The nodes the page's own origin published, kept for the next load. */
const PUBLISHED_KEY = "chat.cluster.nodes";

// Earlier versions kept here whatever `?nodes=` a link carried, and sent
// passwords there on every later visit: never read it, and drop it.
localStorage.removeItem("chat.nodes");

/** `url`'s origin when it is an http(s) URL, else null. */
function originOf(url: unknown): string | null {
  if (typeof url !== "string") return null;
  try {
    const u = new URL(url);
    return u.protocol === "http:" || u.protocol === "https:" ? u.origin : null;
  } catch {
    return null;
  }
}

function keptNodes(): string[] {
  try {
    const list = JSON.parse(localStorage.getItem(PUBLISHED_KEY) ?? "[]");
    return Array.isArray(list) ? list.map(originOf).filter((n): n is string => n !== null) : [];
  } catch {
    return [];
  }
}

let published: string[] = keptNodes();

/** The nodes this page may talk to: its own origin (the node or proxy that
 * served it) first, then the other nodes that origin publishes, for when it
 * goes. Nothing from the address bar: a link must not choose where
 * passwords go. */
export function nodes(): string[] {
  const own = location.origin;
  return [own, ...published.filter((n) => n !== own)];
}

/** Asks the page's own origin which nodes its cluster publishes
 * (`GET /v1/cluster/nodes`), and keeps the answer: a reload while the
 * origin is down still knows where else to go. */
export async function learnNodes(): Promise<void> {
  let body: any;
  try {
    const res = await fetch("/v1/cluster/nodes");
    if (!res.ok) return;
    body = await res.json();
  } catch {
    return; // The origin is down or older: keep what it said before.
  }
  if (!Array.isArray(body?.nodes)) return;
  published = body.nodes.map(originOf).filter((n: string | null): n is string => n !== null);
  localStorage.setItem(PUBLISHED_KEY, JSON.stringify(published));
}

/** The node that answered last, when it is not the page's own origin
 * (which then may be down). */
let elsewhere: string | null = null;

/** Notes that `node` answered (a request, the socket). */
export function answered(node: string): void {
  elsewhere = node === location.origin ? null : node;
}

/** A path a node signed (`/v1/media/...`) as the page can load it: from
 * the node that answers now, so files still show after the page's own
 * origin failed over to another node. */
export function nodeLink(path: string): string;
export function nodeLink(path: string | undefined): string | undefined;
export function nodeLink(path: string | undefined): string | undefined {
  return path && elsewhere && path.startsWith("/") ? elsewhere + path : path;
}

export class ApiError extends Error {
  constructor(
    public status: number,
    public code: string,
    message: string,
  ) {
    super(message);
  }
}

/** Sends a request (with a JSON body, and a bearer token when given) to
 * the first node that answers (a dead node is skipped). */
export async function send(method: string, path: string, body?: unknown, token?: string): Promise<Response> {
  let lastError: unknown = null;
  const headers: Record<string, string> = { "content-type": "application/json" };
  if (token) headers.authorization = `Bearer ${token}`;
  for (const node of nodes()) {
    try {
      const res = await fetch(node + path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
      });
      answered(node);
      return res;
    } catch (e) {
      lastError = e;
    }
  }
  throw new ApiError(0, "unavailable", `no node answers (${String(lastError)})`);
}

/** POSTs JSON to the first node that answers. */
function post(path: string, body: unknown): Promise<Response> {
  return send("POST", path, body);
}

/** The JSON body of a reply, or an ApiError from its `{code, message}`. */
export async function readJson(res: Response): Promise<any> {
  const text = await res.text();
  let body: any = {};
  try {
    body = text ? JSON.parse(text) : {};
  } catch {
    // A proxy's (or a missing route's) page: the status says enough.
    if (res.ok) throw new ApiError(res.status, "internal", "the answer is not JSON");
  }
  if (!res.ok) {
    throw new ApiError(res.status, body.code ?? "internal", body.message ?? res.statusText);
  }
  return body;
}

/** When a JWT expires (Unix ms), from its `exp`. */
export function expiryOf(token: string): number {
  try {
    const payload = JSON.parse(atob(token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/")));
    return payload.exp * 1000;
  } catch {
    return Date.now() + 60_000;
  }
}

function sessionOf(body: any): Session {
  const s: Session = {
    user: body.user?.id ?? loadSession()?.user ?? "",
    access: body.access_token,
    refresh: body.refresh_token,
    expires: expiryOf(body.access_token),
  };
  localStorage.setItem(KEY, JSON.stringify(s));
  return s;
}

export function loadSession(): Session | null {
  try {
    const s = JSON.parse(localStorage.getItem(KEY) ?? "null");
    return s && s.access && s.refresh ? s : null;
  } catch {
    return null;
  }
}

export function clearSession() {
  localStorage.removeItem(KEY);
}

export async function register(username: string, password: string): Promise<Session> {
  return sessionOf(await readJson(await post("/v1/auth/register", { username, password })));
}

/** Signs in; `second` is a code of the account's second factor (an
 * authenticator's, or a recovery code), when it has one. */
export async function login(
  username: string,
  password: string,
  second?: { totp?: string; recovery_code?: string },
): Promise<Session> {
  return sessionOf(await readJson(await post("/v1/auth/login", { username, password, ...second })));
}

/** The session an OpenID Connect sign-in handed over in the URL fragment
 * (`#/signed-in?access_token=..&refresh_token=..`), kept; the fragment is
 * dropped from the address bar and history. */
export function adoptSignedIn(): Session | null {
  const m = location.hash.match(/^#\/signed-in\?(.*)$/);
  if (!m) return null;
  const q = new URLSearchParams(m[1]);
  history.replaceState(null, "", location.pathname);
  const access = q.get("access_token");
  const refresh = q.get("refresh_token");
  if (!access || !refresh) return null;
  let user = "";
  try {
    user = JSON.parse(atob(access.split(".")[1].replace(/-/g, "+").replace(/_/g, "/"))).sub ?? "";
  } catch {
    return null;
  }
  return sessionOf({ user: { id: user }, access_token: access, refresh_token: refresh });
}

/** A new access token (and refresh token); the old refresh token is used up. */
export async function refresh(s: Session): Promise<Session> {
  const body = await readJson(await post("/v1/auth/refresh", { refresh_token: s.refresh }));
  return sessionOf({ ...body, user: { id: s.user } });
}

export async function logout(s: Session): Promise<void> {
  clearSession();
  try {
    await post("/v1/auth/logout", { refresh_token: s.refresh });
  } catch {
    // Signed out here either way; the token expires by itself.
  }
}
