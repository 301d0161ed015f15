//! The worker's own threads, at the lowest CPU priority: live chat always
//! comes first. Pushes cost far more CPU than a delivery (an ECDH key
//! agreement and an HTTPS request each), and a busy room with members away
//! makes several per message; on the node's runtime they would take the
//! CPU its deliveries need. At nice 19 they get what the node leaves: when
//! chat saturates the CPU, pushes fall behind (the outbox holds them, within
//! its bounds), never the other way round.
//!
//! Few threads, too: the index jobs' store reads and index writes run on
//! this runtime's blocking pool, and a pass over a hundred busy
//! conversations grew it to a hundred threads. At nice 19 each weighs 15 to
//! a delivery thread's 1,024, but a hundred runnable at once outweigh it:
//! every pass took the core from deliveries for a few tens of milliseconds
//! (p99 at 91k deliveries/s from 4 to 13-25 ms, bench/HISTORY.md, session
//! 25). Bounded, they queue instead.

use std::future::Future;

use tokio::task::JoinHandle;

/// Runs `work` on `threads` threads of its own at the lowest priority;
/// the handle (on the caller's runtime) ends when `work` has.
pub(crate) fn spawn<F>(threads: usize, work: F) -> std::io::Result<JoinHandle<()>>
where
    F: Future<Output = ()> + Send + 'static,
{
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .thread_name("notify")
        .max_blocking_threads(blocking_threads(threads))
        .on_thread_start(lower_priority)
        .enable_all()
        .build()?;
    let (done, ended) = tokio::sync::oneshot::channel::<()>();
    std::thread::Builder::new()
        .name("notify-main".into())
        .spawn(move || {
            lower_priority();
            runtime.block_on(work);
            // Its tasks (a push service's open connections) end with it.
            runtime.shutdown_background();
            let _ = done.send(());
        })?;
    Ok(tokio::spawn(async move {
        let _ = ended.await;
    }))
}

/// The blocking pool's bound for `threads` workers.
fn blocking_threads(threads: usize) -> usize {
    2 * threads.max(1)
}

/// Lowers the calling thread to nice 19 (a thread attribute on Linux:
/// the node's other threads keep theirs). Elsewhere a no-op.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    #[allow(unsafe_code)]
    // SAFETY: setpriority and gettid take plain integers and touch no
    // memory of ours; a failure (refused by a sandbox) leaves the priority
    // as it was, which only costs the isolation.
    unsafe {
        let _ = libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, 19);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    /// Twenty blocking calls at once never run on more threads than the
    /// bound: the rest wait their turn.
    #[tokio::test]
    async fn blocking_work_runs_on_a_bounded_pool() {
        let (running, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (r, m) = (running.clone(), most.clone());
        let worker = super::spawn(1, async move {
            let calls: Vec<_> = (0..20)
                .map(|_| {
                    let (r, m) = (r.clone(), m.clone());
                    tokio::task::spawn_blocking(move || {
                        let now = r.fetch_add(1, Ordering::SeqCst) + 1;
                        m.fetch_max(now, Ordering::SeqCst);
                        // The blocking work: long enough for calls to overlap.
                        std::thread::sleep(Duration::from_millis(20));
                        r.fetch_sub(1, Ordering::SeqCst);
                    })
                })
                .collect();
            for call in calls {
                call.await.expect("blocking call");
            }
        })
        .expect("spawn");
        worker.await.expect("worker");
        let most = most.load(Ordering::SeqCst);
        assert!((1..=2).contains(&most), "{most} at once, for a bound of 2");
    }
}
