// The operators' console: the nodes (live, with drain), a user (disconnect,
// suspend, unsuspend), which node owns a conversation, and the audit log.

import { DeadLetters } from "./dead_letters";
import { Reports } from "./reports";
import { ComponentChildren } from "preact";
import { useEffect, useRef, useState } from "preact/hooks";
import { ApiError } from "../api";
import {
  AdminApi,
  AdminSession,
  AuditEntry,
  ConversationInfo,
  NodeInfo,
  UserAction,
  UserInfo,
  loadAdminSession,
  signIn,
} from "./api";

const NODES_EVERY_MS = 2000;
const AUDIT_EVERY_MS = 5000;
const USER_EVERY_MS = 5000;
/** A drain not confirmed within this long is called off. */
const CONFIRM_MS = 8000;

function message(e: unknown): string {
  return e instanceof ApiError ? e.message || e.code : String(e);
}

/** Runs `fn` now and then `ms` after each run ends while `enabled`; the
 * returned function runs it again at once (after a run in flight). */
function usePoll(fn: () => Promise<void>, ms: number, enabled: boolean): () => void {
  const latest = useRef(fn);
  latest.current = fn;
  const kick = useRef<() => void>(() => undefined);
  useEffect(() => {
    if (!enabled) return;
    let stopped = false;
    let running = false;
    let again = false;
    let timer: number | undefined;
    const run = async () => {
      if (running) {
        again = true;
        return;
      }
      running = true;
      clearTimeout(timer);
      try {
        await latest.current();
      } catch {
        // each poll shows its own errors
      }
      running = false;
      if (stopped) return;
      if (again) {
        again = false;
        void run();
      } else {
        timer = window.setTimeout(() => void run(), ms);
      }
    };
    kick.current = () => void run();
    void run();
    return () => {
      stopped = true;
      clearTimeout(timer);
      kick.current = () => undefined;
    };
  }, [enabled, ms]);
  return () => kick.current();
}

export function AdminApp() {
  const [session, setSession] = useState<AdminSession | null>(loadAdminSession());
  const [notice, setNotice] = useState<string | null>(null);
  if (!session) {
    return (
      <SignIn
        notice={notice}
        onIn={(s) => {
          setNotice(null);
          setSession(s);
        }}
      />
    );
  }
  return (
    <Console
      key={session.user}
      session={session}
      onOut={(why) => {
        setNotice(why ?? null);
        setSession(null);
      }}
    />
  );
}

function SignIn({ onIn, notice }: { onIn: (s: AdminSession) => void; notice: string | null }) {
  const [username, setUsername] = useState("");
  const [password, setPassword] = useState("");
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  return (
    <main class="signin">
      <h1>Chat admin</h1>
      {notice && <p class="error notice">{notice}</p>}
      <form
        onSubmit={async (e) => {
          e.preventDefault();
          setBusy(true);
          setError(null);
          try {
            onIn(await signIn(username.trim(), password));
          } catch (err) {
            setError(message(err));
          } finally {
            setBusy(false);
          }
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
        <button data-testid="login" type="submit" disabled={busy}>
          Sign in
        </button>
      </form>
    </main>
  );
}

type Role = "checking" | "admin" | "not-admin";

function Console({ session, onOut }: { session: AdminSession; onOut: (why?: string) => void }) {
  const [api] = useState(() => new AdminApi(session, (why) => onOut(why)));
  const [role, setRole] = useState<Role>("checking");
  const [nodes, setNodes] = useState<NodeInfo[] | null>(null);
  const [nodesAt, setNodesAt] = useState<number | null>(null);
  const [nodesError, setNodesError] = useState<string | null>(null);
  const [draining, setDraining] = useState<Set<string>>(new Set());
  const [audit, setAudit] = useState<AuditEntry[] | null>(null);
  const [auditError, setAuditError] = useState<string | null>(null);

  const pollNodes = usePoll(
    async () => {
      try {
        const list = (await api.nodes()).nodes;
        list.sort((a, b) => a.node_id - b.node_id || a.name.localeCompare(b.name));
        setNodes(list);
        setNodesAt(Date.now());
        setNodesError(null);
        setRole("admin");
        // A drained node leaves the list: nothing to mark any more.
        setDraining((d) => (d.size ? new Set([...d].filter((n) => list.some((x) => x.name === n))) : d));
      } catch (e) {
        if (e instanceof ApiError && e.status === 403) setRole("not-admin");
        else setNodesError(message(e));
      }
    },
    NODES_EVERY_MS,
    role !== "not-admin",
  );
  const pollAudit = usePoll(
    async () => {
      try {
        setAudit((await api.audit(50)).entries);
        setAuditError(null);
      } catch (e) {
        setAuditError(message(e));
      }
    },
    AUDIT_EVERY_MS,
    role === "admin",
  );
  const acted = () => {
    pollAudit();
    pollNodes();
  };
  const signOut = async () => {
    await api.signOut();
    onOut();
  };

  if (role === "not-admin") {
    return (
      <main class="signin">
        <h1>Chat admin</h1>
        <p data-testid="not-admin" class="error notice" role="alert">
          This account is not an admin
        </p>
        <p class="hint">
          Signed in as <strong>{session.user}</strong>. Admins are the users listed in the nodes' configuration
          (<code>[admin] users</code>).
        </p>
        <button type="button" data-testid="sign-out" onClick={() => void signOut()}>
          Sign out
        </button>
      </main>
    );
  }

  const local = nodes?.find((n) => n.local)?.name;
  return (
    <div class="admin">
      <header class="top">
        <strong>Chat admin</strong>
        <span class="me">
          {session.user}
          {local && <> · via {local}</>}
        </span>
        <button type="button" data-testid="sign-out" onClick={() => void signOut()}>
          Sign out
        </button>
      </header>
      {role === "checking" && !nodesError && <p class="loading">Loading…</p>}
      {role === "checking" && nodesError && (
        <p class="error banner" role="alert">
          {nodesError}
        </p>
      )}
      {role === "admin" && (
        <div class="sections">
          <Section
            title="Nodes"
            wide
            aside={nodesAt ? `updated ${new Date(nodesAt).toLocaleTimeString()}, every ${NODES_EVERY_MS / 1000} s` : undefined}
          >
            {nodesError && (
              <p class="error" role="alert">
                Could not update: {nodesError}
              </p>
            )}
            <NodesTable
              nodes={nodes ?? []}
              draining={draining}
              onDrain={async (name) => {
                await api.drain(name);
                setDraining((d) => new Set([...d, name]));
                acted();
              }}
            />
          </Section>
          <Section title="User">
            <UserPanel api={api} onAction={acted} />
          </Section>
          <Section title="Conversation">
            <ConversationPanel api={api} />
          </Section>
          <Section title="Reports" wide aside="oldest first, every 5 s">
            <Reports api={api} onAction={acted} />
          </Section>
          <Section title="Webhook dead letters" wide aside={`newest first, every 5 s`}>
            <DeadLetters api={api} onAction={acted} />
          </Section>
          <Section title="Audit log" wide aside={`newest first, every ${AUDIT_EVERY_MS / 1000} s`}>
            {auditError && (
              <p class="error" role="alert">
                Could not update: {auditError}
              </p>
            )}
            <AuditTable entries={audit ?? []} />
          </Section>
        </div>
      )}
    </div>
  );
}

function Section(props: { title: string; wide?: boolean; aside?: string; children: ComponentChildren }) {
  return (
    <section class={`card ${props.wide ? "wide" : ""}`}>
      <header>
        <h2>{props.title}</h2>
        {props.aside && <span class="aside">{props.aside}</span>}
      </header>
      {props.children}
    </section>
  );
}

function Flag({ on, yes = "up", no = "down" }: { on: boolean; yes?: string; no?: string }) {
  return <span class={`flag ${on ? "ok" : "bad"}`}>{on ? yes : no}</span>;
}

function ms(v: number | null, digits = 1): string {
  return v == null ? "–" : `${v.toFixed(digits)} ms`;
}

function ago(v: number): string {
  return v < 1000 ? "now" : `${(v / 1000).toFixed(1)} s ago`;
}

function NodesTable(props: { nodes: NodeInfo[]; draining: Set<string>; onDrain: (name: string) => Promise<void> }) {
  const [confirming, setConfirming] = useState<string | null>(null);
  const [busy, setBusy] = useState<string | null>(null);
  const [error, setError] = useState<string | null>(null);
  useEffect(() => {
    if (!confirming) return;
    const t = setTimeout(() => setConfirming(null), CONFIRM_MS);
    return () => clearTimeout(t);
  }, [confirming]);
  const drain = async (name: string) => {
    setConfirming(null);
    setBusy(name);
    setError(null);
    try {
      await props.onDrain(name);
    } catch (e) {
      setError(`Drain of ${name} failed: ${message(e)}`);
    } finally {
      setBusy(null);
    }
  };
  return (
    <>
      {error && (
        <p class="error" role="alert" data-testid="drain-error">
          {error}
        </p>
      )}
      <div class="scroll">
        <table data-testid="nodes">
          <thead>
            <tr>
              <th>Node</th>
              <th>State</th>
              <th class="num">Heard</th>
              <th class="num">RTT</th>
              <th>Version</th>
              <th class="num" title="WebSocket connections">Conns</th>
              <th class="num">Sessions</th>
              <th class="num" title="Conversations owned">Convs</th>
              <th class="num" title="Messages accepted per second">Msg/s</th>
              <th class="num" title="Events delivered to clients per second">Deliv/s</th>
              <th class="num">Send p99</th>
              <th>Store</th>
              <th>Presence</th>
              <th />
            </tr>
          </thead>
          <tbody>
            {props.nodes.map((n) => {
              const isDraining = props.draining.has(n.name);
              return (
                <tr
                  key={n.name}
                  data-testid="node-row"
                  data-node={n.name}
                  data-up={String(n.up)}
                  data-serving={String(n.serving)}
                  data-store-up={String(n.store_up)}
                  data-presence-up={String(n.presence_up)}
                  class={n.up ? "" : "down"}
                >
                  <td>
                    <strong>{n.name}</strong> <span class="muted">#{n.node_id}</span>
                    {n.local && <span class="tag">this node</span>}
                  </td>
                  <td>
                    {isDraining ? (
                      <span class="flag warn">draining</span>
                    ) : !n.up ? (
                      <Flag on={false} />
                    ) : n.serving ? (
                      <Flag on yes="serving" />
                    ) : (
                      <span class="flag warn">up, not serving</span>
                    )}
                  </td>
                  <td class="num">{n.local ? "–" : ago(n.heard_ms_ago)}</td>
                  <td class="num">{n.local ? "–" : ms(n.rtt_ms, 2)}</td>
                  <td>{n.version}</td>
                  <td class="num">{n.connections}</td>
                  <td class="num">{n.sessions}</td>
                  <td class="num">{n.conversations}</td>
                  <td class="num">{n.messages_per_sec.toFixed(1)}</td>
                  <td class="num">{n.deliveries_per_sec.toFixed(1)}</td>
                  <td class="num">{ms(n.send_p99_ms)}</td>
                  <td>
                    <Flag on={n.store_up} />
                  </td>
                  <td>
                    <Flag on={n.presence_up} />
                  </td>
                  <td class="act">
                    {confirming === n.name ? (
                      <span class="confirm">
                        <button
                          type="button"
                          class="danger"
                          data-testid="drain-confirm"
                          title={n.local ? "This node serves this page: the console stops updating" : undefined}
                          onClick={() => void drain(n.name)}
                        >
                          Confirm drain
                        </button>
                        <button type="button" class="small" data-testid="drain-cancel" onClick={() => setConfirming(null)}>
                          Cancel
                        </button>
                      </span>
                    ) : (
                      <button
                        type="button"
                        data-testid="drain"
                        disabled={isDraining || busy === n.name || !n.up}
                        title="Close its connections, hand its conversations over, and stop the node"
                        onClick={() => setConfirming(n.name)}
                      >
                        {busy === n.name ? "Draining…" : "Drain"}
                      </button>
                    )}
                  </td>
                </tr>
              );
            })}
          </tbody>
        </table>
      </div>
    </>
  );
}

const DONE: Record<UserAction, string> = {
  disconnect: "disconnected: every connection closed (they may reconnect)",
  suspend: "suspended: connections closed, sign-in refused",
  unsuspend: "unsuspended: may sign in again",
};

function UserPanel({ api, onAction }: { api: AdminApi; onAction: () => void }) {
  const [query, setQuery] = useState("");
  const [user, setUser] = useState<UserInfo | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [status, setStatus] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  // Keeps the card current (online, suspended by another admin).
  const shown = user?.id;
  usePoll(
    async () => {
      if (!shown) return;
      try {
        const u = await api.user(shown);
        setUser((cur) => (cur?.id === u.id ? u : cur));
      } catch {
        // the lookup's own error stays
      }
    },
    USER_EVERY_MS,
    shown != null,
  );
  const lookup = async () => {
    const id = query.trim();
    if (!id) return;
    setBusy(true);
    setError(null);
    setStatus(null);
    try {
      setUser(await api.user(id));
    } catch (e) {
      setUser(null);
      setError(e instanceof ApiError && e.status === 404 ? `No user "${id}".` : message(e));
    } finally {
      setBusy(false);
    }
  };
  const act = async (action: UserAction) => {
    if (!user) return;
    setBusy(true);
    setError(null);
    setStatus(null);
    try {
      const u = await api.act(user.id, action);
      setUser(u);
      setStatus(`${u.id} ${DONE[action]}.`);
      onAction();
    } catch (e) {
      setError(`${action} failed: ${message(e)}`);
    } finally {
      setBusy(false);
    }
  };
  return (
    <>
      <form
        class="lookup"
        onSubmit={(e) => {
          e.preventDefault();
          void lookup();
        }}
      >
        <input
          data-testid="user-query"
          aria-label="Username"
          placeholder="username"
          value={query}
          onInput={(e) => setQuery(e.currentTarget.value)}
        />
        <button data-testid="user-lookup" type="submit" disabled={busy}>
          Look up
        </button>
      </form>
      {error && (
        <p class="error" role="alert" data-testid="user-error">
          {error}
        </p>
      )}
      {user && (
        <div
          class="result"
          data-testid="user-card"
          data-user={user.id}
          data-suspended={String(user.suspended)}
          data-online={String(user.online)}
        >
          <table class="kv">
            <tbody>
              <tr>
                <th>User</th>
                <td>
                  <strong>{user.id}</strong>
                  {user.display_name && <span class="muted"> ({user.display_name})</span>}
                  {user.admin && <span class="tag">admin</span>}
                </td>
              </tr>
              <tr>
                <th>Status</th>
                <td>
                  <Flag on={!user.suspended} yes="active" no="suspended" /> <Flag on={user.online} yes="online" no="offline" />
                </td>
              </tr>
              <tr>
                <th>Last seen</th>
                <td>{user.online ? "now" : user.last_seen ? new Date(user.last_seen).toLocaleString() : "–"}</td>
              </tr>
              <tr>
                <th>Created</th>
                <td>{new Date(user.created_at).toLocaleString()}</td>
              </tr>
            </tbody>
          </table>
          <div class="row">
            <button type="button" data-testid="disconnect" disabled={busy} onClick={() => void act("disconnect")}>
              Disconnect
            </button>
            {user.suspended ? (
              <button type="button" data-testid="unsuspend" disabled={busy} onClick={() => void act("unsuspend")}>
                Unsuspend
              </button>
            ) : (
              <button type="button" class="danger" data-testid="suspend" disabled={busy} onClick={() => void act("suspend")}>
                Suspend
              </button>
            )}
          </div>
          {status && (
            <p class="status" role="status" data-testid="user-status">
              {status}
            </p>
          )}
        </div>
      )}
    </>
  );
}

function ConversationPanel({ api }: { api: AdminApi }) {
  const [query, setQuery] = useState("");
  const [conv, setConv] = useState<ConversationInfo | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const lookup = async () => {
    const id = query.trim();
    if (!id) return;
    setBusy(true);
    setError(null);
    try {
      setConv(await api.conversation(id));
    } catch (e) {
      setConv(null);
      setError(e instanceof ApiError && e.status === 404 ? `No conversation "${id}".` : message(e));
    } finally {
      setBusy(false);
    }
  };
  return (
    <>
      <form
        class="lookup"
        onSubmit={(e) => {
          e.preventDefault();
          void lookup();
        }}
      >
        <input
          data-testid="conv-query"
          aria-label="Conversation id"
          placeholder="conversation id, e.g. g:…"
          value={query}
          onInput={(e) => setQuery(e.currentTarget.value)}
        />
        <button data-testid="conv-lookup" type="submit" disabled={busy}>
          Which node?
        </button>
      </form>
      {error && (
        <p class="error" role="alert" data-testid="conv-error">
          {error}
        </p>
      )}
      {conv && (
        <div class="result" data-testid="conv-card" data-id={conv.id}>
          <table class="kv">
            <tbody>
              <tr>
                <th>Conversation</th>
                <td>
                  <code>{conv.id}</code> <span class="muted">{conv.kind}</span>
                </td>
              </tr>
              <tr>
                <th>Owner node</th>
                <td>
                  <strong data-testid="conv-owner">{conv.owner}</strong>
                </td>
              </tr>
              <tr>
                <th>Members</th>
                <td>{conv.members}</td>
              </tr>
              <tr>
                <th>Revision</th>
                <td>{conv.rev}</td>
              </tr>
              <tr>
                <th>Last message</th>
                <td>{conv.last_message_id ?? "none"}</td>
              </tr>
              <tr>
                <th>Read markers</th>
                <td>{conv.read_markers}</td>
              </tr>
              <tr>
                <th title="Equal on every node once their copies agree">State digest</th>
                <td>
                  <code data-testid="conv-digest">{conv.digest}</code>
                </td>
              </tr>
            </tbody>
          </table>
        </div>
      )}
    </>
  );
}

function AuditTable({ entries }: { entries: AuditEntry[] }) {
  return (
    <div class="scroll">
      <table data-testid="audit">
        <thead>
          <tr>
            <th>When</th>
            <th>Admin</th>
            <th>Action</th>
            <th>Target</th>
            <th>Via node</th>
          </tr>
        </thead>
        <tbody>
          {entries.length === 0 && (
            <tr>
              <td colSpan={5} class="muted">
                Nothing yet.
              </td>
            </tr>
          )}
          {entries.map((a, i) => (
            <tr key={`${a.at}-${i}`} data-testid="audit-row" data-action={a.action} data-target={a.target}>
              <td>
                <time dateTime={new Date(a.at).toISOString()}>{new Date(a.at).toLocaleString()}</time>
              </td>
              <td>{a.admin}</td>
              <td>
                <span class={`action ${a.action}`}>{a.action}</span>
              </td>
              <td>{a.target}</td>
              <td>{a.node}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}
