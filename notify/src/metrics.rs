//! The outbox's counters, by channel (`push`, later `email`, `webhook`):
//! what operators watch to see notifications flow, fail or back up.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// The channels.
pub const CHANNELS: [&str; 3] = ["push", "email", "webhook"];

/// A channel label.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Channel {
    /// `push`, `email` or `webhook`.
    pub channel: &'static str,
}

/// Counters and gauges.
#[derive(Default)]
pub struct NotifyMetrics {
    /// Jobs written.
    pub queued: Family<Channel, Counter>,
    /// Jobs done: the push service (mail server, webhook) took it.
    pub sent: Family<Channel, Counter>,
    /// Attempts that failed (each retry counts).
    pub failed: Family<Channel, Counter>,
    /// Jobs given up: past their TTL, over a queue limit, refused by the
    /// service, or for a subscription that is gone.
    pub dropped: Family<Channel, Counter>,
    /// Jobs that found nothing left to do: the message was read, deleted,
    /// or the member muted the conversation since.
    pub cancelled: Family<Channel, Counter>,
    /// Webhook deliveries kept as dead letters.
    pub dead: Family<Channel, Counter>,
    /// Jobs waiting in the shards this node works.
    pub backlog: Gauge,
    /// Shards this node works.
    pub shards: Gauge,
}

impl NotifyMetrics {
    /// Registered in `registry` under `chat_notifications_*`.
    pub fn register(registry: &mut Registry) -> std::sync::Arc<NotifyMetrics> {
        let m = NotifyMetrics::default();
        let r = registry.sub_registry_with_prefix("chat_notifications");
        r.register("queued", "Notification jobs written", m.queued.clone());
        r.register("sent", "Notifications delivered", m.sent.clone());
        r.register(
            "failed",
            "Notification attempts that failed",
            m.failed.clone(),
        );
        r.register("dropped", "Notification jobs given up", m.dropped.clone());
        r.register(
            "cancelled",
            "Notification jobs with nothing left to do (read or deleted first)",
            m.cancelled.clone(),
        );
        r.register(
            "dead",
            "Webhook deliveries given up and kept for replay",
            m.dead.clone(),
        );
        r.register(
            "backlog",
            "Notification jobs waiting in the shards this node works",
            m.backlog.clone(),
        );
        r.register("shards", "Outbox shards this node works", m.shards.clone());
        // Every channel's series from the start, at 0: a rate over a
        // series that appears with its first event misses that event, and
        // an alert on it would have nothing to evaluate until then.
        for channel in CHANNELS {
            let label = Channel { channel };
            for family in [
                &m.queued,
                &m.sent,
                &m.failed,
                &m.dropped,
                &m.cancelled,
                &m.dead,
            ] {
                let _ = family.get_or_create(&label);
            }
        }
        std::sync::Arc::new(m)
    }

    /// `family`'s counter for `channel`, by `n`.
    pub fn counted(&self, family: &Family<Channel, Counter>, channel: &'static str, n: usize) {
        if n > 0 {
            family.get_or_create(&Channel { channel }).inc_by(n as u64);
        }
    }
}
