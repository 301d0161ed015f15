//! What the actors count, for the node's `/metrics`.

mod window;

use std::sync::atomic::AtomicU64;

use chat_protocol::ErrorCode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// The actors' metrics; the node registers them once.
pub struct Metrics {
    /// Messages stored and acknowledged.
    pub messages_accepted: Counter,
    /// Edits, deletes and reaction changes stored and acknowledged.
    pub messages_updated: Counter,
    /// Sends answered from the dedupe index instead of storing again.
    pub sends_deduplicated: Counter,
    /// Retried sends whose first write had landed unannounced (its store
    /// answer failed): announced by the retry.
    pub sends_announced_late: Counter,
    /// Message frames queued towards connections.
    pub messages_delivered: Counter,
    /// Seconds from a send reaching its conversation to its acknowledgement.
    pub send_latency: Histogram,
    /// Messages per store batch.
    pub store_batch_size: Histogram,
    /// Seconds per store batch.
    pub store_batch_latency: Histogram,
    /// Store operations that failed.
    pub store_errors: Counter,
    /// Conversation write leases taken (once per conversation activation on
    /// a shared store).
    pub leases_acquired: Counter,
    /// Lease renewals that went through.
    pub lease_renewals: Counter,
    /// Leases given up because they could not be renewed in time.
    pub leases_lost: Counter,
    /// Conversation actors alive.
    pub conversations_active: Gauge,
    /// Conversation actors restarted because a peer's write changed their
    /// conversation under them (a previous owner's late write).
    pub conversations_reloaded: Counter,
    /// Bytes of the recent messages conversations hold in memory (their
    /// tails), by the weight their bound counts.
    pub held_message_bytes: Gauge,
    /// Sessions on this node: awake, asleep, or lingering after their last
    /// connection left.
    pub sessions_active: Gauge,
    /// Of those, sessions whose actor sleeps.
    pub sessions_asleep: Gauge,
    /// WebSocket connections open.
    pub connections_open: Gauge,
    /// Connections refused because the node held `listen.max_connections`.
    pub connections_refused: Counter,
    /// Connections closed because their outbound queue overflowed.
    pub slow_consumers: Counter,
    /// `catch_up` frames queued: the node could not vouch for live delivery
    /// (an owner confirmed a session's interest late, or owners changed).
    pub catch_ups: Counter,
    /// Interest reports whose owner acknowledged after the session's
    /// deadline (`interest_ack_ms`): the client was let in first.
    pub interest_acks_late: Counter,
    /// Sends refused by the rate limit.
    pub rate_limited: Counter,
    /// Presence backend calls that failed.
    pub presence_errors: Counter,
    /// Client frames refused, by why: `undecodable` (not a frame of the
    /// protocol), `invalid` (a rule broken), `too_large` (a field over its
    /// limit).
    pub frames_rejected: Family<ReasonLabel, Counter>,
    /// Serving nodes in this node's view.
    pub cluster_members: Gauge,
    /// Requests forwarded to the owner on another node.
    pub peer_requests: Counter,
    /// Requests refused because too many were in flight to their owner.
    pub peer_rejected: Counter,
    /// Peers dropped for missing heartbeats or replication acks.
    pub peers_dropped: Counter,
    /// Peers dropped because what waited for them passed the bound.
    pub peers_overloaded: Counter,
    /// Batches of a conversation's events sent to another node.
    pub peer_deliveries_sent: Counter,
    /// Batches not sent to a node because none of its sessions listens.
    pub peer_deliveries_skipped: Counter,
    /// Batches received from other nodes.
    pub peer_deliveries_received: Counter,
    /// Batches received for which no local session listened.
    pub peer_deliveries_unheard: Counter,
    /// Seconds from a message's acceptance (its `ts`) to its event being
    /// queued on this node's connections: the fan-out, local or through
    /// another node, as the receiving node sees it.
    pub delivery_latency: Histogram,
    /// Seconds per store read for a client (a history or changes page).
    pub store_read_latency: Histogram,
    /// Requests this node sent to its database server (ScyllaDB), brought
    /// up to the driver's count at each scrape; 0 on the embedded store.
    pub store_requests: Counter,
    /// Errors answered to clients, by protocol code (a bounded set).
    pub errors: Family<CodeLabel, Counter>,
    /// Send-to-ack latencies again, readable per window (the console's p99).
    pub send_window: LatencyWindow,
    /// 1 when the store answered the last probe.
    pub store_up: Gauge,
    /// 1 when the presence backend answered the last probe.
    pub presence_up: Gauge,
    /// Round trip to each connected node, by its name (bounded by the
    /// cluster's size).
    pub peer_rtt: Family<PeerLabel, Gauge<f64, AtomicU64>>,
    /// 1 while a connected node is heard from within the deadline.
    pub peer_up: Family<PeerLabel, Gauge>,
    /// Requests to each node waiting for its answer.
    pub peer_inflight_requests: Family<PeerLabel, Gauge>,
    /// The bytes of those requests.
    pub peer_inflight_bytes: Family<PeerLabel, Gauge>,
    /// Bytes sent to a node that it has not confirmed handling.
    pub peer_backlog_bytes: Family<PeerLabel, Gauge>,
    /// Bytes sent to a node.
    pub peer_sent_bytes: Family<PeerLabel, Counter>,
    /// Frames in the connections' outbound queues (sampled at scrape).
    pub outbound_queued_frames: Gauge,
    /// Bytes in the connections' outbound queues (sampled at scrape).
    pub outbound_queued_bytes: Gauge,
    /// The longest outbound queue, in frames (sampled at scrape).
    pub outbound_queue_max_frames: Gauge,
}

pub use window::{LatencyWindow, WindowSnapshot};

/// The label of [`Metrics::frames_rejected`].
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// A fixed word.
    pub reason: &'static str,
}

/// The label of [`Metrics::peer_rtt`]: a node name.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PeerLabel {
    /// The node.
    pub peer: String,
}

/// The label of [`Metrics::errors`]: a protocol error code.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabel {
    /// The code, as clients see it.
    pub code: &'static str,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            messages_accepted: Counter::default(),
            messages_updated: Counter::default(),
            sends_deduplicated: Counter::default(),
            sends_announced_late: Counter::default(),
            messages_delivered: Counter::default(),
            send_latency: Histogram::new(exponential_buckets(0.0001, 2.0, 16)),
            store_batch_size: Histogram::new(exponential_buckets(1.0, 2.0, 12)),
            store_batch_latency: Histogram::new(exponential_buckets(0.0001, 2.0, 16)),
            store_errors: Counter::default(),
            leases_acquired: Counter::default(),
            lease_renewals: Counter::default(),
            leases_lost: Counter::default(),
            conversations_active: Gauge::default(),
            conversations_reloaded: Counter::default(),
            held_message_bytes: Gauge::default(),
            sessions_active: Gauge::default(),
            sessions_asleep: Gauge::default(),
            connections_open: Gauge::default(),
            connections_refused: Counter::default(),
            slow_consumers: Counter::default(),
            catch_ups: Counter::default(),
            interest_acks_late: Counter::default(),
            rate_limited: Counter::default(),
            presence_errors: Counter::default(),
            frames_rejected: Family::default(),
            cluster_members: Gauge::default(),
            peer_requests: Counter::default(),
            peer_rejected: Counter::default(),
            peers_dropped: Counter::default(),
            peers_overloaded: Counter::default(),
            peer_deliveries_sent: Counter::default(),
            peer_deliveries_skipped: Counter::default(),
            peer_deliveries_received: Counter::default(),
            peer_deliveries_unheard: Counter::default(),
            delivery_latency: Histogram::new(exponential_buckets(0.0001, 2.0, 16)),
            store_read_latency: Histogram::new(exponential_buckets(0.0001, 2.0, 16)),
            store_requests: Counter::default(),
            errors: Family::default(),
            send_window: LatencyWindow::default(),
            store_up: Gauge::default(),
            presence_up: Gauge::default(),
            peer_rtt: Family::default(),
            peer_up: Family::default(),
            peer_inflight_requests: Family::default(),
            peer_inflight_bytes: Family::default(),
            peer_backlog_bytes: Family::default(),
            peer_sent_bytes: Family::default(),
            outbound_queued_frames: Gauge::default(),
            outbound_queued_bytes: Gauge::default(),
            outbound_queue_max_frames: Gauge::default(),
        }
    }
}

impl Metrics {
    /// Counts a send (or update) acknowledged `secs` after it arrived.
    pub fn observe_send(&self, secs: f64) {
        self.send_latency.observe(secs);
        self.send_window.observe(secs);
    }

    /// Counts a refused client frame.
    pub fn rejected(&self, reason: &'static str) {
        self.frames_rejected
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }

    /// Client frames refused, for every reason.
    pub fn rejected_total(&self) -> u64 {
        ["undecodable", "invalid", "too_large"]
            .into_iter()
            .map(|reason| {
                self.frames_rejected
                    .get_or_create(&ReasonLabel { reason })
                    .get()
            })
            .sum()
    }

    /// Counts an error answered to a client.
    pub fn error(&self, code: ErrorCode) {
        self.errors
            .get_or_create(&CodeLabel {
                code: code.as_str(),
            })
            .inc();
    }

    /// Registers every metric under the `chat` prefix.
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("chat");
        r.register(
            "messages_accepted",
            "Messages stored and acknowledged",
            self.messages_accepted.clone(),
        );
        r.register(
            "messages_updated",
            "Edits, deletes and reaction changes stored and acknowledged",
            self.messages_updated.clone(),
        );
        r.register(
            "delivery_latency_seconds",
            "Seconds from a message's acceptance to its event queued on this node's connections",
            self.delivery_latency.clone(),
        );
        r.register(
            "store_read_latency_seconds",
            "Seconds per store read for a client (history, changes)",
            self.store_read_latency.clone(),
        );
        r.register(
            "store_requests",
            "Requests this node sent to its database server (0 on the embedded store)",
            self.store_requests.clone(),
        );
        r.register(
            "store_up",
            "1 when the store answers a read, else 0",
            self.store_up.clone(),
        );
        r.register(
            "presence_up",
            "1 when the presence backend (Redis) answers, else 0",
            self.presence_up.clone(),
        );
        r.register(
            "peer_rtt_seconds",
            "Round trip of a heartbeat ping to each connected node",
            self.peer_rtt.clone(),
        );
        r.register(
            "peer_up",
            "1 while a connected node is heard from within the deadline",
            self.peer_up.clone(),
        );
        r.register(
            "peer_inflight_requests",
            "Requests forwarded to a node and not answered yet",
            self.peer_inflight_requests.clone(),
        );
        r.register(
            "peer_inflight_bytes",
            "Bytes of the requests forwarded to a node and not answered yet",
            self.peer_inflight_bytes.clone(),
        );
        r.register(
            "peer_backlog_bytes",
            "Bytes sent to a node that it has not confirmed handling (bounded by cluster.peer_queue_bytes)",
            self.peer_backlog_bytes.clone(),
        );
        r.register(
            "peer_sent_bytes",
            "Bytes sent to a node (heartbeats, deliveries, requests, replication)",
            self.peer_sent_bytes.clone(),
        );
        r.register(
            "outbound_queued_frames",
            "Frames in the connections' outbound queues",
            self.outbound_queued_frames.clone(),
        );
        r.register(
            "outbound_queued_bytes",
            "Bytes in the connections' outbound queues",
            self.outbound_queued_bytes.clone(),
        );
        r.register(
            "outbound_queue_max_frames",
            "The longest outbound queue of a connection, in frames",
            self.outbound_queue_max_frames.clone(),
        );
        r.register(
            "errors",
            "Errors answered to clients, by protocol code",
            self.errors.clone(),
        );
        r.register(
            "sends_deduplicated",
            "Retried sends answered with the first message",
            self.sends_deduplicated.clone(),
        );
        r.register(
            "sends_announced_late",
            "Retried sends whose first write landed although its answer failed, announced by the retry",
            self.sends_announced_late.clone(),
        );
        r.register(
            "messages_delivered",
            "Message frames queued towards connections",
            self.messages_delivered.clone(),
        );
        r.register(
            "send_latency_seconds",
            "From a send reaching its conversation to its acknowledgement",
            self.send_latency.clone(),
        );
        r.register(
            "store_batch_size",
            "Messages per store batch",
            self.store_batch_size.clone(),
        );
        r.register(
            "store_batch_latency_seconds",
            "Duration of a store batch",
            self.store_batch_latency.clone(),
        );
        r.register(
            "store_errors",
            "Store operations that failed",
            self.store_errors.clone(),
        );
        r.register(
            "leases_acquired",
            "Conversation write leases taken on a shared store",
            self.leases_acquired.clone(),
        );
        r.register(
            "lease_renewals",
            "Conversation write lease renewals",
            self.lease_renewals.clone(),
        );
        r.register(
            "leases_lost",
            "Conversation write leases that ran out before they were renewed",
            self.leases_lost.clone(),
        );
        r.register(
            "conversations_active",
            "Conversation actors alive",
            self.conversations_active.clone(),
        );
        r.register(
            "conversations_reloaded",
            "Conversation actors restarted because another node's write changed their conversation",
            self.conversations_reloaded.clone(),
        );
        r.register(
            "held_message_bytes",
            "Bytes of recent messages conversations hold in memory to serve pages from",
            self.held_message_bytes.clone(),
        );
        r.register(
            "sessions_active",
            "Sessions of users connected here, awake or asleep, and of those whose last connection left within actors.session_linger_secs",
            self.sessions_active.clone(),
        );
        r.register(
            "sessions_asleep",
            "Sessions whose actor sleeps until a message wakes it",
            self.sessions_asleep.clone(),
        );
        r.register(
            "connections_open",
            "WebSocket connections open",
            self.connections_open.clone(),
        );
        r.register(
            "connections_refused",
            "Client connections refused because the node held listen.max_connections",
            self.connections_refused.clone(),
        );
        r.register(
            "slow_consumers",
            "Connections closed because their outbound queue overflowed",
            self.slow_consumers.clone(),
        );
        r.register(
            "catch_ups",
            "catch_up frames queued: live delivery could not be vouched for",
            self.catch_ups.clone(),
        );
        r.register(
            "interest_acks_late",
            "Interest reports acknowledged after the session let its client in",
            self.interest_acks_late.clone(),
        );
        r.register(
            "rate_limited",
            "Sends refused by the rate limit",
            self.rate_limited.clone(),
        );
        r.register(
            "presence_errors",
            "Presence backend calls that failed",
            self.presence_errors.clone(),
        );
        r.register(
            "frames_rejected",
            "Client frames refused as malformed or invalid",
            self.frames_rejected.clone(),
        );
        r.register(
            "cluster_members",
            "Nodes serving conversations, as this node sees it",
            self.cluster_members.clone(),
        );
        r.register(
            "peer_requests",
            "Requests forwarded to the owning node",
            self.peer_requests.clone(),
        );
        r.register(
            "peer_rejected",
            "Requests refused because too many were in flight to their owner",
            self.peer_rejected.clone(),
        );
        r.register(
            "peers_dropped",
            "Peers dropped for missed heartbeats or replication acks",
            self.peers_dropped.clone(),
        );
        r.register(
            "peers_overloaded",
            "Peers dropped because what waited for them passed cluster.peer_queue_bytes",
            self.peers_overloaded.clone(),
        );
        r.register(
            "peer_deliveries_sent",
            "Batches of conversation events sent to another node",
            self.peer_deliveries_sent.clone(),
        );
        r.register(
            "peer_deliveries_skipped",
            "Batches not sent to a node where no session listens",
            self.peer_deliveries_skipped.clone(),
        );
        r.register(
            "peer_deliveries_received",
            "Batches of conversation events received from other nodes",
            self.peer_deliveries_received.clone(),
        );
        r.register(
            "peer_deliveries_unheard",
            "Batches received from other nodes that no local session listened to",
            self.peer_deliveries_unheard.clone(),
        );
    }
}
