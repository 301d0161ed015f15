//! Which users have a session on this node, per conversation ("interest").
//!
//! Sessions add their user to every conversation the user is in when they
//! start, and withdraw when they stop; conversation actors add and remove
//! members as membership changes. A conversation actor reads its entry at
//! fan-out time and sends to exactly those users, so fan-out costs one lookup
//! per batch and nothing for members who are offline. Entries live here rather
//! than in the conversation actor so that an actor can stop when idle without
//! losing who is listening, and a login does not have to start an actor per
//! conversation.
//!
//! In a cluster the table also decides which nodes a conversation's owner
//! sends to: each change from no listener here to some, or back, is reported
//! to the owner with the table locked (see [`crate::cluster`]).

use std::sync::{Arc, Mutex, PoisonError};

use chat_protocol::{ConversationId, UserId};

use crate::cluster::{Cluster, PendingInterest};
use crate::maps::{IdMap, IdSet};

/// The users of one conversation with a session on this node, shared
/// copy-on-write so readers never hold the lock while they fan out.
pub type Listeners = Arc<[UserId]>;

#[derive(Default)]
struct Table {
    by_conversation: IdMap<ConversationId, Listeners>,
    by_user: IdMap<UserId, IdSet<ConversationId>>,
}

/// The node's interest table.
#[derive(Default)]
pub struct Interest {
    table: Mutex<Table>,
}

impl Interest {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        // The table holds no invariant a panicking writer could half-break.
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers `user` as listening to each of `conversations`.
    pub fn add(&self, user: &UserId, conversations: &[ConversationId], cluster: &Cluster) {
        let mut t = self.lock();
        let started = Self::add_locked(&mut t, user, conversations);
        cluster.report_interest(&started, true, false);
    }

    /// Registers a starting session's `user` as listening to each of
    /// `conversations`, and reports all of them to their owners (not only
    /// those no one here listened to: an earlier report may still be on its
    /// way). Each report ends when its owner has applied it.
    pub fn join(
        &self,
        user: &UserId,
        conversations: &[ConversationId],
        cluster: &Cluster,
    ) -> Vec<PendingInterest> {
        let mut t = self.lock();
        Self::add_locked(&mut t, user, conversations);
        cluster.report_interest(conversations, true, true)
    }

    /// Those of `conversations` no one listened to before.
    fn add_locked(
        t: &mut Table,
        user: &UserId,
        conversations: &[ConversationId],
    ) -> Vec<ConversationId> {
        let mut started = Vec::new();
        for conv in conversations {
            let entry = t.by_conversation.entry(conv.clone()).or_insert_with(|| {
                started.push(conv.clone());
                Arc::from([])
            });
            if !entry.contains(user) {
                let mut v = entry.to_vec();
                v.push(user.clone());
                *entry = Arc::from(v);
            }
        }
        t.by_user
            .entry(user.clone())
            .or_default()
            .extend(conversations.iter().cloned());
        started
    }

    /// Withdraws `user` from one conversation.
    pub fn remove(&self, user: &UserId, conversation: &ConversationId, cluster: &Cluster) {
        let mut t = self.lock();
        if Self::remove_locked(&mut t, user, conversation) {
            cluster.report_interest(std::slice::from_ref(conversation), false, false);
        }
        if let Some(set) = t.by_user.get_mut(user) {
            set.remove(conversation);
            if set.is_empty() {
                t.by_user.remove(user);
            }
        }
    }

    /// Whether the conversation lost its last listener.
    fn remove_locked(t: &mut Table, user: &UserId, conversation: &ConversationId) -> bool {
        if let Some(entry) = t.by_conversation.get_mut(conversation) {
            if entry.contains(user) {
                let v: Vec<UserId> = entry.iter().filter(|u| *u != user).cloned().collect();
                if v.is_empty() {
                    t.by_conversation.remove(conversation);
                    return true;
                }
                *entry = Arc::from(v);
            }
        }
        false
    }

    /// Withdraws `user` from every conversation (its last session stopped).
    pub fn remove_user(&self, user: &UserId, cluster: &Cluster) {
        let mut t = self.lock();
        if let Some(convs) = t.by_user.remove(user) {
            let stopped: Vec<ConversationId> = convs
                .into_iter()
                .filter(|conv| Self::remove_locked(&mut t, user, conv))
                .collect();
            cluster.report_interest(&stopped, false, false);
        }
    }

    /// Tells the owner of `conversation` whether anyone here listens to it,
    /// after a membership change it announced (it assumed someone might).
    pub fn confirm(&self, conversation: &ConversationId, cluster: &Cluster) {
        let t = self.lock();
        let listening = t.by_conversation.contains_key(conversation);
        cluster.report_interest(std::slice::from_ref(conversation), listening, false);
    }

    /// Sends peer `to` (or every peer) the conversations listened to here
    /// that it owns, after this node's view changed or when it asks.
    pub fn sync(&self, to: Option<&str>, cluster: &Cluster) {
        let t = self.lock();
        cluster.sync_interest(to, t.by_conversation.keys());
    }

    /// The conversations listened to here for which `pick` holds, with
    /// their listeners.
    pub fn listened_where(
        &self,
        pick: impl Fn(&ConversationId) -> bool,
    ) -> Vec<(ConversationId, Listeners)> {
        let t = self.lock();
        t.by_conversation
            .iter()
            .filter(|(c, _)| pick(c))
            .map(|(c, l)| (c.clone(), l.clone()))
            .collect()
    }

    /// The users listening to `conversation` on this node.
    pub fn listeners(&self, conversation: &ConversationId) -> Option<Listeners> {
        self.lock().by_conversation.get(conversation).cloned()
    }

    /// How many (conversation, user) entries the table holds.
    pub fn len(&self) -> usize {
        self.lock().by_conversation.values().map(|l| l.len()).sum()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.lock().by_conversation.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u(s: &str) -> UserId {
        UserId::new(s).unwrap()
    }
    fn c(s: &str) -> ConversationId {
        ConversationId::new(s).unwrap()
    }

    #[test]
    fn add_remove_and_remove_user() {
        let i = Interest::new();
        let alone = Cluster::single("n", 1);
        i.add(&u("a"), &[c("x"), c("y")], &alone);
        i.add(&u("b"), &[c("x")], &alone);
        i.add(&u("b"), &[c("x")], &alone);
        assert_eq!(i.listeners(&c("x")).unwrap().len(), 2);
        i.remove(&u("b"), &c("x"), &alone);
        assert_eq!(&*i.listeners(&c("x")).unwrap(), &[u("a")]);
        i.remove_user(&u("a"), &alone);
        assert!(i.listeners(&c("x")).is_none());
        assert!(i.listeners(&c("y")).is_none());
        assert!(i.is_empty());
    }
}
