//! The recorder's notification, outbox and people traits, and what of them
//! every node must hold alike after replication: settings, subscriptions,
//! per-conversation levels, digests, addresses, every shard's jobs and the
//! dead letters. (Marks are each node's own and are left out.)

use async_trait::async_trait;
use chat_protocol::notify::{ConversationNotify, NotificationSettings, PushSubscription};
use chat_protocol::people::Relations;
use chat_protocol::{ConversationId, UserId};
use chat_storage::{
    CredentialStore, Credentials, DeadJob, DigestItem, EmailAddress, EmailToken, Job, LoginRecord,
    LoginStore, Mark, MediaRecord, MediaRef, MediaStore, MessageStore, NameEntry,
    NotificationStore, NotifyCursor, OutboxStore, PeopleStore, ProfileRecord, ProfileStore,
    RelationStore, Report, ReportStore, StoreError, OUTBOX_SHARDS,
};

use super::Recorder;

/// What a node holds of the users and conversations seen.
#[derive(Debug, PartialEq)]
pub(super) struct NotifyState {
    users: Vec<UserNotify>,
    cursors: Vec<NotifyCursor>,
    jobs: Vec<Job>,
    dead: Vec<DeadJob>,
}

#[derive(Debug, PartialEq)]
struct UserNotify {
    settings: Option<NotificationSettings>,
    subscriptions: Vec<PushSubscription>,
    levels: Vec<(ConversationId, ConversationNotify)>,
    digest: Vec<DigestItem>,
    email: Option<EmailAddress>,
    relations: Option<Relations>,
    profile: Option<ProfileRecord>,
    /// The name index's entries under the user's id.
    names: Vec<NameEntry>,
    credentials: Option<Credentials>,
    logins: Vec<LoginRecord>,
    media_usage: u64,
}

pub(super) async fn notify_state(
    store: &dyn MessageStore,
    users: &[UserId],
    conversations: &[ConversationId],
) -> NotifyState {
    let mut out = NotifyState {
        users: Vec::new(),
        cursors: Vec::new(),
        jobs: Vec::new(),
        dead: store.dead_jobs(usize::MAX).await.expect("dead"),
    };
    for user in users {
        let mut levels = store.conversation_notifies(user).await.expect("levels");
        levels.sort_by(|a, b| a.0.cmp(&b.0));
        out.users.push(UserNotify {
            settings: store.notification_settings(user).await.expect("settings"),
            subscriptions: store.push_subscriptions(user).await.expect("subs"),
            levels,
            digest: store.digest_items(user).await.expect("digest"),
            email: store.email(user).await.expect("email"),
            relations: store.relations(user).await.expect("relations"),
            profile: store.profile(user).await.expect("profile"),
            names: store
                .find_names(&chat_storage::profiles::index_name(user.as_str()), 100)
                .await
                .expect("names"),
            credentials: store.credentials(user).await.expect("credentials"),
            logins: {
                let mut l = store.logins(user).await.expect("logins");
                l.sort_by(|a, b| a.id.cmp(&b.id));
                l
            },
            media_usage: store.media_usage(user).await.expect("usage"),
        });
    }
    for c in conversations {
        out.cursors
            .push(store.notify_cursor(c).await.expect("cursor"));
    }
    for shard in 0..OUTBOX_SHARDS {
        out.jobs.extend(
            store
                .due_jobs(shard, u64::MAX, usize::MAX)
                .await
                .expect("jobs"),
        );
    }
    out
}

#[async_trait]
impl NotificationStore for Recorder {
    async fn notification_settings(
        &self,
        user: &UserId,
    ) -> Result<Option<NotificationSettings>, StoreError> {
        self.note(|s| {
            s.users.insert(user.clone());
        });
        self.store.notification_settings(user).await
    }

    async fn put_notification_settings(
        &self,
        user: &UserId,
        settings: &NotificationSettings,
    ) -> Result<(), StoreError> {
        self.note(|s| {
            s.users.insert(user.clone());
        });
        self.store.put_notification_settings(user, settings).await
    }

    async fn conversation_notify(
        &self,
        user: &UserId,
        conversation: &ConversationId,
    ) -> Result<Option<ConversationNotify>, StoreError> {
        self.store.conversation_notify(user, conversation).await
    }

    async fn conversation_notifies(
        &self,
        user: &UserId,
    ) -> Result<Vec<(ConversationId, ConversationNotify)>, StoreError> {
        self.note(|s| {
            s.users.insert(user.clone());
        });
        self.store.conversation_notifies(user).await
    }

    async fn put_conversation_notify(
        &self,
        user: &UserId,
        conversation: &ConversationId,
        notify: &ConversationNotify,
    ) -> Result<(), StoreError> {
        self.note(|s| {
            s.users.insert(user.clone());
        });
        self.store
            .put_conversation_notify(user, conversation, notify)
            .await
    }

    async fn put_push_subscription(
        &self,
        user: &UserId,
        subscription: &PushSubscription,
    ) -> Result<(), StoreError> {
        self.note(|s| {
            s.users.insert(user.clone());
        });
        self.store.put_push_subscription(user, subscription).await
    }

    async fn push_subscriptions(&self, user: &UserId) -> Result<Vec<PushSubscription>, StoreError> {
        self.store.push_subscriptions(user).await
    }

    async fn delete_push_subscription(&self, user: &UserId, id: &str) -> Result<bool, StoreError> {
        self.store.delete_push_subscription(user, id).await
    }
}

#[async_trait]
impl OutboxStore for Recorder {
    async fn marks(&self, shard: u32, limit: usize) -> Result<Vec<Mark>, StoreError> {
        self.store.marks(shard, limit).await
    }

    async fn clear_mark(&self, shard: u32, mark: &Mark) -> Result<(), StoreError> {
        self.store.clear_mark(shard, mark).await
    }

    async fn notify_cursor(
        &self,
        conversation: &ConversationId,
    ) -> Result<NotifyCursor, StoreError> {
        self.store.notify_cursor(conversation).await
    }

    async fn set_notify_cursor(
        &self,
        conversation: &ConversationId,
        cursor: NotifyCursor,
    ) -> Result<(), StoreError> {
        self.note(|s| {
            s.conversations.insert(conversation.clone());
        });
        self.store.set_notify_cursor(conversation, cursor).await
    }

    async fn put_jobs(&self, jobs: &[Job]) -> Result<(), StoreError> {
        self.store.put_jobs(jobs).await
    }

    async fn due_jobs(
        &self,
        shard: u32,
        now_ms: u64,
        limit: usize,
    ) -> Result<Vec<Job>, StoreError> {
        self.store.due_jobs(shard, now_ms, limit).await
    }

    async fn count_jobs(&self, shard: u32) -> Result<u64, StoreError> {
        self.store.count_jobs(shard).await
    }

    async fn delete_job(&self, job: &Job) -> Result<(), StoreError> {
        self.store.delete_job(job).await
    }

    async fn put_dead_job(&self, dead: &DeadJob) -> Result<(), StoreError> {
        self.store.put_dead_job(dead).await
    }

    async fn dead_jobs(&self, limit: usize) -> Result<Vec<DeadJob>, StoreError> {
        self.store.dead_jobs(limit).await
    }

    async fn take_dead_job(&self, id: u64) -> Result<Option<DeadJob>, StoreError> {
        self.store.take_dead_job(id).await
    }

    async fn add_digest_items(
        &self,
        user: &UserId,
        items: &[DigestItem],
    ) -> Result<(), StoreError> {
        self.note(|s| {
            s.users.insert(user.clone());
        });
        self.store.add_digest_items(user, items).await
    }

    async fn digest_items(&self, user: &UserId) -> Result<Vec<DigestItem>, StoreError> {
        self.store.digest_items(user).await
    }

    async fn remove_digest_items(
        &self,
        user: &UserId,
        items: &[DigestItem],
    ) -> Result<(), StoreError> {
        self.store.remove_digest_items(user, items).await
    }
}

#[async_trait]
impl PeopleStore for Recorder {
    async fn email(&self, user: &UserId) -> Result<Option<EmailAddress>, StoreError> {
        self.store.email(user).await
    }

    async fn put_email(&self, user: &UserId, email: &EmailAddress) -> Result<(), StoreError> {
        self.note(|s| {
            s.users.insert(user.clone());
        });
        self.store.put_email(user, email).await
    }

    async fn put_email_token(&self, token: &EmailToken) -> Result<(), StoreError> {
        self.store.put_email_token(token).await
    }

    async fn take_email_token(&self, hash: &str) -> Result<Option<EmailToken>, StoreError> {
        self.store.take_email_token(hash).await
    }
}

#[async_trait]
impl RelationStore for Recorder {
    async fn relations(&self, user: &UserId) -> Result<Option<Relations>, StoreError> {
        self.store.relations(user).await
    }

    async fn put_relations(&self, user: &UserId, relations: &Relations) -> Result<(), StoreError> {
        self.note(|s| {
            s.users.insert(user.clone());
        });
        self.store.put_relations(user, relations).await
    }
}

#[async_trait]
impl ProfileStore for Recorder {
    async fn profile(&self, user: &UserId) -> Result<Option<ProfileRecord>, StoreError> {
        self.store.profile(user).await
    }

    async fn put_profile(
        &self,
        user: &UserId,
        old: Option<&ProfileRecord>,
        new: &ProfileRecord,
    ) -> Result<(), StoreError> {
        self.note(|s| {
            s.users.insert(user.clone());
        });
        self.store.put_profile(user, old, new).await
    }

    async fn find_names(&self, prefix: &str, limit: usize) -> Result<Vec<NameEntry>, StoreError> {
        self.store.find_names(prefix, limit).await
    }
}

#[async_trait]
impl CredentialStore for Recorder {
    async fn credentials(&self, user: &UserId) -> Result<Option<Credentials>, StoreError> {
        self.store.credentials(user).await
    }

    async fn put_credentials(&self, user: &UserId, c: &Credentials) -> Result<(), StoreError> {
        self.note(|s| {
            s.users.insert(user.clone());
        });
        self.store.put_credentials(user, c).await
    }

    async fn email_owner(&self, address: &str) -> Result<Option<UserId>, StoreError> {
        self.store.email_owner(address).await
    }

    async fn put_email_owner(&self, address: &str, user: &UserId) -> Result<(), StoreError> {
        self.note(|s| {
            s.users.insert(user.clone());
        });
        self.store.put_email_owner(address, user).await
    }
}

#[async_trait]
impl LoginStore for Recorder {
    async fn logins(&self, user: &UserId) -> Result<Vec<LoginRecord>, StoreError> {
        self.store.logins(user).await
    }

    async fn login(&self, user: &UserId, id: &str) -> Result<Option<LoginRecord>, StoreError> {
        self.store.login(user, id).await
    }

    async fn put_login(&self, user: &UserId, login: &LoginRecord) -> Result<(), StoreError> {
        self.note(|s| {
            s.users.insert(user.clone());
        });
        self.store.put_login(user, login).await
    }

    async fn delete_login(&self, user: &UserId, id: &str) -> Result<(), StoreError> {
        self.note(|s| {
            s.users.insert(user.clone());
        });
        self.store.delete_login(user, id).await
    }
}

#[async_trait]
impl ReportStore for Recorder {
    async fn put_report(&self, report: &Report) -> Result<(), StoreError> {
        self.note(|s| {
            s.users.insert(report.reporter.clone());
        });
        self.store.put_report(report).await
    }

    async fn report(&self, id: &str) -> Result<Option<Report>, StoreError> {
        self.store.report(id).await
    }

    async fn open_reports(&self, limit: usize) -> Result<Vec<Report>, StoreError> {
        self.store.open_reports(limit).await
    }
}

/// A media record and its references, as a node holds them.
pub(super) async fn media_state(
    store: &dyn MessageStore,
    id: &str,
) -> (Option<MediaRecord>, Vec<String>) {
    let mut refs: Vec<String> = store
        .media_refs(id, usize::MAX)
        .await
        .expect("refs")
        .iter()
        .map(MediaRef::to_key)
        .collect();
    refs.sort();
    (store.media(id).await.expect("media"), refs)
}

#[async_trait]
impl MediaStore for Recorder {
    async fn put_media(&self, record: &MediaRecord) -> Result<(), StoreError> {
        self.note(|s| {
            s.users.insert(record.owner.clone());
            s.media.insert(record.id.clone());
        });
        self.store.put_media(record).await
    }

    async fn update_media(&self, record: &MediaRecord) -> Result<(), StoreError> {
        self.note(|s| {
            s.media.insert(record.id.clone());
        });
        self.store.update_media(record).await
    }

    async fn unattached_media(
        &self,
        from_ms: u64,
        before_ms: u64,
        limit: usize,
    ) -> Result<Vec<(u64, String)>, StoreError> {
        self.store.unattached_media(from_ms, before_ms, limit).await
    }

    async fn forget_unattached(&self, created_at: u64, id: &str) -> Result<(), StoreError> {
        self.note(|s| {
            s.media.insert(id.to_owned());
        });
        self.store.forget_unattached(created_at, id).await
    }

    async fn media(&self, id: &str) -> Result<Option<MediaRecord>, StoreError> {
        self.store.media(id).await
    }

    async fn media_usage(&self, owner: &UserId) -> Result<u64, StoreError> {
        self.store.media_usage(owner).await
    }

    async fn add_media_ref(&self, id: &str, reference: &MediaRef) -> Result<(), StoreError> {
        self.note(|s| {
            s.media.insert(id.to_owned());
        });
        self.store.add_media_ref(id, reference).await
    }

    async fn remove_media_ref(&self, id: &str, reference: &MediaRef) -> Result<(), StoreError> {
        self.store.remove_media_ref(id, reference).await
    }

    async fn media_refs(&self, id: &str, limit: usize) -> Result<Vec<MediaRef>, StoreError> {
        self.store.media_refs(id, limit).await
    }

    async fn delete_media(&self, record: &MediaRecord) -> Result<(), StoreError> {
        self.store.delete_media(record).await
    }
}
