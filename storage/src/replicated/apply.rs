//! Applying an op: what each op does to the embedded store, the same code at
//! the origin and at every replica, as merges that converge whatever order
//! the ops arrive in (see the module documentation).

use chat_protocol::{now_ms, Conversation, ConversationId, Member, Message, MessageId, UserId};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::version::Version;
use crate::conversations::memberships;
use crate::embedded::{key_of, RefreshEffect, ReplicaTable, Txn, Writes};
use crate::outbox::NotifyCursor;
use crate::{corrupt, AuditEntry, ConversationChange, StoreError, UserFlag, UserRecord};

/// Longest token hash or family an op may carry: they are keys, and a key
/// part must fit its u16 length prefix; real ones are 64 hex digits.
pub(super) const MAX_KEY_STRING: usize = 1024;

/// What an op does. The variant names and field names are the wire format
/// (encoded as maps): add variants and defaulted fields, never rename.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) enum StoreOp {
    /// Messages, stored by id.
    Append { messages: Vec<Message> },
    /// A message's new state (edit, delete, reactions), merged by `rev`.
    Update { message: Message },
    /// A read marker, merged by max.
    ReadMarker {
        conversation: ConversationId,
        user: UserId,
        up_to: MessageId,
    },
    /// A conversation change at version (`ms`, the op's origin): the
    /// metadata after it (`members` empty, unused) and the memberships it
    /// touched. A user in both lists is removed.
    Conversation {
        ms: u64,
        conversation: Conversation,
        upsert: Vec<Member>,
        remove: Vec<UserId>,
    },
    /// A user record, merged by keeping the smaller.
    User { record: UserRecord },
    /// A refresh-token effect.
    Refresh { effect: RefreshEffect },
    /// An account flag set at `at` (ms): the later setting wins, then the
    /// greater origin.
    UserFlag {
        user: UserId,
        flag: UserFlag,
        on: bool,
        at: u64,
    },
    /// An admin action (idempotent: keyed by its time and id).
    Audit { entry: AuditEntry },
    /// Writes of last-writer-wins registers at version (`ms`, the op's
    /// origin): see `registers.rs`.
    Registers { ms: u64, writes: Writes },
    /// A conversation's notification cursor, merged by max.
    NotifyCursor {
        conversation: ConversationId,
        cursor: NotifyCursor,
    },
}

impl StoreOp {
    /// The conversations whose messages, read markers or record this op
    /// changes: what a conversation actor holds in memory (not the
    /// notification cursor, which the notifier keeps).
    pub(super) fn conversations(&self) -> Vec<ConversationId> {
        match self {
            StoreOp::Append { messages } => {
                let mut ids: Vec<ConversationId> = Vec::new();
                for m in messages {
                    if !ids.contains(&m.conversation) {
                        ids.push(m.conversation.clone());
                    }
                }
                ids
            }
            StoreOp::Update { message } => vec![message.conversation.clone()],
            StoreOp::ReadMarker { conversation, .. } => vec![conversation.clone()],
            StoreOp::Conversation { conversation, .. } => vec![conversation.id.clone()],
            _ => Vec::new(),
        }
    }
}

/// Applies an op of `origin`: the same code at the origin and at replicas.
pub(super) fn apply_op(txn: &mut Txn<'_>, origin: &str, op: &StoreOp) -> Result<(), StoreError> {
    match op {
        StoreOp::Append { messages } => txn.append_messages(messages),
        StoreOp::Update { message } => txn.update_message(message),
        StoreOp::ReadMarker {
            conversation,
            user,
            up_to,
        } => txn.raise_read_marker(conversation, user, *up_to),
        StoreOp::Conversation {
            ms,
            conversation,
            upsert,
            remove,
        } => {
            let version = Version {
                ms: *ms,
                origin: origin.to_owned(),
            };
            let id = &conversation.id;
            let meta = version_key(id, None);
            if held_version(txn, &meta)?.is_none_or(|held| held < version) {
                txn.put_conversation_meta(conversation)?;
                txn.replica_put(ReplicaTable::Versions, meta, version.encode());
            }
            for (user, role) in memberships(upsert, remove) {
                let key = version_key(id, Some(user));
                if held_version(txn, &key)?.is_none_or(|held| held < version) {
                    txn.set_member(id, user, role)?;
                    txn.replica_put(ReplicaTable::Versions, key, version.encode());
                }
            }
            Ok(())
        }
        StoreOp::User { record } => txn.merge_user(record),
        StoreOp::Refresh { effect } => txn.apply_refresh_effect(effect),
        StoreOp::UserFlag { user, flag, on, at } => {
            txn.set_user_flag(user, *flag, *on, *at, origin)
        }
        StoreOp::Audit { entry } => txn.put_audit(entry),
        StoreOp::Registers { ms, writes } => super::registers::apply(txn, origin, *ms, writes),
        StoreOp::NotifyCursor {
            conversation,
            cursor,
        } => txn.raise_notify_cursor(conversation, *cursor),
    }
}

fn held_version(txn: &Txn<'_>, key: &[u8]) -> Result<Option<Version>, StoreError> {
    match txn.replica_get(ReplicaTable::Versions, key)? {
        Some(bytes) => Version::decode(&bytes).map(Some),
        None => Ok(None),
    }
}

/// The version a local conversation change gets: now, or if this node holds
/// a version of one of the registers it touches at or after now (a clock
/// that stepped back, or a peer's clock ahead), just above the highest such.
/// So the change wins over everything this node has seen, here and on every
/// replica alike.
pub(super) fn next_conversation_ms(
    txn: &Txn<'_>,
    change: &ConversationChange,
) -> Result<u64, StoreError> {
    let id = &change.conversation.id;
    let mut ms = now_ms();
    let users = change
        .upsert
        .iter()
        .map(|m| Some(&m.user))
        .chain(change.remove.iter().map(Some));
    for user in std::iter::once(None).chain(users) {
        if let Some(held) = held_version(txn, &version_key(id, user))? {
            ms = ms.max(held.ms.saturating_add(1));
        }
    }
    Ok(ms)
}

/// The register of a conversation's metadata (`None`) or of one membership.
fn version_key(conversation: &ConversationId, user: Option<&UserId>) -> Vec<u8> {
    match user {
        None => key_of(&[conversation.as_str()]),
        Some(user) => key_of(&[conversation.as_str(), user.as_str()]),
    }
}

/// What decoding does not check of a peer's op: strings that become keys
/// must fit a key part. (Ids check themselves when they are decoded.)
pub(super) fn check_op(op: &StoreOp) -> Result<(), StoreError> {
    let check = |s: &str| {
        if s.len() > MAX_KEY_STRING {
            Err(corrupt("a token hash or family in an op is too long"))
        } else {
            Ok(())
        }
    };
    match op {
        StoreOp::Refresh {
            effect: RefreshEffect::Tokens(tokens),
        } => tokens.iter().try_for_each(|t| {
            check(&t.token_hash)?;
            check(&t.family)
        }),
        StoreOp::Refresh {
            effect: RefreshEffect::RevokeFamily(family),
        } => check(family),
        _ => Ok(()),
    }
}

pub(super) fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    // Maps rather than arrays: fields can be added without breaking peers
    // that run the previous version.
    rmp_serde::to_vec_named(value).map_err(|e| corrupt(format!("cannot encode an op: {e}")))
}

pub(super) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, StoreError> {
    rmp_serde::from_slice(bytes).map_err(|e| corrupt(format!("malformed op: {e}")))
}
