//! The outbox's bounds: all its jobs together (`queue_limit`, each shard a
//! share of it) and each member's pushes (`user_queue_limit`), so that
//! neither push services that are down nor one member in a thousand busy
//! rooms grow the store without end. Past a bound new work is dropped and
//! counted, never blocking the messages that caused it.
//!
//! A shard's total is counted from the store every tenth pass. A member's
//! pushes are counted here as this node queues and finishes them; a shard
//! that moves to this node brings jobs it did not count, so a member may
//! briefly hold up to twice the limit after a failover.

use std::collections::HashMap;
use std::sync::Mutex;

use chat_storage::{Job, OUTBOX_SHARDS};

/// Why a job was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Full {
    /// The outbox (this shard's share of it).
    Queue,
    /// The member's pushes.
    Member,
}

#[derive(Default)]
struct Counts {
    /// Jobs waiting per shard: the last count plus what was admitted since.
    shards: Vec<u64>,
    /// Pushes waiting per member, as this node queued and finished them.
    members: HashMap<String, u64>,
}

pub(crate) struct Admission {
    queue_limit: u64,
    member_limit: u64,
    counts: Mutex<Counts>,
}

impl Admission {
    pub(crate) fn new(queue_limit: u64, member_limit: u64) -> Admission {
        Admission {
            queue_limit,
            member_limit,
            counts: Mutex::new(Counts {
                shards: vec![0; OUTBOX_SHARDS as usize],
                members: HashMap::new(),
            }),
        }
    }

    fn counts(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes `job` into the counts if it fits; `push` says whether it is
    /// a member's push (the member bound applies to those only: webhooks
    /// have dead letters, digests are one per member).
    pub(crate) fn admit(&self, job: &Job, push: bool) -> Result<(), Full> {
        let share = (self.queue_limit / u64::from(OUTBOX_SHARDS)).max(1);
        let mut c = self.counts();
        let Counts { shards, members } = &mut *c;
        let shard = shards.get_mut(job.shard as usize).ok_or(Full::Queue)?;
        if *shard >= share {
            return Err(Full::Queue);
        }
        if push {
            let held = members.entry(job.key.clone()).or_default();
            if *held >= self.member_limit.max(1) {
                return Err(Full::Member);
            }
            *held += 1;
        }
        *shard += 1;
        Ok(())
    }

    /// `job` (a push when `push`) left the store.
    pub(crate) fn release(&self, job: &Job, push: bool) {
        let mut c = self.counts();
        if let Some(n) = c.shards.get_mut(job.shard as usize) {
            *n = n.saturating_sub(1);
        }
        if push {
            if let Some(n) = c.members.get_mut(&job.key) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    c.members.remove(&job.key);
                }
            }
        }
    }

    /// The store's count of `shard`'s jobs.
    pub(crate) fn counted(&self, shard: u32, waiting: u64) {
        if let Some(n) = self.counts().shards.get_mut(shard as usize) {
            *n = waiting;
        }
    }

    /// Forgets the totals of shards this node does not work (what it
    /// admitted to them before they moved is all it knew).
    pub(crate) fn forget_others(&self, owned: &[u32]) {
        for (shard, n) in self.counts().shards.iter_mut().enumerate() {
            if !owned.contains(&(shard as u32)) {
                *n = 0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(key: &str) -> Job {
        Job::new(key, 0, rand_id(), Vec::new())
    }

    fn rand_id() -> u64 {
        use std::sync::atomic::{AtomicU64, Ordering};
        static N: AtomicU64 = AtomicU64::new(0);
        N.fetch_add(1, Ordering::Relaxed)
    }

    #[test]
    fn a_member_past_their_limit_is_refused_others_are_not() {
        let a = Admission::new(1_000_000, 3);
        let held: Vec<Job> = (0..3).map(|_| job("ann")).collect();
        for j in &held {
            assert_eq!(a.admit(j, true), Ok(()));
        }
        assert_eq!(a.admit(&job("ann"), true), Err(Full::Member));
        assert_eq!(a.admit(&job("bob"), true), Ok(()));
        // Webhook jobs (not pushes) are bounded by the queue only.
        assert_eq!(a.admit(&job("ann"), false), Ok(()));
        a.release(&held[0], true);
        assert_eq!(a.admit(&job("ann"), true), Ok(()));
    }

    #[test]
    fn a_full_shard_refuses_and_a_count_resets_it() {
        let a = Admission::new(u64::from(OUTBOX_SHARDS) * 2, 100);
        let first = job("cat");
        let shard = first.shard;
        let same: Vec<Job> = std::iter::successors(Some(first), |_| Some(job("cat")))
            .take(3)
            .collect();
        assert_eq!(a.admit(&same[0], false), Ok(()));
        assert_eq!(a.admit(&same[1], false), Ok(()));
        assert_eq!(a.admit(&same[2], false), Err(Full::Queue));
        a.counted(shard, 0);
        assert_eq!(a.admit(&same[2], false), Ok(()));
    }

    #[test]
    fn members_with_nothing_waiting_are_forgotten() {
        let a = Admission::new(1_000_000, 10);
        let j = job("dan");
        a.admit(&j, true).unwrap();
        a.release(&j, true);
        assert!(a.counts().members.is_empty());
    }
}
