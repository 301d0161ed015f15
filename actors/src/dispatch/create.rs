//! `create`: the node picks the id, then the actor of that id creates it.
//! A direct conversation's id is a function of its two members, so asking
//! twice (from any node) reaches the one actor that knows it exists.

use chat_protocol::request::ConversationRequest;
use chat_protocol::{ClientFrame, ConversationId, ConversationKind};

use super::{Caller, Dispatch};
use crate::error::ChatError;
use crate::msg::{Reply, Request};

pub(super) fn create(d: &Dispatch, caller: &Caller, frame: ClientFrame, reply: Reply) {
    let ClientFrame::Create {
        kind,
        members,
        title,
        ..
    } = frame
    else {
        return drop(reply.send(Err(ChatError::Internal("not a create".into()))));
    };
    let id = match kind {
        ConversationKind::Direct => match members.first() {
            None => Err(ChatError::BadRequest("direct needs a user".into())),
            Some(other) if *other == caller.user => Err(ChatError::BadRequest(
                "a direct conversation is with another user".into(),
            )),
            Some(other) => Ok(ConversationId::direct(&caller.user, other)),
        },
        _ => {
            let unique = d.ids.next(chat_protocol::now_ms(), Default::default());
            ConversationId::new(&format!("g:{unique}"))
                .map_err(|e| ChatError::Internal(e.to_string()))
        }
    };
    let conversation = match id {
        Ok(id) => id,
        Err(e) => return drop(reply.send(Err(e))),
    };
    let body = ConversationRequest::Create {
        conversation,
        kind,
        members,
        title,
    };
    d.route(Request::new(
        caller.user.clone(),
        caller.conn,
        body,
        Some(reply),
    ));
}
