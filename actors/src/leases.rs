//! This node's lease on a store that several nodes share: taken at start,
//! renewed every third of its term by one task (one lightweight
//! transaction, however many conversations the node holds), given up when
//! the node stops. Every conversation this node claims lives by it: a
//! conversation actor writes only while the node lease of the incarnation
//! that claimed it is valid, and abandons a write the moment it ends, so
//! that a node taking over after the lease (and the database's write
//! timeout) finds every write of this one landed or dropped.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chat_protocol::now_ms;
use chat_storage::{Lease, MessageStore, NodeLease, NodeLeaseGrant, NodeLeaseHolder, StoreError};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

/// The node lease as held now, and until when this node relies on it.
#[derive(Debug, Clone)]
struct Held {
    lease: NodeLease,
    /// The end of its term by this node's clock, less a fifth for the
    /// clocks' disagreement: no write runs after.
    valid_until: Instant,
}

impl Held {
    /// Whether writes may still rely on it.
    fn valid(&self) -> bool {
        Instant::now() < self.valid_until
    }
}

/// Claims to release once the grace for writes abandoned under them has
/// passed, each with when it was given up.
type Unreleased = Arc<Mutex<Vec<(Lease, Instant)>>>;

/// This node's lease, kept by a task.
pub struct NodeLeases {
    ttl: Option<Duration>,
    held: watch::Sender<Option<Held>>,
    stop: CancellationToken,
    task: Mutex<Option<JoinHandle<()>>>,
    store: Arc<dyn MessageStore>,
    unreleased: Unreleased,
}

impl NodeLeases {
    /// Starts keeping a lease for this process of `node` when `store` is shared by several
    /// nodes; inert otherwise. Needs a Tokio runtime.
    pub fn start(store: Arc<dyn MessageStore>, node: Arc<str>, metrics: Arc<Metrics>) -> Arc<Self> {
        let ttl = store.lease_ttl();
        let (held, _) = watch::channel(None);
        let leases = Arc::new(NodeLeases {
            ttl,
            held,
            stop: CancellationToken::new(),
            task: Mutex::new(None),
            store: store.clone(),
            unreleased: Unreleased::default(),
        });
        if let Some(ttl) = ttl {
            // Each process has a lease of its own: a restarted node (or a
            // second process given the same name by mistake) never renews
            // its predecessor's, and waits for that one's claims to be free.
            let holder = format!("{node}/{}-{}", std::process::id(), now_ms());
            let keeper = Keeper {
                store,
                node: holder.into(),
                metrics,
                ttl,
                held: leases.held.clone(),
                stop: leases.stop.clone(),
                unreleased: leases.unreleased.clone(),
                releasing: Arc::default(),
            };
            *leases.task() = Some(tokio::spawn(keeper.run()));
        }
        leases
    }

    fn task(&self) -> std::sync::MutexGuard<'_, Option<JoinHandle<()>>> {
        self.task.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether writes need a lease at all (a store shared by nodes).
    pub fn needed(&self) -> bool {
        self.ttl.is_some()
    }

    /// Until when writes under `incarnation`'s claims may run, if now.
    pub fn valid_until(&self, incarnation: u64) -> Option<Instant> {
        let held = self.held.borrow();
        let h = held.as_ref()?;
        (h.lease.incarnation == incarnation && h.valid()).then_some(h.valid_until)
    }

    /// The node lease, once valid, waiting for it at most `wait`.
    pub async fn wait_current(&self, wait: Duration) -> Option<NodeLease> {
        let mut watching = self.held.subscribe();
        let deadline = Instant::now() + wait;
        loop {
            let valid = watching
                .borrow_and_update()
                .as_ref()
                .filter(|h| h.valid())
                .map(|h| h.lease.clone());
            if valid.is_some() {
                return valid;
            }
            match tokio::time::timeout_at(deadline, watching.changed()).await {
                Ok(Ok(())) => {}
                _ => return None,
            }
        }
    }

    /// Resolves when the node lease of `incarnation` is no longer valid
    /// (its term ran out unrenewed, or it was lost or given up).
    async fn ended(&self, incarnation: u64) {
        let mut watching = self.held.subscribe();
        while let Some(until) = self.valid_until(incarnation) {
            tokio::select! {
                _ = tokio::time::sleep_until(until) => {}
                changed = watching.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
            }
        }
    }

    /// Runs `write` under the claim of node-lease `incarnation` (`None`:
    /// no lease is involved), abandoning it the moment that lease ends:
    /// then it answers `unavailable`, and what it wrote is unknown.
    pub async fn guarded<T>(
        &self,
        incarnation: Option<u64>,
        write: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let Some(incarnation) = incarnation else {
            return write.await;
        };
        tokio::select! {
            biased;
            done = write => done,
            () = self.ended(incarnation) => Err(StoreError::Unavailable(
                "this node's lease on the database ran out during the write".into(),
            )),
        }
    }

    /// Stops renewing and gives the lease up (a node stopping, after its
    /// conversation actors released their claims): it runs out now, and a
    /// claim left under it is free once the grace for writes abandoned
    /// under it has passed.
    pub async fn release(&self) {
        self.stop.cancel();
        let task = self.task().take();
        if let Some(task) = task {
            let _ = task.await;
        }
        let held = self.held.send_replace(None);
        if let Some(h) = held {
            let release = self.store.release_node_lease(&h.lease);
            match tokio::time::timeout(Duration::from_secs(2), release).await {
                Ok(Ok(())) => {
                    tracing::info!(incarnation = h.lease.incarnation, "node lease released")
                }
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "node lease not released; it runs out by itself")
                }
                Err(_) => tracing::warn!("node lease release timed out; it runs out by itself"),
            }
        }
    }
}

impl NodeLeaseHolder for NodeLeases {
    fn current(&self) -> Option<NodeLease> {
        let held = self.held.borrow();
        held.as_ref().filter(|h| h.valid()).map(|h| h.lease.clone())
    }

    fn release_later(&self, claim: Lease) {
        if self.ttl.is_some() {
            let mut unreleased = self
                .unreleased
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            unreleased.push((claim, Instant::now()));
        }
    }
}

/// The task that takes and renews the lease.
struct Keeper {
    store: Arc<dyn MessageStore>,
    node: Arc<str>,
    metrics: Arc<Metrics>,
    ttl: Duration,
    held: watch::Sender<Option<Held>>,
    stop: CancellationToken,
    unreleased: Unreleased,
    /// A batch of releases is running.
    releasing: Arc<AtomicBool>,
}

impl Keeper {
    async fn run(self) {
        let mut previous: Option<NodeLease> = None;
        let mut asked = Instant::now();
        while !self.stop.is_cancelled() {
            let current = self.held.borrow().clone();
            let pause = match current {
                None => self.take(&mut previous, &mut asked).await,
                Some(h) => self.renew(h, &mut previous, &mut asked).await,
            };
            tokio::select! {
                () = self.stop.cancelled() => break,
                () = tokio::time::sleep_until(pause) => {}
            }
        }
    }

    /// Takes the lease; when to act next.
    async fn take(&self, previous: &mut Option<NodeLease>, asked: &mut Instant) -> Instant {
        *asked = Instant::now();
        let grant = self
            .store
            .acquire_node_lease(&self.node, previous.as_ref())
            .await;
        match grant {
            Ok(NodeLeaseGrant::Granted(lease)) => {
                tracing::info!(incarnation = lease.incarnation, "node lease taken");
                self.held.send_replace(Some(Held {
                    lease,
                    valid_until: *asked + self.ttl - self.ttl / 5,
                }));
                *asked + self.ttl / 3
            }
            Ok(NodeLeaseGrant::Held { until_ms }) => {
                // An earlier process of this name may still be writing.
                let left = Duration::from_millis(until_ms.saturating_sub(now_ms()));
                tracing::info!(
                    wait_ms = left.as_millis() as u64,
                    "node lease held by an earlier process; waiting"
                );
                Instant::now() + left.clamp(Duration::from_millis(20), self.ttl)
            }
            Err(e) => {
                tracing::warn!(error = %e, "node lease not taken; trying again");
                Instant::now() + self.ttl / 5
            }
        }
    }

    /// Releases, off the renewals' path, the claims given up under `node`
    /// whose grace has passed; those of an incarnation that is gone are
    /// void already. One batch at a time.
    fn release_due(&self, node: &NodeLease) {
        if self.releasing.load(Ordering::Acquire) {
            return;
        }
        let grace = self.store.claim_grace();
        let due: Vec<(Lease, Instant)> = {
            let mut unreleased = self
                .unreleased
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            unreleased.retain(|(l, _)| l.incarnation == Some(node.incarnation));
            let (due, wait): (Vec<_>, Vec<_>) = unreleased
                .drain(..)
                .partition(|(_, since)| since.elapsed() >= grace);
            *unreleased = wait;
            due
        };
        if due.is_empty() {
            return;
        }
        self.releasing.store(true, Ordering::Release);
        let (store, unreleased, releasing) = (
            self.store.clone(),
            self.unreleased.clone(),
            self.releasing.clone(),
        );
        tokio::spawn(async move {
            for (claim, since) in due {
                if store.release_lease(&claim).await.is_err() {
                    let mut unreleased = unreleased.lock().unwrap_or_else(PoisonError::into_inner);
                    unreleased.push((claim, since));
                }
            }
            releasing.store(false, Ordering::Release);
        });
    }

    /// Renews the lease; when to act next.
    async fn renew(
        &self,
        h: Held,
        previous: &mut Option<NodeLease>,
        asked: &mut Instant,
    ) -> Instant {
        let at = Instant::now();
        match self.store.renew_node_lease(&h.lease).await {
            Ok(true) => {
                self.metrics.lease_renewals.inc();
                self.release_due(&h.lease);
                *asked = at;
                // Even when the answer came after the old term: no claim
                // is taken from a node lease without fencing it first,
                // which this renewal's success shows did not happen.
                self.held.send_replace(Some(Held {
                    valid_until: at + self.ttl - self.ttl / 5,
                    ..h
                }));
                at + self.ttl / 3
            }
            Ok(false) => {
                self.metrics.leases_lost.inc();
                tracing::warn!(
                    incarnation = h.lease.incarnation,
                    "node lease lost (fenced after it ran out); every claim under it is void"
                );
                self.held.send_replace(None);
                *previous = Some(h.lease);
                Instant::now()
            }
            Err(e) => {
                if !h.valid() {
                    tracing::warn!(error = %e, "node lease not renewed in time; writes wait for the next renewal");
                }
                // Soon again: a renewal that lands still keeps every claim.
                Instant::now() + self.ttl / 10
            }
        }
    }
}
