//! `watch` and `unwatch`: presence watches belong to the connection, so the
//! session that holds the connection keeps them.

use chat_protocol::UserId;

use super::Caller;
use crate::error::ChatError;
use crate::msg::{Reply, SessionMsg};

pub(super) fn watch(caller: &Caller, users: Vec<UserId>, reply: Reply) {
    to_session(caller, reply, |conn, reply| SessionMsg::Watch {
        conn,
        users,
        reply,
    });
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
        let _ = reply.send(Err(ChatError::BadRequest(
            "presence watches need a WebSocket connection".into(),
        )));
        return;
    };
    if let Err(ractor::MessagingErr::SendErr(
        SessionMsg::Watch { reply, .. } | SessionMsg::Unwatch { reply, .. },
    )) = session.cast(msg(conn, reply))
    {
        let _ = reply.send(Err(ChatError::Unavailable(
            "session closed; reconnect".into(),
        )));
    }
}
