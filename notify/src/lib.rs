//! Notifications for people who are not looking: Web Push to their
//! browsers for messages stored while they were away, by the rules of
//! their settings.
//!
//! ```text
//!  message write ──(same atomic write)──► outbox mark of its conversation
//!                                              │  stage one (expand.rs)
//!                                              ▼
//!        rules.rs: away? level? mute? quiet hours? ──► jobs, by member
//!                                              │  stage two (runner.rs)
//!                                              ▼
//!                          push.rs: encrypt, sign, POST to the push service
//! ```
//!
//! Everything between the message and the push service lives in the store
//! (chat-storage's outbox), never only in memory, so a node that dies
//! loses no notification: another node takes its shards over
//! ([`owners`]) and finishes its work, at worst repeating a push with the
//! same message id. This crate sits beside the actors, over storage and
//! presence; the node starts it ([`Notifier::start`]).
#![deny(missing_docs, unreachable_pub, unsafe_code)]
#![warn(clippy::mod_module_files)]

use std::sync::Arc;
use std::time::Duration;

use chat_presence::{PresenceError, PresenceStore};
use chat_protocol::ConversationId;
use chat_storage::{MessageStore, StoreError};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;

pub mod indexing;
pub mod jobs;
pub mod links;
pub mod mail;
pub mod metrics;
pub mod owners;
pub mod push;
pub mod quiet;
pub mod rules;
pub mod vapid;
pub mod webhooks;

mod admission;
mod background;
mod expand;
mod mail_jobs;
mod push_job;
mod runner;

use metrics::NotifyMetrics;
use owners::ShardOwners;
use push::PushSender;

/// What stops a pass of the worker (it tries again on the next).
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Presence could not say who is away.
    #[error(transparent)]
    Presence(#[from] PresenceError),
}

/// `[notifications]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NotifyConfig {
    /// Whether this node works the outbox at all.
    pub enabled: bool,
    /// How often the worker looks for new work.
    pub poll_ms: u64,
    /// How often the search index takes what was written: a pass indexes
    /// the conversations marked since the last time only once this long has
    /// passed (or when many wait). Each take is a commit of the index, which
    /// costs about the same whatever it holds, so at a steady 1,000
    /// messages/s one commit every 2 s costs a third less CPU per message
    /// than one a second (`index_cost`). A write becomes searchable within
    /// this plus a pass or two (see `indexing::Cadence`); the protocol
    /// allows 5 s, and the node refuses this plus `poll_ms` over 4 s.
    pub index_every_ms: u64,
    /// Jobs the outbox may hold, all shards together; past it new work is
    /// dropped and counted.
    pub queue_limit: u64,
    /// Threads the worker runs on, at the lowest CPU priority so that live
    /// chat always comes first; 0 runs it on the node's own runtime.
    pub threads: usize,
    /// Pushes one member may have waiting; past it their new pushes are
    /// dropped and counted (a member away from a thousand busy rooms, or
    /// whose push service is down).
    pub user_queue_limit: u64,
    /// The first retry's delay; each next one doubles, up to 5 minutes.
    pub retry_base_ms: u64,
    /// The web app's address, which mailed links open (verification,
    /// digests, unsubscribing).
    pub public_url: String,
    /// Web Push.
    pub push: PushConfig,
    /// Mail.
    pub smtp: mail::SmtpConfig,
    /// Operators' webhooks (`[[notifications.webhooks]]`).
    pub webhooks: Vec<webhooks::WebhookConfig>,
}

impl NotifyConfig {
    /// The passes' period: their ticks, and what the index's cadence
    /// measures a pass falling behind against, must be the same.
    fn poll_period(&self) -> Duration {
        Duration::from_millis(self.poll_ms.max(10))
    }
}

impl Default for NotifyConfig {
    fn default() -> Self {
        NotifyConfig {
            enabled: true,
            poll_ms: 1000,
            index_every_ms: 2000,
            queue_limit: 1_000_000,
            user_queue_limit: 1_000,
            threads: 1,
            retry_base_ms: 1000,
            public_url: "http://127.0.0.1:8080".into(),
            push: PushConfig::default(),
            smtp: mail::SmtpConfig::default(),
            webhooks: Vec::new(),
        }
    }
}

/// `[notifications.push]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PushConfig {
    /// The VAPID `sub`: a `mailto:` or `https:` contact for push services.
    pub subject: String,
    /// How long a push service keeps trying a browser (`TTL`), and how
    /// long we retry a push service.
    pub ttl_secs: u64,
    /// Accept `http://` endpoints on loopback addresses (tests run their
    /// push service so); never in production.
    pub allow_loopback_http: bool,
    /// The VAPID private key (base64url of the P-256 scalar). Left unset,
    /// the store keeps one for the cluster (ScyllaDB) or the node makes its
    /// own in its data directory.
    pub vapid_private_key: Option<String>,
}

impl Default for PushConfig {
    fn default() -> Self {
        PushConfig {
            subject: "mailto:postmaster@localhost".into(),
            ttl_secs: 24 * 3600,
            allow_loopback_http: false,
            vapid_private_key: None,
        }
    }
}

impl PushConfig {
    /// `ttl_secs` as a duration.
    pub fn ttl(&self) -> Duration {
        Duration::from_secs(self.ttl_secs)
    }
}

/// What both stages use.
pub(crate) struct Ctx {
    pub(crate) store: Arc<dyn MessageStore>,
    pub(crate) presence: Arc<dyn PresenceStore>,
    pub(crate) config: NotifyConfig,
    pub(crate) metrics: Arc<NotifyMetrics>,
    pub(crate) push: Option<Arc<PushSender>>,
    pub(crate) mailer: Option<Arc<mail::Mailer>>,
    pub(crate) links: Arc<links::Links>,
    pub(crate) webhooks: Arc<webhooks::Webhooks>,
    /// The search index kept up to date, if any.
    pub(crate) indexer: Option<Arc<dyn indexing::Indexer>>,
    /// The outbox's bounds and what counts against them.
    pub(crate) admission: admission::Admission,
}

/// What the worker sends with.
pub struct Senders {
    /// Web Push (none: push jobs are dropped).
    pub push: Option<Arc<PushSender>>,
    /// Mail (none: no digest or verification mail goes).
    pub mailer: Option<Arc<mail::Mailer>>,
    /// The links mails carry.
    pub links: Arc<links::Links>,
    /// Operators' webhooks.
    pub webhooks: Arc<webhooks::Webhooks>,
    /// The search index to keep up to date (none: no index jobs).
    pub indexer: Option<Arc<dyn indexing::Indexer>>,
}

/// Shards a pass works at once.
const SHARDS_AT_ONCE: usize = 4;

/// The outbox worker of one node.
pub struct Notifier {
    ctx: Ctx,
    owners: Arc<dyn ShardOwners>,
    passes: std::sync::atomic::AtomicU64,
    /// When a pass last indexed (see `indexing::Cadence`).
    indexed: indexing::Cadence,
}

impl Notifier {
    /// A worker over `store` and `presence`, sending with `senders`,
    /// working the shards `owners` gives.
    pub fn new(
        config: NotifyConfig,
        store: Arc<dyn MessageStore>,
        presence: Arc<dyn PresenceStore>,
        senders: Senders,
        owners: Arc<dyn ShardOwners>,
        metrics: Arc<NotifyMetrics>,
    ) -> Notifier {
        let indexed = indexing::Cadence::new(
            Duration::from_millis(config.index_every_ms),
            config.poll_period(),
        );
        Notifier {
            ctx: Ctx {
                store,
                presence,
                metrics,
                push: senders.push,
                mailer: senders.mailer,
                links: senders.links,
                webhooks: senders.webhooks,
                indexer: senders.indexer,
                admission: admission::Admission::new(config.queue_limit, config.user_queue_limit),
                config,
            },
            indexed,
            owners,
            passes: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Works the outbox until `stop` resolves, then lets go of its shards:
    /// on threads of its own at the lowest CPU priority (see `background`)
    /// unless `[notifications] threads` is 0, then on the caller's runtime.
    pub fn start(
        self,
        stop: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> JoinHandle<()> {
        let threads = self.ctx.config.threads;
        let work = async move {
            let period = self.ctx.config.poll_period();
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tokio::pin!(stop);
            loop {
                tokio::select! {
                    _ = &mut stop => break,
                    at = tick.tick() => self.pass(at.into_std()).await,
                }
            }
            self.owners.release_all().await;
        };
        if threads == 0 {
            return tokio::spawn(work);
        }
        match background::spawn(threads, work) {
            Ok(handle) => handle,
            Err(e) => {
                tracing::error!(error = %e, "cannot start the notification threads; notifications are off");
                tokio::spawn(async {})
            }
        }
    }

    /// One pass over every shard this node works; `at`: its tick.
    async fn pass(&self, at: std::time::Instant) {
        // The queues are counted (a scan of each shard) every tenth pass:
        // admissions in between add to the last count.
        let count = self
            .passes
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            .is_multiple_of(10);
        let owned = self.owners.owned().await;
        self.ctx.metrics.shards.set(owned.len() as i64);
        if count {
            self.ctx.admission.forget_others(&owned);
        }
        let mut backlog = 0;
        let mut finished = Vec::new();
        // A few shards at once: one shard's pushes wait on push services,
        // and the others' need not wait behind them.
        let mut passes = futures_util::stream::iter(owned)
            .map(|shard| async move { (shard, self.pass_shard(shard, count).await) })
            .buffer_unordered(SHARDS_AT_ONCE);
        while let Some((shard, result)) = passes.next().await {
            match result {
                Ok((n, done)) => {
                    backlog += n;
                    finished.extend(done);
                }
                Err(e) => tracing::warn!(shard, error = %e, "notification pass failed"),
            }
        }
        // Indexed before their marks go (a crash before the write below
        // leaves the marks, and the next pass indexes them again). Between
        // the index's takes the marks stay too: their cursors move on, so
        // the next pass goes over them without notifying twice.
        let mut unindexed = std::collections::HashSet::new();
        if let Some(indexer) = &self.ctx.indexer {
            let marked: Vec<ConversationId> = finished
                .iter()
                .map(|f| f.mark.conversation.clone())
                .collect();
            unindexed = if self.indexed.due(marked.len(), at) {
                indexing::index_marked(&self.ctx, indexer, marked).await
            } else {
                marked.into_iter().collect()
            };
        }
        // Every conversation's cursor and mark in one write.
        let finished: Vec<chat_storage::MarkDone> = finished
            .into_iter()
            .map(|f| chat_storage::MarkDone {
                clear: f.clear && !unindexed.contains(&f.mark.conversation),
                shard: f.shard,
                mark: f.mark,
                cursor: f.cursor,
            })
            .collect();
        if let Err(e) = self.ctx.store.finish_marks(&finished).await {
            tracing::warn!(error = %e, "notification cursors not written; the next pass redoes them");
        }
        if count {
            self.ctx.metrics.backlog.set(backlog as i64);
        }
    }

    /// One shard's pass: its count (when `count`), what stage one did with
    /// its marks, then its due jobs run.
    async fn pass_shard(
        &self,
        shard: u32,
        count: bool,
    ) -> Result<(u64, Vec<expand::Finish>), NotifyError> {
        let mut waiting = 0;
        if count {
            waiting = self.ctx.store.count_jobs(shard).await?;
            self.ctx.admission.counted(shard, waiting);
        }
        let finished = expand::expand_shard(&self.ctx, shard).await?;
        // Stage one's work stands (its jobs are stored, its cursors are to
        // be written) whatever becomes of the jobs that were due.
        if let Err(e) = runner::run_due(&self.ctx, shard).await {
            tracing::warn!(shard, error = %e, "notification jobs not run; the next pass retries");
        }
        Ok((waiting, finished))
    }
}
