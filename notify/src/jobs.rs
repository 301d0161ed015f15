//! What an outbox job asks for, as the store keeps it (MessagePack: a newer
//! build may add fields; an older one skips a job it cannot read as done,
//! rather than failing its shard forever).

use chat_protocol::{ConversationId, MessageId, UserId};
use serde::{Deserialize, Serialize};

/// One unit of work.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Work {
    /// A Web Push of one message to one of a member's subscriptions.
    Push {
        /// The member.
        user: UserId,
        /// Which of their subscriptions.
        subscription: String,
        /// The message's conversation.
        conversation: ConversationId,
        /// The message.
        message: MessageId,
        /// `Urgency: high` (direct messages, mentions).
        urgent: bool,
        /// Given up after this (Unix ms): the push's TTL from when the
        /// message was stored.
        expires_ms: u64,
    },
    /// A webhook delivery.
    Webhook {
        /// The hook's name.
        hook: String,
        /// The event (`X-Chat-Event`).
        event: String,
        /// Its unique id (`X-Chat-Delivery`), the same on every attempt.
        delivery: String,
        /// The JSON body, the same on every attempt.
        body: String,
    },
    /// Mail `user` the messages waiting in their digest.
    Digest {
        /// Whose digest.
        user: UserId,
    },
    /// Mail the owner of `address`, if a user verified it, a link that
    /// sets a new password. Made for any address asked (the answer says
    /// nothing of accounts); the worker looks the owner up.
    ResetPassword {
        /// The address as typed (lower case).
        address: String,
    },
    /// Mail `address` a link that proves it is `user`'s.
    VerifyEmail {
        /// Whose address.
        user: UserId,
        /// The address as set when the job was made (a newer one makes
        /// this job moot).
        address: String,
    },
    /// Bring the search index up to date with a conversation's changes.
    Index {
        /// Which.
        conversation: ConversationId,
    },
}

impl Work {
    /// The channel, for metrics.
    pub fn channel(&self) -> &'static str {
        match self {
            Work::Push { .. } => "push",
            Work::Digest { .. } | Work::VerifyEmail { .. } | Work::ResetPassword { .. } => "email",
            Work::Webhook { .. } => "webhook",
            Work::Index { .. } => "search",
        }
    }

    /// Orders a member's jobs due in one millisecond: a push by its
    /// message.
    pub fn order(&self) -> u64 {
        match self {
            Work::Push { message, .. } => message.0,
            Work::Digest { .. }
            | Work::VerifyEmail { .. }
            | Work::ResetPassword { .. }
            | Work::Webhook { .. }
            | Work::Index { .. } => 0,
        }
    }

    /// As stored.
    pub fn encode(&self) -> Vec<u8> {
        // Only strings and integers: encoding cannot fail.
        rmp_serde::to_vec_named(self).unwrap_or_default()
    }

    /// From storage.
    pub fn decode(bytes: &[u8]) -> Result<Work, rmp_serde::decode::Error> {
        rmp_serde::from_slice(bytes)
    }
}

/// A random job id.
pub fn job_id() -> u64 {
    rand::random()
}

/// The id of `user`'s digest job due at `due_ms`: the same for every job
/// due in one minute, so that adders racing on several nodes make one job,
/// not one each.
pub fn digest_job_id(user: &UserId, due_ms: u64) -> u64 {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(user.as_str().as_bytes());
    h.update((due_ms / 60_000).to_be_bytes());
    let digest = h.finalize();
    u64::from_be_bytes(digest[..8].try_into().unwrap_or_default())
}
