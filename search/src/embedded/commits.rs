//! Group commit for the embedded index: applies that arrive while a commit
//! runs share the next one.
//!
//! A tantivy commit writes a segment and syncs it, and each segment costs
//! again when merges fold it in: committing each apply alone cost most of
//! the index's time once many conversations were indexed at once. Now an
//! apply adds its documents and its cursor under the writer's lock,
//! numbered in the order added, then waits until a commit covers its
//! number. The first to wait starts a commit task: it lingers (`LINGER`,
//! for the others to add theirs) and commits everything added by then;
//! the others wait for that commit or the next. Waiting holds no thread
//! (many conversations are indexed at once, each waiting out the linger),
//! and the commit runs in a task of its own, so an apply whose caller
//! gives up cannot leave a commit half-started. A failed commit rolls back
//! what it held, and every apply in it gets the error (none of its
//! documents or cursor stay).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::Notify;

use crate::SearchError;

/// How long a commit waits for others to add theirs: at most one commit
/// per this, each as large as what arrived. Each commit starts a segment (a
/// fresh writer arena) that merges then fold in: at 5 ms the index cost a
/// node carrying 5,270 messages/s 6.6 us of its 15.4 per delivery; at 50 ms,
/// 10 % less of its CPU (bench/HISTORY.md, session 22). An apply waits this
/// long at most before its commit starts.
const LINGER: std::time::Duration = std::time::Duration::from_millis(50);

/// What a commit did: how far it committed, or that it failed, with the
/// numbers it held (read with the writer's lock held).
pub(super) type Committed = Result<u64, (u64, SearchError)>;

/// What has been added and what committed, by number.
#[derive(Default)]
struct State {
    added: u64,
    committed: u64,
    committing: bool,
    /// The last failed commits: the numbers each held, and why. Several:
    /// a waiter woken by one failure may not look before the next.
    failed: VecDeque<(u64, u64, SearchError)>,
}

/// Failed commits remembered for their waiters.
const FAILURES_KEPT: usize = 64;

/// The commit schedule of one writer.
#[derive(Default)]
pub(super) struct Commits {
    state: Mutex<State>,
    done: Notify,
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

    /// How many applies were added so far: what a commit made now covers,
    /// when read with the writer's lock held.
    pub(super) fn count(&self) -> u64 {
        self.lock().added
    }

    /// Everything added is committed (a commit made outside the schedule,
    /// with the writer's lock held).
    pub(super) fn all_committed(&self) {
        let mut s = self.lock();
        s.committed = s.added;
        drop(s);
        self.done.notify_waiters();
    }

    /// Waits until apply `n` is committed, starting a commit when none is
    /// under way. `commit` (run on the blocking pool) takes the writer's
    /// lock, commits (rolling back on failure) and says how far it
    /// committed, read with [`Commits::count`] under that lock.
    pub(super) async fn wait<C>(self: &Arc<Self>, n: u64, commit: C) -> Result<(), SearchError>
    where
        C: FnOnce(&Commits) -> Committed + Send + 'static,
    {
        let mut commit = Some(commit);
        loop {
            // Registered before the state is read: a commit ending between
            // the two still wakes this waiter.
            let notified = self.done.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut s = self.lock();
                // A failed commit's numbers count as passed (the next
                // commit starts after them), so the failure is looked at
                // first.
                if let Some((_, _, e)) = s
                    .failed
                    .iter()
                    .find(|(from, to, _)| (*from..=*to).contains(&n))
                {
                    return Err(e.clone());
                }
                if s.committed >= n {
                    return Ok(());
                }
                if !s.committing {
                    if let Some(commit) = commit.take() {
                        s.committing = true;
                        let from = s.committed + 1;
                        drop(s);
                        tokio::spawn(self.clone().run(from, commit));
                    }
                }
            }
            notified.await;
        }
    }

    /// One commit: the linger, the commit on the blocking pool, the state
    /// moved on and the waiters woken.
    async fn run<C>(self: Arc<Self>, from: u64, commit: C)
    where
        C: FnOnce(&Commits) -> Committed + Send + 'static,
    {
        // A commit holds the writer, so applies arriving meanwhile cannot
        // add theirs: wait a moment first, for them to join.
        tokio::time::sleep(LINGER).await;
        let me = self.clone();
        let result = match tokio::task::spawn_blocking(move || commit(&me)).await {
            Ok(result) => result,
            Err(e) => Err((
                self.count(),
                SearchError::Unavailable(format!("index commit failed: {e}")),
            )),
        };
        let mut s = self.lock();
        s.committing = false;
        match result {
            Ok(to) => s.committed = s.committed.max(to),
            Err((to, e)) => {
                // Rolled back: what it held is gone, and the next commit
                // starts after it.
                s.committed = s.committed.max(to);
                if s.failed.len() == FAILURES_KEPT {
                    s.failed.pop_front();
                }
                s.failed.push_back((from, to, e));
            }
        }
        drop(s);
        self.done.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_applies_share_commits_and_a_failure_reaches_its_own() {
        let commits = Arc::new(Commits::default());
        let writer = Arc::new(Mutex::new(()));
        let runs = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..64)
            .map(|_| {
                let (commits, writer, runs) = (commits.clone(), writer.clone(), runs.clone());
                tokio::spawn(async move {
                    let n = {
                        let _w = writer.lock().unwrap();
                        commits.added()
                    };
                    commits
                        .wait(n, move |c| {
                            let _w = writer.lock().unwrap();
                            runs.fetch_add(1, Ordering::SeqCst);
                            Ok(c.count())
                        })
                        .await
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        let commits_run = runs.load(Ordering::SeqCst);
        assert!(commits_run < 64, "{commits_run} commits for 64 applies");

        // A failing commit: its applies fail, a later one does not.
        let n = commits.added();
        let failed = commits
            .wait(n, |c| {
                Err((c.count(), SearchError::Unavailable("disk".into())))
            })
            .await;
        assert!(failed.is_err());
        let m = commits.added();
        assert!(commits.wait(m, |c| Ok(c.count())).await.is_ok());

        // Two failures before a waiter of the first looks: it still gets
        // its own.
        let first = commits.added();
        let failing = |c: &Commits| Err((c.count(), SearchError::Unavailable("disk".into())));
        assert!(commits.wait(first, failing).await.is_err());
        let second = commits.added();
        assert!(commits.wait(second, failing).await.is_err());
        assert!(commits.wait(first, |c| Ok(c.count())).await.is_err());
    }

    #[tokio::test]
    async fn a_waiter_that_gives_up_leaves_no_commit_half_started() {
        let commits = Arc::new(Commits::default());
        let n = commits.added();
        // Dropped while its commit lingers: the commit still runs.
        let gave_up = commits.wait(n, |c| Ok(c.count()));
        let _ = tokio::time::timeout(std::time::Duration::from_millis(1), gave_up).await;
        let m = commits.added();
        let next = commits.wait(m, |c| Ok(c.count()));
        tokio::time::timeout(std::time::Duration::from_secs(10), next)
            .await
            .expect("the next apply is committed")
            .expect("committed");
    }
}
