//! Frames: what a client sends ([`ClientFrame`]) and what the node sends back
//! ([`ServerFrame`]). Each request may carry a `req`; a request with a `req`
//! gets exactly one `ok` or `error` with the same `req`.

use std::sync::OnceLock;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::codec::{Codec, DecodeError, EncodeError};
use crate::conversation::{Conversation, ConversationKind, ConversationSummary, Member};
use crate::error::ErrorCode;
use crate::ids::{ClientMsgId, ConversationId, MessageId, ReqId, UserId};
use crate::limits::{self, Limits};
use crate::message::{Message, MessageKind, Reaction, MAX_EMOJI_BYTES};
use crate::presence::Presence;

/// A frame from a client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[cfg_attr(test, derive(ts_rs::TS))]
pub enum ClientFrame {
    /// Store a message and deliver it to the members.
    Send {
        /// Request id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        req: Option<ReqId>,
        /// Target conversation.
        conversation: ConversationId,
        /// Idempotency key: a retry returns the first message.
        client_msg_id: ClientMsgId,
        /// The text.
        body: String,
        /// `text` by default.
        #[serde(default)]
        kind: MessageKind,
        /// The message this one answers.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reply_to: Option<MessageId>,
        /// Media ids of the sender's uploads, at most
        /// [`crate::media::MAX_ATTACHMENTS`].
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        attachments: Vec<String>,
    },
    /// A page of history, ascending by id.
    History {
        /// Request id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        req: Option<ReqId>,
        /// The conversation.
        conversation: ConversationId,
        /// Only ids below this one (the newest such page).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        before: Option<MessageId>,
        /// Only ids above this one (the oldest such page): catching up.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        after: Option<MessageId>,
        /// 1 to 200, 50 by default.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit: Option<u32>,
    },
    /// The user is (or stopped) typing.
    Typing {
        /// Request id (typing is never answered).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        req: Option<ReqId>,
        /// The conversation.
        conversation: ConversationId,
        /// Typing or not.
        active: bool,
    },
    /// Move the user's read marker.
    Read {
        /// Request id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        req: Option<ReqId>,
        /// The conversation.
        conversation: ConversationId,
        /// The newest message read.
        up_to: MessageId,
    },
    /// Create a conversation.
    Create {
        /// Request id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        req: Option<ReqId>,
        /// Direct, group or channel.
        kind: ConversationKind,
        /// The other members (the creator is added).
        members: Vec<UserId>,
        /// An optional title.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        title: Option<String>,
    },
    /// Add members (owners and admins).
    Invite {
        /// Request id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        req: Option<ReqId>,
        /// The conversation.
        conversation: ConversationId,
        /// Users to add.
        users: Vec<UserId>,
    },
    /// Remove a member (owners and admins).
    Kick {
        /// Request id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        req: Option<ReqId>,
        /// The conversation.
        conversation: ConversationId,
        /// The member to remove.
        user: UserId,
    },
    /// Change a member's role (owners only; a 1.2 addition, also
    /// `PUT /v1/conversations/{id}/members/{user}`): `admin`, `member`, or
    /// `owner` to hand ownership over (the caller becomes an admin).
    Role {
        /// Request id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        req: Option<ReqId>,
        /// The conversation.
        conversation: ConversationId,
        /// The member.
        user: UserId,
        /// Their new role.
        role: crate::Role,
    },
    /// Set or clear a group's or channel's title (owners and admins; a 1.2
    /// addition, also `PATCH /v1/conversations/{id}`).
    Title {
        /// Request id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        req: Option<ReqId>,
        /// The conversation.
        conversation: ConversationId,
        /// The new title; none clears it.
        #[serde(default)]
        title: Option<String>,
    },
    /// Leave a conversation.
    Leave {
        /// Request id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        req: Option<ReqId>,
        /// The conversation.
        conversation: ConversationId,
    },
    /// The user's conversations, newest activity first.
    Conversations {
        /// Request id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        req: Option<ReqId>,
        /// Page size, 1 to 200, 50 by default.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit: Option<u32>,
        /// Only conversations whose last activity id is below this one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        before: Option<MessageId>,
    },
    /// Start receiving presence events for users.
    Watch {
        /// Request id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        req: Option<ReqId>,
        /// Users to watch.
        users: Vec<UserId>,
    },
    /// Stop receiving presence events for users.
    Unwatch {
        /// Request id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        req: Option<ReqId>,
        /// Users to stop watching.
        users: Vec<UserId>,
    },
    /// A page of a conversation's members, ordered by user id.
    Members {
        /// Request id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        req: Option<ReqId>,
        /// The conversation.
        conversation: ConversationId,
        /// Only members whose id sorts after this one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        after: Option<UserId>,
        /// 1 to 1000, 100 by default.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit: Option<u32>,
    },
    /// Change a message's body (its sender only).
    Edit {
        /// Request id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        req: Option<ReqId>,
        /// The conversation.
        conversation: ConversationId,
        /// Which message.
        message: MessageId,
        /// The new text.
        body: String,
    },
    /// Delete a message (its sender, or an owner or admin).
    Delete {
        /// Request id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        req: Option<ReqId>,
        /// The conversation.
        conversation: ConversationId,
        /// Which message.
        message: MessageId,
    },
    /// Add or take back a reaction.
    React {
        /// Request id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        req: Option<ReqId>,
        /// The conversation.
        conversation: ConversationId,
        /// Which message.
        message: MessageId,
        /// 1 to 32 bytes.
        emoji: String,
        /// Add (`true`) or take back.
        on: bool,
    },
    /// Every message whose state changed after a revision, ascending by
    /// `rev`: how a client learns of edits to messages it already has.
    Changes {
        /// Request id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        req: Option<ReqId>,
        /// The conversation.
        conversation: ConversationId,
        /// The last revision the client saw.
        after_rev: u64,
        /// 1 to 200, 100 by default.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit: Option<u32>,
    },
    /// Liveness check.
    Ping {
        /// Request id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        req: Option<ReqId>,
    },
}

/// Why a decoded frame is still not acceptable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// The code to answer with.
    pub code: ErrorCode,
    /// A human-readable reason.
    pub message: String,
}

fn reject(code: ErrorCode, message: impl Into<String>) -> Result<(), Rejection> {
    Err(Rejection {
        code,
        message: message.into(),
    })
}

fn check_page_limit(limit: Option<u32>) -> Result<(), Rejection> {
    match limit {
        Some(l) if l == 0 || l > limits::MAX_HISTORY_LIMIT => reject(
            ErrorCode::BadRequest,
            format!("limit must be 1 to {}", limits::MAX_HISTORY_LIMIT),
        ),
        _ => Ok(()),
    }
}

fn check_user_list(users: &[UserId], what: &str) -> Result<(), Rejection> {
    if users.len() > limits::MAX_MEMBERS_PER_REQUEST {
        return reject(
            ErrorCode::BadRequest,
            format!(
                "{what} may name at most {} users",
                limits::MAX_MEMBERS_PER_REQUEST
            ),
        );
    }
    Ok(())
}

/// The `req` field of any client frame, borrowed as `$frame` is.
macro_rules! req_field {
    ($frame:expr) => {
        match $frame {
            ClientFrame::Send { req, .. }
            | ClientFrame::History { req, .. }
            | ClientFrame::Typing { req, .. }
            | ClientFrame::Read { req, .. }
            | ClientFrame::Create { req, .. }
            | ClientFrame::Invite { req, .. }
            | ClientFrame::Kick { req, .. }
            | ClientFrame::Role { req, .. }
            | ClientFrame::Title { req, .. }
            | ClientFrame::Leave { req, .. }
            | ClientFrame::Conversations { req, .. }
            | ClientFrame::Watch { req, .. }
            | ClientFrame::Unwatch { req, .. }
            | ClientFrame::Members { req, .. }
            | ClientFrame::Edit { req, .. }
            | ClientFrame::Delete { req, .. }
            | ClientFrame::React { req, .. }
            | ClientFrame::Changes { req, .. }
            | ClientFrame::Ping { req } => req,
        }
    };
}

impl ClientFrame {
    /// The request id, if the client gave one.
    pub fn req(&self) -> Option<&ReqId> {
        self.req_slot().as_ref()
    }

    /// Sets (or clears) the request id.
    pub fn set_req(&mut self, id: Option<ReqId>) {
        *self.req_slot_mut() = id;
    }

    fn req_slot(&self) -> &Option<ReqId> {
        req_field!(self)
    }

    fn req_slot_mut(&mut self) -> &mut Option<ReqId> {
        req_field!(self)
    }

    /// The frame's wire type name.
    pub fn type_name(&self) -> &'static str {
        match self {
            ClientFrame::Send { .. } => "send",
            ClientFrame::History { .. } => "history",
            ClientFrame::Typing { .. } => "typing",
            ClientFrame::Read { .. } => "read",
            ClientFrame::Create { .. } => "create",
            ClientFrame::Invite { .. } => "invite",
            ClientFrame::Kick { .. } => "kick",
            ClientFrame::Role { .. } => "role",
            ClientFrame::Title { .. } => "title",
            ClientFrame::Leave { .. } => "leave",
            ClientFrame::Conversations { .. } => "conversations",
            ClientFrame::Watch { .. } => "watch",
            ClientFrame::Unwatch { .. } => "unwatch",
            ClientFrame::Members { .. } => "members",
            ClientFrame::Edit { .. } => "edit",
            ClientFrame::Delete { .. } => "delete",
            ClientFrame::React { .. } => "react",
            ClientFrame::Changes { .. } => "changes",
            ClientFrame::Ping { .. } => "ping",
        }
    }

    /// Checks what the types alone cannot: sizes and ranges.
    pub fn validate(&self, limits: &Limits) -> Result<(), Rejection> {
        match self {
            ClientFrame::Send { body, .. } | ClientFrame::Edit { body, .. }
                if body.len() > limits.max_body_bytes =>
            {
                reject(
                    ErrorCode::TooLarge,
                    format!(
                        "body is {} bytes, over the limit of {}",
                        body.len(),
                        limits.max_body_bytes
                    ),
                )
            }
            ClientFrame::Send { attachments, .. } if !attachments.is_empty() => {
                check_attachments(attachments)
            }
            ClientFrame::React { emoji, .. } if !crate::message::is_reaction_emoji(emoji) => {
                reject(
                    ErrorCode::BadRequest,
                    format!("emoji must be one Unicode emoji of at most {MAX_EMOJI_BYTES} bytes"),
                )
            }
            ClientFrame::Changes { limit, .. } => check_page_limit(*limit),
            ClientFrame::Send { kind, .. } if kind.is_reserved() => reject(
                ErrorCode::BadRequest,
                format!("kind {} is the server's", kind.as_str()),
            ),
            ClientFrame::History { limit, .. } | ClientFrame::Conversations { limit, .. } => {
                check_page_limit(*limit)
            }
            ClientFrame::Create {
                kind,
                members,
                title,
                ..
            } => {
                check_user_list(members, "create")?;
                if *kind == ConversationKind::Direct && members.len() != 1 {
                    return reject(
                        ErrorCode::BadRequest,
                        "a direct conversation takes exactly one other user",
                    );
                }
                check_title(title.as_deref())
            }
            ClientFrame::Title { title, .. } => check_title(title.as_deref()),
            ClientFrame::Invite { users, .. } => check_user_list(users, "invite"),
            ClientFrame::Members { limit, .. } => match limit {
                Some(l) if *l == 0 || *l as usize > limits::MAX_MEMBERS_PER_REQUEST => reject(
                    ErrorCode::BadRequest,
                    format!("limit must be 1 to {}", limits::MAX_MEMBERS_PER_REQUEST),
                ),
                _ => Ok(()),
            },
            ClientFrame::Watch { users, .. } | ClientFrame::Unwatch { users, .. } => {
                check_user_list(users, "watch")
            }
            _ => Ok(()),
        }
    }
}

/// At most [`crate::media::MAX_ATTACHMENTS`] media ids, each well formed
/// and named once.
fn check_attachments(ids: &[String]) -> Result<(), Rejection> {
    use crate::media::{is_media_id, MAX_ATTACHMENTS};
    if ids.len() > MAX_ATTACHMENTS {
        return reject(
            ErrorCode::BadRequest,
            format!("at most {MAX_ATTACHMENTS} attachments"),
        );
    }
    for (i, id) in ids.iter().enumerate() {
        if !is_media_id(id) {
            return reject(ErrorCode::BadRequest, "attachments must be media ids");
        }
        if ids[..i].contains(id) {
            return reject(ErrorCode::BadRequest, "an attachment is named twice");
        }
    }
    Ok(())
}

// Here rather than in codec.rs, beside the other methods on Codec, so that
// codec stays below the frames it encodes instead of importing them back.
impl Codec {
    /// Decodes a client frame.
    pub fn decode_client(self, bytes: &[u8]) -> Result<ClientFrame, DecodeError> {
        self.decode(bytes)
    }
}

/// The fields an `ok` reply may carry; which ones depends on the request.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct OkReply {
    /// The request this answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub req: Option<ReqId>,
    /// `send`: the stored message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<Message>,
    /// `send`: the stored message as its conversation holds it, encoded as
    /// `message` from the JSON made once for it (a reply has one or the
    /// other). Never decoded: what a client or peer reads is `message`.
    #[serde(
        default,
        rename(serialize = "message"),
        skip_deserializing,
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(test, ts(skip))]
    pub held_message: Option<std::sync::Arc<crate::HeldMessage>>,
    /// `history`: the page, ascending by id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub messages: Option<Vec<Message>>,
    /// `history`: a page served from the messages a conversation holds in
    /// memory, encoded as `messages` (a reply has one or the other). Never
    /// decoded: what a client or peer reads is `messages`.
    #[serde(
        default,
        rename(serialize = "messages"),
        skip_deserializing,
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(test, ts(skip))]
    pub held: Option<crate::HeldPage>,
    /// `history`, `members`: whether more lie beyond the page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub more: Option<bool>,
    /// `create`, `invite`, `kick`: the conversation as it is now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversation: Option<Conversation>,
    /// `members`: the page, ordered by user id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub members: Option<Vec<Member>>,
    /// `conversations`: the page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversations: Option<Vec<ConversationSummary>>,
    /// `watch`: the current presence of the watched users.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub presence: Option<Vec<Presence>>,
    /// `changes`: the conversation's current revision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rev: Option<u64>,
}

impl OkReply {
    /// The stored message of a `send`, in its client form, wherever it
    /// holds it.
    pub fn into_message(self) -> Option<Message> {
        match self.held_message {
            Some(m) => Some(m.for_clients().into_owned()),
            None => self.message,
        }
    }

    /// The page's messages, in their client form, wherever it holds them.
    pub fn into_messages(self) -> Option<Vec<Message>> {
        match self.held {
            Some(page) => Some(page.to_messages()),
            None => self.messages,
        }
    }
}

/// The kind of a receipt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(test, derive(ts_rs::TS))]
pub enum ReceiptKind {
    /// The user read up to the message.
    Read,
}

/// Most conversations one `catch_up` frame names; more go in more frames.
pub const MAX_CATCH_UP_CONVERSATIONS: usize = 1000;

/// A frame from the node.
// An `ok` is built once per reply and encoded at once (queues hold encoded
// bytes), so its size costs nothing held.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[cfg_attr(test, derive(ts_rs::TS))]
pub enum ServerFrame {
    /// A request succeeded.
    Ok(OkReply),
    /// A request (or the connection) failed.
    Error {
        /// The request this answers, if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        req: Option<ReqId>,
        /// What went wrong.
        code: ErrorCode,
        /// A human-readable reason.
        message: String,
        /// With `rate_limited`: when to try again.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry_after_ms: Option<u64>,
    },
    /// A new message in one of the user's conversations.
    Message {
        /// The message.
        message: Message,
    },
    /// A message was edited, deleted or reacted to: its whole new state.
    MessageUpdated {
        /// The message after the change.
        message: Message,
    },
    /// A member started or stopped typing.
    Typing {
        /// The conversation.
        conversation: ConversationId,
        /// Who.
        user: UserId,
        /// Typing or stopped.
        active: bool,
    },
    /// A member moved its read marker.
    Receipt {
        /// The conversation.
        conversation: ConversationId,
        /// Who.
        user: UserId,
        /// The newest message read.
        up_to: MessageId,
        /// Always `read` for now.
        kind: ReceiptKind,
    },
    /// A watched user's presence changed.
    Presence(Presence),
    /// Someone who shares a direct conversation or group with the user
    /// changed their profile: it as it is now. A 1.2 addition that older
    /// clients ignore.
    Profile {
        /// The profile.
        profile: crate::people::Profile,
    },
    /// A conversation the user is (or was) in was created or changed members.
    Conversation {
        /// The conversation as it is now.
        conversation: Conversation,
    },
    /// The node cannot vouch that every change of these conversations
    /// reached this connection live (an owner confirmed late that it
    /// delivers here, or the owner changed: a node left, joined or was cut
    /// off), so the client asks `changes` from the last `rev` it saw in
    /// each. May come when nothing was missed. A 1.2 addition: older
    /// clients ignore it and catch up on their next revision gap.
    CatchUp {
        /// At most [`MAX_CATCH_UP_CONVERSATIONS`] per frame.
        conversations: Vec<ConversationId>,
    },
    /// A reaction was added or taken back: the one emoji's state, not the
    /// whole message (which a reaction toggle would otherwise send to every
    /// member). A 1.1 addition that older clients may ignore: they see a
    /// revision gap at their next event and catch up with `changes`.
    Reaction {
        /// The conversation.
        conversation: ConversationId,
        /// The message reacted to.
        message: MessageId,
        /// The message's (and the conversation's) revision after it.
        rev: u64,
        /// Who reacted.
        user: UserId,
        /// Added or taken back.
        on: bool,
        /// The emoji's state now, as clients are shown it (`count` 0 and no
        /// users once the last one took it back).
        reaction: Reaction,
    },
    /// The members of a conversation of more than
    /// [`crate::conversation::INLINE_MEMBERS`] changed: the change alone,
    /// not the whole list (which would cost every member the whole list
    /// per change).
    Membership {
        /// Which conversation.
        conversation: ConversationId,
        /// Members who joined or whose role changed.
        added: Vec<Member>,
        /// Members who left or were removed.
        removed: Vec<UserId>,
        /// How many members it has now.
        member_count: u32,
    },
}

impl ServerFrame {
    /// An `ok` with only the `req`.
    pub fn ok(req: Option<ReqId>) -> Self {
        ServerFrame::Ok(OkReply {
            req,
            ..OkReply::default()
        })
    }

    /// An `error` frame.
    pub fn error(req: Option<ReqId>, code: ErrorCode, message: impl Into<String>) -> Self {
        ServerFrame::Error {
            req,
            code,
            message: message.into(),
            retry_after_ms: None,
        }
    }
}

/// A server frame shared by many connections (a fan-out event): it is encoded
/// at most once per codec, however many connections receive it.
#[derive(Debug)]
pub struct SharedFrame {
    frame: ServerFrame,
    json: OnceLock<Bytes>,
    msgpack: OnceLock<Bytes>,
}

impl SharedFrame {
    /// Wraps a frame.
    pub fn new(frame: ServerFrame) -> Self {
        SharedFrame {
            frame,
            json: OnceLock::new(),
            msgpack: OnceLock::new(),
        }
    }

    /// The frame.
    pub fn frame(&self) -> &ServerFrame {
        &self.frame
    }

    /// The `message` event of a held message, whose JSON is the one the
    /// message holds spliced in: a message is encoded once for its event,
    /// its acknowledgement and the pages that list it.
    pub fn message_event(held: &crate::HeldMessage) -> Self {
        let shared = SharedFrame::new(ServerFrame::Message {
            message: held.for_clients().into_owned(),
        });
        if let Some(raw) = held.json() {
            const HEAD: &[u8] = br#"{"type":"message","message":"#;
            let raw = raw.get().as_bytes();
            let mut json = Vec::with_capacity(HEAD.len() + raw.len() + 1);
            json.extend_from_slice(HEAD);
            json.extend_from_slice(raw);
            json.push(b'}');
            let _ = shared.json.set(Bytes::from(json));
        }
        shared
    }

    /// The frame encoded with `codec`, encoding it on first use.
    pub fn encoded(&self, codec: Codec) -> Result<Bytes, EncodeError> {
        let cell = match codec {
            Codec::Json => &self.json,
            Codec::MsgPack => &self.msgpack,
        };
        if let Some(b) = cell.get() {
            return Ok(b.clone());
        }
        let bytes = Bytes::from(codec.encode(&self.frame)?);
        Ok(cell.get_or_init(|| bytes).clone())
    }
}

/// A title's limits: its length, and no control characters.
fn check_title(title: Option<&str>) -> Result<(), Rejection> {
    let Some(title) = title else { return Ok(()) };
    if title.len() > limits::MAX_TITLE_BYTES {
        return reject(
            ErrorCode::TooLarge,
            format!("title is over {} bytes", limits::MAX_TITLE_BYTES),
        );
    }
    if title.chars().any(char::is_control) {
        return reject(
            ErrorCode::BadRequest,
            "title may not hold control characters",
        );
    }
    Ok(())
}
