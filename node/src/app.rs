//! The node as its handlers see it, [`App`], and how it is assembled: open
//! the store, start the actors, join the cluster; and how it drains.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use chat_actors::cluster::{Cluster, Faults, RouterLink};
use chat_actors::dispatch::Dispatch;
use chat_actors::fanout::LocalSessions;
use chat_actors::metrics::Metrics;
use chat_actors::msg::RouterMsg;
use chat_actors::router::Router;
use chat_actors::services::Hooks;
use chat_actors::{Services, Tuning};
use chat_notify::metrics::NotifyMetrics;
use chat_notify::push::PushSender;
use chat_presence::redis::{RedisPresence, RedisPresenceConfig};
use chat_presence::{MemoryPresence, PresenceError, PresenceStore};
use chat_protocol::UserId;
use chat_storage::embedded::EmbeddedStore;
use chat_storage::replicated::ReplicatedStore;
use chat_storage::scylladb::ScyllaStore;
use chat_storage::MessageStore;
use prometheus_client::registry::Registry;
use ractor::{Actor, ActorRef};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::{Algorithm, Auth, AuthConfig, AuthError};
use crate::config::{Config, ConfigError, PresenceBackend, StorageBackend};
use crate::health::Health;
use crate::membership::{Membership, NodeClaim};

/// Everything request handlers share.
pub struct App {
    /// The configuration in force.
    pub config: Config,
    /// The actors' services, as composed (the handlers use the handles
    /// below).
    pub(crate) services: Arc<Services>,
    /// History, conversations and accounts.
    pub store: Arc<dyn MessageStore>,
    /// Who is online.
    pub presence: Arc<dyn PresenceStore>,
    /// The node's counters and histograms.
    pub metrics: Arc<Metrics>,
    /// This node's view of the cluster.
    pub cluster: Arc<Cluster>,
    /// The sessions on this node and their connections.
    pub sessions: Arc<LocalSessions>,
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
    /// Client connections held or being admitted (`listen.max_connections`).
    pub(crate) open_connections: Arc<std::sync::atomic::AtomicUsize>,
    /// Store kept by its concrete type for closing.
    pub(crate) opened: OpenStore,
    /// Web Push: the cluster's VAPID key and the sender.
    pub push: Arc<PushSender>,
    /// The links mails carry (and the check of unsubscribe links).
    pub links: Arc<chat_notify::links::Links>,
    /// Uploaded files: their store, links and limits.
    pub media: Arc<crate::media::MediaService>,
    /// Full-text search, unless off.
    pub search: Option<Arc<crate::search::SearchService>>,
    /// TLS for clients on the node's port, when configured.
    pub tls: Option<Arc<crate::tls::ClientTls>>,
    /// The notification outbox's worker, awaited when draining.
    pub(crate) notifier: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
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

/// Why a node could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The configuration is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Auth could not be set up.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// The store could not be opened.
    #[error("storage: {0}")]
    Store(#[from] chat_storage::StoreError),
    /// The presence backend could not be set up (a bad Redis URL; an
    /// unreachable Redis does not stop the node).
    #[error(transparent)]
    Presence(#[from] PresenceError),
    /// An actor could not be started.
    #[error("actor: {0}")]
    Actor(String),
    /// The node could not join its cluster.
    #[error("cluster: {0}")]
    Join(#[from] crate::membership::JoinError),
    /// Serving failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// Notifications could not be set up (a bad VAPID key).
    #[error("notifications: {0}")]
    Notify(String),
    /// The media store could not be set up (an unusable directory or S3
    /// settings).
    #[error("media: {0}")]
    Media(String),
    /// The search index could not be opened.
    #[error("search: {0}")]
    Search(String),
    /// The client TLS files are unusable.
    #[error("tls: {0}")]
    Tls(#[from] crate::tls::TlsError),
}

impl App {
    /// Opens the store, starts the Router, and sets up auth.
    pub async fn start(config: Config) -> Result<Arc<App>, NodeError> {
        config.validate()?;
        // Unusable certificate files stop the node before it opens anything.
        let tls = crate::tls::ClientTls::load(&config.listen)?;
        std::fs::create_dir_all(&config.node.data_dir)?;
        let store = open_store(&config).await?;
        let presence: Arc<dyn PresenceStore> = match config.presence.backend {
            PresenceBackend::Memory => Arc::new(MemoryPresence::new()),
            PresenceBackend::Redis => Arc::new(
                RedisPresence::connect(
                    RedisPresenceConfig::new(
                        config.presence.redis_url.clone(),
                        config.node.name.as_str(),
                    )
                    .with_ttl(Duration::from_secs(config.presence.ttl_secs)),
                )
                .await?,
            ),
        };
        let auth_config = shared_secret(&config, &store).await?;
        let mut auth = Auth::from_config(&auth_config, &config.node.data_dir)?;
        auth.reserve_names(config.admin.users.iter().map(String::as_str));
        let tuning = Tuning {
            conversation_idle: Duration::from_secs(config.actors.conversation_idle_secs),
            tail: config.actors.tail,
            tail_bytes: config.actors.tail_bytes,
            tail_node_bytes: config.actors.tail_node_bytes,
            max_group_members: config.limits.max_group_members,
            max_channel_members: config.limits.max_channel_members,
            interest_ack_deadline: Duration::from_millis(config.actors.interest_ack_ms),
            sessions_sleep: config.actors.sessions_sleep,
            session_linger: Duration::from_secs(config.actors.session_linger_secs),
            ..Tuning::default()
        };
        let node_id = config.node.id;
        let name = config.node.name.as_str();
        let clustered = config.cluster.listen.is_some();
        let (cluster, replica, events) = if clustered {
            // Without a shared database every node keeps a full copy: writes
            // are replicated to all connected nodes before they are acked.
            // On a shared database (ScyllaDB) nothing is replicated between
            // nodes: the owner of a conversation writes it there, under a
            // lease, and any node reads it.
            let replica = match &store {
                OpenStore::Embedded(local) => {
                    Some(Arc::new(ReplicatedStore::new(local.clone(), name)?))
                }
                OpenStore::Scylla(_) => None,
            };
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            if config.faults.any() {
                tracing::warn!(faults = ?config.faults, "fault delays are set: a test node, not one to serve");
            }
            let faults = Faults {
                interest_ack_delay: Duration::from_millis(config.faults.interest_ack_delay_ms),
                peer_fanout_delay: Duration::from_millis(config.faults.peer_fanout_delay_ms),
            };
            (
                Cluster::clustered(name, config.node.id, tx)
                    .with_faults(faults)
                    .with_peer_queue_bytes(config.cluster.peer_queue_bytes),
                replica,
                Some(rx),
            )
        } else {
            (Cluster::single(name, config.node.id), None, None)
        };
        let data: Arc<dyn MessageStore> = match &replica {
            Some(r) => r.clone(),
            None => store.shared(),
        };
        let webhooks = Arc::new(chat_notify::webhooks::Webhooks::new(
            config.notifications.webhooks.clone(),
        ));
        let conversation_events = Arc::new(crate::notifier::WebhookEvents {
            store: data.clone(),
            webhooks: webhooks.clone(),
        });
        let media = Arc::new(crate::media::MediaService::new(
            config.media.clone(),
            chat_media::Blobs::open(&config.media, &config.node.data_dir)
                .map_err(|e| NodeError::Media(e.to_string()))?,
            &crate::notifier::media_key(
                auth_config.jwt_secret.as_deref(),
                store.shared().as_ref(),
                &config.node.data_dir,
            )
            .await
            .map_err(NodeError::Media)?,
            data.clone(),
        ));
        if config.media.backend == chat_media::Backend::Local
            && (clustered || config.storage.backend == StorageBackend::Scylla)
        {
            tracing::warn!(
                "media.backend = \"local\" keeps uploads on this node's disk: in a cluster \
                 (or on ScyllaDB, where nodes keep nothing of their own) use \"s3\", or other \
                 nodes will not find them"
            );
        }
        let services = Services::new(
            cluster,
            data,
            replica.clone(),
            presence.clone(),
            config.limits.clone(),
            tuning,
            Hooks {
                events: conversation_events,
                media: media.clone(),
            },
        );
        tokio::spawn(services.watchers.clone().run(presence.changes()));
        // Named only in a cluster: names are process-wide, and tests run
        // several single nodes in one process.
        let router_name = clustered.then(|| chat_actors::cluster::router_name(name));
        let (router, _) = Actor::spawn(router_name, Router, services.clone())
            .await
            .map_err(|e| NodeError::Actor(e.to_string()))?;
        let membership = match events {
            Some(events) => {
                let claim = match NodeClaim::acquire(
                    &config.presence.redis_url,
                    name,
                    node_id,
                    &config.node.data_dir,
                )
                .await
                {
                    Ok(c) => c,
                    Err(e) => {
                        router.stop(None);
                        store.close().await;
                        return Err(e.into());
                    }
                };
                if let Some(replica) = &replica {
                    replica.set_link(Arc::new(RouterLink::new(router.clone())));
                }
                let mut m = Membership::start(&config.cluster, name, events).await?;
                if let Err(e) = m.join(&config.cluster, &router).await {
                    m.stop();
                    router.stop(None);
                    store.close().await;
                    return Err(e.into());
                }
                Some((m, claim))
            }
            None => None,
        };
        // Once joined: a cluster's accounts are here by now.
        warn_unmade(&config, services.store.as_ref()).await;
        let mut registry = Registry::default();
        services.metrics.register(&mut registry);
        let health = Health;
        health.register(&mut registry);
        let notify_metrics = NotifyMetrics::register(&mut registry);
        let vapid = crate::notifier::vapid(
            &config.notifications,
            store.shared().as_ref(),
            &config.node.data_dir,
        )
        .await
        .map_err(NodeError::Notify)?;
        if replica.is_some() && config.notifications.push.vapid_private_key.is_none() {
            tracing::warn!(
                "a cluster without ScyllaDB and without notifications.push.vapid_private_key: \
                 each node signs pushes with its own VAPID key, so a browser subscribed \
                 through one node rejects pushes from the others; set the same key on every node"
            );
        }
        let push = Arc::new(PushSender::new(
            Arc::new(vapid),
            config.notifications.push.allow_loopback_http,
        ));
        let links = Arc::new(
            crate::notifier::links(
                &config.notifications,
                store.shared().as_ref(),
                &config.node.data_dir,
            )
            .await
            .map_err(NodeError::Notify)?,
        );
        let mailer = crate::notifier::mailer(&config.notifications).map_err(NodeError::Notify)?;
        let search = open_search(&config, services.store.clone()).await?;
        let shutdown = CancellationToken::new();
        if let Some(tls) = &tls {
            let every = Duration::from_secs(config.listen.tls_watch_secs);
            tls.watch(every, shutdown.clone());
        }
        media.spawn_sweeper(shutdown.clone());
        let stop = shutdown.clone();
        let notifier = crate::notifier::start(
            &config.notifications,
            services.store.clone(),
            services.presence.clone(),
            &services.cluster,
            services.leases.clone(),
            push.clone(),
            mailer,
            links.clone(),
            webhooks,
            search
                .clone()
                .map(|s| s as Arc<dyn chat_notify::indexing::Indexer>),
            notify_metrics,
            async move { stop.cancelled().await },
        );
        let dispatch = services.dispatch(router.clone(), config.presence.visible_to.into());
        let revoked = router.clone();
        auth.on_login_revoked(move |user, login| {
            let _ = revoked.cast(RouterMsg::LoginRevoked { user, login });
        });
        let app = Arc::new(App {
            config,
            store: services.store.clone(),
            presence: services.presence.clone(),
            metrics: services.metrics.clone(),
            cluster: services.cluster.clone(),
            sessions: services.directory.clone(),
            services,
            router,
            dispatch,
            auth,
            registry,
            health,
            shutdown,
            connections: TaskTracker::new(),
            // Connection ids embed the node id, so a connection is named
            // cluster-wide (a send's own connection is skipped on any node).
            next_conn: AtomicU64::new((u64::from(node_id) << 48) + 1),
            open_connections: Arc::default(),
            opened: store,
            media,
            search,
            tls,
            push,
            links,
            notifier: std::sync::Mutex::new(notifier),
            membership,
        });
        Health::watch(Arc::downgrade(&app), |app: &App| {
            (&app.health, &*app.services)
        });
        Ok(app)
    }

    /// Drains: closes connections with 1001, waits for them (bounded by the
    /// drain timeout), lets conversation actors finish their batches, then
    /// flushes the store.
    pub async fn drain(&self) {
        self.shutdown.cancel();
        self.connections.close();
        let deadline = Duration::from_secs(self.config.shutdown.drain_timeout_secs);
        if tokio::time::timeout(deadline, self.connections.wait())
            .await
            .is_err()
        {
            tracing::warn!("connections still open at the drain deadline");
        }
        let drained = ractor::call!(self.router, |reply| RouterMsg::Drain { reply });
        if let Err(e) = drained {
            tracing::warn!(error = %e, "router drain failed");
        }
        self.router.stop(None);
        let notifier = self
            .notifier
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(notifier) = notifier {
            // It stops at the shutdown signal, after the job in hand.
            let _ = tokio::time::timeout(Duration::from_secs(15), notifier).await;
        }
        // After the conversations and the outbox shards were given up: a
        // claim left under it (a release that failed) is free once the
        // grace for this node's last writes has passed.
        self.services.leases.release().await;
        if let Some((m, _)) = &self.membership {
            m.stop();
        }
        self.opened.close().await;
    }
}

/// The auth configuration with the HS256 secret filled in from the store
/// when none is configured and the store keeps secrets (ScyllaDB): every
/// node on that store then signs with the one secret the first node made,
/// and a node with an empty data directory keeps its users' sessions.
async fn shared_secret(config: &Config, store: &OpenStore) -> Result<AuthConfig, NodeError> {
    let mut auth = config.auth.clone();
    if auth.algorithm != Algorithm::HS256 || auth.jwt_secret.is_some() {
        return Ok(auth);
    }
    let candidate = crate::auth::new_secret();
    if let Some(kept) = store.shared().keep_secret("jwt", &candidate).await? {
        if kept == candidate {
            tracing::warn!(
                "generated the JWT secret and kept it in the store; every node on this store \
                 uses it (set auth.jwt_secret to choose one)"
            );
        }
        auth.jwt_secret = Some(kept);
    }
    Ok(auth)
}

/// The configured search index, opened; `None` when search is off.
pub(crate) async fn open_search(
    config: &Config,
    store: Arc<dyn MessageStore>,
) -> Result<Option<Arc<crate::search::SearchService>>, NodeError> {
    use chat_search::SearchBackend;
    let index: Arc<dyn chat_search::SearchIndex> = match config.search.backend {
        SearchBackend::Off => return Ok(None),
        SearchBackend::Opensearch => open_opensearch(&config.search.opensearch).await?,
        SearchBackend::Embedded => {
            if config.cluster.listen.is_some() {
                tracing::warn!(
                    "search.backend = \"embedded\" in a cluster: each node indexes only the \
                     conversations of the outbox shards it works, so a search on one node \
                     misses the others'; clusters use a shared search backend"
                );
            }
            let dir = config
                .search
                .dir
                .clone()
                .unwrap_or_else(|| config.node.data_dir.join("search"));
            Arc::new(
                chat_search::embedded::EmbeddedIndex::open(&dir)
                    .map_err(|e| NodeError::Search(e.to_string()))?,
            )
        }
    };
    Ok(Some(Arc::new(crate::search::SearchService::new(
        index, store,
    ))))
}

async fn open_opensearch(
    config: &chat_search::OpenSearchConfig,
) -> Result<Arc<dyn chat_search::SearchIndex>, NodeError> {
    let index = chat_search::opensearch::OpenSearchIndex::open(&config.url, &config.prefix)
        .await
        .map_err(|e| NodeError::Search(e.to_string()))?;
    Ok(Arc::new(index))
}

/// The configured store, opened (migrated, on ScyllaDB).
pub(crate) async fn open_store(config: &Config) -> Result<OpenStore, NodeError> {
    Ok(match config.storage.backend {
        StorageBackend::Embedded => OpenStore::Embedded(Arc::new(EmbeddedStore::open(
            &config.node.data_dir.join("store"),
            config.storage.durability,
        )?)),
        StorageBackend::Scylla => {
            OpenStore::Scylla(Arc::new(ScyllaStore::open(&config.storage.scylla).await?))
        }
    })
}

/// Warns of every admin the configuration names who has no account: until
/// an operator makes it, nobody holds that admin's rights.
pub(crate) async fn warn_unmade(config: &Config, store: &dyn MessageStore) {
    for name in &config.admin.users {
        let Ok(id) = UserId::new(&name.to_ascii_lowercase()) else {
            continue;
        };
        match store.user(&id).await {
            Ok(Some(_)) => {}
            Ok(None) => tracing::warn!(
                "[admin] users names {id}, who has no account: make it with                  `chat-node admin create-user {id}` (registration refuses the name)"
            ),
            Err(e) => tracing::warn!(error = %e, "cannot tell whether admin {id} has an account"),
        }
    }
}
