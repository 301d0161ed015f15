//! Roles (docs/protocol.md, "Roles"), end to end over real sockets: every
//! cell of the matrix (each action by an owner, an admin and a member, in
//! a group and in a channel, each on a conversation of its own), an owner
//! leaving, and the HTTP routes.

mod common;

use chat_protocol::codec::Codec;
use chat_protocol::{
    ClientFrame, ConversationId, ConversationKind, ErrorCode, MessageId, Role, ServerFrame, UserId,
};
use common::*;
use serde_json::json;

/// Who acts in a cell.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Actor {
    Owner,
    Admin,
    Member,
}

/// What is tried.
#[derive(Debug, Clone, Copy)]
enum Action {
    Send,
    React,
    Read,
    Invite,
    KickMember,
    KickAdmin,
    KickOwner,
    DeleteOthers,
    EditOthers,
    SetTitle,
    Promote,
    Demote,
    HandOver,
    Leave,
}

/// The people of one conversation: `owner`, `admin`, `member` act; `other`
/// (a member), `second` (another admin, who wrote `message`) and `outsider`
/// are acted on.
struct Cast {
    owner: TestUser,
    admin: TestUser,
    member: TestUser,
    other: TestUser,
    second: TestUser,
    outsider: TestUser,
}

fn uid(u: &TestUser) -> UserId {
    UserId::new(&u.id).unwrap()
}

/// A conversation of `kind` set up for one cell: its id and the second
/// admin's message.
async fn stage(
    node: &TestNode,
    cast: &Cast,
    kind: ConversationKind,
) -> (ConversationId, MessageId) {
    let mut o = connect(node.addr, &cast.owner.access, Codec::Json).await;
    let members = [
        &cast.admin.id,
        &cast.member.id,
        &cast.other.id,
        &cast.second.id,
    ];
    let members: Vec<&str> = members.iter().map(|s| s.as_str()).collect();
    let conv = ok(o.request(frames::create(kind, &members, Some("t"))).await)
        .conversation
        .unwrap()
        .id;
    for admin in [&cast.admin, &cast.second] {
        ok(o.request(ClientFrame::Role {
            req: None,
            conversation: conv.clone(),
            user: uid(admin),
            role: Role::Admin,
        })
        .await);
    }
    let mut s = connect(node.addr, &cast.second.access, Codec::Json).await;
    let m = ok(s
        .request(frames::send(&conv, &unique("m"), "by the second admin"))
        .await)
    .message
    .unwrap()
    .id;
    (conv, m)
}

fn frame(action: Action, cast: &Cast, conv: &ConversationId, message: MessageId) -> ClientFrame {
    let c = conv.clone();
    let role = |user: &TestUser, role| ClientFrame::Role {
        req: None,
        conversation: c.clone(),
        user: uid(user),
        role,
    };
    let kick = |user: &TestUser| ClientFrame::Kick {
        req: None,
        conversation: c.clone(),
        user: uid(user),
    };
    match action {
        Action::Send => frames::send(conv, &unique("s"), "hello"),
        Action::React => frames::react(conv, message, "👍", true),
        Action::Read => ClientFrame::Read {
            req: None,
            conversation: c,
            up_to: message,
        },
        Action::Invite => ClientFrame::Invite {
            req: None,
            conversation: c,
            users: vec![uid(&cast.outsider)],
        },
        Action::KickMember => kick(&cast.other),
        Action::KickAdmin => kick(&cast.second),
        Action::KickOwner => kick(&cast.owner),
        Action::DeleteOthers => frames::delete(conv, message),
        Action::EditOthers => frames::edit(conv, message, "not mine"),
        Action::SetTitle => ClientFrame::Title {
            req: None,
            conversation: c,
            title: Some("renamed".into()),
        },
        Action::Promote => role(&cast.other, Role::Admin),
        Action::Demote => role(&cast.second, Role::Member),
        Action::HandOver => role(&cast.other, Role::Owner),
        Action::Leave => ClientFrame::Leave {
            req: None,
            conversation: c,
        },
    }
}

/// The matrix: `None` allowed, else the error.
fn expected(action: Action, actor: Actor, kind: ConversationKind) -> Option<ErrorCode> {
    use Action::*;
    use Actor::*;
    let no = Some(ErrorCode::Forbidden);
    let channel = kind == ConversationKind::Channel;
    match (action, actor) {
        (React | Read | Leave, _) => None,
        (EditOthers, _) => no,
        (Send, Member) if channel => no,
        (Send, _) => None,
        // An owner kicking themself is told to leave instead.
        (KickOwner, Owner) => Some(ErrorCode::BadRequest),
        (KickOwner, _) => no,
        (Invite | KickMember | DeleteOthers | SetTitle, Owner | Admin) => None,
        (KickAdmin, Owner) => None,
        (Promote | Demote | HandOver, Owner) => None,
        _ => no,
    }
}

/// Checks the state a cell's allowed action leaves behind.
async fn check_effect(c: &mut Client, action: Action, cast: &Cast, conv: &ConversationId) {
    let members = ok(c
        .request(ClientFrame::Members {
            req: None,
            conversation: conv.clone(),
            after: None,
            limit: None,
        })
        .await)
    .members
    .unwrap();
    let role_of = |u: &TestUser| {
        members
            .iter()
            .find(|m| m.user.as_str() == u.id)
            .map(|m| m.role)
    };
    match action {
        Action::Invite => assert_eq!(role_of(&cast.outsider), Some(Role::Member)),
        Action::KickMember => assert_eq!(role_of(&cast.other), None),
        Action::KickAdmin => assert_eq!(role_of(&cast.second), None),
        Action::Promote => assert_eq!(role_of(&cast.other), Some(Role::Admin)),
        Action::Demote => assert_eq!(role_of(&cast.second), Some(Role::Member)),
        Action::HandOver => {
            assert_eq!(role_of(&cast.other), Some(Role::Owner));
            assert_eq!(role_of(&cast.owner), Some(Role::Admin), "one owner");
        }
        _ => {}
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_cell_of_the_role_matrix() {
    let node = TestNode::start().await;
    let cast = Cast {
        owner: node.user(&unique("rlown")).await,
        admin: node.user(&unique("rladm")).await,
        member: node.user(&unique("rlmem")).await,
        other: node.user(&unique("rloth")).await,
        second: node.user(&unique("rlsec")).await,
        outsider: node.user(&unique("rlout")).await,
    };
    let actions = [
        Action::Send,
        Action::React,
        Action::Read,
        Action::Invite,
        Action::KickMember,
        Action::KickAdmin,
        Action::KickOwner,
        Action::DeleteOthers,
        Action::EditOthers,
        Action::SetTitle,
        Action::Promote,
        Action::Demote,
        Action::HandOver,
        Action::Leave,
    ];
    let mut wrong = Vec::new();
    let mut cells = 0;
    for kind in [ConversationKind::Group, ConversationKind::Channel] {
        for actor in [Actor::Owner, Actor::Admin, Actor::Member] {
            let who = match actor {
                Actor::Owner => &cast.owner,
                Actor::Admin => &cast.admin,
                Actor::Member => &cast.member,
            };
            let mut c = connect(node.addr, &who.access, Codec::Json).await;
            for action in actions {
                let (conv, message) = stage(&node, &cast, kind).await;
                let answer = c.request(frame(action, &cast, &conv, message)).await;
                let got = match &answer {
                    ServerFrame::Ok(_) => None,
                    other => Some(err_code(other)),
                };
                let want = expected(action, actor, kind);
                cells += 1;
                if got != want {
                    wrong.push(format!(
                        "{kind:?} {actor:?} {action:?}: want {want:?}, got {answer:?}"
                    ));
                } else if got.is_none() && !matches!(action, Action::Leave) {
                    check_effect(&mut c, action, &cast, &conv).await;
                }
            }
        }
    }
    assert_eq!(cells, 2 * 3 * actions.len());
    assert!(
        wrong.is_empty(),
        "{} cells wrong:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}

#[tokio::test]
async fn an_owner_who_leaves_hands_the_group_to_the_oldest_admin_else_member() {
    let node = TestNode::start().await;
    let ann = node.user(&unique("olann")).await;
    let bob = node.user(&unique("olbob")).await;
    let cat = node.user(&unique("olcat")).await;
    let dan = node.user(&unique("oldan")).await;
    let mut a = connect(node.addr, &ann.access, Codec::Json).await;
    let mut b = connect(node.addr, &bob.access, Codec::Json).await;
    let conv = group(&mut a, &[&bob.id, &cat.id, &dan.id]).await;
    // Dan is made admin before Cat: Dan is the oldest admin.
    for u in [&dan, &cat] {
        ok(a.request(ClientFrame::Role {
            req: None,
            conversation: conv.clone(),
            user: uid(u),
            role: Role::Admin,
        })
        .await);
    }
    ok(a.request(ClientFrame::Leave {
        req: None,
        conversation: conv.clone(),
    })
    .await);
    let role_of = |members: &[chat_protocol::Member], u: &TestUser| {
        members
            .iter()
            .find(|m| m.user.as_str() == u.id)
            .map(|m| m.role)
    };
    let members = ok(b
        .request(ClientFrame::Members {
            req: None,
            conversation: conv.clone(),
            after: None,
            limit: None,
        })
        .await)
    .members
    .unwrap();
    let owner = members.iter().find(|m| m.role == Role::Owner).unwrap();
    assert!(
        owner.user.as_str() == dan.id || owner.user.as_str() == cat.id,
        "{members:?}"
    );
    assert_eq!(role_of(&members, &bob), Some(Role::Member));
    // No admin left: the oldest member.
    let solo = group(&mut a, &[&bob.id, &cat.id]).await;
    ok(a.request(ClientFrame::Leave {
        req: None,
        conversation: solo.clone(),
    })
    .await);
    let members = ok(b
        .request(ClientFrame::Members {
            req: None,
            conversation: solo,
            after: None,
            limit: None,
        })
        .await)
    .members
    .unwrap();
    assert_eq!(
        members.iter().filter(|m| m.role == Role::Owner).count(),
        1,
        "{members:?}"
    );
}

#[tokio::test]
async fn roles_and_titles_over_http() {
    let node = TestNode::start().await;
    let addr = node.addr;
    let ann = node.user(&unique("rhann")).await;
    let bob = node.user(&unique("rhbob")).await;
    let mut a = connect(addr, &ann.access, Codec::Json).await;
    let mut b = connect(addr, &bob.access, Codec::Json).await;
    let conv = group(&mut a, &[&bob.id]).await;
    let path = format!("/v1/conversations/{}/members/{}", conv.as_str(), bob.id);

    let (s, v) = call_json(
        addr,
        "PUT",
        &path,
        Some(&bob.access),
        Some(json!({"role": "admin"})),
    )
    .await;
    assert_eq!((s, v["code"].as_str()), (403, Some("forbidden")), "{v}");
    let (s, v) = call_json(
        addr,
        "PUT",
        &path,
        Some(&ann.access),
        Some(json!({"role": "king"})),
    )
    .await;
    assert_eq!(s, 400, "{v}");
    let (s, v) = call_json(
        addr,
        "PUT",
        &path,
        Some(&ann.access),
        Some(json!({"role": "admin"})),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let bob_role = v["conversation"]["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["user"] == json!(bob.id))
        .unwrap()["role"]
        .clone();
    assert_eq!(bob_role, json!("admin"));
    // Bob's connection hears of it.
    b.event(|f| {
        matches!(f, ServerFrame::Conversation { conversation }
            if conversation.members.iter().any(|m| m.user.as_str() == bob.id && m.role == Role::Admin))
    })
    .await;

    // Bob, now an admin, sets the title; everyone hears.
    let title_path = format!("/v1/conversations/{}", conv.as_str());
    let (s, v) = call_json(
        addr,
        "PATCH",
        &title_path,
        Some(&bob.access),
        Some(json!({"title": "Plans"})),
    )
    .await;
    assert_eq!(
        (s, &v["conversation"]["title"]),
        (200, &json!("Plans")),
        "{v}"
    );
    a.event(|f| matches!(f, ServerFrame::Conversation { conversation } if conversation.title.as_deref() == Some("Plans")))
        .await;
    let (s, _) = call_json(
        addr,
        "PATCH",
        &title_path,
        Some(&bob.access),
        Some(json!({"title": "x".repeat(300)})),
    )
    .await;
    assert_eq!(s, 413);
    let (s, _) = call_json(
        addr,
        "PATCH",
        &title_path,
        Some(&bob.access),
        Some(json!({"title": "a\u{1}b"})),
    )
    .await;
    assert_eq!(s, 400);
    let unknown = format!("/v1/conversations/{}/members/{}", unique("nope"), bob.id);
    let (s, _) = call_json(
        addr,
        "PUT",
        &unknown,
        Some(&ann.access),
        Some(json!({"role": "admin"})),
    )
    .await;
    assert_eq!(s, 404);
    let stranger = format!(
        "/v1/conversations/{}/members/{}",
        conv.as_str(),
        unique("nobody")
    );
    let (s, _) = call_json(
        addr,
        "PUT",
        &stranger,
        Some(&ann.access),
        Some(json!({"role": "admin"})),
    )
    .await;
    assert_eq!(s, 404);
    // A direct conversation has no roles.
    let direct = ok(a
        .request(frames::create(ConversationKind::Direct, &[&bob.id], None))
        .await)
    .conversation
    .unwrap()
    .id;
    let path = format!("/v1/conversations/{}/members/{}", direct.as_str(), bob.id);
    let (s, _) = call_json(
        addr,
        "PUT",
        &path,
        Some(&ann.access),
        Some(json!({"role": "admin"})),
    )
    .await;
    assert_eq!(s, 403);
}
