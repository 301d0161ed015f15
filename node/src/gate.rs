//! Futures a task polls again only after one of them woke it.
//!
//! A connection's reader and writer each wait on several things at once in
//! one `select!`: a socket, their queue, a close request, the node's
//! shutdown, timers. `select!` polls every branch each time the task runs,
//! and the task runs once per frame; most branches are rare events whose
//! poll is not free (a cancellation token takes a lock to answer "not yet",
//! a timer re-registers its waker). Measured at 2,500 messages/s, those
//! polls took about 3 % of the node's CPU. The futures a [`Gate`] wraps are
//! polled once, then again only after one of them fired its waker: between,
//! a poll is one atomic load. Each wrapped future costs an idle connection
//! a few words, so the reader wraps all its rare events in one.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Wake, Waker};

/// The rare events of one task.
pub struct Gate {
    signal: Arc<Signal>,
}

struct Signal {
    /// Raised by every wake of a wrapped future; starts at 1, so that a
    /// future that saw 0 has never been polled.
    wakes: AtomicU64,
    /// The task to wake.
    task: Mutex<Option<Waker>>,
}

impl Signal {
    fn task(&self) -> std::sync::MutexGuard<'_, Option<Waker>> {
        self.task.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Wake for Signal {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        // Counted before the task runs, so the poll it leads to sees it.
        self.wakes.fetch_add(1, Ordering::AcqRel);
        if let Some(task) = self.task().as_ref() {
            task.wake_by_ref();
        }
    }
}

impl Gate {
    /// A gate for the futures of one task.
    pub fn new() -> Self {
        Gate {
            signal: Arc::new(Signal {
                wakes: AtomicU64::new(1),
                task: Mutex::new(None),
            }),
        }
    }

    /// `inner`, polled at its first poll and then only after a wake of a
    /// future of this gate (any of them: they are few, and rare).
    pub fn wrap<F: Future>(&self, inner: F) -> Gated<F> {
        Gated {
            inner,
            signal: self.signal.clone(),
            task: None,
            seen: 0,
        }
    }
}

impl Default for Gate {
    fn default() -> Self {
        Self::new()
    }
}

pin_project_lite::pin_project! {
    /// A future of a [`Gate`].
    pub struct Gated<F> {
        #[pin]
        inner: F,
        // Made into the waker handed to `inner` (at its polls only, which
        // are rare): it counts the wake, then wakes the task. Every idle
        // connection holds its gated futures, so they carry nothing more.
        signal: Arc<Signal>,
        // The task's waker last stored in `signal`: unchanged, it is not
        // stored again.
        task: Option<Waker>,
        // The wakes counted at this future's last poll (0: never polled).
        seen: u64,
    }
}

impl<F: Future> Gated<F> {
    /// The wrapped future, to reset a timer in place; the next poll polls it.
    pub fn inner_mut(self: Pin<&mut Self>) -> Pin<&mut F> {
        let this = self.project();
        *this.seen = 0;
        this.inner
    }
}

impl<F: Future> Future for Gated<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        if !this.task.as_ref().is_some_and(|t| t.will_wake(cx.waker())) {
            *this.signal.task() = Some(cx.waker().clone());
            *this.task = Some(cx.waker().clone());
        }
        // Read before the poll: a wake during it counts one more, and the
        // next poll polls again.
        let wakes = this.signal.wakes.load(Ordering::Acquire);
        if *this.seen == wakes {
            return Poll::Pending;
        }
        *this.seen = wakes;
        let waker = Waker::from(this.signal.clone());
        this.inner.poll(&mut Context::from_waker(&waker))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, AtomicUsize};
    use std::time::Duration;

    /// What a probe saw: its polls, and the waker it was last polled with.
    #[derive(Default)]
    struct Seen {
        polls: AtomicUsize,
        ready: AtomicBool,
        waker: Mutex<Option<Waker>>,
    }

    /// Counts its polls; ready once `ready` is set.
    struct Probe(Arc<Seen>);

    impl Future for Probe {
        type Output = ();
        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            self.0.polls.fetch_add(1, Ordering::SeqCst);
            if self.0.ready.load(Ordering::SeqCst) {
                return Poll::Ready(());
            }
            *self.0.waker.lock().unwrap() = Some(cx.waker().clone());
            Poll::Pending
        }
    }

    fn probe() -> (Probe, Arc<Seen>) {
        let seen = Arc::new(Seen::default());
        (Probe(seen.clone()), seen)
    }

    #[tokio::test]
    async fn polls_its_futures_only_after_one_of_them_woke() {
        let gate = Gate::new();
        let (a, a_seen) = probe();
        let (b, b_seen) = probe();
        let a = gate.wrap(a);
        let b = gate.wrap(b);
        tokio::pin!(a, b);
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
        // Another branch wakes the task ten times: each probe is polled once.
        for _ in 0..10 {
            tx.send(()).unwrap();
            tokio::select! {
                biased;
                _ = &mut a => panic!("a is not ready yet"),
                _ = &mut b => panic!("b is not ready yet"),
                _ = rx.recv() => {}
            }
        }
        assert_eq!(a_seen.polls.load(Ordering::SeqCst), 1);
        assert_eq!(b_seen.polls.load(Ordering::SeqCst), 1);
        // A's own wake, from another task, gets both polled again, and a
        // is ready.
        a_seen.ready.store(true, Ordering::SeqCst);
        let w = a_seen.waker.lock().unwrap().take().unwrap();
        tokio::spawn(async move { w.wake() });
        let woke = tokio::time::timeout(Duration::from_secs(10), async {
            tokio::select! {
                biased;
                _ = &mut b => "b",
                _ = &mut a => "a",
            }
        })
        .await
        .expect("a's own wake must reach the task");
        assert_eq!(woke, "a");
        assert_eq!(a_seen.polls.load(Ordering::SeqCst), 2);
        assert_eq!(b_seen.polls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_reset_timer_is_polled_again() {
        let gate = Gate::new();
        let sleep = gate.wrap(tokio::time::sleep(Duration::from_secs(3600)));
        tokio::pin!(sleep);
        assert!(futures_util::FutureExt::now_or_never(sleep.as_mut()).is_none());
        sleep
            .as_mut()
            .inner_mut()
            .reset(tokio::time::Instant::now() + Duration::from_millis(1));
        tokio::time::timeout(Duration::from_secs(10), sleep)
            .await
            .expect("the timer, reset to fire at once, fires");
    }
}
