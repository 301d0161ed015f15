//! Command-line options of a run, usable from code too
//! (`RunArgs::try_parse_from`), which is how the smoke test drives the
//! harness.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Parser, ValueEnum};
use serde::{Deserialize, Serialize};

/// Which kind of server the clients talk to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    /// chat-node: protocol v1 over `/v1/ws`, JWT auth.
    Chat,
    /// Socket.IO v4 (Engine.IO v4 over WebSocket), e.g. bench/baselines/socketio.
    Socketio,
    /// `ceiling-server`: protocol v1's wire format, no auth, no storage.
    Ceiling,
    /// chat-node through its Socket.IO endpoint (`/socket.io/`, Engine.IO v4
    /// over WebSocket): the same frames as `chat`, as Socket.IO events and
    /// acknowledgements, to weigh the Socket.IO path against the native one.
    #[value(name = "chat-socketio")]
    #[serde(rename = "chat-socketio")]
    ChatSocketio,
    /// Centrifugo v6: JSON protocol v2 over `/connection/websocket`, a
    /// channel per conversation (`chat:<room>`), HS256 tokens from
    /// `--jwt-secret` (scripts/centrifugo.sh writes its configuration).
    Centrifugo,
}

impl Target {
    /// chat-node, by either of its client paths.
    pub fn is_chat(self) -> bool {
        matches!(self, Target::Chat | Target::ChatSocketio)
    }

    /// The name used in reports.
    pub fn name(self) -> &'static str {
        match self {
            Target::Chat => "chat",
            Target::ChatSocketio => "chat-socketio",
            Target::Socketio => "socketio",
            Target::Ceiling => "ceiling",
            Target::Centrifugo => "centrifugo",
        }
    }
}

/// What load to apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScenarioKind {
    /// Hold `--connections` idle connections; memory per connection from `--pid`'s RSS.
    Idle,
    /// `--users` in group conversations of `--group-size`, each sending `--rate` msgs/s.
    Rooms,
    /// Like rooms with 1:1 conversations.
    Direct,
    /// One hot conversation with all `--users` in it.
    Burst,
    /// Pages of history per second and their latency.
    History,
    /// Rooms traffic, then every client drops at once and comes back.
    Reconnect,
    /// Rooms traffic over several nodes while one is killed (or all
    /// restart): the dropped clients reconnect to the others and catch up.
    Storm,
}

impl ScenarioKind {
    /// The name used in reports.
    pub fn name(self) -> &'static str {
        match self {
            ScenarioKind::Idle => "idle",
            ScenarioKind::Rooms => "rooms",
            ScenarioKind::Direct => "direct",
            ScenarioKind::Burst => "burst",
            ScenarioKind::History => "history",
            ScenarioKind::Reconnect => "reconnect",
            ScenarioKind::Storm => "storm",
        }
    }
}

/// Options of one run.
#[derive(Debug, Clone, Parser, Serialize)]
#[command(
    name = "chat-bench",
    version,
    about = "Load generator for the chat cluster and its baselines"
)]
pub struct RunArgs {
    /// Server kind: chat, socketio, ceiling or centrifugo.
    #[arg(long, value_enum, default_value = "chat")]
    pub target: Target,
    /// Scenario to run.
    #[arg(long, value_enum, default_value = "rooms")]
    pub scenario: ScenarioKind,
    /// Comma-separated node addresses; clients are spread round-robin over them.
    #[arg(long, value_delimiter = ',', default_value = "http://127.0.0.1:8080")]
    pub nodes: Vec<String>,
    /// Users (one connection each) for rooms, direct, burst, history, reconnect.
    #[arg(long, default_value_t = 1000)]
    pub users: usize,
    /// Members per group conversation (rooms, history, reconnect).
    #[arg(long, default_value_t = 10)]
    pub group_size: usize,
    /// Messages per second each user sends (the first step when ramping).
    #[arg(long, default_value_t = 1.0)]
    pub rate: f64,
    /// Seconds measured (per run, and for the half-peak run of a ramp; idle: seconds held).
    #[arg(long, default_value_t = 20.0)]
    pub duration: f64,
    /// Seconds of load before measuring.
    #[arg(long, default_value_t = 5.0)]
    pub warmup: f64,
    /// Idle connections to open.
    #[arg(long, default_value_t = 10_000)]
    pub connections: usize,
    /// Idle: connect every user once and disconnect before the RSS baseline,
    /// so the first-time creation of users (store writes, caches) is not
    /// counted as connection memory.
    #[arg(long)]
    pub prewarm: bool,
    /// Idle: connections per user (the node allows 16 per user by default).
    #[arg(long, default_value_t = 1)]
    pub conns_per_user: usize,
    /// Local addresses to bind client sockets to, round-robin, e.g.
    /// 127.0.0.1,127.0.0.2: each gives another ~28k ephemeral ports.
    #[arg(long, value_delimiter = ',')]
    pub source_ips: Vec<IpAddr>,
    /// Write the result as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Server process ids (comma-separated: every process of the server
    /// side, e.g. Socket.IO and its Redis), read from /proc: RSS (idle:
    /// memory per connection, summed) and CPU time (rooms, direct, burst:
    /// server CPU per delivery of each measured window, summed).
    #[arg(long, value_delimiter = ',')]
    pub pid: Vec<u32>,
    /// chat target: mint HS256 tokens with the node's `auth.jwt_secret`
    /// instead of registering every user over HTTP (argon2 makes that slow);
    /// centrifugo target (required): its `client.token.hmac_secret_key`.
    #[arg(long, env = "CHAT_BENCH_JWT_SECRET", hide_env_values = true)]
    #[serde(skip)]
    pub jwt_secret: Option<String>,
    /// Bytes of each message body (the send timestamp plus padding).
    #[arg(long, default_value_t = 32)]
    pub body_bytes: usize,
    /// rooms, chat target: this share of each client's sends are protocol
    /// 1.1 changes of its own latest message instead, half edits and half
    /// reactions (each fans out as `message_updated`, timed like a send).
    #[arg(long, default_value_t = 0.0)]
    #[serde(default)]
    pub changes_share: f64,
    /// rooms, chat target: this share of each group's members never connect
    /// and have a push subscription instead, at a push service the harness
    /// runs (src/push_sink.rs): what the notification outbox costs. The
    /// node must allow loopback push endpoints
    /// (`notifications.push.allow_loopback_http`).
    #[arg(long, default_value_t = 0.0)]
    #[serde(default)]
    pub offline_share: f64,
    /// rooms, direct, burst: before any ramp, one window at each of these
    /// per-user rates (e.g. 1,2.5,5.27), `--fixed-step` seconds each: the
    /// server's CPU per delivery at offered loads that are the same for
    /// every target. With `--ramp 0` they replace the single `--rate` window.
    #[arg(long, value_delimiter = ',')]
    #[serde(default)]
    pub fixed_rates: Vec<f64>,
    /// Seconds measured at each of `--fixed-rates`.
    #[arg(long, default_value_t = 10.0)]
    #[serde(default)]
    pub fixed_step: f64,
    /// A window in which the harness used more than this share of the cores
    /// it may run on is marked `harness_bound`: it never counts as a peak,
    /// and a ramp stops at it (after `--step-tries`).
    #[arg(long, default_value_t = 0.70)]
    #[serde(default)]
    pub harness_bound_share: f64,
    /// Shell command (`sh -c`) run just before each measured window opens
    /// (after its settling load), e.g. to start counting a server's
    /// instructions; the window waits for it. CHAT_BENCH_RATE holds the
    /// window's rate per user.
    #[arg(long)]
    #[serde(default)]
    pub hook_open: Option<String>,
    /// Shell command run once each window's stragglers are in (the window
    /// closed, its messages answered and delivered, or 5 s passed),
    /// before the next window; CHAT_BENCH_RATE and CHAT_BENCH_DELIVERIES
    /// (the window's deliveries) are set.
    #[arg(long)]
    #[serde(default)]
    pub hook_settled: Option<String>,
    /// Ramp steps: raise the rate by --ramp-factor each --step seconds until a
    /// step cannot keep up; 0 runs one fixed-rate window.
    #[arg(long, default_value_t = 0)]
    pub ramp: usize,
    /// Rate multiplier between ramp steps.
    #[arg(long, default_value_t = 1.5)]
    pub ramp_factor: f64,
    /// Seconds per ramp step.
    #[arg(long, default_value_t = 5.0)]
    pub step: f64,
    /// Times a ramp step is measured before the ramp stops at it: one
    /// stall of the machine (an fsync held up by a shared disk, a noisy
    /// neighbour) should not end a ramp that the server keeps up with. Every
    /// try is reported.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=5))]
    pub step_tries: u32,
    /// A ramp step keeps up only if its end-to-end p99 is at most this.
    #[arg(long, default_value_t = 50.0)]
    pub slo_ms: f64,
    /// After a ramp, skip the run at half the peak rate.
    #[arg(long)]
    pub no_half_peak: bool,
    /// Connection attempts in flight at once.
    #[arg(long, default_value_t = 256)]
    pub connect_concurrency: usize,
    /// Seconds allowed for connecting and creating conversations.
    #[arg(long, default_value_t = 120.0)]
    pub setup_timeout: f64,
    /// History: messages per page.
    #[arg(long, default_value_t = 50)]
    pub page_size: u32,
    /// History: messages stored in each conversation before measuring.
    #[arg(long, default_value_t = 500)]
    pub prefill: usize,
    /// Cores the server may use, for per-core figures (default: the
    /// machine's; 1 when scripts/bench.sh pins the server to one core).
    #[arg(long)]
    pub server_cores: Option<usize>,
    /// Free text stored with the result (e.g. "socket.io 2 procs, redis adapter").
    #[arg(long)]
    pub label: Option<String>,
    /// The storage backend of the chat node under test (`embedded`,
    /// `scylla`): the summary compares chat on each backend.
    #[arg(long, default_value = "embedded")]
    pub storage: String,
    /// Worker threads of the harness (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// No progress line on stderr.
    #[arg(long)]
    pub quiet: bool,
}

impl RunArgs {
    /// Checks values that clap cannot.
    pub fn validate(&self) -> Result<()> {
        if self.nodes.is_empty() {
            bail!("--nodes needs at least one address");
        }
        if !(self.rate.is_finite() && self.rate >= 0.0) {
            bail!("--rate must be a non-negative number");
        }
        if !(self.duration > 0.0 && self.warmup >= 0.0 && self.step > 0.0) {
            bail!("--duration and --step must be positive, --warmup non-negative");
        }
        if self.ramp > 0 && self.ramp_factor <= 1.0 {
            bail!("--ramp-factor must be above 1");
        }
        let needs_users = self.scenario != ScenarioKind::Idle;
        if needs_users && self.users < 2 {
            bail!("--users must be at least 2");
        }
        if self.group_size < 2 {
            bail!("--group-size must be at least 2");
        }
        if self.scenario == ScenarioKind::Idle
            && (self.connections == 0 || self.conns_per_user == 0)
        {
            bail!("--connections and --conns-per-user must be positive");
        }
        if !(0.0..=0.5).contains(&self.changes_share) {
            bail!("--changes-share must be 0 to 0.5");
        }
        if self.changes_share > 0.0
            && (!self.target.is_chat() || self.scenario != ScenarioKind::Rooms)
        {
            bail!("--changes-share is for the rooms scenario against the chat target");
        }
        if !(0.0..=0.8).contains(&self.offline_share) {
            bail!("--offline-share must be 0 to 0.8");
        }
        if self.offline_share > 0.0
            && (!self.target.is_chat() || self.scenario != ScenarioKind::Rooms)
        {
            bail!("--offline-share is for the rooms scenario against the chat target");
        }
        if self
            .fixed_rates
            .iter()
            .any(|r| !(r.is_finite() && *r > 0.0))
        {
            bail!("--fixed-rates must be positive numbers");
        }
        let messaging = matches!(
            self.scenario,
            ScenarioKind::Rooms | ScenarioKind::Direct | ScenarioKind::Burst
        );
        if !self.fixed_rates.is_empty() && !messaging {
            bail!("--fixed-rates is for the rooms, direct and burst scenarios");
        }
        if !(self.fixed_step.is_finite() && self.fixed_step > 0.0) {
            bail!("--fixed-step must be positive");
        }
        if !(self.harness_bound_share > 0.0 && self.harness_bound_share <= 1.0) {
            bail!("--harness-bound-share must be in (0, 1]");
        }
        if self.body_bytes < 24 || self.body_bytes > 16 * 1024 {
            bail!("--body-bytes must be 24 to 16384 (the node's max_body_bytes)");
        }
        if self.page_size == 0 || self.page_size > chat_protocol::limits::MAX_HISTORY_LIMIT {
            bail!(
                "--page-size must be 1 to {}",
                chat_protocol::limits::MAX_HISTORY_LIMIT
            );
        }
        if self.connect_concurrency == 0 {
            bail!("--connect-concurrency must be positive");
        }
        let history_like = matches!(
            self.scenario,
            ScenarioKind::History | ScenarioKind::Reconnect | ScenarioKind::Storm
        );
        // The ceiling answers history with empty pages: a reconnect storm
        // against it is the floor of the connections alone.
        let floor = self.target == Target::Ceiling && self.scenario == ScenarioKind::Reconnect;
        if history_like && !floor && !(self.target.is_chat() || self.target == Target::Centrifugo) {
            bail!(
                "scenario {} needs stored history, which only the chat and centrifugo \
                 targets have (the other baselines keep none; the ceiling runs reconnect \
                 as a floor, with nothing to catch up)",
                self.scenario.name()
            );
        }
        if self.target == Target::Centrifugo && self.jwt_secret.is_none() {
            bail!("the centrifugo target needs --jwt-secret (its client.token.hmac_secret_key)");
        }
        Ok(())
    }

    /// The node addresses, resolved.
    pub fn endpoints(&self) -> Result<Vec<SocketAddr>> {
        self.nodes.iter().map(|n| parse_endpoint(n)).collect()
    }
}

/// `http://host:port`, `ws://host:port/...` or `host:port` to a socket address.
pub fn parse_endpoint(s: &str) -> Result<SocketAddr> {
    let rest = s
        .trim()
        .trim_start_matches("http://")
        .trim_start_matches("ws://");
    if s.starts_with("https://") || s.starts_with("wss://") {
        bail!("{s}: TLS endpoints are not supported by the harness; use http:// or ws://");
    }
    let hostport = rest.split('/').next().unwrap_or(rest);
    hostport
        .to_socket_addrs()
        .with_context(|| format!("node address {s:?} is not host:port"))?
        .next()
        .with_context(|| format!("node address {s:?} resolves to nothing"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse() {
        let a = parse_endpoint("http://127.0.0.1:8080").unwrap();
        assert_eq!(a.port(), 8080);
        assert_eq!(parse_endpoint("ws://127.0.0.2:9/v1/ws").unwrap().port(), 9);
        assert_eq!(parse_endpoint("127.0.0.1:7").unwrap().port(), 7);
        assert!(parse_endpoint("wss://x:1").is_err());
        assert!(parse_endpoint("nonsense").is_err());
    }

    #[test]
    fn history_needs_chat() {
        let a = RunArgs::try_parse_from([
            "chat-bench",
            "--target",
            "socketio",
            "--scenario",
            "history",
        ])
        .unwrap();
        assert!(a.validate().is_err());
    }

    #[test]
    fn fixed_rates_and_pids_parse() {
        let a = RunArgs::try_parse_from([
            "chat-bench",
            "--fixed-rates",
            "1,2.5,5.27",
            "--pid",
            "12,34",
        ])
        .unwrap();
        assert_eq!(a.fixed_rates, vec![1.0, 2.5, 5.27]);
        assert_eq!(a.pid, vec![12, 34]);
        a.validate().unwrap();
        let idle =
            RunArgs::try_parse_from(["chat-bench", "--scenario", "idle", "--fixed-rates", "1"])
                .unwrap();
        assert!(idle.validate().is_err());
        let cf = RunArgs::try_parse_from(["chat-bench", "--target", "centrifugo"]).unwrap();
        assert!(cf.validate().is_err(), "centrifugo needs a secret");
    }
}
