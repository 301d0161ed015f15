//! The one way a test of this workspace waits for something: poll a
//! condition until it holds, and fail with what was last seen once a
//! deadline passes. Never a bare sleep standing in for a condition (as
//! ractor's `periodic_check` in its `common_test.rs`). Also the one way a
//! test picks a port for a server it starts ([`free_port`]).
//!
//! The deadline is real time, so a test under paused tokio time still ends.
#![deny(missing_docs, unreachable_pub, unsafe_code)]

use std::future::Future;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// How long any single expected event may take in a test.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// How often a condition is checked again.
const POLL: Duration = Duration::from_millis(5);

/// Polls `check` until it answers `Ok`, for at most `deadline`; panics with
/// `what` and the last `Err` after that.
pub async fn eventually_within<T, F, Fut>(what: &str, deadline: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let end = Instant::now() + deadline;
    loop {
        match check().await {
            Ok(v) => return v,
            Err(last) if Instant::now() >= end => {
                panic!("{what}: still not true after {deadline:?}: {last}")
            }
            Err(_) => tokio::time::sleep(POLL).await,
        }
    }
}

/// [`eventually_within`] the default [`DEADLINE`].
pub async fn eventually<T, F, Fut>(what: &str, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    eventually_within(what, DEADLINE, check).await
}

/// Waits until `cond` holds, for at most [`DEADLINE`].
pub async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    eventually(what, || {
        let held = cond();
        async move { held.then_some(()).ok_or_else(|| "no".to_string()) }
    })
    .await
}

/// Ports handed out start here and stay below the kernel's ephemeral range
/// (32768 and up on Linux), from which port 0 binds and outgoing
/// connections draw: a port taken that way could be grabbed by any
/// connection between our check and the server binding it (a node once
/// failed to start with "Address already in use").
const PORT_LOW: u32 = 20_000;
const PORT_SPAN: u32 = 12_000;

/// A loopback port that is free now and that this process has not handed
/// out before (tests in one binary run at once; a port released by one
/// must not be picked again by another before its server binds it). The
/// walk starts at a point drawn from the process id, so concurrent test
/// processes start apart.
pub fn free_port() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let _ = NEXT.compare_exchange(
        u32::MAX,
        (std::process::id().wrapping_mul(7919)) % PORT_SPAN,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    for _ in 0..PORT_SPAN {
        let n = NEXT.fetch_add(1, Ordering::SeqCst) % PORT_SPAN;
        let port = (PORT_LOW + n) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {PORT_LOW}..{}", PORT_LOW + PORT_SPAN)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn returns_once_the_check_holds() {
        let mut n = 0;
        let got = eventually("third try", || {
            n += 1;
            let n = n;
            async move {
                if n >= 3 {
                    Ok(n)
                } else {
                    Err(format!("try {n}"))
                }
            }
        })
        .await;
        assert_eq!(got, 3);
    }

    #[tokio::test]
    #[should_panic(expected = "never: still not true after")]
    async fn fails_with_the_last_answer_after_the_deadline() {
        eventually_within("never", Duration::from_millis(30), || async {
            Err::<(), _>("nope".to_string())
        })
        .await;
    }

    #[test]
    fn ports_are_below_the_ephemeral_range_and_never_handed_out_twice() {
        let ports: Vec<u16> = (0..50).map(|_| super::free_port()).collect();
        let distinct: std::collections::HashSet<&u16> = ports.iter().collect();
        assert_eq!(distinct.len(), ports.len());
        assert!(ports.iter().all(|p| (20_000..32_000).contains(p)));
    }
}
