//! The node's configuration: `cluster.toml`, then `CHAT__SECTION__KEY`
//! environment variables, then command-line flags; each field has a default,
//! unknown keys are rejected, and [`Config::validate`] checks what types cannot.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use chat_protocol::Limits;
use chat_storage::embedded::Durability;
use chat_storage::scylladb::ScyllaConfig;
use serde::{Deserialize, Serialize};

use crate::auth::AuthConfig;

/// The longest a write may wait for the search index's turn, in index
/// period plus poll period: a pass or two more, and the commit, must still
/// fit in the 5 s within which the protocol shows edits and deletes.
const MAX_INDEX_WAIT_MS: u64 = 4_000;

/// Why the configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// Which file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The TOML (file or environment) does not fit the schema.
    #[error("invalid configuration: {0}")]
    Parse(String),
    /// A value is out of range.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// `[node]`: who this node is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeSection {
    /// Unique name in the cluster; also the node's Router name.
    pub name: String,
    /// Unique number 0..=1023, part of every message id this node issues.
    pub id: u16,
    /// Directory for the embedded store and generated secrets.
    pub data_dir: PathBuf,
    /// Whether the node's memory may be backed by transparent huge pages.
    /// Off by default: the allocator asks for them, and a 2 MiB page counts
    /// whole once any byte of it is touched, so the many small allocations
    /// of idle connections cost more resident memory (and vary from run to
    /// run) with them; no CPU per delivery was gained (bench/HISTORY.md).
    pub huge_pages: bool,
}

impl Default for NodeSection {
    fn default() -> Self {
        NodeSection {
            name: "node-1".into(),
            id: 1,
            data_dir: PathBuf::from("data/node-1"),
            huge_pages: false,
        }
    }
}

/// `[listen]`: where the node accepts connections.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ListenSection {
    /// HTTP and WebSocket (`/v1/ws`) on one port. Port 0 picks a free one.
    pub http: SocketAddr,
    /// A request's headers must arrive within this many seconds; it is also
    /// how long a connection may stay idle before a request (or the
    /// WebSocket upgrade).
    pub header_read_timeout_secs: u64,
    /// A request's body must arrive within this many seconds.
    pub body_read_timeout_secs: u64,
    /// Connections one source address may hold open (0: no cap; behind a
    /// proxy every client has the proxy's address).
    pub max_connections_per_ip: usize,
    /// Client connections (WebSocket and Socket.IO) this node holds at
    /// most, those being admitted included; past it an upgrade gets 503
    /// `unavailable` with `Retry-After`, and the client tries another
    /// node. With the per-connection bounds of `[limits]` it bounds the
    /// node's memory in a reconnect storm. 0: no cap.
    pub max_connections: usize,
    /// Connections the kernel completes and queues for the node before it
    /// accepts them (`listen(2)`'s backlog, capped by the kernel at
    /// `net.core.somaxconn`). Past it new connections' SYNs are dropped and
    /// their clients retry after a second: a whole node's clients coming
    /// back at once must fit.
    pub backlog: u32,
    /// TLS for clients (`https://`, `wss://`) on the same port: the
    /// certificate chain (PEM), with `tls_key`. Read again on SIGHUP and
    /// when either file changes.
    pub tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM).
    pub tls_key: Option<PathBuf>,
    /// With TLS on, what a plain HTTP request to the port gets.
    pub plain_http: PlainHttp,
    /// With TLS on, how often (seconds) the certificate files are checked
    /// for a change; 0 to reload on SIGHUP only.
    pub tls_watch_secs: u64,
}

/// What a plain HTTP request gets on a port that speaks TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PlainHttp {
    /// 308 to the same address over `https://`.
    Redirect,
    /// 400, saying the port speaks TLS.
    Refuse,
}

impl Default for ListenSection {
    fn default() -> Self {
        ListenSection {
            http: ([127, 0, 0, 1], 8080).into(),
            header_read_timeout_secs: 10,
            body_read_timeout_secs: 10,
            max_connections_per_ip: 1024,
            max_connections: 0,
            backlog: 4096,
            tls_cert: None,
            tls_key: None,
            plain_http: PlainHttp::Redirect,
            tls_watch_secs: 10,
        }
    }
}

/// Which history backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StorageBackend {
    /// fjall on local disk, in `node.data_dir`.
    Embedded,
    /// A ScyllaDB (or Cassandra) cluster, `[storage.scylla]`: the node keeps
    /// nothing it needs on its own disk.
    Scylla,
}

/// `[storage]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageSection {
    /// The backend.
    pub backend: StorageBackend,
    /// `sync`: each batch is fsynced before it is acknowledged (survives a
    /// machine crash); `buffered`: written, fsynced in the background
    /// (survives a process crash). Embedded backend only.
    pub durability: Durability,
    /// The ScyllaDB cluster, for `backend = "scylla"`.
    pub scylla: ScyllaConfig,
}

impl Default for StorageSection {
    fn default() -> Self {
        StorageSection {
            backend: StorageBackend::Embedded,
            durability: Durability::Sync,
            scylla: ScyllaConfig::default(),
        }
    }
}

/// Which presence backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PresenceBackend {
    /// In this process: one node only.
    Memory,
    /// Redis, shared by the nodes: required as soon as there are two.
    Redis,
}

/// `[presence]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PresenceSection {
    /// The backend.
    pub backend: PresenceBackend,
    /// `redis://[user:password@]host:port[/db]`, for `backend = "redis"`;
    /// a Redis Cluster as `redis-cluster://host:port?node=host2:port2&...`
    /// (any of its nodes: the client discovers the rest and follows slots
    /// as they move).
    pub redis_url: String,
    /// With Redis: how long a node may go without a heartbeat before its
    /// users are swept offline (within a third more). Each node beats every
    /// third of it, one Redis call however many connections it holds.
    pub ttl_secs: u64,
    /// Whose presence a user may watch: `"contacts"` (those who share a
    /// conversation with them) or `"everyone"`.
    pub visible_to: VisibleTo,
}

/// Whose presence a user may watch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VisibleTo {
    /// Users who share a conversation with them.
    #[default]
    Contacts,
    /// Anyone.
    Everyone,
}

impl From<VisibleTo> for chat_actors::dispatch::Visibility {
    fn from(v: VisibleTo) -> Self {
        match v {
            VisibleTo::Contacts => chat_actors::dispatch::Visibility::Contacts,
            VisibleTo::Everyone => chat_actors::dispatch::Visibility::Everyone,
        }
    }
}

impl Default for PresenceSection {
    fn default() -> Self {
        PresenceSection {
            backend: PresenceBackend::Memory,
            redis_url: "redis://127.0.0.1:6379".into(),
            ttl_secs: 30,
            visible_to: VisibleTo::Contacts,
        }
    }
}

/// `[actors]`: tuning of the actors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ActorsSection {
    /// Seconds without activity after which a conversation actor stops.
    pub conversation_idle_secs: u64,
    /// Recent messages each conversation actor keeps in memory: retries
    /// and edits start from them, and pages of history within them are
    /// served without reading the store.
    pub tail: usize,
    /// Most bytes of those one conversation keeps.
    pub tail_bytes: usize,
    /// Most bytes of those all the node's conversations keep together
    /// (`chat_held_message_bytes`); past it each keeps its newest 256.
    pub tail_node_bytes: usize,
    /// How long a connecting client may wait for the owners of its
    /// conversations (in a cluster) to confirm they will send to its node;
    /// past it the client is let in and catches up on what it missed.
    pub interest_ack_ms: u64,
    /// Whether a connected user's session actor sleeps while it has
    /// nothing to do (its state kept, woken by the next message): an idle
    /// connection then holds no actor task or mailbox.
    pub sessions_sleep: bool,
    /// Seconds a session whose last connection left sleeps before it ends
    /// (with `sessions_sleep`; 0 ends it at once): a client back within
    /// them resumes it without its conversations read again.
    pub session_linger_secs: u64,
}

impl Default for ActorsSection {
    fn default() -> Self {
        ActorsSection {
            conversation_idle_secs: 120,
            tail: 1_024,
            tail_bytes: 1 << 20,
            tail_node_bytes: 256 << 20,
            interest_ack_ms: 2_000,
            sessions_sleep: true,
            session_linger_secs: 30,
        }
    }
}

/// `[shutdown]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ShutdownSection {
    /// Seconds a drain may take before the node exits anyway.
    pub drain_timeout_secs: u64,
}

impl Default for ShutdownSection {
    fn default() -> Self {
        ShutdownSection {
            drain_timeout_secs: 20,
        }
    }
}

/// `[web]`: the web app the node serves at `/`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebSection {
    /// The built app (`web/dist`, made by `npm run build` in `web/`);
    /// relative paths are from the working directory. A node started
    /// elsewhere, or before the build, answers `/` with how to build it.
    pub dir: PathBuf,
    /// The public base URLs (`http(s)://host[:port]`) of the cluster's nodes
    /// the app's pages may also sign in and connect through when their own
    /// node goes, published at `GET /v1/cluster/nodes` and allowed by the
    /// pages' Content-Security-Policy. Empty: a page uses only the node (or
    /// proxy) that served it. Set the same list on every node.
    pub nodes: Vec<String>,
}

impl Default for WebSection {
    fn default() -> Self {
        WebSection {
            dir: PathBuf::from("web/dist"),
            nodes: Vec::new(),
        }
    }
}

/// `[admin]`: who may use the admin console (`/admin`) and the
/// `/v1/admin/` API, besides the accounts given the admin flag with
/// `chat-node admin grant USER`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminSection {
    /// User ids (login names).
    pub users: Vec<String>,
}

/// `[telemetry]`: OpenTelemetry traces. Off unless `otlp_endpoint` is set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TelemetrySection {
    /// An OpenTelemetry collector's OTLP/HTTP URL, such as
    /// `http://127.0.0.1:4318` (`/v1/traces` is added to a URL without a
    /// path).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub otlp_endpoint: Option<String>,
    /// The share of sends traced from the node that receives them (0-1);
    /// the nodes they pass through follow that decision.
    pub sampling_ratio: f64,
    /// `service.name` of the spans.
    pub service_name: String,
}

impl Default for TelemetrySection {
    fn default() -> Self {
        TelemetrySection {
            otlp_endpoint: None,
            sampling_ratio: 0.01,
            service_name: "chat-node".into(),
        }
    }
}

/// `[cluster]`: joining other nodes. Without `listen` the node is alone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterSection {
    /// Node-to-node port (ractor_cluster). Unset: a single node.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    /// Nodes to dial at start and whenever their link drops ("host:port" of
    /// their `cluster.listen`); this node's own address may be listed too,
    /// so every node can share one list.
    pub seeds: Vec<String>,
    /// Shared secret that peers must present; required with `listen`.
    pub cookie: String,
    /// How long to wait at start for every seed before serving with those
    /// that answered.
    pub join_timeout_secs: u64,
    /// Most time to catch up with the connected nodes' writes before giving up.
    pub sync_timeout_secs: u64,
    /// `transitive`: also connect to the nodes that peers know (a full mesh
    /// from a partial seed list). `seeds`: connect only to the seeds and to
    /// whoever dials in, for networks where nodes must not find each other
    /// on their own (each pair must then be listed on one side).
    pub mesh: Mesh,
    /// Mutual TLS between nodes: this node's certificate chain (PEM). With
    /// `tls_key` and `tls_ca`; a peer must present a certificate signed by
    /// `tls_ca`, and the seeds' host (name or IP) must be in their
    /// certificates. Needs `mesh = "seeds"`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<PathBuf>,
    /// This node's private key (PEM).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<PathBuf>,
    /// The CA that signs every node's certificate (PEM).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_ca: Option<PathBuf>,
    /// At most this many bytes sent to one peer and not yet confirmed
    /// handled by it (what can wait in this node's memory for a peer that
    /// stops reading); past it the peer is dropped, and it catches up when
    /// it reconnects.
    pub peer_queue_bytes: u64,
}

/// The smallest `cluster.peer_queue_bytes`: the largest peer message (a
/// replication chunk) must fit.
pub const MIN_PEER_QUEUE_BYTES: u64 = 4 << 20;

/// How the full mesh of nodes comes about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mesh {
    /// Peers introduce their peers.
    #[default]
    Transitive,
    /// Only seeds are dialed.
    Seeds,
}

impl Default for ClusterSection {
    fn default() -> Self {
        ClusterSection {
            listen: None,
            seeds: Vec::new(),
            cookie: String::new(),
            join_timeout_secs: 5,
            sync_timeout_secs: 120,
            mesh: Mesh::Transitive,
            tls_cert: None,
            tls_key: None,
            tls_ca: None,
            peer_queue_bytes: chat_actors::cluster::DEFAULT_PEER_QUEUE_BYTES,
        }
    }
}

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Who this node is.
    pub node: NodeSection,
    /// Where it listens.
    pub listen: ListenSection,
    /// History backend.
    pub storage: StorageSection,
    /// Presence backend.
    pub presence: PresenceSection,
    /// Tokens and accounts.
    pub auth: AuthConfig,
    /// Client limits.
    pub limits: Limits,
    /// Actor tuning.
    pub actors: ActorsSection,
    /// Drain.
    pub shutdown: ShutdownSection,
    /// Other nodes.
    pub cluster: ClusterSection,
    /// The web app.
    pub web: WebSection,
    /// The admin console's users.
    pub admin: AdminSection,
    /// Traces.
    pub telemetry: TelemetrySection,
    /// Notifications for people who are away.
    pub notifications: chat_notify::NotifyConfig,
    /// Uploaded files.
    pub media: chat_media::MediaConfig,
    /// Full-text search.
    pub search: chat_search::SearchConfig,
    /// Delays that tests set to widen failure windows; never in production.
    pub faults: FaultsSection,
}

/// `[faults]`: delays the test suites set, so that the windows in which a
/// failure could cost live delivery are wide enough to hit every run. All
/// zero (off) by default; a node with any set logs a warning at start.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FaultsSection {
    /// An owner applies and acknowledges other nodes' interest reports this
    /// many milliseconds late (a slow owner).
    pub interest_ack_delay_ms: u64,
    /// An owner hands a batch to the other nodes this many milliseconds
    /// after acknowledging it (the window in which its death loses a
    /// fan-out).
    pub peer_fanout_delay_ms: u64,
}

impl FaultsSection {
    /// Whether any delay is set.
    pub fn any(&self) -> bool {
        self.interest_ack_delay_ms > 0 || self.peer_fanout_delay_ms > 0
    }
}

/// Prefix of environment overrides: `CHAT__LIMITS__MAX_BODY_BYTES=1024`.
pub const ENV_PREFIX: &str = "CHAT__";

impl Config {
    /// Reads `path` (if given) and applies the environment `env`.
    pub fn load(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let mut table: toml::Table = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                    path: p.to_path_buf(),
                    source,
                })?;
                text.parse()
                    .map_err(|e: toml::de::Error| ConfigError::Parse(e.to_string()))?
            }
            None => toml::Table::new(),
        };
        let overrides: BTreeMap<String, String> = env
            .into_iter()
            .filter(|(k, _)| k.starts_with(ENV_PREFIX))
            .collect();
        for (key, value) in overrides {
            let path: Vec<String> = key[ENV_PREFIX.len()..]
                .split("__")
                .map(|s| s.to_ascii_lowercase())
                .collect();
            set_path(&mut table, &path, parse_env_value(&value))
                .map_err(|e| ConfigError::Parse(format!("{key}: {e}")))?;
        }
        let config: Config = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::Parse(e.to_string()))?;
        Ok(config)
    }

    /// Checks ranges and combinations.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        for hook in &self.notifications.webhooks {
            hook.check().map_err(ConfigError::Invalid)?;
        }
        if self.node.id > chat_protocol::ids::MAX_NODE_ID {
            return bad(format!(
                "node.id must be at most {}",
                chat_protocol::ids::MAX_NODE_ID
            ));
        }
        if self.listen.tls_cert.is_some() != self.listen.tls_key.is_some() {
            return bad("listen.tls_cert and listen.tls_key go together".into());
        }
        if chat_protocol::UserId::new(&self.node.name).is_err() {
            return bad("node.name must be 1-64 bytes of [A-Za-z0-9_.:-]".into());
        }
        if let Some(u) = self
            .admin
            .users
            .iter()
            .find(|u| chat_protocol::UserId::new(u).is_err())
        {
            return bad(format!("admin.users: {u:?} is not a user id"));
        }
        for n in &self.web.nodes {
            if let Err(e) = crate::origin::origin(n) {
                return bad(format!("web.nodes: {n:?}: {e}"));
            }
        }
        let n = &self.notifications;
        if n.index_every_ms.saturating_add(n.poll_ms) > MAX_INDEX_WAIT_MS {
            return bad(format!(
                "notifications.index_every_ms plus poll_ms must be at most {MAX_INDEX_WAIT_MS}: \
                 search shows edits and deletes within 5 s"
            ));
        }
        if !(0.0..=1.0).contains(&self.telemetry.sampling_ratio) {
            return bad("telemetry.sampling_ratio must be between 0 and 1".into());
        }
        let l = &self.limits;
        if l.max_frame_bytes < 1024 {
            return bad("limits.max_frame_bytes must be at least 1024".into());
        }
        if l.max_body_bytes == 0 || l.max_body_bytes >= l.max_frame_bytes {
            return bad("limits.max_body_bytes must be above 0 and below max_frame_bytes".into());
        }
        if l.outbound_bytes < 64 * 1024 {
            return bad("limits.outbound_bytes must be at least 65536".into());
        }
        if l.outbound_queue == 0 || l.connections_per_user == 0 || l.inflight_per_connection == 0 {
            return bad("limits.outbound_queue, connections_per_user and inflight_per_connection must be above 0".into());
        }
        if l.sends_per_second == 0 || l.send_burst == 0 {
            return bad("limits.sends_per_second and send_burst must be above 0".into());
        }
        if l.reactions_per_second == 0 || l.reaction_burst == 0 {
            return bad("limits.reactions_per_second and reaction_burst must be above 0".into());
        }
        if l.idle_timeout_secs == 0 {
            return bad("limits.idle_timeout_secs must be above 0".into());
        }
        if self.presence.ttl_secs == 0 {
            return bad("presence.ttl_secs must be above 0".into());
        }
        if self.listen.header_read_timeout_secs == 0 || self.listen.body_read_timeout_secs == 0 {
            return bad(
                "listen.header_read_timeout_secs and body_read_timeout_secs must be above 0".into(),
            );
        }
        if self.storage.backend == StorageBackend::Scylla {
            self.storage.scylla.check().map_err(ConfigError::Invalid)?;
            // Nodes on ScyllaDB share the indexing work (the outbox's
            // shards), so an index on each node's own disk would hold only
            // the conversations that node happened to index.
            if self.search.backend == chat_search::SearchBackend::Embedded {
                return bad(
                    "search.backend = \"embedded\" keeps the index on this node's disk, \
                    but nodes on ScyllaDB keep nothing there and share the indexing: set \
                    search.backend = \"opensearch\" (or \"off\")"
                        .into(),
                );
            }
        }
        if self.presence.backend == PresenceBackend::Redis && self.presence.redis_url.is_empty() {
            return bad("presence.redis_url is required with backend = \"redis\"".into());
        }
        if self.cluster.peer_queue_bytes < MIN_PEER_QUEUE_BYTES {
            return bad(format!(
                "cluster.peer_queue_bytes must be at least {MIN_PEER_QUEUE_BYTES} (a replication chunk is up to 2 MiB)"
            ));
        }
        if self.cluster.listen.is_some() {
            if self.cluster.cookie.len() < 16 {
                return bad(
                    "cluster.cookie must be set (16 characters or more) when cluster.listen is set"
                        .into(),
                );
            }
            if self.presence.backend != PresenceBackend::Redis {
                return bad("a cluster needs presence.backend = \"redis\" (presence is shared by the nodes)".into());
            }
            // On ScyllaDB the first node's generated secret is kept in the
            // store for the others.
            if self.auth.algorithm == crate::auth::Algorithm::HS256
                && self.auth.jwt_secret.is_none()
                && self.storage.backend == StorageBackend::Embedded
            {
                return bad("a cluster on the embedded store needs auth.jwt_secret (HS256): every node must accept the tokens the others issue".into());
            }
            let c = &self.cluster;
            let tls = [&c.tls_cert, &c.tls_key, &c.tls_ca];
            let set = tls.iter().filter(|t| t.is_some()).count();
            if set != 0 && set != 3 {
                return bad("cluster.tls_cert, tls_key and tls_ca go together".into());
            }
            if set == 3 && c.mesh != Mesh::Seeds {
                // ractor_cluster dials peers' peers without TLS.
                return bad(
                    "cluster TLS needs cluster.mesh = \"seeds\" (list every node as a seed)".into(),
                );
            }
        } else if !self.cluster.seeds.is_empty() {
            return bad("cluster.seeds is set but cluster.listen is not".into());
        }
        if self.actors.tail == 0 {
            return bad("actors.tail must be above 0".into());
        }
        Ok(())
    }

    /// The default configuration as commented TOML.
    pub fn default_toml() -> String {
        toml::to_string_pretty(&Config::default()).unwrap_or_default()
    }
}

/// An environment value is TOML when it parses as one (`42`, `true`,
/// `"x"`), else a plain string.
fn parse_env_value(v: &str) -> toml::Value {
    format!("x = {v}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("x"))
        .unwrap_or_else(|| toml::Value::String(v.to_string()))
}

fn set_path(table: &mut toml::Table, path: &[String], value: toml::Value) -> Result<(), String> {
    match path {
        [] => Err("empty key".into()),
        [last] => {
            table.insert(last.clone(), value);
            Ok(())
        }
        [first, rest @ ..] => {
            let entry = table
                .entry(first.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            match entry {
                toml::Value::Table(t) => set_path(t, rest, value),
                _ => Err(format!("{first} is not a section")),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_round_trip() {
        let c = Config::default();
        c.validate().unwrap();
        let text = Config::default_toml();
        let back: Config = toml::from_str(&text).unwrap();
        assert_eq!(back, c);
    }

    #[test]
    fn environment_overrides_file_and_unknown_keys_fail() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "[limits]\nmax_body_bytes = 100\n[node]\nname = \"a\"\n",
        )
        .unwrap();
        let env = vec![
            (
                "CHAT__LIMITS__MAX_BODY_BYTES".to_string(),
                "200".to_string(),
            ),
            ("CHAT__NODE__NAME".to_string(), "b".to_string()),
            ("OTHER".to_string(), "x".to_string()),
        ];
        let c = Config::load(Some(&path), env).unwrap();
        assert_eq!(c.limits.max_body_bytes, 200);
        assert_eq!(c.node.name, "b");

        std::fs::write(&path, "[limits]\nmax_bdy_bytes = 100\n").unwrap();
        let err = Config::load(Some(&path), vec![]).unwrap_err();
        assert!(err.to_string().contains("max_bdy_bytes"), "{err}");
    }

    #[test]
    fn validate_rejects_out_of_range() {
        let mut c = Config::default();
        c.limits.max_body_bytes = c.limits.max_frame_bytes;
        assert!(c.validate().is_err());
        let mut c = Config::default();
        c.node.id = 5000;
        assert!(c.validate().is_err());
        let mut c = Config::default();
        c.notifications.index_every_ms = 3_500;
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("index_every_ms"), "{err}");
    }

    #[test]
    fn a_cluster_needs_its_shared_settings() {
        let mut c = Config::default();
        c.cluster.listen = Some(([127, 0, 0, 1], 9001).into());
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("cookie"), "{err}");
        c.cluster.cookie = "0123456789abcdef".into();
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("redis"), "{err}");
        c.presence.backend = PresenceBackend::Redis;
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("jwt_secret"), "{err}");
        c.auth.jwt_secret = Some("s".repeat(32));
        c.validate().unwrap();
        c.cluster.tls_cert = Some("c.pem".into());
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("go together"), "{err}");
        c.cluster.tls_key = Some("k.pem".into());
        c.cluster.tls_ca = Some("ca.pem".into());
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("mesh"), "{err}");
        c.cluster.mesh = Mesh::Seeds;
        c.validate().unwrap();
        let mut alone = Config::default();
        alone.cluster.seeds = vec!["127.0.0.1:9001".into()];
        assert!(alone.validate().is_err(), "seeds without listen");
    }

    #[test]
    fn the_scylla_backend_from_the_environment() {
        let env = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let c = Config::load(
            None,
            env(&[
                ("CHAT__STORAGE__BACKEND", "scylla"),
                (
                    "CHAT__STORAGE__SCYLLA__NODES",
                    r#"["10.0.0.1:9042","10.0.0.2:9042"]"#,
                ),
                ("CHAT__STORAGE__SCYLLA__KEYSPACE", "chat_prod"),
                ("CHAT__STORAGE__SCYLLA__REPLICATION_FACTOR", "3"),
                ("CHAT__STORAGE__SCYLLA__CONSISTENCY", "quorum"),
                ("CHAT__SEARCH__BACKEND", "off"),
            ]),
        )
        .unwrap();
        c.validate().unwrap();
        // An index on the node's own disk, which ScyllaDB nodes keep empty.
        let mut local = c.clone();
        local.search.backend = chat_search::SearchBackend::Embedded;
        let err = local.validate().unwrap_err().to_string();
        assert!(err.contains("search.backend"), "{err}");
        assert_eq!(c.storage.backend, StorageBackend::Scylla);
        let s = &c.storage.scylla;
        assert_eq!(s.nodes, vec!["10.0.0.1:9042", "10.0.0.2:9042"]);
        assert_eq!(
            (s.keyspace.as_str(), s.replication_factor),
            ("chat_prod", 3)
        );
        assert_eq!(s.bucket_days, 10, "the default bucket");
        for (key, value, complaint) in [
            ("CHAT__STORAGE__SCYLLA__KEYSPACE", "Chat-Prod", "keyspace"),
            ("CHAT__STORAGE__SCYLLA__NODES", "[]", "nodes"),
            ("CHAT__STORAGE__SCYLLA__BUCKET_DAYS", "0", "bucket_days"),
            (
                "CHAT__STORAGE__SCYLLA__REPLICATION_FACTOR",
                "0",
                "replication_factor",
            ),
        ] {
            let c = Config::load(
                None,
                env(&[("CHAT__STORAGE__BACKEND", "scylla"), (key, value)]),
            )
            .unwrap();
            let err = c.validate().unwrap_err().to_string();
            assert!(err.contains(complaint), "{key}={value}: {err}");
        }
        let bad = Config::load(None, env(&[("CHAT__STORAGE__SCYLLA__CONSISTENCY", "most")]));
        assert!(bad.is_err(), "an unknown consistency level");
    }

    #[test]
    fn shipped_cluster_toml_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../cluster.toml");
        let c = Config::load(Some(&path), vec![]).unwrap();
        c.validate().unwrap();
    }
}
