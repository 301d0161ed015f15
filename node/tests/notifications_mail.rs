//! E-mail for people who are away (docs/protocol.md, "Notifications"),
//! end to end through a real SMTP server (Mailpit, read back through its
//! API): an address verified by its mailed link, digests of what stays
//! unread after the delay (and nothing read first, each message in one
//! mail), the signed unsubscribe link, and a mail server that is down at
//! first.

mod common;

use std::net::SocketAddr;

use chat_protocol::codec::Codec;
use chat_protocol::{ClientFrame, ConversationId, Message};
use common::mailpit::{mail_node, Mail, Mailpit};
use common::*;
use serde_json::{json, Value};

/// Sets `user`'s address: the status and answer.
async fn put_email(node: &TestNode, user: &TestUser, address: &str) -> (u16, Value) {
    call_json(
        node.addr,
        "PUT",
        "/v1/me/email",
        Some(&user.access),
        Some(json!({"email": address})),
    )
    .await
}

/// Opens a verification link's token: the status.
async fn verify(node: &TestNode, token: &str) -> u16 {
    call_json(
        node.addr,
        "POST",
        "/v1/auth/verify-email",
        None,
        Some(json!({"token": token})),
    )
    .await
    .0
}

/// The token of a verification mail.
fn token_in(mail: &Mail) -> String {
    let at = mail.text.find("verify-email?token=").expect("a link");
    mail.text[at + "verify-email?token=".len()..]
        .chars()
        .take_while(|c| c.is_ascii_hexdigit())
        .collect()
}

/// Gives `user` the address `address`, verified through the mailed link.
async fn verified(node: &TestNode, mail: &Mailpit, user: &TestUser, address: &str) {
    let (status, body) = put_email(node, user, address).await;
    assert_eq!(status, 202, "{body}");
    let mails = mail.wait_for(address, 1).await;
    assert_eq!(verify(node, &token_in(&mails[mails.len() - 1])).await, 204);
}

async fn send(c: &mut Client, conv: &ConversationId, key: &str, body: &str) -> Message {
    ok(c.request(frames::send(conv, key, body)).await)
        .message
        .expect("the stored message")
}

#[tokio::test]
async fn an_address_is_verified_by_its_mailed_link_once() {
    let mail = Mailpit::start().await;
    let (node, _serial) = mail_node(mail.smtp).await;
    let bob = node.user(&unique("bob")).await;
    let token = Some(bob.access.as_str());
    let address = format!("{}@example.com", bob.id.to_lowercase());
    for bad in [
        "not an address",
        "a@",
        &format!("{}@x.com", "a".repeat(300)),
    ] {
        assert_eq!(put_email(&node, &bob, bad).await.0, 400, "{bad}");
    }
    assert_eq!(put_email(&node, &bob, &address).await.0, 202);
    let (_, me) = call_json(node.addr, "GET", "/v1/me", token, None).await;
    assert_eq!(me["id"], bob.id.as_str());
    assert_eq!(me["email"], address.as_str());
    assert_eq!(me["email_verified"], false);
    assert_eq!(me["totp_enabled"], false);
    // A second change within a minute is refused: the address is not yet
    // known to be the user's, and must not be flooded.
    let (status, body) = put_email(&node, &bob, "victim@example.com").await;
    assert_eq!(status, 429, "{body}");

    let mails = mail.wait_for(&address, 1).await;
    assert_eq!(mails[0].subject, "Confirm your e-mail address");
    assert!(mails[0].html.contains("verify-email?token="));
    let link = token_in(&mails[0]);
    assert_eq!(
        verify(&node, &"0".repeat(64)).await,
        400,
        "an unknown token"
    );
    assert_eq!(verify(&node, &link).await, 204);
    assert_eq!(verify(&node, &link).await, 400, "a used token");
    let (_, me) = call_json(node.addr, "GET", "/v1/me", token, None).await;
    assert_eq!(me["email_verified"], true);
}

#[tokio::test]
async fn a_digest_lists_what_stays_unread_once_and_its_link_unsubscribes() {
    let mail = Mailpit::start().await;
    let (node, _serial) = mail_node(mail.smtp).await;
    let ann = node.user(&unique("ann")).await;
    let bob = node.user(&unique("bob")).await;
    let address = format!("{}@example.com", bob.id.to_lowercase());
    verified(&node, &mail, &bob, &address).await;
    let (status, body) = call_json(
        node.addr,
        "PUT",
        "/v1/me/notifications",
        Some(&bob.access),
        Some(json!({"email": {"delay_secs": 2}})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let mut a = connect(node.addr, &ann.access, Codec::Json).await;
    let kept = group(&mut a, &[&bob.id]).await;
    let read = group(&mut a, &[&bob.id]).await;

    // Two unread, one read within the delay.
    send(&mut a, &kept, "k1", "first of the kept").await;
    let gone = send(&mut a, &read, "r1", "read before the digest").await;
    let last = send(&mut a, &kept, "k2", "second of the kept").await;
    // Bob comes online only once the outbox has judged the three while he
    // was away: both conversations' cursors are past their messages.
    let store = node.app.store.clone();
    chat_testkit::eventually("the outbox past the three messages", || {
        let store = store.clone();
        let (kept, read) = (kept.clone(), read.clone());
        async move {
            let k = store
                .notify_cursor(&kept)
                .await
                .map_err(|e| e.to_string())?;
            let r = store
                .notify_cursor(&read)
                .await
                .map_err(|e| e.to_string())?;
            if k.last_id >= last.id && r.last_id >= gone.id {
                Ok(())
            } else {
                Err(format!("{k:?} {r:?}"))
            }
        }
    })
    .await;
    {
        let mut b = connect(node.addr, &bob.access, Codec::Json).await;
        ok(b.request(ClientFrame::Read {
            req: None,
            conversation: read.clone(),
            up_to: gone.id,
        })
        .await);
    }
    // Digest mails come after the verification mail.
    let mails = mail.wait_for(&address, 2).await;
    let digest = &mails[1];
    assert_eq!(digest.subject, "2 unread messages", "{digest:?}");
    assert!(digest.text.contains("first of the kept"));
    assert!(digest.text.contains("second of the kept"));
    assert!(!digest.text.contains("read before the digest"));
    assert!(digest.html.contains("first of the kept"));
    let unsubscribe = digest.headers["List-Unsubscribe"][0]
        .as_str()
        .expect("List-Unsubscribe")
        .trim_matches(['<', '>'])
        .to_owned();
    assert_eq!(
        digest.headers["List-Unsubscribe-Post"][0],
        "List-Unsubscribe=One-Click"
    );

    // A later message goes in a later mail, alone: each message once.
    chat_testkit::eventually("bob offline", || async {
        let p = node
            .app
            .presence
            .query(&[frames::user(&bob.id)])
            .await
            .unwrap();
        if p[0].status == chat_protocol::Status::Offline {
            Ok(())
        } else {
            Err("online".to_owned())
        }
    })
    .await;
    send(&mut a, &kept, "k3", "third of the kept").await;
    let mails = mail.wait_for(&address, 3).await;
    assert_eq!(mails[2].subject, "1 unread message");
    assert!(mails[2].text.contains("third of the kept"));
    assert!(!mails[2].text.contains("first of the kept"));

    // The link works without a token; a tampered one does not.
    let path = unsubscribe
        .strip_prefix("http://chat.test")
        .expect("the public URL");
    // The signature's last digit changed (to another digit, whatever it was).
    let flipped = if path.ends_with('0') { '1' } else { '0' };
    let tampered = format!("{}{flipped}", &path[..path.len() - 1]);
    let (status, _) = call_json(node.addr, "GET", &tampered, None, None).await;
    assert_eq!(status, 403);
    let (status, body) = call_json(node.addr, "POST", path, None, None).await;
    assert_eq!(status, 200, "{body}");
    let (_, settings) = call_json(
        node.addr,
        "GET",
        "/v1/me/notifications",
        Some(&bob.access),
        None,
    )
    .await;
    assert_eq!(settings["email"]["enabled"], false);
}

#[tokio::test]
async fn a_mail_server_down_at_first_gets_the_mail_once_it_is_up() {
    let port = chat_testkit::free_port();
    let smtp: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let (node, _serial) = mail_node(smtp).await;
    let bob = node.user(&unique("bob")).await;
    let address = format!("{}@example.com", bob.id.to_lowercase());
    let (status, _) = put_email(&node, &bob, &address).await;
    assert_eq!(status, 202, "the request does not wait for the mail server");
    wait_metric(
        node.addr,
        "chat_notifications_failed_total{channel=\"email\"}",
        1.0,
    )
    .await;
    let mail = Mailpit::start_on(port).await;
    let mails = mail.wait_for(&address, 1).await;
    assert_eq!(mails[0].subject, "Confirm your e-mail address");
}
