//! Starting the notification outbox's worker (chat-notify) on this node:
//! the cluster's VAPID key, found or made once, and which outbox shards this
//! node works.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use chat_actors::cluster::{Cluster, Owner};
use chat_actors::events::ConversationEvents;
use chat_notify::links::Links;
use chat_notify::mail::Mailer;
use chat_notify::metrics::NotifyMetrics;
use chat_notify::owners::{AllShards, PlacedShards, ShardOwners};
use chat_notify::push::PushSender;
use chat_notify::vapid::{new_secret, Vapid};
use chat_notify::webhooks::Webhooks;
use chat_notify::{Notifier, NotifyConfig, Senders};
use chat_presence::PresenceStore;
use chat_storage::{MessageStore, NodeLeaseHolder};
use tokio::task::JoinHandle;

/// The file of a node's VAPID key when the store keeps no secrets.
const VAPID_FILE: &str = "vapid_key";
/// The file of the key that signs unsubscribe links, likewise.
const LINKS_FILE: &str = "links_key";
/// The file of the key that signs media links, likewise.
const MEDIA_FILE: &str = "media_key";

/// The cluster's VAPID key: configured, or kept like [`kept_secret`] says
/// (a cluster without ScyllaDB must configure one, or browsers subscribed
/// through one node would not take pushes from another).
pub(crate) async fn vapid(
    config: &NotifyConfig,
    store: &dyn MessageStore,
    data_dir: &Path,
) -> Result<Vapid, String> {
    let secret = match &config.push.vapid_private_key {
        Some(key) => key.clone(),
        None => kept_secret("vapid", VAPID_FILE, new_secret(), store, data_dir).await?,
    };
    Vapid::from_secret(&secret, &config.push.subject).map_err(|e| e.to_string())
}

/// The key that signs unsubscribe links, kept like [`kept_secret`] says.
pub(crate) async fn links(
    config: &NotifyConfig,
    store: &dyn MessageStore,
    data_dir: &Path,
) -> Result<Links, String> {
    let candidate = hex::encode(rand::random::<[u8; 32]>());
    let key = kept_secret("unsubscribe", LINKS_FILE, candidate, store, data_dir).await?;
    Ok(Links::new(&config.public_url, key.as_bytes()))
}

/// The key that signs media links: derived from the JWT secret when there
/// is one (every node of a working cluster shares it, with or without
/// ScyllaDB), else kept like [`kept_secret`] says.
pub(crate) async fn media_key(
    jwt_secret: Option<&str>,
    store: &dyn MessageStore,
    data_dir: &Path,
) -> Result<Vec<u8>, String> {
    use sha2::{Digest, Sha256};
    if let Some(secret) = jwt_secret {
        let mut h = Sha256::new();
        h.update(b"chat media links\0");
        h.update(secret.as_bytes());
        return Ok(h.finalize().to_vec());
    }
    let candidate = hex::encode(rand::random::<[u8; 32]>());
    let key = kept_secret("media", MEDIA_FILE, candidate, store, data_dir).await?;
    Ok(key.into_bytes())
}

/// A secret every node of the store shares: kept in the store (ScyllaDB:
/// the first node makes it, every node uses it), or in the data directory
/// (one node) under `file`.
async fn kept_secret(
    name: &str,
    file: &str,
    candidate: String,
    store: &dyn MessageStore,
    data_dir: &Path,
) -> Result<String, String> {
    let kept = store
        .keep_secret(name, &candidate)
        .await
        .map_err(|e| e.to_string())?;
    if let Some(kept) = kept {
        return Ok(kept);
    }
    let path = data_dir.join(file);
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok(text.trim().to_owned()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            match write_private(&path, &candidate) {
                Ok(()) => {
                    tracing::info!(path = %path.display(), "generated this node's {name} secret");
                    Ok(candidate)
                }
                // Another process on this directory was first.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    std::fs::read_to_string(&path)
                        .map(|t| t.trim().to_owned())
                        .map_err(|e| format!("cannot read {}: {e}", path.display()))
                }
                Err(e) => Err(format!("cannot write {}: {e}", path.display())),
            }
        }
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

/// Writes a secret readable by the owner only; of two processes racing on
/// one directory, the second fails rather than replacing the first's key.
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()
}

/// Which shards this node works: all of them alone; in a cluster those its
/// placement gives it, under leases when the store is shared.
fn owners(
    cluster: &Arc<Cluster>,
    store: Arc<dyn MessageStore>,
    leases: Arc<dyn NodeLeaseHolder>,
) -> Arc<dyn ShardOwners> {
    if !cluster.enabled() {
        return Arc::new(AllShards);
    }
    let view = cluster.clone();
    let here = Arc::new(move |key: &chat_protocol::ConversationId| {
        matches!(view.owner(key), Owner::Local)
    });
    Arc::new(PlacedShards::new(store, leases, here))
}

/// Operators' webhooks of conversation and membership changes: queued in
/// the outbox once the conversation actor has stored the change (a node
/// dying between the two loses the event; message events, from the outbox
/// itself, are never lost).
pub(crate) struct WebhookEvents {
    pub(crate) store: Arc<dyn MessageStore>,
    pub(crate) webhooks: Arc<Webhooks>,
}

impl WebhookEvents {
    fn emit(&self, event: &str, data: impl FnOnce() -> serde_json::Value) {
        if !self.webhooks.wanted(event) {
            return;
        }
        let jobs = self.webhooks.jobs(event, data(), chat_protocol::now_ms());
        let store = self.store.clone();
        let event = event.to_owned();
        tokio::spawn(async move {
            if let Err(e) = store.put_jobs(&jobs).await {
                tracing::warn!(%event, error = %e, "webhook event not queued");
            }
        });
    }
}

impl ConversationEvents for WebhookEvents {
    fn created(&self, conversation: &chat_protocol::Conversation) {
        self.emit(
            "conversation.created",
            || serde_json::json!({ "conversation": conversation }),
        );
    }

    fn members_changed(
        &self,
        conversation: &chat_protocol::ConversationId,
        joined: &[chat_protocol::UserId],
        left: &[chat_protocol::UserId],
    ) {
        for (event, users) in [("member.joined", joined), ("member.left", left)] {
            for user in users {
                self.emit(
                    event,
                    || serde_json::json!({ "conversation": conversation, "user": user }),
                );
            }
        }
    }
}

/// The mailer `[notifications.smtp]` configures, if any.
pub(crate) fn mailer(config: &NotifyConfig) -> Result<Option<Arc<Mailer>>, String> {
    if config.smtp.url.is_empty() {
        return Ok(None);
    }
    Mailer::new(&config.smtp).map(|m| Some(Arc::new(m)))
}

/// Starts the worker, which stops when `stop` resolves.
#[allow(clippy::too_many_arguments)]
pub(crate) fn start(
    config: &NotifyConfig,
    store: Arc<dyn MessageStore>,
    presence: Arc<dyn PresenceStore>,
    cluster: &Arc<Cluster>,
    leases: Arc<dyn NodeLeaseHolder>,
    push: Arc<PushSender>,
    mailer: Option<Arc<Mailer>>,
    links: Arc<Links>,
    webhooks: Arc<Webhooks>,
    indexer: Option<Arc<dyn chat_notify::indexing::Indexer>>,
    metrics: Arc<NotifyMetrics>,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> Option<JoinHandle<()>> {
    if !config.enabled {
        return None;
    }
    let owners = owners(cluster, store.clone(), leases);
    let senders = Senders {
        push: Some(push),
        mailer,
        links,
        webhooks,
        indexer,
    };
    let notifier = Notifier::new(config.clone(), store, presence, senders, owners, metrics);
    Some(notifier.start(stop))
}
