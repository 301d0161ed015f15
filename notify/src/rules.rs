//! Who is notified of a stored message: the contract's rule, as one pure
//! function over what the worker gathered, so that every condition has a
//! unit test.

use chat_protocol::notify::{ConversationNotify, NotificationSettings, NotifyLevel};
use chat_protocol::{ConversationKind, Message, Presence, Status, UserId};

use crate::quiet::is_quiet;

/// Why a member is notified: what sets a push's urgency.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// A direct conversation: every message is for them.
    Direct,
    /// The message mentions them.
    Mention,
    /// Their level is `all`.
    All,
}

impl Reason {
    /// Direct messages and mentions are urgent; the rest is not.
    pub fn urgent(self) -> bool {
        matches!(self, Reason::Direct | Reason::Mention)
    }
}

/// What the worker knows of one member when it judges a message.
pub struct Member<'a> {
    /// Who.
    pub user: &'a UserId,
    /// Their settings (the defaults when never set).
    pub settings: &'a NotificationSettings,
    /// Their setting for this conversation (its kind's default when never
    /// set).
    pub notify: ConversationNotify,
    /// Where presence last saw them.
    pub presence: &'a Presence,
}

/// Why `member` is to be notified of `m`, or `None` when they are not: the
/// sender, someone with a connection open when it was stored (online now,
/// or gone only after it), a level that does not cover it, a mute, or
/// quiet hours. System messages and deleted ones notify no one.
pub fn reason(m: &Message, kind: ConversationKind, member: &Member<'_>) -> Option<Reason> {
    if *member.user == m.sender || m.kind.is_reserved() || m.deleted {
        return None;
    }
    let p = member.presence;
    let away_when_stored =
        p.status == Status::Offline && p.last_seen.is_none_or(|seen| seen <= m.ts);
    if !away_when_stored {
        return None;
    }
    let why = if kind == ConversationKind::Direct {
        Reason::Direct
    } else if m.mentions.contains(member.user) {
        Reason::Mention
    } else {
        Reason::All
    };
    let covered = match member.notify.level {
        NotifyLevel::All => true,
        NotifyLevel::Mentions => why != Reason::All,
        NotifyLevel::None => false,
    };
    if !covered || member.notify.muted_at(m.ts) {
        return None;
    }
    if member
        .settings
        .dnd
        .as_ref()
        .is_some_and(|q| is_quiet(q, m.ts))
    {
        return None;
    }
    Some(why)
}

#[cfg(test)]
mod tests {
    use chat_protocol::notify::QuietHours;
    use chat_protocol::{ClientMsgId, ConversationId, MessageId, MessageKind};

    use super::*;

    fn user(s: &str) -> UserId {
        UserId::new(s).unwrap()
    }

    /// 2026-07-01 12:00 UTC.
    const NOON: u64 = 1_782_907_200_000;

    fn message(mentions: &[&str]) -> Message {
        Message {
            attachments: Vec::new(),
            id: MessageId::floor_at(NOON),
            conversation: ConversationId::new("g:1").unwrap(),
            sender: user("ann"),
            body: "hello".into(),
            kind: MessageKind::default(),
            ts: NOON,
            client_msg_id: ClientMsgId::new("c1").unwrap(),
            reply_to: None,
            rev: 1,
            edited_at: None,
            deleted: false,
            reactions: Vec::new(),
            mentions: mentions.iter().map(|u| user(u)).collect(),
        }
    }

    fn offline(u: &str, last_seen: Option<u64>) -> Presence {
        Presence {
            user: user(u),
            status: Status::Offline,
            last_seen,
        }
    }

    fn judge(
        m: &Message,
        kind: ConversationKind,
        level: NotifyLevel,
        muted_until: Option<u64>,
        settings: &NotificationSettings,
        presence: &Presence,
    ) -> Option<Reason> {
        let bob = user("bob");
        let member = Member {
            user: &bob,
            settings,
            notify: ConversationNotify { level, muted_until },
            presence,
        };
        reason(m, kind, &member)
    }

    #[test]
    fn only_members_away_when_it_was_stored_are_notified() {
        let s = NotificationSettings::default();
        let m = message(&[]);
        let g = ConversationKind::Group;
        let away = offline("bob", Some(NOON - 1));
        assert_eq!(
            judge(&m, g, NotifyLevel::All, None, &s, &away),
            Some(Reason::All)
        );
        let never_seen = offline("bob", None);
        assert!(judge(&m, g, NotifyLevel::All, None, &s, &never_seen).is_some());
        let online = Presence {
            user: user("bob"),
            status: Status::Online,
            last_seen: None,
        };
        assert_eq!(judge(&m, g, NotifyLevel::All, None, &s, &online), None);
        // Left after it was stored: it reached an open connection.
        let left_after = offline("bob", Some(NOON + 5));
        assert_eq!(judge(&m, g, NotifyLevel::All, None, &s, &left_after), None);
    }

    #[test]
    fn levels_mutes_and_quiet_hours_suppress_what_they_should() {
        let s = NotificationSettings::default();
        let away = offline("bob", None);
        let (g, d) = (ConversationKind::Group, ConversationKind::Direct);
        let plain = message(&[]);
        let mention = message(&["bob"]);
        let mentions = NotifyLevel::Mentions;
        assert_eq!(judge(&plain, g, mentions, None, &s, &away), None);
        assert_eq!(
            judge(&mention, g, mentions, None, &s, &away),
            Some(Reason::Mention)
        );
        assert_eq!(
            judge(&plain, d, mentions, None, &s, &away),
            Some(Reason::Direct)
        );
        assert_eq!(judge(&mention, g, NotifyLevel::None, None, &s, &away), None);
        // Muted until after the message; a mute that ran out is none.
        assert_eq!(
            judge(&mention, g, NotifyLevel::All, Some(NOON + 1), &s, &away),
            None
        );
        assert!(judge(&mention, g, NotifyLevel::All, Some(NOON), &s, &away).is_some());
        let mut quiet = s.clone();
        quiet.dnd = Some(QuietHours {
            start: "11:00".into(),
            end: "13:00".into(),
            tz: "UTC".into(),
        });
        assert_eq!(
            judge(&plain, d, NotifyLevel::All, None, &quiet, &away),
            None
        );
        quiet.dnd = Some(QuietHours {
            start: "11:00".into(),
            end: "13:00".into(),
            tz: "America/New_York".into(),
        });
        assert!(judge(&plain, d, NotifyLevel::All, None, &quiet, &away).is_some());
    }

    #[test]
    fn the_sender_system_messages_and_deleted_ones_notify_no_one() {
        let s = NotificationSettings::default();
        let away = offline("ann", None);
        let ann = user("ann");
        let m = message(&[]);
        let member = Member {
            user: &ann,
            settings: &s,
            notify: ConversationNotify {
                level: NotifyLevel::All,
                muted_until: None,
            },
            presence: &away,
        };
        assert_eq!(reason(&m, ConversationKind::Group, &member), None);
        let away = offline("bob", None);
        let mut system = message(&[]);
        system.kind = MessageKind::new("system").unwrap();
        let g = ConversationKind::Group;
        assert_eq!(judge(&system, g, NotifyLevel::All, None, &s, &away), None);
        let mut gone = message(&[]);
        gone.deleted = true;
        assert_eq!(judge(&gone, g, NotifyLevel::All, None, &s, &away), None);
    }
}
