//! What every request handler shares: the node's state, built by
//! [`crate::app`].

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use chat_actors::dispatch::Dispatch;
use chat_actors::msg::RouterMsg;
use chat_actors::Services;
use chat_storage::embedded::EmbeddedStore;
use chat_storage::scylladb::ScyllaStore;
use chat_storage::MessageStore;
use prometheus_client::registry::Registry;
use ractor::ActorRef;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::Auth;
use crate::config::Config;
use crate::health::Health;
use crate::membership::{Membership, NodeClaim};

/// Everything request handlers share.
pub struct App {
    /// The configuration in force.
    pub config: Config,
    /// The actors' services.
    pub services: Arc<Services>,
    /// The node's Router.
    pub router: ActorRef<RouterMsg>,
    /// Client frames to their handlers.
    pub dispatch: Dispatch,
    /// Token checks and accounts.
    pub auth: Auth,
    /// Metrics for `/metrics`.
    pub registry: Registry,
    /// The dependency gauges (and what `/readyz` probes).
    pub health: Health,
    /// Cancelled when the node starts draining.
    pub shutdown: CancellationToken,
    /// Tracks connection tasks, so draining can wait for them.
    pub connections: TaskTracker,
    /// Next connection id.
    pub next_conn: AtomicU64,
    /// Store kept by its concrete type for closing.
    pub(crate) store: OpenStore,
    /// Cluster membership and the claim on this node's name and id, when
    /// clustered.
    pub(crate) membership: Option<(Membership, NodeClaim)>,
}

/// The store the node opened, by backend.
#[derive(Clone)]
pub(crate) enum OpenStore {
    /// On local disk: closing flushes it.
    Embedded(Arc<EmbeddedStore>),
    /// In ScyllaDB: every acknowledged write is already there.
    Scylla(Arc<ScyllaStore>),
}

impl OpenStore {
    /// The store behind the trait the actors use.
    pub(crate) fn shared(&self) -> Arc<dyn MessageStore> {
        match self {
            OpenStore::Embedded(s) => s.clone(),
            OpenStore::Scylla(s) => s.clone(),
        }
    }

    /// Flushes what is buffered (the embedded store's writer).
    pub(crate) async fn close(&self) {
        if let OpenStore::Embedded(s) = self {
            s.close().await;
        }
    }
}
