//! Reports on the replicated store: registers, read from this node's
//! copy, written here and on every node.

use async_trait::async_trait;

use super::store::ReplicatedStore;
use crate::embedded::Writes;
use crate::reports::Report;
use crate::{ReportStore, StoreError};

#[async_trait]
impl ReportStore for ReplicatedStore {
    async fn put_report(&self, report: &Report) -> Result<(), StoreError> {
        self.registers(Writes::report(report)?).await
    }

    async fn report(&self, id: &str) -> Result<Option<Report>, StoreError> {
        self.local.report(id).await
    }

    async fn open_reports(&self, limit: usize) -> Result<Vec<Report>, StoreError> {
        self.local.open_reports(limit).await
    }
}
