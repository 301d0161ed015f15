//! This node's load over its last second or so, for its heartbeat (which
//! carries it to the other nodes) and for the admin console: rates and a
//! p99 over a window, not since the start as `/metrics` counts them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chat_protocol::peer::NodeStats;

use crate::metrics::WindowSnapshot;
use crate::services::Services;

/// The shortest window the rates are taken over.
const WINDOW: Duration = Duration::from_secs(1);

/// Counters at the start of the current window, and the last window's stats.
pub(super) struct Load {
    since: Instant,
    accepted: u64,
    delivered: u64,
    latency: WindowSnapshot,
    last: NodeStats,
}

impl Load {
    pub(super) fn new(services: &Services) -> Load {
        let m = &services.metrics;
        Load {
            since: Instant::now(),
            accepted: m.messages_accepted.get(),
            delivered: m.messages_delivered.get(),
            latency: m.send_window.snapshot(),
            last: NodeStats::default(),
        }
    }

    /// The stats of the last full window, closing the current one first if
    /// it is a window long; gauges (connections, health) are read now.
    pub(super) fn stats(&mut self, services: &Arc<Services>, sessions: usize) -> NodeStats {
        let m = &services.metrics;
        let now = Instant::now();
        let elapsed = now.duration_since(self.since);
        if elapsed >= WINDOW {
            let secs = elapsed.as_secs_f64();
            let (accepted, delivered) = (m.messages_accepted.get(), m.messages_delivered.get());
            let latency = m.send_window.snapshot();
            self.last.messages_per_sec = accepted.saturating_sub(self.accepted) as f64 / secs;
            self.last.deliveries_per_sec = delivered.saturating_sub(self.delivered) as f64 / secs;
            self.last.send_p99_ms = latency.quantile_since(&self.latency, 0.99).map(|s| s * 1e3);
            *self = Load {
                since: now,
                accepted,
                delivered,
                latency,
                last: std::mem::take(&mut self.last),
            };
        }
        NodeStats {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            connections: m.connections_open.get().max(0) as u64,
            sessions: sessions as u64,
            conversations: services.conversations.len() as u64,
            store_up: m.store_up.get() == 1,
            presence_up: m.presence_up.get() == 1,
            ..self.last.clone()
        }
    }
}
