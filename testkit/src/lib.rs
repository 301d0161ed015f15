//! The one way a test of this workspace waits for something: poll a
//! condition until it holds, and fail with what was last seen once a
//! deadline passes. Never a bare sleep standing in for a condition (as
//! ractor's `periodic_check` in its `common_test.rs`).
//!
//! The deadline is real time, so a test under paused tokio time still ends.
#![deny(missing_docs, unreachable_pub, unsafe_code)]

use std::future::Future;
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
}
