//! Reports on ScyllaDB: a row per report, and the open ones' queue (see
//! `statements/reports.rs`).

use async_trait::async_trait;

use super::notifications::blob;
use super::store::ScyllaStore;
use crate::reports::Report;
use crate::{corrupt, ReportStore, StoreError};

#[async_trait]
impl ReportStore for ScyllaStore {
    async fn put_report(&self, report: &Report) -> Result<(), StoreError> {
        let q = &self.q.reports;
        self.run(&q.put, (report.id.as_str(), blob(report)?))
            .await?;
        let queue = if report.resolution.is_none() {
            &q.open
        } else {
            &q.close
        };
        self.run(queue, (report.id.as_str(),)).await?;
        Ok(())
    }

    async fn report(&self, id: &str) -> Result<Option<Report>, StoreError> {
        self.one_blob(&self.q.reports.select, (id,)).await
    }

    async fn open_reports(&self, limit: usize) -> Result<Vec<Report>, StoreError> {
        let limit = i32::try_from(limit).unwrap_or(i32::MAX);
        let rows = self.rows(&self.q.reports.select_open, (limit,)).await?;
        let mut found = Vec::new();
        for row in rows.rows::<(&str,)>().map_err(corrupt)? {
            let (id,) = row.map_err(corrupt)?;
            if let Some(r) = self.report(id).await? {
                found.push(r);
            }
        }
        Ok(found)
    }
}
