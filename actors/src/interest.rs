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

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};

use chat_protocol::{ConversationId, UserId};

/// The users of one conversation with a session on this node, shared
/// copy-on-write so readers never hold the lock while they fan out.
pub type Listeners = Arc<[UserId]>;

#[derive(Default)]
struct Table {
    by_conversation: HashMap<ConversationId, Listeners>,
    by_user: HashMap<UserId, HashSet<ConversationId>>,
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
    pub fn add(&self, user: &UserId, conversations: &[ConversationId]) {
        let mut t = self.lock();
        for conv in conversations {
            let entry = t
                .by_conversation
                .entry(conv.clone())
                .or_insert_with(|| Arc::from([]));
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
    }

    /// Withdraws `user` from one conversation.
    pub fn remove(&self, user: &UserId, conversation: &ConversationId) {
        let mut t = self.lock();
        Self::remove_locked(&mut t, user, conversation);
        if let Some(set) = t.by_user.get_mut(user) {
            set.remove(conversation);
            if set.is_empty() {
                t.by_user.remove(user);
            }
        }
    }

    fn remove_locked(t: &mut Table, user: &UserId, conversation: &ConversationId) {
        if let Some(entry) = t.by_conversation.get_mut(conversation) {
            if entry.contains(user) {
                let v: Vec<UserId> = entry.iter().filter(|u| *u != user).cloned().collect();
                if v.is_empty() {
                    t.by_conversation.remove(conversation);
                } else {
                    *entry = Arc::from(v);
                }
            }
        }
    }

    /// Withdraws `user` from every conversation (its last session stopped).
    pub fn remove_user(&self, user: &UserId) {
        let mut t = self.lock();
        if let Some(convs) = t.by_user.remove(user) {
            for conv in convs {
                Self::remove_locked(&mut t, user, &conv);
            }
        }
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
        i.add(&u("a"), &[c("x"), c("y")]);
        i.add(&u("b"), &[c("x")]);
        i.add(&u("b"), &[c("x")]);
        assert_eq!(i.listeners(&c("x")).unwrap().len(), 2);
        i.remove(&u("b"), &c("x"));
        assert_eq!(&*i.listeners(&c("x")).unwrap(), &[u("a")]);
        i.remove_user(&u("a"));
        assert!(i.listeners(&c("x")).is_none());
        assert!(i.listeners(&c("y")).is_none());
        assert!(i.is_empty());
    }
}
