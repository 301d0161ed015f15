// Tokens for a client: the node's own accounts hand out a short-lived
// access token and a refresh token; this keeps the access token fresh,
// refreshing (once, however many ask at the same time) shortly before it
// expires.

export interface Session {
  access_token: string;
  refresh_token: string;
}

export interface SessionTokenOptions {
  /** Base URLs of nodes that serve `/v1/auth/refresh`, tried in turn. */
  nodes: string[] | (() => string[]);
  /** Called with every new pair: keep it (refresh tokens rotate on every
   * use; an old one used again ends the login). */
  onRefresh?: (session: Session) => void;
  /** Refresh this long before expiry (30 s). */
  marginMs?: number;
  fetch?: typeof fetch;
}

/** When a JWT expires (Unix ms), from its `exp`; 0 when unreadable. */
export function expiresAt(token: string): number {
  try {
    const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    return JSON.parse(atob(part)).exp * 1000;
  } catch {
    return 0;
  }
}

/** A `token()` for ChatClient from a signed-in session. */
export function sessionTokens(session: Session, options: SessionTokenOptions): () => Promise<string> {
  let current = session;
  let refreshing: Promise<Session> | null = null;
  const margin = options.marginMs ?? 30_000;
  const doFetch = options.fetch ?? fetch;
  const refresh = async (): Promise<Session> => {
    const nodes = typeof options.nodes === "function" ? options.nodes() : options.nodes;
    let last: unknown = null;
    for (const node of nodes) {
      let res: Response;
      try {
        res = await doFetch(`${node.replace(/\/+$/, "")}/v1/auth/refresh`, {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify({ refresh_token: current.refresh_token }),
        });
      } catch (e) {
        last = e;
        continue; // That node is down: the next one.
      }
      const body = await res.json().catch(() => ({}));
      if (!res.ok) throw new Error(`refresh refused: ${res.status} ${body.code ?? ""}`);
      current = { access_token: body.access_token, refresh_token: body.refresh_token };
      options.onRefresh?.(current);
      return current;
    }
    throw new Error(`no node answers: ${String(last)}`);
  };
  return async () => {
    if (expiresAt(current.access_token) - margin > Date.now()) return current.access_token;
    refreshing ??= refresh().finally(() => (refreshing = null));
    return (await refreshing).access_token;
  };
}
