//! Who is online, and telling watchers when that changes.
//!
//! A user is online while at least one of its connections lives on a live
//! node. [`Presence`] is the backend: [`MemoryPresence`] for a single node
//! (the default), Redis for a cluster ([`redis`]). Backends publish changes on
//! a bounded broadcast channel; the actors keep the table of which local
//! sessions watch which users and forward each change to them.
//!
//! This crate sits below the actors and knows nothing of them: a backend
//! hears of connections by [`ConnKey`] and of watches by user id.
#![deny(missing_docs, unreachable_pub, unsafe_code)]
#![warn(clippy::mod_module_files)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use chat_protocol::{now_ms, Presence, Status, UserId};
use tokio::sync::broadcast;

pub mod redis;

/// A presence backend failed; chat goes on, presence answers degrade.
#[derive(Debug, Clone, thiserror::Error)]
#[error("presence unavailable: {0}")]
pub struct PresenceError(pub String);

/// Identifies one connection cluster-wide: the node's name and its local id.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ConnKey {
    /// The node's name.
    pub node: Arc<str>,
    /// The connection's id on that node.
    pub conn: u64,
}

/// A presence backend.
#[async_trait]
pub trait PresenceStore: Send + Sync + 'static {
    /// A connection of `user` opened.
    async fn connected(&self, user: &UserId, conn: &ConnKey) -> Result<(), PresenceError>;
    /// A connection of `user` closed.
    async fn disconnected(&self, user: &UserId, conn: &ConnKey) -> Result<(), PresenceError>;
    /// The current presence of `users`.
    async fn query(&self, users: &[UserId]) -> Result<Vec<Presence>, PresenceError>;
    /// Changes of every user this node watches. Bounded: a receiver that
    /// falls behind skips changes (and is told so by `Lagged`).
    fn changes(&self) -> broadcast::Receiver<Presence>;
    /// This node now watches `users` (a backend with pub/sub subscribes).
    async fn watch(&self, users: &[UserId]) -> Result<(), PresenceError>;
    /// This node no longer watches `users`.
    async fn unwatch(&self, users: &[UserId]) -> Result<(), PresenceError>;
    /// Whether the backend is reachable, with the reason when it is not.
    async fn ready(&self) -> Result<(), PresenceError>;
}

#[derive(Default)]
struct UserPresence {
    conns: std::collections::HashSet<ConnKey>,
    last_seen: Option<u64>,
}

/// Presence of a single node, in memory.
pub struct MemoryPresence {
    users: Mutex<HashMap<UserId, UserPresence>>,
    tx: broadcast::Sender<Presence>,
}

impl Default for MemoryPresence {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryPresence {
    /// An empty table.
    pub fn new() -> Self {
        MemoryPresence {
            users: Mutex::new(HashMap::new()),
            tx: broadcast::channel(4096).0,
        }
    }
}

#[async_trait]
impl PresenceStore for MemoryPresence {
    async fn connected(&self, user: &UserId, conn: &ConnKey) -> Result<(), PresenceError> {
        let came_online = {
            let mut users = self.users.lock().unwrap_or_else(PoisonError::into_inner);
            let p = users.entry(user.clone()).or_default();
            p.conns.insert(conn.clone()) && p.conns.len() == 1
        };
        if came_online {
            let _ = self.tx.send(Presence {
                user: user.clone(),
                status: Status::Online,
                last_seen: None,
            });
        }
        Ok(())
    }

    async fn disconnected(&self, user: &UserId, conn: &ConnKey) -> Result<(), PresenceError> {
        let went_offline = {
            let mut users = self.users.lock().unwrap_or_else(PoisonError::into_inner);
            match users.get_mut(user) {
                Some(p) => {
                    if p.conns.remove(conn) && p.conns.is_empty() {
                        let now = now_ms();
                        p.last_seen = Some(now);
                        Some(now)
                    } else {
                        None
                    }
                }
                None => None,
            }
        };
        if let Some(ts) = went_offline {
            let _ = self.tx.send(Presence {
                user: user.clone(),
                status: Status::Offline,
                last_seen: Some(ts),
            });
        }
        Ok(())
    }

    async fn query(&self, users: &[UserId]) -> Result<Vec<Presence>, PresenceError> {
        let table = self.users.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(users
            .iter()
            .map(|u| match table.get(u) {
                Some(p) if !p.conns.is_empty() => Presence {
                    user: u.clone(),
                    status: Status::Online,
                    last_seen: None,
                },
                Some(p) => Presence {
                    user: u.clone(),
                    status: Status::Offline,
                    last_seen: p.last_seen,
                },
                None => Presence {
                    user: u.clone(),
                    status: Status::Offline,
                    last_seen: None,
                },
            })
            .collect())
    }

    fn changes(&self) -> broadcast::Receiver<Presence> {
        self.tx.subscribe()
    }

    async fn watch(&self, _users: &[UserId]) -> Result<(), PresenceError> {
        Ok(())
    }

    async fn unwatch(&self, _users: &[UserId]) -> Result<(), PresenceError> {
        Ok(())
    }

    async fn ready(&self) -> Result<(), PresenceError> {
        Ok(())
    }
}
