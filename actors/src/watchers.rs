//! Which local sessions watch which users' presence, and forwarding each
//! change the presence backend reports to them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use chat_protocol::{Presence, ServerFrame, SharedFrame, UserId};
use chat_storage::MessageStore;
use ractor::ActorId;
use tokio::sync::broadcast;

use crate::msg::{SessionHandle, SessionMsg};

/// Which local sessions watch which users.
#[derive(Default)]
pub struct Watchers {
    table: Mutex<HashMap<UserId, HashMap<ActorId, SessionHandle>>>,
}

impl Watchers {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// `session` watches `users`; returns those no local session watched before.
    pub fn add(&self, session: &SessionHandle, users: &[UserId]) -> Vec<UserId> {
        let mut t = self.table.lock().unwrap_or_else(PoisonError::into_inner);
        let mut fresh = Vec::new();
        for u in users {
            let entry = t.entry(u.clone()).or_default();
            if entry.is_empty() {
                fresh.push(u.clone());
            }
            entry.insert(session.id(), session.clone());
        }
        fresh
    }

    /// `session` stops watching `users`; returns those no local session watches now.
    pub fn remove(&self, session: ActorId, users: &[UserId]) -> Vec<UserId> {
        let mut t = self.table.lock().unwrap_or_else(PoisonError::into_inner);
        let mut gone = Vec::new();
        for u in users {
            if let Some(entry) = t.get_mut(u) {
                entry.remove(&session);
                if entry.is_empty() {
                    t.remove(u);
                    gone.push(u.clone());
                }
            }
        }
        gone
    }

    /// A woken session runs as a new actor: its watches follow it.
    pub fn rebind(&self, was: ActorId, session: &SessionHandle) {
        let mut t = self.table.lock().unwrap_or_else(PoisonError::into_inner);
        for entry in t.values_mut() {
            if entry.remove(&was).is_some() {
                entry.insert(session.id(), session.clone());
            }
        }
    }

    fn sessions_watching(&self, user: &UserId) -> Vec<SessionHandle> {
        let t = self.table.lock().unwrap_or_else(PoisonError::into_inner);
        t.get(user)
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Checks again, against `user`'s contacts, blocks and privacy, each
    /// local session that watches them, and ends the watches of those who
    /// may no longer see them. Run when `user` restricted their presence:
    /// a watch is checked when made, and this is what keeps it honest after.
    pub fn recheck(self: &Arc<Self>, store: Arc<dyn MessageStore>, user: UserId) {
        let sessions = self.sessions_watching(&user);
        if sessions.is_empty() {
            return;
        }
        tokio::spawn(async move {
            let relations = match store.relations(&user).await {
                Ok(r) => r.unwrap_or_default(),
                Err(e) => {
                    // Watches made from now on are checked all the same;
                    // these stay until their connection ends.
                    tracing::warn!(error = %e, user = %user, "presence recheck: relations unread");
                    return;
                }
            };
            for s in sessions {
                if !relations.shows_presence_to(s.user()) {
                    let _ = s.send(SessionMsg::HidePresence { user: user.clone() });
                }
            }
        });
    }

    /// Forwards the backend's changes to the sessions watching, until the
    /// backend's channel closes.
    pub async fn run(self: Arc<Self>, mut changes: broadcast::Receiver<Presence>) {
        loop {
            match changes.recv().await {
                Ok(change) => {
                    let sessions = self.sessions_watching(&change.user);
                    if sessions.is_empty() {
                        continue;
                    }
                    let user = change.user.clone();
                    let frame = Arc::new(SharedFrame::new(ServerFrame::Presence(change)));
                    for s in sessions {
                        let _ = s.send(SessionMsg::PresenceChanged {
                            user: user.clone(),
                            frame: frame.clone(),
                        });
                    }
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(
                        skipped = n,
                        "presence changes skipped: watchers fell behind"
                    );
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    }
}
