//! An update to a message (an edit, a delete, a reaction): what it changes,
//! as the writing task needs it, and as it waits for its batch.

use std::time::Instant;

use chat_protocol::{MessageId, UserId};

use crate::conn::ConnId;
use crate::msg::Reply;

/// What an update does to a message.
#[derive(Debug, Clone)]
pub(in crate::conversation) enum Change {
    /// A new body, and the members it mentions (parsed when the edit
    /// arrived, against the members then).
    Edit { body: String, mentions: Vec<UserId> },
    /// Delete.
    Delete,
    /// Add (`on`) or take back a reaction.
    React { emoji: String, on: bool },
}

/// An update as the writing task needs it.
#[derive(Debug, Clone)]
pub(super) struct UpdateSpec {
    pub(super) user: UserId,
    pub(super) target: MessageId,
    pub(super) change: Change,
    /// An owner or admin: deletes anyone's message.
    pub(super) moderates: bool,
}

/// An update waiting for its batch, or in flight.
pub(in crate::conversation) struct PendingUpdate {
    pub(super) spec: UpdateSpec,
    pub(super) origin: Option<ConnId>,
    pub(super) received: Instant,
    pub(super) reply: Option<Reply>,
}
