//! Membership: creating a conversation, invites, kicks, leaving, and
//! pages of the member list. Each change is stored before it is answered,
//! then announced to everyone it concerns: with the whole (small) list in a
//! `conversation` event, or, in a conversation of more than
//! `INLINE_MEMBERS`, as the change alone in a `membership` event, so that a
//! change costs each member a few bytes rather than the whole list. Groups
//! and channels are capped in size (`Tuning`).

use chat_protocol::conversation::INLINE_MEMBERS;
use chat_protocol::{
    now_ms, Conversation, ConversationKind, Member, OkReply, Role, ServerFrame, UserId,
};
use chat_storage::ConversationChange;

use super::{answer, event, ok, ConversationState};
use crate::error::ChatError;
use crate::msg::Reply;

/// Answers with the conversation as it is after a change.
pub(super) fn answer_conversation(reply: Option<Reply>, result: Result<Conversation, ChatError>) {
    answer(
        reply,
        result.map(|c| OkReply {
            conversation: Some(c),
            ..ok()
        }),
    );
}

impl ConversationState {
    async fn check_users_exist(&self, users: &[UserId]) -> Result<(), ChatError> {
        for u in users {
            if self.deps.store.user(u).await?.is_none() {
                return Err(ChatError::NotFound(format!("no user {u}")));
            }
        }
        Ok(())
    }

    pub(super) async fn create(
        &mut self,
        creator: UserId,
        kind: ConversationKind,
        members: Vec<UserId>,
        title: Option<String>,
        reply: Option<Reply>,
    ) {
        if let Some(existing) = &self.conversation {
            // Only a direct conversation's id can be asked for twice.
            let result =
                if existing.kind == ConversationKind::Direct && self.roles.contains_key(&creator) {
                    Ok(OkReply {
                        conversation: Some(self.shown(existing)),
                        ..ok()
                    })
                } else {
                    Err(ChatError::BadRequest(format!(
                        "conversation {} exists",
                        self.id
                    )))
                };
            return answer(reply, result);
        }
        let mut list: Vec<Member> = Vec::with_capacity(members.len() + 1);
        let creator_role = if kind == ConversationKind::Direct {
            Role::Member
        } else {
            Role::Owner
        };
        list.push(Member {
            user: creator.clone(),
            role: creator_role,
        });
        for u in members {
            if !list.iter().any(|m| m.user == u) {
                list.push(Member {
                    user: u,
                    role: Role::Member,
                });
            }
        }
        if kind == ConversationKind::Direct && list.len() != 2 {
            return answer(
                reply,
                Err(ChatError::BadRequest(
                    "a direct conversation takes exactly one other user".into(),
                )),
            );
        }
        if let Err(e) = self.check_size(kind, list.len()) {
            return answer(reply, Err(e));
        }
        let others: Vec<UserId> = list.iter().skip(1).map(|m| m.user.clone()).collect();
        if let Err(e) = self.check_users_exist(&others).await {
            return answer(reply, Err(e));
        }
        let direct = kind == ConversationKind::Direct;
        if let Err(e) = self.check_admitted(&creator, &others, direct).await {
            return answer(reply, Err(e));
        }
        let conversation = Conversation {
            rev: 0,
            id: self.id.clone(),
            kind,
            title,
            members: list.clone(),
            member_count: None,
            created_at: now_ms(),
        };
        let change = ConversationChange {
            conversation: conversation.clone(),
            upsert: list,
            remove: vec![],
        };
        // Only the holder of the conversation's claim writes it.
        let incarnation = match self.fence() {
            Ok(lease) => lease.and_then(|l| l.incarnation),
            Err(e) => return answer(reply, Err(e.into())),
        };
        let write = self.deps.store.apply_conversation(&change);
        if let Err(e) = self.deps.leases.guarded(incarnation, write).await {
            self.deps.metrics.store_errors.inc();
            return answer(reply, Err(e.into()));
        }
        self.set_conversation(Some(conversation.clone()));
        self.announce(&conversation.members, &[]);
        self.deps.events.created(&conversation);
        answer(
            reply,
            Ok(OkReply {
                conversation: Some(self.shown(&conversation)),
                ..ok()
            }),
        );
    }

    /// Whether a conversation of `kind` may have `members` members.
    fn check_size(&self, kind: ConversationKind, members: usize) -> Result<(), ChatError> {
        let (cap, what) = match kind {
            ConversationKind::Channel => (self.deps.tuning.max_channel_members, "a channel"),
            _ => (self.deps.tuning.max_group_members, "a group"),
        };
        if members > cap {
            return Err(ChatError::Forbidden(format!(
                "{what} has at most {cap} members"
            )));
        }
        Ok(())
    }

    /// Stores a membership change and tells everyone concerned.
    pub(super) async fn commit_members(
        &mut self,
        mut next: Conversation,
        upsert: Vec<Member>,
        remove: Vec<UserId>,
    ) -> Result<Conversation, ChatError> {
        let joined: Vec<UserId> = upsert
            .iter()
            .filter(|m| !next.members.iter().any(|x| x.user == m.user))
            .map(|m| m.user.clone())
            .collect();
        next.members.retain(|m| !remove.contains(&m.user));
        for m in &upsert {
            match next.members.iter_mut().find(|x| x.user == m.user) {
                Some(x) => x.role = m.role,
                None => next.members.push(m.clone()),
            }
        }
        let change = ConversationChange {
            conversation: next.clone(),
            upsert,
            remove: remove.clone(),
        };
        self.store_change(&change).await?;
        self.announce(&change.upsert, &remove);
        if !joined.is_empty() || !remove.is_empty() {
            self.deps.events.members_changed(&self.id, &joined, &remove);
        }
        Ok(self.shown(&next))
    }

    /// Stores `change` (as the lease holder only) and makes its
    /// conversation the one held; announcing it is the caller's.
    pub(super) async fn store_change(
        &mut self,
        change: &ConversationChange,
    ) -> Result<(), ChatError> {
        let incarnation = self.fence()?.and_then(|l| l.incarnation);
        let write = self.deps.store.apply_conversation(change);
        self.deps
            .leases
            .guarded(incarnation, write)
            .await
            .inspect_err(|_| {
                self.deps.metrics.store_errors.inc();
            })?;
        self.set_conversation(Some(change.conversation.clone()));
        Ok(())
    }

    /// Tells every member and the `removed` of a change that `added`
    /// joined (or changed role); the fan-out keeps interest in step.
    fn announce(&self, added: &[Member], removed: &[UserId]) {
        let Some(conversation) = &self.conversation else {
            return;
        };
        let everyone: Vec<UserId> = conversation
            .members
            .iter()
            .map(|m| m.user.clone())
            .collect();
        let shown = ServerFrame::Conversation {
            conversation: self.shown(conversation),
        };
        if conversation.members.len() <= INLINE_MEMBERS {
            self.deps
                .fanout
                .to_members(&self.id, &event(shown), &everyone, removed);
            return;
        }
        let change = ServerFrame::Membership {
            conversation: self.id.clone(),
            added: added.to_vec(),
            removed: removed.to_vec(),
            member_count: conversation.members.len().min(u32::MAX as usize) as u32,
        };
        self.deps
            .fanout
            .to_members(&self.id, &event(change), &everyone, removed);
        // Those who joined learn of the conversation itself.
        let joined: Vec<UserId> = added.iter().map(|m| m.user.clone()).collect();
        if !joined.is_empty() {
            self.deps
                .fanout
                .to_members(&self.id, &event(shown), &joined, &[]);
        }
    }

    /// A page of the member list, ordered by user id.
    pub(super) fn members_page(
        &self,
        reader: &UserId,
        after: Option<UserId>,
        limit: u32,
        reply: Option<Reply>,
    ) {
        if let Err(e) = self.member_role(reader) {
            return answer(reply, Err(e));
        }
        let mut ids: Vec<&UserId> = self
            .roles
            .keys()
            .filter(|u| after.as_ref().is_none_or(|a| *u > a))
            .collect();
        ids.sort();
        let limit = limit as usize;
        let more = ids.len() > limit;
        let members = ids
            .into_iter()
            .take(limit)
            .map(|u| Member {
                user: u.clone(),
                role: self.roles[u],
            })
            .collect();
        answer(
            reply,
            Ok(OkReply {
                members: Some(members),
                more: Some(more),
                ..ok()
            }),
        );
    }

    pub(super) async fn invite(&mut self, by: UserId, users: Vec<UserId>, reply: Option<Reply>) {
        let result = async {
            let role = self.member_role(&by)?;
            let conv = self.existing()?.clone();
            if conv.kind == ConversationKind::Direct {
                return Err(ChatError::Forbidden(
                    "a direct conversation has two members".into(),
                ));
            }
            if !role.moderates() {
                return Err(ChatError::Forbidden("only owners and admins invite".into()));
            }
            let fresh: Vec<UserId> = users
                .into_iter()
                .filter(|u| !self.roles.contains_key(u))
                .collect();
            if fresh.is_empty() {
                return Ok(self.shown(&conv));
            }
            self.check_size(conv.kind, conv.members.len() + fresh.len())?;
            self.check_users_exist(&fresh).await?;
            self.check_admitted(&by, &fresh, false).await?;
            let upsert = fresh
                .into_iter()
                .map(|user| Member {
                    user,
                    role: Role::Member,
                })
                .collect();
            self.commit_members(conv, upsert, vec![]).await
        }
        .await;
        answer_conversation(reply, result);
    }

    pub(super) async fn kick(&mut self, by: UserId, user: UserId, reply: Option<Reply>) {
        let result = async {
            let role = self.member_role(&by)?;
            let conv = self.existing()?.clone();
            if conv.kind == ConversationKind::Direct || !role.moderates() {
                return Err(ChatError::Forbidden("only owners and admins kick".into()));
            }
            let target = self
                .roles
                .get(&user)
                .copied()
                .ok_or_else(|| ChatError::NotFound(format!("{user} is not a member")))?;
            if user == by {
                return Err(ChatError::BadRequest("use leave to leave".into()));
            }
            if target == Role::Owner || (target == Role::Admin && role != Role::Owner) {
                return Err(ChatError::Forbidden(
                    "cannot kick an owner or, unless owner, an admin".into(),
                ));
            }
            self.commit_members(conv, vec![], vec![user]).await
        }
        .await;
        answer_conversation(reply, result);
    }

    pub(super) async fn leave(&mut self, user: UserId, reply: Option<Reply>) {
        let result = async {
            let role = self.member_role(&user)?;
            let conv = self.existing()?.clone();
            if conv.kind == ConversationKind::Direct {
                return Err(ChatError::Forbidden(
                    "a direct conversation cannot be left".into(),
                ));
            }
            // A group keeps an owner: the longest-standing admin, else member.
            let mut upsert = vec![];
            if role == Role::Owner
                && !conv
                    .members
                    .iter()
                    .any(|m| m.role == Role::Owner && m.user != user)
            {
                let heir = conv
                    .members
                    .iter()
                    .filter(|m| m.user != user)
                    .min_by_key(|m| m.role)
                    .map(|m| m.user.clone());
                if let Some(heir) = heir {
                    upsert.push(Member {
                        user: heir,
                        role: Role::Owner,
                    });
                }
            }
            self.commit_members(conv, upsert, vec![user]).await
        }
        .await;
        answer(reply, result.map(|_| ok()));
    }
}
