//! `watch` and `unwatch`: presence watches belong to the connection, so the
//! session that holds the connection keeps them. Unless the node shows
//! presence to everyone, a user's presence is shown only to those who share
//! a conversation with them; and never to someone they block, nor beyond
//! their `presence` privacy (contacts, nobody). The others are answered
//! `offline`, with no `last_seen`, and get no events, so presence is no
//! directory of who uses the service and when. A user who restricts their
//! presence later has the watches of it checked again
//! ([`crate::watchers::Watchers::recheck`]).

use std::collections::HashSet;

use chat_protocol::{Presence, Status, UserId};
use chat_storage::MessageStore;

use super::{Caller, Dispatch, Visibility};
use crate::error::ChatError;
use crate::msg::{Reply, SessionMsg};

pub(super) fn watch(d: &Dispatch, caller: &Caller, users: Vec<UserId>, reply: Reply) {
    let (Some(session), Some(conn)) = (caller.session.clone(), caller.conn) else {
        return drop(reply.send(Err(no_connection())));
    };
    let (store, viewer, visibility) = (d.store.clone(), caller.user.clone(), d.visibility);
    tokio::spawn(async move {
        let split = visible_to(store.as_ref(), &viewer, users, visibility).await;
        let (visible, hidden) = match split {
            Ok(split) => split,
            Err(e) => return drop(reply.send(Err(e))),
        };
        let (tx, rx) = ractor::concurrency::oneshot();
        let watch = SessionMsg::Watch {
            conn,
            users: visible,
            reply: tx.into(),
        };
        if session.send(watch).is_err() {
            return drop(reply.send(Err(session_closed())));
        }
        let answer = rx.await.unwrap_or_else(|_| Err(session_closed()));
        let _ = reply.send(answer.map(|mut ok| {
            let shown = ok.presence.get_or_insert_with(Vec::new);
            shown.extend(hidden.into_iter().map(|user| Presence {
                user,
                status: Status::Offline,
                last_seen: None,
            }));
            ok
        }));
    });
}

/// `users` split into those `viewer` may watch and the others.
async fn visible_to(
    store: &dyn MessageStore,
    viewer: &UserId,
    users: Vec<UserId>,
    visibility: Visibility,
) -> Result<(Vec<UserId>, Vec<UserId>), ChatError> {
    let mine: HashSet<_> = match visibility {
        Visibility::Contacts => store
            .user_conversations(viewer)
            .await?
            .into_iter()
            .collect(),
        Visibility::Everyone => HashSet::new(),
    };
    let (mut visible, mut hidden) = (Vec::new(), Vec::new());
    for user in users {
        let shown = user == *viewer
            || (store
                .relations(&user)
                .await?
                .is_none_or(|r| r.shows_presence_to(viewer))
                && (visibility == Visibility::Everyone
                    || store
                        .user_conversations(&user)
                        .await?
                        .iter()
                        .any(|c| mine.contains(c))));
        if shown {
            visible.push(user);
        } else {
            hidden.push(user);
        }
    }
    Ok((visible, hidden))
}

pub(super) fn unwatch(caller: &Caller, users: Vec<UserId>, reply: Reply) {
    to_session(caller, reply, |conn, reply| SessionMsg::Unwatch {
        conn,
        users,
        reply,
    });
}

fn to_session(caller: &Caller, reply: Reply, msg: impl FnOnce(u64, Reply) -> SessionMsg) {
    let (Some(session), Some(conn)) = (&caller.session, caller.conn) else {
        return drop(reply.send(Err(no_connection())));
    };
    if let Err(SessionMsg::Watch { reply, .. } | SessionMsg::Unwatch { reply, .. }) =
        session.send(msg(conn, reply))
    {
        let _ = reply.send(Err(session_closed()));
    }
}

fn no_connection() -> ChatError {
    ChatError::BadRequest("presence watches need a WebSocket connection".into())
}

fn session_closed() -> ChatError {
    ChatError::Unavailable("session closed; reconnect".into())
}
