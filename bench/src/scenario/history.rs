//! `history`: conversations are filled with `--prefill` messages, then every
//! user reads pages of `--page-size` in a closed loop (one request in flight
//! each), scrolling back from the newest message to the oldest and starting
//! over, as a client opening a conversation and scrolling does. Pages within
//! the conversation actor's tail (its newest `actors.tail` messages) come
//! from memory, older ones from the store.
//! Measured: pages per second and the latency of a page. Against Centrifugo
//! a page is a `history` request of the channel with `limit`, `reverse` and
//! `since` the oldest offset of the previous page (its history holds the
//! last `history_size` publications, in memory).

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Result};

use super::rooms::{
    connect_and_join, padding, start_groups, wait_phase, Groups, Inflight, Traffic, MAX_INFLIGHT,
};
use super::shared::{base_report, finish, Member, Phase, Shared};
use crate::cli::{RunArgs, ScenarioKind};
use crate::conn::{Conn, Incoming};
use crate::cpu::{CpuWindow, Mark};
use crate::report::{HistoryReport, RunReport};
use crate::stats::{now_us, Latency};

/// Sends of the prefill in flight per client: a pipelined burst, well under
/// the node's per-connection in-flight limit.
const PREFILL_INFLIGHT: u64 = 64;

async fn client(m: Member, sh: Arc<Shared>, args: Arc<RunArgs>, pad: Arc<str>) {
    if let Err(e) = client_inner(&m, &sh, &args, pad).await {
        sh.fail(&m.user, &e);
    }
}

async fn client_inner(m: &Member, sh: &Shared, args: &RunArgs, pad: Arc<str>) -> Result<()> {
    let Some((mut conn, mut phase, mut t)) = connect_and_join(m, sh, pad).await? else {
        return Ok(());
    };
    prefill(&mut conn, &mut t, m, args).await?;
    sh.ready.fetch_add(1, Ordering::SeqCst);
    if wait_phase(&mut conn, &mut phase, |p| {
        matches!(p, Phase::Run { .. } | Phase::Stop)
    })
    .await?
        == Phase::Stop
    {
        return Ok(());
    }
    let mut before: Option<u64> = None;
    loop {
        tokio::select! {
            changed = phase.changed() => {
                if changed.is_err() || *phase.borrow_and_update() == Phase::Stop {
                    break;
                }
            }
            page = read_page(&mut conn, &mut t, before, args.page_size, sh) => {
                let (first, n, more) = page?;
                before = if more { first } else { None };
                if n == 0 {
                    before = None;
                }
            }
        }
    }
    conn.close().await;
    Ok(())
}

/// This member's share of the prefill, pipelined; waits for every answer.
async fn prefill(conn: &mut Conn, t: &mut Traffic, m: &Member, args: &RunArgs) -> Result<()> {
    let size = m.group.members.len();
    let pos = m
        .group
        .members
        .iter()
        .position(|u| *u == m.user)
        .unwrap_or(0);
    let share = args.prefill / size + usize::from(pos < args.prefill % size);
    let mut inflight = Inflight::new();
    let (mut sent, mut answered) = (0usize, 0usize);
    while answered < share {
        while sent < share && (sent - answered) < PREFILL_INFLIGHT.min(MAX_INFLIGHT as u64) as usize
        {
            let req = t.take_req();
            let now = now_us();
            conn.send_message(&t.conv, req, format!("{now}:{}", t.pad))
                .await?;
            inflight.put(req, now);
            sent += 1;
        }
        match conn.next().await? {
            Some(Incoming::Ack { req, .. }) => {
                if inflight.take(req).is_some() {
                    answered += 1;
                }
            }
            Some(Incoming::Error {
                req: Some(r),
                code,
                message,
            }) if inflight.take(r).is_some() => {
                bail!(
                    "prefill send refused: {code}: {message} (a rate limit? lower --prefill or raise \
                     the node's limits.sends_per_second / send_burst)"
                )
            }
            Some(_) => {}
            None => bail!("the server closed the connection during the prefill"),
        }
    }
    Ok(())
}

/// One page: (oldest id, messages, more).
async fn read_page(
    conn: &mut Conn,
    t: &mut Traffic,
    before: Option<u64>,
    limit: u32,
    sh: &Shared,
) -> Result<(Option<u64>, usize, bool)> {
    let req = t.take_req();
    let started = now_us();
    conn.history(req, &t.conv, before, None, limit).await?;
    loop {
        match conn.next().await? {
            Some(Incoming::Page {
                req: r,
                oldest,
                count,
                more,
                ..
            }) if r == req => {
                sh.stats.op(t.shard, started, now_us(), count as u64);
                return Ok((oldest, count, more));
            }
            Some(Incoming::Error {
                req: Some(r),
                code,
                message,
            }) if r == req => {
                sh.stats.error(&code, &message, started);
                return Ok((None, 0, false));
            }
            // Deliveries of other readers' prefill, late: nothing to do.
            Some(_) => {}
            None => bail!("the server closed the connection"),
        }
    }
}

/// Runs `history`.
pub(crate) async fn run(args: &RunArgs, nodes: &[SocketAddr]) -> Result<RunReport> {
    let Groups {
        members: ms,
        shared: sh,
        progress,
        ..
    } = start_groups(args, nodes, ScenarioKind::Rooms).await?;
    let shared_args = Arc::new(args.clone());
    let pad = padding(args.body_bytes);
    let t0 = std::time::Instant::now();
    let handles: Vec<_> = ms
        .into_iter()
        .map(|m| tokio::spawn(client(m, sh.clone(), shared_args.clone(), pad.clone())))
        .collect();
    let mut report = base_report(args, nodes);
    let result = async {
        sh.connect_then_set_up(&mut report, t0, "joined and prefilled", args.setup_timeout)
            .await?;
        sh.set_phase(Phase::Run { rate: 0.0 });
        tokio::time::sleep(Duration::from_secs_f64(args.warmup)).await;
        let start = Mark::now(&sh.cpu_pids, 0);
        sh.stats.open_window();
        tokio::time::sleep(Duration::from_secs_f64(args.duration)).await;
        sh.stats.close_window();
        let cpu = CpuWindow::between(&start, &Mark::now(&sh.cpu_pids, 0));
        // Pages requested inside the window and answered after it count.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let w = sh.stats.take_window();
        let secs = w.secs.max(1e-9);
        let harness_cpu_share = cpu
            .harness_cpu_s
            .map(|s| s / (cpu.secs.max(1e-9) * sh.harness_cores.max(1) as f64));
        report.history = Some(HistoryReport {
            readers: args.users,
            prefill: args.prefill,
            page_size: args.page_size,
            window_s: w.secs,
            pages: w.ops,
            pages_per_s: w.ops as f64 / secs,
            messages_per_s: w.items as f64 / secs,
            errors: w.errors,
            latency_ms: Latency::of(&w.latency),
            server_cpu_us_per_page: cpu
                .server_cpu_s
                .filter(|_| w.ops > 0)
                .map(|s| s * 1e6 / w.ops as f64),
            harness_cpu_share,
            harness_bound: harness_cpu_share.is_some_and(|s| s > sh.harness_bound_share),
        });
        if report.history.as_ref().is_some_and(|h| h.harness_bound) {
            report.notes.push(format!(
                "harness-bound: the harness used more than {:.0}% of its {} core(s); the pages/s \
                 are the harness's limit, not the server's",
                sh.harness_bound_share * 100.0,
                sh.harness_cores
            ));
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
