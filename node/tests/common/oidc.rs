//! A real OpenID Connect provider for the sign-in tests: NAV's
//! mock-oauth2-server (scripts/oidc.sh fetches its jars from Maven Central),
//! run with `java` on a free loopback port. Its login form is posted as a
//! person would fill it in: a username and the claims of the ID token.

use std::path::PathBuf;
use std::process::Stdio;

use tokio::process::{Child, Command};

/// A running provider.
pub struct OidcProvider {
    /// Its issuer URL (the `default` issuer).
    pub issuer: String,
    _child: Child,
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

impl OidcProvider {
    /// Starts one (fetching its jars on first use) and waits until its
    /// discovery document answers.
    pub async fn start() -> OidcProvider {
        let out = Command::new("bash")
            .arg(repo().join("scripts/oidc.sh"))
            .arg("classpath")
            .stderr(Stdio::inherit())
            .output()
            .await
            .expect("scripts/oidc.sh runs");
        assert!(out.status.success(), "scripts/oidc.sh classpath failed");
        let classpath = String::from_utf8(out.stdout).unwrap().trim().to_owned();
        let port = chat_testkit::free_port();
        let child = Command::new("java")
            .arg("-cp")
            .arg(&classpath)
            .arg("no.nav.security.mock.oauth2.StandaloneMockOAuth2ServerKt")
            .env("SERVER_PORT", port.to_string())
            .env("SERVER_HOSTNAME", "127.0.0.1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("java starts the provider");
        let issuer = format!("http://127.0.0.1:{port}/default");
        let discovery = format!("{issuer}/.well-known/openid-configuration");
        let client = browser();
        chat_testkit::eventually_within(
            "the OpenID Connect provider answers",
            std::time::Duration::from_secs(90),
            || {
                let (client, discovery) = (client.clone(), discovery.clone());
                async move {
                    let r = client
                        .get(&discovery)
                        .send()
                        .await
                        .map_err(|e| e.to_string())?;
                    if r.status().is_success() {
                        Ok(())
                    } else {
                        Err(r.status().to_string())
                    }
                }
            },
        )
        .await;
        OidcProvider {
            issuer,
            _child: child,
        }
    }
}

/// An HTTP client that follows no redirect: the tests follow them by hand,
/// carrying cookies as a browser would.
pub fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}
