//! Results: one [`RunReport`] per run (a human table on stdout, JSON in a
//! file), and the [`Summary`] of a set of runs that sets ours against the
//! baselines as ratios and checks the project's targets.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::cli::RunArgs;
use crate::cpu::CpuWindow;
use crate::stats::{Latency, Window};

/// Everything one run measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunReport {
    /// Harness name and version.
    pub harness: String,
    /// Scenario name.
    pub scenario: String,
    /// Target name: chat, socketio or ceiling.
    pub target: String,
    /// Free text from `--label`.
    #[serde(default)]
    pub label: String,
    /// The chat node's storage backend (`--storage`).
    #[serde(default = "embedded")]
    pub storage: String,
    /// Node addresses.
    pub nodes: Vec<String>,
    /// The options of the run.
    pub params: serde_json::Value,
    /// Cores the harness ran on.
    pub cores: usize,
    /// Cores the server could use (for per-core figures).
    #[serde(default)]
    pub server_cores: usize,
    /// Server processes whose CPU time (and RSS) was read (`--pid`).
    #[serde(default)]
    pub server_pids: Vec<u32>,
    /// When it started, Unix milliseconds.
    pub started_unix_ms: u64,
    /// How long it took, seconds.
    pub wall_s: f64,
    /// Connecting the clients.
    pub connect: Option<ConnectReport>,
    /// Windows at the fixed rates of `--fixed-rates`, in order, measured
    /// before any ramp: server CPU per delivery at the same offered load
    /// for every target.
    #[serde(default)]
    pub fixed: Vec<StepReport>,
    /// Measured windows, in order (several when ramping).
    #[serde(default)]
    pub steps: Vec<StepReport>,
    /// The step with the most deliveries per second among those that kept up.
    pub peak: Option<StepReport>,
    /// A run at half the peak's rate.
    pub half_peak: Option<StepReport>,
    /// `idle`: the server's memory.
    pub memory: Option<MemoryReport>,
    /// `history`: pages.
    pub history: Option<HistoryReport>,
    /// `reconnect`: the storm.
    pub reconnect: Option<ReconnectReport>,
    /// Errors by code over the whole run.
    #[serde(default)]
    pub errors: BTreeMap<String, u64>,
    /// The first error, with details.
    pub first_error: Option<String>,
    /// Caveats.
    #[serde(default)]
    pub notes: Vec<String>,
}

/// Connecting the clients.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ConnectReport {
    /// Connections attempted.
    pub requested: usize,
    /// Connections established.
    pub established: usize,
    /// Clients that failed.
    pub failed: usize,
    /// Established per second.
    pub per_s: f64,
    /// Seconds it took.
    pub secs: f64,
    /// Time of one connect (TCP + upgrade [+ Socket.IO handshake]).
    pub connect_ms: Latency,
}

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

    /// Kept up, and measured the server rather than the harness: a step
    /// that may be a peak.
    pub fn counts(&self) -> bool {
        self.kept_up && !self.harness_bound
    }
}

/// `idle`: what holding the connections cost the server.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct MemoryReport {
    /// Server process.
    pub pid: u32,
    /// Connections held when measured.
    pub connections: usize,
    /// RSS before any connection, bytes.
    pub rss_before: u64,
    /// RSS with every connection open and settled, bytes.
    pub rss_after: u64,
    /// RSS at the end of the hold, bytes.
    pub rss_end: u64,
    /// (after − before) / connections, bytes.
    pub bytes_per_connection: f64,
    /// The same in KiB.
    pub kib_per_connection: f64,
    /// Connections that dropped during the hold.
    pub dropped: u64,
}

/// `history`: pages read.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct HistoryReport {
    /// Readers (one request in flight each).
    pub readers: usize,
    /// Messages stored per conversation before measuring.
    pub prefill: usize,
    /// Messages per page asked.
    pub page_size: u32,
    /// Window, seconds.
    pub window_s: f64,
    /// Pages read.
    pub pages: u64,
    /// Pages per second.
    pub pages_per_s: f64,
    /// Messages per second in those pages.
    pub messages_per_s: f64,
    /// Errors.
    pub errors: u64,
    /// Request to page.
    pub latency_ms: Latency,
}

/// `reconnect`: every client drops at once and comes back.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ReconnectReport {
    /// Clients dropped.
    pub clients: usize,
    /// Clients that reconnected and caught up.
    pub caught_up: usize,
    /// Clients that failed to.
    pub failed: usize,
    /// From the drop until the last client caught up, seconds.
    pub all_caught_up_s: f64,
    /// Per client: drop to caught up.
    pub catch_up_ms: Latency,
    /// Messages fetched with `history after` while catching up.
    pub recovered_messages: u64,
}

impl RunReport {
    /// An empty report for `args`.
    pub fn new(args: &RunArgs, nodes: &[SocketAddr]) -> RunReport {
        RunReport {
            harness: format!("chat-bench {}", env!("CARGO_PKG_VERSION")),
            scenario: args.scenario.name().into(),
            target: args.target.name().into(),
            label: args.label.clone().unwrap_or_default(),
            storage: args.storage.clone(),
            nodes: nodes.iter().map(|n| n.to_string()).collect(),
            params: serde_json::to_value(args).unwrap_or_default(),
            cores: crate::sys::cores(),
            server_cores: args.server_cores.unwrap_or_else(crate::sys::machine_cores),
            server_pids: args.pid.clone(),
            started_unix_ms: 0,
            wall_s: 0.0,
            connect: None,
            fixed: Vec::new(),
            steps: Vec::new(),
            peak: None,
            half_peak: None,
            memory: None,
            history: None,
            reconnect: None,
            errors: BTreeMap::new(),
            first_error: None,
            notes: Vec::new(),
        }
    }

    /// Writes the JSON file.
    pub fn write_json(&self, path: &Path) -> Result<()> {
        write_json(path, self)
    }

    /// The human table.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let label = if self.label.is_empty() {
            String::new()
        } else {
            format!(" ({})", self.label)
        };
        let _ = writeln!(
            s,
            "== {} against {}{label} on {} [server on {} cores, harness on {}]",
            self.scenario,
            self.target,
            self.nodes.join(","),
            self.server_cores,
            self.cores
        );
        if let Some(c) = &self.connect {
            let _ = writeln!(
                s,
                "connections  {}/{} established, {} failed, {:.0}/s; connect p50 {:.1} ms p99 {:.1} ms",
                c.established, c.requested, c.failed, c.per_s, c.connect_ms.p50, c.connect_ms.p99
            );
        }
        if !self.steps.is_empty() || !self.fixed.is_empty() || self.half_peak.is_some() {
            let _ = writeln!(
                s,
                "{:>9} {:>10} {:>10} {:>12} {:>7} {:>8} {:>8} {:>8} {:>8} {:>8} {:>6} {:>5} {:>9} {:>7} {:>7}",
                "rate/user",
                "offered/s",
                "accepted/s",
                "deliveries/s",
                "deliv%",
                "p50 ms",
                "p99 ms",
                "p999 ms",
                "max ms",
                "ack p99",
                "errors",
                "ok",
                "srv us/dl",
                "srv cpu",
                "harness"
            );
            let rows = self
                .fixed
                .iter()
                .map(|st| ("fixed", st))
                .chain(self.steps.iter().map(|st| ("", st)))
                .chain(self.half_peak.iter().map(|h| ("half-peak", h)));
            let pct = |v: Option<f64>| {
                v.map(|v| format!("{:.0}%", v * 100.0))
                    .unwrap_or_else(|| "-".into())
            };
            for (tag, st) in rows {
                let flag = if st.harness_bound {
                    " HARNESS-BOUND (not a peak)"
                } else {
                    ""
                };
                let _ = writeln!(
                    s,
                    "{:>9.2} {:>10.0} {:>10.0} {:>12.0} {:>6.1}% {:>8.2} {:>8.2} {:>8.2} {:>8.1} {:>8.2} {:>6} {:>5} {:>9} {:>7} {:>7} {tag}{flag}",
                    st.rate_per_user,
                    st.offered_msgs_per_s,
                    st.accepted_per_s,
                    st.deliveries_per_s,
                    st.delivery_ratio * 100.0,
                    st.latency_ms.p50,
                    st.latency_ms.p99,
                    st.latency_ms.p999,
                    st.latency_ms.max,
                    st.ack_ms.p99,
                    st.errors,
                    if st.kept_up { "yes" } else { "NO" },
                    st.server_cpu_us_per_delivery
                        .map(|v| format!("{v:.2}"))
                        .unwrap_or_else(|| "-".into()),
                    pct(st.server_cpu_share),
                    pct(st.harness_cpu_share),
                );
            }
            if let Some(p) = &self.peak {
                let _ = writeln!(
                    s,
                    "peak         {:.0} deliveries/s, {:.0} accepted/s at p99 {:.2} ms",
                    p.deliveries_per_s, p.accepted_per_s, p.latency_ms.p99
                );
            }
            if self
                .fixed
                .iter()
                .chain(&self.steps)
                .any(|st| st.server_cpu_s.is_some())
            {
                let _ = writeln!(
                    s,
                    "cpu          srv us/dl: server CPU (pids {:?}) per delivery received in the window; \
                     srv cpu: of {} server core(s); harness: of the harness's core(s)",
                    self.server_pids, self.server_cores
                );
            }
        }
        if let Some(m) = &self.memory {
            let _ = writeln!(
                s,
                "memory       RSS {:.1} MiB -> {:.1} MiB for {} connections: {:.2} KiB per connection (end of hold {:.1} MiB, {} dropped)",
                m.rss_before as f64 / 1048576.0,
                m.rss_after as f64 / 1048576.0,
                m.connections,
                m.kib_per_connection,
                m.rss_end as f64 / 1048576.0,
                m.dropped
            );
        }
        if let Some(h) = &self.history {
            let _ = writeln!(
                s,
                "history      {:.0} pages/s ({:.0} messages/s) of {} by {} readers; p50 {:.2} ms p99 {:.2} ms p999 {:.2} ms; {} errors",
                h.pages_per_s,
                h.messages_per_s,
                h.page_size,
                h.readers,
                h.latency_ms.p50,
                h.latency_ms.p99,
                h.latency_ms.p999,
                h.errors
            );
        }
        if let Some(r) = &self.reconnect {
            let _ = writeln!(
                s,
                "reconnect    {}/{} caught up in {:.2} s ({} failed); per client p50 {:.0} ms p99 {:.0} ms; {} messages recovered with history",
                r.caught_up,
                r.clients,
                r.all_caught_up_s,
                r.failed,
                r.catch_up_ms.p50,
                r.catch_up_ms.p99,
                r.recovered_messages
            );
        }
        if !self.errors.is_empty() {
            let _ = writeln!(s, "errors       {:?}", self.errors);
        }
        if let Some(e) = &self.first_error {
            let _ = writeln!(s, "first error  {e}");
        }
        for n in &self.notes {
            let _ = writeln!(s, "note         {n}");
        }
        s
    }

    /// The step a comparison uses: the peak, else the only/last step.
    pub fn headline(&self) -> Option<&StepReport> {
        self.peak.as_ref().or(self.steps.last())
    }

    /// The fixed-rate window at `rate` per user, if one was measured.
    pub fn fixed_at(&self, rate: f64) -> Option<&StepReport> {
        self.fixed
            .iter()
            .rev()
            .find(|s| (s.rate_per_user - rate).abs() <= 1e-9 * rate.abs().max(1.0))
    }
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let text = serde_json::to_string_pretty(value)?;
    std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))
}

/// The targets a summary compares, ours first.
pub const TARGETS: [&str; 4] = ["chat", "socketio", "ceiling", "centrifugo"];

/// The fixed rate (msgs/s per user) whose server CPU per delivery is
/// compared when every target kept up there.
pub const COMPARED_FIXED_RATE: f64 = 5.27;

/// One line of the comparison: a number of ours, the baselines' and ratios.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Comparison {
    /// What is compared.
    pub metric: String,
    /// Ours.
    pub chat: Option<f64>,
    /// Socket.IO baseline.
    pub socketio: Option<f64>,
    /// Ceiling.
    pub ceiling: Option<f64>,
    /// Centrifugo baseline.
    #[serde(default)]
    pub centrifugo: Option<f64>,
    /// chat / socketio.
    pub vs_socketio: Option<f64>,
    /// chat / ceiling.
    pub vs_ceiling: Option<f64>,
    /// chat / centrifugo.
    #[serde(default)]
    pub vs_centrifugo: Option<f64>,
    /// How the values were taken, when the metric's name does not say.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl Comparison {
    /// A line with the values of [`TARGETS`], in order, and their ratios.
    pub fn of(metric: String, v: [Option<f64>; 4]) -> Comparison {
        let [c, s, x, f] = v;
        Comparison {
            metric,
            chat: c,
            socketio: s,
            ceiling: x,
            centrifugo: f,
            vs_socketio: ratio(c, s),
            vs_ceiling: ratio(c, x),
            vs_centrifugo: ratio(c, f),
            note: None,
        }
    }

    fn noted(mut self, note: String) -> Comparison {
        self.note = Some(note);
        self
    }
}

/// A target of the issue and whether this set of runs meets it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Check {
    /// The target.
    pub target: String,
    /// What was measured.
    pub measured: String,
    /// Met, missed, or not measured (None).
    pub met: Option<bool>,
}

/// A set of runs, compared.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Summary {
    /// When the summary was made, Unix milliseconds.
    pub generated_unix_ms: u64,
    /// Cores of the machine.
    pub cores: usize,
    /// Ours against the baselines.
    pub comparisons: Vec<Comparison>,
    /// The targets.
    pub checks: Vec<Check>,
    /// Caveats of the comparison (e.g. a peak that is only a lower bound).
    #[serde(default)]
    pub notes: Vec<String>,
    /// Every run, in full.
    pub runs: Vec<RunReport>,
}

fn embedded() -> String {
    "embedded".into()
}

fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    }
}

fn same_rate(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(1.0)
}

/// The server CPU per delivery of the `rooms` runs at one fixed rate for
/// every target, and the targets on it. `rooms[i]` is the rooms
/// run of `TARGETS[i]`; `floor` is the rooms run of the ceiling keeping
/// history (`ceiling-server --journal`, storage `journal`), if one ran.
fn cpu_per_delivery(
    rooms: [Option<&RunReport>; 4],
    floor: Option<&RunReport>,
    comparisons: &mut Vec<Comparison>,
    checks: &mut Vec<Check>,
    notes: &mut Vec<String>,
) {
    let present: Vec<(usize, &RunReport)> = rooms
        .iter()
        .enumerate()
        .filter_map(|(i, r)| r.filter(|r| !r.fixed.is_empty()).map(|r| (i, r)))
        .collect();
    let Some(&(_, first)) = present.first() else {
        return;
    };
    // Rates every target with fixed windows measured.
    let mut common: Vec<f64> = first
        .fixed
        .iter()
        .map(|s| s.rate_per_user)
        .filter(|&rate| present.iter().all(|(_, r)| r.fixed_at(rate).is_some()))
        .collect();
    common.sort_by(|a, b| b.total_cmp(a));
    common.dedup_by(|a, b| same_rate(*a, *b));
    let all_ok = |rate: f64| {
        present.iter().all(|(_, r)| {
            r.fixed_at(rate)
                .is_some_and(|s| s.counts() && s.server_cpu_us_per_delivery.is_some())
        })
    };
    let preferred = common
        .iter()
        .copied()
        .find(|&r| same_rate(r, COMPARED_FIXED_RATE) && all_ok(r));
    let chosen = preferred
        .or_else(|| common.iter().copied().find(|&r| all_ok(r)))
        .map(|r| (r, true))
        .or_else(|| common.last().map(|&r| (r, false)));
    let Some((rate, everyone_ok)) = chosen else {
        notes.push(
            "rooms: the targets' fixed rates have none in common: server CPU per delivery \
             not compared"
                .into(),
        );
        return;
    };
    let step = |i: usize| rooms[i].and_then(|r| r.fixed_at(rate));
    let values = |f: &dyn Fn(&StepReport) -> Option<f64>| -> [Option<f64>; 4] {
        [0, 1, 2, 3].map(|i| step(i).and_then(f))
    };
    let offered = step(present[0].0)
        .map(|s| s.offered_msgs_per_s)
        .unwrap_or(0.0);
    let fanout = rooms
        .iter()
        .flatten()
        .find_map(|r| r.fixed_at(rate))
        .filter(|s| s.accepted > 0)
        .map(|s| s.expected_deliveries as f64 / s.accepted as f64);
    let why = if everyone_ok {
        if same_rate(rate, COMPARED_FIXED_RATE) {
            "the standard compared rate; every target kept up there".to_string()
        } else {
            format!(
                "the highest fixed rate at which every target kept up \
                 ({COMPARED_FIXED_RATE} was not measured or not kept up by all)"
            )
        }
    } else {
        let missed: Vec<&str> = present
            .iter()
            .filter(|(_, r)| !r.fixed_at(rate).is_some_and(StepReport::counts))
            .map(|(i, _)| TARGETS[*i])
            .collect();
        format!(
            "no fixed rate was kept up by every target: the lowest, where {} did not keep up \
             or were harness-bound",
            missed.join(", ")
        )
    };
    let note = format!(
        "at the fixed rate of {rate} msgs/s per user ({offered:.0} msgs/s offered{}): {why}; \
         server CPU is utime+stime of every server process (/proc) over the window, divided \
         by the deliveries received in it; lower is better",
        fanout
            .map(|f| format!(", about {:.0} deliveries/s", offered * f))
            .unwrap_or_default()
    );
    let cpu = values(&|s| s.server_cpu_us_per_delivery);
    comparisons
        .push(Comparison::of("rooms: server CPU us per delivery".into(), cpu).noted(note.clone()));
    comparisons.push(
        Comparison::of(
            "rooms: of which in the kernel, us per delivery".into(),
            values(&|s| s.server_kernel_us_per_delivery),
        )
        .noted(format!(
            "stime over the same window at {rate} msgs/s per user: socket writes (and the \
             loopback delivery they run), fsyncs, wake-ups"
        )),
    );
    comparisons.push(
        Comparison::of(
            "rooms: server CPU share at that fixed rate".into(),
            values(&|s| s.server_cpu_share),
        )
        .noted(format!(
            "of the server's cores, at {rate} msgs/s per user: near 1.0 is saturation"
        )),
    );
    comparisons.push(Comparison::of(
        format!("rooms: p99 ms at {rate} msgs/s/user (lower is better)"),
        values(&|s| Some(s.latency_ms.p99)),
    ));
    if !everyone_ok {
        notes.push(format!("rooms: server CPU per delivery {note}"));
    }
    let line = Comparison::of(String::new(), cpu);
    // The least a server that fsyncs its history spends here: the ceiling
    // doing just that. Shown in the ceiling's column, chat's ratio to it
    // beside.
    let floor_us = floor
        .and_then(|r| r.fixed_at(rate))
        .filter(|s| s.counts())
        .and_then(|s| s.server_cpu_us_per_delivery);
    if let Some(floor_us) = floor_us {
        comparisons.push(
            Comparison::of(
                "rooms: server CPU us per delivery vs the ceiling fsyncing its history".into(),
                [line.chat, None, Some(floor_us), None],
            )
            .noted(format!(
                "the ceiling column is ceiling-server --journal: each message appended to a \
                 file and fsynced (group commit) before its fan-out and ok, nothing else; at \
                 {rate} msgs/s per user, as above"
            )),
        );
        if let Some(bare) = line.ceiling.filter(|&c| c > 0.0) {
            notes.push(format!(
                "rooms: fsyncing history alone takes a bare fan-out from {bare:.2} to \
                 {floor_us:.2} us per delivery ({:.2}x) at {rate} msgs/s per user: a CPU \
                 target under that ratio to the bare ceiling is out of reach for any server \
                 that fsyncs each message here",
                floor_us / bare
            ));
        }
    }
    let bound = |what: &str, limit: f64, vs: Option<f64>, other: Option<f64>| Check {
        target: format!("rooms: server CPU per delivery <= {what}"),
        measured: match (line.chat, other, vs) {
            (Some(c), Some(o), Some(v)) => {
                format!("{c:.2} us vs {o:.2} us: {v:.2}x at {rate} msgs/s per user")
            }
            _ => "not measured".into(),
        },
        met: vs.map(|v| v <= limit),
    };
    checks.push(bound(
        "1.25x the ceiling's",
        1.25,
        line.vs_ceiling,
        line.ceiling,
    ));
    checks.push(bound(
        "half of Centrifugo's",
        0.5,
        line.vs_centrifugo,
        line.centrifugo,
    ));
    checks.push(bound(
        "a fifth of Socket.IO's",
        0.2,
        line.vs_socketio,
        line.socketio,
    ));
}

impl Summary {
    /// Compares `runs` (any order; the last run of a scenario and target wins).
    pub fn of(runs: Vec<RunReport>) -> Summary {
        // The baseline comparisons are of chat on its default storage and
        // the bare ceiling; chat on ScyllaDB (compared below) and the
        // ceiling keeping a journal are runs of their own, told apart by
        // their storage.
        let on = |scenario: &str, target: &str, storage: &str| {
            runs.iter().rev().find(|r| {
                r.scenario == scenario
                    && r.target == target
                    && (!matches!(target, "chat" | "ceiling") || r.storage == storage)
            })
        };
        let find = |scenario: &str, target: &str| on(scenario, target, "embedded");
        let all = |scenario: &str| TARGETS.map(|t| find(scenario, t));
        let mut comparisons = Vec::new();
        let mut checks = Vec::new();
        let mut notes = Vec::new();
        for r in &runs {
            let ramped = r.steps.len() > 1 || r.half_peak.is_some();
            let last_bound = r.steps.last().is_some_and(|s| s.harness_bound);
            if ramped && r.steps.last().is_some_and(|s| s.kept_up) && !last_bound {
                notes.push(format!(
                    "{} against {}: every ramp step kept up, so its peak is a lower bound \
                     (ramp further for a ratio that means something)",
                    r.scenario, r.target
                ));
            }
            if r.peak.is_none() && !r.steps.is_empty() {
                notes.push(format!(
                    "{} against {}: no step kept up; its last step is shown",
                    r.scenario, r.target
                ));
            }
            let bound = r
                .fixed
                .iter()
                .chain(&r.steps)
                .chain(&r.half_peak)
                .filter(|s| s.harness_bound)
                .count();
            if bound > 0 {
                notes.push(format!(
                    "{} against {}: {bound} window(s) harness-bound (the harness used more than \
                     its share of its cores): not peaks{}",
                    r.scenario,
                    r.target,
                    if last_bound {
                        "; the ramp ended there, so the peak is a lower bound"
                    } else {
                        ""
                    }
                ));
            }
        }
        // Server CPU per delivery at a fixed rate, shown after the rooms lines.
        let (mut cpu_lines, mut cpu_checks) = (Vec::new(), Vec::new());
        cpu_per_delivery(
            all("rooms"),
            on("rooms", "ceiling", "journal"),
            &mut cpu_lines,
            &mut cpu_checks,
            &mut notes,
        );
        for scenario in ["rooms", "direct", "burst"] {
            let heads = all(scenario).map(|r| r.and_then(|r| r.headline()));
            if heads.iter().all(Option::is_none) {
                continue;
            }
            let line = |metric: &str, f: &dyn Fn(&StepReport) -> f64| {
                Comparison::of(format!("{scenario}: {metric}"), heads.map(|h| h.map(f)))
            };
            comparisons.push(line("peak deliveries/s", &|st| st.deliveries_per_s));
            comparisons.push(line("accepted msgs/s at peak", &|st| st.accepted_per_s));
            comparisons.push(line("p50 ms at peak (lower is better)", &|st| {
                st.latency_ms.p50
            }));
            comparisons.push(line("p99 ms at peak (lower is better)", &|st| {
                st.latency_ms.p99
            }));
            comparisons.push(line("p999 ms at peak (lower is better)", &|st| {
                st.latency_ms.p999
            }));
            if scenario == "rooms" {
                let [c, s, x, _] = heads;
                let (cd, sd, xd) = (
                    c.map(|s| s.deliveries_per_s),
                    s.map(|s| s.deliveries_per_s),
                    x.map(|s| s.deliveries_per_s),
                );
                let (cp, sp) = (c.map(|s| s.latency_ms.p99), s.map(|s| s.latency_ms.p99));
                let vs = ratio(cd, sd);
                checks.push(Check {
                    target: "rooms, one node: >= 5x Socket.IO's deliveries/s at equal or lower p99"
                        .into(),
                    measured: match (vs, cp, sp) {
                        (Some(v), Some(cp), Some(sp)) => {
                            format!("{v:.2}x, p99 {cp:.2} ms vs {sp:.2} ms")
                        }
                        _ => "not measured".into(),
                    },
                    met: vs.zip(cp.zip(sp)).map(|(v, (cp, sp))| v >= 5.0 && cp <= sp),
                });
                let vc = ratio(cd, xd);
                checks.push(Check {
                    target: "rooms, one node: >= 60% of the ceiling's deliveries/s".into(),
                    measured: vc
                        .map(|v| format!("{:.0}%", v * 100.0))
                        .unwrap_or_else(|| "not measured".into()),
                    met: vc.map(|v| v >= 0.6),
                });
                let half = find("rooms", "chat").and_then(|r| r.half_peak.as_ref());
                checks.push(Check {
                    target: "rooms: p99 end-to-end < 10 ms at half the node's peak rate".into(),
                    measured: half
                        .map(|h| {
                            format!(
                                "p99 {:.2} ms at {:.0} deliveries/s",
                                h.latency_ms.p99, h.deliveries_per_s
                            )
                        })
                        .unwrap_or_else(|| "not measured".into()),
                    met: half.map(|h| h.latency_ms.p99 < 10.0 && h.kept_up),
                });
                let cores = find("rooms", "chat")
                    .map(|r| r.server_cores)
                    .unwrap_or(1)
                    .max(1);
                checks.push(Check {
                    target: "stretch: 125k deliveries/s per CPU core with durable history".into(),
                    measured: cd
                        .map(|d| {
                            format!(
                                "{:.0} per server core ({cores} server cores)",
                                d / cores as f64
                            )
                        })
                        .unwrap_or_else(|| "not measured".into()),
                    met: cd.map(|d| d / cores as f64 >= 125_000.0),
                });
            }
            if scenario == "rooms" {
                comparisons.append(&mut cpu_lines);
                checks.append(&mut cpu_checks);
            }
        }
        // Rooms runs with fixed windows only (no ramp): after the others.
        comparisons.append(&mut cpu_lines);
        checks.append(&mut cpu_checks);
        let idle_kib = all("idle").map(|r| {
            r.and_then(|r| r.memory.as_ref())
                .map(|m| m.kib_per_connection)
        });
        if idle_kib.iter().any(Option::is_some) {
            comparisons.push(Comparison::of(
                "idle: KiB per connection (lower is better)".into(),
                idle_kib,
            ));
        }
        if let Some(r) = find("idle", "chat") {
            let m = r.memory.as_ref();
            let held = m.map(|m| m.connections).unwrap_or(0);
            checks.push(Check {
                target: "idle: <= 16 KiB of node memory per idle connection".into(),
                measured: m
                    .map(|m| format!("{:.2} KiB at {} connections", m.kib_per_connection, held))
                    .unwrap_or_else(|| "not measured (no --pid)".into()),
                met: m.map(|m| m.kib_per_connection <= 16.0),
            });
            checks.push(Check {
                target: "stretch: <= 8 KiB per idle connection".into(),
                measured: m
                    .map(|m| format!("{:.2} KiB", m.kib_per_connection))
                    .unwrap_or_else(|| "not measured".into()),
                met: m.map(|m| m.kib_per_connection <= 8.0),
            });
            checks.push(Check {
                target: "idle: 50,000 connections held on one node".into(),
                measured: format!("{held} held in this run"),
                met: if held >= 50_000 { Some(true) } else { None },
            });
        }
        let only_chat = |scenario: &str, metric: &str, v: Option<f64>| {
            Comparison::of(format!("{scenario}: {metric}"), [v, None, None, None])
        };
        let pages = all("history").map(|r| r.and_then(|r| r.history.as_ref()));
        if pages.iter().any(Option::is_some) {
            comparisons.push(Comparison::of(
                "history: pages/s".into(),
                pages.map(|h| h.map(|h| h.pages_per_s)),
            ));
            comparisons.push(Comparison::of(
                "history: p99 ms (lower is better)".into(),
                pages.map(|h| h.map(|h| h.latency_ms.p99)),
            ));
        }
        if let Some(scylla) = on("rooms", "chat", "scylla") {
            let line =
                |metric: &str, v: Option<f64>| only_chat("rooms, chat on ScyllaDB", metric, v);
            comparisons.push(line(
                "peak deliveries/s",
                scylla.headline().map(|s| s.deliveries_per_s),
            ));
            comparisons.push(line(
                "send-to-ack p99 ms at half peak (lower is better)",
                scylla.half_peak.as_ref().map(|h| h.ack_ms.p99),
            ));
            comparisons.push(line(
                "p99 ms at half peak (lower is better)",
                scylla.half_peak.as_ref().map(|h| h.latency_ms.p99),
            ));
            if let Some(h) = find("rooms", "chat").and_then(|r| r.half_peak.as_ref()) {
                comparisons.push(only_chat(
                    "rooms, chat on the embedded store",
                    "send-to-ack p99 ms at half peak (lower is better)",
                    Some(h.ack_ms.p99),
                ));
            }
            let half = scylla.half_peak.as_ref();
            checks.push(Check {
                target: "ScyllaDB: write (send-to-ack) p99 < 5 ms at half the node's peak \
                         (Discord reports 5 ms)"
                    .into(),
                measured: half
                    .map(|h| {
                        format!(
                            "ack p99 {:.2} ms at {:.0} msgs/s",
                            h.ack_ms.p99, h.accepted_per_s
                        )
                    })
                    .unwrap_or_else(|| "not measured".into()),
                met: half.map(|h| h.ack_ms.p99 < 5.0 && h.kept_up),
            });
        }
        if let Some(h) = on("history", "chat", "scylla").and_then(|r| r.history.as_ref()) {
            comparisons.push(only_chat(
                "history, chat on ScyllaDB",
                "pages/s",
                Some(h.pages_per_s),
            ));
            comparisons.push(only_chat(
                "history, chat on ScyllaDB",
                "p99 ms (lower is better)",
                Some(h.latency_ms.p99),
            ));
            checks.push(Check {
                target: "ScyllaDB: history page p99 < 15 ms (Discord reports 15 ms)".into(),
                measured: format!(
                    "p99 {:.2} ms at {:.0} pages/s",
                    h.latency_ms.p99, h.pages_per_s
                ),
                met: Some(h.latency_ms.p99 < 15.0),
            });
        }
        let storms = all("reconnect").map(|r| r.and_then(|r| r.reconnect.as_ref()));
        if storms.iter().any(Option::is_some) {
            comparisons.push(Comparison::of(
                "reconnect: s until all caught up (lower is better)".into(),
                storms.map(|s| s.map(|s| s.all_caught_up_s)),
            ));
        }
        if runs.iter().any(|r| r.target == "centrifugo") {
            notes.push(CENTRIFUGO_FAIRNESS.into());
        }
        Summary {
            generated_unix_ms: chat_protocol::now_ms(),
            cores: crate::sys::machine_cores(),
            comparisons,
            checks,
            notes,
            runs,
        }
    }

    /// Writes the JSON file.
    pub fn write_json(&self, path: &Path) -> Result<()> {
        write_json(path, self)
    }

    /// The human table.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let num = |v: Option<f64>| match v {
            Some(v) if v.abs() >= 100.0 => format!("{v:.0}"),
            Some(v) => format!("{v:.2}"),
            None => "-".into(),
        };
        let x = |v: Option<f64>| v.map(|v| format!("{v:.2}x")).unwrap_or_else(|| "-".into());
        let _ = writeln!(
            s,
            "== chat vs baselines (one {}-core machine runs the harness and the servers)",
            self.cores
        );
        let _ = writeln!(
            s,
            "{:<52} {:>10} {:>10} {:>10} {:>10} {:>8} {:>8} {:>8}",
            "metric", "chat", "socketio", "ceiling", "centrifugo", "vs sio", "vs ceil", "vs cf"
        );
        for c in &self.comparisons {
            let _ = writeln!(
                s,
                "{:<52} {:>10} {:>10} {:>10} {:>10} {:>8} {:>8} {:>8}",
                c.metric,
                num(c.chat),
                num(c.socketio),
                num(c.ceiling),
                num(c.centrifugo),
                x(c.vs_socketio),
                x(c.vs_ceiling),
                x(c.vs_centrifugo)
            );
            if let Some(n) = &c.note {
                let _ = writeln!(s, "    ({n})");
            }
        }
        let _ = writeln!(s, "\n== targets");
        for c in &self.checks {
            let verdict = match c.met {
                Some(true) => "MET   ",
                Some(false) => "MISSED",
                None => "n/a   ",
            };
            let _ = writeln!(s, "{verdict} {:<72} {}", c.target, c.measured);
        }
        for n in &self.notes {
            let _ = writeln!(s, "note: {n}");
        }
        s
    }
}

/// What to read beside Centrifugo's numbers.
pub const CENTRIFUGO_FAIRNESS: &str =
    "centrifugo: Centrifugo v6 (free edition), JSON protocol v2, memory engine: its history \
     (the last history_size publications per channel) lives in RAM only and nothing is \
     fsynced, while chat-node fsyncs every message before its ok; see the run's label for \
     the version and whether the memory tuning (read_buffer_size, use_write_buffer_pool) \
     was on";

/// Reads run reports written with `--json`.
pub fn read_runs(paths: &[impl AsRef<Path>]) -> Result<Vec<RunReport>> {
    paths
        .iter()
        .map(|p| {
            let p = p.as_ref();
            let text =
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            serde_json::from_str(&text)
                .with_context(|| format!("{} is not a run report", p.display()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn rooms_run(target: &str, fixed: &[(f64, bool, f64)]) -> RunReport {
        let args = RunArgs::try_parse_from(["chat-bench"]).unwrap();
        let mut r = RunReport::new(&args, &[]);
        r.target = target.into();
        r.fixed = fixed
            .iter()
            .map(|&(rate, kept_up, us)| StepReport {
                rate_per_user: rate,
                senders: 1000,
                offered_msgs_per_s: rate * 1000.0,
                accepted: 100,
                expected_deliveries: 900,
                kept_up,
                server_cpu_s: Some(1.0),
                server_cpu_us_per_delivery: Some(us),
                server_cpu_share: Some(0.5),
                ..StepReport::default()
            })
            .collect();
        r
    }

    fn cpu_line(s: &Summary) -> &Comparison {
        s.comparisons
            .iter()
            .find(|c| c.metric == "rooms: server CPU us per delivery")
            .expect("the CPU line")
    }

    #[test]
    fn compares_cpu_per_delivery_at_the_standard_rate() {
        let rates = |us: f64| {
            [
                (1.0, true, us * 2.0),
                (2.5, true, us * 1.5),
                (5.27, true, us),
            ]
        };
        let s = Summary::of(vec![
            rooms_run("chat", &rates(10.0)),
            rooms_run("socketio", &rates(60.0)),
            rooms_run("ceiling", &rates(8.0)),
            rooms_run("centrifugo", &rates(25.0)),
        ]);
        let c = cpu_line(&s);
        assert_eq!(c.chat, Some(10.0));
        assert_eq!(c.centrifugo, Some(25.0));
        assert_eq!(c.vs_ceiling, Some(1.25));
        assert!(c.note.as_deref().unwrap().contains("5.27"));
        let met: Vec<Option<bool>> = s
            .checks
            .iter()
            .filter(|c| c.target.starts_with("rooms: server CPU per delivery"))
            .map(|c| c.met)
            .collect();
        // <= 1.25x the ceiling (1.25: met), <= half of Centrifugo's (0.4:
        // met), <= a fifth of Socket.IO's (0.167: met).
        assert_eq!(met, vec![Some(true), Some(true), Some(true)]);
        assert!(s.table().contains("centrifugo"));
    }

    #[test]
    fn sets_chat_against_the_ceiling_fsyncing_its_history() {
        let mut floor = rooms_run("ceiling", &[(5.27, true, 12.0)]);
        floor.storage = "journal".into();
        let s = Summary::of(vec![
            rooms_run("chat", &[(5.27, true, 18.0)]),
            rooms_run("ceiling", &[(5.27, true, 8.0)]),
            // Last, so a summary that took the last ceiling run for the bare
            // one would compare against it.
            floor,
        ]);
        assert_eq!(cpu_line(&s).ceiling, Some(8.0), "the bare ceiling");
        let f = s
            .comparisons
            .iter()
            .find(|c| c.metric.contains("ceiling fsyncing its history"))
            .expect("the floor line");
        assert_eq!(
            (f.chat, f.ceiling, f.vs_ceiling),
            (Some(18.0), Some(12.0), Some(1.5))
        );
        assert!(
            s.notes.iter().any(|n| n.contains("(1.50x)")),
            "{:?}",
            s.notes
        );
    }

    #[test]
    fn falls_back_to_the_highest_rate_every_target_kept_up() {
        let s = Summary::of(vec![
            rooms_run(
                "chat",
                &[(1.0, true, 20.0), (2.5, true, 15.0), (5.27, false, 9.0)],
            ),
            rooms_run(
                "socketio",
                &[(1.0, true, 90.0), (2.5, true, 70.0), (5.27, true, 60.0)],
            ),
        ]);
        let c = cpu_line(&s);
        assert_eq!((c.chat, c.socketio), (Some(15.0), Some(70.0)));
        assert!(c.note.as_deref().unwrap().contains("2.5 msgs/s"));
        assert_eq!(c.ceiling, None);
        let ceiling = s
            .checks
            .iter()
            .find(|c| c.target.contains("ceiling's") && c.target.contains("CPU"))
            .unwrap();
        assert_eq!(ceiling.met, None, "not measured");
    }

    #[test]
    fn a_harness_bound_window_is_never_compared_or_a_peak() {
        let mut chat = rooms_run("chat", &[(1.0, true, 20.0), (5.27, true, 9.0)]);
        chat.fixed[1].harness_bound = true;
        assert!(!chat.fixed[1].counts());
        let s = Summary::of(vec![
            chat,
            rooms_run("ceiling", &[(1.0, true, 10.0), (5.27, true, 5.0)]),
        ]);
        assert_eq!(cpu_line(&s).chat, Some(20.0));
        assert!(s.notes.iter().any(|n| n.contains("harness-bound")));
    }

    #[test]
    fn add_cpu_marks_a_busy_harness() {
        let mut st = StepReport::default();
        let w = CpuWindow {
            secs: 10.0,
            server_cpu_s: Some(4.0),
            server_cpu_s_by_pid: vec![4.0],
            server_kernel_s: Some(1.0),
            harness_cpu_s: Some(9.0),
            deliveries: 400_000,
        };
        st.add_cpu(&w, 1, 1, 0.85);
        assert_eq!(st.server_cpu_us_per_delivery, Some(10.0));
        assert_eq!(st.server_kernel_us_per_delivery, Some(2.5));
        assert_eq!(st.server_cpu_share, Some(0.4));
        assert_eq!(st.harness_cpu_share, Some(0.9));
        assert!(st.harness_bound);
        st.add_cpu(&w, 1, 2, 0.85);
        assert!(!st.harness_bound, "9 s of 2 cores over 10 s is 45%");
    }
}
