//! A client's request to one conversation, as the node that read the frame
//! hands it to the conversation's actor: on this node, or on the owner node
//! in this same form inside a peer message ([`crate::peer::PeerMsg`]). Its
//! variant names are a wire identity too: add, never rename.

use serde::{Deserialize, Serialize};

use crate::{
    limits, ClientFrame, ClientMsgId, ConversationId, ConversationKind, MessageId, MessageKind,
    UserId,
};

/// Members a `members` page holds when the client gives no limit.
pub const DEFAULT_MEMBERS_PAGE: u32 = 100;

/// A client's request to one conversation: what the node that reads the
/// frame hands to the conversation's actor, on this node or, in this form on
/// the wire, on the owner node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ConversationRequest {
    /// `send`.
    Send {
        /// Which conversation.
        conversation: ConversationId,
        /// The sender's idempotency key.
        client_msg_id: ClientMsgId,
        /// The text.
        body: String,
        /// The kind.
        kind: MessageKind,
        /// The message answered.
        reply_to: Option<MessageId>,
        /// Media ids of the sender's uploads.
        attachments: Vec<String>,
    },
    /// `history`.
    History {
        /// Which conversation.
        conversation: ConversationId,
        /// Only ids below.
        before: Option<MessageId>,
        /// Only ids above.
        after: Option<MessageId>,
        /// Page size.
        limit: u32,
    },
    /// `typing` (no reply).
    Typing {
        /// Which conversation.
        conversation: ConversationId,
        /// Started or stopped.
        active: bool,
    },
    /// `read`.
    Read {
        /// Which conversation.
        conversation: ConversationId,
        /// The newest message read.
        up_to: MessageId,
    },
    /// `create`; the id was chosen at the origin.
    Create {
        /// The new conversation's id.
        conversation: ConversationId,
        /// Its kind.
        kind: ConversationKind,
        /// The other members.
        members: Vec<UserId>,
        /// Its title.
        title: Option<String>,
    },
    /// `invite`.
    Invite {
        /// Which conversation.
        conversation: ConversationId,
        /// Who joins.
        users: Vec<UserId>,
    },
    /// `kick`.
    Kick {
        /// Which conversation.
        conversation: ConversationId,
        /// Who goes.
        user: UserId,
    },
    /// `role`: a member's new role.
    SetRole {
        /// The conversation.
        conversation: ConversationId,
        /// The member.
        user: UserId,
        /// Their new role.
        role: crate::Role,
    },
    /// `title`: the new title.
    SetTitle {
        /// The conversation.
        conversation: ConversationId,
        /// The title; none clears it.
        title: Option<String>,
    },
    /// An operator deletes a message (a report resolved): never made from
    /// a client's frame, only by a node for one of its admins, who need
    /// not be a member.
    OperatorDelete {
        /// The conversation.
        conversation: ConversationId,
        /// The message.
        message: MessageId,
    },
    /// `leave`.
    Leave {
        /// Which conversation.
        conversation: ConversationId,
    },
    /// `members`: a page of the member list.
    Members {
        /// Which conversation.
        conversation: ConversationId,
        /// Only members whose id sorts after this one.
        after: Option<UserId>,
        /// Page size.
        limit: u32,
    },
    /// `edit`.
    Edit {
        /// Which conversation.
        conversation: ConversationId,
        /// Which message.
        message: MessageId,
        /// The new text.
        body: String,
    },
    /// `delete`.
    Delete {
        /// Which conversation.
        conversation: ConversationId,
        /// Which message.
        message: MessageId,
    },
    /// `react`.
    React {
        /// Which conversation.
        conversation: ConversationId,
        /// Which message.
        message: MessageId,
        /// The emoji.
        emoji: String,
        /// Add or take back.
        on: bool,
    },
    /// `changes`.
    Changes {
        /// Which conversation.
        conversation: ConversationId,
        /// The last revision the client saw.
        after_rev: u64,
        /// Page size.
        limit: u32,
    },
}

impl ConversationRequest {
    /// The request a client frame makes of an existing conversation; the
    /// frame back for those that are not for one (`create` names no
    /// conversation until the node picks its id; lists, watches, pings).
    #[allow(clippy::result_large_err)] // moved, not copied: Err hands the frame back
    pub fn from_frame(frame: ClientFrame) -> Result<Self, ClientFrame> {
        Ok(match frame {
            ClientFrame::Send {
                conversation,
                client_msg_id,
                body,
                kind,
                reply_to,
                attachments,
                ..
            } => ConversationRequest::Send {
                conversation,
                client_msg_id,
                body,
                kind,
                reply_to,
                attachments,
            },
            ClientFrame::History {
                conversation,
                before,
                after,
                limit,
                ..
            } => ConversationRequest::History {
                conversation,
                before,
                after,
                limit: limit.unwrap_or(limits::DEFAULT_HISTORY_LIMIT),
            },
            ClientFrame::Typing {
                conversation,
                active,
                ..
            } => ConversationRequest::Typing {
                conversation,
                active,
            },
            ClientFrame::Read {
                conversation,
                up_to,
                ..
            } => ConversationRequest::Read {
                conversation,
                up_to,
            },
            ClientFrame::Invite {
                conversation,
                users,
                ..
            } => ConversationRequest::Invite {
                conversation,
                users,
            },
            ClientFrame::Kick {
                conversation, user, ..
            } => ConversationRequest::Kick { conversation, user },
            ClientFrame::Role {
                conversation,
                user,
                role,
                ..
            } => ConversationRequest::SetRole {
                conversation,
                user,
                role,
            },
            ClientFrame::Title {
                conversation,
                title,
                ..
            } => ConversationRequest::SetTitle {
                conversation,
                title: title.filter(|t| !t.trim().is_empty()),
            },
            ClientFrame::Leave { conversation, .. } => ConversationRequest::Leave { conversation },
            ClientFrame::Members {
                conversation,
                after,
                limit,
                ..
            } => ConversationRequest::Members {
                conversation,
                after,
                limit: limit.unwrap_or(DEFAULT_MEMBERS_PAGE),
            },
            ClientFrame::Edit {
                conversation,
                message,
                body,
                ..
            } => ConversationRequest::Edit {
                conversation,
                message,
                body,
            },
            ClientFrame::Delete {
                conversation,
                message,
                ..
            } => ConversationRequest::Delete {
                conversation,
                message,
            },
            ClientFrame::React {
                conversation,
                message,
                emoji,
                on,
                ..
            } => ConversationRequest::React {
                conversation,
                message,
                emoji,
                on,
            },
            ClientFrame::Changes {
                conversation,
                after_rev,
                limit,
                ..
            } => ConversationRequest::Changes {
                conversation,
                after_rev,
                limit: limit.unwrap_or(limits::DEFAULT_CHANGES_LIMIT),
            },
            other => return Err(other),
        })
    }

    /// Whether the request is answered (all but typing).
    pub fn expects_reply(&self) -> bool {
        !matches!(self, ConversationRequest::Typing { .. })
    }

    /// The conversation it is for.
    pub fn conversation(&self) -> &ConversationId {
        match self {
            ConversationRequest::Send { conversation, .. }
            | ConversationRequest::History { conversation, .. }
            | ConversationRequest::Typing { conversation, .. }
            | ConversationRequest::Read { conversation, .. }
            | ConversationRequest::Create { conversation, .. }
            | ConversationRequest::Invite { conversation, .. }
            | ConversationRequest::Kick { conversation, .. }
            | ConversationRequest::SetRole { conversation, .. }
            | ConversationRequest::SetTitle { conversation, .. }
            | ConversationRequest::OperatorDelete { conversation, .. }
            | ConversationRequest::Leave { conversation }
            | ConversationRequest::Members { conversation, .. }
            | ConversationRequest::Edit { conversation, .. }
            | ConversationRequest::Delete { conversation, .. }
            | ConversationRequest::React { conversation, .. }
            | ConversationRequest::Changes { conversation, .. } => conversation,
        }
    }

    /// About how many bytes it takes on the wire and in a queue: its
    /// strings plus a fixed allowance for the rest. What a node's budget of
    /// requests in flight to one peer counts, so that large bodies weigh
    /// more than small ones.
    pub fn weight(&self) -> usize {
        const FIXED: usize = 64;
        let strings = match self {
            ConversationRequest::Send {
                conversation,
                client_msg_id,
                body,
                attachments,
                ..
            } => {
                conversation.as_str().len()
                    + client_msg_id.as_str().len()
                    + body.len()
                    + attachments.len() * crate::media::MEDIA_ID_LEN
            }
            ConversationRequest::Create {
                conversation,
                members,
                title,
                ..
            } => {
                conversation.as_str().len()
                    + members.iter().map(|m| m.as_str().len() + 8).sum::<usize>()
                    + title.as_ref().map_or(0, String::len)
            }
            ConversationRequest::Invite {
                conversation,
                users,
            } => {
                conversation.as_str().len()
                    + users.iter().map(|u| u.as_str().len() + 8).sum::<usize>()
            }
            ConversationRequest::Kick { conversation, user }
            | ConversationRequest::SetRole {
                conversation, user, ..
            } => conversation.as_str().len() + user.as_str().len(),
            ConversationRequest::SetTitle {
                conversation,
                title,
            } => conversation.as_str().len() + title.as_ref().map_or(0, String::len),
            ConversationRequest::History { conversation, .. }
            | ConversationRequest::Typing { conversation, .. }
            | ConversationRequest::Read { conversation, .. }
            | ConversationRequest::OperatorDelete { conversation, .. }
            | ConversationRequest::Leave { conversation } => conversation.as_str().len(),
            ConversationRequest::Members {
                conversation,
                after,
                ..
            } => conversation.as_str().len() + after.as_ref().map_or(0, |a| a.as_str().len()),
            ConversationRequest::Edit {
                conversation, body, ..
            } => conversation.as_str().len() + body.len(),
            ConversationRequest::React {
                conversation,
                emoji,
                ..
            } => conversation.as_str().len() + emoji.len(),
            ConversationRequest::Delete { conversation, .. }
            | ConversationRequest::Changes { conversation, .. } => conversation.as_str().len(),
        };
        FIXED + strings
    }
}
