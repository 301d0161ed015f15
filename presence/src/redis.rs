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

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chat_protocol::{now_ms, Presence, UserId};
use fred::interfaces::{ClientLike, EventInterface};
use fred::prelude::{Builder, Config, ReconnectPolicy};
use fred::types::scripts::Script;
use tokio::sync::{broadcast, mpsc, oneshot, Notify};
use tokio_util::sync::{CancellationToken, DropGuard};

use super::{ConnKey, PresenceError, PresenceStore};

mod calls;
mod config;
mod lua;
mod observe;
mod state;
mod tasks;
mod writes;

use config::redact;
pub use config::RedisPresenceConfig;
use state::*;
use tasks::*;

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
