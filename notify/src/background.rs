//! The worker's own threads, at the lowest CPU priority: live chat always
//! comes first. Pushes cost far more CPU than a delivery (an ECDH key
//! agreement and an HTTPS request each), and a busy room with members away
//! makes several per message; on the node's runtime they would take the
//! CPU its deliveries need. At nice 19 they get what the node leaves: when
//! chat saturates the CPU, pushes fall behind (the outbox holds them, within
//! its bounds), never the other way round.

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
