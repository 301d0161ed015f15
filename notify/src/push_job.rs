//! A push job: one message to one browser, unless it was read, deleted or
//! muted since it was queued.

use std::collections::HashMap;
use std::time::Duration;

use chat_protocol::notify::PushSubscription;
use chat_protocol::{now_ms, ConversationId, MessageId, UserId};
use serde_json::json;

use crate::push::{topic, Outcome};
use crate::runner::{backoff, After};
use crate::{Ctx, NotifyError};

/// Characters of a message body a push carries.
const PUSH_BODY_CHARS: usize = 200;
/// Unread messages counted per conversation for a push's badge.
const UNREAD_CAP: u64 = 9_999;

/// What a run of one member's pushes reads once rather than per push:
/// their browsers, their unread total (a scan of every conversation's
/// unread messages), and per conversation their read marker and mute. The
/// run is a pass's jobs of that member, a moment's worth: a read or mute
/// that lands during it is seen by the next pass.
#[derive(Default)]
pub(crate) struct Memo {
    subscriptions: Option<Vec<PushSubscription>>,
    unread: Option<u64>,
    conversations: HashMap<ConversationId, Seen>,
}

/// A member's read marker and mute in one conversation.
#[derive(Clone, Copy)]
struct Seen {
    read_up_to: Option<MessageId>,
    muted: bool,
}

pub(crate) struct PushJob<'a> {
    pub(crate) user: &'a UserId,
    pub(crate) subscription: &'a str,
    pub(crate) conversation: &'a ConversationId,
    pub(crate) message: MessageId,
    pub(crate) urgent: bool,
    pub(crate) expires_ms: u64,
    pub(crate) attempts: u32,
}

impl PushJob<'_> {
    pub(crate) async fn run(&self, ctx: &Ctx, memo: &mut Memo) -> Result<After, NotifyError> {
        let store = ctx.store.as_ref();
        let Some(sender) = &ctx.push else {
            return Ok(After::Drop("push is not configured".into()));
        };
        let now = now_ms();
        if now >= self.expires_ms {
            return Ok(After::Drop("expired".into()));
        }
        if memo.subscriptions.is_none() {
            memo.subscriptions = Some(store.push_subscriptions(self.user).await?);
        }
        let subs = memo.subscriptions.as_deref().unwrap_or_default();
        let Some(sub) = subs.iter().find(|s| s.id == self.subscription).cloned() else {
            return Ok(After::Drop("subscription gone".into()));
        };
        // Read (on any device), deleted or muted since it was queued:
        // nothing to tell any more.
        let Some(message) = store.message(self.conversation, self.message).await? else {
            return self.cancelled(ctx);
        };
        let seen = match memo.conversations.get(self.conversation) {
            Some(seen) => *seen,
            None => {
                let seen = Seen {
                    read_up_to: store.read_marker(self.conversation, self.user).await?,
                    muted: store
                        .conversation_notify(self.user, self.conversation)
                        .await?
                        .is_some_and(|n| n.muted_at(now)),
                };
                memo.conversations.insert(self.conversation.clone(), seen);
                seen
            }
        };
        let read = seen.read_up_to.is_some_and(|r| r >= self.message);
        if message.deleted || read || seen.muted {
            return self.cancelled(ctx);
        }
        let unread = match memo.unread {
            Some(n) => n,
            None => *memo.unread.insert(unread_total(ctx, self.user).await?),
        };
        let body: String = message.body.chars().take(PUSH_BODY_CHARS).collect();
        let payload = json!({
            "type": "message",
            "conversation": self.conversation,
            "message": {"id": message.id, "sender": message.sender, "body": body},
            "unread": unread,
        });
        let payload = serde_json::to_vec(&payload).unwrap_or_default();
        let ttl = Duration::from_millis(self.expires_ms - now);
        let outcome = sender
            .send(&sub, &payload, ttl, self.urgent, &topic(self.conversation))
            .await;
        if outcome == Outcome::Gone {
            // The rest of this run skips it too.
            if let Some(subs) = &mut memo.subscriptions {
                subs.retain(|s| s.id != sub.id);
            }
        }
        self.after(ctx, &sub, outcome).await
    }

    fn cancelled(&self, ctx: &Ctx) -> Result<After, NotifyError> {
        ctx.metrics.counted(&ctx.metrics.cancelled, "push", 1);
        Ok(After::Done)
    }

    async fn after(
        &self,
        ctx: &Ctx,
        sub: &PushSubscription,
        outcome: Outcome,
    ) -> Result<After, NotifyError> {
        Ok(match outcome {
            Outcome::Sent => {
                ctx.metrics.counted(&ctx.metrics.sent, "push", 1);
                After::Done
            }
            Outcome::Gone => {
                // The browser unsubscribed or the service forgot it.
                ctx.store
                    .delete_push_subscription(self.user, &sub.id)
                    .await?;
                After::Drop("subscription gone at the push service".into())
            }
            Outcome::Retry(why, asked) => After::Retry(backoff(ctx, self.attempts, asked), why),
            Outcome::Refused(why) => After::Drop(why),
        })
    }
}

/// The member's unread messages over all their conversations, for the
/// push's badge.
async fn unread_total(ctx: &Ctx, user: &UserId) -> Result<u64, NotifyError> {
    let store = ctx.store.as_ref();
    let mut total = 0u64;
    for c in store.user_conversations(user).await? {
        let marker = store.read_marker(&c, user).await?.unwrap_or_default();
        total += store.count_unread(&c, user, marker, UNREAD_CAP).await?;
        if total >= UNREAD_CAP {
            return Ok(UNREAD_CAP);
        }
    }
    Ok(total)
}
