//! Sign-in with OpenID Connect (docs/protocol.md, "OpenID Connect"), end to
//! end against a real provider (NAV's mock-oauth2-server, started by the
//! test): a first sign-in makes an account, a second finds it, a verified
//! address links an existing account, an unverified one links nothing,
//! and a forged state, a browser without the flow's cookie or a nonce of
//! another flow are refused.

mod common;

use chat_auth_test::*;
use common::oidc::{browser, OidcProvider};
use common::*;
use serde_json::{json, Value};

/// The browser's side of the flow, by hand.
mod chat_auth_test {
    use super::*;

    pub const CALLBACK: &str = "http://chat.test/v1/auth/oidc/callback";

    pub fn encode(s: &str) -> String {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect()
    }

    pub fn location(r: &reqwest::Response) -> String {
        r.headers()
            .get("location")
            .unwrap_or_else(|| panic!("no Location: {}", r.status()))
            .to_str()
            .unwrap()
            .to_owned()
    }

    /// What a flow's start gave the browser: the provider's URL and the
    /// cookie.
    pub struct Started {
        pub authorize: String,
        pub cookie: String,
    }

    pub async fn start(node: &TestNode) -> Started {
        let r = browser()
            .get(format!("http://{}/v1/auth/oidc/start", node.addr))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 302);
        let cookie = r
            .headers()
            .get("set-cookie")
            .expect("the flow's cookie")
            .to_str()
            .unwrap()
            .split(';')
            .next()
            .unwrap()
            .to_owned();
        let set = r
            .headers()
            .get("set-cookie")
            .unwrap()
            .to_str()
            .unwrap()
            .to_owned();
        assert!(
            set.contains("HttpOnly") && set.contains("SameSite=Lax"),
            "{set}"
        );
        Started {
            authorize: location(&r),
            cookie,
        }
    }

    /// Signs in at the provider as `username` with `claims`: the query
    /// (`code=..&state=..`) it sends the browser back with.
    pub async fn at_provider(started: &Started, username: &str, claims: Value) -> String {
        let b = browser();
        let form = b.get(&started.authorize).send().await.unwrap();
        assert_eq!(form.status(), 200, "the login form");
        let body = format!(
            "username={}&claims={}",
            encode(username),
            encode(&claims.to_string())
        );
        let r = b
            .post(&started.authorize)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 302, "{}", r.text().await.unwrap_or_default());
        let back = location(&r);
        assert!(back.starts_with(CALLBACK), "{back}");
        back.split_once('?').unwrap().1.to_owned()
    }

    /// The node's callback with `query`, sending `cookie`: the status and
    /// where it sends the browser.
    pub async fn callback(node: &TestNode, query: &str, cookie: Option<&str>) -> (u16, String) {
        let mut req = browser().get(format!(
            "http://{}/v1/auth/oidc/callback?{query}",
            node.addr
        ));
        if let Some(c) = cookie {
            req = req.header("cookie", c);
        }
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        let to = r
            .headers()
            .get("location")
            .map(|l| l.to_str().unwrap().to_owned())
            .unwrap_or_default();
        (status, to)
    }

    /// The whole flow: the access token the web app is sent.
    pub async fn sign_in(node: &TestNode, username: &str, claims: Value) -> String {
        let started = start(node).await;
        let query = at_provider(&started, username, claims).await;
        let (status, to) = callback(node, &query, Some(&started.cookie)).await;
        assert_eq!(status, 302, "{to}");
        assert!(to.starts_with("/#/signed-in?access_token="), "{to}");
        let access = to["/#/signed-in?access_token=".len()..]
            .split('&')
            .next()
            .unwrap()
            .to_owned();
        assert!(to.contains("&refresh_token="), "{to}");
        access
    }
}

async fn node_for(provider: &OidcProvider) -> TestNode {
    let issuer = provider.issuer.clone();
    TestNode::start_with(move |c| {
        c.auth.oidc = Some(chat_node::auth::OidcConfig {
            issuer,
            client_id: "chat".into(),
            client_secret: "chat-secret".into(),
            redirect_url: CALLBACK.into(),
            name: "MockID".into(),
        });
    })
    .await
}

async fn me(node: &TestNode, access: &str) -> Value {
    let (s, v) = call_json(node.addr, "GET", "/v1/me", Some(access), None).await;
    assert_eq!(s, 200, "{v}");
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signing_in_makes_an_account_once_and_links_by_verified_address() {
    let provider = OidcProvider::start().await;
    let node = node_for(&provider).await;
    let (s, v) = call_json(node.addr, "GET", "/v1/auth/providers", None, None).await;
    assert_eq!((s, v), (200, json!({"oidc": {"name": "MockID"}})));

    // A first sign-in makes an account with the verified address.
    let name = unique("sso");
    let email = format!("{name}@corp.test");
    let claims = json!({"email": email, "email_verified": true, "preferred_username": name});
    let access = sign_in(&node, &name, claims.clone()).await;
    let first = me(&node, &access).await;
    assert_eq!(first["id"], json!(name));
    assert_eq!(first["email"], json!(email));
    assert_eq!(first["email_verified"], json!(true));
    // The second finds it (the provider's subject is the username).
    let again = sign_in(&node, &name, claims).await;
    assert_eq!(me(&node, &again).await["id"], json!(name));
    // The login is listed like any other.
    let (s, v) = call_json(node.addr, "GET", "/v1/me/sessions", Some(&again), None).await;
    assert_eq!(s, 200);
    assert_eq!(v["sessions"].as_array().unwrap().len(), 2);

    // An existing account with that address verified is signed in, under
    // another subject of the provider.
    let ann = node.user(&unique("ssoann")).await;
    let ann_email = format!("{}@corp.test", ann.id);
    let id = chat_protocol::UserId::new(&ann.id).unwrap();
    let store = &node.app.store;
    let address = chat_storage::EmailAddress {
        address: ann_email.clone(),
        verified: true,
        updated_at: chat_protocol::now_ms(),
    };
    store.put_email(&id, &address).await.unwrap();
    store.put_email_owner(&ann_email, &id).await.unwrap();
    let claims = json!({"email": ann_email.to_uppercase(), "email_verified": true});
    let access = sign_in(&node, &unique("anns-sso"), claims).await;
    assert_eq!(me(&node, &access).await["id"], json!(ann.id));

    // An address the provider did not verify links nothing: a new account.
    let claims = json!({"email": ann_email, "email_verified": false, "preferred_username": "ann"});
    let access = sign_in(&node, &unique("unverified"), claims).await;
    let other = me(&node, &access).await;
    assert_ne!(other["id"], json!(ann.id));
    assert!(other.get("email").is_none(), "{other}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_state_a_missing_cookie_or_another_flows_nonce_is_refused() {
    let provider = OidcProvider::start().await;
    let node = node_for(&provider).await;
    let claims = json!({"email": "x@corp.test", "email_verified": true});

    // The state in the redirect is not the browser's.
    let started = start(&node).await;
    let query = at_provider(&started, &unique("f"), claims.clone()).await;
    let code = query.split('&').find(|p| p.starts_with("code=")).unwrap();
    let (status, _) = callback(
        &node,
        &format!("{code}&state=forged"),
        Some(&started.cookie),
    )
    .await;
    assert_eq!(status, 401);
    // No cookie: no flow started in this browser.
    let started = start(&node).await;
    let query = at_provider(&started, &unique("f"), claims.clone()).await;
    let (status, _) = callback(&node, &query, None).await;
    assert_eq!(status, 401);
    // The cookie of this flow with one part from another flow's: another
    // nonce (the ID token names this flow's), or another PKCE verifier
    // (the provider refuses the code).
    for swapped in [1, 2] {
        let other = start(&node).await;
        let started = start(&node).await;
        let query = at_provider(&started, &unique("f"), claims.clone()).await;
        let parts = |c: &str| -> Vec<String> {
            c.split_once('=')
                .unwrap()
                .1
                .split('.')
                .map(str::to_owned)
                .collect()
        };
        let mut mixed = parts(&started.cookie);
        mixed[swapped] = parts(&other.cookie)[swapped].clone();
        let spliced = format!("chat_oidc={}", mixed.join("."));
        let (status, _) = callback(&node, &query, Some(&spliced)).await;
        assert_eq!(status, 401, "part {swapped} swapped");
    }
    // An untouched flow works, once.
    let started = start(&node).await;
    let query = at_provider(&started, &unique("f"), claims.clone()).await;
    let (status, _) = callback(&node, &query, Some(&started.cookie)).await;
    assert_eq!(status, 302);
    let (status, _) = callback(&node, &query, Some(&started.cookie)).await;
    assert_eq!(status, 401, "a code works once");
    // Without [auth.oidc], the routes say so.
    let plain = TestNode::start().await;
    let (s, v) = call_json(plain.addr, "GET", "/v1/auth/providers", None, None).await;
    assert_eq!((s, v), (200, json!({"oidc": null})));
    let (s, _) = call_json(plain.addr, "GET", "/v1/auth/oidc/start", None, None).await;
    assert_eq!(s, 404);
}
