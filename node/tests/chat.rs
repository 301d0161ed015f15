//! Every client frame of protocol v1 on one node, over real WebSockets, in
//! both encodings.

mod common;

use chat_protocol::{
    ClientFrame, Codec, ConversationKind, ErrorCode, MessageId, ServerFrame, Status,
};
use common::frames::*;
use common::*;

async fn two_users_chat(codec: Codec) {
    let node = TestNode::start().await;
    let alice = node.user(&unique("alice")).await;
    let bob = node.user(&unique("bob")).await;
    let mut a = connect(node.addr, &alice.access, codec).await;
    let mut b = connect(node.addr, &bob.access, codec).await;

    let c = ok(a
        .request(create(ConversationKind::Direct, &[&bob.id], None))
        .await)
    .conversation
    .unwrap();
    assert_eq!(c.kind, ConversationKind::Direct);
    assert_eq!(c.members.len(), 2);
    // Bob learns of the conversation.
    let ev = b
        .event(|f| matches!(f, ServerFrame::Conversation { .. }))
        .await;
    assert!(matches!(ev, ServerFrame::Conversation { conversation } if conversation.id == c.id));
    // Creating it again from either side returns the same one.
    let again = ok(b
        .request(create(ConversationKind::Direct, &[&alice.id], None))
        .await);
    assert_eq!(again.conversation.unwrap().id, c.id);

    let sent = ok(a.request(send(&c.id, "m1", "hello bob")).await)
        .message
        .unwrap();
    assert_eq!(sent.body, "hello bob");
    assert_eq!(sent.sender.as_str(), alice.id);
    let got = b.event(|f| matches!(f, ServerFrame::Message { .. })).await;
    match got {
        ServerFrame::Message { message } => assert_eq!(message, sent),
        _ => unreachable!(),
    }

    // Typing reaches the other member, not the typer; it ends by itself.
    a.send_frame(&ClientFrame::Typing {
        req: None,
        conversation: c.id.clone(),
        active: true,
    })
    .await;
    let t = b.event(|f| matches!(f, ServerFrame::Typing { .. })).await;
    assert!(matches!(t, ServerFrame::Typing { active: true, .. }));

    // Read receipt.
    let r = b
        .request(ClientFrame::Read {
            req: None,
            conversation: c.id.clone(),
            up_to: sent.id,
        })
        .await;
    ok(r);
    let receipt = a.event(|f| matches!(f, ServerFrame::Receipt { .. })).await;
    assert!(matches!(receipt, ServerFrame::Receipt { up_to, .. } if up_to == sent.id));
    // Moving it backwards is a no-op that still succeeds.
    ok(b.request(ClientFrame::Read {
        req: None,
        conversation: c.id.clone(),
        up_to: MessageId(1),
    })
    .await);

    // History.
    let h = ok(b.request(history(&c.id, None, None, None)).await);
    assert_eq!(h.messages.unwrap(), vec![sent.clone()]);
    assert_eq!(h.more, Some(false));

    // Conversations list with last message and unread.
    let list = ok(a
        .request(ClientFrame::Conversations {
            req: None,
            limit: None,
            before: None,
        })
        .await)
    .conversations
    .unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].last_message.as_ref(), Some(&sent));
    assert_eq!(list[0].unread, 0, "own messages are not unread");

    // Ping.
    ok(a.request(ClientFrame::Ping { req: None }).await);
}

#[tokio::test]
async fn two_users_chat_json() {
    two_users_chat(Codec::Json).await;
}

#[tokio::test]
async fn two_users_chat_msgpack() {
    two_users_chat(Codec::MsgPack).await;
}

#[tokio::test]
async fn groups_channels_invite_kick_leave() {
    let node = TestNode::start().await;
    let o = node.user(&unique("owner")).await;
    let m = node.user(&unique("member")).await;
    let n = node.user(&unique("newbie")).await;
    let mut co = connect(node.addr, &o.access, Codec::Json).await;
    let mut cm = connect(node.addr, &m.access, Codec::MsgPack).await;
    let mut cn = connect(node.addr, &n.access, Codec::Json).await;

    // A channel: members read, only owners and admins write.
    let ch = ok(co
        .request(create(ConversationKind::Channel, &[&m.id], Some("news")))
        .await)
    .conversation
    .unwrap();
    assert_eq!(ch.title.as_deref(), Some("news"));
    let e = cm.request(send(&ch.id, "x", "can I?")).await;
    assert_eq!(err_code(&e), ErrorCode::Forbidden);
    ok(co.request(send(&ch.id, "y", "announcement")).await);
    cm.event(|f| matches!(f, ServerFrame::Message { .. })).await;

    // A group: a member cannot invite; the owner can.
    let g = group(&mut co, &[&m.id]).await;
    let e = cm
        .request(ClientFrame::Invite {
            req: None,
            conversation: g.clone(),
            users: vec![user(&n.id)],
        })
        .await;
    assert_eq!(err_code(&e), ErrorCode::Forbidden);
    let after = ok(co
        .request(ClientFrame::Invite {
            req: None,
            conversation: g.clone(),
            users: vec![user(&n.id)],
        })
        .await)
    .conversation
    .unwrap();
    assert_eq!(after.members.len(), 3);
    cn.event(|f| matches!(f, ServerFrame::Conversation { conversation } if conversation.id == g))
        .await;
    // The newcomer receives live messages now.
    ok(cm.request(send(&g, "hi-all", "welcome")).await);
    cn.event(|f| matches!(f, ServerFrame::Message { message } if message.body == "welcome"))
        .await;

    // Non-members are refused; unknown conversations and users are not found.
    let stranger = node.user(&unique("stranger")).await;
    let mut cs = connect(node.addr, &stranger.access, Codec::Json).await;
    assert_eq!(
        err_code(&cs.request(send(&g, "z", "let me in")).await),
        ErrorCode::Forbidden
    );
    assert_eq!(
        err_code(&cs.request(history(&g, None, None, None)).await),
        ErrorCode::Forbidden
    );
    assert_eq!(
        err_code(&cs.request(send(&conv("g:nope"), "z", "?")).await),
        ErrorCode::NotFound
    );
    let e = co
        .request(ClientFrame::Invite {
            req: None,
            conversation: g.clone(),
            users: vec![user("nobody-here")],
        })
        .await;
    assert_eq!(err_code(&e), ErrorCode::NotFound);

    // Kick: the kicked member is told and stops receiving.
    let after = ok(co
        .request(ClientFrame::Kick {
            req: None,
            conversation: g.clone(),
            user: user(&n.id),
        })
        .await)
    .conversation
    .unwrap();
    assert_eq!(after.members.len(), 2);
    cn.event(|f| matches!(f, ServerFrame::Conversation { conversation } if conversation.members.len() == 2)).await;
    assert_eq!(
        err_code(&cn.request(send(&g, "back", "still here?")).await),
        ErrorCode::Forbidden
    );

    // Leave: the owner leaves, the remaining member becomes owner.
    ok(co
        .request(ClientFrame::Leave {
            req: None,
            conversation: g.clone(),
        })
        .await);
    let ev = cm.event(|f| matches!(f, ServerFrame::Conversation { conversation } if conversation.members.len() == 1)).await;
    if let ServerFrame::Conversation { conversation } = ev {
        assert_eq!(conversation.members[0].role, chat_protocol::Role::Owner);
    }
    // A probe after the kick: the kicked user got nothing further.
    ok(cm.request(send(&g, "after-kick", "private")).await);
    ok(cn.request(ClientFrame::Ping { req: None }).await);
    assert!(
        !cn.events
            .iter()
            .any(|f| matches!(f, ServerFrame::Message { message } if message.body == "private")),
        "kicked user received a message"
    );
}

#[tokio::test]
async fn presence_watch_and_unwatch() {
    let node = TestNode::start().await;
    let a = node.user(&unique("watcher")).await;
    let b = node.user(&unique("watched")).await;
    let c = node.user(&unique("other")).await;
    let mut ca = connect(node.addr, &a.access, Codec::Json).await;
    // Presence is shown to those who share a conversation.
    group(&mut ca, &[&b.id, &c.id]).await;
    let w = ok(ca
        .request(ClientFrame::Watch {
            req: None,
            users: vec![user(&b.id)],
        })
        .await);
    let p = &w.presence.unwrap()[0];
    assert_eq!(p.status, Status::Offline);

    let mut cb = connect(node.addr, &b.access, Codec::Json).await;
    ca.event(|f| matches!(f, ServerFrame::Presence(p) if p.status == Status::Online))
        .await;
    cb.ws.close(None).await.unwrap();
    let off = ca
        .event(|f| matches!(f, ServerFrame::Presence(p) if p.status == Status::Offline))
        .await;
    assert!(matches!(off, ServerFrame::Presence(p) if p.last_seen.is_some()));

    ok(ca
        .request(ClientFrame::Unwatch {
            req: None,
            users: vec![user(&b.id)],
        })
        .await);
    let _cb2 = connect(node.addr, &b.access, Codec::Json).await;
    // A later change of another watched user proves the unwatched one was skipped.
    ok(ca
        .request(ClientFrame::Watch {
            req: None,
            users: vec![user(&c.id)],
        })
        .await);
    let _cc = connect(node.addr, &c.access, Codec::Json).await;
    ca.event(|f| matches!(f, ServerFrame::Presence(p) if p.user.as_str() == c.id))
        .await;
    assert!(!ca
        .events
        .iter()
        .any(|f| matches!(f, ServerFrame::Presence(p) if p.user.as_str() == b.id)));
}
