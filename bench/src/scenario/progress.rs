//! The progress line on stderr while a run goes: phase, clients, rates of the
//! last second and the p99 of the open window. On a terminal it redraws one
//! line; into a file or a pipe it writes a line every 5 seconds, so logs of
//! `scripts/bench.sh` stay readable.

use std::io::{IsTerminal, Write};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

use super::shared::Shared;

/// A running progress printer; [`Progress::stop`] ends its line.
pub(crate) struct Progress {
    task: Option<JoinHandle<()>>,
    tty: bool,
}

impl Progress {
    /// Starts printing about `shared` unless `quiet`.
    pub fn start(shared: Arc<Shared>, title: String, quiet: bool) -> Progress {
        let tty = std::io::stderr().is_terminal();
        if quiet {
            return Progress { task: None, tty };
        }
        let task = tokio::spawn(async move {
            let t0 = Instant::now();
            let every = if tty { 1 } else { 5 };
            let mut tick = tokio::time::interval(Duration::from_secs(every));
            tick.tick().await;
            let t = &shared.stats.totals;
            let mut last = (0, 0, 0, 0, 0);
            loop {
                tick.tick().await;
                let now = (
                    t.sent.load(Ordering::Relaxed),
                    t.acked.load(Ordering::Relaxed),
                    t.delivered.load(Ordering::Relaxed),
                    t.errors.load(Ordering::Relaxed),
                    t.ops.load(Ordering::Relaxed),
                );
                let per = |a: u64, b: u64| (a - b) / every;
                let p99 = shared
                    .stats
                    .peek_p99_ms()
                    .map(|p| format!(" p99 {p:.1}ms"))
                    .unwrap_or_default();
                let line = format!(
                    "[{title}] {:>4}s {:<18} conns {}/{} ready {} | sent {}/s ok {}/s deliv {}/s ops {}/s |{p99} err {}",
                    t0.elapsed().as_secs(),
                    shared.phase_now().name(),
                    shared.connected.load(Ordering::Relaxed),
                    shared.clients,
                    shared.ready.load(Ordering::Relaxed),
                    per(now.0, last.0),
                    per(now.1, last.1),
                    per(now.2, last.2),
                    per(now.4, last.4),
                    now.3,
                );
                last = now;
                let mut err = std::io::stderr().lock();
                if tty {
                    let _ = write!(err, "\r\x1b[2K{line}");
                } else {
                    let _ = writeln!(err, "{line}");
                }
                let _ = err.flush();
            }
        });
        Progress {
            task: Some(task),
            tty,
        }
    }

    /// Stops printing and ends the line.
    pub fn stop(mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
            if self.tty {
                eprintln!();
            }
        }
    }
}
