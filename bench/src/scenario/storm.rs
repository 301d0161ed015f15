//! `storm`: the failure that took down peers' fleets. Clients in group
//! conversations, spread over every node of `--nodes`, send at a chat's
//! pace for `--duration` seconds; meanwhile the operator (or
//! scripts/bench-storm.sh) kills a node, or restarts them all. Every client
//! whose connection ends reconnects at once, to the next node of the list
//! (as a client behind a load balancer lands on a live one), pages through
//! `history after` the last message it had, and goes on sending.
//!
//! Measured: from the first drop until the last dropped client has caught
//! up, per client from its drop, the clients that never came back, and a
//! line per second of how many are connected, dropped and caught up (the
//! script adds the nodes' memory and the Redis and database request rates
//! beside it).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Result};

use super::reconnect::catch_up;
use super::rooms::{connect_and_join, padding, start_groups, traffic, Exit, Groups};
use super::shared::{base_report, finish, Member, Phase, Shared};
use crate::cli::{RunArgs, ScenarioKind};
use crate::conn::Conn;
use crate::report::{ReconnectReport, RunReport};
use crate::stats::{now_us, Latency};

/// How long a client keeps trying to reconnect, over every node.
const RECONNECT_FOR: Duration = Duration::from_secs(120);
/// First pause between attempts after one failed (doubled up to a second,
/// with jitter, as client SDKs back off).
const FIRST_BACKOFF_MS: u64 = 50;

/// What the storm's clients count together.
#[derive(Default)]
struct Storm {
    /// Connections that ended.
    dropped: AtomicUsize,
    /// Connections open now.
    open: AtomicUsize,
    /// Drops caught up (connected again, history fetched).
    caught_up: AtomicUsize,
    /// First drop and last catch-up (Unix µs; 0: none yet).
    first_drop: AtomicU64,
    last_caught_up: AtomicU64,
    /// Per drop: µs from the drop until caught up.
    times: std::sync::Mutex<Option<hdrhistogram::Histogram<u64>>>,
}

impl Storm {
    fn record(&self, us: u64) {
        let mut times = self.times.lock().unwrap_or_else(|p| p.into_inner());
        times
            .get_or_insert_with(crate::stats::histogram)
            .saturating_record(us);
    }

    fn times(&self) -> Latency {
        let times = self.times.lock().unwrap_or_else(|p| p.into_inner());
        times.as_ref().map(Latency::of).unwrap_or_default()
    }
}

async fn client(
    m: Member,
    sh: Arc<Shared>,
    pad: Arc<str>,
    nodes: Arc<[SocketAddr]>,
    st: Arc<Storm>,
) {
    if let Err(e) = client_inner(m.clone(), &sh, pad, &nodes, &st).await {
        sh.fail(&m.user, &e);
    }
}

async fn client_inner(
    mut m: Member,
    sh: &Shared,
    pad: Arc<str>,
    nodes: &[SocketAddr],
    st: &Storm,
) -> Result<()> {
    let Some((mut conn, mut phase, mut t)) = connect_and_join(&m, sh, pad).await? else {
        return Ok(());
    };
    st.open.fetch_add(1, Ordering::SeqCst);
    sh.ready.fetch_add(1, Ordering::SeqCst);
    loop {
        match traffic(&mut conn, &mut phase, &mut t, sh).await {
            Ok(Exit::Stop) => break,
            Ok(Exit::Storm) => continue,
            Err(_) if sh.phase_now() == Phase::Stop => return Ok(()),
            Err(_) => {
                let dropped = now_us();
                let dropped_at = unix_us();
                st.open.fetch_sub(1, Ordering::SeqCst);
                st.dropped.fetch_add(1, Ordering::SeqCst);
                let _ = st.first_drop.compare_exchange(
                    0,
                    dropped_at,
                    Ordering::SeqCst,
                    Ordering::SeqCst,
                );
                drop(conn);
                t.inflight.clear();
                conn = reconnect(&mut m, sh, nodes).await?;
                st.open.fetch_add(1, Ordering::SeqCst);
                catch_up(&mut conn, &mut t, sh, None).await?;
                st.record(now_us().saturating_sub(dropped));
                st.caught_up.fetch_add(1, Ordering::SeqCst);
                st.last_caught_up.fetch_max(unix_us(), Ordering::SeqCst);
            }
        }
    }
    conn.close().await;
    st.open.fetch_sub(1, Ordering::SeqCst);
    Ok(())
}

/// Wall-clock µs, which the script lines several harnesses up by.
fn unix_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// Connects to another node than `m`'s (the one that dropped it may be
/// gone), then the next in turn, until one takes it, backing off with
/// jitter between tries.
async fn reconnect(m: &mut Member, sh: &Shared, nodes: &[SocketAddr]) -> Result<Conn> {
    let deadline = tokio::time::Instant::now() + RECONNECT_FOR;
    let mut backoff = FIRST_BACKOFF_MS;
    let mut last = None;
    let n = nodes.len();
    let mut at = nodes.iter().position(|a| *a == m.addr).unwrap_or(0);
    // The first try spreads the clients of one node over all the others
    // (as a load balancer would); then each next node in turn.
    let mut step = 1 + m.idx % (n - 1).max(1);
    while tokio::time::Instant::now() < deadline {
        at = (at + step) % n;
        step = 1;
        m.addr = nodes[at];
        match sh.connect(m).await {
            Ok(c) => return Ok(c),
            Err(e) => last = Some(e),
        }
        // Spread over the clients by their index, not all at one instant.
        let jitter = (m.idx as u64).wrapping_mul(2_654_435_761) % (backoff + 1);
        tokio::time::sleep(Duration::from_millis(backoff / 2 + jitter)).await;
        backoff = (backoff * 2).min(1000);
    }
    Err(last.unwrap_or_else(|| anyhow!("no node took the connection")))
}

/// Runs `storm`.
pub(crate) async fn run(args: &RunArgs, nodes: &[SocketAddr]) -> Result<RunReport> {
    let Groups {
        members: ms,
        shared: sh,
        progress,
        plan,
    } = start_groups(args, nodes, ScenarioKind::Rooms).await?;
    let pad = padding(args.body_bytes);
    let st = Arc::new(Storm::default());
    let list: Arc<[SocketAddr]> = nodes.into();
    let t0 = std::time::Instant::now();
    let handles: Vec<_> = ms
        .into_iter()
        .map(|m| {
            let task = client(m, sh.clone(), pad.clone(), list.clone(), st.clone());
            tokio::spawn(task)
        })
        .collect();
    let mut report = base_report(args, nodes);
    report.notes.push(plan);
    let result = async {
        sh.connect_then_set_up(
            &mut report,
            t0,
            "joined their conversations",
            args.setup_timeout,
        )
        .await?;
        sh.set_phase(Phase::Run { rate: args.rate });
        // The script waits for this line before it kills a node.
        eprintln!("storm: all {} clients joined and sending", args.users);
        let started = std::time::Instant::now();
        let mut timeline = Vec::new();
        while started.elapsed().as_secs_f64() < args.duration {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let line = format!(
                "t={:.0} at_ms={} open={} dropped={} caught_up={} failed={}",
                started.elapsed().as_secs_f64(),
                chat_protocol::now_ms(),
                st.open.load(Ordering::SeqCst),
                st.dropped.load(Ordering::SeqCst),
                st.caught_up.load(Ordering::SeqCst),
                sh.failed.load(Ordering::SeqCst),
            );
            if !args.quiet {
                eprintln!("storm: {line}");
            }
            timeline.push(line);
        }
        let dropped = st.dropped.load(Ordering::SeqCst);
        let caught_up = st.caught_up.load(Ordering::SeqCst);
        let (first, last) = (
            st.first_drop.load(Ordering::SeqCst),
            st.last_caught_up.load(Ordering::SeqCst),
        );
        report.reconnect = Some(ReconnectReport {
            clients: dropped,
            caught_up,
            failed: sh.failed.load(Ordering::SeqCst),
            all_caught_up_s: last.saturating_sub(first) as f64 / 1e6,
            catch_up_ms: st.times(),
            recovered_messages: sh.recovered.load(Ordering::Relaxed),
            // The storm's server is a cluster restarted under it: its CPU
            // is the script's to read, several harnesses share the window.
            server_cpu_ms_per_client: None,
            harness_cpu_share: None,
            harness_bound: false,
        });
        if caught_up < dropped {
            report.notes.push(format!(
                "only {caught_up} of {dropped} dropped clients caught up within the run"
            ));
        }
        // For the script, which lines several harnesses up in time.
        report.notes.push(format!(
            "window first_drop_us={first} last_caught_up_us={last}"
        ));
        report.notes.extend(timeline);
        Ok::<_, anyhow::Error>(())
    }
    .await;
    sh.set_phase(Phase::Stop);
    finish(handles).await;
    progress.stop();
    result?;
    report.errors = sh.stats.errors_by_code();
    report.first_error = sh.stats.first_error();
    Ok(report)
}
