//! Presence in Redis, shared by every node of a cluster.
//!
//! # Key layout (`P` is [`RedisPresenceConfig::key_prefix`], default `chat:`)
//!
//! | key / channel     | type       | content                                                        |
//! |-------------------|------------|----------------------------------------------------------------|
//! | `P` `p:{user}`    | sorted set | members `incarnation/conn`, score `+inf`                       |
//! | `P` `ls:{user}`   | string     | last seen, Unix ms                                             |
//! | `P` `c:user`      | pub/sub    | [`chat_protocol::Presence`] as JSON, on every transition       |
//! | `P` `nodes`       | hash       | incarnation (`node/start.n`) -> its last heartbeat (Redis ms)  |
//! | `P` `u:{inc}`     | set        | the users an incarnation has entries for                       |
//! | `P` `sweep:{inc}` | string     | held (for the ttl at most) by the node sweeping an incarnation |
//!
//! The braces are literal: they are Redis Cluster hash tags, so both keys of
//! a user live in one slot and a script may touch both.
//!
//! A user is online while it has an entry. Entries do not expire: an idle
//! node costs Redis one heartbeat per `ttl / 3`, however many connections it
//! holds. Each run of a node is an *incarnation* (`node/start.n`), which
//! beats in `P nodes` every `ttl / 3` and lists in `P u:{inc}` the users it
//! added entries for. An incarnation that has not beaten for `ttl` is dead:
//! the first node to see it (every node looks every `ttl / 3`) takes its
//! sweep key, removes its entries user by user, announces those left with no
//! entry offline (`last_seen` = the sweep, the moment until which queries
//! reported them online), then forgets it. So a dead node's users go offline
//! within `ttl` and a check period, as when entries expired by themselves.
//! A node whose heartbeat finds its incarnation gone or stale (Redis lost it,
//! or the node was cut off long enough to be swept), or that reconnected to
//! Redis (which may have come back from a snapshot, with entries the node
//! had removed), starts a new incarnation and adds its live connections
//! again; the old one is swept once stale, with whatever it still holds.
//! Lists only grow (a removal replayed onto a restored Redis would hide an
//! entry from the sweep), so a node also renews its incarnation once the
//! list holds many more users than it has. Every script reads the time from
//! Redis (`TIME`), so nodes' clocks may disagree; only the `last_seen` of a
//! disconnect comes from the node's clock (capped by Redis's), since its
//! removal may reach Redis late.
//!
//! Entries of earlier releases (`node:conn`, score = expiry) still count
//! until they expire, and are trimmed then: nodes of both versions can share
//! one Redis during a rolling upgrade.
//!
//! Transitions are published by whoever causes them: the node that adds a
//! user's first entry (`online`), the node that removes its last one
//! (`offline`), and, for a dead node's users, the node that sweeps them.
//! Each node subscribes to the channels of the users its sessions watch and
//! re-checks them every `ttl / 3`, which also repairs anything pub/sub lost
//! while Redis was unreachable.
//!
//! When Redis is unreachable every call fails within
//! [`RedisPresenceConfig::op_timeout`] (twice that for `watch`/`unwatch`,
//! which may wait for another one first; at once when the client already
//! knows the connection is down), the client reconnects forever with
//! backoff, and on reconnection this node adds its live connections again
//! (Redis may have restarted empty), replays the removals that failed, and
//! re-subscribes.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use chat_protocol::{now_ms, Presence, Status, UserId};
use fred::clients::SubscriberClient;
use fred::error::Error as RedisError;
use fred::interfaces::{ClientLike, EventInterface, LuaInterface, PubsubInterface};
use fred::prelude::{Builder, Client, Config, ReconnectPolicy, Server, Value};
use fred::types::scripts::Script;
use fred::types::{ClusterHash, ConnectHandle, CustomCommand, Message};
use tokio::sync::{broadcast, mpsc, oneshot, Notify};
use tokio_util::sync::{CancellationToken, DropGuard};

use super::{ConnKey, PresenceError, PresenceStore};

mod lua;

/// Commands per pipeline (and channels per SUBSCRIBE): large enough to
/// amortise round trips, small enough not to stall Redis.
const MAX_BATCH: usize = 512;
/// Failed removals kept for replay; beyond this the oldest are left to expire.
const MAX_PENDING_LEAVES: usize = 65_536;
/// Disconnects that overtook their connect (see [`Local::early`]).
const MAX_EARLY: usize = 4_096;
/// How often to look whether a lost connection is back.
const RECONNECT_POLL: Duration = Duration::from_millis(50);
/// Capacity of the change channel and of the client's event channels.
const CHANNEL_CAPACITY: usize = 4_096;
/// Below this the refresh traffic would dominate.
const MIN_TTL: Duration = Duration::from_millis(300);

/// Settings of [`RedisPresence`].
#[derive(Clone)]
pub struct RedisPresenceConfig {
    /// `redis://[user:password@]host:port[/db]`.
    pub url: String,
    /// How long a node may go without a heartbeat before its entries are
    /// swept: about the most a dead node's users stay online (a check period
    /// more at worst). Nodes beat every `ttl / 3`; at least 300 ms.
    pub ttl: Duration,
    /// This node's name, the first part of its entries' members
    /// (`node/incarnation/conn`). It, not [`ConnKey::node`], names the
    /// entries, because this node removes them: two nodes must not share a
    /// name.
    pub node: Arc<str>,
    /// Prepended to every key and channel, so clusters can share a Redis.
    pub key_prefix: String,
    /// The longest any presence call waits for Redis.
    pub op_timeout: Duration,
    /// How many users beyond twice those connected here this node's list in
    /// Redis may hold before the node renews it (lists only grow; see the
    /// module docs). Renewing costs a call per connection and, after the
    /// ttl, a call per user on the old list: large enough that a connect
    /// storm (users coming and going at once) does not set it off.
    pub list_slack: usize,
}

impl RedisPresenceConfig {
    /// The default [`ttl`](Self::ttl).
    pub const DEFAULT_TTL: Duration = Duration::from_secs(30);
    /// The default [`key_prefix`](Self::key_prefix).
    pub const DEFAULT_PREFIX: &'static str = "chat:";
    /// The default [`op_timeout`](Self::op_timeout).
    pub const DEFAULT_OP_TIMEOUT: Duration = Duration::from_secs(1);
    /// The default [`list_slack`](Self::list_slack).
    pub const DEFAULT_LIST_SLACK: usize = 65_536;

    /// Defaults for everything but where Redis is and who this node is.
    pub fn new(url: impl Into<String>, node: impl Into<Arc<str>>) -> Self {
        RedisPresenceConfig {
            url: url.into(),
            ttl: Self::DEFAULT_TTL,
            node: node.into(),
            key_prefix: Self::DEFAULT_PREFIX.to_string(),
            op_timeout: Self::DEFAULT_OP_TIMEOUT,
            list_slack: Self::DEFAULT_LIST_SLACK,
        }
    }

    /// With another TTL.
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// With another key prefix.
    pub fn with_key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.key_prefix = prefix.into();
        self
    }

    /// With another per-call timeout.
    pub fn with_op_timeout(mut self, timeout: Duration) -> Self {
        self.op_timeout = timeout;
        self
    }

    /// With another [`list_slack`](Self::list_slack).
    pub fn with_list_slack(mut self, users: usize) -> Self {
        self.list_slack = users;
        self
    }
}

// By hand so that a password in the URL never reaches a log.
impl fmt::Debug for RedisPresenceConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisPresenceConfig")
            .field("url", &redact(&self.url))
            .field("ttl", &self.ttl)
            .field("node", &self.node)
            .field("key_prefix", &self.key_prefix)
            .field("op_timeout", &self.op_timeout)
            .field("list_slack", &self.list_slack)
            .finish()
    }
}

fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://***{}", &url[..scheme], &url[at..])
        }
        _ => url.to_string(),
    }
}

/// Presence of a cluster, in Redis. See the [module docs](self).
///
/// Dropping it stops its tasks and connections without removing this node's
/// entries, exactly like a crash: they expire within the TTL. Connections
/// that close normally are removed by `disconnected`.
pub struct RedisPresence {
    shared: Arc<Shared>,
    ops: mpsc::UnboundedSender<Op>,
    _stop: DropGuard,
}

struct Shared {
    client: Client,
    subscriber: SubscriberClient,
    handles: Mutex<Vec<ConnectHandle>>,
    scripts: [Script; SCRIPTS],
    node: Arc<str>,
    /// The incarnation this node's writer adds entries under, for the
    /// checker, which must not sweep it.
    current: Mutex<Arc<str>>,
    prefix: String,
    ttl: Duration,
    op_timeout: Duration,
    list_slack: usize,
    /// `host:port`, for error messages (the URL may hold a password).
    server: String,
    local: Mutex<Local>,
    watched: Mutex<HashMap<UserId, Known>>,
    tx: broadcast::Sender<Presence>,
    recheck: Notify,
    sub_order: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct Local {
    /// The user of each live connection.
    conns: HashMap<ConnKey, UserId>,
    /// How many of them each user has.
    per_user: HashMap<UserId, u32>,
    /// Sessions report each change from its own task, so a short-lived
    /// connection's disconnect can run before its connect; remembering it
    /// keeps the late connect from leaving an entry refreshed forever.
    early: HashSet<ConnKey>,
}

/// What this node knows about a watched user.
#[derive(Default)]
struct Known {
    status: Option<Status>,
    /// Bumped by every observation, so a check that read Redis before a
    /// newer pub/sub message cannot overwrite it with a stale answer.
    generation: u64,
    /// A query about the user failed, or messages were lost before anyone
    /// read it, so a session may know nothing: the next check announces the
    /// status even if unchanged.
    unsure: bool,
}

/// Where an observation of a watched user comes from; reads carry the
/// user's generation from before Redis was read.
#[derive(Clone, Copy)]
enum Source {
    Message,
    Check(u64),
    Query(u64),
}

enum Op {
    Touch {
        user: UserId,
        conn: u64,
        /// The user had no other connection here: it may be new to the
        /// incarnation's list.
        first: bool,
        reply: oneshot::Sender<Result<(), PresenceError>>,
    },
    Leave {
        leave: Leave,
        reply: oneshot::Sender<Result<(), PresenceError>>,
    },
}

/// The clients' event streams, taken before they connect.
struct Events {
    messages: broadcast::Receiver<Message>,
    sub_reconnects: broadcast::Receiver<Server>,
    main_reconnects: broadcast::Receiver<Server>,
    writer_reconnects: broadcast::Receiver<Server>,
}

struct Leave {
    user: UserId,
    conn: u64,
    /// Unix ms, this node's clock.
    at: u64,
}

/// The scripts, by index in [`Shared::scripts`].
#[derive(Clone, Copy)]
enum Which {
    Touch = 0,
    Leave = 1,
    Observe = 2,
    Sweep = 3,
    Beat = 4,
    Stale = 5,
    Forget = 6,
}

const SCRIPTS: usize = 7;

/// One command of a pipeline: a script, or a plain command whose first
/// argument is its key.
enum Cmd {
    Script(Which),
    Plain(&'static str),
}

struct Call {
    cmd: Cmd,
    keys: Vec<String>,
    args: Vec<String>,
}

/// This run of the node as Redis knows it: `node/start.n`, where `n` counts
/// the times Redis lost track of it (see the module docs).
struct Incarnation {
    node: Arc<str>,
    start: u64,
    n: u32,
    id: Arc<str>,
    /// Its first heartbeat is in: a node that dies from now on is swept.
    registered: bool,
}

impl Incarnation {
    fn new(node: Arc<str>) -> Self {
        let start = now_ms();
        Incarnation {
            id: Self::id(&node, start, 0),
            node,
            start,
            n: 0,
            registered: false,
        }
    }

    fn id(node: &str, start: u64, n: u32) -> Arc<str> {
        Arc::from(format!("{node}/{start:x}.{n}"))
    }

    /// The next one, after Redis lost this one.
    fn next(&mut self) {
        self.n += 1;
        self.id = Self::id(&self.node, self.start, self.n);
        self.registered = false;
    }
}

impl RedisPresence {
    /// Starts the clients and the background tasks. Fails only on a bad
    /// configuration: an unreachable Redis is waited for up to `op_timeout`,
    /// then the node runs degraded ([`ready`](Presence::ready) says why)
    /// until Redis answers.
    pub async fn connect(config: RedisPresenceConfig) -> Result<Self, PresenceError> {
        if config.ttl < MIN_TTL {
            return Err(PresenceError(format!(
                "presence ttl must be at least {MIN_TTL:?}"
            )));
        }
        if config.op_timeout.is_zero() {
            return Err(PresenceError("presence op_timeout must be above 0".into()));
        }
        let mut redis_config = Config::from_url(&config.url)
            .map_err(|e| PresenceError(format!("bad redis url {}: {e}", redact(&config.url))))?;
        // Start even while Redis is down: chat does not need it.
        redis_config.fail_fast = false;
        let server = redis_config
            .server
            .hosts()
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",");
        let op_timeout = config.op_timeout;
        let mut builder = Builder::from_config(redis_config);
        builder
            .with_performance_config(|p| {
                p.default_command_timeout = op_timeout;
                p.broadcast_channel_capacity = CHANNEL_CAPACITY;
            })
            .with_connection_config(|c| {
                c.connection_timeout = op_timeout.max(Duration::from_secs(1));
                c.internal_command_timeout = op_timeout.max(Duration::from_secs(1));
                c.tcp.nodelay = Some(true);
                // A silent peer (frozen server, dropped packets) is noticed
                // only by a reply that never comes.
                c.unresponsive.max_timeout = Some((op_timeout * 5).max(Duration::from_secs(2)));
                c.unresponsive.interval = Duration::from_millis(500);
                // Bounds what piles up while Redis is away.
                c.max_command_buffer_len = 100_000;
            })
            // Forever, 100 ms doubling up to 2 s.
            .set_policy(ReconnectPolicy::new_exponential(0, 100, 2_000, 2));
        let client = builder
            .build()
            .map_err(|e| PresenceError(format!("redis client: {e}")))?;
        let subscriber = builder
            .build_subscriber_client()
            .map_err(|e| PresenceError(format!("redis subscriber: {e}")))?;

        // Receivers exist before anything connects: a broadcast drops what
        // is sent while nobody listens.
        let events = Events {
            messages: subscriber.message_rx(),
            sub_reconnects: subscriber.reconnect_rx(),
            main_reconnects: client.reconnect_rx(),
            writer_reconnects: client.reconnect_rx(),
        };
        let shared = Arc::new(Shared {
            handles: Mutex::new(vec![client.connect(), subscriber.connect()]),
            client,
            subscriber,
            scripts: [
                lua::TOUCH,
                lua::LEAVE,
                lua::OBSERVE,
                lua::SWEEP,
                lua::BEAT,
                lua::STALE,
                lua::FORGET,
            ]
            .map(|script| Script::from_lua(format!("{}{script}", lua::PRELUDE))),
            current: Mutex::new(Arc::from("")),
            node: config.node,
            prefix: config.key_prefix,
            ttl: config.ttl,
            op_timeout,
            list_slack: config.list_slack,
            server,
            local: Mutex::new(Local::default()),
            watched: Mutex::new(HashMap::new()),
            tx: broadcast::channel(CHANNEL_CAPACITY).0,
            recheck: Notify::new(),
            sub_order: tokio::sync::Mutex::new(()),
        });
        let up = tokio::time::timeout(op_timeout, async {
            while !(shared.client.is_connected() && shared.subscriber.is_connected()) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
        if up.is_err() {
            tracing::warn!(
                server = %shared.server,
                "redis presence: not reachable yet; running degraded until it is"
            );
        }

        let stop = CancellationToken::new();
        let (ops, rx) = mpsc::unbounded_channel();
        tokio::spawn(writer(
            shared.clone(),
            rx,
            events.writer_reconnects,
            stop.clone(),
        ));
        tokio::spawn(listener(shared.clone(), events.messages, stop.clone()));
        tokio::spawn(checker(
            shared.clone(),
            events.sub_reconnects,
            events.main_reconnects,
            stop.clone(),
        ));
        Ok(RedisPresence {
            shared,
            ops,
            _stop: stop.drop_guard(),
        })
    }
}

#[async_trait]
impl PresenceStore for RedisPresence {
    async fn connected(&self, user: &UserId, conn: &ConnKey) -> Result<(), PresenceError> {
        let (reply, rx) = oneshot::channel();
        {
            let mut local = self.shared.local();
            if local.early.remove(conn) {
                return Ok(());
            }
            let mut first = false;
            if local.conns.insert(conn.clone(), user.clone()).is_none() {
                let n = local.per_user.entry(user.clone()).or_default();
                first = *n == 0;
                *n += 1;
            }
            // Queued under the lock: the writer snapshots the table under it
            // too, so adding everything again can never re-add a connection
            // whose removal it has already passed.
            self.ops
                .send(Op::Touch {
                    user: user.clone(),
                    conn: conn.conn,
                    first,
                    reply,
                })
                .map_err(|_| stopped())?;
        }
        self.shared.wait(rx).await
    }

    async fn disconnected(&self, _user: &UserId, conn: &ConnKey) -> Result<(), PresenceError> {
        // The user recorded at connect names the entry.
        let (reply, rx) = oneshot::channel();
        {
            let mut local = self.shared.local();
            let Some(gone) = local.conns.remove(conn) else {
                if local.early.len() >= MAX_EARLY {
                    local.early.clear();
                }
                local.early.insert(conn.clone());
                return Ok(());
            };
            match local.per_user.get_mut(&gone) {
                Some(n) if *n > 1 => *n -= 1,
                _ => {
                    local.per_user.remove(&gone);
                }
            }
            self.ops
                .send(Op::Leave {
                    leave: Leave {
                        user: gone,
                        conn: conn.conn,
                        at: now_ms(),
                    },
                    reply,
                })
                .map_err(|_| stopped())?;
        }
        self.shared.wait(rx).await
    }

    async fn query(&self, users: &[UserId]) -> Result<Vec<Presence>, PresenceError> {
        let shared = &self.shared;
        let generations = shared.generations(users);
        let answer = shared.query(users).await;
        match &answer {
            Ok(out) => {
                for (info, generation) in out.iter().zip(generations) {
                    if let Some(generation) = generation {
                        shared.observed(info.clone(), Source::Query(generation));
                    }
                }
            }
            Err(_) => {
                let mut watched = shared.watched();
                for u in users {
                    if let Some(known) = watched.get_mut(u) {
                        known.unsure = true;
                    }
                }
            }
        }
        answer
    }

    fn changes(&self) -> broadcast::Receiver<Presence> {
        self.shared.tx.subscribe()
    }

    async fn watch(&self, users: &[UserId]) -> Result<(), PresenceError> {
        // The table changes even when the wait fails: the checker then
        // brings the subscriptions in line.
        let order = self.shared.subscriptions().await;
        let channels: Vec<String> = {
            let mut watched = self.shared.watched();
            users
                .iter()
                .filter(|u| {
                    if watched.contains_key(*u) {
                        return false;
                    }
                    watched.insert((*u).clone(), Known::default());
                    true
                })
                .map(|u| self.shared.channel(u))
                .collect()
        };
        let _order = order?;
        // The users stay watched even when this fails: the checker
        // subscribes them once Redis is back.
        self.shared.subscribe(channels, true).await
    }

    async fn unwatch(&self, users: &[UserId]) -> Result<(), PresenceError> {
        let order = self.shared.subscriptions().await;
        let channels: Vec<String> = {
            let mut watched = self.shared.watched();
            users
                .iter()
                .filter(|u| watched.remove(*u).is_some())
                .map(|u| self.shared.channel(u))
                .collect()
        };
        let _order = order?;
        self.shared.subscribe(channels, false).await
    }

    async fn ready(&self) -> Result<(), PresenceError> {
        let shared = &self.shared;
        shared.check_connected()?;
        match tokio::time::timeout(shared.op_timeout, shared.client.ping::<()>(None)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(shared.redis_error(&e)),
            Err(_) => return Err(shared.too_slow()),
        }
        if !shared.subscriber.is_connected() {
            return Err(PresenceError(format!(
                "redis {}: pub/sub connection down, reconnecting",
                shared.server
            )));
        }
        Ok(())
    }
}

fn stopped() -> PresenceError {
    PresenceError("redis presence stopped".into())
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    fn local(&self) -> MutexGuard<'_, Local> {
        lock(&self.local)
    }

    fn watched(&self) -> MutexGuard<'_, HashMap<UserId, Known>> {
        lock(&self.watched)
    }

    fn presence_key(&self, user: &UserId) -> String {
        format!("{}p:{{{user}}}", self.prefix)
    }

    fn last_seen_key(&self, user: &UserId) -> String {
        format!("{}ls:{{{user}}}", self.prefix)
    }

    fn channel(&self, user: &UserId) -> String {
        format!("{}c:{user}", self.prefix)
    }

    fn period(&self) -> Duration {
        self.ttl / 3
    }

    fn redis_error(&self, e: &RedisError) -> PresenceError {
        PresenceError(format!("redis {}: {e}", self.server))
    }

    fn too_slow(&self) -> PresenceError {
        PresenceError(format!(
            "redis {}: no answer within {:?}",
            self.server, self.op_timeout
        ))
    }

    /// Fails at once rather than queueing behind a reconnection.
    fn check_connected(&self) -> Result<(), PresenceError> {
        if self.client.is_connected() {
            Ok(())
        } else {
            Err(PresenceError(format!(
                "redis {}: unreachable, reconnecting",
                self.server
            )))
        }
    }

    async fn wait(
        &self,
        rx: oneshot::Receiver<Result<(), PresenceError>>,
    ) -> Result<(), PresenceError> {
        match tokio::time::timeout(self.op_timeout, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(stopped()),
            Err(_) => Err(self.too_slow()),
        }
    }

    /// Bounds `f` by `op_timeout`: the client's own timeout is per command
    /// and does not cover a sequence of them.
    async fn bounded<T>(
        &self,
        f: impl Future<Output = Result<T, RedisError>>,
    ) -> Result<T, PresenceError> {
        match tokio::time::timeout(self.op_timeout, f).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(self.redis_error(&e)),
            Err(_) => Err(self.too_slow()),
        }
    }

    fn call(&self, which: Which, user: &UserId, args: Vec<String>) -> Call {
        Call {
            cmd: Cmd::Script(which),
            keys: vec![self.presence_key(user), self.last_seen_key(user)],
            args,
        }
    }

    fn nodes_key(&self) -> String {
        format!("{}nodes", self.prefix)
    }

    fn users_key(&self, incarnation: &str) -> String {
        format!("{}u:{{{incarnation}}}", self.prefix)
    }

    /// What every member this node adds starts with, whatever the
    /// incarnation (node names have no `/`).
    fn node_head(&self) -> String {
        format!("{}/", self.node)
    }

    fn touch(&self, incarnation: &str, user: &UserId, conn: u64) -> Call {
        let args = vec![
            format!("{incarnation}/{conn}"),
            self.channel(user),
            user.to_string(),
            self.node_head(),
            format!("/{conn}"),
        ];
        self.call(Which::Touch, user, args)
    }

    fn leave(&self, leave: &Leave) -> Call {
        let args = vec![
            self.node_head(),
            format!("/{}", leave.conn),
            leave.at.to_string(),
            self.channel(&leave.user),
            leave.user.to_string(),
        ];
        self.call(Which::Leave, &leave.user, args)
    }

    /// Adds `user` to the users `incarnation` has entries for: listed
    /// before its entry is added, so a sweep finds it. Never taken off (a
    /// removal replayed onto a Redis restored from a snapshot would hide a
    /// resurrected entry from the sweep): the list is renewed instead.
    fn listed(&self, incarnation: &str, user: &UserId) -> Call {
        Call {
            cmd: Cmd::Plain("SADD"),
            keys: vec![self.users_key(incarnation)],
            args: vec![user.to_string()],
        }
    }

    /// A heartbeat of `me`, or its registration while it has had none.
    fn beat(&self, me: &Incarnation) -> Call {
        let fresh = if me.registered { "0" } else { "1" };
        Call {
            cmd: Cmd::Script(Which::Beat),
            keys: vec![self.nodes_key()],
            args: vec![me.id.to_string(), self.ttl_ms(), fresh.to_string()],
        }
    }

    fn ttl_ms(&self) -> String {
        self.ttl.as_millis().to_string()
    }

    /// Runs `calls` in one pipeline; after a Redis restart emptied the script
    /// cache, loads the scripts and runs the refused calls again.
    async fn run(&self, calls: &[Call]) -> Vec<Result<Value, PresenceError>> {
        let mut results = self.send(calls.iter()).await;
        let refused: Vec<usize> = results
            .iter()
            .enumerate()
            .filter(|(_, r)| matches!(r, Err(e) if e.details().starts_with("NOSCRIPT")))
            .map(|(i, _)| i)
            .collect();
        if !refused.is_empty() {
            if let Err(e) = self.load_scripts().await {
                for &i in &refused {
                    results[i] = Err(e.clone());
                }
            } else {
                let again = self.send(refused.iter().map(|&i| &calls[i])).await;
                for (i, r) in refused.into_iter().zip(again) {
                    results[i] = r;
                }
            }
        }
        results
            .into_iter()
            .map(|r| r.map_err(|e| self.redis_error(&e)))
            .collect()
    }

    async fn send<'a>(
        &self,
        calls: impl ExactSizeIterator<Item = &'a Call>,
    ) -> Vec<Result<Value, RedisError>> {
        let n = calls.len();
        let everything = |e: RedisError| vec![Err(e); n];
        let pipeline = self.client.pipeline();
        for c in calls {
            let mut args = Vec::with_capacity(2 + c.keys.len() + c.args.len());
            let command = match c.cmd {
                Cmd::Script(which) => {
                    args.push(self.scripts[which as usize].sha1().to_string());
                    args.push(c.keys.len().to_string());
                    // Pipelines have no Lua interface; the slot is the first key's.
                    CustomCommand::new_static("EVALSHA", ClusterHash::Offset(2), false)
                }
                Cmd::Plain(name) => CustomCommand::new_static(name, ClusterHash::FirstKey, false),
            };
            args.extend(c.keys.iter().cloned());
            args.extend(c.args.iter().cloned());
            let queued: Result<(), RedisError> = pipeline.custom(command, args).await;
            if let Err(e) = queued {
                return everything(e);
            }
        }
        match tokio::time::timeout(self.op_timeout, pipeline.try_all::<Value>()).await {
            Ok(results) if results.len() == n => results,
            Ok(mut results) => everything(
                results
                    .pop()
                    .and_then(Result::err)
                    .unwrap_or_else(RedisError::new_canceled),
            ),
            Err(_) => everything(RedisError::new(
                fred::error::ErrorKind::Timeout,
                "no answer in time",
            )),
        }
    }

    async fn load_scripts(&self) -> Result<(), RedisError> {
        for script in &self.scripts {
            if let Some(lua) = script.lua() {
                self.client.script_load::<String, _>(lua.clone()).await?;
            }
        }
        Ok(())
    }

    /// Reads (and, for a dead node's users, settles) the presence of `users`.
    async fn observe(&self, users: &[UserId]) -> Vec<Result<Presence, PresenceError>> {
        let calls: Vec<Call> = users
            .iter()
            .map(|u| self.call(Which::Observe, u, vec![self.channel(u), u.to_string()]))
            .collect();
        self.run(&calls)
            .await
            .into_iter()
            .zip(users)
            .map(|(r, user)| {
                let pair: Vec<i64> = r?.convert().map_err(|e| self.redis_error(&e))?;
                match pair.as_slice() {
                    [1, _] => Ok(Presence {
                        user: user.clone(),
                        status: Status::Online,
                        last_seen: None,
                    }),
                    [0, seen] => Ok(Presence {
                        user: user.clone(),
                        status: Status::Offline,
                        last_seen: u64::try_from(*seen).ok(),
                    }),
                    other => Err(PresenceError(format!(
                        "redis {}: unexpected presence answer {other:?}",
                        self.server
                    ))),
                }
            })
            .collect()
    }

    async fn query(&self, users: &[UserId]) -> Result<Vec<Presence>, PresenceError> {
        self.check_connected()?;
        let work = async {
            let mut out = Vec::with_capacity(users.len());
            for chunk in users.chunks(MAX_BATCH) {
                for result in self.observe(chunk).await {
                    out.push(result?);
                }
            }
            Ok(out)
        };
        tokio::time::timeout(self.op_timeout, work)
            .await
            .unwrap_or_else(|_| Err(self.too_slow()))
    }

    fn generations(&self, users: &[UserId]) -> Vec<Option<u64>> {
        let watched = self.watched();
        users
            .iter()
            .map(|u| watched.get(u).map(|k| k.generation))
            .collect()
    }

    /// Records what was learnt about a watched user and tells watchers when
    /// it is news to them.
    fn observed(&self, info: Presence, source: Source) {
        let mut watched = self.watched();
        let Some(known) = watched.get_mut(&info.user) else {
            return;
        };
        if let Source::Check(g) | Source::Query(g) = source {
            if g != known.generation {
                return;
            }
        }
        // Until a query has answered the watching session there is nothing
        // to compare with, and recording what a check read could swallow
        // the message of a change that is still on its way.
        if matches!(source, Source::Check(_)) && known.status.is_none() && !known.unsure {
            return;
        }
        known.generation += 1;
        let before = known.status.replace(info.status);
        // A query's first read is what the asking session is told anyway;
        // `unsure`: a query failed, so a session may know nothing.
        let news = match source {
            Source::Message | Source::Check(_) => before != Some(info.status) || known.unsure,
            Source::Query(_) => before.is_some_and(|s| s != info.status),
        };
        if news {
            // Every session watching hears it.
            known.unsure = false;
            // Sent under the lock so the order of changes matches the table.
            let _ = self.tx.send(info);
        }
    }

    /// Serialises changes of subscriptions, so that they reach Redis in the
    /// order the table changed: a watch racing an unwatch of the same user,
    /// or a resync working from an older view, could end unsubscribed.
    async fn subscriptions(&self) -> Result<tokio::sync::MutexGuard<'_, ()>, PresenceError> {
        tokio::time::timeout(self.op_timeout, self.sub_order.lock())
            .await
            .map_err(|_| self.too_slow())
    }

    /// Subscribes to (or unsubscribes from) `channels`.
    async fn subscribe(&self, channels: Vec<String>, on: bool) -> Result<(), PresenceError> {
        if channels.is_empty() {
            return Ok(());
        }
        if !self.subscriber.is_connected() {
            return Err(PresenceError(format!(
                "redis {}: pub/sub connection down, reconnecting",
                self.server
            )));
        }
        let work = async {
            for chunk in channels.chunks(MAX_BATCH) {
                let chunk = chunk.to_vec();
                if on {
                    self.subscriber.subscribe(chunk).await?;
                } else {
                    self.subscriber.unsubscribe(chunk).await?;
                }
            }
            // The client reports (un)subscribing done once the command is
            // sent, not once Redis applied it; a PING answered on the same
            // connection proves it was, so a watch never returns before it
            // can hear.
            self.subscriber.ping::<Value>(None).await.map(drop)
        };
        self.bounded(work).await
    }

    /// Brings the subscriptions in line with the watched users; `all`
    /// re-subscribes everything, after the server forgot it on reconnection.
    async fn sync_subscriptions(&self, all: bool) -> Result<(), PresenceError> {
        let _order = self.subscriptions().await?;
        let tracked: HashSet<String> = self
            .subscriber
            .tracked_channels()
            .iter()
            .map(|c| c.to_string())
            .collect();
        let desired: HashSet<String> = self.watched().keys().map(|u| self.channel(u)).collect();
        let extra: Vec<String> = tracked.difference(&desired).cloned().collect();
        let missing: Vec<String> = if all {
            desired.into_iter().collect()
        } else {
            desired.difference(&tracked).cloned().collect()
        };
        self.subscribe(missing, true).await?;
        self.subscribe(extra, false).await
    }

    /// Re-reads every watched user: catches users whose node died (nobody
    /// publishes for them) and whatever pub/sub lost while Redis was away.
    /// Users nobody has read yet rely on messages alone; once some may have
    /// been lost, the next check must announce them.
    fn messages_lost(&self) {
        for known in self.watched().values_mut() {
            if known.status.is_none() {
                known.unsure = true;
            }
        }
    }

    /// Returns false when it could not start because Redis is unreachable.
    async fn check(&self) -> bool {
        if !self.client.is_connected() {
            return false;
        }
        let snapshot: Vec<(UserId, u64)> = self
            .watched()
            .iter()
            .map(|(u, k)| (u.clone(), k.generation))
            .collect();
        for chunk in snapshot.chunks(MAX_BATCH) {
            let users: Vec<UserId> = chunk.iter().map(|(u, _)| u.clone()).collect();
            for (result, (_, generation)) in self.observe(&users).await.into_iter().zip(chunk) {
                match result {
                    Ok(info) => self.observed(info, Source::Check(*generation)),
                    Err(e) => {
                        tracing::debug!(error = %e, "presence check failed");
                        return true;
                    }
                }
            }
        }
        true
    }

    /// Applies a batch of connects and disconnects in one pipeline (after
    /// the incarnation's first heartbeat, if it has had none). A connect
    /// that fails makes everything due to be added again at the next beat.
    async fn apply(&self, batch: Vec<Op>, w: &mut WriterState) {
        if let Err(e) = self.check_connected() {
            for op in batch {
                match op {
                    Op::Touch { reply, .. } => {
                        w.add_all = true;
                        let _ = reply.send(Err(e.clone()));
                    }
                    Op::Leave { leave, reply } => {
                        w.keep(leave);
                        let _ = reply.send(Err(e.clone()));
                    }
                }
            }
            return;
        }
        let mut calls = Vec::with_capacity(batch.len() * 2 + 1);
        let beat = !w.me.registered && batch.iter().any(|op| matches!(op, Op::Touch { .. }));
        if beat {
            calls.push(self.beat(&w.me));
        }
        for op in &batch {
            match op {
                Op::Touch {
                    user, conn, first, ..
                } => {
                    w.listed += usize::from(*first);
                    calls.push(self.listed(&w.me.id, user));
                    calls.push(self.touch(&w.me.id, user, *conn));
                }
                Op::Leave { leave, .. } => calls.push(self.leave(leave)),
            }
        }
        let mut results = self.run(&calls).await.into_iter();
        if beat && results.next().is_some_and(|r| r.is_ok()) {
            w.me.registered = true;
        }
        for op in batch {
            match op {
                Op::Touch { reply, .. } => {
                    let listed = results.next().unwrap_or_else(|| Err(stopped()));
                    let touched = results.next().unwrap_or_else(|| Err(stopped()));
                    let result = listed.and(touched).map(drop);
                    w.add_all |= result.is_err();
                    let _ = reply.send(result);
                }
                Op::Leave { leave, reply } => {
                    let result = results.next().unwrap_or_else(|| Err(stopped())).map(drop);
                    // Replaying is harmless: a removal that did happen
                    // removes nothing the second time and announces nothing.
                    if result.is_err() {
                        w.keep(leave);
                    }
                    let _ = reply.send(result);
                }
            }
        }
    }

    /// The heartbeat: beats (first: nothing may delay it past the ttl),
    /// moves to a new incarnation when Redis lost track of this one or may
    /// hold removals it confirmed and then lost, adds every live local
    /// connection again when due, and replays failed removals.
    async fn heartbeat(&self, w: &mut WriterState) {
        // The list only grows: renewed once it holds many more users than
        // are here, a sweep of the old one (a call per user, after the ttl)
        // trims it. Connects pay for that, a few calls each at most.
        let here = self.local().per_user.len();
        if w.listed > 2 * here + self.list_slack {
            w.renew = true;
        }
        match self.run(&[self.beat(&w.me)]).await.pop() {
            Some(Ok(v)) => {
                let continuous = v.convert::<i64>().is_ok_and(|v| v == 1);
                if w.me.registered && (!continuous || w.renew) {
                    // Redis restarted (empty, from a snapshot, or on a
                    // replica that lags: removals it confirmed may be back),
                    // this node was cut off long enough to be swept, or
                    // removals were dropped. A new incarnation holds the
                    // live connections from now on; the old one is swept
                    // once stale, with whatever it still holds.
                    if continuous {
                        tracing::info!(incarnation = %w.me.id, "presence: renewing this node's incarnation");
                    } else {
                        tracing::warn!(
                            incarnation = %w.me.id,
                            "presence: Redis lost track of this node; adding its connections again"
                        );
                    }
                    w.me.next();
                    *lock(&self.current) = w.me.id.clone();
                    w.add_all = true;
                    w.renew = false;
                    let registered = self.run(&[self.beat(&w.me)]).await.pop();
                    if registered.is_none_or(|r| r.is_err()) {
                        return;
                    }
                }
                w.me.registered = true;
            }
            Some(Err(e)) => {
                tracing::debug!(error = %e, "presence heartbeat failed");
                return;
            }
            None => return,
        }
        if w.add_all {
            let users = self.add_all(&w.me).await;
            w.add_all = users.is_none();
            w.listed = users.unwrap_or(w.listed);
        }
        while !w.pending.is_empty() {
            let batch: Vec<Leave> = w.pending.drain(..w.pending.len().min(MAX_BATCH)).collect();
            let calls: Vec<Call> = batch.iter().map(|l| self.leave(l)).collect();
            let results = self.run(&calls).await;
            let failed = results.iter().any(Result::is_err);
            for (leave, result) in batch.into_iter().zip(results) {
                if result.is_err() {
                    w.keep(leave);
                }
            }
            if failed {
                break;
            }
        }
    }

    /// Adds every live local connection under `me`; how many users they
    /// have, or `None` when some failed.
    async fn add_all(&self, me: &Incarnation) -> Option<usize> {
        let mut by_user: HashMap<UserId, Vec<u64>> = HashMap::new();
        for (key, user) in &self.local().conns {
            by_user.entry(user.clone()).or_default().push(key.conn);
        }
        let mut calls = Vec::new();
        let mut failures = 0usize;
        let mut last_error = None;
        let listed = by_user.len();
        let mut users = by_user.into_iter().peekable();
        while users.peek().is_some() {
            calls.clear();
            while calls.len() < MAX_BATCH {
                let Some((user, conns)) = users.next() else {
                    break;
                };
                calls.push(self.listed(&me.id, &user));
                calls.extend(conns.into_iter().map(|c| self.touch(&me.id, &user, c)));
            }
            for result in self.run(&calls).await {
                if let Err(e) = result {
                    failures += 1;
                    last_error = Some(e);
                }
            }
        }
        if let Some(e) = last_error {
            tracing::warn!(failures, error = %e, "presence: adding the connections again failed");
            return None;
        }
        Some(listed)
    }

    /// Sweeps the incarnations that stopped beating (nodes that died, or
    /// that went on under a new one), unless another node is at it.
    async fn sweep(&self) -> Result<(), PresenceError> {
        let stale = Call {
            cmd: Cmd::Script(Which::Stale),
            keys: vec![self.nodes_key()],
            args: vec![self.ttl_ms()],
        };
        let dead: Vec<String> = match self.run(&[stale]).await.pop() {
            Some(r) => r?.convert().map_err(|e| self.redis_error(&e))?,
            None => return Ok(()),
        };
        let current = lock(&self.current).clone();
        for incarnation in dead.iter().filter(|i| ***i != *current) {
            let claim = Call {
                cmd: Cmd::Plain("SET"),
                keys: vec![format!("{}sweep:{{{incarnation}}}", self.prefix)],
                args: vec!["1".into(), "NX".into(), "PX".into(), self.ttl_ms()],
            };
            let claimed = match self.run(&[claim]).await.pop() {
                Some(r) => !matches!(r?, Value::Null),
                None => false,
            };
            if claimed {
                self.sweep_one(incarnation).await?;
            }
        }
        Ok(())
    }

    async fn sweep_one(&self, incarnation: &str) -> Result<(), PresenceError> {
        let list = self.users_key(incarnation);
        let head = format!("{incarnation}/");
        let scan = CustomCommand::new_static("SSCAN", ClusterHash::FirstKey, false);
        let mut cursor = "0".to_string();
        let mut swept = 0usize;
        let mut offline = 0usize;
        loop {
            let args = vec![
                list.clone(),
                cursor.clone(),
                "COUNT".to_string(),
                MAX_BATCH.to_string(),
            ];
            let page: (String, Vec<String>) = self
                .bounded(self.client.custom::<Value, _>(scan.clone(), args))
                .await?
                .convert()
                .map_err(|e| self.redis_error(&e))?;
            let calls: Vec<Call> = page
                .1
                .iter()
                .filter_map(|u| UserId::new(u).ok())
                .map(|u| {
                    let args = vec![head.clone(), self.channel(&u), u.to_string()];
                    self.call(Which::Sweep, &u, args)
                })
                .collect();
            for r in self.run(&calls).await {
                offline += usize::from(r?.convert::<i64>().is_ok_and(|v| v == 1));
            }
            swept += calls.len();
            cursor = page.0;
            if cursor == "0" {
                break;
            }
        }
        let forget = [
            Call {
                cmd: Cmd::Plain("DEL"),
                keys: vec![list],
                args: Vec::new(),
            },
            Call {
                cmd: Cmd::Script(Which::Forget),
                keys: vec![self.nodes_key()],
                args: vec![incarnation.to_string(), self.ttl_ms()],
            },
        ];
        for r in self.run(&forget).await {
            r?;
        }
        tracing::info!(
            incarnation,
            users = swept,
            offline,
            "presence: swept a node that stopped"
        );
        Ok(())
    }

    async fn close(&self) {
        let _ = tokio::time::timeout(self.op_timeout, async {
            let _ = tokio::join!(self.client.quit(), self.subscriber.quit());
        })
        .await;
        for handle in lock(&self.handles).drain(..) {
            handle.abort();
        }
    }
}

/// What the writer task keeps between batches.
struct WriterState {
    me: Incarnation,
    /// Removals that failed, to replay.
    pending: VecDeque<Leave>,
    /// Every live connection is to be added again (a connect failed, or
    /// Redis may have lost entries).
    add_all: bool,
    /// The next heartbeat starts a new incarnation: Redis may hold entries
    /// this node removed, or removals were dropped.
    renew: bool,
    /// About how many users the incarnation's list holds.
    listed: usize,
}

impl WriterState {
    fn keep(&mut self, leave: Leave) {
        if self.pending.len() >= MAX_PENDING_LEAVES {
            // Its entry stays: the next incarnation leaves it to a sweep.
            self.pending.pop_front();
            self.renew = true;
        }
        self.pending.push_back(leave);
    }
}

/// Owns every write of this node's entries, so they reach Redis in the order
/// the connections changed: connects and disconnects (batched), heartbeats,
/// replays of failed removals, and adding everything again.
async fn writer(
    shared: Arc<Shared>,
    mut ops: mpsc::UnboundedReceiver<Op>,
    mut reconnects: broadcast::Receiver<Server>,
    stop: CancellationToken,
) {
    let mut w = WriterState {
        me: Incarnation::new(shared.node.clone()),
        pending: VecDeque::new(),
        add_all: false,
        renew: false,
        listed: 0,
    };
    *lock(&shared.current) = w.me.id.clone();
    // The first beat at once: a node that dies before it is never swept.
    let mut tick = tokio::time::interval(shared.period());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut reconnects_open = true;
    let mut beat_due = false;
    let mut connected_before = false;
    loop {
        tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            // Before the connects: a storm of them must not starve the
            // heartbeat, or the node would be swept as dead.
            _ = tick.tick() => beat_due = true,
            op = ops.recv() => {
                let Some(op) = op else { break };
                let mut batch = vec![op];
                while batch.len() < MAX_BATCH {
                    match ops.try_recv() {
                        Ok(op) => batch.push(op),
                        Err(_) => break,
                    }
                }
                shared.apply(batch, &mut w).await;
            }
            event = reconnects.recv(), if reconnects_open => match event {
                Err(broadcast::error::RecvError::Closed) => reconnects_open = false,
                // Redis may have restarted, empty or with removals it had
                // confirmed undone: a new incarnation, without waiting. (The
                // first connection undid nothing.)
                _ => {
                    (beat_due, w.add_all, w.renew) = (true, true, connected_before);
                    connected_before = true;
                }
            },
            // The client announces a reconnection before it accepts commands.
            _ = tokio::time::sleep(RECONNECT_POLL), if beat_due => {}
        }
        if beat_due && shared.client.is_connected() {
            beat_due = false;
            shared.heartbeat(&mut w).await;
        }
    }
    shared.close().await;
}

/// Forwards pub/sub messages about watched users to [`Presence::changes`].
async fn listener(
    shared: Arc<Shared>,
    mut messages: broadcast::Receiver<Message>,
    stop: CancellationToken,
) {
    loop {
        let message = tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            m = messages.recv() => m,
        };
        match message {
            Ok(message) => {
                let parsed = message
                    .value
                    .as_str()
                    .and_then(|text| fred::serde_json::from_str::<Presence>(&text).ok());
                match parsed {
                    Some(info) => shared.observed(info, Source::Message),
                    None => {
                        tracing::warn!(channel = %message.channel, "unreadable presence message")
                    }
                }
            }
            Err(broadcast::error::RecvError::Lagged(n)) => {
                tracing::warn!(skipped = n, "presence messages skipped; re-checking");
                shared.messages_lost();
                shared.recheck.notify_one();
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// Keeps the subscriptions right and re-checks the watched users every
/// `ttl / 3`, and at once after the pub/sub connection came back.
async fn checker(
    shared: Arc<Shared>,
    mut sub_reconnects: broadcast::Receiver<Server>,
    mut main_reconnects: broadcast::Receiver<Server>,
    stop: CancellationToken,
) {
    let period = shared.period();
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut sub_open = true;
    let mut main_open = true;
    let mut connected_before = false;
    let mut resubscribe = false;
    let mut check_due = false;
    loop {
        tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            event = sub_reconnects.recv(), if sub_open => match event {
                Err(broadcast::error::RecvError::Closed) => sub_open = false,
                // The server forgot our subscriptions, and messages were lost.
                _ => {
                    // The first connection lost nothing: nothing was subscribed.
                    if connected_before {
                        shared.messages_lost();
                    }
                    connected_before = true;
                    (resubscribe, check_due) = (true, true);
                }
            },
            event = main_reconnects.recv(), if main_open => match event {
                Err(broadcast::error::RecvError::Closed) => main_open = false,
                // Checks were skipped while it was away.
                _ => check_due = true,
            },
            _ = shared.recheck.notified() => check_due = true,
            _ = tick.tick() => check_due = true,
            // Reconnections are announced before the clients accept commands.
            _ = tokio::time::sleep(RECONNECT_POLL), if resubscribe || check_due => {}
        }
        if resubscribe {
            if shared.subscriber.is_connected() {
                resubscribe = shared.sync_subscriptions(true).await.is_err();
            }
            if resubscribe {
                // Checking before the subscriptions are back would leave a
                // gap where a change is neither read nor heard.
                continue;
            }
        } else if check_due {
            if let Err(e) = shared.sync_subscriptions(false).await {
                tracing::debug!(error = %e, "presence subscriptions not in sync yet");
            }
        }
        if check_due {
            check_due = !shared.check().await;
            if !check_due {
                if let Err(e) = shared.sweep().await {
                    tracing::debug!(error = %e, "presence sweep failed");
                }
            }
        }
    }
}
