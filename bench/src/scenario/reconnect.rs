//! `reconnect`: rooms traffic for a measured window, then every client drops
//! its connection at the same instant (a node restart or a network blip, as
//! clients see it) and comes back at once: reconnect, fetch what it missed
//! with `history after` the last message it had, page by page, then resume
//! sending. Clients that are back early keep talking, so the late ones have
//! more to catch up, as in real life. Measured: the time from the drop until
//! the last client has caught up, and per client.
//!
//! Against Centrifugo a client subscribes again with `recover`, the `offset`
//! of the last publication it saw and the channel's `epoch`: the missed
//! publications come in the reply (up to its
//! `recovery_max_publication_limit`); when the reply says `recovered:
//! false`, the client pages `history` forward from that offset instead.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Result};

use super::rooms::{
    connect_and_join, measure, padding, start_groups, traffic, Exit, Groups, Traffic,
};
use super::shared::{base_report, finish, Member, Phase, Shared};
use crate::cli::{RunArgs, ScenarioKind};
use crate::conn::{Conn, Incoming};
use crate::cpu::{CpuWindow, Mark};
use crate::report::{ReconnectReport, RunReport};
use crate::stats::{now_us, Latency};

/// Connect attempts per client after the storm: a node flooded with
/// reconnects may time some out.
const RECONNECT_ATTEMPTS: u32 = 5;
/// Longest the coordinator waits for everyone to catch up.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(120);
/// Messages per catch-up page (the protocol's maximum).
const CATCH_UP_PAGE: u32 = chat_protocol::limits::MAX_HISTORY_LIMIT;

async fn client(m: Member, sh: Arc<Shared>, pad: Arc<str>, storm_at: Arc<AtomicU64>) {
    if let Err(e) = client_inner(&m, &sh, pad, &storm_at).await {
        sh.fail(&m.user, &e);
    }
}

async fn client_inner(m: &Member, sh: &Shared, pad: Arc<str>, storm_at: &AtomicU64) -> Result<()> {
    let Some((mut conn, mut phase, mut t)) = connect_and_join(m, sh, pad).await? else {
        return Ok(());
    };
    sh.ready.fetch_add(1, Ordering::SeqCst);
    loop {
        match traffic(&mut conn, &mut phase, &mut t, sh).await? {
            Exit::Stop => break,
            Exit::Storm => {
                let epoch = conn.epoch(&t.conv);
                // Dropped without a close handshake, as a lost network is.
                drop(conn);
                t.inflight.clear();
                conn = reconnect(m, sh).await?;
                catch_up(&mut conn, &mut t, sh, epoch.as_deref()).await?;
                let since = now_us().saturating_sub(storm_at.load(Ordering::SeqCst));
                sh.stats.aux(since);
                sh.caught_up.fetch_add(1, Ordering::SeqCst);
            }
        }
    }
    conn.close().await;
    Ok(())
}

async fn reconnect(m: &Member, sh: &Shared) -> Result<Conn> {
    let mut last = None;
    for attempt in 0..RECONNECT_ATTEMPTS {
        match sh.connect(m).await {
            Ok(c) => return Ok(c),
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(100 << attempt)).await;
    }
    Err(last.unwrap_or_else(|| anyhow!("no attempt made")))
}

/// Waits for the page answering `req`, accounting for live deliveries
/// that arrive meanwhile.
async fn await_page(
    conn: &mut Conn,
    t: &mut Traffic,
    sh: &Shared,
    req: u64,
) -> Result<(Option<u64>, usize, bool)> {
    loop {
        match conn.next().await? {
            Some(Incoming::Page {
                req: r,
                newest,
                count,
                more,
                ..
            }) if r == req => return Ok((newest, count, more)),
            Some(Incoming::Error {
                req: Some(r),
                code,
                message,
            }) if r == req => bail!("catching up: {code}: {message}"),
            Some(ev) => t.handle(ev, sh),
            None => bail!("the server closed the connection while catching up"),
        }
    }
}

/// Counts `count` recovered messages up to `newest`: deliveries up to it
/// were fetched, and the next page starts after it.
fn account(
    sh: &Shared,
    t: &mut Traffic,
    after: &mut Option<u64>,
    newest: Option<u64>,
    count: usize,
) {
    sh.recovered.fetch_add(count as u64, Ordering::Relaxed);
    if let Some(last) = newest {
        t.fetched_upto = t.fetched_upto.max(last);
        t.last_delivered = t.last_delivered.max(last);
        *after = Some(after.unwrap_or(0).max(last));
    }
}

/// Catches up after a reconnect: resubscribes with recovery where the
/// target needs it (Centrifugo), then pages through `history after` the
/// last message seen until nothing is left.
pub(crate) async fn catch_up(
    conn: &mut Conn,
    t: &mut Traffic,
    sh: &Shared,
    epoch: Option<&str>,
) -> Result<()> {
    let mut after = (t.last_delivered > 0).then_some(t.last_delivered);
    let req = t.take_req();
    if conn.rejoin(req, &t.conv, t.last_delivered, epoch).await? {
        let (newest, count, more) = await_page(conn, t, sh, req).await?;
        account(sh, t, &mut after, newest, count);
        if !more {
            return Ok(());
        }
    }
    loop {
        let req = t.take_req();
        let from = after;
        conn.history(req, &t.conv, None, from, CATCH_UP_PAGE)
            .await?;
        let (newest, count, more) = await_page(conn, t, sh, req).await?;
        account(sh, t, &mut after, newest, count);
        // Without a starting point the newest page is all there is to fetch.
        if !more || from.is_none() || count == 0 {
            return Ok(());
        }
    }
}

/// Runs `reconnect`.
pub(crate) async fn run(args: &RunArgs, nodes: &[SocketAddr]) -> Result<RunReport> {
    let Groups {
        members: ms,
        shared: sh,
        progress,
        ..
    } = start_groups(args, nodes, ScenarioKind::Rooms).await?;
    let pad = padding(args.body_bytes);
    let storm_at = Arc::new(AtomicU64::new(0));
    let t0 = std::time::Instant::now();
    let handles: Vec<_> = ms
        .into_iter()
        .map(|m| tokio::spawn(client(m, sh.clone(), pad.clone(), storm_at.clone())))
        .collect();
    let mut report = base_report(args, nodes);
    let result = async {
        sh.connect_then_set_up(
            &mut report,
            t0,
            "joined their conversations",
            args.setup_timeout,
        )
        .await?;
        let step = measure(
            &sh,
            args.rate,
            args.warmup,
            args.duration,
            args.users,
            args.slo_ms,
        )
        .await;
        report.peak = Some(step.clone());
        report.steps.push(step);
        // Traffic again, so there is something to miss.
        sh.set_phase(Phase::Run { rate: args.rate });
        tokio::time::sleep(Duration::from_secs(1)).await;
        let failed_before = sh.failed.load(Ordering::SeqCst);
        sh.stats.take_aux();
        let cpu_at_storm = Mark::now(&sh.cpu_pids, 0);
        storm_at.store(now_us(), Ordering::SeqCst);
        let storm = std::time::Instant::now();
        sh.set_phase(Phase::Storm);
        let deadline = tokio::time::Instant::now() + CATCH_UP_TIMEOUT;
        loop {
            let done = sh.caught_up.load(Ordering::SeqCst);
            let failed = sh.failed.load(Ordering::SeqCst) - failed_before;
            if done + failed >= args.users || tokio::time::Instant::now() >= deadline {
                let cpu = CpuWindow::between(&cpu_at_storm, &Mark::now(&sh.cpu_pids, 0));
                let harness_cpu_share = cpu
                    .harness_cpu_s
                    .map(|s| s / (cpu.secs.max(1e-9) * sh.harness_cores.max(1) as f64));
                let harness_bound = harness_cpu_share.is_some_and(|s| s > sh.harness_bound_share);
                if harness_bound {
                    report.notes.push(format!(
                        "harness-bound: the harness used more than {:.0}% of its {} core(s) \
                         while the clients came back; the seconds are the harness's limit, \
                         not the server's",
                        sh.harness_bound_share * 100.0,
                        sh.harness_cores
                    ));
                }
                report.reconnect = Some(ReconnectReport {
                    server_cpu_ms_per_client: cpu
                        .server_cpu_s
                        .filter(|_| done > 0)
                        .map(|s| s * 1e3 / done as f64),
                    harness_cpu_share,
                    harness_bound,
                    clients: args.users,
                    caught_up: done,
                    failed,
                    all_caught_up_s: storm.elapsed().as_secs_f64(),
                    catch_up_ms: Latency::of(&sh.stats.take_aux()),
                    recovered_messages: sh.recovered.load(Ordering::Relaxed),
                });
                if done < args.users {
                    report.notes.push(format!(
                        "only {done} of {} clients caught up ({failed} failed)",
                        args.users
                    ));
                }
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
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
