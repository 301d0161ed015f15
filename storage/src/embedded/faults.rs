//! Faults a test can ask the embedded store for (feature `faults`, never
//! in a release build): the ways a shared database answers that the
//! actors must survive, made to happen on a single machine's store.

use std::sync::atomic::{AtomicU32, Ordering};

/// The faults asked for and not yet given.
#[derive(Debug, Default)]
pub(super) struct Faults {
    /// Appends of new messages to write and then answer as failed.
    landed_unanswered: AtomicU32,
}

impl Faults {
    /// The next `n` appends of new messages are written and then answered
    /// as failed.
    pub(super) fn fail_appends_after_writing(&self, n: u32) {
        self.landed_unanswered.store(n, Ordering::SeqCst);
    }

    /// Whether this append is one to answer as failed after writing it.
    pub(super) fn take_landed_unanswered(&self) -> bool {
        self.landed_unanswered
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    }
}
