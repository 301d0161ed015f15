//! What one run measured: the [`RunReport`] and the parts a scenario fills
//! in (connecting, memory, history pages, the reconnect storm), and the
//! steps a comparison reads from it.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use super::step::StepReport;
use crate::cli::RunArgs;
use crate::stats::Latency;

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
    /// Server CPU per page read in the window, in µs (with `--pid`).
    #[serde(default)]
    pub server_cpu_us_per_page: Option<f64>,
    /// The harness's share of its cores in the window.
    #[serde(default)]
    pub harness_cpu_share: Option<f64>,
    /// The harness used more than `--harness-bound-share` of its cores: the
    /// window may measure the harness, not the server, and is never a win.
    #[serde(default)]
    pub harness_bound: bool,
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
    /// Server CPU (ms) from the drop until the last client caught up, over
    /// the clients that did: what a reconnect and its catch-up cost the
    /// server, which a harness at its limit does not distort. The traffic of
    /// clients back early is in it too, as it is in the time.
    #[serde(default)]
    pub server_cpu_ms_per_client: Option<f64>,
    /// The harness's CPU over the same window, as a share of its cores.
    #[serde(default)]
    pub harness_cpu_share: Option<f64>,
    /// Over the harness-bound share: the seconds are the harness's limit,
    /// not the server's.
    #[serde(default)]
    pub harness_bound: bool,
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

fn embedded() -> String {
    "embedded".into()
}
