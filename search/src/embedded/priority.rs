//! The writer's threads at the lowest CPU priority: live chat first.
//!
//! tantivy starts its merge and segment-updater threads when the writer is
//! made, and they inherit the priority of the thread that makes it. Made on
//! the node's runtime they ran at the priority of deliveries: a merge took
//! half of a busy core for a third of a second, and every message sent
//! meanwhile waited (p99 from 3 to 20-40 ms at half a node's peak,
//! bench/HISTORY.md, session 25). Made from a thread at nice 19, they get
//! what deliveries leave, as the notification worker's threads (which run
//! the index jobs, and so start tantivy's per-commit indexing threads) do.

/// Runs `make` on a thread of its own at nice 19 and returns what it made;
/// threads `make` starts inherit that priority.
pub(super) fn made_at_low_priority<T: Send>(make: impl FnOnce() -> T + Send) -> std::io::Result<T> {
    std::thread::scope(|s| {
        let made = std::thread::Builder::new()
            .name("index-writer".into())
            .spawn_scoped(s, || {
                lower_priority();
                make()
            })?;
        made.join()
            .map_err(|_| std::io::Error::other("making the index writer panicked"))
    })
}

/// Lowers the calling thread to nice 19 (a thread attribute on Linux).
/// Elsewhere a no-op.
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

#[cfg(all(test, target_os = "linux"))]
mod tests {
    /// The nice value of the calling thread.
    fn nice_of_this_thread() -> i32 {
        #[allow(unsafe_code)]
        // SAFETY: as above, integers in and out.
        unsafe {
            libc::getpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t)
        }
    }

    #[test]
    fn what_is_made_and_the_threads_it_starts_run_at_nice_19() {
        let (maker, child) = super::made_at_low_priority(|| {
            let maker = nice_of_this_thread();
            let child = std::thread::spawn(nice_of_this_thread).join().unwrap();
            (maker, child)
        })
        .unwrap();
        assert_eq!((maker, child), (19, 19));
        // The caller keeps its own.
        assert_ne!(nice_of_this_thread(), 19);
    }
}
