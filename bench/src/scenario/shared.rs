//! What every scenario shares: the phases a run moves through, the simulated
//! users, the state the coordinator and the client tasks share, and the
//! start and end of a run. Below the scenarios (and the progress line that
//! reads it), so that they need not import the module that dispatches to
//! them.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use anyhow::{bail, Result};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinHandle;

use crate::cli::{RunArgs, Target};
use crate::conn::{Conn, GroupPlan};
use crate::push_sink::PushSink;
use crate::report::{ConnectReport, RunReport};
use crate::stats::{now_us, Latency, Stats};

/// Where the coordinator has moved the run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Phase {
    /// Clients connect.
    Connect,
    /// Clients create or join their conversations.
    Setup,
    /// Clients send `rate` messages per second each (0: pause).
    Run {
        /// Per user.
        rate: f64,
    },
    /// Every client drops its connection and comes back.
    Storm,
    /// Clients close and end.
    Stop,
}

impl Phase {
    pub(crate) fn name(self) -> String {
        match self {
            Phase::Connect => "connect".into(),
            Phase::Setup => "setup".into(),
            Phase::Run { rate } if rate > 0.0 => format!("run {rate:.2}/s/user"),
            Phase::Run { .. } => "drain".into(),
            Phase::Storm => "storm".into(),
            Phase::Stop => "stop".into(),
        }
    }
}

/// One simulated user with one connection.
#[derive(Debug, Clone)]
pub(crate) struct Member {
    pub idx: usize,
    pub user: String,
    pub token: String,
    pub addr: SocketAddr,
    pub source: Option<IpAddr>,
    pub group: Arc<GroupPlan>,
}

/// What the coordinator and the client tasks share.
pub(crate) struct Shared {
    pub target: Target,
    /// `--changes-share`.
    pub changes_share: f64,
    pub stats: Stats,
    pub phase: watch::Sender<Phase>,
    pub clients: usize,
    pub connected: AtomicUsize,
    pub ready: AtomicUsize,
    pub failed: AtomicUsize,
    /// Reconnect: clients caught up after the storm.
    pub caught_up: AtomicUsize,
    /// Reconnect: messages fetched with `history after`.
    pub recovered: AtomicU64,
    /// Server processes whose CPU each window reads (`--pid`).
    pub cpu_pids: Vec<u32>,
    /// Cores the server may use (`--server-cores`).
    pub server_cores: usize,
    /// Cores the harness may use: its affinity, or fewer `--threads`.
    pub harness_cores: usize,
    /// `--harness-bound-share`.
    pub harness_bound_share: f64,
    /// `--hook-open`, `--hook-settled`.
    pub hook_open: Option<String>,
    pub hook_settled: Option<String>,
    /// The push service of `--offline-share` runs.
    pub push_sink: OnceLock<PushSink>,
    gate: Semaphore,
    first_failure: Mutex<Option<String>>,
}

impl Shared {
    pub fn new(args: &RunArgs, clients: usize) -> Arc<Shared> {
        let (phase, _) = watch::channel(Phase::Connect);
        Arc::new(Shared {
            target: args.target,
            changes_share: args.changes_share,
            stats: Stats::new(),
            phase,
            clients,
            connected: AtomicUsize::new(0),
            ready: AtomicUsize::new(0),
            failed: AtomicUsize::new(0),
            caught_up: AtomicUsize::new(0),
            recovered: AtomicU64::new(0),
            cpu_pids: args.pid.clone(),
            server_cores: args
                .server_cores
                .unwrap_or_else(crate::sys::machine_cores)
                .max(1),
            harness_cores: args
                .threads
                .map_or(crate::sys::cores(), |t| t.min(crate::sys::cores()))
                .max(1),
            harness_bound_share: args.harness_bound_share,
            hook_open: args.hook_open.clone(),
            hook_settled: args.hook_settled.clone(),
            push_sink: OnceLock::new(),
            gate: Semaphore::new(args.connect_concurrency),
            first_failure: Mutex::new(None),
        })
    }

    /// Pushes the sink has taken (0 without one).
    pub fn pushes(&self) -> u64 {
        self.push_sink.get().map_or(0, PushSink::received)
    }

    pub fn set_phase(&self, p: Phase) {
        self.phase.send_replace(p);
    }

    pub fn phase_now(&self) -> Phase {
        *self.phase.borrow()
    }

    /// Runs a window hook (`sh -c CMD`) with `env`, and waits for it; a
    /// hook that fails is reported as an error of the run, not fatal.
    pub async fn run_hook(&self, cmd: Option<&str>, env: &[(&str, String)]) {
        let Some(cmd) = cmd else { return };
        let status = tokio::process::Command::new("sh")
            .arg("-c")
            .arg(cmd)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .status()
            .await;
        let failure = match status {
            Ok(s) if s.success() => return,
            Ok(s) => format!("{cmd:?} exited with {s}"),
            Err(e) => format!("{cmd:?} did not start: {e}"),
        };
        self.stats.error("hook_failed", &failure, 0);
    }

    /// Connects `m`, holding a connect permit so that thousands of clients
    /// do not all hit the listener's backlog at once.
    pub async fn connect(&self, m: &Member) -> Result<Conn> {
        let _permit = self.gate.acquire().await?;
        let t0 = now_us();
        let conn = Conn::connect(self.target, m.addr, &m.token, m.source).await?;
        self.stats.aux(now_us() - t0);
        Ok(conn)
    }

    /// A client gave up.
    pub fn fail(&self, who: &str, e: &anyhow::Error) {
        self.failed.fetch_add(1, Ordering::SeqCst);
        let detail = format!("{who}: {e:#}");
        self.stats.error("client_failed", &detail, now_us());
        let mut first = self.first_failure.lock().unwrap_or_else(|p| p.into_inner());
        if first.is_none() {
            *first = Some(detail);
        }
    }

    pub fn first_failure(&self) -> Option<String> {
        self.first_failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Waits until `counter` reaches every client. Fails when a client has
    /// failed (with its error) or when `timeout` passes.
    pub async fn wait_all(&self, counter: &AtomicUsize, what: &str, timeout: f64) -> Result<()> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs_f64(timeout);
        loop {
            let n = counter.load(Ordering::SeqCst);
            let failed = self.failed.load(Ordering::SeqCst);
            if failed > 0 {
                bail!(
                    "{failed} of {} clients failed before all were {what}; first: {}",
                    self.clients,
                    self.first_failure().unwrap_or_default()
                );
            }
            if n >= self.clients {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                bail!(
                    "only {n} of {} clients {what} within {timeout} s (raise --setup-timeout?)",
                    self.clients
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits for every client to connect and puts how that went in
    /// `report` (`t0`: when the clients were started), then starts their
    /// setup and waits for every one to finish it (`ready`, described as
    /// `what`).
    pub async fn connect_then_set_up(
        &self,
        report: &mut RunReport,
        t0: std::time::Instant,
        what: &str,
        timeout: f64,
    ) -> Result<()> {
        self.wait_all(&self.connected, "connected", timeout).await?;
        report.connect = Some(self.connect_report(t0.elapsed().as_secs_f64()));
        self.set_phase(Phase::Setup);
        self.wait_all(&self.ready, what, timeout).await
    }

    /// Waits until every client has either reached `counter` or failed;
    /// fails (after that) when some failed or `timeout` passed.
    pub async fn wait_settled(
        &self,
        counter: &AtomicUsize,
        what: &str,
        timeout: f64,
    ) -> Result<()> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs_f64(timeout);
        loop {
            let n = counter.load(Ordering::SeqCst);
            let failed = self.failed.load(Ordering::SeqCst);
            if n + failed >= self.clients || tokio::time::Instant::now() >= deadline {
                if n < self.clients {
                    bail!(
                        "only {n} of {} clients {what} ({failed} failed); first failure: {}",
                        self.clients,
                        self.first_failure()
                            .unwrap_or_else(|| "none (timed out)".into())
                    );
                }
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Connection numbers so far: attempts, successes and connect times.
    pub fn connect_report(&self, secs: f64) -> ConnectReport {
        let established = self.connected.load(Ordering::SeqCst);
        ConnectReport {
            requested: self.clients,
            established,
            failed: self.failed.load(Ordering::SeqCst),
            per_s: if secs > 0.0 {
                established as f64 / secs
            } else {
                0.0
            },
            secs,
            connect_ms: Latency::of(&self.stats.take_aux()),
        }
    }
}

/// User names of this run: a fresh prefix, then the index.
pub(crate) fn user_names(n: usize) -> Vec<String> {
    let prefix = crate::auth::run_prefix();
    (0..n).map(|i| format!("{prefix}-{i}")).collect()
}

/// Spreads clients round-robin over nodes and over source addresses.
pub(crate) fn members(
    args: &RunArgs,
    nodes: &[SocketAddr],
    users: &[String],
    tokens: &[String],
    group_of: impl Fn(usize) -> Arc<GroupPlan>,
) -> Vec<Member> {
    users
        .iter()
        .zip(tokens)
        .enumerate()
        .map(|(i, (user, token))| Member {
            idx: i,
            user: user.clone(),
            token: token.clone(),
            addr: nodes[i % nodes.len()],
            source: (!args.source_ips.is_empty())
                .then(|| args.source_ips[i % args.source_ips.len()]),
            group: group_of(i),
        })
        .collect()
}

/// Waits for the client tasks to end after `Stop`, then aborts stragglers.
pub(crate) async fn finish(handles: Vec<JoinHandle<()>>) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    for h in handles {
        let abort = h.abort_handle();
        if tokio::time::timeout_at(deadline, h).await.is_err() {
            abort.abort();
        }
    }
}

/// Fills the parts of a report every scenario has.
pub(crate) fn base_report(args: &RunArgs, nodes: &[SocketAddr]) -> RunReport {
    RunReport::new(args, nodes)
}
