//! Roles and the title: an owner promotes, demotes and hands ownership
//! over; owners and admins set the title. Each change is stored before it
//! is answered, then announced to every member, as membership changes are.
//!
//! The whole matrix (docs/protocol.md, "Roles"): the owner does
//! everything; an admin invites, kicks members (not the owner or other
//! admins), deletes others' messages, sets the title and writes in a
//! channel; a member sends (not in a channel), reacts, reads and leaves.

use chat_protocol::{ConversationKind, Member, Role, ServerFrame, UserId};
use chat_storage::ConversationChange;

use super::members::answer_conversation;
use super::{event, ConversationState};
use crate::error::ChatError;
use crate::msg::Reply;

impl ConversationState {
    pub(super) async fn set_role(
        &mut self,
        by: UserId,
        user: UserId,
        role: Role,
        reply: Option<Reply>,
    ) {
        let result = async {
            let by_role = self.member_role(&by)?;
            let conv = self.existing()?.clone();
            if conv.kind == ConversationKind::Direct {
                return Err(ChatError::Forbidden(
                    "a direct conversation has no roles".into(),
                ));
            }
            if by_role != Role::Owner {
                return Err(ChatError::Forbidden("only the owner changes roles".into()));
            }
            let target = self
                .roles
                .get(&user)
                .copied()
                .ok_or_else(|| ChatError::NotFound(format!("{user} is not a member")))?;
            if target == role {
                return Ok(self.shown(&conv));
            }
            if user == by || target == Role::Owner {
                return Err(ChatError::BadRequest(
                    "an owner's role changes by handing ownership to another member".into(),
                ));
            }
            let mut upsert = vec![Member {
                user: user.clone(),
                role,
            }];
            if role == Role::Owner {
                // One owner: the one handing over stays on as an admin.
                upsert.push(Member {
                    user: by,
                    role: Role::Admin,
                });
            }
            self.commit_members(conv, upsert, vec![]).await
        }
        .await;
        answer_conversation(reply, result);
    }

    pub(super) async fn set_title(
        &mut self,
        by: UserId,
        title: Option<String>,
        reply: Option<Reply>,
    ) {
        let result = async {
            let role = self.member_role(&by)?;
            let mut conv = self.existing()?.clone();
            if conv.kind == ConversationKind::Direct {
                return Err(ChatError::Forbidden(
                    "a direct conversation has no title".into(),
                ));
            }
            if !role.moderates() {
                return Err(ChatError::Forbidden(
                    "only owners and admins set the title".into(),
                ));
            }
            if conv.title == title {
                return Ok(self.shown(&conv));
            }
            conv.title = title;
            let change = ConversationChange {
                conversation: conv.clone(),
                upsert: vec![],
                remove: vec![],
            };
            self.store_change(&change).await?;
            // Every member hears of it, whatever the conversation's size:
            // the `conversation` event carries the title.
            let shown = self.shown(&conv);
            let everyone: Vec<UserId> = conv.members.iter().map(|m| m.user.clone()).collect();
            let frame = ServerFrame::Conversation {
                conversation: shown.clone(),
            };
            self.deps
                .fanout
                .to_members(&self.id, &event(frame), &everyone, &[]);
            Ok(shown)
        }
        .await;
        answer_conversation(reply, result);
    }
}
