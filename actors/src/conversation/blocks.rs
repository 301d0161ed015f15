//! Blocking and privacy where a conversation is joined or written
//! (docs/protocol.md, "Blocking"): nobody starts a direct conversation with
//! someone who does not take them, or invites someone who blocked them,
//! and in a direct conversation a blocked member's sends are refused.
//! Group and channel messages still reach both.

use chat_protocol::{ConversationKind, UserId};
use tokio::time::{Duration, Instant};

use super::{ConversationState, DirectBlocks};
use crate::error::ChatError;

/// How long a direct conversation trusts what it read of its members'
/// blocks: a block or an unblock holds for its sends within this.
const DIRECT_BLOCKS_FOR: Duration = Duration::from_secs(2);

impl ConversationState {
    /// Refuses when one of `users` keeps `by` away: blocked them, or, for a
    /// direct conversation, takes direct messages from fewer people.
    pub(super) async fn check_admitted(
        &self,
        by: &UserId,
        users: &[UserId],
        direct: bool,
    ) -> Result<(), ChatError> {
        for user in users {
            let Some(r) = self.deps.store.relations(user).await? else {
                continue;
            };
            if direct && !r.admits_direct_from(by) {
                return Err(ChatError::Forbidden(format!(
                    "{user} does not take direct messages from you"
                )));
            }
            if r.blocks(by) {
                return Err(ChatError::Forbidden(format!(
                    "{user} cannot be invited by you"
                )));
            }
        }
        Ok(())
    }

    /// In a direct conversation, refuses a send from a member the other
    /// blocked (read again when older than [`DIRECT_BLOCKS_FOR`]).
    pub(super) async fn check_direct_send(&mut self, sender: &UserId) -> Result<(), ChatError> {
        let Some(c) = &self.conversation else {
            return Ok(());
        };
        if c.kind != ConversationKind::Direct {
            return Ok(());
        }
        let fresh = self
            .direct_blocks
            .read_at
            .is_some_and(|at| at.elapsed() < DIRECT_BLOCKS_FOR);
        if !fresh {
            let members: Vec<UserId> = c.members.iter().map(|m| m.user.clone()).collect();
            let mut refused = Vec::new();
            for (i, user) in members.iter().enumerate() {
                let Some(r) = self.deps.store.relations(user).await? else {
                    continue;
                };
                refused.extend(
                    members
                        .iter()
                        .enumerate()
                        .filter(|(j, other)| *j != i && r.blocks(other))
                        .map(|(_, other)| other.clone()),
                );
            }
            self.direct_blocks = DirectBlocks {
                read_at: Some(Instant::now()),
                refused,
            };
        }
        if self.direct_blocks.refused.contains(sender) {
            return Err(ChatError::Forbidden("you cannot write to this user".into()));
        }
        Ok(())
    }
}
