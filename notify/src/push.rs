//! Sending one Web Push (RFC 8030): the payload encrypted for the browser
//! (RFC 8291, aes128gcm), signed for the push service (VAPID, RFC 8292),
//! with `TTL`, `Urgency` and `Topic`; and what the service's answer means.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chat_protocol::notify::PushSubscription;
use chat_protocol::ConversationId;
use reqwest::Url;
use sha2::{Digest, Sha256};

use crate::vapid::Vapid;

/// A push service that does not answer within this is retried.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// What came of a push.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The service took it.
    Sent,
    /// The subscription is gone (404, 410): delete it.
    Gone,
    /// Try again later (429, 5xx, no answer), after `retry_after` when the
    /// service said.
    Retry(String, Option<Duration>),
    /// The service refused it for good (another 4xx), or it could not be
    /// built.
    Refused(String),
}

/// Checks a subscription's endpoint: `https`, or `http` to a loopback
/// address when `allow_loopback_http` (tests run their push service so).
pub fn check_endpoint(endpoint: &str, allow_loopback_http: bool) -> Result<Url, String> {
    let url = Url::parse(endpoint).map_err(|_| "endpoint is not a URL".to_owned())?;
    let loopback = match url.host_str() {
        Some("localhost") => true,
        Some(h) => h
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .is_ok_and(|a| a.is_loopback()),
        None => return Err("endpoint has no host".into()),
    };
    match url.scheme() {
        "https" => Ok(url),
        "http" if allow_loopback_http && loopback => Ok(url),
        _ => Err("endpoint must be an https URL".into()),
    }
}

/// The `Topic` of a conversation's pushes: a newer one replaces an older
/// one the browser has not shown yet. At most 32 characters of base64url.
pub fn topic(conversation: &ConversationId) -> String {
    let digest = Sha256::digest(conversation.as_str().as_bytes());
    URL_SAFE_NO_PAD.encode(&digest[..24])
}

/// How long a signed VAPID token is used: push services accept up to
/// 24 h; one is signed (an ECDSA signature) per push service origin every
/// 12 h rather than per push.
const VAPID_VALID_SECS: u64 = 12 * 3600;
/// A kept token is signed again once less than this of it is left.
const VAPID_RENEW_SECS: u64 = 3600;

/// Sends pushes.
pub struct PushSender {
    client: reqwest::Client,
    vapid: Arc<Vapid>,
    allow_loopback_http: bool,
    /// `Authorization` per push service origin, with its `exp`.
    signed: std::sync::Mutex<std::collections::HashMap<String, (String, u64)>>,
}

impl PushSender {
    /// Signing with `vapid`.
    pub fn new(vapid: Arc<Vapid>, allow_loopback_http: bool) -> PushSender {
        let client = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            // A push service answers; it never needs to send us elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default();
        PushSender {
            client,
            vapid,
            allow_loopback_http,
            signed: Default::default(),
        }
    }

    /// The `Authorization` header for pushes to `audience`, signed anew
    /// only when the kept one is near its end. Origins are few (one per
    /// browser vendor's service), so the map stays small.
    fn authorization(&self, audience: &str) -> Result<String, String> {
        let now = chat_protocol::now_ms() / 1000;
        let mut signed = self.signed.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((header, exp)) = signed.get(audience) {
            if *exp > now + VAPID_RENEW_SECS {
                return Ok(header.clone());
            }
        }
        let exp = now + VAPID_VALID_SECS;
        let header = self
            .vapid
            .authorization(audience, exp)
            .map_err(|e| e.to_string())?;
        if signed.len() >= 1024 {
            signed.clear();
        }
        signed.insert(audience.to_owned(), (header.clone(), exp));
        Ok(header)
    }

    /// The cluster's key.
    pub fn vapid(&self) -> &Vapid {
        &self.vapid
    }

    /// Pushes `payload` to `sub`.
    pub async fn send(
        &self,
        sub: &PushSubscription,
        payload: &[u8],
        ttl: Duration,
        urgent: bool,
        topic: &str,
    ) -> Outcome {
        let url = match check_endpoint(&sub.endpoint, self.allow_loopback_http) {
            Ok(url) => url,
            Err(e) => return Outcome::Refused(e),
        };
        let body = match encrypt(sub, payload) {
            Ok(body) => body,
            Err(e) => return Outcome::Refused(e),
        };
        let audience = url.origin().ascii_serialization();
        let auth = match self.authorization(&audience) {
            Ok(a) => a,
            Err(e) => return Outcome::Refused(e),
        };
        let sent = self
            .client
            .post(url)
            .header("Authorization", auth)
            .header("TTL", ttl.as_secs().to_string())
            .header("Urgency", if urgent { "high" } else { "normal" })
            .header("Topic", topic)
            .header("Content-Encoding", "aes128gcm")
            .header("Content-Type", "application/octet-stream")
            .body(body)
            .send()
            .await;
        let response = match sent {
            Ok(r) => r,
            Err(e) => return Outcome::Retry(format!("push service: {e}"), None),
        };
        let status = response.status().as_u16();
        match status {
            200..=299 => Outcome::Sent,
            404 | 410 => Outcome::Gone,
            429 | 500..=599 => {
                let after = response
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map(Duration::from_secs);
                Outcome::Retry(format!("push service answered {status}"), after)
            }
            _ => Outcome::Refused(format!("push service answered {status}")),
        }
    }
}

/// `payload` encrypted for the browser that made `sub`.
fn encrypt(sub: &PushSubscription, payload: &[u8]) -> Result<Vec<u8>, String> {
    let key = URL_SAFE_NO_PAD
        .decode(sub.p256dh.trim_end_matches('='))
        .map_err(|_| "subscription key is not base64url".to_owned())?;
    let key = p256::PublicKey::from_sec1_bytes(&key)
        .map_err(|_| "subscription key is not a P-256 point".to_owned())?;
    let auth = URL_SAFE_NO_PAD
        .decode(sub.auth.trim_end_matches('='))
        .map_err(|_| "subscription auth is not base64url".to_owned())?;
    let auth: [u8; 16] = auth
        .try_into()
        .map_err(|_| "subscription auth is not 16 bytes".to_owned())?;
    let auth = web_push_native::Auth::from(auth);
    web_push_native::encrypt(payload.to_vec(), &key, &auth).map_err(|e| e.to_string())
}

/// Checks a subscription's keys as [`PushSender::send`] will use them.
pub fn check_keys(p256dh: &str, auth: &str) -> Result<(), String> {
    let sub = PushSubscription {
        id: String::new(),
        endpoint: String::new(),
        p256dh: p256dh.to_owned(),
        auth: auth.to_owned(),
        created_at: 0,
    };
    encrypt(&sub, b"").map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_must_be_https_unless_loopback_http_is_allowed() {
        assert!(check_endpoint("https://fcm.googleapis.com/wp/abc", false).is_ok());
        assert!(check_endpoint("http://127.0.0.1:9999/p/1", false).is_err());
        assert!(check_endpoint("http://127.0.0.1:9999/p/1", true).is_ok());
        assert!(check_endpoint("http://[::1]:9999/p/1", true).is_ok());
        assert!(check_endpoint("http://push.example.com/p/1", true).is_err());
        assert!(check_endpoint("ftp://push.example.com/", true).is_err());
        assert!(check_endpoint("not a url", true).is_err());
    }

    #[test]
    fn topics_are_short_base64url_and_stable() {
        let c = ConversationId::new("g:some-long-conversation-id-0123456789").unwrap();
        let t = topic(&c);
        assert_eq!(t.len(), 32);
        assert!(t
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        assert_eq!(t, topic(&c));
    }

    #[test]
    fn bad_subscription_keys_are_refused() {
        assert!(check_keys("AAAA", "tBHItJI5svbpez7KI4CCXg").is_err());
        let good = "BNcRdreALRFXTkOOUHK1EtK2wtaz5Ry4YfYCA_0QTpQtUbVlUls0VJXg7A8u-Ts1XbjhazAkj7I99e8QcYP7DkM";
        assert!(check_keys(good, "tBHItJI5svbpez7KI4CCXg").is_ok());
        assert!(check_keys(good, "c2hvcnQ").is_err());
    }
}
