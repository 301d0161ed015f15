//! Group commit for the embedded index: applies that arrive while a commit
//! runs share the next one.
//!
//! A tantivy commit writes a segment and syncs it: committing each apply
//! alone cost most of the index's time once many conversations were
//! indexed at once (the outbox runs 16 of them concurrently). Now an apply
//! adds its documents and its cursor under the writer's lock, numbered in
//! the order added, then waits until a commit covers its number: the first
//! waiter lingers (`LINGER`, for the others to add theirs) and
//! commits everything added by then, the others wait for that commit or
//! the next. A failed commit rolls back what it held, and every apply in
//! it gets the error (none of its documents or cursor stay).

use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};

use crate::SearchError;

/// How long the applier elected to commit waits for others to add theirs:
/// at most one commit per this, each as large as what arrived. Each commit
/// starts a segment (a fresh writer arena) that merges then fold in: at 5 ms
/// the index cost a node carrying 5,270 messages/s 6.6 us of its 15.4 per
/// delivery; at 50 ms, 10 % less of its CPU (bench/HISTORY.md, session 22).
/// Index jobs wait this long at most before their commit.
const LINGER: std::time::Duration = std::time::Duration::from_millis(50);

/// What has been added and what committed, by number.
#[derive(Default)]
struct State {
    added: u64,
    committed: u64,
    committing: bool,
    /// The last failed commit: the numbers it held, and why.
    failed: Option<(u64, u64, SearchError)>,
}

/// The commit schedule of one writer.
#[derive(Default)]
pub(super) struct Commits {
    state: Mutex<State>,
    done: Condvar,
}

impl Commits {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// An apply's documents are in the writer: its number. Called with the
    /// writer's lock held, so that numbers follow the writer's order.
    pub(super) fn added(&self) -> u64 {
        let mut s = self.lock();
        s.added += 1;
        s.added
    }

    /// Everything added is committed (a commit made outside the schedule,
    /// with the writer's lock held).
    pub(super) fn all_committed(&self) {
        let mut s = self.lock();
        s.committed = s.added;
        self.done.notify_all();
    }

    /// Waits until apply `n` is committed, committing when no one else is.
    /// `commit` takes the writer's lock, commits (rolling back on failure)
    /// and says how far it committed, read with that lock held.
    pub(super) fn wait(
        &self,
        n: u64,
        commit: impl Fn(&dyn Fn() -> u64) -> Result<u64, (u64, SearchError)>,
    ) -> Result<(), SearchError> {
        let mut s = self.lock();
        loop {
            // A failed commit's numbers count as passed (the next commit
            // starts after them), so the failure is looked at first.
            if let Some((from, to, e)) = &s.failed {
                if (*from..=*to).contains(&n) {
                    return Err(e.clone());
                }
            }
            if s.committed >= n {
                return Ok(());
            }
            if s.committing {
                s = self.done.wait(s).unwrap_or_else(PoisonError::into_inner);
                continue;
            }
            s.committing = true;
            let from = s.committed + 1;
            drop(s);
            // A commit holds the writer, so applies arriving meanwhile
            // cannot add theirs: wait a moment first, for them to join.
            std::thread::sleep(LINGER);
            let result = commit(&|| self.lock().added);
            s = self.lock();
            s.committing = false;
            match result {
                Ok(to) => s.committed = s.committed.max(to),
                Err((to, e)) => {
                    // Rolled back: what it held is gone, and the next
                    // commit starts after it.
                    s.committed = s.committed.max(to);
                    s.failed = Some((from, to, e));
                }
            }
            self.done.notify_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    #[test]
    fn concurrent_applies_share_commits_and_a_failure_reaches_its_own() {
        let commits = Arc::new(Commits::default());
        let writer = Arc::new(Mutex::new(()));
        let runs = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..16)
            .map(|_| {
                let (commits, writer, runs) = (commits.clone(), writer.clone(), runs.clone());
                std::thread::spawn(move || {
                    let n = {
                        let _w = writer.lock().unwrap();
                        commits.added()
                    };
                    commits.wait(n, |added| {
                        let _w = writer.lock().unwrap();
                        runs.fetch_add(1, Ordering::SeqCst);
                        std::thread::sleep(std::time::Duration::from_millis(5));
                        Ok(added())
                    })
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap().unwrap();
        }
        let commits_run = runs.load(Ordering::SeqCst);
        assert!(commits_run < 16, "{commits_run} commits for 16 applies");

        // A failing commit: its applies fail, a later one does not.
        let n = commits.added();
        let failed = commits.wait(n, |added| {
            Err((added(), SearchError::Unavailable("disk".into())))
        });
        assert!(failed.is_err());
        let m = commits.added();
        assert!(commits.wait(m, |added| Ok(added())).is_ok());
    }
}
