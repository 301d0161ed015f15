//! Reports: kept whole; the open ones listed oldest first; a resolved one
//! leaves the queue and keeps its resolution.

use chat_protocol::{ConversationId, MessageId};

use super::fixtures::{unique, user_id};
use crate::reports::{Report, ReportAction, Resolution};
use crate::MessageStore;

/// Reports round-trip, queue in order, and leave the queue when resolved.
pub async fn check_reports(store: &dyn MessageStore) {
    let reporter = user_id("rep-by");
    let report = |n: u64| Report {
        // Ids of this run sort after any earlier run's, and among
        // themselves by `n`.
        id: format!("{:016x}-{}", chat_protocol::now_ms() * 10 + n, unique("r")),
        reporter: reporter.clone(),
        user: user_id("rep-of"),
        conversation: Some(ConversationId::new(&unique("repc")).unwrap()),
        message: Some(MessageId(n)),
        reason: format!("reason {n}"),
        created_at: n,
        resolution: None,
    };
    let (first, second) = (report(1), report(2));
    assert_eq!(store.report(&first.id).await.expect("read"), None);
    store.put_report(&second).await.expect("put");
    store.put_report(&first).await.expect("put");
    assert_eq!(
        store.report(&first.id).await.expect("read"),
        Some(first.clone())
    );
    let ours = |all: Vec<Report>| -> Vec<String> {
        all.into_iter()
            .filter(|r| r.reporter == reporter)
            .map(|r| r.id)
            .collect()
    };
    let open = ours(store.open_reports(100_000).await.expect("open"));
    assert_eq!(
        open,
        vec![first.id.clone(), second.id.clone()],
        "oldest first"
    );

    let mut resolved = first.clone();
    resolved.resolution = Some(Resolution {
        action: ReportAction::DeleteMessage,
        by: user_id("rep-admin"),
        at: 9,
    });
    store.put_report(&resolved).await.expect("resolve");
    assert_eq!(store.report(&first.id).await.expect("read"), Some(resolved));
    let open = ours(store.open_reports(100_000).await.expect("open"));
    assert_eq!(open, vec![second.id.clone()]);
}
