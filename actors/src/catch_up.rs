//! Telling clients to catch up whenever this node cannot vouch that every
//! change of a conversation reached them live.
//!
//! ```text
//!  Router (view changed) ──owners that changed──► after_view_change ─┐
//!  UserSession (an owner's InterestAck came late) ──► after_late_ack ─┴─► catch_up frames
//!                                                                       into the connections' queues
//! ```
//!
//! Live delivery rests on the owner of a conversation knowing that a
//! session here listens. Two moments break that promise, and the node sends
//! `catch_up` (docs/protocol.md) for the conversations concerned; the
//! client then asks `changes` from the last revision it saw:
//!
//! - A starting session waits `interest_ack_ms` at most for the owners to
//!   confirm its interest, then lets the client in. What an owner that
//!   confirms later accepted before it did reached the client neither live
//!   nor in the catch-up the client made at once; once the confirmation
//!   comes, everything after it is live, so a `catch_up` then closes the gap.
//! - The owner of a listened conversation changes (a node left, was cut
//!   off, came back or joined). An owner that died between acknowledging a
//!   message and fanning it out, or one cut off from this node while it kept
//!   accepting, delivered nothing here, and nobody will: the message is
//!   stored, so a `catch_up` lets the client fetch it. The new owner sends
//!   this node everything until it holds this node's interest under its own
//!   view, so what it accepts from then on is live.
//!
//! A `catch_up` may come when nothing was missed (an owner that handed over
//! cleanly); it costs the client one `changes` request per conversation.

use std::collections::HashMap;
use std::sync::Arc;

use chat_protocol::frame::MAX_CATCH_UP_CONVERSATIONS;
use chat_protocol::{ConversationId, ServerFrame, SharedFrame, UserId};

use crate::cluster::View;
use crate::conn::Delivery;
use crate::fanout::LocalSessions;
use crate::interest::Interest;
use crate::metrics::Metrics;

/// Where `catch_up` frames go, and what counts them.
pub struct CatchUp<'a> {
    /// The local sessions' connections.
    pub directory: &'a LocalSessions,
    /// Counts the frames queued.
    pub metrics: &'a Metrics,
}

impl CatchUp<'_> {
    /// `user`'s connections here are told to catch up on `conversations`.
    pub fn tell(&self, user: &UserId, conversations: &[ConversationId]) {
        for chunk in conversations.chunks(MAX_CATCH_UP_CONVERSATIONS) {
            let frame = ServerFrame::CatchUp {
                conversations: chunk.to_vec(),
            };
            let delivery = Delivery {
                frame: Arc::new(SharedFrame::new(frame)),
                skip_conn: None,
                trace: None,
            };
            let queued = self
                .directory
                .deliver(std::iter::once(user), std::slice::from_ref(&delivery));
            self.metrics.catch_ups.inc_by(queued);
        }
    }

    /// After this node's view went from `old` to `new`: every local listener
    /// of a conversation whose owner changed is told to catch up on it.
    /// Returns how many conversations that was.
    pub fn after_view_change(
        &self,
        me: &str,
        old: &View,
        new: &View,
        interest: &Interest,
    ) -> usize {
        let moved = interest.listened_where(|c| owner_in(old, me, c) != owner_in(new, me, c));
        let mut by_user: HashMap<&UserId, Vec<ConversationId>> = HashMap::new();
        for (conversation, listeners) in &moved {
            for user in listeners.iter() {
                by_user.entry(user).or_default().push(conversation.clone());
            }
        }
        for (user, conversations) in by_user {
            self.tell(user, &conversations);
        }
        moved.len()
    }
}

/// Who serves `conversation` in `view`, as [`crate::cluster::Cluster::owner`]
/// resolves it: a connected peer's name, or `None` for this node.
fn owner_in<'v>(view: &'v View, me: &str, conversation: &ConversationId) -> Option<&'v Arc<str>> {
    view.placement
        .owner(conversation)
        .filter(|n| ***n != *me && view.peers.contains_key(*n))
}

#[cfg(test)]
mod tests;
