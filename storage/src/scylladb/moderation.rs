//! Account flags and the audit log on ScyllaDB.

use async_trait::async_trait;
use chat_protocol::UserId;

use super::store::ScyllaStore;
use crate::{corrupt, AuditEntry, ModerationStore, StoreError, UserFlag, UserFlags};

#[async_trait]
impl ModerationStore for ScyllaStore {
    async fn set_user_flag(
        &self,
        user: &UserId,
        flag: UserFlag,
        on: bool,
        at_ms: u64,
    ) -> Result<(), StoreError> {
        let micros = i64::try_from(at_ms.saturating_mul(1000)).unwrap_or(i64::MAX);
        self.run(
            &self.q.moderation.set_user_flag,
            (micros, on, user.as_str(), flag.as_str()),
        )
        .await?;
        Ok(())
    }

    async fn user_flags(&self, user: &UserId) -> Result<UserFlags, StoreError> {
        let rows = self
            .rows(&self.q.moderation.select_user_flags, (user.as_str(),))
            .await?;
        let mut flags = UserFlags::default();
        for row in rows.rows::<(String, Option<bool>)>().map_err(corrupt)? {
            let (name, on) = row.map_err(corrupt)?;
            // A flag a newer build knows is not this build's business.
            if let Some(flag) = UserFlag::from_name(&name) {
                flags.set(flag, on.unwrap_or(false));
            }
        }
        Ok(flags)
    }

    async fn append_audit(&self, entry: &AuditEntry) -> Result<(), StoreError> {
        let day = (entry.at / 86_400_000) as i32;
        // The day's row first: an entry is never in a day the log skips.
        self.run(&self.q.moderation.insert_audit_day, (day,))
            .await?;
        self.run(
            &self.q.moderation.insert_audit,
            (
                day,
                entry.at as i64,
                entry.id as i64,
                entry.admin.as_str(),
                entry.action.as_str(),
                entry.target.as_str(),
                entry.node.as_str(),
            ),
        )
        .await?;
        Ok(())
    }

    async fn audit(&self, limit: usize) -> Result<Vec<AuditEntry>, StoreError> {
        let days = self.rows(&self.q.moderation.select_audit_days, ()).await?;
        let days: Vec<i32> = days
            .rows::<(i32,)>()
            .map_err(corrupt)?
            .map(|r| r.map(|(d,)| d).map_err(corrupt))
            .collect::<Result<_, _>>()?;
        let mut entries = Vec::new();
        for day in days {
            if entries.len() >= limit {
                break;
            }
            let left = i32::try_from(limit - entries.len()).unwrap_or(i32::MAX);
            let rows = self
                .rows(&self.q.moderation.select_audit, (day, left))
                .await?;
            type AuditRow = (i64, i64, String, String, String, String);
            for row in rows.rows::<AuditRow>().map_err(corrupt)? {
                let (at, id, admin, action, target, node) = row.map_err(corrupt)?;
                entries.push(AuditEntry {
                    at: at as u64,
                    id: id as u64,
                    admin: UserId::new(&admin).map_err(corrupt)?,
                    action,
                    target,
                    node,
                });
            }
        }
        Ok(entries)
    }
}
