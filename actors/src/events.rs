//! What a conversation tells the world beyond its members once a change is
//! stored: the node turns these into operators' webhooks. The actors only
//! call the trait; what listens is the node's business.

use chat_protocol::{Conversation, ConversationId, UserId};

/// Hears of stored conversation changes. Called on the conversation
/// actor's task: implementations hand the work off and return at once.
pub trait ConversationEvents: Send + Sync + 'static {
    /// A conversation was created (stored).
    fn created(&self, conversation: &Conversation);
    /// Members joined (invited, or added at creation) or left (left, or were
    /// kicked) a conversation; the change is stored.
    fn members_changed(&self, conversation: &ConversationId, joined: &[UserId], left: &[UserId]);
}

/// Nobody listens.
pub struct NoEvents;

impl ConversationEvents for NoEvents {
    fn created(&self, _: &Conversation) {}
    fn members_changed(&self, _: &ConversationId, _: &[UserId], _: &[UserId]) {}
}
