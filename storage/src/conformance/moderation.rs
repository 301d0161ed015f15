//! The contract of [`ModerationStore`](crate::ModerationStore): account
//! flags and the audit log.

use super::fixtures::{unique, user_id};
use crate::{AuditEntry, MessageStore, UserFlag, UserFlags};

/// Account flags: clear until set, the later setting wins whatever order
/// the writes come in, one flag does not touch the other. The audit log:
/// newest first, bounded by `limit`, an entry written twice listed once.
pub async fn check_user_flags_and_audit(store: &dyn MessageStore) {
    let user = user_id("flagged");
    let flags = |admin, suspended| UserFlags { admin, suspended };
    assert_eq!(
        store.user_flags(&user).await.expect("read"),
        flags(false, false)
    );
    store
        .set_user_flag(&user, UserFlag::Suspended, true, 2_000)
        .await
        .expect("suspend");
    assert_eq!(
        store.user_flags(&user).await.expect("read"),
        flags(false, true)
    );
    // An older setting arriving late changes nothing.
    store
        .set_user_flag(&user, UserFlag::Suspended, false, 1_000)
        .await
        .expect("stale unsuspend");
    assert_eq!(
        store.user_flags(&user).await.expect("read"),
        flags(false, true)
    );
    store
        .set_user_flag(&user, UserFlag::Admin, true, 1_500)
        .await
        .expect("grant");
    store
        .set_user_flag(&user, UserFlag::Suspended, false, 3_000)
        .await
        .expect("unsuspend");
    assert_eq!(
        store.user_flags(&user).await.expect("read"),
        flags(true, false)
    );
    let other = user_id("unflagged");
    assert_eq!(
        store.user_flags(&other).await.expect("read"),
        flags(false, false)
    );

    // Real times: the log is shared by every run against this database.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let target = unique("target");
    let entries: Vec<AuditEntry> = (0..3u64)
        .map(|i| AuditEntry {
            at: now + i,
            id: 0x5eed_0000 + i,
            admin: user.clone(),
            action: ["suspend", "unsuspend", "disconnect"][i as usize].into(),
            target: target.clone(),
            node: "node-1".into(),
        })
        .collect();
    for e in &entries {
        store.append_audit(e).await.expect("audit");
    }
    store.append_audit(&entries[1]).await.expect("audit again");
    let log = store.audit(200).await.expect("audit log");
    let ours: Vec<&AuditEntry> = log.iter().filter(|e| e.target == target).collect();
    let expected: Vec<&AuditEntry> = entries.iter().rev().collect();
    assert_eq!(ours, expected, "newest first, each once");
    assert!(
        log.windows(2).all(|w| w[0].at >= w[1].at),
        "the log is ordered newest first"
    );
    assert_eq!(store.audit(2).await.expect("audit log").len(), 2, "limit");
}
