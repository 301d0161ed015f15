//! The contract of [`MessageStore`] as executable checks, shared by every
//! backend's tests: a backend is correct when [`run_all`] returns without
//! panicking.
//!
//! Every check makes up fresh conversation, user and token ids, so the suite
//! can run again and again against a database that keeps its data (a ScyllaDB
//! cluster of a test environment), and several checks may run at once.
//!
//! One file per domain holds that domain's checks (`history.rs`,
//! `conversations.rs`, `accounts.rs`, `access.rs`, `moderation.rs`, `notifications.rs`,
//! `outbox.rs`, `people.rs`, `relations.rs`, `profiles.rs`, `security.rs`, `reports.rs`, `media.rs`; `isolation.rs` for
//! what spans them), built with `fixtures.rs`; this file runs them all and names them for each
//! backend's tests ([`conformance_tests!`](crate::conformance_tests)). A new
//! check goes in its domain's file, in [`run_all`] and in that macro's list.

use crate::MessageStore;

mod access;
mod accounts;
mod conversations;
mod fixtures;
mod history;
mod isolation;
mod media;
mod moderation;
mod notifications;
mod outbox;
mod people;
mod profiles;
mod relations;
mod reports;
mod security;

pub use access::check_access_facts;
pub use accounts::{
    check_login_state, check_refresh_revocation, check_refresh_rotation, check_users,
};
pub use conversations::{check_conversation_ids, check_conversations, check_read_markers};
pub use history::{
    check_a_retried_append_new_is_its_own, check_append_new, check_changes_across_rev_blocks,
    check_changes_byte_cap, check_count_unread, check_history_paging,
    check_last_message_and_client_msg_ids, check_message_updates, check_page_bounds,
    check_page_byte_cap,
};
pub use isolation::check_prefix_isolation;
pub use media::{check_media, check_unattached_media};
pub use moderation::check_user_flags_and_audit;
pub use notifications::{
    check_conversation_notify, check_notification_settings, check_push_subscriptions,
};
pub use outbox::{check_digest_items, check_jobs, check_notify_marks};
pub use people::check_emails_and_tokens;
pub use profiles::check_profiles;
pub use relations::check_relations;
pub use reports::check_reports;
pub use security::{check_credentials, check_logins};

/// Runs every check of this module.
pub async fn run_all(store: &dyn MessageStore) {
    check_history_paging(store).await;
    check_page_bounds(store).await;
    check_page_byte_cap(store).await;
    check_changes_byte_cap(store).await;
    check_a_retried_append_new_is_its_own(store).await;
    check_last_message_and_client_msg_ids(store).await;
    check_append_new(store).await;
    check_prefix_isolation(store).await;
    check_count_unread(store).await;
    check_conversations(store).await;
    check_read_markers(store).await;
    check_users(store).await;
    check_refresh_rotation(store).await;
    check_refresh_revocation(store).await;
    check_login_state(store).await;
    check_access_facts(store).await;
    check_message_updates(store).await;
    check_changes_across_rev_blocks(store).await;
    check_user_flags_and_audit(store).await;
    check_notification_settings(store).await;
    check_conversation_notify(store).await;
    check_push_subscriptions(store).await;
    check_notify_marks(store).await;
    check_jobs(store).await;
    check_digest_items(store).await;
    check_emails_and_tokens(store).await;
    check_relations(store).await;
    check_profiles(store).await;
    check_credentials(store).await;
    check_logins(store).await;
    check_reports(store).await;
    check_media(store).await;
    check_unattached_media(store).await;
    check_conversation_ids(store).await;
}

/// One test per check of this suite, in a module named after the backend,
/// so that each backend's run lists every check under its own name
/// (`scylla::check_history_paging`). `$open` is an expression, evaluated
/// in each test, giving something that dereferences to the store, or
/// `None` to skip (a backend whose server is not configured: the backend's
/// test file decides whether that is allowed).
#[macro_export]
macro_rules! conformance_tests {
    ($backend:ident, $open:expr) => {
        mod $backend {
            #[allow(unused_imports)]
            use super::*;
            $crate::conformance_tests!(@each $open;
                check_history_paging, check_page_bounds, check_page_byte_cap, check_changes_byte_cap, check_a_retried_append_new_is_its_own,
                check_last_message_and_client_msg_ids, check_append_new,
                check_prefix_isolation, check_count_unread, check_conversations,
                check_read_markers, check_users, check_refresh_rotation,
                check_refresh_revocation, check_login_state, check_access_facts, check_message_updates,
                check_changes_across_rev_blocks, check_user_flags_and_audit,
                check_notification_settings, check_conversation_notify,
                check_push_subscriptions, check_notify_marks, check_jobs,
                check_digest_items, check_emails_and_tokens, check_relations,
                check_profiles, check_credentials, check_logins, check_reports,
                check_media, check_unattached_media, check_conversation_ids);
        }
    };
    (@each $open:expr; $($check:ident),*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() {
                let Some(store) = $open else { return };
                $crate::conformance::$check(&*store).await;
            }
        )*
    };
}
