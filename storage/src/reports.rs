//! Reports of abuse: a user reports a message or a user, and admins work
//! the queue of open reports (dismiss, delete the message, suspend the
//! user). A report is kept whole; the open ones are also indexed, oldest
//! first, so the queue is one read however many were resolved.

use async_trait::async_trait;
use chat_protocol::{ConversationId, MessageId, UserId};
use serde::{Deserialize, Serialize};

use crate::StoreError;

/// What an admin did about a report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReportAction {
    /// Nothing to do.
    Dismiss,
    /// The message is deleted for every member.
    DeleteMessage,
    /// The reported user (or the message's sender) is suspended.
    SuspendUser,
}

/// A report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// Sorts by creation: `<created_at as 16 hex digits>-<random>`.
    pub id: String,
    /// Who reported.
    pub reporter: UserId,
    /// The user reported (for a message: its sender).
    pub user: UserId,
    /// For a message: its conversation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversation: Option<ConversationId>,
    /// For a message: which.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<MessageId>,
    /// In the reporter's words.
    pub reason: String,
    /// Unix ms.
    pub created_at: u64,
    /// Once resolved: what was done, by whom, when.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolution: Option<Resolution>,
}

/// How a report was resolved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resolution {
    /// What was done.
    pub action: ReportAction,
    /// The admin.
    pub by: UserId,
    /// Unix ms.
    pub at: u64,
}

/// Reports.
#[async_trait]
pub trait ReportStore: Send + Sync {
    /// Stores a report, new or resolved: an open one joins the queue, a
    /// resolved one leaves it.
    async fn put_report(&self, report: &Report) -> Result<(), StoreError>;

    /// A report by id.
    async fn report(&self, id: &str) -> Result<Option<Report>, StoreError>;

    /// The open reports, oldest first, at most `limit`.
    async fn open_reports(&self, limit: usize) -> Result<Vec<Report>, StoreError>;
}
