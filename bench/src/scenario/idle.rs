//! `idle`: open `--connections` connections and hold them, doing nothing but
//! answering pings. With `--pid`, the server's RSS is read before the first
//! connection and once all are open and settled: memory per connection is
//! the difference divided by the connections held (several `--pid`s: their
//! RSS summed). A connection includes
//! whatever the server keeps for its user (`--conns-per-user 1`, the default,
//! means one user session per connection, as for a phone).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;

use super::progress::Progress;
use super::rooms::wait_phase;
use super::shared::{base_report, finish, Member, Phase, Shared};
use crate::cli::RunArgs;
use crate::conn::GroupPlan;
use crate::report::{MemoryReport, RunReport};

/// Wait after the last connect before reading RSS: the server's allocator
/// and per-connection tasks settle.
const SETTLE: Duration = Duration::from_secs(3);

async fn client(m: Member, sh: Arc<Shared>, dropped: Arc<AtomicU64>) {
    let mut phase = sh.phase.subscribe();
    let mut conn = match sh.connect(&m).await {
        Ok(c) => c,
        Err(e) => return sh.fail(&m.user, &e),
    };
    sh.connected.fetch_add(1, Ordering::SeqCst);
    match wait_phase(&mut conn, &mut phase, |p| p == Phase::Stop).await {
        Ok(_) => conn.close().await,
        Err(e) => {
            dropped.fetch_add(1, Ordering::SeqCst);
            sh.stats.error(
                "dropped",
                &format!("{}: {e:#}", m.user),
                crate::stats::now_us(),
            );
        }
    }
}

/// Connects every user once and closes, so the server has created them.
async fn prewarm(args: &RunArgs, nodes: &[SocketAddr], tokens: &[String]) -> Result<()> {
    let gate = Arc::new(tokio::sync::Semaphore::new(args.connect_concurrency));
    let mut tasks = Vec::with_capacity(tokens.len());
    for (i, token) in tokens.iter().enumerate() {
        let gate = gate.clone();
        let (target, addr, token) = (args.target, nodes[i % nodes.len()], token.clone());
        let source =
            (!args.source_ips.is_empty()).then(|| args.source_ips[i % args.source_ips.len()]);
        tasks.push(tokio::spawn(async move {
            let _permit = gate.acquire().await?;
            let conn = crate::conn::Conn::connect(target, addr, &token, source).await?;
            conn.close().await;
            Ok::<_, anyhow::Error>(())
        }));
    }
    let mut failed = 0usize;
    let mut first = None;
    for t in tasks {
        let outcome = match t.await {
            Ok(r) => r,
            Err(e) => Err(anyhow::anyhow!("prewarm task: {e}")),
        };
        if let Err(e) = outcome {
            failed += 1;
            first.get_or_insert_with(|| format!("{e:#}"));
        }
    }
    if failed > 0 {
        anyhow::bail!(
            "prewarm: {failed} of {} users could not connect; first: {}",
            tokens.len(),
            first.unwrap_or_default()
        );
    }
    // Let the server tear the sessions down before the baseline is read.
    tokio::time::sleep(SETTLE).await;
    Ok(())
}

/// RSS of the server's processes together, if `--pid` named them.
fn rss(pids: &[u32]) -> Result<Option<u64>> {
    if pids.is_empty() {
        return Ok(None);
    }
    crate::sys::rss_bytes_of(pids).map(Some)
}

/// Runs `idle`.
pub(crate) async fn run(args: &RunArgs, nodes: &[SocketAddr]) -> Result<RunReport> {
    let n = args.connections;
    crate::sys::check_open_files(n)?;
    let user_count = n.div_ceil(args.conns_per_user);
    let users = super::shared::user_names(user_count);
    let tokens = crate::auth::tokens(args, &users, nodes).await?;
    if args.prewarm {
        prewarm(args, nodes, &tokens).await?;
    }
    let rss_before = rss(&args.pid)?;
    let sh = Shared::new(args, n);
    let solo = Arc::new(GroupPlan::new(
        0,
        chat_protocol::ConversationKind::Group,
        Vec::new(),
        String::new(),
    ));
    let progress = Progress::start(
        sh.clone(),
        format!("idle/{}", args.target.name()),
        args.quiet,
    );
    let dropped = Arc::new(AtomicU64::new(0));
    let t0 = std::time::Instant::now();
    let handles: Vec<_> = (0..n)
        .map(|i| {
            let u = i % user_count;
            let m = Member {
                idx: i,
                user: users[u].clone(),
                token: tokens[u].clone(),
                addr: nodes[i % nodes.len()],
                source: (!args.source_ips.is_empty())
                    .then(|| args.source_ips[i % args.source_ips.len()]),
                group: solo.clone(),
            };
            tokio::spawn(client(m, sh.clone(), dropped.clone()))
        })
        .collect();
    let mut report = base_report(args, nodes);
    // Partial results are still results here: report how many were held.
    let connected = sh
        .wait_settled(&sh.connected, "connected", args.setup_timeout)
        .await;
    report.connect = Some(sh.connect_report(t0.elapsed().as_secs_f64()));
    if let Err(e) = &connected {
        report.notes.push(format!("{e:#}"));
    }
    tokio::time::sleep(SETTLE).await;
    let held = sh.connected.load(Ordering::SeqCst) - dropped.load(Ordering::SeqCst) as usize;
    let rss_after = rss(&args.pid)?;
    tokio::time::sleep(Duration::from_secs_f64(args.duration)).await;
    let rss_end = rss(&args.pid)?;
    if let (Some(&pid), Some(before), Some(after), Some(end)) =
        (args.pid.first(), rss_before, rss_after, rss_end)
    {
        let per = after.saturating_sub(before) as f64 / held.max(1) as f64;
        report.memory = Some(MemoryReport {
            pid,
            connections: held,
            rss_before: before,
            rss_after: after,
            rss_end: end,
            bytes_per_connection: per,
            kib_per_connection: per / 1024.0,
            dropped: dropped.load(Ordering::SeqCst),
        });
    } else {
        report
            .notes
            .push("no --pid given: server memory per connection not measured".into());
    }
    sh.set_phase(Phase::Stop);
    finish(handles).await;
    progress.stop();
    report.errors = sh.stats.errors_by_code();
    report.first_error = sh.stats.first_error();
    report.notes.push(format!(
        "{n} connections of {user_count} users ({} per user){}",
        args.conns_per_user,
        if args.prewarm {
            "; users created by a first connect before the RSS baseline"
        } else {
            "; users created by these connects (counted in the memory)"
        }
    ));
    Ok(report)
}
