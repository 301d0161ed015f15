//! Presence in Redis, shared by every node of a cluster.
//!
//! # Key layout (`P` is [`RedisPresenceConfig::key_prefix`], default `chat:`)
//!
//! | key / channel      | type       | content                                                  |
//! |--------------------|------------|----------------------------------------------------------|
//! | `P` `p:{user}`     | sorted set | members `node:conn`, scores = expiry (Redis clock, ms)   |
//! | `P` `ls:{user}`    | string     | last seen, Unix ms                                       |
//! | `P` `c:user`       | pub/sub    | [`chat_protocol::Presence`] as JSON, on every transition |
//!
//! The braces are literal: they are Redis Cluster hash tags, so both keys of
//! a user live in one slot and a script may touch both.
//!
//! A user is online while one of its members has an expiry in the future.
//! Each node keeps its own connections in memory and re-adds them with a
//! fresh expiry every `ttl / 3`, so the entries of a node that dies expire
//! within the TTL without anyone cleaning up. Every write is a Lua script
//! that reads the time from Redis (`TIME`), so nodes' clocks may disagree
//! without making users flap; only the `last_seen` of a disconnect comes
//! from the node's clock (capped by Redis's), since its removal may reach
//! Redis late.
//!
//! Transitions are published by whoever causes them: the node that adds a
//! user's first live member (`online`), the node that removes its last one
//! (`offline`), and, for a dead node's users, the first node that finds their
//! entries expired while checking the users it watches (`offline`, with
//! `last_seen` = the latest expiry, the moment until which queries reported
//! the user online). Each node subscribes to the channels of the users its
//! sessions watch and re-checks them every `ttl / 3`, which also repairs
//! anything pub/sub lost while Redis was unreachable.
//!
//! When Redis is unreachable every call fails within
//! [`RedisPresenceConfig::op_timeout`] (twice that for `watch`/`unwatch`,
//! which may wait for another one first; at once when the client already
//! knows the connection is down), the client reconnects forever with
//! backoff, and on reconnection this node re-adds its live connections,
//! replays the removals that failed, and re-subscribes.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use chat_protocol::{now_ms, Presence as PresenceInfo, Status, UserId};
use fred::clients::SubscriberClient;
use fred::error::Error as RedisError;
use fred::interfaces::{ClientLike, EventInterface, LuaInterface, PubsubInterface};
use fred::prelude::{Builder, Client, Config, ReconnectPolicy, Server, Value};
use fred::types::scripts::Script;
use fred::types::{ClusterHash, ConnectHandle, CustomCommand, Message};
use tokio::sync::{broadcast, mpsc, oneshot, Notify};
use tokio_util::sync::{CancellationToken, DropGuard};

use super::{ConnKey, Presence, PresenceError};

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

// Shared by the scripts. TIME makes Redis the only clock; numbers are
// formatted with %d because Lua would print large ones in exponent notation.
const LUA_PRELUDE: &str = r#"
local function s(n) return string.format('%d', n) end
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function last_seen(ls_key)
  local v = redis.call('GET', ls_key)
  if v then return tonumber(v) end
  return -1
end
local function raise_last_seen(ls_key, t)
  local cur = last_seen(ls_key)
  if t > cur then redis.call('SET', ls_key, s(t)) return t end
  return cur
end
-- Drops expired members, folding the latest expiry into last_seen so the
-- trim loses nothing; returns that expiry, or 0 when nothing had expired.
local function trim(key, ls_key, now)
  local old = redis.call('ZREVRANGEBYSCORE', key, s(now), '-inf', 'WITHSCORES', 'LIMIT', 0, 1)
  if #old == 0 then return 0 end
  local latest = tonumber(old[2])
  redis.call('ZREMRANGEBYSCORE', key, '-inf', s(now))
  raise_last_seen(ls_key, latest)
  return latest
end
local function live(key, now)
  return redis.call('ZCOUNT', key, '(' .. s(now), '+inf')
end
local function publish_offline(channel, user, seen)
  local ls = ''
  if seen >= 0 then ls = ',"last_seen":' .. s(seen) end
  redis.call('PUBLISH', channel, '{"user":' .. cjson.encode(user) .. ',"status":"offline"' .. ls .. '}')
end
"#;

// KEYS: p, ls. ARGV: member, ttl ms, channel, user. Adds or refreshes a
// connection; announces the user when it had no live connection before.
const LUA_TOUCH: &str = r#"
local now = now_ms()
local was_live = live(KEYS[1], now)
trim(KEYS[1], KEYS[2], now)
redis.call('ZADD', KEYS[1], s(now + tonumber(ARGV[2])), ARGV[1])
if was_live == 0 then
  redis.call('PUBLISH', ARGV[3], '{"user":' .. cjson.encode(ARGV[4]) .. ',"status":"online"}')
  return 1
end
return 0
"#;

// KEYS: p, ls. ARGV: member, time of the disconnect, channel, user.
// Removes a connection; when none is left, records last_seen and, if this
// call removed the last one, announces the user offline. The time comes
// from the node (capped by Redis's clock) because a removal may run long
// after the disconnect: replayed, or buffered across a reconnection.
const LUA_LEAVE: &str = r#"
local now = now_ms()
local removed = redis.call('ZREM', KEYS[1], ARGV[1])
trim(KEYS[1], KEYS[2], now)
if redis.call('ZCARD', KEYS[1]) > 0 then return 0 end
local seen = raise_last_seen(KEYS[2], math.min(tonumber(ARGV[2]), now))
if removed == 1 then
  publish_offline(ARGV[3], ARGV[4], seen)
  return 1
end
return 0
"#;

// KEYS: p, ls. ARGV: channel, user. Returns {live, last_seen or -1}. The
// first caller to find a user's last entries expired (its node died)
// announces it offline: nobody else would.
const LUA_OBSERVE: &str = r#"
local now = now_ms()
local n = live(KEYS[1], now)
local latest = trim(KEYS[1], KEYS[2], now)
if n > 0 then return {1, -1} end
local seen = last_seen(KEYS[2])
if latest > 0 then publish_offline(ARGV[1], ARGV[2], seen) end
return {0, seen}
"#;

/// Settings of [`RedisPresence`].
#[derive(Clone)]
pub struct RedisPresenceConfig {
    /// `redis://[user:password@]host:port[/db]`.
    pub url: String,
    /// How long a connection entry lives without being refreshed: the most a
    /// dead node's users stay online. Refreshed every `ttl / 3`; at least
    /// 300 ms.
    pub ttl: Duration,
    /// This node's name, the first half of its entries' members
    /// (`node:conn`). It, not [`ConnKey::node`], names the entries, because
    /// this node refreshes them: two nodes must not share a name.
    pub node: Arc<str>,
    /// Prepended to every key and channel, so clusters can share a Redis.
    pub key_prefix: String,
    /// The longest any presence call waits for Redis.
    pub op_timeout: Duration,
}

impl RedisPresenceConfig {
    /// The default [`ttl`](Self::ttl).
    pub const DEFAULT_TTL: Duration = Duration::from_secs(30);
    /// The default [`key_prefix`](Self::key_prefix).
    pub const DEFAULT_PREFIX: &'static str = "chat:";
    /// The default [`op_timeout`](Self::op_timeout).
    pub const DEFAULT_OP_TIMEOUT: Duration = Duration::from_secs(1);

    /// Defaults for everything but where Redis is and who this node is.
    pub fn new(url: impl Into<String>, node: impl Into<Arc<str>>) -> Self {
        RedisPresenceConfig {
            url: url.into(),
            ttl: Self::DEFAULT_TTL,
            node: node.into(),
            key_prefix: Self::DEFAULT_PREFIX.to_string(),
            op_timeout: Self::DEFAULT_OP_TIMEOUT,
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
    scripts: [Script; 3],
    node: Arc<str>,
    prefix: String,
    ttl: Duration,
    op_timeout: Duration,
    /// `host:port`, for error messages (the URL may hold a password).
    server: String,
    local: Mutex<Local>,
    watched: Mutex<HashMap<UserId, Known>>,
    tx: broadcast::Sender<PresenceInfo>,
    recheck: Notify,
    sub_order: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct Local {
    conns: HashMap<ConnKey, LocalConn>,
    /// Sessions report each change from its own task, so a short-lived
    /// connection's disconnect can run before its connect; remembering it
    /// keeps the late connect from leaving an entry refreshed forever.
    early: HashSet<ConnKey>,
}

struct LocalConn {
    user: UserId,
    member: String,
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
        member: String,
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
    member: String,
    /// Unix ms, this node's clock.
    at: u64,
}

#[derive(Clone, Copy)]
enum Which {
    Touch = 0,
    Leave = 1,
    Observe = 2,
}

struct Call {
    which: Which,
    keys: Vec<String>,
    args: Vec<String>,
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
                Script::from_lua(format!("{LUA_PRELUDE}{LUA_TOUCH}")),
                Script::from_lua(format!("{LUA_PRELUDE}{LUA_LEAVE}")),
                Script::from_lua(format!("{LUA_PRELUDE}{LUA_OBSERVE}")),
            ],
            node: config.node,
            prefix: config.key_prefix,
            ttl: config.ttl,
            op_timeout,
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
impl Presence for RedisPresence {
    async fn connected(&self, user: &UserId, conn: &ConnKey) -> Result<(), PresenceError> {
        let (reply, rx) = oneshot::channel();
        {
            let mut local = self.shared.local();
            if local.early.remove(conn) {
                return Ok(());
            }
            let member = format!("{}:{}", self.shared.node, conn.conn);
            local.conns.insert(
                conn.clone(),
                LocalConn {
                    user: user.clone(),
                    member: member.clone(),
                },
            );
            // Queued under the lock: the writer snapshots the table under it
            // too, so a refresh can never re-add a connection whose removal
            // it has already passed.
            self.ops
                .send(Op::Touch {
                    user: user.clone(),
                    member,
                    reply,
                })
                .map_err(|_| stopped())?;
        }
        self.shared.wait(rx).await
    }

    async fn disconnected(&self, user: &UserId, conn: &ConnKey) -> Result<(), PresenceError> {
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
            self.ops
                .send(Op::Leave {
                    leave: Leave {
                        user: user.clone(),
                        member: gone.member,
                        at: now_ms(),
                    },
                    reply,
                })
                .map_err(|_| stopped())?;
        }
        self.shared.wait(rx).await
    }

    async fn query(&self, users: &[UserId]) -> Result<Vec<PresenceInfo>, PresenceError> {
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

    fn changes(&self) -> broadcast::Receiver<PresenceInfo> {
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
            which,
            keys: vec![self.presence_key(user), self.last_seen_key(user)],
            args,
        }
    }

    fn touch(&self, user: &UserId, member: &str) -> Call {
        let args = vec![
            member.to_string(),
            self.ttl.as_millis().to_string(),
            self.channel(user),
            user.to_string(),
        ];
        self.call(Which::Touch, user, args)
    }

    fn leave(&self, leave: &Leave) -> Call {
        let args = vec![
            leave.member.clone(),
            leave.at.to_string(),
            self.channel(&leave.user),
            leave.user.to_string(),
        ];
        self.call(Which::Leave, &leave.user, args)
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
            args.push(self.scripts[c.which as usize].sha1().to_string());
            args.push(c.keys.len().to_string());
            args.extend(c.keys.iter().cloned());
            args.extend(c.args.iter().cloned());
            // Pipelines have no Lua interface; the slot is the first key's.
            let evalsha = CustomCommand::new_static("EVALSHA", ClusterHash::Offset(2), false);
            let queued: Result<(), RedisError> = pipeline.custom(evalsha, args).await;
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
    async fn observe(&self, users: &[UserId]) -> Vec<Result<PresenceInfo, PresenceError>> {
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
                    [1, _] => Ok(PresenceInfo {
                        user: user.clone(),
                        status: Status::Online,
                        last_seen: None,
                    }),
                    [0, seen] => Ok(PresenceInfo {
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

    async fn query(&self, users: &[UserId]) -> Result<Vec<PresenceInfo>, PresenceError> {
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
    fn observed(&self, info: PresenceInfo, source: Source) {
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

    /// Applies a batch of connects and disconnects in one pipeline.
    async fn apply(&self, batch: Vec<Op>, pending: &mut VecDeque<Leave>) {
        if let Err(e) = self.check_connected() {
            for op in batch {
                match op {
                    Op::Touch { reply, .. } => {
                        let _ = reply.send(Err(e.clone()));
                    }
                    Op::Leave { leave, reply } => {
                        keep(pending, leave);
                        let _ = reply.send(Err(e.clone()));
                    }
                }
            }
            return;
        }
        let calls: Vec<Call> = batch
            .iter()
            .map(|op| match op {
                Op::Touch { user, member, .. } => self.touch(user, member),
                Op::Leave { leave, .. } => self.leave(leave),
            })
            .collect();
        let results = self.run(&calls).await;
        for (op, result) in batch.into_iter().zip(results) {
            let result = result.map(drop);
            match op {
                Op::Touch { reply, .. } => {
                    let _ = reply.send(result);
                }
                Op::Leave { leave, reply } => {
                    // Replaying is harmless: a removal that did happen
                    // removes nothing the second time and announces nothing.
                    if result.is_err() {
                        keep(pending, leave);
                    }
                    let _ = reply.send(result);
                }
            }
        }
    }

    /// Replays failed removals, then re-adds every live local connection
    /// with a fresh expiry (which also restores them after Redis lost them).
    async fn refresh(&self, pending: &mut VecDeque<Leave>) {
        while !pending.is_empty() {
            let batch: Vec<Leave> = pending.drain(..pending.len().min(MAX_BATCH)).collect();
            let calls: Vec<Call> = batch.iter().map(|l| self.leave(l)).collect();
            let results = self.run(&calls).await;
            let failed = results.iter().any(Result::is_err);
            for (leave, result) in batch.into_iter().zip(results) {
                if result.is_err() {
                    keep(pending, leave);
                }
            }
            if failed {
                break;
            }
        }
        let conns: Vec<(UserId, String)> = self
            .local()
            .conns
            .values()
            .map(|c| (c.user.clone(), c.member.clone()))
            .collect();
        let mut failures = 0usize;
        let mut last_error = None;
        for chunk in conns.chunks(MAX_BATCH) {
            let calls: Vec<Call> = chunk.iter().map(|(u, m)| self.touch(u, m)).collect();
            for result in self.run(&calls).await {
                if let Err(e) = result {
                    failures += 1;
                    last_error = Some(e);
                }
            }
        }
        if let Some(e) = last_error {
            tracing::warn!(failures, error = %e, "presence refresh failed");
        }
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

fn keep(pending: &mut VecDeque<Leave>, leave: Leave) {
    if pending.len() >= MAX_PENDING_LEAVES {
        // The oldest entry expires by itself within the TTL anyway.
        pending.pop_front();
    }
    pending.push_back(leave);
}

/// Owns every write of this node's entries, so they reach Redis in the order
/// the connections changed: connects and disconnects (batched), refreshes,
/// and replays of failed removals.
async fn writer(
    shared: Arc<Shared>,
    mut ops: mpsc::UnboundedReceiver<Op>,
    mut reconnects: broadcast::Receiver<Server>,
    stop: CancellationToken,
) {
    let period = shared.period();
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut reconnects_open = true;
    let mut pending = VecDeque::new();
    let mut refresh_due = false;
    loop {
        tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            op = ops.recv() => {
                let Some(op) = op else { break };
                let mut batch = vec![op];
                while batch.len() < MAX_BATCH {
                    match ops.try_recv() {
                        Ok(op) => batch.push(op),
                        Err(_) => break,
                    }
                }
                shared.apply(batch, &mut pending).await;
            }
            event = reconnects.recv(), if reconnects_open => match event {
                Err(broadcast::error::RecvError::Closed) => reconnects_open = false,
                // Redis may have restarted empty: re-add without waiting.
                _ => refresh_due = true,
            },
            _ = tick.tick() => refresh_due = true,
            // The client announces a reconnection before it accepts commands.
            _ = tokio::time::sleep(RECONNECT_POLL), if refresh_due => {}
        }
        if refresh_due && shared.client.is_connected() {
            refresh_due = false;
            shared.refresh(&mut pending).await;
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
                    .and_then(|text| fred::serde_json::from_str::<PresenceInfo>(&text).ok());
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
        }
    }
}
