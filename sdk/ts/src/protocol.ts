// The wire types of protocol v1.2, generated from the Rust protocol crate
// (protocol/src/typescript.rs): do not edit. After a protocol change run
// `CHAT_WRITE_TS=1 cargo test -p chat-protocol --lib typescript`.

export type ClientFrame = { "type": "send", 
/**
 * Request id.
 */
req?: ReqId | null, 
/**
 * Target conversation.
 */
conversation: ConversationId, 
/**
 * Idempotency key: a retry returns the first message.
 */
client_msg_id: ClientMsgId, 
/**
 * The text.
 */
body: string, 
/**
 * `text` by default.
 */
kind: MessageKind, 
/**
 * The message this one answers.
 */
reply_to?: MessageId | null, 
/**
 * Media ids of the sender's uploads, at most
 * [`crate::media::MAX_ATTACHMENTS`].
 */
attachments?: Array<string>, } | { "type": "history", 
/**
 * Request id.
 */
req?: ReqId | null, 
/**
 * The conversation.
 */
conversation: ConversationId, 
/**
 * Only ids below this one (the newest such page).
 */
before?: MessageId | null, 
/**
 * Only ids above this one (the oldest such page): catching up.
 */
after?: MessageId | null, 
/**
 * 1 to 200, 50 by default.
 */
limit?: number | null, } | { "type": "typing", 
/**
 * Request id (typing is never answered).
 */
req?: ReqId | null, 
/**
 * The conversation.
 */
conversation: ConversationId, 
/**
 * Typing or not.
 */
active: boolean, } | { "type": "read", 
/**
 * Request id.
 */
req?: ReqId | null, 
/**
 * The conversation.
 */
conversation: ConversationId, 
/**
 * The newest message read.
 */
up_to: MessageId, } | { "type": "create", 
/**
 * Request id.
 */
req?: ReqId | null, 
/**
 * Direct, group or channel.
 */
kind: ConversationKind, 
/**
 * The other members (the creator is added).
 */
members: Array<UserId>, 
/**
 * An optional title.
 */
title?: string | null, } | { "type": "invite", 
/**
 * Request id.
 */
req?: ReqId | null, 
/**
 * The conversation.
 */
conversation: ConversationId, 
/**
 * Users to add.
 */
users: Array<UserId>, } | { "type": "kick", 
/**
 * Request id.
 */
req?: ReqId | null, 
/**
 * The conversation.
 */
conversation: ConversationId, 
/**
 * The member to remove.
 */
user: UserId, } | { "type": "role", 
/**
 * Request id.
 */
req?: ReqId | null, 
/**
 * The conversation.
 */
conversation: ConversationId, 
/**
 * The member.
 */
user: UserId, 
/**
 * Their new role.
 */
role: Role, } | { "type": "title", 
/**
 * Request id.
 */
req?: ReqId | null, 
/**
 * The conversation.
 */
conversation: ConversationId, 
/**
 * The new title; none clears it.
 */
title: string | null, } | { "type": "leave", 
/**
 * Request id.
 */
req?: ReqId | null, 
/**
 * The conversation.
 */
conversation: ConversationId, } | { "type": "conversations", 
/**
 * Request id.
 */
req?: ReqId | null, 
/**
 * Page size, 1 to 200, 50 by default.
 */
limit?: number | null, 
/**
 * Only conversations whose last activity id is below this one.
 */
before?: MessageId | null, } | { "type": "watch", 
/**
 * Request id.
 */
req?: ReqId | null, 
/**
 * Users to watch.
 */
users: Array<UserId>, } | { "type": "unwatch", 
/**
 * Request id.
 */
req?: ReqId | null, 
/**
 * Users to stop watching.
 */
users: Array<UserId>, } | { "type": "members", 
/**
 * Request id.
 */
req?: ReqId | null, 
/**
 * The conversation.
 */
conversation: ConversationId, 
/**
 * Only members whose id sorts after this one.
 */
after?: UserId | null, 
/**
 * 1 to 1000, 100 by default.
 */
limit?: number | null, } | { "type": "edit", 
/**
 * Request id.
 */
req?: ReqId | null, 
/**
 * The conversation.
 */
conversation: ConversationId, 
/**
 * Which message.
 */
message: MessageId, 
/**
 * The new text.
 */
body: string, } | { "type": "delete", 
/**
 * Request id.
 */
req?: ReqId | null, 
/**
 * The conversation.
 */
conversation: ConversationId, 
/**
 * Which message.
 */
message: MessageId, } | { "type": "react", 
/**
 * Request id.
 */
req?: ReqId | null, 
/**
 * The conversation.
 */
conversation: ConversationId, 
/**
 * Which message.
 */
message: MessageId, 
/**
 * 1 to 32 bytes.
 */
emoji: string, 
/**
 * Add (`true`) or take back.
 */
on: boolean, } | { "type": "changes", 
/**
 * Request id.
 */
req?: ReqId | null, 
/**
 * The conversation.
 */
conversation: ConversationId, 
/**
 * The last revision the client saw.
 */
after_rev: number, 
/**
 * 1 to 200, 100 by default.
 */
limit?: number | null, } | { "type": "ping", 
/**
 * Request id.
 */
req?: ReqId | null, };

export type ServerFrame = { "type": "ok" } & OkReply | { "type": "error", 
/**
 * The request this answers, if any.
 */
req?: ReqId | null, 
/**
 * What went wrong.
 */
code: ErrorCode, 
/**
 * A human-readable reason.
 */
message: string, 
/**
 * With `rate_limited`: when to try again.
 */
retry_after_ms?: number | null, } | { "type": "message", 
/**
 * The message.
 */
message: Message, } | { "type": "message_updated", 
/**
 * The message after the change.
 */
message: Message, } | { "type": "typing", 
/**
 * The conversation.
 */
conversation: ConversationId, 
/**
 * Who.
 */
user: UserId, 
/**
 * Typing or stopped.
 */
active: boolean, } | { "type": "receipt", 
/**
 * The conversation.
 */
conversation: ConversationId, 
/**
 * Who.
 */
user: UserId, 
/**
 * The newest message read.
 */
up_to: MessageId, 
/**
 * Always `read` for now.
 */
kind: ReceiptKind, } | { "type": "presence" } & Presence | { "type": "profile", 
/**
 * The profile.
 */
profile: Profile, } | { "type": "conversation", 
/**
 * The conversation as it is now.
 */
conversation: Conversation, } | { "type": "catch_up", 
/**
 * At most [`MAX_CATCH_UP_CONVERSATIONS`] per frame.
 */
conversations: Array<ConversationId>, } | { "type": "reaction", 
/**
 * The conversation.
 */
conversation: ConversationId, 
/**
 * The message reacted to.
 */
message: MessageId, 
/**
 * The message's (and the conversation's) revision after it.
 */
rev: number, 
/**
 * Who reacted.
 */
user: UserId, 
/**
 * Added or taken back.
 */
on: boolean, 
/**
 * The emoji's state now, as clients are shown it (`count` 0 and no
 * users once the last one took it back).
 */
reaction: Reaction, } | { "type": "membership", 
/**
 * Which conversation.
 */
conversation: ConversationId, 
/**
 * Members who joined or whose role changed.
 */
added: Array<Member>, 
/**
 * Members who left or were removed.
 */
removed: Array<UserId>, 
/**
 * How many members it has now.
 */
member_count: number, };

export type OkReply = { 
/**
 * The request this answers.
 */
req?: ReqId | null, 
/**
 * `send`: the stored message.
 */
message?: Message | null, 
/**
 * `history`: the page, ascending by id.
 */
messages?: Array<Message> | null, 
/**
 * `history`, `members`: whether more lie beyond the page.
 */
more?: boolean | null, 
/**
 * `create`, `invite`, `kick`: the conversation as it is now.
 */
conversation?: Conversation | null, 
/**
 * `members`: the page, ordered by user id.
 */
members?: Array<Member> | null, 
/**
 * `conversations`: the page.
 */
conversations?: Array<ConversationSummary> | null, 
/**
 * `watch`: the current presence of the watched users.
 */
presence?: Array<Presence> | null, 
/**
 * `changes`: the conversation's current revision.
 */
rev?: number | null, };

export type Message = { 
/**
 * Unique in the cluster, increasing within the conversation.
 */
id: MessageId, 
/**
 * The conversation it belongs to.
 */
conversation: ConversationId, 
/**
 * Who sent it.
 */
sender: UserId, 
/**
 * The text (or a media reference for other kinds).
 */
body: string, 
/**
 * `"text"` unless the client said otherwise.
 */
kind: MessageKind, 
/**
 * Acceptance time, server clock, Unix milliseconds.
 */
ts: number, 
/**
 * The sender's idempotency key.
 */
client_msg_id: ClientMsgId, 
/**
 * The message this one answers (of the same conversation).
 */
reply_to?: MessageId | null, 
/**
 * The conversation revision of this message's last change: its send,
 * or its latest edit, delete or reaction change. 0 for messages stored
 * before revisions existed.
 */
rev: number, 
/**
 * When it was last edited, Unix milliseconds.
 */
edited_at?: number | null, 
/**
 * Deleted: the body is empty and the reactions and mentions are gone.
 */
deleted: boolean, 
/**
 * Reactions, each emoji in the order it was first used.
 */
reactions: Array<Reaction>, 
/**
 * Members named with `@user` in the body, in order of first mention.
 */
mentions: Array<UserId>, 
/**
 * Files it carries (at most [`crate::media::MAX_ATTACHMENTS`]); gone
 * when it is deleted (the node then releases their bytes).
 */
attachments?: Array<Attachment>, };

export type Reaction = { 
/**
 * 1 to [`MAX_EMOJI_BYTES`] bytes.
 */
emoji: string, 
/**
 * How many users reacted with it.
 */
count: number, 
/**
 * Who, in the order they reacted. Stored with every reacting user (that
 * is what makes a reaction idempotent per user and lets the eleventh
 * move up when one of the first ten takes theirs back); clients are
 * shown the first [`SHOWN_REACTORS`] ([`Message::for_clients`]).
 */
users: Array<UserId>, };

export type Attachment = { 
/**
 * The media id.
 */
id: string, 
/**
 * The file's name as uploaded (cleaned of any path).
 */
name: string, 
/**
 * Sniffed from the bytes.
 */
content_type: string, 
/**
 * Bytes.
 */
size: number, 
/**
 * Images: pixels.
 */
width?: number | null, 
/**
 * Images: pixels.
 */
height?: number | null, 
/**
 * A signed link to the bytes; set when shown, never stored.
 */
url?: string | null, 
/**
 * Images: a signed link to the thumbnail; set when shown.
 */
thumbnail_url?: string | null, };

export type Conversation = { 
/**
 * Its id.
 */
id: ConversationId, 
/**
 * Direct, group or channel.
 */
kind: ConversationKind, 
/**
 * An optional title.
 */
title?: string | null, 
/**
 * Every member with its role, or, in a conversation of more than
 * [`INLINE_MEMBERS`] members, the first of them (page through the
 * rest with the `members` request).
 */
members: Array<Member>, 
/**
 * How many members it has (in what clients are shown; see
 * [`Conversation::for_clients`]).
 */
member_count?: number | null, 
/**
 * Creation time, Unix milliseconds.
 */
created_at: number, 
/**
 * Raised by every send, edit, delete and reaction change in it; 0 in
 * what the store returns (the conversation's actor knows the current
 * one and fills it in).
 */
rev: number, };

export type ConversationSummary = { 
/**
 * Its newest message, if any.
 */
last_message: Message | null, 
/**
 * Messages after the reader's read marker, sent by others.
 */
unread: number, 
/**
 * Of those, the ones that mention the reader.
 */
mentions: number, 
/**
 * What of it notifies the reader (added in 1.2; absent from older
 * servers' lists).
 */
notify?: ConversationNotify | null, 
/**
 * Its id.
 */
id: ConversationId, 
/**
 * Direct, group or channel.
 */
kind: ConversationKind, 
/**
 * An optional title.
 */
title?: string | null, 
/**
 * Every member with its role, or, in a conversation of more than
 * [`INLINE_MEMBERS`] members, the first of them (page through the
 * rest with the `members` request).
 */
members: Array<Member>, 
/**
 * How many members it has (in what clients are shown; see
 * [`Conversation::for_clients`]).
 */
member_count?: number | null, 
/**
 * Creation time, Unix milliseconds.
 */
created_at: number, 
/**
 * Raised by every send, edit, delete and reaction change in it; 0 in
 * what the store returns (the conversation's actor knows the current
 * one and fills it in).
 */
rev: number, };

export type Member = { 
/**
 * The member.
 */
user: UserId, 
/**
 * Its rights.
 */
role: Role, };

export type ConversationKind = "direct" | "group" | "channel";

export type Role = "owner" | "admin" | "member";

export type ConversationNotify = { 
/**
 * What notifies.
 */
level: NotifyLevel, 
/**
 * Nothing notifies before this (Unix ms).
 */
muted_until?: number | null, };

export type NotifyLevel = "all" | "mentions" | "none";

export type Presence = { 
/**
 * The user.
 */
user: UserId, 
/**
 * Online or offline.
 */
status: Status, 
/**
 * When the user was last online, Unix milliseconds, if known.
 */
last_seen?: number | null, };

export type Status = "online" | "offline";

export type Profile = { 
/**
 * Whose.
 */
id: UserId, 
/**
 * The name to show (the id when they set none).
 */
display_name: string, 
/**
 * A line of their own, if any.
 */
status_text?: string | null, 
/**
 * A media id (an image of theirs), if any.
 */
avatar?: string | null, 
/**
 * The avatar's thumbnail as a signed link (valid at least an hour),
 * for an `<img>`.
 */
avatar_url?: string | null, };

export type ReceiptKind = "read";

export type ErrorCode = "bad_request" | "unauthorized" | "forbidden" | "not_found" | "too_large" | "conflict" | "method_not_allowed" | "rate_limited" | "unavailable" | "internal" | "totp_required" | "quota_exceeded";

export type ReqId = number | number | string;

export type MessageId = string;

export type ConversationId = string;

export type UserId = string;

export type ClientMsgId = string;

export type MessageKind = string;
