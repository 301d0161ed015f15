// The admin console's HTTP side: an admin's sign-in (kept in sessionStorage,
// apart from the chat app's session on the same origin), and the
// `/v1/admin/*` calls with `Authorization: Bearer`, refreshed once on a 401.
// Every call goes to the page's own origin, the node that served it: an
// address in the link could otherwise collect an admin's password (under
// `vite`, its proxy forwards to a node: vite.config.ts).

import { ApiError, expiryOf, readJson } from "../api";

export interface AdminSession {
  user: string;
  access: string;
  refresh: string;
  /** Unix ms when the access token expires. */
  expires: number;
}

export interface NodeInfo {
  name: string;
  node_id: number;
  /** The node that answered (the one serving this page). */
  local: boolean;
  up: boolean;
  serving: boolean;
  heard_ms_ago: number;
  rtt_ms: number | null;
  version: string;
  connections: number;
  sessions: number;
  conversations: number;
  messages_per_sec: number;
  deliveries_per_sec: number;
  send_p99_ms: number | null;
  store_up: boolean;
  presence_up: boolean;
}

export interface UserInfo {
  id: string;
  display_name: string | null;
  created_at: number;
  admin: boolean;
  suspended: boolean;
  online: boolean;
  last_seen: number | null;
}

export interface ConversationInfo {
  id: string;
  kind: string;
  /** The node that owns the conversation now. */
  owner: string;
  members: number;
  rev: number;
  last_message_id: number | null;
  /** How many members have a read marker. */
  read_markers: number;
  /** Of what this node's store holds: equal on every node once converged. */
  digest: string;
}

export interface AuditEntry {
  at: number;
  admin: string;
  action: "drain" | "disconnect" | "suspend" | "unsuspend" | string;
  target: string;
  node: string;
}

export type UserAction = "disconnect" | "suspend" | "unsuspend";

const KEY = "chat.admin.session";

async function postJson(path: string, body: unknown): Promise<any> {
  let res: Response;
  try {
    res = await fetch(path, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(body),
    });
  } catch (e) {
    throw new ApiError(0, "unavailable", `the node does not answer (${String(e)})`);
  }
  return readJson(res);
}

function remember(body: any, user: string): AdminSession {
  const s: AdminSession = {
    user: body.user?.id ?? user,
    access: body.access_token,
    refresh: body.refresh_token,
    expires: expiryOf(body.access_token),
  };
  sessionStorage.setItem(KEY, JSON.stringify(s));
  return s;
}

export function loadAdminSession(): AdminSession | null {
  try {
    const s = JSON.parse(sessionStorage.getItem(KEY) ?? "null");
    return s && s.access && s.refresh ? s : null;
  } catch {
    return null;
  }
}

export async function signIn(username: string, password: string): Promise<AdminSession> {
  return remember(await postJson("/v1/auth/login", { username, password }), username);
}

/** The admin API for one signed-in session. */
export class AdminApi {
  private refreshing: Promise<AdminSession> | null = null;

  constructor(
    public session: AdminSession,
    /** The session ended: the refresh token was refused. */
    private onSignedOut: (why: string) => void,
  ) {}

  async signOut() {
    sessionStorage.removeItem(KEY);
    try {
      await postJson("/v1/auth/logout", { refresh_token: this.session.refresh });
    } catch {
      // Signed out here either way; the token expires by itself.
    }
  }

  /** One refresh at a time: the refresh token is used up by it. */
  private refresh(): Promise<AdminSession> {
    if (!this.refreshing) {
      const used = this.session;
      this.refreshing = postJson("/v1/auth/refresh", { refresh_token: used.refresh })
        .then((body) => (this.session = remember(body, used.user)))
        .finally(() => {
          this.refreshing = null;
        });
    }
    return this.refreshing;
  }

  private async call(method: "GET" | "POST", path: string, body?: unknown): Promise<any> {
    const send = async () => {
      try {
        const headers: Record<string, string> = { authorization: `Bearer ${this.session.access}` };
        if (body !== undefined) headers["content-type"] = "application/json";
        return await fetch(path, {
          method,
          headers,
          body: body === undefined ? undefined : JSON.stringify(body),
        });
      } catch (e) {
        throw new ApiError(0, "unavailable", `the node does not answer (${String(e)})`);
      }
    };
    const sentWith = this.session.access;
    let res = await send();
    if (res.status === 401) {
      try {
        // Another call may have refreshed meanwhile.
        if (this.session.access === sentWith) await this.refresh();
      } catch (e) {
        if (e instanceof ApiError && e.status !== 0) {
          sessionStorage.removeItem(KEY);
          this.onSignedOut(`Signed out: ${e.message}`);
        }
        throw e;
      }
      res = await send();
      if (res.status === 401) {
        sessionStorage.removeItem(KEY);
        this.onSignedOut("Signed out: the node refuses this session.");
      }
    }
    return readJson(res);
  }

  nodes(): Promise<{ nodes: NodeInfo[] }> {
    return this.call("GET", "/v1/admin/nodes");
  }

  drain(node: string): Promise<{ node: string; draining: boolean }> {
    return this.call("POST", `/v1/admin/nodes/${encodeURIComponent(node)}/drain`);
  }

  user(id: string): Promise<UserInfo> {
    return this.call("GET", `/v1/admin/users/${encodeURIComponent(id)}`);
  }

  act(id: string, action: UserAction): Promise<UserInfo> {
    return this.call("POST", `/v1/admin/users/${encodeURIComponent(id)}/${action}`);
  }

  conversation(id: string): Promise<ConversationInfo> {
    return this.call("GET", `/v1/admin/conversations/${encodeURIComponent(id)}`);
  }

  audit(limit = 50): Promise<{ entries: AuditEntry[] }> {
    return this.call("GET", `/v1/admin/audit?limit=${limit}`);
  }

  deadLetters(): Promise<{ dead: DeadLetter[] }> {
    return this.call("GET", "/v1/admin/webhooks/dead");
  }

  replay(id: string): Promise<{ replayed: string }> {
    return this.call("POST", `/v1/admin/webhooks/dead/${encodeURIComponent(id)}/replay`);
  }

  reports(): Promise<{ reports: Report[] }> {
    return this.call("GET", "/v1/admin/reports?status=open");
  }

  resolve(id: string, action: ReportAction): Promise<{ report: Report }> {
    return this.call("POST", `/v1/admin/reports/${encodeURIComponent(id)}/resolve`, { action });
  }
}

/** What an admin does about a report. */
export type ReportAction = "dismiss" | "delete_message" | "suspend_user";

/** A user's report of a message or a user. */
export interface Report {
  id: string;
  reporter: string;
  user: string;
  conversation?: string;
  message?: string | number;
  reason: string;
  created_at: number;
}

/** A webhook delivery given up after its retries. */
export interface DeadLetter {
  id: string;
  hook: string;
  event: string;
  delivery: string;
  attempts: number;
  failed_at: number;
  error: string;
}
