//! One measured window of messaging: the [`StepReport`], judged against
//! the SLO, and what it cost in CPU (the server's and the harness's).

use serde::{Deserialize, Serialize};

use crate::cpu::CpuWindow;
use crate::stats::{Latency, Window};

/// One measured window of messaging.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StepReport {
    /// Messages per second each user was asked to send.
    pub rate_per_user: f64,
    /// Users sending.
    pub senders: usize,
    /// Messages per second asked of the whole run.
    pub offered_msgs_per_s: f64,
    /// Length of the window, seconds.
    pub window_s: f64,
    /// Messages sent in the window.
    pub sent: u64,
    /// Of those, acknowledged.
    pub accepted: u64,
    /// Acknowledged per second.
    pub accepted_per_s: f64,
    /// Deliveries of those messages to other members.
    pub deliveries: u64,
    /// Deliveries per second.
    pub deliveries_per_s: f64,
    /// Deliveries the accepted messages should have caused.
    pub expected_deliveries: u64,
    /// deliveries / expected.
    pub delivery_ratio: f64,
    /// Error replies.
    pub errors: u64,
    /// Of those, `rate_limited`.
    pub rate_limited: u64,
    /// Sends skipped because 128 of the client's sends were unanswered.
    pub backpressured: u64,
    /// Send to each receiver.
    pub latency_ms: Latency,
    /// Send to the sender's acknowledgement.
    pub ack_ms: Latency,
    /// The worst send-to-receive latency (ms) of the messages sent in each
    /// tenth of a second of the window, in order: a p99 made by one stall
    /// and one made by a pause every second look alike, these do not.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub worst_ms_by_tenth: Vec<f64>,
    /// Accepted ≥ 95% of offered, ≥ 99% delivered, no errors, p99 within the SLO.
    pub kept_up: bool,
    /// Seconds between the two CPU readings (the window's start and end).
    #[serde(default)]
    pub cpu_window_s: f64,
    /// Deliveries the harness received between the two CPU readings: the
    /// denominator of `server_cpu_us_per_delivery`.
    #[serde(default)]
    pub cpu_window_deliveries: u64,
    /// Server CPU seconds (utime + stime of every `--pid` process) in the
    /// window; `None` without `--pid`.
    #[serde(default)]
    pub server_cpu_s: Option<f64>,
    /// The same per process, in `--pid` order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub server_cpu_s_by_pid: Vec<f64>,
    /// server_cpu_s / cpu_window_deliveries, in microseconds.
    #[serde(default)]
    pub server_cpu_us_per_delivery: Option<f64>,
    /// The part of it spent in the kernel (stime): socket writes and the
    /// loopback delivery they run, fsyncs, wake-ups.
    #[serde(default)]
    pub server_kernel_us_per_delivery: Option<f64>,
    /// server_cpu_s / (cpu_window_s × server cores): how busy the server was.
    #[serde(default)]
    pub server_cpu_share: Option<f64>,
    /// The harness's own CPU seconds in the window (/proc/self/stat).
    #[serde(default)]
    pub harness_cpu_s: Option<f64>,
    /// harness_cpu_s / (cpu_window_s × harness_cores).
    #[serde(default)]
    pub harness_cpu_share: Option<f64>,
    /// Cores the harness could run on (its CPU affinity, or `--threads`).
    #[serde(default)]
    pub harness_cores: usize,
    /// The harness used more than `--harness-bound-share` (0.85) of its
    /// cores: the window may measure the harness, not the server. Never a
    /// peak.
    #[serde(default)]
    pub harness_bound: bool,
    /// `--offline-share` runs: pushes the harness's push service took in
    /// the window (sent for offline members, about a poll interval behind
    /// the messages that caused them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pushes: Option<u64>,
    /// pushes / cpu_window_s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pushes_per_s: Option<f64>,
}

impl StepReport {
    /// A step from a window, judged against `slo_ms`.
    pub fn from_window(w: &Window, rate: f64, senders: usize, slo_ms: f64) -> StepReport {
        let secs = w.secs.max(1e-9);
        let offered = rate * senders as f64;
        let ratio = if w.expected > 0 {
            w.delivered as f64 / w.expected as f64
        } else {
            0.0
        };
        let latency = Latency::of(&w.latency);
        let accepted_per_s = w.acked as f64 / secs;
        let kept_up = accepted_per_s >= 0.95 * offered
            && ratio >= 0.99
            && w.errors == 0
            && latency.count > 0
            && latency.p99 <= slo_ms;
        StepReport {
            rate_per_user: rate,
            senders,
            offered_msgs_per_s: offered,
            window_s: w.secs,
            sent: w.sent,
            accepted: w.acked,
            accepted_per_s,
            deliveries: w.delivered,
            deliveries_per_s: w.delivered as f64 / secs,
            expected_deliveries: w.expected,
            delivery_ratio: ratio,
            errors: w.errors,
            rate_limited: w.rate_limited,
            backpressured: w.backpressured,
            latency_ms: latency,
            ack_ms: Latency::of(&w.ack),
            worst_ms_by_tenth: w
                .worst_by_tenth
                .iter()
                .map(|&us| us as f64 / 1000.0)
                .collect(),
            kept_up,
            ..StepReport::default()
        }
    }

    /// Adds what the window cost in CPU: the server's over `server_cores`,
    /// the harness's over `harness_cores`; a harness share above
    /// `bound_share` marks the step `harness_bound`.
    pub fn add_cpu(
        &mut self,
        w: &CpuWindow,
        server_cores: usize,
        harness_cores: usize,
        bound_share: f64,
    ) {
        let secs = w.secs.max(1e-9);
        self.cpu_window_s = w.secs;
        self.cpu_window_deliveries = w.deliveries;
        self.server_cpu_s = w.server_cpu_s;
        self.server_cpu_s_by_pid = w.server_cpu_s_by_pid.clone();
        self.server_cpu_us_per_delivery = w
            .server_cpu_s
            .filter(|_| w.deliveries > 0)
            .map(|s| s * 1e6 / w.deliveries as f64);
        self.server_kernel_us_per_delivery = w
            .server_kernel_s
            .filter(|_| w.deliveries > 0)
            .map(|s| s * 1e6 / w.deliveries as f64);
        self.server_cpu_share = w
            .server_cpu_s
            .map(|s| s / (secs * server_cores.max(1) as f64));
        self.harness_cores = harness_cores.max(1);
        self.harness_cpu_s = w.harness_cpu_s;
        self.harness_cpu_share = w
            .harness_cpu_s
            .map(|s| s / (secs * self.harness_cores as f64));
        self.harness_bound = self.harness_cpu_share.is_some_and(|s| s > bound_share);
    }

    /// Adds the pushes taken in `secs` seconds.
    pub fn add_pushes(&mut self, pushes: u64, secs: f64) {
        self.pushes = Some(pushes);
        self.pushes_per_s = Some(pushes as f64 / secs.max(1e-9));
    }

    /// Kept up, and measured the server rather than the harness: a step
    /// that may be a peak.
    pub fn counts(&self) -> bool {
        self.kept_up && !self.harness_bound
    }
}
