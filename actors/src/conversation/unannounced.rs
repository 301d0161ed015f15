//! Sends whose write ended without a clear answer: the store failed, or
//! this node's lease ran out while it wrote. Each may be stored although
//! nobody was told, neither its sender (answered `unavailable`) nor the
//! members listening. The sender retries with the same `client_msg_id`;
//! when that retry finds the first write stored, the actor announces it
//! then, so the members get it live once, where otherwise it would reach
//! them only through `history`.
//!
//! Kept across a reload of the conversation (a lost and retaken claim),
//! which is how the retry usually meets it. A node that takes the
//! conversation over from a crashed or cut-off holder has no such record:
//! there, a message stored in the holder's last moments reaches members
//! through `history` and catch-up only.

use std::collections::VecDeque;

use chat_protocol::{ClientMsgId, MessageId, UserId};

/// Most sends remembered per conversation: a retry comes within seconds,
/// and past this the oldest are forgotten, bounding what a store outage
/// under a flood of sends can make it hold.
const MOST: usize = 256;

#[derive(Default)]
pub(super) struct Unannounced {
    /// Each attempt's key and the id it was given: only a message stored
    /// under one of those ids is unannounced (one found under another id
    /// was stored, and announced, by an earlier send).
    keys: VecDeque<(UserId, ClientMsgId, MessageId)>,
}

impl Unannounced {
    /// Notes a send, given id `id`, whose write may have landed
    /// unannounced.
    pub(super) fn note(&mut self, sender: &UserId, key: &ClientMsgId, id: MessageId) {
        if self.keys.len() == MOST {
            self.keys.pop_front();
        }
        self.keys.push_back((sender.clone(), key.clone(), id));
    }

    /// Whether `stored`, the message found under the send's key (`None`:
    /// the retry's own write was the first to land), was stored by a noted
    /// attempt. The key's attempts are forgotten either way: its retry
    /// settles it, announced now or by its own write.
    pub(super) fn settle(
        &mut self,
        sender: &UserId,
        key: &ClientMsgId,
        stored: Option<MessageId>,
    ) -> bool {
        if self.keys.is_empty() {
            return false;
        }
        let mut found = false;
        self.keys.retain(|(s, k, id)| {
            let this = s == sender && k == key;
            found |= this && Some(*id) == stored;
            !this
        });
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: u64) -> (UserId, ClientMsgId, MessageId) {
        (
            UserId::new("ann").expect("id"),
            ClientMsgId::new(&format!("k{i}")).expect("key"),
            MessageId(100 + i),
        )
    }

    #[test]
    fn only_a_message_stored_by_a_noted_attempt_is_unannounced() {
        let mut u = Unannounced::default();
        for i in 0..=MOST as u64 {
            let (s, k, id) = key(i);
            u.note(&s, &k, id);
        }
        let (s0, k0, id0) = key(0);
        assert!(!u.settle(&s0, &k0, Some(id0)), "the oldest fell off");
        let (s1, k1, id1) = key(1);
        assert!(u.settle(&s1, &k1, Some(id1)));
        assert!(!u.settle(&s1, &k1, Some(id1)), "settled once");
        // Stored under an id no noted attempt was given: an earlier send's.
        let (s2, k2, _) = key(2);
        assert!(!u.settle(&s2, &k2, Some(MessageId(1))));
        assert_eq!(u.keys.len(), MOST - 2, "each settled key is forgotten");
    }
}
