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
const NODES_KEY = "chat.nodes";

/** The nodes this page may talk to: `?nodes=http://a,http://b` (kept for
 * later visits), else the page's own origin (a node or a proxy). */
export function nodes(): string[] {
  const fromQuery = new URLSearchParams(location.search).get("nodes");
  if (fromQuery) {
    const list = fromQuery
      .split(",")
      .map((n) => n.trim().replace(/\/$/, ""))
      .filter(Boolean);
    if (list.length) {
      localStorage.setItem(NODES_KEY, JSON.stringify(list));
      return list;
    }
  }
  const kept = localStorage.getItem(NODES_KEY);
  if (kept) {
    try {
      const list = JSON.parse(kept);
      if (Array.isArray(list) && list.length) return list;
    } catch {
      // fall through to the page's origin
    }
  }
  return [location.origin];
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

/** POSTs JSON to the first node that answers (a dead node is skipped). */
async function post(path: string, body: unknown): Promise<Response> {
  let lastError: unknown = null;
  for (const node of nodes()) {
    try {
      return await fetch(node + path, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify(body),
      });
    } catch (e) {
      lastError = e;
    }
  }
  throw new ApiError(0, "unavailable", `no node answers (${String(lastError)})`);
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

export async function login(username: string, password: string): Promise<Session> {
  return sessionOf(await readJson(await post("/v1/auth/login", { username, password })));
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
