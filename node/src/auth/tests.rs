//! The unit tests of [`super`]: keys and tokens, accounts, logins and
//! refresh rotation, on a real embedded store.

use std::fs;
use std::path::PathBuf;

use chat_protocol::ErrorCode;
use chat_storage::embedded::{Durability, EmbeddedStore};
use chat_storage::AccountStore;

use super::keys::MIN_SECRET_BYTES;
use super::passwords::DUMMY_PHC;
use super::*;

/// Ed25519 pair made with `openssl genpkey -algorithm ed25519`.
const ED_PRIVATE: &str = "-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEIBK6W2D45NlCWX9WiqSwST5Usoulrm5fuY03vzedlODY
-----END PRIVATE KEY-----
";
const ED_PUBLIC: &str = "-----BEGIN PUBLIC KEY-----
MCowBQYDK2VwAyEAoVZmlCvAKPunuWDyL+GEyp2rF46KAG5ClecI7q4esM8=
-----END PUBLIC KEY-----
";
/// The public half of another Ed25519 key.
const ED_OTHER_PUBLIC: &str = "-----BEGIN PUBLIC KEY-----
MCowBQYDK2VwAyEAc8y+nPI7kb7z06SNRllb6I5a9vSSN9dOd1/bkxifj2E=
-----END PUBLIC KEY-----
";
const SECRET: &str = "0123456789abcdef0123456789abcdef-test-secret";

fn hs256(secret: &str) -> AuthConfig {
    AuthConfig {
        jwt_secret: Some(secret.to_owned()),
        ..AuthConfig::default()
    }
}

fn auth(cfg: &AuthConfig) -> Auth {
    let dir = tempfile::tempdir().unwrap();
    Auth::from_config(cfg, dir.path()).unwrap()
}

fn uid(s: &str) -> UserId {
    UserId::new(s).unwrap()
}

fn sign_raw(auth: &Auth, claims: &serde_json::Value) -> String {
    let header = jsonwebtoken::Header::new(auth.algorithm.to_jwt());
    jsonwebtoken::encode(&header, claims, auth.encoding.as_ref().unwrap()).unwrap()
}

#[test]
fn hs256_issue_and_verify() {
    let auth = auth(&hs256(SECRET));
    let (token, exp) = auth.issue_access(&uid("alice"), Some("fam")).unwrap();
    let now = now_secs();
    assert!(exp >= now + 899 && exp <= now + 901);
    let claims = auth.verify(&token).unwrap();
    assert_eq!(
        claims,
        Claims {
            sub: uid("alice"),
            exp,
            sid: Some("fam".into())
        }
    );
    let (token, _) = auth.issue_access(&uid("bob"), None).unwrap();
    assert_eq!(auth.verify(&token).unwrap().sid, None);
}

#[test]
fn tampered_or_foreign_tokens_are_rejected() {
    let auth = auth(&hs256(SECRET));
    let (alice, _) = auth.issue_access(&uid("alice"), None).unwrap();
    let (mallory, _) = auth.issue_access(&uid("mallory"), None).unwrap();
    let a: Vec<&str> = alice.split('.').collect();
    let m: Vec<&str> = mallory.split('.').collect();

    // Another user's claims under alice's signature.
    let spliced = format!("{}.{}.{}", a[0], m[1], a[2]);
    assert!(matches!(
        auth.verify(&spliced),
        Err(AuthError::InvalidToken(_))
    ));

    // One signature character changed.
    let mut sig: Vec<u8> = a[2].bytes().collect();
    sig[10] = if sig[10] == b'A' { b'B' } else { b'A' };
    let flipped = format!("{}.{}.{}", a[0], a[1], String::from_utf8(sig).unwrap());
    assert!(matches!(
        auth.verify(&flipped),
        Err(AuthError::InvalidToken(_))
    ));

    // Signed with another secret.
    let other = self::auth(&hs256("another secret that is long enough!!"));
    let (foreign, _) = other.issue_access(&uid("alice"), None).unwrap();
    assert!(matches!(
        auth.verify(&foreign),
        Err(AuthError::InvalidToken(_))
    ));

    for junk in ["", "abc", "a.b.c", &"x".repeat(MAX_ACCESS_TOKEN_BYTES + 1)] {
        assert!(matches!(auth.verify(junk), Err(AuthError::InvalidToken(_))));
    }
}

#[test]
fn bad_sub_is_rejected() {
    let auth = auth(&hs256(SECRET));
    let exp = now_secs() + 60;
    let token = sign_raw(
        &auth,
        &serde_json::json!({ "sub": "no spaces", "exp": exp }),
    );
    assert!(matches!(
        auth.verify(&token),
        Err(AuthError::InvalidToken(_))
    ));
    let token = sign_raw(&auth, &serde_json::json!({ "exp": exp }));
    assert!(matches!(
        auth.verify(&token),
        Err(AuthError::InvalidToken(_))
    ));
    let token = sign_raw(&auth, &serde_json::json!({ "sub": "alice" }));
    assert!(matches!(
        auth.verify(&token),
        Err(AuthError::InvalidToken(_))
    ));
    // An outside IdP's non-string sid is ignored, not fatal.
    let token = sign_raw(
        &auth,
        &serde_json::json!({ "sub": "alice", "exp": exp, "sid": 7 }),
    );
    assert_eq!(auth.verify(&token).unwrap().sid, None);
}

#[test]
fn expired_token_is_rejected_beyond_leeway() {
    let auth = auth(&hs256(SECRET));
    let now = now_secs();
    let expired = sign_raw(
        &auth,
        &serde_json::json!({ "sub": "alice", "exp": now - 60 }),
    );
    assert!(matches!(auth.verify(&expired), Err(AuthError::Expired)));
    assert_eq!(AuthError::Expired.code(), ErrorCode::Unauthorized);
    // Within the 5 s leeway: clock skew between nodes must not log users out.
    let skewed = sign_raw(
        &auth,
        &serde_json::json!({ "sub": "alice", "exp": now - 2 }),
    );
    assert_eq!(auth.verify(&skewed).unwrap().sub, uid("alice"));
}

#[test]
fn issuer_and_audience_are_checked_when_configured() {
    let strict = auth(&AuthConfig {
        issuer: Some("https://chat.example".into()),
        audience: Some("chat".into()),
        ..hs256(SECRET)
    });
    let (good, _) = strict.issue_access(&uid("alice"), None).unwrap();
    assert_eq!(strict.verify(&good).unwrap().sub, uid("alice"));

    let exp = now_secs() + 60;
    let cases = [
        serde_json::json!({ "sub": "a", "exp": exp }),
        serde_json::json!({ "sub": "a", "exp": exp, "aud": "chat" }),
        serde_json::json!({ "sub": "a", "exp": exp, "iss": "https://chat.example" }),
        serde_json::json!({ "sub": "a", "exp": exp, "iss": "https://evil", "aud": "chat" }),
        serde_json::json!({ "sub": "a", "exp": exp, "iss": "https://chat.example", "aud": "other" }),
    ];
    for claims in cases {
        let token = sign_raw(&strict, &claims);
        assert!(
            matches!(strict.verify(&token), Err(AuthError::InvalidToken(_))),
            "{claims}"
        );
    }

    // Without configured iss/aud, tokens carrying them are accepted.
    let lax = auth(&hs256(SECRET));
    assert_eq!(lax.verify(&good).unwrap().sub, uid("alice"));
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    fs::write(&path, text).unwrap();
    path
}

#[tokio::test]
async fn eddsa_with_pem_keys() {
    let dir = tempfile::tempdir().unwrap();
    let public = write(dir.path(), "pub.pem", ED_PUBLIC);
    let private = write(dir.path(), "priv.pem", ED_PRIVATE);
    let other_public = write(dir.path(), "other.pem", ED_OTHER_PUBLIC);
    let cfg = AuthConfig {
        algorithm: Algorithm::EdDSA,
        public_key_file: Some(public.clone()),
        private_key_file: Some(private.clone()),
        ..AuthConfig::default()
    };
    let issuer = Auth::from_config(&cfg, dir.path()).unwrap();
    assert!(issuer.can_issue());
    let (token, _) = issuer.issue_access(&uid("alice"), None).unwrap();
    assert_eq!(issuer.verify(&token).unwrap().sub, uid("alice"));

    // A verify-only node, as with an outside identity provider.
    let verify_only = Auth::from_config(
        &AuthConfig {
            private_key_file: None,
            ..cfg.clone()
        },
        dir.path(),
    )
    .unwrap();
    assert!(!verify_only.can_issue());
    assert_eq!(verify_only.verify(&token).unwrap().sub, uid("alice"));
    assert!(matches!(
        verify_only.issue_access(&uid("alice"), None),
        Err(AuthError::CannotIssue)
    ));
    let (_dir, store) = test_store();
    let err = verify_only
        .register(&store, &register_req("alice", "password1"), LOCAL)
        .await
        .unwrap_err();
    assert!(matches!(err, AuthError::CannotIssue));

    // An HS256 token must not pass an EdDSA verifier.
    let hs = auth(&hs256(SECRET));
    let (hs_token, _) = hs.issue_access(&uid("alice"), None).unwrap();
    assert!(matches!(
        verify_only.verify(&hs_token),
        Err(AuthError::InvalidToken(_))
    ));

    // Another key rejects the token.
    let other = Auth::from_config(
        &AuthConfig {
            public_key_file: Some(other_public.clone()),
            private_key_file: None,
            ..cfg.clone()
        },
        dir.path(),
    )
    .unwrap();
    assert!(matches!(
        other.verify(&token),
        Err(AuthError::InvalidToken(_))
    ));

    // Keys that are not a pair are refused at startup.
    let mismatched = AuthConfig {
        public_key_file: Some(other_public),
        ..cfg.clone()
    };
    assert!(matches!(
        Auth::from_config(&mismatched, dir.path()),
        Err(AuthError::Config(_))
    ));
    // So are a missing public key, a secret, and garbage.
    for bad in [
        AuthConfig {
            public_key_file: None,
            ..cfg.clone()
        },
        AuthConfig {
            jwt_secret: Some(SECRET.into()),
            ..cfg.clone()
        },
        AuthConfig {
            public_key_file: Some(write(dir.path(), "junk.pem", "junk")),
            ..cfg.clone()
        },
        AuthConfig {
            public_key_file: Some(dir.path().join("missing.pem")),
            ..cfg.clone()
        },
    ] {
        assert!(matches!(
            Auth::from_config(&bad, dir.path()),
            Err(AuthError::Config(_))
        ));
    }
}

/// RS256 keys need generating; skipped (with a note) without `openssl`.
#[test]
fn rs256_with_openssl_generated_keys() {
    let dir = tempfile::tempdir().unwrap();
    let private = dir.path().join("rsa.pem");
    let public = dir.path().join("rsa.pub.pem");
    let generated = std::process::Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
        ])
        .arg(&private)
        .output()
        .is_ok_and(|o| o.status.success())
        && std::process::Command::new("openssl")
            .args(["pkey", "-pubout", "-in"])
            .arg(&private)
            .arg("-out")
            .arg(&public)
            .output()
            .is_ok_and(|o| o.status.success());
    if !generated {
        eprintln!("openssl not available: RS256 test skipped");
        return;
    }
    let cfg = AuthConfig {
        algorithm: Algorithm::RS256,
        public_key_file: Some(public),
        private_key_file: Some(private),
        issuer: Some("idp".into()),
        ..AuthConfig::default()
    };
    let auth = Auth::from_config(&cfg, dir.path()).unwrap();
    let (token, _) = auth.issue_access(&uid("carol"), Some("f")).unwrap();
    let claims = auth.verify(&token).unwrap();
    assert_eq!((claims.sub, claims.sid), (uid("carol"), Some("f".into())));
}

#[test]
fn dev_secret_is_persisted_and_reused() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let first = Auth::from_config(&AuthConfig::default(), &data_dir).unwrap();
    let (token, _) = first.issue_access(&uid("alice"), None).unwrap();
    let path = data_dir.join(DEV_SECRET_FILE);
    let stored = fs::read_to_string(&path).unwrap();
    assert_eq!(stored.len(), 2 * MIN_SECRET_BYTES);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    let second = Auth::from_config(&AuthConfig::default(), &data_dir).unwrap();
    assert_eq!(second.verify(&token).unwrap().sub, uid("alice"));
    assert_eq!(fs::read_to_string(&path).unwrap(), stored);
    // No temporary files are left behind.
    assert_eq!(fs::read_dir(&data_dir).unwrap().count(), 1);

    let elsewhere = self::auth(&AuthConfig::default());
    assert!(elsewhere.verify(&token).is_err());

    fs::write(&path, "not hex").unwrap();
    assert!(matches!(
        Auth::from_config(&AuthConfig::default(), &data_dir),
        Err(AuthError::Config(_))
    ));
}

#[test]
fn config_defaults_names_and_checks() {
    let cfg: AuthConfig = serde_json::from_str("{}").unwrap();
    assert_eq!(cfg, AuthConfig::default());
    assert_eq!(
        (
            cfg.algorithm,
            cfg.access_ttl_secs,
            cfg.refresh_ttl_secs,
            cfg.leeway_secs
        ),
        (Algorithm::HS256, 900, 2_592_000, 5)
    );
    for (name, alg) in [
        ("HS256", Algorithm::HS256),
        ("RS256", Algorithm::RS256),
        ("EdDSA", Algorithm::EdDSA),
    ] {
        let cfg: AuthConfig =
            serde_json::from_str(&format!(r#"{{"algorithm":"{name}"}}"#)).unwrap();
        assert_eq!(cfg.algorithm, alg);
    }
    assert!(serde_json::from_str::<AuthConfig>(r#"{"algorithm":"none"}"#).is_err());
    assert!(serde_json::from_str::<AuthConfig>(r#"{"secret":"x"}"#).is_err());
    assert!(!format!("{:?}", hs256(SECRET)).contains(SECRET));

    let dir = tempfile::tempdir().unwrap();
    for bad in [
        hs256(""),
        AuthConfig {
            access_ttl_secs: 0,
            ..hs256(SECRET)
        },
        AuthConfig {
            issuer: Some(String::new()),
            ..hs256(SECRET)
        },
        AuthConfig {
            leeway_secs: u64::MAX,
            ..hs256(SECRET)
        },
        AuthConfig {
            public_key_file: Some("k.pem".into()),
            ..hs256(SECRET)
        },
    ] {
        assert!(matches!(
            Auth::from_config(&bad, dir.path()),
            Err(AuthError::Config(_))
        ));
    }
}

#[test]
fn error_codes_and_statuses() {
    assert_eq!(AuthError::BadCredentials.http_status(), 401);
    assert_eq!(
        AuthError::InvalidToken("x".into()).code(),
        ErrorCode::Unauthorized
    );
    // The code agrees with the status: a taken name is a conflict.
    assert_eq!(AuthError::UsernameTaken.code(), ErrorCode::Conflict);
    assert_eq!(AuthError::UsernameTaken.http_status(), 409);
    assert_eq!(AuthError::Busy.http_status(), 503);
    assert_eq!(AuthError::Busy.retry_after_ms(), Some(1000));
    let limited = AuthError::RateLimited {
        retry_after_ms: 2500,
    };
    assert_eq!(limited.http_status(), 429);
    assert_eq!(limited.retry_after_ms(), Some(2500));
    assert_eq!(AuthError::InvalidInput("x".into()).http_status(), 400);
    let unavailable = AuthError::Store(StoreError::Unavailable("down".into()));
    assert_eq!(unavailable.code(), ErrorCode::Unavailable);
    assert_eq!(unavailable.http_status(), 503);
    assert_eq!(
        AuthError::Store(StoreError::Conflict).code(),
        ErrorCode::Internal
    );
    assert_eq!(AuthError::CannotIssue.http_status(), 500);
}

#[test]
fn dummy_hash_costs_what_a_real_one_does() {
    let parsed = argon2::PasswordHash::new(DUMMY_PHC).unwrap();
    let params = argon2::Params::try_from(&parsed).unwrap();
    let default = argon2::Params::default();
    assert_eq!(
        (params.m_cost(), params.t_cost(), params.p_cost()),
        (default.m_cost(), default.t_cost(), default.p_cost())
    );
    assert_eq!(parsed.algorithm.as_str(), "argon2id");
}

#[test]
fn refresh_token_format() {
    let auth = auth(&hs256(SECRET));
    let family = logins::new_login(&uid("a.b:c"), 0);
    let (token, record) = auth.new_refresh(&uid("a.b:c"), &family);
    let (user, fam) = parse_refresh_token(&token).unwrap();
    assert_eq!((user, fam), (uid("a.b:c"), family.as_str()));
    assert_eq!(record.token_hash, hash_token(&token));
    assert_eq!(record.token_hash.len(), 64);
    assert!(!record.token_hash.contains(&token));
    for bad in ["", "x", "a.b.c", &format!("{family}.{}", "0".repeat(64))] {
        assert!(parse_refresh_token(bad).is_none(), "{bad}");
    }
}

// ---- register, login, refresh, logout over a real store ----

/// A real embedded store in a directory removed with the guard.
fn test_store() -> (tempfile::TempDir, EmbeddedStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(&dir.path().join("store"), Durability::Sync).unwrap();
    (dir, store)
}

const LOCAL: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

fn register_req(username: &str, password: &str) -> RegisterRequest {
    RegisterRequest {
        username: username.into(),
        password: password.into(),
        display_name: None,
    }
}

fn login_req(username: &str, password: &str) -> LoginRequest {
    LoginRequest {
        username: username.into(),
        password: password.into(),
        totp: None,
        recovery_code: None,
    }
}

#[tokio::test]
async fn register_then_login() {
    let auth = auth(&hs256(SECRET));
    let (_dir, store) = test_store();
    let registered = auth
        .register(
            &store,
            &RegisterRequest {
                display_name: Some("  Alice A.  ".into()),
                ..register_req("alice", "correct horse")
            },
            LOCAL,
        )
        .await
        .unwrap();
    assert_eq!(registered.user.id, uid("alice"));
    assert_eq!(registered.user.display_name.as_deref(), Some("Alice A."));
    assert_eq!(registered.expires_in, 900);
    let claims = auth.verify(&registered.access_token).unwrap();
    assert_eq!(claims.sub, uid("alice"));
    let family = claims.sid.unwrap();
    assert_eq!(
        parse_refresh_token(&registered.refresh_token).unwrap().1,
        family
    );

    let stored = store.user(&uid("alice")).await.unwrap().unwrap();
    let phc = stored.password_hash.unwrap();
    assert!(phc.starts_with("$argon2id$"));
    assert!(!phc.contains("correct horse"));
    // The refresh token lives refresh_ttl_secs (30 days): the store
    // refuses it a minute after, and rotates it a minute before.
    let presented = hash_token(&registered.refresh_token);
    let next = RefreshRecord {
        token_hash: hash_token("the next token"),
        user: uid("alice"),
        family: family.clone(),
        expires_at: u64::MAX,
    };
    let ttl_ms = 30 * 24 * 3600 * 1000;
    let late = store
        .rotate_refresh(&presented, &next, now_ms() + ttl_ms + 60_000)
        .await
        .unwrap();
    assert_eq!(late, Rotation::Invalid);
    let in_time = store
        .rotate_refresh(&presented, &next, now_ms() + ttl_ms - 60_000)
        .await
        .unwrap();
    assert_eq!(in_time, Rotation::Rotated { user: uid("alice") });

    let logged_in = auth
        .login(&store, &login_req("alice", "correct horse"), LOCAL)
        .await
        .unwrap();
    assert_eq!(logged_in.user, registered.user);
    let login_family = auth.verify(&logged_in.access_token).unwrap().sid.unwrap();
    assert_ne!(login_family, family, "each login is its own family");

    let json = serde_json::to_value(&logged_in).unwrap();
    assert_eq!(json["user"]["id"], "alice");
    assert!(json["refresh_token"].is_string());
    assert!(!format!("{logged_in:?}").contains(&logged_in.refresh_token));
}

#[tokio::test]
async fn wrong_password_unknown_user_and_passwordless_user_fail_alike() {
    let auth = auth(&hs256(SECRET));
    let (_dir, store) = test_store();
    auth.register(&store, &register_req("alice", "correct horse"), LOCAL)
        .await
        .unwrap();
    store
        .create_user(&UserRecord {
            id: uid("idp-user"),
            password_hash: None,
            display_name: None,
            created_at: 1,
        })
        .await
        .unwrap();
    for (user, password) in [
        ("alice", "wrong horse"),
        ("nobody", "correct horse"),
        // The dummy hash's own password must not open unknown accounts.
        ("nobody", "dummy password that no one has"),
        ("idp-user", "dummy password that no one has"),
    ] {
        let err = auth
            .login(&store, &login_req(user, password), LOCAL)
            .await
            .unwrap_err();
        assert!(matches!(err, AuthError::BadCredentials), "{user}: {err}");
    }
}

#[tokio::test]
async fn duplicate_username_and_invalid_input() {
    let auth = auth(&hs256(SECRET));
    let (_dir, store) = test_store();
    auth.register(&store, &register_req("alice", "password1"), LOCAL)
        .await
        .unwrap();
    let err = auth
        .register(&store, &register_req("alice", "password2"), LOCAL)
        .await
        .unwrap_err();
    assert!(matches!(err, AuthError::UsernameTaken));
    assert_eq!(err.http_status(), 409);

    let long_name = "n".repeat(MAX_DISPLAY_NAME_BYTES + 1);
    let bad = [
        register_req("", "password1"),
        register_req("has space", "password1"),
        register_req(&"u".repeat(65), "password1"),
        register_req("bob", "short"),
        register_req("bob", &"p".repeat(MAX_PASSWORD_BYTES + 1)),
        RegisterRequest {
            display_name: Some(long_name),
            ..register_req("bob", "password1")
        },
        RegisterRequest {
            display_name: Some("bell\u{7}".into()),
            ..register_req("bob", "password1")
        },
    ];
    for req in bad {
        let err = auth.register(&store, &req, LOCAL).await.unwrap_err();
        assert!(matches!(err, AuthError::InvalidInput(_)), "{req:?}: {err}");
    }
    assert!(store.user(&uid("bob")).await.unwrap().is_none());
    let err = auth
        .login(&store, &login_req("bad name", "password1"), LOCAL)
        .await
        .unwrap_err();
    assert!(matches!(err, AuthError::InvalidInput(_)));
}

#[tokio::test]
async fn refresh_rotates_and_reuse_revokes_the_family() {
    let auth = auth(&hs256(SECRET));
    let (_dir, store) = test_store();
    let first = auth
        .register(&store, &register_req("alice", "password1"), LOCAL)
        .await
        .unwrap();
    let family = auth.verify(&first.access_token).unwrap().sid;

    let second = auth.refresh(&store, &first.refresh_token).await.unwrap();
    assert_ne!(second.refresh_token, first.refresh_token);
    assert_eq!(second.user.id, uid("alice"));
    let claims = auth.verify(&second.access_token).unwrap();
    assert_eq!((claims.sub, claims.sid), (uid("alice"), family));

    let third = auth.refresh(&store, &second.refresh_token).await.unwrap();

    // The old token is used up; presenting it again (theft) revokes the
    // family, so the newest token stops working too.
    let err = auth
        .refresh(&store, &first.refresh_token)
        .await
        .unwrap_err();
    assert!(matches!(err, AuthError::InvalidToken(_)));
    let err = auth
        .refresh(&store, &third.refresh_token)
        .await
        .unwrap_err();
    assert!(matches!(err, AuthError::InvalidToken(_)));
    assert_eq!(err.code(), ErrorCode::Unauthorized);

    // Another login of the same user is unaffected.
    let other = auth
        .login(&store, &login_req("alice", "password1"), LOCAL)
        .await
        .unwrap();
    auth.refresh(&store, &other.refresh_token).await.unwrap();

    for junk in ["", "garbage", &first.refresh_token.replace("alice", "bob")] {
        let err = auth.refresh(&store, junk).await.unwrap_err();
        assert!(matches!(err, AuthError::InvalidToken(_)), "{junk}");
    }
}

#[tokio::test]
async fn logout_revokes_and_is_idempotent() {
    let auth = auth(&hs256(SECRET));
    let (_dir, store) = test_store();
    let session = auth
        .register(&store, &register_req("alice", "password1"), LOCAL)
        .await
        .unwrap();
    let rotated = auth.refresh(&store, &session.refresh_token).await.unwrap();
    auth.logout(&store, &rotated.refresh_token).await.unwrap();
    let err = auth
        .refresh(&store, &rotated.refresh_token)
        .await
        .unwrap_err();
    assert!(matches!(err, AuthError::InvalidToken(_)));

    auth.logout(&store, &rotated.refresh_token).await.unwrap();
    auth.logout(&store, &session.refresh_token).await.unwrap();
    auth.logout(&store, "not a token").await.unwrap();
}
