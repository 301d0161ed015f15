//! Notification settings as clients read and write them: a user's (e-mail,
//! push, quiet hours) and a member's per conversation (level, mute); and a
//! browser's push subscription. What the node does with them lives in the
//! notify crate; these are only the shapes and their bounds.

use serde::{Deserialize, Serialize};

/// How long e-mail waits, by default, for a notified message to be read
/// before it goes into a digest.
pub const DEFAULT_EMAIL_DELAY_SECS: u32 = 900;
/// Longest e-mail delay a user may set: a week.
pub const MAX_EMAIL_DELAY_SECS: u32 = 7 * 24 * 3600;
/// Longest IANA zone name accepted (the longest real one is 32 bytes).
pub const MAX_TZ_LEN: usize = 64;

/// A user's notification settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotificationSettings {
    /// Digests of unread messages by mail.
    pub email: EmailSettings,
    /// Web Push to the user's browsers.
    pub push: PushSettings,
    /// Quiet hours: nothing is pushed or mailed inside them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dnd: Option<QuietHours>,
}

impl Default for NotificationSettings {
    fn default() -> Self {
        NotificationSettings {
            email: EmailSettings {
                enabled: true,
                delay_secs: DEFAULT_EMAIL_DELAY_SECS,
            },
            push: PushSettings { enabled: true },
            dnd: None,
        }
    }
}

/// E-mail digests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmailSettings {
    /// Whether to mail at all (only to a verified address).
    pub enabled: bool,
    /// How long a notified message must stay unread before it is mailed.
    pub delay_secs: u32,
}

/// Web Push.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushSettings {
    /// Whether to push at all.
    pub enabled: bool,
}

/// A daily window of quiet, in the user's own time zone: `start` to `end`
/// ("HH:MM", 24-hour), wrapping past midnight when `end` is not after
/// `start`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuietHours {
    /// Local time the quiet starts.
    pub start: String,
    /// Local time it ends.
    pub end: String,
    /// IANA zone name, e.g. "Europe/Paris".
    pub tz: String,
}

impl QuietHours {
    /// `start` and `end` as minutes after midnight, or what is wrong.
    pub fn minutes(&self) -> Result<(u16, u16), String> {
        Ok((parse_hhmm(&self.start)?, parse_hhmm(&self.end)?))
    }

    /// Whether `minute` (after local midnight) falls inside the window.
    pub fn contains(&self, minute: u16) -> bool {
        match self.minutes() {
            Ok((start, end)) if start < end => (start..end).contains(&minute),
            // Wraps past midnight ("22:00" to "07:00").
            Ok((start, end)) if start > end => minute >= start || minute < end,
            // An empty window is no window.
            _ => false,
        }
    }
}

fn parse_hhmm(s: &str) -> Result<u16, String> {
    let bad = || format!("{s:?} is not a time of day as \"HH:MM\"");
    let (h, m) = s.split_once(':').ok_or_else(bad)?;
    if h.len() != 2 || m.len() != 2 {
        return Err(bad());
    }
    let h: u16 = h.parse().map_err(|_| bad())?;
    let m: u16 = m.parse().map_err(|_| bad())?;
    if h > 23 || m > 59 {
        return Err(bad());
    }
    Ok(h * 60 + m)
}

/// A change to [`NotificationSettings`]: any of its fields; `dnd: null`
/// clears the quiet hours.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotificationSettingsPatch {
    /// New e-mail settings.
    #[serde(default)]
    pub email: Option<EmailPatch>,
    /// New push settings.
    #[serde(default)]
    pub push: Option<PushSettings>,
    /// New quiet hours; `Some(None)` (JSON `null`) clears them.
    #[serde(default, deserialize_with = "present")]
    pub dnd: Option<Option<QuietHours>>,
}

/// A change to [`EmailSettings`].
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailPatch {
    /// New `enabled`.
    #[serde(default)]
    pub enabled: Option<bool>,
    /// New `delay_secs`.
    #[serde(default)]
    pub delay_secs: Option<u32>,
}

/// Tells a field that is `null` (`Some(None)`) from one left out (`None`).
fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

impl NotificationSettings {
    /// These settings with `patch` applied, or what in it is out of bounds
    /// (the zone name is checked by whoever knows the zones).
    pub fn patched(&self, patch: NotificationSettingsPatch) -> Result<Self, String> {
        let mut next = self.clone();
        if let Some(email) = patch.email {
            if let Some(enabled) = email.enabled {
                next.email.enabled = enabled;
            }
            if let Some(delay) = email.delay_secs {
                if delay > MAX_EMAIL_DELAY_SECS {
                    return Err(format!(
                        "email.delay_secs is at most {MAX_EMAIL_DELAY_SECS}"
                    ));
                }
                next.email.delay_secs = delay;
            }
        }
        if let Some(push) = patch.push {
            next.push = push;
        }
        if let Some(dnd) = patch.dnd {
            if let Some(q) = &dnd {
                q.minutes()?;
                if q.tz.is_empty() || q.tz.len() > MAX_TZ_LEN {
                    return Err("dnd.tz must name an IANA time zone".into());
                }
            }
            next.dnd = dnd;
        }
        Ok(next)
    }
}

/// Which messages of a conversation notify a member.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(test, derive(ts_rs::TS))]
pub enum NotifyLevel {
    /// Every message.
    All,
    /// Messages that mention the member (in a direct conversation, every
    /// message is for them).
    Mentions,
    /// None.
    None,
}

/// A member's notification setting for one conversation, as the
/// `conversations` list shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct ConversationNotify {
    /// What notifies.
    pub level: NotifyLevel,
    /// Nothing notifies before this (Unix ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub muted_until: Option<u64>,
}

impl ConversationNotify {
    /// Whether muted at `now_ms`.
    pub fn muted_at(&self, now_ms: u64) -> bool {
        self.muted_until.is_some_and(|until| until > now_ms)
    }
}

/// Longest push endpoint URL accepted.
pub const MAX_PUSH_ENDPOINT_LEN: usize = 2048;
/// Most push subscriptions one user may hold (browsers and devices).
pub const MAX_PUSH_SUBSCRIPTIONS: usize = 20;

/// A browser's Web Push subscription (the `PushSubscription` a page gets
/// from its push manager).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushSubscription {
    /// Chosen by the server.
    pub id: String,
    /// The push service's URL for this browser.
    pub endpoint: String,
    /// The browser's P-256 public key, base64url (uncompressed point).
    pub p256dh: String,
    /// The browser's 16-byte auth secret, base64url.
    pub auth: String,
    /// Unix ms.
    pub created_at: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quiet(start: &str, end: &str) -> QuietHours {
        QuietHours {
            start: start.into(),
            end: end.into(),
            tz: "UTC".into(),
        }
    }

    #[test]
    fn quiet_hours_wrap_past_midnight() {
        let night = quiet("22:00", "07:00");
        assert!(night.contains(23 * 60));
        assert!(night.contains(0));
        assert!(night.contains(6 * 60 + 59));
        assert!(!night.contains(7 * 60));
        assert!(!night.contains(12 * 60));
        let lunch = quiet("12:00", "13:30");
        assert!(lunch.contains(12 * 60 + 15));
        assert!(!lunch.contains(13 * 60 + 30));
        assert!(!quiet("09:00", "09:00").contains(9 * 60));
    }

    #[test]
    fn bad_times_and_delays_are_refused() {
        for bad in ["24:00", "9:00", "09:60", "ab:cd", "0900"] {
            assert!(quiet(bad, "07:00").minutes().is_err(), "{bad}");
        }
        let patch: NotificationSettingsPatch =
            serde_json::from_str(r#"{"email":{"delay_secs":9999999}}"#).unwrap();
        assert!(NotificationSettings::default().patched(patch).is_err());
    }

    #[test]
    fn a_patch_changes_only_what_it_names_and_null_clears_quiet_hours() {
        let base = NotificationSettings::default();
        let patch: NotificationSettingsPatch =
            serde_json::from_str(r#"{"dnd":{"start":"22:00","end":"07:00","tz":"Europe/Paris"}}"#)
                .unwrap();
        let with = base.patched(patch).unwrap();
        assert_eq!(with.email, base.email);
        assert!(with.dnd.is_some());
        let clear: NotificationSettingsPatch = serde_json::from_str(r#"{"dnd":null}"#).unwrap();
        assert_eq!(with.patched(clear).unwrap(), base);
        let keep: NotificationSettingsPatch =
            serde_json::from_str(r#"{"push":{"enabled":false}}"#).unwrap();
        let kept = with.patched(keep).unwrap();
        assert!(kept.dnd.is_some() && !kept.push.enabled);
    }
}
