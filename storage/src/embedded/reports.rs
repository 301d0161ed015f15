//! Reports on the embedded store: a register per report, and one per open
//! report in the queue (its key the report's id, which sorts by time).

use async_trait::async_trait;

use super::keys::{decode, encode, key_of, split_part};
use super::registers::{RegisterTable, Writes};
use super::EmbeddedStore;
use crate::reports::Report;
use crate::{unavailable, ReportStore, StoreError};

impl Writes {
    /// [`ReportStore::put_report`].
    pub(crate) fn report(report: &Report) -> Result<Writes, StoreError> {
        let key = key_of(&[&report.id]);
        let mut w = Writes::default();
        w.put(RegisterTable::Reports, key.clone(), encode(report)?);
        if report.resolution.is_none() {
            w.put(RegisterTable::OpenReports, key, Vec::new());
        } else {
            w.delete(RegisterTable::OpenReports, key);
        }
        Ok(w)
    }
}

#[async_trait]
impl ReportStore for EmbeddedStore {
    async fn put_report(&self, report: &Report) -> Result<(), StoreError> {
        self.write(Writes::report(report)?).await
    }

    async fn report(&self, id: &str) -> Result<Option<Report>, StoreError> {
        let key = key_of(&[id]);
        self.blocking(move |s| {
            s.reports
                .get(&key)
                .map_err(unavailable)?
                .map(|b| decode(&b))
                .transpose()
        })
        .await
    }

    async fn open_reports(&self, limit: usize) -> Result<Vec<Report>, StoreError> {
        self.blocking(move |s| {
            let mut found = Vec::new();
            for guard in s.open_reports.iter().take(limit) {
                let key = guard.key().map_err(unavailable)?;
                let (id, _) = split_part(&key)?;
                if let Some(bytes) = s.reports.get(key_of(&[id])).map_err(unavailable)? {
                    found.push(decode(&bytes)?);
                }
            }
            Ok(found)
        })
        .await
    }
}
