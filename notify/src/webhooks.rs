//! Webhooks for operators: chat events POSTed as JSON to the URLs
//! `[[notifications.webhooks]]` names, signed with each hook's secret
//! (`X-Chat-Signature: sha256=<hex HMAC-SHA256 of the body>`), each with a
//! unique `X-Chat-Delivery` a receiver can deduplicate on. A delivery that
//! gets no 2xx within 10 s is retried with backoff, at most 8 times, then
//! kept as a dead letter that an operator lists and replays.

use std::time::Duration;

use chat_storage::Job;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::jobs::{job_id, Work};

/// The events a hook may ask for.
pub const EVENTS: [&str; 5] = [
    "message.created",
    "message.updated",
    "conversation.created",
    "member.joined",
    "member.left",
];

/// Attempts at a delivery before it is a dead letter.
pub const WEBHOOK_ATTEMPTS: u32 = 8;

/// A receiver that does not answer within this failed.
const TIMEOUT: Duration = Duration::from_secs(10);

/// One `[[notifications.webhooks]]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// What the hook is called in metrics, logs and dead letters (its URL
    /// when unset).
    #[serde(default)]
    pub name: Option<String>,
    /// Where deliveries go.
    pub url: String,
    /// The HMAC key of `X-Chat-Signature`.
    pub secret: String,
    /// The events to deliver ([`EVENTS`]); empty: all of them.
    #[serde(default)]
    pub events: Vec<String>,
}

impl WebhookConfig {
    /// The hook's name.
    pub fn name(&self) -> &str {
        self.name.as_deref().unwrap_or(&self.url)
    }

    /// Whether it takes `event`.
    pub fn wants(&self, event: &str) -> bool {
        self.events.is_empty() || self.events.iter().any(|e| e == event)
    }

    /// What is wrong with it, if anything.
    pub fn check(&self) -> Result<(), String> {
        let url = reqwest::Url::parse(&self.url)
            .map_err(|e| format!("webhook {}: url: {e}", self.name()))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!("webhook {}: url must be http(s)", self.name()));
        }
        if self.secret.len() < 16 {
            return Err(format!(
                "webhook {}: secret must be 16 characters or more",
                self.name()
            ));
        }
        match self.events.iter().find(|e| !EVENTS.contains(&e.as_str())) {
            Some(e) => Err(format!("webhook {}: unknown event {e:?}", self.name())),
            None => Ok(()),
        }
    }
}

/// `sha256=<hex>` of `body` under `secret`.
pub fn signature(secret: &str, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes a key of any length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// The configured hooks and the client that calls them.
pub struct Webhooks {
    hooks: Vec<WebhookConfig>,
    client: reqwest::Client,
}

impl Webhooks {
    /// Over `hooks` (checked by the caller).
    pub fn new(hooks: Vec<WebhookConfig>) -> Webhooks {
        let client = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default();
        Webhooks { hooks, client }
    }

    /// Whether any hook takes `event` (so that nothing is built for none).
    pub fn wanted(&self, event: &str) -> bool {
        self.hooks.iter().any(|h| h.wants(event))
    }

    /// A job per hook that takes `event`, carrying `data` (the event's
    /// fields) in the body every attempt sends alike.
    pub fn jobs(&self, event: &str, data: serde_json::Value, now_ms: u64) -> Vec<Job> {
        let mut jobs = Vec::new();
        for hook in self.hooks.iter().filter(|h| h.wants(event)) {
            let delivery = format!(
                "{:016x}{:016x}",
                rand::random::<u64>(),
                rand::random::<u64>()
            );
            let body = serde_json::json!({
                "event": event,
                "delivery": delivery,
                "at": now_ms,
                "data": data,
            });
            let work = Work::Webhook {
                hook: hook.name().to_owned(),
                event: event.to_owned(),
                delivery,
                body: body.to_string(),
            };
            let key = format!("webhook:{}", hook.name());
            jobs.push(Job::new(&key, now_ms, job_id(), work.encode()));
        }
        jobs
    }

    /// POSTs one delivery; `Err` with why when it is to be retried.
    pub async fn deliver(
        &self,
        hook: &str,
        event: &str,
        delivery: &str,
        body: &str,
    ) -> Result<(), String> {
        let Some(config) = self.hooks.iter().find(|h| h.name() == hook) else {
            return Err(format!("no webhook {hook} is configured"));
        };
        let sent = self
            .client
            .post(&config.url)
            .header("Content-Type", "application/json")
            .header("X-Chat-Event", event)
            .header("X-Chat-Delivery", delivery)
            .header(
                "X-Chat-Signature",
                signature(&config.secret, body.as_bytes()),
            )
            .body(body.to_owned())
            .send()
            .await;
        match sent {
            Ok(r) if r.status().is_success() => Ok(()),
            Ok(r) => Err(format!("answered {}", r.status().as_u16())),
            Err(e) => Err(format!("no answer: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_are_hmac_sha256_of_the_body() {
        // RFC 4231 test case 2.
        let key = "Jefe";
        let sig = signature(key, b"what do ya want for nothing?");
        assert_eq!(
            sig,
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn hooks_are_checked_and_pick_their_events() {
        let hook = WebhookConfig {
            name: None,
            url: "https://hooks.example.com/chat".into(),
            secret: "a-secret-of-16-chars".into(),
            events: vec!["message.created".into()],
        };
        assert!(hook.check().is_ok());
        assert!(hook.wants("message.created") && !hook.wants("member.left"));
        assert_eq!(hook.name(), "https://hooks.example.com/chat");
        let bad = WebhookConfig {
            events: vec!["message.deleted".into()],
            ..hook.clone()
        };
        assert!(bad.check().is_err());
        let weak = WebhookConfig {
            secret: "short".into(),
            ..hook
        };
        assert!(weak.check().is_err());
    }
}
